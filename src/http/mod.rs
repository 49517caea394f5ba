//! What handlers and the pipeline share about a request: its context (the connection, the
//! client's address), the errors the gateway answers itself, and conditional and range requests.

pub mod conditional;
pub mod context;
pub(crate) mod error;

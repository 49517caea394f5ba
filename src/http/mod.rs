//! What handlers and the pipeline share about a request: its context (the connection, the
//! client's address) and the errors the gateway answers itself.

pub mod context;
pub(crate) mod error;

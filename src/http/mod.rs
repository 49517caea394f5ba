//! HTTP plumbing shared by the request path: gateway-made errors, the request
//! context, and the service that runs each request through router and handler.

pub mod client_ip;
pub mod context;
pub mod error;
pub mod service;

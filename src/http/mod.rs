//! HTTP plumbing shared by the request path: the body type, gateway-made errors, the request
//! context, and the service that runs each request through router and handler.

pub mod body;
pub mod client_ip;
pub mod context;
pub mod error;
pub mod service;

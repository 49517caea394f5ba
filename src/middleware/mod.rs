//! Response filters applied after the handler: compression.

pub mod compression;

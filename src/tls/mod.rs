//! TLS termination: the rustls server config (TLS 1.2+, forward-secret AEAD suites only, ALPN h2
//! and http/1.1) on the one crypto provider of [`crate::pem`], the certificate store that picks
//! a certificate by SNI (`store`), the self-signed certificate source (`selfsigned`), ACME
//! (`acme`), and the report of `orta-gateway certs` (`report`).

pub mod acme;
mod report;
pub(crate) mod selfsigned;
pub(crate) mod store;

use std::sync::Arc;

use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::TlsVersion;
use crate::pem::provider;
pub use report::certs_report;
pub use store::CertStore;

/// The protocol versions accepted from `min_version` upwards.
pub fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &BOTH,
        TlsVersion::Tls13 => &ONLY13,
    }
}

/// Builds the listener's rustls config over a certificate store.
pub fn server_config(store: Arc<CertStore>, min: TlsVersion) -> Result<Arc<ServerConfig>, String> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min))
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // the server's suite order (strongest first) wins over the client's
    cfg.ignore_client_order = true;
    // stateless resumption: a returning client skips the full handshake
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
    Ok(Arc::new(cfg))
}

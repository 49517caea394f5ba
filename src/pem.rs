//! Certificates and private keys as files: chains and keys read from PEM, the mode a key file
//! must have, what a certificate says about itself, and the one crypto provider of the build
//! (aws-lc-rs) that loads keys and serves TLS. Used by config validation and by TLS alike.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;

/// The process-wide crypto provider: aws-lc-rs with its default suites, which are all
/// forward-secret (ECDHE) AEAD suites (AES-GCM, ChaCha20-Poly1305). Installed as the default
/// once, so every rustls user in the process (clients in tests included) agrees.
pub fn provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return p.clone();
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    chain_of(path, std::fs::read(path))
}

/// The chain in what was read from `path`, with messages that name the file.
pub fn chain_of(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read.map_err(|e| format!("cannot read certificate {}: {e}", path.display()))?;
    parse_chain(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates of PEM text (leaf first); other PEM sections (a key) are skipped.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// A private key file must not be readable by group or others (0600, or 0400): `mode` is the
/// file's permission bits as read from `path`.
pub fn check_key_mode(path: &Path, mode: std::io::Result<u32>) -> Result<(), String> {
    let mode = mode.map_err(|e| format!("cannot read private key {}: {e}", path.display()))? & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "private key {} is readable by others (mode {mode:04o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1) into a signing key.
pub fn load_key(path: &Path) -> Result<Arc<dyn SigningKey>, String> {
    key_of(path, std::fs::read(path))
}

/// The key in what was read from `path`, with messages that name the file.
pub fn key_of(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<Arc<dyn SigningKey>, String> {
    let bytes = read.map_err(|e| format!("cannot read private key {}: {e}", path.display()))?;
    parse_key(&bytes).map_err(|e| format!("private key {}: {e}", path.display()))
}

/// The first private key of PEM text, as a signing key; other sections are skipped.
pub fn parse_key(pem: &[u8]) -> Result<Arc<dyn SigningKey>, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PEM private key: {e}"))?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("not supported: {e}"))
}

/// What a certificate says about itself, for `/status`, `/metrics` and `orta-gateway certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

/// Parses a DER certificate.
pub fn describe(der: &[u8]) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// A certificate as ACME keeps it (private key PEM, then the chain): the certified key and the
/// leaf's DER.
pub fn certified_key(pem: &[u8]) -> Result<(rustls::sign::CertifiedKey, Vec<u8>), String> {
    let key = parse_key(pem).map_err(|e| format!("private key: {e}"))?;
    let chain = parse_chain(pem).map_err(|e| format!("certificate chain: {e}"))?;
    let leaf = chain[0].to_vec();
    Ok((rustls::sign::CertifiedKey::new(chain, key), leaf))
}

//! TLS termination: the rustls server config (TLS 1.2+, forward-secret AEAD suites only, ALPN h2
//! and http/1.1), the certificate store that picks a certificate by SNI, and the self-signed
//! certificate source. One crypto provider, aws-lc-rs, is used for the whole process.

pub mod acme;
pub mod selfsigned;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::TlsVersion;
pub use store::CertStore;

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

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read certificate {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A private key file must not be readable by group or others (0600, or 0400).
pub fn check_key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path).map_err(|e| format!("cannot read private key {}: {e}", path.display()))?;
    let mode = md.permissions().mode() & 0o777;
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
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read private key {}: {e}", path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{} holds no usable PEM private key: {e}", path.display()))?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("private key {} is not supported: {e}", path.display()))
}

/// `orta-gateway certs`: each certificate the config uses, with its names, issuer, validity,
/// days left and (for ACME) the next planned renewal and why. Reads files only, no network.
pub fn certs_report(config: &crate::config::Config) -> Vec<String> {
    use crate::config::CertSource;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let date = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| d.date().to_string())
            .unwrap_or_default()
    };
    let line = |source: &str, path: &std::path::Path, info: &CertInfo, renewal: Option<String>| {
        let days = (info.not_after - now) / 86_400;
        let mut s = format!(
            "{source}: {}\n  file:       {}\n  issuer:     {}\n  not before: {}\n  not after:  {} ({days} days left)",
            info.names.join(", "),
            path.display(),
            info.issuer,
            date(info.not_before),
            date(info.not_after),
        );
        if let Some(r) = renewal {
            s.push_str(&format!("\n  renewal:    {r}"));
        }
        s
    };
    let leaf = |path: &std::path::Path| load_chain(path).ok().and_then(|c| c.first().and_then(|l| describe(l)));
    let mut out = Vec::new();
    match &config.tls.source {
        CertSource::SelfSigned { dir, .. } => {
            let path = dir.join("cert.pem");
            match leaf(&path) {
                Some(info) => out.push(line(
                    "self-signed",
                    &path,
                    &info,
                    Some("re-issued at start when under 30 days left or the hosts change".into()),
                )),
                None => out.push(format!(
                    "self-signed: not generated yet (first start writes {})",
                    path.display()
                )),
            }
        }
        CertSource::Files(files) => {
            for f in files {
                match leaf(&f.cert_path) {
                    Some(info) => out.push(line("files", &f.cert_path, &info, None)),
                    None => out.push(format!("files: {} unreadable", f.cert_path.display())),
                }
            }
        }
        CertSource::Acme(a) => {
            let cache = acme::cache::AcmeCache::new(&a.cache_dir, Box::new(|_| {}));
            let path = cache.cert_path(&a.domains, &a.directory);
            match leaf(&path) {
                Some(info) => {
                    let (at, reason) =
                        acme::policy::plan(info.not_before, info.not_after, &info.serial, a.renew_before, None);
                    let mut why = format!("{} ({})", date(at), reason.describe());
                    if a.renew_before == crate::config::RenewBefore::Auto {
                        why.push_str("; moved into the CA's ARI window when it offers one");
                    }
                    out.push(line("acme", &path, &info, Some(why)))
                }
                None => out.push(format!(
                    "acme: {}: no certificate issued yet (the gateway orders it from {} at start)",
                    a.domains.join(", "),
                    a.directory
                )),
            }
        }
    }
    out
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

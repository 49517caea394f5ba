//! Self-signed certificates for running without a public CA: a local CA (kept across runs, so a
//! browser told to trust `ca.pem` keeps trusting it) and a leaf certificate for the route hosts
//! plus `localhost`, `127.0.0.1` and `::1`, re-issued when the names change or it nears expiry.
//! Files live in one directory: `ca.pem`, `ca-key.pem`, `cert.pem` (leaf + CA), `key.pem`,
//! `names.txt`; keys are written 0600.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;

use crate::fs_atomic;

const CA_NAME: &str = "orta-gateway local CA";
const LEAF_DAYS: u64 = 90;
const RENEW_WITHIN_DAYS: u64 = 30;

/// Loads the cached certificate for `hosts`, or issues a new one (and the CA on first use).
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let names = wanted_names(hosts);
    let names_line = names.join(" ");
    let now = unix_now();
    if let Some(ck) = cached(dir, &names_line, now) {
        return Ok(ck);
    }
    fs_atomic::private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (ca_key, ca_cert) = ca(dir)?;
    let leaf_key = KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    for n in &names {
        params.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into().map_err(|e| format!("host {n}: {e}"))?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = time_from_unix(now.saturating_sub(3600));
    params.not_after = time_from_unix(now + LEAF_DAYS * 86_400);
    let leaf = params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(|e| format!("signing the self-signed certificate: {e}"))?;
    let chain_pem = format!("{}{}", leaf.pem(), ca_cert_pem(dir)?);
    let write = |name: &str, data: &[u8], mode: u32| {
        fs_atomic::write(&dir.join(name), data, mode)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    write("key.pem", leaf_key.serialize_pem().as_bytes(), 0o600)?;
    write("cert.pem", chain_pem.as_bytes(), 0o644)?;
    write(
        "names.txt",
        format!("{names_line}\n{}\n", now + LEAF_DAYS * 86_400).as_bytes(),
        0o644,
    )?;
    cached(dir, &names_line, now)
        .ok_or_else(|| format!("cannot load the certificate just written to {}", dir.display()))
}

/// The CA certificate's PEM, for clients that should trust the self-signed certificate.
pub fn ca_cert_pem(dir: &Path) -> Result<String, String> {
    std::fs::read_to_string(dir.join("ca.pem"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("ca.pem").display()))
}

fn wanted_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    names
}

/// The cached leaf, when it covers exactly `names_line` and is not close to expiry.
fn cached(dir: &Path, names_line: &str, now: u64) -> Option<Arc<CertifiedKey>> {
    let meta = std::fs::read_to_string(dir.join("names.txt")).ok()?;
    let mut lines = meta.lines();
    if lines.next()? != names_line {
        return None;
    }
    let not_after: u64 = lines.next()?.trim().parse().ok()?;
    if not_after < now + RENEW_WITHIN_DAYS * 86_400 {
        return None;
    }
    let chain = crate::pem::load_chain(&dir.join("cert.pem")).ok()?;
    let key = crate::pem::load_key(&dir.join("key.pem")).ok()?;
    let ck = CertifiedKey::new(chain, key);
    ck.keys_match().ok()?;
    Some(Arc::new(ck))
}

/// Loads the CA key (creating the CA on first use) and rebuilds an issuer certificate from it.
/// The rebuilt certificate has the same subject and key as `ca.pem`, so leaves it signs verify
/// against the saved CA.
fn ca(dir: &Path) -> Result<(KeyPair, rcgen::Certificate), String> {
    let key_path = dir.join("ca-key.pem");
    let existing = std::fs::read_to_string(&key_path)
        .ok()
        .and_then(|pem| KeyPair::from_pem(&pem).ok())
        .filter(|_| dir.join("ca.pem").exists());
    let fresh = existing.is_none();
    let key = match existing {
        Some(k) => k,
        None => KeyPair::generate().map_err(|e| format!("key generation: {e}"))?,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "orta-gateway");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time_from_unix(unix_now().saturating_sub(3600));
    params.not_after = time_from_unix(unix_now() + 10 * 365 * 86_400);
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("creating the local CA: {e}"))?;
    if fresh {
        fs_atomic::write(&key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        fs_atomic::write(&dir.join("ca.pem"), cert.pem().as_bytes(), 0o644)
            .map_err(|e| format!("cannot write {}: {e}", dir.join("ca.pem").display()))?;
    }
    Ok((key, cert))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn time_from_unix(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs.min(i64::MAX as u64) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

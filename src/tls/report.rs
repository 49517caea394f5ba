//! `orta-gateway certs`: each certificate the config names, what it says, and when it is
//! renewed.

use super::acme;
use crate::config::Config;
use crate::pem::{CertInfo, describe, load_chain};

/// `orta-gateway certs`: each certificate the config uses, with its names, issuer, validity,
/// days left and (for ACME) the next planned renewal and why. Reads files, and with `[cluster]`
/// the certificate the cluster keeps in Redis (`shared`: what [`acme::shared::fetch`] found).
pub fn certs_report(config: &Config, shared: Option<Result<Option<Vec<u8>>, String>>) -> Vec<String> {
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
            let local = cache.cert_path(&a.domains, &a.directory);
            let (path, found) =
                from_cluster(config, a, shared, &mut out).unwrap_or_else(|| (local.clone(), leaf(&local)));
            match found {
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

/// With `[cluster]`: where the cluster's certificate is (its Redis key) and what it says; `None`
/// (with a note in `out`) when Redis holds none or was not read, and this node's copy is shown.
fn from_cluster(
    config: &Config,
    a: &crate::config::AcmeSettings,
    shared: Option<Result<Option<Vec<u8>>, String>>,
    out: &mut Vec<String>,
) -> Option<(std::path::PathBuf, Option<CertInfo>)> {
    let (shared, c) = (shared?, config.cluster.as_ref()?);
    match shared {
        Ok(Some(pem)) => {
            let at = format!(
                "redis {} (key {})",
                c.redis_redacted(),
                acme::shared::Keys::new(c, a).cert
            );
            let chain = crate::pem::parse_chain(&pem).ok();
            Some((
                at.into(),
                chain.and_then(|chain| chain.first().and_then(|l| describe(l))),
            ))
        }
        Ok(None) => {
            out.push(format!(
                "cluster: Redis {} holds no certificate yet",
                c.redis_redacted()
            ));
            None
        }
        Err(e) => {
            out.push(format!(
                "cluster: Redis {} not read ({e}); showing this node's copy",
                c.redis_redacted()
            ));
            None
        }
    }
}

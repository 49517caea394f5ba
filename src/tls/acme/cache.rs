//! The ACME cache over `acme.cache_dir`: the account key and each certificate (its key and
//! chain) in files written 0600, atomically (temporary file, fsync, rename), in a 0700
//! directory; a write check at start so a broken directory is found before the CA's rate
//! limits are spent on orders whose certificates could not be kept. `orta-gateway certs` reads
//! the same files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use async_trait::async_trait;
use rustls_acme::{AccountCache, CertCache};

use crate::fs_atomic;

/// Called with a certificate's PEM (key, then chain) whenever one is loaded from or stored in
/// the cache: the manager publishes it.
pub type OnCert = Box<dyn Fn(&[u8]) + Send + Sync>;

pub struct AcmeCache {
    dir: PathBuf,
    /// Report no cached certificate once, so rustls-acme orders a new one now.
    force_fresh: AtomicBool,
    on_cert: OnCert,
}

impl AcmeCache {
    pub fn new(dir: &Path, on_cert: OnCert) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.to_path_buf(),
            force_fresh: AtomicBool::new(false),
            on_cert,
        })
    }

    /// Creates the directory (0700) and proves a private file can be written and replaced.
    pub fn check_writable(&self) -> Result<(), String> {
        fs_atomic::private_dir(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let probe = self.dir.join(".write-check");
        fs_atomic::write(&probe, b"ok", 0o600)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| format!("cannot write in {}: {e}", self.dir.display()))
    }

    /// The next load reports no certificate: a new order starts.
    pub fn force_fresh(&self) {
        self.force_fresh.store(true, SeqCst);
    }

    pub fn cert_path(&self, domains: &[String], directory: &str) -> PathBuf {
        self.dir
            .join(format!("cert-{}.pem", key(&domains.join(","), directory)))
    }

    pub(super) fn account_path(&self, contact: &[String], directory: &str) -> PathBuf {
        self.dir
            .join(format!("account-{}.key", key(&contact.join(","), directory)))
    }

    pub(super) async fn read(path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub(super) async fn write(path: PathBuf, data: Vec<u8>) -> std::io::Result<()> {
        tokio::task::spawn_blocking(move || fs_atomic::write(&path, &data, 0o600))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// A stable file-name key for a domain set (or contact list) and directory.
pub(super) fn key(what: &str, directory: &str) -> String {
    let h = format!("{what}|{directory}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    format!("{h:016x}")
}

/// The handle rustls-acme holds (the cache itself is shared with the manager).
pub struct CacheHandle(pub Arc<AcmeCache>);

#[async_trait]
impl CertCache for CacheHandle {
    type EC = std::io::Error;

    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EC> {
        if self.0.force_fresh.swap(false, SeqCst) {
            return Ok(None);
        }
        let pem = AcmeCache::read(self.0.cert_path(domains, directory_url)).await?;
        if let Some(pem) = &pem {
            (self.0.on_cert)(pem);
        }
        Ok(pem)
    }

    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), Self::EC> {
        AcmeCache::write(self.0.cert_path(domains, directory_url), cert.to_vec()).await?;
        (self.0.on_cert)(cert);
        Ok(())
    }
}

#[async_trait]
impl AccountCache for CacheHandle {
    type EA = std::io::Error;

    async fn load_account(&self, contact: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EA> {
        AcmeCache::read(self.0.account_path(contact, directory_url)).await
    }

    async fn store_account(&self, contact: &[String], directory_url: &str, account: &[u8]) -> Result<(), Self::EA> {
        AcmeCache::write(self.0.account_path(contact, directory_url), account.to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("acme");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let cache = AcmeCache::new(&cache_dir, Box::new(move |pem| s2.lock().unwrap().push(pem.to_vec())));
        cache.check_writable().unwrap();
        assert_eq!(
            std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let h = CacheHandle(cache.clone());
        let domains = vec!["a.example".to_string()];
        assert_eq!(h.load_cert(&domains, "https://ca/dir").await.unwrap(), None);
        h.store_cert(&domains, "https://ca/dir", b"PEM").await.unwrap();
        let path = cache.cert_path(&domains, "https://ca/dir");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            h.load_cert(&domains, "https://ca/dir").await.unwrap(),
            Some(b"PEM".to_vec())
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "stored and loaded certificates are published"
        );
        cache.force_fresh();
        assert_eq!(
            h.load_cert(&domains, "https://ca/dir").await.unwrap(),
            None,
            "forced: no cached cert once"
        );
        assert_eq!(
            h.load_cert(&domains, "https://ca/dir").await.unwrap(),
            Some(b"PEM".to_vec())
        );
        h.store_account(&["mailto:a@b.c".into()], "https://ca/dir", b"KEY")
            .await
            .unwrap();
        assert_eq!(
            h.load_account(&["mailto:a@b.c".into()], "https://ca/dir")
                .await
                .unwrap(),
            Some(b"KEY".to_vec())
        );
    }

    #[test]
    fn an_unusable_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // a file where the directory should be: refused whoever runs the test
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "not a directory").unwrap();
        let cache = AcmeCache::new(&blocked.join("acme"), Box::new(|_| {}));
        assert!(cache.check_writable().unwrap_err().contains("cannot create"));
    }
}

//! The certificate store: every certificate the HTTPS listener can present, picked per handshake
//! by SNI (exact names and wildcards, checked by webpki), the first one being the default. The
//! set is swapped whole, so a new certificate serves new handshakes at once.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, Default)]
pub struct CertStore {
    certs: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Self {
        Self {
            certs: ArcSwap::from_pointee(certs),
        }
    }

    /// The certificates served now.
    pub fn current(&self) -> Vec<Arc<CertifiedKey>> {
        self.certs.load().as_ref().clone()
    }

    /// Replaces the whole set; handshakes already under way keep what they picked.
    pub fn replace(&self, certs: Vec<Arc<CertifiedKey>>) {
        self.certs.store(Arc::new(certs));
    }

    /// What each certificate in the set says about itself.
    pub fn describe(&self) -> Vec<crate::pem::CertInfo> {
        self.certs
            .load()
            .iter()
            .filter_map(|ck| ck.cert.first().and_then(|leaf| crate::pem::describe(leaf)))
            .collect()
    }

    /// The certificate for a server name, or the default one.
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(name) = server_name.and_then(|n| rustls::pki_types::ServerName::try_from(n).ok()) {
            for ck in certs.iter() {
                let Some(leaf) = ck.cert.first() else { continue };
                let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
                    continue;
                };
                if ee.verify_is_valid_for_subject_name(&name).is_ok() {
                    return Some(ck.clone());
                }
            }
        }
        certs.first().cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

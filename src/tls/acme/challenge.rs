//! The answers to the CA's validations while an order runs: http-01 key authorizations by token
//! and tls-alpn-01 certificates by domain. One gateway keeps rustls-acme's own resolver; a
//! cluster publishes them in Redis (`Board`), so whichever node the CA reaches answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::ResolvesServerCertAcme;

use crate::cluster::Cluster;

/// How long a published answer is kept (an order's validations take seconds).
const ANSWER_TTL: Duration = Duration::from_secs(600);

/// What a tls-alpn-01 or http-01 validation needs from the running order.
pub enum Challenges {
    /// rustls-acme's order on this gateway alone.
    Library {
        resolver: Arc<ResolvesServerCertAcme>,
        /// The TLS config for `acme-tls/1` handshakes.
        tls: Arc<ServerConfig>,
    },
    /// The cluster's orders, whichever node runs them.
    Cluster(Arc<Board>),
}

impl Challenges {
    /// The key authorization for an http-01 `token`.
    pub async fn http01(&self, token: &str) -> Option<String> {
        match self {
            Challenges::Library { resolver, .. } => resolver.get_http_01_key_auth(token),
            Challenges::Cluster(board) => board.http01(token).await,
        }
    }

    /// The TLS config answering a tls-alpn-01 validation for `server_name`.
    pub async fn alpn_config(&self, server_name: Option<&str>) -> Option<Arc<ServerConfig>> {
        match self {
            Challenges::Library { tls, .. } => Some(tls.clone()),
            Challenges::Cluster(board) => {
                let ck = board.alpn(server_name?).await?;
                alpn_server_config(ck)
            }
        }
    }
}

/// The cluster's published answers, with this node's own kept locally too.
pub struct Board {
    cluster: Arc<Cluster>,
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Board {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            http: Mutex::default(),
            alpn: Mutex::default(),
        })
    }

    fn http_key(&self, token: &str) -> String {
        self.cluster.key(&["acme", "http01", token])
    }

    fn alpn_key(&self, domain: &str) -> String {
        self.cluster.key(&["acme", "alpn", &domain.to_ascii_lowercase()])
    }

    /// Publishes an http-01 answer (the order triggers validation after this).
    pub async fn publish_http01(&self, token: &str, key_auth: &str) {
        self.http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_auth.to_string());
        let cmd = redis::cmd("SET")
            .arg(self.http_key(token))
            .arg(key_auth)
            .arg("PX")
            .arg(ANSWER_TTL.as_millis() as u64)
            .clone();
        // without Redis only this node answers: the order goes on (the CA may still reach it)
        if let Err(why) = self.cluster.query::<()>(&cmd).await {
            tracing::warn!(
                "ACME: the http-01 answer is not in Redis ({}): only this node answers it",
                why.as_str()
            );
        }
    }

    /// Publishes a tls-alpn-01 certificate (`pem`: key, then certificate; sealed in Redis).
    pub async fn publish_alpn(&self, domain: &str, pem: &[u8], ck: Arc<CertifiedKey>) {
        self.alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_ascii_lowercase(), ck);
        if let Err(why) = self
            .cluster
            .set_sealed(&self.alpn_key(domain), pem, Some(ANSWER_TTL))
            .await
        {
            tracing::warn!(
                "ACME: the tls-alpn-01 certificate is not in Redis ({}): only this node answers it",
                why.as_str()
            );
        }
    }

    /// The order is over: forget this node's answers.
    pub fn clear(&self) {
        self.http.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.alpn.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn http01(&self, token: &str) -> Option<String> {
        // tokens are base64url (RFC 8555 §8.3); anything else is not looked up
        if token.is_empty()
            || token.len() > 256
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        if let Some(v) = self.http.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
            return Some(v.clone());
        }
        self.cluster
            .query_now::<Option<String>>(redis::cmd("GET").arg(self.http_key(token)))
            .await
            .ok()
            .flatten()
    }

    async fn alpn(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        if domain.len() > 253 {
            return None;
        }
        if let Some(ck) = self
            .alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&domain.to_ascii_lowercase())
        {
            return Some(ck.clone());
        }
        let pem = self
            .cluster
            .get_sealed_with(&self.alpn_key(domain), true)
            .await
            .ok()??;
        crate::pem::certified_key(&pem).ok().map(|(ck, _)| Arc::new(ck))
    }
}

/// Always the one challenge certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A TLS config for one `acme-tls/1` handshake presenting `ck`.
fn alpn_server_config(ck: Arc<CertifiedKey>) -> Option<Arc<ServerConfig>> {
    let mut cfg = ServerConfig::builder_with_provider(crate::pem::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(ck)));
    cfg.alpn_protocols = vec![rustls_acme::acme::ACME_TLS_ALPN_NAME.to_vec()];
    Some(Arc::new(cfg))
}

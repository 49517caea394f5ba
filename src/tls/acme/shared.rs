//! ACME for a cluster: the certificate, its key and the account key live in Redis, sealed with
//! the cluster secret, with the 0600 file cache as this node's copy for starts without Redis.
//! Every node serves what Redis holds, picked up on the cluster's `cert` announcement or by
//! polling; when it is missing or due for renewal (the same plan on every node), the node that
//! takes the lease lock re-reads it, orders, stores and announces the new one, then releases the
//! lock. A holder that dies stops renewing its lease, and another node takes over once it
//! expires.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::cache::AcmeCache;
use super::challenge::{Board, Challenges};
use super::order;
use super::policy::Window;
use super::state::Shared;
use crate::cluster::{Cluster, lock::Lease};
use crate::config::{AcmeSettings, ClusterSettings};

/// How often Redis is read when no announcement came (a missed message costs this long).
const POLL: Duration = Duration::from_secs(5);
/// How often a node retries the lock while another node orders.
const WAITING: Duration = Duration::from_secs(1);
/// Backoff after a failed order, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Installs a PEM in the certificate store; false when it is unusable.
pub type Publish = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The Redis keys of one domain set: lock, certificate, account.
pub struct Keys {
    pub lock: String,
    pub cert: String,
    pub account: String,
}

impl Keys {
    pub fn new(cluster: &ClusterSettings, acme: &AcmeSettings) -> Self {
        let p = &cluster.key_prefix;
        let domains = acme.domains.join(",");
        let account = super::cache::key(&acme.contact.join(","), &acme.directory);
        Self {
            lock: format!("{p}acme:lock:{domains}"),
            cert: format!("{p}acme:cert:{domains}"),
            account: format!("{p}acme:account:{account}"),
        }
    }
}

/// A certificate as kept in Redis: the directory it came from, a newline, its PEM.
fn stored(directory: &str, pem: &[u8]) -> Vec<u8> {
    [directory.as_bytes(), b"\n", pem].concat()
}

/// The PEM of a stored certificate when it came from `directory`.
pub fn from_store(directory: &str, value: &[u8]) -> Option<Vec<u8>> {
    let nl = value.iter().position(|&b| b == b'\n')?;
    (&value[..nl] == directory.as_bytes()).then(|| value[nl + 1..].to_vec())
}

pub(super) struct ClusterManager {
    pub settings: AcmeSettings,
    pub state: Arc<Shared>,
    pub cluster: Arc<Cluster>,
    pub client: Arc<ClientConfig>,
    pub cache: Arc<AcmeCache>,
    /// Installs a PEM in the certificate store; false when it is unusable.
    pub publish: Publish,
    pub keys: Keys,
    board: Arc<Board>,
    /// The PEM served now.
    current: Option<Vec<u8>>,
    /// Its leaf (DER) and what it says, read once when it is served.
    leaf: Option<(Vec<u8>, crate::pem::CertInfo)>,
    ari: Option<(Window, tokio::time::Instant)>,
    /// When the CA was last asked for ARI (at most once per `check_interval`).
    ari_asked: Option<tokio::time::Instant>,
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    /// Since when Redis has not answered (ordering alone after a while).
    redis_down_since: Option<tokio::time::Instant>,
}

impl ClusterManager {
    pub fn new(
        settings: AcmeSettings,
        state: Arc<Shared>,
        cluster: Arc<Cluster>,
        client: Arc<ClientConfig>,
        cache: Arc<AcmeCache>,
        publish: Publish,
    ) -> Self {
        let keys = Keys::new(&cluster.settings, &settings);
        let board = Board::new(cluster.clone());
        Self {
            settings,
            state,
            board,
            cluster,
            client,
            cache,
            publish,
            keys,
            current: None,
            leaf: None,
            ari: None,
            ari_asked: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            redis_down_since: None,
        }
    }

    pub async fn run(mut self) {
        if let Err(e) = self.cache.check_writable() {
            // the local copy is only a copy: Redis keeps the certificate
            tracing::warn!("ACME cache unusable, no local copy of the cluster's certificate is kept: {e}");
        }
        self.cluster.watch_lock(Some(self.keys.lock.clone()));
        self.state
            .challenges
            .store(Some(Arc::new(Challenges::Cluster(self.board.clone()))));
        tracing::info!(domains = ?self.settings.domains, node = self.cluster.node(), "ACME: managing certificates with the cluster");
        // a start without Redis serves this node's last copy
        let path = self.cache.cert_path(&self.settings.domains, &self.settings.directory);
        if let Ok(Some(pem)) = AcmeCache::read(path).await {
            self.serve(pem);
        }
        let mut events = self.cluster.events();
        loop {
            let wait = self.step().await;
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Serves `pem` if it is new and usable (and keeps the local copy).
    fn serve(&mut self, pem: Vec<u8>) {
        if self.current.as_ref() == Some(&pem) || !(self.publish)(&pem) {
            return;
        }
        self.ari = None;
        self.ari_asked = None;
        self.leaf = crate::pem::parse_chain(&pem).ok().and_then(|chain| {
            let leaf = chain.first()?.to_vec();
            let info = crate::pem::describe(&leaf)?;
            Some((leaf, info))
        });
        let path = self.cache.cert_path(&self.settings.domains, &self.settings.directory);
        let copy = pem.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::fs_atomic::write(&path, &copy, 0o600) {
                tracing::warn!("ACME: local copy {}: {e}", path.display());
            }
        });
        self.current = Some(pem);
    }

    /// What Redis holds now (`Err`: Redis did not answer).
    async fn shared_cert(&self) -> Result<Option<Vec<u8>>, ()> {
        let value = self.cluster.get_sealed(&self.keys.cert).await.map_err(drop)?;
        Ok(value.and_then(|v| from_store(&self.settings.directory, &v)))
    }

    /// One look at the shared state; returns how long to wait before the next.
    async fn step(&mut self) -> Duration {
        let shared = self.shared_cert().await;
        if shared.is_ok() {
            self.redis_down_since = None;
        }
        match shared {
            Err(()) => {
                self.redis_down_since.get_or_insert_with(tokio::time::Instant::now);
            }
            Ok(Some(pem)) => self.serve(pem),
            Ok(None) => {
                if let Some(pem) = &self.current {
                    // Redis lost it (flushed, new instance): give this node's copy back
                    let value = stored(&self.settings.directory, pem);
                    let _ = self.cluster.set_sealed(&self.keys.cert, &value, None).await;
                }
            }
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = self.renewal_at().await;
        if due > now {
            return POLL.min(Duration::from_secs((due - now) as u64));
        }
        if let Some(at) = self.retry_at
            && tokio::time::Instant::now() < at
        {
            return POLL.min(at - tokio::time::Instant::now());
        }
        if let Some(since) = self.redis_down_since {
            // no Redis, and the certificate missing or due: wait a while for Redis, then order
            // alone rather than serve a temporary certificate, or let one expire, indefinitely
            let alone_after = self.cluster.settings.lock_ttl * 2;
            if since.elapsed() < alone_after {
                return POLL.min(alone_after - since.elapsed());
            }
            tracing::warn!(
                domains = ?self.settings.domains,
                "ACME: Redis unreachable for {:?} and the certificate is due: ordering without the cluster",
                since.elapsed()
            );
            let result = self.order().await;
            self.finish(result).await;
            return POLL;
        }
        match self.cluster.try_lock(&self.keys.lock).await {
            Ok(Some(lease)) => {
                self.order_holding(lease).await;
                WAITING
            }
            // another node orders: its announcement (or the next look) brings the certificate
            Ok(None) => WAITING,
            Err(_) => POLL,
        }
    }

    /// When the served certificate is due for renewal (unix seconds; 0 when there is none).
    async fn renewal_at(&mut self) -> i64 {
        let Some((leaf, info)) = &self.leaf else { return 0 };
        // the CA is asked at most once per check_interval (each step is seconds apart)
        let ask = self
            .ari_asked
            .is_none_or(|at| at.elapsed() >= self.settings.check_interval);
        if self.settings.renew_before == crate::config::RenewBefore::Auto && ask {
            self.ari_asked = Some(tokio::time::Instant::now());
            super::ari::refresh(&mut self.ari, &self.settings.directory, &self.client, leaf).await;
        }
        let (at, reason) = super::policy::plan(
            info.not_before,
            info.not_after,
            &info.serial,
            self.settings.renew_before,
            self.ari.map(|(w, _)| w),
        );
        if let Some(s) = self.state.status().as_mut() {
            s.next_renewal = Some((at, reason));
        }
        at
    }

    /// Orders under `lease`, renewing it meanwhile; stores and announces the certificate before
    /// the lock is released.
    async fn order_holding(&mut self, lease: Lease) {
        // another node may have finished between our look and the lock
        if let Ok(Some(pem)) = self.shared_cert().await
            && self.current.as_ref() != Some(&pem)
        {
            self.serve(pem);
            self.cluster.release(lease).await;
            return;
        }
        tracing::info!(domains = ?self.settings.domains, node = self.cluster.node(), "ACME: this node holds the order lock");
        let result = tokio::select! {
            r = self.order() => r,
            lost = keep_lease(&self.cluster, &lease) => Err(lost),
        };
        self.finish(result).await;
        self.cluster.release(lease).await;
    }

    /// After an order: the certificate stored in Redis (when it answers), announced and served;
    /// or the failure counted and retried with backoff.
    async fn finish(&mut self, result: Result<Vec<u8>, String>) {
        self.board.clear();
        match result {
            Ok(pem) => {
                let value = stored(&self.settings.directory, &pem);
                let kept = self.cluster.set_sealed(&self.keys.cert, &value, None).await;
                if kept.is_err() {
                    tracing::warn!(
                        "ACME: the new certificate could not be stored in Redis; the other nodes keep theirs"
                    );
                }
                self.serve(pem);
                let _ = self
                    .cluster
                    .announce(&format!("cert {}", self.settings.domains.join(",")))
                    .await;
                self.state.metrics.acme_renewal(true);
                tracing::info!(domains = ?self.settings.domains, "ACME: new certificate issued, shared with the cluster and deployed");
                if let Some(s) = self.state.status().as_mut() {
                    s.last_error = None;
                    s.pending = None;
                }
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                self.state.metrics.acme_renewal(false);
                tracing::warn!(domains = ?self.settings.domains, "ACME: {e} (retrying in {:?})", self.backoff);
                if let Some(s) = self.state.status().as_mut() {
                    s.last_error = Some(e);
                }
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn order(&self) -> Result<Vec<u8>, String> {
        let key = self.account_key().await?;
        order::run(&self.settings, &self.client, &key, &self.board).await
    }

    /// The cluster's account key: from Redis, else this node's copy, else a new one (only the
    /// lock holder gets here, so two nodes never make two).
    async fn account_key(&self) -> Result<Vec<u8>, String> {
        let unreachable = |_| "Redis did not answer for the account key".to_string();
        // ordering alone (Redis down): this node's copy, or a new key kept here only
        let alone = self.redis_down_since.is_some();
        if !alone && let Some(k) = self.cluster.get_sealed(&self.keys.account).await.map_err(unreachable)? {
            return Ok(k);
        }
        let path = self
            .cache
            .account_path(&self.settings.contact, &self.settings.directory);
        let key = match AcmeCache::read(path.clone()).await.ok().flatten() {
            Some(k) => k,
            None => rustls_acme::acme::Account::generate_key_pair(),
        };
        if !alone {
            self.cluster
                .set_sealed(&self.keys.account, &key, None)
                .await
                .map_err(unreachable)?;
        }
        AcmeCache::write(path, key.clone())
            .await
            .map_err(|e| format!("account key copy: {e}"))?;
        Ok(key)
    }
}

/// Renews the lease every third of its life; returns why once it is lost.
async fn keep_lease(cluster: &Cluster, lease: &Lease) -> String {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(cluster.renew_every()).await;
        match cluster.renew(lease).await {
            Ok(true) => failures = 0,
            Ok(false) => return "the order lock was lost (its lease expired); another node takes over".into(),
            Err(_) => {
                // two missed renewals leave a third of the lease: stop before another node starts
                failures += 1;
                if failures >= 2 {
                    return "Redis stopped answering while ordering; the order is left to the cluster".into();
                }
            }
        }
    }
}

/// The certificate Redis holds for `acme` (what `orta-gateway certs` shows with `[cluster]`):
/// one connection, one GET, opened with the cluster secret.
pub async fn fetch(cluster: &ClusterSettings, acme: &AcmeSettings) -> Result<Option<Vec<u8>>, String> {
    let key = Keys::new(cluster, acme).cert;
    let secret = cluster
        .secret
        .as_ref()
        .ok_or("[cluster] has no secret to open the certificate with")?;
    let read = async {
        let client = redis::Client::open(cluster.redis.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    let value = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .map_err(|_| "no answer within 2s".to_string())??;
    let Some(value) = value else { return Ok(None) };
    let plain = crate::cluster::seal::Sealer::new(&secret.bytes)
        .open(&key, &value)
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(from_store(&acme.directory, &plain))
}

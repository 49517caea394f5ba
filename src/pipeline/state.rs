//! The gateway's shared state: the current config snapshot (swapped whole on reload, with a
//! generation number) and the long-lived parts beside it that outlive any one config: metrics,
//! the access log, certificates and the TLS acceptor, the connection tracker, the shutdown
//! signal, and what `/status` reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::snapshot::Snapshot;
use crate::cluster::{Cluster, FallbackCounters};
use crate::config::Config;
use crate::net::ConnTracker;
use crate::telemetry::access::AccessLog;
use crate::telemetry::metrics::Metrics;
use crate::tls::CertStore;
use crate::tls::acme;

pub struct State {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// The HTTPS listener's port, for redirects from the plain listener (0 = none).
    https_port: AtomicU16,
    metrics: Arc<Metrics>,
    access_log: ArcSwapOption<AccessLog>,
    certs: Arc<CertStore>,
    /// The HTTPS listener's TLS setup; replaced when `[tls]` changes.
    tls: ArcSwapOption<TlsAcceptor>,
    connections: Arc<ConnTracker>,
    /// Turns true when the gateway shuts down: connections finish their requests and close.
    shutdown: watch::Sender<bool>,
    status: Mutex<Status>,
    /// What the ACME manager shares: its challenge answers (tls-alpn-01 handshakes, http-01
    /// tokens) and its status.
    acme: Arc<acme::Shared>,
    /// `Alt-Svc` for HTTPS answers over TCP while HTTP/3 is served (`h3=":PORT"; ma=SECS`).
    alt_svc: ArcSwapOption<http::HeaderValue>,
    /// Open QUIC connections (they are in `connections` too), for `/status` and `/metrics`.
    quic_open: Arc<AtomicUsize>,
    /// Retry packets sent to make new QUIC clients prove their address.
    quic_retries: AtomicU64,
    /// `[cluster]`: the Redis shared with other gateways, while configured.
    cluster: ArcSwapOption<Cluster>,
}

/// Counts one open QUIC connection while it lives.
pub struct QuicOpen(Arc<AtomicUsize>);

impl Drop for QuicOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What `/status` reports beside the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub loaded_at: Option<SystemTime>,
    pub last_reload_error: Option<String>,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The UDP address HTTP/3 is served on.
    pub http3: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub api: Vec<SocketAddr>,
}

impl State {
    /// Builds the first snapshot (generation 1), with the cluster's connection when
    /// `[cluster]` is set. Must run inside the runtime.
    pub fn new(config: Arc<Config>, certs: Arc<CertStore>) -> Result<Arc<Self>, String> {
        let metrics = Arc::new(Metrics::new());
        let cluster = match &config.cluster {
            Some(c) => Some(Cluster::start(c.clone(), fallback_counters(&metrics))?),
            None => None,
        };
        let snapshot = Snapshot::build(config, None, 1, &metrics, cluster.as_ref());
        let acme = Arc::new(acme::Shared::new(certs.clone(), metrics.clone()));
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            https_port: AtomicU16::new(0),
            metrics,
            access_log: ArcSwapOption::empty(),
            certs,
            tls: ArcSwapOption::empty(),
            connections: Arc::default(),
            shutdown: watch::channel(false).0,
            status: Mutex::new(Status {
                loaded_at: Some(SystemTime::now()),
                ..Status::default()
            }),
            acme,
            alt_svc: ArcSwapOption::empty(),
            quic_open: Arc::default(),
            quic_retries: AtomicU64::new(0),
            cluster: ArcSwapOption::new(cluster),
        }))
    }

    /// The cluster, while `[cluster]` is configured.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.load_full()
    }

    /// The cluster a config with `[cluster]` = `settings` uses: the running one when its
    /// settings are the same, else a new connection. Nothing is swapped in yet.
    pub fn cluster_for(
        &self,
        settings: Option<&crate::config::ClusterSettings>,
    ) -> Result<Option<Arc<Cluster>>, String> {
        match (settings, self.cluster()) {
            (None, _) => Ok(None),
            (Some(s), Some(c)) if c.settings == *s => Ok(Some(c)),
            (Some(s), _) => Cluster::start(s.clone(), fallback_counters(&self.metrics)).map(Some),
        }
    }

    /// The snapshot a request should use from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new config; returns its generation.
    pub fn apply(&self, config: Arc<Config>, cluster: Option<Arc<Cluster>>) -> u64 {
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        let previous = self.snapshot.load_full();
        let next = Snapshot::build(config, Some(&previous), generation, &self.metrics, cluster.as_ref());
        self.cluster.store(cluster);
        self.snapshot.store(Arc::new(next));
        let mut status = self.status();
        status.loaded_at = Some(SystemTime::now());
        status.last_reload_error = None;
        generation
    }

    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn https_port(&self) -> Option<u16> {
        match self.https_port.load(Relaxed) {
            0 => None,
            p => Some(p),
        }
    }

    pub fn set_https_port(&self, port: Option<u16>) {
        self.https_port.store(port.unwrap_or(0), Relaxed);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The access log, when logging is on.
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access_log.load_full()
    }

    pub fn set_access_log(&self, log: Option<AccessLog>) {
        self.access_log.store(log.map(Arc::new));
    }

    /// The certificates the HTTPS listener serves.
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// The HTTPS listener's TLS setup.
    pub fn tls(&self) -> Option<Arc<TlsAcceptor>> {
        self.tls.load_full()
    }

    pub fn set_tls(&self, acceptor: TlsAcceptor) {
        self.tls.store(Some(Arc::new(acceptor)));
    }

    /// The client connections open now, and their caps.
    pub fn connections(&self) -> &Arc<ConnTracker> {
        &self.connections
    }

    /// What the ACME manager shares with the listeners and `/status`.
    pub fn acme(&self) -> &Arc<acme::Shared> {
        &self.acme
    }

    /// Turns true when the gateway starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to finish its request and close.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Counts a QUIC connection as open until the returned guard is dropped.
    pub fn quic_connection_opened(&self) -> QuicOpen {
        self.quic_open.fetch_add(1, Relaxed);
        QuicOpen(self.quic_open.clone())
    }

    /// Open QUIC (HTTP/3) connections.
    pub fn quic_connections(&self) -> usize {
        self.quic_open.load(Relaxed)
    }

    /// Counts a Retry sent (address validation of a new QUIC client).
    pub fn quic_retry_sent(&self) {
        self.quic_retries.fetch_add(1, Relaxed);
    }

    pub fn quic_retries(&self) -> u64 {
        self.quic_retries.load(Relaxed)
    }

    /// The `Alt-Svc` value advertising HTTP/3, while it is served.
    pub fn alt_svc(&self) -> Option<http::HeaderValue> {
        self.alt_svc.load().as_deref().cloned()
    }

    /// Advertises HTTP/3 on `port` for `max_age`, or stops advertising it (`None`).
    pub fn set_alt_svc(&self, advertised: Option<(u16, std::time::Duration)>) {
        let value = advertised.and_then(|(port, max_age)| {
            http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma={}", max_age.as_secs())).ok()
        });
        self.alt_svc.store(value.map(Arc::new));
    }
}

/// The `cluster_fallback_total` series, one per reason.
fn fallback_counters(metrics: &Metrics) -> FallbackCounters {
    FallbackCounters {
        timeout: metrics.cluster_fallback("timeout"),
        unreachable: metrics.cluster_fallback("unreachable"),
        error: metrics.cluster_fallback("error"),
    }
}

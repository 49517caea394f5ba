//! The running gateway: binds the listeners, starts the bundled API replicas, serves
//! connections, reloads on SIGHUP, and shuts down gracefully on SIGTERM/SIGINT (stop accepting,
//! let in-flight requests finish within `shutdown_grace`, exit 0).

mod conn;
pub mod listener;
pub mod proxy_protocol;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, CertSource, Config};
use crate::state::State;
use crate::tls::{self, CertStore};
pub use conn::AmbiguousFraming;
pub use listener::{ConnSlot, ConnTracker};

/// A started gateway. Dropping it does not stop it: call [`Gateway::shutdown`].
pub struct Gateway {
    pub state: Arc<State>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub api_addrs: Vec<SocketAddr>,
    certs: Arc<CertStore>,
    tracker: Arc<ConnTracker>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds everything `config` asks for and starts serving. Port 0 binds a free port; the
    /// bound addresses are in the returned handle.
    pub async fn start(config: Arc<Config>) -> Result<Gateway, String> {
        tls::provider();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        // the bundled API first, so the proxy's first health checks find it up
        let mut api_addrs = Vec::new();
        if let Some(api) = &config.api {
            for addr in &api.replicas {
                let l = listener::bind(*addr).map_err(|e| format!("cannot listen on {addr} (api replica): {e}"))?;
                let bound = l.local_addr().map_err(|e| e.to_string())?;
                api_addrs.push(bound);
                tasks.push(tokio::spawn(crate::api::serve(l, bound, shutdown_rx.clone())));
            }
        }

        let certs = Arc::new(CertStore::new(load_certs(&config)?));
        let state = State::new(config.clone());
        let tracker = Arc::new(ConnTracker::default());
        let server = &config.server;

        let mut https_addr = None;
        if let Some(addr) = server.https {
            let l = listener::bind(addr).map_err(|e| format!("cannot listen on {addr} (server.https): {e}"))?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            https_addr = Some(bound);
            state.set_https_port(Some(bound.port()));
            let acceptor = TlsAcceptor::from(tls::server_config(certs.clone(), config.tls.min_version)?);
            tasks.push(tokio::spawn(listener::accept_loop(
                l,
                Some(acceptor),
                state.clone(),
                tracker.clone(),
                shutdown_rx.clone(),
            )));
        }
        let mut http_addr = None;
        if let Some(addr) = server.http {
            let l = listener::bind(addr).map_err(|e| format!("cannot listen on {addr} (server.http): {e}"))?;
            http_addr = Some(l.local_addr().map_err(|e| e.to_string())?);
            tasks.push(tokio::spawn(listener::accept_loop(
                l,
                None,
                state.clone(),
                tracker.clone(),
                shutdown_rx.clone(),
            )));
        }
        Ok(Gateway {
            state,
            http_addr,
            https_addr,
            api_addrs,
            certs,
            tracker,
            shutdown,
            tasks,
        })
    }

    /// Swaps in a new config (routes, upstreams, certificates); returns its generation. Listener
    /// addresses are kept: a changed address needs a restart.
    pub fn reload(&self, config: Arc<Config>) -> Result<u64, String> {
        let certs = load_certs(&config)?;
        let old = self.state.snapshot();
        if old.config.server.http != config.server.http || old.config.server.https != config.server.https {
            tracing::warn!("listener addresses changed in the config: they take effect at the next restart");
        }
        self.certs.replace(certs);
        Ok(self.state.apply(config))
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Stops accepting, lets open connections finish their requests for up to `grace`, then
    /// stops everything. Returns false when connections were still open at the deadline.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(grace, self.tracker.drained()).await.is_ok();
        for t in &self.tasks {
            t.abort();
        }
        drained
    }
}

/// The certificates the config's source provides.
fn load_certs(config: &Config) -> Result<Vec<Arc<rustls::sign::CertifiedKey>>, String> {
    if config.server.https.is_none() {
        return Ok(Vec::new());
    }
    match &config.tls.source {
        CertSource::SelfSigned { dir, hosts } => Ok(vec![tls::selfsigned::ensure(dir, hosts)?]),
        CertSource::Files(files) => Ok(files.iter().map(|c| c.key.clone()).collect()),
    }
}

/// `orta-gateway run`: serves `path` until SIGTERM/SIGINT; SIGHUP reloads it.
pub async fn run(path: PathBuf, loaded: config::Loaded) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;

    let gateway = Gateway::start(loaded.config.clone()).await?;
    for (name, addr) in [("http", gateway.http_addr), ("https", gateway.https_addr)] {
        if let Some(addr) = addr {
            tracing::info!("listening {name}={addr}");
        }
    }
    for addr in &gateway.api_addrs {
        tracing::info!("bundled API replica listening api={addr}");
    }
    tracing::info!(config = %path.display(), "orta-gateway started");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&gateway, &path),
        }
    }
    let grace = gateway.state.snapshot().config.server.shutdown_grace;
    tracing::info!(
        open = gateway.open_connections(),
        "shutting down: finishing in-flight requests (grace {grace:?})"
    );
    if gateway.shutdown(grace).await {
        tracing::info!("shutdown complete");
    } else {
        tracing::warn!("shutdown grace ran out with connections still open");
    }
    Ok(())
}

fn reload(gateway: &Gateway, path: &Path) {
    match config::load(path) {
        Ok(loaded) => {
            for w in loaded.warnings.warning_lines() {
                tracing::warn!("{w}");
            }
            match gateway.reload(loaded.config) {
                Ok(generation) => tracing::info!(generation, "config reloaded"),
                Err(e) => tracing::error!("config reload failed, the old config keeps serving: {e}"),
            }
        }
        Err(diags) => {
            for line in diags.error_lines() {
                tracing::error!("{line}");
            }
            tracing::error!("config reload rejected, the old config keeps serving");
        }
    }
}

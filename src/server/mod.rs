//! The running gateway: binds the listeners (HTTP, HTTPS, admin, the bundled API replicas),
//! serves connections, applies a new config on reload (re-binding only the listeners whose
//! address changed, the new socket bound before the old one closes), and shuts down gracefully
//! on SIGTERM/SIGINT (stop accepting, let in-flight requests finish within `shutdown_grace`,
//! exit 0).

mod conn;
pub mod embedded;
pub mod listener;
mod quic;
mod reload;
mod reload_watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, CertSource, Config};
use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::state::State;
use crate::telemetry::access::AccessLog;
use crate::tls::{self, CertStore};
use embedded::{Embedded, Ready};

/// A started gateway. Dropping it does not stop it: call [`Gateway::shutdown`].
pub struct Gateway {
    state: Arc<State>,
    listeners: Mutex<Listeners>,
    /// The in-process service `[api]` runs (the bundled API), when the caller plugged one in.
    embedded: Option<Arc<dyn Embedded>>,
    /// That service made ready for the running config, when `[api]` is configured.
    api: Mutex<Option<Arc<dyn Ready>>>,
    /// The ACME manager, with `tls.source = "acme"`.
    acme: Mutex<Option<crate::tls::acme::AcmeHandle>>,
    /// The task that gives memory back after bursts of connections.
    trimming: tokio::task::AbortHandle,
}

/// One bound listening socket and its accept loop.
struct Bound {
    /// The address as configured (port 0 stays 0), to tell whether a reload changed it.
    wanted: SocketAddr,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Bound {
    fn stop(self) {
        let _ = self.stop.send(true);
        drop(self.task);
    }
}

#[derive(Default)]
struct Listeners {
    http: Option<Bound>,
    https: Option<Bound>,
    /// HTTP/3 on the UDP port of `https`.
    quic: Option<Quic>,
    admin: Option<Bound>,
    api: Vec<Bound>,
}

/// The QUIC endpoint and its accept loop.
struct Quic {
    endpoint: quinn::Endpoint,
    /// The UDP address it is bound to (the HTTPS listener's).
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Quic {
    /// Serves HTTP/3 on the UDP side of the HTTPS listener's address, and advertises it.
    fn start(https: SocketAddr, config: &Config, state: &Arc<State>) -> Result<Quic, String> {
        let quic = Quic::run(quic::bind(https, config, state)?, https, state);
        advertise_http3(Some(&quic), config, state);
        Ok(quic)
    }

    /// Serves a bound endpoint.
    fn run(endpoint: quinn::Endpoint, local: SocketAddr, state: &Arc<State>) -> Quic {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(quic::serve(endpoint.clone(), state.clone(), stop_rx));
        Quic {
            endpoint,
            local,
            stop,
            task,
        }
    }

    /// Takes no new connections; those open get GOAWAY, finish their requests and close.
    fn retire(self) {
        let _ = self.stop.send(true);
        drop(self.task);
    }
}

/// `Alt-Svc` for the HTTP/3 endpoint being served (none without one).
fn advertise_http3(quic: Option<&Quic>, config: &Config, state: &State) {
    state.set_alt_svc(quic.map(|q| {
        let port = match config.server.http3_advertised_port {
            0 => q.local.port(),
            p => p,
        };
        (port, config.server.alt_svc_max_age)
    }));
}

/// The slot of a single listener (not the API replicas).
fn slot(l: &mut Listeners, kind: Kind) -> &mut Option<Bound> {
    match kind {
        Kind::Http => &mut l.http,
        Kind::Https => &mut l.https,
        _ => &mut l.admin,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Https,
    Admin,
    Api,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "server.http",
            Kind::Https => "server.https",
            Kind::Admin => "admin.listen",
            Kind::Api => "api replica",
        }
    }
}

/// Binds `addr` for a listener of `kind` (nothing is served until [`start`]).
fn listen(kind: Kind, addr: SocketAddr) -> Result<TcpListener, String> {
    crate::net::bind(addr).map_err(|e| format!("cannot listen on {addr} ({}): {e}", kind.name()))
}

/// Starts the loop that serves a bound listener.
fn start(kind: Kind, wanted: SocketAddr, l: TcpListener, state: &Arc<State>, api: Option<&Arc<dyn Ready>>) -> Bound {
    let local = l.local_addr().unwrap_or(wanted);
    let (stop, stop_rx) = watch::channel(false);
    let task = match (kind, api) {
        (Kind::Http, _) => tokio::spawn(listener::accept_loop(l, false, state.clone(), stop_rx)),
        (Kind::Https, _) => tokio::spawn(listener::accept_loop(l, true, state.clone(), stop_rx)),
        (Kind::Admin, _) => tokio::spawn(crate::admin::serve(l, state.clone(), stop_rx)),
        (Kind::Api, Some(api)) => tokio::spawn(api.clone().serve(l, local, stop_rx)),
        // (never: a replica is only started with its service ready)
        (Kind::Api, None) => tokio::spawn(async {}),
    };
    Bound {
        wanted,
        local,
        stop,
        task,
    }
}

/// Binds `addr` and starts the loop that serves it.
fn bind(kind: Kind, addr: SocketAddr, state: &Arc<State>, api: Option<&Arc<dyn Ready>>) -> Result<Bound, String> {
    Ok(start(kind, addr, listen(kind, addr)?, state, api))
}

impl Gateway {
    /// Binds everything `config` asks for and starts serving. Port 0 binds a free port; the
    /// bound addresses are in [`Gateway::http_addr`] and friends. `embedded` is the service
    /// `[api]` runs in-process (the bundled API); without it, a config with `[api]` is refused.
    pub async fn start(config: Arc<Config>, embedded: Option<Arc<dyn Embedded>>) -> Result<Gateway, String> {
        crate::pem::provider();
        let fd_limit = crate::zerocopy::raise_fd_limit();
        tracing::debug!(?fd_limit, "open files limit");
        let certs = Arc::new(CertStore::new(load_certs(&config)?.unwrap_or_default()));
        let state = State::new(config.clone(), certs)?;
        let acme = match &config.tls.source {
            CertSource::Acme(settings) if config.server.https.is_some() => Some(crate::tls::acme::start(
                settings.clone(),
                state.cluster(),
                state.acme().clone(),
            )?),
            _ => None,
        };
        state.set_access_log(AccessLog::open(&config.log.access)?);
        if config.server.https.is_some() {
            let acceptor = TlsAcceptor::from(tls::server_config(state.certs().clone(), config.tls.min_version)?);
            state.set_tls(acceptor);
        }
        let mut l = Listeners::default();
        // the bundled API first, so the proxy's first health checks find it up
        let api = prepare_api(embedded.as_deref(), &config, None)?;
        for addr in config.api.iter().flat_map(|a| a.replicas.iter()) {
            l.api.push(bind(Kind::Api, *addr, &state, api.as_ref())?);
        }
        l.https = config
            .server
            .https
            .map(|a| bind(Kind::Https, a, &state, None))
            .transpose()?;
        if config.server.http3
            && let Some(https) = &l.https
        {
            l.quic = Some(Quic::start(https.local, &config, &state)?);
        }
        l.http = config
            .server
            .http
            .map(|a| bind(Kind::Http, a, &state, None))
            .transpose()?;
        l.admin = config
            .admin
            .listen
            .map(|a| bind(Kind::Admin, a, &state, None))
            .transpose()?;
        let trimming = tokio::spawn(give_memory_back(state.connections().clone())).abort_handle();
        let gw = Gateway {
            state,
            listeners: Mutex::new(l),
            embedded,
            api: Mutex::new(api),
            acme: Mutex::new(acme),
            trimming,
        };
        gw.publish_addresses();
        Ok(gw)
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared state: the snapshot and the long-lived parts beside it.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The snapshot a new request would use now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listeners().http.as_ref().map(|b| b.local)
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners().https.as_ref().map(|b| b.local)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.listeners().admin.as_ref().map(|b| b.local)
    }

    pub fn api_addrs(&self) -> Vec<SocketAddr> {
        self.listeners().api.iter().map(|b| b.local).collect()
    }

    fn publish_addresses(&self) {
        let l = self.listeners();
        self.state.set_https_port(l.https.as_ref().map(|b| b.local.port()));
        let mut status = self.state.status();
        status.http = l.http.as_ref().map(|b| b.local);
        status.https = l.https.as_ref().map(|b| b.local);
        status.http3 = l.quic.as_ref().map(|q| q.local);
        status.admin = l.admin.as_ref().map(|b| b.local);
        status.api = l.api.iter().map(|b| b.local).collect();
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.state.connections().open()
    }

    /// Stops accepting, lets open connections finish their requests for up to `grace`, then
    /// stops everything. Returns false when connections were still open at the deadline.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let l = std::mem::take(&mut *self.listeners());
        self.state.begin_shutdown();
        let mut tasks = Vec::new();
        for b in [l.http, l.https].into_iter().flatten() {
            let _ = b.stop.send(true);
            tasks.push(b.task);
        }
        // HTTP/3: no new connections, GOAWAY on the open ones
        self.state.set_alt_svc(None);
        let quic = l.quic.map(|q| {
            let _ = q.stop.send(true);
            tasks.push(q.task);
            q.endpoint
        });
        // the accept loops take what is queued, then close their sockets
        for t in tasks {
            let _ = t.await;
        }
        let drained = tokio::time::timeout(grace, self.state.connections().drained())
            .await
            .is_ok();
        if let Some(endpoint) = quic {
            // the requests in flight had the grace too
            let _ = tokio::time::timeout(grace.min(quic::CLOSE_WAIT), endpoint.wait_idle()).await;
            quic::close(&endpoint);
        }
        for b in l.api.into_iter().chain(l.admin) {
            b.stop();
        }
        self.trimming.abort();
        drained
    }
}

/// Once a second, looks at how many connections are open; when a burst of them has gone, asks
/// the allocator to return the pages they used (`memory`).
async fn give_memory_back(connections: Arc<crate::net::ConnTracker>) {
    let mut trimmer = crate::memory::Trimmer::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if trimmer.sample(connections.take_peak(), connections.open()) {
            let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
        }
    }
}

/// The in-process service made ready for `config` (`current` when nothing it uses changed).
fn prepare_api(
    embedded: Option<&dyn Embedded>,
    config: &Config,
    current: Option<&Arc<dyn Ready>>,
) -> Result<Option<Arc<dyn Ready>>, String> {
    let Some(settings) = &config.api else { return Ok(None) };
    let Some(embedded) = embedded else {
        return Err("[api] is configured, but this gateway was started without the bundled API".into());
    };
    embedded.prepare(settings, current).map(Some)
}

/// The certificates the config's source provides (`None` for ACME: its manager provides them).
fn load_certs(config: &Config) -> Result<Option<Vec<Arc<rustls::sign::CertifiedKey>>>, String> {
    if config.server.https.is_none() {
        return Ok(Some(Vec::new()));
    }
    match &config.tls.source {
        CertSource::SelfSigned { dir, hosts } => Ok(Some(vec![tls::selfsigned::ensure(dir, hosts)?])),
        CertSource::Files(files) => Ok(Some(files.iter().map(|c| c.key.clone()).collect())),
        CertSource::Acme(_) => Ok(None),
    }
}

/// Files whose change should reload the config: the config itself and the files it names.
pub fn watched_files(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    match &config.tls.source {
        CertSource::Files(certs) => {
            for c in certs {
                files.push(c.cert_path.clone());
                files.push(c.key_path.clone());
            }
        }
        CertSource::Acme(a) => files.extend(a.ca_root.clone()),
        CertSource::SelfSigned { .. } => {}
    }
    files
}

/// `orta-gateway run`: serves `path` until SIGTERM/SIGINT; SIGHUP or a change to the file (or
/// the files it names) reloads it.
pub async fn run(path: PathBuf, loaded: config::Loaded, embedded: Option<Arc<dyn Embedded>>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;

    probe_cluster(&loaded.config).await?;
    let gateway = Gateway::start(loaded.config.clone(), embedded).await?;
    for (name, addr) in [
        ("http", gateway.http_addr()),
        ("https", gateway.https_addr()),
        ("admin", gateway.admin_addr()),
    ] {
        if let Some(addr) = addr {
            tracing::info!("listening {name}={addr}");
        }
    }
    for addr in gateway.api_addrs() {
        tracing::info!("bundled API replica listening api={addr}");
    }
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = reload_watch::watch(&watched_files(&path, &loaded.config), changed_tx.clone());
    tracing::info!(config = %path.display(), generation = 1, "orta-gateway started");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = changed_tx.send(());
            }
            Some(()) = changed.recv() => {
                // editors write in several steps: let the burst settle, then reload once
                reload_watch::settle(&mut changed).await;
                if gateway.reload_file(&path).await.is_ok() {
                    let config = gateway.state.snapshot().config.clone();
                    watcher = reload_watch::watch(&watched_files(&path, &config), changed_tx.clone());
                }
            }
        }
    }
    drop(watcher);
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

/// Asks `[cluster]`'s Redis once. Redis refusing (a wrong password, an unknown user) is an
/// error. No answer is not (the gateway serves on its local state until Redis answers): it is
/// logged, and returned as `Ok(Some(warning))` for `check` to print.
pub async fn probe_cluster(config: &Config) -> Result<Option<String>, String> {
    let Some(c) = &config.cluster else { return Ok(None) };
    match crate::cluster::probe(c).await {
        Ok(()) => Ok(None),
        Err(e @ crate::cluster::ProbeError::Refused(_)) => Err(e.describe(c)),
        Err(e) => {
            let warning = format!(
                "{}; the gateway serves with its local state (certificates, rate limits) until it answers",
                e.describe(c)
            );
            tracing::error!("{warning}");
            Ok(Some(warning))
        }
    }
}

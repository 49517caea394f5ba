//! Reload with one commit point: everything that can fail is prepared first with nothing
//! visible (certificates, TLS settings, the access log, the API database, an ACME manager,
//! sockets for listeners whose address changed, HTTP/3's UDP socket when it moves or starts);
//! then one step that cannot fail swaps the snapshot, starts the new listeners and stops the
//! old ones.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::embedded::{self, Ready};
use super::{Bound, Gateway, Kind, Listeners, Quic, advertise_http3, listen, load_certs, prepare_api, slot, start};
use crate::config::{self, AccessTarget, CertSource, Config};
use crate::telemetry::access::AccessLog;
use crate::tls::{self, acme};

/// What a reload does to one listener slot, decided (and new sockets bound) before anything
/// changes.
enum Move {
    /// The address is unchanged: the running listener stays.
    Keep,
    /// A new socket, bound; started at the commit, when the old listener (if any) stops.
    Rebind(SocketAddr, TcpListener),
    /// No listener any more.
    Close,
}

/// The move for a slot whose listener is `current` and should listen on `wanted`.
fn plan(kind: Kind, current: Option<&Bound>, wanted: Option<SocketAddr>) -> Result<Move, String> {
    Ok(match (current, wanted) {
        (Some(cur), Some(w)) if cur.wanted == w => Move::Keep,
        (_, Some(w)) => Move::Rebind(w, listen(kind, w)?),
        (_, None) => Move::Close,
    })
}

/// A reload with every fallible part done; applying it cannot fail. `None` fields leave the
/// running part as it is.
struct Prepared {
    /// `[cluster]`'s connection: the running one, a new one, or none.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    certs: Option<Vec<Arc<CertifiedKey>>>,
    acceptor: Option<TlsAcceptor>,
    /// A new access log (`Some(None)`: logging turns off).
    access_log: Option<Option<AccessLog>>,
    api: Option<Arc<dyn Ready>>,
    /// A new ACME manager to start (`Some(None)`: ACME turns off).
    acme: Option<Option<acme::Prepared>>,
    moves: Vec<(Kind, Move)>,
    /// The API replicas wanted, and whether they keep the running service (else they restart).
    wanted_api: Vec<SocketAddr>,
    same_api: bool,
    /// Sockets for the replicas that start.
    new_api: Vec<(SocketAddr, TcpListener)>,
    /// HTTP/3: stays, starts on a new endpoint (bound), or stops.
    quic: QuicMove,
}

enum QuicMove {
    Keep,
    Start(quinn::Endpoint, SocketAddr),
    Close,
}

/// Whether a running API replica stays: its address still wanted, its service the same.
fn replica_stays(b: &Bound, same_api: bool, wanted: &[SocketAddr]) -> bool {
    same_api && wanted.contains(&b.wanted)
}

impl Gateway {
    /// Applies a new config, whole or not at all: [`Gateway::prepare`], then
    /// [`Gateway::commit`]. On error nothing changes (sockets bound for the attempt are
    /// closed). Returns the new generation.
    pub fn reload(&self, config: Arc<Config>) -> Result<u64, String> {
        // held from prepare to commit, so two reloads cannot interleave
        let mut acme = self.acme.lock().unwrap_or_else(|e| e.into_inner());
        let mut listeners = self.listeners();
        let prepared = self.prepare(&config, acme.as_ref(), &listeners)?;
        let (generation, replaced) = self.commit(config, prepared, &mut acme, &mut listeners);
        drop((acme, listeners));
        for b in replaced {
            b.stop();
        }
        self.publish_addresses();
        Ok(generation)
    }

    /// Everything that can fail, with nothing visible yet.
    fn prepare(
        &self,
        config: &Config,
        acme: Option<&acme::AcmeHandle>,
        listeners: &Listeners,
    ) -> Result<Prepared, String> {
        let state = &self.state;
        let old = state.snapshot();
        let certs = load_certs(config)?;
        let acceptor = match config.server.https {
            Some(_) if state.tls().is_none() || old.config.tls.min_version != config.tls.min_version => Some(
                TlsAcceptor::from(tls::server_config(state.certs().clone(), config.tls.min_version)?),
            ),
            _ => None,
        };
        let access_log = match state.access_log().as_deref() {
            Some(log) if log.settings == config.log.access => None,
            None if config.log.access.target == AccessTarget::Off => None,
            _ => Some(AccessLog::open(&config.log.access)?),
        };
        let (api, same_api) = {
            let current = self.api.lock().unwrap_or_else(|e| e.into_inner());
            let next = prepare_api(self.embedded.as_deref(), config, current.as_ref())?;
            let same = match (current.as_ref(), next.as_ref()) {
                (Some(a), Some(b)) => embedded::same(a, b),
                _ => false,
            };
            (next, same)
        };
        let cluster = state.cluster_for(config.cluster.as_ref())?;
        // ACME: a changed domain set (or cluster) starts a new manager; the old certificate
        // keeps serving until the new one is issued. Unchanged settings keep the running one.
        let acme = match (&config.tls.source, config.server.https) {
            (CertSource::Acme(settings), Some(_)) if acme.is_none_or(|a| !a.serves(settings, cluster.as_ref())) => {
                Some(Some(acme::prepare(settings.clone(), cluster.clone())?))
            }
            (CertSource::Acme(_), Some(_)) => None,
            _ => Some(None),
        };
        let mut moves = Vec::with_capacity(3);
        for (kind, wanted) in [
            (Kind::Http, config.server.http),
            (Kind::Https, config.server.https),
            (Kind::Admin, config.admin.listen),
        ] {
            let current = match kind {
                Kind::Http => listeners.http.as_ref(),
                Kind::Https => listeners.https.as_ref(),
                _ => listeners.admin.as_ref(),
            };
            moves.push((kind, plan(kind, current, wanted)?));
        }
        let wanted_api: Vec<SocketAddr> = config.api.iter().flat_map(|a| a.replicas.clone()).collect();
        // replicas move to a new database by restarting them
        let mut new_api = Vec::new();
        for &addr in &wanted_api {
            if !listeners
                .api
                .iter()
                .any(|b| replica_stays(b, same_api, &wanted_api) && b.wanted == addr)
            {
                new_api.push((addr, listen(Kind::Api, addr)?));
            }
        }
        let quic = self.plan_quic(config, &moves, listeners)?;
        Ok(Prepared {
            cluster,
            quic,
            certs,
            acceptor,
            access_log,
            api,
            acme,
            moves,
            wanted_api,
            same_api,
            new_api,
        })
    }

    /// HTTP/3 follows the HTTPS listener: it stays where that stays, moves with it (a new UDP
    /// socket, bound now so that a failure leaves everything as it was), or stops.
    fn plan_quic(&self, config: &Config, moves: &[(Kind, Move)], listeners: &Listeners) -> Result<QuicMove, String> {
        let https_after = moves
            .iter()
            .find(|(k, _)| *k == Kind::Https)
            .and_then(|(_, mv)| match mv {
                Move::Keep => listeners.https.as_ref().map(|b| b.local),
                Move::Rebind(_, socket) => socket.local_addr().ok(),
                Move::Close => None,
            });
        Ok(match (config.server.http3, https_after) {
            (true, Some(addr)) => match &listeners.quic {
                Some(q) if q.local == addr => QuicMove::Keep,
                _ => QuicMove::Start(super::quic::bind(addr, config, &self.state)?, addr),
            },
            _ => QuicMove::Close,
        })
    }

    /// The commit point: nothing here can fail. Returns the new generation and the listeners
    /// to stop.
    fn commit(
        &self,
        config: Arc<Config>,
        p: Prepared,
        acme: &mut Option<acme::AcmeHandle>,
        listeners: &mut Listeners,
    ) -> (u64, Vec<Bound>) {
        let state = &self.state;
        match p.acme {
            Some(Some(prepared)) => {
                let keep = state.certs().current();
                let handle = prepared.start(state.acme().clone());
                if acme.is_some() {
                    state.certs().replace(keep);
                }
                *acme = Some(handle);
            }
            Some(None) => {
                *acme = None;
                state.acme().clear();
            }
            None => {}
        }
        if let Some(certs) = p.certs {
            state.certs().replace(certs);
        }
        if let Some(a) = p.acceptor {
            state.set_tls(a);
        }
        if let Some(log) = p.access_log {
            state.set_access_log(log);
        }
        *self.api.lock().unwrap_or_else(|e| e.into_inner()) = p.api.clone();
        let generation = state.apply(config, p.cluster);
        let mut replaced = Vec::new();
        for (kind, mv) in p.moves {
            let slot = slot(listeners, kind);
            match mv {
                Move::Keep => {}
                Move::Rebind(wanted, socket) => replaced.extend(slot.replace(start(kind, wanted, socket, state, None))),
                Move::Close => replaced.extend(slot.take()),
            }
        }
        match p.quic {
            QuicMove::Keep => {}
            QuicMove::Start(endpoint, local) => {
                if let Some(old) = listeners.quic.replace(Quic::run(endpoint, local, state)) {
                    old.retire();
                }
            }
            QuicMove::Close => {
                if let Some(old) = listeners.quic.take() {
                    old.retire();
                }
            }
        }
        advertise_http3(listeners.quic.as_ref(), &state.snapshot().config, state);
        let (keep, gone): (Vec<Bound>, Vec<Bound>) = std::mem::take(&mut listeners.api)
            .into_iter()
            .partition(|b| replica_stays(b, p.same_api, &p.wanted_api));
        listeners.api = keep;
        replaced.extend(gone);
        for (addr, socket) in p.new_api {
            listeners
                .api
                .push(start(Kind::Api, addr, socket, state, p.api.as_ref()));
        }
        (generation, replaced)
    }

    /// Reloads from `path`: on a problem, logs it as `check` would, counts it, keeps serving.
    pub async fn reload_file(&self, path: &Path) -> Result<u64, String> {
        let result = match config::load(path) {
            Ok(loaded) => {
                for w in loaded.warnings.warning_lines() {
                    tracing::warn!("{w}");
                }
                let old = self.state.cluster().map(|c| c.settings.clone());
                // a new `[cluster]` whose Redis refuses the credentials is refused
                let probed = match loaded.config.cluster != old {
                    true => super::probe_cluster(&loaded.config).await,
                    false => Ok(None),
                };
                if let Err(e) = &probed {
                    tracing::error!("{e}");
                }
                probed.and_then(|_| self.reload(loaded.config))
            }
            Err(diags) => {
                for line in diags.error_lines() {
                    tracing::error!("{line}");
                }
                Err(diags.error_lines().join("\n"))
            }
        };
        match &result {
            Ok(generation) => {
                self.state.metrics().reload(true);
                tracing::info!(generation, "config reloaded");
            }
            Err(e) => {
                self.state.metrics().reload(false);
                self.state.status().last_reload_error = Some(e.clone());
                tracing::error!("config reload rejected, the old config keeps serving");
            }
        }
        result
    }
}

//! ACME certificates without certbot: rustls-acme drives the protocol (account, order,
//! tls-alpn-01 or http-01 challenge, finalisation); around it this module supervises one
//! `AcmeState` for the configured domain set, keeps the certificates in our own cache (`cache`),
//! publishes each new certificate to the listener's certificate store (new handshakes get it at
//! once, open connections keep theirs), serves a temporary self-signed certificate until the
//! first one arrives, and renews by our policy (`policy`, with ARI from `ari`) where it says
//! earlier than rustls-acme would. With `[cluster]`, the nodes share one order through Redis
//! instead (`shared`, running its own `order` and publishing challenge answers on a `challenge`
//! board every node reads).

pub mod ari;
pub mod cache;
mod challenge;
mod order;
pub(crate) mod policy;
pub mod shared;
mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AcmeConfig, EventError, EventOk, UseChallenge};

use crate::cluster::Cluster;
use crate::config::{AcmeChallenge, AcmeSettings};
use cache::{AcmeCache, CacheHandle};
pub use challenge::Challenges;
use policy::Window;
pub use state::{AcmeStatus, Shared};

/// A running manager; stops when dropped.
pub struct AcmeHandle {
    pub settings: AcmeSettings,
    /// The cluster orders are shared through, if any.
    cluster: Option<Arc<Cluster>>,
    task: tokio::task::JoinHandle<()>,
}

impl AcmeHandle {
    /// Whether this manager is the one `settings` with `cluster` asks for.
    pub fn serves(&self, settings: &AcmeSettings, cluster: Option<&Arc<Cluster>>) -> bool {
        self.settings == *settings
            && match (&self.cluster, cluster) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Drop for AcmeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The TLS client config for talking to the CA: public roots, plus `ca_root` when set.
pub fn client_config(settings: &AcmeSettings) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &settings.ca_root {
        for c in crate::pem::load_chain(path)? {
            roots
                .add(c)
                .map_err(|e| format!("acme.ca_root {}: {e}", path.display()))?;
        }
    }
    let cfg = ClientConfig::builder_with_provider(crate::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Starts managing `settings`: the store serves the cached certificate if there is one, else
/// a temporary self-signed one, until the CA's arrives.
pub fn start(settings: AcmeSettings, cluster: Option<Arc<Cluster>>, state: Arc<Shared>) -> Result<AcmeHandle, String> {
    Ok(prepare(settings, cluster)?.start(state))
}

/// An ACME manager ready to start: what can fail (the CA's TLS settings, the temporary
/// certificate in the cache directory) is done, nothing is visible yet.
pub struct Prepared {
    settings: AcmeSettings,
    cluster: Option<Arc<Cluster>>,
    client: Arc<ClientConfig>,
    temporary: Arc<CertifiedKey>,
}

/// Prepares a manager for `settings` (sharing orders through `cluster` when given);
/// [`Prepared::start`] cannot fail.
pub fn prepare(settings: AcmeSettings, cluster: Option<Arc<Cluster>>) -> Result<Prepared, String> {
    let client = client_config(&settings)?;
    let temporary = super::selfsigned::ensure(&settings.cache_dir.join("temporary"), &settings.domains)?;
    Ok(Prepared {
        settings,
        cluster,
        client,
        temporary,
    })
}

impl Prepared {
    /// Serves the temporary certificate and starts the manager.
    pub fn start(self, state: Arc<Shared>) -> AcmeHandle {
        let Prepared {
            settings,
            cluster,
            client,
            temporary,
        } = self;
        run(settings, cluster, client, temporary, state)
    }
}

fn run(
    settings: AcmeSettings,
    cluster: Option<Arc<Cluster>>,
    client: Arc<ClientConfig>,
    temporary: Arc<CertifiedKey>,
    state: Arc<Shared>,
) -> AcmeHandle {
    state.certs.replace(vec![temporary]);
    *state.status() = Some(AcmeStatus {
        domains: settings.domains.clone(),
        pending: Some("waiting for the first certificate from the CA".into()),
        ..AcmeStatus::default()
    });
    let current: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let publish = {
        let (state, current) = (state.clone(), current.clone());
        move |pem: &[u8]| match crate::pem::certified_key(pem) {
            Ok((ck, leaf)) => {
                state.certs.replace(vec![Arc::new(ck)]);
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(leaf);
                if let Some(s) = state.status().as_mut() {
                    s.pending = None;
                }
                true
            }
            Err(e) => {
                tracing::error!("ACME certificate unusable: {e}");
                false
            }
        }
    };
    if let Some(cluster) = cluster {
        let cache = AcmeCache::new(&settings.cache_dir, Box::new(|_| {}));
        let manager = shared::ClusterManager::new(
            settings.clone(),
            state,
            cluster.clone(),
            client,
            cache,
            Box::new(publish),
        );
        return AcmeHandle {
            settings,
            cluster: Some(cluster),
            task: tokio::spawn(manager.run()),
        };
    }
    let cache = AcmeCache::new(
        &settings.cache_dir,
        Box::new(move |pem| {
            publish(pem);
        }),
    );
    let manager = Manager {
        settings: settings.clone(),
        state,
        cache,
        client,
        current,
        ari: None,
        renewing: false,
    };
    AcmeHandle {
        settings,
        cluster: None,
        task: tokio::spawn(manager.run()),
    }
}

struct Manager {
    settings: AcmeSettings,
    state: Arc<Shared>,
    cache: Arc<AcmeCache>,
    client: Arc<ClientConfig>,
    /// The leaf of the certificate being served.
    current: Arc<Mutex<Option<Vec<u8>>>>,
    /// The last ARI answer, and when to ask again.
    ari: Option<(Window, tokio::time::Instant)>,
    /// A renewal we forced is under way: don't force another until it lands.
    renewing: bool,
}

impl Manager {
    async fn run(mut self) {
        if let Err(e) = self.cache.check_writable() {
            let why = format!("ACME cache unusable, no certificate ordered (it could not be kept): {e}");
            tracing::error!("{why}");
            if let Some(s) = self.state.status().as_mut() {
                s.pending = Some(why.clone());
                s.last_error = Some(why);
            }
            return;
        }
        tracing::info!(domains = ?self.settings.domains, directory = %self.settings.directory, "ACME: managing certificates");
        loop {
            let s = &self.settings;
            let mut acme = AcmeConfig::new_with_client_config(&s.domains, self.client.clone())
                .contact(&s.contact)
                .directory(&s.directory)
                .challenge_type(match s.challenge {
                    AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
                    AcmeChallenge::Http01 => UseChallenge::Http01,
                })
                .cache(CacheHandle(self.cache.clone()))
                .state();
            self.state.challenges.store(Some(Arc::new(Challenges::Library {
                resolver: acme.resolver(),
                tls: acme.challenge_rustls_config_with_provider(crate::pem::provider()),
            })));
            loop {
                let wake = tokio::time::sleep(self.settings.check_interval.min(self.until_renewal()));
                tokio::select! {
                    event = acme.next() => match event {
                        Some(e) => self.on_event(e),
                        None => break,
                    },
                    _ = wake => {
                        if self.renew_now().await {
                            // a fresh state that finds no cached certificate orders a new one;
                            // the current certificate keeps serving until it arrives
                            self.cache.force_fresh();
                            break;
                        }
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Result<EventOk, EventError<std::io::Error, std::io::Error>>) {
        match event {
            Ok(EventOk::DeployedNewCert) => {
                self.state.metrics.acme_renewal(true);
                self.ari = None;
                self.renewing = false;
                tracing::info!(domains = ?self.settings.domains, "ACME: new certificate issued and deployed");
                if let Some(s) = self.state.status().as_mut() {
                    s.last_error = None;
                }
            }
            Ok(EventOk::DeployedCachedCert) => {
                tracing::info!(domains = ?self.settings.domains, "ACME: cached certificate deployed")
            }
            Ok(_) => {}
            Err(e) => {
                // the order's error carries the CA's problem document
                if matches!(e, EventError::Order(_) | EventError::NewCertParse(_)) {
                    self.state.metrics.acme_renewal(false);
                }
                tracing::warn!(domains = ?self.settings.domains, "ACME: {e} (retrying with backoff)");
                if let Some(s) = self.state.status().as_mut() {
                    s.last_error = Some(e.to_string());
                }
            }
        }
    }

    fn leaf(&self) -> Option<Vec<u8>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How long until the planned renewal (a long time when nothing is served yet).
    fn until_renewal(&self) -> Duration {
        let Some(info) = self.leaf().and_then(|l| crate::pem::describe(&l)) else {
            return Duration::from_secs(3600);
        };
        let ari = self.ari.map(|(w, _)| w);
        let (at, _) = policy::plan(
            info.not_before,
            info.not_after,
            &info.serial,
            self.settings.renew_before,
            ari,
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Duration::from_secs((at - now).clamp(1, i64::MAX) as u64)
    }

    /// True when our policy wants a renewal now and rustls-acme would not start one yet.
    async fn renew_now(&mut self) -> bool {
        if self.renewing {
            return false;
        }
        let Some(leaf) = self.leaf() else { return false };
        let Some(info) = crate::pem::describe(&leaf) else {
            return false;
        };
        if self.settings.renew_before == crate::config::RenewBefore::Auto {
            ari::refresh(&mut self.ari, &self.settings.directory, &self.client, &leaf).await;
        }
        let ari = self.ari.map(|(w, _)| w);
        let (at, reason) = policy::plan(
            info.not_before,
            info.not_after,
            &info.serial,
            self.settings.renew_before,
            ari,
        );
        if let Some(s) = self.state.status().as_mut() {
            s.next_renewal = Some((at, reason));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let early = at < policy::library_renewal(info.not_before, info.not_after);
        if now >= at && early && now < policy::library_renewal(info.not_before, info.not_after) {
            tracing::info!(domains = ?self.settings.domains, "ACME: renewing now, {}", reason.describe());
            self.renewing = true;
            return true;
        }
        false
    }
}

//! What the ACME manager shares with the rest of the gateway, long-lived across reloads: the
//! certificate store it installs certificates in, the running order's challenge answers, its
//! status for `/status`, and the metrics it counts renewals in.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::challenge::Challenges;
use super::policy::Reason;
use crate::telemetry::metrics::Metrics;
use crate::tls::store::CertStore;

/// The manager's state as `/status` and the log show it.
#[derive(Debug, Clone, Default)]
pub struct AcmeStatus {
    pub domains: Vec<String>,
    /// Why no CA-issued certificate is served yet.
    pub pending: Option<String>,
    pub last_error: Option<String>,
    /// Unix seconds, and why then.
    pub next_renewal: Option<(i64, Reason)>,
}

/// What the ACME manager shares with the rest of the gateway, long-lived across reloads: the
/// store it installs certificates in, the running order's challenge answers (read by the TLS
/// handshake and the http-01 path), its status for `/status`, and the metrics it counts
/// renewals in.
pub struct Shared {
    pub certs: Arc<CertStore>,
    pub challenges: ArcSwapOption<Challenges>,
    status: Mutex<Option<AcmeStatus>>,
    pub(super) metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(certs: Arc<CertStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            certs,
            challenges: ArcSwapOption::empty(),
            status: Mutex::new(None),
            metrics,
        }
    }

    /// ACME is off: no challenge to answer, no status to report.
    pub fn clear(&self) {
        self.challenges.store(None);
        *self.status() = None;
    }

    /// The manager's status (`None` without ACME).
    pub fn status(&self) -> std::sync::MutexGuard<'_, Option<AcmeStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

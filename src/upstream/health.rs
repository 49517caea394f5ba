//! Active health checks: every `interval`, each server of an upstream gets `GET path` on a fresh
//! connection; `fails` consecutive failures take it out, `passes` consecutive successes bring it
//! back. The checks of a server stop when the server is dropped (its upstream was replaced).

use std::sync::Arc;

use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use tokio::time::{MissedTickBehavior, interval, timeout};

use super::pool;
use super::server::Server;
use crate::config::HealthSpec;
use crate::proto::body::Body;

/// Checks `server` every `spec.interval` until it is dropped.
pub(super) fn spawn(server: &Arc<Server>, spec: Option<&HealthSpec>) {
    let Some(spec) = spec.cloned() else { return };
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        let mut tick = interval(spec.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(server) = weak.upgrade() else { break };
            let ok = probe(&server, &spec).await;
            server.record_check(ok, spec.fails, spec.passes);
        }
    });
}

/// One check: a 2xx or 3xx answer within `timeout` passes.
pub async fn probe(server: &Server, spec: &HealthSpec) -> bool {
    let result = timeout(spec.timeout, async {
        let conn = pool::connect(&server.addr, spec.timeout).await.ok()?;
        let req = Request::get(spec.path.as_str())
            .header(HOST, HeaderValue::from_str(&server.label).ok()?)
            .header(CONNECTION, "close")
            .header(USER_AGENT, "orta-gateway health check")
            .body(())
            .ok()?;
        let (parts, ()) = req.into_parts();
        let resp = conn.send(&parts, std::iter::empty(), Body::Empty, false).await.ok()?;
        let s = resp.status();
        Some(s.is_success() || s.is_redirection())
    })
    .await;
    let ok = matches!(result, Ok(Some(true)));
    if !ok {
        tracing::debug!(server = %server.label, path = %spec.path, "health check failed");
    }
    ok
}

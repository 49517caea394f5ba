//! Prometheus metrics. Request counters and latency histograms live in a prometheus-client
//! registry; each route resolves its series once (when its snapshot is built), so a request
//! costs a couple of atomic adds, not a label lookup. State that already has its own numbers
//! (upstream health, the file cache, certificates) is read when `/metrics` is scraped.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn new_histogram() -> Histogram {
    // 0.5 ms to ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metrics; long-lived, carried across reloads.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    rate_limited: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    acme_renewals: Family<Labels, Counter>,
    cluster_fallbacks: Family<Labels, Counter>,
    /// Requests that matched no route.
    unrouted: Arc<RouteMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(new_histogram);
        let rate_limited = Family::<Labels, Counter>::default();
        let reloads = Family::<Labels, Counter>::default();
        let acme_renewals = Family::<Labels, Counter>::default();
        let cluster_fallbacks = Family::<Labels, Counter>::default();
        registry.register("requests", "Requests answered, by route and status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response, by route",
            latency.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate-limit zone",
            rate_limited.clone(),
        );
        registry.register("reloads", "Config reloads, by result", reloads.clone());
        registry.register(
            "acme_renewals",
            "ACME certificate orders and renewals, by result",
            acme_renewals.clone(),
        );
        registry.register(
            "cluster_fallback",
            "Requests of cluster-scoped rate limits decided by this gateway's own buckets because Redis did not answer, by reason",
            cluster_fallbacks.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&vec![("result", result.to_string())]);
            let _ = acme_renewals.get_or_create(&vec![("result", result.to_string())]);
        }
        let unrouted = Arc::new(RouteMetrics::new(&requests, &latency, "-"));
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            reloads,
            acme_renewals,
            cluster_fallbacks,
            unrouted,
        }
    }

    /// The series of one route (by its name).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics::new(&self.requests, &self.latency, name))
    }

    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    /// The counter of requests a zone refused.
    pub fn zone_counter(&self, zone: &str) -> Counter {
        self.rate_limited.get_or_create_owned(&vec![("zone", zone.to_string())])
    }

    /// The counter of cluster fallbacks for one reason (`timeout`, `unreachable`, `error`).
    pub fn cluster_fallback(&self, reason: &str) -> Counter {
        self.cluster_fallbacks
            .get_or_create_owned(&vec![("reason", reason.to_string())])
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&vec![("result", result.to_string())]).inc();
    }

    pub fn reloads(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&vec![("result", result.to_string())]).get()
    }

    pub fn acme_renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.acme_renewals
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The registry's series in Prometheus text format, then `extra` (series read at scrape
    /// time), then the terminating `# EOF`.
    pub fn render(&self, extra: &[Gauge]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = encode(&mut out, &self.registry);
        // `encode` ends with "# EOF": put the scrape-time series before it
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        let mut last = "";
        for g in extra {
            if g.name != last {
                let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
                let _ = writeln!(out, "# TYPE {} {}", g.name, g.kind);
                last = g.name;
            }
            let labels: Vec<String> = g
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", g.name, g.value);
            } else {
                let _ = writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), g.value);
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A series read at scrape time. Series of one name must be adjacent.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// One route's request counters (by status, resolved on first use) and latency histogram.
pub struct RouteMetrics {
    name: String,
    requests: Family<Labels, Counter>,
    by_status: Box<[OnceLock<Counter>]>,
    latency: Histogram,
}

impl RouteMetrics {
    fn new(
        requests: &Family<Labels, Counter>,
        latency: &Family<Labels, Histogram, fn() -> Histogram>,
        name: &str,
    ) -> Self {
        Self {
            name: name.to_string(),
            requests: requests.clone(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            latency: latency.get_or_create_owned(&vec![("route", name.to_string())]),
        }
    }

    /// Counts one finished request.
    pub fn observe(&self, status: u16, seconds: f64) {
        let slot = (status.clamp(100, 599) - 100) as usize;
        self.by_status[slot]
            .get_or_init(|| {
                self.requests
                    .get_or_create_owned(&vec![("route", self.name.clone()), ("status", status.to_string())])
            })
            .inc();
        self.latency.observe(seconds);
    }
}

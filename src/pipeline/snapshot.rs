//! The running snapshot: a validated [`Config`] compiled into what requests need (the router
//! with resolved handlers), tied to the long-lived upstreams. Requests load it once and keep it
//! to the end; a reload builds a new one and swaps it in whole. Upstreams whose config did not
//! change are carried over from the previous snapshot, health and pools included.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{RouteCache, Zone as CacheZone};
use crate::cluster::Cluster;
use crate::config::SecurityHeaders;
use crate::config::{Config, RouteSpec};
use crate::handler::Handler;
use crate::handler::files::cache::FileCache;
use crate::middleware::ratelimit::Zone;
use crate::router::{RoutePrefix, Router};
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::upstream::Upstream;

pub struct Snapshot {
    pub config: Arc<Config>,
    pub generation: u64,
    pub router: Router<Route>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Rate-limit zones by name; a zone whose spec is unchanged keeps its buckets on reload.
    pub zones: HashMap<String, Arc<Zone>>,
    /// The file cache, shared by every static route; kept across reloads unless `[cache]` changed.
    pub files: Arc<FileCache>,
    /// Proxy response cache zones by name; a zone whose spec is unchanged keeps its objects.
    pub cache_zones: HashMap<String, Arc<CacheZone>>,
}

/// A compiled route.
pub struct Route {
    pub prefix: String,
    /// A short name for logs and metrics: the path prefix and the route's line in the file.
    pub name: Arc<str>,
    pub handler: Handler,
    pub headers: SecurityHeaders,
    pub rate_limit: Option<Arc<Zone>>,
    pub metrics: Arc<RouteMetrics>,
    /// Client networks allowed (`None`: everyone).
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// Proxied responses answered from and kept in a cache zone.
    pub cache: Option<Arc<RouteCache>>,
}

impl RoutePrefix for Route {
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Snapshot {
    /// Compiles `config`; reuses the upstreams of `previous` whose spec is unchanged. Must run
    /// inside the runtime (new upstreams start their health checks).
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        generation: u64,
        metrics: &Metrics,
        cluster: Option<&Arc<Cluster>>,
    ) -> Self {
        let mut upstreams = HashMap::new();
        for spec in &config.upstreams {
            let reused = previous
                .and_then(|p| p.upstreams.get(&spec.name))
                .filter(|u| u.spec == *spec)
                .cloned();
            let up = reused.unwrap_or_else(|| Upstream::start(spec.clone()));
            upstreams.insert(spec.name.clone(), up);
        }
        let mut zones = HashMap::new();
        for spec in &config.rate_limits {
            let reused = previous
                .and_then(|p| p.zones.get(&spec.name))
                .filter(|z| z.serves(spec, cluster))
                .cloned();
            let zone = reused.unwrap_or_else(|| Zone::start(spec.clone(), metrics.zone_counter(&spec.name), cluster));
            zones.insert(spec.name.clone(), zone);
        }
        let mut cache_zones = HashMap::new();
        for spec in &config.cache_zones {
            let reused = previous
                .and_then(|p| p.cache_zones.get(&spec.name))
                .filter(|z| z.spec == *spec)
                .cloned();
            cache_zones.insert(
                spec.name.clone(),
                reused.unwrap_or_else(|| CacheZone::new(spec.clone())),
            );
        }
        let files = previous
            .map(|p| p.files.clone())
            .filter(|f| f.settings == config.cache)
            .unwrap_or_else(|| FileCache::new(config.cache));
        let routes = config.routes.iter().filter_map(|r: &RouteSpec| {
            let handler = Handler::new(r, |name| upstreams.get(name).cloned())?;
            let name = r.name.as_str();
            let route = Route {
                prefix: r.path.clone(),
                metrics: metrics.route(name),
                name: name.into(),
                handler,
                headers: r.headers.clone(),
                rate_limit: r.rate_limit.as_ref().and_then(|z| zones.get(z).cloned()),
                allow: r.allow.clone(),
                cache: r.cache.as_ref().and_then(|c| {
                    let zone = cache_zones.get(&c.zone)?.clone();
                    Some(Arc::new(RouteCache { spec: c.clone(), zone }))
                }),
            };
            Some((r.hosts.clone(), Arc::new(route)))
        });
        let router = Router::new(routes.collect::<Vec<_>>());
        let roots: Vec<_> = router
            .routes()
            .filter_map(|r| match &r.handler {
                Handler::Static(s) => s.root.clone(),
                _ => None,
            })
            .collect();
        files.watch_roots(&roots);
        Self {
            config,
            generation,
            router,
            upstreams,
            zones,
            files,
            cache_zones,
        }
    }
}

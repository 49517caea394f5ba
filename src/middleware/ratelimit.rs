//! Per-client rate limiting, like nginx's `limit_req`: named zones (`[[rate_limit]]`) with a
//! rate and a burst, keyed by client IP (IPv6 by its /64, which one host usually holds), GCRA
//! through governor. Over the limit: 429 with `Retry-After`. Memory stays bounded under a flood
//! of addresses: keys whose bucket is full again are indistinguishable from new ones and are
//! dropped every few seconds, and at once past `MAX_KEYS`. A key's table entry is 33 bytes (a
//! 17-byte address and an 8-byte state padded to 32, plus a control byte); with the hash
//! table's 7/8 load factor and growth by doubling that is 38 to 76 bytes a key, so 100k
//! addresses hold 4 to 8 MB until the next sweep.
//!
//! A zone with `scope = "cluster"` asks the cluster's Redis instead (the same GCRA, one script
//! call); while Redis does not answer within `[cluster].timeout` it falls back to its own
//! buckets at once, counted in `cluster_fallback_total`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;

use crate::cluster::Cluster;
use crate::config::{ZoneScope, ZoneSpec};

/// Past this many tracked addresses, idle ones are dropped at once rather than on the timer.
const MAX_KEYS: usize = 200_000;
/// How often idle addresses are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

type Limiter<C> = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One zone's state: carried across reloads while its spec is unchanged.
pub struct Zone<C: Clock = DefaultClock> {
    pub spec: ZoneSpec,
    limiter: Limiter<C>,
    clock: C,
    checks: AtomicU32,
    /// Requests refused (exported in `/metrics`).
    refused: Counter,
    /// Where a `scope = "cluster"` zone keeps its buckets.
    shared: Option<Shared>,
}

/// A cluster zone's buckets in Redis: the cluster, the start of their keys
/// (`{key_prefix}rl:{zone}:`), and the GCRA's interval and tolerance (the same bucket as the
/// local one).
struct Shared {
    cluster: Arc<Cluster>,
    prefix: String,
    interval_us: u64,
    tolerance_us: u64,
}

/// A zone's bucket: one request back every `interval`, `capacity` requests at once. `count`
/// per `period` replenishes one request every period/count; the bucket holds the rate's worth
/// plus the burst, so `count + burst` pass at once. (nginx lets `burst + 1` through in a rush,
/// 21 for rate=10r/s burst=20, as the differential test in tests/import_nginx.rs measures; the
/// gateway's zones allow a second's worth more.)
fn bucket(spec: &ZoneSpec) -> (Duration, NonZeroU32) {
    let interval = spec.period / spec.count.max(1);
    let capacity = NonZeroU32::new(spec.count.saturating_add(spec.burst)).unwrap_or(NonZeroU32::MIN);
    (interval, capacity)
}

impl Zone<DefaultClock> {
    /// A zone with the real clock, swept in the background while it is alive.
    pub fn start(spec: ZoneSpec, refused: Counter, cluster: Option<&Arc<Cluster>>) -> Arc<Self> {
        let mut zone = Self::with_clock(spec, DefaultClock::default());
        zone.refused = refused;
        if zone.spec.scope == ZoneScope::Cluster
            && let Some(c) = cluster
        {
            let (interval, capacity) = bucket(&zone.spec);
            let interval_us = (interval.as_micros() as u64).max(1);
            zone.shared = Some(Shared {
                cluster: c.clone(),
                prefix: c.key(&["rl", &zone.spec.name, ""]),
                interval_us,
                tolerance_us: interval_us * u64::from(capacity.get() - 1),
            });
        }
        let zone = Arc::new(zone);
        let weak = Arc::downgrade(&zone);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(zone) = weak.upgrade() else { break };
                zone.sweep();
            }
        });
        zone
    }
}

impl<C: Clock + Clone> Zone<C> {
    pub fn with_clock(spec: ZoneSpec, clock: C) -> Self {
        let (per_request, capacity) = bucket(&spec);
        let quota = Quota::with_period(per_request)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(capacity);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            spec,
            checks: AtomicU32::new(0),
            refused: Counter::default(),
            shared: None,
        }
    }

    /// Whether `check_shared` must be used (the zone's buckets are in Redis).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this zone can serve a config with `spec` and `cluster` (a reload keeps it).
    pub fn serves(&self, spec: &ZoneSpec, cluster: Option<&Arc<Cluster>>) -> bool {
        let wanted = cluster.filter(|_| spec.scope == ZoneScope::Cluster);
        self.spec == *spec
            && match (&self.shared, wanted) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(&a.cluster, b),
                _ => false,
            }
    }

    /// [`Zone::check`] through the cluster's Redis; this gateway's own bucket when Redis does
    /// not answer in time.
    pub async fn check_shared(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(shared) = &self.shared else {
            return self.check(ip);
        };
        let cluster = &shared.cluster;
        // one allocation: the zone's prefix, then the address
        let mut key = String::with_capacity(shared.prefix.len() + 39);
        key.push_str(&shared.prefix);
        let _ = write!(key, "{}", zone_key(ip));
        match cluster.gcra(key, shared.interval_us, shared.tolerance_us).await {
            Ok(0) => Ok(()),
            Ok(wait) => {
                self.refused.inc();
                Err(Duration::from_micros(wait))
            }
            Err(why) => {
                cluster.count_fallback(why);
                self.check(ip)
            }
        }
    }

    /// `Ok` when `ip` may go on; `Err(wait)` when it is over the limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = zone_key(ip);
        let result = self.limiter.check_key(&key).map_err(|not_until| {
            self.refused.inc();
            not_until.wait_time_from(self.clock.now())
        });
        // an address flood between two sweeps: sweep now (checked every 1024 requests)
        if self.checks.fetch_add(1, Relaxed).is_multiple_of(1024) && self.limiter.len() > MAX_KEYS {
            self.sweep();
        }
        result
    }

    /// Drops the addresses whose bucket is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses tracked.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// IPv4 as is; IPv6 by its /64 (one host may hold a whole /64).
fn zone_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn spec(count: u32, period: Duration, burst: u32) -> ZoneSpec {
        ZoneSpec {
            name: "z".into(),
            count,
            period,
            burst,
            scope: ZoneScope::Local,
        }
    }

    #[test]
    fn rate_plus_burst_then_limited_then_refilled() {
        let clock = FakeRelativeClock::default();
        let zone = Zone::with_clock(spec(10, Duration::from_secs(1), 20), clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..30 {
            assert!(zone.check(ip).is_ok(), "request {i} of rate+burst");
        }
        let wait = zone.check(ip).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(retry_after_secs(wait), 1);
        // another address has its own bucket
        assert!(zone.check("192.0.2.2".parse().unwrap()).is_ok());
        // one request back every 100 ms
        clock.advance(Duration::from_millis(100));
        assert!(zone.check(ip).is_ok());
        assert!(zone.check(ip).is_err());
        clock.advance(Duration::from_secs(3));
        for _ in 0..30 {
            assert!(zone.check(ip).is_ok());
        }
    }

    #[test]
    fn per_minute_rates() {
        let clock = FakeRelativeClock::default();
        let zone = Zone::with_clock(spec(60, Duration::from_secs(60), 0), clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..60 {
            assert!(zone.check(ip).is_ok());
        }
        assert_eq!(zone.check(ip).unwrap_err(), Duration::from_secs(1));
    }

    #[test]
    fn a_flood_of_100k_addresses_is_evicted_once_idle() {
        let clock = FakeRelativeClock::default();
        let zone = Zone::with_clock(spec(10, Duration::from_secs(1), 5), clock.clone());
        for i in 0..100_000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            assert!(zone.check(ip).is_ok());
        }
        assert_eq!(zone.keys(), 100_000);
        // each key's bucket refills within 1.5 s (15 requests at 10/s): then they are dropped
        clock.advance(Duration::from_secs(2));
        zone.sweep();
        assert_eq!(zone.keys(), 0);
        // the figure the module documentation states
        let entry = std::mem::size_of::<(IpAddr, u64)>() + 1;
        assert_eq!(entry, 33);
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let clock = FakeRelativeClock::default();
        let zone = Zone::with_clock(spec(1, Duration::from_secs(60), 0), clock);
        assert!(zone.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(zone.check("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(zone.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}

//! A cache zone: stored responses in memory, bounded by bytes (moka, weighed by size, each entry
//! expiring once it is too old even to be served stale), one entry per primary key holding the
//! variants its `Vary` tells apart; the fills in progress (one upstream request per key, the
//! others wait for it); and the zone's counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;
use tokio::sync::{OnceCell, watch};

use super::policy::{self, Freshness};
use crate::config::{CacheZoneSpec, RouteCacheSpec};

/// The longest an entry is kept, whatever its freshness says (a year).
const KEEP_AT_MOST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Variants kept under one primary key at most (the oldest goes first).
const MAX_VARIANTS: usize = 32;

/// What a request got from the cache, as the access log's `cache` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Served stale because the upstream failed.
    Stale,
    /// Served stale while one background request refreshes it.
    Updating,
    /// Not cacheable (method, credentials, body).
    Bypass,
    /// Stored, but too old: fetched again.
    Expired,
}

impl CacheStatus {
    const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Bypass,
        CacheStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Updating => "updating",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Expired => "expired",
        }
    }
}

/// A route's cache: its settings and the zone it stores in.
pub struct RouteCache {
    pub spec: RouteCacheSpec,
    pub zone: Arc<Zone>,
}

/// A stored response.
pub struct Object {
    pub status: StatusCode,
    /// The response's headers, less those that belong to one transfer (length, `Age`).
    pub headers: HeaderMap,
    /// The identity body.
    pub body: Bytes,
    pub etag: Option<HeaderValue>,
    pub modified: Option<SystemTime>,
    stored: Instant,
    fresh: Freshness,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    /// Compressed variants, made at most once: brotli, gzip.
    pub(super) variants: [OnceCell<Option<Bytes>>; 2],
    refreshing: AtomicBool,
}

/// Where an object stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Fresh,
    /// Expired, within `stale_while_revalidate`.
    Revalidate,
    /// Expired, within `stale_if_error` only.
    IfError,
    Dead,
}

impl Object {
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        fresh: Freshness,
        spec: &RouteCacheSpec,
    ) -> Self {
        for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::AGE] {
            headers.remove(name);
        }
        let etag = headers.get(header::ETAG).cloned();
        let modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(crate::http::conditional::parse_date);
        let stale = |d: Duration| if fresh.stale_ok { d } else { Duration::ZERO };
        Self {
            status,
            headers,
            body,
            etag,
            modified,
            stored: Instant::now(),
            fresh,
            stale_while_revalidate: stale(spec.stale_while_revalidate),
            stale_if_error: stale(spec.stale_if_error),
            variants: Default::default(),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The object's current age (RFC 9111 §4.2.3, with the upstream's `Age` as its start).
    pub fn age(&self) -> Duration {
        self.fresh.initial_age.saturating_add(self.stored.elapsed())
    }

    pub fn state(&self) -> Age {
        let age = self.age();
        let life = self.fresh.lifetime;
        if age < life {
            Age::Fresh
        } else if age < life.saturating_add(self.stale_while_revalidate) {
            Age::Revalidate
        } else if age < life.saturating_add(self.stale_if_error) {
            Age::IfError
        } else {
            Age::Dead
        }
    }

    /// How much longer the object is kept: while it may be of use (fresh or stale), then for
    /// a grace as long as its lifetime (1 to 10 minutes), so that the request that fetches it
    /// again is told `expired` rather than `miss`. Space is never held for it: moka evicts
    /// the least used entries first when the zone is full.
    pub fn keep_for(&self) -> Duration {
        let stale = self.stale_while_revalidate.max(self.stale_if_error);
        let grace = self
            .fresh
            .lifetime
            .clamp(Duration::from_secs(60), Duration::from_secs(600));
        let kept = self.fresh.lifetime.saturating_add(stale).saturating_add(grace);
        // (moka adds it to an Instant: keep it far from overflowing)
        kept.saturating_sub(self.age()).min(KEEP_AT_MOST)
    }

    /// True for the one caller that should refresh it in the background.
    pub fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Relaxed)
    }

    /// The refresh failed: a later request may try again.
    pub fn refresh_failed(&self) {
        self.refreshing.store(false, Relaxed);
    }

    fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        let variants: usize = self
            .variants
            .iter()
            .filter_map(|v| v.get())
            .flatten()
            .map(Bytes::len)
            .sum();
        (self.body.len() + variants + headers + 256) as u64
    }
}

/// Everything stored under one primary key.
pub struct Entry {
    /// The request headers the responses vary on.
    vary: Box<[HeaderName]>,
    variants: Vec<(Box<str>, Arc<Object>)>,
}

impl Entry {
    fn weight(&self, key: &str) -> u32 {
        let objects: u64 = self.variants.iter().map(|(k, o)| k.len() as u64 + o.weight()).sum();
        (objects + key.len() as u64 + 128).min(u64::from(u32::MAX)) as u32
    }
}

/// Entries expire when their last variant is of no more use, even stale (and its grace ends).
struct UsefulFor;

impl Expiry<String, Arc<Entry>> for UsefulFor {
    fn expire_after_create(&self, _k: &String, v: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        v.variants.iter().map(|(_, o)| o.keep_for()).max()
    }

    fn expire_after_update(
        &self,
        k: &String,
        v: &Arc<Entry>,
        now: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, v, now)
    }
}

/// What a lookup found: the object stored for the request, if any, and the key that
/// concurrent fills of it coalesce on.
pub struct Lookup {
    pub found: Option<Arc<Object>>,
    pub fill_key: String,
}

/// Whether this request fills the object or waits for another one to.
pub enum Claim {
    Fill(FillGuard),
    Wait(watch::Receiver<()>),
}

/// Held while one request fills an object; dropping it (stored or abandoned) wakes the waiters.
pub struct FillGuard {
    zone: Arc<Zone>,
    key: String,
    _done: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.zone
            .fills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

pub struct Zone {
    pub spec: CacheZoneSpec,
    entries: Cache<String, Arc<Entry>>,
    fills: Mutex<HashMap<String, watch::Receiver<()>>>,
    counts: [AtomicU64; 6],
    /// Moves on with every purge: a fill that began before one does not store what it fetched.
    generation: AtomicU64,
    /// Bytes held by fills in progress (copies kept aside, and queued for their clients while
    /// being kept): at most `max_size`, past which fills stop keeping and stream through.
    filling: AtomicU64,
}

impl Zone {
    pub fn new(spec: CacheZoneSpec) -> Arc<Self> {
        let entries = Cache::builder()
            .max_capacity(spec.max_size)
            .weigher(|k: &String, v: &Arc<Entry>| v.weight(k))
            .expire_after(UsefulFor)
            .build();
        Arc::new(Self {
            spec,
            entries,
            fills: Mutex::new(HashMap::new()),
            counts: Default::default(),
            generation: AtomicU64::new(0),
            filling: AtomicU64::new(0),
        })
    }

    pub fn count(&self, status: CacheStatus) {
        self.counts[status as usize].fetch_add(1, Relaxed);
    }

    /// Requests by cache status, for `/metrics`.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CacheStatus::ALL
            .iter()
            .map(|s| (s.as_str(), self.counts[*s as usize].load(Relaxed)))
    }

    /// Bytes held, after pending evictions.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub fn objects(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.iter().map(|(_, e)| e.variants.len() as u64).sum()
    }

    /// The object stored for a request (`primary`, and `h` for the variant), if any.
    pub fn lookup(&self, primary: &str, h: &HeaderMap) -> Lookup {
        let Some(entry) = self.entries.get(primary) else {
            return Lookup {
                found: None,
                fill_key: primary.to_string(),
            };
        };
        let secondary = policy::secondary_key(&entry.vary, h);
        Lookup {
            found: entry
                .variants
                .iter()
                .find(|(k, _)| **k == *secondary)
                .map(|(_, o)| o.clone()),
            fill_key: format!("{primary}\n{secondary}"),
        }
    }

    /// Makes the caller the one request that fills `key`, or gives it the fill to wait for.
    pub fn claim(self: &Arc<Self>, key: String) -> Claim {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = fills.get(&key) {
            return Claim::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        fills.insert(key.clone(), rx);
        Claim::Fill(FillGuard {
            zone: self.clone(),
            key,
            _done: tx,
        })
    }

    /// Reserves `n` bytes for a fill in progress; `false` (nothing reserved) when the fills
    /// would hold more than the zone's `max_size` together.
    pub(super) fn reserve(&self, n: u64) -> bool {
        let mut held = self.filling.load(SeqCst);
        loop {
            if held.saturating_add(n) > self.spec.max_size {
                return false;
            }
            match self.filling.compare_exchange_weak(held, held + n, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    pub(super) fn release(&self, n: u64) {
        self.filling.fetch_sub(n, SeqCst);
    }

    /// Bytes held by fills in progress, for `/metrics`.
    pub fn filling_bytes(&self) -> u64 {
        self.filling.load(SeqCst)
    }

    /// The purge generation, to give [`Zone::store`] when the fill it stores began.
    pub fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Stores `object` for `primary`, as the variant the request headers `h` select under the
    /// response's `vary`, unless a purge came since `since` (what was fetched before it may be
    /// what it purged). Atomic per key: concurrent stores of two variants keep both.
    pub fn store(&self, primary: &str, vary: Vec<HeaderName>, h: &HeaderMap, object: Arc<Object>, since: u64) {
        let secondary: Box<str> = policy::secondary_key(&vary, h).into();
        let vary: Box<[HeaderName]> = vary.into();
        self.entries.entry_by_ref(primary).and_compute_with(|current| {
            if self.generation.load(SeqCst) != since {
                return Op::Nop;
            }
            let mut variants = Vec::with_capacity(2);
            if let Some(old) = current
                && *old.value().vary == *vary
            {
                variants.extend(
                    old.value()
                        .variants
                        .iter()
                        .filter(|(k, o)| *k != secondary && o.state() != Age::Dead)
                        .take(MAX_VARIANTS - 1)
                        .cloned(),
                );
            }
            variants.insert(0, (secondary, object));
            Op::Put(Arc::new(Entry { vary, variants }))
        });
    }

    /// Weighs `primary`'s entry again (`object`, one of its variants, grew a compressed
    /// variant); nothing if the entry was replaced or purged meanwhile.
    pub fn reweigh(&self, primary: &str, object: &Arc<Object>) {
        self.entries
            .entry_by_ref(primary)
            .and_compute_with(|current| match current {
                Some(e) if e.value().variants.iter().any(|(_, o)| Arc::ptr_eq(o, object)) => Op::Put(e.into_value()),
                _ => Op::Nop,
            });
    }

    /// Drops the objects of one URL (every variant); returns how many there were.
    pub fn purge_url(&self, primary: &str) -> u64 {
        self.generation.fetch_add(1, SeqCst);
        self.remove(primary)
    }

    fn remove(&self, primary: &str) -> u64 {
        let mut removed = 0;
        self.entries.entry_by_ref(primary).and_compute_with(|current| {
            removed = current.map_or(0, |e| e.value().variants.len() as u64);
            Op::Remove
        });
        removed
    }

    /// Drops the objects of every URL starting with `prefix`; returns how many there were.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        self.generation.fetch_add(1, SeqCst);
        let doomed: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.to_string())
            .collect();
        doomed.iter().map(|k| self.remove(k)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_size: u64) -> CacheZoneSpec {
        CacheZoneSpec {
            name: "t".into(),
            max_size,
            max_object_size: 64 << 10,
        }
    }

    fn route() -> RouteCacheSpec {
        RouteCacheSpec {
            zone: "t".into(),
            ttl: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(5),
            ignore_cookies: vec![],
            status_header: None,
        }
    }

    fn object(body: &'static [u8], lifetime: u64, age: u64) -> Arc<Object> {
        let fresh = Freshness {
            lifetime: Duration::from_secs(lifetime),
            initial_age: Duration::from_secs(age),
            stale_ok: true,
        };
        Arc::new(Object::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body),
            fresh,
            &route(),
        ))
    }

    #[test]
    fn an_object_ages_through_its_windows() {
        assert_ne!(object(b"x", u64::MAX, u64::MAX).state(), Age::Fresh, "no overflow");
        assert!(object(b"x", u64::MAX, 0).keep_for() <= KEEP_AT_MOST);
        assert_eq!(object(b"x", 10, 0).state(), Age::Fresh);
        assert_eq!(object(b"x", 10, 12).state(), Age::Revalidate);
        assert_eq!(object(b"x", 10, 20).state(), Age::IfError);
        assert_eq!(object(b"x", 10, 80).state(), Age::Dead);
    }

    #[test]
    fn variants_live_apart_under_one_url() {
        let zone = Zone::new(spec(1 << 20));
        let vary = vec![HeaderName::from_static("accept-language")];
        let mut es = HeaderMap::new();
        es.insert("accept-language", HeaderValue::from_static("es"));
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        let url = "https://shop.example/a";
        zone.store(url, vary.clone(), &es, object(b"hola", 10, 0), zone.generation());
        zone.store(url, vary, &en, object(b"hello", 10, 0), zone.generation());
        let body = |h: &HeaderMap| zone.lookup(url, h).found.map(|o| o.body.clone());
        assert_eq!(body(&es).unwrap(), "hola");
        assert_eq!(body(&en).unwrap(), "hello");
        assert!(body(&HeaderMap::new()).is_none());
        let before_purge = zone.generation();
        assert_eq!(zone.purge_prefix("https://shop.example/"), 2);
        assert!(body(&es).is_none());
        // a fill that began before the purge does not store what it fetched
        zone.store(url, vec![], &es, object(b"old", 10, 0), before_purge);
        assert!(body(&es).is_none());
    }

    #[test]
    fn one_fill_per_key() {
        let zone = Zone::new(spec(1 << 20));
        let Claim::Fill(guard) = zone.claim("k".into()) else {
            panic!("the first claim fills")
        };
        let Claim::Wait(mut rx) = zone.claim("k".into()) else {
            panic!("the second waits")
        };
        drop(guard);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(
            rt.block_on(rx.changed()).is_err(),
            "the waiter wakes when the fill ends"
        );
        assert!(matches!(zone.claim("k".into()), Claim::Fill(_)));
    }

    #[test]
    fn stays_within_max_size() {
        let zone = Zone::new(spec(256 << 10));
        static BODY: [u8; 4096] = [b'x'; 4096];
        for i in 0..1000 {
            zone.store(
                &format!("https://h/{i}"),
                vec![],
                &HeaderMap::new(),
                object(&BODY, 60, 0),
                0,
            );
        }
        assert!(zone.bytes() <= 256 << 10, "{}", zone.bytes());
        assert!(zone.objects() > 10);
    }
}

//! The settings of the runtime's parts as validated plain data: the file cache, compression,
//! security headers, rate-limit zones and the access log. The parts that act on them (in
//! `handler`, `middleware`, `telemetry`) add their behaviour to these types where they live.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use http::header::{self, HeaderName};

/// `[cache]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_size: u64,
    pub max_file_size: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_size: 256 << 20,
            max_file_size: 8 << 20,
        }
    }
}

/// `[[cache_zone]]`, validated: a proxy response cache shared by the routes that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheZoneSpec {
    pub name: String,
    /// Bytes held at most (bodies, compressed variants, headers and keys).
    pub max_size: u64,
    /// A response body larger than this is passed through, not stored.
    pub max_object_size: u64,
}

impl CacheZoneSpec {
    pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
    pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1 << 20;
}

/// A route's `cache = { ... }`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCacheSpec {
    /// The `[[cache_zone]]` objects are kept in.
    pub zone: String,
    /// Freshness when the upstream gives none of its own (0: such responses are not stored).
    pub ttl: Duration,
    /// After expiry, served at once while one background request refreshes it.
    pub stale_while_revalidate: Duration,
    /// After expiry, served when every upstream server fails (refuses, times out, 5xx).
    pub stale_if_error: Duration,
    /// How long concurrent misses wait for the one request that fills the object.
    pub lock_timeout: Duration,
    /// Cookies that do not make a request uncacheable (and are not part of the key).
    pub ignore_cookies: Vec<String>,
    /// A response header that carries the cache status (`hit`, `miss`, ...); `None`: none.
    pub status_header: Option<HeaderName>,
}

/// `[[rate_limit]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    pub name: String,
    /// `count` requests per `period`.
    pub count: u32,
    pub period: Duration,
    /// Extra requests allowed at once above the rate.
    pub burst: u32,
    /// Buckets in this gateway, or shared by the cluster in Redis.
    pub scope: ZoneScope,
}

/// Where a `[[rate_limit]]` zone keeps its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZoneScope {
    /// In this gateway's memory.
    #[default]
    Local,
    /// In `[cluster].redis`, shared by every gateway of the cluster (this gateway's own
    /// buckets answer while Redis does not).
    Cluster,
}

/// `[cluster]`, validated: the Redis that gateways share ACME state and cluster-scoped rate
/// limits through.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://` URL, credentials included (never shown: see `Debug`).
    pub redis: String,
    /// Where `redis` is written (`FILE:LINE:COL`), for errors found when connecting.
    pub redis_at: String,
    pub key_prefix: String,
    pub node_name: String,
    /// The key that encrypts private keys kept in Redis; `None` without ACME.
    pub secret: Option<ClusterSecret>,
    /// Longest wait for a Redis answer on the request path (connect and command).
    pub timeout: Duration,
    /// How long an ACME order's lock outlives a holder that stopped renewing it.
    pub lock_ttl: Duration,
}

impl ClusterSettings {
    pub const DEFAULT_PREFIX: &str = "orta-gateway:";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
    pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);

    /// The Redis URL with its password replaced by `***`.
    pub fn redis_redacted(&self) -> String {
        redact_url(&self.redis)
    }
}

/// A URL with the password of its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            let shown = if user.is_empty() {
                "***".to_string()
            } else {
                format!("{user}:***")
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_string(),
    }
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis_redacted())
            .field("key_prefix", &self.key_prefix)
            .field("node_name", &self.node_name)
            .field("secret", &self.secret.as_ref().map(|s| &s.from))
            .field("timeout", &self.timeout)
            .field("lock_ttl", &self.lock_ttl)
            .finish()
    }
}

/// The cluster secret and where it came from (`env NAME` or `file PATH`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    pub from: String,
    pub bytes: Vec<u8>,
}

/// Where access lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// For tests and very busy sites.
    Minutely,
    Hourly,
    Daily,
    Never,
}

/// `[log]`'s access settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    pub target: AccessTarget,
    pub rotation: Rotate,
    pub keep: usize,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            target: AccessTarget::Off,
            rotation: Rotate::Daily,
            keep: 14,
        }
    }
}

/// A content coding the gateway produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.token())
    }

    /// The file extension of a precompressed sibling (`app.css.br`, `app.css.gz`).
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gz",
        }
    }

    pub fn parse(token: &str) -> Option<Self> {
        match token {
            "br" => Some(Encoding::Brotli),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// `[compression]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionSettings {
    /// Preference order; empty turns compression off.
    pub algorithms: Vec<Encoding>,
    pub min_size: u64,
    /// `type/subtype` or `type/*`, lower case.
    pub types: Vec<String>,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        Self {
            algorithms: vec![Encoding::Brotli, Encoding::Gzip],
            min_size: 1024,
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One security header the gateway adds to every response.
pub struct SecurityHeader {
    /// Its key in `[headers]` (and a route's `headers`).
    pub key: &'static str,
    pub name: HeaderName,
    /// The spec's value, sent when `[headers]` leaves the key out.
    pub default: &'static str,
    /// Sent only on responses over TLS (HSTS: RFC 6797 8.1 ignores it over plain HTTP).
    pub https_only: bool,
}

/// How many security headers there are.
pub const SECURITY_HEADER_COUNT: usize = 6;

/// The security headers, in the order of [`SecurityHeaders`]'s values.
pub static SECURITY_HEADERS: [SecurityHeader; SECURITY_HEADER_COUNT] = [
    SecurityHeader {
        key: "strict_transport_security",
        name: header::STRICT_TRANSPORT_SECURITY,
        default: "max-age=63072000; includeSubDomains",
        https_only: true,
    },
    SecurityHeader {
        key: "x_content_type_options",
        name: header::X_CONTENT_TYPE_OPTIONS,
        default: "nosniff",
        https_only: false,
    },
    SecurityHeader {
        key: "x_frame_options",
        name: header::X_FRAME_OPTIONS,
        default: "DENY",
        https_only: false,
    },
    SecurityHeader {
        key: "referrer_policy",
        name: header::REFERRER_POLICY,
        default: "strict-origin-when-cross-origin",
        https_only: false,
    },
    SecurityHeader {
        key: "content_security_policy",
        name: header::CONTENT_SECURITY_POLICY,
        default: "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
        https_only: false,
    },
    SecurityHeader {
        key: "permissions_policy",
        name: HeaderName::from_static("permissions-policy"),
        default: "camera=(), microphone=(), geolocation=()",
        https_only: false,
    },
];

/// One resolved set of security headers (global, or a route's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityHeaders {
    /// One per [`SECURITY_HEADERS`] entry; `None`: not added (written by
    /// [`SecurityHeaders::derive`], sent by `middleware::headers`).
    pub(crate) values: [Option<HeaderValue>; SECURITY_HEADER_COUNT],
    /// The route's values win over an upstream's own.
    pub override_upstream: bool,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|i| Some(HeaderValue::from_static(SECURITY_HEADERS[i].default))),
            override_upstream: false,
        }
    }
}

impl SecurityHeaders {
    /// A set from one optional value per [`SECURITY_HEADERS`] entry: `None` keeps `base`'s,
    /// `Some(None)` removes.
    pub fn derive(
        base: &SecurityHeaders,
        values: [Option<Option<HeaderValue>>; SECURITY_HEADER_COUNT],
        override_upstream: bool,
    ) -> Self {
        let mut out = base.clone();
        for (slot, v) in out.values.iter_mut().zip(values) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        out.override_upstream = override_upstream;
        out
    }
}

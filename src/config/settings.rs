//! The settings of the runtime's parts as validated plain data: the file cache, compression,
//! security headers, rate-limit zones and the access log. The parts that act on them (in
//! `handler`, `middleware`, `telemetry`) add their behaviour to these types where they live.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;

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

/// `[[rate_limit]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    pub name: String,
    /// `count` requests per `period`.
    pub count: u32,
    pub period: Duration,
    /// Extra requests allowed at once above the rate.
    pub burst: u32,
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

/// The spec's defaults, used for any key `[headers]` leaves out.
pub fn default_value(i: usize) -> &'static str {
    [
        "max-age=63072000; includeSubDomains",
        "nosniff",
        "DENY",
        "strict-origin-when-cross-origin",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
        "camera=(), microphone=(), geolocation=()",
    ][i]
}

/// One resolved set of security headers (global, or a route's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityHeaders {
    /// `None`: not added (written by [`SecurityHeaders::derive`], sent by `middleware::headers`).
    pub(crate) values: [Option<HeaderValue>; 6],
    /// The route's values win over an upstream's own.
    pub override_upstream: bool,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|i| Some(HeaderValue::from_static(default_value(i)))),
            override_upstream: false,
        }
    }
}

impl SecurityHeaders {
    /// A set from six optional values: `None` keeps `base`'s, `Some(None)` removes.
    pub fn derive(base: &SecurityHeaders, values: [Option<Option<HeaderValue>>; 6], override_upstream: bool) -> Self {
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

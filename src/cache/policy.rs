//! What a shared cache may store and for how long (RFC 9111): which requests may be answered
//! from the cache, which responses may be stored, their freshness lifetime, and the key.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

/// How long a stored response is fresh, and how old it already was when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub lifetime: Duration,
    /// The upstream's `Age` (it may itself sit behind a cache).
    pub initial_age: Duration,
    /// False under `must-revalidate` / `proxy-revalidate`: never served stale.
    pub stale_ok: bool,
}

/// The directives of `Cache-Control` that matter to a shared cache.
#[derive(Debug, Default)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    must_revalidate: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

fn directives(h: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for v in h.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else {
            // unreadable: play safe
            d.no_store = true;
            continue;
        };
        for item in v.split(',') {
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let secs = || arg.and_then(|a| a.parse::<u64>().ok()).or(Some(0));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" => d.max_age = secs(),
                "s-maxage" => d.s_maxage = secs(),
                _ => {}
            }
        }
    }
    d
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1 "heuristically
/// cacheable"), less those it makes no sense to store here (206, 405, 414, 501).
fn cacheable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 301 | 404 | 410)
}

/// The freshness of a response if it may be stored: the upstream's `s-maxage`, `max-age` or
/// `Expires` win, `ttl` applies only when it gives none; `None` when it must not be stored (a
/// status not stored, `no-store`, `private`, `no-cache`, `Set-Cookie`, `Vary: *`, an encoded
/// body, or no freshness at all).
pub fn storable(status: StatusCode, h: &HeaderMap, ttl: Duration) -> Option<Freshness> {
    if !cacheable_status(status)
        || h.contains_key(header::SET_COOKIE)
        || h.contains_key(header::CONTENT_RANGE)
        || vary(h).is_none()
    {
        return None;
    }
    // the gateway asks for identity and makes its own encodings: an encoded answer is not stored
    if h.get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return None;
    }
    let d = directives(h);
    if d.no_store || d.private || d.no_cache {
        return None;
    }
    let lifetime = match (d.s_maxage, d.max_age) {
        (Some(s), _) | (None, Some(s)) => Duration::from_secs(s),
        (None, None) => match h.get(header::EXPIRES) {
            // an invalid Expires means already expired (RFC 9111 §5.3)
            Some(v) => {
                let expires = httpdate_of(v)?;
                let date = h
                    .get(header::DATE)
                    .and_then(httpdate_of)
                    .unwrap_or_else(SystemTime::now);
                expires.duration_since(date).unwrap_or(Duration::ZERO)
            }
            None => ttl,
        },
    };
    if lifetime.is_zero() {
        return None;
    }
    let initial_age = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    Some(Freshness {
        lifetime,
        initial_age,
        stale_ok: !d.must_revalidate,
    })
}

fn httpdate_of(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

/// The header names of a response's `Vary`, lower-cased; `None` for `Vary: *` (or unreadable).
pub fn vary(h: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in h.get_all(header::VARY) {
        for name in v.to_str().ok()?.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let n = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// True when a request may be answered from (and fill) the cache: GET or HEAD without a body,
/// no `Authorization`, and no cookies but those the route ignores.
pub fn request_cacheable(method: &Method, h: &HeaderMap, has_body: bool, ignore_cookies: &[String]) -> bool {
    if !(method == Method::GET || method == Method::HEAD) || has_body {
        return false;
    }
    if h.contains_key(header::AUTHORIZATION) || h.contains_key(header::UPGRADE) {
        return false;
    }
    h.get_all(header::COOKIE).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(';')
                .map(|c| c.split_once('=').map_or(c, |(n, _)| n).trim())
                .filter(|n| !n.is_empty())
                .all(|n| ignore_cookies.iter().any(|i| i == n))
        })
    })
}

/// The primary key: scheme, host (lower-cased, without port) and the target's path and query,
/// as a URL (`https://shop.example/api/dresses?page=2`), the form purges name.
pub fn primary_key(scheme: &str, host: &str, uri: &Uri) -> String {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(scheme.len() + 3 + host.len() + pq.len());
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(host);
    key.push_str(pq);
    key
}

/// A URL given to purge, in the form of [`primary_key`]: `None` when it is not an absolute
/// http(s) URL. A prefix keeps what it names (`https://shop.example/api/`).
pub fn key_of_url(url: &str) -> Option<String> {
    let uri: Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let pq = uri.path_and_query().map_or("", |pq| pq.as_str());
    Some(format!("{scheme}://{host}{}", if pq.is_empty() { "/" } else { pq }))
}

/// The secondary key: the values of the request headers the response varies on. Not
/// `Accept-Encoding` (the gateway fetches identity and encodes itself, so every encoding shares
/// one object) nor `Cookie` (a cacheable request carries only cookies the route ignores).
pub fn secondary_key(vary: &[HeaderName], h: &HeaderMap) -> String {
    let mut key = String::new();
    for name in vary {
        if name == header::ACCEPT_ENCODING || name == header::COOKIE {
            continue;
        }
        key.push_str(name.as_str());
        key.push(':');
        for (i, v) in h.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        key.push('\n');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn freshness_comes_from_the_upstream_first() {
        let ok = StatusCode::OK;
        let life = |h: &[(&'static str, &'static str)]| storable(ok, &headers(h), TTL).map(|f| f.lifetime.as_secs());
        assert_eq!(life(&[]), Some(10), "ttl when the upstream says nothing");
        assert_eq!(life(&[("cache-control", "public")]), Some(10));
        assert_eq!(life(&[("cache-control", "max-age=60")]), Some(60));
        assert_eq!(life(&[("cache-control", "max-age=60, s-maxage=5")]), Some(5));
        assert_eq!(life(&[("cache-control", "max-age=0")]), None);
        assert_eq!(
            life(&[
                ("date", "Mon, 07 Dec 2026 10:00:00 GMT"),
                ("expires", "Mon, 07 Dec 2026 10:02:00 GMT")
            ]),
            Some(120)
        );
        assert_eq!(life(&[("expires", "0")]), None, "an invalid Expires is expired");
        for refused in [
            ("cache-control", "no-store"),
            ("cache-control", "private, max-age=60"),
            ("cache-control", "no-cache"),
            ("set-cookie", "sessionid=1"),
            ("vary", "*"),
            ("content-encoding", "gzip"),
        ] {
            assert_eq!(life(&[refused]), None, "{refused:?}");
        }
        assert!(storable(StatusCode::CREATED, &HeaderMap::new(), TTL).is_none());
        assert!(storable(StatusCode::NOT_FOUND, &HeaderMap::new(), TTL).is_some());
        assert!(storable(StatusCode::OK, &HeaderMap::new(), Duration::ZERO).is_none());
        let f = storable(
            ok,
            &headers(&[("cache-control", "max-age=9, must-revalidate"), ("age", "3")]),
            TTL,
        )
        .unwrap();
        assert_eq!((f.initial_age.as_secs(), f.stale_ok), (3, false));
    }

    #[test]
    fn requests_with_credentials_bypass() {
        let get = Method::GET;
        let ignore = ["csrftoken".to_string()];
        assert!(request_cacheable(&get, &HeaderMap::new(), false, &ignore));
        assert!(request_cacheable(&Method::HEAD, &HeaderMap::new(), false, &ignore));
        assert!(!request_cacheable(&Method::POST, &HeaderMap::new(), false, &ignore));
        assert!(!request_cacheable(&get, &HeaderMap::new(), true, &ignore));
        assert!(!request_cacheable(
            &get,
            &headers(&[("authorization", "Basic eA==")]),
            false,
            &ignore
        ));
        assert!(request_cacheable(
            &get,
            &headers(&[("cookie", "csrftoken=abc")]),
            false,
            &ignore
        ));
        assert!(!request_cacheable(
            &get,
            &headers(&[("cookie", "csrftoken=abc; sessionid=x")]),
            false,
            &ignore
        ));
        assert!(!request_cacheable(
            &get,
            &headers(&[("cookie", "sessionid=x")]),
            false,
            &[]
        ));
    }

    #[test]
    fn keys() {
        let uri: Uri = "/api/dresses?page=2".parse().unwrap();
        assert_eq!(
            primary_key("https", "shop.example", &uri),
            "https://shop.example/api/dresses?page=2"
        );
        assert_eq!(
            key_of_url("HTTPS://Shop.Example:8443/api/dresses?page=2").unwrap(),
            "https://shop.example/api/dresses?page=2"
        );
        assert_eq!(key_of_url("https://shop.example").unwrap(), "https://shop.example/");
        assert!(key_of_url("/relative").is_none() && key_of_url("ftp://x/").is_none());
        let vary = vary(&headers(&[
            ("vary", "Accept-Encoding, Accept-Language"),
            ("vary", "cookie"),
        ]))
        .unwrap();
        let h = headers(&[
            ("accept-language", "es"),
            ("accept-encoding", "gzip"),
            ("cookie", "csrftoken=1"),
        ]);
        assert_eq!(secondary_key(&vary, &h), "accept-language:es\n");
        assert_eq!(secondary_key(&vary, &HeaderMap::new()), "accept-language:\n");
    }
}

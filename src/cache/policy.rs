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

/// The largest delta-seconds a cache needs to tell apart (RFC 9111 §1.2.2): larger values,
/// however many digits they have, mean this many seconds.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A delta-seconds value: digits only, capped at [`MAX_DELTA_SECONDS`]; `None` when not a number.
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)))
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
            // a malformed value counts as 0: stale at once (RFC 9111 §4.2.1)
            let secs = || arg.and_then(delta_seconds).or(Some(0));
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
                let life = expires.duration_since(date).unwrap_or(Duration::ZERO);
                life.min(Duration::from_secs(MAX_DELTA_SECONDS))
            }
            None => ttl,
        },
    };
    if lifetime.is_zero() {
        return None;
    }
    let initial_age = h
        .get(header::AGE)
        .and_then(|v| delta_seconds(v.to_str().ok()?))
        .map_or(Duration::ZERO, Duration::from_secs);
    Some(Freshness {
        lifetime,
        initial_age,
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10)
        stale_ok: !(d.must_revalidate || d.s_maxage.is_some()),
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
    // split on `,` too: some backends read `a=1, b=2` as two cookies
    h.get_all(header::COOKIE).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split([';', ','])
                .map(|c| c.split_once('=').map_or(c, |(n, _)| n).trim())
                .filter(|n| !n.is_empty())
                .all(|n| ignore_cookies.iter().any(|i| i == n))
        })
    })
}

/// True when the request says `Cache-Control: no-store`: it may be answered from the cache,
/// but nothing fetched for it is stored (RFC 9111 §5.2.1.5).
pub fn request_forbids_storing(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-store")))
    })
}

/// True for methods that change what they target: their success invalidates it (RFC 9111 §4.4).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The primary key: scheme, the host as the upstream receives it (`Host` or `:authority`,
/// port included, lower-cased) and the target's path and query, as a URL
/// (`https://shop.example/api/dresses?page=2`), the form purges name. Keyed on the host as
/// forwarded, so that `Host: shop.example:6666`, which an upstream may echo into links, can
/// never fill the object of `shop.example`.
pub fn primary_key(scheme: &str, host: &[u8], uri: &Uri) -> String {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(scheme.len() + 3 + host.len() + pq.len());
    key.push_str(scheme);
    key.push_str("://");
    for b in host {
        push_byte(&mut key, b.to_ascii_lowercase());
    }
    key.push_str(pq);
    key
}

/// A byte into a key: printable ASCII as it is, anything else escaped (`\xNN`), so that no two
/// different values share a key.
fn push_byte(key: &mut String, b: u8) {
    if b.is_ascii_graphic() || b == b' ' {
        if b == b'\\' {
            key.push('\\');
        }
        key.push(b as char);
    } else {
        key.push_str(&format!("\\x{b:02x}"));
    }
}

/// A URL given to purge, in the form of [`primary_key`] (the host as clients send it: with its
/// port unless it is the scheme's default); `None` when it is not an absolute http(s) URL. A
/// prefix keeps what it names (`https://shop.example/api/`).
pub fn key_of_url(url: &str) -> Option<String> {
    let uri: Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = uri.authority()?.as_str();
    if authority.contains('@') {
        return None;
    }
    let pq = uri.path_and_query().map_or("", |pq| pq.as_str());
    let pq = if pq.is_empty() { "/" } else { pq };
    Some(primary_key(&scheme, authority.as_bytes(), &Uri::try_from(pq).ok()?))
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
            for b in v.as_bytes() {
                push_byte(&mut key, *b);
            }
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
        let f = storable(ok, &headers(&[("cache-control", "s-maxage=9")]), TTL).unwrap();
        assert!(!f.stale_ok, "s-maxage implies proxy-revalidate");
        assert!(
            storable(ok, &headers(&[("cache-control", "max-age=9")]), TTL)
                .unwrap()
                .stale_ok
        );
        // values past 2^31 seconds, however long, are 2^31 seconds
        let huge = headers(&[
            ("cache-control", "max-age=99999999999999999999999"),
            ("age", "18446744073709551615"),
        ]);
        let f = storable(ok, &huge, TTL).unwrap();
        assert_eq!((f.lifetime.as_secs(), f.initial_age.as_secs()), (1 << 31, 1 << 31));
        assert_eq!(
            life(&[("cache-control", "max-age=-5")]),
            None,
            "malformed: stale at once"
        );
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
        let comma = headers(&[("cookie", "csrftoken=x, sessionid=y")]);
        assert!(!request_cacheable(&get, &comma, false, &ignore));
        assert!(request_forbids_storing(&headers(&[(
            "cache-control",
            "max-age=0, No-Store"
        )])));
        assert!(!request_forbids_storing(&headers(&[("cache-control", "no-cache")])));
    }

    #[test]
    fn keys() {
        let uri: Uri = "/api/dresses?page=2".parse().unwrap();
        assert_eq!(
            primary_key("https", b"Shop.example", &uri),
            "https://shop.example/api/dresses?page=2"
        );
        assert_ne!(
            primary_key("https", b"shop.example:6666", &uri),
            primary_key("https", b"shop.example", &uri),
            "another port is another key"
        );
        assert_eq!(
            key_of_url("HTTPS://Shop.Example:8443/api/dresses?page=2").unwrap(),
            "https://shop.example:8443/api/dresses?page=2"
        );
        assert_eq!(key_of_url("https://shop.example").unwrap(), "https://shop.example/");
        assert!(key_of_url("/relative").is_none() && key_of_url("ftp://x/").is_none());
        assert!(key_of_url("https://user@shop.example/").is_none());
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
        // bytes that are not text stay apart
        let raw = |b: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert("accept-language", HeaderValue::from_bytes(b).unwrap());
            secondary_key(&vary, &h)
        };
        assert_ne!(raw(b"\xff"), raw(b"\xfe"));
        assert_ne!(raw(b"\\xff"), raw(b"\xff"));
    }
}

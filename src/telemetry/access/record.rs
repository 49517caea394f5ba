//! One access log line: the record taken from a request and its response, and its JSON,
//! written directly into the line buffer (no serde field machinery on the request path).

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{REFERER, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri, Version};

thread_local! {
    /// `YYYY-MM-DDTHH:MM:SS` of the last second formatted, and that second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// One access log line. Its fields are the request's own values (`Bytes`-backed header values
/// and URI, shared names), taken without copying and serialised only when the line is written.
#[derive(Debug)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The `Host` header, or the HTTP/2 `:authority`.
    pub host: Option<HeaderValue>,
    /// Its path and query are logged.
    pub uri: Uri,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream: Option<Arc<str>>,
    /// How long the upstream took to send its response head.
    pub upstream_time: Option<Duration>,
    pub request_id: HeaderValue,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub tls_version: Option<&'static str>,
    pub http_version: &'static str,
    pub route: Option<Arc<str>>,
    /// `hit` or `miss` for files served from the cache.
    pub cache: Option<&'static str>,
    pub rate_limited: bool,
}

impl AccessRecord {
    /// The fields known when a request arrives, shared with it rather than copied (its header
    /// values and URI point into the request's own buffers); the rest are filled in as it is
    /// handled and answered.
    pub fn new<B>(
        req: &Request<B>,
        client_ip: IpAddr,
        host: Option<&HeaderValue>,
        request_id: &HeaderValue,
        tls_version: Option<&'static str>,
    ) -> Self {
        Self {
            time: SystemTime::now(),
            client_ip,
            method: req.method().clone(),
            host: host.cloned(),
            uri: req.uri().clone(),
            status: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream: None,
            upstream_time: None,
            request_id: request_id.clone(),
            user_agent: req.headers().get(USER_AGENT).cloned(),
            referer: req.headers().get(REFERER).cloned(),
            tls_version,
            http_version: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_3 => "HTTP/3",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            route: None,
            cache: None,
            rate_limited: false,
        }
    }

    /// Appends the record to `out` as one JSON object (no newline). Header values that are
    /// not visible ASCII are logged as `null` (the host as `""`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out.extend_from_slice(b"{\"time\":\"");
        push_rfc3339(self.time, out);
        out.extend_from_slice(b"\",\"client_ip\":\"");
        // an address's text needs no escaping
        let _ = write!(out, "{}", self.client_ip);
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"host\":");
        json_str(out, visible(&self.host).unwrap_or(""));
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.uri.path());
        out.extend_from_slice(b",\"query\":");
        json_opt_str(out, self.uri.query());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_sent).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        json_f64(out, ms(self.duration));
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream.as_deref());
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_time {
            Some(d) => json_f64(out, ms(d)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, self.request_id.to_str().unwrap_or(""));
        out.extend_from_slice(b",\"user_agent\":");
        json_opt_str(out, visible(&self.user_agent));
        out.extend_from_slice(b",\"referer\":");
        json_opt_str(out, visible(&self.referer));
        out.extend_from_slice(b",\"tls_version\":");
        json_opt_str(out, self.tls_version);
        out.extend_from_slice(b",\"http_version\":");
        json_str(out, self.http_version);
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, self.route.as_deref());
        out.extend_from_slice(b",\"cache\":");
        json_opt_str(out, self.cache);
        out.extend_from_slice(if self.rate_limited {
            b",\"rate_limited\":true}"
        } else {
            b",\"rate_limited\":false}"
        });
    }
}

/// A header value's text, if it is visible ASCII.
fn visible(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// A JSON string. Text that needs no escaping (the usual case) is copied as it is; anything
/// else is escaped by serde_json. The check has no early exit, so it runs over whole vectors.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let escape = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escape {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON number (serde_json's shortest round-trip form; `null` for the impossible NaN).
fn json_f64(out: &mut Vec<u8>, x: f64) {
    let _ = serde_json::to_writer(&mut *out, &x);
}

/// RFC 3339 with milliseconds, in UTC. The date and time of day are formatted once per second
/// (per thread); the milliseconds are appended.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `t` as [`rfc3339`] writes it.
fn push_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let _ = time::OffsetDateTime::from(t).format_into(out, &fmt);
        return;
    };
    let (secs, ms) = (since.as_secs(), since.subsec_millis());
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs || prefix.is_empty() {
            let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            *prefix = time::OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(secs))
                .format(&fmt)
                .unwrap_or_default();
            *second = secs;
        }
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_json_object_of_its_fields() {
        let rec = AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            client_ip: "2001:db8::1".parse().unwrap(),
            method: Method::from_bytes(b"PROPFIND").unwrap(),
            host: None,
            uri: "/a%22b/c?q=%5C&x={y}".parse().unwrap(),
            status: 404,
            bytes_sent: 18_446_744_073_709_551_615,
            duration: Duration::from_nanos(1_234_567),
            upstream: Some("127.0.0.1:8000".into()),
            upstream_time: Some(Duration::from_micros(42)),
            request_id: HeaderValue::from_static("rid-\\-1"),
            // a tab is allowed in a header value and must be escaped in JSON
            user_agent: Some(HeaderValue::from_static("curl/8 \"quoted\"\tand\\slash")),
            // not visible ASCII: logged as null
            referer: Some(HeaderValue::from_bytes(b"https://x/\xc3\xa9").unwrap()),
            tls_version: Some("TLSv1.3"),
            http_version: "HTTP/2",
            route: Some("/api/ (line 12)".into()),
            cache: None,
            rate_limited: true,
        };
        let mut line = Vec::new();
        rec.write_json(&mut line);
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let expected = serde_json::json!({
            "time": "2026-11-18T11:06:40.123Z",
            "client_ip": "2001:db8::1",
            "method": "PROPFIND",
            "host": "",
            "path": "/a%22b/c",
            "query": "q=%5C&x={y}",
            "status": 404,
            "bytes_sent": 18_446_744_073_709_551_615u64,
            "duration_ms": 1.234567,
            "upstream": "127.0.0.1:8000",
            "upstream_ms": 0.042,
            "request_id": "rid-\\-1",
            "user_agent": "curl/8 \"quoted\"\tand\\slash",
            "referer": null,
            "tls_version": "TLSv1.3",
            "http_version": "HTTP/2",
            "route": "/api/ (line 12)",
            "cache": null,
            "rate_limited": true,
        });
        assert_eq!(parsed, expected);
        // one line, fields in the documented order
        assert!(!line.contains(&b'\n'));
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with("{\"time\":\"2026-11-18T11:06:40.123Z\",\"client_ip\""),
            "{text}"
        );
        assert!(text.ends_with(",\"rate_limited\":true}"), "{text}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "nl\n",
            "\u{1}\u{1f}\u{7f}",
            "é ünï 🦀",
            "\"\\\"",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        // the same second again (the cached part), the next one, and whole seconds
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_007);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.007Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_001_450);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:41.450Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH - std::time::Duration::from_millis(1500);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:58.500Z");
    }
}

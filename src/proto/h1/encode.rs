//! Writing heads: a response head for a client and a request head for an upstream, each with
//! the framing the codec decides itself. The framing fields of the message's own map
//! (`Content-Length`, `Transfer-Encoding`) are never copied to the wire as they are: the
//! encoder writes the one framing it will follow, so the next hop can only read the message the
//! way the gateway sends it. Names and values come from `http` types, which hold no CR, LF or
//! NUL, so nothing written here can start another line or message.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::fields::{self, parse_length};
use super::request::BodyFraming;
use super::response::Framing;

/// Appends `name: value\r\n`.
fn field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn length_line(out: &mut Vec<u8>, n: u64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(digits.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What the encoder needs to know of a body before it is sent.
#[derive(Debug, Clone, Copy)]
pub struct BodyShape {
    /// Nothing will come.
    pub empty: bool,
    /// The exact length, when known.
    pub exact: Option<u64>,
}

/// Writes a response head into `out` (cleared first): status line, the fields, then the
/// framing, `Date` and `Connection` fields the response needs. `version` is the request's,
/// `head_only` whether it was HEAD; `keep_alive` turns false when the connection must close
/// after this response. Returns how the body goes.
pub fn response_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    version: Version,
    head_only: bool,
    body: BodyShape,
    keep_alive: &mut bool,
) -> Framing {
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless_status = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut declared = None;
    let mut has_date = false;
    let mut has_connection = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING {
            continue;
        } else if *name == header::CONTENT_LENGTH {
            if declared.is_none() {
                declared = parse_length(value.as_bytes());
            }
            continue;
        } else if *name == header::DATE {
            has_date = true;
        } else if *name == header::CONNECTION {
            has_connection = true;
            if fields::tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")) {
                *keep_alive = false;
            }
        }
        field(out, name, value.as_bytes());
    }
    let framing = if bodiless_status {
        Framing::None
    } else if status == StatusCode::NOT_MODIFIED || head_only {
        // the length the body would have had, as declared
        if let Some(n) = declared.or(body.exact.filter(|_| head_only && !body.empty)) {
            length_line(out, n);
        }
        Framing::None
    } else if let Some(n) = declared.or(body.exact).or(body.empty.then_some(0)) {
        length_line(out, n);
        if n == 0 { Framing::None } else { Framing::Length(n) }
    } else if version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        *keep_alive = false;
        Framing::UntilClose
    };
    if !has_connection && status != StatusCode::SWITCHING_PROTOCOLS {
        if !*keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !has_date {
        date_line(out);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Writes a request head for an upstream into `out` (cleared first): the request line with an
/// origin-form target, the request's fields, then `extra` fields, then the framing its body
/// needs. Returns how the body goes, `None` when there is none.
pub fn request_head<'h>(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    extra: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    body: BodyShape,
) -> Option<BodyFraming> {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    // origin-form, or `*` for OPTIONS only; an absolute URI with no path gives `/` and keeps
    // its query
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    if target == "*" && parts.method != Method::OPTIONS {
        out.push(b'/');
    } else {
        if !target.starts_with(['/', '*']) {
            out.push(b'/');
        }
        out.extend_from_slice(target.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name, value.as_bytes());
    }
    for (name, value) in extra {
        field(out, name, value.as_bytes());
    }
    let framing = match body.exact {
        _ if body.empty => None,
        Some(0) => None,
        Some(n) => {
            length_line(out, n);
            Some(BodyFraming::Length(n))
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Some(BodyFraming::Chunked)
        }
    };
    if framing.is_none() && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        // a method that usually carries a body says it has none
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Appends `date: <now>\r\n`, formatted once a second per thread.
pub fn date_line(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == text.len() {
                text.copy_from_slice(s.as_bytes());
                *at = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};

    fn shape(empty: bool, exact: Option<u64>) -> BodyShape {
        BodyShape { empty, exact }
    }

    fn encoded(resp: Response<()>, version: Version, head_only: bool, body: BodyShape) -> (String, Framing, bool) {
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let mut keep_alive = true;
        let f = response_head(&mut out, &parts, version, head_only, body, &mut keep_alive);
        (String::from_utf8(out).unwrap(), f, keep_alive)
    }

    #[test]
    fn response_heads_carry_the_framing_their_body_needs() {
        let exact = shape(false, Some(5));
        let (text, f, ka) = encoded(Response::new(()), Version::HTTP_11, false, exact);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-length: 5\r\n") && text.contains("date: "),
            "{text}"
        );
        assert_eq!((f, ka), (Framing::Length(5), true));

        let (text, f, _) = encoded(Response::new(()), Version::HTTP_11, false, shape(false, None));
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(f, Framing::Chunked);

        let (text, f, ka) = encoded(Response::new(()), Version::HTTP_10, false, shape(false, None));
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((f, ka), (Framing::UntilClose, false));

        let mut r = Response::new(());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        let (text, f, _) = encoded(r, Version::HTTP_11, true, exact);
        assert!(text.contains("content-length: 10\r\n"), "{text}");
        assert_eq!(f, Framing::None);

        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let (text, f, _) = encoded(r, Version::HTTP_11, false, exact);
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(f, Framing::None);

        // the map's framing fields never reach the wire as they are: one length, no coding
        let mut r = Response::new(());
        r.headers_mut()
            .append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        r.headers_mut()
            .append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        r.headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let (text, f, _) = encoded(r, Version::HTTP_11, false, exact);
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(f, Framing::Length(5));
    }

    #[test]
    fn request_heads_encode_with_the_right_body_framing() {
        let enc = |method: Method, cl: Option<&'static str>, body: BodyShape| {
            let mut req = Request::builder().method(method).uri("/a?b=1");
            if let Some(cl) = cl {
                req = req.header("content-length", cl).header("transfer-encoding", "chunked");
            }
            let (parts, _) = req.body(()).unwrap().into_parts();
            let mut out = Vec::new();
            let framing = request_head(&mut out, &parts, std::iter::empty(), body);
            (String::from_utf8(out).unwrap(), framing)
        };
        let (h, f) = enc(Method::GET, None, shape(true, Some(0)));
        assert_eq!(h, "GET /a?b=1 HTTP/1.1\r\n\r\n");
        assert_eq!(f, None);
        let (h, _) = enc(Method::POST, None, shape(true, Some(0)));
        assert!(h.contains("content-length: 0\r\n"));
        let (h, f) = enc(Method::POST, None, shape(false, Some(3)));
        assert!(h.contains("content-length: 3\r\n"));
        assert_eq!(f, Some(BodyFraming::Length(3)));
        // the request's own framing fields are not copied: the body's shape decides
        let (h, f) = enc(Method::POST, Some("3"), shape(false, Some(3)));
        assert_eq!(h.matches("content-length").count(), 1, "{h}");
        assert!(!h.contains("transfer-encoding"), "{h}");
        assert_eq!(f, Some(BodyFraming::Length(3)));
        let (h, f) = enc(Method::POST, None, shape(false, None));
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n"), "{h}");
        assert_eq!(f, Some(BodyFraming::Chunked));
    }
}

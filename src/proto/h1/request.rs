//! Request heads (RFC 9112 §2-§7): the request line and fields tokenised by httparse, then
//! every rule a request must pass before the gateway acts on it, and the framing of its body.
//!
//! Where the RFC lets a recipient choose, or where another parser of the same bytes could read
//! them another way, this parser is the stricter one. Each class of head that httparse accepts
//! and this parser refuses (the differential tests in `tests/codec.rs` check this list):
//! - a bare LF as a line ending (RFC 9112 §2.2 allows it; a front end that does not would see
//!   one field where the gateway sees two): 400;
//! - more than one `Host` (RFC 9112 §3.2): 400;
//! - a target that is neither origin-form, absolute-form with `http`/`https`, nor `*` for
//!   OPTIONS (RFC 9112 §3.2); `CONNECT`, which a reverse proxy does not tunnel: 501;
//! - `Transfer-Encoding` with `Content-Length` (RFC 9112 §6.1, "ought to be handled as an
//!   error"), or in HTTP/1.0: 400; any coding but a single `chunked`: 501 (RFC 9112 §6.1);
//! - `Content-Length` that is not one decimal number, or that is sent twice even with the same
//!   value, as lines or as a list (RFC 9110 §8.6 lets a recipient refuse; nginx does): 400;
//! - a field name or value httparse accepts that the `http` crate does not (RFC 9110 §5.1,
//!   §5.5): 400;
//! - an absolute-form target whose authority names no host (RFC 9112 §3.2.2, RFC 3986 §3.2.2):
//!   400.
//!
//! Field names with `_` are not refused but dropped (unless allowed), so no handler and no
//! upstream sees them; see [`super::fields::has_underscore`].

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::fields::{self, ConnectionOptions, Lengths};
use crate::proto::maps;

/// Fields beyond this many make a head too large (431).
pub const MAX_HEADERS: usize = 100;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes (more than 0).
    Length(u64),
    Chunked,
}

/// A parsed request head, with what the connection must know about it.
#[derive(Debug)]
pub struct RequestHead {
    pub req: Request<()>,
    /// `None`: no body.
    pub body: Option<BodyFraming>,
    /// The connection can carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1 only).
    pub expect_continue: bool,
    /// A protocol upgrade is asked for (`Connection: upgrade` and `Upgrade`, HTTP/1.1 only).
    pub upgrade: bool,
}

/// Why a head is refused, and so the answer: 400, 431 or 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Bad(&'static str),
    TooLarge,
    /// A transfer coding other than chunked, or a method the gateway does not implement.
    NotImplemented,
}

/// What the listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest head accepted (431 past it).
    pub max_head: usize,
    /// Keep field names with `_` (else they are dropped).
    pub underscores: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 16 * 1024,
            underscores: false,
        }
    }
}

/// Parses a complete request head off the front of `buf` (and consumes it); `None` until it
/// has all arrived. The target and field values are slices of one copy of the head.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, Reject> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_head => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return Err(Reject::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Reject::Bad("malformed request head")),
    };
    if !crlf_only(&buf[..len], &parsed) {
        return Err(Reject::Bad("bare LF in the request head"));
    }
    // one copy of the head; the target and field values are slices of it
    let head = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| head.slice(s.as_ptr() as usize - base..s.as_ptr() as usize - base + s.len());

    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()).map_err(|_| Reject::Bad("bad method"))?;
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let target = parsed.path.unwrap_or("");
    let uri = target_uri(&method, slice(target.as_bytes()))?;

    let mut headers = maps::take(parsed.headers.len());
    let mut lengths = Lengths::default();
    let mut chunked = None;
    let mut hosts = 0;
    let mut connection = ConnectionOptions::default();
    let mut has_upgrade = false;
    let mut expect_continue = false;
    for h in parsed.headers.iter() {
        if !limits.underscores && fields::has_underscore(h.name.as_bytes()) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Reject::Bad("bad field name"))?;
        let value = h.value;
        if name == header::CONTENT_LENGTH {
            lengths.add(value).map_err(|_| Reject::Bad("bad Content-Length"))?;
        } else if name == header::TRANSFER_ENCODING {
            // chunked is the one coding understood (nginx answers others with 501 too); a second
            // line would add a coding
            chunked = Some(chunked.is_none() && value.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::CONNECTION {
            connection.add(value);
        } else if name == header::UPGRADE {
            has_upgrade = true;
        } else if name == header::EXPECT {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        let value = HeaderValue::from_maybe_shared(slice(value)).map_err(|_| Reject::Bad("bad field value"))?;
        headers.append(name, value);
    }
    buf.advance(len);
    if hosts > 1 {
        return Err(Reject::Bad("more than one Host"));
    }
    // RFC 9110 §8.6: one length, said once
    if lengths.repeated {
        return Err(Reject::Bad("Content-Length sent more than once"));
    }
    // RFC 9112 §6.1, §6.3: a body is framed one way only
    let body = match (chunked, lengths.value) {
        (Some(_), Some(_)) => return Err(Reject::Bad("Content-Length with Transfer-Encoding")),
        (Some(_), None) if version != Version::HTTP_11 => return Err(Reject::Bad("Transfer-Encoding in HTTP/1.0")),
        (Some(true), None) => Some(BodyFraming::Chunked),
        (Some(false), None) => return Err(Reject::NotImplemented),
        (None, Some(0)) | (None, None) => None,
        (None, Some(n)) => Some(BodyFraming::Length(n)),
    };
    let http11 = version == Version::HTTP_11;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(RequestHead {
        req,
        body,
        keep_alive: connection.persistent(http11),
        expect_continue: expect_continue && http11,
        upgrade: connection.upgrade && has_upgrade && http11,
    }))
}

/// Every line of a head httparse accepted ends in CRLF, not a bare LF. httparse has already
/// refused LF anywhere but at a line's end, so the line ends are all there is to look at: the
/// empty lines it skips before the request line, the end of each line before a field name, and
/// the end of the head. (A scan of every byte for LFs cost ~190 instructions a request.)
fn crlf_only(head: &[u8], parsed: &httparse::Request<'_, '_>) -> bool {
    let base = head.as_ptr() as usize;
    let start = parsed.method.map_or(0, |m| m.as_ptr() as usize - base);
    let leading = &head[..start];
    leading.len().is_multiple_of(2)
        && leading.chunks(2).all(|p| p == b"\r\n")
        && head.ends_with(b"\r\n\r\n")
        && parsed.headers.iter().all(|h| {
            let at = h.name.as_ptr() as usize - base;
            at >= 2 && &head[at - 2..at] == b"\r\n"
        })
}

/// The request target as a URI, when its form fits the method (RFC 9112 §3.2).
fn target_uri(method: &Method, target: Bytes) -> Result<Uri, Reject> {
    if *method == Method::CONNECT {
        // authority-form: a tunnel, which a reverse proxy does not open
        return Err(Reject::NotImplemented);
    }
    let form_ok = match target.first() {
        Some(b'/') => true,
        Some(b'*') => target.len() == 1 && *method == Method::OPTIONS,
        _ => {
            let lower = |n: usize| target.get(..n).map(<[u8]>::to_ascii_lowercase);
            lower(7).is_some_and(|s| s == b"http://") || lower(8).is_some_and(|s| s == b"https://")
        }
    };
    if !form_ok {
        return Err(Reject::Bad("bad request target"));
    }
    let uri = Uri::from_maybe_shared(target).map_err(|_| Reject::Bad("bad request target"))?;
    // absolute-form names a host
    if uri.scheme().is_some() && uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(Reject::Bad("bad request target"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Result<Option<RequestHead>, Reject> {
        parse(
            &mut BytesMut::from(raw),
            &Limits {
                max_head: 8192,
                underscores: false,
            },
        )
    }

    #[test]
    fn request_heads_parse_with_their_framing() {
        let h = head(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.req.method(), Method::POST);
        assert_eq!(h.req.uri().path(), "/a");
        assert_eq!(h.req.uri().query(), Some("b=1"));
        assert_eq!(h.req.headers()["host"], "x");
        assert_eq!(h.body, Some(BodyFraming::Length(5)));
        assert!(h.keep_alive);

        let h = head(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Some(BodyFraming::Chunked));
        assert!(!h.keep_alive);

        let h = head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive && h.body.is_none());
        let h = head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);

        let h = head(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.upgrade);
        assert!(matches!(head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        let h = head(b"GET http://shop.test/x?y HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.req.uri().authority().unwrap().as_str(), "shop.test");
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.req.uri().path(), "*");
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET shop.test:80 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET ftp://shop.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw), Err(Reject::Bad(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // codings other than chunked, and tunnels: 501, as nginx
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test:443\r\n\r\n",
        ] {
            assert_eq!(head(raw).unwrap_err(), Reject::NotImplemented);
        }
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend_from_slice(&[b'a'; 9000]);
        assert_eq!(head(&big).unwrap_err(), Reject::TooLarge);
    }

    #[test]
    fn names_with_underscores_are_dropped_unless_allowed() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nContent_Length: 5\r\nTransfer_Encoding: chunked\r\nX-Ok: 1\r\n\r\n";
        let h = head(raw).unwrap().unwrap();
        let names: Vec<&str> = h.req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-ok"]);
        assert_eq!(h.body, None, "no framing read from a dropped field");
        let h = parse(
            &mut BytesMut::from(&raw[..]),
            &Limits {
                max_head: 8192,
                underscores: true,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.req.headers().len(), 5);
        assert_eq!(h.body, None, "Content_Length and Transfer_Encoding are other fields");
    }
}

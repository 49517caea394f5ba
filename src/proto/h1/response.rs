//! Response heads from an upstream (RFC 9112 §4, §6.3): the status line and fields tokenised by
//! httparse, hop-by-hop fields read and removed, and the body's framing decided.
//!
//! An upstream's response is re-framed for the client (the gateway writes its own
//! `Content-Length` or chunked coding), so a tolerant reading cannot smuggle anything to the
//! client; but the gateway must know exactly where this response ends, or the pooled connection
//! would hand the rest to the next request. So: `Content-Length` values that differ, or are not
//! numbers, are refused; the same value repeated (as lines or as a list) is one length (RFC 9110
//! §8.6); `Transfer-Encoding` wins over `Content-Length` and the connection is not reused after
//! (RFC 9112 §6.3); interim 1xx heads are read past; a 204, a 304 and an answer to HEAD have no
//! body whatever they say, and bytes after them keep the connection out of the pool.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::chunked::Malformed;
use super::fields::{self, ConnectionOptions, Lengths};
use crate::proto::maps;

/// A response head larger than this is refused (offsets into it fit in a `u16`).
pub const MAX_HEAD: usize = 64 * 1024 - 1;
const MAX_HEADERS: usize = 100;
/// Room left in a parsed head's field map for what the gateway adds on the way out (request
/// id, Vary, security headers), so adding them does not grow the map.
const ROOM: usize = 8;

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (more than 0).
    Length(u64),
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

/// What came off the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A 1xx head that is not the answer (consumed, nothing to pass on).
    Interim,
    Final(ResponseHead),
}

/// A final response head: the response without its body, the body's framing, and whether the
/// connection can take another request after it.
#[derive(Debug)]
pub struct ResponseHead {
    pub resp: Response<()>,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Parses a response head off the front of `buf` (and consumes it); `None` while it is
/// incomplete. `head_only`: the request was HEAD. `upgrade`: the request asked for a protocol
/// switch, so a 101 is a possible answer (it keeps its hop-by-hop fields, which carry the
/// switch to the client).
pub fn parse(buf: &mut BytesMut, head_only: bool, upgrade: bool) -> Result<Option<Parsed>, Malformed> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Malformed("response head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many headers")),
        Err(_) => return Err(Malformed("bad response head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Malformed("bad status code"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if status.is_informational() && !switching {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    if len > MAX_HEAD {
        return Err(Malformed("response head too large"));
    }
    if switching && !upgrade {
        return Err(Malformed("101 to a request that asked for no upgrade"));
    }
    // where each name and value sits, to slice them out of the frozen head without copies
    let base = buf.as_ptr() as usize;
    let count = parsed.headers.len();
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let at = |p: *const u8| (p as usize - base) as u16;
    for (h, span) in parsed.headers.iter().zip(spans.iter_mut()) {
        let (name, value) = (at(h.name.as_ptr()), at(h.value.as_ptr()));
        *span = (name, name + h.name.len() as u16, value, value + h.value.len() as u16);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = maps::take(count + ROOM);
    let Fields {
        connection,
        listing,
        lengths,
        transfer_encoding,
    } = read_fields(&head, &spans[..count], switching, &mut headers)?;
    if !switching {
        drop_listed(&mut headers, &listing);
    }
    let mut keep_alive = connection.persistent(version == Version::HTTP_11);
    let sent = Sent {
        lengths,
        transfer_encoding,
        version,
    };
    let framing = framing(status, head_only, &sent, &mut headers, &mut keep_alive);
    if switching {
        keep_alive = false;
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Parsed::Final(ResponseHead {
        resp,
        framing,
        keep_alive,
    })))
}

/// What the fields of a response head say about its connection and its framing.
struct Fields {
    connection: ConnectionOptions,
    /// The `Connection` values, kept only when they name fields to remove (rare).
    listing: Vec<Bytes>,
    lengths: Lengths,
    transfer_encoding: Option<bool>,
}

/// Reads the fields at `spans` of `head` into `headers`, all but the hop-by-hop ones (kept in a
/// 101) and repeated lengths; returns what they say about the connection and the framing.
fn read_fields(
    head: &Bytes,
    spans: &[(u16, u16, u16, u16)],
    switching: bool,
    headers: &mut http::HeaderMap,
) -> Result<Fields, Malformed> {
    let mut connection = ConnectionOptions::default();
    let mut listing: Vec<Bytes> = Vec::new();
    // the upstream's `Content-Length`: while it is one plain number on one line, that line is
    // passed on as it is
    let mut lengths = Lengths::default();
    // `Transfer-Encoding` was sent: whether its last coding is chunked
    let mut transfer_encoding: Option<bool> = None;
    for &(n0, n1, v0, v1) in spans {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize]).map_err(|_| Malformed("bad header name"))?;
        let value = head.slice(v0 as usize..v1 as usize);
        if name == header::CONNECTION {
            if connection.add(&value) {
                listing.push(value.clone());
            }
        } else if name == header::TRANSFER_ENCODING {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
            transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            lengths
                .add(&value)
                .map_err(|_| Malformed("bad or conflicting Content-Length"))?;
            if lengths.repeated {
                // the same length again, as a line or in a list: one line is made below
                continue;
            }
        }
        // hop-by-hop fields describe this connection: read above, not passed on (but a 101's);
        // `Upgrade` outside a 101 is an offer to this hop
        if !switching && (fields::is_hop_by_hop(name.as_str()) || name == header::UPGRADE) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| Malformed("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Fields {
        connection,
        listing,
        lengths,
        transfer_encoding,
    })
}

/// Fields the upstream named in `Connection` are this hop's too (but not the framing, nor an
/// `Upgrade`).
fn drop_listed(headers: &mut http::HeaderMap, listing: &[Bytes]) {
    for value in listing {
        for token in fields::tokens(value) {
            if let Ok(name) = HeaderName::from_bytes(token)
                && name != header::UPGRADE
                && !fields::is_protected(&name)
            {
                headers.remove(name);
            }
        }
    }
}

/// What the upstream sent that frames its body.
#[derive(Clone, Copy)]
struct Sent {
    lengths: Lengths,
    /// `Transfer-Encoding` was sent: whether its last coding is chunked.
    transfer_encoding: Option<bool>,
    version: Version,
}

/// How the body of a response with `status` is framed (RFC 9112 §6.3), with the
/// `Content-Length` the client gets set in `headers`; clears `keep_alive` when the connection
/// cannot carry another exchange after it.
fn framing(
    status: StatusCode,
    head_only: bool,
    sent: &Sent,
    headers: &mut http::HeaderMap,
    keep_alive: &mut bool,
) -> Framing {
    let Sent {
        lengths,
        transfer_encoding,
        version,
    } = *sent;
    // one `Content-Length` line: the upstream's own when it sent one plain number, else one made
    // from the number its lines all gave
    let keep_length = |headers: &mut http::HeaderMap, n: u64| {
        if lengths.repeated {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    };
    let bodiless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        match lengths.value {
            // what the body would have been (HEAD, 304): the client may want to know
            Some(n) if status != StatusCode::NO_CONTENT && !status.is_informational() => keep_length(headers, n),
            _ => {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
        Framing::None
    } else if let Some(chunked) = transfer_encoding {
        // Transfer-Encoding beside Content-Length, or in HTTP/1.0, is framing a peer may read
        // the other way (RFC 9112 §6.1): decoded as sent, and the connection closed after; the
        // decoded body is re-framed for the client, so a length sent beside it is void
        if lengths.value.is_some() || version == Version::HTTP_10 {
            *keep_alive = false;
        }
        headers.remove(header::CONTENT_LENGTH);
        if chunked {
            Framing::Chunked
        } else {
            *keep_alive = false;
            Framing::UntilClose
        }
    } else if let Some(n) = lengths.value {
        keep_length(headers, n);
        if n == 0 { Framing::None } else { Framing::Length(n) }
    } else {
        *keep_alive = false;
        Framing::UntilClose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_only: bool) -> Result<(Response<()>, Framing, bool), Malformed> {
        let mut buf = BytesMut::from(raw.as_bytes());
        loop {
            match parse(&mut buf, head_only, false)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(h)) => return Ok((h.resp, h.framing, h.keep_alive)),
                None => return Err(Malformed("incomplete")),
            }
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (r, f, k) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n", false).unwrap();
        assert!(f == Framing::Length(12) && k);
        assert_eq!(r.headers()["x-a"], "b");
        let (r, f, k) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).unwrap();
        assert!(f == Framing::None && k);
        assert_eq!(r.headers()["content-length"], "12");
        let (r, f, k) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(f == Framing::Chunked && !k && !r.headers().contains_key("content-length"));
        let (_, f, k) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
        assert!(f == Framing::UntilClose && !k);
        let (_, f, k) = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false).unwrap();
        assert!(f == Framing::UntilClose && !k);
        let (_, _, k) = head(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!k);
        let (_, _, k) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!k);
        let (r, f, _) = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.status(), 204);
        assert!(f == Framing::None && !r.headers().contains_key("content-length"));
        let (r, f, _) = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n", false).unwrap();
        assert!(f == Framing::None && r.headers()["content-length"] == "4");
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        ] {
            assert!(head(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_repeated_length_is_one_length() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        ] {
            let (r, f, k) = head(raw, false).unwrap();
            assert!(f == Framing::Length(3) && k);
            let lengths: Vec<_> = r.headers().get_all("content-length").iter().collect();
            assert_eq!(lengths, ["3"], "{raw}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop_but_a_101_keeps_them() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, Content-Length, Host\r\nKeep-Alive: timeout=5\r\n\
                   X-Hop: 1\r\nUpgrade: h2c\r\nTrailer: x\r\nX-End: 2\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        let (r, _, k) = head(raw, false).unwrap();
        let mut names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "host", "x-end"]);
        assert!(k);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        );
        let Ok(Some(Parsed::Final(h))) = parse(&mut buf, false, true) else {
            panic!("a 101 to an upgrade request parses");
        };
        assert_eq!(h.resp.headers()["upgrade"], "websocket");
        assert_eq!(h.resp.headers()["connection"], "Upgrade");
        assert!(!h.keep_alive);
    }
}

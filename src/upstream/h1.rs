//! The HTTP/1.1 client side of a proxied exchange, run in the request's own task: the request
//! head is written straight to the upstream connection, the response head parsed from it, and
//! the response body read from it as the client's side asks for more. No connection task and no
//! channels between tasks; the connection goes back to its pool when the exchange is over.
//!
//! A request body is written while the response head is awaited and, if the upstream answers
//! early, while its response body streams (an echoing upstream never deadlocks the two).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::InflightGuard;
use crate::http::body::{Body, BodyLengthMismatch, BoxError};

/// A response head larger than this is refused (offsets into it fit in a `u16`).
const MAX_HEAD: usize = 64 * 1024 - 1;
const MAX_HEADERS: usize = 100;
/// Reads start at this size and grow, while reads fill them, up to `MAX_READ`.
const MIN_READ: usize = 16 * 1024;
const MAX_READ: usize = 256 * 1024;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// An open HTTP/1.1 connection to an upstream server, idle between exchanges.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    read_size: usize,
    head: Vec<u8>,
    /// The upstream sent a 1xx for the request in progress: it has answered something.
    interim: bool,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The connection closed (or was reset) before any byte of a response arrived.
    Closed,
    /// The connection closed in the middle of a response body.
    Truncated,
    /// The upstream's response is not valid HTTP/1.1.
    Malformed(&'static str),
    /// The client's request body failed (too large, too slow, broken): the client's fault.
    RequestBody(BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "upstream connection: {e}"),
            Error::Closed => f.write_str("upstream closed the connection before answering"),
            Error::Truncated => f.write_str("upstream closed the connection in the middle of a response"),
            Error::Malformed(m) => write!(f, "malformed upstream response: {m}"),
            Error::RequestBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::RequestBody(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// A failed [`Conn::send`]; the request `body` is handed back when none of the request reached
/// the upstream.
pub struct SendError {
    pub body: Option<Body>,
    pub error: Error,
}

impl Conn {
    /// Boxed: a connection moves between the pool, the request and its response body, and a
    /// pointer moves cheaper than the connection.
    pub fn new(io: TcpStream) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            read_size: MIN_READ,
            head: Vec::with_capacity(512),
            interim: false,
        })
    }

    /// True while the idle connection can take a request: the server has neither closed it nor
    /// sent anything unasked (either would make it readable). No system call: the reactor's
    /// readiness is read, with a waker that does nothing.
    pub fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.buf.is_empty() && self.io.poll_read_ready(&mut cx).is_pending()
    }

    /// Sends the request `parts` (origin-form target, hop-by-hop headers already removed), then
    /// the `extra` headers, with `body`, and waits for the response head. The head is borrowed,
    /// so a caller can send it again elsewhere. `upgrade`: the request asks for a protocol
    /// switch, so a 101 is the answer and the connection becomes a tunnel.
    pub async fn send<'h>(
        mut self: Box<Self>,
        parts: &http::request::Parts,
        extra: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: Body,
        upgrade: bool,
    ) -> Result<Response<RecvBody>, SendError> {
        self.interim = false;
        let framing = encode_head(&mut self.head, parts, extra, &body);
        if let Err(e) = self.io.write_all(&self.head).await {
            // an incomplete head is nothing the upstream can act on
            return Err(SendError {
                body: Some(body),
                error: Error::Io(e),
            });
        }
        let head_only = parts.method == Method::HEAD;
        let mut upload = framing.map(|framing| Box::new(Upload::new(body, framing)));
        let mut reusable = true;
        let fail = |error| SendError { body: None, error };
        let head = poll_fn(|cx| {
            if let Some(e) = Upload::drive(&mut upload, &mut self.io, cx, &mut reusable) {
                return Poll::Ready(Err(Error::RequestBody(e)));
            }
            self.poll_head(cx, head_only, upgrade)
        })
        .await
        .map_err(fail)?;
        let body = RecvBody {
            conn: Some(self),
            framing: head.framing,
            upload,
            reusable: reusable && head.keep_alive,
            inflight: None,
        };
        let (parts, ()) = head.resp.into_parts();
        Ok(Response::from_parts(parts, body))
    }

    /// Reads until a final response head is parsed (1xx heads other than 101 are skipped).
    fn poll_head(&mut self, cx: &mut Context<'_>, head_only: bool, upgrade: bool) -> Poll<Result<Head, Error>> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, head_only, upgrade)? {
                    Some(Parsed::Interim) => {
                        self.interim = true;
                        continue;
                    }
                    Some(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                    None if self.buf.len() > MAX_HEAD => {
                        return Poll::Ready(Err(Error::Malformed("response head too large")));
                    }
                    None => {}
                }
            }
            // nothing at all from the upstream yet (not even a 1xx)
            let silent = self.buf.is_empty() && !self.interim;
            match ready!(self.poll_fill(cx)) {
                Ok(0) if silent => return Poll::Ready(Err(Error::Closed)),
                Ok(0) => return Poll::Ready(Err(Error::Malformed("incomplete response head"))),
                Ok(_) => {}
                Err(e)
                    if silent
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Poll::Ready(Err(Error::Closed));
                }
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == room && self.read_size < MAX_READ {
            // reads fill the buffer: the stream is fast, read more at a time
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    /// Exactly this many bytes (the request's `Content-Length`).
    Length(u64),
    Chunked,
}

/// How the request body goes: `Some` when there is one to write.
fn encode_head<'h>(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    extra: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    body: &Body,
) -> Option<BodyFraming> {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        line(name, value);
    }
    for (name, value) in extra {
        line(name, value);
    }
    let length = parts.headers.get(header::CONTENT_LENGTH);
    let framing = if body.is_end_stream() {
        if length.is_none() && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        None
    } else if let Some(length) = length {
        // (the client's server checked it; unreadable, it lets no byte through)
        let n = parse_length(length.as_bytes()).unwrap_or(0);
        Some(BodyFraming::Length(n))
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        Some(BodyFraming::Length(n))
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Some(BodyFraming::Chunked)
    };
    out.extend_from_slice(b"\r\n");
    framing
}

enum Parsed {
    /// A 1xx head that is not the answer: skipped.
    Interim,
    Final(Head),
}

/// A final response head: the response without its body, the body's framing, and whether the
/// connection can take another request after it.
struct Head {
    resp: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a response head off the front of `buf`; `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut, head_only: bool, upgrade: bool) -> Result<Option<Parsed>, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Malformed("too many headers")),
        Err(_) => return Err(Error::Malformed("bad response head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("bad status code"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    if len > MAX_HEAD {
        return Err(Error::Malformed("response head too large"));
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
    // room for what the gateway adds on the way out (request id, Vary, security headers), so
    // adding them does not grow the map
    let mut headers = crate::http::maps::take(count + 8);
    // hop-by-hop headers describe this connection: read here, and not passed on (but a 101's,
    // which carry the switch to the client)
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut hop = HopByHop::default();
    for &(n0, n1, v0, v1) in &spans[..count] {
        let name =
            HeaderName::from_bytes(&head[n0 as usize..n1 as usize]).map_err(|_| Error::Malformed("bad header name"))?;
        let value = head.slice(v0 as usize..v1 as usize);
        if name == header::CONNECTION {
            hop.connection(&value);
        } else if name == header::TRANSFER_ENCODING {
            hop.transfer_encoding = Some(last_token(&value).eq_ignore_ascii_case(b"chunked"));
        }
        // (`Upgrade` outside a 101 is an offer to this hop)
        if !switching && (is_hop_by_hop(name.as_str()) || name == header::UPGRADE) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| Error::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let (framing, mut keep_alive) = framing(&mut headers, status, version, head_only, &hop)?;
    if !switching {
        // headers the upstream named in `Connection` are this hop's too (but the body's length,
        // which the framing above has read, stays)
        for name in &hop.listed {
            if let Ok(name) = HeaderName::from_bytes(name)
                && name != header::CONTENT_LENGTH
            {
                headers.remove(name);
            }
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(Error::Malformed("101 to a request that asked for no upgrade"));
        }
        keep_alive = false;
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Parsed::Final(Head {
        resp,
        framing,
        keep_alive,
    })))
}

/// The hop-by-hop facts of a response head.
#[derive(Default)]
struct HopByHop {
    close: bool,
    keep_alive: bool,
    /// `Transfer-Encoding` was sent: whether its last coding is chunked.
    transfer_encoding: Option<bool>,
    /// Other headers named in `Connection` (rare: no allocation until one is).
    listed: Vec<Bytes>,
}

impl HopByHop {
    fn connection(&mut self, value: &Bytes) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                let start = token.as_ptr() as usize - value.as_ptr() as usize;
                self.listed.push(value.slice(start..start + token.len()));
            }
        }
    }
}

fn last_token(value: &[u8]) -> &[u8] {
    value.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii()
}

/// Headers that concern one connection only (RFC 9110 §7.6.1, and the `Proxy-*` ones of the
/// hop they were meant for); `Upgrade` is decided by the caller.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
    )
}

/// The response body's framing (RFC 9112 §6.3) and whether the connection stays open after it.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    version: Version,
    head_only: bool,
    hop: &HopByHop,
) -> Result<(Framing, bool), Error> {
    let keep_alive = if version == Version::HTTP_11 {
        !hop.close
    } else {
        hop.keep_alive && !hop.close
    };
    if head_only || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Done, keep_alive));
    }
    if let Some(chunked) = hop.transfer_encoding {
        // Transfer-Encoding beside Content-Length, or in HTTP/1.0, is framing a peer may read
        // the other way (RFC 9112 §6.1): decoded as sent, and the connection closed after
        let ambiguous = version == Version::HTTP_10 || headers.contains_key(header::CONTENT_LENGTH);
        let keep_alive = keep_alive && !ambiguous;
        // the decoded body is re-framed for the client: a length sent beside it is void
        headers.remove(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked(Chunked::Size), keep_alive)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|l| l != first) {
            return Err(Error::Malformed("conflicting Content-Length headers"));
        }
        let n = parse_length(first.as_bytes()).ok_or(Error::Malformed("bad Content-Length"))?;
        return Ok((if n == 0 { Framing::Done } else { Framing::Length(n) }, keep_alive));
    }
    Ok((Framing::UntilClose, false))
}

/// A `Content-Length` value: digits only (no sign, no spaces), at most 18 of them.
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// Where a chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

pub(crate) enum Decoded {
    Data(Bytes),
    NeedMore,
    End,
}

/// Where the line at the front of `buf` ends (its `\n`), `None` until it has arrived; a line
/// longer than `max`, ended or not, is refused.
fn line_end(buf: &[u8], max: usize, too_long: &'static str) -> Result<Option<usize>, Error> {
    match memchr::memchr(b'\n', &buf[..buf.len().min(max + 1)]) {
        Some(eol) => Ok(Some(eol)),
        None if buf.len() > max => Err(Error::Malformed(too_long)),
        None => Ok(None),
    }
}

/// A line's bytes (CRLF removed) hold no control bytes but tabs.
fn valid_line(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

impl Chunked {
    /// Takes what it can from the front of `buf`. `strict` (a client's request body, where a
    /// lenient reading is a smuggling risk behind another proxy): no whitespace before a chunk
    /// size, no bare CR or other control byte in a line, every line ended by CRLF, trailer
    /// lines that are header fields.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut, strict: bool) -> Result<Decoded, Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(eol) = line_end(buf, MAX_CHUNK_LINE, "chunk-size line too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let line = buf[..eol]
                        .strip_suffix(b"\r")
                        .ok_or(Error::Malformed("bad chunk-size line"))?;
                    if strict && !valid_line(line) {
                        return Err(Error::Malformed("bad chunk-size line"));
                    }
                    let digits = line.split(|b| *b == b';').next().unwrap_or(b"");
                    let digits = if strict {
                        digits.trim_ascii_end()
                    } else {
                        digits.trim_ascii()
                    };
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(Error::Malformed("bad chunk size"));
                    }
                    let size = digits.iter().try_fold(0u64, |acc, b| {
                        let d = (*b as char).to_digit(16)?;
                        Some(acc * 16 + d as u64)
                    });
                    let size = size.ok_or(Error::Malformed("bad chunk size"))?;
                    buf.advance(eol + 1);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    *self = if n as u64 == left {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(eol) = line_end(buf, MAX_HEAD, "trailer line too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let empty = eol == 0 || (eol == 1 && buf[0] == b'\r');
                    if strict {
                        let line = buf[..eol]
                            .strip_suffix(b"\r")
                            .ok_or(Error::Malformed("bad trailer line"))?;
                        if !valid_line(line) || !(line.is_empty() || line.contains(&b':')) {
                            return Err(Error::Malformed("bad trailer line"));
                        }
                    }
                    buf.advance(eol + 1);
                    if empty {
                        return Ok(Decoded::End);
                    }
                }
            }
        }
    }
}

/// A request body on its way to the upstream.
struct Upload {
    body: Body,
    chunked: bool,
    /// Bytes still owed under a `Content-Length`: the body must match it to the byte, or what
    /// follows would be read by the upstream as another request.
    owed: Option<u64>,
    /// Bytes queued for the socket, in order (a chunk's size line, data and CRLF).
    queue: Vec<Bytes>,
    finished: bool,
}

enum UploadError {
    Body(BoxError),
    /// The socket refused more: the upstream closed, or stopped reading to answer early.
    Io,
}

impl Upload {
    fn new(body: Body, framing: BodyFraming) -> Self {
        Self {
            body,
            chunked: framing == BodyFraming::Chunked,
            owed: match framing {
                BodyFraming::Length(n) => Some(n),
                BodyFraming::Chunked => None,
            },
            queue: Vec::with_capacity(3),
            finished: false,
        }
    }

    /// Moves `upload` on, if there is one: it is gone once all sent or failed. A failure leaves
    /// the connection out of step (`reusable` turns false); the client's own body failing is
    /// returned, the upstream no longer reading (it may be answering early) is not.
    fn drive(
        upload: &mut Option<Box<Upload>>,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
        reusable: &mut bool,
    ) -> Option<BoxError> {
        let result = match upload.as_mut()?.poll(io, cx) {
            Poll::Pending => return None,
            Poll::Ready(result) => result,
        };
        *upload = None;
        match result {
            Ok(()) => None,
            Err(failure) => {
                *reusable = false;
                match failure {
                    UploadError::Body(e) => Some(e),
                    UploadError::Io => None,
                }
            }
        }
    }

    /// Writes the body until it is all sent (`Ready(Ok)`) or the socket or the body waits.
    fn poll(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), UploadError>> {
        loop {
            while !self.queue.is_empty() {
                let slices: Vec<IoSlice<'_>> = self.queue.iter().map(|b| IoSlice::new(b)).collect();
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices)).map_err(|_| UploadError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Io));
                }
                let mut n = n;
                while n > 0 {
                    let first = &mut self.queue[0];
                    if n >= first.len() {
                        n -= first.len();
                        self.queue.remove(0);
                    } else {
                        first.advance(n);
                        n = 0;
                    }
                }
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        if let Some(owed) = &mut self.owed {
                            let Some(left) = owed.checked_sub(data.len() as u64) else {
                                return Poll::Ready(Err(UploadError::Body(Box::new(BodyLengthMismatch))));
                            };
                            *owed = left;
                        }
                        if self.chunked {
                            self.queue.push(Bytes::from(format!("{:x}\r\n", data.len())));
                            self.queue.push(data);
                            self.queue.push(Bytes::from_static(b"\r\n"));
                        } else {
                            self.queue.push(data);
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(UploadError::Body(e))),
                None => {
                    if self.owed.is_some_and(|owed| owed > 0) {
                        return Poll::Ready(Err(UploadError::Body(Box::new(BodyLengthMismatch))));
                    }
                    if self.chunked {
                        self.queue.push(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    self.finished = true;
                }
            }
        }
    }
}

/// An upstream response body, read from its connection as it is polled. Read to its end on a
/// keep-alive connection, with the request body all sent, the connection goes back to the pool;
/// dropped earlier, the connection closes.
pub struct RecvBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    upload: Option<Box<Upload>>,
    reusable: bool,
    /// Counts the exchange in flight on its server until the body is dropped; also names the
    /// pool the connection returns to.
    inflight: Option<InflightGuard>,
}

impl RecvBody {
    /// Returns the connection to `inflight`'s server's pool at the end, and holds the guard.
    pub fn pooled(&mut self, inflight: InflightGuard) {
        self.inflight = Some(inflight);
        if matches!(self.framing, Framing::Done) {
            self.finish();
        }
    }

    /// The connection after a 101: the socket and what the upstream already sent past the head.
    pub fn into_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        let conn = *self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    /// The response is complete: the connection goes back to the pool if it can be reused.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let Some(conn) = self.conn.take() else { return };
        if self.reusable
            && self.upload.is_none()
            && conn.buf.is_empty()
            && let Some(guard) = &self.inflight
        {
            guard.server().pool.put(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            // the upstream has answered already: its answer stands, whatever becomes of the rest
            // of the request (the connection, out of step then, is not reused)
            let _ = Upload::drive(&mut this.upload, &mut conn.io, cx, &mut this.reusable);
        }
        loop {
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(n as usize).freeze();
                    *left -= n;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) if !conn.buf.is_empty() => match state.decode(&mut conn.buf, false) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e),
                },
                _ => {}
            }
            let conn = this.conn.as_mut().expect("checked above");
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn decode_all(input: &[u8], split: usize) -> Result<Vec<u8>, Error> {
        decode_with(input, split, false)
    }

    fn decode_with(input: &[u8], split: usize, strict: bool) -> Result<Vec<u8>, Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split) {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf, strict)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok(out),
                }
            }
        }
        Err(Error::Closed)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 1..wire.len() {
            assert_eq!(decode_all(wire, split).unwrap(), b"hello, world", "split {split}");
        }
        assert_eq!(decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 64).unwrap(), b"0123456789");
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for wire in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(decode_all(wire, 64).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn request_bodies_are_decoded_strictly() {
        let fine = b"5;name=value\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 1..fine.len() {
            assert_eq!(decode_with(fine, split, true).unwrap(), b"hello");
        }
        // what a response may get away with, a request may not
        for wire in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nnot a header\r\n\r\n",
        ] {
            assert!(
                decode_with(wire, 64, false).is_ok(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert!(
                decode_with(wire, 64, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    fn head(raw: &str, head_only: bool) -> Result<(Response<()>, Framing, bool), Error> {
        let mut buf = BytesMut::from(raw.as_bytes());
        loop {
            match parse_head(&mut buf, head_only, false)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(h)) => return Ok((h.resp, h.framing, h.keep_alive)),
                None => return Err(Error::Closed),
            }
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (r, f, k) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n", false).unwrap();
        assert!(matches!(f, Framing::Length(12)) && k);
        assert_eq!(r.headers()["x-a"], "b");
        let (_, f, k) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).unwrap();
        assert!(matches!(f, Framing::Done) && k);
        let (r, f, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(matches!(f, Framing::Chunked(_)) && !r.headers().contains_key("content-length"));
        let (_, f, k) = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false).unwrap();
        assert!(matches!(f, Framing::UntilClose) && !k);
        let (_, _, k) = head(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!k);
        let (_, _, k) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!k);
        let (r, f, _) = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert_eq!(r.status(), 204);
        assert!(matches!(f, Framing::Done));
        assert!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
        assert!(head("HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
    }

    /// An upstream on loopback that reads a request head, answers `answer` at once, and
    /// keeps reading whatever else comes (the request body) until the connection closes.
    async fn early_answer(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).await.unwrap();
            while s.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
        });
        addr
    }

    fn streamed(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> Body {
        let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        Body::boxed(http_body_util::StreamBody::new(frames))
    }

    #[tokio::test]
    async fn an_early_answer_stands_when_the_rest_of_the_request_body_fails() {
        use http_body_util::BodyExt;
        let addr = early_answer(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\nlog in").await;
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first part"))))
            .await
            .unwrap();
        let (parts, ()) = Request::post("/upload").body(()).unwrap().into_parts();
        let Ok(resp) = conn.send(&parts, std::iter::empty(), streamed(rx), false).await else {
            panic!("the answer came before the body ended");
        };
        assert_eq!(resp.status(), 401);
        // the client's body now fails (too large, too slow...): the answer is still whole
        tx.send(Err(std::io::Error::other("client went away"))).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"log in");
    }

    #[tokio::test]
    async fn a_request_body_longer_or_shorter_than_its_length_is_refused() {
        for (declared, sent) in [("3", &b"abcdef"[..]), ("10", &b"abc"[..])] {
            let addr = early_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(Ok(Frame::data(Bytes::copy_from_slice(sent)))).await.unwrap();
            drop(tx);
            let (parts, ()) = Request::post("/")
                .header("content-length", declared)
                .body(())
                .unwrap()
                .into_parts();
            match conn.send(&parts, std::iter::empty(), streamed(rx), false).await {
                Err(SendError {
                    error: Error::RequestBody(e),
                    ..
                }) => {
                    assert!(e.is::<BodyLengthMismatch>(), "{e}")
                }
                // the answer may win the race: then the connection must not be reused
                Ok(resp) => {
                    use http_body_util::BodyExt;
                    let mut body = resp.into_body();
                    while body.frame().await.is_some() {}
                    assert!(!body.reusable, "declared {declared}, sent {}", sent.len());
                }
                Err(e) => panic!("unexpected error: {}", e.error),
            }
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop_but_a_101_keeps_them() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                   X-Hop: 1\r\nUpgrade: h2c\r\nTrailer: x\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n";
        let (r, _, k) = head(raw, false).unwrap();
        let mut names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-end"]);
        assert!(k);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        );
        let Ok(Some(Parsed::Final(h))) = parse_head(&mut buf, false, true) else {
            panic!("a 101 to an upgrade request parses");
        };
        assert_eq!(h.resp.headers()["upgrade"], "websocket");
        assert_eq!(h.resp.headers()["connection"], "Upgrade");
        assert!(!h.keep_alive);
    }

    #[test]
    fn heads_encode_with_the_right_body_framing() {
        let enc = |method: Method, cl: Option<&'static str>, body: Body| {
            let mut req = Request::builder().method(method).uri("/a?b=1");
            if let Some(cl) = cl {
                req = req.header("content-length", cl);
            }
            let (parts, _) = req.body(()).unwrap().into_parts();
            let mut out = Vec::new();
            let framing = encode_head(&mut out, &parts, std::iter::empty(), &body);
            (String::from_utf8(out).unwrap(), framing)
        };
        let (h, f) = enc(Method::GET, None, Body::Empty);
        assert_eq!(h, "GET /a?b=1 HTTP/1.1\r\n\r\n");
        assert_eq!(f, None);
        let (h, _) = enc(Method::POST, None, Body::Empty);
        assert!(h.contains("content-length: 0\r\n"));
        let (h, f) = enc(Method::POST, None, Body::full("abc"));
        assert!(h.contains("content-length: 3\r\n"));
        assert_eq!(f, Some(BodyFraming::Length(3)));
        let (h, f) = enc(Method::POST, Some("3"), Body::full("abc"));
        assert_eq!(h.matches("content-length").count(), 1);
        assert_eq!(f, Some(BodyFraming::Length(3)));
        let stream = Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(vec![Ok::<
            _,
            std::io::Error,
        >(
            Frame::data(Bytes::from_static(b"x")),
        )])));
        let (h, f) = enc(Method::POST, None, stream);
        assert!(h.contains("transfer-encoding: chunked\r\n"));
        assert_eq!(f, Some(BodyFraming::Chunked));
    }
}

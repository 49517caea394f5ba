//! Response compression: negotiates brotli or gzip from `Accept-Encoding` (q-values, then the
//! configured preference order), decides what is worth compressing (`types`, `min_size`, not
//! already encoded, not 206/304/HEAD), compresses streamed bodies as they flow (proxied
//! responses, large files) and whole buffers once (cached files).
//!
//! Streamed gzip is deflate (flate2, on zlib-rs) framed here, with deflate states reused per
//! thread: a new state is several hundred KiB allocated and zeroed, which cost more than
//! compressing a typical 20 KB JSON answer. Streamed brotli goes through async-compression.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::BrotliEncoder;
use bytes::Bytes;
use flate2::{Compress, Crc, FlushCompress, Status};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::config::{CompressionSettings, Encoding};
use crate::proto::BoxError;
use crate::proto::body::Body;

impl CompressionSettings {
    /// True when responses of this `Content-Type` are worth compressing.
    pub fn compressible(&self, content_type: Option<&HeaderValue>) -> bool {
        if self.algorithms.is_empty() {
            return false;
        }
        let Some(ct) = content_type else {
            return false;
        };
        // bytes, not str: asked once per response, and char searches cost more than the answer
        let ct = ct.as_bytes();
        let mime = ct[..memchr::memchr(b';', ct).unwrap_or(ct.len())].trim_ascii();
        // streams that must reach the client as they are produced
        if mime.eq_ignore_ascii_case(b"text/event-stream") {
            return false;
        }
        let top = &mime[..memchr::memchr(b'/', mime).unwrap_or(0)];
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(prefix) => !top.is_empty() && top.eq_ignore_ascii_case(prefix.as_bytes()),
            None => mime.eq_ignore_ascii_case(t.as_bytes()),
        })
    }

    /// The encoding to use for a request's `Accept-Encoding`: the highest q-value wins, ties go
    /// to the configured order; `None` means identity.
    pub fn negotiate(&self, accept_encoding: Option<&HeaderValue>) -> Option<Encoding> {
        let accept = accept_encoding?.to_str().ok()?;
        let mut best: Option<(u16, usize, Encoding)> = None;
        for (rank, enc) in self.algorithms.iter().enumerate() {
            let q = q_value(accept, enc.token());
            if q == 0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((bq, _, _)) => q > bq,
            };
            if better {
                best = Some((q, rank, *enc));
            }
        }
        best.map(|(_, _, e)| e)
    }
}

/// The q-value (0-1000) `accept` gives `token`, through `*` when not named; 0 when absent.
fn q_value(accept: &str, token: &str) -> u16 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| parse_q(v.trim()))
            })
            .unwrap_or(1000);
        if name.eq_ignore_ascii_case(token) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

fn parse_q(v: &str) -> u16 {
    let f: f32 = v.parse().unwrap_or(0.0);
    (f.clamp(0.0, 1.0) * 1000.0).round() as u16
}

/// Appends `Accept-Encoding` to `Vary` unless it is already there.
pub fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Compresses a response on the fly when the request accepts it and it is worth it; sets
/// `Content-Encoding`, drops `Content-Length` and any strong ETag's strength, adds `Vary`.
pub fn compress_response(
    settings: &CompressionSettings,
    method: &Method,
    accept_encoding: Option<&HeaderValue>,
    resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status();
    let headers = resp.headers();
    if !settings.compressible(headers.get(header::CONTENT_TYPE)) {
        return resp;
    }
    if headers.contains_key(header::CONTENT_ENCODING) || headers.contains_key(header::CONTENT_RANGE) {
        return resp;
    }
    let mut resp = resp;
    add_vary(resp.headers_mut());
    if status != StatusCode::OK || *method == Method::HEAD {
        return resp;
    }
    if let Some(len) = resp.body().size_hint().exact() {
        if len < settings.min_size {
            return resp;
        }
    } else if let Some(len) = content_length(resp.headers())
        && len < settings.min_size
    {
        return resp;
    }
    // Cache-Control: no-transform forbids changing the representation
    if resp
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    {
        return resp;
    }
    let Some(enc) = settings.negotiate(accept_encoding) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_ENCODING, enc.header_value());
    weaken_etag(&mut parts.headers);
    Response::from_parts(parts, Body::boxed(CompressedBody::new(body, enc)))
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A compressed body is another representation: a strong ETag of the original would lie.
fn weaken_etag(h: &mut HeaderMap) {
    if let Some(tag) = h.get(header::ETAG)
        && !tag.as_bytes().starts_with(b"W/")
    {
        let mut v = b"W/".to_vec();
        v.extend_from_slice(tag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&v) {
            h.insert(header::ETAG, weak);
        }
    }
}

/// How hard a whole buffer is worth compressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Kept until the file changes: the best levels.
    Once,
    /// Kept for a cached response's lifetime (seconds to minutes): middle levels.
    Churn,
}

/// Compresses a whole buffer (cached files and responses: done once per object, off the async
/// workers). Returns `None` when the result would not be smaller.
pub fn compress_bytes(data: &[u8], enc: Encoding, effort: Effort) -> Option<Bytes> {
    let out = match enc {
        Encoding::Gzip => {
            let level = match effort {
                Effort::Once => flate2::Compression::best(),
                Effort::Churn => flate2::Compression::new(6),
            };
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), level);
            e.write_all(data).ok()?;
            e.finish().ok()?
        }
        Encoding::Brotli => {
            // quality 11 is slow on large inputs
            let quality = match effort {
                Effort::Once if data.len() <= 1 << 20 => 11,
                Effort::Once => 7,
                Effort::Churn => 5,
            };
            let mut out = Vec::with_capacity(data.len() / 3);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 16 * 1024, quality, 22);
                w.write_all(data).ok()?;
                w.flush().ok()?;
            }
            out
        }
    };
    (out.len() < data.len()).then(|| Bytes::from(out))
}

/// Our body as a stream of data chunks, for the streaming encoders.
struct DataStream(Body);

impl futures_util::Stream for DataStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            return match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) if d.is_empty() => continue,
                    Ok(d) => Poll::Ready(Some(Ok(d))),
                    // trailers: dropped, the compressed body ends with the data
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// Deflate states kept per thread for the next response.
const POOLED_DEFLATERS: usize = 4;
/// On-the-fly gzip level: 1, like nginx's default.
const GZIP_LEVEL: u32 = 1;
/// A gzip member header: deflate, no name or time, "fastest" flag, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0x04, 0xff];

thread_local! {
    static DEFLATERS: std::cell::RefCell<Vec<Compress>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_deflater() -> Compress {
    DEFLATERS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Compress::new(flate2::Compression::new(GZIP_LEVEL), false))
}

fn give_back(mut d: Compress) {
    d.reset();
    DEFLATERS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_DEFLATERS {
            p.push(d);
        }
    });
}

/// A body gzipped as it streams. What the deflater holds is flushed whenever the source has
/// nothing more for now, so a slow upstream's bytes reach the client without waiting.
struct GzipStream {
    body: Body,
    deflate: Option<Compress>,
    crc: Crc,
    header_sent: bool,
    /// Input fed since the last flush.
    unflushed: bool,
    finished: bool,
}

impl GzipStream {
    fn new(body: Body) -> Self {
        Self {
            body,
            deflate: None,
            crc: Crc::new(),
            header_sent: false,
            unflushed: false,
            finished: false,
        }
    }

    /// Runs `input` through the deflater into `out` with `flush`, growing `out` as needed.
    fn deflate(&mut self, mut input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) -> io::Result<()> {
        let d = self.deflate.get_or_insert_with(take_deflater);
        loop {
            out.reserve(input.len() / 2 + 256);
            let (in_before, out_before) = (d.total_in(), out.len());
            let status = d.compress_vec(input, out, flush).map_err(io::Error::other)?;
            input = &input[(d.total_in() - in_before) as usize..];
            let room_left = out.len() < out.capacity();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                FlushCompress::None => input.is_empty(),
                _ => input.is_empty() && room_left,
            };
            if done {
                return Ok(());
            }
            if status == Status::BufError && out.len() == out_before && room_left {
                return Err(io::Error::other("deflate made no progress"));
            }
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        if !self.header_sent {
            out.extend_from_slice(&GZIP_HEADER);
            self.header_sent = true;
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // trailers are dropped: the compressed body ends with the data
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    self.crc.update(&data);
                    self.deflate(&data, FlushCompress::None, &mut out)?;
                    self.unflushed = true;
                    if out.len() >= 16 * 1024 {
                        return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.deflate(&[], FlushCompress::Finish, &mut out)?;
                    out.extend_from_slice(&self.crc.sum().to_le_bytes());
                    out.extend_from_slice(&self.crc.amount().to_le_bytes());
                    self.finished = true;
                    if let Some(d) = self.deflate.take() {
                        give_back(d);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
                Poll::Pending => {
                    if self.unflushed {
                        self.deflate(&[], FlushCompress::Sync, &mut out)?;
                        self.unflushed = false;
                    }
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
            }
        }
    }
}

impl Drop for GzipStream {
    fn drop(&mut self) {
        if let Some(d) = self.deflate.take() {
            give_back(d);
        }
    }
}

enum Encoder {
    Gzip(Box<GzipStream>),
    // the brotli encoder's state is several KiB
    Brotli(Box<ReaderStream<BrotliEncoder<StreamReader<DataStream, Bytes>>>>),
}

/// A body compressed as it streams: nothing is buffered beyond the encoder's window.
pub struct CompressedBody {
    inner: Encoder,
}

impl CompressedBody {
    pub fn new(body: Body, enc: Encoding) -> Self {
        const CHUNK: usize = 16 * 1024;
        let inner = match enc {
            // on the fly: fast levels (gzip 1 like nginx's default, brotli 4 beats gzip 6)
            Encoding::Gzip => Encoder::Gzip(Box::new(GzipStream::new(body))),
            Encoding::Brotli => Encoder::Brotli(Box::new(ReaderStream::with_capacity(
                BrotliEncoder::with_quality(StreamReader::new(DataStream(body)), Level::Precise(4)),
                CHUNK,
            ))),
        };
        Self { inner }
    }
}

impl HttpBody for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use futures_util::Stream;
        let next = match &mut self.inner {
            Encoder::Gzip(s) => return s.poll_frame(cx),
            Encoder::Brotli(s) => Pin::new(&mut **s).poll_next(cx),
        };
        match next {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn negotiation_follows_q_values_then_preference() {
        let s = CompressionSettings::default();
        assert_eq!(s.negotiate(Some(&hv("gzip, deflate, br"))), Some(Encoding::Brotli));
        assert_eq!(s.negotiate(Some(&hv("gzip"))), Some(Encoding::Gzip));
        assert_eq!(s.negotiate(Some(&hv("br;q=0, gzip"))), Some(Encoding::Gzip));
        assert_eq!(s.negotiate(Some(&hv("br;q=0.5, gzip;q=0.8"))), Some(Encoding::Gzip));
        assert_eq!(s.negotiate(Some(&hv("*"))), Some(Encoding::Brotli));
        assert_eq!(s.negotiate(Some(&hv("*;q=0, identity"))), None);
        assert_eq!(s.negotiate(Some(&hv("br;q=0"))), None);
        assert_eq!(s.negotiate(Some(&hv("identity"))), None);
        assert_eq!(s.negotiate(None), None);
        let gzip_first = CompressionSettings {
            algorithms: vec![Encoding::Gzip, Encoding::Brotli],
            ..CompressionSettings::default()
        };
        assert_eq!(gzip_first.negotiate(Some(&hv("br, gzip"))), Some(Encoding::Gzip));
        let off = CompressionSettings {
            algorithms: vec![],
            ..CompressionSettings::default()
        };
        assert_eq!(off.negotiate(Some(&hv("br, gzip"))), None);
    }

    #[test]
    fn compressible_types() {
        let s = CompressionSettings::default();
        assert!(s.compressible(Some(&hv("text/html; charset=utf-8"))));
        assert!(s.compressible(Some(&hv("application/json"))));
        assert!(s.compressible(Some(&hv("image/svg+xml"))));
        assert!(!s.compressible(Some(&hv("image/jpeg"))));
        assert!(!s.compressible(Some(&hv("text/event-stream"))));
        assert!(!s.compressible(None));
    }

    /// A body of `chunks`, each on its own poll, with a pending poll between two chunks.
    struct Trickle {
        chunks: std::collections::VecDeque<Bytes>,
        ready: bool,
    }

    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.ready = !self.ready;
            if self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    async fn gzip_stream(chunks: &[Bytes]) -> Vec<u8> {
        use http_body_util::BodyExt;
        let body = Body::boxed(Trickle {
            chunks: chunks.iter().cloned().collect(),
            ready: false,
        });
        let out = CompressedBody::new(body, Encoding::Gzip)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut plain).unwrap();
        plain
    }

    #[tokio::test]
    async fn streamed_gzip_round_trips_with_reused_deflaters() {
        let chunks: Vec<Bytes> = (0..50)
            .map(|i| Bytes::from(format!("{{\"id\":{i},\"name\":\"dress {}\"}},", i * 7919 % 1000).repeat(40)))
            .collect();
        let whole: Vec<u8> = chunks.concat();
        // the second and third bodies reuse the first one's deflate state (same thread)
        for _ in 0..3 {
            assert_eq!(gzip_stream(&chunks).await, whole);
        }
        assert!(
            DEFLATERS.with(|p| !p.borrow().is_empty()),
            "the state went back to the pool"
        );
        // empty and one-byte bodies are valid gzip too
        assert_eq!(gzip_stream(&[]).await, b"");
        assert_eq!(gzip_stream(&[Bytes::from_static(b"x")]).await, b"x");
    }

    #[test]
    fn whole_buffers_round_trip() {
        use std::io::Read;
        let data = "orta novias ".repeat(500).into_bytes();
        let gz = compress_bytes(&data, Encoding::Gzip, Effort::Once).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        let br = compress_bytes(&data, Encoding::Brotli, Effort::Once).unwrap();
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        // random bytes don't shrink
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert!(compress_bytes(&noise, Encoding::Gzip, Effort::Churn).is_none());
    }
}

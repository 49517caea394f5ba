//! The HTTP/3 adapter: a request's body, read from its QUIC stream, as a body of the gateway
//! (so the pipeline is the same for every protocol), and the response fields HTTP/3 forbids.
//! The declared `Content-Length`, when there is one, must be what arrives: a body longer or
//! shorter than it is malformed (RFC 9114 §4.1.2) and fails, never reaches an upstream whole.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::proto::BoxError;

/// The receiving half of an HTTP/3 request stream.
pub type RecvStream = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request body arriving on an HTTP/3 stream.
pub struct H3Body {
    stream: RecvStream,
    /// A chunk read before the body was handed over (to tell an empty body from one to come).
    first: Option<Bytes>,
    /// Bytes still due, when the request declared its length.
    remaining: Option<u64>,
    done: bool,
}

/// The body does not have the length the request declared.
#[derive(Debug, thiserror::Error)]
#[error("the request body does not match its Content-Length")]
pub struct LengthMismatch;

impl H3Body {
    /// The body of a request with these fields, `first` its first chunk if it was read already;
    /// `None` when its `Content-Length` is invalid (several different values, or not a number).
    pub fn new(stream: RecvStream, fields: &HeaderMap, first: Option<Bytes>) -> Option<Self> {
        let mut lengths = crate::proto::h1::fields::Lengths::default();
        for v in fields.get_all(header::CONTENT_LENGTH) {
            lengths.add(v.as_bytes()).ok()?;
        }
        Some(Self {
            stream,
            first,
            remaining: lengths.value,
            done: false,
        })
    }

    /// Counts `data` against the declared length.
    fn count(&mut self, data: &Bytes) -> Result<(), LengthMismatch> {
        if let Some(left) = &mut self.remaining {
            let n = data.len() as u64;
            if n > *left {
                self.done = true;
                return Err(LengthMismatch);
            }
            *left -= n;
        }
        Ok(())
    }
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.first.take() {
            Some(data) => Poll::Ready(Ok(Some(data))),
            None => self
                .stream
                .poll_recv_data(cx)
                .map_ok(|chunk| chunk.map(|mut c| c.copy_to_bytes(c.remaining()))),
        };
        match next {
            Poll::Ready(Ok(Some(data))) => match self.count(&data) {
                Ok(()) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
            },
            Poll::Ready(Ok(None)) => {
                self.done = true;
                if self.remaining.is_some_and(|left| left > 0) {
                    return Poll::Ready(Some(Err(Box::new(LengthMismatch))));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.done || self.remaining == Some(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H3Body {
    fn drop(&mut self) {
        if !self.done {
            // answered without the rest of the body: the client may stop sending it, no error
            // (RFC 9114 §4.1)
            self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

/// Removes the fields HTTP/3 forbids in a message (RFC 9114 §4.2): the hop-by-hop ones, those
/// `Connection` names, and `Upgrade` (the HTTP/1.1 codec's one pass over the names).
pub fn strip_connection_fields(h: &mut HeaderMap) {
    crate::proto::h1::fields::strip_hop_by_hop(h, |name| name == "upgrade");
}

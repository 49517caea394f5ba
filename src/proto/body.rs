//! The one body type that flows through the gateway, both ways: empty, a buffer (`Bytes`, so
//! cached bodies are shared, not copied), a client's incoming stream capped at `max_body_size`,
//! an upstream response that returns its connection to the pool at its end, or anything else
//! boxed. An enum rather than a boxed trait object, so the common cases cost no allocation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::proto::BoxError;
use crate::proto::h1::body::BodyLengthMismatch;
use crate::proto::h1::upstream::RecvBody;

#[derive(Default)]
pub enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    /// A client's request body, failing with [`BodyTooLarge`] past the size limit and with
    /// [`BodyTimeout`] when the client pauses too long between chunks (slow-POST attacks).
    Limited(Box<Limited>),
    Upstream(RecvBody<Body>),
    Boxed(BoxBody<Bytes, BoxError>),
}

/// A client's request body: from hyper (HTTP/2), from the gateway's own HTTP/1.1 server, or
/// from an HTTP/3 stream.
pub enum ReqBody {
    Empty,
    Hyper(Incoming),
    H1(crate::proto::h1::server::RequestBody),
    H3(Box<crate::proto::h3::H3Body>),
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::H1(b) => Pin::new(b).poll_frame(cx),
            ReqBody::H3(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::H1(b) => b.is_end_stream(),
            ReqBody::H3(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::H1(b) => b.size_hint(),
            ReqBody::H3(b) => b.size_hint(),
        }
    }
}

pub struct Limited {
    inner: ReqBody,
    remaining: u64,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

/// The client paused longer than `server.body_read_timeout` while sending its body.
#[derive(Debug, thiserror::Error)]
#[error("request body read timed out")]
pub struct BodyTimeout;

/// The request body grew past `server.max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_size")]
pub struct BodyTooLarge;

impl Body {
    pub fn empty() -> Self {
        Body::Empty
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        if b.is_empty() { Body::Empty } else { Body::Full(Some(b)) }
    }

    pub fn limited(inner: ReqBody, max: u64, timeout: Duration) -> Self {
        Body::Limited(Box::new(Limited {
            inner,
            remaining: max,
            timeout,
            sleep: None,
            armed: false,
        }))
    }

    pub fn boxed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed(body.map_err(Into::into).boxed())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Limited(l) => l.poll(cx),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Limited(l) => l.inner.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Limited(l) => l.inner.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

impl Limited {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.armed = false;
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(BodyBroken(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // the client owes us bytes: it has `timeout` to send the next ones
                let timeout = self.timeout;
                let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !self.armed {
                    sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
                    self.armed = true;
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// The client's request body could not be read (bad chunked encoding, connection lost).
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct BodyBroken(#[source] BoxError);

/// Why a client's request body failed, when it was the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyError {
    TooLarge,
    Timeout,
    Broken,
}

/// Finds a [`BodyTooLarge`], [`BodyTimeout`], [`BodyBroken`] or [`BodyLengthMismatch`] in
/// `err`'s source chain.
pub fn client_body_error(err: &(dyn std::error::Error + 'static)) -> Option<ClientBodyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<BodyTooLarge>() {
            return Some(ClientBodyError::TooLarge);
        }
        if e.is::<BodyTimeout>() {
            return Some(ClientBodyError::Timeout);
        }
        if e.is::<BodyBroken>() || e.is::<BodyLengthMismatch>() || e.is::<crate::proto::h3::LengthMismatch>() {
            return Some(ClientBodyError::Broken);
        }
        cur = e.source();
    }
    None
}

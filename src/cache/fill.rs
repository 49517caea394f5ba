//! Filling the cache from an upstream response as it streams to the client: the body passes
//! through untouched and is copied aside until it ends (then stored) or turns out larger than
//! the zone's `max_object_size`, fails or is dropped (then abandoned, never buffered further).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::policy::Freshness;
use super::store::{FillGuard, Object, RouteCache};
use crate::proto::BoxError;
use crate::proto::body::Body;

/// What is stored when the body has arrived whole.
pub struct Pending {
    pub route: Arc<RouteCache>,
    pub primary: String,
    /// The request's headers, for the variant key.
    pub request: HeaderMap,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub vary: Vec<HeaderName>,
    pub fresh: Freshness,
    /// Held until the object is stored or abandoned (`None` for a background refresh).
    pub guard: Option<FillGuard>,
    /// The zone's purge generation when the request went upstream.
    pub since: u64,
}

/// A response body copied into the cache as it flows.
pub struct Filling {
    inner: Body,
    buf: BytesMut,
    limit: usize,
    pending: Option<Pending>,
}

impl Filling {
    pub fn new(inner: Body, pending: Pending) -> Self {
        let limit = pending.route.zone.spec.max_object_size as usize;
        let expected = inner.size_hint().exact().unwrap_or(0) as usize;
        let mut filling = Self {
            inner,
            buf: BytesMut::with_capacity(expected.min(limit)),
            limit,
            pending: Some(pending),
        };
        if filling.inner.is_end_stream() {
            // no body to wait for (204, an empty 200): stored at once
            filling.store();
        }
        filling
    }

    fn abandon(&mut self) {
        self.pending = None;
        self.buf = BytesMut::new();
    }

    fn store(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let body: Bytes = std::mem::take(&mut self.buf).freeze();
        let object = Object::new(p.status, p.headers, body, p.fresh, &p.route.spec);
        p.route
            .zone
            .store(&p.primary, p.vary, &p.request, Arc::new(object), p.since);
        // the guard goes last: the waiters it wakes find the object
        drop(p.guard);
    }
}

impl HttpBody for Filling {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.pending.is_some()
                {
                    if this.buf.len() + data.len() > this.limit {
                        this.abandon();
                    } else {
                        this.buf.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.store();
                }
            }
            Poll::Ready(None) => this.store(),
            Poll::Ready(Some(Err(_))) => this.abandon(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Filling the cache from an upstream response. The upstream's body is read by a task of its
//! own, at the upstream's pace, not at the first client's: while the object is being kept
//! (up to the zone's `max_object_size`) every chunk is copied aside and queued for the client
//! at once, so a slow or stalled client neither holds the fill (and every request waiting for
//! it) nor loses it by leaving; the queue then holds no more than the object itself. Past
//! `max_object_size`, or once the object is stored, the body flows to the client with
//! back-pressure (a small window), and nobody left to read it ends the read. What fills in
//! progress hold together (copies aside and queued) is at most the zone's `max_size`: past it,
//! a fill stops keeping and streams through with back-pressure. A body that fails
//! or pauses longer than the upstream's `read_timeout` is abandoned, and the client's response
//! fails with it rather than end as if complete.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{Notify, mpsc};

use super::policy::Freshness;
use super::store::{FillGuard, Object, RouteCache, Zone};
use crate::proto::BoxError;
use crate::proto::body::Body;

/// Bytes queued for the client at most once nothing more is being kept.
const WINDOW: usize = 256 * 1024;

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
    /// The longest pause between two chunks of the upstream's body.
    pub read_timeout: Duration,
}

/// The upstream body aside: its bytes so far, while the object may still be kept.
struct Keeping {
    zone: Arc<Zone>,
    buf: BytesMut,
    limit: usize,
    pending: Option<Pending>,
}

impl Keeping {
    fn active(&self) -> bool {
        self.pending.is_some()
    }

    /// Copies a chunk aside; true when it is kept, with as many bytes reserved again for its
    /// copy queued for the client (released as the client takes it). Past `max_object_size`,
    /// or past the zone's room for fills in progress, the object is abandoned.
    fn take(&mut self, data: &[u8]) -> bool {
        if self.pending.is_none() {
            return false;
        }
        let n = data.len() as u64;
        if self.buf.len() + data.len() > self.limit || !self.zone.reserve(2 * n) {
            self.abandon();
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    fn abandon(&mut self) {
        self.pending = None;
        self.zone.release(self.buf.len() as u64);
        self.buf = BytesMut::new();
    }

    fn store(&mut self) {
        let Some(p) = self.pending.take() else { return };
        self.zone.release(self.buf.len() as u64);
        let body: Bytes = std::mem::take(&mut self.buf).freeze();
        let object = Object::new(p.status, p.headers, body, p.fresh, &p.route.spec);
        p.route
            .zone
            .store(&p.primary, p.vary, &p.request, Arc::new(object), p.since);
        // the guard goes last: the waiters it wakes find the object
        drop(p.guard);
    }
}

enum Msg {
    /// A chunk, and whether bytes of the zone's room for fills are reserved for it.
    Data(Bytes, bool),
    Failed(BoxError),
    End,
}

/// Bytes queued for the client, and a wake-up for the reader of the upstream when it takes some.
#[derive(Default)]
struct Queued {
    bytes: AtomicUsize,
    taken: Notify,
}

/// Starts reading `inner` (the upstream's body) into the cache; the returned body is what the
/// client receives. Dropping it is fine: the object is still kept if it may be.
pub fn fill(inner: Body, pending: Pending) -> Body {
    let size = inner.size_hint();
    let limit = pending.route.zone.spec.max_object_size as usize;
    let expected = size.exact().unwrap_or(0) as usize;
    let read_timeout = pending.read_timeout;
    let zone = pending.route.zone.clone();
    let keeping = Keeping {
        zone: zone.clone(),
        buf: BytesMut::with_capacity(expected.min(limit)),
        limit,
        pending: Some(pending),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    tokio::spawn(read(inner, keeping, tx, queued.clone(), read_timeout));
    Body::boxed(ClientBody {
        rx,
        zone,
        queued,
        remaining: size.exact(),
        ended: false,
    })
}

/// Reads the upstream's body to its end (or until nobody wants it), keeping it and queueing it
/// for the client.
async fn read(
    mut inner: Body,
    mut keeping: Keeping,
    tx: mpsc::UnboundedSender<Msg>,
    queued: Arc<Queued>,
    read_timeout: Duration,
) {
    loop {
        if inner.is_end_stream() {
            keeping.store();
            let _ = tx.send(Msg::End);
            return;
        }
        if !keeping.active() {
            if tx.is_closed() {
                // nobody reads it and nothing is kept: the rest need not be read
                return;
            }
            // the client's pace from here on
            while queued.bytes.load(SeqCst) > WINDOW && !tx.is_closed() {
                let taken = queued.taken.notified();
                if queued.bytes.load(SeqCst) <= WINDOW {
                    break;
                }
                tokio::select! {
                    _ = taken => {}
                    _ = tx.closed() => {}
                }
            }
        }
        match tokio::time::timeout(read_timeout, inner.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let reserved = keeping.take(&data);
                    let n = data.len();
                    queued.bytes.fetch_add(n, SeqCst);
                    if tx.send(Msg::Data(data, reserved)).is_err() {
                        queued.bytes.fetch_sub(n, SeqCst);
                        if reserved {
                            keeping.zone.release(n as u64);
                        }
                    }
                }
            }
            Ok(None) => {
                keeping.store();
                let _ = tx.send(Msg::End);
                return;
            }
            Ok(Some(Err(e))) => {
                keeping.abandon();
                let _ = tx.send(Msg::Failed(e));
                return;
            }
            Err(_) => {
                keeping.abandon();
                let _ = tx.send(Msg::Failed("the upstream paused its body past read_timeout".into()));
                return;
            }
        }
    }
}

/// The body the client receives: the chunks the reader queued.
struct ClientBody {
    rx: mpsc::UnboundedReceiver<Msg>,
    zone: Arc<Zone>,
    queued: Arc<Queued>,
    /// Bytes still to come, when the upstream said.
    remaining: Option<u64>,
    ended: bool,
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Data(data, reserved))) => {
                self.queued.bytes.fetch_sub(data.len(), SeqCst);
                if reserved {
                    self.zone.release(data.len() as u64);
                }
                self.queued.taken.notify_one();
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Msg::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Msg::Failed(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            // the reader is gone without saying the body ended: it did not end
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err("the upstream body was cut short".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // what the client never took gives its room back (later sends fail, and the reader
        // gives theirs back itself)
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Data(data, true) = msg {
                self.zone.release(data.len() as u64);
            }
        }
        self.queued.taken.notify_one();
    }
}

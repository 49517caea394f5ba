//! The life of a client connection, whatever its protocol: the request head must arrive within
//! the header timeout (counted from the connection's start, or from the first byte of a later
//! request), an idle keep-alive connection closes after the keep-alive timeout, and a graceful
//! shutdown lets the connection finish what it is doing (HTTP/1.1: the response in progress, or
//! one more request on an idle connection; HTTP/2: GOAWAY) before it closes.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A connection that can be asked to finish its requests and close.
pub trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

const IDLE: u8 = 0;
const READING_HEAD: u8 = 1;
const ACTIVE: u8 = 2;
const NO_DEADLINE: u64 = u64::MAX;

/// Where a connection is in its life, and when it must have moved on.
pub struct Timers {
    born: Instant,
    phase: AtomicU8,
    inflight: AtomicU32,
    /// Milliseconds since `born`.
    deadline_ms: AtomicU64,
    header_ms: u64,
    keepalive_ms: u64,
}

impl Timers {
    pub fn new(header: Duration, keepalive: Duration) -> Self {
        let t = Self {
            born: Instant::now(),
            phase: AtomicU8::new(READING_HEAD),
            inflight: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(NO_DEADLINE),
            header_ms: header.as_millis() as u64,
            keepalive_ms: keepalive.as_millis() as u64,
        };
        t.deadline_ms.store(t.header_ms, Relaxed);
        t
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    pub fn request_started(&self) {
        self.inflight.fetch_add(1, Relaxed);
        self.phase.store(ACTIVE, Relaxed);
        self.deadline_ms.store(NO_DEADLINE, Relaxed);
    }

    pub fn request_finished(&self) {
        if self.inflight.fetch_sub(1, Relaxed) == 1 {
            self.phase.store(IDLE, Relaxed);
            self.deadline_ms.store(self.now_ms() + self.keepalive_ms, Relaxed);
        }
    }

    /// Bytes arrived on an HTTP/1.1 connection: when idle, that is the start of the next
    /// request head.
    pub fn bytes_read(&self) {
        if self.phase.load(Relaxed) == IDLE
            && self
                .phase
                .compare_exchange(IDLE, READING_HEAD, Relaxed, Relaxed)
                .is_ok()
        {
            self.deadline_ms.store(self.now_ms() + self.header_ms, Relaxed);
        }
    }

    /// `None` when the deadline has passed, else when to look again.
    ///
    /// Requests move the deadline without waking the driver (that would cost a poll of the
    /// connection per request). Instead the driver never sleeps longer than the shortest
    /// timeout: a deadline set at time t is never earlier than t + that period, and the driver
    /// last armed its timer no later than t, so it always wakes in time to see it.
    fn next_check(&self) -> Option<Instant> {
        let now = self.now_ms();
        let period = self.header_ms.min(self.keepalive_ms).max(1);
        let deadline = self.deadline_ms.load(Relaxed);
        if deadline != NO_DEADLINE && now >= deadline && self.phase.load(Relaxed) != ACTIVE {
            return None;
        }
        let at = deadline.min(now + period).max(now + 1);
        Some(self.born + Duration::from_millis(at))
    }
}

/// On shutdown, how long an idle HTTP/1.1 connection is kept for one more request (answered
/// with `Connection: close`), so a client that is about to reuse it is not cut off mid-send.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Runs a connection until it ends, its deadline passes, or the gateway shuts down.
///
/// Polled on every wake-up of the connection (each request wakes it at least once), so the
/// timer and the shutdown signal are polled only when they may have fired: both stay
/// registered with the task between polls, and whether they fired is read from their state
/// (no clock read, no lock) before they are polled again.
pub async fn drive<C: Graceful>(conn: C, timers: &Timers, h2: bool, shutdown: watch::Receiver<bool>) {
    let mut conn = pin!(conn);
    let first = timers.next_check().unwrap_or_else(Instant::now);
    let mut sleep = pin!(tokio::time::sleep_until(first));
    let mut sleep_registered = false;
    // set once the gateway shuts down: when to stop waiting for one more request
    let mut draining_until: Option<Instant> = None;
    let mut closing = false;
    let probe = shutdown.clone();
    let mut changed_registered = false;
    let mut shutdown = shutdown;
    let mut stopping = *shutdown.borrow_and_update();
    let mut changed = pin!(shutdown.changed());
    poll_fn(|cx| {
        loop {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            // registered by the poll that found nothing: polled again once it may be ready
            if !stopping && (!changed_registered || probe.has_changed().unwrap_or(true)) {
                changed_registered = true;
                stopping = changed.as_mut().poll(cx).is_ready();
            }
            if stopping && !closing && draining_until.is_none() {
                match begin_drain(h2, timers, sleep.as_mut(), conn.as_mut()) {
                    Some(t) => {
                        draining_until = Some(t);
                        sleep_registered = false;
                    }
                    None => closing = true,
                }
                continue;
            }
            if closing || (sleep_registered && !sleep.is_elapsed()) {
                return Poll::Pending;
            }
            sleep_registered = true;
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            sleep_registered = false;
            if draining_until.is_some_and(|t| Instant::now() >= t) {
                conn.as_mut().graceful_shutdown();
                closing = true;
                continue;
            }
            match timers.next_check() {
                Some(at) => sleep.as_mut().reset(draining_until.map_or(at, |t| t.min(at))),
                // HTTP/1.1: idle, or too slow with a request head: just close
                None if !h2 => return Poll::Ready(()),
                None => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    })
    .await
}

/// Starts closing a connection at shutdown: HTTP/2 sends GOAWAY and a busy HTTP/1.1 connection
/// closes after its response (`None`); an idle HTTP/1.1 connection waits `DRAIN_IDLE` for one
/// more request (returns when to give up).
fn begin_drain<C: Graceful>(
    h2: bool,
    timers: &Timers,
    sleep: Pin<&mut tokio::time::Sleep>,
    conn: Pin<&mut C>,
) -> Option<Instant> {
    if h2 || timers.phase.load(Relaxed) != IDLE {
        conn.graceful_shutdown();
        None
    } else {
        let until = Instant::now() + DRAIN_IDLE;
        sleep.reset(until);
        Some(until)
    }
}

//! The rate-limit batcher's own connection to Redis, driven inside the batcher's task: a batch
//! goes out and Redis's answer comes back to the waiting requests without passing through the
//! connection's own task on the way. On a busy single-threaded runtime every task in between is
//! a wait behind all the tasks ready before it. Plain TCP (`redis://`) only; over TLS, or while
//! this connection cannot be opened, the batcher uses the shared `ConnectionManager`.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, FromRedisValue, RedisResult, ScriptInvocation};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub(super) struct Direct {
    conn: MultiplexedConnection,
    /// Writes what `conn` is asked and reads the answers: polled only by [`Direct::invoke`].
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Direct {
    /// A connection of its own to `client`'s Redis, set up as the client's are (user,
    /// password, database): `Ok(None)` when that is not plain TCP.
    pub async fn open(client: &redis::Client) -> RedisResult<Option<Direct>> {
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Ok(None);
        };
        let stream = TcpStream::connect((host.as_str(), *port)).await?;
        stream.set_nodelay(true)?;
        // the batcher bounds every call itself
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let (conn, driver) = MultiplexedConnection::new_with_config(info.redis_settings(), stream, config).await?;
        Ok(Some(Direct {
            conn,
            driver: Box::pin(driver),
        }))
    }

    /// Runs `invocation`, driving the connection while it waits: the call first (it queues
    /// its command), then the driver (it writes the command, or reads an answer and hands it
    /// to the call), then the call again, all in one poll.
    pub async fn invoke<T: FromRedisValue>(&mut self, invocation: &ScriptInvocation<'_>) -> RedisResult<T> {
        let Direct { conn, driver } = self;
        let mut call = pin!(invocation.invoke_async(conn));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = call.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if driver.as_mut().poll(cx).is_ready() {
                // the connection ended (Redis closed it, or a read or write failed)
                let closed = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                return Poll::Ready(Err(closed.into()));
            }
            call.as_mut().poll(cx)
        })
        .await
    }
}

/// The batcher's [`Direct`] connection: open, being opened beside the batcher (no batch waits
/// for it), or to be tried again after a pause.
pub(super) struct Slot {
    open: Option<Direct>,
    opening: Option<JoinHandle<Option<Direct>>>,
    retry_at: Instant,
}

impl Slot {
    pub fn new() -> Self {
        Slot {
            open: None,
            opening: None,
            retry_at: Instant::now(),
        }
    }

    /// The connection when it is open; else starts opening one to `client` (bounded by
    /// `bound`) unless an attempt is under way or was made less than `pause` ago.
    pub fn get(&mut self, client: &redis::Client, pause: Duration, bound: Duration) -> Option<&mut Direct> {
        if self.open.is_none() {
            match self.opening.take() {
                Some(task) if task.is_finished() => {
                    self.open = task.now_or_never().and_then(Result::ok).flatten();
                }
                Some(task) => self.opening = Some(task),
                None if Instant::now() >= self.retry_at => {
                    self.retry_at = Instant::now() + pause;
                    let client = client.clone();
                    self.opening = Some(tokio::spawn(async move {
                        tokio::time::timeout(bound, Direct::open(&client)).await.ok()?.ok()?
                    }));
                }
                None => {}
            }
        }
        self.open.as_mut()
    }

    /// A call on it failed (closed, or slow): opened again later.
    pub fn close(&mut self) {
        self.open = None;
    }
}

//! The cluster's connection to Redis: one multiplexed connection that reconnects by itself
//! (redis `ConnectionManager`), every call bounded by a timeout, whether Redis answers (with one
//! log line per change), the heartbeat that lists the nodes seen, and the pub/sub listener that
//! turns the cluster's announcements into local events.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::direct::Slot;
use super::fallback::{Fallback, FallbackCounters};
use super::limit::{self, Ask, Batch};
use super::seal;
use crate::config::ClusterSettings;

/// How often this node says it is alive and checks that Redis answers.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is no longer listed.
const NODE_TTL: Duration = Duration::from_secs(10);
/// Rate-limit questions waiting for the batcher at most; past that, Redis is not keeping up and
/// requests are decided locally.
const ASKS_QUEUED: usize = 4096;
/// The bound on calls off the request path (heartbeat, ACME state).
pub(super) const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether Redis answers, in one atomic the request path reads: `UP`, `CONNECTING` (nothing
/// answered yet), or why it went down (`TIMEOUT`, `UNREACHABLE`).
const UP: u8 = 0;
const CONNECTING: u8 = 1;
const TIMEOUT: u8 = 2;
const UNREACHABLE: u8 = 3;

/// What `/status` shows of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub reachable: bool,
    /// Why Redis is not used, while it is not (`connecting`, `timeout`, `unreachable`).
    pub down: Option<&'static str>,
    /// Nodes seen within `NODE_TTL`, with seconds since each was last heard from.
    pub nodes: Vec<(String, f64)>,
    /// The ACME lock this node watches, and who holds it.
    pub acme_lock: Option<(String, Option<String>)>,
}

pub struct Cluster {
    pub settings: ClusterSettings,
    client: redis::Client,
    pub(super) conn: ConnectionManager,
    health: AtomicU8,
    /// The nodes seen and the watched lock (the heartbeat's findings).
    view: Mutex<ClusterView>,
    sealer: Option<seal::Sealer>,
    fallbacks: FallbackCounters,
    /// Rate-limit questions for the batcher (`limit`).
    asks: mpsc::Sender<Ask>,
    events: broadcast::Sender<String>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// What opening `[cluster].redis` found.
#[derive(Debug)]
pub enum ProbeError {
    /// Redis answered and refused (wrong password, unknown user, bad database): a config error.
    Refused(String),
    /// No answer (nothing listening, timeout): the gateway can still serve on local state.
    Unreachable(String),
}

impl ProbeError {
    /// The message, positioned at `redis` in the config file (`FILE:LINE:COL: `, then
    /// `warning: ` for an unreachable Redis, which does not stop the gateway).
    pub fn describe(&self, settings: &ClusterSettings) -> String {
        let (level, what, why) = match self {
            ProbeError::Refused(e) => ("", "refused the connection", e),
            ProbeError::Unreachable(e) => ("warning: ", "is unreachable", e),
        };
        format!(
            "{}: {level}[cluster] redis {} {what}: {why}",
            settings.redis_at,
            settings.redis_redacted()
        )
    }
}

/// Connects to `[cluster].redis` once and asks for PING: what `check` and startup report.
pub async fn probe(settings: &ClusterSettings) -> Result<(), ProbeError> {
    let client = redis::Client::open(settings.redis.as_str()).map_err(|e| ProbeError::Refused(e.to_string()))?;
    let classify = |e: redis::RedisError| match Fallback::of(&e) {
        Fallback::Error => ProbeError::Refused(e.to_string()),
        _ => ProbeError::Unreachable(e.to_string()),
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.map_err(classify)?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(classify)
    };
    match tokio::time::timeout(BACKGROUND_TIMEOUT, attempt).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(ProbeError::Unreachable(format!(
            "no answer within {}s",
            BACKGROUND_TIMEOUT.as_secs()
        ))),
    }
}

impl Cluster {
    /// Starts the connection (lazily: an absent Redis does not stop the start), the heartbeat
    /// and the pub/sub listener.
    pub fn start(settings: ClusterSettings, fallbacks: FallbackCounters) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(settings.redis.as_str()).map_err(|e| format!("[cluster] redis: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(BACKGROUND_TIMEOUT))
            // every call has its own bound (`call`): no second timer per command
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("[cluster] redis: {e}"))?;
        let sealer = settings.secret.as_ref().map(|s| seal::Sealer::new(&s.bytes));
        let (asks, questions) = mpsc::channel(ASKS_QUEUED);
        let cluster = Arc::new(Self {
            settings,
            client,
            conn,
            health: AtomicU8::new(CONNECTING),
            view: Mutex::default(),
            sealer,
            fallbacks,
            asks,
            events: broadcast::channel(64).0,
            tasks: Mutex::default(),
        });
        let weak = Arc::downgrade(&cluster);
        let heartbeat = tokio::spawn(heartbeat(weak.clone()));
        let listen = tokio::spawn(listen(weak.clone()));
        let batcher = tokio::spawn(decide(weak, questions));
        cluster
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([heartbeat, listen, batcher]);
        Ok(cluster)
    }

    /// A key under `key_prefix`: the parts joined by `:`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.key_prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    pub fn node(&self) -> &str {
        &self.settings.node_name
    }

    /// Whether the last call to Redis was answered.
    pub fn is_up(&self) -> bool {
        self.health.load(Relaxed) == UP
    }

    pub fn view(&self) -> ClusterView {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let health = self.health.load(Relaxed);
        v.reachable = health == UP;
        v.down = match health {
            UP => None,
            CONNECTING => Some("connecting"),
            _ => Some(self.down_reason().as_str()),
        };
        v
    }

    /// Announcements from any node (this one included): `cert DOMAINS` when a certificate
    /// changed, `resync` after the listener reconnected.
    pub fn events(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// The ACME lock `/status` shows (set by the ACME manager).
    pub fn watch_lock(&self, key: Option<String>) {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).acme_lock = key.map(|k| (k, None));
    }

    /// Redis answered: note it (and say so once when it comes back).
    fn mark_up(&self) {
        // a load only while it stays up: this runs on every answer
        if self.health.load(Relaxed) != UP && self.health.swap(UP, Relaxed) != UP {
            tracing::info!(redis = %self.settings.redis_redacted(), "cluster: Redis answers; cluster state is shared again");
        }
    }

    /// Redis failed: note why (and say so once when it goes).
    fn mark_down(&self, why: Fallback, detail: &str) {
        let state = if why == Fallback::Timeout { TIMEOUT } else { UNREACHABLE };
        if self.health.swap(state, Relaxed) == UP {
            tracing::warn!(
                redis = %self.settings.redis_redacted(),
                "cluster: Redis is not answering ({}: {detail}); cluster rate limits use this gateway's own buckets until it does",
                why.as_str()
            );
        }
    }

    /// Runs one call with `limit`, noting whether Redis answered.
    pub(super) async fn call<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Fallback> {
        match tokio::time::timeout(limit, f).await {
            Ok(Ok(v)) => {
                self.mark_up();
                Ok(v)
            }
            Ok(Err(e)) => {
                let why = Fallback::of(&e);
                if why == Fallback::Error {
                    // Redis answered: it is up, the command was wrong
                    tracing::warn!("cluster: Redis error: {e}");
                } else {
                    self.mark_down(why, &e.to_string());
                }
                Err(why)
            }
            Err(_) => {
                self.mark_down(Fallback::Timeout, &format!("no answer within {limit:?}"));
                Err(Fallback::Timeout)
            }
        }
    }

    /// A command off the request path (bounded by `BACKGROUND_TIMEOUT`).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Fallback> {
        let mut conn = self.conn.clone();
        self.call(BACKGROUND_TIMEOUT, cmd.query_async(&mut conn)).await
    }

    /// A command on the request path: bounded by `timeout`, and not sent while Redis is known
    /// to be down.
    pub async fn query_now<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Fallback> {
        self.answering()?;
        let mut conn = self.conn.clone();
        self.call(self.settings.timeout, cmd.query_async(&mut conn)).await
    }

    /// One request of `key` against a bucket refilled every `interval_us` holding
    /// `tolerance_us / interval_us + 1` requests: `Ok(0)` to go on, `Ok(wait_us)` when over
    /// the limit, `Err` when Redis did not answer within `timeout` (or is known to be down):
    /// the caller uses its local bucket. The batcher bounds each call to Redis by `timeout` and
    /// answers the requests waiting behind a call that timed out at once, so a request waits
    /// about `timeout` at most, with no timer of its own.
    pub async fn gcra(&self, key: String, interval_us: u64, tolerance_us: u64) -> Result<u64, Fallback> {
        self.answering()?;
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            key,
            interval_us,
            tolerance_us,
            reply,
        };
        if self.asks.try_send(ask).is_err() {
            return Err(Fallback::Timeout);
        }
        answer.await.unwrap_or(Err(Fallback::Unreachable))
    }

    /// Counts a request that used local state instead of Redis.
    pub fn count_fallback(&self, why: Fallback) {
        match why {
            Fallback::Timeout => self.fallbacks.timeout.inc(),
            Fallback::Unreachable => self.fallbacks.unreachable.inc(),
            Fallback::Error => self.fallbacks.error.inc(),
        };
    }

    /// `Err(why)` while Redis is known to be down: the request path does not wait for it then.
    fn answering(&self) -> Result<(), Fallback> {
        match self.health.load(Relaxed) {
            UP => Ok(()),
            _ => Err(self.down_reason()),
        }
    }

    /// The reason calls are not made now, while Redis is known to be down.
    pub(super) fn down_reason(&self) -> Fallback {
        match self.health.load(Relaxed) {
            TIMEOUT => Fallback::Timeout,
            _ => Fallback::Unreachable,
        }
    }

    /// Tells every node (this one too) through pub/sub.
    pub async fn announce(&self, event: &str) -> Result<(), Fallback> {
        let channel = self.key(&["events"]);
        self.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(event))
            .await
            .map(drop)
    }

    /// A value sealed with the cluster secret (`None`: absent, or no secret configured); `now`
    /// for the request path (see [`Cluster::query_now`]).
    pub async fn get_sealed_with(&self, key: &str, now: bool) -> Result<Option<Vec<u8>>, Fallback> {
        let Some(sealer) = &self.sealer else { return Ok(None) };
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let raw: Option<Vec<u8>> = match now {
            true => self.query_now(&cmd).await?,
            false => self.query(&cmd).await?,
        };
        Ok(raw.and_then(|r| match sealer.open(key, &r) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!("cluster: {key}: {e} (is the cluster secret the same on every node?)");
                None
            }
        }))
    }

    /// A value sealed with the cluster secret, off the request path.
    pub async fn get_sealed(&self, key: &str) -> Result<Option<Vec<u8>>, Fallback> {
        self.get_sealed_with(key, false).await
    }

    /// Stores `value` sealed with the cluster secret, for `ttl` when given.
    pub async fn set_sealed(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Fallback> {
        let Some(sealer) = &self.sealer else {
            return Err(Fallback::Error);
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(sealer.seal(key, value));
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis() as u64);
        }
        self.query::<()>(&cmd).await
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every `HEARTBEAT`: this node's entry in the node set, the nodes seen, the watched lock's
/// holder; a failure marks Redis down, the next success up again.
async fn heartbeat(weak: Weak<Cluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = weak.upgrade() else { return };
        let nodes_key = c.key(&["nodes"]);
        let now = now_ms();
        let lock = c.view.lock().unwrap_or_else(|e| e.into_inner()).acme_lock.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD").arg(&nodes_key).arg(now).arg(c.node()).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&nodes_key)
            .arg("-inf")
            .arg(now.saturating_sub(NODE_TTL.as_millis() as u64))
            .ignore();
        pipe.cmd("ZRANGE").arg(&nodes_key).arg(0).arg(-1).arg("WITHSCORES");
        pipe.cmd("GET").arg(lock.as_ref().map_or("", |(k, _)| k.as_str()));
        let mut conn = c.conn.clone();
        let answer = c
            .call(
                BACKGROUND_TIMEOUT,
                pipe.query_async::<(Vec<(String, f64)>, Option<String>)>(&mut conn),
            )
            .await;
        if let Ok((nodes, holder)) = answer {
            let mut view = c.view.lock().unwrap_or_else(|e| e.into_inner());
            view.nodes = nodes
                .into_iter()
                .map(|(n, at)| (n, (now as f64 - at).max(0.0) / 1000.0))
                .collect();
            if let Some((_, h)) = view.acme_lock.as_mut() {
                // a lock's value is `NODE/TOKEN`
                *h = holder.map(|v| v.rsplit_once('/').map_or(v.as_str(), |(node, _)| node).to_string());
            }
        }
    }
}

/// Listens on the cluster's channel and passes each message on; reconnects after a failure and
/// then announces `resync` (messages may have been missed meanwhile).
async fn listen(weak: Weak<Cluster>) {
    loop {
        let Some(c) = weak.upgrade() else { return };
        let (client, channel) = (c.client.clone(), c.key(&["events"]));
        let events = c.events.clone();
        drop(c);
        let subscribed = tokio::time::timeout(BACKGROUND_TIMEOUT, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        if let Ok(Ok(ps)) = subscribed {
            let _ = events.send("resync".into());
            let mut stream = ps.into_on_message();
            while let Some(msg) = stream.next().await {
                if let Ok(text) = msg.get_payload::<String>() {
                    let _ = events.send(text);
                }
            }
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// The rate-limit batcher: takes every question waiting, asks Redis once for all of them, hands
/// out the answers; the next batch gathers while a call is under way. One call at a time
/// measured best (benches/RESULTS.md): the larger batches cost Redis less, on a loaded machine
/// that matters more than the wait for the call in flight. The calls go on the batcher's own
/// connection ([`Slot`]) when it has one.
async fn decide(weak: Weak<Cluster>, mut questions: mpsc::Receiver<Ask>) {
    let mut batch = Batch::with_capacity(limit::MAX_BATCH);
    let mut direct = Slot::new();
    loop {
        if questions.recv_many(&mut batch.asks, limit::MAX_BATCH).await == 0 {
            return;
        }
        // a request that gave up is not asked about
        batch.asks.retain(|a| !a.reply.is_closed());
        if batch.asks.is_empty() {
            continue;
        }
        let Some(c) = weak.upgrade() else { return };
        // Redis went down while these waited (the call before them timed out): local at once
        if let Err(why) = c.answering() {
            batch.fail(why);
            continue;
        }
        let invocation = batch.invocation();
        let result = match direct.get(&c.client, HEARTBEAT, BACKGROUND_TIMEOUT) {
            Some(d) => {
                let result = c.call(c.settings.timeout, d.invoke(&invocation)).await;
                if result.is_err() {
                    direct.close();
                }
                result
            }
            None => {
                let mut conn = c.conn.clone();
                c.call(c.settings.timeout, invocation.invoke_async(&mut conn)).await
            }
        };
        batch.answer(result);
    }
}

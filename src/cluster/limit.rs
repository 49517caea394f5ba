//! Global rate limits: GCRA computed in Redis on Redis's own clock, so every node agrees. The
//! bucket of a key is one number, its theoretical arrival time in microseconds, kept only while
//! it is in the future. Same semantics as the local zones: `interval` between requests on
//! average, `tolerance` (capacity - 1 intervals) at once.
//!
//! The requests waiting at the same moment go in one script call (EVALSHA), one key each,
//! decided in order inside Redis: one round trip and one script run for all of them instead
//! of one each, and one read and one write per bucket however many of its requests the call
//! holds (a burst from one client, what rate limits are for). Measured in benches/RESULTS.md
//! ("Cluster rate limits").

use std::sync::LazyLock;

use tokio::sync::oneshot;

use super::fallback::Fallback;

/// Requests decided by one call at most.
pub(super) const MAX_BATCH: usize = 128;

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, moved, out = {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local tat = tats[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
  end
  local allow_at = tat - tonumber(ARGV[2 * i])
  if now < allow_at then
    out[i] = allow_at - now
  else
    tat = tat + tonumber(ARGV[2 * i - 1])
    moved[key] = true
    out[i] = 0
  end
  tats[key] = tat
end
for key in pairs(moved) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return out";

/// Loaded by SHA (EVALSHA), sent whole only when Redis does not know it yet.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// One request's question: its bucket, the zone's rate, and where the answer goes (`Ok(0)` to
/// go on, `Ok(wait_us)` over the limit).
pub(super) struct Ask {
    pub key: String,
    pub interval_us: u64,
    pub tolerance_us: u64,
    pub reply: oneshot::Sender<Result<u64, Fallback>>,
}

/// The script call deciding `batch` (the asks whose requests still wait).
pub(super) fn invocation(batch: &[Ask]) -> redis::ScriptInvocation<'static> {
    let mut inv = SCRIPT.prepare_invoke();
    for a in batch {
        inv.key(&a.key).arg(a.interval_us).arg(a.tolerance_us);
    }
    inv
}

/// Hands each ask its answer.
pub(super) fn answer(batch: &mut Vec<Ask>, result: Result<Vec<i64>, Fallback>) {
    match result {
        Ok(waits) if waits.len() == batch.len() => {
            for (a, wait) in batch.drain(..).zip(waits) {
                let _ = a.reply.send(Ok(wait.max(0) as u64));
            }
        }
        Ok(_) => {
            for a in batch.drain(..) {
                let _ = a.reply.send(Err(Fallback::Error));
            }
        }
        Err(why) => {
            for a in batch.drain(..) {
                let _ = a.reply.send(Err(why));
            }
        }
    }
}

//! Global rate limits: GCRA computed in Redis by one script call per request, with Redis's own
//! clock so every node agrees. The bucket of a key is one number, its theoretical arrival time
//! in microseconds, kept only while it is in the future. Same semantics as the local zones:
//! `interval` between requests on average, `tolerance` (capacity - 1 intervals) at once.

use std::sync::LazyLock;

use super::conn::{Cluster, Fallback};

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0";

/// Loaded by SHA (EVALSHA), sent whole only when Redis does not know it yet.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

impl Cluster {
    /// One request of `key` against a bucket refilled every `interval_us` holding
    /// `tolerance_us / interval_us + 1` requests: `Ok(0)` to go on, `Ok(wait_us)` when over the
    /// limit, `Err` when Redis did not answer in time (the caller uses its local bucket).
    pub async fn gcra(&self, key: &str, interval_us: u64, tolerance_us: u64) -> Result<u64, Fallback> {
        if !self.is_up() {
            return Err(self.down_reason());
        }
        let mut inv = SCRIPT.key(key);
        inv.arg(interval_us).arg(tolerance_us);
        let mut conn = self.conn.clone();
        let wait: i64 = self.call(self.settings.timeout, inv.invoke_async(&mut conn)).await?;
        Ok(wait.max(0) as u64)
    }
}

//! A lease lock in Redis: `SET key "NODE/TOKEN" NX PX ttl` takes it, a script renews it only
//! while the value is still ours, another deletes it only while it is ours. A holder that dies
//! stops renewing and the lease expires after `lock_ttl`, so another node can take over.

use std::sync::LazyLock;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::conn::{BACKGROUND_TIMEOUT, Cluster};
use super::fallback::Fallback;

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

/// A lock this node holds until it is released or its lease runs out.
#[derive(Debug)]
pub struct Lease {
    pub key: String,
    value: String,
}

impl Cluster {
    /// Takes `key` for `lock_ttl` if nobody holds it.
    pub async fn try_lock(&self, key: &str) -> Result<Option<Lease>, Fallback> {
        let mut token = [0u8; 16];
        SystemRandom::new().fill(&mut token).map_err(|_| Fallback::Error)?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let value = format!("{}/{token}", self.node());
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lock_ttl_ms()),
            )
            .await?;
        Ok(set.map(|_| Lease {
            key: key.to_string(),
            value,
        }))
    }

    /// Extends the lease; `false` when it is no longer ours (it expired and was taken).
    pub async fn renew(&self, lease: &Lease) -> Result<bool, Fallback> {
        let mut inv = RENEW_SCRIPT.key(&lease.key);
        inv.arg(&lease.value).arg(self.lock_ttl_ms());
        let mut conn = self.conn.clone();
        let n: i64 = self.call(BACKGROUND_TIMEOUT, inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    /// Gives the lock back if it is still ours.
    pub async fn release(&self, lease: Lease) {
        let mut inv = RELEASE_SCRIPT.key(&lease.key);
        inv.arg(&lease.value);
        let mut conn = self.conn.clone();
        let _: Result<i64, _> = self.call(BACKGROUND_TIMEOUT, inv.invoke_async(&mut conn)).await;
    }

    /// How often a holder renews its lease: three times per `lock_ttl`.
    pub fn renew_every(&self) -> Duration {
        self.settings.lock_ttl / 3
    }

    fn lock_ttl_ms(&self) -> u64 {
        self.settings.lock_ttl.as_millis() as u64
    }
}

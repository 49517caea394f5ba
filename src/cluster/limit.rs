//! Global rate limits: GCRA computed in Redis on Redis's own clock, so every node agrees. The
//! bucket of a key is one number, its theoretical arrival time in microseconds, kept only while
//! it is in the future. Same semantics as the local zones: `interval` between requests on
//! average, `tolerance` (capacity - 1 intervals) at once.
//!
//! The requests waiting at the same moment go in one script call (EVALSHA): one round trip and
//! one script run for all of them instead of one each. Requests of one bucket (a burst from one
//! client, what rate limits are for) go as one key and a count, and Redis answers how many of
//! them, in their order, fit: what deciding them one by one gives, for one read and one write
//! of the bucket. Measured in benches/RESULTS.md ("Cluster rate limits").

use std::collections::HashMap;
use std::sync::LazyLock;

use foldhash::fast::RandomState;

use tokio::sync::oneshot;

use super::fallback::Fallback;

/// Requests decided by one call at most.
pub(super) const MAX_BATCH: usize = 128;

/// Per key: `ARGV` holds its interval, tolerance and how many requests ask at once; the answer
/// is two numbers per key, how many of them go on (the first ones) and how long the others
/// wait. n requests arriving at once one by one: each goes on while `now >= tat - tolerance`
/// and moves `tat` one interval on, so `floor((now + tolerance - tat) / interval) + 1` go.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local interval, tolerance, n = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local room = now + tolerance - tat
  local go = 0
  if room >= 0 then
    if interval > 0 then go = math.min(n, math.floor(room / interval) + 1) else go = n end
  end
  if go > 0 then
    tat = tat + go * interval
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  out[2 * i - 1] = go
  if go < n then out[2 * i] = tat - tolerance - now else out[2 * i] = 0 end
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

/// One batch: the asks whose requests still wait, grouped by bucket in the order they came.
pub(super) struct Batch {
    pub asks: Vec<Ask>,
    /// per group: the ask that names its key, and how many asks it holds
    groups: Vec<(usize, u32)>,
    /// per ask: its group
    group_of: Vec<usize>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            asks: Vec::with_capacity(n),
            groups: Vec::with_capacity(n),
            group_of: Vec::with_capacity(n),
        }
    }

    /// Groups the asks by bucket (key and rate) and gives the script call deciding them all.
    pub fn invocation(&mut self) -> redis::ScriptInvocation<'static> {
        self.groups.clear();
        self.group_of.clear();
        let mut index: HashMap<(&str, u64, u64), usize, RandomState> =
            HashMap::with_capacity_and_hasher(self.asks.len(), RandomState::default());
        for (i, a) in self.asks.iter().enumerate() {
            let g = *index.entry((&a.key, a.interval_us, a.tolerance_us)).or_insert_with(|| {
                self.groups.push((i, 0));
                self.groups.len() - 1
            });
            self.groups[g].1 += 1;
            self.group_of.push(g);
        }
        let mut inv = SCRIPT.prepare_invoke();
        for &(first, n) in &self.groups {
            let a = &self.asks[first];
            inv.key(&a.key).arg(a.interval_us).arg(a.tolerance_us).arg(n);
        }
        inv
    }

    /// Hands each ask its answer: the script's (`invocation` made just before), or `why` it
    /// has none.
    pub fn answer(&mut self, result: Result<Vec<i64>, Fallback>) {
        match result {
            Ok(mut out) if out.len() == 2 * self.groups.len() && self.group_of.len() == self.asks.len() => {
                for (a, &g) in self.asks.drain(..).zip(&self.group_of) {
                    // the first `go` of the group go on, the others wait
                    let answer = if out[2 * g] > 0 {
                        out[2 * g] -= 1;
                        0
                    } else {
                        out[2 * g + 1].max(1) as u64
                    };
                    let _ = a.reply.send(Ok(answer));
                }
            }
            Ok(_) => self.fail(Fallback::Error),
            Err(why) => self.fail(why),
        }
    }

    /// Every ask of the batch gets `why`: its request uses the local bucket.
    pub fn fail(&mut self, why: Fallback) {
        for a in self.asks.drain(..) {
            let _ = a.reply.send(Err(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(key: &str, interval_us: u64) -> (Ask, oneshot::Receiver<Result<u64, Fallback>>) {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            key: key.into(),
            interval_us,
            tolerance_us: 4 * interval_us,
            reply,
        };
        (ask, answer)
    }

    /// Asks `keys` in one batch and hands out `script_out`: what each ask was told.
    fn decide(keys: &[(&str, u64)], script_out: Result<Vec<i64>, Fallback>) -> (usize, Vec<Result<u64, Fallback>>) {
        let mut batch = Batch::with_capacity(MAX_BATCH);
        let mut answers = Vec::new();
        for &(key, interval) in keys {
            let (a, rx) = ask(key, interval);
            batch.asks.push(a);
            answers.push(rx);
        }
        let _ = batch.invocation();
        let groups = batch.groups.len();
        batch.answer(script_out);
        assert!(batch.asks.is_empty());
        (
            groups,
            answers.into_iter().map(|mut rx| rx.try_recv().unwrap()).collect(),
        )
    }

    #[test]
    fn asks_of_one_bucket_are_one_key_and_the_first_ones_go() {
        // a, b, a, a, c (c: a's key at another rate, a bucket of its own after a reload)
        let keys = [("a", 10), ("b", 10), ("a", 10), ("a", 10), ("a", 20)];
        // a: 2 go, the rest wait 7 us; b: 1 goes; a at 20 us: none goes, waits 9 us
        let (groups, got) = decide(&keys, Ok(vec![2, 7, 1, 0, 0, 9]));
        assert_eq!(groups, 3);
        assert_eq!(got, [Ok(0), Ok(0), Ok(0), Ok(7), Ok(9)]);
    }

    #[test]
    fn a_reply_that_does_not_fit_the_batch_sends_every_ask_to_its_local_bucket() {
        let keys = [("a", 10), ("b", 10), ("a", 10)];
        // too short, too long, and Redis not answering
        for out in [Ok(vec![1, 0]), Ok(vec![1, 0, 1, 0, 5, 5]), Err(Fallback::Timeout)] {
            let why = out.as_ref().err().copied().unwrap_or(Fallback::Error);
            let (_, got) = decide(&keys, out);
            assert_eq!(got, [Err(why), Err(why), Err(why)]);
        }
    }

    #[test]
    fn a_refusal_never_turns_into_a_pass() {
        // whatever a (hostile or broken) Redis says of the waiting ones, they wait
        let (_, got) = decide(&[("a", 10), ("a", 10)], Ok(vec![-3, 0]));
        assert_eq!(got, [Ok(1), Ok(1)]);
    }
}

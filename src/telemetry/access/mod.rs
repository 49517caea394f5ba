//! The access log: one JSON object per request, written after the response has been sent
//! (bytes and duration known). Lines are appended to a pending batch that the log's own thread
//! writes in one system call when it reaches 32 KiB or 100 ms after its first line (nginx's
//! `access_log ... buffer= flush=`), so a request pays neither a write nor a thread wake-up of
//! its own, and logging never stalls a request: when the disk stops taking writes, lines past
//! 16 MiB pending are dropped, counted and exported in `/metrics`. Files (tracing-appender's
//! rolling appender) rotate hourly or daily and `keep` old ones.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_appender::rolling::{RollingFileAppender, Rotation};

use crate::config::{AccessSettings, AccessTarget, Rotate};

mod record;

pub use record::{AccessRecord, rfc3339};

/// Lines waiting for the writer thread are written together once they reach this size, or
/// after `FLUSH_AFTER`, whichever comes first.
const BATCH: usize = 32 * 1024;
/// How long the first line of a batch waits for others (nginx's `access_log ... flush=`).
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Bytes waiting beyond which lines are dropped (and counted): a disk that stopped taking
/// writes must not grow the gateway's memory without bound.
const MAX_PENDING: usize = 16 * 1024 * 1024;

thread_local! {
    /// The line being serialised, reused from request to request.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// What the request path hands to the writer thread.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    stop: bool,
    /// Set by the writer thread once it has written everything after `stop`.
    done: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    /// The pending batch (a thread that panicked holding it left nothing half-written).
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open access log. Dropping it writes what is pending and stops its thread.
pub struct AccessLog {
    pub settings: AccessSettings,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AccessLog {
    /// Opens the log; `None` for `off`.
    pub fn open(settings: &AccessSettings) -> Result<Option<Self>, String> {
        let out: Box<dyn Write + Send> = match &settings.target {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stdout => Box::new(std::io::stdout()),
            AccessTarget::File(path) => Box::new(rolling(path, settings)?),
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("orta-access-log".into())
            .spawn(move || write_batches(&for_thread, out))
            .map_err(|e| format!("cannot start the access log's thread: {e}"))?;
        Ok(Some(Self {
            settings: settings.clone(),
            shared,
            thread: Some(thread),
        }))
    }

    /// Adds one line to the pending batch (never waits for the disk; dropped and counted when
    /// too much is pending). The writer thread is woken by a batch's first line and when it is
    /// full, not by every line.
    pub fn write(&self, record: &AccessRecord) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            record.write_json(line);
            line.push(b'\n');
            let mut pending = self.shared.lock();
            let before = pending.lines.len();
            if before + line.len() > MAX_PENDING {
                self.shared.dropped.fetch_add(1, Relaxed);
                return;
            }
            pending.lines.extend_from_slice(line);
            if before == 0 || (before < BATCH && pending.lines.len() >= BATCH) {
                self.shared.wake.notify_one();
            }
        });
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }
}

impl Drop for AccessLog {
    /// Has the pending lines written, waiting at most a second for the disk (the last holder
    /// of the log may be a request's task on a runtime thread).
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.stop = true;
        self.shared.wake.notify_all();
        let (pending, _) = self
            .shared
            .wake
            .wait_timeout_while(pending, Duration::from_secs(1), |p| !p.done)
            .unwrap_or_else(|e| e.into_inner());
        if !pending.done {
            return;
        }
        drop(pending);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: sleeps until a line is pending, gives the batch `FLUSH_AFTER` (or until
/// `BATCH` bytes) to fill, then writes it in one go. On stop, writes what is left and returns.
fn write_batches(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stop = {
            let idle = shared
                .wake
                .wait_while(shared.lock(), |p| p.lines.is_empty() && !p.stop)
                .unwrap_or_else(|e| e.into_inner());
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(idle, FLUSH_AFTER, |p| !p.stop && p.lines.len() < BATCH)
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut pending.lines, &mut batch);
            pending.stop
        };
        if !batch.is_empty() {
            // a failed write (disk full) loses this batch, not the thread
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if batch.capacity() > 4 * BATCH {
                batch = Vec::with_capacity(BATCH);
            }
        }
        if stop {
            shared.lock().done = true;
            shared.wake.notify_all();
            return;
        }
    }
}

/// `logs/access.log` rotating daily becomes `logs/access.YYYY-MM-DD.log`; with `never`, the
/// file itself.
fn rolling(path: &Path, s: &AccessSettings) -> Result<RollingFileAppender, String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("access");
    let ext = path.extension().and_then(|s| s.to_str());
    let mut b = RollingFileAppender::builder()
        .rotation(match s.rotation {
            Rotate::Minutely => Rotation::MINUTELY,
            Rotate::Hourly => Rotation::HOURLY,
            Rotate::Daily => Rotation::DAILY,
            Rotate::Never => Rotation::NEVER,
        })
        .filename_prefix(stem);
    if let Some(ext) = ext {
        b = b.filename_suffix(ext);
    }
    if s.rotation != Rotate::Never && s.keep > 0 {
        b = b.max_log_files(s.keep + 1);
    }
    b.build(dir)
        .map_err(|e| format!("cannot open access log {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::time::Instant;
    use std::time::SystemTime;

    fn record(i: usize) -> AccessRecord {
        AccessRecord {
            time: SystemTime::now(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: Method::GET,
            host: Some(HeaderValue::from_static("example.test")),
            uri: format!("/line/{i}").parse().unwrap(),
            status: 200,
            bytes_sent: 5,
            duration: Duration::from_micros(250),
            upstream: None,
            upstream_time: None,
            request_id: HeaderValue::from_str(&format!("rid-{i}")).unwrap(),
            user_agent: Some(HeaderValue::from_static("unit \"test\"")),
            referer: None,
            tls_version: None,
            http_version: "HTTP/1.1",
            route: Some("/".into()),
            cache: Some("hit"),
            rate_limited: false,
        }
    }

    /// A log writing to `access.log` in `dir`, without rotation, and that file's path.
    fn open_in(dir: &Path) -> (AccessLog, PathBuf) {
        let path = dir.join("access.log");
        let settings = AccessSettings {
            target: AccessTarget::File(path.clone()),
            rotation: Rotate::Never,
            keep: 0,
        };
        (AccessLog::open(&settings).unwrap().unwrap(), path)
    }

    #[test]
    fn every_line_reaches_the_file_in_order_by_the_time_the_log_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = open_in(dir.path());
        // more than several batches' worth, from two threads
        std::thread::scope(|s| {
            for t in 0..2 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..2000 {
                        log.write(&record(t * 10_000 + i));
                    }
                });
            }
        });
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let paths: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(paths.len(), 4000);
        // each thread's lines in the order it wrote them (thread 1's numbers start at 10000)
        let numbers: Vec<usize> = paths.iter().map(|p| p["/line/".len()..].parse().unwrap()).collect();
        for t in 0..2 {
            let mine: Vec<usize> = numbers.iter().copied().filter(|n| n / 10_000 == t).collect();
            assert_eq!(
                mine,
                (0..2000).map(|i| t * 10_000 + i).collect::<Vec<_>>(),
                "thread {t}"
            );
        }
    }

    #[test]
    fn a_line_is_written_without_waiting_for_a_full_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = open_in(dir.path());
        log.write(&record(1));
        let start = Instant::now();
        while std::fs::read_to_string(&path).unwrap_or_default().lines().count() < 1 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the line never reached the file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.dropped(), 0);
    }
}

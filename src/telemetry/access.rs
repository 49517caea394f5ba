//! The access log: one JSON object per request, written after the response has been sent
//! (bytes and duration known). Lines are appended to a pending batch that the log's own thread
//! writes in one system call when it reaches 32 KiB or 100 ms after its first line (nginx's
//! `access_log ... buffer= flush=`), so a request pays neither a write nor a thread wake-up of
//! its own, and logging never stalls a request: when the disk stops taking writes, lines past
//! 16 MiB pending are dropped, counted and exported in `/metrics`. Files (tracing-appender's
//! rolling appender) rotate hourly or daily and `keep` old ones.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{REFERER, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri, Version};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// Where access lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// For tests and very busy sites.
    Minutely,
    Hourly,
    Daily,
    Never,
}

/// `[log]`'s access settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    pub target: AccessTarget,
    pub rotation: Rotate,
    pub keep: usize,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            target: AccessTarget::Off,
            rotation: Rotate::Daily,
            keep: 14,
        }
    }
}

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
    /// `YYYY-MM-DDTHH:MM:SS` of the last second formatted, and that second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
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

/// One access log line. Its fields are the request's own values (`Bytes`-backed header values
/// and URI, shared names), taken without copying and serialised only when the line is written.
#[derive(Debug)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The `Host` header, or the HTTP/2 `:authority`.
    pub host: Option<HeaderValue>,
    /// Its path and query are logged.
    pub uri: Uri,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream: Option<Arc<str>>,
    /// How long the upstream took to send its response head.
    pub upstream_time: Option<Duration>,
    pub request_id: HeaderValue,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub tls_version: Option<&'static str>,
    pub http_version: &'static str,
    pub route: Option<Arc<str>>,
    /// `hit` or `miss` for files served from the cache.
    pub cache: Option<&'static str>,
    pub rate_limited: bool,
}

impl AccessRecord {
    /// The fields known when a request arrives, shared with it rather than copied (its header
    /// values and URI point into the request's own buffers); the rest are filled in as it is
    /// handled and answered.
    pub fn new<B>(
        req: &Request<B>,
        client_ip: IpAddr,
        host: Option<&HeaderValue>,
        request_id: &HeaderValue,
        tls_version: Option<&'static str>,
    ) -> Self {
        Self {
            time: SystemTime::now(),
            client_ip,
            method: req.method().clone(),
            host: host.cloned(),
            uri: req.uri().clone(),
            status: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream: None,
            upstream_time: None,
            request_id: request_id.clone(),
            user_agent: req.headers().get(USER_AGENT).cloned(),
            referer: req.headers().get(REFERER).cloned(),
            tls_version,
            http_version: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            route: None,
            cache: None,
            rate_limited: false,
        }
    }

    /// Appends the record to `out` as one JSON object (no newline). Header values that are
    /// not visible ASCII are logged as `null` (the host as `""`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out.extend_from_slice(b"{\"time\":\"");
        push_rfc3339(self.time, out);
        out.extend_from_slice(b"\",\"client_ip\":\"");
        // an address's text needs no escaping
        let _ = write!(out, "{}", self.client_ip);
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"host\":");
        json_str(out, visible(&self.host).unwrap_or(""));
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.uri.path());
        out.extend_from_slice(b",\"query\":");
        json_opt_str(out, self.uri.query());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_sent).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        json_f64(out, ms(self.duration));
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream.as_deref());
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_time {
            Some(d) => json_f64(out, ms(d)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, self.request_id.to_str().unwrap_or(""));
        out.extend_from_slice(b",\"user_agent\":");
        json_opt_str(out, visible(&self.user_agent));
        out.extend_from_slice(b",\"referer\":");
        json_opt_str(out, visible(&self.referer));
        out.extend_from_slice(b",\"tls_version\":");
        json_opt_str(out, self.tls_version);
        out.extend_from_slice(b",\"http_version\":");
        json_str(out, self.http_version);
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, self.route.as_deref());
        out.extend_from_slice(b",\"cache\":");
        json_opt_str(out, self.cache);
        out.extend_from_slice(if self.rate_limited {
            b",\"rate_limited\":true}"
        } else {
            b",\"rate_limited\":false}"
        });
    }
}

/// A header value's text, if it is visible ASCII.
fn visible(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// A JSON string. Text that needs no escaping (the usual case) is copied as it is; anything
/// else is escaped by serde_json. The check has no early exit, so it runs over whole vectors.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let escape = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escape {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON number (serde_json's shortest round-trip form; `null` for the impossible NaN).
fn json_f64(out: &mut Vec<u8>, x: f64) {
    let _ = serde_json::to_writer(&mut *out, &x);
}

/// RFC 3339 with milliseconds, in UTC. The date and time of day are formatted once per second
/// (per thread); the milliseconds are appended.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `t` as [`rfc3339`] writes it.
fn push_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let _ = time::OffsetDateTime::from(t).format_into(out, &fmt);
        return;
    };
    let (secs, ms) = (since.as_secs(), since.subsec_millis());
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs || prefix.is_empty() {
            let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            *prefix = time::OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(secs))
                .format(&fmt)
                .unwrap_or_default();
            *second = secs;
        }
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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

    #[test]
    fn a_line_is_the_json_object_of_its_fields() {
        let rec = AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            client_ip: "2001:db8::1".parse().unwrap(),
            method: Method::from_bytes(b"PROPFIND").unwrap(),
            host: None,
            uri: "/a%22b/c?q=%5C&x={y}".parse().unwrap(),
            status: 404,
            bytes_sent: 18_446_744_073_709_551_615,
            duration: Duration::from_nanos(1_234_567),
            upstream: Some("127.0.0.1:8000".into()),
            upstream_time: Some(Duration::from_micros(42)),
            request_id: HeaderValue::from_static("rid-\\-1"),
            // a tab is allowed in a header value and must be escaped in JSON
            user_agent: Some(HeaderValue::from_static("curl/8 \"quoted\"\tand\\slash")),
            // not visible ASCII: logged as null
            referer: Some(HeaderValue::from_bytes(b"https://x/\xc3\xa9").unwrap()),
            tls_version: Some("TLSv1.3"),
            http_version: "HTTP/2",
            route: Some("/api/ (line 12)".into()),
            cache: None,
            rate_limited: true,
        };
        let mut line = Vec::new();
        rec.write_json(&mut line);
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let expected = serde_json::json!({
            "time": "2026-11-18T11:06:40.123Z",
            "client_ip": "2001:db8::1",
            "method": "PROPFIND",
            "host": "",
            "path": "/a%22b/c",
            "query": "q=%5C&x={y}",
            "status": 404,
            "bytes_sent": 18_446_744_073_709_551_615u64,
            "duration_ms": 1.234567,
            "upstream": "127.0.0.1:8000",
            "upstream_ms": 0.042,
            "request_id": "rid-\\-1",
            "user_agent": "curl/8 \"quoted\"\tand\\slash",
            "referer": null,
            "tls_version": "TLSv1.3",
            "http_version": "HTTP/2",
            "route": "/api/ (line 12)",
            "cache": null,
            "rate_limited": true,
        });
        assert_eq!(parsed, expected);
        // one line, fields in the documented order
        assert!(!line.contains(&b'\n'));
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with("{\"time\":\"2026-11-18T11:06:40.123Z\",\"client_ip\""),
            "{text}"
        );
        assert!(text.ends_with(",\"rate_limited\":true}"), "{text}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "nl\n",
            "\u{1}\u{1f}\u{7f}",
            "é ünï 🦀",
            "\"\\\"",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        // the same second again (the cached part), the next one, and whole seconds
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_007);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.007Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_001_450);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:41.450Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH - std::time::Duration::from_millis(1500);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:58.500Z");
    }
}

//! The access log: one JSON object per request, written after the response has been sent
//! (bytes and duration known), through tracing-appender's non-blocking writer: a bounded queue
//! drained by its own thread, lossy when full, so logging never stalls a request (dropped lines
//! are counted and exported in `/metrics`). The thread writes what it drained in one system
//! call. Files rotate hourly or daily and `keep` old ones.

use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
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

/// Lines queued before the writer starts dropping them.
const QUEUE: usize = 64 * 1024;

/// The writer thread's buffer: the lines it drains from the queue in one go reach the file in
/// one `write` (it flushes whenever the queue is empty), not one system call per line.
const WRITE_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The line being serialised, reused from request to request.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
    /// `YYYY-MM-DDTHH:MM:SS` of the last second formatted, and that second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// An open access log. Dropping it flushes what is queued.
pub struct AccessLog {
    pub settings: AccessSettings,
    writer: NonBlocking,
    dropped: ErrorCounter,
    _guard: WorkerGuard,
}

impl AccessLog {
    /// Opens the log; `None` for `off`.
    pub fn open(settings: &AccessSettings) -> Result<Option<Self>, String> {
        let (writer, guard) = match &settings.target {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stdout => non_blocking(BufWriter::with_capacity(WRITE_BUFFER, std::io::stdout())),
            AccessTarget::File(path) => non_blocking(BufWriter::with_capacity(WRITE_BUFFER, rolling(path, settings)?)),
        };
        Ok(Some(Self {
            settings: settings.clone(),
            dropped: writer.error_counter(),
            writer,
            _guard: guard,
        }))
    }

    /// Queues one line (never blocks; dropped and counted if the queue is full).
    pub fn write(&self, record: &AccessRecord) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            if serde_json::to_writer(&mut *line, record).is_ok() {
                line.push(b'\n');
                let _ = self.writer.clone().write_all(line);
            }
        });
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }
}

fn non_blocking<W: Write + Send + 'static>(w: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE)
        .thread_name("orta-access-log")
        .finish(w)
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

/// One access log line.
#[derive(Debug, serde::Serialize)]
pub struct AccessRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub client_ip: IpAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub upstream_ms: Option<f64>,
    pub request_id: String,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub tls_version: Option<&'static str>,
    pub http_version: &'static str,
    pub route: Option<String>,
    /// `hit` or `miss` for files served from the cache.
    pub cache: Option<&'static str>,
    pub rate_limited: bool,
}

/// RFC 3339 with milliseconds, in UTC. The date and time of day are formatted once per second
/// (per thread); the milliseconds are appended.
pub fn rfc3339(t: SystemTime) -> String {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        return time::OffsetDateTime::from(t).format(&fmt).unwrap_or_default();
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
        let mut out = String::with_capacity(prefix.len() + 5);
        out.push_str(prefix);
        out.push('.');
        for digit in [ms / 100, ms / 10 % 10, ms % 10] {
            out.push(char::from(b'0' + digit as u8));
        }
        out.push('Z');
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

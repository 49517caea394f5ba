//! The access log: one JSON object per request, written after the response has been sent
//! (bytes and duration known), through tracing-appender's non-blocking writer: a bounded queue
//! drained by its own thread, lossy when full, so logging never stalls a request (dropped lines
//! are counted and exported in `/metrics`). Files rotate hourly or daily and `keep` old ones.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
            AccessTarget::Stdout => non_blocking(std::io::stdout()),
            AccessTarget::File(path) => non_blocking(rolling(path, settings)?),
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
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let _ = self.writer.clone().write_all(&line);
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

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
    }
}

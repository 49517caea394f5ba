//! What the gateway tells its operators: the error log (`tracing` to stderr, text or JSON), the
//! access log (`access`), and Prometheus metrics (`metrics`).

pub mod access;
pub mod metrics;

use crate::config::{LogFormat, LogLevel, LogSettings};

/// Installs the global error-log subscriber (once; later calls do nothing).
pub fn init(log: &LogSettings) {
    let level = match log.level {
        LogLevel::Trace => tracing::Level::TRACE,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Logs a warning line (for callers outside the library that don't depend on `tracing`).
pub fn warn(line: &str) {
    tracing::warn!("{line}");
}

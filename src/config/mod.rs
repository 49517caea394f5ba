//! Configuration: the file shape (`raw`), its validation (`validate`, with the units of
//! durations, sizes and rates in `units`) into one typed, immutable [`Config`] (`model`, and the
//! runtime parts' settings in `settings`), and the diagnostics that point at `FILE:LINE:COL`
//! (`diag`); what validation asks of the file system goes through `files`. Everything that can be wrong with a config file is found here, before anything runs
//! on it.

pub(crate) mod diag;
mod files;
mod model;
pub(crate) mod raw;
mod settings;
pub(crate) mod units;
mod validate;

use std::path::Path;

pub use crate::proto::client_ip::TrustedProxies;
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use files::{Disk, FileSystem};
pub use model::*;
pub use settings::*;

/// The default config path (relative to the working directory).
pub const DEFAULT_PATH: &str = "conf/gateway.toml";

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => {
            let mut d = Diagnostics::new(path, "");
            d.error(None, format!("cannot read config file: {e}"));
            Err(d)
        }
    }
}

/// Validates config text; `path` names the file in messages. Relative paths inside the config
/// (roots, certificates, databases) are taken relative to the working directory, as the default
/// `conf/gateway.toml` expects when run from the repository.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, Diagnostics> {
    validate::parse(path, text, &Disk)
}

/// [`parse`], asking `fs` about the files the config names (roots, certificates, keys).
pub fn parse_with(path: &Path, text: &str, fs: &dyn FileSystem) -> Result<Loaded, Diagnostics> {
    validate::parse(path, text, fs)
}

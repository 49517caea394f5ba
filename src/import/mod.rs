//! `orta-gateway import-nginx`: an nginx configuration (with its includes) translated into a
//! commented `gateway.toml`, and every directive that could not be translated reported as
//! `FILE:LINE: directive `NAME` not translated: reason`. It starts nothing and imports no other
//! layer; the command line checks the result with `config` as `check` would.

mod common;
mod emit;
mod location;
pub mod parse;
mod plan;
mod state;
mod translate;

use std::path::Path;

pub use plan::Report;

/// An imported configuration.
pub struct Imported {
    /// The gateway.toml text.
    pub toml: String,
    /// Directives not translated, in file order.
    pub reports: Vec<Report>,
    pub translated: usize,
}

/// Reads `path` (and its includes) and translates it; `Err` is bad nginx syntax as
/// `FILE:LINE:COL: message`.
pub fn import(path: &Path) -> Result<Imported, String> {
    let (directives, missing) = parse::parse_file(path).map_err(|e| e.to_string())?;
    let mut t = state::Translator::new();
    for m in &missing {
        t.plan
            .report(&m.at, "include", &format!("`{}` not read: {}", m.pattern, m.why));
    }
    t.main(&directives);
    t.plan.finish();
    let mut plan = t.plan;
    plan.reports
        .sort_by(|a, b| (a.at.file.as_ref(), a.at.line).cmp(&(b.at.file.as_ref(), b.at.line)));
    let toml = emit::toml(&plan, &path.display().to_string());
    Ok(Imported {
        toml,
        reports: plan.reports,
        translated: plan.translated,
    })
}

/// Translates one file's text without following its includes (for the fuzzer): the
/// gateway.toml, or the syntax error as `FILE:LINE:COL: message`.
pub fn translate_text(file: &Path, text: &str) -> Result<String, String> {
    let directives = parse::parse_text(&std::sync::Arc::from(file), text).map_err(|e| e.to_string())?;
    let mut t = state::Translator::new();
    t.main(&directives);
    t.plan.finish();
    Ok(emit::toml(&t.plan, &file.display().to_string()))
}

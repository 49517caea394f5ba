//! Config diagnostics: problems and warnings tied to a byte span of the file, rendered as
//! `FILE:LINE:COL: message` like a compiler (and like `nginx -t`, but with columns).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is: errors reject the config, warnings only inform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Byte range in the file; `None` for problems with the file as a whole.
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// Every diagnostic of one config file, with what is needed to render positions.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: PathBuf,
    source: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, source: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            source: source.to_owned(),
            items: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
        });
    }

    pub fn warning(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Warning,
            span,
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// True when an error already points inside `span`.
    pub fn has_error_within(&self, span: &Range<usize>) -> bool {
        self.errors()
            .any(|d| d.span.as_ref().is_some_and(|s| span.contains(&s.start)))
    }

    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.source, offset)
    }

    /// Renders one diagnostic as `FILE:LINE:COL: message`; a problem of the whole file (no
    /// span: the TOML parser's recursion limit, say) is placed at its start, 1:1.
    pub fn render(&self, d: &Diagnostic) -> String {
        let prefix = match d.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        let (line, col) = self.line_col(d.span.as_ref().map_or(0, |s| s.start));
        format!("{}:{line}:{col}: {prefix}{}", self.file.display(), d.message)
    }

    /// The rendered error lines, in file order.
    pub fn error_lines(&self) -> Vec<String> {
        self.sorted(Severity::Error)
    }

    /// The rendered warning lines, in file order.
    pub fn warning_lines(&self) -> Vec<String> {
        self.sorted(Severity::Warning)
    }

    fn sorted(&self, severity: Severity) -> Vec<String> {
        let mut items: Vec<&Diagnostic> = self.items.iter().filter(|d| d.severity == severity).collect();
        items.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        items.into_iter().map(|d| self.render(d)).collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.error_lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// 1-based line and column (in characters) of a byte offset in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 4), (1, 5));
        assert_eq!(line_col(src, 6), (2, 1));
        // byte 10 is the `=` after the two-byte `é`
        assert_eq!(line_col(src, 10), (2, 4));
    }

    #[test]
    fn renders_file_line_col() {
        let mut d = Diagnostics::new(Path::new("conf/x.toml"), "[server]\nhttp = 1\n");
        d.error(Some(16..17), "expected a string");
        d.warning(None, "note");
        assert_eq!(d.error_lines(), vec!["conf/x.toml:2:8: expected a string".to_string()]);
        assert_eq!(d.warning_lines(), vec!["conf/x.toml:1:1: warning: note".to_string()]);
        assert!(d.has_errors());
    }

    #[test]
    fn a_config_nested_past_the_parsers_limit_still_gets_a_position() {
        // found by fuzzing: the TOML parser's recursion limit came back as `FILE: message`
        let text = format!("x = {}1{}\n", "[".repeat(200), "]".repeat(200));
        let Err(d) = crate::config::parse(Path::new("deep.toml"), &text) else {
            panic!("too deep to parse");
        };
        for line in d.error_lines() {
            assert!(line.starts_with("deep.toml:1:"), "{line}");
        }
        assert!(!d.error_lines().is_empty());
    }
}

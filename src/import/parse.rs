//! nginx's configuration grammar, as `import-nginx` reads it: directives of words ending in `;`
//! or a `{ ... }` block, single- and double-quoted words with backslash escapes, `#` comments
//! to the end of the line, `${var}` kept as text, and `include` with globs (relative to the
//! main file's directory, as nginx takes them relative to its prefix) spliced in place. Every
//! directive keeps its file, line and column; bad syntax is `FILE:LINE:COL: message`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub at: At,
}

/// Where a directive starts.
#[derive(Debug, Clone)]
pub struct At {
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Bad syntax: `FILE:LINE:COL: message`.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: At,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.at.file.display(),
            self.at.line,
            self.at.col,
            self.message
        )
    }
}

/// An include that could not be read (reported, not fatal: a config is often imported on
/// another machine than the one it ran on).
#[derive(Debug)]
pub struct Missing {
    pub at: At,
    pub pattern: String,
    pub why: String,
}

/// Includes nest at most this deep (a file including itself stops here).
const MAX_DEPTH: usize = 16;
/// Blocks nest at most this deep (the parser recurses once per block).
const MAX_NESTING: usize = 64;

/// Reads `path` and every file it includes.
pub fn parse_file(path: &Path) -> Result<(Vec<Directive>, Vec<Missing>), SyntaxError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut missing = Vec::new();
    let top = read(path, &base, 0, &mut missing, None)?;
    Ok((top, missing))
}

fn read(
    path: &Path,
    base: &Path,
    depth: usize,
    missing: &mut Vec<Missing>,
    from: Option<&At>,
) -> Result<Vec<Directive>, SyntaxError> {
    let file: Arc<Path> = Arc::from(path);
    let text = std::fs::read_to_string(path).map_err(|e| SyntaxError {
        at: from.cloned().unwrap_or(At {
            file: file.clone(),
            line: 1,
            col: 1,
        }),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let directives = parse_text(&file, &text)?;
    splice(directives, base, depth, missing)
}

/// Replaces each `include` with the directives of the files it names.
fn splice(
    directives: Vec<Directive>,
    base: &Path,
    depth: usize,
    missing: &mut Vec<Missing>,
) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::with_capacity(directives.len());
    for mut d in directives {
        // MIME types: the gateway has its own table, nothing in them to translate
        let mime = d.args.first().is_some_and(|a| a.ends_with("mime.types"));
        if d.name == "include" && d.block.is_none() && d.args.len() == 1 && !mime {
            if depth >= MAX_DEPTH {
                return Err(SyntaxError {
                    at: d.at,
                    message: format!("includes nested deeper than {MAX_DEPTH} (a file including itself?)"),
                });
            }
            let pattern = d.args[0].clone();
            match expand(base, &pattern) {
                Ok(files) if files.is_empty() && !has_glob(&pattern) => missing.push(Missing {
                    at: d.at,
                    pattern,
                    why: "no such file".into(),
                }),
                Ok(files) => {
                    for f in files {
                        out.extend(read(&f, base, depth + 1, missing, Some(&d.at))?);
                    }
                }
                Err(why) => missing.push(Missing { at: d.at, pattern, why }),
            }
            continue;
        }
        if let Some(block) = d.block.take() {
            d.block = Some(splice(block, base, depth, missing)?);
        }
        out.push(d);
    }
    Ok(out)
}

fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files `pattern` names (relative to `base`), sorted; wildcards in the last component.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    if !has_glob(pattern) {
        return Ok(if full.is_file() { vec![full] } else { Vec::new() });
    }
    let dir = full.parent().ok_or("no directory")?.to_path_buf();
    let name = full.file_name().and_then(|n| n.to_str()).ok_or("no file name")?;
    if has_glob(&dir.to_string_lossy()) {
        return Err("wildcards are read in the file name only".into());
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Shell-style `*` and `?` matching (what nginx's glob patterns use in practice).
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// A token: a word (quoted or not) or one of `;`, `{`, `}`.
#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
    file: Arc<Path>,
}

impl Lexer<'_> {
    fn at(&self) -> At {
        At {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at: self.at(),
            message: message.into(),
        }
    }

    /// The next token and where it starts; `None` at the end.
    fn next(&mut self) -> Result<Option<(Tok, At)>, SyntaxError> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while self.chars.peek().is_some_and(|c| *c != '\n') {
                        self.bump();
                    }
                }
                Some(_) => break,
            }
        }
        let at = self.at();
        let tok = match self.bump() {
            Some(';') => Tok::Semi,
            Some('{') => Tok::Open,
            Some('}') => Tok::Close,
            Some(q @ ('"' | '\'')) => Tok::Word(self.quoted(q)?),
            Some(c) => Tok::Word(self.bare(c)),
            None => return Ok(None),
        };
        Ok(Some((tok, at)))
    }

    fn quoted(&mut self, quote: char) -> Result<String, SyntaxError> {
        let mut word = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(format!("unexpected end of file, expecting {quote}"))),
                Some(c) if c == quote => return Ok(word),
                Some('\\') => match self.bump() {
                    Some('n') => word.push('\n'),
                    Some('r') => word.push('\r'),
                    Some('t') => word.push('\t'),
                    Some(c @ ('"' | '\'' | '\\')) => word.push(c),
                    Some(c) => {
                        word.push('\\');
                        word.push(c);
                    }
                    None => return Err(self.error(format!("unexpected end of file, expecting {quote}"))),
                },
                Some(c) => word.push(c),
            }
        }
    }

    fn bare(&mut self, first: char) -> String {
        let mut word = String::from(first);
        let mut prev = first;
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || c == ';' || c == '}' || (c == '{' && prev != '$') {
                break;
            }
            self.bump();
            word.push(c);
            if c == '{' {
                // ${var}: the braces are part of the word
                while let Some(inner) = self.bump() {
                    word.push(inner);
                    if inner == '}' {
                        break;
                    }
                }
            }
            prev = c;
        }
        word
    }
}

/// Parses one file's text (includes not followed).
pub fn parse_text(file: &Arc<Path>, text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let mut lx = Lexer {
        chars: text.chars().peekable(),
        line: 1,
        col: 1,
        file: file.clone(),
    };
    let (list, end) = block(&mut lx, None, 0)?;
    if let Some(at) = end {
        return Err(SyntaxError {
            at,
            message: "unexpected \"}\"".into(),
        });
    }
    Ok(list)
}

/// Directives until `}` (returned with its position) or the end of the file (`None`).
fn block(lx: &mut Lexer<'_>, opened: Option<&At>, depth: usize) -> Result<(Vec<Directive>, Option<At>), SyntaxError> {
    let mut list = Vec::new();
    loop {
        let Some((tok, at)) = lx.next()? else {
            if let Some(open) = opened {
                return Err(lx.error(format!(
                    "unexpected end of file, expecting \"}}\" (the block opened at line {})",
                    open.line
                )));
            }
            return Ok((list, None));
        };
        let name = match tok {
            Tok::Word(w) => w,
            Tok::Close if opened.is_some() => return Ok((list, Some(at))),
            Tok::Close => return Ok((list, Some(at))),
            Tok::Semi => {
                return Err(SyntaxError {
                    at,
                    message: "unexpected \";\"".into(),
                });
            }
            Tok::Open => {
                return Err(SyntaxError {
                    at,
                    message: "unexpected \"{\"".into(),
                });
            }
        };
        let mut args = Vec::new();
        loop {
            match lx.next()? {
                Some((Tok::Word(w), _)) => args.push(w),
                Some((Tok::Semi, _)) => {
                    list.push(Directive {
                        name,
                        args,
                        block: None,
                        at,
                    });
                    break;
                }
                Some((Tok::Open, _)) => {
                    if depth >= MAX_NESTING {
                        return Err(SyntaxError {
                            at,
                            message: format!("blocks nested deeper than {MAX_NESTING}"),
                        });
                    }
                    let (inner, close) = block(lx, Some(&at), depth + 1)?;
                    debug_assert!(close.is_some());
                    list.push(Directive {
                        name,
                        args,
                        block: Some(inner),
                        at,
                    });
                    break;
                }
                Some((Tok::Close, close)) => {
                    return Err(SyntaxError {
                        at: close,
                        message: format!("unexpected \"}}\": directive \"{name}\" is not terminated by \";\""),
                    });
                }
                None => {
                    return Err(lx.error(format!(
                        "unexpected end of file: directive \"{name}\" is not terminated by \";\""
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Directive>, String> {
        parse_text(&Arc::from(Path::new("t.conf")), text).map_err(|e| e.to_string())
    }

    #[test]
    fn directives_blocks_quotes_comments_and_variables() {
        let d = parse(
            "user www; # comment\nhttp {\n  server { listen 80 default_server;\n    add_header X-A \"a \\\"b\\\" ; c\" always;\n    set $x '${host}x'; return 301 https://${host}$request_uri; }\n}\n",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].name.as_str(), d[0].args.clone()),
            ("user", vec!["www".to_string()])
        );
        let server = &d[1].block.as_ref().unwrap()[0];
        assert_eq!((server.at.line, server.at.col), (3, 3));
        let inner = server.block.as_ref().unwrap();
        assert_eq!(inner[0].args, ["80", "default_server"]);
        assert_eq!(inner[1].args, ["X-A", "a \"b\" ; c", "always"]);
        assert_eq!(inner[2].args, ["$x", "${host}x"]);
        assert_eq!(inner[3].args, ["301", "https://${host}$request_uri"]);
        assert_eq!((inner[3].at.line, inner[3].at.col), (5, 24));
    }

    #[test]
    fn bad_syntax_is_reported_with_its_position() {
        assert_eq!(
            parse("http {\n server {\n").unwrap_err(),
            "t.conf:3:1: unexpected end of file, expecting \"}\" (the block opened at line 2)"
        );
        assert_eq!(
            parse("listen 80\n}").unwrap_err(),
            "t.conf:2:1: unexpected \"}\": directive \"listen\" is not terminated by \";\""
        );
        assert_eq!(parse("a;\n  ;").unwrap_err(), "t.conf:2:3: unexpected \";\"");
        assert_eq!(
            parse("a \"open").unwrap_err(),
            "t.conf:1:8: unexpected end of file, expecting \""
        );
        assert_eq!(parse("}").unwrap_err(), "t.conf:1:1: unexpected \"}\"");
        assert_eq!(
            parse("root /x").unwrap_err(),
            "t.conf:1:8: unexpected end of file: directive \"root\" is not terminated by \";\""
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("site-?", "site-1"));
        assert!(glob_match("*", "x"));
    }
}

//! The shape of the crate, read from its own source: which file imports which (`use` trees and
//! inline paths from `crate::`, `super::`, `self::` or a child module, tests left out), so that a
//! circle of imports fails the build, as does an import that runs up the layers of `lib.rs`'s
//! map or across rooms of one layer not listed in `ACROSS`; and the length of every file, so that
//! none grows past 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// No file in `src/` is longer than this (tests inside it included).
const MAX_FILE_LINES: usize = 600;

/// A module path (`["server", "conn"]`) for every file under `src/`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            if parts == ["main"] {
                continue;
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without its comments, string contents and `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // a char literal ('"' or '{'), not a lifetime
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`crate::{a::b, c::{d, e}}`) into its paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap().trim();
            out.push(format!("{prefix}{path}"));
        }
        Some(open) => {
            let head = format!("{prefix}{}", &tree[..open]);
            let inner = &tree[open + 1..tree.rfind('}').unwrap()];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&inner[start..i], &head, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            if !inner[start..].trim().is_empty() {
                expand(&inner[start..], &head, out);
            }
        }
    }
}

/// Every path a file names: `use` trees expanded, and paths written inline in the code.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // the code with its `use` items taken out, for the inline paths
    let mut inline = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        inline.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        if before.is_some_and(is_ident) {
            inline.push_str("use ");
            rest = after;
            continue;
        }
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = after[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        expand(&tree.replace(" ::", "::").replace(":: ", "::"), "", &mut out);
        rest = &after[end..];
    }
    inline.push_str(rest);
    let code = inline.as_str();
    // inline paths: every `a::b…` that starts a token
    let mut from = 0;
    while let Some(at) = code[from..].find("::") {
        let colons = from + at;
        let start = code[..colons].rfind(|c: char| !is_ident(c)).map_or(0, |s| s + 1);
        from = colons + 2;
        if start == colons || code[..start].ends_with(':') {
            continue;
        }
        let end = code[colons..]
            .find(|c: char| !(is_ident(c) || c == ':'))
            .map_or(code.len(), |e| colons + e);
        out.push(code[start..end].trim_end_matches(':').to_string());
        from = end;
    }
    out
}

/// The module file a path leads to, from the module `at` that names it.
fn resolve(path: &str, at: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    let mut parts = path.split("::").filter(|p| !p.is_empty());
    let mut module: Vec<String> = match parts.next()? {
        "crate" => Vec::new(),
        "super" => at[..at.len().saturating_sub(1)].to_vec(),
        "self" => at.to_vec(),
        // a child module of this file, named by itself (`conn::serve`)
        child => {
            let mut m = at.to_vec();
            m.push(child.to_string());
            if !modules.contains_key(&m) {
                return None;
            }
            m
        }
    };
    for part in parts {
        match part {
            "super" => {
                module.pop();
            }
            "self" => {}
            p => {
                module.push(p.to_string());
                if !modules.contains_key(&module) {
                    module.pop();
                    break;
                }
            }
        }
    }
    modules.contains_key(&module).then_some(module)
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

/// The circles of a graph: its strongly connected components of more than one node.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, (self.next, self.next));
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.index[w.as_str()].1.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.index[w.as_str()].0.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// Which file imports which, by module name.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let mut edges = BTreeSet::new();
        for path in paths(&code(&text)) {
            if let Some(target) = resolve(&path, module, &modules)
                && &target != module
            {
                edges.insert(name(&target));
            }
        }
        graph.insert(name(module), edges);
    }
    // lib.rs declares every top module; that is the map, not an import
    graph.remove("lib");
    for edges in graph.values_mut() {
        edges.remove("lib");
    }
    graph
}

#[test]
fn the_import_graph_has_no_circle() {
    let graph = imports();
    assert!(graph.len() > 20, "too few modules found: {graph:#?}");
    let found = circles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&String> = c.iter().collect();
            let edges: Vec<String> = c
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            format!("circle of {}: {}", c.len(), edges.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "imports run in circles:\n{}", report.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long: Vec<String> = modules(&src)
        .values()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines: {long:#?}");
}

#[test]
fn the_reader_finds_imports_in_use_trees_and_paths() {
    let code = code(
        "use crate::{a::b, c::{d, e as f}};\nuse super::g;\nfn x() { crate::h::i(); let s = \"crate::no\"; }\n// crate::comment\n",
    );
    let found: BTreeSet<String> = paths(&code).into_iter().collect();
    let want = ["crate::a::b", "crate::c::d", "crate::c::e", "crate::h::i", "super::g"];
    assert_eq!(found, want.iter().map(|s| s.to_string()).collect());
}

/// The layers of `src/lib.rs`'s map, bottom to top, by top-level module.
const LAYERS: &[&[&str]] = &[
    &["zerocopy", "fs_atomic", "memory", "net", "pem", "router"],
    &["proto"],
    &["config"],
    &[
        "tls",
        "upstream",
        "middleware",
        "handler",
        "cache",
        "telemetry",
        "http",
        "cluster",
    ],
    &["pipeline"],
    &["server", "admin", "health", "import"],
    &["api"],
];

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {top} is in no layer of tests/layers.rs (nor of lib.rs's map)"))
}

/// The imports allowed between rooms of one layer (by top-level module); any other fails.
const ACROSS: &[(&str, &str)] = &[
    // the proxy handler takes a pooled upstream connection, files use the compression
    // settings, and every handler answers with the request context and the gateway's errors
    ("handler", "upstream"),
    ("handler", "middleware"),
    ("handler", "http"),
    // the proxy cache compresses stored bodies once and answers conditional requests
    ("cache", "middleware"),
    ("cache", "http"),
    // the ACME manager counts renewals in the metrics, and shares orders through the cluster
    ("tls", "telemetry"),
    ("tls", "cluster"),
    // a cluster-scoped rate-limit zone asks the cluster's Redis
    ("middleware", "cluster"),
    // `/metrics` and `/status` are served by the server's admin listener
    ("server", "admin"),
];

#[test]
fn every_import_runs_down_the_layers() {
    let graph = imports();
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut wrong = Vec::new();
    for (from, edges) in &graph {
        for to in edges {
            let (a, b) = (layer(from), layer(to));
            let (room_a, room_b) = (top(from), top(to));
            if b > a {
                wrong.push(format!("{from} (layer {}) -> {to} (layer {}): upward", a + 1, b + 1));
            } else if a == b && room_a != room_b && !ACROSS.contains(&(room_a.as_str(), room_b.as_str())) {
                wrong.push(format!("{from} -> {to}: across layer {}, not in ACROSS", a + 1));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that break the layers:\n{}", wrong.join("\n"));
}

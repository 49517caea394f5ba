//! A [`Plan`] written as a commented `gateway.toml`: each section and table says which nginx
//! file and line it came from, the caveats are listed at the top and every directive not
//! translated at the end, as comments.

use std::fmt::Write;

use super::plan::{Entry, Plan, Table};

pub fn toml(plan: &Plan, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from {} by `orta-gateway import-nginx`.",
        one_line(source)
    );
    let _ = writeln!(
        out,
        "# {} directives translated, {} reported (listed at the end). Review before use:",
        plan.translated,
        plan.reports.len()
    );
    let _ = writeln!(
        out,
        "# the gateway also adds its default security headers ([headers]; \"\" removes one) and"
    );
    let _ = writeln!(
        out,
        "# compresses with brotli and gzip unless [compression] says otherwise."
    );
    for note in &plan.notes {
        let _ = writeln!(out, "# note: {}", one_line(note));
    }
    for (name, entries) in &plan.sections {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n[{name}]");
        entries_with_sources(&mut out, "", entries);
    }
    for (title, tables) in [
        ("tls.certificates", &plan.certificates),
        ("rate_limit", &plan.zones),
        ("upstream", &plan.upstreams),
        ("route", &plan.routes),
    ] {
        for t in tables {
            table(&mut out, title, t);
        }
    }
    if !plan.reports.is_empty() {
        let _ = writeln!(out, "\n# Not translated:");
        for r in &plan.reports {
            let _ = writeln!(out, "# {}", one_line(&r.to_string()));
        }
    }
    out
}

fn table(out: &mut String, title: &str, t: &Table) {
    let _ = writeln!(out, "\n# from {}", one_line(&t.from.to_string()));
    for note in &t.notes {
        let _ = writeln!(out, "# note: {}", one_line(note));
    }
    let _ = writeln!(out, "[[{title}]]");
    for e in &t.entries {
        let _ = writeln!(out, "{} = {}", e.key, e.value);
    }
    if !t.headers.is_empty() {
        let _ = writeln!(out, "  [{title}.headers]");
        entries_with_sources(out, "  ", &t.headers);
    }
}

fn entries_with_sources(out: &mut String, indent: &str, entries: &[Entry]) {
    for e in entries {
        let _ = writeln!(
            out,
            "{indent}{} = {}    # from {}",
            e.key,
            e.value,
            one_line(&e.from.to_string())
        );
    }
}

/// Text from the nginx file made safe for a comment (which holds no control characters but
/// tabs): line breaks and the rest written as escapes.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

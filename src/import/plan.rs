//! What an imported nginx configuration becomes, before it is written out: the gateway's
//! sections as keys and TOML values, each remembering the nginx line it came from, and the
//! directives reported as not translated. Units are converted here (nginx's `20m`, `1h30m`,
//! `10r/s`), so the translator speaks in the gateway's terms.

use super::parse::At;

/// A key set in a section, with the directive it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    /// The value as TOML (already quoted where a string).
    pub value: String,
    pub from: At,
}

/// A `[[table]]` entry: a rate-limit zone, an upstream, a route, a certificate pair.
#[derive(Debug, Clone)]
pub struct Table {
    pub entries: Vec<Entry>,
    /// `[x.headers]` of a route.
    pub headers: Vec<Entry>,
    pub from: At,
    /// Comments written above the table.
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(from: &At) -> Table {
        Table {
            entries: Vec::new(),
            headers: Vec::new(),
            from: from.clone(),
            notes: Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.value.as_str())
    }

    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: String, from: &At) {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry {
            key: key.to_string(),
            value,
            from: from.clone(),
        });
    }
}

/// A directive not translated, and why.
#[derive(Debug, Clone)]
pub struct Report {
    pub at: At,
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: directive `{}` not translated: {}",
            self.at, self.name, self.reason
        )
    }
}

/// The whole translation.
#[derive(Debug, Default)]
pub struct Plan {
    /// `[server]`, `[tls]`, `[acme]`, `[headers]`, `[compression]`, `[log]`, in that order.
    pub sections: Vec<(&'static str, Vec<Entry>)>,
    pub certificates: Vec<Table>,
    pub zones: Vec<Table>,
    pub upstreams: Vec<Table>,
    pub routes: Vec<Table>,
    /// Said at the top of the output (what was translated with a caveat).
    pub notes: Vec<String>,
    pub reports: Vec<Report>,
    pub translated: usize,
}

impl Plan {
    pub fn section(&mut self, name: &'static str) -> &mut Vec<Entry> {
        if let Some(i) = self.sections.iter().position(|(n, _)| *n == name) {
            return &mut self.sections[i].1;
        }
        self.sections.push((name, Vec::new()));
        &mut self.sections.last_mut().unwrap().1
    }

    /// Sets `[section] key`; a second, different value from elsewhere is reported (the gateway
    /// has one) and no longer counted as translated (callers count a directive before setting).
    pub fn set(&mut self, section: &'static str, key: &str, value: String, from: &At, name: &str) {
        let entries = self.section(section);
        if let Some(e) = entries.iter().find(|e| e.key == key) {
            if e.value != value {
                let first = e.from.clone();
                self.translated = self.translated.saturating_sub(1);
                self.report(
                    from,
                    name,
                    &format!("the gateway has one `{section}.{key}`; the value from {first} is kept"),
                );
            }
            return;
        }
        entries.push(Entry {
            key: key.to_string(),
            value,
            from: from.clone(),
        });
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(n, _)| *n == section)
            .and_then(|(_, es)| es.iter().find(|e| e.key == key))
            .map(|e| e.value.as_str())
    }

    pub fn report(&mut self, at: &At, name: &str, reason: &str) {
        self.reports.push(Report {
            at: at.clone(),
            name: name.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// nginx's time (`30`, `30s`, `500ms`, `1m30s`, `2h`, `1d`) as the gateway writes it.
pub fn duration(text: &str) -> Option<String> {
    let mut ms: u64 = 0;
    let mut num = String::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            num.push(c);
            i += 1;
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let (unit, len) = if c == 'm' && bytes.get(i + 1) == Some(&'s') {
            (1, 2)
        } else {
            let unit = match c {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 604_800_000,
                _ => return None,
            };
            (unit, 1)
        };
        ms = ms.checked_add(n.checked_mul(unit)?)?;
        i += len;
    }
    if !num.is_empty() {
        ms = ms.checked_add(num.parse::<u64>().ok()?.checked_mul(1_000)?)?;
    }
    Some(if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    })
}

/// nginx's size (`512`, `16k`, `20m`, `1g`) as the gateway writes it.
pub fn size(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], "KiB"),
        'm' => (&lower[..lower.len() - 1], "MiB"),
        'g' => (&lower[..lower.len() - 1], "GiB"),
        _ => (lower.as_str(), "B"),
    };
    let n: u64 = digits.parse().ok()?;
    Some(format!("{n}{unit}"))
}

/// Bytes of a size nginx wrote.
pub fn size_bytes(text: &str) -> Option<u64> {
    let s = size(text)?;
    let (n, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1024 * 1024 * 1024)
    } else {
        (s.strip_suffix('B')?, 1)
    };
    n.parse::<u64>().ok()?.checked_mul(mult)
}

/// The largest unit that divides `bytes`.
pub fn size_of(bytes: u64) -> String {
    for (unit, div) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= div && bytes.is_multiple_of(div) {
            return format!("{}{unit}", bytes / div);
        }
    }
    format!("{bytes}B")
}

/// nginx's `rate=10r/s` value (`10r/s`, `30r/m`) as the gateway's `10/s`.
pub fn rate(text: &str) -> Option<String> {
    let (n, per) = text.split_once("r/")?;
    let n: u64 = n.parse().ok()?;
    matches!(per, "s" | "m").then(|| format!("{n}/{per}"))
}

/// The order sections are written in.
const ORDER: [&str; 6] = ["server", "tls", "acme", "headers", "compression", "log"];

impl Plan {
    /// Completes what the gateway needs that nginx says by omission: both listeners named
    /// (`""` for none), sections in the usual order.
    pub fn finish(&mut self) {
        let at = self
            .sections
            .iter()
            .flat_map(|(_, es)| es.iter())
            .map(|e| e.from.clone())
            .next();
        if let Some(at) = at {
            let server = self.section("server");
            for key in ["http", "https"] {
                if !server.iter().any(|e| e.key == key) {
                    server.insert(
                        0,
                        Entry {
                            key: key.into(),
                            value: "\"\"".into(),
                            from: at.clone(),
                        },
                    );
                }
            }
            if self.get("server", "max_body_size").is_none() {
                self.set("server", "max_body_size", quote("1MiB"), &at, "client_max_body_size");
                self.notes
                    .push("max_body_size is nginx's default (1m), which the config did not change".into());
            }
            if self.get("server", "https") != Some("\"\"") && self.get("tls", "source").is_none() {
                self.set("tls", "source", quote("self-signed"), &at, "listen");
                self.notes
                    .push("an ssl listener without ssl_certificate: a self-signed certificate is used".into());
            }
        }
        self.hoist_headers();
        self.sections
            .sort_by_key(|(name, _)| ORDER.iter().position(|o| o == name).unwrap_or(ORDER.len()));
    }
}

impl Plan {
    /// Headers every route carries alike (a server's `add_header`s, inherited by each
    /// location) are written once, in `[headers]`.
    fn hoist_headers(&mut self) {
        let Some(first) = self.routes.first() else { return };
        let same = |a: &Table| {
            a.headers.len() == first.headers.len()
                && a.headers
                    .iter()
                    .zip(&first.headers)
                    .all(|(x, y)| x.key == y.key && x.value == y.value)
        };
        if first.headers.is_empty() || !self.routes.iter().all(same) {
            return;
        }
        let headers = first.headers.clone();
        for r in &mut self.routes {
            r.headers.clear();
        }
        self.section("headers").extend(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(duration("60").as_deref(), Some("60s"));
        assert_eq!(duration("1m30s").as_deref(), Some("90s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("2h").as_deref(), Some("7200s"));
        assert_eq!(duration("30d").as_deref(), Some("2592000s"));
        assert_eq!(duration("x"), None);
        assert_eq!(size("20m").as_deref(), Some("20MiB"));
        assert_eq!(size("8K").as_deref(), Some("8KiB"));
        assert_eq!(size("1024").as_deref(), Some("1024B"));
        assert_eq!(size_bytes("4k"), Some(4096));
        assert_eq!(size_of(32 * 1024), "32KiB");
        assert_eq!(rate("10r/s").as_deref(), Some("10/s"));
        assert_eq!(rate("30r/m").as_deref(), Some("30/m"));
        assert_eq!(rate("5r/h"), None);
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
    }
}

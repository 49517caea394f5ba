//! Validation: raw TOML → typed [`Config`]. Every problem in the file is collected (not just the
//! first) with the span of the value at fault, so `check` can list them all.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::Diagnostics;
use super::files::FileSystem;
use super::model::*;
use super::raw::*;
use super::settings::*;
use super::units::{parse_duration, parse_rate, parse_size};
use crate::proto::client_ip::{TrustedProxies, parse_net};

mod cache;
mod cluster;
mod route;
mod sections;
mod server;
mod tls;
mod upstream;

const SECTIONS: &str =
    "server, tls, acme, headers, compression, cache, cache_zone, rate_limit, upstream, route, log, admin, api, cluster";

/// Everything read from the file, section by section. A section that failed to deserialize is
/// `None` (its error is already recorded) and the checks that depend on it are skipped.
#[derive(Default)]
struct RawConfig {
    server: Option<(Range<usize>, RawServer)>,
    tls: Option<(Range<usize>, RawTls)>,
    acme: Option<(Range<usize>, RawAcme)>,
    headers: Option<(Range<usize>, RawHeaders)>,
    compression: Option<(Range<usize>, RawCompression)>,
    cache: Option<(Range<usize>, RawCache)>,
    rate_limits: Vec<(Range<usize>, RawRateLimit)>,
    cache_zones: Vec<(Range<usize>, RawCacheZone)>,
    upstreams: Vec<(Range<usize>, RawUpstream)>,
    routes: Vec<(Range<usize>, RawRoute)>,
    log: Option<(Range<usize>, RawLog)>,
    admin: Option<(Range<usize>, RawAdmin)>,
    api: Option<(Range<usize>, RawApi)>,
    cluster: Option<(Range<usize>, RawCluster)>,
    /// Some `[[upstream]]` or `[[rate_limit]]` could not be read: don't report references to
    /// them as unknown.
    upstreams_incomplete: bool,
    zones_incomplete: bool,
    cache_zones_incomplete: bool,
}

pub(super) fn parse(path: &Path, text: &str, fs: &dyn FileSystem) -> Result<Loaded, Diagnostics> {
    let mut d = Diagnostics::new(path, text);
    let (root, errors) = DeTable::parse_recoverable(text);
    for e in &errors {
        d.error(e.span(), e.message().to_string());
    }
    if d.has_errors() {
        return Err(d);
    }
    let raw = read_sections(&mut d, root.into_inner());
    let config = Validator { d: &mut d, fs }.config(path, raw);
    match config {
        Some(config) if !d.has_errors() => Ok(Loaded {
            config: Arc::new(config),
            warnings: d,
        }),
        _ => Err(d),
    }
}

fn read_sections(d: &mut Diagnostics, root: DeTable<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in root {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "server" => raw.server = section(d, value),
            "tls" => raw.tls = section(d, value),
            "acme" => raw.acme = section(d, value),
            "headers" => raw.headers = section(d, value),
            "compression" => raw.compression = section(d, value),
            "cache" => raw.cache = section(d, value),
            "log" => raw.log = section(d, value),
            "admin" => raw.admin = section(d, value),
            "api" => raw.api = section(d, value),
            "cluster" => raw.cluster = section(d, value),
            "rate_limit" => raw.zones_incomplete = !array_section(d, value, "rate_limit", &mut raw.rate_limits),
            "cache_zone" => {
                raw.cache_zones_incomplete = !array_section(d, value, "cache_zone", &mut raw.cache_zones);
            }
            "upstream" => raw.upstreams_incomplete = !array_section(d, value, "upstream", &mut raw.upstreams),
            "route" => {
                array_section(d, value, "route", &mut raw.routes);
            }
            other => d.error(
                Some(key_span),
                format!("unknown section `{other}`, expected one of: {SECTIONS}"),
            ),
        }
    }
    raw
}

/// Deserializes one table. A bad key does not hide the others: the key at fault is dropped
/// and the rest read again, so every mistake in the table is reported. The section comes back
/// (without its bad keys) so the rest can still be checked; its errors are already recorded.
fn section<T: DeserializeOwned>(d: &mut Diagnostics, value: Spanned<DeValue<'_>>) -> Option<(Range<usize>, T)> {
    let header = value.span();
    let DeValue::Table(mut table) = value.into_inner() else {
        d.error(Some(header), "expected a table");
        return None;
    };
    // a table written with a [header] may span only its header: widen it to its keys
    let span = extent(&table, header);
    loop {
        let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        let e = match T::deserialize(ValueDeserializer::from(attempt)) {
            Ok(v) => return Some((span, v)),
            Err(e) => e,
        };
        d.error(e.span().or(Some(span.clone())), e.message().to_string());
        // the key whose name or value holds the error
        // (sub-tables written as [a.b] headers may not span their keys: take the last key
        // that starts before the error)
        let at = e.span().map(|s| s.start);
        let bad = at.and_then(|at| {
            table
                .iter()
                .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                .or_else(|| {
                    table
                        .iter()
                        .filter(|(k, _)| k.span().start <= at)
                        .max_by_key(|(k, _)| k.span().start)
                })
                .map(|(k, _)| k.clone())
        });
        match bad {
            Some(k) => {
                table.remove(&k);
            }
            None => return None,
        }
    }
}

/// The byte range covering a table and everything in it.
fn extent(table: &DeTable<'_>, mut span: Range<usize>) -> Range<usize> {
    for (k, v) in table.iter() {
        span.start = span.start.min(k.span().start);
        span.end = span.end.max(k.span().end).max(v.span().end);
        if let DeValue::Table(t) = v.get_ref() {
            span = extent(t, span);
        }
    }
    span
}

/// Reads an array of tables element by element, so a mistake in one `[[route]]` does not hide
/// the mistakes in the others. Returns false when some element could not be read.
fn array_section<T: DeserializeOwned>(
    d: &mut Diagnostics,
    value: Spanned<DeValue<'_>>,
    name: &str,
    out: &mut Vec<(Range<usize>, T)>,
) -> bool {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        d.error(
            Some(span),
            format!("`{name}` must be an array of tables: write [[{name}]]"),
        );
        return false;
    };
    let mut complete = true;
    for item in items {
        match section(d, item) {
            Some(v) => out.push(v),
            None => complete = false,
        }
    }
    complete
}

struct Validator<'a> {
    d: &'a mut Diagnostics,
    /// Where roots, certificates and keys are looked up.
    fs: &'a dyn FileSystem,
}

/// The names routes may refer to.
struct Known<'a> {
    upstreams: &'a HashSet<String>,
    zones: &'a HashSet<String>,
    cache_zones: &'a HashSet<String>,
}

/// Listener addresses claimed so far, to find two listeners on one address.
type Claims = HashMap<SocketAddr, (String, Range<usize>)>;

impl Validator<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.d.error(Some(span), msg);
    }

    /// A required key is missing: reported unless the table already has an error (the key may
    /// be there, misspelt or mistyped, and that error says more).
    fn missing(&mut self, span: Range<usize>, msg: impl Into<String>) {
        if !self.d.has_error_within(&span) {
            self.d.error(Some(span), msg);
        }
    }

    fn config(&mut self, path: &Path, raw: RawConfig) -> Option<Config> {
        let mut claims = Claims::new();
        let server = self.server(raw.server.as_ref(), &mut claims);
        let upstream_names: HashSet<String> = raw
            .upstreams
            .iter()
            .filter_map(|(_, u)| u.name.as_ref().map(|n| n.get_ref().clone()))
            .collect();
        let zone_names: HashSet<String> = raw
            .rate_limits
            .iter()
            .filter_map(|(_, z)| z.name.as_ref().map(|n| n.get_ref().clone()))
            .collect();
        let upstreams = self.upstreams(&raw.upstreams, server.hosts_file.as_ref());
        let headers = match &raw.headers {
            Some((_, h)) => {
                if let Some(o) = &h.override_upstream {
                    self.err(o.span(), "`override` only applies to a route's [route.headers]");
                }
                self.headers(&SecurityHeaders::default(), h)
            }
            None => SecurityHeaders::default(),
        };
        let cache_zones = self.cache_zones(&raw.cache_zones);
        let known = Known {
            upstreams: &upstream_names,
            zones: &zone_names,
            cache_zones: &cache_zones.iter().map(|z| z.name.clone()).collect(),
        };
        let routes = self.routes(&raw, &known, &headers);
        let acme = raw.acme.as_ref().map(|(span, a)| self.acme(span.clone(), a));
        let tls = self.tls(raw.tls.as_ref(), acme.flatten(), &routes, &server);
        let compression = raw
            .compression
            .as_ref()
            .map_or_else(CompressionSettings::default, |(_, c)| self.compression(c));
        let cache = raw
            .cache
            .as_ref()
            .map_or_else(CacheSettings::default, |(_, c)| self.cache(c));
        let cluster = raw.cluster.as_ref().and_then(|(span, c)| {
            self.cluster(
                path,
                span.clone(),
                c,
                matches!(tls, Some(ref t) if matches!(t.source, CertSource::Acme(_))),
            )
        });
        let mut rate_limits: Vec<ZoneSpec> = Vec::new();
        for (span, z) in &raw.rate_limits {
            if let Some(zone) = self.zone(span.clone(), z, raw.cluster.is_some()) {
                if rate_limits.iter().any(|o| o.name == zone.name) {
                    let name = z.name.as_ref().map_or(span.clone(), |n| n.span());
                    self.err(name, format!("rate_limit zone `{}` is defined twice", zone.name));
                }
                rate_limits.push(zone);
            }
        }
        let log = self.log(raw.log.as_ref());
        let admin = self.admin(raw.admin.as_ref(), &mut claims);
        let api = self.api(raw.api.as_ref(), &mut claims);
        let tls = tls?;
        Some(Config {
            file: path.to_path_buf(),
            server,
            tls,
            upstreams,
            routes,
            headers,
            rate_limits,
            compression,
            cache,
            cache_zones,
            log,
            admin,
            api,
            cluster,
        })
    }

    // ---- values ----------------------------------------------------------------------------

    fn duration(&mut self, v: Option<&Spanned<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(s.span(), e);
                    default
                }
            },
        }
    }

    fn positive_duration(&mut self, v: Option<&Spanned<String>>, default: Duration) -> Duration {
        let d = self.duration(v, default);
        if d.is_zero() {
            if let Some(s) = v {
                self.err(s.span(), "must be longer than 0");
            }
            return default;
        }
        d
    }

    fn size(&mut self, v: Option<&Spanned<String>>, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => match parse_size(s.get_ref()) {
                Ok(n) => n,
                Err(e) => {
                    self.err(s.span(), e);
                    default
                }
            },
        }
    }

    fn count(&mut self, v: Option<&Spanned<i64>>, default: u64, min: i64, max: i64) -> u64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(n.get_ref()) => *n.get_ref() as u64,
            Some(n) => {
                self.err(
                    n.span(),
                    format!("must be between {min} and {max}, found {}", n.get_ref()),
                );
                default
            }
        }
    }

    // ---- sections --------------------------------------------------------------------------
}

/// `host:port` or `ip:port` of an upstream server.
pub(crate) fn parse_server_addr(text: &str) -> Result<ServerAddr, String> {
    let text = text.trim();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(ServerAddr::Ip(a));
    }
    let bad = || format!("`{text}` is not a server address: expected HOST:PORT, e.g. \"127.0.0.1:8001\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = normalize_host(host).ok_or_else(bad)?;
    if port == 0 {
        return Err(bad());
    }
    Ok(ServerAddr::Name(host, port))
}

/// A lower-cased DNS name, or `None` when it is not one.
pub(crate) fn normalize_host(h: &str) -> Option<String> {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        });
    ok.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::collections::HashMap;
    use std::io;

    /// A file system held in memory: validation asks it, never the disk.
    struct Memory {
        files: HashMap<PathBuf, (Vec<u8>, u32)>,
        dirs: Vec<PathBuf>,
    }

    impl FileSystem for Memory {
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .get(path)
                .map(|f| f.0.clone())
                .ok_or(io::ErrorKind::NotFound.into())
        }
        fn list_dir(&self, path: &Path) -> io::Result<()> {
            self.dirs
                .iter()
                .any(|d| d == path)
                .then_some(())
                .ok_or(io::ErrorKind::NotFound.into())
        }
        fn mode(&self, path: &Path) -> io::Result<u32> {
            self.files.get(path).map(|f| f.1).ok_or(io::ErrorKind::NotFound.into())
        }
    }

    #[test]
    fn validation_asks_the_file_system_it_is_given() {
        let cert = rcgen::generate_simple_self_signed(vec!["shop.test".into()]).unwrap();
        let mut fs = Memory {
            files: HashMap::new(),
            dirs: vec![PathBuf::from("/srv/www")],
        };
        fs.files
            .insert("/keys/shop.crt".into(), (cert.cert.pem().into_bytes(), 0o644));
        fs.files.insert(
            "/keys/shop.key".into(),
            (cert.key_pair.serialize_pem().into_bytes(), 0o644),
        );
        let text = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n[tls]\nsource = \"files\"\n\
                    cert = \"/keys/shop.crt\"\nkey = \"/keys/shop.key\"\n[[route]]\npath = \"/\"\nroot = \"/srv/www\"\n";
        let Err(d) = parse_with_fs(text, &fs) else {
            panic!("a key readable by others is refused")
        };
        let e = d.error_lines();
        assert_eq!(e.len(), 1, "only the key's mode is wrong: {e:?}");
        assert!(
            e[0].starts_with("t.toml:7:7: private key /keys/shop.key is readable by others (mode 0644)"),
            "{e:?}"
        );
        fs.files.get_mut(Path::new("/keys/shop.key")).unwrap().1 = 0o600;
        let loaded = parse_with_fs(text, &fs).expect("root, certificate and key as the file system has them");
        assert_eq!(loaded.config.routes.len(), 1);
        // the same text on the real disk: neither the root nor the files exist there
        let e = match parse(Path::new("t.toml"), text) {
            Err(d) => d.error_lines(),
            Ok(_) => vec![],
        };
        assert_eq!(e.len(), 2, "{e:?}");
    }

    fn parse_with_fs(text: &str, fs: &dyn FileSystem) -> Result<Loaded, Diagnostics> {
        crate::config::parse_with(Path::new("t.toml"), text, fs)
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(d) => d.error_lines(),
        }
    }

    #[test]
    fn each_headers_key_sets_the_header_the_table_names_for_it() {
        let mut text = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n[headers]\n".to_string();
        for h in &SECURITY_HEADERS {
            text += &format!("{} = \"value of {}\"\n", h.key, h.key);
        }
        let loaded = parse(Path::new("t.toml"), &text).unwrap();
        for (h, v) in SECURITY_HEADERS.iter().zip(&loaded.config.headers.values) {
            assert_eq!(v.as_ref().unwrap(), &format!("value of {}", h.key), "{}", h.name);
        }
    }

    #[test]
    fn minimal_config_is_valid() {
        let ok = parse(
            Path::new("t.toml"),
            "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n[[upstream]]\nname = \"b\"\nservers = [\"127.0.0.1:9\"]\n[[route]]\npath = \"/\"\nupstream = \"b\"\n",
        )
        .unwrap();
        assert_eq!(ok.config.routes.len(), 1);
        assert_eq!(ok.config.server.https, None);
    }

    #[test]
    fn reports_every_problem_with_positions() {
        let e = errors(
            "[server]\nhttp = \"nope\"\nmax_body_size = \"3 parsecs\"\n[[route]]\npath = \"/\"\nupstream = \"missing\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("t.toml:2:8: `nope` is not a listen address"), "{e:?}");
        assert!(e[1].starts_with("t.toml:3:17: unknown size unit"), "{e:?}");
        assert!(
            e[2].starts_with("t.toml:6:12: route names unknown upstream `missing`"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_keys_in_several_routes_are_all_reported() {
        let e = errors("[[route]]\npath = \"/a/\"\nuptream = \"x\"\n[[route]]\npath = \"/b/\"\nrot = \"x\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("t.toml:3:1: unknown field `uptream`"), "{e:?}");
        assert!(e[1].starts_with("t.toml:6:1: unknown field `rot`"), "{e:?}");
    }

    #[test]
    fn hosts_and_servers() {
        assert_eq!(normalize_host("WWW.Example.com."), Some("www.example.com".into()));
        assert_eq!(normalize_host("bad host"), None);
        assert_eq!(
            parse_server_addr("backend:8000"),
            Ok(ServerAddr::Name("backend".into(), 8000))
        );
        assert!(parse_server_addr("backend").is_err());
        assert!(parse_net("10.0.0.0/8").is_some());
        assert!(parse_net("10.0.0.1").is_some());
        assert_eq!(parse_net("10.0.0.0/33"), None);
    }
}

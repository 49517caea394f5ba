//! Validation: raw TOML → typed [`Config`]. Every problem in the file is collected (not just the
//! first) with the span of the value at fault, so `check` can list them all.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::Diagnostics;
use super::model::*;
use super::raw::*;
use super::units::{parse_duration, parse_rate, parse_size};
use crate::http::client_ip::{TrustedProxies, parse_net};

const SECTIONS: &str = "server, tls, acme, headers, compression, cache, rate_limit, upstream, route, log, admin, api";

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
    upstreams: Vec<(Range<usize>, RawUpstream)>,
    routes: Vec<(Range<usize>, RawRoute)>,
    log: Option<(Range<usize>, RawLog)>,
    admin: Option<(Range<usize>, RawAdmin)>,
    api: Option<(Range<usize>, RawApi)>,
    /// Some `[[upstream]]` or `[[rate_limit]]` could not be read: don't report references to
    /// them as unknown.
    upstreams_incomplete: bool,
    zones_incomplete: bool,
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Loaded, Diagnostics> {
    let mut d = Diagnostics::new(path, text);
    let (root, errors) = DeTable::parse_recoverable(text);
    for e in &errors {
        d.error(e.span(), e.message().to_string());
    }
    if d.has_errors() {
        return Err(d);
    }
    let raw = read_sections(&mut d, root.into_inner());
    let config = Validator { d: &mut d }.config(path, raw);
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
            "rate_limit" => raw.zones_incomplete = !array_section(d, value, "rate_limit", &mut raw.rate_limits),
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
        let routes = self.routes(&raw, &upstream_names, &zone_names, &headers);
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
        let mut rate_limits: Vec<ZoneSpec> = Vec::new();
        for (span, z) in &raw.rate_limits {
            if let Some(zone) = self.zone(span.clone(), z) {
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
            log,
            admin,
            api,
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

    fn listen_addr(&mut self, v: &Spanned<String>, what: &str, claims: &mut Claims) -> Option<SocketAddr> {
        let text = v.get_ref().trim();
        let addr: SocketAddr = match text.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(
                    v.span(),
                    format!("`{text}` is not a listen address: expected IP:PORT, e.g. \"127.0.0.1:8080\""),
                );
                return None;
            }
        };
        if addr.port() != 0 {
            if let Some((other, other_span)) = claims.get(&addr) {
                let (line, col) = self.d.line_col(other_span.start);
                let msg = format!("two listeners on {addr}: {what} and {other} (line {line}, column {col})");
                self.err(v.span(), msg);
                return Some(addr);
            }
            claims.insert(addr, (what.to_string(), v.span()));
        }
        Some(addr)
    }

    fn optional_listener(
        &mut self,
        v: Option<&Spanned<String>>,
        what: &str,
        claims: &mut Claims,
    ) -> Option<SocketAddr> {
        let v = v?;
        if v.get_ref().trim().is_empty() {
            return None;
        }
        self.listen_addr(v, what, claims)
    }

    // ---- sections --------------------------------------------------------------------------

    fn server(&mut self, raw: Option<&(Range<usize>, RawServer)>, claims: &mut Claims) -> ServerSettings {
        let mut s = ServerSettings::default();
        let Some((span, r)) = raw else {
            // no [server]: the defaults, but still claim their addresses
            for (addr, what) in [(s.http, "server.http"), (s.https, "server.https")] {
                if let Some(a) = addr {
                    claims.insert(a, (what.to_string(), 0..0));
                }
            }
            return s;
        };
        s.http = match &r.http {
            None => s.http,
            Some(_) => self.optional_listener(r.http.as_ref(), "server.http", claims),
        };
        s.https = match &r.https {
            None => s.https,
            Some(_) => self.optional_listener(r.https.as_ref(), "server.https", claims),
        };
        if s.http.is_none() && s.https.is_none() {
            self.missing(span.clone(), "[server] needs at least one listener: `http` or `https`");
        }
        s.redirect_to_https = r.redirect_to_https.unwrap_or(s.redirect_to_https);
        s.workers = self.count(r.workers.as_ref(), 0, 0, 1024) as usize;
        s.max_body_size = self.size(r.max_body_size.as_ref(), s.max_body_size);
        let header = self.size(r.max_header_size.as_ref(), s.max_header_size as u64);
        if let Some(v) = &r.max_header_size
            && !(1024..=(1 << 20)).contains(&header)
        {
            self.err(v.span(), "max_header_size must be between 1KiB and 1MiB");
        }
        s.max_header_size = header.clamp(1024, 1 << 20) as usize;
        s.header_read_timeout = self.positive_duration(r.header_read_timeout.as_ref(), s.header_read_timeout);
        s.keepalive_timeout = self.positive_duration(r.keepalive_timeout.as_ref(), s.keepalive_timeout);
        s.shutdown_grace = self.duration(r.shutdown_grace.as_ref(), s.shutdown_grace);
        s.max_connections = self.count(r.max_connections.as_ref(), s.max_connections as u64, 1, 10_000_000) as usize;
        s.server_header = r.server_header.as_ref().is_some_and(|b| *b.get_ref());
        s.underscores_in_headers = r.underscores_in_headers.as_ref().is_some_and(|b| *b.get_ref());
        s.body_read_timeout = self.positive_duration(r.body_read_timeout.as_ref(), s.body_read_timeout);
        s.send_timeout = self.positive_duration(r.send_timeout.as_ref(), s.send_timeout);
        s.max_connections_per_ip = self.count(
            r.max_connections_per_ip.as_ref(),
            s.max_connections_per_ip as u64,
            1,
            10_000_000,
        ) as usize;
        if let Some(list) = &r.trusted_proxies {
            let mut nets = Vec::new();
            for p in list.get_ref() {
                match parse_net(p.get_ref()) {
                    Some(n) => nets.push(n),
                    None => self.err(
                        p.span(),
                        format!("`{}` is not a CIDR or IP address, e.g. \"10.0.0.0/8\"", p.get_ref()),
                    ),
                }
            }
            s.trusted_proxies = TrustedProxies::new(nets);
        }
        s.proxy_protocol = r.proxy_protocol.as_ref().is_some_and(|b| *b.get_ref());
        if let Some(h) = r.hosts_file.as_ref().filter(|h| !h.get_ref().trim().is_empty()) {
            match std::fs::read_to_string(h.get_ref()) {
                Ok(_) => s.hosts_file = Some(PathBuf::from(h.get_ref())),
                Err(e) => self.err(h.span(), format!("hosts_file `{}` is not readable: {e}", h.get_ref())),
            }
        }
        if let Some(v) = r.proxy_protocol.as_ref().filter(|b| *b.get_ref())
            && s.trusted_proxies.is_empty()
        {
            self.err(
                v.span(),
                "proxy_protocol = true needs server.trusted_proxies: PROXY headers are only believed from them",
            );
        }
        s
    }

    fn tls(
        &mut self,
        raw: Option<&(Range<usize>, RawTls)>,
        acme: Option<AcmeSettings>,
        routes: &[RouteSpec],
        server: &ServerSettings,
    ) -> Option<TlsSettings> {
        let default_dir = PathBuf::from("certs/self-signed");
        let hosts: Vec<String> = {
            let mut h: Vec<String> = routes.iter().flat_map(|r| r.hosts.iter().cloned()).collect();
            h.sort();
            h.dedup();
            h
        };
        let Some((_, r)) = raw else {
            return Some(TlsSettings {
                source: CertSource::SelfSigned {
                    dir: default_dir,
                    hosts,
                },
                min_version: TlsVersion::Tls12,
            });
        };
        let min_version = match r.min_version.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("1.2", _)) => TlsVersion::Tls12,
            Some(("1.3", _)) => TlsVersion::Tls13,
            Some((other, span)) => {
                self.err(
                    span,
                    format!("tls.min_version `{other}` is not supported: use \"1.2\" or \"1.3\""),
                );
                TlsVersion::Tls12
            }
        };
        let source = match r.source.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("self-signed", _)) => {
                let dir = r
                    .self_signed_dir
                    .as_ref()
                    .map_or(default_dir, |d| PathBuf::from(d.get_ref()));
                CertSource::SelfSigned { dir, hosts }
            }
            Some(("files", span)) => {
                let mut certs = Vec::new();
                match (&r.cert, &r.key) {
                    (Some(c), Some(k)) => certs.extend(self.cert_pair(c, k)),
                    (None, None) if r.certificates.is_some() => {}
                    (Some(c), None) => self.err(c.span(), "tls.cert needs tls.key beside it"),
                    (None, Some(k)) => self.err(k.span(), "tls.key needs tls.cert beside it"),
                    (None, None) => self.missing(span, "tls.source = \"files\" needs `cert` and `key`"),
                }
                for pair in r.certificates.iter().flatten() {
                    let p = pair.get_ref();
                    certs.extend(self.cert_pair(&p.cert, &p.key));
                }
                CertSource::Files(certs)
            }
            Some(("acme", span)) => match acme {
                Some(a) => {
                    if a.challenge == AcmeChallenge::Http01 && server.http.is_none() {
                        self.err(
                            span.clone(),
                            "the http-01 challenge needs the plain listener: set server.http",
                        );
                    }
                    if server.https.is_none() {
                        self.err(span, "ACME certificates need the HTTPS listener: set server.https");
                    }
                    CertSource::Acme(a)
                }
                None => {
                    self.missing(span, "tls.source = \"acme\" needs an [acme] section with `domains`");
                    return None;
                }
            },
            Some((other, span)) => {
                self.err(
                    span,
                    format!("tls.source `{other}` is not one of \"self-signed\", \"files\", \"acme\""),
                );
                return None;
            }
        };
        Some(TlsSettings { source, min_version })
    }

    /// `[acme]`: checked whenever present, used with `tls.source = "acme"`. Needs no network.
    fn acme(&mut self, span: Range<usize>, r: &RawAcme) -> Option<AcmeSettings> {
        let mut ok = true;
        let mut domains = Vec::new();
        match &r.domains {
            Some(list) if !list.get_ref().is_empty() => {
                for d in list.get_ref() {
                    match normalize_host(d.get_ref()).filter(|h| h.contains('.') || h == "localhost") {
                        Some(h) if h.starts_with("*.") || !h.contains('*') => {
                            if !domains.contains(&h) {
                                domains.push(h)
                            }
                        }
                        _ => {
                            self.err(d.span(), format!("`{}` is not a domain name", d.get_ref()));
                            ok = false;
                        }
                    }
                }
            }
            Some(list) => {
                self.err(list.span(), "acme.domains is empty");
                ok = false;
            }
            None => {
                self.missing(
                    span.clone(),
                    "[acme] needs `domains`, e.g. [\"example.com\", \"www.example.com\"]",
                );
                ok = false;
            }
        }
        let mut contact = Vec::new();
        for c in r.contact.iter().flat_map(|l| l.get_ref()) {
            match c.get_ref().strip_prefix("mailto:") {
                Some(addr) if addr.contains('@') && !addr.contains(char::is_whitespace) => {
                    contact.push(c.get_ref().clone())
                }
                _ => {
                    self.err(c.span(), format!("contact `{}` must be a mailto: address", c.get_ref()));
                    ok = false;
                }
            }
        }
        let directory = match r.directory.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
            None | Some(("letsencrypt", _)) => LETS_ENCRYPT.to_string(),
            Some(("letsencrypt-staging", _)) => LETS_ENCRYPT_STAGING.to_string(),
            Some((url, span)) => match url.parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => url.to_string(),
                _ => {
                    self.err(
                        span,
                        format!(
                            "acme.directory `{url}` is not \"letsencrypt\", \"letsencrypt-staging\" or an https URL"
                        ),
                    );
                    ok = false;
                    String::new()
                }
            },
        };
        let challenge = match r.challenge.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
            None | Some(("tls-alpn-01", _)) => AcmeChallenge::TlsAlpn01,
            Some(("http-01", _)) => AcmeChallenge::Http01,
            Some((other, span)) => {
                self.err(
                    span,
                    format!("acme.challenge `{other}` is not \"tls-alpn-01\" or \"http-01\""),
                );
                ok = false;
                AcmeChallenge::TlsAlpn01
            }
        };
        let cache_dir = r
            .cache_dir
            .as_ref()
            .map_or_else(|| PathBuf::from("certs/acme"), |d| PathBuf::from(d.get_ref()));
        let check_interval = self.positive_duration(r.check_interval.as_ref(), Duration::from_secs(12 * 3600));
        let renew_before = match &r.renew_before {
            None => RenewBefore::Auto,
            Some(v) if v.get_ref() == "auto" => RenewBefore::Auto,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => RenewBefore::Before(d),
                _ => {
                    self.err(
                        v.span(),
                        format!(
                            "renew_before `{}` is not \"auto\" or a duration like \"30d\"",
                            v.get_ref()
                        ),
                    );
                    ok = false;
                    RenewBefore::Auto
                }
            },
        };
        let ca_root = match r.ca_root.as_ref().filter(|c| !c.get_ref().trim().is_empty()) {
            None => None,
            Some(c) => {
                let path = PathBuf::from(c.get_ref());
                if let Err(e) = crate::pem::load_chain(&path) {
                    self.err(c.span(), e);
                    ok = false;
                }
                Some(path)
            }
        };
        ok.then_some(AcmeSettings {
            domains,
            contact,
            directory,
            challenge,
            cache_dir,
            check_interval,
            renew_before,
            ca_root,
        })
    }

    fn cert_pair(&mut self, cert: &Spanned<String>, key: &Spanned<String>) -> Option<LoadedCert> {
        let cert_path = PathBuf::from(cert.get_ref());
        let key_path = PathBuf::from(key.get_ref());
        let chain = match crate::pem::load_chain(&cert_path) {
            Ok(c) => c,
            Err(e) => {
                self.err(cert.span(), e);
                return None;
            }
        };
        if let Err(e) = crate::pem::check_key_permissions(&key_path) {
            self.err(key.span(), e);
            return None;
        }
        let signing_key = match crate::pem::load_key(&key_path) {
            Ok(k) => k,
            Err(e) => {
                self.err(key.span(), e);
                return None;
            }
        };
        let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
        if let Err(e) = certified.keys_match() {
            self.err(
                key.span(),
                format!(
                    "{} does not match the certificate {}: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
            );
            return None;
        }
        Some(LoadedCert {
            cert_path,
            key_path,
            key: Arc::new(certified),
        })
    }

    fn upstreams(&mut self, raw: &[(Range<usize>, RawUpstream)], hosts_file: Option<&PathBuf>) -> Vec<UpstreamSpec> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        for (span, u) in raw {
            let Some(name) = &u.name else {
                self.missing(span.clone(), "[[upstream]] needs a `name`");
                continue;
            };
            if name.get_ref().is_empty() {
                self.err(name.span(), "upstream name must not be empty");
                continue;
            }
            if seen.insert(name.get_ref().clone(), name.span()).is_some() {
                self.err(name.span(), format!("upstream `{}` is defined twice", name.get_ref()));
                continue;
            }
            let mut servers = Vec::new();
            match &u.servers {
                None => self.missing(span.clone(), format!("upstream `{}` needs `servers`", name.get_ref())),
                Some(list) if list.get_ref().is_empty() => {
                    self.err(list.span(), format!("upstream `{}` has no servers", name.get_ref()))
                }
                Some(list) => {
                    for s in list.get_ref() {
                        match parse_server_addr(s.get_ref()) {
                            Ok(a) => {
                                if servers.contains(&a) {
                                    self.err(s.span(), format!("server {a} is listed twice"));
                                }
                                servers.push(a)
                            }
                            Err(e) => self.err(s.span(), e),
                        }
                    }
                }
            }
            let balance = match u.balance.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
                None | Some(("round_robin", _)) => Balance::RoundRobin,
                Some(("least_conn", _)) => Balance::LeastConn,
                Some(("ip_hash", _)) => Balance::IpHash,
                Some((other, span)) => {
                    self.err(
                        span,
                        format!("balance `{other}` is not one of \"round_robin\", \"least_conn\", \"ip_hash\""),
                    );
                    Balance::RoundRobin
                }
            };
            let connect_timeout = self.positive_duration(u.connect_timeout.as_ref(), Duration::from_secs(2));
            let read_timeout = self.positive_duration(u.read_timeout.as_ref(), Duration::from_secs(60));
            let retries = self.count(u.retries.as_ref(), 1, 0, 16) as u32;
            let health = u.health.as_ref().map(|h| self.health(h));
            out.push(UpstreamSpec {
                name: name.get_ref().clone(),
                servers,
                balance,
                connect_timeout,
                read_timeout,
                retries,
                health,
                hosts_file: hosts_file.cloned(),
            });
        }
        out
    }

    fn health(&mut self, h: &Spanned<RawHealth>) -> HealthSpec {
        let r = h.get_ref();
        let path = match &r.path {
            Some(p) if p.get_ref().starts_with('/') && p.get_ref().parse::<http::Uri>().is_ok() => p.get_ref().clone(),
            Some(p) => {
                self.err(
                    p.span(),
                    format!("health path `{}` must be a path starting with /", p.get_ref()),
                );
                "/".into()
            }
            None => {
                self.missing(h.span(), "[upstream.health] needs a `path`, e.g. \"/api/health\"");
                "/".into()
            }
        };
        let interval = self.positive_duration(r.interval.as_ref(), Duration::from_secs(5));
        let timeout = self.positive_duration(r.timeout.as_ref(), Duration::from_secs(2));
        let fails = self.count(r.fails.as_ref(), 3, 1, 100) as u32;
        let passes = self.count(r.passes.as_ref(), 2, 1, 100) as u32;
        HealthSpec {
            path,
            interval,
            timeout,
            fails,
            passes,
        }
    }

    fn routes(
        &mut self,
        raw: &RawConfig,
        upstreams: &HashSet<String>,
        zones: &HashSet<String>,
        global_headers: &SecurityHeaders,
    ) -> Vec<RouteSpec> {
        let mut out: Vec<RouteSpec> = Vec::new();
        let mut seen: HashMap<(String, String), Range<usize>> = HashMap::new();
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        for (span, r) in &raw.routes {
            let Some(path) = &r.path else {
                self.missing(span.clone(), "[[route]] needs a `path`, e.g. \"/\" or \"/api/\"");
                continue;
            };
            let p = path.get_ref();
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) || p.split('/').any(|s| s == "." || s == "..") {
                self.err(
                    path.span(),
                    format!("route path `{p}` must be a plain path prefix starting with /"),
                );
                continue;
            }
            let mut hosts = Vec::new();
            if let Some(list) = &r.host {
                for h in list.get_ref() {
                    match normalize_host(h.get_ref()) {
                        Some(host) => hosts.push(host),
                        None => self.err(h.span(), format!("`{}` is not a host name", h.get_ref())),
                    }
                }
                if list.get_ref().is_empty() {
                    self.err(
                        list.span(),
                        "host = [] matches nothing: leave `host` out to match every host",
                    );
                }
            }
            for key in hosts.iter().map(String::as_str).chain(hosts.is_empty().then_some("")) {
                if let Some(prev) = seen.insert((key.to_string(), p.clone()), path.span()) {
                    let (l, c) = self.d.line_col(prev.start);
                    let host = if key.is_empty() {
                        "any host".to_string()
                    } else {
                        key.to_string()
                    };
                    self.err(
                        path.span(),
                        format!("duplicate route for {host} and path `{p}` (first at line {l}, column {c})"),
                    );
                }
            }
            let actions = [r.upstream.is_some(), r.root.is_some(), r.redirect.is_some()];
            match actions.iter().filter(|x| **x).count() {
                0 => {
                    self.missing(span.clone(), "a route needs one of `upstream`, `root` or `redirect`");
                    continue;
                }
                1 => {}
                _ => {
                    self.err(
                        span.clone(),
                        "a route takes only one of `upstream`, `root` or `redirect`",
                    );
                    continue;
                }
            }
            let action = if let Some(u) = &r.upstream {
                if !upstreams.contains(u.get_ref()) && !raw.upstreams_incomplete {
                    self.err(u.span(), format!("route names unknown upstream `{}`", u.get_ref()));
                    continue;
                }
                RouteAction::Upstream(u.get_ref().clone())
            } else if let Some(root) = &r.root {
                let root_path = PathBuf::from(root.get_ref());
                match std::fs::read_dir(&root_path) {
                    Ok(_) => {}
                    Err(e) => {
                        self.err(
                            root.span(),
                            format!("root `{}` is not a readable directory: {e}", root.get_ref()),
                        );
                        continue;
                    }
                }
                let cache_control = match &r.cache_control {
                    None => None,
                    Some(v) => match HeaderValue::from_str(v.get_ref()) {
                        Ok(h) => Some(h),
                        Err(_) => {
                            self.err(v.span(), "cache_control is not a valid header value");
                            None
                        }
                    },
                };
                if let Some(index) = &r.index
                    && (index.get_ref().is_empty() || index.get_ref().contains(['/', '\\']))
                {
                    self.err(index.span(), "index must be a file name, e.g. \"index.html\"");
                }
                RouteAction::Static {
                    root: root_path,
                    index: r.index.as_ref().map(|i| i.get_ref().clone()),
                    cache_control,
                }
            } else if let Some(to) = &r.redirect {
                let target = to.get_ref().trim_end_matches('/');
                match target.parse::<http::Uri>() {
                    Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
                    _ => {
                        self.err(
                            to.span(),
                            format!("redirect `{}` must be an absolute http(s) URL", to.get_ref()),
                        );
                        continue;
                    }
                }
                RouteAction::Redirect(target.to_string())
            } else {
                continue;
            };
            if !matches!(action, RouteAction::Static { .. }) {
                if let Some(v) = &r.index {
                    self.err(v.span(), "`index` only applies to a route with `root`");
                }
                if let Some(v) = &r.cache_control {
                    self.err(v.span(), "`cache_control` only applies to a route with `root`");
                }
            }
            if let Some(z) = &r.rate_limit
                && !zones.contains(z.get_ref())
                && !raw.zones_incomplete
            {
                self.err(
                    z.span(),
                    format!("route names unknown rate_limit zone `{}`", z.get_ref()),
                );
            }
            let headers = match &r.headers {
                Some(h) => self.headers(global_headers, h.get_ref()),
                None => global_headers.clone(),
            };
            let allow = r.allow.as_ref().map(|list| {
                let mut nets = Vec::new();
                for a in list.get_ref() {
                    match parse_net(a.get_ref()) {
                        Some(n) => nets.push(n),
                        None => self.err(
                            a.span(),
                            format!("`{}` is not a CIDR or IP address, e.g. \"10.0.0.0/8\"", a.get_ref()),
                        ),
                    }
                }
                if list.get_ref().is_empty() {
                    self.err(
                        list.span(),
                        "allow = [] refuses everyone: leave `allow` out to let everyone in",
                    );
                }
                nets
            });
            let name = match &r.name {
                Some(n) => {
                    let v = n.get_ref();
                    if v.is_empty()
                        || v.len() > 64
                        || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    {
                        self.err(
                            n.span(),
                            "a route name is 1 to 64 visible ASCII characters, no quotes or backslashes",
                        );
                    }
                    (v.clone(), n.span())
                }
                None => (format!("{}{p}", hosts.first().map_or("", String::as_str)), path.span()),
            };
            if let Some(prev) = names.insert(name.0.clone(), name.1.clone()) {
                let (l, c) = self.d.line_col(prev.start);
                self.err(
                    name.1,
                    format!("route name `{}` is taken by the route at line {l}, column {c}: give one of them another `name`", name.0),
                );
            }
            out.push(RouteSpec {
                hosts,
                path: p.clone(),
                action,
                rate_limit: r.rate_limit.as_ref().map(|z| z.get_ref().clone()),
                headers,
                allow,
                name: name.0,
            });
        }
        out
    }

    /// A header set from `[headers]` or `[route.headers]` over `base`; `""` removes one.
    fn headers(&mut self, base: &SecurityHeaders, h: &RawHeaders) -> SecurityHeaders {
        let raw = [
            &h.strict_transport_security,
            &h.x_content_type_options,
            &h.x_frame_options,
            &h.referrer_policy,
            &h.content_security_policy,
            &h.permissions_policy,
        ];
        let values = raw.map(|v| {
            let v = v.as_ref()?;
            let text = v.get_ref().trim();
            if text.is_empty() {
                return Some(None);
            }
            match HeaderValue::from_str(text) {
                Ok(value) => Some(Some(value)),
                Err(_) => {
                    self.err(v.span(), "not a valid header value");
                    None
                }
            }
        });
        let override_upstream = h.override_upstream.as_ref().is_some_and(|o| *o.get_ref());
        SecurityHeaders::derive(base, values, override_upstream)
    }

    fn compression(&mut self, c: &RawCompression) -> CompressionSettings {
        let mut s = CompressionSettings::default();
        if let Some(list) = &c.algorithms {
            s.algorithms.clear();
            for a in list.get_ref() {
                match Encoding::parse(a.get_ref()) {
                    Some(e) if s.algorithms.contains(&e) => {
                        self.err(a.span(), format!("`{}` is listed twice", a.get_ref()))
                    }
                    Some(e) => s.algorithms.push(e),
                    None => self.err(
                        a.span(),
                        format!("compression algorithm `{}` is not one of \"br\", \"gzip\"", a.get_ref()),
                    ),
                }
            }
        }
        s.min_size = self.count(c.min_size.as_ref(), s.min_size, 0, i64::MAX);
        if let Some(list) = &c.types {
            s.types.clear();
            for t in list.get_ref() {
                let v = t.get_ref().trim().to_ascii_lowercase();
                match v.split_once('/') {
                    Some((a, b)) if !a.is_empty() && !b.is_empty() && !a.contains('*') => s.types.push(v),
                    _ => self.err(
                        t.span(),
                        format!(
                            "`{}` is not a media type like \"text/*\" or \"application/json\"",
                            t.get_ref()
                        ),
                    ),
                }
            }
        }
        s
    }

    fn cache(&mut self, c: &RawCache) -> CacheSettings {
        let d = CacheSettings::default();
        let max_size = self.size(c.max_size.as_ref(), d.max_size);
        let max_file_size = self.size(c.max_file_size.as_ref(), d.max_file_size.min(max_size));
        if let Some(v) = &c.max_file_size {
            if max_file_size > max_size {
                self.err(v.span(), "max_file_size must not be larger than max_size");
            } else if max_file_size > 1 << 30 {
                self.err(v.span(), "max_file_size must be at most 1GiB");
            }
        }
        CacheSettings {
            max_size,
            max_file_size,
        }
    }

    fn zone(&mut self, span: Range<usize>, z: &RawRateLimit) -> Option<ZoneSpec> {
        let burst = self.count(z.burst.as_ref(), 0, 0, 1_000_000) as u32;
        let name = match &z.name {
            Some(n) if !n.get_ref().is_empty() => Some(n.get_ref().clone()),
            Some(n) => {
                self.err(n.span(), "a zone name must not be empty");
                None
            }
            None => {
                self.missing(span.clone(), "[[rate_limit]] needs a `name`");
                None
            }
        };
        let rate = match &z.rate {
            None => {
                self.missing(span, "[[rate_limit]] needs a `rate`, e.g. \"10/s\"");
                None
            }
            Some(r) => match parse_rate(r.get_ref()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    self.err(r.span(), e);
                    None
                }
            },
        };
        let ((count, period), name) = (rate?, name?);
        Some(ZoneSpec {
            name,
            count,
            period,
            burst,
        })
    }

    fn log(&mut self, raw: Option<&(Range<usize>, RawLog)>) -> LogSettings {
        let mut s = LogSettings::default();
        let Some((_, r)) = raw else { return s };
        if let Some(l) = &r.level {
            s.level = match l.get_ref().as_str() {
                "trace" => LogLevel::Trace,
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                other => {
                    self.err(
                        l.span(),
                        format!("log level `{other}` is not one of trace, debug, info, warn, error"),
                    );
                    LogLevel::Info
                }
            };
        }
        if let Some(f) = &r.format {
            s.format = match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.err(
                        f.span(),
                        format!("log format `{other}` is not one of \"text\", \"json\""),
                    );
                    LogFormat::Text
                }
            };
        }
        if let Some(r) = &r.rotation {
            s.access.rotation = match r.get_ref().as_str() {
                "minutely" => Rotate::Minutely,
                "hourly" => Rotate::Hourly,
                "daily" => Rotate::Daily,
                "never" => Rotate::Never,
                other => {
                    self.err(
                        r.span(),
                        format!("rotation `{other}` is not one of \"hourly\", \"daily\", \"never\""),
                    );
                    Rotate::Daily
                }
            };
        }
        s.access.keep = self.count(r.keep.as_ref(), s.access.keep as u64, 0, 10_000) as usize;
        if let Some(a) = &r.access {
            s.access.target = match a.get_ref().trim() {
                "off" => AccessTarget::Off,
                "stdout" => AccessTarget::Stdout,
                "" => {
                    self.err(a.span(), "log.access must be \"off\", \"stdout\" or a file path");
                    AccessTarget::Off
                }
                path => AccessTarget::File(PathBuf::from(path)),
            };
        }
        s
    }

    fn admin(&mut self, raw: Option<&(Range<usize>, RawAdmin)>, claims: &mut Claims) -> AdminSettings {
        let mut s = AdminSettings { listen: None };
        let Some((_, r)) = raw else { return s };
        if let Some(l) = r.listen.as_ref().filter(|l| !l.get_ref().trim().is_empty())
            && let Some(addr) = self.listen_addr(l, "admin.listen", claims)
        {
            let allow = r.allow_remote.as_ref().is_some_and(|b| *b.get_ref());
            if !addr.ip().is_loopback() && !allow {
                self.err(
                    l.span(),
                    format!(
                        "admin.listen {addr} is not a loopback address: set admin.allow_remote = true to expose it"
                    ),
                );
            }
            s.listen = Some(addr);
        }
        s
    }

    fn api(&mut self, raw: Option<&(Range<usize>, RawApi)>, claims: &mut Claims) -> Option<ApiSettings> {
        let (span, r) = raw?;
        let mut replicas = Vec::new();
        match &r.replicas {
            Some(list) => {
                for (i, a) in list.get_ref().iter().enumerate() {
                    if let Some(addr) = self.listen_addr(a, &format!("api.replicas[{i}]"), claims) {
                        replicas.push(addr);
                    }
                }
            }
            None => self.missing(span.clone(), "[api] needs `replicas`, e.g. [\"127.0.0.1:8001\"]"),
        }
        let database = r.database.as_ref().map(|d| PathBuf::from(d.get_ref()));
        Some(ApiSettings { replicas, database })
    }
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

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(d) => d.error_lines(),
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

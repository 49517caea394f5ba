//! nginx's `http`, `server` and `location` blocks into the gateway's sections and routes. A
//! server's exact names become a route's hosts; each prefix location a route (`root` joined
//! with the location's path, since a gateway route's root is what nginx calls an `alias`);
//! the HTTP server that only redirects becomes `redirect_to_https`; certbot's paths become
//! `[acme]`. What a location inherits (root, index, headers, rate limit, allow-list, proxy
//! timeouts) is carried down as nginx does. Directives shared by every level are in
//! [`super::common`]; anything else is reported with its reason.

use super::common::{Scope, unsupported_reason};
use super::parse::{At, Directive};
use super::plan::{Table, quote, quote_list};
use super::state::{Translator, https_redirect, redirect_target};

/// Where certbot keeps the certificates it manages.
const CERTBOT_LIVE: &str = "/etc/letsencrypt/live/";
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// What a `server` block says about itself.
#[derive(Default)]
struct ServerInfo {
    names: Vec<String>,
    plain: bool,
    ssl: bool,
    /// Only redirects plain HTTP to HTTPS (`return 301 https://$host$request_uri`, certbot's `if`).
    redirects_to_https: bool,
    certs: Vec<(String, At)>,
    keys: Vec<(String, At)>,
    /// The `server_name` directives (counted once their names are read).
    name_at: Vec<Directive>,
    has_listen: bool,
    default_server: bool,
}

impl Translator {
    /// The main context: `http`, `events`, and what a snippet holds without `http`.
    pub fn main(&mut self, list: &[Directive]) {
        let mut rest = Vec::new();
        for d in list {
            match d.name.as_str() {
                "http" => {
                    self.ok();
                    self.http(d.block.as_deref().unwrap_or_default());
                }
                "events" => {
                    self.ok();
                    for inner in d.block.iter().flatten() {
                        self.report(inner, "not needed: connections are capped by server.max_connections");
                    }
                }
                "worker_processes" => {
                    let workers = match d.args.first().map(String::as_str) {
                        Some("auto") => Some(0),
                        Some(n) => n.parse::<i64>().ok(),
                        None => None,
                    };
                    match workers {
                        Some(n) => {
                            self.ok();
                            self.plan.set("server", "workers", n.to_string(), &d.at, &d.name);
                        }
                        None => self.report(d, "expected `auto` or a number"),
                    }
                }
                _ => rest.push(d.clone()),
            }
        }
        if !rest.is_empty() {
            self.http(&rest);
        }
        if self.plan.get("server", "redirect_to_https") == Some("true") {
            for at in std::mem::take(&mut self.plain_sites) {
                self.plan.notes.push(format!(
                    "{at}: this plain-HTTP site is redirected to HTTPS too (redirect_to_https applies to every host)"
                ));
            }
        }
    }

    /// The `http` context: upstreams and zones first (servers name them), then the settings
    /// every server inherits, then the servers.
    fn http(&mut self, list: &[Directive]) {
        for d in list.iter().filter(|d| d.name == "upstream") {
            self.ok();
            self.upstream_block(d);
        }
        for d in list.iter().filter(|d| d.name == "limit_req_zone") {
            self.limit_req_zone(d);
        }
        // nginx's default index
        let mut scope = Scope {
            index: Some("index.html".into()),
            ..Scope::default()
        };
        scope.enter(self, list);
        for d in list {
            match d.name.as_str() {
                "upstream" | "limit_req_zone" | "server" | "add_header" => {}
                _ => {
                    if !self.common(d, &mut scope) {
                        let reason = unsupported_reason(&d.name);
                        self.report_all(d, &reason);
                    }
                }
            }
        }
        for d in list.iter().filter(|d| d.name == "server") {
            self.ok();
            self.server(d, &scope);
        }
    }

    fn server(&mut self, d: &Directive, outer: &Scope) {
        let list = d.block.as_deref().unwrap_or_default();
        let mut scope = outer.clone();
        scope.enter(self, list);
        let mut info = ServerInfo::default();
        let mut locations = Vec::new();
        let mut returns = Vec::new();
        for c in list {
            match c.name.as_str() {
                "listen" => self.listen(c, &mut info),
                "server_name" => {
                    info.names.extend(c.args.iter().cloned());
                    info.name_at.push(c.clone());
                }
                "location" => locations.push(c),
                "return" => returns.push(c),
                "if" if certbot_redirect(c) => {
                    self.ok();
                    self.ok();
                    info.redirects_to_https = true;
                }
                "ssl_certificate" if c.args.len() == 1 => info.certs.push((c.args[0].clone(), c.at.clone())),
                "ssl_certificate_key" if c.args.len() == 1 => info.keys.push((c.args[0].clone(), c.at.clone())),
                "http2" => self.ok(),
                "add_header" => {}
                _ => {
                    if !self.common(c, &mut scope) {
                        let reason = unsupported_reason(&c.name);
                        self.report_all(c, &reason);
                    }
                }
            }
        }
        for r in &returns {
            if https_redirect(r) {
                info.redirects_to_https = true;
            }
        }
        if !info.has_listen {
            // nginx's default: *:80
            self.plan.set("server", "http", quote("0.0.0.0:80"), &d.at, "listen");
            info.plain = true;
        }
        if info.plain && !info.ssl && (info.redirects_to_https || locations_only_redirect(&locations)) {
            for _ in &info.name_at {
                self.ok();
            }
            for (_, at) in info.certs.iter().chain(&info.keys) {
                self.plan.report(
                    at,
                    "ssl_certificate",
                    "the HTTP server that redirects to HTTPS serves no TLS",
                );
            }
            self.plain_redirect_server(d, &locations, &returns);
            return;
        }
        if info.plain && !info.ssl {
            self.plain_sites.push(d.at.clone());
        }
        self.server_routes(d, &scope, &info, &locations, &returns);
    }

    /// A server's routes: its certificates and hosts, then a server-level `return`, or its
    /// locations and the root's own route.
    fn server_routes(
        &mut self,
        d: &Directive,
        scope: &Scope,
        info: &ServerInfo,
        locations: &[&Directive],
        returns: &[&Directive],
    ) {
        self.certificates(info);
        let hosts = self.hosts(info);
        if info.default_server && !hosts.is_empty() {
            self.plan.notes.push(format!(
                "{}: default_server: requests for hosts no route names get 404 from the gateway (nginx: this server answers them)",
                d.at
            ));
        }
        // a server-level `return` answers before any location is chosen
        let server_return = returns.iter().find(|r| redirect_target(r).is_ok()).copied();
        for r in returns {
            self.server_return(r, &hosts);
        }
        if server_return.is_some() {
            for loc in locations {
                self.report_all(loc, "never reached: the server's `return` answers every request first");
            }
            return;
        }
        let mut has_root_route = false;
        for loc in locations {
            has_root_route |= loc.args.last().is_some_and(|p| p == "/");
            self.location(loc, scope, &hosts);
        }
        if !has_root_route && let Some(root) = &scope.root {
            let mut route = self.route(d, &hosts, "/");
            route.set("root", quote(root.trim_end_matches('/')), &d.at);
            if let Some(index) = &scope.index {
                route.set("index", quote(index), &d.at);
            }
            scope.apply(self, &mut route, None);
            self.push_unique(route, d);
        }
    }

    /// Adds `route` unless one for the same hosts and path exists (then `d` is reported).
    pub fn push_unique(&mut self, route: Table, d: &Directive) -> bool {
        let same = self
            .plan
            .routes
            .iter()
            .any(|r| r.get("path") == route.get("path") && r.get("host") == route.get("host"));
        if same {
            self.report(d, "a route for the same hosts and path was made earlier");
            return false;
        }
        self.plan.routes.push(route);
        true
    }

    /// The plain-HTTP server that only sends clients to HTTPS.
    fn plain_redirect_server(&mut self, d: &Directive, locations: &[&Directive], returns: &[&Directive]) {
        let at = locations.first().or(returns.first()).map_or(&d.at, |x| &x.at);
        self.plan
            .set("server", "redirect_to_https", "true".into(), at, "return");
        for r in returns {
            self.ok();
            if !https_redirect(r) {
                self.plan.notes.push(format!(
                    "{}: `return {}` of the HTTP server is replaced by the redirect to HTTPS",
                    r.at,
                    r.args.join(" ")
                ));
            }
        }
        for loc in locations {
            self.drop_location(loc);
        }
    }

    /// A location of the HTTP-to-HTTPS server: the redirect itself, or certbot's webroot.
    fn drop_location(&mut self, loc: &Directive) {
        fn count(d: &Directive) -> usize {
            1 + d.block.iter().flatten().map(count).sum::<usize>()
        }
        self.plan.translated += count(loc);
        if loc
            .args
            .last()
            .is_some_and(|p| p.starts_with(ACME_CHALLENGE.trim_end_matches('/')))
        {
            self.plan.notes.push(format!(
                "{}: the certbot webroot location is dropped: the gateway answers ACME challenges itself",
                loc.at
            ));
        }
    }

    fn listen(&mut self, d: &Directive, info: &mut ServerInfo) {
        info.has_listen = true;
        let Some(addr) = d.args.first() else {
            return self.report(d, "no address");
        };
        if d.args.iter().any(|a| a == "quic") {
            return self.report(d, "HTTP/3 (quic) is not served by the gateway yet");
        }
        info.default_server |= d.args.iter().any(|a| a == "default_server" || a == "default");
        if addr.starts_with('[') || addr.starts_with("unix:") {
            return self.report(d, "one IPv4 address per listener in the gateway; this one is not added");
        }
        let addr = match addr.parse::<u16>() {
            Ok(port) => format!("0.0.0.0:{port}"),
            Err(_) => match addr.strip_prefix("*:") {
                Some(port) => format!("0.0.0.0:{port}"),
                None if addr.contains(':') => addr.clone(),
                None => format!("{addr}:80"),
            },
        };
        let ssl = d.args.iter().any(|a| a == "ssl");
        self.ok();
        let key = if ssl { "https" } else { "http" };
        if ssl {
            info.ssl = true;
        } else {
            info.plain = true;
        }
        self.plan.set("server", key, quote(&addr), &d.at, &d.name);
        if d.args.iter().any(|a| a == "proxy_protocol") {
            self.plan.set("server", "proxy_protocol", "true".into(), &d.at, &d.name);
            self.plan.notes.push(format!(
                "{}: PROXY protocol: only server.trusted_proxies may connect (set_real_ip_from)",
                d.at
            ));
        }
        for flag in d.args.iter().skip(1) {
            let known = [
                "ssl",
                "http2",
                "proxy_protocol",
                "default_server",
                "default",
                "reuseport",
            ];
            if !known.contains(&flag.as_str()) {
                self.plan
                    .notes
                    .push(format!("{}: listen parameter `{flag}` has no equivalent", d.at));
            }
        }
    }

    /// Exact server names as route hosts; wildcards and regexes reported.
    fn hosts(&mut self, info: &ServerInfo) -> Vec<String> {
        let mut hosts = Vec::new();
        let mut dropped = Vec::new();
        for name in &info.names {
            if name.is_empty() || name == "_" {
                continue;
            }
            if name.starts_with('~') || name.contains('*') || name.starts_with('.') {
                dropped.push(format!("`{name}`"));
                continue;
            }
            hosts.push(name.to_ascii_lowercase());
        }
        for d in &info.name_at {
            let mine: Vec<&String> = dropped
                .iter()
                .filter(|n| d.args.iter().any(|a| format!("`{a}`") == **n))
                .collect();
            if mine.is_empty() {
                self.ok();
            } else {
                let names: Vec<&str> = mine.iter().map(|n| n.as_str()).collect();
                self.report(
                    d,
                    &format!(
                        "{}: routes match exact host names only (the exact ones are kept)",
                        names.join(", ")
                    ),
                );
            }
        }
        hosts
    }

    /// `ssl_certificate`s: certbot's become `[acme]`, others `[tls]` files.
    fn certificates(&mut self, info: &ServerInfo) {
        if info.certs.is_empty() {
            return;
        }
        for (_, at) in info.keys.iter().skip(info.certs.len()) {
            self.plan
                .report(at, "ssl_certificate_key", "no ssl_certificate beside it");
        }
        for (i, (cert, at)) in info.certs.iter().enumerate() {
            let key = info.keys.get(i);
            if key.is_some() || cert.starts_with(CERTBOT_LIVE) {
                self.ok();
            }
            if key.is_some() {
                self.ok();
            }
            if cert.starts_with(CERTBOT_LIVE) {
                self.plan.set("tls", "source", quote("acme"), at, "ssl_certificate");
                let mut domains: Vec<String> = info
                    .names
                    .iter()
                    .filter(|n| !n.contains('*') && !n.starts_with('~') && !n.starts_with('.') && *n != "_")
                    .cloned()
                    .collect();
                let section = self.plan.section("acme");
                if let Some(e) = section.iter_mut().find(|e| e.key == "domains") {
                    let before: Vec<String> = serde_free_list(&e.value);
                    domains.retain(|d| !before.contains(d));
                    let mut all = before;
                    all.extend(domains);
                    e.value = quote_list(&all);
                } else {
                    section.push(super::plan::Entry {
                        key: "domains".into(),
                        value: quote_list(&domains),
                        from: at.clone(),
                    });
                    self.plan.notes.push(format!(
                        "{at}: certbot's certificate ({cert}): the gateway orders and renews it itself ([acme]); set acme.contact to your address"
                    ));
                }
                continue;
            }
            let Some((key, _)) = key else {
                self.plan
                    .report(at, "ssl_certificate", "no ssl_certificate_key beside it");
                continue;
            };
            self.plan.set("tls", "source", quote("files"), at, "ssl_certificate");
            if self.plan.get("tls", "cert").is_none() {
                self.plan.set("tls", "cert", quote(cert), at, "ssl_certificate");
                self.plan.set("tls", "key", quote(key), at, "ssl_certificate_key");
            } else if self.plan.get("tls", "cert") != Some(quote(cert).as_str()) {
                let mut pair = Table::new(at);
                pair.set("cert", quote(cert), at);
                pair.set("key", quote(key), at);
                self.plan.certificates.push(pair);
            }
        }
    }

    /// `return` in a server block (outside locations): a host redirect. True if it made a
    /// route for `/`.
    fn server_return(&mut self, r: &Directive, hosts: &[String]) -> bool {
        match redirect_target(r) {
            Ok(target) => {
                self.ok();
                let mut route = self.route(r, hosts, "/");
                route.set("redirect", quote(&target), &r.at);
                if !self.push_unique(route, r) {
                    self.plan.translated -= 1;
                }
                true
            }
            Err(why) => {
                self.report(r, &why);
                false
            }
        }
    }
}

/// The strings of a TOML list this module wrote.
fn serde_free_list(value: &str) -> Vec<String> {
    value
        .trim_matches(['[', ']'])
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

/// certbot's `if ($host = NAME) { return 301 https://$host$request_uri; }`.
fn certbot_redirect(d: &Directive) -> bool {
    d.args.first().is_some_and(|a| a.starts_with("($host"))
        && d.block.as_ref().is_some_and(|b| b.len() == 1 && https_redirect(&b[0]))
}

/// Locations of a plain server that only redirect to HTTPS (or serve certbot's webroot).
fn locations_only_redirect(locations: &[&Directive]) -> bool {
    let mut redirect = false;
    for loc in locations {
        let path = loc.args.last().map(String::as_str).unwrap_or("");
        if path.starts_with(ACME_CHALLENGE.trim_end_matches('/')) {
            continue;
        }
        let block = loc.block.as_deref().unwrap_or_default();
        if path == "/" && block.len() == 1 && https_redirect(&block[0]) {
            redirect = true;
            continue;
        }
        return false;
    }
    redirect
}

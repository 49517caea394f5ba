//! nginx `location`s into routes, `proxy_pass` into a route's upstream (an `upstream` block by
//! name, or a server of its own), `upstream` blocks into `[[upstream]]` and `limit_req_zone`
//! into `[[rate_limit]]`.

use super::common::{Scope, unsupported_reason};
use super::parse::Directive;
use super::plan::{Table, quote, quote_list, rate};
use super::state::{Translator, https_redirect, redirect_target};

/// What a location serves.
enum Handler {
    Upstream(String),
    Root(String),
    Redirect(String),
}

impl Translator {
    pub fn location(&mut self, d: &Directive, outer: &Scope, hosts: &[String]) {
        let (modifier, path) = match d.args.as_slice() {
            [path] => ("", path.as_str()),
            [m, path] => (m.as_str(), path.as_str()),
            _ => return self.report_all(d, "expected a path"),
        };
        match modifier {
            "" | "^~" | "=" => {}
            _ => return self.report_all(d, "regex locations are not translated (routes match path prefixes)"),
        }
        if path.starts_with('@') {
            return self.report_all(d, "named locations are not translated");
        }
        self.ok();
        if modifier == "=" {
            self.plan
                .notes
                .push(format!("{}: `location = {path}` becomes a prefix route", d.at));
        }
        let list = d.block.as_deref().unwrap_or_default();
        let mut scope = outer.clone();
        scope.in_location = true;
        scope.enter(self, list);
        let mut handler = None;
        // a location whose answer (return, a *_pass) is not translated serves no files either
        let mut untranslated_handler = false;
        let mut alias = None;
        let mut nested = Vec::new();
        for c in list {
            match c.name.as_str() {
                "proxy_pass" => match self.proxy_pass(c, path) {
                    Some(name) => handler = Some(Handler::Upstream(name)),
                    None => untranslated_handler = true,
                },
                "fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass" => {
                    untranslated_handler = true;
                    let reason = unsupported_reason(&c.name);
                    self.report(c, &reason);
                }
                "return" => match redirect_target(c) {
                    Ok(target) => {
                        self.ok();
                        handler = Some(Handler::Redirect(target));
                    }
                    Err(why) => {
                        untranslated_handler = true;
                        if https_redirect(c) {
                            self.report(c, &format!("{why} (a redirect to HTTPS for one path)"));
                        } else {
                            self.report(c, &why);
                        }
                    }
                },
                "alias" => {
                    self.ok();
                    alias = c.args.first().cloned();
                }
                "try_files" => self.try_files(c),
                "location" => nested.push(c),
                "add_header" => {}
                _ => {
                    if !self.common(c, &mut scope) {
                        let reason = unsupported_reason(&c.name);
                        self.report_all(c, &reason);
                    }
                }
            }
        }
        if handler.is_none() && !untranslated_handler {
            handler = alias
                .map(Handler::Root)
                .or_else(|| scope.root.as_ref().map(|r| Handler::Root(join_root(r, path))));
        }
        self.location_route(d, &scope, hosts, (modifier, path), handler, untranslated_handler);
        for n in nested {
            self.location(n, &scope, hosts);
        }
    }

    /// The route a location makes, or the note saying why it makes none.
    fn location_route(
        &mut self,
        d: &Directive,
        scope: &Scope,
        hosts: &[String],
        (modifier, path): (&str, &str),
        handler: Option<Handler>,
        untranslated_handler: bool,
    ) {
        match handler {
            // an exact-match location for a file: a route's root is a directory, so the route
            // of the enclosing prefix serves it
            Some(Handler::Root(_)) if modifier == "=" => self.plan.notes.push(format!(
                "{}: `location = {path}` serves a file: the enclosing route serves it (its own settings are not kept)",
                d.at
            )),
            Some(h) => self.push_route(d, scope, hosts, path, h),
            None if untranslated_handler => self.plan.notes.push(format!(
                "{}: location {path} gets no route: what it answers with is not translated (reported)",
                d.at
            )),
            None => self.plan.notes.push(format!(
                "{}: location {path} serves nothing the gateway can translate (no proxy_pass, root or return)",
                d.at
            )),
        }
    }

    fn push_route(&mut self, d: &Directive, scope: &Scope, hosts: &[String], path: &str, handler: Handler) {
        let duplicate = self.plan.routes.iter().any(|r| {
            r.get("path") == Some(&quote(path))
                && r.get("host") == (!hosts.is_empty()).then(|| quote_list(hosts)).as_deref()
        });
        if duplicate {
            // counted when the location was read; it is not translated after all
            self.plan.translated -= 1;
            return self.report(d, "a route for the same hosts and path was made earlier");
        }
        let mut route = self.route(d, hosts, path);
        let upstream = match &handler {
            Handler::Upstream(name) => {
                route.set("upstream", quote(name), &d.at);
                Some(name.clone())
            }
            Handler::Root(root) => {
                route.set("root", quote(root), &d.at);
                if let Some(index) = &scope.index {
                    route.set("index", quote(index), &d.at);
                }
                None
            }
            Handler::Redirect(target) => {
                route.set("redirect", quote(target), &d.at);
                None
            }
        };
        scope.apply(self, &mut route, upstream.as_deref());
        self.plan.routes.push(route);
    }

    fn try_files(&mut self, d: &Directive) {
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["$uri", "=404"] | ["$uri", "$uri/", "=404"] | ["$uri", "$uri/"] | ["$uri"] => self.ok(),
            _ => self.report(
                d,
                "only `$uri $uri/ =404` (what a root route does) translates; fallbacks such as an SPA's /index.html are not supported",
            ),
        }
    }

    /// The upstream a `proxy_pass` names (made for a plain address). `None` when it cannot.
    fn proxy_pass(&mut self, d: &Directive, path: &str) -> Option<String> {
        let url = d.args.first().map(String::as_str).unwrap_or("");
        if url.contains('$') {
            self.report(d, "variables in proxy_pass are not translated");
            return None;
        }
        let Some(rest) = url.strip_prefix("http://") else {
            self.report(d, "the gateway proxies to plain HTTP/1.1 upstreams (http://) only");
            return None;
        };
        let (authority, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let name = if self.upstreams.iter().any(|u| u == authority) {
            authority.to_string()
        } else {
            self.address_upstream(d, authority)
        };
        match uri {
            Some(u) if u != path => self.report(
                d,
                &format!(
                    "nginx replaces the location's `{path}` with `{u}`; the gateway forwards the request's path unchanged (the route is made, check the upstream's paths)"
                ),
            ),
            _ => self.ok(),
        }
        Some(name)
    }

    /// An `[[upstream]]` of its own for `proxy_pass http://HOST:PORT`.
    fn address_upstream(&mut self, d: &Directive, authority: &str) -> String {
        let server = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let base: String = authority
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let servers = quote_list(std::slice::from_ref(&server));
        // `a-b:80` and `a.b:80` read alike: a name taken by other servers gets a number
        let mut name = base.clone();
        for n in 2.. {
            match self
                .plan
                .upstreams
                .iter()
                .find(|u| u.get("name") == Some(&quote(&name)))
            {
                Some(u) if u.get("servers") == Some(&servers) => return name,
                Some(_) => name = format!("{base}_{n}"),
                None if self.upstreams.contains(&name) => name = format!("{base}_{n}"),
                None => break,
            }
        }
        let mut table = Table::new(&d.at);
        table.set("name", quote(&name), &d.at);
        table.set("servers", servers, &d.at);
        self.plan.upstreams.push(table);
        self.upstreams.push(name.clone());
        name
    }

    pub fn upstream_block(&mut self, d: &Directive) {
        let Some(name) = d.args.first() else {
            return self.report_all(d, "no name");
        };
        let mut table = Table::new(&d.at);
        table.set("name", quote(name), &d.at);
        let mut servers = Vec::new();
        for c in d.block.iter().flatten() {
            match c.name.as_str() {
                "server" => {
                    if let Some(s) = self.upstream_server(c) {
                        servers.push(s);
                    }
                }
                "least_conn" => {
                    self.ok();
                    table.set("balance", quote("least_conn"), &c.at);
                }
                "ip_hash" => {
                    self.ok();
                    table.set("balance", quote("ip_hash"), &c.at);
                }
                "keepalive" | "keepalive_timeout" | "keepalive_requests" => {
                    self.ok();
                    table.notes.push(format!(
                        "{}: {}: idle connections are pooled by the gateway itself",
                        c.at, c.name
                    ));
                }
                _ => {
                    let reason = unsupported_reason(&c.name);
                    self.report_all(c, &reason);
                }
            }
        }
        table.set("servers", quote_list(&servers), &d.at);
        self.plan.upstreams.push(table);
        self.upstreams.push(name.clone());
    }

    /// `server ADDR [params]` of an upstream block: the address, params reported.
    fn upstream_server(&mut self, d: &Directive) -> Option<String> {
        let Some(addr) = d.args.first() else {
            self.report(d, "no address");
            return None;
        };
        if addr.starts_with("unix:") {
            self.report(d, "unix sockets are not supported upstreams");
            return None;
        }
        let mut reasons = Vec::new();
        for p in &d.args[1..] {
            if p.starts_with("max_fails=") || p.starts_with("fail_timeout=") {
                reasons.push(format!(
                    "`{p}`: the gateway takes a server out for 10 s after failed requests, or by [upstream.health] checks"
                ));
            } else if p == "weight=1" {
            } else if p.starts_with("weight=") {
                reasons.push(format!("`{p}`: servers are not weighted"));
            } else if p == "backup" || p == "down" {
                reasons.push(format!("`{p}` is not supported"));
            } else {
                reasons.push(format!("`{p}` has no equivalent"));
            }
        }
        if reasons.is_empty() {
            self.ok();
        } else {
            self.report(d, &format!("{addr} is kept; {}", reasons.join("; ")));
        }
        Some(if addr.contains(':') {
            addr.clone()
        } else {
            format!("{addr}:80")
        })
    }

    /// `limit_req_zone $binary_remote_addr zone=NAME:SIZE rate=Nr/s`.
    pub fn limit_req_zone(&mut self, d: &Directive) {
        let key = d.args.first().map(String::as_str).unwrap_or("");
        if key != "$binary_remote_addr" && key != "$remote_addr" {
            return self.report(d, "zones are keyed by the client's address only");
        }
        let name = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("zone="))
            .and_then(|z| z.split(':').next());
        let per = d.args.iter().find_map(|a| a.strip_prefix("rate=")).and_then(rate);
        let (Some(name), Some(per)) = (name, per) else {
            return self.report(d, "expected zone=NAME:SIZE and rate=N r/s or r/m");
        };
        self.ok();
        let mut table = Table::new(&d.at);
        table.set("name", quote(name), &d.at);
        table.set("rate", quote(&per), &d.at);
        self.plan.zones.push(table);
    }
}

/// nginx's `root R` in `location P` serves `R/P...`; a gateway root serves below the route's
/// prefix, so it is `R` joined with `P`.
fn join_root(root: &str, path: &str) -> String {
    let root = root.trim_end_matches('/');
    let path = path.trim_matches('/');
    if path.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{path}")
    }
}

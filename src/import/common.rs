//! Directives nginx allows at every level (`http`, `server`, `location`): the ones that set
//! the gateway's global keys (body and header limits, timeouts, compression, logs, TLS
//! protocols, real client addresses) and the ones a location inherits (`root`, `index`,
//! `add_header`, `expires`, `limit_req`, `allow`/`deny`, proxy timeouts), kept in a [`Scope`].

use super::parse::Directive;
use super::plan::{Table, duration, quote, quote_list, size, size_bytes, size_of};
use super::state::Translator;

/// What a level hands down to the levels inside it.
#[derive(Clone, Default)]
pub struct Scope {
    pub root: Option<String>,
    pub index: Option<String>,
    /// This level's `add_header`s (nginx: a level with its own drops the outer ones).
    pub headers: Vec<(String, String, Directive)>,
    /// From `expires`.
    pub cache_control: Option<String>,
    /// From `add_header Cache-Control` (wins over `expires`, as the header nginx writes last).
    pub header_cache_control: Option<String>,
    pub limit_req: Option<String>,
    /// Inside a `location` (where global keys cannot be set for one route).
    pub in_location: bool,
    pub allow: Vec<String>,
    pub deny_all: bool,
    pub connect_timeout: Option<(String, Directive)>,
    pub read_timeout: Option<(String, Directive)>,
    pub retries: Option<(i64, Directive)>,
}

/// `add_header` names the gateway sets, and their keys in `[headers]`.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("strict-transport-security", "strict_transport_security"),
    ("x-content-type-options", "x_content_type_options"),
    ("x-frame-options", "x_frame_options"),
    ("referrer-policy", "referrer_policy"),
    ("content-security-policy", "content_security_policy"),
    ("permissions-policy", "permissions_policy"),
];

/// `proxy_set_header`s the gateway always sends as nginx configs usually set them.
const FORWARDING: [(&str, &[&str]); 7] = [
    ("host", &["$host", "$http_host", "$host:$server_port"]),
    ("x-real-ip", &["$remote_addr"]),
    ("x-forwarded-for", &["$proxy_add_x_forwarded_for", "$remote_addr"]),
    ("x-forwarded-proto", &["$scheme"]),
    ("x-forwarded-host", &["$host", "$http_host"]),
    ("upgrade", &["$http_upgrade"]),
    (
        "connection",
        &["$connection_upgrade", "upgrade", "\"upgrade\"", "\"\"", ""],
    ),
];

impl Scope {
    /// Starts a level: its own `allow`/`deny` rules replace the inherited ones (as in nginx),
    /// and its `add_header`s the inherited headers.
    pub fn enter(&mut self, t: &mut Translator, list: &[Directive]) {
        if list.iter().any(|d| d.name == "allow" || d.name == "deny") {
            self.allow.clear();
            self.deny_all = false;
        }
        self.collect_headers(t, list);
    }

    /// Takes this level's `add_header`s (replacing the inherited ones if there are any).
    fn collect_headers(&mut self, t: &mut Translator, list: &[Directive]) {
        let own: Vec<&Directive> = list.iter().filter(|d| d.name == "add_header").collect();
        if own.is_empty() {
            return;
        }
        self.headers.clear();
        self.header_cache_control = None;
        for d in own {
            let (Some(name), Some(value)) = (d.args.first(), d.args.get(1)) else {
                t.report(d, "expected a name and a value");
                continue;
            };
            let lower = name.to_ascii_lowercase();
            if lower == "cache-control" {
                t.ok();
                self.header_cache_control = Some(value.clone());
            } else if SECURITY_HEADERS.iter().any(|(h, _)| *h == lower) {
                t.ok();
                self.headers.push((lower, value.clone(), d.clone()));
            } else {
                t.report(d, "the gateway adds its security headers and Cache-Control only");
            }
        }
    }

    /// Puts what this scope says into `route` (`upstream`: the upstream it proxies to).
    pub fn apply(&self, t: &mut Translator, route: &mut Table, upstream: Option<&str>) {
        // Cache-Control is the gateway's for the files it serves; upstreams send their own
        if let Some(cc) = self.header_cache_control.as_ref().or(self.cache_control.as_ref())
            && route.get("root").is_some()
        {
            route.set("cache_control", quote(cc), &route.from.clone());
        }
        if let Some(zone) = &self.limit_req {
            route.set("rate_limit", quote(zone), &route.from.clone());
        }
        if self.deny_all {
            // `deny all` alone refuses everyone: an allow-list no client address can match
            let allow = if self.allow.is_empty() {
                vec!["0.0.0.0/32".to_string()]
            } else {
                self.allow.clone()
            };
            route.set("allow", quote_list(&allow), &route.from.clone());
        }
        for (name, value, d) in &self.headers {
            let key = SECURITY_HEADERS
                .iter()
                .find(|(h, _)| h == name)
                .map(|(_, k)| *k)
                .unwrap();
            route.headers.retain(|e| e.key != key);
            route.headers.push(super::plan::Entry {
                key: key.to_string(),
                value: quote(value),
                from: d.at.clone(),
            });
        }
        let Some(name) = upstream else { return };
        let Some(up) = t
            .plan
            .upstreams
            .iter_mut()
            .find(|u| u.get("name") == Some(&quote(name)))
        else {
            return;
        };
        let mut conflicts = Vec::new();
        for (key, setting) in [
            ("connect_timeout", &self.connect_timeout),
            ("read_timeout", &self.read_timeout),
        ] {
            if let Some((value, d)) = setting {
                match up.get(key) {
                    Some(v) if v != quote(value) => conflicts.push((d.clone(), key)),
                    _ => up.set(key, quote(value), &d.at),
                }
            }
        }
        if let Some((n, d)) = &self.retries {
            match up.get("retries") {
                Some(v) if v != n.to_string() => conflicts.push((d.clone(), "retries")),
                _ => up.set("retries", n.to_string(), &d.at),
            }
        }
        for (d, key) in conflicts {
            let note = format!(
                "{}: upstream `{name}` has one {key}: the value set first is kept for the routes to it",
                d.at
            );
            if !t.plan.notes.contains(&note) {
                t.plan.notes.push(note);
            }
        }
    }
}

impl Translator {
    /// A directive allowed at any level: true if handled (translated or reported).
    pub fn common(&mut self, d: &Directive, scope: &mut Scope) -> bool {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "root" => {
                self.ok();
                scope.root = Some(arg.to_string());
            }
            "index" => {
                self.ok();
                scope.index = Some(arg.to_string());
                if d.args.len() > 1 {
                    self.plan.notes.push(format!("{}: index: only `{arg}` is tried", d.at));
                }
            }
            "expires" => self.expires(d, scope),
            "limit_req" => self.limit_req(d, scope),
            "allow" => {
                self.ok();
                scope.allow.push(if arg == "all" {
                    "0.0.0.0/0".into()
                } else {
                    arg.to_string()
                });
            }
            "deny" if arg == "all" => {
                self.ok();
                scope.deny_all = true;
            }
            "deny" => self.report(d, "the gateway's routes take an allow-list (`allow` + `deny all`) only"),
            "proxy_connect_timeout" | "proxy_read_timeout" => match duration(arg) {
                Some(v) if d.name == "proxy_connect_timeout" => {
                    self.ok();
                    scope.connect_timeout = Some((v, d.clone()));
                }
                Some(v) => {
                    self.ok();
                    scope.read_timeout = Some((v, d.clone()));
                }
                None => self.report(d, "not a time"),
            },
            "proxy_next_upstream" => {
                self.ok();
                if arg == "off" {
                    scope.retries = Some((0, d.clone()));
                }
            }
            "proxy_next_upstream_tries" => match arg.parse::<i64>() {
                Ok(n) if n >= 1 => {
                    self.ok();
                    scope.retries = Some((n - 1, d.clone()));
                }
                _ => self.report(d, "0 (every server) has no equivalent: retries is a number"),
            },
            "proxy_set_header" => self.proxy_set_header(d),
            "access_log" if scope.in_location && arg == "off" => {
                self.report(d, "the access log is on or off for every route")
            }
            "client_max_body_size" if scope.in_location => self.location_body_size(d),
            _ => return self.global(d),
        }
        true
    }

    /// One route's `client_max_body_size`: the gateway has one limit, so the largest is kept.
    fn location_body_size(&mut self, d: &Directive) {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        let Some(bytes) = size_bytes(arg) else {
            return self.report(d, "not a size");
        };
        let current = self.plan.get("server", "max_body_size").and_then(|v| {
            size_bytes(
                &v.trim_matches('"')
                    .replace("iB", "")
                    .trim_end_matches('B')
                    .to_ascii_lowercase(),
            )
        });
        if current.is_none_or(|c| c < bytes) {
            self.plan.section("server").retain(|e| e.key != "max_body_size");
            self.plan
                .set("server", "max_body_size", quote(&size_of(bytes)), &d.at, &d.name);
        }
        self.report(
            d,
            &format!(
                "the gateway has one max_body_size for every route: the largest ({}) is kept",
                size_of(bytes.max(current.unwrap_or(0)))
            ),
        );
    }

    fn expires(&mut self, d: &Directive, scope: &mut Scope) {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        let value = match arg {
            "off" => None,
            "epoch" => Some("no-cache".to_string()),
            "max" => Some("max-age=315360000".to_string()),
            a if a.starts_with('-') => Some("no-cache".to_string()),
            a => duration(a).and_then(|s| s.strip_suffix('s').map(|n| format!("max-age={n}"))),
        };
        match value {
            Some(v) => {
                self.ok();
                scope.cache_control = Some(v);
            }
            None if arg == "off" => self.ok(),
            None => self.report(d, "not a time the gateway can write as max-age"),
        }
    }

    fn limit_req(&mut self, d: &Directive, scope: &mut Scope) {
        let mut zone = None;
        let mut burst = None;
        for a in &d.args {
            if let Some(z) = a.strip_prefix("zone=") {
                zone = Some(z.to_string());
            } else if let Some(b) = a.strip_prefix("burst=") {
                burst = b.parse::<i64>().ok();
            }
        }
        let Some(zone) = zone else {
            return self.report(d, "no zone=");
        };
        let Some(table) = self
            .plan
            .zones
            .iter_mut()
            .find(|z| z.get("name") == Some(&quote(&zone)))
        else {
            return self.report(d, &format!("zone `{zone}` was not translated"));
        };
        let burst = burst.unwrap_or(0).to_string();
        match table.get("burst").map(str::to_string) {
            Some(b) if b != burst => {
                return self.report(
                    d,
                    &format!("zone `{zone}` has one burst in the gateway, set to {b} first"),
                );
            }
            Some(_) => {}
            None => table.set("burst", burst, &d.at),
        }
        if !d.args.iter().any(|a| a == "nodelay") {
            self.plan.notes.push(format!(
                "{}: limit_req without nodelay: nginx delays requests within the burst; the gateway serves them at once",
                d.at
            ));
        }
        self.ok();
        scope.limit_req = Some(zone);
    }

    fn proxy_set_header(&mut self, d: &Directive) {
        let (Some(name), Some(value)) = (d.args.first(), d.args.get(1)) else {
            return self.report(d, "expected a name and a value");
        };
        let lower = name.to_ascii_lowercase();
        match FORWARDING.iter().find(|(h, _)| *h == lower) {
            Some((_, values)) if values.contains(&value.as_str()) => self.ok(),
            _ => self.report(
                d,
                "the gateway sends Host, X-Forwarded-For/-Proto/-Host and X-Real-IP itself; other request headers are not added",
            ),
        }
    }

    /// Directives that set one of the gateway's global keys.
    fn global(&mut self, d: &Directive) -> bool {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        let set = |t: &mut Translator, section: &'static str, key: &str, value: Option<String>| match value {
            Some(v) => {
                t.ok();
                t.plan.set(section, key, v, &d.at, &d.name);
            }
            None => t.report(d, "value not understood"),
        };
        match d.name.as_str() {
            "client_max_body_size" if arg == "0" => {
                self.report(d, "no limit has no equivalent: the gateway always has one")
            }
            "client_max_body_size" => set(self, "server", "max_body_size", size(arg).map(|s| quote(&s))),
            "client_header_timeout" => set(self, "server", "header_read_timeout", duration(arg).map(|s| quote(&s))),
            "client_body_timeout" => set(self, "server", "body_read_timeout", duration(arg).map(|s| quote(&s))),
            "send_timeout" => set(self, "server", "send_timeout", duration(arg).map(|s| quote(&s))),
            "keepalive_timeout" if arg == "0" => self.report(d, "keep-alive cannot be turned off"),
            "keepalive_timeout" => set(self, "server", "keepalive_timeout", duration(arg).map(|s| quote(&s))),
            "large_client_header_buffers" => {
                let total = match d.args.as_slice() {
                    [n, s] => n
                        .parse::<u64>()
                        .ok()
                        .zip(size_bytes(s))
                        .map(|(n, s)| quote(&size_of(n * s))),
                    _ => None,
                };
                set(self, "server", "max_header_size", total);
            }
            "server_tokens" => set(self, "server", "server_header", Some((arg == "on").to_string())),
            "set_real_ip_from" => {
                self.ok();
                let section = self.plan.section("server");
                match section.iter_mut().find(|e| e.key == "trusted_proxies") {
                    Some(e) => e.value = format!("{}, {}]", e.value.trim_end_matches(']'), quote(arg)),
                    None => section.push(super::plan::Entry {
                        key: "trusted_proxies".into(),
                        value: quote_list(&[arg]),
                        from: d.at.clone(),
                    }),
                }
            }
            "real_ip_header" if arg == "proxy_protocol" => set(self, "server", "proxy_protocol", Some("true".into())),
            "real_ip_header" if arg.eq_ignore_ascii_case("x-forwarded-for") => self.ok(),
            "real_ip_recursive" => self.ok(),
            "http2" => self.ok(),
            "ssl_protocols" => self.ssl_protocols(d),
            "access_log" => set(self, "log", "access", Some(quote(arg))),
            "error_log" => self.error_log(d),
            "limit_conn" => set(
                self,
                "server",
                "max_connections_per_ip",
                d.args.get(1).and_then(|n| n.parse::<u64>().ok()).map(|n| n.to_string()),
            ),
            "limit_conn_zone" => self.ok(),
            _ => return self.gzip(d),
        }
        true
    }

    fn ssl_protocols(&mut self, d: &Directive) {
        let min = ["TLSv1.2", "TLSv1.3"]
            .into_iter()
            .find(|v| d.args.iter().any(|a| a == v));
        match min {
            Some(v) => {
                self.ok();
                self.plan.set("tls", "min_version", quote(&v[4..]), &d.at, &d.name);
                if d.args.iter().any(|a| a == "TLSv1" || a == "TLSv1.1") {
                    self.plan
                        .notes
                        .push(format!("{}: TLS 1.0 and 1.1 are not offered by the gateway", d.at));
                }
            }
            None => self.report(d, "the gateway offers TLS 1.2 and 1.3 only"),
        }
    }

    fn error_log(&mut self, d: &Directive) {
        let level = match d.args.get(1).map(String::as_str) {
            Some("debug") => "debug",
            Some("info" | "notice") => "info",
            Some("warn") | None => "warn",
            Some(_) => "error",
        };
        self.ok();
        self.plan.set("log", "level", quote(level), &d.at, &d.name);
        if d.args.first().is_some_and(|p| p != "stderr") {
            self.plan
                .notes
                .push(format!("{}: the error log goes to stderr, not {}", d.at, d.args[0]));
        }
    }

    fn gzip(&mut self, d: &Directive) -> bool {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "gzip" => {
                self.ok();
                let algorithms = if arg == "on" { "[\"gzip\"]" } else { "[]" };
                self.plan
                    .set("compression", "algorithms", algorithms.into(), &d.at, &d.name);
            }
            "gzip_types" => {
                let mut types = vec!["text/html".to_string()];
                types.extend(
                    d.args
                        .iter()
                        .filter(|t| t.contains('/') && !t.starts_with('*'))
                        .cloned(),
                );
                if d.args.iter().any(|t| t == "*") {
                    self.report(d, "`*` (every type) has no equivalent; the listed types are kept");
                } else {
                    self.ok();
                }
                self.plan
                    .set("compression", "types", quote_list(&types), &d.at, &d.name);
            }
            "gzip_static" if arg == "on" => {
                self.ok();
                self.plan.notes.push(format!(
                    "{}: gzip_static: the gateway serves precompressed siblings (.gz, .br) when newer, always",
                    d.at
                ));
            }
            "gzip_min_length" => match size_bytes(arg) {
                Some(n) => {
                    self.ok();
                    self.plan.set("compression", "min_size", n.to_string(), &d.at, &d.name);
                }
                None => self.report(d, "not a size"),
            },
            _ => return false,
        }
        true
    }
}

/// Why a directive with no translation is left out.
pub fn unsupported_reason(name: &str) -> String {
    let reason = match name {
        "sendfile"
        | "tcp_nopush"
        | "tcp_nodelay"
        | "types_hash_max_size"
        | "server_names_hash_bucket_size"
        | "server_names_hash_max_size"
        | "default_type"
        | "types"
        | "charset"
        | "open_file_cache"
        | "open_file_cache_valid"
        | "keepalive_requests"
        | "reset_timedout_connection" => "not needed: the gateway chooses this itself (sendfile, MIME types, buffers)",
        "user" | "pid" | "worker_rlimit_nofile" | "worker_connections" | "daemon" | "master_process" => {
            "not needed: the gateway runs as the process that starts it"
        }
        "log_format" => "the access log is JSON lines with fixed fields",
        "include" => "not needed: the gateway has its own MIME types",
        "ssl_ciphers"
        | "ssl_prefer_server_ciphers"
        | "ssl_session_cache"
        | "ssl_session_timeout"
        | "ssl_session_tickets"
        | "ssl_dhparam"
        | "ssl_stapling"
        | "ssl_stapling_verify"
        | "ssl_trusted_certificate"
        | "ssl_ecdh_curve"
        | "ssl_buffer_size" => {
            "the gateway's TLS (rustls) offers forward-secret AEAD suites with session tickets; not configurable"
        }
        "gzip_static" => "precompressed siblings (.gz, .br) are always served when newer; `off` has no equivalent",
        "gzip_comp_level" | "gzip_vary" | "gzip_proxied" | "gzip_buffers" | "gzip_http_version" | "gzip_disable" => {
            "the gateway's compression settings are algorithms, types and min_size"
        }
        "proxy_http_version"
        | "proxy_buffering"
        | "proxy_buffers"
        | "proxy_buffer_size"
        | "proxy_busy_buffers_size"
        | "proxy_request_buffering"
        | "proxy_redirect" => {
            "built in: HTTP/1.1 to upstreams, streamed both ways, Location left as the upstream wrote it"
        }
        "proxy_send_timeout" => "the gateway has connect_timeout and read_timeout for upstreams",
        "limit_req_status" | "limit_conn_status" => "the gateway answers 429 over a rate limit",
        "rewrite" | "if" | "set" | "map" | "break" => "rewriting and conditions are not supported",
        "fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass" => {
            "the gateway proxies to HTTP/1.1 upstreams only"
        }
        "error_page" => "the gateway's own error pages are used",
        "autoindex" => "directory listings are not served",
        "resolver" | "resolver_timeout" => "names resolve with the system's resolver",
        "auth_basic" | "auth_basic_user_file" | "auth_request" => "authentication is the upstream's",
        "proxy_cache" | "proxy_cache_path" | "proxy_cache_valid" | "proxy_cache_key" => {
            "not translated: write a [[cache_zone]] and the route's `cache` (README, Proxy cache)"
        }
        "sub_filter" | "ssi" | "perl" | "js_content" | "lua" => "response rewriting is not supported",
        _ => return format!("`{name}` has no equivalent in the gateway"),
    };
    reason.to_string()
}

//! `[server]`, `[admin]` and `[api]`: the listeners and their settings, and no two listeners on one
//! address.

use super::*;

impl Validator<'_> {
    pub(super) fn listen_addr(&mut self, v: &Spanned<String>, what: &str, claims: &mut Claims) -> Option<SocketAddr> {
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

    pub(super) fn optional_listener(
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

    /// `http3` (on the UDP port of `https`), `alt_svc_max_age`, `http3_advertised_port`.
    fn http3(&mut self, r: &RawServer, s: &mut ServerSettings) {
        s.http3 = r.http3.as_ref().map_or(s.http3, |b| *b.get_ref());
        if let Some(v) = &r.http3
            && *v.get_ref()
            && s.https.is_none()
        {
            self.err(v.span(), "http3 needs an `https` listener: HTTP/3 runs on its UDP port");
        }
        s.alt_svc_max_age = self.positive_duration(r.alt_svc_max_age.as_ref(), s.alt_svc_max_age);
        s.http3_advertised_port = self.count(r.http3_advertised_port.as_ref(), 0, 0, 65_535) as u16;
    }

    pub(super) fn server(&mut self, raw: Option<&(Range<usize>, RawServer)>, claims: &mut Claims) -> ServerSettings {
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
        self.http3(r, &mut s);
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
            match self.fs.read(Path::new(h.get_ref())) {
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

    pub(super) fn admin(&mut self, raw: Option<&(Range<usize>, RawAdmin)>, claims: &mut Claims) -> AdminSettings {
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

    pub(super) fn api(&mut self, raw: Option<&(Range<usize>, RawApi)>, claims: &mut Claims) -> Option<ApiSettings> {
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

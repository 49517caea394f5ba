//! `[[upstream]]`: servers (addresses or names), balancing, timeouts, retries, health checks.

use super::*;

impl Validator<'_> {
    pub(super) fn upstreams(
        &mut self,
        raw: &[(Range<usize>, RawUpstream)],
        hosts_file: Option<&PathBuf>,
    ) -> Vec<UpstreamSpec> {
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

    pub(super) fn health(&mut self, h: &Spanned<RawHealth>) -> HealthSpec {
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
}

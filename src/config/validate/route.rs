//! `[[route]]`: each route's match (hosts, path prefix), its one handler (upstream, static root,
//! redirect), and what it allows, limits and adds.

use super::*;

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        raw: &RawConfig,
        known: &Known<'_>,
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
            let hosts = self.route_hosts(r);
            for key in hosts.iter().map(String::as_str).chain(hosts.is_empty().then_some("")) {
                if let Some(prev) = seen.insert((key.to_string(), p.clone()), path.span()) {
                    let (l, c) = self.d.line_col(prev.start);
                    let host = if key.is_empty() { "any host" } else { key };
                    self.err(
                        path.span(),
                        format!("duplicate route for {host} and path `{p}` (first at line {l}, column {c})"),
                    );
                }
            }
            let Some(action) = self.route_action(span, r, raw, known.upstreams) else {
                continue;
            };
            let cache = self.route_cache(r, &action, raw, known.cache_zones);
            if let Some(z) = &r.rate_limit
                && !known.zones.contains(z.get_ref())
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
            let allow = self.route_allow(r);
            let (name, name_span) = self.route_name(r, &hosts, path);
            if let Some(prev) = names.insert(name.clone(), name_span.clone()) {
                let (l, c) = self.d.line_col(prev.start);
                self.err(
                    name_span,
                    format!("route name `{name}` is taken by the route at line {l}, column {c}: give one of them another `name`"),
                );
            }
            out.push(RouteSpec {
                hosts,
                path: p.clone(),
                action,
                rate_limit: r.rate_limit.as_ref().map(|z| z.get_ref().clone()),
                headers,
                allow,
                cache,
                name,
            });
        }
        out
    }

    /// The route's `host` list, normalised.
    fn route_hosts(&mut self, r: &RawRoute) -> Vec<String> {
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
        hosts
    }

    /// The route's one handler: `upstream`, `root` or `redirect`; `None` when it has none,
    /// several or a wrong one (reported).
    fn route_action(
        &mut self,
        span: &Range<usize>,
        r: &RawRoute,
        raw: &RawConfig,
        upstreams: &HashSet<String>,
    ) -> Option<RouteAction> {
        let actions = [r.upstream.is_some(), r.root.is_some(), r.redirect.is_some()];
        match actions.iter().filter(|x| **x).count() {
            0 => {
                self.missing(span.clone(), "a route needs one of `upstream`, `root` or `redirect`");
                return None;
            }
            1 => {}
            _ => {
                self.err(
                    span.clone(),
                    "a route takes only one of `upstream`, `root` or `redirect`",
                );
                return None;
            }
        }
        let action = if let Some(u) = &r.upstream {
            if !upstreams.contains(u.get_ref()) && !raw.upstreams_incomplete {
                self.err(u.span(), format!("route names unknown upstream `{}`", u.get_ref()));
                return None;
            }
            RouteAction::Upstream(u.get_ref().clone())
        } else if let Some(root) = &r.root {
            self.static_action(r, root)?
        } else {
            let to = r.redirect.as_ref()?;
            let target = to.get_ref().trim_end_matches('/');
            match target.parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
                _ => {
                    self.err(
                        to.span(),
                        format!("redirect `{}` must be an absolute http(s) URL", to.get_ref()),
                    );
                    return None;
                }
            }
            RouteAction::Redirect(target.to_string())
        };
        if !matches!(action, RouteAction::Static { .. }) {
            if let Some(v) = &r.index {
                self.err(v.span(), "`index` only applies to a route with `root`");
            }
            if let Some(v) = &r.cache_control {
                self.err(v.span(), "`cache_control` only applies to a route with `root`");
            }
        }
        Some(action)
    }

    /// A static route: its root a readable directory, its `index` a file name, its
    /// `cache_control` a header value.
    fn static_action(&mut self, r: &RawRoute, root: &Spanned<String>) -> Option<RouteAction> {
        let root_path = PathBuf::from(root.get_ref());
        if let Err(e) = self.fs.list_dir(&root_path) {
            self.err(
                root.span(),
                format!("root `{}` is not a readable directory: {e}", root.get_ref()),
            );
            return None;
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
        Some(RouteAction::Static {
            root: root_path,
            index: r.index.as_ref().map(|i| i.get_ref().clone()),
            cache_control,
        })
    }

    /// The networks of `allow` (`None`: everyone).
    fn route_allow(&mut self, r: &RawRoute) -> Option<Vec<ipnet::IpNet>> {
        let list = r.allow.as_ref()?;
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
        Some(nets)
    }

    /// The route's name for logs and metrics, and the span to report a clash at: `name`, or
    /// the first host and the path.
    fn route_name(&mut self, r: &RawRoute, hosts: &[String], path: &Spanned<String>) -> (String, Range<usize>) {
        let Some(n) = &r.name else {
            return (
                format!("{}{}", hosts.first().map_or("", String::as_str), path.get_ref()),
                path.span(),
            );
        };
        let v = n.get_ref();
        if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            self.err(
                n.span(),
                "a route name is 1 to 64 visible ASCII characters, no quotes or backslashes",
            );
        }
        (v.clone(), n.span())
    }
}

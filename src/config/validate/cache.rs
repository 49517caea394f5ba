//! `[[cache_zone]]` and a route's `cache` (the proxy response cache).

use super::*;

impl Validator<'_> {
    pub(super) fn cache_zones(&mut self, raw: &[(Range<usize>, RawCacheZone)]) -> Vec<CacheZoneSpec> {
        let mut out: Vec<CacheZoneSpec> = Vec::new();
        for (span, z) in raw {
            let name = match &z.name {
                Some(n) if valid_zone_name(n.get_ref()) => n,
                Some(n) => {
                    self.err(n.span(), "a cache zone name is 1 to 64 letters, digits, `-` or `_`");
                    continue;
                }
                None => {
                    self.missing(span.clone(), "[[cache_zone]] needs a `name`");
                    continue;
                }
            };
            let max_size = self.size(z.max_size.as_ref(), CacheZoneSpec::DEFAULT_MAX_SIZE);
            if max_size == 0
                && let Some(v) = &z.max_size
            {
                self.err(v.span(), "max_size must be larger than 0");
            }
            let default_object = CacheZoneSpec::DEFAULT_MAX_OBJECT_SIZE.min(max_size);
            let max_object_size = self.size(z.max_object_size.as_ref(), default_object);
            if let Some(v) = &z.max_object_size
                && max_object_size > max_size
            {
                self.err(v.span(), "max_object_size must not be larger than max_size");
            }
            if out.iter().any(|o| o.name == *name.get_ref()) {
                self.err(name.span(), format!("cache_zone `{}` is defined twice", name.get_ref()));
                continue;
            }
            out.push(CacheZoneSpec {
                name: name.get_ref().clone(),
                max_size,
                max_object_size,
            });
        }
        out
    }

    /// A route's `cache` and `cache_ignore_cookies`: only with `upstream`, naming a known zone.
    pub(super) fn route_cache(
        &mut self,
        r: &RawRoute,
        action: &RouteAction,
        raw: &RawConfig,
        zones: &HashSet<String>,
    ) -> Option<RouteCacheSpec> {
        let Some(c) = &r.cache else {
            if let Some(v) = &r.cache_ignore_cookies {
                self.err(v.span(), "`cache_ignore_cookies` only applies to a route with `cache`");
            }
            return None;
        };
        if !matches!(action, RouteAction::Upstream(_)) {
            self.err(c.span(), "`cache` only applies to a route with `upstream`");
            return None;
        }
        let cache = c.get_ref();
        let Some(zone) = &cache.zone else {
            self.missing(c.span(), "`cache` needs a `zone`, the name of a [[cache_zone]]");
            return None;
        };
        if !zones.contains(zone.get_ref()) && !raw.cache_zones_incomplete {
            self.err(
                zone.span(),
                format!("route names unknown cache_zone `{}`", zone.get_ref()),
            );
        }
        let status_header = cache.status_header.as_ref().and_then(|h| {
            HeaderName::from_bytes(h.get_ref().as_bytes())
                .map_err(|_| self.err(h.span(), "status_header must be a header name, e.g. \"X-Cache-Status\""))
                .ok()
        });
        let mut ignore_cookies = Vec::new();
        for name in r.cache_ignore_cookies.iter().flat_map(|l| l.get_ref()) {
            let n = name.get_ref();
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b)) {
                self.err(name.span(), format!("`{n}` is not a cookie name"));
            } else {
                ignore_cookies.push(n.clone());
            }
        }
        Some(RouteCacheSpec {
            zone: zone.get_ref().clone(),
            ttl: self.duration(cache.ttl.as_ref(), Duration::ZERO),
            stale_while_revalidate: self.duration(cache.stale_while_revalidate.as_ref(), Duration::ZERO),
            stale_if_error: self.duration(cache.stale_if_error.as_ref(), Duration::ZERO),
            lock_timeout: self.positive_duration(cache.lock_timeout.as_ref(), Duration::from_secs(5)),
            ignore_cookies,
            status_header,
        })
    }
}

fn valid_zone_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use crate::config::{RouteCacheSpec, parse};
    use std::path::Path;
    use std::time::Duration;

    const HEAD: &str =
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(d) => d.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_cached_route_names_its_zone() {
        let text = format!(
            "{HEAD}[[cache_zone]]\nname = \"api\"\nmax_size = \"8MiB\"\n[[route]]\npath = \"/\"\nupstream = \"app\"\n\
             cache = {{ zone = \"api\", ttl = \"10s\", stale_while_revalidate = \"30s\", stale_if_error = \"1h\", status_header = \"X-Cache-Status\" }}\n\
             cache_ignore_cookies = [\"csrftoken\"]\n"
        );
        let loaded = parse(Path::new("t.toml"), &text).unwrap_or_else(|d| panic!("{d}"));
        let zone = &loaded.config.cache_zones[0];
        assert_eq!((zone.max_size, zone.max_object_size), (8 << 20, 1 << 20));
        let c: &RouteCacheSpec = loaded.config.routes[0].cache.as_ref().unwrap();
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert_eq!(c.stale_if_error, Duration::from_secs(3600));
        assert_eq!(c.lock_timeout, Duration::from_secs(5));
        assert_eq!(c.ignore_cookies, ["csrftoken"]);
        assert_eq!(c.status_header.as_ref().unwrap(), "x-cache-status");
    }

    #[test]
    fn cache_mistakes_are_reported_where_they_are() {
        let text = format!(
            "{HEAD}[[cache_zone]]\nname = \"api\"\nmax_size = \"1MiB\"\nmax_object_size = \"2MiB\"\n\
             [[cache_zone]]\nname = \"api\"\n\
             [[route]]\npath = \"/\"\nupstream = \"app\"\ncache = {{ zone = \"nope\", ttl = \"ten\" }}\n\
             [[route]]\npath = \"/r\"\nredirect = \"https://example.com\"\ncache = {{ zone = \"api\" }}\n\
             [[route]]\npath = \"/c\"\nupstream = \"app\"\ncache_ignore_cookies = [\"a\"]\n"
        );
        let e = errors(&text).join("\n");
        for want in [
            "t.toml:10:19: max_object_size must not be larger than max_size",
            "t.toml:12:8: cache_zone `api` is defined twice",
            "t.toml:16:18: route names unknown cache_zone `nope`",
            "t.toml:16:32: `ten` is not a duration",
            "t.toml:20:9: `cache` only applies to a route with `upstream`",
            "t.toml:24:24: `cache_ignore_cookies` only applies to a route with `cache`",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}

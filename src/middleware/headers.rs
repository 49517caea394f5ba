//! Security headers: the `[headers]` set (HSTS on HTTPS only, `X-Content-Type-Options`,
//! `X-Frame-Options`, `Referrer-Policy`, `Content-Security-Policy`, `Permissions-Policy`) added
//! to every response the gateway sends, errors and 304s included. A route may override or remove
//! (`""`) any of them; an upstream's own value wins unless the route says `override = true`.

use http::header::HeaderMap;

use crate::config::{SECURITY_HEADERS, SecurityHeaders};

impl SecurityHeaders {
    /// Adds the headers to a response. `from_upstream`: the response came from an upstream,
    /// whose own values are kept unless overriding. HSTS goes only over TLS.
    pub fn apply(&self, h: &mut HeaderMap, tls: bool, from_upstream: bool) {
        let keep_upstream = from_upstream && !self.override_upstream;
        for (header, v) in SECURITY_HEADERS.iter().zip(&self.values) {
            if header.https_only && !tls {
                continue;
            }
            let name = &header.name;
            match v {
                Some(_) if keep_upstream && h.contains_key(name) => {}
                Some(v) => {
                    h.insert(name, v.clone());
                }
                // removed by the route: with override, the upstream's goes too
                None if from_upstream && self.override_upstream => {
                    h.remove(name);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn defaults_overrides_and_upstream_precedence() {
        let global = SecurityHeaders::default();
        let mut h = HeaderMap::new();
        global.apply(&mut h, false, false);
        assert!(h.get("strict-transport-security").is_none(), "no HSTS on plain HTTP");
        assert_eq!(h["x-frame-options"], "DENY");
        let mut h = HeaderMap::new();
        global.apply(&mut h, true, false);
        assert_eq!(h["strict-transport-security"], "max-age=63072000; includeSubDomains");

        let mut values: [Option<Option<HeaderValue>>; 6] = Default::default();
        values[2] = Some(Some(HeaderValue::from_static("SAMEORIGIN")));
        values[4] = Some(None);
        let route = SecurityHeaders::derive(&global, values.clone(), false);
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("ALLOW-FROM x"));
        h.insert("content-security-policy", HeaderValue::from_static("upstream"));
        route.apply(&mut h, true, true);
        assert_eq!(h["x-frame-options"], "ALLOW-FROM x", "the upstream's own value wins");
        assert_eq!(h["content-security-policy"], "upstream");
        assert_eq!(h["x-content-type-options"], "nosniff");

        let forced = SecurityHeaders::derive(&global, values, true);
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("ALLOW-FROM x"));
        h.insert("content-security-policy", HeaderValue::from_static("upstream"));
        forced.apply(&mut h, true, true);
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
        assert!(h.get("content-security-policy").is_none());
    }
}

//! Header-field rules of HTTP/1.1 that every parser and encoder of the codec shares, each
//! written once: `Content-Length` values, `Connection` tokens, which fields are hop-by-hop,
//! which a `Connection` list may never remove, and names with underscores.

use http::header::{self, HeaderMap, HeaderName};

/// A `Content-Length` value: digits only (no sign, no spaces, no list), at most 18 of them.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Every `Content-Length` of a message, lines and comma-separated lists alike (RFC 9110 §8.6):
/// `value` is what they all say, `repeated` true when there was more than one value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lengths {
    pub value: Option<u64>,
    pub repeated: bool,
}

/// A `Content-Length` that is not a number, or that differs from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength;

impl Lengths {
    /// Adds one field line's value.
    pub fn add(&mut self, line: &[u8]) -> Result<(), BadLength> {
        for item in line.split(|b| *b == b',') {
            let n = parse_length(item.trim_ascii()).ok_or(BadLength)?;
            match self.value {
                Some(v) if v != n => return Err(BadLength),
                Some(_) => self.repeated = true,
                None => self.value = Some(n),
            }
        }
        Ok(())
    }
}

/// The tokens of a `Connection` value, trimmed; empty list elements skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What a message's `Connection` fields say about its connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some other token was listed: a field to remove before the message goes on.
    pub lists_fields: bool,
}

impl ConnectionOptions {
    /// Reads one `Connection` value; true when it names fields to remove.
    pub fn add(&mut self, value: &[u8]) -> bool {
        let mut lists = false;
        for t in tokens(value) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                lists = true;
            }
        }
        self.lists_fields |= lists;
        lists
    }

    /// Whether the connection stays open after this message (RFC 9112 §9.3).
    pub fn persistent(&self, http11: bool) -> bool {
        if http11 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }
}

/// Fields that concern one connection only (RFC 9110 §7.6.1, and the `Proxy-*` ones of the
/// hop they were meant for); `Upgrade` is decided by the caller.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
    )
}

/// Fields a `Connection` list may not remove: the host the gateway routed on, and the framing
/// the gateway reads and writes itself (a peer naming them there is only trying to make the
/// next hop read the message another way).
pub fn is_protected(name: &HeaderName) -> bool {
    *name == header::HOST || *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING
}

/// A field name with `_`: CGI and WSGI backends (Django among them) read `X_Forwarded_For` and
/// `X-Forwarded-For` as one variable, so such a name can spoof the gateway's own forwarding
/// headers. Dropped unless `server.underscores_in_headers` (as nginx's
/// `underscores_in_headers off`).
pub fn has_underscore(name: &[u8]) -> bool {
    name.contains(&b'_')
}

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1, those named in `Connection` (but
/// `Upgrade`, which the caller decides on, and the [protected](is_protected) ones), and those
/// `also` picks. One pass over the names first: most messages carry none, and then nothing is
/// hashed.
pub fn strip_hop_by_hop(h: &mut HeaderMap, also: impl Fn(&str) -> bool) {
    if !h.keys().any(|k| is_hop_by_hop(k.as_str()) || also(k.as_str())) {
        return;
    }
    let mut doomed: Vec<HeaderName> = h
        .keys()
        .filter(|k| is_hop_by_hop(k.as_str()) || also(k.as_str()))
        .cloned()
        .collect();
    for conn in h.get_all(header::CONNECTION) {
        doomed.extend(
            tokens(conn.as_bytes())
                // the usual tokens name no field to remove (keep-alive goes anyway): skipped
                // before they cost a header name each
                .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
                .filter_map(|t| HeaderName::from_bytes(t).ok())
                .filter(|n| *n != header::UPGRADE && !is_protected(n)),
        );
    }
    for n in doomed {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn lengths_agree_or_are_refused() {
        let read = |lines: &[&str]| {
            let mut l = Lengths::default();
            for line in lines {
                l.add(line.as_bytes())?;
            }
            Ok::<_, BadLength>(l)
        };
        let one = read(&["5"]).unwrap();
        assert_eq!((one.value, one.repeated), (Some(5), false));
        for repeated in [&["5", "5"][..], &["5, 5"], &["5,5", "5"]] {
            let l = read(repeated).unwrap();
            assert_eq!((l.value, l.repeated), (Some(5), true), "{repeated:?}");
        }
        for bad in [
            &["5", "6"][..],
            &["5, 6"],
            &["+5"],
            &["-1"],
            &[""],
            &["5,"],
            &["0x5"],
            &["1 2"],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        assert!(parse_length(b"999999999999999999").is_some());
        assert!(parse_length(b"9999999999999999999").is_none());
    }

    #[test]
    fn connection_options() {
        let mut c = ConnectionOptions::default();
        assert!(!c.add(b" Keep-Alive , , Upgrade"));
        assert!(c.keep_alive && c.upgrade && !c.close && !c.lists_fields);
        assert!(c.persistent(false) && c.persistent(true));
        assert!(c.add(b"close, x-secret"));
        assert!(c.close && c.lists_fields && !c.persistent(true));
        assert!(!ConnectionOptions::default().persistent(false));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go_but_protected_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, upgrade, Host, content-length, transfer-encoding"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(header::HOST, HeaderValue::from_static("shop.test"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h, |_| false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["accept", "content-length", "host", "upgrade"]);
    }

    #[test]
    fn underscores() {
        assert!(has_underscore(b"x_forwarded_for"));
        assert!(!has_underscore(b"x-forwarded-for"));
    }
}

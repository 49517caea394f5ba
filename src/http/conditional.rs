//! Conditional and range requests (RFC 9110 §13, §14), for any response the gateway answers
//! from memory or disk (static files, cached proxy responses): `If-None-Match`,
//! `If-Modified-Since`, a single byte `Range` with `If-Range`, and the ETags of encoded variants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};

/// What a representation can be compared by.
pub struct Validators<'a> {
    /// The ETag of the representation being sent (what `If-None-Match` is compared to).
    pub etag: Option<&'a HeaderValue>,
    /// The identity representation's ETag (what `If-Range` is compared to, strongly).
    pub identity_etag: Option<&'a HeaderValue>,
    pub modified: Option<SystemTime>,
    /// The identity representation's length, for ranges.
    pub len: u64,
}

pub enum Pre {
    NotModified,
    Unsatisfiable,
    /// Serve the whole representation, or this inclusive byte range of it.
    Serve(Option<(u64, u64)>),
}

/// Conditional request and range handling; `identity`: the representation is not encoded (only
/// then are ranges served).
pub fn precondition(h: &HeaderMap, v: &Validators<'_>, identity: bool) -> Pre {
    if let Some(inm) = h.get(header::IF_NONE_MATCH) {
        if v.etag.is_some_and(|etag| etag_list_matches(inm, etag)) {
            return Pre::NotModified;
        }
    } else if let (Some(ims), Some(modified)) = (h.get(header::IF_MODIFIED_SINCE).and_then(parse_date), v.modified)
        && whole_seconds(modified) <= whole_seconds(ims)
    {
        return Pre::NotModified;
    }
    if !identity {
        return Pre::Serve(None);
    }
    let Some(range) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Pre::Serve(None);
    };
    if let Some(if_range) = h.get(header::IF_RANGE) {
        let fresh = if if_range.as_bytes().starts_with(b"\"") {
            // strong comparison only
            v.identity_etag
                .is_some_and(|tag| !tag.as_bytes().starts_with(b"W/") && if_range.as_bytes() == tag.as_bytes())
        } else {
            let same = |d: SystemTime| v.modified.is_some_and(|m| whole_seconds(d) == whole_seconds(m));
            parse_date(if_range).is_some_and(same)
        };
        if !fresh {
            return Pre::Serve(None);
        }
    }
    match parse_range(range, v.len) {
        RangeSpec::One(s, e) => Pre::Serve(Some((s, e))),
        RangeSpec::Unsatisfiable => Pre::Unsatisfiable,
        RangeSpec::Ignore => Pre::Serve(None),
    }
}

/// `If-None-Match`'s list against an ETag (weak comparison, as RFC 9110 §13.1.2 asks).
pub fn etag_list_matches(list: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = list.to_str() else { return false };
    let ours = etag.to_str().unwrap_or("");
    let ours = ours.strip_prefix("W/").unwrap_or(ours);
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours)
}

pub fn parse_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    One(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, another unit, malformed): send it all.
    Ignore,
}

/// Parses a `Range` header for a representation of `len` bytes.
pub fn parse_range(v: &str, len: u64) -> RangeSpec {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match parse(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(n) if len > 0 => RangeSpec::One(len.saturating_sub(n), len - 1),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Ignore,
        },
        // bytes=N-
        (false, true) => match parse(a) {
            Some(s) if s < len => RangeSpec::One(s, len - 1),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Ignore,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(s), Some(e)) if s <= e && s < len => RangeSpec::One(s, e.min(len - 1)),
            (Some(s), Some(e)) if s <= e => RangeSpec::Unsatisfiable,
            _ => RangeSpec::Ignore,
        },
        (true, true) => RangeSpec::Ignore,
    }
}

/// The ETag of an encoded variant: the identity tag with the encoding's extension inside its
/// quotes (`"abc"` → `"abc-gz"`), weak if the identity's was.
pub fn representation_etag(base: &HeaderValue, ext: Option<&str>) -> HeaderValue {
    let Some(ext) = ext else { return base.clone() };
    let b = base.as_bytes();
    if b.len() < 2 || !b.ends_with(b"\"") {
        return base.clone();
    }
    let inner = &b[..b.len() - 1];
    let mut v = Vec::with_capacity(b.len() + ext.len() + 1);
    v.extend_from_slice(inner);
    v.push(b'-');
    v.extend_from_slice(ext.as_bytes());
    v.push(b'"');
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| base.clone())
}

/// `tag` as a weak ETag.
pub fn weak(tag: &HeaderValue) -> HeaderValue {
    if tag.as_bytes().starts_with(b"W/") {
        return tag.clone();
    }
    let mut v = b"W/".to_vec();
    v.extend_from_slice(tag.as_bytes());
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| tag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::One(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), RangeSpec::One(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::One(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::One(0, 999));
        assert_eq!(parse_range("bytes=990-2000", 1000), RangeSpec::One(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-y", 1000), RangeSpec::Ignore);
    }

    #[test]
    fn etags() {
        let base = HeaderValue::from_static("\"abc-10\"");
        assert_eq!(representation_etag(&base, Some("br")), "\"abc-10-br\"");
        assert_eq!(representation_etag(&base, None), "\"abc-10\"");
        let weak_base = HeaderValue::from_static("W/\"x\"");
        assert_eq!(representation_etag(&weak_base, Some("gz")), "W/\"x-gz\"");
        assert_eq!(weak(&base), "W/\"abc-10\"");
        assert_eq!(weak(&weak_base), "W/\"x\"");
        assert!(etag_list_matches(
            &HeaderValue::from_static("\"x\", W/\"abc-10\""),
            &base
        ));
        assert!(etag_list_matches(&HeaderValue::from_static("*"), &base));
        assert!(!etag_list_matches(&HeaderValue::from_static("\"abc-10-br\""), &base));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let tag = HeaderValue::from_static("W/\"a\"");
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("W/\"a\""));
        let v = Validators {
            etag: Some(&tag),
            identity_etag: Some(&tag),
            modified: None,
            len: 10,
        };
        assert!(matches!(precondition(&h, &v, true), Pre::Serve(None)));
        h.remove(header::IF_RANGE);
        assert!(matches!(precondition(&h, &v, true), Pre::Serve(Some((0, 1)))));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        assert!(matches!(precondition(&h, &v, true), Pre::NotModified));
    }
}

//! The properties the fuzz targets check, one function per target. The targets in
//! `fuzz_targets/` call them under libFuzzer; `tests/codec.rs` includes this file too and runs
//! every corpus file in `fuzz/corpus/` through them on each `cargo test`, so a crash found once
//! stays a regression test. Each function takes any bytes and panics only when a property
//! fails: never "no panic" alone.

#![allow(dead_code)]

use std::path::Path;

use bytes::BytesMut;
use http::header;
use orta_gateway::proto::h1::body::BodyDecoder;
use orta_gateway::proto::h1::chunked::{self, Chunked, Decoded};
use orta_gateway::proto::h1::encode::{self, BodyShape};
use orta_gateway::proto::h1::fields::parse_length;
use orta_gateway::proto::h1::request::{self, BodyFraming, Limits, Reject};
use orta_gateway::proto::h1::response::{self, Framing, Parsed};
use orta_gateway::proto::proxy_protocol::{self, Header};

/// A property check over any bytes.
pub type Check = fn(&[u8]);

/// The targets by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("request_body", request_body),
    ("response_head", response_head),
    ("response_body", response_body),
    ("proxy_protocol", proxy_header),
    ("path", path),
    ("range", range),
    ("accept_encoding", accept_encoding),
    ("config", config),
    ("request_differential", request_differential),
    ("nginx_conf", nginx_conf),
    ("cache_policy", cache_policy),
    ("cluster_values", cluster_values),
];

fn limits(underscores: bool) -> Limits {
    Limits {
        max_head: 8 * 1024,
        underscores,
    }
}

/// Request heads. What the parser accepts has exactly one framing, consumed no more than it was
/// given, holds no name it should have dropped, and comes back the same when the gateway's own
/// encoder writes it out and the parser reads it again. What it leaves unfinished (`None`)
/// consumed nothing.
pub fn request_head(data: &[u8]) {
    let underscores = data.first().is_some_and(|b| b & 1 == 1);
    let mut buf = BytesMut::from(data);
    let head = match request::parse(&mut buf, &limits(underscores)) {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert_eq!(buf.len(), data.len(), "an incomplete head consumed bytes");
            return;
        }
        Err(_) => return,
    };
    let consumed = data.len() - buf.len();
    assert!(consumed > 0 && consumed <= data.len());
    let h = head.req.headers();
    // exactly one framing
    let lengths = h.get_all(header::CONTENT_LENGTH).iter().count();
    let codings = h.get_all(header::TRANSFER_ENCODING).iter().count();
    assert!(lengths <= 1 && codings <= 1 && lengths + codings <= 1, "{h:?}");
    match head.body {
        Some(BodyFraming::Length(n)) => {
            assert!(n > 0);
            assert_eq!(parse_length(h[header::CONTENT_LENGTH].as_bytes()), Some(n));
        }
        Some(BodyFraming::Chunked) => assert!(
            h[header::TRANSFER_ENCODING]
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        ),
        None => assert_eq!(codings, 0),
    }
    assert!(h.get_all(header::HOST).iter().count() <= 1);
    if !underscores {
        assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
    }
    // written out by the encoder and read again: the same request (unless the head has as
    // many fields as the parser takes: the encoder may add its framing line)
    if h.len() + 1 >= request::MAX_HEADERS {
        return;
    }
    let shape = BodyShape {
        empty: head.body.is_none(),
        exact: match head.body {
            Some(BodyFraming::Length(n)) => Some(n),
            Some(BodyFraming::Chunked) => None,
            None => Some(0),
        },
    };
    let version = head.req.version();
    let (parts, ()) = head.req.into_parts();
    let mut out = Vec::new();
    let framing = encode::request_head(&mut out, &parts, std::iter::empty(), shape);
    assert_eq!(framing, head.body);
    let mut again = BytesMut::from(&out[..]);
    let wide = Limits {
        max_head: 64 * 1024,
        underscores,
    };
    let reread = match request::parse(&mut again, &wide) {
        Ok(Some(r)) => r,
        other => panic!(
            "the encoder's head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(reread.req.method(), parts.method);
    let target = |u: &http::Uri| (u.path().to_string(), u.query().map(str::to_string));
    assert_eq!(target(reread.req.uri()), target(&parts.uri));
    assert_eq!(reread.body, head.body);
    let fields = |m: &http::HeaderMap| -> Vec<(String, Vec<u8>)> {
        m.iter()
            .filter(|(k, _)| **k != header::CONTENT_LENGTH && **k != header::TRANSFER_ENCODING)
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(fields(reread.req.headers()), fields(&parts.headers));
    if version == http::Version::HTTP_11 {
        assert_eq!(reread.keep_alive, head.keep_alive);
        assert_eq!(reread.upgrade, head.upgrade);
        assert_eq!(reread.expect_continue, head.expect_continue);
    }
}

/// Decodes `input` fed in pieces of `split` bytes: the body and the bytes consumed, or the
/// error.
fn decode_body(mut decoder: BodyDecoder, input: &[u8], split: usize, strict: bool) -> Result<(Vec<u8>, usize), String> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in input.chunks(split.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf, strict).map_err(|e| e.to_string())? {
                Decoded::Data(d) => {
                    assert!(!d.is_empty(), "an empty piece of data");
                    out.extend_from_slice(&d);
                }
                Decoded::NeedMore => break,
                Decoded::End => return Ok((out, fed - buf.len())),
            }
        }
    }
    Err("incomplete".into())
}

/// The first byte picks the read sizes; for a length-framed body the next two give the length.
fn body_case(data: &[u8]) -> Option<(usize, &[u8])> {
    let (&ctl, rest) = data.split_first()?;
    Some((ctl as usize % 64 + 1, rest))
}

/// Request bodies, chunked (read strictly) and length-framed. The same bytes give the same body
/// and stop at the same byte whatever the read boundaries; a body never holds more bytes than
/// were consumed, and never consumes past its end; a chunked body read back as one chunk by the
/// gateway's own encoder is the same body.
pub fn request_body(data: &[u8]) {
    let Some((split, rest)) = body_case(data) else { return };
    let chunked = BodyDecoder::new(BodyFraming::Chunked);
    let whole = decode_body(chunked, rest, rest.len(), true);
    assert_eq!(
        whole,
        decode_body(chunked, rest, split, true),
        "read boundaries changed the body"
    );
    if let Ok((body, used)) = &whole {
        assert!(*used <= rest.len() && body.len() <= *used);
        let mut enc = Vec::new();
        if !body.is_empty() {
            chunked::size_line(&mut enc, body.len());
            enc.extend_from_slice(body);
            enc.extend_from_slice(b"\r\n");
        }
        enc.extend_from_slice(chunked::LAST_CHUNK);
        assert_eq!(
            decode_body(chunked, &enc, enc.len(), true),
            Ok((body.clone(), enc.len()))
        );
    }
    // a length: exactly that many bytes, or incomplete
    if rest.len() >= 2 {
        let n = u16::from_be_bytes([rest[0], rest[1]]) as u64;
        let body = &rest[2..];
        let length = BodyDecoder::new(BodyFraming::Length(n.max(1)));
        match decode_body(length, body, split, true) {
            Ok((got, used)) => {
                assert_eq!(used as u64, n.max(1));
                assert_eq!(got, &body[..used]);
            }
            Err(_) => assert!((body.len() as u64) < n.max(1)),
        }
    }
}

/// Response bodies, chunked, read leniently. Boundaries change nothing; whatever the strict
/// reading accepts, the lenient one accepts the same way (the strict reading is the lenient one
/// with more refusals, never a different answer).
pub fn response_body(data: &[u8]) {
    let Some((split, rest)) = body_case(data) else { return };
    let chunked = BodyDecoder::Chunked(Chunked::new());
    let lenient = decode_body(chunked, rest, rest.len(), false);
    assert_eq!(
        lenient,
        decode_body(chunked, rest, split, false),
        "read boundaries changed the body"
    );
    if let Ok((body, used)) = decode_body(chunked, rest, rest.len(), true) {
        assert_eq!(lenient, Ok((body, used)), "strict and lenient readings differ");
    }
}

/// Response heads. At most one length and no length beside chunked; the framing and the
/// length field agree; nothing is consumed past the head; an interim head consumes itself.
pub fn response_head(data: &[u8]) {
    let (flags, rest) = match data.split_first() {
        Some((f, r)) => (*f, r),
        None => return,
    };
    let (head_only, upgrade) = (flags & 1 == 1, flags & 2 == 2);
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        match response::parse(&mut buf, head_only, upgrade) {
            Ok(Some(Parsed::Interim)) => assert!(buf.len() < before),
            Ok(Some(Parsed::Final(head))) => {
                assert!(buf.len() < before);
                let h = head.resp.headers();
                let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
                assert!(lengths.len() <= 1, "{h:?}");
                assert!(!h.contains_key(header::TRANSFER_ENCODING) || head.resp.status() == 101);
                match head.framing {
                    Framing::Length(n) => assert_eq!(lengths[0].to_str().unwrap().parse::<u64>().unwrap(), n),
                    Framing::Chunked | Framing::UntilClose => assert!(lengths.is_empty()),
                    Framing::None => {}
                }
                if head_only || matches!(head.resp.status().as_u16(), 204 | 304) {
                    assert_eq!(head.framing, Framing::None);
                }
                if head.framing == Framing::UntilClose {
                    assert!(!head.keep_alive);
                }
                return;
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(_) => return,
        }
    }
}

/// PROXY headers. A complete header's length is within what was given, and its bytes alone
/// give the same answer; every shorter prefix is incomplete; an error stays an error whatever
/// follows.
pub fn proxy_header(data: &[u8]) {
    let result = proxy_protocol::parse(data);
    match result {
        Ok(Header::Complete { client, len }) => {
            assert!(len > 0 && len <= data.len());
            assert_eq!(
                proxy_protocol::parse(&data[..len]),
                Ok(Header::Complete { client, len })
            );
            for cut in [0, len / 2, len - 1] {
                assert_eq!(
                    proxy_protocol::parse(&data[..cut]),
                    Ok(Header::Incomplete),
                    "prefix of {cut}"
                );
            }
        }
        Ok(Header::Incomplete) => {}
        Err(_) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
            assert!(proxy_protocol::parse(&more).is_err());
        }
    }
}

/// Request paths. A normalised path starts with `/`, has no `.` or `..` or empty segment (but
/// a trailing `/`), no NUL or backslash; a path already plain comes back as it was; a result
/// without `%` is a fixed point.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(norm) = orta_gateway::router::normalize_path(raw) else {
        return;
    };
    assert!(norm.starts_with('/'), "{raw:?} -> {norm:?}");
    assert!(!norm.contains(['\0', '\\']), "{raw:?} -> {norm:?}");
    let inner = norm.trim_end_matches('/');
    for seg in inner.split('/').skip(1) {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{raw:?} -> {norm:?}");
    }
    if let std::borrow::Cow::Borrowed(b) = norm
        && raw != "*"
    {
        assert_eq!(b, raw);
    }
    if !norm.contains('%') {
        assert_eq!(orta_gateway::router::normalize_path(&norm).as_deref(), Ok(&*norm));
    }
}

/// `Range` values. A range served lies inside the representation.
pub fn range(data: &[u8]) {
    use orta_gateway::handler::files::RangeSpec;
    if data.len() < 2 {
        return;
    }
    let len = u16::from_be_bytes([data[0], data[1]]) as u64;
    let Ok(v) = std::str::from_utf8(&data[2..]) else { return };
    match orta_gateway::handler::files::parse_range(v, len) {
        RangeSpec::One(a, b) => assert!(a <= b && b < len, "{v:?} of {len}: {a}-{b}"),
        RangeSpec::Unsatisfiable | RangeSpec::Ignore => {}
    }
}

/// `Accept-Encoding` values. The encoding chosen is one the gateway is configured for, and the
/// client named it or `*`.
pub fn accept_encoding(data: &[u8]) {
    use orta_gateway::config::{CompressionSettings, Encoding};
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    for algorithms in [vec![Encoding::Brotli, Encoding::Gzip], vec![Encoding::Gzip], vec![]] {
        let settings = CompressionSettings {
            algorithms: algorithms.clone(),
            ..CompressionSettings::default()
        };
        if let Some(enc) = settings.negotiate(Some(&value)) {
            assert!(algorithms.contains(&enc));
            let text = value.to_str().unwrap().to_ascii_lowercase();
            assert!(text.contains(enc.token()) || text.contains('*'), "{text:?} -> {enc:?}");
        }
    }
}

/// The config loader. Any text gives a config or diagnostics, each `FILE:LINE:COL: message`
/// with the line and column inside the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Err(diags) = orta_gateway::config::parse(Path::new("fuzz.toml"), text) else {
        return;
    };
    let lines = text.split('\n').count();
    for e in diags.error_lines() {
        let rest = e.strip_prefix("fuzz.toml:").unwrap_or_else(|| panic!("{e}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("{e}"));
        let col: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("{e}"));
        assert!(line >= 1 && line <= lines.max(1), "{e}");
        assert!(col >= 1, "{e}");
    }
}

/// The request head parser against httparse on the same bytes: where both accept a whole head,
/// method, target, version and field list are equal (but the names the gateway drops); where
/// they disagree, the gateway is the one that refuses, for one of the classes listed in
/// `proto::h1::request`.
pub fn request_differential(data: &[u8]) {
    let mut theirs_headers = [httparse::EMPTY_HEADER; 100];
    let mut theirs = httparse::Request::new(&mut theirs_headers);
    let their_len = match theirs.parse(data) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    };
    let mut buf = BytesMut::from(data);
    let ours = request::parse(&mut buf, &limits(true));
    let our_len = data.len() - buf.len();
    match (&ours, their_len) {
        (Ok(Some(head)), Some(n)) => {
            assert_eq!(our_len, n);
            assert_eq!(head.req.method().as_str(), theirs.method.unwrap());
            assert_eq!(head.req.version() == http::Version::HTTP_11, theirs.version == Some(1));
            let ours: Vec<(String, &[u8])> = head
                .req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes()))
                .collect();
            let theirs: Vec<(String, &[u8])> = theirs
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value))
                .collect();
            // the map groups a name's values together; compare as multisets
            let mut a = ours.clone();
            let mut b = theirs.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
        (Ok(Some(_)), None) => panic!(
            "the gateway accepted a head httparse refuses: {:?}",
            String::from_utf8_lossy(data)
        ),
        (Ok(None), Some(_)) => panic!("the gateway waits for more of a head httparse finished"),
        (Err(reject), Some(_)) => assert!(
            refusal_is_listed(data, *reject),
            "{reject:?}: {:?}",
            String::from_utf8_lossy(data)
        ),
        _ => {}
    }
}

/// Whether a head httparse accepts and the gateway refuses falls in one of the classes
/// `proto::h1::request` lists (each with its RFC clause).
fn refusal_is_listed(data: &[u8], reject: Reject) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        return false;
    };
    let head = &data[..len];
    let named = |n: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .collect::<Vec<_>>()
    };
    let bare_lf = head
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    let target = req.path.unwrap_or("");
    let method = req.method.unwrap_or("");
    let target_ok = target.starts_with('/')
        || (target == "*" && method == "OPTIONS")
        || target.to_ascii_lowercase().starts_with("http://")
        || target.to_ascii_lowercase().starts_with("https://");
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    let mut one_length = fields_lengths(&lengths);
    match reject {
        Reject::TooLarge => len > 8 * 1024 || req.headers.len() >= 100,
        Reject::NotImplemented => {
            method == "CONNECT"
                || (!codings.is_empty()
                    && lengths.is_empty()
                    && !(codings.len() == 1 && codings[0].value.trim_ascii().eq_ignore_ascii_case(b"chunked")))
        }
        Reject::Bad(_) => {
            bare_lf
                || named("host").len() > 1
                || !target_ok
                || http::Method::from_bytes(method.as_bytes()).is_err()
                || http::Uri::try_from(target).is_err()
                || (!codings.is_empty() && (!lengths.is_empty() || req.version == Some(0)))
                || one_length.take().is_none()
                || req
                    .headers
                    .iter()
                    .any(|h| http::HeaderName::from_bytes(h.name.as_bytes()).is_err())
                || req
                    .headers
                    .iter()
                    .any(|h| http::HeaderValue::from_bytes(h.value).is_err())
                || absolute_without_host(target)
        }
    }
}

/// One valid length said once, or none: `Some`; else (bad, or repeated) `None`.
fn fields_lengths(lines: &[&httparse::Header<'_>]) -> Option<()> {
    let mut l = orta_gateway::proto::h1::fields::Lengths::default();
    for h in lines {
        l.add(h.value).ok()?;
    }
    (!l.repeated).then_some(())
}

fn absolute_without_host(target: &str) -> bool {
    http::Uri::try_from(target).is_ok_and(|u| u.scheme().is_some() && u.authority().is_none_or(|a| a.host().is_empty()))
}

/// An nginx configuration: bad syntax is reported at a line and column inside the text, and
/// whatever translates is well-formed TOML (names and values from the file are quoted, never
/// pasted).
pub fn nginx_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match orta_gateway::import::translate_text(Path::new("fuzz.conf"), text) {
        Ok(out) => {
            if let Err(e) = out.parse::<toml::Table>() {
                panic!("not TOML: {e}\n{out}");
            }
        }
        Err(e) => {
            let rest = e.strip_prefix("fuzz.conf:").unwrap_or_else(|| panic!("{e}"));
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("{e}"));
            let col: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("{e}"));
            assert!(line >= 1 && line <= text.split('\n').count(), "{e}");
            assert!(col >= 1, "{e}");
        }
    }
}

/// What the proxy cache reads from an upstream's answer and a client's request (hostile both):
/// the first byte picks a status and a ttl, the rest are `name: value` lines. A storable answer
/// has a positive lifetime and none of what forbids storing (`Set-Cookie`, `no-store`,
/// `private`, `Vary: *`); `Vary`'s names come back once each; the variant key ignores
/// `Accept-Encoding`; a request with `Authorization` is never answered from the cache; a purge
/// URL's key is its own key; the object ages without overflowing. Any line that is not a header is also tried as a purge URL.
pub fn cache_policy(data: &[u8]) {
    use orta_gateway::cache::policy;
    use std::time::Duration;
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let statuses = [200u16, 203, 204, 206, 301, 302, 404, 410, 500];
    let status = http::StatusCode::from_u16(statuses[usize::from(*flags) % statuses.len()]).unwrap();
    let ttl = Duration::from_secs(u64::from(flags >> 4));
    let mut h = http::HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let parsed = line.iter().position(|b| *b == b':').and_then(|at| {
            let name = http::HeaderName::from_bytes(&line[..at]).ok()?;
            let value = http::HeaderValue::from_bytes(line[at + 1..].trim_ascii()).ok()?;
            Some((name, value))
        });
        match parsed {
            Some((name, value)) => {
                h.append(name, value);
            }
            None => {
                if let Some(key) = std::str::from_utf8(line).ok().and_then(policy::key_of_url) {
                    assert!(key.starts_with("http://") || key.starts_with("https://"), "{key}");
                    assert_eq!(
                        policy::key_of_url(&key).as_deref(),
                        Some(key.as_str()),
                        "a key is its own key"
                    );
                }
            }
        }
    }
    let lower = |name: header::HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
            .collect()
    };
    let vary = policy::vary(&h);
    if let Some(names) = &vary {
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let mut plain = h.clone();
        plain.remove(header::ACCEPT_ENCODING);
        assert_eq!(policy::secondary_key(names, &h), policy::secondary_key(names, &plain));
    }
    if let Some(fresh) = policy::storable(status, &h, ttl) {
        assert!(!fresh.lifetime.is_zero());
        // the object made of it ages without overflowing, whatever the numbers (windows as long
        // as a config could hold)
        let spec = orta_gateway::config::RouteCacheSpec {
            zone: "f".into(),
            ttl,
            stale_while_revalidate: Duration::from_secs(u64::from(*flags) << 56),
            stale_if_error: Duration::from_secs(u64::MAX),
            lock_timeout: Duration::from_secs(5),
            ignore_cookies: vec![],
            status_header: None,
        };
        let object = orta_gateway::cache::Object::new(status, h.clone(), bytes::Bytes::new(), fresh, &spec);
        let _ = object.state();
        assert!(object.keep_for() <= Duration::from_secs(365 * 24 * 3600));
        assert!(vary.is_some(), "stored with Vary: *");
        assert!(!h.contains_key(header::SET_COOKIE));
        let cc = lower(header::CACHE_CONTROL).join(",");
        for forbidden in ["no-store", "private"] {
            assert!(
                !cc.split(',').any(|d| d.trim().split('=').next() == Some(forbidden)),
                "stored despite {forbidden}: {cc}"
            );
        }
    }
    let credentials = h.contains_key(header::AUTHORIZATION);
    let cacheable = policy::request_cacheable(&http::Method::GET, &h, false, &["csrftoken".to_string()]);
    assert!(!(credentials && cacheable));
}

/// What a value read from the cluster's Redis can make of the gateway (Redis is shared, so a
/// value may have been written by anyone who reaches it): `KEY\nVALUE`. A value the gateway did
/// not seal never opens; a stored certificate is read as its directory line and a PEM without
/// a panic; and what is sealed opens under its own key only, as it was.
pub fn cluster_values(data: &[u8]) {
    use orta_gateway::cluster::seal::Sealer;
    let (key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    let sealer = Sealer::new(b"the fuzzer's cluster secret");
    assert!(sealer.open(&key, value).is_err(), "a value nobody sealed opened");
    if let Some(pem) = orta_gateway::tls::acme::shared::from_store("https://ca.test/dir", value) {
        let _ = orta_gateway::pem::certified_key(&pem);
    }
    let _ = orta_gateway::pem::certified_key(value);
    let sealed = sealer.seal(&key, value);
    assert_eq!(sealer.open(&key, &sealed).as_deref(), Ok(value));
    assert!(sealer.open(&format!("{key}x"), &sealed).is_err(), "bound to its key");
    assert!(Sealer::new(b"another secret, long enough").open(&key, &sealed).is_err());
}

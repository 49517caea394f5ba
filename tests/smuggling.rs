//! Request smuggling and response splitting, tried as an attacker would: raw bytes through the
//! gateway to an upstream that records every request it reads (by its own strict reading), and
//! misbehaving upstreams answering raw bytes. The upstream must never see a request the gateway
//! did not mean to send, and a client must never receive an answer meant for another request.
//!
//! The cases follow RFC 9112 §6-§7 (framing, chunked coding), §3.2 (Host and targets), RFC 9113
//! §8 (HTTP/2 requests and what they may carry), and the public research (CL.TE, TE.CL and TE.TE
//! families, chunk-extension and bare-LF differentials, HTTP/2 downgrades). Each HTTP/1.1 attack
//! carries a request for `/smuggled` that a parser reading it another way would see.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- an upstream that records what it reads --------------------------------------------------

/// One request as the recording upstream read it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended as its framing said (not cut short).
    complete: bool,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// An upstream that reads requests strictly (httparse, then Content-Length or chunked), records
/// each, and answers `seen <target>`. Anything it cannot read is recorded as `GARBAGE`.
struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let r = requests.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(record(s, r.clone()));
            }
        });
        Recorder { addr, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn record(mut s: TcpStream, log: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    loop {
        // the head
        let (len, mut rec) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let rec = Recorded {
                        method: req.method.unwrap_or("").to_string(),
                        target: req.path.unwrap_or("").to_string(),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                            .collect(),
                        body: Vec::new(),
                        complete: false,
                    };
                    break (len, rec);
                }
                Ok(httparse::Status::Partial) => {
                    if !fill(&mut s, &mut buf).await {
                        if !buf.is_empty() {
                            log.lock().unwrap().push(garbage(&buf));
                        }
                        return;
                    }
                }
                Err(_) => {
                    log.lock().unwrap().push(garbage(&buf));
                    return;
                }
            }
        };
        buf.drain(..len);
        // the body, by the framing the gateway sent
        let chunked = rec
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if fill(&mut s, &mut buf).await {
                        continue;
                    }
                    log.lock().unwrap().push(rec);
                    return;
                };
                let Ok(size) = usize::from_str_radix(std::str::from_utf8(&buf[..eol]).unwrap_or("x"), 16) else {
                    log.lock().unwrap().push(garbage(&buf));
                    return;
                };
                while buf.len() < eol + 2 + size + 2 {
                    if !fill(&mut s, &mut buf).await {
                        log.lock().unwrap().push(rec);
                        return;
                    }
                }
                if &buf[eol + 2 + size..eol + 4 + size] != b"\r\n" {
                    log.lock().unwrap().push(garbage(&buf));
                    return;
                }
                rec.body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
                buf.drain(..eol + 4 + size);
                if size == 0 {
                    rec.complete = true;
                    break;
                }
            }
        } else {
            let n: usize = rec
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap_or(usize::MAX));
            while buf.len() < n {
                if !fill(&mut s, &mut buf).await {
                    rec.body = std::mem::take(&mut buf);
                    log.lock().unwrap().push(rec);
                    return;
                }
            }
            rec.body = buf.drain(..n).collect();
            rec.complete = true;
        }
        let answer = format!("seen {}", rec.target);
        log.lock().unwrap().push(rec);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn garbage(bytes: &[u8]) -> Recorded {
    Recorded {
        method: "GARBAGE".into(),
        target: String::from_utf8_lossy(bytes).into_owned(),
        headers: Vec::new(),
        body: Vec::new(),
        complete: false,
    }
}

/// A gateway proxying everything to `up`, with `server_extra` added to `[server]`.
async fn gateway(up: SocketAddr, server_extra: &str) -> TestGateway {
    let toml = proxy_config(&[up], "").replace(
        "redirect_to_https = false",
        &format!("redirect_to_https = false\n{server_extra}"),
    );
    TestGateway::start(&toml).await
}

/// Sends `payload` on one connection; returns everything the gateway answered until it closed
/// (or 5 s passed), and what the upstream recorded.
async fn attack(payload: &[u8]) -> (String, Vec<Recorded>) {
    let up = Recorder::start().await;
    let gw = gateway(up.addr, "").await;
    let answer = raw(gw.http(), payload).await;
    // the upstream has read whatever it was sent by the time the answer is complete; a
    // request it is still reading would show as incomplete
    (answer, up.requests())
}

/// Status lines of every response in `answer`.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer[i + 9..].get(..3)?.parse().ok())
        .filter(|s| (100..600).contains(s))
        .collect()
}

fn assert_nothing_smuggled(what: &str, answer: &str, seen: &[Recorded]) {
    assert!(
        !seen
            .iter()
            .any(|r| r.target.contains("smuggled") || r.method == "GARBAGE"),
        "{what}: the upstream saw {seen:#?}"
    );
    assert!(!answer.contains("seen /smuggled"), "{what}: {answer}");
}

/// A refused request: this status, the connection closed, nothing reached the upstream.
async fn refused(what: &str, payload: &[u8], status: u16) {
    let (answer, seen) = attack(payload).await;
    assert_eq!(statuses(&answer), [status], "{what}: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{what}: {answer}"
    );
    assert!(seen.is_empty(), "{what}: the upstream saw {seen:#?}");
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

// ---- HTTP/1.1 framing: CL.TE, TE.CL, TE.TE ----------------------------------------------------

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    for (what, head) in [
        (
            "CL.TE",
            format!("Content-Length: {}\r\nTransfer-Encoding: chunked", body.len()),
        ),
        ("TE.CL", "Transfer-Encoding: chunked\r\nContent-Length: 3".to_string()),
        (
            "CL.TE identity",
            format!("Content-Length: {}\r\nTransfer-Encoding: identity", body.len()),
        ),
    ] {
        let payload = format!("POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n{body}");
        refused(what, payload.as_bytes(), 400).await;
    }
}

#[tokio::test]
async fn transfer_encoding_spellings_are_refused() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    // codings the gateway does not implement, however spelled: 501 (as nginx)
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: \"chunked\"",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: chunk",
        "Transfer-Encoding:",
    ] {
        let payload = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{te}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // (with a length too, it is CL.TE first)
        refused(te, payload.as_bytes(), 400).await;
        let payload = format!("POST / HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n{body}");
        refused(te, payload.as_bytes(), 501).await;
    }
    // malformed field lines: 400
    for te in [
        "Transfer-Encoding : chunked",
        "Transfer-Encoding\t: chunked",
        "X-A: b\r\n Transfer-Encoding: chunked",
        "X-A: b\r\n\tTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\0",
        "Transfer-Encoding: \x0bchunked",
        "Transfer-Encoding:\rchunked",
        "Transfer\r\n-Encoding: chunked",
    ] {
        let payload = format!("POST / HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n{body}");
        refused(&format!("{te:?}"), payload.as_bytes(), 400).await;
    }
    // chunked in HTTP/1.0, where it does not exist
    let payload = format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    refused("HTTP/1.0 chunked", payload.as_bytes(), 400).await;
}

#[tokio::test]
async fn a_tab_before_chunked_is_whitespace_and_the_body_ends_where_it_says() {
    let payload = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (answer, seen) = attack(payload.as_bytes()).await;
    assert_nothing_smuggled("tab", &answer, &seen);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
    assert!(seen[0].complete);
}

#[tokio::test]
async fn content_length_tricks_are_refused() {
    for cl in [
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 0x5",
        "Content-Length: 5.0",
        "Content-Length: 1 0",
        "Content-Length: ",
        "Content-Length: 99999999999999999999",
        "Content-Length : 5",
        "Content-Length: 5\r\n Content-Length: 6",
    ] {
        let payload = format!("POST / HTTP/1.1\r\nHost: x\r\n{cl}\r\n\r\nhello{SMUGGLED}");
        refused(&format!("{cl:?}"), payload.as_bytes(), 400).await;
    }
}

#[tokio::test]
async fn a_length_with_leading_zeros_is_one_number_and_what_follows_is_the_next_request() {
    // `005` is five (RFC 9110 §8.6: 1*DIGIT); the bytes after the body are a second request,
    // which the gateway reads as one too, and sends as one: the upstream sees both, in order,
    // and the client gets two answers in that order
    let payload = "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (answer, seen) = attack(payload.as_bytes()).await;
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/first", "/second"], "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("content-length"), Some("5"));
    let first = answer.find("seen /first").unwrap();
    let second = answer.find("seen /second").unwrap();
    assert!(first < second, "{answer}");
}

// ---- the chunked coding -----------------------------------------------------------------------

#[tokio::test]
async fn chunk_size_and_extension_tricks_are_refused() {
    for (what, chunks) in [
        ("hex prefix", "0x5\r\nhello\r\n0\r\n\r\n".to_string()),
        ("space before size", " 5\r\nhello\r\n0\r\n\r\n".to_string()),
        ("space after size", "5 \r\nhello\r\n0\r\n\r\n".to_string()),
        ("tab after size", "5\t\r\nhello\r\n0\r\n\r\n".to_string()),
        ("signed size", "+5\r\nhello\r\n0\r\n\r\n".to_string()),
        (
            "overflowing size",
            "10000000000000005\r\nhello\r\n0\r\n\r\n".to_string(),
        ),
        ("bare LF after size", "5\nhello\r\n0\r\n\r\n".to_string()),
        ("bare CR in size line", "5\rx\r\nhello\r\n0\r\n\r\n".to_string()),
        (
            "data longer than its size",
            format!("5\r\nhello{SMUGGLED}\r\n0\r\n\r\n"),
        ),
        ("no CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n".to_string()),
        ("LF only after data", "5\r\nhello\n0\r\n\r\n".to_string()),
        // an unterminated quoted string: a quote-aware front end reads on to the next quote
        ("open quote in extension", format!("0;a=\"\r\n\r\n{SMUGGLED}\"\r\n\r\n")),
        ("extension without a name", "5;\r\nhello\r\n0\r\n\r\n".to_string()),
        ("extension with a space", "5;a b\r\nhello\r\n0\r\n\r\n".to_string()),
        (
            "extension with a control byte",
            "5;a=\x01\r\nhello\r\n0\r\n\r\n".to_string(),
        ),
        ("trailer that is not a field", "0\r\nnot a field\r\n\r\n".to_string()),
        ("trailer ended by LF only", "0\r\nx: y\n\r\n".to_string()),
        ("last chunk ended by LF only", format!("0\r\n\n{SMUGGLED}")),
    ] {
        let payload = format!("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
        let (answer, seen) = attack(payload.as_bytes()).await;
        assert_nothing_smuggled(what, &answer, &seen);
        assert_eq!(statuses(&answer), [400], "{what}: {answer}");
        // the head may have gone ahead of the body: then the upstream saw one request, cut
        // short, and no other
        assert!(seen.len() <= 1 && seen.iter().all(|r| !r.complete), "{what}: {seen:#?}");
    }
}

#[tokio::test]
async fn well_formed_extensions_and_trailers_pass_and_are_not_forwarded() {
    let payload = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                   5;name=value;q=\"a \\\"b\\\" c\"\r\nhello\r\n0;last\r\nX-Trailer: 1\r\nContent-Length: 999\r\n\r\n";
    let (answer, seen) = attack(payload.as_bytes()).await;
    assert_nothing_smuggled("extensions", &answer, &seen);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert!(seen[0].complete);
    // trailers stop at the gateway: a length in them must not frame anything downstream
    assert_eq!(seen[0].headers_named("x-trailer"), 0);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---- heads: lines, targets, Host ---------------------------------------------------------------

#[tokio::test]
async fn malformed_lines_are_refused() {
    for (what, head) in [
        ("bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n".to_string()),
        (
            "bare LF after a field",
            "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n".to_string(),
        ),
        (
            "bare CR in a value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_string(),
        ),
        (
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_string(),
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_string(),
        ),
        (
            "space in a name",
            "GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n".to_string(),
        ),
        ("no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n".to_string()),
        (
            "two spaces in the request line",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "tab in the request line",
            "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_string()),
        (
            "HTTP/2.0 in HTTP/1 framing",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_string(),
        ),
        ("lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n".to_string()),
        (
            "space in the target",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "target without a slash",
            "GET a HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "authority-form for GET",
            "GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        ("asterisk for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        ("unknown scheme", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        ("method with a slash", "GE/T / HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_string()),
        ("Host list", "GET / HTTP/1.1\r\nHost: x, y\r\n\r\n".to_string()),
        ("Host with userinfo", "GET / HTTP/1.1\r\nHost: a@x\r\n\r\n".to_string()),
        ("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n".to_string()),
        ("no Host", "GET / HTTP/1.1\r\n\r\n".to_string()),
    ] {
        let (answer, seen) = attack(format!("{head}{SMUGGLED}").as_bytes()).await;
        assert_eq!(statuses(&answer), [400], "{what}: {answer}");
        assert!(seen.is_empty(), "{what}: {seen:#?}");
    }
}

#[tokio::test]
async fn connect_is_not_tunnelled() {
    refused("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501).await;
}

#[tokio::test]
async fn an_absolute_form_target_without_host_is_refused() {
    let (answer, seen) = attack(b"GET http://shop.test/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    assert!(seen.is_empty(), "{seen:#?}");
    // for another host than Host: refused too
    let (answer, seen) = attack(b"GET http://evil.test/x HTTP/1.1\r\nHost: shop.test\r\n\r\n").await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    assert!(seen.is_empty(), "{seen:#?}");
    // with the same host: origin-form to the upstream, with that Host
    let (answer, seen) =
        attack(b"GET http://shop.test/x?y HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert_eq!(seen[0].target, "/x?y");
    assert_eq!(seen[0].header("host"), Some("shop.test"));
}

#[tokio::test]
async fn connection_cannot_strip_host_or_the_gateways_own_headers() {
    let payload = "POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\
                   Connection: close, Host, Content-Length, Transfer-Encoding, X-Forwarded-For, X-Request-Id, X-Hop\r\n\
                   X-Hop: 1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\nhello";
    let (answer, seen) = attack(payload.as_bytes()).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let r = &seen[0];
    assert_eq!(r.header("host"), Some("shop.test"), "{r:#?}");
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.headers_named("x-hop"), 0, "a listed field goes");
    assert_eq!(r.headers_named("connection"), 0);
    assert!(
        r.header("x-forwarded-for").is_some_and(|v| v.ends_with("127.0.0.1")),
        "{r:#?}"
    );
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn field_names_with_underscores_are_dropped_unless_allowed() {
    let payload = "POST /a HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n\
                   Content_Length: 100\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (answer, seen) = attack(payload.as_bytes()).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert!(seen[0].headers.iter().all(|(n, _)| !n.contains('_')), "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
    // server.underscores_in_headers = true: passed as they are (the framing still from
    // Content-Length)
    let up = Recorder::start().await;
    let gw = gateway(up.addr, "underscores_in_headers = true").await;
    let answer = raw(gw.http(), payload.as_bytes()).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let seen = up.requests();
    assert_eq!(seen[0].header("x_forwarded_for"), Some("6.6.6.6"), "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
}

#[tokio::test]
async fn pipelined_requests_get_their_own_answers_in_order() {
    let payload = "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                   GET /two HTTP/1.1\r\nHost: x\r\n\r\n\
                   POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
                   GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (answer, seen) = attack(payload.as_bytes()).await;
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/four"]);
    assert_eq!(seen[0].body, b"abc");
    assert_eq!(seen[2].body, b"de");
    let order: Vec<usize> = ["/one", "/two", "/three", "/four"]
        .iter()
        .map(|t| answer.find(&format!("seen {t}")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{answer}");
    assert_eq!(statuses(&answer), [200, 200, 200, 200]);
}

// ---- misbehaving upstreams --------------------------------------------------------------------

/// An upstream that answers a request for `/a` with `first` and anything else with [`NEXT`],
/// counting connections. It reads request heads and Content-Length bodies.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(first: &'static [u8]) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let (len, is_a) = loop {
                            let mut headers = [httparse::EMPTY_HEADER; 64];
                            let mut req = httparse::Request::new(&mut headers);
                            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                                let cl = req
                                    .headers
                                    .iter()
                                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                                    .unwrap_or(0);
                                break (n + cl, req.path == Some("/a"));
                            }
                            if !fill(&mut s, &mut buf).await {
                                return;
                            }
                        };
                        while buf.len() < len {
                            if !fill(&mut s, &mut buf).await {
                                return;
                            }
                        }
                        buf.drain(..len);
                        if s.write_all(if is_a { first } else { NEXT }).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, connections }
    }
}

/// Health checks that never take the server out within a test, so a failed request does not
/// either (without them, one failure takes a server out for 10 s).
const LENIENT_HEALTH: &str = "  [upstream.health]\n  path = \"/health\"\n  interval = \"1h\"\n  fails = 100\n";

/// One request on a fresh keep-alive connection through `gw`: (status, headers, body).
async fn get(gw: &TestGateway, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = plain_client().get(gw.http_url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";

#[tokio::test]
async fn an_upstream_sending_both_lengths_is_read_as_chunked_and_its_connection_not_reused() {
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = gateway(up.addr, "").await;
    let (status, headers, body) = get(&gw, "/a").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    assert!(headers.get_all("content-length").iter().count() <= 1);
    let (_, _, body) = get(&gw, "/b").await;
    assert_eq!(body, b"next");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        2,
        "the ambiguous connection was not reused"
    );
}

#[tokio::test]
async fn bytes_after_a_response_never_reach_the_next_client() {
    for first in [
        // extra bytes after the body: a second response the gateway never asked for
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"[..],
        // a body on a 204 and on a 304
        b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nevil",
        b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nevil\r\n0\r\n\r\n",
    ] {
        let up = Scripted::start(first).await;
        let gw = gateway(up.addr, "").await;
        let (_, _, body) = get(&gw, "/a").await;
        assert!(body.is_empty() || body == b"hello", "{body:?}");
        for _ in 0..3 {
            let (status, _, body) = get(&gw, "/b").await;
            assert_eq!(
                (status, body.as_slice()),
                (200, &b"next"[..]),
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }
}

#[tokio::test]
async fn a_body_sent_with_a_head_answer_is_not_read_as_the_next_response() {
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil").await;
    let gw = gateway(up.addr, "").await;
    // HEAD and then GET on one client connection
    let answer = raw(
        gw.http(),
        b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [200, 200], "{answer}");
    assert!(answer.ends_with("next"), "{answer}");
    assert!(!answer.contains("evil"), "{answer}");
}

#[tokio::test]
async fn interim_responses_are_read_past() {
    let up = Scripted::start(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gw = gateway(up.addr, "").await;
    let (status, _, body) = get(&gw, "/a").await;
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
}

#[tokio::test]
async fn broken_upstream_framing_is_a_502_or_a_cut_response_never_a_mixed_one() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ] {
        let up = Scripted::start(bad).await;
        let gw = TestGateway::start(&proxy_config(&[up.addr], LENIENT_HEALTH)).await;
        let (status, _, _) = get(&gw, "/a").await;
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(bad));
        let (status, _, body) = get(&gw, "/b").await;
        assert_eq!((status, body.as_slice()), (200, &b"next"[..]));
    }
    // broken in the middle of a chunked body: the client's response is cut, not completed
    for bad in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;a=\"\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
    ] {
        let up = Scripted::start(bad).await;
        let gw = TestGateway::start(&proxy_config(&[up.addr], LENIENT_HEALTH)).await;
        let r = plain_client().get(gw.http_url("/a")).send().await.unwrap();
        assert!(r.bytes().await.is_err(), "{}", String::from_utf8_lossy(bad));
        let (status, _, body) = get(&gw, "/b").await;
        assert_eq!((status, body.as_slice()), (200, &b"next"[..]));
    }
}

#[tokio::test]
async fn a_repeated_equal_length_from_an_upstream_is_one_length() {
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok").await;
    let gw = gateway(up.addr, "").await;
    let answer = raw(gw.http(), b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(
        answer.to_ascii_lowercase().matches("content-length").count(),
        1,
        "{answer}"
    );
    assert!(answer.ends_with("ok"), "{answer}");
}

#[tokio::test]
async fn the_backends_software_is_not_named_to_clients() {
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\nServer: gunicorn/21.2.0\r\nX-Powered-By: Django\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let gw = gateway(up.addr, "").await;
    let (status, headers, _) = get(&gw, "/a").await;
    assert_eq!(status, 200);
    assert!(headers.get("server").is_none(), "{headers:?}");
    assert!(headers.get("x-powered-by").is_none(), "{headers:?}");
    // asked for: the gateway's own name, not the backend's
    let gw = gateway(up.addr, "server_header = true").await;
    let (_, headers, _) = get(&gw, "/a").await;
    assert_eq!(headers.get_all("server").iter().collect::<Vec<_>>(), ["orta-gateway"]);
}

// ---- HTTP/2 requests whose fields disagree with each other or with their frames --------------

/// What came back for stream 1 of a raw HTTP/2 exchange.
#[derive(Debug, PartialEq, Eq)]
enum H2Answer {
    /// A response; its status when it was one the static table names (200, 204, 206, 304, 400,
    /// 404, 500), else 0.
    Status(u16),
    Reset(u32),
    GoAway(u32),
    Nothing,
}

/// An HPACK string: length (7-bit prefix integer, no Huffman), then the bytes.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// Sends one request on stream 1 of a new HTTP/2 connection, its fields exactly as given
/// (literal, unindexed: nothing is checked or reordered on this side), then `data` as DATA
/// frames, the last ending the stream.
async fn h2_raw(gw: &TestGateway, fields: &[(&str, &str)], data: &[&[u8]]) -> H2Answer {
    let tcp = TcpStream::connect(gw.https()).await.unwrap();
    let mut tls = gw.tls_over(tcp, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    let end_stream = if data.is_empty() { 0x1 } else { 0 };
    out.extend(h2_frame(0x1, 0x4 | end_stream, 1, &block));
    for (i, d) in data.iter().enumerate() {
        let last = if i + 1 == data.len() { 0x1 } else { 0 };
        out.extend(h2_frame(0x0, last, 1, d));
    }
    tls.write_all(&out).await.unwrap();
    let read = async {
        loop {
            let Ok((kind, flags, stream, payload)) = read_h2_frame(&mut tls).await else {
                return H2Answer::Nothing;
            };
            match kind {
                // SETTINGS: acknowledged
                0x4 if flags & 0x1 == 0 => {
                    let _ = tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await;
                }
                0x1 if stream == 1 => {
                    let pad = if flags & 0x8 != 0 { 1 + payload[0] as usize } else { 0 };
                    let skip = pad.min(1) + if flags & 0x20 != 0 { 5 } else { 0 };
                    let first = payload.get(skip).copied().unwrap_or(0);
                    let table = [200, 204, 206, 304, 400, 404, 500];
                    return H2Answer::Status(match first {
                        0x88..=0x8e => table[(first - 0x88) as usize],
                        _ => 0,
                    });
                }
                0x3 if stream == 1 => return H2Answer::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                0x7 => return H2Answer::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or(H2Answer::Nothing)
}

/// A gateway whose only route is for `shop.test`, proxied to `up`.
async fn shop_gateway(up: SocketAddr) -> TestGateway {
    let toml = format!(
        "{}\n[[upstream]]\nname = \"backend\"\nservers = [\"{up}\"]\n[[route]]\nhost = [\"shop.test\"]\npath = \"/\"\nupstream = \"backend\"\n",
        base_config()
    );
    TestGateway::start(&toml).await
}

fn get_fields<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![(":method", "GET"), (":scheme", "https"), (":path", "/x")];
    f.extend_from_slice(extra);
    f
}

#[tokio::test]
async fn http2_authority_and_host_must_name_one_host() {
    let up = Recorder::start().await;
    let gw = shop_gateway(up.addr).await;
    // routed on :authority, forwarded with the client's own host: the defect
    let answer = h2_raw(
        &gw,
        &get_fields(&[(":authority", "shop.test"), ("host", "evil.test")]),
        &[],
    )
    .await;
    assert_eq!(answer, H2Answer::Status(400));
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
    // two host fields
    let answer = h2_raw(&gw, &get_fields(&[("host", "shop.test"), ("host", "evil.test")]), &[]).await;
    assert_eq!(answer, H2Answer::Status(400));
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
    // the same host in both (any case): one Host, the routed one
    let answer = h2_raw(
        &gw,
        &get_fields(&[(":authority", "shop.test"), ("host", "SHOP.test")]),
        &[],
    )
    .await;
    assert_eq!(answer, H2Answer::Status(200));
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers_named("host"), 1, "{seen:#?}");
    assert_eq!(seen[0].header("host"), Some("shop.test"));
}

#[tokio::test]
async fn http2_host_without_authority_is_routed_by_host() {
    let up = Recorder::start().await;
    let gw = shop_gateway(up.addr).await;
    let answer = h2_raw(&gw, &get_fields(&[("host", "shop.test")]), &[]).await;
    assert_eq!(answer, H2Answer::Status(200));
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].header("host"), Some("shop.test"));
    // neither: no host to route on
    let answer = h2_raw(&gw, &get_fields(&[]), &[]).await;
    assert_eq!(answer, H2Answer::Status(404));
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn http2_fields_that_only_http1_has_are_malformed() {
    let up = Recorder::start().await;
    let gw = shop_gateway(up.addr).await;
    let authority = (":authority", "shop.test");
    for (what, field) in [
        ("transfer-encoding", ("transfer-encoding", "chunked")),
        ("connection", ("connection", "keep-alive")),
        ("keep-alive", ("keep-alive", "timeout=5")),
        ("upgrade", ("upgrade", "websocket")),
        ("te other than trailers", ("te", "gzip")),
        ("CRLF in a value", ("x-a", "a\r\nX-Injected: 1")),
        ("LF in a value", ("x-a", "a\nX-Injected: 1")),
        ("NUL in a value", ("x-a", "a\0b")),
    ] {
        let answer = h2_raw(&gw, &get_fields(&[authority, field]), &[]).await;
        assert!(
            matches!(answer, H2Answer::Reset(_) | H2Answer::GoAway(_) | H2Answer::Status(400)),
            "{what}: {answer:?}"
        );
    }
    for (what, fields) in [
        (
            "space in :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                authority,
                (":path", "/x HTTP/1.1"),
            ],
        ),
        (
            "CRLF in :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                authority,
                (":path", "/x\r\nX-Injected: 1"),
            ],
        ),
        (
            "space in :method",
            vec![
                (":method", "GET /smuggled"),
                (":scheme", "https"),
                authority,
                (":path", "/x"),
            ],
        ),
        (
            "pseudo-field after a field",
            vec![
                (":method", "GET"),
                ("x-a", "b"),
                (":scheme", "https"),
                authority,
                (":path", "/x"),
            ],
        ),
        ("no :path", vec![(":method", "GET"), (":scheme", "https"), authority]),
    ] {
        let answer = h2_raw(&gw, &fields, &[]).await;
        assert!(
            matches!(answer, H2Answer::Reset(_) | H2Answer::GoAway(_) | H2Answer::Status(400)),
            "{what}: {answer:?}"
        );
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

#[tokio::test]
async fn http2_bodies_must_match_their_content_length() {
    let up = Recorder::start().await;
    let gw = shop_gateway(up.addr).await;
    let post = |cl: &'static str| {
        vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "shop.test"),
            (":path", "/upload"),
            ("content-length", cl),
        ]
    };
    // more than declared, and less
    for (cl, data) in [("3", &[&b"abcdefghij"[..]][..]), ("10", &[&b"abc"[..]][..])] {
        let answer = h2_raw(&gw, &post(cl), data).await;
        assert!(!matches!(answer, H2Answer::Status(200)), "{cl}: {answer:?}");
    }
    // whatever reached the upstream: never more than declared, never complete, never a second
    // request
    for r in up.requests() {
        assert!(!r.complete, "{r:#?}");
        assert!(r.body.len() <= r.header("content-length").unwrap().parse().unwrap());
        assert_eq!(r.target, "/upload");
    }
    // a length said twice, as the HTTP/1.1 codec refuses it
    let mut fields = post("3");
    fields.push(("content-length", "3"));
    let answer = h2_raw(&gw, &fields, &[b"abc"]).await;
    assert_eq!(answer, H2Answer::Status(400));
    assert!(up.requests().iter().all(|r| !r.complete));
}

#[tokio::test]
async fn http2_field_names_with_underscores_are_dropped() {
    let up = Recorder::start().await;
    let gw = shop_gateway(up.addr).await;
    let answer = h2_raw(
        &gw,
        &get_fields(&[
            (":authority", "shop.test"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-ok", "1"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer, H2Answer::Status(200));
    let seen = up.requests();
    assert!(seen[0].headers.iter().all(|(n, _)| !n.contains('_')), "{seen:#?}");
    assert_eq!(seen[0].header("x-ok"), Some("1"));
}

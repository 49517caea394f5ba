//! HTTP/2 floods against the real binary: rapid reset (CVE-2023-44487), a header block that
//! never ends in CONTINUATION frames (CVE-2024-27316's class), and SETTINGS and PING frames
//! sent without reading the answers. Each one is refused or absorbed: the gateway keeps
//! answering another client while it lasts, and its memory stays bounded (its resident set
//! grows by less than `MEMORY_BOUND` while the flood sends several times that).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// What the gateway's resident set may grow by during a flood.
const MEMORY_BOUND_KIB: u64 = 24 * 1024;

/// A GET for `/` as an HPACK block: indexed `:method GET`, `:scheme https`, `:path /`, and
/// `:authority localhost` as a literal with an indexed name.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84, 0x01, 9];
    b.extend_from_slice(b"localhost");
    b
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An HTTP/2 session with the gateway over TLS, trusting its self-signed CA.
async fn h2_session(gw: &BinGateway) -> Tls {
    let tcp = TcpStream::connect(gw.https.unwrap()).await.unwrap();
    let mut tls = tls_connect(&gw.ca_pem(), tcp, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    tls.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    tls
}

/// Reads frames until one for which `stop` says yes (true), or the end of the connection
/// (false); SETTINGS are acknowledged.
async fn read_until(tls: &mut Tls, mut stop: impl FnMut(u8, u32) -> bool) -> bool {
    while let Ok((kind, flags, stream, _)) = read_h2_frame(tls).await {
        if kind == 0x4 && flags & 0x1 == 0 && tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.is_err() {
            return false;
        }
        if stop(kind, stream) {
            return true;
        }
    }
    false
}

/// Another client, on a connection of its own, gets its answer (any status) in time.
async fn another_client_is_answered(gw: &BinGateway) {
    let answered = async {
        let mut tls = h2_session(gw).await;
        tls.write_all(&h2_frame(0x1, 0x5, 1, &get_block())).await.unwrap();
        read_until(&mut tls, |kind, stream| kind == 0x1 && stream == 1).await
    };
    let got = tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .expect("another client is answered during the flood");
    assert!(got, "another client's connection was closed during the flood");
}

/// Writes `chunk` over and over (up to `total` bytes) on a flooding connection, in a task;
/// the connection's reading half is left unread unless the test reads it.
struct Flood {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tls>,
}

impl Flood {
    fn start(mut tls: Tls, chunk: Vec<u8>, total: u64) -> Flood {
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (sent.clone(), done.clone());
        let task = tokio::spawn(async move {
            while s.load(Relaxed) < total {
                if tls.write_all(&chunk).await.is_err() {
                    break;
                }
                s.fetch_add(chunk.len() as u64, Relaxed);
            }
            d.store(true, Relaxed);
            tls
        });
        Flood { sent, done, task }
    }

    /// Waits until `bytes` have gone out, the flood ended (the gateway closed the connection or
    /// everything was sent), or the gateway stopped taking bytes (its reading paused: the flood
    /// is held back by TCP's flow control). Returns whether the flood is still blocked.
    async fn wait_sent_or_held(&self, bytes: u64) -> bool {
        let mut last = u64::MAX;
        loop {
            let now = self.sent.load(Relaxed);
            if self.done.load(Relaxed) || now >= bytes {
                return false;
            }
            if now == last {
                return true;
            }
            last = now;
            // progress is sampled, not timed: the flood is held when a whole second passes
            // without a single write completing
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_answered_with_goaway_and_others_are_served() {
    let gw = BinGateway::start(&base_config());
    let before = rss_kib(gw.pid());
    let (mut rd, mut wr) = tokio::io::split(h2_session(&gw).await);
    // read while the flood is written: the GOAWAY must be seen before the connection closes
    let goaway = tokio::spawn(async move {
        loop {
            let (kind, _, _, payload) = read_h2_frame(&mut rd).await.ok()?;
            if kind == 0x7 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    });
    // streams opened and cancelled at once, in batches, never waiting for an answer
    for batch in 0..100u32 {
        let mut out = Vec::new();
        for i in 0..100u32 {
            let stream = 2 * (batch * 100 + i) + 1;
            out.extend(h2_frame(0x1, 0x5, stream, &get_block()));
            out.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
        }
        // the gateway may close the connection before the flood is all sent
        if goaway.is_finished() || wr.write_all(&out).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(10), goaway)
        .await
        .expect("the gateway answers the flood")
        .unwrap();
    assert_eq!(code, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    another_client_is_answered(&gw).await;
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(grown < MEMORY_BOUND_KIB, "resident set grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_that_never_ends_is_refused_and_memory_stays_bounded() {
    let gw = BinGateway::start(&base_config());
    let before = rss_kib(gw.pid());
    let mut tls = h2_session(&gw).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB each, for 64 MiB
    tls.write_all(&h2_frame(0x1, 0x1, 1, &get_block())).await.unwrap();
    let mut literal = Vec::new();
    while literal.len() < 16 * 1024 - 40 {
        // literal field without indexing, new name: x-flood: 20 bytes of value
        literal.extend_from_slice(&[0x00, 7]);
        literal.extend_from_slice(b"x-flood");
        literal.push(20);
        literal.extend_from_slice(&[b'a'; 20]);
    }
    let flood = Flood::start(tls, h2_frame(0x9, 0, 1, &literal), 64 << 20);
    let held = flood.wait_sent_or_held(64 << 20).await;
    let sent = flood.sent.load(Relaxed);
    assert!(
        flood.done.load(Relaxed) && sent < (64 << 20) || held,
        "the gateway took all {sent} bytes of an endless header block"
    );
    another_client_is_answered(&gw).await;
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(
        grown < MEMORY_BOUND_KIB,
        "resident set grew by {grown} KiB after {sent} bytes of CONTINUATION"
    );
    flood.task.abort();
}

/// Sends `frame` over and over without reading what the gateway answers; the gateway must
/// stop reading (or close) rather than queue its answers without bound.
async fn unread_answers_are_bounded(one: Vec<u8>) {
    let gw = BinGateway::start(&base_config());
    let before = rss_kib(gw.pid());
    let tls = h2_session(&gw).await;
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
    let total = 32 << 20;
    let flood = Flood::start(tls, chunk, total);
    flood.wait_sent_or_held(total).await;
    let sent = flood.sent.load(Relaxed);
    another_client_is_answered(&gw).await;
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(
        grown < MEMORY_BOUND_KIB,
        "resident set grew by {grown} KiB after {sent} bytes of flood"
    );
    flood.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_with_unread_acknowledgements_stays_bounded() {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, each needing an ACK
    unread_answers_are_bounded(h2_frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_with_unread_answers_stays_bounded() {
    unread_answers_are_bounded(h2_frame(0x6, 0, 0, &[7; 8])).await;
}

//! Many idle connections at once: the gateway holds them (plain before any request, plain and
//! HTTPS keep-alive after one), still serves everyone else, and counts back to zero once they
//! close. What each costs in memory is measured by `benches/wrk/connections.sh`, not here.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections of each kind held at once.
const EACH: usize = 1000;

/// Sends a GET for `/` and reads the answer (its length from `Content-Length`); returns the
/// status line.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a Content-Length")
                .parse()
                .unwrap();
            if body.len() >= length {
                return head.lines().next().unwrap().to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_held_and_counted_back_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<h1>Orta Novias</h1>\n").unwrap();
    let server = "keepalive_timeout = \"120s\"\nmax_connections = 10000\nmax_connections_per_ip = 10000\n[tls]";
    let toml = base_config()
        .replace("header_read_timeout = \"2s\"", "header_read_timeout = \"120s\"")
        .replacen("[tls]", server, 1)
        + "[[route]]\npath = \"/\"\nroot = \"{dir}/www\"\nindex = \"index.html\"\n";
    let gw = TestGateway::start_in(dir, &toml).await;

    let mut silent = Vec::with_capacity(EACH);
    let mut plain = Vec::with_capacity(EACH);
    let mut tls = Vec::with_capacity(EACH);
    for _ in 0..EACH {
        silent.push(TcpStream::connect(gw.http()).await.unwrap());
        let mut s = TcpStream::connect(gw.http()).await.unwrap();
        assert_eq!(get(&mut s).await, "HTTP/1.1 200 OK");
        plain.push(s);
        let mut s = gw
            .tls_over(TcpStream::connect(gw.https()).await.unwrap(), &[b"http/1.1"])
            .await;
        assert_eq!(get(&mut s).await, "HTTP/1.1 200 OK");
        tls.push(s);
    }
    let held = 3 * EACH;
    wait_until(Duration::from_secs(20), "every connection counted open", || async {
        gw.gw().open_connections() == held
    })
    .await;

    // everyone else is still served, over both listeners
    let c = gw.client();
    for url in [gw.http_url("/"), gw.https_url("/")] {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.text().await.unwrap(), "<h1>Orta Novias</h1>\n");
    }
    drop(c);
    // and the idle ones still answer: a keep-alive connection held this long serves again
    assert_eq!(get(&mut plain[EACH / 2]).await, "HTTP/1.1 200 OK");
    assert_eq!(get(&mut tls[EACH / 2]).await, "HTTP/1.1 200 OK");
    assert_eq!(get(&mut silent[EACH / 2]).await, "HTTP/1.1 200 OK");

    drop((silent, plain, tls));
    wait_until(Duration::from_secs(20), "the open count back to zero", || async {
        gw.gw().open_connections() == 0
    })
    .await;
    gw.shutdown().await;
}

/// An HTTP/2 client may send only so much request body before the gateway has passed it on:
/// 64 KiB a stream and 256 KiB a connection, not hyper's 1 MiB each, so that a connection
/// cannot make the gateway hold more than that of what it uploads.
#[tokio::test]
async fn http2_flow_control_windows_bound_what_a_client_can_make_the_gateway_hold() {
    let gw = TestGateway::start(&base_config()).await;
    let tcp = TcpStream::connect(gw.https()).await.unwrap();
    let mut tls = gw.tls_over(tcp, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // preface and empty SETTINGS
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (mut stream_window, mut connection_update) = (None, None);
    while stream_window.is_none() || connection_update.is_none() {
        let (kind, flags, stream, payload) = tokio::time::timeout(Duration::from_secs(5), read_h2_frame(&mut tls))
            .await
            .expect("the server's SETTINGS and WINDOW_UPDATE")
            .unwrap();
        match kind {
            0x4 if flags & 0x1 == 0 => {
                // SETTINGS_INITIAL_WINDOW_SIZE (0x4); the RFC's default 65,535 when absent
                stream_window = Some(
                    payload
                        .chunks(6)
                        .find(|s| s[..2] == [0, 4])
                        .map_or(65_535, |s| u32::from_be_bytes(s[2..6].try_into().unwrap())),
                );
            }
            0x8 if stream == 0 => connection_update = Some(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            _ => {}
        }
    }
    assert_eq!(stream_window, Some(64 * 1024), "the window of each stream");
    // the connection's window starts at 65,535 and the server raises it with a WINDOW_UPDATE
    assert_eq!(
        65_535 + connection_update.unwrap(),
        256 * 1024,
        "the window of the connection"
    );
}

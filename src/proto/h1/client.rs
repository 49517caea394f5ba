//! A one-shot HTTP/1.1 exchange over any transport: the request head written, the response
//! read whole up to a size cap. For the gateway's own small fetches (an ACME server's renewal
//! information); the proxy's pooled, streaming client is [`super::upstream`]. Both read
//! responses with [`super::response`] and their bodies with [`super::body`].

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::BodyDecoder;
use super::chunked::Decoded;
use super::encode::{self, BodyShape};
use super::response::{self, Framing, Parsed};

/// Sends `parts` (no body) on `io` and reads the whole response, its body at most `max_body`
/// bytes. The connection is not reused.
pub async fn fetch<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    parts: &http::request::Parts,
    max_body: usize,
) -> Result<(http::response::Parts, Bytes), String> {
    let mut head = Vec::with_capacity(256);
    let empty = BodyShape {
        empty: true,
        exact: Some(0),
    };
    encode::request_head(&mut head, parts, std::iter::empty(), empty);
    io.write_all(&head).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let head_only = parts.method == http::Method::HEAD;
    let head = loop {
        match response::parse(&mut buf, head_only, false).map_err(|e| e.to_string())? {
            Some(Parsed::Interim) => continue,
            Some(Parsed::Final(head)) => break head,
            None => fill(io, &mut buf, "the response head").await?,
        }
    };
    let too_large = || format!("response body larger than {max_body} bytes");
    let mut body = BytesMut::new();
    if head.framing == Framing::UntilClose {
        loop {
            if buf.len() > max_body {
                return Err(too_large());
            }
            match tokio_util::io::read_buf(io, &mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        body = buf;
    } else if let Some(mut decoder) = BodyDecoder::for_response(head.framing) {
        if decoder.remaining().is_some_and(|n| n > max_body as u64) {
            return Err(too_large());
        }
        loop {
            match decoder.decode(&mut buf, false).map_err(|e| e.to_string())? {
                Decoded::Data(d) => {
                    if body.len() + d.len() > max_body {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&d);
                }
                Decoded::NeedMore => fill(io, &mut buf, "the response body").await?,
                Decoded::End => break,
            }
        }
    }
    let (parts, ()) = head.resp.into_parts();
    Ok((parts, body.freeze()))
}

/// Reads more into `buf`; the end of the stream is an error (`what` was not complete).
async fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, what: &str) -> Result<(), String> {
    buf.reserve(8 * 1024);
    match tokio_util::io::read_buf(io, buf).await {
        Ok(0) => Err(format!("the connection closed before the end of {what}")),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fetched(answer: &'static [u8], max: usize) -> Result<(u16, Bytes), String> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let serve = async move {
            use tokio::io::AsyncReadExt;
            let mut got = [0u8; 1024];
            let _ = server.read(&mut got).await;
            let _ = server.write_all(answer).await;
        };
        let (parts, ()) = http::Request::get("/x").body(()).unwrap().into_parts();
        let (r, ()) = tokio::join!(fetch(&mut client, &parts, max), serve);
        r.map(|(p, b)| (p.status.as_u16(), b))
    }

    #[tokio::test]
    async fn whole_responses_by_every_framing() {
        let r = fetched(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 64)
            .await
            .unwrap();
        assert_eq!(r, (200, Bytes::from_static(b"hello")));
        let r = fetched(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", 64)
            .await
            .unwrap();
        assert_eq!(r, (200, Bytes::from_static(b"hello")));
        let r = fetched(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nhello", 64)
            .await
            .unwrap();
        assert_eq!(r, (404, Bytes::from_static(b"hello")));
        assert!(
            fetched(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 4)
                .await
                .is_err()
        );
        assert!(
            fetched(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 64)
                .await
                .is_err()
        );
    }
}

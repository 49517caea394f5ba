//! The PROXY protocol (v1 text and v2 binary), as load balancers send it before the client's
//! bytes to tell who the client is. Read only from trusted proxies; the bytes after the header
//! are handed on untouched.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// Reads a PROXY header from `io`. Returns the client address it names (`None` for `LOCAL` /
/// `UNKNOWN`: a health check from the proxy itself) and the bytes read past the header.
pub async fn read_header<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("PROXY protocol: {why}"));
    let mut buf = Vec::with_capacity(256);
    // enough to tell v1 from v2 and hold a v2 fixed header
    while buf.len() < 16 {
        let mut chunk = [0u8; 256];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before the header"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(b"PROXY ") && buf.contains(&b'\n') {
            break;
        }
        if !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) && !V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)]) {
            return Err(bad("no header"));
        }
    }
    if buf.starts_with(&V2_SIGNATURE) {
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        while buf.len() < 16 + len {
            let mut chunk = vec![0u8; 16 + len - buf.len()];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("truncated v2 header"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let addr = parse_v2(&buf[..16 + len]).ok_or_else(|| bad("malformed v2 header"))?;
        return Ok((addr, buf[16 + len..].to_vec()));
    }
    if buf.starts_with(b"PROXY ") {
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = std::str::from_utf8(&buf[..end]).map_err(|_| bad("v1 header is not text"))?;
                let addr = parse_v1(line).ok_or_else(|| bad("malformed v1 header"))?;
                return Ok((addr, buf[end + 2..].to_vec()));
            }
            if buf.len() > V1_MAX {
                return Err(bad("v1 header too long"));
            }
            let mut chunk = [0u8; 128];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("truncated v1 header"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Err(bad("no header"))
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443` (the source comes first).
fn parse_v1(line: &str) -> Option<Option<SocketAddr>> {
    let mut parts = line.split(' ');
    if parts.next()? != "PROXY" {
        return None;
    }
    match parts.next()? {
        "UNKNOWN" => Some(None),
        proto @ ("TCP4" | "TCP6") => {
            let src: IpAddr = parts.next()?.parse().ok()?;
            let _dst: IpAddr = parts.next()?.parse().ok()?;
            let sport: u16 = parts.next()?.parse().ok()?;
            let _dport: u16 = parts.next()?.parse().ok()?;
            if parts.next().is_some() || (proto == "TCP4") != src.is_ipv4() {
                return None;
            }
            Some(Some(SocketAddr::new(src, sport)))
        }
        _ => None,
    }
}

fn parse_v2(h: &[u8]) -> Option<Option<SocketAddr>> {
    let ver_cmd = h[12];
    if ver_cmd >> 4 != 2 {
        return None;
    }
    let body = &h[16..];
    match (ver_cmd & 0x0f, h[13]) {
        // LOCAL: the proxy's own connection
        (0, _) => Some(None),
        // PROXY over TCP/IPv4: src addr, dst addr, src port, dst port
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]]))))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(Some(SocketAddr::new(
                Ipv6Addr::from(a).into(),
                u16::from_be_bytes([body[32], body[33]]),
            )))
        }
        // other families (UNIX, UDP, unspecified): no usable address
        (1, _) => Some(None),
        _ => None,
    }
}

/// A stream that first yields bytes already read past a header, then the stream itself.
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self { prefix, pos: 0, inner }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn v1_and_leftover_bytes() {
        let mut data: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        let (addr, rest) = read_header(&mut data).await.unwrap();
        assert_eq!(addr, Some("203.0.113.7:51234".parse().unwrap()));
        let mut all = rest;
        all.extend_from_slice(data);
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
        let mut data: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            read_header(&mut data).await.unwrap().0,
            Some("[2001:db8::1]:1".parse().unwrap())
        );
        let mut data: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(read_header(&mut data).await.unwrap().0, None);
    }

    #[tokio::test]
    async fn v2_ipv4_and_local() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187]);
        h.extend_from_slice(b"GET /");
        let mut data: &[u8] = &h;
        let (addr, rest) = read_header(&mut data).await.unwrap();
        assert_eq!(addr, Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!([rest.as_slice(), data].concat(), b"GET /");
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let mut data: &[u8] = &h;
        assert_eq!(read_header(&mut data).await.unwrap().0, None);
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        ] {
            let mut data: &[u8] = bad;
            assert!(
                read_header(&mut data).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

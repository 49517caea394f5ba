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

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Not all of the header has arrived.
    Incomplete,
    /// A whole header of `len` bytes, naming `client` (`None` for `LOCAL` / `UNKNOWN`: a health
    /// check from the proxy itself, or an address family without one).
    Complete { client: Option<SocketAddr>, len: usize },
}

/// Parses a PROXY v1 or v2 header at the front of `buf`; an error as soon as the bytes cannot
/// be one.
pub fn parse(buf: &[u8]) -> Result<Header, &'static str> {
    let prefix_of = |sig: &[u8]| sig.starts_with(&buf[..buf.len().min(sig.len())]);
    if prefix_of(&V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(Header::Incomplete);
        }
        let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if buf.len() < len {
            return Ok(Header::Incomplete);
        }
        let client = parse_v2(&buf[..len]).ok_or("malformed v2 header")?;
        return Ok(Header::Complete { client, len });
    }
    if prefix_of(b"PROXY ") {
        let window = &buf[..buf.len().min(V1_MAX)];
        return match window.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = std::str::from_utf8(&buf[..end]).map_err(|_| "v1 header is not text")?;
                let client = parse_v1(line).ok_or("malformed v1 header")?;
                Ok(Header::Complete { client, len: end + 2 })
            }
            None if buf.len() >= V1_MAX => Err("v1 header too long"),
            None => Ok(Header::Incomplete),
        };
    }
    Err("no header")
}

/// Reads a PROXY header from `io`. Returns the client address it names (`None` for `LOCAL` /
/// `UNKNOWN`: a health check from the proxy itself) and the bytes read past the header.
pub async fn read_header<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("PROXY protocol: {why}"));
    let mut buf = Vec::with_capacity(256);
    loop {
        match parse(&buf).map_err(bad)? {
            Header::Complete { client, len } => return Ok((client, buf.split_off(len))),
            Header::Incomplete => {
                let mut chunk = [0u8; 256];
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    return Err(bad("connection closed before the end of the header"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
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

/// A whole v2 header (16 bytes and the length they give).
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

    #[test]
    fn headers_are_parsed_whatever_arrived_so_far() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET";
        for cut in 0..v1.len() - 3 {
            assert_eq!(parse(&v1[..cut]), Ok(Header::Incomplete), "{cut}");
        }
        assert_eq!(
            parse(v1),
            Ok(Header::Complete {
                client: Some("203.0.113.7:51234".parse().unwrap()),
                len: v1.len() - 3
            })
        );
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', V1_MAX));
        assert!(parse(&long).is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00",
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

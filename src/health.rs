//! `orta-gateway health`: one GET to a running gateway's admin `/healthz` (or to any plain-HTTP
//! URL, such as an API replica's `/api/health`) through the protocol layer's one-shot client,
//! so a container's `HEALTHCHECK` needs no curl in the image. A 200 answer is healthy (its body
//! is printed: `--url http://127.0.0.1:9901/status` shows the status JSON); any other status, a
//! refused connection or no answer in time is not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};

/// The URL that asks the admin listener on `addr`; a listener on every address is asked on
/// loopback.
pub fn admin_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, addr.port()))
}

/// Largest answer read (the admin's `/status` and `/metrics` fit).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// GETs `url` (http only); `Ok` with the body of a 200 answer within `timeout`, `Err` saying
/// what went wrong otherwise.
pub async fn probe(url: &str, timeout: Duration) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are asked".into());
    }
    let authority = uri.authority().ok_or("no host in the URL")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let (req, ()) = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "orta-gateway-health")
        .header(http::header::CONNECTION, "close")
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts();
    let work = async {
        let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        crate::proto::h1::client::fetch(&mut tcp, &req, MAX_BODY).await
    };
    let (parts, body) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
    if parts.status == http::StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("answered {}", parts.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_address_is_asked_on_loopback() {
        assert_eq!(
            admin_url("0.0.0.0:9901".parse().unwrap()),
            "http://127.0.0.1:9901/healthz"
        );
        assert_eq!(admin_url("[::]:9901".parse().unwrap()), "http://[::1]:9901/healthz");
        assert_eq!(
            admin_url("10.0.0.5:9901".parse().unwrap()),
            "http://10.0.0.5:9901/healthz"
        );
    }
}

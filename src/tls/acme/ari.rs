//! ACME Renewal Information (RFC 9773): the directory's `renewalInfo` URL, a certificate's ID
//! (base64url of its Authority Key Identifier, a dot, base64url of its serial), and the CA's
//! suggested window with its `Retry-After`. rustls-acme has no ARI, so this is ours, over a small
//! HTTPS GET with the same trust as the ACME client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::policy::{Window, retry_after};

/// What the CA suggested for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AriInfo {
    pub window: Window,
    /// When to ask again.
    pub retry_after: Option<Duration>,
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = match chunk.len() {
            3 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32,
            2 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8,
            _ => (chunk[0] as u32) << 16,
        };
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The ARI certificate ID of a DER certificate.
pub fn cert_id(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })?;
    Some(format!("{}.{}", b64url(&aki), b64url(cert.raw_serial())))
}

/// The directory's `renewalInfo` URL, when it offers ARI.
pub async fn renewal_info_url(directory: &str, client: &Arc<ClientConfig>) -> Result<Option<String>, String> {
    let (status, _, body) = get(directory, client).await?;
    if status != StatusCode::OK {
        return Err(format!("directory {directory}: {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("directory {directory}: {e}"))?;
    Ok(v.get("renewalInfo").and_then(|u| u.as_str()).map(str::to_string))
}

/// Fetches the renewal window for a certificate from the `renewalInfo` base URL.
pub async fn fetch(renewal_info: &str, cert_der: &[u8], client: &Arc<ClientConfig>) -> Result<AriInfo, String> {
    let id = cert_id(cert_der).ok_or("the certificate has no Authority Key Identifier")?;
    let url = format!("{}/{id}", renewal_info.trim_end_matches('/'));
    let (status, headers, body) = get(&url, client).await?;
    if status != StatusCode::OK {
        return Err(format!("renewalInfo {url}: {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("renewalInfo {url}: {e}"))?;
    let parse = |key: &str| -> Result<i64, String> {
        let s = v["suggestedWindow"][key]
            .as_str()
            .ok_or(format!("renewalInfo {url}: no suggestedWindow.{key}"))?;
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|e| format!("renewalInfo {url}: {key}: {e}"))
    };
    let window = Window {
        start: parse("start")?,
        end: parse("end")?,
    };
    if window.end < window.start {
        return Err(format!("renewalInfo {url}: the window ends before it starts"));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| retry_after(h, now));
    Ok(AriInfo { window, retry_after })
}

/// A plain HTTPS GET (HTTP/1.1, 64 KiB body cap, 10 s).
async fn get(url: &str, client: &Arc<ClientConfig>) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url}: not an https URL"));
    }
    let host = uri.host().ok_or(format!("{url}: no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
            .map_err(|e| format!("{url}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut tls = tls;
        let (req, ()) = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(http::header::USER_AGENT, "orta-gateway")
            .header(http::header::CONNECTION, "close")
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        let (parts, body) = crate::proto::h1::client::fetch(&mut tls, &req, 64 * 1024)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| format!("{url}: timed out"))?
}

/// Asks the CA for its renewal window when the directory offers ARI and `last` says it is
/// time; keeps the answer in `last` with when to ask again.
pub async fn refresh(
    last: &mut Option<(Window, tokio::time::Instant)>,
    directory: &str,
    client: &Arc<ClientConfig>,
    leaf: &[u8],
) {
    if last.is_some_and(|(_, next)| tokio::time::Instant::now() < next) {
        return;
    }
    let url = match renewal_info_url(directory, client).await {
        Ok(Some(u)) => u,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("ACME directory: {e}");
            return;
        }
    };
    match fetch(&url, leaf, client).await {
        Ok(info) => {
            let again = info.retry_after.unwrap_or(Duration::from_secs(6 * 3600));
            *last = Some((info.window, tokio::time::Instant::now() + again));
        }
        Err(e) => tracing::debug!("ACME renewal info: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn the_rfc_9773_example_id() {
        // RFC 9773 section 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
        // and serial 00:87:65:43:21 give this identifier
        let aki = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01,
            0xC8, 0xD4,
        ];
        let serial = [0x00, 0x87, 0x65, 0x43, 0x21];
        assert_eq!(
            format!("{}.{}", b64url(&aki), b64url(&serial)),
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        );
    }
}

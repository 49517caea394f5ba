//! Redirects: a 301 to another base URL keeping the path and query (`return 301
//! https://example.com$request_uri` in nginx), and the plain listener's redirect to HTTPS.

use http::header::LOCATION;
use http::{HeaderValue, Response, StatusCode, Uri};

use crate::http::error::HttpError;
use crate::proto::body::Body;

/// 301 to `base` + the request's path and query.
pub fn to_base(base: &str, uri: &Uri) -> Result<Response<Body>, HttpError> {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    moved(&format!("{base}{pq}"))
}

/// 301 to the same host and path on HTTPS (`https_port` 443 is left out of the URL).
pub fn to_https(host: &str, https_port: u16, uri: &Uri) -> Result<Response<Body>, HttpError> {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{https_port}{pq}")
    };
    moved(&location)
}

fn moved(location: &str) -> Result<Response<Body>, HttpError> {
    let value =
        HeaderValue::from_str(location).map_err(|_| HttpError::BadRequest("The request cannot be redirected."))?;
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    resp.headers_mut().insert(LOCATION, value);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_path_and_query() {
        let r = to_base("https://ortanovias.com", &"/a/b?x=1".parse().unwrap()).unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "https://ortanovias.com/a/b?x=1");
        let r = to_https("example.com", 8443, &"/p?q".parse().unwrap()).unwrap();
        assert_eq!(r.headers()["location"], "https://example.com:8443/p?q");
        let r = to_https("example.com", 443, &"/".parse().unwrap()).unwrap();
        assert_eq!(r.headers()["location"], "https://example.com/");
    }
}

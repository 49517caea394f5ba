//! Errors the gateway answers itself: one enum, mapped to status codes in one place, rendered as
//! a short HTML page for browsers or JSON for clients that send `Accept: application/json`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::proto::body::Body;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// A malformed request; the text says what was wrong.
    BadRequest(&'static str),
    /// The route does not admit this client.
    Forbidden,
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// The client stopped sending its request body.
    RequestTimeout,
    PayloadTooLarge,
    HeaderTooLarge,
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// No upstream server could be reached; the text says why.
    BadGateway(&'static str),
    ServiceUnavailable,
    GatewayTimeout,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Forbidden => StatusCode::FORBIDDEN,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HttpError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            HttpError::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(why) => why,
            HttpError::Forbidden => "This address is not open to you.",
            HttpError::NotFound => "Nothing is served at this address.",
            HttpError::MethodNotAllowed { .. } => "This method is not allowed here.",
            HttpError::RequestTimeout => "The request body did not arrive in time.",
            HttpError::PayloadTooLarge => "The request body is larger than this server accepts.",
            HttpError::HeaderTooLarge => "The request headers are larger than this server accepts.",
            HttpError::TooManyRequests { .. } => "Too many requests: slow down and retry later.",
            HttpError::BadGateway(why) => why,
            HttpError::ServiceUnavailable => "The service is unavailable; retry later.",
            HttpError::GatewayTimeout => "The upstream server did not answer in time.",
        }
    }

    /// The error as a response; JSON when `json` (see [`wants_json`]), else HTML.
    pub fn into_response(self, json: bool) -> Response<Body> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let (body, ctype) = if json {
            let body = serde_json::json!({
                "error": { "status": status.as_u16(), "reason": reason, "message": self.message() }
            });
            (body.to_string(), "application/json")
        } else {
            let code = status.as_u16();
            let body = format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1>\n<p>{}</p></body></html>\n",
                self.message()
            );
            (body, "text/html; charset=utf-8")
        };
        let mut resp = Response::new(Body::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            HttpError::MethodNotAllowed { allow } => {
                h.insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::TooManyRequests { retry_after_secs } => {
                h.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}

/// True when an `Accept` value names JSON ahead of (or without) HTML.
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let json = accept.find("application/json").or_else(|| accept.find("+json"));
    let html = accept.find("text/html");
    match (json, html) {
        (Some(j), Some(h)) => j < h,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(v).unwrap())
    }

    #[test]
    fn json_only_when_asked() {
        assert!(wants_json(accept("application/json").as_ref()));
        assert!(wants_json(accept("application/problem+json").as_ref()));
        assert!(!wants_json(
            accept("text/html,application/xhtml+xml,application/json;q=0.9").as_ref()
        ));
        assert!(!wants_json(None));
    }

    #[test]
    fn renders_status_and_extra_headers() {
        let r = HttpError::TooManyRequests { retry_after_secs: 3 }.into_response(true);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = HttpError::NotFound.into_response(false);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    }
}

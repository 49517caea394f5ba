//! Answering from a stored object: `Age`, conditional requests (`If-None-Match`,
//! `If-Modified-Since`) and single ranges against the stored validators, HEAD without a body,
//! and compressed variants made once per object (off the async workers) and kept with it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::store::{Object, Zone};
use crate::config::{CompressionSettings, Encoding};
use crate::http::conditional::{Pre, Validators, precondition, representation_etag};
use crate::middleware::compression;
use crate::proto::body::Body;

impl Zone {
    /// The response for a request (`method`, headers `h`) answered from `object`, stored under
    /// `primary`.
    pub async fn respond(
        &self,
        primary: &str,
        object: &Arc<Object>,
        compression: &CompressionSettings,
        method: &Method,
        h: &HeaderMap,
    ) -> Response<Body> {
        let ok = object.status == StatusCode::OK;
        let compressible = ok && worth_compressing(compression, object);
        let wanted = if compressible && !h.contains_key(header::RANGE) {
            compression.negotiate(h.get(header::ACCEPT_ENCODING))
        } else {
            None
        };
        let variant = match wanted {
            Some(enc) => self.variant(primary, object, enc).await.map(|b| (enc, b)),
            None => None,
        };
        let encoding = variant.as_ref().map(|(e, _)| *e);
        let etag = object
            .etag
            .as_ref()
            .map(|t| representation_etag(t, encoding.map(Encoding::extension)));
        let validators = Validators {
            etag: etag.as_ref(),
            identity_etag: object.etag.as_ref(),
            modified: object.modified,
            len: object.body.len() as u64,
        };
        let pre = if ok {
            precondition(h, &validators, encoding.is_none())
        } else {
            Pre::Serve(None)
        };
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = object.status;
        let out = resp.headers_mut();
        out.clone_from(&object.headers);
        out.insert(header::AGE, HeaderValue::from(object.age().as_secs()));
        if compressible {
            compression::add_vary(out);
        }
        if let Some(etag) = etag {
            out.insert(header::ETAG, etag);
        }
        let Some(body) = select(&mut resp, object, pre, variant) else {
            return resp;
        };
        let out = resp.headers_mut();
        if ok {
            out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        if object.status != StatusCode::NO_CONTENT {
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        if method != Method::HEAD {
            *resp.body_mut() = Body::full(body);
        }
        resp
    }

    /// The `enc` variant of an object's body, compressed once and kept with it.
    async fn variant(&self, primary: &str, object: &Arc<Object>, enc: Encoding) -> Option<Bytes> {
        let cell = &object.variants[match enc {
            Encoding::Brotli => 0,
            Encoding::Gzip => 1,
        }];
        if let Some(v) = cell.get() {
            return v.clone();
        }
        let body = object.body.clone();
        let made = cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || compression::compress_bytes(&body, enc, compression::Effort::Churn))
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone();
        // the entry holds more bytes now
        self.reweigh(primary, object);
        made
    }
}

/// The body to send for `pre` (the range, or the chosen encoding), its status and headers set
/// on `resp`; `None` when `resp` is complete without one (304, 416).
fn select(resp: &mut Response<Body>, object: &Object, pre: Pre, variant: Option<(Encoding, Bytes)>) -> Option<Bytes> {
    Some(match pre {
        Pre::NotModified => {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
                resp.headers_mut().remove(name);
            }
            return None;
        }
        Pre::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let range = format!("bytes */{}", object.body.len());
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return None;
        }
        Pre::Serve(Some((start, end))) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = format!("bytes {start}-{end}/{}", object.body.len());
            if let Ok(v) = HeaderValue::from_str(&range) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            object.body.slice(start as usize..=end as usize)
        }
        Pre::Serve(None) => match variant {
            Some((enc, b)) => {
                resp.headers_mut().insert(header::CONTENT_ENCODING, enc.header_value());
                b
            }
            None => object.body.clone(),
        },
    })
}

/// Compressible by type and size, and not marked `no-transform`.
fn worth_compressing(compression: &CompressionSettings, object: &Object) -> bool {
    object.body.len() as u64 >= compression.min_size
        && compression.compressible(object.headers.get(header::CONTENT_TYPE))
        && !object.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        })
}

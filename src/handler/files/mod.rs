//! Static files: the URL path below a route's prefix, mapped under its root, never a byte from
//! outside it (paths are normalised before routing; symlinks are resolved and must stay inside).
//! Directories serve their `index` file (a path without its trailing slash is redirected, like
//! nginx), never a listing. Full HTTP caching semantics: strong `ETag` and `Last-Modified`, 304s,
//! single ranges (206/416, `If-Range`), compressed variants computed once and cached, or
//! precompressed siblings.

pub mod cache;

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, Take};
use tokio_util::io::ReaderStream;

use crate::config::{CompressionSettings, Encoding};
use crate::http::conditional::{Pre, Validators, precondition, representation_etag, weak};
pub use crate::http::conditional::{RangeSpec, parse_range};
use crate::http::error::HttpError;
use crate::middleware::compression;
use crate::proto::BoxError;
use crate::proto::body::Body;
use crate::proto::maps;
use cache::{CachedFile, FileCache, FileMeta, Lookup};

/// A route that serves files.
#[derive(Debug)]
pub struct StaticRoute {
    pub prefix: String,
    /// The canonical root; `None` when it could not be resolved (the route answers 404).
    pub root: Option<PathBuf>,
    pub index: Option<String>,
    pub cache_control: Option<HeaderValue>,
}

impl StaticRoute {
    pub fn new(prefix: &str, root: &Path, index: Option<String>, cache_control: Option<HeaderValue>) -> Self {
        let canonical = std::fs::canonicalize(root)
            .map_err(|e| tracing::error!(root = %root.display(), "static root unavailable: {e}"))
            .ok();
        Self {
            prefix: prefix.to_string(),
            root: canonical,
            index,
            cache_control,
        }
    }
}

/// Serves `path` (normalised, starting with the route's prefix) from the route's root.
pub async fn serve<B>(
    route: &StaticRoute,
    files: &Arc<FileCache>,
    compression: &CompressionSettings,
    req: &Request<B>,
    path: &str,
    cache_status: &mut Option<&'static str>,
) -> Result<Response<Body>, HttpError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(HttpError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let root = route.root.as_ref().ok_or(HttpError::NotFound)?;
    let rel = path.get(route.prefix.len()..).unwrap_or("").trim_start_matches('/');
    let dir_request = rel.is_empty() || rel.ends_with('/');
    let index = if dir_request {
        Some(route.index.as_deref().ok_or(HttpError::NotFound)?)
    } else {
        None
    };
    // one allocation of the right size (a join grows its buffer twice)
    let size = root.as_os_str().len() + rel.len() + index.map_or(0, str::len) + 2;
    let mut fs_path = std::path::PathBuf::with_capacity(size);
    fs_path.push(root);
    fs_path.push(rel);
    if let Some(index) = index {
        fs_path.push(index);
    }
    let lookup = match files.get(&fs_path) {
        Some(hit) => {
            *cache_status = Some("hit");
            Lookup::Cached(hit)
        }
        None => {
            *cache_status = Some("miss");
            let (files, p, r) = (files.clone(), fs_path.clone(), root.clone());
            tokio::task::spawn_blocking(move || files.load(&p, &r))
                .await
                .unwrap_or(Lookup::NotFound)
        }
    };
    match lookup {
        Lookup::NotFound => Err(HttpError::NotFound),
        Lookup::Directory if !dir_request && route.index.is_some() => {
            // `/docs` is a directory: send the browser to `/docs/` so relative links work
            let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let location = HeaderValue::from_str(&format!("{path}/{q}")).map_err(|_| HttpError::NotFound)?;
            let mut resp = Response::new(Body::Empty);
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            resp.headers_mut().insert(header::LOCATION, location);
            Ok(resp)
        }
        Lookup::Directory => Err(HttpError::NotFound),
        Lookup::Cached(entry) => Ok(from_cache(route, files, compression, req, &fs_path, entry).await),
        Lookup::Large(file, meta) => Ok(from_disk(route, compression, req, file, meta)),
    }
}

/// The representation chosen for a request.
struct Choice {
    encoding: Option<Encoding>,
    /// The whole file, or one range of it.
    range: Option<(u64, u64)>,
}

async fn from_cache<B>(
    route: &StaticRoute,
    files: &FileCache,
    compression: &CompressionSettings,
    req: &Request<B>,
    key: &Path,
    entry: Arc<CachedFile>,
) -> Response<Body> {
    let meta = &entry.meta;
    let compressible = compressible(compression, meta);
    let h = req.headers();
    let wanted = if compressible && !h.contains_key(header::RANGE) {
        compression.negotiate(h.get(header::ACCEPT_ENCODING))
    } else {
        None
    };
    let variant = match wanted {
        Some(enc) => files.variant(key, &entry, enc).await.map(|b| (enc, b)),
        None => None,
    };
    let encoding = variant.as_ref().map(|(e, _)| *e);
    let etag = representation_etag(&meta.etag, encoding.map(Encoding::extension));
    match precondition(h, &validators(meta, &etag), encoding.is_none()) {
        Pre::NotModified => not_modified(route, meta, &etag, compressible),
        Pre::Unsatisfiable => unsatisfiable(route, meta, compressible),
        Pre::Serve(range) => {
            let choice = Choice { encoding, range };
            let body = match (&variant, choice.range) {
                (Some((_, b)), _) => b.clone(),
                (None, Some((start, end))) => entry.body.slice(start as usize..=end as usize),
                (None, None) => entry.body.clone(),
            };
            let len = body.len() as u64;
            let body = if req.method() == Method::HEAD {
                Body::Empty
            } else {
                Body::full(body)
            };
            full_response(route, meta, &etag, compressible, &choice, len, body)
        }
    }
}

fn from_disk<B>(
    route: &StaticRoute,
    compression: &CompressionSettings,
    req: &Request<B>,
    mut file: std::fs::File,
    meta: FileMeta,
) -> Response<Body> {
    let compressible = compressible(compression, &meta);
    let h = req.headers();
    let wanted = if compressible && !h.contains_key(header::RANGE) {
        compression.negotiate(h.get(header::ACCEPT_ENCODING))
    } else {
        None
    };
    // compressed on the fly: a weak ETag, as the bytes may differ between runs
    let etag = match wanted {
        Some(_) => weak(&meta.etag),
        None => meta.etag.clone(),
    };
    match precondition(h, &validators(&meta, &etag), wanted.is_none()) {
        Pre::NotModified => not_modified(route, &meta, &etag, compressible),
        Pre::Unsatisfiable => unsatisfiable(route, &meta, compressible),
        Pre::Serve(range) => {
            let (start, len) = match range {
                Some((s, e)) => (s, e - s + 1),
                None => (0, meta.len),
            };
            if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
                return HttpError::NotFound.into_response(false);
            }
            let choice = Choice {
                encoding: wanted,
                range,
            };
            let body = if req.method() == Method::HEAD {
                Body::Empty
            } else {
                let raw = Body::boxed(FileBody::new(file, len));
                match wanted {
                    Some(enc) => Body::boxed(compression::CompressedBody::new(raw, enc)),
                    None => raw,
                }
            };
            let mut resp = full_response(route, &meta, &etag, compressible, &choice, len, body);
            if wanted.is_some() {
                // the compressed length is not known in advance
                resp.headers_mut().remove(header::CONTENT_LENGTH);
            }
            resp
        }
    }
}

fn compressible(compression: &CompressionSettings, meta: &FileMeta) -> bool {
    meta.len >= compression.min_size && compression.compressible(Some(&meta.content_type))
}

fn validators<'a>(meta: &'a FileMeta, etag: &'a HeaderValue) -> Validators<'a> {
    Validators {
        etag: Some(etag),
        identity_etag: Some(&meta.etag),
        modified: Some(meta.mtime),
        len: meta.len,
    }
}

fn common_headers(h: &mut HeaderMap, route: &StaticRoute, meta: &FileMeta, etag: &HeaderValue, compressible: bool) {
    h.insert(header::ETAG, etag.clone());
    h.insert(header::LAST_MODIFIED, meta.last_modified.clone());
    if let Some(cc) = &route.cache_control {
        h.insert(header::CACHE_CONTROL, cc.clone());
    }
    if compressible {
        compression::add_vary(h);
    }
}

/// Room in a file response's header map: its own (up to 9) and the gateway's (request id,
/// `Server`, six security headers).
const RESPONSE_HEADERS: usize = 18;

fn full_response(
    route: &StaticRoute,
    meta: &FileMeta,
    etag: &HeaderValue,
    compressible: bool,
    choice: &Choice,
    len: u64,
    body: Body,
) -> Response<Body> {
    let mut resp = Response::new(body);
    // sized once for the file's headers and those added on the way out (request id, security
    // headers): growing a map as it fills costs more than the inserts
    *resp.headers_mut() = maps::take(RESPONSE_HEADERS);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, meta.content_type.clone());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common_headers(h, route, meta, etag, compressible);
    if let Some(enc) = choice.encoding {
        h.insert(header::CONTENT_ENCODING, enc.header_value());
    }
    if let Some((s, e)) = choice.range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{}", meta.len)) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

fn not_modified(route: &StaticRoute, meta: &FileMeta, etag: &HeaderValue, compressible: bool) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.headers_mut() = maps::take(RESPONSE_HEADERS);
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    common_headers(resp.headers_mut(), route, meta, etag, compressible);
    resp
}

fn unsatisfiable(route: &StaticRoute, meta: &FileMeta, compressible: bool) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.len)) {
        h.insert(header::CONTENT_RANGE, v);
    }
    common_headers(h, route, meta, &meta.etag, compressible);
    resp
}

/// A file (or a range of it) streamed from disk in 64 KiB reads.
struct FileBody {
    stream: ReaderStream<Take<tokio::fs::File>>,
    remaining: u64,
}

impl FileBody {
    fn new(file: std::fs::File, len: u64) -> Self {
        let file = tokio::fs::File::from_std(file).take(len);
        Self {
            stream: ReaderStream::with_capacity(file, 64 * 1024),
            remaining: len,
        }
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use futures_util::Stream;
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

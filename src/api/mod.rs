//! The bundled Orta Novias API: a small HTTP/1.1 upstream so the gateway runs end to end on one
//! machine. `run` starts one replica per `[api].replicas` address in-process; `orta-gateway api`
//! runs one alone. Built on hyper directly: the surface is small enough that a framework would
//! cost more build time than it saves.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::body::Body;

/// Serves one replica on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, addr: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    let replica: &'static str = Box::leak(addr.to_string().into_boxed_str());
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| async move { Ok::<_, Infallible>(handle(replica, req)) });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// Runs one replica alone (`orta-gateway api --listen ADDR`) until SIGTERM/SIGINT.
pub async fn run_standalone(addr: SocketAddr) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = crate::server::listener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("bundled API replica listening api={bound}");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, bound, rx));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = tx.send(true);
    let _ = task.await;
    Ok(())
}

fn handle(replica: &str, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/api/health") => json(
            StatusCode::OK,
            serde_json::json!({ "status": "ok", "replica": replica }),
        ),
        (_, "/api/health") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "method not allowed" }),
        ),
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({ "error": "not found" })),
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

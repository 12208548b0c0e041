//! HTTP plumbing shared by every emulator: a hyper accept loop in front of axum routers that can
//! also close a connection without answering, which a plain `axum::serve` cannot do.
//!
//! A handler or middleware asks for that by returning [`dropped()`]: the service then fails the
//! request, and hyper closes the connection without writing a response.

use std::fmt;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Response extension: close the connection instead of sending this response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// Response extension: the API key that signed the request, for the request log.
#[derive(Clone, Debug)]
pub(crate) struct CallerKey(pub String);

/// A response that is never sent: the connection is closed instead.
pub(crate) fn dropped() -> axum::response::Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.extensions_mut().insert(DropConnection);
    r
}

#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Which router answers a request: the first whose prefix matches the path, else `default`.
#[derive(Clone)]
pub(crate) struct Dispatch {
    pub name: &'static str,
    pub prefixed: Vec<(&'static str, Router)>,
    pub default: Router,
}

impl Dispatch {
    fn pick(&self, path: &str) -> Router {
        for (prefix, router) in &self.prefixed {
            let rest = path.strip_prefix(prefix);
            if matches!(rest, Some(r) if r.is_empty() || r.starts_with('/')) {
                return router.clone();
            }
        }
        self.default.clone()
    }
}

/// Serves `listener` until `shutdown` turns true; then stops accepting and closes every open
/// connection (a simulated cloud has no in-flight work worth finishing).
pub(crate) async fn serve(
    listener: TcpListener,
    dispatch: Dispatch,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        // Reap finished connections so the set does not grow for the life of the simulator.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!("{}: accept failed: {e}", dispatch.name);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dispatch = dispatch.clone();
        let mut shutdown = shutdown.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let dispatch = dispatch.clone();
                async move { handle(&dispatch, peer, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::trace!("connection from {peer} ended: {e}");
                    }
                }
                _ = shutdown.wait_for(|down| *down) => {}
            }
        });
    }
    conns.shutdown().await;
}

async fn handle(
    dispatch: &Dispatch,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<axum::response::Response, Dropped> {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut req = req.map(Body::new);
    req.extensions_mut().insert(ConnectInfo(peer));
    let router = dispatch.pick(req.uri().path());
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let key = resp
        .extensions()
        .get::<CallerKey>()
        .map(|k| k.0.as_str())
        .unwrap_or("-");
    if resp.extensions().get::<DropConnection>().is_some() {
        tracing::debug!(
            "{} {peer} {method} {target} -> dropped (key {key})",
            dispatch.name
        );
        return Err(Dropped);
    }
    tracing::debug!(
        "{} {peer} {method} {target} -> {} (key {key})",
        dispatch.name,
        resp.status().as_u16()
    );
    Ok(resp)
}

//! The instance metadata stub, on its own listener (the real one is `http://169.254.169.254`).
//!
//! EC2-style, `text/plain`, under `/latest/` and `/1.0/`: `meta-data/` (key list),
//! `meta-data/<key>`, `user-data`. The instance is the one whose public address is the request's
//! source address (so each agent in its own network namespace sees itself); when none matches,
//! `?instance=<id>` names it; otherwise 404.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::exoscale::{ExoSim, Instance};
use crate::exoscale::sign;

/// The keys served under `meta-data/`, in the order the index lists them.
const KEYS: &[&str] = &[
    "availability-zone",
    "instance-id",
    "local-hostname",
    "local-ipv4",
    "public-hostname",
    "public-ipv4",
    "vm-id",
];

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".to_string())
}

type Sim = State<Arc<ExoSim>>;

pub(crate) fn router(sim: Arc<ExoSim>) -> Router {
    Router::new()
        .route("/{version}/meta-data", get(index))
        .route("/{version}/meta-data/", get(index))
        .route("/{version}/meta-data/{key}", get(value))
        .route("/{version}/user-data", get(user_data))
        .fallback(|| async { not_found() })
        .with_state(sim)
}

/// The instance asking, or `None` (answer 404) for an unknown source without a valid query.
fn whoami(
    sim: &ExoSim,
    version: &str,
    peer: SocketAddr,
    query: Option<String>,
) -> Option<(String, Instance)> {
    if version != "latest" && version != "1.0" {
        return None;
    }
    let query = sign::parse_query(query.as_deref().unwrap_or(""));
    let named = query
        .iter()
        .find(|(n, _)| n == "instance")
        .map(|(_, v)| v.as_str());
    sim.metadata_instance(peer.ip(), named)
}

async fn index(
    State(sim): Sim,
    Path(version): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    match whoami(&sim, &version, peer, q) {
        Some(_) => text(StatusCode::OK, KEYS.join("\n")),
        None => not_found(),
    }
}

async fn value(
    State(sim): Sim,
    Path((version, key)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some((zone, inst)) = whoami(&sim, &version, peer, q) else {
        return not_found();
    };
    let v = match key.as_str() {
        "availability-zone" => Some(zone),
        "instance-id" | "vm-id" => Some(inst.id),
        "local-hostname" | "public-hostname" => Some(inst.name),
        // Exoscale puts the public address on the instance's own NIC.
        "local-ipv4" | "public-ipv4" => inst.public_ip.map(|ip| ip.to_string()),
        _ => None,
    };
    match v {
        Some(v) => text(StatusCode::OK, v),
        None => not_found(),
    }
}

async fn user_data(
    State(sim): Sim,
    Path(version): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    match whoami(&sim, &version, peer, q) {
        Some((_, inst)) => text(StatusCode::OK, inst.user_data),
        None => not_found(),
    }
}

//! The control API under `/_sim/` on the API listener: unauthenticated JSON for tests and the
//! demo to inspect the simulated cloud and to change it behind the API's back.
//!
//! * `GET /_sim/state`: zones with their elastic IPs (and holder ids) and instances.
//! * `GET /_sim/timeline`: every holder change so far (see [`super::TimelineEvent`]).
//! * `GET /_sim/faults`, `PUT /_sim/faults`: read or replace the [`super::Faults`] (fields left
//!   out take their defaults, remaining counts included).
//! * `POST /_sim/instance/{id}/state` `{"state":"stopped"}`: change an instance's state.
//! * `PUT /_sim/elastic-ip/{ip}/holders` `{"holders":["<id>",…]}`: force the holders, as another
//!   actor (or a split brain) would; recorded on the timeline with `"forced":true`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::exoscale::{lock, ControlError, ExoSim};
use super::faults::Faults;

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    reply(status, json!({ "message": msg.into() }))
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        ControlError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

type Sim = State<Arc<ExoSim>>;

pub(crate) fn router(sim: Arc<ExoSim>) -> Router {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/timeline", get(timeline))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/instance/{id}/state", post(set_instance_state))
        .route("/_sim/elastic-ip/{ip}/holders", put(force_holders))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such control endpoint") })
        .with_state(sim)
}

async fn state(State(sim): Sim) -> Response {
    reply(StatusCode::OK, sim.state_json())
}

async fn timeline(State(sim): Sim) -> Response {
    let events = serde_json::to_value(sim.timeline.events()).expect("events serialise");
    reply(StatusCode::OK, events)
}

async fn get_faults(State(sim): Sim) -> Response {
    let f = lock(&sim.faults).faults.clone();
    reply(
        StatusCode::OK,
        serde_json::to_value(f).expect("faults serialise"),
    )
}

async fn put_faults(State(sim): Sim, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, format!("faults: {e}"));
    }
    tracing::info!("faults replaced: {faults:?}");
    lock(&sim.faults).faults = faults.clone();
    reply(
        StatusCode::OK,
        serde_json::to_value(faults).expect("faults serialise"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

async fn set_instance_state(State(sim): Sim, Path(id): Path<String>, body: Bytes) -> Response {
    let body: StateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match sim.set_instance_state(&id, &body.state) {
        Ok(()) => reply(StatusCode::OK, json!({ "id": id, "state": body.state })),
        Err(e) => control_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldersBody {
    holders: Vec<String>,
}

async fn force_holders(State(sim): Sim, Path(ip): Path<String>, body: Bytes) -> Response {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{ip:?} is not an IP address"),
        );
    };
    let body: HoldersBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match sim.force_holders(ip, &body.holders) {
        Ok(holders) => reply(StatusCode::OK, json!({ "ip": ip, "holders": holders })),
        Err(e) => control_error(e),
    }
}

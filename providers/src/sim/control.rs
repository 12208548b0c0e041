//! The control API under `/_sim/` on the API listener: unauthenticated JSON for tests and the
//! demo to inspect the simulated cloud and to change it behind the API's back.
//!
//! Every cloud:
//! * `GET /_sim/state`: the cloud's state (Exoscale: zones with their elastic IPs, holder ids
//!   and instances; OpenStack: floating IPs, ports, servers, extensions, token settings;
//!   Azure: the same as `GET /_sim/azure/state`).
//! * `GET /_sim/timeline`: every holder change so far (see [`super::TimelineEvent`]).
//! * `GET /_sim/faults`, `PUT /_sim/faults`: read or replace the [`super::Faults`] (fields left
//!   out take their defaults, remaining counts included).
//! * `PUT /_sim/elastic-ip/{ip}/holders` `{"holders":["<id>",…]}`: force the holders, as another
//!   actor (or a split brain) would; recorded on the timeline with `"forced":true` (Azure: at
//!   most one VM name, as `PUT /_sim/azure/holders/{ip}`).
//!
//! Exoscale only:
//! * `POST /_sim/instance/{id}/state` `{"state":"stopped"}`: change an instance's state.
//!
//! OpenStack only (see [`super::openstack`]):
//! * `PUT /_sim/floating-ip/{ip}/holders`, `PUT /_sim/address/{ip}/holders`: the same as
//!   `/_sim/elastic-ip/{ip}/holders` (server ids; a VIP address sets `allowed_address_pairs`).
//! * `POST /_sim/tokens/revoke`: revoke every token → `{"revoked": n}`.
//! * `PUT /_sim/token-lifetime` `{"lifetime":"2s"}`: lifetime of the tokens issued from now on.
//! * `DELETE /_sim/port/{id}`: delete a port (its floating IPs are dissociated).
//! * `PUT /_sim/extension/{alias}` `{"enabled":false}`: switch a Neutron extension off or on.
//!
//! Azure only: everything under `/_sim/azure/` (options, token expiry, power states; see
//! [`super::azure::control`]), served by the Azure simulator's own router ahead of this one.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::exoscale::{lock, ControlError};
use super::faults::Faults;
use super::openstack::OsSim;
use super::Cloud;

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

type Ctl = State<Cloud>;

pub(crate) fn router(cloud: Cloud) -> Router {
    let common = Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/timeline", get(timeline))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/elastic-ip/{ip}/holders", put(force_holders));
    let specific = match &cloud {
        Cloud::Exoscale(_) => common.route("/_sim/instance/{id}/state", post(set_instance_state)),
        Cloud::Azure(_) => common,
        Cloud::OpenStack(_) => common
            .route("/_sim/floating-ip/{ip}/holders", put(force_holders))
            .route("/_sim/address/{ip}/holders", put(force_holders))
            .route("/_sim/tokens/revoke", post(revoke_tokens))
            .route("/_sim/token-lifetime", put(token_lifetime))
            .route("/_sim/port/{id}", delete(delete_port))
            .route("/_sim/extension/{alias}", put(set_extension)),
    };
    specific
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such control endpoint") })
        .with_state(cloud)
}

async fn state(State(cloud): Ctl) -> Response {
    reply(StatusCode::OK, cloud.state_json())
}

async fn timeline(State(cloud): Ctl) -> Response {
    let events = serde_json::to_value(cloud.timeline().events()).expect("events serialise");
    reply(StatusCode::OK, events)
}

async fn get_faults(State(cloud): Ctl) -> Response {
    let f = lock(cloud.faults()).faults.clone();
    reply(
        StatusCode::OK,
        serde_json::to_value(f).expect("faults serialise"),
    )
}

async fn put_faults(State(cloud): Ctl, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, format!("faults: {e}"));
    }
    tracing::info!("faults replaced: {faults:?}");
    lock(cloud.faults()).faults = faults.clone();
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

async fn set_instance_state(State(cloud): Ctl, Path(id): Path<String>, body: Bytes) -> Response {
    let Cloud::Exoscale(sim) = cloud else {
        return error(StatusCode::NOT_FOUND, "no such control endpoint");
    };
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

async fn force_holders(State(cloud): Ctl, Path(ip): Path<String>, body: Bytes) -> Response {
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
    match cloud.force_holders(ip, &body.holders) {
        Ok(holders) => reply(StatusCode::OK, json!({ "ip": ip, "holders": holders })),
        Err(e) => control_error(e),
    }
}

/// The OpenStack simulator, or `None` (answer [`not_openstack`]) for another cloud.
fn openstack(cloud: Cloud) -> Option<Arc<OsSim>> {
    match cloud {
        Cloud::OpenStack(s) => Some(s),
        Cloud::Exoscale(_) | Cloud::Azure(_) => None,
    }
}

fn not_openstack() -> Response {
    error(StatusCode::NOT_FOUND, "no such control endpoint")
}

async fn revoke_tokens(State(cloud): Ctl) -> Response {
    match openstack(cloud) {
        Some(sim) => reply(StatusCode::OK, json!({ "revoked": sim.revoke_tokens() })),
        None => not_openstack(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeBody {
    #[serde(with = "super::faults::humantime_str")]
    lifetime: std::time::Duration,
}

async fn token_lifetime(State(cloud): Ctl, body: Bytes) -> Response {
    let Some(sim) = openstack(cloud) else {
        return not_openstack();
    };
    let body: LifetimeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match sim.set_token_lifetime(body.lifetime) {
        Ok(()) => reply(
            StatusCode::OK,
            json!({ "lifetime": humantime::format_duration(body.lifetime).to_string() }),
        ),
        Err(e) => control_error(e),
    }
}

async fn delete_port(State(cloud): Ctl, Path(id): Path<String>) -> Response {
    let Some(sim) = openstack(cloud) else {
        return not_openstack();
    };
    match sim.delete_port(&id) {
        Ok(()) => reply(StatusCode::OK, json!({ "deleted": id })),
        Err(e) => control_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionBody {
    enabled: bool,
}

async fn set_extension(State(cloud): Ctl, Path(alias): Path<String>, body: Bytes) -> Response {
    let Some(sim) = openstack(cloud) else {
        return not_openstack();
    };
    let body: ExtensionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match sim.set_extension(&alias, body.enabled) {
        Ok(()) => reply(
            StatusCode::OK,
            json!({ "alias": alias, "enabled": body.enabled }),
        ),
        Err(e) => control_error(e),
    }
}

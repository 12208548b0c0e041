//! The Azure control API under `/_sim/azure/` on the API listener: unauthenticated JSON for
//! tests and the demo to inspect the simulated Azure and to change it behind ARM's back.
//!
//! * `GET /_sim/azure/state`: VMs, NICs (applied and desired ipConfigurations), public IPs with
//!   their holder, each floating address's holders, running operations, options.
//! * `GET /_sim/azure/timeline`: every holder change so far (see
//!   [`crate::sim::TimelineEvent`]).
//! * `GET|PUT /_sim/azure/faults`: the [`crate::sim::Faults`] (fields left out take their
//!   defaults). ARM only: login and IMDS are not affected.
//! * `GET|PUT /_sim/azure/options`: the [`super::AzureOptions`] (token lifetime, `Retry-After`,
//!   busy status, page size, IMDS default VM).
//! * `POST /_sim/azure/tokens/expire`: every token issued so far expires now.
//! * `PUT /_sim/azure/holders/{ip}` `{"holders":["lb2"]}`: another actor moves the public IP or
//!   secondary address (at most one VM; `[]` detaches it); recorded as forced.
//! * `POST /_sim/azure/vm/{name}/power-state` `{"state":"stopped"}`.

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

use super::{AzureOptions, AzureSim, AzureSimError};
use crate::sim::faults::Faults;
use crate::InstanceId;

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    reply(status, json!({ "message": msg.into() }))
}

fn sim_error(e: AzureSimError) -> Response {
    match e {
        AzureSimError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        _ => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

type Sim = State<Arc<AzureSim>>;

pub(crate) fn router(sim: Arc<AzureSim>) -> Router {
    Router::new()
        .route("/_sim/azure/state", get(state))
        .route("/_sim/azure/timeline", get(timeline))
        .route("/_sim/azure/faults", get(get_faults).put(put_faults))
        .route("/_sim/azure/options", get(get_options).put(put_options))
        .route("/_sim/azure/tokens/expire", post(expire_tokens))
        .route("/_sim/azure/holders/{ip}", put(force_holders))
        .route("/_sim/azure/vm/{name}/power-state", post(power_state))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such control endpoint") })
        .with_state(sim)
}

async fn state(State(sim): Sim) -> Response {
    reply(StatusCode::OK, sim.state_json())
}

async fn timeline(State(sim): Sim) -> Response {
    let events = serde_json::to_value(sim.timeline()).expect("events serialise");
    reply(StatusCode::OK, events)
}

async fn get_faults(State(sim): Sim) -> Response {
    reply(
        StatusCode::OK,
        serde_json::to_value(sim.faults()).expect("faults serialise"),
    )
}

async fn put_faults(State(sim): Sim, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("faults: {e}")),
    };
    match sim.set_faults(faults.clone()) {
        Ok(()) => {
            tracing::info!("azure faults replaced: {faults:?}");
            reply(
                StatusCode::OK,
                serde_json::to_value(faults).expect("faults serialise"),
            )
        }
        Err(e) => sim_error(e),
    }
}

async fn get_options(State(sim): Sim) -> Response {
    reply(
        StatusCode::OK,
        serde_json::to_value(sim.options()).expect("options serialise"),
    )
}

async fn put_options(State(sim): Sim, body: Bytes) -> Response {
    let options: AzureOptions = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("options: {e}")),
    };
    match sim.set_options(options.clone()) {
        Ok(()) => {
            tracing::info!("azure options replaced: {options:?}");
            reply(
                StatusCode::OK,
                serde_json::to_value(options).expect("options serialise"),
            )
        }
        Err(e) => sim_error(e),
    }
}

async fn expire_tokens(State(sim): Sim) -> Response {
    let n = sim.expire_tokens();
    tracing::info!("{n} access token(s) expired by the control API");
    reply(StatusCode::OK, json!({ "expired": n }))
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
    let vms: Vec<InstanceId> = body.holders.into_iter().map(InstanceId).collect();
    match sim.force_holders(ip, &vms) {
        Ok(holders) => reply(StatusCode::OK, json!({ "ip": ip, "holders": holders })),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerBody {
    state: String,
}

async fn power_state(State(sim): Sim, Path(name): Path<String>, body: Bytes) -> Response {
    let body: PowerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match sim.set_power_state(&name, &body.state) {
        Ok(()) => reply(
            StatusCode::OK,
            json!({ "vm": name, "power_state": body.state }),
        ),
        Err(e) => sim_error(e),
    }
}

//! The Instance Metadata Service, on its own listener (the real one is
//! `http://169.254.169.254`).
//!
//! * `GET /metadata/instance?api-version=…` (and sub-paths such as
//!   `/metadata/instance/compute/vmId?api-version=…&format=text`): `compute` and `network` as in
//!   `azure.md` §2, every primitive a string.
//! * `GET /metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=|object_id=|
//!   msi_res_id=]`: a managed-identity token, every field a string.
//! * `GET /metadata/scheduledevents?api-version=…`: no events.
//!
//! Every request needs `Metadata: true` (else 400 `bad_request_102`) and no
//! `X-Forwarded-For` (IMDS refuses proxied requests). The caller is the VM whose primary NIC's
//! primary address is the request's source address, else [`super::AzureOptions::imds_default_vm`];
//! a request from a VM's secondary address gets no answer at all (connection closed), as
//! IMDS traffic from a VIP goes nowhere in Azure.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::login::{arm_audience, Holder};
use super::world::World;
use super::{lock, AzureSim};
use crate::sim::server::dropped;

const NEWEST_VERSIONS: &[&str] = &["2023-07-01", "2023-04-01", "2023-03-01"];

type Sim = State<Arc<AzureSim>>;
type Params = Query<Vec<(String, String)>>;

pub(crate) fn router(sim: Arc<AzureSim>) -> Router {
    Router::new()
        .route("/metadata/instance", get(instance))
        .route("/metadata/instance/{*path}", get(instance))
        .route("/metadata/identity/oauth2/token", get(identity_token))
        .route("/metadata/scheduledevents", get(scheduled_events))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, &json!({"error": "Not found"})) })
        .with_state(sim)
}

fn reply(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    reply(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The checks every IMDS request goes through, then the calling VM's name.
fn caller(
    sim: &AzureSim,
    headers: &HeaderMap,
    peer: SocketAddr,
    identity: bool,
) -> Result<String, Box<Response>> {
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return Err(Box::new(if identity {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "bad_request_102",
                "Required metadata header not specified",
            )
        } else {
            reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "Bad request. Required metadata header not specified"}),
            )
        }));
    }
    if headers.contains_key("x-forwarded-for") {
        return Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Bad request. X-Forwarded-For header is not allowed"}),
        )));
    }
    match sim.imds_caller(peer.ip()) {
        Ok(vm) => Ok(vm),
        Err(true) => {
            tracing::warn!(
                "IMDS request from {} (a secondary address): not answered, as in Azure",
                peer.ip()
            );
            Err(Box::new(dropped()))
        }
        Err(false) => Err(Box::new(reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!(
                "no VM has the primary address {} (simulator: set options.imds_default_vm)",
                peer.ip()
            )}),
        ))),
    }
}

fn strings(tags: &std::collections::BTreeMap<String, String>) -> (String, Vec<Value>) {
    let flat = tags
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(";");
    let list = tags
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    (flat, list)
}

/// The instance document of VM `vm` (applied state).
fn instance_document(world: &World, vm_name: &str) -> Value {
    let vm = world.vm(vm_name).expect("the caller is a VM");
    let (tags, tags_list) = strings(&vm.tags);
    let interfaces: Vec<Value> = vm
        .nics
        .iter()
        .filter_map(|n| world.nic_index(n).map(|i| &world.nics[i]))
        .map(|nic| {
            let mut configs: Vec<&super::world::IpConfig> = nic.applied.ip_configs.iter().collect();
            // The primary address first, as on the real VM.
            configs.sort_by_key(|c| !c.primary);
            let addresses: Vec<Value> = configs
                .iter()
                .map(|c| {
                    // Standard SKU public IPs are not reliably reported: always "".
                    json!({ "privateIpAddress": c.private_ip.to_string(), "publicIpAddress": "" })
                })
                .collect();
            let mut subnets: Vec<Value> = Vec::new();
            for c in &configs {
                if let Some(p) = world.subnet_prefix(&c.vnet, &c.subnet) {
                    let s = json!({
                        "address": p.network().to_string(),
                        "prefix": p.prefix_len().to_string(),
                    });
                    if !subnets.contains(&s) {
                        subnets.push(s);
                    }
                }
            }
            json!({
                "ipv4": { "ipAddress": addresses, "subnet": subnets },
                "ipv6": { "ipAddress": [] },
                "macAddress": nic.mac.replace('-', ""),
            })
        })
        .collect();
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": world.ids.location,
            "name": vm.name,
            "osType": "Linux",
            "provider": "Microsoft.Compute",
            "resourceGroupName": world.ids.rg,
            "resourceId": world.ids.vm(&vm.name),
            "subscriptionId": world.ids.sub,
            "tags": tags,
            "tagsList": tags_list,
            "vmId": vm.vm_id,
            "vmSize": vm.size,
            "zone": vm.zone,
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "vmScaleSetName": "",
            "userData": "",
            "customData": "",
        },
        "network": { "interface": interfaces },
    })
}

async fn instance(
    State(sim): Sim,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
    uri: Uri,
) -> Response {
    let vm = match caller(&sim, &headers, peer, false) {
        Ok(vm) => vm,
        Err(r) => return *r,
    };
    if missing(param(&q, "api-version")) {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "Bad request. api-version was not specified in the request. For more \
                          information refer to aka.ms/azureimds",
                "newest-versions": NEWEST_VERSIONS,
            }),
        );
    }
    let doc = instance_document(&lock(&sim.world), &vm);
    // `/metadata/instance/compute/vmId`: walk the document (arrays by index).
    let rest = uri.path().strip_prefix("/metadata/instance").unwrap_or("");
    let mut node = &doc;
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return reply(StatusCode::NOT_FOUND, &json!({"error": "Not found"})),
        }
    }
    if param(&q, "format") == Some("text") {
        return match node {
            Value::String(s) => {
                let mut r = (StatusCode::OK, s.clone()).into_response();
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            _ => reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "Bad request. Text format is only supported for leaf nodes"}),
            ),
        };
    }
    reply(StatusCode::OK, node)
}

/// An absent or empty query parameter.
fn missing(v: Option<&str>) -> bool {
    v.filter(|s| !s.is_empty()).is_none()
}

async fn scheduled_events(
    State(sim): Sim,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Response {
    if let Err(r) = caller(&sim, &headers, peer, false) {
        return *r;
    }
    if missing(param(&q, "api-version")) {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Bad request. api-version was not specified in the request."}),
        );
    }
    reply(
        StatusCode::OK,
        &json!({ "DocumentIncarnation": 0, "Events": [] }),
    )
}

async fn identity_token(
    State(sim): Sim,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Response {
    let vm_name = match caller(&sim, &headers, peer, true) {
        Ok(vm) => vm,
        Err(r) => return *r,
    };
    if missing(param(&q, "api-version")) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = param(&q, "resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let selectors: Vec<(&str, &str)> = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
        .iter()
        .filter_map(|n| param(&q, n).map(|v| (*n, v)))
        .collect();
    if selectors.len() > 1 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Only one of client_id, object_id and msi_res_id may be specified",
        );
    }
    let (identity, tenant) = {
        let world = lock(&sim.world);
        let vm = world.vm(&vm_name).expect("the caller is a VM");
        let users: Vec<&super::world::Identity> = vm
            .user_identities
            .iter()
            .filter_map(|n| world.identities.iter().find(|i| &i.name == n))
            .collect();
        let chosen = match selectors.first() {
            None => match (&vm.system_identity, users.as_slice()) {
                (Some(s), _) => Ok(s.clone()),
                (None, [one]) => Ok((*one).clone()),
                (None, []) => Err("Identity not found"),
                (None, _) => Err(
                    "Multiple user assigned identities exist, please specify the clientId / \
                     resourceId of the identity in the token request",
                ),
            },
            Some((kind, value)) => {
                let all = vm.system_identity.iter().map(|s| (s, None)).chain(
                    users
                        .iter()
                        .map(|u| (*u, Some(world.ids.identity(&u.name)))),
                );
                let mut found = None;
                for (i, res_id) in all {
                    let hit = match *kind {
                        "client_id" => i.client_id.eq_ignore_ascii_case(value),
                        "object_id" => i.principal_id.eq_ignore_ascii_case(value),
                        _ => res_id.is_some_and(|r| r.eq_ignore_ascii_case(value)),
                    };
                    if hit {
                        found = Some(i.clone());
                        break;
                    }
                }
                found.ok_or("Identity not found")
            }
        };
        (chosen, world.ids.tenant.clone())
    };
    let identity = match identity {
        Ok(i) => i,
        Err(msg) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", msg),
    };
    let Some(audience) = arm_audience(resource) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the \
                 tenant named {tenant}."
            ),
        );
    };
    let lifetime = lock(&sim.options).token_lifetime;
    let (token, iat, exp) = sim.tokens.issue(
        Holder::ManagedIdentity {
            vm: vm_name.clone(),
            client_id: identity.client_id.clone(),
        },
        audience,
        &tenant,
        lifetime,
    );
    tracing::debug!(
        "IMDS issued an ARM token to {vm_name}'s identity {}",
        identity.client_id
    );
    // Every value a string, `resource` echoed as asked.
    reply(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "client_id": identity.client_id,
            "refresh_token": "",
            "expires_in": lifetime.as_secs().to_string(),
            "expires_on": exp.to_string(),
            "ext_expires_in": lifetime.as_secs().to_string(),
            "not_before": iat.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

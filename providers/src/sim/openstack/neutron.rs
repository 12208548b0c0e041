//! The Neutron v2.0 emulator under `/network`: version discovery (unauthenticated), then, with
//! a valid project-scoped `X-Auth-Token`, extensions, networks, subnets, routers, security
//! groups, ports and floating IPs.
//!
//! What is emulated (see `shared/clouds/openstack.md` §3, §4, §8):
//! * Lists filter on any scalar attribute (repeated values: any of them), on
//!   `fixed_ips=ip_address=…`/`subnet_id=…` for ports, and on `security_groups` for ports while
//!   the `port-security-groups-filtering` extension is on; without it that filter is ignored
//!   (every port is listed), as Neutron releases without the extension did. Any other
//!   parameter is refused with 400 (`filter-validation`). `fields` (repeatable), `sort_key`/
//!   `sort_dir`, `limit`/`marker`/`page_reverse` with `<collection>_links` work as in Neutron.
//! * `PUT /v2.0/floatingips/{id}`: associate, move (one PUT), dissociate (`port_id: null` or an
//!   empty object; a non-empty body without `port_id` keeps the association), with Neutron's
//!   checks and error types; every successful update bumps `revision_number`; `If-Match:
//!   revision_number=N` is enforced (412).
//! * `PUT /v2.0/ports/{id}`: `name`, `description`, `admin_state_up`, `device_id`,
//!   `device_owner`, `security_groups`, `allowed_address_pairs` (replaces the list, fills the
//!   MAC, accepts CIDRs, at most 10); `If-Match`. A new claim record in the description (VIP
//!   mode's, on the VIP port) is a timeline `claim` event for each of the port's fixed IPs.
//!   `DELETE /v2.0/ports/{id}` dissociates the port's floating IPs.
//! * Creating or deleting networks, subnets, routers, groups and floating IPs is not emulated
//!   (405), nor changing a port's `fixed_ips` (501).
//!
//! Errors are `{"NeutronError":{"type","message","detail"}}`; a missing, expired or revoked
//! token gets keystonemiddleware's 401 with `WWW-Authenticate: Keystone uri="…"`.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::header::{CONTENT_TYPE, IF_MATCH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::keystone::{self, Caller, X_AUTH_TOKEN};
use super::net::{Cidr, Mac};
use super::{
    base_url, neutron_time, parse_query, visible_network, AddressPair, FloatingIp, Network, OsSim,
    Port, Router as OsRouter, SecurityGroup, Subnet, World, CREATED_AT, EXT_IF_MATCH, EXT_PAIRS,
    EXT_PORT_DETAILS, EXT_SG_FILTER, MAX_ADDRESS_PAIRS, NEUTRON_EXTENSIONS,
};
use crate::sim::exoscale::lock;
use crate::sim::faults::Door;
use crate::sim::server::{dropped, CallerKey};

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A Neutron error answer: status, `NeutronError.type`, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NErr {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl NErr {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> NErr {
        NErr {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> NErr {
        NErr::new(StatusCode::BAD_REQUEST, "HTTPBadRequest", message)
    }

    fn not_found(kind: &'static str, message: impl Into<String>) -> NErr {
        NErr::new(StatusCode::NOT_FOUND, kind, message)
    }
}

impl IntoResponse for NErr {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}}),
        )
    }
}

type Sim = State<Arc<OsSim>>;

pub(crate) fn router(sim: Arc<OsSim>) -> Router {
    const V: &str = "/network/v2.0";
    Router::new()
        .route("/network", get(versions))
        .route("/network/", get(versions))
        .route(V, get(resources))
        .route(&format!("{V}/"), get(resources))
        .route(&format!("{V}/extensions"), get(list_extensions))
        .route(&format!("{V}/extensions/{{alias}}"), get(get_extension))
        .route(&format!("{V}/networks"), get(list_networks))
        .route(&format!("{V}/networks/{{id}}"), get(get_network))
        .route(&format!("{V}/subnets"), get(list_subnets))
        .route(&format!("{V}/subnets/{{id}}"), get(get_subnet))
        .route(&format!("{V}/routers"), get(list_routers))
        .route(&format!("{V}/routers/{{id}}"), get(get_router))
        .route(&format!("{V}/security-groups"), get(list_security_groups))
        .route(
            &format!("{V}/security-groups/{{id}}"),
            get(get_security_group),
        )
        .route(&format!("{V}/ports"), get(list_ports))
        .route(
            &format!("{V}/ports/{{id}}"),
            get(get_port).put(put_port).delete(delete_port),
        )
        .route(&format!("{V}/floatingips"), get(list_fips))
        .route(
            &format!("{V}/floatingips/{{id}}"),
            get(get_fip).put(put_fip),
        )
        .fallback(|| async { NErr::not_found("HTTPNotFound", "The resource could not be found.") })
        .method_not_allowed_fallback(|method: Method| async move {
            NErr::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTPMethodNotAllowed",
                format!("The simulator does not implement {method} on this resource."),
            )
        })
        // The last layer runs first: faults act before authentication.
        .layer(middleware::from_fn_with_state(sim.clone(), authenticate))
        .layer(middleware::from_fn_with_state(sim.clone(), front_door))
        .with_state(sim)
}

/// Injected faults that act before Keystone or Neutron sees the request. A Neutron write is a
/// mutation (for `mutations_only` triggers); getting a token is not.
pub(crate) async fn front_door(State(sim): Sim, req: Request, next: Next) -> Response {
    let neutron = req.uri().path().starts_with("/network");
    let is_mutation = neutron && req.method() != Method::GET && req.method() != Method::HEAD;
    let (delay, door) = lock(&sim.faults).door(is_mutation);
    if door == Door::Drop && delay.is_zero() {
        return dropped();
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let base = base_url(&sim, req.headers());
    let fail = |status: StatusCode, message: &str| -> Response {
        if neutron {
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                "HTTPTooManyRequests"
            } else {
                "HTTPServiceUnavailable"
            };
            NErr::new(status, kind, message).into_response()
        } else {
            keystone::error_response(status, message, &base)
        }
    };
    match door {
        Door::Pass => {
            let mut r = next.run(req).await;
            // Every OpenStack service tags its answers with a request id.
            let id = format!("req-{}", uuid::Uuid::new_v4());
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert("x-openstack-request-id", v);
            }
            r
        }
        Door::Drop => dropped(),
        Door::Unavailable => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable (simulated).",
        ),
        Door::RateLimited { retry_after_secs } => {
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests (simulated).",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
    }
}

/// keystonemiddleware: every `/v2.0` request needs a valid project-scoped token.
async fn authenticate(State(sim): Sim, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/network" || path == "/network/" {
        return next.run(req).await;
    }
    let caller = req
        .headers()
        .get(X_AUTH_TOKEN)
        .and_then(|h| h.to_str().ok())
        .and_then(|t| sim.caller(t));
    let Some(caller) = caller else {
        tracing::debug!(
            "neutron: {} {}: no valid token",
            req.method(),
            req.uri().path()
        );
        return keystone::error_response(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
            &base_url(&sim, req.headers()),
        );
    };
    let key = format!("user {} project {}", caller.user, caller.project);
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(CallerKey(key));
    resp
}

async fn versions(State(sim): Sim, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    json_response(
        StatusCode::OK,
        &json!({"versions": [{
            "id": "v2.0", "status": "CURRENT",
            "links": [{"rel": "self", "href": format!("{base}/network/v2.0/")}],
        }]}),
    )
}

async fn resources(State(sim): Sim, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    let items: Vec<Value> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
        ("security_group", "security-groups"),
    ]
    .iter()
    .map(|(name, collection)| {
        json!({
            "name": name, "collection": collection.replace('-', "_"),
            "links": [{"rel": "self", "href": format!("{base}/network/v2.0/{collection}")}],
        })
    })
    .collect();
    json_response(StatusCode::OK, &json!({ "resources": items }))
}

fn extension_json(e: &super::ExtensionInfo) -> Value {
    json!({
        "alias": e.alias, "name": e.name, "description": e.description,
        "updated": e.updated, "links": [],
    })
}

async fn list_extensions(State(sim): Sim) -> Response {
    let world = sim.world();
    let items: Vec<Value> = NEUTRON_EXTENSIONS
        .iter()
        .filter(|e| world.extension(e.alias))
        .map(extension_json)
        .collect();
    json_response(StatusCode::OK, &json!({ "extensions": items }))
}

async fn get_extension(State(sim): Sim, Path(alias): Path<String>) -> Response {
    let world = sim.world();
    match NEUTRON_EXTENSIONS
        .iter()
        .find(|e| e.alias == alias && world.extension(e.alias))
    {
        Some(e) => json_response(StatusCode::OK, &json!({ "extension": extension_json(e) })),
        None => NErr::not_found(
            "HTTPNotFound",
            format!("Extension with alias {alias} does not exist"),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Resource shapes

fn owner(project: &str) -> (Value, Value) {
    (json!(project), json!(project))
}

fn network_json(world: &World, n: &Network) -> Value {
    let (tenant, project) = owner(&n.project);
    json!({
        "id": n.id, "name": n.name, "tenant_id": tenant, "project_id": project,
        "status": "ACTIVE", "admin_state_up": true, "shared": false,
        "router:external": n.external, "is_default": false, "mtu": n.mtu,
        "subnets": world.subnets.iter().filter(|s| s.network == n.id)
            .map(|s| s.id.clone()).collect::<Vec<_>>(),
        "availability_zones": ["nova"], "availability_zone_hints": [],
        "ipv4_address_scope": null, "ipv6_address_scope": null,
        "port_security_enabled": true, "l2_adjacency": true, "description": "", "tags": [],
        "created_at": CREATED_AT, "updated_at": CREATED_AT, "revision_number": 1,
    })
}

fn subnet_json(s: &Subnet) -> Value {
    let (tenant, project) = owner(&s.project);
    let pools: Vec<Value> = s
        .cidr
        .default_pool(s.gateway_ip)
        .map(|(a, b)| json!({"start": a.to_string(), "end": b.to_string()}))
        .into_iter()
        .collect();
    json!({
        "id": s.id, "name": s.name, "network_id": s.network,
        "tenant_id": tenant, "project_id": project,
        "ip_version": if s.cidr.addr.is_ipv4() { 4 } else { 6 },
        "cidr": format!("{}/{}", s.cidr.network(), s.cidr.prefix),
        "gateway_ip": s.gateway_ip.map(|g| g.to_string()),
        "allocation_pools": pools, "enable_dhcp": true, "dns_nameservers": [], "host_routes": [],
        "ipv6_ra_mode": null, "ipv6_address_mode": null, "subnetpool_id": null,
        "service_types": [], "description": "", "tags": [],
        "created_at": CREATED_AT, "updated_at": CREATED_AT, "revision_number": 0,
    })
}

fn router_json(world: &World, r: &OsRouter) -> Value {
    let (tenant, project) = owner(&r.project);
    let gateway = r.gateway.as_ref().map(|(net, ip)| {
        let fixed: Vec<Value> = ip
            .iter()
            .map(|ip| {
                let subnet = world
                    .subnets
                    .iter()
                    .find(|s| &s.network == net && s.cidr.contains(*ip))
                    .map(|s| s.id.clone());
                json!({"subnet_id": subnet, "ip_address": ip.to_string()})
            })
            .collect();
        json!({"network_id": net, "enable_snat": true, "external_fixed_ips": fixed})
    });
    json!({
        "id": r.id, "name": r.name, "tenant_id": tenant, "project_id": project,
        "status": "ACTIVE", "admin_state_up": true, "external_gateway_info": gateway,
        "routes": [], "availability_zones": ["nova"], "availability_zone_hints": [],
        "flavor_id": null, "description": "", "tags": [],
        "created_at": CREATED_AT, "updated_at": CREATED_AT, "revision_number": 3,
    })
}

fn security_group_json(g: &SecurityGroup) -> Value {
    let (tenant, project) = owner(&g.project);
    let rule = |ethertype: &str, n: u32| {
        json!({
            "id": format!("{}{n:03}", &g.id[..g.id.len() - 3]),
            "security_group_id": g.id, "tenant_id": g.project, "project_id": g.project,
            "direction": "egress", "ethertype": ethertype, "protocol": null,
            "port_range_min": null, "port_range_max": null, "remote_ip_prefix": null,
            "remote_group_id": null, "remote_address_group_id": null, "normalized_cidr": null,
            "description": "", "tags": [], "created_at": CREATED_AT, "updated_at": CREATED_AT,
            "revision_number": 0,
        })
    };
    json!({
        "id": g.id, "name": g.name, "tenant_id": tenant, "project_id": project,
        "description": g.description, "stateful": true, "shared": false,
        // Neutron's default egress rules; ingress rules are not simulated.
        "security_group_rules": [rule("IPv4", 1), rule("IPv6", 2)],
        "tags": [], "created_at": CREATED_AT, "updated_at": CREATED_AT, "revision_number": 1,
    })
}

fn port_json(world: &World, p: &Port) -> Value {
    let (tenant, project) = owner(&p.project);
    let mut v = json!({
        "id": p.id, "name": p.name, "network_id": p.network,
        "tenant_id": tenant, "project_id": project, "mac_address": p.mac.to_string(),
        "admin_state_up": p.admin_state_up, "status": p.status(),
        "device_id": p.device_id, "device_owner": p.device_owner,
        "fixed_ips": p.fixed_ips.iter()
            .map(|(s, ip)| json!({"subnet_id": s, "ip_address": ip.to_string()}))
            .collect::<Vec<_>>(),
        "security_groups": p.security_groups, "extra_dhcp_opts": [],
        "description": p.description, "binding:vnic_type": "normal",
        "port_security_enabled": true, "dns_name": "", "qos_policy_id": null,
        "qos_network_policy_id": null, "propagate_uplink_status": false, "tags": [],
        "created_at": CREATED_AT, "updated_at": p.updated_at, "revision_number": p.revision,
    });
    if world.extension(EXT_PAIRS) {
        v["allowed_address_pairs"] = p
            .pairs
            .iter()
            .map(|a| json!({"ip_address": a.ip_address, "mac_address": a.mac.to_string()}))
            .collect();
    }
    v
}

fn fip_json(world: &World, f: &FloatingIp) -> Value {
    let (tenant, project) = owner(&f.project);
    let mut v = json!({
        "id": f.id, "tenant_id": tenant, "project_id": project,
        "floating_ip_address": f.address.to_string(), "floating_network_id": f.network,
        "router_id": f.router, "port_id": f.port,
        "fixed_ip_address": f.fixed_ip.map(|a| a.to_string()),
        "status": f.status, "description": f.description, "tags": [], "port_forwardings": [],
        "qos_policy_id": null, "created_at": CREATED_AT, "updated_at": f.updated_at,
        "revision_number": f.revision,
    });
    if world.extension(EXT_PORT_DETAILS) {
        v["port_details"] = match f.port.as_deref().and_then(|p| world.port(p)) {
            Some(p) => json!({
                "name": p.name, "network_id": p.network, "mac_address": p.mac.to_string(),
                "admin_state_up": p.admin_state_up, "status": p.status(),
                "device_id": p.device_id, "device_owner": p.device_owner,
            }),
            None => Value::Null,
        };
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Listing: filters, sorting, pagination, fields

const NETWORK_FILTERS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "status",
    "admin_state_up",
    "shared",
    "router:external",
    "is_default",
    "mtu",
    "description",
    "revision_number",
    "port_security_enabled",
];
const SUBNET_FILTERS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "tenant_id",
    "project_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "enable_dhcp",
    "description",
    "revision_number",
    "subnetpool_id",
    "ipv6_ra_mode",
    "ipv6_address_mode",
];
const ROUTER_FILTERS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "status",
    "admin_state_up",
    "description",
    "revision_number",
    "flavor_id",
];
const SECURITY_GROUP_FILTERS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "description",
    "revision_number",
    "stateful",
    "shared",
];
const PORT_FILTERS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "tenant_id",
    "project_id",
    "mac_address",
    "admin_state_up",
    "status",
    "device_id",
    "device_owner",
    "description",
    "revision_number",
    "binding:vnic_type",
    "port_security_enabled",
    "dns_name",
    "qos_policy_id",
];
const FIP_FILTERS: &[&str] = &[
    "id",
    "tenant_id",
    "project_id",
    "floating_ip_address",
    "floating_network_id",
    "router_id",
    "port_id",
    "fixed_ip_address",
    "status",
    "description",
    "revision_number",
    "qos_policy_id",
];
/// Tag filters exist on every resource; nothing here has tags.
const TAG_FILTERS: &[&str] = &["tags", "tags-any", "not-tags", "not-tags-any"];
fn parse_bool(v: &str) -> Result<bool, NErr> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
        _ => Err(NErr::new(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            format!("Invalid input for operation: '{v}' cannot be converted to boolean."),
        )),
    }
}

/// Whether `item[key]` equals one of `values` (converted to the attribute's type).
fn matches(item: &Value, key: &str, values: &[String]) -> Result<bool, NErr> {
    let Some(have) = item.get(key) else {
        return Ok(false);
    };
    for v in values {
        let hit = match have {
            Value::String(s) => s == v,
            Value::Bool(b) => parse_bool(v)? == *b,
            Value::Number(n) => match v.parse::<i64>() {
                Ok(x) => n.as_i64() == Some(x),
                Err(_) => {
                    return Err(NErr::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidInput",
                        format!("Invalid input for operation: '{v}' is not an integer."),
                    ))
                }
            },
            _ => false,
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Keeps only `fields` (unknown names are ignored, as Neutron does).
fn project_fields(item: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return item;
    }
    match item {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect(),
        ),
        other => other,
    }
}

/// Filters, sorts, pages and trims `items` per the query; `special` has already handled (and
/// removed) the resource's own non-scalar filters.
fn finish_list(
    items: Vec<Value>,
    query: &[(String, String)],
    filters: &[&str],
    collection: &str,
    base: &str,
) -> Result<Value, NErr> {
    let mut fields: Vec<String> = Vec::new();
    let mut sort_keys: Vec<String> = Vec::new();
    let mut sort_dirs: Vec<String> = Vec::new();
    let mut limit: Option<usize> = None;
    let mut marker: Option<String> = None;
    let mut page_reverse = false;
    let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in query {
        match k.as_str() {
            "fields" => {
                if !v.is_empty() {
                    fields.push(v.clone())
                }
            }
            "sort_key" => sort_keys.push(v.clone()),
            "sort_dir" => sort_dirs.push(v.clone()),
            "limit" => {
                let n = v.parse::<usize>().map_err(|_| {
                    NErr::new(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!(
                            "Bad limit request: Limit must be an integer 0 or greater and not \
                             '{v}'."
                        ),
                    )
                })?;
                limit = (n > 0).then_some(n);
            }
            "marker" => marker = Some(v.clone()),
            "page_reverse" => page_reverse = parse_bool(v)?,
            key if filters.contains(&key) || TAG_FILTERS.contains(&key) => {
                if v.is_empty() {
                    continue;
                }
                match wanted.iter_mut().find(|(k, _)| k == key) {
                    Some((_, vs)) => vs.push(v.clone()),
                    None => wanted.push((key.to_string(), vec![v.clone()])),
                }
            }
            key => {
                return Err(NErr::bad_request(format!(
                    "[{key}] is invalid attribute for filtering"
                )))
            }
        }
    }

    let mut out = Vec::new();
    for item in items {
        let mut keep = true;
        for (k, vs) in &wanted {
            keep = match k.as_str() {
                "tags" | "tags-any" => false,
                "not-tags" | "not-tags-any" => true,
                _ => matches(&item, k, vs)?,
            };
            if !keep {
                break;
            }
        }
        if keep {
            out.push(item);
        }
    }

    if sort_keys.len() != sort_dirs.len() {
        return Err(NErr::bad_request(
            "The number of sort_keys and sort_dirs must be same",
        ));
    }
    if let Some(k) = sort_keys.iter().find(|k| !filters.contains(&k.as_str())) {
        return Err(NErr::bad_request(format!(
            "[{k}] is invalid attribute for sort_keys"
        )));
    }
    if let Some(d) = sort_dirs.iter().find(|d| *d != "asc" && *d != "desc") {
        return Err(NErr::bad_request(format!(
            "[{d}] is invalid value for sort_dirs, valid value is 'asc' and 'desc'"
        )));
    }
    if !sort_keys.is_empty() {
        out.sort_by(|a, b| {
            for (k, d) in sort_keys.iter().zip(&sort_dirs) {
                let o = compare(&a[k.as_str()], &b[k.as_str()]);
                let o = if d == "desc" { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }

    let mut links: Option<Vec<Value>> = None;
    if let Some(limit) = limit {
        // An unknown marker gives an empty page, as Neutron's emulated pagination does.
        let pos = marker.as_ref().map(|m| {
            out.iter()
                .position(|i| i["id"].as_str() == Some(m.as_str()))
                .unwrap_or(out.len())
        });
        let page: Vec<Value> = if page_reverse {
            let end = pos.unwrap_or(out.len());
            out[end.saturating_sub(limit)..end].to_vec()
        } else {
            let start = pos.map(|p| (p + 1).min(out.len())).unwrap_or(0);
            out[start..(start + limit).min(out.len())].to_vec()
        };
        let link = |rel: &str, marker: Option<&Value>, reverse: bool| {
            let mut params: Vec<(String, String)> = query
                .iter()
                .filter(|(k, _)| k != "marker" && k != "page_reverse")
                .cloned()
                .collect();
            if let Some(m) = marker.and_then(|m| m["id"].as_str()) {
                params.push(("marker".into(), m.to_string()));
            }
            if reverse {
                params.push(("page_reverse".into(), "True".into()));
            }
            let q: Vec<String> = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        percent_encoding::utf8_percent_encode(k, QUERY),
                        percent_encoding::utf8_percent_encode(v, QUERY)
                    )
                })
                .collect();
            json!({
                "rel": rel,
                "href": format!("{base}/network/v2.0/{collection}?{}", q.join("&")),
            })
        };
        let mut l = Vec::new();
        // Neutron's rule: a short page ends the listing in its direction.
        if page.len() >= limit || page_reverse {
            l.push(link("next", page.last(), false));
        }
        if page.len() >= limit || !page_reverse {
            l.push(link("previous", page.first(), true));
        }
        links = Some(l);
        out = page;
    }

    let items: Vec<Value> = out
        .into_iter()
        .map(|i| project_fields(i, &fields))
        .collect();
    let key = collection.replace('-', "_");
    let mut body = Map::new();
    body.insert(key.clone(), Value::Array(items));
    if let Some(l) = links {
        body.insert(format!("{key}_links"), Value::Array(l));
    }
    Ok(Value::Object(body))
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn list_response(
    items: Vec<Value>,
    query: &[(String, String)],
    filters: &[&str],
    collection: &str,
    base: &str,
) -> Response {
    match finish_list(items, query, filters, collection, base) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

fn one_response(key: &str, item: Option<Value>, query: &[(String, String)], err: NErr) -> Response {
    match item {
        Some(v) => {
            let fields: Vec<String> = query
                .iter()
                .filter(|(k, v)| k == "fields" && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect();
            json_response(StatusCode::OK, &json!({ key: project_fields(v, &fields) }))
        }
        None => err.into_response(),
    }
}

async fn list_networks(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let world = sim.world();
    let items = world
        .networks
        .iter()
        .filter(|n| visible_network(n, &caller.project))
        .map(|n| network_json(&world, n))
        .collect();
    list_response(
        items,
        &query,
        NETWORK_FILTERS,
        "networks",
        &base_url(&sim, &headers),
    )
}

async fn get_network(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .networks
        .iter()
        .find(|n| n.id == id && visible_network(n, &caller.project))
        .map(|n| network_json(&world, n));
    one_response(
        "network",
        item,
        &parse_query(q.as_deref()),
        NErr::not_found(
            "NetworkNotFound",
            format!("Network {id} could not be found."),
        ),
    )
}

fn visible_subnet(world: &World, s: &Subnet, project: &str) -> bool {
    s.project == project
        || world
            .network(&s.network)
            .is_some_and(|n| visible_network(n, project))
}

async fn list_subnets(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let world = sim.world();
    let items = world
        .subnets
        .iter()
        .filter(|s| visible_subnet(&world, s, &caller.project))
        .map(subnet_json)
        .collect();
    list_response(
        items,
        &query,
        SUBNET_FILTERS,
        "subnets",
        &base_url(&sim, &headers),
    )
}

async fn get_subnet(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .subnets
        .iter()
        .find(|s| s.id == id && visible_subnet(&world, s, &caller.project))
        .map(subnet_json);
    one_response(
        "subnet",
        item,
        &parse_query(q.as_deref()),
        NErr::not_found("SubnetNotFound", format!("Subnet {id} could not be found.")),
    )
}

async fn list_routers(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let world = sim.world();
    let items = world
        .routers
        .iter()
        .filter(|r| r.project == caller.project)
        .map(|r| router_json(&world, r))
        .collect();
    list_response(
        items,
        &query,
        ROUTER_FILTERS,
        "routers",
        &base_url(&sim, &headers),
    )
}

async fn get_router(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .routers
        .iter()
        .find(|r| r.id == id && r.project == caller.project)
        .map(|r| router_json(&world, r));
    one_response(
        "router",
        item,
        &parse_query(q.as_deref()),
        NErr::not_found("RouterNotFound", format!("Router {id} could not be found")),
    )
}

async fn list_security_groups(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let world = sim.world();
    let items = world
        .security_groups
        .iter()
        .filter(|g| g.project == caller.project)
        .map(security_group_json)
        .collect();
    list_response(
        items,
        &query,
        SECURITY_GROUP_FILTERS,
        "security-groups",
        &base_url(&sim, &headers),
    )
}

async fn get_security_group(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .security_groups
        .iter()
        .find(|g| g.id == id && g.project == caller.project)
        .map(security_group_json);
    one_response(
        "security_group",
        item,
        &parse_query(q.as_deref()),
        NErr::not_found(
            "SecurityGroupNotFound",
            format!("Security group {id} does not exist"),
        ),
    )
}

/// `fixed_ips=ip_address=…` / `subnet_id=…` / `ip_address_substr=…` values, grouped by key.
#[derive(Default)]
struct FixedIpFilter {
    ip_address: Vec<String>,
    subnet_id: Vec<String>,
    ip_address_substr: Vec<String>,
}

impl FixedIpFilter {
    fn parse(values: &[String]) -> Result<FixedIpFilter, NErr> {
        let mut f = FixedIpFilter::default();
        for v in values {
            let Some((k, val)) = v.split_once('=') else {
                return Err(NErr::bad_request(format!(
                    "Invalid input for fixed_ips. Reason: '{v}' is not of the form <key>=[value]."
                )));
            };
            match k {
                "ip_address" => f.ip_address.push(val.to_string()),
                "subnet_id" => f.subnet_id.push(val.to_string()),
                "ip_address_substr" => f.ip_address_substr.push(val.to_string()),
                _ => {
                    return Err(NErr::bad_request(format!(
                        "Invalid input for fixed_ips. Reason: '{k}' is not a valid fixed IP \
                         filter (ip_address, subnet_id, ip_address_substr)."
                    )))
                }
            }
        }
        Ok(f)
    }

    /// One of the port's fixed IPs satisfies every given key.
    fn matches(&self, p: &Port) -> bool {
        p.fixed_ips.iter().any(|(subnet, ip)| {
            let ip = ip.to_string();
            (self.ip_address.is_empty() || self.ip_address.contains(&ip))
                && (self.subnet_id.is_empty() || self.subnet_id.contains(subnet))
                && (self.ip_address_substr.is_empty()
                    || self
                        .ip_address_substr
                        .iter()
                        .any(|s| ip.contains(s.as_str())))
        })
    }
}

async fn list_ports(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let mut query = parse_query(q.as_deref());
    let world = sim.world();
    let take = |query: &mut Vec<(String, String)>, key: &str| -> Vec<String> {
        let vals = query
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        query.retain(|(k, _)| k != key);
        vals
    };
    let fixed = match FixedIpFilter::parse(&take(&mut query, "fixed_ips")) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let groups = take(&mut query, "security_groups");
    let filter_groups = !groups.is_empty() && world.extension(EXT_SG_FILTER);
    if !groups.is_empty() && !filter_groups {
        tracing::debug!("neutron: security_groups filter ignored (extension off)");
    }
    let items = world
        .ports
        .iter()
        .filter(|p| p.project == caller.project)
        .filter(|p| fixed.matches(p))
        .filter(|p| !filter_groups || p.security_groups.iter().any(|g| groups.contains(g)))
        .map(|p| port_json(&world, p))
        .collect();
    list_response(
        items,
        &query,
        PORT_FILTERS,
        "ports",
        &base_url(&sim, &headers),
    )
}

async fn get_port(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .ports
        .iter()
        .find(|p| p.id == id && p.project == caller.project)
        .map(|p| port_json(&world, p));
    one_response(
        "port",
        item,
        &parse_query(q.as_deref()),
        port_not_found(&id),
    )
}

fn port_not_found(id: &str) -> NErr {
    NErr::not_found("PortNotFound", format!("Port {id} could not be found."))
}

fn fip_not_found(id: &str) -> NErr {
    NErr::not_found(
        "FloatingIPNotFound",
        format!("Floating IP {id} could not be found"),
    )
}

async fn list_fips(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let world = sim.world();
    let items = world
        .fips
        .iter()
        .filter(|f| f.project == caller.project)
        .map(|f| fip_json(&world, f))
        .collect();
    list_response(
        items,
        &query,
        FIP_FILTERS,
        "floatingips",
        &base_url(&sim, &headers),
    )
}

async fn get_fip(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let world = sim.world();
    let item = world
        .fips
        .iter()
        .find(|f| f.id == id && f.project == caller.project)
        .map(|f| fip_json(&world, f));
    one_response(
        "floatingip",
        item,
        &parse_query(q.as_deref()),
        fip_not_found(&id),
    )
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Runs a mutation the way the real API does it: `op_delay` first (the API's own latency),
/// then the change, in a task of its own so that a client that gives up does not stop it; a
/// `response_lost` fault then closes the connection instead of answering a success.
async fn mutate<F>(sim: &Arc<OsSim>, change: F) -> Response
where
    F: FnOnce(&OsSim) -> Response + Send + 'static,
{
    let delay = lock(&sim.faults).faults.op_delay;
    let task_sim = sim.clone();
    let mut shutdown = sim.shutdown.clone();
    let task = tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|down| *down) => return dropped(),
            }
        }
        change(&task_sim)
    });
    let resp = match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("neutron: a mutation failed: {e}");
            NErr::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "HTTPInternalServerError",
                "Request Failed: internal server error while processing your request.",
            )
            .into_response()
        }
    };
    if resp.status().is_success() && lock(&sim.faults).response_lost() {
        tracing::debug!("neutron: answer to a successful mutation lost (fault)");
        return dropped();
    }
    resp
}

/// `If-Match: revision_number=N` (WebOb entity tags, quoted or not); other tags are ignored.
fn parse_if_match(headers: &HeaderMap) -> Result<Option<u64>, NErr> {
    let mut found = None;
    for h in headers.get_all(IF_MATCH) {
        let Ok(text) = h.to_str() else {
            return Err(NErr::bad_request("Invalid If-Match header."));
        };
        for tag in text.split(',') {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            let tag = tag.trim_matches('"');
            if let Some(n) = tag.strip_prefix("revision_number=") {
                if found.is_some() {
                    return Err(NErr::bad_request(
                        "Multiple revision_number etags are not supported.",
                    ));
                }
                found = Some(n.parse::<u64>().map_err(|_| {
                    NErr::bad_request(
                        "Revision number etag must be in the format of revision_number=<int>",
                    )
                })?);
            }
        }
    }
    Ok(found)
}

fn check_revision(world: &World, wanted: Option<u64>, current: u64) -> Result<(), NErr> {
    match wanted {
        Some(n) if world.extension(EXT_IF_MATCH) && n != current => Err(NErr::new(
            StatusCode::PRECONDITION_FAILED,
            "RevisionNumberConstraintFailed",
            format!("Constrained to {n}, but current revision is {current}"),
        )),
        _ => Ok(()),
    }
}

/// The `{"<resource>": {…}}` body's inner object.
fn resource_body(body: &[u8], resource: &str) -> Result<Map<String, Value>, NErr> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| NErr::bad_request("Malformed request body"))?;
    match v.get(resource) {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(NErr::bad_request(format!(
            "Invalid input for {resource}. Reason: expected an object."
        ))),
        None => Err(NErr::bad_request(format!(
            "Unable to find '{resource}' in request body"
        ))),
    }
}

/// Rejects attributes that do not exist (400 "Unrecognized attribute(s)") or cannot be
/// updated (400 "Cannot update read-only attribute").
fn check_attributes(
    body: &Map<String, Value>,
    updatable: &[&str],
    read_only: &[&str],
) -> Result<(), NErr> {
    let unknown: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !updatable.contains(k) && !read_only.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(NErr::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    if let Some(k) = body.keys().find(|k| read_only.contains(&k.as_str())) {
        return Err(NErr::bad_request(format!(
            "Cannot update read-only attribute {k}"
        )));
    }
    Ok(())
}

fn invalid_input(attr: &str, reason: impl std::fmt::Display) -> NErr {
    NErr::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// A string attribute of at most `max` characters.
fn string_attr(body: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, NErr> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(invalid_input(
            key,
            format!("'{s}' exceeds maximum length of {max}"),
        )),
        Some(other) => Err(invalid_input(
            key,
            format!("'{other}' is not a valid string"),
        )),
    }
}

fn uuid_ok(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

const FIP_UPDATABLE: &[&str] = &["port_id", "fixed_ip_address", "description"];
const FIP_READ_ONLY: &[&str] = &[
    "id",
    "tenant_id",
    "project_id",
    "floating_ip_address",
    "floating_network_id",
    "router_id",
    "status",
    "revision_number",
    "created_at",
    "updated_at",
    "tags",
    "port_details",
    "port_forwardings",
    "subnet_id",
    "qos_policy_id",
    "dns_name",
    "dns_domain",
];

async fn put_fip(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request = match parse_if_match(&headers)
        .and_then(|m| resource_body(&body, "floatingip").map(|b| (m, b)))
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let sim2 = sim.clone();
    mutate(&sim2, move |sim| {
        match update_fip(sim, &caller, &id, request.0, request.1) {
            Ok(v) => json_response(StatusCode::OK, &json!({ "floatingip": v })),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// What a floating IP update asks for.
enum FipTarget {
    Keep,
    Dissociate,
    Associate(String, Option<IpAddr>),
}

fn update_fip(
    sim: &OsSim,
    caller: &Caller,
    id: &str,
    if_match: Option<u64>,
    body: Map<String, Value>,
) -> Result<Value, NErr> {
    check_attributes(&body, FIP_UPDATABLE, FIP_READ_ONLY)?;
    let port_id = match body.get("port_id") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if uuid_ok(s) => Some(Some(s.clone())),
        Some(other) => {
            return Err(invalid_input(
                "port_id",
                format!(
                    "'{}' is not a valid UUID",
                    other.as_str().unwrap_or(&other.to_string())
                ),
            ))
        }
    };
    let fixed = match body.get("fixed_ip_address") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                return Err(invalid_input(
                    "fixed_ip_address",
                    format!("'{s}' is not a valid IP address"),
                ))
            }
        },
        Some(other) => {
            return Err(invalid_input(
                "fixed_ip_address",
                format!("'{other}' is not a valid IP address"),
            ))
        }
    };
    let description = string_attr(&body, "description", 255)?;
    let target = match port_id {
        // `{"floatingip": {}}` dissociates (the api-ref's "omit it"); a non-empty body
        // without port_id keeps the association (Launchpad #1610045).
        None if body.is_empty() => FipTarget::Dissociate,
        None => FipTarget::Keep,
        Some(None) => FipTarget::Dissociate,
        Some(Some(p)) => FipTarget::Associate(p, fixed),
    };
    if fixed.is_some() && !matches!(target, FipTarget::Associate(..)) {
        return Err(NErr::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Bad floatingip request: fixed_ip_address cannot be specified without a port_id.",
        ));
    }

    let mut guard = sim.world();
    let world = &mut *guard;
    let idx = world
        .fips
        .iter()
        .position(|f| f.id == id && f.project == caller.project)
        .ok_or_else(|| fip_not_found(id))?;
    let fip = world.fips[idx].clone();
    let assoc_error = |e: super::AssocError| {
        NErr::new(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.kind,
            e.message,
        )
    };
    let assoc = match &target {
        // Neutron derives the association again from the port alone, so a port that has
        // gained a second IPv4 address makes even a description update fail (l3_db.py).
        FipTarget::Keep => match &fip.port {
            Some(p) => Some(world.association(&fip, p, None).map_err(assoc_error)?),
            None => None,
        },
        FipTarget::Dissociate => None,
        FipTarget::Associate(port, fixed) => {
            Some(world.association(&fip, port, *fixed).map_err(assoc_error)?)
        }
    };
    check_revision(world, if_match, fip.revision)?;
    let record_before = crate::openstack::record_from_description(&fip.description);
    if let Some(d) = description {
        world.fips[idx].description = d;
    }
    let old = fip
        .port
        .as_deref()
        .and_then(|p| world.port(p))
        .map(Port::holder);
    sim.set_association(world, idx, assoc, old, false);
    // A new claim record (exoip's token in the description) goes on the timeline after the
    // holder change it came with.
    if let Some(record) = crate::openstack::record_from_description(&world.fips[idx].description)
        .filter(|r| Some(r) != record_before.as_ref())
    {
        sim.record_claim(world, idx, &record);
    }
    Ok(fip_json(world, &world.fips[idx]))
}

const PORT_UPDATABLE: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "device_id",
    "device_owner",
    "security_groups",
    "allowed_address_pairs",
    "port_security_enabled",
    "fixed_ips",
    "mac_address",
];
const PORT_READ_ONLY: &[&str] = &[
    "id",
    "network_id",
    "tenant_id",
    "project_id",
    "status",
    "revision_number",
    "created_at",
    "updated_at",
    "tags",
    "extra_dhcp_opts",
    "binding:vnic_type",
    "binding:host_id",
    "binding:profile",
    "binding:vif_type",
    "binding:vif_details",
    "dns_name",
    "dns_assignment",
    "qos_policy_id",
    "qos_network_policy_id",
    "propagate_uplink_status",
];

async fn put_port(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request =
        match parse_if_match(&headers).and_then(|m| resource_body(&body, "port").map(|b| (m, b))) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
    let sim2 = sim.clone();
    mutate(&sim2, move |sim| {
        match update_port(sim, &caller, &id, request.0, request.1) {
            Ok(v) => json_response(StatusCode::OK, &json!({ "port": v })),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// Validates `allowed_address_pairs` as neutron-lib does; `None` MACs are filled later.
fn parse_pairs(v: &Value) -> Result<Vec<(String, Option<Mac>)>, NErr> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => {
            return Err(NErr::bad_request(format!(
                "Allowed address pairs must be a list, not '{other}'."
            )))
        }
    };
    if list.len() > MAX_ADDRESS_PAIRS {
        return Err(NErr::new(
            StatusCode::BAD_REQUEST,
            "AllowedAddressPairExhausted",
            format!("The number of allowed address pair exceeds the maximum {MAX_ADDRESS_PAIRS}."),
        ));
    }
    let mut out: Vec<(String, Option<Mac>)> = Vec::new();
    for pair in list {
        let Value::Object(m) = pair else {
            return Err(NErr::bad_request(format!(
                "Allowed address pair {pair} must be a dict."
            )));
        };
        let mac = match m.get("mac_address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Mac::from_str(s).map_err(NErr::bad_request)?),
            Some(other) => {
                return Err(NErr::bad_request(format!(
                    "'{other}' is not a valid MAC address"
                )))
            }
        };
        let ip = match m.get("ip_address") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(NErr::new(
                    StatusCode::BAD_REQUEST,
                    "AllowedAddressPairsMissingIP",
                    "AllowedAddressPair must contain ip_address",
                ))
            }
        };
        if out.iter().any(|(i, m)| i == &ip && *m == mac) {
            return Err(NErr::new(
                StatusCode::BAD_REQUEST,
                "DuplicateAddressPairInRequest",
                format!(
                    "Request contains duplicate address pair: mac_address {} ip_address {ip}.",
                    mac.map(|m| m.to_string()).unwrap_or_else(|| "None".into())
                ),
            ));
        }
        let extra: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "ip_address" && *k != "mac_address")
            .collect();
        if !extra.is_empty() {
            return Err(NErr::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                extra.join(", ")
            )));
        }
        let cidr = Cidr::from_str(&ip).map_err(|_| {
            NErr::bad_request(if ip.contains('/') {
                format!("'{ip}' is not a valid IP subnet")
            } else {
                format!("'{ip}' is not a valid IP address")
            })
        })?;
        if ip.contains('/') && cidr.addr != cidr.network() {
            return Err(NErr::bad_request(format!(
                "'{ip}' isn't a recognized IP subnet cidr, '{}/{}' is recommended",
                cidr.network(),
                cidr.prefix
            )));
        }
        out.push((ip, mac));
    }
    Ok(out)
}

fn update_port(
    sim: &OsSim,
    caller: &Caller,
    id: &str,
    if_match: Option<u64>,
    body: Map<String, Value>,
) -> Result<Value, NErr> {
    let mut guard = sim.world();
    let world = &mut *guard;
    let pairs_on = world.extension(EXT_PAIRS);
    let updatable: Vec<&str> = PORT_UPDATABLE
        .iter()
        .copied()
        .filter(|k| pairs_on || *k != "allowed_address_pairs")
        .collect();
    check_attributes(&body, &updatable, PORT_READ_ONLY)?;
    if body.contains_key("mac_address") {
        return Err(NErr::new(
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
            "(rule:update_port and rule:update_port:mac_address) is disallowed by policy",
        ));
    }
    if body.contains_key("fixed_ips") {
        return Err(NErr::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplementedError",
            "The simulator does not support changing a port's fixed_ips.",
        ));
    }
    match body.get("port_security_enabled") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(NErr::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplementedError",
                "The simulator does not support disabling port security.",
            ))
        }
        Some(other) => {
            return Err(invalid_input(
                "port_security_enabled",
                format!("'{other}' is not a valid boolean value"),
            ))
        }
    }
    let name = string_attr(&body, "name", 255)?;
    let description = string_attr(&body, "description", 255)?;
    let device_id = string_attr(&body, "device_id", 255)?;
    let device_owner = string_attr(&body, "device_owner", 255)?;
    let admin_state_up = match body.get("admin_state_up") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(parse_bool(s)?),
        Some(other) => {
            return Err(invalid_input(
                "admin_state_up",
                format!("'{other}' is not a valid boolean value"),
            ))
        }
    };
    let groups = match body.get("security_groups") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(a)) => {
            let mut ids = Vec::new();
            for g in a {
                match g.as_str() {
                    Some(s) if uuid_ok(s) => {
                        if !ids.contains(&s.to_string()) {
                            ids.push(s.to_string())
                        }
                    }
                    _ => {
                        return Err(invalid_input(
                            "security_groups",
                            format!("'{g}' is not a valid UUID"),
                        ))
                    }
                }
            }
            Some(ids)
        }
        Some(other) => {
            return Err(invalid_input(
                "security_groups",
                format!("'{other}' is not a list"),
            ))
        }
    };
    let pairs = match body.get("allowed_address_pairs") {
        None => None,
        Some(v) => Some(parse_pairs(v)?),
    };

    let idx = world
        .ports
        .iter()
        .position(|p| p.id == id && p.project == caller.project)
        .ok_or_else(|| port_not_found(id))?;
    if let Some(groups) = &groups {
        for g in groups {
            if !world
                .security_groups
                .iter()
                .any(|x| &x.id == g && x.project == caller.project)
            {
                return Err(NErr::not_found(
                    "SecurityGroupNotFound",
                    format!("Security group {g} does not exist"),
                ));
            }
        }
    }
    check_revision(world, if_match, world.ports[idx].revision)?;
    let record_before = crate::openstack::record_from_description(&world.ports[idx].description);

    let port = &mut world.ports[idx];
    if let Some(v) = name {
        port.name = v;
    }
    if let Some(v) = description {
        port.description = v;
    }
    if let Some(v) = device_id {
        port.device_id = v;
    }
    if let Some(v) = device_owner {
        port.device_owner = v;
    }
    if let Some(v) = admin_state_up {
        port.admin_state_up = v;
    }
    if let Some(v) = groups {
        port.security_groups = v;
    }
    port.revision += 1;
    port.updated_at = neutron_time(SystemTime::now());
    let mac = port.mac;
    if let Some(pairs) = pairs {
        let pairs = pairs
            .into_iter()
            .map(|(ip_address, m)| AddressPair {
                ip_address,
                mac: m.unwrap_or(mac),
            })
            .collect();
        let changes = OsSim::replace_pairs(world, idx, pairs);
        sim.record_pairs(world, &changes, false);
    }
    // A new claim record (exoip's token in the description of a VIP port, VIP mode) goes on
    // the timeline after the holder changes written in the same request.
    if let Some(record) = crate::openstack::record_from_description(&world.ports[idx].description)
        .filter(|r| Some(r) != record_before.as_ref())
    {
        sim.record_port_claim(world, idx, &record);
    }
    Ok(port_json(world, &world.ports[idx]))
}

async fn delete_port(
    State(sim): Sim,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let sim2 = sim.clone();
    mutate(&sim2, move |sim| {
        let mut world = sim.world();
        let Some(port) = world
            .ports
            .iter()
            .find(|p| p.id == id && p.project == caller.project)
        else {
            return port_not_found(&id).into_response();
        };
        if port.device_owner == "network:router_interface" {
            return NErr::new(
                StatusCode::CONFLICT,
                "L3PortInUse",
                format!(
                    "Port {id} has owner network:router_interface and therefore cannot be \
                     deleted directly via the port API."
                ),
            )
            .into_response();
        }
        match sim.remove_port(&mut world, &id, false) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(_) => port_not_found(&id).into_response(),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Value> {
        (1..=5)
            .map(|i| json!({"id": format!("id{i}"), "name": format!("n{}", i % 2), "n": i}))
            .collect()
    }

    #[test]
    fn filters_fields_sorting_and_pages() {
        let q = |s: &str| parse_query(Some(s));
        let f = &["id", "name", "n"];
        let v = finish_list(items(), &q("name=n1&fields=id"), f, "things", "http://h").unwrap();
        assert_eq!(
            v,
            json!({"things": [{"id": "id1"}, {"id": "id3"}, {"id": "id5"}]})
        );
        let v = finish_list(items(), &q("id=id2&id=id4"), f, "things", "http://h").unwrap();
        assert_eq!(v["things"].as_array().unwrap().len(), 2);
        let e = finish_list(items(), &q("nope=1"), f, "things", "http://h").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let v = finish_list(
            items(),
            &q("sort_key=n&sort_dir=desc&limit=2"),
            f,
            "things",
            "http://h",
        )
        .unwrap();
        assert_eq!(v["things"][0]["id"], "id5");
        let next = v["things_links"][0]["href"].as_str().unwrap();
        assert!(next.contains("marker=id4"), "{next}");
        let v = finish_list(
            items(),
            &q("sort_key=n&sort_dir=desc&limit=2&marker=id4"),
            f,
            "things",
            "http://h",
        )
        .unwrap();
        assert_eq!(v["things"][0]["id"], "id3");
        assert!(finish_list(items(), &q("n=x"), f, "t", "http://h").is_err());
    }

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_if_match(&h), Ok(None));
        h.insert(IF_MATCH, HeaderValue::from_static("revision_number=3"));
        assert_eq!(parse_if_match(&h), Ok(Some(3)));
        h.insert(IF_MATCH, HeaderValue::from_static("\"revision_number=4\""));
        assert_eq!(parse_if_match(&h), Ok(Some(4)));
        h.insert(IF_MATCH, HeaderValue::from_static("revision_number=x"));
        assert!(parse_if_match(&h).is_err());
        h.insert(
            IF_MATCH,
            HeaderValue::from_static("revision_number=1, revision_number=2"),
        );
        assert!(parse_if_match(&h).is_err());
    }

    #[test]
    fn address_pairs_validation() {
        let ok = parse_pairs(&json!([{"ip_address": "192.0.2.100"},
                                     {"ip_address": "10.0.0.0/24",
                                      "mac_address": "fa:16:3e:00:00:01"}]))
        .unwrap();
        assert_eq!(ok.len(), 2);
        for (bad, kind) in [
            (json!([{"ip_address": "nope"}]), "HTTPBadRequest"),
            (json!([{"ip_address": "192.0.2.7/24"}]), "HTTPBadRequest"),
            (
                json!([{"mac_address": "fa:16:3e:00:00:01"}]),
                "AllowedAddressPairsMissingIP",
            ),
            (
                json!([{"ip_address": "192.0.2.1"}, {"ip_address": "192.0.2.1"}]),
                "DuplicateAddressPairInRequest",
            ),
            (
                json!([{"ip_address": "192.0.2.1", "x": 1}]),
                "HTTPBadRequest",
            ),
            (
                json!((0..11)
                    .map(|i| json!({"ip_address": format!("192.0.2.{i}")}))
                    .collect::<Vec<_>>()),
                "AllowedAddressPairExhausted",
            ),
        ] {
            assert_eq!(parse_pairs(&bad).unwrap_err().kind, kind, "{bad}");
        }
    }
}

//! The OpenStack provider against a small in-test Keystone + Neutron on loopback. The server
//! checks credentials and tokens, enforces `If-Match` revisions and the floating-IP rules of
//! shared/clouds/openstack.md §8, records every request (with its token, `If-Match` and body)
//! and injects faults, so that the tests can assert the exact requests.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use exoip_providers::http::RetryPolicy;
use exoip_providers::openstack::{
    Credentials, Interface, OpenStack, OpenStackMode, OpenStackSettings, Project, User,
};
use exoip_providers::{Error, InstanceId, Provider, Secret};

const PASSWORD: &str = "correct-horse-battery";
const APP_SECRET: &str = "app-cred-secret-value";
const DROP: &str = "injected fault: drop the connection";

const SG: &str = "5b3f8a52-4d0e-4c1b-9f3a-0000000000a1";
const OTHER_SG: &str = "5b3f8a52-4d0e-4c1b-9f3a-0000000000a2";
const DUP_SG_1: &str = "5b3f8a52-4d0e-4c1b-9f3a-0000000000a3";
const DUP_SG_2: &str = "5b3f8a52-4d0e-4c1b-9f3a-0000000000a4";
const EXT: &str = "ext-net";
const FIP: &str = "203.0.113.150";
const VIP: &str = "192.0.2.100";

/// Where the catalog's endpoints point (below the server's base URL).
const PUBLIC: &str = "/networking/v2.0";
const INTERNAL: &str = "/internal/v2.0";
const REGION_TWO: &str = "/r2/v2.0";
const OVERRIDE: &str = "/override/v2.0";

#[derive(Clone)]
enum Fault {
    /// Answer with this status and `NeutronError` type instead.
    Status(u16, &'static str),
    /// Apply the request, then lose the answer (the connection drops).
    ApplyThenDrop,
    /// Another client adds an address pair to the port first (a concurrent writer).
    ConcurrentPairWrite,
}

#[derive(Clone, Debug)]
struct Seen {
    /// `METHOD /path?query` as received.
    line: String,
    token: Option<String>,
    if_match: Option<String>,
    body: Value,
    status: u16,
}

struct World {
    base: String,
    // Keystone
    lifetime: Duration,
    /// token → expiry
    tokens: HashMap<String, Instant>,
    revoked: HashSet<String>,
    /// Neutron refuses every token (a misconfigured cloud).
    refuse_all: bool,
    issued: u32,
    /// The catalog has the Neutron endpoint in RegionOne only.
    single_region: bool,
    // Neutron
    extensions: Vec<&'static str>,
    fip_port_details: bool,
    ports: Vec<Value>,
    fips: Vec<Value>,
    security_groups: Vec<Value>,
    routers: Vec<Value>,
    subnets: Vec<Value>,
    /// `(METHOD /path prefix, fault, times)`.
    faults: Vec<(String, Fault, usize)>,
    /// A body to send instead of the real one for requests starting with this prefix.
    malformed: Option<String>,
    log: Vec<Seen>,
}

fn port(
    id: &str,
    device: &str,
    network: &str,
    ips: &[(&str, &str)],
    groups: &[&str],
    mac: &str,
) -> Value {
    json!({
        "id": id, "name": format!("{id}-name"), "network_id": network, "mac_address": mac,
        "device_id": device,
        "device_owner": if device.is_empty() { "" } else { "compute:nova" },
        "fixed_ips": ips.iter().map(|(s, a)| json!({"subnet_id": s, "ip_address": a})).collect::<Vec<_>>(),
        "security_groups": groups, "allowed_address_pairs": [], "status": "ACTIVE",
        "admin_state_up": true, "revision_number": 1, "project_id": "proj-1", "tags": [],
    })
}

impl World {
    fn new() -> Self {
        let mut router_if = port(
            "port-router",
            "router-1",
            "net-priv",
            &[("sub-priv", "192.0.2.1")],
            &[],
            "fa:16:3e:00:00:01",
        );
        router_if["device_owner"] = json!("network:router_interface");
        let mut gateway = port(
            "port-gw",
            "router-1",
            EXT,
            &[("sub-ext", "203.0.113.2")],
            &[],
            "fa:16:3e:00:00:02",
        );
        gateway["device_owner"] = json!("network:router_gateway");
        let mut b = port(
            "port-b",
            "srv-b",
            "net-priv",
            &[("sub-priv", "192.0.2.11")],
            &[SG],
            "fa:16:3e:00:00:0b",
        );
        b["allowed_address_pairs"] =
            json!([{"ip_address": "192.0.2.99", "mac_address": "fa:16:3e:00:00:0b"}]);
        b["revision_number"] = json!(5);
        World {
            base: String::new(),
            lifetime: Duration::from_secs(3600),
            tokens: HashMap::new(),
            revoked: HashSet::new(),
            refuse_all: false,
            issued: 0,
            single_region: false,
            extensions: vec![
                "fip-port-details",
                "revision-if-match",
                "port-security-groups-filtering",
                "allowed-address-pairs",
                "router",
            ],
            fip_port_details: true,
            ports: vec![
                port(
                    "port-a",
                    "srv-a",
                    "net-priv",
                    &[("sub-priv", "192.0.2.10")],
                    &[SG],
                    "fa:16:3e:00:00:0a",
                ),
                b,
                // C: one port on an isolated network, one with two IPv4 addresses of which
                // only the second is on the routed subnet.
                port(
                    "port-c1",
                    "srv-c",
                    "net-iso",
                    &[("sub-iso", "198.51.100.12")],
                    &[SG],
                    "fa:16:3e:00:00:c1",
                ),
                port(
                    "port-c2",
                    "srv-c",
                    "net-priv",
                    &[("sub-priv-b", "192.0.2.140"), ("sub-priv", "192.0.2.13")],
                    &[SG],
                    "fa:16:3e:00:00:c2",
                ),
                port(
                    "port-d",
                    "srv-d",
                    "net-priv",
                    &[("sub-priv", "192.0.2.14")],
                    &[OTHER_SG],
                    "fa:16:3e:00:00:0d",
                ),
                // The VIP port: no device, in the group too.
                port(
                    "port-vip",
                    "",
                    "net-priv",
                    &[("sub-priv", VIP)],
                    &[SG],
                    "fa:16:3e:00:00:ff",
                ),
                router_if,
                gateway,
            ],
            fips: vec![
                json!({"id": "fip-1", "floating_ip_address": FIP, "floating_network_id": EXT,
                       "project_id": "proj-1", "port_id": "port-a", "fixed_ip_address": "192.0.2.10",
                       "router_id": "router-1", "status": "ACTIVE", "description": "", "tags": [],
                       "revision_number": 3}),
                json!({"id": "fip-2", "floating_ip_address": "203.0.113.151", "floating_network_id": EXT,
                       "project_id": "proj-1", "port_id": null, "fixed_ip_address": null,
                       "router_id": null, "status": "DOWN", "description": "", "tags": [],
                       "revision_number": 1}),
            ],
            security_groups: vec![
                json!({"id": SG, "name": "peers", "description": "", "security_group_rules": []}),
                json!({"id": OTHER_SG, "name": "db", "description": "", "security_group_rules": []}),
                json!({"id": DUP_SG_1, "name": "dup", "description": "", "security_group_rules": []}),
                json!({"id": DUP_SG_2, "name": "dup", "description": "", "security_group_rules": []}),
            ],
            routers: vec![
                json!({"id": "router-1", "name": "r1", "external_gateway_info": {"network_id": EXT, "enable_snat": true}}),
                json!({"id": "router-2", "name": "r2", "external_gateway_info": null}),
            ],
            subnets: vec![
                json!({"id": "sub-priv", "network_id": "net-priv", "cidr": "192.0.2.0/25", "ip_version": 4}),
                json!({"id": "sub-priv-b", "network_id": "net-priv", "cidr": "192.0.2.128/25", "ip_version": 4}),
                json!({"id": "sub-iso", "network_id": "net-iso", "cidr": "198.51.100.0/24", "ip_version": 4}),
                json!({"id": "sub-ext", "network_id": EXT, "cidr": "203.0.113.0/24", "ip_version": 4}),
            ],
            faults: Vec::new(),
            malformed: None,
            log: Vec::new(),
        }
    }

    fn fault(&mut self, prefix: &str, fault: Fault, times: usize) {
        self.faults.push((prefix.to_string(), fault, times));
    }

    fn take_fault(&mut self, line: &str) -> Option<Fault> {
        let slot = self
            .faults
            .iter_mut()
            .find(|(prefix, _, times)| *times > 0 && line.starts_with(prefix.as_str()))?;
        slot.2 -= 1;
        Some(slot.1.clone())
    }

    fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.log
            .iter()
            .filter(|s| s.line.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen(prefix).len()
    }

    fn lines(&self) -> Vec<String> {
        self.log.iter().map(|s| s.line.clone()).collect()
    }

    fn port(&self, id: &str) -> Option<&Value> {
        self.ports.iter().find(|p| p["id"] == id)
    }

    fn port_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.ports.iter_mut().find(|p| p["id"] == id)
    }

    fn fip_holder(&self, address: &str) -> Option<String> {
        let fip = self
            .fips
            .iter()
            .find(|f| f["floating_ip_address"] == address)?;
        let port = self.port(fip["port_id"].as_str()?)?;
        port["device_id"].as_str().map(str::to_string)
    }

    fn pairs(&self, port: &str) -> Value {
        self.port(port).unwrap()["allowed_address_pairs"].clone()
    }

    fn catalog(&self) -> Value {
        let b = &self.base;
        let mut network = vec![
            json!({"id": "e1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{b}/networking")}),
            json!({"id": "e2", "interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{b}/internal/v2.0/")}),
            json!({"id": "e3", "interface": "admin", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{b}/admin")}),
        ];
        if !self.single_region {
            network.push(json!({"id": "e4", "interface": "public", "region_id": "RegionTwo", "region": "RegionTwo", "url": format!("{b}/r2")}));
        }
        json!([
            {"type": "identity", "name": "keystone", "id": "s1", "endpoints": [
                {"id": "k1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{b}/identity/v3/")}]},
            {"type": "compute", "name": "neutron-lookalike", "id": "s2", "endpoints": [
                {"id": "n1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{b}/compute")}]},
            {"type": "network", "name": "neutron", "id": "s3", "endpoints": network},
        ])
    }

    /// The floating IP as Neutron shows it, `port_details` filled from the port.
    fn fip_json(&self, fip: &Value) -> Value {
        let mut v = fip.clone();
        if self.fip_port_details {
            v["port_details"] = match fip["port_id"].as_str().and_then(|p| self.port(p)) {
                Some(p) => json!({"name": p["name"], "network_id": p["network_id"],
                    "mac_address": p["mac_address"], "admin_state_up": true, "status": "ACTIVE",
                    "device_id": p["device_id"], "device_owner": p["device_owner"]}),
                None => Value::Null,
            };
        }
        v
    }

    /// Subnets with a router interface on a router whose gateway is on `network`.
    fn routed_subnets(&self, network: &str) -> HashSet<String> {
        let routers: Vec<&str> = self
            .routers
            .iter()
            .filter(|r| r["external_gateway_info"]["network_id"] == network)
            .filter_map(|r| r["id"].as_str())
            .collect();
        self.ports
            .iter()
            .filter(|p| {
                routers.contains(&p["device_id"].as_str().unwrap_or_default())
                    && p["device_owner"] == "network:router_interface"
            })
            .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f["subnet_id"].as_str().map(str::to_string))
            .collect()
    }
}

type Shared = Arc<Mutex<World>>;

fn neutron_error(code: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"NeutronError": {"type": kind, "message": message, "detail": ""}})),
    )
        .into_response()
}

fn keystone_error(code: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"error": {"code": code, "message": message, "title": "Unauthorized"}})),
    )
        .into_response()
}

fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

fn revision_check(headers: &axum::http::HeaderMap, current: &Value) -> Option<Response> {
    let value = headers.get("if-match")?.to_str().ok()?;
    let wanted: u64 = value.strip_prefix("revision_number=")?.parse().ok()?;
    let current = current["revision_number"].as_u64().unwrap();
    (wanted != current).then(|| {
        neutron_error(
            412,
            "RevisionNumberConstraintFailed",
            &format!("Constrained to {wanted}, but current revision is {current}"),
        )
    })
}

async fn handle(State(world): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return neutron_error(400, "HTTPBadRequest", "malformed JSON"),
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let line = if query.is_empty() {
        format!("{} {path}", parts.method)
    } else {
        format!("{} {path}?{query}", parts.method)
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut w = world.lock().unwrap();
    let index = w.log.len();
    w.log.push(Seen {
        line: line.clone(),
        token: header("x-auth-token"),
        if_match: header("if-match"),
        body: body.clone(),
        status: 0,
    });
    let fault = w.take_fault(&line);
    let lose_answer = matches!(fault, Some(Fault::ApplyThenDrop));
    let response = answer(&mut w, &parts, &path, &query, &body, fault);
    w.log[index].status = response.status().as_u16();
    drop(w);
    if lose_answer {
        // After the lock is released, so that the world is not poisoned.
        panic!("{DROP}");
    }
    response
}

fn answer(
    w: &mut World,
    parts: &axum::http::request::Parts,
    path: &str,
    query: &str,
    body: &Value,
    fault: Option<Fault>,
) -> Response {
    let method = parts.method.as_str();
    if path == "/meta/openstack/latest/meta_data.json" {
        return axum::Json(json!({"uuid": "srv-a", "name": "lb-a", "hostname": "lb-a",
            "project_id": "proj-1", "availability_zone": "nova", "launch_index": 0, "meta": {}}))
        .into_response();
    }
    if path == "/identity/v3/auth/tokens" && method == "POST" {
        return authenticate(w, body);
    }
    let Some(rest) = [PUBLIC, INTERNAL, REGION_TWO, OVERRIDE]
        .iter()
        .find_map(|p| path.strip_prefix(p))
    else {
        return neutron_error(404, "HTTPNotFound", "no such API");
    };
    let token = parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok());
    let valid = token.is_some_and(|t| {
        !w.refuse_all
            && !w.revoked.contains(t)
            && w.tokens.get(t).is_some_and(|exp| Instant::now() < *exp)
    });
    if !valid {
        let mut r = keystone_error(401, "The request you have made requires authentication.");
        r.headers_mut().insert(
            "www-authenticate",
            format!("Keystone uri=\"{}/identity\"", w.base)
                .parse()
                .unwrap(),
        );
        return r;
    }
    match fault {
        Some(Fault::Status(code, kind)) => {
            return neutron_error(code, kind, &format!("injected {code}"))
        }
        Some(Fault::ConcurrentPairWrite) => {
            let id = rest.trim_start_matches("/ports/").to_string();
            let port = w.port_mut(&id).unwrap();
            port["allowed_address_pairs"]
                .as_array_mut()
                .unwrap()
                .push(json!({"ip_address": "192.0.2.98", "mac_address": "fa:16:3e:00:00:98"}));
            let rev = port["revision_number"].as_u64().unwrap();
            port["revision_number"] = json!(rev + 1);
        }
        Some(Fault::ApplyThenDrop) | None => {}
    }
    if let Some(bad) = w.malformed.clone() {
        return (StatusCode::OK, bad).into_response();
    }
    neutron(w, method, rest, query, &parts.headers, body)
}

fn authenticate(w: &mut World, body: &Value) -> Response {
    let identity = &body["auth"]["identity"];
    let ok = match identity["methods"].as_array().map(|m| m.as_slice()) {
        Some([m]) if m == "password" => identity["password"]["user"]["password"] == PASSWORD,
        Some([m]) if m == "application_credential" => {
            if body["auth"].get("scope").is_some() {
                return keystone_error(401, "Application credentials cannot request a scope.");
            }
            identity["application_credential"]["secret"] == APP_SECRET
        }
        _ => return keystone_error(400, "Expecting to find identity in auth."),
    };
    if !ok {
        return keystone_error(401, "The request you have made requires authentication.");
    }
    w.issued += 1;
    let token = format!("gAAAAAB-token-{}", w.issued);
    w.tokens.insert(token.clone(), Instant::now() + w.lifetime);
    let now = SystemTime::now();
    let body = json!({"token": {
        "methods": identity["methods"],
        "user": {"id": "user-1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "proj-1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "member"}],
        "issued_at": humantime::format_rfc3339_micros(now).to_string(),
        "expires_at": humantime::format_rfc3339_micros(now + w.lifetime).to_string(),
        "catalog": w.catalog(),
    }});
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    r.headers_mut()
        .insert("x-subject-token", token.parse().unwrap());
    r
}

fn neutron(
    w: &mut World,
    method: &str,
    rest: &str,
    query: &str,
    headers: &axum::http::HeaderMap,
    body: &Value,
) -> Response {
    let q = params(query);
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let fields: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "fields")
        .map(|(_, v)| v.clone())
        .collect();
    match (method, rest) {
        ("GET", "/extensions") => axum::Json(json!({"extensions": w.extensions.iter()
            .map(|a| json!({"alias": a, "name": a, "description": "", "updated": "2018-01-01T00:00:00-00:00", "links": []}))
            .collect::<Vec<_>>()}))
        .into_response(),
        ("GET", "/ports") => {
            if get("security_groups").is_some()
                && !w.extensions.contains(&"port-security-groups-filtering")
            {
                return neutron_error(400, "HTTPBadRequest", "unknown filter security_groups");
            }
            let ports: Vec<Value> = w
                .ports
                .iter()
                .filter(|p| get("device_id").is_none_or(|d| p["device_id"] == d.as_str()))
                .filter(|p| get("network_id").is_none_or(|n| p["network_id"] == n.as_str()))
                .filter(|p| {
                    get("security_groups").is_none_or(|g| {
                        p["security_groups"].as_array().unwrap().iter().any(|x| x == g.as_str())
                    })
                })
                .filter(|p| {
                    get("fixed_ips").is_none_or(|f| {
                        let ip = f.strip_prefix("ip_address=").unwrap();
                        p["fixed_ips"].as_array().unwrap().iter().any(|x| x["ip_address"] == ip)
                    })
                })
                .map(|p| {
                    if fields.is_empty() {
                        p.clone()
                    } else {
                        let mut v = json!({});
                        for f in &fields {
                            v[f] = p[f].clone();
                        }
                        v
                    }
                })
                .collect();
            axum::Json(json!({ "ports": ports })).into_response()
        }
        ("GET", r) if r.starts_with("/ports/") => match w.port(&r["/ports/".len()..]) {
            Some(p) => axum::Json(json!({ "port": p })).into_response(),
            None => neutron_error(404, "PortNotFound", "Port could not be found."),
        },
        ("PUT", r) if r.starts_with("/ports/") => {
            let id = &r["/ports/".len()..];
            let Some(current) = w.port(id).cloned() else {
                return neutron_error(404, "PortNotFound", "Port could not be found.");
            };
            if let Some(r) = revision_check(headers, &current) {
                return r;
            }
            let Some(update) = body["port"].as_object() else {
                return neutron_error(400, "HTTPBadRequest", "Resource body required");
            };
            let mut pairs = Vec::new();
            for pair in update["allowed_address_pairs"].as_array().unwrap() {
                let text = pair["ip_address"].as_str().unwrap_or_default();
                let valid = text.parse::<IpAddr>().is_ok() || text.parse::<ipnet::IpNet>().is_ok();
                if !valid {
                    return neutron_error(400, "InvalidInput", "invalid address pair");
                }
                let mut pair = pair.clone();
                if pair.get("mac_address").is_none() {
                    pair["mac_address"] = current["mac_address"].clone();
                }
                pairs.push(pair);
            }
            let port = w.port_mut(id).unwrap();
            port["allowed_address_pairs"] = json!(pairs);
            let rev = port["revision_number"].as_u64().unwrap();
            port["revision_number"] = json!(rev + 1);
            axum::Json(json!({ "port": port })).into_response()
        }
        ("GET", "/floatingips") => {
            let fips: Vec<Value> = w
                .fips
                .iter()
                .filter(|f| {
                    get("floating_ip_address")
                        .is_none_or(|a| f["floating_ip_address"] == a.as_str())
                })
                .map(|f| w.fip_json(f))
                .collect();
            axum::Json(json!({ "floatingips": fips })).into_response()
        }
        ("PUT", r) if r.starts_with("/floatingips/") => update_fip(w, &r["/floatingips/".len()..], headers, body),
        ("GET", "/security-groups") => {
            let groups: Vec<&Value> = w
                .security_groups
                .iter()
                .filter(|g| get("name").is_none_or(|n| g["name"] == n.as_str()))
                .collect();
            axum::Json(json!({ "security_groups": groups })).into_response()
        }
        ("GET", r) if r.starts_with("/security-groups/") => {
            let id = &r["/security-groups/".len()..];
            match w.security_groups.iter().find(|g| g["id"] == id) {
                Some(g) => axum::Json(json!({ "security_group": g })).into_response(),
                None => neutron_error(404, "SecurityGroupNotFound", "Security group could not be found."),
            }
        }
        ("GET", "/routers") => axum::Json(json!({ "routers": w.routers })).into_response(),
        ("GET", "/subnets") => axum::Json(json!({ "subnets": w.subnets })).into_response(),
        _ => neutron_error(404, "HTTPNotFound", "The resource could not be found."),
    }
}

/// `PUT /v2.0/floatingips/{id}` with the rules of openstack.md §3.2–3.4.
fn update_fip(w: &mut World, id: &str, headers: &axum::http::HeaderMap, body: &Value) -> Response {
    let Some(current) = w.fips.iter().find(|f| f["id"] == id).cloned() else {
        return neutron_error(
            404,
            "FloatingIPNotFound",
            &format!("Floating IP {id} could not be found"),
        );
    };
    if let Some(r) = revision_check(headers, &current) {
        return r;
    }
    let Some(update) = body["floatingip"].as_object() else {
        return neutron_error(400, "HTTPBadRequest", "Resource body required");
    };
    if let Some(k) = update
        .keys()
        .find(|k| !["port_id", "fixed_ip_address", "description"].contains(&k.as_str()))
    {
        return neutron_error(
            400,
            "HTTPBadRequest",
            &format!("Unrecognized attribute(s) '{k}'"),
        );
    }
    let mut next = current.clone();
    // `{}` dissociates; a non-empty body without port_id keeps the association.
    let port_id = if update.is_empty() {
        Some(Value::Null)
    } else {
        update.get("port_id").cloned()
    };
    match port_id {
        None => {}
        Some(Value::Null) => {
            next["port_id"] = Value::Null;
            next["fixed_ip_address"] = Value::Null;
            next["router_id"] = Value::Null;
        }
        Some(Value::String(port_id)) => {
            let Some(port) = w.port(&port_id).cloned() else {
                return neutron_error(
                    404,
                    "PortNotFound",
                    &format!("Port {port_id} could not be found."),
                );
            };
            let v4: Vec<&Value> = port["fixed_ips"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| {
                    f["ip_address"]
                        .as_str()
                        .unwrap()
                        .parse::<IpAddr>()
                        .unwrap()
                        .is_ipv4()
                })
                .collect();
            let chosen = match update.get("fixed_ip_address").and_then(Value::as_str) {
                Some(want) => match v4.iter().find(|f| f["ip_address"] == want) {
                    Some(f) => (*f).clone(),
                    None => {
                        return neutron_error(
                            400,
                            "BadRequest",
                            "fixed_ip_address is not on the port",
                        )
                    }
                },
                None if v4.len() > 1 => return neutron_error(
                    400,
                    "BadRequest",
                    "Port has multiple fixed IPv4 addresses. Must provide a specific IPv4 address",
                ),
                None => v4[0].clone(),
            };
            let routed = w.routed_subnets(current["floating_network_id"].as_str().unwrap());
            if !routed.contains(chosen["subnet_id"].as_str().unwrap()) {
                return neutron_error(
                    404,
                    "ExternalGatewayForFloatingIPNotFound",
                    "External network is not reachable from subnet",
                );
            }
            let taken = w.fips.iter().any(|f| {
                f["id"] != id
                    && f["port_id"] == port_id.as_str()
                    && f["fixed_ip_address"] == chosen["ip_address"]
            });
            if taken {
                return neutron_error(
                    409,
                    "FloatingIPPortAlreadyAssociated",
                    "Cannot associate floating IP: the fixed IP already has a floating IP",
                );
            }
            next["port_id"] = json!(port_id);
            next["fixed_ip_address"] = chosen["ip_address"].clone();
            next["router_id"] = json!("router-1");
        }
        Some(_) => return neutron_error(400, "HTTPBadRequest", "Invalid input for port_id"),
    }
    next["revision_number"] = json!(current["revision_number"].as_u64().unwrap() + 1);
    let slot = w.fips.iter_mut().find(|f| f["id"] == id).unwrap();
    *slot = next.clone();
    axum::Json(json!({ "floatingip": w.fip_json(&next) })).into_response()
}

/// Keeps the injected connection drops (handler panics) out of the test output.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.contains(DROP));
            if !injected {
                default(info);
            }
        }));
    });
}

struct Server {
    base: String,
    world: Shared,
}

impl Server {
    async fn start(world: World) -> Server {
        quiet_injected_panics();
        let world = Arc::new(Mutex::new(world));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = format!("http://{addr}");
        world.lock().unwrap().base = base.clone();
        Server { base, world }
    }

    /// The variables of Horizon's password openrc, pointing at this server.
    fn openrc(&self) -> Vec<(String, String)> {
        [
            ("OS_AUTH_URL", format!("{}/identity/v3", self.base)),
            ("OS_PROJECT_ID", String::new()),
            ("OS_PROJECT_NAME", "demo".into()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_ID", "default".into()),
            ("OS_USERNAME", "demo".into()),
            ("OS_PASSWORD", PASSWORD.into()),
            ("OS_REGION_NAME", "RegionOne".into()),
            ("OS_INTERFACE", "public".into()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn settings_from(&self, env: &[(String, String)]) -> OpenStackSettings {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut s = OpenStackSettings::from_env(&lookup, None, &[]).unwrap();
        s.server_id = Some(InstanceId::from("srv-a"));
        s.metadata_url = format!("{}/meta", self.base);
        s.request_timeout = Duration::from_secs(2);
        s.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(5),
        };
        s
    }

    fn settings(&self) -> OpenStackSettings {
        self.settings_from(&self.openrc())
    }

    fn client(&self) -> OpenStack {
        OpenStack::new(self.settings()).unwrap()
    }

    fn vip_client(&self) -> OpenStack {
        let mut s = self.settings();
        s.mode = OpenStackMode::Vip;
        OpenStack::new(s).unwrap()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::from(s)
}

fn with(env: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    env.extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Named so that `cargo test ... openstack` selects these along with the unit tests.
mod openstack {
    use super::*;

    // ---------------------------------------------------------------------------------------------
    // Keystone

    #[tokio::test]
    async fn password_auth_by_name_and_the_token_on_every_request() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![id("srv-a")]);
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![id("srv-a")]);
        let w = server.world();
        let auths = w.seen("POST /identity/v3/auth/tokens");
        assert_eq!(auths.len(), 1, "the token is reused: {:?}", w.lines());
        assert_eq!(
            auths[0].body,
            json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})
        );
        assert_eq!(auths[0].token, None);
        let neutron = w.seen("GET /networking/v2.0/floatingips");
        assert_eq!(neutron.len(), 2, "{:?}", w.lines());
        for seen in &neutron {
            assert_eq!(
                seen.line,
                format!("GET /networking/v2.0/floatingips?floating_ip_address={FIP}")
            );
            assert_eq!(seen.token.as_deref(), Some("gAAAAAB-token-1"));
        }
    }

    #[tokio::test]
    async fn password_auth_by_ids() {
        let server = Server::start(World::new()).await;
        // Unversioned auth URL, as clouds.yaml usually has it.
        let env = with(
            &server.openrc(),
            &[
                ("OS_AUTH_URL", &format!("{}/identity/", server.base)),
                ("OS_USER_ID", "user-1"),
                ("OS_PROJECT_ID", "proj-1"),
            ],
        );
        let client = OpenStack::new(server.settings_from(&env)).unwrap();
        client.holders(ip(FIP)).await.unwrap();
        let w = server.world();
        assert_eq!(
            w.seen("POST /identity/v3/auth/tokens")[0].body,
            json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"id": "user-1", "password": PASSWORD}}},
            "scope": {"project": {"id": "proj-1"}}}})
        );
    }

    #[tokio::test]
    async fn application_credentials_send_no_scope() {
        let server = Server::start(World::new()).await;
        let base = [
            (
                "OS_AUTH_URL".to_string(),
                format!("{}/identity/v3", server.base),
            ),
            ("OS_REGION_NAME".to_string(), "RegionOne".to_string()),
            (
                "OS_APPLICATION_CREDENTIAL_SECRET".to_string(),
                APP_SECRET.to_string(),
            ),
            // Left over from an openrc: must not become a scope.
            ("OS_PROJECT_NAME".to_string(), "demo".to_string()),
        ];
        let by_id = with(
            &base,
            &[
                ("OS_AUTH_TYPE", "v3applicationcredential"),
                ("OS_APPLICATION_CREDENTIAL_ID", "3e19c26e"),
            ],
        );
        OpenStack::new(server.settings_from(&by_id))
            .unwrap()
            .holders(ip(FIP))
            .await
            .unwrap();
        let by_name = with(
            &base,
            &[
                ("OS_APPLICATION_CREDENTIAL_NAME", "exoip"),
                ("OS_USERNAME", "demo"),
                ("OS_USER_DOMAIN_NAME", "Default"),
            ],
        );
        OpenStack::new(server.settings_from(&by_name))
            .unwrap()
            .holders(ip(FIP))
            .await
            .unwrap();
        let w = server.world();
        let auths = w.seen("POST /identity/v3/auth/tokens");
        assert_eq!(auths.len(), 2);
        assert!(auths.iter().all(|a| a.status == 201), "{auths:?}");
        assert_eq!(
            auths[0].body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": "3e19c26e", "secret": APP_SECRET}}}})
        );
        assert_eq!(
            auths[1].body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"name": "exoip", "secret": APP_SECRET,
                "user": {"name": "demo", "domain": {"name": "Default"}}}}}})
        );
    }

    #[tokio::test]
    async fn bad_credentials_are_an_auth_error_without_the_secret() {
        let server = Server::start(World::new()).await;
        let env = with(&server.openrc(), &[("OS_PASSWORD", "wrong-password-value")]);
        let client = OpenStack::new(server.settings_from(&env)).unwrap();
        let e = client.holders(ip(FIP)).await.unwrap_err();
        match &e {
            Error::Auth(m) => {
                assert!(
                    m.contains("The request you have made requires authentication."),
                    "{m}"
                );
                assert!(m.contains("the OS_* variables"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.to_string().contains("wrong-password-value"), "{e}");
        assert!(!format!("{e:?}").contains("wrong-password-value"), "{e:?}");
        // Not retried: the same credentials will not do better.
        assert_eq!(server.world().count("POST /identity/v3/auth/tokens"), 1);
        assert_eq!(server.world().count("GET /networking"), 0);
    }

    #[tokio::test]
    async fn the_token_is_renewed_before_it_expires() {
        let mut world = World::new();
        world.lifetime = Duration::from_secs(2);
        let server = Server::start(world).await;
        let client = server.client();
        client.holders(ip(FIP)).await.unwrap();
        // Half the lifetime left: renewed now, before Neutron could refuse it.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        client.holders(ip(FIP)).await.unwrap();
        let w = server.world();
        assert_eq!(
            w.count("POST /identity/v3/auth/tokens"),
            2,
            "{:?}",
            w.lines()
        );
        assert!(w.log.iter().all(|s| s.status != 401), "{:?}", w.log);
        let tokens: Vec<_> = w
            .seen("GET /networking")
            .into_iter()
            .map(|s| s.token.unwrap())
            .collect();
        assert_eq!(tokens, vec!["gAAAAAB-token-1", "gAAAAAB-token-2"]);
    }

    #[tokio::test]
    async fn a_refused_token_gets_one_new_token_and_one_retry() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        client.holders(ip(FIP)).await.unwrap();
        server.world().revoked.insert("gAAAAAB-token-1".into());
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![id("srv-a")]);
        {
            let w = server.world();
            let statuses: Vec<(String, u16, Option<String>)> = w
                .log
                .iter()
                .map(|s| {
                    (
                        s.line.split('?').next().unwrap().to_string(),
                        s.status,
                        s.token.clone(),
                    )
                })
                .collect();
            let t = |n: u32| Some(format!("gAAAAAB-token-{n}"));
            assert_eq!(
                statuses,
                vec![
                    ("POST /identity/v3/auth/tokens".into(), 201, None),
                    ("GET /networking/v2.0/floatingips".into(), 200, t(1)),
                    ("GET /networking/v2.0/floatingips".into(), 401, t(1)),
                    ("POST /identity/v3/auth/tokens".into(), 201, None),
                    ("GET /networking/v2.0/floatingips".into(), 200, t(2)),
                ]
            );
        }
        // A cloud that refuses every token: one re-authentication, then an auth error.
        server.world().refuse_all = true;
        let before = server.world().log.len();
        let e = client.holders(ip(FIP)).await.unwrap_err();
        assert_eq!(e.kind(), "auth", "{e}");
        let w = server.world();
        let lines: Vec<&str> = w.log[before..].iter().map(|s| s.line.as_str()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].starts_with("POST /identity/v3/auth/tokens"),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_reauthentication() {
        let server = Server::start(World::new()).await;
        let client = Arc::new(server.client());
        client.holders(ip(FIP)).await.unwrap();
        server.world().revoked.insert("gAAAAAB-token-1".into());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move { c.holders(ip(FIP)).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), vec![id("srv-a")]);
        }
        let w = server.world();
        assert_eq!(
            w.count("POST /identity/v3/auth/tokens"),
            2,
            "{:?}",
            w.lines()
        );
    }

    #[tokio::test]
    async fn the_network_endpoint_follows_interface_region_and_override() {
        let server = Server::start(World::new()).await;
        let path_of = |client: OpenStack| async move { client.holders(ip(FIP)).await.map(|_| ()) };
        let internal = with(&server.openrc(), &[("OS_INTERFACE", "internalURL")]);
        path_of(OpenStack::new(server.settings_from(&internal)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            server.world().count(&format!("GET {INTERNAL}/floatingips")),
            1
        );
        let two = with(&server.openrc(), &[("OS_REGION_NAME", "RegionTwo")]);
        path_of(OpenStack::new(server.settings_from(&two)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            server
                .world()
                .count(&format!("GET {REGION_TWO}/floatingips")),
            1
        );
        // No region, two public endpoints: ambiguous.
        let none = with(&server.openrc(), &[("OS_REGION_NAME", "")]);
        let e = path_of(OpenStack::new(server.settings_from(&none)).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("OS_REGION_NAME")),
            "{e}"
        );
        // ... unless there is only one.
        server.world().single_region = true;
        path_of(OpenStack::new(server.settings_from(&none)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            server.world().count(&format!("GET {PUBLIC}/floatingips")),
            1
        );
        let mut s = server.settings();
        s.network_endpoint_override = Some(format!("{}/override", server.base));
        path_of(OpenStack::new(s).unwrap()).await.unwrap();
        assert_eq!(
            server.world().count(&format!("GET {OVERRIDE}/floatingips")),
            1
        );
        let mut s = server.settings();
        s.interface = Interface::Admin;
        s.region = Some("RegionTwo".into());
        let e = path_of(OpenStack::new(s).unwrap()).await.unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("interface admin in region RegionTwo")),
            "{e}"
        );
    }

    // ---------------------------------------------------------------------------------------------
    // Floating-IP mode

    #[tokio::test]
    async fn attach_moves_the_floating_ip_with_one_fenced_put() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        client.attach(ip(FIP), &id("srv-b")).await.unwrap();
        {
            let w = server.world();
            let puts = w.seen("PUT ");
            assert_eq!(puts.len(), 1, "{:?}", w.lines());
            assert_eq!(puts[0].line, "PUT /networking/v2.0/floatingips/fip-1");
            assert_eq!(puts[0].body, json!({"floatingip": {"port_id": "port-b"}}));
            assert_eq!(puts[0].if_match.as_deref(), Some("revision_number=3"));
            assert_eq!(puts[0].token.as_deref(), Some("gAAAAAB-token-1"));
            assert_eq!(w.fip_holder(FIP).as_deref(), Some("srv-b"));
            assert_eq!(w.count("GET /networking/v2.0/ports?device_id=srv-b"), 1);
        }
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![id("srv-b")]);
        // Already there: no PUT (and the port choice is cached).
        client.attach(ip(FIP), &id("srv-b")).await.unwrap();
        let w = server.world();
        assert_eq!(w.count("PUT "), 1);
        assert_eq!(w.count("GET /networking/v2.0/ports?device_id=srv-b"), 1);
    }

    #[tokio::test]
    async fn attach_picks_the_routed_port_and_fixed_ip() {
        let server = Server::start(World::new()).await;
        server.client().attach(ip(FIP), &id("srv-c")).await.unwrap();
        let w = server.world();
        let puts = w.seen("PUT ");
        assert_eq!(puts.len(), 1, "{:?}", w.lines());
        assert_eq!(
            puts[0].body,
            json!({"floatingip": {"port_id": "port-c2", "fixed_ip_address": "192.0.2.13"}})
        );
        assert_eq!(w.count("GET /networking/v2.0/routers"), 1);
        assert_eq!(w.count("GET /networking/v2.0/ports?device_id=router-1"), 1);
        assert_eq!(w.fip_holder(FIP).as_deref(), Some("srv-c"));
    }

    #[tokio::test]
    async fn several_routed_ports_need_the_port_setting() {
        let mut world = World::new();
        // Route the isolated subnet too: both of C's ports qualify.
        let mut iface = port(
            "port-router-2",
            "router-1",
            "net-iso",
            &[("sub-iso", "198.51.100.1")],
            &[],
            "fa:16:3e:00:00:03",
        );
        iface["device_owner"] = json!("network:router_interface");
        world.ports.push(iface);
        let server = Server::start(world).await;
        let e = server
            .client()
            .attach(ip(FIP), &id("srv-c"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("several ports") && m.contains("set --port")),
            "{e}"
        );
        assert_eq!(server.world().count("PUT "), 0);
        // On C itself, with --port.
        let mut s = server.settings();
        s.server_id = Some(id("srv-c"));
        s.port = Some("port-c1".into());
        OpenStack::new(s)
            .unwrap()
            .attach(ip(FIP), &id("srv-c"))
            .await
            .unwrap();
        let w = server.world();
        assert_eq!(
            w.seen("PUT ")[0].body,
            json!({"floatingip": {"port_id": "port-c1"}})
        );
        assert_eq!(w.count("GET /networking/v2.0/ports/port-c1"), 1);
    }

    #[tokio::test]
    async fn a_stale_revision_is_a_conflict() {
        let server = Server::start(World::new()).await;
        server.world().fault(
            "PUT /networking/v2.0/floatingips/",
            Fault::Status(412, "RevisionNumberConstraintFailed"),
            1,
        );
        let e = server
            .client()
            .attach(ip(FIP), &id("srv-b"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Conflict(m) if m.contains("412 RevisionNumberConstraintFailed")),
            "{e}"
        );
        let w = server.world();
        assert_eq!(w.count("PUT "), 1, "not retried blindly: {:?}", w.lines());
        // It re-read the floating IP to see whether the move had happened anyway.
        assert_eq!(w.count("GET /networking/v2.0/floatingips"), 2);
        assert_eq!(w.fip_holder(FIP).as_deref(), Some("srv-a"));
    }

    #[tokio::test]
    async fn a_lost_answer_to_a_successful_put_is_success() {
        let server = Server::start(World::new()).await;
        server
            .world()
            .fault("PUT /networking/v2.0/floatingips/", Fault::ApplyThenDrop, 1);
        server.client().attach(ip(FIP), &id("srv-b")).await.unwrap();
        let w = server.world();
        let puts = w.seen("PUT ");
        // The retry carries the same revision and gets 412: the re-read shows it done.
        assert_eq!(puts.len(), 2, "{:?}", w.lines());
        assert!(puts
            .iter()
            .all(|p| p.if_match.as_deref() == Some("revision_number=3")));
        assert_eq!(puts[1].status, 412);
        assert_eq!(w.fip_holder(FIP).as_deref(), Some("srv-b"));
    }

    #[tokio::test]
    async fn an_address_taken_by_another_floating_ip_is_a_conflict() {
        let mut world = World::new();
        world.fips[1]["port_id"] = json!("port-b");
        world.fips[1]["fixed_ip_address"] = json!("192.0.2.11");
        let server = Server::start(world).await;
        let e = server
            .client()
            .attach(ip(FIP), &id("srv-b"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Conflict(m) if m.contains("FloatingIPPortAlreadyAssociated")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn detach_only_from_the_holder_and_with_an_explicit_null() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        client.detach(ip(FIP), &id("srv-b")).await.unwrap();
        assert_eq!(
            server.world().count("PUT "),
            0,
            "not attached to B: nothing to do"
        );
        client.detach(ip(FIP), &id("srv-a")).await.unwrap();
        {
            let w = server.world();
            let puts = w.seen("PUT ");
            assert_eq!(puts.len(), 1);
            assert_eq!(puts[0].body, json!({"floatingip": {"port_id": null}}));
            assert_eq!(puts[0].if_match.as_deref(), Some("revision_number=3"));
        }
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![]);
        client.detach(ip(FIP), &id("srv-a")).await.unwrap();
        assert_eq!(server.world().count("PUT "), 1);
    }

    #[tokio::test]
    async fn holders_without_port_details_look_up_the_port() {
        let mut world = World::new();
        world.fip_port_details = false;
        world.extensions.retain(|e| *e != "fip-port-details");
        let server = Server::start(world).await;
        let client = server.client();
        assert_eq!(client.holders(ip(FIP)).await.unwrap(), vec![id("srv-a")]);
        assert_eq!(server.world().count("GET /networking/v2.0/ports/port-a"), 1);
        assert_eq!(client.holders(ip("203.0.113.151")).await.unwrap(), vec![]);
        let e = client.holders(ip("203.0.113.199")).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("203.0.113.199")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn malformed_answers_are_invalid() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        client.holders(ip(FIP)).await.unwrap();
        server.world().malformed = Some("{\"floatingips\": 12".into());
        let e = client.holders(ip(FIP)).await.unwrap_err();
        assert_eq!(e.kind(), "invalid", "{e}");
        server.world().malformed = Some("{\"unexpected\": []}".into());
        let e = client.holders(ip(FIP)).await.unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("floatingips")),
            "{e}"
        );
    }

    // ---------------------------------------------------------------------------------------------
    // VIP mode

    #[tokio::test]
    async fn vip_attach_appends_and_keeps_the_other_pairs() {
        let server = Server::start(World::new()).await;
        let client = server.vip_client();
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![]);
        client.attach(ip(VIP), &id("srv-b")).await.unwrap();
        {
            let w = server.world();
            // The VIP's network from the port that has it as a fixed IP.
            assert_eq!(
                w.count("GET /networking/v2.0/ports?fixed_ips=ip_address%3D192.0.2.100"),
                1
            );
            let puts = w.seen("PUT ");
            assert_eq!(puts.len(), 1, "{:?}", w.lines());
            assert_eq!(puts[0].line, "PUT /networking/v2.0/ports/port-b");
            assert_eq!(
                puts[0].body,
                json!({"port": {"allowed_address_pairs": [
                {"ip_address": "192.0.2.99", "mac_address": "fa:16:3e:00:00:0b"},
                {"ip_address": VIP}]}})
            );
            assert_eq!(puts[0].if_match.as_deref(), Some("revision_number=5"));
        }
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![id("srv-b")]);
        client.attach(ip(VIP), &id("srv-b")).await.unwrap();
        client.attach(ip(VIP), &id("srv-a")).await.unwrap();
        assert_eq!(
            client.holders(ip(VIP)).await.unwrap(),
            vec![id("srv-a"), id("srv-b")]
        );
        let w = server.world();
        assert_eq!(w.count("PUT "), 2, "already allowed on B: {:?}", w.lines());
        assert_eq!(
            w.count("GET /networking/v2.0/ports?fixed_ips="),
            1,
            "the network is cached"
        );
    }

    #[tokio::test]
    async fn vip_attach_rereads_after_a_concurrent_write() {
        let server = Server::start(World::new()).await;
        server.world().fault(
            "PUT /networking/v2.0/ports/port-b",
            Fault::ConcurrentPairWrite,
            1,
        );
        server
            .vip_client()
            .attach(ip(VIP), &id("srv-b"))
            .await
            .unwrap();
        let w = server.world();
        let puts = w.seen("PUT ");
        assert_eq!(puts.len(), 2, "{:?}", w.lines());
        assert_eq!(puts[0].status, 412);
        assert_eq!(puts[1].if_match.as_deref(), Some("revision_number=6"));
        assert_eq!(
            puts[1].body,
            json!({"port": {"allowed_address_pairs": [
            {"ip_address": "192.0.2.99", "mac_address": "fa:16:3e:00:00:0b"},
            {"ip_address": "192.0.2.98", "mac_address": "fa:16:3e:00:00:98"},
            {"ip_address": VIP}]}})
        );
        assert_eq!(
            w.pairs("port-b"),
            json!([
            {"ip_address": "192.0.2.99", "mac_address": "fa:16:3e:00:00:0b"},
            {"ip_address": "192.0.2.98", "mac_address": "fa:16:3e:00:00:98"},
            {"ip_address": VIP, "mac_address": "fa:16:3e:00:00:0b"}])
        );
    }

    #[tokio::test]
    async fn vip_detach_removes_only_the_vip() {
        let mut world = World::new();
        world.port_mut("port-a").unwrap()["allowed_address_pairs"] = json!([
            {"ip_address": "192.0.2.100/32", "mac_address": "fa:16:3e:00:00:0a"},
            {"ip_address": "192.0.2.0/28", "mac_address": "fa:16:3e:00:00:0a"},
            {"ip_address": VIP, "mac_address": "fa:16:3e:00:00:0a"},
        ]);
        let server = Server::start(world).await;
        let client = server.vip_client();
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![id("srv-a")]);
        client.detach(ip(VIP), &id("srv-b")).await.unwrap();
        assert_eq!(server.world().count("PUT "), 0);
        client.detach(ip(VIP), &id("srv-a")).await.unwrap();
        let w = server.world();
        let puts = w.seen("PUT ");
        assert_eq!(puts.len(), 1);
        assert_eq!(
            puts[0].body,
            json!({"port": {"allowed_address_pairs": [
            {"ip_address": "192.0.2.0/28", "mac_address": "fa:16:3e:00:00:0a"}]}})
        );
        assert_eq!(puts[0].if_match.as_deref(), Some("revision_number=1"));
    }

    #[tokio::test]
    async fn the_vip_network_from_the_vip_port_or_own_subnets() {
        let server = Server::start(World::new()).await;
        let mut s = server.settings();
        s.mode = OpenStackMode::Vip;
        s.vip_port = Some("port-vip".into());
        OpenStack::new(s.clone())
            .unwrap()
            .holders(ip(VIP))
            .await
            .unwrap();
        assert_eq!(
            server.world().count("GET /networking/v2.0/ports/port-vip"),
            1
        );
        assert_eq!(
            server
                .world()
                .count("GET /networking/v2.0/ports?fixed_ips="),
            0
        );
        // An address no port has: the network of our own subnet that contains it.
        s.vip_port = None;
        let client = OpenStack::new(s.clone()).unwrap();
        client
            .attach(ip("192.0.2.101"), &id("srv-a"))
            .await
            .unwrap();
        {
            let w = server.world();
            assert_eq!(w.count("GET /networking/v2.0/subnets"), 1);
            assert_eq!(w.seen("PUT ")[0].line, "PUT /networking/v2.0/ports/port-a");
        }
        let e = client.holders(ip("198.51.100.77")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("set --vip-port")),
            "{e}"
        );
    }

    // ---------------------------------------------------------------------------------------------
    // Who am I, and the peers

    #[tokio::test]
    async fn whoami_reads_the_uuid_from_the_metadata_service() {
        let server = Server::start(World::new()).await;
        let mut s = server.settings();
        s.server_id = None;
        let client = OpenStack::new(s).unwrap();
        let me = client.whoami().await.unwrap();
        assert_eq!(me.id, id("srv-a"));
        assert_eq!(me.name, "lb-a");
        assert_eq!(me.addresses, vec![ip("192.0.2.10")]);
        client.whoami().await.unwrap();
        let w = server.world();
        let meta = w.seen("GET /meta/openstack/latest/meta_data.json");
        assert_eq!(meta.len(), 1, "read once");
        assert_eq!(meta[0].token, None, "no token to the metadata service");
        assert_eq!(w.count("GET /networking/v2.0/ports?device_id=srv-a"), 2);
    }

    #[tokio::test]
    async fn whoami_with_a_configured_id_and_no_ports() {
        let server = Server::start(World::new()).await;
        let me = server.client().whoami().await.unwrap();
        assert_eq!(me.name, "port-a-name", "no metadata read: the port's name");
        let mut s = server.settings();
        s.server_id = Some(id("srv-unknown"));
        let e = OpenStack::new(s).unwrap().whoami().await.unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("srv-unknown")),
            "{e}"
        );
        assert_eq!(server.world().count("GET /meta"), 0);
    }

    #[tokio::test]
    async fn peers_by_security_group_with_the_filter_extension() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        let peers = client.peers(SG, &id("srv-a")).await.unwrap();
        let summary: Vec<(String, Vec<IpAddr>)> = peers
            .iter()
            .map(|p| (p.id.0.clone(), p.addresses.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("srv-b".to_string(), vec![ip("192.0.2.11")]),
                (
                    "srv-c".to_string(),
                    vec![ip("198.51.100.12"), ip("192.0.2.140"), ip("192.0.2.13")]
                ),
            ]
        );
        let w = server.world();
        assert_eq!(
        w.count(&format!(
            "GET /networking/v2.0/ports?security_groups={SG}&fields=id&fields=device_id&fields=fixed_ips"
        )),
        1,
        "{:?}",
        w.lines()
    );
        assert_eq!(
            w.count(&format!("GET /networking/v2.0/security-groups/{SG}")),
            1
        );
        assert_eq!(w.count("GET /networking/v2.0/extensions"), 1);
    }

    #[tokio::test]
    async fn peers_without_the_filter_extension_filter_here() {
        let mut world = World::new();
        world
            .extensions
            .retain(|e| *e != "port-security-groups-filtering");
        let server = Server::start(world).await;
        let client = server.client();
        let peers = client.peers("peers", &id("srv-b")).await.unwrap();
        let ids: Vec<&str> = peers.iter().map(|p| p.id.0.as_str()).collect();
        assert_eq!(ids, vec!["srv-a", "srv-c"]);
        client.peers("peers", &id("srv-b")).await.unwrap();
        let w = server.world();
        assert_eq!(
            w.count("GET /networking/v2.0/security-groups?name=peers"),
            2
        );
        assert_eq!(
        w.count("GET /networking/v2.0/ports?fields=id&fields=device_id&fields=fixed_ips&fields=security_groups"),
        2
    );
        assert_eq!(w.count("GET /networking/v2.0/ports?security_groups"), 0);
        assert_eq!(w.count("GET /networking/v2.0/extensions"), 1, "read once");
    }

    #[tokio::test]
    async fn security_group_names_must_be_unique_and_exist() {
        let server = Server::start(World::new()).await;
        let client = server.client();
        let e = client.peers("dup", &id("srv-a")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("several security groups")),
            "{e}"
        );
        let e = client.peers("nope", &id("srv-a")).await.unwrap_err();
        assert_eq!(e.kind(), "not_found", "{e}");
        let peers = client.peers("db", &id("srv-a")).await.unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].id, id("srv-d"));
    }

    #[test]
    fn settings_debug_shows_no_secret() {
        let s = OpenStackSettings::new(
            "http://192.0.2.1:5000",
            Credentials::Password {
                user: User::Id("u".into()),
                password: Secret::new(PASSWORD),
                project: Project::Id("p".into()),
            },
        );
        assert!(!format!("{s:?}").contains(PASSWORD));
        let client = OpenStack::new(s).unwrap();
        assert!(!format!("{client:?}").contains(PASSWORD));
    }
}

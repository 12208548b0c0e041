//! The Nova metadata stub for the simulated OpenStack, on the metadata listener (the real one
//! is `http://169.254.169.254`): `GET /openstack` (version list), `/openstack/<version>/`
//! (file list), `meta_data.json` (`uuid`, `name`, `hostname`, `project_id`,
//! `availability_zone`, `launch_index`, `meta`, …), `network_data.json` (`links[].vif_id` =
//! the port ids, `ethernet_mac_address`, `networks[]`), `user_data`, `vendor_data.json`.
//!
//! The server is the one owning a port whose fixed IP is the request's source address (so each
//! agent in its own network namespace sees itself); when none matches, `?instance=<id>` names
//! it; otherwise 404.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use super::{parse_query, MetadataView, OsSim};

/// The metadata versions Nova lists, oldest first.
const VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
    "latest",
];

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn json_file(body: Value) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 Not Found\n".to_string())
}

type Sim = State<Arc<OsSim>>;

pub(crate) fn router(sim: Arc<OsSim>) -> Router {
    Router::new()
        .route("/openstack", get(version_list))
        .route("/openstack/", get(version_list))
        .route("/openstack/{version}", get(file_list))
        .route("/openstack/{version}/", get(file_list))
        .route("/openstack/{version}/{file}", get(file))
        .fallback(|| async { not_found() })
        .with_state(sim)
}

/// The server asking, or `None` (404).
fn whoami(sim: &OsSim, peer: SocketAddr, query: Option<String>) -> Option<MetadataView> {
    let query = parse_query(query.as_deref());
    let named = query
        .iter()
        .find(|(n, _)| n == "instance")
        .map(|(_, v)| v.as_str());
    sim.metadata_server(peer.ip(), named)
}

async fn version_list() -> Response {
    text(StatusCode::OK, VERSIONS.join("\n"))
}

async fn file_list(
    State(sim): Sim,
    Path(version): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    if !VERSIONS.contains(&version.as_str()) {
        return not_found();
    }
    let Some(view) = whoami(&sim, peer, q) else {
        return not_found();
    };
    let mut files = vec![
        "meta_data.json",
        "network_data.json",
        "vendor_data.json",
        "vendor_data2.json",
    ];
    if !view.server.user_data.is_empty() {
        files.push("user_data");
    }
    text(StatusCode::OK, files.join("\n"))
}

/// `tap` + the first 11 characters of the port id, as Nova names the interface.
fn link_id(port_id: &str) -> String {
    format!("tap{}", port_id.chars().take(11).collect::<String>())
}

/// Nova's hostname: the name, sanitised, in the default `dhcp_domain`.
fn hostname(name: &str) -> String {
    let host: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{}.novalocal", host.trim_matches('-'))
}

fn meta_data(view: &MetadataView) -> Value {
    let s = &view.server;
    let seed: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
    json!({
        "uuid": s.id,
        "name": s.name,
        "hostname": hostname(&s.name),
        "project_id": s.project,
        "availability_zone": s.availability_zone,
        "launch_index": 0,
        "meta": s.meta,
        "public_keys": {},
        "keys": [],
        "devices": [],
        "dedicated_cpus": [],
        "random_seed": base64::engine::general_purpose::STANDARD.encode(seed),
    })
}

fn network_data(view: &MetadataView) -> Value {
    let mut links = Vec::new();
    let mut networks = Vec::new();
    for (port, subnets) in &view.ports {
        let link = link_id(&port.id);
        let mtu = subnets.first().map(|(_, mtu)| *mtu).unwrap_or(1500);
        links.push(json!({
            "id": link, "vif_id": port.id, "type": "ovs", "mtu": mtu,
            "ethernet_mac_address": port.mac.to_string(),
        }));
        for (subnet_id, ip) in &port.fixed_ips {
            let Some((subnet, _)) = subnets.iter().find(|(s, _)| &s.id == subnet_id) else {
                continue;
            };
            let (kind, netmask, default) = match ip {
                IpAddr::V4(_) => (
                    "ipv4",
                    subnet
                        .cidr
                        .netmask_v4()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    "0.0.0.0",
                ),
                IpAddr::V6(_) => ("ipv6", format!("/{}", subnet.cidr.prefix), "::"),
            };
            let routes: Vec<Value> = subnet
                .gateway_ip
                .map(|gw| {
                    json!({
                        "network": default,
                        "netmask": if ip.is_ipv4() { "0.0.0.0" } else { "::" },
                        "gateway": gw.to_string(),
                    })
                })
                .into_iter()
                .collect();
            networks.push(json!({
                "id": format!("network{}", networks.len()),
                "type": kind,
                "link": link,
                "ip_address": ip.to_string(),
                "netmask": netmask,
                "routes": routes,
                "network_id": port.network,
                "services": [],
            }));
        }
    }
    json!({ "links": links, "networks": networks, "services": [] })
}

async fn file(
    State(sim): Sim,
    Path((version, file)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    if !VERSIONS.contains(&version.as_str()) {
        return not_found();
    }
    let Some(view) = whoami(&sim, peer, q) else {
        return not_found();
    };
    match file.as_str() {
        "meta_data.json" => json_file(meta_data(&view)),
        "network_data.json" => json_file(network_data(&view)),
        "vendor_data.json" | "vendor_data2.json" => json_file(json!({})),
        "user_data" if !view.server.user_data.is_empty() => {
            text(StatusCode::OK, view.server.user_data.clone())
        }
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            link_id("cd9f6d46-4a3b-4c1e-9d2f-0123456789ab"),
            "tapcd9f6d46-4a"
        );
        assert_eq!(hostname("LB 1_x"), "lb-1-x.novalocal");
    }
}

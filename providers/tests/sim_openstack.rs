//! The simulated OpenStack (Keystone v3 + Neutron v2.0) as a raw HTTP client sees it:
//! authentication, tokens, floating IP and port rules, filters, faults, the timeline, the
//! metadata stub, the control API, the CLI and the NAT route hook (with a real `nft`).

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exoip_providers::sim::cli::{SimArgs, SimProvider};
use exoip_providers::sim::openstack::seed::{
    SeedFixedIp, SeedNetwork, SeedPort, SeedProject, SeedServer, SeedSubnet, SeedUser,
};
use exoip_providers::sim::openstack::LabSeed;
use exoip_providers::sim::{
    self, route, Faults, HolderEvent, OpenStackSeed, RouteRunner, SimConfig, SimHandle, Trigger,
};
use exoip_providers::{InstanceId, Secret};
use serde_json::{json, Value};

// The fixed ids of `LabSeed::default()` (the example seed).
const PROJECT: &str = "3f1e6a0c9d2b4e7f8a5c1d0e2b4f6a81";
const USER: &str = "7267d1c0a9b84f3e8d2c5b1a0f9e8d71";
const PASSWORD: &str = "sim-password-change-me";
const CRED: &str = "3e19c0de5a7b4c2d9e8f1a0b2c3d4e5f";
const CRED_SECRET: &str = "sim-app-secret-change-me";
const LB1: &str = "2f6a9a43-0000-4000-8000-000000000011";
const LB2: &str = "2f6a9a43-0000-4000-8000-000000000012";
const LB3: &str = "2f6a9a43-0000-4000-8000-000000000013";
const PORT1: &str = "d1e2f3a4-0000-4000-8000-000000000011";
const PORT2: &str = "d1e2f3a4-0000-4000-8000-000000000012";
const PORT3: &str = "d1e2f3a4-0000-4000-8000-000000000013";
const VIP_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000100";
const ROUTER_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000001";
const PRIVATE_NET: &str = "6b3d0a58-0000-4000-8000-000000000001";
const PUBLIC_NET: &str = "6b3d0a58-0000-4000-8000-000000000002";
const PRIVATE_SUBNET: &str = "5c1e7f2a-0000-4000-8000-000000000001";
const ROUTER: &str = "9a1c4d7e-0000-4000-8000-000000000001";
const GROUP: &str = "7f3a1b2c-0000-4000-8000-000000000001";
const FIP_ID: &str = "8ea5e5c4-0000-4000-8000-000000000010";
const FIP: &str = "203.0.113.10";
const VIP: &str = "192.0.2.100";

// Added by `test_seed`.
const OTHER_PROJECT: &str = "0b5e7d9c1a3f4e6b8d0c2a4e6f8b0d12";
const MALLORY_PASSWORD: &str = "mallory-password";
const OTHER_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000050";
const MULTI: &str = "2f6a9a43-0000-4000-8000-000000000031";
const MULTI_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000031";
const ISOLATED_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000032";
const FIP2_ID: &str = "8ea5e5c4-0000-4000-8000-000000000011";
const FIP2: &str = "203.0.113.11";
const ABSENT: &str = "00000000-0000-4000-8000-0000000000ff";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ids(v: &[InstanceId]) -> Vec<&str> {
    v.iter().map(|i| i.0.as_str()).collect()
}

/// The example plus: another project with its own user and a port on our network; a server
/// with a two-address port and a port on a network no router reaches; a spare floating IP.
fn test_seed() -> OpenStackSeed {
    let mut seed = OpenStackSeed::example();
    seed.projects.push(SeedProject {
        id: OTHER_PROJECT.into(),
        name: "other".into(),
        domain: "default".into(),
    });
    seed.users.push(SeedUser {
        id: "5d4c3b2a19084f7e6d5c4b3a29180f7e".into(),
        name: "mallory".into(),
        domain: "default".into(),
        password: Secret::new(MALLORY_PASSWORD),
        default_project: Some(OTHER_PROJECT.into()),
        project_roles: [(OTHER_PROJECT.to_string(), vec!["member".to_string()])].into(),
    });
    let port = |id: &str, network: &str, device: &str, mac: &str, ips: &[(&str, &str)]| SeedPort {
        id: id.into(),
        name: String::new(),
        network: network.into(),
        project: None,
        device_id: device.into(),
        device_owner: if device.is_empty() {
            String::new()
        } else {
            "compute:nova".into()
        },
        mac_address: mac.into(),
        fixed_ips: ips
            .iter()
            .map(|(subnet, a)| SeedFixedIp {
                subnet: subnet.to_string(),
                ip_address: ip(a),
            })
            .collect(),
        security_groups: Vec::new(),
        allowed_address_pairs: Vec::new(),
    };
    let mut other = port(
        OTHER_PORT,
        PRIVATE_NET,
        "",
        "fa:16:3e:00:00:50",
        &[(PRIVATE_SUBNET, "192.0.2.50")],
    );
    other.project = Some(OTHER_PROJECT.into());
    seed.ports.push(other);
    seed.servers.push(SeedServer {
        id: MULTI.into(),
        name: "multi".into(),
        project: None,
        availability_zone: "nova".into(),
        meta: Default::default(),
        user_data: String::new(),
    });
    seed.ports.push(port(
        MULTI_PORT,
        PRIVATE_NET,
        MULTI,
        "fa:16:3e:00:00:31",
        &[
            (PRIVATE_SUBNET, "192.0.2.31"),
            (PRIVATE_SUBNET, "192.0.2.32"),
        ],
    ));
    let isolated_net = "6b3d0a58-0000-4000-8000-000000000003";
    let isolated_subnet = "5c1e7f2a-0000-4000-8000-000000000003";
    seed.networks.push(SeedNetwork {
        id: isolated_net.into(),
        name: "isolated".into(),
        project: None,
        external: false,
        mtu: 1450,
    });
    seed.subnets.push(SeedSubnet {
        id: isolated_subnet.into(),
        name: "isolated".into(),
        network: isolated_net.into(),
        project: None,
        cidr: "198.51.100.0/24".into(),
        gateway_ip: None,
    });
    seed.ports.push(port(
        ISOLATED_PORT,
        isolated_net,
        MULTI,
        "fa:16:3e:00:00:32",
        &[(isolated_subnet, "198.51.100.5")],
    ));
    let mut fip2 = seed.floating_ips[0].clone();
    fip2.id = FIP2_ID.into();
    fip2.address = FIP2.parse().unwrap();
    fip2.port = None;
    seed.floating_ips.push(fip2);
    seed.validate().expect("the test seed is valid");
    seed
}

async fn start(cfg: SimConfig) -> SimHandle {
    sim::start(cfg).await.expect("the simulator starts")
}

async fn start_default() -> SimHandle {
    start(SimConfig::openstack(test_seed())).await
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn error_type(&self) -> &str {
        self.json["NeutronError"]["type"].as_str().unwrap_or("")
    }

    fn error_message(&self) -> &str {
        self.json["NeutronError"]["message"].as_str().unwrap_or("")
    }
}

/// A raw client of the simulator (not the provider under development, so that a bug there
/// cannot hide one here).
#[derive(Clone)]
struct Os {
    http: reqwest::Client,
    base: String,
    host: Option<String>,
}

impl Os {
    fn new(sim: &SimHandle) -> Os {
        Os {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            base: format!("http://{}", sim.api_addr()),
            host: None,
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        if let Some(h) = &self.host {
            rb = rb.header("Host", h);
        }
        rb
    }

    async fn send(rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("the simulator answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        Self::send(self.request(method, path, token, body)).await
    }

    async fn auth(&self, body: Value) -> Reply {
        self.call(
            "POST",
            "/identity/v3/auth/tokens",
            None,
            Some(&body.to_string()),
        )
        .await
    }

    /// A project-scoped token for demo (password by name).
    async fn token(&self) -> String {
        let r = self
            .auth(json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "demo", "domain": {"name": "Default"}, "password": PASSWORD}}},
                "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}))
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.header("x-subject-token").to_string()
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(token), Some(&body.to_string()))
            .await
    }

    async fn put_if(&self, path: &str, token: &str, revision: u64, body: Value) -> Reply {
        Self::send(
            self.request("PUT", path, Some(token), Some(&body.to_string()))
                .header("If-Match", format!("revision_number={revision}")),
        )
        .await
    }

    async fn fip(&self, token: &str, id: &str) -> Value {
        let r = self
            .get(&format!("/network/v2.0/floatingips/{id}"), token)
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["floatingip"].clone()
    }

    async fn port(&self, token: &str, id: &str) -> Value {
        let r = self.get(&format!("/network/v2.0/ports/{id}"), token).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["port"].clone()
    }

    async fn move_fip(&self, token: &str, id: &str, body: Value) -> Reply {
        self.put(
            &format!("/network/v2.0/floatingips/{id}"),
            token,
            json!({ "floatingip": body }),
        )
        .await
    }

    async fn control(&self, method: &str, path: &str, body: &str) -> Reply {
        self.call(method, path, None, Some(body)).await
    }
}

/// `true` when the request failed without any HTTP answer (connection closed).
async fn no_answer(rb: reqwest::RequestBuilder) -> bool {
    match rb.send().await {
        Ok(r) => panic!("expected no answer, got {}", r.status()),
        Err(e) => !e.is_timeout(),
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// `2026-11-21T14:55:54.000000Z`
fn is_keystone_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b[20..26].iter().all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------------------------
// Keystone

#[tokio::test]
async fn keystone_discovery_and_password_tokens() {
    let sim = start_default().await;
    let mut os = Os::new(&sim);
    // The end-to-end tests reach the simulator at another address: links follow `Host`.
    os.host = Some("192.0.2.1:8080".into());

    let r = os.call("GET", "/identity/", None, None).await;
    assert_eq!(r.status, 300, "{}", r.json);
    let v = &r.json["versions"]["values"][0];
    assert_eq!(v["id"], "v3.14");
    assert_eq!(v["links"][0]["href"], "http://192.0.2.1:8080/identity/v3/");
    let r = os.call("GET", "/identity", None, None).await;
    assert_eq!(r.status, 300);
    let r = os.call("GET", "/identity/v3", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["version"]["id"], "v3.14");

    // Name + domain name, project by name.
    let r = os
        .auth(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let token = r.header("x-subject-token").to_string();
    assert!(token.len() > 100, "a Fernet-sized opaque token");
    assert!(
        !r.json.to_string().contains(&token),
        "the token is in the header, not the body"
    );
    let t = &r.json["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["id"], USER);
    assert_eq!(
        t["user"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert_eq!(t["project"]["id"], PROJECT);
    assert_eq!(t["project"]["domain"]["name"], "Default");
    let roles: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["member", "reader"]);
    let (issued, expires) = (
        t["issued_at"].as_str().unwrap(),
        t["expires_at"].as_str().unwrap(),
    );
    assert!(is_keystone_time(expires), "{expires}");
    assert!(is_keystone_time(issued), "{issued}");
    let lifetime = humantime::parse_rfc3339(expires)
        .unwrap()
        .duration_since(humantime::parse_rfc3339(issued).unwrap())
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600), "Keystone's default");
    let catalog = t["catalog"].as_array().unwrap();
    let network = catalog.iter().find(|s| s["type"] == "network").unwrap();
    let mut interfaces: Vec<&str> = network["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["region_id"], "RegionOne");
            assert_eq!(e["url"], "http://192.0.2.1:8080/network");
            e["interface"].as_str().unwrap()
        })
        .collect();
    interfaces.sort();
    assert_eq!(interfaces, ["admin", "internal", "public"]);
    assert!(catalog.iter().any(|s| s["type"] == "identity"));

    // Ids instead of names; no scope gives the default project.
    for body in [
        json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"id": USER, "password": PASSWORD}}},
            "scope": {"project": {"id": PROJECT}}}}),
        json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"name": "demo", "domain": {"id": "default"},
                                  "password": PASSWORD}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}),
        json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"id": USER, "password": PASSWORD}}}}}),
    ] {
        let r = os.auth(body.clone()).await;
        assert_eq!(r.status, 201, "{body}: {}", r.json);
        assert_eq!(r.json["token"]["project"]["id"], PROJECT, "{body}");
    }
    // `?nocatalog`
    let r = Os::send(
        os.request(
            "POST",
            "/identity/v3/auth/tokens?nocatalog",
            None,
            Some(
                &json!({"auth": {"identity": {"methods": ["password"],
                    "password": {"user": {"id": USER, "password": PASSWORD}}}}})
                .to_string(),
            ),
        ),
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(r.json["token"].get("catalog").is_none());

    // Refusals.
    let r = os
        .auth(json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"id": USER, "password": "wrong"}}}}}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], 401);
    assert_eq!(r.json["error"]["title"], "Unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        "Keystone uri=\"http://192.0.2.1:8080/identity\""
    );
    assert!(!r.json.to_string().contains("wrong"));
    for (body, status) in [
        // A user name needs its domain.
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "demo", "password": PASSWORD}}}}}),
            400,
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "nobody", "domain": {"id": "default"},
                                      "password": PASSWORD}}}}}),
            401,
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"id": USER, "password": PASSWORD}}},
                "scope": {"project": {"id": "no-such-project"}}}}),
            401,
        ),
        // No role on that project.
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"id": USER, "password": PASSWORD}}},
                "scope": {"project": {"id": OTHER_PROJECT}}}}),
            401,
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"id": USER, "password": PASSWORD}}},
                "scope": {"project": {"name": "demo"}}}}),
            400,
        ),
        (
            json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "x"}}}}),
            401,
        ),
        (json!({"auth": {}}), 400),
        (json!({}), 400),
    ] {
        let r = os.auth(body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], status, "{body}");
    }
    let r = os
        .call("POST", "/identity/v3/auth/tokens", None, Some("{not json"))
        .await;
    assert_eq!(r.status, 400);

    // Validation of one token with another, then revocation.
    let other = os.token().await;
    let r = Os::send(
        os.request("GET", "/identity/v3/auth/tokens", Some(&token), None)
            .header("X-Subject-Token", &other),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.header("x-subject-token"), other);
    assert_eq!(r.json["token"]["project"]["id"], PROJECT);
    let r = Os::send(
        os.request("DELETE", "/identity/v3/auth/tokens", Some(&token), None)
            .header("X-Subject-Token", &other),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = os.get("/network/v2.0/ports", &other).await;
    assert_eq!(r.status, 401, "a revoked token no longer works");
    let r = Os::send(
        os.request("GET", "/identity/v3/auth/tokens", Some(&token), None)
            .header("X-Subject-Token", &other),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        !r.json.to_string().contains(&other),
        "tokens are not echoed"
    );
}

#[tokio::test]
async fn application_credentials() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    for cred in [
        json!({"id": CRED, "secret": CRED_SECRET}),
        json!({"name": "exoip", "secret": CRED_SECRET,
               "user": {"name": "demo", "domain": {"name": "Default"}}}),
        json!({"name": "exoip", "secret": CRED_SECRET, "user": {"id": USER}}),
    ] {
        let r = os
            .auth(json!({"auth": {"identity": {
                "methods": ["application_credential"], "application_credential": cred}}}))
            .await;
        assert_eq!(r.status, 201, "{cred}: {}", r.json);
        let t = &r.json["token"];
        assert_eq!(t["methods"], json!(["application_credential"]));
        assert_eq!(
            t["project"]["id"], PROJECT,
            "scoped to the credential's project"
        );
        assert_eq!(t["application_credential"]["id"], CRED);
        assert_eq!(t["application_credential"]["restricted"], true);
        assert!(t["catalog"].as_array().is_some_and(|c| !c.is_empty()));
        let token = r.header("x-subject-token").to_string();
        assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    }
    let r = os
        .auth(json!({"auth": {
            "identity": {"methods": ["application_credential"],
                         "application_credential": {"id": CRED, "secret": CRED_SECRET}},
            "scope": {"project": {"id": PROJECT}}}}))
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Application credentials cannot request a scope."),
        "{}",
        r.json
    );
    for cred in [
        json!({"id": CRED, "secret": "wrong"}),
        json!({"id": "nope", "secret": CRED_SECRET}),
        json!({"name": "exoip", "secret": CRED_SECRET,
               "user": {"name": "mallory", "domain": {"id": "default"}}}),
    ] {
        let r = os
            .auth(json!({"auth": {"identity": {
                "methods": ["application_credential"], "application_credential": cred}}}))
            .await;
        assert_eq!(r.status, 401, "{cred}: {}", r.json);
    }
    let r = os
        .auth(
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"name": "exoip", "secret": CRED_SECRET}}}}),
        )
        .await;
    assert_eq!(r.status, 400, "a name needs its user: {}", r.json);
}

#[tokio::test]
async fn neutron_needs_a_valid_token_that_expires_and_can_be_revoked() {
    let sim = start_default().await;
    let mut os = Os::new(&sim);
    os.host = Some("192.0.2.1:8080".into());

    // The version document is open; everything under /v2.0 is not.
    for path in ["/network", "/network/"] {
        let r = os.call("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json["versions"][0]["id"], "v2.0");
        assert_eq!(
            r.json["versions"][0]["links"][0]["href"],
            "http://192.0.2.1:8080/network/v2.0/"
        );
    }
    for token in [None, Some("gAAAAABnope")] {
        let r = os
            .call("GET", "/network/v2.0/floatingips", token, None)
            .await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(
            r.header("www-authenticate"),
            "Keystone uri=\"http://192.0.2.1:8080/identity\""
        );
        assert_eq!(r.json["error"]["code"], 401);
    }

    // Expiry: a short lifetime for the tokens issued from now on.
    sim.set_token_lifetime(Duration::from_millis(600)).unwrap();
    let token = os.token().await;
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        os.get("/network/v2.0/ports", &token).await.status,
        401,
        "expired"
    );
    let r = os
        .control("PUT", "/_sim/token-lifetime", r#"{"lifetime": "1h"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // Revocation through the handle and through the control API.
    let token = os.token().await;
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    assert!(sim.revoke_tokens().unwrap() >= 1);
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 401);
    let token = os.token().await;
    let r = os.control("POST", "/_sim/tokens/revoke", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["revoked"], 1);
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 401);

    // A skewed cloud clock shifts the token's times, not its validity.
    sim.set_clock_skew(3600);
    let r = os
        .auth(json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"id": USER, "password": PASSWORD}}}}}))
        .await;
    let issued = humantime::parse_rfc3339(r.json["token"]["issued_at"].as_str().unwrap()).unwrap();
    assert!(issued > std::time::SystemTime::now() + Duration::from_secs(3000));
    let token = r.header("x-subject-token").to_string();
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Floating IPs

#[tokio::test]
async fn floating_ips_move_in_one_put_and_every_update_bumps_the_revision() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;

    let r = os
        .get(
            &format!("/network/v2.0/floatingips?floating_ip_address={FIP}"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let list = r.json["floatingips"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let f = &list[0];
    assert_eq!(
        keys(f),
        [
            "created_at",
            "description",
            "fixed_ip_address",
            "floating_ip_address",
            "floating_network_id",
            "id",
            "port_details",
            "port_forwardings",
            "port_id",
            "project_id",
            "qos_policy_id",
            "revision_number",
            "router_id",
            "status",
            "tags",
            "tenant_id",
            "updated_at",
        ]
    );
    assert_eq!(f["id"], FIP_ID);
    assert_eq!(f["port_id"], PORT1);
    assert_eq!(f["fixed_ip_address"], "192.0.2.11");
    assert_eq!(f["router_id"], ROUTER);
    assert_eq!(f["floating_network_id"], PUBLIC_NET);
    assert_eq!(f["status"], "ACTIVE");
    assert_eq!(f["port_details"]["device_id"], LB1);
    assert_eq!(f["port_details"]["device_owner"], "compute:nova");
    assert_eq!(f["port_details"]["mac_address"], "fa:16:3e:00:00:0b");
    let rev = f["revision_number"].as_u64().unwrap();
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB1]);

    // A direct move.
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let f = &r.json["floatingip"];
    assert_eq!(f["port_id"], PORT2);
    assert_eq!(f["fixed_ip_address"], "192.0.2.12");
    assert_eq!(f["port_details"]["device_id"], LB2);
    assert_eq!(f["revision_number"], rev + 1);
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB2]);
    // Again to the same port: a no-op that still bumps the revision.
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["floatingip"]["revision_number"], rev + 2);
    // A non-empty body without port_id keeps the association.
    let r = os
        .move_fip(&token, FIP_ID, json!({"description": "kept"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["floatingip"]["port_id"], PORT2);
    assert_eq!(r.json["floatingip"]["description"], "kept");
    assert_eq!(r.json["floatingip"]["revision_number"], rev + 3);
    // `{}` dissociates.
    let r = os.move_fip(&token, FIP_ID, json!({})).await;
    assert_eq!(r.status, 200);
    let f = &r.json["floatingip"];
    for k in ["port_id", "fixed_ip_address", "router_id", "port_details"] {
        assert!(f[k].is_null(), "{k}: {f}");
    }
    assert_eq!(f["status"], "DOWN");
    assert!(sim.holders(ip(FIP)).is_empty());
    // Associate, then `port_id: null` dissociates.
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT3})).await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB3]);
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": null})).await;
    assert_eq!(r.status, 200);
    assert!(r.json["floatingip"]["port_id"].is_null());
    assert_eq!(r.json["floatingip"]["revision_number"], rev + 6);

    // Every holder change is on the timeline, a move as detach + attach at one instant.
    let events = sim.timeline();
    let summary: Vec<(HolderEvent, &str, Vec<&str>)> = events
        .iter()
        .map(|e| (e.event, e.instance.0.as_str(), ids(&e.holders)))
        .collect();
    assert_eq!(
        summary,
        [
            (HolderEvent::Detach, LB1, vec![LB2]),
            (HolderEvent::Attach, LB2, vec![LB2]),
            (HolderEvent::Detach, LB2, vec![]),
            (HolderEvent::Attach, LB3, vec![LB3]),
            (HolderEvent::Detach, LB3, vec![]),
        ]
    );
    assert_eq!(events[0].t, events[1].t);
    for e in &events {
        assert_eq!(e.zone, "RegionOne");
        assert_eq!(e.ip, ip(FIP));
        assert_eq!(e.eip_id, FIP_ID);
        assert!(!e.forced);
    }
    let r = os.control("GET", "/_sim/timeline", "").await;
    assert_eq!(r.json.as_array().unwrap().len(), 5);
    assert_eq!(r.json[0]["zone"], "RegionOne");
}

#[tokio::test]
async fn floating_ip_updates_are_checked_as_neutron_does() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;
    let path = format!("/network/v2.0/floatingips/{FIP_ID}");
    let rev = os.fip(&token, FIP_ID).await["revision_number"]
        .as_u64()
        .unwrap();

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"port_id": ABSENT}), 404, "PortNotFound", ABSENT),
        (
            json!({"port_id": "not-a-uuid"}),
            400,
            "HTTPBadRequest",
            "not a valid UUID",
        ),
        (
            json!({"portid": PORT2}),
            400,
            "HTTPBadRequest",
            "Unrecognized attribute(s) 'portid'",
        ),
        (
            json!({"floating_ip_address": "203.0.113.99"}),
            400,
            "HTTPBadRequest",
            "read-only attribute floating_ip_address",
        ),
        (
            json!({"port_id": MULTI_PORT}),
            400,
            "BadRequest",
            "multiple fixed IPv4 addresses",
        ),
        (
            json!({"port_id": MULTI_PORT, "fixed_ip_address": "192.0.2.33"}),
            400,
            "BadRequest",
            "does not have fixed ip 192.0.2.33",
        ),
        (
            json!({"port_id": ISOLATED_PORT}),
            404,
            "ExternalGatewayForFloatingIPNotFound",
            "is not reachable from subnet",
        ),
        (
            json!({"port_id": OTHER_PORT}),
            400,
            "BadRequest",
            "owned by a different project",
        ),
        (
            json!({"fixed_ip_address": "192.0.2.11"}),
            400,
            "BadRequest",
            "fixed_ip_address cannot be specified without a port_id",
        ),
        (
            json!({"port_id": PORT2, "fixed_ip_address": "2001:db8::1"}),
            400,
            "BadRequest",
            "not an IPv4 address",
        ),
        (
            json!({"port_id": PORT2, "fixed_ip_address": "not-an-ip"}),
            400,
            "HTTPBadRequest",
            "not a valid IP address",
        ),
    ];
    for (body, status, kind, text) in cases {
        let r = os.move_fip(&token, FIP_ID, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.json);
        assert_eq!(r.error_type(), kind, "{body}: {}", r.json);
        assert!(r.error_message().contains(text), "{body}: {}", r.json);
        assert_eq!(r.json["NeutronError"]["detail"], "", "{body}");
    }
    for (body, text) in [
        ("{nope", "Malformed request body"),
        (
            r#"{"port": {}}"#,
            "Unable to find 'floatingip' in request body",
        ),
    ] {
        let r = os.call("PUT", &path, Some(&token), Some(body)).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.error_message().contains(text), "{body}: {}", r.json);
    }
    let r = os.move_fip(&token, ABSENT, json!({"port_id": PORT2})).await;
    assert_eq!((r.status, r.error_type()), (404, "FloatingIPNotFound"));
    let after = os.fip(&token, FIP_ID).await;
    assert_eq!(
        after["revision_number"], rev,
        "failed updates change nothing"
    );
    assert_eq!(after["port_id"], PORT1);
    assert!(sim.timeline().is_empty());

    // The multi-address port works once the address is named.
    let r = os
        .move_fip(
            &token,
            FIP_ID,
            json!({"port_id": MULTI_PORT, "fixed_ip_address": "192.0.2.32"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["floatingip"]["fixed_ip_address"], "192.0.2.32");
    assert_eq!(ids(&sim.holders(ip(FIP))), [MULTI]);
    // Neutron derives the association again on every update: on a multi-address port even a
    // description change without the address fails.
    let r = os
        .move_fip(&token, FIP_ID, json!({"description": "x"}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "BadRequest"),
        "{}",
        r.json
    );
    // One floating IP per fixed IP per external network.
    let r = os
        .move_fip(
            &token,
            FIP2_ID,
            json!({"port_id": MULTI_PORT, "fixed_ip_address": "192.0.2.32"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.error_type(), "FloatingIPPortAlreadyAssociated");
    // The other address of the same port is free.
    let r = os
        .move_fip(
            &token,
            FIP2_ID,
            json!({"port_id": MULTI_PORT, "fixed_ip_address": "192.0.2.31"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // Another project sees neither our floating IPs nor our ports.
    let r = os
        .auth(json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"name": "mallory", "domain": {"id": "default"},
                                  "password": MALLORY_PASSWORD}}}}}))
        .await;
    let mallory = r.header("x-subject-token").to_string();
    let r = os.get("/network/v2.0/floatingips", &mallory).await;
    assert_eq!(r.json["floatingips"], json!([]));
    let r = os
        .move_fip(&mallory, FIP_ID, json!({"port_id": OTHER_PORT}))
        .await;
    assert_eq!((r.status, r.error_type()), (404, "FloatingIPNotFound"));
    let r = os.get("/network/v2.0/ports", &mallory).await;
    let list = r.json["ports"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], OTHER_PORT);
    // External networks are visible to every project.
    let r = os.get("/network/v2.0/networks", &mallory).await;
    let nets: Vec<&str> = r.json["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nets, [PUBLIC_NET]);
}

#[tokio::test]
async fn if_match_fences_against_a_concurrent_writer() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;
    let path = format!("/network/v2.0/floatingips/{FIP_ID}");
    let read = os.fip(&token, FIP_ID).await["revision_number"]
        .as_u64()
        .unwrap();

    // Another actor moves the floating IP between our read and our write.
    let holders = sim
        .force_holders(ip(FIP), &[InstanceId(LB3.into())])
        .unwrap();
    assert_eq!(ids(&holders), [LB3]);
    let r = os
        .put_if(
            &path,
            &token,
            read,
            json!({"floatingip": {"port_id": PORT2}}),
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.json);
    assert_eq!(r.error_type(), "RevisionNumberConstraintFailed");
    assert_eq!(
        r.error_message(),
        format!(
            "Constrained to {read}, but current revision is {}",
            read + 1
        )
    );
    assert_eq!(
        ids(&sim.holders(ip(FIP))),
        [LB3],
        "the fenced write changed nothing"
    );
    // Re-read, decide again, write with the new revision.
    let now = os.fip(&token, FIP_ID).await;
    assert_eq!(now["port_id"], PORT3);
    let r = os
        .put_if(
            &path,
            &token,
            now["revision_number"].as_u64().unwrap(),
            json!({"floatingip": {"port_id": PORT2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB2]);
    // Quoted entity tags work too; malformed ones are refused.
    let rev = r.json["floatingip"]["revision_number"].as_u64().unwrap();
    let r = Os::send(
        os.request(
            "PUT",
            &path,
            Some(&token),
            Some(r#"{"floatingip": {"port_id": null}}"#),
        )
        .header("If-Match", format!("\"revision_number={rev}\"")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = Os::send(
        os.request(
            "PUT",
            &path,
            Some(&token),
            Some(r#"{"floatingip": {"port_id": null}}"#),
        )
        .header("If-Match", "revision_number=soon"),
    )
    .await;
    assert_eq!(r.status, 400);

    // The forced change through the control API, and the timeline's view of both.
    let r = os
        .control(
            "PUT",
            &format!("/_sim/floating-ip/{FIP}/holders"),
            &json!({"holders": [LB1]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["holders"], json!([LB1]));
    let r = os
        .control(
            "PUT",
            &format!("/_sim/elastic-ip/{FIP}/holders"),
            &json!({"holders": [LB1, LB2]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "a floating IP has one port: {}", r.json);
    let events = sim.timeline();
    let forced: Vec<(HolderEvent, &str)> = events
        .iter()
        .filter(|e| e.forced)
        .map(|e| (e.event, e.instance.0.as_str()))
        .collect();
    assert_eq!(
        forced,
        [
            (HolderEvent::Detach, LB1),
            (HolderEvent::Attach, LB3),
            (HolderEvent::Attach, LB1),
        ]
    );

    // Ports are fenced the same way.
    let port = os.port(&token, PORT1).await;
    let prev = port["revision_number"].as_u64().unwrap();
    let ppath = format!("/network/v2.0/ports/{PORT1}");
    let r = os
        .put_if(&ppath, &token, prev + 5, json!({"port": {"name": "x"}}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (412, "RevisionNumberConstraintFailed")
    );
    let r = os
        .put_if(&ppath, &token, prev, json!({"port": {"name": "x"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["port"]["revision_number"], prev + 1);

    // Without the revision-if-match extension, If-Match is ignored.
    sim.set_extension("revision-if-match", false).unwrap();
    let r = os
        .put_if(&ppath, &token, 9999, json!({"port": {"name": "y"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

#[tokio::test]
async fn fip_status_follows_the_l3_agent_delay() {
    let mut seed = test_seed();
    seed.fip_status_delay = Duration::from_millis(300);
    let sim = start(SimConfig::openstack(seed)).await;
    let os = Os::new(&sim);
    let token = os.token().await;
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!(r.status, 200);
    let rev = r.json["floatingip"]["revision_number"].as_u64().unwrap();
    assert_eq!(
        r.json["floatingip"]["status"], "DOWN",
        "the agent has not caught up"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let f = os.fip(&token, FIP_ID).await;
    assert_eq!(f["status"], "ACTIVE");
    assert_eq!(
        f["revision_number"],
        rev + 1,
        "the agent's status update is an update too"
    );
}

// ---------------------------------------------------------------------------------------------
// Ports and the rest of Neutron

fn port_ids(r: &Reply) -> Vec<&str> {
    let mut v: Vec<&str> = r.json["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.json))
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn port_filters_fields_and_the_security_group_extension() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;

    let r = os
        .get(&format!("/network/v2.0/ports?device_id={LB2}"), &token)
        .await;
    assert_eq!(port_ids(&r), [PORT2]);
    let p = &r.json["ports"][0];
    assert_eq!(
        p["fixed_ips"],
        json!([{"subnet_id": PRIVATE_SUBNET, "ip_address": "192.0.2.12"}])
    );
    assert_eq!(p["security_groups"], json!([GROUP]));
    assert_eq!(p["device_owner"], "compute:nova");
    assert_eq!(p["network_id"], PRIVATE_NET);
    assert_eq!(p["status"], "ACTIVE");
    assert_eq!(
        p["allowed_address_pairs"],
        json!([{"ip_address": VIP, "mac_address": "fa:16:3e:00:00:0c"}])
    );
    let r = os
        .get(
            "/network/v2.0/ports?fixed_ips=ip_address%3D192.0.2.13",
            &token,
        )
        .await;
    assert_eq!(port_ids(&r), [PORT3]);
    let r = os
        .get(
            &format!(
                "/network/v2.0/ports?fixed_ips=subnet_id%3D{PRIVATE_SUBNET}\
                 &fixed_ips=ip_address%3D192.0.2.31"
            ),
            &token,
        )
        .await;
    assert_eq!(port_ids(&r), [MULTI_PORT]);
    let r = os
        .get(
            &format!("/network/v2.0/ports?device_id={LB1}&device_id={LB3}"),
            &token,
        )
        .await;
    assert_eq!(port_ids(&r), [PORT1, PORT3]);

    // Peers by security group, with only the fields asked for.
    let by_group = format!(
        "/network/v2.0/ports?security_groups={GROUP}&fields=id&fields=device_id&fields=fixed_ips"
    );
    let r = os.get(&by_group, &token).await;
    assert_eq!(port_ids(&r), [PORT1, PORT2, PORT3, VIP_PORT]);
    for p in r.json["ports"].as_array().unwrap() {
        assert_eq!(keys(p), ["device_id", "fixed_ips", "id"]);
    }
    let r = os.get("/network/v2.0/extensions", &token).await;
    let aliases: Vec<&str> = r.json["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alias"].as_str().unwrap())
        .collect();
    for a in [
        "fip-port-details",
        "revision-if-match",
        "port-security-groups-filtering",
        "allowed-address-pairs",
    ] {
        assert!(aliases.contains(&a), "{a} in {aliases:?}");
    }
    // Without the extension the filter is ignored, as Neutron releases without it did: every
    // port of the project comes back, and a client must filter itself.
    let r = os
        .control(
            "PUT",
            "/_sim/extension/port-security-groups-filtering",
            r#"{"enabled": false}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = os.get(&by_group, &token).await;
    assert_eq!(
        port_ids(&r),
        [
            ROUTER_PORT,
            PORT1,
            PORT2,
            PORT3,
            MULTI_PORT,
            ISOLATED_PORT,
            VIP_PORT
        ]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let r = os.get("/network/v2.0/extensions", &token).await;
    assert!(!r
        .json
        .to_string()
        .contains("port-security-groups-filtering"));
    let r = os
        .get(
            "/network/v2.0/extensions/port-security-groups-filtering",
            &token,
        )
        .await;
    assert_eq!(r.status, 404);
    sim.set_extension("port-security-groups-filtering", true)
        .unwrap();

    // Unknown filters are refused; so are unknown extensions for the control API.
    let r = os.get("/network/v2.0/ports?colour=blue", &token).await;
    assert_eq!((r.status, r.error_type()), (400, "HTTPBadRequest"));
    let r = os
        .get("/network/v2.0/ports?fixed_ips=192.0.2.11", &token)
        .await;
    assert_eq!(r.status, 400);
    assert!(sim.set_extension("no-such-extension", false).is_err());

    // One port, with fields; unknown ids.
    let r = os
        .get(
            &format!("/network/v2.0/ports/{PORT1}?fields=id&fields=mac_address"),
            &token,
        )
        .await;
    assert_eq!(
        r.json,
        json!({"port": {"id": PORT1, "mac_address": "fa:16:3e:00:00:0b"}})
    );
    let r = os
        .get(&format!("/network/v2.0/ports/{ABSENT}"), &token)
        .await;
    assert_eq!((r.status, r.error_type()), (404, "PortNotFound"));

    // Pagination.
    let r = os
        .get(
            "/network/v2.0/ports?limit=2&sort_key=id&sort_dir=asc",
            &token,
        )
        .await;
    assert_eq!(r.json["ports"].as_array().unwrap().len(), 2);
    let next = r.json["ports_links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_string();
    let next_path = next
        .split_once("/network")
        .map(|(_, p)| format!("/network{p}"))
        .unwrap();
    let r2 = os.get(&next_path, &token).await;
    assert_eq!(r2.status, 200, "{next}: {}", r2.json);
    assert!(r2.json["ports"][0]["id"].as_str() > r.json["ports"][1]["id"].as_str());
    assert_eq!(
        os.get("/network/v2.0/ports?limit=x", &token).await.status,
        400
    );

    // The rest of the topology a client may look at.
    let r = os
        .get("/network/v2.0/security-groups?name=exoip", &token)
        .await;
    let groups = r.json["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], GROUP);
    let r = os
        .get("/network/v2.0/security-groups?name=nope", &token)
        .await;
    assert_eq!(r.json["security_groups"], json!([]));
    let r = os
        .get("/network/v2.0/subnets?cidr=192.0.2.0/24", &token)
        .await;
    let s = &r.json["subnets"][0];
    assert_eq!(s["id"], PRIVATE_SUBNET);
    assert_eq!(s["gateway_ip"], "192.0.2.1");
    assert_eq!(s["ip_version"], 4);
    let r = os.get("/network/v2.0/routers", &token).await;
    let router = &r.json["routers"][0];
    assert_eq!(router["id"], ROUTER);
    assert_eq!(router["external_gateway_info"]["network_id"], PUBLIC_NET);
    assert_eq!(
        router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"],
        "203.0.113.2"
    );
    let r = os
        .get("/network/v2.0/networks?router:external=true", &token)
        .await;
    assert_eq!(r.json["networks"][0]["id"], PUBLIC_NET);
    let r = os
        .get(&format!("/network/v2.0/routers/{ROUTER}"), &token)
        .await;
    assert_eq!(r.status, 200);
    let r = os.get("/network/v2.0/nothing-here", &token).await;
    assert_eq!(r.status, 404);
    let r = os
        .call(
            "POST",
            "/network/v2.0/floatingips",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (405, "HTTPMethodNotAllowed"));
}

#[tokio::test]
async fn allowed_address_pairs_replace_fill_the_mac_and_show_on_the_timeline() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;
    assert_eq!(ids(&sim.holders(ip(VIP))), [LB1, LB2, LB3]);
    let path = format!("/network/v2.0/ports/{PORT1}");
    let rev = os.port(&token, PORT1).await["revision_number"]
        .as_u64()
        .unwrap();

    // The PUT replaces the whole list: lb1 drops the VIP, gains a CIDR and an explicit MAC.
    let r = os
        .put(
            &path,
            &token,
            json!({"port": {"allowed_address_pairs": [
                {"ip_address": "10.0.0.0/24"},
                {"ip_address": "192.0.2.200", "mac_address": "fa:16:3e:aa:bb:cc"},
            ]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["port"]["allowed_address_pairs"],
        json!([
            {"ip_address": "10.0.0.0/24", "mac_address": "fa:16:3e:00:00:0b"},
            {"ip_address": "192.0.2.200", "mac_address": "fa:16:3e:aa:bb:cc"},
        ])
    );
    assert_eq!(r.json["port"]["revision_number"], rev + 1);
    assert_eq!(ids(&sim.holders(ip(VIP))), [LB2, LB3]);
    assert_eq!(
        ids(&sim.holders(ip("10.0.0.7"))),
        [LB1],
        "a CIDR covers its addresses"
    );
    let events = sim.timeline();
    let summary: Vec<(HolderEvent, IpAddr, &str, &str)> = events
        .iter()
        .map(|e| (e.event, e.ip, e.instance.0.as_str(), e.eip_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (HolderEvent::Detach, ip(VIP), LB1, VIP_PORT),
            (HolderEvent::Attach, ip("192.0.2.200"), LB1, ""),
        ]
    );
    assert_eq!(ids(&events[0].holders), [LB2, LB3]);

    // Invalid pairs change nothing.
    for (pairs, kind) in [
        (json!([{"ip_address": "192.0.2.300"}]), "HTTPBadRequest"),
        (json!([{"ip_address": "192.0.2.7/24"}]), "HTTPBadRequest"),
        (
            json!([{"mac_address": "fa:16:3e:00:00:01"}]),
            "AllowedAddressPairsMissingIP",
        ),
        (
            json!([{"ip_address": VIP, "mac_address": "nope"}]),
            "HTTPBadRequest",
        ),
        (
            json!([{"ip_address": VIP}, {"ip_address": VIP}]),
            "DuplicateAddressPairInRequest",
        ),
        (json!("192.0.2.100"), "HTTPBadRequest"),
    ] {
        let r = os
            .put(
                &path,
                &token,
                json!({"port": {"allowed_address_pairs": pairs}}),
            )
            .await;
        assert_eq!(
            (r.status, r.error_type()),
            (400, kind),
            "{pairs}: {}",
            r.json
        );
    }
    assert_eq!(os.port(&token, PORT1).await["revision_number"], rev + 1);

    // Other port attributes.
    let r = os
        .put(
            &path,
            &token,
            json!({"port": {"mac_address": "fa:16:3e:00:00:99"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (403, "PolicyNotAuthorized"));
    let r = os
        .put(&path, &token, json!({"port": {"network_id": PRIVATE_NET}}))
        .await;
    assert_eq!(r.status, 400);
    let r = os
        .put(
            &path,
            &token,
            json!({"port": {"security_groups": [ABSENT]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    let r = os
        .put(
            &path,
            &token,
            json!({"port": {"security_groups": [], "name": "lb1-renamed"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["port"]["security_groups"], json!([]));
    assert_eq!(r.json["port"]["name"], "lb1-renamed");
    let r = os
        .put(
            &format!("/network/v2.0/ports/{ABSENT}"),
            &token,
            json!({"port": {"name": "x"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "PortNotFound"));

    // A forced VIP change: lb1 and lb3 only, atomically, with the final holders everywhere.
    let holders = sim
        .force_holders(ip(VIP), &[InstanceId(LB1.into()), InstanceId(LB3.into())])
        .unwrap();
    assert_eq!(ids(&holders), [LB1, LB3]);
    let forced: Vec<_> = sim.timeline().into_iter().filter(|e| e.forced).collect();
    assert_eq!(forced.len(), 2);
    assert!(forced
        .iter()
        .all(|e| ids(&e.holders) == [LB1, LB3] && e.t == forced[0].t));
    let r = os
        .control(
            "PUT",
            &format!("/_sim/address/{VIP}/holders"),
            r#"{"holders": []}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(sim.holders(ip(VIP)).is_empty());
    let r = os
        .control(
            "PUT",
            "/_sim/address/198.18.0.1/holders",
            r#"{"holders": []}"#,
        )
        .await;
    assert_eq!(r.status, 404, "in no subnet: {}", r.json);
}

#[tokio::test]
async fn deleting_a_port_dissociates_its_floating_ip() {
    let sim = start_default().await;
    let os = Os::new(&sim);
    let token = os.token().await;
    let rev = os.fip(&token, FIP_ID).await["revision_number"]
        .as_u64()
        .unwrap();
    let r = os
        .call(
            "DELETE",
            &format!("/network/v2.0/ports/{PORT1}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    let f = os.fip(&token, FIP_ID).await;
    assert!(f["port_id"].is_null());
    assert_eq!(f["revision_number"], rev + 1);
    assert!(sim.holders(ip(FIP)).is_empty());
    assert_eq!(
        ids(&sim.holders(ip(VIP))),
        [LB2, LB3],
        "its pairs went with it"
    );
    let r = os
        .get(&format!("/network/v2.0/ports/{PORT1}"), &token)
        .await;
    assert_eq!(r.status, 404);
    let r = os
        .call(
            "DELETE",
            &format!("/network/v2.0/ports/{ROUTER_PORT}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "L3PortInUse"));

    // Another actor deletes a peer's port (control API).
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!(r.status, 200);
    let r = os
        .control("DELETE", &format!("/_sim/port/{PORT2}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(sim.holders(ip(FIP)).is_empty());
    let last = sim.timeline().into_iter().last().unwrap();
    assert_eq!((last.event, last.forced), (HolderEvent::Detach, true));
    assert_eq!(last.instance.0, LB2);
    assert!(sim.delete_port(PORT2).is_err(), "already gone");
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!((r.status, r.error_type()), (404, "PortNotFound"));
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn faults_hit_keystone_and_neutron() {
    let sim = start(SimConfig {
        faults: Faults {
            unavailable: Trigger::count(1),
            ..Faults::default()
        },
        ..SimConfig::openstack(test_seed())
    })
    .await;
    let os = Os::new(&sim);
    let body = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"id": USER, "password": PASSWORD}}}}});
    let r = os.auth(body.clone()).await;
    assert_eq!(r.status, 503, "Keystone too");
    assert_eq!(r.json["error"]["code"], 503);
    let token = os.token().await;

    sim.set_faults(Faults {
        rate_limit: Trigger::count(1),
        retry_after_secs: 3,
        ..Faults::default()
    })
    .unwrap();
    let r = os.get("/network/v2.0/floatingips", &token).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "3");
    assert_eq!(r.error_type(), "HTTPTooManyRequests");
    assert_eq!(
        os.get("/network/v2.0/floatingips", &token).await.status,
        200
    );

    // Mutation-only faults spare reads and token requests.
    sim.set_faults(Faults {
        unavailable: Trigger::count(1).mutations_only(),
        ..Faults::default()
    })
    .unwrap();
    assert_eq!(os.auth(body.clone()).await.status, 201);
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    let r = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!((r.status, r.error_type()), (503, "HTTPServiceUnavailable"));
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB1], "a 503 changes nothing");

    // A dropped connection changes nothing either.
    sim.set_faults(Faults {
        drop_connection: Trigger::count(1).mutations_only(),
        ..Faults::default()
    })
    .unwrap();
    let path = format!("/network/v2.0/floatingips/{FIP_ID}");
    let move_body = json!({"floatingip": {"port_id": PORT2}}).to_string();
    assert!(no_answer(os.request("PUT", &path, Some(&token), Some(&move_body))).await);
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB1]);

    // A lost answer: the move happened although the client never heard.
    sim.set_faults(Faults {
        response_lost: Trigger::count(1),
        ..Faults::default()
    })
    .unwrap();
    let r = os.move_fip(&token, ABSENT, json!({"port_id": PORT2})).await;
    assert_eq!(r.status, 404, "only a success loses its answer");
    assert!(no_answer(os.request("PUT", &path, Some(&token), Some(&move_body))).await);
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB2]);
    assert_eq!(sim.timeline().len(), 2);

    // Latency on every answer, op_delay on mutations only (which apply after it).
    sim.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(os.control("GET", "/_sim/state", "").await.status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "not the control API"
    );
    sim.set_faults(Faults {
        op_delay: Duration::from_millis(300),
        ..Faults::default()
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(250));
    let os2 = os.clone();
    let token2 = token.clone();
    let mover = tokio::spawn(async move {
        os2.move_fip(&token2, FIP_ID, json!({"port_id": PORT3}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ids(&sim.holders(ip(FIP))),
        [LB2],
        "not applied during the delay"
    );
    let r = mover.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(ids(&sim.holders(ip(FIP))), [LB3]);

    // The API down, the control plane up.
    let r = os
        .control("PUT", "/_sim/faults", r#"{"api_down": true}"#)
        .await;
    assert_eq!(r.status, 200);
    assert!(no_answer(os.request("GET", "/network/v2.0/ports", Some(&token), None)).await);
    assert!(no_answer(os.request("GET", "/identity/v3", None, None)).await);
    assert_eq!(
        os.control("GET", "/_sim/faults", "").await.json["api_down"],
        true
    );
    os.control("PUT", "/_sim/faults", "{}").await;
    assert_eq!(os.get("/network/v2.0/ports", &token).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Around the API

#[tokio::test]
async fn timeline_file_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.jsonl");
    let sim = start(SimConfig {
        timeline_path: Some(path.clone()),
        ..SimConfig::openstack(test_seed())
    })
    .await;
    let os = Os::new(&sim);
    let token = os.token().await;
    os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    let lines = std::fs::read_to_string(&path).unwrap();
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["event"], "attach");
    assert_eq!(events[1]["instance"], LB2);
    assert_eq!(events[1]["holders"], json!([LB2]));
    assert_eq!(events[1]["eip_id"], FIP_ID);
    assert_eq!(events[1]["zone"], "RegionOne");
    assert!(events[1].get("forced").is_none());

    let state = os.control("GET", "/_sim/state", "").await.json;
    assert_eq!(state, sim.state());
    assert_eq!(state["provider"], "openstack");
    let f = state["floating_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == FIP_ID)
        .unwrap();
    assert_eq!(f["holders"], json!([LB2]));
    assert_eq!(f["port_id"], PORT2);
    assert_eq!(state["extensions"]["port-security-groups-filtering"], true);
    assert!(sim
        .set_instance_state(&InstanceId(LB1.into()), "stopped")
        .is_err());
    assert_eq!(sim.provider(), "openstack");
    assert!(sim.api_url().ends_with("/identity/v3"));
    assert!(sim.network_url().unwrap().ends_with("/network"));
}

/// Ports whose fixed IPs are loopback addresses a test can send from.
fn metadata_seed() -> OpenStackSeed {
    let mut seed = LabSeed {
        hosts: 2,
        vip: false,
        ..LabSeed::default()
    }
    .build();
    seed.subnets[0].cidr = "127.0.0.0/24".into();
    seed.subnets[0].gateway_ip = Some(ip("127.0.0.1"));
    seed.routers[0].interfaces[0].ip_address = Some(ip("127.0.0.1"));
    seed.ports[0].fixed_ips[0].ip_address = ip("127.0.0.2");
    seed.ports[1].fixed_ips[0].ip_address = ip("127.0.0.3");
    seed.servers[0].meta = [("role".to_string(), "lb".to_string())].into();
    seed.servers[1].user_data = "#cloud-config\n".into();
    seed.validate().unwrap();
    seed
}

#[tokio::test]
async fn metadata_identifies_the_server_by_source_address() {
    let seed = metadata_seed();
    let sim = start(SimConfig {
        metadata_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..SimConfig::openstack(seed.clone())
    })
    .await;
    let base = sim.metadata_url().unwrap();
    let client = |source: &str| {
        reqwest::Client::builder()
            .local_address(ip(source))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    for (i, source) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let c = client(source);
        let server = &seed.servers[i];
        let port = &seed.ports[i];
        let md: Value = c
            .get(format!("{base}/openstack/latest/meta_data.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(md["uuid"], server.id.as_str(), "{source}");
        assert_eq!(md["name"], server.name.as_str());
        assert_eq!(md["hostname"], format!("{}.novalocal", server.name));
        assert_eq!(md["project_id"], PROJECT);
        assert_eq!(md["availability_zone"], "nova");
        assert_eq!(md["launch_index"], 0);
        assert!(md["meta"].is_object());
        let nd: Value = c
            .get(format!("{base}/openstack/2018-08-27/network_data.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(nd["links"][0]["vif_id"], port.id.as_str());
        assert_eq!(
            nd["links"][0]["ethernet_mac_address"],
            port.mac_address.as_str()
        );
        assert_eq!(nd["networks"][0]["ip_address"], source);
        assert_eq!(nd["networks"][0]["netmask"], "255.255.255.0");
        assert_eq!(nd["networks"][0]["network_id"], PRIVATE_NET);
        assert_eq!(nd["networks"][0]["link"], nd["links"][0]["id"]);
    }
    let a = client("127.0.0.2");
    let md: Value = a
        .get(format!("{base}/openstack/latest/meta_data.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["meta"]["role"], "lb");
    let r = a.get(format!("{base}/openstack")).send().await.unwrap();
    let versions = r.text().await.unwrap();
    assert!(versions.lines().any(|l| l == "latest"), "{versions}");
    let r = a
        .get(format!("{base}/openstack/latest/user_data"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "lb1 has no user data");
    let b = client("127.0.0.3");
    let r = b
        .get(format!("{base}/openstack/latest/user_data"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "#cloud-config\n");
    let r = a
        .get(format!("{base}/openstack/1999-01-01/meta_data.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A source that is nobody's fixed IP: only an explicit ?instance= works, and the source
    // wins over the query.
    let other = client("127.0.0.1");
    let r = other
        .get(format!("{base}/openstack/latest/meta_data.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let md: Value = other
        .get(format!(
            "{base}/openstack/latest/meta_data.json?instance={}",
            seed.servers[1].id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["uuid"], seed.servers[1].id.as_str());
    let md: Value = a
        .get(format!(
            "{base}/openstack/latest/meta_data.json?instance={}",
            seed.servers[1].id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["uuid"], seed.servers[0].id.as_str());
}

#[tokio::test]
async fn cli_prints_an_example_seed_that_parses() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        sim: SimArgs,
    }
    let args = Cmd::try_parse_from(["exoip-sim", "--provider", "openstack", "--example-seed"])
        .unwrap()
        .sim;
    assert_eq!(args.provider, SimProvider::Openstack);
    exoip_providers::sim::cli::run(args).await.unwrap();
    let seed = OpenStackSeed::from_json(&OpenStackSeed::example_json()).unwrap();
    assert_eq!(seed.servers.len(), 3);
    assert_eq!(seed.region, "RegionOne");
    assert_eq!(seed.floating_ips[0].port.as_deref(), Some(PORT1));

    // A seed file and the flags.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.json");
    std::fs::write(&file, OpenStackSeed::example_json()).unwrap();
    let args = Cmd::try_parse_from([
        "exoip-sim",
        "--provider",
        "openstack",
        "--seed",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--latency",
        "5ms",
    ])
    .unwrap()
    .sim;
    let cfg = args.config().unwrap();
    let sim = sim::start(cfg).await.unwrap();
    let os = Os::new(&sim);
    os.token().await;
    assert_eq!(sim.faults().latency, Duration::from_millis(5));

    // Lab-sized seeds with random ids.
    let seed = LabSeed {
        hosts: 7,
        random_ids: true,
        ..LabSeed::default()
    }
    .build();
    assert_eq!(seed.servers.len(), 7);
    let sim = start(SimConfig::openstack(seed.clone())).await;
    assert_eq!(ids(&sim.holders(ip(FIP))), [seed.servers[0].id.as_str()]);
    assert_eq!(sim.holders(ip(VIP)).len(), 7);
}

// ---------------------------------------------------------------------------------------------
// The NAT route hook, with a real nft

/// Runs nft inside a network namespace and records the scripts.
struct NsNft {
    ns: String,
    scripts: Mutex<Vec<String>>,
}

impl RouteRunner for NsNft {
    fn run(&self, args: &[String]) -> Result<(), String> {
        Err(format!("unexpected ip command: {args:?}"))
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        self.scripts.lock().unwrap().push(script.to_string());
        route::run_nft(
            Command::new("ip").args(["netns", "exec", &self.ns, "nft", "-f", "-"]),
            script,
        )
    }
}

/// Network namespaces created for one test, deleted on drop (also on panic).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Namespaces {
        let ns = Namespaces(Vec::new());
        let mut ns = ns;
        for n in names {
            sh(&["ip", "netns", "add", n]);
            ns.0.push(n.clone());
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all);
}

fn nft_table(ns: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "ip",
            "exoip_sim",
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connects from the client namespace to the floating IP's TCP port 9 (nothing listens):
/// "refused" means a host answered through the NAT.
fn probe(client_ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "timeout",
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{FIP}/9"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn nat_rules_follow_the_floating_ip_with_a_real_nft() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        eprintln!("SKIPPED: creating network namespaces and nft rules needs root");
        return;
    }
    let has_nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(has_nft, "nft is required (apt-get install nftables)");

    // A router (the simulator's namespace), one host (lb2's address) and a client.
    let tag = format!("{}-{:04x}", std::process::id(), rand::random::<u16>());
    let (r, h, c) = (
        format!("exoipR{tag}"),
        format!("exoipH{tag}"),
        format!("exoipC{tag}"),
    );
    let _guard = Namespaces::create(&[r.clone(), h.clone(), c.clone()]);
    sh(&[
        "ip", "link", "add", "vh", "netns", &r, "type", "veth", "peer", "name", "eth0", "netns", &h,
    ]);
    sh(&[
        "ip", "link", "add", "vc", "netns", &r, "type", "veth", "peer", "name", "eth0", "netns", &c,
    ]);
    in_ns(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    in_ns(&r, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
    in_ns(&r, &["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
    for (ns, dev, addr) in [
        (&r, "vh", "192.0.2.1/24"),
        (&r, "vc", "198.51.100.1/24"),
        (&h, "eth0", "192.0.2.12/24"),
        (&c, "eth0", "198.51.100.2/24"),
    ] {
        in_ns(ns, &["ip", "addr", "add", addr, "dev", dev]);
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }
    in_ns(&h, &["ip", "route", "add", "default", "via", "192.0.2.1"]);
    in_ns(
        &c,
        &["ip", "route", "add", "default", "via", "198.51.100.1"],
    );

    let runner = Arc::new(NsNft {
        ns: r.clone(),
        scripts: Mutex::new(Vec::new()),
    });
    let sim = start(SimConfig {
        route_holders: true,
        route_runner: Some(runner.clone()),
        ..SimConfig::openstack(OpenStackSeed::example())
    })
    .await;
    // The seeded association is in place before the API answers anything.
    let table = nft_table(&r).expect("the table exists from the start");
    assert!(
        table.contains("ip daddr 203.0.113.10 ip daddr set 192.0.2.11 notrack"),
        "{table}"
    );
    assert!(
        table.contains(
            "ip saddr 192.0.2.11 ip daddr != 192.0.2.0/24 ip saddr set 203.0.113.10 notrack"
        ),
        "{table}"
    );
    // lb1 does not exist in this topology: nobody answers.
    let err = probe(&c);
    assert!(!err.contains("refused"), "{err}");

    let os = Os::new(&sim);
    let token = os.token().await;
    let r2 = os.move_fip(&token, FIP_ID, json!({"port_id": PORT2})).await;
    assert_eq!(r2.status, 200);
    let table = nft_table(&r).unwrap();
    assert!(table.contains("ip daddr set 192.0.2.12"), "{table}");
    assert!(!table.contains("192.0.2.11"), "{table}");
    // Through the floating IP, lb2's host answers (a TCP reset from the floating address).
    let err = probe(&c);
    assert!(err.contains("refused"), "{err}");

    let r2 = os.move_fip(&token, FIP_ID, json!({"port_id": null})).await;
    assert_eq!(r2.status, 200);
    let table = nft_table(&r).unwrap();
    assert!(
        !table.contains("203.0.113.10"),
        "removed when unassociated: {table}"
    );
    let err = probe(&c);
    assert!(!err.contains("refused"), "{err}");
    // A no-op update does not rewrite the rules.
    let before = runner.scripts.lock().unwrap().len();
    os.move_fip(&token, FIP_ID, json!({"description": "x"}))
        .await;
    assert_eq!(runner.scripts.lock().unwrap().len(), before);

    sim.shutdown().await;
    assert!(nft_table(&r).is_none(), "the table is deleted at exit");
    let scripts = runner.scripts.lock().unwrap();
    assert!(scripts
        .last()
        .unwrap()
        .contains("delete table ip exoip_sim"));
}

//! Shared by the `sim_*` tests: a seed and a raw, independently signed HTTP client (not the
//! provider under development, so that a bug there cannot hide one here).

#![allow(dead_code)] // each test binary uses a different subset

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exoip_providers::exoscale::sign;
use exoip_providers::sim::{self, Seed, SimConfig, SimHandle};
use exoip_providers::InstanceId;
use serde_json::Value;

pub const KEY: &str = "EXOsimtest0123456789abcdef";
pub const SECRET: &str = "sim-test-secret-0123";
pub const OTHER_KEY: &str = "EXOsimother0123456789abcd";
pub const OTHER_SECRET: &str = "sim-other-secret-0123";

pub const GROUP: &str = "7f3a1b2c-0000-4000-8000-000000000001";
pub const OTHER_GROUP: &str = "7f3a1b2c-0000-4000-8000-000000000002";
pub const LB1: &str = "2f6a9a43-0000-4000-8000-000000000011";
pub const LB2: &str = "2f6a9a43-0000-4000-8000-000000000012";
pub const LB3: &str = "2f6a9a43-0000-4000-8000-000000000013";
/// In zone de-fra-1.
pub const FRA1: &str = "2f6a9a43-0000-4000-8000-000000000021";
pub const EIP_ID: &str = "8ea5e5c4-0000-4000-8000-000000000010";
pub const EIP: &str = "203.0.113.10";
pub const EIP6_ID: &str = "8ea5e5c4-0000-4000-8000-000000000016";
pub const EIP6: &str = "2001:db8::10";
/// In zone de-fra-1.
pub const FRA_EIP_ID: &str = "8ea5e5c4-0000-4000-8000-000000000020";
pub const FRA_EIP: &str = "198.51.100.20";

/// Three load balancers in ch-gva-2 (the EIP on lb1, the IPv6 EIP on nobody) and one instance
/// with its own EIP in de-fra-1.
pub fn seed_json() -> String {
    format!(
        r#"{{
  "zone": "ch-gva-2",
  "api_keys": [{{"key": "{KEY}", "secret": "{SECRET}"}},
               {{"key": "{OTHER_KEY}", "secret": "{OTHER_SECRET}"}}],
  "security_groups": [
    {{"id": "{GROUP}", "name": "exoip", "description": "peers",
      "rules": [{{"flow-direction": "ingress", "protocol": "udp", "start-port": 12345,
                 "end-port": 12345, "security-group": {{"id": "{GROUP}"}}}}]}},
    {{"id": "{OTHER_GROUP}", "name": "web"}}
  ],
  "instances": [
    {{"id": "{LB1}", "name": "lb1", "public_ip": "192.0.2.11", "public_ipv6": "2001:db8:1::11",
      "security_groups": ["{GROUP}", "{OTHER_GROUP}"], "labels": {{"role": "lb", "env": "prod"}},
      "user_data": "hello from lb1"}},
    {{"id": "{LB2}", "name": "lb2", "public_ip": "192.0.2.12", "public_ipv6": "2001:db8:1::12",
      "security_groups": ["{GROUP}"], "labels": {{"role": "lb", "env": "test"}},
      "manager": {{"id": "9b0f7c6e-0000-4000-8000-000000000099", "type": "instance-pool"}}}},
    {{"id": "{LB3}", "name": "lb3", "public_ip": "192.0.2.13",
      "security_groups": ["{GROUP}"], "state": "stopped"}},
    {{"id": "{FRA1}", "name": "fra1", "zone": "de-fra-1", "public_ip": "198.51.100.21"}}
  ],
  "elastic_ips": [
    {{"id": "{EIP_ID}", "ip": "{EIP}", "description": "exoip test", "labels": {{"k": "v"}},
      "attached_to": ["{LB1}"]}},
    {{"id": "{EIP6_ID}", "ip": "{EIP6}"}},
    {{"id": "{FRA_EIP_ID}", "ip": "{FRA_EIP}", "zone": "de-fra-1", "attached_to": ["{FRA1}"]}}
  ]
}}"#
    )
}

pub fn seed() -> Seed {
    Seed::from_json(&seed_json()).expect("the test seed is valid")
}

pub async fn start(cfg: SimConfig) -> SimHandle {
    sim::start(cfg).await.expect("simulator starts")
}

pub async fn start_default() -> SimHandle {
    start(SimConfig::new(seed())).await
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn ids(v: &[InstanceId]) -> Vec<&str> {
    v.iter().map(|i| i.0.as_str()).collect()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A signed client for the simulator's API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:port`
    pub base: String,
    pub key: String,
    pub secret: String,
    /// A `Host` header to send (zone selection); `None`: the default one.
    pub host: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Api {
    pub fn new(sim: &SimHandle) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            base: sim.base_url(),
            key: KEY.into(),
            secret: SECRET.into(),
            host: None,
        }
    }

    pub fn zone(&self, zone: &str) -> Api {
        Api {
            host: Some(format!("api-{zone}.exoscale.example")),
            ..self.clone()
        }
    }

    /// `target` is the escaped path with query, e.g. `/v2/instance?ip-address=…`.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        body: &str,
        expires: u64,
    ) -> reqwest::RequestBuilder {
        let auth = sign::authorization(
            &self.key,
            &self.secret,
            method,
            target,
            body.as_bytes(),
            expires,
        );
        self.raw(method, target, body).header("Authorization", auth)
    }

    /// Unsigned.
    pub fn raw(&self, method: &str, target: &str, body: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(method, format!("{}{target}", self.base))
            .body(body.to_string());
        if !body.is_empty() {
            rb = rb.header("Content-Type", "application/json");
        }
        if let Some(h) = &self.host {
            rb = rb.header("Host", h);
        }
        rb
    }

    pub async fn send(rb: reqwest::RequestBuilder) -> Reply {
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

    pub async fn get(&self, target: &str) -> Reply {
        Self::send(self.request("GET", target, "", now_unix() + 600)).await
    }

    pub async fn put(&self, target: &str, body: &str) -> Reply {
        Self::send(self.request("PUT", target, body, now_unix() + 600)).await
    }

    /// `PUT /v2/elastic-ip/{eip}:{action}` for `instance`; returns the operation.
    pub async fn eip_action(&self, eip_id: &str, action: &str, instance: &str) -> Reply {
        self.put(
            &format!("/v2/elastic-ip/{eip_id}:{action}"),
            &format!(r#"{{"instance": {{"id": "{instance}"}}}}"#),
        )
        .await
    }

    /// Polls the operation until it leaves `pending` (or 3 s pass); returns its last state.
    pub async fn wait_operation(&self, op_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let r = self.get(&format!("/v2/operation/{op_id}")).await;
            assert_eq!(r.status, 200, "{}", r.json);
            if r.json["state"] != "pending" || tokio::time::Instant::now() > deadline {
                return r.json;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Unauthenticated control API.
    pub async fn control(&self, method: &str, path: &str, body: &str) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        Self::send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .body(body.to_string()),
        )
        .await
    }
}

/// The object's keys, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

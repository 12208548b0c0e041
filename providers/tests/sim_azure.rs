//! The simulated Azure as a client sees it, over raw HTTP: Entra and IMDS tokens, ARM
//! authentication, NIC/public-IP shapes, whole-resource PUTs, etags, the one-holder rules,
//! long-running operations and their failures, busy resources, faults, the holder timeline and
//! the route hook; and the same simulator behind the shared handle (`sim::start`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exoip_providers::sim::azure::{AzureLabSeed, AzureOptions, AzureSeed, AzureServers, AzureSim};
use exoip_providers::sim::{
    self, Faults, HolderEvent, Reason, RouteRunner, SimConfig, SimError, SimHandle, TimelineEvent,
    Trigger,
};
use exoip_providers::InstanceId;
use serde_json::{json, Value};

const TENANT: &str = "5b1f4b2e-0000-4000-8000-000000000001";
const SUB: &str = "8d10c5e2-0000-4000-8000-000000000002";
const RG: &str = "rg-exoip";
const CLIENT: &str = "c1e7a9f0-0000-4000-8000-000000000003";
const SECRET: &str = "sim-azure-secret-change-me";
const USER_MI: &str = "a5e1d000-0000-4000-8000-000000000001";
const LB2_MI: &str = "5e1f0000-0000-4000-8000-000000000012";
const PIP: &str = "203.0.113.10";
const VIP: &str = "192.0.2.100";
const ARM: &str = "https://management.azure.com/.default";

fn network(kind: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/{kind}/{name}")
}

fn nic_path(name: &str) -> String {
    network("networkInterfaces", name)
}

fn pip_path() -> String {
    network("publicIPAddresses", "pip-vip")
}

fn subnet_id() -> String {
    format!(
        "{}/subnets/default",
        network("virtualNetworks", "vnet-exoip")
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(v: &[InstanceId]) -> Vec<&str> {
    v.iter().map(|i| i.0.as_str()).collect()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip(source))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The emulator served on loopback ports, and a client holding a service-principal token.
struct Az {
    sim: Arc<AzureSim>,
    servers: AzureServers,
    http: reqwest::Client,
    base: String,
    imds: String,
    token: String,
}

async fn start_with(seed: AzureSeed, faults: Faults) -> Az {
    start_full(seed, faults, None).await
}

async fn start_full(seed: AzureSeed, faults: Faults, routes: Option<Arc<dyn RouteRunner>>) -> Az {
    let sim = AzureSim::new(&seed, faults, None, routes).expect("a valid seed");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let servers = sim.serve(loopback, Some(loopback)).await.unwrap();
    let base = servers.base_url();
    let imds = servers.imds_url().unwrap();
    let mut az = Az {
        sim,
        servers,
        http: client(),
        base,
        imds,
        token: String::new(),
    };
    let r = az.sp_token(SECRET, ARM).await;
    assert_eq!(r.status, 200, "{}", r.json);
    az.token = r.json["access_token"].as_str().unwrap().to_string();
    az
}

async fn start() -> Az {
    start_with(AzureSeed::example(), Faults::default()).await
}

impl Az {
    async fn sp_token(&self, secret: &str, scope: &str) -> Reply {
        send(
            self.http
                .post(format!("{}/{TENANT}/oauth2/v2.0/token", self.base))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT),
                    ("client_secret", secret),
                    ("scope", scope),
                ]),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version=2024-05-01", self.base)
    }

    async fn get(&self, path: &str) -> Reply {
        send(self.http.get(self.url(path)).bearer_auth(&self.token)).await
    }

    async fn put(&self, path: &str, body: &Value, if_match: Option<&str>) -> Reply {
        let mut rb = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(e) = if_match {
            rb = rb.header("If-Match", e);
        }
        send(rb).await
    }

    async fn nic(&self, name: &str) -> Value {
        let r = self.get(&nic_path(name)).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json
    }

    /// Polls the PUT's `Azure-AsyncOperation` until a terminal status; returns the last body.
    async fn wait(&self, put: &Reply) -> Value {
        let url = put
            .header("azure-asyncoperation")
            .expect("a long-running PUT names its operation");
        self.wait_url(url).await
    }

    async fn wait_url(&self, url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = send(self.http.get(url).bearer_auth(&self.token)).await;
            assert_eq!(r.status, 200, "{}", r.json);
            if r.json["status"] != "InProgress" {
                return r.json;
            }
            assert!(
                Instant::now() < deadline,
                "operation still running: {}",
                r.json
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET, change, PUT with the etag, wait: the whole move step a client performs.
    async fn edit(&self, nic: &str, change: impl FnOnce(&mut Value)) -> Value {
        let got = self.nic(nic).await;
        let mut body = put_body(&got);
        change(&mut body);
        let r = self.put(&nic_path(nic), &body, got["etag"].as_str()).await;
        assert_eq!(r.status, 200, "{}", r.json);
        let done = self.wait(&r).await;
        assert_eq!(done["status"], "Succeeded", "{done}");
        done
    }

    async fn set_faults(&self, f: Faults) {
        self.sim.set_faults(f).unwrap();
    }

    async fn control(&self, method: &str, path: &str, body: Value) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        send(
            self.http
                .request(m, format!("{}{path}", self.base))
                .json(&body),
        )
        .await
    }
}

/// A PUT body from a GET, as the SDKs build it: read-only fields dropped, every writable
/// field kept.
fn put_body(got: &Value) -> Value {
    let mut b = got.clone();
    let o = b.as_object_mut().unwrap();
    for k in ["etag", "type"] {
        o.remove(k);
    }
    let p = o["properties"].as_object_mut().unwrap();
    for k in [
        "provisioningState",
        "resourceGuid",
        "macAddress",
        "virtualMachine",
        "primary",
        "hostedWorkloads",
        "tapConfigurations",
        "vnetEncryptionSupported",
    ] {
        p.remove(k);
    }
    for c in p["ipConfigurations"].as_array_mut().unwrap() {
        let c = c.as_object_mut().unwrap();
        c.remove("etag");
        c.remove("type");
        c["properties"]
            .as_object_mut()
            .unwrap()
            .remove("provisioningState");
    }
    b
}

fn configs(body: &mut Value) -> &mut Vec<Value> {
    body["properties"]["ipConfigurations"]
        .as_array_mut()
        .unwrap()
}

fn config_names(nic: &Value) -> Vec<String> {
    nic["properties"]["ipConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn vip_config() -> Value {
    json!({"name": "vip", "properties": {
        "privateIPAddress": VIP, "privateIPAllocationMethod": "Static",
        "privateIPAddressVersion": "IPv4", "primary": false,
        "subnet": {"id": subnet_id()}}})
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn service_principal_tokens_and_their_errors() {
    let az = start().await;
    let r = az.sp_token(SECRET, ARM).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(
        r.json["expires_in"], 3599,
        "a number from Entra: {}",
        r.json
    );
    assert_eq!(r.json["ext_expires_in"], 3599);
    assert!(r.json["access_token"].as_str().unwrap().starts_with("eyJ"));
    // The other ARM audience and a trailing-slash-less resource are both ARM.
    let r = az
        .sp_token(SECRET, "https://management.core.windows.net//.default")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    let r = az.sp_token("wrong-secret", ARM).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"], "invalid_client");
    assert_eq!(r.json["error_codes"], json!([7000215]));
    assert!(r.json["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    assert!(!r.json.to_string().contains("wrong-secret"));

    let r = az.sp_token(SECRET, "https://management.azure.com/").await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let r = az
        .sp_token(SECRET, "https://vault.azure.net/.default")
        .await;
    assert_eq!(r.json["error"], "invalid_resource");

    let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", az.base);
    let form = |pairs: &[(&str, &str)]| {
        send(
            az.http
                .post(&token_url)
                .form(&pairs.iter().map(|(a, b)| (*a, *b)).collect::<Vec<_>>()),
        )
    };
    let r = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "00000000-0000-4000-8000-00000000dead"),
        ("client_secret", SECRET),
        ("scope", ARM),
    ])
    .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let r = form(&[
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", ARM),
    ])
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json["error_description"]
        .as_str()
        .unwrap()
        .contains("'grant_type'"));
    let r = form(&[
        ("grant_type", "password"),
        ("client_id", CLIENT),
        ("scope", ARM),
    ])
    .await;
    assert_eq!(r.json["error"], "unsupported_grant_type");
    // JSON is not a form: Entra sees no parameters at all.
    let r = send(az.http.post(&token_url).json(&json!({
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET,
        "scope": ARM})))
    .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = send(az.http.get(&token_url)).await;
    assert_eq!(r.status, 400);
    let r = send(
        az.http
            .post(format!("{}/other-tenant/oauth2/v2.0/token", az.base))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error_codes"], json!([90002]));

    let r = send(az.http.get(format!(
        "{}/{TENANT}/v2.0/.well-known/openid-configuration",
        az.base
    )))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["token_endpoint"], token_url);
}

#[tokio::test]
async fn arm_requires_a_valid_bearer_token_and_an_api_version() {
    let az = start().await;
    let url = az.url(&nic_path("nic-lb1"));

    let r = send(az.http.get(&url)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "AuthenticationFailed");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(&format!(
            "Bearer authorization_uri=\"{}/{TENANT}\"",
            az.base
        )),
        "{challenge}"
    );
    let r = send(az.http.get(&url).bearer_auth("eyJ.not.issued")).await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationToken"));
    let r = send(az.http.get(&url).header("Authorization", az.token.clone())).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "AuthenticationFailed"),
        "no scheme"
    );

    let r = send(
        az.http
            .get(format!("{}{}", az.base, nic_path("nic-lb1")))
            .bearer_auth(&az.token),
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "MissingApiVersionParameter"));
    let r = send(
        az.http
            .get(format!(
                "{}{}?api-version=1999-01-01",
                az.base,
                nic_path("nic-lb1")
            ))
            .bearer_auth(&az.token),
    )
    .await;
    assert_eq!(r.status, 200, "any api-version is accepted");

    let r = az
        .get(&nic_path("nic-lb1").replace(SUB, "00000000-0000-4000-8000-000000000000"))
        .await;
    assert_eq!((r.status, r.code()), (404, "SubscriptionNotFound"));
    let r = az.get(&nic_path("nic-lb1").replace(RG, "rg-other")).await;
    assert_eq!((r.status, r.code()), (404, "ResourceGroupNotFound"));
    let r = az.get(&nic_path("nic-none")).await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
    // ARM paths and names are case-insensitive.
    let r = az
        .get(&nic_path("NIC-LB1").replace("resourceGroups", "resourcegroups"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["name"], "nic-lb1");
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime_and_on_demand() {
    let mut seed = AzureSeed::example();
    seed.options.token_lifetime = Duration::from_secs(1);
    let mut az = start_with(seed, Faults::default()).await;
    let r = az.sp_token(SECRET, ARM).await;
    assert_eq!(r.json["expires_in"], 1);
    assert_eq!(az.get(&nic_path("nic-lb1")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = az.get(&nic_path("nic-lb1")).await;
    assert_eq!((r.status, r.code()), (401, "ExpiredAuthenticationToken"));
    assert!(r.header("www-authenticate").is_some());

    // A fresh token works; the control API can expire it mid-failover.
    az.sim
        .set_options(AzureOptions {
            token_lifetime: Duration::from_secs(600),
            ..az.sim.options()
        })
        .unwrap();
    az.token = az.sp_token(SECRET, ARM).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(az.get(&nic_path("nic-lb1")).await.status, 200);
    let r = az
        .control("POST", "/_sim/azure/tokens/expire", json!({}))
        .await;
    assert!(r.json["expired"].as_u64().unwrap() >= 1, "{}", r.json);
    assert_eq!(az.get(&nic_path("nic-lb1")).await.status, 401);
}

#[tokio::test]
async fn imds_tokens_need_the_metadata_header_and_select_the_identity() {
    let mut seed = AzureSeed::example();
    // This process (127.0.0.1) speaks as lb2.
    seed.options.imds_default_vm = Some("lb2".into());
    let az = start_with(seed, Faults::default()).await;
    let url = |q: &str| {
        format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2F\
             management.azure.com%2F{q}",
            az.imds
        )
    };

    let r = send(az.http.get(url(""))).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("bad_request_102"))
    );
    let r = send(
        az.http
            .get(url(""))
            .header("Metadata", "true")
            .header("X-Forwarded-For", "1.2.3.4"),
    )
    .await;
    assert_eq!(r.status, 400, "IMDS refuses proxied requests");

    let r = send(az.http.get(url("")).header("Metadata", "true")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    for k in [
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
        "client_id",
    ] {
        assert!(r.json[k].is_string(), "{k} is a string: {}", r.json);
    }
    assert_eq!(r.json["expires_in"], "3599");
    assert_eq!(r.json["resource"], "https://management.azure.com/");
    assert_eq!(
        r.json["client_id"], LB2_MI,
        "the system-assigned identity by default"
    );
    let expires_on: u64 = r.json["expires_on"].as_str().unwrap().parse().unwrap();
    let not_before: u64 = r.json["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_on - not_before, 3599);
    // The token works on ARM.
    let mi = r.json["access_token"].as_str().unwrap().to_string();
    let g = send(az.http.get(az.url(&nic_path("nic-lb2"))).bearer_auth(&mi)).await;
    assert_eq!(g.status, 200);

    let r = send(
        az.http
            .get(url(&format!("&client_id={USER_MI}")))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.json["client_id"], USER_MI, "{}", r.json);
    let res_id = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/\
         userAssignedIdentities/id-exoip"
    );
    let r = send(
        az.http
            .get(url(&format!("&msi_res_id={}", res_id.replace('/', "%2F"))))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.json["client_id"], USER_MI, "{}", r.json);
    let r = send(
        az.http
            .get(url("&client_id=00000000-0000-4000-8000-00000000dead"))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error_description"], "Identity not found");
    let r = send(
        az.http
            .get(format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01",
                az.imds
            ))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.status, 400, "resource is required");
    let r = send(
        az.http
            .get(format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
                az.imds
            ))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("invalid_resource"))
    );
}

/// Two VMs whose primary addresses are loopback addresses a test can send from, `a` with the
/// secondary address 127.0.0.100.
fn loopback_seed() -> AzureSeed {
    AzureSeed::from_json(&format!(
        r#"{{"tenant_id": "{TENANT}", "subscription_id": "{SUB}", "resource_group": "{RG}",
  "location": "westeurope",
  "service_principals": [{{"client_id": "{CLIENT}", "client_secret": "{SECRET}"}}],
  "virtual_networks": [{{"name": "lo", "subnets": [{{"name": "s", "address_prefix": "127.0.0.0/24"}}]}}],
  "vms": [
    {{"name": "a", "vm_id": "7a1d0000-0000-4000-8000-0000000000a1", "zone": "2",
      "tags": {{"exoip-group": "web", "env": "test"}},
      "nics": [{{"name": "nic-a", "mac": "00-0D-3A-1B-C7-21", "ip_configurations": [
        {{"name": "ipconfig1", "private_ip": "127.0.0.11"}},
        {{"name": "vip", "private_ip": "127.0.0.100", "primary": false}}]}}]}},
    {{"name": "b", "vm_id": "7a1d0000-0000-4000-8000-0000000000b2",
      "nics": [{{"name": "nic-b", "ip_configurations": [{{"name": "ipconfig1", "private_ip": "127.0.0.12"}}]}}]}}
  ]}}"#
    ))
    .expect("a valid seed")
}

fn all_strings(v: &Value, path: &str) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| all_strings(v, &format!("{path}.{k}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| all_strings(v, &format!("{path}[{i}]"))),
        Value::String(_) => {}
        other => panic!("{path} is {other}, not a string"),
    }
}

#[tokio::test]
async fn imds_identifies_the_vm_by_source_address() {
    let az = start_with(loopback_seed(), Faults::default()).await;
    let doc = |source: &'static str, path: &'static str| {
        let url = format!("{}{path}", az.imds);
        async move {
            client_from(source)
                .get(url)
                .header("Metadata", "true")
                .send()
                .await
        }
    };

    let r = doc("127.0.0.11", "/metadata/instance?api-version=2021-02-01")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    all_strings(&a, "");
    assert_eq!(a["compute"]["name"], "a");
    assert_eq!(a["compute"]["vmId"], "7a1d0000-0000-4000-8000-0000000000a1");
    assert_eq!(a["compute"]["subscriptionId"], SUB);
    assert_eq!(a["compute"]["resourceGroupName"], RG);
    assert_eq!(a["compute"]["location"], "westeurope");
    assert_eq!(a["compute"]["zone"], "2");
    assert_eq!(
        a["compute"]["resourceId"],
        format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/a")
    );
    assert_eq!(a["compute"]["tags"], "env:test;exoip-group:web");
    assert_eq!(
        a["compute"]["tagsList"],
        json!([{"name": "env", "value": "test"}, {"name": "exoip-group", "value": "web"}])
    );
    let nic = &a["network"]["interface"][0];
    assert_eq!(nic["macAddress"], "000D3A1BC721");
    assert_eq!(
        nic["ipv4"]["ipAddress"][0]["privateIpAddress"],
        "127.0.0.11"
    );
    assert_eq!(
        nic["ipv4"]["ipAddress"][1]["privateIpAddress"],
        "127.0.0.100"
    );
    assert_eq!(
        nic["ipv4"]["subnet"],
        json!([{"address": "127.0.0.0", "prefix": "24"}])
    );

    let r = doc(
        "127.0.0.12",
        "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
    )
    .await
    .unwrap();
    assert_eq!(r.text().await.unwrap(), "b");
    let r = doc(
        "127.0.0.12",
        "/metadata/instance/compute?api-version=2021-02-01",
    )
    .await
    .unwrap();
    let compute: Value = r.json().await.unwrap();
    assert_eq!(
        (compute["name"].as_str(), compute["zone"].as_str()),
        (Some("b"), Some(""))
    );

    let r = doc("127.0.0.11", "/metadata/instance").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["newest-versions"].is_array(), "{body}");
    let r = client_from("127.0.0.11")
        .get(format!(
            "{}/metadata/instance?api-version=2021-02-01",
            az.imds
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "Metadata: true is required");

    // From the VIP: no answer at all. From nobody's address: 404 (no default VM).
    assert!(
        doc("127.0.0.100", "/metadata/instance?api-version=2021-02-01")
            .await
            .is_err()
    );
    let r = doc("127.0.0.1", "/metadata/instance?api-version=2021-02-01")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // IMDS is not on the API listener.
    let r = send(az.http.get(format!(
        "{}/metadata/instance?api-version=2021-02-01",
        az.base
    )))
    .await;
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn resource_shapes_etags_and_paging() {
    let az = start().await;
    let r = az.get(&nic_path("nic-lb1")).await;
    assert_eq!(r.status, 200);
    let nic = &r.json;
    let etag = nic["etag"].as_str().unwrap();
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    assert_eq!(r.header("etag"), Some(etag), "header equals body");
    assert_eq!(nic["id"], nic_path("nic-lb1"));
    assert_eq!(nic["location"], "westeurope");
    assert_eq!(nic["tags"]["exoip-group"], "lab");
    let p = &nic["properties"];
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["primary"], true);
    assert_eq!(
        p["networkSecurityGroup"]["id"],
        network("networkSecurityGroups", "exoip")
    );
    assert_eq!(
        p["virtualMachine"]["id"],
        format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/lb1")
    );
    assert!(p["macAddress"].as_str().unwrap().starts_with("00-0D-3A-"));
    let cfgs = p["ipConfigurations"].as_array().unwrap();
    assert_eq!(cfgs.len(), 2);
    assert_eq!(
        cfgs[0]["etag"], etag,
        "ipConfigurations share the NIC's etag"
    );
    assert_eq!(
        cfgs[0]["id"],
        format!("{}/ipConfigurations/ipconfig1", nic_path("nic-lb1"))
    );
    assert_eq!(cfgs[0]["properties"]["primary"], true);
    assert_eq!(cfgs[0]["properties"]["privateIPAddress"], "192.0.2.11");
    assert_eq!(cfgs[0]["properties"]["publicIPAddress"]["id"], pip_path());
    assert_eq!(cfgs[0]["properties"]["subnet"]["id"], subnet_id());
    assert_eq!(cfgs[1]["name"], "vip");
    assert_eq!(cfgs[1]["properties"]["primary"], false);
    assert_eq!(cfgs[1]["properties"]["privateIPAddress"], VIP);

    let r = az
        .get(&format!("{}/ipConfigurations/vip", nic_path("nic-lb1")))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, cfgs[1]);

    let r = az.get(&pip_path()).await;
    assert_eq!(r.json["sku"]["name"], "Standard");
    assert_eq!(r.json["properties"]["ipAddress"], PIP);
    assert_eq!(r.json["properties"]["publicIPAllocationMethod"], "Static");
    assert_eq!(
        r.json["properties"]["ipConfiguration"]["id"],
        format!("{}/ipConfigurations/ipconfig1", nic_path("nic-lb1"))
    );
    assert_eq!(r.header("etag"), r.json["etag"].as_str());

    let r = az.get(&network("networkSecurityGroups", "exoip")).await;
    assert_eq!(
        r.json["properties"]["networkInterfaces"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Lists are paged (page_size 2 by default): follow nextLink.
    let first = az
        .get(&format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/networkInterfaces"))
        .await;
    assert_eq!(first.json["value"].as_array().unwrap().len(), 2);
    let next = first.json["nextLink"].as_str().unwrap();
    assert!(next.starts_with(&az.base), "{next}");
    let second = send(az.http.get(next).bearer_auth(&az.token)).await;
    let rest = second.json["value"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["name"], "nic-lb3");
    assert!(second.json.get("nextLink").is_none());

    let vm = az
        .get(&format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/lb2"))
        .await;
    assert_eq!(
        vm.json["properties"]["networkProfile"]["networkInterfaces"][0]["id"],
        nic_path("nic-lb2")
    );
    assert_eq!(vm.json["identity"]["type"], "SystemAssigned, UserAssigned");
    az.sim.set_power_state("lb2", "stopped").unwrap();
    let iv = az
        .get(&format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/lb2/instanceView"))
        .await;
    assert_eq!(iv.json["statuses"][1]["code"], "PowerState/stopped");
}

// ---------------------------------------------------------------------------------------------
// Writes

#[tokio::test]
async fn put_replaces_the_whole_nic() {
    let az = start().await;
    // Built from the GET: everything writable survives, a new writable field sticks.
    az.edit("nic-lb1", |b| {
        b["properties"]["enableIPForwarding"] = json!(true);
        b["properties"]["disableTcpStateTracking"] = json!(true);
    })
    .await;
    let nic = az.nic("nic-lb1").await;
    assert_eq!(nic["properties"]["enableIPForwarding"], true);
    assert_eq!(nic["properties"]["disableTcpStateTracking"], true);
    assert!(
        nic["properties"]["networkSecurityGroup"].is_object(),
        "NSG kept"
    );
    assert_eq!(nic["tags"]["exoip-group"], "lab", "tags kept");
    assert_eq!(config_names(&nic), ["ipconfig1", "vip"]);

    // A body with only the primary ipConfiguration: everything it omits is reset.
    let got = az.nic("nic-lb1").await;
    let body = json!({"location": "westeurope", "properties": {"ipConfigurations": [
        {"name": "ipconfig1", "properties": {"privateIPAddress": "192.0.2.11",
         "privateIPAllocationMethod": "Static", "subnet": {"id": subnet_id()}}}]}});
    let r = az
        .put(&nic_path("nic-lb1"), &body, got["etag"].as_str())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["properties"]["provisioningState"], "Updating");
    assert!(r.header("retry-after").is_some());
    az.wait(&r).await;
    let nic = az.nic("nic-lb1").await;
    let p = &nic["properties"];
    assert_eq!(p["provisioningState"], "Succeeded");
    assert!(
        p.get("networkSecurityGroup").is_none(),
        "NSG dropped: {nic}"
    );
    assert!(nic.get("tags").is_none(), "tags dropped");
    assert_eq!(p["enableIPForwarding"], false);
    assert_eq!(p["disableTcpStateTracking"], false, "back to its default");
    assert_eq!(config_names(&nic), ["ipconfig1"]);
    assert_eq!(
        p["ipConfigurations"][0]["properties"]["primary"], true,
        "a lone config is primary"
    );
    assert!(p["ipConfigurations"][0]["properties"]
        .get("publicIPAddress")
        .is_none());
    // The back-references follow.
    let nsg = az.get(&network("networkSecurityGroups", "exoip")).await;
    assert_eq!(
        nsg.json["properties"]["networkInterfaces"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let pip = az.get(&pip_path()).await;
    assert!(pip.json["properties"].get("ipConfiguration").is_none());
    assert!(az.sim.holders(ip(PIP)).is_empty());
    assert!(az.sim.holders(ip(VIP)).is_empty());
    // PATCH changes tags only.
    let r = send(
        az.http
            .patch(az.url(&nic_path("nic-lb1")))
            .bearer_auth(&az.token)
            .json(&json!({"tags": {"exoip-group": "lab"}})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["tags"]["exoip-group"], "lab");
}

#[tokio::test]
async fn a_stale_if_match_gets_412() {
    let mut seed = AzureSeed::example();
    seed.options.operation_retry_after_secs = 1;
    let az = start_with(seed, Faults::default()).await;
    let got = az.nic("nic-lb2").await;
    let e1 = got["etag"].as_str().unwrap().to_string();
    let r = az
        .put(&nic_path("nic-lb2"), &put_body(&got), Some(&e1))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("retry-after"), Some("1"));
    let e2 = r.json["etag"].as_str().unwrap().to_string();
    assert_ne!(e1, e2, "a PUT changes the etag");
    az.wait(&r).await;
    let e3 = az.nic("nic-lb2").await["etag"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        e2, e3,
        "so does the operation's completion: re-read before the next write"
    );

    for stale in [&e1, &e2] {
        let r = az
            .put(&nic_path("nic-lb2"), &put_body(&got), Some(stale))
            .await;
        assert_eq!(r.status, 412);
        assert_eq!(r.code(), "PreconditionFailed");
        assert_eq!(
            r.json["error"]["details"][0]["code"],
            "PreconditionFailedEtagMismatch"
        );
    }
    let r = az
        .put(&nic_path("nic-lb2"), &put_body(&got), Some(&e3))
        .await;
    assert_eq!(r.status, 200);
    az.wait(&r).await;
    let r = az
        .put(&nic_path("nic-lb2"), &put_body(&got), Some("*"))
        .await;
    assert_eq!(r.status, 200, "* matches any etag");
}

#[tokio::test]
async fn a_public_ip_sits_on_one_ipconfiguration_only() {
    let az = start().await;
    let attach = |b: &mut Value| {
        configs(b)[0]["properties"]["publicIPAddress"] = json!({"id": pip_path()});
    };
    // While lb1 holds it.
    let got = az.nic("nic-lb2").await;
    let mut body = put_body(&got);
    attach(&mut body);
    let r = az
        .put(&nic_path("nic-lb2"), &body, got["etag"].as_str())
        .await;
    assert_eq!((r.status, r.code()), (400, "PublicIPAddressInUse"));
    assert_eq!(
        r.json["error"]["message"],
        format!(
            "Resource {}/ipConfigurations/ipconfig1 is referencing public IP address {} that is \
             already allocated to resource {}/ipConfigurations/ipconfig1.",
            nic_path("nic-lb2"),
            pip_path(),
            nic_path("nic-lb1")
        )
    );

    // Released, but the detaching operation still runs: still reserved.
    az.set_faults(Faults {
        op_delay: Duration::from_millis(1500),
        ..Faults::default()
    })
    .await;
    let got1 = az.nic("nic-lb1").await;
    let mut detach = put_body(&got1);
    configs(&mut detach)[0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("publicIPAddress");
    let d = az
        .put(&nic_path("nic-lb1"), &detach, got1["etag"].as_str())
        .await;
    assert_eq!(d.status, 200);
    let r = az
        .put(&nic_path("nic-lb2"), &body, got["etag"].as_str())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "PublicIPAddressInUse"),
        "attach before detach finished"
    );
    assert_eq!(
        names(&az.sim.holders(ip(PIP))),
        ["lb1"],
        "still held until the detach completes"
    );
    az.wait(&d).await;
    assert!(az.sim.holders(ip(PIP)).is_empty());
    let r = az
        .put(&nic_path("nic-lb2"), &body, got["etag"].as_str())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    az.wait(&r).await;
    assert_eq!(names(&az.sim.holders(ip(PIP))), ["lb2"]);
    let pip = az.get(&pip_path()).await;
    assert_eq!(
        pip.json["properties"]["ipConfiguration"]["id"],
        format!("{}/ipConfigurations/ipconfig1", nic_path("nic-lb2"))
    );

    // The same public IP twice in one body.
    let got = az.nic("nic-lb2").await;
    let mut body = put_body(&got);
    let mut second = vip_config();
    second["properties"]["privateIPAddress"] = json!("192.0.2.101");
    second["properties"]["publicIPAddress"] = json!({"id": pip_path()});
    configs(&mut body).push(second);
    let r = az
        .put(&nic_path("nic-lb2"), &body, got["etag"].as_str())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "PublicIPReferencedByMultipleIPConfigs")
    );
}

#[tokio::test]
async fn ip_configuration_rules() {
    let az = start().await;
    let got = az.nic("nic-lb2").await;
    let etag = got["etag"].as_str().unwrap().to_string();
    let try_put = |body: Value| {
        let etag = etag.clone();
        let az = &az;
        async move { az.put(&nic_path("nic-lb2"), &body, Some(&etag)).await }
    };

    let mut b = put_body(&got);
    b["properties"]["ipConfigurations"] = json!([]);
    let r = try_put(b).await;
    assert_eq!((r.status, r.code()), (400, "InvalidIPConfigCount"));

    let mut b = put_body(&got);
    let mut other = vip_config();
    other["name"] = json!("second");
    other["properties"]["privateIPAddress"] = json!("192.0.2.101");
    other["properties"]["primary"] = json!(true);
    configs(&mut b).push(other.clone());
    let r = try_put(b).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary")
    );

    // Replacing (or renaming) the primary ipConfiguration.
    let mut b = put_body(&got);
    other["properties"]["primary"] = json!(true);
    b["properties"]["ipConfigurations"] = json!([other]);
    let r = try_put(b).await;
    assert_eq!((r.status, r.code()), (400, "IpConfigDeleteNotSupported"));

    // lb1 holds the VIP.
    let mut b = put_body(&got);
    configs(&mut b).push(vip_config());
    let r = try_put(b).await;
    assert_eq!((r.status, r.code()), (400, "PrivateIPAddressInUse"));
    assert!(r.json["error"]["message"].as_str().unwrap().contains(VIP));

    let mut b = put_body(&got);
    let mut outside = vip_config();
    outside["properties"]["privateIPAddress"] = json!("198.51.100.7");
    configs(&mut b).push(outside);
    let r = try_put(b).await;
    assert_eq!((r.status, r.code()), (400, "PrivateIPAddressNotInSubnet"));

    let mut b = put_body(&got);
    let mut reserved = vip_config();
    reserved["properties"]["privateIPAddress"] = json!("192.0.2.1");
    configs(&mut b).push(reserved);
    let r = try_put(b).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "PrivateIPAddressInReservedRange")
    );

    // A copy of lb1's `vip` object, its id included, is refused.
    let lb1 = az.nic("nic-lb1").await;
    let mut b = put_body(&got);
    let mut copied = lb1["properties"]["ipConfigurations"][1].clone();
    copied["properties"]["privateIPAddress"] = json!("192.0.2.102");
    configs(&mut b).push(copied);
    let r = try_put(b).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json["error"]["message"].as_str().unwrap().contains("id"),
        "{}",
        r.json
    );

    let mut b = put_body(&got);
    let mut bad_subnet = vip_config();
    bad_subnet["properties"]["privateIPAddress"] = json!("192.0.2.102");
    bad_subnet["properties"]["subnet"]["id"] = json!(subnet_id().replace("default", "nope"));
    configs(&mut b).push(bad_subnet);
    let r = try_put(b).await;
    assert_eq!((r.status, r.code()), (400, "InvalidResourceReference"));

    let r = try_put(json!({"properties": {}})).await;
    assert_eq!((r.status, r.code()), (400, "LocationRequired"));
    let r = send(
        az.http
            .put(az.url(&nic_path("nic-lb2")))
            .bearer_auth(&az.token)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestContent"));

    // Dynamic allocation picks the first free address (.4: .0-.3 are reserved).
    let mut b = put_body(&got);
    configs(&mut b).push(json!({"name": "dyn", "properties": {
        "privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet_id()}}}));
    let r = try_put(b).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["properties"]["ipConfigurations"][1]["properties"]["privateIPAddress"],
        "192.0.2.4"
    );
    // Nothing was applied by the refused PUTs.
    az.wait(&r).await;
    assert_eq!(names(&az.sim.holders(ip(VIP))), ["lb1"]);
}

#[tokio::test]
async fn public_ip_puts_are_whole_and_long_running() {
    let az = start_with(
        AzureSeed::example(),
        Faults {
            op_delay: Duration::from_millis(1500),
            ..Faults::default()
        },
    )
    .await;
    let got = az.get(&pip_path()).await.json;
    let mut body = got.clone();
    body["tags"] = json!({"role": "vip"});
    let r = az.put(&pip_path(), &body, got["etag"].as_str()).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["properties"]["provisioningState"], "Updating");
    assert!(r.header("azure-asyncoperation").is_some());
    // The public IP is being updated: writing it is refused, and so is a NIC referencing it.
    let again = az.get(&pip_path()).await.json;
    let busy = az.put(&pip_path(), &body, again["etag"].as_str()).await;
    assert_eq!(
        (busy.status, busy.code()),
        (409, "AnotherOperationInProgress")
    );
    let lb1 = az.nic("nic-lb1").await;
    let nic = az
        .put(&nic_path("nic-lb1"), &put_body(&lb1), lb1["etag"].as_str())
        .await;
    assert_eq!((nic.status, nic.code()), (429, "RetryableError"));
    assert_eq!(
        nic.json["error"]["details"][0]["code"],
        "ReferencedResourceNotProvisioned"
    );
    assert!(nic.header("retry-after").is_some());
    assert_eq!(az.wait(&r).await["status"], "Succeeded");
    let done = az.get(&pip_path()).await.json;
    assert_eq!(done["tags"]["role"], "vip");
    assert_eq!(
        done["properties"]["ipConfiguration"],
        got["properties"]["ipConfiguration"]
    );

    // Whole PUT: omitted tags are reset; an omitted SKU would mean Basic, which is refused.
    let mut bare = json!({"location": "westeurope", "sku": {"name": "Standard"},
                          "properties": {"publicIPAllocationMethod": "Static"}});
    let r = az.put(&pip_path(), &bare, done["etag"].as_str()).await;
    assert_eq!(r.status, 200, "{}", r.json);
    az.wait(&r).await;
    assert!(az.get(&pip_path()).await.json.get("tags").is_none());
    bare.as_object_mut().unwrap().remove("sku");
    let etag = az.get(&pip_path()).await.json["etag"].clone();
    let r = az.put(&pip_path(), &bare, etag.as_str()).await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Basic"));
}

// ---------------------------------------------------------------------------------------------
// Operations

#[tokio::test]
async fn operations_go_in_progress_then_succeeded_or_failed() {
    let az = start_with(
        AzureSeed::example(),
        Faults {
            op_delay: Duration::from_millis(1500),
            ..Faults::default()
        },
    )
    .await;
    let got = az.nic("nic-lb3").await;
    let mut body = put_body(&got);
    configs(&mut body).push({
        let mut v = vip_config();
        v["name"] = json!("extra");
        v["properties"]["privateIPAddress"] = json!("192.0.2.150");
        v
    });
    let r = az
        .put(&nic_path("nic-lb3"), &body, got["etag"].as_str())
        .await;
    assert_eq!(r.status, 200);
    let url = r.header("azure-asyncoperation").unwrap().to_string();
    assert!(
        url.starts_with(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/",
            az.base
        )) && url.ends_with("?api-version=2024-05-01"),
        "{url}"
    );
    let poll = send(az.http.get(&url).bearer_auth(&az.token)).await;
    assert_eq!(poll.json["status"], "InProgress");
    assert_eq!(poll.header("retry-after"), Some("10"));
    let pending = az.nic("nic-lb3").await;
    assert_eq!(pending["properties"]["provisioningState"], "Updating");
    assert_eq!(
        config_names(&pending),
        ["ipconfig1", "extra"],
        "GET shows the desired state"
    );
    assert!(
        az.sim.holders(ip("192.0.2.150")).is_empty(),
        "not in force yet"
    );
    let r = send(az.http.get(&url)).await;
    assert_eq!(r.status, 401, "polling needs the token too");
    let done = az.wait_url(&url).await;
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(
        az.nic("nic-lb3").await["properties"]["provisioningState"],
        "Succeeded"
    );
    assert_eq!(names(&az.sim.holders(ip("192.0.2.150"))), ["lb3"]);

    // A failed operation: nothing applied, the NIC Failed; an unchanged re-PUT resets it.
    az.set_faults(Faults {
        op_failure: Trigger::count(1),
        op_failure_reason: Reason::Fault,
        ..Faults::default()
    })
    .await;
    let got = az.nic("nic-lb3").await;
    let mut body = put_body(&got);
    configs(&mut body).pop();
    let r = az
        .put(&nic_path("nic-lb3"), &body, got["etag"].as_str())
        .await;
    let done = az.wait(&r).await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["error"]["code"], "InternalServerError");
    let failed = az.nic("nic-lb3").await;
    assert_eq!(failed["properties"]["provisioningState"], "Failed");
    assert_eq!(config_names(&failed), ["ipconfig1", "extra"], "rolled back");
    assert_eq!(names(&az.sim.holders(ip("192.0.2.150"))), ["lb3"]);
    let r = az
        .put(
            &nic_path("nic-lb3"),
            &put_body(&failed),
            failed["etag"].as_str(),
        )
        .await;
    assert_eq!(az.wait(&r).await["status"], "Succeeded");
    assert_eq!(
        az.nic("nic-lb3").await["properties"]["provisioningState"],
        "Succeeded"
    );

    // Interrupted: Canceled, the NIC as it was.
    az.set_faults(Faults {
        op_failure: Trigger::count(1),
        op_failure_reason: Reason::Interrupted,
        ..Faults::default()
    })
    .await;
    let got = az.nic("nic-lb3").await;
    let r = az
        .put(&nic_path("nic-lb3"), &body, got["etag"].as_str())
        .await;
    assert_eq!(az.wait(&r).await["status"], "Canceled");
    assert_eq!(
        az.nic("nic-lb3").await["properties"]["provisioningState"],
        "Succeeded"
    );

    // Immediate operations answer Succeeded at once.
    az.set_faults(Faults {
        op_immediate: true,
        ..Faults::default()
    })
    .await;
    let got = az.nic("nic-lb3").await;
    let r = az
        .put(&nic_path("nic-lb3"), &body, got["etag"].as_str())
        .await;
    assert_eq!(r.json["properties"]["provisioningState"], "Succeeded");
    assert!(az.sim.holders(ip("192.0.2.150")).is_empty());
}

#[tokio::test]
async fn writes_during_an_operation_are_refused() {
    let az = start_with(
        AzureSeed::example(),
        Faults {
            op_delay: Duration::from_millis(1500),
            ..Faults::default()
        },
    )
    .await;
    let got = az.nic("nic-lb2").await;
    let first = az
        .put(&nic_path("nic-lb2"), &put_body(&got), got["etag"].as_str())
        .await;
    assert_eq!(first.status, 200);
    let fresh = az.nic("nic-lb2").await;
    let r = az
        .put(
            &nic_path("nic-lb2"),
            &put_body(&fresh),
            fresh["etag"].as_str(),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "AnotherOperationInProgress"));
    assert!(r.header("retry-after").is_some());
    assert!(r.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains(first.header("azure-asyncoperation").unwrap()));
    // A stale etag is checked first.
    let r = az
        .put(&nic_path("nic-lb2"), &put_body(&got), got["etag"].as_str())
        .await;
    assert_eq!(r.status, 412);

    let mut o = az.sim.options();
    o.busy_status = 429;
    az.sim.set_options(o).unwrap();
    let r = az
        .put(
            &nic_path("nic-lb2"),
            &put_body(&fresh),
            fresh["etag"].as_str(),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "RetryableErrorDueToAnotherOperation")
    );
    assert_eq!(r.header("retry-after"), Some("10"));

    az.wait(&first).await;
    let fresh = az.nic("nic-lb2").await;
    let r = az
        .put(
            &nic_path("nic-lb2"),
            &put_body(&fresh),
            fresh["etag"].as_str(),
        )
        .await;
    assert_eq!(r.status, 200, "free again once the operation ended");
}

#[tokio::test]
async fn injected_faults_throttle_fail_and_drop() {
    let az = start().await;
    az.set_faults(Faults {
        rate_limit: Trigger::count(1),
        retry_after_secs: 7,
        ..Faults::default()
    })
    .await;
    let r = az.get(&nic_path("nic-lb1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");
    assert_eq!(az.get(&nic_path("nic-lb1")).await.status, 200, "once");

    az.set_faults(Faults {
        unavailable: Trigger::count(1),
        ..Faults::default()
    })
    .await;
    let r = az.get(&nic_path("nic-lb1")).await;
    assert_eq!((r.status, r.code()), (503, "ServiceUnavailable"));

    az.set_faults(Faults {
        drop_connection: Trigger::count(1),
        ..Faults::default()
    })
    .await;
    let dropped = az
        .http
        .get(az.url(&nic_path("nic-lb1")))
        .bearer_auth(&az.token)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "the connection is closed without an answer"
    );

    // API down: ARM drops everything; login and the control API still work.
    let r = az
        .control("PUT", "/_sim/azure/faults", json!({"api_down": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(az
        .http
        .get(az.url(&nic_path("nic-lb1")))
        .bearer_auth(&az.token)
        .send()
        .await
        .is_err());
    assert_eq!(az.sp_token(SECRET, ARM).await.status, 200);
    let r = az.control("PUT", "/_sim/azure/faults", json!({})).await;
    assert_eq!(r.status, 200);

    // The response of a PUT is lost, but the change happened.
    az.set_faults(Faults {
        response_lost: Trigger::count(1),
        ..Faults::default()
    })
    .await;
    let got = az.nic("nic-lb1").await;
    let mut b = put_body(&got);
    configs(&mut b).pop();
    let lost = az
        .http
        .put(az.url(&nic_path("nic-lb1")))
        .bearer_auth(&az.token)
        .header("If-Match", got["etag"].as_str().unwrap())
        .json(&b)
        .send()
        .await;
    assert!(lost.is_err());
    assert!(
        az.sim.holders(ip(VIP)).is_empty(),
        "applied (zero op delay)"
    );
    assert_eq!(config_names(&az.nic("nic-lb1").await), ["ipconfig1"]);
}

// ---------------------------------------------------------------------------------------------
// Timeline, forced moves, routes

#[tokio::test]
async fn the_timeline_records_a_two_put_move_and_its_gap() {
    let az = start_with(
        AzureSeed::example(),
        Faults {
            op_delay: Duration::from_millis(50),
            ..Faults::default()
        },
    )
    .await;
    // Mode A: the public IP from lb1 to lb2, detach first.
    az.edit("nic-lb1", |b| {
        configs(b)[0]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("publicIPAddress");
    })
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    az.edit("nic-lb2", |b| {
        configs(b)[0]["properties"]["publicIPAddress"] = json!({"id": pip_path()});
    })
    .await;
    // Mode B: the VIP from lb1 to lb2.
    az.edit("nic-lb1", |b| {
        configs(b).retain(|c| c["name"] != "vip");
    })
    .await;
    az.edit("nic-lb2", |b| configs(b).push(vip_config())).await;

    let events = az.sim.timeline();
    assert_eq!(events.len(), 4, "{events:#?}");
    let pip_events: Vec<_> = events.iter().filter(|e| e.ip == ip(PIP)).collect();
    assert_eq!(pip_events[0].event, HolderEvent::Detach);
    assert_eq!(pip_events[0].instance.0, "lb1");
    assert!(
        pip_events[0].holders.is_empty(),
        "nobody holds it between the PUTs"
    );
    assert_eq!(pip_events[1].event, HolderEvent::Attach);
    assert_eq!(names(&pip_events[1].holders), ["lb2"]);
    assert!(
        pip_events[1].t - pip_events[0].t >= 0.05,
        "the gap is at least the sleep plus an operation delay: {} -> {}",
        pip_events[0].t,
        pip_events[1].t
    );
    for e in &pip_events {
        assert_eq!(e.zone, "westeurope");
        assert_eq!(e.eip_id, pip_path());
        assert!(!e.forced);
    }
    let vip_events: Vec<_> = events.iter().filter(|e| e.ip == ip(VIP)).collect();
    assert_eq!(
        vip_events
            .iter()
            .map(|e| (e.event, e.instance.0.as_str(), e.eip_id.clone()))
            .collect::<Vec<_>>(),
        [
            (
                HolderEvent::Detach,
                "lb1",
                format!("{}/ipConfigurations/vip", nic_path("nic-lb1"))
            ),
            (
                HolderEvent::Attach,
                "lb2",
                format!("{}/ipConfigurations/vip", nic_path("nic-lb2"))
            ),
        ]
    );
    // The control API serves the same events.
    let r = az.control("GET", "/_sim/azure/timeline", Value::Null).await;
    assert_eq!(r.json.as_array().unwrap().len(), 4);
    let state = az.sim.state_json();
    let held: Vec<&Value> = state["addresses"].as_array().unwrap().iter().collect();
    assert!(
        held.iter()
            .any(|a| a["ip"] == PIP && a["holders"][0]["vm"] == "lb2"),
        "{state}"
    );
}

#[tokio::test]
async fn another_actor_can_force_the_holders() {
    let az = start().await;
    let before = az.nic("nic-lb1").await;
    let r = az
        .control(
            "PUT",
            &format!("/_sim/azure/holders/{PIP}"),
            json!({"holders": ["lb3"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["holders"], json!(["lb3"]));
    assert_eq!(names(&az.sim.holders(ip(PIP))), ["lb3"]);
    let lb3 = az.nic("nic-lb3").await;
    assert_eq!(
        lb3["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"],
        pip_path()
    );
    // The first NIC changed behind the client's back: its old etag is stale.
    let r = az
        .put(
            &nic_path("nic-lb1"),
            &put_body(&before),
            before["etag"].as_str(),
        )
        .await;
    assert_eq!(r.status, 412);

    let moved = az
        .sim
        .force_holders(ip(VIP), &[InstanceId("lb2".into())])
        .unwrap();
    assert_eq!(names(&moved), ["lb2"]);
    assert!(config_names(&az.nic("nic-lb2").await).contains(&"vip".to_string()));
    assert_eq!(config_names(&az.nic("nic-lb1").await), ["ipconfig1"]);
    assert!(az.sim.force_holders(ip(VIP), &[]).unwrap().is_empty());
    assert_eq!(
        names(
            &az.sim
                .force_holders(ip(VIP), &[InstanceId("lb1".into())])
                .unwrap()
        ),
        ["lb1"],
        "a released secondary address can be forced back"
    );

    let events = az.sim.timeline();
    assert!(events.iter().all(|e| e.forced));
    assert_eq!(events.len(), 2 + 2 + 1 + 1);
    assert!(
        az.sim
            .force_holders(
                ip(PIP),
                &[InstanceId("lb1".into()), InstanceId("lb2".into())]
            )
            .is_err(),
        "never on two NICs"
    );
    assert!(az.sim.force_holders(ip("198.51.100.1"), &[]).is_err());
    let r = az
        .control(
            "PUT",
            "/_sim/azure/holders/203.0.113.10",
            json!({"holders": ["nope"]}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl RouteRunner for Recorder {
    fn run(&self, args: &[String]) -> Result<(), String> {
        self.0.lock().unwrap().push(args.join(" "));
        Ok(())
    }
}

#[tokio::test]
async fn the_route_hook_points_the_public_ip_at_its_holder() {
    let rec = Arc::new(Recorder::default());
    let az = start_full(
        AzureSeed::example(),
        Faults::default(),
        Some(rec.clone() as Arc<dyn RouteRunner>),
    )
    .await;
    assert_eq!(
        *rec.0.lock().unwrap(),
        ["route replace 203.0.113.10/32 via 192.0.2.11"],
        "routed before serving"
    );
    az.edit("nic-lb1", |b| {
        configs(b)[0]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("publicIPAddress");
    })
    .await;
    az.edit("nic-lb2", |b| {
        configs(b)[0]["properties"]["publicIPAddress"] = json!({"id": pip_path()});
    })
    .await;
    // Secondary private addresses are the guest's business: no route for the VIP.
    az.edit("nic-lb1", |b| {
        configs(b).retain(|c| c["name"] != "vip");
    })
    .await;
    assert_eq!(
        rec.0.lock().unwrap()[1..],
        [
            "route replace unreachable 203.0.113.10/32",
            "route replace 203.0.113.10/32 via 192.0.2.12"
        ]
    );
}

#[tokio::test]
async fn seeds_are_validated_and_the_example_is_the_lab() {
    assert_eq!(AzureSeed::example(), AzureSeed::lab(3).unwrap());
    let five = AzureSeed::lab(5).unwrap();
    assert_eq!(five.vms[4].name, "lb5");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.json");
    std::fs::write(&path, exoip_providers::sim::azure::EXAMPLE_AZURE_SEED).unwrap();
    assert_eq!(AzureSeed::load(&path).unwrap(), AzureSeed::example());
    std::fs::write(&path, r#"{"tenant_id": "x"}"#).unwrap();
    let err = AzureSeed::load(&path).unwrap_err().to_string();
    assert!(err.contains("missing field"), "{err}");
    assert!(AzureSeed::load(&dir.path().join("none.json")).is_err());

    let az = start_with(five, Faults::default()).await;
    let state = az.sim.state_json();
    assert_eq!(state["vms"].as_array().unwrap().len(), 5);
    assert!(!state.to_string().contains(SECRET));
    let r = az
        .control("PUT", "/_sim/azure/options", json!({"busy_status": 500}))
        .await;
    assert_eq!(r.status, 400);
    let r = az
        .control("PUT", "/_sim/azure/options", json!({"page_size": 10}))
        .await;
    assert_eq!(r.status, 200);
    let r = az
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/networkInterfaces"
        ))
        .await;
    assert_eq!(r.json["value"].as_array().unwrap().len(), 5);
    az.servers.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Through the shared simulator handle (`sim::start` with `SimConfig::azure`), as the lab and
// `exoip sim --provider azure` run it.

fn handle_config(seed: AzureSeed) -> SimConfig {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    SimConfig {
        metadata_listen: Some(loopback),
        ..SimConfig::azure(seed)
    }
}

/// A service-principal token from the handle's authority.
async fn handle_token(http: &reqwest::Client, sim: &SimHandle) -> String {
    let r = send(
        http.post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.api_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", ARM),
            ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["access_token"].as_str().unwrap().to_string()
}

async fn arm_get(http: &reqwest::Client, sim: &SimHandle, token: &str, path: &str) -> Reply {
    send(
        http.get(format!("{}{path}?api-version=2024-05-01", sim.api_url()))
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn the_handle_serves_arm_login_imds_and_both_control_apis() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = AzureSeed::example();
    // This process (127.0.0.1) speaks as lb2 to IMDS.
    seed.options.imds_default_vm = Some("lb2".into());
    let sim = sim::start(SimConfig {
        timeline_path: Some(dir.path().join("timeline.jsonl")),
        ..handle_config(seed)
    })
    .await
    .unwrap();
    assert_eq!(sim.provider(), "azure");
    assert_eq!(
        sim.api_url(),
        sim.base_url(),
        "ARM and the authority share the root"
    );
    assert_eq!(sim.network_url(), None);
    assert!(sim.azure().is_some());
    let http = client();

    let token = handle_token(&http, &sim).await;
    let r = arm_get(&http, &sim, &token, &nic_path("nic-lb1")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["name"], "nic-lb1");
    let r = arm_get(&http, &sim, &token, "/nowhere").await;
    assert_eq!((r.status, r.code()), (404, "NotFound"), "ARM's own 404");

    let md = sim.metadata_url().expect("IMDS listens");
    let r = send(
        http.get(format!("{md}/metadata/instance?api-version=2021-02-01"))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["compute"]["name"], "lb2");

    let control = |path: &str| http.get(format!("{}{path}", sim.base_url()));
    let generic = send(control("/_sim/state")).await;
    assert_eq!(generic.status, 200);
    assert_eq!(generic.json["subscription_id"], SUB);
    let own = send(control("/_sim/azure/state")).await;
    assert_eq!(own.json["vms"], generic.json["vms"]);
    assert_eq!(sim.state()["vms"], generic.json["vms"]);
    assert!(!generic.json.to_string().contains(SECRET));
    let r = send(control("/_sim/azure/options")).await;
    assert_eq!((r.status, &r.json["imds_default_vm"]), (200, &json!("lb2")));
    let r = send(http.post(format!("{}/_sim/instance/lb1/state", sim.base_url()))).await;
    assert_eq!(r.status, 404, "Exoscale's controls are not Azure's");

    // Power states through the generic instance-state control.
    sim.set_instance_state(&InstanceId("lb3".into()), "deallocated")
        .unwrap();
    let vms = sim.state()["vms"].clone();
    assert_eq!(vms[2]["power_state"], "deallocated");
    assert!(sim
        .set_instance_state(&InstanceId("lb3".into()), "asleep")
        .is_err());

    // Tokens: expired by the generic revoke, with a shorter lifetime for new ones.
    sim.set_token_lifetime(Duration::from_secs(60)).unwrap();
    assert_eq!(
        sim.azure().unwrap().options().token_lifetime,
        Duration::from_secs(60)
    );
    assert!(sim.set_token_lifetime(Duration::ZERO).is_err());
    assert!(sim.revoke_tokens().unwrap() >= 1);
    let r = arm_get(&http, &sim, &token, &nic_path("nic-lb1")).await;
    assert_eq!(r.status, 401, "{}", r.json);
    let token = handle_token(&http, &sim).await;
    assert_eq!(
        arm_get(&http, &sim, &token, &nic_path("nic-lb1"))
            .await
            .status,
        200
    );
    assert!(sim.delete_port("p").is_err(), "OpenStack only");

    let addr = sim.api_addr();
    sim.shutdown().await;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn the_handle_reports_and_forces_holders_on_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.jsonl");
    let rec = Arc::new(Recorder::default());
    let sim = sim::start(SimConfig {
        timeline_path: Some(path.clone()),
        route_holders: true,
        route_runner: Some(rec.clone() as Arc<dyn RouteRunner>),
        ..handle_config(AzureSeed::example())
    })
    .await
    .unwrap();
    assert_eq!(
        *rec.0.lock().unwrap(),
        ["route replace 203.0.113.10/32 via 192.0.2.11"],
        "routed before serving"
    );
    assert_eq!(names(&sim.holders(ip(PIP))), ["lb1"]);
    assert_eq!(names(&sim.holders(ip(VIP))), ["lb1"]);
    assert!(sim.holders(ip("198.51.100.7")).is_empty());
    assert!(sim.timeline().is_empty());

    let lb2 = InstanceId("lb2".into());
    assert_eq!(
        names(
            &sim.force_holders(ip(PIP), std::slice::from_ref(&lb2))
                .unwrap()
        ),
        ["lb2"]
    );
    assert_eq!(names(&sim.holders(ip(PIP))), ["lb2"]);
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap(),
        "route replace 203.0.113.10/32 via 192.0.2.12"
    );
    let events = sim.timeline();
    let summary: Vec<(HolderEvent, &str, Vec<&str>, bool)> = events
        .iter()
        .map(|e| (e.event, e.instance.0.as_str(), names(&e.holders), e.forced))
        .collect();
    assert_eq!(
        summary,
        [
            (HolderEvent::Detach, "lb1", vec!["lb2"], true),
            (HolderEvent::Attach, "lb2", vec!["lb2"], true),
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.ip == ip(PIP) && e.zone == "westeurope" && e.eip_id == pip_path()));

    // The generic control endpoint moves the secondary address.
    let r = send(
        client()
            .put(format!("{}/_sim/elastic-ip/{VIP}/holders", sim.base_url()))
            .json(&json!({"holders": ["lb3"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["holders"], json!(["lb3"]));
    assert_eq!(names(&sim.holders(ip(VIP))), ["lb3"]);
    let last = sim.timeline().last().unwrap().clone();
    assert_eq!(
        (last.event, last.instance.0.as_str(), last.ip),
        (HolderEvent::Attach, "lb3", ip(VIP))
    );
    assert!(last
        .eip_id
        .ends_with("/networkInterfaces/nic-lb3/ipConfigurations/vip"));

    // Azure puts an address on one NIC at most, and only on VMs it knows.
    let two = [lb2.clone(), InstanceId("lb3".into())];
    assert!(matches!(
        sim.force_holders(ip(PIP), &two),
        Err(SimError::Invalid(_))
    ));
    assert!(matches!(
        sim.force_holders(ip(PIP), &[InstanceId("lb9".into())]),
        Err(SimError::Invalid(_))
    ));
    let r = send(
        client()
            .put(format!("{}/_sim/elastic-ip/{PIP}/holders", sim.base_url()))
            .json(&json!({"holders": ["lb1", "lb2"]})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(names(&sim.holders(ip(PIP))), ["lb2"], "unchanged");

    // Detach: nobody holds it, the route becomes unreachable.
    assert!(sim.force_holders(ip(PIP), &[]).unwrap().is_empty());
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap(),
        "route replace unreachable 203.0.113.10/32"
    );

    // The same changes, in order, in the file and from both timeline endpoints.
    let all = sim.timeline();
    assert_eq!(all.len(), 5);
    let lines: Vec<TimelineEvent> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, all);
    for endpoint in ["/_sim/timeline", "/_sim/azure/timeline"] {
        let r = send(client().get(format!("{}{endpoint}", sim.base_url()))).await;
        let served: Vec<TimelineEvent> = serde_json::from_value(r.json).unwrap();
        assert_eq!(served, all, "{endpoint}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn the_handle_faults_act_on_arm_and_are_shared_with_the_azure_controls() {
    let sim = sim::start(SimConfig {
        faults: Faults {
            unavailable: Trigger::count(1),
            ..Faults::default()
        },
        ..handle_config(AzureSeed::example())
    })
    .await
    .unwrap();
    let http = client();
    // Login is never faulted: the first token request succeeds.
    let token = handle_token(&http, &sim).await;
    let r = arm_get(&http, &sim, &token, &nic_path("nic-lb1")).await;
    assert_eq!((r.status, r.code()), (503, "ServiceUnavailable"));
    assert_eq!(sim.faults().unavailable.count, 0, "the count was consumed");
    assert_eq!(
        arm_get(&http, &sim, &token, &nic_path("nic-lb1"))
            .await
            .status,
        200
    );

    sim.update_faults(|f| {
        f.rate_limit = Trigger::count(1);
        f.retry_after_secs = 3;
    })
    .unwrap();
    assert_eq!(
        sim.azure().unwrap().faults(),
        sim.faults(),
        "one fault state"
    );
    let r = arm_get(&http, &sim, &token, &nic_path("nic-lb1")).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("3")));
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");

    // Set through the generic control API, seen by the Azure one and the handle.
    let r = send(
        http.put(format!("{}/_sim/faults", sim.base_url()))
            .json(&json!({"op_stuck": {"count": 1}, "latency": "1ms"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = send(http.get(format!("{}/_sim/azure/faults", sim.base_url()))).await;
    assert_eq!(r.json["op_stuck"]["count"], 1);
    assert_eq!(sim.faults().latency, Duration::from_millis(1));

    // A stuck operation leaves the NIC updating and the address where it was.
    let got = arm_get(&http, &sim, &token, &nic_path("nic-lb1"))
        .await
        .json;
    let mut body = put_body(&got);
    configs(&mut body)[0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("publicIPAddress");
    let r = send(
        http.put(format!(
            "{}{}?api-version=2024-05-01",
            sim.api_url(),
            nic_path("nic-lb1")
        ))
        .bearer_auth(&token)
        .json(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["properties"]["provisioningState"], "Updating");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(names(&sim.holders(ip(PIP))), ["lb1"]);
    assert!(sim.timeline().is_empty());

    assert!(sim
        .set_faults(Faults {
            rate_limit: Trigger::probability(2.0),
            ..Faults::default()
        })
        .is_err());
    sim.set_faults(Faults::default()).unwrap();
    assert_eq!(sim.faults(), Faults::default());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_handle_refuses_bad_azure_configurations() {
    let mut seed = AzureSeed::example();
    seed.vms[1].name = "LB1".into();
    let err = sim::start(SimConfig::azure(seed)).await.err().unwrap();
    assert!(matches!(err, SimError::Seed(_)), "{err}");
    assert!(err.to_string().contains("duplicate VM name"), "{err}");

    let err = sim::start(SimConfig {
        faults: Faults {
            op_failure: Trigger::probability(-1.0),
            ..Faults::default()
        },
        ..SimConfig::azure(AzureSeed::example())
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SimError::Faults(_)), "{err}");

    // The lab's seed: the public IP unattached, the secondary address on lb2, its own secret.
    let seed = AzureLabSeed {
        hosts: 2,
        public_ip_on: None,
        secondary_on: Some(1),
        client_secret: exoip_providers::Secret::new("lab-secret"),
        ..AzureLabSeed::default()
    }
    .build()
    .unwrap();
    let sim = sim::start(SimConfig::azure(seed)).await.unwrap();
    assert!(sim.holders(ip(PIP)).is_empty());
    assert_eq!(names(&sim.holders(ip(VIP))), ["lb2"]);
    let r = send(
        client()
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.api_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "lab-secret"),
                ("scope", ARM),
            ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    sim.shutdown().await;
}

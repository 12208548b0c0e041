//! Conformance of the OpenStack provider against the simulated Keystone + Neutron, through the
//! `Provider` trait only, over HTTP on loopback, in floating-IP and in VIP mode (with its claim
//! record on the VIP port, `docs/arbiter.md`) (shared/clouds/openstack.md §1, §3, §4, §9).
//!
//! A small recording proxy sits between the two. The simulator builds its catalog from the
//! `Host` header, so the client reaches Neutron through the proxy as well as Keystone, and the
//! tests can assert the exact requests (one fenced PUT, its `If-Match`, a 401 followed by one
//! re-authentication) and play a concurrent writer between the client's read and its write. A
//! connection the simulator drops is dropped towards the client too, so the connection faults
//! reach the client unchanged.
//!
//! The metadata stub knows its caller by source address: lb1's port also has 127.0.0.1 (on a
//! second subnet of the private network that no router reaches), so this process is lb1. That
//! second IPv4 address also makes every floating-IP claim by lb1 name its fixed IP (§3.2).
//! 127.0.0.1 is the one address outside the documentation ranges, as in `exoscale_vs_sim.rs`:
//! the stub cannot see this process under any other.
//!
//! Every test starts its own simulator, uses short timeouts and a small retry budget, and is
//! bounded with `tokio::time::timeout`.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use exoip_providers::http::RetryPolicy;
use exoip_providers::openstack::{
    ApplicationCredential, Credentials, Domain, Interface, OpenStack, OpenStackMode,
    OpenStackSettings, Project, User,
};
use exoip_providers::sim::openstack::seed::{
    SeedAddressPair, SeedFixedIp, SeedNetwork, SeedPort, SeedSecurityGroup, SeedServer, SeedSubnet,
};
use exoip_providers::sim::{
    self, HolderEvent, LabSeed, OpenStackSeed, SimConfig, SimHandle, Trigger,
};
use exoip_providers::{Arbiter, ClaimRecord, Error, Instance, InstanceId, Provider, Secret};
use serde_json::{json, Value};

const PASSWORD: &str = "vs-sim-password-0123";
const WRONG_PASSWORD: &str = "wrong-password-XYZZY-must-not-leak";
const APP_SECRET: &str = "vs-sim-app-secret-4567";
const WRONG_APP_SECRET: &str = "wrong-app-secret-PLUGH-must-not-leak";

// The fixed ids of `LabSeed` with three hosts.
const PROJECT_ID: &str = "3f1e6a0c9d2b4e7f8a5c1d0e2b4f6a81";
const USER_ID: &str = "7267d1c0a9b84f3e8d2c5b1a0f9e8d71";
const CRED: &str = "3e19c0de5a7b4c2d9e8f1a0b2c3d4e5f";
/// This process (see the module documentation).
const LB1: &str = "2f6a9a43-0000-4000-8000-000000000011";
/// Holds the floating IP at start.
const LB2: &str = "2f6a9a43-0000-4000-8000-000000000012";
/// Not allowed the VIP at start.
const LB3: &str = "2f6a9a43-0000-4000-8000-000000000013";
const PORT1: &str = "d1e2f3a4-0000-4000-8000-000000000011";
const PORT2: &str = "d1e2f3a4-0000-4000-8000-000000000012";
const PORT3: &str = "d1e2f3a4-0000-4000-8000-000000000013";
/// The VIP's own port (no device).
const VIP_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000100";
const PRIVATE_NET: &str = "6b3d0a58-0000-4000-8000-000000000001";
const GROUP: &str = "7f3a1b2c-0000-4000-8000-000000000001";
const GROUP_NAME: &str = "exoip";
const FIP_ID: &str = "8ea5e5c4-0000-4000-8000-000000000010";
const FIP: &str = "203.0.113.10";
const VIP: &str = "192.0.2.100";

// Added by `seed()`.
const LOOPBACK_SUBNET: &str = "5c1e7f2a-0000-4000-8000-000000000003";
const WEB_GROUP: &str = "7f3a1b2c-0000-4000-8000-000000000002";
const WEB_GROUP_NAME: &str = "web";
/// Only in the web group.
const WEB1: &str = "2f6a9a43-0000-4000-8000-000000000021";
const WEB1_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000021";
/// Pairs seeded besides the VIP, which every VIP change must keep as they are.
const LB1_EXTRA_PAIR: &str = "198.51.100.0/24";
const LB2_EXTRA_PAIR: &str = "192.0.2.201";
const LB2_EXTRA_MAC: &str = "fa:16:3e:00:01:01";
const LB3_EXTRA_PAIR: &str = "192.0.2.202";
/// Added by `fip_errors_are_classified_and_change_nothing`, on a network without a router.
const ISOLATED: &str = "2f6a9a43-0000-4000-8000-000000000041";
const NO_SUCH_SERVER: &str = "2f6a9a43-0000-4000-8000-0000000000ff";

/// Bound of every test.
const TEST_LIMIT: Duration = Duration::from_secs(20);
/// The client's budget for one call, attempts and waits included.
const CALL_BUDGET: Duration = Duration::from_secs(4);

const MODES: [OpenStackMode; 2] = [OpenStackMode::FloatingIp, OpenStackMode::Vip];

/// The lab of `LabSeed` (three servers, the floating IP on lb2, the VIP allowed on every port)
/// plus: 127.0.0.1 on lb1's port; extra address pairs on every server port, and none for the
/// VIP on lb3's; a `web` group with lb2 and a server of its own.
fn seed() -> OpenStackSeed {
    let mut seed = LabSeed {
        password: PASSWORD.into(),
        app_credential_secret: APP_SECRET.into(),
        fip_on: Some(1),
        ..LabSeed::default()
    }
    .build();
    seed.subnets.push(SeedSubnet {
        id: LOOPBACK_SUBNET.into(),
        name: "loopback".into(),
        network: PRIVATE_NET.into(),
        project: None,
        cidr: "127.0.0.0/24".into(),
        gateway_ip: Some(ip("127.0.0.254")),
    });
    seed.security_groups.push(SeedSecurityGroup {
        id: WEB_GROUP.into(),
        name: WEB_GROUP_NAME.into(),
        project: None,
        description: String::new(),
    });
    let pair = |address: &str, mac: Option<&str>| SeedAddressPair {
        ip_address: address.into(),
        mac_address: mac.map(str::to_string),
    };
    let private_subnet = seed.ports[0].fixed_ips[0].subnet.clone();
    for port in &mut seed.ports {
        match port.id.as_str() {
            PORT1 => {
                port.fixed_ips.push(SeedFixedIp {
                    subnet: LOOPBACK_SUBNET.into(),
                    ip_address: ip("127.0.0.1"),
                });
                port.allowed_address_pairs = vec![pair(VIP, None), pair(LB1_EXTRA_PAIR, None)];
            }
            PORT2 => {
                port.security_groups.push(WEB_GROUP.into());
                // The VIP last: a removal must keep the order of the others.
                port.allowed_address_pairs =
                    vec![pair(LB2_EXTRA_PAIR, Some(LB2_EXTRA_MAC)), pair(VIP, None)];
            }
            PORT3 => port.allowed_address_pairs = vec![pair(LB3_EXTRA_PAIR, None)],
            _ => {}
        }
    }
    seed.servers.push(SeedServer {
        id: WEB1.into(),
        name: "web1".into(),
        project: None,
        availability_zone: "nova".into(),
        meta: Default::default(),
        user_data: String::new(),
    });
    seed.ports.push(SeedPort {
        id: WEB1_PORT.into(),
        name: "web1-port".into(),
        network: PRIVATE_NET.into(),
        project: None,
        device_id: WEB1.into(),
        device_owner: "compute:nova".into(),
        mac_address: "fa:16:3e:00:00:21".into(),
        fixed_ips: vec![SeedFixedIp {
            subnet: private_subnet,
            ip_address: ip("192.0.2.21"),
        }],
        security_groups: vec![WEB_GROUP.into()],
        allowed_address_pairs: Vec::new(),
    });
    assert_eq!(seed.floating_ips[0].id, FIP_ID);
    seed.validate().expect("the test seed is valid");
    seed
}

// ---------------------------------------------------------------------------------------------
// The recording proxy

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Hook = Box<dyn FnOnce() + Send>;

/// One request as the proxy forwarded it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query as sent, e.g. `/network/v2.0/ports?device_id=…`.
    target: String,
    if_match: Option<String>,
    /// The JSON body; for a token request only its `methods` and whether it had a `scope`
    /// (the rest holds the secret).
    body: Value,
    /// `None`: the simulator dropped the connection (so did the proxy).
    status: Option<u16>,
}

impl Seen {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.target.contains(path)
    }

    fn is_auth(&self) -> bool {
        self.is("POST", "/identity/v3/auth/tokens")
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> ", self.method, self.target)?;
        match self.status {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("dropped"),
        }
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    log: Mutex<Vec<Seen>>,
    /// `(method, part of the target, hook)`: run once, before forwarding the first request
    /// that matches.
    hooks: Mutex<Vec<(String, String, Hook)>>,
}

/// What the proxy records of a request body.
fn logged_body(target: &str, body: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if target.contains("/auth/tokens") {
        json!({
            "methods": value["auth"]["identity"]["methods"],
            "scoped": value["auth"].get("scope").is_some(),
        })
    } else {
        value
    }
}

fn hop_by_hop(name: &axum::http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
    )
}

async fn forward(
    state: Arc<ProxyState>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 1 << 20).await?;
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = parts.method.as_str().to_string();
    let hook = {
        let mut hooks = state.hooks.lock().unwrap();
        hooks
            .iter()
            .position(|(m, p, _)| *m == method && target.contains(p.as_str()))
            .map(|i| hooks.remove(i).2)
    };
    if let Some(hook) = hook {
        hook();
    }
    // The Host header goes through as is: the catalog's URLs must name the proxy.
    let mut upstream = state
        .http
        .request(parts.method.clone(), format!("{}{target}", state.upstream))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let mut seen = Seen {
        method,
        if_match: parts
            .headers
            .get("if-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: logged_body(&target, &body),
        target,
        status: None,
    };
    let answer = async {
        let response = upstream.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, bytes))
    }
    .await;
    match answer {
        Ok((status, headers, bytes)) => {
            seen.status = Some(status.as_u16());
            state.log.lock().unwrap().push(seen);
            let mut response = hyper::Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if !hop_by_hop(name) {
                    response.headers_mut().append(name, value.clone());
                }
            }
            Ok(response)
        }
        Err(e) => {
            state.log.lock().unwrap().push(seen);
            // An error makes hyper close the connection without an answer.
            Err(Box::new(e))
        }
    }
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream: format!("http://{upstream}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            log: Mutex::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| forward(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { addr, state, task }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The lab: simulator, proxy, clients

struct Lab {
    sim: Arc<SimHandle>,
    proxy: Proxy,
}

impl Lab {
    async fn start(seed: OpenStackSeed) -> Lab {
        let sim = sim::start(SimConfig {
            metadata_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..SimConfig::openstack(seed)
        })
        .await
        .expect("the simulator starts");
        let proxy = Proxy::start(sim.api_addr()).await;
        Lab {
            sim: Arc::new(sim),
            proxy,
        }
    }

    async fn default() -> Lab {
        Lab::start(seed()).await
    }

    /// Keystone through the proxy, with `/v3`.
    fn auth_url(&self) -> String {
        format!("http://{}/identity/v3", self.proxy.addr)
    }

    /// Password credentials by name, as Horizon's openrc gives them; lb1; 2 s per request, 5
    /// attempts, 10–100 ms backoff, [`CALL_BUDGET`] per call.
    fn settings(&self, mode: OpenStackMode) -> OpenStackSettings {
        let mut s = OpenStackSettings::new(
            self.auth_url(),
            Credentials::Password {
                user: User::Name {
                    name: "demo".into(),
                    domain: Domain::Name("Default".into()),
                },
                password: Secret::new(PASSWORD),
                project: Project::Name {
                    name: "demo".into(),
                    domain: Domain::Id("default".into()),
                },
            },
        );
        s.region = Some("RegionOne".into());
        s.server_id = Some(InstanceId::from(LB1));
        s.metadata_url = self.sim.metadata_url().expect("metadata stub");
        s.mode = mode;
        s.request_timeout = Duration::from_secs(2);
        s.retry = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            max_elapsed: CALL_BUDGET,
        };
        s.source = "the test settings".into();
        s
    }

    fn client(&self, mode: OpenStackMode) -> OpenStack {
        OpenStack::new(self.settings(mode)).expect("valid settings")
    }

    fn client_with(
        &self,
        mode: OpenStackMode,
        change: impl FnOnce(&mut OpenStackSettings),
    ) -> OpenStack {
        let mut s = self.settings(mode);
        change(&mut s);
        OpenStack::new(s).expect("valid settings")
    }

    fn log(&self) -> Vec<Seen> {
        self.proxy.state.log.lock().unwrap().clone()
    }

    fn clear_log(&self) {
        self.proxy.state.log.lock().unwrap().clear();
    }

    /// The requests so far with this method and a target containing `path`.
    fn requests(&self, method: &str, path: &str) -> Vec<Seen> {
        self.log()
            .into_iter()
            .filter(|s| s.is(method, path))
            .collect()
    }

    fn auth_count(&self) -> usize {
        self.log().iter().filter(|s| s.is_auth()).count()
    }

    /// Runs `hook` once, just before the first `method` request whose target contains `path`
    /// reaches the simulator.
    fn before(&self, method: &str, path: &str, hook: impl FnOnce() + Send + 'static) {
        self.proxy.state.hooks.lock().unwrap().push((
            method.to_string(),
            path.to_string(),
            Box::new(hook),
        ));
    }

    fn floating_ip_state(&self) -> Value {
        let state = self.sim.state();
        state["floating_ips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == FIP_ID)
            .cloned()
            .expect("the floating IP")
    }

    fn port_revision(&self, port: &str) -> u64 {
        let state = self.sim.state();
        state["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == port)
            .and_then(|p| p["revision_number"].as_u64())
            .expect("the port")
    }

    /// A port as Neutron shows it, read straight from the simulator (not through the proxy,
    /// nor with the client under test).
    async fn raw_port(&self, port: &str) -> Value {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("http://{}", self.sim.api_addr());
        let auth = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}});
        let response = http
            .post(format!("{base}/identity/v3/auth/tokens"))
            .json(&auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let token = response.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        let response = http
            .get(format!("{base}/network/v2.0/ports/{port}"))
            .header("X-Auth-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        body["port"].clone()
    }

    /// `(ip_address, mac_address)` of a port's allowed address pairs, in order.
    async fn pairs(&self, port: &str) -> Vec<(String, String)> {
        let port = self.raw_port(port).await;
        port["allowed_address_pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["ip_address"].as_str().unwrap().to_string(),
                    p["mac_address"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn mac(&self, port: &str) -> String {
        self.raw_port(port).await["mac_address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn holders(&self, address: &str) -> Vec<String> {
        let mut h: Vec<String> = self
            .sim
            .holders(ip(address))
            .into_iter()
            .map(|i| i.0)
            .collect();
        h.sort();
        h
    }
}

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test finished within its time limit")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::from(s)
}

fn ids(list: &[InstanceId]) -> Vec<&str> {
    list.iter().map(|i| i.0.as_str()).collect()
}

fn peer_ids(peers: &[Instance]) -> Vec<&str> {
    peers.iter().map(|p| p.id.0.as_str()).collect()
}

fn lines(log: &[Seen]) -> String {
    log.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_kind<T: fmt::Debug>(result: Result<T, Error>, kind: &str, what: &str) -> Error {
    match result {
        Ok(v) => panic!("{what}: expected a {kind} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            e
        }
    }
}

/// One holder change as the simulator recorded it, without its time.
#[derive(Debug, PartialEq)]
struct Change {
    event: HolderEvent,
    instance: String,
    forced: bool,
}

fn attached(instance: &str) -> Change {
    Change {
        event: HolderEvent::Attach,
        instance: instance.into(),
        forced: false,
    }
}

fn detached(instance: &str) -> Change {
    Change {
        event: HolderEvent::Detach,
        instance: instance.into(),
        forced: false,
    }
}

fn forced(mut change: Change) -> Change {
    change.forced = true;
    change
}

/// The holder changes of `address` so far.
fn changes(sim: &SimHandle, address: &str) -> Vec<Change> {
    let address = ip(address);
    sim.timeline()
        .into_iter()
        .filter(|e| e.ip == address)
        .map(|e| Change {
            event: e.event,
            instance: e.instance.0,
            forced: e.forced,
        })
        .collect()
}

fn address(mode: OpenStackMode) -> &'static str {
    match mode {
        OpenStackMode::FloatingIp => FIP,
        OpenStackMode::Vip => VIP,
    }
}

// ---------------------------------------------------------------------------------------------
// whoami

#[tokio::test]
async fn whoami_with_the_server_id_given() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let me = lab.client(mode).whoami().await.expect("whoami");
            assert_eq!(me.id, id(LB1), "{mode:?}");
            // No metadata read: the name is the port's.
            assert_eq!(me.name, "lb1-port", "{mode:?}");
            assert_eq!(me.addresses, vec![ip("192.0.2.11"), ip("127.0.0.1")]);
            let ports = lab.requests("GET", "/network/v2.0/ports?");
            assert_eq!(ports.len(), 1, "{}", lines(&lab.log()));
            assert_eq!(
                ports[0].target,
                format!("/network/v2.0/ports?device_id={LB1}")
            );
        }
    })
    .await;
}

#[tokio::test]
async fn whoami_from_the_metadata_stub() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client_with(mode, |s| s.server_id = None);
            let me = client.whoami().await.expect("whoami");
            assert_eq!(me.id, id(LB1), "{mode:?}");
            assert_eq!(me.name, "lb1", "{mode:?}: the name from meta_data.json");
            assert_eq!(me.addresses, vec![ip("192.0.2.11"), ip("127.0.0.1")]);
            // The id learnt there is "me" for the rest of the run.
            let peers = client.peers(GROUP_NAME, &me.id).await.expect("peers");
            assert_eq!(peer_ids(&peers), vec![LB2, LB3], "{mode:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn whoami_of_an_unknown_server_or_without_metadata_fails_clearly() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client_with(OpenStackMode::FloatingIp, |s| {
            s.server_id = Some(id(NO_SUCH_SERVER))
        });
        let e = assert_kind(client.whoami().await, "not_found", "unknown server");
        assert!(e.to_string().contains(NO_SUCH_SERVER), "{e}");

        // Nothing listens there: a transient error that says how to do without.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let client = lab.client_with(OpenStackMode::FloatingIp, |s| {
            s.server_id = None;
            s.metadata_url = url;
        });
        let e = assert_kind(client.whoami().await, "retryable", "no metadata service");
        assert!(e.to_string().contains("-i"), "{e}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// peers

/// The peers of lb1 in `exoip` and `web`, by name and by id, whatever the mode.
async fn check_peers(lab: &Lab, client: &OpenStack, what: &str) {
    let me = id(LB1);
    for group in [GROUP_NAME, GROUP] {
        let peers = client.peers(group, &me).await.expect("peers");
        assert_eq!(peer_ids(&peers), vec![LB2, LB3], "{what}: {group}");
        assert_eq!(peers[0].addresses, vec![ip("192.0.2.12")], "{what}");
        assert_eq!(peers[1].addresses, vec![ip("192.0.2.13")], "{what}");
    }
    let peers = client.peers(WEB_GROUP_NAME, &me).await.expect("peers");
    assert_eq!(peer_ids(&peers), vec![LB2, WEB1], "{what}: web");
    assert_eq!(peers[1].addresses, vec![ip("192.0.2.21")], "{what}");
    // Seen from lb2, lb2 is not its own peer.
    let peers = client.peers(WEB_GROUP, &id(LB2)).await.expect("peers");
    assert_eq!(peer_ids(&peers), vec![WEB1], "{what}: web from lb2");
    // By name: a lookup by name; by id: the group itself.
    assert!(!lab
        .requests("GET", &format!("/security-groups?name={GROUP_NAME}"))
        .is_empty());
    assert!(!lab
        .requests("GET", &format!("/security-groups/{GROUP}"))
        .is_empty());
    let e = assert_kind(
        client.peers("no-such-group", &me).await,
        "not_found",
        "unknown group",
    );
    assert!(e.to_string().contains("no-such-group"), "{e}");
}

#[tokio::test]
async fn peers_by_security_group_name_and_id_with_the_server_side_filter() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            check_peers(&lab, &client, &format!("{mode:?}")).await;
            let listed = lab.requests("GET", "/network/v2.0/ports?security_groups=");
            assert!(!listed.is_empty(), "{}", lines(&lab.log()));
            assert!(
                listed[0].target.starts_with(&format!(
                    "/network/v2.0/ports?security_groups={GROUP}&fields=id&fields=device_id&fields=fixed_ips"
                )),
                "{}",
                listed[0]
            );
        }
    })
    .await;
}

#[tokio::test]
async fn peers_without_the_filtering_extension_filter_on_the_client() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            // The simulator then ignores the filter, as Neutron without the extension does:
            // only a client-side filter gives the right answer.
            lab.sim
                .set_extension("port-security-groups-filtering", false)
                .unwrap();
            let client = lab.client(mode);
            check_peers(&lab, &client, &format!("{mode:?} without the extension")).await;
            assert!(
                lab.requests("GET", "security_groups=").is_empty(),
                "{}",
                lines(&lab.log())
            );
            assert!(!lab
                .requests("GET", "/network/v2.0/ports?fields=id&fields=device_id&fields=fixed_ips&fields=security_groups")
                .is_empty());
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Floating-IP mode

#[tokio::test]
async fn fip_holders_and_attach_to_self_with_one_fenced_put() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB2]);
        let revision = lab.floating_ip_state()["revision_number"].as_u64().unwrap();
        lab.clear_log();

        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        let puts = lab.requests("PUT", "/floatingips/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(
            puts[0].target,
            format!("/network/v2.0/floatingips/{FIP_ID}")
        );
        assert_eq!(
            puts[0].if_match.as_deref(),
            Some(format!("revision_number={revision}").as_str())
        );
        assert_eq!(puts[0].status, Some(200));
        // lb1's port has two IPv4 addresses: the one on the routed subnet is named.
        assert_eq!(
            puts[0].body,
            json!({"floatingip": {"port_id": PORT1, "fixed_ip_address": "192.0.2.11"}})
        );
        let fip = lab.floating_ip_state();
        assert_eq!(fip["port_id"], PORT1);
        assert_eq!(fip["fixed_ip_address"], "192.0.2.11");
        assert_eq!(fip["revision_number"].as_u64(), Some(revision + 1));
        assert_eq!(lab.holders(FIP), vec![LB1]);
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB1]);
        assert_eq!(changes(&lab.sim, FIP), vec![detached(LB2), attached(LB1)]);
    })
    .await;
}

#[tokio::test]
async fn fip_attach_where_it_already_is_changes_nothing() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        client
            .attach(ip(FIP), &id(LB1))
            .await
            .expect("attach again");
        // And to the holder it had at start, from a client that has not seen it move.
        let other = lab.client(OpenStackMode::FloatingIp);
        other.attach(ip(FIP), &id(LB1)).await.expect("attach again");
        assert_eq!(
            lab.requests("PUT", "/floatingips/").len(),
            1,
            "{}",
            lines(&lab.log())
        );
        assert_eq!(lab.holders(FIP), vec![LB1]);
        assert_eq!(changes(&lab.sim, FIP), vec![detached(LB2), attached(LB1)]);
    })
    .await;
}

#[tokio::test]
async fn fip_moves_from_another_holder_in_one_put() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        // Another actor moves it to lb3 first.
        lab.sim.force_holders(ip(FIP), &[id(LB3)]).unwrap();
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB3]);
        lab.clear_log();
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        assert_eq!(lab.holders(FIP), vec![LB1]);
        // Then to a peer with a single address: no fixed IP to name.
        client
            .attach(ip(FIP), &id(LB2))
            .await
            .expect("attach to lb2");
        let puts = lab.requests("PUT", "/floatingips/");
        assert_eq!(puts.len(), 2, "{}", lines(&lab.log()));
        assert!(puts.iter().all(|p| p.status == Some(200)));
        assert_eq!(puts[1].body, json!({"floatingip": {"port_id": PORT2}}));
        assert_eq!(lab.floating_ip_state()["fixed_ip_address"], "192.0.2.12");
        assert_eq!(lab.holders(FIP), vec![LB2]);
        assert_eq!(
            changes(&lab.sim, FIP),
            vec![
                forced(detached(LB2)),
                forced(attached(LB3)),
                detached(LB3),
                attached(LB1),
                detached(LB1),
                attached(LB2)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn fip_detach_dissociates_and_detaching_a_non_holder_is_a_no_op() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        // Not the holder (lb2 is): nothing to do.
        client.detach(ip(FIP), &id(LB1)).await.expect("detach");
        assert!(lab.requests("PUT", "/floatingips/").is_empty());
        assert_eq!(lab.holders(FIP), vec![LB2]);

        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        let revision = lab.floating_ip_state()["revision_number"].as_u64().unwrap();
        lab.clear_log();
        client.detach(ip(FIP), &id(LB1)).await.expect("detach");
        let puts = lab.requests("PUT", "/floatingips/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].body, json!({"floatingip": {"port_id": null}}));
        assert_eq!(
            puts[0].if_match.as_deref(),
            Some(format!("revision_number={revision}").as_str())
        );
        let fip = lab.floating_ip_state();
        assert_eq!(fip["port_id"], Value::Null);
        assert_eq!(fip["status"], "DOWN");
        assert!(lab.holders(FIP).is_empty());
        assert!(client.holders(ip(FIP)).await.unwrap().is_empty());
        // Unassociated: detaching again, or someone else, is a no-op.
        client
            .detach(ip(FIP), &id(LB1))
            .await
            .expect("detach again");
        client.detach(ip(FIP), &id(LB3)).await.expect("detach lb3");
        assert_eq!(lab.requests("PUT", "/floatingips/").len(), 1);
        assert_eq!(
            changes(&lab.sim, FIP),
            vec![detached(LB2), attached(LB1), detached(LB1)]
        );
    })
    .await;
}

#[tokio::test]
async fn fip_concurrent_writer_makes_the_claim_a_conflict_and_the_next_attach_succeeds() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        // Between the client's read and its PUT, another actor moves the address to lb3.
        let sim = lab.sim.clone();
        lab.before("PUT", "/floatingips/", move || {
            sim.force_holders(ip(FIP), &[id(LB3)]).unwrap();
        });
        let e = assert_kind(
            client.attach(ip(FIP), &id(LB1)).await,
            "conflict",
            "stale claim",
        );
        assert!(
            e.to_string().contains("RevisionNumberConstraintFailed"),
            "{e}"
        );
        let puts = lab.requests("PUT", "/floatingips/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].status, Some(412));
        // Fenced: the other writer's change stands.
        assert_eq!(lab.holders(FIP), vec![LB3]);

        // Re-read, decide again: the claim goes through.
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB3]);
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        assert_eq!(lab.holders(FIP), vec![LB1]);
        assert_eq!(
            changes(&lab.sim, FIP),
            vec![
                forced(detached(LB2)),
                forced(attached(LB3)),
                detached(LB3),
                attached(LB1)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn fip_attach_to_a_fixed_ip_with_another_floating_ip_is_a_conflict() {
    bounded(async {
        let mut seed = seed();
        // Another floating IP of the same external network on lb1's routed address.
        let mut other = seed.floating_ips[0].clone();
        other.id = "8ea5e5c4-0000-4000-8000-000000000011".into();
        other.address = "203.0.113.11".parse().unwrap();
        other.port = Some(PORT1.into());
        other.fixed_ip_address = Some("192.0.2.11".parse().unwrap());
        seed.floating_ips.push(other);
        seed.validate().unwrap();
        let lab = Lab::start(seed).await;
        let client = lab.client(OpenStackMode::FloatingIp);
        let e = assert_kind(
            client.attach(ip(FIP), &id(LB1)).await,
            "conflict",
            "fixed IP taken",
        );
        assert!(
            e.to_string().contains("FloatingIPPortAlreadyAssociated"),
            "{e}"
        );
        let puts = lab.requests("PUT", "/floatingips/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].status, Some(409));
        assert_eq!(lab.holders(FIP), vec![LB2]);
        assert_eq!(lab.holders("203.0.113.11"), vec![LB1]);
        assert!(changes(&lab.sim, FIP).is_empty());
    })
    .await;
}

#[tokio::test]
async fn fip_errors_are_classified_and_change_nothing() {
    bounded(async {
        let mut seed = seed();
        // A server whose only port is on a network no router connects to the external one.
        let isolated_net = "6b3d0a58-0000-4000-8000-000000000004";
        let isolated_subnet = "5c1e7f2a-0000-4000-8000-000000000004";
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
        seed.servers.push(SeedServer {
            id: ISOLATED.into(),
            name: "isolated".into(),
            project: None,
            availability_zone: "nova".into(),
            meta: Default::default(),
            user_data: String::new(),
        });
        seed.ports.push(SeedPort {
            id: "d1e2f3a4-0000-4000-8000-000000000041".into(),
            name: String::new(),
            network: isolated_net.into(),
            project: None,
            device_id: ISOLATED.into(),
            device_owner: "compute:nova".into(),
            mac_address: "fa:16:3e:00:00:41".into(),
            fixed_ips: vec![SeedFixedIp {
                subnet: isolated_subnet.into(),
                ip_address: ip("198.51.100.41"),
            }],
            security_groups: Vec::new(),
            allowed_address_pairs: Vec::new(),
        });
        let lab = Lab::start(seed).await;
        let client = lab.client(OpenStackMode::FloatingIp);

        let e = assert_kind(
            client.holders(ip("203.0.113.99")).await,
            "not_found",
            "unknown floating IP",
        );
        assert!(e.to_string().contains("203.0.113.99"), "{e}");
        let e = assert_kind(
            client.attach(ip(FIP), &id(NO_SUCH_SERVER)).await,
            "not_found",
            "unknown server",
        );
        assert!(e.to_string().contains(NO_SUCH_SERVER), "{e}");
        // Neutron's 404 for a missing router path is the topology, not a missing object.
        let e = assert_kind(
            client.attach(ip(FIP), &id(ISOLATED)).await,
            "invalid",
            "no router path",
        );
        assert!(
            e.to_string()
                .contains("ExternalGatewayForFloatingIPNotFound"),
            "{e}"
        );
        assert_eq!(
            lab.requests("PUT", "/floatingips/")
                .iter()
                .map(|p| p.status)
                .collect::<Vec<_>>(),
            vec![Some(404)]
        );
        assert_eq!(lab.holders(FIP), vec![LB2]);
        assert!(changes(&lab.sim, FIP).is_empty());
    })
    .await;
}

#[tokio::test]
async fn fip_claim_does_not_wait_for_the_data_plane() {
    bounded(async {
        let mut seed = seed();
        seed.fip_status_delay = Duration::from_secs(1);
        let lab = Lab::start(seed).await;
        let client = lab.client(OpenStackMode::FloatingIp);
        let started = Instant::now();
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        assert!(started.elapsed() < Duration::from_secs(1));
        // Associated, not applied yet: the API's answer is what counts (§3.2).
        let fip = lab.floating_ip_state();
        assert_eq!(
            (&fip["port_id"], &fip["status"]),
            (&json!(PORT1), &json!("DOWN"))
        );
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB1]);
        tokio::time::sleep(Duration::from_millis(1050)).await;
        // The L3 agent's status update bumps the revision: a claim or release reads it fresh.
        assert_eq!(lab.floating_ip_state()["status"], "ACTIVE");
        client
            .attach(ip(FIP), &id(LB1))
            .await
            .expect("attach again");
        client.detach(ip(FIP), &id(LB1)).await.expect("detach");
        let puts = lab.requests("PUT", "/floatingips/");
        let statuses: Vec<_> = puts.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            vec![Some(200), Some(200)],
            "{}",
            lines(&lab.log())
        );
        assert!(lab.holders(FIP).is_empty());
    })
    .await;
}

#[tokio::test]
async fn fip_holder_without_port_details_is_looked_up_by_port() {
    bounded(async {
        let lab = Lab::default().await;
        lab.sim.set_extension("fip-port-details", false).unwrap();
        let client = lab.client(OpenStackMode::FloatingIp);
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB2]);
        assert_eq!(
            lab.requests("GET", &format!("/network/v2.0/ports/{PORT2}"))
                .len(),
            1,
            "{}",
            lines(&lab.log())
        );
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        client
            .detach(ip(FIP), &id(LB2))
            .await
            .expect("not the holder");
        assert_eq!(ids(&client.holders(ip(FIP)).await.unwrap()), vec![LB1]);
        client.detach(ip(FIP), &id(LB1)).await.expect("detach");
        assert!(client.holders(ip(FIP)).await.unwrap().is_empty());
        assert_eq!(lab.requests("PUT", "/floatingips/").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn deleting_a_holders_port_removes_it_everywhere() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            assert!(ids(&client.holders(ip(address(mode))).await.unwrap()).contains(&LB2));
            lab.sim.delete_port(PORT2).unwrap();
            let holders = client.holders(ip(address(mode))).await.unwrap();
            assert!(!ids(&holders).contains(&LB2), "{mode:?}: {holders:?}");
            let peers = client.peers(GROUP, &id(LB1)).await.unwrap();
            assert_eq!(peer_ids(&peers), vec![LB3], "{mode:?}");
            // Gone: nothing to fence.
            client
                .detach(ip(address(mode)), &id(LB2))
                .await
                .expect("detach");
            assert!(lab.requests("PUT", "/").is_empty(), "{}", lines(&lab.log()));
            // And the address can be claimed.
            client
                .attach(ip(address(mode)), &id(LB1))
                .await
                .expect("attach");
            assert!(lab.holders(address(mode)).contains(&LB1.to_string()));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// VIP mode

#[tokio::test]
async fn vip_holders_are_the_servers_allowed() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::Vip);
        let holders = client.holders(ip(VIP)).await.expect("holders");
        assert_eq!(ids(&holders), vec![LB1, LB2]);
        assert_eq!(lab.holders(VIP), vec![LB1, LB2]);
        // An address in nobody's pairs, on the same subnet.
        assert!(client
            .holders(ip("192.0.2.150"))
            .await
            .expect("holders")
            .is_empty());
        // With the VIP port configured, its network is that port's.
        lab.clear_log();
        let client = lab.client_with(OpenStackMode::Vip, |s| s.vip_port = Some(VIP_PORT.into()));
        let holders = client.holders(ip(VIP)).await.expect("holders");
        assert_eq!(ids(&holders), vec![LB1, LB2]);
        assert_eq!(
            lab.requests("GET", &format!("/network/v2.0/ports/{VIP_PORT}"))
                .len(),
            1,
            "{}",
            lines(&lab.log())
        );
    })
    .await;
}

#[tokio::test]
async fn vip_admitting_a_server_keeps_its_other_pairs() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::Vip);
        let mac3 = lab.mac(PORT3).await;
        let before1 = lab.pairs(PORT1).await;
        let before2 = lab.pairs(PORT2).await;
        let revision = lab.port_revision(PORT3);
        lab.clear_log();

        client.attach(ip(VIP), &id(LB3)).await.expect("admit lb3");
        let puts = lab.requests("PUT", "/ports/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].target, format!("/network/v2.0/ports/{PORT3}"));
        assert_eq!(
            puts[0].if_match.as_deref(),
            Some(format!("revision_number={revision}").as_str())
        );
        assert_eq!(
            lab.pairs(PORT3).await,
            vec![
                (LB3_EXTRA_PAIR.to_string(), mac3.clone()),
                (VIP.to_string(), mac3.clone())
            ]
        );
        assert_eq!(lab.pairs(PORT1).await, before1);
        assert_eq!(lab.pairs(PORT2).await, before2);
        assert_eq!(lab.holders(VIP), vec![LB1, LB2, LB3]);
        assert_eq!(
            ids(&client.holders(ip(VIP)).await.unwrap()),
            vec![LB1, LB2, LB3]
        );
        // Admitted already: nothing to write.
        client.attach(ip(VIP), &id(LB3)).await.expect("again");
        client.attach(ip(VIP), &id(LB1)).await.expect("lb1");
        assert_eq!(lab.requests("PUT", "/ports/").len(), 1);
        assert_eq!(changes(&lab.sim, VIP), vec![attached(LB3)]);
    })
    .await;
}

#[tokio::test]
async fn vip_detach_fences_one_server_and_keeps_every_other_pair() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::Vip);
        let mac1 = lab.mac(PORT1).await;
        let before1 = lab.pairs(PORT1).await;
        let before3 = lab.pairs(PORT3).await;
        assert_eq!(
            before1,
            vec![
                (VIP.to_string(), mac1.clone()),
                (LB1_EXTRA_PAIR.to_string(), mac1)
            ]
        );
        let revision = lab.port_revision(PORT2);
        lab.clear_log();

        client.detach(ip(VIP), &id(LB2)).await.expect("fence lb2");
        let puts = lab.requests("PUT", "/ports/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].target, format!("/network/v2.0/ports/{PORT2}"));
        assert_eq!(
            puts[0].if_match.as_deref(),
            Some(format!("revision_number={revision}").as_str())
        );
        // The other pair keeps its own MAC, not the port's.
        assert_eq!(
            lab.pairs(PORT2).await,
            vec![(LB2_EXTRA_PAIR.to_string(), LB2_EXTRA_MAC.to_string())]
        );
        assert_eq!(lab.pairs(PORT1).await, before1);
        assert_eq!(lab.pairs(PORT3).await, before3);
        assert_eq!(lab.holders(VIP), vec![LB1]);
        assert_eq!(ids(&client.holders(ip(VIP)).await.unwrap()), vec![LB1]);
        // Not allowed (any more): nothing to write.
        client.detach(ip(VIP), &id(LB2)).await.expect("again");
        client.detach(ip(VIP), &id(LB3)).await.expect("lb3");
        assert_eq!(lab.requests("PUT", "/ports/").len(), 1);
        assert_eq!(changes(&lab.sim, VIP), vec![detached(LB2)]);
    })
    .await;
}

#[tokio::test]
async fn vip_412_from_a_concurrent_writer_is_retried_on_the_new_state() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::Vip);
        let mac3 = lab.mac(PORT3).await;
        // Between the client's read of lb3's port and its PUT, another actor adds a pair there
        // (and, on the second port, between the read and the PUT of the detach).
        let sim = lab.sim.clone();
        lab.before("PUT", &format!("/ports/{PORT3}"), move || {
            sim.force_holders(ip("192.0.2.203"), &[id(LB3)]).unwrap();
        });
        let sim = lab.sim.clone();
        lab.before("PUT", &format!("/ports/{PORT2}"), move || {
            sim.force_holders(ip("192.0.2.204"), &[id(LB2)]).unwrap();
        });

        client.attach(ip(VIP), &id(LB3)).await.expect("admit lb3");
        let puts = lab.requests("PUT", &format!("/ports/{PORT3}"));
        let statuses: Vec<_> = puts.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            vec![Some(412), Some(200)],
            "{}",
            lines(&lab.log())
        );
        assert_eq!(
            lab.pairs(PORT3).await,
            vec![
                (LB3_EXTRA_PAIR.to_string(), mac3.clone()),
                ("192.0.2.203".to_string(), mac3.clone()),
                (VIP.to_string(), mac3)
            ]
        );

        client.detach(ip(VIP), &id(LB2)).await.expect("fence lb2");
        let puts = lab.requests("PUT", &format!("/ports/{PORT2}"));
        let statuses: Vec<_> = puts.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            vec![Some(412), Some(200)],
            "{}",
            lines(&lab.log())
        );
        let mac2 = lab.mac(PORT2).await;
        assert_eq!(
            lab.pairs(PORT2).await,
            vec![
                (LB2_EXTRA_PAIR.to_string(), LB2_EXTRA_MAC.to_string()),
                ("192.0.2.204".to_string(), mac2)
            ]
        );
        assert_eq!(lab.holders(VIP), vec![LB1, LB3]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// VIP mode: the claim record on the VIP port

/// Text an operator keeps in the VIP port's description.
const VIP_TEXT: &str = "keepalived VIP (prod)";

fn record(epoch: u64, holder: &str) -> ClaimRecord {
    ClaimRecord {
        epoch,
        holder: id(holder),
    }
}

/// One Neutron request straight to the simulator (not through the proxy, nor with the client
/// under test), as another actor would send it: `(status, body)`.
async fn sim_neutron(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{api}");
    let auth = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "demo", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}});
    let response = http
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let mut request = http
        .request(
            method.parse().unwrap(),
            format!("{base}/network/v2.0{path}"),
        )
        .header("X-Auth-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sets the VIP port's description as an operator (or another claimant) would.
async fn set_vip_description(api: SocketAddr, text: &str) {
    let body = json!({"port": {"description": text}});
    let (status, answer) = sim_neutron(api, "PUT", &format!("/ports/{VIP_PORT}"), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The VIP port's description, read straight from the simulator.
async fn vip_description(lab: &Lab) -> String {
    lab.raw_port(VIP_PORT).await["description"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The timeline's `claim` events for the VIP: (epoch, claimant, eip_id).
fn vip_claims(sim: &SimHandle) -> Vec<(u64, String, String)> {
    sim.timeline()
        .into_iter()
        .filter(|e| e.ip == ip(VIP) && e.event == HolderEvent::Claim)
        .map(|e| (e.epoch.unwrap(), e.instance.0, e.eip_id))
        .collect()
}

#[tokio::test]
async fn vip_claim_records_on_the_vip_port_then_allows_the_claimant() {
    bounded(async {
        let lab = Lab::default().await;
        set_vip_description(lab.sim.api_addr(), VIP_TEXT).await;
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        assert_eq!(lb3.arbiter(), Arbiter::CompareAndSwap);
        let before = lb3.state(ip(VIP)).await.expect("state");
        assert_eq!(ids(&before.holders), vec![LB1, LB2]);
        assert_eq!(before.record, None, "text without a token is no record");
        let revision = lab.port_revision(VIP_PORT);
        lab.clear_log();

        lb3.claim(ip(VIP), &record(1, LB3), None)
            .await
            .expect("claim");
        // The record first, with If-Match on the revision read and nothing but the
        // description; then lb3's port is allowed.
        let puts = lab.requests("PUT", "/ports/");
        let targets: Vec<&str> = puts.iter().map(|p| p.target.as_str()).collect();
        assert_eq!(
            targets,
            vec![
                format!("/network/v2.0/ports/{VIP_PORT}"),
                format!("/network/v2.0/ports/{PORT3}")
            ],
            "{}",
            lines(&lab.log())
        );
        assert_eq!(
            puts[0].if_match.as_deref(),
            Some(format!("revision_number={revision}").as_str())
        );
        let token = format!("exoip:epoch=1,holder={LB3}");
        assert_eq!(
            puts[0].body,
            json!({"port": {"description": format!("{VIP_TEXT} {token}")}})
        );
        assert_eq!(lab.port_revision(VIP_PORT), revision + 1);
        assert_eq!(vip_description(&lab).await, format!("{VIP_TEXT} {token}"));
        let after = lb3.state(ip(VIP)).await.expect("state");
        assert_eq!(ids(&after.holders), vec![LB1, LB2, LB3]);
        assert_eq!(after.record, Some(record(1, LB3)));
        // On the timeline: the claim (on the VIP port), then the port allowed.
        assert_eq!(
            changes(&lab.sim, VIP),
            vec![
                Change {
                    event: HolderEvent::Claim,
                    instance: LB3.into(),
                    forced: false
                },
                attached(LB3)
            ]
        );
        assert_eq!(
            vip_claims(&lab.sim),
            vec![(1, LB3.to_string(), VIP_PORT.to_string())]
        );

        // lb1 takes over: its port is allowed already, so the record is the only write.
        let lb1 = lab.client(OpenStackMode::Vip);
        lab.clear_log();
        lb1.claim(ip(VIP), &record(2, LB1), Some(1))
            .await
            .expect("second claim");
        let puts = lab.requests("PUT", "/ports/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(
            vip_description(&lab).await,
            format!("{VIP_TEXT} exoip:epoch=2,holder={LB1}"),
            "the token is replaced, the text stays"
        );
        assert_eq!(
            lb3.state(ip(VIP)).await.unwrap().record,
            Some(record(2, LB1))
        );
    })
    .await;
}

#[tokio::test]
async fn vip_claim_on_a_stale_seen_writes_nothing() {
    bounded(async {
        let lab = Lab::default().await;
        let lb1 = lab.client(OpenStackMode::Vip);
        lb1.claim(ip(VIP), &record(4, LB1), None)
            .await
            .expect("claim");
        let revision = lab.port_revision(VIP_PORT);
        let events = lab.sim.timeline().len();
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        lab.clear_log();
        for seen in [None, Some(3)] {
            let e = assert_kind(
                lb3.claim(ip(VIP), &record(5, LB3), seen).await,
                "conflict",
                "stale seen",
            );
            assert!(e.to_string().contains("epoch 4"), "{e}");
        }
        // An epoch that does not grow is refused before anything is sent.
        let before = lab.log().len();
        assert_kind(
            lb3.claim(ip(VIP), &record(4, LB3), Some(4)).await,
            "invalid",
            "epoch not above seen",
        );
        assert_eq!(lab.log().len(), before);
        assert!(
            lab.requests("PUT", "/ports/").is_empty(),
            "{}",
            lines(&lab.log())
        );
        assert_eq!(lab.port_revision(VIP_PORT), revision, "no PUT");
        assert_eq!(lab.sim.timeline().len(), events);
        assert!(!lab.holders(VIP).contains(&LB3.to_string()));
        let state = lb3.state(ip(VIP)).await.unwrap();
        assert_eq!(state.record, Some(record(4, LB1)));
    })
    .await;
}

#[tokio::test]
async fn a_malformed_vip_record_reads_as_none_and_is_overwritten() {
    bounded(async {
        let lab = Lab::default().await;
        // Edited by hand: no number, and a holder that is not an id.
        let edited = format!("{VIP_TEXT} exoip:epoch=seven,holder={LB2} (do not touch)");
        set_vip_description(lab.sim.api_addr(), &edited).await;
        let also = "exoip:epoch=3,holder=../etc";
        set_vip_description(lab.sim.api_addr(), also).await;
        assert!(vip_claims(&lab.sim).is_empty(), "no record, no claim event");
        let lb1 = lab.client(OpenStackMode::Vip);
        assert_eq!(lb1.state(ip(VIP)).await.unwrap().record, None);
        set_vip_description(lab.sim.api_addr(), &edited).await;
        assert_eq!(lb1.state(ip(VIP)).await.unwrap().record, None);

        lb1.claim(ip(VIP), &record(1, LB1), None)
            .await
            .expect("claim over a malformed record");
        assert_eq!(
            vip_description(&lab).await,
            format!("{VIP_TEXT} exoip:epoch=1,holder={LB1} (do not touch)"),
            "the malformed token is replaced in place"
        );
        assert_eq!(
            lb1.state(ip(VIP)).await.unwrap().record,
            Some(record(1, LB1))
        );
    })
    .await;
}

#[tokio::test]
async fn a_vip_description_with_no_room_for_the_record_is_invalid() {
    bounded(async {
        let lab = Lab::default().await;
        let long = "d".repeat(240);
        set_vip_description(lab.sim.api_addr(), &long).await;
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        lab.clear_log();
        let e = assert_kind(
            lb3.claim(ip(VIP), &record(1, LB3), None).await,
            "invalid",
            "no room",
        );
        assert!(e.to_string().contains(VIP_PORT), "{e}");
        assert!(e.to_string().contains("255"), "{e}");
        assert!(lab.requests("PUT", "/ports/").is_empty());
        assert_eq!(vip_description(&lab).await, long);
        assert!(!lab.holders(VIP).contains(&LB3.to_string()));
    })
    .await;
}

// A concurrent writer between the read and the write needs a second worker: the proxy's hook
// waits for that write while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_claim_that_loses_the_race_is_a_conflict_and_allows_nothing() {
    bounded(async {
        let lab = Lab::default().await;
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        lb3.state(ip(VIP)).await.expect("state");
        // lb2 claims between lb3's read of the VIP port and lb3's PUT.
        let api = lab.sim.api_addr();
        let rival = format!("exoip:epoch=1,holder={LB2}");
        let written = rival.clone();
        lab.before("PUT", &format!("/ports/{VIP_PORT}"), move || {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(set_vip_description(api, &written))
            })
        });
        lab.clear_log();
        let e = assert_kind(
            lb3.claim(ip(VIP), &record(1, LB3), None).await,
            "conflict",
            "lost race",
        );
        assert!(e.to_string().contains("412"), "{e}");
        let puts = lab.requests("PUT", "/ports/");
        let statuses: Vec<_> = puts.iter().map(|p| (p.target.as_str(), p.status)).collect();
        assert_eq!(
            statuses,
            vec![(
                format!("/network/v2.0/ports/{VIP_PORT}").as_str(),
                Some(412)
            )],
            "no second write, and lb3's port is not allowed: {}",
            lines(&lab.log())
        );
        assert_eq!(vip_description(&lab).await, rival);
        assert_eq!(lab.holders(VIP), vec![LB1, LB2]);
        let state = lb3.state(ip(VIP)).await.unwrap();
        assert_eq!(state.record, Some(record(1, LB2)));
        assert_eq!(
            vip_claims(&lab.sim),
            vec![(1, LB2.to_string(), VIP_PORT.to_string())]
        );
    })
    .await;
}

#[tokio::test]
async fn a_lost_answer_to_the_vip_record_write_is_our_own_claim() {
    bounded(async {
        let lab = Lab::default().await;
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        lb3.state(ip(VIP)).await.expect("state");
        lab.sim
            .update_faults(|f| f.response_lost = Trigger::count(1).mutations_only())
            .unwrap();
        lab.clear_log();
        lb3.claim(ip(VIP), &record(1, LB3), None)
            .await
            .expect("the claim in force is ours");
        let puts: Vec<_> = lab
            .requests("PUT", "/ports/")
            .into_iter()
            .map(|p| (p.target, p.status))
            .collect();
        let vip_port = format!("/network/v2.0/ports/{VIP_PORT}");
        assert_eq!(
            puts,
            vec![
                (vip_port.clone(), None),
                (vip_port, Some(412)),
                (format!("/network/v2.0/ports/{PORT3}"), Some(200))
            ],
            "{}",
            lines(&lab.log())
        );
        let state = lb3.state(ip(VIP)).await.unwrap();
        assert_eq!(state.record, Some(record(1, LB3)));
        assert!(lab.holders(VIP).contains(&LB3.to_string()));
        assert_eq!(vip_claims(&lab.sim).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn without_a_vip_port_there_is_no_record_and_a_claim_allows_the_port() {
    bounded(async {
        let mut seed = seed();
        seed.ports.retain(|p| p.id != VIP_PORT);
        seed.validate().expect("valid seed");
        let lab = Lab::start(seed).await;
        let lb3 = lab.client_with(OpenStackMode::Vip, |s| s.server_id = Some(id(LB3)));
        assert_eq!(lb3.arbiter(), Arbiter::CompareAndSwap);
        let state = lb3.state(ip(VIP)).await.expect("state");
        assert_eq!(ids(&state.holders), vec![LB1, LB2]);
        assert_eq!(state.record, None);
        lab.clear_log();
        // Whatever `seen` says: there is no record to compare it with.
        lb3.claim(ip(VIP), &record(5, LB3), Some(4))
            .await
            .expect("claim");
        let puts = lab.requests("PUT", "/ports/");
        assert_eq!(puts.len(), 1, "{}", lines(&lab.log()));
        assert_eq!(puts[0].target, format!("/network/v2.0/ports/{PORT3}"));
        assert_eq!(lab.holders(VIP), vec![LB1, LB2, LB3]);
        let state = lb3.state(ip(VIP)).await.expect("state");
        assert_eq!(state.record, None);
        assert!(vip_claims(&lab.sim).is_empty());
        // Also with --vip-port naming a port that does not hold the VIP (lb1's).
        let lb2 = lab.client_with(OpenStackMode::Vip, |s| {
            s.server_id = Some(id(LB2));
            s.vip_port = Some(PORT1.into());
        });
        assert_eq!(lb2.state(ip(VIP)).await.unwrap().record, None);
        lb2.claim(ip(VIP), &record(6, LB2), None)
            .await
            .expect("claim");
        assert!(vip_claims(&lab.sim).is_empty());
        assert_eq!(lab.raw_port(PORT1).await["description"], "");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Keystone

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    bounded(async {
        let mut seed = seed();
        seed.token_lifetime = Duration::from_secs(4);
        let lab = Lab::start(seed).await;
        let client = lab.client(OpenStackMode::FloatingIp);
        client.holders(ip(FIP)).await.expect("holders");
        client.holders(ip(FIP)).await.expect("holders");
        assert_eq!(lab.auth_count(), 1, "{}", lines(&lab.log()));
        // Half of a short lifetime is renewal time (keystoneauth: 120 s of an hour).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        client.holders(ip(FIP)).await.expect("holders");
        let log = lab.log();
        assert_eq!(lab.auth_count(), 2, "{}", lines(&log));
        assert!(log.iter().all(|s| s.status != Some(401)), "{}", lines(&log));
    })
    .await;
}

/// The requests of a call that met a refused token: the 401, one new token, the same request
/// again, accepted; then no other refusal nor token.
fn assert_reauthenticated_once(log: &[Seen]) {
    let all = lines(log);
    assert!(log.len() >= 3, "{all}");
    assert!(!log[0].is_auth() && log[0].status == Some(401), "{all}");
    assert!(log[1].is_auth() && log[1].status == Some(201), "{all}");
    assert_eq!(log[2].target, log[0].target, "{all}");
    assert_eq!(log[2].status, Some(200), "{all}");
    assert!(
        log[3..]
            .iter()
            .all(|s| !s.is_auth() && s.status != Some(401)),
        "{all}"
    );
}

#[tokio::test]
async fn token_expired_mid_run_is_replaced_transparently() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            client.holders(ip(address(mode))).await.expect("holders");
            assert_eq!(lab.auth_count(), 1);
            // Keystone's clock jumps past the token's expiry (our clock does not: the client
            // cannot see it coming and learns it from the 401).
            lab.sim.set_clock_skew(2 * 3600);
            lab.clear_log();
            client
                .attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            assert_reauthenticated_once(&lab.log());
            assert_eq!(lab.auth_count(), 1);
            assert!(lab.holders(address(mode)).contains(&LB3.to_string()));
        }
    })
    .await;
}

#[tokio::test]
async fn revoked_token_is_replaced_transparently() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            let peers = client.peers(GROUP, &id(LB1)).await.expect("peers");
            assert_eq!(peer_ids(&peers), vec![LB2, LB3]);
            assert_eq!(lab.sim.revoke_tokens().unwrap(), 1);
            lab.clear_log();
            let holders = client.holders(ip(address(mode))).await.expect("holders");
            assert!(!holders.is_empty());
            assert_reauthenticated_once(&lab.log());
            assert_eq!(lab.sim.state()["valid_tokens"], 1);
            // The new token serves on.
            client.holders(ip(address(mode))).await.expect("holders");
            assert_eq!(lab.auth_count(), 1, "{}", lines(&lab.log()));
        }
    })
    .await;
}

#[tokio::test]
async fn token_lifetime_changed_on_the_cloud_is_followed() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client(OpenStackMode::FloatingIp);
        client.holders(ip(FIP)).await.expect("holders");
        // From now on tokens last 2 s; the current one (1 h) is revoked.
        lab.sim.set_token_lifetime(Duration::from_secs(2)).unwrap();
        lab.sim.revoke_tokens().unwrap();
        client.holders(ip(FIP)).await.expect("holders");
        assert_eq!(lab.auth_count(), 2, "{}", lines(&lab.log()));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client.holders(ip(FIP)).await.expect("holders");
        let log = lab.log();
        assert_eq!(lab.auth_count(), 3, "{}", lines(&log));
        assert_eq!(
            log.iter().filter(|s| s.status == Some(401)).count(),
            1,
            "only the revocation is noticed by a 401: {}",
            lines(&log)
        );
    })
    .await;
}

#[tokio::test]
async fn application_credentials_by_id_and_by_name() {
    bounded(async {
        let lab = Lab::default().await;
        let by_id = Credentials::ApplicationCredential {
            credential: ApplicationCredential::Id(CRED.into()),
            secret: Secret::new(APP_SECRET),
        };
        let by_name = Credentials::ApplicationCredential {
            credential: ApplicationCredential::Name {
                name: "exoip".into(),
                user: User::Name {
                    name: "demo".into(),
                    domain: Domain::Id("default".into()),
                },
            },
            secret: Secret::new(APP_SECRET),
        };
        for (mode, credentials) in [
            (OpenStackMode::FloatingIp, by_id.clone()),
            (OpenStackMode::Vip, by_name.clone()),
        ] {
            lab.clear_log();
            // Without `/v3`, as clouds.yaml usually has it.
            let unversioned = format!("http://{}/identity", lab.proxy.addr);
            let client = lab.client_with(mode, |s| {
                s.credentials = credentials;
                s.auth_url = unversioned;
            });
            client
                .attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            let auths: Vec<Seen> = lab.log().into_iter().filter(Seen::is_auth).collect();
            assert_eq!(auths.len(), 1, "{}", lines(&lab.log()));
            assert_eq!(auths[0].status, Some(201));
            assert_eq!(
                auths[0].body,
                json!({"methods": ["application_credential"], "scoped": false})
            );
        }
        assert_eq!(lab.holders(FIP), vec![LB3]);
        assert_eq!(lab.holders(VIP), vec![LB1, LB2, LB3]);

        for credentials in [by_id, by_name] {
            let credentials = match credentials {
                Credentials::ApplicationCredential { credential, .. } => {
                    Credentials::ApplicationCredential {
                        credential,
                        secret: Secret::new(WRONG_APP_SECRET),
                    }
                }
                other => other,
            };
            let client =
                lab.client_with(OpenStackMode::FloatingIp, |s| s.credentials = credentials);
            let e = assert_kind(client.holders(ip(FIP)).await, "auth", "wrong secret");
            let text = format!("{e} {e:?} {client:?}");
            assert!(!text.contains(WRONG_APP_SECRET), "{text}");
        }
    })
    .await;
}

#[tokio::test]
async fn bad_password_is_an_auth_error_that_does_not_show_it() {
    bounded(async {
        let lab = Lab::default().await;
        let client = lab.client_with(OpenStackMode::FloatingIp, |s| {
            if let Credentials::Password { password, .. } = &mut s.credentials {
                *password = Secret::new(WRONG_PASSWORD);
            }
        });
        for _ in 0..2 {
            let started = Instant::now();
            let e = assert_kind(client.holders(ip(FIP)).await, "auth", "bad password");
            assert!(started.elapsed() < Duration::from_secs(1), "not retried");
            let text = format!("{e} {e:?} {client:?}");
            assert!(!text.contains(WRONG_PASSWORD), "{text}");
            assert!(
                text.contains("the test settings"),
                "names the source: {text}"
            );
        }
        // One request per call: a refusal is not retried.
        let log = lab.log();
        assert_eq!(log.len(), 2, "{}", lines(&log));
        assert!(log.iter().all(|s| s.is_auth() && s.status == Some(401)));
    })
    .await;
}

#[tokio::test]
async fn password_by_ids_and_the_catalog_choice() {
    bounded(async {
        let lab = Lab::default().await;
        let by_ids = Credentials::Password {
            user: User::Id(USER_ID.into()),
            password: Secret::new(PASSWORD),
            project: Project::Id(PROJECT_ID.into()),
        };
        for interface in [Interface::Public, Interface::Internal, Interface::Admin] {
            let client = lab.client_with(OpenStackMode::FloatingIp, |s| {
                s.credentials = by_ids.clone();
                s.interface = interface;
            });
            let holders = client.holders(ip(FIP)).await.expect("holders");
            assert_eq!(ids(&holders), vec![LB2], "{interface}");
        }
        // Without a region: the only one. With another: a clear configuration error.
        let client = lab.client_with(OpenStackMode::Vip, |s| s.region = None);
        client.holders(ip(VIP)).await.expect("holders");
        let client = lab.client_with(OpenStackMode::Vip, |s| s.region = Some("RegionTwo".into()));
        let e = assert_kind(client.holders(ip(VIP)).await, "invalid", "unknown region");
        assert!(e.to_string().contains("RegionTwo"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn horizon_openrc_reaches_the_simulator() {
    bounded(async {
        let lab = Lab::default().await;
        let env: Vec<(&str, String)> = vec![
            ("OS_AUTH_URL", lab.auth_url()),
            ("OS_PROJECT_ID", PROJECT_ID.into()),
            ("OS_PROJECT_NAME", "demo".into()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_ID", "default".into()),
            ("OS_USERNAME", "demo".into()),
            ("OS_PASSWORD", PASSWORD.into()),
            ("OS_REGION_NAME", "RegionOne".into()),
            ("OS_INTERFACE", "public".into()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
        ];
        let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let mut settings = OpenStackSettings::from_env(&lookup, None, &[]).expect("openrc");
        let defaults = lab.settings(OpenStackMode::FloatingIp);
        settings.server_id = defaults.server_id;
        settings.retry = defaults.retry;
        settings.request_timeout = defaults.request_timeout;
        let client = OpenStack::new(settings).expect("valid settings");
        client.attach(ip(FIP), &id(LB1)).await.expect("attach");
        assert_eq!(lab.holders(FIP), vec![LB1]);
        let text = format!("{client:?}");
        assert!(!text.contains(PASSWORD), "{text}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_callers_share_one_new_token() {
    bounded(async {
        let lab = Lab::default().await;
        let client = Arc::new(lab.client(OpenStackMode::FloatingIp));
        client.holders(ip(FIP)).await.expect("holders");
        lab.sim.revoke_tokens().unwrap();
        lab.clear_log();
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        client.holders(ip(FIP)).await.map(|_| ())
                    } else {
                        client.peers(GROUP, &id(LB1)).await.map(|_| ())
                    }
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().expect("call");
        }
        assert_eq!(lab.auth_count(), 1, "{}", lines(&lab.log()));
        assert_eq!(lab.sim.state()["valid_tokens"], 1);
    })
    .await;
}

#[tokio::test]
async fn keystone_clock_skew_does_not_matter() {
    bounded(async {
        // The token's lifetime is what Keystone's two times say, whatever our clock says.
        for skew in [-2 * 3600, 2 * 3600] {
            let lab = Lab::default().await;
            lab.sim.set_clock_skew(skew);
            let client = lab.client(OpenStackMode::Vip);
            client.holders(ip(VIP)).await.expect("holders");
            client.attach(ip(VIP), &id(LB3)).await.expect("attach");
            let log = lab.log();
            assert_eq!(lab.auth_count(), 1, "skew {skew}: {}", lines(&log));
            assert!(log.iter().all(|s| s.status != Some(401)), "{}", lines(&log));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn unavailable_bursts_are_retried() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            // Keystone first, then Neutron.
            lab.sim
                .update_faults(|f| f.unavailable = Trigger::count(3))
                .unwrap();
            let holders = client.holders(ip(address(mode))).await.expect("holders");
            assert!(!holders.is_empty());
            // And on the write itself.
            lab.sim
                .update_faults(|f| f.unavailable = Trigger::count(2).mutations_only())
                .unwrap();
            client
                .attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            assert!(lab.holders(address(mode)).contains(&LB3.to_string()));
            let log = lab.log();
            assert_eq!(
                log.iter().filter(|s| s.status == Some(503)).count(),
                5,
                "{}",
                lines(&log)
            );
            let writes: Vec<_> = log
                .iter()
                .filter(|s| s.method == "PUT")
                .map(|s| s.status)
                .collect();
            assert_eq!(writes, vec![Some(503), Some(503), Some(200)], "{mode:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            client.holders(ip(address(mode))).await.expect("holders");
            lab.sim
                .update_faults(|f| {
                    f.rate_limit = Trigger::count(1);
                    f.retry_after_secs = 1;
                })
                .unwrap();
            lab.clear_log();
            let started = Instant::now();
            client
                .attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(950),
                "{mode:?}: Retry-After: 1 honoured, waited {waited:?}"
            );
            assert!(waited < Duration::from_secs(3), "{mode:?}: {waited:?}");
            let log = lab.log();
            assert_eq!(log[0].status, Some(429), "{}", lines(&log));
            assert_eq!(log[1].target, log[0].target, "the same request again");
            assert!(lab.holders(address(mode)).contains(&LB3.to_string()));
        }
    })
    .await;
}

#[tokio::test]
async fn lost_answer_to_the_write_still_ends_in_the_desired_state() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            let address = address(mode);
            lab.sim
                .update_faults(|f| f.response_lost = Trigger::count(1).mutations_only())
                .unwrap();
            client.attach(ip(address), &id(LB3)).await.expect("attach");
            let log = lab.log();
            let writes: Vec<_> = log
                .iter()
                .filter(|s| s.method == "PUT")
                .map(|s| s.status)
                .collect();
            // Applied, answer lost; the retry with the old revision meets 412, and what holds
            // now is what was wanted.
            assert_eq!(writes, vec![None, Some(412)], "{mode:?}: {}", lines(&log));
            assert!(lab.holders(address).contains(&LB3.to_string()));
            assert_eq!(changes(&lab.sim, address)[0], attached_or_moved(mode));

            // The same on the way out.
            lab.sim
                .update_faults(|f| f.response_lost = Trigger::count(1).mutations_only())
                .unwrap();
            lab.clear_log();
            client.detach(ip(address), &id(LB3)).await.expect("detach");
            let writes: Vec<_> = lab
                .log()
                .iter()
                .filter(|s| s.method == "PUT")
                .map(|s| s.status)
                .collect();
            assert_eq!(
                writes,
                vec![None, Some(412)],
                "{mode:?}: {}",
                lines(&lab.log())
            );
            assert!(!lab.holders(address).contains(&LB3.to_string()));
        }
    })
    .await;
}

#[tokio::test]
async fn dropped_connections_and_slow_answers_are_retried_within_the_budget() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let client = lab.client(mode);
            lab.sim
                .update_faults(|f| f.drop_connection = Trigger::count(2))
                .unwrap();
            client
                .attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            let log = lab.log();
            assert_eq!(
                log.iter().filter(|s| s.status.is_none()).count(),
                2,
                "{}",
                lines(&log)
            );
            assert!(lab.holders(address(mode)).contains(&LB3.to_string()));

            // Every answer slower than the per-request timeout: a transient error, in time.
            let budget = Duration::from_millis(800);
            let impatient = lab.client_with(mode, |s| {
                s.request_timeout = Duration::from_millis(150);
                s.retry.max_elapsed = budget;
            });
            lab.sim
                .update_faults(|f| f.latency = Duration::from_millis(400))
                .unwrap();
            let started = Instant::now();
            let e = assert_kind(
                impatient.holders(ip(address(mode))).await,
                "retryable",
                "slow API",
            );
            let took = started.elapsed();
            assert!(took <= budget + Duration::from_millis(700), "{took:?}");
            assert!(e.to_string().contains("timed out"), "{e}");
            lab.sim
                .update_faults(|f| f.latency = Duration::ZERO)
                .unwrap();
            impatient.holders(ip(address(mode))).await.expect("holders");
        }
    })
    .await;
}

/// The first holder change of an attach of lb3: the floating IP leaves lb2 first; the VIP is
/// only added.
fn attached_or_moved(mode: OpenStackMode) -> Change {
    match mode {
        OpenStackMode::FloatingIp => detached(LB2),
        OpenStackMode::Vip => attached(LB3),
    }
}

#[tokio::test]
async fn api_down_is_a_transient_error_within_the_call_budget() {
    bounded(async {
        for mode in MODES {
            let lab = Lab::default().await;
            let warm = lab.client(mode);
            warm.holders(ip(address(mode))).await.expect("holders");
            lab.sim.update_faults(|f| f.api_down = true).unwrap();
            // Without a token (Keystone is down too) and with one.
            let cold = lab.client(mode);
            for (what, client) in [("cold", &cold), ("warm", &warm)] {
                let started = Instant::now();
                let result = client.attach(ip(address(mode)), &id(LB3)).await;
                let e = assert_kind(result, "retryable", what);
                assert!(e.is_transient());
                let took = started.elapsed();
                assert!(
                    took <= CALL_BUDGET + Duration::from_secs(1),
                    "{mode:?} {what}: {took:?}"
                );
            }
            assert!(lab
                .log()
                .iter()
                .any(|s| s.status.is_none() && s.method == "POST"));
            // Back up: both work again.
            lab.sim.update_faults(|f| f.api_down = false).unwrap();
            cold.attach(ip(address(mode)), &id(LB3))
                .await
                .expect("attach");
            warm.holders(ip(address(mode))).await.expect("holders");
            assert!(lab.holders(address(mode)).contains(&LB3.to_string()));
        }
    })
    .await;
}

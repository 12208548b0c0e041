//! The Exoscale provider against a small in-test API server on loopback that verifies every
//! request's EXO2-HMAC-SHA256 signature, answers with spec-shaped JSON and injects faults.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use exoip_providers::exoscale::{sign, Exoscale, ExoscaleConfig};
use exoip_providers::http::RetryPolicy;
use exoip_providers::{Error, InstanceId, Provider, Secret};

const KEY: &str = "EXOtestkey0123456789abcdef";
const SECRET: &str = "test-secret-must-not-leak";
const EIP: &str = "198.51.100.50";
const EIP_ID: &str = "8ea5e5c4-7b4f-4f1d-9d52-3a0a2b0c6f11";
const GROUP_ID: &str = "7f3a1b2c-0000-4000-8000-000000000001";
const OTHER_GROUP_ID: &str = "7f3a1b2c-0000-4000-8000-000000000002";
const A: &str = "2f6a9a43-1c51-4a4e-9e0a-00000000000a";
const B: &str = "2f6a9a43-1c51-4a4e-9e0a-00000000000b";
const C: &str = "2f6a9a43-1c51-4a4e-9e0a-00000000000c";
const D: &str = "2f6a9a43-1c51-4a4e-9e0a-00000000000d";
const E: &str = "2f6a9a43-1c51-4a4e-9e0a-00000000000e";
const DROP: &str = "injected fault: drop the connection";

#[derive(Clone)]
struct Inst {
    id: &'static str,
    name: &'static str,
    state: &'static str,
    public_ip: &'static str,
    ipv6: Option<&'static str>,
    groups: Vec<&'static str>,
    eips: Vec<String>,
}

/// What the server does with a redundant attach (already attached) or detach (not attached).
#[derive(Clone, Copy)]
enum Redundant {
    NoOp,
    OperationFails(&'static str),
    Http400,
}

#[derive(Clone)]
enum Fault {
    Status {
        code: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    },
    Drop,
}

/// The effect an operation applies when it succeeds: (instance, attach?).
type Effect = Option<(String, bool)>;

struct Op {
    polls_left: u32,
    effect: Effect,
    /// `(state, reason)` when the operation is to end badly.
    ends: Option<(&'static str, Option<&'static str>)>,
}

struct World {
    instances: Vec<Inst>,
    groups: Vec<(&'static str, &'static str)>,
    ops: HashMap<String, Op>,
    next_op: u32,
    /// Polls answered `pending` before an operation completes; 0: already terminal.
    polls: u32,
    /// The next operations end like this instead of succeeding.
    failing: Option<(&'static str, Option<&'static str>)>,
    redundant: Redundant,
    /// `ip-address` also matches an instance's native IP (the real matching is undocumented).
    sloppy_ip_filter: bool,
    /// `(method and path prefix, fault, times)`.
    faults: Vec<(String, Fault, usize)>,
    /// `METHOD /path?query` of every request, in order.
    log: Vec<String>,
}

impl World {
    fn new() -> Self {
        let inst = |id, name, state, public_ip, groups: Vec<&'static str>| Inst {
            id,
            name,
            state,
            public_ip,
            ipv6: None,
            groups,
            eips: Vec::new(),
        };
        let mut a = inst(A, "lb-a", "running", "203.0.113.10", vec![GROUP_ID]);
        a.eips.push(EIP_ID.to_string());
        let mut b = inst(B, "lb-b", "running", "203.0.113.11", vec![GROUP_ID]);
        b.ipv6 = Some("2001:db8::11");
        World {
            instances: vec![
                a,
                b,
                inst(C, "lb-c", "stopped", "203.0.113.12", vec![GROUP_ID]),
                inst(D, "db-d", "running", "203.0.113.13", vec![OTHER_GROUP_ID]),
                inst(
                    E,
                    "lb-e",
                    "running",
                    "203.0.113.14",
                    vec![OTHER_GROUP_ID, GROUP_ID],
                ),
            ],
            groups: vec![(GROUP_ID, "exoip-peers"), (OTHER_GROUP_ID, "databases")],
            ops: HashMap::new(),
            next_op: 0,
            polls: 0,
            failing: None,
            redundant: Redundant::NoOp,
            sloppy_ip_filter: false,
            faults: Vec::new(),
            log: Vec::new(),
        }
    }

    fn fault(&mut self, prefix: &str, fault: Fault, times: usize) {
        self.faults.push((prefix.to_string(), fault, times));
    }

    fn take_fault(&mut self, request: &str) -> Option<Fault> {
        let slot = self
            .faults
            .iter_mut()
            .find(|(prefix, _, times)| *times > 0 && request.starts_with(prefix.as_str()))?;
        slot.2 -= 1;
        Some(slot.1.clone())
    }

    fn count(&self, prefix: &str) -> usize {
        self.log.iter().filter(|l| l.starts_with(prefix)).count()
    }

    fn holds(&self, id: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.id == id && i.eips.iter().any(|e| e == EIP_ID))
    }

    fn apply(&mut self, effect: &Effect) {
        if let Some((id, attach)) = effect {
            let inst = self.instances.iter_mut().find(|i| i.id == id).unwrap();
            inst.eips.retain(|e| e != EIP_ID);
            if *attach {
                inst.eips.push(EIP_ID.to_string());
            }
        }
    }

    fn operation_json(id: &str, op: &Op, terminal: bool) -> Value {
        let reference = json!({"id": EIP_ID, "link": format!("/v2/elastic-ip/{EIP_ID}"), "command": "get-elastic-ip"});
        match (terminal, op.ends) {
            (false, _) => json!({"id": id, "state": "pending", "reference": reference}),
            (true, None) => json!({"id": id, "state": "success", "reference": reference}),
            (true, Some((state, reason))) => {
                json!({"id": id, "state": state, "reason": reason, "message": "the operation did not go through", "reference": reference})
            }
        }
    }
}

type Shared = Arc<Mutex<World>>;

fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({ "message": message }))).into_response()
}

fn instance_item(i: &Inst, world: &World) -> Value {
    // List items: full security-group objects, no elastic-ips, extra fields to be ignored.
    let groups: Vec<Value> = i
        .groups
        .iter()
        .map(|g| {
            let name = world.groups.iter().find(|(id, _)| id == g).unwrap().1;
            json!({"id": g, "name": name, "description": "", "external-sources": []})
        })
        .collect();
    let mut v = json!({"id": i.id, "name": i.name, "state": i.state, "public-ip": i.public_ip,
        "public-ip-assignment": "inet4", "mac-address": "06:00:00:00:00:01",
        "security-groups": groups, "labels": {"role": "lb"}, "created-at": "2026-01-01T00:00:00Z",
        "instance-type": {"id": "b6cd1ff5-3a2f-4e9d-a4d1-8988c1191fe8"}});
    if let Some(v6) = i.ipv6 {
        v["ipv6-address"] = json!(v6);
    }
    v
}

fn instance_full(i: &Inst, world: &World) -> Value {
    let mut v = instance_item(i, world);
    v["security-groups"] = json!(i
        .groups
        .iter()
        .map(|g| json!({"id": g}))
        .collect::<Vec<_>>());
    v["elastic-ips"] = json!(i.eips.iter().map(|e| json!({"id": e})).collect::<Vec<_>>());
    v["private-networks"] = json!([]);
    v
}

async fn handle(State(world): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let line = if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    };

    let fault = {
        let mut w = world.lock().unwrap();
        w.log.push(line.clone());
        w.take_fault(&line)
    };

    if path == "/latest/meta-data/instance-id" {
        if parts.headers.contains_key(AUTHORIZATION) {
            return error(
                StatusCode::BAD_REQUEST,
                "metadata requests carry no credentials",
            );
        }
        return ([(CONTENT_TYPE, "text/plain")], format!("{B}\n")).into_response();
    }

    let Some(auth) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return error(StatusCode::FORBIDDEN, "missing Authorization");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secret_for = |k: &str| (k == KEY).then(|| SECRET.to_string());
    if let Err(e) = sign::verify(auth, &method, &path, &query, &body, secret_for, now) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("authentication failed: {e}"),
        );
    }
    if body.is_empty() == parts.headers.contains_key(CONTENT_TYPE) {
        return error(
            StatusCode::BAD_REQUEST,
            "Content-Type goes with a body, and only with one",
        );
    }
    let params = sign::parse_query(&query);
    for (i, (name, value)) in params.iter().enumerate() {
        if value.is_empty() || params[..i].iter().any(|(n, _)| n == name) {
            return error(StatusCode::BAD_REQUEST, "empty or repeated query parameter");
        }
    }

    match fault {
        Some(Fault::Drop) => panic!("{DROP}"),
        Some(Fault::Status {
            code,
            headers,
            body,
        }) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            for (k, v) in headers {
                response.headers_mut().insert(k, v.parse().unwrap());
            }
            return response;
        }
        None => {}
    }

    let mut w = world.lock().unwrap();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "no such API");
    };
    match (method.as_str(), rest) {
        ("GET", "elastic-ip") => axum::Json(json!({"elastic-ips": [
            {"id": "11111111-0000-4000-8000-000000000000", "ip": "198.51.100.49", "addressfamily": "inet4", "cidr": "198.51.100.49/32"},
            {"id": EIP_ID, "ip": EIP, "addressfamily": "inet4", "cidr": format!("{EIP}/32"), "description": "", "labels": {}},
        ]}))
        .into_response(),
        ("GET", "security-group") => {
            let groups: Vec<Value> = w
                .groups
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name, "description": "", "rules": []}))
                .collect();
            axum::Json(json!({ "security-groups": groups })).into_response()
        }
        ("GET", "instance") => {
            let filter = params
                .iter()
                .find(|(n, _)| n == "ip-address")
                .map(|(_, v)| v.clone());
            let items: Vec<Value> = w
                .instances
                .iter()
                .filter(|i| match &filter {
                    None => true,
                    Some(ip) => {
                        (ip == EIP && i.eips.iter().any(|e| e == EIP_ID))
                            || (w.sloppy_ip_filter && ip == i.public_ip)
                    }
                })
                .map(|i| instance_item(i, &w))
                .collect();
            axum::Json(json!({ "instances": items })).into_response()
        }
        ("GET", r) if r.starts_with("instance/") => {
            let id = &r["instance/".len()..];
            match w.instances.iter().find(|i| i.id == id) {
                Some(i) => axum::Json(instance_full(i, &w)).into_response(),
                None => error(StatusCode::NOT_FOUND, "instance not found"),
            }
        }
        ("GET", r) if r.starts_with("operation/") => {
            let id = r["operation/".len()..].to_string();
            let Some(mut op) = w.ops.remove(&id) else {
                return error(StatusCode::NOT_FOUND, "operation not found");
            };
            op.polls_left = op.polls_left.saturating_sub(1);
            let terminal = op.polls_left == 0;
            if terminal && op.ends.is_none() {
                w.apply(&op.effect);
            }
            let v = World::operation_json(&id, &op, terminal);
            w.ops.insert(id, op);
            axum::Json(v).into_response()
        }
        ("PUT", r) if r.starts_with("elastic-ip/") => {
            let target = &r["elastic-ip/".len()..];
            let (eip, attach) = match target.split_once(':') {
                Some((eip, "attach")) => (eip, true),
                Some((eip, "detach")) => (eip, false),
                _ => return error(StatusCode::NOT_FOUND, "no such action"),
            };
            if eip != EIP_ID {
                return error(StatusCode::NOT_FOUND, "elastic IP not found");
            }
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(instance) = parsed.pointer("/instance/id").and_then(Value::as_str) else {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"message": "invalid request", "errors": [{"message": "instance is required"}]})),
                )
                    .into_response();
            };
            if !w.instances.iter().any(|i| i.id == instance) {
                return error(StatusCode::NOT_FOUND, "instance not found");
            }
            let redundant = w.holds(instance) == attach;
            let mut ends = w.failing;
            if redundant {
                match w.redundant {
                    Redundant::NoOp => {}
                    Redundant::OperationFails(reason) => ends = Some(("failure", Some(reason))),
                    Redundant::Http400 => {
                        return error(StatusCode::BAD_REQUEST, "nothing to do for this instance")
                    }
                }
            }
            w.next_op += 1;
            let id = format!("e2047130-b86e-11ef-83b3-{:012}", w.next_op);
            let op = Op {
                polls_left: w.polls,
                effect: Some((instance.to_string(), attach)),
                ends,
            };
            let terminal = op.polls_left == 0;
            if terminal && op.ends.is_none() {
                w.apply(&op.effect);
            }
            let v = World::operation_json(&id, &op, terminal);
            w.ops.insert(id, op);
            axum::Json(v).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
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
        Server {
            base: format!("http://{addr}"),
            world,
        }
    }

    fn config(&self) -> ExoscaleConfig {
        let mut cfg = ExoscaleConfig::new(KEY, Secret::new(SECRET));
        cfg.endpoint = format!("{}/v2", self.base);
        cfg.metadata_url = self.base.clone();
        cfg.instance_id = Some(InstanceId::from(A));
        cfg.request_timeout = Duration::from_secs(2);
        cfg.operation_timeout = Duration::from_secs(5);
        cfg.retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(5),
        };
        cfg
    }

    fn client(&self) -> Exoscale {
        Exoscale::new(self.config()).unwrap()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

fn eip() -> IpAddr {
    EIP.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::from(s)
}

#[tokio::test]
async fn whoami_reads_the_instance_id_from_metadata_once() {
    let server = Server::start(World::new()).await;
    let mut cfg = server.config();
    cfg.instance_id = None;
    let client = Exoscale::new(cfg).unwrap();
    let me = client.whoami().await.unwrap();
    assert_eq!(me.id, id(B));
    assert_eq!(me.name, "lb-b");
    assert_eq!(
        me.addresses,
        vec![
            "203.0.113.11".parse::<IpAddr>().unwrap(),
            "2001:db8::11".parse().unwrap()
        ]
    );
    client.whoami().await.unwrap();
    let w = server.world();
    assert_eq!(
        w.count("GET /latest/meta-data/instance-id"),
        1,
        "{:?}",
        w.log
    );
    assert_eq!(w.count(&format!("GET /v2/instance/{B}")), 2);
}

#[tokio::test]
async fn whoami_with_a_configured_id_skips_metadata() {
    let server = Server::start(World::new()).await;
    let me = server.client().whoami().await.unwrap();
    assert_eq!(me.id, id(A));
    assert_eq!(
        me.addresses,
        vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(server.world().log, vec![format!("GET /v2/instance/{A}")]);
}

#[tokio::test]
async fn holders_ignore_instances_matched_by_their_native_ip() {
    let mut world = World::new();
    world.sloppy_ip_filter = true;
    world.instances[3].public_ip = EIP; // D's own address equals the EIP's
    let server = Server::start(world).await;
    let client = server.client();
    assert_eq!(client.holders(eip()).await.unwrap(), vec![id(A)]);
    {
        let w = server.world();
        assert_eq!(w.count(&format!("GET /v2/instance?ip-address={EIP}")), 1);
        assert_eq!(
            w.count(&format!("GET /v2/instance/{D}")),
            1,
            "D was checked"
        );
        assert_eq!(w.count("GET /v2/elastic-ip"), 1);
    }
    // The EIP id is cached.
    client.holders(eip()).await.unwrap();
    assert_eq!(server.world().count("GET /v2/elastic-ip"), 1);
}

#[tokio::test]
async fn an_unknown_elastic_ip_is_not_found_by_address() {
    let server = Server::start(World::new()).await;
    let err = server
        .client()
        .holders("198.51.100.77".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("198.51.100.77")),
        "{err}"
    );
}

#[tokio::test]
async fn attach_polls_a_pending_operation_until_success() {
    let mut world = World::new();
    world.polls = 3;
    let server = Server::start(world).await;
    let client = server.client();
    client.attach(eip(), &id(B)).await.unwrap();
    {
        let w = server.world();
        assert!(w.holds(B));
        assert_eq!(w.count("GET /v2/operation/"), 3, "{:?}", w.log);
        assert_eq!(w.count(&format!("PUT /v2/elastic-ip/{EIP_ID}:attach")), 1);
    }
    // Both holders now; detach the old one the same way.
    let mut holders = client.holders(eip()).await.unwrap();
    holders.sort();
    assert_eq!(holders, vec![id(A), id(B)]);
    client.detach(eip(), &id(A)).await.unwrap();
    assert_eq!(client.holders(eip()).await.unwrap(), vec![id(B)]);
}

#[tokio::test]
async fn a_terminal_first_response_is_not_polled() {
    let server = Server::start(World::new()).await;
    server.client().attach(eip(), &id(B)).await.unwrap();
    let w = server.world();
    assert!(w.holds(B));
    assert_eq!(w.count("GET /v2/operation/"), 0, "{:?}", w.log);
}

#[tokio::test]
async fn failed_operations_map_onto_the_taxonomy() {
    let mut world = World::new();
    world.polls = 1;
    let server = Server::start(world).await;
    let client = server.client();
    for (state, reason, kind) in [
        ("failure", Some("forbidden"), "auth"),
        ("failure", Some("busy"), "retryable"),
        ("failure", Some("conflict"), "conflict"),
        ("failure", Some("not-found"), "not_found"),
        ("failure", Some("incorrect"), "invalid"),
        ("timeout", None, "retryable"),
    ] {
        server.world().failing = Some((state, reason));
        let err = client.attach(eip(), &id(B)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{state}/{reason:?}: {err}");
        if let Some(reason) = reason {
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert!(!server.world().holds(B));
    }
}

#[tokio::test]
async fn redundant_attach_and_detach_succeed() {
    let server = Server::start(World::new()).await;
    let client = server.client();
    for redundant in [
        Redundant::NoOp,
        Redundant::OperationFails("conflict"),
        Redundant::OperationFails("incorrect"),
        Redundant::Http400,
    ] {
        server.world().redundant = redundant;
        server.world().log.clear();
        client.attach(eip(), &id(A)).await.unwrap();
        client.detach(eip(), &id(B)).await.unwrap();
        let w = server.world();
        assert!(w.holds(A) && !w.holds(B));
        if !matches!(redundant, Redundant::NoOp) {
            // The failure was only accepted after looking at the instances themselves.
            assert_eq!(w.count(&format!("GET /v2/instance/{A}")), 1, "{:?}", w.log);
            assert_eq!(w.count(&format!("GET /v2/instance/{B}")), 1, "{:?}", w.log);
        }
    }
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    let mut world = World::new();
    world.fault(
        "GET /v2/elastic-ip",
        Fault::Status {
            code: 429,
            headers: vec![("retry-after", "1")],
            body: r#"{"message":"too many requests"}"#,
        },
        1,
    );
    world.fault(
        "GET /v2/instance?",
        Fault::Status {
            code: 429,
            headers: vec![],
            body: r#"{"error":"slow down","retry_after":0.3}"#,
        },
        1,
    );
    let server = Server::start(world).await;
    let started = Instant::now();
    assert_eq!(server.client().holders(eip()).await.unwrap(), vec![id(A)]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1300), "{took:?}");
    let w = server.world();
    assert_eq!(w.count("GET /v2/elastic-ip"), 2);
    assert_eq!(w.count("GET /v2/instance?"), 2);
}

#[tokio::test]
async fn a_wait_beyond_the_deadline_is_reported_not_slept() {
    let mut world = World::new();
    world.fault(
        "GET /v2/elastic-ip",
        Fault::Status {
            code: 429,
            headers: vec![("retry-after", "120")],
            body: "",
        },
        1,
    );
    let server = Server::start(world).await;
    let started = Instant::now();
    let err = server.client().holders(eip()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    match err {
        Error::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)))
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried() {
    let mut world = World::new();
    world.fault(
        &format!("GET /v2/instance/{A}"),
        Fault::Status {
            code: 503,
            headers: vec![],
            body: "<html>maintenance</html>",
        },
        2,
    );
    let server = Server::start(world).await;
    assert_eq!(server.client().whoami().await.unwrap().id, id(A));
    assert_eq!(server.world().count(&format!("GET /v2/instance/{A}")), 3);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let mut world = World::new();
    world.fault("PUT /v2/elastic-ip/", Fault::Drop, 1);
    let server = Server::start(world).await;
    server.client().attach(eip(), &id(B)).await.unwrap();
    let w = server.world();
    assert!(w.holds(B));
    assert_eq!(w.count("PUT /v2/elastic-ip/"), 2, "{:?}", w.log);
}

#[tokio::test]
async fn exhausted_retries_are_retryable() {
    let mut world = World::new();
    world.fault(
        "GET /v2/elastic-ip",
        Fault::Status {
            code: 500,
            headers: vec![],
            body: r#"{"message":"internal error"}"#,
        },
        usize::MAX,
    );
    let server = Server::start(world).await;
    let err = server.client().holders(eip()).await.unwrap_err();
    match &err {
        Error::Retryable(m) => {
            assert!(m.contains("internal error"), "{m}");
            assert!(m.contains("after 4 attempts"), "{m}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(server.world().count("GET /v2/elastic-ip"), 4);
}

#[tokio::test]
async fn a_rejected_signature_is_auth_and_never_shows_the_secret() {
    let server = Server::start(World::new()).await;
    let mut cfg = server.config();
    cfg.api_secret = Secret::new("wrong-secret-do-not-print");
    let client = Exoscale::new(cfg.clone()).unwrap();
    let err = client.whoami().await.unwrap_err();
    assert_eq!(err.kind(), "auth", "{err}");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{client:?}"),
        format!("{cfg:?}"),
    ] {
        assert!(!text.contains("wrong-secret-do-not-print"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("signature="), "{text}");
    }
    assert!(err.to_string().contains("invalid signature"), "{err}");
    assert_eq!(server.world().log.len(), 1, "auth failures are not retried");
}

#[tokio::test]
async fn peers_by_group_name_and_by_id() {
    let server = Server::start(World::new()).await;
    let client = server.client();
    for group in ["exoip-peers", GROUP_ID] {
        let peers = client.peers(group, &id(A)).await.unwrap();
        let ids: Vec<&str> = peers.iter().map(|p| p.id.0.as_str()).collect();
        // C is stopped, D is in another group, A is me.
        assert_eq!(ids, vec![B, E], "{group}");
        assert_eq!(peers[0].name, "lb-b");
        assert_eq!(
            peers[0].addresses,
            vec![
                "203.0.113.11".parse::<IpAddr>().unwrap(),
                "2001:db8::11".parse().unwrap()
            ]
        );
    }
    let err = client.peers("no-such-group", &id(A)).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("no-such-group")),
        "{err}"
    );
}

#[tokio::test]
async fn an_operation_stuck_pending_times_out() {
    let mut world = World::new();
    world.polls = u32::MAX;
    let server = Server::start(world).await;
    let mut cfg = server.config();
    cfg.operation_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = Exoscale::new(cfg)
        .unwrap()
        .attach(eip(), &id(B))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Retryable(m) if m.contains("still pending")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(server.world().count("GET /v2/operation/") >= 3);
}

#[tokio::test]
async fn polling_gives_up_after_five_errors_in_a_row() {
    let mut world = World::new();
    world.polls = 2;
    world.fault(
        "GET /v2/operation/",
        Fault::Status {
            code: 502,
            headers: vec![],
            body: "bad gateway",
        },
        usize::MAX,
    );
    let server = Server::start(world).await;
    let err = server.client().attach(eip(), &id(B)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Retryable(m) if m.contains("5 consecutive errors")),
        "{err}"
    );
    // One request per poll: the poll loop, not the HTTP layer, owns the error budget.
    assert_eq!(server.world().count("GET /v2/operation/"), 5);
}

#[tokio::test]
async fn malformed_responses_are_invalid() {
    let mut world = World::new();
    world.fault(
        &format!("GET /v2/instance/{A}"),
        Fault::Status {
            code: 200,
            headers: vec![],
            body: r#"{"name":"no-id","state":"running"}"#,
        },
        1,
    );
    world.fault(
        "GET /v2/security-group",
        Fault::Status {
            code: 200,
            headers: vec![],
            body: "<html>captive portal</html>",
        },
        1,
    );
    let server = Server::start(world).await;
    let client = server.client();
    let err = client.whoami().await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("no id")),
        "{err}"
    );
    let err = client.peers("exoip-peers", &id(A)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("malformed response")),
        "{err}"
    );
}

#[tokio::test]
async fn requests_for_a_missing_instance_are_not_found() {
    let server = Server::start(World::new()).await;
    let missing = id("2f6a9a43-1c51-4a4e-9e0a-0000000000ff");
    let err = server.client().attach(eip(), &missing).await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
}

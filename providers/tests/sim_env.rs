//! Around the API: the metadata stub, the route hook, seed validation and start-up errors.

mod sim_common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoip_providers::sim::{self, RouteRunner, Seed, SeedError, SimConfig, SimError};
use exoip_providers::InstanceId;
use sim_common::*;

const MD_A: &str = "4c0e0c1a-0000-4000-8000-0000000000a1";
const MD_B: &str = "4c0e0c1a-0000-4000-8000-0000000000b2";
const MD_C: &str = "4c0e0c1a-0000-4000-8000-0000000000c3";

/// Two instances whose public addresses are loopback addresses a test can send from, and one
/// (in another zone) that can only be named.
fn metadata_seed() -> Seed {
    Seed::from_json(&format!(
        r#"{{"zone": "ch-gva-2",
  "api_keys": [{{"key": "{KEY}", "secret": "{SECRET}"}}],
  "instances": [
    {{"id": "{MD_A}", "name": "a", "public_ip": "127.0.0.2", "user_data": "I am a"}},
    {{"id": "{MD_B}", "name": "b", "public_ip": "127.0.0.3"}},
    {{"id": "{MD_C}", "name": "c", "zone": "de-fra-1", "public_ip": "192.0.2.33"}}
  ]}}"#
    ))
    .unwrap()
}

fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn md_get(client: &reqwest::Client, url: String) -> (u16, String, String) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

#[tokio::test]
async fn metadata_identifies_the_caller_by_source_address() {
    let sim = sim::start(SimConfig {
        metadata_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..SimConfig::new(metadata_seed())
    })
    .await
    .unwrap();
    let base = sim.metadata_url().unwrap();

    for (source, id, name) in [("127.0.0.2", MD_A, "a"), ("127.0.0.3", MD_B, "b")] {
        let c = client_from(source);
        for version in ["latest", "1.0"] {
            let (status, ctype, body) =
                md_get(&c, format!("{base}/{version}/meta-data/instance-id")).await;
            assert_eq!(status, 200, "{source} {version}");
            assert!(ctype.starts_with("text/plain"), "{ctype}");
            assert_eq!(body, id, "{source} {version}");
            let (_, _, zone) =
                md_get(&c, format!("{base}/{version}/meta-data/availability-zone")).await;
            assert_eq!(zone, "ch-gva-2");
            let (_, _, addr) = md_get(&c, format!("{base}/{version}/meta-data/public-ipv4")).await;
            assert_eq!(addr, source);
            let (_, _, host) =
                md_get(&c, format!("{base}/{version}/meta-data/local-hostname")).await;
            assert_eq!(host, name);
        }
        let (status, _, index) = md_get(&c, format!("{base}/latest/meta-data/")).await;
        assert_eq!(status, 200);
        let keys: Vec<&str> = index.lines().collect();
        for k in ["instance-id", "availability-zone", "public-ipv4"] {
            assert!(keys.contains(&k), "{k} in {index:?}");
        }
    }
    let a = client_from("127.0.0.2");
    let (status, _, ud) = md_get(&a, format!("{base}/latest/user-data")).await;
    assert_eq!((status, ud.as_str()), (200, "I am a"));
    let (status, _, _) = md_get(&a, format!("{base}/latest/meta-data/no-such-key")).await;
    assert_eq!(status, 404);
    let (status, _, _) = md_get(&a, format!("{base}/2.0/meta-data/instance-id")).await;
    assert_eq!(status, 404, "only latest and 1.0");

    // A source that is nobody's address: only an explicit ?instance= works.
    let other = client_from("127.0.0.1");
    let (status, _, _) = md_get(&other, format!("{base}/latest/meta-data/instance-id")).await;
    assert_eq!(status, 404);
    let (status, _, body) = md_get(
        &other,
        format!("{base}/latest/meta-data/availability-zone?instance={MD_C}"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "de-fra-1"));
    let (status, _, _) = md_get(
        &other,
        format!(
            "{base}/latest/meta-data/instance-id?instance=00000000-0000-4000-8000-000000000000"
        ),
    )
    .await;
    assert_eq!(status, 404);
    // The source address wins over the query: an agent cannot pose as another.
    let (_, _, body) = md_get(
        &a,
        format!("{base}/latest/meta-data/instance-id?instance={MD_B}"),
    )
    .await;
    assert_eq!(body, MD_A);

    // The metadata stub is not on the API listener, and there is none unless asked for.
    let api = Api::new(&sim);
    assert_eq!(
        api.control("GET", "/latest/meta-data/instance-id", "")
            .await
            .status,
        404
    );
    let plain = sim::start(SimConfig::new(metadata_seed())).await.unwrap();
    assert!(plain.metadata_url().is_none());
}

/// Records the `ip` command lines instead of running them; can be told to fail.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    fail: Mutex<bool>,
}

impl RouteRunner for Recorder {
    fn run(&self, args: &[String]) -> Result<(), String> {
        self.lines.lock().unwrap().push(args.join(" "));
        if *self.fail.lock().unwrap() {
            Err("RTNETLINK answers: Operation not permitted".into())
        } else {
            Ok(())
        }
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

#[tokio::test]
async fn route_hook_follows_the_holders_before_success() {
    let rec = Arc::new(Recorder::default());
    let sim = sim::start(SimConfig {
        route_holders: true,
        route_runner: Some(rec.clone()),
        ..SimConfig::new(seed())
    })
    .await
    .unwrap();

    let mut startup = rec.take();
    startup.sort();
    assert_eq!(
        startup,
        [
            format!("-6 route replace unreachable {EIP6}/128"),
            format!("route replace {FRA_EIP}/32 via 198.51.100.21"),
            format!("route replace {EIP}/32 via 192.0.2.11"),
        ],
        "the seeded holders are routed at start"
    );

    let api = Api::new(&sim);
    // With no operation delay the route is in place when the answer arrives.
    let op = api.eip_action(EIP_ID, "attach", LB2).await;
    assert_eq!(op.status, 200);
    assert_eq!(
        rec.take(),
        [format!(
            "route replace {EIP}/32 nexthop via 192.0.2.11 nexthop via 192.0.2.12"
        )]
    );
    api.eip_action(EIP_ID, "detach", LB1).await;
    assert_eq!(
        rec.take(),
        [format!("route replace {EIP}/32 via 192.0.2.12")]
    );
    api.eip_action(EIP_ID, "detach", LB2).await;
    assert_eq!(rec.take(), [format!("route replace unreachable {EIP}/32")]);
    api.eip_action(EIP_ID, "detach", LB2).await;
    assert!(rec.take().is_empty(), "a no-op changes no route");

    api.eip_action(EIP6_ID, "attach", LB1).await;
    assert_eq!(
        rec.take(),
        [format!("-6 route replace {EIP6}/128 via 2001:db8:1::11")]
    );
    // lb3 has no IPv6 address: the cloud could not deliver to it, and neither does the route.
    sim.force_holders(ip(EIP6), &[InstanceId::from(LB1), InstanceId::from(LB3)])
        .unwrap();
    assert_eq!(
        rec.take(),
        [format!("-6 route replace {EIP6}/128 via 2001:db8:1::11")]
    );

    // With a delay, the route changes when the operation completes, not before.
    sim.update_faults(|f| f.op_delay = Duration::from_millis(200))
        .unwrap();
    let op = api.eip_action(EIP_ID, "attach", LB3).await.json;
    assert!(rec.take().is_empty(), "pending: not routed yet");
    let done = api.wait_operation(op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "success");
    assert_eq!(
        rec.take(),
        [format!("route replace {EIP}/32 via 192.0.2.13")]
    );

    // A failing `ip` is logged, not fatal.
    *rec.fail.lock().unwrap() = true;
    sim.update_faults(|f| f.op_delay = Duration::ZERO).unwrap();
    let op = api.eip_action(EIP_ID, "detach", LB3).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    assert_eq!(rec.take(), [format!("route replace unreachable {EIP}/32")]);
    assert!(sim.holders(ip(EIP)).is_empty());
}

#[tokio::test]
async fn routes_are_left_alone_unless_asked() {
    let rec = Arc::new(Recorder::default());
    let sim = sim::start(SimConfig {
        route_holders: false,
        route_runner: Some(rec.clone()),
        ..SimConfig::new(seed())
    })
    .await
    .unwrap();
    Api::new(&sim).eip_action(EIP_ID, "attach", LB2).await;
    assert!(rec.take().is_empty());
}

/// Applies `edit` to the valid test seed and returns the validation error.
fn refused(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&seed_json()).unwrap();
    edit(&mut v);
    match Seed::from_json(&v.to_string()) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

type Edit = dyn FnOnce(&mut serde_json::Value);

#[test]
fn seed_validation_names_the_problem() {
    use serde_json::json;
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "unknown security group",
            Box::new(|v| {
                v["instances"][0]["security_groups"] =
                    json!(["9d0b2f6c-0000-4000-8000-000000000000"])
            }),
        ),
        (
            "unknown instance",
            Box::new(|v| {
                v["elastic_ips"][0]["attached_to"] = json!(["9d0b2f6c-0000-4000-8000-000000000000"])
            }),
        ),
        (
            "duplicate id",
            Box::new(|v| v["instances"][1]["id"] = json!(LB1)),
        ),
        (
            "duplicate id",
            Box::new(|v| v["elastic_ips"][0]["id"] = v["security_groups"][0]["id"].clone()),
        ),
        (
            "not a UUID",
            Box::new(|v| v["instances"][0]["id"] = json!("lb1")),
        ),
        (
            "300.1.2.3",
            Box::new(|v| v["instances"][0]["public_ip"] = json!("300.1.2.3")),
        ),
        (
            "not a valid address",
            Box::new(|v| v["instances"][0]["public_ip"] = json!("2001:db8::1")),
        ),
        (
            "not a valid address",
            Box::new(|v| v["elastic_ips"][0]["ip"] = json!("banana")),
        ),
        (
            "not a unicast",
            Box::new(|v| v["elastic_ips"][0]["ip"] = json!("0.0.0.0")),
        ),
        (
            "used twice",
            Box::new(|v| {
                let mut twin = v["elastic_ips"][0].clone();
                twin["id"] = json!("8ea5e5c4-0000-4000-8000-0000000000ff");
                v["elastic_ips"].as_array_mut().unwrap().push(twin);
            }),
        ),
        (
            "used twice",
            Box::new(|v| v["instances"][1]["public_ip"] = json!("192.0.2.11")),
        ),
        (
            "is in zone de-fra-1",
            Box::new(|v| v["elastic_ips"][0]["attached_to"] = json!([FRA1])),
        ),
        (
            "listed twice",
            Box::new(|v| v["elastic_ips"][0]["attached_to"] = json!([LB1, LB1])),
        ),
        (
            "state \"sleeping\"",
            Box::new(|v| v["instances"][0]["state"] = json!("sleeping")),
        ),
        (
            "at least one API key",
            Box::new(|v| v["api_keys"] = json!([])),
        ),
        (
            "duplicate key",
            Box::new(|v| v["api_keys"][1]["key"] = json!(KEY)),
        ),
        (
            "empty secret",
            Box::new(|v| v["api_keys"][0]["secret"] = json!("")),
        ),
        ("zone \"CH GVA\"", Box::new(|v| v["zone"] = json!("CH GVA"))),
        (
            "unknown field",
            Box::new(|v| v["instances"][0]["pubic_ip"] = json!("192.0.2.99")),
        ),
        (
            "missing field `zone`",
            Box::new(|v| v.as_object_mut().unwrap().remove("zone").map(drop).unwrap()),
        ),
    ];
    for (want, edit) in cases {
        let err = refused(edit);
        assert!(err.contains(want), "expected {want:?} in: {err}");
        assert!(!err.contains(SECRET), "no secret in errors: {err}");
    }
}

#[tokio::test]
async fn start_up_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    match Seed::load(&missing) {
        Err(SeedError::Read { path, .. }) => assert!(path.contains("nope.json")),
        other => panic!("{other:?}"),
    }
    let file = dir.path().join("seed.json");
    std::fs::write(&file, sim::EXAMPLE_SEED).unwrap();
    let example = Seed::load(&file).unwrap();
    assert_eq!(example.instances.len(), 3);

    // The port is taken.
    let first = sim::start(SimConfig::new(seed())).await.unwrap();
    let taken = SimConfig {
        api_listen: first.api_addr(),
        ..SimConfig::new(seed())
    };
    match sim::start(taken).await {
        Err(SimError::Listen { addr, .. }) => assert_eq!(addr, first.api_addr()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two simulators on one port"),
    }
    // An invalid seed built in code is still validated.
    let mut bad = seed();
    bad.instances[0].security_groups = vec!["9d0b2f6c-0000-4000-8000-000000000000".into()];
    assert!(matches!(
        sim::start(SimConfig::new(bad)).await,
        Err(SimError::Seed(_))
    ));
    let timeline_in_missing_dir = SimConfig {
        timeline_path: Some(dir.path().join("no/such/dir/t.jsonl")),
        ..SimConfig::new(seed())
    };
    assert!(matches!(
        sim::start(timeline_in_missing_dir).await,
        Err(SimError::Timeline { .. })
    ));

    // Shutdown frees the port.
    let addr = first.api_addr();
    first.shutdown().await;
    let again = sim::start(SimConfig {
        api_listen: addr,
        ..SimConfig::new(seed())
    })
    .await
    .unwrap();
    assert_eq!(again.api_addr(), addr);
}

//! The simulated Exoscale API v2 as a client sees it: shapes, authentication, zones, operations,
//! attach/detach semantics and the timeline.

mod sim_common;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use exoip_providers::exoscale::sign;
use exoip_providers::sim::{Faults, HolderEvent, Reason, Seed, SimConfig, TimelineEvent};
use exoip_providers::InstanceId;
use serde_json::Value;
use sim_common::*;

#[tokio::test]
async fn elastic_ip_shapes_follow_the_spec() {
    let sim = start_default().await;
    let api = Api::new(&sim);

    let r = api.get("/v2/elastic-ip").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"], "application/json; charset=utf-8",
        "JSON as the real API labels it"
    );
    let list = r.json["elastic-ips"].as_array().unwrap();
    assert_eq!(list.len(), 2, "only this zone's EIPs: {}", r.json);
    for e in list {
        assert_eq!(
            keys(e),
            ["addressfamily", "cidr", "description", "id", "ip", "labels"],
            "no holder list on an EIP"
        );
    }
    let v4 = list.iter().find(|e| e["id"] == EIP_ID).unwrap();
    assert_eq!(v4["ip"], EIP);
    assert_eq!(v4["addressfamily"], "inet4");
    assert_eq!(v4["cidr"], format!("{EIP}/32"));
    assert_eq!(v4["description"], "exoip test");
    assert_eq!(v4["labels"]["k"], "v");
    let v6 = list.iter().find(|e| e["id"] == EIP6_ID).unwrap();
    assert_eq!(v6["addressfamily"], "inet6");
    assert_eq!(v6["cidr"], format!("{EIP6}/128"));

    let one = api.get(&format!("/v2/elastic-ip/{EIP_ID}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(&one.json, v4);
}

#[tokio::test]
async fn instance_shapes_differ_between_list_and_detail() {
    let sim = start_default().await;
    let api = Api::new(&sim);

    let r = api.get("/v2/instance").await;
    assert_eq!(r.status, 200);
    let list = r.json["instances"].as_array().unwrap();
    assert_eq!(list.len(), 3, "only ch-gva-2's instances");
    for i in list {
        assert!(
            i.get("elastic-ips").is_none(),
            "list items carry no elastic-ips: {i}"
        );
    }
    let lb1 = list.iter().find(|i| i["id"] == LB1).unwrap();
    let groups = lb1["security-groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["id"], GROUP);
    assert_eq!(
        groups[0]["name"], "exoip",
        "list items embed full group objects"
    );
    assert_eq!(lb1["public-ip"], "192.0.2.11");
    assert_eq!(lb1["ipv6-address"], "2001:db8:1::11");
    assert_eq!(lb1["public-ip-assignment"], "dual");
    assert_eq!(lb1["state"], "running");
    assert_eq!(lb1["name"], "lb1");
    let lb3 = list.iter().find(|i| i["id"] == LB3).unwrap();
    assert_eq!(lb3["state"], "stopped");
    assert_eq!(lb3["public-ip-assignment"], "inet4");

    let d = api.get(&format!("/v2/instance/{LB1}")).await;
    assert_eq!(d.status, 200);
    let d = d.json;
    assert_eq!(d["elastic-ips"], serde_json::json!([{ "id": EIP_ID }]));
    assert_eq!(
        d["security-groups"],
        serde_json::json!([{ "id": GROUP }, { "id": OTHER_GROUP }]),
        "the detail has bare group references"
    );
    assert_eq!(d["public-ip"], "192.0.2.11");
    assert_eq!(d["name"], "lb1");
    assert_eq!(d["state"], "running");
    assert_eq!(d["labels"]["role"], "lb");
    assert!(d["mac-address"].as_str().unwrap().starts_with("06:"));
    let lb2 = api.get(&format!("/v2/instance/{LB2}")).await.json;
    assert_eq!(lb2["elastic-ips"], serde_json::json!([]));
    assert_eq!(lb2["manager"]["type"], "instance-pool");
}

#[tokio::test]
async fn security_groups_operations_and_zones() {
    let sim = start_default().await;
    let api = Api::new(&sim);

    let r = api.get("/v2/security-group").await;
    assert_eq!(r.status, 200);
    let groups = r.json["security-groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let g = api.get(&format!("/v2/security-group/{GROUP}")).await.json;
    assert_eq!(g["name"], "exoip");
    assert_eq!(g["rules"][0]["start-port"], 12345);
    for k in ["instances", "members"] {
        assert!(g.get(k).is_none(), "a security group has no member list");
    }
    let public = api.get("/v2/security-group?visibility=public").await;
    assert_eq!(public.json["security-groups"], serde_json::json!([]));

    let z = api.get("/v2/zone").await;
    assert_eq!(z.status, 200);
    let zones = z.json["zones"].as_array().unwrap();
    let gva = zones.iter().find(|z| z["name"] == "ch-gva-2").unwrap();
    assert_eq!(gva["api-endpoint"], "https://api-ch-gva-2.exoscale.com/v2");
    assert!(zones.iter().any(|z| z["name"] == "de-fra-1"));

    let op = api.eip_action(EIP_ID, "attach", LB2).await.json;
    let keys_pending = keys(&op);
    assert_eq!(keys_pending, ["id", "reference", "state"]);
    assert_eq!(op["state"], "pending");
    assert_eq!(op["reference"]["id"], EIP_ID);
    assert_eq!(op["reference"]["link"], format!("/v2/elastic-ip/{EIP_ID}"));
    assert_eq!(op["reference"]["command"], "get-elastic-ip");
    let done = api.wait_operation(op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "success");
    assert_eq!(done["id"], op["id"]);
    assert!(done.get("reason").is_none(), "no reason on success: {done}");
}

#[tokio::test]
async fn errors_have_the_api_shapes() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let missing = "00000000-0000-4000-8000-000000000000";
    for target in [
        format!("/v2/elastic-ip/{missing}"),
        format!("/v2/instance/{missing}"),
        format!("/v2/security-group/{missing}"),
        format!("/v2/operation/{missing}"),
        "/v2/no-such-thing".to_string(),
    ] {
        let r = api.get(&target).await;
        assert_eq!(r.status, 404, "{target}");
        assert!(r.json["message"].is_string(), "{target}: {}", r.json);
    }
    let r = api.eip_action(missing, "attach", LB1).await;
    assert_eq!(r.status, 404, "unknown EIP");
    let r = api.eip_action(EIP_ID, "attach", missing).await;
    assert_eq!(r.status, 404, "unknown instance");
    let r = api.eip_action(EIP_ID, "explode", LB1).await;
    assert_eq!(r.status, 404, "unknown action");

    for body in [
        "",
        "{}",
        r#"{"instance": {}}"#,
        r#"{"instance": {"id": 7}}"#,
        "not json",
    ] {
        let r = api
            .put(&format!("/v2/elastic-ip/{EIP_ID}:attach"), body)
            .await;
        assert_eq!(r.status, 400, "body {body:?}");
        assert!(r.json["message"].is_string());
        assert!(
            r.json["errors"][0]["message"].is_string(),
            "400 carries errors[]: {}",
            r.json
        );
    }
    let r = api.get("/v2/instance?ip-address=not-an-ip").await;
    assert_eq!(r.status, 400);
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1], "nothing changed");
    assert!(sim.timeline().is_empty());
}

#[tokio::test]
async fn every_request_must_be_signed_correctly() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let fresh = now_unix() + 600;
    let forbidden = |r: &Reply, what: &str| {
        assert_eq!(r.status, 403, "{what}: {}", r.json);
        assert!(r.json["message"].is_string(), "{what}");
        assert!(
            !r.json.to_string().contains(SECRET),
            "{what}: the secret leaks"
        );
    };

    // A correct request passes, with either key.
    assert_eq!(api.get("/v2/instance").await.status, 200);
    let other = Api {
        key: OTHER_KEY.into(),
        secret: OTHER_SECRET.into(),
        ..api.clone()
    };
    assert_eq!(other.get("/v2/instance").await.status, 200);

    forbidden(
        &Api::send(api.raw("GET", "/v2/instance", "")).await,
        "unsigned",
    );
    forbidden(
        &Api::send(api.raw("GET", "/v2/zone", "")).await,
        "unsigned zone list",
    );
    let wrong_secret = Api {
        secret: "not-the-secret".into(),
        ..api.clone()
    };
    forbidden(&wrong_secret.get("/v2/instance").await, "wrong secret");
    let unknown = Api {
        key: "EXOunknown".into(),
        ..api.clone()
    };
    forbidden(&unknown.get("/v2/instance").await, "unknown key");
    let expired = api.request("GET", "/v2/instance", "", now_unix() - 5);
    forbidden(&Api::send(expired).await, "expired");
    let malformed = api
        .raw("GET", "/v2/instance", "")
        .header("Authorization", "EXO2-HMAC-SHA256 credential=x");
    forbidden(&Api::send(malformed).await, "malformed");

    // Signed without the query, sent with it.
    let auth = sign::authorization(KEY, SECRET, "GET", "/v2/instance", b"", fresh);
    let rb = api
        .raw("GET", "/v2/instance?ip-address=192.0.2.11", "")
        .header("Authorization", auth);
    forbidden(&Api::send(rb).await, "query parameter not signed");

    // Signed without the /v2 prefix.
    let auth = sign::authorization(KEY, SECRET, "GET", "/instance", b"", fresh);
    let rb = api
        .raw("GET", "/v2/instance", "")
        .header("Authorization", auth);
    forbidden(&Api::send(rb).await, "path without /v2");

    // The body signed is not the body sent (different whitespace).
    let target = format!("/v2/elastic-ip/{EIP_ID}:attach");
    let signed_body = format!(r#"{{"instance": {{"id": "{LB2}"}}}}"#);
    let sent_body = format!(r#"{{"instance":{{"id":"{LB2}"}}}}"#);
    let auth = sign::authorization(KEY, SECRET, "PUT", &target, signed_body.as_bytes(), fresh);
    let rb = api
        .raw("PUT", &target, &sent_body)
        .header("Authorization", auth);
    forbidden(&Api::send(rb).await, "body differs");
    assert_eq!(
        ids(&sim.holders(ip(EIP))),
        [LB1],
        "a refused attach changes nothing"
    );

    // A signed query with a percent-encoded value is accepted.
    let r = api.get("/v2/instance?labels=role%3Dlb%2Cenv%3Dprod").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["instances"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn clock_skew_and_injected_clock_decide_expiry() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    sim.set_clock_skew(700);
    let r = api.get("/v2/instance").await;
    assert_eq!(r.status, 403, "the cloud's clock is past our 600 s window");
    sim.set_clock_skew(-3600);
    let r = Api::send(api.request("GET", "/v2/instance", "", now_unix() - 60)).await;
    assert_eq!(
        r.status, 200,
        "a slow cloud clock accepts a recently expired signature"
    );
    sim.set_clock_skew(0);
    assert_eq!(api.get("/v2/instance").await.status, 200);

    // The golden vector of shared/clouds: accepted with the clock before its expiry, refused
    // one second after it, whatever the real time.
    let golden = r#"{"zone":"ch-gva-2",
        "api_keys":[{"key":"EXOtestkey0123456789abcdef","secret":"testsecret-0123456789"}]}"#;
    let vectors: Vec<Value> =
        serde_json::from_str(include_str!("../testdata/exoscale-signature-vectors.json")).unwrap();
    let v = vectors
        .iter()
        .find(|v| v["name"] == "get-list-elastic-ips")
        .unwrap();
    let header = v["authorization"].as_str().unwrap();
    assert_eq!(v["expires"], 1_893_456_000u64);
    for (now, want) in [(1_893_455_400u64, 200), (1_893_456_001, 403)] {
        let cfg = SimConfig {
            clock: Some(Arc::new(move || UNIX_EPOCH + Duration::from_secs(now))),
            ..SimConfig::new(Seed::from_json(golden).unwrap())
        };
        let sim = start(cfg).await;
        let api = Api::new(&sim);
        let r = Api::send(
            api.raw("GET", "/v2/elastic-ip", "")
                .header("Authorization", header),
        )
        .await;
        assert_eq!(r.status, want, "clock {now}: {}", r.json);
        if want == 200 {
            assert_eq!(r.json, serde_json::json!({ "elastic-ips": [] }));
        }
    }
}

#[tokio::test]
async fn attach_and_detach_go_through_operations_with_a_delay() {
    let sim = start(SimConfig {
        faults: Faults {
            op_delay: Duration::from_millis(300),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);

    let started = Instant::now();
    let op = api.eip_action(EIP_ID, "attach", LB2).await;
    assert_eq!(op.status, 200);
    assert_eq!(op.json["state"], "pending");
    let op_id = op.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        ids(&sim.holders(ip(EIP))),
        [LB1],
        "not applied while the operation is pending"
    );
    let polled = api.get(&format!("/v2/operation/{op_id}")).await.json;
    if started.elapsed() < Duration::from_millis(250) {
        assert_eq!(polled["state"], "pending");
    }
    let done = api.wait_operation(&op_id).await;
    assert_eq!(done["state"], "success");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        ids(&sim.holders(ip(EIP))),
        [LB1, LB2],
        "attach adds a holder"
    );

    // Both instances list the EIP; the ip-address filter returns both.
    for id in [LB1, LB2] {
        let d = api.get(&format!("/v2/instance/{id}")).await.json;
        assert_eq!(
            d["elastic-ips"],
            serde_json::json!([{ "id": EIP_ID }]),
            "{id}"
        );
    }
    let by_ip = api
        .get(&format!("/v2/instance?ip-address={EIP}"))
        .await
        .json;
    let mut found: Vec<&str> = by_ip["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, [LB1, LB2]);

    let op = api.eip_action(EIP_ID, "detach", LB1).await.json;
    let done = api.wait_operation(op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "success");
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB2]);
}

#[tokio::test]
async fn zero_delay_applies_before_answering_pending() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let op = api.eip_action(EIP_ID, "detach", LB1).await.json;
    assert_eq!(op["state"], "pending", "the answer still says pending");
    assert!(sim.holders(ip(EIP)).is_empty(), "but the change is done");
    let polled = api
        .get(&format!("/v2/operation/{}", op["id"].as_str().unwrap()))
        .await
        .json;
    assert_eq!(polled["state"], "success", "the first poll says success");

    // IPv6 EIPs work the same way.
    let op = api.eip_action(EIP6_ID, "attach", LB2).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    assert_eq!(ids(&sim.holders(ip(EIP6))), [LB2]);
}

#[tokio::test]
async fn immediate_operations_answer_success() {
    let sim = start(SimConfig {
        faults: Faults {
            op_immediate: true,
            op_delay: Duration::from_secs(30),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let op = api.eip_action(EIP_ID, "attach", LB3).await.json;
    assert_eq!(op["state"], "success");
    assert_eq!(
        ids(&sim.holders(ip(EIP))),
        [LB1, LB3],
        "applied at once despite the delay"
    );
}

#[tokio::test]
async fn no_op_mutations_succeed_or_fail_as_configured() {
    let sim = start_default().await;
    let api = Api::new(&sim);

    // Default: re-attach and detach-of-non-holder are successful no-ops.
    let op = api.eip_action(EIP_ID, "attach", LB1).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    let op = api.eip_action(EIP_ID, "detach", LB2).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1]);
    assert!(sim.timeline().is_empty(), "no-ops are not holder changes");

    sim.update_faults(|f| f.noop_failure = Some(Reason::Conflict))
        .unwrap();
    for (action, who) in [("attach", LB1), ("detach", LB2)] {
        let op = api.eip_action(EIP_ID, action, who).await;
        assert_eq!(op.status, 200, "the call itself is accepted");
        let done = api.wait_operation(op.json["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "failure", "{action}");
        assert_eq!(done["reason"], "conflict", "{action}");
        assert!(done["message"].is_string());
    }
    // A real change still succeeds under the conflict policy.
    let op = api.eip_action(EIP_ID, "attach", LB2).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);
}

#[tokio::test]
async fn instance_filters() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    // The native address matches too: clients must cross-check.
    let r = api.get("/v2/instance?ip-address=192.0.2.12").await.json;
    assert_eq!(names(&r), ["lb2"]);
    let r = api
        .get(&format!("/v2/instance?ip-address={EIP}"))
        .await
        .json;
    assert_eq!(names(&r), ["lb1"]);
    let r = api.get("/v2/instance?ip-address=2001:db8:1::12").await.json;
    assert_eq!(names(&r), ["lb2"]);
    let r = api.get("/v2/instance?ip-address=198.51.100.99").await.json;
    assert_eq!(r, serde_json::json!({ "instances": [] }));
    let r = api.get("/v2/instance?labels=role%3Dlb").await.json;
    assert_eq!(names(&r), ["lb1", "lb2"]);
    let r = api
        .get("/v2/instance?manager-type=instance-pool")
        .await
        .json;
    assert_eq!(names(&r), ["lb2"]);
    let r = api
        .get("/v2/instance?manager-id=9b0f7c6e-0000-4000-8000-000000000099&manager-type=instance-pool")
        .await
        .json;
    assert_eq!(names(&r), ["lb2"]);
}

#[tokio::test]
async fn zones_are_isolated() {
    let sim = start_default().await;
    let gva = Api::new(&sim);
    let fra = gva.zone("de-fra-1");

    let r = fra.get("/v2/instance").await.json;
    let list = r["instances"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], FRA1);
    let r = fra.get("/v2/elastic-ip").await.json;
    assert_eq!(r["elastic-ips"].as_array().unwrap().len(), 1);
    assert_eq!(r["elastic-ips"][0]["id"], FRA_EIP_ID);

    assert_eq!(fra.get(&format!("/v2/instance/{LB1}")).await.status, 404);
    assert_eq!(
        fra.get(&format!("/v2/elastic-ip/{EIP_ID}")).await.status,
        404
    );
    assert_eq!(gva.get(&format!("/v2/instance/{FRA1}")).await.status, 404);
    assert_eq!(
        gva.zone("ch-gva-2")
            .get(&format!("/v2/instance/{LB1}"))
            .await
            .status,
        200,
        "naming the default zone explicitly works"
    );
    assert_eq!(
        gva.zone("xx-nowhere-9")
            .get(&format!("/v2/instance/{LB1}"))
            .await
            .status,
        200,
        "an unknown zone in Host falls back to the seed's zone"
    );
    assert_eq!(
        fra.zone("at-vie-1").get("/v2/instance").await.json,
        serde_json::json!({ "instances": [] }),
        "a known but empty zone is empty"
    );

    // No cross-zone attach, and operations are polled in their own zone.
    assert_eq!(gva.eip_action(EIP_ID, "attach", FRA1).await.status, 404);
    assert_eq!(fra.eip_action(FRA_EIP_ID, "attach", LB2).await.status, 404);
    let op = gva.eip_action(EIP_ID, "attach", LB2).await.json;
    let op_id = op["id"].as_str().unwrap();
    assert_eq!(fra.get(&format!("/v2/operation/{op_id}")).await.status, 404);
    assert_eq!(gva.get(&format!("/v2/operation/{op_id}")).await.status, 200);
    let op = fra.eip_action(FRA_EIP_ID, "detach", FRA1).await.json;
    assert_eq!(
        fra.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    assert!(sim.holders(ip(FRA_EIP)).is_empty());
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);
    let fra_events: Vec<TimelineEvent> = sim
        .timeline()
        .into_iter()
        .filter(|e| e.zone == "de-fra-1")
        .collect();
    assert_eq!(fra_events.len(), 1);
    assert_eq!(fra_events[0].ip, ip(FRA_EIP));
}

#[tokio::test]
async fn timeline_records_every_holder_change_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.jsonl");
    std::fs::write(&path, "stale line from an earlier run\n").unwrap();
    let sim = start(SimConfig {
        timeline_path: Some(path.clone()),
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let before = now_unix() as f64;

    for (action, who) in [("attach", LB2), ("detach", LB1), ("attach", LB2)] {
        let op = api.eip_action(EIP_ID, action, who).await.json;
        assert_eq!(
            api.wait_operation(op["id"].as_str().unwrap()).await["state"],
            "success"
        );
    }
    let forced = sim
        .force_holders(ip(EIP), &[InstanceId::from(LB3), InstanceId::from(LB1)])
        .unwrap();
    assert_eq!(ids(&forced), [LB3, LB1]);

    let events = sim.timeline();
    let summary: Vec<(HolderEvent, &str, Vec<&str>, bool)> = events
        .iter()
        .map(|e| (e.event, e.instance.0.as_str(), ids(&e.holders), e.forced))
        .collect();
    assert_eq!(
        summary,
        vec![
            (HolderEvent::Attach, LB2, vec![LB1, LB2], false),
            (HolderEvent::Detach, LB1, vec![LB2], false),
            // Forced changes are atomic: every event carries the final holders.
            (HolderEvent::Detach, LB2, vec![LB3, LB1], true),
            (HolderEvent::Attach, LB3, vec![LB3, LB1], true),
            (HolderEvent::Attach, LB1, vec![LB3, LB1], true),
        ],
        "the no-op re-attach is not an event"
    );
    for e in &events {
        assert_eq!(e.zone, "ch-gva-2");
        assert_eq!(e.ip, ip(EIP));
        assert_eq!(e.eip_id, EIP_ID);
        assert!(e.t >= before && e.t <= now_unix() as f64 + 1.0, "{}", e.t);
    }
    assert!(
        events.windows(2).all(|w| w[0].t <= w[1].t),
        "time never goes back"
    );
    assert_eq!(events[2].t, events[4].t, "one forced change, one instant");

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("stale"), "the file starts empty");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        keys(&first),
        ["eip_id", "event", "holders", "instance", "ip", "t", "zone"],
        "the documented line format ({first})"
    );
    assert_eq!(first["event"], "attach");
    assert_eq!(first["ip"], EIP);
    assert_eq!(first["holders"], serde_json::json!([LB1, LB2]));
    let from_file: Vec<TimelineEvent> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_file, events);

    let over_http = api.control("GET", "/_sim/timeline", "").await.json;
    let over_http: Vec<TimelineEvent> = serde_json::from_value(over_http).unwrap();
    assert_eq!(over_http, events);
    sim.shutdown().await;
}

//! Fault injection and the control API of the simulated cloud.

mod sim_common;

use std::time::{Duration, Instant};

use exoip_providers::sim::{Faults, HolderEvent, Reason, SimConfig, Trigger};
use serde_json::{json, Value};
use sim_common::*;

/// `true` when the request failed without any HTTP answer (connection closed).
async fn no_answer(rb: reqwest::RequestBuilder) -> bool {
    match rb.send().await {
        Ok(r) => panic!("expected no answer, got {}", r.status()),
        Err(e) => !e.is_timeout(),
    }
}

#[tokio::test]
async fn latency_and_jitter_delay_answers() {
    let sim = start(SimConfig {
        faults: Faults {
            latency: Duration::from_millis(300),
            jitter: Duration::from_millis(50),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let t = Instant::now();
    assert_eq!(api.get("/v2/zone").await.status, 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");

    // The control API is never delayed.
    let t = Instant::now();
    assert_eq!(api.control("GET", "/_sim/state", "").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(250));

    sim.update_faults(|f| {
        f.latency = Duration::ZERO;
        f.jitter = Duration::ZERO;
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(api.get("/v2/zone").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn counted_503s_then_recovery() {
    let sim = start(SimConfig {
        faults: Faults {
            unavailable: Trigger::count(2),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    for _ in 0..2 {
        let r = api.get("/v2/elastic-ip").await;
        assert_eq!(r.status, 503);
        assert!(r.json["message"].is_string());
    }
    assert_eq!(api.get("/v2/elastic-ip").await.status, 200);
    assert_eq!(sim.faults().unavailable.count, 0, "the count is used up");
}

#[tokio::test]
async fn probabilities_fire_always_never_and_sometimes() {
    let sim = start(SimConfig {
        faults: Faults {
            unavailable: Trigger::probability(1.0),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    for _ in 0..10 {
        assert_eq!(api.get("/v2/zone").await.status, 503);
    }
    sim.set_faults(Faults {
        rate_limit: Trigger::probability(0.5),
        ..Faults::default()
    })
    .unwrap();
    let mut limited = 0;
    for _ in 0..200 {
        if api.get("/v2/zone").await.status == 429 {
            limited += 1;
        }
    }
    // Binomial(200, 0.5): outside 50..=150 has a probability far below 1e-12.
    assert!((50..=150).contains(&limited), "{limited} of 200");
    sim.set_faults(Faults::default()).unwrap();
    for _ in 0..10 {
        assert_eq!(api.get("/v2/zone").await.status, 200);
    }
}

#[tokio::test]
async fn rate_limit_sends_retry_after() {
    let sim = start(SimConfig {
        faults: Faults {
            rate_limit: Trigger::count(1),
            retry_after_secs: 3,
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let r = api.get("/v2/instance").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "3");
    assert_eq!(r.json["retry_after"], 3);
    assert_eq!(api.get("/v2/instance").await.status, 200);
}

#[tokio::test]
async fn mutation_only_faults_spare_reads() {
    let sim = start(SimConfig {
        faults: Faults {
            unavailable: Trigger::count(1).mutations_only(),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    assert_eq!(api.get("/v2/instance").await.status, 200);
    let r = api.eip_action(EIP_ID, "attach", LB2).await;
    assert_eq!(r.status, 503);
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1], "a 503 changes nothing");
    let r = api.eip_action(EIP_ID, "attach", LB2).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn dropped_connections_get_no_answer_and_change_nothing() {
    let sim = start(SimConfig {
        faults: Faults {
            drop_connection: Trigger::count(1).mutations_only(),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let target = format!("/v2/elastic-ip/{EIP_ID}:attach");
    let body = format!(r#"{{"instance": {{"id": "{LB2}"}}}}"#);
    assert!(no_answer(api.request("PUT", &target, &body, now_unix() + 600)).await);
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1]);
    assert!(sim.timeline().is_empty());
    assert_eq!(api.put(&target, &body).await.status, 200);
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);
}

#[tokio::test]
async fn lost_responses_still_apply_the_mutation() {
    let sim = start(SimConfig {
        faults: Faults {
            response_lost: Trigger::count(1),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    assert_eq!(
        api.get("/v2/instance").await.status,
        200,
        "reads do not consume it"
    );
    let target = format!("/v2/elastic-ip/{EIP_ID}:detach");
    let body = format!(r#"{{"instance": {{"id": "{LB1}"}}}}"#);
    assert!(no_answer(api.request("PUT", &target, &body, now_unix() + 600)).await);
    assert!(
        sim.holders(ip(EIP)).is_empty(),
        "the detach happened although the client never heard"
    );
    let events = sim.timeline();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, HolderEvent::Detach);
    // The client's retry is a no-op success.
    let op = api.put(&target, &body).await.json;
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
}

#[tokio::test]
async fn api_down_drops_the_api_but_not_the_control_plane() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let r = api
        .control("PUT", "/_sim/faults", r#"{"api_down": true}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(no_answer(api.request("GET", "/v2/zone", "", now_unix() + 600)).await);
    assert!(no_answer(api.raw("GET", "/v2/instance", "")).await);
    assert_eq!(api.control("GET", "/_sim/state", "").await.status, 200);
    let r = api
        .control("PUT", "/_sim/faults", r#"{"api_down": false}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/v2/zone").await.status, 200);
}

#[tokio::test]
async fn stuck_operations_stay_pending_and_change_nothing() {
    let sim = start(SimConfig {
        faults: Faults {
            op_stuck: Trigger::count(1),
            op_immediate: true,
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let op = api.eip_action(EIP_ID, "attach", LB2).await.json;
    assert_eq!(
        op["state"], "pending",
        "even the immediate knob cannot finish it"
    );
    let id = op["id"].as_str().unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let r = api.get(&format!("/v2/operation/{id}")).await.json;
        assert_eq!(r["state"], "pending");
    }
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1]);
    // The next one goes through.
    let op = api.eip_action(EIP_ID, "attach", LB2).await.json;
    assert_eq!(op["state"], "success");
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);
}

#[tokio::test]
async fn failed_operations_report_their_reason_and_change_nothing() {
    let sim = start(SimConfig {
        faults: Faults {
            op_failure: Trigger::count(1),
            op_failure_reason: Reason::Unavailable,
            op_delay: Duration::from_millis(50),
            ..Faults::default()
        },
        ..SimConfig::new(seed())
    })
    .await;
    let api = Api::new(&sim);
    let op = api.eip_action(EIP_ID, "detach", LB1).await.json;
    assert_eq!(op["state"], "pending");
    let done = api.wait_operation(op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failure");
    assert_eq!(done["reason"], "unavailable");
    assert!(done["message"].is_string());
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1]);
    assert!(sim.timeline().is_empty());
}

#[tokio::test]
async fn control_api_reads_and_replaces_faults() {
    let sim = start_default().await;
    let api = Api::new(&sim);
    let r = api.control("GET", "/_sim/faults", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["latency"], "0s");
    assert_eq!(r.json["noop_failure"], Value::Null);

    let r = api
        .control(
            "PUT",
            "/_sim/faults",
            r#"{"op_delay": "250ms", "unavailable": {"count": 1}, "noop_failure": "incorrect",
                "clock_skew_secs": 900}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let f = sim.faults();
    assert_eq!(f.op_delay, Duration::from_millis(250));
    assert_eq!(f.unavailable.count, 1);
    assert_eq!(f.noop_failure, Some(Reason::Incorrect));
    assert_eq!(f.clock_skew_secs, 900);
    assert_eq!(api.get("/v2/zone").await.status, 503);
    assert_eq!(
        api.get("/v2/zone").await.status,
        403,
        "a 900 s skew expires our signatures"
    );

    // PUT replaces: fields left out go back to their defaults.
    let r = api.control("PUT", "/_sim/faults", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.faults(), Faults::default());
    assert_eq!(api.get("/v2/zone").await.status, 200);

    for bad in [
        "not json",
        r#"{"latency": "soon"}"#,
        r#"{"rate_limit": {"probability": 2}}"#,
        r#"{"no_such_fault": true}"#,
        r#"{"op_failure_reason": "because"}"#,
    ] {
        let r = api.control("PUT", "/_sim/faults", bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json["message"].is_string());
    }
    assert_eq!(
        sim.faults(),
        Faults::default(),
        "a refused PUT changes nothing"
    );
}

#[tokio::test]
async fn control_api_changes_instances_and_holders() {
    let sim = start_default().await;
    let api = Api::new(&sim);

    let r = api
        .control(
            "POST",
            &format!("/_sim/instance/{LB2}/state"),
            r#"{"state":"stopped"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        api.get(&format!("/v2/instance/{LB2}")).await.json["state"],
        "stopped"
    );
    let r = api
        .control(
            "POST",
            &format!("/_sim/instance/{LB2}/state"),
            r#"{"state":"asleep"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .control(
            "POST",
            "/_sim/instance/00000000-0000-4000-8000-000000000000/state",
            r#"{"state":"stopped"}"#,
        )
        .await;
    assert_eq!(r.status, 404);

    // Split brain: another actor attaches lb2 next to lb1.
    let r = api
        .control(
            "PUT",
            &format!("/_sim/elastic-ip/{EIP}/holders"),
            &json!({ "holders": [LB1, LB2] }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["holders"], json!([LB1, LB2]));
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);
    let events = sim.timeline();
    assert_eq!(events.len(), 1);
    assert!(events[0].forced);
    assert_eq!(events[0].event, HolderEvent::Attach);

    let r = api
        .control(
            "PUT",
            &format!("/_sim/elastic-ip/{EIP6}/holders"),
            &json!({ "holders": [LB3] }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "IPv6 addresses in the path: {}", r.json);
    assert_eq!(ids(&sim.holders(ip(EIP6))), [LB3]);

    let r = api
        .control(
            "PUT",
            "/_sim/elastic-ip/198.51.100.99/holders",
            r#"{"holders":[]}"#,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .control(
            "PUT",
            &format!("/_sim/elastic-ip/{EIP}/holders"),
            &json!({ "holders": [FRA1] }).to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "an instance of another zone cannot hold it");
    assert_eq!(ids(&sim.holders(ip(EIP))), [LB1, LB2]);

    let state = api.control("GET", "/_sim/state", "").await;
    assert_eq!(state.status, 200);
    let s = state.json;
    assert_eq!(s["default_zone"], "ch-gva-2");
    let gva = s["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "ch-gva-2")
        .unwrap();
    let eip = gva["elastic_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == EIP)
        .unwrap();
    assert_eq!(eip["holders"], json!([LB1, LB2]));
    let lb2 = gva["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == LB2)
        .unwrap();
    assert_eq!(lb2["state"], "stopped");
    assert_eq!(lb2["public_ip"], "192.0.2.12");
    assert!(s["zones"]
        .as_array()
        .unwrap()
        .iter()
        .any(|z| z["name"] == "de-fra-1"));
    assert_eq!(sim.state(), s);

    assert_eq!(api.control("GET", "/_sim/nothing", "").await.status, 404);
}

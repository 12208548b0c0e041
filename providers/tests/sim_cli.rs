//! `exoip sim` as the agent's binary runs it: flags in, serve until SIGTERM, exit cleanly.
//! Alone in its test binary because it signals its own process.

mod sim_common;

use std::net::TcpListener;
use std::time::Duration;

use clap::Parser;
use exoip_providers::sim::cli::{run, SimArgs};
use sim_common::*;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    sim: SimArgs,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serves_from_flags_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed.json");
    std::fs::write(&seed_file, seed_json()).unwrap();
    let timeline = dir.path().join("timeline.jsonl");
    let port = free_port();
    let args = Cmd::try_parse_from([
        "exoip-sim".to_string(),
        "--seed".into(),
        seed_file.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--timeline".into(),
        timeline.display().to_string(),
        "--op-delay".into(),
        "100ms".into(),
    ])
    .unwrap()
    .sim;
    let server = tokio::spawn(run(args));

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{base}/_sim/state")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the simulator listens on the requested port");

    let api = Api {
        http,
        base,
        key: KEY.into(),
        secret: SECRET.into(),
        host: None,
    };
    let op = api.eip_action(EIP_ID, "attach", LB2).await.json;
    assert_eq!(op["state"], "pending");
    assert_eq!(
        api.wait_operation(op["id"].as_str().unwrap()).await["state"],
        "success"
    );
    let faults = api.control("GET", "/_sim/faults", "").await.json;
    assert_eq!(faults["op_delay"], "100ms", "--op-delay reached the faults");

    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("SIGTERM stops the simulator")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed after shutdown"
    );

    let lines = std::fs::read_to_string(&timeline).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "attach");
    assert_eq!(events[0]["instance"], LB2);
}

//! `exoip sim` as the agent's binary runs it: flags in, serve until SIGTERM, exit cleanly.
//! Alone in its test binary because it signals its own process. The Azure tests run `exoip sim`
//! in a child process (this test binary again, see [`child_runs_exoip_sim`]) to read what it
//! prints and to signal it alone.

mod sim_common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use exoip_providers::sim::azure::{AzureSeed, EXAMPLE_AZURE_SEED};
use exoip_providers::sim::cli::{run, SimArgs};
use sim_common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

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

/// The `exoip sim` arguments (one per line) the child process runs with.
const CHILD_ARGS: &str = "EXOIP_SIM_CLI_CHILD_ARGS";

/// Runs `exoip sim` with the arguments of [`CHILD_ARGS`] when this binary was started as the
/// child of another test; does nothing otherwise.
#[tokio::test]
async fn child_runs_exoip_sim() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args = Cmd::try_parse_from(std::iter::once("exoip-sim").chain(args.lines()))
        .unwrap()
        .sim;
    run(args).await.unwrap();
}

/// This test binary, running only [`child_runs_exoip_sim`] with `args`, its stdout piped.
fn exoip_sim_child(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_runs_exoip_sim",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ARGS, args.join("\n"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn azure_example_seed_is_printed() {
    let mut child = exoip_sim_child(&["--provider", "azure", "--example-seed"]);
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        stdout.read_to_string(&mut out).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("printing the example seed is quick");
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains(EXAMPLE_AZURE_SEED), "{out}");
    // What it prints is a seed file `--seed` accepts: the lab topology.
    let start = out.find('{').unwrap();
    let printed: serde_json::Value = serde_json::Deserializer::from_str(&out[start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let seed = AzureSeed::from_json(&printed.to_string()).unwrap();
    assert_eq!(seed, AzureSeed::example());
    assert_eq!(seed, AzureSeed::lab(3).unwrap());
}

#[tokio::test]
async fn azure_serves_from_flags_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed.json");
    std::fs::write(&seed_file, EXAMPLE_AZURE_SEED).unwrap();
    let timeline = dir.path().join("timeline.jsonl");
    let (api, md) = (free_port(), free_port());
    let mut child = exoip_sim_child(&[
        "--provider",
        "azure",
        "--seed",
        seed_file.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--metadata-listen",
        &format!("127.0.0.1:{md}"),
        "--timeline",
        timeline.to_str().unwrap(),
        "--op-delay",
        "50ms",
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The test harness starts the line with "test child_runs_exoip_sim ... ".
            if let Some(at) = line.find("sim: api ") {
                return line[at..].to_string();
            }
        }
        panic!("exoip sim exited without its ready line");
    })
    .await
    .expect("the ready line comes");
    assert_eq!(
        ready,
        format!("sim: api http://127.0.0.1:{api} (ARM, login) metadata http://127.0.0.1:{md}")
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{api}");
    let faults: serde_json::Value = http
        .get(format!("{base}/_sim/azure/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["op_delay"], "50ms", "--op-delay reached the faults");
    let seed = AzureSeed::example();
    let r = http
        .post(format!("{base}/{}/oauth2/v2.0/token", seed.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", seed.service_principals[0].client_id.as_str()),
            (
                "client_secret",
                seed.service_principals[0].client_secret.expose(),
            ),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .put(format!("{base}/_sim/elastic-ip/203.0.113.10/holders"))
        .json(&serde_json::json!({"holders": ["lb2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("SIGTERM stops the simulator")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", api)).is_err(),
        "the port is closed after shutdown"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&timeline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let moves: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["instance"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(moves, [("detach", "lb1"), ("attach", "lb2")]);
}

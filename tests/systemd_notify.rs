//! The agent under systemd's Type=notify: READY=1 once it takes part in the election, STATUS=
//! with the roles, WATCHDOG=1 from the event loop, STOPPING=1 on SIGTERM. On loopback against
//! the in-process simulated Exoscale, no namespaces and no alias (`--no-alias`): no root needed.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use exoip_providers::sim::{self, Seed, SimConfig};

const KEY: &str = "EXOsim0123456789abcdef0123";
const SECRET: &str = "sim-secret-change-me";
const LB1: &str = "2f6a9a43-0000-4000-8000-000000000011";

/// Every datagram received until `until` says stop or `max` passes.
fn collect(sock: &UnixDatagram, max: Duration, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < max && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping_reach_systemd() {
    let sim = sim::start(SimConfig::new(Seed::example())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    // A free port for the heartbeats and another one nobody listens on (the only peer).
    let free_port = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, peer) = (free_port(), free_port());
    let args: Vec<String> = [
        "-W",
        "-xi",
        "203.0.113.10",
        "-p",
        &format!("127.0.0.1:{peer}"),
        "-l",
        &format!("127.0.0.1:{port}"),
        "-i",
        LB1,
        "-xe",
        &sim.api_url(),
        "-xk",
        KEY,
        "-t",
        "0.1",
        "--no-alias",
        "--status-socket",
        "none",
        "--state-dir",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args(&args)
        .env("EXOSCALE_API_SECRET", SECRET)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let sock = tokio::task::spawn_blocking(move || {
        let got = collect(&sock, Duration::from_secs(15), |g| {
            let ready = g.iter().any(|d| d.contains("READY=1"));
            let pings = g.iter().filter(|d| d.contains("WATCHDOG=1")).count();
            let master = g.iter().any(|d| d.contains("203.0.113.10 master"));
            ready && master && pings >= 3
        });
        (sock, got)
    });
    let (sock, got) = sock.await.unwrap();
    let ready = got
        .iter()
        .position(|d| d.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    assert!(
        got[ready].contains("STATUS=203.0.113.10 "),
        "READY carries the roles: {got:?}"
    );
    assert!(
        got.iter().any(|d| d.contains("STATUS=203.0.113.10 master")),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|d| d.contains("WATCHDOG=1")).count() >= 3,
        "the loop pings the watchdog at half its period: {got:?}"
    );

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let got = tokio::task::spawn_blocking(move || {
        collect(&sock, Duration::from_secs(10), |g| {
            g.iter().any(|d| d.contains("STOPPING=1"))
        })
    })
    .await
    .unwrap();
    assert!(got.iter().any(|d| d.contains("STOPPING=1")), "{got:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the agent exits after the hand-over")
        .unwrap();
    assert!(status.success(), "{status}");
    sim.shutdown().await;
}

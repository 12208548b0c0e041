//! The test bed itself, without agents or simulator: topology, data path, forging and capturing
//! datagrams, and cleanup (normal, on panic, and of crashed runs). Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{ensure, Result};
use exoip::lab::{netns, Lab, LabConfig, HEARTBEAT_PORT};

mod common;
use common::root_or_skip;

fn bare_config() -> LabConfig {
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_exoip"));
    cfg.sim = false;
    cfg.agents = false;
    cfg
}

fn namespaces_of(id: &str) -> Vec<String> {
    netns::list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{id}-")))
        .collect()
}

/// Runs `body`, printing the lab's logs if it fails or takes longer than `limit`.
async fn checked<F>(lab: &Lab, limit: Duration, body: F)
where
    F: std::future::Future<Output = Result<()>>,
{
    let outcome = match tokio::time::timeout(limit, body).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("test step exceeded {limit:?}")),
    };
    if let Err(e) = outcome {
        eprintln!("{}", lab.log_tails(30));
        panic!("{e:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_path_needs_both_route_and_alias() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = bare_config();
    cfg.data_path = true;
    let lab = Lab::start(cfg).await.expect("lab");
    let id = lab.id().to_string();
    assert_eq!(namespaces_of(&id).len(), 5, "R, C and three hosts");
    let lab_ref = &lab;
    checked(&lab, Duration::from_secs(40), async move {
        let lab = lab_ref;
        // Requests started during the `span` after a short grace period for route changes,
        // once all of them have finished: (who answered, how many failed).
        let observe = |span: Duration| async move {
            let from = exoip::lab::unix_now() + 0.2;
            let to = from + span.as_secs_f64();
            tokio::time::sleep(span + Duration::from_millis(200) + Duration::from_millis(400))
                .await;
            let reqs: Vec<_> = lab
                .requests()
                .into_iter()
                .filter(|r| r.t >= from && r.t <= to)
                .collect();
            let ok: Vec<String> = reqs
                .iter()
                .filter(|r| r.ok)
                .filter_map(|r| r.body.clone())
                .collect();
            (ok, reqs.iter().filter(|r| !r.ok).count())
        };
        let span = Duration::from_millis(800);

        // No route yet: every request fails.
        let (ok, failed) = observe(span).await;
        ensure!(
            ok.is_empty() && failed >= 3,
            "unrouted: ok {ok:?}, failed {failed}"
        );

        // Routed to lb2, which does not have the address: still nothing (the requests time
        // out, 250 ms each).
        lab.route_eip(&[1]).await?;
        let (ok, failed) = observe(span).await;
        ensure!(
            ok.is_empty() && failed >= 2,
            "route without alias: ok {ok:?}, failed {failed}"
        );

        // Route and alias: lb2 answers.
        lab.add_alias(1).await?;
        ensure!(lab.has_alias(1).await? && lab.aliases().await? == vec![1]);
        let t = exoip::lab::unix_now();
        lab.wait_until("lb2 to answer", Duration::from_secs(5), || async {
            Ok(lab
                .requests()
                .iter()
                .any(|r| r.t >= t && r.body.as_deref() == Some("lb2")))
        })
        .await?;

        // The alias alone on lb3 attracts nothing while the route points at lb2.
        lab.add_alias(2).await?;
        let (ok, failed) = observe(span).await;
        ensure!(
            ok.len() >= 5 && ok.iter().all(|b| b == "lb2") && failed == 0,
            "route to lb2: {ok:?}, {failed} failed"
        );

        // Move the route: lb3 answers; cut lb3's cable: nobody does.
        lab.route_eip(&[2]).await?;
        let (ok, failed) = observe(span).await;
        ensure!(
            ok.len() >= 5 && ok.iter().all(|b| b == "lb3") && failed == 0,
            "route to lb3: {ok:?}, {failed} failed"
        );
        lab.set_link(2, false).await?;
        let (ok, failed) = observe(span).await;
        ensure!(
            ok.is_empty() && failed >= 2,
            "cable cut: {ok:?}, {failed} failed"
        );
        lab.revive(2).await?;
        ensure!(
            !lab.has_alias(2).await?,
            "revive removes the alias (a reboot)"
        );
        lab.route_eip(&[]).await?;
        Ok(())
    })
    .await;
    drop(lab);
    assert!(
        namespaces_of(&id).is_empty(),
        "namespaces left: {:?}",
        namespaces_of(&id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_datagrams_reach_the_host_and_are_captured() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::start(bare_config()).await.expect("lab");
    let lab_ref = &lab;
    checked(&lab, Duration::from_secs(20), async move {
        let lab = lab_ref;
        let h1 = lab.hosts()[0].clone();
        let to = SocketAddrV4::new(h1.ip, HEARTBEAT_PORT);
        let capture = lab.capture_udp(
            &h1.ns,
            Ipv4Addr::new(198, 51, 100, 2),
            HEARTBEAT_PORT,
            2,
            Duration::from_secs(5),
        );
        let send = async {
            // Give the capture socket a moment to exist before anything is sent.
            tokio::time::sleep(Duration::from_millis(200)).await;
            lab.send_udp(
                lab.client_ns(),
                None,
                to,
                &[b"first".to_vec(), b"second".to_vec()],
                Duration::from_millis(20),
            )
            .await
        };
        let (captured, sent) = tokio::join!(capture, send);
        sent?;
        let captured = captured?;
        ensure!(
            captured == vec![b"first".to_vec(), b"second".to_vec()],
            "captured {captured:?}"
        );
        // Replay from the host's own address and port, as a replay attack would.
        let capture = lab.capture_udp(
            &lab.hosts()[1].ns,
            h1.ip,
            HEARTBEAT_PORT,
            1,
            Duration::from_secs(5),
        );
        let send = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            lab.send_udp(
                &h1.ns,
                Some(SocketAddrV4::new(h1.ip, HEARTBEAT_PORT)),
                SocketAddrV4::new(lab.hosts()[1].ip, HEARTBEAT_PORT),
                &[b"again".to_vec()],
                Duration::ZERO,
            )
            .await
        };
        let (captured, sent) = tokio::join!(capture, send);
        sent?;
        ensure!(captured? == vec![b"again".to_vec()]);

        // Forged source: from the client namespace, as lb2's heartbeat address. A socket on lb1
        // receives it, so the checksum is right and R forwards it.
        let peer = SocketAddrV4::new(lab.hosts()[1].ip, HEARTBEAT_PORT);
        let receiver = exoip::lab::netns::in_netns(&h1.ns, move || {
            let s = std::net::UdpSocket::bind(to)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(s)
        })?;
        lab.send_udp_spoofed(
            lab.client_ns(),
            peer,
            to,
            &[b"spoofed".to_vec()],
            Duration::ZERO,
        )
        .await?;
        let (n, from, buf) = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 64];
            receiver.recv_from(&mut buf).map(|(n, from)| (n, from, buf))
        })
        .await??;
        ensure!(
            &buf[..n] == b"spoofed" && from == std::net::SocketAddr::V4(peer),
            "{from}"
        );
        Ok(())
    })
    .await;
}

#[test]
fn lab_is_removed_when_the_test_panics() {
    if !root_or_skip() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lab = Lab::start(bare_config()).await.expect("lab");
            tx.send((lab.id().to_string(), lab.dir().to_path_buf()))
                .unwrap();
            panic!("deliberate");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (id, dir) = rx.recv().unwrap();
    assert!(namespaces_of(&id).is_empty(), "{:?}", namespaces_of(&id));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Deletes a namespace at the end of the test whatever happens.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        netns::delete_namespace(&self.0);
    }
}

#[test]
fn leftovers_of_dead_runs_are_removed_and_live_ones_kept() {
    if !root_or_skip() {
        return;
    }
    // A pid that certainly existed and is gone now.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let dead = format!("exoip-{dead_pid}-{me}0-r");
    // pid 1 is alive: its "labs" must survive.
    let alive = format!("exoip-1-{me}1-r");
    let _guards = (NsGuard(dead.clone()), NsGuard(alive.clone()));
    for ns in [&dead, &alive] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Something still running inside the dead run's namespace.
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &dead, "sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while netns::namespace_pids(&dead).is_empty() {
        assert!(std::time::Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let removed = netns::cleanup_leftovers();
    assert!(removed.contains(&dead), "removed {removed:?}");
    assert!(!removed.contains(&alive));
    let all = netns::list_namespaces();
    assert!(!all.contains(&dead) && all.contains(&alive), "{all:?}");
    // The process inside was killed, not orphaned.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            assert!(!status.success(), "killed, not finished: {status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sleep survived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

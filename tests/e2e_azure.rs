//! End to end against the simulated Azure (Entra ID token endpoint, IMDS, ARM): real agents in
//! network namespaces with a service principal in their environment, the simulator in the
//! router namespace, a client fetching through the address. Needs root. A peer is dead after
//! 3 x 0.2 s. The simulator has its defaults: operations complete at once (op delay 0) but
//! answer `Retry-After: 10`, so the agent looks at each after min(Retry-After, 2 s) = 2 s:
//! one PUT takes 2 s as the agent sees it.
//!
//! * public-ip: the public IP moves between NICs by two PUTs; the router sends it to the
//!   holder's private address, NATed there; nothing in the guest.
//! * secondary-ip: the ipConfiguration moves by two PUTs; the holder has the address on eth0
//!   and announces it; the client is on the hosts' LAN.
//! * lb-probe: no ARM call at all; every host has the frontend IP on lo, only the holder
//!   answers the health probe, and the lab's load balancer routes to whoever answers.
//!
//! A move by two PUTs (detach from the holder, then attach to the new one) leaves the address
//! with nobody between them, even in a graceful hand-over: the tests bound that gap instead of
//! asserting there is none. The `config_*` tests run the binary with `-n` (no namespaces).

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Result};
use exoip::lab::{no_holder_intervals, unix_now, Lab, LabCloud, LabConfig};
use nix::sys::signal::Signal;

mod common;
use common::{check, config, name, patience, reached, root_or_skip, start};

/// How long the agent waits before looking at an operation the simulator answered with its
/// default `Retry-After: 10` (the provider polls at min(Retry-After, 2 s)).
const POLL: f64 = 2.0;
/// The longest the address may have no holder between the two PUTs of one move: the detach's
/// operation polled once, then a GET and the attach PUT, on a busy CI machine.
const MOVE_GAP: f64 = POLL + 1.0;

fn azure(cloud: LabCloud) -> LabConfig {
    let mut cfg = config();
    cfg.cloud = cloud;
    cfg.data_path = true;
    cfg
}

/// Every no-holder interval of the timeline within `[from, to]` is shorter than `max`
/// seconds; returns how many there were.
fn gaps_bounded(lab: &Lab, from: f64, to: f64, max: f64) -> Result<usize> {
    let gaps = no_holder_intervals(&lab.timeline()?, from, to);
    for (a, b) in &gaps {
        ensure!(
            b - a < max,
            "no holder for {:.3} s (from {a:.3}), expected < {max} s; all gaps: {gaps:?}",
            b - a
        );
    }
    Ok(gaps.len())
}

/// Holders by the API after `t`, in order: the hosts' names of each change.
fn moves_after(lab: &Lab, t: f64) -> Result<Vec<String>> {
    Ok(lab
        .timeline()?
        .iter()
        .filter(|e| e.t >= t)
        .map(|e| {
            let holders: Vec<String> = e.holders.iter().map(|h| lab.instance_name(h)).collect();
            format!(
                "{} {} -> [{}]",
                e.event,
                lab.instance_name(&e.instance),
                holders.join(",")
            )
        })
        .collect())
}

/// No host has the public IP configured locally (Azure NATs it).
async fn nobody_has_it_locally(lab: &Lab) -> Result<()> {
    let with = lab.aliases().await?;
    ensure!(
        with.is_empty(),
        "public-ip mode configures nothing in the guest: {with:?}"
    );
    Ok(())
}

/// Kill -9 of the holder (its cable cut too): the best survivor takes the address over by
/// the API, the client reaches it, the dead host can come back and take the address back.
async fn kill_9_moves_it(lab: &Lab) -> Result<()> {
    let old = lab.wait_single_holder(patience(lab)).await?;
    ensure!(old == 0, "lb1 is the best, {} won", name(lab, old));
    reached(lab, 0, 0.0, patience(lab)).await?;

    let t_kill = lab.crash(old).await?;
    lab.wait_until("lb2 holding it", patience(lab), || async {
        Ok(lab.single_holder().await? == Some(1))
    })
    .await?;
    let tl = lab.timeline()?;
    let dead_id = &lab.hosts()[old].instance_id;
    let moved = tl
        .iter()
        .find(|e| e.t >= t_kill && !e.holders.is_empty() && !e.holders.contains(dead_id))
        .map(|e| e.t)
        .expect("waited for it");
    // Dead, then the detach (one poll), then the attach.
    let bound = lab.config().dead_period().as_secs_f64() + POLL + 1.5;
    ensure!(
        moved - t_kill < bound,
        "moved {:.3} s after the kill, expected < {bound} s",
        moved - t_kill
    );
    let back = reached(lab, 1, t_kill, patience(lab)).await?;
    ensure!(
        back - t_kill < bound + 1.0,
        "reachable after {:.3} s",
        back - t_kill
    );
    // One move: detached from the dead VM's NIC, then attached to lb2's, the gap bounded.
    let gaps = gaps_bounded(lab, t_kill, unix_now(), MOVE_GAP)?;
    ensure!(
        gaps <= 1,
        "{gaps} no-holder intervals: {:?}",
        moves_after(lab, t_kill)?
    );

    // The dead host reboots and its agent starts: it is the best again and takes it back.
    let t_back = unix_now();
    lab.revive(old).await?;
    lab.start_agent(old).await?;
    lab.wait_until("lb1 holding it again", patience(lab) * 2, || async {
        Ok(lab.single_holder().await? == Some(old))
    })
    .await?;
    reached(lab, old, t_back, patience(lab)).await?;
    gaps_bounded(lab, t_back, unix_now(), MOVE_GAP)?;
    Ok(())
}

/// SIGTERM: the holder hands over to the best peer (one move, its gap bounded) and keeps
/// serving; restarted, it takes the address back (again one bounded move).
async fn graceful_handover_and_restart(lab: &Lab) -> Result<()> {
    let old = lab
        .wait_settled(lab.config().dead_period(), patience(lab) * 2)
        .await?;
    reached(lab, old, 0.0, patience(lab)).await?;
    let t_stop = unix_now();
    lab.stop_agent(old, Signal::SIGTERM, patience(lab)).await?;
    let new = lab.wait_single_holder(patience(lab)).await?;
    ensure!(new != old, "{} still holds it", name(lab, new));
    let back = reached(lab, new, t_stop, patience(lab)).await?;
    // The release's PUT, then the claim's; in secondary-ip mode the new holder configures
    // the address once its PUT's operation has been seen to succeed (one more poll).
    ensure!(
        back - t_stop < MOVE_GAP + POLL + 1.0,
        "the client reached {} {:.3} s after the stop",
        name(lab, new),
        back - t_stop
    );
    let gaps = gaps_bounded(lab, t_stop, unix_now(), MOVE_GAP)?;
    ensure!(
        gaps <= 1,
        "{gaps} no-holder intervals: {:?}",
        moves_after(lab, t_stop)?
    );

    let t_start = unix_now();
    lab.start_agent(old).await?;
    lab.wait_until("lb1 to hold it again", patience(lab) * 2, || async {
        Ok(lab.single_holder().await? == Some(old))
    })
    .await?;
    reached(lab, old, t_start, patience(lab)).await?;
    let gaps = gaps_bounded(lab, t_start, unix_now(), MOVE_GAP)?;
    ensure!(
        gaps <= 1,
        "{gaps} no-holder intervals: {:?}",
        moves_after(lab, t_start)?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_kill_9_moves_it_to_the_survivor_and_back() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzurePublicIp)).await;
    check(&lab, Duration::from_secs(60), async {
        kill_9_moves_it(&lab).await?;
        nobody_has_it_locally(&lab).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_graceful_handover_and_restart_have_bounded_gaps() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzurePublicIp)).await;
    check(&lab, Duration::from_secs(60), async {
        graceful_handover_and_restart(&lab).await?;
        nobody_has_it_locally(&lab).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ip_kill_9_moves_it_to_the_survivor_and_back() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzureSecondaryIp)).await;
    check(&lab, Duration::from_secs(60), kill_9_moves_it(&lab)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ip_graceful_handover_and_restart_have_bounded_gaps() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzureSecondaryIp)).await;
    check(&lab, Duration::from_secs(60), async {
        graceful_handover_and_restart(&lab).await?;
        // Only the holder has the address on its NIC; the stopped and backup hosts do not.
        let with = lab.aliases().await?;
        ensure!(with == vec![0], "hosts with the address on eth0: {with:?}");
        Ok(())
    })
    .await;
}

/// Every host, holder or not, running or not, has the frontend IP on lo; only `holder`
/// answers the probe.
async fn frontend_everywhere_probe_on(lab: &Lab, holder: usize) -> Result<()> {
    for i in 0..lab.hosts().len() {
        ensure!(
            lab.has_alias(i).await?,
            "{} lacks the frontend IP on lo",
            name(lab, i)
        );
        let answers = lab.probe_answers(i).await?;
        ensure!(
            answers == (i == holder),
            "the probe of {} {}",
            name(lab, i),
            if answers {
                "answers"
            } else {
                "does not answer"
            }
        );
    }
    Ok(())
}

/// The simulated ARM moved nothing: its timeline has claim records (tags on the claimants' own
/// NICs, written after the failover) and no attach or detach, and the epochs grow.
fn arm_moved_nothing(lab: &Lab) -> Result<()> {
    let raw = std::fs::read_to_string(lab.timeline_path()).unwrap_or_default();
    let mut last_epoch = 0;
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)?;
        ensure!(
            event["event"] == "claim",
            "lb-probe mode moved something in ARM: {line}"
        );
        let epoch = event["epoch"].as_u64().unwrap_or(0);
        ensure!(epoch > last_epoch, "claim epochs must grow: {raw}");
        last_epoch = epoch;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_probe_kill_9_the_load_balancer_follows_the_probe() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzureLbProbe)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(old == 0, "lb1 is the best, {} won", name(&lab, old));
        frontend_everywhere_probe_on(&lab, 0).await?;
        reached(&lab, 0, 0.0, patience(&lab)).await?;

        let t_kill = lab.crash(old).await?;
        lab.wait_until("lb2 answering the probe", patience(&lab), || async {
            Ok(lab.single_holder().await? == Some(1))
        })
        .await?;
        let back = reached(&lab, 1, t_kill, patience(&lab)).await?;
        // Dead period, one probe round, no API call.
        let bound = lab.config().dead_period().as_secs_f64() + 1.0;
        ensure!(
            back - t_kill < bound,
            "the client reached lb2 {:.3} s after the kill, expected < {bound} s",
            back - t_kill
        );
        // The crashed host keeps the frontend IP (it reboots with it); its cable is cut, so
        // its probe does not answer either.
        ensure!(lab.has_alias(0).await?, "lb1 lost the frontend IP on lo");
        ensure!(lab.probe_answers(1).await?, "lb2's probe is closed");
        ensure!(!lab.probe_answers(2).await?, "lb3's probe is open too");

        let t_back = unix_now();
        lab.revive(old).await?;
        lab.start_agent(old).await?;
        lab.wait_until(
            "lb1 answering the probe again",
            patience(&lab) * 2,
            || async { Ok(lab.single_holder().await? == Some(old)) },
        )
        .await?;
        frontend_everywhere_probe_on(&lab, 0).await?;
        reached(&lab, old, t_back, patience(&lab)).await?;
        arm_moved_nothing(&lab)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_probe_graceful_handover_and_restart_keep_serving() {
    if !root_or_skip() {
        return;
    }
    let lab = start(azure(LabCloud::AzureLbProbe)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab
            .wait_settled(lab.config().dead_period(), patience(&lab) * 2)
            .await?;
        reached(&lab, old, 0.0, patience(&lab)).await?;
        let t_stop = unix_now();
        lab.stop_agent(old, Signal::SIGTERM, patience(&lab)).await?;
        let new = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(new != old, "{} still answers", name(&lab, new));
        frontend_everywhere_probe_on(&lab, new).await?;
        let back = reached(&lab, new, t_stop, patience(&lab)).await?;
        ensure!(
            back - t_stop < 1.0,
            "the client reached {} {:.3} s after the stop",
            name(&lab, new),
            back - t_stop
        );
        // The old holder closes its probe as the new one opens its own: between them the load
        // balancer has nobody for at most about one probe round.
        let max = 0.5;
        let gaps = gaps_bounded(&lab, t_stop, unix_now(), max)?;
        ensure!(gaps <= 1, "{gaps} gaps: {:?}", moves_after(&lab, t_stop)?);
        let failed = lab
            .requests()
            .iter()
            .filter(|r| !r.ok && r.t >= t_stop && r.t <= back)
            .count();
        ensure!(
            failed <= 10,
            "{failed} failed requests during the hand-over"
        );

        let t_start = unix_now();
        lab.start_agent(old).await?;
        lab.wait_until("lb1 to answer again", patience(&lab) * 2, || async {
            Ok(lab.single_holder().await? == Some(old))
        })
        .await?;
        reached(&lab, old, t_start, patience(&lab)).await?;
        gaps_bounded(&lab, t_start, unix_now(), max)?;
        frontend_everywhere_probe_on(&lab, old).await?;
        arm_moved_nothing(&lab)
    })
    .await;
}

// ----- configuration (the binary with -n; no namespaces, no root) -----------------------

const SECRET: &str = "azure-client-secret-never-printed-0123";
const TENANT: &str = "5b1f4b2e-0000-4000-8000-000000000001";
const CLIENT: &str = "c1e7a9f0-0000-4000-8000-000000000003";

/// A private file of `content` in a fresh directory (kept while the value lives).
fn private_file(content: &str) -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("file");
    std::fs::write(&path, content).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

mod tempdir {
    /// A directory under the system's temporary directory, removed on drop.
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "exoip-e2e-azure-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn exoip(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exoip"));
    cmd.args(args).env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run exoip")
}

fn out(o: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "the secret was printed: {stdout} {stderr}"
    );
    (stdout, stderr)
}

/// The single line of a configuration error (exit 2).
fn rejected(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = exoip(args, env);
    let (stdout, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout} {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn config_service_principal_and_modes_are_shown_without_the_secret() {
    let (_dir, key) = private_file("0123456789abcdef0123456789abcdef");
    let sp = [
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_CLIENT_SECRET", SECRET),
    ];
    let base = [
        "-n",
        "--provider",
        "azure",
        "-xi",
        "203.0.113.10",
        "-G",
        "exoip",
        "--auth-key-file",
        &key,
    ];
    let o = exoip(&base, &sp);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout} {stderr}");
    for line in [
        "provider           azure",
        "azure mode         public-ip",
        &format!("credentials        service principal {CLIENT} of tenant {TENANT}"),
        "api version        2024-05-01",
        "subscription       (from the instance metadata)",
        "peers              VMs whose NICs use network security group 'exoip'",
        "address held       nothing local (the cloud NATs it",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }

    // secondary-ip: on the NIC; the flags stand in for their variables.
    let mut args = base.to_vec();
    args.extend([
        "--azure-mode",
        "secondary-ip",
        "--azure-subscription",
        "8d10c5e2-0000-4000-8000-000000000002",
        "--azure-resource-group",
        "rg-exoip",
        "--arm-endpoint",
        "http://192.0.2.1:8080",
        "--azure-ip-config",
        "vip",
        "--interface",
        "eth1",
    ]);
    let (stdout, _) = out(&exoip(&args, &sp));
    for line in [
        "azure mode         secondary-ip",
        "subscription       8d10c5e2-0000-4000-8000-000000000002",
        "resource group     rg-exoip",
        "arm endpoint       http://192.0.2.1:8080",
        "ip configuration   vip",
        "address held       on eth1 with gratuitous ARP",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }

    // lb-probe with a user-assigned managed identity and peers by tag.
    let o = exoip(
        &[
            "-n",
            "--provider",
            "azure",
            "--azure-mode",
            "lb-probe",
            "--probe-port",
            "61000",
            "--probe-path",
            "/health",
            "-xi",
            "203.0.113.20",
            "--azure-peer-tag",
            "exoip-group=web",
            "--azure-client-id",
            "a5e1d000-0000-4000-8000-000000000001",
            "--auth-key-file",
            &key,
        ],
        &[],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout} {stderr}");
    for line in [
        "azure mode         lb-probe",
        "credentials        the user-assigned managed identity a5e1d000-0000-4000-8000-000000000001",
        "peers              VMs whose NICs carry the tag exoip-group=web",
        "answering the load balancer's probe on TCP port 61000 (HTTP 200 on GET /health)",
        "the frontend IP on lo on every node",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }
}

#[test]
fn config_client_secret_file_must_be_private() {
    let (_dir, key) = private_file("0123456789abcdef0123456789abcdef");
    let (_sdir, secret) = private_file(SECRET);
    let args = [
        "-n",
        "--provider",
        "azure",
        "-xi",
        "203.0.113.10",
        "-p",
        "192.0.2.12",
        "--auth-key-file",
        &key,
        "--azure-client-secret-file",
        &secret,
    ];
    let env = [("AZURE_TENANT_ID", TENANT), ("ARM_CLIENT_ID", CLIENT)];
    let o = exoip(&args, &env);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("service principal"), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = rejected(&args, &env);
    assert!(
        e.contains("--azure-client-secret-file") && e.contains("chmod"),
        "{e}"
    );
    // A secret without its tenant is no service principal.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = rejected(&args, &[("AZURE_CLIENT_ID", CLIENT)]);
    assert!(e.contains("AZURE_TENANT_ID"), "{e}");
}

#[test]
fn config_wrong_azure_input_is_one_line_naming_the_flag() {
    let (_dir, key) = private_file("0123456789abcdef0123456789abcdef");
    let ok = ["-n", "-xi", "203.0.113.10", "-p", "192.0.2.12"];
    let azure = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
        v.extend(["--provider", "azure", "--auth-key-file", &key].map(String::from));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [&ok[..], &["--azure-mode", "lb-probe"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "--azure-mode: an Azure option: add --provider azure",
        ),
        (
            [&ok[..], &["--probe-port", "61000"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "--probe-port: an Azure option",
        ),
        (
            azure(&["--azure-mode", "lb-probe"]),
            "--probe-port: required with --azure-mode lb-probe",
        ),
        (
            azure(&["--probe-port", "61000"]),
            "--probe-port: only with --azure-mode lb-probe",
        ),
        (
            azure(&[
                "--azure-mode",
                "lb-probe",
                "--probe-port",
                "1",
                "--azure-public-ip",
                "p",
            ]),
            "--azure-public-ip: only with --azure-mode public-ip",
        ),
        (
            azure(&[
                "--azure-mode",
                "lb-probe",
                "--probe-port",
                "1",
                "--probe-path",
                "health",
            ]),
            "--probe-path: 'health' is not an absolute URL path",
        ),
        (
            azure(&["--os-cloud", "x"]),
            "--os-cloud: an OpenStack option",
        ),
        (azure(&["--zone", "ch-gva-2"]), "--zone: an Exoscale option"),
        (
            azure(&["--azure-peer-tag", "a=b"]),
            "--azure-peer-tag: exclusive with -p/--peer",
        ),
        (
            azure(&["--azure-api-version", "2024/05"]),
            "--provider azure: the Azure API version",
        ),
        (
            azure(&["--arm-endpoint", "ftp://x"]),
            "--arm-endpoint: 'ftp://x' is not an http(s) URL",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = rejected(&args, &[]);
        assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
    }
    // No heartbeat key: required outside Exoscale.
    let e = rejected(
        &[
            "-n",
            "--provider",
            "azure",
            "-xi",
            "203.0.113.10",
            "-p",
            "192.0.2.12",
        ],
        &[],
    );
    assert!(e.contains("--auth-key-file") && e.contains("azure"), "{e}");
}

#[test]
fn config_associate_is_refused_in_lb_probe_mode_only() {
    let (_dir, key) = private_file("0123456789abcdef0123456789abcdef");
    let lb = [
        "--provider",
        "azure",
        "--azure-mode",
        "lb-probe",
        "--probe-port",
        "61000",
        "-xi",
        "203.0.113.20",
        "--auth-key-file",
        &key,
    ];
    for mode in ["-A", "-D"] {
        let e = rejected(&[&[mode][..], &lb[..]].concat(), &[]);
        assert!(e.contains("lb-probe") && e.contains("-W"), "{e}");
    }
    // The other modes move the address with -A/-D (here only validated).
    let o = exoip(
        &[
            "-n",
            "-A",
            "--provider",
            "azure",
            "-xi",
            "203.0.113.10",
            "--auth-key-file",
            &key,
        ],
        &[],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("associate (-A)"), "{stdout}");
}

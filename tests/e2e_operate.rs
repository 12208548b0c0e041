//! End to end, operating exoip: a tracked process dies and the address moves; hooks get the
//! right environment and no secrets; status and metrics from the running agents; operator
//! release/resume; the preflight finds a missing peer and a wrong key. Needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use exoip::lab::{no_holder_intervals, Lab, EIP};
use serde_json::Value;

mod common;
use common::{check, config, patience, root_or_skip, start};

/// Processes a test started itself, killed when the test ends however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A stand-in for HAProxy with a process name of its own (`/proc/PID/comm`): a copy of
/// `sleep` named `name`. The hosts of the lab share one PID namespace, so every host gets a
/// distinct name and tracks only its own.
fn fake_daemon(dir: &Path, name: &str) -> Result<Child> {
    let path: PathBuf = dir.join(name);
    std::fs::copy("/bin/sleep", &path).context("copy /bin/sleep")?;
    Command::new(&path)
        .arg("600")
        .spawn()
        .with_context(|| format!("start {name}"))
}

fn kv_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn status_json(lab: &Lab, host: usize) -> Result<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args(["status", "--json", "--socket"])
        .arg(lab.status_socket(host))
        .output()?;
    ensure!(
        out.status.success(),
        "exoip status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn control(lab: &Lab, host: usize, command: &str) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args([command, "--socket"])
        .arg(lab.status_socket(host))
        .output()?;
    ensure!(
        out.status.success(),
        "exoip {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn instance_id(lab: &Lab, host: usize) -> String {
    lab.hosts()[host].instance_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_process_dying_moves_the_address_and_hooks_see_it() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemons = Processes(Vec::new());
    for n in 1..=3 {
        daemons
            .0
            .push(fake_daemon(dir.path(), &format!("hapx-lb{n}")).unwrap());
    }
    let mut cfg = config();
    let hooks = dir.path().display().to_string();
    cfg.extra_agent_args = [
        "--track-interval",
        "100ms",
        "--track-fall",
        "2",
        "--track-rise",
        "1",
        "--hook-shell",
        "--notify",
        // One file per instance and state: the EXOIP_* variables, and the whole environment.
        &format!(
            "env | grep ^EXOIP_ | sort > {hooks}/$EXOIP_INSTANCE-$EXOIP_STATE.env; env > {hooks}/$EXOIP_INSTANCE.fullenv"
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cfg.host_agent_args = (1..=3)
        .map(|n| vec!["--track-process".to_string(), format!("hapx-lb{n}")])
        .collect();
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(60), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(holder == 0, "lb1 should win, {holder} did");
        let lb1 = instance_id(&lab, 0);
        let lb2 = instance_id(&lab, 1);
        let master_env = dir.path().join(format!("{lb1}-MASTER.env"));
        lab.wait_until("lb1's MASTER hook", Duration::from_secs(5), || async {
            Ok(master_env.exists())
        })
        .await?;
        let env = kv_file(&master_env);
        ensure!(
            env.get("EXOIP_STATE").map(String::as_str) == Some("MASTER"),
            "{env:?}"
        );
        ensure!(
            env.get("EXOIP_PREVIOUS_STATE").map(String::as_str) == Some("BACKUP"),
            "{env:?}"
        );
        ensure!(
            env.get("EXOIP_ADDRESS") == Some(&EIP.to_string()),
            "{env:?}"
        );
        ensure!(env.get("EXOIP_PROVIDER").map(String::as_str) == Some("exoscale"));
        ensure!(env.get("EXOIP_INSTANCE") == Some(&lb1));
        ensure!(env.get("EXOIP_REASSERT").map(String::as_str) == Some("0"));
        ensure!(env.get("EXOIP_REASON").is_some_and(|r| !r.is_empty()));
        let full = std::fs::read_to_string(dir.path().join(format!("{lb1}.fullenv")))?;
        ensure!(
            !full.contains("EXOSCALE_API_SECRET"),
            "the API secret reached a hook"
        );
        ensure!(full.contains("EXOIP_STATE="));

        // "killall haproxy" on lb1: the check fails, lb1 hands over at once, with no gap.
        let killed_at = exoip::lab::unix_now();
        daemons.0[0].kill()?;
        daemons.0[0].wait()?;
        lab.wait_until("lb2 holds the address", patience(&lab), || async {
            Ok(lab.single_holder().await? == Some(1))
        })
        .await?;
        let tl = lab.timeline()?;
        let attach = tl
            .iter()
            .find(|e| e.t >= killed_at && e.event == "attach" && e.instance == lb2)
            .context("lb2 attached")?;
        // Two failed checks 100 ms apart plus the hand-over: well under a dead period.
        ensure!(
            attach.t - killed_at < 1.5,
            "took {:.3}s after the process died",
            attach.t - killed_at
        );
        ensure!(
            no_holder_intervals(&tl, killed_at, exoip::lab::unix_now()).is_empty(),
            "a fault hand-over leaves no gap: {tl:?}"
        );
        lab.wait_until("only lb2 has the alias", Duration::from_secs(5), || async {
            Ok(lab.aliases().await? == vec![1])
        })
        .await?;
        // lb1 finishes its hand-over (its own detach) and settles in FAULT.
        lab.wait_until("lb1 in fault", Duration::from_secs(5), || async {
            Ok(status_json(&lab, 0).await?["ips"][0]["state"] == "fault")
        })
        .await?;
        let st = status_json(&lab, 0).await?;
        ensure!(
            st["ips"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("hapx-lb1"),
            "{st}"
        );
        ensure!(st["health"][0]["ok"] == false, "{st}");
        let fault_env = dir.path().join(format!("{lb1}-FAULT.env"));
        lab.wait_until("lb1's FAULT hook", Duration::from_secs(5), || async {
            Ok(fault_env.exists())
        })
        .await?;
        let env = kv_file(&dir.path().join(format!("{lb2}-MASTER.env")));
        ensure!(
            env.get("EXOIP_PREVIOUS_STATE").map(String::as_str) == Some("BACKUP"),
            "{env:?}"
        );

        // HAProxy is back: lb1 is healthy again and takes the address back, still no gap.
        let back_at = exoip::lab::unix_now();
        daemons.0[0] = fake_daemon(dir.path(), "hapx-lb1")?;
        lab.wait_until(
            "lb1 holds the address again",
            patience(&lab) * 2,
            || async { Ok(lab.single_holder().await? == Some(0)) },
        )
        .await?;
        ensure!(no_holder_intervals(&lab.timeline()?, back_at, exoip::lab::unix_now()).is_empty());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_of_running_agents() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = config();
    cfg.extra_agent_args = vec!["--metrics-listen".into(), "127.0.0.1:9712".into()];
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(60), async {
        lab.wait_single_holder(patience(&lab)).await?;
        let lb1 = instance_id(&lab, 0);
        // Round-trip times appear after the first probe round (every 5 s at most).
        let mut st = Value::Null;
        for _ in 0..40 {
            st = status_json(&lab, 0).await?;
            let peers = st["peers"].as_array().cloned().unwrap_or_default();
            if peers.len() == 2 && peers.iter().all(|p| p["rtt_ms"].is_number()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ensure!(st["version"] == 1, "{st}");
        ensure!(
            st["node"]["id"] == lb1.as_str() && st["node"]["name"] == "lb1",
            "{st}"
        );
        ensure!(st["node"]["provider"] == "exoscale");
        let ip = &st["ips"][0];
        ensure!(
            ip["ip"] == EIP.to_string() && ip["state"] == "master",
            "{st}"
        );
        ensure!(ip["priority"] == 10 && ip["effective_priority"] == 10);
        ensure!(ip["holders"] == serde_json::json!([lb1]), "{st}");
        ensure!(ip["holders_checked_unix"].is_number() && ip["next_reconcile_in_ms"].is_number());
        let peers = st["peers"].as_array().context("peers")?;
        ensure!(peers.len() == 2, "{st}");
        for p in peers {
            ensure!(p["alive"] == true && p["rtt_ms"].is_number(), "{p}");
            ensure!(p["ips"][0]["state"] == "backup", "{p}");
            ensure!(
                p["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("192.0.2.1")),
                "{p}"
            );
        }
        ensure!(st["api_calls"].as_array().is_some_and(|c| !c.is_empty()));
        ensure!(
            st["heartbeats"]["sent"].as_u64() > Some(0)
                && st["heartbeats"]["received"].as_u64() > Some(0)
        );
        let human = Command::new(env!("CARGO_BIN_EXE_exoip"))
            .args(["status", "--socket"])
            .arg(lab.status_socket(0))
            .output()?;
        let human = String::from_utf8_lossy(&human.stdout);
        ensure!(human.contains("MASTER") && human.contains("lb1"), "{human}");

        // Metrics, scraped inside lb1's namespace (127.0.0.1 there is lb1's own loopback).
        let args: Vec<String> = ["lab", "http-get", "http://127.0.0.1:9712/metrics"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (code, body, err) = lab.exoip_in(0, &args, &[], Duration::from_secs(10)).await?;
        ensure!(code == Some(0), "scrape failed: {err}");
        let mut samples = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').context("sample line")?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("value in {line:?}"))?;
            ensure!(
                series
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'),
                "{line}"
            );
            samples.insert(series.to_string(), value);
        }
        let want = format!("exoip_state{{ip=\"{EIP}\",state=\"master\"}}");
        ensure!(samples.get(&want) == Some(&1.0), "{want} in:\n{body}");
        ensure!(
            samples
                .get("exoip_heartbeats_sent_total")
                .is_some_and(|v| *v > 0.0),
            "{body}"
        );
        ensure!(samples
            .keys()
            .any(|k| k.starts_with("exoip_api_call_duration_seconds_bucket")));
        ensure!(samples.keys().any(|k| k.starts_with("exoip_build_info")));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_release_resume_and_promote() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(60), async {
        ensure!(lab.wait_single_holder(patience(&lab)).await? == 0);
        let t0 = exoip::lab::unix_now();
        let said = control(&lab, 0, "release")?;
        ensure!(said.contains("releas"), "{said}");
        lab.wait_until("lb2 holds it", patience(&lab), || async {
            Ok(lab.single_holder().await? == Some(1))
        })
        .await?;
        lab.wait_until("lb1 in fault", Duration::from_secs(5), || async {
            Ok(status_json(&lab, 0).await?["ips"][0]["state"] == "fault")
        })
        .await?;
        let st = status_json(&lab, 0).await?;
        ensure!(st["admin"] == "released", "{st}");
        // Released stays released.
        tokio::time::sleep(lab.config().dead_period() * 3).await;
        ensure!(lab.single_holder().await? == Some(1));
        // lb3 promoted: it takes over from lb2.
        control(&lab, 2, "promote")?;
        lab.wait_until("lb3 holds it", patience(&lab), || async {
            Ok(lab.single_holder().await? == Some(2))
        })
        .await?;
        control(&lab, 0, "resume")?;
        control(&lab, 2, "resume")?;
        lab.wait_until("lb1 holds it again", patience(&lab) * 2, || async {
            Ok(lab.single_holder().await? == Some(0) && lab.aliases().await? == vec![0])
        })
        .await?;
        ensure!(
            no_holder_intervals(&lab.timeline()?, t0, exoip::lab::unix_now()).is_empty(),
            "operator moves leave no gap"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_finds_a_missing_peer_and_a_wrong_key() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(90), async {
        lab.wait_single_holder(patience(&lab)).await?;
        // The same flags as the agent, as `exoip check`.
        let mut args = vec!["check".to_string()];
        args.extend(lab.agent_args(0).into_iter().filter(|a| a != "-W"));
        let (code, out, err) = lab.exoip_in(0, &args, &[], Duration::from_secs(30)).await?;
        ensure!(code == Some(0), "all good, yet: {out}{err}");
        ensure!(out.lines().all(|l| l.starts_with("OK ")), "{out}");
        ensure!(
            out.contains("192.0.2.12:12345") && out.contains("192.0.2.13:12345"),
            "{out}"
        );

        // -A / -D --dry-run on lb2 say what they would do and change nothing.
        let events_before = lab.timeline()?.len();
        for (mode, verb) in [("-A", "would attach"), ("-D", "nothing to do")] {
            let mut dry = vec![mode.to_string(), "--dry-run".to_string()];
            dry.extend(lab.agent_args(1).into_iter().skip(1));
            let (code, out, err) = lab.exoip_in(1, &dry, &[], Duration::from_secs(30)).await?;
            ensure!(code == Some(0), "{mode} --dry-run: {out}{err}");
            ensure!(
                out.contains(verb) && out.contains("dry run"),
                "{mode}: {out}"
            );
        }
        ensure!(
            lab.timeline()?.len() == events_before,
            "a dry run changed the cloud"
        );
        ensure!(!lab.has_alias(1).await?, "a dry run added an alias");

        // lb3's agent is gone: its probe fails, the rest passes, exit 1.
        lab.kill(2, nix::sys::signal::Signal::SIGKILL)?;
        lab.wait_agent_exit(2, Duration::from_secs(5)).await?;
        let (code, out, _) = lab.exoip_in(0, &args, &[], Duration::from_secs(30)).await?;
        ensure!(code == Some(1), "{out}");
        let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
        ensure!(fails.len() == 1 && fails[0].contains("192.0.2.13"), "{out}");

        // A heartbeat key the peers do not share: no peer answers.
        let wrong = [("EXOIP_AUTH_KEY", "not-the-key-the-peers-use-0123456789")];
        let (code, out, _) = lab
            .exoip_in(0, &args, &wrong, Duration::from_secs(30))
            .await?;
        ensure!(code == Some(1), "{out}");
        ensure!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains("192.0.2.12")),
            "{out}"
        );
        ensure!(
            out.contains("heartbeat key"),
            "the reason names the key: {out}"
        );
        Ok(())
    })
    .await;
}

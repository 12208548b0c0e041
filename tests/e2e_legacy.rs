//! Mixed clusters during an upgrade from the Go exoip: an agent with `--legacy-protocol` next to
//! an emulated old agent (`exoip lab legacy-peer`: the old watchdog's algorithm and 24-byte
//! heartbeat), both against the simulated Exoscale, with a client fetching through the elastic
//! IP. Needs root. A peer is dead after 3 x 0.2 s.

use std::time::Duration;

use anyhow::{ensure, Result};
use exoip::lab::{no_holder_intervals, unix_now, Lab, LabConfig};
use nix::sys::signal::Signal;

mod common;
use common::{check, config, name, patience, reached, root_or_skip, start};

/// Two hosts: the old agent on `old`, the new one (with `--legacy-protocol`) on the other;
/// priorities 10 (lb1) and 20 (lb2).
fn mixed(old: usize) -> LabConfig {
    let mut cfg = config();
    cfg.hosts = 2;
    cfg.data_path = true;
    let new = 1 - old;
    cfg.host_subcommand = vec![None, None];
    cfg.host_subcommand[old] = Some(vec!["lab".into(), "legacy-peer".into()]);
    cfg.host_agent_args = vec![Vec::new(), Vec::new()];
    cfg.host_agent_args[new] = vec!["--legacy-protocol".into()];
    cfg
}

/// Waits until only `host` holds the address and the client is answered by it; returns when.
async fn settled_on(lab: &Lab, host: usize, since: f64) -> Result<f64> {
    lab.wait_until(
        &format!("{} alone holds the address", name(lab, host)),
        patience(lab) * 2,
        || async { Ok(lab.holders().await? == vec![host]) },
    )
    .await?;
    reached(lab, host, since, patience(lab)).await
}

fn detached_since(lab: &Lab, host: usize, since: f64) -> Result<bool> {
    let id = &lab.hosts()[host].instance_id;
    Ok(lab
        .timeline()?
        .iter()
        .any(|e| e.t >= since && e.event == "detach" && e.instance == *id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_master_old_backup_kill_failover_and_takeback() {
    if !root_or_skip() {
        return;
    }
    // lb1: new agent (10, preferred); lb2: old agent (20).
    let lab = start(mixed(1)).await;
    check(&lab, Duration::from_secs(60), async {
        settled_on(&lab, 0, 0.0).await?;
        // kill -9 of the new holder: the old agent declares it dead, fences it by the NIC id
        // it announced, and claims.
        let (t_kill, _) = lab
            .stop_agent(0, Signal::SIGKILL, Duration::from_secs(5))
            .await?;
        let reached = settled_on(&lab, 1, t_kill).await?;
        ensure!(
            detached_since(&lab, 0, t_kill)?,
            "the old agent did not fence the dead node"
        );
        eprintln!(
            "new -> old after kill -9: reachable again {:.3} s after the signal",
            reached - t_kill
        );
        // The new agent comes back with the better priority: it takes over without a gap
        // (it announces its priority only once it holds, so the old one drops it only then).
        let t_back = unix_now();
        lab.start_agent(0).await?;
        settled_on(&lab, 0, t_back).await?;
        let gaps = no_holder_intervals(&lab.timeline()?, t_back, unix_now());
        ensure!(gaps.is_empty(), "no holder during the take-back: {gaps:?}");
        // SIGTERM of the new holder: it announces the worst priority, the old agent takes
        // over, and only then does the new one let go. (First give the old agent time to see
        // it lost the address: an old agent fenced while it still believed it was master only
        // re-checks its attachment when a peer dies.)
        tokio::time::sleep(lab.config().dead_period() * 2).await;
        let (t_term, status) = lab.stop_agent(0, Signal::SIGTERM, patience(&lab)).await?;
        ensure!(status.success(), "exit status {status}");
        settled_on(&lab, 1, t_term).await?;
        let gaps = no_holder_intervals(&lab.timeline()?, t_term, unix_now());
        ensure!(gaps.is_empty(), "no holder during the handover: {gaps:?}");
        ensure!(
            !lab.has_alias(0).await?,
            "the stopped agent removed its alias"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_master_new_backup_kill_failover_and_takeback() {
    if !root_or_skip() {
        return;
    }
    // lb1: old agent (10, preferred); lb2: new agent (20).
    let lab = start(mixed(0)).await;
    check(&lab, Duration::from_secs(60), async {
        settled_on(&lab, 0, 0.0).await?;
        // The new agent heard the old one and shows it as master in status.
        let status = common::status(&lab, 1)?;
        let text = status.to_string();
        ensure!(
            text.contains("legacy-192.0.2.11"),
            "status of lb2 does not show the old peer: {text}"
        );
        // kill -9 of the old holder: the new agent claims and fences it.
        let (t_kill, _) = lab
            .stop_agent(0, Signal::SIGKILL, Duration::from_secs(5))
            .await?;
        let reached = settled_on(&lab, 1, t_kill).await?;
        ensure!(
            detached_since(&lab, 0, t_kill)?,
            "the dead old agent was not fenced"
        );
        eprintln!(
            "old -> new after kill -9: reachable again {:.3} s after the signal",
            reached - t_kill
        );
        // The old agent comes back with the better priority and attaches itself without
        // fencing anyone (it never fences a live peer): the new agent sees it hold and steps
        // aside by itself.
        let t_back = unix_now();
        lab.start_agent(0).await?;
        settled_on(&lab, 0, t_back).await?;
        ensure!(
            detached_since(&lab, 1, t_back)?,
            "the new agent did not detach itself"
        );
        lab.wait_until(
            "the alias on the old holder only (it keeps its static one)",
            patience(&lab),
            || async { Ok(lab.aliases().await? == vec![0]) },
        )
        .await?;
        Ok(())
    })
    .await;
}

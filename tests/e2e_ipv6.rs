//! End to end over IPv6 against the simulated Exoscale: the elastic IP is 2001:db8:ee::1, the
//! simulator routes that /128 to its holders' IPv6 addresses, the holder has it on `lo`, the
//! agents know each other by IPv6 address (heartbeats over IPv6) and the client fetches
//! `http://[2001:db8:ee::1]/`. Needs root. A peer is dead after 3 x 0.2 s.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use exoip::lab::{
    netns, no_holder_intervals, unix_now, Lab, LabCloud, LabConfig, EIP, EIP6, HEARTBEAT_PORT,
};
use nix::sys::signal::Signal;

mod common;
use common::{check, config, name, patience, root_or_skip, start, status};

fn ipv6_config(hosts: usize) -> LabConfig {
    let mut cfg = config();
    cfg.ipv6 = true;
    cfg.hosts = hosts;
    cfg
}

/// `[2001:db8:2::1x]:12345`, the heartbeat address of `host`.
fn heartbeat_addr(lab: &Lab, host: usize) -> String {
    std::net::SocketAddr::new(lab.hosts()[host].heartbeat_ip(), HEARTBEAT_PORT).to_string()
}

/// Holders (host indexes) of `ip` in the simulator's own state, not its timeline.
async fn sim_holders(lab: &Lab, ip: IpAddr) -> Result<Vec<usize>> {
    let state = lab.sim_state().await?;
    let eip = state["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|z| z["elastic_ips"].as_array().cloned().unwrap_or_default())
        .find(|e| e["ip"] == ip.to_string())
        .ok_or_else(|| anyhow!("{ip} is not an elastic IP of the simulator: {state}"))?;
    eip["holders"]
        .as_array()
        .ok_or_else(|| anyhow!("no holders in {eip}"))?
        .iter()
        .map(|id| lab.host_by_instance(id.as_str().unwrap_or_default()))
        .collect()
}

/// R's route to `ip` (`ip route show`), e.g. `2001:db8:ee::1 via 2001:db8:2::11 dev br0 ...`.
async fn route_in_router(lab: &Lab, ip: IpAddr) -> Result<String> {
    let family = if ip.is_ipv6() { "-6" } else { "-4" };
    let out = netns::ip([
        "-n",
        lab.router_ns(),
        family,
        "route",
        "show",
        &ip.to_string(),
    ])
    .await?;
    Ok(out.trim().to_string())
}

/// The API holds `ip` on `host` alone (state and timeline agree), R routes it there, and
/// `host` has it on `lo`.
async fn held_by(lab: &Lab, ip: IpAddr, host: usize) -> Result<bool> {
    let via = lab.hosts()[host]
        .ip_like(ip)
        .ok_or_else(|| anyhow!("{} has no address for {ip}", name(lab, host)))?;
    Ok(sim_holders(lab, ip).await? == vec![host]
        && lab.holders_of(ip).await? == vec![host]
        && route_in_router(lab, ip)
            .await?
            .contains(&format!(" via {via} "))
        && lab.has_alias_of(host, ip).await?)
}

/// A peer of `st` (a status document) by heartbeat address.
fn peer<'a>(st: &'a serde_json::Value, address: &str) -> Option<&'a serde_json::Value> {
    st["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_with_the_128_on_lo_and_heartbeats_over_ipv6() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = ipv6_config(3);
    cfg.data_path = true;
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        ensure!(lab.address() == IpAddr::V6(EIP6));
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(
            holder == 0,
            "lb1 has the lowest priority value, {} won",
            name(&lab, holder)
        );
        let eip = lab.address();
        ensure!(held_by(&lab, eip, 0).await?, "{}", lab.describe_state());
        ensure!(lab.aliases().await? == vec![0], "the /128 only on lb1");
        let lo = netns::ip(["-n", &lab.hosts()[0].ns, "-6", "addr", "show", "dev", "lo"]).await?;
        ensure!(lo.contains("inet6 2001:db8:ee::1/128 "), "lo of lb1: {lo}");
        let tl = lab.timeline()?;
        ensure!(
            tl.len() == 1 && tl[0].event == "attach" && tl[0].ip == "2001:db8:ee::1",
            "one attach of the IPv6 address and nothing else: {tl:?}"
        );

        // Every agent knows its peers by IPv6 address only, and hears them there.
        for host in 0..3 {
            let st = status(&lab, host)?;
            let peers = st["peers"].as_array().cloned().unwrap_or_default();
            ensure!(peers.len() == 2, "{}: {st}", name(&lab, host));
            for other in (0..3).filter(|&o| o != host) {
                let p = peer(&st, &heartbeat_addr(&lab, other)).ok_or_else(|| {
                    anyhow!(
                        "{} among {}'s peers: {st}",
                        name(&lab, other),
                        name(&lab, host)
                    )
                })?;
                ensure!(p["alive"] == true, "{p}");
            }
            let ips = st["ips"].as_array().cloned().unwrap_or_default();
            ensure!(
                ips.len() == 1 && ips[0]["ip"] == "2001:db8:ee::1",
                "watched addresses of {}: {st}",
                name(&lab, host)
            );
        }
        let st = status(&lab, 1)?;
        let lb1 = peer(&st, "[2001:db8:2::11]:12345").ok_or_else(|| anyhow!("{st}"))?;
        ensure!(lb1["ips"][0]["state"] == "master", "{lb1}");

        // The client reaches lb1 through the /128.
        let since = unix_now();
        lab.wait_until(
            "the client answered by lb1 over IPv6",
            Duration::from_secs(5),
            || async {
                Ok(lab
                    .requests()
                    .iter()
                    .filter(|r| r.t >= since && r.body.as_deref() == Some("lb1"))
                    .count()
                    >= 3)
            },
        )
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_holder_fails_over_over_ipv6() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = ipv6_config(3);
    cfg.data_path = true;
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        let eip = lab.address();
        let old = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(old == 0, "{} holds", name(&lab, old));
        let since = unix_now();
        lab.wait_until(
            "the client answered by lb1",
            Duration::from_secs(5),
            || async {
                Ok(lab
                    .requests()
                    .iter()
                    .any(|r| r.t >= since && r.body.as_deref() == Some("lb1")))
            },
        )
        .await?;
        let dead_id = lab.hosts()[old].instance_id.clone();
        let (t_kill, _) = lab
            .stop_agent(old, Signal::SIGKILL, Duration::from_secs(5))
            .await?;
        lab.wait_until("the dead holder detached", patience(&lab), || async {
            Ok(lab
                .timeline()?
                .iter()
                .any(|e| e.t >= t_kill && e.event == "detach" && e.instance == dead_id))
        })
        .await?;
        let new = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(
            new == 1,
            "lb2 is the best survivor, {} took it",
            name(&lab, new)
        );
        // In the simulator (state and timeline), in R's route and on lb2's lo.
        lab.wait_until("lb2 holding the /128", patience(&lab), || async {
            held_by(&lab, eip, 1).await
        })
        .await?;
        ensure!(
            !lab.has_alias_of(2, eip).await?,
            "lb3 has the address on lo too"
        );
        let attach = lab
            .timeline()?
            .into_iter()
            .find(|e| e.t >= t_kill && e.event == "attach")
            .ok_or_else(|| anyhow!("no attach after the kill"))?;
        let took = attach.t - t_kill;
        let bound = lab.config().dead_period().as_secs_f64() + 2.0;
        ensure!(
            took < bound,
            "takeover after {took:.3} s, expected < {bound} s"
        );
        // The dead agent could not remove its /128, but the route no longer leads there:
        // the client gets lb2's answers through the IPv6 address again.
        let moved = unix_now();
        lab.wait_until(
            "the client answered by lb2 over IPv6",
            Duration::from_secs(5),
            || async {
                Ok(lab
                    .requests()
                    .iter()
                    .filter(|r| r.t >= moved && r.ok && r.body.as_deref() == Some("lb2"))
                    .count()
                    >= 3)
            },
        )
        .await?;
        let stray: Vec<_> = lab
            .requests()
            .into_iter()
            .filter(|r| r.t >= moved && r.ok && r.body.as_deref() != Some("lb2"))
            .collect();
        ensure!(stray.is_empty(), "answers from elsewhere: {stray:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_without_a_gap_over_ipv6() {
    if !root_or_skip() {
        return;
    }
    // A longer interval separates a handover on the "leaving" heartbeat (immediate) from one
    // on dead-peer detection (at least two intervals after the signal).
    let mut cfg = ipv6_config(2);
    cfg.interval = Duration::from_millis(500);
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        let eip = lab.address();
        let old = lab.wait_single_holder(patience(&lab)).await?;
        let old_id = lab.hosts()[old].instance_id.clone();
        let first_attach = lab.timeline()?[0].t;
        let (t_term, status) = lab.stop_agent(old, Signal::SIGTERM, patience(&lab)).await?;
        ensure!(
            status.success(),
            "the agent exits cleanly on SIGTERM: {status}"
        );
        let new = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(new != old, "{} still holds", name(&lab, old));
        ensure!(held_by(&lab, eip, new).await?, "{}", lab.describe_state());
        ensure!(
            !lab.has_alias_of(old, eip).await?,
            "a stopped agent removes its /128"
        );
        let tl = lab.timeline()?;
        let gaps = no_holder_intervals(&tl, first_attach, unix_now());
        ensure!(gaps.is_empty(), "intervals without a holder: {gaps:?}");
        let attach = tl
            .iter()
            .find(|e| e.t >= t_term && e.event == "attach")
            .ok_or_else(|| anyhow!("no attach after SIGTERM"))?;
        let detach = tl
            .iter()
            .find(|e| e.t >= t_term && e.event == "detach" && e.instance == old_id)
            .ok_or_else(|| anyhow!("the old holder was not detached"))?;
        ensure!(attach.t <= detach.t, "attach to the new holder comes first");
        let took = attach.t - t_term;
        let immediate = (lab.config().interval * 2).as_secs_f64();
        ensure!(
            took < immediate,
            "handover {took:.3} s after SIGTERM: not on the leaving heartbeat (< {immediate} s)"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_ipv6_addresses_move_together() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = ipv6_config(2);
    cfg.extra_eips = vec![EIP];
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        let both = [IpAddr::V6(EIP6), IpAddr::V4(EIP)];
        for ip in both {
            lab.wait_until(&format!("lb1 holding {ip}"), patience(&lab), || async {
                held_by(&lab, ip, 0).await
            })
            .await?;
        }
        // One IPv6 heartbeat carries both addresses: lb2 sees lb1 as master of each.
        let st = status(&lab, 1)?;
        ensure!(st["ips"].as_array().map(Vec::len) == Some(2), "{st}");
        let lb1 = peer(&st, "[2001:db8:2::11]:12345")
            .ok_or_else(|| anyhow!("lb1 by its IPv6 address among lb2's peers: {st}"))?;
        ensure!(
            lb1["ips"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["state"] == "master")),
            "{lb1}"
        );

        lab.kill(0, Signal::SIGKILL)?;
        for ip in both {
            lab.wait_until(&format!("lb2 holding {ip}"), patience(&lab), || async {
                held_by(&lab, ip, 1).await
            })
            .await?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_labs_are_exoscale_only() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = ipv6_config(2);
    cfg.cloud = LabCloud::OpenStackFloatingIp;
    let err = Lab::start(cfg)
        .await
        .err()
        .expect("an IPv6 OpenStack lab is refused");
    assert!(format!("{err:#}").contains("Exoscale"), "{err:#}");
    // The command line says which flag is wrong before building anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args(["demo", "--ipv6", "--provider", "azure"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--ipv6") && stderr.contains("exoscale"),
        "{stderr}"
    );
}

/// [`LabConfig::host_subcommand`]: lb2's "agent" runs as `exoip check <the agent's flags>`, the
/// preflight, which probes lb1 over IPv6 and exits; lb1 runs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_can_run_the_agent_under_a_subcommand() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = ipv6_config(2);
    cfg.agents = false;
    cfg.host_subcommand = vec![None, Some(vec!["check".into()])];
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        ensure!(lab.agent_command(0) == lab.agent_args(0));
        let mut want = vec!["check".to_string()];
        want.extend(lab.agent_args(1));
        ensure!(lab.agent_command(1) == want, "{:?}", lab.agent_command(1));
        lab.start_agent(0).await?;
        ensure!(lab.wait_single_holder(patience(&lab)).await? == 0);
        lab.start_agent(1).await?;
        let exit = lab.wait_agent_exit(1, Duration::from_secs(20)).await?;
        let log = lab.log_tail("lb2", 100);
        ensure!(exit.success(), "exoip check on lb2: {exit}\n{log}");
        ensure!(
            log.contains("OK   peer [2001:db8:2::11]:12345: answered"),
            "the preflight did not reach lb1 over IPv6:\n{log}"
        );
        // Still one holder: the preflight changes nothing.
        ensure!(lab.single_holder().await? == Some(0));
        ensure!(lab.timeline()?.len() == 1);
        Ok(())
    })
    .await;
}

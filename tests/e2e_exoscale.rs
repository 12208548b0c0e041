//! End to end against the simulated Exoscale: real agents in network namespaces, the simulator
//! in a router namespace routing the elastic IP to its holders, a client fetching through it.
//! Needs root. Short intervals keep it fast: a peer is dead after 3 x 0.2 s.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use exoip::lab::{no_holder_intervals, unix_now, Lab, EIP, HEARTBEAT_PORT};
use exoip::wire;
use nix::sys::signal::Signal;

mod common;
use common::{check, config, patience, root_or_skip, start};

fn name(lab: &Lab, host: usize) -> &str {
    &lab.hosts()[host].name
}

/// Hosts other than `host` that have the alias.
async fn other_aliases(lab: &Lab, host: usize) -> Result<Vec<usize>> {
    Ok(lab
        .aliases()
        .await?
        .into_iter()
        .filter(|&h| h != host)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_after_start_the_best_one() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(40), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(
            holder == 0,
            "lb1 has the lowest priority value, {} won",
            name(&lab, holder)
        );
        ensure!(lab.aliases().await? == vec![0], "alias only on lb1");
        // And it stays that way: no second claim, nobody else picks it up.
        tokio::time::sleep(lab.config().dead_period() * 3).await;
        ensure!(lab.single_holder().await? == Some(0));
        ensure!(lab.aliases().await? == vec![0]);
        let tl = lab.timeline()?;
        ensure!(
            tl.len() == 1 && tl[0].event == "attach",
            "one attach and nothing else: {tl:?}"
        );
        // The lab reads holders from the timeline file; the control API must agree.
        // The control API also shows the claim record (epoch 1, by lb1) made with the attach.
        let api_timeline = lab.sim_get("/_sim/timeline").await?;
        let events = api_timeline.as_array().cloned().unwrap_or_default();
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        ensure!(kinds == ["claim", "attach"], "{api_timeline}");
        ensure!(
            events[0]["epoch"] == 1 && events[0]["instance"] == lab.hosts()[0].instance_id.as_str(),
            "{api_timeline}"
        );
        let state = lab.sim_state().await?.to_string();
        ensure!(state.contains(&lab.hosts()[0].instance_id), "{state}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_holder_fails_over() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(40), async {
        let old = lab.wait_single_holder(patience(&lab)).await?;
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
        ensure!(new != old);
        ensure!(
            new == 1,
            "lb2 is the best survivor, {} took it",
            name(&lab, new)
        );
        ensure!(
            !lab.holders().await?.contains(&old),
            "dead one still attached"
        );
        // The dead agent could not remove its alias; among the living only the new holder has it.
        let others = other_aliases(&lab, new).await?;
        ensure!(
            others.iter().all(|&h| h == old),
            "aliases elsewhere: {others:?}"
        );
        ensure!(lab.has_alias(new).await?);
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
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_without_a_gap() {
    if !root_or_skip() {
        return;
    }
    // A longer interval separates a handover on the "leaving" heartbeat (immediate) from one
    // on dead-peer detection (at least two intervals after the signal).
    let mut cfg = config();
    cfg.interval = Duration::from_millis(500);
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
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
        ensure!(
            !lab.has_alias(old).await?,
            "a stopped agent removes its alias"
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
async fn restart_of_the_holder_leaves_no_gap() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(50), async {
        let old = lab.wait_single_holder(patience(&lab)).await?;
        let first_attach = lab.timeline()?[0].t;
        lab.stop_agent(old, Signal::SIGTERM, patience(&lab)).await?;
        let interim = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(interim != old);
        let restarted = unix_now();
        lab.start_agent(old).await?;
        // The restarted node has the best priority, so once its hold-off is over it takes the
        // address back; things are settled when nothing changed for two dead periods.
        let settled = lab
            .wait_settled_since(
                restarted,
                lab.config().dead_period() * 2,
                patience(&lab) * 2,
            )
            .await?;
        ensure!(
            settled == old,
            "{} holds, not the restarted {}",
            name(&lab, settled),
            name(&lab, old)
        );
        ensure!(
            lab.aliases().await? == vec![old],
            "alias only on the holder"
        );
        let tl = lab.timeline()?;
        let gaps = no_holder_intervals(&tl, first_attach, unix_now());
        ensure!(gaps.is_empty(), "intervals without a holder: {gaps:?}");
        ensure!(
            tl.iter().any(|e| e.t >= restarted && e.event == "attach"),
            "the restarted node claimed"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_priorities_elect_exactly_one() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = config();
    cfg.priorities = vec![10, 10, 10];
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        let t0 = unix_now();
        // Stable over many dead periods: sampled all along, not just at the end.
        while unix_now() - t0 < 3.0 {
            ensure!(
                lab.single_holder().await? == Some(holder),
                "holder changed: {}",
                lab.describe_state()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tl = lab.timeline()?;
        ensure!(tl.len() == 1, "exactly one attach, no fight: {tl:?}");
        ensure!(lab.aliases().await? == vec![holder]);
        Ok(())
    })
    .await;
}

/// A datagram that passes every check but the MAC: right magic, version and group, the
/// identity of a real peer, priority 1, state master.
fn wrong_key_advert(node: &str, leaving: bool) -> Vec<u8> {
    let key = wire::AuthKey::from_bytes(b"not the key of this cluster").expect("long enough");
    let incarnation = (unix_now() * 1e6) as u64 + 1_000_000_000;
    let mut enc = wire::Encoder::new(
        key,
        wire::group_id(exoip::config::DEFAULT_GROUP),
        incarnation,
    );
    let advert = wire::Advert {
        node: node.to_string(),
        leaving,
        entries: vec![wire::Entry {
            ip: EIP.into(),
            priority: 1,
            state: if leaving {
                wire::IpState::Leaving
            } else {
                wire::IpState::Master
            },
            epoch: u64::MAX / 2,
        }],
    };
    enc.encode(&advert, (unix_now() * 1000.0) as u64)
        .expect("small advert")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_change_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(40), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        let backup = (holder + 1) % 3;
        let before = lab.timeline()?.len();
        let holder_h = lab.hosts()[holder].clone();
        let backup_h = lab.hosts()[backup].clone();
        let nic: [u8; 16] = {
            let hex: String = backup_h.instance_id.chars().filter(|c| *c != '-').collect();
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
            }
            b
        };
        let mut mac_zeroed = wrong_key_advert(&backup_h.instance_id, false);
        let n = mac_zeroed.len();
        mac_zeroed[n - wire::MAC_LEN..].fill(0);
        // To the holder: "I am the backup, I have priority 1 and hold the address".
        let to_holder: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"garbage".repeat(20),
            {
                let mut v = wire::MAGIC.to_vec();
                v.extend_from_slice(&[2, 0, 0xde, 0xad]);
                v
            },
            wire::encode_legacy(1, EIP, nic).to_vec(),
            wrong_key_advert(&backup_h.instance_id, false),
            mac_zeroed,
        ];
        // To the backups: "the holder is leaving" (they would claim at once if they believed it).
        let to_backups: Vec<Vec<u8>> = vec![wrong_key_advert(&holder_h.instance_id, true)];

        let spoofed_backup = SocketAddrV4::new(backup_h.ip, HEARTBEAT_PORT);
        let spoofed_holder = SocketAddrV4::new(holder_h.ip, HEARTBEAT_PORT);
        let holder_addr = SocketAddrV4::new(holder_h.ip, HEARTBEAT_PORT);
        let window = lab.config().dead_period() * 4;
        let capture = lab.capture_udp(&holder_h.ns, backup_h.ip, HEARTBEAT_PORT, 10_000, window);
        let forge = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t0 = unix_now();
            while unix_now() - t0 < (window - Duration::from_millis(400)).as_secs_f64() {
                // From the client namespace, once with its own address and once impersonating
                // the peers' heartbeat addresses.
                lab.send_udp(
                    lab.client_ns(),
                    None,
                    holder_addr,
                    &to_holder,
                    Duration::ZERO,
                )
                .await?;
                lab.send_udp_spoofed(
                    lab.client_ns(),
                    spoofed_backup,
                    holder_addr,
                    &to_holder,
                    Duration::ZERO,
                )
                .await?;
                for (i, h) in lab.hosts().iter().enumerate() {
                    if i != holder {
                        let to = SocketAddrV4::new(h.ip, HEARTBEAT_PORT);
                        lab.send_udp_spoofed(
                            lab.client_ns(),
                            spoofed_holder,
                            to,
                            &to_backups,
                            Duration::ZERO,
                        )
                        .await?;
                    }
                }
                ensure!(
                    lab.single_holder().await? == Some(holder),
                    "holder changed under forged heartbeats: {}",
                    lab.describe_state()
                );
                tokio::time::sleep(lab.config().interval / 2).await;
            }
            Ok(())
        };
        let (captured, forged) = tokio::join!(capture, forge);
        forged?;
        let captured = captured?;
        for p in to_holder.iter().filter(|p| !p.is_empty()) {
            ensure!(
                captured.contains(p),
                "a forged datagram never reached the holder"
            );
        }
        // One more dead period for any delayed reaction.
        tokio::time::sleep(lab.config().dead_period()).await;
        ensure!(lab.single_holder().await? == Some(holder));
        ensure!(lab.aliases().await? == vec![holder]);
        let after = lab.timeline()?;
        ensure!(
            after.len() == before,
            "the API saw changes: {:?}",
            &after[before..]
        );
        let log = lab.log_tail(&holder_h.name, 10_000);
        ensure!(
            log.contains("bad_mac"),
            "the holder did not report MAC failures"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_heartbeats_do_not_keep_a_dead_holder_alive() {
    if !root_or_skip() {
        return;
    }
    let lab = start(config()).await;
    check(&lab, Duration::from_secs(40), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        let holder_h = lab.hosts()[holder].clone();
        let dead = lab.config().dead_period();
        // The holder's genuine heartbeats, as seen arriving on each backup.
        let mut captured = Vec::new();
        for (i, h) in lab.hosts().iter().enumerate() {
            if i != holder {
                let c = lab
                    .capture_udp(&h.ns, holder_h.ip, HEARTBEAT_PORT, 8, dead * 4)
                    .await?;
                ensure!(
                    c.len() >= 3,
                    "captured only {} heartbeats on {}",
                    c.len(),
                    h.name
                );
                captured.push((SocketAddrV4::new(h.ip, HEARTBEAT_PORT), c));
            }
        }
        let (t_kill, _) = lab
            .stop_agent(holder, Signal::SIGKILL, Duration::from_secs(5))
            .await?;
        // Replay them, from the client namespace with the holder's address, for far longer
        // than the dead period: if they counted, nobody would take over before the end.
        let replay_for = dead * 6;
        let src = SocketAddrV4::new(holder_h.ip, HEARTBEAT_PORT);
        let replay = async {
            while unix_now() - t_kill < replay_for.as_secs_f64() {
                for (to, datagrams) in &captured {
                    lab.send_udp_spoofed(
                        lab.client_ns(),
                        src,
                        *to,
                        datagrams,
                        Duration::from_millis(5),
                    )
                    .await?;
                }
                tokio::time::sleep(lab.config().interval / 2).await;
            }
            Ok::<_, anyhow::Error>(())
        };
        let takeover = lab.wait_until("a takeover", patience(&lab), || async {
            Ok(lab
                .timeline()?
                .iter()
                .any(|e| e.t >= t_kill && e.event == "attach"))
        });
        let (replayed, took) = tokio::join!(replay, takeover);
        replayed?;
        took?;
        let attach = lab
            .timeline()?
            .into_iter()
            .find(|e| e.t >= t_kill && e.event == "attach")
            .expect("waited for it");
        let took = attach.t - t_kill;
        let bound = (dead * 2).as_secs_f64() + 1.0;
        ensure!(
            took < bound && took < replay_for.as_secs_f64(),
            "takeover {took:.3} s after the kill despite replays ending at {:?}: replays counted?",
            replay_for
        );
        let backup = lab.host_by_instance(&attach.instance)?;
        let log = lab.log_tail(name(&lab, backup), 10_000);
        ensure!(
            log.contains("replayed"),
            "{} did not report replays",
            name(&lab, backup)
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_path_recovers_within_the_failover_time() {
    if !root_or_skip() {
        return;
    }
    let mut cfg = config();
    cfg.data_path = true;
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(40), async {
        let holder = lab.wait_single_holder(patience(&lab)).await?;
        let holder_name = name(&lab, holder).to_string();
        let since = unix_now();
        lab.wait_until(
            "requests answered by the holder",
            Duration::from_secs(5),
            || async {
                Ok(lab
                    .requests()
                    .iter()
                    .filter(|r| r.t >= since && r.body.as_deref() == Some(&holder_name))
                    .count()
                    >= 5)
            },
        )
        .await?;
        let t_kill = lab.crash(holder).await?;
        let first_ok = lab
            .wait_until("requests answered again", patience(&lab), || async {
                Ok(lab.requests().iter().any(|r| r.ok && r.t > t_kill))
            })
            .await
            .and_then(|_| {
                lab.requests()
                    .into_iter()
                    .find(|r| r.ok && r.t > t_kill)
                    .ok_or_else(|| anyhow!("vanished"))
            })?;
        let answered_by = first_ok.body.clone().unwrap_or_default();
        ensure!(answered_by != holder_name, "the crashed host answered");
        let last_ok = lab
            .requests()
            .into_iter()
            .rfind(|r| r.ok && r.t < t_kill)
            .ok_or_else(|| anyhow!("no request succeeded before the crash"))?;
        let outage = first_ok.t - last_ok.t;
        let bound = lab.config().dead_period().as_secs_f64() + 2.0;
        ensure!(outage < bound, "outage {outage:.3} s, expected < {bound} s");
        // And it keeps working through the new holder.
        let t = unix_now();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after: Vec<_> = lab
            .requests()
            .into_iter()
            .filter(|r| r.t >= t && r.t < t + 0.3)
            .collect();
        ensure!(
            after.len() >= 3
                && after
                    .iter()
                    .all(|r| r.ok && r.body.as_deref() == Some(&answered_by)),
            "steady after the failover: {after:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_in_one_process_move_together() {
    if !root_or_skip() {
        return;
    }
    let second = std::net::Ipv4Addr::new(203, 0, 113, 11);
    let mut cfg = config();
    cfg.extra_eips = vec![second];
    let lab = start(cfg).await;
    check(&lab, Duration::from_secs(60), async {
        for eip in [EIP, second] {
            lab.wait_until(&format!("lb1 holds {eip}"), patience(&lab), || async {
                Ok(lab.holders_of(eip).await? == vec![0] && lab.has_alias_of(0, eip).await?)
            })
            .await?;
        }
        // One heartbeat carries both addresses: lb2's status shows lb1 as master of each.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_exoip"))
            .args(["status", "--json", "--socket"])
            .arg(lab.status_socket(1))
            .output()?;
        let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let ips = st["ips"].as_array().cloned().unwrap_or_default();
        ensure!(ips.len() == 2, "{st}");
        let lb1 = st["peers"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|p| p["address"] == "192.0.2.11:12345")
                    .cloned()
            })
            .ok_or_else(|| anyhow!("lb1 among lb2's peers: {st}"))?;
        ensure!(
            lb1["ips"]
                .as_array()
                .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["state"] == "master")),
            "{lb1}"
        );

        lab.kill(0, Signal::SIGKILL)?;
        for eip in [EIP, second] {
            lab.wait_until(&format!("lb2 holds {eip}"), patience(&lab), || async {
                Ok(lab.holders_of(eip).await? == vec![1]
                    && lab.has_alias_of(1, eip).await?
                    && !lab.has_alias_of(2, eip).await?)
            })
            .await?;
        }
        Ok(())
    })
    .await;
}

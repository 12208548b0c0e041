//! End to end against the simulated Keystone + Neutron: real agents in network namespaces, the
//! simulator in the router namespace, a client fetching through the floating IP (NATed by the
//! router to the holder's fixed IP) or through the VIP (from the hosts' own LAN, so only ARP
//! tells it where the VIP is). Needs root. A peer is dead after 3 x 0.2 s.

use std::time::Duration;

use anyhow::{ensure, Result};
use exoip::lab::{no_holder_intervals, unix_now, Lab, LabCloud, LabConfig};
use nix::sys::signal::Signal;

mod common;
use common::{check, config, name, patience, reached, root_or_skip, start};

fn openstack(cloud: LabCloud) -> LabConfig {
    let mut cfg = config();
    cfg.cloud = cloud;
    cfg.data_path = true;
    cfg
}

/// No host has the floating IP configured locally (Neutron NATs it).
async fn nobody_has_it_locally(lab: &Lab) -> Result<()> {
    ensure!(
        lab.aliases().await?.is_empty(),
        "floating-IP mode configures nothing in the guest: {:?}",
        lab.aliases().await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_ip_kill_9_moves_it_to_the_survivor_port() {
    if !root_or_skip() {
        return;
    }
    let lab = start(openstack(LabCloud::OpenStackFloatingIp)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(old == 0, "lb1 is the best, {} won", name(&lab, old));
        nobody_has_it_locally(&lab).await?;
        reached(&lab, 0, 0.0, patience(&lab)).await?;
        let dead_id = lab.hosts()[old].instance_id.clone();

        let t_kill = lab.crash(old).await?;
        lab.wait_until("the floating IP on lb2's port", patience(&lab), || async {
            Ok(lab.holders().await? == vec![1])
        })
        .await?;
        let tl = lab.timeline()?;
        let moved = tl
            .iter()
            .find(|e| e.t >= t_kill && e.holders.iter().all(|h| *h != dead_id))
            .map(|e| e.t)
            .expect("waited for it");
        let bound = lab.config().dead_period().as_secs_f64() + 2.0;
        ensure!(
            moved - t_kill < bound,
            "moved {:.3} s after the kill, expected < {bound} s",
            moved - t_kill
        );
        // The data path follows: the router NATs the floating IP to lb2 now.
        let back = reached(&lab, 1, t_kill, patience(&lab)).await?;
        ensure!(
            back - t_kill < bound + 1.0,
            "reachable after {:.3} s",
            back - t_kill
        );
        nobody_has_it_locally(&lab).await?;
        // One move, straight from lb1's port to lb2's: never unassociated in between.
        let gaps = no_holder_intervals(&tl, t_kill, unix_now());
        ensure!(gaps.is_empty(), "no-holder intervals: {gaps:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_ip_graceful_handover_and_restart_have_no_gap() {
    if !root_or_skip() {
        return;
    }
    let lab = start(openstack(LabCloud::OpenStackFloatingIp)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab
            .wait_settled(lab.config().dead_period(), patience(&lab) * 2)
            .await?;
        let t_stop = unix_now();
        lab.stop_agent(old, Signal::SIGTERM, patience(&lab)).await?;
        let new = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(new != old, "{} still holds it", name(&lab, new));
        // Restart: the better node takes it back after its hold-off, again without a gap.
        let t_start = unix_now();
        lab.start_agent(old).await?;
        lab.wait_until("lb1 to hold it again", patience(&lab) * 2, || async {
            Ok(lab.single_holder().await? == Some(old))
        })
        .await?;
        reached(&lab, old, t_start, patience(&lab)).await?;
        let gaps = no_holder_intervals(&lab.timeline()?, t_stop, unix_now());
        ensure!(gaps.is_empty(), "no-holder intervals: {gaps:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_kill_9_fails_over_with_gratuitous_arp_and_fences_the_dead_peer() {
    if !root_or_skip() {
        return;
    }
    let lab = start(openstack(LabCloud::OpenStackVip)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(old == 0, "lb1 is the best, {} won", name(&lab, old));
        reached(&lab, 0, 0.0, patience(&lab)).await?;
        let dead_id = lab.hosts()[old].instance_id.clone();
        // The client knows lb1's MAC for the VIP now; without the gratuitous ARP it would keep
        // sending there for tens of seconds.
        let t_kill = lab.crash(old).await?;
        lab.wait_until("another host with the VIP", patience(&lab), || async {
            Ok(lab.single_holder().await?.is_some_and(|h| h != old))
        })
        .await?;
        let holder = lab.single_holder().await?.expect("waited for it");
        ensure!(
            holder == 1,
            "lb2 is the best survivor, {} took it",
            name(&lab, holder)
        );
        let back = reached(&lab, 1, t_kill, patience(&lab)).await?;
        let bound = lab.config().dead_period().as_secs_f64() + 1.5;
        ensure!(
            back - t_kill < bound,
            "the client reached lb2 {:.3} s after the kill, expected < {bound} s",
            back - t_kill
        );
        // Fencing, off the critical path: lb1 loses its allowed address pair.
        lab.wait_until("lb1 fenced", patience(&lab), || async {
            Ok(lab
                .timeline()?
                .iter()
                .any(|e| e.t >= t_kill && e.event == "detach" && e.instance == dead_id))
        })
        .await?;
        // lb1 comes back: its pair is restored (it can stand by), and it takes the VIP back.
        let t_back = unix_now();
        lab.revive(old).await?;
        lab.start_agent(old).await?;
        lab.wait_until("lb1 allowed again", patience(&lab), || async {
            Ok(lab
                .timeline()?
                .iter()
                .any(|e| e.t >= t_back && e.event == "attach" && e.instance == dead_id))
        })
        .await?;
        lab.wait_until("lb1 holding the VIP again", patience(&lab) * 2, || async {
            Ok(lab.single_holder().await? == Some(old))
        })
        .await?;
        reached(&lab, old, t_back, patience(&lab)).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_graceful_handover_keeps_serving() {
    if !root_or_skip() {
        return;
    }
    let lab = start(openstack(LabCloud::OpenStackVip)).await;
    check(&lab, Duration::from_secs(60), async {
        let old = lab
            .wait_settled(lab.config().dead_period(), patience(&lab) * 2)
            .await?;
        reached(&lab, old, 0.0, patience(&lab)).await?;
        let t_stop = unix_now();
        lab.stop_agent(old, Signal::SIGTERM, patience(&lab)).await?;
        let new = lab.wait_single_holder(patience(&lab)).await?;
        ensure!(new != old);
        let back = reached(&lab, new, t_stop, patience(&lab)).await?;
        ensure!(
            back - t_stop < 1.0,
            "the client reached {} {:.3} s after the stop",
            name(&lab, new),
            back - t_stop
        );
        // A graceful stop is no death: nobody is fenced.
        let fenced: Vec<_> = lab
            .timeline()?
            .into_iter()
            .filter(|e| e.t >= t_stop && e.event == "detach")
            .collect();
        ensure!(
            fenced.is_empty(),
            "fenced after a graceful stop: {fenced:?}"
        );
        // Requests failed for at most a few fetch periods around the hand-over.
        let failed = lab
            .requests()
            .iter()
            .filter(|r| !r.ok && r.t >= t_stop && r.t <= back)
            .count();
        ensure!(failed <= 3, "{failed} failed requests during the hand-over");
        // Restart: lb1 takes the VIP back after its hold-off, announcing it again.
        let t_start = unix_now();
        lab.start_agent(old).await?;
        lab.wait_until(
            "the restarted node holding again",
            patience(&lab) * 2,
            || async { Ok(lab.single_holder().await? == Some(old)) },
        )
        .await?;
        let again = reached(&lab, old, t_start, patience(&lab)).await?;
        let failed = lab
            .requests()
            .iter()
            .filter(|r| !r.ok && r.t >= t_start && r.t <= again)
            .count();
        ensure!(
            failed <= 3,
            "{failed} failed requests while it took the VIP back"
        );
        Ok(())
    })
    .await;
}

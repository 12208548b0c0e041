//! The chaos suite's CI subset (`exoip lab chaos`, see `src/lab/chaos`): every scenario once on
//! the simulated Exoscale, and kill -9, the symmetric heartbeat partition and the API outage on
//! OpenStack (floating IP, VIP) and Azure (public IP, load balancer probe), plus the asymmetric
//! partition in the two modes where the holder holds locally (VIP, lb-probe). Needs root: each
//! test builds its own lab in network namespaces.
//!
//! Shortened: heartbeats every 0.2 s (a peer is dead after 0.6 s), the agents reconcile every
//! 2 s, and every fault lasts a fifth of the script's (SIGSTOP 2 s, link cuts 1 s and 15 s,
//! partitions 4 s, loss 12 s, API faults 2 to 5 s), so that the faults keep their proportion to
//! the dead period. Each test asserts every pass criterion of its run: no-holder time within
//! the failover budget, multi-holder time within one reconcile period once the fault is
//! observable, no flapping (none at all under 30 % heartbeat loss) and one consistent holder
//! after the fault. A failure prints the run's holder timeline and the logs' tails.

use std::time::Duration;

use exoip::lab::{chaos::run_scenario, ChaosScenario, ChaosSettings, LabCloud};

mod common;
use common::root_or_skip;

/// Bound of one test: the longest scenario (a 15 s link cut) and settling twice take ~30 s;
/// a run that never settles waits out its patience (~20 s) on top.
const LIMIT: Duration = Duration::from_secs(150);

fn settings(cloud: LabCloud) -> ChaosSettings {
    let mut s = ChaosSettings::new(env!("CARGO_BIN_EXE_exoip"));
    s.cloud = cloud;
    s.interval = Duration::from_millis(200);
    s.dead_ratio = 3;
    s.reconcile_interval = Some(Duration::from_secs(2));
    s.scale = 0.2;
    s.runs = 1;
    s
}

async fn chaos(cloud: LabCloud, scenario: ChaosScenario) {
    if !root_or_skip() {
        return;
    }
    let s = settings(cloud);
    let report = match tokio::time::timeout(LIMIT, run_scenario(&s, scenario)).await {
        Ok(r) => r,
        Err(_) => panic!(
            "{}{} took more than {LIMIT:?}",
            cloud.tag(),
            scenario.name()
        ),
    };
    // The figures of every run are on stderr already ("chaos: ... run 1/1: ..."); a failure
    // adds the runs' timelines and the logs' tails.
    if !report.passed() {
        eprint!("{}", report.explain());
        panic!(
            "{}{} failed (figures, timeline and logs above); {}",
            cloud.tag(),
            scenario.name(),
            s.describe()
        );
    }
}

macro_rules! chaos_tests {
    ($($name:ident: $cloud:ident, $scenario:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                chaos(LabCloud::$cloud, ChaosScenario::$scenario).await;
            }
        )*
    };
}

chaos_tests! {
    exoscale_kill: Exoscale, Kill;
    exoscale_sigstop: Exoscale, Sigstop;
    exoscale_link_cut_short: Exoscale, LinkCut5s;
    exoscale_link_cut_long: Exoscale, LinkCut75s;
    exoscale_partition: Exoscale, Partition;
    exoscale_asymmetric_partition: Exoscale, Asymmetric;
    exoscale_api_cut: Exoscale, ApiCut;
    exoscale_api_5xx: Exoscale, Api5xx;
    exoscale_api_429: Exoscale, Api429;
    exoscale_api_latency: Exoscale, ApiLatency;
    exoscale_api_outage: Exoscale, ApiOutage;
    exoscale_restart: Exoscale, Restart;
    exoscale_simultaneous_start: Exoscale, Simultaneous;
    exoscale_heartbeat_loss: Exoscale, Loss;

    openstack_floating_ip_kill: OpenStackFloatingIp, Kill;
    openstack_floating_ip_partition: OpenStackFloatingIp, Partition;
    openstack_floating_ip_api_outage: OpenStackFloatingIp, ApiOutage;

    openstack_vip_kill: OpenStackVip, Kill;
    openstack_vip_partition: OpenStackVip, Partition;
    openstack_vip_asymmetric_partition: OpenStackVip, Asymmetric;
    openstack_vip_api_outage: OpenStackVip, ApiOutage;

    azure_public_ip_kill: AzurePublicIp, Kill;
    azure_public_ip_partition: AzurePublicIp, Partition;
    azure_public_ip_api_outage: AzurePublicIp, ApiOutage;

    azure_lb_probe_kill: AzureLbProbe, Kill;
    azure_lb_probe_partition: AzureLbProbe, Partition;
    azure_lb_probe_asymmetric_partition: AzureLbProbe, Asymmetric;
    azure_lb_probe_api_outage: AzureLbProbe, ApiOutage;
}

//! Network-namespace test beds ("labs") for the demo, the end-to-end tests, the failover
//! benchmark and the chaos suite ([`chaos`]), plus the small helpers they run inside the
//! namespaces (`exoip lab ...`).
//!
//! A lab is a router namespace running the simulated cloud, N host namespaces running agents,
//! and a client namespace reaching the elastic IP through the router: see [`testbed`].

mod bench;
pub mod chaos;
mod demo;
pub mod http;
mod legacy_peer;
pub mod netns;
pub mod testbed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

pub use bench::{BenchArgs, Scenario};
pub use chaos::{ChaosArgs, ChaosScenario, ChaosSettings, ScenarioReport};
pub use netns::cleanup_leftovers;
pub use testbed::{
    holders_at, no_holder_intervals, no_holder_time, Host, Lab, LabCloud, LabConfig, TimelineEvent,
    EIP, EIP6, HEARTBEAT_PORT, VIP,
};

/// Unix time in seconds: the simulator stamps its timeline with the same clock.
pub fn unix_now() -> f64 {
    crate::unix_time().as_secs_f64()
}

/// Durations as the agent takes them: plain seconds (`1`, `0.2`) or with units (`200ms`).
pub use crate::config::parse_duration_text as parse_duration;

/// Which simulated cloud a lab runs.
#[derive(clap::Args, Debug, Clone)]
pub struct CloudArgs {
    /// The simulated cloud: exoscale, openstack or azure.
    #[arg(long, default_value = "exoscale", value_parser = ["exoscale", "openstack", "azure"])]
    pub provider: String,
    /// OpenStack: floating-ip (default) or vip (allowed address pairs + gratuitous ARP).
    #[arg(long, value_parser = ["floating-ip", "vip"])]
    pub openstack_mode: Option<String>,
    /// Azure: public-ip (default), secondary-ip (two PUTs + gratuitous ARP) or lb-probe (a
    /// load balancer emulated in the lab follows the health probe).
    #[arg(long, value_parser = ["public-ip", "secondary-ip", "lb-probe"])]
    pub azure_mode: Option<String>,
    /// IPv6 end to end (--provider exoscale only): the elastic IP is 2001:db8:ee::1, and
    /// heartbeats, the route and the client's requests go over IPv6.
    #[arg(long)]
    pub ipv6: bool,
}

impl CloudArgs {
    pub fn lab_cloud(&self) -> Result<LabCloud> {
        let mode = match (
            self.provider.as_str(),
            &self.openstack_mode,
            &self.azure_mode,
        ) {
            (_, Some(_), Some(_)) => bail!("--openstack-mode and --azure-mode are exclusive"),
            ("openstack", m, None) | ("azure", None, m) => m.as_deref(),
            (p, Some(_), None) => bail!("--openstack-mode: not with --provider {p}"),
            (p, None, Some(_)) => bail!("--azure-mode: not with --provider {p}"),
            (_, None, None) => None,
        };
        let cloud = LabCloud::parse(&self.provider, mode)?;
        if self.ipv6 && cloud != LabCloud::Exoscale {
            bail!(
                "--ipv6: the IPv6 lab exists for --provider exoscale only, not {}",
                self.provider
            );
        }
        Ok(cloud)
    }

    /// Sets the cloud and the address family of `cfg`.
    pub fn apply(&self, cfg: &mut LabConfig) -> Result<()> {
        cfg.cloud = self.lab_cloud()?;
        cfg.ipv6 = self.ipv6;
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Number of hosts (priorities 10, 20, 30...: lb1 is the preferred holder).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    pub hosts: u8,
    /// Heartbeat interval.
    #[arg(short = 't', long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    /// A peer is dead after this many intervals without a heartbeat.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub dead_ratio: u32,
    /// Latency of every attach/detach in the simulated cloud.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub op_delay: Duration,
    /// Keep the lab's directory (logs, timeline) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Print the lab's construction and the logs' tails at the end.
    #[arg(short, long)]
    pub verbose: bool,
    /// exoip binary to run in the namespaces (default: this one).
    #[arg(long, value_name = "PATH", hide = true)]
    pub exoip: Option<PathBuf>,
    /// Extra arguments for every agent (repeatable).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Answer every HTTP request with a fixed body (a host's service in the data path).
    ServeHttp {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        body: String,
    },
    /// GET a URL repeatedly, one JSON line per attempt (the client of the data path).
    FetchLoop {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "50ms", value_parser = parse_duration)]
        interval: Duration,
        #[arg(long, default_value = "250ms", value_parser = parse_duration)]
        timeout: Duration,
        /// Stop after this long (default: run until killed).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// GET a URL once and print the body; fails unless the status is 2xx.
    HttpGet {
        url: String,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Measure failover times over repeated kills (root).
    Bench(BenchArgs),
    /// The chaos suite: faults injected into labs, figures and pass criteria per scenario
    /// (root).
    Chaos(ChaosArgs),
    /// Build a lab and keep it until Ctrl-C, for poking around with `ip netns exec` (root).
    Up {
        #[command(flatten)]
        cloud: CloudArgs,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        hosts: u8,
        #[arg(short = 't', long, default_value = "1", value_parser = parse_duration)]
        interval: Duration,
        #[arg(short = 'r', long, default_value_t = 3)]
        dead_ratio: u32,
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        op_delay: Duration,
        /// Do not start the agents.
        #[arg(long)]
        no_agents: bool,
        /// Do not start the simulated cloud (implies --no-agents).
        #[arg(long)]
        no_sim: bool,
        /// HTTP servers on the hosts and a client loop.
        #[arg(long)]
        data_path: bool,
    },
    /// Remove namespaces and directories left behind by labs whose process is gone.
    Cleanup,
    /// Behave as the old Go exoip would with this agent command line (mixed-cluster tests).
    #[command(hide = true)]
    LegacyPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub async fn run_demo(args: DemoArgs) -> Result<()> {
    demo::run(args).await
}

pub async fn run_lab(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::ServeHttp { listen, body } => http::serve(listen, body).await,
        LabCommand::FetchLoop {
            url,
            interval,
            timeout,
            duration,
        } => http::fetch_loop(&url, interval, timeout, duration).await,
        LabCommand::HttpGet { url, timeout } => {
            let resp = http::get(&url, timeout).await?;
            if !(200..300).contains(&resp.status) {
                bail!("GET {url}: status {}: {}", resp.status, resp.text().trim());
            }
            use std::io::Write;
            std::io::stdout().write_all(&resp.body)?;
            Ok(())
        }
        LabCommand::Bench(args) => bench::run(args).await,
        LabCommand::Chaos(args) => chaos::run(args).await,
        LabCommand::Up {
            cloud,
            hosts,
            interval,
            dead_ratio,
            op_delay,
            no_agents,
            no_sim,
            data_path,
        } => {
            require_root("the lab")?;
            let mut cfg = LabConfig::new(std::env::current_exe()?);
            cloud.apply(&mut cfg)?;
            cfg.hosts = hosts.into();
            cfg.interval = interval;
            cfg.dead_ratio = dead_ratio;
            cfg.op_delay = op_delay;
            cfg.sim = !no_sim;
            cfg.agents = !no_agents && !no_sim;
            cfg.data_path = data_path;
            cfg.verbose = true;
            let lab = Lab::start(cfg).await?;
            println!("lab {} is up; logs in {}", lab.id(), lab.dir().display());
            println!("  router: ip netns exec {} bash", lab.router_ns());
            println!("  client: ip netns exec {} bash", lab.client_ns());
            println!("  the agents float {}", lab.address());
            for h in lab.hosts() {
                let ip6 = h.ip6.map(|ip| format!(" and {ip}")).unwrap_or_default();
                println!(
                    "  {} ({}{ip6}, instance {}, priority {}): ip netns exec {} bash",
                    h.name, h.ip, h.instance_id, h.priority, h.ns
                );
            }
            println!("Ctrl-C removes it.");
            let sig = demo::interrupted().await;
            println!("{sig}: removing the lab");
            drop(lab);
            Ok(())
        }
        LabCommand::LegacyPeer { args } => legacy_peer::run(args).await,
        LabCommand::Cleanup => {
            require_root("cleaning up labs")?;
            for name in cleanup_leftovers() {
                println!("removed {name}");
            }
            Ok(())
        }
    }
}

/// One clear line instead of a cascade of `ip` permission errors.
pub(crate) fn require_root(what: &str) -> Result<()> {
    if !testbed::is_root() {
        bail!("{what} needs root: it creates network namespaces (run it with sudo)");
    }
    Ok(())
}

/// The exoip binary the lab runs: the one given, else this very executable.
pub(crate) fn exoip_binary(
    given: Option<std::path::PathBuf>,
) -> anyhow::Result<std::path::PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => anyhow::Context::context(std::env::current_exe(), "cannot find the exoip binary"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

//! `exoip sim …`: the simulated cloud as a process (the demo and the end-to-end tests run it in
//! a network namespace).
//!
//! `--provider exoscale` (the default), `--provider openstack` or `--provider azure` chooses
//! the cloud; the seed file is that cloud's format (`--example-seed` prints one).
//!
//! On start it prints one line to stdout ([`ready_line`]), with the addresses actually bound (so
//! `--listen 127.0.0.1:0` works), then serves until SIGTERM or SIGINT and exits 0:
//! * Exoscale: `sim: api http://ADDR/v2 metadata http://ADDR` (or `metadata none`);
//! * OpenStack: `sim: api http://ADDR/identity/v3 network http://ADDR/network metadata
//!   http://ADDR` (the `auth_url`, the Neutron endpoint of the catalog, the metadata stub);
//! * Azure: `sim: api http://ADDR (ARM, login) metadata http://ADDR` (the ARM endpoint, which is
//!   also the authority host; IMDS, or `metadata none`).

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::azure::{AzureSeed, EXAMPLE_AZURE_SEED};
use super::faults::{Faults, Reason};
use super::openstack::OpenStackSeed;
use super::seed::{Seed, EXAMPLE_SEED};
use super::{CloudSeed, SimConfig, SimError, SimHandle};

/// The cloud `exoip sim` simulates.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimProvider {
    /// Exoscale API v2.
    #[default]
    Exoscale,
    /// OpenStack Keystone v3 + Neutron v2.0.
    Openstack,
    /// Azure Resource Manager (Microsoft.Network) + Entra ID tokens + IMDS.
    Azure,
}

/// Run a simulated cloud (Exoscale API v2, OpenStack Keystone + Neutron, or Azure ARM + Entra
/// ID) plus metadata stub, for tests and demos.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// The cloud to simulate (the EXOIP_PROVIDER environment variable is not read here).
    #[arg(long, value_enum, default_value_t = SimProvider::Exoscale)]
    pub provider: SimProvider,
    /// Initial state (JSON; see --example-seed): Exoscale: zone, API keys, security groups,
    /// instances, elastic IPs; OpenStack: region, users, networks, ports, floating IPs…;
    /// Azure: tenant, subscription, service principals, VMs with their NICs, public IPs….
    #[arg(long, value_name = "FILE", required_unless_present = "example_seed")]
    pub seed: Option<PathBuf>,
    /// API listener (the control API is on it too, under /_sim/).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Metadata stub listener, IMDS on Azure (instance identified by the request's source
    /// address).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metadata_listen: Option<SocketAddr>,
    /// Append every holder change to this file as a JSON line (truncated at start).
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Initial faults as JSON (the format of PUT /_sim/faults); the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Exoscale: how long operations stay pending before their change applies; OpenStack: extra
    /// latency of Neutron mutations (they apply when it is over); Azure: how long long-running
    /// operations stay InProgress before their change applies. E.g. 0ms, 200ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub op_delay: Option<Duration>,
    /// Answer mutations with an operation already in state success (Exoscale; Azure:
    /// Succeeded). Not for OpenStack.
    #[arg(long)]
    pub op_immediate: bool,
    /// Delay added to every API answer, e.g. 50ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Re-attaching a holder or detaching a non-holder fails with this operation reason
    /// (e.g. conflict) instead of succeeding as a no-op (Exoscale only).
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    pub noop_failure: Option<Reason>,
    /// Make traffic to each floating address reach its holders (run it in a router network
    /// namespace): Exoscale: `ip route` to the holders' public IPs; OpenStack: NAT of each
    /// floating IP to its port's fixed IP in the nftables table `ip exoip_sim`; Azure: `ip
    /// route` of each public IP to its holder VM's private IP.
    #[arg(long)]
    pub route_holders: bool,
    /// Print an example seed file and exit.
    #[arg(long)]
    pub example_seed: bool,
}

fn parse_reason(s: &str) -> Result<Reason, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not an operation reason (busy, conflict, fault, forbidden, incorrect, interrupted, not-found, partial, unavailable, unknown, unsupported)"))
}

impl SimArgs {
    /// The simulator configuration these flags describe (reads the seed and faults files).
    pub fn config(&self) -> Result<SimConfig, SimError> {
        let path = self
            .seed
            .as_ref()
            .ok_or_else(|| SimError::Invalid("--seed FILE is required".into()))?;
        let seed = match self.provider {
            SimProvider::Exoscale => CloudSeed::Exoscale(Seed::load(path)?),
            SimProvider::Openstack => {
                if self.op_immediate || self.noop_failure.is_some() {
                    return Err(SimError::Invalid(
                        "--op-immediate and --noop-failure are for --provider exoscale only".into(),
                    ));
                }
                CloudSeed::OpenStack(OpenStackSeed::load(path)?)
            }
            SimProvider::Azure => {
                // ARM has no operation that fails for being a no-op: a PUT of the same NIC
                // simply succeeds.
                if self.noop_failure.is_some() {
                    return Err(SimError::Invalid(
                        "--noop-failure is for --provider exoscale only".into(),
                    ));
                }
                CloudSeed::Azure(AzureSeed::load(path)?)
            }
        };
        let mut faults = match &self.faults {
            None => Faults::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| SimError::Faults(format!("cannot read {}: {e}", p.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| SimError::Faults(format!("{}: {e}", p.display())))?
            }
        };
        if let Some(d) = self.op_delay {
            faults.op_delay = d;
        }
        if self.op_immediate {
            faults.op_immediate = true;
        }
        if let Some(d) = self.latency {
            faults.latency = d;
        }
        if self.noop_failure.is_some() {
            faults.noop_failure = self.noop_failure;
        }
        faults.validate().map_err(SimError::Faults)?;
        Ok(SimConfig {
            api_listen: self.listen,
            metadata_listen: self.metadata_listen,
            timeline_path: self.timeline.clone(),
            route_holders: self.route_holders,
            faults,
            ..SimConfig::with_seed(seed)
        })
    }
}

/// The seed `--example-seed` prints for `provider`: a valid seed file of that cloud.
pub fn example_seed(provider: SimProvider) -> String {
    match provider {
        SimProvider::Exoscale => EXAMPLE_SEED.to_string(),
        SimProvider::Openstack => OpenStackSeed::example_json(),
        SimProvider::Azure => EXAMPLE_AZURE_SEED.to_string(),
    }
}

/// The line printed once the simulator listens (see the module documentation); whoever
/// started it waits for a line starting with `sim: api `.
pub fn ready_line(sim: &SimHandle) -> String {
    let metadata = sim.metadata_url();
    let metadata = metadata.as_deref().unwrap_or("none");
    match (sim.provider(), sim.network_url()) {
        ("azure", _) => format!(
            "sim: api {} (ARM, login) metadata {metadata}",
            sim.api_url()
        ),
        (_, None) => format!("sim: api {} metadata {metadata}", sim.api_url()),
        (_, Some(network)) => format!(
            "sim: api {} network {network} metadata {metadata}",
            sim.api_url()
        ),
    }
}

/// Runs the simulator until SIGTERM/SIGINT (or prints the example seed).
pub async fn run(args: SimArgs) -> Result<(), Box<dyn Error + Send + Sync>> {
    if args.example_seed {
        print!("{}", example_seed(args.provider));
        return Ok(());
    }
    // Before listening: whoever sees the port open may already send SIGTERM, and that must
    // stop us cleanly rather than kill us with the default action.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let sim = super::start(args.config()?).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", ready_line(&sim))?;
        // Whoever started us waits for this line (often through a pipe, which is buffered).
        out.flush()?;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("simulator stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn seed_is_required_unless_printing_the_example() {
        assert!(Wrap::try_parse_from(["x"]).is_err());
        let w = Wrap::try_parse_from(["x", "--example-seed"]).unwrap();
        assert!(w.sim.example_seed);
        assert_eq!(w.sim.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn flags_override_the_faults_file() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, EXAMPLE_SEED).unwrap();
        let faults = dir.path().join("faults.json");
        std::fs::write(
            &faults,
            r#"{"op_delay":"1s","latency":"5ms","retry_after_secs":7}"#,
        )
        .unwrap();
        let w = Wrap::try_parse_from([
            "x",
            "--seed",
            seed.to_str().unwrap(),
            "--faults",
            faults.to_str().unwrap(),
            "--op-delay",
            "200ms",
            "--op-immediate",
            "--noop-failure",
            "conflict",
            "--listen",
            "127.0.0.1:0",
            "--metadata-listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let cfg = w.sim.config().unwrap();
        assert_eq!(cfg.faults.op_delay, Duration::from_millis(200));
        assert_eq!(cfg.faults.latency, Duration::from_millis(5));
        assert_eq!(cfg.faults.retry_after_secs, 7);
        assert!(cfg.faults.op_immediate);
        assert_eq!(cfg.faults.noop_failure, Some(Reason::Conflict));
        assert!(cfg.metadata_listen.is_some());

        assert!(Wrap::try_parse_from(["x", "--example-seed", "--op-delay", "soon"]).is_err());
        assert!(Wrap::try_parse_from(["x", "--example-seed", "--noop-failure", "nope"]).is_err());
    }

    #[test]
    fn openstack_provider_reads_its_own_seed() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, OpenStackSeed::example_json()).unwrap();
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "x",
                "--provider",
                "openstack",
                "--seed",
                seed.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            Wrap::try_parse_from(args).unwrap().sim
        };
        let cfg = parse(&["--op-delay", "50ms", "--latency", "5ms"])
            .config()
            .unwrap();
        assert!(matches!(cfg.seed, CloudSeed::OpenStack(_)));
        assert_eq!(cfg.faults.op_delay, Duration::from_millis(50));
        assert!(parse(&["--op-immediate"]).config().is_err());
        // An Exoscale seed is not an OpenStack seed, and the other way round.
        let w = Wrap::try_parse_from(["x", "--seed", seed.to_str().unwrap()]).unwrap();
        assert_eq!(w.sim.provider, SimProvider::Exoscale);
        assert!(w.sim.config().is_err());
        assert!(Wrap::try_parse_from(["x", "--example-seed", "--provider", "gce"]).is_err());
    }

    #[test]
    fn azure_provider_reads_its_own_seed_and_takes_the_operation_flags() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, example_seed(SimProvider::Azure)).unwrap();
        let faults = dir.path().join("faults.json");
        std::fs::write(&faults, r#"{"op_stuck":{"count":1},"retry_after_secs":4}"#).unwrap();
        let parse = |extra: &[&str]| {
            let mut args = vec!["x", "--provider", "azure", "--seed", seed.to_str().unwrap()];
            args.extend_from_slice(extra);
            Wrap::try_parse_from(args).unwrap().sim
        };
        let cfg = parse(&[
            "--faults",
            faults.to_str().unwrap(),
            "--op-delay",
            "50ms",
            "--latency",
            "5ms",
            "--op-immediate",
            "--route-holders",
        ])
        .config()
        .unwrap();
        match &cfg.seed {
            CloudSeed::Azure(s) => assert_eq!(*s, AzureSeed::example()),
            other => panic!("not an Azure seed: {other}"),
        }
        assert_eq!(cfg.faults.op_delay, Duration::from_millis(50));
        assert_eq!(cfg.faults.latency, Duration::from_millis(5));
        assert!(cfg.faults.op_immediate);
        assert_eq!(cfg.faults.op_stuck.count, 1);
        assert_eq!(cfg.faults.retry_after_secs, 4);
        assert!(cfg.route_holders);
        let err = parse(&["--noop-failure", "conflict"]).config().unwrap_err();
        assert!(err.to_string().contains("--noop-failure"), "{err}");

        // Another cloud's seed is refused, naming the problem.
        std::fs::write(&seed, EXAMPLE_SEED).unwrap();
        let err = parse(&[]).config().unwrap_err();
        assert!(matches!(err, SimError::Seed(_)), "{err}");
        assert!(err.to_string().contains("unknown field `zone`"), "{err}");
    }
}

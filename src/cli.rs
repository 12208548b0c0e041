//! The command line: exoip-compatible short flags, long flags, `IF_*` environment, subcommands.
//!
//! The old Go exoip used Go's `flag` package, so its two-letter flags (`-xi`, `-xk`, `-xs`, `-xe`)
//! and `-flag=value` forms must keep working; [`normalize_legacy_args`] rewrites them into the
//! long forms clap understands before parsing.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

/// Two-letter flags of the Go exoip, rewritten to their long names.
const LEGACY_FLAGS: &[(&str, &str)] = &[
    ("-xi", "--xi"),
    ("-xk", "--xk"),
    ("-xs", "--xs"),
    ("-xe", "--xe"),
];

#[derive(Parser, Debug)]
#[command(
    name = "exoip",
    version,
    about = "Failover agent for cloud elastic IPs: heartbeats between peers, the cloud API to move the IP",
    long_about = None,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the simulated cloud (API v2 + metadata service) for tests and demos.
    Sim(exoip_providers::sim::cli::SimArgs),
    /// Three hosts in network namespaces, the simulated cloud, a kill and the takeover timeline (root).
    Demo(crate::lab::DemoArgs),
    /// Show what the running agent knows: states and why, priorities, API holders, peers, checks.
    Status(crate::status::StatusArgs),
    /// Hand the addresses over now and stay out of the election until `exoip resume`.
    Release(crate::status::ControlArgs),
    /// Undo `release` or `promote`.
    Resume(crate::status::ControlArgs),
    /// Take the addresses now (priority value 1) until `exoip resume`.
    Promote(crate::status::ControlArgs),
    /// Preflight: check configuration, credentials, the IP, the alias and every peer (same flags as -W).
    Check(Box<AgentArgs>),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(crate::docgen::CompletionsArgs),
    /// Test-bed helpers used by the demo, the end-to-end tests and the benchmarks.
    #[command(hide = true)]
    Lab {
        #[command(subcommand)]
        command: crate::lab::LabCommand,
    },
}

/// The agent's flags. Every flag also reads its ifupdown-style variable; a flag given on the
/// command line wins over the environment.
#[derive(Args, Debug, Default, Clone)]
pub struct AgentArgs {
    /// Watchdog mode: heartbeat with peers and keep the IP on the best healthy node.
    #[arg(short = 'W', long = "watchdog", help_heading = "Modes")]
    pub watchdog: bool,
    /// Associate the IP with this instance and exit.
    #[arg(short = 'A', long = "associate", help_heading = "Modes")]
    pub associate: bool,
    /// Dissociate the IP from this instance and exit.
    #[arg(short = 'D', long = "dissociate", help_heading = "Modes")]
    pub dissociate: bool,
    /// Validate the configuration, print it (secrets redacted) and exit.
    #[arg(short = 'n', long = "validate", help_heading = "Modes")]
    pub validate: bool,
    /// Read the settings from this TOML file (see exoip.toml(5)); flags and the environment
    /// win over it.
    #[arg(
        short = 'c',
        long = "config",
        env = "EXOIP_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<String>,

    /// The elastic IP to watch (repeatable for several IPs). Legacy: -xi.
    #[arg(
        long = "xi",
        visible_alias = "address",
        env = "IF_ADDRESS",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub addresses: Vec<String>,
    /// Priority, 1..=255; the lowest value wins.
    #[arg(
        short = 'P',
        long = "priority",
        env = "IF_HOST_PRIORITY",
        value_name = "N"
    )]
    pub priority: Option<String>,
    /// Heartbeat bind address: `:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[arg(short = 'l', long = "bind", env = "IF_BIND_TO", value_name = "ADDR")]
    pub bind: Option<String>,
    /// Peers, `IP` or `IP:PORT` (repeatable, comma separated).
    #[arg(
        short = 'p',
        long = "peer",
        env = "IF_EXOSCALE_PEERS",
        value_delimiter = ',',
        value_name = "PEER"
    )]
    pub peers: Vec<String>,
    /// Discover peers as the running members of this security group (name or id).
    #[arg(
        short = 'G',
        long = "peer-group",
        env = "IF_EXOSCALE_PEER_GROUP",
        value_name = "GROUP"
    )]
    pub peer_group: Option<String>,
    /// Own instance id; default: from the metadata service.
    #[arg(
        short = 'i',
        long = "instance-id",
        env = "IF_EXOSCALE_INSTANCE_ID",
        value_name = "ID"
    )]
    pub instance_id: Option<String>,
    /// A peer is dead after this many intervals without a valid heartbeat (>= 2).
    #[arg(
        short = 'r',
        long = "dead-ratio",
        env = "IF_DEAD_RATIO",
        value_name = "N"
    )]
    pub dead_ratio: Option<String>,
    /// Heartbeat interval: seconds (`1`, `0.1`) or with a unit (`100ms`, `2s`).
    #[arg(
        short = 't',
        long = "interval",
        env = "IF_ADVERTISEMENT_INTERVAL",
        value_name = "DURATION"
    )]
    pub interval: Option<String>,

    /// The cloud: exoscale (default), openstack or azure.
    #[arg(
        long = "provider",
        env = "EXOIP_PROVIDER",
        value_name = "CLOUD",
        value_parser = ["exoscale", "openstack", "azure"],
        help_heading = "Cloud API"
    )]
    pub provider: Option<String>,
    /// API key. Legacy: -xk. Also read from EXOSCALE_API_KEY.
    #[arg(
        long = "xk",
        visible_alias = "api-key",
        env = "IF_EXOSCALE_API_KEY",
        value_name = "KEY",
        help_heading = "Cloud API"
    )]
    pub api_key: Option<String>,
    /// API secret (visible in `ps`: prefer --api-secret-file or the environment). Legacy: -xs.
    /// Also read from EXOSCALE_API_SECRET.
    #[arg(
        long = "xs",
        visible_alias = "api-secret",
        env = "IF_EXOSCALE_API_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Cloud API"
    )]
    pub api_secret: Option<String>,
    /// Read the API secret from this file (first line).
    #[arg(
        long = "api-secret-file",
        value_name = "PATH",
        help_heading = "Cloud API"
    )]
    pub api_secret_file: Option<String>,
    /// Read the API secret from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, from
    /// LoadCredential=NAME:PATH).
    #[arg(
        long = "api-secret-credential",
        value_name = "NAME",
        help_heading = "Cloud API"
    )]
    pub api_secret_credential: Option<String>,
    /// API v2 endpoint. Default: https://api-{zone}.exoscale.com/v2. Legacy: -xe.
    #[arg(
        long = "xe",
        visible_alias = "api-endpoint",
        env = "IF_EXOSCALE_API_ENDPOINT",
        value_name = "URL",
        help_heading = "Cloud API"
    )]
    pub api_endpoint: Option<String>,
    /// Zone of the instances and the elastic IP.
    #[arg(
        long = "zone",
        env = "EXOSCALE_ZONE",
        value_name = "ZONE",
        help_heading = "Cloud API"
    )]
    pub zone: Option<String>,
    /// Base URL of the instance metadata service.
    #[arg(
        long = "metadata-url",
        env = "EXOIP_METADATA_URL",
        value_name = "URL",
        help_heading = "Cloud API"
    )]
    pub metadata_url: Option<String>,
    /// Per-request timeout of API calls.
    #[arg(
        long = "api-timeout",
        value_name = "DURATION",
        help_heading = "Cloud API"
    )]
    pub api_timeout: Option<String>,

    /// OpenStack: the cloud of clouds.yaml to use (otherwise the OS_* variables of an openrc).
    #[arg(
        long = "os-cloud",
        env = "OS_CLOUD",
        value_name = "NAME",
        help_heading = "OpenStack"
    )]
    pub os_cloud: Option<String>,
    /// OpenStack: floating-ip (move a floating IP between ports) or vip (a private VIP in the
    /// ports' allowed address pairs, held on the NIC and announced with gratuitous ARP).
    #[arg(
        long = "openstack-mode",
        env = "EXOIP_OPENSTACK_MODE",
        value_name = "MODE",
        value_parser = ["floating-ip", "vip"],
        help_heading = "OpenStack"
    )]
    pub openstack_mode: Option<String>,
    /// OpenStack: own Neutron port id, when the server has several ports.
    #[arg(
        long = "port",
        env = "EXOIP_OPENSTACK_PORT",
        value_name = "PORT_ID",
        help_heading = "OpenStack"
    )]
    pub os_port: Option<String>,
    /// OpenStack vip mode: the port holding the VIP as a fixed IP (and its floating IP, if any).
    #[arg(
        long = "vip-port",
        env = "EXOIP_OPENSTACK_VIP_PORT",
        value_name = "PORT_ID",
        help_heading = "OpenStack"
    )]
    pub vip_port: Option<String>,

    /// Azure: public-ip (move a public IP between NICs), secondary-ip (move a secondary private
    /// ipConfiguration, held on the NIC and announced with gratuitous ARP) or lb-probe (a load
    /// balancer with Floating IP: only the holder answers its health probe; no ARM call).
    #[arg(
        long = "azure-mode",
        env = "EXOIP_AZURE_MODE",
        value_name = "MODE",
        value_parser = ["public-ip", "secondary-ip", "lb-probe"],
        help_heading = "Azure"
    )]
    pub azure_mode: Option<String>,
    /// Azure: subscription id. Default: AZURE_SUBSCRIPTION_ID, else the instance metadata.
    #[arg(long = "azure-subscription", value_name = "ID", help_heading = "Azure")]
    pub azure_subscription: Option<String>,
    /// Azure: resource group of the NICs and public IPs. Default: the VM's, from the instance
    /// metadata.
    #[arg(
        long = "azure-resource-group",
        value_name = "NAME",
        help_heading = "Azure"
    )]
    pub azure_resource_group: Option<String>,
    /// Azure: Microsoft.Network api-version (default: a long-deployed one, 2024-05-01).
    #[arg(
        long = "azure-api-version",
        value_name = "VERSION",
        help_heading = "Azure"
    )]
    pub azure_api_version: Option<String>,
    /// Azure: read the service principal's client secret from this file (first line), with
    /// AZURE_TENANT_ID and AZURE_CLIENT_ID from the environment.
    #[arg(
        long = "azure-client-secret-file",
        value_name = "PATH",
        help_heading = "Azure"
    )]
    pub azure_client_secret_file: Option<String>,
    /// Azure: client id of the service principal, or of the user-assigned managed identity to
    /// use (instead of AZURE_CLIENT_ID).
    #[arg(long = "azure-client-id", value_name = "ID", help_heading = "Azure")]
    pub azure_client_id: Option<String>,
    /// Azure: the Resource Manager endpoint (other clouds, emulators). Default: per
    /// ARM_ENVIRONMENT, https://management.azure.com.
    #[arg(
        long = "arm-endpoint",
        env = "EXOIP_AZURE_ARM_ENDPOINT",
        value_name = "URL",
        help_heading = "Azure"
    )]
    pub arm_endpoint: Option<String>,
    /// Azure public-ip mode: the public IP resource's name. Default: found by its address.
    #[arg(long = "azure-public-ip", value_name = "NAME", help_heading = "Azure")]
    pub azure_public_ip: Option<String>,
    /// Azure: the ipConfiguration to put the public IP on (default: the primary one), or in
    /// secondary-ip mode the name of the secondary ipConfiguration (default: as found).
    #[arg(long = "azure-ip-config", value_name = "NAME", help_heading = "Azure")]
    pub azure_ip_config: Option<String>,
    /// Azure: peers are the VMs whose NICs carry this tag (instead of -p or -G, where -G names
    /// a network security group).
    #[arg(
        long = "azure-peer-tag",
        value_name = "KEY=VALUE",
        help_heading = "Azure"
    )]
    pub azure_peer_tag: Option<String>,
    /// Azure lb-probe mode: the TCP port of the load balancer's health probe, answered only
    /// while this node holds the address.
    #[arg(long = "probe-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), help_heading = "Azure")]
    pub probe_port: Option<u16>,
    /// Azure lb-probe mode: answer HTTP probes: 200 on GET of this path, 404 on others.
    /// Default: a TCP probe (accept and close).
    #[arg(long = "probe-path", value_name = "PATH", help_heading = "Azure")]
    pub probe_path: Option<String>,

    /// Network interface that holds the address in NIC modes (OpenStack vip, Azure
    /// secondary-ip). Default: the interface of the default route.
    #[arg(
        long = "interface",
        env = "EXOIP_INTERFACE",
        value_name = "DEV",
        help_heading = "Behaviour"
    )]
    pub interface: Option<String>,

    /// Heartbeat key file (at least 16 bytes). Default on Exoscale: derived from the API
    /// secret, so peers sharing an API key authenticate each other with no extra configuration.
    /// Required on OpenStack and Azure (or EXOIP_AUTH_KEY).
    #[arg(
        long = "auth-key-file",
        value_name = "PATH",
        help_heading = "Heartbeats"
    )]
    pub auth_key_file: Option<String>,
    /// Read the heartbeat key from systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME).
    #[arg(
        long = "auth-key-credential",
        value_name = "NAME",
        help_heading = "Heartbeats"
    )]
    pub auth_key_credential: Option<String>,
    /// Heartbeat group name: datagrams of other groups are ignored.
    #[arg(
        long = "group",
        env = "EXOIP_GROUP",
        value_name = "NAME",
        help_heading = "Heartbeats"
    )]
    pub group: Option<String>,
    /// Reject heartbeats whose timestamp is further than this from the local clock (0: off).
    #[arg(
        long = "max-clock-skew",
        value_name = "DURATION",
        help_heading = "Heartbeats"
    )]
    pub max_clock_skew: Option<String>,
    /// Also speak the old Go exoip's heartbeat (unauthenticated; IPv4, Exoscale), so a cluster
    /// can be upgraded node by node. Remove it once no old agent is left.
    #[arg(long = "legacy-protocol", help_heading = "Heartbeats")]
    pub legacy_protocol: bool,
    /// With --legacy-protocol: the UUID old peers pass back to the API to fence this node
    /// (theirs is the default NIC's id). Default: the instance id.
    #[arg(
        long = "legacy-nic-id",
        value_name = "UUID",
        help_heading = "Heartbeats"
    )]
    pub legacy_nic_id: Option<String>,

    /// Compare the API, our belief and the alias this often.
    #[arg(
        long = "reconcile-interval",
        value_name = "DURATION",
        help_heading = "Behaviour"
    )]
    pub reconcile_interval: Option<String>,
    /// Self-fencing: with peers known but none heard and no API answer for this long, drop the
    /// address locally (default: 3 dead periods; 0: never).
    #[arg(
        long = "isolation-release-after",
        value_name = "DURATION",
        help_heading = "Behaviour"
    )]
    pub isolation_release_after: Option<String>,
    /// Re-read the peer group this often.
    #[arg(
        long = "peer-refresh",
        value_name = "DURATION",
        help_heading = "Behaviour"
    )]
    pub peer_refresh: Option<String>,
    /// Do not configure the address locally (it is configured elsewhere; Azure lb-probe: leave
    /// the frontend IP on lo to the system configuration, still answer the probe).
    #[arg(
        long = "no-alias",
        help_heading = "Behaviour",
        conflicts_with = "alias"
    )]
    pub no_alias: bool,
    /// Also put the address on a loopback alias where the cloud NATs it and none is needed
    /// (OpenStack floating-ip, Azure public-ip).
    #[arg(long = "alias", help_heading = "Behaviour")]
    pub alias: bool,
    /// With -A/-D: say what would be done, change nothing.
    #[arg(long = "dry-run", help_heading = "Behaviour")]
    pub dry_run: bool,

    /// Track a command: exit status 0 is healthy (run without a shell; repeatable).
    #[arg(
        long = "track-script",
        value_name = "CMD",
        help_heading = "Health checks"
    )]
    pub track_script: Vec<String>,
    /// Track a process by name, like `killall -0 NAME` (repeatable).
    #[arg(
        long = "track-process",
        value_name = "NAME",
        help_heading = "Health checks"
    )]
    pub track_process: Vec<String>,
    /// Track a TCP port: healthy when a connection succeeds (repeatable).
    #[arg(
        long = "track-tcp",
        value_name = "HOST:PORT",
        help_heading = "Health checks"
    )]
    pub track_tcp: Vec<String>,
    /// Track an HTTP URL: healthy on a 2xx answer (repeatable).
    #[arg(
        long = "track-http",
        value_name = "URL",
        help_heading = "Health checks"
    )]
    pub track_http: Vec<String>,
    /// How often each check runs.
    #[arg(
        long = "track-interval",
        value_name = "DURATION",
        help_heading = "Health checks"
    )]
    pub track_interval: Option<String>,
    /// How long a check may take before it counts as failed.
    #[arg(
        long = "track-timeout",
        value_name = "DURATION",
        help_heading = "Health checks"
    )]
    pub track_timeout: Option<String>,
    /// Consecutive failures before a check is down.
    #[arg(long = "track-fall", value_name = "N", help_heading = "Health checks")]
    pub track_fall: Option<u32>,
    /// Consecutive successes before a check is up again.
    #[arg(long = "track-rise", value_name = "N", help_heading = "Health checks")]
    pub track_rise: Option<u32>,
    /// A failing check adds N to the priority value instead of putting the node in FAULT.
    #[arg(long = "track-weight", value_name = "N", value_parser = clap::value_parser!(u8).range(1..), help_heading = "Health checks")]
    pub track_weight: Option<u8>,

    /// Run on every state change and re-assert (environment: EXOIP_STATE, EXOIP_ADDRESS, ...).
    #[arg(long = "notify", value_name = "CMD", help_heading = "Hooks")]
    pub notify: Option<String>,
    /// Run on becoming master.
    #[arg(long = "notify-master", value_name = "CMD", help_heading = "Hooks")]
    pub notify_master: Option<String>,
    /// Run on becoming backup.
    #[arg(long = "notify-backup", value_name = "CMD", help_heading = "Hooks")]
    pub notify_backup: Option<String>,
    /// Run on entering FAULT.
    #[arg(long = "notify-fault", value_name = "CMD", help_heading = "Hooks")]
    pub notify_fault: Option<String>,
    /// Run hooks through /bin/sh -c (default: split into words, no shell).
    #[arg(long = "hook-shell", help_heading = "Hooks")]
    pub hook_shell: bool,
    /// Kill a hook that runs longer than this.
    #[arg(long = "hook-timeout", value_name = "DURATION", help_heading = "Hooks")]
    pub hook_timeout: Option<String>,

    /// Where state that must survive a restart lives (the heartbeat incarnation).
    #[arg(
        long = "state-dir",
        env = "EXOIP_STATE_DIR",
        value_name = "DIR",
        help_heading = "Status"
    )]
    pub state_dir: Option<String>,
    /// Status and control socket ("none" to disable).
    #[arg(
        long = "status-socket",
        env = "EXOIP_STATUS_SOCKET",
        value_name = "PATH",
        help_heading = "Status"
    )]
    pub status_socket: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9712); off by default.
    #[arg(
        long = "metrics-listen",
        value_name = "ADDR:PORT",
        help_heading = "Status"
    )]
    pub metrics_listen: Option<String>,

    /// Log to standard output (the default; kept for the Go exoip's command lines).
    #[arg(short = 'O', long = "log-stdout", help_heading = "Logging")]
    pub log_stdout: bool,
    /// Verbose logging.
    #[arg(short = 'v', long = "verbose", help_heading = "Logging")]
    pub verbose: bool,
    /// Log format: text or json (journald is used when started by systemd).
    #[arg(long = "log-format", value_name = "FORMAT", value_parser = ["text", "json"], help_heading = "Logging")]
    pub log_format: Option<String>,

    /// Where the settings came from, and what the configuration file adds beyond flags
    /// (per-address priorities, secret references): filled in by
    /// [`crate::config_file::parse_args`], not by clap.
    #[arg(skip)]
    pub sources: crate::config_file::Sources,
}

/// Rewrites Go-`flag` style arguments (`-xi 1.2.3.4`, `-xi=1.2.3.4`, `-P=5`) into clap's forms.
/// Stops at `--` and never touches the values of other flags.
pub fn normalize_legacy_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        let s = match arg.to_str() {
            Some(s) if !passthrough => s,
            _ => {
                out.push(arg);
                continue;
            }
        };
        if s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let (name, value) = match s.split_once('=') {
            Some((n, v)) if n.starts_with('-') && !n.starts_with("--") => (n, Some(v)),
            _ => (s, None),
        };
        if let Some((_, long)) = LEGACY_FLAGS.iter().find(|(short, _)| *short == name) {
            match value {
                Some(v) => out.push(OsString::from(format!("{long}={v}"))),
                None => out.push(OsString::from(*long)),
            }
        } else if let (Some(v), true) = (value, name.len() == 2) {
            // `-P=5` (Go style) → `-P` `5`.
            out.push(OsString::from(name));
            out.push(OsString::from(v));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_legacy_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn legacy_two_letter_flags_become_long() {
        assert_eq!(
            norm(&[
                "exoip",
                "-W",
                "-xi",
                "203.0.113.10",
                "-xk=EXOabc",
                "-P=5",
                "-xe",
                "http://x/v2"
            ]),
            [
                "exoip",
                "-W",
                "--xi",
                "203.0.113.10",
                "--xk=EXOabc",
                "-P",
                "5",
                "--xe",
                "http://x/v2"
            ]
        );
    }

    #[test]
    fn values_and_passthrough_are_untouched() {
        assert_eq!(norm(&["exoip", "--", "-xi"]), ["exoip", "--", "-xi"]);
        assert_eq!(
            norm(&["exoip", "--peer=1.2.3.4"]),
            ["exoip", "--peer=1.2.3.4"]
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

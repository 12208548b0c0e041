//! Flags and environment turned into one validated [`Config`]; secrets read from files or the
//! environment, never echoed.
//!
//! Every error is one line that names the offending flag, so `exoip` fails before it starts
//! anything.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
pub use exoip_providers::azure::{AzureCredentials, AzureMode, AzureSettings};
pub use exoip_providers::openstack::{OpenStackMode, OpenStackSettings};
use exoip_providers::{InstanceId, Secret};

use crate::cli::AgentArgs;
use crate::election::WatchedIp;
use crate::wire::{AuthKey, DEFAULT_PORT};

pub const DEFAULT_PRIORITY: u8 = 10;
pub const DEFAULT_DEAD_RATIO: u32 = 3;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(30);
pub const DEFAULT_PEER_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_ZONE: &str = "ch-gva-2";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub const DEFAULT_GROUP: &str = "exoip";
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_STATE_DIR: &str = "/var/lib/exoip";

/// A configuration error: one line, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Watchdog,
    Associate,
    Dissociate,
}

/// Where heartbeats go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    Static(Vec<SocketAddr>),
    /// Members of this security group (name or id), refreshed periodically.
    Group(String),
    /// `-A`/`-D` need no peers.
    None,
}

/// Which cloud moves the address, with its own options.
#[derive(Clone, Debug)]
pub enum Cloud {
    /// API key and secret, endpoint and zone are the `api_*`/`zone` fields of [`Config`].
    Exoscale,
    /// Credentials resolved from the `OS_*` variables or clouds.yaml, and the flags.
    OpenStack(Box<OpenStackSettings>),
    /// A service principal or the managed identity (the `AZURE_*` variables), and the flags.
    Azure(Box<AzureSettings>),
}

impl Cloud {
    pub fn name(&self) -> &'static str {
        match self {
            Cloud::Exoscale => "exoscale",
            Cloud::OpenStack(_) => "openstack",
            Cloud::Azure(_) => "azure",
        }
    }
}

/// How this host holds an address it won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// A /32 or /128 on the loopback: the cloud routes the address to the VM unchanged
    /// (Exoscale elastic IPs).
    Loopback,
    /// On the NIC, announced with gratuitous ARP / unsolicited neighbour advertisement
    /// (OpenStack vip). `None`: the interface of the default route.
    Nic { device: Option<String> },
    /// Nothing local: the cloud NATs the address to the VM's own IP (OpenStack floating IPs,
    /// Azure public IPs), or `--no-alias`.
    Nothing,
    /// A load balancer's health probe (Azure lb-probe): the holder answers on `port` (HTTP 200
    /// on GET `path` if given, else a bare TCP accept), every other node refuses it, so the load
    /// balancer sends the traffic to the holder. Every node keeps the frontend IP on `lo`
    /// (`loopback`; false with `--no-alias`: the system configuration puts it there).
    Probe {
        port: u16,
        path: Option<String>,
        loopback: bool,
    },
}

/// Where the heartbeat key came from (for `-n` output; never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthKeySource {
    File(String),
    Environment,
    DerivedFromApiSecret,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub cloud: Cloud,
    pub holding: Holding,
    pub claim: crate::election::ClaimMode,
    pub validate_only: bool,
    pub addresses: Vec<WatchedIp>,
    pub priority: u8,
    /// `None` IP: all addresses (dual stack when the host has IPv6).
    pub bind_ip: Option<IpAddr>,
    pub port: u16,
    pub peers: Peers,
    pub instance_id: Option<String>,
    pub dead_ratio: u32,
    pub interval: Duration,
    pub api_key: String,
    pub api_secret: Secret,
    pub api_endpoint: String,
    pub zone: String,
    pub metadata_url: String,
    pub api_timeout: Duration,
    pub auth_key: AuthKey,
    pub auth_key_source: AuthKeySource,
    pub group: String,
    pub max_clock_skew: Option<Duration>,
    /// `--legacy-protocol`: also speak the old Go exoip's heartbeat.
    pub legacy_protocol: bool,
    /// `--legacy-nic-id`, parsed (None: the instance id, when it is a UUID).
    pub legacy_nic_id: Option<[u8; 16]>,
    pub reconcile_interval: Duration,
    /// `--isolation-release-after` (None: never self-fence).
    pub isolation_release_after: Option<Duration>,
    pub peer_refresh: Duration,
    /// `-A`/`-D`: report what would be done, change nothing.
    pub dry_run: bool,
    /// State kept across restarts (the heartbeat incarnation).
    pub state_dir: std::path::PathBuf,
    /// The status and control socket (`None`: disabled).
    pub status_socket: Option<std::path::PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// `--log-format`: None picks journald under systemd, text otherwise.
    pub log_format: Option<LogFormat>,
    pub verbose: bool,
    /// Tracked health checks (`--track-*`).
    pub checks: Vec<crate::health::CheckSpec>,
    /// Notify hooks (`--notify*`).
    pub hooks: crate::hooks::HookConfig,
    /// Things worth telling the operator once logging is up (never containing secrets).
    pub warnings: Vec<String>,
    /// Where the settings and the secrets came from (`-n` prints it; never a secret).
    pub sources: crate::config_file::Sources,
}

impl Config {
    pub fn dead_period(&self) -> Duration {
        self.interval * self.dead_ratio
    }
}

/// Reads an environment variable, treating empty as unset (ifupdown passes empty options).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A flag's value, trimmed, with empty meaning unset (ifupdown passes empty options).
fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `1`, `0.1` (seconds, as the Go exoip took them) or `100ms`, `2s`, `1m`; at most a day.
pub fn parse_duration_text(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid duration '{s}' (use e.g. 1, 0.5, 100ms, 2s)");
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        Ok(_) => Err(bad()),
        Err(_) => humantime::parse_duration(s).map_err(|_| bad()),
    }
}

/// [`parse_duration_text`] for a flag: the error names the flag.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration_text(s).map_err(|e| ConfigError(format!("{flag}: {e}")))
}

fn parse_positive_duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(flag, s)?;
    if d.is_zero() {
        return err(format!("{flag}: must be greater than zero"));
    }
    Ok(d)
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address.
pub fn parse_peer(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return err(format!("-p/--peer: invalid port in '{s}'"));
        }
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    err(format!(
        "-p/--peer: '{s}' is not IP, IP:PORT or [IPv6]:PORT"
    ))
}

/// `:PORT` (all addresses), `IP`, `IP:PORT`, `[IPv6]:PORT`.
pub fn parse_bind(s: &str) -> Result<(Option<IpAddr>, u16), ConfigError> {
    let s = s.trim();
    let bad = || {
        ConfigError(format!(
            "-l/--bind: '{s}' is not :PORT, IP, IP:PORT or [IPv6]:PORT"
        ))
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return if port == 0 {
            Err(bad())
        } else {
            Ok((None, port))
        };
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad());
        }
        let ip = sa.ip();
        return Ok(((!ip.is_unspecified()).then_some(ip), sa.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(((!ip.is_unspecified()).then_some(ip), DEFAULT_PORT));
    }
    Err(bad())
}

/// Reads a secret from a file: refuses files others can read or write, takes the first line.
pub fn read_secret_file(flag: &str, path: &str) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError(format!("{flag}: cannot read {path}: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o006 != 0 {
        return err(format!(
            "{flag}: {path} is accessible by other users (mode {:o}); run: chmod o-rwx {path}",
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{flag}: cannot read {path}: {e}")))?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() {
        return err(format!("{flag}: {path} is empty"));
    }
    Ok(first)
}

/// The OpenStack credentials (openrc variables or clouds.yaml) and the OpenStack flags.
fn openstack_settings(args: &AgentArgs) -> Result<OpenStackSettings, ConfigError> {
    // The configuration file may refer to the secret variables (os-password-file, ...): the
    // variable itself wins.
    let mut from_file = Vec::new();
    for name in ["OS_PASSWORD", "OS_APPLICATION_CREDENTIAL_SECRET"] {
        if let Some(secret) = args.sources.read_secret_variable(name)? {
            from_file.push((name, secret));
        }
    }
    let lookup = |name: &str| {
        env(name).or_else(|| {
            from_file
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
    };
    let mut settings = OpenStackSettings::from_env(
        &lookup,
        args.os_cloud.as_deref(),
        &OpenStackSettings::default_search_dirs(),
    )
    .map_err(|e| match e {
        exoip_providers::Error::Invalid(m) => ConfigError(m),
        other => ConfigError(other.to_string()),
    })?;
    settings.mode = match args.openstack_mode.as_deref() {
        None | Some("floating-ip") => OpenStackMode::FloatingIp,
        Some("vip") => OpenStackMode::Vip,
        Some(other) => {
            return err(format!(
                "--openstack-mode: '{other}' is not floating-ip or vip"
            ))
        }
    };
    settings.port = non_empty(&args.os_port);
    settings.vip_port = non_empty(&args.vip_port);
    Ok(settings)
}

/// The Azure credentials (the `AZURE_*`/`ARM_*` variables, or `--azure-client-secret-file`)
/// and the Azure flags. The VM name, metadata URL and timeouts are filled in by the caller.
fn azure_settings(args: &AgentArgs) -> Result<AzureSettings, ConfigError> {
    // A flag stands in for its variable, so that the provider's rules for choosing the
    // credentials (service principal or managed identity) see one consistent environment.
    let overrides: Vec<(&str, String)> = [
        ("AZURE_CLIENT_ID", non_empty(&args.azure_client_id)),
        ("AZURE_SUBSCRIPTION_ID", non_empty(&args.azure_subscription)),
        ("EXOIP_AZURE_ARM_ENDPOINT", non_empty(&args.arm_endpoint)),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    let lookup = |name: &str| {
        overrides
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let provider_err = |e: exoip_providers::Error| match e {
        exoip_providers::Error::Invalid(m) => ConfigError(m),
        other => ConfigError(other.to_string()),
    };
    if let Some(url) = non_empty(&args.arm_endpoint) {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return err(format!("--arm-endpoint: '{url}' is not an http(s) URL"));
        }
    }
    let mut settings = match non_empty(&args.azure_client_secret_file) {
        Some(path) => {
            let secret = read_secret_file("--azure-client-secret-file", &path)?;
            AzureSettings::from_env_with_secret(
                &lookup,
                Secret::new(secret),
                &format!("--azure-client-secret-file {path}"),
            )
        }
        // The configuration file's azure-client-secret-{file,credential,env}, unless a
        // variable gives the secret.
        None => match args.sources.file_secret("azure-client-secret") {
            Some(reference) => AzureSettings::from_env_with_secret(
                &lookup,
                Secret::new(reference.read()?),
                &reference.describe(),
            ),
            None => AzureSettings::from_env(&lookup),
        },
    }
    .map_err(provider_err)?;
    settings.mode = match args.azure_mode.as_deref() {
        None => AzureMode::PublicIp,
        Some(m) => m.parse().map_err(|_| {
            ConfigError(format!(
                "--azure-mode: '{m}' is not public-ip, secondary-ip or lb-probe"
            ))
        })?,
    };
    settings.resource_group = non_empty(&args.azure_resource_group);
    if let Some(v) = non_empty(&args.azure_api_version) {
        settings.api_version = v;
    }
    settings.public_ip_name = non_empty(&args.azure_public_ip);
    settings.ip_config = non_empty(&args.azure_ip_config);
    settings.peer_tag = match non_empty(&args.azure_peer_tag) {
        Some(tag) => Some(
            exoip_providers::azure::parse_peer_tag(&tag)
                .map_err(|e| ConfigError(format!("--azure-peer-tag: {}", provider_err(e))))?,
        ),
        None => None,
    };
    // Options of one mode given in another are mistakes worth stopping for: the user expects
    // them to do something.
    let mode = settings.mode;
    for (set, flag, wanted) in [
        (
            args.azure_public_ip.is_some(),
            "--azure-public-ip",
            &[AzureMode::PublicIp][..],
        ),
        (
            args.azure_ip_config.is_some(),
            "--azure-ip-config",
            &[AzureMode::PublicIp, AzureMode::SecondaryIp][..],
        ),
        (
            args.probe_port.is_some(),
            "--probe-port",
            &[AzureMode::LbProbe][..],
        ),
        (
            args.probe_path.is_some(),
            "--probe-path",
            &[AzureMode::LbProbe][..],
        ),
    ] {
        if set && !wanted.contains(&mode) {
            let modes: Vec<&str> = wanted.iter().map(|m| m.as_str()).collect();
            return err(format!(
                "{flag}: only with --azure-mode {}, not {mode}",
                modes.join(" or ")
            ));
        }
    }
    if mode == AzureMode::LbProbe && args.probe_port.is_none() {
        return err("--probe-port: required with --azure-mode lb-probe (the port of the load balancer's health probe, e.g. 61000)");
    }
    if let Some(path) = &args.probe_path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return err(format!(
                "--probe-path: '{path}' is not an absolute URL path like /health"
            ));
        }
    }
    Ok(settings)
}

/// Whether the user pointed `-xe` at the retired API v1 (the Go exoip's default).
fn is_legacy_v1_endpoint(url: &str) -> bool {
    let u = url.trim_end_matches('/');
    u.ends_with("/compute") || u == "https://api.exoscale.com" || u == "https://api.exoscale.ch"
}

impl Config {
    /// Builds the configuration from parsed flags, their sources, and the environment (the
    /// configuration file is merged into the flags: [`crate::config_file::parse_args`]). An
    /// error about a setting of the file names the file's line.
    pub fn from_args(args: &AgentArgs, matches: &ArgMatches) -> Result<Config, ConfigError> {
        Config::from_merged_args(args, matches).map_err(|e| args.sources.annotate(e))
    }

    fn from_merged_args(args: &AgentArgs, matches: &ArgMatches) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let mut sources = args.sources.clone();

        let modes: Vec<(&str, Mode)> = [
            (args.watchdog, "-W/--watchdog", Mode::Watchdog),
            (args.associate, "-A/--associate", Mode::Associate),
            (args.dissociate, "-D/--dissociate", Mode::Dissociate),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, name, mode)| (name, mode))
        .collect();
        let mode = match modes.as_slice() {
            [(_, m)] => *m,
            [] if args.validate => Mode::Watchdog,
            [] => return err("no mode given: use one of -W (watchdog), -A (associate and exit), -D (dissociate and exit)"),
            [(a, _), (b, _), ..] => return err(format!("{a} and {b} are exclusive: give exactly one mode")),
        };

        let priority = match &args.priority {
            None => DEFAULT_PRIORITY,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(v @ 1..=255) => v as u8,
                _ => {
                    return err(format!(
                        "-P/--priority: must be an integer from 1 to 255, got '{p}'"
                    ))
                }
            },
        };

        let mut addresses = Vec::new();
        for a in args.addresses.iter().flat_map(|a| a.split_whitespace()) {
            // ifupdown stanzas may carry `address 203.0.113.10/32`; accept a host prefix.
            let bare = a
                .strip_suffix("/32")
                .or_else(|| a.strip_suffix("/128"))
                .unwrap_or(a);
            let ip: IpAddr = bare
                .parse()
                .map_err(|_| ConfigError(format!("-xi/--address: '{a}' is not an IP address")))?;
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                return err(format!("-xi/--address: {ip} cannot be an elastic IP"));
            }
            if addresses.iter().any(|w: &WatchedIp| w.ip == ip) {
                return err(format!("-xi/--address: {ip} is given twice"));
            }
            // The file's `[[address]]` tables may give an address its own priority.
            let priority = args.sources.address_priority(a).unwrap_or(priority);
            addresses.push(WatchedIp { ip, priority });
        }
        if addresses.is_empty() {
            return err("-xi/--address: no elastic IP given (or set IF_ADDRESS)");
        }

        let (bind_ip, port) = parse_bind(args.bind.as_deref().unwrap_or(":12345"))?;

        let dead_ratio = match &args.dead_ratio {
            None => DEFAULT_DEAD_RATIO,
            Some(r) => match r.trim().parse::<u32>() {
                Ok(v @ 2..=100) => v,
                _ => {
                    return err(format!(
                        "-r/--dead-ratio: must be an integer from 2 to 100, got '{r}'"
                    ))
                }
            },
        };
        let interval = match &args.interval {
            None => DEFAULT_INTERVAL,
            Some(t) => {
                let d = parse_positive_duration("-t/--interval", t)?;
                if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
                    return err(format!(
                        "-t/--interval: must be between 10ms and 60s, got '{t}'"
                    ));
                }
                d
            }
        };

        let peers = if !args.peers.is_empty() && args.peer_group.is_some() {
            return err("-p/--peer and -G/--peer-group are exclusive: give static peers or a security group");
        } else if let Some(tag) = non_empty(&args.azure_peer_tag) {
            if !args.peers.is_empty() || args.peer_group.is_some() {
                return err("--azure-peer-tag: exclusive with -p/--peer and -G/--peer-group: give one way to find the peers");
            }
            // Listed like a group, by the provider, which selects the NICs by the tag.
            Peers::Group(tag)
        } else if let Some(g) = &args.peer_group {
            if g.trim().is_empty() {
                return err("-G/--peer-group: empty group name");
            }
            Peers::Group(g.trim().to_string())
        } else {
            let mut list = Vec::new();
            for p in args.peers.iter().flat_map(|p| p.split_whitespace()) {
                let sa = parse_peer(p)?;
                if !list.contains(&sa) {
                    list.push(sa);
                }
            }
            if list.is_empty() {
                if mode == Mode::Watchdog {
                    return err("-p/--peer or -G/--peer-group: watchdog mode needs peers (a list or a security group)");
                }
                Peers::None
            } else {
                Peers::Static(list)
            }
        };

        // Before any cloud's settings are read: an option of another cloud is the clearer
        // message than that cloud's missing credentials.
        if args.provider.as_deref().map(str::trim) != Some("azure") {
            for (set, flag) in [
                (args.azure_mode.is_some(), "--azure-mode"),
                (args.azure_subscription.is_some(), "--azure-subscription"),
                (
                    args.azure_resource_group.is_some(),
                    "--azure-resource-group",
                ),
                (args.azure_api_version.is_some(), "--azure-api-version"),
                (
                    args.azure_client_secret_file.is_some(),
                    "--azure-client-secret-file",
                ),
                (args.azure_client_id.is_some(), "--azure-client-id"),
                (
                    args.arm_endpoint.is_some()
                        && matches.value_source("arm_endpoint") == Some(ValueSource::CommandLine),
                    "--arm-endpoint",
                ),
                (args.azure_public_ip.is_some(), "--azure-public-ip"),
                (args.azure_ip_config.is_some(), "--azure-ip-config"),
                (args.azure_peer_tag.is_some(), "--azure-peer-tag"),
                (args.probe_port.is_some(), "--probe-port"),
                (args.probe_path.is_some(), "--probe-path"),
            ] {
                if set {
                    return err(format!("{flag}: an Azure option: add --provider azure"));
                }
            }
        }
        if args.provider.as_deref().map(str::trim) == Some("azure") {
            for (set, flag) in [
                (
                    args.os_cloud.is_some()
                        && matches.value_source("os_cloud") == Some(ValueSource::CommandLine),
                    "--os-cloud",
                ),
                (args.openstack_mode.is_some(), "--openstack-mode"),
                (args.os_port.is_some(), "--port"),
                (args.vip_port.is_some(), "--vip-port"),
            ] {
                if set {
                    return err(format!(
                        "{flag}: an OpenStack option, but --provider is azure"
                    ));
                }
            }
        }
        let cloud = match args.provider.as_deref().map(str::trim) {
            None | Some("exoscale") => Cloud::Exoscale,
            Some("openstack") => Cloud::OpenStack(Box::new(openstack_settings(args)?)),
            Some("azure") => Cloud::Azure(Box::new(azure_settings(args)?)),
            Some(other) => {
                return err(format!(
                    "--provider: '{other}' is not supported (exoscale, openstack, azure)"
                ))
            }
        };
        let exoscale = matches!(cloud, Cloud::Exoscale);
        let (holding, claim) = match &cloud {
            Cloud::OpenStack(o) if o.mode == OpenStackMode::Vip => (
                Holding::Nic {
                    device: non_empty(&args.interface),
                },
                crate::election::ClaimMode::Local,
            ),
            Cloud::OpenStack(_) if !args.alias => {
                (Holding::Nothing, crate::election::ClaimMode::Api)
            }
            // Azure moves the address by the API and the holder configures it on its NIC:
            // the API says who holds it (two PUTs; no allowed-list as on OpenStack).
            Cloud::Azure(a) if a.mode == AzureMode::SecondaryIp => (
                Holding::Nic {
                    device: non_empty(&args.interface),
                },
                crate::election::ClaimMode::Api,
            ),
            Cloud::Azure(a) if a.mode == AzureMode::LbProbe => (
                Holding::Probe {
                    port: args.probe_port.expect("required in lb-probe mode"),
                    path: non_empty(&args.probe_path),
                    loopback: !args.no_alias,
                },
                crate::election::ClaimMode::LocalOnly,
            ),
            // Azure NATs a public IP to the ipConfiguration's private address.
            Cloud::Azure(_) if !args.alias => (Holding::Nothing, crate::election::ClaimMode::Api),
            _ => (Holding::Loopback, crate::election::ClaimMode::Api),
        };
        // In lb-probe mode holding is answering the probe: --no-alias only leaves the frontend
        // IP on lo to the system configuration.
        let holding = if args.no_alias && !matches!(holding, Holding::Probe { .. }) {
            Holding::Nothing
        } else {
            holding
        };
        if matches!(holding, Holding::Probe { .. }) && mode != Mode::Watchdog {
            return err("-A/-D: nothing to do in Azure lb-probe mode: the address is held by answering the load balancer's health probe, which only the running agent (-W) does; no ARM call moves it");
        }
        if !exoscale {
            for (set, flag) in [
                (args.api_key.is_some(), "-xk/--api-key"),
                (args.api_secret.is_some(), "-xs/--api-secret"),
                (args.api_secret_file.is_some(), "--api-secret-file"),
                (
                    args.api_secret_credential.is_some(),
                    "--api-secret-credential",
                ),
                (args.api_endpoint.is_some(), "-xe/--api-endpoint"),
                (args.zone.is_some(), "--zone"),
            ] {
                if set {
                    return err(format!(
                        "{flag}: an Exoscale option, but --provider is {}",
                        cloud.name()
                    ));
                }
            }
            if let Some(reference) = args.sources.file_secret("api-secret") {
                return err(format!(
                    "{}: an Exoscale option, but --provider is {}",
                    reference.label(),
                    cloud.name()
                ));
            }
        }
        if matches!(cloud, Cloud::Exoscale) {
            for (set, flag) in [
                (
                    args.os_cloud.is_some()
                        && matches.value_source("os_cloud") == Some(ValueSource::CommandLine),
                    "--os-cloud",
                ),
                (args.openstack_mode.is_some(), "--openstack-mode"),
                (args.os_port.is_some(), "--port"),
                (args.vip_port.is_some(), "--vip-port"),
            ] {
                if set {
                    return err(format!(
                        "{flag}: an OpenStack option: add --provider openstack"
                    ));
                }
            }
        }

        let api_key = if !exoscale {
            String::new()
        } else {
            args.api_key
                .clone()
                .or_else(|| env("EXOSCALE_API_KEY"))
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    ConfigError("-xk/--api-key: missing API key (or set EXOSCALE_API_KEY)".into())
                })?
        };

        let secret_on_cli = matches.value_source("api_secret") == Some(ValueSource::CommandLine);
        let secret_flags: Vec<&str> = [
            (secret_on_cli, "-xs/--api-secret"),
            (args.api_secret_file.is_some(), "--api-secret-file"),
            (
                args.api_secret_credential.is_some(),
                "--api-secret-credential",
            ),
        ]
        .into_iter()
        .filter(|(given, _)| *given)
        .map(|(_, flag)| flag)
        .collect();
        if let [a, b, ..] = secret_flags[..] {
            return err(format!("{a} and {b} are exclusive"));
        }
        // Flags, then the environment, then the configuration file's reference.
        let api_secret = if !exoscale {
            String::new()
        } else if let Some(path) = &args.api_secret_file {
            sources.note_secret("api-secret", format!("file {path}"));
            read_secret_file("--api-secret-file", path)?
        } else if let Some(name) = &args.api_secret_credential {
            sources.note_secret("api-secret", format!("credential {name}"));
            crate::config_file::read_credential("--api-secret-credential", name)?
        } else if let Some((s, from)) = args
            .api_secret
            .clone()
            // An empty IF_EXOSCALE_API_SECRET (ifupdown) is unset.
            .filter(|s| secret_on_cli || !s.trim().is_empty())
            .map(|s| {
                let from = if secret_on_cli {
                    "the command line (-xs)"
                } else {
                    "IF_EXOSCALE_API_SECRET"
                };
                (s, from)
            })
            .or_else(|| env("EXOSCALE_API_SECRET").map(|s| (s, "EXOSCALE_API_SECRET")))
        {
            if secret_on_cli {
                warnings.push(
                    "the API secret was given with -xs on the command line, where any local user can read it \
                     (ps); prefer --api-secret-file or EXOSCALE_API_SECRET"
                        .to_string(),
                );
            }
            sources.note_secret("api-secret", from);
            s.trim().to_string()
        } else if let Some(reference) = args.sources.file_secret("api-secret") {
            sources.note_secret("api-secret", reference.describe());
            reference.read()?
        } else {
            return err("-xs/--api-secret: missing API secret (set EXOSCALE_API_SECRET, use --api-secret-file or --api-secret-credential, or api-secret-file in the configuration file)");
        };
        if exoscale && api_secret.is_empty() {
            return err("-xs/--api-secret: the API secret is empty");
        }

        let zone = args
            .zone
            .clone()
            .unwrap_or_else(|| DEFAULT_ZONE.to_string())
            .trim()
            .to_string();
        if zone.is_empty() || !zone.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return err(format!("--zone: invalid zone '{zone}'"));
        }
        let api_endpoint = match args.api_endpoint.as_deref().map(str::trim) {
            Some(url) if is_legacy_v1_endpoint(url) => {
                warnings.push(format!(
                    "-xe {url} is the retired API v1; using API v2 of zone {zone} instead"
                ));
                default_endpoint(&zone)
            }
            Some(url) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return err(format!("-xe/--api-endpoint: '{url}' is not an http(s) URL"));
                }
                url.trim_end_matches('/').to_string()
            }
            None => default_endpoint(&zone),
        };

        let metadata_url = args
            .metadata_url
            .clone()
            .unwrap_or_else(|| DEFAULT_METADATA_URL.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(metadata_url.starts_with("http://") || metadata_url.starts_with("https://")) {
            return err(format!(
                "--metadata-url: '{metadata_url}' is not an http(s) URL"
            ));
        }

        let short_key = |flag: &str| {
            ConfigError(format!(
                "{flag}: the heartbeat key must be at least 16 bytes"
            ))
        };
        if args.auth_key_file.is_some() && args.auth_key_credential.is_some() {
            return err("--auth-key-file and --auth-key-credential are exclusive");
        }
        // Flags, then the environment, then the configuration file's reference.
        let (auth_key, auth_key_source) = if let Some(path) = &args.auth_key_file {
            let key = read_secret_file("--auth-key-file", path)?;
            let key =
                AuthKey::from_bytes(key.as_bytes()).map_err(|_| short_key("--auth-key-file"))?;
            (key, AuthKeySource::File(path.clone()))
        } else if let Some(name) = &args.auth_key_credential {
            let flag = "--auth-key-credential";
            let key = crate::config_file::read_credential(flag, name)?;
            let key = AuthKey::from_bytes(key.as_bytes()).map_err(|_| short_key(flag))?;
            let path = crate::config_file::credential_path(name).unwrap_or_default();
            (key, AuthKeySource::File(path.display().to_string()))
        } else if let Some(k) = env("EXOIP_AUTH_KEY") {
            let key = AuthKey::from_bytes(k.trim().as_bytes())
                .map_err(|_| short_key("EXOIP_AUTH_KEY"))?;
            (key, AuthKeySource::Environment)
        } else if let Some(reference) = args.sources.file_secret("auth-key") {
            let key = AuthKey::from_bytes(reference.read()?.as_bytes())
                .map_err(|_| short_key(&reference.label()))?;
            (key, AuthKeySource::File(reference.describe()))
        } else if exoscale {
            (
                AuthKey::derive_from_api_secret(&api_secret),
                AuthKeySource::DerivedFromApiSecret,
            )
        } else {
            // Nodes of other clouds often have credentials of their own: deriving the key from
            // them would fail authentication between peers in a way that is hard to see.
            return err(format!(
                "--auth-key-file: the heartbeat key is required with --provider {} (or --auth-key-credential, EXOIP_AUTH_KEY, auth-key-file in the configuration file); create one with: head -c 32 /dev/urandom | base64 > /etc/exoip/auth-key && chmod 600 /etc/exoip/auth-key",
                cloud.name()
            ));
        };

        let opt_duration =
            |flag: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
                v.as_deref()
                    .map_or(Ok(default), |s| parse_positive_duration(flag, s))
            };
        let reconcile_interval = opt_duration(
            "--reconcile-interval",
            &args.reconcile_interval,
            DEFAULT_RECONCILE,
        )?;
        let peer_refresh =
            opt_duration("--peer-refresh", &args.peer_refresh, DEFAULT_PEER_REFRESH)?;
        let api_timeout = opt_duration("--api-timeout", &args.api_timeout, DEFAULT_API_TIMEOUT)?;
        // A period that is 0 (off) or at least one dead period: shorter would act on a peer
        // that is merely between heartbeats.
        let off_or_dead_period = |flag: &str, text: &Option<String>, default: Duration| {
            let d = match text {
                None => default,
                Some(t) => parse_duration(flag, t)?,
            };
            if !d.is_zero() && d < interval * dead_ratio {
                return Err(ConfigError(format!(
                    "{flag}: must be at least one dead period (interval x dead ratio), or 0 to disable"
                )));
            }
            Ok((!d.is_zero()).then_some(d))
        };
        let isolation_release_after = off_or_dead_period(
            "--isolation-release-after",
            &args.isolation_release_after,
            interval * dead_ratio * 3,
        )?;
        let max_clock_skew = off_or_dead_period(
            "--max-clock-skew",
            &args.max_clock_skew,
            DEFAULT_MAX_CLOCK_SKEW,
        )?;

        let legacy_nic_id = match &args.legacy_nic_id {
            None => None,
            Some(text) => Some(crate::legacy::uuid_bytes(text.trim()).ok_or_else(|| {
                ConfigError(format!(
                    "--legacy-nic-id: '{text}' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                ))
            })?),
        };
        if legacy_nic_id.is_some() && !args.legacy_protocol {
            return err("--legacy-nic-id: only with --legacy-protocol");
        }
        if args.legacy_protocol {
            if !matches!(cloud, Cloud::Exoscale) {
                return err(format!(
                    "--legacy-protocol: the old exoip only ran on Exoscale, not with --provider {}",
                    cloud.name()
                ));
            }
            if !addresses.iter().any(|a| a.ip.is_ipv4()) {
                return err("--legacy-protocol: the old heartbeat carries only IPv4 addresses, and none is watched");
            }
        }

        let group = args
            .group
            .clone()
            .unwrap_or_else(|| DEFAULT_GROUP.to_string());
        if group.is_empty() {
            return err("--group: empty heartbeat group name");
        }
        let instance_id = args
            .instance_id
            .as_ref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(id) = &instance_id {
            if id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return err(format!("-i/--instance-id: invalid instance id '{id}'"));
            }
        }

        let status_socket = match args.status_socket.as_deref().map(str::trim) {
            Some("none") | Some("") => None,
            Some(p) => Some(std::path::PathBuf::from(p)),
            None => Some(std::path::PathBuf::from(crate::status::DEFAULT_SOCKET)),
        };
        let metrics_listen = match args.metrics_listen.as_deref().map(str::trim) {
            None => None,
            Some(m) => Some(m.parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "--metrics-listen: '{m}' is not IP:PORT (e.g. 127.0.0.1:9712)"
                ))
            })?),
        };
        if args.dry_run && mode == Mode::Watchdog {
            return err("--dry-run: only with -A or -D");
        }
        let checks = health_checks(args)?;
        let hook_timeout = opt_duration(
            "--hook-timeout",
            &args.hook_timeout,
            crate::hooks::DEFAULT_HOOK_TIMEOUT,
        )?;
        let hooks = crate::hooks::HookConfig::parse(
            args.notify.as_deref(),
            args.notify_master.as_deref(),
            args.notify_backup.as_deref(),
            args.notify_fault.as_deref(),
            args.hook_shell,
            hook_timeout,
        )
        .map_err(ConfigError)?;

        let mut cloud = cloud;
        if let Cloud::OpenStack(s) = &mut cloud {
            s.server_id = instance_id.clone().map(InstanceId);
            s.metadata_url = metadata_url.clone();
            s.request_timeout = api_timeout;
        }
        if let Cloud::Azure(s) = &mut cloud {
            s.vm_name = instance_id.clone();
            s.metadata_url = metadata_url.clone();
            s.request_timeout = api_timeout;
            // The client checks names, endpoints and the api-version: report them now, as a
            // configuration error, rather than when the agent starts.
            exoip_providers::azure::Azure::new(s.as_ref().clone()).map_err(|e| match e {
                exoip_providers::Error::Invalid(m) => ConfigError(format!("--provider azure: {m}")),
                other => ConfigError(format!("--provider azure: {other}")),
            })?;
        }
        Ok(Config {
            mode,
            cloud,
            holding,
            claim,
            validate_only: args.validate,
            addresses,
            priority,
            bind_ip,
            port,
            peers,
            instance_id,
            dead_ratio,
            interval,
            api_key,
            api_secret: Secret::new(api_secret),
            api_endpoint,
            zone,
            metadata_url,
            api_timeout,
            auth_key,
            auth_key_source,
            group,
            max_clock_skew,
            legacy_protocol: args.legacy_protocol,
            legacy_nic_id,
            reconcile_interval,
            isolation_release_after,
            peer_refresh,
            dry_run: args.dry_run,
            state_dir: std::path::PathBuf::from(
                args.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
            ),
            status_socket,
            metrics_listen,
            log_format: match args.log_format.as_deref() {
                Some("json") => Some(LogFormat::Json),
                Some(_) => Some(LogFormat::Text),
                None => None,
            },
            verbose: args.verbose,
            checks,
            hooks,
            warnings,
            sources,
        })
    }

    /// What the floating address is called on this cloud, for messages.
    pub fn address_kind(&self) -> &'static str {
        match &self.cloud {
            Cloud::Exoscale => "elastic IP",
            Cloud::OpenStack(o) if o.mode == OpenStackMode::Vip => "VIP",
            Cloud::OpenStack(_) => "floating IP",
            Cloud::Azure(a) => match a.mode {
                AzureMode::PublicIp => "public IP",
                AzureMode::SecondaryIp => "secondary IP",
                AzureMode::LbProbe => "frontend IP",
            },
        }
    }

    /// The API the agent talks to, for messages.
    pub fn api_label(&self) -> String {
        match &self.cloud {
            Cloud::Exoscale => self.api_endpoint.clone(),
            Cloud::OpenStack(o) => format!("Keystone at {}", o.auth_url),
            Cloud::Azure(a) => format!("Azure Resource Manager at {}", a.arm_endpoint),
        }
    }

    /// Where the API looks things up, for messages: "zone ch-gva-2", "the project".
    pub fn scope_label(&self) -> String {
        match &self.cloud {
            Cloud::Exoscale => format!("zone {}", self.zone),
            Cloud::OpenStack(o) => match &o.region {
                Some(r) => format!("the project (region {r})"),
                None => "the project".to_string(),
            },
            Cloud::Azure(a) => match &a.resource_group {
                Some(rg) => format!("resource group {rg}"),
                None => "the VM's resource group".to_string(),
            },
        }
    }

    /// The socket address to bind heartbeats to.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.bind_ip.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            self.port,
        )
    }
}

/// The `--track-*` flags as check specifications, with the shared timing options applied.
fn health_checks(args: &AgentArgs) -> Result<Vec<crate::health::CheckSpec>, ConfigError> {
    use crate::health::{self, CheckKind, CheckSpec};
    let mut kinds = Vec::new();
    fn flag_err(flag: &'static str) -> impl Fn(String) -> ConfigError {
        move |e| ConfigError(format!("{flag}: {e}"))
    }
    for s in &args.track_script {
        kinds.push(CheckKind::Script(
            health::parse_script(s).map_err(flag_err("--track-script"))?,
        ));
    }
    for s in &args.track_process {
        kinds.push(CheckKind::Process(
            health::parse_process(s).map_err(flag_err("--track-process"))?,
        ));
    }
    for s in &args.track_tcp {
        kinds.push(CheckKind::Tcp(
            health::parse_tcp(s).map_err(flag_err("--track-tcp"))?,
        ));
    }
    for s in &args.track_http {
        kinds.push(CheckKind::Http(
            health::parse_http(s).map_err(flag_err("--track-http"))?,
        ));
    }
    let interval = args
        .track_interval
        .as_deref()
        .map(|s| parse_positive_duration("--track-interval", s))
        .transpose()?;
    let timeout = args
        .track_timeout
        .as_deref()
        .map(|s| parse_positive_duration("--track-timeout", s))
        .transpose()?;
    for (flag, v) in [
        ("--track-fall", args.track_fall),
        ("--track-rise", args.track_rise),
    ] {
        if v == Some(0) {
            return err(format!("{flag}: must be at least 1"));
        }
    }
    let specs: Vec<CheckSpec> = kinds
        .into_iter()
        .map(|kind| {
            let mut spec = CheckSpec::new(kind);
            spec.interval = interval.unwrap_or(spec.interval);
            spec.timeout = timeout.unwrap_or(spec.timeout);
            spec.fall = args.track_fall.unwrap_or(spec.fall);
            spec.rise = args.track_rise.unwrap_or(spec.rise);
            spec.weight = args.track_weight;
            spec
        })
        .collect();
    health::validate(&specs).map_err(|e| ConfigError(format!("--track-*: {e}")))?;
    Ok(specs)
}

pub fn default_endpoint(zone: &str) -> String {
    format!("https://api-{zone}.exoscale.com/v2")
}

fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The effective configuration, as `-n` prints it: every secret redacted.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Watchdog => "watchdog (-W)",
            Mode::Associate => "associate (-A)",
            Mode::Dissociate => "dissociate (-D)",
        };
        writeln!(f, "mode               {mode}")?;
        // An address with a priority of its own (the configuration file's [[address]]).
        let ips: Vec<String> = self
            .addresses
            .iter()
            .map(|w| match w.priority == self.priority {
                true => w.ip.to_string(),
                false => format!("{} (priority {})", w.ip, w.priority),
            })
            .collect();
        writeln!(f, "addresses          {}", ips.join(", "))?;
        writeln!(f, "priority           {}", self.priority)?;
        let bind = match self.bind_ip {
            Some(ip) => SocketAddr::new(ip, self.port).to_string(),
            None => format!(":{}", self.port),
        };
        writeln!(f, "bind               {bind}")?;
        match &self.peers {
            Peers::Static(list) => {
                let l: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                writeln!(f, "peers              {}", l.join(", "))?
            }
            Peers::Group(g) => {
                let who = match &self.cloud {
                    Cloud::Azure(a) => match &a.peer_tag {
                        Some((k, v)) => format!("VMs whose NICs carry the tag {k}={v}"),
                        None => format!("VMs whose NICs use network security group '{g}'"),
                    },
                    _ => format!("members of security group '{g}'"),
                };
                writeln!(
                    f,
                    "peers              {who} (refreshed every {})",
                    show_duration(self.peer_refresh)
                )?
            }
            Peers::None => writeln!(f, "peers              none")?,
        }
        writeln!(
            f,
            "instance id        {}",
            self.instance_id
                .as_deref()
                .unwrap_or("(from the metadata service)")
        )?;
        writeln!(f, "interval           {}", show_duration(self.interval))?;
        writeln!(
            f,
            "dead ratio         {} (dead after {})",
            self.dead_ratio,
            show_duration(self.dead_period())
        )?;
        writeln!(f, "provider           {}", self.cloud.name())?;
        match &self.cloud {
            Cloud::Exoscale => {
                writeln!(f, "api endpoint       {}", self.api_endpoint)?;
                writeln!(f, "api key            {}", self.api_key)?;
                match self.sources.secret_origin("api-secret") {
                    Some(from) => {
                        writeln!(f, "api secret         {} from {from}", self.api_secret)?
                    }
                    None => writeln!(f, "api secret         {}", self.api_secret)?,
                }
            }
            Cloud::OpenStack(o) => {
                let mode = match o.mode {
                    OpenStackMode::FloatingIp => "floating-ip",
                    OpenStackMode::Vip => "vip",
                };
                writeln!(f, "openstack mode     {mode}")?;
                writeln!(f, "credentials        {}", o.source)?;
                writeln!(f, "auth url           {}", o.auth_url)?;
                writeln!(
                    f,
                    "region, interface  {}, {}",
                    o.region.as_deref().unwrap_or("(any)"),
                    o.interface.as_str()
                )?;
                if let Some(p) = &o.port {
                    writeln!(f, "own port           {p}")?;
                }
                if let Some(p) = &o.vip_port {
                    writeln!(f, "vip port           {p}")?;
                }
            }
            Cloud::Azure(a) => {
                writeln!(f, "azure mode         {}", a.mode)?;
                let credentials = match &a.credentials {
                    AzureCredentials::ClientSecret {
                        tenant_id,
                        client_id,
                        client_secret,
                    } => format!(
                        "service principal {client_id} of tenant {tenant_id}, client secret {client_secret}"
                    ),
                    AzureCredentials::WorkloadIdentity {
                        tenant_id,
                        client_id,
                        token_file,
                    } => format!(
                        "workload identity {client_id} of tenant {tenant_id}, federated token from {}",
                        token_file.display()
                    ),
                    AzureCredentials::ManagedIdentity { client_id: None } => {
                        "the VM's system-assigned managed identity".to_string()
                    }
                    AzureCredentials::ManagedIdentity {
                        client_id: Some(id),
                    } => format!("the user-assigned managed identity {id}"),
                };
                writeln!(f, "credentials        {credentials}")?;
                if matches!(a.credentials, AzureCredentials::ManagedIdentity { .. }) {
                    if let Some(u) = &a.identity_url {
                        writeln!(f, "identity endpoint  {u}")?;
                    }
                } else {
                    writeln!(f, "authority host     {}", a.authority_host)?;
                }
                writeln!(f, "arm endpoint       {}", a.arm_endpoint)?;
                writeln!(f, "api version        {}", a.api_version)?;
                let from_imds = "(from the instance metadata)";
                writeln!(
                    f,
                    "subscription       {}",
                    a.subscription.as_deref().unwrap_or(from_imds)
                )?;
                writeln!(
                    f,
                    "resource group     {}",
                    a.resource_group.as_deref().unwrap_or(from_imds)
                )?;
                if let Some(p) = &a.public_ip_name {
                    writeln!(f, "public ip          {p}")?;
                }
                if let Some(c) = &a.ip_config {
                    writeln!(f, "ip configuration   {c}")?;
                }
            }
        }
        writeln!(f, "metadata url       {}", self.metadata_url)?;
        let key = match &self.auth_key_source {
            AuthKeySource::File(p) => format!("[redacted] from {p}"),
            AuthKeySource::Environment => "[redacted] from EXOIP_AUTH_KEY".to_string(),
            AuthKeySource::DerivedFromApiSecret => {
                "[redacted] derived from the API secret".to_string()
            }
        };
        writeln!(f, "heartbeat key      {key}")?;
        writeln!(f, "heartbeat group    {}", self.group)?;
        writeln!(
            f,
            "reconcile every    {}",
            show_duration(self.reconcile_interval)
        )?;
        let holding = match &self.holding {
            Holding::Loopback => "loopback alias (/32, /128 on lo)".to_string(),
            Holding::Nic { device } => format!(
                "on {} with gratuitous ARP / neighbour advertisement",
                device.as_deref().unwrap_or("the default-route interface")
            ),
            Holding::Nothing => "nothing local (the cloud NATs it, or --no-alias)".to_string(),
            Holding::Probe {
                port,
                path,
                loopback,
            } => format!(
                "answering the load balancer's probe on TCP port {port}{} while holding; {}",
                path.as_deref()
                    .map(|p| format!(" (HTTP 200 on GET {p})"))
                    .unwrap_or_default(),
                if *loopback {
                    "the frontend IP on lo on every node"
                } else {
                    "the frontend IP on lo left to the system configuration (--no-alias)"
                }
            ),
        };
        writeln!(f, "address held       {holding}")?;
        let socket = self
            .status_socket
            .as_ref()
            .map_or("off".to_string(), |p| p.display().to_string());
        writeln!(f, "status socket      {socket}")?;
        writeln!(f, "state directory    {}", self.state_dir.display())?;
        let metrics = self
            .metrics_listen
            .map_or("off".to_string(), |m| format!("http://{m}/metrics"));
        write!(f, "metrics            {metrics}")?;
        // Where the settings came from: the configuration file, flags, variables.
        if !self.sources.is_empty() {
            write!(f, "\n{}", self.sources)?;
        }
        Ok(())
    }
}

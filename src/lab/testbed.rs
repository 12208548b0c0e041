//! One lab: a router namespace with a bridge and the simulated cloud, N host namespaces running
//! agents (and optionally an HTTP server each), and a client namespace fetching through the
//! elastic IP. Everything is torn down when the [`Lab`] is dropped, also on panic.
//!
//! ```text
//!   C (198.51.100.2) ── vc ─┐
//!                           R  br0 192.0.2.1/24, sim on :8080 (API) and :8081 (metadata),
//!   lb1 (192.0.2.11) ─ vh1 ─┤    route 203.0.113.10 → the holder(s), set by the sim
//!   lb2 (192.0.2.12) ─ vh2 ─┤
//!   lb3 (192.0.2.13) ─ vh3 ─┘
//! ```
//!
//! Per cloud ([`LabCloud`]): the client sits on the hosts' bridge (192.0.2.50) where the
//! address is a private one reached through ARP (OpenStack vip, Azure secondary-ip). Azure
//! public IPs are routed by the simulator to the holder's private address and NATed to it
//! in each host's namespace, where Azure's host network does it (the guest never sees the
//! public IP). Azure lb-probe has a load balancer emulated by the lab itself, in R: it probes
//! every host's health-probe port every 100 ms and routes the frontend IP [`LB_FRONTEND`] to
//! the hosts whose probe answers, as a Floating-IP (DSR) rule does; every host keeps the
//! frontend IP on `lo`.
//!
//! IPv6 ([`LabConfig::ipv6`], Exoscale only): every link also gets an address from
//! 2001:db8::/32 (the hosts 2001:db8:2::11.. on the bridge, whose R end is 2001:db8:2::1; C
//! 2001:db8:3::2 behind R's 2001:db8:3::1), the elastic IP is [`EIP6`] (a /128 the simulator
//! routes to its holders' IPv6 addresses), and the agents know their peers by IPv6 address, so
//! heartbeats, the route and the data path are all IPv6. The API stays on IPv4. Duplicate
//! address detection is off everywhere: addresses are usable the moment they are added.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::http::{self, FetchRecord};
use super::netns::{self, in_netns, ip, ns_command};
use super::unix_now;

pub const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// IPv6 labs: the elastic IP, held as a /128.
pub const EIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xee, 0, 0, 0, 0, 1);
/// IPv6 labs: R on the hosts' bridge (their /64 is 2001:db8:2::/64, their gateway).
pub const ROUTER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// IPv6 labs: the client, and R's end of its link (2001:db8:3::/64).
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2);
pub const CLIENT_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);
pub const API_URL: &str = "http://192.0.2.1:8080/v2";
pub const SIM_URL: &str = "http://192.0.2.1:8080";
pub const METADATA_URL: &str = "http://192.0.2.1:8081";
pub const ZONE: &str = "ch-gva-2";
pub const SECURITY_GROUP: &str = "exoip";
pub const HEARTBEAT_PORT: u16 = 12345;
/// OpenStack vip mode: the private VIP on the hosts' subnet, and the client beside them.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const VIP_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
pub const OS_AUTH_URL: &str = "http://192.0.2.1:8080/identity/v3";
pub const OS_REGION: &str = "RegionOne";
pub const OS_USER: &str = "demo";
pub const OS_PROJECT: &str = "demo";
/// Azure lb-probe mode: the load balancer's frontend IP (on every host's `lo`).
pub const LB_FRONTEND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// Azure lb-probe mode: the health probe's TCP port (Pacemaker's azure-lb uses it too).
pub const LB_PROBE_PORT: u16 = 61000;
/// How often the emulated load balancer probes, and how long one probe may take.
pub const LB_PROBE_INTERVAL: Duration = Duration::from_millis(100);
const LB_PROBE_TIMEOUT: Duration = Duration::from_millis(80);

/// Which cloud the lab simulates, and so how the address moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabCloud {
    /// An elastic IP attached by the API, held on `lo`; R routes it to the holders.
    Exoscale,
    /// A floating IP moved between ports by the API; R NATs it to the holder's fixed IP.
    OpenStackFloatingIp,
    /// A private VIP held on `eth0` and announced with gratuitous ARP; the client sits on the
    /// hosts' bridge; the API only keeps the ports' allowed address pairs.
    OpenStackVip,
    /// A public IP moved between NICs by two PUTs; R routes it to the holder's private IP,
    /// the holder's namespace NATs it there (nothing in the guest).
    AzurePublicIp,
    /// A secondary ipConfiguration moved between NICs by two PUTs; held on `eth0` and
    /// announced with gratuitous ARP; the client sits on the hosts' bridge.
    AzureSecondaryIp,
    /// A load balancer with Floating IP, emulated by the lab: the frontend IP is on every
    /// host's `lo`, R routes it to the host whose health probe answers. No ARM call at all.
    AzureLbProbe,
}

impl LabCloud {
    /// The lab of `provider` (exoscale, openstack, azure) in `mode` (that cloud's
    /// `--openstack-mode` or `--azure-mode`; `None`: its default).
    pub fn parse(provider: &str, mode: Option<&str>) -> Result<LabCloud> {
        match (provider, mode) {
            ("exoscale", None) => Ok(LabCloud::Exoscale),
            ("openstack", None | Some("floating-ip")) => Ok(LabCloud::OpenStackFloatingIp),
            ("openstack", Some("vip")) => Ok(LabCloud::OpenStackVip),
            ("azure", None | Some("public-ip")) => Ok(LabCloud::AzurePublicIp),
            ("azure", Some("secondary-ip")) => Ok(LabCloud::AzureSecondaryIp),
            ("azure", Some("lb-probe")) => Ok(LabCloud::AzureLbProbe),
            (p, m) => bail!(
                "no lab for provider {p}{}",
                m.map(|m| format!(" in mode {m}")).unwrap_or_default()
            ),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            LabCloud::Exoscale => "Exoscale elastic IP",
            LabCloud::OpenStackFloatingIp => "OpenStack floating IP",
            LabCloud::OpenStackVip => "OpenStack VIP (allowed address pairs)",
            LabCloud::AzurePublicIp => "Azure public IP",
            LabCloud::AzureSecondaryIp => "Azure secondary private IP (ipConfiguration)",
            LabCloud::AzureLbProbe => "Azure load balancer with Floating IP (health probe)",
        }
    }

    /// The agents' `--provider` and the mode flag, if any.
    pub fn agent_provider_args(self) -> Vec<String> {
        let (provider, mode) = match self {
            LabCloud::Exoscale => return Vec::new(),
            LabCloud::OpenStackFloatingIp => ("openstack", ("--openstack-mode", "floating-ip")),
            LabCloud::OpenStackVip => ("openstack", ("--openstack-mode", "vip")),
            LabCloud::AzurePublicIp => ("azure", ("--azure-mode", "public-ip")),
            LabCloud::AzureSecondaryIp => ("azure", ("--azure-mode", "secondary-ip")),
            LabCloud::AzureLbProbe => ("azure", ("--azure-mode", "lb-probe")),
        };
        ["--provider", provider, mode.0, mode.1]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The address the agents float.
    pub fn address(self) -> Ipv4Addr {
        match self {
            LabCloud::OpenStackVip | LabCloud::AzureSecondaryIp => VIP,
            LabCloud::AzureLbProbe => LB_FRONTEND,
            _ => EIP,
        }
    }

    pub fn is_openstack(self) -> bool {
        matches!(self, LabCloud::OpenStackFloatingIp | LabCloud::OpenStackVip)
    }

    pub fn is_azure(self) -> bool {
        matches!(
            self,
            LabCloud::AzurePublicIp | LabCloud::AzureSecondaryIp | LabCloud::AzureLbProbe
        )
    }

    /// The address is a private one on the hosts' LAN, held on `eth0` and found through ARP:
    /// the client sits on the bridge.
    pub fn on_lan(self) -> bool {
        matches!(self, LabCloud::OpenStackVip | LabCloud::AzureSecondaryIp)
    }

    /// The API's holders are the holders: the address moves by API calls.
    pub fn api_holds(self) -> bool {
        !matches!(self, LabCloud::OpenStackVip | LabCloud::AzureLbProbe)
    }

    /// Short name for benchmark output: "", "os-fip:", "az-lb:"...
    pub fn tag(self) -> &'static str {
        match self {
            LabCloud::Exoscale => "",
            LabCloud::OpenStackFloatingIp => "os-fip:",
            LabCloud::OpenStackVip => "os-vip:",
            LabCloud::AzurePublicIp => "az-pip:",
            LabCloud::AzureSecondaryIp => "az-sec:",
            LabCloud::AzureLbProbe => "az-lb:",
        }
    }
}

/// What to build. [`LabConfig::new`] gives the demo's defaults.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub cloud: LabCloud,
    /// IPv6 end to end (Exoscale only): IPv6 on every link besides IPv4, the elastic IP is
    /// [`EIP6`], the agents heartbeat over IPv6 and the client fetches over IPv6. The API and
    /// the metadata service stay on IPv4. See the module documentation.
    pub ipv6: bool,
    /// Number of hosts (1..=9: their addresses are 192.0.2.11..19).
    pub hosts: usize,
    /// Agent priority per host; missing entries default to 10, 20, 30...
    pub priorities: Vec<u8>,
    pub interval: Duration,
    pub dead_ratio: u32,
    /// Latency the simulator adds to every attach/detach.
    pub op_delay: Duration,
    /// Start the simulated cloud (off only for topology tests).
    pub sim: bool,
    /// Start an agent on every host right away.
    pub agents: bool,
    /// HTTP server on every host and a client loop in C fetching through the EIP.
    pub data_path: bool,
    /// Period of the client loop.
    pub fetch_interval: Duration,
    /// Timeout of one client request.
    pub fetch_timeout: Duration,
    pub exoip_bin: PathBuf,
    pub extra_agent_args: Vec<String>,
    /// Elastic IPs besides [`EIP`], watched by the same agents (`-xi` once per address). In an
    /// IPv6 lab they come besides [`EIP6`]: IPv4 and IPv6 addresses in one agent.
    pub extra_eips: Vec<Ipv4Addr>,
    /// Further agent arguments for one host (index = host); missing entries add nothing.
    pub host_agent_args: Vec<Vec<String>>,
    /// How each host's agent is invoked (index = host; missing entries and `None`: as usual).
    /// With `Some(prefix)`, host i's agent runs as `exoip <prefix...> <the usual agent args>`
    /// instead of `exoip <the usual agent args>` (e.g. a subcommand in front of the flags),
    /// with the same environment, log file and handling by [`Lab::kill`], [`Lab::crash`],
    /// [`Lab::revive`] and [`Lab::start_agent`]. See [`Lab::agent_command`].
    pub host_subcommand: Vec<Option<Vec<String>>>,
    pub extra_sim_args: Vec<String>,
    /// Keep the temporary directory (logs, timeline) after the lab is gone.
    pub keep: bool,
    /// Narrate the construction on stderr.
    pub verbose: bool,
}

impl LabConfig {
    pub fn new(exoip_bin: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            cloud: LabCloud::Exoscale,
            ipv6: false,
            hosts: 3,
            priorities: Vec::new(),
            interval: Duration::from_secs(1),
            dead_ratio: 3,
            op_delay: Duration::ZERO,
            sim: true,
            agents: true,
            data_path: false,
            fetch_interval: Duration::from_millis(50),
            fetch_timeout: Duration::from_millis(250),
            exoip_bin: exoip_bin.into(),
            extra_agent_args: Vec::new(),
            host_agent_args: Vec::new(),
            host_subcommand: Vec::new(),
            extra_eips: Vec::new(),
            extra_sim_args: Vec::new(),
            keep: false,
            verbose: false,
        }
    }

    /// The address the agents float: the cloud's, or [`EIP6`] in an IPv6 lab.
    pub fn address(&self) -> IpAddr {
        if self.ipv6 {
            IpAddr::V6(EIP6)
        } else {
            IpAddr::V4(self.cloud.address())
        }
    }

    /// How long a silent peer takes to be declared dead.
    pub fn dead_period(&self) -> Duration {
        self.interval * self.dead_ratio
    }

    fn priority(&self, index: usize) -> u8 {
        self.priorities
            .get(index)
            .copied()
            .unwrap_or(10 * (index as u8 + 1))
    }
}

/// One simulated VM.
#[derive(Debug, Clone)]
pub struct Host {
    pub index: usize,
    /// Instance name, `lb1`...
    pub name: String,
    /// Network namespace.
    pub ns: String,
    /// Its public IP on the bridge.
    pub ip: Ipv4Addr,
    /// Its public IPv6 address on the bridge, in IPv6 labs.
    pub ip6: Option<Ipv6Addr>,
    pub instance_id: String,
    pub priority: u8,
    /// Its veth's name inside R (the "cable": down means the VM is off the network).
    router_port: String,
}

impl Host {
    /// The address its peers send heartbeats to: IPv6 in IPv6 labs.
    pub fn heartbeat_ip(&self) -> IpAddr {
        match self.ip6 {
            Some(v6) => IpAddr::V6(v6),
            None => IpAddr::V4(self.ip),
        }
    }

    /// Its address of `family`'s family (`None`: it has no IPv6).
    pub fn ip_like(&self, family: IpAddr) -> Option<IpAddr> {
        match family {
            IpAddr::V4(_) => Some(IpAddr::V4(self.ip)),
            IpAddr::V6(_) => self.ip6.map(IpAddr::V6),
        }
    }
}

/// `ip/32` or `ip/128`: a single address, as the agents hold it.
pub fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// `http://IP/` or `http://[IPv6]/`.
pub fn http_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("http://{ip}/"),
        IpAddr::V6(_) => format!("http://[{ip}]/"),
    }
}

/// One line of the simulator's timeline.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TimelineEvent {
    /// Unix time in seconds.
    pub t: f64,
    #[serde(default)]
    pub zone: String,
    pub ip: String,
    #[serde(default)]
    pub eip_id: String,
    /// `attach` or `detach`.
    pub event: String,
    pub instance: String,
    /// Instances holding the IP after this event.
    pub holders: Vec<String>,
}

/// An API secret that never shows up in Debug output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub struct Lab {
    cfg: LabConfig,
    id: String,
    dir: PathBuf,
    router: String,
    client: String,
    hosts: Vec<Host>,
    eip_id: String,
    api_key: String,
    /// The Exoscale API secret, or the OpenStack user's password.
    api_secret: Secret,
    /// The simulated OpenStack's seed (its server ids are the hosts' instance ids).
    openstack_seed: Option<serde_json::Value>,
    /// The simulated Azure's seed (its VM names are the hosts' instance ids; the service
    /// principal's secret is `api_secret`).
    azure_seed: Option<exoip_providers::sim::AzureSeed>,
    /// Azure lb-probe: the emulated load balancer's changes, as a timeline (`attach`: a host's
    /// probe started answering, `detach`: it stopped; `holders`: the hosts it sends to).
    lb_events: Arc<Mutex<Vec<TimelineEvent>>>,
    namespaces: Vec<String>,
    sim: Mutex<Option<Child>>,
    agents: Mutex<Vec<Option<Child>>>,
    helpers: Mutex<Vec<Child>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    requests: Arc<Mutex<Vec<FetchRecord>>>,
}

fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_api_key() -> (String, Secret) {
    let mut rng = rand::thread_rng();
    let key: String = (0..24)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect();
    let secret: String = (&mut rng)
        .sample_iter(rand::distributions::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    (format!("EXO{key}"), Secret(secret))
}

/// Seconds with the shortest decimal form (`1`, `0.2`), as the agent's `-t` accepts.
pub fn secs_arg(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lab {
    /// Builds the topology, starts the simulator, the data path and the agents as configured.
    /// On error everything built so far is torn down.
    pub async fn start(cfg: LabConfig) -> Result<Lab> {
        ensure!(
            is_root(),
            "the lab needs root (it creates network namespaces)"
        );
        ensure!(
            (1..=9).contains(&cfg.hosts),
            "between 1 and 9 hosts, not {}",
            cfg.hosts
        );
        ensure!(
            !cfg.ipv6 || cfg.cloud == LabCloud::Exoscale,
            "the IPv6 lab exists for the Exoscale cloud only, not for the {}",
            cfg.cloud.describe()
        );
        ensure!(
            cfg.exoip_bin.exists(),
            "exoip binary {} not found",
            cfg.exoip_bin.display()
        );
        netns::cleanup_leftovers();
        let id = netns::allocate_id();
        let dir = std::env::temp_dir().join(&id);
        let (api_key, api_secret) = random_api_key();
        let openstack = cfg.cloud.is_openstack().then(|| {
            exoip_providers::sim::openstack::LabSeed {
                hosts: cfg.hosts,
                random_ids: true,
                password: api_secret.expose().to_string(),
                vip: cfg.cloud == LabCloud::OpenStackVip,
                // Unassociated, as the Exoscale lab's EIP starts detached: the agents elect.
                fip_on: None,
                ..Default::default()
            }
            .build()
        });
        let azure = if cfg.cloud.is_azure() {
            Some(
                exoip_providers::sim::AzureLabSeed {
                    hosts: cfg.hosts,
                    // Unattached, as the Exoscale lab's EIP starts detached: the agents elect.
                    public_ip_on: None,
                    secondary_on: None,
                    client_secret: exoip_providers::Secret::new(api_secret.expose()),
                    random_ids: true,
                    ..Default::default()
                }
                .build()
                .context("the Azure lab seed")?,
            )
        } else {
            None
        };
        let hosts = (0..cfg.hosts)
            .map(|i| Host {
                index: i,
                name: format!("lb{}", i + 1),
                ns: format!("{id}-h{}", i + 1),
                ip: Ipv4Addr::new(192, 0, 2, 11 + i as u8),
                // 2001:db8:2::11.. reads like 192.0.2.11..
                ip6: cfg
                    .ipv6
                    .then(|| Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11 + i as u16)),
                instance_id: match (&openstack, &azure) {
                    (Some(seed), _) => seed.servers[i].id.clone(),
                    // Azure names holders by VM name.
                    (_, Some(seed)) => seed.vms[i].name.clone(),
                    _ => random_uuid(),
                },
                priority: cfg.priority(i),
                router_port: format!("vh{}", i + 1),
            })
            .collect::<Vec<_>>();
        let mut lab = Lab {
            router: format!("{id}-r"),
            client: format!("{id}-c"),
            agents: Mutex::new(hosts.iter().map(|_| None).collect()),
            hosts,
            eip_id: random_uuid(),
            api_key,
            api_secret,
            openstack_seed: openstack
                .map(|seed| serde_json::to_value(seed).expect("seeds serialise")),
            azure_seed: azure,
            lb_events: Arc::new(Mutex::new(Vec::new())),
            namespaces: Vec::new(),
            sim: Mutex::new(None),
            helpers: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            requests: Arc::new(Mutex::new(Vec::new())),
            dir,
            id,
            cfg,
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&lab.dir)
            .with_context(|| format!("cannot create {}", lab.dir.display()))?;
        File::create(lab.dir.join(netns::LAB_MARKER))?;
        if lab.cfg.cloud != LabCloud::Exoscale {
            let key: String = rand::thread_rng()
                .sample_iter(rand::distributions::Alphanumeric)
                .take(40)
                .map(char::from)
                .collect();
            OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(lab.auth_key_path())?
                .write_all(key.as_bytes())?;
        }
        lab.build_topology().await?;
        if lab.cfg.sim {
            lab.start_sim().await?;
        }
        if lab.cfg.cloud == LabCloud::AzureLbProbe {
            lab.start_load_balancer();
        }
        if lab.cfg.data_path {
            lab.start_data_path().await?;
        }
        if lab.cfg.agents {
            for i in 0..lab.hosts.len() {
                lab.start_agent(i).await?;
            }
        }
        Ok(lab)
    }

    fn say(&self, msg: impl std::fmt::Display) {
        if self.cfg.verbose {
            eprintln!("lab: {msg}");
        }
    }

    async fn add_namespace(&mut self, name: String) -> Result<()> {
        ip(["netns", "add", &name]).await?;
        self.namespaces.push(name.clone());
        // rp_filter would drop the asymmetric paths of the EIP (in via R's route, out via the
        // default route); "default" covers the interfaces created later in this namespace.
        let ipv6 = self.cfg.ipv6;
        in_netns(&name, move || {
            for key in ["all", "default", "lo"] {
                std::fs::write(format!("/proc/sys/net/ipv4/conf/{key}/rp_filter"), "0")?;
            }
            if ipv6 {
                // No duplicate address detection on the interfaces created later (link-local
                // addresses included): an address in DAD cannot be used for a second or so.
                for key in ["all", "default"] {
                    std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/accept_dad"), "0")?;
                }
            }
            Ok(())
        })
    }

    /// Adds IPv6 address `addr/64` to `dev` in `ns` without duplicate address detection.
    async fn add_addr6(ns: &str, addr: Ipv6Addr, dev: &str) -> Result<()> {
        let addr = format!("{addr}/64");
        ip(["-n", ns, "-6", "addr", "add", &addr, "dev", dev, "nodad"]).await?;
        Ok(())
    }

    async fn build_topology(&mut self) -> Result<()> {
        self.say(format_args!(
            "building {} in {}",
            self.id,
            self.dir.display()
        ));
        let (r, c) = (self.router.clone(), self.client.clone());
        self.add_namespace(r.clone()).await?;
        self.add_namespace(c.clone()).await?;
        for h in self.hosts.clone() {
            self.add_namespace(h.ns.clone()).await?;
        }
        in_netns(&r, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?;
        ip(["-n", &r, "link", "set", "lo", "up"]).await?;
        if self.cfg.ipv6 {
            in_netns(&r, || {
                std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            })?;
            // Without an MLD querier, snooping could keep neighbour solicitations from a host
            // that has not reported its solicited-node group yet: flood them, as a hub would.
            ip([
                "-n",
                &r,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])
            .await?;
            Self::add_addr6(&r, ROUTER_IP6, "br0").await?;
        } else {
            ip(["-n", &r, "link", "add", "br0", "type", "bridge"]).await?;
        }
        ip(["-n", &r, "addr", "add", "192.0.2.1/24", "dev", "br0"]).await?;
        ip(["-n", &r, "link", "set", "br0", "up"]).await?;
        // Until the simulator routes it, the EIP answers "unreachable" at once instead of
        // letting clients wait for a timeout.
        ip(["-n", &r, "route", "add", "unreachable", "203.0.113.10/32"]).await?;
        if self.cfg.ipv6 {
            let eip6 = host_prefix(IpAddr::V6(EIP6));
            ip(["-n", &r, "-6", "route", "add", "unreachable", &eip6]).await?;
        }
        if self.cfg.cloud == LabCloud::AzureLbProbe {
            // Until the load balancer finds a probe answering.
            let frontend = format!("{LB_FRONTEND}/32");
            ip(["-n", &r, "route", "add", "unreachable", &frontend]).await?;
        }

        for h in &self.hosts {
            let ns = h.ns.as_str();
            ip([
                "-n",
                &r,
                "link",
                "add",
                &h.router_port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ])
            .await?;
            ip([
                "-n",
                &r,
                "link",
                "set",
                &h.router_port,
                "master",
                "br0",
                "up",
            ])
            .await?;
            ip(["-n", ns, "link", "set", "lo", "up"]).await?;
            ip([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                "eth0",
            ])
            .await?;
            if let Some(ip6) = h.ip6 {
                Self::add_addr6(ns, ip6, "eth0").await?;
            }
            ip(["-n", ns, "link", "set", "eth0", "up"]).await?;
            ip(["-n", ns, "route", "add", "default", "via", "192.0.2.1"]).await?;
            if h.ip6.is_some() {
                let gw = ROUTER_IP6.to_string();
                ip(["-n", ns, "-6", "route", "add", "default", "via", &gw]).await?;
            }
            if self.cfg.cloud == LabCloud::AzurePublicIp {
                azure_public_ip_nat(ns, h.ip).await?;
            }
        }

        ip([
            "-n", &r, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ])
        .await?;
        ip(["-n", &c, "link", "set", "lo", "up"]).await?;
        if self.cfg.cloud.on_lan() {
            // On the hosts' LAN: it reaches the VIP through ARP, so only a gratuitous ARP (or
            // its cache expiring) sends it to a new holder.
            ip(["-n", &r, "link", "set", "vc", "master", "br0", "up"]).await?;
            let addr = format!("{VIP_CLIENT_IP}/24");
            ip(["-n", &c, "addr", "add", &addr, "dev", "eth0"]).await?;
            ip(["-n", &c, "link", "set", "eth0", "up"]).await?;
            ip(["-n", &c, "route", "add", "default", "via", "192.0.2.1"]).await?;
        } else {
            ip(["-n", &r, "addr", "add", "198.51.100.1/24", "dev", "vc"]).await?;
            ip(["-n", &c, "addr", "add", "198.51.100.2/24", "dev", "eth0"]).await?;
            if self.cfg.ipv6 {
                Self::add_addr6(&r, CLIENT_GATEWAY6, "vc").await?;
                Self::add_addr6(&c, CLIENT_IP6, "eth0").await?;
            }
            ip(["-n", &r, "link", "set", "vc", "up"]).await?;
            ip(["-n", &c, "link", "set", "eth0", "up"]).await?;
            ip(["-n", &c, "route", "add", "default", "via", "198.51.100.1"]).await?;
            if self.cfg.ipv6 {
                let gw = CLIENT_GATEWAY6.to_string();
                ip(["-n", &c, "-6", "route", "add", "default", "via", &gw]).await?;
            }
        }
        Ok(())
    }

    fn seed(&self) -> serde_json::Value {
        if self.cfg.cloud.is_openstack() {
            return self.openstack_seed();
        }
        if let Some(seed) = &self.azure_seed {
            // The service principal's secret is written too: the file is root's only.
            return serde_json::to_value(seed).expect("seeds serialise");
        }
        let sg = random_uuid();
        serde_json::json!({
            "zone": ZONE,
            "api_keys": [{"key": self.api_key, "secret": self.api_secret.expose()}],
            "security_groups": [{"id": sg, "name": SECURITY_GROUP}],
            "instances": self.hosts.iter().map(|h| serde_json::json!({
                "id": h.instance_id,
                "name": h.name,
                "public_ip": h.ip.to_string(),
                "public_ipv6": h.ip6.map(|ip| ip.to_string()),
                "security_groups": [sg],
                "state": "running",
            })).collect::<Vec<_>>(),
            "elastic_ips": std::iter::once(serde_json::json!({
                "id": self.eip_id,
                "ip": self.address().to_string(),
                "description": "exoip demo",
                "attached_to": [],
            }))
            .chain(self.cfg.extra_eips.iter().map(|ip| serde_json::json!({
                "id": random_uuid(),
                "ip": ip.to_string(),
                "description": "exoip demo, another address",
                "attached_to": [],
            })))
            .collect::<Vec<_>>(),
        })
    }

    /// The simulated OpenStack: one server per host with one port on the bridge's subnet, all in
    /// security group `exoip`; the floating IP unassociated; the VIP port holding [`VIP`] with the
    /// VIP allowed on every server port (as an operator prepares vip mode).
    fn openstack_seed(&self) -> serde_json::Value {
        self.openstack_seed.clone().unwrap_or_default()
    }

    fn seed_path(&self) -> PathBuf {
        self.dir.join("seed.json")
    }

    pub fn timeline_path(&self) -> PathBuf {
        self.dir.join("timeline.jsonl")
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn open_log(&self, name: &str) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .with_context(|| format!("cannot open the log of {name}"))
    }

    async fn start_sim(&mut self) -> Result<()> {
        // The seed holds the API secret: only root may read it.
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(self.seed_path())?;
        f.write_all(serde_json::to_string_pretty(&self.seed())?.as_bytes())?;
        drop(f);
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--provider".into(),
            if self.cfg.cloud.is_openstack() {
                "openstack".into()
            } else if self.cfg.cloud.is_azure() {
                "azure".into()
            } else {
                "exoscale".into()
            },
            "--seed".into(),
            self.seed_path().display().to_string(),
            "--listen".into(),
            "192.0.2.1:8080".into(),
            "--metadata-listen".into(),
            "192.0.2.1:8081".into(),
            "--timeline".into(),
            self.timeline_path().display().to_string(),
            "--op-delay".into(),
            format!("{}ms", self.cfg.op_delay.as_millis()),
            "--route-holders".into(),
        ];
        args.extend(self.cfg.extra_sim_args.iter().cloned());
        self.say("starting the simulated cloud");
        let log = self.open_log("sim")?;
        let mut child = ns_command(&self.router, &self.cfg.exoip_bin, &args, &[])
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .context("cannot start the simulator")?;
        let stdout = child.stdout.take().expect("piped");
        *lock(&self.sim) = Some(child);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut log = log;
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
                if line.starts_with("sim: api ") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        lock(&self.tasks).push(task);
        let ready = tokio::time::timeout(Duration::from_secs(20), ready_rx).await;
        if !matches!(ready, Ok(Ok(()))) {
            let status = lock(&self.sim)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            bail!(
                "the simulator did not come up ({}):\n{}",
                match status {
                    Some(s) => format!("exited with {s}"),
                    None => "no ready line within 20 s".into(),
                },
                self.log_tail("sim", 20)
            );
        }
        Ok(())
    }

    /// Azure lb-probe: the load balancer, in R. Every [`LB_PROBE_INTERVAL`] it probes each
    /// host's [`LB_PROBE_PORT`] with a TCP connect from R (Azure's TCP probe succeeds on the
    /// handshake) and routes [`LB_FRONTEND`] to the hosts that answered, as a Floating-IP rule
    /// forwards with the destination unchanged; each change goes on its timeline. One probe
    /// decides (Azure's `probeThreshold` 1), every 100 ms rather than Azure's 5 s or more:
    /// the lab times the agents, not the load balancer's settings.
    fn start_load_balancer(&self) {
        let router = self.router.clone();
        let hosts: Vec<(Ipv4Addr, String)> = self
            .hosts
            .iter()
            .map(|h| (h.ip, h.instance_id.clone()))
            .collect();
        let events = self.lb_events.clone();
        let frontend = LB_FRONTEND.to_string();
        self.say(format_args!(
            "load balancer: {frontend} to whoever answers on TCP port {LB_PROBE_PORT}"
        ));
        let task = tokio::spawn(async move {
            let mut answering: Vec<usize> = Vec::new();
            let mut tick = tokio::time::interval(LB_PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sockets = match tcp_sockets_in(&router, hosts.len()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("load balancer: {e:#}");
                        continue;
                    }
                };
                let probes = sockets.into_iter().zip(&hosts).map(|(socket, (ip, _))| {
                    let target = SocketAddr::V4(SocketAddrV4::new(*ip, LB_PROBE_PORT));
                    async move {
                        matches!(
                            tokio::time::timeout(LB_PROBE_TIMEOUT, socket.connect(target)).await,
                            Ok(Ok(_))
                        )
                    }
                });
                let up = futures::future::join_all(probes).await;
                let now: Vec<usize> = (0..hosts.len()).filter(|&i| up[i]).collect();
                if now == answering {
                    continue;
                }
                let via: Vec<std::net::IpAddr> = now
                    .iter()
                    .map(|&i| std::net::IpAddr::V4(hosts[i].0))
                    .collect();
                let mut args = vec!["-n".to_string(), router.clone()];
                args.extend(exoip_providers::sim::route_args(
                    std::net::IpAddr::V4(LB_FRONTEND),
                    &via,
                ));
                if let Err(e) = ip(&args).await {
                    // Tried again on the next probe round: `answering` is unchanged.
                    tracing::warn!("load balancer: {e:#}");
                    continue;
                }
                let t = unix_now();
                let holders: Vec<String> = now.iter().map(|&i| hosts[i].1.clone()).collect();
                let changes = answering
                    .iter()
                    .filter(|i| !now.contains(i))
                    .map(|&i| ("detach", i))
                    .chain(
                        now.iter()
                            .filter(|i| !answering.contains(i))
                            .map(|&i| ("attach", i)),
                    );
                let mut log = lock(&events);
                for (event, i) in changes {
                    log.push(TimelineEvent {
                        t,
                        zone: String::new(),
                        ip: frontend.clone(),
                        eip_id: "load-balancer".into(),
                        event: event.into(),
                        instance: hosts[i].1.clone(),
                        holders: holders.clone(),
                    });
                }
                drop(log);
                answering = now;
            }
        });
        lock(&self.tasks).push(task);
    }

    /// Whether `host` answers the load balancer's health probe now (Azure lb-probe), probed
    /// from R as the load balancer does.
    pub async fn probe_answers(&self, host: usize) -> Result<bool> {
        let h = self.host(host)?;
        let socket = tcp_socket_in(&self.router)?;
        let target = SocketAddr::V4(SocketAddrV4::new(h.ip, LB_PROBE_PORT));
        Ok(matches!(
            tokio::time::timeout(LB_PROBE_TIMEOUT, socket.connect(target)).await,
            Ok(Ok(_))
        ))
    }

    async fn start_data_path(&mut self) -> Result<()> {
        self.say("starting HTTP servers and the client loop");
        // IPv6 labs: one dual-stack socket (IPv4 too, as mapped addresses).
        let listen = if self.cfg.ipv6 {
            "[::]:80"
        } else {
            "0.0.0.0:80"
        };
        for h in self.hosts.clone() {
            let args = vec![
                "lab".into(),
                "serve-http".into(),
                "--listen".into(),
                listen.into(),
                "--body".into(),
                h.name.clone(),
            ];
            let log = self.open_log(&format!("{}-http", h.name))?;
            let child = ns_command(&h.ns, &self.cfg.exoip_bin, &args, &[])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start an HTTP server")?;
            lock(&self.helpers).push(child);
        }
        for h in &self.hosts {
            let ns = h.ns.clone();
            self.wait_until(
                &format!("the HTTP server of {}", h.name),
                Duration::from_secs(10),
                || {
                    let ns = ns.clone();
                    async move {
                        let socket = tcp_socket_in(&ns)?;
                        Ok(tokio::time::timeout(
                            Duration::from_millis(500),
                            socket.connect("127.0.0.1:80".parse().expect("literal")),
                        )
                        .await
                        .is_ok_and(|r| r.is_ok()))
                    }
                },
            )
            .await?;
        }
        let args = vec![
            "lab".into(),
            "fetch-loop".into(),
            "--url".into(),
            http_url(self.address()),
            "--interval".into(),
            format!("{}ms", self.cfg.fetch_interval.as_millis()),
            "--timeout".into(),
            format!("{}ms", self.cfg.fetch_timeout.as_millis()),
        ];
        let mut child = ns_command(&self.client, &self.cfg.exoip_bin, &args, &[])
            .stdout(Stdio::piped())
            .stderr(self.open_log("client")?)
            .spawn()
            .context("cannot start the client loop")?;
        let stdout = child.stdout.take().expect("piped");
        lock(&self.helpers).push(child);
        let requests = self.requests.clone();
        let mut log = self.open_log("client")?;
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<FetchRecord>(&line) {
                    Ok(rec) => lock(&requests).push(rec),
                    Err(_) => {
                        let _ = writeln!(log, "{line}");
                    }
                }
            }
        });
        lock(&self.tasks).push(task);
        Ok(())
    }

    /// The agent's command line on `host` (the API secret travels in the environment).
    pub fn agent_args(&self, host: usize) -> Vec<String> {
        let h = &self.hosts[host];
        let peers: Vec<String> = if self.cfg.ipv6 {
            // By address rather than by security group (whose members the API lists with
            // both their IPv4 and IPv6 addresses): heartbeats over IPv6 only.
            self.hosts
                .iter()
                .filter(|p| p.index != host)
                .map(|p| SocketAddr::new(p.heartbeat_ip(), HEARTBEAT_PORT).to_string())
                .collect()
        } else {
            Vec::new()
        };
        let peer_args = if peers.is_empty() {
            vec!["-G".to_string(), SECURITY_GROUP.to_string()]
        } else {
            vec!["-p".to_string(), peers.join(",")]
        };
        let mut args: Vec<String> = [
            "-W",
            "-O",
            "-xi",
            &self.address().to_string(),
            &peer_args[0],
            &peer_args[1],
            "-P",
            &h.priority.to_string(),
            "-t",
            &secs_arg(self.cfg.interval),
            "-r",
            &self.cfg.dead_ratio.to_string(),
            "--metadata-url",
            METADATA_URL,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self.cfg.cloud {
            LabCloud::Exoscale => args.extend([
                "-xe".into(),
                API_URL.into(),
                "-xk".into(),
                self.api_key.clone(),
            ]),
            cloud => {
                args.extend(cloud.agent_provider_args());
                args.extend([
                    "--auth-key-file".into(),
                    self.auth_key_path().display().to_string(),
                ]);
            }
        }
        match self.cfg.cloud {
            // The secondary ipConfiguration is created on the first holder's NIC: name it.
            LabCloud::AzureSecondaryIp => args.extend([
                "--azure-ip-config".into(),
                exoip_providers::sim::azure::lab::SECONDARY_CONFIG.into(),
            ]),
            LabCloud::AzureLbProbe => {
                args.extend(["--probe-port".into(), LB_PROBE_PORT.to_string()])
            }
            _ => {}
        }
        for extra in &self.cfg.extra_eips {
            args.push("-xi".to_string());
            args.push(extra.to_string());
        }
        // Hosts share this machine's filesystem: each agent gets its own status socket.
        args.push("--status-socket".to_string());
        args.push(self.status_socket(host).display().to_string());
        args.push("--state-dir".to_string());
        args.push(
            self.dir
                .join(format!("{}.state", self.hosts[host].name))
                .display()
                .to_string(),
        );
        args.extend(self.cfg.extra_agent_args.iter().cloned());
        if let Some(more) = self.cfg.host_agent_args.get(host) {
            args.extend(more.iter().cloned());
        }
        args
    }

    /// The agent's whole command line on `host` after the binary: [`LabConfig::host_subcommand`]'s
    /// prefix, if any, then [`Lab::agent_args`].
    pub fn agent_command(&self, host: usize) -> Vec<String> {
        let mut args = self
            .cfg
            .host_subcommand
            .get(host)
            .cloned()
            .flatten()
            .unwrap_or_default();
        args.extend(self.agent_args(host));
        args
    }

    /// Runs the exoip binary to completion inside `host`'s namespace with the lab's API
    /// credentials in the environment (for `exoip check`, `exoip lab http-get`, ...).
    /// `env` adds or overrides variables. Returns (exit code, stdout, stderr).
    pub async fn exoip_in(
        &self,
        host: usize,
        args: &[String],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(Option<i32>, String, String)> {
        let h = self.host(host)?;
        let mut all_env = self.cloud_env();
        if self.cfg.cloud == LabCloud::Exoscale {
            all_env.push(("EXOSCALE_API_KEY", self.api_key.as_str()));
        }
        all_env.extend_from_slice(env);
        let child = ns_command(&h.ns, &self.cfg.exoip_bin, args, &all_env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run exoip on {}", h.name))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .with_context(|| {
                format!("exoip {args:?} on {} took more than {timeout:?}", h.name)
            })??;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The credentials of the simulated cloud, as the agents get them (environment only: never
    /// on a command line).
    fn cloud_env(&self) -> Vec<(&'static str, &str)> {
        if let Some(seed) = &self.azure_seed {
            // A service principal; the subscription and resource group come from IMDS.
            return vec![
                ("AZURE_TENANT_ID", seed.tenant_id.as_str()),
                (
                    "AZURE_CLIENT_ID",
                    seed.service_principals[0].client_id.as_str(),
                ),
                ("AZURE_CLIENT_SECRET", self.api_secret.expose()),
                ("AZURE_AUTHORITY_HOST", SIM_URL),
                ("EXOIP_AZURE_ARM_ENDPOINT", SIM_URL),
            ];
        }
        if self.cfg.cloud.is_openstack() {
            vec![
                ("OS_AUTH_URL", OS_AUTH_URL),
                ("OS_USERNAME", OS_USER),
                ("OS_PASSWORD", self.api_secret.expose()),
                ("OS_PROJECT_NAME", OS_PROJECT),
                ("OS_USER_DOMAIN_NAME", "Default"),
                ("OS_PROJECT_DOMAIN_NAME", "Default"),
                ("OS_REGION_NAME", OS_REGION),
                ("OS_INTERFACE", "public"),
                ("OS_IDENTITY_API_VERSION", "3"),
            ]
        } else {
            vec![("EXOSCALE_API_SECRET", self.api_secret.expose())]
        }
    }

    /// The heartbeat key shared by the agents outside Exoscale (mode 0600, in the lab
    /// directory).
    pub fn auth_key_path(&self) -> PathBuf {
        self.dir.join("auth-key")
    }

    /// The address the agents float ([`LabConfig::address`]).
    pub fn address(&self) -> IpAddr {
        self.cfg.address()
    }

    /// The status socket of the agent on `host` (for `exoip status --socket ...`).
    pub fn status_socket(&self, host: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.hosts[host].name))
    }

    /// Starts the agent on `host`; its output is appended to `<name>.log` in the lab directory.
    pub async fn start_agent(&self, host: usize) -> Result<()> {
        let h = self.host(host)?;
        if self.agent_running(host) {
            bail!("the agent on {} is already running", h.name);
        }
        let mut log = self.open_log(&h.name)?;
        let args = self.agent_command(host);
        let child = ns_command(&h.ns, &self.cfg.exoip_bin, &args, &self.cloud_env())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("cannot start the agent on {}", h.name))?;
        let _ = writeln!(
            log,
            "==== lab: agent started at {:.3} (pid {}) ====",
            unix_now(),
            child.id().unwrap_or(0)
        );
        self.say(format_args!("agent started on {}", h.name));
        lock(&self.agents)[host] = Some(child);
        Ok(())
    }

    pub fn agent_running(&self, host: usize) -> bool {
        let mut agents = lock(&self.agents);
        match agents.get_mut(host).and_then(|c| c.as_mut()) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn agent_pid(&self, host: usize) -> Option<u32> {
        let mut agents = lock(&self.agents);
        let child = agents.get_mut(host)?.as_mut()?;
        match child.try_wait() {
            Ok(None) => child.id(),
            _ => None,
        }
    }

    /// Sends `signal` to the agent on `host`; returns the unix time just before sending, the
    /// reference the timeline's timestamps are compared with.
    pub fn kill(&self, host: usize, signal: Signal) -> Result<f64> {
        let name = &self.host(host)?.name;
        let pid = self
            .agent_pid(host)
            .ok_or_else(|| anyhow!("no agent running on {name}"))?;
        let t = unix_now();
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("cannot signal the agent on {name}"))?;
        self.say(format_args!("{signal} sent to the agent on {name}"));
        Ok(t)
    }

    /// The state the agent on `host` reports for the lab's address through its status socket:
    /// the election's role name (`master`, `backup`, `claiming`, `init`...).
    pub async fn agent_state(&self, host: usize) -> Result<String> {
        let name = &self.host(host)?.name;
        let status = match crate::status::request(&self.status_socket(host), "status").await {
            Ok(crate::status::Response::Status(s)) => s,
            Ok(other) => bail!("the agent on {name} answered {other:?}"),
            Err(e) => return Err(anyhow!("the status of the agent on {name}: {e}")),
        };
        let address = self.address();
        status
            .ips
            .iter()
            .find(|ip| ip.ip == address)
            .map(|ip| ip.state.clone())
            .ok_or_else(|| anyhow!("the agent on {name} does not watch {address}"))
    }

    /// Waits until the agent on `host` has exited and returns how it exited.
    pub async fn wait_agent_exit(&self, host: usize, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut agents = lock(&self.agents);
                let slot = agents
                    .get_mut(host)
                    .ok_or_else(|| anyhow!("no host {host}"))?;
                match slot.as_mut() {
                    None => bail!("no agent was started on host {host}"),
                    Some(child) => {
                        if let Some(status) = child.try_wait()? {
                            *slot = None;
                            return Ok(status);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent on {} did not exit within {timeout:?}",
                    self.hosts[host].name
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Signals the agent on `host` and waits for it to exit.
    pub async fn stop_agent(
        &self,
        host: usize,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(f64, ExitStatus)> {
        let t = self.kill(host, signal)?;
        Ok((t, self.wait_agent_exit(host, timeout).await?))
    }

    /// A VM crash: SIGKILL to the agent and the host's cable cut, so neither heartbeats nor
    /// requests reach it. Returns the kill time.
    pub async fn crash(&self, host: usize) -> Result<f64> {
        let t = self.kill(host, Signal::SIGKILL)?;
        self.set_link(host, false).await?;
        self.wait_agent_exit(host, Duration::from_secs(5)).await?;
        Ok(t)
    }

    /// Brings a crashed host back as if rebooted: cable plugged, no alias left on `lo`. The agent
    /// is not started. (Azure lb-probe: the frontend IP stays on `lo`, as the system
    /// configuration of every node puts it there at boot.)
    pub async fn revive(&self, host: usize) -> Result<()> {
        // The stale address goes first: plugged in with it, the host would hold it for a
        // moment on the timeline (and answer ARP for it).
        if self.cfg.cloud != LabCloud::AzureLbProbe && self.has_alias(host).await? {
            self.del_alias(host).await?;
        }
        self.set_link(host, true).await
    }

    /// Plugs or unplugs the host's cable (its port on R's bridge).
    pub async fn set_link(&self, host: usize, up: bool) -> Result<()> {
        let h = self.host(host)?;
        ip([
            "-n",
            &self.router,
            "link",
            "set",
            &h.router_port,
            if up { "up" } else { "down" },
        ])
        .await?;
        Ok(())
    }

    pub async fn has_alias(&self, host: usize) -> Result<bool> {
        self.has_alias_of(host, self.address()).await
    }

    /// Whether `host` holds `eip` locally: /32 (IPv6: /128) on its loopback (on `eth0` in vip
    /// mode).
    pub async fn has_alias_of(&self, host: usize, eip: impl Into<IpAddr>) -> Result<bool> {
        let eip = eip.into();
        let h = self.host(host)?;
        let out = ip([
            "-n",
            &h.ns,
            "-o",
            "addr",
            "show",
            "dev",
            self.alias_device(),
        ])
        .await?;
        let needle = format!(" {} ", host_prefix(eip));
        Ok(out.lines().any(|l| l.contains(&needle)))
    }

    /// Hosts that have the address on `lo` (on `eth0` in vip mode).
    pub async fn aliases(&self) -> Result<Vec<usize>> {
        let mut v = Vec::new();
        for i in 0..self.hosts.len() {
            if self.has_alias(i).await? {
                v.push(i);
            }
        }
        Ok(v)
    }

    /// The device that holds the address locally: `lo`, or `eth0` for a private address on
    /// the LAN (OpenStack vip, Azure secondary-ip).
    fn alias_device(&self) -> &'static str {
        if self.cfg.cloud.on_lan() {
            "eth0"
        } else {
            "lo"
        }
    }

    pub async fn add_alias(&self, host: usize) -> Result<()> {
        let h = self.host(host)?;
        let addr = host_prefix(self.address());
        ip([
            "-n",
            &h.ns,
            "addr",
            "add",
            &addr,
            "dev",
            self.alias_device(),
        ])
        .await?;
        Ok(())
    }

    pub async fn del_alias(&self, host: usize) -> Result<()> {
        let h = self.host(host)?;
        let addr = host_prefix(self.address());
        ip([
            "-n",
            &h.ns,
            "addr",
            "del",
            &addr,
            "dev",
            self.alias_device(),
        ])
        .await?;
        Ok(())
    }

    /// Routes the EIP in R towards `hosts` (ECMP if several, unreachable if none), as the
    /// simulator's `--route-holders` does; for testing the topology without a simulator.
    pub async fn route_eip(&self, hosts: &[usize]) -> Result<()> {
        let eip = self.address();
        let via = hosts
            .iter()
            .map(|&i| {
                let h = self.host(i)?;
                h.ip_like(eip)
                    .ok_or_else(|| anyhow!("{} has no address of the family of {eip}", h.name))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut args = vec!["-n".to_string(), self.router.clone()];
        args.extend(exoip_providers::sim::route_args(eip, &via));
        ip(&args).await?;
        Ok(())
    }

    /// The simulator's timeline for the EIP, oldest first (from its timeline file).
    pub fn timeline(&self) -> Result<Vec<TimelineEvent>> {
        self.timeline_of(self.address())
    }

    /// The simulator's holder changes of one elastic IP. Azure lb-probe: the emulated load
    /// balancer's changes of the frontend IP (no API call moves it).
    pub fn timeline_of(&self, eip: impl Into<IpAddr>) -> Result<Vec<TimelineEvent>> {
        let eip = eip.into();
        if self.cfg.cloud == LabCloud::AzureLbProbe {
            let events = lock(&self.lb_events);
            let ip = eip.to_string();
            return Ok(events.iter().filter(|e| e.ip == ip).cloned().collect());
        }
        let raw = match std::fs::read_to_string(self.timeline_path()) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("cannot read the timeline"),
        };
        parse_timeline(&raw, &eip.to_string())
    }

    /// Hosts the EIP is attached to, according to the simulated cloud.
    pub async fn holders(&self) -> Result<Vec<usize>> {
        self.holders_of(self.address()).await
    }

    /// The hosts `eip` is attached to, per the simulator's timeline.
    pub async fn holders_of(&self, eip: impl Into<IpAddr>) -> Result<Vec<usize>> {
        let eip = eip.into();
        let events = self.timeline_of(eip)?;
        match events.last() {
            Some(e) => e
                .holders
                .iter()
                .map(|id| self.host_by_instance(id))
                .collect(),
            // The timeline records changes only: before the first one, the seed's state. Every
            // address starts unattached, except the VIP, which the seed allows on every host.
            None if self.cfg.cloud == LabCloud::OpenStackVip && eip == IpAddr::V4(VIP) => {
                Ok((0..self.hosts.len()).collect())
            }
            None => Ok(Vec::new()),
        }
    }

    pub fn host_by_instance(&self, id: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|h| h.instance_id == id)
            .ok_or_else(|| anyhow!("unknown instance {id}"))
    }

    /// Host name for an instance id, or the id itself if it is not one of ours.
    pub fn instance_name(&self, id: &str) -> String {
        self.host_by_instance(id)
            .map(|i| self.hosts[i].name.clone())
            .unwrap_or_else(|_| id.to_string())
    }

    /// GET `path` on the simulator's API port, from inside R.
    pub async fn sim_get(&self, path: &str) -> Result<serde_json::Value> {
        let url = http::Url::parse(&format!("{SIM_URL}{path}"))?;
        let socket = tcp_socket_in(&self.router)?;
        let resp = http::get_with_socket(socket, &url, Duration::from_secs(5)).await?;
        ensure!(
            resp.status == 200,
            "GET {path}: status {}: {}",
            resp.status,
            resp.text()
        );
        serde_json::from_slice(&resp.body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// PUT `body` to `path` on the simulator's API port (its control API under `/_sim/`), from
    /// inside R; returns the answer's JSON.
    pub async fn sim_put(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let url = http::Url::parse(&format!("{SIM_URL}{path}"))?;
        let socket = tcp_socket_in(&self.router)?;
        let resp = http::put_json_with_socket(socket, &url, body, Duration::from_secs(5)).await?;
        ensure!(
            resp.status == 200,
            "PUT {path}: status {}: {}",
            resp.status,
            resp.text()
        );
        serde_json::from_slice(&resp.body).with_context(|| format!("PUT {path}: not JSON"))
    }

    /// The simulator's `/_sim/state`.
    pub async fn sim_state(&self) -> Result<serde_json::Value> {
        self.sim_get("/_sim/state").await
    }

    /// Everything the client loop recorded so far.
    pub fn requests(&self) -> Vec<FetchRecord> {
        lock(&self.requests).clone()
    }

    /// Sends `payloads` as UDP datagrams from namespace `ns` (optionally from `bind`), `gap`
    /// apart. The socket lives in `ns`, the sending happens here.
    pub async fn send_udp(
        &self,
        ns: &str,
        bind: Option<SocketAddrV4>,
        to: SocketAddrV4,
        payloads: &[Vec<u8>],
        gap: Duration,
    ) -> Result<()> {
        let socket = in_netns(ns, move || {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_reuse_address(true)?;
            let local = bind.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            s.bind(&SocketAddr::V4(local).into())?;
            s.set_nonblocking(true)?;
            Ok(std::net::UdpSocket::from(s))
        })?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        for (i, p) in payloads.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            socket.send_to(p, SocketAddr::V4(to)).await?;
        }
        Ok(())
    }

    /// Sends `payloads` from namespace `ns` as UDP datagrams whose source is forged to be
    /// `src` (a raw socket writes the IP header), `gap` apart: how an attacker elsewhere on the
    /// network impersonates a peer. R does no source filtering, like many real networks.
    pub async fn send_udp_spoofed(
        &self,
        ns: &str,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payloads: &[Vec<u8>],
        gap: Duration,
    ) -> Result<()> {
        let socket = in_netns(ns, || {
            // IPPROTO_RAW implies IP_HDRINCL: we supply the header, the kernel its checksum.
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(nix::libc::IPPROTO_RAW)),
            )
        })?;
        let to: socket2::SockAddr = SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0)).into();
        for (i, p) in payloads.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let packet = build_udp4(src, dst, p)?;
            socket
                .send_to(&packet, &to)
                .with_context(|| format!("spoofed datagram {src} -> {dst}"))?;
        }
        Ok(())
    }

    /// Captures up to `count` UDP payloads seen in namespace `ns` from `src` to port `dst_port`
    /// (IPv4), for at most `timeout`. Uses a packet socket, so it sees what the kernel receives
    /// whether or not anything listens.
    pub async fn capture_udp(
        &self,
        ns: &str,
        src: Ipv4Addr,
        dst_port: u16,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        let socket = in_netns(ns, || {
            let eth_p_ip = (nix::libc::ETH_P_IP as u16).to_be() as i32;
            let s = socket2::Socket::new(
                socket2::Domain::PACKET,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::from(eth_p_ip)),
            )?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })?;
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut found = Vec::new();
            let mut buf = vec![0u8; 65536];
            let mut socket = socket;
            while found.len() < count && Instant::now() < deadline {
                let n = match socket.read(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Some((from, port, payload)) = parse_udp4(&buf[..n]) {
                    if from == src && port == dst_port {
                        found.push(payload.to_vec());
                    }
                }
            }
            Ok(found)
        })
        .await?
    }

    /// Polls `cond` every 20 ms until it is true; fails after `timeout` naming `what`. Returns
    /// how long it took.
    pub async fn wait_until<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        let mut last_err;
        loop {
            match cond().await {
                Ok(true) => return Ok(start.elapsed()),
                Ok(false) => last_err = None,
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() > timeout {
                return Err(match last_err {
                    Some(e) => e.context(format!("waiting for {what} ({timeout:?})")),
                    None => anyhow!("timed out after {timeout:?} waiting for {what}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The consistent state: exactly one holder by the API, it has the alias, and no other host
    /// with a running agent has it. Returns the holder, or None when not (yet) consistent.
    ///
    /// Per cloud: OpenStack vip: exactly one running host has the VIP on `eth0` (the API only
    /// knows who may hold it). Floating and Azure public IPs: one holder by the API, nobody has
    /// it locally (the cloud NATs it). Azure secondary-ip: one holder by the API, on its
    /// `eth0`, on no other running host's. Azure lb-probe: the load balancer sends to exactly
    /// one host, whose agent runs and whose probe answers, and every running host has the
    /// frontend IP on `lo`.
    pub async fn single_holder(&self) -> Result<Option<usize>> {
        if self.cfg.cloud == LabCloud::AzureLbProbe {
            let holders = self.holders().await?;
            let [holder] = holders[..] else {
                return Ok(None);
            };
            // Until its next probe round the load balancer may still send to a stopped agent,
            // or to a restarted one that has not opened its probe yet: ask the probe itself.
            if !self.agent_running(holder) || !self.probe_answers(holder).await? {
                return Ok(None);
            }
            for i in 0..self.hosts.len() {
                if self.agent_running(i) && !self.has_alias(i).await? {
                    return Ok(None);
                }
            }
            return Ok(Some(holder));
        }
        if self.cfg.cloud == LabCloud::OpenStackVip {
            // The API only knows who *may* hold the VIP: the holder is who has it on eth0.
            let mut with = Vec::new();
            for i in 0..self.hosts.len() {
                if self.agent_running(i) && self.has_alias(i).await? {
                    with.push(i);
                }
            }
            return Ok(match with[..] {
                [one] => Some(one),
                _ => None,
            });
        }
        let holders = self.holders().await?;
        let [holder] = holders[..] else {
            return Ok(None);
        };
        if matches!(
            self.cfg.cloud,
            LabCloud::OpenStackFloatingIp | LabCloud::AzurePublicIp
        ) {
            // Neutron and Azure NAT the address: nobody holds it locally.
            return Ok(Some(holder));
        }
        for i in 0..self.hosts.len() {
            let alias = self.has_alias(i).await?;
            if i == holder && !alias {
                return Ok(None);
            }
            if i != holder && alias && self.agent_running(i) {
                return Ok(None);
            }
        }
        Ok(Some(holder))
    }

    /// Waits for [`Lab::single_holder`].
    pub async fn wait_single_holder(&self, timeout: Duration) -> Result<usize> {
        self.wait_settled_since(0.0, Duration::ZERO, timeout).await
    }

    /// Waits until there is a single consistent holder and the timeline has been quiet for
    /// `quiet` (agents that were just started may still take the IP back after their hold-off).
    pub async fn wait_settled(&self, quiet: Duration, timeout: Duration) -> Result<usize> {
        self.wait_settled_since(0.0, quiet, timeout).await
    }

    /// Like [`Lab::wait_settled`], with the quiet time counted from `since` (unix time) at the
    /// earliest, e.g. from an agent's start.
    pub async fn wait_settled_since(
        &self,
        since: f64,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<usize> {
        let start = Instant::now();
        let mut last_err: Option<anyhow::Error>;
        loop {
            match self.single_holder().await {
                Ok(Some(holder)) => {
                    let last = self.timeline()?.last().map(|e| e.t).unwrap_or(0.0);
                    if unix_now() - last.max(since) >= quiet.as_secs_f64() {
                        return Ok(holder);
                    }
                    last_err = None;
                }
                Ok(None) => last_err = None,
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() > timeout {
                let what = if quiet.is_zero() {
                    "exactly one holder with the alias".to_string()
                } else {
                    format!("one holder with the alias and no API change for {quiet:?}")
                };
                let err = match last_err {
                    Some(e) => e.context(format!("waiting for {what}")),
                    None => anyhow!("timed out after {timeout:?} waiting for {what}"),
                };
                return Err(err.context(self.describe_state()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Holders, aliases and agents in one line, for error messages.
    pub fn describe_state(&self) -> String {
        let holders = self
            .timeline()
            .ok()
            .and_then(|t| t.last().cloned())
            .map(|e| {
                e.holders
                    .iter()
                    .map(|id| self.instance_name(id))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let running: Vec<_> = (0..self.hosts.len())
            .filter(|&i| self.agent_running(i))
            .map(|i| self.hosts[i].name.clone())
            .collect();
        let by = if self.cfg.cloud == LabCloud::AzureLbProbe {
            "the load balancer sends to"
        } else {
            "holders by the API"
        };
        format!(
            "state: {by} [{holders}], agents running [{}]",
            running.join(",")
        )
    }

    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        tail(&text, lines)
    }

    /// The last `lines` lines of every log of the lab, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = vec!["sim".into()];
        names.extend(self.hosts.iter().map(|h| h.name.clone()));
        if self.cfg.data_path {
            names.push("client".into());
        }
        for name in names {
            let t = self.log_tail(&name, lines);
            out.push_str(&format!("---- {name}.log (last {lines} lines) ----\n{t}"));
            if !t.is_empty() && !t.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    pub fn host(&self, host: usize) -> Result<&Host> {
        self.hosts
            .get(host)
            .ok_or_else(|| anyhow!("no host {host} (the lab has {})", self.hosts.len()))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn router_ns(&self) -> &str {
        &self.router
    }

    pub fn client_ns(&self) -> &str {
        &self.client
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn eip_id(&self) -> &str {
        &self.eip_id
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let mut children: Vec<Child> = Vec::new();
        children.extend(lock(&self.agents).iter_mut().filter_map(Option::take));
        children.extend(lock(&self.sim).take());
        children.append(&mut lock(&self.helpers));
        for c in &mut children {
            let _ = c.start_kill();
        }
        // Also whatever the agents may have spawned (hooks) inside the namespaces.
        for ns in self.namespaces.iter().rev() {
            netns::delete_namespace(ns);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        for c in &mut children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.cfg.keep {
            let _ = std::fs::remove_file(self.seed_path());
            let _ = File::create(self.dir.join(netns::KEEP_MARKER));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        netns::release_id(&self.id);
    }
}

/// Azure public-ip mode: Azure's host network translates the public IP to the private address
/// of the ipConfiguration that holds it before the VM sees a packet, and back on the way out.
/// The simulator routes the public IP to the holder's private address; this table in the
/// host's namespace, applied by the lab and not by anything the agent configures, translates
/// it (connection tracking turns the replies' source back into the public IP).
async fn azure_public_ip_nat(ns: &str, private: Ipv4Addr) -> Result<()> {
    let script = format!(
        "table ip exoip_lab {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr {EIP} dnat to {private}\n\t}}\n}}\n"
    );
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || {
        exoip_providers::sim::route::run_nft(
            std::process::Command::new("ip").args(["netns", "exec", &ns, "nft", "-f", "-"]),
            &script,
        )
    })
    .await?
    .map_err(|e| anyhow!("the public IP's NAT in a host: {e}"))
}

/// `n` TCP sockets (not yet connected) living in namespace `ns`, made on one thread.
fn tcp_sockets_in(ns: &str, n: usize) -> Result<Vec<tokio::net::TcpSocket>> {
    let streams = in_netns(ns, move || {
        (0..n)
            .map(|_| {
                let s = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                s.set_nonblocking(true)?;
                Ok(std::net::TcpStream::from(s))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    Ok(streams
        .into_iter()
        .map(tokio::net::TcpSocket::from_std_stream)
        .collect())
}

/// A TCP socket (not yet connected) living in namespace `ns`.
pub fn tcp_socket_in(ns: &str) -> Result<tokio::net::TcpSocket> {
    let stream = in_netns(ns, || {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        Ok(std::net::TcpStream::from(s))
    })?;
    Ok(tokio::net::TcpSocket::from_std_stream(stream))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut s = all[start..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Parses the timeline's JSON lines, keeping the events of `ip` in time order. A final line
/// without its newline may be half written and is left for the next read.
pub fn parse_timeline(raw: &str, ip: &str) -> Result<Vec<TimelineEvent>> {
    let complete = match raw.rfind('\n') {
        Some(i) => &raw[..=i],
        None => "",
    };
    let mut events = Vec::new();
    for line in complete.lines().filter(|l| !l.trim().is_empty()) {
        let e: TimelineEvent =
            serde_json::from_str(line).with_context(|| format!("bad timeline line {line:?}"))?;
        // Claim records (`"event":"claim"`, the arbiter's epochs) change no holder: only
        // attaches and detaches make the holder timeline.
        if e.ip == ip && e.event != "claim" {
            events.push(e);
        }
    }
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(events)
}

/// Holder set in effect at time `t` (empty before the first event).
pub fn holders_at(events: &[TimelineEvent], t: f64) -> Vec<String> {
    events
        .iter()
        .take_while(|e| e.t <= t)
        .last()
        .map(|e| e.holders.clone())
        .unwrap_or_default()
}

/// Intervals within `[from, to]` during which nobody held the IP.
pub fn no_holder_intervals(events: &[TimelineEvent], from: f64, to: f64) -> Vec<(f64, f64)> {
    let mut gaps = Vec::new();
    let mut empty_since = holders_at(events, from).is_empty().then_some(from);
    for e in events.iter().filter(|e| e.t > from && e.t <= to) {
        match (empty_since, e.holders.is_empty()) {
            (None, true) => empty_since = Some(e.t),
            (Some(since), false) => {
                gaps.push((since, e.t));
                empty_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = empty_since {
        gaps.push((since, to));
    }
    gaps
}

/// Total time without a holder within `[from, to]`.
pub fn no_holder_time(events: &[TimelineEvent], from: f64, to: f64) -> Duration {
    let secs: f64 = no_holder_intervals(events, from, to)
        .iter()
        .map(|(a, b)| b - a)
        .sum();
    Duration::from_secs_f64(secs.max(0.0))
}

/// An IPv4/UDP packet from `src` to `dst` (IP checksum, id and length are the kernel's job on
/// a raw socket, except the UDP length and checksum, which are ours).
fn build_udp4(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Vec<u8>> {
    let udp_len = 8 + payload.len();
    ensure!(udp_len + 20 <= 65535, "datagram too large");
    let mut p = Vec::with_capacity(20 + udp_len);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // RFC 768: one's complement sum over the pseudo-header and the UDP header and data.
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.ip().octets());
    add(&dst.ip().octets());
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(&p[20..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut checksum = !(sum as u16);
    if checksum == 0 {
        checksum = 0xffff;
    }
    p[26..28].copy_from_slice(&checksum.to_be_bytes());
    Ok(p)
}

/// (source address, destination port, payload) of an IPv4/UDP packet.
fn parse_udp4(pkt: &[u8]) -> Option<(Ipv4Addr, u16, &[u8])> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    // Fragments other than the first carry no UDP header.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff != 0 {
        return None;
    }
    let udp = pkt.get(ihl..)?;
    if udp.len() < 8 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let payload = udp.get(8..len)?;
    Some((src, dport, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: f64, event: &str, instance: &str, holders: &[&str]) -> TimelineEvent {
        TimelineEvent {
            t,
            zone: ZONE.into(),
            ip: EIP.to_string(),
            eip_id: "e".into(),
            event: event.into(),
            instance: instance.into(),
            holders: holders.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn timeline_parsing_skips_partial_lines_and_other_ips() {
        let raw = concat!(
            r#"{"t":2.0,"zone":"z","ip":"203.0.113.10","eip_id":"e","event":"detach","instance":"a","holders":[]}"#,
            "\n",
            r#"{"t":1.0,"zone":"z","ip":"203.0.113.10","eip_id":"e","event":"attach","instance":"a","holders":["a"]}"#,
            "\n",
            r#"{"t":1.5,"zone":"z","ip":"203.0.113.99","eip_id":"f","event":"attach","instance":"b","holders":["b"]}"#,
            "\n",
            r#"{"t":3.0,"zone":"z","ip":"203.0.113.10","#,
        );
        let events = parse_timeline(raw, "203.0.113.10").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "attach");
        assert_eq!(events[1].event, "detach");
        assert!(parse_timeline("{not json}\n", "x").is_err());
    }

    #[test]
    fn no_holder_accounting() {
        let events = vec![
            ev(1.0, "attach", "a", &["a"]),
            ev(5.0, "attach", "b", &["a", "b"]),
            ev(5.1, "detach", "a", &["b"]),
            ev(8.0, "detach", "b", &[]),
            ev(8.5, "attach", "a", &["a"]),
        ];
        // A handover with attach before detach leaves no gap.
        assert!(no_holder_intervals(&events, 4.0, 6.0).is_empty());
        assert_eq!(no_holder_intervals(&events, 4.0, 9.0), vec![(8.0, 8.5)]);
        // Before the first attach nobody held it; a gap open at the end runs to `to`.
        assert_eq!(no_holder_intervals(&events, 0.0, 2.0), vec![(0.0, 1.0)]);
        assert_eq!(no_holder_intervals(&events, 7.0, 8.2), vec![(8.0, 8.2)]);
        let total = no_holder_time(&events, 0.0, 10.0);
        assert!((total.as_secs_f64() - 1.5).abs() < 1e-9, "{total:?}");
        assert_eq!(holders_at(&events, 5.05), vec!["a", "b"]);
        assert!(holders_at(&events, 0.5).is_empty());
    }

    #[test]
    fn udp_parsing() {
        let mut pkt = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 11, 192, 0, 2, 12,
        ];
        pkt.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 11, 0, 0, b'a', b'b', b'c']);
        let (src, port, payload) = parse_udp4(&pkt).unwrap();
        assert_eq!(
            (src, port, payload),
            (Ipv4Addr::new(192, 0, 2, 11), 12345, &b"abc"[..])
        );
        pkt[9] = 6;
        assert!(parse_udp4(&pkt).is_none());
        pkt[9] = 17;
        pkt[24..26].copy_from_slice(&[0, 50]);
        assert!(parse_udp4(&pkt).is_none(), "length beyond the packet");
    }

    #[test]
    fn forged_udp_packets_are_well_formed() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 12), 12345);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 11), 12345);
        for payload in [&b"odd"[..], &b"even"[..], &[0xff; 7][..]] {
            let p = build_udp4(src, dst, payload).unwrap();
            assert_eq!(parse_udp4(&p), Some((*src.ip(), 12345, payload)));
            // A receiver's check: the sum over pseudo-header and segment is all ones.
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&p[12..20]);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
            pseudo.extend_from_slice(&p[20..]);
            let mut sum: u32 = pseudo
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff, "checksum of {payload:?}");
        }
    }

    #[test]
    fn address_families() {
        let mut cfg = LabConfig::new("/bin/true");
        assert_eq!(cfg.address(), IpAddr::V4(EIP));
        cfg.ipv6 = true;
        assert_eq!(cfg.address().to_string(), "2001:db8:ee::1");
        assert_eq!(host_prefix(cfg.address()), "2001:db8:ee::1/128");
        assert_eq!(host_prefix(IpAddr::V4(EIP)), "203.0.113.10/32");
        assert_eq!(http_url(cfg.address()), "http://[2001:db8:ee::1]/");
        assert_eq!(http_url(IpAddr::V4(EIP)), "http://203.0.113.10/");
        let mut h = Host {
            index: 0,
            name: "lb1".into(),
            ns: "ns".into(),
            ip: Ipv4Addr::new(192, 0, 2, 11),
            ip6: None,
            instance_id: "i".into(),
            priority: 10,
            router_port: "vh1".into(),
        };
        assert_eq!(h.heartbeat_ip().to_string(), "192.0.2.11");
        assert_eq!(h.ip_like(IpAddr::V6(EIP6)), None);
        h.ip6 = Some("2001:db8:2::11".parse().unwrap());
        assert_eq!(h.heartbeat_ip().to_string(), "2001:db8:2::11");
        assert_eq!(
            h.ip_like(IpAddr::V4(EIP)).unwrap().to_string(),
            "192.0.2.11"
        );
        assert_eq!(
            h.ip_like(IpAddr::V6(EIP6)).unwrap().to_string(),
            "2001:db8:2::11"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(secs_arg(Duration::from_millis(200)), "0.2");
        assert_eq!(secs_arg(Duration::from_secs(1)), "1");
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let (k, s) = random_api_key();
        assert!(k.starts_with("EXO") && k.len() == 27);
        assert_eq!(s.expose().len(), 43);
        assert!(!format!("{s:?}").contains(s.expose()));
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
    }
}

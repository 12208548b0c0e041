//! `exoip check`: a preflight of the `-W` configuration that prints one `OK`/`FAIL`/`SKIP` line
//! per check (configuration, credentials, own instance, each elastic IP, peers, alias
//! permissions, heartbeat port, and an authenticated probe of every peer) and changes nothing.
//!
//! Provider-dependent steps take the provider as an argument so the tests can point them at the
//! simulated cloud; the probe steps talk UDP to whatever address they are given.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoip_providers::{AddressState, Error as ProviderError, Instance, InstanceId, Provider};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::config::{AuthKeySource, Config, Holding, Mode, Peers};
use crate::wire::{self, Advert, AuthKey, DropReason, Encoder, Kind};

/// How long a peer has to answer a probe. An agent answers on receipt, whatever its heartbeat
/// interval, so this only has to cover the round trip and a busy host, not an interval.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes per peer, spread over the timeout, each from a socket of its own: one lost datagram
/// is no failure, and an answer's socket tells which probe it answers (an exact round trip).
const PROBE_ATTEMPTS: u32 = 3;
/// Outer bound of one provider call; the provider bounds its own retries well within it.
const CALL_LIMIT: Duration = Duration::from_secs(45);
/// CAP_NET_ADMIN's bit in the capability sets of /proc/<pid>/status.
const CAP_NET_ADMIN: u32 = 12;

/// Runs every check against the cloud of `cfg` and prints one line per check to stdout; true
/// if none failed. Only an error writing to stdout is an `Err`.
pub async fn run_check(cfg: &Config) -> anyhow::Result<bool> {
    let provider = crate::agent::provider(cfg);
    let mut out = io::stdout();
    Ok(check_with(cfg, provider, &mut out).await?)
}

/// [`run_check`] with the provider (or why it could not be built) and the output given.
pub async fn check_with(
    cfg: &Config,
    provider: anyhow::Result<Arc<dyn Provider>>,
    out: &mut (dyn Write + Send),
) -> io::Result<bool> {
    let mut r = Report { out, ok: true };
    r.ok_line("configuration", &summary(cfg))?;

    // Credentials and own instance: one whoami call answers both.
    let provider = match provider {
        Ok(p) => Some(p),
        Err(e) => {
            r.fail(
                "credentials",
                &format!("cannot set up the API client: {e:#}"),
            )?;
            r.skip("own instance", "no API client")?;
            None
        }
    };
    let mut me: Option<Instance> = None;
    // Whether the API accepted us; a rejection makes every later API call pointless.
    let mut api_usable = provider.is_some();
    if let Some(p) = &provider {
        match bounded(p.whoami()).await {
            Ok(i) => {
                r.ok_line("credentials", &format!("accepted by {}", cfg.api_label()))?;
                let addrs = join_ips(&i.addresses);
                let addrs = if addrs.is_empty() {
                    "no public address".to_string()
                } else {
                    addrs
                };
                r.ok_line("own instance", &format!("{} ({}), {addrs}", i.name, i.id))?;
                me = Some(i);
            }
            Err(ProviderError::Auth(m)) => {
                r.fail(
                    "credentials",
                    &format!(
                        "rejected by {}: {m} (check the credentials and their permissions)",
                        cfg.api_label()
                    ),
                )?;
                r.skip("own instance", "credentials rejected")?;
                api_usable = false;
            }
            Err(ProviderError::NotFound(m)) => {
                // A lookup that got as far as "not found" got past authentication.
                r.ok_line("credentials", &format!("accepted by {}", cfg.api_label()))?;
                let which = cfg.instance_id.as_deref().map_or_else(
                    || "this instance (id from the metadata service)".to_string(),
                    |id| format!("instance {id}"),
                );
                r.fail(
                    "own instance",
                    &format!(
                        "{which} is unknown in {}: {m} (wrong -i/--instance-id?)",
                        cfg.scope_label()
                    ),
                )?;
            }
            Err(e) => {
                r.fail("credentials", &format!("cannot verify them: {e}"))?;
                r.skip(
                    "own instance",
                    "the API or the metadata service did not answer",
                )?;
            }
        }
    }

    for w in &cfg.addresses {
        let what = format!("{} {}", cfg.address_kind(), w.ip);
        match (&provider, api_usable) {
            (Some(p), true) => match bounded(p.state(w.ip)).await {
                Ok(state) => r.ok_line(&what, &describe_state(cfg.claim, &state, me.as_ref()))?,
                Err(ProviderError::NotFound(m)) => r.fail(
                    &what,
                    &format!(
                        "no such {} in {}: {m}",
                        cfg.address_kind(),
                        cfg.scope_label()
                    ),
                )?,
                Err(ProviderError::Auth(m)) => {
                    r.fail(&what, &format!("not allowed to read it: {m}"))?
                }
                Err(e) => r.fail(&what, &e.to_string())?,
            },
            _ => r.skip(&what, "no working API client")?,
        }
    }

    // Where heartbeats (and so probes) go, with the instance the API lists there if known.
    let mut expected: Vec<(SocketAddr, Option<InstanceId>)> = Vec::new();
    let mut peers_known = true;
    match &cfg.peers {
        Peers::Static(list) => {
            r.ok_line("peers", &format!("static: {}", join_addrs(list)))?;
            expected = list.iter().map(|a| (*a, None)).collect();
        }
        Peers::None => r.ok_line("peers", "none configured (not needed by -A/-D)")?,
        Peers::Group(group) => {
            let what = format!("peers ({})", group_label(cfg, group));
            match (&provider, api_usable, &me) {
                (Some(p), true, Some(me)) => match bounded(p.peers(group, &me.id)).await {
                    Ok(list) if list.is_empty() => r.ok_line(
                        &what,
                        "no other running member: this node would hold the address alone",
                    )?,
                    Ok(list) => {
                        let shown: Vec<String> = list
                            .iter()
                            .map(|i| format!("{} ({})", i.name, join_ips(&i.addresses)))
                            .collect();
                        r.ok_line(&what, &shown.join(", "))?;
                        for i in &list {
                            if i.addresses.is_empty() {
                                r.fail(
                                    &format!("peer {}", i.name),
                                    "has no address to send heartbeats to",
                                )?;
                            }
                            for a in &i.addresses {
                                expected.push((SocketAddr::new(*a, cfg.port), Some(i.id.clone())));
                            }
                        }
                    }
                    Err(e) => {
                        peers_known = false;
                        let why = match e {
                            ProviderError::NotFound(m) => {
                                format!("no such {} in {}: {m}", group_kind(cfg), cfg.scope_label())
                            }
                            e => format!("cannot list its members: {e}"),
                        };
                        r.fail(&what, &why)?
                    }
                },
                _ => {
                    peers_known = false;
                    r.skip(&what, "needs working credentials and this instance's id")?
                }
            }
        }
    }

    r.line(&check_alias(cfg).await)?;
    if let Holding::Probe { port, .. } = &cfg.holding {
        r.line(&check_probe_port(cfg, *port))?;
    }

    let probe = Prober::new(cfg, me.as_ref());
    r.line(&check_port(cfg, &probe).await)?;

    if !peers_known {
        r.skip("peer probes", "no peer list")?;
    } else {
        let results = futures::future::join_all(
            expected
                .iter()
                .map(|(addr, _)| probe.probe(*addr, cfg.bind_ip, PROBE_TIMEOUT)),
        )
        .await;
        for ((addr, id), outcome) in expected.iter().zip(results) {
            r.line(&judge_probe(
                cfg,
                *addr,
                id.as_ref(),
                outcome,
                PROBE_TIMEOUT,
            ))?;
        }
    }
    Ok(r.ok)
}

/// Bounds a provider call, whatever the provider does.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(ProviderError::Retryable(format!(
                "no answer within {CALL_LIMIT:?}"
            )))
        })
}

/// One check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail,
    Skip,
}

/// One printed line: `OK   <what>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    pub what: String,
    pub detail: String,
}

impl Line {
    fn new(verdict: Verdict, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Line {
            verdict,
            what: what.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "OK  ",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        };
        write!(f, "{tag} {}: {}", self.what, self.detail)
    }
}

struct Report<'a> {
    out: &'a mut (dyn Write + Send),
    ok: bool,
}

impl Report<'_> {
    /// Flushed line by line: the probes take seconds and the user should see progress.
    fn line(&mut self, l: &Line) -> io::Result<()> {
        if l.verdict == Verdict::Fail {
            self.ok = false;
        }
        writeln!(self.out, "{l}")?;
        self.out.flush()
    }

    fn ok_line(&mut self, what: &str, detail: &str) -> io::Result<()> {
        self.line(&Line::new(Verdict::Ok, what, detail))
    }

    fn fail(&mut self, what: &str, why: &str) -> io::Result<()> {
        self.line(&Line::new(Verdict::Fail, what, why))
    }

    fn skip(&mut self, what: &str, why: &str) -> io::Result<()> {
        self.line(&Line::new(Verdict::Skip, what, why))
    }
}

fn join_ips(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line saying what `-W` would run with; never a secret (the key's source only).
fn summary(cfg: &Config) -> String {
    let mode = match cfg.mode {
        Mode::Watchdog => "watchdog",
        Mode::Associate => "associate",
        Mode::Dissociate => "dissociate",
    };
    let ips: Vec<String> = cfg
        .addresses
        .iter()
        .map(|w| format!("{} (priority {})", w.ip, w.priority))
        .collect();
    let peers = match &cfg.peers {
        Peers::Static(l) => format!("{} static", l.len()),
        Peers::Group(g) => group_label(cfg, g),
        Peers::None => "none".to_string(),
    };
    let bind = match cfg.bind_ip {
        Some(ip) => SocketAddr::new(ip, cfg.port).to_string(),
        None => format!(":{}", cfg.port),
    };
    let key = match &cfg.auth_key_source {
        AuthKeySource::File(p) => format!("from {p}"),
        AuthKeySource::Environment => "from EXOIP_AUTH_KEY".to_string(),
        AuthKeySource::DerivedFromApiSecret => "derived from the API secret".to_string(),
    };
    format!(
        "{mode}, {}, peers: {peers}, heartbeats on {bind} every {}, group '{}', key {key}",
        ips.join(", "),
        humantime::format_duration(cfg.interval),
        cfg.group
    )
}

/// What the API says about an address: its holders (in the local modes: who may hold it, or
/// nothing the API could know) and the last claim recorded on it.
fn describe_state(
    claim: crate::election::ClaimMode,
    state: &AddressState,
    me: Option<&Instance>,
) -> String {
    use crate::election::ClaimMode;
    let name = |h: &InstanceId| match me {
        Some(m) if &m.id == h => format!("{h} (this instance)"),
        _ => h.to_string(),
    };
    let names = |hs: &[InstanceId]| hs.iter().map(name).collect::<Vec<_>>().join(", ");
    let holders = match (claim, state.holders.as_slice()) {
        (ClaimMode::LocalOnly, _) => {
            "no API call moves it (the load balancer sends the traffic to the node answering its health probe)".to_string()
        }
        (ClaimMode::Local, []) => "exists, no port allows it (the master allows itself)".to_string(),
        (ClaimMode::Local, many) => format!("exists, allowed on {}", names(many)),
        (ClaimMode::Api, []) => "exists, not attached to any instance".to_string(),
        (ClaimMode::Api, [one]) => format!("exists, attached to {}", name(one)),
        (ClaimMode::Api, many) => format!(
            "exists, attached to {} instances: {} (the agent keeps only one)",
            many.len(),
            names(many)
        ),
    };
    match &state.record {
        Some(r) => format!(
            "{holders}; last claim recorded: epoch {} by {}",
            r.epoch,
            name(&r.holder)
        ),
        None => holders,
    }
}

/// The effective capabilities (`CapEff`) in the text of /proc/<pid>/status.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

pub fn has_net_admin(cap_eff: u64) -> bool {
    cap_eff >> CAP_NET_ADMIN & 1 == 1
}

/// What `-G` names on this cloud, with the name: "security group 'lb'", on Azure "network
/// security group 'lb'" or, with `--azure-peer-tag`, "NICs tagged k=v".
fn group_label(cfg: &Config, group: &str) -> String {
    match &cfg.cloud {
        crate::config::Cloud::Azure(a) => match &a.peer_tag {
            Some((k, v)) => format!("NICs tagged {k}={v}"),
            None => format!("network security group '{group}'"),
        },
        _ => format!("security group '{group}'"),
    }
}

fn group_kind(cfg: &Config) -> &'static str {
    match &cfg.cloud {
        crate::config::Cloud::Azure(a) if a.peer_tag.is_some() => "tagged NIC",
        crate::config::Cloud::Azure(_) => "network security group",
        _ => "security group",
    }
}

/// The alias needs CAP_NET_ADMIN and a netlink connection to the loopback device; it reports
/// whether each address is there, and adds or removes nothing.
async fn check_alias(cfg: &Config) -> Line {
    const WHAT: &str = "loopback alias";
    let no_alias = matches!(
        cfg.holding,
        Holding::Nothing
            | Holding::Probe {
                loopback: false,
                ..
            }
    );
    if no_alias {
        let why = match (&cfg.cloud, &cfg.holding) {
            (_, Holding::Probe { .. }) => {
                "not managed (--no-alias): the system configuration must put the frontend IP on lo on every node"
            }
            (crate::config::Cloud::Exoscale, _) => "disabled (--no-alias)",
            _ => "none needed (the cloud NATs the address to this VM)",
        };
        return Line::new(Verdict::Ok, WHAT, why);
    }
    let caps = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => cap_eff(&s),
        Err(e) => {
            return Line::new(
                Verdict::Fail,
                WHAT,
                format!("cannot read /proc/self/status to check capabilities: {e}"),
            )
        }
    };
    match caps {
        Some(c) if has_net_admin(c) => {}
        Some(_) => {
            return Line::new(
                Verdict::Fail,
                WHAT,
                "this process lacks CAP_NET_ADMIN: run as root, or grant it \
                 (systemd: AmbientCapabilities=CAP_NET_ADMIN), or use --no-alias",
            )
        }
        None => {
            return Line::new(
                Verdict::Fail,
                WHAT,
                "no CapEff line in /proc/self/status: cannot tell whether CAP_NET_ADMIN is held",
            )
        }
    }
    if let Holding::Probe { .. } = cfg.holding {
        // The agent adds the frontend IP at start; a check only looks.
        return check_frontend_on_lo(cfg).await;
    }
    let hold = match crate::holding::LocalHold::new(cfg).await {
        Ok(Some(h)) => h,
        Ok(None) => return Line::new(Verdict::Ok, WHAT, "none needed"),
        Err(e) => return Line::new(Verdict::Fail, WHAT, format!("{e:#}")),
    };
    let mut present = Vec::new();
    for w in &cfg.addresses {
        match hold.has(w.ip).await {
            Ok(true) => present.push(format!("{} present", w.ip)),
            Ok(false) => present.push(format!("{} absent", w.ip)),
            Err(e) => return Line::new(Verdict::Fail, WHAT, format!("{e:#}")),
        }
    }
    Line::new(
        Verdict::Ok,
        WHAT,
        format!(
            "CAP_NET_ADMIN held, {} manageable ({})",
            hold.place(),
            present.join(", ")
        ),
    )
}

/// Azure lb-probe: whether each frontend IP is on `lo` already (the agent adds what is
/// missing when it starts, and every node keeps it there).
async fn check_frontend_on_lo(cfg: &Config) -> Line {
    const WHAT: &str = "loopback alias";
    let alias = match crate::alias::Alias::new().await {
        Ok(a) => a,
        Err(e) => {
            return Line::new(
                Verdict::Fail,
                WHAT,
                format!("cannot manage the loopback interface: {e}"),
            )
        }
    };
    let mut present = Vec::new();
    for w in &cfg.addresses {
        match alias.has(w.ip).await {
            Ok(true) => present.push(format!("{} present", w.ip)),
            Ok(false) => present.push(format!("{} absent (added when the agent starts)", w.ip)),
            Err(e) => return Line::new(Verdict::Fail, WHAT, e.to_string()),
        }
    }
    Line::new(
        Verdict::Ok,
        WHAT,
        format!(
            "CAP_NET_ADMIN held, the frontend IP stays on lo on every node ({})",
            present.join(", ")
        ),
    )
}

/// Azure lb-probe: whether the health-probe port can be listened on. In use is fine when our
/// own agent runs (it answers the probe while it holds the address): its heartbeat port tells.
fn check_probe_port(cfg: &Config, port: u16) -> Line {
    const WHAT: &str = "probe port";
    match crate::probe::try_listen(port) {
        Ok(a) => Line::new(
            Verdict::Ok,
            WHAT,
            format!(
                "TCP {a} can be bound (answered only while this node holds the address)"
            ),
        ),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            match try_bind(cfg.bind_ip, cfg.port) {
                BindOutcome::InUse(_) => Line::new(
                    Verdict::Ok,
                    WHAT,
                    format!(
                        "TCP port {port} in use, as is the heartbeat port: presumably the running agent, answering the probe as the holder"
                    ),
                ),
                _ => Line::new(
                    Verdict::Fail,
                    WHAT,
                    format!(
                        "TCP port {port} is in use by another program: the agent could not answer the load balancer's health probe"
                    ),
                ),
            }
        }
        Err(e) => {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (ports below 1024 need CAP_NET_BIND_SERVICE)"
            } else {
                ""
            };
            Line::new(Verdict::Fail, WHAT, format!("{e}{hint}"))
        }
    }
}

/// Whether the heartbeat socket could be bound now.
#[derive(Debug)]
pub enum BindOutcome {
    Free(SocketAddr),
    InUse(SocketAddr),
    Failed(SocketAddr, io::Error),
}

/// Binds the heartbeat address the way the agent does (dual stack on `[::]`, IPv4 when the
/// host has no IPv6) and lets go at once.
pub fn try_bind(bind_ip: Option<IpAddr>, port: u16) -> BindOutcome {
    match crate::agent::bind_heartbeat_socket(bind_ip, port) {
        Ok(socket) => match socket.local_addr() {
            Ok(addr) => BindOutcome::Free(addr),
            Err(e) => BindOutcome::Failed(
                SocketAddr::new(bind_ip.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), port),
                e,
            ),
        },
        Err((addr, e)) if e.kind() == io::ErrorKind::AddrInUse => BindOutcome::InUse(addr),
        Err((addr, e)) => BindOutcome::Failed(addr, e),
    }
}

/// A port in use is fine when it is our own agent: a probe to it tells.
async fn check_port(cfg: &Config, probe: &Prober) -> Line {
    const WHAT: &str = "heartbeat port";
    match try_bind(cfg.bind_ip, cfg.port) {
        BindOutcome::Free(a) => Line::new(Verdict::Ok, WHAT, format!("UDP {a} can be bound")),
        BindOutcome::InUse(a) => {
            let local = match cfg.bind_ip {
                Some(ip) => ip,
                None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            let target = SocketAddr::new(local, cfg.port);
            let detail = match probe
                .probe(
                    target,
                    cfg.bind_ip,
                    PROBE_TIMEOUT.min(Duration::from_secs(1)),
                )
                .await
            {
                ProbeOutcome::Answered(ans) => format!(
                    "UDP {a} in use by a running exoip agent (it answered as {})",
                    ans.advert.node
                ),
                _ => format!(
                    "UDP {a} in use (is exoip -W already running?); nothing there answered \
                     an authenticated probe"
                ),
            };
            Line::new(Verdict::Ok, WHAT, detail)
        }
        BindOutcome::Failed(a, e) => {
            let hint = match e.kind() {
                io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
                }
                io::ErrorKind::AddrNotAvailable => {
                    format!(" ({} is not an address of this host)", a.ip())
                }
                _ => String::new(),
            };
            Line::new(
                Verdict::Fail,
                WHAT,
                format!("cannot bind UDP {a}: {e}{hint}"),
            )
        }
    }
}

/// An authenticated reply to one of our probes.
#[derive(Debug, Clone)]
pub struct Answer {
    pub advert: Advert,
    /// From our probe to its reply, on the socket that sent that very probe.
    pub rtt: Duration,
    pub from: SocketAddr,
}

/// Why a datagram that came back is not an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Dropped(DropReason),
    /// Authenticated, but not a reply (a heartbeat or a probe sent our way).
    NotAReply(Kind),
}

#[derive(Debug)]
pub enum ProbeOutcome {
    Answered(Answer),
    /// Datagrams came back, none of them an authenticated reply; the first is kept.
    Refused {
        from: SocketAddr,
        why: Refusal,
    },
    Silent,
    /// The probe could not even be sent (no route, family not available, ...).
    SendFailed(io::Error),
}

/// Sends probes with one encoder, so every probe of this run has its own, growing sequence
/// number whichever peer it goes to.
pub struct Prober {
    encoder: Mutex<Encoder>,
    key: AuthKey,
    group: u32,
    node: String,
    max_age: Option<Duration>,
}

/// Our node id in probes: `check:` and the instance id, or the host name when that is unknown;
/// cut to what fits a datagram.
fn probe_node(me: Option<&Instance>) -> String {
    let who = match me {
        Some(i) => i.id.0.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    let mut node = format!("check:{who}");
    while node.len() > wire::MAX_NODE_ID {
        node.pop();
    }
    node
}

impl Prober {
    pub fn new(cfg: &Config, me: Option<&Instance>) -> Self {
        Self::with(
            cfg.auth_key.clone(),
            wire::group_id(&cfg.group),
            probe_node(me),
            cfg.max_clock_skew,
        )
    }

    pub fn with(key: AuthKey, group: u32, node: String, max_age: Option<Duration>) -> Self {
        // A new incarnation per run, as an agent's: the peers' anti-replay tables remember the
        // last run's sequence numbers under the same node id.
        let incarnation = u64::try_from(crate::unix_time().as_micros()).unwrap_or(u64::MAX);
        Prober {
            encoder: Mutex::new(Encoder::new(key.clone(), group, incarnation)),
            key,
            group,
            node,
            max_age,
        }
    }

    /// Probes `target` up to [`PROBE_ATTEMPTS`] times within `timeout`, from sockets bound to
    /// `bind_ip` when it is of the target's family (the path heartbeats take), and returns the
    /// first authenticated reply, or what came back instead, or silence.
    pub async fn probe(
        &self,
        target: SocketAddr,
        bind_ip: Option<IpAddr>,
        timeout: Duration,
    ) -> ProbeOutcome {
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        let local_ip = match bind_ip.map(|ip| ip.to_canonical()) {
            Some(ip) if ip.is_ipv4() == target.is_ipv4() => ip,
            _ if target.is_ipv4() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let start = Instant::now();
        let deadline = start + timeout;
        let mut attempts: FuturesUnordered<_> = (0..PROBE_ATTEMPTS)
            .map(|k| {
                let at = start + timeout * k / PROBE_ATTEMPTS;
                self.attempt(SocketAddr::new(local_ip, 0), target, at, deadline)
            })
            .collect();
        let mut refused = None;
        let mut send_error = None;
        while let Some(result) = attempts.next().await {
            match result {
                Attempt::Answered(a) => return ProbeOutcome::Answered(a),
                Attempt::Refused(from, why) => {
                    refused.get_or_insert((from, why));
                }
                Attempt::SendFailed(e) => {
                    send_error.get_or_insert(e);
                }
                Attempt::Silent => {}
            }
        }
        match (refused, send_error) {
            (Some((from, why)), _) => ProbeOutcome::Refused { from, why },
            (None, Some(e)) => ProbeOutcome::SendFailed(e),
            (None, None) => ProbeOutcome::Silent,
        }
    }

    async fn attempt(
        &self,
        local: SocketAddr,
        target: SocketAddr,
        at: Instant,
        deadline: Instant,
    ) -> Attempt {
        tokio::time::sleep_until(at).await;
        let socket = match UdpSocket::bind(local).await {
            Ok(s) => s,
            Err(e) => return Attempt::SendFailed(e),
        };
        let datagram = {
            let now_ms = u64::try_from(crate::unix_time().as_millis()).unwrap_or(u64::MAX);
            let mut enc = self
                .encoder
                .lock()
                .expect("the encoder lock is never poisoned");
            match enc.encode_probe(&self.node, now_ms) {
                Ok(d) => d,
                Err(e) => return Attempt::SendFailed(io::Error::other(e.to_string())),
            }
        };
        let sent = Instant::now();
        if let Err(e) = socket.send_to(&datagram, target).await {
            return Attempt::SendFailed(e);
        }
        // Each attempt decodes on its own: a fresh table accepts the first reply of each peer.
        let mut decoder = wire::Decoder::new(self.key.clone(), self.group, self.max_age);
        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
        let mut refused = None;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            let (len, from) = match received {
                Err(_) => break,
                Ok(Ok(r)) => r,
                // E.g. an ICMP error surfaced by the kernel: keep listening for a real answer.
                Ok(Err(_)) => continue,
            };
            let now_ms = u64::try_from(crate::unix_time().as_millis()).unwrap_or(u64::MAX);
            match decoder.decode_message(&buf[..len], now_ms) {
                Ok(m) if m.kind == Kind::Reply => {
                    return Attempt::Answered(Answer {
                        advert: m.advert,
                        rtt: sent.elapsed(),
                        from,
                    })
                }
                Ok(m) => {
                    refused.get_or_insert((from, Refusal::NotAReply(m.kind)));
                }
                // A duplicate of a reply already taken says nothing new.
                Err(DropReason::Replayed) => {}
                Err(reason) => {
                    refused.get_or_insert((from, Refusal::Dropped(reason)));
                }
            }
        }
        match refused {
            Some((from, why)) => Attempt::Refused(from, why),
            None => Attempt::Silent,
        }
    }
}

enum Attempt {
    Answered(Answer),
    Refused(SocketAddr, Refusal),
    SendFailed(io::Error),
    Silent,
}

/// Turns a probe's outcome into the line for peer `addr`; `expected` is the instance the API
/// lists at that address (security-group peers only).
pub fn judge_probe(
    cfg: &Config,
    addr: SocketAddr,
    expected: Option<&InstanceId>,
    outcome: ProbeOutcome,
    timeout: Duration,
) -> Line {
    let what = format!("peer {addr}");
    let port = addr.port();
    match outcome {
        ProbeOutcome::Answered(a) => {
            if let Some(id) = expected {
                if a.advert.node != id.0 {
                    return Line::new(
                        Verdict::Fail,
                        what,
                        format!(
                            "answered as {}, but the API lists instance {id} at this address: \
                             fencing would detach the wrong instance (check its -i/--instance-id)",
                            a.advert.node
                        ),
                    );
                }
            }
            let ours: Vec<String> = cfg
                .addresses
                .iter()
                .map(|w| match a.advert.entries.iter().find(|e| e.ip == w.ip) {
                    Some(e) => format!("{} {} priority {}", w.ip, e.state.name(), e.priority),
                    None => format!("{} not watched", w.ip),
                })
                .collect();
            let mut detail = format!(
                "answered as {} in {:.1} ms",
                a.advert.node,
                a.rtt.as_secs_f64() * 1000.0
            );
            if a.from.ip().to_canonical() != addr.ip().to_canonical() {
                detail.push_str(&format!(" (from {})", a.from));
            }
            if a.advert.leaving {
                detail.push_str(", stopping");
            }
            detail.push_str(&format!("; {}", ours.join(", ")));
            if !a
                .advert
                .entries
                .iter()
                .any(|e| cfg.addresses.iter().any(|w| w.ip == e.ip))
            {
                detail.push_str(" (it watches none of our addresses)");
            }
            Line::new(Verdict::Ok, what, detail)
        }
        ProbeOutcome::Refused { from, why } => {
            let from = if from.ip().to_canonical() != addr.ip().to_canonical() {
                format!(" (from {from})")
            } else {
                String::new()
            };
            let why = match why {
                Refusal::Dropped(DropReason::BadMac) => {
                    "answered, but with a different heartbeat key".to_string()
                }
                Refusal::Dropped(DropReason::UnknownGroup) => {
                    "answered, but for another heartbeat group (--group)".to_string()
                }
                Refusal::Dropped(DropReason::Stale) => format!(
                    "answered, but its clock is more than {} away from ours: its heartbeats \
                     would be dropped (is NTP running on both?)",
                    cfg.max_clock_skew
                        .map_or("the allowed skew".to_string(), |d| {
                            humantime::format_duration(d).to_string()
                        })
                ),
                Refusal::Dropped(DropReason::Malformed) => {
                    "answered with an authenticated but malformed reply (another exoip version?)"
                        .to_string()
                }
                Refusal::Dropped(other) => format!(
                    "answered with something that is not an exoip v2 reply ({}): another program \
                     on UDP {port}, or the legacy exoip",
                    other.label()
                ),
                Refusal::NotAReply(kind) => {
                    format!("answered with a {kind:?} datagram instead of a reply")
                }
            };
            Line::new(Verdict::Fail, what, format!("{why}{from}"))
        }
        ProbeOutcome::Silent => {
            let clocks = cfg.max_clock_skew.map_or(String::new(), |d| {
                format!(
                    ", or clocks more than {} apart",
                    humantime::format_duration(d)
                )
            });
            Line::new(
                Verdict::Fail,
                what,
                format!(
                    "no authenticated answer from {addr} within {}: UDP {port} blocked (security \
                     group rule?), agent not running, or a different heartbeat key/group{clocks}",
                    humantime::format_duration(timeout)
                ),
            )
        }
        ProbeOutcome::SendFailed(e) => {
            Line::new(Verdict::Fail, what, format!("cannot send a probe: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{normalize_legacy_args, Cli};
    use crate::wire::{Entry, IpState};
    use clap::{CommandFactory, FromArgMatches};
    use exoip_providers::sim::{self, Seed, SimConfig, SimHandle};
    use std::ffi::OsString;

    const KEY: &str = "EXOcheck0123456789abcdef01";
    const SECRET: &str = "check-secret-0123456789";
    const WRONG_SECRET: &str = "wrong-secret-XYZZY-must-not-leak";
    const GROUP_ID: &str = "7f3a1b2c-0000-4000-8000-0000000000a1";
    const ME: &str = "2f6a9a43-0000-4000-8000-0000000000b1";
    const PEER1: &str = "2f6a9a43-0000-4000-8000-0000000000b2";
    const NO_SUCH_INSTANCE: &str = "2f6a9a43-0000-4000-8000-0000000000ff";
    const EIP: &str = "203.0.113.10";
    /// Attached to this process's instance at start.
    const EIP2: &str = "203.0.113.20";
    const NO_SUCH_EIP: &str = "203.0.113.99";
    /// Short, so the failing probes keep the tests quick.
    const TIMEOUT: Duration = Duration::from_millis(300);

    fn key() -> AuthKey {
        AuthKey::from_bytes(b"check-test-key-0123456789abcdef").unwrap()
    }

    fn other_key() -> AuthKey {
        AuthKey::from_bytes(b"another-key-entirely-0123456789").unwrap()
    }

    /// A configuration as `exoip check` would get it from these flags; the heartbeat key is set
    /// afterwards so the developer's EXOIP_AUTH_KEY cannot change the test.
    fn config(args: &[&str]) -> Config {
        let argv: Vec<OsString> = std::iter::once("exoip")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let matches = Cli::command()
            .try_get_matches_from(normalize_legacy_args(argv))
            .expect("valid flags");
        let cli = Cli::from_arg_matches(&matches).expect("valid flags");
        let mut cfg = Config::from_args(&cli.agent, &matches).expect("valid configuration");
        cfg.auth_key = key();
        cfg
    }

    fn prober() -> Prober {
        Prober::with(key(), wire::group_id("exoip"), "check:test".into(), None)
    }

    /// What a fake agent does with each datagram it receives.
    #[derive(Clone)]
    struct FakeAgent {
        node: String,
        /// Probes must authenticate with this key to be answered; `None`: answer anything.
        verify: Option<AuthKey>,
        reply_key: AuthKey,
        reply_group: &'static str,
        /// Offset of the reply's timestamp from our clock.
        clock_offset_ms: i64,
    }

    impl FakeAgent {
        fn honest(node: &str) -> Self {
            FakeAgent {
                node: node.into(),
                verify: Some(key()),
                reply_key: key(),
                reply_group: "exoip",
                clock_offset_ms: 0,
            }
        }

        /// Serves on `socket` until the test ends; returns what it answered from.
        fn spawn(self, socket: std::net::UdpSocket) -> SocketAddr {
            socket.set_nonblocking(true).unwrap();
            let socket = UdpSocket::from_std(socket).unwrap();
            let addr = socket.local_addr().unwrap();
            tokio::spawn(async move {
                let mut dec = self
                    .verify
                    .clone()
                    .map(|k| wire::Decoder::new(k, wire::group_id("exoip"), None));
                let mut enc =
                    Encoder::new(self.reply_key.clone(), wire::group_id(self.reply_group), 1);
                let mut buf = vec![0u8; 2048];
                loop {
                    let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    if let Some(d) = dec.as_mut() {
                        match d.decode_message(&buf[..len], now_ms()) {
                            Ok(m) if m.kind == Kind::Probe => {
                                assert!(m.advert.node.starts_with("check:"));
                            }
                            _ => continue,
                        }
                    }
                    let advert = Advert {
                        node: self.node.clone(),
                        leaving: false,
                        entries: vec![Entry {
                            ip: EIP.parse().unwrap(),
                            priority: 20,
                            state: IpState::Backup,
                            epoch: 0,
                        }],
                    };
                    let at = now_ms().saturating_add_signed(self.clock_offset_ms);
                    let reply = enc.encode_reply(&advert, at).unwrap();
                    let _ = socket.send_to(&reply, from).await;
                }
            });
            addr
        }
    }

    fn now_ms() -> u64 {
        crate::unix_time().as_millis() as u64
    }

    fn udp(addr: &str) -> std::net::UdpSocket {
        std::net::UdpSocket::bind(addr).expect("bind on loopback")
    }

    fn check_cfg() -> Config {
        config(&[
            "-W",
            "-xi",
            EIP,
            "-p",
            "127.0.0.1",
            "-xk",
            KEY,
            "-xs",
            SECRET,
            "--no-alias",
        ])
    }

    async fn probe_line(agent: Option<FakeAgent>) -> Line {
        let socket = udp("127.0.0.1:0");
        let addr = socket.local_addr().unwrap();
        // Without an agent the socket stays open and silent, as behind a dropping firewall.
        let _keep = match agent {
            Some(a) => {
                a.spawn(socket);
                None
            }
            None => Some(socket),
        };
        let outcome = prober().probe(addr, None, TIMEOUT).await;
        judge_probe(&check_cfg(), addr, None, outcome, TIMEOUT)
    }

    #[tokio::test]
    async fn a_peer_with_our_key_answers_the_probe() {
        let line = probe_line(Some(FakeAgent::honest("node-b"))).await;
        assert_eq!(line.verdict, Verdict::Ok, "{line}");
        assert!(line.detail.starts_with("answered as node-b in "), "{line}");
        assert!(
            line.detail.ends_with("; 203.0.113.10 backup priority 20"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn a_reply_with_another_key_is_named_as_such() {
        let agent = FakeAgent {
            verify: None,
            reply_key: other_key(),
            ..FakeAgent::honest("node-b")
        };
        let line = probe_line(Some(agent)).await;
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert_eq!(line.detail, "answered, but with a different heartbeat key");
    }

    #[tokio::test]
    async fn a_reply_of_another_group_or_clock_is_named_as_such() {
        let agent = FakeAgent {
            reply_group: "other-cluster",
            ..FakeAgent::honest("node-b")
        };
        let line = probe_line(Some(agent)).await;
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(line.detail.contains("another heartbeat group"), "{line}");

        let agent = FakeAgent {
            clock_offset_ms: -60_000,
            ..FakeAgent::honest("node-b")
        };
        let socket = udp("127.0.0.1:0");
        let addr = agent.spawn(socket);
        let p = Prober::with(
            key(),
            wire::group_id("exoip"),
            "check:test".into(),
            Some(Duration::from_secs(30)),
        );
        let line = judge_probe(
            &check_cfg(),
            addr,
            None,
            p.probe(addr, None, TIMEOUT).await,
            TIMEOUT,
        );
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(
            line.detail.contains("its clock is more than 30s away"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn silence_is_a_failure_naming_the_likely_causes() {
        let line = probe_line(None).await;
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(
            line.detail.contains("no authenticated answer from 127.0.0.1:")
                && line.detail.contains("within 300ms: UDP ")
                && line.detail.contains("blocked (security group rule?), agent not running, or a different heartbeat key/group"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn an_agent_answering_under_another_instance_id_fails() {
        let socket = udp("127.0.0.1:0");
        let addr = FakeAgent::honest("someone-else").spawn(socket);
        let outcome = prober().probe(addr, None, TIMEOUT).await;
        let line = judge_probe(
            &check_cfg(),
            addr,
            Some(&InstanceId::from(PEER1)),
            outcome,
            TIMEOUT,
        );
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(
            line.detail
                .contains("answered as someone-else, but the API lists instance"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn repeated_probes_to_one_agent_are_each_fresh() {
        // One prober, one agent, several probes: each must pass the agent's anti-replay check.
        let socket = udp("127.0.0.1:0");
        let addr = FakeAgent::honest("node-b").spawn(socket);
        let p = prober();
        for _ in 0..3 {
            assert!(matches!(
                p.probe(addr, None, TIMEOUT).await,
                ProbeOutcome::Answered(_)
            ));
        }
    }

    #[test]
    fn address_lines_say_what_the_api_knows_per_mode() {
        use crate::election::ClaimMode;
        use exoip_providers::ClaimRecord;
        let id = |s: &str| InstanceId(s.to_string());
        let me = Instance {
            id: id("vm-a"),
            name: "vm-a".into(),
            addresses: vec![],
        };
        let record = Some(ClaimRecord {
            epoch: 7,
            holder: id("vm-a"),
        });
        let state = |holders: &[&str], record: Option<ClaimRecord>| AddressState {
            holders: holders.iter().map(|h| id(h)).collect(),
            record,
        };
        assert_eq!(
            describe_state(ClaimMode::Api, &state(&["vm-a"], record.clone()), Some(&me)),
            "exists, attached to vm-a (this instance); last claim recorded: epoch 7 by vm-a (this instance)"
        );
        assert_eq!(
            describe_state(ClaimMode::Api, &state(&[], None), None),
            "exists, not attached to any instance"
        );
        assert_eq!(
            describe_state(ClaimMode::Local, &state(&["vm-a", "vm-b"], None), None),
            "exists, allowed on vm-a, vm-b"
        );
        let lb = describe_state(ClaimMode::LocalOnly, &state(&["vm-a"], record), None);
        assert!(lb.starts_with("no API call moves it"), "{lb}");
        assert!(lb.ends_with("last claim recorded: epoch 7 by vm-a"), "{lb}");
    }

    #[test]
    fn cap_eff_is_parsed_and_net_admin_is_bit_12() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t0000000000001000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1000));
        assert!(has_net_admin(0x1000));
        assert!(has_net_admin(0x0000_01ff_ffff_ffff));
        assert!(!has_net_admin(0x0800));
        assert!(!has_net_admin(0x2000));
        assert!(!has_net_admin(0));
        assert_eq!(cap_eff("Name:\tcat\n"), None);
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        // This very process: parseable, whatever it holds.
        assert!(cap_eff(&std::fs::read_to_string("/proc/self/status").unwrap()).is_some());
    }

    #[tokio::test]
    async fn alias_check_agrees_with_the_capabilities() {
        let mut cfg = check_cfg();
        cfg.holding = Holding::Loopback;
        let line = check_alias(&cfg).await;
        let caps = cap_eff(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
        if has_net_admin(caps) {
            assert_eq!(line.verdict, Verdict::Ok, "{line}");
            assert!(line.detail.contains("203.0.113.10 "), "{line}");
        } else {
            assert_eq!(line.verdict, Verdict::Fail, "{line}");
            assert!(line.detail.contains("lacks CAP_NET_ADMIN"), "{line}");
        }
        cfg.holding = Holding::Nothing;
        assert_eq!(check_alias(&cfg).await.detail, "disabled (--no-alias)");
    }

    #[tokio::test]
    async fn probe_port_check_tells_free_ours_and_foreign() {
        // A free TCP port for the probe, a free UDP port for the heartbeats.
        let probe_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let heartbeats = udp("127.0.0.1:0");
        let mut cfg = check_cfg();
        cfg.bind_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        cfg.port = heartbeats.local_addr().unwrap().port();
        drop(heartbeats);
        let line = check_probe_port(&cfg, probe_port);
        assert_eq!(line.verdict, Verdict::Ok, "{line}");
        assert!(line.detail.contains("can be bound"), "{line}");

        // Taken while no agent runs (its heartbeat port is free): another program.
        let taken = crate::probe::ProbeResponder::new(probe_port, None);
        taken.open().await.unwrap();
        let line = check_probe_port(&cfg, probe_port);
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(line.detail.contains("in use by another program"), "{line}");

        // Taken while the heartbeat port is in use too: the running agent, holding.
        let _agent = udp(&format!("127.0.0.1:{}", cfg.port));
        let line = check_probe_port(&cfg, probe_port);
        assert_eq!(line.verdict, Verdict::Ok, "{line}");
        assert!(
            line.detail.contains("presumably the running agent"),
            "{line}"
        );
        taken.close().await;
    }

    #[tokio::test]
    async fn bind_check_tells_free_in_use_and_impossible() {
        let held = udp("127.0.0.1:0");
        let port = held.local_addr().unwrap().port();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(matches!(try_bind(lo, port), BindOutcome::InUse(_)));
        drop(held);
        assert!(matches!(try_bind(lo, port), BindOutcome::Free(_)));
        // Binding needs no traffic: a documentation address is simply not ours.
        let foreign = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        match try_bind(foreign, port) {
            BindOutcome::Failed(_, e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
            other => panic!("{other:?}"),
        }

        // In use by something silent, then by an agent that answers.
        let held = udp("127.0.0.1:0");
        let port = held.local_addr().unwrap().port();
        let mut cfg = check_cfg();
        cfg.bind_ip = lo;
        cfg.port = port;
        let line = check_port(&cfg, &prober()).await;
        assert_eq!(line.verdict, Verdict::Ok, "{line}");
        assert!(
            line.detail
                .contains("in use (is exoip -W already running?)"),
            "{line}"
        );
        FakeAgent::honest("me-running").spawn(held);
        let line = check_port(&cfg, &prober()).await;
        assert_eq!(line.verdict, Verdict::Ok, "{line}");
        assert!(
            line.detail
                .contains("in use by a running exoip agent (it answered as me-running)"),
            "{line}"
        );

        cfg.bind_ip = foreign;
        let line = check_port(&cfg, &prober()).await;
        assert_eq!(line.verdict, Verdict::Fail, "{line}");
        assert!(
            line.detail
                .contains("192.0.2.1 is not an address of this host"),
            "{line}"
        );
    }

    fn seed() -> Seed {
        Seed::from_json(&format!(
            r#"{{
  "zone": "ch-gva-2",
  "api_keys": [{{"key": "{KEY}", "secret": "{SECRET}"}}],
  "security_groups": [{{"id": "{GROUP_ID}", "name": "exoip"}}, {{"id": "7f3a1b2c-0000-4000-8000-0000000000a2", "name": "empty"}}],
  "instances": [
    {{"id": "{ME}", "name": "me", "public_ip": "127.0.0.1", "security_groups": ["{GROUP_ID}"]}},
    {{"id": "{PEER1}", "name": "peer1", "public_ip": "127.0.0.2", "security_groups": ["{GROUP_ID}"]}}
  ],
  "elastic_ips": [
    {{"id": "8ea5e5c4-0000-4000-8000-0000000000c1", "ip": "{EIP}"}},
    {{"id": "8ea5e5c4-0000-4000-8000-0000000000c2", "ip": "{EIP2}", "attached_to": ["{ME}"]}}
  ]
}}"#
        ))
        .expect("the test seed is valid")
    }

    async fn start_sim() -> SimHandle {
        sim::start(SimConfig {
            metadata_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..SimConfig::new(seed())
        })
        .await
        .expect("the simulator starts")
    }

    /// The peer's fake agent on 127.0.0.2 and a heartbeat port that is free on 127.0.0.1.
    fn peer_socket() -> (std::net::UdpSocket, u16) {
        loop {
            let s = udp("127.0.0.2:0");
            let port = s.local_addr().unwrap().port();
            if matches!(
                try_bind(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), port),
                BindOutcome::Free(_)
            ) {
                return (s, port);
            }
        }
    }

    async fn run(sim: &SimHandle, port: u16, secret: &str, extra: &[&str]) -> (bool, String) {
        let api = sim.api_url();
        let md = sim.metadata_url().unwrap();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec![
            "-W",
            "-xk",
            KEY,
            "-xs",
            secret,
            "-xe",
            &api,
            "--metadata-url",
            &md,
            "-l",
            &bind,
            "--no-alias",
            "--api-timeout",
            "2s",
        ];
        args.extend_from_slice(extra);
        let cfg = config(&args);
        let mut out = Vec::new();
        let ok = tokio::time::timeout(
            Duration::from_secs(30),
            check_with(&cfg, crate::agent::provider(&cfg), &mut out),
        )
        .await
        .expect("the check finishes")
        .expect("writing to a Vec cannot fail");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
        (ok, text)
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[tokio::test]
    async fn every_check_passes_against_the_simulated_cloud() {
        let sim = start_sim().await;
        let (peer, port) = peer_socket();
        FakeAgent::honest(PEER1).spawn(peer);
        let (ok, text) = run(
            &sim,
            port,
            SECRET,
            &["-xi", &format!("{EIP},{EIP2}"), "-G", "exoip"],
        )
        .await;
        let l = lines(&text);
        assert!(ok, "{text}");
        assert_eq!(l.len(), 9, "{text}");
        assert!(l[0].starts_with("OK   configuration: watchdog, 203.0.113.10 (priority 10), 203.0.113.20 (priority 10), peers: security group 'exoip'"), "{text}");
        assert_eq!(
            l[1],
            format!("OK   credentials: accepted by {}", sim.api_url())
        );
        assert_eq!(l[2], format!("OK   own instance: me ({ME}), 127.0.0.1"));
        assert_eq!(
            l[3],
            "OK   elastic IP 203.0.113.10: exists, not attached to any instance"
        );
        assert_eq!(
            l[4],
            format!("OK   elastic IP 203.0.113.20: exists, attached to {ME} (this instance)")
        );
        assert_eq!(
            l[5],
            "OK   peers (security group 'exoip'): peer1 (127.0.0.2)"
        );
        assert_eq!(l[6], "OK   loopback alias: disabled (--no-alias)");
        assert_eq!(
            l[7],
            format!("OK   heartbeat port: UDP 127.0.0.1:{port} can be bound")
        );
        assert!(
            l[8].starts_with(&format!(
                "OK   peer 127.0.0.2:{port}: answered as {PEER1} in "
            )),
            "{text}"
        );
        assert!(
            l[8].ends_with("; 203.0.113.10 backup priority 20, 203.0.113.20 not watched"),
            "{text}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn rejected_credentials_fail_and_skip_what_needs_them() {
        let sim = start_sim().await;
        let (_peer, port) = peer_socket();
        let (ok, text) = run(&sim, port, WRONG_SECRET, &["-xi", EIP, "-G", "exoip"]).await;
        let l = lines(&text);
        assert!(!ok, "{text}");
        assert!(
            l[1].starts_with(&format!(
                "FAIL credentials: rejected by {}: ",
                sim.api_url()
            )),
            "{text}"
        );
        assert_eq!(l[2], "SKIP own instance: credentials rejected");
        assert_eq!(l[3], "SKIP elastic IP 203.0.113.10: no working API client");
        assert!(
            l[4].starts_with("SKIP peers (security group 'exoip'): "),
            "{text}"
        );
        assert_eq!(l[7], "SKIP peer probes: no peer list");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_instance_address_or_group_fail() {
        let sim = start_sim().await;
        let (peer, port) = peer_socket();
        let peer_addr = FakeAgent::honest("static-peer").spawn(peer);
        let static_peer = peer_addr.to_string();
        let (ok, text) = run(
            &sim,
            port,
            SECRET,
            &[
                "-xi",
                NO_SUCH_EIP,
                "-i",
                NO_SUCH_INSTANCE,
                "-p",
                &static_peer,
            ],
        )
        .await;
        let l = lines(&text);
        assert!(!ok, "{text}");
        assert_eq!(
            l[1],
            format!("OK   credentials: accepted by {}", sim.api_url())
        );
        assert!(
            l[2].starts_with(&format!(
                "FAIL own instance: instance {NO_SUCH_INSTANCE} is unknown in zone ch-gva-2: "
            )),
            "{text}"
        );
        assert!(
            l[3].starts_with("FAIL elastic IP 203.0.113.99: no such elastic IP in zone ch-gva-2"),
            "{text}"
        );
        assert_eq!(l[4], format!("OK   peers: static: {static_peer}"));
        // Static peers are probed even when this instance is unknown.
        assert!(
            l[7].starts_with(&format!("OK   peer {static_peer}: answered as static-peer")),
            "{text}"
        );

        let (ok, text) = run(&sim, port, SECRET, &["-xi", EIP, "-G", "nonexistent"]).await;
        assert!(!ok, "{text}");
        assert!(
            lines(&text)[4]
                .starts_with("FAIL peers (security group 'nonexistent'): no such security group"),
            "{text}"
        );
        assert_eq!(lines(&text)[7], "SKIP peer probes: no peer list");
        let (ok, text) = run(&sim, port, SECRET, &["-xi", EIP, "-G", "empty"]).await;
        assert!(ok, "{text}");
        assert_eq!(
            lines(&text)[4],
            "OK   peers (security group 'empty'): no other running member: this node would hold the address alone"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn an_unusable_client_fails_credentials() {
        let cfg = check_cfg();
        let mut out = Vec::new();
        let ok = check_with(&cfg, Err(anyhow::anyhow!("bad endpoint URL")), &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!ok);
        assert_eq!(
            lines(&text)[1],
            "FAIL credentials: cannot set up the API client: bad endpoint URL"
        );
        assert_eq!(
            lines(&text)[3],
            "SKIP elastic IP 203.0.113.10: no working API client"
        );
    }
}

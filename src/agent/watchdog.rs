//! The `-W` event loop: one task owns the decision core and turns the heartbeat socket, timers,
//! signals, provider results, health checks and status requests into its inputs, then executes
//! its actions.
//!
//! Everything slow runs elsewhere and reports back through channels: provider calls and health
//! checks on their own tasks, hooks in their own queue, status clients on their own
//! connections. The loop itself only does quick local work, so heartbeats are never late.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use exoip_providers::{Error as ProviderError, Instance, InstanceId, Provider};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{call, canonical, op_name, provider, target_for, whoami};
use crate::config::{Config, Peers};
use crate::election::{Action, Admin, Core, Input, Op, OpResult, Params, Role, Signal, Time};
use crate::health::{self, CheckResult, HealthTracker};
use crate::holding::LocalHold;
use crate::hooks::{self, HookEvent, Hooks};
use crate::metrics::Metrics;
use crate::sdnotify::Notifier;
use crate::status::{
    self, ApiCallInfo, ControlRequest, HealthInfo, HeartbeatCounters, IpInfo, NodeInfo, PeerInfo,
    PeerIpInfo, StatusSnapshot,
};
use crate::wire::{self, Advert, Decoder, DropReason, Encoder, Kind, Message};

/// Largest datagram we read; anything bigger is not ours.
const MAX_DATAGRAM: usize = 2048;

/// Upper bound of one provider call, retries and operation polling included.
const CALL_BOUND: Duration = Duration::from_secs(120);

/// Probe answers per second, at most.
const PROBES_PER_SECOND: u32 = 10;

/// How often, at least, peers are probed for round-trip times.
const RTT_EVERY: Duration = Duration::from_secs(5);

/// How many recent API calls status shows.
const API_HISTORY: usize = 20;

/// The heartbeat socket, bound as `exoip check` checks it.
fn bind_socket(cfg: &Config) -> anyhow::Result<UdpSocket> {
    let socket = super::bind_heartbeat_socket(cfg.bind_ip, cfg.port)
        .map_err(|(addr, e)| anyhow!("cannot bind the heartbeat socket to {addr}: {e}"))?;
    Ok(UdpSocket::from_std(socket)?)
}

/// Drop log lines, at most one every 10 s per reason, so a flood cannot flood the log.
#[derive(Default)]
struct DropLog {
    last: BTreeMap<&'static str, (Instant, u64)>,
}

impl DropLog {
    fn record(&mut self, reason: &'static str, from: SocketAddr) {
        let now = Instant::now();
        match self.last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < Duration::from_secs(10) => {
                *suppressed += 1;
            }
            slot => {
                let suppressed = slot.map(|(_, n)| *n).unwrap_or(0);
                warn!(
                    "dropped a heartbeat from {from}: {reason} ({suppressed} more dropped for this reason since the last line)"
                );
                self.last.insert(reason, (now, 0));
            }
        }
    }
}

async fn discover_peers(
    provider: &dyn Provider,
    group: &str,
    me: &InstanceId,
    port: u16,
) -> Result<Vec<SocketAddr>, ProviderError> {
    let peers = provider.peers(group, me).await?;
    // One address per peer: a dual-stack peer reached on both would get every heartbeat twice
    // (the second dropped as a replay). IPv4 when it has one, as the old exoip did.
    Ok(peers
        .iter()
        .filter_map(|p| {
            p.addresses
                .iter()
                .find(|a| a.is_ipv4())
                .or(p.addresses.first())
                .map(|a| SocketAddr::new(*a, port))
        })
        .collect())
}

/// The hook state a role change announces, if it is one hooks hear about.
fn hook_state(role: Role) -> Option<hooks::State> {
    match role {
        Role::Master => Some(hooks::State::Master),
        Role::Backup => Some(hooks::State::Backup),
        Role::Fault => Some(hooks::State::Fault),
        Role::Stopped => Some(hooks::State::Stop),
        Role::Init | Role::Claiming | Role::Leaving => None,
    }
}

/// A bounded label for the transitions metric (reasons are free text).
fn reason_class(from: Role, to: Role, reason: &str) -> &'static str {
    match (from, to) {
        (_, Role::Stopped) | (_, Role::Leaving) if reason == "stopping" => "stop",
        (_, Role::Leaving) | (_, Role::Fault) if reason.contains("operator") => "admin",
        (_, Role::Leaving) | (_, Role::Fault) => "health",
        (Role::Init, Role::Backup) => "startup",
        (Role::Fault, Role::Backup) => "recovered",
        (_, Role::Claiming) if reason.starts_with("preempting") => "preempt",
        (_, Role::Claiming) if reason.contains("detached") => "reconcile",
        (_, Role::Claiming) => "no_better_node",
        (_, Role::Master) => "attached",
        (Role::Master, Role::Backup) => "taken_over",
        (_, Role::Stopped) => "released",
        _ => "other",
    }
}

fn state_file(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("incarnation")
}

/// The heartbeat incarnation of this run: the start time, but always above the one of the
/// previous run. Peers reject a lower incarnation as a replay, so a clock that stepped back
/// across a restart (corrected at boot) would otherwise make this node look dead while alive.
fn next_incarnation(path: &std::path::Path, now_micros: u64) -> u64 {
    let last = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let incarnation = match last {
        Some(l) if l >= now_micros => {
            warn!(
                "the clock is behind the previous run's; heartbeats continue from its incarnation"
            );
            l + 1
        }
        _ => now_micros,
    };
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{incarnation}\n"))?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        warn!(
            "cannot record the heartbeat incarnation in {}: {e} (a clock stepping back across a restart would make peers ignore this node)",
            path.display()
        );
    }
    incarnation
}

/// What wakes the loop.
enum Event {
    Tick,
    Datagram(usize, SocketAddr),
    OpDone(Input, ApiCallInfo),
    Peers(Vec<SocketAddr>),
    Health(CheckResult),
    Control(ControlRequest),
    Signal(Signal),
    ProbePeers,
    ForcedExit,
}

struct Driver {
    cfg: Config,
    provider: Arc<dyn Provider>,
    me: Instance,
    hold: Option<LocalHold>,
    socket: UdpSocket,
    socket_is_v6: bool,
    encoder: Encoder,
    decoder: Decoder,
    peers: Vec<SocketAddr>,
    /// The source address each peer was last heard from.
    peer_addrs: BTreeMap<String, SocketAddr>,
    core: Core,
    origin: Instant,
    /// Unix time of `origin`, to show core times as wall-clock times.
    origin_unix: f64,
    metrics: Metrics,
    hooks: Hooks,
    /// The state hooks were last told about, per address.
    hook_states: BTreeMap<IpAddr, hooks::State>,
    health: HealthTracker,
    api_calls: VecDeque<ApiCallInfo>,
    counters: HeartbeatCounters,
    drops: DropLog,
    /// Start of the current second and probes answered in it.
    probe_window: (Instant, u32),
    /// Our own probes awaiting an answer, by peer address; round-trip times by peer id.
    probes_out: BTreeMap<SocketAddr, Instant>,
    rtt: BTreeMap<String, f64>,
    ops_tx: mpsc::UnboundedSender<(Input, ApiCallInfo)>,
    /// `--legacy-protocol`: the old Go exoip's heartbeats, in and out.
    legacy: Option<crate::legacy::Bridge>,
    /// systemd's notification socket (a no-op outside systemd).
    notifier: Notifier,
    /// READY=1 has been sent: every address has left its start-up hold-off.
    ready_sent: bool,
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    info!("this is {} ({})", me.name, me.id);
    let hold = LocalHold::new(&cfg).await?;
    let socket = bind_socket(&cfg)?;
    let socket_is_v6 = socket.local_addr()?.is_ipv6();
    info!(
        "heartbeats on {} every {:?}, a peer is dead after {:?}",
        socket.local_addr()?,
        cfg.interval,
        cfg.dead_period()
    );

    // Peers: a fixed list, or a security group re-read in the background.
    let (peers_tx, mut peers_rx) = mpsc::channel::<Vec<SocketAddr>>(1);
    let peers: Vec<SocketAddr> = match &cfg.peers {
        Peers::Static(list) => list.clone(),
        Peers::None => Vec::new(),
        Peers::Group(group) => {
            let initial = loop {
                match discover_peers(provider.as_ref(), group, &me.id, cfg.port).await {
                    Ok(p) => break p,
                    Err(e) if e.is_transient() => {
                        warn!("cannot list security group '{group}' yet: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        return Err(anyhow!(
                            "cannot list the peers in security group '{group}': {e}"
                        ))
                    }
                }
            };
            let (provider, group, me_id, port, every) = (
                provider.clone(),
                group.clone(),
                me.id.clone(),
                cfg.port,
                cfg.peer_refresh,
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match discover_peers(provider.as_ref(), &group, &me_id, port).await {
                        Ok(p) => {
                            if peers_tx.send(p).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!("cannot refresh the peers of security group '{group}': {e}")
                        }
                    }
                }
            });
            initial
        }
    };
    if peers.is_empty() {
        warn!("no peers: this node will hold the address alone");
    } else {
        let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        info!("peers: {}", list.join(", "));
    }

    let metrics = Metrics::new();
    if let Some(listen) = cfg.metrics_listen {
        let (addr, _task) = crate::metrics::serve(listen, metrics.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {listen}"))?;
        info!("metrics on http://{addr}/metrics");
    }
    let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(8);
    // Kept alive until we return: dropping it removes the socket file.
    let _status_server = match &cfg.status_socket {
        None => None,
        Some(path) => match status::serve(path, control_tx).await {
            Ok(server) => {
                info!("status socket {}", path.display());
                Some(server)
            }
            // Two agents with one socket would answer for each other: refuse to start.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e.into()),
            Err(e) => {
                warn!(
                    "no status socket at {}: {e} (exoip status will not work)",
                    path.display()
                );
                None
            }
        },
    };

    let (health_tx, mut health_rx) = mpsc::channel::<CheckResult>(64);
    let tracker = HealthTracker::new(&cfg.checks);
    let _checks = health::spawn(cfg.checks.clone(), health_tx);

    let group = wire::group_id(&cfg.group);
    let key = cfg.auth_key.clone();
    let incarnation = next_incarnation(&state_file(&cfg), crate::unix_time().as_micros() as u64);
    let encoder = Encoder::new(key.clone(), group, incarnation);
    let decoder = Decoder::new(key, group, cfg.max_clock_skew);

    let origin = Instant::now();
    let params = Params {
        node: me.id.0.clone(),
        interval: cfg.interval,
        dead_ratio: cfg.dead_ratio,
        reconcile_interval: cfg.reconcile_interval,
        leave_timeout: (cfg.dead_period() * 2).max(Duration::from_secs(2)),
        backoff_base: Duration::from_millis(100).min(cfg.interval),
        backoff_max: Duration::from_secs(10).min(cfg.reconcile_interval),
        jitter_seed: rand::random(),
        claim: cfg.claim,
        records: provider.arbiter() != exoip_providers::Arbiter::None,
        isolation_release_after: cfg.isolation_release_after,
    };
    let core = Core::new(params, &cfg.addresses, Time::ZERO);
    let legacy = cfg.legacy_protocol.then(|| {
        let nic_id = cfg.legacy_nic_id.unwrap_or_else(|| {
            crate::legacy::uuid_bytes(&me.id.0).unwrap_or_else(|| {
                warn!(
                    "--legacy-protocol: the instance id {} is not a UUID and no --legacy-nic-id is given: old peers cannot fence this node",
                    me.id.0
                );
                [0; 16]
            })
        });
        warn!("--legacy-protocol: also speaking the old exoip heartbeat, which is not authenticated (see MIGRATING FROM THE GO EXOIP in exoip(8))");
        crate::legacy::Bridge::new(cfg.interval, cfg.dead_ratio, nic_id)
    });
    let (ops_tx, mut ops_rx) = mpsc::unbounded_channel::<(Input, ApiCallInfo)>();
    let hooks = Hooks::new(cfg.hooks.clone());

    let mut d = Driver {
        provider,
        me,
        hold,
        socket,
        socket_is_v6,
        encoder,
        decoder,
        peers,
        peer_addrs: BTreeMap::new(),
        core,
        origin,
        origin_unix: crate::unix_time().as_secs_f64(),
        metrics,
        hooks,
        hook_states: BTreeMap::new(),
        health: tracker,
        api_calls: VecDeque::new(),
        counters: HeartbeatCounters::default(),
        drops: DropLog::default(),
        probe_window: (Instant::now(), 0),
        probes_out: BTreeMap::new(),
        rtt: BTreeMap::new(),
        ops_tx,
        legacy,
        notifier: Notifier::from_env(),
        ready_sent: false,
        cfg,
    };
    // systemd's watchdog (WatchdogSec=) is fed from this loop, so a stuck loop gets restarted.
    let mut watchdog_timer = d.notifier.ping_interval().map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut stop_signals = 0u32;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rtt_timer = tokio::time::interval((d.cfg.interval * 5).max(RTT_EVERY));
    rtt_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Until the first results arrive, checks count as failing: never claim on unknown health.
    let summary = d.health.summary();
    let mut input = Some(Input::Health {
        fault: summary.fault_reason,
        penalty: summary.penalty,
    });

    loop {
        if let Some(i) = input.take() {
            if d.feed(i).await {
                info!("stopped");
                d.hooks
                    .drain(d.cfg.hooks.timeout.min(Duration::from_secs(10)))
                    .await;
                return Ok(());
            }
        }
        let deadline = d.origin + d.core.next_deadline(d.elapsed());
        let event = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Event::Tick,
            received = d.socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => Event::Datagram(len, from),
                Err(e) => {
                    debug!("receive error: {e}");
                    Event::Tick
                }
            },
            Some((done, info)) = ops_rx.recv() => Event::OpDone(done, info),
            Some(list) = peers_rx.recv() => Event::Peers(list),
            Some(result) = health_rx.recv() => Event::Health(result),
            Some(request) = control_rx.recv() => Event::Control(request),
            _ = rtt_timer.tick() => Event::ProbePeers,
            _ = async {
                match watchdog_timer.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {
                d.notifier.watchdog();
                Event::Tick
            }
            _ = sigterm.recv() => { stop_signals += 1; Event::Signal(Signal::Stop) },
            _ = sigint.recv() => { stop_signals += 1; Event::Signal(Signal::Stop) },
            _ = sigusr1.recv() => Event::Signal(Signal::Promote),
            _ = sigusr2.recv() => Event::Signal(Signal::Demote),
        };
        let event = match event {
            Event::Signal(Signal::Stop) if stop_signals >= 2 => Event::ForcedExit,
            e => e,
        };
        input = match event {
            Event::Tick => Some(Input::Tick),
            Event::Datagram(len, from) => d.on_datagram(&buf[..len], from).await,
            Event::OpDone(done, info) => {
                d.record_call(info);
                Some(done)
            }
            Event::Peers(list) => {
                if list != d.peers {
                    let l: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                    info!("peers changed: {}", l.join(", "));
                    d.peers = list;
                }
                None
            }
            Event::Health(result) => d.on_health(result),
            Event::ProbePeers => {
                d.probe_peers().await;
                None
            }
            Event::Control(request) => d.on_control(request),
            Event::Signal(s) => {
                match s {
                    Signal::Stop => {
                        d.notifier.stopping();
                        info!("stopping: handing over to a peer first")
                    }
                    Signal::Promote => info!("SIGUSR1: priority value lowered by one"),
                    Signal::Demote => info!("SIGUSR2: priority value raised by one"),
                }
                Some(Input::Signal(s))
            }
            Event::ForcedExit => {
                warn!("second stop signal: exiting without waiting for the hand-over");
                return Ok(());
            }
        };
    }
}

impl Driver {
    fn elapsed(&self) -> Time {
        Instant::now().duration_since(self.origin)
    }

    fn unix(&self, t: Time) -> f64 {
        self.origin_unix + t.as_secs_f64()
    }

    /// Feeds the core and executes its actions; true when the agent should exit.
    async fn feed(&mut self, input: Input) -> bool {
        let priorities_may_change = matches!(
            input,
            Input::Health { .. } | Input::Signal(_) | Input::Admin(_)
        );
        let actions = self.core.handle(self.elapsed(), input);
        if priorities_may_change {
            for s in self.core.status(self.elapsed()) {
                self.metrics.set_priority(s.ip, s.effective_priority);
            }
        }
        let mut changed = false;
        for action in actions {
            changed |= matches!(action, Action::Transition { .. });
            if self.execute(action).await {
                return true;
            }
        }
        if changed {
            self.tell_systemd();
        }
        false
    }

    /// READY=1 once every address is past its start-up hold-off (the node takes part in the
    /// election), and STATUS= with every address's role after each change.
    fn tell_systemd(&mut self) {
        let status = self.core.status(self.elapsed());
        let line = status
            .iter()
            .map(|s| format!("{} {}", s.ip, s.role.name()))
            .collect::<Vec<_>>()
            .join(", ");
        if !self.ready_sent && status.iter().all(|s| s.role != Role::Init) {
            self.ready_sent = true;
            self.notifier.ready(&line);
        } else {
            self.notifier.status(&line);
        }
    }

    async fn execute(&mut self, action: Action) -> bool {
        match action {
            Action::Send(advert) => self.send(&advert).await,
            Action::Call { ip, id, op } => self.spawn_call(ip, id, op),
            Action::AddAlias(ip) => {
                if let Some(h) = &self.hold {
                    if let Err(e) = h.add(ip).await {
                        error!("{e:#}");
                    }
                }
            }
            Action::RemoveAlias(ip) => {
                if let Some(h) = &self.hold {
                    if let Err(e) = h.remove(ip).await {
                        error!("{e:#}");
                    }
                }
            }
            Action::Transition {
                ip,
                from,
                to,
                reason,
                peer,
            } => self.on_transition(ip, from, to, reason, peer),
            Action::Reasserted(ip) => {
                debug!("{ip}: reconcile confirmed we hold it");
                if let Some(h) = &self.hold {
                    // Neighbours' caches may have expired or followed someone else meanwhile.
                    h.announce_again(ip, Duration::ZERO).await;
                }
                self.notify(
                    ip,
                    hooks::State::Master,
                    "re-asserted after a reconcile",
                    None,
                    true,
                );
            }
            Action::Reannounce(ip) => {
                if let Some(h) = &self.hold {
                    debug!("{ip}: a peer that announced it too stopped: announcing it again");
                    let after = crate::announce::DEFAULT_GAP * crate::announce::DEFAULT_COUNT;
                    h.announce_again(ip, after).await;
                }
            }
            Action::CallFailed {
                ip,
                op,
                message,
                retry_in,
            } => warn!(
                "{ip}: {} failed: {message}; retrying in {retry_in:?}",
                op_name(&op)
            ),
            Action::Exit => return true,
        }
        false
    }

    async fn send(&mut self, advert: &Advert) {
        let datagram = match self
            .encoder
            .encode(advert, crate::unix_time().as_millis() as u64)
        {
            Ok(d) => d,
            Err(e) => {
                error!("cannot encode a heartbeat: {e}");
                return;
            }
        };
        let now = self.elapsed();
        let legacy_payloads = match &self.legacy {
            Some(bridge) => bridge.payloads(advert),
            None => Vec::new(),
        };
        let mut sent = 0;
        for peer in &self.peers {
            let Some(target) = target_for(self.socket_is_v6, *peer) else {
                continue;
            };
            let (v2, old) = match &self.legacy {
                Some(b) => (b.wants_v2(now, peer.ip()), b.wants_legacy(now, peer.ip())),
                None => (true, false),
            };
            let datagrams = v2
                .then_some(datagram.as_slice())
                .into_iter()
                .chain(legacy_payloads.iter().filter(|_| old).map(|p| p.as_slice()));
            for d in datagrams {
                match self.socket.send_to(d, target).await {
                    Ok(_) => sent += 1,
                    Err(e) => debug!("cannot send a heartbeat to {peer}: {e}"),
                }
            }
        }
        self.counters.sent += sent;
        self.metrics.heartbeat_sent(sent);
    }

    /// An old exoip heartbeat (`--legacy-protocol`): the advert it implies, or a counted drop.
    fn on_legacy_datagram(&mut self, datagram: &[u8], from: SocketAddr) -> Option<Input> {
        let now = self.elapsed();
        let core = &self.core;
        // Snapshots only for a datagram that passed the decode and source checks (the bridge
        // calls this last): a flood from strangers costs no more than a decode.
        let view = |eip: std::net::Ipv4Addr| {
            let ip = IpAddr::V4(eip);
            core.status(now).iter().find(|s| s.ip == ip)?;
            let peers = core.peers(now);
            let own = core.advert();
            Some(crate::legacy::AddressView {
                ours: own
                    .entries
                    .iter()
                    .find(|e| e.ip == ip)
                    .map(crate::legacy::announced),
                // What other upgraded peers tell the old one (old peers are counted apart).
                v2_peers: peers
                    .iter()
                    .filter(|p| p.alive && !p.leaving && !p.id.starts_with("legacy-"))
                    .filter_map(|p| p.entries.iter().find(|e| e.ip == ip))
                    .map(crate::legacy::announced)
                    .collect(),
            })
        };
        let bridge = self.legacy.as_mut()?;
        match bridge.on_datagram(now, from.ip(), datagram, &self.peers, view) {
            Ok(advert) => Some(self.accepted(advert, from)),
            Err(drop) => {
                self.record_drop(drop.label(), from);
                None
            }
        }
    }

    fn spawn_call(&self, ip: IpAddr, id: u64, op: Op) {
        let (provider, tx, me) = (
            self.provider.clone(),
            self.ops_tx.clone(),
            self.me.id.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            // The provider bounds every call itself; this outer bound guarantees the core
            // always hears back, whatever a provider does.
            let result = tokio::time::timeout(CALL_BOUND, call(provider.as_ref(), ip, &op, &me))
                .await
                .unwrap_or_else(|_| OpResult::Failed {
                    kind: "retryable",
                    message: format!("no answer within {CALL_BOUND:?}"),
                    retry_after: None,
                });
            let (ok, error) = match &result {
                OpResult::Failed { kind, message, .. } => {
                    (false, Some(format!("{kind}: {message}")))
                }
                _ => (true, None),
            };
            let info = ApiCallInfo {
                at_unix: crate::unix_time().as_secs_f64(),
                op: op_label(&op).to_string(),
                ip: Some(ip),
                ok,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                error,
            };
            let _ = tx.send((Input::OpDone { ip, id, result }, info));
        });
    }

    fn record_call(&mut self, info: ApiCallInfo) {
        let outcome = match &info.error {
            None => "ok",
            Some(e) => e.split(':').next().unwrap_or("error"),
        };
        self.metrics.api_call(
            &info.op,
            outcome,
            Duration::from_secs_f64(info.latency_ms / 1000.0),
        );
        self.api_calls.push_front(info);
        self.api_calls.truncate(API_HISTORY);
    }

    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) -> Option<Input> {
        let reply_to = from;
        let from = canonical(from);
        if self.legacy.is_some() && crate::legacy::looks_legacy(datagram) {
            return self.on_legacy_datagram(datagram, from);
        }
        match self
            .decoder
            .decode_message(datagram, crate::unix_time().as_millis() as u64)
        {
            Ok(Message {
                kind: Kind::Heartbeat,
                advert,
            }) => {
                let now = self.elapsed();
                if let Some(bridge) = &mut self.legacy {
                    bridge.heard_v2(now, from.ip());
                }
                Some(self.accepted(advert, from))
            }
            Ok(Message {
                kind: Kind::Probe,
                advert,
            }) => {
                self.answer_probe(&advert.node, reply_to).await;
                None
            }
            Ok(Message {
                kind: Kind::Reply,
                advert,
            }) => {
                match self.probes_out.remove(&from) {
                    Some(sent) => {
                        let rtt = sent.elapsed().as_secs_f64() * 1000.0;
                        self.rtt.insert(advert.node, rtt);
                    }
                    None => self.record_drop(DropReason::NotHeartbeat.label(), from),
                }
                None
            }
            Err(reason) => {
                self.record_drop(reason.label(), from);
                None
            }
        }
    }

    /// A heartbeat taken (v2, or implied by an old exoip's): counted, its source remembered.
    fn accepted(&mut self, advert: Advert, from: SocketAddr) -> Input {
        self.counters.received += 1;
        self.metrics.heartbeat_received();
        self.peer_addrs.insert(advert.node.clone(), from);
        Input::Heartbeat(advert)
    }

    fn record_drop(&mut self, label: &'static str, from: SocketAddr) {
        *self.counters.dropped.entry(label.to_string()).or_default() += 1;
        self.metrics.heartbeat_dropped(label);
        self.drops.record(label, from);
    }

    /// Probes every peer once, to measure round-trip times for status.
    async fn probe_peers(&mut self) {
        let probe = match self
            .encoder
            .encode_probe(&self.me.id.0, crate::unix_time().as_millis() as u64)
        {
            Ok(p) => p,
            Err(e) => {
                debug!("cannot encode a probe: {e}");
                return;
            }
        };
        // Answers older than one round are lost: forget them.
        self.probes_out.clear();
        for peer in &self.peers {
            if let Some(target) = target_for(self.socket_is_v6, *peer) {
                if self.socket.send_to(&probe, target).await.is_ok() {
                    self.probes_out.insert(canonical(target), Instant::now());
                }
            }
        }
    }

    /// Answers an authenticated probe (`exoip check` on a peer) with our current heartbeat.
    /// Only authenticated probes get here, and each is accepted once (anti-replay), so replies
    /// cannot be used for amplification; the rate limit bounds even a key holder.
    async fn answer_probe(&mut self, node: &str, to: SocketAddr) {
        let now = Instant::now();
        if now.duration_since(self.probe_window.0) >= Duration::from_secs(1) {
            self.probe_window = (now, 0);
        }
        if self.probe_window.1 >= PROBES_PER_SECOND {
            debug!(
                "probe from {node} at {to} not answered: more than {PROBES_PER_SECOND} per second"
            );
            return;
        }
        self.probe_window.1 += 1;
        let advert = self.core.advert();
        match self
            .encoder
            .encode_reply(&advert, crate::unix_time().as_millis() as u64)
        {
            Ok(reply) => {
                if let Err(e) = self.socket.send_to(&reply, to).await {
                    debug!("cannot answer the probe from {node} at {to}: {e}");
                } else {
                    debug!("answered a probe from {node} at {}", canonical(to));
                }
            }
            Err(e) => error!("cannot encode a probe reply: {e}"),
        }
    }

    fn on_health(&mut self, result: CheckResult) -> Option<Input> {
        // Every run counts in the metrics; the core hears only verdict changes (fall/rise).
        self.metrics.health(&result.name, result.ok);
        let change = self.health.apply(&result)?;
        if change.ok {
            info!("{change}");
        } else {
            warn!("{change}");
        }
        Some(Input::Health {
            fault: change.summary.fault_reason,
            penalty: change.summary.penalty,
        })
    }

    fn on_control(&mut self, request: ControlRequest) -> Option<Input> {
        let (admin, reply, message) = match request {
            ControlRequest::Status(reply) => {
                let _ = reply.send(self.snapshot());
                return None;
            }
            ControlRequest::Release(r) => (
                Admin::Release,
                r,
                "releasing: handing over to a peer, staying out until `exoip resume`",
            ),
            ControlRequest::Resume(r) => (Admin::Resume, r, "resumed: back in the election"),
            ControlRequest::Promote(r) => (
                Admin::Promote,
                r,
                "promoted: priority value 1 until `exoip resume`",
            ),
        };
        info!("operator: {message}");
        let _ = reply.send(Ok(message.to_string()));
        Some(Input::Admin(admin))
    }

    fn on_transition(
        &mut self,
        ip: IpAddr,
        from: Role,
        to: Role,
        reason: String,
        peer: Option<String>,
    ) {
        info!("{ip}: {} -> {} ({reason})", from.name(), to.name());
        self.metrics
            .transition(ip, to.name(), reason_class(from, to, &reason));
        self.metrics.set_state(ip, to.name());
        if let Some(s) = self.core.status(self.elapsed()).iter().find(|s| s.ip == ip) {
            self.metrics.set_priority(ip, s.effective_priority);
        }
        if let Some(state) = hook_state(to) {
            if self.hook_states.get(&ip) != Some(&state) {
                self.notify(ip, state, &reason, peer, false);
            }
        }
    }

    fn notify(
        &mut self,
        ip: IpAddr,
        state: hooks::State,
        reason: &str,
        peer: Option<String>,
        reassert: bool,
    ) {
        let previous = self.hook_states.insert(ip, state);
        if !self.hooks.enabled() {
            return;
        }
        self.hooks.fire(HookEvent {
            state,
            previous,
            address: ip,
            reason: reason.to_string(),
            peer,
            epoch: None,
            provider: self.provider.name().to_string(),
            instance: self.me.id.0.clone(),
            reassert,
        });
    }

    fn snapshot(&self) -> StatusSnapshot {
        let now = self.elapsed();
        let ips = self
            .core
            .status(now)
            .into_iter()
            .map(|s| IpInfo {
                ip: s.ip,
                state: s.role.name().to_string(),
                reason: s.reason,
                state_since_unix: self.unix(s.since),
                priority: s.priority,
                effective_priority: s.effective_priority,
                winner: s.winner,
                holders: s.holders,
                holders_checked_unix: s.holders_checked.map(|t| self.unix(t)),
                next_reconcile_in_ms: s
                    .next_reconcile
                    .map(|t| t.saturating_sub(now).as_millis() as u64),
                epoch: s.epoch,
                record: s.record,
            })
            .collect();
        let peers = self
            .core
            .peers(now)
            .into_iter()
            .map(|p| PeerInfo {
                address: self.peer_addrs.get(&p.id).map(|a| a.to_string()),
                rtt_ms: self.rtt.get(&p.id).copied(),
                id: p.id,
                last_heard_ago_ms: now.saturating_sub(p.last_heard).as_millis() as u64,
                alive: p.alive,
                leaving: p.leaving,
                delay_ms: None,
                ips: p
                    .entries
                    .iter()
                    .map(|e| PeerIpInfo {
                        ip: e.ip,
                        state: e.state.name().to_string(),
                        priority: e.priority,
                    })
                    .collect(),
            })
            .collect();
        let health = self
            .health
            .checks()
            .iter()
            .map(|c| HealthInfo {
                name: c.name.clone(),
                kind: c.kind.to_string(),
                ok: c.ok == Some(true),
                weight: c.weight,
                consecutive_failures: c.consecutive_failures,
                last_error: c.last_error.clone(),
                last_run_unix: c.last_run_unix,
            })
            .collect();
        StatusSnapshot {
            version: status::STATUS_VERSION,
            node: NodeInfo {
                id: self.me.id.0.clone(),
                name: self.me.name.clone(),
                provider: self.provider.name().to_string(),
                claim: self.cfg.claim,
            },
            started_unix: self.origin_unix,
            ips,
            peers,
            health,
            api_calls: self.api_calls.iter().cloned().collect(),
            heartbeats: self.counters.clone(),
            admin: self.core.admin().map(|a| match a {
                Admin::Release => "released".to_string(),
                Admin::Promote => "promoted".to_string(),
                Admin::Resume => "none".to_string(),
            }),
        }
    }
}

fn op_label(op: &Op) -> &'static str {
    match op {
        Op::ReadHolders => "holders",
        Op::Attach { .. } => "attach",
        Op::Admit(_) => "admit",
        Op::Detach(_) => "detach",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_classes_are_bounded_and_meaningful() {
        assert_eq!(
            reason_class(
                Role::Backup,
                Role::Claiming,
                "preempting lb2: better priority"
            ),
            "preempt"
        );
        assert_eq!(
            reason_class(Role::Master, Role::Leaving, "stopping"),
            "stop"
        );
        assert_eq!(
            reason_class(Role::Master, Role::Leaving, "released by the operator"),
            "admin"
        );
        assert_eq!(
            reason_class(Role::Backup, Role::Fault, "process:haproxy failed"),
            "health"
        );
        assert_eq!(
            reason_class(Role::Init, Role::Backup, "hold-off over"),
            "startup"
        );
        assert_eq!(
            reason_class(Role::Master, Role::Backup, "lb1 took over"),
            "taken_over"
        );
    }

    #[test]
    fn the_incarnation_only_grows_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("incarnation");
        assert_eq!(
            next_incarnation(&path, 1_000),
            1_000,
            "first run: the clock"
        );
        assert_eq!(next_incarnation(&path, 5_000), 5_000, "clock moved on");
        // The clock stepped back across a restart: still above the last run.
        assert_eq!(next_incarnation(&path, 2_000), 5_001);
        assert_eq!(next_incarnation(&path, 2_001), 5_002);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(
            next_incarnation(&path, 7_000),
            7_000,
            "unreadable state: the clock"
        );
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.11]:12345".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "192.0.2.11:12345".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[2001:db8::1]:12345".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(
            target_for(true, "192.0.2.11:1".parse().unwrap()),
            Some(mapped.ip()).map(|ip| SocketAddr::new(ip, 1))
        );
    }
}

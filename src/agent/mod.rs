//! The tokio driver: turns the socket, timers, signals and provider results into inputs of the
//! decision core, and executes the core's actions.
//!
//! Provider calls run on tasks of their own and report back through a channel, so a slow or
//! failing cloud API never delays a heartbeat (the Go exoip held a lock across API calls, and a
//! slow API made a healthy master look dead).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use exoip_providers::exoscale::{Exoscale, ExoscaleConfig};
use exoip_providers::{Error as ProviderError, Instance, InstanceId, Provider};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::alias::Alias;
use crate::cli::AgentArgs;
use crate::config::{Config, Mode, Peers};
use crate::election::{self, Action, Core, Input, Op, OpResult, Params, Signal};
use crate::wire::{self, Decoder, Encoder};

/// Largest datagram we accept; anything bigger is not ours.
const MAX_DATAGRAM: usize = 2048;

/// Upper bound of one provider call, retries and operation polling included.
const CALL_BOUND: Duration = Duration::from_secs(120);

/// Entry point of the agent modes (`-W`, `-A`, `-D`, `-n`). Exit codes: 0 success, 1 runtime
/// failure (e.g. credentials rejected), 2 invalid configuration.
pub fn main(
    args: AgentArgs,
    matches: &clap::ArgMatches,
    runtime: tokio::runtime::Runtime,
) -> ExitCode {
    let cfg = match Config::from_args(&args, matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("exoip: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_stdout, cfg.verbose);
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if cfg.validate_only {
        println!("{cfg}");
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    let result = runtime.block_on(async {
        match cfg.mode {
            Mode::Watchdog => watchdog(cfg).await,
            Mode::Associate => associate(cfg).await,
            Mode::Dissociate => dissociate(cfg).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

pub fn init_logging(stdout: bool, verbose: bool) {
    use tracing_subscriber::EnvFilter;
    // The netlink crates warn about kernel attributes they do not model (harmless, once per
    // start): keep them to errors unless RUST_LOG says otherwise.
    let quiet =
        "netlink_packet_route=error,netlink_packet_core=error,netlink_proto=error,rtnetlink=error";
    let default = if verbose {
        format!("exoip=debug,exoip_providers=debug,info,{quiet}")
    } else {
        format!("info,{quiet}")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Colours only on a terminal: logs in files and journals stay plain text.
    let _ = if stdout {
        let ansi = std::io::stdout().is_terminal();
        builder
            .with_ansi(ansi)
            .with_writer(std::io::stdout)
            .try_init()
    } else {
        let ansi = std::io::stderr().is_terminal();
        builder
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init()
    };
}

pub(crate) fn provider(cfg: &Config) -> anyhow::Result<Arc<dyn Provider>> {
    let mut pc = ExoscaleConfig::new(cfg.api_key.clone(), cfg.api_secret.clone());
    pc.endpoint = cfg.api_endpoint.clone();
    pc.instance_id = cfg.instance_id.as_deref().map(InstanceId::from);
    pc.metadata_url = cfg.metadata_url.clone();
    pc.request_timeout = cfg.api_timeout;
    let p = Exoscale::new(pc).map_err(|e| anyhow!("cannot set up the Exoscale client: {e}"))?;
    Ok(Arc::new(p))
}

/// Finds out who we are, retrying transient failures (the metadata service may not be up yet at
/// boot) but failing at once on errors only a configuration change can fix.
async fn whoami(provider: &dyn Provider) -> anyhow::Result<Instance> {
    let mut delay = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match provider.whoami().await {
            Ok(me) => return Ok(me),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                warn!("cannot identify this instance yet: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow!("cannot identify this instance: {e}")),
        }
    }
}

async fn alias_or_none(cfg: &Config) -> anyhow::Result<Option<Alias>> {
    if cfg.no_alias {
        return Ok(None);
    }
    Ok(Some(
        Alias::new()
            .await
            .context("cannot manage the loopback alias")?,
    ))
}

async fn associate(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    let alias = alias_or_none(&cfg).await?;
    for w in &cfg.addresses {
        provider
            .attach(w.ip, &me.id)
            .await
            .map_err(|e| anyhow!("cannot attach {} to {}: {e}", w.ip, me.id))?;
        info!("{}: attached to {} ({})", w.ip, me.name, me.id);
        if let Some(a) = &alias {
            a.add(w.ip)
                .await
                .with_context(|| format!("{}: cannot add the loopback alias", w.ip))?;
        }
    }
    Ok(())
}

async fn dissociate(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    let alias = alias_or_none(&cfg).await?;
    for w in &cfg.addresses {
        if let Some(a) = &alias {
            a.remove(w.ip)
                .await
                .with_context(|| format!("{}: cannot remove the loopback alias", w.ip))?;
        }
        provider
            .detach(w.ip, &me.id)
            .await
            .map_err(|e| anyhow!("cannot detach {} from {}: {e}", w.ip, me.id))?;
        info!("{}: detached from {} ({})", w.ip, me.name, me.id);
    }
    Ok(())
}

/// The heartbeat socket: dual stack on `[::]` when possible, IPv4 otherwise.
fn bind_socket(cfg: &Config) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let try_bind =
        |addr: SocketAddr, v6only: Option<bool>| -> std::io::Result<std::net::UdpSocket> {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            if let Some(only) = v6only {
                socket.set_only_v6(only)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        };
    let std_socket = match cfg.bind_ip {
        Some(ip) => try_bind(SocketAddr::new(ip, cfg.port), ip.is_ipv6().then_some(true)),
        None => try_bind(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port),
            Some(false),
        )
        .or_else(|_| {
            try_bind(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.port),
                None,
            )
        }),
    }
    .with_context(|| format!("cannot bind the heartbeat socket to {}", cfg.bind_addr()))?;
    Ok(UdpSocket::from_std(std_socket)?)
}

/// Maps a peer address to what the socket's family can send to.
fn target_for(socket_is_v6: bool, peer: SocketAddr) -> Option<SocketAddr> {
    match (socket_is_v6, peer) {
        (true, SocketAddr::V4(v4)) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        (false, SocketAddr::V6(v6)) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
        (_, p) => Some(p),
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Drops by reason, with a log line at most every 10 s per reason so a flood cannot flood logs.
#[derive(Default)]
struct DropLog {
    counts: BTreeMap<&'static str, (u64, Option<Instant>, u64)>,
}

impl DropLog {
    fn record(&mut self, reason: &'static str, from: SocketAddr) {
        let entry = self.counts.entry(reason).or_insert((0, None, 0));
        entry.0 += 1;
        entry.2 += 1;
        let now = Instant::now();
        if entry
            .1
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(10))
        {
            warn!(
                "dropped heartbeat from {from}: {reason} ({} dropped for this reason since the last report, {} in total)",
                entry.2, entry.0
            );
            entry.1 = Some(now);
            entry.2 = 0;
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
    Ok(peers
        .iter()
        .flat_map(|p| p.addresses.iter().map(|a| SocketAddr::new(*a, port)))
        .collect())
}

async fn watchdog(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    info!("this is {} ({})", me.name, me.id);
    let alias = alias_or_none(&cfg).await?;
    let socket = bind_socket(&cfg)?;
    let socket_is_v6 = socket.local_addr()?.is_ipv6();
    info!(
        "heartbeats on {} every {:?}, dead after {:?}",
        socket.local_addr()?,
        cfg.interval,
        cfg.dead_period()
    );

    // Peers: a fixed list, or a security group re-read in the background.
    let (peers_tx, mut peers_rx) = mpsc::channel::<Vec<SocketAddr>>(1);
    let mut peers: Vec<SocketAddr> = match &cfg.peers {
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

    let key = cfg.auth_key.clone();
    let group = wire::group_id(&cfg.group);
    let mut encoder = Encoder::new(key.clone(), group, unix_now().as_micros() as u64);
    let mut decoder = Decoder::new(key, group, cfg.max_clock_skew);

    let origin = Instant::now();
    let elapsed = || Instant::now().duration_since(origin);
    let params = Params {
        node: me.id.0.clone(),
        interval: cfg.interval,
        dead_ratio: cfg.dead_ratio,
        reconcile_interval: cfg.reconcile_interval,
        leave_timeout: (cfg.dead_period() * 2).max(Duration::from_secs(2)),
        backoff_base: Duration::from_millis(100).min(cfg.interval),
        backoff_max: Duration::from_secs(10).min(cfg.reconcile_interval),
        jitter_seed: rand::random(),
    };
    let mut core = Core::new(params, &cfg.addresses, elapsed());

    let (ops_tx, mut ops_rx) = mpsc::unbounded_channel::<Input>();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut stop_signals = 0u32;
    let mut drops = DropLog::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut input = Input::Tick;

    loop {
        let actions = core.handle(elapsed(), input);
        for action in actions {
            match action {
                Action::Send(advert) => {
                    let datagram = match encoder.encode(&advert, unix_now().as_millis() as u64) {
                        Ok(d) => d,
                        Err(e) => {
                            error!("cannot encode a heartbeat: {e}");
                            continue;
                        }
                    };
                    for peer in &peers {
                        if let Some(target) = target_for(socket_is_v6, *peer) {
                            if let Err(e) = socket.send_to(&datagram, target).await {
                                debug!("cannot send a heartbeat to {peer}: {e}");
                            }
                        }
                    }
                }
                Action::Call { ip, id, op } => {
                    let (provider, tx, me_id) = (provider.clone(), ops_tx.clone(), me.id.clone());
                    tokio::spawn(async move {
                        // The provider bounds every call itself; this outer bound guarantees the
                        // core always hears back, whatever a provider does.
                        let result = tokio::time::timeout(
                            CALL_BOUND,
                            call(provider.as_ref(), ip, &op, &me_id),
                        )
                        .await
                        .unwrap_or_else(|_| OpResult::Failed {
                            kind: "retryable",
                            message: format!("no answer within {CALL_BOUND:?}"),
                            retry_after: None,
                        });
                        let _ = tx.send(Input::OpDone { ip, id, result });
                    });
                }
                Action::AddAlias(ip) => {
                    if let Some(a) = &alias {
                        match a.add(ip).await {
                            Ok(true) => info!("{ip}: added to the loopback interface"),
                            Ok(false) => debug!("{ip}: already on the loopback interface"),
                            Err(e) => error!("{ip}: cannot add the loopback alias: {e}"),
                        }
                    }
                }
                Action::RemoveAlias(ip) => {
                    if let Some(a) = &alias {
                        match a.remove(ip).await {
                            Ok(true) => info!("{ip}: removed from the loopback interface"),
                            Ok(false) => debug!("{ip}: not on the loopback interface"),
                            Err(e) => error!("{ip}: cannot remove the loopback alias: {e}"),
                        }
                    }
                }
                Action::Transition {
                    ip,
                    from,
                    to,
                    reason,
                    ..
                } => {
                    info!("{ip}: {} -> {} ({reason})", role_name(from), role_name(to));
                }
                Action::CallFailed {
                    ip,
                    op,
                    message,
                    retry_in,
                } => {
                    warn!(
                        "{ip}: {} failed: {message}; retrying in {retry_in:?}",
                        op_name(&op)
                    );
                }
                Action::Reasserted(ip) => debug!("{ip}: reconcile confirmed we hold it"),
                Action::Exit => {
                    info!("stopped");
                    return Ok(());
                }
            }
        }

        let deadline = origin + core.next_deadline(elapsed());
        input = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Input::Tick,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => match decoder.decode(&buf[..len], unix_now().as_millis() as u64) {
                    Ok(advert) => Input::Heartbeat(advert),
                    Err(reason) => {
                        drops.record(reason.label(), from);
                        Input::Tick
                    }
                },
                Err(e) => {
                    debug!("receive error: {e}");
                    Input::Tick
                }
            },
            Some(done) = ops_rx.recv() => done,
            Some(list) = peers_rx.recv() => {
                if list != peers {
                    let l: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                    info!("peers changed: {}", l.join(", "));
                    peers = list;
                }
                Input::Tick
            },
            _ = sigterm.recv() => { stop_signals += 1; Input::Signal(Signal::Stop) },
            _ = sigint.recv() => { stop_signals += 1; Input::Signal(Signal::Stop) },
            _ = sigusr1.recv() => { info!("SIGUSR1: priority value lowered by one"); Input::Signal(Signal::Promote) },
            _ = sigusr2.recv() => { info!("SIGUSR2: priority value raised by one"); Input::Signal(Signal::Demote) },
        };
        if stop_signals == 1 && matches!(input, Input::Signal(Signal::Stop)) {
            info!("stopping: handing over to a peer first");
        } else if stop_signals >= 2 && matches!(input, Input::Signal(Signal::Stop)) {
            warn!("second stop signal: exiting without waiting for the handover");
            return Ok(());
        }
    }
}

/// Runs one provider call, mapping its outcome for the core.
async fn call(provider: &dyn Provider, ip: IpAddr, op: &Op, me: &InstanceId) -> OpResult {
    let started = Instant::now();
    let result = match op {
        Op::ReadHolders => provider
            .holders(ip)
            .await
            .map(|h| OpResult::Holders(h.into_iter().map(|i| i.0).collect())),
        Op::Attach => provider.attach(ip, me).await.map(|_| OpResult::Done),
        Op::Detach(who) => provider
            .detach(ip, &InstanceId(who.clone()))
            .await
            .map(|_| OpResult::Done),
    };
    debug!("{ip}: {} took {:?}", op_name(op), started.elapsed());
    result.unwrap_or_else(|e| OpResult::Failed {
        kind: e.kind(),
        message: e.to_string(),
        retry_after: match e {
            ProviderError::RateLimited { retry_after, .. } => retry_after,
            _ => None,
        },
    })
}

fn op_name(op: &Op) -> String {
    match op {
        Op::ReadHolders => "reading the holders".to_string(),
        Op::Attach => "attach".to_string(),
        Op::Detach(who) => format!("detach from {who}"),
    }
}

fn role_name(r: election::Role) -> &'static str {
    match r {
        election::Role::Init => "init",
        election::Role::Backup => "backup",
        election::Role::Claiming => "claiming",
        election::Role::Master => "master",
        election::Role::Leaving => "leaving",
        election::Role::Fault => "fault",
        election::Role::Stopped => "stopped",
    }
}

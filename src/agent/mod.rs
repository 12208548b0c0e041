//! The agent's modes: `-W` (the event loop in [`watchdog`]), `-A`, `-D`, `-n` and `check`, and
//! what they share (provider set-up, identity, alias, logging).
//!
//! Provider calls run on tasks of their own and report back through a channel, so a slow or
//! failing cloud API never delays a heartbeat (the Go exoip held a lock across API calls, and a
//! slow API made a healthy master look dead).

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use exoip_providers::azure::Azure;
use exoip_providers::exoscale::{Exoscale, ExoscaleConfig};
use exoip_providers::openstack::OpenStack;
use exoip_providers::{ClaimRecord, Error as ProviderError, Instance, InstanceId, Provider};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::cli::AgentArgs;
use crate::config::{Cloud, Config, Holding, LogFormat, Mode};
use crate::election::{Op, OpResult, Record};
use crate::holding::LocalHold;

mod watchdog;

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
    init_logging(cfg.log_format, cfg.verbose);
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
            Mode::Watchdog => watchdog::run(cfg).await,
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

/// Sets up logging: text or JSON lines on stdout, or the journal when systemd started us (it
/// sets `JOURNAL_STREAM`) and the format was not forced. Colours only on a terminal.
pub fn init_logging(format: Option<LogFormat>, verbose: bool) {
    init_logging_at(format, if verbose { "debug" } else { "info" })
}

/// [`init_logging`] with a chosen level for exoip's own modules (`RUST_LOG` still wins).
pub fn init_logging_at(format: Option<LogFormat>, level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter};
    // The netlink crates warn about kernel attributes they do not model (harmless, once per
    // start): keep them to errors unless RUST_LOG says otherwise.
    let quiet =
        "netlink_packet_route=error,netlink_packet_core=error,netlink_proto=error,rtnetlink=error";
    let default = match level {
        "debug" => format!("exoip=debug,exoip_providers=debug,info,{quiet}"),
        other => format!("{other},{quiet}"),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    let json = format == Some(LogFormat::Json);
    if format.is_none() && std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(journald.with_syslog_identifier("exoip".into()))
                .try_init();
            return;
        }
    }
    let _ = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_target(false)
                    .with_writer(std::io::stdout),
            )
            .try_init()
    } else {
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(ansi)
                    .with_writer(std::io::stdout),
            )
            .try_init()
    };
}

pub(crate) fn provider(cfg: &Config) -> anyhow::Result<Arc<dyn Provider>> {
    if let Cloud::OpenStack(settings) = &cfg.cloud {
        let p = OpenStack::new(settings.as_ref().clone())
            .map_err(|e| anyhow!("cannot set up the OpenStack client: {e}"))?;
        return Ok(Arc::new(p));
    }
    if let Cloud::Azure(settings) = &cfg.cloud {
        let p = Azure::new(settings.as_ref().clone())
            .map_err(|e| anyhow!("cannot set up the Azure client: {e}"))?;
        return Ok(Arc::new(p));
    }
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
/// Binds the heartbeat socket (non-blocking): on `bind_ip`, or dual stack on `[::]`, or on
/// `0.0.0.0` when the host has no IPv6. A port in use is reported, never worked around by
/// falling back to IPv4 (that would silently lose the IPv6 peers). The error names the address.
pub(crate) fn bind_heartbeat_socket(
    bind_ip: Option<IpAddr>,
    port: u16,
) -> Result<std::net::UdpSocket, (std::net::SocketAddr, std::io::Error)> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let attempt = |addr: SocketAddr, v6only: Option<bool>| {
        let bind = || -> std::io::Result<std::net::UdpSocket> {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            if let Some(only) = v6only {
                socket.set_only_v6(only)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        };
        bind().map_err(|e| (addr, e))
    };
    match bind_ip {
        Some(ip) => attempt(SocketAddr::new(ip, port), ip.is_ipv6().then_some(true)),
        None => match attempt(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            Some(false),
        ) {
            Err((_, e)) if e.kind() != std::io::ErrorKind::AddrInUse => attempt(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                None,
            ),
            r => r,
        },
    }
}

/// Maps a peer address to what the socket's family can send to.
pub(crate) fn target_for(socket_is_v6: bool, peer: SocketAddr) -> Option<SocketAddr> {
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

/// Shows IPv4-mapped IPv6 source addresses (dual-stack socket) as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

pub(crate) async fn whoami(provider: &dyn Provider) -> anyhow::Result<Instance> {
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

/// What `-A`/`-D` would change, without changing it (`--dry-run`).
async fn dry_run(cfg: &Config, provider: &dyn Provider, me: &Instance) -> anyhow::Result<()> {
    let (verb, prep) = match cfg.mode {
        Mode::Associate => ("attach", "to"),
        _ => ("detach", "from"),
    };
    for w in &cfg.addresses {
        let holders = provider
            .holders(w.ip)
            .await
            .map_err(|e| anyhow!("{}: cannot read the holders: {e}", w.ip))?;
        let list: Vec<&str> = holders.iter().map(|h| h.0.as_str()).collect();
        let held = holders.contains(&me.id);
        let api = match (cfg.mode, held) {
            (Mode::Associate, true) | (Mode::Dissociate, false) => {
                "nothing to do in the API".to_string()
            }
            _ => format!("would {verb} it {prep} {} ({})", me.name, me.id),
        };
        let place = match &cfg.holding {
            Holding::Loopback => Some("lo".to_string()),
            Holding::Nic { device } => Some(
                device
                    .clone()
                    .unwrap_or_else(|| "the default-route interface".to_string()),
            ),
            // Refused by the configuration: -A/-D have nothing to do in lb-probe mode.
            Holding::Nothing | Holding::Probe { .. } => None,
        };
        let alias = match (place, cfg.mode) {
            (None, _) => "nothing to configure locally".to_string(),
            (Some(dev), Mode::Associate) => {
                format!("would add {}/{} to {dev}", w.ip, host_prefix(w.ip))
            }
            (Some(dev), _) => format!("would remove {}/{} from {dev}", w.ip, host_prefix(w.ip)),
        };
        println!(
            "{}: held by [{}]; {api}; {alias} (dry run: nothing changed)",
            w.ip,
            list.join(", ")
        );
    }
    Ok(())
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `-A`: attach every address to this instance and hold it locally. (Azure lb-probe mode never
/// gets here: holding is answering the load balancer's probe, which lasts only as long as a
/// running agent, so the configuration refuses `-A`/`-D` there with a message saying so.)
async fn associate(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    if cfg.dry_run {
        return dry_run(&cfg, provider.as_ref(), &me).await;
    }
    let hold = LocalHold::new(&cfg).await?;
    for w in &cfg.addresses {
        provider
            .attach(w.ip, &me.id)
            .await
            .map_err(|e| anyhow!("cannot attach {} to {}: {e}", w.ip, me.id))?;
        info!("{}: attached to {} ({})", w.ip, me.name, me.id);
        if let Some(h) = &hold {
            h.add(w.ip).await?;
        }
    }
    Ok(())
}

async fn dissociate(cfg: Config) -> anyhow::Result<()> {
    let provider = provider(&cfg)?;
    let me = whoami(provider.as_ref()).await?;
    if cfg.dry_run {
        return dry_run(&cfg, provider.as_ref(), &me).await;
    }
    let hold = LocalHold::new(&cfg).await?;
    for w in &cfg.addresses {
        if let Some(h) = &hold {
            h.remove(w.ip).await?;
        }
        provider
            .detach(w.ip, &me.id)
            .await
            .map_err(|e| anyhow!("cannot detach {} from {}: {e}", w.ip, me.id))?;
        info!("{}: detached from {} ({})", w.ip, me.name, me.id);
    }
    Ok(())
}

/// `exoip check`: the preflight, with the same flags as `-W`. Exit 0 when every check passed,
/// 1 when one failed, 2 when the configuration itself is invalid.
pub fn check_main(
    mut args: AgentArgs,
    matches: &clap::ArgMatches,
    runtime: tokio::runtime::Runtime,
) -> ExitCode {
    args.watchdog = true;
    args.associate = false;
    args.dissociate = false;
    let cfg = match Config::from_args(&args, matches) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Only problems reach the log: the checks print their own lines.
    init_logging_at(cfg.log_format, "error");
    match runtime.block_on(crate::check::run_check(&cfg)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            println!("FAIL {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs one provider call, mapping its outcome for the core.
pub(crate) async fn call(
    provider: &dyn Provider,
    ip: IpAddr,
    op: &Op,
    me: &InstanceId,
) -> OpResult {
    let started = Instant::now();
    let result = match op {
        Op::ReadHolders => provider.state(ip).await.map(|st| OpResult::Holders {
            holders: st.holders.into_iter().map(|i| i.0).collect(),
            record: st.record.map(|r| Record {
                epoch: r.epoch,
                holder: r.holder.0,
            }),
        }),
        Op::Attach { epoch, seen } => {
            let record = ClaimRecord {
                epoch: *epoch,
                holder: me.clone(),
            };
            provider
                .claim(ip, &record, *seen)
                .await
                .map(|_| OpResult::Done)
        }
        Op::Admit(who) => provider
            .attach(ip, &InstanceId(who.clone()))
            .await
            .map(|_| OpResult::Done),
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

pub(crate) fn op_name(op: &Op) -> String {
    match op {
        Op::ReadHolders => "reading the holders".to_string(),
        Op::Attach { epoch: 0, .. } => "attach".to_string(),
        Op::Attach { epoch, .. } => format!("claim (epoch {epoch})"),
        Op::Admit(who) => format!("allow {who} again"),
        Op::Detach(who) => format!("detach from {who}"),
    }
}

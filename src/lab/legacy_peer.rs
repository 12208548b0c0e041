//! `exoip lab legacy-peer`: an emulation of the old Go exoip's watchdog, for mixed-cluster tests
//! of `--legacy-protocol` (the old binary needs the retired API v1, which the simulated cloud
//! does not serve). It takes the agent's own command line and behaves as the old agent did:
//!
//! - every interval it sends the 24-byte heartbeat (version 0201, priority twice, the IPv4
//!   address, its NIC id: here the instance UUID) to each peer, and accepts only exactly 24-byte
//!   datagrams for its address from configured peers;
//! - after a hold-off of one dead period plus 100 ms, every interval (plus 100 ms) it re-decides:
//!   master when no live peer announces a strictly lower priority, backup otherwise; becoming
//!   master attaches the address to itself, becoming backup detaches it from itself;
//! - a peer silent for a dead period is "newly dead": the address is detached from the NIC it
//!   announced (fencing), then its own attachment is re-checked;
//! - SIGTERM/SIGINT: a master detaches the address from itself, then it exits; nothing is
//!   announced. The address stays on `lo` all along, as the old ifupdown stanza configured it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::FromArgMatches;
use exoip_providers::{InstanceId, Provider};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, Peers};
use crate::wire::{self, LEGACY_LEN};

/// The old agent's pause before each decision.
const SKEW: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct OldPeer {
    addr: SocketAddr,
    priority: u8,
    /// The NIC id it announced (the instance id in the emulation), once heard.
    nic: Option<String>,
    last_seen: Option<Instant>,
    dead: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Backup,
    Master,
}

struct Engine {
    provider: Arc<dyn Provider>,
    me: InstanceId,
    eip: Ipv4Addr,
    priority: u8,
    interval: Duration,
    dead: Duration,
    state: State,
    peers: BTreeMap<IpAddr, OldPeer>,
}

/// Parses the agent's command line (as `exoip` itself would) into its configuration.
fn agent_config(args: &[String]) -> Result<Config> {
    let argv = std::iter::once("exoip".to_string())
        .chain(args.iter().cloned())
        .map(std::ffi::OsString::from);
    let argv = crate::cli::normalize_legacy_args(argv);
    let (matches, sources) =
        crate::config_file::parse_args(argv).map_err(|e| anyhow!("legacy-peer: {e:?}"))?;
    let mut cli = crate::cli::Cli::from_arg_matches(&matches)?;
    cli.agent.sources = sources;
    Config::from_args(&cli.agent, &matches).map_err(|e| anyhow!("legacy-peer: {e}"))
}

pub async fn run(args: Vec<String>) -> Result<()> {
    let cfg = agent_config(&args)?;
    crate::agent::init_logging(None, cfg.verbose);
    let eip = match cfg.addresses.first().map(|a| a.ip) {
        Some(IpAddr::V4(v4)) => v4,
        _ => bail!("legacy-peer: the old exoip watches one IPv4 address"),
    };
    let provider = crate::agent::provider(&cfg)?;
    let me = crate::agent::whoami(provider.as_ref()).await?.id;
    // The old agent read its security group at start and every 5 minutes: once is enough here.
    let peer_list: Vec<SocketAddr> = match &cfg.peers {
        Peers::Static(list) => list.clone(),
        Peers::Group(group) => provider
            .peers(group, &me)
            .await?
            .iter()
            .flat_map(|p| p.addresses.iter().filter(|a| a.is_ipv4()))
            .map(|a| SocketAddr::new(*a, cfg.port))
            .collect(),
        Peers::None => bail!("legacy-peer: no peers (-p or -G)"),
    };
    let nic_id = crate::legacy::uuid_bytes(&me.0)
        .ok_or_else(|| anyhow!("legacy-peer: instance id {} is not a UUID", me.0))?;
    let payload = wire::encode_legacy(cfg.priority, eip, nic_id);
    // The old setup: the address is on lo for good (ifupdown's `iface lo:1`).
    if let Some(hold) = crate::holding::LocalHold::new(&cfg).await? {
        hold.add(IpAddr::V4(eip)).await?;
    }
    let socket = crate::agent::bind_heartbeat_socket(cfg.bind_ip, cfg.port)
        .map_err(|(a, e)| anyhow!("cannot bind {a}: {e}"))?;
    let socket = UdpSocket::from_std(socket)?;
    let v6 = socket.local_addr()?.is_ipv6();
    let mut engine = Engine {
        provider,
        me,
        eip,
        priority: cfg.priority,
        interval: cfg.interval,
        dead: cfg.dead_period(),
        state: State::Backup,
        peers: peer_list
            .iter()
            .map(|a| {
                (
                    a.ip(),
                    OldPeer {
                        addr: *a,
                        priority: 0,
                        nic: None,
                        last_seen: None,
                        dead: false,
                    },
                )
            })
            .collect(),
    };
    info!(
        "legacy peer {} for {eip}: priority {}, interval {:?}, dead after {:?}",
        engine.me, engine.priority, engine.interval, engine.dead
    );
    let hold_off = Instant::now() + engine.dead + SKEW;
    let mut ping = tokio::time::interval(engine.interval);
    let mut check = tokio::time::interval_at(Instant::now() + engine.interval, engine.interval);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = ping.tick() => {
                for p in engine.peers.values() {
                    if let Some(to) = crate::agent::target_for(v6, p.addr) {
                        let _ = socket.send_to(&payload, to).await;
                    }
                }
            }
            _ = check.tick() => {
                tokio::time::sleep(SKEW).await;
                if Instant::now() >= hold_off {
                    engine.check_state().await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let (n, from) = received?;
                engine.on_datagram(&buf[..n], from);
            }
            _ = term.recv() => return engine.stop().await,
            _ = int.recv() => return engine.stop().await,
        }
    }
}

impl Engine {
    fn on_datagram(&mut self, d: &[u8], from: SocketAddr) {
        if d.len() != LEGACY_LEN {
            warn!("bad network payload from {from}");
            return;
        }
        let Ok(heard) = wire::decode_legacy(d) else {
            warn!("unparseable payload from {from}");
            return;
        };
        if heard.eip != self.eip {
            warn!("peer sent message for wrong EIP, got {}", heard.eip);
            return;
        }
        let ip = crate::agent::canonical(from).ip();
        match self.peers.get_mut(&ip) {
            Some(p) => {
                p.priority = heard.priority;
                p.nic = Some(uuid::Uuid::from_bytes(heard.nic_id).to_string());
                p.last_seen = Some(Instant::now());
            }
            None => warn!("peer {ip} not found in configuration"),
        }
    }

    async fn check_state(&mut self) {
        let now = Instant::now();
        let mut newly_dead = Vec::new();
        let mut best = true;
        for (ip, p) in self.peers.iter_mut() {
            let dead = p
                .last_seen
                .is_none_or(|t| now.duration_since(t) > self.dead);
            if dead != p.dead {
                p.dead = dead;
                if dead {
                    info!("peer {ip} considered dead");
                    newly_dead.push(p.nic.clone());
                    continue;
                }
                info!("peer {ip} is back alive");
            }
            if !p.dead && p.priority < self.priority {
                best = false;
            }
        }
        let want = if best { State::Master } else { State::Backup };
        if want != self.state {
            info!("switching state to {want:?}");
            let me = self.me.clone();
            let result = match want {
                State::Master => self.provider.attach(IpAddr::V4(self.eip), &me).await,
                State::Backup => self.provider.detach(IpAddr::V4(self.eip), &me).await,
            };
            match result {
                Ok(()) => self.state = want,
                Err(e) => warn!("could not switch state: {e}"),
            }
        }
        if newly_dead.is_empty() {
            return;
        }
        for nic in newly_dead.into_iter().flatten() {
            match self
                .provider
                .detach(IpAddr::V4(self.eip), &InstanceId(nic.clone()))
                .await
            {
                Ok(()) => info!("released {} from {nic}", self.eip),
                Err(e) => warn!("could not release {} from {nic}: {e}", self.eip),
            }
        }
        if let Err(e) = self.update_nic().await {
            warn!("{e:#}");
        }
    }

    /// The old agent's repair after a death: a backup still attached detaches, a master not
    /// attached attaches.
    async fn update_nic(&self) -> Result<()> {
        let ip = IpAddr::V4(self.eip);
        let found = self.provider.holders(ip).await?.contains(&self.me);
        match (self.state, found) {
            (State::Backup, true) => self.provider.detach(ip, &self.me).await?,
            (State::Master, false) => self.provider.attach(ip, &self.me).await?,
            _ => {}
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        if self.state == State::Master {
            info!("releasing the address and stopping");
            self.provider
                .detach(IpAddr::V4(self.eip), &self.me)
                .await
                .context("could not release the address")?;
        }
        Ok(())
    }
}

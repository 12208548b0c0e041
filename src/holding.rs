//! How this host holds an address it won: an alias on the loopback (Exoscale), an address on a
//! NIC announced to the LAN (OpenStack vip, Azure secondary-ip), the load balancer's health
//! probe answered (Azure lb-probe), or nothing local (the cloud NATs it).
//!
//! Everything here is idempotent: adding an address that is there or removing one that is not
//! succeeds, and only an address that was really added is announced.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use tracing::{debug, info, warn};

use crate::alias::Alias;
use crate::config::{Config, Holding};
use crate::probe::ProbeResponder;

/// The local side of holding addresses (see [`Holding`]).
pub struct LocalHold {
    how: How,
}

enum How {
    /// The address itself on an interface.
    Address {
        alias: Alias,
        /// On a NIC: announce what we add (gratuitous ARP / unsolicited neighbour
        /// advertisement).
        announce: bool,
    },
    /// Azure lb-probe: every node has the frontend IPs on `lo` all the time; holding is the
    /// probe responder being open. One probe port serves every address of the agent, so it is
    /// open while any of them is held.
    Probe {
        responder: ProbeResponder,
        /// Checks (and at start adds) the frontend IPs on `lo`; `None` with `--no-alias`.
        loopback: Option<Alias>,
        held: tokio::sync::Mutex<BTreeSet<IpAddr>>,
    },
}

impl LocalHold {
    /// `None` when the configuration holds nothing locally. Must run in a tokio runtime, in the
    /// network namespace where the address is to be held.
    ///
    /// In lb-probe mode this also puts every frontend IP on `lo` (where the load balancer's
    /// floating-IP traffic is received), to stay there: only the probe follows the election.
    pub async fn new(cfg: &Config) -> anyhow::Result<Option<LocalHold>> {
        let how = match &cfg.holding {
            Holding::Nothing => return Ok(None),
            Holding::Loopback => How::Address {
                alias: Alias::new()
                    .await
                    .context("cannot manage the loopback alias")?,
                announce: false,
            },
            Holding::Nic { device } => {
                let device = match device {
                    Some(d) => d.clone(),
                    None => crate::announce::default_route_interface()
                        .await
                        .context("cannot find the interface for the address (set --interface)")?,
                };
                let alias = Alias::with_device(&device)
                    .await
                    .with_context(|| format!("cannot manage addresses on {device}"))?;
                How::Address {
                    alias,
                    announce: true,
                }
            }
            Holding::Probe {
                port,
                path,
                loopback,
            } => {
                let loopback = if *loopback {
                    let alias = Alias::new()
                        .await
                        .context("cannot manage the frontend IP on the loopback interface")?;
                    for w in &cfg.addresses {
                        if alias
                            .add(w.ip)
                            .await
                            .with_context(|| format!("{}: cannot add it to lo", w.ip))?
                        {
                            info!(
                                "{}: added to the loopback interface (kept there on every node: the load balancer follows the probe)",
                                w.ip
                            );
                        }
                    }
                    Some(alias)
                } else {
                    None
                };
                return Ok(Some(LocalHold::probe(
                    ProbeResponder::new(*port, path.clone()),
                    loopback,
                )));
            }
        };
        Ok(Some(LocalHold { how }))
    }

    /// lb-probe holding with this responder (closed) and the frontend IPs checked on
    /// `loopback`.
    fn probe(responder: ProbeResponder, loopback: Option<Alias>) -> LocalHold {
        LocalHold {
            how: How::Probe {
                responder,
                loopback,
                held: tokio::sync::Mutex::new(BTreeSet::new()),
            },
        }
    }

    /// Where the address goes, for logs: "the loopback interface", the NIC's name, or the
    /// health probe.
    pub fn place(&self) -> String {
        match &self.how {
            How::Address {
                alias,
                announce: true,
            } => alias.device().to_string(),
            How::Address { .. } => "the loopback interface".to_string(),
            How::Probe { responder, .. } => {
                format!(
                    "the load balancer's health probe ({})",
                    responder.describe()
                )
            }
        }
    }

    /// Adds the address; on a NIC, announces it when it was not there yet (in the background:
    /// the repeats must not hold up the caller); in lb-probe mode opens the probe. True when
    /// it was added.
    pub async fn add(&self, ip: IpAddr) -> anyhow::Result<bool> {
        let (alias, announce) = match &self.how {
            How::Address { alias, announce } => (alias, *announce),
            How::Probe {
                responder, held, ..
            } => {
                let mut held = held.lock().await;
                if responder.open().await.with_context(|| {
                    format!("{ip}: cannot answer the load balancer's health probe")
                })? {
                    info!(
                        "{ip}: answering {} (the load balancer sends the traffic here)",
                        responder.describe()
                    );
                }
                let added = held.insert(ip);
                if !added {
                    debug!("{ip}: already answering the probe");
                }
                return Ok(added);
            }
        };
        let added = alias
            .add(ip)
            .await
            .with_context(|| format!("{ip}: cannot add it to {}", self.place()))?;
        if added {
            info!("{ip}: added to {}", self.place());
            if announce {
                spawn_announce(alias.device().to_string(), ip, Duration::ZERO);
            }
        } else {
            debug!("{ip}: already on {}", self.place());
        }
        Ok(added)
    }

    /// On a NIC, announces the address again if we have it, after `delay` (in the background):
    /// neighbours that followed another node's announcement (a peer that held it for a moment,
    /// a cache that expired) come back (keepalived's `garp_master_refresh`). Elsewhere nothing.
    pub async fn announce_again(&self, ip: IpAddr, delay: Duration) {
        let How::Address {
            alias,
            announce: true,
        } = &self.how
        else {
            return;
        };
        match alias.has(ip).await {
            Ok(true) => spawn_announce(alias.device().to_string(), ip, delay),
            Ok(false) => {}
            Err(e) => debug!("{ip}: cannot tell whether it is on {}: {e}", alias.device()),
        }
    }

    /// Removes the address; true when it was there. In lb-probe mode the frontend IP stays on
    /// `lo` and the probe closes once no address is held.
    pub async fn remove(&self, ip: IpAddr) -> anyhow::Result<bool> {
        let alias = match &self.how {
            How::Address { alias, .. } => alias,
            How::Probe {
                responder, held, ..
            } => {
                let mut held = held.lock().await;
                let removed = held.remove(&ip);
                if held.is_empty() && responder.close().await {
                    info!("{ip}: no longer answering {} (the load balancer sends the traffic elsewhere)", responder.describe());
                }
                return Ok(removed);
            }
        };
        let removed = alias
            .remove(ip)
            .await
            .with_context(|| format!("{ip}: cannot remove it from {}", self.place()))?;
        if removed {
            info!("{ip}: removed from {}", self.place());
        } else {
            debug!("{ip}: not on {}", self.place());
        }
        Ok(removed)
    }

    /// Whether the address is configured where it is held. In lb-probe mode: whether the
    /// frontend IP is on `lo` (every node's state, holder or not; true with `--no-alias`,
    /// where that is the system's business).
    pub async fn has(&self, ip: IpAddr) -> anyhow::Result<bool> {
        match &self.how {
            How::Address { alias, .. } => Ok(alias.has(ip).await?),
            How::Probe {
                loopback: Some(alias),
                ..
            } => Ok(alias.has(ip).await?),
            How::Probe { loopback: None, .. } => Ok(true),
        }
    }
}

/// Gratuitous ARP / unsolicited neighbour advertisements for `ip` on `device`, after `delay`.
fn spawn_announce(device: String, ip: IpAddr, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        match crate::announce::announce(
            &device,
            ip,
            crate::announce::DEFAULT_COUNT,
            crate::announce::DEFAULT_GAP,
        )
        .await
        {
            Ok(()) => debug!("{ip}: announced on {device}"),
            Err(e) => warn!("{ip}: cannot announce it on {device}: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    /// The responder's address while it is open.
    async fn probe_addr(hold: &LocalHold) -> Option<SocketAddr> {
        match &hold.how {
            How::Probe { responder, .. } => responder.local_addr().await,
            How::Address { .. } => unreachable!("a probe hold"),
        }
    }

    #[tokio::test]
    async fn the_probe_is_open_while_any_address_is_held() {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let hold = LocalHold::probe(ProbeResponder::with_bind(local, None), None);
        let (a, b): (IpAddr, IpAddr) = (
            "203.0.113.20".parse().unwrap(),
            "203.0.113.21".parse().unwrap(),
        );
        assert!(probe_addr(&hold).await.is_none(), "closed at start");
        assert!(hold
            .place()
            .starts_with("the load balancer's health probe (TCP port "));

        assert!(hold.add(a).await.unwrap());
        assert!(!hold.add(a).await.unwrap(), "added once");
        let open = probe_addr(&hold).await.expect("open while holding");
        assert!(tokio::net::TcpStream::connect(open).await.is_ok());
        assert!(hold.add(b).await.unwrap());

        // One address left: still open for it.
        assert!(hold.remove(a).await.unwrap());
        assert_eq!(probe_addr(&hold).await, Some(open));
        assert!(!hold.remove(a).await.unwrap(), "removed once");
        // None left: closed, and probes are refused at once.
        assert!(hold.remove(b).await.unwrap());
        assert!(probe_addr(&hold).await.is_none());
        let refused = tokio::net::TcpStream::connect(open).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // With --no-alias (nothing to look at) the frontend IP on lo is the system's business.
        assert!(hold.has(a).await.unwrap());
    }
}

//! How this host holds an address it won: an alias on the loopback (Exoscale), an address on a
//! NIC announced to the LAN (OpenStack vip), or nothing local (the cloud NATs it).
//!
//! Everything here is idempotent: adding an address that is there or removing one that is not
//! succeeds, and only an address that was really added is announced.

use std::net::IpAddr;

use anyhow::Context;
use tracing::{debug, info, warn};

use crate::alias::Alias;
use crate::config::{Config, Holding};

/// The local side of holding addresses (see [`Holding`]).
pub struct LocalHold {
    alias: Alias,
    /// On a NIC: announce what we add (gratuitous ARP / unsolicited neighbour advertisement).
    announce: bool,
}

impl LocalHold {
    /// `None` when the configuration holds nothing locally. Must run in a tokio runtime, in the
    /// network namespace where the address is to be held.
    pub async fn new(cfg: &Config) -> anyhow::Result<Option<LocalHold>> {
        let (alias, announce) = match &cfg.holding {
            Holding::Nothing => return Ok(None),
            Holding::Loopback => (
                Alias::new()
                    .await
                    .context("cannot manage the loopback alias")?,
                false,
            ),
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
                (alias, true)
            }
        };
        Ok(Some(LocalHold { alias, announce }))
    }

    /// Where the address goes, for logs: "the loopback interface" or the NIC's name.
    pub fn place(&self) -> String {
        if self.announce {
            self.alias.device().to_string()
        } else {
            "the loopback interface".to_string()
        }
    }

    /// Adds the address; on a NIC, announces it when it was not there yet (in the background:
    /// the repeats must not hold up the caller). True when it was added.
    pub async fn add(&self, ip: IpAddr) -> anyhow::Result<bool> {
        let added = self
            .alias
            .add(ip)
            .await
            .with_context(|| format!("{ip}: cannot add it to {}", self.place()))?;
        if added {
            info!("{ip}: added to {}", self.place());
            if self.announce {
                let device = self.alias.device().to_string();
                tokio::spawn(async move {
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
        } else {
            debug!("{ip}: already on {}", self.place());
        }
        Ok(added)
    }

    /// Removes the address; true when it was there.
    pub async fn remove(&self, ip: IpAddr) -> anyhow::Result<bool> {
        let removed = self
            .alias
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

    pub async fn has(&self, ip: IpAddr) -> anyhow::Result<bool> {
        Ok(self.alias.has(ip).await?)
    }
}

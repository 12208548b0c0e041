//! VIP mode (allowed address pairs, the keepalived/Octavia pattern): which servers may hold a
//! private VIP, and granting or withdrawing that with a fenced read-modify-write of a port's
//! `allowed_address_pairs` (shared/clouds/openstack.md §4.3, §9.8).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::neutron::{pair_is, PortJson, PortOne, SubnetList};
use super::OpenStack;
use crate::{Error, InstanceId, Result};

/// Writes of one port's pairs tried before giving up on a busy port: each 412 means someone
/// else changed the port in between, and redoing a list merge on the new state is safe.
const MAX_PAIR_WRITES: u32 = 5;

impl OpenStack {
    /// The network the VIP lives on: that of `--vip-port`, else of the port that has the VIP as
    /// a fixed IP, else of this server's port whose subnet contains it.
    async fn vip_network(&self, vip: IpAddr) -> Result<String> {
        if let Some(network) = self.vip_networks.lock().expect("poisoned").get(&vip) {
            return Ok(network.clone());
        }
        let network = match &self.vip_port {
            Some(port) => {
                let port = self.neutron.port(port).await?;
                port.network_id
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the VIP port {port:?} has no network_id",
                            port = port.id
                        ))
                    })?
            }
            None => {
                let filter = format!("ip_address={vip}");
                let ports = self.neutron.ports(&[("fixed_ips", &filter)]).await?;
                let networks: BTreeSet<String> = ports
                    .iter()
                    .filter(|p| p.has_ip(vip))
                    .filter_map(|p| p.network_id.clone())
                    .filter(|n| !n.is_empty())
                    .collect();
                match networks.len() {
                    0 => self.vip_network_from_subnets(vip).await?,
                    1 => networks.into_iter().next().expect("one network"),
                    _ => {
                        return Err(Error::Invalid(format!(
                        "ports on several networks have {vip} as a fixed IP ({}): set --vip-port",
                        networks.into_iter().collect::<Vec<_>>().join(", ")
                    )))
                    }
                }
            }
        };
        super::check_id("network", &network)?;
        self.vip_networks
            .lock()
            .expect("poisoned")
            .insert(vip, network.clone());
        Ok(network)
    }

    async fn vip_network_from_subnets(&self, vip: IpAddr) -> Result<String> {
        let me = self.own_id().await?;
        let own: BTreeSet<String> = self
            .neutron
            .server_ports(&me.0)
            .await?
            .into_iter()
            .filter_map(|p| p.network_id)
            .collect();
        let subnets: SubnetList = self.neutron.get("/subnets", &[]).await?;
        let networks: BTreeSet<String> = subnets
            .subnets
            .into_iter()
            .filter(|s| {
                s.cidr
                    .as_deref()
                    .and_then(|c| c.trim().parse::<ipnet::IpNet>().ok())
                    .is_some_and(|net| net.contains(&vip))
            })
            .filter_map(|s| s.network_id)
            .filter(|n| own.contains(n))
            .collect();
        match networks.len() {
            1 => Ok(networks.into_iter().next().expect("one network")),
            0 => Err(Error::Invalid(format!(
                "cannot tell the network of the VIP {vip}: no port has it as a fixed IP and no subnet of this server contains it; set --vip-port"
            ))),
            _ => Err(Error::Invalid(format!(
                "the VIP {vip} is in subnets of several networks of this server: set --vip-port"
            ))),
        }
    }

    /// The servers allowed to hold the VIP: device ids of the ports on its network that have it
    /// in their `allowed_address_pairs`.
    pub(super) async fn vip_holders(&self, vip: IpAddr) -> Result<Vec<InstanceId>> {
        let network = self.vip_network(vip).await?;
        let ports = self.neutron.ports(&[("network_id", &network)]).await?;
        let holders: BTreeSet<String> = ports
            .iter()
            // The filter is the server's: a port that names another network is not ours.
            .filter(|p| p.network_id.as_deref().is_none_or(|n| n == network))
            .filter(|p| allows(p, vip))
            .filter_map(|p| p.device().map(str::to_string))
            .collect();
        Ok(holders.into_iter().map(InstanceId).collect())
    }

    pub(super) async fn vip_attach(&self, vip: IpAddr, to: &InstanceId) -> Result<()> {
        let network = self.vip_network(vip).await?;
        let mut ports = self.ports_on(to, &network).await?;
        let port = match ports.len() {
            0 => {
                return Err(Error::NotFound(format!(
                    "server {to} has no port on the VIP's network {network}"
                )))
            }
            1 => ports.remove(0),
            _ => match &self.port {
                Some(own)
                    if self.is_self(to) && ports.iter().any(|p| p.id.as_ref() == Some(own)) =>
                {
                    ports.retain(|p| p.id.as_ref() == Some(own));
                    ports.remove(0)
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "server {to} has several ports on the VIP's network {network}; set --port"
                    )))
                }
            },
        };
        self.update_pairs(port.require_id()?, vip, true).await
    }

    pub(super) async fn vip_detach(&self, vip: IpAddr, from: &InstanceId) -> Result<()> {
        let network = self.vip_network(vip).await?;
        for port in self.ports_on(from, &network).await? {
            if allows(&port, vip) {
                self.update_pairs(port.require_id()?, vip, false).await?;
            }
        }
        Ok(())
    }

    async fn ports_on(&self, server: &InstanceId, network: &str) -> Result<Vec<PortJson>> {
        let mut ports = self.neutron.server_ports(&server.0).await?;
        ports.retain(|p| p.network_id.as_deref() == Some(network));
        Ok(ports)
    }

    /// Adds the VIP to (or removes it from) a port's `allowed_address_pairs`: read, change, write
    /// the whole list back with `If-Match`, every other entry exactly as read; on 412 again
    /// from the read.
    async fn update_pairs(&self, port_id: &str, vip: IpAddr, allow: bool) -> Result<()> {
        let mut writes = 0;
        loop {
            let port = self.neutron.port(port_id).await?;
            let pairs = port.allowed_address_pairs.clone().ok_or_else(|| {
                Error::Invalid(format!(
                    "port {port_id} shows no allowed_address_pairs: is the allowed-address-pairs extension enabled?"
                ))
            })?;
            let present = pairs.iter().any(|p| pair_is(p, vip));
            if present == allow {
                return Ok(());
            }
            let pairs: Vec<Value> = if allow {
                let mut pairs = pairs;
                pairs.push(json!({ "ip_address": vip.to_string() }));
                pairs
            } else {
                pairs.into_iter().filter(|p| !pair_is(p, vip)).collect()
            };
            writes += 1;
            let body = json!({"port": {"allowed_address_pairs": pairs}});
            match self
                .neutron
                .put::<PortOne>(&format!("/ports/{port_id}"), &body, port.revision_number)
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Conflict(e)) if writes < MAX_PAIR_WRITES => {
                    tracing::debug!(port = port_id, %vip, error = %e, "port changed meanwhile: reading it again");
                }
                Err(Error::Conflict(e)) => {
                    // A last look: a lost answer to our own write also ends in 412.
                    let port = self.neutron.port(port_id).await?;
                    if allows(&port, vip) == allow {
                        return Ok(());
                    }
                    return Err(Error::Conflict(format!(
                        "{e} (gave up after {writes} writes of port {port_id})"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn allows(port: &PortJson, vip: IpAddr) -> bool {
    port.allowed_address_pairs
        .iter()
        .flatten()
        .any(|p| pair_is(p, vip))
}

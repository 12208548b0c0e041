//! VIP mode (allowed address pairs, the keepalived/Octavia pattern): which servers may hold a
//! private VIP, granting or withdrawing that with a fenced read-modify-write of a port's
//! `allowed_address_pairs`, and the claim record on the VIP port (shared/clouds/openstack.md
//! §4.3, §4.4, §9.8; `docs/arbiter.md`).
//!
//! Every live peer's port is allowed the VIP at once, so that any of them can take over without
//! an API call: that list is a permission, not a claim. The claim is recorded on the **VIP
//! port**, the port that holds the VIP as a fixed IP (`--vip-port`, else the one port of the
//! VIP's network with that fixed IP; the documented setup creates it, and the servers' own ports
//! only have the VIP in their pairs): one token `exoip:epoch=<n>,holder=<server uuid>` in its
//! `description`, as floating-IP mode keeps it on the floating IP, any other text there kept. A
//! claim checks `seen` against the token read and writes the new one with
//! `If-Match: revision_number=<read>` (a compare-and-swap), and only then allows the claimant's
//! port: a claim that lost changes nothing. Without a VIP port there is no record (one warning
//! per address) and a claim only allows the port, as before.
//!
//! A VIP port with several fixed IPs carries one record for all of them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::floating::{claimed_description, record_from_description};
use super::neutron::{pair_is, PortJson, PortOne, SubnetList};
use super::OpenStack;
use crate::exoscale::check_claim_epoch;
use crate::{AddressState, ClaimRecord, Error, InstanceId, Result};

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
                if port.has_ip(vip) {
                    // Found on the way: the claim record's place. (An odd id is refused when
                    // the record is read.)
                    let _ = self.remember_vip_port(vip, &port);
                }
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
                    1 => {
                        // Found on the way: the claim record's place, the VIP port.
                        if let Ok(Some(port)) = self.choose_vip_port(vip, &ports) {
                            let _ = self.remember_vip_port(vip, port);
                        }
                        networks.into_iter().next().expect("one network")
                    }
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

    /// The ports of the VIP's network (the server's filter, checked here too: a port that names
    /// another network is not ours).
    async fn vip_network_ports(&self, vip: IpAddr) -> Result<Vec<PortJson>> {
        let network = self.vip_network(vip).await?;
        let mut ports = self.neutron.ports(&[("network_id", &network)]).await?;
        ports.retain(|p| p.network_id.as_deref().is_none_or(|n| n == network));
        Ok(ports)
    }

    /// The servers allowed to hold the VIP: device ids of the ports on its network that have it
    /// in their `allowed_address_pairs`.
    pub(super) async fn vip_holders(&self, vip: IpAddr) -> Result<Vec<InstanceId>> {
        Ok(holders_among(&self.vip_network_ports(vip).await?, vip))
    }

    /// The holders and the record on the VIP port, from one list of the VIP's network's ports
    /// (the VIP port is on that network too).
    pub(super) async fn vip_state(&self, vip: IpAddr) -> Result<AddressState> {
        let ports = self.vip_network_ports(vip).await?;
        let record = match self.choose_vip_port(vip, &ports)? {
            Some(port) => {
                self.remember_vip_port(vip, port)?;
                port.description
                    .as_deref()
                    .and_then(record_from_description)
            }
            None => {
                self.warn_no_vip_port(vip);
                None
            }
        };
        Ok(AddressState {
            holders: holders_among(&ports, vip),
            record,
        })
    }

    /// Records the claim on the VIP port (compare-and-swap on its revision), then allows the
    /// claimant's port. Without a VIP port: only the latter, whatever `seen` says (there is no
    /// record to compare with).
    pub(super) async fn vip_claim(
        &self,
        vip: IpAddr,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        check_claim_epoch(vip, record, seen)?;
        match self.vip_record_port(vip).await? {
            Some(port) => self.write_vip_record(vip, &port, record, seen).await?,
            None => self.warn_no_vip_port(vip),
        }
        self.vip_attach(vip, &record.holder).await
    }

    /// `PUT /v2.0/ports/{vip port}` of the description with `record`'s token, fenced by the
    /// revision of `port` as read; `seen` must be the epoch of the token read.
    async fn write_vip_record(
        &self,
        vip: IpAddr,
        port: &PortJson,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        let id = port.require_id()?;
        let text = port.description.clone().unwrap_or_default();
        let description =
            claimed_description(&text, record, seen, &format!("VIP port {id} ({vip})"))?;
        if port.revision_number.is_none() {
            tracing::warn!(%vip, port = id, "no revision_number (extension revision-if-match missing?): the claim is not a compare-and-swap");
        }
        let ours = |p: &PortJson| {
            p.description
                .as_deref()
                .and_then(record_from_description)
                .as_ref()
                == Some(record)
        };
        let body = json!({"port": {"description": description}});
        match self
            .neutron
            .put::<PortOne>(&format!("/ports/{id}"), &body, port.revision_number)
            .await
        {
            Ok(updated) if ours(&updated.port) => Ok(()),
            Ok(updated) => Err(Error::Invalid(format!(
                "PUT /v2.0/ports/{id}: the answer shows description {:?}, not what was sent",
                updated.port.description
            ))),
            Err(e @ Error::Conflict(_)) => {
                // 412: claimed or changed since our read: the claim fails, nothing written.
                // Unless the PUT that went through was ours and only its answer was lost (the
                // retry then found the revision moved on): the record then is exactly ours.
                match self.neutron.port(id).await {
                    Ok(now) if ours(&now) => {
                        tracing::debug!(%vip, error = %e, "conflict, but the claim in force is ours");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(Error::NotFound(m)) => {
                // Deleted since our read: the record went with it; a new read decides.
                self.forget_vip_port(vip);
                Err(Error::Conflict(format!(
                    "the VIP port of {vip} is gone since it was read: {m}"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// The VIP port, read fresh: the one found before if it still holds the VIP, else the one
    /// `GET /v2.0/ports?fixed_ips=ip_address%3D<vip>` finds on the VIP's network; `None` when
    /// there is none.
    async fn vip_record_port(&self, vip: IpAddr) -> Result<Option<PortJson>> {
        // First: finding the network may find the VIP port as well.
        let network = self.vip_network(vip).await?;
        let known = self.vip_ports.lock().expect("poisoned").get(&vip).cloned();
        if let Some(id) = known {
            match self.neutron.port(&id).await {
                Ok(port) if port.has_ip(vip) => return Ok(Some(port)),
                Ok(_) | Err(Error::NotFound(_)) => {
                    tracing::debug!(%vip, port = %id, "the VIP port no longer holds the VIP: looking it up again");
                    self.forget_vip_port(vip);
                }
                Err(e) => return Err(e),
            }
        }
        let filter = format!("ip_address={vip}");
        let mut ports = self.neutron.ports(&[("fixed_ips", &filter)]).await?;
        ports.retain(|p| p.network_id.as_deref().is_none_or(|n| n == network));
        let Some(port) = self.choose_vip_port(vip, &ports)? else {
            return Ok(None);
        };
        self.remember_vip_port(vip, port)?;
        Ok(Some(port.clone()))
    }

    /// Among `ports` (of the VIP's network), the VIP port: `--vip-port` if it holds the VIP as a
    /// fixed IP, else the only port that does.
    fn choose_vip_port<'a>(
        &self,
        vip: IpAddr,
        ports: &'a [PortJson],
    ) -> Result<Option<&'a PortJson>> {
        let holding: Vec<&PortJson> = ports.iter().filter(|p| p.has_ip(vip)).collect();
        if let Some(configured) = &self.vip_port {
            if let Some(port) = holding.iter().find(|p| p.id.as_ref() == Some(configured)) {
                return Ok(Some(port));
            }
        }
        match holding.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            several => Err(Error::Invalid(format!(
                "several ports have the VIP {vip} as a fixed IP ({}): set --vip-port",
                several
                    .iter()
                    .map(|p| p.id.as_deref().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn remember_vip_port(&self, vip: IpAddr, port: &PortJson) -> Result<()> {
        let id = port.require_id()?.to_string();
        self.vip_ports.lock().expect("poisoned").insert(vip, id);
        Ok(())
    }

    fn forget_vip_port(&self, vip: IpAddr) {
        self.vip_ports.lock().expect("poisoned").remove(&vip);
    }

    /// Once per address and process: without a VIP port there is no claim record.
    fn warn_no_vip_port(&self, vip: IpAddr) {
        if self.vip_unrecorded.lock().expect("poisoned").insert(vip) {
            tracing::warn!(
                %vip,
                "no port holds the VIP {vip} as a fixed IP: without a VIP port there is no claim record, and split brain protection needs one (a heartbeat partition can leave two holders); create a port with the VIP as its fixed IP (docs/arbiter.md) or set --vip-port"
            );
        }
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

/// Device ids of the ports among `ports` that have `vip` in their `allowed_address_pairs`.
fn holders_among(ports: &[PortJson], vip: IpAddr) -> Vec<InstanceId> {
    let holders: BTreeSet<String> = ports
        .iter()
        .filter(|p| allows(p, vip))
        .filter_map(|p| p.device().map(str::to_string))
        .collect();
    holders.into_iter().map(InstanceId).collect()
}

fn allows(port: &PortJson, vip: IpAddr) -> bool {
    port.allowed_address_pairs
        .iter()
        .flatten()
        .any(|p| pair_is(p, vip))
}

//! Floating-IP mode: who holds a floating IP, and moving it with one fenced PUT
//! (shared/clouds/openstack.md §3, §9.4–9.6).

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::neutron::{
    parse_ip, FloatingIpJson, FloatingIpList, FloatingIpOne, PortJson, RouterList,
};
use super::OpenStack;
use crate::{Error, InstanceId, Result};

/// Where a floating IP goes for a server: a port, and the fixed IP when the port has several
/// IPv4 addresses (Neutron then wants to be told which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    port_id: String,
    fixed_ip: Option<IpAddr>,
}

impl Target {
    fn reached_by(&self, fip: &FloatingIpJson) -> bool {
        fip.port() == Some(self.port_id.as_str())
            && match self.fixed_ip {
                None => true,
                Some(want) => fip.fixed_ip_address.as_deref().and_then(parse_ip) == Some(want),
            }
    }
}

/// Owners of the ports that connect a router to a tenant subnet.
fn is_router_interface(owner: Option<&str>) -> bool {
    match owner {
        None => true,
        Some(o) => {
            o.starts_with("network:router_interface")
                || o == "network:ha_router_replicated_interface"
        }
    }
}

impl OpenStack {
    /// The floating IP with address `ip`, read fresh.
    async fn floating_ip(&self, ip: IpAddr) -> Result<FloatingIpJson> {
        let address = ip.to_string();
        let list: FloatingIpList = self
            .neutron
            .get("/floatingips", &[("floating_ip_address", &address)])
            .await?;
        // The filter is the server's; the address is checked here too.
        let mut found: Vec<FloatingIpJson> = list
            .floatingips
            .into_iter()
            .filter(|f| f.floating_ip_address.as_deref().and_then(parse_ip) == Some(ip))
            .collect();
        match found.len() {
            0 => Err(Error::NotFound(format!(
                "no floating IP {ip} in this project and region"
            ))),
            1 => {
                let fip = found.remove(0);
                let id = fip.id.as_deref().unwrap_or_default();
                super::check_id("floating IP", id)?;
                Ok(fip)
            }
            n => Err(Error::Invalid(format!(
                "GET /v2.0/floatingips: {n} floating IPs have the address {ip}"
            ))),
        }
    }

    /// The server whose port the floating IP is on, if any.
    async fn fip_holder(&self, fip: &FloatingIpJson) -> Result<Option<String>> {
        let Some(port) = fip.port() else {
            return Ok(None);
        };
        // `port_details` (extension fip-port-details) names the server in the same answer.
        if let Some(details) = &fip.port_details {
            return Ok(details.device_id.clone().filter(|d| !d.is_empty()));
        }
        match self.neutron.port(port).await {
            Ok(port) => Ok(port.device().map(str::to_string)),
            // Deleted since: deleting a port dissociates its floating IP.
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn fip_holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        let fip = self.floating_ip(ip).await?;
        Ok(self
            .fip_holder(&fip)
            .await?
            .map(InstanceId)
            .into_iter()
            .collect())
    }

    pub(super) async fn fip_attach(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        let fip = self.floating_ip(ip).await?;
        let network = fip.floating_network_id.clone().unwrap_or_default();
        let target = self.fip_target(to, &network, ip).await?;
        if target.reached_by(&fip) {
            tracing::debug!(%ip, server = %to, port = %target.port_id, "the floating IP is already there");
            return Ok(());
        }
        let mut body = json!({"floatingip": {"port_id": target.port_id}});
        if let Some(fixed) = target.fixed_ip {
            body["floatingip"]["fixed_ip_address"] = json!(fixed.to_string());
        }
        match self.put_fip(&fip, &body).await {
            Ok(updated) if target.reached_by(&updated) => Ok(()),
            Ok(updated) => Err(Error::Invalid(format!(
                "PUT /v2.0/floatingips/{}: the answer shows port {:?}, not {}",
                fip.id.as_deref().unwrap_or_default(),
                updated.port_id,
                target.port_id
            ))),
            Err(e @ Error::Conflict(_)) => {
                // 412: changed since we read it, or our own PUT went through and only its
                // answer was lost (then the retry found the revision moved on). 409: the
                // fixed IP has another floating IP. Either way, what holds now decides.
                match self.floating_ip(ip).await {
                    Ok(now) if target.reached_by(&now) => {
                        tracing::debug!(%ip, server = %to, error = %e, "conflict, but the floating IP is where it should be");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e @ (Error::NotFound(_) | Error::Invalid(_))) => {
                // The port may be gone or unfit: choose again next time.
                self.fip_targets
                    .lock()
                    .expect("poisoned")
                    .remove(&(to.0.clone(), network));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn fip_detach(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        let fip = self.floating_ip(ip).await?;
        if self.fip_holder(&fip).await?.as_deref() != Some(from.0.as_str()) {
            tracing::debug!(%ip, server = %from, "the floating IP is not on this server: nothing to detach");
            return Ok(());
        }
        let body = json!({"floatingip": {"port_id": Value::Null}});
        match self.put_fip(&fip, &body).await {
            Ok(_) => Ok(()),
            Err(e @ Error::Conflict(_)) => match self.floating_ip(ip).await {
                Ok(now) => match self.fip_holder(&now).await {
                    Ok(holder) if holder.as_deref() != Some(from.0.as_str()) => Ok(()),
                    _ => Err(e),
                },
                Err(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2.0/floatingips/{id}` fenced with the revision read (`If-Match`).
    async fn put_fip(&self, fip: &FloatingIpJson, body: &Value) -> Result<FloatingIpJson> {
        let id = fip.id.as_deref().unwrap_or_default();
        if fip.revision_number.is_none() {
            tracing::debug!(
                floating_ip = id,
                "no revision_number: updating without If-Match"
            );
        }
        let updated: FloatingIpOne = self
            .neutron
            .put(&format!("/floatingips/{id}"), body, fip.revision_number)
            .await?;
        Ok(updated.floatingip)
    }

    /// The port (and fixed IP) of `server` that a floating IP of `network` goes to: its only
    /// port; for this server `--port` when given; else the one on a subnet with a router to
    /// `network`.
    async fn fip_target(&self, server: &InstanceId, network: &str, ip: IpAddr) -> Result<Target> {
        let key = (server.0.clone(), network.to_string());
        if let Some(target) = self.fip_targets.lock().expect("poisoned").get(&key) {
            return Ok(target.clone());
        }
        let mut routed: Option<HashSet<String>> = None;
        let port = match &self.port {
            Some(port) if self.is_self(server) => self.neutron.port(port).await?,
            _ => {
                let mut ports = self.neutron.server_ports(&server.0).await?;
                match ports.len() {
                    0 => {
                        return Err(Error::NotFound(format!(
                            "server {server} has no Neutron port"
                        )))
                    }
                    1 => ports.remove(0),
                    _ => {
                        let subnets = self.routed_subnets(network).await?;
                        let on_route = |p: &PortJson| {
                            p.fixed_ips
                                .iter()
                                .flatten()
                                .any(|f| f.subnet_id.as_ref().is_some_and(|s| subnets.contains(s)))
                        };
                        let ids: Vec<&str> = ports.iter().filter_map(|p| p.id.as_deref()).collect();
                        let ids = ids.join(", ");
                        let mut routed_ports: Vec<PortJson> =
                            ports.iter().filter(|p| on_route(p)).cloned().collect();
                        let port = match routed_ports.len() {
                            1 => routed_ports.remove(0),
                            n => {
                                return Err(Error::Invalid(format!(
                                    "server {server} has several ports ({ids}) and {} on a subnet with a router to the floating IP's network {network}; set --port",
                                    if n == 0 { "none is" } else { "several are" }
                                )))
                            }
                        };
                        routed = Some(subnets);
                        port
                    }
                }
            }
        };
        let port_id = port.require_id()?.to_string();
        let v4: Vec<_> = port
            .fixed_ips
            .iter()
            .flatten()
            .filter(|f| f.ip().is_some_and(|a| a.is_ipv4()))
            .collect();
        let fixed_ip = match v4.len() {
            0 => {
                return Err(Error::Invalid(format!(
                    "port {port_id} of server {server} has no IPv4 address to map the floating IP {ip} to"
                )))
            }
            1 => None,
            _ => {
                let subnets = match routed {
                    Some(s) => s,
                    None => self.routed_subnets(network).await?,
                };
                let chosen = v4
                    .iter()
                    .find(|f| f.subnet_id.as_ref().is_some_and(|s| subnets.contains(s)))
                    .and_then(|f| f.ip());
                Some(chosen.ok_or_else(|| {
                    Error::Invalid(format!(
                        "port {port_id} of server {server} has several IPv4 addresses and none on a subnet with a router to the floating IP's network {network}"
                    ))
                })?)
            }
        };
        let target = Target { port_id, fixed_ip };
        self.fip_targets
            .lock()
            .expect("poisoned")
            .insert(key, target.clone());
        Ok(target)
    }

    /// The subnets connected to a router whose external gateway is on `network`: the ones a
    /// floating IP of `network` can reach.
    async fn routed_subnets(&self, network: &str) -> Result<HashSet<String>> {
        let routers: RouterList = self.neutron.get("/routers", &[]).await?;
        let mut subnets = HashSet::new();
        for router in routers.routers {
            let gateway = router
                .external_gateway_info
                .as_ref()
                .and_then(|g| g.network_id.as_deref());
            let (Some(id), true) = (router.id.as_deref(), gateway == Some(network)) else {
                continue;
            };
            for port in self.neutron.server_ports(id).await? {
                if is_router_interface(port.device_owner.as_deref()) {
                    subnets.extend(
                        port.fixed_ips
                            .iter()
                            .flatten()
                            .filter_map(|f| f.subnet_id.clone()),
                    );
                }
            }
        }
        Ok(subnets)
    }
}

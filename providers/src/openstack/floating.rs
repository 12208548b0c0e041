//! Floating-IP mode: who holds a floating IP, and moving it with one fenced PUT
//! (shared/clouds/openstack.md §3, §9.4–9.6), which also carries the claim record.
//!
//! The record is one token in the floating IP's `description`,
//! `exoip:epoch=<n>,holder=<server uuid>`: any other text there is the user's and stays. The
//! PUT that moves the address writes it, with `If-Match: revision_number=<read>`, so a claim
//! based on a stale read fails as a whole (412) and changes nothing (`docs/arbiter.md`).

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::neutron::{
    parse_ip, FloatingIpJson, FloatingIpList, FloatingIpOne, PortJson, RouterList, MAX_DESCRIPTION,
};
use super::OpenStack;
use crate::exoscale::{check_claim_epoch, describe};
use crate::{AddressState, ClaimRecord, Error, InstanceId, Result};

/// How the record token starts (a word of the description).
const TOKEN: &str = "exoip:epoch=";

/// The byte ranges of the record tokens in `text`: its whitespace-separated words that start
/// with [`TOKEN`].
fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                if text[s..i].starts_with(TOKEN) {
                    spans.push((s, i));
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    spans
}

/// `exoip:epoch=7,holder=<uuid>` → the record; anything else (edited by hand) → `None`.
fn parse_token(word: &str) -> Option<ClaimRecord> {
    let (epoch, holder) = word.strip_prefix(TOKEN)?.split_once(',')?;
    let epoch = epoch.parse::<u64>().ok()?;
    let holder = holder.strip_prefix("holder=")?;
    super::check_id("holder", holder).ok()?;
    Some(ClaimRecord {
        epoch,
        holder: InstanceId(holder.to_string()),
    })
}

fn token(record: &ClaimRecord) -> String {
    format!("{TOKEN}{},holder={}", record.epoch, record.holder)
}

/// The description a claim writes over `text`, whose record must be `seen` (else a conflict:
/// someone claimed since); invalid when the token no longer fits. `what` names the resource in
/// the messages, e.g. "floating IP <id> (<ip>)".
pub(super) fn claimed_description(
    text: &str,
    record: &ClaimRecord,
    seen: Option<u64>,
    what: &str,
) -> Result<String> {
    let found = record_from_description(text);
    if found.as_ref().map(|r| r.epoch) != seen {
        return Err(Error::Conflict(format!(
            "the claim record of {what} is {}, not epoch {}: someone claimed it since",
            describe(found.as_ref()),
            seen.map_or("none".to_string(), |e| e.to_string()),
        )));
    }
    let description = description_with(text, record);
    let length = description.chars().count();
    if length > MAX_DESCRIPTION {
        return Err(Error::Invalid(format!(
            "{what}: its description with the claim record would be {length} characters, more than Neutron's {MAX_DESCRIPTION}: shorten the description"
        )));
    }
    Ok(description)
}

/// The claim record in a floating IP's description: its first well-formed token.
pub(crate) fn record_from_description(text: &str) -> Option<ClaimRecord> {
    token_spans(text)
        .into_iter()
        .find_map(|(a, b)| parse_token(&text[a..b]))
}

/// `text` with its record token replaced by `record`'s (appended after a space when there is
/// none); further tokens are removed, so there is only ever one. Everything else stays.
pub(crate) fn description_with(text: &str, record: &ClaimRecord) -> String {
    let new = token(record);
    let spans = token_spans(text);
    let Some(&(first_start, first_end)) = spans.first() else {
        return if text.is_empty() {
            new
        } else if text.ends_with(char::is_whitespace) {
            format!("{text}{new}")
        } else {
            format!("{text} {new}")
        };
    };
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..first_start]);
    out.push_str(&new);
    let mut at = first_end;
    for &(start, end) in &spans[1..] {
        // Drop the extra token with the whitespace before it.
        let kept = text[at..start].trim_end();
        out.push_str(kept);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

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

    /// The holder and the claim record, from the one GET.
    pub(super) async fn fip_state(&self, ip: IpAddr) -> Result<AddressState> {
        let fip = self.floating_ip(ip).await?;
        let holders = self
            .fip_holder(&fip)
            .await?
            .map(InstanceId)
            .into_iter()
            .collect();
        Ok(AddressState {
            holders,
            record: fip.description.as_deref().and_then(record_from_description),
        })
    }

    /// Moves the floating IP to `record.holder` and writes `record` into its description in
    /// the same PUT, fenced by the revision of the read that checked `seen`.
    pub(super) async fn fip_claim(
        &self,
        ip: IpAddr,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        check_claim_epoch(ip, record, seen)?;
        let fip = self.floating_ip(ip).await?;
        let id = fip.id.clone().unwrap_or_default();
        let text = fip.description.clone().unwrap_or_default();
        let description =
            claimed_description(&text, record, seen, &format!("floating IP {id} ({ip})"))?;
        if fip.revision_number.is_none() {
            tracing::warn!(%ip, floating_ip = %id, "no revision_number (extension revision-if-match missing?): the claim is not a compare-and-swap");
        }
        let network = fip.floating_network_id.clone().unwrap_or_default();
        let target = self.fip_target(&record.holder, &network, ip).await?;
        let mut body =
            json!({"floatingip": {"port_id": target.port_id, "description": description}});
        if let Some(fixed) = target.fixed_ip {
            body["floatingip"]["fixed_ip_address"] = json!(fixed.to_string());
        }
        let done = |now: &FloatingIpJson| {
            target.reached_by(now)
                && now
                    .description
                    .as_deref()
                    .and_then(record_from_description)
                    .as_ref()
                    == Some(record)
        };
        match self.put_fip(&fip, &body).await {
            Ok(updated) if done(&updated) => Ok(()),
            Ok(updated) => Err(Error::Invalid(format!(
                "PUT /v2.0/floatingips/{id}: the answer shows port {:?} and description {:?}, not what was sent",
                updated.port_id, updated.description
            ))),
            Err(e @ Error::Conflict(_)) => {
                // 412: claimed or changed since our read: the claim fails as a whole. Unless
                // the PUT that went through was ours and only its answer was lost (the retry
                // then found the revision moved on): the record then is exactly ours.
                match self.floating_ip(ip).await {
                    Ok(now) if done(&now) => {
                        tracing::debug!(%ip, error = %e, "conflict, but the claim in force is ours");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e @ (Error::NotFound(_) | Error::Invalid(_))) => {
                self.fip_targets
                    .lock()
                    .expect("poisoned")
                    .remove(&(record.holder.0.clone(), network));
                Err(e)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "2f6a9a43-0000-4000-8000-000000000011";
    const B: &str = "2f6a9a43-0000-4000-8000-000000000012";

    fn record(epoch: u64, holder: &str) -> ClaimRecord {
        ClaimRecord {
            epoch,
            holder: InstanceId(holder.into()),
        }
    }

    #[test]
    fn the_record_token_is_found_among_user_text() {
        assert_eq!(record_from_description(""), None);
        assert_eq!(record_from_description("web front end"), None);
        let text = format!("web front end exoip:epoch=7,holder={A}\nsecond line");
        assert_eq!(record_from_description(&text), Some(record(7, A)));
        // Hand-edited tokens are no record; a later good one is.
        for bad in [
            "exoip:epoch=x,holder=a".to_string(),
            format!("exoip:epoch=7,holder={A}/.."),
            format!("exoip:epoch=7;holder={A}"),
            "exoip:epoch=7".to_string(),
            format!("exoip:epoch=-1,holder={A}"),
        ] {
            assert_eq!(record_from_description(&bad), None, "{bad}");
        }
        let text = format!("exoip:epoch=x,holder=y exoip:epoch=3,holder={B}");
        assert_eq!(record_from_description(&text), Some(record(3, B)));
    }

    #[test]
    fn writing_the_record_keeps_the_user_text_and_one_token() {
        let r = record(8, B);
        let t = token(&r);
        assert_eq!(description_with("", &r), t);
        assert_eq!(description_with("web", &r), format!("web {t}"));
        assert_eq!(description_with("web\n", &r), format!("web\n{t}"));
        let old = format!("web exoip:epoch=7,holder={A} (prod)");
        assert_eq!(description_with(&old, &r), format!("web {t} (prod)"));
        let two = format!("exoip:epoch=6,holder={A} web exoip:epoch=7,holder={A} end");
        assert_eq!(description_with(&two, &r), format!("{t} web end"));
        let again = description_with(&description_with(&old, &r), &r);
        assert_eq!(again, format!("web {t} (prod)"));
        assert_eq!(record_from_description(&again), Some(r));
        // Other words that merely mention exoip stay.
        assert_eq!(
            description_with("exoip:managed", &record(1, A)),
            format!("exoip:managed {}", token(&record(1, A)))
        );
    }
}

//! The simulated OpenStack: Keystone v3 (under `/identity`) and Neutron v2.0 (under `/network`)
//! on the simulator's API listener, plus a Nova-style metadata stub, following
//! `shared/clouds/openstack.md` (§8 lists what is enforced).
//!
//! * `keystone`: password and application-credential authentication, tokens with a lifetime,
//!   revocation, a catalog whose URLs are built from the request's `Host` header.
//! * `neutron`: networks, subnets, routers, security groups, ports (with allowed address pairs)
//!   and floating IPs, with Neutron's association rules, `revision_number` and `If-Match`.
//! * `metadata`: `/openstack/latest/meta_data.json` and `network_data.json`.
//! * [`seed`]: the initial state ([`OpenStackSeed`], [`LabSeed`]).
//!
//! The holders of an address, for the timeline, [`super::SimHandle::holders`] and the control
//! API: for a floating IP, the `device_id` (server id) of the port it is associated with; for
//! any other address (a VIP), the `device_id`s of the ports whose `allowed_address_pairs`
//! contain it. Timeline events carry the region as `zone`, the floating IP id (or the VIP
//! port's id) as `eip_id`, and the server id as `instance` (the port id for a port without a
//! device). A new claim record (exoip's token in the description of a floating IP, or of a VIP
//! port in VIP mode) is a `claim` event naming the claimant; `GET /_sim/state` shows it as the
//! `record` of that floating IP or port.
//!
//! Control endpoints (unauthenticated, under `/_sim/` on the API listener): the shared
//! `GET /_sim/state`, `GET /_sim/timeline`, `GET`/`PUT /_sim/faults`,
//! `PUT /_sim/elastic-ip/{ip}/holders`, and for OpenStack:
//! * `POST /_sim/tokens/revoke`: revoke every token issued so far.
//! * `PUT /_sim/token-lifetime` `{"lifetime":"2s"}`: the lifetime of tokens issued from now on.
//! * `DELETE /_sim/port/{id}`: delete a port, as another actor would (dissociates its floating
//!   IPs; recorded on the timeline as forced).
//! * `PUT /_sim/extension/{alias}` `{"enabled":false}`: switch a Neutron extension off or on.
//! * `PUT /_sim/floating-ip/{ip}/holders` and `PUT /_sim/address/{ip}/holders`
//!   `{"holders":["<server id>"]}`: like `/_sim/elastic-ip/{ip}/holders`.
//!
//! Faults ([`super::Faults`]) act on Keystone and Neutron alike: latency, jitter, 503, 429,
//! dropped connections, `api_down`, `response_lost` (a successful mutation whose answer is
//! lost), `op_delay` (extra latency of Neutron mutations, which apply after it: Neutron's PUTs
//! are synchronous) and `clock_skew_secs` (Keystone's clock, for token times). The
//! operation-specific faults (`op_immediate`, `op_stuck`, `op_failure`, `noop_failure`) are
//! Exoscale's and do nothing here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::exoscale::{lock, Clock, ControlError};
use super::faults::FaultState;
use super::route::{self, NatMapping, RouteRunner};
use super::timeline::{unix_now, HolderEvent, Timeline, TimelineEvent};
use crate::InstanceId;

pub(crate) mod keystone;
pub(crate) mod metadata;
pub(crate) mod net;
pub(crate) mod neutron;
pub mod seed;

pub use seed::{lab, LabSeed, OpenStackSeed};

use net::{Cidr, Mac};
use seed::project_or_default;

/// A Neutron API extension as `GET /v2.0/extensions` lists it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExtensionInfo {
    pub alias: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub updated: &'static str,
}

/// The extensions the simulated Neutron announces (all on unless the seed or the control API
/// switches them off). Switching one off changes behaviour for `port-security-groups-filtering`
/// (the `security_groups` filter on ports is ignored, as Neutron releases without it did),
/// `fip-port-details` (no `port_details`), `revision-if-match` (`If-Match` is ignored) and
/// `allowed-address-pairs` (no such attribute); the others are only listed.
pub(crate) const NEUTRON_EXTENSIONS: &[ExtensionInfo] = &[
    ExtensionInfo {
        alias: "allowed-address-pairs",
        name: "Allowed Address Pairs",
        description: "Provides allowed address pairs",
        updated: "2013-07-23T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "external-net",
        name: "Neutron external network",
        description: "Adds external network attribute to network resource.",
        updated: "2013-01-14T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "filter-validation",
        name: "Filter parameters validation",
        description: "Provides validation on filter parameters.",
        updated: "2018-03-21T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "fip-port-details",
        name: "Floating IP Port Details Extension",
        description: "Add port_details attribute to Floating IP resource",
        updated: "2018-04-09T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "port-security-groups-filtering",
        name: "Port filtering on security groups",
        description: "Provides security groups filtering when listing ports",
        updated: "2018-01-09T09:00:00-00:00",
    },
    ExtensionInfo {
        alias: "revision-if-match",
        name: "If-Match constraints based on revision_number",
        description: "Extension indicating that If-Match based on revision_number is supported.",
        updated: "2016-12-11T00:00:00-00:00",
    },
    ExtensionInfo {
        alias: "router",
        name: "Neutron L3 Router",
        description: "Router abstraction for basic L3 forwarding between L2 Neutron networks \
                      and access to external networks via a NAT gateway.",
        updated: "2012-07-20T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "security-group",
        name: "security-group",
        description: "The security groups extension.",
        updated: "2012-10-05T10:00:00-00:00",
    },
    ExtensionInfo {
        alias: "standard-attr-revisions",
        name: "Resource revision numbers",
        description: "This extension will display the revision number of neutron resources.",
        updated: "2016-04-11T10:00:00-00:00",
    },
];

pub(crate) const EXT_SG_FILTER: &str = "port-security-groups-filtering";
pub(crate) const EXT_PORT_DETAILS: &str = "fip-port-details";
pub(crate) const EXT_IF_MATCH: &str = "revision-if-match";
pub(crate) const EXT_PAIRS: &str = "allowed-address-pairs";

/// Neutron's default `max_allowed_address_pair`.
pub(crate) const MAX_ADDRESS_PAIRS: usize = 10;

/// `created_at` of everything seeded.
pub(crate) const CREATED_AT: &str = "2026-01-01T00:00:00Z";

/// Neutron's timestamp format (seconds, `Z`).
pub(crate) fn neutron_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Clone, Debug)]
pub(crate) struct Network {
    pub id: String,
    pub name: String,
    pub project: String,
    pub external: bool,
    pub mtu: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Subnet {
    pub id: String,
    pub name: String,
    pub network: String,
    pub project: String,
    pub cidr: Cidr,
    pub gateway_ip: Option<IpAddr>,
}

#[derive(Clone, Debug)]
pub(crate) struct RouterInterface {
    pub subnet: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Router {
    pub id: String,
    pub name: String,
    pub project: String,
    pub gateway: Option<(String, Option<IpAddr>)>,
    pub interfaces: Vec<RouterInterface>,
}

#[derive(Clone, Debug)]
pub(crate) struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub project: String,
    pub description: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Server {
    pub id: String,
    pub name: String,
    pub project: String,
    pub availability_zone: String,
    pub meta: BTreeMap<String, String>,
    pub user_data: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddressPair {
    /// As the client wrote it (Neutron keeps the text: `10.0.0.200` stays without `/32`).
    pub ip_address: String,
    pub mac: Mac,
}

impl AddressPair {
    /// The single address this pair allows, unless it is a wider prefix.
    fn host(&self) -> Option<IpAddr> {
        Cidr::from_str(&self.ip_address)
            .ok()
            .filter(Cidr::is_host)
            .map(|c| c.addr)
    }

    fn allows(&self, ip: IpAddr) -> bool {
        Cidr::from_str(&self.ip_address).is_ok_and(|c| c.contains(ip))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Port {
    pub id: String,
    pub name: String,
    pub description: String,
    pub network: String,
    pub project: String,
    pub device_id: String,
    pub device_owner: String,
    pub mac: Mac,
    /// (subnet id, address)
    pub fixed_ips: Vec<(String, IpAddr)>,
    pub security_groups: Vec<String>,
    pub pairs: Vec<AddressPair>,
    pub admin_state_up: bool,
    pub revision: u64,
    pub updated_at: String,
}

impl Port {
    /// What the timeline and the holder lists call this port's holder.
    fn holder(&self) -> String {
        if self.device_id.is_empty() {
            self.id.clone()
        } else {
            self.device_id.clone()
        }
    }

    /// ACTIVE when bound to a device, DOWN otherwise (an unbound VIP port).
    pub fn status(&self) -> &'static str {
        if self.device_id.is_empty() {
            "DOWN"
        } else {
            "ACTIVE"
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FloatingIp {
    pub id: String,
    pub project: String,
    pub address: Ipv4Addr,
    pub network: String,
    pub port: Option<String>,
    pub fixed_ip: Option<Ipv4Addr>,
    pub router: Option<String>,
    pub description: String,
    pub revision: u64,
    pub status: &'static str,
    /// When the simulated L3 agent will report the association ACTIVE.
    pub active_at: Option<Instant>,
    pub updated_at: String,
}

/// Neutron's and Nova's state.
#[derive(Debug)]
pub(crate) struct World {
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub routers: Vec<Router>,
    pub security_groups: Vec<SecurityGroup>,
    pub servers: Vec<Server>,
    pub ports: Vec<Port>,
    pub fips: Vec<FloatingIp>,
    /// alias → enabled
    pub extensions: BTreeMap<&'static str, bool>,
    pub fip_status_delay: Duration,
}

/// A floating IP association: the port, its fixed IPv4 address and the router between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Association {
    pub port: String,
    pub fixed_ip: Ipv4Addr,
    pub router: String,
}

/// Why an association is impossible: Neutron's status, error type and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AssocError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl AssocError {
    fn new(status: u16, kind: &'static str, message: String) -> Self {
        AssocError {
            status,
            kind,
            message,
        }
    }
}

impl World {
    fn from_seed(seed: &OpenStackSeed) -> World {
        let proj = |p: &Option<String>| project_or_default(seed, p).to_string();
        let networks = seed
            .networks
            .iter()
            .map(|n| Network {
                id: n.id.clone(),
                name: n.name.clone(),
                project: proj(&n.project),
                external: n.external,
                mtu: n.mtu,
            })
            .collect();
        let subnets: Vec<Subnet> = seed
            .subnets
            .iter()
            .map(|s| {
                let cidr = Cidr::from_str(&s.cidr).expect("validated");
                Subnet {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    network: s.network.clone(),
                    project: s
                        .project
                        .clone()
                        .or_else(|| {
                            seed.networks
                                .iter()
                                .find(|n| n.id == s.network)
                                .and_then(|n| n.project.clone())
                        })
                        .unwrap_or_else(|| proj(&None)),
                    cidr,
                    gateway_ip: s.gateway_ip.or_else(|| cidr.first_host()),
                }
            })
            .collect();
        let mut ports: Vec<Port> = Vec::new();
        let mut routers = Vec::new();
        for r in &seed.routers {
            let project = proj(&r.project);
            let mut interfaces = Vec::new();
            for i in &r.interfaces {
                let s = subnets
                    .iter()
                    .find(|s| s.id == i.subnet)
                    .expect("validated");
                let ip = i
                    .ip_address
                    .or(s.gateway_ip)
                    .expect("validated: an interface has an address");
                let port_id = i
                    .port_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                ports.push(Port {
                    id: port_id,
                    name: String::new(),
                    description: String::new(),
                    network: s.network.clone(),
                    project: project.clone(),
                    device_id: r.id.clone(),
                    device_owner: "network:router_interface".into(),
                    mac: random_mac(),
                    fixed_ips: vec![(s.id.clone(), ip)],
                    security_groups: Vec::new(),
                    pairs: Vec::new(),
                    admin_state_up: true,
                    revision: 1,
                    updated_at: CREATED_AT.into(),
                });
                interfaces.push(RouterInterface {
                    subnet: s.id.clone(),
                });
            }
            routers.push(Router {
                id: r.id.clone(),
                name: r.name.clone(),
                project,
                gateway: r
                    .external_gateway
                    .as_ref()
                    .map(|g| (g.network.clone(), g.ip_address)),
                interfaces,
            });
        }
        for p in &seed.ports {
            let mac = Mac::from_str(&p.mac_address).expect("validated");
            ports.push(Port {
                id: p.id.clone(),
                name: p.name.clone(),
                description: String::new(),
                network: p.network.clone(),
                project: proj(&p.project),
                device_id: p.device_id.clone(),
                device_owner: p.device_owner.clone(),
                mac,
                fixed_ips: p
                    .fixed_ips
                    .iter()
                    .map(|f| (f.subnet.clone(), f.ip_address))
                    .collect(),
                security_groups: p.security_groups.clone(),
                pairs: p
                    .allowed_address_pairs
                    .iter()
                    .map(|a| AddressPair {
                        ip_address: a.ip_address.clone(),
                        mac: a
                            .mac_address
                            .as_deref()
                            .map(|m| Mac::from_str(m).expect("validated"))
                            .unwrap_or(mac),
                    })
                    .collect(),
                admin_state_up: true,
                revision: 1,
                updated_at: CREATED_AT.into(),
            });
        }
        let mut world = World {
            networks,
            subnets,
            routers,
            security_groups: seed
                .security_groups
                .iter()
                .map(|g| SecurityGroup {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    project: proj(&g.project),
                    description: g.description.clone(),
                })
                .collect(),
            servers: seed
                .servers
                .iter()
                .map(|s| Server {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    project: proj(&s.project),
                    availability_zone: s.availability_zone.clone(),
                    meta: s.meta.clone(),
                    user_data: s.user_data.clone(),
                })
                .collect(),
            ports,
            fips: Vec::new(),
            extensions: NEUTRON_EXTENSIONS
                .iter()
                .map(|e| {
                    (
                        e.alias,
                        !seed.disabled_extensions.iter().any(|d| d == e.alias),
                    )
                })
                .collect(),
            fip_status_delay: seed.fip_status_delay,
        };
        for f in &seed.floating_ips {
            let network = f.network.clone().unwrap_or_else(|| {
                world
                    .networks
                    .iter()
                    .find(|n| n.external)
                    .map(|n| n.id.clone())
                    .expect("validated: there is an external network")
            });
            let mut fip = FloatingIp {
                id: f.id.clone(),
                project: proj(&f.project),
                address: f.address,
                network,
                port: None,
                fixed_ip: None,
                router: None,
                description: f.description.clone(),
                revision: 1,
                status: "DOWN",
                active_at: None,
                updated_at: CREATED_AT.into(),
            };
            if let Some(port) = &f.port {
                let a = world
                    .association(&fip, port, f.fixed_ip_address.map(IpAddr::V4))
                    .expect("validated: the seeded association is possible");
                fip.port = Some(a.port);
                fip.fixed_ip = Some(a.fixed_ip);
                fip.router = Some(a.router);
                fip.status = "ACTIVE";
            }
            world.fips.push(fip);
        }
        world
    }

    pub fn extension(&self, alias: &str) -> bool {
        self.extensions.get(alias).copied().unwrap_or(false)
    }

    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.id == id)
    }

    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.id == id)
    }

    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// Turns a floating IP whose L3 agent delay has passed ACTIVE (a status update by the
    /// agent, so it bumps the revision like any other update).
    fn settle(&mut self) {
        let now = Instant::now();
        for f in &mut self.fips {
            if f.active_at.is_some_and(|at| at <= now) {
                f.active_at = None;
                f.status = "ACTIVE";
                f.revision += 1;
                f.updated_at = neutron_time(SystemTime::now());
            }
        }
    }

    /// The router that connects `subnet` to the external network `network`.
    fn router_between(&self, network: &str, subnet: &str) -> Option<&Router> {
        self.routers.iter().find(|r| {
            r.gateway.as_ref().is_some_and(|(n, _)| n == network)
                && r.interfaces.iter().any(|i| i.subnet == subnet)
        })
    }

    /// Checks, as Neutron does, that `fip` can be associated with `port_id` (at `wanted`, or the
    /// port's only IPv4 address).
    pub fn association(
        &self,
        fip: &FloatingIp,
        port_id: &str,
        wanted: Option<IpAddr>,
    ) -> Result<Association, AssocError> {
        let port = self.port(port_id).ok_or_else(|| {
            AssocError::new(
                404,
                "PortNotFound",
                format!("Port {port_id} could not be found."),
            )
        })?;
        if port.project != fip.project {
            return Err(AssocError::new(
                400,
                "BadRequest",
                format!(
                    "Bad floatingip request: Cannot process floating IP association with Port \
                     {port_id}, since that port is owned by a different project."
                ),
            ));
        }
        let v4: Vec<(&str, Ipv4Addr)> = port
            .fixed_ips
            .iter()
            .filter_map(|(s, ip)| match ip {
                IpAddr::V4(a) => Some((s.as_str(), *a)),
                IpAddr::V6(_) => None,
            })
            .collect();
        let (subnet, fixed_ip) = match wanted {
            Some(IpAddr::V6(w)) => {
                return Err(AssocError::new(
                    400,
                    "BadRequest",
                    format!(
                        "Bad floatingip request: Cannot process floating IP association with \
                         {w}, since that is not an IPv4 address."
                    ),
                ))
            }
            Some(IpAddr::V4(w)) => *v4.iter().find(|(_, a)| *a == w).ok_or_else(|| {
                AssocError::new(
                    400,
                    "BadRequest",
                    format!("Bad floatingip request: Port {port_id} does not have fixed ip {w}."),
                )
            })?,
            None => match v4.as_slice() {
                [one] => *one,
                [] => {
                    return Err(AssocError::new(
                        400,
                        "BadRequest",
                        format!(
                            "Bad floatingip request: Cannot add floating IP to port {port_id} \
                             that has no fixed IPv4 addresses."
                        ),
                    ))
                }
                _ => {
                    return Err(AssocError::new(
                        400,
                        "BadRequest",
                        format!(
                            "Bad floatingip request: Port {port_id} has multiple fixed IPv4 \
                             addresses. Must provide a specific IPv4 address when assigning a \
                             floating IP."
                        ),
                    ))
                }
            },
        };
        let router = self.router_between(&fip.network, subnet).ok_or_else(|| {
            AssocError::new(
                404,
                "ExternalGatewayForFloatingIPNotFound",
                format!(
                    "External network {} is not reachable from subnet {subnet}.  Therefore, \
                     cannot associate Port {port_id} with a Floating IP.",
                    fip.network
                ),
            )
        })?;
        if self.fips.iter().any(|o| {
            o.id != fip.id
                && o.network == fip.network
                && o.port.as_deref() == Some(port_id)
                && o.fixed_ip == Some(fixed_ip)
        }) {
            return Err(AssocError::new(
                409,
                "FloatingIPPortAlreadyAssociated",
                format!(
                    "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP \
                     {fixed_ip}, as that fixed IP already has a floating IP on external network \
                     {}.",
                    fip.address, fip.id, fip.network
                ),
            ));
        }
        Ok(Association {
            port: port_id.to_string(),
            fixed_ip,
            router: router.id.clone(),
        })
    }

    /// The holder of floating IP `idx`, as a list (empty when unassociated or on a port without
    /// a device).
    fn fip_holders(&self, idx: usize) -> Vec<String> {
        self.fips[idx]
            .port
            .as_deref()
            .and_then(|p| self.port(p))
            .filter(|p| !p.device_id.is_empty())
            .map(|p| vec![p.device_id.clone()])
            .unwrap_or_default()
    }

    /// The devices whose ports allow `ip` in their address pairs, in port order.
    fn vip_holders(&self, ip: IpAddr) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.ports {
            if !p.device_id.is_empty()
                && p.pairs.iter().any(|a| a.allows(ip))
                && !out.contains(&p.device_id)
            {
                out.push(p.device_id.clone());
            }
        }
        out
    }

    /// The port holding `ip` as a fixed IP (the VIP port), other than `except`.
    fn vip_port(&self, ip: IpAddr, except: &str) -> Option<&Port> {
        self.ports
            .iter()
            .find(|p| p.id != except && p.fixed_ips.iter().any(|(_, a)| *a == ip))
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<String> {
        match self.fips.iter().position(|f| IpAddr::V4(f.address) == ip) {
            Some(idx) => self.fip_holders(idx),
            None => self.vip_holders(ip),
        }
    }

    /// The NAT the router applies: every associated floating IP to its fixed IP.
    fn nat(&self) -> (Vec<NatMapping>, Vec<String>) {
        let mut mappings: Vec<NatMapping> = self
            .fips
            .iter()
            .filter_map(|f| {
                f.fixed_ip.map(|fixed| NatMapping {
                    floating: f.address,
                    fixed,
                })
            })
            .collect();
        mappings.sort();
        let mut internal: Vec<String> = Vec::new();
        for r in &self.routers {
            for i in &r.interfaces {
                if let Some(s) = self.subnet(&i.subnet) {
                    let c = format!("{}/{}", s.cidr.network(), s.cidr.prefix);
                    if s.cidr.addr.is_ipv4() && !internal.contains(&c) {
                        internal.push(c);
                    }
                }
            }
        }
        (mappings, internal)
    }
}

fn random_mac() -> Mac {
    let b: [u8; 3] = rand::random();
    Mac([0xfa, 0x16, 0x3e, b[0], b[1], b[2]])
}

/// The Keystone and Neutron state behind one listener, with faults, timeline and route hook.
pub(crate) struct OsSim {
    pub region: String,
    pub identity: keystone::Identity,
    pub tokens: Mutex<keystone::Tokens>,
    pub world: Mutex<World>,
    pub faults: Mutex<FaultState>,
    pub timeline: Timeline,
    routes: Option<Arc<dyn RouteRunner>>,
    nat: Mutex<NatState>,
    clock: Clock,
    /// Used for catalog URLs when a request has no `Host` header.
    pub api_addr: SocketAddr,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Default)]
struct NatState {
    applied: Option<(Vec<NatMapping>, Vec<String>)>,
    closed: bool,
}

impl OsSim {
    pub fn new(
        seed: &OpenStackSeed,
        faults: FaultState,
        timeline: Timeline,
        routes: Option<Arc<dyn RouteRunner>>,
        clock: Clock,
        api_addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> OsSim {
        OsSim {
            region: seed.region.clone(),
            identity: keystone::Identity::from_seed(seed),
            tokens: Mutex::new(keystone::Tokens::new(seed.token_lifetime)),
            world: Mutex::new(World::from_seed(seed)),
            faults: Mutex::new(faults),
            timeline,
            routes,
            nat: Mutex::new(NatState::default()),
            clock,
            api_addr,
            shutdown,
        }
    }

    /// The cloud's "now": the clock plus the injected skew.
    pub fn now(&self) -> SystemTime {
        let skew = lock(&self.faults).faults.clock_skew_secs;
        let base = (self.clock)();
        if skew >= 0 {
            base + Duration::from_secs(skew as u64)
        } else {
            base.checked_sub(Duration::from_secs(skew.unsigned_abs()))
                .unwrap_or(UNIX_EPOCH)
        }
    }

    /// The world, with pending status changes applied.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = lock(&self.world);
        w.settle();
        w
    }

    /// Brings the router's NAT in line with the world (called under the world lock, so the
    /// rules change in the order the state did). A no-op without `--route-holders`.
    fn sync_nat(&self, world: &World) {
        let Some(runner) = &self.routes else { return };
        let mut nat = lock(&self.nat);
        if nat.closed {
            return;
        }
        let wanted = world.nat();
        if nat.applied.as_ref() == Some(&wanted) {
            return;
        }
        let script = route::nat_script(&wanted.0, &wanted.1);
        if route::apply_nat(runner.as_ref(), &script) {
            nat.applied = Some(wanted);
        } else {
            // Try again on the next change rather than believe a failed script.
            nat.applied = None;
        }
    }

    /// Start-up: applies the seeded associations before serving.
    pub fn start_routes(&self) {
        let world = self.world();
        self.sync_nat(&world);
    }

    /// Exit: removes the NAT table; later changes no longer touch the rules.
    pub fn teardown(&self) {
        let Some(runner) = &self.routes else { return };
        let mut nat = lock(&self.nat);
        if nat.closed {
            return;
        }
        nat.closed = true;
        route::apply_nat(runner.as_ref(), &route::nat_teardown_script());
    }

    /// Records one holder change of `ip`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        t: f64,
        ip: IpAddr,
        eip_id: &str,
        event: HolderEvent,
        instance: &str,
        holders: &[String],
        forced: bool,
    ) {
        tracing::info!(
            "{ip} {event:?} {instance}{}: holders now {holders:?}",
            if forced { " [forced]" } else { "" }
        );
        self.timeline.record(TimelineEvent {
            t,
            zone: self.region.clone(),
            ip,
            eip_id: eip_id.to_string(),
            event,
            instance: InstanceId(instance.to_string()),
            holders: holders.iter().map(|h| InstanceId(h.clone())).collect(),
            forced,
            epoch: None,
        });
    }

    /// Records that floating IP `idx` now carries a new claim record (in its description).
    pub(crate) fn record_claim(&self, world: &World, idx: usize, record: &crate::ClaimRecord) {
        let fip = &world.fips[idx];
        let holders = world.fip_holders(idx);
        tracing::info!(
            "{} claim: epoch {} by {}: holders {holders:?}",
            fip.address,
            record.epoch,
            record.holder
        );
        self.timeline.record(TimelineEvent {
            t: unix_now(),
            zone: self.region.clone(),
            ip: IpAddr::V4(fip.address),
            eip_id: fip.id.clone(),
            event: HolderEvent::Claim,
            instance: record.holder.clone(),
            holders: holders.into_iter().map(InstanceId).collect(),
            forced: false,
            epoch: Some(record.epoch),
        });
    }

    /// Records that port `idx` (a VIP port) now carries a new claim record in its description:
    /// one `claim` event for each address it holds as a fixed IP, with that VIP's holders.
    pub(crate) fn record_port_claim(&self, world: &World, idx: usize, record: &crate::ClaimRecord) {
        let port = &world.ports[idx];
        let t = unix_now();
        for &(_, ip) in &port.fixed_ips {
            let holders = world.vip_holders(ip);
            tracing::info!(
                "{ip} claim on port {}: epoch {} by {}: holders {holders:?}",
                port.id,
                record.epoch,
                record.holder
            );
            self.timeline.record(TimelineEvent {
                t,
                zone: self.region.clone(),
                ip,
                eip_id: port.id.clone(),
                event: HolderEvent::Claim,
                instance: record.holder.clone(),
                holders: holders.into_iter().map(InstanceId).collect(),
                forced: false,
                epoch: Some(record.epoch),
            });
        }
    }

    /// Sets floating IP `idx`'s association (revision, status, timeline, NAT). `old_holder` is
    /// the previous port's holder, taken before that port possibly went away.
    fn set_association(
        &self,
        world: &mut World,
        idx: usize,
        assoc: Option<Association>,
        old_holder: Option<String>,
        forced: bool,
    ) {
        let delay = world.fip_status_delay;
        let now = SystemTime::now();
        let changed;
        {
            let f = &mut world.fips[idx];
            let new_port = assoc.as_ref().map(|a| a.port.clone());
            changed = f.port != new_port || f.fixed_ip != assoc.as_ref().map(|a| a.fixed_ip);
            f.port = new_port;
            f.fixed_ip = assoc.as_ref().map(|a| a.fixed_ip);
            f.router = assoc.as_ref().map(|a| a.router.clone());
            f.revision += 1;
            f.updated_at = neutron_time(now);
            if changed {
                if f.port.is_none() {
                    f.status = "DOWN";
                    f.active_at = None;
                } else if delay.is_zero() {
                    f.status = "ACTIVE";
                    f.active_at = None;
                } else {
                    f.status = "DOWN";
                    f.active_at = Some(Instant::now() + delay);
                }
            }
        }
        if !changed {
            return;
        }
        let new_holder = world.fips[idx]
            .port
            .as_deref()
            .and_then(|p| world.port(p))
            .map(Port::holder);
        if old_holder != new_holder {
            let t = unix_now();
            let holders = world.fip_holders(idx);
            let (ip, id) = (
                IpAddr::V4(world.fips[idx].address),
                world.fips[idx].id.clone(),
            );
            if let Some(o) = &old_holder {
                self.record(t, ip, &id, HolderEvent::Detach, o, &holders, forced);
            }
            if let Some(n) = &new_holder {
                self.record(t, ip, &id, HolderEvent::Attach, n, &holders, forced);
            }
        }
        self.sync_nat(world);
    }

    /// Replaces port `idx`'s address pairs; returns the single-address changes for
    /// [`OsSim::record_pairs`] (called once every port of an atomic change is done, so that
    /// all its events carry the final holders).
    fn replace_pairs(world: &mut World, idx: usize, pairs: Vec<AddressPair>) -> Vec<PairChange> {
        let hosts =
            |p: &[AddressPair]| -> Vec<IpAddr> { p.iter().filter_map(AddressPair::host).collect() };
        let before = hosts(&world.ports[idx].pairs);
        let after = hosts(&pairs);
        world.ports[idx].pairs = pairs;
        let port = &world.ports[idx];
        let mut changes: Vec<PairChange> = before
            .iter()
            .filter(|a| !after.contains(a))
            .map(|a| (HolderEvent::Detach, *a))
            .chain(
                after
                    .iter()
                    .filter(|a| !before.contains(a))
                    .map(|a| (HolderEvent::Attach, *a)),
            )
            .map(|(event, ip)| PairChange {
                event,
                ip,
                holder: port.holder(),
                vip_port: String::new(),
            })
            .collect();
        for c in &mut changes {
            c.vip_port = world
                .vip_port(c.ip, &world.ports[idx].id)
                .map(|p| p.id.clone())
                .unwrap_or_default();
        }
        changes
    }

    fn record_pairs(&self, world: &World, changes: &[PairChange], forced: bool) {
        let t = unix_now();
        for c in changes {
            let holders = world.vip_holders(c.ip);
            self.record(t, c.ip, &c.vip_port, c.event, &c.holder, &holders, forced);
        }
    }

    /// Deletes port `id` (any project): dissociates its floating IPs, drops its pairs.
    fn remove_port(&self, world: &mut World, id: &str, forced: bool) -> Result<(), ControlError> {
        let idx = world
            .ports
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no port {id}")))?;
        let changes = Self::replace_pairs(world, idx, Vec::new());
        let holder = world.ports[idx].holder();
        world.ports.remove(idx);
        self.record_pairs(world, &changes, forced);
        let fips: Vec<usize> = (0..world.fips.len())
            .filter(|&i| world.fips[i].port.as_deref() == Some(id))
            .collect();
        for i in fips {
            self.set_association(world, i, None, Some(holder.clone()), forced);
        }
        tracing::info!("port {id} deleted{}", if forced { " [forced]" } else { "" });
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Control plane

    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        self.world()
            .holders(ip.to_canonical())
            .into_iter()
            .map(InstanceId)
            .collect()
    }

    /// Another actor sets the holders: moves a floating IP to (the first suitable port of) the
    /// one server given, or dissociates it; for a VIP, adds it to the address pairs of the
    /// given servers' ports on its subnet and removes it from the others'.
    pub fn force_holders(
        &self,
        ip: IpAddr,
        wanted: &[String],
    ) -> Result<Vec<InstanceId>, ControlError> {
        let ip = ip.to_canonical();
        let mut guard = self.world();
        let world = &mut *guard;
        for w in wanted {
            if !world.servers.iter().any(|s| &s.id == w) {
                return Err(ControlError::Invalid(format!("no server {w}")));
            }
        }
        let mut servers: Vec<&String> = Vec::new();
        for w in wanted {
            if !servers.contains(&w) {
                servers.push(w);
            }
        }
        if let Some(idx) = world.fips.iter().position(|f| IpAddr::V4(f.address) == ip) {
            let assoc = match servers.as_slice() {
                [] => None,
                [server] => {
                    let fip = world.fips[idx].clone();
                    let found = world
                        .ports
                        .iter()
                        .filter(|p| &&p.device_id == server)
                        .find_map(|p| world.association(&fip, &p.id, None).ok());
                    Some(found.ok_or_else(|| {
                        ControlError::Invalid(format!(
                            "server {server} has no port that floating IP {ip} can be \
                             associated with"
                        ))
                    })?)
                }
                _ => {
                    return Err(ControlError::Invalid(format!(
                        "floating IP {ip} can be on one port only, not {} servers",
                        servers.len()
                    )))
                }
            };
            let old = world.fips[idx]
                .port
                .as_deref()
                .and_then(|p| world.port(p))
                .map(Port::holder);
            self.set_association(world, idx, assoc, old, true);
            return Ok(world.fip_holders(idx).into_iter().map(InstanceId).collect());
        }

        // A VIP: every subnet containing it.
        let networks: Vec<String> = world
            .subnets
            .iter()
            .filter(|s| s.cidr.contains(ip))
            .map(|s| s.network.clone())
            .collect();
        if networks.is_empty() {
            return Err(ControlError::NotFound(format!(
                "{ip} is neither a floating IP nor in any subnet"
            )));
        }
        for s in &servers {
            if !world
                .ports
                .iter()
                .any(|p| &&p.device_id == s && networks.contains(&p.network))
            {
                return Err(ControlError::Invalid(format!(
                    "server {s} has no port on the network of {ip}"
                )));
            }
        }
        let mut changes = Vec::new();
        for idx in 0..world.ports.len() {
            let p = &world.ports[idx];
            if p.device_id.is_empty()
                || !networks.contains(&p.network)
                || p.device_owner.starts_with("network:")
            {
                continue;
            }
            let has = p.pairs.iter().any(|a| a.host() == Some(ip));
            let want = servers.contains(&&p.device_id);
            let mut pairs = p.pairs.clone();
            if want && !has {
                pairs.push(AddressPair {
                    ip_address: ip.to_string(),
                    mac: p.mac,
                });
            } else if !want && has {
                pairs.retain(|a| a.host() != Some(ip));
            } else {
                continue;
            }
            changes.extend(Self::replace_pairs(world, idx, pairs));
            let port = &mut world.ports[idx];
            port.revision += 1;
            port.updated_at = neutron_time(SystemTime::now());
        }
        self.record_pairs(world, &changes, true);
        Ok(world.vip_holders(ip).into_iter().map(InstanceId).collect())
    }

    /// Control plane: deletes a port as another actor would.
    pub fn delete_port(&self, id: &str) -> Result<(), ControlError> {
        let mut world = self.world();
        self.remove_port(&mut world, id, true)
    }

    /// Control plane: switches a Neutron extension on or off.
    pub fn set_extension(&self, alias: &str, enabled: bool) -> Result<(), ControlError> {
        let mut world = self.world();
        let slot = world.extensions.get_mut(alias).ok_or_else(|| {
            ControlError::NotFound(format!(
                "no extension {alias:?} (known: {})",
                NEUTRON_EXTENSIONS
                    .iter()
                    .map(|e| e.alias)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        *slot = enabled;
        tracing::info!(
            "extension {alias} {}",
            if enabled { "enabled" } else { "disabled" }
        );
        Ok(())
    }

    /// Control plane: revokes every token issued so far; returns how many were valid.
    pub fn revoke_tokens(&self) -> usize {
        let n = lock(&self.tokens).revoke_all();
        tracing::info!("{n} token(s) revoked");
        n
    }

    /// Control plane: the lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) -> Result<(), ControlError> {
        if lifetime.is_zero() {
            return Err(ControlError::Invalid(
                "the token lifetime must be positive".into(),
            ));
        }
        lock(&self.tokens).lifetime = lifetime;
        tracing::info!("token lifetime now {lifetime:?}");
        Ok(())
    }

    /// `/_sim/state`.
    pub fn state_json(&self) -> Value {
        let world = self.world();
        let (tokens, lifetime) = {
            let t = lock(&self.tokens);
            (t.count_valid(self.now()), t.lifetime)
        };
        json!({
            "provider": "openstack",
            "region": self.region,
            "token_lifetime": humantime::format_duration(lifetime).to_string(),
            "valid_tokens": tokens,
            "extensions": world.extensions,
            "floating_ips": world.fips.iter().enumerate().map(|(i, f)| json!({
                "id": f.id, "address": f.address, "port_id": f.port,
                "fixed_ip_address": f.fixed_ip, "status": f.status,
                "revision_number": f.revision, "holders": world.fip_holders(i),
                "description": f.description,
                "record": crate::openstack::record_from_description(&f.description)
                    .map(|r| json!({"epoch": r.epoch, "holder": r.holder})),
            })).collect::<Vec<_>>(),
            "servers": world.servers.iter().map(|s| json!({
                "id": s.id, "name": s.name,
            })).collect::<Vec<_>>(),
            "ports": world.ports.iter().map(|p| json!({
                "id": p.id, "name": p.name, "device_id": p.device_id,
                "device_owner": p.device_owner,
                "fixed_ips": p.fixed_ips.iter().map(|(_, ip)| ip).collect::<Vec<_>>(),
                "allowed_address_pairs": p.pairs.iter()
                    .map(|a| a.ip_address.clone()).collect::<Vec<_>>(),
                "security_groups": p.security_groups,
                "revision_number": p.revision,
                "description": p.description,
                "record": crate::openstack::record_from_description(&p.description)
                    .map(|r| json!({"epoch": r.epoch, "holder": r.holder})),
            })).collect::<Vec<_>>(),
            "security_groups": world.security_groups.iter()
                .map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
        })
    }

    /// The server a metadata request is about: the one with a port whose fixed IP is the
    /// request's source, else the one named by `?instance=`.
    pub fn metadata_server(&self, source: IpAddr, named: Option<&str>) -> Option<MetadataView> {
        let world = self.world();
        let source = source.to_canonical();
        let by_source = world
            .ports
            .iter()
            .find(|p| !p.device_id.is_empty() && p.fixed_ips.iter().any(|(_, ip)| *ip == source))
            .and_then(|p| world.servers.iter().find(|s| s.id == p.device_id));
        let server = by_source
            .or_else(|| named.and_then(|n| world.servers.iter().find(|s| s.id == n)))?
            .clone();
        let ports: Vec<(Port, Vec<(Subnet, u32)>)> = world
            .ports
            .iter()
            .filter(|p| p.device_id == server.id)
            .map(|p| {
                let mtu = world.network(&p.network).map(|n| n.mtu).unwrap_or(1500);
                let subnets = p
                    .fixed_ips
                    .iter()
                    .filter_map(|(s, _)| world.subnet(s).cloned())
                    .map(|s| (s, mtu))
                    .collect();
                (p.clone(), subnets)
            })
            .collect();
        Some(MetadataView { server, ports })
    }
}

/// One single-address change of a port's allowed address pairs.
#[derive(Clone, Debug)]
pub(crate) struct PairChange {
    event: HolderEvent,
    ip: IpAddr,
    /// The port's holder (device id, or the port id).
    holder: String,
    /// The port holding the address as a fixed IP, if any.
    vip_port: String,
}

/// What the metadata stub needs about one server.
pub(crate) struct MetadataView {
    pub server: Server,
    /// Its ports, each with the subnets of its fixed IPs and the network's MTU.
    pub ports: Vec<(Port, Vec<(Subnet, u32)>)>,
}

/// Which project sees what: its own objects, plus external networks and their subnets.
pub(crate) fn visible_network(n: &Network, project: &str) -> bool {
    n.project == project || n.external
}

/// Headers → `http://host` for links and catalog URLs.
pub(crate) fn base_url(sim: &OsSim, headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| sim.api_addr.to_string());
    format!("http://{host}")
}

/// The query parameters in order, `+` and percent escapes decoded (as WebOb does).
pub(crate) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::from_seed(&OpenStackSeed::example())
    }

    #[test]
    fn seeded_world_and_holders() {
        let w = world();
        let lb1 = &OpenStackSeed::example().servers[0].id;
        assert_eq!(
            w.holders("203.0.113.10".parse().unwrap()),
            vec![lb1.clone()]
        );
        assert_eq!(w.holders("192.0.2.100".parse().unwrap()).len(), 3);
        assert!(w.holders("198.51.100.1".parse().unwrap()).is_empty());
        let router_ports: Vec<&Port> = w
            .ports
            .iter()
            .filter(|p| p.device_owner == "network:router_interface")
            .collect();
        assert_eq!(router_ports.len(), 1);
        let (maps, internal) = w.nat();
        assert_eq!(
            maps,
            vec![NatMapping {
                floating: "203.0.113.10".parse().unwrap(),
                fixed: "192.0.2.11".parse().unwrap()
            }]
        );
        assert_eq!(internal, vec!["192.0.2.0/24".to_string()]);
    }

    #[test]
    fn association_rules() {
        let w = world();
        let fip = w.fips[0].clone();
        let lb2_port = &OpenStackSeed::example().ports[1].id;
        let a = w.association(&fip, lb2_port, None).unwrap();
        assert_eq!(a.fixed_ip, "192.0.2.12".parse::<Ipv4Addr>().unwrap());
        let e = w
            .association(&fip, lb2_port, Some("192.0.2.99".parse().unwrap()))
            .unwrap_err();
        assert_eq!((e.status, e.kind), (400, "BadRequest"));
        let e = w
            .association(&fip, "00000000-0000-4000-8000-000000000000", None)
            .unwrap_err();
        assert_eq!((e.status, e.kind), (404, "PortNotFound"));
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "fixed_ips=ip_address%3D192.0.2.11&fields=id&fields=name&a=b+c",
        ));
        assert_eq!(q[0], ("fixed_ips".into(), "ip_address=192.0.2.11".into()));
        assert_eq!(q[3], ("a".into(), "b c".into()));
    }
}

//! The OpenStack seed: the initial state of the simulated Keystone and Neutron, read from JSON
//! (`exoip sim --provider openstack --seed FILE`) or built in Rust ([`LabSeed`], struct literals).
//!
//! ```json
//! {
//!   "region": "RegionOne",
//!   "domains": [{"id": "default", "name": "Default"}],
//!   "projects": [{"id": "3f1e6a0c9d2b4e7f8a5c1d0e2b4f6a81", "name": "demo", "domain": "default"}],
//!   "roles": [{"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "member"}],
//!   "users": [{"id": "7267d1c0a9b84f3e8d2c5b1a0f9e8d71", "name": "demo", "domain": "default",
//!              "password": "…", "default_project": "3f1e…6a81",
//!              "project_roles": {"3f1e…6a81": ["member"]}}],
//!   "application_credentials": [{"id": "3e19…", "name": "exoip", "user": "7267…",
//!                                "project": "3f1e…", "secret": "…"}],
//!   "token_lifetime": "1h",
//!   "networks": [{"id": "…", "name": "private"},
//!                {"id": "…", "name": "public", "external": true}],
//!   "subnets": [{"id": "…", "name": "private-v4", "network": "…", "cidr": "192.0.2.0/24"}],
//!   "routers": [{"id": "…", "name": "router1",
//!                "external_gateway": {"network": "…", "ip_address": "203.0.113.2"},
//!                "interfaces": [{"subnet": "…", "ip_address": "192.0.2.1"}]}],
//!   "security_groups": [{"id": "…", "name": "exoip"}],
//!   "servers": [{"id": "…", "name": "lb1"}],
//!   "ports": [{"id": "…", "network": "…", "device_id": "<server id>",
//!              "device_owner": "compute:nova", "mac_address": "fa:16:3e:00:00:11",
//!              "fixed_ips": [{"subnet": "…", "ip_address": "192.0.2.11"}],
//!              "security_groups": ["…"],
//!              "allowed_address_pairs": [{"ip_address": "192.0.2.100"}]}],
//!   "floating_ips": [{"id": "…", "address": "203.0.113.10", "port": "<port id>"}]
//! }
//! ```
//!
//! `exoip sim --provider openstack --example-seed` prints a complete one
//! ([`OpenStackSeed::example`]).
//!
//! Fields (optional unless said otherwise):
//! * `region` (required): the catalog's `region_id` and the timeline's `zone`.
//! * `domains`: default `[{"id": "default", "name": "Default"}]`.
//! * `projects` (at least one): `id`, `name`, `domain` (a domain id, default `default`). Neutron
//!   and Nova objects without a `project` belong to the first project.
//! * `roles`: default `member` and `reader`.
//! * `users`: `id`, `name`, `domain`, `password`, `default_project` (a password token without
//!   scope is scoped to it, as Keystone does), `project_roles` (project id → role names: the
//!   projects the user can scope to).
//! * `application_credentials`: `id`, `name`, `user` (a user id), `project` (default: the user's
//!   default project), `secret`, `roles` (default: all the user's roles on that project).
//! * `token_lifetime`: default `"1h"` (Keystone's default), a duration like `"30s"`.
//! * `networks`: `id`, `name`, `project`, `external` (`router:external`; floating IPs come from
//!   external networks, which every project sees), `mtu` (default 1500).
//! * `subnets`: `id`, `name`, `network`, `cidr` (required), `gateway_ip` (default: the first
//!   address of the range).
//! * `routers`: `id`, `name`, `project`, `external_gateway` (`network`, `ip_address`),
//!   `interfaces` (`subnet`, `ip_address` default the subnet's gateway, `port_id` default a
//!   random UUID: each interface is also a port owned by `network:router_interface`).
//! * `security_groups`: `id`, `name`, `project`, `description`.
//! * `servers`: `id`, `name`, `project`, `availability_zone` (default `nova`), `meta` (string
//!   map served in `meta_data.json`), `user_data`.
//! * `ports`: `id`, `name`, `network`, `project`, `device_id` (a server id when `device_owner`
//!   starts with `compute:`), `device_owner`, `mac_address` (required), `fixed_ips` (`subnet`,
//!   `ip_address`), `security_groups` (ids), `allowed_address_pairs` (`ip_address`: an address
//!   or CIDR, `mac_address` default the port's).
//! * `floating_ips`: `id`, `address` (IPv4, inside a subnet of `network`), `network` (default:
//!   the only external network), `project`, `port` (associated port), `fixed_ip_address`
//!   (required when that port has several IPv4 addresses), `description`.
//! * `disabled_extensions`: aliases of the Neutron extensions to leave out of
//!   `GET /v2.0/extensions` and switch off (e.g. `port-security-groups-filtering`).
//! * `fip_status_delay`: how long a floating IP stays `DOWN` after an association change before
//!   it turns `ACTIVE` (the L3 agent's lag; the change bumps `revision_number`, as the agent's
//!   status update does). Default `"0s"`: `ACTIVE` at once.
//!
//! Neutron and Nova ids must be UUIDs, Keystone ids any non-empty string without `/` or
//! whitespace; every id is unique. The seed must describe a state the real API could be in (an
//! associated floating IP has a router path, fixed IPs lie in their subnets and are unique, …).
//! Unknown fields are rejected so that a typo does not silently seed a different cloud.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::net::{Cidr, Mac};
use super::NEUTRON_EXTENSIONS;
use crate::sim::faults::humantime_str;
use crate::sim::seed::SeedError;
use crate::Secret;

fn invalid(msg: impl Into<String>) -> SeedError {
    SeedError::Invalid(msg.into())
}

/// The initial state of the simulated OpenStack. See the module documentation for the format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackSeed {
    pub region: String,
    #[serde(default = "default_domains")]
    pub domains: Vec<SeedDomain>,
    pub projects: Vec<SeedProject>,
    #[serde(default = "default_roles")]
    pub roles: Vec<SeedRole>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub application_credentials: Vec<SeedAppCredential>,
    #[serde(default = "default_token_lifetime", with = "humantime_str")]
    pub token_lifetime: Duration,
    #[serde(default)]
    pub networks: Vec<SeedNetwork>,
    #[serde(default)]
    pub subnets: Vec<SeedSubnet>,
    #[serde(default)]
    pub routers: Vec<SeedRouter>,
    #[serde(default)]
    pub security_groups: Vec<SeedSecurityGroup>,
    #[serde(default)]
    pub servers: Vec<SeedServer>,
    #[serde(default)]
    pub ports: Vec<SeedPort>,
    #[serde(default)]
    pub floating_ips: Vec<SeedFloatingIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_extensions: Vec<String>,
    #[serde(
        default,
        with = "humantime_str",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub fip_status_delay: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedDomain {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    pub id: String,
    pub name: String,
    #[serde(default = "default_domain_id")]
    pub domain: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRole {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub id: String,
    pub name: String,
    #[serde(default = "default_domain_id")]
    pub domain: String,
    #[serde(serialize_with = "ser_secret", deserialize_with = "de_secret")]
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_project: Option<String>,
    /// Project id → role names.
    #[serde(default)]
    pub project_roles: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAppCredential {
    pub id: String,
    pub name: String,
    /// The owner's user id.
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(serialize_with = "ser_secret", deserialize_with = "de_secret")]
    pub secret: Secret,
    /// Role names; `None`: every role the user has on the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNetwork {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default)]
    pub external: bool,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSubnet {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRouter {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_gateway: Option<SeedGateway>,
    #[serde(default)]
    pub interfaces: Vec<SeedRouterInterface>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGateway {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRouterInterface {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecurityGroup {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedServer {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default = "default_az")]
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_data: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPort {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    pub mac_address: String,
    #[serde(default)]
    pub fixed_ips: Vec<SeedFixedIp>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub allowed_address_pairs: Vec<SeedAddressPair>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFixedIp {
    pub subnet: String,
    pub ip_address: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAddressPair {
    /// An address or a CIDR.
    pub ip_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFloatingIp {
    pub id: String,
    pub address: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub description: String,
}

fn default_domain_id() -> String {
    "default".to_string()
}

fn default_domains() -> Vec<SeedDomain> {
    vec![SeedDomain {
        id: "default".into(),
        name: "Default".into(),
    }]
}

fn default_roles() -> Vec<SeedRole> {
    vec![
        SeedRole {
            id: "9fe2ff9ee4384b1894a90878d3e92bab".into(),
            name: "member".into(),
        },
        SeedRole {
            id: "c4b1c2d5e6f74a8b9c0d1e2f3a4b5c6d".into(),
            name: "reader".into(),
        },
    ]
}

fn default_token_lifetime() -> Duration {
    Duration::from_secs(3600)
}

fn default_mtu() -> u32 {
    1500
}

fn default_az() -> String {
    "nova".to_string()
}

fn ser_secret<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    // Deliberate: a seed written to a file must carry the credentials it defines.
    ser.serialize_str(s.expose())
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

impl fmt::Display for OpenStackSeed {
    /// A one-line summary for start-up logs (no secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {}, {} project(s), {} user(s), {} application credential(s), {} network(s), \
             {} server(s), {} port(s), {} floating IP(s)",
            self.region,
            self.projects.len(),
            self.users.len(),
            self.application_credentials.len(),
            self.networks.len(),
            self.servers.len(),
            self.ports.len(),
            self.floating_ips.len()
        )
    }
}

/// Resolves an optional project reference to the seed's default (first) project.
pub(crate) fn project_or_default<'a>(seed: &'a OpenStackSeed, p: &'a Option<String>) -> &'a str {
    p.as_deref()
        .or_else(|| seed.projects.first().map(|p| p.id.as_str()))
        .unwrap_or("")
}

impl OpenStackSeed {
    /// Parses and validates a seed.
    pub fn from_json(text: &str) -> Result<OpenStackSeed, SeedError> {
        let seed: OpenStackSeed = serde_json::from_str(text)?;
        seed.validate()?;
        Ok(seed)
    }

    /// Reads, parses and validates a seed file.
    pub fn load(path: &Path) -> Result<OpenStackSeed, SeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        OpenStackSeed::from_json(&text)
    }

    /// The lab topology with fixed ids ([`LabSeed::default`]): servers lb1..lb3 on
    /// 192.0.2.0/24, floating IP 203.0.113.10 on lb1's port, VIP 192.0.2.100.
    pub fn example() -> OpenStackSeed {
        LabSeed::default().build()
    }

    /// [`OpenStackSeed::example`] as pretty JSON (what `--example-seed` prints).
    pub fn example_json() -> String {
        let mut s = serde_json::to_string_pretty(&OpenStackSeed::example())
            .expect("the example seed serialises");
        s.push('\n');
        s
    }

    /// The seed as JSON, credentials included (write it to a file only root can read).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("seeds serialise")
    }

    /// The server with this name.
    pub fn server(&self, name: &str) -> Option<&SeedServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The ports of the server with this id, in seed order.
    pub fn ports_of(&self, server_id: &str) -> Vec<&SeedPort> {
        self.ports
            .iter()
            .filter(|p| p.device_id == server_id)
            .collect()
    }

    /// Checks references, uniqueness and formats; the first problem found is reported.
    pub fn validate(&self) -> Result<(), SeedError> {
        Validator::new(self).run()
    }
}

/// One pass over the seed, remembering what it has seen for the references that follow.
struct Validator<'a> {
    seed: &'a OpenStackSeed,
    ids: HashMap<String, String>,
}

impl<'a> Validator<'a> {
    fn new(seed: &'a OpenStackSeed) -> Self {
        Validator {
            seed,
            ids: HashMap::new(),
        }
    }

    /// Registers a unique id; `uuid` requires the UUID form Neutron and Nova use.
    fn claim(&mut self, kind: &str, id: &str, name: &str, uuid: bool) -> Result<(), SeedError> {
        let what = format!("{kind} {name:?}");
        if uuid {
            if uuid::Uuid::parse_str(id).is_err() || id.len() != 36 {
                return Err(invalid(format!(
                    "{what}: id {id:?} is not a UUID (8-4-4-4-12 hex digits)"
                )));
            }
        } else if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "{what}: id {id:?} is empty or contains '/' or whitespace"
            )));
        }
        if let Some(first) = self.ids.insert(id.to_ascii_lowercase(), what.clone()) {
            return Err(invalid(format!(
                "duplicate id {id}: used by {first} and by {what}"
            )));
        }
        Ok(())
    }

    fn run(mut self) -> Result<(), SeedError> {
        let seed = self.seed;
        if seed.region.is_empty()
            || seed.region.contains('/')
            || seed.region.chars().any(char::is_whitespace)
        {
            return Err(invalid(format!(
                "region {:?}: expected a non-empty name without '/' or whitespace (e.g. RegionOne)",
                seed.region
            )));
        }
        if seed.token_lifetime.is_zero() {
            return Err(invalid("token_lifetime must be positive"));
        }

        // Keystone.
        let mut domain_names = HashSet::new();
        for d in &seed.domains {
            self.claim("domain", &d.id, &d.name, false)?;
            if !domain_names.insert(d.name.to_ascii_lowercase()) {
                return Err(invalid(format!("domain name {:?} used twice", d.name)));
            }
        }
        let domain_ok = |id: &str| seed.domains.iter().any(|d| d.id == id);
        if seed.projects.is_empty() {
            return Err(invalid("projects: at least one project is required"));
        }
        let mut project_names = HashSet::new();
        for p in &seed.projects {
            self.claim("project", &p.id, &p.name, false)?;
            if p.name.is_empty() {
                return Err(invalid(format!("project {}: empty name", p.id)));
            }
            if !domain_ok(&p.domain) {
                return Err(invalid(format!(
                    "project {:?}: unknown domain {:?}",
                    p.name, p.domain
                )));
            }
            if !project_names.insert((p.domain.as_str(), p.name.as_str())) {
                return Err(invalid(format!(
                    "project name {:?} used twice in domain {}",
                    p.name, p.domain
                )));
            }
        }
        let project_ok = |id: &str| seed.projects.iter().any(|p| p.id == id);
        for r in &seed.roles {
            self.claim("role", &r.id, &r.name, false)?;
        }
        let role_ok = |name: &str| seed.roles.iter().any(|r| r.name == name);
        let mut user_names = HashSet::new();
        for u in &seed.users {
            self.claim("user", &u.id, &u.name, false)?;
            if u.name.is_empty() {
                return Err(invalid(format!("user {}: empty name", u.id)));
            }
            if u.password.expose().is_empty() {
                return Err(invalid(format!("user {:?}: empty password", u.name)));
            }
            if !domain_ok(&u.domain) {
                return Err(invalid(format!(
                    "user {:?}: unknown domain {:?}",
                    u.name, u.domain
                )));
            }
            if !user_names.insert((u.domain.as_str(), u.name.as_str())) {
                return Err(invalid(format!(
                    "user name {:?} used twice in domain {}",
                    u.name, u.domain
                )));
            }
            for (p, roles) in &u.project_roles {
                if !project_ok(p) {
                    return Err(invalid(format!(
                        "user {:?}: project_roles names unknown project {p}",
                        u.name
                    )));
                }
                if roles.is_empty() {
                    return Err(invalid(format!(
                        "user {:?}: no roles on project {p}",
                        u.name
                    )));
                }
                if let Some(r) = roles.iter().find(|r| !role_ok(r)) {
                    return Err(invalid(format!("user {:?}: unknown role {r:?}", u.name)));
                }
            }
            if let Some(p) = &u.default_project {
                if !u.project_roles.contains_key(p) {
                    return Err(invalid(format!(
                        "user {:?}: default_project {p} is not one of its project_roles",
                        u.name
                    )));
                }
            }
        }
        let mut cred_names = HashSet::new();
        for c in &seed.application_credentials {
            self.claim("application credential", &c.id, &c.name, false)?;
            if c.secret.expose().is_empty() {
                return Err(invalid(format!(
                    "application credential {:?}: empty secret",
                    c.name
                )));
            }
            let user = seed.users.iter().find(|u| u.id == c.user).ok_or_else(|| {
                invalid(format!(
                    "application credential {:?}: unknown user {}",
                    c.name, c.user
                ))
            })?;
            if !cred_names.insert((c.user.as_str(), c.name.as_str())) {
                return Err(invalid(format!(
                    "application credential name {:?} used twice by user {}",
                    c.name, user.name
                )));
            }
            let project = c
                .project
                .as_ref()
                .or(user.default_project.as_ref())
                .ok_or_else(|| {
                    invalid(format!(
                        "application credential {:?}: no project and user {:?} has no \
                         default_project",
                        c.name, user.name
                    ))
                })?;
            let Some(user_roles) = user.project_roles.get(project) else {
                return Err(invalid(format!(
                    "application credential {:?}: user {:?} has no role on project {project}",
                    c.name, user.name
                )));
            };
            if let Some(roles) = &c.roles {
                if roles.is_empty() {
                    return Err(invalid(format!(
                        "application credential {:?}: empty roles",
                        c.name
                    )));
                }
                if let Some(r) = roles.iter().find(|r| !user_roles.contains(r)) {
                    return Err(invalid(format!(
                        "application credential {:?}: role {r:?} is not one the user has on \
                         project {project}",
                        c.name
                    )));
                }
            }
        }

        // Neutron and Nova.
        let known_project = |what: String, p: &Option<String>| -> Result<(), SeedError> {
            match p {
                Some(p) if !project_ok(p) => Err(invalid(format!("{what}: unknown project {p}"))),
                _ => Ok(()),
            }
        };
        for n in &seed.networks {
            self.claim("network", &n.id, &n.name, true)?;
            known_project(format!("network {:?}", n.name), &n.project)?;
            if !(68..=65535).contains(&n.mtu) {
                return Err(invalid(format!("network {:?}: mtu {}", n.name, n.mtu)));
            }
        }
        let network = |id: &str| seed.networks.iter().find(|n| n.id == id);
        let mut subnet_cidrs: HashMap<&str, Cidr> = HashMap::new();
        for s in &seed.subnets {
            self.claim("subnet", &s.id, &s.name, true)?;
            known_project(format!("subnet {:?}", s.name), &s.project)?;
            if network(&s.network).is_none() {
                return Err(invalid(format!(
                    "subnet {:?}: unknown network {}",
                    s.name, s.network
                )));
            }
            let cidr = Cidr::from_str(&s.cidr)
                .map_err(|e| invalid(format!("subnet {:?}: cidr: {e}", s.name)))?;
            if cidr.addr != cidr.network() {
                return Err(invalid(format!(
                    "subnet {:?}: cidr {} has host bits set (the network is {}/{})",
                    s.name,
                    s.cidr,
                    cidr.network(),
                    cidr.prefix
                )));
            }
            for (other, c) in &subnet_cidrs {
                let other_net = seed
                    .subnets
                    .iter()
                    .find(|x| x.id == *other)
                    .map(|x| x.network.as_str());
                if other_net == Some(s.network.as_str()) && (c.overlaps(&cidr)) {
                    return Err(invalid(format!(
                        "subnet {:?}: {} overlaps another subnet of the same network",
                        s.name, s.cidr
                    )));
                }
            }
            if let Some(gw) = s.gateway_ip {
                if !cidr.contains(gw) {
                    return Err(invalid(format!(
                        "subnet {:?}: gateway_ip {gw} is outside {}",
                        s.name, s.cidr
                    )));
                }
            }
            subnet_cidrs.insert(s.id.as_str(), cidr);
        }
        let subnet = |id: &str| seed.subnets.iter().find(|s| s.id == id);

        // Every fixed IP (ports and router interfaces) is unique within its network.
        let mut fixed: HashMap<(String, IpAddr), String> = HashMap::new();
        let mut claim_fixed = |network: &str, ip: IpAddr, what: String| {
            if let Some(first) = fixed.insert((network.to_string(), ip), what.clone()) {
                return Err(invalid(format!(
                    "fixed IP {ip} is used twice: by {first} and by {what}"
                )));
            }
            Ok(())
        };

        for r in &seed.routers {
            self.claim("router", &r.id, &r.name, true)?;
            known_project(format!("router {:?}", r.name), &r.project)?;
            if let Some(gw) = &r.external_gateway {
                match network(&gw.network) {
                    Some(n) if n.external => {}
                    Some(_) => {
                        return Err(invalid(format!(
                            "router {:?}: gateway network {} is not external",
                            r.name, gw.network
                        )))
                    }
                    None => {
                        return Err(invalid(format!(
                            "router {:?}: unknown gateway network {}",
                            r.name, gw.network
                        )))
                    }
                }
                if let Some(ip) = gw.ip_address {
                    let inside = seed
                        .subnets
                        .iter()
                        .filter(|s| s.network == gw.network)
                        .any(|s| subnet_cidrs[s.id.as_str()].contains(ip));
                    if !inside {
                        return Err(invalid(format!(
                            "router {:?}: gateway address {ip} is in no subnet of network {}",
                            r.name, gw.network
                        )));
                    }
                    claim_fixed(&gw.network, ip, format!("router {:?} gateway", r.name))?;
                }
            }
            for i in &r.interfaces {
                let s = subnet(&i.subnet).ok_or_else(|| {
                    invalid(format!(
                        "router {:?}: interface on unknown subnet {}",
                        r.name, i.subnet
                    ))
                })?;
                let cidr = subnet_cidrs[s.id.as_str()];
                let ip = i
                    .ip_address
                    .or(s.gateway_ip)
                    .or_else(|| cidr.first_host())
                    .ok_or_else(|| {
                        invalid(format!(
                            "router {:?}: interface on subnet {:?} needs an ip_address",
                            r.name, s.name
                        ))
                    })?;
                if !cidr.contains(ip) {
                    return Err(invalid(format!(
                        "router {:?}: interface address {ip} is outside {}",
                        r.name, s.cidr
                    )));
                }
                claim_fixed(&s.network, ip, format!("router {:?} interface", r.name))?;
                if let Some(p) = &i.port_id {
                    self.claim("router interface port", p, &r.name, true)?;
                }
            }
        }

        for g in &seed.security_groups {
            self.claim("security group", &g.id, &g.name, true)?;
            known_project(format!("security group {:?}", g.name), &g.project)?;
            if g.name.is_empty() {
                return Err(invalid(format!("security group {}: empty name", g.id)));
            }
        }
        for s in &seed.servers {
            self.claim("server", &s.id, &s.name, true)?;
            known_project(format!("server {:?}", s.name), &s.project)?;
            if s.name.is_empty() {
                return Err(invalid(format!("server {}: empty name", s.id)));
            }
        }

        let mut macs: HashMap<Mac, String> = HashMap::new();
        for p in &seed.ports {
            let label = if p.name.is_empty() { &p.id } else { &p.name };
            self.claim("port", &p.id, label, true)?;
            let what = format!("port {label:?}");
            known_project(what.clone(), &p.project)?;
            if network(&p.network).is_none() {
                return Err(invalid(format!("{what}: unknown network {}", p.network)));
            }
            if p.device_owner.starts_with("compute:")
                && !seed.servers.iter().any(|s| s.id == p.device_id)
            {
                return Err(invalid(format!(
                    "{what}: device_owner {} but device_id {:?} is no server",
                    p.device_owner, p.device_id
                )));
            }
            let mac = Mac::from_str(&p.mac_address)
                .map_err(|e| invalid(format!("{what}: mac_address: {e}")))?;
            if let Some(first) = macs.insert(mac, what.clone()) {
                return Err(invalid(format!(
                    "MAC address {mac} is used twice: by {first} and by {what}"
                )));
            }
            for f in &p.fixed_ips {
                let s = subnet(&f.subnet).ok_or_else(|| {
                    invalid(format!("{what}: fixed IP on unknown subnet {}", f.subnet))
                })?;
                if s.network != p.network {
                    return Err(invalid(format!(
                        "{what}: subnet {:?} is not on the port's network",
                        s.name
                    )));
                }
                if !subnet_cidrs[s.id.as_str()].contains(f.ip_address) {
                    return Err(invalid(format!(
                        "{what}: fixed IP {} is outside {}",
                        f.ip_address, s.cidr
                    )));
                }
                claim_fixed(&p.network, f.ip_address, what.clone())?;
            }
            for g in &p.security_groups {
                if !seed.security_groups.iter().any(|x| &x.id == g) {
                    return Err(invalid(format!("{what}: unknown security group {g}")));
                }
            }
            if p.allowed_address_pairs.len() > super::MAX_ADDRESS_PAIRS {
                return Err(invalid(format!(
                    "{what}: more than {} allowed_address_pairs",
                    super::MAX_ADDRESS_PAIRS
                )));
            }
            for a in &p.allowed_address_pairs {
                Cidr::from_str(&a.ip_address)
                    .map_err(|e| invalid(format!("{what}: allowed_address_pairs: {e}")))?;
                if let Some(m) = &a.mac_address {
                    Mac::from_str(m)
                        .map_err(|e| invalid(format!("{what}: allowed_address_pairs: {e}")))?;
                }
            }
        }

        let externals: Vec<&SeedNetwork> = seed.networks.iter().filter(|n| n.external).collect();
        let mut fip_addresses = HashSet::new();
        let mut fip_targets = HashSet::new();
        for f in &seed.floating_ips {
            let label = f.address.to_string();
            self.claim("floating IP", &f.id, &label, true)?;
            let what = format!("floating IP {label}");
            known_project(what.clone(), &f.project)?;
            let net = match &f.network {
                Some(n) => {
                    network(n).ok_or_else(|| invalid(format!("{what}: unknown network {n}")))?
                }
                None => match externals.as_slice() {
                    [one] => one,
                    [] => return Err(invalid(format!("{what}: there is no external network"))),
                    _ => {
                        return Err(invalid(format!(
                            "{what}: several external networks: say which one in \"network\""
                        )))
                    }
                },
            };
            if !net.external {
                return Err(invalid(format!(
                    "{what}: network {:?} is not external",
                    net.name
                )));
            }
            let inside = seed
                .subnets
                .iter()
                .filter(|s| s.network == net.id)
                .any(|s| subnet_cidrs[s.id.as_str()].contains(IpAddr::V4(f.address)));
            if !inside {
                return Err(invalid(format!(
                    "{what}: address is in no subnet of network {:?}",
                    net.name
                )));
            }
            if !fip_addresses.insert(f.address) {
                return Err(invalid(format!("{what}: address used twice")));
            }
            if fixed.contains_key(&(net.id.clone(), IpAddr::V4(f.address))) {
                return Err(invalid(format!(
                    "{what}: address is also a fixed IP on network {:?}",
                    net.name
                )));
            }
            match (&f.port, f.fixed_ip_address) {
                (None, Some(_)) => {
                    return Err(invalid(format!("{what}: fixed_ip_address without a port")))
                }
                (None, None) => {}
                (Some(port_id), wanted) => {
                    let port = seed
                        .ports
                        .iter()
                        .find(|p| &p.id == port_id)
                        .ok_or_else(|| invalid(format!("{what}: unknown port {port_id}")))?;
                    let fixed_ip =
                        pick_fixed_ip(port, wanted).map_err(|e| invalid(format!("{what}: {e}")))?;
                    let subnet_id = &port
                        .fixed_ips
                        .iter()
                        .find(|x| x.ip_address == IpAddr::V4(fixed_ip))
                        .expect("picked among the port's")
                        .subnet;
                    let routed = seed.routers.iter().any(|r| {
                        r.external_gateway
                            .as_ref()
                            .is_some_and(|g| g.network == net.id)
                            && r.interfaces.iter().any(|i| &i.subnet == subnet_id)
                    });
                    if !routed {
                        return Err(invalid(format!(
                            "{what}: no router connects subnet {subnet_id} to network {:?}",
                            net.name
                        )));
                    }
                    if !fip_targets.insert((net.id.clone(), fixed_ip)) {
                        return Err(invalid(format!(
                            "{what}: fixed IP {fixed_ip} already has a floating IP on that network"
                        )));
                    }
                }
            }
        }

        for alias in &seed.disabled_extensions {
            if !NEUTRON_EXTENSIONS.iter().any(|e| e.alias == alias) {
                return Err(invalid(format!(
                    "disabled_extensions: unknown alias {alias:?} (known: {})",
                    NEUTRON_EXTENSIONS
                        .iter()
                        .map(|e| e.alias)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The fixed IPv4 address a floating IP is associated with on `port`: `wanted` if it is one of
/// the port's, else the port's only IPv4 address. The error is Neutron's message.
pub(crate) fn pick_fixed_ip(port: &SeedPort, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    let v4: Vec<Ipv4Addr> = port
        .fixed_ips
        .iter()
        .filter_map(|f| match f.ip_address {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    match wanted {
        Some(w) if v4.contains(&w) => Ok(w),
        Some(w) => Err(format!("Port {} does not have fixed ip {w}.", port.id)),
        None => match v4.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "Bad floatingip request: Cannot add floating IP to port {} that has no fixed \
                 IPv4 addresses.",
                port.id
            )),
            _ => Err(format!(
                "Port {} has multiple fixed IPv4 addresses. Must provide a specific IPv4 address \
                 when assigning a floating IP.",
                port.id
            )),
        },
    }
}

/// Builds the lab topology: one project, user and application credential; a private network
/// 192.0.2.0/24 behind a router (interface 192.0.2.1) to the external network 203.0.113.0/24;
/// servers `lb1`..`lbN` with one port each at 192.0.2.11.. in security group `exoip`; a
/// floating IP 203.0.113.10; optionally a VIP port holding 192.0.2.100 with the VIP in every
/// server port's `allowed_address_pairs`.
///
/// The seed lists the servers in order, then their ports in the same order, then the VIP port.
///
/// ```
/// use exoip_providers::sim::openstack::LabSeed;
/// let seed = LabSeed { hosts: 5, random_ids: true, ..LabSeed::default() }.build();
/// assert_eq!(seed.servers.len(), 5);
/// assert!(seed.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct LabSeed {
    /// Number of servers, 1..=88 (their addresses are 192.0.2.11..).
    pub hosts: usize,
    /// Random UUIDs (and Keystone ids) instead of the example's fixed ones.
    pub random_ids: bool,
    pub region: String,
    pub password: String,
    pub app_credential_secret: String,
    /// Add the VIP port (192.0.2.100) and the VIP in every server port's address pairs.
    pub vip: bool,
    /// The server (index into `lb1..`) whose port the floating IP is on; `None`: unassociated.
    pub fip_on: Option<usize>,
    pub token_lifetime: Duration,
}

impl Default for LabSeed {
    fn default() -> Self {
        LabSeed {
            hosts: 3,
            random_ids: false,
            region: "RegionOne".into(),
            password: "sim-password-change-me".into(),
            app_credential_secret: "sim-app-secret-change-me".into(),
            vip: true,
            fip_on: Some(0),
            token_lifetime: default_token_lifetime(),
        }
    }
}

/// Addresses of the lab topology.
pub mod lab {
    use std::net::Ipv4Addr;

    pub const PRIVATE_CIDR: &str = "192.0.2.0/24";
    pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    pub const EXTERNAL_CIDR: &str = "203.0.113.0/24";
    pub const EXTERNAL_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const ROUTER_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    pub const SECURITY_GROUP: &str = "exoip";
    pub const USER: &str = "demo";
    pub const PROJECT: &str = "demo";
    pub const DOMAIN: &str = "Default";
    pub const APP_CREDENTIAL: &str = "exoip";

    /// The fixed IP of server `i` (0-based): 192.0.2.11 + i.
    pub fn host_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 11 + i as u8)
    }
}

impl LabSeed {
    /// The seed this describes.
    ///
    /// # Panics
    /// When `hosts` is outside 1..=88 or `fip_on` is not below `hosts`.
    pub fn build(&self) -> OpenStackSeed {
        assert!(
            (1..=88).contains(&self.hosts),
            "LabSeed: hosts must be within 1..=88"
        );
        if let Some(i) = self.fip_on {
            assert!(i < self.hosts, "LabSeed: fip_on must name one of the hosts");
        }
        let random = self.random_ids;
        // Fixed ids read like the Exoscale example's: a per-kind prefix and a readable tail.
        let uuid = |prefix: &str, tail: u32| -> String {
            if random {
                uuid::Uuid::new_v4().to_string()
            } else {
                format!("{prefix}-0000-4000-8000-{tail:012}")
            }
        };
        let kid = |fixed: &str| -> String {
            if random {
                uuid::Uuid::new_v4().simple().to_string()
            } else {
                fixed.to_string()
            }
        };
        let project = kid("3f1e6a0c9d2b4e7f8a5c1d0e2b4f6a81");
        let user = kid("7267d1c0a9b84f3e8d2c5b1a0f9e8d71");
        let member = kid("9fe2ff9ee4384b1894a90878d3e92bab");
        let reader = kid("c4b1c2d5e6f74a8b9c0d1e2f3a4b5c6d");
        let private = uuid("6b3d0a58", 1);
        let public = uuid("6b3d0a58", 2);
        let private_subnet = uuid("5c1e7f2a", 1);
        let public_subnet = uuid("5c1e7f2a", 2);
        let router = uuid("9a1c4d7e", 1);
        let group = uuid("7f3a1b2c", 1);
        let mac = |i: u32| -> String {
            if random {
                let b: [u8; 3] = rand::random();
                format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
            } else {
                format!("fa:16:3e:00:00:{i:02x}")
            }
        };

        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for i in 0..self.hosts {
            let n = 11 + i as u32;
            let server_id = uuid("2f6a9a43", n);
            servers.push(SeedServer {
                id: server_id.clone(),
                name: format!("lb{}", i + 1),
                project: None,
                availability_zone: default_az(),
                meta: BTreeMap::new(),
                user_data: String::new(),
            });
            ports.push(SeedPort {
                id: uuid("d1e2f3a4", n),
                name: format!("lb{}-port", i + 1),
                network: private.clone(),
                project: None,
                device_id: server_id,
                device_owner: "compute:nova".into(),
                mac_address: mac(n),
                fixed_ips: vec![SeedFixedIp {
                    subnet: private_subnet.clone(),
                    ip_address: IpAddr::V4(lab::host_ip(i)),
                }],
                security_groups: vec![group.clone()],
                allowed_address_pairs: if self.vip {
                    vec![SeedAddressPair {
                        ip_address: lab::VIP.to_string(),
                        mac_address: None,
                    }]
                } else {
                    Vec::new()
                },
            });
        }
        if self.vip {
            ports.push(SeedPort {
                id: uuid("d1e2f3a4", 100),
                name: "exoip-vip".into(),
                network: private.clone(),
                project: None,
                device_id: String::new(),
                device_owner: String::new(),
                mac_address: mac(100),
                fixed_ips: vec![SeedFixedIp {
                    subnet: private_subnet.clone(),
                    ip_address: IpAddr::V4(lab::VIP),
                }],
                security_groups: vec![group.clone()],
                allowed_address_pairs: Vec::new(),
            });
        }
        let fip_port = self.fip_on.map(|i| ports[i].id.clone());

        OpenStackSeed {
            region: self.region.clone(),
            domains: default_domains(),
            projects: vec![SeedProject {
                id: project.clone(),
                name: lab::PROJECT.into(),
                domain: default_domain_id(),
            }],
            roles: vec![
                SeedRole {
                    id: member,
                    name: "member".into(),
                },
                SeedRole {
                    id: reader,
                    name: "reader".into(),
                },
            ],
            users: vec![SeedUser {
                id: user.clone(),
                name: lab::USER.into(),
                domain: default_domain_id(),
                password: Secret::new(self.password.clone()),
                default_project: Some(project.clone()),
                project_roles: BTreeMap::from([(
                    project.clone(),
                    vec!["member".to_string(), "reader".to_string()],
                )]),
            }],
            application_credentials: vec![SeedAppCredential {
                id: kid("3e19c0de5a7b4c2d9e8f1a0b2c3d4e5f"),
                name: lab::APP_CREDENTIAL.into(),
                user,
                project: Some(project),
                secret: Secret::new(self.app_credential_secret.clone()),
                roles: None,
            }],
            token_lifetime: self.token_lifetime,
            networks: vec![
                SeedNetwork {
                    id: private.clone(),
                    name: "private".into(),
                    project: None,
                    external: false,
                    mtu: 1500,
                },
                SeedNetwork {
                    id: public.clone(),
                    name: "public".into(),
                    project: None,
                    external: true,
                    mtu: 1500,
                },
            ],
            subnets: vec![
                SeedSubnet {
                    id: private_subnet.clone(),
                    name: "private-subnet".into(),
                    network: private,
                    project: None,
                    cidr: lab::PRIVATE_CIDR.into(),
                    gateway_ip: Some(IpAddr::V4(lab::ROUTER_IP)),
                },
                SeedSubnet {
                    id: public_subnet,
                    name: "public-subnet".into(),
                    network: public.clone(),
                    project: None,
                    cidr: lab::EXTERNAL_CIDR.into(),
                    gateway_ip: Some(IpAddr::V4(lab::EXTERNAL_GATEWAY_IP)),
                },
            ],
            routers: vec![SeedRouter {
                id: router,
                name: "router1".into(),
                project: None,
                external_gateway: Some(SeedGateway {
                    network: public,
                    ip_address: Some(IpAddr::V4(lab::ROUTER_GATEWAY_IP)),
                }),
                interfaces: vec![SeedRouterInterface {
                    subnet: private_subnet,
                    ip_address: Some(IpAddr::V4(lab::ROUTER_IP)),
                    port_id: Some(uuid("d1e2f3a4", 1)),
                }],
            }],
            security_groups: vec![SeedSecurityGroup {
                id: group,
                name: lab::SECURITY_GROUP.into(),
                project: None,
                description: "exoip peers (heartbeats on UDP 12345)".into(),
            }],
            servers,
            ports,
            floating_ips: vec![SeedFloatingIp {
                id: uuid("8ea5e5c4", 10),
                address: lab::FLOATING_IP,
                network: None,
                project: None,
                port: fip_port,
                fixed_ip_address: None,
                description: "exoip demo".into(),
            }],
            disabled_extensions: Vec::new(),
            fip_status_delay: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_matches_the_lab_topology() {
        let seed = OpenStackSeed::example();
        seed.validate().unwrap();
        assert_eq!(seed.servers.len(), 3);
        let lb1 = seed.server("lb1").unwrap();
        let ports = seed.ports_of(&lb1.id);
        assert_eq!(ports.len(), 1);
        assert_eq!(
            ports[0].fixed_ips[0].ip_address,
            "192.0.2.11".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            seed.floating_ips[0].port.as_deref(),
            Some(ports[0].id.as_str())
        );
        let vip = seed.ports.iter().find(|p| p.name == "exoip-vip").unwrap();
        assert!(vip.device_id.is_empty());
        // The JSON form round-trips, credentials included.
        let back = OpenStackSeed::from_json(&OpenStackSeed::example_json()).unwrap();
        assert_eq!(back, seed);
    }

    #[test]
    fn random_lab_seeds_are_valid_and_differ() {
        let a = LabSeed {
            hosts: 9,
            random_ids: true,
            ..LabSeed::default()
        }
        .build();
        let b = LabSeed {
            hosts: 9,
            random_ids: true,
            ..LabSeed::default()
        }
        .build();
        a.validate().unwrap();
        b.validate().unwrap();
        assert_ne!(a.servers[0].id, b.servers[0].id);
        assert_eq!(a.servers[8].name, "lb9");
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let seed = OpenStackSeed::example();
        let dbg = format!("{seed:?} {seed}");
        assert!(!dbg.contains("sim-password-change-me"), "{dbg}");
        assert!(!dbg.contains("sim-app-secret-change-me"), "{dbg}");
    }

    fn broken(change: impl FnOnce(&mut OpenStackSeed)) -> String {
        let mut seed = OpenStackSeed::example();
        change(&mut seed);
        seed.validate().unwrap_err().to_string()
    }

    #[test]
    fn validation_names_the_problem() {
        let e = broken(|s| s.ports[1].fixed_ips[0].ip_address = "192.0.2.11".parse().unwrap());
        assert!(e.contains("192.0.2.11 is used twice"), "{e}");
        let e = broken(|s| s.ports[0].fixed_ips[0].ip_address = "198.51.100.1".parse().unwrap());
        assert!(e.contains("outside 192.0.2.0/24"), "{e}");
        let e = broken(|s| s.servers[1].id = s.servers[0].id.clone());
        assert!(e.contains("duplicate id"), "{e}");
        let e = broken(|s| s.routers[0].interfaces.clear());
        assert!(e.contains("no router connects"), "{e}");
        let e = broken(|s| s.ports[0].mac_address = "fa:16:3e:zz:00:01".into());
        assert!(e.contains("mac_address"), "{e}");
        let e = broken(|s| s.disabled_extensions.push("nope".into()));
        assert!(e.contains("unknown alias"), "{e}");
        let e = broken(|s| s.floating_ips[0].address = "198.51.100.10".parse().unwrap());
        assert!(e.contains("in no subnet"), "{e}");
        let e = broken(|s| s.subnets[0].cidr = "192.0.2.1/24".into());
        assert!(e.contains("host bits"), "{e}");
        let e = broken(|s| s.application_credentials[0].user = "nobody".into());
        assert!(e.contains("unknown user"), "{e}");
        let e = broken(|s| s.servers[0].id = "lb1".into());
        assert!(e.contains("not a UUID"), "{e}");

        let typo = OpenStackSeed::example_json().replace("\"device_owner\"", "\"device_ownr\"");
        let e = OpenStackSeed::from_json(&typo).unwrap_err().to_string();
        assert!(e.contains("device_ownr"), "{e}");
    }
}

//! The Azure seed: the initial state of the simulated Azure, read from a JSON file.
//!
//! ```json
//! {
//!   "tenant_id": "5b1f4b2e-0000-4000-8000-000000000001",
//!   "subscription_id": "8d10c5e2-0000-4000-8000-000000000002",
//!   "resource_group": "rg-exoip",
//!   "location": "westeurope",
//!   "service_principals": [{"name": "exoip", "client_id": "c1e7a9f0-…", "client_secret": "…"}],
//!   "virtual_networks": [{"name": "vnet-exoip", "address_prefixes": ["192.0.2.0/24"],
//!                         "subnets": [{"name": "default", "address_prefix": "192.0.2.0/24"}]}],
//!   "network_security_groups": [{"name": "exoip"}],
//!   "public_ips": [{"name": "pip-vip", "ip": "203.0.113.10"}],
//!   "user_assigned_identities": [{"name": "id-exoip", "client_id": "…", "principal_id": "…"}],
//!   "vms": [
//!     {"name": "lb1", "vm_id": "…", "tags": {"exoip-group": "lab"},
//!      "system_identity": {"client_id": "…", "principal_id": "…"},
//!      "user_identities": ["id-exoip"],
//!      "nics": [{"name": "nic-lb1", "nsg": "exoip", "tags": {"exoip-group": "lab"},
//!                "ip_configurations": [
//!                  {"name": "ipconfig1", "private_ip": "192.0.2.11", "primary": true,
//!                   "public_ip": "pip-vip"},
//!                  {"name": "vip", "private_ip": "192.0.2.100"}]}]}
//!   ],
//!   "options": {"token_lifetime": "3599s"}
//! }
//! ```
//!
//! Fields:
//! * `tenant_id`, `subscription_id`: GUIDs. One subscription, one `resource_group`, one
//!   `location` (the region every resource lives in).
//! * `service_principals`: client-credential applications (`client_id` GUID, `client_secret`).
//! * `virtual_networks`: `name`, `address_prefixes` (default: the subnets' prefixes), `subnets`
//!   (`name`, `address_prefix`, IPv4 only).
//! * `network_security_groups`: `name`, `tags`.
//! * `public_ips`: Standard SKU, static: `name`, `ip` (IPv4), `zones`, `tags`,
//!   `idle_timeout_minutes` (default 4). Attached by naming them in an ipConfiguration.
//! * `user_assigned_identities`: managed identity resources (`name`, `client_id`,
//!   `principal_id`), assigned to VMs by name in `user_identities`.
//! * `vms`: `name`, `vm_id` (GUID), `zone` (`""`: not zonal), `size`, `power_state` (`running`,
//!   `stopped`, `deallocated`, …), `tags`, `system_identity` (`client_id`, `principal_id`),
//!   `user_identities`, and their `nics` (the first is the VM's primary NIC): `name`, `nsg`,
//!   `tags`, `mac` (`00-0D-3A-…`, default derived from the NIC's position),
//!   `enable_ip_forwarding`, `ip_configurations` (`name`, `private_ip`, `subnet`
//!   (`"vnet/subnet"`, optional when there is exactly one subnet), `primary` (default: the
//!   first one), `public_ip` (a public IP's name)).
//! * `options`: see [`AzureOptions`].
//!
//! Every NIC belongs to a VM (the simulator names an address's holders by VM name). Names are
//! unique per resource type (case-insensitively, as ARM compares them), private addresses are
//! unique per virtual network and sit inside their subnet outside Azure's reserved addresses,
//! and a public IP is on at most one ipConfiguration. Unknown fields are rejected so that a typo
//! does not silently seed a different cloud.
//!
//! Built in Rust: [`AzureSeed::lab`] and [`AzureLabSeed`] (the lab topology, names and
//! addresses in [`lab`]); [`AzureSeed::to_json`] writes a seed file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sim::faults::humantime_str;
use crate::Secret;

/// Power states of `…/instanceView` (`PowerState/<state>`).
pub const POWER_STATES: &[&str] = &[
    "running",
    "starting",
    "stopping",
    "stopped",
    "deallocating",
    "deallocated",
];

/// The seed printed for `exoip sim --provider azure --example-seed`; equal to
/// [`AzureSeed::lab`]`(3)`: the lab topology (lb1, lb2, lb3; the public IP and the `vip`
/// secondary address on lb1).
pub const EXAMPLE_AZURE_SEED: &str = r#"{
  "tenant_id": "5b1f4b2e-0000-4000-8000-000000000001",
  "subscription_id": "8d10c5e2-0000-4000-8000-000000000002",
  "resource_group": "rg-exoip",
  "location": "westeurope",
  "service_principals": [
    {"name": "exoip", "client_id": "c1e7a9f0-0000-4000-8000-000000000003",
     "client_secret": "sim-azure-secret-change-me"}
  ],
  "virtual_networks": [
    {"name": "vnet-exoip", "address_prefixes": ["192.0.2.0/24"],
     "subnets": [{"name": "default", "address_prefix": "192.0.2.0/24"}]}
  ],
  "network_security_groups": [{"name": "exoip"}],
  "public_ips": [{"name": "pip-vip", "ip": "203.0.113.10"}],
  "user_assigned_identities": [
    {"name": "id-exoip", "client_id": "a5e1d000-0000-4000-8000-000000000001",
     "principal_id": "a5e1d000-0000-4000-8000-000000000002"}
  ],
  "vms": [
    {"name": "lb1", "vm_id": "7a1d0000-0000-4000-8000-000000000011",
     "tags": {"exoip-group": "lab"},
     "system_identity": {"client_id": "5e1f0000-0000-4000-8000-000000000011",
                         "principal_id": "5e1f0000-0000-4000-9000-000000000011"},
     "user_identities": ["id-exoip"],
     "nics": [{"name": "nic-lb1", "nsg": "exoip", "tags": {"exoip-group": "lab"},
               "ip_configurations": [
                 {"name": "ipconfig1", "private_ip": "192.0.2.11", "subnet": "vnet-exoip/default",
                  "primary": true, "public_ip": "pip-vip"},
                 {"name": "vip", "private_ip": "192.0.2.100", "subnet": "vnet-exoip/default"}]}]},
    {"name": "lb2", "vm_id": "7a1d0000-0000-4000-8000-000000000012",
     "tags": {"exoip-group": "lab"},
     "system_identity": {"client_id": "5e1f0000-0000-4000-8000-000000000012",
                         "principal_id": "5e1f0000-0000-4000-9000-000000000012"},
     "user_identities": ["id-exoip"],
     "nics": [{"name": "nic-lb2", "nsg": "exoip", "tags": {"exoip-group": "lab"},
               "ip_configurations": [
                 {"name": "ipconfig1", "private_ip": "192.0.2.12", "subnet": "vnet-exoip/default",
                  "primary": true}]}]},
    {"name": "lb3", "vm_id": "7a1d0000-0000-4000-8000-000000000013",
     "tags": {"exoip-group": "lab"},
     "system_identity": {"client_id": "5e1f0000-0000-4000-8000-000000000013",
                         "principal_id": "5e1f0000-0000-4000-9000-000000000013"},
     "user_identities": ["id-exoip"],
     "nics": [{"name": "nic-lb3", "nsg": "exoip", "tags": {"exoip-group": "lab"},
               "ip_configurations": [
                 {"name": "ipconfig1", "private_ip": "192.0.2.13", "subnet": "vnet-exoip/default",
                  "primary": true}]}]}
  ]
}
"#;

/// Why a seed was refused. Messages name the offending object so the file can be fixed.
#[derive(Debug, thiserror::Error)]
pub enum AzureSeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seed is not valid JSON for the Azure simulator: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("seed: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> AzureSeedError {
    AzureSeedError::Invalid(msg.into())
}

/// How the simulated Azure answers where the real one has no single behaviour, or where tests
/// want it faster. Part of the seed (`"options"`) and changeable at run time
/// (`PUT /_sim/azure/options`). Every field is optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureOptions {
    /// Lifetime of new access tokens (Entra and IMDS); `expires_in` says it in seconds. Short
    /// lifetimes exercise refresh.
    #[serde(with = "humantime_str")]
    pub token_lifetime: Duration,
    /// `Retry-After` on long-running PUTs and on `InProgress` operation polls.
    pub operation_retry_after_secs: u64,
    /// How a write to a resource whose operation still runs is refused: 409
    /// `AnotherOperationInProgress` or 429 `RetryableErrorDueToAnotherOperation`.
    pub busy_status: u16,
    /// Items per page of list answers (`nextLink` for the rest).
    pub page_size: usize,
    /// The VM an IMDS request speaks for when its source address is no VM's primary address
    /// (`None`: 404). Lets a test client on 127.0.0.1 pose as a VM.
    pub imds_default_vm: Option<String>,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            token_lifetime: Duration::from_secs(3599),
            operation_retry_after_secs: 10,
            busy_status: 409,
            page_size: 2,
            imds_default_vm: None,
        }
    }
}

impl AzureOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.token_lifetime < Duration::from_secs(1) {
            return Err("token_lifetime must be at least 1s".into());
        }
        if self.busy_status != 409 && self.busy_status != 429 {
            return Err(format!(
                "busy_status must be 409 or 429, not {}",
                self.busy_status
            ));
        }
        if self.page_size == 0 {
            return Err("page_size must be at least 1".into());
        }
        Ok(())
    }
}

/// The initial state of the simulated Azure. See the module documentation for the format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSeed {
    pub tenant_id: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    #[serde(default)]
    pub service_principals: Vec<SeedServicePrincipal>,
    pub virtual_networks: Vec<SeedVnet>,
    #[serde(default)]
    pub network_security_groups: Vec<SeedNsg>,
    #[serde(default)]
    pub public_ips: Vec<SeedPublicIp>,
    #[serde(default)]
    pub user_assigned_identities: Vec<SeedIdentity>,
    pub vms: Vec<SeedVm>,
    #[serde(default)]
    pub options: AzureOptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedServicePrincipal {
    #[serde(default)]
    pub name: String,
    pub client_id: String,
    #[serde(serialize_with = "ser_secret", deserialize_with = "de_secret")]
    pub client_secret: Secret,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVnet {
    pub name: String,
    #[serde(
        default,
        serialize_with = "ser_prefixes",
        deserialize_with = "de_prefixes"
    )]
    pub address_prefixes: Vec<Ipv4Net>,
    pub subnets: Vec<SeedSubnet>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSubnet {
    pub name: String,
    #[serde(serialize_with = "ser_prefix", deserialize_with = "de_prefix")]
    pub address_prefix: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNsg {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPublicIp {
    pub name: String,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_minutes: u32,
}

fn default_idle_timeout() -> u32 {
    4
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedIdentity {
    pub name: String,
    pub client_id: String,
    pub principal_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSystemIdentity {
    pub client_id: String,
    pub principal_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVm {
    pub name: String,
    pub vm_id: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default = "running")]
    pub power_state: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identity: Option<SeedSystemIdentity>,
    #[serde(default)]
    pub user_identities: Vec<String>,
    pub nics: Vec<SeedNic>,
}

fn default_size() -> String {
    "Standard_B2s".into()
}

fn running() -> String {
    "running".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsg: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default)]
    pub enable_ip_forwarding: bool,
    pub ip_configurations: Vec<SeedIpConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedIpConfig {
    pub name: String,
    pub private_ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
}

fn parse_prefix<E: serde::de::Error>(s: &str) -> Result<Ipv4Net, E> {
    s.parse()
        .map_err(|_| E::custom(format!("{s:?} is not an IPv4 prefix like \"192.0.2.0/24\"")))
}

fn de_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    parse_prefix(&String::deserialize(d)?)
}

fn de_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Net>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_prefix(s))
        .collect()
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn ser_secret<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    // Deliberate: a seed written to a file must carry the credentials it defines.
    ser.serialize_str(s.expose())
}

fn ser_prefix<S: Serializer>(p: &Ipv4Net, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(p)
}

fn ser_prefixes<S: Serializer>(ps: &[Ipv4Net], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(ps.iter().map(|p| p.to_string()))
}

/// Azure's reserved addresses of a subnet: the network address, the gateway (.1), the two DNS
/// addresses (.2, .3) and the broadcast address.
pub(crate) fn is_reserved(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
    let base = u32::from(subnet.network());
    let n = u32::from(ip);
    n.wrapping_sub(base) <= 3 || ip == subnet.broadcast()
}

/// The MAC ARM shows for the `index`-th NIC of the seed (`00-0D-3A-…`, Azure's prefix).
pub(crate) fn derived_mac(index: usize) -> String {
    let n = index as u32 + 1;
    format!(
        "00-0D-3A-{:02X}-{:02X}-{:02X}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// ARM resource names: 1 to 80 letters, digits, `_`, `-` and `.`.
fn check_name(kind: &str, name: &str) -> Result<(), AzureSeedError> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} name {name:?}: expected 1 to 80 letters, digits, '_', '-' or '.'"
        )))
    }
}

fn check_guid(what: &str, id: &str) -> Result<(), AzureSeedError> {
    if uuid::Uuid::parse_str(id).is_ok() && id.len() == 36 {
        Ok(())
    } else {
        Err(invalid(format!("{what}: {id:?} is not a GUID")))
    }
}

/// Claims `name` among names of one kind, case-insensitively.
fn claim(seen: &mut HashSet<String>, kind: &str, name: &str) -> Result<(), AzureSeedError> {
    check_name(kind, name)?;
    if seen.insert(name.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(invalid(format!("duplicate {kind} name {name:?}")))
    }
}

impl SeedIpConfig {
    /// `(vnet, subnet)` names, resolving the default when the seed has exactly one subnet.
    pub fn subnet_ref(&self, seed: &AzureSeed) -> Result<(String, String), AzureSeedError> {
        match &self.subnet {
            Some(s) => {
                let (v, sn) = s.split_once('/').ok_or_else(|| {
                    invalid(format!(
                        "ipConfiguration {:?}: subnet {s:?} must be \"vnet/subnet\"",
                        self.name
                    ))
                })?;
                let vnet = seed
                    .virtual_networks
                    .iter()
                    .find(|x| x.name.eq_ignore_ascii_case(v))
                    .ok_or_else(|| {
                        invalid(format!(
                            "ipConfiguration {:?}: unknown virtual network {v:?}",
                            self.name
                        ))
                    })?;
                let subnet = vnet
                    .subnets
                    .iter()
                    .find(|x| x.name.eq_ignore_ascii_case(sn))
                    .ok_or_else(|| {
                        invalid(format!(
                            "ipConfiguration {:?}: virtual network {v:?} has no subnet {sn:?}",
                            self.name
                        ))
                    })?;
                Ok((vnet.name.clone(), subnet.name.clone()))
            }
            None => {
                let all: Vec<(&SeedVnet, &SeedSubnet)> = seed
                    .virtual_networks
                    .iter()
                    .flat_map(|v| v.subnets.iter().map(move |s| (v, s)))
                    .collect();
                match all.as_slice() {
                    [(v, s)] => Ok((v.name.clone(), s.name.clone())),
                    _ => Err(invalid(format!(
                        "ipConfiguration {:?}: subnet is required (\"vnet/subnet\") when the \
                         seed has more than one subnet",
                        self.name
                    ))),
                }
            }
        }
    }
}

impl AzureSeed {
    /// Parses and validates a seed.
    pub fn from_json(text: &str) -> Result<AzureSeed, AzureSeedError> {
        let seed: AzureSeed = serde_json::from_str(text)?;
        seed.validate()?;
        Ok(seed)
    }

    /// Reads, parses and validates a seed file.
    pub fn load(path: &Path) -> Result<AzureSeed, AzureSeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| AzureSeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AzureSeed::from_json(&text)
    }

    /// [`EXAMPLE_AZURE_SEED`], parsed.
    pub fn example() -> AzureSeed {
        AzureSeed::from_json(EXAMPLE_AZURE_SEED).expect("the example seed is valid")
    }

    /// The lab topology with `hosts` VMs `lb1`…`lbN` (1 to 80), the public IP and the `vip`
    /// secondary address on lb1: [`AzureLabSeed`]`{ hosts, ..Default::default() }`.
    pub fn lab(hosts: usize) -> Result<AzureSeed, AzureSeedError> {
        AzureLabSeed {
            hosts,
            ..AzureLabSeed::default()
        }
        .build()
    }

    /// The seed as JSON, client secrets included (write it to a file only root can read);
    /// [`AzureSeed::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("seeds serialise");
        s.push('\n');
        s
    }

    /// The VM with this name (case-insensitively, as ARM compares names).
    pub fn vm(&self, name: &str) -> Option<&SeedVm> {
        self.vms.iter().find(|v| v.name.eq_ignore_ascii_case(name))
    }

    /// Checks formats, references and uniqueness; the first problem found is reported.
    pub fn validate(&self) -> Result<(), AzureSeedError> {
        check_guid("tenant_id", &self.tenant_id)?;
        check_guid("subscription_id", &self.subscription_id)?;
        check_name("resource group", &self.resource_group)?;
        if self.location.is_empty()
            || !self
                .location
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid(format!(
                "location {:?}: expected lower-case letters and digits (e.g. westeurope)",
                self.location
            )));
        }
        self.options
            .validate()
            .map_err(|e| invalid(format!("options: {e}")))?;

        let mut clients = HashSet::new();
        for sp in &self.service_principals {
            check_guid(
                &format!("service principal {:?} client_id", sp.name),
                &sp.client_id,
            )?;
            if sp.client_secret.expose().is_empty() {
                return Err(invalid(format!(
                    "service principal {}: empty client_secret",
                    sp.client_id
                )));
            }
            if !clients.insert(sp.client_id.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "duplicate service principal client_id {}",
                    sp.client_id
                )));
            }
        }

        let mut names = HashSet::new();
        // Subnet prefixes of each vnet, to place private addresses.
        let mut subnets: HashMap<(String, String), Ipv4Net> = HashMap::new();
        for v in &self.virtual_networks {
            claim(&mut names, "virtual network", &v.name)?;
            if v.subnets.is_empty() {
                return Err(invalid(format!("virtual network {:?}: no subnets", v.name)));
            }
            let mut subnet_names = HashSet::new();
            for (i, s) in v.subnets.iter().enumerate() {
                claim(&mut subnet_names, "subnet", &s.name)?;
                if s.address_prefix.prefix_len() > 29 {
                    return Err(invalid(format!(
                        "subnet {}/{}: {} is smaller than Azure's minimum /29",
                        v.name, s.name, s.address_prefix
                    )));
                }
                if s.address_prefix.trunc() != s.address_prefix {
                    return Err(invalid(format!(
                        "subnet {}/{}: {} has host bits set",
                        v.name, s.name, s.address_prefix
                    )));
                }
                if !v.address_prefixes.is_empty()
                    && !v
                        .address_prefixes
                        .iter()
                        .any(|p| p.contains(&s.address_prefix))
                {
                    return Err(invalid(format!(
                        "subnet {}/{}: {} is outside the virtual network's address prefixes",
                        v.name, s.name, s.address_prefix
                    )));
                }
                for other in &v.subnets[..i] {
                    if other.address_prefix.contains(&s.address_prefix.network())
                        || s.address_prefix.contains(&other.address_prefix.network())
                    {
                        return Err(invalid(format!(
                            "subnets {}/{} and {}/{} overlap",
                            v.name, other.name, v.name, s.name
                        )));
                    }
                }
                subnets.insert(
                    (v.name.to_ascii_lowercase(), s.name.to_ascii_lowercase()),
                    s.address_prefix,
                );
            }
        }

        let mut nsg_names = HashSet::new();
        for g in &self.network_security_groups {
            claim(&mut nsg_names, "network security group", &g.name)?;
        }

        let mut pip_names = HashSet::new();
        let mut pip_addrs = HashSet::new();
        for p in &self.public_ips {
            claim(&mut pip_names, "public IP", &p.name)?;
            if p.ip.is_unspecified() || p.ip.is_multicast() || p.ip.is_broadcast() {
                return Err(invalid(format!(
                    "public IP {:?}: {} is not a unicast address",
                    p.name, p.ip
                )));
            }
            if !pip_addrs.insert(p.ip) {
                return Err(invalid(format!(
                    "public IP {:?}: address {} is used twice",
                    p.name, p.ip
                )));
            }
            if !(4..=30).contains(&p.idle_timeout_minutes) {
                return Err(invalid(format!(
                    "public IP {:?}: idle_timeout_minutes must be 4 to 30",
                    p.name
                )));
            }
        }

        let mut identity_names = HashSet::new();
        let mut identity_ids = HashSet::new();
        for i in &self.user_assigned_identities {
            claim(&mut identity_names, "user-assigned identity", &i.name)?;
            check_guid(&format!("identity {:?} client_id", i.name), &i.client_id)?;
            check_guid(
                &format!("identity {:?} principal_id", i.name),
                &i.principal_id,
            )?;
            if !identity_ids.insert(i.client_id.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "identity {:?}: client_id {} is used twice",
                    i.name, i.client_id
                )));
            }
        }

        let mut vm_names = HashSet::new();
        let mut vm_ids = HashSet::new();
        let mut nic_names = HashSet::new();
        let mut macs = HashSet::new();
        let mut private: HashMap<(String, Ipv4Addr), String> = HashMap::new();
        let mut pip_users: HashMap<String, String> = HashMap::new();
        let mut nic_index = 0usize;
        for vm in &self.vms {
            claim(&mut vm_names, "VM", &vm.name)?;
            check_guid(&format!("VM {:?} vm_id", vm.name), &vm.vm_id)?;
            if !vm_ids.insert(vm.vm_id.to_ascii_lowercase()) {
                return Err(invalid(format!("VM {:?}: vm_id is used twice", vm.name)));
            }
            if !POWER_STATES.contains(&vm.power_state.as_str()) {
                return Err(invalid(format!(
                    "VM {:?}: power_state {:?} is not one of {}",
                    vm.name,
                    vm.power_state,
                    POWER_STATES.join(", ")
                )));
            }
            if let Some(si) = &vm.system_identity {
                check_guid(
                    &format!("VM {:?} system_identity.client_id", vm.name),
                    &si.client_id,
                )?;
                check_guid(
                    &format!("VM {:?} system_identity.principal_id", vm.name),
                    &si.principal_id,
                )?;
                if !identity_ids.insert(si.client_id.to_ascii_lowercase()) {
                    return Err(invalid(format!(
                        "VM {:?}: system identity client_id {} is used twice",
                        vm.name, si.client_id
                    )));
                }
            }
            let mut assigned = HashSet::new();
            for u in &vm.user_identities {
                if !identity_names.contains(&u.to_ascii_lowercase()) {
                    return Err(invalid(format!(
                        "VM {:?}: unknown user-assigned identity {u:?}",
                        vm.name
                    )));
                }
                if !assigned.insert(u.to_ascii_lowercase()) {
                    return Err(invalid(format!(
                        "VM {:?}: identity {u:?} listed twice",
                        vm.name
                    )));
                }
            }
            if vm.nics.is_empty() {
                return Err(invalid(format!(
                    "VM {:?}: at least one NIC is required",
                    vm.name
                )));
            }
            for nic in &vm.nics {
                claim(&mut nic_names, "network interface", &nic.name)?;
                let mac = nic.mac.clone().unwrap_or_else(|| derived_mac(nic_index));
                nic_index += 1;
                if !is_mac(&mac) {
                    return Err(invalid(format!(
                        "NIC {:?}: mac {mac:?} is not like 00-0D-3A-1B-C7-21",
                        nic.name
                    )));
                }
                if !macs.insert(mac.to_ascii_uppercase()) {
                    return Err(invalid(format!(
                        "NIC {:?}: mac {mac} is used twice",
                        nic.name
                    )));
                }
                if let Some(g) = &nic.nsg {
                    if !nsg_names.contains(&g.to_ascii_lowercase()) {
                        return Err(invalid(format!(
                            "NIC {:?}: unknown network security group {g:?}",
                            nic.name
                        )));
                    }
                }
                if nic.ip_configurations.is_empty() {
                    return Err(invalid(format!(
                        "NIC {:?}: at least one ipConfiguration is required",
                        nic.name
                    )));
                }
                let primaries = nic
                    .ip_configurations
                    .iter()
                    .filter(|c| c.primary == Some(true))
                    .count();
                if primaries > 1 {
                    return Err(invalid(format!(
                        "NIC {:?}: more than one primary ipConfiguration",
                        nic.name
                    )));
                }
                if primaries == 0 && nic.ip_configurations[0].primary == Some(false) {
                    return Err(invalid(format!(
                        "NIC {:?}: no primary ipConfiguration (mark one \"primary\": true)",
                        nic.name
                    )));
                }
                let mut cfg_names = HashSet::new();
                let mut vnet_of_nic: Option<String> = None;
                for c in &nic.ip_configurations {
                    claim(&mut cfg_names, "ipConfiguration", &c.name)?;
                    let (vnet, subnet) = c.subnet_ref(self)?;
                    let key = (vnet.to_ascii_lowercase(), subnet.to_ascii_lowercase());
                    let prefix = subnets[&key];
                    match &vnet_of_nic {
                        None => vnet_of_nic = Some(key.0.clone()),
                        Some(v) if *v != key.0 => {
                            return Err(invalid(format!(
                                "NIC {:?}: ipConfigurations in different virtual networks",
                                nic.name
                            )))
                        }
                        Some(_) => {}
                    }
                    if !prefix.contains(&c.private_ip) || is_reserved(&prefix, c.private_ip) {
                        return Err(invalid(format!(
                            "NIC {:?} ipConfiguration {:?}: {} is not a usable address of \
                             subnet {vnet}/{subnet} ({prefix}; Azure reserves the first four \
                             and the last)",
                            nic.name, c.name, c.private_ip
                        )));
                    }
                    let what = format!("NIC {:?} ipConfiguration {:?}", nic.name, c.name);
                    if let Some(first) = private.insert((key.0.clone(), c.private_ip), what.clone())
                    {
                        return Err(invalid(format!(
                            "private address {} is used twice: by {first} and by {what}",
                            c.private_ip
                        )));
                    }
                    if let Some(p) = &c.public_ip {
                        if !pip_names.contains(&p.to_ascii_lowercase()) {
                            return Err(invalid(format!("{what}: unknown public IP {p:?}")));
                        }
                        if let Some(first) = pip_users.insert(p.to_ascii_lowercase(), what.clone())
                        {
                            return Err(invalid(format!(
                                "public IP {p:?} is on two ipConfigurations: {first} and {what}"
                            )));
                        }
                    }
                }
            }
        }
        // Holders are looked up by address: a public IP must not also be a private one.
        if let Some(p) = self
            .public_ips
            .iter()
            .find(|p| private.keys().any(|(_, ip)| *ip == p.ip))
        {
            return Err(invalid(format!(
                "public IP {:?}: {} is also a private address",
                p.name, p.ip
            )));
        }
        if let Some(vm) = &self.options.imds_default_vm {
            if !vm_names.contains(&vm.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "options.imds_default_vm: unknown VM {vm:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Names and addresses of the lab topology ([`AzureLabSeed`]).
pub mod lab {
    use std::net::Ipv4Addr;

    /// The ids of the example seed (and of [`super::AzureLabSeed`] without `random_ids`).
    pub const TENANT_ID: &str = "5b1f4b2e-0000-4000-8000-000000000001";
    pub const SUBSCRIPTION_ID: &str = "8d10c5e2-0000-4000-8000-000000000002";
    pub const CLIENT_ID: &str = "c1e7a9f0-0000-4000-8000-000000000003";
    pub const RESOURCE_GROUP: &str = "rg-exoip";
    pub const LOCATION: &str = "westeurope";
    pub const SERVICE_PRINCIPAL: &str = "exoip";
    pub const VNET: &str = "vnet-exoip";
    pub const SUBNET: &str = "default";
    pub const SUBNET_PREFIX: &str = "192.0.2.0/24";
    pub const NSG: &str = "exoip";
    /// Every VM and NIC carries this tag (`exoip-group=lab`).
    pub const GROUP_TAG: (&str, &str) = ("exoip-group", "lab");
    pub const USER_IDENTITY: &str = "id-exoip";
    /// Each NIC's primary ipConfiguration.
    pub const PRIMARY_CONFIG: &str = "ipconfig1";
    pub const PUBLIC_IP_NAME: &str = "pip-vip";
    pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// The secondary ipConfiguration holding [`SECONDARY_IP`].
    pub const SECONDARY_CONFIG: &str = "vip";
    pub const SECONDARY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    /// The most VMs the lab has (192.0.2.11-.90, below the secondary address).
    pub const MAX_HOSTS: usize = 80;

    /// The name of VM `i` (0-based): `lb1`, `lb2`, …; the simulator and the Azure provider
    /// name holders (instance ids) by VM name.
    pub fn vm_name(i: usize) -> String {
        format!("lb{}", i + 1)
    }

    /// The NIC of VM `i` (0-based): `nic-lb1`, ….
    pub fn nic_name(i: usize) -> String {
        format!("nic-lb{}", i + 1)
    }

    /// The primary address of VM `i` (0-based): 192.0.2.11 + i (the IMDS caller's source).
    pub fn host_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 11 + i as u8)
    }
}

/// Builds the lab topology: one resource group in `westeurope`, virtual network `vnet-exoip`
/// with subnet `default` 192.0.2.0/24, NSG `exoip`, the public IP `pip-vip` 203.0.113.10,
/// the user-assigned identity `id-exoip`, one service principal (`exoip`, secret of your
/// choosing), and VMs `lb1`…`lbN` (names from [`lab::vm_name`]) with one NIC each (`nic-lbN`,
/// primary ipConfiguration `ipconfig1` at 192.0.2.(10+N), NSG `exoip`, tag
/// `exoip-group=lab`), a system-assigned identity each and `id-exoip` assigned. The public IP
/// sits on the primary ipConfiguration of VM `public_ip_on`, the secondary ipConfiguration
/// `vip` 192.0.2.100 on VM `secondary_on`'s NIC.
///
/// ```
/// use exoip_providers::sim::azure::{lab, AzureLabSeed};
/// use exoip_providers::Secret;
/// let seed = AzureLabSeed {
///     hosts: 4,
///     public_ip_on: None,
///     client_secret: Secret::new("s3cret"),
///     ..AzureLabSeed::default()
/// }
/// .build()
/// .unwrap();
/// assert_eq!(seed.vms[3].name, lab::vm_name(3));
/// assert_eq!(seed.service_principals[0].client_secret.expose(), "s3cret");
/// ```
#[derive(Clone, Debug)]
pub struct AzureLabSeed {
    /// Number of VMs, 1 to [`lab::MAX_HOSTS`].
    pub hosts: usize,
    /// The VM (0-based index into `lb1…`) whose primary ipConfiguration holds the public IP;
    /// `None`: the public IP is unattached.
    pub public_ip_on: Option<usize>,
    /// The VM (0-based) whose NIC has the secondary ipConfiguration `vip` (192.0.2.100);
    /// `None`: no NIC has it.
    pub secondary_on: Option<usize>,
    /// The service principal's client secret.
    pub client_secret: Secret,
    /// Random GUIDs (tenant, subscription, client, VM and identity ids) instead of the fixed
    /// ones of [`lab`] and the example seed.
    pub random_ids: bool,
    pub options: AzureOptions,
}

impl Default for AzureLabSeed {
    /// The example seed's topology: three VMs, public IP and `vip` on lb1, fixed ids.
    fn default() -> Self {
        AzureLabSeed {
            hosts: 3,
            public_ip_on: Some(0),
            secondary_on: Some(0),
            client_secret: Secret::new("sim-azure-secret-change-me"),
            random_ids: false,
            options: AzureOptions::default(),
        }
    }
}

impl AzureLabSeed {
    /// The seed this describes, validated. Refuses `hosts` outside 1 to [`lab::MAX_HOSTS`]
    /// and a `public_ip_on` or `secondary_on` that names no VM.
    pub fn build(&self) -> Result<AzureSeed, AzureSeedError> {
        if !(1..=lab::MAX_HOSTS).contains(&self.hosts) {
            return Err(invalid(format!(
                "the lab has 1 to {} hosts (192.0.2.11-.90), not {}",
                lab::MAX_HOSTS,
                self.hosts
            )));
        }
        for (what, on) in [
            ("public_ip_on", self.public_ip_on),
            ("secondary_on", self.secondary_on),
        ] {
            if let Some(i) = on.filter(|i| *i >= self.hosts) {
                return Err(invalid(format!(
                    "{what}: VM index {i} is not one of the {} lab VMs (0-based)",
                    self.hosts
                )));
            }
        }
        // Fixed ids read like the example's: a per-kind prefix and a readable tail.
        let guid = |fixed: String| -> String {
            if self.random_ids {
                uuid::Uuid::new_v4().to_string()
            } else {
                fixed
            }
        };
        let net: Ipv4Net = lab::SUBNET_PREFIX.parse().expect("a valid prefix");
        let subnet_ref = format!("{}/{}", lab::VNET, lab::SUBNET);
        let tags = BTreeMap::from([(lab::GROUP_TAG.0.to_string(), lab::GROUP_TAG.1.to_string())]);
        let vms = (0..self.hosts)
            .map(|i| {
                let n = i + 1;
                let mut ip_configurations = vec![SeedIpConfig {
                    name: lab::PRIMARY_CONFIG.into(),
                    private_ip: lab::host_ip(i),
                    subnet: Some(subnet_ref.clone()),
                    primary: Some(true),
                    public_ip: (self.public_ip_on == Some(i)).then(|| lab::PUBLIC_IP_NAME.into()),
                }];
                if self.secondary_on == Some(i) {
                    ip_configurations.push(SeedIpConfig {
                        name: lab::SECONDARY_CONFIG.into(),
                        private_ip: lab::SECONDARY_IP,
                        subnet: Some(subnet_ref.clone()),
                        primary: None,
                        public_ip: None,
                    });
                }
                SeedVm {
                    name: lab::vm_name(i),
                    vm_id: guid(format!("7a1d0000-0000-4000-8000-{:012}", 10 + n)),
                    zone: String::new(),
                    size: default_size(),
                    power_state: running(),
                    tags: tags.clone(),
                    system_identity: Some(SeedSystemIdentity {
                        client_id: guid(format!("5e1f0000-0000-4000-8000-{:012}", 10 + n)),
                        principal_id: guid(format!("5e1f0000-0000-4000-9000-{:012}", 10 + n)),
                    }),
                    user_identities: vec![lab::USER_IDENTITY.into()],
                    nics: vec![SeedNic {
                        name: lab::nic_name(i),
                        nsg: Some(lab::NSG.into()),
                        tags: tags.clone(),
                        mac: None,
                        enable_ip_forwarding: false,
                        ip_configurations,
                    }],
                }
            })
            .collect();
        let seed = AzureSeed {
            tenant_id: guid(lab::TENANT_ID.into()),
            subscription_id: guid(lab::SUBSCRIPTION_ID.into()),
            resource_group: lab::RESOURCE_GROUP.into(),
            location: lab::LOCATION.into(),
            service_principals: vec![SeedServicePrincipal {
                name: lab::SERVICE_PRINCIPAL.into(),
                client_id: guid(lab::CLIENT_ID.into()),
                client_secret: self.client_secret.clone(),
            }],
            virtual_networks: vec![SeedVnet {
                name: lab::VNET.into(),
                address_prefixes: vec![net],
                subnets: vec![SeedSubnet {
                    name: lab::SUBNET.into(),
                    address_prefix: net,
                }],
            }],
            network_security_groups: vec![SeedNsg {
                name: lab::NSG.into(),
                tags: BTreeMap::new(),
            }],
            public_ips: vec![SeedPublicIp {
                name: lab::PUBLIC_IP_NAME.into(),
                ip: lab::PUBLIC_IP,
                zones: Vec::new(),
                tags: BTreeMap::new(),
                idle_timeout_minutes: default_idle_timeout(),
            }],
            user_assigned_identities: vec![SeedIdentity {
                name: lab::USER_IDENTITY.into(),
                client_id: guid("a5e1d000-0000-4000-8000-000000000001".into()),
                principal_id: guid("a5e1d000-0000-4000-8000-000000000002".into()),
            }],
            vms,
            options: self.options.clone(),
        };
        seed.validate()?;
        Ok(seed)
    }
}

impl fmt::Display for AzureSeed {
    /// A one-line summary for start-up logs (no secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subscription {}, resource group {}, {}, {} service principal(s), {} VM(s), {} \
             NIC(s), {} public IP(s)",
            self.subscription_id,
            self.resource_group,
            self.location,
            self.service_principals.len(),
            self.vms.len(),
            self.vms.iter().map(|v| v.nics.len()).sum::<usize>(),
            self.public_ips.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_three_host_lab() {
        let seed = AzureSeed::example();
        assert_eq!(seed, AzureSeed::lab(3).unwrap());
        assert_eq!(seed.vms.len(), 3);
        assert_eq!(seed.vms[0].nics[0].ip_configurations.len(), 2);
        assert!(AzureSeed::lab(0).is_err());
        assert!(AzureSeed::lab(81).is_err());
        let big = AzureSeed::lab(80).unwrap();
        assert_eq!(
            big.vms[79].nics[0].ip_configurations[0]
                .private_ip
                .to_string(),
            "192.0.2.90"
        );
    }

    #[test]
    fn lab_builder_places_the_addresses_and_the_secret() {
        let b = AzureLabSeed {
            hosts: 4,
            public_ip_on: None,
            secondary_on: Some(2),
            client_secret: Secret::new("lab-chosen-secret"),
            random_ids: true,
            ..AzureLabSeed::default()
        };
        let seed = b.build().unwrap();
        let names: Vec<&str> = seed.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["lb1", "lb2", "lb3", "lb4"]);
        for (i, vm) in seed.vms.iter().enumerate() {
            assert_eq!(vm.name, lab::vm_name(i));
            assert_eq!(vm.nics[0].name, lab::nic_name(i));
            let primary = &vm.nics[0].ip_configurations[0];
            assert_eq!(primary.private_ip, lab::host_ip(i));
            assert_eq!(primary.public_ip, None, "the public IP starts unattached");
            let secondary: Vec<_> = vm.nics[0].ip_configurations[1..].iter().collect();
            if i == 2 {
                assert_eq!(secondary.len(), 1);
                assert_eq!(secondary[0].name, lab::SECONDARY_CONFIG);
                assert_eq!(secondary[0].private_ip, lab::SECONDARY_IP);
            } else {
                assert!(secondary.is_empty());
            }
        }
        assert_eq!(seed.public_ips[0].ip, lab::PUBLIC_IP);
        assert_eq!(
            seed.service_principals[0].client_secret.expose(),
            "lab-chosen-secret"
        );
        assert_ne!(seed.tenant_id, lab::TENANT_ID, "random ids");
        assert_ne!(seed, b.build().unwrap(), "fresh ids on every build");

        let on_lb1 = AzureLabSeed::default().build().unwrap();
        assert_eq!(on_lb1, AzureSeed::example());
        assert_eq!(
            on_lb1.vm("LB1").unwrap().nics[0].ip_configurations[0]
                .public_ip
                .as_deref(),
            Some(lab::PUBLIC_IP_NAME)
        );

        for bad in [
            AzureLabSeed {
                public_ip_on: Some(3),
                ..AzureLabSeed::default()
            },
            AzureLabSeed {
                secondary_on: Some(3),
                ..AzureLabSeed::default()
            },
            AzureLabSeed {
                client_secret: Secret::new(""),
                ..AzureLabSeed::default()
            },
        ] {
            assert!(bad.build().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seeds_round_trip_through_json() {
        let seed = AzureLabSeed {
            hosts: 2,
            public_ip_on: Some(1),
            secondary_on: None,
            client_secret: Secret::new("round-trip"),
            random_ids: true,
            options: AzureOptions {
                token_lifetime: Duration::from_secs(30),
                imds_default_vm: Some("lb2".into()),
                ..AzureOptions::default()
            },
        }
        .build()
        .unwrap();
        let text = seed.to_json();
        assert!(
            text.contains("\"round-trip\""),
            "the file carries the secret"
        );
        assert_eq!(AzureSeed::from_json(&text).unwrap(), seed);
        let example = AzureSeed::example();
        assert_eq!(AzureSeed::from_json(&example.to_json()).unwrap(), example);
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let seed = AzureSeed::example();
        let builder = AzureLabSeed::default();
        let dbg = format!("{seed:?} {seed} {builder:?}");
        assert!(!dbg.contains("sim-azure-secret-change-me"), "{dbg}");
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> Result<AzureSeed, AzureSeedError> {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE_AZURE_SEED).unwrap();
        change(&mut v);
        AzureSeed::from_json(&v.to_string())
    }

    type Change = Box<dyn FnOnce(&mut serde_json::Value)>;

    #[test]
    fn validation_names_the_problem() {
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|v| v["tenant_id"] = "x".into()), "tenant_id"),
            (Box::new(|v| v["typo"] = 1.into()), "unknown field"),
            (
                Box::new(|v| {
                    v["vms"][1]["nics"][0]["ip_configurations"][0]["private_ip"] =
                        "192.0.2.11".into()
                }),
                "used twice",
            ),
            (
                Box::new(|v| {
                    v["vms"][1]["nics"][0]["ip_configurations"][0]["private_ip"] =
                        "192.0.2.3".into()
                }),
                "reserves",
            ),
            (
                Box::new(|v| {
                    v["vms"][1]["nics"][0]["ip_configurations"][0]["public_ip"] = "pip-vip".into()
                }),
                "two ipConfigurations",
            ),
            (
                Box::new(|v| v["vms"][1]["nics"][0]["nsg"] = "nope".into()),
                "unknown network security group",
            ),
            (
                Box::new(|v| v["vms"][1]["name"] = "LB1".into()),
                "duplicate VM name",
            ),
            (
                Box::new(|v| {
                    v["vms"][0]["nics"][0]["ip_configurations"][1]["primary"] = true.into()
                }),
                "more than one primary",
            ),
            (
                Box::new(|v| v["options"] = serde_json::json!({"busy_status": 500})),
                "busy_status",
            ),
            (
                Box::new(|v| v["options"] = serde_json::json!({"imds_default_vm": "lb9"})),
                "imds_default_vm",
            ),
        ];
        for (change, needle) in cases {
            let err = with(change).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
}

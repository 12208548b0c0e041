//! The seed: the initial state of the simulated cloud, read from a JSON file.
//!
//! ```json
//! {
//!   "zone": "ch-gva-2",
//!   "api_keys": [{"key": "EXOsim0123456789abcdef0123", "secret": "sim-secret-change-me"}],
//!   "security_groups": [{"id": "7f3a1b2c-0000-4000-8000-000000000001", "name": "exoip"}],
//!   "instances": [
//!     {"id": "2f6a9a43-0000-4000-8000-000000000011", "name": "lb1",
//!      "public_ip": "192.0.2.11", "public_ipv6": null,
//!      "security_groups": ["7f3a1b2c-0000-4000-8000-000000000001"], "state": "running"}
//!   ],
//!   "elastic_ips": [
//!     {"id": "8ea5e5c4-0000-4000-8000-000000000010", "ip": "203.0.113.10",
//!      "description": "exoip demo", "attached_to": ["2f6a9a43-0000-4000-8000-000000000011"]}
//!   ]
//! }
//! ```
//!
//! Fields:
//! * `zone`: the default zone, used when the request's `Host` does not name one (`api-<zone>.…`).
//! * `api_keys`: at least one key/secret pair; every `/v2` request must be signed with one of them.
//! * `security_groups`: `id`, `name`, optional `description` and `rules` (raw JSON objects in the
//!   API's `security-group-rule` shape, returned as they are). Exoscale security groups are not
//!   bound to a zone, so every zone sees all of them.
//! * `instances`: `id`, `name`, optional `zone` (default: the seed's), `public_ip` (IPv4 or
//!   null for a private instance), `public_ipv6`, `security_groups` (ids), `state` (one of the API's
//!   instance states, default `running`), `labels` (string map), `user_data` (served raw by the
//!   metadata stub), `manager` (`{"id": …, "type": "instance-pool"}`).
//! * `elastic_ips`: `id`, `ip` (IPv4, or IPv6 for an `inet6` EIP), optional `zone`, `description`,
//!   `labels`, `attached_to` (instance ids of the same zone).
//!
//! Ids must be UUIDs and unique; addresses must be unique. Unknown fields are rejected so that a
//! typo does not silently seed a different cloud.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::Secret;

/// The instance states of the API's `instance-state` schema.
pub const INSTANCE_STATES: &[&str] = &[
    "destroyed",
    "destroying",
    "error",
    "expunging",
    "migrating",
    "running",
    "starting",
    "stopped",
    "stopping",
];

/// The zones of the API's `zone-name` schema; `GET /v2/zone` lists them (plus any other zone a
/// seed uses).
pub const KNOWN_ZONES: &[&str] = &[
    "at-vie-1", "at-vie-2", "bg-sof-1", "ch-dk-2", "ch-gva-2", "de-fra-1", "de-muc-1", "hr-zag-1",
];

/// The seed printed by `exoip sim --example-seed`: three load balancers in one security group,
/// the elastic IP on the first.
pub const EXAMPLE_SEED: &str = r#"{
  "zone": "ch-gva-2",
  "api_keys": [
    {"key": "EXOsim0123456789abcdef0123", "secret": "sim-secret-change-me"}
  ],
  "security_groups": [
    {"id": "7f3a1b2c-0000-4000-8000-000000000001", "name": "exoip",
     "description": "exoip peers (heartbeats on UDP 12345)"}
  ],
  "instances": [
    {"id": "2f6a9a43-0000-4000-8000-000000000011", "name": "lb1",
     "public_ip": "192.0.2.11", "public_ipv6": null,
     "security_groups": ["7f3a1b2c-0000-4000-8000-000000000001"], "state": "running"},
    {"id": "2f6a9a43-0000-4000-8000-000000000012", "name": "lb2",
     "public_ip": "192.0.2.12", "public_ipv6": null,
     "security_groups": ["7f3a1b2c-0000-4000-8000-000000000001"], "state": "running"},
    {"id": "2f6a9a43-0000-4000-8000-000000000013", "name": "lb3",
     "public_ip": "192.0.2.13", "public_ipv6": null,
     "security_groups": ["7f3a1b2c-0000-4000-8000-000000000001"], "state": "running"}
  ],
  "elastic_ips": [
    {"id": "8ea5e5c4-0000-4000-8000-000000000010", "ip": "203.0.113.10",
     "description": "exoip demo", "attached_to": ["2f6a9a43-0000-4000-8000-000000000011"]}
  ]
}
"#;

/// Why a seed was refused. Messages name the offending object so the file can be fixed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seed is not valid JSON for the simulator: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("seed: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> SeedError {
    SeedError::Invalid(msg.into())
}

/// The initial state of the simulated cloud. See the module documentation for the format.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub zone: String,
    pub api_keys: Vec<ApiKey>,
    #[serde(default)]
    pub security_groups: Vec<SeedSecurityGroup>,
    #[serde(default)]
    pub instances: Vec<SeedInstance>,
    #[serde(default)]
    pub elastic_ips: Vec<SeedElasticIp>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    #[serde(deserialize_with = "de_secret")]
    pub secret: Secret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecurityGroup {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedInstance {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default, deserialize_with = "de_opt_addr")]
    pub public_ip: Option<Ipv4Addr>,
    #[serde(default, deserialize_with = "de_opt_addr")]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default = "running")]
    pub state: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub user_data: String,
    #[serde(default)]
    pub manager: Option<SeedManager>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedManager {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedElasticIp {
    pub id: String,
    #[serde(deserialize_with = "de_addr")]
    pub ip: IpAddr,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub attached_to: Vec<String>,
}

fn running() -> String {
    "running".to_string()
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// Parses an address, quoting the offending text: serde's own message does not say what was wrong.
fn parse_addr<T: FromStr, E: serde::de::Error>(s: &str) -> Result<T, E> {
    s.parse().map_err(|_| {
        E::custom(format!(
            "{s:?} is not a valid address of the expected family"
        ))
    })
}

fn de_addr<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<T, D::Error> {
    parse_addr(&String::deserialize(d)?)
}

fn de_opt_addr<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_addr(&s).map(Some),
    }
}

impl SeedInstance {
    /// The zone this instance lives in.
    pub fn zone<'a>(&'a self, seed: &'a Seed) -> &'a str {
        self.zone.as_deref().unwrap_or(&seed.zone)
    }
}

impl SeedElasticIp {
    pub fn zone<'a>(&'a self, seed: &'a Seed) -> &'a str {
        self.zone.as_deref().unwrap_or(&seed.zone)
    }
}

impl Seed {
    /// Parses and validates a seed.
    pub fn from_json(text: &str) -> Result<Seed, SeedError> {
        let seed: Seed = serde_json::from_str(text)?;
        seed.validate()?;
        Ok(seed)
    }

    /// Reads, parses and validates a seed file.
    pub fn load(path: &Path) -> Result<Seed, SeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Seed::from_json(&text)
    }

    /// [`EXAMPLE_SEED`], parsed.
    pub fn example() -> Seed {
        Seed::from_json(EXAMPLE_SEED).expect("the example seed is valid")
    }

    /// Every zone the seed puts something in, the default zone first.
    pub fn zones(&self) -> Vec<String> {
        let mut zones = vec![self.zone.clone()];
        let used = self
            .instances
            .iter()
            .filter_map(|i| i.zone.clone())
            .chain(self.elastic_ips.iter().filter_map(|e| e.zone.clone()));
        for z in used {
            if !zones.contains(&z) {
                zones.push(z);
            }
        }
        zones
    }

    /// Checks references, uniqueness and formats; the first problem found is reported.
    pub fn validate(&self) -> Result<(), SeedError> {
        for zone in self.zones() {
            check_zone_name(&zone)?;
        }

        if self.api_keys.is_empty() {
            return Err(invalid("api_keys: at least one API key is required"));
        }
        let mut keys = HashSet::new();
        for k in &self.api_keys {
            if k.key.is_empty() || k.key.contains([',', ' ', '=']) {
                return Err(invalid(format!(
                    "api_keys: key {:?} is empty or contains ',', ' ' or '='",
                    k.key
                )));
            }
            if k.secret.expose().is_empty() {
                return Err(invalid(format!(
                    "api_keys: key {} has an empty secret",
                    k.key
                )));
            }
            if !keys.insert(k.key.as_str()) {
                return Err(invalid(format!("api_keys: duplicate key {}", k.key)));
            }
        }

        let mut ids: HashMap<String, String> = HashMap::new();
        let mut claim_id = |kind: &str, id: &str, name: &str| -> Result<(), SeedError> {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(invalid(format!("{kind} {name:?}: id {id:?} is not a UUID")));
            }
            let what = format!("{kind} {name:?}");
            if let Some(first) = ids.insert(id.to_ascii_lowercase(), what.clone()) {
                return Err(invalid(format!(
                    "duplicate id {id}: used by {first} and by {what}"
                )));
            }
            Ok(())
        };

        let mut group_ids = HashSet::new();
        for g in &self.security_groups {
            claim_id("security group", &g.id, &g.name)?;
            if g.name.is_empty() {
                return Err(invalid(format!("security group {}: empty name", g.id)));
            }
            group_ids.insert(g.id.as_str());
        }

        // Instance addresses and elastic IPs are unique each among their own kind only: an
        // instance whose native IP equals an EIP's address is the very ambiguity of the
        // `ip-address` filter that clients must survive, so a seed may set it up.
        let mut addresses: HashMap<(bool, IpAddr), String> = HashMap::new();
        let mut claim_addr = |ip: IpAddr, what: String| -> Result<(), SeedError> {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid(format!("{what}: {ip} is not a unicast address")));
            }
            let is_eip = what.starts_with("elastic IP");
            if let Some(first) = addresses.insert((is_eip, ip), what.clone()) {
                return Err(invalid(format!(
                    "address {ip} is used twice: by {first} and by {what}"
                )));
            }
            Ok(())
        };

        let mut instance_zone: HashMap<&str, &str> = HashMap::new();
        for i in &self.instances {
            claim_id("instance", &i.id, &i.name)?;
            if i.name.is_empty() {
                return Err(invalid(format!("instance {}: empty name", i.id)));
            }
            if !INSTANCE_STATES.contains(&i.state.as_str()) {
                return Err(invalid(format!(
                    "instance {:?}: state {:?} is not one of {}",
                    i.name,
                    i.state,
                    INSTANCE_STATES.join(", ")
                )));
            }
            for g in &i.security_groups {
                if !group_ids.contains(g.as_str()) {
                    return Err(invalid(format!(
                        "instance {:?}: unknown security group {g}",
                        i.name
                    )));
                }
            }
            if let Some(ip) = i.public_ip {
                claim_addr(IpAddr::V4(ip), format!("instance {:?} public_ip", i.name))?;
            }
            if let Some(ip) = i.public_ipv6 {
                claim_addr(IpAddr::V6(ip), format!("instance {:?} public_ipv6", i.name))?;
            }
            if let Some(m) = &i.manager {
                if uuid::Uuid::parse_str(&m.id).is_err() {
                    return Err(invalid(format!(
                        "instance {:?}: manager id {:?} is not a UUID",
                        i.name, m.id
                    )));
                }
            }
            instance_zone.insert(i.id.as_str(), i.zone(self));
        }

        for e in &self.elastic_ips {
            let label = e.ip.to_string();
            claim_id("elastic IP", &e.id, &label)?;
            claim_addr(e.ip, format!("elastic IP {}", e.id))?;
            let mut seen = HashSet::new();
            for holder in &e.attached_to {
                let zone = instance_zone.get(holder.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "elastic IP {}: attached_to names unknown instance {holder}",
                        e.ip
                    ))
                })?;
                if *zone != e.zone(self) {
                    return Err(invalid(format!(
                        "elastic IP {} (zone {}): instance {holder} is in zone {zone}",
                        e.ip,
                        e.zone(self)
                    )));
                }
                if !seen.insert(holder.as_str()) {
                    return Err(invalid(format!(
                        "elastic IP {}: instance {holder} listed twice in attached_to",
                        e.ip
                    )));
                }
            }
        }
        Ok(())
    }
}

fn check_zone_name(zone: &str) -> Result<(), SeedError> {
    let ok = !zone.is_empty()
        && zone
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "zone {zone:?}: expected lower-case letters, digits and '-' (e.g. ch-gva-2)"
        )))
    }
}

impl fmt::Display for Seed {
    /// A one-line summary for start-up logs (no secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "zone {}, {} API key(s), {} security group(s), {} instance(s), {} elastic IP(s)",
            self.zone,
            self.api_keys.len(),
            self.security_groups.len(),
            self.instances.len(),
            self.elastic_ips.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_valid_and_complete() {
        let seed = Seed::example();
        assert_eq!(seed.zone, "ch-gva-2");
        assert_eq!(seed.instances.len(), 3);
        assert_eq!(seed.elastic_ips[0].attached_to.len(), 1);
        assert_eq!(seed.zones(), vec!["ch-gva-2".to_string()]);
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let seed = Seed::example();
        let dbg = format!("{seed:?} {seed}");
        assert!(!dbg.contains("sim-secret-change-me"), "{dbg}");
    }
}

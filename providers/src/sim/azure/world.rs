//! The simulated Azure's state: the resources of one resource group, what ARM shows for them
//! (the desired state of the last accepted PUT) and what is in force (the state after the last
//! completed operation), and the NIC/public-IP rules that ARM enforces on a PUT.
//!
//! Every resource keeps two copies of its writable parts: `spec` is what GET shows as soon as a
//! PUT is accepted; `applied` is what the network does, and what back-references (a public IP's
//! `ipConfiguration`, an NSG's `networkInterfaces`), IMDS, the holder timeline and the route hook
//! follow. An operation's completion copies `spec` to `applied` (or, on failure, back).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use axum::http::StatusCode;
use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use super::seed::{derived_mac, is_reserved, AzureSeed};
use crate::sim::faults::{OpOutcome, Reason};

/// An ARM error answer: `{"error":{"code","message","details"?}}` with its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Vec<(String, String)>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
        ArmError {
            status,
            code: code.into(),
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ArmError {
        ArmError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn body(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if !self.details.is_empty() {
            e["details"] = self
                .details
                .iter()
                .map(|(c, m)| json!({ "code": c, "message": m }))
                .collect();
        }
        json!({ "error": e })
    }
}

pub(crate) fn new_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The fixed coordinates of the simulated account.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    pub tenant: String,
    pub sub: String,
    pub rg: String,
    pub location: String,
}

impl Ids {
    pub fn rg_id(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.sub, self.rg)
    }

    pub fn network(&self, kind: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/{kind}/{name}", self.rg_id())
    }

    pub fn nic(&self, name: &str) -> String {
        self.network("networkInterfaces", name)
    }

    pub fn ip_config(&self, nic: &str, cfg: &str) -> String {
        format!("{}/ipConfigurations/{cfg}", self.nic(nic))
    }

    pub fn pip(&self, name: &str) -> String {
        self.network("publicIPAddresses", name)
    }

    pub fn nsg(&self, name: &str) -> String {
        self.network("networkSecurityGroups", name)
    }

    pub fn vnet(&self, name: &str) -> String {
        self.network("virtualNetworks", name)
    }

    pub fn subnet(&self, vnet: &str, subnet: &str) -> String {
        format!("{}/subnets/{subnet}", self.vnet(vnet))
    }

    pub fn vm(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{name}",
            self.rg_id()
        )
    }

    pub fn identity(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.rg_id()
        )
    }

    /// The `(type, name)` pairs after `…/providers/{namespace}/` of a resource id in this
    /// resource group, or why it is not one. Compared case-insensitively, as ARM does.
    pub fn parse_ref(&self, id: &str, namespace: &str) -> Result<Vec<(String, String)>, RefError> {
        let segs: Vec<&str> = id.split('/').collect();
        // "", "subscriptions", sub, "resourceGroups", rg, "providers", ns, type, name, …
        if segs.len() < 9
            || !segs[0].is_empty()
            || !eq(segs[1], "subscriptions")
            || !eq(segs[3], "resourceGroups")
            || !eq(segs[5], "providers")
            || !segs[7..].chunks_exact(2).remainder().is_empty()
            || segs.iter().skip(1).any(|s| s.is_empty())
        {
            return Err(RefError::Malformed);
        }
        if !eq(segs[2], &self.sub) || !eq(segs[4], &self.rg) || !eq(segs[6], namespace) {
            return Err(RefError::NotFound);
        }
        Ok(segs[7..]
            .chunks(2)
            .map(|p| (p[0].to_string(), p[1].to_string()))
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefError {
    Malformed,
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProvState {
    Succeeded,
    Updating,
    Failed,
}

impl ProvState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvState::Succeeded => "Succeeded",
            ProvState::Updating => "Updating",
            ProvState::Failed => "Failed",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Subnet {
    pub name: String,
    pub prefix: Ipv4Net,
}

#[derive(Clone, Debug)]
pub(crate) struct Vnet {
    pub name: String,
    pub prefixes: Vec<Ipv4Net>,
    pub subnets: Vec<Subnet>,
    pub etag: String,
    pub guid: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Nsg {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub etag: String,
    pub guid: String,
}

/// The writable parts of a public IP.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PipSpec {
    pub tags: BTreeMap<String, String>,
    pub idle_timeout: u32,
    pub dns: Option<Value>,
    pub ip_tags: Value,
    /// Other writable properties, echoed as given.
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pip {
    pub name: String,
    pub ip: Ipv4Addr,
    pub zones: Vec<String>,
    pub etag: String,
    pub guid: String,
    pub state: ProvState,
    pub busy: Option<String>,
    pub spec: PipSpec,
    pub applied: PipSpec,
}

#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub name: String,
    pub client_id: String,
    pub principal_id: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Vm {
    pub name: String,
    pub vm_id: String,
    pub zone: String,
    pub size: String,
    pub power_state: String,
    pub tags: BTreeMap<String, String>,
    pub system_identity: Option<Identity>,
    /// Names of user-assigned identities.
    pub user_identities: Vec<String>,
    /// NIC names, the primary first.
    pub nics: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allocation {
    Static,
    Dynamic,
}

impl Allocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Static => "Static",
            Allocation::Dynamic => "Dynamic",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IpConfig {
    pub name: String,
    pub private_ip: Ipv4Addr,
    pub allocation: Allocation,
    pub vnet: String,
    pub subnet: String,
    pub primary: bool,
    /// A public IP's name.
    pub public_ip: Option<String>,
    /// Other writable properties (application security groups, load balancer pools, …).
    pub extra: Map<String, Value>,
}

/// The writable parts of a NIC: what a whole-resource PUT replaces.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NicSpec {
    pub tags: BTreeMap<String, String>,
    /// A network security group's name.
    pub nsg: Option<String>,
    pub ip_forwarding: bool,
    pub accelerated: bool,
    /// The writable part of `dnsSettings` (`dnsServers`, `internalDnsNameLabel`).
    pub dns: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub ip_configs: Vec<IpConfig>,
}

#[derive(Clone, Debug)]
pub(crate) struct Nic {
    pub name: String,
    /// The VM's name.
    pub vm: String,
    pub mac: String,
    pub guid: String,
    pub etag: String,
    pub state: ProvState,
    /// The running operation's id.
    pub busy: Option<String>,
    pub spec: NicSpec,
    pub applied: NicSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpStatus {
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::InProgress => "InProgress",
            OpStatus::Succeeded => "Succeeded",
            OpStatus::Failed => "Failed",
            OpStatus::Canceled => "Canceled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpTarget {
    Nic(String),
    Pip(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Operation {
    pub id: String,
    pub status: OpStatus,
    pub error: Option<(String, String)>,
    pub target: OpTarget,
    pub outcome: OpOutcome,
    pub start: String,
    pub end: Option<String>,
}

impl Operation {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.id,
            "status": self.status.as_str(),
            "startTime": self.start,
        });
        if let Some(end) = &self.end {
            v["endTime"] = json!(end);
        }
        if let Some((code, message)) = &self.error {
            v["error"] = json!({ "code": code, "message": message });
        }
        v
    }
}

/// How an operation that the faults made fail ends: its status and ARM error.
pub(crate) fn failure_of(reason: Reason) -> (OpStatus, String, String) {
    let (status, code, message) = match reason {
        Reason::Interrupted => (OpStatus::Canceled, "Canceled", "Operation was canceled."),
        Reason::Busy => (
            OpStatus::Failed,
            "RetryableErrorDueToAnotherOperation",
            "Operation could not be completed because another operation on the resource is in \
             progress.",
        ),
        Reason::Conflict => (
            OpStatus::Failed,
            "Conflict",
            "The operation conflicts with the state of the resource.",
        ),
        Reason::Forbidden => (
            OpStatus::Failed,
            "AuthorizationFailed",
            "The client does not have authorization to perform this action.",
        ),
        Reason::Incorrect => (OpStatus::Failed, "BadRequest", "The request was invalid."),
        Reason::NotFound => (
            OpStatus::Failed,
            "NotFound",
            "A referenced resource was not found.",
        ),
        Reason::Unavailable => (
            OpStatus::Failed,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        _ => (
            OpStatus::Failed,
            "InternalServerError",
            "An error occurred while processing the request.",
        ),
    };
    (status, code.into(), format!("{message} (simulated)"))
}

/// Who holds one floating address: a public IP (on an ipConfiguration) or the private address
/// of a secondary ipConfiguration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holding {
    pub vm: String,
    pub nic: String,
    pub ip_config: String,
    /// The ipConfiguration's private address (where the cloud delivers the public IP).
    pub private_ip: Ipv4Addr,
}

/// A floating address's holders in the applied state, and the resource id the timeline
/// names it by (the public IP's id; `None` for a private address: the ipConfiguration's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub resource_id: Option<String>,
    pub holders: Vec<Holding>,
}

#[derive(Debug)]
pub(crate) struct World {
    pub ids: Ids,
    pub vnets: Vec<Vnet>,
    pub nsgs: Vec<Nsg>,
    pub pips: Vec<Pip>,
    pub identities: Vec<Identity>,
    pub vms: Vec<Vm>,
    pub nics: Vec<Nic>,
    pub ops: HashMap<String, Operation>,
}

/// Read-only NIC properties: ignored in a PUT body, never echoed from it.
const NIC_READ_ONLY: &[&str] = &[
    "provisioningState",
    "resourceGuid",
    "macAddress",
    "virtualMachine",
    "primary",
    "hostedWorkloads",
    "tapConfigurations",
    "privateEndpoint",
    "vnetEncryptionSupported",
    "dscpConfiguration",
    "defaultOutboundConnectivityEnabled",
];
const NIC_MODELLED: &[&str] = &[
    "ipConfigurations",
    "networkSecurityGroup",
    "enableIPForwarding",
    "enableAcceleratedNetworking",
    "dnsSettings",
];
const IP_CONFIG_READ_ONLY: &[&str] = &["provisioningState", "privateLinkConnectionProperties"];
const IP_CONFIG_MODELLED: &[&str] = &[
    "privateIPAddress",
    "privateIPAllocationMethod",
    "privateIPAddressVersion",
    "subnet",
    "primary",
    "publicIPAddress",
];
const PIP_READ_ONLY: &[&str] = &[
    "provisioningState",
    "resourceGuid",
    "ipConfiguration",
    "natGateway",
    "servicePublicIPAddress",
    "linkedPublicIPAddress",
];
const PIP_MODELLED: &[&str] = &[
    "ipAddress",
    "publicIPAllocationMethod",
    "publicIPAddressVersion",
    "idleTimeoutInMinutes",
    "dnsSettings",
    "ipTags",
];

fn contains_ci(list: &[&str], key: &str) -> bool {
    list.iter().any(|k| eq(k, key))
}

/// The `tags` of a body: an object of strings, absent or null meaning none.
fn parse_tags(v: Option<&Value>) -> Result<BTreeMap<String, String>, ArmError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    format!("The request content was invalid: tag {k:?} must be a string."),
                )),
            })
            .collect(),
        Some(_) => Err(ArmError::bad_request(
            "InvalidRequestContent",
            "The request content was invalid: 'tags' must be an object.",
        )),
    }
}

fn opt_bool(props: &Map<String, Value>, key: &str) -> Result<bool, ArmError> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid: '{key}' must be a boolean."),
        )),
    }
}

/// The `id` of a `{"id": …}` reference, absent or null meaning none.
fn ref_id<'a>(v: Option<&'a Value>, path: &str) -> Result<Option<&'a str>, ArmError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => match m.get("id") {
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(ArmError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid: '{path}.id' must be a string."),
            )),
        },
        Some(_) => Err(ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid: '{path}' must be an object."),
        )),
    }
}

fn linked_invalid(id: &str, path: &str) -> ArmError {
    ArmError::bad_request(
        "LinkedInvalidPropertyId",
        format!(
            "Property id '{id}' at path '{path}' is invalid. Expect fully qualified resource Id \
             that start with '/subscriptions/{{subscriptionId}}' or \
             '/providers/{{resourceProviderNamespace}}/'."
        ),
    )
}

fn invalid_reference(id: &str, by: &str) -> ArmError {
    ArmError::bad_request(
        "InvalidResourceReference",
        format!(
            "Resource {id} referenced by resource {by} was not found. Please make sure that the \
             referenced resource exists, and that both resources are in the same region."
        ),
    )
}

/// Checks a body's `location` against the resource's.
fn check_location(body: &Map<String, Value>, location: &str, id: &str) -> Result<(), ArmError> {
    match body.get("location") {
        None | Some(Value::Null) => Err(ArmError::bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        )),
        Some(Value::String(l)) if eq(&l.replace(' ', ""), location) => Ok(()),
        Some(l) => Err(ArmError::bad_request(
            "InvalidResourceLocation",
            format!(
                "The resource '{id}' already exists in location '{location}'. A resource with \
                 the same name cannot be created in location {l}."
            ),
        )),
    }
}

fn extras(props: &Map<String, Value>, read_only: &[&str], modelled: &[&str]) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| !contains_ci(read_only, k) && !contains_ci(modelled, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl World {
    pub fn from_seed(seed: &AzureSeed) -> World {
        let ids = Ids {
            tenant: seed.tenant_id.clone(),
            sub: seed.subscription_id.clone(),
            rg: seed.resource_group.clone(),
            location: seed.location.clone(),
        };
        let vnets = seed
            .virtual_networks
            .iter()
            .map(|v| Vnet {
                name: v.name.clone(),
                prefixes: if v.address_prefixes.is_empty() {
                    v.subnets.iter().map(|s| s.address_prefix).collect()
                } else {
                    v.address_prefixes.clone()
                },
                subnets: v
                    .subnets
                    .iter()
                    .map(|s| Subnet {
                        name: s.name.clone(),
                        prefix: s.address_prefix,
                    })
                    .collect(),
                etag: new_etag(),
                guid: uuid::Uuid::new_v4().to_string(),
            })
            .collect();
        let nsgs = seed
            .network_security_groups
            .iter()
            .map(|g| Nsg {
                name: g.name.clone(),
                tags: g.tags.clone(),
                etag: new_etag(),
                guid: uuid::Uuid::new_v4().to_string(),
            })
            .collect();
        let pips = seed
            .public_ips
            .iter()
            .map(|p| {
                let spec = PipSpec {
                    tags: p.tags.clone(),
                    idle_timeout: p.idle_timeout_minutes,
                    dns: None,
                    ip_tags: json!([]),
                    extra: Map::new(),
                };
                Pip {
                    name: p.name.clone(),
                    ip: p.ip,
                    zones: p.zones.clone(),
                    etag: new_etag(),
                    guid: uuid::Uuid::new_v4().to_string(),
                    state: ProvState::Succeeded,
                    busy: None,
                    applied: spec.clone(),
                    spec,
                }
            })
            .collect();
        let identities = seed
            .user_assigned_identities
            .iter()
            .map(|i| Identity {
                name: i.name.clone(),
                client_id: i.client_id.clone(),
                principal_id: i.principal_id.clone(),
            })
            .collect();
        let canonical = |list: &[&str], name: &str| -> Option<String> {
            list.iter().find(|n| eq(n, name)).map(|n| n.to_string())
        };
        let nsg_names: Vec<&str> = seed
            .network_security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        let pip_names: Vec<&str> = seed.public_ips.iter().map(|p| p.name.as_str()).collect();
        let mut nics = Vec::new();
        let mut vms = Vec::new();
        for vm in &seed.vms {
            for nic in &vm.nics {
                let first_primary = !nic
                    .ip_configurations
                    .iter()
                    .any(|c| c.primary == Some(true));
                let ip_configs = nic
                    .ip_configurations
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let (vnet, subnet) = c.subnet_ref(seed).expect("validated seed");
                        IpConfig {
                            name: c.name.clone(),
                            private_ip: c.private_ip,
                            allocation: Allocation::Static,
                            vnet,
                            subnet,
                            primary: c.primary == Some(true) || (first_primary && i == 0),
                            public_ip: c
                                .public_ip
                                .as_deref()
                                .and_then(|p| canonical(&pip_names, p)),
                            extra: Map::new(),
                        }
                    })
                    .collect();
                let spec = NicSpec {
                    tags: nic.tags.clone(),
                    nsg: nic.nsg.as_deref().and_then(|g| canonical(&nsg_names, g)),
                    ip_forwarding: nic.enable_ip_forwarding,
                    accelerated: false,
                    dns: Map::from_iter([("dnsServers".to_string(), json!([]))]),
                    extra: Map::new(),
                    ip_configs,
                };
                nics.push(Nic {
                    name: nic.name.clone(),
                    vm: vm.name.clone(),
                    mac: nic
                        .mac
                        .clone()
                        .unwrap_or_else(|| derived_mac(nics.len()))
                        .to_ascii_uppercase(),
                    guid: uuid::Uuid::new_v4().to_string(),
                    etag: new_etag(),
                    state: ProvState::Succeeded,
                    busy: None,
                    applied: spec.clone(),
                    spec,
                });
            }
            vms.push(Vm {
                name: vm.name.clone(),
                vm_id: vm.vm_id.clone(),
                zone: vm.zone.clone(),
                size: vm.size.clone(),
                power_state: vm.power_state.clone(),
                tags: vm.tags.clone(),
                system_identity: vm.system_identity.as_ref().map(|s| Identity {
                    name: vm.name.clone(),
                    client_id: s.client_id.clone(),
                    principal_id: s.principal_id.clone(),
                }),
                user_identities: vm
                    .user_identities
                    .iter()
                    .filter_map(|u| {
                        seed.user_assigned_identities
                            .iter()
                            .find(|i| eq(&i.name, u))
                            .map(|i| i.name.clone())
                    })
                    .collect(),
                nics: vm.nics.iter().map(|n| n.name.clone()).collect(),
            });
        }
        World {
            ids,
            vnets,
            nsgs,
            pips,
            identities,
            vms,
            nics,
            ops: HashMap::new(),
        }
    }

    pub fn nic_index(&self, name: &str) -> Option<usize> {
        self.nics.iter().position(|n| eq(&n.name, name))
    }

    pub fn pip_index(&self, name: &str) -> Option<usize> {
        self.pips.iter().position(|p| eq(&p.name, name))
    }

    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| eq(&v.name, name))
    }

    pub fn nsg(&self, name: &str) -> Option<&Nsg> {
        self.nsgs.iter().find(|g| eq(&g.name, name))
    }

    pub fn vnet(&self, name: &str) -> Option<&Vnet> {
        self.vnets.iter().find(|v| eq(&v.name, name))
    }

    pub fn subnet_prefix(&self, vnet: &str, subnet: &str) -> Option<Ipv4Net> {
        self.vnet(vnet)?
            .subnets
            .iter()
            .find(|s| eq(&s.name, subnet))
            .map(|s| s.prefix)
    }

    /// Whether a NIC is its VM's primary NIC.
    pub fn nic_is_primary(&self, nic: &Nic) -> bool {
        self.vm(&nic.vm)
            .and_then(|v| v.nics.first())
            .is_some_and(|n| eq(n, &nic.name))
    }

    /// Every floating address (each public IP, each secondary ipConfiguration's private
    /// address) with its holders in the applied state, in NIC order.
    pub fn holdings(&self) -> BTreeMap<IpAddr, Held> {
        let mut out: BTreeMap<IpAddr, Held> = BTreeMap::new();
        for p in &self.pips {
            out.insert(
                IpAddr::V4(p.ip),
                Held {
                    resource_id: Some(self.ids.pip(&p.name)),
                    holders: Vec::new(),
                },
            );
        }
        for nic in &self.nics {
            for c in &nic.applied.ip_configs {
                let holding = Holding {
                    vm: nic.vm.clone(),
                    nic: nic.name.clone(),
                    ip_config: c.name.clone(),
                    private_ip: c.private_ip,
                };
                if let Some(pip) = c.public_ip.as_deref().and_then(|p| self.pip_index(p)) {
                    if let Some(h) = out.get_mut(&IpAddr::V4(self.pips[pip].ip)) {
                        h.holders.push(holding.clone());
                    }
                }
                if !c.primary {
                    out.entry(IpAddr::V4(c.private_ip))
                        .or_insert(Held {
                            resource_id: None,
                            holders: Vec::new(),
                        })
                        .holders
                        .push(holding);
                }
            }
        }
        out
    }

    /// The claim record of every address that has one, in the applied state, as the Azure
    /// provider reads it: a public IP's `exoip-epoch`/`exoip-holder` tags; for a secondary
    /// address, the `exoip-epoch-<ip>`/`exoip-holder-<ip>` tags of the NIC holding it, or, when
    /// none does (after a release; always for an lb-probe frontend address, which no NIC
    /// carries), the newest such record on any NIC by the provider's own rule (a record counts
    /// on its holder's NIC only; equal epochs go to the smaller holder name).
    pub fn records(&self) -> BTreeMap<IpAddr, crate::ClaimRecord> {
        use crate::azure::{
            newest_nic_record, record_from_tags, secondary_record_tags, EPOCH_TAG, HOLDER_TAG,
        };
        let mut out = BTreeMap::new();
        for p in &self.pips {
            let tags = &p.applied.tags;
            let tag = |k: &str| tags.get(k).map(String::as_str);
            if let Some(r) = record_from_tags(tag(EPOCH_TAG), tag(HOLDER_TAG)) {
                out.insert(IpAddr::V4(p.ip), r);
            }
        }
        // Secondary addresses: those held, and those any NIC has record tags for.
        let prefix = format!("{EPOCH_TAG}-");
        let mut addresses: Vec<IpAddr> = self
            .holdings()
            .into_iter()
            .filter(|(_, h)| h.resource_id.is_none())
            .map(|(ip, _)| ip)
            .collect();
        for nic in &self.nics {
            for key in nic.applied.tags.keys() {
                if let Some(Ok(ip)) = key
                    .strip_prefix(&prefix)
                    .map(|a| a.replace('-', ":").parse::<IpAddr>())
                {
                    if !addresses.contains(&ip) {
                        addresses.push(ip);
                    }
                }
            }
        }
        for ip in addresses {
            let (epoch_key, holder_key) = secondary_record_tags(ip);
            let read = |nic: &Nic| {
                let tag = |k: &str| nic.applied.tags.get(k).map(String::as_str);
                record_from_tags(tag(&epoch_key), tag(&holder_key))
            };
            let holder = self.nics.iter().find(|n| {
                n.applied
                    .ip_configs
                    .iter()
                    .any(|c| !c.primary && IpAddr::V4(c.private_ip) == ip)
            });
            let record = match holder {
                Some(nic) => read(nic),
                None => newest_nic_record(self.nics.iter().map(|n| (Some(n.vm.as_str()), read(n)))),
            };
            if let Some(r) = record {
                out.insert(ip, r);
            }
        }
        out
    }

    /// The ipConfiguration (NIC, config) holding public IP `pip`, in the applied state.
    pub fn pip_holder(&self, pip: &str) -> Option<(&Nic, &IpConfig)> {
        self.nics.iter().find_map(|n| {
            n.applied
                .ip_configs
                .iter()
                .find(|c| c.public_ip.as_deref().is_some_and(|p| eq(p, pip)))
                .map(|c| (n, c))
        })
    }

    /// The VM whose primary NIC's primary ipConfiguration has address `ip` (applied), and
    /// whether `ip` is instead some other address of a VM (a secondary one: IMDS does not
    /// answer it).
    pub fn vm_by_primary_address(&self, ip: Ipv4Addr) -> (Option<String>, bool) {
        let mut other = false;
        for vm in &self.vms {
            for (i, nic_name) in vm.nics.iter().enumerate() {
                let Some(nic) = self.nic_index(nic_name).map(|n| &self.nics[n]) else {
                    continue;
                };
                for c in &nic.applied.ip_configs {
                    if c.private_ip == ip {
                        if i == 0 && c.primary {
                            return (Some(vm.name.clone()), false);
                        }
                        other = true;
                    }
                }
            }
        }
        (None, other)
    }

    /// Validates a whole-NIC PUT body against the NIC `idx` and the rest of the world, in
    /// ARM's order, and returns the NIC's new writable state.
    pub fn nic_spec_from_body(&self, idx: usize, body: &Value) -> Result<NicSpec, ArmError> {
        let nic = &self.nics[idx];
        let nic_id = self.ids.nic(&nic.name);
        let Value::Object(body) = body else {
            return Err(ArmError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: expected a JSON \
                 object.",
            ));
        };
        check_location(body, &self.ids.location, &nic_id)?;
        let tags = parse_tags(body.get("tags"))?;
        let empty = Map::new();
        let props = match body.get("properties") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    "The request content was invalid: 'properties' must be an object.",
                ))
            }
        };
        let raw_configs: &[Value] =
            match props.get("ipConfigurations") {
                None | Some(Value::Null) => &[],
                Some(Value::Array(a)) => a,
                Some(_) => return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    "The request content was invalid: 'properties.ipConfigurations' must be an \
                     array.",
                )),
            };
        if raw_configs.is_empty() {
            return Err(ArmError::bad_request(
                "InvalidIPConfigCount",
                format!("Network interface {nic_id} must have one or more IP configurations."),
            ));
        }

        let nsg = match ref_id(
            props.get("networkSecurityGroup"),
            "properties.networkSecurityGroup",
        )? {
            None => None,
            Some(id) => match self.ids.parse_ref(id, "Microsoft.Network") {
                Err(RefError::Malformed) => {
                    return Err(linked_invalid(id, "properties.networkSecurityGroup.id"))
                }
                Ok(p) if p.len() == 1 && eq(&p[0].0, "networkSecurityGroups") => {
                    match self.nsg(&p[0].1) {
                        Some(g) => Some(g.name.clone()),
                        None => return Err(invalid_reference(id, &nic_id)),
                    }
                }
                _ => return Err(invalid_reference(id, &nic_id)),
            },
        };
        let dns =
            match props.get("dnsSettings") {
                None | Some(Value::Null) => Map::from_iter([("dnsServers".to_string(), json!([]))]),
                Some(Value::Object(d)) => {
                    let mut m: Map<String, Value> = d
                        .iter()
                        .filter(|(k, _)| {
                            !contains_ci(
                                &[
                                    "appliedDnsServers",
                                    "internalFqdn",
                                    "internalDomainNameSuffix",
                                ],
                                k,
                            )
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    m.entry("dnsServers").or_insert(json!([]));
                    m
                }
                Some(_) => return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    "The request content was invalid: 'properties.dnsSettings' must be an object.",
                )),
            };

        // Structure of each ipConfiguration.
        let mut configs: Vec<(IpConfig, Option<Ipv4Addr>)> = Vec::new();
        for (i, raw) in raw_configs.iter().enumerate() {
            let path = format!("properties.ipConfigurations[{i}]");
            let Value::Object(rc) = raw else {
                return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    format!("The request content was invalid: '{path}' must be an object."),
                ));
            };
            let name = match rc.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => {
                    return Err(ArmError::bad_request(
                        "InvalidRequestFormat",
                        format!("Cannot parse the request: '{path}.name' is required."),
                    ))
                }
            };
            if configs.iter().any(|(c, _)| eq(&c.name, &name)) {
                return Err(ArmError::bad_request(
                    "InvalidRequestFormat",
                    format!("Network interface {nic_id} has two IP configurations named '{name}'."),
                ));
            }
            let own_id = self.ids.ip_config(&nic.name, &name);
            if let Some(Value::String(id)) = rc.get("id") {
                // Copying another NIC's ipConfiguration object (its `id` included) is the
                // classic mistake of a move; real ARM's treatment is unconfirmed, so refuse.
                if !eq(id, &own_id) {
                    return Err(ArmError::bad_request(
                        "InvalidRequestFormat",
                        format!(
                            "IP configuration '{name}' of network interface {nic_id} carries \
                             the id {id} of another resource; build a fresh ipConfiguration \
                             without 'id' (the simulator refuses foreign ids)."
                        ),
                    ));
                }
            }
            let empty = Map::new();
            let cp = match rc.get("properties") {
                None | Some(Value::Null) => &empty,
                Some(Value::Object(p)) => p,
                Some(_) => {
                    return Err(ArmError::bad_request(
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid: '{path}.properties' must be an \
                             object."
                        ),
                    ))
                }
            };
            let version = match cp.get("privateIPAddressVersion") {
                None | Some(Value::Null) => "IPv4".to_string(),
                Some(Value::String(v)) => v.clone(),
                Some(_) => "?".into(),
            };
            if !eq(&version, "IPv4") {
                return Err(ArmError::bad_request(
                    "InvalidRequestFormat",
                    format!(
                        "IP configuration {own_id}: privateIPAddressVersion {version:?} is not \
                         supported by the simulator (IPv4 only)."
                    ),
                ));
            }
            let allocation = match cp.get("privateIPAllocationMethod") {
                None | Some(Value::Null) => Allocation::Dynamic,
                Some(Value::String(s)) if eq(s, "Static") => Allocation::Static,
                Some(Value::String(s)) if eq(s, "Dynamic") => Allocation::Dynamic,
                Some(other) => {
                    return Err(ArmError::bad_request(
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid: '{path}.properties.\
                             privateIPAllocationMethod' {other} is not Static or Dynamic."
                        ),
                    ))
                }
            };
            let address = match cp.get("privateIPAddress") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => match s.parse::<Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        return Err(ArmError::bad_request(
                            "PrivateIPAddressInvalid",
                            format!(
                                "The private IP address {s} of IP configuration {own_id} is \
                                 not a valid IPv4 address."
                            ),
                        ))
                    }
                },
                Some(_) => {
                    return Err(ArmError::bad_request(
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid: '{path}.properties.\
                             privateIPAddress' must be a string."
                        ),
                    ))
                }
            };
            if allocation == Allocation::Static && address.is_none() {
                return Err(ArmError::bad_request(
                    "InvalidRequestFormat",
                    format!(
                        "IP configuration {own_id} has privateIPAllocationMethod Static but no \
                         privateIPAddress."
                    ),
                ));
            }
            let subnet_path = format!("{path}.properties.subnet.id");
            let (vnet, subnet) =
                match ref_id(cp.get("subnet"), &format!("{path}.properties.subnet"))? {
                    None => {
                        return Err(ArmError::bad_request(
                            "InvalidRequestFormat",
                            format!("IP configuration {own_id} must reference a subnet."),
                        ))
                    }
                    Some(id) => match self.ids.parse_ref(id, "Microsoft.Network") {
                        Err(RefError::Malformed) => return Err(linked_invalid(id, &subnet_path)),
                        Ok(p)
                            if p.len() == 2
                                && eq(&p[0].0, "virtualNetworks")
                                && eq(&p[1].0, "subnets") =>
                        {
                            let vnet = self.vnet(&p[0].1);
                            let sn =
                                vnet.and_then(|v| v.subnets.iter().find(|s| eq(&s.name, &p[1].1)));
                            match (vnet, sn) {
                                (Some(v), Some(s)) => (v.name.clone(), s.name.clone()),
                                _ => return Err(invalid_reference(id, &nic_id)),
                            }
                        }
                        _ => return Err(invalid_reference(id, &nic_id)),
                    },
                };
            let pip_path = format!("{path}.properties.publicIPAddress");
            let public_ip = match ref_id(cp.get("publicIPAddress"), &pip_path)? {
                None => None,
                Some(id) => match self.ids.parse_ref(id, "Microsoft.Network") {
                    Err(RefError::Malformed) => {
                        return Err(linked_invalid(id, &format!("{pip_path}.id")))
                    }
                    Ok(p) if p.len() == 1 && eq(&p[0].0, "publicIPAddresses") => {
                        match self.pip_index(&p[0].1) {
                            Some(i) => Some(self.pips[i].name.clone()),
                            None => return Err(invalid_reference(id, &nic_id)),
                        }
                    }
                    _ => return Err(invalid_reference(id, &nic_id)),
                },
            };
            let primary = match cp.get("primary") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ArmError::bad_request(
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid: '{path}.properties.primary' must \
                             be a boolean."
                        ),
                    ))
                }
            };
            configs.push((
                IpConfig {
                    name,
                    private_ip: address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    allocation,
                    vnet,
                    subnet,
                    primary,
                    public_ip,
                    extra: extras(cp, IP_CONFIG_READ_ONLY, IP_CONFIG_MODELLED),
                },
                address,
            ));
        }

        // Exactly one primary; a single ipConfiguration is the primary one.
        let primaries = configs.iter().filter(|(c, _)| c.primary).count();
        if configs.len() == 1 {
            configs[0].0.primary = true;
        } else if primaries == 0 {
            return Err(ArmError::bad_request(
                "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
                format!(
                    "Network Interface {nic_id} specifies multiple IPConfigurations but none of \
                     the IPConfigurations is specified as Primary."
                ),
            ));
        } else if primaries > 1 {
            return Err(ArmError::bad_request(
                "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
                format!(
                    "Network Interface {nic_id} specifies {primaries} IPConfigurations as \
                     Primary; exactly one must be."
                ),
            ));
        }
        // The primary ipConfiguration can be neither removed nor renamed.
        if let Some(old) = nic.spec.ip_configs.iter().find(|c| c.primary) {
            let kept = configs
                .iter()
                .any(|(c, _)| c.primary && eq(&c.name, &old.name));
            if !kept {
                return Err(ArmError::bad_request(
                    "IpConfigDeleteNotSupported",
                    format!(
                        "IP Configuration {} cannot be deleted. Deletion and renaming of primary \
                         IP Configuration is not supported",
                        old.name
                    ),
                ));
            }
        }
        let vnet0 = configs[0].0.vnet.clone();
        if configs.iter().any(|(c, _)| !eq(&c.vnet, &vnet0)) {
            return Err(ArmError::bad_request(
                "IpConfigurationsOnSameNicCannotUseDifferentVnets",
                format!(
                    "IP configurations of network interface {nic_id} reference subnets of \
                     different virtual networks."
                ),
            ));
        }

        // Addresses inside their subnet, outside the reserved ones.
        for (c, address) in &configs {
            let Some(ip) = address else { continue };
            let prefix = self
                .subnet_prefix(&c.vnet, &c.subnet)
                .expect("resolved above");
            let cfg_id = self.ids.ip_config(&nic.name, &c.name);
            let subnet_id = self.ids.subnet(&c.vnet, &c.subnet);
            if !prefix.contains(ip) {
                return Err(ArmError::bad_request(
                    "PrivateIPAddressNotInSubnet",
                    format!(
                        "IP configuration {cfg_id} is using the private IP address {ip} which \
                         does not belong to the address prefix {prefix} of subnet {subnet_id}."
                    ),
                ));
            }
            if is_reserved(&prefix, *ip) {
                return Err(ArmError::bad_request(
                    "PrivateIPAddressInReservedRange",
                    format!(
                        "IP configuration {cfg_id} is using the private IP address {ip} which \
                         falls in the reserved range of subnet {subnet_id}."
                    ),
                ));
            }
        }

        // A public IP held (or being attached, or still being released) by another NIC.
        for (c, _) in &configs {
            let Some(pip) = &c.public_ip else { continue };
            let other = self.nics.iter().enumerate().find_map(|(j, n)| {
                if j == idx {
                    return None;
                }
                n.applied
                    .ip_configs
                    .iter()
                    .chain(n.spec.ip_configs.iter())
                    .find(|oc| oc.public_ip.as_deref().is_some_and(|p| eq(p, pip)))
                    .map(|oc| self.ids.ip_config(&n.name, &oc.name))
            });
            if let Some(other) = other {
                return Err(ArmError::bad_request(
                    "PublicIPAddressInUse",
                    format!(
                        "Resource {} is referencing public IP address {} that is already \
                         allocated to resource {other}.",
                        self.ids.ip_config(&nic.name, &c.name),
                        self.ids.pip(pip)
                    ),
                ));
            }
        }

        // A private address held (or still being released) by another NIC of the same vnet, or
        // given twice in this body.
        for (i, (c, address)) in configs.iter().enumerate() {
            let Some(ip) = address else { continue };
            let cfg_id = self.ids.ip_config(&nic.name, &c.name);
            let twice = configs[..i]
                .iter()
                .find(|(_, a)| *a == Some(*ip))
                .map(|(oc, _)| self.ids.ip_config(&nic.name, &oc.name));
            let other = twice.or_else(|| {
                self.nics.iter().enumerate().find_map(|(j, n)| {
                    if j == idx {
                        return None;
                    }
                    n.applied
                        .ip_configs
                        .iter()
                        .chain(n.spec.ip_configs.iter())
                        .find(|oc| oc.private_ip == *ip && eq(&oc.vnet, &c.vnet))
                        .map(|oc| self.ids.ip_config(&n.name, &oc.name))
                })
            });
            if let Some(other) = other {
                return Err(ArmError::bad_request(
                    "PrivateIPAddressInUse",
                    format!(
                        "IP configuration {cfg_id} is using the same private IP address {ip} as \
                         IP configuration {other}."
                    ),
                ));
            }
        }

        // The same public IP twice in one body.
        for (i, (c, _)) in configs.iter().enumerate() {
            let Some(pip) = &c.public_ip else { continue };
            if configs[..i]
                .iter()
                .any(|(oc, _)| oc.public_ip.as_deref().is_some_and(|p| eq(p, pip)))
            {
                return Err(ArmError::bad_request(
                    "PublicIPReferencedByMultipleIPConfigs",
                    format!(
                        "Public IP address {} is referenced by multiple ipconfigs in resource \
                         {nic_id}.",
                        self.ids.pip(pip)
                    ),
                ));
            }
        }

        // Dynamic addresses: a config keeps its current one, a new config gets the first free.
        let mut taken: Vec<Ipv4Addr> = configs.iter().filter_map(|(_, a)| *a).collect();
        let mut out = Vec::with_capacity(configs.len());
        for (mut c, address) in configs {
            if address.is_none() {
                let current = nic
                    .spec
                    .ip_configs
                    .iter()
                    .find(|oc| eq(&oc.name, &c.name) && eq(&oc.subnet, &c.subnet))
                    .map(|oc| oc.private_ip)
                    .filter(|ip| !taken.contains(ip));
                let ip = match current {
                    Some(ip) => ip,
                    None => self
                        .free_address(&c.vnet, &c.subnet, &taken)
                        .ok_or_else(|| {
                            ArmError::bad_request(
                                "SubnetIsFull",
                                format!(
                                    "Subnet {} has no free address left.",
                                    self.ids.subnet(&c.vnet, &c.subnet)
                                ),
                            )
                        })?,
                };
                c.private_ip = ip;
            }
            taken.push(c.private_ip);
            out.push(c);
        }

        Ok(NicSpec {
            tags,
            nsg,
            ip_forwarding: opt_bool(props, "enableIPForwarding")?,
            accelerated: opt_bool(props, "enableAcceleratedNetworking")?,
            dns,
            extra: extras(props, NIC_READ_ONLY, NIC_MODELLED),
            ip_configs: out,
        })
    }

    /// The first usable address of a subnet that no NIC uses (in either state) and `taken`
    /// does not list.
    fn free_address(&self, vnet: &str, subnet: &str, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let prefix = self.subnet_prefix(vnet, subnet)?;
        let used = |ip: Ipv4Addr| {
            taken.contains(&ip)
                || self.nics.iter().any(|n| {
                    n.applied
                        .ip_configs
                        .iter()
                        .chain(n.spec.ip_configs.iter())
                        .any(|c| c.private_ip == ip && eq(&c.vnet, vnet))
                })
        };
        prefix
            .hosts()
            .find(|ip| !is_reserved(&prefix, *ip) && !used(*ip))
    }

    /// Validates a whole public-IP PUT body: the SKU, zones, allocation method and address
    /// cannot change; tags, idle timeout, DNS settings and IP tags are replaced.
    pub fn pip_spec_from_body(&self, idx: usize, body: &Value) -> Result<PipSpec, ArmError> {
        let pip = &self.pips[idx];
        let id = self.ids.pip(&pip.name);
        let Value::Object(body) = body else {
            return Err(ArmError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: expected a JSON \
                 object.",
            ));
        };
        check_location(body, &self.ids.location, &id)?;
        let tags = parse_tags(body.get("tags"))?;
        // An omitted SKU means Basic, which would change the resource (and is retired).
        let sku = body
            .get("sku")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("Basic");
        if !eq(sku, "Standard") {
            return Err(ArmError::bad_request(
                "PublicIPAddressSkuCannotBeChanged",
                format!(
                    "The SKU of public IP address {id} cannot be changed from Standard to {sku}."
                ),
            ));
        }
        let zones: Vec<String> = match body.get("zones") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|z| z.as_str().unwrap_or_default().to_string())
                .collect(),
            Some(_) => vec!["?".into()],
        };
        let mut a = zones.clone();
        let mut b = pip.zones.clone();
        a.sort();
        b.sort();
        if a != b {
            return Err(ArmError::bad_request(
                "ResourceAvailabilityZonesCannotBeModified",
                format!("The zones of public IP address {id} cannot be changed."),
            ));
        }
        let empty = Map::new();
        let props = match body.get("properties") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    "The request content was invalid: 'properties' must be an object.",
                ))
            }
        };
        let method = props
            .get("publicIPAllocationMethod")
            .and_then(Value::as_str)
            .unwrap_or("Dynamic");
        if !eq(method, "Static") {
            return Err(ArmError::bad_request(
                "StandardSkuPublicIPAddressesMustBeStatic",
                format!(
                    "Standard sku publicIp {id} must have AllocationMethod set to Static \
                     (got {method})."
                ),
            ));
        }
        if let Some(v) = props.get("publicIPAddressVersion").and_then(Value::as_str) {
            if !eq(v, "IPv4") {
                return Err(ArmError::bad_request(
                    "InvalidRequestFormat",
                    format!("The address version of public IP address {id} cannot be changed."),
                ));
            }
        }
        match props.get("ipAddress") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.parse::<Ipv4Addr>().ok() == Some(pip.ip) => {}
            Some(other) => {
                return Err(ArmError::bad_request(
                    "InvalidRequestFormat",
                    format!(
                        "The address of static public IP address {id} cannot be changed (to \
                         {other})."
                    ),
                ))
            }
        }
        let idle_timeout = match props.get("idleTimeoutInMinutes") {
            None | Some(Value::Null) => 4,
            Some(v) => match v.as_u64() {
                Some(n) if (4..=30).contains(&n) => n as u32,
                _ => {
                    return Err(ArmError::bad_request(
                        "PublicIPIdleTimeoutIsOutOfRange",
                        format!(
                            "The idle timeout of public IP address {id} must be between 4 and \
                             30 minutes."
                        ),
                    ))
                }
            },
        };
        Ok(PipSpec {
            tags,
            idle_timeout,
            dns: props.get("dnsSettings").filter(|d| !d.is_null()).cloned(),
            ip_tags: props
                .get("ipTags")
                .filter(|d| !d.is_null())
                .cloned()
                .unwrap_or(json!([])),
            extra: extras(props, PIP_READ_ONLY, PIP_MODELLED),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::from_seed(&AzureSeed::example())
    }

    #[test]
    fn resource_ids_parse_case_insensitively() {
        let w = world();
        let id = w.ids.subnet("vnet-exoip", "default").to_ascii_lowercase();
        let p = w.ids.parse_ref(&id, "Microsoft.Network").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].1, "default");
        assert_eq!(
            w.ids.parse_ref("pip-vip", "Microsoft.Network"),
            Err(RefError::Malformed)
        );
        let elsewhere = w.ids.pip("pip-vip").replace("rg-exoip", "rg-other");
        assert_eq!(
            w.ids.parse_ref(&elsewhere, "Microsoft.Network"),
            Err(RefError::NotFound)
        );
    }

    #[test]
    fn holdings_follow_the_applied_state() {
        let w = world();
        let h = w.holdings();
        let pip = &h[&"203.0.113.10".parse::<IpAddr>().unwrap()];
        assert_eq!(pip.holders.len(), 1);
        assert_eq!(pip.holders[0].vm, "lb1");
        assert_eq!(pip.holders[0].private_ip.to_string(), "192.0.2.11");
        let vip = &h[&"192.0.2.100".parse::<IpAddr>().unwrap()];
        assert_eq!(vip.holders[0].ip_config, "vip");
        assert!(!h.contains_key(&"192.0.2.12".parse::<IpAddr>().unwrap()));
        assert_eq!(
            w.vm_by_primary_address("192.0.2.12".parse().unwrap()),
            (Some("lb2".into()), false)
        );
        assert_eq!(
            w.vm_by_primary_address("192.0.2.100".parse().unwrap()),
            (None, true)
        );
    }

    #[test]
    fn dynamic_addresses_skip_reserved_and_used_ones() {
        let w = world();
        let ip = w.free_address("vnet-exoip", "default", &[]).unwrap();
        assert_eq!(ip.to_string(), "192.0.2.4");
        let ip = w
            .free_address("vnet-exoip", "default", &["192.0.2.4".parse().unwrap()])
            .unwrap();
        assert_eq!(ip.to_string(), "192.0.2.5");
    }
}

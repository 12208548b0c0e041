//! Azure provider: Entra ID or managed-identity tokens, IMDS for "who am I", and ARM
//! Microsoft.Network calls that float an address between VMs (shared/clouds/azure.md).
//!
//! Three modes (azure.md, introduction):
//! * **public-ip** (default): a Standard public IP moves between NIC ipConfigurations;
//! * **secondary-ip**: a secondary ipConfiguration (private address, and its public IP if any)
//!   is removed from the holder's NIC and recreated on ours;
//! * **lb-probe**: a load balancer with floating IP sends traffic to whoever answers its health
//!   probe; the agent only opens or closes the probe listener, so no ARM call is made at failover
//!   (the claim record is written afterwards, off the critical path).
//!
//! A move is always two whole-NIC PUTs, detach first, each with `If-Match` and each waited for
//! through its `Azure-AsyncOperation` on our own fast schedule. The NIC bodies stay JSON values
//! from GET to PUT (see [`arm`]) so that no property is lost on the way.
//!
//! The claim record (`docs/arbiter.md`) is a pair of tags, written with `If-Match` on the etag
//! of the read that checked the record before ([`Arbiter::CompareAndSwap`]): in public-ip mode
//! `exoip-epoch`/`exoip-holder` on the public IP, in a whole-resource PUT of it before the
//! address moves; in secondary-ip mode `exoip-epoch-<ip>`/`exoip-holder-<ip>` on the NIC that
//! takes the ipConfiguration, in the PUT that adds it. lb-probe mode has no resource that stands
//! for the holder (the load balancer follows the probe, and its backends are all equal), so each
//! claimant writes the same `exoip-epoch-<ip>`/`exoip-holder-<ip>` tags on its own primary NIC
//! and the newest record over all NICs is the one in force (`newest_nic_record`); a re-read
//! after the write tells a lost race ([`Arbiter::WriteThenVerify`]).

pub mod arm;
mod auth;
pub mod imds;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, IF_MATCH};
use serde_json::Value;

use self::arm::{
    config_ip, config_name, config_public_ip, etag, find_config, ip_configs, last_segment,
    nic_of_ip_config, nic_vm, primary_config, same_id, tag, text, Poll, SecondaryTemplate, State,
};
use self::auth::{Proof, Token, TokenCache, TokenSource, IDENTITY_API_VERSION};
use self::imds::{Imds, InstanceMetadata};
use crate::exoscale::{check_claim_epoch, describe};
use crate::http::{HttpClient, HttpOptions, HttpResponse, Method, RequestSpec, RetryPolicy, Url};
use crate::{
    AddressState, Arbiter, ClaimRecord, Error, Instance, InstanceId, Provider, Result, Secret,
};

pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// A long-deployed Network API version: the newest ones may be missing in sovereign clouds and
/// Azure Stack (azure.md §3.1).
pub const DEFAULT_API_VERSION: &str = "2024-05-01";

/// The tags that hold the claim record on a public IP (public-ip mode).
pub const EPOCH_TAG: &str = "exoip-epoch";
pub const HOLDER_TAG: &str = "exoip-holder";

/// Secondary-ip mode: the NIC tags that hold the claim record of `ip`, e.g.
/// `exoip-epoch-192.0.2.100` (an IPv6 address with `-` for `:`). Named after the address
/// because one NIC may carry several floating addresses.
pub fn secondary_record_tags(ip: IpAddr) -> (String, String) {
    let address = ip.to_string().replace(':', "-");
    (
        format!("{EPOCH_TAG}-{address}"),
        format!("{HOLDER_TAG}-{address}"),
    )
}

/// The claim record of two tags; `None` when absent, incomplete or malformed (edited by hand):
/// a claim then writes a well-formed one over it.
pub(crate) fn record_from_tags(epoch: Option<&str>, holder: Option<&str>) -> Option<ClaimRecord> {
    let epoch = epoch?.trim().parse::<u64>().ok()?;
    let holder = holder?.trim();
    arm::check_name("holder", holder).ok()?;
    Some(ClaimRecord {
        epoch,
        holder: InstanceId(holder.to_string()),
    })
}

fn pip_record(pip: &Value) -> Option<ClaimRecord> {
    record_from_tags(tag(pip, EPOCH_TAG), tag(pip, HOLDER_TAG))
}

/// The record in force among the records found on NICs, each with the VM of the NIC carrying
/// it: the greatest epoch; of equal epochs (two claims made at once), the holder whose name is
/// the smaller case-insensitively, so that every reader picks the same one. A record counts only
/// on a NIC of the VM it names: a tag copied onto another VM's NIC (a cloned NIC, a hand edit)
/// is no claim of that VM.
pub(crate) fn newest_nic_record<'a>(
    found: impl IntoIterator<Item = (Option<&'a str>, Option<ClaimRecord>)>,
) -> Option<ClaimRecord> {
    found
        .into_iter()
        .filter_map(|(vm, record)| {
            let record = record?;
            vm.is_some_and(|vm| vm.eq_ignore_ascii_case(&record.holder.0))
                .then_some(record)
        })
        .max_by(|a, b| {
            a.epoch
                .cmp(&b.epoch)
                // Reversed: the smaller name is the newer record. The exact spelling last, so
                // that even names equal but for case order the same way for everyone.
                .then_with(|| {
                    b.holder
                        .0
                        .to_ascii_lowercase()
                        .cmp(&a.holder.0.to_ascii_lowercase())
                })
                .then_with(|| b.holder.0.cmp(&a.holder.0))
        })
}

/// The tags a claim writes.
fn record_tags(keys: (String, String), record: &ClaimRecord) -> [(String, String); 2] {
    [
        (keys.0, record.epoch.to_string()),
        (keys.1, record.holder.0.clone()),
    ]
}

/// A claim whose `seen` is not the record in force changes nothing.
fn check_seen(ip: IpAddr, found: Option<&ClaimRecord>, seen: Option<u64>) -> Result<()> {
    if found.map(|r| r.epoch) == seen {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "the claim record of {ip} is {}, not epoch {}: someone claimed it since",
        describe(found),
        seen.map_or("none".to_string(), |e| e.to_string()),
    )))
}

/// Pages of a list followed at most: a server that keeps sending `nextLink` must not keep us.
const MAX_PAGES: usize = 100;
/// A flaky poll is not a failed operation; this many in a row are.
const POLL_MAX_ERRORS: u32 = 5;
/// lb-probe mode: times a claim checks the record and writes it, when its PUT meets a NIC that
/// changed since it was listed (412: someone edited it meanwhile). Then it is a conflict.
const LB_PROBE_CLAIM_ATTEMPTS: u32 = 3;

/// How the address floats (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AzureMode {
    #[default]
    PublicIp,
    SecondaryIp,
    LbProbe,
}

impl AzureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AzureMode::PublicIp => "public-ip",
            AzureMode::SecondaryIp => "secondary-ip",
            AzureMode::LbProbe => "lb-probe",
        }
    }
}

impl fmt::Display for AzureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AzureMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public-ip" => Ok(AzureMode::PublicIp),
            "secondary-ip" => Ok(AzureMode::SecondaryIp),
            "lb-probe" => Ok(AzureMode::LbProbe),
            _ => Err(Error::Invalid(format!(
                "unknown Azure mode {s:?} (expected public-ip, secondary-ip or lb-probe)"
            ))),
        }
    }
}

/// Parses `--azure-peer-tag key=value`.
pub fn parse_peer_tag(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(Error::Invalid(format!(
            "peer tag {text:?} must be key=value"
        ))),
    }
}

/// Who exoip is towards Entra ID (azure.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureCredentials {
    /// A service principal with a client secret (client-credentials grant).
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret: Secret,
    },
    /// A service principal with a federated token (workload identity), read from a file for
    /// every token request because it is rotated.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    /// The VM's managed identity through IMDS; `client_id` selects a user-assigned one.
    ManagedIdentity { client_id: Option<String> },
}

/// The endpoints of one Azure cloud (azure.md §1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AzureCloud {
    pub authority_host: &'static str,
    pub arm_endpoint: &'static str,
    /// The ARM App ID URI: `{audience}/.default` is the token scope.
    pub arm_audience: &'static str,
}

pub const PUBLIC_CLOUD: AzureCloud = AzureCloud {
    authority_host: DEFAULT_AUTHORITY_HOST,
    arm_endpoint: DEFAULT_ARM_ENDPOINT,
    arm_audience: "https://management.azure.com",
};
pub const US_GOVERNMENT_CLOUD: AzureCloud = AzureCloud {
    authority_host: "https://login.microsoftonline.us",
    arm_endpoint: "https://management.usgovcloudapi.net",
    arm_audience: "https://management.core.usgovcloudapi.net",
};
pub const CHINA_CLOUD: AzureCloud = AzureCloud {
    authority_host: "https://login.chinacloudapi.cn",
    arm_endpoint: "https://management.chinacloudapi.cn",
    arm_audience: "https://management.chinacloudapi.cn",
};

impl AzureCloud {
    /// By Terraform's `ARM_ENVIRONMENT` values or IMDS `compute.azEnvironment` names.
    pub fn by_name(name: &str) -> Option<AzureCloud> {
        match name.trim().to_ascii_lowercase().as_str() {
            "public" | "azurepubliccloud" | "azurecloud" => Some(PUBLIC_CLOUD),
            "usgovernment" | "azureusgovernment" | "azureusgovernmentcloud" => {
                Some(US_GOVERNMENT_CLOUD)
            }
            "china" | "azurechinacloud" => Some(CHINA_CLOUD),
            _ => None,
        }
    }

    /// The token audience for an ARM endpoint: a known cloud's, else the public one (as the
    /// Azure SDKs do when only the endpoint is overridden, e.g. for an emulator).
    pub fn audience_for(arm_endpoint: &str) -> &'static str {
        let host = Url::parse(arm_endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        [US_GOVERNMENT_CLOUD, CHINA_CLOUD]
            .into_iter()
            .find(|c| {
                Url::parse(c.arm_endpoint)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    == host
            })
            .unwrap_or(PUBLIC_CLOUD)
            .arm_audience
    }
}

/// Everything the Azure provider needs. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    pub credentials: AzureCredentials,
    /// Subscription id; from IMDS `compute.subscriptionId` when `None`.
    pub subscription: Option<String>,
    /// Resource group of the NICs and public IPs; from IMDS `compute.resourceGroupName`.
    pub resource_group: Option<String>,
    /// This VM's name (`-i`); from IMDS `compute.name`.
    pub vm_name: Option<String>,
    /// ARM base URL, e.g. `https://management.azure.com`.
    pub arm_endpoint: String,
    /// Token audience (App ID URI of ARM); `None`: derived from `arm_endpoint`.
    pub arm_audience: Option<String>,
    /// Entra ID, e.g. `https://login.microsoftonline.com`.
    pub authority_host: String,
    /// IMDS base URL for instance metadata (and managed-identity tokens unless
    /// `identity_url` is set).
    pub metadata_url: String,
    /// Where managed-identity tokens come from (`AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    pub identity_url: Option<String>,
    /// Microsoft.Network `api-version`.
    pub api_version: String,
    pub mode: AzureMode,
    /// The public IP resource to move (`--azure-public-ip`); else found by address.
    pub public_ip_name: Option<String>,
    /// The ipConfiguration to put the public IP on (`--azure-ip-config`); else the primary
    /// one. In secondary-ip mode: the name of a secondary ipConfiguration created from scratch.
    pub ip_config: Option<String>,
    /// Peers are the NICs carrying this tag (`--azure-peer-tag key=value`) instead of the
    /// NICs of the network security group named by the peer group.
    pub peer_tag: Option<(String, String)>,
    /// Bound of one HTTP attempt.
    pub request_timeout: Duration,
    /// Bound of one attach or detach, both PUTs and the operation polling included.
    pub operation_timeout: Duration,
    /// Operation polling: first look after `poll_first`, doubling up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// Extra CA certificates (PEM) to trust for Entra ID and ARM.
    pub ca_file: Option<PathBuf>,
    /// Retries of ARM and Entra ID requests.
    pub retry: RetryPolicy,
    /// Retries of IMDS requests (it asks for patience: azure.md §1.2).
    pub metadata_retry: RetryPolicy,
}

impl AzureSettings {
    /// Defaults for everything but the credentials: public cloud, everything else from IMDS.
    pub fn new(credentials: AzureCredentials) -> Self {
        AzureSettings {
            credentials,
            subscription: None,
            resource_group: None,
            vm_name: None,
            arm_endpoint: DEFAULT_ARM_ENDPOINT.to_string(),
            arm_audience: None,
            authority_host: DEFAULT_AUTHORITY_HOST.to_string(),
            metadata_url: DEFAULT_METADATA_URL.to_string(),
            identity_url: None,
            api_version: DEFAULT_API_VERSION.to_string(),
            mode: AzureMode::PublicIp,
            public_ip_name: None,
            ip_config: None,
            peer_tag: None,
            request_timeout: Duration::from_secs(10),
            // Moves take tens of seconds, sometimes minutes (azure.md §9).
            operation_timeout: Duration::from_secs(180),
            poll_first: Duration::from_millis(250),
            poll_max: Duration::from_secs(2),
            ca_file: None,
            retry: RetryPolicy::default(),
            metadata_retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(16),
                max_elapsed: Duration::from_secs(30),
            },
        }
    }

    /// From the environment the Azure way (azure.md §1.4): `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET` (or Terraform's `ARM_*`) for a service principal,
    /// `AZURE_FEDERATED_TOKEN_FILE` for workload identity, else the managed identity
    /// (user-assigned when `AZURE_CLIENT_ID` is set; `ARM_USE_MSI=true` forces it);
    /// `AZURE_SUBSCRIPTION_ID`, `AZURE_AUTHORITY_HOST`, `ARM_ENVIRONMENT`,
    /// `EXOIP_AZURE_ARM_ENDPOINT` and `AZURE_POD_IDENTITY_AUTHORITY_HOST` (IMDS tokens).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_env_and_secret(env, None)
    }

    /// As [`AzureSettings::from_env`], with a client secret from elsewhere
    /// (`--azure-client-secret-file`): it makes the credentials a service principal whatever
    /// `AZURE_CLIENT_SECRET` or `ARM_USE_MSI` say, with the tenant and client ids from the
    /// environment. `source` names it in messages (e.g. "the client secret file …").
    pub fn from_env_with_secret(
        env: &dyn Fn(&str) -> Option<String>,
        client_secret: Secret,
        source: &str,
    ) -> Result<Self> {
        if client_secret.expose().trim().is_empty() {
            return Err(Error::Invalid(format!("{source} is empty")));
        }
        Self::from_env_and_secret(env, Some((client_secret, source)))
    }

    fn from_env_and_secret(
        env: &dyn Fn(&str) -> Option<String>,
        explicit_secret: Option<(Secret, &str)>,
    ) -> Result<Self> {
        let get = |names: &[&'static str]| {
            names.iter().find_map(|name| {
                env(name)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|v| (*name, v))
            })
        };
        let cloud = match get(&["ARM_ENVIRONMENT"]) {
            None => PUBLIC_CLOUD,
            Some((name, value)) => AzureCloud::by_name(&value).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}={value:?} is not a known Azure cloud (public, usgovernment, china)"
                ))
            })?,
        };
        let use_msi = match get(&["ARM_USE_MSI"]) {
            None => false,
            Some((name, value)) => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(Error::Invalid(format!(
                        "{name}={value:?} is not a boolean (true or false)"
                    )))
                }
            },
        };
        let tenant = get(&["AZURE_TENANT_ID", "ARM_TENANT_ID"]);
        let client_id = get(&["AZURE_CLIENT_ID", "ARM_CLIENT_ID"]);
        // The secret's value is never put in a message, only its variable's name.
        let explicit = explicit_secret.is_some();
        let secret = match explicit_secret {
            Some((secret, source)) => Some((source.to_string(), secret)),
            None => get(&["AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET"])
                .map(|(name, value)| (name.to_string(), Secret::new(value))),
        };
        let token_file = get(&["AZURE_FEDERATED_TOKEN_FILE"]);
        let certificate = get(&[
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "ARM_CLIENT_CERTIFICATE_PATH",
        ]);
        let require = |what: &str, found: Option<(&str, String)>, given: &str| {
            found.map(|(_, v)| v).ok_or_else(|| {
                Error::Invalid(format!(
                    "{given} is set but {what} is not: a service principal needs the tenant id, the client id and a credential"
                ))
            })
        };
        let credentials = if use_msi && !explicit {
            AzureCredentials::ManagedIdentity {
                client_id: client_id.map(|(_, v)| v),
            }
        } else if let Some((given, value)) = secret {
            AzureCredentials::ClientSecret {
                tenant_id: require("AZURE_TENANT_ID (or ARM_TENANT_ID)", tenant, &given)?,
                client_id: require("AZURE_CLIENT_ID (or ARM_CLIENT_ID)", client_id, &given)?,
                client_secret: value,
            }
        } else if let Some((given, file)) = token_file {
            AzureCredentials::WorkloadIdentity {
                tenant_id: require("AZURE_TENANT_ID (or ARM_TENANT_ID)", tenant, given)?,
                client_id: require("AZURE_CLIENT_ID (or ARM_CLIENT_ID)", client_id, given)?,
                token_file: PathBuf::from(file),
            }
        } else if let Some((given, _)) = certificate {
            return Err(Error::Invalid(format!(
                "{given} is set, but certificate credentials are not supported: use AZURE_CLIENT_SECRET, a federated token or a managed identity"
            )));
        } else {
            AzureCredentials::ManagedIdentity {
                client_id: client_id.map(|(_, v)| v),
            }
        };
        let mut settings = AzureSettings::new(credentials);
        settings.subscription =
            get(&["AZURE_SUBSCRIPTION_ID", "ARM_SUBSCRIPTION_ID"]).map(|(_, v)| v);
        settings.authority_host = get(&["AZURE_AUTHORITY_HOST"])
            .map(|(_, v)| v)
            .unwrap_or_else(|| cloud.authority_host.to_string());
        settings.arm_endpoint = get(&["EXOIP_AZURE_ARM_ENDPOINT"])
            .map(|(_, v)| v)
            .unwrap_or_else(|| cloud.arm_endpoint.to_string());
        if cloud != PUBLIC_CLOUD {
            settings.arm_audience = Some(cloud.arm_audience.to_string());
        }
        settings.identity_url = get(&["AZURE_POD_IDENTITY_AUTHORITY_HOST"]).map(|(_, v)| v);
        // Report malformed values now, naming the variable, rather than at first use.
        for (name, value, default_scheme) in [
            (
                "AZURE_AUTHORITY_HOST",
                Some(&settings.authority_host),
                "https",
            ),
            (
                "EXOIP_AZURE_ARM_ENDPOINT",
                Some(&settings.arm_endpoint),
                "https",
            ),
            (
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                settings.identity_url.as_ref(),
                "http",
            ),
        ] {
            if let Some(value) = value {
                base_url(value, default_scheme, name)?;
            }
        }
        if let Some(sub) = &settings.subscription {
            arm::check_name("AZURE_SUBSCRIPTION_ID", sub)?;
        }
        Ok(settings)
    }
}

/// The subscription, resource group and VM name in effect.
#[derive(Clone, Debug)]
struct Context {
    subscription: String,
    resource_group: String,
    vm_name: String,
}

/// What a PUT came to when it did not fail outright.
enum PutOutcome {
    Done,
    /// The address is still held elsewhere (`PublicIPAddressInUse`, `PrivateIPAddressInUse`,
    /// `PrivateIPAddressIsBeingCleanedUp`): worth retrying once a release has finished.
    InUse(Error),
}

/// What a secondary-ip claim hands to the move after its own compare-and-swap.
struct SecondaryClaim {
    /// The record's tags, for the NIC that takes the address.
    tags: Vec<(String, String)>,
    /// The claim released the address from its holder: an `InUse` answer is that release
    /// settling, worth waiting for.
    released: bool,
    /// The subnet of the address's ipConfiguration, to pick among the VM's NICs.
    subnet: Option<String>,
}

/// Where an operation's outcome is read.
enum PollTarget {
    Operation(Url),
    Location(Url),
    /// No operation URL at all: the resource's own `provisioningState`.
    Resource(Url),
}

/// The Azure client.
pub struct Azure {
    /// ARM base URL without a trailing slash.
    arm: Url,
    api_version: String,
    mode: AzureMode,
    public_ip_name: Option<String>,
    ip_config: Option<String>,
    peer_tag: Option<(String, String)>,
    metadata_url: Url,
    configured: (Option<String>, Option<String>, Option<String>),
    http: HttpClient,
    /// One attempt per poll: the poll loop has its own schedule and error budget.
    poll: HttpClient,
    imds: Imds,
    tokens: TokenCache,
    /// Resolved once: the configuration completed from IMDS.
    context: tokio::sync::OnceCell<Context>,
    /// Public IP address → resource id, dropped when the resource no longer has that address.
    public_ips: Mutex<HashMap<IpAddr, String>>,
    /// Secondary ipConfigurations last seen holding an address, to rebuild one whose removal
    /// succeeded but whose re-creation did not.
    templates: Mutex<HashMap<IpAddr, SecondaryTemplate>>,
    /// One move at a time: two moves touching the same NIC would only trip over each other's
    /// etags and operations (azure.md §6).
    moves: tokio::sync::Mutex<()>,
    operation_timeout: Duration,
    poll_first: Duration,
    poll_max: Duration,
}

impl fmt::Debug for Azure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Azure")
            .field("arm", &self.arm.as_str())
            .field("mode", &self.mode)
            .field("credentials", &self.tokens.describe())
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

impl Azure {
    pub fn new(settings: AzureSettings) -> Result<Self> {
        let s = settings;
        let arm = base_url(&s.arm_endpoint, "https", "ARM endpoint")?;
        let authority = base_url(&s.authority_host, "https", "authority host")?;
        let metadata_url = base_url(&s.metadata_url, "http", "metadata URL")?;
        let identity_url = match &s.identity_url {
            Some(u) => base_url(u, "http", "identity endpoint")?,
            None => metadata_url.clone(),
        };
        let audience = s
            .arm_audience
            .clone()
            .unwrap_or_else(|| AzureCloud::audience_for(arm.as_str()).to_string());
        let audience = audience.trim().trim_end_matches('/').to_string();
        if Url::parse(&audience).is_err() {
            return Err(Error::Invalid(format!(
                "the ARM audience {audience:?} is not a URL"
            )));
        }
        if s.api_version.is_empty()
            || !s
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::Invalid(format!(
                "the Azure API version {:?} is not valid (e.g. {DEFAULT_API_VERSION})",
                s.api_version
            )));
        }
        for (kind, name) in [
            ("subscription", &s.subscription),
            ("resource group", &s.resource_group),
            ("VM name", &s.vm_name),
            ("public IP name", &s.public_ip_name),
            ("ipConfiguration name", &s.ip_config),
        ] {
            if let Some(name) = name {
                arm::check_name(kind, name)?;
            }
        }
        if let Some((key, _)) = &s.peer_tag {
            if key.trim().is_empty() {
                return Err(Error::Invalid("the peer tag's key is empty".into()));
            }
        }
        if s.request_timeout.is_zero() || s.operation_timeout.is_zero() || s.poll_first.is_zero() {
            return Err(Error::Invalid(
                "request and operation timeouts and the poll interval must be positive".into(),
            ));
        }
        let http = HttpClient::new(&HttpOptions {
            request_timeout: s.request_timeout,
            ca_file: s.ca_file.clone(),
            retry: s.retry.clone(),
            ..HttpOptions::default()
        })?;
        let poll = http.with_policy(
            s.request_timeout,
            RetryPolicy {
                max_attempts: 1,
                max_elapsed: s.operation_timeout,
                ..s.retry.clone()
            },
        );
        // IMDS is link-local: never through a proxy (azure.md §1.2).
        let imds = Imds::new(HttpClient::new(&HttpOptions {
            request_timeout: s.request_timeout.min(Duration::from_secs(5)),
            retry: s.metadata_retry.clone(),
            use_env_proxy: false,
            ..HttpOptions::default()
        })?);
        let source = match &s.credentials {
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => {
                check_tenant(tenant_id)?;
                check_client_id(client_id)?;
                if client_secret.expose().is_empty() {
                    return Err(Error::Invalid("the Azure client secret is empty".into()));
                }
                TokenSource::ClientCredentials {
                    url: join(&authority, &format!("/{tenant_id}/oauth2/v2.0/token")),
                    tenant: tenant_id.clone(),
                    client_id: client_id.clone(),
                    proof: Proof::Secret(client_secret.clone()),
                    scope: format!("{audience}/.default"),
                }
            }
            AzureCredentials::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                check_tenant(tenant_id)?;
                check_client_id(client_id)?;
                TokenSource::ClientCredentials {
                    url: join(&authority, &format!("/{tenant_id}/oauth2/v2.0/token")),
                    tenant: tenant_id.clone(),
                    client_id: client_id.clone(),
                    proof: Proof::AssertionFile(token_file.clone()),
                    scope: format!("{audience}/.default"),
                }
            }
            AzureCredentials::ManagedIdentity { client_id } => {
                let mut url = join(&identity_url, "/metadata/identity/oauth2/token");
                {
                    let mut query = url.query_pairs_mut();
                    query.append_pair("api-version", IDENTITY_API_VERSION);
                    query.append_pair("resource", &format!("{audience}/"));
                    if let Some(id) = client_id {
                        check_client_id(id)?;
                        query.append_pair("client_id", id);
                    }
                }
                TokenSource::ManagedIdentity {
                    url,
                    imds: imds.clone(),
                }
            }
        };
        Ok(Azure {
            arm,
            api_version: s.api_version,
            mode: s.mode,
            public_ip_name: s.public_ip_name,
            ip_config: s.ip_config,
            peer_tag: s.peer_tag,
            metadata_url,
            configured: (s.subscription, s.resource_group, s.vm_name),
            tokens: TokenCache::new(source, http.clone()),
            http,
            poll,
            imds,
            context: tokio::sync::OnceCell::new(),
            public_ips: Mutex::new(HashMap::new()),
            templates: Mutex::new(HashMap::new()),
            moves: tokio::sync::Mutex::new(()),
            operation_timeout: s.operation_timeout,
            poll_first: s.poll_first,
            poll_max: s.poll_max.max(s.poll_first),
        })
    }

    pub fn mode(&self) -> AzureMode {
        self.mode
    }

    /// Reads IMDS `/metadata/instance` (uncached), e.g. for the VM's private addresses.
    pub async fn instance_metadata(&self) -> Result<InstanceMetadata> {
        self.imds.instance(&self.metadata_url).await
    }

    /// The subscription, resource group and VM name: configured, else from IMDS (once).
    async fn context(&self) -> Result<&Context> {
        self.context
            .get_or_try_init(|| async {
                let (sub, rg, vm) = &self.configured;
                if let (Some(subscription), Some(resource_group), Some(vm_name)) = (sub, rg, vm) {
                    return Ok(Context {
                        subscription: subscription.clone(),
                        resource_group: resource_group.clone(),
                        vm_name: vm_name.clone(),
                    });
                }
                let metadata = self.instance_metadata().await.map_err(|e| {
                    with_context(
                        e,
                        "cannot read the subscription, resource group and VM name from IMDS (configure them outside Azure)",
                    )
                })?;
                let pick = |configured: &Option<String>, found: Option<String>, what: &str| {
                    let value = configured.clone().or(found).ok_or_else(|| {
                        Error::Invalid(format!("IMDS gives no {what}: configure it"))
                    })?;
                    arm::check_name(what, &value)?;
                    Ok::<_, Error>(value)
                };
                let context = Context {
                    subscription: pick(sub, metadata.subscription_id, "subscription")?,
                    resource_group: pick(rg, metadata.resource_group, "resource group")?,
                    vm_name: pick(vm, metadata.name, "VM name")?,
                };
                tracing::debug!(?context, "Azure context from IMDS");
                Ok(context)
            })
            .await
    }

    // ----- requests ---------------------------------------------------------------------

    /// `{arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{kind}[/{name}]`.
    fn network_url(&self, ctx: &Context, kind: &str, name: Option<&str>) -> Url {
        let mut path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/{kind}",
            ctx.subscription, ctx.resource_group
        );
        if let Some(name) = name {
            path.push('/');
            path.push_str(name);
        }
        self.versioned(join(&self.arm, &path))
    }

    /// The URL of a resource by its ARM id (checked first: it comes from a response).
    fn id_url(&self, id: &str) -> Result<Url> {
        arm::check_id(id)?;
        Ok(self.versioned(join(&self.arm, id)))
    }

    fn versioned(&self, mut url: Url) -> Url {
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        url
    }

    /// A URL ARM handed us (`nextLink`, `Azure-AsyncOperation`, `Location`). It gets our bearer
    /// token, so it must point at our ARM endpoint: another origin is taken to be ARM's public
    /// name for it (an emulator or proxy in front) and rebased onto our endpoint.
    fn followed_url(&self, link: &str) -> Result<Url> {
        let url = self
            .arm
            .join(link.trim())
            .map_err(|e| Error::Invalid(format!("ARM sent an unusable URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Invalid("ARM sent a URL that is not http(s)".into()));
        }
        if url.origin() == self.arm.origin() {
            return Ok(url);
        }
        tracing::debug!(
            host = url.host_str().unwrap_or(""),
            "rebasing a URL from ARM onto the configured endpoint"
        );
        let mut rebased = join(&self.arm, url.path());
        rebased.set_query(url.query());
        Ok(rebased)
    }

    /// Sends `spec` to ARM with a bearer token (and `If-Match`), returning the final answer,
    /// error statuses included. A 401 gets one new token and one retry; 409
    /// `AnotherOperationInProgress` is retried after its `Retry-After` while time allows.
    async fn exchange(
        &self,
        client: &HttpClient,
        spec: &RequestSpec,
        if_match: Option<&str>,
        deadline: Instant,
    ) -> Result<HttpResponse> {
        let mut refused = None;
        let mut busy = 0;
        loop {
            let token = self.tokens.token(refused).await?;
            let response = client
                .send_until_final(spec, |_| bearer(&token, if_match), deadline)
                .await?;
            if response.status.as_u16() == 401 && refused.is_none() {
                tracing::debug!(request = %response.what, "ARM refused the token, getting a new one");
                refused = Some(token.generation);
                continue;
            }
            if arm::is_busy(response.status, &response.body) {
                busy += 1;
                let wait = crate::http::header_retry_after(&response.headers, SystemTime::now())
                    .unwrap_or_else(|| client.retry_policy().backoff(busy));
                if busy < client.retry_policy().max_attempts && Instant::now() + wait < deadline {
                    tracing::debug!(request = %response.what, wait_ms = wait.as_millis() as u64, "resource busy, retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// Like [`Azure::exchange`], error statuses mapped onto the taxonomy.
    async fn call(
        &self,
        client: &HttpClient,
        spec: &RequestSpec,
        if_match: Option<&str>,
        deadline: Instant,
    ) -> Result<HttpResponse> {
        let response = self.exchange(client, spec, if_match, deadline).await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(self.error_of(&response))
        }
    }

    fn error_of(&self, response: &HttpResponse) -> Error {
        let error = arm::arm_error(
            &response.what,
            response.status,
            &response.headers,
            &response.body,
        );
        match error {
            Error::Auth(m) => Error::Auth(format!("{m} (credentials: {})", self.tokens.describe())),
            other => other,
        }
    }

    async fn get(&self, url: Url, deadline: Instant) -> Result<(Value, HeaderMap)> {
        let spec = RequestSpec::new(Method::GET, url);
        let response = self.call(&self.http, &spec, None, deadline).await?;
        let value: Value = response.json()?;
        if !value.is_object() {
            return Err(Error::Invalid(format!(
                "{}: the answer is not a JSON object",
                response.what
            )));
        }
        Ok((value, response.headers))
    }

    /// All items of a list (`value[]`), following `nextLink`.
    async fn list(&self, url: Url, deadline: Instant) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::Invalid(format!(
                    "ARM list {} has more than {MAX_PAGES} pages",
                    url.path()
                )));
            }
            let (page, _) = self.get(url, deadline).await?;
            match page.get("value") {
                Some(Value::Array(values)) => items.extend(values.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(_) => return Err(Error::Invalid("ARM list: value is not an array".into())),
            }
            if let Some(link) = text(&page, "/nextLink") {
                next = Some(self.followed_url(link)?);
            }
        }
        Ok(items)
    }

    async fn list_nics(&self, ctx: &Context, deadline: Instant) -> Result<Vec<Value>> {
        self.list(self.network_url(ctx, "networkInterfaces", None), deadline)
            .await
    }

    fn read_deadline(&self) -> Instant {
        Instant::now() + self.http.retry_policy().max_elapsed
    }

    // ----- long-running operations -------------------------------------------------------

    /// PUTs a whole resource (a NIC, a public IP) with `If-Match` and waits for the operation
    /// to finish.
    async fn put_nic(
        &self,
        nic_id: &str,
        body: &Value,
        etag: Option<&str>,
        deadline: Instant,
        what: &str,
    ) -> Result<PutOutcome> {
        let url = self.id_url(nic_id)?;
        let spec = RequestSpec::json(Method::PUT, url.clone(), body)?;
        if etag.is_none() {
            tracing::warn!(
                resource = nic_id,
                "the resource has no etag: PUT without If-Match"
            );
        }
        let started = Instant::now();
        let response = self.exchange(&self.http, &spec, etag, deadline).await?;
        if !response.status.is_success() {
            let error = with_context(self.error_of(&response), what);
            if arm::error_code(&response.body).is_some_and(|c| arm::is_in_use(&c)) {
                return Ok(PutOutcome::InUse(error));
            }
            return Err(error);
        }
        self.wait(&response, url, deadline, what).await?;
        tracing::info!(
            resource = last_segment(nic_id),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{what}: done"
        );
        Ok(PutOutcome::Done)
    }

    /// Waits for the operation a PUT started (azure.md §6).
    async fn wait(
        &self,
        response: &HttpResponse,
        resource: Url,
        deadline: Instant,
        what: &str,
    ) -> Result<()> {
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let state = text(&body, "/properties/provisioningState").map(|s| arm::parse_state(s, None));
        let target = match (state, Poll::from_headers(&response.headers)) {
            (Some(State::Succeeded), _) => return Ok(()),
            (Some(State::Failed(m)), _) => {
                return Err(Error::Retryable(format!("{what}: the operation ended {m}")))
            }
            (_, Some(Poll::AsyncOperation(link))) => {
                PollTarget::Operation(self.followed_url(&link)?)
            }
            (_, Some(Poll::Location(link))) => PollTarget::Location(self.followed_url(&link)?),
            (Some(State::Running(_)), None) => PollTarget::Resource(resource),
            (None, None) => return Ok(()),
        };
        let hint = crate::http::header_retry_after(&response.headers, SystemTime::now());
        self.poll_until_done(target, hint, deadline, what).await
    }

    async fn poll_until_done(
        &self,
        target: PollTarget,
        mut hint: Option<Duration>,
        deadline: Instant,
        what: &str,
    ) -> Result<()> {
        let url = match &target {
            PollTarget::Operation(u) | PollTarget::Location(u) | PollTarget::Resource(u) => {
                u.clone()
            }
        };
        let spec = RequestSpec::new(Method::GET, url);
        let started = Instant::now();
        let mut delay = self.poll_first;
        let mut throttled: Option<Duration> = None;
        let mut errors = 0;
        let mut last = String::from("not polled yet");
        let mut first = true;
        loop {
            // One early look (as the SDKs poll once at once: a quick change is often done by
            // then), then our own schedule slowed down to the server's Retry-After up to
            // poll_max (azure.md §6: min(Retry-After, 2 s)); throttling is honoured in full.
            let advised = if std::mem::take(&mut first) {
                Duration::ZERO
            } else {
                hint.map_or(Duration::ZERO, |h| h.min(self.poll_max))
            };
            let mut wait = delay.max(advised);
            if let Some(t) = throttled.take() {
                wait = wait.max(t);
            }
            if Instant::now() + wait >= deadline {
                return Err(Error::Retryable(format!(
                    "{what}: the operation is still running after {:?} ({last})",
                    started.elapsed()
                )));
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.poll_max);
            let polled = self.call(&self.poll, &spec, None, deadline).await;
            let response = match polled {
                Ok(r) => r,
                Err(e @ Error::Auth(_)) => return Err(with_context(e, what)),
                Err(e) => {
                    errors += 1;
                    tracing::debug!(errors, error = %e, "{what}: polling the operation failed");
                    if errors >= POLL_MAX_ERRORS {
                        return Err(with_context(
                            e,
                            &format!("{what}: gave up polling the operation after {errors} errors in a row"),
                        ));
                    }
                    if let Error::RateLimited {
                        retry_after: Some(w),
                        ..
                    } = e
                    {
                        throttled = Some(w);
                    }
                    continue;
                }
            };
            errors = 0;
            hint = crate::http::header_retry_after(&response.headers, SystemTime::now());
            let state = match &target {
                PollTarget::Location(_) if response.status.as_u16() == 202 => {
                    State::Running("Accepted".into())
                }
                PollTarget::Location(_) => State::Succeeded,
                PollTarget::Operation(_) => {
                    match serde_json::from_slice::<Value>(&response.body)
                        .map_err(|e| e.to_string())
                        .and_then(|v| arm::operation_state(&v))
                    {
                        Ok(state) => state,
                        Err(e) => {
                            errors += 1;
                            if errors >= POLL_MAX_ERRORS {
                                return Err(Error::Invalid(format!(
                                    "{what}: malformed operation status ({e})"
                                )));
                            }
                            continue;
                        }
                    }
                }
                PollTarget::Resource(_) => match serde_json::from_slice::<Value>(&response.body) {
                    Ok(v) => arm::provisioning_state(&v),
                    Err(e) => {
                        return Err(Error::Invalid(format!("{what}: malformed resource ({e})")))
                    }
                },
            };
            match state {
                State::Succeeded => return Ok(()),
                State::Failed(m) => {
                    return Err(Error::Retryable(format!("{what}: the operation ended {m}")))
                }
                State::Running(s) => last = s,
            }
        }
    }

    // ----- NICs and VMs -----------------------------------------------------------------

    /// The NICs of VM `vm` (by name, case-insensitively), its primary NIC first.
    fn vm_nics<'a>(nics: &'a [Value], vm: &str) -> Vec<&'a Value> {
        let mut own: Vec<&Value> = nics
            .iter()
            .filter(|n| nic_vm(n).is_some_and(|v| v.eq_ignore_ascii_case(vm)))
            .collect();
        own.sort_by_key(|n| {
            (
                !arm::flag(n, "/properties/primary"),
                text(n, "/name").map(str::to_ascii_lowercase),
            )
        });
        own
    }

    fn require_nics<'a>(
        &self,
        ctx: &Context,
        nics: &'a [Value],
        vm: &str,
    ) -> Result<Vec<&'a Value>> {
        let own = Self::vm_nics(nics, vm);
        if own.is_empty() {
            return Err(Error::NotFound(format!(
                "no network interface in resource group {} belongs to VM {vm}",
                ctx.resource_group
            )));
        }
        Ok(own)
    }

    /// A VM as the agent sees it: heartbeats go to the primary private address of each NIC
    /// (secondary ones may float away).
    fn instance(vm: &str, nics: &[&Value]) -> Instance {
        let mut addresses = Vec::new();
        for nic in nics {
            if let Some(ip) = primary_config(nic).and_then(config_ip) {
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
        }
        Instance {
            id: InstanceId(vm.to_string()),
            name: vm.to_string(),
            addresses,
        }
    }

    /// The NIC and ipConfiguration a public IP goes on for VM `vm`: `--azure-ip-config`, else
    /// the primary ipConfiguration of the primary NIC.
    fn public_ip_target(
        &self,
        ctx: &Context,
        nics: &[Value],
        vm: &str,
    ) -> Result<(String, String)> {
        let own = self.require_nics(ctx, nics, vm)?;
        let found = match &self.ip_config {
            Some(name) => own
                .iter()
                .find_map(|nic| find_config(nic, name).map(|c| (*nic, c)))
                .ok_or_else(|| {
                    Error::NotFound(format!("VM {vm} has no ipConfiguration named {name}"))
                })?,
            None => {
                let nic = own[0];
                let config = primary_config(nic).ok_or_else(|| {
                    Error::Invalid(format!(
                        "network interface {} has no primary ipConfiguration: set the one to use",
                        text(nic, "/name").unwrap_or("?")
                    ))
                })?;
                (nic, config)
            }
        };
        Ok((
            nic_id(found.0)?,
            config_name(found.1).unwrap_or_default().to_string(),
        ))
    }

    // ----- public-ip mode ---------------------------------------------------------------

    fn public_ip_address(pip: &Value) -> Option<IpAddr> {
        text(pip, "/properties/ipAddress").and_then(|s| s.parse().ok())
    }

    /// The public IP resource with address `ip`.
    async fn find_public_ip(&self, ctx: &Context, ip: IpAddr, deadline: Instant) -> Result<Value> {
        if let Some(name) = &self.public_ip_name {
            let (pip, _) = self
                .get(
                    self.network_url(ctx, "publicIPAddresses", Some(name)),
                    deadline,
                )
                .await?;
            return match Self::public_ip_address(&pip) {
                Some(a) if a == ip => Ok(pip),
                Some(a) => Err(Error::Invalid(format!(
                    "public IP {name} has the address {a}, not {ip}"
                ))),
                None => Err(Error::Invalid(format!(
                    "public IP {name} has no address (not allocated?)"
                ))),
            };
        }
        let cached = self.public_ips.lock().expect("poisoned").get(&ip).cloned();
        if let Some(id) = cached {
            match self.get(self.id_url(&id)?, deadline).await {
                Ok((pip, _)) if Self::public_ip_address(&pip) == Some(ip) => return Ok(pip),
                Ok(_) | Err(Error::NotFound(_)) => {
                    self.public_ips.lock().expect("poisoned").remove(&ip);
                }
                Err(e) => return Err(e),
            }
        }
        let pips = match self
            .list(self.network_url(ctx, "publicIPAddresses", None), deadline)
            .await
        {
            Ok(list) => list,
            // Some ARM look-alikes serve single public IPs only: find those the NICs reference.
            Err(e @ (Error::NotFound(_) | Error::Invalid(_))) => {
                tracing::debug!(error = %e, "cannot list public IPs, looking at those of the network interfaces");
                self.public_ips_of_nics(ctx, deadline).await?
            }
            Err(e) => return Err(e),
        };
        let mut found = None;
        let mut cache = self.public_ips.lock().expect("poisoned");
        for pip in pips {
            let (Some(address), Some(id)) = (Self::public_ip_address(&pip), text(&pip, "/id"))
            else {
                continue;
            };
            cache.insert(address, id.to_string());
            if address == ip {
                found = Some(pip);
            }
        }
        found.ok_or_else(|| {
            Error::NotFound(format!(
                "no public IP with address {ip} in resource group {}",
                ctx.resource_group
            ))
        })
    }

    async fn public_ips_of_nics(&self, ctx: &Context, deadline: Instant) -> Result<Vec<Value>> {
        let nics = self.list_nics(ctx, deadline).await?;
        let mut ids: Vec<String> = Vec::new();
        for config in nics.iter().flat_map(ip_configs) {
            if let Some(id) = config_public_ip(config) {
                if !ids.iter().any(|i| same_id(i, id)) {
                    ids.push(id.to_string());
                }
            }
        }
        let mut pips = Vec::new();
        for id in ids {
            match self.get(self.id_url(&id)?, deadline).await {
                Ok((pip, _)) => pips.push(pip),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pips)
    }

    async fn public_ip_holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        let ctx = self.context().await?;
        let deadline = self.read_deadline();
        let pip = self.find_public_ip(ctx, ip, deadline).await?;
        self.holders_of_pip(ip, &pip, deadline).await
    }

    /// The holders and the claim record (its tags) of the public IP, from one read of it.
    async fn public_ip_state(&self, ip: IpAddr) -> Result<AddressState> {
        let ctx = self.context().await?;
        let deadline = self.read_deadline();
        let pip = self.find_public_ip(ctx, ip, deadline).await?;
        Ok(AddressState {
            holders: self.holders_of_pip(ip, &pip, deadline).await?,
            record: pip_record(&pip),
        })
    }

    /// The VM whose NIC the public IP's back-reference names, if any.
    async fn holders_of_pip(
        &self,
        ip: IpAddr,
        pip: &Value,
        deadline: Instant,
    ) -> Result<Vec<InstanceId>> {
        let Some(config) = text(pip, "/properties/ipConfiguration/id") else {
            return Ok(Vec::new());
        };
        let Some(nic) = nic_of_ip_config(config) else {
            tracing::debug!(%ip, holder = config, "the public IP is held by something other than a network interface");
            return Ok(Vec::new());
        };
        match self.get(self.id_url(nic)?, deadline).await {
            Ok((nic, _)) => Ok(nic_vm(&nic)
                .map(|vm| vec![InstanceId(vm.to_string())])
                .unwrap_or_default()),
            Err(Error::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn attach_public_ip(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        self.move_public_ip(ip, to, deadline).await
    }

    /// Public-ip mode's claim: the record first, as tags on the public IP in a whole-resource
    /// PUT with `If-Match` on the etag of the read that checked `seen` (412: someone wrote in
    /// between, nothing moved), waited for; then the move as [`Azure::attach_public_ip`] does.
    async fn claim_public_ip_record(
        &self,
        ip: IpAddr,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        let ctx = self.context().await?;
        let found = self.find_public_ip(ctx, ip, deadline).await?;
        let pip_id = text(&found, "/id")
            .ok_or_else(|| Error::Invalid(format!("the public IP {ip} has no id")))?
            .to_string();
        // Read by id: its ETag header is what guards the write.
        let url = self.id_url(&pip_id)?;
        let (pip, headers) = self.get(url.clone(), deadline).await?;
        check_seen(ip, pip_record(&pip).as_ref(), seen)?;
        let mut body = arm::pip_put_body(&pip)?;
        arm::set_tags(
            &mut body,
            &record_tags((EPOCH_TAG.into(), HOLDER_TAG.into()), record),
        )?;
        let what = format!(
            "recording the claim of {ip} (epoch {}) on public IP {}",
            record.epoch,
            last_segment(&pip_id)
        );
        match self
            .put_nic(
                &pip_id,
                &body,
                etag(&headers, &pip).as_deref(),
                deadline,
                &what,
            )
            .await
        {
            Ok(PutOutcome::Done) => {}
            Ok(PutOutcome::InUse(e)) => return Err(e),
            Err(e @ Error::Conflict(_)) => {
                // Someone wrote in between; or our PUT went through and only its answer was
                // lost (the retry then met the new etag): then the record is exactly ours.
                let (now, _) = self.get(url.clone(), self.read_deadline()).await?;
                if pip_record(&now).as_ref() != Some(record) {
                    return Err(e);
                }
                tracing::debug!(%ip, error = %e, "conflict, but the claim record in force is ours");
                if let State::Running(_) = arm::provisioning_state(&now) {
                    self.poll_until_done(PollTarget::Resource(url), None, deadline, &what)
                        .await?;
                }
            }
            Err(e) => return Err(e),
        }
        self.move_public_ip(ip, &record.holder, deadline).await
    }

    /// Moves the public IP to VM `to` (detach from the holder, attach to `to`, verify); the
    /// caller holds the move lock.
    async fn move_public_ip(&self, ip: IpAddr, to: &InstanceId, deadline: Instant) -> Result<()> {
        let ctx = self.context().await?;
        let mut released = false;
        let mut retry_delay = self.poll_first;
        let (own_nic, pip_id) = loop {
            let pip = self.find_public_ip(ctx, ip, deadline).await?;
            let pip_id = text(&pip, "/id")
                .ok_or_else(|| Error::Invalid(format!("the public IP {ip} has no id")))?
                .to_string();
            let nics = self.list_nics(ctx, deadline).await?;
            let (own_nic, own_config) = self.public_ip_target(ctx, &nics, &to.0)?;
            if let Some(holder) = text(&pip, "/properties/ipConfiguration/id") {
                let holder_nic = nic_of_ip_config(holder).ok_or_else(|| {
                    Error::Invalid(format!(
                        "public IP {ip} is attached to {holder}, which is not a network interface"
                    ))
                })?;
                let ours = Self::vm_nics(&nics, &to.0)
                    .iter()
                    .any(|n| text(n, "/id").is_some_and(|id| same_id(id, holder_nic)));
                if ours {
                    tracing::debug!(%ip, vm = %to, "the public IP is already on this VM");
                    return Ok(());
                }
                // Whether or not there was anything left to release here, the address was
                // held at the start of this call: an InUse answer now is its release settling.
                self.release_public_ip(holder_nic, holder, &pip_id, ip, None, deadline)
                    .await?;
                released = true;
            }
            let outcome = self
                .claim_public_ip(&own_nic, &own_config, &pip_id, ip, deadline)
                .await?;
            match outcome {
                PutOutcome::Done => break (own_nic, pip_id),
                // Our release has finished, yet ARM still sees it in use: give it a moment.
                PutOutcome::InUse(e) if released && Instant::now() + retry_delay < deadline => {
                    tracing::debug!(error = %e, "the public IP is not free yet, retrying");
                    tokio::time::sleep(retry_delay).await;
                    retry_delay = (retry_delay * 2).min(self.poll_max);
                }
                PutOutcome::InUse(e) => return Err(e),
            }
        };
        // Verify with the public IP's own back-reference (azure.md §4 step 3).
        let (pip, _) = self
            .get(self.id_url(&pip_id)?, self.read_deadline())
            .await?;
        let holder = text(&pip, "/properties/ipConfiguration/id");
        match holder.and_then(nic_of_ip_config) {
            Some(nic) if same_id(nic, &own_nic) => Ok(()),
            _ => Err(Error::Conflict(format!(
                "after attaching public IP {ip} to {to}, it is held by {}",
                holder.unwrap_or("nothing")
            ))),
        }
    }

    async fn detach_public_ip(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        let ctx = self.context().await?;
        let pip = self.find_public_ip(ctx, ip, deadline).await?;
        let pip_id = text(&pip, "/id")
            .ok_or_else(|| Error::Invalid(format!("the public IP {ip} has no id")))?;
        let Some(holder) = text(&pip, "/properties/ipConfiguration/id") else {
            return Ok(());
        };
        let Some(holder_nic) = nic_of_ip_config(holder) else {
            return Ok(());
        };
        self.release_public_ip(holder_nic, holder, pip_id, ip, Some(&from.0), deadline)
            .await
            .map(|_| ())
    }

    /// PUTs `nic_id` without the public IP on ipConfiguration `config_id`, if it is still
    /// there (and, with `owner`, only if the NIC belongs to that VM). True when the address
    /// was released here, or a change already under way on the NIC was waited for.
    async fn release_public_ip(
        &self,
        nic_id: &str,
        config_id: &str,
        pip_id: &str,
        ip: IpAddr,
        owner: Option<&str>,
        deadline: Instant,
    ) -> Result<bool> {
        let url = self.id_url(nic_id)?;
        let (nic, headers) = self.get(url.clone(), deadline).await?;
        if let Some(owner) = owner {
            if !nic_vm(&nic).is_some_and(|vm| vm.eq_ignore_ascii_case(owner)) {
                return Ok(false);
            }
        }
        let name = last_segment(config_id);
        let what = format!(
            "detaching public IP {ip} from {}/{name}",
            last_segment(nic_id)
        );
        let holds = find_config(&nic, name)
            .and_then(config_public_ip)
            .is_some_and(|p| same_id(p, pip_id));
        if !holds {
            // The public IP still names this NIC, which no longer has it, and is changing: a
            // release is under way (perhaps ours, whose answer was lost). Let it finish.
            if let State::Running(_) = arm::provisioning_state(&nic) {
                self.poll_until_done(PollTarget::Resource(url), None, deadline, &what)
                    .await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut body = arm::put_body(&nic)?;
        arm::remove_public_ip(&mut body, name)?;
        match self
            .put_nic(
                nic_id,
                &body,
                etag(&headers, &nic).as_deref(),
                deadline,
                &what,
            )
            .await?
        {
            PutOutcome::Done => Ok(true),
            PutOutcome::InUse(e) => Err(e),
        }
    }

    /// PUTs `nic_id` with the public IP on ipConfiguration `config` (fresh GET, fresh etag).
    async fn claim_public_ip(
        &self,
        nic_id: &str,
        config: &str,
        pip_id: &str,
        ip: IpAddr,
        deadline: Instant,
    ) -> Result<PutOutcome> {
        let (nic, headers) = self.get(self.id_url(nic_id)?, deadline).await?;
        let has = find_config(&nic, config)
            .and_then(config_public_ip)
            .is_some_and(|p| same_id(p, pip_id));
        if has {
            return Ok(PutOutcome::Done);
        }
        let mut body = arm::put_body(&nic)?;
        arm::set_public_ip(&mut body, config, pip_id)?;
        let what = format!(
            "attaching public IP {ip} to {}/{config}",
            last_segment(nic_id)
        );
        self.put_nic(
            nic_id,
            &body,
            etag(&headers, &nic).as_deref(),
            deadline,
            &what,
        )
        .await
    }

    // ----- secondary-ip mode ------------------------------------------------------------

    /// The NICs holding `ip` on one of their ipConfigurations, with that configuration.
    fn secondary_holders(nics: &[Value], ip: IpAddr) -> Vec<(&Value, &Value)> {
        nics.iter()
            .filter_map(|nic| {
                ip_configs(nic)
                    .iter()
                    .find(|c| config_ip(c) == Some(ip))
                    .map(|c| (nic, c))
            })
            .collect()
    }

    async fn secondary_ip_holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        let ctx = self.context().await?;
        let nics = self.list_nics(ctx, self.read_deadline()).await?;
        Ok(Self::secondary_vms(&nics, ip))
    }

    fn secondary_vms(nics: &[Value], ip: IpAddr) -> Vec<InstanceId> {
        let mut holders: Vec<InstanceId> = Self::secondary_holders(nics, ip)
            .into_iter()
            .filter_map(|(nic, _)| nic_vm(nic).map(|vm| InstanceId(vm.to_string())))
            .collect();
        holders.sort();
        holders.dedup();
        holders
    }

    /// Secondary-ip mode's claim record: the tags of the NIC holding the ipConfiguration (a
    /// NIC that lost it keeps stale tags, which are ignored); when no NIC holds it, the newest
    /// record on any NIC (the last holder keeps its tags after a release), as in lb-probe mode.
    fn secondary_record(nics: &[Value], ip: IpAddr) -> Option<ClaimRecord> {
        match Self::secondary_holders(nics, ip).first() {
            Some((nic, _)) => Self::nic_record(nic, ip),
            None => Self::newest_record(nics, ip),
        }
    }

    /// The record of `ip` in a NIC's tags (`exoip-epoch-<ip>`, `exoip-holder-<ip>`).
    fn nic_record(nic: &Value, ip: IpAddr) -> Option<ClaimRecord> {
        let (epoch, holder) = secondary_record_tags(ip);
        record_from_tags(tag(nic, &epoch), tag(nic, &holder))
    }

    /// The newest record of `ip` over all NICs ([`newest_nic_record`]).
    fn newest_record(nics: &[Value], ip: IpAddr) -> Option<ClaimRecord> {
        newest_nic_record(
            nics.iter()
                .map(|nic| (nic_vm(nic), Self::nic_record(nic, ip))),
        )
    }

    /// The holders and the claim record, from one list of the NICs.
    async fn secondary_ip_state(&self, ip: IpAddr) -> Result<AddressState> {
        let ctx = self.context().await?;
        let nics = self.list_nics(ctx, self.read_deadline()).await?;
        Ok(AddressState {
            holders: Self::secondary_vms(&nics, ip),
            record: Self::secondary_record(&nics, ip),
        })
    }

    /// How to rebuild the ipConfiguration of `ip` when nobody holds it (first start, or a
    /// re-creation that failed after the removal).
    async fn fresh_template(
        &self,
        ctx: &Context,
        ip: IpAddr,
        deadline: Instant,
    ) -> Result<SecondaryTemplate> {
        if let Some(t) = self.templates.lock().expect("poisoned").get(&ip) {
            return Ok(t.clone());
        }
        let public_ip = match &self.public_ip_name {
            Some(name) => {
                let (pip, _) = self
                    .get(
                        self.network_url(ctx, "publicIPAddresses", Some(name)),
                        deadline,
                    )
                    .await?;
                Some(
                    text(&pip, "/id")
                        .ok_or_else(|| Error::Invalid(format!("public IP {name} has no id")))?
                        .to_string(),
                )
            }
            None => None,
        };
        let name = self
            .ip_config
            .clone()
            .unwrap_or_else(|| format!("exoip-{}", ip.to_string().replace(['.', ':'], "-")));
        Ok(SecondaryTemplate {
            name,
            ip,
            public_ip,
            application_security_groups: None,
        })
    }

    async fn attach_secondary_ip(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        self.move_secondary_ip(ip, to, None, deadline)
            .await
            .map(|_| ())
    }

    /// Secondary-ip mode's claim, one compare-and-swap on the NICs read with the record:
    /// the holder's NIC loses the ipConfiguration in a PUT with `If-Match` on the etag of that
    /// read (412: someone moved it since, nothing changed), and the NIC that takes it gets the
    /// record's tags in the PUT that adds it (ARM then refuses a second NIC the same private
    /// address, so of two claims made from the same unheld state one gets `InUse`). Already
    /// ours: only the tags, with `If-Match` on our NIC's etag of that read.
    async fn claim_secondary_ip_record(
        &self,
        ip: IpAddr,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        let ctx = self.context().await?;
        let to = &record.holder;
        let tags = record_tags(secondary_record_tags(ip), record);
        let nics = self.list_nics(ctx, deadline).await?;
        check_seen(ip, Self::secondary_record(&nics, ip).as_ref(), seen)?;
        let own = self.require_nics(ctx, &nics, &to.0)?;
        let holder = Self::secondary_holders(&nics, ip).into_iter().next();
        let subnet = holder
            .and_then(|(_, config)| text(config, "/properties/subnet/id"))
            .map(str::to_string);
        let released = match holder {
            Some((nic, _)) if own.iter().any(|n| std::ptr::eq(*n, nic)) => {
                let nic_id = nic_id(nic)?;
                let mut body = arm::put_body(nic)?;
                arm::set_tags(&mut body, &tags)?;
                let what = format!(
                    "recording the claim of {ip} (epoch {}) on {}",
                    record.epoch,
                    last_segment(&nic_id)
                );
                self.put_nic(
                    &nic_id,
                    &body,
                    etag(&HeaderMap::new(), nic).as_deref(),
                    deadline,
                    &what,
                )
                .await?;
                false
            }
            Some((nic, config)) => {
                if arm::flag(config, "/properties/primary") {
                    return Err(Error::Invalid(format!(
                        "{ip} is the primary address of network interface {}, which cannot move",
                        text(nic, "/name").unwrap_or("?")
                    )));
                }
                if let Some(t) = SecondaryTemplate::from_config(config, ip) {
                    self.templates.lock().expect("poisoned").insert(ip, t);
                }
                let nic_id = nic_id(nic)?;
                let mut body = arm::put_body(nic)?;
                arm::remove_config_with_ip(&mut body, ip)?;
                let what = format!("removing {ip} from {}", last_segment(&nic_id));
                match self
                    .put_nic(
                        &nic_id,
                        &body,
                        etag(&HeaderMap::new(), nic).as_deref(),
                        deadline,
                        &what,
                    )
                    .await?
                {
                    PutOutcome::Done => true,
                    PutOutcome::InUse(e) => return Err(e),
                }
            }
            None => false,
        };
        let claim = SecondaryClaim {
            tags: tags.to_vec(),
            released,
            subnet,
        };
        let own_nic = self
            .move_secondary_ip(ip, to, Some(&claim), deadline)
            .await?;
        let (nic, _) = self
            .get(self.id_url(&own_nic)?, self.read_deadline())
            .await?;
        let written = Self::nic_record(&nic, ip);
        if written.as_ref() == Some(record) {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "after claiming {ip} with epoch {}, the record on {} is {}",
                record.epoch,
                last_segment(&own_nic),
                describe(written.as_ref())
            )))
        }
    }

    /// Moves the secondary address to VM `to` and returns the NIC that has it; the caller
    /// holds the move lock. With `claim`, the NIC that takes the address gets the record's
    /// tags in the same PUT, nobody else's NIC is touched (the caller did that), and a holder
    /// that appears meanwhile makes it a conflict.
    async fn move_secondary_ip(
        &self,
        ip: IpAddr,
        to: &InstanceId,
        claim: Option<&SecondaryClaim>,
        deadline: Instant,
    ) -> Result<String> {
        let ctx = self.context().await?;
        let mut released = claim.is_some_and(|c| c.released);
        let tags = claim.map(|c| c.tags.as_slice());
        let mut retry_delay = self.poll_first;
        let own_nic = loop {
            let nics = self.list_nics(ctx, deadline).await?;
            let own = self.require_nics(ctx, &nics, &to.0)?;
            let holder = Self::secondary_holders(&nics, ip).into_iter().next();
            let mut subnet_of_holder = None;
            if let Some((nic, config)) = holder {
                if own.iter().any(|n| std::ptr::eq(*n, nic)) {
                    tracing::debug!(%ip, vm = %to, "the address is already on this VM");
                    return nic_id(nic);
                }
                if claim.is_some() {
                    return Err(Error::Conflict(format!(
                        "{ip} was taken by {} while {to} claimed it",
                        nic_vm(nic).unwrap_or("?")
                    )));
                }
                if arm::flag(config, "/properties/primary") {
                    return Err(Error::Invalid(format!(
                        "{ip} is the primary address of network interface {}, which cannot move",
                        text(nic, "/name").unwrap_or("?")
                    )));
                }
                if let Some(t) = SecondaryTemplate::from_config(config, ip) {
                    self.templates.lock().expect("poisoned").insert(ip, t);
                }
                subnet_of_holder = text(config, "/properties/subnet/id").map(str::to_string);
            }
            let template = self.fresh_template(ctx, ip, deadline).await?;
            // A VM with NICs in several subnets: the one in the address's subnet.
            let subnet_of_holder =
                subnet_of_holder.or_else(|| claim.and_then(|c| c.subnet.clone()));
            let target = subnet_of_holder
                .as_deref()
                .and_then(|subnet| {
                    own.iter().find(|n| {
                        primary_config(n)
                            .and_then(|c| text(c, "/properties/subnet/id"))
                            .is_some_and(|s| same_id(s, subnet))
                    })
                })
                .unwrap_or(&own[0]);
            let target = nic_id(target)?;
            if let Some((nic, _)) = holder {
                self.release_secondary_ip(&nic_id(nic)?, ip, None, deadline)
                    .await?;
                released = true;
            }
            match self
                .claim_secondary_ip(&target, &template, tags, deadline)
                .await?
            {
                PutOutcome::Done => break target,
                PutOutcome::InUse(e) if released && Instant::now() + retry_delay < deadline => {
                    tracing::debug!(error = %e, "the address is not free yet, retrying");
                    tokio::time::sleep(retry_delay).await;
                    retry_delay = (retry_delay * 2).min(self.poll_max);
                }
                PutOutcome::InUse(e) => return Err(e),
            }
        };
        let (nic, _) = self
            .get(self.id_url(&own_nic)?, self.read_deadline())
            .await?;
        if ip_configs(&nic).iter().any(|c| config_ip(c) == Some(ip)) {
            Ok(own_nic)
        } else {
            Err(Error::Conflict(format!(
                "after attaching {ip} to {to}, network interface {} does not have it",
                last_segment(&own_nic)
            )))
        }
    }

    async fn detach_secondary_ip(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        let ctx = self.context().await?;
        let nics = self.list_nics(ctx, deadline).await?;
        for (nic, config) in Self::secondary_holders(&nics, ip) {
            if nic_vm(nic).is_some_and(|vm| vm.eq_ignore_ascii_case(&from.0)) {
                if let Some(t) = SecondaryTemplate::from_config(config, ip) {
                    self.templates.lock().expect("poisoned").insert(ip, t);
                }
                self.release_secondary_ip(&nic_id(nic)?, ip, Some(&from.0), deadline)
                    .await?;
            }
        }
        Ok(())
    }

    /// PUTs `nic_id` without the ipConfiguration of `ip`, if it still has it.
    async fn release_secondary_ip(
        &self,
        nic_id: &str,
        ip: IpAddr,
        owner: Option<&str>,
        deadline: Instant,
    ) -> Result<()> {
        let (nic, headers) = self.get(self.id_url(nic_id)?, deadline).await?;
        if let Some(owner) = owner {
            if !nic_vm(&nic).is_some_and(|vm| vm.eq_ignore_ascii_case(owner)) {
                return Ok(());
            }
        }
        let mut body = arm::put_body(&nic)?;
        let Some(removed) = arm::remove_config_with_ip(&mut body, ip)? else {
            return Ok(());
        };
        let what = format!(
            "removing {ip} ({}) from {}",
            config_name(&removed).unwrap_or("?"),
            last_segment(nic_id)
        );
        match self
            .put_nic(
                nic_id,
                &body,
                etag(&headers, &nic).as_deref(),
                deadline,
                &what,
            )
            .await?
        {
            PutOutcome::Done => Ok(()),
            PutOutcome::InUse(e) => Err(e),
        }
    }

    /// PUTs `nic_id` with a freshly built ipConfiguration for the template's address, in the
    /// subnet of the NIC's primary ipConfiguration (azure.md §5).
    async fn claim_secondary_ip(
        &self,
        nic_id: &str,
        template: &SecondaryTemplate,
        tags: Option<&[(String, String)]>,
        deadline: Instant,
    ) -> Result<PutOutcome> {
        let (nic, headers) = self.get(self.id_url(nic_id)?, deadline).await?;
        if ip_configs(&nic)
            .iter()
            .any(|c| config_ip(c) == Some(template.ip))
        {
            return Ok(PutOutcome::Done);
        }
        let nic_name = last_segment(nic_id);
        if find_config(&nic, &template.name).is_some() {
            return Err(Error::Invalid(format!(
                "network interface {nic_name} already has an ipConfiguration named {} (with another address)",
                template.name
            )));
        }
        let subnet = primary_config(&nic)
            .and_then(|c| text(c, "/properties/subnet/id"))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "network interface {nic_name} has no primary ipConfiguration with a subnet"
                ))
            })?;
        let mut body = arm::put_body(&nic)?;
        arm::add_config(&mut body, template.build(subnet))?;
        if let Some(tags) = tags {
            arm::set_tags(&mut body, tags)?;
        }
        let what = format!("adding {} ({}) to {nic_name}", template.ip, template.name);
        self.put_nic(
            nic_id,
            &body,
            etag(&headers, &nic).as_deref(),
            deadline,
            &what,
        )
        .await
    }

    // ----- lb-probe mode ----------------------------------------------------------------

    /// The claim record and, as the holder, its claimant alone: the agent cannot see which
    /// backends answer the probe, and the last claimant is the one that may hold the address.
    /// From one list of the NICs.
    async fn lb_probe_state(&self, ip: IpAddr) -> Result<AddressState> {
        let ctx = self.context().await?;
        let nics = self.list_nics(ctx, self.read_deadline()).await?;
        let record = Self::newest_record(&nics, ip);
        Ok(AddressState {
            holders: record.iter().map(|r| r.holder.clone()).collect(),
            record,
        })
    }

    /// lb-probe mode's claim, write-then-verify: the record in force (the newest over all
    /// NICs, one list) must be `seen`; the record's tags go on this VM's primary NIC in a PUT
    /// with `If-Match` on its etag from that list, waited for (412: the NIC changed meanwhile,
    /// so the whole check runs again, a few times at most); then a second list must show
    /// exactly this record in force, else a concurrent claim won (our tags stay, outdated).
    /// The node already answers the probe: none of this is on the failover's path.
    async fn claim_lb_probe_record(
        &self,
        ip: IpAddr,
        record: &ClaimRecord,
        seen: Option<u64>,
    ) -> Result<()> {
        let ctx = self.context().await?;
        if !record.holder.0.eq_ignore_ascii_case(&ctx.vm_name) {
            return Err(Error::Invalid(format!(
                "Azure lb-probe mode records a claim of {ip} on the claimant's own network interface: VM {} cannot claim it for {}",
                ctx.vm_name, record.holder
            )));
        }
        let _one_move = self.moves.lock().await;
        let deadline = Instant::now() + self.operation_timeout;
        let tags = record_tags(secondary_record_tags(ip), record);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nics = self.list_nics(ctx, deadline).await?;
            let found = Self::newest_record(&nics, ip);
            if attempt > 1 && found.as_ref() == Some(record) {
                // Our PUT went through and only its answer was lost (the retry then met the
                // new etag): the record is written.
                tracing::debug!(%ip, "conflict, but the claim record in force is ours");
                break;
            }
            check_seen(ip, found.as_ref(), seen)?;
            let own = self.require_nics(ctx, &nics, &ctx.vm_name)?;
            let nic_id = nic_id(own[0])?;
            let mut body = arm::put_body(own[0])?;
            arm::set_tags(&mut body, &tags)?;
            let what = format!(
                "recording the claim of {ip} (epoch {}) on {}",
                record.epoch,
                last_segment(&nic_id)
            );
            match self
                .put_nic(
                    &nic_id,
                    &body,
                    etag(&HeaderMap::new(), own[0]).as_deref(),
                    deadline,
                    &what,
                )
                .await
            {
                Ok(PutOutcome::Done) => break,
                Ok(PutOutcome::InUse(e)) => return Err(e),
                Err(e @ Error::Conflict(_)) if attempt < LB_PROBE_CLAIM_ATTEMPTS => {
                    tracing::debug!(%ip, attempt, error = %e, "the network interface changed since it was listed, checking again");
                }
                Err(e) => return Err(e),
            }
        }
        let nics = self.list_nics(ctx, self.read_deadline()).await?;
        let found = Self::newest_record(&nics, ip);
        if found.as_ref() == Some(record) {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "after recording the claim of {ip} with epoch {}, the record in force is {}: a concurrent claim won",
                record.epoch,
                describe(found.as_ref())
            )))
        }
    }

    /// What lb-probe mode refuses: `holders`, `attach` and `detach`, which the agent never
    /// calls there. The load balancer sends the traffic to whichever VM answers its health
    /// probe, so there is nothing to attach or detach, and ARM cannot tell who answers; the
    /// claim record (`state`, `claim`) is the only ARM call, made after the node already
    /// answers the probe.
    fn lb_probe_refusal(&self, call: &str) -> Error {
        Error::Invalid(format!(
            "{call}: not available in Azure lb-probe mode, where the load balancer follows the health probe (nothing to attach or detach; only the claim record is kept in ARM)"
        ))
    }
}

#[async_trait::async_trait]
impl Provider for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    async fn whoami(&self) -> Result<Instance> {
        let ctx = self.context().await?;
        let nics = self
            .list_nics(ctx, self.read_deadline())
            .await
            .map_err(|e| with_context(e, &format!("looking up VM {}", ctx.vm_name)))?;
        let own = self.require_nics(ctx, &nics, &ctx.vm_name)?;
        // The name as ARM spells it: holders() reports it that way.
        let name = nic_vm(own[0]).unwrap_or(&ctx.vm_name);
        Ok(Self::instance(name, &own))
    }

    async fn peers(&self, group: &str, me: &InstanceId) -> Result<Vec<Instance>> {
        let ctx = self.context().await?;
        let nics = self.list_nics(ctx, self.read_deadline()).await?;
        let member = |nic: &Value| match &self.peer_tag {
            Some((key, value)) => nic
                .get("tags")
                .and_then(|t| t.get(key))
                .and_then(Value::as_str)
                .is_some_and(|v| v == value),
            None => text(nic, "/properties/networkSecurityGroup/id").is_some_and(|nsg| {
                if group.starts_with('/') {
                    same_id(nsg, group)
                } else {
                    last_segment(nsg).eq_ignore_ascii_case(group)
                }
            }),
        };
        // VM name (lower case) → its spelling and NICs.
        let mut vms: BTreeMap<String, (String, Vec<&Value>)> = BTreeMap::new();
        for nic in nics.iter().filter(|n| member(n)) {
            let Some(vm) = nic_vm(nic) else {
                continue;
            };
            vms.entry(vm.to_ascii_lowercase())
                .or_insert_with(|| (vm.to_string(), Vec::new()))
                .1
                .push(nic);
        }
        if vms.is_empty() {
            return Err(Error::NotFound(match &self.peer_tag {
                Some((k, v)) => format!(
                    "no network interface in resource group {} has the tag {k}={v}",
                    ctx.resource_group
                ),
                None => format!(
                    "no network interface in resource group {} uses the network security group {group}",
                    ctx.resource_group
                ),
            }));
        }
        Ok(vms
            .into_values()
            .filter(|(vm, _)| !vm.eq_ignore_ascii_case(&me.0))
            .map(|(vm, mut nics)| {
                nics.sort_by_key(|n| {
                    (
                        !arm::flag(n, "/properties/primary"),
                        text(n, "/name").map(str::to_ascii_lowercase),
                    )
                });
                Self::instance(&vm, &nics)
            })
            .collect())
    }

    async fn holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        match self.mode {
            AzureMode::PublicIp => self.public_ip_holders(ip).await,
            AzureMode::SecondaryIp => self.secondary_ip_holders(ip).await,
            AzureMode::LbProbe => Err(self.lb_probe_refusal("holders")),
        }
    }

    async fn attach(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        arm::check_name("VM name", &to.0)?;
        match self.mode {
            AzureMode::PublicIp => self.attach_public_ip(ip, to).await,
            AzureMode::SecondaryIp => self.attach_secondary_ip(ip, to).await,
            AzureMode::LbProbe => Err(self.lb_probe_refusal("attach")),
        }
    }

    async fn detach(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        arm::check_name("VM name", &from.0)?;
        match self.mode {
            AzureMode::PublicIp => self.detach_public_ip(ip, from).await,
            AzureMode::SecondaryIp => self.detach_secondary_ip(ip, from).await,
            AzureMode::LbProbe => Err(self.lb_probe_refusal("detach")),
        }
    }

    /// public-ip and secondary-ip: compare-and-swap, tags written with `If-Match` on the etag
    /// of the read that checked the record, in the writes that move the address. lb-probe:
    /// write-then-verify, tags on the claimant's own NIC (`If-Match` on it guards only that
    /// NIC, not the other claimants' NICs, so two claims can both be written and the re-read
    /// decides); no ARM call at failover, the record follows.
    fn arbiter(&self) -> Arbiter {
        match self.mode {
            AzureMode::PublicIp | AzureMode::SecondaryIp => Arbiter::CompareAndSwap,
            AzureMode::LbProbe => Arbiter::WriteThenVerify,
        }
    }

    async fn state(&self, ip: IpAddr) -> Result<AddressState> {
        match self.mode {
            AzureMode::PublicIp => self.public_ip_state(ip).await,
            AzureMode::SecondaryIp => self.secondary_ip_state(ip).await,
            AzureMode::LbProbe => self.lb_probe_state(ip).await,
        }
    }

    async fn claim(&self, ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
        arm::check_name("VM name", &record.holder.0)?;
        check_claim_epoch(ip, record, seen)?;
        match self.mode {
            AzureMode::PublicIp => self.claim_public_ip_record(ip, record, seen).await,
            AzureMode::SecondaryIp => self.claim_secondary_ip_record(ip, record, seen).await,
            AzureMode::LbProbe => self.claim_lb_probe_record(ip, record, seen).await,
        }
    }
}

/// `Authorization: Bearer …` (marked sensitive) and `If-Match`.
fn bearer(token: &Token, if_match: Option<&str>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.value.expose()))
        .map_err(|_| Error::Invalid("the access token cannot be sent in a header".into()))?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    if let Some(etag) = if_match {
        let value = HeaderValue::from_str(etag)
            .map_err(|_| Error::Invalid(format!("the etag {etag:?} cannot be sent in a header")))?;
        headers.insert(IF_MATCH, value);
    }
    Ok(headers)
}

fn nic_id(nic: &Value) -> Result<String> {
    let id = text(nic, "/id").ok_or_else(|| {
        Error::Invalid(format!(
            "network interface {} has no id",
            text(nic, "/name").unwrap_or("?")
        ))
    })?;
    arm::check_id(id)?;
    Ok(id.to_string())
}

/// Tenants are GUIDs or domains; they become a path segment of the token URL.
fn check_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the Azure tenant {tenant:?} is not a tenant id or domain"
        )))
    }
}

fn check_client_id(id: &str) -> Result<()> {
    if id.trim().is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Invalid(format!(
            "the Azure client id {id:?} is not valid"
        )));
    }
    Ok(())
}

/// Parses a base URL (`default_scheme://` is assumed when none is given, as azure-identity
/// does for `AZURE_AUTHORITY_HOST`), without a trailing slash.
fn base_url(text: &str, default_scheme: &str, what: &str) -> Result<Url> {
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_string()
    } else {
        format!("{default_scheme}://{text}")
    };
    let mut url = Url::parse(&full).map_err(|e| Error::Invalid(format!("{what} {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::Invalid(format!(
            "{what} {text:?} must be an http:// or https:// URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::Invalid(format!(
            "{what} must not carry a query, fragment or credentials"
        )));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// `base` with `path` appended to its own path.
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url.set_query(None);
    url
}

fn with_context(error: Error, context: &str) -> Error {
    let wrap = |m: String| format!("{context}: {m}");
    match error {
        Error::Retryable(m) => Error::Retryable(wrap(m)),
        Error::RateLimited {
            retry_after,
            message,
        } => Error::RateLimited {
            retry_after,
            message: wrap(message),
        },
        Error::Conflict(m) => Error::Conflict(wrap(m)),
        Error::NotFound(m) => Error::NotFound(wrap(m)),
        Error::Auth(m) => Error::Auth(wrap(m)),
        Error::Invalid(m) => Error::Invalid(wrap(m)),
    }
}

#[cfg(test)]
mod tests;

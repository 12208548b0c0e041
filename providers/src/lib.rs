//! Cloud backends for exoip behind one small trait, and a simulated cloud to test them against.
//!
//! The agent knows nothing of HTTP or any cloud's JSON; a provider knows nothing of heartbeats or
//! elections. Everything a provider reports goes through [`Error`], classified so the agent's
//! decision core can choose between retrying, waiting, and giving up.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub mod azure;
pub mod exoscale;
pub mod http;
pub mod openstack;
pub mod sim;

/// The cloud's identifier of a VM (Exoscale: the instance UUID).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        InstanceId(s.to_string())
    }
}

/// A VM as the agent needs to know it: who it is and where its heartbeats go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    /// Addresses to send heartbeats to (Exoscale: the public IP).
    pub addresses: Vec<IpAddr>,
}

/// The last claim recorded on the address's cloud resource: the arbiter between nodes that
/// cannot hear each other (the newest claim wins; see `docs/arbiter.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    /// Grows by one with every claim.
    pub epoch: u64,
    /// Who made that claim.
    pub holder: InstanceId,
}

/// How a provider keeps the [`ClaimRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arbiter {
    /// No record in this cloud or mode: the holders alone decide.
    None,
    /// Written next to the attach and read back; without a version check, two concurrent
    /// claims can both pass, and the last writer's record then decides at the next read.
    WriteThenVerify,
    /// Compare-and-swap on the resource's version: a claim based on a stale read fails with
    /// [`Error::Conflict`] and changes nothing.
    CompareAndSwap,
}

/// What the API says about an address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressState {
    /// The instances it is attached to right now.
    pub holders: Vec<InstanceId>,
    /// The last claim recorded on it, if any (always `None` with [`Arbiter::None`]).
    pub record: Option<ClaimRecord>,
}

/// Why a provider call failed, in the terms the decision core acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Transient (network error, timeout, 5xx, operation that timed out): retry with backoff.
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// The API asked us to slow down; wait at least `retry_after` when given.
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The cloud refused because its state differs from what we assumed (409/412, operation
    /// `conflict`): re-read and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The address, instance or group does not exist (in this zone/region).
    #[error("not found: {0}")]
    NotFound(String),
    /// Credentials rejected or missing permission: fatal until the configuration changes.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The request itself is wrong (bad configuration, malformed response): do not retry as is.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether the same call may succeed later without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Retryable(_) | Error::RateLimited { .. } | Error::Conflict(_)
        )
    }

    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Retryable(_) => "retryable",
            Error::RateLimited { .. } => "rate_limited",
            Error::Conflict(_) => "conflict",
            Error::NotFound(_) => "not_found",
            Error::Auth(_) => "auth",
            Error::Invalid(_) => "invalid",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A credential that must never reach a log line, an error message or status output.
///
/// `Debug` and `Display` print `[redacted]`; the value is only reachable through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the agent needs from a cloud to float one address between VMs.
///
/// Every method is bounded in time (per-request timeouts and bounded retries inside the
/// provider) and safe to call concurrently for different addresses. Mutations wait for the
/// cloud's asynchronous operation to finish before returning, so `Ok` means "done".
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The cloud's name, e.g. "exoscale".
    fn name(&self) -> &'static str;

    /// This VM: its id from the configuration or the metadata service, confirmed by the API.
    async fn whoami(&self) -> Result<Instance>;

    /// The running members of a peer group (Exoscale: a security group, by name or id),
    /// excluding `me`.
    async fn peers(&self, group: &str, me: &InstanceId) -> Result<Vec<Instance>>;

    /// The instances the address is attached to right now, according to the API.
    async fn holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>>;

    /// Attach the address to `to`. Attaching where it is already attached succeeds.
    async fn attach(&self, ip: IpAddr, to: &InstanceId) -> Result<()>;

    /// Detach the address from `from`. Detaching where it is not attached succeeds.
    async fn detach(&self, ip: IpAddr, from: &InstanceId) -> Result<()>;

    /// How this provider (in its configured mode) keeps the claim record.
    fn arbiter(&self) -> Arbiter {
        Arbiter::None
    }

    /// The holders and the claim record, read together where the cloud allows.
    async fn state(&self, ip: IpAddr) -> Result<AddressState> {
        Ok(AddressState {
            holders: self.holders(ip).await?,
            record: None,
        })
    }

    /// Attach the address to `record.holder` and record the claim on the cloud resource.
    /// `seen` is the epoch of the record read before deciding to claim (`None`: there was no
    /// record). With [`Arbiter::CompareAndSwap`] a claim whose `seen` no longer matches, or
    /// whose write loses a version race, fails with [`Error::Conflict`] and changes nothing;
    /// with [`Arbiter::WriteThenVerify`] a read-back that shows another claim fails the same way
    /// (the attach may then have happened: the next read tells).
    async fn claim(&self, ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
        let _ = seen;
        self.attach(ip, &record.holder).await
    }
}

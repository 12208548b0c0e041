//! A simulated cloud: faithful HTTP emulators of the API subsets the agent uses, with fault
//! injection, a holder timeline, a metadata stub and an optional route hook.
//!
//! Three clouds, chosen by the seed ([`CloudSeed`]):
//! * Exoscale API v2 under `/v2` ([`Seed`]);
//! * OpenStack Keystone v3 under `/identity` and Neutron v2.0 under `/network`
//!   ([`OpenStackSeed`], see [`openstack`]);
//! * Azure: ARM (`/subscriptions/…`) and the Entra ID authority (`/{tenant}/oauth2/v2.0/token`)
//!   at the root of the API listener, IMDS on the metadata listener ([`AzureSeed`], see
//!   [`azure`]).
//!
//! Used in-process by tests ([`start`] → [`SimHandle`]) and as a process by the demo and the
//! end-to-end tests (`exoip sim …`, see [`cli`]). The plumbing (the HTTP server that can drop
//! connections, [`Faults`], the [`timeline`], the [`route`] hook, the control API under
//! `/_sim`) is shared by all three; Azure's own controls are under `/_sim/azure/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use exoip_providers::sim::{self, AzureSeed, OpenStackSeed, Seed, SimConfig};
//! let sim = sim::start(SimConfig::new(Seed::example())).await?;
//! println!("API at {}", sim.api_url()); // http://127.0.0.1:<port>/v2
//! sim.shutdown().await;
//! let sim = sim::start(SimConfig::openstack(OpenStackSeed::example())).await?;
//! println!("auth_url {}", sim.api_url()); // http://127.0.0.1:<port>/identity/v3
//! sim.shutdown().await;
//! let sim = sim::start(SimConfig::azure(AzureSeed::example())).await?;
//! println!("ARM and authority {}", sim.api_url()); // http://127.0.0.1:<port>
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::InstanceId;

pub mod azure;
pub mod cli;
mod control;
mod exoscale;
pub mod faults;
mod metadata;
pub mod openstack;
pub mod route;
pub mod seed;
mod server;
pub mod timeline;

pub use azure::{AzureLabSeed, AzureSeed, AzureSeedError, AzureSim, AzureSimError};
pub use exoscale::Clock;
pub use faults::{Faults, Reason, Trigger};
pub use openstack::{LabSeed, OpenStackSeed};
pub use route::{nat_script, route_args, IpCommand, NatMapping, RouteRunner, NAT_TABLE};
pub use seed::{Seed, SeedError, EXAMPLE_SEED};
pub use timeline::{HolderEvent, TimelineEvent};

use exoscale::{lock, ControlError, ExoSim};
use faults::FaultState;
use openstack::OsSim;
use server::Dispatch;
use timeline::Timeline;

/// Which cloud to simulate, with its initial state.
// Built once per simulator: boxing the larger seed would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum CloudSeed {
    Exoscale(Seed),
    OpenStack(OpenStackSeed),
    Azure(AzureSeed),
}

impl CloudSeed {
    pub fn validate(&self) -> Result<(), SeedError> {
        match self {
            CloudSeed::Exoscale(s) => s.validate(),
            CloudSeed::OpenStack(s) => s.validate(),
            CloudSeed::Azure(s) => Ok(s.validate()?),
        }
    }
}

impl From<Seed> for CloudSeed {
    fn from(s: Seed) -> Self {
        CloudSeed::Exoscale(s)
    }
}

impl From<OpenStackSeed> for CloudSeed {
    fn from(s: OpenStackSeed) -> Self {
        CloudSeed::OpenStack(s)
    }
}

impl From<AzureSeed> for CloudSeed {
    fn from(s: AzureSeed) -> Self {
        CloudSeed::Azure(s)
    }
}

/// An Azure seed's problems are seed problems like the other clouds' (`SimError::Seed`).
impl From<AzureSeedError> for SeedError {
    fn from(e: AzureSeedError) -> Self {
        match e {
            AzureSeedError::Read { path, source } => SeedError::Read { path, source },
            AzureSeedError::Parse(e) => SeedError::Parse(e),
            AzureSeedError::Invalid(m) => SeedError::Invalid(m),
        }
    }
}

impl std::fmt::Display for CloudSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudSeed::Exoscale(s) => write!(f, "Exoscale: {s}"),
            CloudSeed::OpenStack(s) => write!(f, "OpenStack: {s}"),
            CloudSeed::Azure(s) => write!(f, "Azure: {s}"),
        }
    }
}

/// Everything [`start`] needs. Build with [`SimConfig::new`] (Exoscale),
/// [`SimConfig::openstack`] or [`SimConfig::azure`] and override fields.
pub struct SimConfig {
    pub seed: CloudSeed,
    /// The API and control listener; port 0 picks a free port.
    pub api_listen: SocketAddr,
    /// The metadata stub's listener, if any (Azure: IMDS).
    pub metadata_listen: Option<SocketAddr>,
    /// Holder changes are also written there, one JSON line each (truncated at start).
    pub timeline_path: Option<PathBuf>,
    /// Make traffic to each floating address reach its holders (only inside a disposable
    /// network namespace): Exoscale: kernel routes to the holders' public IPs; OpenStack: NAT
    /// rules; Azure: kernel routes of each public IP to its holder VM's private IP (see
    /// [`route`]).
    pub route_holders: bool,
    /// Runs the route commands; `None` runs the real `ip` and `nft`.
    pub route_runner: Option<Arc<dyn RouteRunner>>,
    pub faults: Faults,
    /// Time source for signature expiry, or token times on OpenStack (before
    /// `faults.clock_skew_secs`); `None`: the system clock. Not used by Azure.
    pub clock: Option<Clock>,
}

impl SimConfig {
    /// A simulated Exoscale on loopback on a free port, no metadata stub, no timeline file, no
    /// routes, no faults.
    pub fn new(seed: Seed) -> SimConfig {
        SimConfig::with_seed(CloudSeed::Exoscale(seed))
    }

    /// A simulated OpenStack, with the same defaults as [`SimConfig::new`].
    pub fn openstack(seed: OpenStackSeed) -> SimConfig {
        SimConfig::with_seed(CloudSeed::OpenStack(seed))
    }

    /// A simulated Azure, with the same defaults as [`SimConfig::new`].
    pub fn azure(seed: AzureSeed) -> SimConfig {
        SimConfig::with_seed(CloudSeed::Azure(seed))
    }

    pub fn with_seed(seed: CloudSeed) -> SimConfig {
        SimConfig {
            seed,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metadata_listen: None,
            timeline_path: None,
            route_holders: false,
            route_runner: None,
            faults: Faults::default(),
            clock: None,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &format_args!("{}", self.seed))
            .field("api_listen", &self.api_listen)
            .field("metadata_listen", &self.metadata_listen)
            .field("timeline_path", &self.timeline_path)
            .field("route_holders", &self.route_holders)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Why the simulator could not start or refused a control request.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("faults: {0}")]
    Faults(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create timeline file {path}: {source}")]
    Timeline {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

impl From<ControlError> for SimError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => SimError::NotFound(m),
            ControlError::Invalid(m) => SimError::Invalid(m),
        }
    }
}

impl From<AzureSimError> for SimError {
    fn from(e: AzureSimError) -> Self {
        match e {
            AzureSimError::Seed(e) => SimError::Seed(e.into()),
            AzureSimError::Faults(m) => SimError::Faults(m),
            AzureSimError::Listen { addr, source } => SimError::Listen { addr, source },
            AzureSimError::Timeline { path, source } => SimError::Timeline { path, source },
            AzureSimError::NotFound(m) => SimError::NotFound(m),
            AzureSimError::Options(m) | AzureSimError::Invalid(m) => SimError::Invalid(m),
        }
    }
}

impl From<AzureSeedError> for SimError {
    fn from(e: AzureSeedError) -> Self {
        SimError::Seed(e.into())
    }
}

/// The control API's view of an Azure refusal.
impl From<AzureSimError> for ControlError {
    fn from(e: AzureSimError) -> Self {
        match e {
            AzureSimError::NotFound(m) => ControlError::NotFound(m),
            AzureSimError::Invalid(m) => ControlError::Invalid(m),
            other => ControlError::Invalid(other.to_string()),
        }
    }
}

/// The simulated cloud behind a handle and the control API.
#[derive(Clone)]
pub(crate) enum Cloud {
    Exoscale(Arc<ExoSim>),
    OpenStack(Arc<OsSim>),
    Azure(Arc<AzureSim>),
}

impl Cloud {
    pub fn faults(&self) -> &Mutex<FaultState> {
        match self {
            Cloud::Exoscale(s) => &s.faults,
            Cloud::OpenStack(s) => &s.faults,
            Cloud::Azure(s) => &s.faults,
        }
    }

    pub fn timeline(&self) -> &Timeline {
        match self {
            Cloud::Exoscale(s) => &s.timeline,
            Cloud::OpenStack(s) => &s.timeline,
            Cloud::Azure(s) => &s.timeline,
        }
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        match self {
            Cloud::Exoscale(s) => s.holders(ip),
            Cloud::OpenStack(s) => s.holders(ip),
            Cloud::Azure(s) => s.holders(ip),
        }
    }

    pub fn force_holders(
        &self,
        ip: IpAddr,
        holders: &[String],
    ) -> Result<Vec<InstanceId>, ControlError> {
        match self {
            Cloud::Exoscale(s) => s.force_holders(ip, holders),
            Cloud::OpenStack(s) => s.force_holders(ip, holders),
            Cloud::Azure(s) => {
                let vms: Vec<InstanceId> = holders.iter().cloned().map(InstanceId).collect();
                Ok(s.force_holders(ip, &vms)?)
            }
        }
    }

    /// Once the servers are stopped: OpenStack removes its NAT table, Azure stops the timers of
    /// pending operations. Idempotent (shutdown and drop both call it).
    fn stop(&self) {
        match self {
            Cloud::Exoscale(_) => {}
            Cloud::OpenStack(s) => s.teardown(),
            Cloud::Azure(s) => s.shutdown(),
        }
    }

    pub fn state_json(&self) -> serde_json::Value {
        match self {
            Cloud::Exoscale(s) => s.state_json(),
            Cloud::OpenStack(s) => s.state_json(),
            Cloud::Azure(s) => s.state_json(),
        }
    }
}

/// A running simulator. Dropping it stops the servers too; [`SimHandle::shutdown`] also waits
/// for them (and, on OpenStack with the route hook, removes the NAT table; on Azure, stops the
/// timers of pending operations).
pub struct SimHandle {
    cloud: Cloud,
    api_addr: SocketAddr,
    metadata_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Listen { addr, source })
}

/// Validates the configuration, binds the listeners, applies the seeded routes and serves.
pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
    cfg.seed.validate()?;
    cfg.faults.validate().map_err(SimError::Faults)?;
    let timeline =
        Timeline::open(cfg.timeline_path.as_deref()).map_err(|source| SimError::Timeline {
            path: cfg.timeline_path.clone().unwrap_or_default(),
            source,
        })?;
    let api = bind(cfg.api_listen).await?;
    let md = match cfg.metadata_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let api_addr = api.local_addr().map_err(|source| SimError::Listen {
        addr: cfg.api_listen,
        source,
    })?;
    let metadata_addr = match &md {
        Some(l) => Some(l.local_addr().map_err(|source| SimError::Listen {
            addr: cfg.metadata_listen.expect("bound above"),
            source,
        })?),
        None => None,
    };

    let routes: Option<Arc<dyn RouteRunner>> = if cfg.route_holders {
        Some(cfg.route_runner.unwrap_or_else(|| Arc::new(IpCommand)))
    } else {
        None
    };
    let clock: Clock = cfg.clock.unwrap_or_else(|| Arc::new(SystemTime::now));
    let (stop, stopped) = watch::channel(false);
    let summary = cfg.seed.to_string();
    let faults = cfg.faults;
    let (cloud, mut prefixed, md_router, default) = match cfg.seed {
        CloudSeed::Exoscale(seed) => {
            let sim = Arc::new(ExoSim::new(
                &seed,
                FaultState::new(faults),
                timeline,
                routes,
                clock,
                stopped.clone(),
            ));
            // Before serving: an agent that reads "attached" must find the route already there.
            sim.route_all();
            (
                Cloud::Exoscale(sim.clone()),
                vec![("/v2", exoscale::router(sim.clone()))],
                metadata::router(sim),
                not_found("not found: the API is under /v2, the control API under /_sim\n"),
            )
        }
        CloudSeed::OpenStack(seed) => {
            let sim = Arc::new(OsSim::new(
                &seed,
                FaultState::new(faults),
                timeline,
                routes,
                clock,
                api_addr,
                stopped.clone(),
            ));
            sim.start_routes();
            (
                Cloud::OpenStack(sim.clone()),
                vec![
                    ("/identity", openstack::keystone::router(sim.clone())),
                    ("/network", openstack::neutron::router(sim.clone())),
                ],
                openstack::metadata::router(sim),
                not_found(
                    "not found: Keystone is under /identity, Neutron under /network, the \
                     control API under /_sim\n",
                ),
            )
        }
        CloudSeed::Azure(seed) => {
            // Applies the seeded routes before serving, as the others do.
            let sim = AzureSim::with_timeline(&seed, faults, timeline, routes);
            (
                Cloud::Azure(sim.clone()),
                // Before the generic `/_sim` below: Azure's own controls win their prefix.
                vec![("/_sim/azure", sim.control_router())],
                sim.imds_router(),
                // ARM and the authority have no common prefix: they answer everything else
                // (with ARM's own 404 for unknown paths).
                sim.router(),
            )
        }
    };
    prefixed.push(("/_sim", control::router(cloud.clone())));

    let mut tasks = vec![tokio::spawn(server::serve(
        api,
        Dispatch {
            name: "api",
            prefixed,
            default,
        },
        stopped.clone(),
    ))];
    if let Some(md) = md {
        tasks.push(tokio::spawn(server::serve(
            md,
            Dispatch {
                name: "metadata",
                prefixed: Vec::new(),
                default: md_router,
            },
            stopped,
        )));
    }
    let handle = SimHandle {
        cloud,
        api_addr,
        metadata_addr,
        stop,
        tasks,
    };
    tracing::info!(
        "simulated {summary} on {}{}",
        match handle.cloud {
            Cloud::Exoscale(_) => handle.api_url(),
            Cloud::Azure(_) => format!("{} (ARM and login)", handle.api_url()),
            Cloud::OpenStack(_) => format!(
                "{} and {}",
                handle.api_url(),
                handle.network_url().unwrap_or_default()
            ),
        },
        metadata_addr
            .map(|a| format!(", metadata on http://{a}"))
            .unwrap_or_default()
    );
    Ok(handle)
}

/// The API listener's answer to a path no emulator serves.
fn not_found(message: &'static str) -> axum::Router {
    axum::Router::new()
        .fallback(move || async move { (axum::http::StatusCode::NOT_FOUND, message) })
}

impl SimHandle {
    /// `"exoscale"`, `"openstack"` or `"azure"`.
    pub fn provider(&self) -> &'static str {
        match self.cloud {
            Cloud::Exoscale(_) => "exoscale",
            Cloud::OpenStack(_) => "openstack",
            Cloud::Azure(_) => "azure",
        }
    }

    /// The API base URL: Exoscale `http://127.0.0.1:41234/v2`; OpenStack the Keystone
    /// `auth_url`, `http://127.0.0.1:41234/identity/v3`; Azure the ARM endpoint, which is also
    /// the authority host, `http://127.0.0.1:41234`.
    pub fn api_url(&self) -> String {
        match self.cloud {
            Cloud::Exoscale(_) => format!("http://{}/v2", self.api_addr),
            Cloud::OpenStack(_) => format!("http://{}/identity/v3", self.api_addr),
            Cloud::Azure(_) => format!("http://{}", self.api_addr),
        }
    }

    /// OpenStack: the Neutron endpoint (unversioned, as in the catalog),
    /// `http://127.0.0.1:41234/network`.
    pub fn network_url(&self) -> Option<String> {
        match self.cloud {
            Cloud::Exoscale(_) | Cloud::Azure(_) => None,
            Cloud::OpenStack(_) => Some(format!("http://{}/network", self.api_addr)),
        }
    }

    /// The listener's base URL (the control API is under `/_sim/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The metadata stub's base URL, e.g. `http://127.0.0.1:41235` (Azure: the IMDS endpoint,
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    pub fn metadata_url(&self) -> Option<String> {
        self.metadata_addr.map(|a| format!("http://{a}"))
    }

    pub fn metadata_addr(&self) -> Option<SocketAddr> {
        self.metadata_addr
    }

    /// The instances the EIP with address `ip` is attached to, in attach order (empty for an
    /// unknown address). OpenStack: for a floating IP, the server (`device_id`) of the port it
    /// is on; for another address (a VIP), the servers whose ports have it in their
    /// `allowed_address_pairs`. Azure: the VM (by name) whose NIC has the public IP or the
    /// secondary private address, after its operation completed.
    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        self.cloud.holders(ip)
    }

    /// Every holder change so far, in order.
    pub fn timeline(&self) -> Vec<TimelineEvent> {
        self.cloud.timeline().events()
    }

    pub fn faults(&self) -> Faults {
        lock(self.cloud.faults()).faults.clone()
    }

    /// Replaces the faults (and their remaining counts).
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate().map_err(SimError::Faults)?;
        lock(self.cloud.faults()).faults = faults;
        Ok(())
    }

    /// Changes some faults in place, keeping the others and their counts.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<(), SimError> {
        let mut state = lock(self.cloud.faults());
        let mut f = state.faults.clone();
        change(&mut f);
        f.validate().map_err(SimError::Faults)?;
        state.faults = f;
        Ok(())
    }

    /// Skews the cloud's clock by `secs` (positive: the cloud is ahead): signature expiry on
    /// Exoscale, token times on OpenStack; no effect on Azure.
    pub fn set_clock_skew(&self, secs: i64) {
        lock(self.cloud.faults()).faults.clock_skew_secs = secs;
    }

    /// Sets an instance's state (e.g. `"stopped"`). Exoscale; Azure: the VM's power state
    /// (`id` is the VM name; `running`, `stopped`, `deallocated`, …).
    pub fn set_instance_state(&self, id: &InstanceId, state: &str) -> Result<(), SimError> {
        match &self.cloud {
            Cloud::Exoscale(s) => Ok(s.set_instance_state(&id.0, state)?),
            Cloud::Azure(s) => Ok(s.set_power_state(&id.0, state)?),
            Cloud::OpenStack(_) => Err(SimError::Invalid(
                "the OpenStack simulator has no instance states".into(),
            )),
        }
    }

    /// Replaces the holders of the address `ip` at once, as another actor would (recorded on
    /// the timeline as forced). Returns the new holders. OpenStack: a floating IP moves to the
    /// one server given (its first port with a router path), or is dissociated; a VIP is added
    /// to the given servers' ports' `allowed_address_pairs` and removed from the others';
    /// every port or floating IP changed gets its `revision_number` bumped. Azure: at most one
    /// VM (by name); a public IP moves to its primary NIC's primary ipConfiguration, a private
    /// address becomes a secondary ipConfiguration of that NIC; the NICs' etags change.
    pub fn force_holders(
        &self,
        ip: IpAddr,
        holders: &[InstanceId],
    ) -> Result<Vec<InstanceId>, SimError> {
        let ids: Vec<String> = holders.iter().map(|h| h.0.clone()).collect();
        Ok(self.cloud.force_holders(ip, &ids)?)
    }

    /// The same JSON as `GET /_sim/state`.
    pub fn state(&self) -> serde_json::Value {
        self.cloud.state_json()
    }

    fn openstack(&self) -> Result<&OsSim, SimError> {
        match &self.cloud {
            Cloud::OpenStack(s) => Ok(s),
            Cloud::Exoscale(_) | Cloud::Azure(_) => Err(SimError::Invalid(
                "only the OpenStack simulator has this control".into(),
            )),
        }
    }

    /// Azure: the simulator itself, for its own controls (options, token expiry, power
    /// states; the same as `/_sim/azure/…`). `None` for the other clouds.
    pub fn azure(&self) -> Option<&Arc<AzureSim>> {
        match &self.cloud {
            Cloud::Azure(s) => Some(s),
            Cloud::Exoscale(_) | Cloud::OpenStack(_) => None,
        }
    }

    /// Invalidates every token issued so far; returns how many there were. OpenStack:
    /// revokes them (the next Neutron call with one gets 401). Azure: expires the Entra ID and
    /// IMDS tokens (the next ARM call with one gets 401 `ExpiredAuthenticationToken`).
    pub fn revoke_tokens(&self) -> Result<usize, SimError> {
        match &self.cloud {
            Cloud::Azure(s) => Ok(s.expire_tokens()),
            _ => Ok(self.openstack()?.revoke_tokens()),
        }
    }

    /// The lifetime of the tokens issued from now on: OpenStack (Keystone) and Azure (Entra
    /// ID and IMDS; at least 1 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) -> Result<(), SimError> {
        match &self.cloud {
            Cloud::Azure(s) => {
                let mut options = s.options();
                options.token_lifetime = lifetime;
                Ok(s.set_options(options)?)
            }
            _ => Ok(self.openstack()?.set_token_lifetime(lifetime)?),
        }
    }

    /// OpenStack: deletes a port (any project) as another actor would; its floating IPs are
    /// dissociated (recorded on the timeline as forced).
    pub fn delete_port(&self, id: &str) -> Result<(), SimError> {
        Ok(self.openstack()?.delete_port(id)?)
    }

    /// OpenStack: switches a Neutron extension (e.g. `port-security-groups-filtering`) on or
    /// off.
    pub fn set_extension(&self, alias: &str, enabled: bool) -> Result<(), SimError> {
        Ok(self.openstack()?.set_extension(alias, enabled)?)
    }

    /// Stops serving, closes open connections and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.cloud.stop();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.cloud.stop();
    }
}

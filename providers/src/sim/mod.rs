//! A simulated cloud: a faithful HTTP emulator of the Exoscale API v2 subset the agent uses,
//! with fault injection, a holder timeline, a metadata stub and an optional route hook.
//!
//! Used in-process by tests ([`start`] → [`SimHandle`]) and as a process by the demo and the
//! end-to-end tests (`exoip sim …`, see [`cli`]). The plumbing that is not Exoscale-specific
//! (the HTTP server that can drop connections, [`Faults`], the [`timeline`], the [`seed`] loader
//! conventions, the [`route`] hook) is meant to be shared by the OpenStack and Azure emulators
//! that will sit beside the Exoscale one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use exoip_providers::sim::{self, Seed, SimConfig};
//! let sim = sim::start(SimConfig::new(Seed::example())).await?;
//! println!("API at {}", sim.api_url()); // http://127.0.0.1:<port>/v2
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::InstanceId;

pub mod cli;
mod control;
mod exoscale;
pub mod faults;
mod metadata;
pub mod route;
pub mod seed;
mod server;
pub mod timeline;

pub use exoscale::Clock;
pub use faults::{Faults, Reason, Trigger};
pub use route::{route_args, IpCommand, RouteRunner};
pub use seed::{Seed, SeedError, EXAMPLE_SEED};
pub use timeline::{HolderEvent, TimelineEvent};

use exoscale::{lock, ControlError, ExoSim};
use faults::FaultState;
use server::Dispatch;
use timeline::Timeline;

/// Everything [`start`] needs. Build with [`SimConfig::new`] and override fields.
pub struct SimConfig {
    pub seed: Seed,
    /// The API and control listener; port 0 picks a free port.
    pub api_listen: SocketAddr,
    /// The metadata stub's listener, if any.
    pub metadata_listen: Option<SocketAddr>,
    /// Holder changes are also written there, one JSON line each (truncated at start).
    pub timeline_path: Option<PathBuf>,
    /// Point each EIP's kernel route at its holders (only inside a disposable network namespace).
    pub route_holders: bool,
    /// Runs the route commands; `None` runs the real `ip`.
    pub route_runner: Option<Arc<dyn RouteRunner>>,
    pub faults: Faults,
    /// Time source for signature expiry (before `faults.clock_skew_secs`); `None`: the system
    /// clock.
    pub clock: Option<Clock>,
}

impl SimConfig {
    /// Loopback on a free port, no metadata stub, no timeline file, no routes, no faults.
    pub fn new(seed: Seed) -> SimConfig {
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

/// A running simulator. Dropping it stops the servers too; [`SimHandle::shutdown`] also waits
/// for them.
pub struct SimHandle {
    sim: Arc<ExoSim>,
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
    let sim = Arc::new(ExoSim::new(
        &cfg.seed,
        FaultState::new(cfg.faults),
        timeline,
        routes,
        clock,
        stopped.clone(),
    ));
    // Before serving: an agent that reads "attached" must find the route already there.
    sim.route_all();

    let mut tasks = vec![tokio::spawn(server::serve(
        api,
        Dispatch {
            name: "api",
            prefixed: vec![
                ("/v2", exoscale::router(sim.clone())),
                ("/_sim", control::router(sim.clone())),
            ],
            default: axum::Router::new().fallback(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    "not found: the API is under /v2, the control API under /_sim\n",
                )
            }),
        },
        stopped.clone(),
    ))];
    if let Some(md) = md {
        let router = metadata::router(sim.clone());
        tasks.push(tokio::spawn(server::serve(
            md,
            Dispatch {
                name: "metadata",
                prefixed: Vec::new(),
                default: router,
            },
            stopped,
        )));
    }
    tracing::info!(
        "simulated Exoscale ({}) on http://{api_addr}/v2{}",
        cfg.seed,
        metadata_addr
            .map(|a| format!(", metadata on http://{a}"))
            .unwrap_or_default()
    );
    Ok(SimHandle {
        sim,
        api_addr,
        metadata_addr,
        stop,
        tasks,
    })
}

impl SimHandle {
    /// The API base URL, e.g. `http://127.0.0.1:41234/v2`.
    pub fn api_url(&self) -> String {
        format!("http://{}/v2", self.api_addr)
    }

    /// The listener's base URL (the control API is under `/_sim/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The metadata stub's base URL, e.g. `http://127.0.0.1:41235`.
    pub fn metadata_url(&self) -> Option<String> {
        self.metadata_addr.map(|a| format!("http://{a}"))
    }

    pub fn metadata_addr(&self) -> Option<SocketAddr> {
        self.metadata_addr
    }

    /// The instances the EIP with address `ip` is attached to, in attach order (empty for an
    /// unknown address).
    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        self.sim.holders(ip)
    }

    /// Every holder change so far, in order.
    pub fn timeline(&self) -> Vec<TimelineEvent> {
        self.sim.timeline.events()
    }

    pub fn faults(&self) -> Faults {
        lock(&self.sim.faults).faults.clone()
    }

    /// Replaces the faults (and their remaining counts).
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate().map_err(SimError::Faults)?;
        lock(&self.sim.faults).faults = faults;
        Ok(())
    }

    /// Changes some faults in place, keeping the others and their counts.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<(), SimError> {
        let mut state = lock(&self.sim.faults);
        let mut f = state.faults.clone();
        change(&mut f);
        f.validate().map_err(SimError::Faults)?;
        state.faults = f;
        Ok(())
    }

    /// Skews the clock used for signature expiry by `secs` (positive: the cloud is ahead).
    pub fn set_clock_skew(&self, secs: i64) {
        lock(&self.sim.faults).faults.clock_skew_secs = secs;
    }

    /// Sets an instance's state (e.g. `"stopped"`).
    pub fn set_instance_state(&self, id: &InstanceId, state: &str) -> Result<(), SimError> {
        Ok(self.sim.set_instance_state(&id.0, state)?)
    }

    /// Replaces the holders of the EIP `ip` at once, as another actor would (recorded on the
    /// timeline as forced). Returns the new holders.
    pub fn force_holders(
        &self,
        ip: IpAddr,
        holders: &[InstanceId],
    ) -> Result<Vec<InstanceId>, SimError> {
        let ids: Vec<String> = holders.iter().map(|h| h.0.clone()).collect();
        Ok(self.sim.force_holders(ip, &ids)?)
    }

    /// The same JSON as `GET /_sim/state`.
    pub fn state(&self) -> serde_json::Value {
        self.sim.state_json()
    }

    /// Stops serving, closes open connections and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

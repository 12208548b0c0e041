//! A simulated Azure: the Entra ID token endpoint, IMDS (instance metadata and managed-identity
//! tokens) and the ARM `Microsoft.Network` subset a failover agent uses (NICs with their
//! ipConfigurations, public IPs, NSGs, virtual networks, VMs and long-running operations), with
//! the rules of `shared/clouds/azure.md` §13, fault injection ([`Faults`]), a holder timeline
//! ([`TimelineEvent`]) and the optional route hook ([`RouteRunner`]).
//!
//! Self-contained beside the simulated Exoscale: [`AzureSim`] is the state, shared behind an
//! `Arc`; three routers serve it:
//!
//! * [`AzureSim::router`]: ARM at `/subscriptions/…` and the login authority at
//!   `/{tenant}/oauth2/v2.0/token` (+ `/{tenant}/v2.0/.well-known/openid-configuration`), so
//!   that one listener `http://HOST:PORT` is both `AZURE_AUTHORITY_HOST` and the ARM endpoint;
//! * [`AzureSim::control_router`]: `/_sim/azure/…` (see [`control`]);
//! * [`AzureSim::imds_router`]: `/metadata/instance`, `/metadata/identity/oauth2/token`, on a
//!   listener of its own; the calling VM is the one whose primary address is the request's
//!   source address.
//!
//! [`AzureSim::serve`] binds both listeners with the shared server plumbing (which can drop
//! connections). The shared simulator handle ([`crate::sim::start`] with
//! [`crate::sim::SimConfig::azure`], and `exoip sim --provider azure`) serves the same routers
//! and adds the generic control API under `/_sim/` (state, timeline, faults, forced holders).
//!
//! Where the real API is ambiguous the simulator is the stricter one; what it decides on its
//! own is marked "(simulator)" in error messages and in [`seed::AzureOptions`].

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::faults::{FaultState, Faults, OpOutcome};
use super::route::{self, RouteRunner};
use super::server::{self, Dispatch};
use super::timeline::{unix_now, HolderEvent, Timeline, TimelineEvent};
use crate::{InstanceId, Secret};

mod arm;
pub mod control;
mod imds;
mod login;
pub mod seed;
mod world;

pub use seed::{lab, AzureLabSeed, AzureOptions, AzureSeed, AzureSeedError, EXAMPLE_AZURE_SEED};

use world::{failure_of, new_etag, IpConfig, OpStatus, OpTarget, ProvState, World};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one request must not wedge the whole simulated cloud.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn rfc3339_now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Why the simulated Azure could not start or refused a control request.
#[derive(Debug, thiserror::Error)]
pub enum AzureSimError {
    #[error(transparent)]
    Seed(#[from] AzureSeedError),
    #[error("faults: {0}")]
    Faults(String),
    #[error("options: {0}")]
    Options(String),
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

/// A service principal of the seed.
pub(crate) struct Principal {
    pub client_id: String,
    pub secret: Secret,
}

/// The whole simulated Azure: state, faults, options, tokens, timeline.
pub struct AzureSim {
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) options: Mutex<AzureOptions>,
    pub(crate) tokens: login::Tokens,
    pub(crate) timeline: Timeline,
    pub(crate) principals: Vec<Principal>,
    routes: Option<Arc<dyn RouteRunner>>,
    /// Wakes the timers of pending operations when the simulator goes away.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for AzureSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSim").finish_non_exhaustive()
    }
}

impl AzureSim {
    /// Validates the seed and faults, opens the timeline (a path: also written there as JSON
    /// lines, truncated first), and applies the seeded routes when `routes` is given.
    pub fn new(
        seed: &AzureSeed,
        faults: Faults,
        timeline_path: Option<&Path>,
        routes: Option<Arc<dyn RouteRunner>>,
    ) -> Result<Arc<AzureSim>, AzureSimError> {
        seed.validate()?;
        faults.validate().map_err(AzureSimError::Faults)?;
        let timeline = Timeline::open(timeline_path).map_err(|source| AzureSimError::Timeline {
            path: timeline_path.map(Path::to_path_buf).unwrap_or_default(),
            source,
        })?;
        Ok(AzureSim::with_timeline(seed, faults, timeline, routes))
    }

    /// As [`AzureSim::new`] with an already open timeline and a seed already validated.
    pub(crate) fn with_timeline(
        seed: &AzureSeed,
        faults: Faults,
        timeline: Timeline,
        routes: Option<Arc<dyn RouteRunner>>,
    ) -> Arc<AzureSim> {
        let sim = Arc::new(AzureSim {
            world: Mutex::new(World::from_seed(seed)),
            faults: Mutex::new(FaultState::new(faults)),
            options: Mutex::new(seed.options.clone()),
            tokens: login::Tokens::default(),
            timeline,
            principals: seed
                .service_principals
                .iter()
                .map(|p| Principal {
                    client_id: p.client_id.clone(),
                    secret: p.client_secret.clone(),
                })
                .collect(),
            routes,
            stop: watch::channel(false).0,
        });
        // Before serving: an agent that reads "attached" must find the route already there.
        sim.route_all();
        sim
    }

    /// ARM (`/subscriptions/…`) and the login authority (`/{tenant}/oauth2/v2.0/token`).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        arm::router(self.clone()).merge(login::router(self.clone()))
    }

    /// IMDS: `/metadata/instance` and `/metadata/identity/oauth2/token`.
    pub fn imds_router(self: &Arc<Self>) -> axum::Router {
        imds::router(self.clone())
    }

    /// The control API under `/_sim/azure/`.
    pub fn control_router(self: &Arc<Self>) -> axum::Router {
        control::router(self.clone())
    }

    /// Serves [`AzureSim::router`] and [`AzureSim::control_router`] on `api`, and
    /// [`AzureSim::imds_router`] on `imds` if given (port 0 picks a free port).
    pub async fn serve(
        self: &Arc<Self>,
        api: SocketAddr,
        imds: Option<SocketAddr>,
    ) -> Result<AzureServers, AzureSimError> {
        async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AzureSimError> {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| AzureSimError::Listen { addr, source })?;
            let bound = l
                .local_addr()
                .map_err(|source| AzureSimError::Listen { addr, source })?;
            Ok((l, bound))
        }
        let (api_listener, api_addr) = bind(api).await?;
        let imds_bound = match imds {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::serve(
            api_listener,
            Dispatch {
                name: "azure-api",
                prefixed: vec![("/_sim", self.control_router())],
                default: self.router(),
            },
            stopped.clone(),
        ))];
        let imds_addr = match imds_bound {
            Some((l, addr)) => {
                tasks.push(tokio::spawn(server::serve(
                    l,
                    Dispatch {
                        name: "azure-imds",
                        prefixed: Vec::new(),
                        default: self.imds_router(),
                    },
                    stopped,
                )));
                Some(addr)
            }
            None => None,
        };
        tracing::info!(
            "simulated Azure on http://{api_addr} (ARM and login){}",
            imds_addr
                .map(|a| format!(", IMDS on http://{a}"))
                .unwrap_or_default()
        );
        Ok(AzureServers {
            api_addr,
            imds_addr,
            stop,
            tasks,
        })
    }

    /// The VMs holding the public IP or secondary private address `ip`, in NIC order (empty
    /// for an unknown or unattached address). Follows completed operations only.
    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        let world = lock(&self.world);
        let held = world.holdings();
        let mut out: Vec<InstanceId> = Vec::new();
        if let Some(h) = held.get(&ip.to_canonical()) {
            for x in &h.holders {
                let id = InstanceId(x.vm.clone());
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Every holder change so far, in order.
    pub fn timeline(&self) -> Vec<TimelineEvent> {
        self.timeline.events()
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).faults.clone()
    }

    /// Replaces the faults (and their remaining counts).
    pub fn set_faults(&self, faults: Faults) -> Result<(), AzureSimError> {
        faults.validate().map_err(AzureSimError::Faults)?;
        lock(&self.faults).faults = faults;
        Ok(())
    }

    /// Changes some faults in place, keeping the others and their counts.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<(), AzureSimError> {
        let mut state = lock(&self.faults);
        let mut f = state.faults.clone();
        change(&mut f);
        f.validate().map_err(AzureSimError::Faults)?;
        state.faults = f;
        Ok(())
    }

    pub fn options(&self) -> AzureOptions {
        lock(&self.options).clone()
    }

    /// Replaces the options (token lifetime, `Retry-After`, busy status, page size, IMDS default
    /// VM).
    pub fn set_options(&self, options: AzureOptions) -> Result<(), AzureSimError> {
        options.validate().map_err(AzureSimError::Options)?;
        if let Some(vm) = &options.imds_default_vm {
            if lock(&self.world).vm(vm).is_none() {
                return Err(AzureSimError::Options(format!(
                    "imds_default_vm: unknown VM {vm:?}"
                )));
            }
        }
        *lock(&self.options) = options;
        Ok(())
    }

    /// Makes every access token issued so far expired (as if their lifetime had run out):
    /// clients must notice the 401 and fetch a new one.
    pub fn expire_tokens(&self) -> usize {
        self.tokens.expire_all()
    }

    /// Sets a VM's power state (`PowerState/<state>` in its instance view).
    pub fn set_power_state(&self, vm: &str, state: &str) -> Result<(), AzureSimError> {
        if !seed::POWER_STATES.contains(&state) {
            return Err(AzureSimError::Invalid(format!(
                "power state {state:?} is not one of {}",
                seed::POWER_STATES.join(", ")
            )));
        }
        let mut world = lock(&self.world);
        let v = world
            .vms
            .iter_mut()
            .find(|v| v.name.eq_ignore_ascii_case(vm))
            .ok_or_else(|| AzureSimError::NotFound(format!("no VM {vm}")))?;
        tracing::info!("VM {} is now {state}", v.name);
        v.power_state = state.to_string();
        Ok(())
    }

    /// Stops the timers of pending operations (they never complete afterwards).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Routes every public IP as seeded (start-up).
    fn route_all(&self) {
        let Some(runner) = &self.routes else { return };
        let world = lock(&self.world);
        for (ip, held) in world.holdings() {
            if held.resource_id.is_some() {
                let via: Vec<IpAddr> = held
                    .holders
                    .iter()
                    .map(|h| IpAddr::V4(h.private_ip))
                    .collect();
                route::apply(runner.as_ref(), ip, &via);
            }
        }
    }

    /// Changes the world and records every resulting holder change and new claim record
    /// (timeline, logs, routes), all under the world lock so that the timeline order is the
    /// order of the changes.
    pub(crate) fn commit<R>(
        &self,
        world: &mut World,
        forced: bool,
        change: impl FnOnce(&mut World) -> R,
    ) -> R {
        let before = world.holdings();
        let records_before = world.records();
        let r = change(world);
        let after = world.holdings();
        let records_after = world.records();
        let t = unix_now();
        let keys: BTreeSet<IpAddr> = before.keys().chain(after.keys()).copied().collect();
        for ip in keys {
            let empty = world::Held {
                resource_id: None,
                holders: Vec::new(),
            };
            let b = before.get(&ip).unwrap_or(&empty);
            let a = after.get(&ip).unwrap_or(&empty);
            if b.holders == a.holders {
                continue;
            }
            let mut holders: Vec<InstanceId> = Vec::new();
            for h in &a.holders {
                let id = InstanceId(h.vm.clone());
                if !holders.contains(&id) {
                    holders.push(id);
                }
            }
            let resource = b.resource_id.clone().or_else(|| a.resource_id.clone());
            let mut changes: Vec<(HolderEvent, &world::Holding)> = b
                .holders
                .iter()
                .filter(|h| !a.holders.contains(h))
                .map(|h| (HolderEvent::Detach, h))
                .collect();
            changes.extend(
                a.holders
                    .iter()
                    .filter(|h| !b.holders.contains(h))
                    .map(|h| (HolderEvent::Attach, h)),
            );
            for (event, h) in changes {
                let eip_id = resource
                    .clone()
                    .unwrap_or_else(|| world.ids.ip_config(&h.nic, &h.ip_config));
                tracing::info!(
                    "{ip} {event:?} {} ({}/{}){}: holders now {:?}",
                    h.vm,
                    h.nic,
                    h.ip_config,
                    if forced { " [forced]" } else { "" },
                    holders.iter().map(|i| i.0.as_str()).collect::<Vec<_>>()
                );
                self.timeline.record(TimelineEvent {
                    t,
                    zone: world.ids.location.clone(),
                    ip,
                    eip_id,
                    event,
                    instance: InstanceId(h.vm.clone()),
                    holders: holders.clone(),
                    forced,
                    epoch: None,
                });
            }
            if let (Some(runner), Some(_)) = (&self.routes, &resource) {
                let via: Vec<IpAddr> = a.holders.iter().map(|h| IpAddr::V4(h.private_ip)).collect();
                route::apply(runner.as_ref(), ip, &via);
            }
        }
        // New claim records, after the holder changes they came with.
        for (ip, record) in &records_after {
            if records_before.get(ip) == Some(record) {
                continue;
            }
            let held = after.get(ip);
            let mut holders: Vec<InstanceId> = Vec::new();
            for h in held.map(|h| h.holders.as_slice()).unwrap_or_default() {
                let id = InstanceId(h.vm.clone());
                if !holders.contains(&id) {
                    holders.push(id);
                }
            }
            let eip_id = match held {
                Some(world::Held {
                    resource_id: Some(id),
                    ..
                }) => id.clone(),
                Some(world::Held { holders: hs, .. }) if !hs.is_empty() => {
                    world.ids.ip_config(&hs[0].nic, &hs[0].ip_config)
                }
                _ => String::new(),
            };
            tracing::info!(
                "{ip} claim: epoch {} by {}: holders {:?}",
                record.epoch,
                record.holder,
                holders.iter().map(|i| i.0.as_str()).collect::<Vec<_>>()
            );
            self.timeline.record(TimelineEvent {
                t,
                zone: world.ids.location.clone(),
                ip: *ip,
                eip_id,
                event: HolderEvent::Claim,
                instance: record.holder.clone(),
                holders,
                forced,
                epoch: Some(record.epoch),
            });
        }
        r
    }

    /// Starts the timer of operation `op_id`: it completes after `delay`, unless the simulator
    /// is dropped or shut down first. A zero delay completes it now.
    pub(crate) fn schedule(self: &Arc<Self>, op_id: String, delay: Duration) {
        if delay.is_zero() {
            self.complete(&op_id);
            return;
        }
        let weak: Weak<AzureSim> = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {
                    if let Some(sim) = weak.upgrade() {
                        sim.complete(&op_id);
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }

    /// Ends an operation in progress: applies its resource's desired state, or fails it and
    /// rolls the resource back. Stuck operations stay in progress.
    pub(crate) fn complete(&self, op_id: &str) {
        let mut guard = lock(&self.world);
        let world = &mut *guard;
        let Some(op) = world.ops.get(op_id).cloned() else {
            return;
        };
        if op.status != OpStatus::InProgress {
            return;
        }
        let (status, error) = match op.outcome {
            OpOutcome::Stuck => return,
            OpOutcome::Apply => (OpStatus::Succeeded, None),
            OpOutcome::Fail(reason) => {
                let (status, code, message) = failure_of(reason);
                (status, Some((code, message)))
            }
        };
        let ok = status == OpStatus::Succeeded;
        // Canceled leaves the resource as it was; Failed marks it Failed (a re-PUT resets it).
        let state = match status {
            OpStatus::Failed => ProvState::Failed,
            _ => ProvState::Succeeded,
        };
        match &op.target {
            OpTarget::Nic(name) => {
                let Some(idx) = world.nic_index(name) else {
                    return;
                };
                self.commit(world, false, |w| {
                    let n = &mut w.nics[idx];
                    if ok {
                        n.applied = n.spec.clone();
                    } else {
                        n.spec = n.applied.clone();
                    }
                    n.state = state;
                    n.etag = new_etag();
                    n.busy = None;
                });
            }
            OpTarget::Pip(name) => {
                let Some(idx) = world.pip_index(name) else {
                    return;
                };
                self.commit(world, false, |w| {
                    let p = &mut w.pips[idx];
                    if ok {
                        p.applied = p.spec.clone();
                    } else {
                        p.spec = p.applied.clone();
                    }
                    p.state = state;
                    p.etag = new_etag();
                    p.busy = None;
                });
            }
        }
        let op = world.ops.get_mut(op_id).expect("looked up above");
        op.status = status;
        op.error = error;
        op.end = Some(rfc3339_now());
        tracing::info!("operation {op_id} on {:?}: {}", op.target, status.as_str());
    }

    /// Control plane: moves the public IP or secondary private address `ip` to `vms` at once
    /// (at most one: Azure never puts an address on two NICs; none detaches it), as another
    /// actor would: both NICs' etags change and the timeline marks the change as forced. A
    /// public IP lands on the VM's primary ipConfiguration; a private address becomes a
    /// secondary ipConfiguration of the VM's primary NIC, named as before (default `vip`).
    pub fn force_holders(
        &self,
        ip: IpAddr,
        vms: &[InstanceId],
    ) -> Result<Vec<InstanceId>, AzureSimError> {
        let IpAddr::V4(ip4) = ip.to_canonical() else {
            return Err(AzureSimError::NotFound(format!("no address {ip}")));
        };
        if vms.len() > 1 {
            return Err(AzureSimError::Invalid(format!(
                "Azure puts {ip} on at most one NIC, not on {} VMs",
                vms.len()
            )));
        }
        let mut guard = lock(&self.world);
        let world = &mut *guard;
        // The target: (NIC index, primary config name, vnet, subnet).
        let target = match vms.first() {
            None => None,
            Some(vm) => {
                let v = world
                    .vm(&vm.0)
                    .ok_or_else(|| AzureSimError::Invalid(format!("no VM {vm}")))?;
                let nic = world.nic_index(&v.nics[0]).expect("a VM's NICs exist");
                let primary = world.nics[nic]
                    .spec
                    .ip_configs
                    .iter()
                    .find(|c| c.primary)
                    .expect("a NIC has a primary ipConfiguration")
                    .clone();
                Some((nic, primary))
            }
        };
        let touched = |c: &IpConfig| c.private_ip == ip4 && !c.primary;
        if let Some(pip) = world.pips.iter().position(|p| p.ip == ip4) {
            let pip_name = world.pips[pip].name.clone();
            if let Some((nic, primary)) = &target {
                if let Some(other) = &primary.public_ip {
                    if !other.eq_ignore_ascii_case(&pip_name) {
                        return Err(AzureSimError::Invalid(format!(
                            "the primary ipConfiguration of {} already holds public IP {other}",
                            world.nics[*nic].name
                        )));
                    }
                }
            }
            self.commit(world, true, |w| {
                for (i, n) in w.nics.iter_mut().enumerate() {
                    let mut changed = false;
                    for spec in [&mut n.spec, &mut n.applied] {
                        for c in spec.ip_configs.iter_mut() {
                            let here = target
                                .as_ref()
                                .is_some_and(|(t, p)| *t == i && c.name == p.name);
                            let has = c
                                .public_ip
                                .as_deref()
                                .is_some_and(|p| p.eq_ignore_ascii_case(&pip_name));
                            if here && !has {
                                c.public_ip = Some(pip_name.clone());
                                changed = true;
                            } else if !here && has {
                                c.public_ip = None;
                                changed = true;
                            }
                        }
                    }
                    if changed {
                        n.etag = new_etag();
                    }
                }
            });
        } else {
            let known = world.nics.iter().any(|n| {
                n.applied.ip_configs.iter().any(touched) || n.spec.ip_configs.iter().any(touched)
            });
            let name = world
                .nics
                .iter()
                .flat_map(|n| n.applied.ip_configs.iter().chain(n.spec.ip_configs.iter()))
                .find(|c| touched(c))
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "vip".to_string());
            if let Some((nic, primary)) = &target {
                let prefix = world
                    .subnet_prefix(&primary.vnet, &primary.subnet)
                    .expect("a NIC's subnet exists");
                if !prefix.contains(&ip4) || seed::is_reserved(&prefix, ip4) {
                    return Err(AzureSimError::Invalid(format!(
                        "{ip} is not a usable address of {}'s subnet {prefix}",
                        world.nics[*nic].name
                    )));
                }
                let n = &world.nics[*nic];
                let clash = n
                    .spec
                    .ip_configs
                    .iter()
                    .chain(n.applied.ip_configs.iter())
                    .any(|c| c.name.eq_ignore_ascii_case(&name) && !touched(c));
                if clash {
                    return Err(AzureSimError::Invalid(format!(
                        "{} already has another ipConfiguration named {name}",
                        n.name
                    )));
                }
                let primary_elsewhere = world.nics.iter().any(|n| {
                    n.applied
                        .ip_configs
                        .iter()
                        .chain(n.spec.ip_configs.iter())
                        .any(|c| c.private_ip == ip4 && c.primary)
                });
                if primary_elsewhere {
                    return Err(AzureSimError::Invalid(format!(
                        "{ip} is a NIC's primary address"
                    )));
                }
            } else if !known {
                return Err(AzureSimError::NotFound(format!(
                    "no public IP or secondary address {ip}"
                )));
            }
            self.commit(world, true, |w| {
                for (i, n) in w.nics.iter_mut().enumerate() {
                    let mut changed = false;
                    for spec in [&mut n.spec, &mut n.applied] {
                        let before = spec.ip_configs.len();
                        spec.ip_configs.retain(|c| !touched(c));
                        changed |= spec.ip_configs.len() != before;
                        if let Some((_, primary)) = target.as_ref().filter(|(t, _)| *t == i) {
                            spec.ip_configs.push(IpConfig {
                                name: name.clone(),
                                private_ip: ip4,
                                allocation: world::Allocation::Static,
                                vnet: primary.vnet.clone(),
                                subnet: primary.subnet.clone(),
                                primary: false,
                                public_ip: None,
                                extra: Default::default(),
                            });
                            changed = true;
                        }
                    }
                    if changed {
                        n.etag = new_etag();
                    }
                }
            });
        }
        drop(guard);
        Ok(self.holders(ip))
    }

    /// `GET /_sim/azure/state`: the resources with their applied (in force) and, while an
    /// operation runs, desired ipConfigurations, and each floating address's holders.
    pub fn state_json(&self) -> Value {
        let world = lock(&self.world);
        let configs = |cs: &[IpConfig]| -> Vec<Value> {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c.name, "primary": c.primary,
                        "private_ip": c.private_ip.to_string(),
                        "subnet": format!("{}/{}", c.vnet, c.subnet),
                        "public_ip": c.public_ip,
                    })
                })
                .collect()
        };
        let nics: Vec<Value> = world
            .nics
            .iter()
            .map(|n| {
                let mut v = json!({
                    "name": n.name, "vm": n.vm, "mac": n.mac, "etag": n.etag,
                    "provisioning_state": n.state.as_str(),
                    "operation": n.busy,
                    "nsg": n.applied.nsg,
                    "tags": n.applied.tags,
                    "ip_configurations": configs(&n.applied.ip_configs),
                });
                if n.spec != n.applied {
                    v["desired"] = json!({
                        "nsg": n.spec.nsg, "tags": n.spec.tags,
                        "ip_configurations": configs(&n.spec.ip_configs),
                    });
                }
                v
            })
            .collect();
        let records = world.records();
        let addresses: Vec<Value> = world
            .holdings()
            .iter()
            .map(|(ip, h)| {
                json!({
                    "ip": ip,
                    "record": records.get(ip).map(|r| json!({
                        "epoch": r.epoch, "holder": r.holder,
                    })),
                    "public_ip": h.resource_id.as_ref().and_then(|_| {
                        world.pips.iter().find(|p| IpAddr::V4(p.ip) == *ip).map(|p| p.name.clone())
                    }),
                    "holders": h.holders.iter().map(|x| json!({
                        "vm": x.vm, "nic": x.nic, "ip_configuration": x.ip_config,
                        "private_ip": x.private_ip.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let running: Vec<Value> = world
            .ops
            .values()
            .filter(|o| o.status == OpStatus::InProgress)
            .map(|o| {
                json!({
                    "id": o.id,
                    "target": match &o.target {
                        OpTarget::Nic(n) => format!("networkInterfaces/{n}"),
                        OpTarget::Pip(p) => format!("publicIPAddresses/{p}"),
                    },
                    "start": o.start,
                })
            })
            .collect();
        json!({
            "tenant_id": world.ids.tenant,
            "subscription_id": world.ids.sub,
            "resource_group": world.ids.rg,
            "location": world.ids.location,
            "vms": world.vms.iter().map(|v| json!({
                "name": v.name, "vm_id": v.vm_id, "power_state": v.power_state, "nics": v.nics,
            })).collect::<Vec<_>>(),
            "nics": nics,
            "public_ips": world.pips.iter().map(|p| json!({
                "name": p.name, "ip": p.ip.to_string(), "etag": p.etag,
                "provisioning_state": p.state.as_str(),
                "tags": p.applied.tags,
                "holder": world.pip_holder(&p.name).map(|(n, c)| json!({
                    "vm": n.vm, "nic": n.name, "ip_configuration": c.name,
                })),
            })).collect::<Vec<_>>(),
            "addresses": addresses,
            "operations_in_progress": running,
            "options": serde_json::to_value(&*lock(&self.options)).expect("options serialise"),
        })
    }

    /// The VM an IMDS request from `source` speaks for: the one whose primary NIC's primary
    /// address it is, else the configured default. `Err(true)`: the source is a VM's secondary
    /// address (IMDS does not answer those).
    pub(crate) fn imds_caller(&self, source: IpAddr) -> Result<String, bool> {
        let (vm, secondary) = match source.to_canonical() {
            IpAddr::V4(v4) => lock(&self.world).vm_by_primary_address(v4),
            IpAddr::V6(_) => (None, false),
        };
        if let Some(vm) = vm {
            return Ok(vm);
        }
        if secondary {
            return Err(true);
        }
        lock(&self.options).imds_default_vm.clone().ok_or(false)
    }
}

/// The servers of [`AzureSim::serve`]. Dropping it stops them too;
/// [`AzureServers::shutdown`] also waits for them.
pub struct AzureServers {
    api_addr: SocketAddr,
    imds_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AzureServers {
    /// ARM endpoint and authority host, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// IMDS base URL (`AZURE_POD_IDENTITY_AUTHORITY_HOST`), e.g. `http://127.0.0.1:41235`.
    pub fn imds_url(&self) -> Option<String> {
        self.imds_addr.map(|a| format!("http://{a}"))
    }

    pub fn imds_addr(&self) -> Option<SocketAddr> {
        self.imds_addr
    }

    /// Stops serving, closes open connections and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for AzureServers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

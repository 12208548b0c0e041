//! The Exoscale API v2 emulator: per-zone state, the rules the real API enforces, and the `/v2`
//! routes. Shapes follow the official OpenAPI document (schemas `elastic-ip`, `instance`,
//! `security-group`, `operation`, `zone`); see `shared/clouds/exoscale.md` section 8.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::faults::{Door, FaultState, OpOutcome, Reason};
use super::route::{self, RouteRunner};
use super::seed::{Seed, SeedManager, KNOWN_ZONES};
use super::server::{dropped, CallerKey};
use super::timeline::{unix_now, HolderEvent, Timeline, TimelineEvent};
use crate::exoscale::sign;
use crate::{InstanceId, Secret};

/// The time source for signature expiry checks (before clock skew is added).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Largest request body read for signature verification; the API's bodies are tiny.
const MAX_BODY: usize = 1 << 20;

/// Fixed values for the parts of an instance the agent never reads but the schema has.
const CREATED_AT: &str = "2026-01-01T00:00:00Z";
const INSTANCE_TYPE_ID: &str = "b6cd1ff5-3a2f-4e9d-a4d1-8988c1191fe8";
const TEMPLATE_ID: &str = "c19542b7-d269-4bd4-bf1d-f2d2a6b5bbd0";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one request must not wedge the whole simulated cloud.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug)]
pub(crate) struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: Vec<Value>,
}

#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub id: String,
    pub name: String,
    pub state: String,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub security_groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub user_data: String,
    pub manager: Option<SeedManager>,
}

impl Instance {
    /// The instance's address of `ip`'s family, where the cloud delivers traffic for an EIP.
    fn address_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.public_ip.map(IpAddr::V4),
            IpAddr::V6(_) => self.public_ipv6.map(IpAddr::V6),
        }
    }

    fn has_address(&self, ip: IpAddr) -> bool {
        self.public_ip.map(IpAddr::V4) == Some(ip) || self.public_ipv6.map(IpAddr::V6) == Some(ip)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Eip {
    pub id: String,
    pub ip: IpAddr,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    /// Instance ids, in attach order.
    pub holders: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpState {
    Pending,
    Success,
    Failure,
}

impl OpState {
    fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Success => "success",
            OpState::Failure => "failure",
        }
    }
}

#[derive(Clone, Debug)]
struct PendingChange {
    change: Change,
    outcome: OpOutcome,
}

/// What an operation changes when it completes.
#[derive(Clone, Debug)]
enum Change {
    /// Attach or detach an instance.
    Holder {
        action: HolderEvent,
        instance: String,
    },
    /// `PUT /elastic-ip/{id}` (update-elastic-ip): the fields given replace the current ones.
    Update {
        description: Option<String>,
        labels: Option<BTreeMap<String, String>>,
    },
}

#[derive(Clone, Debug)]
struct Operation {
    id: String,
    state: OpState,
    reason: Option<Reason>,
    message: Option<String>,
    eip_id: String,
    pending: Option<PendingChange>,
}

impl Operation {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "state": self.state.as_str(),
            "reference": {
                "id": self.eip_id,
                "link": format!("/v2/elastic-ip/{}", self.eip_id),
                "command": "get-elastic-ip",
            },
        });
        if let Some(r) = self.reason {
            v["reason"] = serde_json::to_value(r).expect("reasons serialise");
        }
        if let Some(m) = &self.message {
            v["message"] = json!(m);
        }
        v
    }
}

#[derive(Debug, Default)]
pub(crate) struct Zone {
    pub instances: Vec<Instance>,
    pub eips: Vec<Eip>,
    operations: HashMap<String, Operation>,
}

impl Zone {
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    fn eip_index(&self, id: &str) -> Option<usize> {
        self.eips.iter().position(|e| e.id == id)
    }
}

#[derive(Debug)]
pub(crate) struct World {
    pub security_groups: Vec<SecurityGroup>,
    /// Every zone the API knows, seeded or not.
    pub zones: BTreeMap<String, Zone>,
}

impl World {
    fn from_seed(seed: &Seed) -> World {
        let mut zones: BTreeMap<String, Zone> = KNOWN_ZONES
            .iter()
            .map(|z| (z.to_string(), Zone::default()))
            .collect();
        for z in seed.zones() {
            zones.entry(z).or_default();
        }
        for i in &seed.instances {
            let zone = zones.get_mut(i.zone(seed)).expect("seed zones are created");
            zone.instances.push(Instance {
                id: i.id.clone(),
                name: i.name.clone(),
                state: i.state.clone(),
                public_ip: i.public_ip,
                public_ipv6: i.public_ipv6,
                security_groups: i.security_groups.clone(),
                labels: i.labels.clone(),
                user_data: i.user_data.clone(),
                manager: i.manager.clone(),
            });
        }
        for e in &seed.elastic_ips {
            let zone = zones.get_mut(e.zone(seed)).expect("seed zones are created");
            zone.eips.push(Eip {
                id: e.id.clone(),
                ip: e.ip,
                description: e.description.clone(),
                labels: e.labels.clone(),
                holders: e.attached_to.clone(),
            });
        }
        World {
            security_groups: seed
                .security_groups
                .iter()
                .map(|g| SecurityGroup {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    description: g.description.clone(),
                    rules: g.rules.clone(),
                })
                .collect(),
            zones,
        }
    }

    /// The zone and index of the EIP with address `ip`, in any zone.
    pub fn find_eip(&self, ip: IpAddr) -> Option<(&str, usize)> {
        self.zones.iter().find_map(|(name, z)| {
            z.eips
                .iter()
                .position(|e| e.ip == ip)
                .map(|i| (name.as_str(), i))
        })
    }
}

/// The whole simulated Exoscale: state, faults, timeline and the knobs that shape answers.
pub(crate) struct ExoSim {
    pub default_zone: String,
    zone_names: Vec<String>,
    keys: HashMap<String, Secret>,
    pub world: Mutex<World>,
    pub faults: Mutex<FaultState>,
    pub timeline: Timeline,
    routes: Option<Arc<dyn RouteRunner>>,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
}

/// Why a control-plane change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ControlError {
    NotFound(String),
    Invalid(String),
}

impl ExoSim {
    pub fn new(
        seed: &Seed,
        faults: FaultState,
        timeline: Timeline,
        routes: Option<Arc<dyn RouteRunner>>,
        clock: Clock,
        shutdown: watch::Receiver<bool>,
    ) -> ExoSim {
        let world = World::from_seed(seed);
        ExoSim {
            default_zone: seed.zone.clone(),
            zone_names: world.zones.keys().cloned().collect(),
            keys: seed
                .api_keys
                .iter()
                .map(|k| (k.key.clone(), k.secret.clone()))
                .collect(),
            world: Mutex::new(world),
            faults: Mutex::new(faults),
            timeline,
            routes,
            clock,
            shutdown,
        }
    }

    /// The simulator's idea of "now" for signature expiry, skew included.
    fn now_unix(&self) -> u64 {
        let base = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let skew = lock(&self.faults).faults.clock_skew_secs;
        base.saturating_add(skew).max(0) as u64
    }

    /// `api-<zone>.…` selects a known zone; anything else gets the seed's zone.
    fn zone_for(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if let Some(rest) = host.strip_prefix("api-") {
            let zone = rest.split(['.', ':']).next().unwrap_or("");
            if self.zone_names.iter().any(|z| z == zone) {
                return zone.to_string();
            }
        }
        self.default_zone.clone()
    }

    /// Sets an EIP's holders, records the changes and re-routes, all under the world lock, so
    /// the timeline order is the order in which the state changed.
    fn change_holders(
        &self,
        zone_name: &str,
        zone: &mut Zone,
        eip_idx: usize,
        holders: Vec<String>,
        changes: &[(HolderEvent, String)],
        forced: bool,
    ) {
        let eip = &mut zone.eips[eip_idx];
        eip.holders = holders;
        let t = unix_now();
        let after: Vec<InstanceId> = eip.holders.iter().map(|h| InstanceId(h.clone())).collect();
        for (event, instance) in changes {
            let name = zone
                .instances
                .iter()
                .find(|i| &i.id == instance)
                .map(|i| i.name.as_str())
                .unwrap_or("?");
            tracing::info!(
                "{} {event:?} {} ({name}){}: holders now {:?}",
                eip.ip,
                instance,
                if forced { " [forced]" } else { "" },
                eip.holders
            );
            self.timeline.record(TimelineEvent {
                t,
                zone: zone_name.to_string(),
                ip: eip.ip,
                eip_id: eip.id.clone(),
                event: *event,
                instance: InstanceId(instance.clone()),
                holders: after.clone(),
                forced,
                epoch: None,
            });
        }
        self.route(zone, eip_idx);
    }

    fn route(&self, zone: &Zone, eip_idx: usize) {
        let Some(runner) = &self.routes else { return };
        let eip = &zone.eips[eip_idx];
        let via: Vec<IpAddr> = eip
            .holders
            .iter()
            .filter_map(|h| zone.instance(h))
            .filter_map(|i| {
                let a = i.address_for(eip.ip);
                if a.is_none() {
                    tracing::warn!(
                        "route hook: holder {} of {} has no address of that family",
                        i.id,
                        eip.ip
                    );
                }
                a
            })
            .collect();
        route::apply(runner.as_ref(), eip.ip, &via);
    }

    /// Routes every EIP as seeded (start-up).
    pub fn route_all(&self) {
        let world = lock(&self.world);
        for zone in world.zones.values() {
            for i in 0..zone.eips.len() {
                self.route(zone, i);
            }
        }
    }

    /// Applies a change now; `Err` carries the operation failure.
    fn apply_change(
        &self,
        zone_name: &str,
        zone: &mut Zone,
        eip_id: &str,
        change: &Change,
        noop_failure: Option<Reason>,
    ) -> Result<(), (Reason, String)> {
        let idx = zone
            .eip_index(eip_id)
            .ok_or((Reason::NotFound, format!("elastic IP {eip_id} not found")))?;
        let (action, instance) = match change {
            Change::Holder { action, instance } => (*action, instance),
            Change::Update {
                description,
                labels,
            } => {
                self.update_eip(zone_name, zone, idx, description.clone(), labels.clone());
                return Ok(());
            }
        };
        if zone.instance(instance).is_none() {
            return Err((Reason::NotFound, format!("instance {instance} not found")));
        }
        let mut holders = zone.eips[idx].holders.clone();
        let present = holders.contains(instance);
        let noop = match action {
            HolderEvent::Attach => present,
            HolderEvent::Detach => !present,
            HolderEvent::Claim => true,
        };
        if noop {
            return match noop_failure {
                None => Ok(()),
                Some(reason) => Err((
                    reason,
                    match action {
                        HolderEvent::Detach => {
                            format!("instance {instance} is not attached to elastic IP {eip_id}")
                        }
                        _ => format!(
                            "instance {instance} is already attached to elastic IP {eip_id}"
                        ),
                    },
                )),
            };
        }
        match action {
            HolderEvent::Detach => holders.retain(|h| h != instance),
            _ => holders.push(instance.clone()),
        }
        self.change_holders(
            zone_name,
            zone,
            idx,
            holders,
            &[(action, instance.clone())],
            false,
        );
        Ok(())
    }

    /// Applies an update of an EIP's description and labels; a changed claim record goes on
    /// the timeline as a `claim` event.
    fn update_eip(
        &self,
        zone_name: &str,
        zone: &mut Zone,
        idx: usize,
        description: Option<String>,
        labels: Option<BTreeMap<String, String>>,
    ) {
        let eip = &mut zone.eips[idx];
        let before = eip_record(eip);
        if let Some(d) = description {
            eip.description = d;
        }
        if let Some(l) = labels {
            eip.labels = l;
        }
        let after = eip_record(eip);
        let Some(record) = after.filter(|r| Some(r) != before.as_ref()) else {
            return;
        };
        tracing::info!(
            "{} claim: epoch {} by {}: holders {:?}",
            eip.ip,
            record.epoch,
            record.holder,
            eip.holders
        );
        self.timeline.record(TimelineEvent {
            t: unix_now(),
            zone: zone_name.to_string(),
            ip: eip.ip,
            eip_id: eip.id.clone(),
            event: HolderEvent::Claim,
            instance: record.holder,
            holders: eip.holders.iter().map(|h| InstanceId(h.clone())).collect(),
            forced: false,
            epoch: Some(record.epoch),
        });
    }

    /// Ends a pending operation: applies its change or fails it. Stuck operations stay pending.
    fn complete(&self, zone_name: &str, op_id: &str) {
        let mut world = lock(&self.world);
        let noop_failure = lock(&self.faults).faults.noop_failure;
        let Some(zone) = world.zones.get_mut(zone_name) else {
            return;
        };
        let Some(op) = zone.operations.get_mut(op_id) else {
            return;
        };
        let Some(change) = op.pending.clone() else {
            return;
        };
        let eip_id = op.eip_id.clone();
        let result = match change.outcome {
            OpOutcome::Stuck => return,
            OpOutcome::Fail(reason) => Err((reason, "operation failed".to_string())),
            OpOutcome::Apply => {
                self.apply_change(zone_name, zone, &eip_id, &change.change, noop_failure)
            }
        };
        let op = zone
            .operations
            .get_mut(op_id)
            .expect("the operation is still there: the world lock is held");
        op.pending = None;
        match result {
            Ok(()) => op.state = OpState::Success,
            Err((reason, message)) => {
                op.state = OpState::Failure;
                op.reason = Some(reason);
                op.message = Some(message);
            }
        }
    }

    /// The holders of the EIP with address `ip`, in any zone.
    pub fn holders(&self, ip: IpAddr) -> Vec<InstanceId> {
        let world = lock(&self.world);
        let Some((zone, idx)) = world.find_eip(ip) else {
            return Vec::new();
        };
        world.zones[zone].eips[idx]
            .holders
            .iter()
            .map(|h| InstanceId(h.clone()))
            .collect()
    }

    /// Control plane: replaces an EIP's holders at once, as another actor would.
    pub fn force_holders(
        &self,
        ip: IpAddr,
        wanted: &[String],
    ) -> Result<Vec<InstanceId>, ControlError> {
        let mut guard = lock(&self.world);
        let world = &mut *guard;
        let (zone_name, idx) = world
            .find_eip(ip)
            .map(|(z, i)| (z.to_string(), i))
            .ok_or_else(|| ControlError::NotFound(format!("no elastic IP {ip}")))?;
        let zone = world.zones.get_mut(&zone_name).expect("found above");
        let mut holders: Vec<String> = Vec::new();
        for h in wanted {
            if zone.instance(h).is_none() {
                return Err(ControlError::Invalid(format!(
                    "instance {h} is not in zone {zone_name}"
                )));
            }
            if !holders.contains(h) {
                holders.push(h.clone());
            }
        }
        let old = zone.eips[idx].holders.clone();
        let mut changes: Vec<(HolderEvent, String)> = old
            .iter()
            .filter(|h| !holders.contains(h))
            .map(|h| (HolderEvent::Detach, h.clone()))
            .collect();
        changes.extend(
            holders
                .iter()
                .filter(|h| !old.contains(h))
                .map(|h| (HolderEvent::Attach, h.clone())),
        );
        if !changes.is_empty() {
            self.change_holders(&zone_name, zone, idx, holders.clone(), &changes, true);
        }
        Ok(holders.into_iter().map(InstanceId).collect())
    }

    /// Control plane: sets an instance's state (e.g. `stopped`), in whichever zone it is.
    pub fn set_instance_state(&self, id: &str, state: &str) -> Result<(), ControlError> {
        if !super::seed::INSTANCE_STATES.contains(&state) {
            return Err(ControlError::Invalid(format!(
                "state {state:?} is not one of {}",
                super::seed::INSTANCE_STATES.join(", ")
            )));
        }
        let mut world = lock(&self.world);
        let inst = world
            .zones
            .values_mut()
            .flat_map(|z| z.instances.iter_mut())
            .find(|i| i.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no instance {id}")))?;
        tracing::info!("instance {} ({}) is now {state}", inst.id, inst.name);
        inst.state = state.to_string();
        Ok(())
    }

    /// `/_sim/state`: zones with their EIPs (and holder ids) and instances.
    pub fn state_json(&self) -> Value {
        let world = lock(&self.world);
        let zones: Vec<Value> = world
            .zones
            .iter()
            .filter(|(name, z)| {
                **name == self.default_zone || !z.instances.is_empty() || !z.eips.is_empty()
            })
            .map(|(name, z)| {
                json!({
                    "name": name,
                    "elastic_ips": z.eips.iter().map(|e| json!({
                        "id": e.id, "ip": e.ip, "holders": e.holders,
                        "record": eip_record(e).map(|r| json!({
                            "epoch": r.epoch, "holder": r.holder,
                        })),
                    })).collect::<Vec<_>>(),
                    "instances": z.instances.iter().map(|i| json!({
                        "id": i.id, "name": i.name, "state": i.state,
                        "public_ip": i.public_ip, "public_ipv6": i.public_ipv6,
                        "security_groups": i.security_groups,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "default_zone": self.default_zone,
            "security_groups": world.security_groups.iter()
                .map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
            "zones": zones,
        })
    }

    /// The instance a metadata request is about: the one whose public address is the request's
    /// source, else the one named by `?instance=`.
    pub fn metadata_instance(
        &self,
        source: IpAddr,
        named: Option<&str>,
    ) -> Option<(String, Instance)> {
        let world = lock(&self.world);
        let source = source.to_canonical();
        let by_source = world.zones.iter().find_map(|(z, zone)| {
            zone.instances
                .iter()
                .find(|i| i.has_address(source))
                .map(|i| (z.clone(), i.clone()))
        });
        by_source.or_else(|| {
            let id = named?;
            world
                .zones
                .iter()
                .find_map(|(z, zone)| zone.instance(id).map(|i| (z.clone(), i.clone())))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, &json!({ "message": msg.into() }))
}

fn not_found(msg: impl Into<String>) -> Response {
    message(StatusCode::NOT_FOUND, msg)
}

fn bad_request(msg: &str, details: &[String]) -> Response {
    let errors: Vec<Value> = details.iter().map(|d| json!({ "message": d })).collect();
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "message": msg, "errors": errors }),
    )
}

type Sim = State<Arc<ExoSim>>;

pub(crate) fn router(sim: Arc<ExoSim>) -> Router {
    Router::new()
        .route("/v2/elastic-ip", get(list_eips))
        // The whole segment is one parameter: attach/detach arrive as `{id}:attach`, an
        // update (update-elastic-ip) as the bare `{id}`.
        .route("/v2/elastic-ip/{id}", get(get_eip).put(put_eip))
        .route("/v2/instance", get(list_instances))
        .route("/v2/instance/{id}", get(get_instance))
        .route("/v2/security-group", get(list_security_groups))
        .route("/v2/security-group/{id}", get(get_security_group))
        .route("/v2/operation/{id}", get(get_operation))
        .route("/v2/zone", get(list_zones))
        .fallback(unknown_route)
        // The last layer runs first: faults act before authentication, as a broken front end
        // would.
        .layer(middleware::from_fn_with_state(sim.clone(), authenticate))
        .layer(middleware::from_fn_with_state(sim.clone(), front_door))
        .with_state(sim)
}

async fn unknown_route() -> Response {
    not_found("no such endpoint in the simulated API")
}

/// Injected faults that act before the API sees the request.
async fn front_door(State(sim): Sim, req: Request, next: Next) -> Response {
    let is_mutation = req.method() != Method::GET && req.method() != Method::HEAD;
    let (delay, door) = lock(&sim.faults).door(is_mutation);
    if door == Door::Drop && delay.is_zero() {
        return dropped();
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match door {
        Door::Pass => next.run(req).await,
        Door::Drop => dropped(),
        Door::Unavailable => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable (simulated)",
        ),
        Door::RateLimited { retry_after_secs } => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({
                    "message": "too many requests (simulated)",
                    "retry_after": retry_after_secs,
                }),
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
    }
}

/// EXO2-HMAC-SHA256 on every request: raw escaped path (with `/v2`), raw query, exact body.
async fn authenticate(State(sim): Sim, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let Some(header) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        tracing::debug!(
            "{} {}: no Authorization header",
            parts.method,
            parts.uri.path()
        );
        return message(StatusCode::FORBIDDEN, "missing Authorization header");
    };
    let verdict = sign::verify(
        header,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &bytes,
        |key| sim.keys.get(key).map(|s| s.expose().to_string()),
        sim.now_unix(),
    );
    match verdict {
        Err(e) => {
            tracing::debug!(
                "{} {}: signature refused: {e}",
                parts.method,
                parts.uri.path()
            );
            message(StatusCode::FORBIDDEN, format!("authentication failed: {e}"))
        }
        Ok(key) => {
            let mut resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            resp.extensions_mut().insert(CallerKey(key));
            resp
        }
    }
}

fn eip_json(e: &Eip) -> Value {
    let (family, len) = match e.ip {
        IpAddr::V4(_) => ("inet4", 32),
        IpAddr::V6(_) => ("inet6", 128),
    };
    json!({
        "id": e.id,
        "ip": e.ip.to_string(),
        "addressfamily": family,
        "cidr": format!("{}/{len}", e.ip),
        "description": e.description,
        "labels": e.labels,
    })
}

fn security_group_json(g: &SecurityGroup) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "external-sources": [],
        "rules": g.rules,
    })
}

/// A stable locally administered MAC derived from the instance id, as Exoscale's `06:…` ones.
fn mac_address(id: &str) -> String {
    let hex: Vec<char> = id.chars().filter(char::is_ascii_hexdigit).collect();
    let mut parts = vec!["06".to_string()];
    for pair in hex.chunks(2).take(5) {
        parts.push(pair.iter().collect::<String>().to_ascii_lowercase());
    }
    parts.join(":")
}

/// `GET /instance/{id}` (detail: `elastic-ips` and `{id}` group refs) or a list item (no
/// `elastic-ips`, full group objects), as the spec distinguishes them.
fn instance_json(world: &World, zone_name: &str, zone: &Zone, i: &Instance, detail: bool) -> Value {
    let assignment = match (i.public_ip, i.public_ipv6) {
        (None, _) => "none",
        (Some(_), None) => "inet4",
        (Some(_), Some(_)) => "dual",
    };
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "state": i.state,
        "public-ip-assignment": assignment,
        "mac-address": mac_address(&i.id),
        "labels": i.labels,
        "private-networks": [],
        "ssh-keys": [],
        "created-at": CREATED_AT,
        "disk-size": 50,
        "instance-type": {
            "id": INSTANCE_TYPE_ID, "family": "standard", "size": "small",
            "cpus": 2, "memory": 4_294_967_296u64, "authorized": true, "zones": [zone_name],
        },
        "template": {
            "id": TEMPLATE_ID, "name": "Linux Debian 12 (Bookworm) 64-bit",
            "family": "other (64-bit)", "visibility": "public",
        },
    });
    if let Some(ip) = i.public_ip {
        v["public-ip"] = json!(ip.to_string());
    }
    if let Some(ip) = i.public_ipv6 {
        v["ipv6-address"] = json!(ip.to_string());
    }
    if let Some(m) = &i.manager {
        v["manager"] = json!({ "id": m.id, "type": m.kind });
    }
    if detail {
        v["security-groups"] = i
            .security_groups
            .iter()
            .map(|g| json!({ "id": g }))
            .collect();
        v["elastic-ips"] = zone
            .eips
            .iter()
            .filter(|e| e.holders.contains(&i.id))
            .map(|e| json!({ "id": e.id }))
            .collect();
    } else {
        v["security-groups"] = i
            .security_groups
            .iter()
            .filter_map(|g| world.security_groups.iter().find(|s| &s.id == g))
            .map(security_group_json)
            .collect();
    }
    v
}

async fn list_eips(State(sim): Sim, headers: HeaderMap) -> Response {
    let zone_name = sim.zone_for(&headers);
    let world = lock(&sim.world);
    let items: Vec<Value> = world.zones[&zone_name].eips.iter().map(eip_json).collect();
    ok(json!({ "elastic-ips": items }))
}

async fn get_eip(State(sim): Sim, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let zone_name = sim.zone_for(&headers);
    let world = lock(&sim.world);
    let zone = &world.zones[&zone_name];
    match zone.eip_index(&id) {
        Some(i) => ok(eip_json(&zone.eips[i])),
        None => not_found(format!("elastic IP {id} not found")),
    }
}

/// The instance id in the `{"instance":{"id":…}}` body of attach/detach, or what is wrong.
fn instance_ref(body: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let inst = v.get("instance").ok_or("instance: required")?;
    let id = inst
        .get("id")
        .and_then(Value::as_str)
        .ok_or("instance.id: required string")?;
    if uuid::Uuid::parse_str(id).is_err() {
        return Err("instance.id: must be a UUID".into());
    }
    Ok(id.to_string())
}

async fn put_eip(
    State(sim): Sim,
    headers: HeaderMap,
    Path(segment): Path<String>,
    body: Bytes,
) -> Response {
    let (eip_id, change) = match segment.split_once(':') {
        None => match eip_update(&body) {
            Ok(change) => (segment.as_str(), change),
            Err(details) => return bad_request("invalid request body", &details),
        },
        Some((eip_id, action)) => {
            let action = match action {
                "attach" => HolderEvent::Attach,
                "detach" => HolderEvent::Detach,
                other => return not_found(format!("unknown elastic IP action {other:?}")),
            };
            match instance_ref(&body) {
                Ok(instance) => (eip_id, Change::Holder { action, instance }),
                Err(detail) => return bad_request("invalid request body", &[detail]),
            }
        }
    };
    let zone_name = sim.zone_for(&headers);

    let mut world = lock(&sim.world);
    let zone = world.zones.get_mut(&zone_name).expect("known zone");
    if zone.eip_index(eip_id).is_none() {
        return not_found(format!("elastic IP {eip_id} not found"));
    }
    if let Change::Holder { instance, .. } = &change {
        if zone.instance(instance).is_none() {
            return not_found(format!("instance {instance} not found"));
        }
    }
    let (outcome, lost, delay, immediate) = {
        let mut f = lock(&sim.faults);
        let outcome = f.operation_outcome();
        let lost = f.response_lost();
        (outcome, lost, f.faults.op_delay, f.faults.op_immediate)
    };
    let op_id = uuid::Uuid::new_v4().to_string();
    zone.operations.insert(
        op_id.clone(),
        Operation {
            id: op_id.clone(),
            state: OpState::Pending,
            reason: None,
            message: None,
            eip_id: eip_id.to_string(),
            pending: Some(PendingChange { change, outcome }),
        },
    );
    drop(world);

    if outcome != OpOutcome::Stuck {
        if immediate || delay.is_zero() {
            sim.complete(&zone_name, &op_id);
        } else {
            let sim = sim.clone();
            let (zone_name, op_id) = (zone_name.clone(), op_id.clone());
            let mut shutdown = sim.shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => sim.complete(&zone_name, &op_id),
                    _ = shutdown.wait_for(|down| *down) => {}
                }
            });
        }
    }
    if lost {
        return dropped();
    }
    let world = lock(&sim.world);
    let op = &world.zones[&zone_name].operations[&op_id];
    if immediate {
        ok(op.to_json())
    } else {
        // The real API answers `pending` even when the change is already done.
        let mut shown = op.clone();
        shown.state = OpState::Pending;
        shown.reason = None;
        shown.message = None;
        ok(shown.to_json())
    }
}

/// The claim record in an EIP's labels, as the Exoscale provider reads it.
fn eip_record(e: &Eip) -> Option<crate::ClaimRecord> {
    crate::exoscale::record_from_labels(
        e.labels
            .get(crate::exoscale::EPOCH_LABEL)
            .map(String::as_str),
        e.labels
            .get(crate::exoscale::HOLDER_LABEL)
            .map(String::as_str),
    )
}

/// The body of update-elastic-ip as the spec has it: `description` (at most 255 characters),
/// `labels` (string → string) and `healthcheck`, all optional, nothing else. The simulated
/// EIPs are all manual, and a healthcheck cannot be added to a manual EIP.
fn eip_update(body: &[u8]) -> Result<Change, Vec<String>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| vec![format!("body: {e}")])?;
    let Value::Object(fields) = v else {
        return Err(vec!["body: expected a JSON object".into()]);
    };
    let mut errors = Vec::new();
    let mut description = None;
    let mut labels = None;
    for (key, value) in &fields {
        match (key.as_str(), value) {
            ("description", Value::String(d)) if d.chars().count() <= 255 => {
                description = Some(d.clone())
            }
            ("description", Value::String(_)) => {
                errors.push("description: at most 255 characters".into())
            }
            ("description", _) => errors.push("description: expected a string".into()),
            ("labels", Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    match v {
                        Value::String(v) => {
                            out.insert(k.clone(), v.clone());
                        }
                        _ => errors.push(format!("labels.{k}: expected a string")),
                    }
                }
                labels = Some(out);
            }
            ("labels", _) => errors.push("labels: expected an object of strings".into()),
            ("healthcheck", _) => errors.push(
                "healthcheck: cannot be added to a manual elastic IP (create a managed one)".into(),
            ),
            (other, _) => errors.push(format!("{other}: unknown property")),
        }
    }
    if errors.is_empty() {
        Ok(Change::Update {
            description,
            labels,
        })
    } else {
        Err(errors)
    }
}

/// `labels=k=v,k2=v2`: every pair must match.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

async fn list_instances(State(sim): Sim, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let zone_name = sim.zone_for(&headers);
    let query = sign::parse_query(q.as_deref().unwrap_or(""));
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    let ip = match param("ip-address") {
        None => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return bad_request(
                    "invalid query",
                    &[format!("ip-address: {s:?} is not an IP address")],
                )
            }
        },
    };
    let labels = match param("labels") {
        None => None,
        Some(s) => match parse_labels(&s) {
            Some(l) => Some(l),
            None => return bad_request("invalid query", &["labels: expected k=v,k2=v2".into()]),
        },
    };
    let manager_type = param("manager-type");
    let manager_id = param("manager-id");

    let world = lock(&sim.world);
    let zone = &world.zones[&zone_name];
    let items: Vec<Value> = zone
        .instances
        .iter()
        .filter(|i| match ip {
            None => true,
            // Holders of an EIP with that address, or the instance whose own address it is: the
            // real parameter is undocumented and clients must cross-check.
            Some(ip) => {
                i.has_address(ip)
                    || zone
                        .eips
                        .iter()
                        .any(|e| e.ip == ip && e.holders.contains(&i.id))
            }
        })
        .filter(|i| {
            manager_type
                .iter()
                .all(|t| i.manager.as_ref().is_some_and(|m| &m.kind == t))
        })
        .filter(|i| {
            manager_id
                .iter()
                .all(|id| i.manager.as_ref().is_some_and(|m| &m.id == id))
        })
        .filter(|i| {
            labels.iter().all(|ls| {
                ls.iter()
                    .all(|(k, v)| i.labels.get(k).is_some_and(|x| x == v))
            })
        })
        .map(|i| instance_json(&world, &zone_name, zone, i, false))
        .collect();
    ok(json!({ "instances": items }))
}

async fn get_instance(State(sim): Sim, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let zone_name = sim.zone_for(&headers);
    let world = lock(&sim.world);
    let zone = &world.zones[&zone_name];
    match zone.instance(&id) {
        Some(i) => ok(instance_json(&world, &zone_name, zone, i, true)),
        None => not_found(format!("instance {id} not found")),
    }
}

async fn list_security_groups(State(sim): Sim, RawQuery(q): RawQuery) -> Response {
    let query = sign::parse_query(q.as_deref().unwrap_or(""));
    // Public groups are Exoscale-maintained source lists; the simulated account has none.
    if query
        .iter()
        .any(|(n, v)| n == "visibility" && v == "public")
    {
        return ok(json!({ "security-groups": [] }));
    }
    let world = lock(&sim.world);
    let items: Vec<Value> = world
        .security_groups
        .iter()
        .map(security_group_json)
        .collect();
    ok(json!({ "security-groups": items }))
}

async fn get_security_group(State(sim): Sim, Path(id): Path<String>) -> Response {
    let world = lock(&sim.world);
    match world.security_groups.iter().find(|g| g.id == id) {
        Some(g) => ok(security_group_json(g)),
        None => not_found(format!("security group {id} not found")),
    }
}

async fn get_operation(State(sim): Sim, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let zone_name = sim.zone_for(&headers);
    let world = lock(&sim.world);
    match world.zones[&zone_name].operations.get(&id) {
        Some(op) => ok(op.to_json()),
        None => not_found(format!("operation {id} not found")),
    }
}

async fn list_zones(State(sim): Sim) -> Response {
    let zones: Vec<Value> = sim
        .zone_names
        .iter()
        .map(|z| {
            json!({
                "name": z,
                "api-endpoint": format!("https://api-{z}.exoscale.com/v2"),
                "sos-endpoint": format!("https://sos-{z}.exo.io"),
            })
        })
        .collect();
    ok(json!({ "zones": zones }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_are_stable_and_well_formed() {
        let m = mac_address("2f6a9a43-1c51-4a4e-9e0a-6f5bd2a7c1d0");
        assert_eq!(m, "06:2f:6a:9a:43:1c");
    }

    #[test]
    fn label_filters() {
        assert_eq!(
            parse_labels("role=lb,env=prod"),
            Some(vec![
                ("role".into(), "lb".into()),
                ("env".into(), "prod".into())
            ])
        );
        assert_eq!(parse_labels("role"), None);
    }

    #[test]
    fn eip_updates_are_validated_as_the_spec_says() {
        match eip_update(br#"{"labels": {"a": "1", "exoip-epoch": "7"}}"#).unwrap() {
            Change::Update {
                description: None,
                labels: Some(l),
            } => assert_eq!(l.get("exoip-epoch").map(String::as_str), Some("7")),
            other => panic!("{other:?}"),
        }
        match eip_update(br#"{"description": "d"}"#).unwrap() {
            Change::Update {
                description: Some(d),
                labels: None,
            } => assert_eq!(d, "d"),
            other => panic!("{other:?}"),
        }
        let long = format!(r#"{{"description": "{}"}}"#, "x".repeat(256));
        for bad in [
            &b""[..],
            b"[]",
            b"{\"labels\": {\"a\": 1}}",
            b"{\"labels\": \"a=b\"}",
            b"{\"description\": 3}",
            b"{\"healthcheck\": {\"mode\": \"tcp\", \"port\": 80}}",
            b"{\"ip\": \"203.0.113.1\"}",
            long.as_bytes(),
        ] {
            assert!(eip_update(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn instance_ref_requires_an_instance_uuid() {
        let id = "2f6a9a43-1c51-4a4e-9e0a-6f5bd2a7c1d0";
        assert_eq!(
            instance_ref(format!(r#"{{"instance": {{"id": "{id}"}}}}"#).as_bytes()).unwrap(),
            id
        );
        for bad in [
            &b""[..],
            b"{}",
            b"{\"instance\":{}}",
            b"{\"instance\":{\"id\":\"x\"}}",
        ] {
            assert!(instance_ref(bad).is_err());
        }
    }
}

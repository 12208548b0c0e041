//! The decision core: a deterministic state machine with no I/O and no clock.
//!
//! The driver (`agent`) feeds it inputs stamped with the current monotonic time and executes the
//! actions it returns. Every timing rule lives here, so each one is a unit test in simulated time.
//!
//! Rules (the contract, also in the README):
//! - A peer is alive while its last valid heartbeat is younger than the dead period
//!   (`dead_ratio x interval`). After start-up a node holds off one dead period (state `Init`,
//!   announced to peers) before it may claim.
//! - Eligible nodes are alive, not leaving, and announce `Backup` or `Master` for the address.
//!   The winner is the eligible node with the lowest `(priority, node id)`: ties never give two
//!   winners.
//! - The winner claims: attach to itself, add the alias, announce `Master`, then read the holders
//!   and detach every other one (fence). Failures retry with backoff and jitter while it stays the
//!   winner. Preempting a live `Master` waits until that master has been heard continuously for a
//!   hold-off period, so a flapping peer cannot bounce the address.
//! - A `Master` yields only when a better eligible peer announces `Master` (it has attached), so a
//!   handover has overlap, never a gap. The new master fences the old one through the API.
//! - A backup the API still shows attached keeps the alias and re-reads every interval: it
//!   serves until fenced, and steps aside itself (detach) once another node holds it while a
//!   live peer is master (an old exoip master never fences a live node).
//! - Graceful stop: announce `leaving`, wait (bounded) for another node to announce `Master`
//!   and for the API to show another holder, then detach from self, drop the alias and exit.
//! - Reconcile periodically: re-read the holders; a master re-attaches and fences as needed and
//!   re-asserts its alias; a backup makes sure it has no alias.
//! - Health: failing weighted checks add their weight to every priority value; any other
//!   failing check (or `exoip release`) puts the node in `Fault`: it hands over like a graceful
//!   stop (announced as `fault`, so the best backup claims at once), releases, and stays out of
//!   the election until healthy (or `exoip resume`). Health counts only from the end of the
//!   start-up hold-off. `exoip promote` makes the priority value 1 until `exoip resume`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::wire::{Advert, Entry, IpState};

/// Heartbeats sent per interval: a dead period (`dead_ratio` intervals) spans this many times
/// `dead_ratio` of them, so losing a few in a row is no failover (at 30 % loss and the defaults,
/// 9 losses in a row: about once a day instead of once a minute with one per interval).
pub const HEARTBEATS_PER_INTERVAL: u32 = 3;

/// How many reconcile periods a node stands by for a claim recorded by a holder it cannot hear,
/// before it claims anyway (5 minutes at the defaults).
pub const SUPERSEDED_PATIENCE: u32 = 10;

/// Monotonic time since an arbitrary origin (the driver uses the agent's start).
pub type Time = Duration;

/// Timing and identity parameters of the core.
#[derive(Clone, Debug)]
pub struct Params {
    /// This node's id (the cloud instance id): breaks priority ties, identifies heartbeats.
    pub node: String,
    pub interval: Duration,
    pub dead_ratio: u32,
    pub reconcile_interval: Duration,
    /// How long a graceful stop waits for a successor before releasing anyway.
    pub leave_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Seed of the jitter generator (random in production, fixed in tests).
    pub jitter_seed: u64,
    /// Whether winning means an API call first or holding the address at once.
    pub claim: ClaimMode,
    /// Self-fencing: with peers known but none heard and no API answer for this long, drop the
    /// address locally (an isolated node must not serve it while another may hold it). `None`:
    /// never.
    pub isolation_release_after: Option<Duration>,
    /// Whether the provider keeps a claim record (its arbiter is not `none`). In the local modes
    /// a new master then records its claim right after taking the address, and a master that
    /// reads a newer claim by a node it cannot hear stands by (see `docs/arbiter.md`).
    pub records: bool,
}

/// How the winner takes the address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimMode {
    /// Through the cloud API: attach the address to this node, then hold it locally, then fence
    /// every other holder the API reports. The API says who holds it (Exoscale elastic IPs,
    /// OpenStack floating IPs, Azure public and secondary IPs).
    #[default]
    Api,
    /// Locally, at once: the winner holds the address (on its NIC, announced with gratuitous
    /// ARP) with no API call on the critical path. The API only records which nodes are
    /// *allowed* to hold it (OpenStack allowed address pairs); the master keeps that list
    /// right off the critical path: itself and every live peer allowed (so a backup can take
    /// over without an API call), every other node removed (fencing a peer declared dead).
    Local,
    /// Locally, at once, and the API has no part at all: holding is all there is (Azure
    /// lb-probe: only the holder answers the load balancer's health probe, so the load balancer
    /// sends the traffic there). No provider call is ever made for the address.
    LocalOnly,
}

impl ClaimMode {
    /// Whether the winner holds the address at once, with no API call first.
    pub fn is_local(self) -> bool {
        matches!(self, ClaimMode::Local | ClaimMode::LocalOnly)
    }
}

impl Params {
    pub fn dead_period(&self) -> Duration {
        self.interval * self.dead_ratio
    }
}

/// One watched address and its configured priority (1..=255, lowest wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedIp {
    pub ip: IpAddr,
    pub priority: u8,
}

/// Operator signals, exoip compatible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM/SIGINT: hand over and exit.
    Stop,
    /// SIGUSR1: lower the priority value by one (more likely to win).
    Promote,
    /// SIGUSR2: raise the priority value by one.
    Demote,
}

/// The last claim recorded on the address's cloud resource (see `docs/arbiter.md`): between
/// nodes that cannot hear each other, the newest claim wins.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub epoch: u64,
    pub holder: String,
}

/// A cloud API call the core asks the driver to make for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Who holds the address (in [`ClaimMode::Local`]: who is allowed to hold it), and the
    /// claim record.
    ReadHolders,
    /// Attach the address to this node and record the claim `epoch`; `seen` is the record's
    /// epoch when we decided (a provider with compare-and-swap refuses if it moved). Local:
    /// allow this node to hold it (the epoch is not recorded).
    Attach { epoch: u64, seen: Option<u64> },
    /// Allow this live peer to hold the address again, so it can stand by ([`ClaimMode::Local`]).
    Admit(String),
    /// Detach the address from that node (Local: remove its permission: fencing).
    Detach(String),
}

/// How a provider call ended, reduced to what the core decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Holders {
        holders: Vec<String>,
        record: Option<Record>,
    },
    Done,
    Failed {
        /// Stable label of the error kind (`retryable`, `auth`, ...), for logs.
        kind: &'static str,
        message: String,
        /// The API asked to wait at least this long.
        retry_after: Option<Duration>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; nothing else happened.
    Tick,
    /// An authenticated, fresh heartbeat (the wire layer already dropped everything else).
    Heartbeat(Advert),
    /// A provider call finished. `id` is the one of the `Action::Call` that started it.
    OpDone {
        ip: IpAddr,
        id: u64,
        result: OpResult,
    },
    Signal(Signal),
    /// The tracked health checks changed: `fault` names why the node must not hold the address
    /// (None: healthy), `penalty` is added to every priority value (weighted checks failing).
    Health {
        fault: Option<String>,
        penalty: u16,
    },
    /// An operator command from the status socket.
    Admin(Admin),
}

/// Operator commands (`exoip release|resume|promote`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    /// Hand the addresses over now and stay out of the election until `Resume`.
    Release,
    /// Back to normal: undo `Release` or `Promote`.
    Resume,
    /// Take the addresses now: priority value 1 until `Resume`.
    Promote,
}

/// This node's role for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hold-off after start: listening, not claiming.
    Init,
    Backup,
    /// Winner, attach in progress.
    Claiming,
    Master,
    /// Handing over (stopping, faulty or released by the operator): waiting for a successor,
    /// then releasing.
    Leaving,
    /// Unhealthy or released by the operator: never claims.
    Fault,
    /// Released after a stop; nothing more to do.
    Stopped,
}

impl Role {
    fn wire(self) -> IpState {
        match self {
            Role::Init => IpState::Init,
            Role::Backup | Role::Claiming => IpState::Backup,
            Role::Master => IpState::Master,
            Role::Fault => IpState::Fault,
            Role::Leaving | Role::Stopped => IpState::Leaving,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Backup => "backup",
            Role::Claiming => "claiming",
            Role::Master => "master",
            Role::Leaving => "leaving",
            Role::Fault => "fault",
            Role::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this heartbeat to every peer now.
    Send(Advert),
    /// Make a provider call; report it back as `Input::OpDone` with the same id.
    Call {
        ip: IpAddr,
        id: u64,
        op: Op,
    },
    AddAlias(IpAddr),
    RemoveAlias(IpAddr),
    /// A role change, for logs, hooks and status.
    Transition {
        ip: IpAddr,
        from: Role,
        to: Role,
        reason: String,
        /// The peer the change is about (who took over, who is preempted), if any.
        peer: Option<String>,
    },
    /// A reconcile confirmed that we hold the address (API and alias re-asserted).
    Reasserted(IpAddr),
    /// Local modes: a peer that announced master next to us (it could not hear us for a
    /// moment) no longer does. Neighbours may have followed its gratuitous ARP: announce the
    /// address again, after the rival's own announcements are over.
    Reannounce(IpAddr),
    /// A provider call failed; it will be retried after `retry_in` if still needed.
    CallFailed {
        ip: IpAddr,
        op: Op,
        message: String,
        retry_in: Duration,
    },
    /// Every address is released after a stop: the process may exit.
    Exit,
}

#[derive(Clone, Debug)]
struct Peer {
    last_heard: Time,
    /// Start of the current run of heartbeats without a gap longer than the dead period.
    heard_since: Time,
    leaving: bool,
    entries: BTreeMap<IpAddr, Entry>,
}

#[derive(Clone, Debug)]
struct Slot {
    ip: IpAddr,
    priority: u8,
    role: Role,
    /// The holders per the last successful read, and when.
    holders: Option<(Vec<String>, Time)>,
    inflight: Option<(u64, Op)>,
    /// Holders still to detach after a claim or reconcile.
    to_fence: BTreeSet<String>,
    attempt: u32,
    retry_at: Option<Time>,
    next_reconcile: Time,
    leaving_since: Option<Time>,
    /// Whether we last told the driver to have the alias (see `desired_alias`).
    alias_on: bool,
    /// Reads in a row that showed us detached although we claimed: backs off re-claims.
    disagreements: u32,
    /// The next holder read follows our own attach (its result is no re-assert).
    read_after_claim: bool,
    /// Why the role last changed, and when.
    reason: String,
    since: Time,
    /// The last peer seen announcing Master for this address, and the peer a claim takes the
    /// address from (for hooks and logs: EXOIP_PEER).
    last_master: Option<String>,
    claimed_from: Option<String>,
    /// The claim record per the last read.
    record: Option<Record>,
    /// The newest claim epoch learned other than from the record: our own claims and the
    /// epochs peers announce. A record newer than this was made by someone we did not hear.
    heard_epoch: u64,
    /// The epoch of our own last claim (0: none).
    claimed_epoch: u64,
    /// After a claim met a newer record: read first, then claim against that read.
    claim_retry: ClaimRetry,
    /// Since when the record has named a holder we cannot hear (see `Core::superseded`).
    superseded_since: Option<Time>,
    /// Local modes with records: this master has yet to record its claim.
    record_due: bool,
    /// Local modes, as master: a worse peer announces master too (see `Action::Reannounce`).
    rival: bool,
}

/// Where a claim stands after the record moved under it (a conflict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimRetry {
    None,
    /// Read the record before claiming again.
    ReadFirst,
    /// The read is done: claim against what it showed (an announced claim may have failed).
    UseRead,
}

/// A snapshot of one address for status output.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IpStatus {
    pub ip: IpAddr,
    pub role: Role,
    /// Why the role last changed, and when (core time).
    pub reason: String,
    pub since: Time,
    pub priority: u8,
    pub effective_priority: u8,
    pub holders: Option<Vec<String>>,
    pub holders_checked: Option<Time>,
    pub next_reconcile: Option<Time>,
    pub winner: Option<String>,
    /// The claim record per the last read, and the newest epoch heard otherwise.
    pub record: Option<Record>,
    pub epoch: u64,
}

/// A snapshot of one peer for status output.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub id: String,
    pub last_heard: Time,
    pub alive: bool,
    pub leaving: bool,
    pub entries: Vec<Entry>,
}

pub struct Core {
    params: Params,
    started: Time,
    slots: Vec<Slot>,
    peers: BTreeMap<String, Peer>,
    /// Added to every configured priority by SIGUSR1/SIGUSR2.
    adjust: i16,
    /// Added to every priority value by failing weighted health checks.
    penalty: u16,
    /// Why the node must not hold anything now (failing health check), if it must not.
    health_fault: Option<String>,
    admin: Option<Admin>,
    next_send: Time,
    next_op_id: u64,
    rng: u64,
    stopping: bool,
    exited: bool,
    /// The time of the input being handled (stamps role changes for status).
    now_hint: Time,
    /// When a valid heartbeat last arrived from any peer, and when a provider call last
    /// succeeded (isolation self-fencing).
    last_heartbeat: Option<Time>,
    last_api_ok: Option<Time>,
    /// [`Core::isolated`] as of the current step.
    isolated_now: bool,
}

impl Core {
    pub fn new(params: Params, ips: &[WatchedIp], now: Time) -> Self {
        let slots = ips
            .iter()
            .map(|w| Slot {
                ip: w.ip,
                priority: w.priority,
                role: Role::Init,
                holders: None,
                inflight: None,
                to_fence: BTreeSet::new(),
                attempt: 0,
                retry_at: None,
                // Read the API state at once: it tells a restarted node whether it still holds.
                // In the local modes the record says it only together with the peers (a
                // successor's claim may still be retrying): read once an interval has brought
                // their heartbeats, leaving the address as the system has it until then.
                next_reconcile: if params.claim.is_local() {
                    now + params.interval
                } else {
                    now
                },
                leaving_since: None,
                alias_on: false,
                disagreements: 0,
                read_after_claim: false,
                reason: "starting: hold-off".to_string(),
                since: now,
                last_master: None,
                claimed_from: None,
                record: None,
                heard_epoch: 0,
                claimed_epoch: 0,
                claim_retry: ClaimRetry::None,
                superseded_since: None,
                record_due: false,
                rival: false,
            })
            .collect();
        let rng = params.jitter_seed | 1;
        Core {
            params,
            started: now,
            slots,
            peers: BTreeMap::new(),
            adjust: 0,
            penalty: 0,
            health_fault: None,
            admin: None,
            next_send: now,
            next_op_id: 1,
            rng,
            stopping: false,
            exited: false,
            now_hint: now,
            last_heartbeat: None,
            last_api_ok: None,
            isolated_now: false,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Feed one input; returns the actions to execute, in order.
    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.now_hint = now;
        match input {
            Input::Tick => {}
            Input::Heartbeat(advert) => self.on_heartbeat(now, advert),
            Input::OpDone { ip, id, result } => self.on_op_done(now, ip, id, result, &mut out),
            Input::Signal(s) => self.on_signal(now, s, &mut out),
            Input::Health { fault, penalty } => {
                if self.health_fault != fault || self.penalty != penalty {
                    self.health_fault = fault;
                    self.penalty = penalty;
                    self.next_send = now;
                }
            }
            Input::Admin(cmd) => {
                self.admin = match cmd {
                    Admin::Resume => None,
                    other => Some(other),
                };
                self.next_send = now;
            }
        }
        self.step(now, &mut out);
        out
    }

    /// When the core next needs a `Tick` if nothing else happens (always after `now`).
    pub fn next_deadline(&self, now: Time) -> Time {
        let dead = self.params.dead_period();
        let mut t = self.next_send.max(now + Duration::from_millis(1));
        let mut min = |x: Time| {
            if x > now && x < t {
                t = x
            }
        };
        if self.slots.iter().any(|s| s.role == Role::Init) {
            min(self.started + dead);
        }
        for p in self.peers.values() {
            let expiry = p.last_heard + dead;
            min(expiry);
            min(p.heard_since + dead);
            min(p.heard_since + dead + self.params.interval);
        }
        for s in &self.slots {
            if s.inflight.is_none() {
                min(s.next_reconcile);
                if let Some(r) = s.retry_at {
                    min(r);
                }
            }
            if let Some(since) = s.leaving_since {
                min(since + self.params.leave_timeout);
            }
        }
        t
    }

    pub fn status(&self, now: Time) -> Vec<IpStatus> {
        self.slots
            .iter()
            .map(|s| IpStatus {
                ip: s.ip,
                role: s.role,
                reason: s.reason.clone(),
                since: s.since,
                priority: s.priority,
                effective_priority: self.effective(s.priority),
                holders: s.holders.as_ref().map(|(h, _)| h.clone()),
                holders_checked: s.holders.as_ref().map(|(_, t)| *t),
                next_reconcile: (s.inflight.is_none()).then_some(s.next_reconcile),
                winner: self.winner(now, s).map(|(_, id)| id),
                record: s.record.clone(),
                epoch: s.heard_epoch,
            })
            .collect()
    }

    /// The peers heard from, for status output.
    pub fn peers(&self, now: Time) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                id: id.clone(),
                last_heard: p.last_heard,
                alive: self.alive(now, p),
                leaving: p.leaving,
                entries: p.entries.values().copied().collect(),
            })
            .collect()
    }

    /// The operator's standing command, if any (`release` or `promote`).
    pub fn admin(&self) -> Option<Admin> {
        self.admin
    }

    fn effective(&self, priority: u8) -> u8 {
        if self.admin == Some(Admin::Promote) {
            return 1;
        }
        (priority as i16 + self.adjust + self.penalty.min(255) as i16).clamp(1, 255) as u8
    }

    /// Why this node must not hold any address now, if it must not.
    fn unavailable(&self) -> Option<String> {
        if self.admin == Some(Admin::Release) {
            return Some("released by the operator".to_string());
        }
        self.health_fault.clone()
    }

    fn alive(&self, now: Time, p: &Peer) -> bool {
        now < p.last_heard + self.params.dead_period()
    }

    fn peer_alive(&self, now: Time, id: &str) -> bool {
        self.peers.get(id).is_some_and(|p| self.alive(now, p))
    }

    /// Whether the claim record shows that someone else claimed slot `i`'s address after the
    /// newest claim we know of (or won a race against our own claim of the same epoch) and
    /// holds it: `(who, epoch)`. Only meaningful when that someone is not heard (callers check).
    fn supersedes(
        &self,
        i: usize,
        holders: &[String],
        record: Option<&Record>,
    ) -> Option<(String, u64)> {
        let slot = &self.slots[i];
        let r = record?;
        let newer = r.epoch > slot.heard_epoch
            || (slot.claimed_epoch != 0 && r.epoch == slot.claimed_epoch);
        (r.holder != self.params.node && newer && holders.contains(&r.holder))
            .then(|| (r.holder.clone(), r.epoch))
    }

    /// [`Self::supersedes`] with the last read, for a holder we cannot hear, whatever the
    /// patience.
    fn superseded_by_record(&self, now: Time, i: usize) -> Option<(String, u64)> {
        if self.params.claim != ClaimMode::Api && !self.params.records {
            return None;
        }
        let (holders, _) = self.slots[i].holders.as_ref()?;
        self.supersedes(i, holders, self.slots[i].record.as_ref())
            .filter(|(who, _)| !self.peer_alive(now, who))
    }

    /// [`Self::superseded_by_record`] while we stand by for it: standing by for a holder we
    /// never hear again must not last for ever. It may have died while we could not hear it
    /// (then nobody would fence it and the address would be lost): after the patience we claim,
    /// and if it is alive, it stands by in turn at its next read.
    fn superseded(&self, now: Time, i: usize) -> Option<(String, u64)> {
        let patience = self.params.reconcile_interval * SUPERSEDED_PATIENCE;
        self.superseded_by_record(now, i).filter(|_| {
            self.slots[i]
                .superseded_since
                .is_none_or(|t| now < t + patience)
        })
    }

    /// The claim to make for slot `i`: the next epoch after every one we know of.
    fn claim_op(&mut self, i: usize) -> Op {
        let slot = &mut self.slots[i];
        // The record carries at least the newest epoch heard (a holder announces its claim only
        // after recording it): claim against that, not a read that may be older.
        let read = slot.record.as_ref().map(|r| r.epoch);
        let seen = match (read, slot.heard_epoch) {
            // Right after a conflict the read is the truth (an announced claim may have failed).
            _ if slot.claim_retry == ClaimRetry::UseRead => {
                slot.claim_retry = ClaimRetry::None;
                read
            }
            (None, 0) => None,
            (r, heard) => Some(r.unwrap_or(0).max(heard)),
        };
        let epoch = seen.unwrap_or(0).max(slot.heard_epoch) + 1;
        slot.claimed_epoch = epoch;
        Op::Attach { epoch, seen }
    }

    /// With isolation self-fencing on and peers known but none alive: how often to read the API
    /// (its answers tell isolation from a dead peer).
    fn isolation_watch(&self, now: Time) -> Option<Duration> {
        let after = self.params.isolation_release_after?;
        let alone = !self.peers.is_empty() && self.peers.values().all(|p| !self.alive(now, p));
        (alone && self.api_read()).then_some(after / 2)
    }

    /// Whether this node reads the API at all (not in [`ClaimMode::LocalOnly`] without a record).
    fn api_read(&self) -> bool {
        self.params.claim != ClaimMode::LocalOnly || self.params.records
    }

    /// Isolated: peers known, none heard and no API answer for `isolation_release_after`.
    fn isolated(&self, now: Time) -> bool {
        let Some(after) = self.params.isolation_release_after else {
            return false;
        };
        if !self.api_read() {
            // No API answer ever comes: silent peers would look like isolation.
            return false;
        }
        let silent = self.last_heartbeat.is_some_and(|t| now >= t + after);
        let api_silent = self.last_api_ok.is_none_or(|t| now >= t + after);
        silent && api_silent
    }

    /// The best eligible node for this address: `(priority, id)`.
    fn winner(&self, now: Time, slot: &Slot) -> Option<(u8, String)> {
        let mut best: Option<(u8, String)> = None;
        let mut offer = |rank: (u8, String)| {
            if best.as_ref().is_none_or(|b| rank < *b) {
                best = Some(rank);
            }
        };
        if matches!(slot.role, Role::Backup | Role::Claiming | Role::Master) {
            offer((self.effective(slot.priority), self.params.node.clone()));
        }
        for (id, p) in &self.peers {
            if let Some(e) = self.eligible_entry(now, p, slot.ip) {
                offer((e.priority, id.clone()));
            }
        }
        best
    }

    fn eligible_entry<'a>(&self, now: Time, p: &'a Peer, ip: IpAddr) -> Option<&'a Entry> {
        if !self.alive(now, p) || p.leaving {
            return None;
        }
        p.entries
            .get(&ip)
            .filter(|e| matches!(e.state, IpState::Backup | IpState::Master))
    }

    /// The best peer announcing `Master` for this address, if any: `(priority, id, heard_since)`.
    fn best_master_peer(&self, now: Time, ip: IpAddr) -> Option<(u8, String, Time)> {
        self.peers
            .iter()
            .filter_map(|(id, p)| {
                self.eligible_entry(now, p, ip)
                    .filter(|e| e.state == IpState::Master)
                    .map(|e| (e.priority, id.clone(), p.heard_since))
            })
            .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
    }

    /// Whether a better peer is still in its start-up hold-off. Its hold-off ends at the latest
    /// one dead period after we first heard it (plus an interval for its announcement to reach
    /// us); claiming before that would make nodes started together all claim at once.
    fn better_peer_joining(&self, now: Time, ip: IpAddr, my_rank: &(u8, String)) -> bool {
        let grace = self.params.dead_period() + self.params.interval;
        self.peers.iter().any(|(id, p)| {
            self.alive(now, p)
                && !p.leaving
                && now < p.heard_since + grace
                && p.entries.get(&ip).is_some_and(|e| {
                    e.state == IpState::Init && (e.priority, id.clone()) < *my_rank
                })
        })
    }

    fn on_heartbeat(&mut self, now: Time, advert: Advert) {
        if advert.node == self.params.node {
            // Our own datagram looped back (a peer list that includes ourselves).
            return;
        }
        let dead = self.params.dead_period();
        self.last_heartbeat = Some(now);
        for e in &advert.entries {
            if let Some(slot) = self.slots.iter_mut().find(|s| s.ip == e.ip) {
                slot.heard_epoch = slot.heard_epoch.max(e.epoch);
            }
        }
        let entries = advert.entries.iter().map(|e| (e.ip, *e)).collect();
        match self.peers.get_mut(&advert.node) {
            Some(p) => {
                // A peer back in its start-up hold-off restarted (faster than a dead period):
                // it is joining again, and a worse node must not take over meanwhile.
                let restarted = advert.entries.iter().any(|e| {
                    e.state == IpState::Init
                        && p.entries
                            .get(&e.ip)
                            .is_some_and(|old| old.state != IpState::Init)
                });
                if now >= p.last_heard + dead || restarted {
                    p.heard_since = now;
                }
                p.last_heard = now;
                p.leaving = advert.leaving;
                p.entries = entries;
            }
            None => {
                self.peers.insert(
                    advert.node.clone(),
                    Peer {
                        last_heard: now,
                        heard_since: now,
                        leaving: advert.leaving,
                        entries,
                    },
                );
            }
        }
    }

    fn on_signal(&mut self, now: Time, signal: Signal, out: &mut Vec<Action>) {
        match signal {
            Signal::Promote => self.adjust = (self.adjust - 1).max(-254),
            Signal::Demote => self.adjust = (self.adjust + 1).min(254),
            Signal::Stop => {
                if self.stopping {
                    return;
                }
                self.stopping = true;
                for i in 0..self.slots.len() {
                    self.slots[i].leaving_since = Some(now);
                    self.set_role(i, Role::Leaving, "stopping", out);
                }
            }
        }
        // Tell peers at once: a priority change or a stop is news they act on.
        self.next_send = now;
    }

    fn on_op_done(
        &mut self,
        now: Time,
        ip: IpAddr,
        id: u64,
        result: OpResult,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self.slots.iter().position(|s| s.ip == ip) else {
            return;
        };
        let op = match &self.slots[i].inflight {
            Some((inflight_id, op)) if *inflight_id == id => op.clone(),
            _ => return, // a result we no longer wait for
        };
        self.slots[i].inflight = None;
        if let OpResult::Failed {
            message,
            retry_after,
            kind,
        } = result
        {
            if kind == "conflict"
                && matches!(op, Op::Attach { .. })
                && (!self.params.claim.is_local() || self.params.records)
            {
                // The record moved since our read: someone else claimed. Read, then decide
                // again (the claim may no longer be ours to make). A local master keeps holding
                // meanwhile: the read tells whether to stand by.
                self.slots[i].next_reconcile = now;
                self.slots[i].claim_retry = ClaimRetry::ReadFirst;
                if self.slots[i].role == Role::Claiming {
                    self.set_role(i, Role::Backup, "claim conflict: re-reading the API", out);
                }
                out.push(Action::CallFailed {
                    ip,
                    op,
                    message,
                    retry_in: Duration::ZERO,
                });
                return;
            }
            let slot = &mut self.slots[i];
            slot.attempt = slot.attempt.saturating_add(1);
            let mut delay = self.backoff(self.slots[i].attempt);
            if let Some(ra) = retry_after {
                delay = delay.max(ra);
            }
            let slot = &mut self.slots[i];
            slot.retry_at = Some(now + delay);
            out.push(Action::CallFailed {
                ip,
                op,
                message,
                retry_in: delay,
            });
            return;
        }
        let local = self.params.claim.is_local();
        let me = self.params.node.clone();
        self.last_api_ok = Some(now);
        self.slots[i].attempt = 0;
        self.slots[i].retry_at = None;
        let result = match (&op, result) {
            (Op::ReadHolders, OpResult::Holders { holders, record }) => {
                return self.on_holders(now, i, holders, record, out);
            }
            (_, other) => other,
        };
        let slot = &mut self.slots[i];
        match (op, result) {
            (Op::Attach { epoch, .. }, OpResult::Done) if slot.role == Role::Claiming => {
                slot.heard_epoch = slot.heard_epoch.max(epoch);
                slot.record = Some(Record {
                    epoch,
                    holder: me.clone(),
                });
                // Read who else holds it next, so they can be fenced.
                slot.next_reconcile = now;
                slot.read_after_claim = true;
                let from = slot.claimed_from.take();
                self.set_role_about(i, Role::Master, "attached", from, out);
            }
            (op @ (Op::Attach { .. } | Op::Admit(_)), OpResult::Done) if local => {
                if let Op::Attach { epoch, .. } = op {
                    if epoch != 0 {
                        slot.heard_epoch = slot.heard_epoch.max(epoch);
                        slot.record = Some(Record {
                            epoch,
                            holder: me.clone(),
                        });
                        slot.record_due = false;
                    }
                }
                let who = match op {
                    Op::Admit(who) => who,
                    _ => me,
                };
                if let Some((h, _)) = slot.holders.as_mut() {
                    if !h.contains(&who) {
                        h.push(who);
                    }
                }
            }
            (Op::Detach(who), OpResult::Done) => {
                slot.to_fence.remove(&who);
                if let Some((h, _)) = slot.holders.as_mut() {
                    h.retain(|x| *x != who);
                }
                if who == self.params.node && slot.role == Role::Leaving {
                    slot.leaving_since = None;
                    let to = self.after_leaving();
                    let why = self.leaving_done("released");
                    self.set_role(i, to, &why, out);
                }
            }
            _ => {}
        }
    }

    /// A read of the holders and the claim record came back for slot `i`.
    fn on_holders(
        &mut self,
        now: Time,
        i: usize,
        holders: Vec<String>,
        record: Option<Record>,
        out: &mut Vec<Action>,
    ) {
        let local = self.params.claim.is_local();
        let me = self.params.node.clone();
        let ip = self.slots[i].ip;
        let self_attached = holders.contains(&me);
        let slot = &mut self.slots[i];
        slot.record = record;
        if slot.claim_retry == ClaimRetry::ReadFirst {
            slot.claim_retry = ClaimRetry::UseRead;
        }
        slot.to_fence = holders.iter().filter(|h| **h != me).cloned().collect();
        if self_attached {
            slot.disagreements = 0;
        }
        let after_claim = std::mem::take(&mut slot.read_after_claim);
        slot.holders = Some((holders, now));
        let superseded = self.superseded(now, i);
        let alone_check = self.isolation_watch(now);
        let records = self.params.records;
        let interval = self.params.interval;
        let slot = &mut self.slots[i];
        // Local modes: a master that holds the address steps down only when a second read, an
        // interval later, still shows the newer claim by a node it cannot hear. A link that
        // just came back brings the API's answer and that node's heartbeats within moments of
        // each other: the first read alone would drop the address, and take it back later.
        let confirm_at = (local && slot.role == Role::Master)
            .then_some(superseded.as_ref())
            .flatten()
            .map(|_| *slot.superseded_since.get_or_insert(now) + interval)
            .filter(|at| now < *at);
        if local
            && records
            && slot.role == Role::Master
            && superseded.is_none()
            && slot.record.as_ref().is_some_and(|r| r.holder != me)
        {
            // A claim by a node we hear (or that no longer holds): we are the master, so the
            // record must name us again, or a partitioned peer would defer to a stale record.
            slot.record_due = true;
        }
        if slot.role == Role::Master
            && (self_attached || local)
            && !after_claim
            && superseded.is_none()
        {
            out.push(Action::Reasserted(ip));
        }
        // Handing over, or a backup still attached: watch every interval for the successor's
        // attach or for being fenced.
        let watch =
            slot.role == Role::Leaving || (slot.role == Role::Backup && self_attached && !local);
        slot.next_reconcile = now
            + if watch {
                self.params.interval
            } else {
                self.params.reconcile_interval
            };
        if let Some(every) = alone_check {
            slot.next_reconcile = slot.next_reconcile.min(now + every);
        }
        if let Some(at) = confirm_at {
            slot.next_reconcile = slot.next_reconcile.min(at);
        }
        if slot.role != Role::Master || local {
            // Local mode decides whom to fence from the live peers at call time.
            slot.to_fence.clear();
        }
        let newer_record = slot
            .record
            .clone()
            .filter(|r| r.holder != me && r.epoch > slot.claimed_epoch);
        if let (Some((who, epoch)), Role::Master, None) = (superseded, slot.role, confirm_at) {
            // Someone we cannot hear claimed after us (a partition): the record says it holds
            // the address. Do not fight it: stand by until we hear it again or the API shows
            // it gone.
            slot.to_fence.clear();
            let why =
                format!("{who} claimed it (epoch {epoch}) while we could not hear it: standing by");
            self.set_role_about(i, Role::Backup, &why, Some(who), out);
            let want = self.desired_alias(i);
            self.set_alias(i, want, out);
        } else if let (Role::Master, false, true, Some(r)) =
            (slot.role, local, self_attached, newer_record)
        {
            // Someone recorded a newer claim (it could not hear us) and may be fencing us right
            // now: fencing it back from this read could leave nobody. Claim again first (a
            // newer record), then fence from the read that follows.
            slot.to_fence.clear();
            let why = format!(
                "{} recorded a newer claim (epoch {}): claiming again before fencing",
                r.holder, r.epoch
            );
            slot.claimed_from = Some(r.holder.clone());
            self.set_role_about(i, Role::Claiming, &why, Some(r.holder), out);
        } else if slot.role == Role::Master && !self_attached && !local {
            // Back off as after a failure: if the API keeps disagreeing right after our attach,
            // re-claiming in a tight loop would only hammer it. And fence nobody on the
            // strength of this read: we do not hold it.
            slot.to_fence.clear();
            slot.disagreements = slot.disagreements.saturating_add(1);
            let delay = self.backoff(self.slots[i].disagreements);
            self.slots[i].retry_at = Some(now + delay);
            self.set_role(
                i,
                Role::Claiming,
                "the API shows the address detached from us",
                out,
            );
        } else {
            // Re-assert the alias even if we believe it is right: someone may have removed or
            // added it behind our back.
            let want = self.desired_alias(i);
            self.slots[i].alias_on = want;
            out.push(if want {
                Action::AddAlias(ip)
            } else {
                Action::RemoveAlias(ip)
            });
        }
    }

    /// Exponential backoff with jitter in [50%, 100%] of the step.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let step = self
            .params
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1))
            .min(self.params.backoff_max);
        // xorshift64: deterministic for a given seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        step.mul_f64(frac)
    }

    fn set_role(&mut self, i: usize, to: Role, reason: &str, out: &mut Vec<Action>) {
        self.set_role_about(i, to, reason, None, out)
    }

    /// The reason shown once a hand-over is done: for a fault, why we are out of the election
    /// (that is what an operator asks), then what happened to the address.
    fn leaving_done(&self, what: &str) -> String {
        match (self.stopping, self.unavailable()) {
            (false, Some(why)) => format!("{why} (address {what})"),
            _ => what.to_string(),
        }
    }

    /// Where a hand-over ends: stopped when the process stops, else out of the election.
    fn after_leaving(&self) -> Role {
        if self.stopping {
            Role::Stopped
        } else {
            Role::Fault
        }
    }

    fn set_role_about(
        &mut self,
        i: usize,
        to: Role,
        reason: &str,
        peer: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let from = self.slots[i].role;
        if from == to {
            return;
        }
        let local_record = self.params.claim.is_local() && self.params.records;
        let slot = &mut self.slots[i];
        slot.role = to;
        // Local modes hold at once; the claim is recorded right after.
        slot.record_due = to == Role::Master && local_record;
        slot.reason = reason.to_string();
        slot.since = self.now_hint;
        out.push(Action::Transition {
            ip: slot.ip,
            from,
            to,
            reason: reason.to_string(),
            peer,
        });
        // Peers learn of every role change at once, not at the next interval.
        self.next_send = Time::ZERO;
    }

    fn start_op(&mut self, i: usize, op: Op, out: &mut Vec<Action>) {
        let id = self.next_op_id;
        self.next_op_id += 1;
        self.slots[i].inflight = Some((id, op.clone()));
        out.push(Action::Call {
            ip: self.slots[i].ip,
            id,
            op,
        });
    }

    /// Re-evaluates every address and emits what follows from the current knowledge.
    fn step(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.exited {
            return;
        }
        let holdoff_over = now >= self.started + self.params.dead_period();
        self.isolated_now = self.isolated(now);
        for i in 0..self.slots.len() {
            // Health counts only from the end of the hold-off: a node starts in Init whatever
            // its checks say (they have not run yet), and leaves it for Backup or Fault.
            if self.slots[i].role == Role::Init && holdoff_over && self.unavailable().is_none() {
                self.set_role(i, Role::Backup, "hold-off over", out);
            }
            self.decide(now, i, out);
        }
        if now >= self.next_send {
            out.push(Action::Send(self.advert()));
            self.next_send = now + self.params.interval / HEARTBEATS_PER_INTERVAL;
        }
        if self.stopping && self.slots.iter().all(|s| s.role == Role::Stopped) {
            self.exited = true;
            out.push(Action::Exit);
        }
    }

    fn decide(&mut self, now: Time, i: usize, out: &mut Vec<Action>) {
        let me = self.params.node.clone();
        let slot = &self.slots[i];
        let ip = slot.ip;
        let my_rank = (self.effective(slot.priority), me.clone());
        let winner = self.winner(now, slot);
        let i_win = winner.as_ref().is_some_and(|w| w.1 == me);
        // Peers do not change while deciding: look the best master up once.
        let master_peer = self.best_master_peer(now, ip);
        let master_alive = master_peer.is_some();
        let better_master = master_peer
            .clone()
            .filter(|(prio, id, _)| (*prio, id.clone()) < my_rank);

        let holdoff_over = now >= self.started + self.params.dead_period();
        if !self.stopping && (slot.role != Role::Init || holdoff_over) {
            let we_hold = self.holds(i);
            match (self.unavailable(), slot.role) {
                // Faulty or released: hand over like a stop (peers see us ineligible at once and
                // the best backup claims), but keep running.
                (Some(why), Role::Claiming | Role::Master) => {
                    self.slots[i].leaving_since = Some(now);
                    self.set_role(i, Role::Leaving, &why, out);
                }
                (Some(why), Role::Init | Role::Backup | Role::Fault) if we_hold => {
                    self.slots[i].leaving_since = Some(now);
                    self.set_role(i, Role::Leaving, &why, out);
                }
                (Some(why), Role::Init | Role::Backup) => self.set_role(i, Role::Fault, &why, out),
                (None, Role::Fault) => {
                    let why = "healthy again and not released: back in the election";
                    self.set_role(i, Role::Backup, why, out);
                }
                _ => {}
            }
        }
        if let Some((_, id, _)) = &master_peer {
            self.slots[i].last_master = Some(id.clone());
        }
        if self.isolated_now
            && !self.stopping
            && matches!(self.slots[i].role, Role::Master | Role::Claiming)
        {
            let why =
                "isolated: no peer heard and no API answer: dropped the address (self-fencing)";
            self.set_role(i, Role::Backup, why, out);
        }
        if let Some(every) = self.isolation_watch(now) {
            // The peers just went silent: read the API now, and then often, to tell a dead
            // peer from our own isolation.
            let read_since_silence = match (&self.slots[i].holders, self.last_heartbeat) {
                (Some((_, read)), Some(heard)) => *read > heard,
                _ => false,
            };
            let slot = &mut self.slots[i];
            let next = if read_since_silence { now + every } else { now };
            if slot.next_reconcile > next {
                slot.next_reconcile = next;
            }
        }
        // Since when we stand by (see `superseded`, which counts the patience from there).
        match (
            self.superseded_by_record(now, i).is_some(),
            self.slots[i].superseded_since,
        ) {
            (true, None) => self.slots[i].superseded_since = Some(now),
            (false, Some(_)) => self.slots[i].superseded_since = None,
            _ => {}
        }
        let superseded = self.superseded(now, i);
        let slot = &self.slots[i];

        match slot.role {
            Role::Backup if i_win => {
                // Preempting a live master waits until it has been heard steadily for a hold-off.
                let master = master_peer;
                let steady = master
                    .as_ref()
                    .is_none_or(|(_, _, since)| now >= *since + self.params.dead_period());
                // Local mode: taking the address from a live master before the API allows us
                // to hold it would only get our traffic dropped (port security). The master
                // allows us once it hears us; re-read soon to see it.
                let permitted =
                    self.params.claim != ClaimMode::Local || master.is_none() || self.permitted(i);
                if !permitted {
                    let soon = now + self.params.interval;
                    if self.slots[i].next_reconcile > soon {
                        self.slots[i].next_reconcile = soon;
                    }
                }
                if steady
                    && permitted
                    && self.slots[i].claim_retry != ClaimRetry::ReadFirst
                    && superseded.is_none()
                    && !self.isolated_now
                    && !self.better_peer_joining(now, ip, &my_rank)
                {
                    let (why, from) = match master {
                        Some((_, id, _)) => (format!("preempting {id}: better priority"), Some(id)),
                        None => match self.slots[i].last_master.take() {
                            Some(id) => (
                                format!("{id} is gone and no better node is alive"),
                                Some(id),
                            ),
                            None => ("no better node alive".to_string(), None),
                        },
                    };
                    if self.params.claim.is_local() {
                        // Nothing to ask the API first: hold it now, fix the permissions after.
                        self.slots[i].next_reconcile = now;
                        self.set_role_about(i, Role::Master, &why, from, out);
                    } else {
                        self.slots[i].claimed_from = from.clone();
                        self.set_role_about(i, Role::Claiming, &why, from, out);
                    }
                }
            }
            Role::Claiming if !i_win && self.slots[i].inflight.is_none() => {
                self.set_role(i, Role::Backup, "a better node is eligible", out);
            }
            Role::Master => {
                if let Some((_, id, _)) = better_master {
                    self.slots[i].to_fence.clear();
                    if !self.params.claim.is_local() {
                        // Read soon whether the new master fenced us; if it does not (an old
                        // exoip peer never fences a live node), we detach ourselves.
                        let soon = now + self.params.interval;
                        self.slots[i].next_reconcile = self.slots[i].next_reconcile.min(soon);
                    }
                    let why = format!("{id} took over");
                    self.set_role_about(i, Role::Backup, &why, Some(id), out);
                } else if master_alive && (!self.params.claim.is_local() || self.params.records) {
                    // A worse peer announces master: it claimed while it could not hear us, and
                    // has probably fenced us. Read now (then every interval while it lasts)
                    // rather than at the next reconcile, and take the address back at once
                    // (local modes: record our claim again over its newer one).
                    let last_read = self.slots[i].holders.as_ref().map(|(_, t)| *t);
                    let due = last_read.map_or(now, |t| t + self.params.interval);
                    self.slots[i].next_reconcile = self.slots[i].next_reconcile.min(due);
                }
            }
            Role::Leaving => {
                let slot = &self.slots[i];
                let since = slot.leaving_since.unwrap_or(now);
                let we_hold = self.holds(i);
                let successor = master_peer.is_some();
                let anyone_alive = self
                    .peers
                    .values()
                    .any(|p| self.alive(now, p) && !p.leaving);
                let timed_out = now >= since + self.params.leave_timeout;
                let idle = slot.inflight.is_none();
                let may_call = idle && slot.retry_at.is_none_or(|r| now >= r);
                let holders_known = slot.holders.is_some();
                let local = self.params.claim.is_local();
                // Let go only once the API shows another holder, read after we started leaving:
                // a successor's word is not enough (an old exoip peer's role is only implied,
                // and one that announces before its attach went through would leave a gap).
                let last_read = slot.holders.as_ref().map(|(h, t)| (h, *t));
                let taken =
                    last_read.is_some_and(|(h, t)| t >= since && h.iter().any(|x| *x != me));
                let handed_over = successor && (local || taken);
                if successor && !handed_over && we_hold && !timed_out && may_call {
                    let stale = last_read.is_none_or(|(_, t)| t < since);
                    if stale || now >= slot.next_reconcile {
                        self.start_op(i, Op::ReadHolders, out);
                    }
                    return;
                }
                if handed_over || !anyone_alive || timed_out || !we_hold {
                    let to = self.after_leaving();
                    if may_call || local {
                        self.set_alias(i, false, out);
                        // Local mode: dropping the address is the release; the permission
                        // stays so this node can stand by again.
                        if !local && (we_hold || !holders_known) {
                            self.start_op(i, Op::Detach(me), out);
                        } else {
                            self.slots[i].leaving_since = None;
                            let why = self.leaving_done("released");
                            self.set_role(i, to, &why, out);
                        }
                    } else if timed_out && idle {
                        // Give up releasing after the timeout plus retries (exit, or stay out).
                        self.slots[i].leaving_since = None;
                        let why = self.leaving_done("release failed");
                        self.set_role(i, to, &why, out);
                    }
                }
                return;
            }
            _ => {}
        }
        // A better master made us yield above: a master peer now is a worse one.
        let rival =
            self.slots[i].role == Role::Master && self.params.claim.is_local() && master_alive;
        if std::mem::replace(&mut self.slots[i].rival, rival)
            && !rival
            && self.slots[i].role == Role::Master
        {
            out.push(Action::Reannounce(ip));
        }
        let want = self.desired_alias(i);
        self.set_alias(i, want, out);

        // Provider calls: one at a time per address, after any backoff.
        if self.params.claim == ClaimMode::LocalOnly && !self.params.records {
            return;
        }
        if self.slots[i].role == Role::Master && self.params.claim.is_local() && self.params.records
        {
            // Read every interval for a dead period after a peer falls silent: a claim it made
            // when it stopped hearing us is in the record by then (we stand by), fencing waits
            // for the first of these reads, and a peer that still hears us (an asymmetric
            // partition) records its claim again over ours within a few intervals.
            let read_at = self.slots[i].holders.as_ref().map(|(_, t)| *t);
            let (dead, interval) = (self.params.dead_period(), self.params.interval);
            let due = self
                .peers
                .values()
                .filter(|p| !self.alive(now, p) && !p.leaving)
                .filter_map(|p| {
                    (1..=self.params.dead_ratio + 1)
                        .map(|k| p.last_heard + dead + interval * k)
                        .find(|t| read_at.is_none_or(|r| r < *t))
                })
                .min();
            if let Some(t) = due {
                let slot = &mut self.slots[i];
                slot.next_reconcile = slot.next_reconcile.min(t);
            }
        }
        let slot = &self.slots[i];
        if slot.inflight.is_some() || slot.retry_at.is_some_and(|r| now < r) {
            return;
        }
        match slot.role {
            Role::Claiming => {
                let op = self.claim_op(i);
                self.start_op(i, op, out)
            }
            Role::Master if self.params.claim.is_local() => {
                if let Some(op) = self.local_master_op(now, i) {
                    self.start_op(i, op, out)
                }
            }
            Role::Master if !slot.to_fence.is_empty() => {
                // Never fence a live peer that outranks us: it is taking over, and we yield as
                // soon as its Master heartbeat arrives. Everyone else (dead peers, worse peers,
                // instances not running exoip) loses the address.
                let targets: Vec<String> = slot.to_fence.iter().cloned().collect();
                let my_rank = (self.effective(slot.priority), me.clone());
                let target = targets.into_iter().find(|id| {
                    !self.peers.get(id).is_some_and(|p| {
                        self.eligible_entry(now, p, ip)
                            .is_some_and(|e| (e.priority, id.clone()) < my_rank)
                    })
                });
                match target {
                    Some(t) => self.start_op(i, Op::Detach(t), out),
                    None => self.slots[i].to_fence.clear(),
                }
            }
            // A backup the API still shows attached, next to another holder while a live peer
            // is master, steps aside itself: the master normally fences it, but a master that
            // does not (an old exoip in a mixed cluster) would otherwise share the address with
            // a node that no longer has the alias.
            Role::Backup
                if self.params.claim == ClaimMode::Api
                    && (master_alive || superseded.is_some())
                    && slot
                        .holders
                        .as_ref()
                        .is_some_and(|(h, _)| h.contains(&me) && h.len() > 1) =>
            {
                self.start_op(i, Op::Detach(me), out)
            }
            _ if now >= slot.next_reconcile => self.start_op(i, Op::ReadHolders, out),
            _ => {}
        }
    }

    /// Whether this node holds the address now: per the API, or in [`ClaimMode::Local`] (where
    /// the API only knows who may hold it) whether we have it locally.
    fn holds(&self, i: usize) -> bool {
        let s = &self.slots[i];
        match self.params.claim {
            ClaimMode::Api => s
                .holders
                .as_ref()
                .is_some_and(|(h, _)| h.contains(&self.params.node)),
            ClaimMode::Local | ClaimMode::LocalOnly => s.alias_on,
        }
    }

    /// Whether the last read of the API's list shows this node (Local mode: allowed to hold).
    fn permitted(&self, i: usize) -> bool {
        self.slots[i]
            .holders
            .as_ref()
            .is_some_and(|(h, _)| h.contains(&self.params.node))
    }

    /// The local modes, as master: the next provider call, if any. First the claim record
    /// (after a conflict, a read first), or our own permission; then the permissions of the
    /// others; else the periodic read.
    fn local_master_op(&mut self, now: Time, i: usize) -> Option<Op> {
        let records = self.params.records;
        let slot = &self.slots[i];
        if records && slot.claim_retry == ClaimRetry::ReadFirst {
            return Some(Op::ReadHolders);
        }
        if self.superseded(now, i).is_some() {
            // A newer claim by a node we cannot hear, to be confirmed by the next read: neither
            // claim over it nor fence anyone meanwhile.
            return (now >= slot.next_reconcile).then_some(Op::ReadHolders);
        }
        let permissions = self.params.claim == ClaimMode::Local;
        let unpermitted = permissions && slot.holders.is_some() && !self.permitted(i);
        if records && (slot.record_due || unpermitted) {
            return Some(self.claim_op(i));
        }
        if unpermitted {
            return Some(Op::Attach {
                epoch: 0,
                seen: None,
            });
        }
        if permissions {
            if let Some(op) = self.permission_fix(now, i) {
                return Some(op);
            }
        }
        (now >= self.slots[i].next_reconcile).then_some(Op::ReadHolders)
    }

    /// [`ClaimMode::Local`], as master allowed to hold the address: the next change that makes
    /// the API's list of allowed holders right (every live peer in, every other node out), if
    /// any.
    fn permission_fix(&self, now: Time, i: usize) -> Option<Op> {
        let me = &self.params.node;
        let (allowed, read_at) = self.slots[i].holders.as_ref()?;
        let alive = |id: &String| self.peers.get(id).is_some_and(|p| self.alive(now, p));
        if let Some(peer) = self
            .peers
            .keys()
            .find(|id| alive(id) && !allowed.contains(id))
        {
            return Some(Op::Admit(peer.clone()));
        }
        // Fence who went silent; a peer whose last word was "leaving" released the address
        // itself and keeps its permission, so it can stand by again without an API call.
        let left = |id: &String| self.peers.get(id).is_some_and(|p| p.leaving);
        // With a claim record, fence a peer only from a read made an interval after it fell
        // silent: by then the record shows whether it claimed (a partition: we stand by
        // instead of fencing each other).
        let after = self.params.dead_period() + self.params.interval;
        let read_since = |id: &String| {
            !self.params.records
                || self
                    .peers
                    .get(id)
                    .is_none_or(|p| *read_at >= p.last_heard + after)
        };
        allowed
            .iter()
            .find(|id| *id != me && !alive(id) && !left(id) && read_since(id))
            .map(|id| Op::Detach(id.clone()))
    }

    /// Whether this node should have the alias for slot `i` now: as master, and while in the
    /// start-up hold-off when the API says we still hold the address (a restart keeps serving).
    fn desired_alias(&self, i: usize) -> bool {
        let s = &self.slots[i];
        match s.role {
            _ if self.isolated_now && !self.stopping => false,
            Role::Master => true,
            // Local modes: only the claim record can say that we held it before a restart (and,
            // with permissions, that we still may).
            Role::Init if self.params.claim.is_local() => {
                self.params.records
                    && s.record
                        .as_ref()
                        .is_some_and(|r| r.holder == self.params.node)
                    && (self.params.claim == ClaimMode::LocalOnly || self.permitted(i))
                    // A record not yet replaced by a successor whose claim is still retrying:
                    // a peer announcing master holds it now.
                    && self.best_master_peer(self.now_hint, s.ip).is_none()
            }
            Role::Init => s
                .holders
                .as_ref()
                .is_some_and(|(h, _)| h.contains(&self.params.node)),
            // Keep whatever we had until the attach or the release settles it.
            Role::Claiming | Role::Leaving => s.alias_on,
            // A backup the API still routes the address to keeps serving it until it is
            // fenced or steps aside (a hand-over overlaps instead of dropping traffic).
            Role::Backup if !self.params.claim.is_local() => s
                .holders
                .as_ref()
                .is_some_and(|(h, _)| h.contains(&self.params.node)),
            Role::Backup | Role::Fault | Role::Stopped => false,
        }
    }

    fn set_alias(&mut self, i: usize, on: bool, out: &mut Vec<Action>) {
        if self.slots[i].alias_on != on {
            self.slots[i].alias_on = on;
            let ip = self.slots[i].ip;
            out.push(if on {
                Action::AddAlias(ip)
            } else {
                Action::RemoveAlias(ip)
            });
        }
    }

    /// The heartbeat this node would send now (also the answer to a probe).
    pub fn advert(&self) -> Advert {
        Advert {
            node: self.params.node.clone(),
            leaving: self.stopping,
            entries: self
                .slots
                .iter()
                .map(|s| Entry {
                    ip: s.ip,
                    priority: self.effective(s.priority),
                    // A hand-over that is not a stop is announced as a fault.
                    state: match s.role {
                        Role::Leaving if !self.stopping => IpState::Fault,
                        role => role.wire(),
                    },
                    // The newest claim we know of: peers learn it, so a record they later read
                    // with that epoch is no news to them (see `supersedes`).
                    // A claim in progress is announced before the API call returns: if we die
                    // mid-claim, peers know its epoch, and a record of it is no news to them.
                    epoch: s.heard_epoch.max(s.claimed_epoch),
                })
                .collect(),
        }
    }
}

//! The decision core in simulated time: several cores, a network with latency and partitions,
//! and a cloud with API latency, failures and a holder timeline. Deterministic: no clocks, no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::time::Duration;

use exoip::election::{
    Action, Admin, ClaimMode, Core, Input, Op, OpResult, Params, Record, Role, Signal, Time,
    WatchedIp,
};

const EIP: &str = "203.0.113.10";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn eip() -> IpAddr {
    EIP.parse().unwrap()
}

fn params(node: &str, interval: Duration, ratio: u32) -> Params {
    Params {
        node: node.to_string(),
        interval,
        dead_ratio: ratio,
        reconcile_interval: Duration::from_secs(30),
        leave_timeout: interval * ratio * 2,
        backoff_base: ms(100),
        backoff_max: Duration::from_secs(5),
        jitter_seed: 42,
        claim: ClaimMode::Api,
        records: true,
        isolation_release_after: Some(interval * ratio * 3),
    }
}

#[derive(Debug)]
enum Event {
    /// Deliver a heartbeat to node `to`.
    Deliver {
        to: usize,
        input: Input,
    },
    /// A provider call of node `node` completes: apply it to the cloud, then report.
    ApiDone {
        node: usize,
        ip: IpAddr,
        id: u64,
        op: Op,
    },
    Wake(usize),
}

struct Node {
    core: Core,
    up: bool,
    alias: BTreeSet<IpAddr>,
    exited: bool,
    transitions: Vec<(Time, Role, Role, String)>,
    reasserts: usize,
    reannounces: usize,
}

struct Cluster {
    now: Time,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Time, u64, usize)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    net_latency: Duration,
    api_latency: Duration,
    /// Pairs (from, to) whose heartbeats are dropped.
    cut: BTreeSet<(usize, usize)>,
    /// Share of heartbeats lost at random (percent), and the generator deciding which.
    loss_percent: u64,
    rng: u64,
    /// Node indexes whose API calls fail.
    api_down: BTreeSet<usize>,
    /// Node indexes whose attach calls succeed but change nothing.
    attach_ignored: BTreeSet<usize>,
    /// Node indexes whose detach calls for other nodes succeed but change nothing (an old
    /// exoip master never fences a live node).
    fence_ignored: BTreeSet<usize>,
    holders: BTreeMap<IpAddr, BTreeSet<String>>,
    /// The claim record per address (compare-and-swap on the epoch, as OpenStack and Azure).
    records: BTreeMap<IpAddr, Record>,
    /// (time, holders) after every change.
    timeline: Vec<(Time, BTreeSet<String>)>,
    /// (time, nodes with the alias) after every change: who holds it in the local modes.
    alias_timeline: Vec<(Time, BTreeSet<String>)>,
    api_calls: usize,
    /// How the nodes added from now on claim, and whether the cloud keeps a claim record
    /// (local modes: OpenStack VIP with a VIP port, Azure lb-probe).
    claim: ClaimMode,
    keeps_records: bool,
}

impl Cluster {
    fn new(specs: &[(&str, u8)], interval: Duration, ratio: u32) -> Self {
        let mut c = Cluster {
            now: Time::ZERO,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            net_latency: ms(1),
            api_latency: ms(20),
            cut: BTreeSet::new(),
            loss_percent: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            api_down: BTreeSet::new(),
            attach_ignored: BTreeSet::new(),
            fence_ignored: BTreeSet::new(),
            holders: BTreeMap::new(),
            records: BTreeMap::new(),
            timeline: vec![(Time::ZERO, BTreeSet::new())],
            alias_timeline: vec![(Time::ZERO, BTreeSet::new())],
            api_calls: 0,
            claim: ClaimMode::Api,
            keeps_records: true,
        };
        for (name, prio) in specs {
            c.add_node(name, *prio, interval, ratio);
        }
        c
    }

    fn add_node(&mut self, name: &str, prio: u8, interval: Duration, ratio: u32) -> usize {
        let ips = [WatchedIp {
            ip: eip(),
            priority: prio,
        }];
        let p = Params {
            claim: self.claim,
            records: self.keeps_records,
            ..params(name, interval, ratio)
        };
        let core = Core::new(p, &ips, self.now);
        self.nodes.push(Node {
            core,
            up: true,
            alias: BTreeSet::new(),
            exited: false,
            transitions: Vec::new(),
            reasserts: 0,
            reannounces: 0,
        });
        let i = self.nodes.len() - 1;
        self.input(i, Input::Tick);
        i
    }

    /// Restarts node `i` with a fresh core (a new process), keeping its alias state (the kernel's).
    fn restart(&mut self, i: usize, prio: u8, interval: Duration, ratio: u32) {
        let name = self.nodes[i].core.params().node.clone();
        let ips = [WatchedIp {
            ip: eip(),
            priority: prio,
        }];
        let p = Params {
            claim: self.claim,
            records: self.keeps_records,
            ..params(&name, interval, ratio)
        };
        self.nodes[i].core = Core::new(p, &ips, self.now);
        self.nodes[i].up = true;
        self.nodes[i].exited = false;
        self.note_aliases();
        self.input(i, Input::Tick);
    }

    fn push(&mut self, at: Time, ev: Event) {
        self.seq += 1;
        let target = match &ev {
            Event::Deliver { to, .. } => *to,
            Event::ApiDone { node, .. } => *node,
            Event::Wake(n) => *n,
        };
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq, target)));
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].core.params().node.clone()
    }

    fn input(&mut self, i: usize, input: Input) {
        if !self.nodes[i].up {
            return;
        }
        let actions = self.nodes[i].core.handle(self.now, input);
        for a in actions {
            self.execute(i, a);
        }
        let next = self.nodes[i].core.next_deadline(self.now);
        self.push(next, Event::Wake(i));
    }

    fn execute(&mut self, i: usize, action: Action) {
        match action {
            Action::Send(advert) => {
                for to in 0..self.nodes.len() {
                    // xorshift64: deterministic loss.
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    let lost = self.rng % 100 < self.loss_percent;
                    if to != i && !self.cut.contains(&(i, to)) && !lost {
                        let at = self.now + self.net_latency;
                        self.push(
                            at,
                            Event::Deliver {
                                to,
                                input: Input::Heartbeat(advert.clone()),
                            },
                        );
                    }
                }
            }
            Action::Call { ip, id, op } => {
                self.api_calls += 1;
                let at = self.now + self.api_latency;
                self.push(
                    at,
                    Event::ApiDone {
                        node: i,
                        ip,
                        id,
                        op,
                    },
                );
            }
            Action::AddAlias(ip) => {
                if self.nodes[i].alias.insert(ip) {
                    self.note_aliases();
                }
            }
            Action::RemoveAlias(ip) => {
                if self.nodes[i].alias.remove(&ip) {
                    self.note_aliases();
                }
            }
            Action::Transition {
                from, to, reason, ..
            } => {
                let now = self.now;
                self.nodes[i].transitions.push((now, from, to, reason));
            }
            Action::CallFailed { .. } => {}
            Action::Reasserted(_) => self.nodes[i].reasserts += 1,
            Action::Reannounce(_) => self.nodes[i].reannounces += 1,
            Action::Exit => {
                self.nodes[i].exited = true;
                self.nodes[i].up = false;
            }
        }
    }

    fn api(&mut self, i: usize, ip: IpAddr, op: &Op) -> OpResult {
        if self.api_down.contains(&i) {
            return OpResult::Failed {
                kind: "retryable",
                message: "down".into(),
                retry_after: None,
            };
        }
        let me = self.name(i);
        if let Op::Attach { epoch, seen } = op {
            if *epoch != 0 {
                let current = self.records.get(&ip).map(|r| r.epoch);
                if current != *seen {
                    return OpResult::Failed {
                        kind: "conflict",
                        message: format!("record moved: {current:?}, claim saw {seen:?}"),
                        retry_after: None,
                    };
                }
                self.records.insert(
                    ip,
                    Record {
                        epoch: *epoch,
                        holder: me.clone(),
                    },
                );
            }
        }
        if self.claim == ClaimMode::LocalOnly {
            // Azure lb-probe: nothing to attach; the API only keeps the record, whose holder is
            // the one that may hold the address.
            return match op {
                Op::ReadHolders => OpResult::Holders {
                    holders: self
                        .records
                        .get(&ip)
                        .map(|r| r.holder.clone())
                        .into_iter()
                        .collect(),
                    record: self.records.get(&ip).cloned(),
                },
                _ => OpResult::Done,
            };
        }
        let set = self.holders.entry(ip).or_default();
        let changed = match op {
            Op::ReadHolders => {
                return OpResult::Holders {
                    holders: set.iter().cloned().collect(),
                    record: self.records.get(&ip).cloned(),
                }
            }
            Op::Attach { .. } if self.attach_ignored.contains(&i) => false,
            Op::Attach { .. } => set.insert(me),
            Op::Detach(who) if *who != me && self.fence_ignored.contains(&i) => false,
            Op::Admit(who) => set.insert(who.clone()),
            Op::Detach(who) => set.remove(who),
        };
        if changed {
            let snapshot = set.clone();
            self.timeline.push((self.now, snapshot));
        }
        OpResult::Done
    }

    fn run_until(&mut self, until: Time) {
        while let Some(Reverse((at, seq, _))) = self.queue.peek().cloned() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let ev = self.events.remove(&seq).unwrap();
            match ev {
                Event::Deliver { to, input } => self.input(to, input),
                Event::Wake(n) => self.input(n, Input::Tick),
                Event::ApiDone { node, ip, id, op } => {
                    // A dead VM's in-flight call still reaches the cloud, but nobody hears back.
                    let result = self.api(node, ip, &op);
                    self.input(node, Input::OpDone { ip, id, result });
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.note_aliases();
    }

    fn note_aliases(&mut self) {
        let now = self.now;
        let set: BTreeSet<String> = self.alias_nodes().into_iter().collect();
        if self.alias_timeline.last().is_none_or(|(_, s)| *s != set) {
            self.alias_timeline.push((now, set));
        }
    }

    fn holders_now(&self) -> BTreeSet<String> {
        self.holders.get(&eip()).cloned().unwrap_or_default()
    }

    fn alias_nodes(&self) -> Vec<String> {
        // A dead VM's alias does not matter: only running nodes count.
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].alias.contains(&eip()))
            .map(|i| self.name(i))
            .collect()
    }

    fn masters(&self) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .filter(|&i| self.nodes[i].core.status(self.now)[0].role == Role::Master)
            .map(|i| self.name(i))
            .collect()
    }

    /// Longest interval with no holder after `from`, and the first time it became non-empty.
    fn longest_gap_after(&self, from: Time) -> Duration {
        longest_run(&self.timeline, self.now, from, BTreeSet::is_empty)
    }

    fn first_time_held_by(&self, who: &str, after: Time) -> Option<Time> {
        self.timeline
            .iter()
            .find(|(t, h)| *t >= after && h.contains(who))
            .map(|(t, _)| *t)
    }

    fn first_time_not_held_by(&self, who: &str, after: Time) -> Option<Time> {
        self.timeline
            .iter()
            .find(|(t, h)| *t >= after && !h.contains(who))
            .map(|(t, _)| *t)
    }

    fn dump(&self) -> String {
        let mut s = format!("timeline: {:?}\n", self.timeline);
        for n in &self.nodes {
            s += &format!("{}: {:?}\n", n.core.params().node, n.transitions);
        }
        s
    }

    /// Asserts the settled state: exactly `who` holds per the API, is master, has the alias.
    fn assert_settled_on(&self, who: &str) {
        if self.holders_now().len() != 1
            || self.masters() != vec![who.to_string()]
            || self.alias_nodes() != vec![who.to_string()]
        {
            eprintln!("{}", self.dump());
        }
        let expect: BTreeSet<String> = [who.to_string()].into();
        assert_eq!(self.holders_now(), expect, "API holders");
        assert_eq!(self.masters(), vec![who.to_string()], "masters");
        assert_eq!(self.alias_nodes(), vec![who.to_string()], "alias");
    }
}

fn three(interval: Duration) -> Cluster {
    Cluster::new(&[("lb1", 10), ("lb2", 20), ("lb3", 30)], interval, 3)
}

#[test]
fn cold_start_elects_the_lowest_priority_after_hold_off() {
    let mut c = three(ms(1000));
    c.run_for(ms(2900));
    assert!(
        c.holders_now().is_empty(),
        "nobody claims during the hold-off"
    );
    assert!(c.masters().is_empty());
    c.run_for(ms(2000));
    c.assert_settled_on("lb1");
    // Stable: nothing changes over a long time, including reconciles.
    let changes = c.timeline.len();
    c.run_for(Duration::from_secs(120));
    c.assert_settled_on("lb1");
    assert_eq!(c.timeline.len(), changes, "no churn once settled");
}

#[test]
fn equal_priorities_give_exactly_one_holder() {
    let mut c = Cluster::new(&[("b", 10), ("a", 10), ("c", 10)], ms(1000), 3);
    c.run_for(Duration::from_secs(10));
    // Ties break by instance id: "a" wins.
    c.assert_settled_on("a");
    assert!(
        c.timeline.iter().all(|(_, h)| h.len() <= 1),
        "never two holders: {:?}",
        c.timeline
    );
}

#[test]
fn kill_of_the_holder_fails_over_within_the_dead_period() {
    for (interval, ratio) in [(ms(1000), 3), (ms(100), 3)] {
        let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20), ("lb3", 30)], interval, ratio);
        c.run_for(interval * ratio * 3);
        c.assert_settled_on("lb1");
        let killed_at = c.now;
        c.kill(0);
        c.run_for(interval * ratio * 3);
        let attached = c
            .first_time_held_by("lb2", killed_at)
            .expect("lb2 attached");
        let took = attached - killed_at;
        let dead = interval * ratio;
        assert!(
            took <= dead + c.api_latency + ms(5),
            "failover took {took:?} (dead period {dead:?})"
        );
        assert!(
            took >= dead - interval,
            "not before the peer is dead: {took:?}"
        );
        let detached = c
            .first_time_not_held_by("lb1", killed_at)
            .expect("lb1 fenced");
        assert!(
            detached - attached <= ms(100),
            "dead one detached {:?} after attach",
            detached - attached
        );
        // lb1's kernel still has the alias, but lb1 is down; among live nodes only lb2.
        let live_alias: Vec<String> = (1..3)
            .filter(|&i| c.nodes[i].alias.contains(&eip()))
            .map(|i| c.name(i))
            .collect();
        assert_eq!(live_alias, vec!["lb2".to_string()]);
        assert_eq!(c.holders_now(), ["lb2".to_string()].into());
        assert_eq!(c.masters(), vec!["lb2".to_string()]);
    }
}

#[test]
fn graceful_stop_hands_over_without_a_gap_and_exits() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(2000));
    assert!(c.nodes[0].exited, "lb1 exits after handing over");
    let attached = c.first_time_held_by("lb2", t0).unwrap();
    assert!(
        attached - t0 <= ms(100),
        "successor attached {:?} after SIGTERM",
        attached - t0
    );
    assert_eq!(
        c.longest_gap_after(t0),
        Duration::ZERO,
        "no interval without holder: {:?}",
        c.timeline
    );
    assert_eq!(c.holders_now(), ["lb2".to_string()].into());
    assert!(
        !c.nodes[0].alias.contains(&eip()),
        "the leaver removed its alias"
    );
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()]);
}

#[test]
fn restart_of_the_holder_has_no_gap_and_it_takes_back_over() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    let t0 = c.now;
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(1000));
    assert!(c.nodes[0].exited);
    c.restart(0, 10, ms(1000), 3);
    c.run_for(Duration::from_secs(15));
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO, "{:?}", c.timeline);
    c.assert_settled_on("lb1");
    assert!(c.timeline.iter().all(|(_, h)| h.len() <= 2));
}

#[test]
fn a_holder_restarted_within_the_dead_period_keeps_the_address() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    // kill -9 and an immediate start: the peers hear lb1 again, announcing its hold-off, before
    // they would declare it dead; they wait for it instead of taking over.
    c.kill(0);
    c.run_for(ms(300));
    c.restart(0, 10, ms(1000), 3);
    c.run_for(Duration::from_secs(15));
    c.assert_settled_on("lb1");
    assert!(changes_after(&c, t0).is_empty(), "{}", c.dump());
    assert_eq!(
        c.alias_timeline.iter().filter(|(t, _)| *t >= t0).count(),
        2,
        "the alias only counts as gone while the VM is down: {:?}",
        c.alias_timeline
    );
}

#[test]
fn single_node_stop_releases_at_once() {
    let mut c = Cluster::new(&[("solo", 10)], ms(1000), 3);
    c.run_for(ms(5000));
    c.assert_settled_on("solo");
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(200));
    assert!(c.nodes[0].exited);
    assert!(
        c.holders_now().is_empty(),
        "legacy behaviour: dissociate on stop"
    );
}

#[test]
fn a_better_node_joining_preempts_without_a_gap() {
    let mut c = Cluster::new(&[("lb2", 20), ("lb3", 30)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb2");
    let t0 = c.now;
    c.add_node("lb1", 10, ms(1000), 3);
    c.run_for(ms(2500));
    assert_eq!(
        c.holders_now(),
        ["lb2".to_string()].into(),
        "no preemption during the joiner's hold-off"
    );
    c.run_for(ms(10000));
    c.assert_settled_on("lb1");
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
}

#[test]
fn a_backup_steps_aside_when_the_new_master_does_not_fence_it() {
    let mut c = Cluster::new(&[("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb2");
    let t0 = c.now;
    let lb1 = c.add_node("lb1", 10, ms(1000), 3);
    c.fence_ignored.insert(lb1);
    // lb1 preempts after its hold-off; it never fences lb2, which detaches itself within a few
    // intervals of yielding, long before its 30 s reconcile.
    c.run_for(ms(9000));
    c.assert_settled_on("lb1");
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
}

#[test]
fn a_leaving_master_lets_go_only_once_the_api_shows_the_successor() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // lb2's attach "succeeds" but changes nothing: it announces Master all the same.
    c.attach_ignored.insert(1);
    let t0 = c.now;
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(5000));
    assert!(
        c.first_time_not_held_by("lb1", t0).is_none(),
        "lb1 let go although the API never showed a successor\n{}",
        c.dump()
    );
    // Past the leave timeout (2 dead periods) it releases anyway and exits.
    c.run_for(ms(3000));
    assert!(c.nodes[0].exited, "{}", c.dump());
    // With a working successor the hand-over has no gap.
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    let t0 = c.now;
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(3000));
    c.assert_settled_on("lb2");
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
}

#[test]
fn priority_signals_move_the_address() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 10)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // SIGUSR1 lowers lb2's priority value to 9: it wins.
    c.input(1, Input::Signal(Signal::Promote));
    c.run_for(ms(10000));
    c.assert_settled_on("lb2");
    // SIGUSR2 twice: back to 11, lb1 (10) wins again.
    c.input(1, Input::Signal(Signal::Demote));
    c.input(1, Input::Signal(Signal::Demote));
    c.run_for(ms(10000));
    c.assert_settled_on("lb1");
}

#[test]
fn failed_api_calls_are_retried_with_backoff_until_they_succeed() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.api_down.insert(0);
    c.run_for(ms(10000));
    assert!(c.holders_now().is_empty());
    let calls = c.api_calls;
    // Backoff: 7 s of failures must not mean hundreds of calls.
    assert!(calls < 40, "{calls} calls while failing");
    c.api_down.clear();
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
}

#[test]
fn reconcile_reattaches_when_the_address_was_taken_away() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // Someone detaches the address behind our back.
    c.holders.get_mut(&eip()).unwrap().clear();
    c.timeline.push((c.now, BTreeSet::new()));
    c.run_for(Duration::from_secs(31));
    c.assert_settled_on("lb1");
}

#[test]
fn reconcile_fences_a_stray_holder() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.holders
        .get_mut(&eip())
        .unwrap()
        .insert("intruder".to_string());
    c.run_for(Duration::from_secs(31));
    c.assert_settled_on("lb1");
}

#[test]
fn restarted_holder_keeps_its_alias_during_hold_off_when_alone() {
    let mut c = Cluster::new(&[("solo", 10)], ms(1000), 3);
    c.run_for(ms(5000));
    c.assert_settled_on("solo");
    // kill -9 and restart: the API still shows us attached; the alias must stay.
    c.kill(0);
    let t0 = c.now;
    c.restart(0, 10, ms(1000), 3);
    c.run_for(ms(10000));
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
    assert!(c.nodes[0].alias.contains(&eip()));
    c.assert_settled_on("solo");
}

#[test]
fn a_leaving_peer_is_not_eligible_and_a_dead_one_is_fenced() {
    let mut c = three(ms(100));
    c.run_for(ms(1000));
    c.assert_settled_on("lb1");
    c.kill(0);
    c.kill(1);
    c.run_for(ms(1500));
    c.assert_settled_on("lb3");
}

#[test]
fn heartbeat_partition_does_not_trigger_failover_before_the_dead_period() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    // One of lb1's heartbeats is lost (a gap of 2 intervals < the 3-interval dead period):
    // nothing may change.
    c.cut.insert((0, 1));
    c.cut.insert((0, 2));
    let before = c.timeline.len();
    c.run_for(ms(1000));
    c.cut.clear();
    c.run_for(ms(10000));
    assert_eq!(
        c.timeline.len(),
        before,
        "no ownership change: {}",
        c.dump()
    );
    c.assert_settled_on("lb1");
}

#[test]
fn next_deadline_is_always_in_the_future() {
    let ips = [WatchedIp {
        ip: eip(),
        priority: 10,
    }];
    let mut core = Core::new(params("x", ms(100), 3), &ips, Time::ZERO);
    let mut now = Time::ZERO;
    for _ in 0..1000 {
        let _ = core.handle(now, Input::Tick);
        let next = core.next_deadline(now);
        assert!(next > now);
        now = next;
    }
}

#[test]
fn an_api_that_never_shows_our_attach_is_not_hammered() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // From now on the cloud acknowledges lb1's attaches but never shows them (e.g. a holder
    // filter that cannot see it), and the address is taken away.
    c.attach_ignored.insert(0);
    c.holders.get_mut(&eip()).unwrap().clear();
    let calls = c.api_calls;
    c.run_for(Duration::from_secs(60));
    let per_minute = c.api_calls - calls;
    assert!(
        per_minute < 60,
        "{per_minute} API calls in a minute of disagreement"
    );
    assert!(per_minute >= 4, "it keeps trying: {per_minute}");
}

fn role_of(c: &Cluster, i: usize) -> Role {
    c.nodes[i].core.status(c.now)[0].role
}

#[test]
fn a_health_fault_hands_over_at_once_and_recovery_takes_it_back() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    let fault = Some("process:haproxy failed".to_string());
    c.input(0, Input::Health { fault, penalty: 0 });
    c.run_for(ms(500));
    // Handed over immediately (no dead-period wait), without a gap, and lb1 stays out.
    let attached = c.first_time_held_by("lb2", t0).expect("lb2 took over");
    assert!(attached - t0 <= ms(100), "{:?}", attached - t0);
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
    c.run_for(ms(5000));
    c.assert_settled_on("lb2");
    assert_eq!(role_of(&c, 0), Role::Fault);
    // Healthy again: back in the election, and the better priority takes it back, no gap.
    let t1 = c.now;
    c.input(
        0,
        Input::Health {
            fault: None,
            penalty: 0,
        },
    );
    c.run_for(ms(10000));
    c.assert_settled_on("lb1");
    assert_eq!(c.longest_gap_after(t1), Duration::ZERO);
}

#[test]
fn a_lone_faulty_node_releases_and_never_claims() {
    let mut c = Cluster::new(&[("solo", 10)], ms(1000), 3);
    c.run_for(ms(5000));
    c.assert_settled_on("solo");
    c.input(
        0,
        Input::Health {
            fault: Some("tcp:127.0.0.1:80 failed".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(30_000));
    assert!(c.holders_now().is_empty());
    assert!(c.alias_nodes().is_empty());
    assert_eq!(role_of(&c, 0), Role::Fault);
}

#[test]
fn a_node_faulty_from_the_start_never_claims() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.input(
        0,
        Input::Health {
            fault: Some("script failed".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(10_000));
    c.assert_settled_on("lb2");
    assert!(c.timeline.iter().all(|(_, h)| !h.contains("lb1")));
}

#[test]
fn a_weighted_check_moves_the_address_by_priority() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // A failing weighted check adds 15: lb1 now 25 > lb2 20.
    c.input(
        0,
        Input::Health {
            fault: None,
            penalty: 15,
        },
    );
    c.run_for(ms(10_000));
    c.assert_settled_on("lb2");
    assert_eq!(c.nodes[0].core.status(c.now)[0].effective_priority, 25);
    c.input(
        0,
        Input::Health {
            fault: None,
            penalty: 0,
        },
    );
    c.run_for(ms(10_000));
    c.assert_settled_on("lb1");
}

#[test]
fn operator_release_resume_and_promote() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    c.input(0, Input::Admin(Admin::Release));
    c.run_for(ms(10_000));
    c.assert_settled_on("lb2");
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO);
    assert_eq!(role_of(&c, 0), Role::Fault, "stays out until resume");
    // Promote lb3 (priority 30): it takes the address from lb2.
    c.input(2, Input::Admin(Admin::Promote));
    c.run_for(ms(10_000));
    c.assert_settled_on("lb3");
    assert_eq!(c.nodes[2].core.status(c.now)[0].effective_priority, 1);
    // Resume everyone: lb1 wins again.
    c.input(0, Input::Admin(Admin::Resume));
    c.input(2, Input::Admin(Admin::Resume));
    c.run_for(ms(15_000));
    c.assert_settled_on("lb1");
}

#[test]
fn reconcile_reasserts_and_reports_it() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    assert_eq!(
        c.nodes[0].reasserts, 0,
        "the read right after the claim is no re-assert"
    );
    c.run_for(Duration::from_secs(61));
    assert_eq!(c.nodes[0].reasserts, 2, "one per reconcile period");
    assert_eq!(c.nodes[1].reasserts, 0, "backups re-assert nothing");
}

#[test]
fn stopping_while_faulty_exits() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.input(
        0,
        Input::Health {
            fault: Some("x".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(3000));
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(ms(1000));
    assert!(c.nodes[0].exited);
    c.assert_settled_on("lb2");
}

#[test]
fn health_counts_only_after_the_hold_off() {
    // lb1 is master; lb2 restarts with a health check that has not run yet, then passes 10 ms
    // later. lb2 must sit out its hold-off like anyone else: no claim over a live master.
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    c.kill(1);
    c.run_for(ms(500));
    let t0 = c.now;
    c.restart(1, 20, ms(1000), 3);
    c.input(
        1,
        Input::Health {
            fault: Some("process:haproxy not checked yet".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(10));
    c.input(
        1,
        Input::Health {
            fault: None,
            penalty: 0,
        },
    );
    c.run_for(ms(10_000));
    c.assert_settled_on("lb1");
    assert!(c.first_time_held_by("lb2", t0).is_none(), "{}", c.dump());
    let roles: Vec<Role> = c.nodes[1]
        .transitions
        .iter()
        .filter(|t| t.0 >= t0)
        .map(|t| t.2)
        .collect();
    assert_eq!(
        roles,
        vec![Role::Backup],
        "straight from init to backup after the hold-off"
    );
}

#[test]
fn a_restarted_master_keeps_its_address_while_its_checks_first_run() {
    let mut c = Cluster::new(&[("solo", 10)], ms(1000), 3);
    c.run_for(ms(5000));
    c.assert_settled_on("solo");
    c.kill(0);
    let t0 = c.now;
    c.restart(0, 10, ms(1000), 3);
    c.input(
        0,
        Input::Health {
            fault: Some("not checked yet".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(500));
    c.input(
        0,
        Input::Health {
            fault: None,
            penalty: 0,
        },
    );
    c.run_for(ms(10_000));
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO, "{}", c.dump());
    c.assert_settled_on("solo");
}

#[test]
fn a_node_still_failing_after_the_hold_off_goes_to_fault() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.input(
        0,
        Input::Health {
            fault: Some("tcp:127.0.0.1:80 refused".into()),
            penalty: 0,
        },
    );
    c.run_for(ms(10_000));
    c.assert_settled_on("lb2");
    let roles: Vec<Role> = c.nodes[0].transitions.iter().map(|t| t.2).collect();
    assert_eq!(roles, vec![Role::Fault]);
}

// ---- ClaimMode::Local (OpenStack VIP mode): the API lists who may hold the address ----

/// Three nodes in local-claim mode, every one allowed to hold the address (the usual set-up).
fn three_local(interval: Duration) -> Cluster {
    local_cluster(
        ClaimMode::Local,
        &[("lb1", 10), ("lb2", 20), ("lb3", 30)],
        interval,
    )
}

/// Nodes in a local mode; in [`ClaimMode::Local`] every one allowed to hold the address.
fn local_cluster(mode: ClaimMode, specs: &[(&str, u8)], interval: Duration) -> Cluster {
    let mut c = Cluster::new(&[], interval, 3);
    c.claim = mode;
    for (name, prio) in specs {
        c.add_node(name, *prio, interval, 3);
    }
    if mode == ClaimMode::Local {
        let all = specs.iter().map(|(name, _)| name.to_string()).collect();
        c.holders.insert(eip(), all);
    }
    c
}

fn allowed(c: &Cluster) -> Vec<String> {
    c.holders_now().into_iter().collect()
}

#[test]
fn local_mode_failover_needs_no_api_call() {
    let mut c = three_local(ms(1000));
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.masters(), vec!["lb1".to_string()]);
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()]);
    // The API is unreachable for everyone from now on: failover must not care.
    for i in 0..3 {
        c.api_down.insert(i);
    }
    let killed_at = c.now;
    c.kill(0);
    c.run_for(ms(3100));
    let took = c.nodes[1]
        .transitions
        .iter()
        .find(|(t, _, to, _)| *t > killed_at && *to == Role::Master)
        .map(|(t, ..)| *t - killed_at)
        .unwrap_or_else(|| panic!("lb2 never became master\n{}", c.dump()));
    assert!(took <= ms(3000) + ms(5), "took {took:?}");
    assert_eq!(c.masters(), vec!["lb2".to_string()]);
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()]);
}

#[test]
fn local_mode_fences_a_dead_peer_and_restores_it_when_heard_again() {
    let mut c = three_local(ms(1000));
    c.run_for(Duration::from_secs(5));
    let calls_settled = c.api_calls;
    c.run_for(Duration::from_secs(60));
    assert!(
        c.api_calls - calls_settled <= 6,
        "only periodic reads once settled: {} calls",
        c.api_calls - calls_settled
    );
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"]);
    c.kill(0);
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.masters(), vec!["lb2".to_string()]);
    assert_eq!(allowed(&c), vec!["lb2", "lb3"], "{}", c.dump());
    // lb1 comes back (a new process): lb2 allows it again so it can stand by, then lb1
    // (better priority) preempts after its hold-off.
    c.restart(0, 10, ms(1000), 3);
    c.run_for(Duration::from_secs(3));
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"], "{}", c.dump());
    c.run_for(Duration::from_secs(10));
    assert_eq!(c.masters(), vec!["lb1".to_string()]);
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()]);
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"]);
}

#[test]
fn local_mode_master_allows_itself_and_live_peers() {
    let mut c = three_local(ms(1000));
    c.holders.insert(eip(), BTreeSet::new());
    c.run_for(Duration::from_secs(6));
    assert_eq!(c.masters(), vec!["lb1".to_string()]);
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"], "{}", c.dump());
}

#[test]
fn local_mode_graceful_stop_overlaps_and_keeps_the_permission() {
    let mut c = three_local(ms(1000));
    c.run_for(Duration::from_secs(5));
    let calls = c.api_calls;
    c.input(0, Input::Signal(Signal::Stop));
    // Watch every millisecond: some live node has the alias at every instant.
    for _ in 0..3000 {
        c.run_for(ms(1));
        let holders: Vec<usize> = (0..3)
            .filter(|&i| c.nodes[i].up && c.nodes[i].alias.contains(&eip()))
            .collect();
        assert!(!holders.is_empty(), "gap at {:?}\n{}", c.now, c.dump());
    }
    assert!(c.nodes[0].exited, "the stopping node exits");
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()]);
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"]);
    // No mutation on the hand-over path (reads may happen).
    assert!(c.api_calls - calls <= 2, "{} calls", c.api_calls - calls);
}

#[test]
fn local_mode_restarted_node_drops_a_stale_address() {
    let mut c = three_local(ms(1000));
    c.run_for(Duration::from_secs(5));
    // lb2 is restarted with the address still on its NIC (e.g. left by a crash).
    c.nodes[1].alias.insert(eip());
    c.restart(1, 20, ms(1000), 3);
    // It reads the API once an interval has brought the peers' heartbeats.
    c.run_for(ms(1100));
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()], "{}", c.dump());
}

#[test]
fn local_mode_does_not_fence_a_peer_that_left_gracefully() {
    let mut c = three_local(ms(1000));
    c.run_for(Duration::from_secs(5));
    c.input(0, Input::Signal(Signal::Stop));
    c.run_for(Duration::from_secs(20));
    assert!(c.nodes[0].exited);
    assert_eq!(c.masters(), vec!["lb2".to_string()]);
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"], "{}", c.dump());
}

#[test]
fn local_mode_preempts_only_once_allowed() {
    let mut c = three_local(ms(1000));
    // lb1 is not allowed yet (e.g. fenced while it was down) and starts late.
    c.holders.insert(
        eip(),
        ["lb2", "lb3"].iter().map(|s| s.to_string()).collect(),
    );
    c.kill(0);
    c.run_for(Duration::from_secs(6));
    assert_eq!(c.masters(), vec!["lb2".to_string()]);
    // The API is down when lb1 comes back: lb2 cannot allow it, so lb1 must not take over.
    for i in 0..3 {
        c.api_down.insert(i);
    }
    c.restart(0, 10, ms(1000), 3);
    c.run_for(Duration::from_secs(10));
    assert_eq!(c.masters(), vec!["lb2".to_string()], "{}", c.dump());
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()]);
    // The API is back: lb2 allows lb1, lb1 sees it and preempts.
    c.api_down.clear();
    c.run_for(Duration::from_secs(15));
    assert_eq!(allowed(&c), vec!["lb1", "lb2", "lb3"], "{}", c.dump());
    assert_eq!(c.masters(), vec!["lb1".to_string()], "{}", c.dump());
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()]);
}

#[test]
fn local_only_mode_without_a_record_never_calls_the_api() {
    let mut c = Cluster::new(&[], ms(1000), 3);
    c.claim = ClaimMode::LocalOnly;
    c.keeps_records = false;
    for (name, prio) in [("lb1", 10), ("lb2", 20), ("lb3", 30)] {
        c.add_node(name, prio, ms(1000), 3);
    }
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.masters(), vec!["lb1".to_string()]);
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()]);
    c.kill(0);
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.masters(), vec!["lb2".to_string()]);
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()]);
    c.input(1, Input::Signal(Signal::Stop));
    c.run_for(Duration::from_secs(5));
    assert!(c.nodes[1].exited);
    assert_eq!(c.alias_nodes(), vec!["lb3".to_string()]);
    assert_eq!(c.api_calls, 0, "{}", c.dump());
}

/// Holder-set changes after `from` (each attach or detach that changed the set).
fn changes_after(c: &Cluster, from: Time) -> Vec<(Time, BTreeSet<String>)> {
    c.timeline
        .iter()
        .filter(|(t, _)| *t > from)
        .cloned()
        .collect()
}

/// Longest interval with two holders or more after `from`.
fn longest_multi_after(c: &Cluster, from: Time) -> Duration {
    longest_multi_in(c, &c.timeline, from)
}

fn longest_multi_in(c: &Cluster, timeline: &[(Time, BTreeSet<String>)], from: Time) -> Duration {
    longest_run(timeline, c.now, from, |h| h.len() > 1)
}

/// Longest interval after `from` during which the holder sets of `timeline` (changes only, the
/// last one lasting until `now`) satisfy `pred`.
fn longest_run(
    timeline: &[(Time, BTreeSet<String>)],
    now: Time,
    from: Time,
    pred: impl Fn(&BTreeSet<String>) -> bool,
) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Time> = None;
    for (t, h) in timeline {
        if pred(h) {
            since.get_or_insert(*t);
        } else if let Some(s) = since.take() {
            if *t > from {
                longest = longest.max(*t - s.max(from));
            }
        }
    }
    if let Some(s) = since {
        longest = longest.max(now - s.max(from));
    }
    longest
}

fn cut_both(c: &mut Cluster, a: usize, b: usize) {
    c.cut.insert((a, b));
    c.cut.insert((b, a));
}

#[test]
fn symmetric_partition_with_the_api_reachable_changes_owner_once_and_nobody_fights() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    cut_both(&mut c, 0, 1);
    // Two reconcile periods: without the arbiter, lb1 would re-claim at each of its reads.
    c.run_for(Duration::from_secs(70));
    let changes = changes_after(&c, t0);
    let sets: Vec<Vec<String>> = changes
        .iter()
        .map(|(_, h)| h.iter().cloned().collect())
        .collect();
    assert_eq!(
        sets,
        vec![vec!["lb1", "lb2"], vec!["lb2"]],
        "lb2 claims once and fences lb1; lb1 stands by\n{}",
        c.dump()
    );
    assert!(longest_multi_after(&c, t0) <= ms(100), "{}", c.dump());
    assert_eq!(c.holders_now(), ["lb2".to_string()].into());
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()], "{}", c.dump());
    // Heal: lb1 (better) takes it back once, with an overlap, never a gap.
    let t1 = c.now;
    c.cut.clear();
    c.run_for(ms(15000));
    c.assert_settled_on("lb1");
    assert_eq!(c.longest_gap_after(t1), Duration::ZERO);
    assert_eq!(changes_after(&c, t1).len(), 2, "{}", c.dump());
}

#[test]
fn asymmetric_partition_settles_without_flapping() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    // lb2 no longer hears lb1; lb1 still hears lb2.
    c.cut.insert((0, 1));
    c.run_for(Duration::from_secs(100));
    let changes = changes_after(&c, t0);
    assert!(
        changes.len() <= 4,
        "at most two ownership changes in 100 s: {changes:?}\n{}",
        c.dump()
    );
    let last_change = changes.last().map(|(t, _)| *t).unwrap_or(t0);
    assert!(
        c.now - last_change > Duration::from_secs(60),
        "settled for the last minute\n{}",
        c.dump()
    );
    assert_eq!(c.holders_now().len(), 1, "{}", c.dump());
    assert_eq!(c.longest_gap_after(t0), Duration::ZERO, "{}", c.dump());
}

#[test]
fn an_isolated_master_drops_the_address_and_comes_back_without_a_gap() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    // lb1 loses everything: heartbeats both ways and its API access.
    cut_both(&mut c, 0, 1);
    c.api_down.insert(0);
    c.run_for(ms(5000));
    assert_eq!(c.holders_now(), ["lb2".to_string()].into(), "{}", c.dump());
    // Self-fencing after 3 dead periods of silence (9 s) plus one read attempt.
    c.run_for(ms(7000));
    assert_eq!(c.alias_nodes(), vec!["lb2".to_string()], "{}", c.dump());
    let dropped = c.nodes[0]
        .transitions
        .iter()
        .any(|(t, _, to, why)| *t > t0 && *to == Role::Backup && why.contains("isolated"));
    assert!(dropped, "{}", c.dump());
    let t1 = c.now;
    c.cut.clear();
    c.api_down.clear();
    c.run_for(ms(15000));
    c.assert_settled_on("lb1");
    assert_eq!(c.longest_gap_after(t1), Duration::ZERO);
}

#[test]
fn a_lone_node_without_api_keeps_serving() {
    // Never heard a peer: isolation cannot be told from being alone, so no self-fencing.
    let mut c = Cluster::new(&[("lb1", 10)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    c.api_down.insert(0);
    c.run_for(Duration::from_secs(60));
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()]);
}

#[test]
fn a_claim_on_a_stale_record_is_refused_and_retried_after_a_read() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // Someone else (an operator's script, a third agent) recorded a claim lb2 never saw.
    c.records.insert(
        eip(),
        Record {
            epoch: 41,
            holder: "lb1".into(),
        },
    );
    let t0 = c.now;
    c.kill(0);
    // lb2's claim is refused (the record moved), it reads: a claim it never heard of, by a
    // holder it cannot hear. It stands by...
    c.run_for(Duration::from_secs(60));
    assert_eq!(c.holders_now(), ["lb1".to_string()].into(), "{}", c.dump());
    // ...for the patience (10 reconcile periods), then claims over it.
    c.run_for(Duration::from_secs(250));
    c.assert_settled_on("lb2");
    assert_eq!(c.records[&eip()].epoch, 42, "{}", c.dump());
    let took = c.first_time_held_by("lb2", t0).unwrap() - t0;
    assert!(took < Duration::from_secs(310), "{took:?}");
}

#[test]
fn a_plain_failover_claims_at_once_on_the_epoch_it_heard() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let t0 = c.now;
    let calls = c.api_calls;
    c.kill(0);
    c.run_for(ms(5000));
    c.assert_settled_on("lb2");
    assert_eq!(c.records[&eip()].epoch, 2);
    // Claim, read, fence: no conflict round trip although lb2 last read before lb1's claim.
    let failed = c.nodes[1]
        .transitions
        .iter()
        .any(|(_, _, _, why)| why.contains("conflict"));
    assert!(!failed, "{}", c.dump());
    assert!(c.api_calls - calls <= 4, "{} calls", c.api_calls - calls);
    assert!(c.first_time_held_by("lb2", t0).unwrap() - t0 < ms(3200));
}

#[test]
fn a_holder_that_dies_mid_claim_is_taken_over_at_once() {
    // lb1 announces its claim (epoch 1) and dies before the API call returns: the record names
    // it, but lb2 heard the epoch, so the record is no news and lb2 claims after the dead period.
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_until(ms(3005));
    assert_eq!(role_of(&c, 0), Role::Claiming, "{}", c.dump());
    c.kill(0);
    c.run_for(ms(6000));
    c.assert_settled_on("lb2");
    assert_eq!(c.records[&eip()].epoch, 2, "{}", c.dump());
}

#[test]
fn thirty_percent_heartbeat_loss_moves_nothing() {
    let mut c = three(ms(1000));
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    let before = c.timeline.len();
    c.loss_percent = 30;
    // Five minutes of 30 % loss at the defaults: with one heartbeat per interval this fails over
    // about once a minute.
    c.run_for(Duration::from_secs(300));
    assert_eq!(c.timeline.len(), before, "{}", c.dump());
    c.assert_settled_on("lb1");
}

#[test]
fn a_master_fenced_by_a_worse_peer_takes_it_back_within_an_interval() {
    let mut c = Cluster::new(&[("lb1", 10), ("lb2", 20)], ms(1000), 3);
    c.run_for(ms(6000));
    c.assert_settled_on("lb1");
    // lb2 stops hearing lb1 for 4 s (lb1 still hears lb2): lb2 claims and fences lb1.
    c.cut.insert((0, 1));
    c.run_for(ms(4000));
    c.cut.clear();
    let t0 = c.now;
    // lb2 yields as soon as it hears lb1 again; lb1 must not wait for its 30 s reconcile.
    c.run_for(ms(3000));
    c.assert_settled_on("lb1");
    assert!(
        c.first_time_held_by("lb1", t0 - ms(4000)).is_some(),
        "{}",
        c.dump()
    );
    assert_eq!(
        c.longest_gap_after(t0 - ms(4000)),
        Duration::ZERO,
        "{}",
        c.dump()
    );
}

// ---- The local modes with a claim record (OpenStack VIP with a VIP port, Azure lb-probe) ----

/// Longest interval without anyone holding the alias after `from`.
fn longest_alias_gap_after(c: &Cluster, from: Time) -> Duration {
    longest_run(&c.alias_timeline, c.now, from, BTreeSet::is_empty)
}

/// Two nodes in `mode` (both allowed in [`ClaimMode::Local`]), settled on lb1.
fn local_pair(mode: ClaimMode) -> Cluster {
    let mut c = local_cluster(mode, &[("lb1", 10), ("lb2", 20)], ms(1000));
    c.run_for(ms(6000));
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()], "{}", c.dump());
    assert_eq!(
        c.records[&eip()].holder,
        "lb1",
        "the master recorded its claim"
    );
    c
}

/// A two-node cluster in `mode`, settled on lb1, then a symmetric heartbeat partition with the
/// API reachable for 70 s (two reconcile periods), then the heal. Returns the cluster and the
/// times the partition started and healed.
fn local_partition(mode: ClaimMode) -> (Cluster, Time, Time) {
    let mut c = local_pair(mode);
    let t0 = c.now;
    cut_both(&mut c, 0, 1);
    c.run_for(Duration::from_secs(70));
    let t1 = c.now;
    c.cut.clear();
    c.run_for(ms(15000));
    (c, t0, t1)
}

fn assert_partition_settled(c: &Cluster, t0: Time, t1: Time) {
    let during: Vec<_> = c
        .alias_timeline
        .iter()
        .filter(|(t, _)| *t > t0 && *t <= t1)
        .map(|(_, h)| h.iter().cloned().collect::<Vec<_>>())
        .collect();
    // lb2 takes the address once it stops hearing lb1, lb1 reads lb2's newer claim an interval
    // later and stands by: one ownership change, a short overlap, no fight, no gap.
    assert_eq!(
        during,
        vec![vec!["lb1", "lb2"], vec!["lb2"]],
        "one change during the partition\n{:?}\n{}",
        c.alias_timeline,
        c.dump()
    );
    // Two reads an interval apart confirm the newer claim before lb1 lets go.
    let overlap = longest_multi_in(c, &c.alias_timeline, t0);
    assert!(overlap <= ms(3000), "overlap {overlap:?}\n{}", c.dump());
    assert_eq!(
        longest_alias_gap_after(c, t0),
        Duration::ZERO,
        "{}",
        c.dump()
    );
    // After the heal lb1 (better) takes it back once, with an overlap, and records it.
    let after: Vec<_> = c
        .alias_timeline
        .iter()
        .filter(|(t, _)| *t > t1)
        .map(|(_, h)| h.iter().cloned().collect::<Vec<_>>())
        .collect();
    assert_eq!(
        after,
        vec![vec!["lb1", "lb2"], vec!["lb1"]],
        "one change back after the heal\n{}",
        c.dump()
    );
    assert_eq!(c.masters(), vec!["lb1".to_string()]);
    assert_eq!(c.records[&eip()].holder, "lb1", "{}", c.dump());
}

#[test]
fn local_mode_partition_stands_by_on_the_newer_record_instead_of_fencing_each_other() {
    let (c, t0, t1) = local_partition(ClaimMode::Local);
    assert_partition_settled(&c, t0, t1);
    // lb2 fenced lb1 during the partition (lb1 never fenced lb2: it read lb2's claim first),
    // and let it back once it heard it again.
    assert_eq!(allowed(&c), vec!["lb1", "lb2"], "{}", c.dump());
    let lb1_reasons: Vec<&str> = c.nodes[0]
        .transitions
        .iter()
        .map(|t| t.3.as_str())
        .collect();
    assert!(
        lb1_reasons
            .iter()
            .any(|r| r.contains("while we could not hear it")),
        "{lb1_reasons:?}"
    );
}

#[test]
fn local_only_mode_partition_stands_by_on_the_newer_record() {
    let (c, t0, t1) = local_partition(ClaimMode::LocalOnly);
    assert_partition_settled(&c, t0, t1);
}

#[test]
fn local_mode_kill_of_the_holder_records_the_successor_claim() {
    for mode in [ClaimMode::Local, ClaimMode::LocalOnly] {
        let mut c = local_cluster(mode, &[("lb1", 10), ("lb2", 20), ("lb3", 30)], ms(1000));
        c.run_for(ms(6000));
        let epoch = c.records[&eip()].epoch;
        let t0 = c.now;
        c.kill(0);
        c.run_for(ms(3500));
        // The survivors heard lb1's epoch: its record is no news, lb2 takes over after the
        // dead period and records the next epoch.
        assert_eq!(
            c.alias_nodes(),
            vec!["lb2".to_string()],
            "{mode:?}\n{}",
            c.dump()
        );
        c.run_for(ms(100));
        assert_eq!(
            c.records[&eip()],
            Record {
                epoch: epoch + 1,
                holder: "lb2".into()
            },
            "{mode:?}"
        );
        assert!(longest_alias_gap_after(&c, t0) <= ms(3100), "{mode:?}");
        c.run_for(Duration::from_secs(60));
        assert_eq!(c.alias_nodes(), vec!["lb2".to_string()], "{mode:?}");
        assert_eq!(c.records[&eip()].epoch, epoch + 1, "no churn: {mode:?}");
    }
}

#[test]
fn local_mode_master_announces_again_after_a_rival_master_yields() {
    let mut c = local_pair(ClaimMode::Local);
    assert_eq!(c.nodes[0].reannounces, 0);
    // lb2 stops hearing lb1 long enough to take the address (lb1 still hears lb2).
    c.cut.insert((0, 1));
    c.run_for(ms(3600));
    assert!(c.alias_nodes().contains(&"lb2".to_string()), "{}", c.dump());
    c.cut.clear();
    c.run_for(Duration::from_secs(40));
    assert_eq!(c.alias_nodes(), vec!["lb1".to_string()], "{}", c.dump());
    // The client may have followed lb2's gratuitous ARP: lb1 announces again once lb2 yields.
    assert_eq!(c.nodes[0].reannounces, 1, "{}", c.dump());
    // And the record names lb1 again (lb2's claim was newer).
    assert_eq!(c.records[&eip()].holder, "lb1", "{}", c.dump());
}

#[test]
fn local_mode_asymmetric_partition_settles_on_one_holder_without_a_gap() {
    for mode in [ClaimMode::Local, ClaimMode::LocalOnly] {
        let mut c = local_pair(mode);
        let t0 = c.now;
        // lb2 no longer hears lb1; lb1 still hears lb2.
        c.cut.insert((0, 1));
        c.run_for(Duration::from_secs(60));
        // lb2 takes it (it hears nobody), lb1 hears that, records its claim again, and lb2 reads
        // that newer claim by a node it cannot hear and stands by: the overlap lasts until
        // lb2's next read (lb2 hears nobody: it reads every half isolation period).
        assert_eq!(
            c.alias_nodes(),
            vec!["lb1".to_string()],
            "{mode:?}\n{}",
            c.dump()
        );
        assert_eq!(c.records[&eip()].holder, "lb1", "{mode:?}");
        let overlap = longest_multi_in(&c, &c.alias_timeline, t0);
        assert!(
            overlap <= ms(6000),
            "{mode:?}: overlap {overlap:?}\n{}",
            c.dump()
        );
        assert_eq!(longest_alias_gap_after(&c, t0), Duration::ZERO, "{mode:?}");
        let changes = c.alias_timeline.iter().filter(|(t, _)| *t > t0).count();
        assert_eq!(changes, 2, "{mode:?}: {:?}", c.alias_timeline);
    }
}

#[test]
fn local_mode_restarted_holder_keeps_serving_when_the_record_names_it() {
    for mode in [ClaimMode::Local, ClaimMode::LocalOnly] {
        let mut c = local_pair(mode);
        let t0 = c.now;
        // lb1's agent restarts at once (kill -9, start): the kernel keeps the address.
        c.restart(0, 10, ms(1000), 3);
        c.run_for(Duration::from_secs(10));
        assert_eq!(
            c.alias_nodes(),
            vec!["lb1".to_string()],
            "{mode:?}\n{}",
            c.dump()
        );
        assert_eq!(
            c.alias_timeline.iter().filter(|(t, _)| *t > t0).count(),
            0,
            "{mode:?}: never dropped, never shared: {:?}",
            c.alias_timeline
        );
    }
}

#[test]
fn local_mode_restarted_node_does_not_serve_on_a_record_its_successor_could_not_replace_yet() {
    for mode in [ClaimMode::Local, ClaimMode::LocalOnly] {
        let mut c = local_pair(mode);
        // lb1 crashes; lb2 takes over, but its API calls fail: the record still names lb1.
        c.kill(0);
        c.api_down.insert(1);
        c.run_for(ms(3500));
        assert_eq!(c.alias_nodes(), vec!["lb2".to_string()], "{mode:?}");
        assert_eq!(c.records[&eip()].holder, "lb1");
        // lb1 comes back without the address (a rebooted VM).
        c.nodes[0].alias.clear();
        c.restart(0, 10, ms(1000), 3);
        let t0 = c.now;
        c.run_for(ms(2900));
        let lb1_served = c
            .alias_timeline
            .iter()
            .any(|(t, h)| *t >= t0 && h.contains("lb1"));
        assert!(
            !lb1_served,
            "{mode:?}: lb1 heard lb2 as master before reading the stale record: {:?}",
            c.alias_timeline
        );
    }
}

#[test]
fn local_mode_partition_longer_than_the_patience_moves_the_address_once_more_and_settles() {
    for mode in [ClaimMode::Local, ClaimMode::LocalOnly] {
        let mut c = local_pair(mode);
        let t0 = c.now;
        cut_both(&mut c, 0, 1);
        // Ten reconcile periods (300 s) of patience, then lb1 claims again; lb2 reads that
        // newer claim and stands by in turn. Nothing flaps in between or after.
        c.run_for(Duration::from_secs(400));
        let changes = c.alias_timeline.iter().filter(|(t, _)| *t > t0).count();
        assert!(
            changes <= 4,
            "{mode:?}: {changes} alias changes: {:?}",
            c.alias_timeline
        );
        assert_eq!(c.alias_nodes().len(), 1, "{mode:?}: {:?}", c.alias_timeline);
    }
}

//! `exoip lab chaos`: the chaos suite. Each scenario runs in a fresh lab (three hosts, the
//! simulated cloud, a client fetching through the address), repeated; every run injects one
//! fault into the settled lab, lets it heal, waits for the lab to settle again, and computes its
//! figures from the holder timeline (see [`figures`]) against the pass criteria:
//!
//! * **no-holder ≤ budget**: the longest time nobody held the address is at most the failover
//!   budget, the dead period plus the API time ([`ChaosSettings::budget`]); time during which
//!   the API itself was down (every request failing: 5xx burst, 429 storm, outage) is not
//!   counted, but the retry after it is, in the budget.
//! * **multi-holder ≤ reconcile**: no two hosts hold it for longer than one reconcile period,
//!   counted from when the fault becomes observable (one dead period after it starts).
//! * **no flapping**: at most one ownership change away from the faulty holder and one back
//!   ([`ChaosScenario::max_changes`]); none at all under heartbeat loss, one at a simultaneous
//!   start.
//! * **settled**: after the fault ends, one holder, the alias on it and on no other running
//!   host (see [`Lab::single_holder`]), no API change for two dead periods, and the agents
//!   agreeing: the holder's says `master`, every other one `backup`.
//!
//! The figures also include the longest client outage (no successful answer through the
//! address), which is not a criterion: it shows what the timeline means for traffic.

mod faults;
pub mod figures;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::json;

pub use faults::{AliasWatch, NetFault, SimFaults};
use figures::{Cut, Step};

use super::testbed::{secs_arg, Lab, LabCloud, LabConfig, LB_PROBE_INTERVAL};
use super::{parse_duration, require_root, unix_now};

/// What the failover budget allows for API calls on top of the operation delay and the
/// provider's polling: a few round trips to the simulator on a busy machine.
pub const API_ALLOWANCE: Duration = Duration::from_secs(1);
/// The Azure provider looks at a long-running operation after min(Retry-After, 2 s); the
/// simulator answers `Retry-After: 10`, so each PUT takes 2 s as the agent sees it.
pub const AZURE_POLL: Duration = Duration::from_secs(2);
/// A simultaneous start: what a starting agent needs before its hold-off (metadata, who am I,
/// the peer group), on top of the budget.
pub const STARTUP_ALLOWANCE: Duration = Duration::from_secs(1);
/// The heartbeat loss of the `loss` scenario.
pub const LOSS_PERCENT: u8 = 30;

/// One fault, injected into a settled lab with the holder `H` and the others.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChaosScenario {
    /// kill -9 of H's agent and H's cable cut (a crashed VM); once another host holds, H is
    /// revived (cable back, no alias) and its agent started again.
    Kill,
    /// H's agent stopped (SIGSTOP) for 10 s, then continued (a stalled VM).
    Sigstop,
    /// H's cable cut for 5 s.
    #[value(name = "link-cut-5s")]
    LinkCut5s,
    /// H's cable cut for 75 s.
    #[value(name = "link-cut-75s")]
    LinkCut75s,
    /// Heartbeats dropped both ways between H and the others for 20 s; everyone reaches the
    /// API.
    Partition,
    /// For 20 s the others do not hear H; H hears them.
    Asymmetric,
    /// H cannot reach the API for 20 s (its TCP to the API dropped); heartbeats flow.
    ApiCut,
    /// Every API request answers 503 for 10 s from the moment H crashes (as in `kill`).
    #[value(name = "api-5xx")]
    Api5xx,
    /// Every API request answers 429 with Retry-After: 2 for 10 s from the moment H crashes.
    #[value(name = "api-429")]
    Api429,
    /// Every API answer takes 10 s longer for 25 s from the moment H crashes (the agents'
    /// --api-timeout is raised to three times that: a slow API, not a dead one).
    ApiLatency,
    /// The API closes every connection unanswered for 20 s from the moment H crashes.
    ApiOutage,
    /// H's agent killed (-9) and started again at once; the VM, its cable and its alias stay.
    Restart,
    /// Every agent killed, the address detached and unaliased everywhere, then every agent
    /// started at the same instant.
    Simultaneous,
    /// 30 % of the heartbeats arriving at any host dropped at random for 60 s.
    Loss,
}

impl ChaosScenario {
    pub const ALL: [ChaosScenario; 14] = [
        ChaosScenario::Kill,
        ChaosScenario::Sigstop,
        ChaosScenario::LinkCut5s,
        ChaosScenario::LinkCut75s,
        ChaosScenario::Partition,
        ChaosScenario::Asymmetric,
        ChaosScenario::ApiCut,
        ChaosScenario::Api5xx,
        ChaosScenario::Api429,
        ChaosScenario::ApiLatency,
        ChaosScenario::ApiOutage,
        ChaosScenario::Restart,
        ChaosScenario::Simultaneous,
        ChaosScenario::Loss,
    ];

    /// The name on the command line.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// How long the fault lasts at scale 1, if it lasts (the API faults: their window).
    fn base_duration(self) -> Option<f64> {
        match self {
            ChaosScenario::Sigstop => Some(10.0),
            ChaosScenario::LinkCut5s => Some(5.0),
            ChaosScenario::LinkCut75s => Some(75.0),
            ChaosScenario::Partition | ChaosScenario::Asymmetric | ChaosScenario::ApiCut => {
                Some(20.0)
            }
            ChaosScenario::Api5xx | ChaosScenario::Api429 => Some(10.0),
            ChaosScenario::ApiLatency => Some(25.0),
            ChaosScenario::ApiOutage => Some(20.0),
            ChaosScenario::Loss => Some(60.0),
            ChaosScenario::Kill | ChaosScenario::Restart | ChaosScenario::Simultaneous => None,
        }
    }

    /// Whether the API is down for the whole fault window (every request fails): that time
    /// does not count as no-holder time.
    pub fn api_down(self) -> bool {
        matches!(
            self,
            ChaosScenario::Api5xx | ChaosScenario::Api429 | ChaosScenario::ApiOutage
        )
    }

    /// The most ownership changes a run may have: none under heartbeat loss, the first claim
    /// at a simultaneous start, else one away from the faulty holder and one back.
    pub fn max_changes(self) -> usize {
        match self {
            ChaosScenario::Loss => 0,
            ChaosScenario::Simultaneous => 1,
            _ => 2,
        }
    }
}

/// Everything a chaos run depends on. [`ChaosSettings::new`] gives the agent's defaults.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    pub cloud: LabCloud,
    pub ipv6: bool,
    pub hosts: usize,
    pub interval: Duration,
    pub dead_ratio: u32,
    /// The agents' `--reconcile-interval` (`None`: their default).
    pub reconcile_interval: Option<Duration>,
    /// Latency of every attach/detach in the simulated cloud.
    pub op_delay: Duration,
    /// Factor applied to every fault's duration (and to the API latency and Retry-After), so a
    /// short heartbeat interval can go with proportionally short faults.
    pub scale: f64,
    pub runs: usize,
    pub exoip_bin: PathBuf,
    /// Further arguments for every agent (flags the scenarios do not set themselves).
    pub extra_agent_args: Vec<String>,
    /// Narrate the labs' construction; keep the logs' tails of every run.
    pub verbose: bool,
}

impl ChaosSettings {
    pub fn new(exoip_bin: impl Into<PathBuf>) -> ChaosSettings {
        ChaosSettings {
            cloud: LabCloud::Exoscale,
            ipv6: false,
            hosts: 3,
            interval: crate::config::DEFAULT_INTERVAL,
            dead_ratio: crate::config::DEFAULT_DEAD_RATIO,
            reconcile_interval: None,
            op_delay: Duration::ZERO,
            scale: 1.0,
            runs: 10,
            exoip_bin: exoip_bin.into(),
            extra_agent_args: Vec::new(),
            verbose: false,
        }
    }

    pub fn dead_period(&self) -> Duration {
        self.interval * self.dead_ratio
    }

    /// The reconcile period the agents run with.
    pub fn reconcile(&self) -> Duration {
        self.reconcile_interval
            .unwrap_or(crate::config::DEFAULT_RECONCILE)
    }

    /// The agent's longest backoff between failed API attempts (the driver's
    /// `min(10 s, reconcile interval)`): after the API comes back, a claim may wait that long.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_secs(10).min(self.reconcile())
    }

    fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.scale).max(0.0))
    }

    /// How long `scenario`'s fault lasts.
    pub fn duration(&self, scenario: ChaosScenario) -> Option<Duration> {
        scenario.base_duration().map(|s| self.scaled(s))
    }

    /// The API latency of `api-latency`: 10 s scaled.
    pub fn latency(&self) -> Duration {
        self.scaled(10.0)
    }

    /// The Retry-After of `api-429`: 2 s scaled, whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        (2.0 * self.scale).round().max(1.0) as u64
    }

    /// The time a claim spends in the API on this cloud: [`API_ALLOWANCE`], plus the operation
    /// delay and the provider's polling on the way to the new holder. Exoscale and OpenStack
    /// floating IPs: one attach (operation delay); OpenStack vip: nothing (the VIP is held at
    /// once, the API call is off the critical path); Azure public and secondary IPs: two PUTs
    /// (detach, attach), each looked at after [`AZURE_POLL`]; Azure lb-probe: one probe round
    /// of the load balancer.
    pub fn api_time(&self) -> Duration {
        API_ALLOWANCE
            + match self.cloud {
                LabCloud::Exoscale | LabCloud::OpenStackFloatingIp => self.op_delay,
                LabCloud::OpenStackVip => Duration::ZERO,
                LabCloud::AzurePublicIp | LabCloud::AzureSecondaryIp => {
                    (AZURE_POLL + self.op_delay) * 2
                }
                LabCloud::AzureLbProbe => LB_PROBE_INTERVAL,
            }
    }

    /// API calls one after the other on a claim's critical path, each slowed down by the
    /// latency of `api-latency`: Exoscale and OpenStack floating IPs: a fresh read, reading and
    /// writing the claim record, the attach; Azure public and secondary IPs: a read, the claim
    /// record's PUT, and the two PUTs of the move, with their operation polls; none where the
    /// address is held locally.
    fn calls_per_claim(&self) -> u32 {
        match self.cloud {
            LabCloud::Exoscale | LabCloud::OpenStackFloatingIp => 4,
            LabCloud::AzurePublicIp | LabCloud::AzureSecondaryIp => 7,
            LabCloud::OpenStackVip | LabCloud::AzureLbProbe => 0,
        }
    }

    /// The failover budget of `scenario`: the longest no-holder time its runs may show. The dead
    /// period plus [`ChaosSettings::api_time`], plus per scenario: after an API that was down
    /// (5xx burst, outage) the longest backoff and one more second of retries; after a 429
    /// storm the longest backoff and three Retry-Afters (a call retries three times, each after
    /// the Retry-After); under API latency the latency once per call of a claim; at a
    /// simultaneous start [`STARTUP_ALLOWANCE`].
    /// Where holding takes no API call (OpenStack vip, Azure lb-probe) the API faults add
    /// nothing.
    pub fn budget(&self, scenario: ChaosScenario) -> Duration {
        let api_matters = self.cloud.api_holds();
        let extra = match scenario {
            ChaosScenario::Api5xx
            | ChaosScenario::ApiOutage
            | ChaosScenario::Api429
            | ChaosScenario::ApiLatency
                if !api_matters =>
            {
                Duration::ZERO
            }
            ChaosScenario::Api5xx | ChaosScenario::ApiOutage => {
                self.backoff_max() + Duration::from_secs(1)
            }
            ChaosScenario::Api429 => {
                self.backoff_max() + Duration::from_secs(3 * self.retry_after_secs())
            }
            ChaosScenario::ApiLatency => self.latency() * self.calls_per_claim(),
            ChaosScenario::Simultaneous => STARTUP_ALLOWANCE,
            _ => Duration::ZERO,
        };
        self.dead_period() + self.api_time() + extra
    }

    /// Quiet time that counts as settled: two dead periods and a bit with no API change, so
    /// that a restarted agent's hold-off and preemption show up before a run ends.
    fn quiet(&self) -> Duration {
        self.dead_period() * 2 + Duration::from_millis(500)
    }

    /// Bound of every wait for something that should take about a budget.
    fn patience(&self) -> Duration {
        self.dead_period() * 4 + self.reconcile() * 2 + Duration::from_secs(15)
    }

    fn lab_config(&self, scenario: ChaosScenario) -> LabConfig {
        let mut cfg = LabConfig::new(&self.exoip_bin);
        cfg.cloud = self.cloud;
        cfg.ipv6 = self.ipv6;
        cfg.hosts = self.hosts;
        cfg.interval = self.interval;
        cfg.dead_ratio = self.dead_ratio;
        cfg.op_delay = self.op_delay;
        cfg.data_path = true;
        cfg.verbose = self.verbose;
        cfg.extra_agent_args = self.extra_agent_args.clone();
        if let Some(r) = self.reconcile_interval {
            cfg.extra_agent_args
                .extend(["--reconcile-interval".into(), secs_arg(r)]);
        }
        if scenario == ChaosScenario::ApiLatency {
            cfg.extra_agent_args
                .extend(["--api-timeout".into(), secs_arg(self.latency() * 3)]);
        }
        cfg
    }

    /// One line for reports: the cloud and the timing settings.
    pub fn describe(&self) -> String {
        format!(
            "{}{}, {} hosts, -t {} -r {} (dead after {}), reconcile interval {}{}, op delay {}, \
             fault durations x {}",
            self.cloud.describe(),
            if self.ipv6 { " over IPv6" } else { "" },
            self.hosts,
            secs_arg(self.interval),
            self.dead_ratio,
            secs(self.dead_period()),
            secs(self.reconcile()),
            if self.reconcile_interval.is_none() {
                " (the agent's default)"
            } else {
                ""
            },
            secs(self.op_delay),
            self.scale
        )
    }
}

/// `1.5 s`, `30 s`.
fn secs(d: Duration) -> String {
    format!("{} s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// One run's figures (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The longest interval without a holder, not counting time the API was down.
    pub no_holder: f64,
    /// The longest interval with two or more holders, from when the fault was observable.
    pub multi_holder: f64,
    /// Ownership changes (see [`figures::ownership_changes`]).
    pub changes: usize,
    /// The lab settled after the fault: one holder, the alias there and nowhere else.
    pub settled: bool,
    /// The longest time the client got no answer through the address.
    pub client_outage: Option<f64>,
}

/// One pass criterion's verdict for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub criterion: Criterion,
    pub pass: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    NoHolder,
    MultiHolder,
    NoFlapping,
    Settled,
}

impl Criterion {
    pub const ALL: [Criterion; 4] = [
        Criterion::NoHolder,
        Criterion::MultiHolder,
        Criterion::NoFlapping,
        Criterion::Settled,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Criterion::NoHolder => "no-holder ≤ budget",
            Criterion::MultiHolder => "multi-holder ≤ reconcile",
            Criterion::NoFlapping => "no flapping",
            Criterion::Settled => "settled",
        }
    }
}

/// One run: its figures, verdicts and, when a criterion failed (or with `verbose`), what
/// happened: the holder timeline and the logs' tails.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: usize,
    pub figures: Figures,
    pub verdicts: Vec<Verdict>,
    pub diagnostics: Option<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }

    /// The failed criteria with the figure that failed them.
    pub fn failures(&self, budget: Duration, reconcile: Duration, max_changes: usize) -> String {
        let f = &self.figures;
        self.verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| match v.criterion {
                Criterion::NoHolder => format!(
                    "no holder for {:.2} s > budget {:.2} s",
                    f.no_holder,
                    budget.as_secs_f64()
                ),
                Criterion::MultiHolder => format!(
                    "several holders for {:.2} s > reconcile interval {:.2} s",
                    f.multi_holder,
                    reconcile.as_secs_f64()
                ),
                Criterion::NoFlapping => {
                    format!("{} ownership changes > {max_changes}", f.changes)
                }
                Criterion::Settled => "never settled on one holder".to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A scenario's runs on one cloud.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub cloud: LabCloud,
    pub scenario: ChaosScenario,
    pub budget: Duration,
    pub reconcile: Duration,
    pub runs: Vec<RunReport>,
    /// Why the scenario stopped early (the lab did not build or settle, a step failed).
    pub error: Option<String>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.runs.is_empty() && self.runs.iter().all(RunReport::passed)
    }

    /// Every failure in a few lines, with the diagnostics of the failed runs.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let max = self.scenario.max_changes();
        for r in &self.runs {
            let f = &r.figures;
            out.push_str(&format!(
                "{} run {}: no-holder {:.2} s (budget {:.2}), multi-holder {:.2} s (reconcile {:.2}), \
                 {} changes (max {max}), {}, client outage {}: {}\n",
                self.scenario.name(),
                r.run,
                f.no_holder,
                self.budget.as_secs_f64(),
                f.multi_holder,
                self.reconcile.as_secs_f64(),
                f.changes,
                if f.settled { "settled" } else { "NOT settled" },
                f.client_outage
                    .map_or("-".to_string(), |o| format!("{o:.2} s")),
                if r.passed() {
                    "pass".to_string()
                } else {
                    format!("FAIL ({})", r.failures(self.budget, self.reconcile, max))
                }
            ));
            if let Some(d) = &r.diagnostics {
                out.push_str(d);
            }
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("{}: error: {e}\n", self.scenario.name()));
        }
        out
    }
}

/// Runs `scenario` `settings.runs` times in a fresh lab. Never fails: what went wrong is in the
/// report.
pub async fn run_scenario(settings: &ChaosSettings, scenario: ChaosScenario) -> ScenarioReport {
    let mut report = ScenarioReport {
        cloud: settings.cloud,
        scenario,
        budget: settings.budget(scenario),
        reconcile: settings.reconcile(),
        runs: Vec::new(),
        error: None,
    };
    let lab = match tokio::time::timeout(
        Duration::from_secs(60),
        Lab::start(settings.lab_config(scenario)),
    )
    .await
    {
        Ok(Ok(lab)) => lab,
        Ok(Err(e)) => {
            report.error = Some(format!("cannot build the lab: {e:#}"));
            return report;
        }
        Err(_) => {
            report.error = Some("building the lab took more than 60 s".into());
            return report;
        }
    };
    if let Err(e) = run_all(settings, scenario, &lab, &mut report).await {
        report.error = Some(format!(
            "{e:#}\n{}\n{}",
            lab.describe_state(),
            lab.log_tails(30)
        ));
    }
    report
}

async fn run_all(
    s: &ChaosSettings,
    scenario: ChaosScenario,
    lab: &Lab,
    report: &mut ScenarioReport,
) -> Result<()> {
    let watch = if s.cloud == LabCloud::OpenStackVip {
        Some(AliasWatch::start(lab, "eth0").await?)
    } else {
        None
    };
    let ctx = Ctx {
        s,
        scenario,
        lab,
        watch: watch.as_ref(),
    };
    let mut holder = ctx
        .settle(0.0)
        .await
        .context("the lab did not settle before the first run")?;
    for run in 1..=s.runs {
        let outcome = ctx
            .run_once(holder)
            .await
            .with_context(|| format!("run {run}"))?;
        let r = ctx.report(run, &outcome).await?;
        eprintln!(
            "chaos: {}{} run {run}/{}: no-holder {:.2} s, multi-holder {:.2} s, {} changes, {}{}: {}",
            s.cloud.tag(),
            scenario.name(),
            s.runs,
            r.figures.no_holder,
            r.figures.multi_holder,
            r.figures.changes,
            if r.figures.settled {
                "settled"
            } else {
                "NOT settled"
            },
            r.figures
                .client_outage
                .map_or(String::new(), |o| format!(", client outage {o:.2} s")),
            if r.passed() {
                "pass".to_string()
            } else {
                format!(
                    "FAIL ({})",
                    r.failures(report.budget, report.reconcile, scenario.max_changes())
                )
            }
        );
        report.runs.push(r);
        match outcome.settled {
            Some(h) => holder = h,
            // The next run would start from a lab in an unknown state.
            None => break,
        }
    }
    Ok(())
}

/// What a run did, for its figures.
struct Outcome {
    /// When the fault started.
    t0: f64,
    /// When it ended (everything back as before, the restarted agent included).
    heal: f64,
    /// When the lab had settled again, or gave up waiting: the end of the run's window.
    end: f64,
    /// The window during which the API was down.
    api_down: Option<(f64, f64)>,
    cuts: Vec<Cut>,
    /// The holder once settled.
    settled: Option<usize>,
    /// Why it did not settle.
    unsettled: Option<String>,
}

struct Ctx<'a> {
    s: &'a ChaosSettings,
    scenario: ChaosScenario,
    lab: &'a Lab,
    watch: Option<&'a AliasWatch>,
}

impl Ctx<'_> {
    async fn sleep_until(&self, t: f64) {
        let left = t - unix_now();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
    }

    /// Waits until the lab is settled, with the quiet time counted from `since` at the
    /// earliest: one holder with the alias and nobody else with it, no API change for
    /// [`ChaosSettings::quiet`], and the agents agreeing (the holder's says `master`, every
    /// other running one `backup`: none is still in the middle of a claim or a hold-off).
    /// Returns the holder.
    async fn settle(&self, since: f64) -> Result<usize> {
        let (s, lab) = (self.s, self.lab);
        let found = std::sync::Mutex::new(None);
        let what = format!(
            "one holder with the alias, no change for {:?} and the agents agreeing",
            s.quiet()
        );
        lab.wait_until(&what, s.patience(), || async {
            let Some(holder) = lab.single_holder().await? else {
                return Ok(false);
            };
            // The API's changes and, for the VIP, who has it on the NIC.
            let api = lab.timeline()?.last().map_or(0.0, |e| e.t);
            let held = self.holder_changes()?.last().map_or(0.0, |c| c.t);
            if unix_now() - api.max(held).max(since) < s.quiet().as_secs_f64() {
                return Ok(false);
            }
            for i in 0..lab.hosts().len() {
                if !lab.agent_running(i) {
                    continue;
                }
                let want = if i == holder { "master" } else { "backup" };
                if lab.agent_state(i).await? != want {
                    return Ok(false);
                }
            }
            *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(holder);
            Ok(true)
        })
        .await
        .map_err(|e| e.context(lab.describe_state()))?;
        let holder = *found.lock().unwrap_or_else(|e| e.into_inner());
        holder.ok_or_else(|| anyhow!("settled without a holder"))
    }

    /// Waits (bounded) until a host other than `old` holds the address alone; times out
    /// quietly: the figures tell what happened.
    async fn wait_moved(&self, old: usize) {
        let lab = self.lab;
        let _ = lab
            .wait_until(
                "another host to hold the address",
                self.s.budget(self.scenario) + self.s.patience(),
                || async { Ok(matches!(lab.single_holder().await?, Some(h) if h != old)) },
            )
            .await;
    }

    async fn run_once(&self, holder: usize) -> Result<Outcome> {
        let (s, lab) = (self.s, self.lab);
        let n = lab.hosts().len();
        let others: Vec<usize> = (0..n).filter(|&i| i != holder).collect();
        let duration = s.duration(self.scenario).unwrap_or_default();
        // Strike at a random point of the heartbeat cycle, as the failover benchmark does.
        tokio::time::sleep(s.interval.mul_f64(rand::random::<f64>())).await;
        let mut cuts = Vec::new();
        let mut api_down = None;
        let t0;
        match self.scenario {
            ChaosScenario::Kill => {
                t0 = lab.crash(holder).await?;
                self.wait_moved(holder).await;
                cuts.push(bring_back(lab, holder, t0).await?);
            }
            ChaosScenario::Sigstop => {
                t0 = lab.kill(holder, Signal::SIGSTOP)?;
                tokio::time::sleep(duration).await;
                lab.kill(holder, Signal::SIGCONT)?;
            }
            ChaosScenario::LinkCut5s | ChaosScenario::LinkCut75s => {
                t0 = unix_now();
                lab.set_link(holder, false).await?;
                tokio::time::sleep(duration).await;
                lab.set_link(holder, true).await?;
                cuts.push(Cut {
                    host: holder,
                    from: t0,
                    to: unix_now(),
                });
            }
            ChaosScenario::Partition | ChaosScenario::Asymmetric | ChaosScenario::ApiCut => {
                let fault = match self.scenario {
                    ChaosScenario::Partition => {
                        NetFault::partition(lab, &[holder], &others).await?
                    }
                    ChaosScenario::Asymmetric => NetFault::one_way(lab, holder, &others).await?,
                    _ => NetFault::api_cut(lab, holder).await?,
                };
                t0 = unix_now();
                tokio::time::sleep(duration).await;
                fault.clear().await?;
            }
            ChaosScenario::Loss => {
                let all: Vec<usize> = (0..n).collect();
                let fault = NetFault::heartbeat_loss(lab, &all, LOSS_PERCENT).await?;
                t0 = unix_now();
                tokio::time::sleep(duration).await;
                fault.clear().await?;
            }
            ChaosScenario::Api5xx
            | ChaosScenario::Api429
            | ChaosScenario::ApiLatency
            | ChaosScenario::ApiOutage => {
                let change = match self.scenario {
                    ChaosScenario::Api5xx => json!({"unavailable": {"probability": 1.0}}),
                    ChaosScenario::Api429 => json!({
                        "rate_limit": {"probability": 1.0},
                        "retry_after_secs": s.retry_after_secs(),
                    }),
                    ChaosScenario::ApiLatency => {
                        json!({"latency": format!("{}ms", s.latency().as_millis())})
                    }
                    _ => json!({"api_down": true}),
                };
                let faults = SimFaults::set(lab, change).await?;
                let t_set = unix_now();
                t0 = lab.crash(holder).await?;
                self.sleep_until(t_set + duration.as_secs_f64()).await;
                faults.restore().await?;
                // Where holding takes no API call (OpenStack vip, Azure lb-probe), an API that
                // is down excuses nothing.
                if self.scenario.api_down() && s.cloud.api_holds() {
                    api_down = Some((t_set, unix_now()));
                }
                self.wait_moved(holder).await;
                cuts.push(bring_back(lab, holder, t0).await?);
            }
            ChaosScenario::Restart => {
                t0 = lab.kill(holder, Signal::SIGKILL)?;
                lab.wait_agent_exit(holder, Duration::from_secs(5)).await?;
                lab.start_agent(holder).await?;
            }
            ChaosScenario::Simultaneous => {
                self.stop_everything().await?;
                t0 = unix_now();
                for i in 0..n {
                    lab.start_agent(i).await?;
                }
            }
        }
        let heal = unix_now();
        let (settled, unsettled) = match self.settle(heal).await {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(Outcome {
            t0,
            heal,
            end: unix_now(),
            api_down,
            cuts,
            settled,
            unsettled,
        })
    }

    /// A cold start: no agent running, the address attached to nobody and on nobody's NIC
    /// (Azure lb-probe: the frontend IP stays on every `lo`, where the system puts it; OpenStack
    /// vip: the allowed address pairs stay, as the operator set them up).
    async fn stop_everything(&self) -> Result<()> {
        let lab = self.lab;
        for i in 0..lab.hosts().len() {
            if lab.agent_running(i) {
                lab.kill(i, Signal::SIGKILL)?;
                lab.wait_agent_exit(i, Duration::from_secs(5)).await?;
            }
        }
        let cloud = lab.config().cloud;
        if cloud.api_holds() {
            lab.sim_put(
                &format!("/_sim/elastic-ip/{}/holders", lab.address()),
                &json!({"holders": []}),
            )
            .await
            .context("detaching the address from everyone")?;
        }
        if cloud != LabCloud::AzureLbProbe {
            for i in 0..lab.hosts().len() {
                if lab.has_alias(i).await? {
                    lab.del_alias(i).await?;
                }
            }
        }
        // The load balancer notices, and nothing of the old agents is alive anywhere.
        tokio::time::sleep(self.s.dead_period()).await;
        Ok(())
    }

    /// Every holder change since the lab started, as host indices.
    fn holder_changes(&self) -> Result<Vec<Step>> {
        if let Some(w) = self.watch {
            return Ok(w.changes());
        }
        Ok(self
            .lab
            .timeline()?
            .into_iter()
            .map(|e| Step {
                t: e.t,
                holders: e
                    .holders
                    .iter()
                    .filter_map(|id| self.lab.host_by_instance(id).ok())
                    .collect(),
            })
            .collect())
    }

    async fn report(&self, run: usize, o: &Outcome) -> Result<RunReport> {
        let s = self.s;
        let steps = figures::effective_steps(&self.holder_changes()?, &o.cuts, o.t0, o.end);
        let no_holder = figures::no_holder_spans(&steps, o.end)
            .into_iter()
            .map(|span| figures::outside(span, o.api_down))
            .fold(0.0, f64::max);
        let observable = o.t0 + s.dead_period().as_secs_f64();
        let multi_holder = figures::multi_holder_spans(&steps, o.end)
            .into_iter()
            .map(|span| figures::after(span, observable))
            .fold(0.0, f64::max);
        let changes = figures::ownership_changes(&steps);
        let answers: Vec<f64> = self
            .lab
            .requests()
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.t + r.ms / 1000.0)
            .collect();
        let client_outage = self
            .lab
            .config()
            .data_path
            .then(|| figures::longest_outage(&answers, o.t0, o.end));
        let figures = Figures {
            no_holder,
            multi_holder,
            changes,
            settled: o.settled.is_some(),
            client_outage,
        };
        let verdicts = Criterion::ALL
            .iter()
            .map(|&criterion| Verdict {
                criterion,
                pass: match criterion {
                    Criterion::NoHolder => no_holder <= s.budget(self.scenario).as_secs_f64(),
                    Criterion::MultiHolder => multi_holder <= s.reconcile().as_secs_f64(),
                    Criterion::NoFlapping => changes <= self.scenario.max_changes(),
                    Criterion::Settled => figures.settled,
                },
            })
            .collect::<Vec<_>>();
        let failed = verdicts.iter().any(|v| !v.pass);
        let diagnostics = if failed || s.verbose {
            Some(self.diagnostics(&steps, o).await)
        } else {
            None
        };
        Ok(RunReport {
            run,
            figures,
            verdicts,
            diagnostics,
        })
    }

    /// The run's holder timeline (relative to the fault) and the logs' tails.
    async fn diagnostics(&self, steps: &[Step], o: &Outcome) -> String {
        let lab = self.lab;
        let names = |hosts: &[usize]| -> String {
            hosts
                .iter()
                .map(|&h| lab.hosts()[h].name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "  timeline (s from the fault; healed at {:+.3}, window ends {:+.3}{}{}):\n",
            o.heal - o.t0,
            o.end - o.t0,
            o.api_down
                .map(|(a, b)| format!(", API down {:+.3}..{:+.3}", a - o.t0, b - o.t0))
                .unwrap_or_default(),
            o.cuts
                .iter()
                .map(|c| format!(
                    ", {} cut {:+.3}..{:+.3}",
                    lab.hosts()[c.host].name,
                    c.from - o.t0,
                    c.to - o.t0
                ))
                .collect::<String>()
        );
        for st in steps {
            out.push_str(&format!(
                "    {:+8.3}  [{}]\n",
                st.t - o.t0,
                names(&st.holders)
            ));
        }
        if let Some(why) = &o.unsettled {
            out.push_str(&format!("  not settled: {why}\n"));
        }
        out.push_str(&format!("  {}\n", lab.describe_state()));
        let mut states = Vec::new();
        for (i, h) in lab.hosts().iter().enumerate() {
            if lab.agent_running(i) {
                let state = match lab.agent_state(i).await {
                    Ok(state) => state,
                    Err(e) => format!("({e:#})"),
                };
                states.push(format!("{} {state}", h.name));
            }
        }
        out.push_str(&format!("  the agents say: {}\n", states.join(", ")));
        out.push_str(&lab.log_tails(40));
        out
    }
}

/// `--scenario`: a scenario's name or `all`.
/// Brings a crashed host back as if rebooted (no stale address, cable in, agent started) and
/// returns the time its cable was out.
async fn bring_back(lab: &Lab, host: usize, cut_at: f64) -> Result<Cut> {
    lab.revive(host).await?;
    let cut = Cut {
        host,
        from: cut_at,
        to: unix_now(),
    };
    lab.start_agent(host).await?;
    Ok(cut)
}

fn parse_scenarios(text: &str) -> Result<Vec<ChaosScenario>, String> {
    if text == "all" {
        return Ok(ChaosScenario::ALL.to_vec());
    }
    <ChaosScenario as clap::ValueEnum>::from_str(text, false)
        .map(|s| vec![s])
        .map_err(|_| {
            let names: Vec<String> = ChaosScenario::ALL.iter().map(|s| s.name()).collect();
            format!("no scenario {text:?}; one of all, {}", names.join(", "))
        })
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub cloud: super::CloudArgs,
    /// Scenarios to run, comma separated, or `all`: kill, sigstop, link-cut-5s, link-cut-75s,
    /// partition, asymmetric, api-cut, api-5xx, api-429, api-latency, api-outage, restart,
    /// simultaneous, loss.
    #[arg(long, default_value = "all", value_delimiter = ',', value_parser = parse_scenarios)]
    pub scenario: Vec<Vec<ChaosScenario>>,
    /// Runs per scenario.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// The agents' heartbeat interval.
    #[arg(short = 't', long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    /// A peer is dead after this many intervals without a heartbeat.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub dead_ratio: u32,
    /// The agents' --reconcile-interval (default: theirs); also the multi-holder criterion.
    #[arg(long, value_parser = parse_duration)]
    pub reconcile_interval: Option<Duration>,
    /// Factor for every fault's duration (SIGSTOP 10 s, link cuts 5 s and 75 s, partitions
    /// 20 s, loss 60 s, the API faults' windows and latency): 0.2 goes with -t 0.2.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Latency of every attach/detach in the simulated cloud.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub op_delay: Duration,
    /// Number of hosts (priorities 10, 20, 30...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    pub hosts: u8,
    /// Print a Markdown table (scenario x figures, median and max over the runs, pass/fail per
    /// criterion) and the settings.
    #[arg(long, conflicts_with = "tsv")]
    pub markdown: bool,
    /// One tab-separated line per scenario, after a header line.
    #[arg(long)]
    pub tsv: bool,
    /// Narrate the labs' construction and print every run's timeline and logs' tails.
    #[arg(short, long)]
    pub verbose: bool,
    /// Extra arguments for every agent (repeatable).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// exoip binary to run in the namespaces (default: this one).
    #[arg(long, value_name = "PATH")]
    pub exoip: Option<PathBuf>,
}

pub async fn run(args: ChaosArgs) -> Result<()> {
    require_root("the chaos suite")?;
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        bail!("--scale must be a positive number, not {}", args.scale);
    }
    let mut settings = ChaosSettings::new(super::exoip_binary(args.exoip.clone())?);
    settings.cloud = args.cloud.lab_cloud()?;
    settings.ipv6 = args.cloud.ipv6;
    settings.hosts = args.hosts.into();
    settings.interval = args.interval;
    settings.dead_ratio = args.dead_ratio;
    settings.reconcile_interval = args.reconcile_interval;
    settings.op_delay = args.op_delay;
    settings.scale = args.scale;
    settings.runs = args.runs as usize;
    settings.extra_agent_args = args.agent_args.clone();
    settings.verbose = args.verbose;
    let mut scenarios: Vec<ChaosScenario> = Vec::new();
    for s in args.scenario.iter().flatten() {
        if !scenarios.contains(s) {
            scenarios.push(*s);
        }
    }
    let work = async {
        let mut reports = Vec::new();
        for &scenario in &scenarios {
            eprintln!(
                "chaos: {} on the {}, {} run(s)",
                scenario.name(),
                settings.cloud.describe(),
                settings.runs
            );
            let report = run_scenario(&settings, scenario).await;
            if !report.passed() || settings.verbose {
                eprint!("{}", report.explain());
            }
            reports.push(report);
        }
        reports
    };
    let reports = tokio::select! {
        r = work => r,
        sig = super::demo::interrupted() => {
            return Err(anyhow!("interrupted by {sig}; the lab has been removed"))
        }
    };
    if args.tsv {
        print!("{}", tsv(&reports));
    } else if args.markdown {
        print!("{}", markdown(&settings, &reports));
    } else {
        print!("{}", text_table(&reports));
        println!("{}", settings.describe());
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.scenario.name())
        .collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// "1.23 / 4.56": median and max, or "-".
fn med_max(samples: &[f64], decimals: usize) -> String {
    match figures::median_max(samples) {
        Some((med, max)) => format!("{med:.decimals$} / {max:.decimals$}"),
        None => "-".into(),
    }
}

/// The columns of the tables.
const COLUMNS: [&str; 7] = [
    "scenario",
    "runs",
    "budget s",
    "no-holder s",
    "multi-holder s",
    "changes",
    "client outage s",
];

/// One row per scenario: the figures (median / max over the runs) and each criterion's
/// passes out of the runs.
fn rows(reports: &[ScenarioReport], markdown: bool) -> Vec<Vec<String>> {
    reports
        .iter()
        .map(|r| {
            let pick = |f: &dyn Fn(&Figures) -> Option<f64>| -> Vec<f64> {
                r.runs.iter().filter_map(|run| f(&run.figures)).collect()
            };
            let mut row = vec![
                format!("{}{}", r.cloud.tag(), r.scenario.name()),
                r.runs.len().to_string(),
                format!("{:.1}", r.budget.as_secs_f64()),
                med_max(&pick(&|f| Some(f.no_holder)), 2),
                med_max(&pick(&|f| Some(f.multi_holder)), 2),
                med_max(&pick(&|f| Some(f.changes as f64)), 0),
                med_max(&pick(&|f| f.client_outage), 2),
            ];
            for c in Criterion::ALL {
                let passes = r
                    .runs
                    .iter()
                    .filter(|run| run.verdicts.iter().any(|v| v.criterion == c && v.pass))
                    .count();
                let all = passes == r.runs.len() && r.error.is_none() && !r.runs.is_empty();
                row.push(match (all, markdown) {
                    (true, _) => format!("pass {passes}/{}", r.runs.len()),
                    (false, true) => format!("**FAIL** {passes}/{}", r.runs.len()),
                    (false, false) => format!("FAIL {passes}/{}", r.runs.len()),
                });
            }
            row
        })
        .collect()
}

fn headers() -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(Criterion::ALL.iter().map(|c| c.title().to_string()))
        .collect()
}

/// The Markdown table, the errors if any, the settings and how the budget is computed.
pub fn markdown(settings: &ChaosSettings, reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    let head = headers();
    out.push_str(&format!("| {} |\n", head.join(" | ")));
    out.push_str(&format!(
        "|{}\n",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    ));
    for row in rows(reports, true) {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    let errors: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let first = r.error.as_deref()?.lines().next().unwrap_or_default();
            Some(format!(
                "- {}{}: stopped early: {first}\n",
                r.cloud.tag(),
                r.scenario.name()
            ))
        })
        .collect();
    if !errors.is_empty() {
        out.push('\n');
        out.push_str(&errors.concat());
    }
    out.push_str(&format!(
        "\nSettings: {}; {} run(s) per scenario. Budget: dead period {} + API time {} \
         (allowance {}, plus operation delay and provider polling), plus per scenario: after an \
         API that was down the agent's longest backoff ({}) and 1 s, or three Retry-Afters after \
         a 429 storm; the latency once per API call of a claim; 1 s of start-up at a \
         simultaneous start. Figures in seconds, median / max over the runs.\n",
        settings.describe(),
        settings.runs,
        secs(settings.dead_period()),
        secs(settings.api_time()),
        secs(API_ALLOWANCE),
        secs(settings.backoff_max()),
    ));
    out
}

/// The same table, aligned for a terminal.
pub fn text_table(reports: &[ScenarioReport]) -> String {
    let mut all = vec![headers()];
    all.extend(rows(reports, false));
    let widths: Vec<usize> = (0..all[0].len())
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &all {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A header line, then one tab-separated line per scenario: medians and maxima of the
/// figures, runs passing each criterion, and the error if the scenario stopped early.
pub fn tsv(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "scenario\truns\tbudget_s\tno_holder_median_s\tno_holder_max_s\tmulti_holder_median_s\t\
         multi_holder_max_s\tchanges_median\tchanges_max\tclient_outage_median_s\t\
         client_outage_max_s\tpass_no_holder\tpass_multi_holder\tpass_no_flapping\tpass_settled\t\
         error\n",
    );
    for r in reports {
        let mm = |f: &dyn Fn(&Figures) -> Option<f64>| -> (String, String) {
            let v: Vec<f64> = r.runs.iter().filter_map(|run| f(&run.figures)).collect();
            match figures::median_max(&v) {
                Some((a, b)) => (format!("{a:.3}"), format!("{b:.3}")),
                None => ("-".into(), "-".into()),
            }
        };
        let (nh, nhx) = mm(&|f| Some(f.no_holder));
        let (mh, mhx) = mm(&|f| Some(f.multi_holder));
        let (ch, chx) = mm(&|f| Some(f.changes as f64));
        let (co, cox) = mm(&|f| f.client_outage);
        let passes: Vec<String> = Criterion::ALL
            .iter()
            .map(|&c| {
                r.runs
                    .iter()
                    .filter(|run| run.verdicts.iter().any(|v| v.criterion == c && v.pass))
                    .count()
                    .to_string()
            })
            .collect();
        let error = r
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("")
            .replace('\t', " ");
        out.push_str(&format!(
            "{}{}\t{}\t{:.3}\t{nh}\t{nhx}\t{mh}\t{mhx}\t{ch}\t{chx}\t{co}\t{cox}\t{}\t{error}\n",
            r.cloud.tag(),
            r.scenario.name(),
            r.runs.len(),
            r.budget.as_secs_f64(),
            passes.join("\t"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names() {
        let names: Vec<String> = ChaosScenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "kill",
                "sigstop",
                "link-cut-5s",
                "link-cut-75s",
                "partition",
                "asymmetric",
                "api-cut",
                "api-5xx",
                "api-429",
                "api-latency",
                "api-outage",
                "restart",
                "simultaneous",
                "loss"
            ]
        );
        assert_eq!(parse_scenarios("all").unwrap().len(), 14);
        assert_eq!(
            parse_scenarios("link-cut-75s").unwrap(),
            vec![ChaosScenario::LinkCut75s]
        );
        assert!(parse_scenarios("meteor").unwrap_err().contains("api-429"));
    }

    #[test]
    fn budgets() {
        let mut s = ChaosSettings::new("/bin/true");
        // Defaults: dead 3 s, API 1 s; reconcile 30 s, so the backoff tops out at 10 s.
        assert_eq!(s.budget(ChaosScenario::Kill), Duration::from_secs(4));
        assert_eq!(s.backoff_max(), Duration::from_secs(10));
        assert_eq!(s.budget(ChaosScenario::ApiOutage), Duration::from_secs(15));
        assert_eq!(s.budget(ChaosScenario::Api429), Duration::from_secs(20));
        assert_eq!(s.budget(ChaosScenario::ApiLatency), Duration::from_secs(44));
        s.cloud = LabCloud::AzurePublicIp;
        assert_eq!(s.budget(ChaosScenario::Kill), Duration::from_secs(8));
        // The VIP is held without an API call: API faults add nothing to its budget.
        s.cloud = LabCloud::OpenStackVip;
        assert_eq!(s.budget(ChaosScenario::ApiOutage), Duration::from_secs(4));
        // CI: -t 0.2, reconcile 2 s, scale 0.2.
        s.cloud = LabCloud::Exoscale;
        s.interval = Duration::from_millis(200);
        s.reconcile_interval = Some(Duration::from_secs(2));
        s.scale = 0.2;
        assert_eq!(
            s.duration(ChaosScenario::LinkCut75s),
            Some(Duration::from_secs(15))
        );
        assert_eq!(s.duration(ChaosScenario::Kill), None);
        assert_eq!(s.retry_after_secs(), 1);
        assert_eq!(s.latency(), Duration::from_secs(2));
        assert_eq!(
            s.budget(ChaosScenario::Api5xx),
            Duration::from_millis(600 + 1000 + 3000)
        );
        let cfg = s.lab_config(ChaosScenario::ApiLatency);
        assert!(cfg.data_path);
        assert_eq!(
            cfg.extra_agent_args,
            ["--reconcile-interval", "2", "--api-timeout", "6"]
        );
    }

    fn report(no_holder: f64, pass: bool) -> ScenarioReport {
        ScenarioReport {
            cloud: LabCloud::Exoscale,
            scenario: ChaosScenario::Kill,
            budget: Duration::from_secs(4),
            reconcile: Duration::from_secs(30),
            runs: vec![RunReport {
                run: 1,
                figures: Figures {
                    no_holder,
                    multi_holder: 0.0,
                    changes: 2,
                    settled: true,
                    client_outage: Some(3.0),
                },
                verdicts: Criterion::ALL
                    .iter()
                    .map(|&criterion| Verdict {
                        criterion,
                        pass: pass || criterion != Criterion::NoHolder,
                    })
                    .collect(),
                diagnostics: None,
            }],
            error: None,
        }
    }

    #[test]
    fn tables() {
        let s = ChaosSettings::new("/bin/true");
        let md = markdown(&s, &[report(3.0, true), report(5.0, false)]);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].starts_with("| scenario | runs | budget s | no-holder s |"));
        assert_eq!(lines[1].matches('|').count(), lines[0].matches('|').count());
        assert!(
            lines[2].contains("| kill | 1 | 4.0 | 3.00 / 3.00 |"),
            "{md}"
        );
        assert!(lines[2].contains("pass 1/1"));
        assert!(lines[3].contains("**FAIL** 0/1"), "{md}");
        assert!(md.contains("Settings: Exoscale elastic IP, 3 hosts, -t 1 -r 3 (dead after 3 s)"));
        let t = tsv(&[report(3.0, true)]);
        let l: Vec<&str> = t.lines().collect();
        assert_eq!(l[0].split('\t').count(), l[1].split('\t').count());
        assert!(l[1].starts_with("kill\t1\t4.000\t3.000\t3.000\t"));
        assert!(text_table(&[report(3.0, true)]).contains("kill"));
        assert!(report(5.0, false)
            .explain()
            .contains("no holder for 5.00 s > budget 4.00 s"));
    }
}

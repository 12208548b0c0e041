//! `exoip lab bench`: repeated failovers in one lab, measured on the simulator's timeline
//! against the moment the lab sent the signal (both unix time on the same machine).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;

use super::testbed::{no_holder_time, Lab, LabCloud, LabConfig, TimelineEvent};
use super::{parse_duration, require_root, unix_now};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The holder crashes (kill -9 of the agent, cable unplugged).
    Kill,
    /// The holder's agent is stopped with SIGTERM (a graceful handover).
    Term,
    /// The holder's agent is stopped with SIGTERM and started again.
    Restart,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub cloud: super::CloudArgs,
    /// Also time when a client reaches the address again (an HTTP GET through it every 20 ms).
    #[arg(long)]
    pub data_path: bool,
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[arg(short = 't', long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    #[arg(short = 'r', long, default_value_t = 3)]
    pub dead_ratio: u32,
    #[arg(long, value_enum, default_value = "kill")]
    pub scenario: Scenario,
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub op_delay: Duration,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    pub hosts: u8,
    /// One tab-separated line per metric (scenario, interval_s, ratio, op_delay_ms, metric,
    /// runs, min_ms, median_ms, max_ms), for scripts.
    #[arg(long)]
    pub tsv: bool,
    /// Narrate every run and print the logs' tails at the end.
    #[arg(short, long)]
    pub verbose: bool,
    /// exoip binary to run in the namespaces (default: this one).
    #[arg(long, value_name = "PATH")]
    pub exoip: Option<PathBuf>,
}

/// Samples of one metric, in seconds.
struct Metric {
    name: &'static str,
    samples: Vec<f64>,
}

/// (min, median, max); the median of an even count is the mean of the middle two.
pub(crate) fn summary(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

pub async fn run(args: BenchArgs) -> Result<()> {
    require_root("the benchmark")?;
    let mut cfg = LabConfig::new(super::exoip_binary(args.exoip.clone())?);
    args.cloud.apply(&mut cfg)?;
    cfg.data_path = args.data_path;
    cfg.fetch_interval = Duration::from_millis(20);
    cfg.fetch_timeout = Duration::from_millis(200);
    cfg.hosts = args.hosts.into();
    cfg.interval = args.interval;
    cfg.dead_ratio = args.dead_ratio;
    cfg.op_delay = args.op_delay;
    cfg.verbose = args.verbose;
    // Building the lab is inside the race too: a signal at any point must leave nothing behind.
    let work = async {
        let lab = Lab::start(cfg).await?;
        let result = measure(&lab, &args).await;
        if result.is_err() || args.verbose {
            eprintln!("{}", lab.log_tails(20));
        }
        result
    };
    let metrics = tokio::select! {
        r = work => r?,
        sig = super::demo::interrupted() => return Err(anyhow!("interrupted by {sig}; the lab has been removed")),
    };
    print_results(&args, &metrics);
    Ok(())
}

fn first_after(
    tl: &[TimelineEvent],
    t: f64,
    pred: impl Fn(&TimelineEvent) -> bool,
) -> Option<&TimelineEvent> {
    tl.iter().find(|e| e.t >= t && pred(e))
}

async fn measure(lab: &Lab, args: &BenchArgs) -> Result<Vec<Metric>> {
    let dead = lab.config().dead_period();
    // Long enough for a restarted agent's hold-off to end and a preemption to show up.
    let quiet = dead * 2 + Duration::from_millis(500);
    let patience = dead * 4 + Duration::from_secs(15);
    let vip = lab.config().cloud == LabCloud::OpenStackVip;
    // Azure lb-probe: the timeline is the emulated load balancer's (who answers the probe).
    let lb = lab.config().cloud == LabCloud::AzureLbProbe;
    let mut m_attach = Metric {
        name: if vip {
            "signal -> VIP on the survivor"
        } else if lb {
            "signal -> LB sends to survivor"
        } else {
            "signal -> attached to survivor"
        },
        samples: vec![],
    };
    let mut m_detach = Metric {
        name: if vip {
            "signal -> old holder fenced"
        } else if lb {
            "signal -> LB drops old holder"
        } else {
            "signal -> detached from old holder"
        },
        samples: vec![],
    };
    let mut m_reach = Metric {
        name: "signal -> reachable again",
        samples: vec![],
    };
    let mut m_gap = Metric {
        name: "no-holder time",
        samples: vec![],
    };
    let mut m_back = Metric {
        name: "restart -> holder again",
        samples: vec![],
    };
    let mut holder = lab
        .wait_settled(quiet, patience * 2)
        .await
        .context("the lab did not settle before the first run")?;
    for run in 1..=args.runs {
        let old_id = lab.hosts()[holder].instance_id.clone();
        let old_name = lab.hosts()[holder].name.clone();
        // Strike at a random point of the heartbeat cycle: settling ends in step with the
        // heartbeats, and a fixed phase would bias every kill -> takeover figure the same way.
        let phase = args.interval.mul_f64(rand::random::<f64>());
        tokio::time::sleep(phase).await;
        let t0 = match args.scenario {
            Scenario::Kill => lab.crash(holder).await?,
            Scenario::Term | Scenario::Restart => lab.kill(holder, Signal::SIGTERM)?,
        };
        // From when a restarted agent may still change things.
        let since = match args.scenario {
            Scenario::Kill | Scenario::Term => {
                let (attach, detach) = if vip {
                    wait_vip_moved(lab, t0, holder, &old_id, args.scenario, patience).await?
                } else {
                    wait_moved(lab, t0, &old_id, patience).await?
                };
                m_attach.samples.push(attach - t0);
                if let Some(d) = detach {
                    m_detach.samples.push(d - t0);
                }
                if !vip {
                    let until = attach.max(detach.unwrap_or(attach));
                    m_gap
                        .samples
                        .push(no_holder_time(&lab.timeline()?, t0, until).as_secs_f64());
                }
                if args.data_path {
                    m_reach
                        .samples
                        .push(wait_reachable(lab, t0, &old_name, patience).await? - t0);
                }
                if args.scenario == Scenario::Kill {
                    lab.revive(holder).await?;
                } else {
                    lab.wait_agent_exit(holder, patience).await?;
                }
                let since = unix_now();
                lab.start_agent(holder).await?;
                since
            }
            Scenario::Restart => {
                lab.wait_agent_exit(holder, patience).await?;
                let t_start = unix_now();
                lab.start_agent(holder).await?;
                let back = lab
                    .wait_until("the restarted agent to hold again", patience, || async {
                        Ok(lab.single_holder().await? == Some(holder))
                    })
                    .await;
                match back {
                    Ok(_) => {
                        let tl = lab.timeline()?;
                        let t = first_after(&tl, t_start, |e| {
                            e.event == "attach" && e.instance == old_id
                        })
                        .map(|e| e.t)
                        .unwrap_or_else(unix_now);
                        m_back.samples.push(t - t_start);
                    }
                    // Without preemption the survivor keeps the IP: nothing to time.
                    Err(_) if lab.single_holder().await?.is_some() => {}
                    Err(e) => return Err(e),
                }
                t_start
            }
        };
        let settled = lab.wait_settled_since(since, quiet, patience * 2).await?;
        if args.scenario == Scenario::Restart {
            m_gap
                .samples
                .push(no_holder_time(&lab.timeline()?, t0, unix_now()).as_secs_f64());
        }
        if args.verbose {
            let last = |m: &Metric| m.samples.last().map(|s| format!("{:.0}", s * 1000.0));
            let samples: Vec<String> = [&m_attach, &m_detach, &m_reach, &m_gap, &m_back]
                .iter()
                .filter_map(|m| last(m).map(|v| format!("{} {v} ms", m.name)))
                .collect();
            eprintln!(
                "run {run}/{}: {} {old_name}, now held by {} ({})",
                args.runs,
                match args.scenario {
                    Scenario::Kill => "crashed",
                    Scenario::Term => "stopped",
                    Scenario::Restart => "restarted",
                },
                lab.hosts()[settled].name,
                samples.join(", ")
            );
        }
        holder = settled;
    }
    let mut metrics = match args.scenario {
        Scenario::Kill | Scenario::Term => vec![m_attach, m_detach, m_reach, m_gap],
        Scenario::Restart => vec![m_gap, m_back],
    };
    // The API's timeline knows no holder in vip mode: no gap to compute there.
    metrics.retain(|m| !m.samples.is_empty() || (m.name == "no-holder time" && !vip));
    Ok(metrics)
}

/// Waits for the IP to be attached to someone else and detached from `old` after `t0`;
/// returns both timestamps. (A floating IP's move is one change that does both.)
async fn wait_moved(
    lab: &Lab,
    t0: f64,
    old: &str,
    patience: Duration,
) -> Result<(f64, Option<f64>)> {
    let mut found = None;
    let start = std::time::Instant::now();
    while found.is_none() {
        let tl = lab.timeline()?;
        let attach = first_after(&tl, t0, |e| e.holders.iter().any(|h| h != old));
        let detach = first_after(&tl, t0, |e| !e.holders.iter().any(|h| h == old));
        if let (Some(a), Some(d)) = (attach, detach) {
            found = Some((a.t, Some(d.t)));
        } else if start.elapsed() > patience {
            return Err(anyhow!(
                "the IP did not move away from {} within {patience:?} ({})",
                lab.instance_name(old),
                lab.describe_state()
            ));
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(found.expect("loop exits with a value"))
}

/// Vip mode: waits until another host has the VIP on its NIC (polled every 10 ms: no API
/// timeline knows it) and, after a kill, until the dead holder is fenced (its allowed address
/// pair removed, on the timeline). Returns both times; no fencing after a graceful stop.
async fn wait_vip_moved(
    lab: &Lab,
    t0: f64,
    old_host: usize,
    old: &str,
    scenario: Scenario,
    patience: Duration,
) -> Result<(f64, Option<f64>)> {
    let start = std::time::Instant::now();
    let mut moved = None;
    loop {
        if moved.is_none() {
            if let Some(h) = lab.single_holder().await? {
                if h != old_host {
                    moved = Some(unix_now());
                }
            }
        }
        let fenced = first_after(&lab.timeline()?, t0, |e| {
            e.event == "detach" && e.instance == old
        })
        .map(|e| e.t);
        match (moved, fenced, scenario) {
            (Some(m), Some(f), _) => return Ok((m, Some(f))),
            (Some(m), None, Scenario::Term | Scenario::Restart) => return Ok((m, None)),
            _ if start.elapsed() > patience => {
                return Err(anyhow!(
                    "the VIP did not move away from {} within {patience:?} ({})",
                    lab.instance_name(old),
                    lab.describe_state()
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// When the client first got an answer from a host other than `old` for a request started
/// after `t0` (the end of that request, unix time).
async fn wait_reachable(lab: &Lab, t0: f64, old: &str, patience: Duration) -> Result<f64> {
    let start = std::time::Instant::now();
    loop {
        let hit = lab
            .requests()
            .into_iter()
            .find(|r| r.ok && r.t >= t0 && r.body.as_deref().is_some_and(|b| b != old));
        if let Some(r) = hit {
            return Ok(r.t + r.ms / 1000.0);
        }
        if start.elapsed() > patience {
            return Err(anyhow!(
                "the client did not reach the address again within {patience:?} ({})",
                lab.describe_state()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn print_results(args: &BenchArgs, metrics: &[Metric]) {
    let cloud = args.cloud.lab_cloud().map_or("", LabCloud::tag);
    let family = if args.cloud.ipv6 { "ipv6:" } else { "" };
    let scenario = format!("{cloud}{family}{:?}", args.scenario).to_lowercase();
    if args.tsv {
        for m in metrics {
            let (min, med, max) = summary(&m.samples).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            println!(
                "{scenario}\t{}\t{}\t{}\t{}\t{}\t{:.0}\t{:.0}\t{:.0}",
                args.interval.as_secs_f64(),
                args.dead_ratio,
                args.op_delay.as_millis(),
                m.name,
                m.samples.len(),
                min * 1000.0,
                med * 1000.0,
                max * 1000.0
            );
        }
        return;
    }
    println!(
        "scenario {scenario}: interval {:?}, dead ratio {} (dead after {:?}), op delay {:?}, {} runs",
        args.interval,
        args.dead_ratio,
        args.interval * args.dead_ratio,
        args.op_delay,
        args.runs
    );
    match args.cloud.lab_cloud() {
        Ok(LabCloud::AzurePublicIp | LabCloud::AzureSecondaryIp) => println!(
            "  (simulated ARM: operations complete after the op delay but answer Retry-After: {} s, \
             so the agent looks at each after min(Retry-After, 2 s); a move is two of them)",
            exoip_providers::sim::azure::AzureOptions::default().operation_retry_after_secs
        ),
        Ok(LabCloud::AzureLbProbe) => println!(
            "  (no API call: the lab's load balancer probes every {:?} and follows the probe)",
            super::testbed::LB_PROBE_INTERVAL
        ),
        _ => {}
    }
    println!(
        "  {:<36} {:>9} {:>9} {:>9}",
        "metric (ms)", "min", "median", "max"
    );
    for m in metrics {
        match summary(&m.samples) {
            Some((min, med, max)) => println!(
                "  {:<36} {:>9.0} {:>9.0} {:>9.0}",
                m.name,
                min * 1000.0,
                med * 1000.0,
                max * 1000.0
            ),
            None => println!("  {:<36} {:>9} {:>9} {:>9}", m.name, "-", "-", "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
    }
}

//! Helpers shared by the end-to-end test files: root check, lab start-up, and scenarios with a
//! time limit that print the timeline and the logs when they fail.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{anyhow, Result};
use exoip::lab::{Lab, LabConfig};

pub fn root_or_skip() -> bool {
    if exoip::lab::testbed::is_root() {
        return true;
    }
    if std::env::var_os("EXOIP_SKIP_NETNS_TESTS").is_some() {
        eprintln!("skipped: needs root (EXOIP_SKIP_NETNS_TESTS is set)");
        return false;
    }
    panic!("network-namespace tests need root; set EXOIP_SKIP_NETNS_TESTS=1 to skip them");
}

pub fn config() -> LabConfig {
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_exoip"));
    cfg.interval = Duration::from_millis(200);
    cfg.dead_ratio = 3;
    cfg
}

/// Generous bound for anything that should take about one dead period plus API calls.
pub fn patience(lab: &Lab) -> Duration {
    lab.config().dead_period() * 5 + Duration::from_secs(5)
}

pub async fn start(cfg: LabConfig) -> Lab {
    match tokio::time::timeout(Duration::from_secs(30), Lab::start(cfg)).await {
        Ok(Ok(lab)) => lab,
        Ok(Err(e)) => panic!("cannot build the lab: {e:#}"),
        Err(_) => panic!("building the lab took more than 30 s"),
    }
}

/// Runs a scenario with an overall time limit; on failure prints the timeline and the logs.
pub async fn check<F>(lab: &Lab, limit: Duration, scenario: F)
where
    F: std::future::Future<Output = Result<()>>,
{
    let outcome = match tokio::time::timeout(limit, scenario).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("scenario exceeded {limit:?}")),
    };
    if let Err(e) = outcome {
        eprintln!("{}", lab.describe_state());
        for ev in lab.timeline().unwrap_or_default() {
            let holders: Vec<String> = ev.holders.iter().map(|h| lab.instance_name(h)).collect();
            eprintln!(
                "timeline {:.3} {} {} -> [{}]",
                ev.t,
                ev.event,
                lab.instance_name(&ev.instance),
                holders.join(",")
            );
        }
        eprintln!("{}", lab.log_tails(40));
        panic!("{e:#}");
    }
}

/// `exoip status --json` of the agent on `host`.
pub fn status(lab: &Lab, host: usize) -> Result<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args(["status", "--json", "--socket"])
        .arg(lab.status_socket(host))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "exoip status on {}: {}",
        lab.hosts()[host].name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The name of `host` (`lb1`...): what its HTTP server answers in the data path.
pub fn name(lab: &Lab, host: usize) -> String {
    lab.hosts()[host].name.clone()
}

/// Waits until the client got an answer from `host` for a request started at or after `since`;
/// returns when that answer arrived (unix time).
pub async fn reached(lab: &Lab, host: usize, since: f64, timeout: Duration) -> Result<f64> {
    let who = name(lab, host);
    let answer = || {
        lab.requests()
            .into_iter()
            .find(|r| r.ok && r.t >= since && r.body.as_deref() == Some(who.as_str()))
    };
    lab.wait_until(&format!("the client to reach {who}"), timeout, || async {
        Ok(answer().is_some())
    })
    .await?;
    let r = answer().ok_or_else(|| anyhow!("the answer from {who} vanished"))?;
    Ok(r.t + r.ms / 1000.0)
}

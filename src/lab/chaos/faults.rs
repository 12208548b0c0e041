//! The faults a chaos scenario injects into a running lab, each undone by its handle:
//! * [`NetFault`]: nftables rules inside host namespaces (the kernels here have no `tc netem`):
//!   heartbeat partitions, one-way heartbeat loss, random loss, a host cut from the API only.
//! * [`SimFaults`]: the simulated cloud's fault injection (`PUT /_sim/faults`) for a window.
//! * [`AliasWatch`]: who has the address on its NIC, as it changes (`ip monitor address`), for
//!   the clouds where that is who holds it (OpenStack vip).

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::super::testbed::{host_prefix, Lab, ROUTER_IP};
use super::super::{unix_now, HEARTBEAT_PORT};
use super::figures::Step;

/// The simulator's API port in R (Exoscale API, Keystone and Neutron, ARM and Entra ID).
const API_PORT: u16 = 8080;

/// nftables tables a fault added to host namespaces. [`NetFault::clear`] removes them; dropping
/// the handle without clearing removes them too (best effort, synchronously), and the lab's
/// namespaces take whatever is left with them.
#[must_use = "the rules stay until cleared"]
pub struct NetFault {
    /// (namespace, table name), all of family `inet`.
    tables: Vec<(String, String)>,
}

/// `ip saddr 192.0.2.12` or `ip6 saddr 2001:db8:2::12`.
fn addr_match(dir: &str, ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip {dir} {v4}"),
        IpAddr::V6(v6) => format!("ip6 {dir} {v6}"),
    }
}

async fn nft_in(ns: &str, script: String) -> Result<()> {
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || {
        exoip_providers::sim::route::run_nft(
            std::process::Command::new("ip").args(["netns", "exec", &ns, "nft", "-f", "-"]),
            &script,
        )
    })
    .await?
    .map_err(|e| anyhow!("chaos rules: {e}"))
}

/// A table with an input and an output filter chain holding `input` and `output` rules.
fn table_script(table: &str, input: &[String], output: &[String]) -> String {
    let chain = |name: &str, rules: &[String]| {
        let mut s = format!(
            "\tchain {name} {{\n\t\ttype filter hook {name} priority filter; policy accept;\n"
        );
        for r in rules {
            s.push_str(&format!("\t\t{r}\n"));
        }
        s.push_str("\t}\n");
        s
    };
    format!(
        "table inet {table} {{\n{}{}}}\n",
        chain("input", input),
        chain("output", output)
    )
}

impl NetFault {
    async fn add(
        &mut self,
        ns: &str,
        table: &str,
        input: &[String],
        output: &[String],
    ) -> Result<()> {
        nft_in(ns, table_script(table, input, output)).await?;
        self.tables.push((ns.to_string(), table.to_string()));
        Ok(())
    }

    /// Heartbeats dropped both ways between every host of `a` and every host of `b` (the rules
    /// live in `a`'s namespaces); everything else flows, the API included.
    pub async fn partition(lab: &Lab, a: &[usize], b: &[usize]) -> Result<NetFault> {
        let mut f = NetFault { tables: Vec::new() };
        for &i in a {
            let (mut input, mut output) = (Vec::new(), Vec::new());
            for &j in b {
                let peer = lab.host(j)?.heartbeat_ip();
                input.push(format!(
                    "udp dport {HEARTBEAT_PORT} {} drop",
                    addr_match("saddr", peer)
                ));
                output.push(format!(
                    "udp dport {HEARTBEAT_PORT} {} drop",
                    addr_match("daddr", peer)
                ));
            }
            f.add(&lab.host(i)?.ns, "exoip_chaos_partition", &input, &output)
                .await?;
        }
        Ok(f)
    }

    /// `from`'s heartbeats to the hosts of `to` are dropped (in `from`'s namespace); theirs still
    /// reach `from`: `from` hears them, they do not hear `from`.
    pub async fn one_way(lab: &Lab, from: usize, to: &[usize]) -> Result<NetFault> {
        let mut f = NetFault { tables: Vec::new() };
        let output = to
            .iter()
            .map(|&j| {
                Ok(format!(
                    "udp dport {HEARTBEAT_PORT} {} drop",
                    addr_match("daddr", lab.host(j)?.heartbeat_ip())
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        f.add(&lab.host(from)?.ns, "exoip_chaos_one_way", &[], &output)
            .await?;
        Ok(f)
    }

    /// Each heartbeat arriving at any of `hosts` is dropped with probability `percent`/100.
    pub async fn heartbeat_loss(lab: &Lab, hosts: &[usize], percent: u8) -> Result<NetFault> {
        if percent > 100 {
            bail!("a loss of {percent} %");
        }
        let mut f = NetFault { tables: Vec::new() };
        let rule = format!("udp dport {HEARTBEAT_PORT} numgen random mod 100 < {percent} drop");
        for &i in hosts {
            f.add(
                &lab.host(i)?.ns,
                "exoip_chaos_loss",
                std::slice::from_ref(&rule),
                &[],
            )
            .await?;
        }
        Ok(f)
    }

    /// `host` cannot reach the cloud API (its TCP to the simulator's API port is dropped, so its
    /// calls hang until they time out); heartbeats and the metadata service still work.
    pub async fn api_cut(lab: &Lab, host: usize) -> Result<NetFault> {
        let mut f = NetFault { tables: Vec::new() };
        let rule = format!("ip daddr {ROUTER_IP} tcp dport {API_PORT} drop");
        f.add(
            &lab.host(host)?.ns,
            "exoip_chaos_api_cut",
            &[],
            std::slice::from_ref(&rule),
        )
        .await?;
        Ok(f)
    }

    /// Removes the rules.
    pub async fn clear(mut self) -> Result<()> {
        let tables = std::mem::take(&mut self.tables);
        for (ns, table) in tables {
            nft_in(&ns, format!("delete table inet {table}\n")).await?;
        }
        Ok(())
    }
}

impl Drop for NetFault {
    fn drop(&mut self) {
        for (ns, table) in self.tables.drain(..) {
            let _ = std::process::Command::new("ip")
                .args([
                    "netns", "exec", &ns, "nft", "delete", "table", "inet", &table,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The simulator's faults replaced for a while: [`SimFaults::restore`] puts back what was
/// there before (the operation delay the lab started it with, in particular).
#[must_use = "the faults stay until restored"]
pub struct SimFaults<'a> {
    lab: &'a Lab,
    before: serde_json::Value,
}

impl<'a> SimFaults<'a> {
    /// Sets the faults in force with the fields of `change` (a JSON object in the form of
    /// `PUT /_sim/faults`) replaced.
    pub async fn set(lab: &'a Lab, change: serde_json::Value) -> Result<SimFaults<'a>> {
        let before = lab.sim_get("/_sim/faults").await?;
        let mut faults = before.clone();
        let (Some(obj), Some(changes)) = (faults.as_object_mut(), change.as_object()) else {
            bail!("faults are JSON objects: {before} and {change}");
        };
        for (k, v) in changes {
            obj.insert(k.clone(), v.clone());
        }
        lab.sim_put("/_sim/faults", &faults)
            .await
            .context("setting the simulator's faults")?;
        Ok(SimFaults { lab, before })
    }

    pub async fn restore(self) -> Result<()> {
        self.lab
            .sim_put("/_sim/faults", &self.before)
            .await
            .context("restoring the simulator's faults")?;
        Ok(())
    }
}

/// Who has the lab's address on its NIC, change by change: one `ip -o monitor address` per
/// host namespace, stamped when the line arrives (a few milliseconds late at most).
pub struct AliasWatch {
    changes: Arc<Mutex<Vec<Step>>>,
    children: Vec<Child>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AliasWatch {
    /// Starts watching `dev` on every host of `lab`.
    pub async fn start(lab: &Lab, dev: &'static str) -> Result<AliasWatch> {
        let n = lab.hosts().len();
        let needle = format!(" {} ", host_prefix(lab.address()));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(vec![false; n]));
        let mut watch = AliasWatch {
            changes: changes.clone(),
            children: Vec::new(),
            tasks: Vec::new(),
        };
        for h in lab.hosts() {
            let mut child = tokio::process::Command::new("ip")
                .args(["-n", &h.ns, "-o", "monitor", "address"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start `ip monitor address`")?;
            let stdout = child.stdout.take().expect("piped");
            watch.children.push(child);
            let (index, needle, changes, state) =
                (h.index, needle.clone(), changes.clone(), state.clone());
            let on_dev = format!(": {dev} ");
            watch.tasks.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.contains(&on_dev) || !line.contains(&needle) {
                        continue;
                    }
                    let has = !line.starts_with("Deleted");
                    record(&changes, &state, index, has, unix_now());
                }
            }));
        }
        // The monitors print changes only: give them a moment to subscribe, then read where
        // things stand (a change in between is seen twice, which changes nothing).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for i in 0..n {
            let has = lab.has_alias(i).await?;
            record(&changes, &state, i, has, unix_now());
        }
        Ok(watch)
    }

    /// Every change so far (the holders after each), oldest first.
    pub fn changes(&self) -> Vec<Step> {
        lock(&self.changes).clone()
    }
}

fn record(changes: &Mutex<Vec<Step>>, state: &Mutex<Vec<bool>>, host: usize, has: bool, t: f64) {
    let mut state = lock(state);
    let mut changes = lock(changes);
    if state[host] == has && !changes.is_empty() {
        return;
    }
    state[host] = has;
    let holders = (0..state.len()).filter(|&i| state[i]).collect();
    changes.push(Step { t, holders });
}

impl Drop for AliasWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_nftables() {
        let s = table_script(
            "t",
            &["udp dport 12345 ip saddr 192.0.2.12 drop".into()],
            &[],
        );
        assert_eq!(
            s,
            "table inet t {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tudp dport 12345 ip saddr 192.0.2.12 drop\n\t}\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n"
        );
        assert_eq!(
            addr_match("daddr", "2001:db8:2::12".parse().unwrap()),
            "ip6 daddr 2001:db8:2::12"
        );
    }

    #[test]
    fn the_watch_records_changes_only() {
        let changes = Mutex::new(Vec::new());
        let state = Mutex::new(vec![false; 2]);
        record(&changes, &state, 0, false, 1.0);
        record(&changes, &state, 0, true, 2.0);
        record(&changes, &state, 0, true, 2.5);
        record(&changes, &state, 1, true, 3.0);
        record(&changes, &state, 0, false, 4.0);
        let c = changes.into_inner().unwrap();
        let got: Vec<(f64, Vec<usize>)> = c.into_iter().map(|s| (s.t, s.holders)).collect();
        assert_eq!(
            got,
            vec![
                (1.0, vec![]),
                (2.0, vec![0]),
                (3.0, vec![0, 1]),
                (4.0, vec![1])
            ]
        );
    }
}

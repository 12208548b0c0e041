//! `exoip demo`: three hosts behind one elastic IP, a client fetching through it, a crash of
//! the holder and the takeover as seen by the cloud API and by the client.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::testbed::{host_prefix, http_url, Lab, LabCloud, LabConfig, TimelineEvent};
use super::{require_root, unix_now, DemoArgs};

/// Resolves when the user interrupts us (Ctrl-C, SIGTERM, SIGHUP); names the signal.
pub(crate) async fn interrupted() -> &'static str {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    let hup = async {
        match hup.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term => "SIGTERM",
        _ = hup => "SIGHUP",
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    require_root("the demo")?;
    let mut cfg = LabConfig::new(super::exoip_binary(args.exoip.clone())?);
    args.cloud.apply(&mut cfg)?;
    cfg.hosts = args.hosts.into();
    cfg.interval = args.interval;
    cfg.dead_ratio = args.dead_ratio;
    cfg.op_delay = args.op_delay;
    cfg.data_path = true;
    cfg.keep = args.keep;
    cfg.verbose = args.verbose;
    cfg.extra_agent_args = args.agent_args.clone();
    // The lab lives inside `demo`: when a signal wins the race the future is dropped, and with
    // it the lab, which removes namespaces and processes before we return.
    tokio::select! {
        r = demo(cfg, args.verbose) => r,
        sig = interrupted() => Err(anyhow!("interrupted by {sig}; the lab has been removed")),
    }
}

struct Clock(Instant);

impl Clock {
    fn say(&self, msg: impl std::fmt::Display) {
        println!("[{:5.1}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

async fn demo(cfg: LabConfig, verbose: bool) -> Result<()> {
    let clock = Clock(Instant::now());
    let dead = cfg.dead_period();
    println!(
        "exoip demo ({}{}): {} hosts share {}; heartbeat every {:?}, a peer is dead after {} missed ({:?})",
        cfg.cloud.describe(),
        if cfg.ipv6 { ", IPv6" } else { "" },
        cfg.hosts,
        cfg.address(),
        cfg.interval,
        cfg.dead_ratio,
        dead
    );
    let lab = Lab::start(cfg).await?;
    let result = scenario(&lab, &clock).await;
    if result.is_err() || verbose {
        eprintln!("\n{}", lab.log_tails(15));
    }
    if lab.config().keep {
        println!("logs and timeline kept in {}", lab.dir().display());
    }
    result
}

/// How the moving address is held and moved in this lab's cloud, for the narration.
fn held_how(lab: &Lab, holder: usize, by_api: &[String]) -> String {
    let addr = lab.address();
    let h = &lab.hosts()[holder];
    match lab.config().cloud {
        LabCloud::Exoscale => format!(
            "attached to [{}] by the API, {} on the lo of {}",
            by_api.join(", "),
            host_prefix(addr),
            h.name
        ),
        LabCloud::OpenStackFloatingIp => format!(
            "the floating IP points at the port of [{}] (the API), NATed to {} by the router",
            by_api.join(", "),
            h.ip
        ),
        LabCloud::OpenStackVip => format!(
            "{addr}/32 on the eth0 of {}, announced by gratuitous ARP; allowed on the ports of [{}] (the API)",
            h.name,
            by_api.join(", ")
        ),
        LabCloud::AzurePublicIp => format!(
            "the public IP is on the NIC of [{}] (the API), NATed to {} by Azure's network",
            by_api.join(", "),
            h.ip
        ),
        LabCloud::AzureSecondaryIp => format!(
            "the ipConfiguration is on the NIC of [{}] (the API), {addr}/32 on the eth0 of {}, announced by gratuitous ARP",
            by_api.join(", "),
            h.name
        ),
        LabCloud::AzureLbProbe => format!(
            "only {} answers the health probe on TCP port {}, so the load balancer sends {addr} there (on every host's lo; no API call)",
            h.name,
            super::testbed::LB_PROBE_PORT
        ),
    }
}

/// Whether the timeline shows, after `t`, the address given to a node other than `dead`, and
/// taken from `dead` (in vip mode: `dead` no longer allowed to hold it: fenced).
fn moved_and_fenced(tl: &[TimelineEvent], t: f64, dead: &str, vip: bool) -> (bool, bool) {
    let later = || tl.iter().filter(move |e| e.t >= t);
    let given = vip || later().any(|e| e.holders.iter().any(|h| h != dead));
    let taken = later().any(|e| !e.holders.iter().any(|h| h == dead));
    (given, taken)
}

async fn scenario(lab: &Lab, clock: &Clock) -> Result<()> {
    let dead = lab.config().dead_period();
    let cloud = lab.config().cloud;
    let addr = lab.address();
    let hosts: Vec<String> = lab
        .hosts()
        .iter()
        .map(|h| format!("{} ({}, priority {})", h.name, h.heartbeat_ip(), h.priority))
        .collect();
    clock.say(format_args!(
        "lab {} ready: simulated {} API at 192.0.2.1, agents on {}",
        lab.id(),
        match cloud {
            LabCloud::Exoscale => "Exoscale",
            LabCloud::OpenStackFloatingIp | LabCloud::OpenStackVip =>
                "OpenStack (Keystone + Neutron)",
            _ => "Azure (Entra ID + IMDS + ARM)",
        },
        hosts.join(", ")
    ));
    clock.say(format_args!(
        "a client at {} fetches {} every {:?}",
        if cloud.on_lan() {
            "192.0.2.50, on the hosts' LAN,"
        } else if lab.config().ipv6 {
            "2001:db8:3::2, behind the router,"
        } else {
            "198.51.100.2, behind the router,"
        },
        http_url(addr),
        lab.config().fetch_interval
    ));

    let holder = lab
        .wait_single_holder(dead * 3 + Duration::from_secs(10))
        .await?;
    let name = lab.hosts()[holder].name.clone();
    let by_api: Vec<String> = lab
        .holders()
        .await?
        .iter()
        .map(|&i| lab.hosts()[i].name.clone())
        .collect();
    clock.say(format_args!(
        "{name} holds {addr}: {}",
        held_how(lab, holder, &by_api)
    ));
    let since = unix_now();
    lab.wait_until(
        "the client's requests to succeed",
        Duration::from_secs(5),
        || async { Ok(lab.requests().iter().any(|r| r.ok && r.t >= since)) },
    )
    .await?;
    let answered = lab
        .requests()
        .iter()
        .rev()
        .find(|r| r.ok)
        .and_then(|r| r.body.clone())
        .unwrap_or_default();
    clock.say(format_args!(
        "the client's requests are answered by {answered}"
    ));
    // A little traffic before the crash so the timeline shows the last good request.
    tokio::time::sleep(Duration::from_millis(300)).await;

    clock.say(format_args!(
        "crashing {name}: kill -9 of its agent and its network cable unplugged"
    ));
    let holder_was = holder;
    let t_kill = lab.crash(holder).await?;
    let dead_id = lab.hosts()[holder].instance_id.clone();
    let takeover = lab
        .wait_until(
            "the takeover (attach, detach, requests answered again)",
            dead * 3 + Duration::from_secs(10),
            || async {
                let tl = lab.timeline()?;
                let (given, taken) =
                    moved_and_fenced(&tl, t_kill, &dead_id, cloud == LabCloud::OpenStackVip);
                let served = lab.requests().iter().any(|r| r.ok && r.t > t_kill);
                let holder = lab.single_holder().await?;
                Ok(given && taken && served && holder.is_some_and(|h| h != holder_was))
            },
        )
        .await;
    if let Err(e) = takeover {
        return Err(e.context(lab.describe_state()));
    }
    let new_holder = lab
        .single_holder()
        .await?
        .ok_or_else(|| anyhow!("the holder changed again"))?;
    let by_api: Vec<String> = lab
        .holders()
        .await?
        .iter()
        .map(|&i| lab.hosts()[i].name.clone())
        .collect();
    clock.say(format_args!(
        "{} took over: {}",
        lab.hosts()[new_holder].name,
        held_how(lab, new_holder, &by_api)
    ));
    // Let a few more requests through so the report shows the data path steady again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    report(lab, t_kill, &dead_id);
    Ok(())
}

fn report(lab: &Lab, t_kill: f64, dead_id: &str) {
    let name = |id: &str| lab.instance_name(id);
    let addr = lab.address();
    let vip = lab.config().cloud == LabCloud::OpenStackVip;
    let ms = |t: f64| (t - t_kill) * 1000.0;
    let mut rows: Vec<(f64, String)> = vec![(
        0.0,
        format!(
            "kill -9 of the agent on {} and its cable unplugged",
            name(dead_id)
        ),
    )];
    let requests = lab.requests();
    let last_ok = requests.iter().rfind(|r| r.ok && r.t < t_kill);
    let first_ok = requests.iter().find(|r| r.ok && r.t > t_kill);
    if let Some(r) = last_ok {
        rows.push((
            ms(r.t),
            format!(
                "last OK request through {addr} (answered by {})",
                r.body.as_deref().unwrap_or("?")
            ),
        ));
    }
    if let Some(r) = first_ok {
        rows.push((
            ms(r.t),
            format!(
                "first OK request again (answered by {})",
                r.body.as_deref().unwrap_or("?")
            ),
        ));
    }
    let lb = lab.config().cloud == LabCloud::AzureLbProbe;
    let tl: Vec<TimelineEvent> = lab.timeline().unwrap_or_default();
    for e in tl.iter().filter(|e| e.t >= t_kill) {
        let holders: Vec<String> = e.holders.iter().map(|h| name(h)).collect();
        if lb {
            let what = match e.event.as_str() {
                "attach" => format!("LB: the probe of {} answers", name(&e.instance)),
                _ => format!("LB: the probe of {} fails", name(&e.instance)),
            };
            rows.push((
                ms(e.t),
                format!("{what} (sends to: [{}])", holders.join(", ")),
            ));
            continue;
        }
        let what = match (e.event.as_str(), vip) {
            ("attach", false) => format!("API: {addr} attached to {}", name(&e.instance)),
            ("detach", false) => format!("API: {addr} detached from {}", name(&e.instance)),
            ("attach", true) => format!("API: {} allowed to hold {addr}", name(&e.instance)),
            ("detach", true) => format!("API: {} fenced (no longer allowed)", name(&e.instance)),
            (other, _) => format!("API: {other} {}", name(&e.instance)),
        };
        rows.push((
            ms(e.t),
            format!("{what} (holders: [{}])", holders.join(", ")),
        ));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("\ntakeover timeline (milliseconds relative to the kill):");
    for (t, what) in &rows {
        println!("  {t:>+9.0}  {what}");
    }

    let attach = tl
        .iter()
        .find(|e| e.t >= t_kill && e.holders.iter().any(|h| h != dead_id));
    let detach = tl
        .iter()
        .find(|e| e.t >= t_kill && !e.holders.iter().any(|h| h == dead_id));
    let failed = requests
        .iter()
        .filter(|r| !r.ok && r.t > t_kill && first_ok.is_none_or(|f| r.t < f.t))
        .count();
    let secs = |t: Option<f64>| match t {
        Some(t) => format!("{:.3} s", t - t_kill),
        None => "n/a".into(),
    };
    let cfg = lab.config();
    println!("\nfailover times:");
    if vip {
        println!(
            "  kill -> dead host fenced (pair removed)   {}",
            secs(detach.map(|e| e.t))
        );
    } else {
        println!(
            "  kill -> address given to the survivor     {}",
            secs(attach.map(|e| e.t))
        );
        println!(
            "  kill -> address taken from the dead host  {}",
            secs(detach.map(|e| e.t))
        );
    }
    if let (Some(a), Some(b)) = (last_ok, first_ok) {
        println!(
            "  client outage (last OK -> first OK)       {:.3} s, {failed} failed requests",
            b.t - a.t
        );
    }
    println!(
        "  (a peer is dead after {} x {:?} = {:?} without heartbeats, counted from its last one, up to\n   one interval before the kill; the rest is {})",
        cfg.dead_ratio,
        cfg.interval,
        cfg.dead_period(),
        if vip {
            "the gratuitous ARP reaching the client; no API call on that path"
        } else if lb {
            "the probe opening and the load balancer's next probe (every 100 ms here); no API call"
        } else {
            "the API calls and the route change"
        }
    );
}

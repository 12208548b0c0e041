//! Hostile traffic against running agents: with the holder settled, over 100 000 datagrams at
//! the holder's and a backup's heartbeat port from the lab's client namespace: random bytes,
//! truncated and oversized datagrams, other versions and groups, forged v2 heartbeats (a wrong
//! key, from the client's address or a peer's), fake "leaving" adverts (at the backup: the
//! holder's), replays of captured genuine heartbeats, and old-protocol datagrams from strangers
//! or forged from peers; all of it once against v2 agents and once with `--legacy-protocol`.
//!
//! Nothing may change: the simulated cloud's holder timeline, the alias, the agents' processes.
//! Every datagram must be counted under the drop reason it deserves (`exoip status --json`),
//! minus what the kernel itself dropped from a full socket buffer (counted apart), the agents'
//! logs must grow by a few rate-limited lines only, and their CPU time stays bounded. Needs
//! root, like the other lab tests. The sender paces itself on the receivers' socket queues
//! (`/proc/<pid>/net/udp6`): the point is what the agent does with every datagram, not how
//! many the kernel can discard.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use exoip::lab::netns::in_netns;
use exoip::lab::{unix_now, Lab, LabConfig, EIP, HEARTBEAT_PORT};
use exoip::wire;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

mod common;
use common::{check, config, patience, root_or_skip, start};

/// Hostile datagrams per test, split between the holder and a backup.
const DATAGRAMS: u64 = 100_000;
/// The sender waits while a receiver's socket holds more than this many bytes (its buffer is
/// about 200 KiB by default; the kernel counts each small datagram at about 1 KiB).
const RX_HIGH: u64 = 64 * 1024;
/// Datagrams between two looks at the receivers' queues.
const BURST: u64 = 32;
/// Log lines an agent may add during the flood and the dead period after it.
const MAX_LOG_LINES: usize = 100;
/// CPU time an agent may spend per hostile datagram it was sent (debug build): a generous
/// bound that only catches pathological work per datagram.
const MAX_CPU_PER_DATAGRAM: Duration = Duration::from_micros(500);

/// One flood at a time: two would share the 2 cores, and the CPU figures would be meaningless.
static ONE_FLOOD: Mutex<()> = Mutex::const_new(());

/// What each kind of hostile datagram is, and the drop label an agent must count it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hostile {
    /// Random bytes, 4 to 1200 of them, never starting like v2 or the old protocol.
    Noise,
    /// 0 to 3 bytes.
    Short,
    /// A genuine heartbeat cut short of the smallest datagram.
    Truncated,
    /// More than any heartbeat, still below the links' MTU.
    Oversize,
    /// A genuine heartbeat with another version byte.
    OtherVersion,
    /// A genuine heartbeat with another group id.
    OtherGroup,
    /// A peer's identity, priority 1 and master, signed with a wrong key.
    WrongKey,
    /// The same, from a peer's address.
    WrongKeySpoofed,
    /// "The peer is leaving" (at the backup: the holder is), signed with a wrong key, from
    /// the peer's address.
    FakeLeaving,
    /// A genuine heartbeat this receiver already accepted, from its sender's address.
    Replay,
    /// An old-protocol heartbeat for the elastic IP, priority 1, from the client.
    Legacy,
    /// An old-protocol heartbeat whose doubled priority byte disagrees.
    LegacyMalformed,
    /// An old-protocol heartbeat forged from a peer's address (a peer that speaks v2).
    LegacySpoofed,
}

impl Hostile {
    /// Share of the flood, in percent.
    const MIX: [(Hostile, u32); 13] = [
        (Hostile::Noise, 20),
        (Hostile::Short, 3),
        (Hostile::Truncated, 10),
        (Hostile::Oversize, 5),
        (Hostile::OtherVersion, 5),
        (Hostile::OtherGroup, 5),
        (Hostile::WrongKey, 10),
        (Hostile::WrongKeySpoofed, 10),
        (Hostile::FakeLeaving, 7),
        (Hostile::Replay, 15),
        (Hostile::Legacy, 5),
        (Hostile::LegacyMalformed, 2),
        (Hostile::LegacySpoofed, 3),
    ];

    fn pick(rng: &mut StdRng) -> Hostile {
        let mut n = rng.gen_range(0..100);
        for (h, share) in Self::MIX {
            if n < share {
                return h;
            }
            n -= share;
        }
        unreachable!("the shares add up to 100")
    }

    /// The drop label of the agent's status, with or without `--legacy-protocol`.
    fn label(self, legacy: bool) -> &'static str {
        match self {
            Hostile::Noise => "bad_magic",
            Hostile::Short | Hostile::Truncated => "truncated",
            Hostile::Oversize => "too_large",
            Hostile::OtherVersion => "bad_version",
            Hostile::OtherGroup => "unknown_group",
            Hostile::WrongKey | Hostile::WrongKeySpoofed | Hostile::FakeLeaving => "bad_mac",
            Hostile::Replay => "replayed",
            // Without the bridge, the old protocol is just not v2.
            Hostile::Legacy | Hostile::LegacyMalformed | Hostile::LegacySpoofed if !legacy => {
                "bad_magic"
            }
            Hostile::Legacy => "legacy_unknown_peer",
            Hostile::LegacyMalformed => "legacy_malformed",
            Hostile::LegacySpoofed => "legacy_from_v2_peer",
        }
    }
}

/// One receiver of the flood.
struct Target {
    host: usize,
    addr: SocketAddrV4,
    pid: u32,
    /// The peer whose address spoofed datagrams carry, and its genuine heartbeats as captured
    /// arriving here.
    peer: SocketAddrV4,
    captured: Vec<Vec<u8>>,
    /// Forged adverts for this receiver (wrong key): the peer's claim, and the peer leaving.
    forged: Vec<Vec<u8>>,
    leaving: Vec<Vec<u8>>,
}

/// A datagram that passes every check before the MAC, signed with a key the cluster does not
/// have: `node` claims the elastic IP at the best priority, or says it is leaving.
fn wrong_key_advert(node: &str, leaving: bool, salt: u64) -> Vec<u8> {
    let key = wire::AuthKey::from_bytes(b"not the key of this cluster").expect("long enough");
    let incarnation = (unix_now() * 1e6) as u64 + 1_000_000_000 + salt;
    let mut enc = wire::Encoder::new(
        key,
        wire::group_id(exoip::config::DEFAULT_GROUP),
        incarnation,
    );
    let advert = wire::Advert {
        node: node.to_string(),
        leaving,
        entries: vec![wire::Entry {
            ip: EIP.into(),
            priority: 1,
            state: if leaving {
                wire::IpState::Leaving
            } else {
                wire::IpState::Master
            },
            epoch: u64::MAX / 2 + salt,
        }],
    };
    enc.encode(&advert, (unix_now() * 1000.0) as u64)
        .expect("small advert")
}

/// An IPv4/UDP packet from `src` to `dst` for a raw socket (the kernel fills in the IP
/// checksum, id and length; the UDP length and checksum are ours).
fn udp4_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = Vec::with_capacity(20 + udp_len);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // RFC 768: one's complement sum of the pseudo-header, the UDP header and the data.
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.ip().octets());
    add(&dst.ip().octets());
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(&p[20..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&checksum.to_be_bytes());
    p
}

/// The heartbeat socket of process `pid` (port 12345, IPv4 or dual-stack): bytes queued for
/// reading, and datagrams the kernel dropped because the queue was full.
fn socket_queue(pid: u32) -> Result<(u64, u64)> {
    let port = format!(":{HEARTBEAT_PORT:04X}");
    for table in ["udp6", "udp"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ref ptr drops
            if fields.len() >= 13 && fields[1].ends_with(&port) {
                let rx = fields[4]
                    .split(':')
                    .nth(1)
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| anyhow!("queue field in {path}: {line}"))?;
                let drops = fields[12]
                    .parse()
                    .with_context(|| format!("drops field in {path}: {line}"))?;
                return Ok((rx, drops));
            }
        }
    }
    Err(anyhow!(
        "no socket on port {HEARTBEAT_PORT} in process {pid}"
    ))
}

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces: count fields after its closing parenthesis, where
    // field 3 (state) comes first; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1;
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(
        f.iter().sum::<u64>() as f64 / ticks,
    ))
}

fn log_lines(lab: &Lab, host: usize) -> usize {
    lab.log_tail(&lab.hosts()[host].name, usize::MAX)
        .lines()
        .count()
}

/// Counters of `exoip status --json`: received, and dropped by label.
fn counters(lab: &Lab, host: usize) -> Result<(u64, BTreeMap<String, u64>)> {
    let st = common::status(lab, host)?;
    let hb = &st["heartbeats"];
    let received = hb["received"]
        .as_u64()
        .ok_or_else(|| anyhow!("no heartbeats.received in {st}"))?;
    let dropped = serde_json::from_value(hb["dropped"].clone())
        .with_context(|| format!("heartbeats.dropped in {st}"))?;
    Ok((received, dropped))
}

/// What the sender did.
#[derive(Debug, Default)]
struct Sent {
    /// By target and label.
    expected: BTreeMap<(usize, &'static str), u64>,
    total: u64,
    took: Duration,
    /// Time spent waiting for the receivers to catch up.
    waited: Duration,
}

/// Sends `DATAGRAMS` hostile datagrams from the client namespace, alternating between the
/// targets, pacing on their socket queues. Runs on a blocking thread.
fn flood(client_ns: &str, targets: &[Target], legacy: bool) -> Result<Sent> {
    let udp = in_netns(client_ns, || {
        std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    })?;
    let raw = in_netns(client_ns, || {
        // IPPROTO_RAW implies IP_HDRINCL: we write the IP header, forging the source.
        socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(nix::libc::IPPROTO_RAW)),
        )
    })?;
    let mut rng = StdRng::seed_from_u64(0x000f_100d_5eed);
    let mut sent = Sent::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let prefix = &targets[0].captured[0];
    while sent.total < DATAGRAMS {
        if sent.total % BURST == 0 {
            let wait = Instant::now();
            while targets
                .iter()
                .map(|t| socket_queue(t.pid).map(|(rx, _)| rx))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .any(|rx| rx > RX_HIGH)
            {
                ensure!(Instant::now() < deadline, "the receivers stopped reading");
                std::thread::sleep(Duration::from_micros(200));
            }
            sent.waited += wait.elapsed();
        }
        let (ti, t) = {
            let i = (sent.total % targets.len() as u64) as usize;
            (i, &targets[i])
        };
        let kind = Hostile::pick(&mut rng);
        let mut from: Option<SocketAddrV4> = None;
        let payload: Vec<u8> = match kind {
            Hostile::Noise => {
                let len = if rng.gen_bool(0.9) {
                    rng.gen_range(4..=200)
                } else {
                    rng.gen_range(4..=wire::MAX_DATAGRAM)
                };
                let mut d = vec![0u8; len];
                rng.fill(&mut d[..]);
                while d[0] == b'E' || d[0] == 0x02 {
                    d[0] = rng.gen();
                }
                d
            }
            Hostile::Short => {
                let mut d = vec![0u8; rng.gen_range(0..=3)];
                rng.fill(&mut d[..]);
                d
            }
            Hostile::Truncated => prefix[..rng.gen_range(4..69)].to_vec(),
            Hostile::Oversize => {
                let mut d = prefix.clone();
                d.resize(rng.gen_range(wire::MAX_DATAGRAM + 1..=1472), 0);
                rng.fill(&mut d[prefix.len()..]);
                d
            }
            Hostile::OtherVersion => {
                let mut d = prefix.clone();
                d[4] = rng.gen_range(3..=255);
                d
            }
            Hostile::OtherGroup => {
                let mut d = prefix.clone();
                d[6] ^= rng.gen_range(1..=255);
                d
            }
            Hostile::WrongKey => t.forged[rng.gen_range(0..t.forged.len())].clone(),
            Hostile::WrongKeySpoofed => {
                from = Some(t.peer);
                t.forged[rng.gen_range(0..t.forged.len())].clone()
            }
            Hostile::FakeLeaving => {
                // Not from the holder's own address to the holder: the kernel drops packets
                // with a local source arriving from outside before any socket sees them.
                from = Some(t.peer);
                t.leaving[rng.gen_range(0..t.leaving.len())].clone()
            }
            Hostile::Replay => {
                from = Some(t.peer);
                t.captured[rng.gen_range(0..t.captured.len())].clone()
            }
            Hostile::Legacy | Hostile::LegacyMalformed | Hostile::LegacySpoofed => {
                let mut nic = [0u8; 16];
                rng.fill(&mut nic);
                let mut d = wire::encode_legacy(1, EIP, nic).to_vec();
                if rng.gen_bool(0.5) {
                    // The 40-byte form of later Go builds.
                    d.extend_from_slice(&nic);
                }
                if kind == Hostile::LegacyMalformed {
                    d[3] = 2;
                }
                if kind == Hostile::LegacySpoofed {
                    from = Some(t.peer);
                }
                d
            }
        };
        match from {
            None => {
                udp.send_to(&payload, t.addr)?;
            }
            Some(src) => {
                let to: socket2::SockAddr =
                    SocketAddr::V4(SocketAddrV4::new(*t.addr.ip(), 0)).into();
                raw.send_to(&udp4_packet(src, t.addr, &payload), &to)
                    .with_context(|| format!("spoofed datagram {src} -> {}", t.addr))?;
            }
        }
        *sent.expected.entry((ti, kind.label(legacy))).or_default() += 1;
        sent.total += 1;
    }
    sent.took = started.elapsed();
    Ok(sent)
}

/// The whole scenario on a settled lab; `legacy`: the agents run with `--legacy-protocol`.
async fn flood_changes_nothing(lab: &Lab, legacy: bool) -> Result<()> {
    let dead = lab.config().dead_period();
    let holder = lab.wait_settled(dead * 2, patience(lab) * 2).await?;
    let backup = (holder + 1) % lab.hosts().len();
    let hosts = lab.hosts().to_vec();
    let (h, b) = (&hosts[holder], &hosts[backup]);
    let timeline_before = lab.timeline()?;

    // Genuine heartbeats as each target receives them from the other.
    let interval = lab.config().interval;
    let (at_holder, at_backup) = tokio::join!(
        lab.capture_udp(&h.ns, b.ip, HEARTBEAT_PORT, 8, interval * 16),
        lab.capture_udp(&b.ns, h.ip, HEARTBEAT_PORT, 8, interval * 16),
    );
    // v2 only: under --legacy-protocol an old-protocol datagram may have gone out at start.
    let v2 = |c: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        c.into_iter()
            .filter(|d| d.starts_with(&wire::MAGIC))
            .collect()
    };
    let (at_holder, at_backup) = (v2(at_holder?), v2(at_backup?));
    ensure!(
        at_holder.len() >= 3 && at_backup.len() >= 3,
        "captured {} and {} heartbeats",
        at_holder.len(),
        at_backup.len()
    );
    // Let the last captured ones arrive before they are replayed.
    tokio::time::sleep(interval).await;

    let pid = |host: usize| {
        lab.agent_pid(host)
            .ok_or_else(|| anyhow!("no agent on {}", hosts[host].name))
    };
    let target = |host: usize, peer: usize, captured: Vec<Vec<u8>>| -> Result<Target> {
        let peer_id = &hosts[peer].instance_id;
        Ok(Target {
            host,
            addr: SocketAddrV4::new(hosts[host].ip, HEARTBEAT_PORT),
            pid: pid(host)?,
            peer: SocketAddrV4::new(hosts[peer].ip, HEARTBEAT_PORT),
            captured,
            forged: (0..16)
                .map(|i| wrong_key_advert(peer_id, false, i))
                .collect(),
            leaving: (0..16)
                .map(|i| wrong_key_advert(peer_id, true, i))
                .collect(),
        })
    };
    let targets = vec![
        target(holder, backup, at_holder)?,
        target(backup, holder, at_backup)?,
    ];

    let all: Vec<usize> = (0..hosts.len()).collect();
    let mut before = BTreeMap::new();
    for &i in &all {
        before.insert(
            i,
            (counters(lab, i)?, log_lines(lab, i), cpu_time(pid(i)?)?),
        );
    }
    let drops_before: Vec<u64> = targets
        .iter()
        .map(|t| socket_queue(t.pid).map(|q| q.1))
        .collect::<Result<_>>()?;
    let t0 = unix_now();

    // Flood on a blocking thread; meanwhile nobody else may come to hold the address.
    let client = lab.client_ns().to_string();
    let sender = tokio::task::spawn_blocking(move || {
        let sent = flood(&client, &targets, legacy);
        (sent, targets)
    });
    let mut holder_changes = Vec::new();
    while !sender.is_finished() {
        if lab.holders().await? != vec![holder] {
            holder_changes.push((unix_now() - t0, lab.describe_state()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sent, targets) = sender.await?;
    let sent = sent?;
    let flood_took = unix_now() - t0;
    // One more dead period for any delayed reaction, and for the counters to catch up.
    tokio::time::sleep(dead).await;
    let elapsed = unix_now() - t0;

    eprintln!(
        "{}: {} datagrams in {:.2?} ({:.0}/s; waited {:.2?} for the receivers)",
        if legacy {
            "legacy-protocol agents"
        } else {
            "v2 agents"
        },
        sent.total,
        sent.took,
        sent.total as f64 / sent.took.as_secs_f64(),
        sent.waited,
    );
    ensure!(
        holder_changes.is_empty(),
        "the holder changed: {holder_changes:?}"
    );
    for &i in &all {
        ensure!(
            lab.agent_running(i),
            "the agent on {} exited",
            hosts[i].name
        );
    }
    ensure!(
        lab.single_holder().await? == Some(holder),
        "{}",
        lab.describe_state()
    );
    ensure!(
        lab.aliases().await? == vec![holder],
        "{}",
        lab.describe_state()
    );
    let timeline = lab.timeline()?;
    ensure!(
        timeline.len() == timeline_before.len(),
        "the API saw changes: {:?}",
        &timeline[timeline_before.len()..]
    );

    let mut problems = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let name = &hosts[t.host].name;
        let ((received0, dropped0), _, _) = &before[&t.host];
        let (received, dropped) = counters(lab, t.host)?;
        let kernel_drops = socket_queue(t.pid)?.1.saturating_sub(drops_before[ti]);
        let delta = |label: &str| {
            let n = |m: &BTreeMap<String, u64>| m.get(label).copied().unwrap_or(0);
            n(&dropped).saturating_sub(n(dropped0))
        };
        let mut counted = 0;
        for ((_, label), &want) in sent.expected.iter().filter(|((i, _), _)| *i == ti) {
            let got = delta(label);
            counted += got;
            eprintln!("  {name}: {label:<22} sent {want:>6}, counted {got:>6}");
            if got > want || got + kernel_drops < want {
                problems.push(format!(
                    "{name}: {label}: sent {want}, counted {got} \
                     ({kernel_drops} dropped by the kernel)"
                ));
            }
        }
        let to_target: u64 = sent
            .expected
            .iter()
            .filter(|((i, _), _)| *i == ti)
            .map(|(_, n)| n)
            .sum();
        // Labels the flood does not produce: only the odd genuine probe reply may land there.
        let unexpected: u64 = dropped
            .keys()
            .filter(|l| !sent.expected.contains_key(&(ti, l.as_str())))
            .map(|l| delta(l))
            .sum();
        // Heartbeats taken as genuine: the peers' own, HEARTBEATS_PER_INTERVAL per interval each (with room for
        // timer jitter); a forged or replayed one let through would come by the thousand.
        let peers = hosts.len() as u64 - 1;
        let per_interval = exoip::election::HEARTBEATS_PER_INTERVAL as f64;
        let genuine = peers * ((elapsed / interval.as_secs_f64() * per_interval * 1.25) as u64 + 5);
        let took = received.saturating_sub(*received0);
        eprintln!(
            "  {name}: {to_target} sent, {counted} counted, {kernel_drops} dropped by the kernel, \
             {unexpected} under other labels; {took} heartbeats accepted in {elapsed:.1} s \
             (genuine at most {genuine})"
        );
        if counted + kernel_drops < to_target || unexpected > 10 {
            problems.push(format!(
                "{name}: the drop counters do not account for the flood"
            ));
        }
        if took > genuine {
            problems.push(format!(
                "{name}: {took} heartbeats accepted, genuine ones are at most {genuine}"
            ));
        }
    }

    for &i in &all {
        let name = &hosts[i].name;
        let (_, lines0, cpu0) = &before[&i];
        let lines = log_lines(lab, i).saturating_sub(*lines0);
        let cpu = cpu_time(pid(i)?)?.saturating_sub(*cpu0);
        let datagrams = (sent.total / 2) * u64::from(targets.iter().any(|t| t.host == i));
        let per = if datagrams > 0 {
            format!(
                ", {:.1} µs per datagram",
                cpu.as_secs_f64() * 1e6 / datagrams as f64
            )
        } else {
            String::new()
        };
        eprintln!(
            "  {name}: {lines} log lines added, CPU {:.2} s in {elapsed:.1} s{per}",
            cpu.as_secs_f64()
        );
        if lines >= MAX_LOG_LINES {
            problems.push(format!("{name}: {lines} log lines during the flood"));
        }
        let bound = MAX_CPU_PER_DATAGRAM * datagrams as u32 + Duration::from_secs(2);
        if cpu > bound {
            problems.push(format!("{name}: CPU {cpu:?} over {bound:?}"));
        }
    }
    for t in &targets {
        let log = lab.log_tail(&hosts[t.host].name, 400);
        if !log.contains("dropped a heartbeat") {
            problems.push(format!("{}: no drop warning at all", hosts[t.host].name));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("flood: {flood_took:.1} s, nothing changed");
    Ok(())
}

fn lab_config(legacy: bool) -> LabConfig {
    let mut cfg = config();
    if legacy {
        cfg.hosts = 2;
        cfg.extra_agent_args = vec!["--legacy-protocol".into()];
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_datagrams_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    let _one = ONE_FLOOD.lock().await;
    let lab = start(lab_config(false)).await;
    check(
        &lab,
        Duration::from_secs(240),
        flood_changes_nothing(&lab, false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_changes_nothing_with_the_legacy_protocol() {
    if !root_or_skip() {
        return;
    }
    let _one = ONE_FLOOD.lock().await;
    let lab = start(lab_config(true)).await;
    check(
        &lab,
        Duration::from_secs(240),
        flood_changes_nothing(&lab, true),
    )
    .await;
}

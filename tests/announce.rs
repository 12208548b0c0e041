//! Announcing a moved address, between two network namespaces joined by a veth pair: B's
//! neighbour entry for the address points at a wrong MAC until A adds the address and announces
//! it (gratuitous ARP, unsolicited neighbour advertisement), then at A's. Also the frames on the
//! wire, the default-route lookup and bad input. Needs root.

use std::future::Future;
use std::io::{self, Read};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use exoip::alias::{Alias, AliasError};
use exoip::announce::{
    announce, arp_announcement, default_route_interface, neighbour_advertisement, AnnounceError,
    Mac,
};
use exoip::lab::netns;
use nix::libc;
use socket2::{Domain, Protocol, Socket, Type};

mod common;
use common::root_or_skip;

/// Bound of every step run inside a namespace.
const LIMIT: Duration = Duration::from_secs(15);
const MAC_A: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
const MAC_B: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
/// What B believes before the announcement: the old holder.
const WRONG_MAC: &str = "02:00:00:00:00:99";
const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
/// A capture ends this long after the last frame once it is stopped.
const QUIET: Duration = Duration::from_millis(100);

fn mac_text(mac: Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Runs a program to completion within 10 s and returns its stdout; panics on failure.
fn run(program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{program} {}` timed out", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// Uniquely named namespaces, deleted (with their interfaces) when this is dropped, also when a
/// test panics; a crashed run's are removed by `netns::cleanup_leftovers` (same naming scheme).
struct Namespaces {
    id: String,
    names: Vec<String>,
}

impl Namespaces {
    fn new() -> Self {
        Self {
            id: netns::allocate_id(),
            names: Vec::new(),
        }
    }

    fn add(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.id);
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            netns::delete_namespace(ns);
        }
        netns::release_id(&self.id);
    }
}

/// Writes sysctls (`net/...` paths under /proc/sys) inside `ns`.
fn sysctls(ns: &str, settings: &[(&str, &str)]) {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (format!("/proc/sys/{k}"), v.to_string()))
        .collect();
    netns::in_netns(ns, move || {
        for (path, value) in &settings {
            std::fs::write(path, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Runs `body` on a thread of its own inside `ns`, with a runtime of its own, within LIMIT.
fn inside<T, F, Fut>(ns: &str, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = mpsc::channel();
    let name = ns.to_owned();
    std::thread::spawn(move || {
        let result = netns::in_netns(&name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async { tokio::time::timeout(LIMIT, body()).await })
                .map_err(|_| io::Error::other(format!("took more than {LIMIT:?}")))
        });
        let _ = tx.send(result.map_err(|e| format!("{e:#}")));
    });
    // The inner timeout cannot interrupt a blocking call: bound from outside too.
    match rx.recv_timeout(LIMIT + Duration::from_secs(5)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the thread inside {ns} did not finish within {LIMIT:?}"),
    }
}

/// An Ethernet interface `dev` in `ns` (one end of a veth pair whose other end, `<dev>p`, is up
/// in `ns` too, so `dev` has a carrier once up): the dummy driver may not be available.
fn ethernet(ns: &str, dev: &str) {
    let peer = format!("{dev}p");
    ip(&[
        "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", &peer,
    ]);
    ip(&["-n", ns, "link", "set", &peer, "up"]);
}

/// A: 192.0.2.1/24 on `va` (MAC_A); B: 192.0.2.2/24 on `vb` (MAC_B), the other end of the veth.
/// Neither side announces anything by itself, and B accepts what it is told.
struct Pair {
    a: String,
    b: String,
    _namespaces: Namespaces,
}

impl Pair {
    fn new() -> Self {
        let mut namespaces = Namespaces::new();
        let a = namespaces.add("a");
        let b = namespaces.add("b");
        ip(&[
            "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        ip(&["-n", &a, "link", "set", "va", "address", &mac_text(MAC_A)]);
        ip(&["-n", &b, "link", "set", "vb", "address", &mac_text(MAC_B)]);
        sysctls(
            &a,
            &[
                ("net/ipv4/conf/va/arp_notify", "0"),
                ("net/ipv6/conf/all/ndisc_notify", "0"),
                ("net/ipv6/conf/va/ndisc_notify", "0"),
            ],
        );
        // locktime stays at its default (1 s): a gratuitous ARP must override the entry
        // although B changed it just before.
        sysctls(
            &b,
            &[
                ("net/ipv4/conf/all/drop_gratuitous_arp", "0"),
                ("net/ipv4/conf/vb/drop_gratuitous_arp", "0"),
                ("net/ipv6/conf/all/drop_unsolicited_na", "0"),
                ("net/ipv6/conf/vb/drop_unsolicited_na", "0"),
            ],
        );
        ip(&["-n", &a, "addr", "add", "192.0.2.1/24", "dev", "va"]);
        ip(&["-n", &b, "addr", "add", "192.0.2.2/24", "dev", "vb"]);
        ip(&["-n", &a, "link", "set", "va", "up"]);
        ip(&["-n", &b, "link", "set", "vb", "up"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(ip(&["-n", &a, "link", "show", "va"]).contains("LOWER_UP")
            && ip(&["-n", &b, "link", "show", "vb"]).contains("LOWER_UP"))
        {
            assert!(Instant::now() < deadline, "the veth has no carrier");
            std::thread::sleep(Duration::from_millis(10));
        }
        Pair {
            a,
            b,
            _namespaces: namespaces,
        }
    }

    /// The MAC B's neighbour table has for `vip` on vb.
    fn b_thinks(&self, vip: &str) -> Option<String> {
        let out = ip(&["-n", &self.b, "neigh", "show", vip, "dev", "vb"]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }
}

/// Every frame seen in a namespace (all interfaces, both directions) until stopped.
struct Capture {
    stop: Arc<AtomicBool>,
    frames: mpsc::Receiver<Result<Vec<Vec<u8>>, String>>,
}

impl Capture {
    fn start(ns: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, frames) = mpsc::channel();
        let (name, stopped) = (ns.to_owned(), stop.clone());
        std::thread::spawn(move || {
            let result = netns::in_netns(&name, move || {
                let all = i32::from((libc::ETH_P_ALL as u16).to_be());
                let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(all)))?;
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                let _ = ready_tx.send(());
                let deadline = Instant::now() + LIMIT;
                let mut frames = Vec::new();
                let mut buf = [0u8; 2048];
                // Once stopped, still read what is queued: until nothing came for QUIET.
                let mut quiet_since = None;
                while Instant::now() < deadline {
                    match (&socket).read(&mut buf) {
                        Ok(n) => {
                            frames.push(buf[..n].to_vec());
                            quiet_since = None;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if stopped.load(Ordering::SeqCst) && since.elapsed() >= QUIET {
                                break;
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(frames)
            });
            let _ = tx.send(result.map_err(|e| format!("{e:#}")));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the capture did not start");
        Capture { stop, frames }
    }

    fn stop(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        match self.frames.recv_timeout(LIMIT + Duration::from_secs(5)) {
            Ok(Ok(frames)) => frames,
            Ok(Err(e)) => panic!("capture failed: {e}"),
            Err(_) => panic!("the capture did not stop"),
        }
    }
}

/// The announcement frames among `frames`, checked field by field.
fn announcements(frames: &[Vec<u8>], vip: IpAddr) -> usize {
    let from_a = frames.iter().filter(|f| f.len() >= 14 && f[6..12] == MAC_A);
    match vip {
        IpAddr::V4(v4) => from_a
            .filter(|f| f[12..14] == [0x08, 0x06])
            .inspect(|f| {
                assert_eq!(f[0..6], [0xff; 6], "not broadcast: {f:02x?}");
                assert!(f.len() >= 42, "short ARP frame: {f:02x?}");
                assert_eq!(f[14..42], arp_announcement(MAC_A, v4), "{f:02x?}");
            })
            .count(),
        IpAddr::V6(v6) => from_a
            .filter(|f| f[12..14] == [0x86, 0xdd] && f.len() > 54 && f[20] == 58 && f[54] == 136)
            .inspect(|f| {
                assert_eq!(f[0..6], [0x33, 0x33, 0, 0, 0, 1], "{f:02x?}");
                assert_eq!(f[21], 255, "hop limit: {f:02x?}");
                assert_eq!(f[22..38], v6.octets(), "source: {f:02x?}");
                let all_nodes: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
                assert_eq!(f[38..54], all_nodes.octets(), "destination: {f:02x?}");
                assert_eq!(f.len(), 54 + 32, "{f:02x?}");
                let mut na = f[54..].to_vec();
                assert_ne!(na[2..4], [0, 0], "no checksum: {f:02x?}");
                na[2..4].copy_from_slice(&[0, 0]);
                assert_eq!(na, neighbour_advertisement(MAC_A, v6), "{f:02x?}");
            })
            .count(),
    }
}

/// B has a stale entry for `vip` at the old holder's MAC; A adds the address (which by
/// itself tells B nothing), then announces it: B's entry follows, from exactly `count` frames.
fn moves_the_neighbour_entry(vip_text: &'static str) {
    let pair = Pair::new();
    let vip: IpAddr = vip_text.parse().unwrap();
    ip(&[
        "-n", &pair.b, "neigh", "replace", vip_text, "lladdr", WRONG_MAC, "dev", "vb", "nud",
        "stale",
    ]);
    assert_eq!(pair.b_thinks(vip_text).as_deref(), Some(WRONG_MAC));
    let capture = Capture::start(&pair.b);

    inside(&pair.a, move || async move {
        let alias = Alias::with_device("va").await.unwrap();
        assert!(alias.add(vip).await.unwrap());
        assert!(alias.has(vip).await.unwrap());
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pair.b_thinks(vip_text).as_deref(),
        Some(WRONG_MAC),
        "B learnt the address before any announcement"
    );

    let (count, gap) = (3, Duration::from_millis(150));
    let took = inside(&pair.a, move || async move {
        let start = Instant::now();
        announce("va", vip, count, gap).await.unwrap();
        start.elapsed()
    });
    assert!(took >= gap * (count - 1), "announced in {took:?}");
    assert!(
        took < gap * (count - 1) + Duration::from_secs(5),
        "{took:?}"
    );

    let want = mac_text(MAC_A);
    let deadline = Instant::now() + Duration::from_secs(3);
    while pair.b_thinks(vip_text).as_deref() != Some(want.as_str()) {
        assert!(
            Instant::now() < deadline,
            "B still has {:?} for {vip}, wants {want}",
            pair.b_thinks(vip_text)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames = capture.stop();
    assert_eq!(
        announcements(&frames, vip),
        count as usize,
        "{} frames seen",
        frames.len()
    );
}

#[test]
fn gratuitous_arp_moves_the_neighbour_entry() {
    if !root_or_skip() {
        return;
    }
    moves_the_neighbour_entry(VIP4);
}

#[test]
fn unsolicited_advertisement_moves_the_neighbour_entry() {
    if !root_or_skip() {
        return;
    }
    moves_the_neighbour_entry(VIP6);
}

fn find_default(ns: &str) -> Result<String, AnnounceError> {
    inside(ns, || async { default_route_interface().await })
}

#[test]
fn default_route_interface_follows_the_main_table() {
    if !root_or_skip() {
        return;
    }
    let mut namespaces = Namespaces::new();
    let ns = namespaces.add("r");
    for dev in ["d4a", "d4b", "d6"] {
        ethernet(&ns, dev);
        ip(&["-n", &ns, "link", "set", dev, "up"]);
    }
    let none = |what: &str| match find_default(&ns) {
        Err(AnnounceError::NoDefaultRoute) => {}
        other => panic!("{what}: {other:?}"),
    };
    none("no route at all");
    ip(&["-n", &ns, "route", "add", "198.51.100.0/24", "dev", "d4a"]);
    ip(&["-n", &ns, "route", "add", "unreachable", "default"]);
    ip(&[
        "-n", &ns, "route", "add", "default", "dev", "d4a", "table", "100",
    ]);
    none("only an unreachable default and one outside the main table");
    assert_eq!(
        AnnounceError::NoDefaultRoute.to_string(),
        "no default route (IPv4 or IPv6) in this network namespace"
    );

    ip(&[
        "-n", &ns, "-6", "route", "add", "default", "dev", "d6", "metric", "100",
    ]);
    assert_eq!(
        find_default(&ns).unwrap(),
        "d6",
        "IPv6 when there is no IPv4"
    );
    ip(&[
        "-n", &ns, "route", "add", "default", "dev", "d4a", "metric", "200",
    ]);
    assert_eq!(find_default(&ns).unwrap(), "d4a", "IPv4 first");
    ip(&[
        "-n", &ns, "route", "add", "default", "dev", "d4b", "metric", "100",
    ]);
    assert_eq!(find_default(&ns).unwrap(), "d4b", "lowest metric first");
}

#[test]
fn bad_input_gives_clear_errors() {
    if !root_or_skip() {
        return;
    }
    let mut namespaces = Namespaces::new();
    let ns = namespaces.add("x");
    ethernet(&ns, "d0");
    ip(&["-n", &ns, "link", "set", "d0", "up"]);
    ethernet(&ns, "d1"); // stays down
    ethernet(&ns, "d2");
    sysctls(&ns, &[("net/ipv6/conf/d2/disable_ipv6", "1")]);
    ip(&["-n", &ns, "link", "set", "d2", "up"]);

    let gap = Duration::from_millis(10);
    let errors = inside(&ns, move || async move {
        let mut errors = Vec::new();
        for (dev, addr) in [
            ("nosuch0", VIP4),
            ("lo", VIP4),
            ("lo", VIP6),
            ("d0", "::ffff:192.0.2.100"),
            ("d0", "224.0.0.1"),
            ("d0", "ff02::1"),
            ("d0", "127.0.0.1"),
            ("d0", VIP6),
            ("d1", VIP4),
            ("d2", VIP6),
        ] {
            let e = announce(dev, addr.parse().unwrap(), 2, gap)
                .await
                .expect_err(&format!("{addr} on {dev}"));
            errors.push((dev, addr, e));
        }
        // The device and the address are fine: a check without sending, then real sends.
        announce("d0", VIP4.parse().unwrap(), 0, gap).await.unwrap();
        announce("d0", VIP4.parse().unwrap(), 2, gap).await.unwrap();
        errors
    });

    for (dev, ip, e) in &errors {
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot announce {ip} on {dev}: ")),
            "{text}"
        );
    }
    let kinds: Vec<&str> = errors
        .iter()
        .map(|(_, _, e)| match e {
            AnnounceError::Device { source, .. }
                if matches!(**source, AliasError::NoDevice { .. }) =>
            {
                "no device"
            }
            AnnounceError::NoMac { .. } => "no mac",
            AnnounceError::BadAddress { .. } => "bad address",
            AnnounceError::NotAssigned { .. } => "not assigned",
            AnnounceError::Down { .. } => "down",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "no device",
            "no mac",
            "no mac",
            "bad address",
            "bad address",
            "bad address",
            "bad address",
            "not assigned",
            "down",
            "not assigned",
        ]
    );
    assert_eq!(
        errors[1].2.to_string(),
        "cannot announce 192.0.2.100 on lo: it has no Ethernet MAC address (link type LOOPBACK)"
    );
    assert!(
        errors[3].2.to_string().contains("IPv4-mapped"),
        "{}",
        errors[3].2
    );
}

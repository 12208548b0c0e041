//! Puts an elastic IP on a local device (the loopback by default) as a /32 or /128 address via
//! rtnetlink, idempotently, never touching any other address.
//!
//! The netlink socket lives in the network namespace of the thread that called `new`, which is
//! what lets the tests (and the lab) work inside their own namespaces.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlag, AddressHeaderFlag, AddressMessage,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

pub const LOOPBACK: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("network device {device:?} not found")]
    NoDevice { device: String },
    #[error("cannot look up network device {device:?}: {detail}")]
    Lookup { device: String, detail: String },
    #[error("{ip} is not a unicast address, it cannot be an alias")]
    NotUnicast { ip: IpAddr },
    #[error("cannot {op} {ip} on {device}: permission denied: needs CAP_NET_ADMIN")]
    PermissionDenied {
        op: &'static str,
        ip: IpAddr,
        device: String,
    },
    #[error("cannot {op} {ip} on {device}: {detail}")]
    Failed {
        op: &'static str,
        ip: IpAddr,
        device: String,
        detail: String,
    },
}

/// The elastic IP's presence on one device.
pub struct Alias {
    handle: Handle,
    device: String,
    index: u32,
    connection: JoinHandle<()>,
}

impl Drop for Alias {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        // The kernel reports a negative errno.
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(m.raw_code().wrapping_neg())),
        _ => None,
    }
}

pub(crate) fn detail(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

impl Alias {
    /// Must run inside a tokio runtime: the netlink connection is a task of its own.
    pub async fn new() -> Result<Self, AliasError> {
        Self::with_device(LOOPBACK).await
    }

    pub async fn with_device(device: &str) -> Result<Self, AliasError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AliasError::Connect)?;
        let connection = tokio::spawn(conn);
        // Constructed before the lookup so that a failed lookup also aborts the task.
        let mut alias = Self {
            handle,
            device: device.to_owned(),
            index: 0,
            connection,
        };
        alias.index = find_link(&alias.handle, device).await?.header.index;
        Ok(alias)
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Ok(false) when the address was already there (adopted as is, never duplicated).
    pub async fn add(&self, ip: IpAddr) -> Result<bool, AliasError> {
        check_unicast(ip)?;
        let mut req = self.handle.address().add(self.index, ip, host_prefix(ip));
        let msg = req.message_mut();
        // rtnetlink sets IFA_BROADCAST to the address itself for a /32, which makes the kernel
        // install a spurious "broadcast <ip>" route next to the local one; `ip addr add` sends
        // no broadcast either.
        msg.attributes
            .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        if ip.is_ipv6() {
            // Usable at once instead of after duplicate address detection (which matters on a
            // NIC; the loopback skips it anyway).
            msg.header.flags.push(AddressHeaderFlag::Nodad);
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(false),
            Err(e) => Err(self.error("add", ip, e)),
        }
    }

    /// Ok(false) when the address was not there.
    pub async fn remove(&self, ip: IpAddr) -> Result<bool, AliasError> {
        check_unicast(ip)?;
        // The kernel deletes only the address matching device, address and prefix length
        // together, so an operator's same address with another prefix (or on another device)
        // survives; a /32 is never a primary with secondaries, so none go with it either.
        let mut msg = AddressMessage::default();
        msg.header.family = family(ip);
        msg.header.prefix_len = host_prefix(ip);
        msg.header.index = self.index;
        msg.attributes.push(AddressAttribute::Address(ip));
        msg.attributes.push(AddressAttribute::Local(ip));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(Errno::EADDRNOTAVAIL | Errno::ENOENT)) => Ok(false),
            Err(e) => Err(self.error("remove", ip, e)),
        }
    }

    pub async fn has(&self, ip: IpAddr) -> Result<bool, AliasError> {
        check_unicast(ip)?;
        let mut req = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .set_prefix_length_filter(host_prefix(ip))
            .set_address_filter(ip);
        req.message_mut().header.family = family(ip);
        let mut found = false;
        let mut stream = req.execute();
        // Read to the end rather than stop at the first match, so no reply is left unread.
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| self.error("look up", ip, e))?
        {
            found |= !tentative(&msg);
        }
        Ok(found)
    }

    fn error(&self, op: &'static str, ip: IpAddr, e: rtnetlink::Error) -> AliasError {
        let device = self.device.clone();
        match errno(&e) {
            Some(Errno::EPERM | Errno::EACCES) => AliasError::PermissionDenied { op, ip, device },
            Some(Errno::ENODEV) => AliasError::NoDevice { device },
            _ => AliasError::Failed {
                op,
                ip,
                device,
                detail: detail(&e),
            },
        }
    }
}

/// The link (index, type, flags, link-layer address...) of `device`, looked up by name in the
/// namespace of `handle`'s socket. Shared with `announce`, which also needs the MAC address.
pub(crate) async fn find_link(handle: &Handle, device: &str) -> Result<LinkMessage, AliasError> {
    let mut links = handle.link().get().match_name(device.to_owned()).execute();
    let lookup = |e: rtnetlink::Error| match errno(&e) {
        Some(Errno::ENODEV) => AliasError::NoDevice {
            device: device.to_owned(),
        },
        _ => AliasError::Lookup {
            device: device.to_owned(),
            detail: detail(&e),
        },
    };
    let link = links.try_next().await.map_err(lookup)?;
    // A non-dump request has a single answer; draining keeps the connection quiet about
    // replies nobody reads.
    while links.try_next().await.map_err(lookup)?.is_some() {}
    link.ok_or_else(|| AliasError::NoDevice {
        device: device.to_owned(),
    })
}

/// An IPv6 address still in duplicate address detection, or that failed it, cannot be used
/// as a source or destination yet, so it does not count as held.
fn tentative(msg: &AddressMessage) -> bool {
    let header = msg.header.flags.iter().any(|f| {
        matches!(
            f,
            AddressHeaderFlag::Tentative | AddressHeaderFlag::Dadfailed
        )
    });
    let attr = msg.attributes.iter().any(|a| match a {
        AddressAttribute::Flags(fs) => fs
            .iter()
            .any(|f| matches!(f, AddressFlag::Tentative | AddressFlag::Dadfailed)),
        _ => false,
    });
    header || attr
}

fn check_unicast(ip: IpAddr) -> Result<(), AliasError> {
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(AliasError::NotUnicast { ip });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::CloneFlags;
    use std::future::Future;
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    const LIMIT: Duration = Duration::from_secs(20);

    /// Runs `body` in a fresh network namespace owned by a dedicated thread, so the host's
    /// addresses are never touched and the namespace vanishes with the thread, even on panic.
    fn in_netns<F, Fut>(body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (done_tx, done_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) failed: these tests need root");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(LIMIT, body())
                    .await
                    .expect("test body timed out");
            });
            let _ = done_tx.send(());
        });
        // The in-runtime timeout cannot interrupt blocking calls (a hung `ip`): bound from
        // outside too. A panic drops the sender, which ends the wait at once.
        let finished = done_rx.recv_timeout(LIMIT + Duration::from_secs(5));
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
        if finished.is_err() {
            panic!("test thread did not finish within {LIMIT:?}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn lo_up(a: &Alias) {
        a.handle
            .link()
            .set(a.index)
            .up()
            .execute()
            .await
            .expect("cannot bring lo up");
    }

    /// Every (address, prefix length) on the alias's device.
    async fn addresses(a: &Alias) -> Vec<(IpAddr, u8)> {
        let msgs: Vec<AddressMessage> = a
            .handle
            .address()
            .get()
            .set_link_index_filter(a.index)
            .execute()
            .try_collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for m in msgs {
            let addr = m.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(x) => Some(*x),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Address(x) => Some(*x),
                    _ => None,
                })
            });
            out.push((addr.unwrap(), m.header.prefix_len));
        }
        out.sort();
        out
    }

    fn count(addrs: &[(IpAddr, u8)], ip: IpAddr) -> usize {
        addrs.iter().filter(|(a, _)| *a == ip).count()
    }

    /// Runs `ip` with `args`, after proving it runs in this thread's namespace and not in the
    /// host's: a child inherits the namespace of the thread that forks it, not of the process.
    fn ip_cmd(args: &[&str]) {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let host = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(mine, host, "the test thread is not in its own namespace");
        let out = Command::new("readlink")
            .arg("/proc/self/ns/net")
            .output()
            .unwrap();
        let child = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            child.trim(),
            mine.to_str().unwrap(),
            "a child would run in another namespace"
        );

        let status = Command::new("ip")
            .args(args)
            .status()
            .expect("cannot run ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    #[test]
    fn add_v4_then_has() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            assert_eq!(a.device(), "lo");
            assert!(!a.has(ip("192.0.2.1")).await.unwrap());
            assert!(a.add(ip("192.0.2.1")).await.unwrap());
            assert!(a.has(ip("192.0.2.1")).await.unwrap());
            assert!(!a.has(ip("192.0.2.2")).await.unwrap());
            assert_eq!(addresses(&a).await, vec![(ip("192.0.2.1"), 32)]);
        });
    }

    #[test]
    fn no_spurious_broadcast_route() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            lo_up(&a).await;
            a.add(ip("192.0.2.1")).await.unwrap();
            let out = Command::new("ip")
                .args(["-4", "route", "show", "table", "local"])
                .output()
                .unwrap();
            let routes = String::from_utf8(out.stdout).unwrap();
            assert!(routes.contains("local 192.0.2.1 "), "{routes}");
            assert!(!routes.contains("broadcast 192.0.2.1 "), "{routes}");
        });
    }

    #[test]
    fn add_twice_adopts() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            assert!(a.add(ip("192.0.2.1")).await.unwrap());
            assert!(!a.add(ip("192.0.2.1")).await.unwrap());
            assert_eq!(count(&addresses(&a).await, ip("192.0.2.1")), 1);
        });
    }

    #[test]
    fn remove_then_remove_again() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            assert!(!a.remove(ip("192.0.2.1")).await.unwrap());
            a.add(ip("192.0.2.1")).await.unwrap();
            assert!(a.remove(ip("192.0.2.1")).await.unwrap());
            assert!(!a.has(ip("192.0.2.1")).await.unwrap());
            assert!(!a.remove(ip("192.0.2.1")).await.unwrap());
            assert_eq!(addresses(&a).await, vec![]);
        });
    }

    #[test]
    fn v6_host_address() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            lo_up(&a).await;
            let v6 = ip("2001:db8::1");
            assert!(a.add(v6).await.unwrap());
            assert!(a.has(v6).await.unwrap());
            assert!(!a.add(v6).await.unwrap());
            let addrs = addresses(&a).await;
            assert!(addrs.contains(&(v6, 128)), "{addrs:?}");
            assert_eq!(count(&addrs, v6), 1);
            assert!(a.remove(v6).await.unwrap());
            assert!(!a.has(v6).await.unwrap());
            assert!(!a.remove(v6).await.unwrap());
            assert!(addresses(&a).await.contains(&(ip("::1"), 128)));
        });
    }

    #[test]
    fn preexisting_address_is_adopted() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            ip_cmd(&["addr", "add", "192.0.2.7/32", "dev", "lo"]);
            ip_cmd(&["-6", "addr", "add", "2001:db8::7/128", "dev", "lo", "nodad"]);
            for x in [ip("192.0.2.7"), ip("2001:db8::7")] {
                assert!(a.has(x).await.unwrap());
                assert!(!a.add(x).await.unwrap());
                assert_eq!(count(&addresses(&a).await, x), 1);
                assert!(a.remove(x).await.unwrap());
                assert!(!a.has(x).await.unwrap());
            }
        });
    }

    #[test]
    fn remove_leaves_other_addresses_alone() {
        in_netns(|| async {
            let a = Alias::new().await.unwrap();
            lo_up(&a).await;
            ip_cmd(&["addr", "add", "203.0.113.10/24", "dev", "lo"]);
            // The operator holds the same address with another prefix: not ours.
            ip_cmd(&["addr", "add", "198.51.100.5/24", "dev", "lo"]);
            assert!(!a.has(ip("198.51.100.5")).await.unwrap());
            assert!(!a.remove(ip("198.51.100.5")).await.unwrap());
            assert!(a.add(ip("198.51.100.5")).await.unwrap());
            a.add(ip("192.0.2.1")).await.unwrap();
            a.add(ip("192.0.2.2")).await.unwrap();
            a.add(ip("2001:db8::1")).await.unwrap();
            let before = addresses(&a).await;

            assert!(a.remove(ip("192.0.2.1")).await.unwrap());
            assert!(a.remove(ip("198.51.100.5")).await.unwrap());
            let mut want = before.clone();
            want.retain(|x| *x != (ip("192.0.2.1"), 32) && *x != (ip("198.51.100.5"), 32));
            assert_eq!(addresses(&a).await, want);
            for kept in [
                (ip("127.0.0.1"), 8),
                (ip("::1"), 128),
                (ip("192.0.2.2"), 32),
                (ip("203.0.113.10"), 24),
                (ip("198.51.100.5"), 24),
                (ip("2001:db8::1"), 128),
            ] {
                assert!(want.contains(&kept), "{kept:?} missing from {want:?}");
            }
        });
    }

    #[test]
    fn missing_device_and_bad_addresses() {
        in_netns(|| async {
            match Alias::with_device("nosuchdev0").await {
                Err(AliasError::NoDevice { device }) => assert_eq!(device, "nosuchdev0"),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("a missing device was found"),
            }
            let a = Alias::with_device("lo").await.unwrap();
            for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
                assert!(matches!(
                    a.add(ip(bad)).await,
                    Err(AliasError::NotUnicast { .. })
                ));
            }
            assert_eq!(addresses(&a).await, vec![]);
        });
    }

    #[test]
    fn errors_name_the_address_and_the_cause() {
        let e = AliasError::PermissionDenied {
            op: "add",
            ip: ip("192.0.2.1"),
            device: "lo".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot add 192.0.2.1 on lo: permission denied: needs CAP_NET_ADMIN"
        );
    }
}

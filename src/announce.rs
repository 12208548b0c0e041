//! Tells the LAN that an address now lives on this host, so that neighbours (the other hosts,
//! the router, clients on the same L2) update their ARP / neighbour caches at once instead of
//! sending to the old holder until their entry goes stale: the "VIP mode" counterpart of moving
//! an elastic IP (OpenStack allowed-address-pairs, Azure secondary private IPs), like
//! keepalived's `garp_master_*` or `arping -U`.
//!
//! - IPv4: gratuitous ARP, an ARP *request* broadcast on the interface with sender IP = target
//!   IP = the address and sender MAC = the interface's MAC. A request, not a reply, because that
//!   is what keepalived (`garp_master_*`) and `arping -U` send by default; replies are
//!   `arping -A`'s opt-in for stacks that only learn from replies. Linux takes either as
//!   gratuitous (a reply only if its target MAC is the sender's) and then overrides its entry
//!   even within `locktime`. The target MAC is the broadcast address, as keepalived and
//!   `arping -U` put it (RFC 5227 receivers ignore it).
//! - IPv6: unsolicited neighbour advertisement (RFC 4861 §7.2.6) to all nodes (ff02::1), with
//!   the Override flag and the interface's MAC as target link-layer address, from the address
//!   itself: it must be assigned and not tentative (`Alias::add` adds IPv6 with NODAD).
//!
//! Every socket (netlink and packet) is created in the network namespace of the calling thread,
//! before the first await. Needs CAP_NET_RAW and nothing else.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlag, RouteHeader, RouteMessage, RouteType,
};
use nix::libc;
use rtnetlink::{Handle, IpVersion};
use socket2::{Domain, Protocol, SockAddr, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use crate::alias::{self, AliasError};

/// Announcements per move: one is enough when nothing is lost; the repeats cover a lost frame
/// or a neighbour (switch, router) busy at the moment of the first.
pub const DEFAULT_COUNT: u32 = 3;
/// Between two announcements: 3 × 250 ms puts the last one at 500 ms, long after a transient
/// loss and still well within a failover budget.
pub const DEFAULT_GAP: Duration = Duration::from_millis(250);

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// Length of an ARP packet for IPv4 over Ethernet (without the Ethernet header).
pub const ARP_LEN: usize = 28;
/// Length of a neighbour advertisement with one target link-layer address option (without the
/// IPv6 header).
pub const NA_LEN: usize = 32;

const ARPHRD_ETHER: u16 = 1;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST_MAC: Mac = [0xff; 6];

const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Flags of an advertisement: Router 0x80, Solicited 0x40, Override 0x20 (first byte).
const NA_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// RFC 4861 receivers drop neighbour discovery that may have crossed a router.
const ND_HOP_LIMIT: u32 = 255;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("cannot open a netlink socket: {0}")]
    Netlink(#[source] io::Error),
    #[error("cannot look up the default route: {detail}")]
    RouteLookup { detail: String },
    #[error("no default route (IPv4 or IPv6) in this network namespace")]
    NoDefaultRoute,
    #[error("cannot announce {ip} on {device}: {source}")]
    Device {
        device: String,
        ip: IpAddr,
        #[source]
        source: Box<AliasError>,
    },
    #[error("cannot announce {ip} on {device}: {reason}")]
    BadAddress {
        device: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("cannot announce {ip} on {device}: it has no Ethernet MAC address (link type {kind})")]
    NoMac {
        device: String,
        ip: IpAddr,
        kind: String,
    },
    #[error("cannot announce {ip} on {device}: the interface is down")]
    Down { device: String, ip: IpAddr },
    #[error(
        "cannot announce {ip} on {device}: the address is not assigned to {device} (or is still \
         tentative), and a neighbour advertisement must come from the address itself"
    )]
    NotAssigned { device: String, ip: IpAddr },
    #[error("cannot announce {ip} on {device}: permission denied: needs CAP_NET_RAW")]
    PermissionDenied { device: String, ip: IpAddr },
    #[error("cannot announce {ip} on {device}: cannot {op}: {source}")]
    Io {
        device: String,
        ip: IpAddr,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Announces that `ip` is on `device`: `count` gratuitous ARPs (IPv4) or unsolicited neighbour
/// advertisements (IPv6), the first at once and the next ones `gap` apart (see
/// [`DEFAULT_COUNT`] and [`DEFAULT_GAP`]). The sends never block, the pauses are tokio sleeps,
/// and dropping the future stops the remaining sends. With `count` 0 it only checks the
/// interface, the address and the permissions.
///
/// Runs in the network namespace of the calling thread and needs CAP_NET_RAW, nothing more.
/// An IPv6 address must be assigned to `device` (and not tentative) beforehand; an IPv4 one is
/// announced whether assigned or not.
pub async fn announce(
    device: &str,
    ip: IpAddr,
    count: u32,
    gap: Duration,
) -> Result<(), AnnounceError> {
    let target = Target { device, ip };
    check_address(ip).map_err(|reason| target.bad_address(reason))?;
    // Sockets belong to the namespace of the thread that creates them, and a multi-threaded
    // runtime may resume this future on another thread after any await: create both first.
    let socket = open_socket(ip).map_err(|e| target.io("open a socket", e))?;
    let netlink = Netlink::connect()?;
    let link = alias::find_link(&netlink.handle, device)
        .await
        .map_err(|source| target.device(source))?;
    drop(netlink);
    let nic = target.nic(&link)?;
    let sender = target.prepare(socket, &nic)?;
    for n in 0..count {
        if n > 0 {
            tokio::time::sleep(gap).await;
        }
        sender.send().await.map_err(|e| target.io("send", e))?;
        tracing::debug!(device, %ip, n, "announced the address");
    }
    Ok(())
}

/// The interface of the default route of the main table (IPv4, else IPv6) in the network
/// namespace of the calling thread: the preferred one (lowest metric, carrier up first) when
/// there are several. Unreachable, blackhole or prohibit defaults do not count.
pub async fn default_route_interface() -> Result<String, AnnounceError> {
    let netlink = Netlink::connect()?;
    let lookup = |e: rtnetlink::Error| AnnounceError::RouteLookup {
        detail: alias::detail(&e),
    };
    for version in [IpVersion::V4, IpVersion::V6] {
        let routes: Vec<RouteMessage> = netlink
            .handle
            .route()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(lookup)?;
        if let Some(index) = preferred_default(&routes) {
            return link_name(&netlink.handle, index).await;
        }
    }
    Err(AnnounceError::NoDefaultRoute)
}

/// The gratuitous ARP announcing that `ip` is at `mac`: a request whose sender and target IP
/// are both `ip`, with the broadcast address as target MAC (see the module comment).
pub fn arp_announcement(mac: Mac, ip: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut p = [0u8; ARP_LEN];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    p[4] = 6; // hardware address length
    p[5] = 4; // protocol address length
    p[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    p[18..24].copy_from_slice(&BROADCAST_MAC);
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// The ICMPv6 unsolicited neighbour advertisement announcing that `ip` is at `mac`: Override
/// set, Solicited and Router clear, one target link-layer address option. The checksum is left
/// at zero: the kernel computes it on raw ICMPv6 sockets (it covers the IPv6 pseudo-header).
pub fn neighbour_advertisement(mac: Mac, ip: Ipv6Addr) -> [u8; NA_LEN] {
    let mut p = [0u8; NA_LEN];
    p[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    // p[1] code 0, p[2..4] checksum, p[5..8] reserved.
    p[4] = NA_OVERRIDE;
    p[8..24].copy_from_slice(&ip.octets());
    p[24] = ND_OPT_TARGET_LINK_LAYER_ADDRESS;
    p[25] = 1; // option length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// Why `ip` cannot be announced, if it cannot.
fn check_address(ip: IpAddr) -> Result<(), &'static str> {
    let unicast =
        !ip.is_unspecified() && !ip.is_multicast() && ip != IpAddr::V4(Ipv4Addr::BROADCAST);
    if !unicast {
        return Err("not a unicast address");
    }
    if ip.is_loopback() {
        return Err("a loopback address never goes on a LAN");
    }
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err("an IPv4-mapped IPv6 address: announce the IPv4 address instead");
        }
    }
    Ok(())
}

/// A send-only socket: a packet socket of protocol 0 (it sends any EtherType and, not bound to
/// one, receives nothing) or a raw ICMPv6 socket.
fn open_socket(ip: IpAddr) -> io::Result<Socket> {
    let socket = match ip {
        IpAddr::V4(_) => Socket::new(Domain::PACKET, socket2::Type::DGRAM, None)?,
        IpAddr::V6(_) => Socket::new(Domain::IPV6, socket2::Type::RAW, Some(Protocol::ICMPV6))?,
    };
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The netlink connection of one call, in the namespace of the thread that opened it; its task
/// ends with it.
struct Netlink {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Netlink {
    fn connect() -> Result<Self, AnnounceError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AnnounceError::Netlink)?;
        Ok(Self {
            handle,
            connection: tokio::spawn(conn),
        })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The outgoing interface index of the preferred unicast default route of the main table.
fn preferred_default(routes: &[RouteMessage]) -> Option<u32> {
    routes
        .iter()
        .filter(|r| {
            r.header.destination_prefix_length == 0
                && r.header.kind == RouteType::Unicast
                && table(r) == u32::from(RouteHeader::RT_TABLE_MAIN)
        })
        .filter_map(|r| {
            let unusable = r
                .header
                .flags
                .iter()
                .any(|f| matches!(f, RouteFlag::Dead | RouteFlag::Linkdown));
            Some(((unusable, metric(r)), output_interface(r)?))
        })
        // The first of equals, as the kernel lists them in its order of preference.
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, index)| index)
}

/// Table ids above 255 only fit in the attribute.
fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn metric(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// The device of a single-path route, or of the first next hop of a multipath one.
fn output_interface(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
        _ => None,
    })
}

async fn link_name(handle: &Handle, index: u32) -> Result<String, AnnounceError> {
    let lookup = |e: rtnetlink::Error| AnnounceError::RouteLookup {
        detail: format!("interface {index}: {}", alias::detail(&e)),
    };
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect()
        .await
        .map_err(lookup)?;
    links
        .iter()
        .flat_map(|l| &l.attributes)
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .ok_or_else(|| AnnounceError::RouteLookup {
            detail: format!("interface {index} of the default route has no name"),
        })
}

/// The interface as an announcement needs it.
struct Nic {
    index: u32,
    mac: Mac,
}

/// A ready socket with its packet and destination.
struct Sender {
    socket: AsyncFd<Socket>,
    packet: Vec<u8>,
    to: SockAddr,
}

impl Sender {
    async fn send(&self) -> io::Result<()> {
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, |s| s.send_to(&self.packet, &self.to))
            .await?;
        if sent != self.packet.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                self.packet.len()
            )));
        }
        Ok(())
    }
}

/// The address being announced and where: what every error names.
struct Target<'a> {
    device: &'a str,
    ip: IpAddr,
}

impl Target<'_> {
    fn nic(&self, link: &LinkMessage) -> Result<Nic, AnnounceError> {
        let kind = link.header.link_layer_type;
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => Mac::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let mac = match mac {
            Some(mac) if kind == LinkLayerType::Ether && mac != [0; 6] => mac,
            _ => {
                return Err(AnnounceError::NoMac {
                    device: self.device.to_owned(),
                    ip: self.ip,
                    kind: kind.to_string(),
                })
            }
        };
        if !link.header.flags.contains(&LinkFlag::Up) {
            return Err(AnnounceError::Down {
                device: self.device.to_owned(),
                ip: self.ip,
            });
        }
        Ok(Nic {
            index: link.header.index,
            mac,
        })
    }

    fn prepare(&self, socket: Socket, nic: &Nic) -> Result<Sender, AnnounceError> {
        let (packet, to) = match self.ip {
            IpAddr::V4(v4) => (
                arp_announcement(nic.mac, v4).to_vec(),
                link_broadcast(nic.index).map_err(|e| self.io("build the link address", e))?,
            ),
            IpAddr::V6(v6) => {
                self.prepare_icmpv6(&socket, v6, nic.index)?;
                (
                    neighbour_advertisement(nic.mac, v6).to_vec(),
                    SocketAddrV6::new(ALL_NODES, 0, 0, nic.index).into(),
                )
            }
        };
        // SAFETY: the Socket owns its descriptor, which stays open (and the same) until the
        // AsyncFd drops it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }
            .map_err(|e| self.io("register the socket", e.into()))?;
        Ok(Sender { socket, packet, to })
    }

    fn prepare_icmpv6(
        &self,
        socket: &Socket,
        ip: Ipv6Addr,
        index: u32,
    ) -> Result<(), AnnounceError> {
        let set = |op, r: io::Result<()>| r.map_err(|e| self.io(op, e));
        set(
            "bind to the interface",
            socket.bind_device(Some(self.device.as_bytes())),
        )?;
        set(
            "set the hop limit",
            socket.set_multicast_hops_v6(ND_HOP_LIMIT),
        )?;
        set(
            "set the hop limit",
            socket.set_unicast_hops_v6(ND_HOP_LIMIT),
        )?;
        set(
            "choose the multicast interface",
            socket.set_multicast_if_v6(index),
        )?;
        // Our own stack needs no news of its own address.
        set(
            "disable multicast loopback",
            socket.set_multicast_loop_v6(false),
        )?;
        // fe80::/10 (`Ipv6Addr::is_unicast_link_local` is newer than our minimum Rust).
        let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
        let scope = if link_local { index } else { 0 };
        match socket.bind(&SocketAddrV6::new(ip, 0, 0, scope).into()) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                Err(AnnounceError::NotAssigned {
                    device: self.device.to_owned(),
                    ip: self.ip,
                })
            }
            r => set("bind to the address", r),
        }
    }

    fn bad_address(&self, reason: &'static str) -> AnnounceError {
        AnnounceError::BadAddress {
            device: self.device.to_owned(),
            ip: self.ip,
            reason,
        }
    }

    fn device(&self, source: AliasError) -> AnnounceError {
        AnnounceError::Device {
            device: self.device.to_owned(),
            ip: self.ip,
            source: Box::new(source),
        }
    }

    fn io(&self, op: &'static str, e: io::Error) -> AnnounceError {
        let (device, ip) = (self.device.to_owned(), self.ip);
        match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => AnnounceError::PermissionDenied { device, ip },
            Some(libc::ENETDOWN) => AnnounceError::Down { device, ip },
            // The interface went away since the lookup.
            Some(libc::ENODEV | libc::ENXIO) => AnnounceError::Device {
                source: Box::new(AliasError::NoDevice {
                    device: device.clone(),
                }),
                device,
                ip,
            },
            _ => AnnounceError::Io {
                device,
                ip,
                op,
                source: e,
            },
        }
    }
}

/// The Ethernet broadcast address on interface `index`, as the destination of ARP frames sent
/// on a packet socket (the kernel adds the Ethernet header with the interface's MAC as source).
fn link_broadcast(index: u32) -> io::Result<SockAddr> {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: ETHERTYPE_ARP.to_be(),
        sll_ifindex: i32::try_from(index).map_err(io::Error::other)?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    // SAFETY: the storage is zeroed, larger than a sockaddr_ll and at least as aligned; we
    // write a whole sockaddr_ll (family AF_PACKET) and give its exact length, which is what
    // socket2 requires of the family and the length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            storage.cast::<libc::sockaddr_ll>().write(ll);
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteNextHop;

    const MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];

    #[test]
    fn arp_announcement_bytes() {
        let p = arp_announcement(MAC, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want: [u8; ARP_LEN] = [
            0x00, 0x01,                         // hardware: Ethernet
            0x08, 0x00,                         // protocol: IPv4
            6, 4,                               // address lengths
            0x00, 0x01,                         // request
            0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // sender MAC
            192, 0, 2, 100,                     // sender IP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target MAC
            192, 0, 2, 100,                     // target IP
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn neighbour_advertisement_bytes() {
        let p = neighbour_advertisement(MAC, "2001:db8::100".parse().unwrap());
        #[rustfmt::skip]
        let want: [u8; NA_LEN] = [
            136, 0,                             // neighbour advertisement, code 0
            0, 0,                               // checksum: the kernel's
            0x20, 0, 0, 0,                      // Override only
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, // target 2001:db8::100
            0, 0, 0, 0, 0, 0, 0x01, 0x00,
            2, 1,                               // target link-layer address, 8 bytes
            0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn only_lan_unicast_addresses_are_announced() {
        for good in ["192.0.2.100", "2001:db8::100", "fe80::1"] {
            assert_eq!(check_address(good.parse().unwrap()), Ok(()), "{good}");
        }
        for bad in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "::",
            "ff02::1",
            "::1",
            "::ffff:192.0.2.100",
        ] {
            assert!(check_address(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_interface_and_the_address() {
        let target = Target {
            device: "eth1",
            ip: "192.0.2.100".parse().unwrap(),
        };
        let eperm = target.io("open a socket", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            eperm.to_string(),
            "cannot announce 192.0.2.100 on eth1: permission denied: needs CAP_NET_RAW"
        );
        let down = target.io("send", io::Error::from_raw_os_error(libc::ENETDOWN));
        assert!(matches!(down, AnnounceError::Down { .. }), "{down}");
        let other = target.io("send", io::Error::from_raw_os_error(libc::ENOBUFS));
        assert!(
            other
                .to_string()
                .starts_with("cannot announce 192.0.2.100 on eth1: cannot send: "),
            "{other}"
        );
        let gone = target.io("send", io::Error::from_raw_os_error(libc::ENODEV));
        assert_eq!(
            gone.to_string(),
            "cannot announce 192.0.2.100 on eth1: network device \"eth1\" not found"
        );
    }

    fn route(prefix: u8, table: u8, kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.destination_prefix_length = prefix;
        r.header.table = table;
        r.header.kind = kind;
        r.attributes = attrs;
        r
    }

    #[test]
    fn preferred_default_route() {
        use RouteAttribute::{Oif, Priority, Table};
        let main = RouteHeader::RT_TABLE_MAIN;
        assert_eq!(preferred_default(&[]), None);
        let not_defaults = [
            route(24, main, RouteType::Unicast, vec![Oif(2)]),
            route(0, main, RouteType::Unreachable, vec![]),
            route(0, main, RouteType::BlackHole, vec![Oif(1)]),
            route(0, 100, RouteType::Unicast, vec![Oif(3)]),
            // Table 1000: the header says "see the attribute" (RT_TABLE_COMPAT).
            route(0, 252, RouteType::Unicast, vec![Table(1000), Oif(4)]),
        ];
        assert_eq!(preferred_default(&not_defaults), None);

        let mut routes = not_defaults.to_vec();
        routes.push(route(
            0,
            main,
            RouteType::Unicast,
            vec![Oif(5), Priority(200)],
        ));
        routes.push(route(
            0,
            main,
            RouteType::Unicast,
            vec![Oif(6), Priority(100)],
        ));
        routes.push(route(
            0,
            main,
            RouteType::Unicast,
            vec![Oif(7), Priority(100)],
        ));
        assert_eq!(preferred_default(&routes), Some(6));

        // A route without carrier loses to a worse metric.
        let mut down = route(0, main, RouteType::Unicast, vec![Oif(8), Priority(1)]);
        down.header.flags.push(RouteFlag::Linkdown);
        routes.push(down);
        assert_eq!(preferred_default(&routes), Some(6));

        let mut hop = RouteNextHop::default();
        hop.interface_index = 9;
        let multipath = route(
            0,
            main,
            RouteType::Unicast,
            vec![RouteAttribute::MultiPath(vec![hop])],
        );
        assert_eq!(preferred_default(&[multipath]), Some(9));
    }

    #[test]
    fn link_broadcast_is_a_packet_address() {
        let addr = link_broadcast(7).unwrap();
        assert_eq!(addr.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(
            addr.len() as usize,
            std::mem::size_of::<libc::sockaddr_ll>()
        );
        // SAFETY: family AF_PACKET, so the storage holds a sockaddr_ll.
        let ll = unsafe { &*addr.as_ptr().cast::<libc::sockaddr_ll>() };
        assert_eq!(ll.sll_ifindex, 7);
        assert_eq!(u16::from_be(ll.sll_protocol), ETHERTYPE_ARP);
        assert_eq!(&ll.sll_addr[..6], &BROADCAST_MAC);
    }

    #[test]
    fn announcing_can_run_on_a_spawned_task() {
        fn assert_send<T: Send>(_: &T) {}
        let fut = announce("eth0", "192.0.2.100".parse().unwrap(), 1, DEFAULT_GAP);
        assert_send(&fut);
        let fut = default_route_interface();
        assert_send(&fut);
    }
}

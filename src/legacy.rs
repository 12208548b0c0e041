//! Mixed clusters with the old Go exoip (`--legacy-protocol`): what its unauthenticated 24-byte
//! heartbeats mean to the election, and what ours must tell it. No I/O and no clock: the driver
//! feeds it datagrams and times, as it does the core.
//!
//! The old agent has no roles on the wire: each node sends only its priority, and a node holds
//! the address when no live peer announces a strictly lower priority. So:
//! - An old peer becomes an advert from the node `legacy-<its address>`, whose state is implied
//!   by the old agent's own rule: `Master` when no other live node announces a lower priority,
//!   `Backup` otherwise. The implied state is a belief, not a fact (the old agent may still be
//!   in its start-up hold-off, or fenced without knowing it), so the election never acts on it
//!   alone: a backup steps aside and a leaving master lets go only once the API shows another
//!   holder (see `election`).
//! - We announce our real priority only while we hold the address, and 255 otherwise: the old
//!   agent drops the address as soon as it hears a lower priority, without waiting for the new
//!   holder, so announcing a priority we do not yet hold would open a gap.
//! - Peers that speak v2 get v2 only; peers heard only in the old protocol get the old one only
//!   (the old agent logs every datagram it cannot parse); unknown peers get both.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::election::Time;
use crate::wire::{self, Advert, Entry, IpState, LegacyAdvert, LEGACY_LEN, LEGACY_LEN_WITH_ID};

/// The priority that tells an old peer "take it if you want it": the worst there is.
pub const STAND_BY_PRIORITY: u8 = 255;

/// The node id an old peer gets in the election, status and logs.
pub fn node_id(addr: IpAddr) -> String {
    format!("legacy-{addr}")
}

/// Whether a datagram looks like the old protocol (version 0201 and the old lengths); anything
/// else goes to the v2 decoder.
pub fn looks_legacy(datagram: &[u8]) -> bool {
    matches!(datagram.len(), LEGACY_LEN | LEGACY_LEN_WITH_ID) && datagram[..2] == wire::LEGACY_PROTO
}

/// Why an old-protocol datagram was not used; labels as in the drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyDrop {
    /// It does not decode (see [`wire::DropReason`]).
    Wire(wire::DropReason),
    /// Its source is not one of our peers: the old protocol has nothing else to authenticate.
    UnknownPeer,
    /// It is about an address we do not watch.
    OtherAddress,
    /// Its source speaks v2: an authenticated heartbeat outranks an unauthenticated one.
    FromV2Peer,
}

impl LegacyDrop {
    pub fn label(self) -> &'static str {
        match self {
            LegacyDrop::Wire(r) => match r {
                wire::DropReason::Truncated => "legacy_truncated",
                wire::DropReason::TooLarge => "legacy_too_large",
                wire::DropReason::BadMagic => "legacy_bad_version",
                _ => "legacy_malformed",
            },
            LegacyDrop::UnknownPeer => "legacy_unknown_peer",
            LegacyDrop::OtherAddress => "legacy_other_address",
            LegacyDrop::FromV2Peer => "legacy_from_v2_peer",
        }
    }
}

#[derive(Debug, Clone)]
struct OldPeer {
    eip: Ipv4Addr,
    priority: u8,
    last_heard: Time,
}

/// What the election knows of one address, for implying an old peer's state.
#[derive(Debug, Clone, Default)]
pub struct AddressView {
    /// The priority we announce to old peers for it now (see [`Bridge::payloads`]).
    pub ours: Option<u8>,
    /// The priority each other live v2 peer would announce to an old peer.
    pub v2_peers: Vec<u8>,
}

/// The old protocol's side of the agent: who speaks it, and what they mean.
#[derive(Debug)]
pub struct Bridge {
    dead: Duration,
    nic_id: [u8; 16],
    old: BTreeMap<IpAddr, OldPeer>,
    v2_heard: BTreeMap<IpAddr, Time>,
}

impl Bridge {
    /// `nic_id` is what old peers record as our NIC (they pass it back to the API to fence us).
    pub fn new(interval: Duration, dead_ratio: u32, nic_id: [u8; 16]) -> Bridge {
        Bridge {
            dead: interval * dead_ratio,
            nic_id,
            old: BTreeMap::new(),
            v2_heard: BTreeMap::new(),
        }
    }

    /// An authenticated v2 heartbeat came from `addr`.
    pub fn heard_v2(&mut self, now: Time, addr: IpAddr) {
        self.v2_heard.insert(addr, now);
        self.old.remove(&addr);
    }

    fn speaks_v2(&self, now: Time, addr: IpAddr) -> bool {
        self.v2_heard
            .get(&addr)
            .is_some_and(|t| now < *t + self.dead)
    }

    fn speaks_old(&self, now: Time, addr: IpAddr) -> bool {
        self.old
            .get(&addr)
            .is_some_and(|p| now < p.last_heard + self.dead)
    }

    /// Whether `peer` gets our v2 heartbeats: unless it was heard only in the old protocol lately.
    pub fn wants_v2(&self, now: Time, peer: IpAddr) -> bool {
        self.speaks_v2(now, peer) || !self.speaks_old(now, peer)
    }

    /// Whether `peer` gets the old heartbeats: unless it speaks v2.
    pub fn wants_legacy(&self, now: Time, peer: IpAddr) -> bool {
        !self.speaks_v2(now, peer)
    }

    /// The old heartbeats to send for our advert: one per IPv4 address, with our priority while
    /// we hold it and [`STAND_BY_PRIORITY`] otherwise.
    pub fn payloads(&self, advert: &Advert) -> Vec<[u8; LEGACY_LEN]> {
        advert
            .entries
            .iter()
            .filter_map(|e| match e.ip {
                IpAddr::V4(v4) => Some(wire::encode_legacy(announced(e), v4, self.nic_id)),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// An old-protocol datagram from `from`, one of `peers` or not: the advert to give the
    /// election. `view` says what the election knows of the address it is about.
    pub fn on_datagram(
        &mut self,
        now: Time,
        from: IpAddr,
        datagram: &[u8],
        peers: &[SocketAddr],
        view: impl Fn(Ipv4Addr) -> Option<AddressView>,
    ) -> Result<Advert, LegacyDrop> {
        let heard: LegacyAdvert = wire::decode_legacy(datagram).map_err(LegacyDrop::Wire)?;
        if !peers.iter().any(|p| p.ip() == from) {
            return Err(LegacyDrop::UnknownPeer);
        }
        if self.speaks_v2(now, from) {
            return Err(LegacyDrop::FromV2Peer);
        }
        let addr_view = view(heard.eip).ok_or(LegacyDrop::OtherAddress)?;
        // Priority 0 is legal for the old agent, not on our wire; it ranks the same as 1.
        let priority = heard.priority.max(1);
        let dead = self.dead;
        self.old.insert(
            from,
            OldPeer {
                eip: heard.eip,
                priority,
                last_heard: now,
            },
        );
        // The old agent's rule, from its side: it holds when nobody it hears is strictly lower.
        let best = self
            .old
            .iter()
            .filter(|(a, p)| **a != from && p.eip == heard.eip && now < p.last_heard + dead)
            .map(|(_, p)| p.priority)
            .chain(addr_view.ours)
            .chain(addr_view.v2_peers.iter().copied())
            .all(|other| other >= priority);
        let state = if best {
            IpState::Master
        } else {
            IpState::Backup
        };
        Ok(Advert {
            node: node_id(from),
            leaving: false,
            entries: vec![Entry {
                ip: IpAddr::V4(heard.eip),
                priority,
                state,
                epoch: 0,
            }],
        })
    }
}

/// The priority an entry of ours announces to old peers.
pub fn announced(entry: &Entry) -> u8 {
    if entry.state == IpState::Master {
        entry.priority
    } else {
        STAND_BY_PRIORITY
    }
}

/// The 16 bytes of a UUID in its usual hyphenated text form, or `None` if `text` is not one.
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    // Only the hyphenated form (36 characters): uuid also takes braced, simple and URN forms.
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(|u| *u.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const OLD: &str = "192.0.2.12";
    const S: Duration = Duration::from_secs(1);

    fn t(secs: f64) -> Time {
        Duration::from_secs_f64(secs)
    }

    fn peers() -> Vec<SocketAddr> {
        vec![format!("{OLD}:12345").parse().unwrap()]
    }

    fn old() -> IpAddr {
        OLD.parse().unwrap()
    }

    fn view(ours: Option<u8>) -> impl Fn(Ipv4Addr) -> Option<AddressView> {
        move |eip| {
            (eip == EIP).then(|| AddressView {
                ours,
                v2_peers: vec![],
            })
        }
    }

    fn state_of(a: &Advert) -> IpState {
        a.entries[0].state
    }

    #[test]
    fn an_old_peer_is_master_by_its_own_rule() {
        let mut b = Bridge::new(S, 3, [0; 16]);
        let d = wire::encode_legacy(20, EIP, [9; 16]);
        let mut heard = |at: f64, ours: Option<u8>| {
            b.on_datagram(t(at), old(), &d, &peers(), view(ours))
                .unwrap()
        };
        let a = heard(0.0, Some(255));
        assert_eq!(a.node, "legacy-192.0.2.12");
        assert_eq!(a.entries[0].priority, 20);
        assert_eq!(state_of(&a), IpState::Master, "nobody announces lower");
        assert_eq!(state_of(&heard(1.0, Some(10))), IpState::Backup);
        // Equal priority: the old agent holds too (its rule is strict).
        assert_eq!(state_of(&heard(2.0, Some(20))), IpState::Master);
        assert_eq!(state_of(&heard(3.0, None)), IpState::Master);
        // A v2 peer announcing a lower priority makes it a backup.
        let v = |eip: Ipv4Addr| {
            (eip == EIP).then(|| AddressView {
                ours: Some(255),
                v2_peers: vec![5],
            })
        };
        let a = b.on_datagram(t(4.0), old(), &d, &peers(), v).unwrap();
        assert_eq!(state_of(&a), IpState::Backup);
    }

    #[test]
    fn old_peers_rank_among_themselves_while_alive() {
        let mut b = Bridge::new(S, 3, [0; 16]);
        let other: IpAddr = "192.0.2.13".parse().unwrap();
        let both: Vec<SocketAddr> = vec![
            format!("{OLD}:12345").parse().unwrap(),
            "192.0.2.13:12345".parse().unwrap(),
        ];
        let better = wire::encode_legacy(5, EIP, [8; 16]);
        let d = wire::encode_legacy(20, EIP, [9; 16]);
        b.on_datagram(t(0.0), other, &better, &both, view(None))
            .unwrap();
        let a = b.on_datagram(t(1.0), old(), &d, &both, view(None)).unwrap();
        assert_eq!(state_of(&a), IpState::Backup);
        // The better one went silent for a dead period: no longer counted.
        let a = b.on_datagram(t(3.5), old(), &d, &both, view(None)).unwrap();
        assert_eq!(state_of(&a), IpState::Master);
        // Priority 0 (legal for the old agent) ranks as 1.
        let zero = wire::encode_legacy(0, EIP, [8; 16]);
        let a = b
            .on_datagram(t(4.0), other, &zero, &both, view(None))
            .unwrap();
        assert_eq!(a.entries[0].priority, 1);
    }

    #[test]
    fn drops_what_the_old_protocol_cannot_vouch_for() {
        let mut b = Bridge::new(S, 3, [0; 16]);
        let d = wire::encode_legacy(20, EIP, [9; 16]);
        let stranger: IpAddr = "192.0.2.66".parse().unwrap();
        assert_eq!(
            b.on_datagram(t(0.0), stranger, &d, &peers(), view(None)),
            Err(LegacyDrop::UnknownPeer)
        );
        let other = wire::encode_legacy(20, Ipv4Addr::new(198, 51, 100, 99), [9; 16]);
        assert_eq!(
            b.on_datagram(t(0.0), old(), &other, &peers(), view(None)),
            Err(LegacyDrop::OtherAddress)
        );
        let mut bad = d;
        bad[3] = 21;
        assert_eq!(
            b.on_datagram(t(0.0), old(), &bad, &peers(), view(None))
                .unwrap_err()
                .label(),
            "legacy_malformed"
        );
        b.heard_v2(t(1.0), old());
        assert_eq!(
            b.on_datagram(t(1.5), old(), &d, &peers(), view(None)),
            Err(LegacyDrop::FromV2Peer)
        );
        // A v2 peer gone silent for a dead period may be an old agent again (a downgrade).
        assert!(b
            .on_datagram(t(4.5), old(), &d, &peers(), view(None))
            .is_ok());
    }

    #[test]
    fn who_gets_which_protocol() {
        let mut b = Bridge::new(S, 3, [0; 16]);
        let d = wire::encode_legacy(20, EIP, [9; 16]);
        let p = old();
        assert!(b.wants_v2(t(0.0), p) && b.wants_legacy(t(0.0), p));
        b.on_datagram(t(0.0), p, &d, &peers(), view(None)).unwrap();
        assert!(!b.wants_v2(t(1.0), p) && b.wants_legacy(t(1.0), p));
        // Silent for a dead period: both again (it may come back upgraded).
        assert!(b.wants_v2(t(3.0), p) && b.wants_legacy(t(3.0), p));
        b.heard_v2(t(4.0), p);
        assert!(b.wants_v2(t(4.0), p) && !b.wants_legacy(t(4.0), p));
    }

    #[test]
    fn payloads_announce_our_priority_only_while_we_hold() {
        let b = Bridge::new(S, 3, [7; 16]);
        let entry = |ip: IpAddr, state| Entry {
            ip,
            priority: 10,
            state,
            epoch: 0,
        };
        let advert = Advert {
            node: "me".into(),
            leaving: false,
            entries: vec![
                entry(IpAddr::V4(EIP), IpState::Master),
                entry(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)), IpState::Backup),
                entry("2001:db8::1".parse().unwrap(), IpState::Master),
            ],
        };
        let p = b.payloads(&advert);
        assert_eq!(p.len(), 2, "IPv6 addresses have no old heartbeat");
        assert_eq!(p[0], wire::encode_legacy(10, EIP, [7; 16]));
        assert_eq!(
            wire::decode_legacy(&p[1]).unwrap().priority,
            STAND_BY_PRIORITY
        );
        assert!(looks_legacy(&p[0]));
        assert!(!looks_legacy(&p[0][..23]));
    }

    #[test]
    fn uuids_parse_strictly() {
        assert_eq!(
            uuid_bytes("00112233-4455-6677-8899-aabbccddeeff"),
            Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
        for bad in [
            "",
            "00112233445566778899aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeZZ",
            "0011223-34455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeff0",
        ] {
            assert_eq!(uuid_bytes(bad), None, "{bad}");
        }
    }
}

//! The reference model the fuzz targets and `tests/wire_corpus.rs` (which includes this file)
//! check the decoders against: the fixed key, group and clock of the corpus, the checks before
//! the MAC in the decoder's order (docs/wire.md, "Receiving"), the old protocol's rules
//! ("Legacy v1"), and what any accepted datagram must satisfy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use exoip::legacy::{self, AddressView, Bridge, LegacyDrop};
use exoip::wire::{
    self, AuthKey, Decoder, DropReason, Encoder, IpState, Kind, Message, LEGACY_LEN,
    LEGACY_LEN_WITH_ID, MAC_LEN, MAGIC, MAX_DATAGRAM, MAX_NODE_ID, VERSION,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The corpus key: public, so never the key of a real cluster.
pub const KEY: &[u8] = b"exoip wire corpus key (public, test only)";
pub const GROUP: &str = "corpus";
/// The clock of every seed and of the receivers (unix ms), and the senders' incarnation (µs).
pub const NOW: u64 = 1_700_000_000_000;
pub const INCARNATION: u64 = NOW * 1000;
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Offsets of the fixed header (docs/wire.md, "Layout").
pub const VERSION_AT: usize = 4;
pub const FLAGS_AT: usize = 5;
pub const GROUP_AT: usize = 6;
pub const NODE_LEN_AT: usize = 34;
/// A probe with a one-byte node id: the shortest datagram that can authenticate.
pub const MIN_DATAGRAM: usize = NODE_LEN_AT + 1 + 1 + 1 + MAC_LEN;
/// The elastic IP the legacy bridge watches, its two old peers, and a stranger.
pub const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const OLD_PEER: &str = "192.0.2.12:12345";
pub const OTHER_PEER: &str = "192.0.2.13:12345";
pub const STRANGER: &str = "198.51.100.66";
/// The bridge's dead period (interval 1 s, ratio 3).
pub const BRIDGE_DEAD: Duration = Duration::from_secs(3);

pub fn key() -> AuthKey {
    AuthKey::from_bytes(KEY).expect("long enough")
}

pub fn group() -> u32 {
    // Hashed once: the model runs on every input of a million-input loop.
    static ID: OnceLock<u32> = OnceLock::new();
    *ID.get_or_init(|| wire::group_id(GROUP))
}

pub fn decoder() -> Decoder {
    Decoder::new(key(), group(), Some(MAX_AGE))
}

pub fn encoder() -> Encoder {
    Encoder::new(key(), group(), INCARNATION)
}

pub fn bridge() -> Bridge {
    Bridge::new(BRIDGE_DEAD / 3, 3, [0; 16])
}

/// What a key holder appends to `body`: lets the parser behind the MAC see any bytes.
pub fn sign(body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("HMAC takes any key length");
    mac.update(body);
    let mut d = body.to_vec();
    d.extend_from_slice(&mac.finalize().into_bytes());
    d
}

/// The legacy bridge's peers.
pub fn peers() -> &'static [SocketAddr] {
    static PEERS: OnceLock<Vec<SocketAddr>> = OnceLock::new();
    PEERS.get_or_init(|| {
        [OLD_PEER, OTHER_PEER]
            .iter()
            .map(|p| p.parse().expect("literal address"))
            .collect()
    })
}

/// Where old-protocol datagrams come from: both peers, then the stranger.
pub fn sources() -> [IpAddr; 3] {
    let peers = peers();
    [
        peers[0].ip(),
        peers[1].ip(),
        STRANGER.parse().expect("literal address"),
    ]
}

/// What the election knows of the addresses: it watches [`EIP`] only, and stands by for it.
pub fn view(eip: Ipv4Addr) -> Option<AddressView> {
    (eip == EIP).then(|| AddressView {
        ours: Some(legacy::STAND_BY_PRIORITY),
        v2_peers: vec![],
    })
}

/// The checks before the MAC, in the decoder's order: the drop reason they give `d`, or `None`
/// when it reaches the MAC.
pub fn pre_mac(d: &[u8]) -> Option<DropReason> {
    if d.len() > MAX_DATAGRAM {
        return Some(DropReason::TooLarge);
    }
    if d.len() < MAGIC.len() {
        return Some(DropReason::Truncated);
    }
    if d[..MAGIC.len()] != MAGIC {
        return Some(DropReason::BadMagic);
    }
    match d.get(VERSION_AT) {
        None => return Some(DropReason::Truncated),
        Some(&v) if v != VERSION => return Some(DropReason::BadVersion),
        Some(_) => {}
    }
    if d.len() < MIN_DATAGRAM {
        return Some(DropReason::Truncated);
    }
    if d[GROUP_AT..GROUP_AT + 4] != group().to_be_bytes() {
        return Some(DropReason::UnknownGroup);
    }
    None
}

/// [`wire::decode_legacy`] as documented: (priority, elastic IP) or why not.
pub fn legacy_model(d: &[u8]) -> Result<(u8, Ipv4Addr), DropReason> {
    if d.len() < LEGACY_LEN {
        return Err(DropReason::Truncated);
    }
    if d.len() > LEGACY_LEN_WITH_ID {
        return Err(DropReason::TooLarge);
    }
    if d.len() != LEGACY_LEN && d.len() != LEGACY_LEN_WITH_ID {
        return Err(DropReason::Malformed);
    }
    if d[..2] != [0x02, 0x01] {
        return Err(DropReason::BadMagic);
    }
    if d[2] != d[3] {
        return Err(DropReason::Malformed);
    }
    Ok((d[2], Ipv4Addr::new(d[4], d[5], d[6], d[7])))
}

/// Checks one `decode_message` result against the model. `signed`: a key holder made `d`, so
/// its MAC may verify; otherwise it must not. Returns whether `d` was accepted; an accepted
/// datagram is then offered again and must be refused as a replay.
pub fn check_message(
    dec: &mut Decoder,
    d: &[u8],
    signed: bool,
    got: Result<Message, DropReason>,
) -> bool {
    match (got, pre_mac(d)) {
        (Ok(m), None) => {
            assert!(signed, "unsigned datagram accepted: {d:02x?}");
            check_accepted(d, &m);
            assert_eq!(dec.decode_message(d, NOW), Err(DropReason::Replayed));
            true
        }
        (Ok(m), Some(want)) => panic!("accepted {m:?} where the model says {want:?}"),
        (Err(r), Some(want)) => {
            assert_eq!(r, want, "{d:02x?}");
            false
        }
        (Err(r), None) if !signed => {
            assert_eq!(r, DropReason::BadMac, "{d:02x?}");
            false
        }
        (Err(r), None) => {
            // Behind a valid MAC: the body, the anti-replay table or the clock.
            assert!(
                matches!(
                    r,
                    DropReason::Malformed | DropReason::Replayed | DropReason::Stale
                ),
                "{r:?} for {d:02x?}"
            );
            false
        }
    }
}

/// What any accepted datagram must satisfy, whatever produced it.
pub fn check_accepted(d: &[u8], m: &Message) {
    let a = &m.advert;
    assert!(
        !a.node.is_empty() && a.node.len() <= MAX_NODE_ID,
        "node id of {} bytes accepted",
        a.node.len()
    );
    assert_eq!(
        wire::encoded_len(a),
        d.len(),
        "the advert fills the datagram"
    );
    match m.kind {
        Kind::Probe => {
            assert!(a.entries.is_empty() && !a.leaving, "{m:?}");
            assert_eq!(d[FLAGS_AT], 0x02);
        }
        Kind::Heartbeat | Kind::Reply => {
            assert_eq!(
                wire::check_limits(a).map(|_| ()),
                Ok(()),
                "accepted over the limits: {m:?}"
            );
            let reply = if m.kind == Kind::Reply { 0x04 } else { 0 };
            assert_eq!(d[FLAGS_AT], reply | u8::from(a.leaving));
        }
    }
}

/// What the legacy bridge must remember: when each source last spoke v2, and the old peers
/// it heard (address, priority as ranked, when).
#[derive(Debug, Default)]
pub struct BridgeModel {
    v2: BTreeMap<IpAddr, Duration>,
    old: BTreeMap<IpAddr, (Ipv4Addr, u8, Duration)>,
}

impl BridgeModel {
    /// An authenticated heartbeat from `from`: tell the bridge and the model.
    pub fn heard_v2(&mut self, bridge: &mut Bridge, now: Duration, from: IpAddr) {
        bridge.heard_v2(now, from);
        self.v2.insert(from, now);
        self.old.remove(&from);
    }

    fn speaks_v2(&self, now: Duration, from: IpAddr) -> bool {
        self.v2.get(&from).is_some_and(|t| now < *t + BRIDGE_DEAD)
    }

    fn speaks_old(&self, now: Duration, from: IpAddr) -> bool {
        self.old
            .get(&from)
            .is_some_and(|(_, _, t)| now < *t + BRIDGE_DEAD)
    }

    /// Feeds `d` from `from` to the bridge and checks the outcome, the implied state and who
    /// gets which protocol against the model. Returns whether the bridge made an advert of it.
    pub fn check(&mut self, bridge: &mut Bridge, now: Duration, from: IpAddr, d: &[u8]) -> bool {
        let peers = peers();
        assert_eq!(
            legacy::looks_legacy(d),
            matches!(d.len(), LEGACY_LEN | LEGACY_LEN_WITH_ID) && d[..2] == [0x02, 0x01]
        );
        let got = bridge.on_datagram(now, from, d, peers, view);
        let known = peers.iter().any(|p| p.ip() == from);
        let speaks_v2 = self.speaks_v2(now, from);
        let made = match (legacy_model(d), got) {
            (Err(want), Err(LegacyDrop::Wire(r))) => {
                assert_eq!(r, want, "{d:02x?}");
                false
            }
            (Ok(_), Err(LegacyDrop::UnknownPeer)) => {
                assert!(!known);
                false
            }
            (Ok(_), Err(LegacyDrop::FromV2Peer)) => {
                assert!(known && speaks_v2);
                false
            }
            (Ok((_, eip)), Err(LegacyDrop::OtherAddress)) => {
                assert!(known && eip != EIP && !speaks_v2);
                false
            }
            (Ok((priority, eip)), Ok(a)) => {
                assert!(known && eip == EIP && !speaks_v2, "{a:?}");
                assert_eq!(a.node, legacy::node_id(from));
                assert!(!a.leaving && a.entries.len() == 1);
                let e = a.entries[0];
                // Priority 0 is legal for the old agent only; it ranks as 1.
                let priority = priority.max(1);
                assert_eq!((e.ip, e.priority, e.epoch), (IpAddr::V4(EIP), priority, 0));
                // The old agent's own rule: it holds when no live old peer announces a
                // strictly lower priority (we stand by, at the worst priority there is).
                let beaten = self.old.iter().any(|(a, (ip, p, t))| {
                    *a != from && *ip == eip && now < *t + BRIDGE_DEAD && *p < priority
                });
                let want = if beaten {
                    IpState::Backup
                } else {
                    IpState::Master
                };
                assert_eq!(e.state, want, "{a:?} with {self:?}");
                self.old.insert(from, (eip, priority, now));
                true
            }
            (want, got) => panic!("bridge: model {want:?}, got {got:?} for {d:02x?}"),
        };
        // A v2 speaker gets v2 only; one heard only in the old protocol the old one only;
        // anyone else both.
        for p in peers {
            let ip = p.ip();
            let v2 = self.speaks_v2(now, ip);
            let want = (v2 || !self.speaks_old(now, ip), !v2);
            assert_eq!(
                (bridge.wants_v2(now, ip), bridge.wants_legacy(now, ip)),
                want,
                "{ip} at {now:?}"
            );
        }
        made
    }
}

/// A key holder's datagram of `kind` for `advert`, or why the encoder refuses it.
pub fn encode(
    enc: &mut Encoder,
    kind: Kind,
    advert: &wire::Advert,
    sent_at: u64,
) -> Result<Vec<u8>, wire::EncodeError> {
    match kind {
        Kind::Heartbeat => enc.encode(advert, sent_at),
        Kind::Reply => enc.encode_reply(advert, sent_at),
        Kind::Probe => enc.encode_probe(&advert.node, sent_at),
    }
}

/// The body of a signed datagram (everything but the MAC).
pub fn body(d: &[u8]) -> &[u8] {
    &d[..d.len().saturating_sub(MAC_LEN)]
}

/// Whether `d` ends with the MAC of the rest under [`KEY`]: only a key holder makes those.
pub fn verifies(d: &[u8]) -> bool {
    d.len() >= MAC_LEN && sign(body(d)) == d
}

//! Heartbeat codec: the authenticated, replay-protected wire v2 datagram carrying one node's view
//! of every elastic IP it watches (as a heartbeat, or as the answer to `exoip check`'s probe),
//! plus the legacy 24-byte exoip v1 payload.
//!
//! The byte layout, the MAC, the anti-replay rules and what is dropped are documented in
//! `docs/wire.md`; keep both in sync.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// UDP port of the heartbeats (the legacy exoip default, so firewall rules carry over).
pub const DEFAULT_PORT: u16 = 12345;
/// First bytes of every v2 datagram.
pub const MAGIC: [u8; 4] = *b"EXIP";
/// Wire version carried after the magic.
pub const VERSION: u8 = 2;
/// Largest datagram sent or accepted: fits the IPv6 minimum MTU (1280) minus IPv6 and UDP
/// headers, so heartbeats are never fragmented. Receive into a buffer of at least
/// `MAX_DATAGRAM + 1` bytes so that oversized datagrams are seen as such, not cut.
pub const MAX_DATAGRAM: usize = 1200;
/// Most entries (elastic IPs) one datagram may carry.
pub const MAX_ENTRIES: usize = 64;
/// Longest node id, in bytes of UTF-8.
pub const MAX_NODE_ID: usize = 128;
/// Length of the HMAC-SHA256 tag that ends every datagram.
pub const MAC_LEN: usize = 32;
/// Most senders the anti-replay table remembers; the least recently heard is forgotten first.
pub const MAX_SENDERS: usize = 1024;
/// Shortest legal key for `AuthKey::from_bytes`.
pub const MIN_KEY_LEN: usize = 16;
/// Length of the legacy exoip heartbeat.
pub const LEGACY_LEN: usize = 24;
/// Later exoip builds append a 16-byte message id to the legacy payload.
pub const LEGACY_LEN_WITH_ID: usize = 40;

const FLAG_LEAVING: u8 = 0x01;
const FLAG_PROBE: u8 = 0x02;
const FLAG_REPLY: u8 = 0x04;
const KNOWN_FLAGS: u8 = FLAG_LEAVING | FLAG_PROBE | FLAG_REPLY;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
/// magic, version, flags, group, incarnation, sequence, sent_at, node id length.
const FIXED_HEADER: usize = 4 + 1 + 1 + 4 + 8 + 8 + 8 + 1;
/// A one-byte node id, no entries, and the tag.
const MIN_DATAGRAM: usize = FIXED_HEADER + 1 + 1 + MAC_LEN;
const GROUP_AT: usize = 6;
/// The version bytes of the legacy heartbeat (0201).
pub const LEGACY_PROTO: [u8; 2] = [0x02, 0x01];
const DERIVATION_LABEL: &[u8] = b"exoip heartbeat v2";

/// What a node says about one elastic IP. The numeric values are the wire encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpState {
    Init = 0,
    Backup = 1,
    Master = 2,
    Fault = 3,
    Leaving = 4,
}

impl IpState {
    /// Lower-case name, as status and check show it.
    pub fn name(self) -> &'static str {
        match self {
            IpState::Init => "init",
            IpState::Backup => "backup",
            IpState::Master => "master",
            IpState::Fault => "fault",
            IpState::Leaving => "leaving",
        }
    }

    fn from_wire(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Init,
            1 => Self::Backup,
            2 => Self::Master,
            3 => Self::Fault,
            4 => Self::Leaving,
            _ => return None,
        })
    }
}

/// One elastic IP as seen by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ip: IpAddr,
    /// Lowest wins; 0 is not a legal priority on the wire.
    pub priority: u8,
    pub state: IpState,
    /// Opaque to the codec: the election's claim counter for this IP.
    pub epoch: u64,
}

/// The content of one heartbeat: who sends it and the state of every IP it watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub node: String,
    /// The sender is shutting down and gives up everything it holds.
    pub leaving: bool,
    pub entries: Vec<Entry>,
}

/// What an authenticated datagram is for; the flags byte carries it (see `docs/wire.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A peer's periodic advert: the only kind the election may act on.
    Heartbeat,
    /// `exoip check` asks the receiver to answer; no entries, never leaving.
    Probe,
    /// An agent's current advert, sent back to a probe's source address.
    Reply,
}

/// An authenticated datagram of any kind, as [`Decoder::decode_message`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    /// For a probe: the prober's node id, not leaving, no entries.
    pub advert: Advert,
}

/// The shared heartbeat key.
#[derive(Clone)]
pub struct AuthKey(Box<[u8]>);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("heartbeat key is {len} bytes long, at least {MIN_KEY_LEN} are required")]
    TooShort { len: usize },
}

impl AuthKey {
    /// Takes the raw content of a key file or variable. One trailing newline (`\n` or `\r\n`)
    /// is dropped because editors and `echo` add it and the peers' files would otherwise
    /// disagree by that byte.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, KeyError> {
        let raw = raw
            .strip_suffix(b"\r\n")
            .or_else(|| raw.strip_suffix(b"\n"))
            .unwrap_or(raw);
        if raw.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: raw.len() });
        }
        Ok(Self(raw.into()))
    }

    /// Peers configured with the same cloud API secret authenticate each other without any
    /// extra configuration; the label keeps this key distinct from any other use of the secret.
    pub fn derive_from_api_secret(secret: &str) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(DERIVATION_LABEL).expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        Self(mac.finalize().into_bytes().to_vec().into())
    }

    /// The key material, for configuration code that keeps it as bytes; never log it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

/// Datagrams of other groups are dropped, so several clusters can share one network.
pub fn group_id(name: &str) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Why an advert cannot be encoded; the agent should reject such a configuration at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("node id is empty")]
    EmptyNodeId,
    #[error("node id is {0} bytes long, at most {MAX_NODE_ID} fit in a heartbeat")]
    NodeIdTooLong(usize),
    #[error("{0} elastic IPs, at most {MAX_ENTRIES} fit in a heartbeat")]
    TooManyEntries(usize),
    #[error("a heartbeat carries at least one elastic IP")]
    NoEntries,
    #[error("priority of {0} is 0, the lowest legal value is 1")]
    ZeroPriority(IpAddr),
    #[error("{0} appears twice in one heartbeat")]
    DuplicateIp(IpAddr),
    #[error("heartbeat would be {0} bytes, at most {MAX_DATAGRAM} are sent (fewer IPv6 elastic IPs or a shorter node id)")]
    TooLarge(usize),
}

fn entry_len(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 1 + 4 + 1 + 1 + 8,
        IpAddr::V6(_) => 1 + 16 + 1 + 1 + 8,
    }
}

/// Size of the datagram `advert` encodes to, whether or not it is within the limits.
pub fn encoded_len(advert: &Advert) -> usize {
    FIXED_HEADER
        + advert.node.len()
        + 1
        + advert
            .entries
            .iter()
            .map(|e| entry_len(&e.ip))
            .sum::<usize>()
        + MAC_LEN
}

/// Checks `advert` against the wire limits of a heartbeat (or a reply, which has the same rules)
/// and returns its encoded size; lets configuration code refuse at start what the encoder would
/// refuse at every interval.
pub fn check_limits(advert: &Advert) -> Result<usize, EncodeError> {
    if advert.entries.is_empty() {
        return Err(EncodeError::NoEntries);
    }
    check_sizes(advert)
}

/// The limits every kind shares; a probe is an advert without entries.
fn check_sizes(advert: &Advert) -> Result<usize, EncodeError> {
    let node = advert.node.len();
    if node == 0 {
        return Err(EncodeError::EmptyNodeId);
    }
    if node > MAX_NODE_ID {
        return Err(EncodeError::NodeIdTooLong(node));
    }
    if advert.entries.len() > MAX_ENTRIES {
        return Err(EncodeError::TooManyEntries(advert.entries.len()));
    }
    for (i, e) in advert.entries.iter().enumerate() {
        if e.priority == 0 {
            return Err(EncodeError::ZeroPriority(e.ip));
        }
        if advert.entries[..i].iter().any(|o| o.ip == e.ip) {
            return Err(EncodeError::DuplicateIp(e.ip));
        }
    }
    let len = encoded_len(advert);
    if len > MAX_DATAGRAM {
        return Err(EncodeError::TooLarge(len));
    }
    Ok(len)
}

/// Builds this node's datagrams; owns the sequence number so it can only grow.
pub struct Encoder {
    mac: HmacSha256,
    group: u32,
    incarnation: u64,
    seq: u64,
}

impl Encoder {
    /// `incarnation` must be larger than that of any earlier run of this node, or peers drop
    /// its datagrams as replays (the agent uses its start time in unix microseconds).
    pub fn new(key: AuthKey, group: u32, incarnation: u64) -> Self {
        Self {
            mac: key.mac(),
            group,
            incarnation,
            seq: 0,
        }
    }

    /// A heartbeat.
    pub fn encode(
        &mut self,
        advert: &Advert,
        sent_at_unix_ms: u64,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(advert, sent_at_unix_ms, &mut out)?;
        Ok(out)
    }

    /// Same as `encode`, reusing `out`'s allocation across intervals.
    pub fn encode_into(
        &mut self,
        advert: &Advert,
        sent_at_unix_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.encode_kind_into(Kind::Heartbeat, advert, sent_at_unix_ms, out)
    }

    /// The answer to a probe: this node's current advert, which the prober reads but no
    /// election acts on. It takes a sequence number like any datagram of this node.
    pub fn encode_reply(
        &mut self,
        advert: &Advert,
        sent_at_unix_ms: u64,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_kind_into(Kind::Reply, advert, sent_at_unix_ms, &mut out)?;
        Ok(out)
    }

    /// A probe from `node` (by convention `check:<instance id>`, so it never shares an
    /// anti-replay slot with an agent): "answer me if you share my key and group".
    pub fn encode_probe(
        &mut self,
        node: &str,
        sent_at_unix_ms: u64,
    ) -> Result<Vec<u8>, EncodeError> {
        let probe = Advert {
            node: node.to_owned(),
            leaving: false,
            entries: Vec::new(),
        };
        let mut out = Vec::new();
        self.encode_kind_into(Kind::Probe, &probe, sent_at_unix_ms, &mut out)?;
        Ok(out)
    }

    fn encode_kind_into(
        &mut self,
        kind: Kind,
        advert: &Advert,
        sent_at_unix_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = match kind {
            Kind::Heartbeat | Kind::Reply => check_limits(advert)?,
            // Built by encode_probe: no entries, not leaving.
            Kind::Probe => check_sizes(advert)?,
        };
        // Saturating: 2^64 datagrams cannot be reached; if it were, peers would drop the rest as
        // replays, which is safe, rather than accept a wrapped sequence.
        self.seq = self.seq.saturating_add(1);
        let leaving = if advert.leaving { FLAG_LEAVING } else { 0 };
        let flags = match kind {
            Kind::Heartbeat => leaving,
            Kind::Probe => FLAG_PROBE,
            Kind::Reply => FLAG_REPLY | leaving,
        };

        out.clear();
        out.reserve(len);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&sent_at_unix_ms.to_be_bytes());
        // Casts are within range: check_limits() bounded both counts.
        out.push(advert.node.len() as u8);
        out.extend_from_slice(advert.node.as_bytes());
        out.push(advert.entries.len() as u8);
        for e in &advert.entries {
            match e.ip {
                IpAddr::V4(a) => {
                    out.push(FAMILY_V4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(FAMILY_V6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.push(e.priority);
            out.push(e.state as u8);
            out.extend_from_slice(&e.epoch.to_be_bytes());
        }
        let tag = self
            .mac
            .clone()
            .chain_update(&out[..])
            .finalize()
            .into_bytes();
        out.extend_from_slice(&tag);
        debug_assert_eq!(out.len(), len);
        Ok(())
    }
}

/// Why a received datagram was dropped; `label` names the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("shorter than the smallest heartbeat")]
    Truncated,
    #[error("not a heartbeat (bad magic)")]
    BadMagic,
    #[error("unsupported heartbeat version")]
    BadVersion,
    #[error("heartbeat of another group")]
    UnknownGroup,
    #[error("authentication failed (wrong key or altered datagram)")]
    BadMac,
    #[error("authenticated but malformed heartbeat")]
    Malformed,
    #[error("a probe or a probe reply where only heartbeats are expected")]
    NotHeartbeat,
    #[error("replayed or reordered heartbeat")]
    Replayed,
    #[error("heartbeat timestamp too far from now")]
    Stale,
    #[error("datagram larger than any heartbeat")]
    TooLarge,
}

impl DropReason {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::UnknownGroup => "unknown_group",
            Self::BadMac => "bad_mac",
            Self::Malformed => "malformed",
            Self::NotHeartbeat => "not_heartbeat",
            Self::Replayed => "replayed",
            Self::Stale => "stale",
            Self::TooLarge => "too_large",
        }
    }
}

struct Seen {
    incarnation: u64,
    seq: u64,
    heard: u64,
}

/// Checks, authenticates and parses peers' datagrams, remembering per sender the newest
/// (incarnation, sequence) accepted.
pub struct Decoder {
    mac: HmacSha256,
    group: u32,
    max_age_ms: Option<u64>,
    senders: HashMap<Box<str>, Seen>,
    // A counter, not a clock: eviction must not depend on the caller's `now` being monotonic.
    heard: u64,
}

/// Bounds-checked reader; every `None` means the authenticated body is malformed.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
}

struct Parsed<'a> {
    kind: Kind,
    leaving: bool,
    incarnation: u64,
    seq: u64,
    sent_at: u64,
    node: &'a str,
    entries: Vec<Entry>,
}

fn parse_body(body: &[u8]) -> Option<Parsed<'_>> {
    let mut c = Cursor(body);
    c.take(MAGIC.len() + 1)?; // magic and version, checked before the MAC
    let flags = c.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let kind = match (flags & FLAG_PROBE != 0, flags & FLAG_REPLY != 0) {
        (false, false) => Kind::Heartbeat,
        // A probe asks for nothing but an answer: leaving means nothing there.
        (true, false) if flags & FLAG_LEAVING == 0 => Kind::Probe,
        (false, true) => Kind::Reply,
        _ => return None,
    };
    c.take(4)?; // group, checked before the MAC
    let incarnation = c.u64()?;
    let seq = c.u64()?;
    let sent_at = c.u64()?;
    let node_len = usize::from(c.u8()?);
    if node_len == 0 || node_len > MAX_NODE_ID {
        return None;
    }
    let node = std::str::from_utf8(c.take(node_len)?).ok()?;
    let count = usize::from(c.u8()?);
    // Only a probe is empty: an advert that watches nothing would say nothing.
    if count > MAX_ENTRIES || (count == 0) != (kind == Kind::Probe) {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let ip = match c.u8()? {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(c.array::<4>()?)),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(c.array::<16>()?)),
            _ => return None,
        };
        let priority = c.u8()?;
        let state = IpState::from_wire(c.u8()?)?;
        let epoch = c.u64()?;
        if priority == 0 || entries.iter().any(|e: &Entry| e.ip == ip) {
            return None;
        }
        entries.push(Entry {
            ip,
            priority,
            state,
            epoch,
        });
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(Parsed {
        kind,
        leaving: flags & FLAG_LEAVING != 0,
        incarnation,
        seq,
        sent_at,
        node,
        entries,
    })
}

impl Decoder {
    /// `max_age` bounds how far `sent_at` may be from `now` in either direction; it is what
    /// stops replays after this receiver restarted with an empty table. `None` disables it.
    pub fn new(key: AuthKey, group: u32, max_age: Option<Duration>) -> Self {
        Self {
            mac: key.mac(),
            group,
            max_age_ms: max_age.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            senders: HashMap::new(),
            heard: 0,
        }
    }

    /// A peer's heartbeat. Probes and replies are dropped as `NotHeartbeat` and leave the
    /// anti-replay table untouched, so no code path can mistake them for a live peer.
    pub fn decode(&mut self, datagram: &[u8], now_unix_ms: u64) -> Result<Advert, DropReason> {
        self.decode_kinds(datagram, now_unix_ms, |k| k == Kind::Heartbeat)
            .map(|m| m.advert)
    }

    /// Any authenticated datagram: for the agent's socket (which answers probes) and for
    /// `exoip check` (which waits for replies). Probes and replies go through the same
    /// anti-replay table as heartbeats, keyed by their node id.
    pub fn decode_message(
        &mut self,
        datagram: &[u8],
        now_unix_ms: u64,
    ) -> Result<Message, DropReason> {
        self.decode_kinds(datagram, now_unix_ms, |_| true)
    }

    fn decode_kinds(
        &mut self,
        datagram: &[u8],
        now_unix_ms: u64,
        wanted: impl Fn(Kind) -> bool,
    ) -> Result<Message, DropReason> {
        let d = datagram;
        if d.len() > MAX_DATAGRAM {
            return Err(DropReason::TooLarge);
        }
        if d.len() < MAGIC.len() {
            return Err(DropReason::Truncated);
        }
        if d[..MAGIC.len()] != MAGIC {
            return Err(DropReason::BadMagic);
        }
        match d.get(MAGIC.len()) {
            None => return Err(DropReason::Truncated),
            Some(&VERSION) => {}
            Some(_) => return Err(DropReason::BadVersion),
        }
        if d.len() < MIN_DATAGRAM {
            return Err(DropReason::Truncated);
        }
        let group = u32::from_be_bytes([
            d[GROUP_AT],
            d[GROUP_AT + 1],
            d[GROUP_AT + 2],
            d[GROUP_AT + 3],
        ]);
        if group != self.group {
            return Err(DropReason::UnknownGroup);
        }
        let (body, tag) = d.split_at(d.len() - MAC_LEN);
        // verify_slice compares in constant time.
        self.mac
            .clone()
            .chain_update(body)
            .verify_slice(tag)
            .map_err(|_| DropReason::BadMac)?;

        let p = parse_body(body).ok_or(DropReason::Malformed)?;
        if !wanted(p.kind) {
            return Err(DropReason::NotHeartbeat);
        }

        if let Some(seen) = self.senders.get(p.node) {
            if (p.incarnation, p.seq) <= (seen.incarnation, seen.seq) {
                return Err(DropReason::Replayed);
            }
        }
        if let Some(max_age) = self.max_age_ms {
            if now_unix_ms.abs_diff(p.sent_at) > max_age {
                return Err(DropReason::Stale);
            }
        }

        self.heard += 1;
        let seen = Seen {
            incarnation: p.incarnation,
            seq: p.seq,
            heard: self.heard,
        };
        if let Some(slot) = self.senders.get_mut(p.node) {
            *slot = seen;
        } else {
            if self.senders.len() >= MAX_SENDERS {
                self.evict_least_recent();
            }
            self.senders.insert(p.node.into(), seen);
        }

        Ok(Message {
            kind: p.kind,
            advert: Advert {
                node: p.node.to_owned(),
                leaving: p.leaving,
                entries: p.entries,
            },
        })
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, s)| s.heard)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.senders.remove(&k);
        }
    }
}

/// A heartbeat of the legacy Go exoip (unauthenticated, one IPv4 elastic IP per datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyAdvert {
    pub priority: u8,
    pub eip: Ipv4Addr,
    /// The sender's NIC UUID, as raw bytes.
    pub nic_id: [u8; 16],
}

/// Accepts the documented 24-byte payload and the 40-byte variant of later exoip builds, whose
/// trailing 16-byte message id carries nothing the election needs.
pub fn decode_legacy(datagram: &[u8]) -> Result<LegacyAdvert, DropReason> {
    let d = datagram;
    if d.len() < LEGACY_LEN {
        return Err(DropReason::Truncated);
    }
    if d.len() != LEGACY_LEN && d.len() != LEGACY_LEN_WITH_ID {
        return Err(if d.len() > LEGACY_LEN_WITH_ID {
            DropReason::TooLarge
        } else {
            DropReason::Malformed
        });
    }
    if d[..2] != LEGACY_PROTO {
        return Err(DropReason::BadMagic);
    }
    // exoip repeats the priority byte as its only integrity check.
    if d[2] != d[3] {
        return Err(DropReason::Malformed);
    }
    let mut nic_id = [0; 16];
    nic_id.copy_from_slice(&d[8..24]);
    Ok(LegacyAdvert {
        priority: d[2],
        eip: Ipv4Addr::new(d[4], d[5], d[6], d[7]),
        nic_id,
    })
}

pub fn encode_legacy(priority: u8, eip: Ipv4Addr, nic_id: [u8; 16]) -> [u8; LEGACY_LEN] {
    let mut out = [0; LEGACY_LEN];
    out[..2].copy_from_slice(&LEGACY_PROTO);
    out[2] = priority;
    out[3] = priority;
    out[4..8].copy_from_slice(&eip.octets());
    out[8..].copy_from_slice(&nic_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    const NOW: u64 = 1_700_000_000_000;
    const AGE: Duration = Duration::from_secs(30);

    fn key() -> AuthKey {
        AuthKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn group() -> u32 {
        group_id("test-cluster")
    }

    fn advert() -> Advert {
        Advert {
            node: "5f0e7c1a-2d3b-4c5d-8e9f-0a1b2c3d4e5f".into(),
            leaving: false,
            entries: vec![
                Entry {
                    ip: "192.0.2.10".parse().unwrap(),
                    priority: 10,
                    state: IpState::Master,
                    epoch: 7,
                },
                Entry {
                    ip: "2001:db8::10".parse().unwrap(),
                    priority: 1,
                    state: IpState::Backup,
                    epoch: u64::MAX,
                },
                Entry {
                    ip: "198.51.100.7".parse().unwrap(),
                    priority: 255,
                    state: IpState::Fault,
                    epoch: 0,
                },
                Entry {
                    ip: "2001:db8:ffff::1".parse().unwrap(),
                    priority: 42,
                    state: IpState::Init,
                    epoch: 1 << 40,
                },
                Entry {
                    ip: "203.0.113.99".parse().unwrap(),
                    priority: 3,
                    state: IpState::Leaving,
                    epoch: 12,
                },
            ],
        }
    }

    fn encoder(incarnation: u64) -> Encoder {
        Encoder::new(key(), group(), incarnation)
    }

    fn decoder() -> Decoder {
        Decoder::new(key(), group(), Some(AGE))
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let mut enc = encoder(1);
        let mut dec = decoder();
        let a = advert();
        let d = enc.encode(&a, NOW).unwrap();
        assert_eq!(d.len(), encoded_len(&a));
        assert_eq!(dec.decode(&d, NOW), Ok(a.clone()));

        let leaving = Advert {
            leaving: true,
            entries: vec![Entry {
                state: IpState::Leaving,
                ..a.entries[0]
            }],
            ..a
        };
        let d = enc.encode(&leaving, NOW).unwrap();
        assert_eq!(dec.decode(&d, NOW), Ok(leaving));
    }

    // Pins the documented layout (docs/wire.md) byte by byte, independently of the encoder.
    #[test]
    fn layout_matches_documentation() {
        let a = Advert {
            node: "n1".into(),
            leaving: true,
            entries: vec![
                Entry {
                    ip: "192.0.2.1".parse().unwrap(),
                    priority: 10,
                    state: IpState::Master,
                    epoch: 0x0102,
                },
                Entry {
                    ip: "2001:db8::1".parse().unwrap(),
                    priority: 20,
                    state: IpState::Backup,
                    epoch: 3,
                },
            ],
        };
        let mut enc = Encoder::new(key(), 0xA1B2_C3D4, 0x1122_3344_5566_7788);
        let d = enc.encode(&a, 0x0000_0190_0000_0001).unwrap();

        let mut want = Vec::new();
        want.extend_from_slice(b"EXIP");
        want.extend_from_slice(&[2, 0x01]);
        want.extend_from_slice(&[0xA1, 0xB2, 0xC3, 0xD4]);
        want.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // first sequence number is 1
        want.extend_from_slice(&[0, 0, 0x01, 0x90, 0, 0, 0, 1]);
        want.extend_from_slice(&[2, b'n', b'1']);
        want.push(2);
        want.extend_from_slice(&[4, 192, 0, 2, 1, 10, 2, 0, 0, 0, 0, 0, 0, 1, 2]);
        want.push(6);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[20, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&d[..d.len() - MAC_LEN], &want[..]);

        let mut mac = HmacSha256::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(&want);
        assert_eq!(&d[d.len() - MAC_LEN..], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        assert!(decoder().decode(&d, NOW).is_ok());
        for bit in 0..d.len() * 8 {
            let mut f = d.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let got = decoder().decode(&f, NOW);
            assert!(got.is_err(), "bit {bit} flipped was accepted: {got:?}");
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        for len in 0..d.len() {
            let got = decoder().decode(&d[..len], NOW);
            assert!(
                matches!(got, Err(DropReason::Truncated | DropReason::BadMac)),
                "truncated to {len}: {got:?}"
            );
        }
        let mut longer = d.clone();
        longer.push(0);
        assert_eq!(decoder().decode(&longer, NOW), Err(DropReason::BadMac));
    }

    #[test]
    fn wrong_key_or_group_is_rejected() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        let other = AuthKey::from_bytes(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert_eq!(
            Decoder::new(other, group(), None).decode(&d, NOW),
            Err(DropReason::BadMac)
        );
        assert_eq!(
            Decoder::new(key(), group_id("other-cluster"), None).decode(&d, NOW),
            Err(DropReason::UnknownGroup)
        );
    }

    #[test]
    fn replay_and_reordering_are_rejected() {
        let mut enc = encoder(1);
        let mut dec = decoder();
        let first = enc.encode(&advert(), NOW).unwrap();
        let second = enc.encode(&advert(), NOW + 1).unwrap();
        assert!(dec.decode(&first, NOW).is_ok());
        assert_eq!(dec.decode(&first, NOW), Err(DropReason::Replayed));
        assert!(dec.decode(&second, NOW + 1).is_ok());
        assert_eq!(dec.decode(&first, NOW + 1), Err(DropReason::Replayed));

        // A dropped datagram is no reason to refuse the next ones.
        let _lost = enc.encode(&advert(), NOW + 2).unwrap();
        let fourth = enc.encode(&advert(), NOW + 3).unwrap();
        assert!(dec.decode(&fourth, NOW + 3).is_ok());
    }

    #[test]
    fn new_incarnation_wins_and_old_one_is_replayed() {
        let mut old = encoder(1_000);
        let mut dec = decoder();
        let captured = old.encode(&advert(), NOW).unwrap();
        for _ in 0..10 {
            old.encode(&advert(), NOW).unwrap();
        }
        let late_old = old.encode(&advert(), NOW).unwrap();
        assert!(dec.decode(&captured, NOW).is_ok());

        // The restarted sender starts its sequence over, which must be accepted.
        let mut new = encoder(2_000);
        assert!(dec
            .decode(&new.encode(&advert(), NOW).unwrap(), NOW)
            .is_ok());
        assert_eq!(dec.decode(&captured, NOW), Err(DropReason::Replayed));
        assert_eq!(dec.decode(&late_old, NOW), Err(DropReason::Replayed));
        assert!(dec
            .decode(&new.encode(&advert(), NOW).unwrap(), NOW)
            .is_ok());
    }

    #[test]
    fn replay_state_is_per_sender() {
        let mut dec = decoder();
        let mut a = encoder(5);
        let mut b = encoder(1);
        let other = Advert {
            node: "other".into(),
            ..advert()
        };
        assert!(dec.decode(&a.encode(&advert(), NOW).unwrap(), NOW).is_ok());
        // A lower incarnation is fine when it is someone else's.
        assert!(dec.decode(&b.encode(&other, NOW).unwrap(), NOW).is_ok());
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let mut enc = encoder(1);
        let mut dec = decoder();
        let age = AGE.as_millis() as u64;
        let old = enc.encode(&advert(), NOW - age - 1).unwrap();
        let future = enc.encode(&advert(), NOW + age + 1).unwrap();
        assert_eq!(dec.decode(&old, NOW), Err(DropReason::Stale));
        assert_eq!(dec.decode(&future, NOW), Err(DropReason::Stale));
        // Rejected datagrams leave no trace in the replay table.
        let edge = enc.encode(&advert(), NOW - age).unwrap();
        assert!(dec.decode(&edge, NOW).is_ok());
        let edge = enc.encode(&advert(), NOW + age).unwrap();
        assert!(dec.decode(&edge, NOW).is_ok());

        let mut unbounded = Decoder::new(key(), group(), None);
        assert!(unbounded
            .decode(&enc.encode(&advert(), 0).unwrap(), NOW)
            .is_ok());
    }

    #[test]
    fn replay_table_is_bounded_and_forgets_the_least_recent() {
        let mut dec = decoder();
        let mut encs: Vec<Encoder> = (0..=MAX_SENDERS).map(|_| encoder(1)).collect();
        let node = |i: usize| Advert {
            node: format!("node-{i}"),
            leaving: false,
            entries: advert().entries[..1].to_vec(),
        };
        let first = encs[0].encode(&node(0), NOW).unwrap();
        assert!(dec.decode(&first, NOW).is_ok());
        for (i, enc) in encs.iter_mut().enumerate().skip(1) {
            assert!(dec.decode(&enc.encode(&node(i), NOW).unwrap(), NOW).is_ok());
        }
        assert_eq!(dec.senders.len(), MAX_SENDERS);
        assert!(!dec.senders.contains_key("node-0"));
        assert!(dec.senders.contains_key("node-1"));
        // Forgotten, hence accepted again: the timestamp check is what still bounds such replays.
        assert!(dec.decode(&first, NOW).is_ok());
        assert!(!dec.senders.contains_key("node-1"));
    }

    #[test]
    fn encoder_enforces_the_limits() {
        let mut enc = encoder(1);
        let mut a = advert();
        a.node = String::new();
        assert_eq!(enc.encode(&a, NOW), Err(EncodeError::EmptyNodeId));
        a.node = "é".repeat(65);
        assert_eq!(enc.encode(&a, NOW), Err(EncodeError::NodeIdTooLong(130)));
        a.node = "x".repeat(MAX_NODE_ID);
        assert!(enc.encode(&a, NOW).is_ok());

        let v4 = |i: usize| Entry {
            ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)),
            priority: 1,
            state: IpState::Backup,
            epoch: 0,
        };
        // The bounds were chosen so 64 IPv4 entries fit even with the longest node id.
        a.entries = (0..MAX_ENTRIES).map(v4).collect();
        let d = enc.encode(&a, NOW).unwrap();
        assert!(d.len() <= MAX_DATAGRAM);
        assert_eq!(
            decoder().decode(&d, NOW).unwrap().entries.len(),
            MAX_ENTRIES
        );
        a.entries.push(v4(200));
        assert_eq!(enc.encode(&a, NOW), Err(EncodeError::TooManyEntries(65)));

        a.entries = (0..40u16)
            .map(|i| Entry {
                ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                priority: 1,
                state: IpState::Backup,
                epoch: 0,
            })
            .collect();
        assert!(matches!(enc.encode(&a, NOW), Err(EncodeError::TooLarge(n)) if n > MAX_DATAGRAM));

        a.entries = vec![v4(1), v4(1)];
        assert_eq!(enc.encode(&a, NOW), Err(EncodeError::DuplicateIp(v4(1).ip)));
        a.entries = vec![Entry {
            priority: 0,
            ..v4(1)
        }];
        assert_eq!(
            enc.encode(&a, NOW),
            Err(EncodeError::ZeroPriority(v4(1).ip))
        );
    }

    /// Signs `body` as a key holder would, so the parser behind the MAC gets exercised.
    fn sign(body: &[u8]) -> Vec<u8> {
        let mut d = body.to_vec();
        d.extend_from_slice(&key().mac().chain_update(body).finalize().into_bytes());
        d
    }

    #[test]
    fn authenticated_but_malformed_bodies_are_rejected() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        let body = &d[..d.len() - MAC_LEN];
        assert!(decoder().decode(&sign(body), NOW).is_ok());

        let node_len_at = FIXED_HEADER - 1;
        let count_at = FIXED_HEADER + advert().node.len();
        let first_entry = count_at + 1;
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("unknown flag", Box::new(|b| b[5] |= 0x80)),
            ("node id empty", Box::new(move |b| b[node_len_at] = 0)),
            (
                "node id not UTF-8",
                Box::new(move |b| b[node_len_at + 1] = 0xff),
            ),
            (
                "count too big",
                Box::new(move |b| b[count_at] = MAX_ENTRIES as u8 + 1),
            ),
            ("count short", Box::new(move |b| b[count_at] -= 1)),
            ("count long", Box::new(move |b| b[count_at] += 1)),
            ("family", Box::new(move |b| b[first_entry] = 5)),
            ("priority 0", Box::new(move |b| b[first_entry + 5] = 0)),
            ("state", Box::new(move |b| b[first_entry + 6] = 5)),
            ("trailing byte", Box::new(|b| b.push(0))),
            (
                "duplicate entry",
                Box::new(move |b| {
                    b[count_at] += 1;
                    let e = b[first_entry..first_entry + 15].to_vec();
                    b.extend_from_slice(&e);
                }),
            ),
        ];
        for (what, mutate) in cases {
            let mut b = body.to_vec();
            mutate(&mut b);
            assert_eq!(
                decoder().decode(&sign(&b), NOW),
                Err(DropReason::Malformed),
                "{what}"
            );
        }
    }

    #[test]
    fn pre_mac_checks_and_size_limit() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        let mut dec = decoder();
        assert_eq!(
            dec.decode(&[0; MAX_DATAGRAM + 1], NOW),
            Err(DropReason::TooLarge)
        );
        assert_eq!(dec.decode(b"EXI", NOW), Err(DropReason::Truncated));
        assert_eq!(dec.decode(b"EXIP", NOW), Err(DropReason::Truncated));
        assert_eq!(dec.decode(b"EXIP\x02", NOW), Err(DropReason::Truncated));
        assert_eq!(dec.decode(b"EXIP\x03", NOW), Err(DropReason::BadVersion));
        let legacy = encode_legacy(10, Ipv4Addr::new(192, 0, 2, 1), [7; 16]);
        assert_eq!(dec.decode(&legacy, NOW), Err(DropReason::BadMagic));
        let mut v3 = d.clone();
        v3[4] = 3;
        assert_eq!(dec.decode(&v3, NOW), Err(DropReason::BadVersion));
    }

    #[test]
    fn probe_and_reply_round_trip_with_their_flags() {
        let mut prober = encoder(7);
        let mut agent = encoder(9);
        let mut at_agent = decoder();
        let mut at_prober = decoder();

        let probe = prober.encode_probe("check:i-1", NOW).unwrap();
        assert_eq!(probe[5], 0x02, "probe is flag bit 1");
        assert_eq!(probe.len(), MIN_DATAGRAM - 1 + "check:i-1".len());
        let got = at_agent.decode_message(&probe, NOW).unwrap();
        assert_eq!(got.kind, Kind::Probe);
        assert_eq!(
            got.advert,
            Advert {
                node: "check:i-1".into(),
                leaving: false,
                entries: vec![],
            }
        );

        let reply = agent.encode_reply(&advert(), NOW).unwrap();
        assert_eq!(reply[5], 0x04, "reply is flag bit 2");
        let got = at_prober.decode_message(&reply, NOW).unwrap();
        assert_eq!((got.kind, got.advert), (Kind::Reply, advert()));

        // A stopping agent still answers, and says it is leaving.
        let leaving = Advert {
            leaving: true,
            ..advert()
        };
        let reply = agent.encode_reply(&leaving, NOW).unwrap();
        assert_eq!(reply[5], 0x05);
        let got = at_prober.decode_message(&reply, NOW).unwrap();
        assert_eq!((got.kind, got.advert), (Kind::Reply, leaving));

        // Heartbeats come through decode_message too, marked as such; a reply shares the
        // sender's sequence with its heartbeats, so neither is taken for a replay of the other.
        let hb = agent.encode(&advert(), NOW).unwrap();
        assert_eq!(
            at_prober.decode_message(&hb, NOW).unwrap().kind,
            Kind::Heartbeat
        );
        assert_eq!(
            at_prober.decode_message(&hb, NOW),
            Err(DropReason::Replayed)
        );
        // And probes are replay-protected like everything else.
        assert_eq!(
            at_agent.decode_message(&probe, NOW),
            Err(DropReason::Replayed)
        );
    }

    #[test]
    fn heartbeat_decoding_never_returns_a_probe_or_a_reply() {
        let mut dec = decoder();
        let probe = encoder(1).encode_probe("check:i-1", NOW).unwrap();
        let reply = encoder(1).encode_reply(&advert(), NOW).unwrap();
        assert_eq!(dec.decode(&probe, NOW), Err(DropReason::NotHeartbeat));
        assert_eq!(dec.decode(&reply, NOW), Err(DropReason::NotHeartbeat));
        // Dropping them left no anti-replay trace: the same datagrams are still fresh.
        assert_eq!(dec.decode_message(&probe, NOW).unwrap().kind, Kind::Probe);
        assert_eq!(dec.decode_message(&reply, NOW).unwrap().kind, Kind::Reply);
        // Unauthenticated ones fail on the MAC first, whatever they claim to be.
        let mut forged = encoder(2).encode_probe("check:i-1", NOW).unwrap();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(dec.decode_message(&forged, NOW), Err(DropReason::BadMac));
        assert_eq!(DropReason::NotHeartbeat.label(), "not_heartbeat");
    }

    #[test]
    fn flag_combinations_and_empty_adverts() {
        let d = encoder(1).encode(&advert(), NOW).unwrap();
        let body = &d[..d.len() - MAC_LEN];
        let probe = encoder(1).encode_probe("check:i-1", NOW).unwrap();
        let probe_body = &probe[..probe.len() - MAC_LEN];
        let count_at = FIXED_HEADER + advert().node.len();
        let probe_count_at = FIXED_HEADER + "check:i-1".len();

        let with_flags = |b: &[u8], flags: u8| {
            let mut b = b.to_vec();
            b[5] = flags;
            sign(&b)
        };
        // Every bit above the three known ones is still refused, with or without the others.
        for bit in 3..8 {
            for base in [0x00, 0x01, 0x04] {
                assert_eq!(
                    decoder().decode_message(&with_flags(body, base | 1 << bit), NOW),
                    Err(DropReason::Malformed),
                    "bit {bit} over {base:#x}"
                );
            }
        }
        // Probe and reply at once, or a leaving probe, mean nothing.
        for flags in [0x06, 0x07, 0x03] {
            assert_eq!(
                decoder().decode_message(&with_flags(probe_body, flags), NOW),
                Err(DropReason::Malformed),
                "flags {flags:#x}"
            );
        }
        // Zero entries: a probe's privilege.
        for flags in [0x00, 0x01, 0x04, 0x05] {
            assert_eq!(
                decoder().decode_message(&with_flags(probe_body, flags), NOW),
                Err(DropReason::Malformed),
                "empty advert with flags {flags:#x}"
            );
        }
        // A probe carrying entries is refused too.
        let mut b = body.to_vec();
        b[5] = 0x02;
        assert_eq!(
            decoder().decode_message(&sign(&b), NOW),
            Err(DropReason::Malformed)
        );
        // The unmodified bodies, re-signed, still pass: the cases above fail on the flags alone.
        assert!(decoder().decode_message(&sign(body), NOW).is_ok());
        assert!(decoder().decode_message(&sign(probe_body), NOW).is_ok());
        assert_eq!(probe_body[probe_count_at], 0);
        assert_eq!(body[count_at], 5);

        let empty = Advert {
            entries: vec![],
            ..advert()
        };
        assert_eq!(encoder(1).encode(&empty, NOW), Err(EncodeError::NoEntries));
        assert_eq!(
            encoder(1).encode_reply(&empty, NOW),
            Err(EncodeError::NoEntries)
        );
        assert_eq!(check_limits(&empty), Err(EncodeError::NoEntries));
        assert_eq!(
            encoder(1).encode_probe("", NOW),
            Err(EncodeError::EmptyNodeId)
        );
        assert_eq!(
            encoder(1).encode_probe(&"x".repeat(MAX_NODE_ID + 1), NOW),
            Err(EncodeError::NodeIdTooLong(MAX_NODE_ID + 1))
        );
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(20_240_611);
        let valid = encoder(1).encode(&advert(), NOW).unwrap();
        let mut dec = Decoder::new(key(), group(), None);
        let mut forged = 0;
        for i in 0..100_000u32 {
            let len = rng.gen_range(0..=MAX_DATAGRAM + 8);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf[..]);
            let signed = i % 4 == 3;
            match i % 4 {
                // Pure noise.
                0 => {}
                // Noise behind a valid prefix, to reach the MAC check.
                1 => {
                    let n = buf.len().min(GROUP_AT + 4);
                    buf[..n].copy_from_slice(&valid[..n]);
                }
                // A valid datagram with random bytes overwritten.
                2 => {
                    buf = valid.clone();
                    for _ in 0..rng.gen_range(1..4) {
                        let at = rng.gen_range(0..buf.len());
                        buf[at] = rng.gen();
                    }
                }
                // Signed noise behind a valid prefix: the parser itself sees garbage.
                _ => {
                    let cut = rng.gen_range(0..valid.len() - MAC_LEN);
                    let mut body = valid[..cut].to_vec();
                    let mut noise = vec![0u8; rng.gen_range(0..200)];
                    rng.fill(&mut noise[..]);
                    body.extend_from_slice(&noise);
                    if rng.gen_bool(0.5) && body.len() > FIXED_HEADER {
                        // Plausible lengths make deeper parsing more likely.
                        body[FIXED_HEADER - 1] = rng.gen_range(1..40);
                    }
                    buf = sign(&body);
                }
            }
            if dec.decode(&buf, NOW).is_ok() && !signed && buf != valid {
                forged += 1;
            }
            let _ = decode_legacy(&buf);
        }
        assert_eq!(forged, 0, "unsigned random datagrams were accepted");
    }

    #[test]
    fn key_parsing_and_derivation() {
        let k = AuthKey::from_bytes(b"0123456789abcdef\n").unwrap();
        assert_eq!(&*k.0, b"0123456789abcdef");
        let k = AuthKey::from_bytes(b"0123456789abcdef\r\n").unwrap();
        assert_eq!(&*k.0, b"0123456789abcdef");
        assert_eq!(
            AuthKey::from_bytes(b"0123456789abcde\n").unwrap_err(),
            KeyError::TooShort { len: 15 }
        );
        assert_eq!(format!("{k:?}"), "AuthKey(<redacted>)");

        // Same secret, same key: peers interoperate without a key file.
        let a = AuthKey::derive_from_api_secret("s3cr3t");
        let b = AuthKey::derive_from_api_secret("s3cr3t");
        let c = AuthKey::derive_from_api_secret("s3cr3u");
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, c.0);
        assert_eq!(a.0.len(), 32);
        let d = Encoder::new(a.clone(), group(), 1)
            .encode(&advert(), NOW)
            .unwrap();
        assert!(Decoder::new(b.clone(), group(), None)
            .decode(&d, NOW)
            .is_ok());
        assert_eq!(
            Decoder::new(c.clone(), group(), None).decode(&d, NOW),
            Err(DropReason::BadMac)
        );

        // The group id is the first four bytes of SHA-256, big-endian.
        assert_eq!(group_id(""), 0xe3b0_c442);
        assert_ne!(group_id("a"), group_id("b"));
    }

    #[test]
    fn legacy_round_trip_and_rejections() {
        let uuid = [
            0x5f, 0x0e, 0x7c, 0x1a, 0x2d, 0x3b, 0x4c, 0x5d, 0x8e, 0x9f, 0x0a, 0x1b, 0x2c, 0x3d,
            0x4e, 0x5f,
        ];
        let eip = Ipv4Addr::new(198, 51, 100, 50);
        let d = encode_legacy(10, eip, uuid);
        assert_eq!(&d[..8], &[0x02, 0x01, 10, 10, 198, 51, 100, 50]);
        let want = LegacyAdvert {
            priority: 10,
            eip,
            nic_id: uuid,
        };
        assert_eq!(decode_legacy(&d), Ok(want));

        let mut with_id = d.to_vec();
        with_id.extend_from_slice(&[0xab; 16]);
        assert_eq!(decode_legacy(&with_id), Ok(want));

        let mut bad = d;
        bad[3] = 11;
        assert_eq!(decode_legacy(&bad), Err(DropReason::Malformed));
        let mut bad = d;
        bad[1] = 0x02;
        assert_eq!(decode_legacy(&bad), Err(DropReason::BadMagic));
        for len in 0..LEGACY_LEN {
            assert_eq!(decode_legacy(&d[..len]), Err(DropReason::Truncated));
        }
        let mut odd = d.to_vec();
        odd.push(0);
        assert_eq!(decode_legacy(&odd), Err(DropReason::Malformed));
        assert_eq!(decode_legacy(&[0; 41]), Err(DropReason::TooLarge));
        let v2 = encoder(1).encode(&advert(), NOW).unwrap();
        assert!(decode_legacy(&v2).is_err());
    }
}

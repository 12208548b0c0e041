//! Shared pieces of the fuzz targets: the reference model ([`model`], also compiled into
//! `tests/wire_corpus.rs`) and the structured inputs that libFuzzer's bytes are read as.

pub mod model;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use exoip::wire::{Advert, Entry, IpState, Kind};

/// One entry of an advert; any bytes make one, illegal values included (priority 0).
#[derive(Arbitrary, Debug)]
pub struct FuzzEntry {
    v6: bool,
    address: [u8; 16],
    priority: u8,
    state: u8,
    epoch: u64,
}

/// An advert as a sender may try to encode it, within the limits or not.
#[derive(Arbitrary, Debug)]
pub struct FuzzAdvert {
    node: String,
    leaving: bool,
    entries: Vec<FuzzEntry>,
}

impl FuzzAdvert {
    pub fn advert(&self) -> Advert {
        let state = |s: u8| match s % 5 {
            0 => IpState::Init,
            1 => IpState::Backup,
            2 => IpState::Master,
            3 => IpState::Fault,
            _ => IpState::Leaving,
        };
        Advert {
            node: self.node.clone(),
            leaving: self.leaving,
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    ip: if e.v6 {
                        IpAddr::V6(Ipv6Addr::from(e.address))
                    } else {
                        let [a, b, c, d, ..] = e.address;
                        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                    },
                    priority: e.priority,
                    state: state(e.state),
                    epoch: e.epoch,
                })
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuzzKind {
    Heartbeat,
    Probe,
    Reply,
}

impl FuzzKind {
    pub fn kind(self) -> Kind {
        match self {
            FuzzKind::Heartbeat => Kind::Heartbeat,
            FuzzKind::Probe => Kind::Probe,
            FuzzKind::Reply => Kind::Reply,
        }
    }
}

/// A byte-level edit of a datagram; positions wrap around its length.
#[derive(Arbitrary, Debug)]
pub enum Edit {
    Set { at: u16, value: u8 },
    Flip { at: u16, bit: u8 },
    Insert { at: u16, value: u8 },
    Remove { at: u16 },
    Truncate { len: u16 },
    Append(Vec<u8>),
}

/// Applies `edits` in order.
pub fn apply(edits: &[Edit], d: &mut Vec<u8>) {
    for edit in edits {
        let at = |i: u16, len: usize| usize::from(i) % len.max(1);
        match edit {
            Edit::Set { at: i, value } if !d.is_empty() => {
                let i = at(*i, d.len());
                d[i] = *value;
            }
            Edit::Flip { at: i, bit } if !d.is_empty() => {
                let i = at(*i, d.len());
                d[i] ^= 1 << (bit % 8);
            }
            Edit::Insert { at: i, value } => {
                let i = at(*i, d.len() + 1);
                d.insert(i, *value);
            }
            Edit::Remove { at: i } if !d.is_empty() => {
                d.remove(at(*i, d.len()));
            }
            Edit::Truncate { len } => d.truncate(usize::from(*len)),
            Edit::Append(more) => d.extend_from_slice(more),
            _ => {}
        }
    }
}

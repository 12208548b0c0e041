//! The `--legacy-protocol` bridge over time: old-protocol datagrams (well-formed or any bytes)
//! from the old peers and from a stranger, and v2 heartbeats from the same addresses, fed to
//! `legacy::Bridge::on_datagram`; each outcome, the implied state of the old peer and who gets
//! which protocol are checked against the model. Also what the bridge announces for an
//! arbitrary advert of ours.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use arbitrary::Arbitrary;
use exoip::{legacy, wire};
use exoip_fuzz::model::{bridge, sources, BridgeModel, EIP};
use exoip_fuzz::FuzzAdvert;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Datagram {
    Raw(Vec<u8>),
    Old {
        priority: u8,
        /// The doubled priority byte differs by this much (0: well-formed).
        mismatch: u8,
        /// The watched elastic IP, or `other`.
        ours: bool,
        other: [u8; 4],
        nic: [u8; 16],
        message_id: Option<[u8; 16]>,
    },
}

impl Datagram {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Datagram::Raw(b) => b.clone(),
            Datagram::Old {
                priority,
                mismatch,
                ours,
                other,
                nic,
                message_id,
            } => {
                let eip = if *ours { EIP } else { Ipv4Addr::from(*other) };
                let mut d = wire::encode_legacy(*priority, eip, *nic).to_vec();
                d[3] = d[3].wrapping_add(*mismatch);
                if let Some(id) = message_id {
                    d.extend_from_slice(id);
                }
                d
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Event {
    after_ms: u16,
    /// Index into the sources (two peers, a stranger), modulo.
    source: u8,
    /// The source also sent an authenticated v2 heartbeat just before.
    v2_first: bool,
    datagram: Datagram,
}

#[derive(Arbitrary, Debug)]
struct Input {
    events: Vec<Event>,
    ours: FuzzAdvert,
}

fuzz_target!(|input: Input| {
    let mut b = bridge();
    let mut model = BridgeModel::default();
    let sources = sources();
    let mut now = Duration::ZERO;
    for e in input.events.iter().take(512) {
        now += Duration::from_millis(u64::from(e.after_ms));
        let from = sources[usize::from(e.source) % sources.len()];
        if e.v2_first {
            model.heard_v2(&mut b, now, from);
        }
        model.check(&mut b, now, from, &e.datagram.bytes());
    }

    // One old heartbeat per IPv4 entry of ours, with our priority only while we hold it.
    let advert = input.ours.advert();
    let payloads = b.payloads(&advert);
    let v4: Vec<_> = advert
        .entries
        .iter()
        .filter(|e| matches!(e.ip, IpAddr::V4(_)))
        .collect();
    assert_eq!(payloads.len(), v4.len());
    for (p, e) in payloads.iter().zip(v4) {
        let heard = wire::decode_legacy(p).expect("our own payload decodes");
        assert_eq!(IpAddr::V4(heard.eip), e.ip);
        let want = if e.state == wire::IpState::Master {
            e.priority
        } else {
            legacy::STAND_BY_PRIORITY
        };
        assert_eq!(heard.priority, want);
        assert!(legacy::looks_legacy(p));
    }
});

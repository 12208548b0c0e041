//! Hostile input for the heartbeat decoders on the stable toolchain, the CI stand-in for the
//! cargo-fuzz targets of `fuzz/`: the seed corpus of `tests/corpus/wire/` (also the fuzzers'
//! seeds) replayed through every decoder with its expected outcome, every single-bit flip of
//! every accepted seed, and a seeded loop of over a million random, mutated, re-signed and
//! freshly encoded datagrams checked against a reference model of the checks of `docs/wire.md`
//! ("Receiving").
//!
//! The corpus files are what [`seeds`] builds, with a fixed key, group, incarnation and clock:
//! a file that differs from its seed fails the test, because the wire format changed. After an
//! intended change, `EXOIP_WRITE_CORPUS=1 cargo test --test wire_corpus` rewrites them. Files
//! that no seed names (inputs a fuzzer found, dropped in by hand) are replayed too, for "no
//! panic, and the drop reason the reference model predicts".

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use exoip::wire::{
    self, Advert, AuthKey, DropReason, Encoder, Entry, IpState, Kind, LEGACY_LEN,
    LEGACY_LEN_WITH_ID, MAC_LEN, MAX_DATAGRAM, MAX_ENTRIES, MAX_NODE_ID,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// The reference model, shared with the fuzz targets.
#[path = "../fuzz/src/model.rs"]
mod model;
use model::*;

/// The random loop: how many inputs at least, from which seed.
const INPUTS: u64 = 1_000_000;
const SEED: u64 = 0x00e0_1b5e_ed05;

fn entry(ip: &str, priority: u8, state: IpState, epoch: u64) -> Entry {
    Entry {
        ip: ip.parse().expect("literal address"),
        priority,
        state,
        epoch,
    }
}

fn advert(node: &str, leaving: bool, entries: Vec<Entry>) -> Advert {
    Advert {
        node: node.into(),
        leaving,
        entries,
    }
}

fn lb1() -> Advert {
    advert(
        "lb1",
        false,
        vec![entry("203.0.113.10", 10, IpState::Master, 3)],
    )
}

/// Several families, states and epochs, with a UUID node id as on Exoscale.
fn mixed() -> Advert {
    advert(
        "5f0e7c1a-2d3b-4c5d-8e9f-0a1b2c3d4e5f",
        false,
        vec![
            entry("203.0.113.10", 20, IpState::Backup, 0),
            entry("2001:db8::10", 1, IpState::Master, u64::MAX),
            entry("198.51.100.7", 255, IpState::Fault, 1),
            entry("203.0.113.11", 30, IpState::Init, 2),
            entry("2001:db8::11", 40, IpState::Leaving, 9),
        ],
    )
}

/// The largest heartbeat: the longest node id and the most entries.
fn largest() -> Advert {
    advert(
        &"n".repeat(MAX_NODE_ID),
        false,
        (0..MAX_ENTRIES)
            .map(|i| Entry {
                ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)),
                priority: 1 + i as u8,
                state: IpState::Backup,
                epoch: i as u64,
            })
            .collect(),
    )
}

/// The outcome of one decoder as a word: the kind or `ok` when accepted, else the drop label.
type Outcomes = [&'static str; 4];

/// One corpus file and what each decoder must say of it: `Decoder::decode_message`,
/// `Decoder::decode`, `wire::decode_legacy`, and `legacy::Bridge::on_datagram` from a peer.
struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Outcomes,
}

fn seed(name: &'static str, bytes: Vec<u8>, expect: Outcomes) -> Seed {
    Seed {
        name,
        bytes,
        expect,
    }
}

fn seeds() -> Vec<Seed> {
    let heartbeat = |a: &Advert| encoder().encode(a, NOW).expect("within the limits");
    let hb = heartbeat(&lb1());
    let body = hb[..hb.len() - MAC_LEN].to_vec();
    let count_at = NODE_LEN_AT + 1 + "lb1".len();
    let resigned = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = body.clone();
        edit(&mut b);
        sign(&b)
    };
    let nic = [
        0x5f, 0x0e, 0x7c, 0x1a, 0x2d, 0x3b, 0x4c, 0x5d, 0x8e, 0x9f, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e,
        0x5f,
    ];
    let legacy = wire::encode_legacy(10, EIP, nic).to_vec();
    let mut noise = vec![0u8; 100];
    StdRng::seed_from_u64(1).fill(&mut noise[..]);
    noise[0] = b'#';

    let v2_drop = |label| [label, label, "too_large", "legacy_too_large"];
    let mut v = vec![
        seed(
            "v2-heartbeat.bin",
            hb.clone(),
            ["heartbeat", "heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-heartbeat-mixed.bin",
            heartbeat(&mixed()),
            ["heartbeat", "heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-heartbeat-leaving.bin",
            heartbeat(&Advert {
                leaving: true,
                ..lb1()
            }),
            ["heartbeat", "heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-heartbeat-largest.bin",
            heartbeat(&largest()),
            ["heartbeat", "heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-probe.bin",
            encoder()
                .encode_probe("check:i-1", NOW)
                .expect("short node id"),
            ["probe", "not_heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-probe-shortest.bin",
            encoder().encode_probe("c", NOW).expect("short node id"),
            ["probe", "not_heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-reply.bin",
            encoder()
                .encode_reply(&mixed(), NOW)
                .expect("within limits"),
            ["reply", "not_heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-reply-leaving.bin",
            encoder()
                .encode_reply(
                    &Advert {
                        leaving: true,
                        ..lb1()
                    },
                    NOW,
                )
                .expect("within limits"),
            ["reply", "not_heartbeat", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-stale.bin",
            encoder()
                .encode(&lb1(), NOW - 3_600_000)
                .expect("within limits"),
            v2_drop("stale"),
        ),
        seed(
            "v2-from-the-future.bin",
            encoder()
                .encode(&lb1(), NOW + 3_600_000)
                .expect("within limits"),
            v2_drop("stale"),
        ),
        seed(
            "v2-wrong-key.bin",
            Encoder::new(
                AuthKey::from_bytes(b"some other cluster's key").expect("long enough"),
                group(),
                INCARNATION,
            )
            .encode(&lb1(), NOW)
            .expect("within limits"),
            v2_drop("bad_mac"),
        ),
        seed(
            "v2-wrong-group.bin",
            Encoder::new(key(), wire::group_id("other"), INCARNATION)
                .encode(&lb1(), NOW)
                .expect("within limits"),
            v2_drop("unknown_group"),
        ),
        seed(
            "v2-bad-version.bin",
            {
                let mut d = hb.clone();
                d[VERSION_AT] = 3;
                d
            },
            v2_drop("bad_version"),
        ),
        seed(
            "v2-bad-magic.bin",
            {
                let mut d = hb.clone();
                d[3] = b'Q';
                d
            },
            v2_drop("bad_magic"),
        ),
        seed(
            "v2-mac-cut.bin",
            hb[..hb.len() - 1].to_vec(),
            v2_drop("bad_mac"),
        ),
        seed(
            "v2-mac-zeroed.bin",
            {
                let mut d = hb.clone();
                let n = d.len();
                d[n - MAC_LEN..].fill(0);
                d
            },
            v2_drop("bad_mac"),
        ),
        seed(
            "v2-oversize.bin",
            {
                let mut d = heartbeat(&largest());
                d.resize(MAX_DATAGRAM + 1, 0);
                d
            },
            ["too_large", "too_large", "too_large", "legacy_too_large"],
        ),
        seed(
            "v2-signed-unknown-flag.bin",
            resigned(&|b| b[FLAGS_AT] |= 0x80),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-probe-and-reply.bin",
            resigned(&|b| b[FLAGS_AT] = 0x06),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-probe-with-entries.bin",
            resigned(&|b| b[FLAGS_AT] = 0x02),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-no-entries.bin",
            resigned(&|b| {
                b[count_at] = 0;
                b.truncate(count_at + 1);
            }),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-count-long.bin",
            resigned(&|b| b[count_at] += 1),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-node-len-zero.bin",
            resigned(&|b| b[NODE_LEN_AT] = 0),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-node-not-utf8.bin",
            resigned(&|b| b[NODE_LEN_AT + 1] = 0xff),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-family.bin",
            resigned(&|b| b[count_at + 1] = 5),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-priority-zero.bin",
            resigned(&|b| b[count_at + 1 + 5] = 0),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-state.bin",
            resigned(&|b| b[count_at + 1 + 6] = 5),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-duplicate-ip.bin",
            resigned(&|b| {
                b[count_at] = 2;
                let e = b[count_at + 1..].to_vec();
                b.extend_from_slice(&e);
            }),
            v2_drop("malformed"),
        ),
        seed(
            "v2-signed-trailing-byte.bin",
            resigned(&|b| b.push(0)),
            v2_drop("malformed"),
        ),
        seed(
            "legacy-24.bin",
            legacy.clone(),
            ["bad_magic", "bad_magic", "ok", "ok"],
        ),
        seed(
            "legacy-40.bin",
            {
                let mut d = legacy.clone();
                d.extend_from_slice(&[0xab; 16]);
                d
            },
            ["bad_magic", "bad_magic", "ok", "ok"],
        ),
        seed(
            "legacy-priority-zero.bin",
            wire::encode_legacy(0, EIP, nic).to_vec(),
            ["bad_magic", "bad_magic", "ok", "ok"],
        ),
        seed(
            "legacy-other-address.bin",
            wire::encode_legacy(10, Ipv4Addr::new(203, 0, 113, 99), nic).to_vec(),
            ["bad_magic", "bad_magic", "ok", "legacy_other_address"],
        ),
        seed(
            "legacy-priority-mismatch.bin",
            {
                let mut d = legacy.clone();
                d[3] = 11;
                d
            },
            ["bad_magic", "bad_magic", "malformed", "legacy_malformed"],
        ),
        seed(
            "legacy-bad-version.bin",
            {
                let mut d = legacy.clone();
                d[1] = 0x02;
                d
            },
            ["bad_magic", "bad_magic", "bad_magic", "legacy_bad_version"],
        ),
        seed(
            "legacy-23.bin",
            legacy[..LEGACY_LEN - 1].to_vec(),
            ["bad_magic", "bad_magic", "truncated", "legacy_truncated"],
        ),
        seed(
            "legacy-25.bin",
            {
                let mut d = legacy.clone();
                d.push(0);
                d
            },
            ["bad_magic", "bad_magic", "malformed", "legacy_malformed"],
        ),
        seed(
            "legacy-41.bin",
            {
                let mut d = legacy.clone();
                d.resize(LEGACY_LEN_WITH_ID + 1, 0);
                d
            },
            ["bad_magic", "bad_magic", "too_large", "legacy_too_large"],
        ),
        seed(
            "empty.bin",
            Vec::new(),
            ["truncated", "truncated", "truncated", "legacy_truncated"],
        ),
        seed(
            "noise.bin",
            noise,
            ["bad_magic", "bad_magic", "too_large", "legacy_too_large"],
        ),
    ];
    // Every prefix length where the outcome changes: within the magic, the magic alone, the
    // version, one byte short of the shortest datagram, and the whole but the last byte of it.
    let probe = encoder().encode_probe("c", NOW).expect("short node id");
    for (name, len, label) in [
        ("v2-truncated-3.bin", 3, "truncated"),
        ("v2-truncated-4.bin", 4, "truncated"),
        ("v2-truncated-5.bin", 5, "truncated"),
        ("v2-truncated-68.bin", MIN_DATAGRAM - 1, "truncated"),
    ] {
        let legacy_label = if len < LEGACY_LEN {
            "legacy_truncated"
        } else {
            "legacy_too_large"
        };
        let legacy_plain = if len < LEGACY_LEN {
            "truncated"
        } else {
            "too_large"
        };
        v.push(seed(
            name,
            probe[..len].to_vec(),
            [label, label, legacy_plain, legacy_label],
        ));
    }
    v
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/wire")
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Heartbeat => "heartbeat",
        Kind::Probe => "probe",
        Kind::Reply => "reply",
    }
}

/// What each decoder says of `d`, each with a receiver that never saw anything.
fn outcomes(d: &[u8]) -> Outcomes {
    let message = match decoder().decode_message(d, NOW) {
        Ok(m) => kind_word(m.kind),
        Err(r) => r.label(),
    };
    let heartbeat = match decoder().decode(d, NOW) {
        Ok(_) => "heartbeat",
        Err(r) => r.label(),
    };
    let legacy = match wire::decode_legacy(d) {
        Ok(_) => "ok",
        Err(r) => r.label(),
    };
    let bridge = match bridge().on_datagram(Duration::ZERO, sources()[0], d, peers(), view) {
        Ok(_) => "ok",
        Err(drop) => drop.label(),
    };
    [message, heartbeat, legacy, bridge]
}

#[test]
fn corpus_files_are_the_seeds() {
    let dir = corpus_dir();
    let write = std::env::var_os("EXOIP_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("corpus directory");
    }
    let mut stale = Vec::new();
    for s in seeds() {
        let path = dir.join(s.name);
        if write {
            std::fs::write(&path, &s.bytes).expect("write a seed");
        }
        match std::fs::read(&path) {
            Ok(on_disk) if on_disk == s.bytes => {}
            _ => stale.push(s.name),
        }
    }
    assert!(
        stale.is_empty(),
        "corpus files missing or different from their seeds (the wire format changed?): {stale:?}; \
         rewrite them with EXOIP_WRITE_CORPUS=1 if the change is intended"
    );
}

#[test]
fn every_seed_gets_its_expected_outcome_and_replays_are_refused() {
    let all = seeds();
    let names: BTreeSet<&str> = all.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), all.len(), "seed names are unique");
    for s in &all {
        assert_eq!(outcomes(&s.bytes), s.expect, "{}", s.name);
        // Whatever was accepted once is a replay the second time, and only then.
        let mut dec = decoder();
        if dec.decode_message(&s.bytes, NOW).is_ok() {
            assert_eq!(
                dec.decode_message(&s.bytes, NOW),
                Err(DropReason::Replayed),
                "{}",
                s.name
            );
        }
        if let Some(pre) = pre_mac(&s.bytes) {
            assert_eq!(s.expect[0], pre.label(), "{}: the model agrees", s.name);
        }
    }
    // And the files found by fuzzing or added by hand: no panic, the model's outcome.
    let mut extra = 0;
    for f in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let f = f.expect("corpus entry");
        let name = f.file_name().to_string_lossy().into_owned();
        if names.contains(name.as_str()) {
            continue;
        }
        let d = std::fs::read(f.path()).expect("corpus file");
        let mut dec = decoder();
        let got = dec.decode_message(&d, NOW);
        check_message(&mut dec, &d, verifies(&d), got);
        BridgeModel::default().check(&mut bridge(), Duration::ZERO, sources()[0], &d);
        eprintln!("{name}: {:?}", outcomes(&d));
        extra += 1;
    }
    eprintln!(
        "corpus: {} seeds with expected outcomes, {extra} other files",
        all.len()
    );
}

#[test]
fn no_single_bit_flip_of_an_accepted_datagram_is_accepted() {
    let mut flips = 0;
    for s in seeds() {
        let accepted = decoder().decode_message(&s.bytes, NOW).is_ok();
        let legacy_ok = wire::decode_legacy(&s.bytes).is_ok();
        if !accepted && !legacy_ok {
            continue;
        }
        // Rejections never touch the anti-replay table: one receiver sees them all.
        let mut dec = decoder();
        for bit in 0..s.bytes.len() * 8 {
            let mut d = s.bytes.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            flips += 1;
            if accepted {
                let want = match bit / 8 {
                    0..4 => DropReason::BadMagic,
                    VERSION_AT => DropReason::BadVersion,
                    6..10 => DropReason::UnknownGroup,
                    _ => DropReason::BadMac,
                };
                assert_eq!(
                    dec.decode_message(&d, NOW),
                    Err(want),
                    "{} bit {bit}",
                    s.name
                );
            } else {
                // The old protocol authenticates nothing: a flip is refused only where the
                // format can tell (the version bytes and the doubled priority).
                let got = wire::decode_legacy(&d);
                match bit / 8 {
                    0 | 1 => assert_eq!(got, Err(DropReason::BadMagic), "{} bit {bit}", s.name),
                    2 | 3 => assert_eq!(got, Err(DropReason::Malformed), "{} bit {bit}", s.name),
                    _ => assert!(got.is_ok(), "{} bit {bit}", s.name),
                }
            }
        }
    }
    eprintln!("{flips} single-bit flips, none accepted");
    assert!(flips > 10_000);
}

/// A random advert within the limits (or slightly over them, to be refused by the encoder).
fn random_advert(rng: &mut StdRng) -> Advert {
    // Mostly instance-id sized; now and then up to the limit and just past it (in bytes: 'é'
    // takes two).
    let node_len = match rng.gen_range(0..10) {
        0 => rng.gen_range(1..=MAX_NODE_ID + 2),
        _ => rng.gen_range(1..=36),
    };
    let mut raw = vec![0u8; node_len];
    rng.fill(&mut raw[..]);
    let node: String = raw
        .iter()
        .map(|b| match b % 32 {
            0 => 'é',
            1 => '-',
            n => char::from(b'a' + n % 26),
        })
        .collect();
    let count = match rng.gen_range(0..10) {
        0 => rng.gen_range(0..=MAX_ENTRIES + 1),
        _ => rng.gen_range(1..=4),
    };
    let entries = (0..count)
        .map(|_| Entry {
            ip: if rng.gen_bool(0.7) {
                IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>()))
            } else {
                IpAddr::V6(Ipv6Addr::from(rng.gen::<u128>()))
            },
            priority: rng.gen_range(0..=255),
            state: [
                IpState::Init,
                IpState::Backup,
                IpState::Master,
                IpState::Fault,
                IpState::Leaving,
            ][rng.gen_range(0..5)],
            epoch: rng.gen(),
        })
        .collect();
    Advert {
        node,
        leaving: rng.gen_bool(0.2),
        entries,
    }
}

/// Byte-level edits of a datagram, as a mutation fuzzer makes them.
fn mutate(rng: &mut StdRng, d: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..7) {
            0 if !d.is_empty() => {
                let at = rng.gen_range(0..d.len());
                d[at] = rng.gen();
            }
            1 if !d.is_empty() => {
                let at = rng.gen_range(0..d.len());
                d[at] ^= 1 << rng.gen_range(0..8);
            }
            2 => {
                let at = rng.gen_range(0..=d.len());
                d.insert(at, rng.gen());
            }
            3 if !d.is_empty() => {
                d.remove(rng.gen_range(0..d.len()));
            }
            4 => d.truncate(rng.gen_range(0..=d.len())),
            5 => {
                let at = d.len();
                d.resize(at + rng.gen_range(1..=64), 0);
                rng.fill(&mut d[at..]);
            }
            _ if d.len() > 1 => {
                // Plausible lengths and counts reach deeper into the parser.
                let at = rng.gen_range(NODE_LEN_AT.min(d.len() - 1)..d.len());
                d[at] = rng.gen_range(0..=70);
            }
            _ => {}
        }
    }
}

#[test]
fn a_million_hostile_inputs_change_nothing() {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED);
    let bases: Vec<Vec<u8>> = seeds()
        .into_iter()
        .filter(|s| s.expect[0] != "too_large")
        .map(|s| s.bytes)
        .collect();
    let mut dec = decoder();
    let mut heartbeats = decoder();
    // Fresh datagrams get a receiver of their own: in `dec`, re-signed edits of the seeds may
    // have left any (incarnation, sequence) under any short node id.
    let mut enc = encoder();
    let mut fresh_dec = decoder();
    let mut bridge = bridge();
    let mut bridge_model = BridgeModel::default();
    let from_choices = sources();
    let mut bridge_now = Duration::ZERO;
    // What happened, to show the loop reached every place it aims at.
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut inputs, mut accepted, mut fresh, mut bridged) = (0u64, 0u64, 0u64, 0u64);

    while inputs < INPUTS {
        // `signed`: a key holder made it (the MAC may verify); otherwise it must not.
        let (d, signed) = match rng.gen_range(0..100) {
            // Noise of any length, mostly short.
            0..=29 => {
                let len = match rng.gen_range(0..20) {
                    0 => rng.gen_range(0..=MAX_DATAGRAM + 100),
                    _ => rng.gen_range(0..=80),
                };
                let mut d = vec![0u8; len];
                rng.fill(&mut d[..]);
                (d, false)
            }
            // Noise behind a valid fixed header, to reach the MAC check.
            30..=44 => {
                let base = &bases[rng.gen_range(0..bases.len())];
                let keep = rng.gen_range(0..=base.len().min(NODE_LEN_AT + 1));
                let mut d = base[..keep].to_vec();
                d.resize(keep + rng.gen_range(0..=120), 0);
                rng.fill(&mut d[keep..]);
                (d, false)
            }
            // A seed (valid or not) edited without re-signing.
            45..=74 => {
                let base = &bases[rng.gen_range(0..bases.len())];
                let mut d = base.clone();
                mutate(&mut rng, &mut d);
                if d == *base {
                    continue;
                }
                (d, false)
            }
            // A seed's body edited, then signed: the parser itself sees garbage.
            75..=84 => {
                let base = &bases[rng.gen_range(0..bases.len())];
                let mut body = model::body(base).to_vec();
                mutate(&mut rng, &mut body);
                (sign(&body), true)
            }
            // Old-protocol shapes: the right length and version, random content.
            85..=92 => {
                let len = if rng.gen_bool(0.5) {
                    LEGACY_LEN
                } else {
                    LEGACY_LEN_WITH_ID
                };
                let mut d = vec![0u8; len];
                rng.fill(&mut d[..]);
                d[..2].copy_from_slice(&[0x02, 0x01]);
                if rng.gen_bool(0.5) {
                    d[3] = d[2];
                }
                if rng.gen_bool(0.5) {
                    d[4..8].copy_from_slice(&EIP.octets());
                }
                (d, false)
            }
            // A key holder's fresh datagram of any kind: accepted exactly once if within the
            // limits and the clock window, a replay after that.
            _ => {
                let a = random_advert(&mut rng);
                let skew = MAX_AGE.as_millis() as u64;
                let stale = rng.gen_bool(0.1);
                let sent_at = match (stale, rng.gen_bool(0.5)) {
                    (false, _) => NOW - skew + rng.gen_range(0..=2 * skew),
                    (true, true) => NOW + skew + rng.gen_range(1..=skew),
                    (true, false) => NOW - skew - rng.gen_range(1..=skew),
                };
                let kind = [Kind::Heartbeat, Kind::Reply, Kind::Probe][rng.gen_range(0..3)];
                let Ok(d) = encode(&mut enc, kind, &a, sent_at) else {
                    assert!(wire::check_limits(&a).is_err() || a.node.len() > MAX_NODE_ID);
                    continue;
                };
                inputs += 1;
                fresh += 1;
                let got = fresh_dec.decode_message(&d, NOW);
                if stale {
                    assert_eq!(got, Err(DropReason::Stale));
                    continue;
                }
                let m = got.unwrap_or_else(|e| panic!("fresh datagram refused: {e:?} {a:?}"));
                assert_eq!(m.kind, kind);
                if kind != Kind::Probe {
                    assert_eq!(m.advert, a, "round trip");
                }
                assert!(check_message(&mut fresh_dec, &d, true, Ok(m)));
                accepted += 1;
                continue;
            }
        };
        inputs += 1;

        let pre = pre_mac(&d);
        let got = dec.decode_message(&d, NOW);
        let word = match &got {
            Ok(m) => kind_word(m.kind),
            Err(r) => r.label(),
        };
        if check_message(&mut dec, &d, signed, got) {
            accepted += 1;
        }
        *reasons.entry(word).or_default() += 1;

        // The election's own decoder takes heartbeats only; it differs from decode_message
        // behind the MAC only, so unsigned inputs that reach the MAC are sampled.
        if pre.is_some() || signed || inputs % 8 == 0 {
            match heartbeats.decode(&d, NOW) {
                Ok(a) => {
                    assert!(signed && d[FLAGS_AT] & 0x06 == 0, "{a:?}");
                    assert_eq!(heartbeats.decode(&d, NOW), Err(DropReason::Replayed));
                }
                Err(r) => match pre {
                    Some(want) => assert_eq!(r, want),
                    None if !signed => assert_eq!(r, DropReason::BadMac),
                    None => {}
                },
            }
        }

        // The old protocol: what the agent does with it under --legacy-protocol.
        assert_eq!(
            wire::decode_legacy(&d).map(|l| (l.priority, l.eip)),
            legacy_model(&d)
        );
        bridge_now += Duration::from_millis(rng.gen_range(0..50));
        let from = from_choices[rng.gen_range(0..from_choices.len())];
        if rng.gen_range(0..200) == 0 {
            // A peer upgraded (or its v2 heartbeats came back): its old datagrams stop counting
            // for a dead period, after which it may be an old agent again (a downgrade).
            bridge_model.heard_v2(&mut bridge, bridge_now, from);
        }
        if bridge_model.check(&mut bridge, bridge_now, from, &d) {
            bridged += 1;
        }
    }

    let took = started.elapsed();
    eprintln!(
        "{inputs} inputs in {took:.2?} ({:.1} µs each): {accepted} accepted ({fresh} freshly \
         encoded), {bridged} taken by the legacy bridge; decode_message outcomes {reasons:?}",
        took.as_secs_f64() * 1e6 / inputs as f64
    );
    // The loop reached every check, the parser behind the MAC included.
    for label in [
        "truncated",
        "bad_magic",
        "bad_version",
        "unknown_group",
        "bad_mac",
        "malformed",
        "too_large",
    ] {
        assert!(
            reasons.get(label).copied().unwrap_or(0) > 100,
            "{label} reached too rarely: {reasons:?}"
        );
    }
    assert!(accepted > 10_000 && bridged > 1_000, "{accepted} {bridged}");
}

//! Structure-aware: a key holder's valid datagram of any kind, built from an arbitrary advert,
//! must be accepted once (within the clock window) and then refused as a replay; edited
//! afterwards it must be refused, and re-signed after the edit (so the parser behind the MAC
//! sees the edited body) it must be refused or decode to something within the limits.
#![no_main]

use arbitrary::Arbitrary;
use exoip::wire::{self, Kind, MAX_NODE_ID};
use exoip_fuzz::model::{self, check_message, decoder, encode, encoder, sign, MAX_AGE, NOW};
use exoip_fuzz::{apply, Edit, FuzzAdvert, FuzzKind};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    advert: FuzzAdvert,
    kind: FuzzKind,
    /// Sender's clock minus the receiver's, in ms.
    skew_ms: i32,
    edits: Vec<Edit>,
    resign: bool,
}

fuzz_target!(|input: Input| {
    let advert = input.advert.advert();
    let kind = input.kind.kind();
    let sent_at = NOW.saturating_add_signed(i64::from(input.skew_ms));
    let Ok(d) = encode(&mut encoder(), kind, &advert, sent_at) else {
        let node = advert.node.len();
        assert!(
            node == 0
                || node > MAX_NODE_ID
                || (kind != Kind::Probe && wire::check_limits(&advert).is_err()),
            "the encoder refused {advert:?}"
        );
        return;
    };
    let mut dec = decoder();
    let in_window = u128::from(NOW.abs_diff(sent_at)) <= MAX_AGE.as_millis();
    match dec.decode_message(&d, NOW) {
        Ok(m) => {
            assert!(in_window, "accepted {} ms off", NOW.abs_diff(sent_at));
            assert_eq!(m.kind, kind);
            if kind != Kind::Probe {
                assert_eq!(m.advert, advert, "round trip");
            }
            // Accepted, within the limits, and a replay the second time.
            assert!(check_message(&mut dec, &d, true, Ok(m)));
        }
        Err(r) => {
            assert!(!in_window);
            assert_eq!(r, wire::DropReason::Stale);
        }
    }

    let mut edited = d.clone();
    apply(&input.edits, &mut edited);
    let edited = if input.resign {
        sign(model::body(&edited))
    } else {
        edited
    };
    if edited == d {
        return;
    }
    let mut fresh = decoder();
    let got = fresh.decode_message(&edited, NOW);
    if !input.resign {
        assert!(got.is_err(), "an edited datagram passed as authentic");
    }
    check_message(&mut fresh, &edited, input.resign, got);
});

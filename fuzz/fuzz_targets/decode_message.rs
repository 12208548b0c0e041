//! Any bytes at the agent's heartbeat socket: `Decoder::decode_message` (what the agent runs
//! on every datagram) and `Decoder::decode` (what feeds the election), with the corpus key and
//! group, checked against the reference model. Seeds: tests/corpus/wire/.
#![no_main]

use exoip::wire::DropReason;
use exoip_fuzz::model::{check_message, decoder, pre_mac, verifies, FLAGS_AT, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libFuzzer cannot forge a MAC, but the corpus holds genuine datagrams it may keep intact.
    let signed = verifies(data);
    let mut dec = decoder();
    let got = dec.decode_message(data, NOW);
    check_message(&mut dec, data, signed, got);

    let mut heartbeats = decoder();
    match heartbeats.decode(data, NOW) {
        Ok(_) => {
            assert!(signed && data[FLAGS_AT] & 0x06 == 0);
            assert_eq!(heartbeats.decode(data, NOW), Err(DropReason::Replayed));
        }
        Err(r) => match pre_mac(data) {
            Some(want) => assert_eq!(r, want),
            None if !signed => assert_eq!(r, DropReason::BadMac),
            None => {}
        },
    }
});

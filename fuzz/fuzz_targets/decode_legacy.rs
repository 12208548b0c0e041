//! Any bytes as an old exoip heartbeat: `wire::decode_legacy` against the documented format
//! (docs/wire.md, "Legacy v1"), and `legacy::looks_legacy`, which routes datagrams to it.
#![no_main]

use exoip::{legacy, wire};
use exoip_fuzz::model::legacy_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = wire::decode_legacy(data);
    assert_eq!(got.map(|l| (l.priority, l.eip)), legacy_model(data));
    if let Ok(l) = got {
        // What decodes re-encodes to the same 24 bytes (the 40-byte form's id is dropped).
        assert_eq!(
            wire::encode_legacy(l.priority, l.eip, l.nic_id)[..],
            data[..wire::LEGACY_LEN]
        );
    }
    assert_eq!(
        legacy::looks_legacy(data),
        matches!(data.len(), wire::LEGACY_LEN | wire::LEGACY_LEN_WITH_ID)
            && data[..2] == [0x02, 0x01]
    );
});

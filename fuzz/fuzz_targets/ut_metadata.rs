//! `ut_metadata` payloads (BEP 9) as a peer sends them: never panics, and a parsed
//! message encodes to a payload that parses back to the same message.

#![no_main]

use bittorrent::metadata::MetadataMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(m) = MetadataMessage::parse(data) else {
        return;
    };
    if let MetadataMessage::Data { data: piece, .. } = &m {
        assert!(piece.len() <= data.len());
    }
    assert_eq!(MetadataMessage::parse(&m.encode()), Some(m));
});

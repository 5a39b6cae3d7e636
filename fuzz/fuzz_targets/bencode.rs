//! Bencode decoding: never panics, and every accepted input re-encodes and survives the
//! JSON round trip byte-identically.

#![no_main]

use bittorrent::bencode::{self, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = bencode::decode(data) else {
        return;
    };
    assert_eq!(v.raw, data, "top-level raw span is the whole input");
    assert_eq!(v.to_owned_value().encode(), data, "re-encoding");
    let text = json::to_json(&v);
    let back = json::from_json(&text)
        .unwrap_or_else(|e| panic!("to_json output rejected by from_json: {e}\n{text}"));
    assert_eq!(back.encode(), data, "JSON round trip\n{text}");
});

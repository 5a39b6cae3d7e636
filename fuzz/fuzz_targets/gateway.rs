//! The gateway's parsers of request input: the content path (`/btfs/{cid}/a/b`, still
//! percent-encoded) and the `Range` header. Never panics; path names are never empty,
//! `.`, `..`, nor contain `/`, `\` or NUL; ranges lie within the file, are non-empty, at
//! most `MAX_RANGES`, and never overlap (so no response is larger than the file).
//!
//! Input: one byte (bit 0: a Range header, else a path); for a Range header 8 more bytes
//! of file size (big-endian), then the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use node::gateway::{parse_path, parse_ranges, MAX_RANGES};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(p) = parse_path(&text) {
            for n in &p.names {
                assert!(!n.is_empty() && n != "." && n != "..", "{n:?}");
                assert!(!n.contains(['/', '\\', '\0']), "{n:?}");
            }
        }
        return;
    }
    let Some((size, text)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_be_bytes(*size);
    let text = String::from_utf8_lossy(text);
    let Ok(Some(ranges)) = parse_ranges(&text, size) else {
        return;
    };
    assert!(!ranges.is_empty() && ranges.len() <= MAX_RANGES);
    for &(s, e) in &ranges {
        assert!(s < e && e <= size, "{s}..{e} of {size}");
    }
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].0), "{ranges:?}");
});

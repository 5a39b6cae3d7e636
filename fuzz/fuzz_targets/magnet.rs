//! Magnet parsing: never panics, and a parsed magnet prints as a link that parses back
//! to the same magnet.

#![no_main]

use bittorrent::Magnet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let Ok(m) = s.parse::<Magnet>() else {
        return;
    };
    let printed = m.to_string();
    assert_eq!(
        printed.parse::<Magnet>(),
        Ok(m),
        "{s:?} printed as {printed:?}"
    );
});

//! Resume files as read from disk: never panics, and a record that decodes encodes to
//! bytes that decode to the same record.

#![no_main]

use bittorrent::resume::ResumeData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(r) = ResumeData::decode(data) else {
        return;
    };
    assert_eq!(r.have.as_bytes().len(), r.have.len().div_ceil(8) as usize);
    assert_eq!(ResumeData::decode(&r.encode()), Some(r));
});

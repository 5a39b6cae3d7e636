//! CIDs as they come from the network and from users: text (gateway paths, API
//! arguments) and binary (DAG-PB links). Never panics; a parsed CID prints as text and
//! serialises as bytes that parse back to the same CID; binary CIDs are accepted only in
//! their one canonical encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use store::Cid;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cid::from_bytes(data) {
        assert_eq!(c.to_bytes(), data, "non-canonical binary CID accepted");
        assert_eq!(c.to_string().parse::<Cid>(), Ok(c));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = text.parse::<Cid>() {
        assert_eq!(Cid::from_bytes(&c.to_bytes()), Ok(c));
        let printed = c.to_string();
        assert_eq!(
            printed.parse::<Cid>(),
            Ok(c),
            "{text:?} printed as {printed:?}"
        );
        if c.version() == 0 {
            assert_eq!(printed, text);
        }
    }
});

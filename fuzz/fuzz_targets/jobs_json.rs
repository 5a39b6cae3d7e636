//! The daemon's `jobs.json` as read at start-up. Never panics, and what the daemon
//! would save from a file it loaded loads again to the same records.

#![no_main]

use btfs::api::jobs::reparse_saved;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(saved) = reparse_saved(data) else {
        return;
    };
    let again = reparse_saved(&saved).expect("a saved jobs.json loads");
    assert_eq!(again, saved);
});

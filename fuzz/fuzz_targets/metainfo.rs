//! Metainfo parsing: never panics, and an accepted torrent has safe stored paths (the
//! names as written may be anything: they are rewritten) whose v1 lengths add up to the
//! piece geometry.

#![no_main]

use bittorrent::Metainfo;
use libfuzzer_sys::fuzz_target;

fn check_component(c: &str) {
    assert!(bittorrent::metainfo::sanitize::is_safe(c), "component {c:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let info = &m.info;
    check_component(&info.stored_name);
    for f in &info.files {
        assert!(!f.stored.is_empty());
        f.stored.iter().for_each(|c| check_component(c));
        f.attr
            .symlink
            .iter()
            .flatten()
            .for_each(|c| check_component(c));
    }
    if let Some(g) = info.geometry() {
        let sum: u128 = info.files.iter().map(|f| u128::from(f.length)).sum();
        assert_eq!(sum, u128::from(g.total_length()));
        assert_eq!(info.pieces.len() as u64, u64::from(g.piece_count()));
    }
});

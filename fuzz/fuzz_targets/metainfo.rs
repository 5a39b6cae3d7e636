//! Metainfo parsing: never panics, and an accepted torrent has safe stored paths (the
//! names as written may be anything: they are rewritten) whose v1 lengths add up to the
//! piece geometry.

#![no_main]

use bittorrent::Metainfo;
use libfuzzer_sys::fuzz_target;

fn check_component(c: &str) {
    assert!(!c.is_empty() && c != "." && c != "..", "component {c:?}");
    assert!(!c.contains(['/', '\\', '\0']), "component {c:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let info = &m.info;
    check_component(info.storage_name());
    for f in &info.files {
        assert!(!f.storage_path().is_empty());
        f.storage_path().iter().for_each(|c| check_component(c));
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

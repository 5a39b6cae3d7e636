//! DAG-PB blocks and the UnixFS messages inside them, as read from the blockstore.
//! Never panics; a decoded node (and its UnixFS message) encodes to bytes that decode to
//! the same node; the zero-copy leaf reader the gateway uses finds exactly the content
//! the full decoder finds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use store::dagpb::{leaf_content_range, PbNode, UnixFs};

fuzz_target!(|data: &[u8]| {
    let range = leaf_content_range(data);
    if let Some(r) = &range {
        assert!(r.start <= r.end && r.end <= data.len(), "{r:?}");
    }
    if let Ok(u) = UnixFs::decode(data) {
        assert_eq!(UnixFs::decode(&u.encode()), Ok(u));
    }
    let Ok(node) = PbNode::decode(data) else {
        return;
    };
    assert_eq!(PbNode::decode(&node.encode()), Ok(node.clone()));
    let Ok(u) = node.unixfs() else {
        return;
    };
    assert_eq!(UnixFs::decode(&u.encode()), Ok(u.clone()));
    if node.links.is_empty() {
        let r = range.expect("a leaf that decodes has a content range");
        assert_eq!(&data[r], u.data.as_deref().unwrap_or_default());
    }
});

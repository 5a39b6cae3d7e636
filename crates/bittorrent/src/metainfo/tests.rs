use super::*;
use crate::bencode::OwnedValue as O;

fn s(x: &str) -> O {
    O::bytes(x.as_bytes())
}

fn path(parts: &[&str]) -> O {
    O::List(parts.iter().map(|p| s(p)).collect())
}

fn file(len: i64, parts: &[&str]) -> O {
    O::dict([("length", O::int(len)), ("path", path(parts))])
}

fn multi(files: Vec<O>, piece_length: i64, total: u64) -> O {
    let n = total.div_ceil(piece_length as u64) as usize;
    O::dict([(
        "info",
        O::dict([
            ("name", s("dir")),
            ("piece length", O::int(piece_length)),
            ("pieces", O::Bytes(vec![0xab; n * 20])),
            ("files", O::List(files)),
        ]),
    )])
}

fn parse(v: &O) -> Result<Metainfo, MetainfoError> {
    Metainfo::from_bytes(&v.encode())
}

fn message(v: &O) -> String {
    parse(v).unwrap_err().to_string()
}

#[test]
fn single_file_torrent() {
    let t = O::dict([
        ("announce", s("http://127.0.0.1:6969/announce")),
        (
            "announce-list",
            O::List(vec![
                O::List(vec![
                    s("http://127.0.0.1:6969/announce"),
                    s("udp://127.0.0.1:6969"),
                ]),
                O::List(vec![]),
                O::List(vec![s("http://127.0.0.2/a")]),
            ]),
        ),
        ("url-list", s("http://127.0.0.1:8000/")),
        ("httpseeds", O::List(vec![s("http://127.0.0.1:8001/seed")])),
        (
            "nodes",
            O::List(vec![O::List(vec![s("127.0.0.1"), O::int(6881)])]),
        ),
        ("creation date", O::int(1_700_000_000)),
        ("comment", s("hi")),
        ("created by", s("test")),
        (
            "info",
            O::dict([
                ("name", s("a.bin")),
                ("piece length", O::int(16384)),
                ("pieces", O::Bytes(vec![1; 40])),
                ("length", O::int(20000)),
                ("private", O::int(1)),
            ]),
        ),
    ]);
    let m = parse(&t).unwrap();
    assert!(m.info.single_file && m.info.private);
    assert_eq!(m.info.files[0].path, vec!["a.bin"]);
    assert_eq!(
        m.info.geometry().unwrap().last_piece_length(),
        20000 - 16384
    );
    assert_eq!(m.announce_list.len(), 2, "empty tier dropped");
    assert_eq!(m.tracker_tiers()[0][1], "udp://127.0.0.1:6969");
    assert_eq!(m.url_list, vec!["http://127.0.0.1:8000/"]);
    assert_eq!(m.httpseeds, vec!["http://127.0.0.1:8001/seed"]);
    assert_eq!(m.nodes, vec![("127.0.0.1".to_string(), 6881)]);
    assert_eq!(m.creation_date, Some(1_700_000_000));
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert!(m.info_hash_v2.is_none());
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let magnet = m.magnet().to_string();
    assert!(magnet.starts_with(&format!(
        "magnet:?xt=urn:btih:{}&dn=a.bin",
        m.info_hash.unwrap()
    )));
}

#[test]
fn infohash_is_over_the_raw_bytes_even_with_unsorted_keys() {
    let info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    // Same dictionary with keys out of order.
    let unsorted = b"d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    for raw in [&info[..], &unsorted[..]] {
        let torrent = [&b"d4:info"[..], raw, b"e"].concat();
        let m = Metainfo::from_bytes(&torrent).unwrap();
        assert_eq!(m.info_hash.unwrap(), InfoHash::of(raw));
        assert_eq!(m.info_bytes, raw);
    }
}

#[test]
fn multi_file_with_pad_files() {
    let pad = |n: i64| {
        O::dict([
            ("attr", s("p")),
            ("length", O::int(n)),
            ("path", path(&[".pad", &n.to_string()])),
        ])
    };
    let t = multi(
        vec![
            file(10, &["a"]),
            pad(16374),
            file(10, &["b", "c"]),
            pad(16374),
            file(1, &["d"]),
        ],
        16384,
        32769,
    );
    let m = parse(&t).unwrap();
    assert_eq!(m.info.files.len(), 5);
    assert_eq!(m.info.content_length(), 21);
    assert_eq!(m.info.files[2].offset, 16384);
    assert!(m.info.files[1].attr.pad);
    assert_eq!(m.info.v1.as_ref().unwrap().pieces_of_file(4), 2..3);
}

#[test]
fn unsafe_paths_are_rejected() {
    for (parts, why) in [
        (&["..", "x"][..], "leave the download folder"),
        (&["a", "."], "leave the download folder"),
        (&["", "etc"], "empty path component"),
        (&["/etc/passwd"], "separator"),
        (&["a\\..\\b"], "separator"),
        (&["nul\0"], "NUL"),
    ] {
        let msg = message(&multi(vec![file(5, parts)], 16384, 5));
        assert!(msg.contains(why), "{parts:?}: {msg}");
        assert!(msg.starts_with("info.files[0].path["), "{msg}");
    }
    let msg = message(&multi(
        vec![O::dict([("length", O::int(1)), ("path", O::List(vec![]))])],
        16384,
        1,
    ));
    assert!(msg.contains("empty path"), "{msg}");
    // The torrent name is a path component too.
    let t = O::dict([(
        "info",
        O::dict([
            ("name", s("..")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0; 20])),
            ("length", O::int(1)),
        ]),
    )]);
    assert!(message(&t).starts_with("info.name"));
}

#[test]
fn duplicate_and_conflicting_paths_are_rejected() {
    let msg = message(&multi(
        vec![file(1, &["a", "b"]), file(1, &["a", "b"])],
        16384,
        2,
    ));
    assert!(msg.contains("two files have the path \"a/b\""), "{msg}");
    let msg = message(&multi(
        vec![file(1, &["a"]), file(1, &["a", "b"])],
        16384,
        2,
    ));
    assert!(msg.contains("also used as a directory"), "{msg}");
}

#[test]
fn bad_geometry_is_rejected() {
    let with = |pl: O, pieces: O, len: i64| {
        O::dict([(
            "info",
            O::dict([
                ("name", s("x")),
                ("piece length", pl),
                ("pieces", pieces),
                ("length", O::int(len)),
            ]),
        )])
    };
    let m = message(&with(O::int(0), O::Bytes(vec![0; 20]), 1));
    assert!(m.contains("not a positive length"), "{m}");
    let m = message(&with(O::int(-16384), O::Bytes(vec![0; 20]), 1));
    assert!(m.contains("not a positive length"), "{m}");
    let m = message(&with(O::int(1 << 40), O::Bytes(vec![0; 20]), 1));
    assert!(m.contains("larger than the limit"), "{m}");
    let m = message(&with(O::int(16384), O::Bytes(vec![0; 21]), 1));
    assert!(m.contains("not a multiple of 20"), "{m}");
    let m = message(&with(O::int(16384), O::Bytes(vec![0; 40]), 1));
    assert!(m.contains("expected 1"), "{m}");
    let m = message(&with(O::int(16384), O::Bytes(vec![]), 0));
    assert!(m.contains("no data"), "{m}");
    let m = message(&with(O::int(16384), O::Bytes(vec![0; 20]), -1));
    assert!(m.contains("negative"), "{m}");
    let m = message(&with(s("x"), O::Bytes(vec![0; 20]), 1));
    assert!(m.contains("expected an integer, found a string"), "{m}");
    let huge = O::dict([(
        "info",
        O::dict([
            ("name", s("x")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0; 20])),
            ("length", O::Int("99999999999999999999999".into())),
        ]),
    )]);
    assert!(message(&huge).contains("out of range"));
}

#[test]
fn structural_errors_name_the_field_and_offset() {
    assert_eq!(
        message(&O::List(vec![])),
        "torrent (byte 0): expected a dictionary, found a list"
    );
    assert!(message(&O::dict([("announce", s("x"))])).starts_with("info (byte 0): missing"));
    let e = Metainfo::from_bytes(b"d4:infod4:name")
        .unwrap_err()
        .to_string();
    assert!(e.contains("byte 14") && e.contains("ends early"), "{e}");
    let both = O::dict([(
        "info",
        O::dict([
            ("name", s("x")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0; 20])),
            ("length", O::int(1)),
            ("files", O::List(vec![file(1, &["a"])])),
        ]),
    )]);
    assert!(message(&both).contains("both"));
}

#[test]
fn malformed_optional_fields_become_warnings() {
    let mut t = multi(vec![file(3, &["a"])], 16384, 3);
    if let O::Dict(d) = &mut t {
        d.push((b"announce-list".to_vec(), O::List(vec![s("not a tier")])));
        d.push((
            b"nodes".to_vec(),
            O::List(vec![O::List(vec![s("h"), O::int(70000)])]),
        ));
        d.push((b"url-list".to_vec(), O::int(3)));
        d.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let m = parse(&t).unwrap();
    assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
    assert!(m.announce_list.is_empty() && m.nodes.is_empty() && m.url_list.is_empty());
}

fn v2_torrent(files: Vec<(&[&str], i64)>, with_v1: bool) -> O {
    fn insert(tree: &mut Vec<(Vec<u8>, O)>, parts: &[&str], leaf: O) {
        let key = parts[0].as_bytes().to_vec();
        if parts.len() == 1 {
            tree.push((key, O::dict([("", leaf)])));
            return;
        }
        let pos = match tree.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                tree.push((key, O::Dict(vec![])));
                tree.len() - 1
            }
        };
        if let O::Dict(sub) = &mut tree[pos].1 {
            insert(sub, &parts[1..], leaf);
        }
    }
    let mut tree = Vec::new();
    for (i, (parts, len)) in files.iter().enumerate() {
        let mut leaf = vec![("length", O::int(*len))];
        if *len > 0 {
            leaf.push(("pieces root", O::Bytes(vec![i as u8 + 1; 32])));
        }
        insert(&mut tree, parts, O::dict(leaf));
    }
    let mut info = vec![
        ("name", s("v2")),
        ("piece length", O::int(16384)),
        ("meta version", O::int(2)),
        ("file tree", O::Dict(tree)),
    ];
    if with_v1 {
        let total: i64 = files.iter().map(|f| f.1).sum();
        info.push((
            "pieces",
            O::Bytes(vec![0; (total as usize).div_ceil(16384) * 20]),
        ));
        info.push((
            "files",
            O::List(files.iter().map(|(p, l)| file(*l, p)).collect()),
        ));
    }
    O::dict([("info", O::dict(info))])
}

#[test]
fn v2_only_torrent() {
    let t = v2_torrent(vec![(&["a", "x"], 20000), (&["b"], 0), (&["c"], 5)], false);
    let m = parse(&t).unwrap();
    assert!(m.info_hash.is_none());
    let h2 = m.info_hash_v2.unwrap();
    assert_eq!(h2, InfoHashV2::of(&m.info_bytes));
    assert_eq!(m.wire_info_hash(), h2.truncated());
    assert_eq!(m.info.files.len(), 3);
    assert_eq!(m.info.files[0].path, vec!["a", "x"]);
    assert_eq!(
        m.info.files[2].offset, 32768,
        "v2 files start on piece boundaries"
    );
    assert_eq!(m.info.piece_count(), 3);
    assert!(m.warnings.iter().any(|w| w.contains("piece layers")));
}

#[test]
fn hybrid_must_agree() {
    let ok = v2_torrent(vec![(&["a"], 10), (&["b"], 5)], true);
    let m = parse(&ok).unwrap();
    assert!(m.info_hash.is_some() && m.info_hash_v2.is_some());
    assert_eq!(m.info.files[1].pieces_root, Some([2; 32]));
    // Different lengths in the two halves.
    let mut bad = v2_torrent(vec![(&["a"], 10), (&["b"], 5)], true);
    if let O::Dict(root) = &mut bad {
        if let O::Dict(info) = &mut root[0].1 {
            for (k, v) in info.iter_mut() {
                if k == b"files" {
                    *v = O::List(vec![file(10, &["a"]), file(6, &["b"])]);
                }
            }
        }
    }
    assert!(
        message(&bad).contains("hybrid torrent"),
        "{}",
        message(&bad)
    );
}

#[test]
fn v2_requires_power_of_two_pieces() {
    let mut t = v2_torrent(vec![(&["a"], 10)], false);
    if let O::Dict(root) = &mut t {
        if let O::Dict(info) = &mut root[0].1 {
            for (k, v) in info.iter_mut() {
                if k == b"piece length" {
                    *v = O::int(20000);
                }
            }
        }
    }
    assert!(message(&t).contains("power of two"));
}

thread_local! {
    static URL_COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Called by every comparison of two URLs while trackers and web seeds are de-duplicated.
pub(super) fn count_url_comparison() {
    URL_COMPARISONS.with(|c| c.set(c.get() + 1));
}

fn url_comparisons() -> u64 {
    URL_COMPARISONS.with(|c| c.get())
}

/// A torrent listing `n` tracker URLs (one tier), `n` web seeds and `n` HTTP seeds.
fn many_urls(n: usize, distinct: bool) -> O {
    let url = |kind: &str, i: usize| {
        let i = if distinct { i } else { 0 };
        s(&format!("http://127.0.0.1:{}/{kind}/{i}", 1024 + i % 60000))
    };
    let mut t = multi(vec![file(5, &["a"])], 16384, 5);
    if let O::Dict(d) = &mut t {
        let urls = |kind| O::List((0..n).map(|i| url(kind, i)).collect());
        d.push((b"announce-list".to_vec(), O::List(vec![urls("announce")])));
        d.push((b"url-list".to_vec(), urls("seed")));
        d.push((b"httpseeds".to_vec(), urls("http")));
        d.sort_by(|a, b| a.0.cmp(&b.0));
    }
    t
}

#[test]
fn many_tracker_and_seed_urls_are_deduplicated_in_linear_work() {
    // 80 000 URLs of each kind, as in a torrent that froze the daemon: comparing each
    // with every one kept before made 3.2 billion comparisons per list.
    const N: usize = 80_000;
    let before = url_comparisons();
    let m = parse(&many_urls(N, true)).unwrap();
    let comparisons = url_comparisons() - before;
    assert_eq!(
        m.announce_list,
        vec![(0..N)
            .map(|i| format!("http://127.0.0.1:{}/announce/{i}", 1024 + i % 60000))
            .collect::<Vec<_>>()]
    );
    assert_eq!((m.url_list.len(), m.httpseeds.len()), (N, N));
    // Distinct URLs meet another key only on a hash collision: far fewer comparisons
    // than URLs (a scan of the kept ones would make N²/2 per list).
    assert!(
        comparisons < N as u64,
        "{comparisons} comparisons for {} URLs",
        3 * N
    );

    // The same URL N times: one comparison per repeat, one URL kept.
    let before = url_comparisons();
    let m = parse(&many_urls(N, false)).unwrap();
    let comparisons = url_comparisons() - before;
    assert_eq!(m.announce_list[0].len(), 1);
    assert_eq!((m.url_list.len(), m.httpseeds.len()), (1, 1));
    assert!(comparisons <= 3 * N as u64, "{comparisons}");
}

#[test]
fn piece_layers_are_matched_to_files_by_root() {
    // Many v2 files of two pieces each, each with its own root and layer; the layers
    // are listed in the reverse order of the files.
    let n = 5_000u32;
    let root = |i: u32| -> Vec<u8> { i.to_be_bytes().repeat(8) };
    let tree: Vec<(Vec<u8>, O)> = (0..n)
        .map(|i| {
            let leaf = O::dict([
                ("length", O::int(16384 + i64::from(i % 7) + 1)),
                ("pieces root", O::Bytes(root(i))),
            ]);
            (format!("f{i:05}").into_bytes(), O::dict([("", leaf)]))
        })
        .collect();
    let layers: Vec<(Vec<u8>, O)> = (0..n)
        .rev()
        .map(|i| (root(i), O::Bytes(vec![i as u8; 64])))
        .collect();
    let mut layers = layers;
    layers.sort_by(|a, b| a.0.cmp(&b.0));
    let t = O::dict([
        (
            "info",
            O::dict([
                ("name", s("v2")),
                ("piece length", O::int(16384)),
                ("meta version", O::int(2)),
                ("file tree", O::Dict(tree)),
            ]),
        ),
        ("piece layers", O::Dict(layers)),
    ]);
    let m = parse(&t).unwrap();
    assert_eq!(m.piece_layers.len(), n as usize);
    for (i, f) in m.info.files.iter().enumerate() {
        let layer = &m.piece_layers[&f.pieces_root.unwrap()];
        assert_eq!(layer, &vec![i as u8; 64]);
    }
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

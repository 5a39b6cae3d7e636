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

/// A multi-file torrent named `name` whose files are `(path components, length)`.
fn named(name: &[u8], files: Vec<O>, total: u64) -> O {
    let n = total.div_ceil(16384).max(1) as usize;
    O::dict([(
        "info",
        O::dict([
            ("name", O::Bytes(name.to_vec())),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0xab; n * 20])),
            ("files", O::List(files)),
        ]),
    )])
}

fn raw_file(len: i64, parts: &[&[u8]]) -> O {
    O::dict([
        ("length", O::int(len)),
        (
            "path",
            O::List(parts.iter().map(|p| O::Bytes(p.to_vec())).collect()),
        ),
    ])
}

fn stored(m: &Metainfo) -> Vec<String> {
    m.info.files.iter().map(|f| f.stored.join("/")).collect()
}

/// The file-name cases of libtorrent's own test torrents (`slash_path*`,
/// `backslash_path`, `parent_path`, `hidden_parent_path`, `empty_path*`,
/// `absolute_filename`, `invalid_directory_name`, `invalid_filename*`,
/// `duplicate_files`), rebuilt here: btfs loads them all, storing each file where
/// libtorrent 2.0 (the one qBittorrent and Deluge use) stores it, and names every
/// rewrite in the warnings.
#[test]
fn unsafe_names_are_stored_as_libtorrent_stores_them() {
    type Files<'a> = Vec<(&'a [&'a [u8]], i64)>;
    let cases: Vec<(&str, Files, Vec<&str>)> = vec![
        (
            "slash_path",
            vec![(&[b"/", b"/", b"bar"], 425)],
            vec!["bar"],
        ),
        (
            "slash_path2",
            vec![(&[b"abc/../../def", b"/", b"bar"], 425)],
            vec!["abc....def/bar"],
        ),
        (
            "backslash_path",
            vec![(&[b"\\", b"\\", b"bar"], 425)],
            vec!["bar"],
        ),
        (
            "parent_path",
            vec![(&[b"..", b"..", b"bar"], 425)],
            vec!["bar"],
        ),
        (
            "hidden_parent_path",
            vec![(&[b"foo/../../../bar", b"bar"], 425)],
            vec!["foo......bar/bar"],
        ),
        ("empty_path", vec![(&[b"", b""], 425)], vec!["_/_"]),
        (
            "empty_path_multi",
            vec![(&[b"abcde"], 425), (&[b""], 3), (&[b""], 5)],
            vec!["abcde", "_", "_.1"],
        ),
        (
            "absolute_filename",
            vec![(&[b"abcde"], 425), (&[b"/foobar"], 5)],
            vec!["abcde", "foobar"],
        ),
        (
            "invalid_directory_name",
            vec![(&[b"/", b"foo"], 51200), (&[b"\\", b"foo"], 14336)],
            vec!["foo", "foo.1"],
        ),
        (
            "invalid_filename2",
            vec![(&[b"f"], 51200), (&[b".", b"."], 14335), (&[b"/", b"."], 1)],
            vec!["f", "_", "_.1"],
        ),
        (
            "duplicate_files",
            vec![(&[b"foo", b"bar.txt"], 425), (&[b"foo", b"bar.txt"], 425)],
            vec!["foo/bar.txt", "foo/bar.1.txt"],
        ),
        (
            "control characters",
            vec![(&[b"a\0b", b"esc\x1b[31m", b"\xffname"], 1)],
            vec!["a_b/esc_[31m/_name"],
        ),
        (
            "a file named like a folder",
            vec![(&[b"d"], 1), (&[b"d", b"x"], 1)],
            vec!["d.1", "d/x"],
        ),
    ];
    for (what, files, want) in cases {
        let total: i64 = files.iter().map(|f| f.1).sum();
        let t = named(
            b"temp",
            files.iter().map(|(p, l)| raw_file(*l, p)).collect(),
            total as u64,
        );
        let bytes = t.encode();
        let m = Metainfo::from_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(stored(&m), want, "{what}");
        assert_eq!(m.info.stored_name.as_str(), "temp");
        // The names as written are kept, and the infohash covers them.
        assert_eq!(m.info.files[0].path.len(), files[0].0.len(), "{what}");
        let (root, _) = bencode::decode_prefix_with(&bytes, TORRENT_LIMITS).unwrap();
        assert_eq!(
            m.info_hash.unwrap(),
            InfoHash::of(root.get(b"info").unwrap().raw)
        );
        for (f, w) in m.info.files.iter().zip(&want) {
            if f.torrent_path().join("/") != *w {
                assert!(
                    m.warnings
                        .iter()
                        .any(|x| x.contains(&format!("is stored as {w:?}"))),
                    "{what}: {:?}",
                    m.warnings
                );
            }
        }
        assert!(m.magnet().to_string().contains("dn=temp"));
    }
}

#[test]
fn torrent_names_are_stored_safely() {
    let single = |name: &[u8]| {
        O::dict([(
            "info",
            O::dict([
                ("name", O::Bytes(name.to_vec())),
                ("piece length", O::int(16384)),
                ("pieces", O::Bytes(vec![0; 20])),
                ("length", O::int(12432)),
            ]),
        )])
    };
    // slash_path3, invalid_filename, long_name.
    for (name, want) in [
        (&b"temp/../../abc"[..], "temp....abc".to_string()),
        (b"\\est2", "est2".to_string()),
        (
            format!("{}0.23456789", "abcdefghij".repeat(29)).as_bytes(),
            format!("{}.23456789", &"abcdefghij".repeat(24)),
        ),
    ] {
        let m = parse(&single(name)).unwrap();
        assert_eq!(m.info.stored_name.as_str(), want);
        assert_eq!(
            m.info.files[0].stored.as_slice(),
            std::slice::from_ref(&want)
        );
        assert_eq!(m.info.name.as_bytes(), name);
        assert!(m.warnings[0].starts_with("info.name: "), "{:?}", m.warnings);
    }
    // invalid_name2: nothing usable is left of "..": the torrent is named by its hash.
    let m = parse(&named(b"..", vec![file(425, &["foo", "bar.txt"])], 425)).unwrap();
    assert_eq!(m.info.stored_name.as_str(), m.info_hash.unwrap().to_hex());
    assert_eq!(stored(&m), ["foo/bar.txt"]);
    // name.utf-8 is preferred, and rewritten too.
    let mut t = single(b"plain");
    if let O::Dict(root) = &mut t {
        if let O::Dict(info) = &mut root[0].1 {
            info.push((b"name.utf-8".to_vec(), s("caf\u{e9}/x")));
            info.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
    let m = parse(&t).unwrap();
    assert_eq!(m.info.stored_name.as_str(), "caf\u{e9}x");
    assert_eq!(m.magnet().display_name.as_deref(), Some("caf\u{e9}/x"));
}

#[test]
fn symlinks_carry_no_data() {
    let link = |len: Option<i64>, parts: &[&str], target: &[&str]| {
        let mut d = vec![
            ("attr", s("l")),
            ("path", path(parts)),
            ("symlink path", path(target)),
        ];
        if let Some(l) = len {
            d.push(("length", O::int(l)));
        }
        O::dict(d)
    };
    // symlink1: a symlink claiming 425 bytes between two files. Counting them as data
    // shifted every later piece, so the torrent could never complete.
    let t = multi(
        vec![
            file(425, &["a", "b", "bar"]),
            link(Some(425), &["a", "b", "foo"], &["a", "b", "bar"]),
            file(20000, &["c"]),
        ],
        16384,
        20425,
    );
    let m = parse(&t).unwrap();
    assert_eq!(m.info.files[1].length, 0);
    assert_eq!(m.info.files[2].offset, 425);
    assert_eq!(m.info.geometry().unwrap().total_length(), 20425);
    assert_eq!(
        m.info.files[1].attr.symlink.as_deref(),
        Some(&["a".to_string(), "b".into(), "bar".into()][..])
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("its length 425 is ignored")),
        "{:?}",
        m.warnings
    );
    // symlink_zero_size: no length at all.
    let t = multi(
        vec![
            file(425, &["a", "b", "bar"]),
            link(None, &["a", "b", "foo"], &["a", "b", "bar"]),
        ],
        16384,
        425,
    );
    let m = parse(&t).unwrap();
    assert_eq!(m.info.files[1].length, 0);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    // symlink_filtered_path: targets are rewritten like paths, `.` and `..` dropped.
    let t = multi(
        vec![
            file(32, &["a", "/", "bar"]),
            link(Some(0), &["a", "/", "foo"], &["..", "a", "/", "bar"]),
        ],
        16384,
        32,
    );
    let m = parse(&t).unwrap();
    assert_eq!(stored(&m), ["a/bar", "a/foo"]);
    assert_eq!(
        m.info.files[1].attr.symlink.as_deref(),
        Some(&["a".to_string(), "bar".into()][..])
    );
    // A symlink path that is not a list of strings is an error (invalid_symlink).
    let mut bad = link(Some(0), &["x"], &[]);
    if let O::Dict(d) = &mut bad {
        d.retain(|(k, _)| k != b"symlink path");
        d.push((b"symlink path".to_vec(), O::List(vec![O::int(4)])));
        d.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let msg = message(&multi(vec![file(1, &["a"]), bad], 16384, 1));
    assert!(msg.contains("symlink path[0]"), "{msg}");
    // v2 symlinks need neither length nor pieces root.
    let leaf = O::dict([("attr", s("l")), ("symlink path", path(&["b"]))]);
    let t = O::dict([(
        "info",
        O::dict([
            ("name", s("v2")),
            ("piece length", O::int(16384)),
            ("meta version", O::int(2)),
            (
                "file tree",
                O::dict([
                    ("a", O::dict([("", leaf)])),
                    (
                        "b",
                        O::dict([(
                            "",
                            O::dict([
                                ("length", O::int(5)),
                                ("pieces root", O::Bytes(vec![1; 32])),
                            ]),
                        )]),
                    ),
                ]),
            ),
        ]),
    )]);
    let m = parse(&t).unwrap();
    assert_eq!(
        (m.info.files[0].length, m.info.files[0].pieces_root),
        (0, None)
    );
    assert_eq!(m.info.files[1].offset, 0);
}

#[test]
fn pad_files_may_omit_their_path() {
    // pad_file_no_path
    let t = multi(
        vec![
            file(45, &["foo", "bar.txt"]),
            O::dict([("attr", s("p")), ("length", O::int(2124))]),
        ],
        16384,
        2169,
    );
    let m = parse(&t).unwrap();
    assert_eq!(m.info.files[1].path, [".pad", "2124"]);
    assert!(m.info.files[1].attr.pad);
    // Pad files are never written, so they may share a path.
    let pad = O::dict([
        ("attr", s("p")),
        ("length", O::int(1)),
        ("path", path(&[".pad", "1"])),
    ]);
    let m = parse(&multi(
        vec![file(1, &["a"]), pad.clone(), file(1, &["b"]), pad],
        16384,
        4,
    ))
    .unwrap();
    assert_eq!(stored(&m), ["a", ".pad/1", "b", ".pad/1"]);
}

#[test]
fn stray_bytes_after_the_torrent_are_a_warning() {
    let t = multi(vec![file(5, &["a"])], 16384, 5).encode();
    let clean = Metainfo::from_bytes(&t).unwrap();
    let with_newline = [&t[..], b"\n"].concat();
    let m = Metainfo::from_bytes(&with_newline).unwrap();
    assert_eq!(m.info_hash, clean.info_hash);
    assert_eq!(
        m.warnings,
        [format!(
            "torrent (byte {}): 1 bytes after the torrent's dictionary; ignored",
            t.len()
        )]
    );
    // Something that is not a torrent at all is still refused (string.torrent).
    let e = Metainfo::from_bytes(b"10:libtorrent")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a dictionary, found a string"), "{e}");
}

#[test]
fn urls_are_trimmed() {
    // whitespace_url
    let mut t = multi(vec![file(5, &["a"])], 16384, 5);
    if let O::Dict(d) = &mut t {
        d.push((
            b"announce".to_vec(),
            s("\t udp://127.0.0.1:6969/announce\n"),
        ));
        d.push((
            b"url-list".to_vec(),
            O::List(vec![s(" http://127.0.0.1/ "), s("  ")]),
        ));
        d.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let m = parse(&t).unwrap();
    assert_eq!(m.announce.as_deref(), Some("udp://127.0.0.1:6969/announce"));
    assert_eq!(m.url_list, ["http://127.0.0.1/"]);
}

#[test]
fn warnings_are_bounded() {
    let files = (0..1000).map(|_| file(1, &["same"])).collect();
    let m = parse(&multi(files, 16384, 1000)).unwrap();
    assert_eq!(m.warnings.len(), MAX_WARNINGS + 1);
    assert_eq!(m.warnings[MAX_WARNINGS], "899 more warnings not shown");
    assert_eq!(m.info.files[999].stored, ["same.999"]);
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
fn single_file_hybrid_names_must_agree() {
    // libtorrent's v2_mismatching_metadata: v1 names the file "test1MB", the v2 tree
    // "/est1MB". Read as the same file once names were rewritten rather than refused.
    let hybrid = |tree_key: &[u8]| {
        O::dict([(
            "info",
            O::dict([
                ("name", s("test1MB")),
                ("piece length", O::int(16384)),
                ("meta version", O::int(2)),
                ("pieces", O::Bytes(vec![0; 20])),
                ("length", O::int(100)),
                (
                    "file tree",
                    O::Dict(vec![(
                        tree_key.to_vec(),
                        O::dict([(
                            "",
                            O::dict([
                                ("length", O::int(100)),
                                ("pieces root", O::Bytes(vec![7; 32])),
                            ]),
                        )]),
                    )]),
                ),
            ]),
        )])
    };
    let m = parse(&hybrid(b"test1MB")).unwrap();
    assert_eq!(m.info.files[0].pieces_root, Some([7; 32]));
    let msg = message(&hybrid(b"/est1MB"));
    assert!(msg.contains("differs from v2 file"), "{msg}");
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

/// A v2 torrent whose file tree is `tree` (already encoded as a dictionary value).
fn v2_with_tree(tree: O) -> O {
    O::dict([(
        "info",
        O::dict([
            ("name", s("v2")),
            ("piece length", O::int(16384)),
            ("meta version", O::int(2)),
            ("file tree", tree),
        ]),
    )])
}

fn data_leaf() -> O {
    O::dict([(
        "",
        O::dict([
            ("length", O::int(5)),
            ("pieces root", O::Bytes(vec![7; 32])),
        ]),
    )])
}

fn empty_leaf() -> O {
    O::dict([("", O::dict([("length", O::int(0))]))])
}

#[test]
fn long_written_names_are_refused_naming_the_field() {
    let long = vec![b'k'; files::MAX_WRITTEN_NAME_BYTES + 1];
    // A folder key of the v2 tree.
    let tree = O::Dict(vec![(
        long.clone(),
        O::Dict(vec![(b"f".to_vec(), empty_leaf())]),
    )]);
    let e = message(&v2_with_tree(tree));
    assert!(e.starts_with("info.file tree (byte "), "{e}");
    assert!(e.contains("a name of 4097 bytes starting \"kkkk"), "{e}");
    assert!(e.len() < 400, "the name is not copied whole: {e}");
    // A component of a v1 path.
    let t = named(b"d", vec![raw_file(1, &[b"a", &long])], 1);
    let e = message(&t);
    assert!(e.starts_with("info.files[0].path[1] (byte "), "{e}");
    // At the limit: accepted, stored cut to 240 bytes.
    let ok = vec![b'k'; files::MAX_WRITTEN_NAME_BYTES];
    let m = parse(&named(b"d", vec![raw_file(1, &[&ok])], 1)).unwrap();
    assert_eq!(m.info.files[0].stored[0].len(), sanitize::MAX_NAME_BYTES);
}

#[test]
fn paths_of_many_files_in_deep_folders_are_refused_past_the_budget() {
    // 90 nested folders holding 30 000 empty files: each file's path repeats them.
    let files: Vec<(Vec<u8>, O)> = (0..30_000)
        .map(|i| (format!("{i}").into_bytes(), empty_leaf()))
        .collect();
    let mut node = O::Dict(files);
    for _ in 0..90 {
        node = O::Dict(vec![(b"d".to_vec(), node)]);
    }
    let e = message(&v2_with_tree(node));
    assert!(
        e.contains("the file paths of this torrent take more than 128 MiB"),
        "{e}"
    );
    assert!(e.starts_with("info.file tree/d/d/"), "{e}");
    // The same files in a shallow tree are fine.
    let mut files: Vec<(Vec<u8>, O)> = (0..30_000)
        .map(|i| (format!("{i}").into_bytes(), empty_leaf()))
        .collect();
    files.push((b"z".to_vec(), data_leaf()));
    let m = parse(&v2_with_tree(O::Dict(vec![(
        b"d".to_vec(),
        O::Dict(files),
    )])))
    .unwrap();
    assert_eq!(m.info.files.len(), 30_001);
    // v1 lists pay for their paths the same way.
    let deep: Vec<&[u8]> = vec![b"d"; 96];
    let list: Vec<O> = (0..30_000).map(|_| raw_file(0, &deep)).collect();
    let e = message(&named(b"n", list, 0));
    assert!(e.contains("take more than 128 MiB"), "{e}");
    assert!(e.starts_with("info.files["), "{e}");
}

#[test]
fn names_differing_only_in_ascii_case_are_renamed() {
    let t = named(
        b"d",
        vec![
            raw_file(1, &[b"A.txt"]),
            raw_file(1, &[b"a.txt"]),
            raw_file(1, &[b"x"]),
            raw_file(1, &[b"X", b"y"]),
            raw_file(1, &[b".hidden"]),
            raw_file(1, &[b".hidden"]),
        ],
        6,
    );
    let m = parse(&t).unwrap();
    assert_eq!(
        stored(&m),
        ["A.txt", "a.1.txt", "x.1", "X/y", ".hidden", ".1.hidden"]
    );
    // Web seeds have the files under their names before renaming.
    let web: Vec<String> = m
        .info
        .files
        .iter()
        .map(|f| f.web_seed_path().collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(web, ["A.txt", "a.txt", "x", "X/y", ".hidden", ".hidden"]);
}

#[test]
fn stored_paths_are_checked_ignoring_case() {
    let t = named(b"d", vec![raw_file(1, &[b"a"]), raw_file(1, &[b"b"])], 2);
    let bytes = t.encode();
    let (root, _) = bencode::decode_prefix_with(&bytes, TORRENT_LIMITS).unwrap();
    let info = root.get(b"info").unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    let with = |paths: &[&[&str]]| {
        let mut files = m.info.files.clone();
        for (f, p) in files.iter_mut().zip(paths) {
            f.stored = p.iter().map(|c| c.to_string()).collect();
        }
        files::check_stored(&files, info)
    };
    assert!(with(&[&["a"], &["b"]]).is_ok());
    assert!(with(&[&["A"], &["a"]]).is_err(), "two files");
    assert!(with(&[&["A"], &["a", "x"]]).is_err(), "a file and a folder");
    assert!(with(&[&["a", "X"], &["A"]]).is_err(), "a folder and a file");
    assert!(with(&[&["a"], &[&"b".repeat(256)]]).is_err(), "too long");
}

#[test]
fn pad_files_in_a_v2_tree_are_refused() {
    let leaf = |attr: &str, len: i64| {
        O::dict([(
            "",
            O::dict([
                ("attr", s(attr)),
                ("length", O::int(len)),
                ("pieces root", O::Bytes(vec![7; 32])),
            ]),
        )])
    };
    for len in [0, 16384] {
        let tree = O::Dict(vec![
            (b"a".to_vec(), leaf("", 5)),
            (b"pad".to_vec(), leaf("p", len)),
        ]);
        let e = message(&v2_with_tree(tree));
        assert!(e.starts_with("info.file tree/pad[\"\"] (byte "), "{e}");
        assert!(e.contains("a pad file in a v2 file tree"), "{e}");
    }
}

#[test]
fn files_sharing_a_pieces_root_must_have_the_same_length() {
    let leaf = |len: i64| {
        O::dict([(
            "",
            O::dict([
                ("length", O::int(len)),
                ("pieces root", O::Bytes(vec![7; 32])),
            ]),
        )])
    };
    let same = O::Dict(vec![(b"a".to_vec(), leaf(5)), (b"b".to_vec(), leaf(5))]);
    assert!(parse(&v2_with_tree(same)).is_ok(), "copies of one file");
    let differ = O::Dict(vec![(b"a".to_vec(), leaf(5)), (b"b".to_vec(), leaf(40000))]);
    let e = message(&v2_with_tree(differ));
    assert!(e.contains("have the same pieces root"), "{e}");
}

#[test]
fn a_v2_only_torrent_with_no_usable_name_is_named_by_its_full_v2_hash() {
    let t = O::dict([(
        "info",
        O::dict([
            ("name", s("..")),
            ("piece length", O::int(16384)),
            ("meta version", O::int(2)),
            ("file tree", O::Dict(vec![(b"f".to_vec(), data_leaf())])),
        ]),
    )]);
    let m = parse(&t).unwrap();
    assert_eq!(m.info.stored_name, m.info_hash_v2.unwrap().to_hex());
    assert_eq!(m.info.stored_name.len(), 64);
}

//! Property tests for the untrusted-input parsers: bencode (and its JSON form),
//! `.torrent` metainfo and magnet links.
//!
//! The invariants checked here are the ones the module docs promise:
//! - bencode: every accepted input re-encodes byte-identically, the top-level `raw`
//!   span is the whole input, and the decoder never panics;
//! - JSON: bencode → JSON → bencode is byte-identical;
//! - metainfo: parsing never panics, stored file paths are safe and unique, and the v1 file
//!   lengths add up to the piece geometry;
//! - magnet: parsing never panics, and printing a parsed magnet parses back to it.

use bittorrent::bencode::{self, json, OwnedValue};
use bittorrent::metainfo::Metainfo;
use bittorrent::{InfoHash, Magnet};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use std::collections::BTreeMap;
use std::net::SocketAddr;

// ---------------------------------------------------------------------------
// Bencode values
// ---------------------------------------------------------------------------

/// Canonical decimal text: any i64, and integers far beyond i64 built from digit strings
/// (no leading zero, no `-0`).
fn arb_int() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        select(vec![
            i64::MIN.to_string(),
            i64::MAX.to_string(),
            "9223372036854775808".to_owned(),
            "-9223372036854775809".to_owned(),
            u64::MAX.to_string(),
            "18446744073709551616".to_owned(),
        ]),
        (any::<bool>(), "[1-9][0-9]{0,60}").prop_map(|(neg, digits)| if neg {
            format!("-{digits}")
        } else {
            digits
        }),
    ]
}

/// Byte strings: binary, UTF-8 text (any Unicode), text starting with '/', text with
/// control characters, and the strings the JSON form treats specially.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..24),
        any::<String>().prop_map(String::into_bytes),
        "[a-z ]{0,12}".prop_map(String::into_bytes),
        "/{1,2}[a-z:/]{0,8}".prop_map(String::into_bytes),
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\t\n\r a-z]{0,10}".prop_map(String::into_bytes),
        select(vec![
            &b"/int"[..],
            b"/bytes",
            b"/bytes:00",
            b"//",
            b"/",
            b"",
            b"0",
            b"-1",
            b"\xff\xfe",
            b"\xc3",
            b"\"\\",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

/// Dictionary keys: empty, the JSON tags, keys starting with '/' or '//', binary keys,
/// ordinary text.
fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => "[a-e]{0,3}".prop_map(String::into_bytes),
        2 => select(vec![
            &b""[..],
            b"/int",
            b"/bytes",
            b"/bytes:",
            b"/bytes:00",
            b"/bytes:zz",
            b"/",
            b"//",
            b"///",
            b"//int",
            b"\x00",
            b"\xff",
            b"a\tb",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => "/{1,2}[a-z:]{0,6}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..8),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

/// Entries with unique keys, in whatever order they were generated (not only sorted).
fn unique_entries(entries: Vec<(Vec<u8>, OwnedValue)>) -> Vec<(Vec<u8>, OwnedValue)> {
    let mut out: Vec<(Vec<u8>, OwnedValue)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        if !out.iter().any(|(existing, _)| *existing == k) {
            out.push((k, v));
        }
    }
    out
}

/// Any bencode value, nested at most 8 levels deep.
fn arb_value() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        arb_int().prop_map(OwnedValue::Int),
        arb_bytes().prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(8, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(OwnedValue::List),
            vec((arb_key(), inner), 0..5).prop_map(|e| OwnedValue::Dict(unique_entries(e))),
        ]
    })
}

/// Asserts everything an accepted bencode input promises.
fn check_accepted_bencode(bytes: &[u8]) {
    let Ok(v) = bencode::decode(bytes) else {
        return;
    };
    assert_eq!(v.raw, bytes, "top-level raw span is the whole input");
    assert_eq!(v.offset, 0);
    assert_eq!(
        v.to_owned_value().encode(),
        bytes,
        "accepted input re-encodes byte-identically"
    );
    let text = json::to_json(&v);
    let back = json::from_json(&text)
        .unwrap_or_else(|e| panic!("to_json output rejected by from_json: {e}\n{text}"));
    assert_eq!(back.encode(), bytes, "JSON round trip\n{text}");
}

// ---------------------------------------------------------------------------
// Byte mutations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

/// Bytes that matter to bencode, mixed with anything.
fn arb_mutation_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(b"ilde:-0123456789".to_vec()),
        select(b"/\\.\0".to_vec()),
    ]
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        3 => (any::<Index>(), arb_mutation_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<Index>(), arb_mutation_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Bytes drawn mostly from the bencode alphabet, so that random input gets past the
/// first byte often.
fn arb_bencode_ish() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            4 => select(b"ilde:-0123456789".to_vec()),
            1 => any::<u8>(),
        ],
        0..128,
    )
}

proptest! {
    #[test]
    fn bencode_round_trips(v in arb_value()) {
        let bytes = v.encode();
        let decoded = bencode::decode(&bytes).expect("encoded value decodes");
        prop_assert_eq!(decoded.raw, &bytes[..]);
        prop_assert_eq!(decoded.offset, 0);
        prop_assert_eq!(decoded.to_owned_value(), v);
    }

    #[test]
    fn bencode_prefix_decoding_stops_after_the_value(
        v in arb_value(),
        rest in vec(any::<u8>(), 0..16),
    ) {
        let bytes = v.encode();
        let input = [&bytes[..], &rest[..]].concat();
        let (decoded, used) =
            bencode::decode_prefix_with(&input, bencode::Limits::default()).expect("prefix decodes");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded.raw, &bytes[..]);
        prop_assert_eq!(decoded.to_owned_value(), v);
    }

    #[test]
    fn bencode_json_round_trip_is_byte_identical(v in arb_value()) {
        let bytes = v.encode();
        let decoded = bencode::decode(&bytes).expect("encoded value decodes");
        let text = json::to_json(&decoded);
        let back = json::from_json(&text);
        prop_assert!(back.is_ok(), "from_json failed: {:?}\n{}", back.err(), text);
        prop_assert_eq!(back.unwrap().encode(), bytes, "{}", text);
    }

    #[test]
    fn bencode_decode_never_panics_on_random_bytes(bytes in vec(any::<u8>(), 0..256)) {
        check_accepted_bencode(&bytes);
    }

    #[test]
    fn bencode_decode_never_panics_on_bencode_alphabet(bytes in arb_bencode_ish()) {
        check_accepted_bencode(&bytes);
    }

    #[test]
    fn bencode_decode_never_panics_on_mutations(
        v in arb_value(),
        mutations in vec(arb_mutation(), 1..5),
    ) {
        check_accepted_bencode(&mutate(v.encode(), &mutations));
    }
}

#[test]
fn bencode_json_handles_the_deepest_accepted_nesting() {
    // 100 levels of lists and a dictionary around a binary string: the JSON form adds
    // one more level for `{"/bytes": …}`.
    let mut bytes = vec![b'l'; 98];
    bytes.extend_from_slice(b"d1:\xffl3:\x01\x02\x03e1:\x004:/inte");
    bytes.extend(vec![b'e'; 98]);
    bencode::decode(&bytes).expect("100 levels are accepted");
    check_accepted_bencode(&bytes);
}

// ---------------------------------------------------------------------------
// Metainfo
// ---------------------------------------------------------------------------

fn s(x: &str) -> OwnedValue {
    OwnedValue::bytes(x.as_bytes())
}

fn path_value(parts: &[Vec<u8>]) -> OwnedValue {
    OwnedValue::List(parts.iter().cloned().map(OwnedValue::Bytes).collect())
}

fn pieces_for(total: u64, piece_length: i64, delta: i64) -> OwnedValue {
    let count = if piece_length > 0 {
        total.div_ceil(piece_length as u64) as i64
    } else {
        1
    };
    let count = (count + delta).max(0) as usize;
    OwnedValue::Bytes((0..count * 20).map(|i| i as u8).collect())
}

/// A small valid single-file torrent.
fn valid_single_file() -> OwnedValue {
    OwnedValue::dict([
        ("announce", s("http://127.0.0.1:6969/announce")),
        (
            "info",
            OwnedValue::dict([
                ("name", s("file.bin")),
                ("piece length", OwnedValue::int(16384)),
                ("length", OwnedValue::int(40000)),
                ("pieces", pieces_for(40000, 16384, 0)),
            ]),
        ),
    ])
}

/// A small valid multi-file torrent with a pad file and nested directories.
fn valid_multi_file() -> OwnedValue {
    let file = |len: i64, parts: &[&str]| {
        OwnedValue::dict([
            ("length", OwnedValue::int(len)),
            (
                "path",
                OwnedValue::List(parts.iter().map(|p| s(p)).collect()),
            ),
        ])
    };
    let pad = OwnedValue::dict([
        ("attr", s("p")),
        ("length", OwnedValue::int(16384 - 1000)),
        ("path", OwnedValue::List(vec![s(".pad"), s("15384")])),
    ]);
    OwnedValue::dict([
        (
            "announce-list",
            OwnedValue::List(vec![OwnedValue::List(vec![s("udp://127.0.0.1:6969")])]),
        ),
        ("comment", s("test")),
        (
            "info",
            OwnedValue::dict([
                ("name", s("dir")),
                ("piece length", OwnedValue::int(16384)),
                (
                    "files",
                    OwnedValue::List(vec![
                        file(1000, &["a.txt"]),
                        pad,
                        file(20000, &["sub", "b.bin"]),
                        file(0, &["sub", "empty"]),
                    ]),
                ),
                ("pieces", pieces_for(16384 + 20000, 16384, 0)),
            ]),
        ),
    ])
}

/// A small valid hybrid (v1 + v2) torrent.
fn valid_hybrid() -> OwnedValue {
    let leaf = |len: i64, root: u8| {
        OwnedValue::dict([(
            "",
            OwnedValue::dict([
                ("length", OwnedValue::int(len)),
                ("pieces root", OwnedValue::Bytes(vec![root; 32])),
            ]),
        )])
    };
    OwnedValue::dict([(
        "info",
        OwnedValue::dict([
            ("name", s("h")),
            ("piece length", OwnedValue::int(16384)),
            ("meta version", OwnedValue::int(2)),
            (
                "files",
                OwnedValue::List(vec![
                    OwnedValue::dict([
                        ("length", OwnedValue::int(16384)),
                        ("path", OwnedValue::List(vec![s("x")])),
                    ]),
                    OwnedValue::dict([
                        ("length", OwnedValue::int(100)),
                        ("path", OwnedValue::List(vec![s("y")])),
                    ]),
                ]),
            ),
            (
                "file tree",
                OwnedValue::dict([("x", leaf(16384, 1)), ("y", leaf(100, 2))]),
            ),
            ("pieces", pieces_for(16384 + 100, 16384, 0)),
        ]),
    )])
}

fn check_component(c: &str, what: &str) {
    assert!(!c.is_empty(), "{what}: empty component");
    assert!(c != "." && c != "..", "{what}: component {c:?}");
    assert!(
        !c.contains(['/', '\\']) && !c.chars().any(|x| x < ' '),
        "{what}: component {c:?} contains a separator or a control character"
    );
    assert!(c.len() <= 255, "{what}: component of {} bytes", c.len());
}

fn check_path(p: &[String], what: &str) {
    assert!(!p.is_empty(), "{what}: empty path");
    for c in p {
        check_component(c, what);
    }
}

/// Asserts the promises of an accepted torrent.
fn check_metainfo(m: &Metainfo) {
    let info = &m.info;
    // Names as written may be anything; what is stored on disk is always safe.
    check_component(&info.stored_name, "stored name");
    assert!(!info.files.is_empty(), "a torrent has files");
    for (i, f) in info.files.iter().enumerate() {
        check_path(&f.stored, &format!("files[{i}] stored path"));
        if let Some(p) = &f.attr.symlink {
            for c in p {
                check_component(c, &format!("files[{i}].symlink"));
            }
            assert_eq!(f.length, 0, "a symlink carries no data");
        }
    }
    if info.single_file {
        assert_eq!(info.files[0].stored.as_slice(), [info.stored_name.as_str()]);
    }
    if let Some(g) = info.geometry() {
        let sum: u128 = info.files.iter().map(|f| u128::from(f.length)).sum();
        assert_eq!(
            sum,
            u128::from(g.total_length()),
            "file lengths add up to the geometry"
        );
        assert_eq!(info.pieces.len() as u64, u64::from(g.piece_count()));
        let mut at = 0u64;
        for f in &info.files {
            assert_eq!(f.offset, at, "v1 files are laid end to end");
            at += f.length;
        }
    }
    // No two written files share a path, and no file is another file's folder, ignoring
    // ASCII case (as on a case-insensitive disk).
    let written = || info.files.iter().filter(|f| !f.attr.pad);
    let folders: std::collections::HashSet<String> = written()
        .flat_map(|f| {
            let p = f.stored.as_slice();
            (1..p.len()).map(move |n| p[..n].join("/").to_ascii_lowercase())
        })
        .collect();
    let mut files = std::collections::HashSet::new();
    for f in written() {
        let p = f.stored.join("/").to_ascii_lowercase();
        assert!(!folders.contains(&p), "file {p:?} is also a folder");
        assert!(files.insert(p.clone()), "two files are stored as {p:?}");
    }
    if let Some(h) = m.info_hash {
        assert_eq!(h, InfoHash::of(&m.info_bytes));
    }
    assert!(m.info_hash.is_some() || m.info_hash_v2.is_some());
    // The torrent's magnet link parses back to the same content.
    let link = m.magnet().to_string();
    let back: Magnet = link
        .parse()
        .unwrap_or_else(|e| panic!("magnet {link:?} of an accepted torrent: {e}"));
    assert_eq!(back.info_hash, m.info_hash);
    assert_eq!(back.info_hash_v2, m.info_hash_v2);
    assert_eq!(back.display_name.as_deref(), Some(info.torrent_name()));
    assert_eq!(back.exact_length, Some(info.content_length()));
}

fn check_torrent_bytes(bytes: &[u8]) {
    if let Ok(m) = Metainfo::from_bytes(bytes) {
        check_metainfo(&m);
    }
}

/// Path components, safe and unsafe.
fn arb_component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => "[a-z]{1,6}(\\.[a-z]{1,3})?".prop_map(String::into_bytes),
        // Names that differ only in case, and long names renamed near 255 bytes.
        4 => "[aAbB]{1,2}(\\.[tT])?".prop_map(String::into_bytes),
        1 => "[a-z]{236,239}\u{1f600}[a-z]{0,4}(\\.[a-z]{1,8})?".prop_map(String::into_bytes),
        2 => select(vec![
            &b""[..],
            b".",
            b"..",
            b"...",
            b"a/b",
            b"/",
            b"a\\b",
            b"\\",
            b"a\0b",
            b"\0",
            b".pad",
            b"\xff",
            b"\xfe",
            b"C:",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => vec(any::<u8>(), 0..6),
        1 => "\\PC{1,4}".prop_map(String::into_bytes),
    ]
}

fn arb_path() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        12 => vec(arb_component(), 1..4),
        1 => Just(Vec::new()),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Single,
    Multi,
    V2,
    Hybrid,
}

#[derive(Debug, Clone)]
struct FileSpec {
    path: Vec<Vec<u8>>,
    path_utf8: Option<Vec<Vec<u8>>>,
    length: i64,
    attr: Option<Vec<u8>>,
    symlink: Option<Vec<Vec<u8>>>,
    root: u8,
}

fn arb_file() -> impl Strategy<Value = FileSpec> {
    (
        arb_path(),
        prop::option::weighted(0.15, arb_path()),
        prop_oneof![
            8 => 0i64..70_000,
            1 => select(vec![-1i64, 16384, 32768, i64::MAX, i64::MIN]),
        ],
        prop::option::weighted(
            0.2,
            select(vec![&b"p"[..], b"x", b"h", b"l", b"px", b"lx", b""]).prop_map(<[u8]>::to_vec),
        ),
        prop::option::weighted(0.2, arb_path()),
        any::<u8>(),
    )
        .prop_map(|(path, path_utf8, length, attr, symlink, root)| FileSpec {
            path,
            path_utf8,
            length,
            attr,
            symlink,
            root,
        })
}

#[derive(Debug, Clone)]
struct TorrentSpec {
    layout: Layout,
    name: Vec<u8>,
    name_utf8: Option<Vec<u8>>,
    piece_length: i64,
    files: Vec<FileSpec>,
    pieces_delta: i64,
    private: Option<i64>,
    meta_version: Option<i64>,
    extra: Vec<(Vec<u8>, OwnedValue)>,
}

fn arb_torrent_spec() -> impl Strategy<Value = TorrentSpec> {
    let extra_key = select(vec![
        &b"announce"[..],
        b"announce-list",
        b"url-list",
        b"httpseeds",
        b"nodes",
        b"creation date",
        b"comment",
        b"comment.utf-8",
        b"created by",
        b"encoding",
        b"piece layers",
    ])
    .prop_map(<[u8]>::to_vec);
    (
        select(vec![
            Layout::Single,
            Layout::Multi,
            Layout::V2,
            Layout::Hybrid,
        ]),
        arb_component(),
        prop::option::weighted(0.15, arb_component()),
        prop_oneof![
            6 => select(vec![16384i64, 32768, 65536]),
            1 => select(vec![0i64, -16384, 1000, 3 << 13, (512 << 20) + 1, 1 << 29]),
        ],
        vec(arb_file(), 1..5),
        prop_oneof![8 => Just(0i64), 1 => -1i64..=1],
        prop::option::weighted(0.2, -1i64..=2),
        prop::option::weighted(0.1, -1i64..=3),
        vec((extra_key, arb_value()), 0..3),
    )
        .prop_map(
            |(
                layout,
                name,
                name_utf8,
                piece_length,
                files,
                pieces_delta,
                private,
                meta_version,
                extra,
            )| TorrentSpec {
                layout,
                name,
                name_utf8,
                piece_length,
                files,
                pieces_delta,
                private,
                meta_version,
                extra,
            },
        )
}

enum Node {
    File(OwnedValue),
    Dir(BTreeMap<Vec<u8>, Node>),
}

impl Node {
    fn into_value(self) -> OwnedValue {
        match self {
            Node::File(leaf) => OwnedValue::dict([("", leaf)]),
            Node::Dir(children) => OwnedValue::Dict(
                children
                    .into_iter()
                    .map(|(k, n)| (k, n.into_value()))
                    .collect(),
            ),
        }
    }
}

/// Adds a file to a v2 tree; a path clashing with an existing one is dropped.
fn insert_file(dir: &mut BTreeMap<Vec<u8>, Node>, path: &[Vec<u8>], leaf: OwnedValue) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dir.entry(first.clone()).or_insert(Node::File(leaf));
        return;
    }
    match dir
        .entry(first.clone())
        .or_insert_with(|| Node::Dir(BTreeMap::new()))
    {
        Node::Dir(sub) => insert_file(sub, rest, leaf),
        Node::File(_) => {}
    }
}

fn build_torrent(t: &TorrentSpec) -> OwnedValue {
    let single = t.layout == Layout::Single || t.files.len() == 1 && t.layout != Layout::Multi;
    let files: &[FileSpec] = if single { &t.files[..1] } else { &t.files };
    let mut info: Vec<(Vec<u8>, OwnedValue)> = vec![
        (b"name".to_vec(), OwnedValue::Bytes(t.name.clone())),
        (b"piece length".to_vec(), OwnedValue::int(t.piece_length)),
    ];
    if let Some(n) = &t.name_utf8 {
        info.push((b"name.utf-8".to_vec(), OwnedValue::Bytes(n.clone())));
    }
    if let Some(p) = t.private {
        info.push((b"private".to_vec(), OwnedValue::int(p)));
    }
    let has_v1 = t.layout != Layout::V2;
    let has_v2 = matches!(t.layout, Layout::V2 | Layout::Hybrid);
    if has_v1 {
        let total: u64 = files
            .iter()
            .map(|f| f.length.max(0) as u64)
            .fold(0, u64::saturating_add);
        if single {
            info.push((b"length".to_vec(), OwnedValue::int(files[0].length)));
            push_attr(&mut info, &files[0]);
        } else {
            let list = files
                .iter()
                .map(|f| {
                    let mut e = vec![
                        (b"length".to_vec(), OwnedValue::int(f.length)),
                        (b"path".to_vec(), path_value(&f.path)),
                    ];
                    if let Some(p) = &f.path_utf8 {
                        e.push((b"path.utf-8".to_vec(), path_value(p)));
                    }
                    push_attr(&mut e, f);
                    OwnedValue::dict(e)
                })
                .collect();
            info.push((b"files".to_vec(), OwnedValue::List(list)));
        }
        // Keep the pieces string small even for absurd lengths.
        let total = total.min(1 << 24);
        info.push((
            b"pieces".to_vec(),
            pieces_for(total, t.piece_length, t.pieces_delta),
        ));
    }
    if has_v2 {
        let mut tree = BTreeMap::new();
        for f in files {
            let mut leaf = vec![(b"length".to_vec(), OwnedValue::int(f.length))];
            if f.length != 0 {
                leaf.push((b"pieces root".to_vec(), OwnedValue::Bytes(vec![f.root; 32])));
            }
            push_attr(&mut leaf, f);
            let path = if single {
                vec![t.name.clone()]
            } else {
                f.path.clone()
            };
            insert_file(&mut tree, &path, OwnedValue::dict(leaf));
        }
        info.push((b"file tree".to_vec(), Node::Dir(tree).into_value()));
    }
    let meta_version = t.meta_version.or(has_v2.then_some(2));
    if let Some(mv) = meta_version {
        info.push((b"meta version".to_vec(), OwnedValue::int(mv)));
    }
    let mut top = vec![(b"info".to_vec(), OwnedValue::dict(info))];
    for (k, v) in &t.extra {
        if !top.iter().any(|(existing, _)| existing == k) {
            top.push((k.clone(), v.clone()));
        }
    }
    OwnedValue::dict(top)
}

fn push_attr(entries: &mut Vec<(Vec<u8>, OwnedValue)>, f: &FileSpec) {
    if let Some(a) = &f.attr {
        entries.push((b"attr".to_vec(), OwnedValue::Bytes(a.clone())));
    }
    if let Some(p) = &f.symlink {
        entries.push((b"symlink path".to_vec(), path_value(p)));
    }
}

/// Names that clash once case is ignored or once long names are numbered.
fn clashing_names() -> OwnedValue {
    let long = format!("{}\u{1f600}.abcdefgh", "n".repeat(239));
    let mut files: Vec<OwnedValue> = [
        vec!["A.txt"],
        vec!["a.txt"],
        vec!["D"],
        vec!["d", "x"],
        vec![".hidden"],
        vec![".HIDDEN"],
    ]
    .iter()
    .map(|p| {
        OwnedValue::dict([
            ("length", OwnedValue::int(1)),
            ("path", OwnedValue::List(p.iter().map(|c| s(c)).collect())),
        ])
    })
    .collect();
    files.extend((0..110).map(|_| {
        OwnedValue::dict([
            ("length", OwnedValue::int(1)),
            ("path", OwnedValue::List(vec![s(&long)])),
        ])
    }));
    let total = files.len() as u64;
    OwnedValue::dict([(
        "info",
        OwnedValue::dict([
            ("name", s("clash")),
            ("piece length", OwnedValue::int(16384)),
            ("files", OwnedValue::List(files)),
            ("pieces", pieces_for(total, 16384, 0)),
        ]),
    )])
}

#[test]
fn valid_base_torrents_parse() {
    for t in [
        valid_single_file(),
        valid_multi_file(),
        valid_hybrid(),
        clashing_names(),
    ] {
        let bytes = t.encode();
        let m = Metainfo::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        check_metainfo(&m);
    }
    let m = Metainfo::from_bytes(&valid_hybrid().encode()).unwrap();
    assert!(m.info_hash.is_some() && m.info_hash_v2.is_some());
}

proptest! {
    #[test]
    fn metainfo_never_panics_on_random_bytes(bytes in vec(any::<u8>(), 0..256)) {
        check_torrent_bytes(&bytes);
    }

    #[test]
    fn metainfo_never_panics_on_mutated_torrents(
        which in 0usize..3,
        mutations in vec(arb_mutation(), 1..4),
    ) {
        let base = [valid_single_file, valid_multi_file, valid_hybrid][which]().encode();
        check_torrent_bytes(&mutate(base, &mutations));
    }

    #[test]
    fn metainfo_accepts_only_safe_consistent_torrents(t in arb_torrent_spec()) {
        check_torrent_bytes(&build_torrent(&t).encode());
    }

    #[test]
    fn metainfo_never_panics_on_mutated_generated_torrents(
        t in arb_torrent_spec(),
        mutations in vec(arb_mutation(), 1..4),
    ) {
        check_torrent_bytes(&mutate(build_torrent(&t).encode(), &mutations));
    }
}

// ---------------------------------------------------------------------------
// Magnet links
// ---------------------------------------------------------------------------

/// Percent-escapes the characters of `s` picked by `sel` (cycled), as `%XX` per byte.
fn percent_some(s: &str, sel: &[bool]) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if !sel.is_empty() && sel[i % sel.len()] {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn mixed_case(s: &str, sel: &[bool]) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if !sel.is_empty() && sel[i % sel.len()] {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Values for `xt`: valid v1 hex and base32, v2 multihashes, and near misses.
fn arb_xt() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9a-f]{40}".prop_map(|h| format!("urn:btih:{h}")),
        2 => "[A-Z2-7]{32}".prop_map(|h| format!("urn:btih:{h}")),
        1 => "[A-Z2-7]{26,31}={1,6}".prop_map(|h| format!("urn:btih:{h}")),
        2 => "[0-9a-f]{64}".prop_map(|h| format!("urn:btmh:1220{h}")),
        1 => "[0-9a-f]{64}".prop_map(|h| format!("urn:btmh:{h}")),
        1 => "[0-9a-fA-FxZ]{0,70}".prop_map(|h| format!("urn:btih:{h}")),
        1 => "[0-9a-f]{0,70}".prop_map(|h| format!("urn:btmh:{h}")),
        1 => "[a-z0-9:]{0,20}".prop_map(|h| format!("urn:{h}")),
    ]
}

fn arb_so() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            any::<u32>().prop_map(|n| n.to_string()),
            (0u32..50, 0u32..50).prop_map(|(a, b)| format!("{a}-{b}")),
            select(vec!["", " 1", "1 - 2", "-", "x", "4294967296"]).prop_map(str::to_owned),
        ],
        0..4,
    )
    .prop_map(|parts| parts.join(","))
}

/// Raw (not yet escaped) values for any key.
fn arb_raw_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => arb_xt(),
        2 => any::<SocketAddr>().prop_map(|a| a.to_string()),
        1 => select(vec!["[::1%3]:80", "1.2.3.4:0", "[::ffff:1.2.3.4]:5", "host:1", "::1:80"])
            .prop_map(str::to_owned),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => select(vec!["+5", "-1", "18446744073709551616", ""]).prop_map(str::to_owned),
        2 => arb_so(),
        2 => "(udp|http|https)://[a-z0-9.]{1,10}(:[0-9]{1,5})?/[a-z?=&#%+ ]{0,10}",
        2 => any::<String>(),
        1 => "[ -~]{0,16}",
    ]
}

/// A value as it may appear in a link: escaped in places, or raw percent soup with
/// arbitrary and invalid escapes.
fn arb_link_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (arb_raw_value(), vec(any::<bool>(), 1..6)).prop_map(|(v, sel)| percent_some(&v, &sel)),
        2 => arb_raw_value().prop_map(|v| v.replace(['&', '#'], "")),
        1 => vec(
            prop_oneof![
                any::<u8>().prop_map(|b| format!("%{b:02x}")),
                any::<u8>().prop_map(|b| format!("%{b:02X}")),
                select(vec!["%", "%4", "%G1", "%%", "+", "=", "%00", "%C3%A9", "%E2%82"])
                    .prop_map(str::to_owned),
                "[a-z0-9:/.]{0,4}",
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn arb_magnet_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (
            select(vec!["xt", "dn", "tr", "ws", "x.pe", "xl", "so"]),
            vec(any::<bool>(), 1..4),
            prop::option::weighted(0.2, 0u32..4),
        )
            .prop_map(|(k, sel, n)| {
                let k = mixed_case(k, &sel);
                match n {
                    Some(n) => format!("{k}.{n}"),
                    None => k,
                }
            }),
        1 => select(vec!["", "foo", "xt.", "x.pe.x", "kt", "as", "xs", "tr.01"]).prop_map(str::to_owned),
        1 => "[a-z.%0-9]{0,6}",
    ]
}

fn arb_magnet_string() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        8 => (arb_magnet_key(), arb_link_value()).prop_map(|(k, v)| format!("{k}={v}")),
        1 => arb_magnet_key(),
        1 => "[a-z=%&]{0,6}",
    ];
    (
        prop_oneof![
            8 => Just("magnet:?"),
            1 => select(vec!["MAGNET:?", "Magnet:?", " magnet:?", "magnet:", "magnet?", "magnet:?&"]),
        ],
        prop::option::weighted(0.7, arb_xt()),
        vec(pair, 0..6),
        prop::option::weighted(0.1, "#[ -~]{0,6}"),
        select(vec!["", " ", "\n", "&"]),
    )
        .prop_map(|(prefix, xt, pairs, fragment, tail)| {
            let mut parts = Vec::new();
            if let Some(xt) = xt {
                parts.push(format!("xt={xt}"));
            }
            parts.extend(pairs);
            format!(
                "{prefix}{}{}{tail}",
                parts.join("&"),
                fragment.unwrap_or_default()
            )
        })
}

fn check_magnet(s: &str) {
    if let Ok(m) = s.parse::<Magnet>() {
        let printed = m.to_string();
        assert!(printed.starts_with("magnet:?"), "{printed}");
        assert_eq!(
            printed.parse::<Magnet>(),
            Ok(m),
            "{s:?} printed as {printed:?}"
        );
    }
}

proptest! {
    #[test]
    fn magnet_never_panics_on_arbitrary_strings(s in any::<String>()) {
        check_magnet(&s);
    }

    #[test]
    fn magnet_never_panics_after_the_prefix(rest in any::<String>()) {
        check_magnet(&format!("magnet:?{rest}"));
    }

    #[test]
    fn magnet_round_trips(s in arb_magnet_string()) {
        check_magnet(&s);
    }
}

#[test]
fn magnet_round_trip_examples() {
    let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    for s in [
        format!("magnet:?xt=urn:btih:{hex}&dn=a%26b%23c%25d+e&tr=x&tr=x&so=1-1,0"),
        format!("magnet:?xt=urn:btih:{hex}&x.pe=[fe80::1%253]:6881&xl=%2B7"),
        format!("magnet:?xt=urn:btmh:1220{hex}{}&dn=", &hex[..24]),
    ] {
        let m: Magnet = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        check_magnet(&s);
        check_magnet(&m.to_string());
    }
}

/// Regression: `InfoHash::from_str` accepted any 32-character string that
/// base32-decodes, and a padded one (fewer than 20 bytes) panicked in `copy_from_slice`.
#[test]
fn magnet_base32_infohash_with_padding_is_an_error_not_a_panic() {
    // 32 characters of valid padded base32 decode to 19 bytes, not 20.
    let s = "magnet:?xt=urn:btih:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = std::panic::catch_unwind(|| s.parse::<Magnet>());
    assert!(
        matches!(r, Ok(Err(_))),
        "{s:?} must be rejected without a panic"
    );
}

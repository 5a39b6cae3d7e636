//! The `btfs` command line: help, output encodings, errors on hostile input, and the
//! commands that later parts of btfs provide.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn help_at_every_level_has_examples() {
    for args in [
        &["--help"][..],
        &["bittorrent", "--help"],
        &["bittorrent", "download", "--help"],
        &["bittorrent", "metainfo", "--help"],
        &["bittorrent", "scrape", "--help"],
        &["bittorrent", "bencode", "--help"],
        &["bittorrent", "serve", "--help"],
        &["bittorrent", "create", "--help"],
        &["init", "--help"],
        &["add", "--help"],
        &["cat", "--help"],
        &["get", "--help"],
        &["ls", "--help"],
        &["daemon", "--help"],
    ] {
        let r = btfs(args).ok();
        assert!(r.stdout.contains("Example"), "{args:?}:\n{}", r.stdout);
    }
}

fn torrent_bytes(info: &str) -> Vec<u8> {
    format!("d4:info{info}e").into_bytes()
}

#[test]
fn hostile_torrents_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pieces = format!("6:pieces20:{}", "a".repeat(20));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            b"d8:announce3:abc4:infod4:name".to_vec(),
            "byte 29",
        ),
        (
            "deep",
            {
                let mut v = vec![b'l'; 100_000];
                v.extend(vec![b'e'; 100_000]);
                v
            },
            "nesting deeper than 100 levels",
        ),
        (
            "huge string",
            b"d4:info1099511627776:xe".to_vec(),
            "declares 1099511627776 bytes",
        ),
        (
            "zero piece length",
            torrent_bytes(&format!("d6:lengthi1e4:name1:x12:piece lengthi0e{pieces}e")),
            "info.piece length",
        ),
        (
            "negative piece length",
            torrent_bytes(&format!(
                "d6:lengthi1e4:name1:x12:piece lengthi-5e{pieces}e"
            )),
            "is not a positive length",
        ),
        (
            "pieces not multiple of 20",
            torrent_bytes("d6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces3:abce"),
            "not a multiple of 20",
        ),
        (
            "path of integers",
            torrent_bytes(&format!(
                "d5:filesld6:lengthi1e4:pathli5eeee4:name1:x12:piece lengthi16384e{pieces}e"
            )),
            "info.files[0].path[0]",
        ),
        (
            "name not a string",
            torrent_bytes(&format!(
                "d6:lengthi1e4:namei1e12:piece lengthi16384e{pieces}e"
            )),
            "info.name",
        ),
        ("not a torrent", b"i42e".to_vec(), "expected a dictionary"),
        ("empty file", Vec::new(), "input ends early"),
    ];
    for (what, bytes, expected) in cases {
        let path = tmp.path().join("t.torrent");
        std::fs::write(&path, &bytes).unwrap();
        let r = btfs(&["bittorrent", "metainfo", "-t", s(&path)]);
        assert_eq!(r.status, 1, "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains(expected) && r.stderr.contains("t.torrent"),
            "{what}: expected {expected:?} in {:?}",
            r.stderr
        );
        // The JSON form of the error is machine-readable.
        let r = btfs(&["--enc", "json", "bittorrent", "metainfo", "-t", s(&path)]);
        let e: Value = serde_json::from_str(r.stderr.trim()).unwrap();
        assert_eq!(e["Type"], "error");
        assert!(e["Message"].as_str().unwrap().contains(expected));
        // bencode of the same bytes never panics either.
        let r = btfs(&["bittorrent", "bencode", s(&path)]);
        assert!(r.status == 0 || r.status == 1);
    }
    let r = btfs(&["bittorrent", "metainfo", "-t", "/nonexistent/file.torrent"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("/nonexistent/file.torrent"),
        "{}",
        r.stderr
    );
}

#[test]
fn metainfo_of_a_magnet_shows_what_the_link_holds() {
    let magnet = "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Sample%20File\
                  &tr=udp%3A%2F%2F127.0.0.1%3A6969&ws=http://127.0.0.1:8000/&x.pe=127.0.0.1:6881&xl=1024&so=0,2-3";
    let r = btfs(&["bittorrent", "metainfo", "-m", magnet, "--offline"]).ok();
    assert!(r.stdout.contains("Sample File"), "{}", r.stdout);
    assert!(r
        .stdout
        .contains("c12fe1c06bba254a9dc9f519b335aa7c1367a88a"));
    assert!(r.stdout.contains("only 0,2-3"));
    let j = btfs(&[
        "--json",
        "bittorrent",
        "metainfo",
        "-m",
        magnet,
        "--offline",
    ])
    .ok()
    .json();
    assert_eq!(j["InfoHash"], "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    assert_eq!(j["Announce"], "udp://127.0.0.1:6969");
    assert_eq!(j["UrlList"][0], "http://127.0.0.1:8000/");
    assert_eq!(j["Peers"][0], "127.0.0.1:6881");
    assert_eq!(j["TotalLength"], 1024);
    assert_eq!(j["MetadataFetched"], false);
    let r = btfs(&["bittorrent", "metainfo", "-m", "magnet:?xt=urn:btih:1234"]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("magnet parameter xt"), "{}", r.stderr);
}

/// Names, comments and paths from torrents (and the store) are printed with their
/// control characters escaped: an escape sequence shows as `\u{1b}[…`, never reaches
/// the terminal. JSON keeps the exact strings.
#[test]
fn text_output_escapes_control_characters() {
    let tmp = tempfile::tempdir().unwrap();
    let (esc_name, comment, by) = (
        "evil\x1b]0;owned\x07\x1b[2J",
        "hi\x1b[31mred\u{9b}0m",
        "x\x1b[5m",
    );
    let pieces = format!("6:pieces20:{}", "a".repeat(20));
    let torrent = format!(
        "d7:comment{}:{comment}10:created by{}:{by}4:infod5:filesld6:lengthi1e4:pathl{}:{esc_name}eee\
         4:name{}:{esc_name}12:piece lengthi16384e{pieces}ee",
        comment.len(),
        by.len(),
        esc_name.len(),
        esc_name.len()
    );
    let file = tmp.path().join("evil.torrent");
    std::fs::write(&file, torrent).unwrap();
    let r = btfs(&["bittorrent", "metainfo", "-t", s(&file)]).ok();
    assert!(!r.stdout.contains('\x1b'), "a raw ESC in:\n{:?}", r.stdout);
    assert!(!r.stdout.contains('\u{9b}') && !r.stdout.contains('\x07'));
    assert!(
        r.stdout.contains("hi\\u{1b}[31mred\\u{9b}0m") && r.stdout.contains("x\\u{1b}[5m"),
        "{}",
        r.stdout
    );
    let j = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&file)])
        .ok()
        .json();
    assert_eq!(j["Comment"], comment);

    // Names of the store: `add` and `ls` print them escaped too.
    let repo = tmp.path().join("repo");
    let dir = tmp.path().join("d");
    write(&dir.join("a\x1b[2Jb.txt"), b"x");
    let run = |args: &[&str]| {
        run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(args),
            std::time::Duration::from_secs(60),
        )
        .ok()
    };
    let added = run(&["add", "-r", s(&dir)]);
    assert!(!added.stdout.contains('\x1b'), "{:?}", added.stdout);
    assert!(
        added.stdout.contains("d/a\\u{1b}[2Jb.txt"),
        "{}",
        added.stdout
    );
    let root = added
        .stdout
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap();
    let listed = run(&["ls", root]);
    assert!(!listed.stdout.contains('\x1b'), "{:?}", listed.stdout);
    assert!(
        listed.stdout.contains("a\\u{1b}[2Jb.txt"),
        "{}",
        listed.stdout
    );
}

#[test]
fn create_is_deterministic_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let a = tmp.path().join("a.torrent");
    let b = tmp.path().join("b.torrent");
    btfs(&["bittorrent", "create", s(&dir), "-o", s(&a)]).ok();
    btfs(&[
        "bittorrent",
        "create",
        s(&dir),
        "-o",
        s(&b),
        "--threads",
        "1",
    ])
    .ok();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let r = btfs(&["bittorrent", "create", s(&dir), "-o", s(&a)]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    btfs(&["bittorrent", "create", s(&dir), "-o", s(&a), "--force"]).ok();
    // Several paths: one torrent each, into a folder.
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let one = tmp.path().join("one.bin");
    write(&one, &data(10, 1));
    let j = btfs(&[
        "--json",
        "bittorrent",
        "create",
        s(&dir),
        s(&one),
        "-o",
        s(&outdir),
    ])
    .ok()
    .json();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert!(outdir.join("set.torrent").exists() && outdir.join("one.bin.torrent").exists());
    // An empty file cannot be shared, and says so.
    let empty = tmp.path().join("empty");
    write(&empty, b"");
    let r = btfs(&["bittorrent", "create", s(&empty)]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("nothing to share"), "{}", r.stderr);
}

#[test]
fn bencode_prints_lossless_json_and_encodes_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("x.bencode");
    // Unsorted keys, a binary string, a key starting with '/', a huge integer.
    let raw = b"d1:zi-3e6:pieces3:\x00\xff\x012:/a5:hello3:bigi123456789012345678901234567890ee";
    std::fs::write(&input, raw).unwrap();
    let r = btfs(&["bittorrent", "bencode", "-f", s(&input)]).ok();
    let j = r.json();
    assert_eq!(j["z"], -3);
    assert_eq!(j["pieces"]["/bytes"], "00ff01");
    assert_eq!(j["//a"], "hello");
    assert_eq!(j["big"]["/int"], "123456789012345678901234567890");
    let keys: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(keys[0], "z", "file order kept: {keys:?}");
    let json = tmp.path().join("x.json");
    std::fs::write(&json, &r.stdout).unwrap();
    let back = tmp.path().join("back");
    btfs(&[
        "bittorrent",
        "bencode",
        "--encode",
        "-f",
        s(&json),
        "-o",
        s(&back),
    ])
    .ok();
    assert_eq!(std::fs::read(&back).unwrap(), raw);
    // Bad JSON is explained.
    std::fs::write(&json, "{\"a\": 1.5}").unwrap();
    let r = btfs(&["bittorrent", "bencode", "--encode", "-f", s(&json)]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("not an integer"), "{}", r.stderr);
}

#[test]
fn scrape_rejects_bad_arguments_before_any_traffic() {
    let good = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    let short = &good[..39];
    let zz = "zz".repeat(20);
    for (args, expected) in [
        (
            vec!["-t", "udp://127.0.0.1:1", "-i", ""],
            "at least one infohash",
        ),
        (vec!["-t", "udp://127.0.0.1:1"], "at least one infohash"),
        (
            vec!["-t", "udp://127.0.0.1:1", "-i", &format!("{good},{short}")],
            "infohash 2 of 2",
        ),
        (
            vec!["-t", "udp://127.0.0.1:1", "-i", &zz],
            "not hexadecimal",
        ),
        (
            vec!["-t", "wss://127.0.0.1:1", "-i", good],
            "not a tracker URL",
        ),
        (
            vec!["-t", "http://127.0.0.1:1/a", "-i", good],
            "no scrape URL",
        ),
        (
            vec!["-t", "udp://127.0.0.1", "-i", good],
            "needs a host and a port",
        ),
    ] {
        let mut full = vec!["bittorrent", "scrape"];
        full.extend(args.iter().copied());
        let r = btfs(&full);
        assert_eq!(r.status, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            r.stderr
        );
    }
}

//! Interop with real BitTorrent software: torrents made by mktorrent, transmission-create
//! and libtorrent parse with the infohashes those tools report, and torrents made by btfs
//! are accepted and verified against the data by libtorrent and aria2.
//!
//! The tools are installed by scripts/test; a missing tool fails the test.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn metainfo(torrent: &Path) -> Value {
    btfs(&["--enc", "json", "bittorrent", "metainfo", "-t", s(torrent)])
        .ok()
        .json()
}

/// Paths and lengths of the non-pad files, as libtorrent lists them (below the name).
fn lt_files(info: &Value) -> Vec<(String, u64)> {
    info["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f[2].as_bool().unwrap())
        .map(|f| (f[0].as_str().unwrap().to_owned(), f[1].as_u64().unwrap()))
        .collect()
}

fn our_files(m: &Value) -> Vec<(String, u64)> {
    let name = m["Name"].as_str().unwrap();
    let single = m["Files"].as_array().unwrap().len() == 1
        && m["Files"][0]["Path"].as_array().unwrap().len() == 1
        && m["Files"][0]["Path"][0] == name;
    m["Files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("Padding").is_none())
        .map(|f| {
            let parts: Vec<&str> = f["Path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let path = if single {
                name.to_owned()
            } else {
                format!("{name}/{}", parts.join("/"))
            };
            (path, f["Length"].as_u64().unwrap())
        })
        .collect()
}

/// bencode → JSON → bencode through the CLI gives the file back byte for byte.
fn assert_json_round_trip(torrent: &Path) {
    let dir = torrent.parent().unwrap();
    let json = dir.join("rt.json");
    let back = dir.join("rt.torrent");
    btfs(&["bittorrent", "bencode", "-f", s(torrent), "-o", s(&json)]).ok();
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
    assert_eq!(
        std::fs::read(torrent).unwrap(),
        std::fs::read(&back).unwrap(),
        "{} did not survive bencode → JSON → bencode",
        torrent.display()
    );
}

fn transmission_show_hash(torrent: &Path) -> String {
    let r = run_with_timeout(
        Command::new(tool("transmission-show")).arg(torrent),
        Duration::from_secs(30),
    )
    .ok();
    r.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .unwrap_or_else(|| panic!("no hash in transmission-show output:\n{}", r.stdout))
        .to_owned()
}

#[test]
fn mktorrent_torrents_have_the_infohash_other_tools_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let single = tmp.path().join("one.bin");
    write(&single, &data(300_001, 9));
    for (input, piece_exp) in [(&dir, "15"), (&single, "18")] {
        let out = tmp.path().join("mk.torrent");
        let _ = std::fs::remove_file(&out);
        run_with_timeout(
            Command::new(tool("mktorrent")).args([
                "-a",
                "http://127.0.0.1:6969/announce,udp://127.0.0.1:6969",
                "-a",
                "http://127.0.0.2:6969/announce",
                "-w",
                "http://127.0.0.1:8000/",
                "-c",
                "made by mktorrent",
                "-l",
                piece_exp,
                "-o",
                s(&out),
                s(input),
            ]),
            Duration::from_secs(60),
        )
        .ok();
        let m = metainfo(&out);
        let lt_info = lt(&["info", s(&out)]).json();
        assert_eq!(m["InfoHash"], lt_info["v1"]);
        assert_eq!(
            m["InfoHash"].as_str().unwrap(),
            transmission_show_hash(&out)
        );
        assert_eq!(our_files(&m), lt_files(&lt_info));
        assert_eq!(m["NumPieces"], lt_info["pieces"]);
        assert_eq!(m["Comment"], "made by mktorrent");
        assert_eq!(
            m["AnnounceList"],
            serde_json::json!([
                ["http://127.0.0.1:6969/announce", "udp://127.0.0.1:6969"],
                ["http://127.0.0.2:6969/announce"]
            ])
        );
        assert_eq!(m["UrlList"][0], "http://127.0.0.1:8000/");
        assert_json_round_trip(&out);
    }
}

#[test]
fn transmission_create_torrents_have_the_infohash_transmission_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let single = tmp.path().join("one.bin");
    write(&single, &data(200_000, 4));
    for input in [&dir, &single] {
        let out = tmp.path().join("tc.torrent");
        let _ = std::fs::remove_file(&out);
        run_with_timeout(
            Command::new(tool("transmission-create")).args([
                "-p",
                "-s",
                "32",
                "-t",
                "http://127.0.0.1:6969/announce",
                "-o",
                s(&out),
                s(input),
            ]),
            Duration::from_secs(60),
        )
        .ok();
        let m = metainfo(&out);
        assert_eq!(
            m["InfoHash"].as_str().unwrap(),
            transmission_show_hash(&out)
        );
        let lt_info = lt(&["info", s(&out)]).json();
        assert_eq!(m["InfoHash"], lt_info["v1"]);
        assert_eq!(our_files(&m), lt_files(&lt_info));
        assert_eq!(m["Private"], true);
        assert_eq!(m["PieceLength"], 32768);
        assert_json_round_trip(&out);
    }
}

#[test]
fn libtorrent_v1_hybrid_and_v2_torrents_parse_with_both_infohashes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let single = tmp.path().join("one.bin");
    write(&single, &data(100_000, 5));
    for input in [&dir, &single] {
        for mode in ["v1", "hybrid", "v2"] {
            let out = tmp.path().join(format!("lt-{mode}.torrent"));
            lt(&["make", mode, s(input), s(&out), "16384"]);
            let m = metainfo(&out);
            let lt_info = lt(&["info", s(&out)]).json();
            let ctx = format!("{mode} torrent of {}", input.display());
            match mode {
                "v1" => {
                    assert_eq!(m["InfoHash"], lt_info["v1"], "{ctx}");
                    assert!(m.get("InfoHashV2").is_none(), "{ctx}");
                    assert_eq!(m["MetaVersion"], 1, "{ctx}");
                }
                "hybrid" => {
                    assert_eq!(m["InfoHash"], lt_info["v1"], "{ctx}");
                    assert_eq!(m["InfoHashV2"], lt_info["v2"], "{ctx}");
                    assert_eq!(m["MetaVersion"], 2, "{ctx}");
                }
                _ => {
                    let v2 = lt_info["v2"].as_str().unwrap();
                    assert_eq!(m["InfoHashV2"], v2, "{ctx}");
                    // The wire infohash of a v2-only torrent is the truncated v2 hash.
                    assert_eq!(m["InfoHash"], v2[..40], "{ctx}");
                    assert!(m["PieceHashes"].as_array().unwrap().is_empty(), "{ctx}");
                }
            }
            assert_eq!(our_files(&m), lt_files(&lt_info), "{ctx}");
            assert_eq!(m["NumPieces"], lt_info["pieces"], "{ctx}");
            assert!(m.get("Warnings").is_none(), "{ctx}: {}", m["Warnings"]);
            if mode == "hybrid" && input == &dir {
                let pads = m["Files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|f| f.get("Padding").is_some())
                    .count();
                assert!(pads > 0, "libtorrent's hybrid torrent has pad files");
                assert_eq!(m["NumFiles"], 5, "pad files are not counted");
            }
            assert_json_round_trip(&out);
        }
    }
}

/// Creates a torrent with btfs and returns its metainfo JSON.
fn btfs_create(input: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "bittorrent", "create", s(input), "-o", s(out)];
    args.extend_from_slice(extra);
    btfs(&args).ok();
    metainfo(out)
}

#[test]
fn btfs_torrents_are_accepted_and_verified_by_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let single = tmp.path().join("one.bin");
    write(&single, &data(1_000_000, 6));
    for (input, extra) in [
        (&dir, &["--piece-length", "16KiB"][..]),
        (&single, &[][..]),
        (
            &dir,
            &[
                "--piece-length",
                "32KiB",
                "--private",
                "--tracker",
                "http://127.0.0.1:6969/announce",
            ][..],
        ),
    ] {
        let out = tmp.path().join("ours.torrent");
        let m = btfs_create(input, &out, &[extra, &["--force"]].concat());
        let lt_info = lt(&["info", s(&out)]).json();
        assert_eq!(m["InfoHash"], lt_info["v1"]);
        assert_eq!(our_files(&m), lt_files(&lt_info));
        // libtorrent hashes the data itself and must find every piece correct.
        let check = lt(&["check", s(&out), s(tmp.path()), "60"]).json();
        assert_eq!(check["have"], check["pieces"], "{check}");
        assert_eq!(check["seeding"], true, "{check}");
    }
    // Negative control: one changed byte and libtorrent no longer has every piece.
    let out = tmp.path().join("ours.torrent");
    btfs_create(&dir, &out, &["--piece-length", "16KiB", "--force"]);
    let mut bytes = std::fs::read(dir.join("sub/deeper/c.bin")).unwrap();
    bytes[500] ^= 1;
    std::fs::write(dir.join("sub/deeper/c.bin"), bytes).unwrap();
    let check = lt(&["check", s(&out), s(tmp.path()), "3"]).json();
    assert_eq!(check["seeding"], false, "{check}");
    assert_eq!(
        check["have"].as_u64().unwrap() + 1,
        check["pieces"].as_u64().unwrap()
    );
}

#[test]
fn btfs_torrents_are_accepted_and_verified_by_aria2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_dir(tmp.path(), "set");
    let out = tmp.path().join("ours.torrent");
    let m = btfs_create(&dir, &out, &["--piece-length", "16KiB"]);
    let show = run_with_timeout(
        Command::new(tool("aria2c")).args(["-S", s(&out)]),
        Duration::from_secs(30),
    )
    .ok();
    let hash = m["InfoHash"].as_str().unwrap();
    assert!(
        show.stdout.contains(&format!("Info Hash: {hash}")),
        "{}",
        show.stdout
    );
    // aria2 re-hashes the existing files; with every piece correct it completes at once
    // (no tracker, DHT or peer exchange: nothing leaves the machine).
    let r = run_with_timeout(
        Command::new(tool("aria2c")).args([
            "--check-integrity=true",
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--listen-port=43111-43199",
            &format!("--dir={}", s(tmp.path())),
            s(&out),
        ]),
        Duration::from_secs(60),
    )
    .ok();
    assert!(r.stdout.contains("|OK  |"), "{}", r.stdout);
}

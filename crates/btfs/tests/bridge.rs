//! The bridge: a torrent downloaded from a real libtorrent seeder ends up in the BTFS
//! store with exactly the CIDs `btfs add -r` gives on the seeded files, served by the
//! gateway byte for byte; a second download of it finishes at once; a kill -9 in the
//! middle leaves a consistent repo and the rerun completes.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `added` lines of `btfs --enc json add -n …` as (name, hash) pairs.
fn add_lines(args: &[&str]) -> Vec<(String, String)> {
    let mut full = vec!["--enc", "json", "add", "-n"];
    full.extend_from_slice(args);
    let out = btfs(&full).ok();
    out.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["Name"].as_str().unwrap().to_owned(),
                v["Hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `added` events and the summary of a `btfs --json bittorrent download` run.
fn download_json(repo: &Path, args: &[&str]) -> (Vec<(String, String)>, serde_json::Value) {
    let d = btfs_download(repo, args);
    let (status, lines) = d.finish(Duration::from_secs(180));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "btfs download failed: {sum} {lines:?}");
    let added = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["Type"] == "added")
        .map(|v| {
            (
                v["Name"].as_str().unwrap().to_owned(),
                v["Hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (added, sum)
}

/// Files whose sizes sit on and around the 256 KiB chunk size, nested folders, an empty
/// file, a file spanning several chunks.
fn chunky_dir(root: &Path) -> PathBuf {
    let d = root.join("seed").join("chunky");
    write(&d.join("exact.bin"), &data(262_144, 11));
    write(&d.join("three.bin"), &data(700_000, 12));
    write(&d.join("one"), b"x");
    write(&d.join("empty"), b"");
    write(&d.join("sub/tail.bin"), &data(262_145, 13));
    write(&d.join("sub/deeper/z.txt"), b"hello world\n");
    write(
        &d.join("Upper name.txt"),
        b"sorted before lower-case names\n",
    );
    d
}

struct Gateway {
    _daemon: Daemon,
    port: u16,
}

fn gateway(repo: &Path) -> Gateway {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo).args([
        "daemon",
        "--api",
        "127.0.0.1:0",
        "--gateway",
        &format!("127.0.0.1:{port}"),
    ]);
    let d = Daemon::spawn("btfs daemon", &mut cmd);
    d.wait_for_line("gateway listening", Duration::from_secs(30));
    Gateway { _daemon: d, port }
}

/// GET `path` with optional extra header lines; (status, headers, body).
fn get(port: u16, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

fn check_gateway(repo: &Path, root: &str, files: &[(&str, PathBuf)]) {
    let gw = gateway(repo);
    for (name, path) in files {
        let want = std::fs::read(path).unwrap();
        let url = if name.is_empty() {
            format!("/btfs/{root}")
        } else {
            format!("/btfs/{root}/{}", name.replace(' ', "%20"))
        };
        let (status, _, body) = get(gw.port, &url, "");
        assert_eq!(status, 200, "{url}");
        assert!(
            body == want,
            "{url}: the gateway's bytes differ from the seeded file"
        );
        // Ranges across chunk boundaries.
        for (a, b) in [
            (262_000u64, 262_300u64),
            (262_143, 262_144),
            (524_287, 524_289),
        ] {
            if b >= want.len() as u64 {
                continue;
            }
            let (status, _, body) = get(gw.port, &url, &format!("Range: bytes={a}-{b}\r\n"));
            assert_eq!(status, 206, "{url} {a}-{b}");
            assert_eq!(body, &want[a as usize..=b as usize], "{url} bytes {a}-{b}");
        }
    }
}

fn seed_and_download(
    torrent: &Path,
    seed_dir: &Path,
    repo: &Path,
    extra: &[&str],
) -> (Vec<(String, String)>, serde_json::Value) {
    let port = free_port();
    let _seeder = lt_seed(torrent, seed_dir, port);
    let peer = format!("127.0.0.1:{port}");
    let mut args = vec!["-t", s(torrent), "--peer", &peer, "--no-trackers"];
    args.extend_from_slice(extra);
    download_json(repo, &args)
}

#[test]
fn multi_file_torrent_from_libtorrent_gets_btfs_add_cids_and_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chunky_dir(tmp.path());
    // libtorrent makes the torrent: hybrid, so pad files align every file to a piece.
    let torrent = tmp.path().join("chunky.torrent");
    lt(&["make", "hybrid", s(&dir), s(&torrent), "65536"]);
    let repo = tmp.path().join("repo");
    let (added, sum) = seed_and_download(&torrent, &tmp.path().join("seed"), &repo, &[]);

    let expected = add_lines(&["-r", "--hidden", s(&dir)]);
    assert_eq!(
        added, expected,
        "the download's added lines differ from `btfs add -r`"
    );
    let root = sum["Cid"].as_str().unwrap().to_owned();
    assert_eq!(root, expected.last().unwrap().1);
    assert_eq!(
        sum["GatewayUrl"].as_str().unwrap(),
        format!("http://127.0.0.1:8080/btfs/{root}")
    );
    // Without -o the files stay in the repo's downloads folder: the store's copy, which
    // the filestore's leaves point into. Copying into blocks, the working copy is gone
    // once the import is durable.
    let info_hash = sum["InfoHash"].as_str().unwrap();
    let kept = repo.join("bittorrent/downloads").join(info_hash);
    if copy_import() {
        assert!(!kept.exists());
    } else {
        assert_eq!(
            std::fs::read(kept.join("chunky/three.bin")).unwrap(),
            std::fs::read(dir.join("three.bin")).unwrap()
        );
    }

    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &repo)
            .args(["repo", "verify"]),
        Duration::from_secs(60),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    check_gateway(
        &repo,
        &root,
        &[
            ("three.bin", dir.join("three.bin")),
            ("sub/tail.bin", dir.join("sub/tail.bin")),
            ("Upper name.txt", dir.join("Upper name.txt")),
            ("empty", dir.join("empty")),
        ],
    );

    // The infohash is known now: a second download finishes at once, with no peer at all.
    let (_, again) = download_json(&repo, &["-t", s(&torrent), "--no-trackers"]);
    assert_eq!(again["AlreadyImported"], true);
    assert_eq!(again["Cid"].as_str().unwrap(), root);
}

#[test]
fn v1_torrent_with_pieces_across_files_and_dash_o_keeps_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chunky_dir(tmp.path());
    // 32 KiB pieces: pieces span file boundaries and chunks span pieces.
    let torrent = tmp.path().join("chunky.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&dir),
        "-o",
        s(&torrent),
        "--piece-length",
        "32KiB",
    ])
    .ok();
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    let (added, sum) =
        seed_and_download(&torrent, &tmp.path().join("seed"), &repo, &["-o", s(&out)]);
    assert_eq!(added, add_lines(&["-r", "--hidden", s(&dir)]));
    assert_same_tree(&dir, &out.join("chunky"));
    assert_eq!(
        sum["SavePath"].as_str().map(PathBuf::from),
        Some(out.canonicalize().unwrap())
    );
    let root = sum["Cid"].as_str().unwrap();
    let got = tmp.path().join("three-from-store.bin");
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &repo)
            .args(["get", &format!("{root}/three.bin"), "-o", s(&got)]),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_same_tree(&dir.join("three.bin"), &got);
}

#[test]
fn single_file_torrent_root_is_the_file_cid() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("seed").join("movie.bin");
    write(&file, &data(174 * 262_144 + 1, 21));
    let torrent = tmp.path().join("movie.torrent");
    btfs(&["bittorrent", "create", s(&file), "-o", s(&torrent)]).ok();
    let repo = tmp.path().join("repo");
    let (added, sum) = seed_and_download(&torrent, &tmp.path().join("seed"), &repo, &[]);
    let expected = add_lines(&[s(&file)]);
    assert_eq!(added, expected);
    let root = sum["Cid"].as_str().unwrap().to_owned();
    check_gateway(&repo, &root, &[("", file.clone())]);
}

#[test]
fn kill_9_during_a_bridged_download_then_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    let file = src.join("big.bin");
    write(&file, &data(24 << 20, 31));
    let torrent = tmp.path().join("big.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
    ])
    .ok();
    let port = free_port();
    let seeder = lt_seed_limited(&torrent, &src, port, 4 << 20);
    let repo = tmp.path().join("repo");
    let peer = format!("127.0.0.1:{port}");
    let args = ["-t", s(&torrent), "--peer", &peer, "--no-trackers"];
    let d = btfs_download(&repo, &args);
    // Wait until a sixth of the pieces are in (and so chunks are being imported), then
    // kill -9 mid-download.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = d.wait_for_line("\"progress\"", left);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["PiecesHave"].as_u64().unwrap_or(0) >= 64 {
            break;
        }
    }
    Command::new("kill")
        .args(["-9", &d.pid().to_string()])
        .status()
        .unwrap();
    drop(d);

    let verify = |what: &str| {
        let r = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(["repo", "verify"]),
            Duration::from_secs(60),
        );
        assert_eq!(r.status, 0, "{what}: {} {}", r.stdout, r.stderr);
    };
    verify("after kill -9");
    drop(seeder);
    let _seeder = lt_seed(&torrent, &src, port);
    let (added, sum) = download_json(&repo, &args);
    assert_eq!(added, add_lines(&[s(&file)]));
    assert_eq!(sum["Complete"], true);
    verify("after the rerun");
}

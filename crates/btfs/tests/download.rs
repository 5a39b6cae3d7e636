//! `btfs bittorrent download` against real seeders on 127.0.0.1: libtorrent (directly
//! and through opentracker), aria2, several at once; a libtorrent leecher fed by btfs
//! while btfs itself downloads; kill -9 and resume; torrents that try to escape.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One file of `size` pseudo-random bytes, its torrent (32 KiB pieces) and a libtorrent
/// seeder limited to `rate` bytes/s: (file, torrent, seeder port, seeder).
fn slow_swarm(root: &Path, size: usize, seed: u64, rate: u64) -> (PathBuf, PathBuf, u16, Daemon) {
    let src = root.join("seed");
    let file = src.join("big.bin");
    write(&file, &data(size, seed));
    let torrent = root.join("big.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        "32KiB",
    ])
    .ok();
    let port = free_port();
    let seeder = lt_seed_limited(&torrent, &src, port, rate);
    (file, torrent, port, seeder)
}

fn download(repo: &Path, args: &[&str]) -> serde_json::Value {
    let d = btfs_download(repo, args);
    let (status, lines) = d.finish(Duration::from_secs(120));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "btfs download failed: {sum}");
    assert_eq!(sum["Complete"], true);
    sum
}

#[test]
fn from_a_libtorrent_seeder_by_explicit_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, torrent) = sample_torrent(tmp.path(), None);
    let port = free_port();
    let _seeder = lt_seed(&torrent, &tmp.path().join("seed"), port);
    let out = tmp.path().join("out");
    let sum = download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--no-trackers",
        ],
    );
    assert_same_tree(&data, &out.join("set"));
    assert!(out.join("set/empty").is_file(), "the empty file exists");
    assert_eq!(sum["HashFailures"], 0);
    assert_eq!(sum["PiecesHave"], sum["PiecesWanted"]);
}

#[test]
fn from_libtorrent_and_aria2_seeders_found_through_opentracker() {
    let tmp = tempfile::tempdir().unwrap();
    // The infohash does not depend on the tracker URL, so whitelist it first.
    let (_, probe) = sample_torrent(tmp.path(), None);
    let hash = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&probe)])
        .ok()
        .json()["InfoHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let tracker = Tracker::start(&[hash]);
    let (data, torrent) = sample_torrent(tmp.path(), Some(&tracker.http()));
    let seed_dir = tmp.path().join("seed");
    let _lt = lt_seed(&torrent, &seed_dir, free_port());
    let (_aria, aria_port) = aria2_seed(&torrent, &seed_dir);
    // Both seeders announce; wait until the tracker knows two seeders.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = btfs(&[
            "--json",
            "bittorrent",
            "scrape",
            "-t",
            &tracker.udp(),
            "-i",
            &{
                let m = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
                    .ok()
                    .json();
                m["InfoHash"].as_str().unwrap().to_owned()
            },
        ])
        .ok()
        .json();
        if j[0]["Seeders"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seeders never announced: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = tmp.path().join("out");
    let sum = download(
        &tmp.path().join("repo"),
        &["-t", s(&torrent), "-o", s(&out)],
    );
    assert_same_tree(&data, &out.join("set"));
    assert_eq!(sum["HashFailures"], 0);

    // aria2 alone (the libtorrent seeder is asked not to be used: explicit peer only).
    let out2 = tmp.path().join("out2");
    download(
        &tmp.path().join("repo2"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out2),
            "--peer",
            &format!("127.0.0.1:{aria_port}"),
            "--no-trackers",
        ],
    );
    assert_same_tree(&data, &out2.join("set"));
}

#[test]
fn from_three_seeders_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    let file = src.join("big.bin");
    write(&file, &data(6_000_000, 21));
    let torrent = tmp.path().join("big.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        "32KiB",
    ])
    .ok();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _seeders: Vec<Daemon> = ports
        .iter()
        .map(|&p| lt_seed_limited(&torrent, &src, p, 2_000_000))
        .collect();
    let out = tmp.path().join("out");
    let mut args = vec![
        "-t".to_string(),
        s(&torrent).to_string(),
        "-o".into(),
        s(&out).into(),
        "--no-trackers".into(),
    ];
    for p in &ports {
        args.push("--peer".into());
        args.push(format!("127.0.0.1:{p}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = btfs_download(&tmp.path().join("repo"), &args);
    // All three seeders are connected at some point.
    d.wait_for("3 peers", Duration::from_secs(60), |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["Peers"] == 3)
    });
    let (status, lines) = d.finish(Duration::from_secs(120));
    assert_eq!(status, Some(0), "{}", summary(&lines));
    assert_same_tree(&file, &out.join("big.bin"));
}

#[test]
fn a_libtorrent_leecher_downloads_from_btfs_while_btfs_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, torrent, seed_port, seeder) = slow_swarm(tmp.path(), 4_000_000, 22, 1_000_000);
    let btfs_port = free_port();
    let out = tmp.path().join("out");
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &format!("127.0.0.1:{seed_port}"),
            "--no-trackers",
            "--port",
            &btfs_port.to_string(),
            "--listen-ip",
            "127.0.0.1",
            "--seed",
        ],
    );
    // Once btfs has part of the file, the seeder pauses: btfs cannot finish before the
    // leecher has been served, however slowly the leecher starts.
    let have = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
    d.wait_for("part of the file", Duration::from_secs(60), |l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| have(&v, "BytesHave") > 0 && have(&v, "BytesHave") < 4_000_000)
    });
    let paused = seeder.pause();
    let leech_dir = tmp.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let leecher = Daemon::spawn(
        "libtorrent leecher",
        Command::new("/usr/bin/python3").args([
            s(&script),
            "leech",
            s(&torrent),
            s(&leech_dir),
            &free_port().to_string(),
            &format!("127.0.0.1:{btfs_port}"),
            "90",
        ]),
    );
    // btfs uploads before it has everything.
    d.wait_for(
        "an upload while downloading",
        Duration::from_secs(60),
        |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                have(&v, "Uploaded") > 0 && have(&v, "BytesHave") < have(&v, "BytesWanted")
            })
        },
    );
    drop(paused);
    leecher.wait_for_line("done", Duration::from_secs(100));
    assert_same_tree(&file, &leech_dir.join("big.bin"));
    d.interrupt();
    let (_, lines) = d.finish(Duration::from_secs(30));
    let sum = summary(&lines);
    assert_eq!(sum["Complete"], true, "{sum}");
    assert!(sum["Uploaded"].as_u64().unwrap() >= 4_000_000, "{sum}");
    assert_same_tree(&file, &out.join("big.bin"));
}

#[test]
fn kill_9_at_random_points_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 8_000_000u64;
    let (file, torrent, port, _seeder) = slow_swarm(tmp.path(), size as usize, 23, 2_000_000);
    let out = tmp.path().join("out");
    let repo = tmp.path().join("repo");
    let peer = format!("127.0.0.1:{port}");
    let args = [
        "-t",
        s(&torrent),
        "-o",
        s(&out),
        "--peer",
        &peer,
        "--no-trackers",
    ];
    let mut have_before = 0u64;
    for round in 1..=3u64 {
        let d = btfs_download(&repo, &args);
        // Kill once a little more than before is verified (a different point each round).
        let target = have_before + size / 8 + (rand_u64() % (size / 8));
        d.wait_for("progress", Duration::from_secs(60), |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["BytesHave"].as_u64().unwrap_or(0) >= target.min(size * 7 / 8))
        });
        drop(d); // SIGKILL
        have_before = target.min(size * 7 / 8);
        eprintln!("round {round}: killed after {have_before} bytes verified");
    }
    let d = btfs_download(&repo, &args);
    let (status, lines) = d.finish(Duration::from_secs(120));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_same_tree(&file, &out.join("big.bin"));
    // The last run fetched only what the killed runs had not verified.
    let downloaded = sum["Downloaded"].as_u64().unwrap();
    assert!(downloaded < size, "re-downloaded everything: {sum}");
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn torrents_that_escape_the_folder_are_stored_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a/b/out");
    // A hand-made torrent whose second file climbs out of the folder: as libtorrent
    // does, btfs stores it inside (`..` components are dropped), and says so.
    let pieces = "x".repeat(20);
    let bad = format!(
        "d4:infod5:filesld6:lengthi1e4:pathl2:okeed6:lengthi1e4:pathl2:..2:..4:evileee4:name3:set12:piece lengthi16384e6:pieces20:{pieces}ee"
    );
    let torrent = tmp.path().join("bad.torrent");
    std::fs::write(&torrent, bad).unwrap();
    let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    assert_eq!(info["Files"][1]["StoredPath"], serde_json::json!(["evil"]));
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            "127.0.0.1:1",
            "--no-trackers",
        ],
    );
    poll(
        Duration::from_secs(30),
        "the download did not create its files",
        String::new,
        || out.join("set/evil").is_file().then_some(()),
    );
    d.interrupt();
    d.finish(Duration::from_secs(30));
    assert!(out.join("set/ok").is_file());
    assert!(!tmp.path().join("a/evil").exists() && !tmp.path().join("a/b/evil").exists());

    // A symlink planted where the torrent's folder goes cannot redirect the writes.
    let (_, torrent) = sample_torrent(tmp.path(), None);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = tmp.path().join("out2");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("set")).unwrap();
    let r = btfs(&[
        "bittorrent",
        "download",
        "-t",
        s(&torrent),
        "-o",
        s(&out),
        "--peer",
        "127.0.0.1:1",
        "--no-trackers",
    ]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("outside the download folder"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn only_selected_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, torrent) = sample_torrent(tmp.path(), None);
    let port = free_port();
    let _seeder = lt_seed(&torrent, &tmp.path().join("seed"), port);
    let out = tmp.path().join("out");
    // Files in torrent order: a.bin, empty, sub/b.txt, sub/deeper/c.bin, z.bin.
    let sum = download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--no-trackers",
            "--only-files",
            "0,*/c.bin",
        ],
    );
    assert_same_tree(&data.join("a.bin"), &out.join("set/a.bin"));
    assert_same_tree(
        &data.join("sub/deeper/c.bin"),
        &out.join("set/sub/deeper/c.bin"),
    );
    assert!(!out.join("set/z.bin").exists() && !out.join("set/sub/b.txt").exists());
    assert!(sum["PiecesWanted"].as_u64().unwrap() < sum["PiecesTotal"].as_u64().unwrap());
    let r = btfs(&[
        "bittorrent",
        "download",
        "-t",
        s(&torrent),
        "-o",
        s(&out),
        "--only-files",
        "*.nope",
        "--peer",
        "127.0.0.1:1",
    ]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("no file matches"), "{}", r.stderr);
}

#[test]
fn interrupt_keeps_verified_pieces_and_resumes_without_rechecking() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 6_000_000u64;
    let (file, torrent, port, _seeder) = slow_swarm(tmp.path(), size as usize, 24, 1_500_000);
    let out = tmp.path().join("out");
    let repo = tmp.path().join("repo");
    let peer = format!("127.0.0.1:{port}");
    let args = [
        "-t",
        s(&torrent),
        "-o",
        s(&out),
        "--peer",
        &peer,
        "--no-trackers",
    ];
    let d = btfs_download(&repo, &args);
    d.wait_for("a quarter", Duration::from_secs(60), |l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["BytesHave"].as_u64().unwrap_or(0) >= size / 4)
    });
    d.interrupt();
    let (status, lines) = d.finish(Duration::from_secs(30));
    let first = summary(&lines);
    assert_eq!(
        status,
        Some(1),
        "an unfinished download is not a success: {first}"
    );
    assert_eq!(first["Complete"], false);
    let kept = first["BytesHave"].as_u64().unwrap();
    assert!(kept >= size / 4, "{first}");
    // The resume data is trusted as is: no checking phase, and the first progress
    // event already has the kept bytes.
    let d = btfs_download(&repo, &args);
    let (status, lines) = d.finish(Duration::from_secs(120));
    assert_eq!(status, Some(0), "{}", summary(&lines));
    let progress: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        progress.iter().all(|v| v["Phase"] != "Checking"),
        "{progress:?}"
    );
    assert!(
        progress[0]["BytesHave"].as_u64().unwrap() >= kept,
        "{:?}",
        progress[0]
    );
    assert!(summary(&lines)["Downloaded"].as_u64().unwrap() <= size - kept);
    assert_same_tree(&file, &out.join("big.bin"));
}

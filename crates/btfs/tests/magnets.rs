//! Magnet links (BEP 9/10): metadata and data from real seeders found through `x.pe`,
//! `metainfo -m` with `--save`, and a libtorrent client fetching metadata from btfs.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn info_hash(torrent: &Path) -> String {
    btfs(&["--json", "bittorrent", "metainfo", "-t", s(torrent)])
        .ok()
        .json()["InfoHash"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn magnet_download(repo: &Path, magnet: &str, out: &Path) -> serde_json::Value {
    let d = btfs_download(repo, &[magnet, "-o", s(out), "--no-trackers"]);
    let (status, lines) = d.finish(Duration::from_secs(120));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    sum
}

#[test]
fn magnet_with_only_x_pe_from_libtorrent_single_and_multi_file() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    let dir = sample_dir(&seed, "set");
    let single = seed.join("one.bin");
    write(&single, &data(700_001, 41));
    for (input, name) in [(&dir, "set"), (&single, "one.bin")] {
        let torrent = tmp.path().join(format!("{name}.torrent"));
        btfs(&[
            "bittorrent",
            "create",
            s(input),
            "-o",
            s(&torrent),
            "--piece-length",
            "16KiB",
        ])
        .ok();
        let port = free_port();
        let _seeder = lt_seed(&torrent, &seed, port);
        let magnet = format!(
            "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{port}",
            info_hash(&torrent)
        );
        let out = tmp.path().join(format!("out-{name}"));
        magnet_download(&tmp.path().join(format!("repo-{name}")), &magnet, &out);
        assert_same_tree(input, &out.join(name));
    }
}

#[test]
fn magnet_with_only_x_pe_from_aria2() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent) = sample_torrent(tmp.path(), None);
    let seed = tmp.path().join("seed");
    let (aria, port) = aria2_seed(&torrent, &seed);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=set&x.pe=127.0.0.1:{port}",
        info_hash(&torrent)
    );
    let out = tmp.path().join("out");
    magnet_download(&tmp.path().join("repo"), &magnet, &out);
    assert_same_tree(&dir, &out.join("set"));
    drop(aria);
}

#[test]
fn metainfo_of_a_magnet_fetches_and_saves_the_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, torrent) = sample_torrent(tmp.path(), None);
    let seed = tmp.path().join("seed");
    let port = free_port();
    let _seeder = lt_seed(&torrent, &seed, port);
    let hash = info_hash(&torrent);
    let magnet =
        format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1:{port}&tr=udp%3A%2F%2F127.0.0.1%3A1");
    let saved = tmp.path().join("saved.torrent");
    let fetched = btfs(&[
        "--json",
        "bittorrent",
        "metainfo",
        "-m",
        &magnet,
        "--save",
        s(&saved),
        "--timeout",
        "30s",
    ])
    .ok()
    .json();
    let original = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    for field in [
        "InfoHash",
        "Name",
        "NumPieces",
        "PieceLength",
        "TotalLength",
        "Files",
        "PieceHashes",
    ] {
        assert_eq!(fetched[field], original[field], "{field}");
    }
    assert_eq!(
        fetched["Announce"], "udp://127.0.0.1:1",
        "the magnet's tracker is kept"
    );
    assert_eq!(info_hash(&saved), hash);
    // Without peers or trackers there is nothing to fetch from; --save says so.
    let bare = format!("magnet:?xt=urn:btih:{hash}");
    let r = btfs(&["bittorrent", "metainfo", "-m", &bare, "--save", s(&saved)]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("no peer or tracker to fetch it from"),
        "{}",
        r.stderr
    );
    let r = btfs(&["bittorrent", "download", &bare, "-o", s(tmp.path())]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("no DHT"), "{}", r.stderr);
    // A peer that is not there: a clear error, not a hang.
    let dead = format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1:{}", free_port());
    let r = btfs(&["bittorrent", "metainfo", "-m", &dead, "--timeout", "10s"]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("metadata"), "{}", r.stderr);
}

#[test]
fn a_libtorrent_client_gets_metadata_and_data_from_btfs_by_magnet() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent) = sample_torrent(tmp.path(), None);
    let seed = tmp.path().join("seed");
    let seed_port = free_port();
    let _seeder = lt_seed(&torrent, &seed, seed_port);
    // btfs downloads, then keeps seeding on a known port.
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
            "--seed",
            "--port",
            &btfs_port.to_string(),
            "--listen-ip",
            "127.0.0.1",
        ],
    );
    d.wait_for("seeding", Duration::from_secs(60), |l| {
        l.contains("\"Phase\":\"Seeding\"")
    });
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=set", info_hash(&torrent));
    let leech = tmp.path().join("leech");
    std::fs::create_dir_all(&leech).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let r = run_with_timeout(
        Command::new("/usr/bin/python3").args([
            s(&script),
            "magnet",
            &magnet,
            s(&leech),
            &free_port().to_string(),
            &format!("127.0.0.1:{btfs_port}"),
            "60",
        ]),
        Duration::from_secs(90),
    );
    assert!(r.stdout.contains("done"), "{}\n{}", r.stdout, r.stderr);
    assert_same_tree(&dir, &leech.join("set"));
    d.interrupt();
    let _ = d.finish(Duration::from_secs(30));
}

/// A libtorrent DHT-only node on 127.0.0.1, the entry point of a loopback DHT.
fn dht_node(port: u16) -> Daemon {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let d = Daemon::spawn(
        "libtorrent DHT node",
        Command::new("/usr/bin/python3").args([s(&script), "dht-node", &port.to_string()]),
    );
    d.wait_for_line("dht node", Duration::from_secs(30));
    d
}

#[test]
fn bare_magnet_through_a_dht_of_libtorrent_nodes_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent) = sample_torrent(tmp.path(), None);
    let seed = tmp.path().join("seed");
    // Three-node DHT: a DHT-only node, a libtorrent seeder and btfs, all joining
    // through the first one (two libtorrent nodes alone do not find each other).
    let node_port = free_port();
    let _node = dht_node(node_port);
    let bootstrap = format!("127.0.0.1:{node_port}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let seeder = Daemon::spawn(
        "libtorrent seeder on the DHT",
        Command::new("/usr/bin/python3")
            .env("LT_DHT", &bootstrap)
            .args([
                s(&script),
                "seed",
                s(&torrent),
                s(&seed),
                &free_port().to_string(),
            ]),
    );
    seeder.wait_for_line("seeding", Duration::from_secs(60));
    let magnet = format!("magnet:?xt=urn:btih:{}", info_hash(&torrent));
    let btfs_port = free_port();
    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", tmp.path().join("repo"))
        .env("BTFS_DHT_INTERVAL_SECS", "2")
        .args([
            "--json",
            "bittorrent",
            "download",
            &magnet,
            "-o",
            s(&out),
            "--dht-bootstrap",
            &bootstrap,
            "--no-trackers",
            "--metadata-timeout",
            "60s",
            "--seed",
            "--port",
            &btfs_port.to_string(),
            "--listen-ip",
            "127.0.0.1",
        ]);
    let d = Daemon::spawn("btfs download", &mut cmd);
    d.wait_for("seeding", Duration::from_secs(90), |l| {
        l.contains("\"Phase\":\"Seeding\"")
    });
    assert_same_tree(&dir, &out.join("set"));
    // Now only btfs has the data: a libtorrent client with nothing but the infohash
    // finds it through the DHT.
    drop(seeder);
    let leech = tmp.path().join("leech");
    std::fs::create_dir_all(&leech).unwrap();
    let r = run_with_timeout(
        Command::new("/usr/bin/python3")
            .env("LT_DHT", &bootstrap)
            .args([
                s(&script),
                "magnet",
                &magnet,
                s(&leech),
                &free_port().to_string(),
                "-",
                "90",
            ]),
        Duration::from_secs(120),
    );
    assert!(r.stdout.contains("done"), "{}\n{}", r.stdout, r.stderr);
    assert_same_tree(&dir, &leech.join("set"));
    d.interrupt();
    let _ = d.finish(Duration::from_secs(30));
    // The routing table is kept for the next run.
    let saved =
        std::fs::read_to_string(tmp.path().join("repo/bittorrent/dht-nodes")).unwrap_or_default();
    assert!(
        saved.lines().any(|l| l.starts_with("127.0.0.1:")),
        "saved nodes: {saved:?}"
    );
}

#[test]
fn peer_exchange_with_libtorrent_brings_a_second_peer() {
    // btfs is told only about a slow libtorrent seeder, and a libtorrent leecher only
    // about the same seeder; with trackers and DHT off, the only way btfs and the leecher
    // meet is peer exchange (BEP 11) through the seeder.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    let file = src.join("big.bin");
    write(&file, &data(6_000_000, 42));
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
    let seed_port = free_port();
    let _seeder = lt_seed_limited(&torrent, &src, seed_port, 60_000);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let leech_dir = tmp.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let _leecher = Daemon::spawn(
        "libtorrent leecher",
        Command::new("/usr/bin/python3").args([
            s(&script),
            "leech",
            s(&torrent),
            s(&leech_dir),
            &free_port().to_string(),
            &format!("127.0.0.1:{seed_port}"),
            "150",
        ]),
    );
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
        ],
    );
    d.wait_for(
        "a second peer, learned by PEX",
        Duration::from_secs(120),
        |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["Peers"].as_u64().unwrap_or(0) >= 2)
        },
    );
}

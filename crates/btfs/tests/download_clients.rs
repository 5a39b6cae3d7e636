//! `btfs bittorrent download` against other BitTorrent clients seeding the same
//! multi-file torrent (`common::sample_dir`: nested folders, an empty file, a short last
//! piece): transmission-daemon 3.00 and qbittorrent-nox, reached directly with `--peer`
//! and through opentracker. Every file must come out byte for byte.
//!
//! transmission 3.00 never dials 127.x peers, so it only seeds and btfs dials it. All
//! sockets stay on 127.0.0.1; every wait is bounded and every daemon is killed by PID
//! when its test ends. The tools are installed by scripts/install-deps; a missing tool
//! fails the test.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a seeder may take to start, check its data and start seeding.
const SEEDER_READY: Duration = Duration::from_secs(60);
/// How long one download may take (transmission alone waits ~10 s to unchoke).
const DOWNLOAD: Duration = Duration::from_secs(90);

/// Creates the torrent `out` for `data` with the given piece length and trackers and
/// returns its infohash.
fn create_torrent(data: &Path, out: &Path, piece_length: &str, trackers: &[String]) -> String {
    let mut args = vec![
        "bittorrent",
        "create",
        s(data),
        "-o",
        s(out),
        "--piece-length",
        piece_length,
    ];
    for t in trackers {
        args.extend(["--tracker", t.as_str()]);
    }
    btfs(&args).ok();
    let meta = btfs(&["--enc", "json", "bittorrent", "metainfo", "-t", s(out)])
        .ok()
        .json();
    assert!(
        meta["NumFiles"].as_u64().unwrap() >= 5,
        "a multi-file torrent: {meta}"
    );
    meta["InfoHash"].as_str().unwrap().to_owned()
}

/// The infohash of `data` made into a torrent (it does not depend on the trackers), to
/// whitelist it in opentracker before the tracker's port is known.
fn probe_hash(data: &Path, tmp: &Path, piece_length: &str) -> String {
    create_torrent(data, &tmp.join("probe.torrent"), piece_length, &[])
}

struct Download {
    run: Run,
    summary: Value,
    took: Duration,
}

/// Runs `btfs --enc json bittorrent download` with its own BTFS_PATH, bounded, and
/// returns the final summary line (every stdout line must be JSON).
fn download(torrent: &Path, out: &Path, extra: &[&str]) -> Download {
    let state = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--enc",
        "json",
        "bittorrent",
        "download",
        "-t",
        s(torrent),
        "-o",
        s(out),
        "--listen-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let run = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .args(&args)
            .env("BTFS_PATH", state.path()),
        DOWNLOAD,
    );
    let took = started.elapsed();
    assert!(
        !run.stderr.contains("panicked"),
        "btfs panicked on {args:?}:\n{}",
        run.stderr
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("btfs printed a line that is not JSON ({e}): {l}"))
        })
        .collect();
    let summary = lines
        .iter()
        .rev()
        .find(|v| v["Type"] == "summary")
        .cloned()
        .unwrap_or(Value::Null);
    Download { run, summary, took }
}

/// Every regular file below `dir` (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The download exited 0, its summary says Complete with every piece verified, and the
/// folder holds exactly the source files, byte for byte (the empty file included).
fn assert_downloaded(
    d: &Download,
    source: &Path,
    out: &Path,
    seeder: &str,
    log: impl Fn() -> String,
) {
    let context = || {
        format!(
            "btfs download from {seeder} failed after {:.1} s (exit {})\nbtfs stdout:\n{}\nbtfs stderr:\n{}\n{seeder}:\n{}",
            d.took.as_secs_f64(),
            d.run.status,
            d.run.stdout,
            d.run.stderr,
            log()
        )
    };
    assert_eq!(d.run.status, 0, "{}", context());
    let sm = &d.summary;
    assert_eq!(sm["Complete"], true, "summary: {sm}\n{}", context());
    assert_eq!(sm["PiecesHave"], sm["PiecesTotal"], "summary: {sm}");
    assert_eq!(sm["HashFailures"], 0, "summary: {sm}");
    assert_eq!(sm["Banned"], 0, "summary: {sm}");
    let want = tree(source);
    let total: usize = want.values().map(Vec::len).sum();
    assert_eq!(sm["BytesHave"], total as u64, "summary: {sm}");
    let name = source.file_name().unwrap().to_str().unwrap();
    assert_eq!(sm["Name"], name, "summary: {sm}");
    let got = tree(&out.join(name));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the downloaded files are the torrent's files"
    );
    for (path, bytes) in &want {
        assert!(
            got[path] == *bytes,
            "{path}: {} bytes downloaded differ from the {} source bytes",
            got[path].len(),
            bytes.len()
        );
    }
    assert!(want.contains_key("empty") && want.contains_key("sub/deeper/c.bin"));
    eprintln!(
        "btfs downloaded {total} bytes in {} files from {seeder} in {:.2} s",
        want.len(),
        d.took.as_secs_f64()
    );
}

/// Whether the peer at `addr` answers a BitTorrent handshake for `hash` with its own.
fn answers_handshake(addr: &str, hash: &str) -> bool {
    use std::io::{Read, Write};
    let info_hash: Vec<u8> = (0..40)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hash[i..i + 2], 16).unwrap())
        .collect();
    let Ok(mut sock) =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
    else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let mut hs = b"\x13BitTorrent protocol\0\0\0\0\0\x10\0\x04".to_vec();
    hs.extend_from_slice(&info_hash);
    hs.extend_from_slice(b"-XX0000-probeprobepr");
    let mut reply = [0u8; 68];
    sock.write_all(&hs).is_ok()
        && sock.read_exact(&mut reply).is_ok()
        && reply[..20] == hs[..20]
        && reply[28..48] == info_hash[..]
}

/// Waits (bounded) until opentracker reports one seeder for `hash`.
fn wait_for_tracker_seeder(url: &str, hash: &str, log: impl Fn() -> String) {
    poll(
        SEEDER_READY,
        &format!("{url} did not list the seeder of {hash}"),
        log,
        || (seeders(url, hash) == Some(1)).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------
// transmission-daemon

/// transmission-daemon in the foreground with its config in a tempdir, RPC and peers on
/// 127.0.0.1.
struct Transmission {
    daemon: Daemon,
    rpc: String,
    peer_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Transmission {
    fn start() -> Transmission {
        let bin = tool("transmission-daemon");
        tool("transmission-remote");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&downloads).unwrap();
        let log = dir.path().join("transmission.log");
        let (rpc_port, peer_port) = (free_port(), free_port());
        let daemon = Daemon::spawn(
            "transmission-daemon",
            Command::new(bin).args([
                "--foreground",
                "--config-dir",
                s(&config),
                "--port",
                &rpc_port.to_string(),
                "--rpc-bind-address",
                "127.0.0.1",
                "--peerport",
                &peer_port.to_string(),
                "--bind-address-ipv4",
                "127.0.0.1",
                "--bind-address-ipv6",
                "::1",
                "--download-dir",
                s(&downloads),
                "--no-watch-dir",
                "--no-incomplete-dir",
                // -T -M -O -Y -GSR: no RPC auth, no port mapping, DHT, LPD or seed ratio.
                "-T",
                "-M",
                "-O",
                "-Y",
                "-GSR",
                "--log-debug",
                "--logfile",
                s(&log),
            ]),
        );
        let t = Transmission {
            daemon,
            rpc: format!("127.0.0.1:{rpc_port}"),
            peer_port,
            log,
            _dir: dir,
        };
        poll(
            SEEDER_READY,
            "transmission-daemon did not answer RPC",
            || t.diagnostics(None),
            || (t.remote(&["-l"]).status == 0).then_some(()),
        );
        t
    }

    fn remote(&self, args: &[&str]) -> Run {
        run_with_timeout(
            Command::new(tool("transmission-remote"))
                .arg(&self.rpc)
                .args(args),
            Duration::from_secs(20),
        )
    }

    /// Adds `torrent` with its data already in `save_path` and waits until it seeds.
    fn seed(&self, torrent: &Path, save_path: &Path, hash: &str) {
        let r = self.remote(&["-a", s(torrent), "-w", s(save_path)]);
        assert!(
            r.status == 0 && r.stdout.contains("success"),
            "transmission-remote -a failed: {}{}\n{}",
            r.stdout,
            r.stderr,
            self.diagnostics(None)
        );
        // transmission-remote shows a seeding torrent as "Seeding", or "Idle" while no
        // peer downloads from it.
        poll(
            SEEDER_READY,
            "transmission did not verify the data and seed",
            || self.diagnostics(Some(hash)),
            || {
                let r = self.remote(&["-t", hash, "-i"]);
                let info = r.stdout;
                (info.contains("Percent Done: 100%")
                    && (info.contains("State: Seeding") || info.contains("State: Idle")))
                .then_some(())
            },
        );
    }

    fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// The torrent's state and peers as transmission sees them, and its log's tail.
    fn diagnostics(&self, hash: Option<&str>) -> String {
        let mut out = format!("transmission-daemon (pid {})\n", self.daemon.pid());
        if let Some(h) = hash {
            for args in [["-t", h, "-i"], ["-t", h, "-pi"]] {
                let r = self.remote(&args);
                out += &format!("transmission-remote {args:?}:\n{}{}\n", r.stdout, r.stderr);
            }
        }
        out + "log:\n" + &tail(&self.log, 60)
    }
}

// ---------------------------------------------------------------------------------------
// qbittorrent-nox

impl Qbittorrent {
    /// Adds `torrent` with its data in `save_path` through the WebUI API (qBittorrent
    /// hashes the data unless `skip_checking`) and waits until it seeds.
    fn seed(&self, torrent: &Path, save_path: &Path, hash: &str, skip_checking: bool) {
        let r = self.curl(&[
            "-F",
            &format!("torrents=@{}", s(torrent)),
            "-F",
            &format!("savepath={}", s(save_path)),
            "-F",
            &format!("skip_checking={skip_checking}"),
            &format!("{}/torrents/add", self.api),
        ]);
        assert!(
            r.status == 0 && r.stdout.trim() == "Ok.",
            "POST /torrents/add failed: {}{}\n{}",
            r.stdout,
            r.stderr,
            self.diagnostics(Some(hash))
        );
        poll(
            SEEDER_READY,
            "qbittorrent did not check the data and seed",
            || self.diagnostics(Some(hash)),
            || {
                let t = self.info(hash)?;
                let seeding = ["uploading", "stalledUP", "forcedUP"]
                    .contains(&t["state"].as_str().unwrap_or(""));
                (seeding && t["progress"].as_f64() == Some(1.0)).then_some(())
            },
        );
        // For about half a second after the WebUI first shows the torrent seeding,
        // qBittorrent still closes or resets incoming handshakes for it: wait until it
        // answers one, so that the download below starts against a ready seeder.
        poll(
            SEEDER_READY,
            "qbittorrent did not answer a handshake for the torrent",
            || self.diagnostics(Some(hash)),
            || answers_handshake(&self.peer(), hash).then_some(()),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn btfs_downloads_a_multi_file_torrent_from_transmission() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_dir(tmp.path(), "sample");
    let torrent = tmp.path().join("sample.torrent");
    let hash = create_torrent(&source, &torrent, "16KiB", &[]);
    let transmission = Transmission::start();
    transmission.seed(&torrent, tmp.path(), &hash);

    let out = tmp.path().join("out");
    let peer = transmission.peer();
    let d = download(&torrent, &out, &["--peer", &peer, "--no-trackers"]);
    assert_downloaded(&d, &source, &out, "transmission-daemon", || {
        transmission.diagnostics(Some(&hash))
    });
}

#[test]
fn btfs_finds_transmission_through_opentracker() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_dir(tmp.path(), "sample");
    let probe = probe_hash(&source, tmp.path(), "32KiB");
    let tracker = Tracker::start(std::slice::from_ref(&probe));
    let torrent = tmp.path().join("sample.torrent");
    let hash = create_torrent(&source, &torrent, "32KiB", &[tracker.http()]);
    assert_eq!(hash, probe);
    let transmission = Transmission::start();
    transmission.seed(&torrent, tmp.path(), &hash);
    wait_for_tracker_seeder(&tracker.http(), &hash, || {
        transmission.diagnostics(Some(&hash))
    });

    let out = tmp.path().join("out");
    let d = download(&torrent, &out, &[]);
    assert_downloaded(
        &d,
        &source,
        &out,
        "transmission-daemon via opentracker",
        || transmission.diagnostics(Some(&hash)),
    );
}

#[test]
fn btfs_downloads_a_multi_file_torrent_from_qbittorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_dir(tmp.path(), "sample");
    let torrent = tmp.path().join("sample.torrent");
    let hash = create_torrent(&source, &torrent, "32KiB", &[]);
    let qbt = Qbittorrent::start();
    // qBittorrent hashes the data itself before it seeds.
    qbt.seed(&torrent, tmp.path(), &hash, false);

    let out = tmp.path().join("out");
    let peer = qbt.peer();
    let d = download(&torrent, &out, &["--peer", &peer, "--no-trackers"]);
    assert_downloaded(&d, &source, &out, "qbittorrent-nox", || {
        qbt.diagnostics(Some(&hash))
    });
}

#[test]
fn btfs_finds_qbittorrent_through_opentracker_over_udp() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_dir(tmp.path(), "sample");
    let probe = probe_hash(&source, tmp.path(), "16KiB");
    let tracker = Tracker::start(std::slice::from_ref(&probe));
    let torrent = tmp.path().join("sample.torrent");
    let hash = create_torrent(&source, &torrent, "16KiB", &[tracker.udp()]);
    assert_eq!(hash, probe);
    let qbt = Qbittorrent::start();
    qbt.seed(&torrent, tmp.path(), &hash, true);
    wait_for_tracker_seeder(&tracker.udp(), &hash, || qbt.diagnostics(Some(&hash)));

    let out = tmp.path().join("out");
    let d = download(&torrent, &out, &[]);
    assert_downloaded(&d, &source, &out, "qbittorrent-nox via opentracker", || {
        qbt.diagnostics(Some(&hash))
    });
}

/// A `--peer` that turns the first handshake away (qBittorrent does not have the torrent
/// yet, so it closes the connection) must be tried again once it seeds: here the torrent
/// is added to qBittorrent a few seconds after btfs starts.
#[test]
fn btfs_retries_a_peer_that_closed_the_first_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_dir(tmp.path(), "sample");
    let torrent = tmp.path().join("sample.torrent");
    let hash = create_torrent(&source, &torrent, "16KiB", &[]);
    let qbt = Qbittorrent::start();
    assert!(
        !answers_handshake(&qbt.peer(), &hash),
        "qbittorrent answered a handshake for a torrent it does not have"
    );

    let out = tmp.path().join("out");
    let d = std::thread::scope(|scope| {
        let peer = qbt.peer();
        let (torrent, out) = (&torrent, &out);
        let btfs = scope.spawn(move || download(torrent, out, &["--peer", &peer, "--no-trackers"]));
        std::thread::sleep(Duration::from_secs(3));
        qbt.seed(torrent, tmp.path(), &hash, true);
        btfs.join().unwrap()
    });
    if d.run.status != 0 {
        let last = d.run.stdout.lines().last().unwrap_or("(none)");
        panic!(
            "btfs did not download from {} once qBittorrent seeded (exit {}, {:.0} s): it does \
             not dial a --peer again after that peer closed the first handshake.\n\
             last progress line: {last}\nbtfs stderr:\n{}\n{}",
            qbt.peer(),
            d.run.status,
            d.took.as_secs_f64(),
            d.run.stderr,
            qbt.diagnostics(Some(&hash))
        );
    }
    assert_downloaded(
        &d,
        &source,
        &out,
        "qbittorrent-nox (torrent added 3 s after btfs started)",
        || qbt.diagnostics(Some(&hash)),
    );
}

//! `btfs bittorrent serve`: seeding paths and store content to real clients on loopback
//! (libtorrent, aria2 through opentracker, qbittorrent-nox, a second btfs), found through
//! the printed magnet's `x.pe`, a tracker or a libtorrent DHT; `--cid` from the
//! blockstore alone; many downloaders at once; a clean stop on SIGTERM; and the CLI
//! (`-f` lists, `--list`, `--remove`, resuming, port fallback).
//!
//! Every socket stays on 127.0.0.1, every wait is bounded, and every process is killed by
//! PID when its test ends (`common::Daemon`).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long serve may take to hash its input and start seeding.
const READY: Duration = Duration::from_secs(90);
/// How long one download may take.
const DOWNLOAD: Duration = Duration::from_secs(90);
/// How long serve may take to stop after a signal.
const STOP: Duration = Duration::from_secs(30);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_btfs")
}

fn lt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py")
}

/// `btfs ARGS` with BTFS_PATH=`repo`, bounded.
fn btfs_in(repo: &Path, args: &[&str]) -> Run {
    let r = run_with_timeout(
        Command::new(bin()).env("BTFS_PATH", repo).args(args),
        Duration::from_secs(120),
    );
    assert!(
        !r.stderr.contains("panicked"),
        "btfs panicked on {args:?}:\n{}",
        r.stderr
    );
    r
}

/// A running `btfs --json bittorrent serve` (stdout read line by line, stderr into a
/// file), killed by PID when dropped.
struct Serve {
    daemon: Daemon,
    /// The JSON line printed for each torrent.
    torrents: Vec<Value>,
    /// The port from "seeding N torrent(s) on port P".
    port: u16,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts serve with BTFS_PATH=`repo`, extra environment `envs`, and waits until it
    /// printed `count` torrents and says it is seeding.
    fn start(repo: &Path, args: &[&str], envs: &[(&str, &str)], count: usize) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("serve.stderr");
        let mut cmd = Command::new("sh");
        // `exec` keeps the PID: the Daemon kills btfs itself.
        cmd.arg("-c")
            .arg(r#"exec "$0" "$@" 2>"$SERVE_STDERR""#)
            .arg(bin())
            .args(["--json", "bittorrent", "serve"])
            .args(args)
            .env("BTFS_PATH", repo)
            .env("SERVE_STDERR", &stderr);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let daemon = Daemon::spawn("btfs bittorrent serve", &mut cmd);
        let err = || std::fs::read_to_string(&stderr).unwrap_or_default();
        let port = poll(
            READY,
            &format!("serve {args:?} did not say it is seeding"),
            || format!("serve stderr:\n{}", err()),
            || {
                let e = err();
                assert!(!e.contains("panicked"), "serve panicked:\n{e}");
                let line = e.lines().find(|l| l.starts_with("seeding "))?;
                let rest = &line[line.find(" on port ")? + 9..];
                rest[..rest.find(';')?].parse::<u16>().ok()
            },
        );
        // The torrent lines come before the "seeding" note on stderr.
        let torrents = (0..count)
            .map(|_| {
                let line = daemon.wait_for("a torrent line", Duration::from_secs(10), |l| {
                    serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("Magnet").is_some())
                });
                serde_json::from_str(&line).unwrap()
            })
            .collect();
        Serve {
            daemon,
            torrents,
            port,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn magnet(&self, i: usize) -> String {
        self.torrents[i]["Magnet"].as_str().unwrap().to_owned()
    }

    fn hash(&self, i: usize) -> String {
        self.torrents[i]["InfoHash"].as_str().unwrap().to_owned()
    }

    /// Sends `signal` (INT or TERM), waits (bounded) for the exit, and returns the
    /// summary objects, one per torrent. Asserts exit status 0.
    fn stop(self, signal: &str) -> Vec<Value> {
        let pid = self.daemon.pid();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        let stderr = self.stderr.clone();
        let (status, lines) = self.daemon.finish(STOP);
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert_eq!(
            status,
            Some(0),
            "serve did not exit 0 within {STOP:?} of SIG{signal} (None: still running)\nstdout:\n{}\nstderr:\n{err}",
            lines.join("\n")
        );
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["Type"] == "summary")
            .collect()
    }
}

fn serve_flags(port: u16) -> Vec<String> {
    vec![
        "--port".into(),
        port.to_string(),
        "--listen-ip".into(),
        "127.0.0.1".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// libtorrent (lt.py magnet) downloading `magnet` into `save` in the background, with no
/// peer given by hand: it must come from the magnet (x.pe) or, with `dht`, the DHT.
fn lt_magnet(magnet: &str, save: &Path, dht: Option<&str>) -> Daemon {
    std::fs::create_dir_all(save).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        s(&lt_script()),
        "magnet",
        magnet,
        s(save),
        &free_port().to_string(),
        "-",
        &DOWNLOAD.as_secs().to_string(),
    ]);
    if let Some(d) = dht {
        cmd.env("LT_DHT", d);
    }
    Daemon::spawn("libtorrent magnet download", &mut cmd)
}

/// Waits for lt.py to end and asserts it printed "done".
fn lt_done(d: Daemon, what: &str) {
    let (status, lines) = d.finish(DOWNLOAD + Duration::from_secs(20));
    assert!(
        status == Some(0) && lines.iter().any(|l| l == "done"),
        "libtorrent did not download {what} (exit {status:?}): {lines:?}"
    );
}

/// `btfs --json bittorrent download MAGNET -o OUT` with its own repo, x.pe only.
fn btfs_magnet(repo: &Path, magnet: &str, out: &Path) -> Daemon {
    btfs_download(
        repo,
        &[
            magnet,
            "-o",
            s(out),
            "--no-trackers",
            "--listen-ip",
            "127.0.0.1",
        ],
    )
}

fn btfs_done(d: Daemon, what: &str) -> Value {
    let (status, lines) = d.finish(DOWNLOAD);
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "btfs download of {what}: {sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    sum
}

/// Total size of the regular files below `p`.
fn size_of(p: &Path) -> u64 {
    if p.is_file() {
        return p.metadata().unwrap().len();
    }
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| size_of(&e.unwrap().path()))
        .sum()
}

/// The infohash `btfs bittorrent create` gives `data` with the piece length `plen`.
fn created_hash(data: &Path, out: &Path, plen: Option<&str>) -> String {
    let mut args = vec![
        "--json",
        "bittorrent",
        "create",
        s(data),
        "-o",
        s(out),
        "--force",
    ];
    if let Some(l) = plen {
        args.extend(["--piece-length", l]);
    }
    btfs(&args).ok().json()["InfoHash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A folder of the sample files plus a bigger one, so there are many pieces.
fn sample_with(root: &Path, name: &str, big: usize, seed: u64) -> PathBuf {
    let d = sample_dir(root, name);
    write(&d.join("big.bin"), &data(big, seed));
    d
}

// ---------------------------------------------------------------------------------------
// 1. libtorrent and a second btfs, from the printed magnet only

#[test]
fn libtorrent_and_btfs_download_from_the_printed_magnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_with(tmp.path(), "set", 1_500_000, 11);
    let want_cid = btfs_in(
        &tmp.path().join("scratch"),
        &["add", "-r", "-Q", "-n", "--hidden", s(&dir)],
    )
    .ok()
    .stdout
    .trim()
    .to_owned();
    let mut args = vec![s(&dir).to_owned(), "-l".into(), "16KiB".into()];
    args.extend(serve_flags(free_port()));
    let serve = Serve::start(&tmp.path().join("repo"), &strs(&args), &[], 1);
    let t = &serve.torrents[0];
    assert_eq!(t["Name"], "set", "{t}");
    assert_eq!(
        t["Cid"],
        want_cid.as_str(),
        "the Cid is that of `btfs add -r`: {t}"
    );
    let magnet = serve.magnet(0);
    let total = size_of(&dir);
    for part in [
        format!("xt=urn:btih:{}", serve.hash(0)),
        "dn=set".into(),
        format!("xl={total}"),
        format!("x.pe=127.0.0.1:{}", serve.port),
    ] {
        assert!(magnet.contains(&part), "{part} missing in {magnet}");
    }
    assert!(
        Path::new(t["Torrent"].as_str().unwrap()).is_file(),
        "the .torrent is kept: {t}"
    );

    let lt_out = tmp.path().join("lt");
    let lt = lt_magnet(&magnet, &lt_out, None);
    let btfs_out = tmp.path().join("btfs-out");
    let other = btfs_magnet(&tmp.path().join("repo2"), &magnet, &btfs_out);
    lt_done(lt, "from serve by magnet");
    btfs_done(other, "from serve by magnet");
    assert_same_tree(&dir, &lt_out.join("set"));
    assert_same_tree(&dir, &btfs_out.join("set"));

    let sums = serve.stop("INT");
    assert_eq!(sums.len(), 1, "one summary per torrent: {sums:?}");
    assert_eq!(sums[0]["Name"], "set");
    assert!(
        sums[0]["Uploaded"].as_u64().unwrap() >= total,
        "serve uploaded at least one copy: {}",
        sums[0]
    );
}

// ---------------------------------------------------------------------------------------
// 2. aria2 through opentracker

#[test]
fn aria2_finds_serve_through_opentracker() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_with(tmp.path(), "set", 2_000_000, 12);
    let probe = created_hash(&dir, &tmp.path().join("probe.torrent"), Some("32KiB"));
    let tracker = Tracker::start(std::slice::from_ref(&probe));
    let mut args = vec![
        s(&dir).to_owned(),
        "-l".into(),
        "32KiB".into(),
        "--tracker".into(),
        tracker.http(),
        "--no-dht".into(),
    ];
    args.extend(serve_flags(free_port()));
    let serve = Serve::start(&tmp.path().join("repo"), &strs(&args), &[], 1);
    assert_eq!(
        serve.hash(0),
        probe,
        "serve and `bittorrent create` give the same torrent"
    );
    let magnet = serve.magnet(0);
    assert!(
        magnet.contains("tr=http%3A%2F%2F127.0.0.1") || magnet.contains("tr=http://127.0.0.1"),
        "the tracker is in the magnet: {magnet}"
    );
    poll(
        Duration::from_secs(30),
        "opentracker did not list serve as a seeder",
        || serve.stderr(),
        || (seeders(&tracker.http(), &probe) == Some(1)).then_some(()),
    );
    let out = tmp.path().join("aria2");
    std::fs::create_dir_all(&out).unwrap();
    let log = tmp.path().join("aria2.log");
    // aria2 gives up after 30 s without any data (a few seconds are enough here).
    let r = run_with_timeout(
        Command::new(tool("aria2c")).args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            "--seed-time=0",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--bt-stop-timeout=30",
            "--log-level=debug",
            &format!("--log={}", s(&log)),
            &format!("--listen-port={}", free_port()),
            &format!("--dir={}", s(&out)),
            &magnet,
        ]),
        DOWNLOAD,
    );
    if r.status != 0 {
        // What ended aria2's connections to serve.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let peer = format!("127.0.0.1:{}", serve.port);
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("Exception")
                    || (l.contains(&peer)
                        && ["bitfield", "have none", "have all", "banned"]
                            .iter()
                            .any(|w| l.contains(w)))
            })
            .collect();
        lines.truncate(40);
        panic!(
            "aria2c did not download from serve (exit {}; aria2 drops and bans a peer that \
             closes the connection)\naria2 log (connection ends, bitfield/have messages):\n{}\n\
             aria2 stdout (tail):\n{}\nserve stderr:\n{}",
            r.status,
            lines.join("\n"),
            {
                let out: Vec<&str> = r.stdout.lines().collect();
                out[out.len().saturating_sub(12)..].join("\n")
            },
            serve.stderr()
        );
    }
    assert_same_tree(&dir, &out.join("set"));
    let sums = serve.stop("TERM");
    assert!(
        sums[0]["Uploaded"].as_u64().unwrap() >= size_of(&dir),
        "{}",
        sums[0]
    );
}

// ---------------------------------------------------------------------------------------
// 3. qbittorrent-nox by magnet

#[test]
fn qbittorrent_downloads_from_serve_by_magnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_with(tmp.path(), "set", 3_000_000, 13);
    let mut args = vec![s(&dir).to_owned(), "--no-dht".into()];
    args.extend(serve_flags(free_port()));
    let serve = Serve::start(&tmp.path().join("repo"), &strs(&args), &[], 1);
    let (magnet, hash) = (serve.magnet(0), serve.hash(0));
    let qbt = Qbittorrent::start();
    let out = tmp.path().join("qbt");
    std::fs::create_dir_all(&out).unwrap();
    let r = qbt.curl(&[
        "-F",
        &format!("urls={magnet}"),
        "-F",
        &format!("savepath={}", s(&out)),
        &format!("{}/torrents/add", qbt.api),
    ]);
    assert!(
        r.status == 0 && r.stdout.trim() == "Ok.",
        "POST /torrents/add failed: {}{}",
        r.stdout,
        r.stderr
    );
    poll(
        DOWNLOAD,
        "qbittorrent did not complete the download from serve (peer only in x.pe)",
        || {
            format!(
                "{}\nserve stderr:\n{}",
                qbt.diagnostics(Some(&hash)),
                serve.stderr()
            )
        },
        || {
            let t = qbt.info(&hash)?;
            let seeding = ["uploading", "stalledUP", "forcedUP", "queuedUP"]
                .contains(&t["state"].as_str().unwrap_or(""));
            (seeding && t["progress"].as_f64() == Some(1.0)).then_some(())
        },
    );
    assert_same_tree(&dir, &out.join("set"));
    drop(qbt);
    serve.stop("INT");
}

// ---------------------------------------------------------------------------------------
// 4. DHT only

/// A libtorrent DHT-only node on 127.0.0.1.
fn dht_node(port: u16) -> Daemon {
    let d = Daemon::spawn(
        "libtorrent DHT node",
        Command::new("/usr/bin/python3").args([s(&lt_script()), "dht-node", &port.to_string()]),
    );
    d.wait_for_line("dht node", Duration::from_secs(30));
    d
}

#[test]
fn libtorrent_finds_serve_through_the_dht_with_a_bare_magnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_with(tmp.path(), "set", 1_000_000, 14);
    let node_port = free_port();
    let _node = dht_node(node_port);
    let bootstrap = format!("127.0.0.1:{node_port}");
    let mut args = vec![
        s(&dir).to_owned(),
        "--dht-bootstrap".into(),
        bootstrap.clone(),
    ];
    args.extend(serve_flags(free_port()));
    // Search and announce every 2 s instead of every 5 minutes.
    let serve = Serve::start(
        &tmp.path().join("repo"),
        &strs(&args),
        &[("BTFS_DHT_INTERVAL_SECS", "2")],
        1,
    );
    // Only the infohash: no x.pe, no tracker.
    let magnet = format!("magnet:?xt=urn:btih:{}", serve.hash(0));
    let out = tmp.path().join("lt");
    let lt = lt_magnet(&magnet, &out, Some(&bootstrap));
    let (status, lines) = lt.finish(DOWNLOAD + Duration::from_secs(20));
    assert!(
        status == Some(0) && lines.iter().any(|l| l == "done"),
        "libtorrent did not find serve through the DHT (exit {status:?}): {lines:?}\nserve stderr:\n{}",
        serve.stderr()
    );
    assert_same_tree(&dir, &out.join("set"));
    serve.stop("INT");
}

// ---------------------------------------------------------------------------------------
// 5. --cid: ~100 MiB from the blockstore alone

#[test]
fn serve_cid_of_a_100_mib_folder_reads_only_the_blockstore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    write(&dir.join("one.bin"), &data(30_000_000, 51));
    write(&dir.join("two.bin"), &data(30_000_000, 52));
    write(&dir.join("sub/three.bin"), &data(30_000_001, 53));
    write(&dir.join("sub/four.bin"), &data(14_857_600, 54));
    write(&dir.join("sub/small.txt"), b"hello\n");
    let total = size_of(&dir);
    let repo = tmp.path().join("repo");
    let root = btfs_in(&repo, &["add", "-r", "-Q", s(&dir)])
        .ok()
        .stdout
        .trim()
        .to_owned();
    // The torrent of `--cid ROOT --name big` is that of serving the folder itself.
    let mut args = vec![s(&dir).to_owned(), "--no-add".into(), "--no-dht".into()];
    args.extend(serve_flags(free_port()));
    let direct = Serve::start(&tmp.path().join("repo-direct"), &strs(&args), &[], 1);
    let direct_hash = direct.hash(0);
    direct.stop("INT");

    let moved = tmp.path().join("moved");
    for (run, present) in [("with-dir", true), ("dir-moved", false)] {
        if !present {
            // Nothing outside the repo is left to read from.
            std::fs::rename(&dir, &moved).unwrap();
        }
        let mut args = vec![
            "--cid".to_owned(),
            root.clone(),
            "--name".into(),
            "big".into(),
            "--no-dht".into(),
        ];
        args.extend(serve_flags(free_port()));
        let serve = Serve::start(&repo, &strs(&args), &[], 1);
        let t = &serve.torrents[0];
        assert_eq!(t["Name"], "big", "{t}");
        assert_eq!(t["Cid"], root.as_str(), "{t}");
        assert_eq!(
            serve.hash(0),
            direct_hash,
            "--cid ROOT --name big has the infohash of serving the folder ({run})"
        );
        let out = tmp.path().join(format!("lt-{run}"));
        let lt = lt_magnet(&serve.magnet(0), &out, None);
        let (status, lines) = lt.finish(DOWNLOAD + Duration::from_secs(20));
        assert!(
            status == Some(0) && lines.iter().any(|l| l == "done"),
            "libtorrent did not download --cid content ({run}, exit {status:?}): {lines:?}\nserve stderr:\n{}",
            serve.stderr()
        );
        let sums = serve.stop("INT");
        assert_eq!(sums.len(), 1, "{sums:?}");
        let reads = sums[0]["BlockReads"].as_u64().unwrap_or(0);
        assert!(
            reads > 0,
            "BlockReads > 0 for a --cid seed ({run}): {}",
            sums[0]
        );
        assert!(
            sums[0]["Uploaded"].as_u64().unwrap() >= total,
            "({run}) {}",
            sums[0]
        );
        assert_same_tree(if present { &dir } else { &moved }, &out.join("big"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 6. Five downloaders at once

#[test]
fn five_downloaders_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sample_with(tmp.path(), "set", 8_000_000, 16);
    let mut args = vec![s(&dir).to_owned(), "--no-dht".into()];
    args.extend(serve_flags(free_port()));
    let serve = Serve::start(&tmp.path().join("repo"), &strs(&args), &[], 1);
    let magnet = serve.magnet(0);
    let lts: Vec<(PathBuf, Daemon)> = (0..3)
        .map(|i| {
            let out = tmp.path().join(format!("lt{i}"));
            let d = lt_magnet(&magnet, &out, None);
            (out, d)
        })
        .collect();
    let btfss: Vec<(PathBuf, Daemon)> = (0..2)
        .map(|i| {
            let out = tmp.path().join(format!("btfs{i}"));
            let d = btfs_magnet(&tmp.path().join(format!("repo{i}")), &magnet, &out);
            (out, d)
        })
        .collect();
    for (out, d) in lts {
        let (status, lines) = d.finish(DOWNLOAD + Duration::from_secs(20));
        assert!(
            status == Some(0) && lines.iter().any(|l| l == "done"),
            "a libtorrent downloader ({}) did not finish (exit {status:?}): {lines:?}\nserve stderr:\n{}",
            out.display(),
            serve.stderr()
        );
        assert_same_tree(&dir, &out.join("set"));
    }
    for (out, d) in btfss {
        btfs_done(d, "one of five at once");
        assert_same_tree(&dir, &out.join("set"));
    }
    let sums = serve.stop("INT");
    assert!(
        sums[0]["Uploaded"].as_u64().unwrap() >= size_of(&dir),
        "{}",
        sums[0]
    );
}

// ---------------------------------------------------------------------------------------
// 7. SIGTERM during a rate-limited upload

#[test]
fn sigterm_during_a_rate_limited_download_stops_and_announces_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("src/slow.bin");
    let total = 16_000_000u64;
    write(&file, &data(total as usize, 17));
    let probe = created_hash(&file, &tmp.path().join("probe.torrent"), Some("64KiB"));
    let tracker = Tracker::start(std::slice::from_ref(&probe));
    let mut args = vec![
        s(&file).to_owned(),
        "-l".into(),
        "64KiB".into(),
        "--tracker".into(),
        tracker.http(),
        "--max-upload-rate".into(),
        "1MiB".into(),
        "--no-dht".into(),
    ];
    args.extend(serve_flags(free_port()));
    let serve = Serve::start(&tmp.path().join("repo"), &strs(&args), &[], 1);
    assert_eq!(serve.hash(0), probe);
    poll(
        Duration::from_secs(30),
        "opentracker did not list serve as a seeder",
        || serve.stderr(),
        || (seeders(&tracker.http(), &probe) == Some(1)).then_some(()),
    );
    // The downloader does not announce (--no-trackers): the tracker counts serve only.
    let dl = btfs_magnet(
        &tmp.path().join("repo2"),
        &serve.magnet(0),
        &tmp.path().join("out"),
    );
    dl.wait_for("progress with some bytes", DOWNLOAD, |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["Type"] == "progress" && v["BytesHave"].as_u64().unwrap_or(0) > 0)
    });
    let url = tracker.http();
    let sums = serve.stop("TERM");
    assert_eq!(sums.len(), 1, "a summary after SIGTERM: {sums:?}");
    let up = sums[0]["Uploaded"].as_u64().unwrap();
    assert!(
        up > 0 && up < total,
        "stopped in the middle of the upload: {}",
        sums[0]
    );
    poll(
        Duration::from_secs(10),
        "opentracker still lists a seeder after serve stopped (no `stopped` announce?)",
        String::new,
        || (seeders(&url, &probe) == Some(0)).then_some(()),
    );
    drop(dl);
}

// ---------------------------------------------------------------------------------------
// 8. CLI: -f with an escaped comma, --list, --remove, resume, port fallback

#[test]
fn file_lists_records_resume_and_port_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    // serve records the canonical path.
    let src = tmp.path().join("src").canonicalize().unwrap();
    let comma = src.join("a,b.txt");
    let plain = src.join("c.txt");
    write(&comma, &data(300_000, 81));
    write(&plain, &data(50_000, 82));
    let repo = tmp.path().join("repo");
    let list_arg = format!(
        "{},{}",
        s(&comma).replace('\\', "\\\\").replace(',', "\\,"),
        s(&plain)
    );

    // Text mode: one `NAME  MAGNET` line per file of the -f list.
    let port = free_port().to_string();
    let r = btfs_in(
        &repo,
        &[
            "bittorrent",
            "serve",
            "-f",
            &list_arg,
            "--port",
            &port,
            "--listen-ip",
            "127.0.0.1",
            "--no-dht",
            "--duration",
            "2s",
        ],
    )
    .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two torrents: {}", r.stdout);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("  ").map_or("", |(n, _)| n))
        .collect();
    assert_eq!(names, ["a,b.txt", "c.txt"], "{}", r.stdout);
    for l in &lines {
        let magnet = l.split_once("  ").unwrap().1;
        assert!(
            magnet.starts_with("magnet:?xt=urn:btih:")
                && magnet.contains(&format!("x.pe=127.0.0.1:{port}")),
            "{l}"
        );
    }
    assert!(r.stderr.contains("seeding 2 torrents"), "{}", r.stderr);

    // --list: INFOHASH  NAME  SOURCE.
    let listed = btfs_in(&repo, &["bittorrent", "serve", "--list"])
        .ok()
        .stdout;
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split("  ").collect()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.get(1) == Some(&name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"))
            .clone()
    };
    let (ab, c) = (row("a,b.txt"), row("c.txt"));
    assert_eq!(ab[2], s(&comma), "{listed}");
    assert_eq!(c[2], s(&plain), "{listed}");
    assert!(
        ab[0].len() == 40 && ab[0].chars().all(|ch| ch.is_ascii_hexdigit()),
        "{listed}"
    );
    let ab_hash = ab[0].to_owned();

    // --remove by name forgets that one only.
    let r = btfs_in(&repo, &["bittorrent", "serve", "--remove", "c.txt"]).ok();
    assert!(r.stdout.contains("c.txt"), "{}", r.stdout);
    let listed = btfs_in(&repo, &["bittorrent", "serve", "--list"])
        .ok()
        .stdout;
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains("a,b.txt") && !listed.contains("c.txt"),
        "{listed}"
    );
    let r = btfs_in(&repo, &["bittorrent", "serve", "--remove", "c.txt"]);
    assert_ne!(r.status, 0, "removing it again is an error");

    // No paths: resume what is recorded, on the next port when the asked one is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let args = [
        "--port".to_owned(),
        taken_port.to_string(),
        "--listen-ip".into(),
        "127.0.0.1".into(),
        "--no-dht".into(),
    ];
    let serve = Serve::start(&repo, &strs(&args), &[], 1);
    assert_eq!(
        serve.torrents[0]["Name"], "a,b.txt",
        "{}",
        serve.torrents[0]
    );
    assert_eq!(serve.hash(0), ab_hash);
    assert_ne!(serve.port, taken_port, "{}", serve.stderr());
    assert!(
        serve
            .stderr()
            .contains(&format!("port {taken_port} is taken"))
            && serve.stderr().contains(&serve.port.to_string()),
        "stderr names the taken and the new port:\n{}",
        serve.stderr()
    );
    let magnet = serve.magnet(0);
    assert!(
        magnet.contains(&format!("x.pe=127.0.0.1:{}", serve.port)),
        "{magnet}"
    );
    let out = tmp.path().join("out");
    let d = btfs_magnet(&tmp.path().join("repo2"), &magnet, &out);
    btfs_done(d, "a resumed torrent");
    assert_same_tree(&comma, &out.join("a,b.txt"));
    serve.stop("INT");
    drop(taken);
}

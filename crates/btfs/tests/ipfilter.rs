//! The IP filter (`--ip-filter`, P2P text and eMule .dat lists) and the download rate
//! limit (`--max-download-rate`) against real software on loopback: libtorrent seeders
//! on 127.0.0.1 and 127.0.0.2, libtorrent dialling `btfs bittorrent serve`, nginx as a
//! web seed.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DOWNLOAD: Duration = Duration::from_secs(120);

fn lt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py")
}

/// libtorrent seeding `torrent` from `save` on `ip`:`port`; returns once it seeds.
fn lt_seed_on(ip: &str, torrent: &Path, save: &Path, port: u16) -> Daemon {
    let d = Daemon::spawn(
        &format!("libtorrent seeder on {ip}"),
        Command::new("/usr/bin/python3").env("LT_IP", ip).args([
            s(&lt_script()),
            "seed",
            s(torrent),
            s(save),
            &port.to_string(),
        ]),
    );
    d.wait_for_line("seeding", Duration::from_secs(60));
    d
}

/// A file of `len` bytes in `root/seed/` and its torrent (`piece` bytes a piece).
fn file_torrent(root: &Path, len: usize, piece: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let dir = root.join("seed");
    let file = dir.join("file.bin");
    let content = data(len, 71);
    write(&file, &content);
    let torrent = root.join("file.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        piece,
        "--force",
    ])
    .ok();
    (dir, torrent, content)
}

/// Every `Detail.PeerList` address in the progress events of a `--progress-detail` run.
fn peers_seen(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| {
            v["Detail"]["PeerList"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["Addr"].as_str().map(str::to_owned))
        .collect()
}

/// A libtorrent seeder on 127.0.0.1 that the filter (eMule .dat) blocks is never
/// connected, though given with `--peer`; a second one on 127.0.0.2 serves the whole
/// download (its peer list, shown once a second, never holds the blocked one); the
/// summary counts the blocked address once, though it was offered twice.
#[test]
fn a_blocked_seeder_is_never_connected_while_an_allowed_one_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent, content) = file_torrent(tmp.path(), 3_000_001, "64KiB");
    let (pa, pb) = (free_port(), free_port());
    let _blocked = lt_seed_on("127.0.0.1", &torrent, &dir, pa);
    let _allowed = lt_seed_on("127.0.0.2", &torrent, &dir, pb);
    let filter = tmp.path().join("ipfilter.dat");
    std::fs::write(
        &filter,
        "# eMule list\n\
         127.000.000.001 - 127.000.000.001 , 000 , this machine\n\
         127.000.000.002 - 127.000.000.002 , 200 , level above 127: not blocked\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--no-trackers",
            "--listen-ip",
            "127.0.0.1",
            "--peer",
            &format!("127.0.0.1:{pa}"),
            "--peer",
            &format!("127.0.0.2:{pb}"),
            // The blocked address again on another port: one address, counted once.
            "--peer",
            &format!("127.0.0.1:{pb}"),
            "--ip-filter",
            s(&filter),
            "--progress-detail",
            // A few seconds long, so progress events (one a second) show the peers.
            "--max-download-rate",
            "1MiB",
        ],
    );
    let (status, lines) = d.finish(DOWNLOAD);
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), content);
    assert_eq!(sum["Blocked"].as_u64(), Some(1), "{sum}");
    let seen = peers_seen(&lines);
    assert!(
        seen.iter().any(|a| *a == format!("127.0.0.2:{pb}")),
        "the allowed seeder never showed as a peer: {seen:?}"
    );
    assert!(
        !seen.iter().any(|a| a.starts_with("127.0.0.1:")),
        "a blocked address was connected: {seen:?}"
    );
}

/// `btfs ARGS` with the repo at `repo`, run to its end.
fn btfs_in(repo: &Path, args: &[&str]) -> Run {
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", repo)
            .args(args),
        DOWNLOAD,
    )
}

/// The same with a magnet link, the filter and the download limit coming from the
/// repo's config (`Bittorrent.IPFilter` relative to the repo, `DownloadRateLimit`):
/// with only the blocked seeder in the link, neither `download` nor `metainfo -m` fetch
/// the metadata (the blocked address is named); `--ip-filter` with a list that blocks
/// nothing overrides the config for one run; with both seeders the download completes
/// from the allowed one, never connecting the blocked one, paced by the limit.
#[test]
fn a_magnet_never_reaches_a_seeder_the_configured_filter_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent, content) = file_torrent(tmp.path(), 3_000_001, "64KiB");
    let (pa, pb) = (free_port(), free_port());
    let _blocked = lt_seed_on("127.0.0.1", &torrent, &dir, pa);
    let _allowed = lt_seed_on("127.0.0.2", &torrent, &dir, pb);
    let repo = tmp.path().join("repo");
    btfs_in(&repo, &["init"]).ok();
    std::fs::write(
        repo.join("ipfilter.p2p"),
        "# P2P list
this machine:127.0.0.1-127.0.0.1
",
    )
    .unwrap();
    btfs_in(&repo, &["config", "Bittorrent.IPFilter", "ipfilter.p2p"]).ok();
    btfs_in(
        &repo,
        &[
            "config",
            "--json",
            "Bittorrent.DownloadRateLimit",
            "1048576",
        ],
    )
    .ok();
    let hash = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json()["InfoHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let only_blocked = format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1:{pa}");
    let refused = format!("127.0.0.1:{pa}: blocked by the IP filter");

    let (status, err) = download_error(&repo, &[only_blocked.as_str(), "--no-trackers"]);
    assert_eq!(status, 1, "{err}");
    let msg = err["Message"].as_str().unwrap_or_default();
    assert!(msg.contains(&refused), "{msg}");
    let meta = [
        "bittorrent",
        "metainfo",
        "-m",
        only_blocked.as_str(),
        "--timeout",
        "20s",
    ];
    let r = btfs_in(&repo, &meta);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&refused), "{}", r.stderr);
    // A list blocking nothing, given for this run: the blocked seeder answers.
    let none = tmp.path().join("none.p2p");
    std::fs::write(
        &none,
        "# nothing blocked
",
    )
    .unwrap();
    let mut with_flag = meta.to_vec();
    with_flag.extend(["--ip-filter", s(&none)]);
    let r = btfs_in(&repo, &with_flag).ok();
    assert!(r.stdout.contains("file.bin"), "{}", r.stdout);

    let both = format!("{only_blocked}&x.pe=127.0.0.2:{pb}");
    let out = tmp.path().join("out");
    let d = btfs_download(
        &repo,
        &[
            both.as_str(),
            "-o",
            s(&out),
            "--no-trackers",
            "--listen-ip",
            "127.0.0.1",
            "--progress-detail",
        ],
    );
    let (status, lines) = d.finish(DOWNLOAD);
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), content);
    assert_eq!(sum["Blocked"].as_u64(), Some(1), "{sum}");
    let seen = peers_seen(&lines);
    assert!(
        !seen.iter().any(|a| a.starts_with("127.0.0.1:")),
        "a blocked address was connected: {seen:?}"
    );
    // The configured limit: (3 MB - the 128 KiB burst) at 1 MiB/s is over 2.7 s.
    assert!(sum["Elapsed"].as_f64().unwrap() >= 2.0, "{sum}");
}

/// A 6 MiB download from libtorrent under a 1 MiB/s limit cannot take less than about
/// five seconds (the limiter's burst is 128 KiB); it completes with the right bytes.
#[test]
fn the_download_limit_paces_a_download_from_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, torrent, content) = file_torrent(tmp.path(), 6 << 20, "256KiB");
    let port = free_port();
    let _seeder = lt_seed(&torrent, &dir, port);
    let out = tmp.path().join("out");
    let started = Instant::now();
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--no-trackers",
            "--listen-ip",
            "127.0.0.1",
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--max-download-rate",
            "1MiB",
        ],
    );
    let (status, lines) = d.finish(DOWNLOAD);
    let took = started.elapsed();
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), content);
    // Physics of the limit only: (6 MiB - 128 KiB burst) / 1 MiB/s > 5.8 s.
    assert!(
        took >= Duration::from_secs(4),
        "6 MiB at 1 MiB/s took {took:?}"
    );
    assert!(sum["Elapsed"].as_f64().unwrap() >= 4.0, "{sum}");
    assert_eq!(sum["Wasted"].as_u64(), Some(0), "{sum}");
}

/// `btfs bittorrent serve` with a P2P list blocking 127.0.0.1: libtorrent dialling from
/// 127.0.0.1 gets nothing (its connections are closed at accept), libtorrent from
/// 127.0.0.2 downloads (`--max-upload-rate 0`: unlimited); serve reports what it
/// blocked.
#[test]
fn serve_closes_connections_from_blocked_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, content) = file_torrent(tmp.path(), 500_000, "16KiB");
    let filter = tmp.path().join("blocklist.p2p");
    std::fs::write(
        &filter,
        "# P2P list\nLocal: this host:127.0.0.1-127.0.0.1\n",
    )
    .unwrap();
    let stderr = tmp.path().join("serve.stderr");
    let port = free_port();
    let mut cmd = Command::new("sh");
    // `exec` keeps the PID: the Daemon kills btfs itself.
    cmd.arg("-c")
        .arg(r#"exec "$0" "$@" 2>"$SERVE_STDERR""#)
        .arg(env!("CARGO_BIN_EXE_btfs"))
        .args(["--json", "bittorrent", "serve"])
        .arg(dir.join("file.bin"))
        .args(["--port", &port.to_string(), "--listen-ip", "127.0.0.1"])
        .arg("--ip-filter")
        .arg(&filter)
        // 0 is no limit (not one byte a second).
        .args(["--max-upload-rate", "0"])
        .env("BTFS_PATH", tmp.path().join("repo"))
        .env("SERVE_STDERR", &stderr);
    let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
    let err = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let port: u16 = poll(
        Duration::from_secs(90),
        "serve did not say it is seeding",
        || format!("serve stderr:\n{}", err()),
        || {
            let e = err();
            let line = e.lines().find(|l| l.starts_with("seeding "))?;
            let rest = &line[line.find(" on port ")? + 9..];
            rest[..rest.find(';')?].parse::<u16>().ok()
        },
    );
    let line = serve.wait_for("a torrent line", Duration::from_secs(10), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("Magnet").is_some())
    });
    let magnet = serde_json::from_str::<Value>(&line).unwrap()["Magnet"]
        .as_str()
        .unwrap()
        .to_owned();
    let leech = |ip: &str, save: &Path, timeout: u64| {
        std::fs::create_dir_all(save).unwrap();
        run_with_timeout(
            Command::new("/usr/bin/python3").env("LT_IP", ip).args([
                s(&lt_script()),
                "magnet",
                &magnet,
                s(save),
                &free_port().to_string(),
                &format!("127.0.0.1:{port}"),
                &timeout.to_string(),
            ]),
            Duration::from_secs(timeout + 60),
        )
    };
    let refused = leech("127.0.0.1", &tmp.path().join("lt-blocked"), 8);
    assert!(
        refused.stdout.contains("incomplete 0 pieces"),
        "libtorrent on a blocked address got data: {}\n{}",
        refused.stdout,
        refused.stderr
    );
    let served = leech("127.0.0.2", &tmp.path().join("lt-allowed"), 90);
    assert!(
        served.stdout.lines().any(|l| l == "done"),
        "libtorrent on 127.0.0.2 did not download: {}\n{}\nserve stderr:\n{}",
        served.stdout,
        served.stderr,
        err()
    );
    assert_eq!(
        std::fs::read(tmp.path().join("lt-allowed/file.bin")).unwrap(),
        content
    );
    serve.interrupt();
    let (status, _) = serve.finish(Duration::from_secs(30));
    assert_eq!(status, Some(0), "serve stderr:\n{}", err());
    let e = err();
    let blocked: u64 = e
        .lines()
        .find_map(|l| l.strip_prefix("IP filter: blocked "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no blocked count in serve stderr:\n{e}"));
    assert!(blocked >= 1, "{e}");
}

/// `btfs --json bittorrent download ARGS` run to its end: (exit status, last stderr
/// line as JSON).
fn download_error(repo: &Path, args: &[&str]) -> (i32, Value) {
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", repo)
            .args(["--json", "bittorrent", "download"])
            .args(args),
        DOWNLOAD,
    );
    let last = r.stderr.lines().last().unwrap_or_default().to_owned();
    let v = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
    (r.status, v)
}

/// A web seed written as a blocked address, or whose host name resolves only to blocked
/// addresses (localhost: 127.0.0.1 and ::1), is dropped saying why; nothing else is
/// left, so the download stops with that message.
#[test]
fn web_seeds_at_blocked_addresses_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, _) = file_torrent(tmp.path(), 200_000, "16KiB");
    let nginx = Nginx::start(&dir, None);
    let filter = tmp.path().join("loopback.txt");
    std::fs::write(
        &filter,
        "loopback:127.0.0.0-127.255.255.255\nloopback v6:::1-::1\n",
    )
    .unwrap();
    for (url, expected) in [
        (
            nginx.url(),
            "127.0.0.1 is blocked by the IP filter".to_owned(),
        ),
        (
            format!("http://localhost:{}/", nginx.port),
            "every address of localhost is blocked by the IP filter".to_owned(),
        ),
    ] {
        let torrent = tmp.path().join("ws.torrent");
        btfs(&[
            "bittorrent",
            "create",
            s(&dir.join("file.bin")),
            "-o",
            s(&torrent),
            "--webseed",
            &url,
            "--force",
        ])
        .ok();
        let out = tmp.path().join("out");
        let (status, err) = download_error(
            &tmp.path().join("repo"),
            &[
                "-t",
                s(&torrent),
                "-o",
                s(&out),
                "--no-trackers",
                "--ip-filter",
                s(&filter),
            ],
        );
        assert_eq!(status, 1, "{url}: {err}");
        let msg = err["Message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&expected) && msg.contains(&url),
            "{url}: {msg}"
        );
    }
}

/// With a filter, a proxy from the environment is not used for web seeds (it would
/// resolve and dial their hosts past the filter): with `HTTP_PROXY` pointing at a
/// closed port, the download from nginx still completes, straight from it.
#[test]
fn with_a_filter_web_seeds_are_fetched_without_the_environment_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, content) = file_torrent(tmp.path(), 300_000, "16KiB");
    let nginx = Nginx::start(&dir, None);
    let torrent = tmp.path().join("ws.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&dir.join("file.bin")),
        "-o",
        s(&torrent),
        "--webseed",
        &nginx.url(),
        "--force",
    ])
    .ok();
    let filter = tmp.path().join("ten.p2p");
    std::fs::write(
        &filter,
        "ten:10.0.0.0-10.255.255.255
",
    )
    .unwrap();
    // A port nothing listens on: a proxied request fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", tmp.path().join("repo"))
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["--json", "bittorrent", "download", "-t"])
        .arg(&torrent)
        .arg("-o")
        .arg(&out)
        .args(["--no-trackers", "--ip-filter"])
        .arg(&filter);
    let (status, lines) = Daemon::spawn("btfs download", &mut cmd).finish(DOWNLOAD);
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), content);
}

/// `--max-download-rate 0` means no limit (not one byte a second): a 2 MiB download
/// from nginx completes.
#[test]
fn a_zero_download_rate_is_unlimited() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, content) = file_torrent(tmp.path(), 2 << 20, "64KiB");
    let nginx = Nginx::start(&dir, None);
    let torrent = tmp.path().join("ws.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&dir.join("file.bin")),
        "-o",
        s(&torrent),
        "--webseed",
        &nginx.url(),
        "--force",
    ])
    .ok();
    let out = tmp.path().join("out");
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--no-trackers",
            "--max-download-rate",
            "0",
        ],
    );
    let (status, lines) = d.finish(DOWNLOAD);
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), content);
}

/// A list with a line that does not parse is refused before anything starts, naming
/// the file, the line and its text.
#[test]
fn a_filter_that_does_not_parse_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, torrent, _) = file_torrent(tmp.path(), 20_000, "16KiB");
    let filter = tmp.path().join("blocklist.p2p");
    std::fs::write(&filter, "# ok\ngood:1.2.3.4-1.2.3.5\nbad line here\n").unwrap();
    let (status, err) = download_error(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "--no-trackers",
            "--peer",
            "127.0.0.1:9",
            "--ip-filter",
            s(&filter),
        ],
    );
    assert_eq!(status, 1, "{err}");
    let msg = err["Message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("blocklist.p2p:3: \"bad line here\": not an address range"),
        "{msg}"
    );
}

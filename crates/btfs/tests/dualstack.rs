//! Dual stack against real libtorrent, on loopback only (127.0.0.1 and ::1): btfs
//! downloading from a libtorrent seeder that listens on IPv6 only; the engine listening
//! on 127.0.0.1 and ::1 with one port (the next one when ::1 has it taken) and serving
//! libtorrent over both; libtorrent downloading from `btfs bittorrent serve` over ::1,
//! dialled by hand and from the printed magnet's IPv6 `x.pe`; and `--listen-ip ::`
//! alone taking IPv4 too, in a network namespace of the test's own (only `lo`).

mod common;

use bittorrent::engine::{self, Options, Phase, Stats};
use bittorrent::Metainfo;
use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A port free on both 127.0.0.1 and ::1 with the next one free on both too.
fn two_free_ports() -> u16 {
    for _ in 0..100 {
        let p = free_port_v6();
        let free = |p: u16| {
            std::net::TcpListener::bind((V4, p)).is_ok()
                && std::net::TcpListener::bind((V6, p)).is_ok()
        };
        if p < u16::MAX && free(p) && free(p + 1) {
            return p;
        }
    }
    panic!("no two free ports in a row on 127.0.0.1 and ::1");
}

#[test]
fn download_from_a_libtorrent_seeder_listening_on_ipv6_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, torrent) = sample_torrent(tmp.path(), None);
    let port = free_port_v6();
    let _seeder = lt_seed_on("[::1]", &torrent, &tmp.path().join("seed"), port, 0);
    let out = tmp.path().join("out");
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &format!("[::1]:{port}"),
            "--no-trackers",
            "--no-dht",
            "--listen-ip",
            "::1",
        ],
    );
    let (status, lines) = d.finish(Duration::from_secs(120));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "btfs download failed: {sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(sum["HashFailures"], 0, "{sum}");
    assert_same_tree(&data, &out.join("set"));
}

/// The engine told to listen on 127.0.0.1 and ::1 with port P, where ::1 has P taken:
/// it listens on P+1 on both (and lets 127.0.0.1:P go), downloads from an IPv6-only
/// libtorrent seeder, then, that seeder gone, serves a libtorrent leecher over IPv4 and
/// another over IPv6 on that one port, uploading to each.
#[test]
fn the_engine_listens_on_both_families_on_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, torrent) = sample_torrent(tmp.path(), None);
    let seed_port = free_port_v6();
    let seeder = lt_seed_on("[::1]", &torrent, &tmp.path().join("seed"), seed_port, 0);
    let p = two_free_ports();
    let _taken = std::net::TcpListener::bind((V6, p)).unwrap();

    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut opts = Options::new(out.clone());
    opts.listen = vec![V4, V6];
    opts.port = p;
    opts.peers = vec![SocketAddr::new(V6, seed_port)];
    opts.use_trackers = false;
    opts.seed = true;
    opts.max_connections_per_ip = 16;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stats_tx, mut stats_rx) = tokio::sync::watch::channel(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine = rt.spawn(engine::run(Arc::new(meta), opts, stats_tx, stop_rx));
    let st = wait_stats(&rt, &mut stats_rx, "seeding", |s| s.phase == Phase::Seeding);
    assert_eq!(st.listen_port, p + 1, "P is taken on ::1: both move to P+1");
    // 127.0.0.1:P, bound while P was tried, was let go.
    let v4_p = std::net::TcpListener::bind((V4, p));
    assert!(v4_p.is_ok(), "127.0.0.1:{p} still held: {v4_p:?}");
    drop(v4_p);
    assert_same_tree(&data, &out.join("set"));
    // The leechers get the data from btfs only (not from this seeder through PEX).
    drop(seeder);

    let port = st.listen_port;
    for (host, peer, lt_port) in [
        ("127.0.0.1", format!("127.0.0.1:{port}"), free_port()),
        ("[::1]", format!("[::1]:{port}"), free_port_v6()),
    ] {
        let before = stats_rx.borrow().uploaded;
        let dir = tmp.path().join(format!("leech-{lt_port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let leecher = lt_leech_on(host, s(&torrent), &dir, lt_port, &peer);
        leecher.wait_for_line("done", Duration::from_secs(100));
        assert_same_tree(&data, &dir.join("set"));
        wait_stats(&rt, &mut stats_rx, &format!("uploading to {peer}"), |s| {
            s.uploaded > before
        });
    }
    stop_tx.send(true).unwrap();
    let end = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), engine).await });
    assert!(
        matches!(end, Ok(Ok(Ok(_)))),
        "the engine did not stop cleanly: {end:?}"
    );
}

/// Waits (at most 120 s) for the engine's stats to satisfy `f`.
fn wait_stats(
    rt: &tokio::runtime::Runtime,
    stats: &mut tokio::sync::watch::Receiver<Stats>,
    what: &str,
    f: impl FnMut(&Stats) -> bool,
) -> Stats {
    let got = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), stats.wait_for(f))
            .await
            .map(|r| r.map(|s| s.clone()))
    });
    match got {
        Ok(Ok(st)) => st,
        other => panic!(
            "the engine is not {what}: {other:?}; engine: {:?}",
            stats.borrow().clone()
        ),
    }
}

/// `btfs bittorrent serve --listen-ip ::1` prints its IPv6 address in the magnet as
/// libtorrent does (`x.pe=[::1]:PORT`, which libtorrent 2.0 needs unescaped);
/// libtorrent downloads over ::1 when given the peer by hand, and from the magnet alone
/// (its x.pe).
#[test]
fn libtorrent_downloads_from_serve_over_ipv6() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("src"), "set");
    let port = free_port_v6();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", tmp.path().join("repo"))
        .args(["--json", "bittorrent", "serve", s(&data), "-l", "16KiB"])
        .args([
            "--port",
            &port.to_string(),
            "--listen-ip",
            "::1",
            "--no-dht",
        ]);
    let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
    let line = serve.wait_for("the torrent line", Duration::from_secs(60), |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("Magnet").is_some())
    });
    let t: serde_json::Value = serde_json::from_str(&line).unwrap();
    let magnet = t["Magnet"].as_str().unwrap().to_owned();
    assert!(magnet.contains(&format!("&x.pe=[::1]:{port}")), "{magnet}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((V6, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve is not listening on [::1]:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let torrent = t["Torrent"].as_str().unwrap();

    let by_hand = tmp.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let l = lt_leech_on(
        "[::1]",
        torrent,
        &by_hand,
        free_port_v6(),
        &format!("[::1]:{port}"),
    );
    l.wait_for_line("done", Duration::from_secs(100));
    assert_same_tree(&data, &by_hand.join("set"));

    let by_magnet = tmp.path().join("by-magnet");
    std::fs::create_dir_all(&by_magnet).unwrap();
    let l = lt_leech_on("[::1]", &magnet, &by_magnet, free_port_v6(), "-");
    l.wait_for_line("done", Duration::from_secs(100));
    assert_same_tree(&data, &by_magnet.join("set"));
}

/// `btfs bittorrent serve --listen-ip ::` alone is dual-stack (as Linux's default for
/// `::`): libtorrent downloads from it over 127.0.0.1. Runs in a network namespace of
/// its own (only `lo`), so `::` is reachable from nowhere else.
#[test]
fn a_lone_unspecified_ipv6_address_takes_ipv4_too() {
    let t = std::thread::spawn(|| {
        own_network_namespace();
        let tmp = tempfile::tempdir().unwrap();
        let data = sample_dir(&tmp.path().join("src"), "set");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
        cmd.env("BTFS_PATH", tmp.path().join("repo"))
            .args(["--json", "bittorrent", "serve", s(&data), "-l", "16KiB"])
            .args(["--port", &port.to_string(), "--listen-ip", "::", "--no-dht"]);
        let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
        let line = serve.wait_for("the torrent line", Duration::from_secs(60), |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("Torrent").is_some())
        });
        let t: serde_json::Value = serde_json::from_str(&line).unwrap();
        let torrent = t["Torrent"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((V4, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "serve --listen-ip :: is not listening on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = tmp.path().join("over-ipv4");
        std::fs::create_dir_all(&dir).unwrap();
        let l = lt_leech_on(
            "127.0.0.1",
            torrent,
            &dir,
            free_port(),
            &format!("127.0.0.1:{port}"),
        );
        l.wait_for_line("done", Duration::from_secs(100));
        assert_same_tree(&data, &dir.join("set"));
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The local addresses of `ss -Hn{kind}p` sockets on `port` held by process `pid`
/// (`kind`: `lt` listening TCP, `lu` UDP), sorted.
fn sockets_of(pid: u32, kind: &str, port: u16) -> Vec<String> {
    let r = run_with_timeout(
        Command::new(tool("ss"))
            .arg(format!("-Hn{kind}p"))
            .arg(format!("sport = :{port}")),
        Duration::from_secs(10),
    );
    let mut addrs: Vec<String> = r
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    addrs.sort();
    addrs
}

/// `btfs bittorrent serve` in a repo whose config has `Bittorrent.ListenAddresses`
/// `["127.0.0.1", "::1"]` (no flag): it listens on both with one port, says so, puts
/// both in the magnet's `x.pe`, and accepts on both; its DHT node takes that port's
/// number for UDP (on 127.0.0.1, the DHT being IPv4 only), or another one when that UDP
/// port is taken.
#[test]
fn serve_listens_on_every_configured_address_with_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("src"), "set");
    let repo = tmp.path().join("repo");
    let btfs_here = |args: &[&str]| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(args),
            Duration::from_secs(60),
        )
        .ok()
    };
    btfs_here(&[
        "config",
        "--json",
        "Bittorrent.ListenAddresses",
        r#"["127.0.0.1", "::1"]"#,
    ]);
    // A DHT router where nothing answers: the node starts (and only ever sends there).
    let router = format!("127.0.0.1:{}", free_port());
    let serve = |extra: &[&str]| {
        let stderr = tmp.path().join(format!("serve{}.stderr", extra.len()));
        let mut cmd = Command::new("sh");
        // `exec` keeps the PID: the Daemon kills btfs itself.
        cmd.arg("-c")
            .arg(r#"exec "$0" "$@" 2>"$SERVE_STDERR""#)
            .arg(env!("CARGO_BIN_EXE_btfs"))
            .args([
                "--json",
                "bittorrent",
                "serve",
                s(&data),
                "-l",
                "16KiB",
                "--no-add",
            ])
            .args(["--dht-bootstrap", &router])
            .args(extra)
            .env("BTFS_PATH", &repo)
            .env("SERVE_STDERR", &stderr);
        let d = Daemon::spawn("btfs bittorrent serve", &mut cmd);
        let line = d.wait_for("the torrent line", Duration::from_secs(60), |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("Magnet").is_some())
        });
        let t: serde_json::Value = serde_json::from_str(&line).unwrap();
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        (d, t["Magnet"].as_str().unwrap().to_owned(), err)
    };

    let (d, magnet, err) = serve(&[]);
    let said = err
        .lines()
        .find_map(|l| l.strip_prefix("listening for peers on "))
        .unwrap_or_else(|| panic!("serve did not say where it listens:\n{err}"))
        .to_owned();
    let port: u16 = said
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {said:?}"));
    assert_eq!(said, format!("127.0.0.1:{port}, [::1]:{port}"));
    assert!(
        magnet.contains(&format!("x.pe=127.0.0.1:{port}"))
            && magnet.contains(&format!("x.pe=[::1]:{port}")),
        "{magnet}"
    );
    for ip in [V4, V6] {
        std::net::TcpStream::connect((ip, port))
            .unwrap_or_else(|e| panic!("serve does not accept on {ip} port {port}: {e}"));
    }
    assert_eq!(
        sockets_of(d.pid(), "lt", port),
        [format!("127.0.0.1:{port}"), format!("[::1]:{port}")],
        "listening TCP sockets of serve on port {port}"
    );
    assert_eq!(
        sockets_of(d.pid(), "lu", port),
        [format!("127.0.0.1:{port}")],
        "the DHT's UDP socket takes the listen port's number"
    );
    drop(d);

    // That UDP port taken: TCP keeps the port asked for, the DHT takes another one.
    let udp = std::net::UdpSocket::bind((V4, 0)).unwrap();
    let q = udp.local_addr().unwrap().port();
    let both_free = std::net::TcpListener::bind((V4, q)).is_ok()
        && std::net::TcpListener::bind((V6, q)).is_ok();
    assert!(both_free, "TCP port {q} is taken on 127.0.0.1 or ::1");
    let (d, _, err) = serve(&["--port", &q.to_string()]);
    assert!(
        err.contains(&format!("listening for peers on 127.0.0.1:{q}, [::1]:{q}")),
        "{err}"
    );
    assert!(sockets_of(d.pid(), "lu", q).is_empty(), "UDP {q} is ours");
    let dht = run_with_timeout(
        Command::new(tool("ss")).arg("-Hnlup"),
        Duration::from_secs(10),
    );
    assert!(
        dht.stdout
            .lines()
            .any(|l| l.contains(&format!("pid={},", d.pid())) && l.contains("127.0.0.1:")),
        "serve's DHT node has no UDP socket:\n{}",
        dht.stdout
    );
}

/// Moves the calling thread, and the processes it starts from then on, into a new
/// network namespace whose only interface, `lo` (127.0.0.1 and ::1), is up. Needs root,
/// as the suite runs.
fn own_network_namespace() {
    let os_err = std::io::Error::last_os_error;
    // SAFETY: unshare(CLONE_NEWNET) changes this thread's namespace only; the ioctls get
    // a socket of ours and a zeroed `ifreq` naming `lo`.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNET),
            0,
            "unshare(CLONE_NEWNET): {}",
            os_err()
        );
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", os_err());
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo") {
            *d = *c as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            0,
            "SIOCGIFFLAGS lo: {}",
            os_err()
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr),
            0,
            "SIOCSIFFLAGS lo up: {}",
            os_err()
        );
        libc::close(fd);
    }
}

//! Hostile input that is not a single misbehaving connection: a flood of reconnecting
//! peers that each send one peer-exchange list of fresh addresses, a file of the
//! download folder swapped for a symbolic link mid-download, and a tiny torrent that
//! declares terabytes. Each runs against real btfs processes, next to a real libtorrent
//! seeder where a download must still complete.
//!
//! Every socket is on loopback: the flood connects from 127.1.x.y source addresses and
//! its lists name 127.x.y.z addresses on ports 600-999, where nothing listens (a dial
//! is refused at once). Memory is read from /proc/PID/status (VmRSS, VmHWM). Every wait
//! is bounded, and every process started is ended by PID (see `common::Daemon`).

mod common;

use bittorrent::wire::{self, our_reserved, Handshake, Message};
use bittorrent::{InfoHash, Metainfo};
use common::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1 << 20;

/// VmRSS and VmHWM of a running process in bytes; `None` once it has exited.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn info_hash(torrent: &Path) -> InfoHash {
    Metainfo::from_bytes(&std::fs::read(torrent).unwrap())
        .unwrap()
        .wire_info_hash()
}

/// A `ut_pex` payload adding 100 addresses never sent before: 127.x.y.z with x of 2 or
/// more (never the flood's own 127.1.x.y or the seeder's 127.0.0.1), ports 600-999.
fn pex_payload(next: &AtomicU32) -> Vec<u8> {
    let mut added = Vec::with_capacity(600);
    for _ in 0..100 {
        let m = next.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::new(127, 2 + ((m >> 16) % 250) as u8, (m >> 8) as u8, m as u8);
        added.extend(ip.octets());
        added.extend((600 + (m % 400) as u16).to_be_bytes());
    }
    let mut out = format!("d5:added{}:", added.len()).into_bytes();
    out.extend(&added);
    out.extend(format!("7:added.f{}:", 100).into_bytes());
    out.extend([0u8; 100]);
    out.push(b'e');
    out
}

/// One hostile connection from `src`: the real handshake for `ih`, an extension
/// handshake announcing `ut_pex`, one `ut_pex` message, then goodbye. Returns whether
/// btfs answered the handshake.
async fn flood_once(src: Ipv4Addr, to: SocketAddr, ih: InfoHash, next: &AtomicU32) -> bool {
    let attempt = async {
        let Some(mut s) = handshake_from(src, to, ih).await? else {
            return Err(std::io::Error::other("btfs closed the connection"));
        };
        let mut buf = Vec::new();
        Message::Extended {
            id: 0,
            payload: b"d1:md6:ut_pexi1eee".to_vec(),
        }
        .encode_into(&mut buf);
        Message::Extended {
            id: bittorrent::pex::UT_PEX,
            payload: pex_payload(next),
        }
        .encode_into(&mut buf);
        s.write_all(&buf).await?;
        s.shutdown().await?;
        std::io::Result::Ok(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Ok(()))
    )
}

/// Floods btfs at `to` from four connections at a time until `until`; returns how many
/// connections btfs answered.
fn flood(to: SocketAddr, ih: InfoHash, until: Instant) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let next_addr = Arc::new(AtomicU32::new(0));
    let next_src = Arc::new(AtomicU32::new(0));
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (answered, next_addr, next_src) =
                    (answered.clone(), next_addr.clone(), next_src.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        // Source addresses 127.1.0.1 to 127.1.15.250, in turn.
                        let n = next_src.fetch_add(1, Ordering::Relaxed) % 4000;
                        let src = Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
                        if flood_once(src, to, ih, &next_addr).await {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    answered.load(Ordering::Relaxed)
}

/// Item 1 of the hostile-input issue: peers that connect, send one PEX list of 100
/// fresh addresses and leave, again and again for 60 s, from many loopback addresses,
/// while btfs downloads from a rate-limited libtorrent seeder. btfs's memory stays
/// under 64 MiB and the download completes with the right bytes.
#[test]
fn pex_and_reconnect_flood_keeps_memory_bounded() {
    const FLOOD: Duration = Duration::from_secs(60);
    const MAX_RSS: u64 = 64 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    let content = data(3 << 20, 21);
    write(&src.join("flood.bin"), &content);
    let torrent = tmp.path().join("flood.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&src.join("flood.bin")),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
    ])
    .ok();
    let seed_port = free_port();
    // 3 MiB at 40 KB/s: about 80 s, so the download runs through the whole flood.
    let _seeder = lt_seed_limited(&torrent, &src, seed_port, 40_000);
    let port = free_port();
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
            "--no-dht",
            "--listen-ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--max-connections-per-ip",
            "1",
        ],
    );
    let pid = d.pid();
    poll(
        Duration::from_secs(30),
        "btfs did not listen",
        String::new,
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    let ih = info_hash(&torrent);
    let to = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let until = Instant::now() + FLOOD;
    let flooder = std::thread::spawn(move || flood(to, ih, until));
    // Memory while flooded and until btfs exits (bounded).
    let deadline = Instant::now() + FLOOD + Duration::from_secs(180);
    let (mut max_rss, mut hwm) = (0u64, 0u64);
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let Some((rss, peak)) = memory(pid) else {
            break;
        };
        max_rss = max_rss.max(rss);
        hwm = hwm.max(peak);
        if hwm >= MAX_RSS {
            break; // failed already: no need to watch it grow further
        }
        if samples.len() < 1000 {
            samples.push(rss / MIB);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let answered = flooder.join().unwrap();
    let (status, lines) = d.finish(Duration::from_secs(30));
    let sum = summary(&lines);
    let report = format!(
        "peak RSS {} MiB (VmHWM {} MiB), {answered} flood connections answered, RSS every 5 s (MiB): {:?}\n{sum}",
        max_rss / MIB,
        hwm / MIB,
        samples.iter().step_by(10).collect::<Vec<_>>()
    );
    eprintln!("{report}");
    assert!(answered >= 100, "the flood hardly reached btfs: {report}");
    assert!(hwm < MAX_RSS, "btfs grew past 64 MiB: {report}");
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(sum["Complete"], true, "{report}");
    assert!(
        std::fs::read(out.join("flood.bin")).unwrap() == content,
        "the downloaded file differs from the source"
    );
}

/// Item 2: a file of the download folder swapped for a symbolic link to a file outside
/// it mid-download. The file outside never changes; the download either stops with an
/// error saying the file was replaced, or completes with the torrent's own content.
#[test]
fn a_file_swapped_for_a_symlink_mid_download_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("seed").join("set");
    // Downloaded in order: a.bin first (slowly), z.bin last.
    write(&set.join("a.bin"), &data(1_500_000, 31));
    write(&set.join("z.bin"), &data(300_000, 32));
    let torrent = tmp.path().join("set.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&set),
        "-o",
        s(&torrent),
        "--piece-length",
        "32KiB",
    ])
    .ok();
    let victim = tmp.path().join("victim.bin");
    let victim_bytes = data(100_000, 33);
    std::fs::write(&victim, &victim_bytes).unwrap();
    let seed_port = free_port();
    let _seeder = lt_seed_limited(&torrent, &tmp.path().join("seed"), seed_port, 100_000);
    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", tmp.path().join("repo")).args([
        "--json",
        "bittorrent",
        "download",
        "-t",
        s(&torrent),
        "-o",
        s(&out),
        "--peer",
        &format!("127.0.0.1:{seed_port}"),
        "--no-trackers",
        "--no-dht",
        "--sequential",
    ]);
    let download = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(180)));
    // Once a.bin holds data (and z.bin, created at the start, none yet), swap z.bin.
    let a = out.join("set/a.bin");
    let z = out.join("set/z.bin");
    poll(
        Duration::from_secs(60),
        "btfs wrote nothing into a.bin",
        String::new,
        || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&a)
                .ok()
                .filter(|m| m.blocks() > 0 && z.exists())
        },
    );
    std::fs::remove_file(&z).unwrap();
    std::os::unix::fs::symlink(&victim, &z).unwrap();
    let r = download.join().unwrap();
    let context = format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        r.status, r.stdout, r.stderr
    );
    eprintln!("btfs exited with {}: {}", r.status, r.stderr.trim());
    assert!(!r.stderr.contains("panicked"), "{context}");
    assert!(r.status != -2, "btfs did not finish: {context}");
    assert!(
        std::fs::read(&victim).unwrap() == victim_bytes,
        "the file outside the download folder changed: {context}"
    );
    if r.status == 0 {
        // Completed: with the torrent's own content and CIDs, never the victim's.
        let sum = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["Type"] == "summary")
            .unwrap_or_else(|| panic!("no summary: {context}"));
        assert_eq!(sum["Complete"], true, "{context}");
        let add = btfs(&["--enc", "json", "add", "-n", "-r", "--hidden", s(&set)]).ok();
        let root = add
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .next_back()
            .unwrap()["Hash"]
            .clone();
        assert_eq!(sum["Cid"], root, "{context}");
        assert!(std::fs::read(&a).unwrap() == std::fs::read(set.join("a.bin")).unwrap());
    } else {
        assert_eq!(r.status, 1, "{context}");
        assert!(
            r.stderr
                .contains("was replaced or removed during the download"),
            "no clear error: {context}"
        );
    }
}

/// Item 6: a .torrent of about 160 KB declaring 4 TiB (512 MiB pieces), started with a
/// peer that accepts the connection and never answers. btfs's memory stays small: the
/// import's state grows with verified data, not with declared sizes.
#[test]
fn a_tiny_torrent_declaring_terabytes_keeps_memory_small() {
    const MAX_HWM: u64 = 100 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let piece_length: u64 = 512 << 20;
    let length: u64 = 4 << 40;
    let pieces = (length / piece_length) as usize;
    let hashes = data(pieces * 20, 41);
    let mut t = format!(
        "d4:infod6:lengthi{length}e4:name8:huge.bin12:piece lengthi{piece_length}e6:pieces{}:",
        hashes.len()
    )
    .into_bytes();
    t.extend(&hashes);
    t.extend(b"ee");
    assert!(t.len() < 200_000);
    let torrent = tmp.path().join("huge.torrent");
    std::fs::write(&torrent, &t).unwrap();

    // A peer that accepts and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = silent.local_addr().unwrap();
    silent.set_nonblocking(true).unwrap();
    let out = tmp.path().join("out");
    let d = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &peer.to_string(),
            "--no-trackers",
            "--no-dht",
            "--listen-ip",
            "127.0.0.1",
        ],
    );
    let pid = d.pid();
    let mut held = Vec::new();
    let mut hwm = 0u64;
    // Until btfs dials the silent peer (it has set up its storage and the import by
    // then), and a few seconds more.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dialled_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if let Ok((sock, _)) = silent.accept() {
            held.push(sock);
            dialled_at.get_or_insert_with(Instant::now);
        }
        let Some((_, peak)) = memory(pid) else {
            break;
        };
        hwm = hwm.max(peak);
        if dialled_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = format!("VmHWM {} MiB", hwm / MIB);
    eprintln!("{report}");
    d.interrupt();
    let (status, lines) = d.finish(Duration::from_secs(30));
    assert!(
        dialled_at.is_some(),
        "btfs never dialled the peer ({report}); exit {status:?}: {lines:?}"
    );
    assert!(hwm < MAX_HWM, "btfs grew past 100 MiB: {report}");
    assert!(status.is_some(), "btfs did not stop on SIGINT");
    drop(held);
}

/// Finding 3: a torrent declaring more than the 4 TiB an import takes is refused before
/// anything is created: no file is made (and sized) in the output folder.
#[test]
fn a_torrent_too_large_to_import_creates_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let piece_length: u64 = 512 << 20;
    let length: u64 = 5 << 40;
    let hashes = data((length / piece_length) as usize * 20, 43);
    let mut t = format!(
        "d4:infod6:lengthi{length}e4:name8:huge.bin12:piece lengthi{piece_length}e6:pieces{}:",
        hashes.len()
    )
    .into_bytes();
    t.extend(&hashes);
    t.extend(b"ee");
    let torrent = tmp.path().join("huge.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Nothing listens on this port of loopback: the download never gets that far.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", tmp.path().join("repo"))
            .args(["--json", "bittorrent", "download", "-t", s(&torrent)])
            .args(["-o", s(&out), "--peer", &peer, "--no-trackers", "--no-dht"])
            .args(["--listen-ip", "127.0.0.1"]),
        Duration::from_secs(60),
    );
    assert_ne!(r.status, 0, "{}", r.stdout);
    assert!(r.stderr.contains("4 TiB"), "no clear error: {}", r.stderr);
    assert!(
        !out.join("huge.bin").exists(),
        "a refused torrent created its file"
    );
}

/// Connects from `src` to btfs at `to` and exchanges handshakes for `ih`; `Ok(Some)`
/// holds the open connection when btfs answered, `Ok(None)` when it closed it first.
async fn handshake_from(
    src: Ipv4Addr,
    to: SocketAddr,
    ih: InfoHash,
) -> std::io::Result<Option<tokio::net::TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((src, 0)))?;
    let mut s = sock.connect(to).await?;
    let hs = Handshake {
        reserved: our_reserved(),
        info_hash: ih,
        peer_id: *b"-HI0001-hostile-peer",
    };
    wire::write_handshake(&mut s, &hs).await?;
    match tokio::time::timeout(Duration::from_secs(10), Handshake::read(&mut s)).await {
        Ok(Ok(_)) => Ok(Some(s)),
        Ok(Err(_)) => Ok(None),
        Err(_) => Err(std::io::Error::other("btfs neither answered nor closed")),
    }
}

/// With `--max-connections-per-ip 1`, a second connection from an IP that already has
/// one is closed unanswered, while another IP is still answered.
fn assert_one_connection_per_ip(to: SocketAddr, ih: InfoHash, ip_base: u8) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let one = Ipv4Addr::new(127, 3, ip_base, 1);
        let other = Ipv4Addr::new(127, 3, ip_base, 2);
        // The first is answered once the torrent is registered (bounded retries).
        let mut first = None;
        for _ in 0..100 {
            first = handshake_from(one, to, ih).await.unwrap();
            if first.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            first.is_some(),
            "the first connection from {one} was refused"
        );
        let second = handshake_from(one, to, ih).await.unwrap();
        assert!(
            second.is_none(),
            "a second connection from {one} was answered"
        );
        let third = handshake_from(other, to, ih).await.unwrap();
        assert!(third.is_some(), "a connection from {other} was refused");
    });
}

/// Item 1: one IP cannot take every peer slot, for a download and for serve.
#[test]
fn one_connection_per_ip_for_downloads_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    write(&src.join("small.bin"), &data(200_000, 51));
    let torrent = tmp.path().join("small.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&src.join("small.bin")),
        "-o",
        s(&torrent),
    ])
    .ok();
    let ih = info_hash(&torrent);
    // A download that stays running: its only peer never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let _download = btfs_download(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&tmp.path().join("out")),
            "--peer",
            &silent.local_addr().unwrap().to_string(),
            "--no-trackers",
            "--no-dht",
            "--listen-ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--max-connections-per-ip",
            "1",
        ],
    );
    poll(
        Duration::from_secs(30),
        "the download did not listen",
        String::new,
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    assert_one_connection_per_ip(SocketAddr::from(([127, 0, 0, 1], port)), ih, 1);

    // serve: connections routed by infohash to each torrent's engine.
    let serve_port = free_port();
    let serve = Daemon::spawn(
        "btfs serve",
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", tmp.path().join("serve-repo"))
            .args([
                "--json",
                "bittorrent",
                "serve",
                s(&src.join("small.bin")),
                "--no-add",
                "--no-dht",
                "--listen-ip",
                "127.0.0.1",
                "--port",
                &serve_port.to_string(),
                "--max-connections-per-ip",
                "1",
            ]),
    );
    let line = serve.wait_for_line("InfoHash", Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let served = Metainfo::from_bytes(&std::fs::read(v["Torrent"].as_str().unwrap()).unwrap())
        .unwrap()
        .wire_info_hash();
    poll(
        Duration::from_secs(30),
        "serve did not listen",
        String::new,
        || std::net::TcpStream::connect(("127.0.0.1", serve_port)).ok(),
    );
    assert_one_connection_per_ip(SocketAddr::from(([127, 0, 0, 1], serve_port)), served, 2);
}

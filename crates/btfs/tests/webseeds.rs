//! Web seeds (BEP 19): downloads from nginx alone and together with a libtorrent
//! seeder, and from hostile HTTP servers written here (wrong bytes, no Range support,
//! stalls, redirect loops).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates a torrent of `input` with `webseed` and 32 KiB pieces.
fn torrent_with_webseed(input: &Path, out: &Path, webseed: &str) -> PathBuf {
    btfs(&[
        "bittorrent",
        "create",
        s(input),
        "-o",
        s(out),
        "--piece-length",
        "32KiB",
        "--webseed",
        webseed,
        "--force",
    ])
    .ok();
    out.to_owned()
}

fn run(repo: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let d = btfs_download(repo, args);
    let (status, lines) = d.finish(Duration::from_secs(120));
    (status, summary(&lines))
}

#[test]
fn single_and_multi_file_torrents_from_nginx_only() {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let dir = sample_dir(&www, "set");
    let single = www.join("one file.bin");
    write(&single, &data(1_000_003, 31));
    let nginx = Nginx::start(&www, None);
    // Multi-file: URL of the folder that holds the torrent's folder.
    let t = torrent_with_webseed(&dir, &tmp.path().join("set.torrent"), &nginx.url());
    let out = tmp.path().join("out");
    let (status, sum) = run(
        &tmp.path().join("r1"),
        &["-t", s(&t), "-o", s(&out), "--no-trackers"],
    );
    assert_eq!(status, Some(0), "{sum}");
    assert_same_tree(&dir, &out.join("set"));
    assert!(out.join("set/empty").is_file());
    assert_eq!(sum["WebSeedBytes"], sum["BytesWanted"], "{sum}");
    // Single file: the URL names the file itself; and a folder URL ending in '/'.
    for url in [format!("{}one%20file.bin", nginx.url()), nginx.url()] {
        let t = torrent_with_webseed(&single, &tmp.path().join("one.torrent"), &url);
        let out = tmp.path().join("out-single");
        let _ = std::fs::remove_dir_all(&out);
        let (status, sum) = run(
            &tmp.path().join("r2"),
            &["-t", s(&t), "-o", s(&out), "--no-trackers"],
        );
        assert_eq!(status, Some(0), "{url}: {sum}");
        assert_same_tree(&single, &out.join("one file.bin"));
    }
}

#[test]
fn web_seed_and_libtorrent_seeder_both_deliver() {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let file = www.join("big.bin");
    write(&file, &data(8_000_000, 32));
    // Both sources are slowed down so that both contribute.
    let nginx = Nginx::start(&www, Some("2m"));
    let t = torrent_with_webseed(&file, &tmp.path().join("big.torrent"), &nginx.url());
    let port = free_port();
    let _seeder = lt_seed_limited(&t, &www, port, 2_000_000);
    let out = tmp.path().join("out");
    let (status, sum) = run(
        &tmp.path().join("repo"),
        &[
            "-t",
            s(&t),
            "-o",
            s(&out),
            "--no-trackers",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ],
    );
    assert_eq!(status, Some(0), "{sum}");
    assert_same_tree(&file, &out.join("big.bin"));
    let from_web = sum["WebSeedBytes"].as_u64().unwrap();
    let total = sum["Downloaded"].as_u64().unwrap();
    assert!(from_web > 0, "the web seed delivered nothing: {sum}");
    assert!(total > from_web, "the peer delivered nothing: {sum}");
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Hostile {
    /// Serves ranges, with one byte changed in every answer.
    Corrupt,
    /// Ignores Range: always 200 with the whole file.
    NoRanges,
    /// Accepts and never answers.
    Stall,
    /// Redirects to itself.
    RedirectLoop,
}

/// What a hostile server saw, for failure messages.
type ServerLog = Arc<std::sync::Mutex<Vec<String>>>;

/// A hostile web seed for one file, on a thread with its own runtime.
fn hostile_server(
    kind: Hostile,
    content: Vec<u8>,
) -> (String, ServerLog, std::thread::JoinHandle<()>) {
    let log: ServerLog = Arc::default();
    let server_log = log.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/file.bin", listener.local_addr().unwrap());
    let content = Arc::new(content);
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // Serve for a bounded time, then stop.
            let _ = tokio::time::timeout(Duration::from_secs(90), async {
                while let Ok((mut sock, from)) = listener.accept().await {
                    let content = content.clone();
                    let log = server_log.clone();
                    log.lock().unwrap().push(format!("accepted {from}"));
                    tokio::spawn(async move {
                        // Read the whole request head.
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).to_string();
                        log.lock()
                            .unwrap()
                            .push(head.lines().find(|l| l.to_ascii_lowercase().starts_with("range")).unwrap_or("no range").to_owned());
                        let range = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_owned))
                            .and_then(|r| {
                                let (a, b) = r.trim().split_once('-')?;
                                Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                            });
                        let reply = match kind {
                            Hostile::Stall => {
                                tokio::time::sleep(Duration::from_secs(90)).await;
                                return;
                            }
                            Hostile::RedirectLoop => {
                                b"HTTP/1.1 302 Found\r\nLocation: /file.bin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                            }
                            Hostile::NoRanges => {
                                let mut r = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    content.len()
                                )
                                .into_bytes();
                                r.extend_from_slice(&content);
                                r
                            }
                            Hostile::Corrupt => {
                                let (a, b) = range.unwrap_or((0, content.len() - 1));
                                let mut body = content[a..=b.min(content.len() - 1)].to_vec();
                                body[0] ^= 0xff;
                                let mut r = format!(
                                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    a + body.len() - 1,
                                    content.len(),
                                    body.len()
                                )
                                .into_bytes();
                                r.extend_from_slice(&body);
                                r
                            }
                        };
                        let sent = sock.write_all(&reply).await;
                        log.lock().unwrap().push(format!("replied {} bytes: {sent:?}", reply.len()));
                        // Close gracefully: the client reads everything before EOF.
                        let _ = sock.shutdown().await;
                        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await;
                    });
                }
            })
            .await;
        });
    });
    (url, log, handle)
}

#[test]
fn hostile_web_seeds_with_an_honest_peer_still_give_correct_data() {
    for kind in [
        Hostile::Corrupt,
        Hostile::NoRanges,
        Hostile::Stall,
        Hostile::RedirectLoop,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("seed");
        let file = src.join("file.bin");
        let content = data(3_000_000, 33);
        write(&file, &content);
        let (url, _log, _server) = hostile_server(kind, content);
        let t = torrent_with_webseed(&file, &tmp.path().join("t.torrent"), &url);
        let port = free_port();
        let _seeder = lt_seed_limited(&t, &src, port, 3_000_000);
        let out = tmp.path().join("out");
        let (status, sum) = run(
            &tmp.path().join("repo"),
            &[
                "-t",
                s(&t),
                "-o",
                s(&out),
                "--no-trackers",
                "--peer",
                &format!("127.0.0.1:{port}"),
            ],
        );
        assert_eq!(status, Some(0), "{kind:?}: {sum}");
        assert_same_tree(&file, &out.join("file.bin"));
    }
}

#[test]
fn hostile_web_seed_alone_is_a_clear_error() {
    for (kind, expected) in [
        (Hostile::Corrupt, "failed the hash check"),
        (Hostile::NoRanges, "ignores Range"),
        (Hostile::RedirectLoop, "redirects too often"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file.bin");
        // Larger than one run, so that a server ignoring Range is asked for an offset.
        let content = data(5_000_000, 34);
        write(&file, &content);
        let (url, log, _server) = hostile_server(kind, content);
        let t = torrent_with_webseed(&file, &tmp.path().join("t.torrent"), &url);
        let out = tmp.path().join("out");
        let repo = tmp.path().join("repo");
        let args = [
            "--json",
            "bittorrent",
            "download",
            "-t",
            s(&t),
            "-o",
            s(&out),
            "--no-trackers",
        ];
        let r = std::panic::catch_unwind(|| {
            run_with_timeout(
                std::process::Command::new(env!("CARGO_BIN_EXE_btfs"))
                    .env("BTFS_PATH", &repo)
                    .args(args),
                Duration::from_secs(120),
            )
        })
        .unwrap_or_else(|e| {
            eprintln!("{kind:?} server saw: {:?}", log.lock().unwrap());
            std::panic::resume_unwind(e)
        });
        assert_eq!(r.status, 1, "{kind:?}: {}", r.stderr);
        let err: serde_json::Value =
            serde_json::from_str(r.stderr.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{kind:?}: {e}: {}", r.stderr));
        assert_eq!(err["Type"], "error", "{kind:?}: {err}");
        let msg = err["Message"].as_str().unwrap();
        assert!(
            msg.contains(expected) && msg.contains(&url),
            "{kind:?}: {msg}"
        );
    }
}

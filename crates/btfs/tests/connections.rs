//! The daemon's two listeners (gateway and API) under connections that say little or
//! nothing: half-sent request heads are closed after the header-read timeout, idle
//! keep-alive connections after the idle timeout, and no more than the cap are open at
//! once, while normal requests are still answered and quiet long streams are not cut.
//! The limits are shortened for the test through the daemon's environment.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The cap on open connections per listener in this test.
const CAP: usize = 64;
/// Descriptors the daemon may open besides its connections (blocks, repo files).
const SLACK: usize = 12;

struct Setup {
    daemon: Daemon,
    repo: std::path::PathBuf,
    api: u16,
    gateway: u16,
}

impl Setup {
    /// A daemon whose listeners have the test's cap and these timeouts (ms).
    fn start(root: &Path, header_ms: u64, idle_ms: u64) -> Setup {
        let repo = root.join("repo");
        let api = free_port();
        let gateway = std::iter::repeat_with(free_port)
            .find(|&p| p != api)
            .unwrap();
        let daemon = Daemon::spawn(
            "btfs daemon",
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .env_remove("BTFS_API_TOKEN")
                .env("BTFS_HTTP_MAX_CONNECTIONS", CAP.to_string())
                .env("BTFS_HTTP_HEADER_TIMEOUT_MS", header_ms.to_string())
                .env("BTFS_HTTP_IDLE_TIMEOUT_MS", idle_ms.to_string())
                .args([
                    "daemon",
                    "--api",
                    &format!("127.0.0.1:{api}"),
                    "--gateway",
                    &format!("127.0.0.1:{gateway}"),
                ]),
        );
        daemon.wait_for_line("daemon is ready", Duration::from_secs(30));
        Setup {
            daemon,
            repo,
            api,
            gateway,
        }
    }

    /// Open descriptors of the daemon.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon.pid()))
            .unwrap()
            .count()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.repo.join("api.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A normal request to the listener on `port` answers 200.
    fn answers(&self, port: u16) {
        let (st, body) = if port == self.api {
            let auth = format!("Authorization: Bearer {}", self.token());
            curl(
                &format!("http://127.0.0.1:{port}/api/v1/version"),
                "POST",
                &["-H", &auth],
            )
        } else {
            curl(&format!("http://127.0.0.1:{port}/"), "GET", &[])
        };
        assert_eq!(st, 200, "port {port}: {body}");
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.daemon.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{}", self.daemon.pid())).exists()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `n` connections to `port` that each send half a request head and stall.
fn stalled(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /btfs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect()
}

/// Whether the daemon closed `s` within `timeout` (end of stream or a reset); false if
/// it is still open then.
fn closed_by_peer(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or other bytes before the close.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Polls until the daemon holds at most `most` descriptors.
fn fds_back_to(setup: &Setup, most: usize) {
    poll(
        Duration::from_secs(30),
        "the daemon's descriptors did not go back down",
        || format!("{} open, at most {most} wanted", setup.fds()),
        || (setup.fds() <= most).then_some(()),
    );
}

#[test]
fn stalled_idle_and_excess_connections_are_bounded_on_both_listeners() {
    let t = tempfile::tempdir().unwrap();
    let setup = Setup::start(t.path(), 2000, 3000);
    setup.answers(setup.gateway);
    setup.answers(setup.api);
    let base = setup.fds();

    for port in [setup.gateway, setup.api] {
        // Half-sent heads, fewer than the cap: the listener still answers meanwhile,
        // and each is closed by the header-read timeout.
        let mut socks = stalled(port, CAP / 2);
        setup.answers(port);
        for s in &mut socks {
            assert!(
                closed_by_peer(s, Duration::from_secs(30)),
                "port {port}: a stalled connection is still open after 30 s"
            );
        }
        drop(socks);
        fds_back_to(&setup, base + SLACK);

        // A keep-alive connection that goes quiet after one request is closed too.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 "), "{first:?}");
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(30)),
            "port {port}: an idle keep-alive connection is still open after 30 s"
        );
    }

    // More stalled connections than the cap: the daemon never holds more than the cap
    // (the rest wait in the backlog), and every one is closed in turn.
    let mut socks = stalled(setup.gateway, CAP * 2 + 20);
    let mut most = 0;
    let mut open = socks.len();
    let deadline = Instant::now() + Duration::from_secs(90);
    for s in &mut socks {
        s.set_nonblocking(true).unwrap();
    }
    let mut done = vec![false; socks.len()];
    while open > 0 {
        assert!(
            Instant::now() < deadline,
            "{open} stalled connections still open after 90 s"
        );
        most = most.max(setup.fds());
        for (s, d) in socks.iter_mut().zip(done.iter_mut()) {
            if *d {
                continue;
            }
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => *d = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *d = true,
            }
        }
        open = done.iter().filter(|d| !**d).count();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most <= base + CAP + SLACK,
        "the daemon held {most} descriptors (base {base}, cap {CAP})"
    );
    drop(socks);
    fds_back_to(&setup, base + SLACK);
    setup.answers(setup.gateway);
}

/// The idle timeout alone (the header-read timeout is longer than the test's waits): an
/// idle connection is closed, while a stream with nothing to say for longer than the
/// idle timeout (a job looking for its metadata) stays open and ends with its job.
#[test]
fn idle_connections_are_closed_but_a_quiet_stream_is_not() {
    let t = tempfile::tempdir().unwrap();
    let setup = Setup::start(t.path(), 600_000, 2000);
    for port in [setup.gateway, setup.api] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(30)),
            "port {port}: an idle connection is still open after 30 s"
        );
        let mut s = stalled(port, 1).pop().unwrap();
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(30)),
            "port {port}: a stalled connection is still open after 30 s"
        );
    }
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=quiet&tr=udp%3A%2F%2F{}",
        "4d".repeat(20),
        silent.local_addr().unwrap()
    );
    let auth = format!("Authorization: Bearer {}", setup.token());
    let url = format!(
        "http://127.0.0.1:{}/api/v1/bittorrent/download?arg={}",
        setup.api,
        magnet
            .replace('?', "%3F")
            .replace('&', "%26")
            .replace('=', "%3D")
            .replace(':', "%3A")
    );
    let stream = std::thread::spawn(move || curl(&url, "POST", &["-H", &auth]));
    let list = |setup: &Setup| {
        let auth = format!("Authorization: Bearer {}", setup.token());
        let (_, body) = curl(
            &format!("http://127.0.0.1:{}/api/v1/bittorrent/jobs/ls", setup.api),
            "POST",
            &["-H", &auth],
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["Jobs"].clone()
    };
    let id = poll(
        Duration::from_secs(30),
        "the job did not look for its metadata",
        || list(&setup).to_string(),
        || {
            let jobs = list(&setup);
            let j = jobs.as_array()?.first()?.clone();
            (j["State"] == "metadata").then(|| j["Id"].as_str().unwrap().to_string())
        },
    );
    // Four times the idle timeout.
    std::thread::sleep(Duration::from_secs(8));
    assert!(!stream.is_finished(), "the quiet stream was cut");
    let auth = format!("Authorization: Bearer {}", setup.token());
    let (st, body) = curl(
        &format!(
            "http://127.0.0.1:{}/api/v1/bittorrent/jobs/cancel?arg={id}",
            setup.api
        ),
        "POST",
        &["-H", &auth],
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = stream.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let end = ndjson(&body).pop().unwrap();
    assert_eq!(end["Type"], "end", "{body}");
    assert_eq!(end["Job"]["State"], "cancelled", "{body}");
}

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
    /// What the daemon printed (standard output and error) up to "daemon is ready".
    early: Vec<String>,
}

impl Setup {
    /// A daemon whose listeners have the test's cap and these timeouts (ms).
    fn start(root: &Path, header_ms: u64, idle_ms: u64) -> Setup {
        Setup::start_with(
            root,
            &[
                ("BTFS_HTTP_MAX_CONNECTIONS", CAP.to_string()),
                ("BTFS_HTTP_HEADER_TIMEOUT_MS", header_ms.to_string()),
                ("BTFS_HTTP_IDLE_TIMEOUT_MS", idle_ms.to_string()),
            ],
            None,
        )
    }

    /// A daemon with this environment, started under `ulimit ULIMIT` when given (by a
    /// shell that `exec`s it, so the PID is the daemon's); its standard error is read
    /// with its output.
    fn start_with(root: &Path, env: &[(&str, String)], ulimit: Option<&str>) -> Setup {
        let repo = root.join("repo");
        let api = free_port();
        let gateway = std::iter::repeat_with(free_port)
            .find(|&p| p != api)
            .unwrap();
        let script = format!(
            "{}exec \"$0\" \"$@\" 2>&1",
            ulimit.map_or(String::new(), |u| format!("ulimit {u} && "))
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, env!("CARGO_BIN_EXE_btfs")])
            .env("BTFS_PATH", &repo)
            .env_remove("BTFS_API_TOKEN")
            .args([
                "daemon",
                "--api",
                &format!("127.0.0.1:{api}"),
                "--gateway",
                &format!("127.0.0.1:{gateway}"),
            ]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let daemon = Daemon::spawn("btfs daemon", &mut cmd);
        let early = std::cell::RefCell::new(Vec::new());
        daemon.wait_for("daemon is ready", Duration::from_secs(30), |l| {
            early.borrow_mut().push(l.to_string());
            l.contains("daemon is ready")
        });
        Setup {
            daemon,
            repo,
            api,
            gateway,
            early: early.into_inner(),
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
        // Until it has ended (a zombie until `Daemon` reaps it), bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = || {
            std::fs::read_to_string(format!("/proc/{}/stat", self.daemon.pid()))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        };
        while running() && Instant::now() < deadline {
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

        // A keep-alive connection that goes quiet after one request is closed too (here
        // by the header-read timeout, the shorter; the idle guard alone is the next
        // test's).
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

/// The daemon's socket of the connection from `client_port` to `server_port`, as
/// `/proc/net/tcp` lists it: its state (`01` is ESTABLISHED), if it is still there.
fn server_socket_state(server_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (port(f.get(1)?)? == server_port && port(f.get(2)?)? == client_port)
            .then(|| f[3].to_string())
    })
}

/// A client that asks for a large file and reads nothing: once the kernel's buffers are
/// full, the response cannot move, and the daemon closes the connection after the
/// write-stall timeout (the idle and header timeouts are far longer, and a request is in
/// flight anyway). A client that reads gets the whole file.
#[test]
fn a_client_that_stops_reading_is_cut_after_the_write_stall_timeout() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let file = t.path().join("big.bin");
    let size = 16usize << 20;
    write(&file, &data(size, 91));
    let added = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &repo)
            .args(["add", "-Q", s(&file)]),
        Duration::from_secs(120),
    )
    .ok();
    let cid = added.stdout.trim().to_string();
    let setup = Setup::start_with(
        t.path(),
        &[
            ("BTFS_HTTP_HEADER_TIMEOUT_MS", "600000".into()),
            ("BTFS_HTTP_IDLE_TIMEOUT_MS", "600000".into()),
            ("BTFS_HTTP_WRITE_STALL_TIMEOUT_MS", "2000".into()),
        ],
        None,
    );
    let (st, body) = curl(
        &format!("http://127.0.0.1:{}/btfs/{cid}", setup.gateway),
        "GET",
        &["-o", "/dev/null", "-w", "%{size_download}\n%{http_code}"],
    );
    assert_eq!(st, 200, "a reading client: {body}");
    assert_eq!(
        body.trim(),
        size.to_string(),
        "a reading client got all of it"
    );

    let mut sock = TcpStream::connect(("127.0.0.1", setup.gateway)).unwrap();
    sock.write_all(format!("GET /btfs/{cid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let client_port = sock.local_addr().unwrap().port();
    poll(
        Duration::from_secs(30),
        "the daemon did not close a connection whose client reads nothing",
        || format!("{:?}", server_socket_state(setup.gateway, client_port)),
        || (server_socket_state(setup.gateway, client_port).as_deref() != Some("01")).then_some(()),
    );
    // What was in the buffers, then the end: never the whole file.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &got[..got.len().min(100)]
    );
    assert!(
        got.len() < size,
        "the whole file ({} bytes) came through",
        got.len()
    );
    setup.answers(setup.gateway);
}

/// A request head of more than 64 KiB is refused with 431 on both listeners (hyper's
/// default buffer would take about 400 KiB).
#[test]
fn request_heads_over_64_kib_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let setup = Setup::start(t.path(), 20_000, 60_000);
    for port in [setup.gateway, setup.api] {
        for (len, status) in [(16usize << 10, None), (70 << 10, Some("431"))] {
            let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let head = format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(len)
            );
            let _ = sock.write_all(head.as_bytes());
            let mut got = Vec::new();
            let _ = sock.read_to_end(&mut got);
            let line = String::from_utf8_lossy(&got[..got.len().min(12)]).into_owned();
            match status {
                Some(st) => assert_eq!(line, format!("HTTP/1.1 {st}"), "port {port}, {len} bytes"),
                None => assert!(
                    line.starts_with("HTTP/1.1 ") && !line.contains("431"),
                    "port {port}, {len} bytes: {line:?}"
                ),
            }
        }
    }
}

/// The caps follow the descriptor limit. A soft limit below the hard one is raised to
/// it. With a low hard limit (400), each listener's cap is small (18): more stalled
/// connections than that on the gateway leave the daemon holding no more than its cap
/// of them (the others wait in the backlog), and the API answers meanwhile. Sized for
/// 1024 connections, the gateway alone could take every descriptor the daemon has.
#[test]
fn the_descriptor_limit_is_raised_and_bounds_the_caps() {
    let t = tempfile::tempdir().unwrap();
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap();
    let setup = Setup::start_with(&t.path().join("a"), &[], Some("-Sn 300"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", setup.daemon.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().nth(3).unwrap(),
        hard,
        "the soft limit was not raised to the hard one: {line}"
    );
    drop(setup);

    let limit = 400usize;
    let setup = Setup::start_with(
        &t.path().join("b"),
        &[
            ("BTFS_HTTP_HEADER_TIMEOUT_MS", "600000".into()),
            ("BTFS_HTTP_IDLE_TIMEOUT_MS", "600000".into()),
        ],
        Some(&format!("-n {limit}")),
    );
    let cap = (limit - 256) / 8;
    assert!(
        setup
            .early
            .iter()
            .any(|l| l.contains(&format!("at most {cap} connections"))),
        "{:?}",
        setup.early
    );
    let base = setup.fds();
    // Within the listen backlog (128), so every connect completes.
    let socks = stalled(setup.gateway, cap + 60);
    // Until the gateway has taken (about: `base` may have held a passing descriptor)
    // its cap of them.
    poll(
        Duration::from_secs(30),
        "the gateway did not take its cap of connections",
        || format!("{} descriptors, base {base}", setup.fds()),
        || (setup.fds() + 4 >= base + cap).then_some(()),
    );
    let auth = format!("Authorization: Bearer {}", setup.token());
    let (st, body) = curl(
        &format!("http://127.0.0.1:{}/api/v1/version", setup.api),
        "POST",
        &["-H", &auth, "--max-time", "20"],
    );
    assert_eq!(st, 200, "the API with the gateway full: {body}");
    assert!(
        setup.fds() <= base + cap + SLACK,
        "the daemon holds {} descriptors (base {base}, cap {cap})",
        setup.fds()
    );
    drop(socks);
}

//! Helpers shared by the integration tests: running `btfs` and third-party tools with
//! bounded time, and deterministic test data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.status, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs a command, killing it (by PID) if it outlives `timeout`. Its output is read
/// while it runs, so a command printing more than a pipe holds cannot block. A timeout
/// is returned as status -2 with a note on stderr, so callers can add their own story.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -2;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let mut stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if status == -2 {
        stderr += &format!("\n(killed: still running after {timeout:?})\n");
    }
    Run {
        status,
        stdout,
        stderr,
    }
}

/// [`run_bounded`], failing the test when the command outlives `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let r = run_bounded(cmd, timeout);
    if r.status == -2 {
        panic!(
            "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
    }
    r
}

pub fn btfs(args: &[&str]) -> Run {
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs")).args(args),
        Duration::from_secs(120),
    );
    assert!(
        !r.stderr.contains("panicked"),
        "btfs panicked on {args:?}:\n{}",
        r.stderr
    );
    r
}

/// The path of a required third-party tool. A missing tool fails the test: the test
/// command (scripts/test) installs every tool, so absence is an install bug.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool {name:?} is not installed; run scripts/test, which installs it");
}

/// Runs tests/tools/lt.py with Debian's python3-libtorrent.
pub fn lt(args: &[&str]) -> Run {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 is missing; run scripts/test"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let r = run_with_timeout(
        Command::new(python).arg(script).args(args),
        Duration::from_secs(120),
    );
    assert!(
        !r.stderr.contains("No module named 'libtorrent'"),
        "python3-libtorrent is not installed; run scripts/test"
    );
    r.ok()
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A folder `root/name` with nested files, an empty file, and sizes that make pieces
/// span file boundaries.
pub fn sample_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    write(&d.join("a.bin"), &data(100_000, 1));
    write(&d.join("sub/b.txt"), b"hello\n");
    write(&d.join("sub/deeper/c.bin"), &data(70_001, 2));
    write(&d.join("empty"), b"");
    write(&d.join("z.bin"), &data(33_333, 3));
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A background process that is killed (by PID) when dropped.
pub struct Daemon {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub name: String,
}

/// A process stopped by [`Daemon::pause`]; dropping this continues it.
pub struct Paused {
    pid: libc::pid_t,
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `Daemon::pause`.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    /// Waits for a line of output containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("{} did not print {needle:?} within {timeout:?}", self.name),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (SIGSTOP) until the returned guard is dropped (SIGCONT): its
    /// sockets stay open, and it sends nothing meanwhile.
    pub fn pause(&self) -> Paused {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals a child of ours by its PID; it is not reaped while `self` lives.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        Paused { pid }
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`; a process that
    /// exits first, or a timeout, fails the test with what the process printed.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) {
        if let Err(why) = self.try_listening(port, timeout, None) {
            panic!("{why}");
        }
    }

    /// [`Daemon::wait_listening`] that also gives up when the process prints a line
    /// containing `refused` (such as a failed bind), and returns why instead of failing.
    pub fn try_listening(
        &mut self,
        port: u16,
        timeout: Duration,
        refused: Option<&str>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut printed = Vec::new();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            printed.extend(self.lines.try_iter());
            let exited = self.child.try_wait().ok().flatten();
            let gave_up = refused.is_some_and(|r| printed.iter().any(|l| l.contains(r)));
            if exited.is_some() || gave_up || Instant::now() >= deadline {
                std::thread::sleep(Duration::from_millis(200));
                printed.extend(self.lines.try_iter());
                return Err(format!(
                    "{} is not listening on port {port} ({}); it printed:\n{}",
                    self.name,
                    exited.map_or(format!("not within {timeout:?}"), |s| format!(
                        "exited: {s}"
                    )),
                    printed.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for TCP and UDP on 127.0.0.1");
}

/// opentracker on 127.0.0.1 (HTTP and UDP on one port) with a whitelist of hashes.
pub struct Tracker {
    pub daemon: Daemon,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Tracker {
    pub fn start(whitelist: &[String]) -> Tracker {
        let bin = tool("opentracker");
        let dir = tempfile::tempdir().unwrap();
        // The Debian build only serves whitelisted hashes; the path is inside -d.
        std::fs::write(
            dir.path().join("whitelist.txt"),
            whitelist.join("\n") + "\n",
        )
        .unwrap();
        let conf = dir.path().join("opentracker.conf");
        std::fs::write(&conf, "access.whitelist /whitelist.txt\n").unwrap();
        let port = free_port();
        let p = port.to_string();
        let daemon = Daemon::spawn(
            "opentracker",
            Command::new(bin).args([
                "-f",
                s(&conf),
                "-i",
                "127.0.0.1",
                "-p",
                &p,
                "-P",
                &p,
                "-d",
                s(dir.path()),
                "-A",
                "127.0.0.1",
            ]),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "opentracker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tracker {
            daemon,
            port,
            _dir: dir,
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    pub fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}", self.port)
    }
}

/// libtorrent seeding `torrent` from `save_path` on 127.0.0.1:`port`; returns once it
/// seeds and has announced.
pub fn lt_seed(torrent: &Path, save_path: &Path, port: u16) -> Daemon {
    lt_seed_limited(torrent, save_path, port, 0)
}

/// libtorrent seeding with an upload rate limit (bytes/s, 0 for none), so a download
/// takes a while.
pub fn lt_seed_limited(torrent: &Path, save_path: &Path, port: u16, rate: u64) -> Daemon {
    lt_seed_on("127.0.0.1", torrent, save_path, port, rate)
}

/// libtorrent seeding listening on `host` only ("127.0.0.1", or "[::1]" for IPv6), with
/// an upload rate limit (0 for none); returns once it seeds.
pub fn lt_seed_on(host: &str, torrent: &Path, save_path: &Path, port: u16, rate: u64) -> Daemon {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let d = Daemon::spawn(
        "libtorrent seeder",
        Command::new("/usr/bin/python3")
            .args([
                s(&script),
                "seed",
                s(torrent),
                s(save_path),
                &port.to_string(),
                &rate.to_string(),
            ])
            .env("LT_LISTEN", host),
    );
    d.wait_for_line("seeding", Duration::from_secs(60));
    d
}

/// libtorrent downloading (`lt.py leech`, or `magnet` when `what` is a magnet link)
/// into `save_path`, listening on `host`:`port` only and dialling `peer` ("-" for
/// none: then the peers come from the magnet's x.pe). Prints "done" when complete.
pub fn lt_leech_on(host: &str, what: &str, save_path: &Path, port: u16, peer: &str) -> Daemon {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py");
    let cmd = if what.starts_with("magnet:") {
        "magnet"
    } else {
        "leech"
    };
    Daemon::spawn(
        "libtorrent leecher",
        Command::new("/usr/bin/python3")
            .args([
                s(&script),
                cmd,
                what,
                s(save_path),
                &port.to_string(),
                peer,
                "90",
            ])
            .env("LT_LISTEN", host),
    )
}

/// A TCP port free on ::1.
pub fn free_port_v6() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Files of `a` and `b` (two folders, or two files) are byte for byte equal.
pub fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_file() {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap_or_default(),
            "{} differs from {}",
            b.display(),
            a.display()
        );
        return;
    }
    for entry in std::fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        assert_same_tree(&entry.path(), &b.join(entry.file_name()));
    }
}

impl Daemon {
    /// Waits for a line for which `f` returns true.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if f(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("{} did not print {what} within {timeout:?}", self.name),
            }
        }
    }

    /// Remaining output lines, waiting for the process to end (bounded).
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break Some(st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
        (status, lines)
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }
}

/// `btfs bittorrent download …` as a background process, with its own BTFS_PATH.
pub fn btfs_download(repo: &Path, args: &[&str]) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo)
        .args(["--json", "bittorrent", "download"])
        .args(args);
    Daemon::spawn("btfs download", &mut cmd)
}

/// The summary line of a finished `btfs --json bittorrent download`.
pub fn summary(lines: &[String]) -> serde_json::Value {
    lines
        .iter()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["Type"] == "summary")
        })
        .unwrap_or_else(|| panic!("no summary line in {lines:?}"))
}

/// nginx serving `root` on 127.0.0.1 (it honours Range), optionally rate-limited
/// (`limit_rate`, e.g. "2m"). One process (no master and workers), so killing it by PID
/// leaves nothing behind.
pub struct Nginx {
    pub daemon: Daemon,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(root: &Path, limit_rate: Option<&str>) -> Nginx {
        let bin = tool("nginx");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let limit = limit_rate.map_or(String::new(), |r| format!("limit_rate {r};"));
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; {limit} }}\n}}\n",
            root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut daemon = Daemon::spawn(
            "nginx",
            Command::new(bin).args(["-c", s(&conf_path), "-p", s(dir.path())]),
        );
        daemon.wait_listening(port, Duration::from_secs(10));
        Nginx {
            daemon,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// aria2 seeding `torrent` from `dir` (it checks the files first) on a free port, which
/// it returns with the process once it accepts connections. Its trackers, if any, are
/// announced to; DHT, LPD and PEX off. A port taken between [`free_port`] and aria2's
/// bind (tests run in parallel) is retried with another.
pub fn aria2_seed(torrent: &Path, dir: &Path) -> (Daemon, u16) {
    let mut why = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut d = Daemon::spawn(
            "aria2 seeder",
            Command::new(tool("aria2c")).args([
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--file-allocation=none",
                "--seed-ratio=0.0",
                "--check-integrity=true",
                "--console-log-level=warn",
                "--summary-interval=0",
                &format!("--listen-port={port}"),
                &format!("--dir={}", s(dir)),
                s(torrent),
            ]),
        );
        match d.try_listening(port, Duration::from_secs(60), Some("failed to bind")) {
            Ok(()) => return (d, port),
            Err(e) => why = e,
        }
    }
    panic!("{why}");
}

/// A multi-file torrent of [`sample_dir`] (`root/seed/set`) (odd last piece, empty file, nested
/// folders) with 16 KiB pieces, optionally announcing to `tracker`.
pub fn sample_torrent(root: &Path, tracker: Option<&str>) -> (PathBuf, PathBuf) {
    let data = sample_dir(&root.join("seed"), "set");
    let torrent = root.join("set.torrent");
    let mut args = vec![
        "bittorrent",
        "create",
        s(&data),
        "-o",
        s(&torrent),
        "--piece-length",
        "16KiB",
        "--force",
    ];
    if let Some(t) = tracker {
        args.extend(["--tracker", t]);
    }
    btfs(&args).ok();
    (data, torrent)
}

/// Polls `f` every 200 ms until it returns `Some`, panicking with `what` (and the
/// diagnostics from `log`) after `timeout`.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    log: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what} within {timeout:?}\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// qbittorrent-nox with a profile in a tempdir: peers and WebUI on 127.0.0.1 only, no
/// DHT, LSD or PeX.
pub struct Qbittorrent {
    pub daemon: Daemon,
    pub api: String,
    pub peer_port: u16,
    pub profile: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Qbittorrent {
    pub fn start() -> Qbittorrent {
        let bin = tool("qbittorrent-nox");
        tool("curl");
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let (peer_port, webui_port) = (free_port(), free_port());
        write(
            &profile.join("qBittorrent/config/qBittorrent.conf"),
            format!(
                "[LegalNotice]\n\
                 Accepted=true\n\
                 \n\
                 [BitTorrent]\n\
                 Session\\DHTEnabled=false\n\
                 Session\\LSDEnabled=false\n\
                 Session\\PeXEnabled=false\n\
                 Session\\Port={peer_port}\n\
                 Session\\Interface=lo\n\
                 Session\\InterfaceName=lo\n\
                 Session\\InterfaceAddress=127.0.0.1\n\
                 Session\\MultiConnectionsPerIp=true\n\
                 Session\\DefaultSavePath={downloads}\n\
                 \n\
                 [Preferences]\n\
                 Connection\\UPnP=false\n\
                 General\\Locale=en\n\
                 WebUI\\Address=127.0.0.1\n\
                 WebUI\\Port={webui_port}\n\
                 WebUI\\LocalHostAuth=false\n\
                 WebUI\\CSRFProtection=false\n",
                downloads = s(&dir.path().join("downloads")),
            )
            .as_bytes(),
        );
        let daemon = Daemon::spawn(
            "qbittorrent-nox",
            Command::new(bin)
                .arg(format!("--profile={}", s(&profile)))
                .arg(format!("--webui-port={webui_port}")),
        );
        let q = Qbittorrent {
            daemon,
            api: format!("http://127.0.0.1:{webui_port}/api/v2"),
            peer_port,
            profile,
            _dir: dir,
        };
        poll(
            Duration::from_secs(60),
            "the qbittorrent-nox WebUI did not answer",
            || q.diagnostics(None),
            || {
                let r = q.curl(&[&format!("{}/app/version", q.api)]);
                (r.status == 0 && r.stdout.starts_with('v')).then_some(())
            },
        );
        q
    }

    pub fn curl(&self, args: &[&str]) -> Run {
        run_with_timeout(
            Command::new(tool("curl"))
                .args(["-sS", "--fail", "--max-time", "10"])
                .args(args),
            Duration::from_secs(20),
        )
    }

    /// The torrent as `GET /torrents/info` shows it.
    pub fn info(&self, hash: &str) -> Option<serde_json::Value> {
        let r = self.curl(&[&format!("{}/torrents/info?hashes={hash}", self.api)]);
        if r.status != 0 {
            return None;
        }
        let list: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        list.as_array()?.first().cloned()
    }

    pub fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// The torrent's state and trackers as the WebUI reports them, and the log's tail.
    pub fn diagnostics(&self, hash: Option<&str>) -> String {
        let mut out = format!("qbittorrent-nox (pid {})\n", self.daemon.pid());
        if let Some(h) = hash {
            for q in [
                format!("torrents/info?hashes={h}"),
                format!("torrents/trackers?hash={h}"),
            ] {
                let r = self.curl(&[&format!("{}/{q}", self.api)]);
                out += &format!("GET {q}: {}{}\n", r.stdout, r.stderr);
            }
        }
        out + "log:\n"
            + &tail(
                &self.profile.join("qBittorrent/data/logs/qbittorrent.log"),
                60,
            )
    }
}

/// The last `n` lines of a log file, or a note that it is missing.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Seeders a tracker reports for `hash` (through `btfs bittorrent scrape`), or None when
/// the scrape fails.
pub fn seeders(url: &str, hash: &str) -> Option<u64> {
    let r = btfs(&[
        "--json",
        "bittorrent",
        "scrape",
        "-t",
        url,
        "-i",
        hash,
        "--timeout",
        "5s",
    ]);
    if r.status != 0 {
        return None;
    }
    r.json()[0]["Seeders"].as_u64()
}

/// `btfs daemon` with a repo of its own, its API and gateway on free ports of 127.0.0.1.
/// Dropping it sends SIGTERM (so it stops its jobs cleanly), waits a bounded time, then
/// kills it by PID.
pub struct Node {
    pub daemon: Option<Daemon>,
    pub repo: PathBuf,
    pub api: u16,
    pub gateway: u16,
}

impl Node {
    pub fn start(repo: &Path, extra: &[&str]) -> Node {
        let api = free_port();
        let gateway = std::iter::repeat_with(free_port)
            .find(|&p| p != api)
            .unwrap();
        let mut node = Node {
            daemon: None,
            repo: repo.to_path_buf(),
            api,
            gateway,
        };
        node.restart(extra);
        node
    }

    /// Starts the daemon again on the same ports (after [`Node::stop`]).
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.daemon.is_none(), "the daemon is running");
        let d = Daemon::spawn(
            "btfs daemon",
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &self.repo)
                .env_remove("BTFS_API_TOKEN")
                .args([
                    "daemon",
                    "--api",
                    &format!("127.0.0.1:{}", self.api),
                    "--gateway",
                    &format!("127.0.0.1:{}", self.gateway),
                ])
                .args(extra),
        );
        d.wait_for_line("daemon is ready", Duration::from_secs(30));
        self.daemon = Some(d);
    }

    /// SIGTERM, and the exit status once it has stopped (bounded).
    pub fn stop(&mut self) -> Option<i32> {
        let d = self.daemon.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &d.pid().to_string()])
            .status();
        d.finish(Duration::from_secs(40)).0
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    /// `btfs ARGS` with this node's repo (so it goes through the daemon while it runs).
    pub fn btfs(&self, args: &[&str]) -> Run {
        let r = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &self.repo)
                .env_remove("BTFS_API_TOKEN")
                .args(args),
            Duration::from_secs(120),
        );
        assert!(
            !r.stderr.contains("panicked"),
            "btfs panicked on {args:?}:\n{}",
            r.stderr
        );
        r
    }

    /// The API token the running daemon wrote to its repo.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.repo.join("api.token"))
            .expect("the daemon writes api.token")
            .trim()
            .to_string()
    }

    /// `POST /api/v1/PATH` (with its query) by curl with the daemon's token, with more
    /// curl arguments (headers, `-F` parts): the status and the body.
    pub fn post(&self, path: &str, curl_args: &[&str]) -> (u16, String) {
        self.request("POST", path, curl_args)
    }

    /// Any method on `/api/v1/PATH`, with the daemon's token.
    pub fn request(&self, method: &str, path: &str, curl_args: &[&str]) -> (u16, String) {
        let auth = format!("Authorization: Bearer {}", self.token());
        let mut args = vec!["-H", auth.as_str()];
        args.extend_from_slice(curl_args);
        curl(&format!("{}/api/v1/{path}", self.base()), method, &args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP request by curl: the status and the body.
pub fn curl(url: &str, method: &str, args: &[&str]) -> (u16, String) {
    let r = run_with_timeout(
        Command::new(tool("curl"))
            .args([
                "-s",
                "-S",
                "--max-time",
                "60",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .arg(url),
        Duration::from_secs(90),
    );
    let (body, status) = r
        .stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl {url}: no status\n{}{}", r.stdout, r.stderr));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// The JSON objects of a newline-delimited JSON body.
pub fn ndjson(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Whether this run's repos copy downloads into blocks (`scripts/test` runs the import
/// tests a second time with the `copy-import` profile) rather than keeping the files as
/// the store's copy (the filestore, the default).
pub fn copy_import() -> bool {
    std::env::var("BTFS_PROFILE").is_ok_and(|p| p.split(',').any(|n| n.trim() == "copy-import"))
}

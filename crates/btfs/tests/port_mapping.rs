//! Port mapping against a real home router: Debian's miniupnpd (miniupnpd-iptables) in
//! network namespaces this test makes — `inside` (btfs) ── `router` (NAT, miniupnpd
//! answering UPnP IGD and/or NAT-PMP/PCP on its LAN side) ── `outside` (libtorrent, and a
//! small STUN server that lets miniupnpd forward although its WAN address is private;
//! see ../shared/INTEROP.md). btfs runs inside with a repo made as the suite makes them
//! (`BTFS_PROFILE=test`: no port mapping) and then set up by `btfs config` as a user
//! behind a home router would (`Bittorrent.PortMapping` true, listening on 0.0.0.0);
//! `btfs bittorrent serve` maps its ports; the test
//! reads the mappings from miniupnpd's iptables chain, libtorrent downloads from outside
//! through the router's WAN address and the mapped port (both from serve's port-mapping
//! event: the router's WAN address is private, as behind a double NAT, so the magnet must
//! not carry it), and after btfs exits on SIGINT the mappings are gone. One run per
//! method: UPnP only; NAT-PMP only, asked by PCP and (PCP turned off) by NAT-PMP. The
//! router caps PCP leases at [`PCP_MAX_LIFETIME`] s, so the PCP run sees a short lease
//! renewed before it runs out. And the other way: with the test profile as it is, or
//! with `--no-port-mapping`, serve and download send nothing to the gateway's UPnP
//! (SSDP, UDP 1900) or NAT-PMP/PCP (UDP 5351) ports (counted by iptables in the inside
//! namespace; the same counters see the requests once the config turns mapping on).
//!
//! Needs root (as the suite runs). Every address lives on veths inside the test's own
//! namespaces, named with the test's PID; a Drop guard kills what it started (by PID) and
//! deletes the namespaces, even on panic. Every child gets SIGKILL when the test's thread
//! dies (PR_SET_PDEATHSIG), even by SIGKILL; namespaces a killed run left behind (their
//! PID gone) are deleted when the next run starts.

mod common;

use common::{data, tool, Daemon, Run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one setup command may take.
const CMD: Duration = Duration::from_secs(30);
/// How long miniupnpd, the STUN server and serve may take to get ready.
const READY: Duration = Duration::from_secs(30);
/// How long libtorrent may take to download through the router.
const DOWNLOAD: Duration = Duration::from_secs(120);
/// How long serve may take to exit after SIGINT (mappings removed first).
const STOP: Duration = Duration::from_secs(40);

const WAN_IP: &str = "10.200.2.1";
const INSIDE_IP: &str = "10.200.1.2";
const OUTSIDE_IP: &str = "10.200.2.2";
/// miniupnpd's cap on PCP lifetimes (its `max_lifetime`), far below btfs's MIN_RENEW.
const PCP_MAX_LIFETIME: u64 = 20;
/// How long a renewal of a PCP lease may take to show.
const RENEWAL: Duration = Duration::from_secs(PCP_MAX_LIFETIME * 3);

/// `cmd`'s process gets SIGKILL when the thread that started it dies, so a test binary
/// that is killed leaves no miniupnpd, STUN server, btfs or libtorrent behind.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test is gone"));
            }
            Ok(())
        })
    };
    cmd
}

/// Deletes `btpm<PID>…` namespaces of test runs whose process is gone.
fn remove_leftovers() {
    let list = run(&["ip", "netns", "list"]).stdout;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("btpm") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("deleting {name}, left by process {pid}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

fn run(args: &[&str]) -> Run {
    let r = common::run_with_timeout(Command::new(args[0]).args(&args[1..]), CMD);
    assert_eq!(
        r.status, 0,
        "{args:?} failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r
}

/// `btfs ARGS` on the repo at `repo`, outside the namespaces (config only); must succeed.
fn btfs_at(repo: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo).args(args);
    let r = common::run_with_timeout(&mut cmd, CMD);
    assert_eq!(r.status, 0, "btfs {args:?} failed\n{}", r.stderr);
    r
}

/// The repo at `repo` is made on first use with the suite's `test` profile (port mapping
/// off), then turned into one for a LAN behind a home router with `btfs config`: port
/// mapping on, listening on 0.0.0.0 at `port`.
fn mapping_repo(repo: &Path, port: u16) {
    assert_eq!(
        std::env::var("BTFS_PROFILE").as_deref(),
        Ok("test"),
        "the suite runs with BTFS_PROFILE=test (.cargo/config.toml)"
    );
    let mapping = btfs_at(repo, &["config", "Bittorrent.PortMapping"]);
    assert_eq!(
        mapping.stdout.trim(),
        "false",
        "the test profile maps nothing"
    );
    let port = port.to_string();
    for (key, value) in [
        ("Bittorrent.PortMapping", "true"),
        ("Bittorrent.ListenAddresses", r#"["0.0.0.0"]"#),
        ("Bittorrent.RandomPort", "false"),
        ("Bittorrent.Port", &port),
    ] {
        btfs_at(repo, &["config", key, value, "--json"]);
    }
    let mapping = btfs_at(repo, &["config", "Bittorrent.PortMapping"]);
    assert_eq!(mapping.stdout.trim(), "true");
}

/// `btfs ARGS` inside `ns` with the repo at `repo`; `exec` twice (sh, then ip netns exec)
/// keeps the PID, so SIGINT reaches btfs itself.
fn btfs_in(ns: &str, repo: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    die_with_parent(&mut cmd)
        .arg("-c")
        .arg(r#"exec ip netns exec "$0" "$@""#)
        .arg(ns)
        .arg(env!("CARGO_BIN_EXE_btfs"))
        .args(args)
        .env("BTFS_PATH", repo);
    cmd
}

/// Three namespaces and the processes started in them; torn down on drop.
struct Lab {
    /// inside, router, outside
    ns: Vec<String>,
    procs: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Lab {
    fn inside(&self) -> &str {
        &self.ns[0]
    }
    fn router(&self) -> &str {
        &self.ns[1]
    }
    fn outside(&self) -> &str {
        &self.ns[2]
    }

    /// `ip netns exec NS ARGS…`, which must succeed.
    fn exec(&self, ns: &str, args: &[&str]) -> Run {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend(args);
        run(&all)
    }

    fn iptables(&self, args: &[&str]) -> Run {
        let mut all = vec!["iptables-legacy", "-w", "5"];
        all.extend(args);
        self.exec(self.router(), &all)
    }

    /// Starts `ip netns exec NS ARGS…` with its output in `log`, and waits for every
    /// one of `ready` to appear there.
    fn spawn(&mut self, ns: &str, args: &[&str], log: &str, ready: &[&str]) -> PathBuf {
        let path = self.dir.path().join(log);
        let file = std::fs::File::create(&path).unwrap();
        let child = die_with_parent(&mut Command::new("ip"))
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        self.procs.push(child);
        let deadline = Instant::now() + READY;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if ready.iter().all(|r| text.contains(r)) {
                return path;
            }
            let exited = self.procs.last_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{args:?} did not print {ready:?} (exited: {exited:?}); its output:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The namespaces, veths, NAT and miniupnpd's chains (as its iptables_init.sh, with
    /// the legacy tables it uses).
    fn new(tag: &str) -> Lab {
        remove_leftovers();
        let mut lab = Lab {
            ns: Vec::new(),
            procs: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for part in ["in", "rt", "out"] {
            let name = format!("btpm{}{tag}{part}", std::process::id());
            run(&["ip", "netns", "add", &name]);
            lab.ns.push(name.clone());
            run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        }
        let (i, r, o) = (
            lab.inside().to_owned(),
            lab.router().to_owned(),
            lab.outside().to_owned(),
        );
        let lan = [
            "link", "add", "veth-in", "type", "veth", "peer", "name", "r-lan",
        ];
        run(&[&["ip", "-n", &i][..], &lan, &["netns", &r]].concat());
        let wan = [
            "link", "add", "r-wan", "type", "veth", "peer", "name", "veth-out",
        ];
        run(&[&["ip", "-n", &r][..], &wan, &["netns", &o]].concat());
        for (ns, addr, dev) in [
            (&i, "10.200.1.2/24", "veth-in"),
            (&r, "10.200.1.1/24", "r-lan"),
            (&r, "10.200.2.1/24", "r-wan"),
            (&o, "10.200.2.2/24", "veth-out"),
            // The STUN server's second address ("changed IP").
            (&o, "10.200.2.3/24", "veth-out"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        }
        for (ns, dev) in [
            (&i, "veth-in"),
            (&r, "r-lan"),
            (&r, "r-wan"),
            (&o, "veth-out"),
        ] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &i,
            "route",
            "add",
            "default",
            "via",
            "10.200.1.1",
        ]);
        lab.exec(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for rule in [
            "-t nat -A POSTROUTING -o r-wan -j MASQUERADE",
            "-P FORWARD DROP",
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A FORWARD -i r-lan -o r-wan -j ACCEPT",
            "-t nat -N MINIUPNPD",
            "-t mangle -N MINIUPNPD",
            "-t filter -N MINIUPNPD",
            "-t nat -N MINIUPNPD-POSTROUTING",
            "-t nat -I PREROUTING -i r-wan -j MINIUPNPD",
            "-t mangle -I PREROUTING -i r-wan -j MINIUPNPD",
            "-t filter -I FORWARD -i r-wan ! -o r-wan -j MINIUPNPD",
            "-t nat -I POSTROUTING -o r-wan -j MINIUPNPD-POSTROUTING",
        ] {
            lab.iptables(&rule.split(' ').collect::<Vec<_>>());
        }
        lab
    }

    /// The STUN server outside, then miniupnpd on the router with the given methods.
    fn start_router(&mut self, upnp: bool, natpmp: bool) {
        let stund = tools_dir().join("stund.py");
        let o = self.outside().to_owned();
        let stund = stund.to_str().unwrap();
        self.spawn(
            &o,
            &["/usr/bin/python3", stund, OUTSIDE_IP, "10.200.2.3"],
            "stund.log",
            &["listening"],
        );
        let yes = |b: bool| if b { "yes" } else { "no" };
        let conf = self.dir.path().join("miniupnpd.conf");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=r-wan\nlistening_ip=r-lan\nhttp_port=5000\n\
                 enable_upnp={}\nenable_natpmp={}\nsecure_mode=yes\nipv6_disable=yes\n\
                 ext_perform_stun=yes\next_stun_host={OUTSIDE_IP}\next_stun_port=3478\n\
                 uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
                 min_lifetime=5\nmax_lifetime={PCP_MAX_LIFETIME}\n\
                 allow 1024-65535 10.200.1.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                yes(upnp),
                yes(natpmp)
            ),
        )
        .unwrap();
        let pid = self.dir.path().join("miniupnpd.pid");
        let mut ready = vec!["Port forwarding is now enabled"];
        if upnp {
            ready.push("HTTP listening on port 5000");
        }
        if natpmp {
            ready.push("Listening for NAT-PMP");
        }
        let r = self.router().to_owned();
        let (conf, pid) = (conf.to_str().unwrap(), pid.to_str().unwrap());
        self.spawn(
            &r,
            &["miniupnpd", "-f", conf, "-d", "-P", pid],
            "miniupnpd.log",
            &ready,
        );
    }

    /// miniupnpd's forwarding rules: `-d INSIDE/32 -p PROTO -m PROTO --dport PORT` lines.
    fn forwards(&self) -> Vec<String> {
        self.iptables(&["-t", "filter", "-S", "MINIUPNPD"])
            .stdout
            .lines()
            .filter(|l| l.starts_with("-A MINIUPNPD"))
            .map(str::to_owned)
            .collect()
    }

    /// Has iptables in the inside namespace count every packet sent to a UPnP (SSDP, UDP
    /// 1900) or NAT-PMP/PCP (UDP 5351) port, wherever it goes.
    fn count_mapping_requests(&self) {
        for port in ["1900", "5351"] {
            let rule = ["-A", "OUTPUT", "-p", "udp", "--dport", port];
            let mut all = vec!["iptables-legacy", "-w", "5"];
            all.extend(rule);
            self.exec(self.inside(), &all);
        }
    }

    /// The packets [`Lab::count_mapping_requests`] counted so far.
    fn mapping_requests(&self) -> u64 {
        let list = [
            "iptables-legacy",
            "-w",
            "5",
            "-L",
            "OUTPUT",
            "-n",
            "-v",
            "-x",
        ];
        let out = self.exec(self.inside(), &list).stdout;
        let rules: Vec<u64> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(rules.len(), 2, "the counting rules:\n{out}");
        rules.iter().sum()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

fn check_tools() {
    for t in ["ip", "iptables-legacy", "miniupnpd", "python3"] {
        tool(t);
    }
    let v = common::run_with_timeout(Command::new("miniupnpd").arg("--version"), CMD);
    assert!(
        format!("{}{}", v.stdout, v.stderr).contains("netfilter(iptables)"),
        "miniupnpd is not the iptables build (Debian package miniupnpd-iptables); run scripts/install-deps"
    );
}

/// The whole story for one method set; `methods` are the acceptable `Method`s.
fn serve_through_the_router(tag: &str, upnp: bool, natpmp: bool, pcp: bool, methods: &[&str]) {
    check_tools();
    let mut lab = Lab::new(tag);
    lab.start_router(upnp, natpmp);

    let file = lab.dir.path().join("data").join("mapped.bin");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let bytes = data(3 << 20, 15);
    std::fs::write(&file, &bytes).unwrap();
    let repo = lab.dir.path().join("repo");
    mapping_repo(&repo, 6881);
    let serve_err = lab.dir.path().join("serve.stderr");
    let mut cmd = Command::new("sh");
    die_with_parent(&mut cmd);
    // `exec` twice (sh, then ip netns exec) keeps the PID: SIGINT reaches btfs itself.
    cmd.arg("-c")
        .arg(r#"exec ip netns exec "$0" "$@" 2>"$SERVE_STDERR""#)
        .arg(lab.inside())
        .arg(env!("CARGO_BIN_EXE_btfs"))
        .args(["--json", "bittorrent", "serve", file.to_str().unwrap()])
        // A DHT node (its bootstrap is nobody, outside), so that its UDP port is mapped.
        .args(["--dht-bootstrap", &format!("{OUTSIDE_IP}:6881")])
        .env("BTFS_PATH", &repo)
        .env("BTFS_PORT_MAPPING_PCP", if pcp { "1" } else { "0" })
        .env("SERVE_STDERR", &serve_err);
    let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
    let err = || std::fs::read_to_string(&serve_err).unwrap_or_default();

    // The mapping state comes before the magnet, which carries the external address.
    let line = serve.wait_for("a port-mapping event", READY, |l| {
        l.contains("port-mapping")
    });
    let state: Value = serde_json::from_str(&line).unwrap();
    let context = || {
        format!(
            "state: {state:#}\nserve stderr:\n{}\nminiupnpd:\n{}",
            err(),
            lab.log("miniupnpd.log")
        )
    };
    eprintln!("[{tag}] {}", err().trim_end());
    let maps = state["Mappings"].as_array().unwrap();
    assert_eq!(maps.len(), 2, "TCP and the DHT's UDP port\n{}", context());
    for m in maps {
        assert_eq!(m["State"], "Mapped", "{}", context());
        assert!(
            methods.contains(&m["Method"].as_str().unwrap()),
            "method {} is not one of {methods:?}\n{}",
            m["Method"],
            context()
        );
    }
    assert_eq!(state["ExternalIp"], WAN_IP, "{}", context());
    assert_eq!(state["Gateway"], "10.200.1.1", "{}", context());
    let tcp = maps.iter().find(|m| m["Protocol"] == "TCP").unwrap();
    let udp = maps.iter().find(|m| m["Protocol"] == "UDP").unwrap();
    assert_eq!(tcp["InternalPort"], 6881);
    let ext_tcp = tcp["ExternalPort"].as_u64().unwrap();
    let ext_udp = udp["ExternalPort"].as_u64().unwrap();
    let stderr_line = format!("port mapping: TCP 6881 → {WAN_IP}:{ext_tcp} via ");
    assert!(err().contains(&stderr_line), "{}", context());

    let torrent = serve.wait_for("the torrent line", READY, |l| l.contains("\"Magnet\""));
    let torrent: Value = serde_json::from_str(&torrent).unwrap();
    let magnet = torrent["Magnet"].as_str().unwrap().to_owned();
    // The external address is private (the router is behind another NAT, as far as
    // anyone can tell): peers out there could not reach it, so it is not in the magnet.
    assert!(!magnet.contains(WAN_IP), "{magnet}\n{}", context());
    let peer = format!("{WAN_IP}:{ext_tcp}");

    if maps.iter().any(|m| m["Method"] == "PCP") {
        // The router granted a lease shorter than btfs's MIN_RENEW: it is renewed before
        // it runs out, and the forward stays.
        assert_eq!(tcp["LeaseSecs"], PCP_MAX_LIFETIME, "{}", context());
        let first = tcp["Expires"].as_u64().unwrap();
        let renewed = serve.wait_for("a renewal of the TCP mapping", RENEWAL, |l| {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                return false;
            };
            v["Type"] == "port-mapping"
                && v["Mappings"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m["Protocol"] == "TCP"
                            && m["State"] == "Mapped"
                            && m["Expires"].as_u64().is_some_and(|e| e > first)
                    })
                })
        });
        eprintln!("[{tag}] renewed: {renewed}");
    }

    // miniupnpd's side: a forward to the inside host for each mapped port.
    let forwards = lab.forwards();
    for (proto, port) in [("tcp", ext_tcp), ("udp", ext_udp)] {
        let want = format!("-d {INSIDE_IP}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT");
        assert!(
            forwards.iter().any(|l| l.contains(&want)),
            "no {want:?} in MINIUPNPD: {forwards:?}\n{}",
            context()
        );
    }

    // libtorrent outside downloads from the magnet alone: through the router's WAN
    // address and the mapped port.
    let save = lab.dir.path().join("lt");
    std::fs::create_dir_all(&save).unwrap();
    let lt = common::run_with_timeout(
        die_with_parent(&mut Command::new("ip"))
            .args(["netns", "exec", lab.outside(), "env"])
            .arg(format!("LT_LISTEN={OUTSIDE_IP}"))
            .arg("/usr/bin/python3")
            .arg(tools_dir().join("lt.py"))
            .args(["magnet", &magnet, save.to_str().unwrap(), "0", &peer, "90"]),
        DOWNLOAD,
    );
    assert!(
        lt.stdout.contains("done"),
        "libtorrent did not finish: {}\n{}\n{}",
        lt.stdout,
        lt.stderr,
        context()
    );
    assert!(
        std::fs::read(save.join("mapped.bin")).unwrap() == bytes,
        "libtorrent's copy differs"
    );

    // `download --seed` (another repo, inside, mapping on by its config) maps its own
    // listen port while it runs, and removes it when stopped by SIGINT.
    let repo2 = lab.dir.path().join("repo2");
    mapping_repo(&repo2, 7000);
    let mut cmd = btfs_in(
        lab.inside(),
        &repo2,
        &["--json", "bittorrent", "download", &magnet, "--seed"],
    );
    cmd.args(["--peer", "127.0.0.1:6881", "--no-dht"])
        .env("BTFS_PORT_MAPPING_PCP", if pcp { "1" } else { "0" });
    let download = Daemon::spawn("btfs bittorrent download --seed", &mut cmd);
    let is_mapping =
        |l: &str| serde_json::from_str::<Value>(l).is_ok_and(|v| v["Type"] == "port-mapping");
    // Its first port-mapping event, and the end of the download (so that SIGINT stops
    // a seeding download, which exits 0).
    let first_event = std::cell::RefCell::new(None::<String>);
    let imported = std::cell::Cell::new(false);
    download.wait_for("a port-mapping event and the import", DOWNLOAD, |l| {
        if is_mapping(l) && first_event.borrow().is_none() {
            *first_event.borrow_mut() = Some(l.to_owned());
        }
        imported.set(imported.get() || l.contains(r#""Type":"imported""#));
        first_event.borrow().is_some() && imported.get()
    });
    let first: Value = serde_json::from_str(first_event.borrow().as_ref().unwrap()).unwrap();
    let mine = &first["Mappings"][0];
    assert_eq!(
        (&mine["InternalPort"], &mine["State"]),
        (&7000.into(), &"Mapped".into()),
        "{first}"
    );
    let ext_download = mine["ExternalPort"].as_u64().unwrap();
    let forward = format!("-p tcp -m tcp --dport {ext_download} -j");
    let now = lab.forwards();
    assert!(
        now.iter().any(|l| l.contains(&forward)),
        "no {forward:?} while download runs: {now:?}"
    );
    download.interrupt();
    let (status, lines) = download.finish(STOP);
    assert_eq!(status, Some(0), "download's exit: {lines:?}");
    let last: Value = lines
        .iter()
        .rev()
        .filter(|l| is_mapping(l))
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no final port-mapping event in {lines:?}"));
    assert_eq!(last["Mappings"][0]["State"], "Removed", "{last}");
    let left = lab.forwards();
    assert!(
        !left.iter().any(|l| l.contains(&forward)),
        "download's mapping ({forward}) left: {left:?}"
    );

    // SIGINT: serve removes the mappings before it exits.
    serve.interrupt();
    let (status, lines) = serve.finish(STOP);
    assert_eq!(status, Some(0), "serve's exit\n{}", context());
    let last: Value = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["Type"] == "port-mapping")
        .unwrap_or_else(|| panic!("no final port-mapping event in {lines:?}"));
    for m in last["Mappings"].as_array().unwrap() {
        assert_eq!(m["State"], "Removed", "{last:#}\n{}", context());
    }
    eprintln!("[{tag}] after SIGINT: {last}");
    let left = lab.forwards();
    assert!(left.is_empty(), "mappings left: {left:?}\n{}", context());
}

#[test]
fn upnp_maps_the_ports_libtorrent_connects_from_outside_and_they_are_removed_on_exit() {
    serve_through_the_router("u", true, false, true, &["UPnP"]);
}

/// miniupnpd answers PCP and NAT-PMP on one port: btfs asks by PCP first.
#[test]
fn pcp_maps_the_ports_libtorrent_connects_from_outside_and_they_are_removed_on_exit() {
    serve_through_the_router("p", false, true, true, &["PCP"]);
}

/// With PCP turned off, the same gateway maps by NAT-PMP (RFC 6886).
#[test]
fn natpmp_maps_the_ports_libtorrent_connects_from_outside_and_they_are_removed_on_exit() {
    serve_through_the_router("n", false, true, false, &["NAT-PMP"]);
}

/// Whether process `pid` catches SIGINT (its handler is installed).
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (libc::SIGINT - 1)) != 0)
}

/// SIGINT while serve waits for the gateway's first answers (here no gateway answers:
/// the router runs no miniupnpd and drops NAT-PMP/PCP) ends serve cleanly through the
/// mappings' removal, before any magnet is printed.
#[test]
fn a_signal_while_the_mappings_settle_ends_serve_cleanly() {
    check_tools();
    let lab = Lab::new("s");
    lab.iptables(&["-A", "INPUT", "-p", "udp", "--dport", "5351", "-j", "DROP"]);
    let file = lab.dir.path().join("settle.bin");
    std::fs::write(&file, data(1 << 16, 3)).unwrap();
    let repo = lab.dir.path().join("repo");
    mapping_repo(&repo, 6881);
    let args = ["--json", "bittorrent", "serve", file.to_str().unwrap()];
    let mut cmd = btfs_in(lab.inside(), &repo, &args);
    cmd.arg("--no-dht");
    let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
    let deadline = Instant::now() + READY;
    while !catches_sigint(serve.pid()) {
        assert!(Instant::now() < deadline, "serve never caught SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.interrupt();
    let (status, lines) = serve.finish(STOP);
    assert_eq!(status, Some(0), "serve's exit: {lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("\"Magnet\"")),
        "serve went on after the signal: {lines:?}"
    );
    let last: Value = lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["Type"] == "port-mapping")
        .unwrap_or_else(|| panic!("no final port-mapping event in {lines:?}"));
    assert_eq!(last["Mappings"][0]["InternalPort"], 6881, "{last}");
}

/// Runs serve inside until its magnet is printed (any mapping is settled before that),
/// then stops it by SIGINT; returns its output lines.
fn serve_until_magnet(lab: &Lab, repo: &Path, file: &str, extra: &[&str]) -> Vec<String> {
    let mut cmd = btfs_in(lab.inside(), repo, &["--json", "bittorrent", "serve", file]);
    let serve = Daemon::spawn("btfs bittorrent serve", cmd.args(extra));
    let seen = std::cell::RefCell::new(Vec::new());
    serve.wait_for("the torrent line", READY, |l| {
        seen.borrow_mut().push(l.to_owned());
        l.contains("\"Magnet\"")
    });
    serve.interrupt();
    let (status, rest) = serve.finish(STOP);
    let mut lines = seen.into_inner();
    lines.extend(rest);
    assert_eq!(status, Some(0), "serve's exit: {lines:?}");
    lines
}

/// Port mapping follows the config: the test profile as the suite's repos get it (serve
/// and download), and `--no-port-mapping` over a config that turns mapping on, send
/// nothing to any UPnP or NAT-PMP/PCP port although a gateway answering both is there;
/// the same counters see serve's requests once the config alone turns mapping on.
#[test]
fn without_port_mapping_nothing_is_sent_to_the_gateway() {
    check_tools();
    let mut lab = Lab::new("o");
    lab.start_router(true, true);
    lab.count_mapping_requests();
    let file = lab.dir.path().join("quiet.bin");
    std::fs::write(&file, data(1 << 18, 5)).unwrap();
    let file = file.to_str().unwrap();
    let no_events = |who: &str, lines: &[String]| {
        assert!(
            !lines.iter().any(|l| l.contains("port-mapping")),
            "{who} mapped: {lines:?}"
        );
    };

    // The test profile (BTFS_PROFILE=test, a repo made on first use): 127.0.0.1, a
    // random port, no mapping.
    let repo = lab.dir.path().join("repo");
    let mut cmd = btfs_in(
        lab.inside(),
        &repo,
        &["--json", "bittorrent", "serve", file],
    );
    let serve = Daemon::spawn("btfs bittorrent serve", &mut cmd);
    let line = serve.wait_for("the torrent line", READY, |l| {
        assert!(!l.contains("port-mapping"), "serve mapped: {l}");
        l.contains("\"Magnet\"")
    });
    let magnet = serde_json::from_str::<Value>(&line).unwrap()["Magnet"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(magnet.contains("127.0.0.1"), "serve's address: {magnet}");
    let repo2 = lab.dir.path().join("repo2");
    let args = ["--json", "bittorrent", "download", &magnet, "--no-dht"];
    let download = common::run_with_timeout(&mut btfs_in(lab.inside(), &repo2, &args), DOWNLOAD);
    assert_eq!(download.status, 0, "download:\n{}", download.stderr);
    let lines: Vec<String> = download.stdout.lines().map(str::to_owned).collect();
    assert!(
        lines.iter().any(|l| l.contains(r#""Type":"imported""#)),
        "download: {lines:?}"
    );
    no_events("download with the test profile", &lines);
    serve.interrupt();
    let (status, lines) = serve.finish(STOP);
    assert_eq!(status, Some(0), "serve's exit: {lines:?}");
    no_events("serve with the test profile", &lines);
    let sent = lab.mapping_requests();
    assert_eq!(
        sent,
        0,
        "sent with the test profile\n{}",
        lab.log("miniupnpd.log")
    );

    // The config turns mapping on; --no-port-mapping turns it off for one run.
    mapping_repo(&repo, 6881);
    let lines = serve_until_magnet(&lab, &repo, file, &["--no-port-mapping"]);
    no_events("serve --no-port-mapping", &lines);
    let sent = lab.mapping_requests();
    assert_eq!(
        sent,
        0,
        "sent with --no-port-mapping\n{}",
        lab.log("miniupnpd.log")
    );

    // Without the flag, the config's mapping runs: the counters see it.
    let lines = serve_until_magnet(&lab, &repo, file, &[]);
    assert!(
        lines.iter().any(|l| l.contains(r#""Type":"port-mapping""#)),
        "serve with Bittorrent.PortMapping true: {lines:?}"
    );
    assert!(lab.mapping_requests() > 0, "the counters saw nothing");
}

//! btfs's defaults on a real network, proven without one: a repo with the default config
//! run inside a network namespace this test makes (only `lo`, so nothing can leave the
//! machine, whatever the outer environment) does try the DHT bootstrap routers and fails
//! fast with one message naming each; the test profile makes no attempt at all (strace
//! shows every connect and send). Also the config itself: `btfs config` get/set/show,
//! refusals naming the key, profiles, `init --profile`, the API endpoints through a
//! running daemon, and flags overriding the config for one run.

mod common;

use common::{free_port, run_bounded, Node, Run};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The BTIP's own example: a bare magnet, so the DHT is the only source of peers.
const BARE_MAGNET: &str = "magnet:?xt=urn:btih:KRWPCX3SJUM4IMM4YF5RPHL6ANPYTQPU";
const ROUTERS: [&str; 4] = [
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];

/// `btfs ARGS` with the repo at `repo`; `profile` is `BTFS_PROFILE` (None: unset).
fn btfs_at(repo: &Path, profile: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo).env_remove("BTFS_API_TOKEN");
    match profile {
        Some(p) => cmd.env("BTFS_PROFILE", p),
        None => cmd.env_remove("BTFS_PROFILE"),
    };
    let r = run_bounded(cmd.args(args), Duration::from_secs(120));
    assert_ne!(r.status, -2, "btfs {args:?} did not finish:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

/// Unix sockets through which a resolver answers without the network (nscd,
/// systemd-resolved, sssd): a connect to one is a
/// name lookup that a network namespace does not stop.
const RESOLVER_SOCKETS: [&str; 4] = [
    "/var/run/nscd/socket",
    "/run/nscd/socket",
    "/run/systemd/resolve/io.systemd.Resolve",
    "/var/lib/sss/pipes/nss",
];

/// One socket address of a traced call: the call, and the IP and port or Unix path.
#[derive(Debug, Clone)]
struct Endpoint {
    call: String,
    ip: Option<String>,
    port: Option<u16>,
    path: Option<String>,
}

impl Endpoint {
    /// Reaches past this machine (a connect or send to an address not loopback).
    fn outside(&self) -> bool {
        self.call != "bind" && self.ip.as_deref().is_some_and(|ip| !is_loopback(ip))
    }

    /// A name lookup: anything to port 53 (loopback included), or a connect to a
    /// resolver's Unix socket.
    fn resolver(&self) -> bool {
        self.call != "bind"
            && (self.port == Some(53)
                || self
                    .path
                    .as_deref()
                    .is_some_and(|p| RESOLVER_SOCKETS.contains(&p)))
    }
}

/// `btfs ARGS` in a fresh network namespace with only `lo` up, under strace: the run,
/// and every socket address it bound, connected or sent to.
fn sealed_btfs(repo: &Path, profile: Option<&str>, args: &[&str]) -> (Run, Vec<Endpoint>) {
    let trace = repo.with_extension("strace");
    let exe = env!("CARGO_BIN_EXE_btfs");
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let script = format!(
        "ip link set lo up && exec {strace} -f -qq -e trace=connect,sendto,sendmsg,sendmmsg,bind -o {trace} {exe} {args}",
        strace = common::tool("strace").display(),
        trace = trace.display(),
        args = quoted.join(" "),
    );
    let mut cmd = Command::new(common::tool("unshare"));
    cmd.args(["--net", "--", "sh", "-c", &script])
        .env("BTFS_PATH", repo)
        .env_remove("BTFS_API_TOKEN");
    match profile {
        Some(p) => cmd.env("BTFS_PROFILE", p),
        None => cmd.env_remove("BTFS_PROFILE"),
    };
    // Generous: the resolver and the join each have bounds of their own, far below this.
    let run = run_bounded(&mut cmd, Duration::from_secs(60));
    assert_ne!(run.status, -2, "still running after 60 s:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let text = std::fs::read_to_string(&trace).expect("strace wrote its log");
    let _ = std::fs::remove_file(&trace);
    (run, endpoints(&text))
}

/// The download of [`BARE_MAGNET`], sealed and traced (see [`sealed_btfs`]).
fn sealed_download(repo: &Path, profile: Option<&str>) -> (Run, Vec<Endpoint>) {
    sealed_btfs(repo, profile, &["bittorrent", "download", BARE_MAGNET])
}

/// The socket addresses in strace's lines: `sin_port=htons(53)`,
/// `inet_addr("…")`, `inet_pton(AF_INET6, "…"`, `sun_path="…"`, per `sa_family=`.
fn endpoints(strace: &str) -> Vec<Endpoint> {
    fn quoted_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
        let rest = &s[s.find(marker)? + marker.len()..];
        Some(&rest[..rest.find('"')?])
    }
    let mut out = Vec::new();
    for line in strace.lines() {
        let Some(call) = ["connect", "sendto", "sendmsg", "sendmmsg", "bind"]
            .into_iter()
            .find(|c| line.contains(&format!("{c}(")))
        else {
            continue;
        };
        for part in line.split("sa_family=").skip(1) {
            let port = part
                .find("_port=htons(")
                .and_then(|i| part[i + 12..].split(')').next()?.parse().ok());
            let ip = quoted_after(part, "inet_addr(\"")
                .or_else(|| quoted_after(part, "inet_pton(AF_INET6, \""));
            out.push(Endpoint {
                call: call.to_string(),
                ip: ip.map(str::to_owned),
                port,
                path: quoted_after(part, "sun_path=\"").map(str::to_owned),
            });
        }
    }
    out
}

fn is_loopback(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback() || a.is_unspecified())
        .unwrap_or(false)
}

/// Nothing in `trace` reached past this machine or asked a resolver.
fn assert_no_attempt(trace: &[Endpoint], what: &str) {
    let bad: Vec<&Endpoint> = trace
        .iter()
        .filter(|e| e.outside() || e.resolver())
        .collect();
    assert!(bad.is_empty(), "{what}: reached out or resolved: {bad:?}");
}

#[test]
fn the_default_config_tries_the_routers_and_fails_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // A repo with the default config (no profile), as a new user gets it.
    btfs_at(&repo, None, &["init"]).ok();
    let cfg = btfs_at(&repo, None, &["config", "Bittorrent.DHT.Bootstrap"]).ok();
    for r in ROUTERS {
        assert!(cfg.stdout.contains(r), "{}", cfg.stdout);
    }
    let (run, addrs) = sealed_download(&repo, None);
    assert_ne!(run.status, 0, "{}", run.stderr);
    let msg = run
        .stderr
        .lines()
        .find(|l| l.contains("DHT: could not join through any bootstrap node after"))
        .unwrap_or_else(|| panic!("no DHT message:\n{}", run.stderr));
    for r in ROUTERS {
        let named = msg
            .split(&format!("{r} ("))
            .nth(1)
            .unwrap_or_else(|| panic!("{r} not named with a reason: {msg}"));
        assert!(
            named.starts_with("cannot resolve") || named.starts_with("no answer"),
            "{msg}"
        );
    }
    // It tried: the resolver was asked (a query to port 53, or a resolver's socket), or
    // every host is named with the resolver's error.
    let asked = addrs.iter().any(Endpoint::resolver);
    let resolver_errors = ROUTERS
        .iter()
        .all(|r| msg.contains(&format!("{r} (cannot resolve: ")));
    assert!(
        asked || resolver_errors,
        "no attempt to resolve the routers: {addrs:?}\n{msg}"
    );
}

#[test]
fn the_test_profile_makes_no_attempt_and_names_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let (run, addrs) = sealed_download(&repo, None);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Bittorrent.DHT.Bootstrap"),
        "{}",
        run.stderr
    );
    assert_no_attempt(&addrs, "the test profile");
    // A repo made on first use with BTFS_PROFILE=test does the same.
    let repo2 = dir.path().join("repo2");
    let (run, addrs) = sealed_download(&repo2, Some("test"));
    assert_ne!(run.status, 0);
    assert!(
        run.stderr.contains("Bittorrent.DHT.Bootstrap"),
        "{}",
        run.stderr
    );
    assert_no_attempt(&addrs, "BTFS_PROFILE=test");
}

/// A .torrent of `file` naming `nodes` (BEP 5) as DHT nodes to join through.
fn torrent_with_nodes(repo: &Path, file: &Path, nodes: &[(&str, u16)]) -> std::path::PathBuf {
    let plain = file.with_extension("torrent");
    btfs_at(
        repo,
        None,
        &[
            "bittorrent",
            "create",
            file.to_str().unwrap(),
            "-o",
            plain.to_str().unwrap(),
        ],
    )
    .ok();
    let mut bytes = std::fs::read(&plain).unwrap();
    // `nodes` sorts after every key `create` writes without trackers or web seeds.
    assert_eq!(bytes.pop(), Some(b'e'));
    bytes.extend_from_slice(b"5:nodesl");
    for (host, port) in nodes {
        bytes.extend_from_slice(format!("l{}:{host}i{port}ee", host.len()).as_bytes());
    }
    bytes.extend_from_slice(b"ee");
    let out = file.with_extension("nodes.torrent");
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn the_test_profile_never_resolves_a_torrents_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, common::data(20_000, 5)).unwrap();
    let torrent = torrent_with_nodes(&repo, &file, &[("router.example", 6881)]);
    let args = [
        "bittorrent",
        "download",
        "-t",
        torrent.to_str().unwrap(),
        "--no-trackers",
    ];
    let (run, trace) = sealed_btfs(&repo, None, &args);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("leaves nothing to download from"),
        "{}",
        run.stderr
    );
    assert_no_attempt(&trace, "a torrent's nodes under the test profile");
    // With Bittorrent.DHT.TorrentNodes on (still sealed), the same run does look the
    // node up: the check above sees a lookup when there is one.
    btfs_at(
        &repo,
        None,
        &["config", "--bool", "Bittorrent.DHT.TorrentNodes", "true"],
    )
    .ok();
    let (run, trace) = sealed_btfs(&repo, None, &args);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        trace.iter().any(Endpoint::resolver) || run.stderr.contains("router.example"),
        "no lookup of router.example: {trace:?}\n{}",
        run.stderr
    );
}

/// A UDP port of 127.0.0.1 nothing listens on (bound, then let go).
fn closed_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bootstrap_node_that_never_answers_fails_a_bare_magnet_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let node = format!("127.0.0.1:{}", closed_udp_port());
    let r = btfs_at(
        &repo,
        None,
        &[
            "bittorrent",
            "download",
            BARE_MAGNET,
            "--dht-bootstrap",
            &node,
        ],
    );
    assert_ne!(r.status, 0, "{}", r.stderr);
    let msg = r
        .stderr
        .lines()
        .find(|l| l.contains("DHT: could not join through any bootstrap node after "))
        .unwrap_or_else(|| panic!("no DHT message:\n{}", r.stderr));
    assert!(msg.contains(&format!("{node} (no answer)")), "{msg}");
    let secs = msg
        .split("after ")
        .nth(1)
        .and_then(|t| t.split(" s:").next())
        .and_then(|t| t.parse::<f64>().ok());
    assert!(secs.is_some(), "no time in: {msg}");
}

#[test]
fn metainfo_dht_binds_the_ipv4_listen_address_and_is_off_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let node = format!("127.0.0.1:{}", closed_udp_port());
    let args = [
        "bittorrent",
        "metainfo",
        "-m",
        BARE_MAGNET,
        "--dht-bootstrap",
        &node,
    ];
    let (run, trace) = sealed_btfs(&repo, None, &args);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("(no answer)"), "{}", run.stderr);
    let binds: Vec<&Endpoint> = trace.iter().filter(|e| e.call == "bind").collect();
    assert!(
        binds.iter().any(|e| e.ip.as_deref() == Some("127.0.0.1")),
        "{binds:?}"
    );
    assert!(
        binds.iter().all(|e| e.ip.as_deref() != Some("0.0.0.0")),
        "{binds:?}"
    );
    assert_no_attempt(&trace, "metainfo -m under the test profile");
    // No IPv4 listen address: no DHT, said in one line; with nobody else to ask, what
    // the link holds is shown.
    btfs_at(
        &repo,
        None,
        &[
            "config",
            "--json",
            "Bittorrent.ListenAddresses",
            r#"["::1"]"#,
        ],
    )
    .ok();
    let r = btfs_at(&repo, None, &args).ok();
    assert!(
        r.stderr
            .contains("note: the DHT is off: no listen address is IPv4"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_get_set_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // No repo yet: the config a repo made now would have (the profile applied).
    let r = btfs_at(&repo, Some("test"), &["config", "Bittorrent.RandomPort"]).ok();
    assert_eq!(r.stdout.trim(), "true");
    assert!(!repo.exists(), "reading created a repo");
    btfs_at(&repo, None, &["init"]).ok();
    let show = btfs_at(&repo, None, &["config", "show"]).ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["Bittorrent"]["Port"], 6881);
    assert_eq!(v["Bittorrent"]["ListenAddresses"][1], "::");
    assert_eq!(v["Bittorrent"]["MaxConnectionsPerIP"], 1);
    let get = |k: &str| btfs_at(&repo, None, &["config", k]).ok().stdout;
    assert_eq!(get("Bittorrent.Port").trim(), "6881");
    assert_eq!(get("Addresses.API").trim(), "/ip4/127.0.0.1/tcp/5001");
    // Lists and objects are JSON.
    let dht: serde_json::Value = serde_json::from_str(&get("Bittorrent.DHT")).unwrap();
    assert_eq!(dht["Enabled"], true);
    btfs_at(
        &repo,
        None,
        &["config", "--json", "Bittorrent.Port", "51413"],
    )
    .ok();
    assert_eq!(get("Bittorrent.Port").trim(), "51413");
    btfs_at(
        &repo,
        None,
        &["config", "Bittorrent.DownloadDir", "/srv/dl"],
    )
    .ok();
    assert_eq!(get("Bittorrent.DownloadDir").trim(), "/srv/dl");
    btfs_at(
        &repo,
        None,
        &["config", "--bool", "Bittorrent.PortMapping", "false"],
    )
    .ok();
    assert_eq!(get("Bittorrent.PortMapping").trim(), "false");
    let j = btfs_at(
        &repo,
        None,
        &[
            "--enc",
            "json",
            "config",
            "--json",
            "Bittorrent.DHT.Bootstrap",
            r#"["[::1]:6881","127.0.0.1:1"]"#,
        ],
    )
    .ok();
    assert_eq!(j.json()["Value"][0], "[::1]:6881");
    // The global --json before `config` is the output encoding; after it, kubo's flag.
    let r = btfs_at(
        &repo,
        None,
        &["--json", "config", "Bittorrent.DownloadDir", "/x"],
    )
    .ok();
    assert_eq!(r.json()["Value"], "/x");
    let r = btfs_at(&repo, None, &["--json", "config", "Bittorrent.Port"]).ok();
    assert_eq!(r.json()["Value"], 51413);
    let r = btfs_at(
        &repo,
        None,
        &["config", "--json", "Bittorrent.MaxPeers", "9"],
    )
    .ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(get("Bittorrent.MaxPeers").trim(), "9");
}

#[test]
fn refused_config_changes_name_the_key_and_leave_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let file = repo.join("config");
    let before = std::fs::read(&file).unwrap();
    let refused = |args: &[&str], needle: &str| {
        let mut all = vec!["config"];
        all.extend_from_slice(args);
        let r = btfs_at(&repo, None, &all);
        assert_ne!(r.status, 0, "{args:?} accepted");
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{args:?} changed the file"
        );
        assert!(!repo.join("config.tmp").exists());
    };
    refused(&["Bittorrent.Nope", "x"], "Bittorrent.Nope");
    refused(
        &["--json", "Bittorrent.Port", "0"],
        "Bittorrent.Port: 0 is not a port",
    );
    refused(
        &["--json", "Bittorrent.Port", "70000"],
        "Bittorrent.Port: 70000 is not a port",
    );
    // Without --json a value is a string, and Port is a number.
    refused(
        &["Bittorrent.Port", "7000"],
        "Bittorrent.Port: invalid type",
    );
    refused(
        &[
            "--json",
            "Bittorrent.DHT.Bootstrap",
            r#"["a.example:1","b","c:2"]"#,
        ],
        "Bittorrent.DHT.Bootstrap[1]",
    );
    refused(
        &[
            "--json",
            "Bittorrent.DHT.Bootstrap",
            r#"["a.example:1","b:2",3]"#,
        ],
        "Bittorrent.DHT.Bootstrap[2]: invalid type",
    );
    refused(
        &["--json", "Bittorrent.ListenAddresses", "[]"],
        "Bittorrent.ListenAddresses",
    );
    refused(
        &["--json", "Bittorrent.MaxPeers", "0"],
        "Bittorrent.MaxPeers",
    );
    refused(&["--json", "Bittorrent.Port", "{x"], "not JSON");
    refused(&["profile", "apply", "nope"], "unknown profile");
    // A config file that is wrong: every command says what and where.
    let mut v: serde_json::Value = serde_json::from_slice(&before).unwrap();
    v["Bittorrent"]["DHT"]["Bootstrp"] = serde_json::json!([]);
    std::fs::write(&file, v.to_string()).unwrap();
    let r = btfs_at(&repo, None, &["bittorrent", "download", BARE_MAGNET]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("Bittorrent.DHT") && r.stderr.contains("Bootstrp"),
        "{}",
        r.stderr
    );
    std::fs::write(&file, "not json").unwrap();
    let r = btfs_at(&repo, None, &["config", "show"]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr
            .contains(&format!("{} is not JSON", file.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn a_broken_config_is_repaired_with_config_key_value() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let file = repo.join("config");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    v["Bittorrent"]["Port"] = serde_json::json!(0);
    v["Bittorrent"]["DownloadDir"] = serde_json::json!("relative/dir");
    let broken = v.to_string();
    std::fs::write(&file, &broken).unwrap();
    let r = btfs_at(&repo, None, &["config", "show"]);
    assert!(
        r.stderr.contains("Bittorrent.Port: 0 is not a port"),
        "{}",
        r.stderr
    );
    // Fixing one key of two: the result is still broken, and nothing is written.
    let r = btfs_at(
        &repo,
        None,
        &["config", "--json", "Bittorrent.Port", "6882"],
    );
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("Bittorrent.DownloadDir"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken);
    // Each repair lands on the raw file; the second makes it whole.
    let mut v2 = v.clone();
    v2["Bittorrent"]["DownloadDir"] = serde_json::json!("");
    std::fs::write(&file, v2.to_string()).unwrap();
    btfs_at(
        &repo,
        None,
        &["config", "--json", "Bittorrent.Port", "6882"],
    )
    .ok();
    let r = btfs_at(&repo, None, &["config", "Bittorrent.Port"]).ok();
    assert_eq!(r.stdout.trim(), "6882");
    // A key of a section missing from an old config is set, the rest defaulted.
    let mut old = v2.clone();
    old.as_object_mut().unwrap().remove("Bittorrent");
    std::fs::write(&file, old.to_string()).unwrap();
    btfs_at(
        &repo,
        None,
        &["config", "--bool", "Bittorrent.DHT.Enabled", "false"],
    )
    .ok();
    let r = btfs_at(&repo, None, &["config", "Bittorrent.DHT.Enabled"]).ok();
    assert_eq!(r.stdout.trim(), "false");
}

#[test]
fn concurrent_config_changes_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let sets: [(&str, &str); 8] = [
        ("Bittorrent.MaxPeers", "61"),
        ("Bittorrent.MaxConnectionsPerIP", "7"),
        ("Bittorrent.UploadRateLimit", "1000"),
        ("Bittorrent.DownloadRateLimit", "2000"),
        ("Bittorrent.Port", "7123"),
        ("Bittorrent.PortMapping", "true"),
        ("Bittorrent.DownloadDir", r#""/srv/dl""#),
        ("Bittorrent.IPFilter", r#""/etc/blocklist.p2p""#),
    ];
    std::thread::scope(|scope| {
        for (key, value) in sets {
            let repo = &repo;
            scope.spawn(move || btfs_at(repo, None, &["config", "--json", key, value]).ok());
        }
    });
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("config")).unwrap()).unwrap();
    for (key, value) in sets {
        let mut v = &file;
        for part in key.split('.') {
            v = &v[part];
        }
        let want: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(v, &want, "{key} lost: {file}");
    }
    let left: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn profiles_and_init_with_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init"]).ok();
    let file = repo.join("config");
    let default = std::fs::read(&file).unwrap();
    let dry = btfs_at(
        &repo,
        None,
        &["config", "profile", "apply", "test", "--dry-run"],
    )
    .ok();
    assert!(
        dry.stdout.contains("would change Bittorrent.RandomPort"),
        "{}",
        dry.stdout
    );
    assert_eq!(std::fs::read(&file).unwrap(), default, "--dry-run wrote");
    let applied = btfs_at(
        &repo,
        None,
        &["--enc", "json", "config", "profile", "apply", "test"],
    )
    .ok();
    let changed = applied.json()["Changed"].clone();
    for k in [
        "Bittorrent.ListenAddresses",
        "Bittorrent.RandomPort",
        "Bittorrent.DHT.Bootstrap",
        "Bittorrent.PortMapping",
        "Bittorrent.MaxConnectionsPerIP",
    ] {
        assert!(changed.as_array().unwrap().contains(&k.into()), "{changed}");
    }
    let show: serde_json::Value =
        serde_json::from_str(&btfs_at(&repo, None, &["config", "show"]).ok().stdout).unwrap();
    assert_eq!(
        show["Bittorrent"]["ListenAddresses"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(show["Bittorrent"]["MaxConnectionsPerIP"], 16);
    let back = btfs_at(
        &repo,
        None,
        &["config", "profile", "apply", "default-networking"],
    )
    .ok();
    assert!(
        back.stdout.contains("changed Bittorrent.PortMapping"),
        "{}",
        back.stdout
    );
    assert_eq!(std::fs::read(&file).unwrap(), default);
    // init --profile writes the profile into the new config; an unknown one makes nothing.
    let t = dir.path().join("t");
    btfs_at(&t, None, &["init", "--profile", "test"]).ok();
    let show: serde_json::Value =
        serde_json::from_str(&btfs_at(&t, None, &["config", "show"]).ok().stdout).unwrap();
    assert_eq!(show["Bittorrent"]["RandomPort"], true);
    assert_eq!(
        show["Bittorrent"]["DHT"]["Bootstrap"],
        serde_json::json!([])
    );
    let n = dir.path().join("n");
    let r = btfs_at(&n, None, &["init", "--profile", "test,nope"]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("unknown profile"), "{}", r.stderr);
    assert!(!n.join("config").exists());
    // An existing repo is not changed by init --profile: the message says what does.
    let before = std::fs::read(repo.join("config")).unwrap();
    let r = btfs_at(&repo, None, &["init", "--profile", "test"]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("btfs config profile apply test"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(repo.join("config")).unwrap(), before);
    // A misspelt BTFS_PROFILE is an error, with or without a repo.
    for at in [&repo, &n] {
        let r = btfs_at(at, Some("tset"), &["config", "show"]);
        assert_ne!(r.status, 0);
        assert!(
            r.stderr.contains("BTFS_PROFILE: unknown profile \"tset\""),
            "{}",
            r.stderr
        );
    }
    assert!(!n.join("config").exists());
}

#[test]
fn config_over_the_api_of_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let node = Node::start(&repo, &[]);
    let (status, body) = node.post("config?arg=Bittorrent.Port&arg=7001&json=true", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.post("config/show", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("7001"), "{body}");
    let (status, body) = node.post(
        "config/profile/apply?arg=default-networking&dry-run=true",
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Bittorrent.RandomPort"), "{body}");
    let (status, body) = node.post("config/profile/apply?arg=test", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""Changed":[]"#), "{body}");
    let (status, body) = node.post("config?arg=Bittorrent.Nope&arg=1", &[]);
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("Bittorrent.Nope"), "{body}");
    // The command line goes through the daemon and sees the same file.
    let r = node.btfs(&["config", "Bittorrent.Port"]).ok();
    assert_eq!(r.stdout.trim(), "7001");
    let r = node
        .btfs(&["config", "--json", "Bittorrent.MaxPeers", "80"])
        .ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("config")).unwrap()).unwrap();
    assert_eq!(file["Bittorrent"]["MaxPeers"], 80);
    assert_eq!(file["Bittorrent"]["RandomPort"], true);
}

/// The x.pe port of the magnet `serve` prints (it listens on 127.0.0.1 here).
fn served_port(r: &Run) -> u16 {
    let line = r.stdout.lines().next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let magnet = v["Magnet"].as_str().unwrap();
    magnet
        .rsplit_once("x.pe=127.0.0.1%3A")
        .or_else(|| magnet.rsplit_once("x.pe=127.0.0.1:"))
        .and_then(|(_, p)| p.split('&').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no x.pe in {magnet}"))
}

#[test]
fn flags_override_the_config_for_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init", "--profile", "test"]).ok();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, common::data(40_000, 3)).unwrap();
    let p = free_port();
    btfs_at(
        &repo,
        None,
        &["config", "--bool", "Bittorrent.RandomPort", "false"],
    )
    .ok();
    btfs_at(
        &repo,
        None,
        &["config", "--json", "Bittorrent.Port", &p.to_string()],
    )
    .ok();
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "--enc",
            "json",
            "bittorrent",
            "serve",
            file.to_str().unwrap(),
            "--no-add",
            "--duration",
            "1s",
        ];
        args.extend_from_slice(extra);
        btfs_at(&repo, None, &args).ok()
    };
    // The config's port (or, if something took it meanwhile, one of the 20 after it).
    let got = served_port(&serve(&[]));
    assert!((p..=p.saturating_add(20)).contains(&got), "{got} for {p}");
    let q = std::iter::repeat_with(free_port)
        .find(|&q| q.abs_diff(p) > 21)
        .unwrap();
    let got = served_port(&serve(&["--port", &q.to_string()]));
    assert!(
        (q..=q.saturating_add(20)).contains(&got),
        "{got} for --port {q}"
    );
    // Nothing was written back.
    let r = btfs_at(&repo, None, &["config", "Bittorrent.Port"]).ok();
    assert_eq!(r.stdout.trim(), p.to_string());
    // Flags are checked as the config is.
    let r = btfs_at(
        &repo,
        None,
        &["bittorrent", "download", BARE_MAGNET, "--port", "0"],
    );
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("use --random-port"), "{}", r.stderr);
    // The variable an earlier btfs read is named as ignored.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", &repo)
        .env("BTFS_MAX_CONNECTIONS_PER_IP", "4")
        .args(["bittorrent", "download", "-t", "/nonexistent.torrent"]);
    let r = run_bounded(&mut cmd, Duration::from_secs(60));
    assert_ne!(r.status, 0);
    assert!(
        r.stderr
            .contains("warning: BTFS_MAX_CONNECTIONS_PER_IP is no longer read"),
        "{}",
        r.stderr
    );
    let r = btfs_at(
        &repo,
        None,
        &[
            "bittorrent",
            "download",
            BARE_MAGNET,
            "--dht-bootstrap",
            "nohost",
        ],
    );
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("--dht-bootstrap"), "{}", r.stderr);
}

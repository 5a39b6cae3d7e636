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

/// The download of [`BARE_MAGNET`] in a fresh network namespace with only `lo` up,
/// under strace: the run, and every IP address it connected or sent to.
fn sealed_download(repo: &Path, profile: Option<&str>) -> (Run, Vec<String>) {
    let trace = repo.with_extension("strace");
    let exe = env!("CARGO_BIN_EXE_btfs");
    let script = format!(
        "ip link set lo up && exec {strace} -f -qq -e trace=connect,sendto,sendmsg,sendmmsg -o {trace} {exe} bittorrent download '{BARE_MAGNET}'",
        strace = common::tool("strace").display(),
        trace = trace.display(),
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
    let text = std::fs::read_to_string(&trace).expect("strace wrote its log");
    (run, addresses(&text))
}

/// The IP addresses in strace's `connect`/`send*` lines (`inet_addr("…")`,
/// `inet_pton(AF_INET6, "…"`).
fn addresses(strace: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in strace.lines() {
        for marker in ["inet_addr(\"", "inet_pton(AF_INET6, \""] {
            let mut rest = line;
            while let Some(i) = rest.find(marker) {
                rest = &rest[i + marker.len()..];
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_string());
                }
            }
        }
    }
    out
}

fn is_loopback(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback() || a.is_unspecified())
        .unwrap_or(false)
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
    // It tried: the resolver was asked (a non-loopback address here, unless the
    // machine's resolver is on loopback), and the message names all four hosts.
    let outside: Vec<&String> = addrs.iter().filter(|a| !is_loopback(a)).collect();
    let local_resolver = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .all(|ip| is_loopback(ip.trim()));
    assert!(
        !outside.is_empty() || local_resolver,
        "no attempt to reach a resolver: {addrs:?}"
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
    let outside: Vec<&String> = addrs.iter().filter(|a| !is_loopback(a)).collect();
    assert!(outside.is_empty(), "reached out: {outside:?}");
    // A repo made on first use with BTFS_PROFILE=test does the same.
    let repo2 = dir.path().join("repo2");
    let (run, addrs) = sealed_download(&repo2, Some("test"));
    assert_ne!(run.status, 0);
    assert!(
        run.stderr.contains("Bittorrent.DHT.Bootstrap"),
        "{}",
        run.stderr
    );
    assert!(addrs.iter().all(|a| is_loopback(a)), "{addrs:?}");
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
}

#[test]
fn refused_config_changes_name_the_key_and_leave_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init"]).ok();
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
}

#[test]
fn config_over_the_api_of_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    btfs_at(&repo, None, &["init"]).ok();
    let node = Node::start(&repo, &[]);
    let (status, body) = node.post("config?arg=Bittorrent.Port&arg=7001&json=true", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.post("config/show", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("7001"), "{body}");
    let (status, body) = node.post("config/profile/apply?arg=test", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Bittorrent.RandomPort"), "{body}");
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

//! The dashboard of `btfs daemon` (`/dashboard/` on the API address) in a real browser:
//! Debian's Chromium driven by playwright-core (tests/tools/browser) downloads a magnet
//! from a libtorrent seeder through the page, and a page of another origin (and a
//! re-bound host name) cannot drive the API.
//!
//! Node, Chromium and playwright-core come from scripts/install-deps; a missing one fails
//! these tests, it never skips them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the browser scripts may take, whole (they also end themselves earlier).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

/// `node` and the browser harness folder, or a panic telling how to install them.
fn browser_tools() -> (PathBuf, PathBuf) {
    let node = tool("node");
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: Debian's chromium package is required; run scripts/install-deps"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}; run scripts/install-deps",
        dir.display()
    );
    (node, dir)
}

/// The daemon's own view of its jobs, for failure messages.
fn jobs(node: &Node) -> String {
    let auth = format!("Bearer {}", node.token());
    match http(
        node.api,
        "POST",
        "/api/v1/bittorrent/jobs/ls",
        &[("Authorization", auth.as_str())],
    ) {
        Some(r) => format!("POST jobs/ls: {} {}", r.status, r.body),
        None => "POST jobs/ls: no answer".to_owned(),
    }
}

struct Resp {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request over a raw TcpStream to 127.0.0.1:`port`, with exactly these
/// extra headers; `Host` is 127.0.0.1:`port` unless `headers` gives one. None when
/// nothing (or no status line) came back.
fn http(port: u16, method: &str, target: &str, headers: &[(&str, &str)]) -> Option<Resp> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    sock.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    // On a read timeout what came so far is kept; the status line is what matters.
    let _ = sock.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some(Resp { status, body })
}

fn sha256_hex(path: &Path) -> String {
    let r = run_with_timeout(
        Command::new(tool("sha256sum")).arg(path),
        Duration::from_secs(30),
    )
    .ok();
    r.stdout.split_whitespace().next().unwrap().to_owned()
}

/// The last line of `out` that is a JSON object.
fn json_line(out: &str) -> Option<serde_json::Value> {
    out.lines().rev().find_map(|l| {
        serde_json::from_str::<serde_json::Value>(l.trim())
            .ok()
            .filter(|v| v.is_object())
    })
}

#[test]
fn dashboard_downloads_a_magnet_in_chromium() {
    let (node, browser) = browser_tools();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let seed = tmp.path().join("seed");
    let file = seed.join("dashboard.bin");
    write(&file, &data(3 << 20, 0xDA5B));
    let sha = sha256_hex(&file);

    // libtorrent makes the torrent and seeds it, rate-limited so the download lasts a
    // few of the detail view's once-a-second updates (the page must show a peer).
    let torrent = tmp.path().join("dashboard.torrent");
    lt(&["make", "v1", s(&file), s(&torrent), "32768"]);
    let info: serde_json::Value =
        serde_json::from_str(&lt(&["info", s(&torrent)]).stdout).expect("lt.py info prints JSON");
    let hash = info["v1"].as_str().expect("a v1 infohash").to_owned();
    let port = free_port();
    let _seeder = lt_seed_limited(&torrent, &seed, port, 768 << 10);
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=dashboard.bin&x.pe=127.0.0.1:{port}");

    // The CID that `btfs add` gives the file, with the same repo (and so its settings).
    let expected_cid = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &repo)
            .env_remove("BTFS_API_TOKEN")
            .args(["add", "-n", "-Q", s(&file)]),
        Duration::from_secs(60),
    )
    .ok()
    .stdout
    .trim()
    .to_owned();
    assert!(!expected_cid.is_empty(), "btfs add -n -Q printed no CID");

    let daemon = Node::start(&repo, &[]);
    // The page takes the API token from its fragment, as the daemon prints the URL.
    let page = format!("{}/dashboard/#token={}", daemon.base(), daemon.token());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    println!("dashboard screenshot: {}", shot.display());

    let run = run_bounded(
        Command::new(&node)
            .current_dir(&browser)
            .arg(browser.join("dashboard.mjs"))
            .args([page.as_str(), magnet.as_str(), s(&shot), sha.as_str()]),
        BROWSER_TIMEOUT,
    );
    let story = || {
        format!(
            "node dashboard.mjs {page} {magnet} {} {sha}\nstatus {}\nstdout:\n{}\nstderr:\n{}\n{}\nrepo {}, gateway 127.0.0.1:{}\nscreenshot: {}",
            shot.display(),
            run.status,
            run.stdout,
            run.stderr,
            jobs(&daemon),
            daemon.repo.display(),
            daemon.gateway,
            shot.display()
        )
    };
    assert_eq!(run.status, 0, "the dashboard run failed\n{}", story());
    let out = json_line(&run.stdout).unwrap_or_else(|| panic!("no JSON line\n{}", story()));
    assert_eq!(out["ok"], true, "{}", story());
    assert_eq!(
        out["cid"].as_str(),
        Some(expected_cid.as_str()),
        "the dashboard's gateway link names another CID than `btfs add -n -Q`\n{}",
        story()
    );
    assert_eq!(
        out["sha256"].as_str(),
        Some(sha.as_str()),
        "the gateway link's bytes differ from the file\n{}",
        story()
    );
    assert_eq!(out["bytes"], 3 << 20, "{}", story());
    assert!(
        out["peers"].as_array().is_some_and(|p| !p.is_empty()),
        "the detail view showed no peer\n{}",
        story()
    );
    assert!(
        out["pieces"].as_u64().is_some_and(|n| n == 96),
        "the piece map shows {} pieces, not 96 (3 MiB in 32 KiB pieces)\n{}",
        out["pieces"],
        story()
    );
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}\n{}", shot.display(), story()));
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG ({} bytes)",
        shot.display(),
        png.len()
    );
    println!("dashboard screenshot kept at {}", shot.display());
}

#[test]
fn cross_origin_requests_are_refused() {
    let (node, browser) = browser_tools();
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Node::start(&tmp.path().join("repo"), &[]);
    let api = daemon.api;
    let ls = "/api/v1/bittorrent/jobs/ls";

    // The page and its scripts are there, for the browser of the other test.
    let page = http(api, "GET", "/dashboard/", &[]).expect("GET /dashboard/ answered");
    assert_eq!(page.status, 200, "GET /dashboard/: {}", page.body);
    assert!(page.body.contains("app.js"), "{}", page.body);
    for f in ["app.js", "style.css"] {
        let r = http(api, "GET", &format!("/dashboard/{f}"), &[]).expect("answered");
        assert_eq!(r.status, 200, "GET /dashboard/{f}: {}", r.body);
    }

    let run = run_bounded(
        Command::new(&node)
            .current_dir(&browser)
            .arg(browser.join("crossorigin.mjs"))
            .arg(daemon.base())
            .arg(daemon.token()),
        BROWSER_TIMEOUT,
    );
    let story = || {
        format!(
            "node crossorigin.mjs {}\nstatus {}\nstdout:\n{}\nstderr:\n{}\n{}",
            daemon.base(),
            run.status,
            run.stdout,
            run.stderr,
            jobs(&daemon)
        )
    };
    assert_eq!(
        run.status,
        0,
        "a cross-origin request got through\n{}",
        story()
    );
    let out = json_line(&run.stdout).unwrap_or_else(|| panic!("no JSON line\n{}", story()));
    assert_eq!(out["ok"], true, "{}", story());

    // The same from Rust, byte for byte.
    let auth = format!("Bearer {}", daemon.token());
    let auth = ("Authorization", auth.as_str());
    let evil = http(api, "POST", ls, &[("Origin", "http://evil.example"), auth]).expect("answered");
    assert_eq!(
        evil.status, 403,
        "POST jobs/ls with Origin: http://evil.example: {}",
        evil.body
    );
    let msg = serde_json::from_str::<serde_json::Value>(&evil.body)
        .ok()
        .and_then(|v| v["Message"].as_str().map(str::to_owned));
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "the 403 is not a JSON error with a Message: {}",
        evil.body
    );
    let rebound = format!("evil.example:{api}");
    let r = http(api, "POST", ls, &[("Host", rebound.as_str()), auth]).expect("answered");
    assert_eq!(
        r.status, 403,
        "POST jobs/ls with Host: {rebound}: {}",
        r.body
    );
    let rebound_origin = format!("http://{rebound}");
    let r = http(
        api,
        "POST",
        ls,
        &[
            ("Host", rebound.as_str()),
            ("Origin", rebound_origin.as_str()),
        ],
    )
    .expect("answered");
    assert_eq!(
        r.status, 403,
        "POST jobs/ls with Host and Origin of a re-bound name: {}",
        r.body
    );
    let plain = http(api, "POST", ls, &[auth]).expect("answered");
    assert_eq!(
        plain.status, 200,
        "POST jobs/ls without Origin: {}",
        plain.body
    );
    let jobs: serde_json::Value = serde_json::from_str(plain.body.trim())
        .unwrap_or_else(|e| panic!("jobs/ls is not JSON ({e}): {}", plain.body));
    assert!(jobs["Jobs"].is_array(), "{}", plain.body);
    // The dashboard's own requests carry its origin (browsers send Origin on every POST).
    let own = format!("http://127.0.0.1:{api}");
    let r = http(api, "POST", ls, &[("Origin", own.as_str()), auth]).expect("answered");
    assert_eq!(r.status, 200, "POST jobs/ls with Origin: {own}: {}", r.body);
    // Without the token, even from the API's own origin: 401.
    let r = http(api, "POST", ls, &[("Origin", own.as_str())]).expect("answered");
    assert_eq!(r.status, 401, "POST jobs/ls without the token: {}", r.body);
}

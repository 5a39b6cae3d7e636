//! The daemon's HTTP API (`/api/v1/…`): every command over HTTP with the CLI's own
//! arguments, uploads, error shapes, downloads as jobs (streamed progress, pause, resume,
//! a daemon restart, removal), the command line going through a running daemon, and the
//! access rules (origin, host, token). The peers are real: libtorrent seeds.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A torrent of `len` random bytes with 64 KiB pieces, seeded by libtorrent (at `rate`
/// bytes/s, 0 for no limit); the data file, its magnet (x.pe only) and the seeder.
fn seeded(root: &Path, name: &str, len: usize, rate: u64) -> (std::path::PathBuf, String, Daemon) {
    let dir = root.join(format!("seed-{name}"));
    let file = dir.join(name);
    write(&file, &data(len, len as u64 ^ 7));
    let torrent = root.join(format!("{name}.torrent"));
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
        "--force",
    ])
    .ok();
    let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    let port = free_port();
    let seeder = lt_seed_limited(&torrent, &dir, port, rate);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn={name}&x.pe=127.0.0.1:{port}",
        info["InfoHash"].as_str().unwrap()
    );
    (file, magnet, seeder)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The root CID `btfs add` gives, computed in a repo of its own (no daemon there).
fn add_cid(root: &Path, path: &Path, recursive: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", root.join("reference-repo"))
        .args(["add", "-n", "-Q"]);
    if recursive {
        cmd.arg("-r");
    }
    run_with_timeout(cmd.arg(path), Duration::from_secs(60))
        .ok()
        .stdout
        .trim()
        .to_string()
}

fn job_state(node: &Node, id: &str) -> Value {
    let (st, body) = node.post(&format!("bittorrent/jobs/show?arg={id}"), &[]);
    assert_eq!(st, 200, "{body}");
    json(&body)
}

#[test]
fn every_command_over_http_with_the_cli_arguments_and_errors() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"), &[]);

    let (st, body) = node.post("version", &[]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["Version"], env!("CARGO_PKG_VERSION"));
    // The command tree comes from the same definitions as the command line.
    let (st, body) = node.post("commands", &[]);
    assert_eq!(st, 200);
    let tree = json(&body);
    let bt = tree["Subcommands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Name"] == "bittorrent")
        .unwrap();
    let names: Vec<&str> = bt["Subcommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    for n in [
        "download", "metainfo", "scrape", "bencode", "serve", "create", "jobs",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // add: files are uploaded (kubo's multipart form), folders as x-directory parts.
    let hello = t.path().join("hello.txt");
    write(&hello, b"hello\n");
    let (st, body) = node.post(
        "add",
        &["-F", &format!("file=@{};filename=hello.txt", s(&hello))],
    );
    assert_eq!(st, 200, "{body}");
    let added = json(&body);
    assert_eq!(added["Name"], "hello.txt");
    assert_eq!(
        added["Hash"],
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
    );
    // Content only this upload has, for gc below.
    let lone = t.path().join("lone.txt");
    write(&lone, b"only here\n");
    let (st, body) = node.post(
        "add",
        &["-F", &format!("file=@{};filename=lone.txt", s(&lone))],
    );
    assert_eq!(st, 200, "{body}");
    let lone_cid = json(&body)["Hash"].as_str().unwrap().to_string();
    assert_eq!(lone_cid, add_cid(t.path(), &lone, false));
    let dir = sample_dir(t.path(), "set");
    let mut form: Vec<String> = vec![
        "-F".into(),
        "file=@/dev/null;filename=set;type=application/x-directory".into(),
    ];
    for rel in ["a.bin", "empty", "z.bin", "sub/b.txt", "sub/deeper/c.bin"] {
        if rel.contains('/') {
            let parent = Path::new(rel).parent().unwrap().to_str().unwrap();
            form.push("-F".into());
            form.push(format!(
                "file=@/dev/null;filename=set%2F{};type=application/x-directory",
                parent.replace('/', "%2F")
            ));
        }
        form.push("-F".into());
        form.push(format!(
            "file=@{};filename=set%2F{}",
            s(&dir.join(rel)),
            rel.replace('/', "%2F")
        ));
    }
    let form: Vec<&str> = form.iter().map(String::as_str).collect();
    let (st, body) = node.post("add?recursive=true&quieter=true", &form);
    assert_eq!(st, 200, "{body}");
    let root = json(&body)["Hash"].as_str().unwrap().to_string();
    assert_eq!(
        root,
        add_cid(t.path(), &dir, true),
        "the uploaded folder's CID"
    );

    // Reading commands, with their options as query keys (long or short names).
    let (st, body) = node.post(
        "cat?arg=QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
        &[],
    );
    assert_eq!((st, body.as_str()), (200, "hello\n"));
    let (st, body) = node.post(
        "cat?arg=QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN&offset=1&l=3",
        &[],
    );
    assert_eq!((st, body.as_str()), (200, "ell"));
    let (st, body) = node.post(&format!("cat?arg={root}%2Fsub%2Fb.txt"), &[]);
    assert_eq!((st, body.as_str()), (200, "hello\n"));
    let (st, body) = node.post(&format!("ls?arg={root}"), &[]);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"a.bin\""), "{body}");
    let (st, body) = node.post(
        "ls?arg=QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN&enc=text",
        &[],
    );
    assert_eq!(st, 500, "a file is not a folder: {body}");
    let (st, body) = node.post("pin/ls", &[]);
    assert_eq!(st, 200);
    assert!(body.contains(&root), "{body}");
    let (st, body) = node.post(&format!("pin/rm?arg={lone_cid}"), &[]);
    assert_eq!(st, 200, "{body}");
    // gc through the daemon: the daemon lets go of its hold on the repo for it.
    let (st, body) = node.post("repo/gc", &[]);
    assert_eq!(st, 200, "{body}");
    assert!(json(&body)["Removed"].as_u64().unwrap() >= 1, "{body}");
    let (st, body) = node.post("repo/verify", &[]);
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.post(&format!("cat?arg={lone_cid}"), &[]);
    assert_eq!(st, 500, "collected: {body}");
    // The gateway is still served after gc took the repo for a moment.
    let (st, body) = curl(
        &format!("http://127.0.0.1:{}/btfs/{root}/sub/b.txt", node.gateway),
        "GET",
        &[],
    );
    assert_eq!((st, body.as_str()), (200, "hello\n"));

    // Commands that do not use the repo run the same way.
    let torrent = t.path().join("set.torrent");
    let (st, body) = node.post(
        &format!(
            "bittorrent/create?arg={}&o={}&piece-length=16KiB",
            enc(s(&dir)),
            enc(s(&torrent))
        ),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.post(&format!("bittorrent/metainfo?t={}", enc(s(&torrent))), &[]);
    assert_eq!(st, 200, "{body}");
    let meta = json(&body);
    assert_eq!(meta["Name"], "set");
    assert_eq!(meta["NumFiles"], 5);
    let (st, body) = node.post(&format!("bittorrent/bencode?f={}", enc(s(&torrent))), &[]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["info"]["name"], "set");
    let (st, body) = node.post(
        "bittorrent/metainfo?m=magnet%3A%3Fxt%3Durn%3Abtih%3A0123456789abcdef0123456789abcdef01234567&offline=true",
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = node.post("bittorrent/serve?list=true", &[]);
    assert_eq!((st, body.trim()), (200, ""));

    // A command that prints nothing for a long time still stops when its client goes:
    // a seeder run through the API frees its port once the request is gone.
    let port = free_port();
    let (st, body) = node.post(
        &format!(
            "bittorrent/serve?arg={}&port={port}&listen-ip=127.0.0.1&no-dht=true&no-add=true",
            enc(s(&hello))
        ),
        &["--max-time", "3"],
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("magnet:?xt=urn:btih:"), "{body}");
    poll(
        Duration::from_secs(30),
        "the seeder run through the API did not stop with its request",
        String::new,
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );

    // Error shapes: JSON with Message, Code and Type, and a status that says what kind.
    let err = |path: &str, args: &[&str], want: u16| {
        let (st, body) = node.post(path, args);
        assert_eq!(st, want, "{path}: {body}");
        let v = json(&body);
        assert_eq!(v["Type"], "error", "{body}");
        assert!(!v["Message"].as_str().unwrap().is_empty(), "{body}");
        v["Message"].as_str().unwrap().to_string()
    };
    err("nonsense", &[], 404);
    err("bittorrent/nonsense", &[], 404);
    assert!(err("add?no-such-option=1", &[], 400).contains("no-such-option"));
    assert!(err("cat", &[], 400).contains("PATH") || err("cat", &[], 400).contains("required"));
    err("pin", &[], 400);
    err("add?recursive=maybe", &[], 400);
    assert!(err("cat?arg=QmBAD", &[], 500).contains("CID"));
    err("daemon", &[], 400);
    err("add?arg=/etc/passwd", &[], 400);
    err("bittorrent/download?arg=not-a-magnet", &[], 400);
    err("bittorrent/download", &[], 400);
    err("bittorrent/jobs/show?arg=nope", &[], 404);
    let (st, body) = node.request("GET", "version", &[]);
    assert_eq!(st, 405, "{body}");
    // An upload cannot name a place outside its folder.
    for bad in ["..%2Fevil", "%2Fetc%2Fevil", "a%2F..%2F..%2Fevil"] {
        err(
            "add",
            &["-F", &format!("file=@{};filename={bad}", s(&hello))],
            400,
        );
    }
    assert!(!t.path().join("evil").exists() && !node.repo.join("evil").exists());
    // Nor through a symbolic link of the same upload.
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link_body = t.path().join("link-body");
    write(&link_body, s(&outside).as_bytes());
    for second in ["d%2Fx", "d"] {
        err(
            "add?recursive=true",
            &[
                "-F",
                &format!(
                    "file=@{};filename=d;type=application/symlink",
                    s(&link_body)
                ),
                "-F",
                &format!("file=@{};filename={second}", s(&hello)),
            ],
            400,
        );
    }
    let (st, body) = node.post(
        "add?recursive=true",
        &[
            "-F",
            "file=@/dev/null;filename=d;type=application/x-directory",
            "-F",
            &format!(
                "file=@{};filename=d%2Fl;type=application/symlink",
                s(&link_body)
            ),
            "-F",
            &format!("file=@{};filename=d%2Fl%2Fx", s(&hello)),
        ],
    );
    assert_eq!(st, 400, "{body}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside"
    );
    // A broken .torrent upload is refused before any job exists.
    let junk = t.path().join("junk.torrent");
    write(&junk, b"d4:infoi1ee");
    err(
        "bittorrent/download",
        &["-F", &format!("file=@{}", s(&junk))],
        400,
    );
    let (_, body) = node.post("bittorrent/jobs/ls", &[]);
    assert_eq!(json(&body)["Jobs"].as_array().unwrap().len(), 0);
    // Nothing of the uploads is left behind.
    let uploads = node.repo.join("api-uploads");
    assert!(
        !uploads.exists() || std::fs::read_dir(&uploads).unwrap().count() == 0,
        "uploads left in {}",
        uploads.display()
    );
}

#[test]
fn downloads_are_jobs_streamed_paused_resumed_and_kept_across_restarts() {
    let t = tempfile::tempdir().unwrap();
    let mut node = Node::start(&t.path().join("repo"), &[]);

    // A download streamed as newline-delimited JSON, from a real libtorrent seeder.
    let (file, magnet, _seeder) = seeded(t.path(), "stream.bin", 3_000_000, 2_000_000);
    let (st, body) = node.post(&format!("bittorrent/download?arg={}", enc(&magnet)), &[]);
    assert_eq!(st, 200, "{body}");
    let events = ndjson(&body);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["Type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"job"), "{kinds:?}");
    for k in [
        "metadata", "torrent", "progress", "added", "imported", "summary",
    ] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    let end = &events.last().unwrap()["Job"];
    assert_eq!(end["State"], "completed", "{end}");
    let cid = add_cid(t.path(), &file, false);
    assert_eq!(end["Cid"], cid.as_str());
    assert_eq!(end["Progress"], 1.0);
    // Progress events carry the peers (with their client), the piece map and files.
    let detailed = events
        .iter()
        .filter(|e| e["Type"] == "progress")
        .find(|e| {
            e["Detail"]["PeerList"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        })
        .expect("a progress event with peers");
    assert!(
        detailed["Detail"]["PeerList"][0]["Client"]
            .as_str()
            .unwrap_or("")
            .contains("libtorrent"),
        "{detailed}"
    );
    let id = end["Id"].as_str().unwrap().to_string();
    let shown = job_state(&node, &id);
    assert_eq!(shown["Files"][0]["Cid"], cid.as_str(), "{shown}");
    assert_eq!(shown["PieceCount"], 46);
    assert_eq!(shown["PieceMap"].as_str().unwrap().len(), 12, "{shown}");
    let (st, bytes) = curl(
        end["GatewayUrl"].as_str().unwrap(),
        "GET",
        &["-o", s(&t.path().join("got"))],
    );
    assert_eq!(st, 200, "{bytes}");
    assert_same_tree(&file, &t.path().join("got"));

    // A detached job, paused part-way, survives a restart of the daemon paused, then
    // resumes and completes; a job running at a restart starts again by itself.
    let (file2, magnet2, _seeder2) = seeded(t.path(), "slow.bin", 6_000_000, 1_000_000);
    let (st, body) = node.post(
        &format!("bittorrent/download?arg={}&detach=true", enc(&magnet2)),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let id2 = json(&body)["Id"].as_str().unwrap().to_string();
    poll(
        Duration::from_secs(60),
        "the slow job did not start downloading",
        String::new,
        || {
            let j = job_state(&node, &id2);
            (j["State"] == "downloading" && j["Have"].as_u64().unwrap() > 0).then_some(())
        },
    );
    let (st, body) = node.post(&format!("bittorrent/jobs/pause?arg={id2}"), &[]);
    assert_eq!(st, 200, "{body}");
    let paused = json(&body);
    assert_eq!(paused["State"], "paused", "{paused}");
    let have = paused["Have"].as_u64().unwrap();
    assert!(have > 0 && have < 6_000_000, "{paused}");
    assert_eq!(node.stop(), Some(0), "the daemon stops cleanly");
    node.restart(&[]);
    let j = job_state(&node, &id2);
    assert_eq!(j["State"], "paused", "{j}");
    let (st, body) = node.post(&format!("bittorrent/jobs/resume?arg={id2}"), &[]);
    assert_eq!(st, 200, "{body}");
    poll(
        Duration::from_secs(60),
        "the resumed job did not run",
        String::new,
        || {
            let j = job_state(&node, &id2);
            (j["State"] == "downloading" && j["Have"].as_u64().unwrap() > have).then_some(())
        },
    );
    assert_eq!(node.stop(), Some(0));
    node.restart(&[]);
    let done = poll(
        Duration::from_secs(90),
        "the job did not complete after the restart",
        String::new,
        || {
            let j = job_state(&node, &id2);
            (j["State"] == "completed").then_some(j)
        },
    );
    assert_eq!(
        done["Cid"],
        add_cid(t.path(), &file2, false).as_str(),
        "{done}"
    );

    // Removing with its data unpins the content; a second removal is a 404.
    let (st, body) = node.post(
        &format!("bittorrent/jobs/rm?arg={id2}&delete-data=true"),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let (_, pins) = node.post("pin/ls", &[]);
    assert!(!pins.contains(done["Cid"].as_str().unwrap()), "{pins}");
    assert!(
        pins.contains(&cid),
        "the other job's content stays pinned: {pins}"
    );
    let (st, _) = node.post(&format!("bittorrent/jobs/rm?arg={id2}"), &[]);
    assert_eq!(st, 404);
    let (_, body) = node.post("bittorrent/jobs/ls", &[]);
    let list = json(&body);
    let ids: Vec<&str> = list["Jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
}

#[test]
fn the_command_line_goes_through_a_running_daemon() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"), &[]);
    let dir = sample_dir(t.path(), "set");

    // The same output as without a daemon, text and JSON.
    let alone = |args: &[&str]| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", t.path().join("alone"))
                .args(args),
            Duration::from_secs(60),
        )
        .ok()
    };
    for args in [
        &["add", "-r", s(&dir)][..],
        &["--enc", "json", "add", "-r", "-w", s(&dir)],
        &["add", "-r", "--cid-version", "1", s(&dir)],
    ] {
        let via = node.btfs(args).ok();
        assert_eq!(via.stdout, alone(args).stdout, "{args:?}");
    }
    let via = node
        .btfs(&["cat", "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"])
        .ok();
    assert_eq!(via.stdout, "hello\n");
    // Errors keep their text and exit code.
    let bad = node.btfs(&["cat", "QmBAD"]);
    assert_eq!(bad.status, 1);
    assert_eq!(bad.stderr, alone_err(t.path(), &["cat", "QmBAD"]));
    // gc goes through the daemon too; alone it would be refused while the daemon holds
    // the repo.
    let lone = t.path().join("lone.txt");
    write(&lone, b"only here\n");
    let cid = node
        .btfs(&["add", "-Q", s(&lone)])
        .ok()
        .stdout
        .trim()
        .to_string();
    node.btfs(&["pin", "rm", &cid]).ok();
    let gc = node.btfs(&["repo", "gc"]).ok();
    assert!(gc.stdout.contains("removed 1 block"), "{}", gc.stdout);
    let direct = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &node.repo)
            .env("BTFS_DAEMON_CHILD", "1")
            .args(["repo", "gc"]),
        Duration::from_secs(60),
    );
    assert_eq!(
        direct.status, 1,
        "gc beside the daemon's hold must be refused"
    );
    assert!(direct.stderr.contains("in use by pid"), "{}", direct.stderr);

    // A download from the command line runs as a job: its progress is shown here, and
    // Ctrl-C cancels the job in the daemon.
    let (file, magnet, _seeder) = seeded(t.path(), "cli.bin", 4_000_000, 500_000);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", &node.repo)
        .args(["--enc", "json", "bittorrent", "download", &magnet]);
    let cli = Daemon::spawn("btfs download through the daemon", &mut cmd);
    cli.wait_for(
        "a progress event with bytes",
        Duration::from_secs(60),
        |l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["Type"] == "progress" && v["BytesHave"].as_u64() > Some(0))
        },
    );
    cli.interrupt();
    let (status, _) = cli.finish(Duration::from_secs(30));
    assert_eq!(status, Some(1), "an interrupted download exits 1");
    let (_, body) = node.post("bittorrent/jobs/ls", &[]);
    let jobs = json(&body)["Jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{body}");
    let id = jobs[0]["Id"].as_str().unwrap().to_string();
    poll(
        Duration::from_secs(30),
        "the job was not cancelled",
        || body.clone(),
        || (job_state(&node, &id)["State"] == "cancelled").then_some(()),
    );
    // jobs commands in text, and --detach.
    let ls = node.btfs(&["bittorrent", "jobs", "ls"]).ok();
    assert!(
        ls.stdout.contains(&id) && ls.stdout.contains("cancelled"),
        "{}",
        ls.stdout
    );
    let resumed = node.btfs(&["bittorrent", "jobs", "resume", &id]).ok();
    assert!(resumed.stdout.contains(&id), "{}", resumed.stdout);
    node.btfs(&["bittorrent", "jobs", "rm", &id]).ok();
    // A .torrent file is uploaded to the daemon; the download carries on from the
    // pieces the cancelled job verified.
    let torrent = t.path().join("cli.bin.torrent");
    let peer = magnet.rsplit_once("x.pe=").unwrap().1;
    let got = node
        .btfs(&["bittorrent", "download", "-t", s(&torrent), "--peer", peer])
        .ok();
    let added = format!("added {} cli.bin", add_cid(t.path(), &file, false));
    assert!(
        got.stdout.contains(&added),
        "{}\n{}",
        got.stdout,
        got.stderr
    );
    assert!(
        got.stdout
            .contains(&format!("gateway: http://127.0.0.1:{}/btfs/", node.gateway)),
        "{}",
        got.stdout
    );
    let detached = node
        .btfs(&[
            "--enc",
            "json",
            "bittorrent",
            "download",
            "--detach",
            &magnet,
        ])
        .ok();
    let job = detached.json();
    assert!(job["Id"].as_str().is_some(), "{}", detached.stdout);
    node.btfs(&["bittorrent", "jobs", "rm", job["Id"].as_str().unwrap()])
        .ok();

    // Ctrl-C on a command run through the daemon stops it there as Ctrl-C stops it
    // here: a seeder ends cleanly, its closing summary arrives, and the exit code is 0.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", &node.repo).args([
        "--enc",
        "json",
        "bittorrent",
        "serve",
        s(&lone),
        "--port",
        &port.to_string(),
        "--listen-ip",
        "127.0.0.1",
        "--no-dht",
        "--no-add",
    ]);
    let serve = Daemon::spawn("btfs serve through the daemon", &mut cmd);
    serve.wait_for_line("magnet:?xt=urn:btih:", Duration::from_secs(30));
    serve.interrupt();
    let (status, lines) = serve.finish(Duration::from_secs(40));
    assert_eq!(status, Some(0), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("\"Type\":\"summary\"")),
        "no summary after Ctrl-C: {lines:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still seeding"
    );

    // Without a daemon the jobs commands say so, and --detach too.
    drop(node);
    let repo = t.path().join("repo");
    for args in [
        &["bittorrent", "jobs", "ls"][..],
        &["bittorrent", "download", "--detach", &magnet],
    ] {
        let r = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(args),
            Duration::from_secs(30),
        );
        assert_eq!(r.status, 1, "{args:?}");
        assert!(r.stderr.contains("daemon"), "{}", r.stderr);
    }
}

fn alone_err(root: &Path, args: &[&str]) -> String {
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", root.join("alone"))
            .args(args),
        Duration::from_secs(60),
    )
    .stderr
}

#[test]
fn the_api_refuses_other_origins_and_hosts_and_checks_its_token() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"), &[]);
    let refused = |headers: &[&str], want: u16| {
        let mut args = Vec::new();
        for h in headers {
            args.extend(["-H", h]);
        }
        let (st, body) = node.post("bittorrent/jobs/ls", &args);
        assert_eq!(st, want, "{headers:?}: {body}");
        if want != 200 {
            assert_eq!(json(&body)["Type"], "error");
        }
    };
    refused(&[], 200);
    refused(&[&format!("Origin: http://127.0.0.1:{}", node.api)], 200);
    refused(&["Origin: http://evil.example"], 403);
    refused(&["Origin: null"], 403);
    refused(
        &[&format!("Origin: http://127.0.0.1:{}", node.gateway)],
        403,
    );
    refused(&["Referer: http://evil.example/page"], 403);
    refused(&["Sec-Fetch-Site: cross-site"], 403);
    refused(&[&format!("Host: evil.example:{}", node.api)], 403);
    refused(
        &[&format!("Host: localhost.evil.example:{}", node.api)],
        403,
    );
    refused(&[&format!("Host: localhost:{}", node.api)], 200);
    // A form a hostile page posts (text/plain, no preflight) is refused as well.
    let (st, _) = node.post(
        "bittorrent/download?arg=magnet%3A%3Fxt%3Durn%3Abtih%3A0123456789abcdef0123456789abcdef01234567&detach=true",
        &["-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain", "--data", "x"],
    );
    assert_eq!(st, 403);
    let (_, body) = node.post("bittorrent/jobs/ls", &[]);
    assert_eq!(json(&body)["Jobs"].as_array().unwrap().len(), 0);

    // Every request needs the token (a fresh one each run unless one is chosen); the
    // command line finds it in the repo, the dashboard's files need none.
    let api = |node: &Node, path: &str, args: &[&str]| {
        curl(&format!("{}/api/v1/{path}", node.base()), "POST", args).0
    };
    let first = node.token();
    assert_eq!(first.len(), 32);
    assert_eq!(api(&node, "version", &[]), 401);
    assert_eq!(
        api(&node, "version", &["-H", "Authorization: Bearer wrong"]),
        401
    );
    assert_eq!(
        curl(&format!("{}/dashboard/", node.base()), "GET", &[]).0,
        200
    );
    let mode = std::fs::metadata(node.repo.join("api.token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    drop(node);
    let mut node = Node::start(&t.path().join("repo2"), &["--api-token", "s3cret"]);
    assert_eq!(node.token(), "s3cret");
    // The repo is private, and who holds it is recorded without the command's arguments.
    let pid = node.daemon.as_ref().unwrap().pid();
    let owner = std::fs::read_to_string(node.repo.join("owners").join(pid.to_string())).unwrap();
    assert_eq!(owner, "btfs daemon");
    let mode = std::fs::metadata(&node.repo).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    assert_eq!(api(&node, "version", &[]), 401);
    assert_eq!(
        api(&node, "version", &["-H", "Authorization: Bearer s3cret"]),
        200
    );
    node.btfs(&["bittorrent", "jobs", "ls"]).ok();
    // One daemon per repo.
    let second = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &node.repo)
            .args(["daemon", "--api", "127.0.0.1:0", "--gateway", "127.0.0.1:0"]),
        Duration::from_secs(30),
    );
    assert_eq!(second.status, 1);
    assert!(second.stderr.contains("already runs"), "{}", second.stderr);
    assert_eq!(node.stop(), Some(0));
    assert!(!node.repo.join("api.token").exists() && !node.repo.join("api").exists());

    // An API for other machines needs a token.
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", t.path().join("repo3"))
            .env_remove("BTFS_API_TOKEN")
            .args(["daemon", "--api", "0.0.0.0:0", "--gateway", "127.0.0.1:0"]),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("token"), "{}", r.stderr);
}

#[test]
fn a_seeding_job_seeds_again_after_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let mut node = Node::start(&t.path().join("repo"), &[]);
    // A fixed port in the config: each job still listens on a random port of its own
    // (20 jobs would use up the range after a fixed one).
    node.btfs(&["config", "--bool", "Bittorrent.RandomPort", "false"])
        .ok();
    node.btfs(&["config", "--json", "Bittorrent.Port", "20000"])
        .ok();
    let (file, magnet, seeder) = seeded(t.path(), "seedme.bin", 2_000_000, 0);
    let (st, body) = node.post(
        &format!(
            "bittorrent/download?arg={}&seed=true&detach=true&listen-ip=127.0.0.1",
            enc(&magnet)
        ),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let id = json(&body)["Id"].as_str().unwrap().to_string();
    let seeding = |node: &Node| {
        poll(
            Duration::from_secs(60),
            "the job did not seed",
            || job_state(node, &id).to_string(),
            || {
                let j = job_state(node, &id);
                // The import runs beside the seeding, so the root CID may come a moment later.
                (j["State"] == "seeding" && j["ListenPort"].is_u64() && j["Cid"].is_string())
                    .then_some(j)
            },
        )
    };
    let j = seeding(&node);
    assert_eq!(j["Cid"], add_cid(t.path(), &file, false).as_str(), "{j}");
    let port = j["ListenPort"].as_u64().unwrap();
    assert!((49152..=65535).contains(&port), "{port}");
    // The first seeder goes; after a restart of the daemon the job is the only source.
    drop(seeder);
    assert_eq!(node.stop(), Some(0));
    node.restart(&[]);
    let j = seeding(&node);
    let peer = format!("127.0.0.1:{}", j["ListenPort"]);
    let out = t.path().join("leech");
    let got = lt(&[
        "leech",
        s(&t.path().join("seedme.bin.torrent")),
        s(&out),
        "0",
        &peer,
        "60",
    ]);
    assert!(got.stdout.contains("done"), "{}{}", got.stdout, got.stderr);
    assert_same_tree(&file, &out.join("seedme.bin"));
    // Removing it with its data removes the files it kept for seeding.
    let (st, body) = node.post(
        &format!("bittorrent/jobs/rm?arg={id}&delete-data=true"),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    assert!(!node.repo.join("bittorrent/jobs").join(&id).exists());
}

/// `jobs rm --delete-data` deletes the files of the job's verified torrent and the
/// folders they leave empty, nothing else: not a folder the magnet's `dn` names when the
/// metadata never came, not a user's file beside or inside the torrent's folder, not the
/// user's files of the torrent's names when the job failed before setting up its files.
#[test]
fn removing_a_job_deletes_only_the_files_of_its_verified_torrent() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"), &[]);
    let rm = |id: &str| {
        let (st, body) = node.post(
            &format!("bittorrent/jobs/rm?arg={id}&delete-data=true"),
            &[],
        );
        assert_eq!(st, 200, "{body}");
    };
    let detach = |magnet: &str, out: &Path| {
        let (st, body) = node.post(
            &format!(
                "bittorrent/download?arg={}&detach=true&output={}",
                enc(magnet),
                enc(s(out))
            ),
            &[],
        );
        assert_eq!(st, 200, "{body}");
        json(&body)["Id"].as_str().unwrap().to_string()
    };

    // No metadata ever comes (the only tracker never answers): `dn=victim` names a
    // folder of the user's that the job never wrote.
    let out = t.path().join("out");
    write(&out.join("victim/keep.txt"), b"not btfs's");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=victim&tr=udp://{}",
        "3c".repeat(20),
        silent.local_addr().unwrap()
    );
    let id = detach(&magnet, &out);
    poll(
        Duration::from_secs(30),
        "the job did not look for its metadata",
        || job_state(&node, &id).to_string(),
        || (job_state(&node, &id)["State"] == "metadata").then_some(()),
    );
    rm(&id);
    assert_eq!(
        std::fs::read(out.join("victim/keep.txt")).unwrap(),
        b"not btfs's"
    );

    // A complete multi-file download into a folder that holds other files: its files
    // and emptied folders go, the user's files (one added inside the torrent's folder
    // afterwards) stay, and so do the folders that hold them.
    let (data, torrent) = sample_torrent(t.path(), None);
    let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    let port = free_port();
    let _seeder = lt_seed(&torrent, data.parent().unwrap(), port);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=set&x.pe=127.0.0.1:{port}",
        info["InfoHash"].as_str().unwrap()
    );
    let out = t.path().join("out2");
    write(&out.join("other.txt"), b"mine");
    let id = detach(&magnet, &out);
    poll(
        Duration::from_secs(60),
        "the download did not complete",
        || job_state(&node, &id).to_string(),
        || (job_state(&node, &id)["State"] == "completed").then_some(()),
    );
    assert_same_tree(&data, &out.join("set"));
    write(&out.join("set/mine.txt"), b"mine too");
    rm(&id);
    let mut left: Vec<String> = Vec::new();
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            left.push(p.strip_prefix(&out).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    left.sort();
    assert_eq!(left, ["other.txt", "set", "set/mine.txt"]);

    // The metadata is verified (a .torrent upload) but the files cannot be set up: a
    // folder stands where the torrent's first file goes. The job fails before it names
    // any file, so removing it with its data deletes none of the user's files that have
    // the torrent's names.
    let out = t.path().join("out3");
    std::fs::create_dir_all(out.join("set/a.bin")).unwrap();
    write(&out.join("set/z.bin"), b"mine");
    write(&out.join("set/sub/b.txt"), b"mine");
    let (st, body) = node.post(
        &format!("bittorrent/download?detach=true&output={}", enc(s(&out))),
        &["-F", &format!("file=@{}", s(&torrent))],
    );
    assert_eq!(st, 200, "{body}");
    let id = json(&body)["Id"].as_str().unwrap().to_string();
    poll(
        Duration::from_secs(30),
        "the job did not fail",
        || job_state(&node, &id).to_string(),
        || (job_state(&node, &id)["State"] == "failed").then_some(()),
    );
    rm(&id);
    assert_eq!(std::fs::read(out.join("set/z.bin")).unwrap(), b"mine");
    assert_eq!(std::fs::read(out.join("set/sub/b.txt")).unwrap(), b"mine");
    assert!(out.join("set/a.bin").is_dir());
}

#[test]
fn downloads_wait_their_turn_in_the_queue() {
    let t = tempfile::tempdir().unwrap();
    let limit = ["--max-active-downloads", "1"];
    let mut node = Node::start(&t.path().join("repo"), &limit);
    // A magnet whose only tracker never answers holds the one slot: its job looks for
    // the metadata until it is cancelled.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stuck = format!(
        "magnet:?xt=urn:btih:{}&dn=stuck&tr=udp://{}",
        "5a".repeat(20),
        silent.local_addr().unwrap()
    );
    let detach = |magnet: &str| {
        let (st, body) = node.post(
            &format!("bittorrent/download?arg={}&detach=true", enc(magnet)),
            &[],
        );
        assert_eq!(st, 200, "{body}");
        json(&body)
    };
    let a = detach(&stuck)["Id"].as_str().unwrap().to_string();
    poll(
        Duration::from_secs(30),
        "the first job did not look for its metadata",
        || job_state(&node, &a).to_string(),
        || (job_state(&node, &a)["State"] == "metadata").then_some(()),
    );
    let (file, magnet, _seeder) = seeded(t.path(), "queued.bin", 1_500_000, 0);
    let b = detach(&magnet);
    assert_eq!(b["State"], "queued", "{b}");
    let b = b["Id"].as_str().unwrap().to_string();

    // A download streamed while it waits ends with its `end` event when it is
    // cancelled, though no process ran for it.
    let (stream, c) = stream_download(&node, &stuck.replace("5a", "6b"));
    assert_eq!(c["State"], "queued", "{c}");
    let (st, body) = node.post(
        &format!("bittorrent/jobs/cancel?arg={}", c["Id"].as_str().unwrap()),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["State"], "cancelled", "{body}");
    let (st, body) = stream.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let events = ndjson(&body);
    assert_eq!(events.first().unwrap()["Job"]["State"], "queued", "{body}");
    let end = events.last().unwrap();
    assert_eq!(end["Type"], "end", "{body}");
    assert_eq!(end["Job"]["State"], "cancelled", "{body}");

    // Paused and resumed, a queued job goes back to the queue.
    let (st, body) = node.post(&format!("bittorrent/jobs/pause?arg={b}"), &[]);
    assert_eq!(
        (st, json(&body)["State"].clone()),
        (200, "paused".into()),
        "{body}"
    );
    let (st, body) = node.post(&format!("bittorrent/jobs/resume?arg={b}"), &[]);
    assert_eq!(
        (st, json(&body)["State"].clone()),
        (200, "queued".into()),
        "{body}"
    );
    // The queue survives a restart of the daemon: the oldest job runs first. A stream
    // of a queued job ends when the daemon stops (and its job stays queued).
    let (stream, d) = stream_download(&node, &stuck.replace("5a", "7c"));
    assert_eq!(node.stop(), Some(0));
    let (st, body) = stream.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let end = ndjson(&body).pop().unwrap();
    assert_eq!(end["Type"], "end", "{body}");
    assert_eq!(end["Job"]["State"], "queued", "{body}");
    node.restart(&limit);
    poll(
        Duration::from_secs(30),
        "the first job did not start again",
        || job_state(&node, &a).to_string(),
        || (job_state(&node, &a)["State"] == "metadata").then_some(()),
    );
    assert_eq!(job_state(&node, &b)["State"], "queued");
    assert_eq!(
        job_state(&node, d["Id"].as_str().unwrap())["State"],
        "queued"
    );
    // The slot freed, the waiting job downloads.
    let (st, body) = node.post(&format!("bittorrent/jobs/cancel?arg={a}"), &[]);
    assert_eq!(st, 200, "{body}");
    let done = poll(
        Duration::from_secs(60),
        "the queued job did not complete",
        || job_state(&node, &b).to_string(),
        || {
            let j = job_state(&node, &b);
            (j["State"] == "completed").then_some(j)
        },
    );
    assert_eq!(
        done["Cid"],
        add_cid(t.path(), &file, false).as_str(),
        "{done}"
    );
}

/// Starts `POST bittorrent/download?arg=MAGNET` on a thread (its stream ends with the
/// job), and returns it with the job once the daemon lists it.
fn stream_download(node: &Node, magnet: &str) -> (std::thread::JoinHandle<(u16, String)>, Value) {
    let auth = format!("Authorization: Bearer {}", node.token());
    let url = format!(
        "{}/api/v1/bittorrent/download?arg={}",
        node.base(),
        enc(magnet)
    );
    let stream = std::thread::spawn(move || curl(&url, "POST", &["-H", &auth]));
    let info_hash = magnet
        .parse::<bittorrent::Magnet>()
        .map(|m| m.wire_info_hash().to_hex())
        .unwrap_or_default();
    let job = poll(
        Duration::from_secs(30),
        "the streamed job was not listed",
        String::new,
        || {
            let (_, body) = node.post("bittorrent/jobs/ls", &[]);
            json(&body)["Jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["InfoHash"] == info_hash.as_str())
                .cloned()
        },
    );
    (stream, job)
}

/// The lines `btfs daemon` prints (output and errors) until it is ready, for a repo at
/// `repo`; the daemon is stopped after.
fn daemon_start_lines(repo: &Path) -> Vec<String> {
    let d = Daemon::spawn(
        "btfs daemon",
        Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" 2>&1", env!("CARGO_BIN_EXE_btfs")])
            .env("BTFS_PATH", repo)
            .env_remove("BTFS_API_TOKEN")
            .args(["daemon", "--api", "127.0.0.1:0", "--gateway", "127.0.0.1:0"]),
    );
    let lines = std::cell::RefCell::new(Vec::new());
    d.wait_for("daemon is ready", Duration::from_secs(30), |l| {
        lines.borrow_mut().push(l.to_string());
        l.contains("daemon is ready")
    });
    lines.into_inner()
}

/// A repo folder other users can read (made by an older btfs, or by hand) is named in
/// one warning line with the `chmod 700` that fixes it; btfs does not change it itself.
/// A private repo gets no warning.
#[test]
fn the_daemon_warns_about_a_repo_open_to_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lines = daemon_start_lines(&open);
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{lines:?}");
    assert!(
        warnings[0].contains(s(&open)) && warnings[0].contains(&format!("chmod 700 {}", s(&open))),
        "{}",
        warnings[0]
    );
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the daemon changed the repo's mode");

    let private = t.path().join("private");
    let lines = daemon_start_lines(&private);
    assert!(!lines.iter().any(|l| l.contains("warning")), "{lines:?}");
}

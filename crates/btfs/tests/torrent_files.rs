//! Hostile and unusual `.torrent` files: the work and memory a torrent can make btfs
//! spend (tens of thousands of trackers, millions of tiny bencode values, oversized
//! uploads to the daemon), and torrents that other clients load although their file
//! names must be rewritten before they can be written to disk.

mod common;

use bittorrent::bencode::OwnedValue as O;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bstr(x: &str) -> O {
    O::bytes(x.as_bytes())
}

/// A single-file torrent of 5 bytes announcing `n` distinct tracker URLs in one tier.
fn torrent_with_trackers(n: usize) -> Vec<u8> {
    let urls = (0..n)
        .map(|i| bstr(&format!("http://127.0.0.1:{}/a/{i}", 1024 + i % 60000)))
        .collect();
    O::dict([
        ("announce-list", O::List(vec![O::List(urls)])),
        (
            "info",
            O::dict([
                ("name", bstr("five.bin")),
                ("piece length", O::int(16384)),
                ("pieces", O::Bytes(vec![0xab; 20])),
                ("length", O::int(5)),
            ]),
        ),
    ])
    .encode()
}

/// What a finished command printed, how it ended, and the most memory it held.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
}

/// Runs `cmd` under GNU time, which reports its child's own peak resident memory (a
/// child's `ru_maxrss` read here would include this test process's own peak, which a
/// spawned process inherits until it execs), and prlimit, which caps it at 4 GiB of
/// address space so a btfs that does not bound its memory fails an allocation rather
/// than taking the machine's memory. Killed (its process group, by id) when it outlives
/// `timeout`.
fn run_measured(cmd: &mut Command, dir: &Path, timeout: Duration) -> Measured {
    let out = dir.join("measured.out");
    let err = dir.join("measured.err");
    let rss = dir.join("measured.rss");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .args(["prlimit", "--as=4294967296", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let mut child = wrapped
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawning btfs under /usr/bin/time");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: signals the process group this test created, by its id.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{cmd:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rss = std::fs::read_to_string(&rss).unwrap_or_default();
    Measured {
        // time exits as its child did, or 128 + the signal that ended it.
        code: status.code().filter(|&c| c < 128),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        max_rss_kib: rss
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {rss:?}")),
    }
}

/// Generous: what btfs itself needs plus the input, far below the gigabytes that
/// millions of values once cost.
const MAX_RSS_KIB: i64 = 512 << 10;

#[test]
fn millions_of_tiny_values_are_refused_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    // 64 MiB of `l0:0:0:…e`: 33.5 million empty strings in one list.
    let big = t.path().join("big.bin");
    let mut bytes = Vec::with_capacity(64 << 20);
    bytes.push(b'l');
    bytes.extend(b"0:".repeat(((64 << 20) - 2) / 2));
    bytes.push(b'e');
    write(&big, &bytes);
    // 16 MiB of the same: a size a .torrent may have, still far too many values.
    let torrent_sized = t.path().join("torrent-sized.bin");
    write(
        &torrent_sized,
        &[&b"l"[..], &b"0:".repeat((16 << 20) / 2 - 1), b"e"].concat(),
    );
    for (args, file, expect) in [
        (
            &["bittorrent", "bencode", "-f"][..],
            &big,
            "invalid bencode at byte 7999999: more than 4000000 values",
        ),
        (
            &["bittorrent", "metainfo", "-t"],
            &big,
            "larger than the limit of 16777216",
        ),
        (
            &["bittorrent", "metainfo", "-t"],
            &torrent_sized,
            "invalid bencode at byte 7999999: more than 4000000 values",
        ),
    ] {
        let r = run_measured(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", t.path().join("repo"))
                .args(args)
                .arg(file),
            t.path(),
            Duration::from_secs(300),
        );
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(
            r.max_rss_kib < MAX_RSS_KIB,
            "{args:?} {}: peak RSS {} MiB",
            file.display(),
            r.max_rss_kib >> 10
        );
    }
    // Just under the limit, the whole list is decoded and printed, still in bounded
    // memory.
    let most = t.path().join("most.bin");
    write(&most, &[&b"l"[..], &b"0:".repeat(3_999_999), b"e"].concat());
    let r = run_measured(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", t.path().join("repo"))
            .args(["bittorrent", "bencode", "-f"])
            .arg(&most),
        t.path(),
        Duration::from_secs(300),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.matches("\"\"").count(), 3_999_999);
    assert!(
        r.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} MiB",
        r.max_rss_kib >> 10
    );
}

#[test]
fn eighty_thousand_trackers_are_read() {
    let t = tempfile::tempdir().unwrap();
    let torrent = t.path().join("trackers.torrent");
    write(&torrent, &torrent_with_trackers(80_000));
    let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    let tier = info["AnnounceList"][0].as_array().unwrap();
    assert_eq!(tier.len(), 80_000);
    assert_eq!(tier[79_999], "http://127.0.0.1:21023/a/79999");
}

/// One GET on the gateway, with curl's own bounded timeout: the status (0 when no
/// answer came in time).
fn gateway_status(node: &Node, max_time: u64) -> u16 {
    let r = run_bounded(
        Command::new(tool("curl")).args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &max_time.to_string(),
            &format!("http://127.0.0.1:{}/btfs/", node.gateway),
        ]),
        Duration::from_secs(max_time + 30),
    );
    r.stdout.trim().parse().unwrap_or(0)
}

#[test]
fn torrent_uploads_are_bounded_and_parsed_off_the_async_threads() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"), &[]);
    assert_ne!(gateway_status(&node, 20), 0, "the gateway answers");

    // A .torrent is at most 16 MiB: one byte more is refused with a clear 413.
    let huge = t.path().join("huge.torrent");
    write(&huge, &vec![b'x'; (16 << 20) + 1]);
    let (st, body) = node.post(
        "bittorrent/download",
        &["-F", &format!("file=@{}", s(&huge))],
    );
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("a .torrent is at most 16 MiB"), "{body}");

    // Two uploads of a torrent with 160 000 trackers at once, while the gateway is
    // asked again and again: each request must be answered (reading such a torrent
    // once took minutes on the daemon's async threads and froze the gateway).
    let torrent = t.path().join("trackers.torrent");
    write(&torrent, &torrent_with_trackers(160_000));
    let uploads: Vec<_> = (0..2)
        .map(|_| {
            let api = node.base();
            let token = node.token();
            let file = format!("file=@{}", s(&torrent));
            std::thread::spawn(move || {
                curl(
                    &format!("{api}/api/v1/bittorrent/download?detach=true&no-trackers=true"),
                    "POST",
                    &["-H", &format!("Authorization: Bearer {token}"), "-F", &file],
                )
            })
        })
        .collect();
    let mut probes = 0;
    while uploads.iter().any(|u| !u.is_finished()) && probes < 200 {
        let st = gateway_status(&node, 20);
        assert_ne!(
            st, 0,
            "the gateway did not answer within 20 s during the uploads"
        );
        probes += 1;
    }
    for u in uploads {
        let (st, body) = u.join().unwrap();
        assert_eq!(st, 200, "{body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string();
        let (st, body) = node.post(&format!("bittorrent/jobs/rm?arg={id}"), &[]);
        assert_eq!(st, 200, "{body}");
    }
}

/// The root CID `btfs add -r` gives `dir`, in a repo of its own.
fn add_cid(root: &Path, dir: &Path) -> String {
    let repo = root.join("add-repo");
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &repo)
            .args(["add", "-n", "-r", "-Q", s(dir)]),
        Duration::from_secs(120),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    r.stdout.trim().to_string()
}

/// Files of a torrent like libtorrent's own test torrents: two with one path, a folder
/// named with a backslash, a `..` component, and between them a symlink that claims
/// 12 345 bytes (it carries none).
fn unsafe_names_torrent() -> (Vec<u8>, Vec<Vec<u8>>) {
    let files: [(&[&[u8]], usize); 4] = [
        (&[b"dup.txt"], 100_000),
        (&[b"dup.txt"], 70_000),
        (&[b"back\\slash", b"x.bin"], 50_000),
        (&[b"..", b"up.bin"], 30_000),
    ];
    let contents: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, (_, len))| data(*len, 40 + i as u64))
        .collect();
    let all = contents.concat();
    let pieces: Vec<u8> = all
        .chunks(16384)
        .flat_map(|c| bittorrent::InfoHash::of(c).0)
        .collect();
    let entry = |path: &[&[u8]], len: usize| {
        O::dict([
            ("length", O::int(len as i64)),
            (
                "path",
                O::List(path.iter().map(|c| O::Bytes(c.to_vec())).collect()),
            ),
        ])
    };
    let symlink = O::dict([
        ("attr", bstr("l")),
        ("length", O::int(12_345)),
        ("path", O::List(vec![bstr("link")])),
        ("symlink path", O::List(vec![bstr("dup.txt")])),
    ]);
    let mut list: Vec<O> = files.iter().map(|(p, l)| entry(p, *l)).collect();
    list.insert(1, symlink);
    let torrent = O::dict([(
        "info",
        O::dict([
            ("name", bstr("temp")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(pieces)),
            ("files", O::List(list)),
        ]),
    )]);
    (torrent.encode(), contents)
}

#[test]
fn a_torrent_with_unsafe_names_downloads_from_libtorrent_and_seeds_back() {
    let t = tempfile::tempdir().unwrap();
    let (bytes, contents) = unsafe_names_torrent();
    let torrent = t.path().join("unsafe.torrent");
    write(&torrent, &bytes);

    // btfs stores every file where libtorrent does.
    let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json();
    let ours: Vec<(String, u64)> = info["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p: Vec<&str> = f["StoredPath"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            (
                format!("temp/{}", p.join("/")),
                f["Length"].as_u64().unwrap(),
            )
        })
        .collect();
    let theirs: Vec<(String, u64)> = lt(&["info", s(&torrent)]).json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_owned(), f[1].as_u64().unwrap()))
        .collect();
    assert_eq!(ours, theirs);
    let stored = [
        "temp/dup.txt",
        "temp/dup.1.txt",
        "temp/backslash/x.bin",
        "temp/up.bin",
    ];
    assert_eq!(
        ours.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        [stored[0], "temp/link", stored[1], stored[2], stored[3]]
    );
    let warnings = info["Warnings"].to_string();
    assert!(
        warnings.contains("its length 12345 is ignored"),
        "{warnings}"
    );
    assert!(
        warnings.contains(r#"\"dup.txt\" is stored as \"dup.1.txt\""#),
        "{warnings}"
    );

    // libtorrent seeds from its own layout: it finds the data only where it expects it.
    let seed_dir = t.path().join("seed");
    for (path, content) in stored.iter().zip(&contents) {
        write(&seed_dir.join(path), content);
    }
    let port = free_port();
    let _seeder = lt_seed(&torrent, &seed_dir, port);

    let repo = t.path().join("repo");
    let out = t.path().join("out");
    let peer = format!("127.0.0.1:{port}");
    let d = btfs_download(
        &repo,
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--peer",
            &peer,
            "--no-trackers",
        ],
    );
    let (status, lines) = d.finish(Duration::from_secs(120));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "{sum}");
    assert_eq!(sum["Complete"], true, "{sum}");
    for (path, content) in stored.iter().zip(&contents) {
        assert!(
            std::fs::read(out.join(path)).unwrap() == *content,
            "{path} differs"
        );
    }
    let link = std::fs::symlink_metadata(out.join("temp/link")).unwrap();
    assert!(
        link.is_file() && link.len() == 0,
        "the symlink is an empty file"
    );
    let top: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["temp"], "nothing written beside the torrent's folder");
    // The store's CIDs follow the stored names: the root is `btfs add -r` of the folder.
    assert_eq!(
        sum["Cid"],
        add_cid(t.path(), &out.join("temp")).as_str(),
        "{sum}"
    );

    // The stored names are names btfs can make torrents of again (as `serve` does).
    let again = t.path().join("again.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&out.join("temp")),
        "-o",
        s(&again),
    ])
    .ok();

    // btfs seeds the torrent back from the stored files to a libtorrent leecher.
    let btfs_port = free_port();
    let seeding = btfs_download(
        &repo,
        &[
            "-t",
            s(&torrent),
            "-o",
            s(&out),
            "--no-trackers",
            "--seed",
            "--port",
            &btfs_port.to_string(),
            "--listen-ip",
            "127.0.0.1",
        ],
    );
    let leech_dir = t.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let leecher = Daemon::spawn(
        "libtorrent leecher",
        Command::new("/usr/bin/python3").args([
            s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lt.py")),
            "leech",
            s(&torrent),
            s(&leech_dir),
            &free_port().to_string(),
            &format!("127.0.0.1:{btfs_port}"),
            "90",
        ]),
    );
    leecher.wait_for_line("done", Duration::from_secs(100));
    for (path, content) in stored.iter().zip(&contents) {
        assert!(
            std::fs::read(leech_dir.join(path)).unwrap() == *content,
            "{path} differs at the leecher"
        );
    }
    seeding.interrupt();
    seeding.finish(Duration::from_secs(30));
}

#[test]
fn metainfo_shows_stored_paths_and_bencode_still_reports_stray_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (bytes, _) = unsafe_names_torrent();
    // A trailing newline, as some tools write.
    let torrent = t.path().join("newline.torrent");
    write(&torrent, &[&bytes[..], b"\n"].concat());
    let text = btfs(&["bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .stdout;
    for line in [
        r#"dup.1.txt (in the torrent: "dup.txt")"#,
        r#"backslash/x.bin (in the torrent: "back\\slash/x.bin")"#,
        r#"up.bin (in the torrent: "../up.bin")"#,
        "link -> dup.txt (a symlink; stored as an empty file)",
        &format!(
            "torrent (byte {}): 1 bytes after the torrent's dictionary",
            bytes.len()
        ),
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    // The same infohash as without the newline.
    let clean = t.path().join("clean.torrent");
    write(&clean, &bytes);
    let hash = |p: &Path| {
        btfs(&["--json", "bittorrent", "metainfo", "-t", s(p)])
            .ok()
            .json()["InfoHash"]
            .clone()
    };
    assert_eq!(hash(&torrent), hash(&clean));
    // bencode is exact: the stray byte is an error there.
    let r = btfs(&["bittorrent", "bencode", "-f", s(&torrent)]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("1 unexpected bytes after the value"),
        "{}",
        r.stderr
    );
}

/// A v2 torrent whose `file tree` is `tree`, with a 5-byte file `zz` at its root so it
/// holds data.
fn v2_tree_torrent(mut tree: Vec<(Vec<u8>, O)>) -> Vec<u8> {
    tree.push((
        b"zz".to_vec(),
        O::dict([(
            "",
            O::dict([
                ("length", O::int(5)),
                ("pieces root", O::Bytes(vec![7; 32])),
            ]),
        )]),
    ));
    O::dict([(
        "info",
        O::dict([
            ("name", bstr("tree")),
            ("piece length", O::int(16384)),
            ("meta version", O::int(2)),
            ("file tree", O::Dict(tree)),
        ]),
    )])
    .encode()
}

/// `n` empty files named by their number, as entries of a file tree folder.
fn empty_files(n: usize) -> Vec<(Vec<u8>, O)> {
    (0..n)
        .map(|i| {
            (
                format!("{i}").into_bytes(),
                O::dict([("", O::dict([("length", O::int(0))]))]),
            )
        })
        .collect()
}

/// Torrents whose file tree repeats a folder for every file once cost terabytes (an
/// 8 MiB folder name over 300 000 files) or gigabytes (90 nested folders over 600 000
/// files) as every file copied its folders; a file list of deep paths cost 20 times its
/// size. Now names are at most 4 KiB and all paths together at most 128 MiB: each
/// is refused early, naming the field, in bounded memory; a flat tree of 500 000 files
/// is read and printed.
#[test]
fn file_trees_that_repeat_folders_for_every_file_stay_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let mut deep = O::Dict(empty_files(600_000));
    for _ in 0..90 {
        deep = O::Dict(vec![(b"d".to_vec(), deep)]);
    }
    let deep_path: Vec<O> = vec![bstr("p"); 150];
    let v1_list = O::dict([(
        "info",
        O::dict([
            ("name", bstr("list")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0; 20])),
            (
                "files",
                O::List(
                    (0..20_000)
                        .map(|i| {
                            O::dict([
                                ("length", O::int(i64::from(i == 0))),
                                ("path", O::List(deep_path.clone())),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
    )])
    .encode();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "8 MiB folder name",
            v2_tree_torrent(vec![(vec![b'k'; 8 << 20], O::Dict(empty_files(300_000)))]),
            "info.file tree (byte ",
        ),
        (
            "90 nested folders",
            v2_tree_torrent(vec![(b"top".to_vec(), deep)]),
            "the file paths of this torrent take more than 128 MiB",
        ),
        (
            "4 KiB folder name",
            v2_tree_torrent(vec![(vec![b'k'; 4096], O::Dict(empty_files(500_000)))]),
            "the file paths of this torrent take more than 128 MiB",
        ),
        ("v1 paths of 150 folders", v1_list, "info.files["),
        ("flat", v2_tree_torrent(empty_files(500_000)), ""),
    ];
    for (what, bytes, expect) in cases {
        assert!(bytes.len() <= 16 << 20, "{what}: {} bytes", bytes.len());
        let file = t.path().join("big.torrent");
        write(&file, &bytes);
        let r = run_measured(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", t.path().join("repo"))
                .args(["bittorrent", "metainfo", "-t"])
                .arg(&file),
            t.path(),
            Duration::from_secs(300),
        );
        eprintln!("{what}: peak RSS {} MiB", r.max_rss_kib >> 10);
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        if expect.is_empty() {
            assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
            assert!(r.stdout.contains("Files (500001):"), "{what}");
        } else {
            assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
            assert!(r.stderr.contains(expect), "{what}: {}", r.stderr);
        }
        assert!(
            r.max_rss_kib < MAX_RSS_KIB,
            "{what}: peak RSS {} MiB",
            r.max_rss_kib >> 10
        );
    }
}

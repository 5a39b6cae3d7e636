//! Downloads with the filestore, against a real libtorrent seeder on loopback: the
//! downloaded files are the store's copy (only the inner nodes become block files) with
//! `btfs add -r`'s CIDs; a file edited afterwards is refused by `cat`, the gateway,
//! `repo verify` and `filestore verify`, each naming it, and a download of the same
//! torrent repairs it; a kill -9 mid-download resumes into a clean repo; `pin rm` +
//! `repo gc` and `jobs rm --delete-data` drop the references (and only the repo's own
//! folders); the `copy` import mode still writes every leaf as a block.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// UnixFS chunk size of `btfs add` and the bridge.
const CHUNK: usize = 262_144;
/// Leaves of [`seed_set`]: big.bin (6 000 000 bytes: 23 chunks), mid.bin (3), small.txt (1).
const SET_LEAVES: usize = 23 + 3 + 1;
/// Inner nodes of [`seed_set`] written as blocks: the roots of big.bin and mid.bin, the
/// empty file's node, the `sub` and `set` folders.
const SET_INNER: usize = 5;

/// `btfs ARGS` with `BTFS_PATH=repo`, bounded.
fn btfs_in(repo: &Path, args: &[&str]) -> Run {
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", repo)
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

/// The `added` lines of `btfs --enc json add -n …` as (name, hash) pairs.
fn add_lines(args: &[&str]) -> Vec<(String, String)> {
    let mut full = vec!["--enc", "json", "add", "-n"];
    full.extend_from_slice(args);
    btfs(&full)
        .ok()
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["Name"].as_str().unwrap().to_owned(),
                v["Hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `added` events and the summary of a `btfs --json bittorrent download` run.
fn download_json(repo: &Path, args: &[&str]) -> (Vec<(String, String)>, serde_json::Value) {
    let (status, lines) = btfs_download(repo, args).finish(Duration::from_secs(180));
    let sum = summary(&lines);
    assert_eq!(status, Some(0), "btfs download failed: {sum} {lines:?}");
    let added = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["Type"] == "added")
        .map(|v| {
            (
                v["Name"].as_str().unwrap().to_owned(),
                v["Hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (added, sum)
}

/// `root/seed/set`: a file of many chunks, one of three, a one-chunk file in a folder
/// and an empty file; its torrent (64 KiB pieces) at `root/set.torrent`. Sets of
/// different `seed`s share no chunk (the data of one seed is a prefix of another length's).
fn seed_set(root: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let d = root.join("seed").join("set");
    write(&d.join("big.bin"), &data(6_000_000, seed * 2));
    write(&d.join("mid.bin"), &data(700_000, seed * 2 + 1));
    write(&d.join("sub/small.txt"), &small(seed));
    write(&d.join("empty"), b"");
    let torrent = root.join("set.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&d),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
        "--force",
    ])
    .ok();
    (d, torrent)
}

/// The one-chunk file of [`seed_set`].
fn small(seed: u64) -> Vec<u8> {
    format!("hello filestore {seed}\n").into_bytes()
}

/// The download arguments for `torrent` from the seeder at `port`, and `extra`.
fn from_peer(torrent: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-t",
        s(torrent),
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--no-trackers",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Block files of the repo (`blocks/<shard>/<key>.data`) and their sizes.
fn block_files(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(repo.join("blocks")).unwrap() {
        let shard = shard.unwrap();
        if !shard.file_type().unwrap().is_dir()
            || shard.file_name().to_string_lossy().starts_with('.')
        {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "data") {
                let len = std::fs::metadata(&p).unwrap().len();
                out.push((p, len));
            }
        }
    }
    out
}

/// The files the filestore's references name, one entry per reference (read from the
/// repo database with a shared lock, which a running daemon allows).
fn ref_paths(repo: &Path) -> Vec<PathBuf> {
    let (r, _) = store::Repo::open(repo, store::LockMode::Shared).unwrap();
    r.file_refs()
        .unwrap()
        .into_iter()
        .map(|e| e.file.expect("a readable filestore entry").path)
        .collect()
}

/// Whether `cid` is pinned in the repo.
fn pinned(repo: &Path, cid: &str) -> bool {
    let (r, _) = store::Repo::open(repo, store::LockMode::Shared).unwrap();
    r.pins().unwrap().iter().any(|(c, _)| c.to_string() == cid)
}

/// Flips one byte of `path` at `at`, keeping its size.
fn flip_byte(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
    let len = f.metadata().unwrap().len();
    assert_eq!(len, std::fs::metadata(path).unwrap().len());
}

/// `btfs repo verify` in `repo`: its exit status and everything it printed.
fn verify(repo: &Path) -> (i32, String) {
    let r = btfs_in(repo, &["repo", "verify"]);
    (r.status, format!("{}{}", r.stdout, r.stderr))
}

/// `repo verify` and `filestore verify` are clean.
fn assert_verified(repo: &Path, what: &str) {
    let (status, out) = verify(repo);
    assert_eq!(status, 0, "{what}: repo verify: {out}");
    let (status, entries) = filestore_verify(repo);
    assert_eq!(
        (status, not_ok(&entries)),
        (0, Vec::new()),
        "{what}: filestore verify"
    );
}

/// `btfs --enc json filestore verify` in `repo`: its exit status and its entries as
/// (status name, file path, offset).
fn filestore_verify(repo: &Path) -> (i32, Vec<(String, PathBuf, u64)>) {
    let r = btfs_in(repo, &["--enc", "json", "filestore", "verify"]);
    let entries = r
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let status = match v["Status"].as_i64().unwrap() {
                0 => "ok",
                10 => "error",
                11 => "no-file",
                12 => "changed",
                _ => panic!("filestore verify: {l}"),
            };
            (
                status.to_owned(),
                PathBuf::from(v["FilePath"].as_str().unwrap()),
                v["Offset"].as_u64().unwrap(),
            )
        })
        .collect();
    (r.status, entries)
}

/// The entries of [`filestore_verify`] that are not ok.
fn not_ok(entries: &[(String, PathBuf, u64)]) -> Vec<(String, PathBuf, u64)> {
    let mut bad: Vec<_> = entries.iter().filter(|e| e.0 != "ok").cloned().collect();
    bad.sort();
    bad
}

/// `btfs daemon` on `repo` with its gateway on a free port of 127.0.0.1.
struct Gateway {
    _daemon: Daemon,
    port: u16,
}

fn gateway(repo: &Path) -> Gateway {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo).args([
        "daemon",
        "--api",
        "127.0.0.1:0",
        "--gateway",
        &format!("127.0.0.1:{port}"),
    ]);
    let d = Daemon::spawn("btfs daemon", &mut cmd);
    d.wait_for_line("gateway listening", Duration::from_secs(30));
    Gateway { _daemon: d, port }
}

/// A gateway response: the status, the header block, the declared Content-Length, and
/// the body as far as it came before the server closed the connection.
struct Got {
    status: u16,
    head: String,
    length: Option<usize>,
    body: Vec<u8>,
}

/// GET `path` with extra header lines. A connection cut mid-body is no error here: what
/// arrived is returned (the caller compares it with the Content-Length).
fn get(port: u16, path: &str, extra: &str) -> Got {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("GET {path}: the gateway neither sent more nor closed within 30 s")
            }
            // A reset after an aborted body: what came is the answer.
            Err(_) => break,
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: no header end in {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().unwrap())
    });
    Got {
        status,
        head,
        length,
        body: buf[split + 4..].to_vec(),
    }
}

fn url(root: &str, name: &str) -> String {
    format!("/btfs/{root}/{name}")
}

/// The gateway serves the files as they were seeded, whole and in ranges across chunks.
fn check_gateway(repo: &Path, root: &str, seed: &Path) {
    let gw = gateway(repo);
    for name in ["big.bin", "mid.bin", "sub/small.txt", "empty"] {
        let want = std::fs::read(seed.join(name)).unwrap();
        let g = get(gw.port, &url(root, name), "");
        assert_eq!(g.status, 200, "{name}: {}", g.head);
        assert!(
            g.body == want,
            "{name}: the gateway's bytes differ from the seed"
        );
        for (a, b) in [(262_000usize, 262_300usize), (5 * CHUNK - 1, 5 * CHUNK + 1)] {
            if b >= want.len() {
                continue;
            }
            let g = get(
                gw.port,
                &url(root, name),
                &format!("Range: bytes={a}-{b}\r\n"),
            );
            assert_eq!(g.status, 206, "{name} {a}-{b}: {}", g.head);
            assert_eq!(g.body, &want[a..=b], "{name} bytes {a}-{b}");
        }
    }
}

/// The gateway on a tree whose big.bin has a bad chunk 5 and whose mid.bin has a bad
/// first chunk: never a wrong byte; an error status naming the file when the first block
/// it reads is bad, a body cut short when the bad block comes after the headers.
fn check_gateway_refuses(repo: &Path, root: &str, seed: &Path, big: &Path, mid: &Path) {
    let gw = gateway(repo);
    let want = std::fs::read(seed.join("big.bin")).unwrap();

    // The whole file: the headers go out with the first chunks, then the body stops
    // before the damaged one.
    let g = get(gw.port, &url(root, "big.bin"), "");
    assert_eq!(g.status, 200, "{}", g.head);
    assert_eq!(g.length, Some(want.len()), "{}", g.head);
    assert!(
        g.body.len() <= 5 * CHUNK,
        "the body went past the damaged chunk: {} bytes",
        g.body.len()
    );
    assert!(
        g.body == want[..g.body.len()],
        "the gateway sent bytes that are not the file's"
    );

    // A range inside the damaged chunk: the first block read fails before the headers.
    let (a, b) = (5 * CHUNK + 10, 5 * CHUNK + 2000);
    let g = get(
        gw.port,
        &url(root, "big.bin"),
        &format!("Range: bytes={a}-{b}\r\n"),
    );
    let body = String::from_utf8_lossy(&g.body);
    assert_eq!(g.status, 500, "{}\n{body}", g.head);
    assert!(
        body.contains(s(big)),
        "the error names {}: {body}",
        big.display()
    );
    // A range starting before it is served up to it, then cut short.
    let (a, b) = (4 * CHUNK + 100, 5 * CHUNK + 100);
    let g = get(
        gw.port,
        &url(root, "big.bin"),
        &format!("Range: bytes={a}-{b}\r\n"),
    );
    assert_eq!(g.status, 206, "{}", g.head);
    assert_eq!(g.length, Some(b - a + 1));
    assert!(g.body.len() <= 5 * CHUNK - a, "{} bytes", g.body.len());
    assert!(
        g.body == want[a..a + g.body.len()],
        "wrong bytes in the range"
    );
    // A range in an intact chunk is served in full.
    let (a, b) = (6 * CHUNK, 7 * CHUNK + 5);
    let g = get(
        gw.port,
        &url(root, "big.bin"),
        &format!("Range: bytes={a}-{b}\r\n"),
    );
    assert_eq!(g.status, 206, "{}", g.head);
    assert_eq!(g.body, &want[a..=b]);

    // mid.bin's first chunk is the damaged one: read (for its type) before any header.
    let g = get(gw.port, &url(root, "mid.bin"), "");
    let body = String::from_utf8_lossy(&g.body);
    assert_eq!(g.status, 500, "{}\n{body}", g.head);
    assert!(
        body.contains(s(mid)),
        "the error names {}: {body}",
        mid.display()
    );

    // The intact files of the same torrent are still served.
    let g = get(gw.port, &url(root, "sub/small.txt"), "");
    assert_eq!(g.status, 200);
    assert_eq!(g.body, std::fs::read(seed.join("sub/small.txt")).unwrap());
}

/// `btfs cat PATH` in `repo`, bounded: its status, its output as raw bytes, its stderr.
fn cat(repo: &Path, path: &str) -> (i32, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_btfs"))
        .env("BTFS_PATH", repo)
        .args(["cat", path])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("btfs cat {path} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

/// `btfs cat` of the damaged files fails naming them (after at most the intact chunks
/// before the damage, never a wrong byte); the intact file still reads.
fn check_cat_refuses(repo: &Path, root: &str, seed: &Path, big: &Path, mid: &Path) {
    let want = std::fs::read(seed.join("big.bin")).unwrap();
    let (status, out, err) = cat(repo, &format!("/btfs/{root}/big.bin"));
    assert_ne!(status, 0, "cat of a changed file succeeded");
    assert!(
        err.contains(s(big)) && err.contains("changed"),
        "cat's error names {}: {err}",
        big.display()
    );
    assert!(out.len() <= 5 * CHUNK, "cat went past the damaged chunk");
    assert!(
        out == want[..out.len()],
        "cat printed bytes that are not the file's"
    );

    let (status, out, err) = cat(repo, &format!("/btfs/{root}/mid.bin"));
    assert_ne!(status, 0);
    assert!(err.contains(s(mid)), "cat names {}: {err}", mid.display());
    assert!(out.is_empty(), "cat printed {} bytes", out.len());

    let (status, out, err) = cat(repo, &format!("/btfs/{root}/sub/small.txt"));
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, std::fs::read(seed.join("sub/small.txt")).unwrap());
}

/// Everything a damaged download shows: cat, verify (and `filestore verify`), gateway.
fn check_damage_is_named(repo: &Path, root: &str, seed: &Path, files: &Path, gw: bool) {
    let big = files.join("big.bin").canonicalize().unwrap();
    let mid = files.join("mid.bin").canonicalize().unwrap();
    flip_byte(&big, 5 * CHUNK as u64 + 1000);
    flip_byte(&mid, 100);
    check_cat_refuses(repo, root, seed, &big, &mid);
    let (status, out) = verify(repo);
    assert_ne!(status, 0, "repo verify passed a changed file: {out}");
    assert!(
        out.contains(s(&big)) && out.contains(s(&mid)),
        "repo verify names both files: {out}"
    );
    assert!(!out.contains("small.txt"), "{out}");
    // `filestore verify`: exactly the two changed leaves, by file and offset.
    let (status, entries) = filestore_verify(repo);
    assert_ne!(status, 0, "filestore verify passed a changed file");
    assert_eq!(entries.len(), SET_LEAVES);
    assert_eq!(
        not_ok(&entries),
        [
            ("changed".to_owned(), big.clone(), 5 * CHUNK as u64),
            ("changed".to_owned(), mid.clone(), 0),
        ]
    );
    if gw {
        check_gateway_refuses(repo, root, seed, &big, &mid);
    }
}

/// Files of the download without -o: `$BTFS_PATH/bittorrent/downloads/<infohash>`.
fn kept_folder(repo: &Path, sum: &serde_json::Value) -> PathBuf {
    repo.join("bittorrent/downloads")
        .join(sum["InfoHash"].as_str().unwrap())
}

#[test]
fn dash_o_download_is_the_store_copy_refuses_edits_and_a_rerun_repairs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, torrent) = seed_set(tmp.path(), 51);
    let port = free_port();
    let _seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    let args = from_peer(&torrent, port, &["-o", s(&out)]);
    let (added, sum) = download_json(&repo, &strs(&args));
    let expected = add_lines(&["-r", "--hidden", s(&seed)]);
    assert_eq!(
        added, expected,
        "the download's CIDs differ from `btfs add -r`"
    );
    let root = sum["Cid"].as_str().unwrap().to_owned();
    assert_eq!(root, expected.last().unwrap().1);
    let files = out.join("set");
    assert_same_tree(&seed, &files);

    // Only the inner nodes are blocks; every leaf is a reference into the user's files.
    let blocks = block_files(&repo);
    assert_eq!(blocks.len(), SET_INNER, "{blocks:?}");
    assert!(
        blocks.iter().all(|(_, len)| *len < 4096),
        "a leaf was copied: {blocks:?}"
    );
    let refs = ref_paths(&repo);
    assert_eq!(refs.len(), SET_LEAVES, "{refs:?}");
    let canon = files.canonicalize().unwrap();
    assert!(refs.iter().all(|p| p.starts_with(&canon)), "{refs:?}");
    assert!(
        !repo
            .join("bittorrent/downloads")
            .join(sum["InfoHash"].as_str().unwrap())
            .exists(),
        "-o leaves no folder in the repo"
    );
    assert_verified(&repo, "after the download");
    check_gateway(&repo, &root, &seed);

    check_damage_is_named(&repo, &root, &seed, &files, true);

    // The same torrent into the same folder finds the changed pieces and fetches them again.
    let (again, sum) = download_json(&repo, &strs(&args));
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(
        sum["Cid"].as_str().unwrap(),
        root,
        "the repaired CID changed"
    );
    assert_eq!(again, expected);
    assert_same_tree(&seed, &files);
    assert_verified(&repo, "after the repair");
    assert_eq!(ref_paths(&repo).len(), SET_LEAVES);
    btfs_in(
        &repo,
        &[
            "get",
            &format!("{root}/big.bin"),
            "-o",
            s(&tmp.path().join("big.out")),
        ],
    )
    .ok();
    assert_same_tree(&seed.join("big.bin"), &tmp.path().join("big.out"));
}

#[test]
fn download_without_dash_o_keeps_its_files_in_the_repo_and_a_rerun_repairs_an_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, torrent) = seed_set(tmp.path(), 61);
    let port = free_port();
    let _seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
    let repo = tmp.path().join("repo");
    let args = from_peer(&torrent, port, &[]);
    let (added, sum) = download_json(&repo, &strs(&args));
    let expected = add_lines(&["-r", "--hidden", s(&seed)]);
    assert_eq!(added, expected);
    let root = sum["Cid"].as_str().unwrap().to_owned();
    let files = kept_folder(&repo, &sum).join("set");
    assert_same_tree(&seed, &files);
    let blocks = block_files(&repo);
    assert_eq!(blocks.len(), SET_INNER, "{blocks:?}");
    assert!(
        blocks.iter().all(|(_, len)| *len < 4096),
        "a leaf was copied: {blocks:?}"
    );
    let refs = ref_paths(&repo);
    assert_eq!(refs.len(), SET_LEAVES);
    let canon = files.canonicalize().unwrap();
    assert!(refs.iter().all(|p| p.starts_with(&canon)), "{refs:?}");
    assert_verified(&repo, "after the download");
    check_gateway(&repo, &root, &seed);

    check_damage_is_named(&repo, &root, &seed, &files, false);

    // The torrent is recorded, but its files changed: no "already in the store".
    let (again, sum) = download_json(&repo, &strs(&args));
    assert_ne!(
        sum["AlreadyImported"], true,
        "a changed file passed as imported: {sum}"
    );
    assert_eq!(sum["Complete"], true, "{sum}");
    assert_eq!(sum["Cid"].as_str().unwrap(), root);
    assert_eq!(again, expected);
    assert_same_tree(&seed, &files);
    assert_verified(&repo, "after the repair");
    // Now it is whole: a rerun needs no peer.
    let (_, sum) = download_json(&repo, &["-t", s(&torrent), "--no-trackers"]);
    assert_eq!(sum["AlreadyImported"], true, "{sum}");
    assert_eq!(sum["Cid"].as_str().unwrap(), root);
}

#[test]
fn kill_9_during_a_dash_o_download_then_resume_leaves_a_clean_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("seed");
    let file = src.join("big.bin");
    write(&file, &data(24 << 20, 71));
    let torrent = tmp.path().join("big.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
    ])
    .ok();
    let port = free_port();
    let seeder = lt_seed_limited(&torrent, &src, port, 4 << 20);
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    let args = from_peer(&torrent, port, &["-o", s(&out)]);
    let d = btfs_download(&repo, &strs(&args));
    // A sixth of the pieces in (chunks are being hashed), then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = d.wait_for_line("\"progress\"", left);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["PiecesHave"].as_u64().unwrap_or(0) >= 64 {
            break;
        }
    }
    Command::new("kill")
        .args(["-9", &d.pid().to_string()])
        .status()
        .unwrap();
    drop(d);
    assert_verified(&repo, "after kill -9");
    assert!(
        ref_paths(&repo).is_empty(),
        "references before the import was committed"
    );

    drop(seeder);
    let _seeder = lt_seed(&torrent, &src, port);
    let (added, sum) = download_json(&repo, &strs(&args));
    assert_eq!(added, add_lines(&[s(&file)]));
    assert_eq!(sum["Complete"], true);
    assert_same_tree(&file, &out.join("big.bin"));
    assert_eq!(ref_paths(&repo).len(), 96, "one reference per chunk");
    assert_eq!(
        block_files(&repo).len(),
        1,
        "only the file's root is a block"
    );
    assert_verified(&repo, "after the resumed download");
}

#[test]
fn pin_rm_and_gc_drop_references_and_only_the_repos_own_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    // Three torrents of different content: A and B without -o, C with -o.
    let mut got = Vec::new();
    for (name, seed, out) in [("a", 81, false), ("b", 82, false), ("c", 83, true)] {
        let dir = tmp.path().join(name);
        let (seed, torrent) = seed_set(&dir, seed);
        let port = free_port();
        let _seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
        let o = dir.join("out");
        let extra: Vec<&str> = if out { vec!["-o", s(&o)] } else { Vec::new() };
        let (_, sum) = download_json(&repo, &strs(&from_peer(&torrent, port, &extra)));
        let files = if out {
            o.join("set")
        } else {
            kept_folder(&repo, &sum).join("set")
        };
        got.push((
            sum["Cid"].as_str().unwrap().to_owned(),
            files,
            seed,
            torrent,
        ));
    }
    assert_eq!(ref_paths(&repo).len(), 3 * SET_LEAVES);
    let gc = |what: &str| -> serde_json::Value {
        let r = btfs_in(&repo, &["--enc", "json", "repo", "gc"]);
        assert_eq!(r.status, 0, "{what}: {}", r.stderr);
        r.json()
    };
    let nothing = gc("all pinned");
    assert_eq!(nothing["RefsRemoved"], 0, "{nothing}");
    assert_eq!(nothing["RefsKept"], 3 * SET_LEAVES, "{nothing}");

    // A unpinned: its references and its folder in the repo go; B's stay.
    let (root_a, files_a, _, torrent_a) = &got[0];
    let folder_a = files_a.parent().unwrap().canonicalize().unwrap();
    btfs_in(&repo, &["pin", "rm", root_a]).ok();
    let r = gc("A unpinned");
    assert_eq!(r["RefsRemoved"], SET_LEAVES, "{r}");
    assert_eq!(r["RefsKept"], 2 * SET_LEAVES, "{r}");
    assert_eq!(
        r["FoldersRemoved"],
        serde_json::json!([s(&folder_a)]),
        "{r}"
    );
    assert!(!folder_a.exists());
    let (root_b, files_b, seed_b, _) = &got[1];
    assert_same_tree(seed_b, files_b);
    let refs = ref_paths(&repo);
    assert!(
        refs.iter().all(|p| !p.starts_with(&folder_a)),
        "references into the removed folder: {refs:?}"
    );
    let r = btfs_in(&repo, &["cat", &format!("{root_b}/big.bin")]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_verified(&repo, "after A's gc");

    // A file of C's moved away: `filestore verify` says so for its leaves, and puts
    // it back.
    let (root_c, files_c, seed_c, _) = &got[2];
    let mid_c = files_c.join("mid.bin").canonicalize().unwrap();
    std::fs::rename(&mid_c, files_c.join("moved")).unwrap();
    let (status, entries) = filestore_verify(&repo);
    assert_ne!(status, 0);
    let gone: Vec<_> = (0..3)
        .map(|k| ("no-file".to_owned(), mid_c.clone(), k * CHUNK as u64))
        .collect();
    assert_eq!(not_ok(&entries), gone);
    let (status, out) = verify(&repo);
    assert_ne!(status, 0);
    assert!(out.contains(s(&mid_c)), "{out}");
    std::fs::rename(files_c.join("moved"), &mid_c).unwrap();
    assert_verified(&repo, "the file back");

    // C unpinned: its references go, the user's files in -o stay as they were.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&files_c.join("big.bin"));
    btfs_in(&repo, &["pin", "rm", root_c]).ok();
    let r = gc("C unpinned");
    assert_eq!(r["RefsRemoved"], SET_LEAVES, "{r}");
    assert_eq!(r["RefsKept"], SET_LEAVES, "{r}");
    assert_eq!(r["FoldersRemoved"], serde_json::json!([]), "{r}");
    assert_same_tree(seed_c, files_c);
    assert_eq!(mtime(&files_c.join("big.bin")), before);
    let canon_b = files_b.canonicalize().unwrap();
    assert!(ref_paths(&repo).iter().all(|p| p.starts_with(&canon_b)));
    assert_eq!(block_files(&repo).len(), SET_INNER, "B's inner nodes only");
    assert_verified(&repo, "after C's gc");

    // A again: recorded, but gone from the store, so it is downloaded again.
    let seed_a = &tmp.path().join("a/seed");
    let port = free_port();
    let _seeder = lt_seed(torrent_a, seed_a, port);
    let (_, sum) = download_json(&repo, &strs(&from_peer(torrent_a, port, &[])));
    assert_ne!(sum["AlreadyImported"], true, "{sum}");
    assert_eq!(sum["Cid"].as_str().unwrap(), root_a);
    assert_same_tree(&seed_a.join("set"), files_a);
    assert_verified(&repo, "after A again");
}

#[test]
fn copy_mode_writes_every_leaf_as_a_block_with_the_same_cids() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, torrent) = seed_set(tmp.path(), 91);
    let port = free_port();
    let _seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
    let expected = add_lines(&["-r", "--hidden", s(&seed)]);

    // The filestore (default) for comparison.
    let fs_repo = tmp.path().join("filestore-repo");
    let (fs_added, _) = download_json(&fs_repo, &strs(&from_peer(&torrent, port, &[])));
    assert_eq!(fs_added, expected);

    let repo = tmp.path().join("repo");
    btfs_in(&repo, &["init"]).ok();
    btfs_in(&repo, &["config", "Bittorrent.ImportMode", "copy"]).ok();
    let (added, sum) = download_json(&repo, &strs(&from_peer(&torrent, port, &[])));
    assert_eq!(
        added, fs_added,
        "copy and filestore modes give different CIDs"
    );
    let root = sum["Cid"].as_str().unwrap().to_owned();
    assert!(
        !kept_folder(&repo, &sum).exists(),
        "copy mode removes the working folder"
    );
    assert!(ref_paths(&repo).is_empty());
    let blocks = block_files(&repo);
    let leaves = blocks.iter().filter(|(_, len)| *len > 4096).count();
    // Every chunk of big.bin and mid.bin is a leaf of 256 KiB or its tail.
    assert_eq!(leaves, 23 + 3, "{blocks:?}");
    assert_eq!(blocks.len(), SET_LEAVES + SET_INNER, "{blocks:?}");
    assert_verified(&repo, "copy mode");
    check_gateway(&repo, &root, &seed);

    // With -o the files stay where they were asked for, and the blocks are the store's own.
    let out = tmp.path().join("out");
    let (again, _) = download_json(&repo, &strs(&from_peer(&torrent, port, &["-o", s(&out)])));
    assert_eq!(again, expected);
    assert_same_tree(&seed, &out.join("set"));
    assert!(ref_paths(&repo).is_empty());
    std::fs::remove_dir_all(&out).unwrap();
    let r = btfs_in(&repo, &["cat", &format!("{root}/big.bin")]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_verified(&repo, "copy mode, -o folder deleted");
}

/// `POST bittorrent/jobs/show`.
fn job_state(node: &Node, id: &str) -> serde_json::Value {
    let (st, body) = node.post(&format!("bittorrent/jobs/show?arg={id}"), &[]);
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
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

#[test]
fn jobs_rm_delete_data_drops_the_references_and_the_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("repo"), &[]);
    let repo = node.repo.clone();
    // Job 1 keeps its files in the repo, job 2 in a folder of the user's.
    let mut jobs = Vec::new();
    for (name, seed, output) in [("one", 101, false), ("two", 102, true)] {
        let dir = tmp.path().join(name);
        let (seed, torrent) = seed_set(&dir, seed);
        let info = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
            .ok()
            .json();
        let ih = info["InfoHash"].as_str().unwrap().to_owned();
        let port = free_port();
        let seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
        let magnet = format!("magnet:?xt=urn:btih:{ih}&dn=set&x.pe=127.0.0.1:{port}");
        let out = dir.join("out");
        let mut q = format!("bittorrent/download?arg={}&detach=true", enc(&magnet));
        if output {
            q += &format!("&output={}", enc(s(&out)));
        }
        let (st, body) = node.post(&q, &[]);
        assert_eq!(st, 200, "{body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_owned();
        let files = if output {
            out.join("set")
        } else {
            repo.join("bittorrent/downloads").join(&ih).join("set")
        };
        jobs.push((id, ih, files, seed, seeder));
    }
    let mut roots = Vec::new();
    for (id, _, files, seed, _) in &jobs {
        let done = poll(
            Duration::from_secs(90),
            "the job did not complete",
            || job_state(&node, id).to_string(),
            || {
                let j = job_state(&node, id);
                (j["State"] == "completed" && j["Cid"].is_string()).then_some(j)
            },
        );
        assert_same_tree(seed, files);
        let cid = done["Cid"].as_str().unwrap().to_owned();
        assert_eq!(
            cid,
            add_lines(&["-r", "--hidden", s(seed)]).last().unwrap().1
        );
        assert!(pinned(&repo, &cid));
        roots.push(cid);
    }
    let under = |f: &Path| {
        let c = f.canonicalize().unwrap();
        ref_paths(&repo)
            .iter()
            .filter(|p| p.starts_with(&c))
            .count()
    };
    assert_eq!(under(&jobs[0].2), SET_LEAVES);
    assert_eq!(under(&jobs[1].2), SET_LEAVES);
    assert_eq!(ref_paths(&repo).len(), 2 * SET_LEAVES);

    let rm = |id: &str| {
        let (st, body) = node.post(
            &format!("bittorrent/jobs/rm?arg={id}&delete-data=true"),
            &[],
        );
        assert_eq!(st, 200, "{body}");
    };
    // Job 1: its folder in the repo, its references and its pin go; job 2's stay.
    let kept2 = jobs[1].2.canonicalize().unwrap();
    rm(&jobs[0].0);
    assert!(!repo.join("bittorrent/downloads").join(&jobs[0].1).exists());
    assert!(!pinned(&repo, &roots[0]));
    assert!(pinned(&repo, &roots[1]));
    let refs = ref_paths(&repo);
    assert_eq!(refs.len(), SET_LEAVES, "{refs:?}");
    assert!(refs.iter().all(|p| p.starts_with(&kept2)), "{refs:?}");
    let r = node.btfs(&["cat", &format!("{}/big.bin", roots[1])]);
    assert_eq!(r.status, 0, "{}", r.stderr);

    // Job 2: the user's folder loses the torrent's files, and the repo their references.
    rm(&jobs[1].0);
    assert!(!jobs[1].2.join("big.bin").exists());
    assert!(!pinned(&repo, &roots[1]));
    assert!(ref_paths(&repo).is_empty(), "{:?}", ref_paths(&repo));
    drop(node);
    assert_verified(&repo, "after both removals");
    let r = btfs_in(&repo, &["--enc", "json", "repo", "gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.json()["RefsRemoved"], 0, "{}", r.stdout);
    assert!(block_files(&repo).is_empty(), "{:?}", block_files(&repo));
}

/// A daemon job of a single-seeder torrent made of `files` (name, bytes) under
/// `root/<name>`, run to completion without -o: its id, infohash and root CID, and the
/// seeder's folder.
fn job_of(
    node: &Node,
    root: &Path,
    name: &str,
    files: &[(&str, Vec<u8>)],
) -> (String, String, String) {
    let dir = root.join(name).join("seed").join(name);
    for (f, bytes) in files {
        write(&dir.join(f), bytes);
    }
    let torrent = root.join(name).join("t.torrent");
    btfs(&[
        "bittorrent",
        "create",
        s(&dir),
        "-o",
        s(&torrent),
        "--piece-length",
        "64KiB",
    ])
    .ok();
    let ih = btfs(&["--json", "bittorrent", "metainfo", "-t", s(&torrent)])
        .ok()
        .json()["InfoHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = free_port();
    let _seeder = lt_seed(&torrent, dir.parent().unwrap(), port);
    let magnet = format!("magnet:?xt=urn:btih:{ih}&dn={name}&x.pe=127.0.0.1:{port}");
    let (st, body) = node.post(
        &format!("bittorrent/download?arg={}&detach=true", enc(&magnet)),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = poll(
        Duration::from_secs(90),
        "the job did not complete",
        || job_state(node, &id).to_string(),
        || {
            let j = job_state(node, &id);
            (j["State"] == "completed" && j["Cid"].is_string()).then_some(j)
        },
    );
    (id, ih, done["Cid"].as_str().unwrap().to_owned())
}

/// Two torrents holding the same file share its leaves; each import keeps references
/// into its own files. Removing one torrent with its data leaves the other whole (its
/// references are its own), and content of the removed torrent that is still pinned on
/// its own (here `pin add` of one of its files) is kept as blocks before the files go.
#[test]
fn a_leaf_shared_by_two_torrents_survives_removing_the_one_it_points_into() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("repo"), &[]);
    let repo = node.repo.clone();
    let same = data(600_000, 111);
    let y_only = data(300_000, 113);
    let (_, ih_x, root_x) = job_of(
        &node,
        tmp.path(),
        "x",
        &[("same.bin", same.clone()), ("x.bin", data(300_000, 112))],
    );
    let (id_y, _, root_y) = job_of(
        &node,
        tmp.path(),
        "y",
        &[("same.bin", same.clone()), ("y.bin", y_only.clone())],
    );
    let x_files = repo
        .join("bittorrent/downloads")
        .join(&ih_x)
        .canonicalize()
        .unwrap();
    let leaves = |repo: &Path| block_files(repo).iter().filter(|(_, l)| *l > 4096).count();
    assert_eq!(leaves(&repo), 0);
    // same.bin's 3 leaves twice (one reference into each torrent's copy), x.bin's and
    // y.bin's 2 each.
    assert_eq!(ref_paths(&repo).len(), 10);
    let pinned = node.btfs(&["pin", "add", &format!("{root_y}/y.bin")]);
    assert_eq!(pinned.status, 0, "{}", pinned.stderr);
    let (st, body) = node.post(
        &format!("bittorrent/jobs/rm?arg={id_y}&delete-data=true"),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let r = node.btfs(&["cat", &format!("{root_x}/same.bin")]);
    assert_eq!(r.status, 0, "x lost a leaf with y's data: {}", r.stderr);
    // y.bin, still pinned, was stored as blocks before y's files went (its 2 leaves);
    // x's leaves stay references into x's own files.
    let r = node.btfs(&["cat", &format!("{root_y}/y.bin")]);
    assert_eq!(r.status, 0, "the pinned y.bin was lost: {}", r.stderr);
    assert_eq!(leaves(&repo), 2);
    let refs = ref_paths(&repo);
    assert_eq!(refs.len(), 5, "x's leaves: {refs:?}");
    assert!(refs.iter().all(|p| p.starts_with(&x_files)), "{refs:?}");
    drop(node);
    assert_verified(&repo, "after removing y");
}

/// A change that keeps the file's size and modification time (bit rot, or a tool that
/// restores the time) is still caught on read; a download of the same torrent should
/// repair it as it repairs any other change.
#[test]
fn a_rerun_repairs_a_change_that_kept_the_modification_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, torrent) = seed_set(tmp.path(), 121);
    let port = free_port();
    let _seeder = lt_seed(&torrent, seed.parent().unwrap(), port);
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    let args = from_peer(&torrent, port, &["-o", s(&out)]);
    let (_, sum) = download_json(&repo, &strs(&args));
    let root = sum["Cid"].as_str().unwrap().to_owned();
    let big = out.join("set/big.bin");
    let mtime = std::fs::metadata(&big).unwrap().modified().unwrap();
    flip_byte(&big, 5 * CHUNK as u64 + 1000);
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (status, out_text) = verify(&repo);
    assert_ne!(status, 0, "{out_text}");
    let (_, sum) = download_json(&repo, &strs(&args));
    assert_eq!(sum["Cid"].as_str().unwrap(), root, "{sum}");
    assert_same_tree(&seed, &out.join("set"));
    assert_verified(&repo, "after the rerun");
}

//! `btfs add` gives the CIDs that kubo's `ipfs add` gives: compared with an independent
//! reference, tests/tools/unixfs/cid.mjs (js ipfs-unixfs-importer with kubo's settings,
//! pinned by its package-lock.json and installed by scripts/install-deps), and with
//! literal CIDs that kubo printed.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHUNK: usize = 262_144;

/// A way of adding: the flags given to `btfs add` and the same settings for cid.mjs.
struct Mode {
    name: &'static str,
    btfs: &'static [&'static str],
    reference: &'static [&'static str],
}

const V0: Mode = Mode {
    name: "CIDv0 defaults",
    btfs: &[],
    reference: &[],
};
const RAW_LEAVES: Mode = Mode {
    name: "--raw-leaves",
    btfs: &["--raw-leaves"],
    reference: &["--raw-leaves"],
};
const V1: Mode = Mode {
    name: "--cid-version 1",
    btfs: &["--cid-version", "1"],
    reference: &["--cid-version", "1"],
};
const SMALL_CHUNKS: Mode = Mode {
    name: "--chunker size-1000",
    btfs: &["--chunker", "size-1000"],
    reference: &["--chunk-size", "1000"],
};
const MODES: [&Mode; 4] = [&V0, &RAW_LEAVES, &V1, &SMALL_CHUNKS];

/// `node` and the folder of cid.mjs. A missing reference fails the test: scripts/test
/// installs it through scripts/install-deps, so its absence is an install bug.
fn reference_tool() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/unixfs");
    let path = std::env::var("PATH").unwrap_or_default();
    let node = path
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
        .map(|d| Path::new(d).join("node"))
        .find(|p| p.is_file())
        .expect("node is not installed; run scripts/install-deps");
    assert!(
        dir.join("node_modules/ipfs-unixfs-importer").is_dir(),
        "the UnixFS CID reference's npm packages are not installed in {}; run scripts/install-deps",
        dir.display()
    );
    (node, dir.join("cid.mjs"))
}

/// The one line of `out`, or a panic naming `what`.
fn one_line(out: &str, what: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "{what} printed {} lines instead of one CID:\n{out}",
        lines.len()
    );
    lines[0].trim().to_owned()
}

/// The root CID that the reference computes for `path`.
fn reference(args: &[&str], path: &Path) -> String {
    let (node, script) = reference_tool();
    let r = run_with_timeout(
        Command::new(node).arg(script).args(args).arg(path),
        Duration::from_secs(120),
    );
    assert_eq!(
        r.status,
        0,
        "cid.mjs {args:?} {} failed:\n{}",
        path.display(),
        r.stderr
    );
    one_line(&r.stdout, &format!("cid.mjs {args:?}"))
}

/// `btfs add -Q [-n] ARGS PATH` with the repo `repo`: the root CID it prints.
fn btfs_add(repo: &Path, only_hash: bool, args: &[&str], path: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", repo).args(["add", "-Q"]);
    if only_hash {
        cmd.arg("-n");
    }
    cmd.args(args).arg(path);
    let r = run_with_timeout(&mut cmd, Duration::from_secs(300));
    assert!(
        r.status == 0 && !r.stderr.contains("panicked"),
        "btfs add -Q{} {args:?} {} failed (status {}):\nstdout:\n{}\nstderr:\n{}",
        if only_hash { " -n" } else { "" },
        path.display(),
        r.status,
        r.stdout,
        r.stderr
    );
    one_line(&r.stdout, &format!("btfs add -Q {args:?}"))
}

/// Collects every mismatch, so that one run shows them all.
struct Checker {
    repo: tempfile::TempDir,
    failures: Vec<String>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            repo: tempfile::tempdir().unwrap(),
            failures: Vec::new(),
        }
    }

    /// Adds `path` with btfs (`-n` unless `store`) and with the reference; returns
    /// btfs's CID.
    fn check(
        &mut self,
        what: &str,
        mode: &Mode,
        btfs_extra: &[&str],
        reference_extra: &[&str],
        store: bool,
        path: &Path,
    ) -> String {
        let btfs_args: Vec<&str> = btfs_extra.iter().chain(mode.btfs).copied().collect();
        let ref_args: Vec<&str> = mode
            .reference
            .iter()
            .chain(reference_extra)
            .copied()
            .collect();
        let ours = btfs_add(self.repo.path(), !store, &btfs_args, path);
        let theirs = reference(&ref_args, path);
        if ours != theirs {
            self.failures.push(format!(
                "{what}, {}{}: btfs add {btfs_args:?} gave {ours}, the reference {theirs}",
                mode.name,
                if store { ", stored" } else { "" }
            ));
        }
        ours
    }

    /// A file added in every mode.
    fn file(&mut self, what: &str, path: &Path) -> String {
        let mut v0 = String::new();
        for mode in MODES {
            let cid = self.check(what, mode, &[], &[], false, path);
            if mode.name == V0.name {
                v0 = cid;
            }
        }
        v0
    }

    fn expect(&mut self, what: &str, got: &str, want: &str) {
        if got != want {
            self.failures
                .push(format!("{what}: got {got}, kubo gives {want}"));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} CID mismatches:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

#[test]
fn kubo_anchor_cids() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Checker::new();
    let anchors: [(&str, Vec<u8>, &str); 4] = [
        (
            "hello\\n",
            b"hello\n".to_vec(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
        ),
        (
            "empty file",
            Vec::new(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
        ),
        (
            "hello world\\n",
            b"hello world\n".to_vec(),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        ),
        (
            "64 MiB of zeros",
            vec![0; 64 << 20],
            "QmfKyrN38oa8CrSYirAYZq4X4Hvq73JtVkgSgeVzHCkAuT",
        ),
    ];
    for (i, (what, bytes, want)) in anchors.iter().enumerate() {
        let path = tmp.path().join(format!("anchor{i}"));
        write(&path, bytes);
        let v0 = c.file(what, &path);
        c.expect(&format!("{what}, btfs add -n"), &v0, want);
        // Storing must not change the CID.
        let stored = btfs_add(c.repo.path(), false, &[], &path);
        c.expect(&format!("{what}, btfs add (stored)"), &stored, want);
        let reference_v0 = reference(&[], &path);
        c.expect(
            &format!("{what}, the reference itself"),
            &reference_v0,
            want,
        );
    }
    c.finish();
}

#[test]
fn files_around_chunk_and_tree_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Checker::new();
    // 174 chunks fill one balanced-DAG node; one byte more needs a second level.
    let full = 174 * CHUNK;
    let big = data(full + 1, 42);
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, full, full + 1] {
        let path = tmp.path().join(format!("f{len}"));
        write(&path, &big[..len]);
        c.file(&format!("{len}-byte file"), &path);
    }
    // -w wraps the file in a directory that names it.
    let hello = tmp.path().join("hello.txt");
    write(&hello, b"hello\n");
    for mode in [&V0, &V1] {
        c.check(
            "hello.txt with -w",
            mode,
            &["-w"],
            &["--wrap"],
            false,
            &hello,
        );
    }
    c.finish();
}

#[test]
fn random_100_mib_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Checker::new();
    let path = tmp.path().join("random.bin");
    write(&path, &data(100 << 20, 7));
    c.file("random 100 MiB file", &path);
    c.finish();
}

/// Nested folders, an empty one, one holding only a hidden file, hidden files, names
/// with spaces and non-ASCII letters, and files of one byte to several chunks.
fn sample_tree(root: &Path) -> PathBuf {
    let d = root.join("tree");
    write(&d.join("hello.txt"), b"hello\n");
    write(&d.join("empty.txt"), b"");
    write(&d.join("a.bin"), &data(100_000, 11));
    write(&d.join("with space.txt"), b"x");
    write(&d.join("ünïcødé 名前.bin"), &data(CHUNK + 1, 12));
    write(&d.join(".hidden"), b"not added without --hidden\n");
    write(&d.join("sub/b.bin"), &data(CHUNK, 13));
    write(&d.join("sub/deeper/c.bin"), &data(3 * CHUNK + 17, 14));
    write(&d.join("sub/.hidden dir/x.txt"), b"hidden\n");
    write(&d.join("dir with space/ü.txt"), b"u\n");
    write(&d.join("only-hidden/.keep"), b"");
    std::fs::create_dir_all(d.join("empty dir")).unwrap();
    std::fs::create_dir_all(d.join("sub/deeper/empty")).unwrap();
    d
}

#[test]
fn directory_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Checker::new();
    let tree = sample_tree(tmp.path());
    for mode in MODES {
        c.check("tree with -r", mode, &["-r"], &[], false, &tree);
        c.check(
            "tree with -r -w",
            mode,
            &["-r", "-w"],
            &["--wrap"],
            false,
            &tree,
        );
    }
    for mode in [&V0, &V1] {
        c.check(
            "tree with -r --hidden",
            mode,
            &["-r", "--hidden"],
            &["--hidden"],
            false,
            &tree,
        );
    }
    let plain = c.check("tree with -r", &V0, &["-r"], &[], true, &tree);
    let hidden = reference(&["--hidden"], &tree);
    assert_ne!(
        plain, hidden,
        "hidden files must change the CID only with --hidden"
    );
    c.finish();
}

/// Past 256 KiB of link names and CIDs a folder becomes a HAMT-sharded directory, as in
/// kubo; btfs builds the same shards and reads them back (ls, cat, get).
#[test]
fn large_folders_are_hamt_sharded_like_kubo() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("many");
    // 7000 × (14-byte name + 34-byte CID) = 336 000 bytes: sharded. A sub-folder
    // (estimated the same way by both importers as it is empty) and mixed sizes.
    for i in 0..7000 {
        let body = if i % 1000 == 0 {
            data(300_000, i)
        } else {
            format!("{i}").into_bytes()
        };
        write(&dir.join(format!("file-{i:05}.txt")), &body);
    }
    std::fs::create_dir_all(dir.join("zz-empty")).unwrap();
    let mut c = Checker::new();
    for mode in [&V0, &V1] {
        c.check("7000-file folder with -r", mode, &["-r"], &[], false, &dir);
    }
    c.finish();
    // Stored, then read back through the shards.
    let repo = tmp.path().join("repo");
    let root = btfs_add(&repo, false, &["-r"], &dir);
    let run = |args: &[&str]| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(args),
            Duration::from_secs(120),
        )
    };
    let ls = run(&["ls", &root]);
    assert_eq!(ls.status, 0, "{}", ls.stderr);
    assert_eq!(ls.stdout.lines().count(), 7001);
    assert!(ls
        .stdout
        .lines()
        .next()
        .unwrap()
        .ends_with(" file-00000.txt"));
    let cat = run(&["cat", &format!("{root}/file-01234.txt")]);
    assert_eq!(cat.status, 0, "{}", cat.stderr);
    assert_eq!(cat.stdout, "1234");
    let out = tmp.path().join("out");
    let get = run(&["get", &root, "-o", out.to_str().unwrap()]);
    assert_eq!(get.status, 0, "{}", get.stderr);
    assert_same_tree(&dir, &out);
    let verify = run(&["repo", "verify"]);
    assert_eq!(verify.status, 0, "{}", verify.stdout);
    // The gateway resolves names through the shards and lists the sharded folder.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", &repo).args([
        "daemon",
        "--api",
        "127.0.0.1:0",
        "--gateway",
        &format!("127.0.0.1:{port}"),
    ]);
    let d = Daemon::spawn("btfs daemon", &mut cmd);
    d.wait_for_line("gateway listening", Duration::from_secs(30));
    let curl = |path: &str| {
        run_with_timeout(
            Command::new(tool("curl"))
                .args(["-sS", "--fail", "--max-time", "60"])
                .arg(format!("http://127.0.0.1:{port}{path}")),
            Duration::from_secs(90),
        )
    };
    let file = curl(&format!("/btfs/{root}/file-04321.txt"));
    assert_eq!(file.status, 0, "{}", file.stderr);
    assert_eq!(file.stdout, "4321");
    let listing = curl(&format!("/btfs/{root}/"));
    assert_eq!(listing.status, 0, "{}", listing.stderr);
    assert!(listing.stdout.contains("file-06999.txt") && listing.stdout.contains("zz-empty/"));
}

//! `btfs add --nocopy` and `btfs filestore ls|verify|dups` end to end, each test with its
//! own `$BTFS_PATH`: the references listed as kubo lists them, the CIDs of `add`, a file
//! changed or removed after it was added (verify's statuses and exit status, `cat`
//! naming the file), `pin rm` + `repo gc` dropping references but never the user's file,
//! and the same commands over the daemon's HTTP API.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHUNK: u64 = 262_144;
/// `hello\n`, never added with --nocopy by these tests.
const HELLO: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";

/// A repo of its own (`tmp/repo`) and a scratch folder (`tmp`, the working directory).
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Run {
        let r = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", self.repo())
                .env_remove("BTFS_API_TOKEN")
                .current_dir(self.tmp.path())
                .args(args),
            Duration::from_secs(120),
        );
        assert!(!r.stderr.contains("panicked"), "{args:?}:\n{}", r.stderr);
        r
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.status, 0,
            "btfs {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }

    /// `btfs ARGS` that must exit 1 with `needle` on stderr.
    fn fails(&self, args: &[&str], needle: &str) -> Run {
        let r = self.run(args);
        assert_eq!(r.status, 1, "btfs {args:?} should fail:\n{}", r.stdout);
        assert!(
            r.stderr.contains(needle),
            "btfs {args:?}: stderr should say {needle:?}:\n{}",
            r.stderr
        );
        r
    }

    fn add_q(&self, args: &[&str]) -> String {
        let mut all = vec!["add", "-Q"];
        all.extend_from_slice(args);
        self.ok(&all).stdout.trim().to_string()
    }

    /// Every block file under `blocks/`.
    fn block_files(&self) -> usize {
        let mut n = 0;
        for shard in std::fs::read_dir(self.repo().join("blocks"))
            .unwrap()
            .flatten()
        {
            if shard.file_name().to_string_lossy().starts_with('.') || !shard.path().is_dir() {
                continue;
            }
            n += std::fs::read_dir(shard.path()).unwrap().count();
        }
        n
    }
}

/// A line of `filestore ls`: cid, size, path, offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    cid: String,
    size: u64,
    path: String,
    offset: u64,
}

fn parse_lines(out: &str) -> Vec<Line> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "not `<cid> <size> <path> <offset>`: {l:?}");
            Line {
                cid: f[0].into(),
                size: f[1].parse().unwrap(),
                path: f[2].into(),
                offset: f[3].parse().unwrap(),
            }
        })
        .collect()
}

/// `verify` lines: status and the `ls` fields.
fn parse_verify(out: &str) -> Vec<(String, Line)> {
    out.lines()
        .map(|l| {
            let (status, rest) = l.split_once(' ').unwrap();
            (
                status.to_string(),
                parse_lines(rest.trim_start())[0].clone(),
            )
        })
        .collect()
}

fn by_offset(mut v: Vec<Line>) -> Vec<Line> {
    v.sort_by_key(|l| l.offset);
    v
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().display().to_string()
}

fn ndjson_of(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn nocopy_add_is_listed_verified_and_found_among_dups() {
    let env = Env::new();
    let file = env.path("big.bin");
    let bytes = data(3 * CHUNK as usize + 1000, 5);
    write(&file, &bytes);
    let root = env.add_q(&["--nocopy", "big.bin"]);
    // --nocopy implies raw leaves, as kubo's does: the CID of `add --raw-leaves`.
    assert_eq!(root, env.add_q(&["-n", "--raw-leaves", "big.bin"]));
    assert_ne!(root, env.add_q(&["-n", "big.bin"]));
    // Only the inner node is a block file: the leaves stay in the file.
    assert_eq!(env.block_files(), 1);
    assert_eq!(env.pins_of(&root), "recursive");

    let lines = by_offset(parse_lines(&env.ok(&["filestore", "ls"]).stdout));
    let path = canonical(&file);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.cid.starts_with("bafkrei"),
            "raw leaves are CIDv1 raw: {l:?}"
        );
        assert_eq!(l.path, path);
        assert_eq!(l.offset, i as u64 * CHUNK);
        assert_eq!(l.size, if i < 3 { CHUNK } else { 1000 });
    }
    // --file-order: by path and offset.
    let ordered = parse_lines(&env.ok(&["filestore", "ls", "--file-order"]).stdout);
    assert_eq!(ordered, lines);
    // JSON: kubo's ListRes fields, one object per line.
    let json = ndjson_of(&env.ok(&["--enc", "json", "filestore", "ls"]).stdout);
    assert_eq!(json.len(), 4);
    for j in &json {
        let l = lines
            .iter()
            .find(|l| j["Key"]["/"] == l.cid.as_str())
            .unwrap();
        assert_eq!(j["Status"], 0);
        assert_eq!(j["ErrorMsg"], "");
        assert_eq!(j["FilePath"], path.as_str());
        assert_eq!(j["Offset"], l.offset);
        assert_eq!(j["Size"], l.size);
    }
    // With CIDs: those only; one the filestore lacks is an error line and status 1.
    let one = parse_lines(&env.ok(&["filestore", "ls", &lines[2].cid]).stdout);
    assert_eq!(one, vec![lines[2].clone()]);
    let r = env.fails(&["filestore", "ls", &lines[1].cid, HELLO], HELLO);
    assert_eq!(parse_lines(&r.stdout), vec![lines[1].clone()]);
    assert!(r.stderr.contains("not in the filestore"), "{}", r.stderr);
    let r = env.fails(&["--enc", "json", "filestore", "ls", "nonsense"], "");
    assert_eq!(ndjson_of(&r.stdout)[0]["Status"], 20);

    let v = parse_verify(&env.ok(&["filestore", "verify"]).stdout);
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|(s, _)| s == "ok"), "{v:?}");
    assert_eq!(env.ok(&["filestore", "dups"]).stdout, "");
    let verify = env.ok(&["repo", "verify"]).stdout;
    assert!(
        verify.contains("4 of them filestore references"),
        "{verify}"
    );
    assert_eq!(env.cat(&root), bytes);

    // The same leaves added as blocks too: dups lists every one.
    assert_eq!(env.add_q(&["--raw-leaves", "big.bin"]), root);
    let mut dups: Vec<String> = env
        .ok(&["filestore", "dups"])
        .stdout
        .lines()
        .map(String::from)
        .collect();
    dups.sort();
    let mut want: Vec<String> = lines.iter().map(|l| l.cid.clone()).collect();
    want.sort();
    assert_eq!(dups, want);
    let json = ndjson_of(&env.ok(&["--enc", "json", "filestore", "dups"]).stdout);
    assert_eq!(json.len(), 4);
    assert!(json.iter().all(|j| j["Err"] == "" && j["Ref"].is_string()));
}

impl Env {
    fn pins_of(&self, cid: &str) -> String {
        self.ok(&["pin", "ls"])
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{cid} ")).map(str::to_string))
            .unwrap_or_default()
    }

    /// `btfs cat CID`, which must succeed.
    fn cat(&self, cid: &str) -> Vec<u8> {
        let out = self.path("cat.out");
        let f = std::fs::File::create(&out).unwrap();
        let st = Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", self.repo())
            .args(["cat", cid])
            .stdout(f)
            .status()
            .unwrap();
        assert!(st.success(), "cat {cid}");
        std::fs::read(&out).unwrap()
    }
}

#[test]
fn nocopy_without_raw_leaves_gives_the_cids_of_add() {
    let env = Env::new();
    let dir = sample_dir(env.tmp.path(), "set");
    write(&dir.join("big.bin"), &data(2 * CHUNK as usize + 7, 9));
    let plain = env.ok(&["add", "-r", "-n", "set"]).stdout;
    let nocopy = env
        .ok(&["add", "-r", "--nocopy", "--raw-leaves=false", "set"])
        .stdout;
    assert_eq!(nocopy, plain);
    // UnixFS leaves are listed as CIDv0; every non-empty file has references.
    let lines = parse_lines(&env.ok(&["filestore", "ls"]).stdout);
    assert!(lines.iter().all(|l| l.cid.starts_with("Qm")), "{lines:?}");
    let files: std::collections::BTreeSet<&str> = lines.iter().map(|l| l.path.as_str()).collect();
    let want: std::collections::BTreeSet<String> =
        ["a.bin", "big.bin", "sub/b.txt", "sub/deeper/c.bin", "z.bin"]
            .iter()
            .map(|f| canonical(&dir.join(f)))
            .collect();
    assert_eq!(files, want.iter().map(String::as_str).collect());
    assert!(
        parse_verify(&env.ok(&["filestore", "verify", "--file-order"]).stdout)
            .iter()
            .all(|(s, _)| s == "ok")
    );
    // The root is readable file by file, and the folder is a block.
    let root = plain.lines().last().unwrap().split(' ').nth(1).unwrap();
    assert_eq!(
        env.cat(&format!("{root}/sub/deeper/c.bin")),
        std::fs::read(dir.join("sub/deeper/c.bin")).unwrap()
    );

    // -n with --nocopy only hashes; standard input is refused.
    let env2 = Env::new();
    write(&env2.path("f"), &data(CHUNK as usize + 1, 1));
    let hashed = env2.add_q(&["-n", "--nocopy", "f"]);
    assert_eq!(hashed, env2.add_q(&["-n", "--raw-leaves", "f"]));
    assert!(!env2.repo().exists(), "-n created the repo");
    env2.fails(&["add", "--nocopy"], "standard input");
    env2.fails(&["add", "--nocopy", "-"], "standard input");
    assert_eq!(env2.ok(&["filestore", "ls"]).stdout, "");
}

#[test]
fn a_changed_or_removed_file_is_reported_and_never_read_as_data() {
    let env = Env::new();
    let file = env.path("f.bin");
    let mut bytes = data(3 * CHUNK as usize, 3);
    write(&file, &bytes);
    let root = env.add_q(&["--nocopy", "f.bin"]);
    let leaves = by_offset(parse_lines(&env.ok(&["filestore", "ls"]).stdout));
    assert_eq!(leaves.len(), 3);

    // One byte of the second chunk changed, the length kept.
    bytes[CHUNK as usize + 10] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let r = env.fails(
        &["filestore", "verify"],
        "1 of 3 filestore references are not ok",
    );
    let v = parse_verify(&r.stdout);
    assert_eq!(v.len(), 3);
    for (status, l) in &v {
        let want = if l.offset == CHUNK { "changed" } else { "ok" };
        assert_eq!(status, want, "{v:?}");
    }
    let one = env.fails(&["filestore", "verify", &leaves[1].cid], "not ok");
    assert_eq!(parse_verify(&one.stdout)[0].0, "changed");
    env.ok(&["filestore", "verify", &leaves[0].cid, &leaves[2].cid]);
    let json = ndjson_of(&env.run(&["--enc", "json", "filestore", "verify"]).stdout);
    let changed: Vec<&Value> = json.iter().filter(|j| j["Status"] != 0).collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["Status"], 12);
    assert_eq!(changed[0]["Offset"], CHUNK);
    // cat refuses, naming the file; so does repo verify.
    let cat = env.run(&["cat", &root]);
    assert_ne!(cat.status, 0);
    assert!(cat.stderr.contains(&canonical(&file)), "{}", cat.stderr);
    let rv = env.run(&["repo", "verify"]);
    assert_eq!(rv.status, 1);
    assert!(rv.stdout.contains(&canonical(&file)), "{}", rv.stdout);

    // Removed: every reference says no-file.
    let path = canonical(&file);
    std::fs::remove_file(&file).unwrap();
    let r = env.fails(&["filestore", "verify"], "3 of 3");
    let v = parse_verify(&r.stdout);
    assert!(
        v.iter().all(|(s, l)| s == "no-file" && l.path == path),
        "{v:?}"
    );
    let cat = env.run(&["cat", &root]);
    assert_ne!(cat.status, 0);
    assert!(
        cat.stderr.contains(&path) && cat.stderr.contains("gone"),
        "{}",
        cat.stderr
    );
}

#[test]
fn gc_drops_unpinned_references_and_keeps_the_files() {
    let env = Env::new();
    let file = env.path("keep.bin");
    let bytes = data(2 * CHUNK as usize + 5, 4);
    write(&file, &bytes);
    let root = env.add_q(&["--nocopy", "keep.bin"]);
    // Pinned: gc keeps the references.
    let gc = env.ok(&["repo", "gc"]).stdout;
    assert!(
        gc.contains("removed 0 filestore references, kept 3"),
        "{gc}"
    );
    assert_eq!(parse_lines(&env.ok(&["filestore", "ls"]).stdout).len(), 3);
    env.ok(&["pin", "rm", &root]);
    let gc = env.ok(&["repo", "gc"]).stdout;
    assert!(
        gc.contains("removed 3 filestore references, kept 0"),
        "{gc}"
    );
    assert_eq!(env.ok(&["filestore", "ls"]).stdout, "");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "gc touched the user's file"
    );
    let json = env.ok(&["--enc", "json", "repo", "gc"]).json();
    assert_eq!(json["RefsRemoved"], 0);
    assert_eq!(json["FoldersRemoved"], serde_json::json!([]));

    // --pin=false: the references are recorded, and the next gc drops them.
    let again = env.add_q(&["--nocopy", "--pin=false", "keep.bin"]);
    assert_eq!(again, root);
    assert_eq!(env.pins_of(&root), "");
    assert_eq!(parse_lines(&env.ok(&["filestore", "ls"]).stdout).len(), 3);
    let json = env.ok(&["--enc", "json", "repo", "gc"]).json();
    assert_eq!(json["RefsRemoved"], 3);
    assert_eq!(env.ok(&["filestore", "ls"]).stdout, "");
    assert!(file.exists());
}

#[test]
fn filestore_commands_and_add_nocopy_over_the_api() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("work");
    let file = work.join("api.bin");
    let bytes = data(2 * CHUNK as usize + 99, 8);
    write(&file, &bytes);
    let reference = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", t.path().join("reference-repo"))
            .args(["add", "-n", "-Q", "--raw-leaves"])
            .arg(&file),
        Duration::from_secs(60),
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let node = Node::start(&t.path().join("repo"), &[]);

    // The command line through the daemon: a relative path is the caller's file.
    let r = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_btfs"))
            .env("BTFS_PATH", &node.repo)
            .env_remove("BTFS_API_TOKEN")
            .current_dir(&work)
            .args(["add", "--nocopy", "-Q", "api.bin"]),
        Duration::from_secs(120),
    )
    .ok();
    assert_eq!(r.stdout.trim(), reference);
    node.btfs(&["add", "--nocopy"])
        .stderr
        .contains("standard input")
        .then_some(())
        .expect("stdin refused through the daemon");

    // filestore ls over HTTP answers as the command line does.
    let cli = node.btfs(&["filestore", "ls"]).ok().stdout;
    let lines = parse_lines(&cli);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.path == canonical(&file)));
    let (st, body) = node.post("filestore/ls?enc=text", &[]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, cli);
    let (st, body) = node.post("filestore/ls", &[]);
    assert_eq!(st, 200, "{body}");
    let json = ndjson_of(&body);
    assert_eq!(json.len(), 3);
    assert!(json
        .iter()
        .all(|j| j["Status"] == 0 && j["FilePath"] == canonical(&file).as_str()));
    let (st, body) = node.post("filestore/verify?enc=text&file-order=true", &[]);
    assert_eq!(st, 200, "{body}");
    assert!(parse_verify(&body).iter().all(|(s, _)| s == "ok"), "{body}");
    let (st, body) = node.post("filestore/dups", &[]);
    assert_eq!((st, body.as_str()), (200, ""));

    // add over HTTP: absolute paths, read where they are; no upload, no relative path.
    let (st, body) = node.post(
        &format!(
            "add?nocopy=true&pin=false&arg={}",
            enc(&file.display().to_string())
        ),
        &[],
    );
    assert_eq!(st, 200, "{body}");
    let added: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(added["Hash"], reference.as_str());
    let (st, body) = node.post("add?nocopy=true&arg=api.bin", &[]);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("absolute"), "{body}");
    let (st, body) = node.post(
        "add?nocopy=true",
        &["-F", &format!("file=@{};filename=api.bin", file.display())],
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("absolute paths"), "{body}");

    // A changed file: verify through the daemon exits 1 with the changed line.
    let mut changed = bytes.clone();
    changed[5] ^= 1;
    std::fs::write(&file, &changed).unwrap();
    let r = node.btfs(&["filestore", "verify"]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let v = parse_verify(&r.stdout);
    assert_eq!(v.iter().filter(|(s, _)| s == "changed").count(), 1, "{v:?}");
    assert!(r.stderr.contains("not ok"), "{}", r.stderr);
    let (st, body) = node.post("filestore/verify?enc=text", &[]);
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("changed") && body.contains("\"Type\":\"error\""),
        "{body}"
    );
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

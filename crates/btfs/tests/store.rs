//! The store commands end to end: `btfs add`, `cat`, `get`, `ls`, `pin`, `repo gc` and
//! `repo verify`, each test with its own `$BTFS_PATH`; the repo lock that keeps `gc` from
//! running under a writer; and a `kill -9` in the middle of `add`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHUNK: usize = 262_144;
/// `hello\n`, as kubo adds it.
const HELLO: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
/// `hello world\n`, never added by these tests.
const ABSENT: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

/// A repo of its own (`$BTFS_PATH` = `tmp/repo`, created on first use) and a scratch
/// folder (`tmp`).
struct Env {
    tmp: tempfile::TempDir,
}

/// A finished command with its raw output.
struct Raw {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
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

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
        cmd.env("BTFS_PATH", self.repo())
            .current_dir(self.tmp.path())
            .args(args);
        cmd
    }

    /// `btfs ARGS` with text output; never a panic.
    fn run(&self, args: &[&str]) -> Run {
        let r = run_with_timeout(&mut self.cmd(args), Duration::from_secs(300));
        assert!(
            !r.stderr.contains("panicked"),
            "btfs panicked on {args:?}:\n{}",
            r.stderr
        );
        r
    }

    /// `btfs ARGS` that must succeed.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.status, 0,
            "btfs {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }

    /// `btfs ARGS` that must fail cleanly: exit status 1 and an `Error: …` line that
    /// contains `needle`.
    fn fails(&self, args: &[&str], needle: &str) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.status, 1,
            "btfs {args:?} should fail with status 1\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with("Error: ") && l.contains(needle)),
            "btfs {args:?}: the error should say {needle:?}, got:\n{}",
            r.stderr
        );
        r
    }

    /// `btfs ARGS` with binary standard output (written to a file, so nothing is lost).
    fn raw(&self, args: &[&str]) -> Raw {
        let out = tempfile::NamedTempFile::new_in(self.tmp.path()).unwrap();
        let err = tempfile::NamedTempFile::new_in(self.tmp.path()).unwrap();
        let mut child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("btfs {args:?} did not finish within 300 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let r = Raw {
            status: status.code().unwrap_or(-1),
            stdout: std::fs::read(out.path()).unwrap(),
            stderr: std::fs::read_to_string(err.path()).unwrap(),
        };
        assert!(
            !r.stderr.contains("panicked"),
            "btfs panicked on {args:?}:\n{}",
            r.stderr
        );
        r
    }

    /// `btfs cat ARGS`: the bytes, which must be printed with success.
    fn cat(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["cat"];
        all.extend_from_slice(args);
        let r = self.raw(&all);
        assert_eq!(r.status, 0, "btfs {all:?} failed:\n{}", r.stderr);
        r.stdout
    }

    /// `btfs add -Q ARGS`: the root CID.
    fn add_q(&self, args: &[&str]) -> String {
        let mut all = vec!["add", "-Q"];
        all.extend_from_slice(args);
        one_line(&self.ok(&all).stdout)
    }

    /// The pins `btfs pin ls` prints: CID → kind.
    fn pins(&self) -> BTreeMap<String, String> {
        self.ok(&["pin", "ls"])
            .stdout
            .lines()
            .map(|l| {
                let (cid, kind) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("pin ls line {l:?} is not `<cid> <kind>`"));
                (cid.to_owned(), kind.to_owned())
            })
            .collect()
    }

    /// Every block file under `$BTFS_PATH/blocks/XX/`.
    fn block_files(&self) -> Vec<PathBuf> {
        block_files(&self.repo())
    }
}

fn block_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(repo.join("blocks")) else {
        return out;
    };
    for shard in shards.flatten() {
        if shard.file_name().to_string_lossy().starts_with('.') || !shard.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "data") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn one_line(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "expected one line, got:\n{out}"
    );
    lines[0].trim().to_owned()
}

/// A tree with nested folders, an empty folder, an empty file, a file of several
/// chunks, and names with spaces and non-ASCII letters.
fn tree(root: &Path) -> PathBuf {
    let d = root.join("tree");
    write(&d.join("hello.txt"), b"hello\n");
    write(&d.join("empty.txt"), b"");
    write(&d.join("big.bin"), &data(3 * CHUNK + 123, 21));
    write(&d.join("with space.txt"), b"spaced\n");
    write(&d.join("sub/ünï 名.bin"), &data(CHUNK + 1, 22));
    write(&d.join("sub/deeper/c.txt"), b"deep\n");
    std::fs::create_dir_all(d.join("empty dir")).unwrap();
    std::fs::create_dir_all(d.join("sub/deeper/empty")).unwrap();
    d
}

/// Everything under `dir`: relative path → `Some(bytes)` for files, `None` for folders.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, None);
                walk(base, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `added <cid> <name>` lines → name → CID.
fn added(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .map(|l| {
            let rest = l
                .strip_prefix("added ")
                .unwrap_or_else(|| panic!("{l:?} is not `added <cid> <name>`"));
            let (cid, name) = rest.split_once(' ').unwrap();
            (name.to_owned(), cid.to_owned())
        })
        .collect()
}

#[test]
fn add_prints_cids_in_every_shape() {
    let env = Env::new();
    let hello = env.path("hello.txt");
    write(&hello, b"hello\n");
    let h = hello.to_str().unwrap();

    let r = env.ok(&["add", h]);
    assert_eq!(r.stdout, format!("added {HELLO} hello.txt\n"));
    assert_eq!(env.ok(&["add", "-q", h]).stdout, format!("{HELLO}\n"));
    assert_eq!(env.ok(&["add", "-Q", h]).stdout, format!("{HELLO}\n"));
    let j = env.ok(&["--enc", "json", "add", h]);
    let v: serde_json::Value = serde_json::from_str(one_line(&j.stdout).as_str()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"Name": "hello.txt", "Hash": HELLO, "Size": "14"}),
        "btfs --enc json add"
    );

    // A tree: one line per file and folder, the root last; -q the same CIDs; -Q the root.
    let t = tree(env.tmp.path());
    let ts = t.to_str().unwrap();
    let text = env.ok(&["add", "-r", ts]).stdout;
    let names = added(&text);
    let last = text.lines().last().unwrap();
    let root = names["tree"].clone();
    assert_eq!(last, format!("added {root} tree"), "the root comes last");
    for want in [
        "tree/hello.txt",
        "tree/empty.txt",
        "tree/big.bin",
        "tree/with space.txt",
        "tree/sub/ünï 名.bin",
        "tree/sub/deeper/c.txt",
        "tree/sub/deeper/empty",
        "tree/sub/deeper",
        "tree/sub",
        "tree/empty dir",
    ] {
        assert!(names.contains_key(want), "no line for {want}:\n{text}");
    }
    assert_eq!(names["tree/hello.txt"], HELLO);
    let quiet: Vec<String> = env
        .ok(&["add", "-r", "-q", ts])
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    let cids: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(quiet, cids, "-q prints the same CIDs in the same order");
    assert_eq!(env.add_q(&["-r", ts]), root);
    let json = env.ok(&["--enc", "json", "add", "-r", ts]).stdout;
    let objs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objs.len(), names.len(), "one JSON object per line:\n{json}");
    for o in &objs {
        let m = o.as_object().unwrap();
        assert_eq!(m.len(), 3, "{o}");
        let name = m["Name"].as_str().unwrap();
        assert_eq!(m["Hash"].as_str().unwrap(), names[name], "{o}");
        let size: u64 = m["Size"].as_str().unwrap().parse().unwrap();
        assert!(size > 0, "{o}");
    }
    assert_eq!(objs.last().unwrap()["Hash"], root.as_str());
    let jq = env.ok(&["--enc", "json", "add", "-r", "-Q", ts]).stdout;
    let v: serde_json::Value = serde_json::from_str(&one_line(&jq)).unwrap();
    assert_eq!(v["Hash"], root.as_str());
    assert_eq!(v["Name"], "tree");
}

#[test]
fn cat_whole_ranges_and_paths() {
    let env = Env::new();
    let t = tree(env.tmp.path());
    let names = added(&env.ok(&["add", "-r", t.to_str().unwrap()]).stdout);
    let root = &names["tree"];
    let big = std::fs::read(t.join("big.bin")).unwrap();
    let big_cid = &names["tree/big.bin"];

    assert_eq!(env.cat(&[big_cid]), big);
    assert_eq!(env.cat(&[HELLO]), b"hello\n");
    // Ranges inside one chunk, across one and across two chunk boundaries, to the end,
    // and past it.
    for (off, len) in [
        (0usize, 10usize),
        (CHUNK - 100, 200),
        (CHUNK - 1, 2),
        (CHUNK, 1),
        (CHUNK - 10, CHUNK + 20),
        (2 * CHUNK + 5, 10_000),
        (big.len() - 50, 50),
        (big.len() - 50, 1000),
        (big.len(), 10),
        (big.len() + 1000, 10),
        (100, 0),
    ] {
        let got = env.cat(&[
            big_cid,
            "--offset",
            &off.to_string(),
            "--length",
            &len.to_string(),
        ]);
        let want = &big[off.min(big.len())..(off + len).min(big.len())];
        assert!(
            got == want,
            "cat --offset {off} --length {len}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
    let tail = env.cat(&[big_cid, "--offset", &(CHUNK + 7).to_string()]);
    assert!(tail == big[CHUNK + 7..], "cat --offset without --length");
    let head = env.cat(&[big_cid, "--length", "300000"]);
    assert!(head == big[..300_000], "cat --length without --offset");

    // Paths inside a directory, also as /btfs/… and /ipfs/….
    assert_eq!(env.cat(&[&format!("{root}/sub/deeper/c.txt")]), b"deep\n");
    assert_eq!(env.cat(&[&format!("/btfs/{root}/hello.txt")]), b"hello\n");
    assert_eq!(
        env.cat(&[&format!("/ipfs/{root}/with space.txt")]),
        b"spaced\n"
    );
    let uni = env.cat(&[&format!("{root}/sub/ünï 名.bin")]);
    assert!(uni == std::fs::read(t.join("sub/ünï 名.bin")).unwrap());
    assert_eq!(env.cat(&[&format!("{root}/empty.txt")]), b"");
    env.fails(
        &["cat", &format!("{root}/nope.txt")],
        "no link named \"nope.txt\"",
    );
    env.fails(&["cat", &format!("{root}/hello.txt/x")], "not a directory");
    env.fails(&["cat", root], "not a file");
}

#[test]
fn get_files_and_trees() {
    let env = Env::new();
    let t = tree(env.tmp.path());
    let names = added(&env.ok(&["add", "-r", t.to_str().unwrap()]).stdout);
    let root = &names["tree"];

    let out = env.path("out");
    env.ok(&["get", root, "-o", out.to_str().unwrap()]);
    let (want, got) = (snapshot(&t), snapshot(&out));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "btfs get wrote another tree"
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs after btfs get");
    }
    assert!(out.join("empty dir").is_dir() && out.join("sub/deeper/empty").is_dir());

    // A file, by CID and by path; the JSON form reports it.
    let f = env.path("big copy.bin");
    env.ok(&["get", &names["tree/big.bin"], "-o", f.to_str().unwrap()]);
    assert!(std::fs::read(&f).unwrap() == std::fs::read(t.join("big.bin")).unwrap());
    let g = env.path("c.txt");
    let j = env.ok(&[
        "--enc",
        "json",
        "get",
        &format!("{root}/sub/deeper/c.txt"),
        "-o",
        g.to_str().unwrap(),
    ]);
    assert_eq!(j.json()["Bytes"], 5);
    assert_eq!(std::fs::read(&g).unwrap(), b"deep\n");
    // Without -o, the last name of the path, in the current folder.
    env.ok(&["get", &format!("{root}/with space.txt")]);
    assert_eq!(
        std::fs::read(env.path("with space.txt")).unwrap(),
        b"spaced\n"
    );

    // An existing output is refused and left alone, for files and folders.
    write(&env.path("exists.txt"), b"mine");
    env.fails(
        &["get", HELLO, "-o", env.path("exists.txt").to_str().unwrap()],
        "already exists",
    );
    assert_eq!(std::fs::read(env.path("exists.txt")).unwrap(), b"mine");
    env.fails(
        &["get", root, "-o", out.to_str().unwrap()],
        "already exists",
    );
    assert_eq!(snapshot(&out), got, "a refused get changed the folder");
}

#[test]
fn ls_lists_cid_size_name() {
    let env = Env::new();
    let t = tree(env.tmp.path());
    let names = added(&env.ok(&["add", "-r", t.to_str().unwrap()]).stdout);
    let root = &names["tree"];
    let out = env.ok(&["ls", root]).stdout;
    let big_len = 3 * CHUNK + 123;
    let want = [
        format!("{} {big_len} big.bin", names["tree/big.bin"]),
        format!("{} - empty dir/", names["tree/empty dir"]),
        format!("{} 0 empty.txt", names["tree/empty.txt"]),
        format!("{HELLO} 6 hello.txt"),
        format!("{} - sub/", names["tree/sub"]),
        format!("{} 7 with space.txt", names["tree/with space.txt"]),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "btfs ls {root}");
    let sub = env.ok(&["ls", &format!("{root}/sub")]).stdout;
    assert_eq!(
        sub.lines().collect::<Vec<_>>(),
        [
            format!("{} - deeper/", names["tree/sub/deeper"]),
            format!("{} {} ünï 名.bin", names["tree/sub/ünï 名.bin"], CHUNK + 1),
        ]
    );
    assert_eq!(
        env.ok(&["ls", &names["tree/empty dir"]]).stdout,
        "",
        "an empty folder lists nothing"
    );
    let j = env.ok(&["--enc", "json", "ls", root]).json();
    assert_eq!(j["Hash"], root.as_str());
    assert_eq!(j["Links"].as_array().unwrap().len(), 6);
    assert_eq!(j["Links"][0]["Name"], "big.bin");
    assert_eq!(j["Links"][0]["Type"], "file");
    assert_eq!(j["Links"][1]["Type"], "directory");
    env.fails(&["ls", HELLO], "not a directory");
}

#[test]
fn pins_gc_and_unpinned_content() {
    let env = Env::new();
    let keep = env.path("keep.bin");
    let drop_ = env.path("drop.bin");
    let loose = env.path("loose.bin");
    write(&keep, &data(2 * CHUNK + 9, 31));
    write(&drop_, &data(2 * CHUNK + 9, 32));
    write(&loose, &data(CHUNK + 3, 33));
    let t = tree(env.tmp.path());

    let keep_cid = env.add_q(&[keep.to_str().unwrap()]);
    let drop_cid = env.add_q(&[drop_.to_str().unwrap()]);
    let tree_cid = env.add_q(&["-r", t.to_str().unwrap()]);
    // add pins recursively: the roots only, recursive.
    let pins = env.pins();
    assert_eq!(
        pins,
        [&keep_cid, &drop_cid, &tree_cid]
            .iter()
            .map(|c| (c.to_string(), "recursive".to_owned()))
            .collect::<BTreeMap<_, _>>(),
        "btfs pin ls after three adds"
    );
    let j = env.ok(&["--enc", "json", "pin", "ls"]).json();
    assert_eq!(j["Keys"][&keep_cid]["Type"], "recursive");

    // A clean gc removes nothing.
    let before = env.block_files().len();
    let gc = env.ok(&["--enc", "json", "repo", "gc"]).json();
    assert_eq!(gc["Removed"], 0, "gc with everything pinned: {gc}");
    assert_eq!(env.block_files().len(), before);

    assert_eq!(
        env.ok(&["pin", "rm", &drop_cid]).stdout,
        format!("unpinned {drop_cid}\n")
    );
    assert!(!env.pins().contains_key(&drop_cid));
    env.fails(&["pin", "rm", &drop_cid], "is not pinned");
    // Unpinned blocks stay until gc.
    assert!(env.cat(&[&drop_cid]) == std::fs::read(&drop_).unwrap());
    let gc = env.ok(&["repo", "gc"]).stdout;
    assert!(
        gc.starts_with("removed 4 blocks"),
        "a 3-chunk file is 4 blocks: {gc}"
    );
    env.fails(&["cat", &drop_cid], "not in the local store");
    env.fails(
        &["get", &drop_cid, "-o", env.path("x").to_str().unwrap()],
        "not in the local store",
    );
    assert!(!env.path("x").exists());
    // Pinned content is intact, files and folders.
    assert!(env.cat(&[&keep_cid]) == std::fs::read(&keep).unwrap());
    assert_eq!(
        env.cat(&[&format!("{tree_cid}/sub/deeper/c.txt")]),
        b"deep\n"
    );
    let out = env.path("tree-out");
    env.ok(&["get", &tree_cid, "-o", out.to_str().unwrap()]);
    assert_eq!(snapshot(&out), snapshot(&t));

    // --pin=false content works until the next gc.
    let loose_cid = env.add_q(&["--pin=false", loose.to_str().unwrap()]);
    assert!(!env.pins().contains_key(&loose_cid));
    assert!(env.cat(&[&loose_cid]) == std::fs::read(&loose).unwrap());
    let gc = env.ok(&["repo", "gc"]).stdout;
    assert!(gc.starts_with("removed 3 blocks"), "{gc}");
    env.fails(&["cat", &loose_cid], "not in the local store");
    assert!(env.cat(&[&keep_cid]) == std::fs::read(&keep).unwrap());

    // pin add brings a pin back; gc keeps what it pins.
    let again = env.add_q(&["--pin=false", drop_.to_str().unwrap()]);
    assert_eq!(again, drop_cid);
    env.ok(&["pin", "add", &drop_cid]);
    assert_eq!(env.pins()[&drop_cid], "recursive");
    env.ok(&["repo", "gc"]);
    assert!(env.cat(&[&drop_cid]) == std::fs::read(&drop_).unwrap());
    env.fails(&["pin", "add", ABSENT], "not in the local store");
    env.ok(&["repo", "verify"]);
}

#[test]
fn verify_finds_a_flipped_byte() {
    let env = Env::new();
    let f = env.path("f.bin");
    write(&f, &data(3 * CHUNK, 41));
    env.add_q(&[f.to_str().unwrap()]);
    let r = env.ok(&["repo", "verify"]);
    assert_eq!(r.stdout, "verified 4 blocks: all good\n");

    let files = env.block_files();
    assert_eq!(files.len(), 4, "{files:?}");
    // The biggest block is a leaf (the root only holds links).
    let victim = files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    let r = env.run(&["repo", "verify"]);
    assert_ne!(
        r.status, 0,
        "verify passed on a corrupt block:\n{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("corrupt block: {}", victim.display())),
        "verify should name {}:\nstdout:\n{}\nstderr:\n{}",
        victim.display(),
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("1 corrupt and 0 missing blocks"),
        "{}",
        r.stderr
    );
    let j = env.run(&["--enc", "json", "repo", "verify"]);
    assert_ne!(j.status, 0);
    let report: serde_json::Value = serde_json::from_str(j.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        report["Corrupt"],
        serde_json::json!([victim.display().to_string()])
    );
    assert_eq!(report["Checked"], 4);
}

#[test]
fn verify_reports_missing_pinned_blocks() {
    let env = Env::new();
    let f = env.path("f.bin");
    write(&f, &data(2 * CHUNK, 42));
    env.add_q(&[f.to_str().unwrap()]);
    let files = env.block_files();
    let victim = files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let r = env.run(&["repo", "verify"]);
    assert_ne!(r.status, 0);
    assert!(r.stdout.contains("missing block: "), "{}", r.stdout);
}

/// Bytes flipped in `datastore.redb` (every page, and a few offsets inside pages) make
/// the commands that read or write it fail with an error naming the file, never panic
/// (redb panics on some damaged pages); the same for a damaged `config`. A new repo is
/// private to its owner.
#[test]
fn damaged_repo_files_are_clear_errors_not_panics() {
    let env = Env::new();
    let f = env.path("hello.txt");
    write(&f, b"hello\n");
    env.add_q(&[f.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.repo()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a new repo is {:o}", mode & 0o777);

    let db = env.repo().join("datastore.redb");
    let sound = std::fs::read(&db).unwrap();
    let len = sound.len();
    // Four commands per offset: every page of the first 16 (headers, region headers,
    // the first tables), then a few fixed samples further in.
    let mut offsets: Vec<usize> = (0..len.min(16 * 4096))
        .step_by(4096)
        .chain([100, 1000, 4200, len / 4, len / 2, len / 4 * 3, len - 16])
        .filter(|&o| o < len)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut named = 0;
    for off in offsets {
        let mut bytes = sound.clone();
        for b in &mut bytes[off..(off + 16).min(len)] {
            *b ^= 0xff;
        }
        std::fs::write(&db, &bytes).unwrap();
        for args in [
            &["pin", "ls"][..],
            &["repo", "gc"],
            &["pin", "add", HELLO],
            &["repo", "verify"],
        ] {
            // `run` fails the test on a panic.
            let r = env.run(args);
            assert!(
                r.status == 0 || r.status == 1,
                "btfs {args:?} with bytes {off}.. flipped: status {}\n{}",
                r.status,
                r.stderr
            );
            if r.stderr.contains("is damaged") {
                assert!(
                    r.stderr.contains(db.to_str().unwrap()) && r.stderr.contains("backup"),
                    "the error should name {} and say what to do:\n{}",
                    db.display(),
                    r.stderr
                );
                // Said once, not on both outputs.
                let said = format!("{}{}", r.stdout, r.stderr)
                    .matches(db.to_str().unwrap())
                    .count();
                assert_eq!(said, 1, "btfs {args:?}:\n{}\n{}", r.stdout, r.stderr);
                named += 1;
            }
        }
    }
    assert!(named > 0, "no flipped byte was reported as damage");
    std::fs::write(&db, &sound).unwrap();
    let r = env.ok(&["pin", "ls"]);
    assert!(r.stdout.contains(HELLO), "{}", r.stdout);

    std::fs::write(env.repo().join("config"), b"{\"Addresses\": [\x01").unwrap();
    let r = env.fails(&["pin", "ls"], "config");
    assert!(
        r.stderr
            .contains(env.repo().join("config").to_str().unwrap()),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors() {
    let env = Env::new();
    let t = tree(env.tmp.path());
    // A folder without -r.
    env.fails(&["add", t.to_str().unwrap()], "is a directory; use -r");
    env.fails(&["add", env.path("nope").to_str().unwrap()], "nope");

    // -n stores nothing and creates no repo.
    let fresh = env.path("never");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
    cmd.env("BTFS_PATH", &fresh)
        .args(["add", "-n", "-Q", "-r", t.to_str().unwrap()]);
    let r = run_with_timeout(&mut cmd, Duration::from_secs(120)).ok();
    let root = one_line(&r.stdout);
    assert!(!fresh.exists(), "btfs add -n created {}", fresh.display());
    assert!(!r.stderr.contains("initialized"), "{}", r.stderr);
    // …and gives the CID a real add gives.
    assert_eq!(env.add_q(&["-r", t.to_str().unwrap()]), root);
}

#[test]
fn bad_cids_are_clear_errors() {
    let env = Env::new();
    let long = "Q".repeat(5000);
    for bad in [
        "notacid",
        "Qm123",
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXE0",
        "",
        "/btfs/",
        long.as_str(),
        "bafyINVALID",
    ] {
        for cmd in ["cat", "ls"] {
            env.fails(&[cmd, bad], "CID");
        }
        env.fails(&["get", bad, "-o", env.path("o").to_str().unwrap()], "CID");
        env.fails(&["pin", "rm", bad], "CID");
        env.fails(&["pin", "add", bad], "CID");
    }
    assert!(!env.path("o").exists());
    // Valid but not here.
    for cmd in ["cat", "ls"] {
        env.fails(
            &[cmd, ABSENT],
            &format!("{ABSENT} is not in the local store"),
        );
    }
    env.fails(
        &["cat", &format!("/btfs/{ABSENT}/a/b")],
        &format!("{ABSENT} is not in the local store"),
    );
    env.fails(&["pin", "rm", ABSENT], "is not pinned");
}

/// A child process killed (by PID) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) for `child` to end; its exit status.
fn wait_bounded(child: &mut Child, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not end within {timeout:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gc_is_refused_while_an_add_holds_the_repo() {
    let env = Env::new();
    let keep = env.path("keep.bin");
    write(&keep, &data(CHUNK + 1, 51));
    let keep_cid = env.add_q(&[keep.to_str().unwrap()]);

    // `btfs add` of standard input holds the shared lock while it reads.
    let out = tempfile::NamedTempFile::new_in(env.tmp.path()).unwrap();
    let child = env
        .cmd(&["add", "-Q"])
        .stdin(Stdio::piped())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder = Guard(child);
    let pid = holder.0.id();
    let owner = env.repo().join("owners").join(pid.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owner.exists() {
        assert!(
            holder.0.try_wait().unwrap().is_none(),
            "btfs add exited early"
        );
        assert!(Instant::now() < deadline, "btfs add did not take the repo");
        std::thread::sleep(Duration::from_millis(10));
    }
    let piped = data(2 * CHUNK + 77, 52);
    let mut stdin = holder.0.stdin.take().unwrap();
    stdin.write_all(&piped[..CHUNK + 5]).unwrap();
    stdin.flush().unwrap();

    let r = env.fails(&["repo", "gc"], "in use by");
    assert!(
        r.stderr.contains(&format!("pid {pid}")),
        "gc should name the holder, pid {pid}:\n{}",
        r.stderr
    );
    // Readers and other writers share the lock.
    assert!(env.cat(&[&keep_cid]) == std::fs::read(&keep).unwrap());
    env.ok(&["repo", "verify"]);

    stdin.write_all(&piped[CHUNK + 5..]).unwrap();
    drop(stdin);
    let status = wait_bounded(&mut holder.0, Duration::from_secs(60));
    assert_eq!(status, 0, "btfs add of standard input failed");
    let piped_cid = one_line(&std::fs::read_to_string(out.path()).unwrap());
    assert!(!owner.exists(), "the holder left {}", owner.display());

    let r = env.ok(&["repo", "gc"]);
    assert!(r.stdout.starts_with("removed 0 blocks"), "{}", r.stdout);
    assert!(env.cat(&[&piped_cid]) == piped);
    let f = env.path("piped.bin");
    write(&f, &piped);
    assert_eq!(env.add_q(&["-n", f.to_str().unwrap()]), piped_cid);
}

#[test]
fn kill_9_during_add_leaves_a_sound_repo() {
    let env = Env::new();
    let big = env.path("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for i in 0..300u64 {
            f.write_all(&data(1 << 20, 1000 + i)).unwrap();
        }
        f.flush().unwrap();
    }
    let b = big.to_str().unwrap();
    let want = env.add_q(&["-n", b]);
    env.ok(&["init"]);

    let child = env
        .cmd(&["add", "-Q", b])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut adder = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.block_files().len() < 4 {
        assert!(
            adder.0.try_wait().unwrap().is_none(),
            "btfs add of 300 MiB ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "btfs add wrote no blocks");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL by PID.
    adder.0.kill().unwrap();
    let _ = adder.0.wait();
    let partial = env.block_files().len();
    assert!(partial < 1200, "the add had finished ({partial} blocks)");

    let r = env.run(&["repo", "verify"]);
    assert_eq!(
        r.status, 0,
        "verify after kill -9:\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains("all good"), "{}", r.stdout);
    assert!(
        !env.pins().contains_key(&want),
        "a killed add pinned its root"
    );

    assert_eq!(env.add_q(&[b]), want, "re-running the add");
    assert_eq!(env.pins()[&want], "recursive");
    let r = env.ok(&["repo", "verify"]);
    assert!(r.stdout.contains("all good"), "{}", r.stdout);
    env.ok(&["repo", "gc"]);
    let got = env.raw(&["cat", &want, "--offset", "123456789", "--length", "1000"]);
    assert_eq!(got.status, 0, "{}", got.stderr);
    let all = std::fs::read(&big).unwrap();
    assert!(got.stdout == all[123_456_789..123_457_789]);
}

#[test]
fn pin_rm_of_a_path_inside_a_pin_keeps_the_root_pinned() {
    let env = Env::new();
    let t = tree(env.tmp.path());
    let names = added(&env.ok(&["add", "-r", t.to_str().unwrap()]).stdout);
    let root = &names["tree"];
    // `sub` is not pinned itself: unpinning ROOT/sub must not drop ROOT's pin.
    let r = env.run(&["pin", "rm", &format!("{root}/sub")]);
    assert!(
        env.pins().contains_key(root),
        "`btfs pin rm {root}/sub` removed the pin of {root} (status {}, stdout {:?})",
        r.status,
        r.stdout
    );
    assert_eq!(r.status, 1, "unpinning a CID that is not pinned fails");
}

#[test]
fn symlinks_are_stored_not_followed() {
    let env = Env::new();
    let d = env.path("links");
    write(&d.join("file.txt"), b"file\n");
    std::os::unix::fs::symlink("/etc/passwd", d.join("abs")).unwrap();
    std::os::unix::fs::symlink("file.txt", d.join("rel")).unwrap();
    let names = added(&env.ok(&["add", "-r", d.to_str().unwrap()]).stdout);
    let root = &names["links"];
    env.fails(&["cat", &format!("{root}/abs")], "not a file");
    let ls = env.ok(&["ls", root]).stdout;
    assert!(
        ls.contains(&format!("{} 0 abs\n", names["links/abs"])),
        "{ls}"
    );
    let out = env.path("out");
    env.ok(&["get", root, "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_link(out.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(out.join("rel")).unwrap(),
        Path::new("file.txt")
    );
    assert_eq!(std::fs::read(out.join("file.txt")).unwrap(), b"file\n");
}

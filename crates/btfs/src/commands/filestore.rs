//! `btfs filestore ls|verify|dups`: the filestore's references ([`store::filestore`]) as
//! kubo lists them: the same text lines (`<cid> <size> <path> <offset>`, with the status
//! first for `verify`), the same JSON objects (`ListRes`: `Status`, `ErrorMsg`,
//! `Key {"/": cid}`, `FilePath`, `Offset`, `Size`; `dups` gives `{"Ref", "Err"}`), one
//! per line, streamed as they are made.
//!
//! Policy: these commands only read (the repo lock is taken shared). `verify` reads and
//! hashes every referenced range on all cores, in batches printed in order, and exits 1
//! when any block is not ok, so a script can rely on its status. Leaves are keyed by
//! digest; a reference's format picks the CID shown (CIDv1 `raw` for raw leaves, CIDv0
//! for UnixFS leaves).

use super::store::open_repo;
use crate::cli::{FilestoreArgs, FilestoreCommand};
use crate::output::{clean, Encoding};
use anyhow::bail;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use store::cid::{DAG_PB, RAW};
use store::filestore::{FileRef, FilestoreError, LeafFormat};
use store::refs::RefEntry;
use store::{Cid, LockMode, Repo};

/// References checked at once by `verify` (then printed, in order).
const VERIFY_BATCH: usize = 256;
/// Most threads `verify` reads with.
const MAX_VERIFY_THREADS: usize = 8;

/// kubo's statuses of a reference (boxo's `filestore.Status`), with their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok = 0,
    FileError = 10,
    NoFile = 11,
    Changed = 12,
    OtherError = 20,
    Missing = 30,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::FileError => "error",
            Status::NoFile => "no-file",
            Status::Changed => "changed",
            Status::OtherError => "ERROR",
            Status::Missing => "missing",
        }
    }
}

/// One line of `ls` or `verify` (kubo's `ListRes`).
#[derive(Debug)]
struct Entry {
    status: Status,
    error: String,
    /// `None`: an argument that is not a CID.
    cid: Option<Cid>,
    path: String,
    offset: u64,
    size: u64,
}

impl Entry {
    /// kubo's `FormatLong`.
    fn long(&self) -> String {
        match &self.cid {
            None => "<corrupt key>".into(),
            Some(c) if self.path.is_empty() => c.to_string(),
            Some(c) => format!(
                "{:<50} {:>6} {} {}",
                c.to_string(),
                self.size,
                clean(&self.path),
                self.offset
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "Status": self.status as i32,
            "ErrorMsg": self.error,
            "Key": self.cid.map(|c| serde_json::json!({"/": c.to_string()})),
            "FilePath": self.path,
            "Offset": self.offset,
            "Size": self.size,
        })
    }
}

/// An entry with the reference `verify` reads for it.
type Item = (Entry, Option<FileRef>);

/// The CID a reference's block is shown by: its format says which.
fn cid_of(digest: [u8; 32], r: Option<&FileRef>) -> Cid {
    match r.map(|r| r.format) {
        Some(LeafFormat::UnixFsFile) => Cid::from_digest(0, DAG_PB, digest),
        _ => Cid::from_digest(1, RAW, digest),
    }
}

/// The entry of a reference, not read yet (status ok, or ERROR when damaged).
fn listed(digest: [u8; 32], r: Option<&FileRef>) -> Entry {
    let cid = cid_of(digest, r);
    match r {
        Some(r) => Entry {
            status: Status::Ok,
            error: String::new(),
            cid: Some(cid),
            path: r.path.display().to_string(),
            offset: r.offset,
            size: r.size,
        },
        None => Entry {
            status: Status::OtherError,
            error: format!("{cid}: a filestore entry that cannot be read (damaged database)"),
            cid: Some(cid),
            path: String::new(),
            offset: 0,
            size: 0,
        },
    }
}

/// Reads and hash-checks a listed entry.
fn verified(mut e: Entry, r: Option<&FileRef>, buf: &mut Vec<u8>) -> Entry {
    let (Some(r), Some(cid)) = (r, e.cid) else {
        return e;
    };
    if let Err(err) = r.read_block(&cid, buf) {
        e.status = match err {
            FilestoreError::NoFile { .. } => Status::NoFile,
            FilestoreError::Changed { .. } => Status::Changed,
            FilestoreError::Io { .. } => Status::FileError,
        };
        e.error = err.to_string();
    }
    e
}

/// What to list: every reference (in key order, or by file with `file_order`), or the
/// CIDs given. Each item is the entry and the reference to read for `verify`.
fn entries(repo: &Repo, args: &FilestoreArgs) -> anyhow::Result<Vec<Item>> {
    if args.cids.is_empty() {
        let mut all: Vec<RefEntry> = repo.file_refs()?;
        if args.file_order {
            all.sort_by(|a, b| {
                let key = |e: &RefEntry| e.file.as_ref().map(|r| (r.path.clone(), r.offset));
                key(a).cmp(&key(b)).then(a.digest.cmp(&b.digest))
            });
        }
        return Ok(all
            .into_iter()
            .map(|e| (listed(e.digest, e.file.as_ref()), e.file))
            .collect());
    }
    let parsed: Vec<Result<Cid, String>> = args
        .cids
        .iter()
        .map(|a| a.parse::<Cid>().map_err(|e| format!("{a}: {e}")))
        .collect();
    let digests: Vec<[u8; 32]> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|c| *c.digest()))
        .collect();
    let mut found = repo.file_refs_of(&digests)?.into_iter();
    let mut out = Vec::with_capacity(parsed.len());
    for p in parsed {
        let missing = |status, cid, error| Entry {
            status,
            error,
            cid,
            path: String::new(),
            offset: 0,
            size: 0,
        };
        match p {
            Err(error) => out.push((missing(Status::OtherError, None, error), None)),
            Ok(cid) => match found.next().filter(|refs| !refs.is_empty()) {
                // A block held by several files: one line each, as listed.
                Some(refs) => out.extend(
                    refs.into_iter()
                        .map(|e| (listed(e.digest, e.file.as_ref()), e.file)),
                ),
                None => out.push((
                    missing(
                        Status::Missing,
                        Some(cid),
                        format!("{cid}: not in the filestore"),
                    ),
                    None,
                )),
            },
        }
    }
    Ok(out)
}

pub fn run(cmd: FilestoreCommand, enc: Encoding) -> anyhow::Result<()> {
    let repo = open_repo(LockMode::Shared)?;
    let r = match cmd {
        FilestoreCommand::Ls(args) => ls(&repo, &args, enc),
        FilestoreCommand::Verify(args) => verify(&repo, &args, enc),
        FilestoreCommand::Dups => dups(&repo, enc),
    };
    match r {
        // A closed pipe (`btfs filestore ls | head`) is not an error worth reporting.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn ls(repo: &Repo, args: &FilestoreArgs, enc: Encoding) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut errors = 0usize;
    for (e, _) in entries(repo, args)? {
        if enc == Encoding::Json {
            writeln!(out, "{}", e.json())?;
        } else if !e.error.is_empty() {
            out.flush()?;
            eprintln!("{}", clean(&e.error));
        } else {
            writeln!(out, "{}", e.long())?;
        }
        errors += usize::from(!e.error.is_empty());
    }
    out.flush()?;
    if errors > 0 {
        bail!("{errors} of the entries could not be listed");
    }
    Ok(())
}

fn verify(repo: &Repo, args: &FilestoreArgs, enc: Encoding) -> anyhow::Result<()> {
    let list = entries(repo, args)?;
    let total = list.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_VERIFY_THREADS);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = 0usize;
    let mut rest = list.into_iter();
    loop {
        let batch: Vec<Item> = rest.by_ref().take(VERIFY_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        for e in check_batch(batch, threads) {
            if e.status != Status::Ok {
                bad += 1;
            }
            if enc == Encoding::Json {
                writeln!(out, "{}", e.json())?;
                continue;
            }
            if e.status == Status::OtherError {
                out.flush()?;
                eprintln!("{}", clean(&e.error));
            }
            writeln!(out, "{:<7} {}", e.status.name(), e.long())?;
        }
        out.flush()?;
    }
    if bad > 0 {
        bail!(
            "{bad} of {total} filestore references are not ok (a changed download: download \
             the torrent again, which repairs it; an added file: `btfs add --nocopy` it \
             again, then `btfs pin rm` the old CID and `btfs repo gc`)"
        );
    }
    Ok(())
}

/// Reads and checks a batch on `threads` threads; the entries in their order.
fn check_batch(batch: Vec<Item>, threads: usize) -> Vec<Entry> {
    let n = batch.len();
    let slots: Vec<std::sync::Mutex<Option<Item>>> = batch
        .into_iter()
        .map(|b| std::sync::Mutex::new(Some(b)))
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(i) else { break };
                    let mut slot = slot.lock().expect("verify slot");
                    if let Some((e, r)) = slot.take() {
                        let checked = verified(e, r.as_ref(), &mut buf);
                        *slot = Some((checked, None));
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|s| s.into_inner().expect("verify slot").map(|(e, _)| e))
        .collect()
}

fn dups(repo: &Repo, enc: Encoding) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut seen = std::collections::HashSet::new();
    for e in repo.file_refs()? {
        if !seen.insert(e.digest) {
            continue;
        }
        let cid = cid_of(e.digest, e.file.as_ref());
        if !repo.blocks.has_file(&cid) {
            continue;
        }
        match enc {
            Encoding::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"Ref": cid.to_string(), "Err": ""})
            )?,
            Encoding::Text => writeln!(out, "{cid}")?,
        }
    }
    out.flush()?;
    Ok(())
}

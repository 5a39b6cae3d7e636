//! The filestore's table in the repo database: which files hold which leaf blocks
//! ([`FileRef`]), and the repo operations on it — committing an import, listing,
//! dropping, collecting garbage and verifying.
//!
//! Keys are the block's sha2-256 digest followed by 8 bytes of the hash of the file's
//! path, so one block may be held by several files (the same chunk in two downloads) and
//! dropping the references into one file never takes another file's away.
//!
//! Readers in other processes cache what they looked up (see [`crate::filestore`]); every
//! change here is followed by a new generation file ([`GENERATION_FILE`], replaced by a
//! rename), which is how those caches learn that they are stale. Lookups open the
//! database read-only, so reading the store never writes to it.
//!
//! Policy for deleting files: `gc` deletes only the repo's own download folders
//! (`bittorrent/downloads/<40 hex digits>`, a real folder, not a link) that nothing pinned
//! reads from; nothing else a reference names is ever deleted here.

use crate::blockstore::Blockstore;
use crate::cid::Cid;
use crate::filestore::{FileRef, Filestore, RefLookup};
use crate::repo::{
    contain, damaged_at, db_err, io_err, pin_in, with_db_at, GcReport, PinKind, Repo, RepoError,
    TorrentRecord, VerifyReport, DB_FILE, DOWNLOADS_DIR, TORRENTS,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Block digest (32 bytes) ++ path id (8 bytes) → [`FileRef`] (its own encoding).
const FILESTORE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("filestore");
/// Replaced after every change of the references, so other processes drop their caches.
pub const GENERATION_FILE: &str = "filestore.generation";
/// Longest wait for a writer to let go of the database, for a lookup.
const MAX_LOOKUP_WAIT: Duration = Duration::from_secs(30);

/// One reference with its key.
#[derive(Debug, Clone)]
pub struct RefEntry {
    key: Vec<u8>,
    pub digest: [u8; 32],
    /// `None`: an entry that cannot be read (damage).
    pub file: Option<FileRef>,
}

fn key_of(digest: &[u8; 32], path: &Path) -> Vec<u8> {
    let id = sha2::Sha256::digest(path.as_os_str().as_bytes());
    let mut key = Vec::with_capacity(40);
    key.extend_from_slice(digest);
    key.extend_from_slice(&id[..8]);
    key
}

/// The key range of every reference of `digest`.
fn range_of(digest: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = digest.to_vec();
    lo.extend_from_slice(&[0; 8]);
    let mut hi = digest.to_vec();
    hi.extend_from_slice(&[0xff; 8]);
    (lo, hi)
}

/// Every reference of `digest` in the table.
fn entries_of(
    t: &redb::ReadOnlyTable<&[u8], &[u8]>,
    digest: &[u8; 32],
) -> Result<Vec<RefEntry>, RepoError> {
    let (lo, hi) = range_of(digest);
    let mut out = Vec::new();
    for item in t.range(lo.as_slice()..=hi.as_slice()).map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        out.push(RefEntry {
            key: k.value().to_vec(),
            digest: *digest,
            file: FileRef::decode(v.value()),
        });
    }
    Ok(out)
}

/// The references in the repo's database, for [`Blockstore`] reads.
#[derive(Debug)]
struct DbRefs {
    db: PathBuf,
    generation: PathBuf,
}

impl DbRefs {
    /// Runs `f` on a read-only view of the database (nothing written, so reads work on
    /// a read-only repo and never race a writer's file); a database not closed cleanly
    /// is opened for writing once, which repairs it.
    fn read<T>(
        &self,
        f: impl Fn(&redb::ReadTransaction) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let deadline = Instant::now() + MAX_LOOKUP_WAIT;
        // redb panics on some damaged pages: contained, as every other use of the file.
        let r = contain(|| loop {
            match redb::ReadOnlyDatabase::open(&self.db) {
                Ok(db) => return Ok(Some(f(&db.begin_read().map_err(db_err)?)?)),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(redb::DatabaseError::RepairAborted) => return Ok(None),
                Err(e) => return Err(db_err(e)),
            }
        });
        match damaged_at(&self.db, r)? {
            Some(v) => Ok(v),
            // Not closed cleanly: opening it for writing repairs it.
            None => with_db_at(&self.db, |db| f(&db.begin_read().map_err(db_err)?)),
        }
    }
}

impl RefLookup for DbRefs {
    fn lookup(&self, digests: &[[u8; 32]]) -> io::Result<Vec<Vec<FileRef>>> {
        // Missing, or being created by another process's first use: nothing in it yet.
        if fs::metadata(&self.db).map_or(true, |m| m.len() == 0) {
            return Ok(vec![Vec::new(); digests.len()]);
        }
        let r = self.read(|tx| {
            let t = match tx.open_table(FILESTORE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(vec![Vec::new(); digests.len()])
                }
                Err(e) => return Err(db_err(e)),
            };
            digests
                .iter()
                .map(|d| {
                    Ok(entries_of(&t, d)?
                        .into_iter()
                        .filter_map(|e| e.file)
                        .collect())
                })
                .collect()
        });
        r.map_err(|e| io::Error::other(e.to_string()))
    }

    fn version(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        // The generation file's content (a nonce each change writes) and the database
        // file's identity and times: a change is seen even if a bump was lost.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        fs::read(&self.generation).unwrap_or_default().hash(&mut h);
        if let Ok(m) = fs::metadata(&self.db) {
            (
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
                .hash(&mut h);
        }
        h.finish()
    }
}

/// What [`Repo::release_files`] did.
#[derive(Debug, Default)]
pub struct Released {
    /// References dropped.
    pub dropped: u64,
    /// Leaves other pinned content needed, stored as blocks before their files go.
    pub stored: u64,
    /// Leaves other pinned content needs that could not be read to keep them (their
    /// files had changed already).
    pub lost: u64,
}

impl Repo {
    /// The blocks of the repo at `path`, with its filestore, as a handle of its own (for
    /// a server that shares it between tasks).
    pub fn blockstore_at(path: &Path) -> io::Result<Blockstore> {
        Ok(
            Blockstore::open(&path.join("blocks"))?.with_filestore(Filestore::new(Box::new(
                DbRefs {
                    db: path.join(DB_FILE),
                    generation: path.join(GENERATION_FILE),
                },
            ))),
        )
    }

    /// Tells every reader (this process's cache, and through the generation file other
    /// processes') that the references changed.
    fn bump_generation(&self) {
        let file = self.path.join(GENERATION_FILE);
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        static BUMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stamp = format!(
            "{} {} {:?}\n",
            std::process::id(),
            n,
            std::time::SystemTime::now()
        );
        if fs::write(&tmp, stamp)
            .and_then(|()| fs::rename(&tmp, &file))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
        }
        if let Some(f) = self.blocks.filestore() {
            f.invalidate();
        }
    }

    /// Records an import whose leaves stay in files: the filestore `refs`, the recursive
    /// pin of `root` (when given) and the torrent record, in one transaction, after the
    /// inner blocks are synced. The referenced files must be synced by the caller.
    pub fn commit_import(
        &self,
        refs: &[(Cid, FileRef)],
        root: Option<&Cid>,
        torrent: Option<(&[u8; 20], &TorrentRecord)>,
    ) -> Result<(), RepoError> {
        self.commit(
            refs,
            root.map(std::slice::from_ref).unwrap_or_default(),
            torrent,
        )
    }

    /// [`Repo::commit_import`] of an `add --nocopy`: the references and the recursive
    /// pins of `roots` (none: `--pin=false`, or a batch of references before the last).
    pub fn commit_refs(&self, refs: &[(Cid, FileRef)], roots: &[Cid]) -> Result<(), RepoError> {
        self.commit(refs, roots, None)
    }

    fn commit(
        &self,
        refs: &[(Cid, FileRef)],
        roots: &[Cid],
        torrent: Option<(&[u8; 20], &TorrentRecord)>,
    ) -> Result<(), RepoError> {
        self.sync()?;
        self.write(|tx| {
            {
                let mut t = tx.open_table(FILESTORE).map_err(db_err)?;
                for (cid, r) in refs {
                    let key = key_of(cid.digest(), &r.path);
                    t.insert(key.as_slice(), r.encode().as_slice())
                        .map_err(db_err)?;
                }
            }
            for root in roots {
                pin_in(tx, root, PinKind::Recursive)?;
            }
            if let Some((ih, record)) = torrent {
                let value = serde_json::to_vec(record).expect("record serialises");
                let mut t = tx.open_table(TORRENTS).map_err(db_err)?;
                t.insert(ih.as_slice(), value.as_slice()).map_err(db_err)?;
            }
            Ok(())
        })?;
        self.bump_generation();
        Ok(())
    }

    /// Every filestore reference (a block held by two files has two).
    pub fn file_refs(&self) -> Result<Vec<RefEntry>, RepoError> {
        let all = self.read(FILESTORE, |t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let Some(digest) = k
                    .value()
                    .get(..32)
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                else {
                    continue;
                };
                out.push(RefEntry {
                    key: k.value().to_vec(),
                    digest,
                    file: FileRef::decode(v.value()),
                });
            }
            Ok(out)
        })?;
        Ok(all.unwrap_or_default())
    }

    /// The references of each of these digests, in order (empty: not in the filestore).
    pub fn file_refs_of(&self, digests: &[[u8; 32]]) -> Result<Vec<Vec<RefEntry>>, RepoError> {
        let found = self.read(FILESTORE, |t| {
            digests.iter().map(|d| entries_of(t, d)).collect()
        })?;
        Ok(found.unwrap_or_else(|| vec![Vec::new(); digests.len()]))
    }

    /// Drops these references (the files are left alone); the number dropped.
    fn remove_entries(&self, entries: &[&RefEntry]) -> Result<u64, RepoError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let n = self.write(|tx| {
            let mut t = tx.open_table(FILESTORE).map_err(db_err)?;
            let mut n = 0;
            for e in entries {
                n += u64::from(t.remove(e.key.as_slice()).map_err(db_err)?.is_some());
            }
            Ok(n)
        })?;
        self.bump_generation();
        Ok(n)
    }

    /// Drops every reference of these digests (the files are left alone).
    pub fn remove_refs(&self, digests: &[[u8; 32]]) -> Result<u64, RepoError> {
        let digests: HashSet<&[u8; 32]> = digests.iter().collect();
        let all = self.file_refs()?;
        let doomed: Vec<&RefEntry> = all.iter().filter(|e| digests.contains(&e.digest)).collect();
        self.remove_entries(&doomed)
    }

    /// Unpins `root` (when given), then drops the references into `paths` (files, or
    /// folders and everything below them, about to be deleted). A leaf that pinned
    /// content still needs and that no other file and no block file holds is first
    /// stored as a block (read through its reference, so hash-checked, and synced), so
    /// that content stays whole. Call before deleting the files: a crash never leaves a
    /// pin or a reference naming a deleted file.
    pub fn release_files(
        &self,
        root: Option<&Cid>,
        paths: &[PathBuf],
    ) -> Result<Released, RepoError> {
        if let Some(root) = root {
            self.unpin(root)?;
        }
        let all = self.file_refs()?;
        let paths: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let doomed_flags: Vec<bool> = all
            .iter()
            .map(|e| {
                e.file
                    .as_ref()
                    .is_some_and(|f| f.path.ancestors().any(|a| paths.contains(a)))
            })
            .collect();
        let doomed: Vec<&RefEntry> = all
            .iter()
            .zip(&doomed_flags)
            .filter_map(|(e, &d)| d.then_some(e))
            .collect();
        if doomed.is_empty() {
            return Ok(Released::default());
        }
        // What pinned content needs; a pin that cannot be walked is an error, and
        // nothing is dropped (its leaves may be among these).
        let live = self.live_set()?;
        // Digests still held by an intact file outside `paths`.
        let elsewhere: HashSet<[u8; 32]> = all
            .iter()
            .zip(&doomed_flags)
            .filter(|(e, &d)| !d && e.file.as_ref().is_some_and(FileRef::file_unchanged))
            .map(|(e, _)| e.digest)
            .collect();
        let mut released = Released::default();
        let mut buf = Vec::new();
        let mut kept: HashSet<[u8; 32]> = HashSet::new();
        for e in &doomed {
            let cid = Blockstore::cid_of_digest(e.digest);
            if !live.contains(&e.digest)
                || elsewhere.contains(&e.digest)
                || kept.contains(&e.digest)
                || self.blocks.has_file(&cid)
            {
                continue;
            }
            // Its bytes gone already: nothing to keep, and the pin that needs it is
            // incomplete (counted, for the caller to say).
            let Some(Ok(())) = e.file.as_ref().map(|f| f.read_block(&cid, &mut buf)) else {
                released.lost += 1;
                continue;
            };
            self.blocks
                .put(&cid, &buf)
                .map_err(io_err(self.blocks.root()))?;
            kept.insert(e.digest);
            released.stored += 1;
        }
        if released.stored > 0 {
            self.sync()?;
        }
        released.dropped = self.remove_entries(&doomed)?;
        Ok(released)
    }

    /// Whether the files holding filestore leaves among `blocks` are all there with the
    /// size and modification time recorded (blocks held as block files need no file).
    pub(crate) fn files_unchanged(&self, blocks: &[Cid]) -> bool {
        // (path, mtime) → the end of the furthest leaf in it.
        let mut files: HashMap<(PathBuf, u64), u64> = HashMap::new();
        for c in blocks.iter().filter(|c| !self.blocks.has_file(c)) {
            match self.blocks.file_refs(c) {
                // A leaf any of whose files is intact is fine; record the first.
                Ok(refs) if !refs.is_empty() => {
                    let Some(r) = refs.iter().find(|r| r.file_unchanged()) else {
                        return false;
                    };
                    let end = files.entry((r.path.clone(), r.mtime_ns)).or_default();
                    *end = (*end).max(r.offset + r.size);
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        files.iter().all(|((path, mtime), end)| {
            fs::metadata(path)
                .is_ok_and(|m| m.len() >= *end && crate::filestore::mtime_ns(&m) == *mtime)
        })
    }

    /// `gc`'s part for the filestore: drops the references no pin keeps, then deletes the
    /// repo's own download folders that no kept reference reads from.
    pub(crate) fn gc_refs(
        &self,
        live: &HashSet<[u8; 32]>,
        report: &mut GcReport,
    ) -> Result<(), RepoError> {
        let all = self.file_refs()?;
        let (dead, kept): (Vec<&RefEntry>, Vec<&RefEntry>) =
            all.iter().partition(|e| !live.contains(&e.digest));
        report.refs_kept = kept.len() as u64;
        // The folders go before the references that name them: a crash in between
        // leaves references to missing files (the next gc drops them), never a folder
        // no reference names any more (which no gc would find again).
        let downloads = self.path.join(DOWNLOADS_DIR);
        if let Ok(canonical) = downloads.canonicalize() {
            let folder = |e: &&RefEntry| {
                let rest = e.file.as_ref()?.path.strip_prefix(&canonical).ok()?;
                let mut parts = rest.components();
                let name = match parts.next()? {
                    std::path::Component::Normal(n) => n.to_str()?.to_owned(),
                    _ => return None,
                };
                // A file inside the folder (not the folder itself), named by an infohash.
                parts.next()?;
                (name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
            };
            let used: HashSet<String> = kept.iter().filter_map(folder).collect();
            let unused: HashSet<String> = dead
                .iter()
                .filter_map(folder)
                .filter(|f| !used.contains(f))
                .collect();
            let mut failed = None;
            for name in unused {
                let dir = downloads.join(&name);
                // A real folder only: a link in its place is not the repo's download.
                if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                if let Err(e) = fs::remove_dir_all(&dir) {
                    failed.get_or_insert(io_err(&dir)(e));
                    continue;
                }
                report.folders_removed.push(dir.display().to_string());
                let _ = fs::remove_file(downloads.join(format!("{name}.lock")));
                let resume = self
                    .path
                    .join("bittorrent/resume")
                    .join(format!("{name}.resume"));
                let _ = fs::remove_file(resume);
            }
            if let Some(e) = failed {
                // Its references stay, so the next gc finds the folder again.
                return Err(e);
            }
        }
        report.refs_removed = self.remove_entries(&dead)?;
        Ok(())
    }

    /// `verify`'s part for the filestore: every reference read and hash-checked; a block
    /// also held as a block file or by another intact file is not a problem.
    pub(crate) fn verify_refs(
        &self,
        report: &mut VerifyReport,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RepoError> {
        let refs = match self.file_refs() {
            Ok(r) => r,
            Err(e @ RepoError::Damaged { .. }) => {
                report.database = Some(e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        let mut bad: HashMap<[u8; 32], Vec<String>> = HashMap::new();
        let mut good: HashSet<[u8; 32]> = HashSet::new();
        for e in &refs {
            report.checked += 1;
            report.refs_checked += 1;
            progress(report.checked);
            let cid = Blockstore::cid_of_digest(e.digest);
            match &e.file {
                Some(r) => match r.read_block(&cid, &mut buf) {
                    Ok(()) => {
                        good.insert(e.digest);
                    }
                    Err(err) => bad.entry(e.digest).or_default().push(err.to_string()),
                },
                None => bad
                    .entry(e.digest)
                    .or_default()
                    .push(format!("{cid}: a filestore entry that cannot be read")),
            }
        }
        for (digest, problems) in bad {
            if good.contains(&digest) || self.blocks.has_file(&Blockstore::cid_of_digest(digest)) {
                continue;
            }
            report.corrupt.extend(problems);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_one_reference_per_file() {
        let d = [7u8; 32];
        let a = key_of(&d, Path::new("/a"));
        let b = key_of(&d, Path::new("/b"));
        assert_ne!(a, b);
        let (lo, hi) = range_of(&d);
        for k in [&a, &b] {
            assert!(lo.as_slice() <= k.as_slice() && k.as_slice() <= hi.as_slice());
        }
        let other = key_of(&[8u8; 32], Path::new("/a"));
        assert!(other.as_slice() > hi.as_slice());
    }
}

//! Blocks as files, laid out like kubo's flatfs (`/repo/flatfs/shard/v1/next-to-last/2`):
//! `blocks/<2 chars>/<base32 multihash>.data`.
//!
//! Writing ([`Blockstore::put`]): a block is written to a temporary file in its own shard
//! folder, then renamed to its name in that same folder, so a block file under its name
//! always holds the whole block. Shard folders are made on first use (a failed create tells
//! that one is missing; there are at most 32 × 32). Nothing is synced per block:
//! [`Blockstore::sync`] makes everything written so far durable before the caller records
//! pins or indexes that point at it. A block already here with the right length is not
//! written again.
//!
//! Temporary files are named `.tmp-<pid>-<n>` and created exclusively (`O_EXCL`): writers in
//! several processes share a repo, `n` counts per process (every `Blockstore` in it shares
//! the counter), and a name taken by a leftover of a dead process that had the same pid is
//! skipped. Names starting with `.` are never blocks: [`Blockstore::files`] skips them, as
//! kubo's flatfs does; [`Blockstore::clean_temp`] removes the temporary files a crashed
//! writer left, and the `.temp/` folder of earlier versions.
//!
//! Why in the shard folder (measured with `examples/put_bench.rs`: 1 GiB in 256 KiB blocks,
//! 2 cores, ext4): with one shared temp folder and renames across folders, the writers wait
//! on that folder's lock and the file system's rename lock while the kernel creates a file.
//! That costs most when creating is slow — on ext4 without a journal, for some minutes after
//! many files were deleted, each new inode's allocation scans past the recently deleted
//! ones: there an import took 4.3–4.5 s with one temp folder and 3.5 s with this (hashing
//! alone: 0.55 s). Otherwise all ways cost about the same (0.8–1.0 s). `O_TMPFILE` + `linkat`
//! was no faster than a named temporary file, nor were more writer threads.
//!
//! Leaves kept in the filestore ([`crate::filestore`]) are read through the same calls:
//! a block not found as a file is looked up there (and its bytes hash-checked), so every
//! reader — DAG walks, the gateway, seeding from the store — sees one store.
//!
//! Locking: none of its own. Writers (threads and processes) hold the repo's shared lock;
//! [`Blockstore::clean_temp`] needs the exclusive one, so no writer is alive.

use crate::cid::{Cid, DAG_PB};
use crate::filestore::{FileRef, Filestore};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDING: &str = "/repo/flatfs/shard/v1/next-to-last/2\n";
/// Larger files under `blocks/` are not blocks we wrote; refuse to read them whole.
pub const MAX_BLOCK: u64 = 4 << 20;
/// Start of a temporary block file's name in a shard folder.
const TEMP_PREFIX: &str = ".tmp-";
/// The temporary folder of earlier versions (one for all shards).
const LEGACY_TEMP_DIR: &str = ".temp";
/// Names tried for one temporary file; a name is taken only by a leftover of a dead
/// process whose pid this one now has.
const MAX_TEMP_TRIES: u32 = 64;
/// Numbers this process's temporary files, for every `Blockstore` in it.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct Blockstore {
    root: PathBuf,
    filestore: Option<Filestore>,
}

/// A block file found under `blocks/`.
#[derive(Debug)]
pub struct BlockFile {
    /// The sha2-256 digest its name says; `None` when the name is not a block key.
    pub digest: Option<[u8; 32]>,
    pub path: PathBuf,
}

impl Blockstore {
    pub fn open(root: &Path) -> io::Result<Blockstore> {
        fs::create_dir_all(root)?;
        let sharding = root.join("SHARDING");
        match fs::read_to_string(&sharding) {
            Ok(s) if s == SHARDING => {}
            Ok(s) => {
                return Err(io::Error::other(format!(
                    "{}: unsupported block layout {:?}",
                    sharding.display(),
                    s.trim()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::write(&sharding, SHARDING)?,
            Err(e) => return Err(e),
        }
        Ok(Blockstore {
            root: root.to_path_buf(),
            filestore: None,
        })
    }

    /// Reads leaves missing from `blocks/` from `filestore` too.
    pub fn with_filestore(mut self, filestore: Filestore) -> Blockstore {
        self.filestore = Some(filestore);
        self
    }

    pub fn filestore(&self) -> Option<&Filestore> {
        self.filestore.as_ref()
    }

    /// The filestore's references for `cid` (none without a filestore).
    pub fn file_refs(&self, cid: &Cid) -> io::Result<Vec<FileRef>> {
        match &self.filestore {
            Some(f) => f.get(cid),
            None => Ok(Vec::new()),
        }
    }

    /// Looks up the filestore references of `cids` at once (the children of a node about
    /// to be read), so that reading them costs no lookup each.
    pub fn prefetch(&self, cids: &[Cid]) -> io::Result<()> {
        match &self.filestore {
            Some(f) => {
                let missing: Vec<[u8; 32]> = cids
                    .iter()
                    .filter(|c| !self.has_file(c))
                    .map(|c| *c.digest())
                    .collect();
                f.prefetch(&missing)
            }
            None => Ok(()),
        }
    }

    /// Whether the block is here as a file of `blocks/` (not counting the filestore).
    pub fn has_file(&self, cid: &Cid) -> bool {
        self.path_of(cid).is_file()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// kubo's flatfs key: the multihash in upper-case base32 without padding.
    pub fn key(cid: &Cid) -> String {
        data_encoding::BASE32_NOPAD.encode(&cid.multihash())
    }

    pub fn path_of(&self, cid: &Cid) -> PathBuf {
        let key = Self::key(cid);
        let shard = &key[key.len() - 3..key.len() - 1];
        self.root.join(shard).join(format!("{key}.data"))
    }

    /// Whether the block is here, as a file or in the filestore (its file not read).
    pub fn has(&self, cid: &Cid) -> bool {
        self.has_file(cid) || self.file_refs(cid).is_ok_and(|r| !r.is_empty())
    }

    /// The length of the block; `None` when it is not here.
    pub fn len_of(&self, cid: &Cid) -> io::Result<Option<u64>> {
        match fs::metadata(self.path_of(cid)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(self.file_refs(cid)?.first().map(FileRef::block_len))
            }
            Err(e) => Err(e),
        }
    }

    /// The block's bytes; `Ok(None)` when it is not here.
    pub fn get(&self, cid: &Cid) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.get_into(cid, &mut buf)?.then_some(buf))
    }

    /// Reads a block into `buf` (replacing its content, keeping its allocation);
    /// `false` when it is not here.
    pub fn get_into(&self, cid: &Cid, buf: &mut Vec<u8>) -> io::Result<bool> {
        let path = self.path_of(cid);
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let refs = self.file_refs(cid)?;
                if refs.is_empty() {
                    return Ok(false);
                }
                return crate::filestore::read_any(&refs, cid, buf)
                    .map(|()| true)
                    .map_err(Into::into);
            }
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len > MAX_BLOCK {
            return Err(io::Error::other(format!(
                "{}: {len} bytes is too large for a block",
                path.display()
            )));
        }
        buf.resize(len as usize, 0);
        io::Read::read_exact(&mut f, buf)?;
        Ok(true)
    }

    /// Stores a block (its CID must be its hash); `false` when it was already here.
    pub fn put(&self, cid: &Cid, block: &[u8]) -> io::Result<bool> {
        let path = self.path_of(cid);
        // A block already here is kept, unless its length is wrong (a file cut short by
        // a power failure before it was synced): then it is written again.
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == block.len() as u64) {
            return Ok(false);
        }
        let dir = path.parent().expect("sharded path");
        let (tmp, mut f) = create_temp(dir)?;
        let stored = f.write_all(block).and_then(|()| {
            drop(f);
            fs::rename(&tmp, &path)
        });
        if let Err(e) = stored {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }

    pub fn delete_file(&self, path: &Path) -> io::Result<()> {
        remove_if_there(path)
    }

    /// Flushes every write of this file system to disk.
    pub fn sync(&self) -> io::Result<()> {
        let dir = fs::File::open(&self.root)?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        dir.sync_all()?;
        Ok(())
    }

    /// Removes temporary files left by writers that are gone (and the `.temp/` folder of
    /// earlier versions); returns how many. Call with the repo's exclusive lock held.
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut n = 0;
        let legacy = self.root.join(LEGACY_TEMP_DIR);
        match fs::read_dir(&legacy) {
            Ok(rd) => {
                n += rd.count();
                // Whatever it holds (only temporary files were ever written there).
                match fs::remove_dir_all(&legacy) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for shard in self.shard_dirs()? {
            for e in fs::read_dir(shard)? {
                let e = e?;
                if e.file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    remove_if_there(&e.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Every file under the shard folders, except hidden ones (temporary files).
    pub fn files(&self) -> io::Result<Vec<BlockFile>> {
        let mut out = Vec::new();
        for shard in self.shard_dirs()? {
            for e in fs::read_dir(shard)? {
                let e = e?;
                let name = e.file_name();
                if is_hidden(&name) {
                    continue;
                }
                let path = e.path();
                let digest = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".data"))
                    .and_then(|k| data_encoding::BASE32_NOPAD.decode(k.as_bytes()).ok())
                    .and_then(|mh| Cid::from_bytes(&mh).ok())
                    .filter(|c| self.path_of(c) == path)
                    .map(|c| *c.digest());
                out.push(BlockFile { digest, path });
            }
        }
        Ok(out)
    }

    /// The folders under the root that hold blocks (every one not hidden).
    fn shard_dirs(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root)? {
            let e = e?;
            if e.file_type()?.is_dir() && !is_hidden(&e.file_name()) {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// A CID naming the block behind `digest` (blocks are keyed by multihash only).
    pub fn cid_of_digest(digest: [u8; 32]) -> Cid {
        Cid::from_digest(0, DAG_PB, digest)
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A new temporary file in the shard folder `dir` (made if missing), and its path.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, fs::File)> {
    let mut made_dir = false;
    for _ in 0..MAX_TEMP_TRIES {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_dir => {
                fs::create_dir_all(dir)?;
                made_dir = true;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{}: no free temporary file name in {MAX_TEMP_TRIES} tries",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_flatfs() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blockstore::open(dir.path()).unwrap();
        let cid: Cid = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
            .parse()
            .unwrap();
        let key = Blockstore::key(&cid);
        assert!(key.starts_with("CIQ"), "{key}");
        assert!(bs.put(&cid, b"x").unwrap());
        assert!(!bs.put(&cid, b"x").unwrap());
        assert_eq!(bs.get(&cid).unwrap().unwrap(), b"x");
        let files = bs.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].digest, Some(*cid.digest()));
        assert!(bs.get(&cid.to_v1()).unwrap().is_some());
        bs.sync().unwrap();
    }

    fn hello() -> Cid {
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
            .parse()
            .unwrap()
    }

    /// Every name in the shard folder of `cid`.
    fn shard_names(bs: &Blockstore, cid: &Cid) -> Vec<String> {
        let dir = bs.path_of(cid).parent().unwrap().to_path_buf();
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn put_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blockstore::open(dir.path()).unwrap();
        let cid = hello();
        assert!(bs.put(&cid, b"hello\n").unwrap());
        let key = Blockstore::key(&cid);
        assert_eq!(shard_names(&bs, &cid), [format!("{key}.data")]);
        assert!(!dir.path().join(LEGACY_TEMP_DIR).exists());
        assert_eq!(bs.clean_temp().unwrap(), 0);
    }

    #[test]
    fn leftover_temporary_files_are_not_blocks_and_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blockstore::open(dir.path()).unwrap();
        let cid = hello();
        bs.put(&cid, b"hello\n").unwrap();
        let shard = bs.path_of(&cid).parent().unwrap().to_path_buf();
        // A crashed writer's file in a shard folder, one in a shard folder of its own,
        // and ones in the temp folder of earlier versions.
        fs::write(shard.join(".tmp-1-7"), b"half a bl").unwrap();
        fs::create_dir(dir.path().join("ZZ")).unwrap();
        fs::write(dir.path().join("ZZ/.tmp-2-0"), b"").unwrap();
        fs::create_dir(dir.path().join(LEGACY_TEMP_DIR)).unwrap();
        fs::write(dir.path().join(LEGACY_TEMP_DIR).join("9-1"), b"x").unwrap();
        let files = bs.files().unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].digest, Some(*cid.digest()));
        assert_eq!(bs.clean_temp().unwrap(), 3);
        assert_eq!(shard_names(&bs, &cid).len(), 1);
        assert_eq!(fs::read_dir(dir.path().join("ZZ")).unwrap().count(), 0);
        assert!(!dir.path().join(LEGACY_TEMP_DIR).exists());
        assert_eq!(bs.get(&cid).unwrap().unwrap(), b"hello\n");
    }

    #[test]
    fn taken_temporary_names_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blockstore::open(dir.path()).unwrap();
        let cid = hello();
        let shard = bs.path_of(&cid).parent().unwrap().to_path_buf();
        fs::create_dir_all(&shard).unwrap();
        // Leftovers of a dead process that had this pid, under the next names.
        let next = TEMP_SEQ.load(Ordering::Relaxed);
        let pid = std::process::id();
        let taken: Vec<PathBuf> = (next..next + 8)
            .map(|n| shard.join(format!("{TEMP_PREFIX}{pid}-{n}")))
            .collect();
        for t in &taken {
            fs::write(t, b"old").unwrap();
        }
        assert!(bs.put(&cid, b"hello\n").unwrap());
        assert_eq!(bs.get(&cid).unwrap().unwrap(), b"hello\n");
        for t in &taken {
            assert_eq!(fs::read(t).unwrap(), b"old");
        }
        assert_eq!(bs.files().unwrap().len(), 1);
    }

    #[test]
    fn a_block_cut_short_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blockstore::open(dir.path()).unwrap();
        let cid = hello();
        let path = bs.path_of(&cid);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"hel").unwrap();
        assert!(bs.put(&cid, b"hello\n").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");
        assert!(!bs.put(&cid, b"hello\n").unwrap());
    }

    #[test]
    fn concurrent_writers_share_a_store() {
        let dir = tempfile::tempdir().unwrap();
        // Two handles on one folder, as two commands holding the shared lock have.
        let stores = [
            Blockstore::open(dir.path()).unwrap(),
            Blockstore::open(dir.path()).unwrap(),
        ];
        let blocks: Vec<(Cid, Vec<u8>)> = (0..64u32)
            .map(|i| {
                let b = i.to_le_bytes().repeat(100);
                (Cid::hash(0, DAG_PB, &b), b)
            })
            .collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (bs, blocks) = (&stores[t % 2], &blocks);
                s.spawn(move || {
                    for (cid, b) in blocks {
                        bs.put(cid, b).unwrap();
                    }
                });
            }
        });
        let files = stores[0].files().unwrap();
        assert_eq!(files.len(), blocks.len());
        for (cid, b) in &blocks {
            assert_eq!(&stores[1].get(cid).unwrap().unwrap(), b);
        }
        assert_eq!(stores[0].clean_temp().unwrap(), 0);
    }
}

//! The filestore: leaf blocks kept as references into files outside `blocks/` — a
//! download's own files, or files added with `btfs add --nocopy` — as kubo's filestore
//! keeps them. A reference ([`FileRef`]) names a file, a byte range of it and how the
//! leaf block is made from those bytes (a raw block, or a UnixFS file leaf around them,
//! so that downloads keep `btfs add`'s CIDv0 leaves). The references live in the repo's
//! database (see [`crate::repo`]), keyed by the block's sha2-256 digest as flatfs keys
//! blocks by multihash.
//!
//! Policy: the bytes are hashed on every read, so a file changed, cut short or swapped
//! after it was recorded gives an error naming the file ([`FilestoreError`]), never wrong
//! bytes. Nothing here ever writes, moves or deletes a referenced file.
//!
//! Lookups go through a [`RefLookup`] (the database) behind a bounded cache; the cache is
//! dropped whenever the database changes (its [`RefLookup::version`]), and a stale entry
//! could only ever cost an error, never wrong bytes, since every read is verified.
//! Lock order: the cache's mutex is never held across a lookup or a file read.

use crate::cid::Cid;
use sha2::Digest;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

/// Largest leaf a reference may name (kubo's chunk limit; a database entry naming more
/// is damaged).
pub const MAX_REF_SIZE: u64 = crate::importer::MAX_CHUNK as u64;
/// Longest path a reference may hold.
pub const MAX_REF_PATH: usize = 4096;
/// References kept in memory by one process.
pub const MAX_CACHED_REFS: usize = 1 << 16;

/// How a leaf block is made from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafFormat {
    /// The bytes are the block (CIDv1 `raw`).
    Raw,
    /// A DAG-PB node holding a UnixFS file leaf with the bytes (`btfs add`'s default).
    UnixFsFile,
}

/// A leaf block held in a file: bytes `offset..offset + size` of `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub format: LeafFormat,
    /// The file's modification time (ns since the epoch) when the reference was made:
    /// a quick check that the file was left alone (the hash check on read is the real one).
    pub mtime_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FilestoreError {
    #[error("{path}: the file holding block {cid} is gone (filestore)")]
    NoFile { path: PathBuf, cid: Cid },
    #[error(
        "{path}: changed since it was added: bytes {offset}..{end} no longer match block {cid} (filestore); `btfs filestore verify` lists such blocks"
    )]
    Changed {
        path: PathBuf,
        cid: Cid,
        offset: u64,
        end: u64,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl From<FilestoreError> for io::Error {
    fn from(e: FilestoreError) -> io::Error {
        let kind = match &e {
            FilestoreError::NoFile { .. } => io::ErrorKind::NotFound,
            FilestoreError::Changed { .. } => io::ErrorKind::InvalidData,
            FilestoreError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// The modification time of `meta` in ns since the epoch (0 when unknown).
pub fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

impl FileRef {
    /// The length of the block this reference makes.
    pub fn block_len(&self) -> u64 {
        match self.format {
            LeafFormat::Raw => self.size,
            LeafFormat::UnixFsFile => crate::importer::file_leaf_block_len(self.size),
        }
    }

    /// The encoding stored in the database: format, offset, size, mtime, path.
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut out = Vec::with_capacity(25 + path.len());
        out.push(match self.format {
            LeafFormat::Raw => 0,
            LeafFormat::UnixFsFile => 1,
        });
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.mtime_ns.to_be_bytes());
        out.extend_from_slice(path);
        out
    }

    /// Reads an entry back; `None` when it is not one this build wrote (damage).
    pub fn decode(b: &[u8]) -> Option<FileRef> {
        let format = match *b.first()? {
            0 => LeafFormat::Raw,
            1 => LeafFormat::UnixFsFile,
            _ => return None,
        };
        let word = |at: usize| Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let (offset, size, mtime_ns) = (word(1)?, word(9)?, word(17)?);
        let path = b.get(25..)?;
        if size > MAX_REF_SIZE
            || offset.checked_add(size).is_none()
            || path.is_empty()
            || path.len() > MAX_REF_PATH
        {
            return None;
        }
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
        if !is_plain_absolute(&path) {
            return None;
        }
        Some(FileRef {
            path,
            offset,
            size,
            format,
            mtime_ns,
        })
    }

    /// Reads the block `cid` names into `buf` and checks its hash.
    pub fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), FilestoreError> {
        let io = |source| FilestoreError::Io {
            path: self.path.clone(),
            source,
        };
        // Never through a link, never blocking on a FIFO or opening a device: the path
        // came from the database, and only a regular file is read.
        let f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
            Ok(_) => {
                return Err(io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FilestoreError::NoFile {
                    path: self.path.clone(),
                    cid: *cid,
                })
            }
            Err(e) => return Err(io(e)),
        };
        let changed = || FilestoreError::Changed {
            path: self.path.clone(),
            cid: *cid,
            offset: self.offset,
            end: self.offset + self.size,
        };
        let (head, tail) = match self.format {
            LeafFormat::Raw => (Vec::new(), Vec::new()),
            LeafFormat::UnixFsFile => crate::importer::file_leaf_frame(self.size),
        };
        buf.clear();
        buf.extend_from_slice(&head);
        buf.resize(head.len() + self.size as usize, 0);
        match f.read_exact_at(&mut buf[head.len()..], self.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
            Err(e) => return Err(io(e)),
        }
        buf.extend_from_slice(&tail);
        if <[u8; 32]>::from(sha2::Sha256::digest(&buf[..])) != *cid.digest() {
            return Err(changed());
        }
        Ok(())
    }

    /// Whether the file is still there, long enough, with the modification time recorded.
    pub fn file_unchanged(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| {
            m.is_file() && m.len() >= self.offset + self.size && mtime_ns(&m) == self.mtime_ns
        })
    }
}

/// Where references are looked up (the repo's database).
pub trait RefLookup: Send + Sync + std::fmt::Debug {
    /// The references of each of these digests, in order (empty: not in the filestore).
    /// One block may be held by several files (the same chunk in two downloads).
    fn lookup(&self, digests: &[[u8; 32]]) -> io::Result<Vec<Vec<FileRef>>>;
    /// Changes whenever the references may have changed (a generation the writers bump
    /// after each commit).
    fn version(&self) -> u64;
}

#[derive(Debug, Default)]
struct Cache {
    version: u64,
    refs: HashMap<[u8; 32], Vec<FileRef>>,
}

/// The references of one repo, with a cache.
#[derive(Debug)]
pub struct Filestore {
    lookup: Box<dyn RefLookup>,
    cache: Mutex<Cache>,
}

impl Filestore {
    pub fn new(lookup: Box<dyn RefLookup>) -> Filestore {
        Filestore {
            lookup,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The cache, emptied first when the references changed since it was filled.
    fn current(&self, version: u64) -> std::sync::MutexGuard<'_, Cache> {
        let mut cache = self.cache.lock().expect("filestore cache");
        if cache.version != version {
            cache.refs.clear();
            cache.version = version;
        }
        cache
    }

    /// Keeps lookup results, unless the references changed meanwhile (another thread saw
    /// a newer version, or a writer committed during the lookup): then they may be stale
    /// and are used once but not kept.
    fn keep(&self, version: u64, found: impl IntoIterator<Item = ([u8; 32], Vec<FileRef>)>) {
        if self.lookup.version() != version {
            return;
        }
        let mut cache = self.cache.lock().expect("filestore cache");
        if cache.version != version {
            return;
        }
        for (d, r) in found {
            if cache.refs.len() >= MAX_CACHED_REFS {
                cache.refs.clear();
            }
            cache.refs.insert(d, r);
        }
    }

    /// Looks up every digest not cached yet in one go (a file node's children).
    pub fn prefetch(&self, digests: &[[u8; 32]]) -> io::Result<()> {
        let version = self.lookup.version();
        let missing: Vec<[u8; 32]> = {
            let cache = self.current(version);
            digests
                .iter()
                .filter(|d| !cache.refs.contains_key(*d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.lookup.lookup(&missing)?;
        self.keep(version, missing.into_iter().zip(found));
        Ok(())
    }

    /// The references for `cid` (empty when the filestore does not hold it).
    pub fn get(&self, cid: &Cid) -> io::Result<Vec<FileRef>> {
        let version = self.lookup.version();
        if let Some(r) = self.current(version).refs.get(cid.digest()) {
            return Ok(r.clone());
        }
        let found = self
            .lookup
            .lookup(std::slice::from_ref(cid.digest()))?
            .pop()
            .unwrap_or_default();
        self.keep(version, [(*cid.digest(), found.clone())]);
        Ok(found)
    }

    /// Forgets everything cached (after this process changed the references).
    pub fn invalidate(&self) {
        let mut cache = self.cache.lock().expect("filestore cache");
        cache.refs.clear();
    }
}

/// An absolute path of plain names only (no `.`, `..` or empty names).
pub fn is_plain_absolute(path: &Path) -> bool {
    use std::path::Component;
    let mut parts = path.components();
    parts.next() == Some(Component::RootDir)
        && parts.clone().next().is_some()
        && parts.all(|c| matches!(c, Component::Normal(_)))
}

/// Reads the block `cid` names from the first of `refs` that holds it; the first error
/// when none does.
pub fn read_any(refs: &[FileRef], cid: &Cid, buf: &mut Vec<u8>) -> Result<(), FilestoreError> {
    let mut first = None;
    for r in refs {
        match r.read_block(cid, buf) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(FilestoreError::NoFile {
        path: PathBuf::new(),
        cid: *cid,
    }))
}

/// Canonical absolute path of a file being referenced.
pub fn ref_path(path: &Path) -> io::Result<PathBuf> {
    let p = path.canonicalize()?;
    if p.as_os_str().len() > MAX_REF_PATH {
        return Err(io::Error::other(format!(
            "{}: the path is too long for the filestore",
            p.display()
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importer::ImportOptions;

    #[test]
    fn round_trip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let opts = ImportOptions::default();
        let leaf = opts
            .put_leaf(&data[1000..5000], &crate::importer::Discard)
            .unwrap();
        let r = FileRef {
            path: ref_path(&path).unwrap(),
            offset: 1000,
            size: 4000,
            format: LeafFormat::UnixFsFile,
            mtime_ns: mtime_ns(&fs::metadata(&path).unwrap()),
        };
        assert_eq!(FileRef::decode(&r.encode()), Some(r.clone()));
        assert!(r.file_unchanged());
        let mut buf = Vec::new();
        r.read_block(&leaf.cid, &mut buf).unwrap();
        assert_eq!(buf.len() as u64, r.block_len());
        assert_eq!(buf.len() as u64, leaf.tsize);
        // One byte changed: an error naming the file, not the bytes.
        let mut changed = data.clone();
        changed[2000] ^= 1;
        fs::write(&path, &changed).unwrap();
        let e = r.read_block(&leaf.cid, &mut buf).unwrap_err();
        assert!(matches!(e, FilestoreError::Changed { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()));
        fs::write(&path, &data[..2000]).unwrap();
        assert!(matches!(
            r.read_block(&leaf.cid, &mut buf),
            Err(FilestoreError::Changed { .. })
        ));
        assert!(!r.file_unchanged());
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            r.read_block(&leaf.cid, &mut buf),
            Err(FilestoreError::NoFile { .. })
        ));
    }

    #[test]
    fn damaged_entries_are_refused() {
        assert_eq!(FileRef::decode(b""), None);
        assert_eq!(FileRef::decode(&[1; 24]), None);
        let mut e = FileRef {
            path: "/x".into(),
            offset: 0,
            size: MAX_REF_SIZE + 1,
            format: LeafFormat::Raw,
            mtime_ns: 0,
        }
        .encode();
        assert_eq!(FileRef::decode(&e), None);
        e[0] = 9;
        assert_eq!(FileRef::decode(&e), None);
        let relative = FileRef {
            path: "x".into(),
            offset: 0,
            size: 1,
            format: LeafFormat::Raw,
            mtime_ns: 0,
        };
        assert_eq!(FileRef::decode(&relative.encode()), None);
        for bad in ["/a/../b", "/", "/.."] {
            let r = FileRef {
                path: bad.into(),
                ..relative.clone()
            };
            assert_eq!(FileRef::decode(&r.encode()), None, "{bad}");
        }
    }
}

//! Blocks as files, laid out like kubo's flatfs (`/repo/flatfs/shard/v1/next-to-last/2`):
//! `blocks/<2 chars>/<base32 multihash>.data`. A block is written to a temporary file and
//! renamed into place, so a block file under its name always holds the whole block;
//! [`Blockstore::sync`] makes everything written so far durable before the caller records
//! pins or indexes that point at it.
//!
//! Leaves kept in the filestore ([`crate::filestore`]) are read through the same calls:
//! a block not found as a file is looked up there (and its bytes hash-checked), so every
//! reader — DAG walks, the gateway, seeding from the store — sees one store.

use crate::cid::{Cid, DAG_PB};
use crate::filestore::{FileRef, Filestore};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDING: &str = "/repo/flatfs/shard/v1/next-to-last/2\n";
/// Larger files under `blocks/` are not blocks we wrote; refuse to read them whole.
pub const MAX_BLOCK: u64 = 4 << 20;

#[derive(Debug)]
pub struct Blockstore {
    root: PathBuf,
    temp: PathBuf,
    counter: AtomicU64,
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
        let temp = root.join(".temp");
        fs::create_dir_all(&temp)?;
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
            temp,
            counter: AtomicU64::new(0),
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
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.temp.join(format!("{}-{n}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(block)?;
        drop(f);
        let dir = path.parent().expect("sharded path");
        let renamed = fs::rename(&tmp, &path).or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                fs::create_dir_all(dir)?;
                fs::rename(&tmp, &path)
            } else {
                Err(e)
            }
        });
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }

    pub fn delete_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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

    /// Removes temporary files left by writers that are gone. Call with the repo's
    /// exclusive lock held.
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.temp)? {
            fs::remove_file(e?.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Every file under the shard folders.
    pub fn files(&self) -> io::Result<Vec<BlockFile>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            let name = shard.file_name();
            if !shard.file_type()?.is_dir() || name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            for e in fs::read_dir(shard.path())? {
                let e = e?;
                let path = e.path();
                let digest = e
                    .file_name()
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

    /// A CID naming the block behind `digest` (blocks are keyed by multihash only).
    pub fn cid_of_digest(digest: [u8; 32]) -> Cid {
        Cid::from_digest(0, DAG_PB, digest)
    }
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
}

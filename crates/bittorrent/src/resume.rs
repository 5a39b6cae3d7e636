//! Resume data: which pieces are verified and durable, with the size and modification
//! time of each file when that was recorded.
//!
//! Written only after the data it describes has been synced, through a temporary file,
//! fsync and rename, so a crash leaves either the old or the new record, and a piece in
//! the record is always on disk. On start the record is trusted only if every file
//! still has the recorded size and modification time.

use crate::bencode::{self, OwnedValue};
use crate::bitfield::Bitfield;
use crate::infohash::InfoHash;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: InfoHash,
    pub save_path: PathBuf,
    pub have: Bitfield,
    /// (size, mtime in ns) per file, as [`crate::storage::FileStorage::fingerprints`].
    pub files: Vec<(u64, i128)>,
}

impl ResumeData {
    pub fn encode(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|(size, mtime)| {
                OwnedValue::List(vec![
                    OwnedValue::Int(size.to_string()),
                    OwnedValue::Int(mtime.to_string()),
                ])
            })
            .collect();
        OwnedValue::dict([
            ("info-hash", OwnedValue::bytes(self.info_hash.0.to_vec())),
            (
                "save-path",
                OwnedValue::bytes(self.save_path.as_os_str().as_encoded_bytes().to_vec()),
            ),
            ("pieces", OwnedValue::Int(self.have.len().to_string())),
            ("have", OwnedValue::bytes(self.have.as_bytes().to_vec())),
            ("files", OwnedValue::List(files)),
        ])
        .encode()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let v = bencode::decode(bytes).ok()?;
        let hash: [u8; 20] = v.get(b"info-hash")?.as_bytes()?.try_into().ok()?;
        let save = v.get(b"save-path")?.as_bytes()?;
        let n = u32::try_from(v.get(b"pieces")?.as_i64()?).ok()?;
        let have = Bitfield::from_bytes(v.get(b"have")?.as_bytes()?, n)?;
        let files = v
            .get(b"files")?
            .as_list()?
            .iter()
            .map(|f| {
                let l = f.as_list()?;
                let size = l.first()?.as_i64().and_then(|s| u64::try_from(s).ok())?;
                let mtime: i128 = match &l.get(1)?.kind {
                    bencode::Kind::Int(s) => s.parse().ok()?,
                    _ => return None,
                };
                Some((size, mtime))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ResumeData {
            info_hash: InfoHash(hash),
            save_path: PathBuf::from(std::ffi::OsStr::from_bytes(save)),
            have,
            files,
        })
    }

    /// Writes the record atomically and durably.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Option<Self> {
        Self::decode(&std::fs::read(path).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut have = Bitfield::new(11);
        have.set(3);
        have.set(10);
        let r = ResumeData {
            info_hash: InfoHash([5; 20]),
            save_path: dir.path().to_owned(),
            have,
            files: vec![(10, 1_700_000_000_123_456_789), (0, 0)],
        };
        let path = dir.path().join("r/x.resume");
        r.save(&path).unwrap();
        assert_eq!(ResumeData::load(&path).unwrap(), r);
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(ResumeData::load(&path).is_none());
    }
}

//! Where verified pieces go. [`Storage`] is deliberately small (write a verified piece,
//! read at an offset, make writes durable) so a content-addressed backend can implement
//! it; [`FileStorage`] writes the torrent's files with positional I/O.
//!
//! [`FileStorage`] never writes outside its download folder: paths come from a checked
//! [`Metainfo`] (no `..`, separators or absolute paths), every parent folder is resolved
//! after it is created and must still lie inside the folder (a symlink planted in the
//! folder cannot redirect writes), and existing symlinks are never opened as files.
//! BEP 47 pad files are never written; they read as zeros.

use crate::geometry::{FileMap, PieceIndex};
use crate::metainfo::Metainfo;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub trait Storage: Send + Sync + 'static {
    /// Writes a verified piece.
    fn write_piece(&self, piece: PieceIndex, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset` bytes into `piece`.
    fn read_at(&self, piece: PieceIndex, offset: u32, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Size and modification time of each file, for resume data (none: resume data is
    /// never trusted, the data is checked instead).
    fn fingerprints(&self) -> Vec<(u64, i128)> {
        Vec::new()
    }
    /// Whether any data is there to check at start.
    fn has_existing_data(&self) -> bool {
        false
    }
}

/// Most file handles kept open at once.
const MAX_OPEN: usize = 128;

pub struct FileStorage {
    map: FileMap,
    paths: Vec<PathBuf>,
    /// Files that are written: selected and not padding.
    writable: Vec<bool>,
    pad: Vec<bool>,
    open: Mutex<HashMap<usize, Arc<File>>>,
    dirty: Mutex<HashSet<usize>>,
    /// One writer at a time: concurrent buffered writes to one file only spin on the
    /// kernel's inode lock.
    write_lock: Mutex<()>,
    /// Seeding someone's own files: opened read-only, never created, resized or written.
    read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} would be outside the download folder {root}")]
    Escape { path: PathBuf, root: PathBuf },
    #[error("the torrent has no v1 piece layout (v2-only torrents are not downloadable yet)")]
    NoV1,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The path of every file of `m` below `root`: `root/name` for a single file,
/// `root/name/...` for a folder.
pub fn file_paths(root: &Path, m: &Metainfo) -> Vec<PathBuf> {
    let info = &m.info;
    info.files
        .iter()
        .map(|f| {
            let mut p = root.join(info.storage_name());
            if !info.single_file {
                for c in f.storage_path() {
                    p.push(c);
                }
            }
            p
        })
        .collect()
}

impl FileStorage {
    /// Creates the folders and (sparse) files of the selected files. `selected[i]` says
    /// whether file `i` is wanted; unselected files are not created.
    pub fn create(root: &Path, m: &Metainfo, selected: &[bool]) -> Result<Self, StorageError> {
        let map = m.info.v1.clone().ok_or(StorageError::NoV1)?;
        std::fs::create_dir_all(root).map_err(io_at(root))?;
        let root_real = root.canonicalize().map_err(io_at(root))?;
        let paths = file_paths(&root_real, m);
        let mut writable = Vec::with_capacity(paths.len());
        for (i, (f, path)) in m.info.files.iter().zip(&paths).enumerate() {
            let w = !f.attr.pad && selected.get(i).copied().unwrap_or(true);
            writable.push(w);
            if !w {
                continue;
            }
            let parent = path.parent().unwrap_or(&root_real);
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
            let real_parent = parent.canonicalize().map_err(io_at(parent))?;
            if !real_parent.starts_with(&root_real) {
                return Err(StorageError::Escape {
                    path: path.clone(),
                    root: root_real,
                });
            }
            if std::fs::symlink_metadata(path).is_ok_and(|md| md.file_type().is_symlink()) {
                return Err(StorageError::Escape {
                    path: path.clone(),
                    root: root_real,
                });
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_at(path))?;
            // Sparse preallocation: the right size, no blocks until written.
            if file.metadata().map_err(io_at(path))?.len() != f.length {
                file.set_len(f.length).map_err(io_at(path))?;
            }
        }
        Ok(FileStorage {
            map,
            pad: m.info.files.iter().map(|f| f.attr.pad).collect(),
            paths,
            writable,
            open: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            write_lock: Mutex::new(()),
            read_only: false,
        })
    }

    /// The files of `m` under `root` as they are, for seeding: nothing is created or
    /// resized, files are opened read-only, and a file that is missing or has another
    /// size than the torrent says is an error.
    pub fn open_existing(root: &Path, m: &Metainfo) -> Result<Self, StorageError> {
        let map = m.info.v1.clone().ok_or(StorageError::NoV1)?;
        let root_real = root.canonicalize().map_err(io_at(root))?;
        let paths = file_paths(&root_real, m);
        for (f, path) in m.info.files.iter().zip(&paths) {
            if f.attr.pad {
                continue;
            }
            let md = std::fs::metadata(path).map_err(io_at(path))?;
            if !md.is_file() || md.len() != f.length {
                return Err(StorageError::Io {
                    path: path.clone(),
                    source: io::Error::other(format!(
                        "is {} bytes, the torrent says {}: it changed since the torrent was made",
                        md.len(),
                        f.length
                    )),
                });
            }
        }
        Ok(FileStorage {
            map,
            pad: m.info.files.iter().map(|f| f.attr.pad).collect(),
            writable: m.info.files.iter().map(|f| !f.attr.pad).collect(),
            paths,
            open: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            write_lock: Mutex::new(()),
            read_only: true,
        })
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Size and modification time (ns since the epoch) of each written file, for resume.
    pub fn file_fingerprints(&self) -> Vec<(u64, i128)> {
        self.paths
            .iter()
            .zip(&self.writable)
            .map(|(p, &w)| {
                if !w {
                    return (0, 0);
                }
                std::fs::metadata(p)
                    .ok()
                    .map(|md| {
                        let mtime = md
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos() as i128);
                        (md.len(), mtime)
                    })
                    .unwrap_or((u64::MAX, -1))
            })
            .collect()
    }

    /// Whether any written file already holds data (then pieces are checked on start).
    pub fn any_data(&self) -> bool {
        self.paths.iter().zip(&self.writable).any(|(p, &w)| {
            w && std::fs::metadata(p).is_ok_and(|md| {
                use std::os::unix::fs::MetadataExt;
                md.blocks() > 0
            })
        })
    }

    pub fn is_written(&self, file: usize) -> bool {
        self.writable[file]
    }

    fn handle(&self, i: usize) -> io::Result<Arc<File>> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| io::Error::other("storage lock poisoned"))?;
        if let Some(f) = open.get(&i) {
            return Ok(f.clone());
        }
        if open.len() >= MAX_OPEN {
            if let Some(&k) = open.keys().next() {
                open.remove(&k);
            }
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(!self.read_only)
                .open(&self.paths[i])?,
        );
        open.insert(i, f.clone());
        Ok(f)
    }
}

impl Storage for FileStorage {
    fn write_piece(&self, piece: PieceIndex, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "seeded files are never written",
            ));
        }
        let _one_writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        for s in self.map.slices(piece) {
            if !self.writable[s.file_index] {
                continue;
            }
            let src = &data[s.piece_offset as usize..(s.piece_offset + s.len) as usize];
            self.handle(s.file_index)?
                .write_all_at(src, s.file_offset)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.paths[s.file_index].display()),
                    )
                })?;
            if let Ok(mut d) = self.dirty.lock() {
                d.insert(s.file_index);
            }
        }
        Ok(())
    }

    fn read_at(&self, piece: PieceIndex, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let end = offset as u64 + buf.len() as u64;
        for s in self.map.slices(piece) {
            let (lo, hi) = (u64::from(s.piece_offset), u64::from(s.piece_offset + s.len));
            let (a, b) = (lo.max(offset as u64), hi.min(end));
            if a >= b {
                continue;
            }
            let dst = &mut buf[(a - offset as u64) as usize..(b - offset as u64) as usize];
            if self.pad[s.file_index] {
                dst.fill(0);
                continue;
            }
            if !self.writable[s.file_index] {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the piece lies partly in a file that is not downloaded",
                ));
            }
            self.handle(s.file_index)?
                .read_exact_at(dst, s.file_offset + (a - lo))?;
        }
        Ok(())
    }

    fn fingerprints(&self) -> Vec<(u64, i128)> {
        self.file_fingerprints()
    }

    fn has_existing_data(&self) -> bool {
        self.any_data()
    }

    fn sync(&self) -> io::Result<()> {
        // Taken out before syncing: a write that lands meanwhile marks its file again.
        let dirty: Vec<usize> = match self.dirty.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => return Err(io::Error::other("storage lock poisoned")),
        };
        for (n, &i) in dirty.iter().enumerate() {
            if let Err(e) = self.handle(i).and_then(|f| f.sync_data()) {
                // Not durable: keep these files marked so no later save skips them.
                if let Ok(mut d) = self.dirty.lock() {
                    d.extend(&dirty[n..]);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_torrent, CreateOptions};

    #[test]
    fn seeding_storage_never_changes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, vec![7u8; 100_000]).unwrap();
        let created = create_torrent(&file, &CreateOptions::default(), &|_| {}).unwrap();
        let m = created.metainfo;
        let s = FileStorage::open_existing(dir.path(), &m).unwrap();
        let piece = m.info.geometry().unwrap().piece(0).unwrap();
        let mut buf = vec![0u8; 10];
        s.read_at(piece, 5, &mut buf).unwrap();
        assert_eq!(buf, vec![7u8; 10]);
        let err = s.write_piece(piece, &[0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        // The file grew: refused, and left as it is.
        std::fs::write(&file, vec![7u8; 100_001]).unwrap();
        assert!(FileStorage::open_existing(dir.path(), &m).is_err());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 100_001);
        std::fs::remove_file(&file).unwrap();
        assert!(FileStorage::open_existing(dir.path(), &m).is_err());
        assert!(!file.exists());
    }
}

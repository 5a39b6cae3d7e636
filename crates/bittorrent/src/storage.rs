//! Where verified pieces go. [`Storage`] is deliberately small (write a verified piece,
//! read at an offset, make writes durable) so a content-addressed backend can implement
//! it; [`FileStorage`] writes the torrent's files with positional I/O.
//!
//! [`FileStorage`] never writes outside its download folder: paths come from a checked
//! [`Metainfo`] (no `..`, separators or absolute paths); the folder is opened once and
//! every file is reached from that handle, one component at a time, without following
//! symbolic links (`openat` with `O_NOFOLLOW`, folders with `O_DIRECTORY`), so a link
//! planted anywhere below the folder is refused, never followed. Each file's identity
//! (device and inode) is recorded when it is first opened: a handle reopened later must
//! be the same file, and before each write the path must still name that file (a file
//! swapped for a link or another file mid-download stops the download with an error).
//! Readers of the downloaded data (the store bridge) read through the same handles
//! ([`FileStorage::read_file_at`]). Seeding someone's own files ([`FileStorage::open_existing`])
//! opens them read-only by path, following links as the user laid them out, with the
//! same identity check on reopening.
//! BEP 47 pad files are never written; they read as zeros.
//!
//! A file opened for writing must have no other name: one with hard links (which may
//! be outside the folder) is refused with an error. Seeded files may have them.
//!
//! Lock order: `write_lock` first (held for a whole piece write, across its file I/O);
//! then `open`, `ids` and `dirty` are each taken alone, never two at once, and never
//! across a path walk or other file I/O.

use crate::geometry::{FileMap, PieceIndex};
use crate::metainfo::Metainfo;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

/// A file's identity: device and inode.
type FileId = (u64, u64);

pub struct FileStorage {
    map: FileMap,
    /// Each file's full path (for messages and the seeding of existing files).
    paths: Vec<PathBuf>,
    /// Each file's path components below the download folder.
    components: Vec<Vec<String>>,
    /// The download folder, opened once (none when seeding existing files by path).
    root: Option<OwnedFd>,
    /// Each file's identity when first opened.
    ids: Mutex<Vec<Option<FileId>>>,
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
    #[error("{path}: {why}")]
    InTheWay { path: PathBuf, why: String },
    #[error("the torrent has no v1 piece layout (v2-only torrents are not downloadable yet)")]
    NoV1,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Each file's path components below the download folder: `[name]` for a single
/// file, `[name, ...]` for a folder.
fn file_components(m: &Metainfo) -> Vec<Vec<String>> {
    let info = &m.info;
    info.files
        .iter()
        .map(|f| {
            let mut c = vec![info.stored_name.clone()];
            if !info.single_file {
                c.extend(f.stored.iter().cloned());
            }
            c
        })
        .collect()
}

/// The path of every file of `m` below `root`: `root/name` for a single file,
/// `root/name/...` for a folder.
pub fn file_paths(root: &Path, m: &Metainfo) -> Vec<PathBuf> {
    file_components(m)
        .into_iter()
        .map(|c| c.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
        .collect()
}

/// Why a path below the download folder cannot be opened.
#[derive(Debug)]
enum OpenError {
    /// A symbolic link is in the way.
    Link,
    /// A file (or anything but a folder) is where the torrent has a folder.
    NotDir(String),
    /// A folder, fifo or device is where the torrent has a file.
    NotRegular,
    /// The file has other names (hard links), which may be outside the folder.
    HardLinked(u64),
    Io(io::Error),
}

impl OpenError {
    /// What `openat(at, name)` failing with `e` means: a link and a file where a folder
    /// belongs both give `ENOTDIR` (or `ELOOP`), so what is there is looked at.
    fn at(at: BorrowedFd<'_>, name: &str, e: rustix::io::Errno) -> OpenError {
        use rustix::io::Errno;
        match e {
            Errno::LOOP | Errno::NOTDIR => {
                match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                        OpenError::Link
                    }
                    Ok(_) => OpenError::NotDir(name.to_owned()),
                    Err(_) => OpenError::Link,
                }
            }
            Errno::ISDIR => OpenError::NotRegular,
            e => OpenError::Io(e.into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            OpenError::Link => "a symbolic link is in the way; links below the download folder are never followed".into(),
            OpenError::NotDir(name) => format!("{name} is a file where the torrent has a folder"),
            OpenError::NotRegular => "is not a regular file (a folder, fifo or device is where the torrent has a file)".into(),
            OpenError::HardLinked(n) => format!(
                "the file has {n} names (hard links), which may be outside the download folder; it is never written"
            ),
            OpenError::Io(e) => e.to_string(),
        }
    }

    fn into_io(self, path: &Path) -> io::Error {
        let kind = match &self {
            OpenError::Io(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{}: {}", path.display(), self.describe()))
    }

    fn into_storage(self, path: &Path, root: &Path) -> StorageError {
        match self {
            OpenError::Link => StorageError::Escape {
                path: path.to_owned(),
                root: root.to_owned(),
            },
            OpenError::Io(source) => StorageError::Io {
                path: path.to_owned(),
                source,
            },
            e => StorageError::InTheWay {
                path: path.to_owned(),
                why: e.describe(),
            },
        }
    }
}

/// Opens the folder holding `components`' last one, walking down from `root` without
/// following links (creating missing folders when `create`), and returns it with the
/// last component.
fn parent_beneath<'a>(
    root: BorrowedFd<'_>,
    components: &'a [String],
    create: bool,
) -> Result<(Option<OwnedFd>, &'a str), OpenError> {
    let (last, dirs) = components.split_last().ok_or(OpenError::NotRegular)?;
    let mut dir: Option<OwnedFd> = None;
    for c in dirs {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        if create {
            match rustix::fs::mkdirat(at, c.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(OpenError::at(at, c, e)),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = rustix::fs::openat(at, c.as_str(), flags, Mode::empty())
            .map_err(|e| OpenError::at(at, c, e))?;
        dir = Some(next);
    }
    Ok((dir, last.as_str()))
}

/// Opens a file below `root` without following links anywhere on the way; creates it
/// (and its folders) when `create`. A file opened for writing must have no other name
/// (a hard link elsewhere would let writes land outside the folder).
fn open_beneath(
    root: BorrowedFd<'_>,
    components: &[String],
    write: bool,
    create: bool,
) -> Result<File, OpenError> {
    let (dir, last) = parent_beneath(root, components, create)?;
    let at = dir.as_ref().map_or(root, |d| d.as_fd());
    let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= if write { OFlags::RDWR } else { OFlags::RDONLY };
    if create {
        flags |= OFlags::CREATE;
    }
    let fd = rustix::fs::openat(at, last, flags, Mode::from_raw_mode(0o644))
        .map_err(|e| OpenError::at(at, last, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| OpenError::Io(e.into()))?;
    // Only regular files: a fifo or device planted in the folder is refused.
    if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
        return Err(OpenError::NotRegular);
    }
    #[allow(clippy::unnecessary_cast)]
    let links = st.st_nlink as u64;
    if write && links > 1 {
        return Err(OpenError::HardLinked(links));
    }
    Ok(File::from(fd))
}

fn identity(st: &rustix::fs::Stat) -> FileId {
    #[allow(clippy::unnecessary_cast)]
    (st.st_dev as u64, st.st_ino as u64)
}

fn file_identity(f: &File) -> io::Result<FileId> {
    Ok(identity(&rustix::fs::fstat(f)?))
}

impl FileStorage {
    /// Creates the folders and (sparse) files of the selected files. `selected[i]` says
    /// whether file `i` is wanted; unselected files are not created.
    pub fn create(root: &Path, m: &Metainfo, selected: &[bool]) -> Result<Self, StorageError> {
        let map = m.info.v1.clone().ok_or(StorageError::NoV1)?;
        std::fs::create_dir_all(root).map_err(io_at(root))?;
        let root_real = root.canonicalize().map_err(io_at(root))?;
        let root_fd = rustix::fs::openat(
            rustix::fs::CWD,
            &root_real,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StorageError::Io {
            path: root_real.clone(),
            source: e.into(),
        })?;
        let components = file_components(m);
        let paths = file_paths(&root_real, m);
        let mut writable = Vec::with_capacity(paths.len());
        let mut ids = vec![None; paths.len()];
        let mut open = HashMap::new();
        for (i, (f, path)) in m.info.files.iter().zip(&paths).enumerate() {
            let w = !f.attr.pad && selected.get(i).copied().unwrap_or(true);
            writable.push(w);
            if !w {
                continue;
            }
            let file = open_beneath(root_fd.as_fd(), &components[i], true, true)
                .map_err(|e| e.into_storage(path, &root_real))?;
            // Sparse preallocation: the right size, no blocks until written.
            if file.metadata().map_err(io_at(path))?.len() != f.length {
                file.set_len(f.length).map_err(io_at(path))?;
            }
            ids[i] = Some(file_identity(&file).map_err(io_at(path))?);
            if open.len() < MAX_OPEN {
                open.insert(i, Arc::new(file));
            }
        }
        Ok(FileStorage {
            map,
            pad: m.info.files.iter().map(|f| f.attr.pad).collect(),
            paths,
            components,
            root: Some(root_fd),
            ids: Mutex::new(ids),
            writable,
            open: Mutex::new(open),
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
            ids: Mutex::new(vec![None; paths.len()]),
            components: file_components(m),
            root: None,
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

    /// What is at file `i`'s path now, without following links on the way (links are
    /// followed when seeding existing files).
    fn stat_in_place(&self, i: usize) -> io::Result<rustix::fs::Stat> {
        let Some(root) = &self.root else {
            return Ok(rustix::fs::stat(&self.paths[i])?);
        };
        let (dir, last) = parent_beneath(root.as_fd(), &self.components[i], false)
            .map_err(|e| e.into_io(&self.paths[i]))?;
        let at = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
        Ok(rustix::fs::statat(at, last, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Size and modification time (ns since the epoch) of each written file, for resume.
    pub fn file_fingerprints(&self) -> Vec<(u64, i128)> {
        (0..self.paths.len())
            .map(|i| {
                if !self.writable[i] {
                    return (0, 0);
                }
                match self.stat_in_place(i) {
                    Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {
                        #[allow(clippy::unnecessary_cast)]
                        let mtime =
                            (st.st_mtime as i128) * 1_000_000_000 + (st.st_mtime_nsec as i128);
                        #[allow(clippy::unnecessary_cast)]
                        (st.st_size as u64, mtime)
                    }
                    _ => (u64::MAX, -1),
                }
            })
            .collect()
    }

    /// Whether any written file already holds data (then pieces are checked on start).
    pub fn any_data(&self) -> bool {
        (0..self.paths.len()).any(|i| {
            self.writable[i]
                && self.stat_in_place(i).is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() && st.st_blocks > 0
                })
        })
    }

    pub fn is_written(&self, file: usize) -> bool {
        self.writable[file]
    }

    /// Fills `buf` from `offset` bytes into file `file`, through the storage's own
    /// handle (never by path: what is read is what was written).
    pub fn read_file_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if !self.writable.get(file).copied().unwrap_or(false) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the file is not downloaded",
            ));
        }
        self.handle(file)?
            .read_exact_at(buf, offset)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.paths[file].display())))
    }

    fn lock_open(&self) -> io::Result<std::sync::MutexGuard<'_, HashMap<usize, Arc<File>>>> {
        self.open
            .lock()
            .map_err(|_| io::Error::other("storage lock poisoned"))
    }

    /// File `i`'s handle: kept open, or opened again (beneath the folder, without
    /// following links) and checked to be the file first opened. No lock is held while
    /// the path is walked.
    fn handle(&self, i: usize) -> io::Result<Arc<File>> {
        if let Some(f) = self.lock_open()?.get(&i) {
            return Ok(f.clone());
        }
        let path = &self.paths[i];
        let f = match &self.root {
            Some(root) => open_beneath(root.as_fd(), &self.components[i], !self.read_only, false)
                .map_err(|e| e.into_io(path))?,
            None => OpenOptions::new()
                .read(true)
                .write(!self.read_only)
                .open(path)?,
        };
        let id = file_identity(&f)?;
        {
            let mut ids = self
                .ids
                .lock()
                .map_err(|_| io::Error::other("storage lock poisoned"))?;
            match ids[i] {
                Some(first) if first != id => return Err(replaced(path)),
                Some(_) => {}
                None => ids[i] = Some(id),
            }
        }
        let mut open = self.lock_open()?;
        // Opened meanwhile by another caller: one handle is kept.
        if let Some(f) = open.get(&i) {
            return Ok(f.clone());
        }
        if open.len() >= MAX_OPEN {
            if let Some(&k) = open.keys().next() {
                open.remove(&k);
            }
        }
        let f = Arc::new(f);
        open.insert(i, f.clone());
        Ok(f)
    }

    /// Fails unless file `i`'s path still names the file first opened there.
    fn check_in_place(&self, i: usize) -> io::Result<()> {
        let first = self
            .ids
            .lock()
            .map_err(|_| io::Error::other("storage lock poisoned"))?[i];
        let now = self.stat_in_place(i).map(|st| identity(&st));
        match (first, now) {
            (Some(first), Ok(now)) if first == now => Ok(()),
            _ => Err(replaced(&self.paths[i])),
        }
    }
}

fn replaced(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} was replaced or removed during the download (links are never followed); nothing more is written",
        path.display()
    ))
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
            self.check_in_place(s.file_index)?;
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

    #[test]
    fn links_below_the_folder_are_never_followed() {
        let src = tempfile::tempdir().unwrap();
        let set = src.path().join("set");
        std::fs::create_dir_all(set.join("sub")).unwrap();
        std::fs::write(set.join("a.bin"), vec![1u8; 40_000]).unwrap();
        std::fs::write(set.join("sub/b.bin"), vec![2u8; 40_000]).unwrap();
        let opts = CreateOptions {
            piece_length: Some(16 * 1024),
            ..CreateOptions::default()
        };
        let m = create_torrent(&set, &opts, &|_| {}).unwrap().metainfo;
        let g = m.info.geometry().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let all = vec![true; m.info.files.len()];

        // A link planted before the start, as a file or as a folder: refused.
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("set")).unwrap();
        std::os::unix::fs::symlink(&victim, out.path().join("set/a.bin")).unwrap();
        let err = FileStorage::create(out.path(), &m, &all).err().unwrap();
        assert!(
            err.to_string().contains("outside the download folder"),
            "{err}"
        );
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("set")).unwrap();
        std::os::unix::fs::symlink(outside.path(), out.path().join("set/sub")).unwrap();
        assert!(FileStorage::create(out.path(), &m, &all).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);

        // A file swapped for a link after the start: no write goes through it, and
        // reads come from the file first opened.
        let out = tempfile::tempdir().unwrap();
        let s = FileStorage::create(out.path(), &m, &all).unwrap();
        let first = g.piece(0).unwrap();
        s.write_piece(first, &[1u8; 16 * 1024]).unwrap();
        let a = out.path().join("set/a.bin");
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&victim, &a).unwrap();
        let err = s
            .write_piece(g.piece(1).unwrap(), &[1u8; 16 * 1024])
            .unwrap_err();
        assert!(err.to_string().contains("was replaced"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let mut buf = [0u8; 16];
        s.read_file_at(0, 0, &mut buf).unwrap();
        assert_eq!(buf, [1u8; 16]);
        // A folder swapped for a link: refused as well.
        let sub = out.path().join("set/sub");
        std::fs::rename(&sub, out.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &sub).unwrap();
        let last = g.piece(g.piece_count() - 1).unwrap();
        assert!(s
            .write_piece(last, &vec![2u8; g.piece_size(last) as usize])
            .is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    /// A two-file torrent `set/{a.bin, sub/b.bin}` (16 KiB pieces).
    fn two_files() -> (tempfile::TempDir, Metainfo) {
        let src = tempfile::tempdir().unwrap();
        let set = src.path().join("set");
        std::fs::create_dir_all(set.join("sub")).unwrap();
        std::fs::write(set.join("a.bin"), vec![1u8; 40_000]).unwrap();
        std::fs::write(set.join("sub/b.bin"), vec![2u8; 40_000]).unwrap();
        let opts = CreateOptions {
            piece_length: Some(16 * 1024),
            ..CreateOptions::default()
        };
        let m = create_torrent(&set, &opts, &|_| {}).unwrap().metainfo;
        (src, m)
    }

    #[test]
    fn hard_linked_files_are_never_written_but_may_be_seeded() {
        let (src, m) = two_files();
        let all = vec![true; m.info.files.len()];
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("set")).unwrap();
        std::fs::hard_link(&victim, out.path().join("set/a.bin")).unwrap();
        let err = FileStorage::create(out.path(), &m, &all).err().unwrap();
        assert!(err.to_string().contains("hard links"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // Seeding only reads: a file with two names is fine.
        std::fs::hard_link(src.path().join("set/a.bin"), outside.path().join("a2")).unwrap();
        let s = FileStorage::open_existing(src.path(), &m).unwrap();
        let mut buf = [0u8; 4];
        s.read_file_at(0, 0, &mut buf).unwrap();
        assert_eq!(buf, [1u8; 4]);
    }

    #[test]
    fn a_file_where_a_folder_belongs_is_named_as_such() {
        let (_src, m) = two_files();
        let all = vec![true; m.info.files.len()];
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("set")).unwrap();
        std::fs::write(out.path().join("set/sub"), b"a plain file").unwrap();
        let err = FileStorage::create(out.path(), &m, &all).err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("sub is a file where the torrent has a folder"),
            "{msg}"
        );
        assert!(!msg.contains("outside"), "{msg}");
        // A folder where a file belongs.
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("set/a.bin")).unwrap();
        let msg = FileStorage::create(out.path(), &m, &all)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
    }
}

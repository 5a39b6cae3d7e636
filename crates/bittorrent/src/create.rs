//! Creating v1 `.torrent` files from a file or a directory.
//!
//! The output is deterministic: files in byte order of their paths, keys sorted, and no
//! creation date unless one is asked for, so the same input always gives the same
//! infohash. Pieces are hashed in parallel, one contiguous range of pieces per thread,
//! each thread reading its own range with positional reads.
//!
//! Piece length, when not given: the smallest power of two from 256 KiB to 16 MiB that
//! keeps the torrent at no more than 2048 pieces. 256 KiB as the floor keeps every
//! 256 KiB UnixFS chunk of a single-file torrent inside one piece.
//!
//! Symbolic links and special files inside a directory are skipped (and listed in
//! [`Created::skipped`]); empty directories cannot be expressed in a torrent. A name
//! that BitTorrent clients would store differently (a backslash, a control or invisible
//! character, more than 240 bytes) is an error: the torrent would not describe the
//! files as they are.

use crate::bencode::OwnedValue;
use crate::geometry::{FileMap, Geometry};
use crate::metainfo::{Metainfo, MetainfoError};
use sha1::{Digest, Sha1};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MIN_AUTO_PIECE_LENGTH: u64 = 256 << 10;
pub const MAX_AUTO_PIECE_LENGTH: u64 = 16 << 20;
pub const AUTO_MAX_PIECES: u64 = 2048;

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Piece length in bytes; chosen by [`auto_piece_length`] when `None`.
    pub piece_length: Option<u64>,
    /// Tracker tiers (BEP 12); each inner list is one tier.
    pub trackers: Vec<Vec<String>>,
    /// BEP 19 web seeds.
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    /// `created by`; `btfs/<version>` when `None`.
    pub created_by: Option<String>,
    /// `creation date` (seconds since the epoch); omitted when `None`.
    pub creation_date: Option<i64>,
    /// Hashing threads; the number of cores when `None`.
    pub threads: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: file name is not UTF-8")]
    NotUtf8(PathBuf),
    #[error("{path}: BitTorrent clients would store this name as {stored:?} (it has a separator, a control or invisible character, or is too long); rename it")]
    UnsafeName { path: PathBuf, stored: String },
    #[error("{0}: nothing to share (no data in any file)")]
    Empty(PathBuf),
    #[error("piece length {0} is invalid: it must be a power of two from 16 KiB to 512 MiB")]
    PieceLength(u64),
    #[error("{path} changed while it was hashed ({reason})")]
    Changed { path: PathBuf, reason: String },
    #[error("the created torrent did not parse back: {0}")]
    Invalid(#[from] MetainfoError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The torrent made by [`create_torrent`].
#[derive(Debug)]
pub struct Created {
    /// The `.torrent` file's bytes.
    pub bytes: Vec<u8>,
    /// The same torrent, parsed.
    pub metainfo: Metainfo,
    /// Entries of a directory that were left out (symlinks, sockets, ...).
    pub skipped: Vec<PathBuf>,
}

/// A file found for the torrent.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    /// Components below the root (the file name for a single file).
    components: Vec<String>,
    length: u64,
}

/// See the module documentation for the rule.
pub fn auto_piece_length(total: u64) -> u64 {
    let mut p = MIN_AUTO_PIECE_LENGTH;
    while p < MAX_AUTO_PIECE_LENGTH && total.div_ceil(p) > AUTO_MAX_PIECES {
        p *= 2;
    }
    p
}

/// Creates a torrent of `path` (a file or a directory). `progress` is called from the
/// hashing threads with the number of bytes just hashed.
pub fn create_torrent(
    path: &Path,
    opts: &CreateOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Created, CreateError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let name = torrent_name(path)?;
    let mut skipped = Vec::new();
    let (sources, single) = if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut Vec::new(), &mut files, &mut skipped)?;
        files.sort_by(|a, b| a.components.cmp(&b.components));
        (files, false)
    } else {
        let source = Source {
            path: path.to_owned(),
            components: vec![name.clone()],
            length: meta.len(),
        };
        (vec![source], true)
    };
    let total: u64 = sources.iter().map(|s| s.length).sum();
    if total == 0 {
        return Err(CreateError::Empty(path.to_owned()));
    }
    let piece_length = match opts.piece_length {
        Some(p) if p.is_power_of_two() && (16 << 10..=512 << 20).contains(&p) => p,
        Some(p) => return Err(CreateError::PieceLength(p)),
        None => auto_piece_length(total),
    };
    let pieces = hash_pieces(&sources, piece_length, opts.threads, progress)?;

    let files: Vec<(Vec<String>, u64)> = sources
        .iter()
        .map(|s| (s.components.clone(), s.length))
        .collect();
    let (bytes, metainfo) = assemble(&name, single, &files, piece_length, pieces, opts)?;
    Ok(Created {
        bytes,
        metainfo,
        skipped,
    })
}

/// The torrent file for content already hashed: `files` in torrent order (path below
/// the root, length; one entry for a single-file torrent) and the concatenated SHA-1
/// piece hashes.
pub fn assemble(
    name: &str,
    single: bool,
    files: &[(Vec<String>, u64)],
    piece_length: u64,
    pieces: Vec<u8>,
    opts: &CreateOptions,
) -> Result<(Vec<u8>, Metainfo), CreateError> {
    let mut info = vec![
        ("name", OwnedValue::bytes(name.as_bytes())),
        ("piece length", OwnedValue::Int(piece_length.to_string())),
        ("pieces", OwnedValue::Bytes(pieces)),
    ];
    if single {
        let total: u64 = files.iter().map(|f| f.1).sum();
        info.push(("length", OwnedValue::Int(total.to_string())));
    } else {
        let files = files
            .iter()
            .map(|(components, length)| {
                OwnedValue::dict([
                    ("length", OwnedValue::Int(length.to_string())),
                    (
                        "path",
                        OwnedValue::List(
                            components
                                .iter()
                                .map(|c| OwnedValue::bytes(c.as_bytes()))
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect();
        info.push(("files", OwnedValue::List(files)));
    }
    if opts.private {
        info.push(("private", OwnedValue::int(1)));
    }

    let mut root = vec![("info", OwnedValue::dict(info))];
    let tiers: Vec<Vec<String>> = opts
        .trackers
        .iter()
        .map(|t| {
            t.iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        root.push(("announce", OwnedValue::bytes(first.as_bytes())));
    }
    if tiers.iter().map(Vec::len).sum::<usize>() > 1 {
        let list = tiers
            .iter()
            .map(|t| OwnedValue::List(t.iter().map(|u| OwnedValue::bytes(u.as_bytes())).collect()))
            .collect();
        root.push(("announce-list", OwnedValue::List(list)));
    }
    match opts.web_seeds.as_slice() {
        [] => {}
        [one] => root.push(("url-list", OwnedValue::bytes(one.as_bytes()))),
        many => root.push((
            "url-list",
            OwnedValue::List(
                many.iter()
                    .map(|u| OwnedValue::bytes(u.as_bytes()))
                    .collect(),
            ),
        )),
    }
    if let Some(c) = &opts.comment {
        root.push(("comment", OwnedValue::bytes(c.as_bytes())));
    }
    let created_by = opts
        .created_by
        .clone()
        .unwrap_or_else(|| format!("btfs/{}", env!("CARGO_PKG_VERSION")));
    root.push(("created by", OwnedValue::bytes(created_by.into_bytes())));
    if let Some(d) = opts.creation_date {
        root.push(("creation date", OwnedValue::int(d)));
    }
    let bytes = OwnedValue::dict(root).encode();
    let metainfo = Metainfo::from_bytes(&bytes)?;
    stored_as_written(&metainfo)?;
    Ok((bytes, metainfo))
}

/// Every name of a torrent btfs makes is stored as it is written, by btfs as by other
/// clients (see [`crate::metainfo::sanitize`]): otherwise the files would not be where
/// the torrent says, for `serve --cid` (which names files from the store) as for
/// others. Refuses a name that would be rewritten, and files whose paths differ only in
/// ASCII case (renamed on load).
fn stored_as_written(m: &Metainfo) -> Result<(), CreateError> {
    let info = &m.info;
    if info.stored_name != info.name {
        return Err(CreateError::UnsafeName {
            path: PathBuf::from(&info.name),
            stored: info.stored_name.clone(),
        });
    }
    match info.files.iter().find(|f| f.stored != f.path) {
        Some(f) if !info.single_file => Err(CreateError::UnsafeName {
            path: PathBuf::from(f.path.join("/")),
            stored: f.stored.join("/"),
        }),
        _ => Ok(()),
    }
}

fn torrent_name(path: &Path) -> Result<String, CreateError> {
    let canonical = path.canonicalize().map_err(io_err(path))?;
    let name = canonical.file_name().ok_or_else(|| CreateError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "has no name to give the torrent",
        ),
    })?;
    let name = name
        .to_str()
        .ok_or_else(|| CreateError::NotUtf8(path.to_owned()))?;
    checked_name(path, name)
}

/// A name every client stores as it is (see [`crate::metainfo::sanitize`]), so the
/// files of the torrent are where the torrent says, for btfs `serve` as for others.
fn checked_name(path: &Path, name: &str) -> Result<String, CreateError> {
    match crate::metainfo::sanitize::component(name.as_bytes()) {
        Some(stored) if stored == name => Ok(stored),
        stored => Err(CreateError::UnsafeName {
            path: path.to_owned(),
            stored: stored.unwrap_or_default(),
        }),
    }
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<Source>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), CreateError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err(&path))?;
        let name = entry.file_name();
        let Ok(name) = std::str::from_utf8(name.as_bytes()) else {
            return Err(CreateError::NotUtf8(path));
        };
        if ft.is_dir() {
            prefix.push(checked_name(&path, name)?);
            walk(&path, prefix, out, skipped)?;
            prefix.pop();
        } else if ft.is_file() {
            let length = entry.metadata().map_err(io_err(&path))?.len();
            let mut components = prefix.clone();
            components.push(checked_name(&path, name)?);
            out.push(Source {
                path,
                components,
                length,
            });
        } else {
            skipped.push(path);
        }
    }
    Ok(())
}

/// Hashes all pieces; returns the concatenated SHA-1 digests.
fn hash_pieces(
    sources: &[Source],
    piece_length: u64,
    threads: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<u8>, CreateError> {
    let total = sources.iter().map(|s| s.length).sum();
    let geometry = Geometry::new(total, piece_length).map_err(|e| CreateError::Changed {
        path: PathBuf::new(),
        reason: e.to_string(),
    })?;
    let lengths: Vec<u64> = sources.iter().map(|s| s.length).collect();
    // The lengths sum to `total` by construction.
    let map = FileMap::new(geometry, &lengths).ok_or_else(|| CreateError::Changed {
        path: PathBuf::new(),
        reason: "file lengths do not add up".into(),
    })?;
    let count = geometry.piece_count() as usize;
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, count);
    let mut digests = vec![0u8; count * 20];
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = digests
            .chunks_mut(per_thread * 20)
            .enumerate()
            .map(|(t, out)| {
                let map = &map;
                scope.spawn(move || hash_range(sources, map, t * per_thread, out, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(CreateError::Changed {
                        path: PathBuf::new(),
                        reason: "a hashing thread panicked".into(),
                    })
                })
            })
            .collect::<Result<Vec<()>, _>>()
    })?;
    // Files that grew while hashing would give a torrent that does not match them.
    for s in sources {
        let now = std::fs::metadata(&s.path).map_err(io_err(&s.path))?.len();
        if now != s.length {
            return Err(CreateError::Changed {
                path: s.path.clone(),
                reason: format!("its size went from {} to {now} bytes", s.length),
            });
        }
    }
    Ok(digests)
}

/// Hashes pieces `first..first + out.len()/20` into `out`.
fn hash_range(
    sources: &[Source],
    map: &FileMap,
    first: usize,
    out: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), CreateError> {
    let geometry = map.geometry();
    let mut buf = vec![0u8; geometry.piece_length() as usize];
    let mut open: Option<(usize, File)> = None;
    for (i, digest) in out.chunks_exact_mut(20).enumerate() {
        let Some(piece) = geometry.piece((first + i) as u32) else {
            break;
        };
        let size = geometry.piece_size(piece) as usize;
        for slice in map.slices(piece) {
            let src = &sources[slice.file_index];
            if open.as_ref().map(|(i, _)| *i) != Some(slice.file_index) {
                open = Some((
                    slice.file_index,
                    File::open(&src.path).map_err(io_err(&src.path))?,
                ));
            }
            let Some((_, file)) = &open else { continue };
            let dst =
                &mut buf[slice.piece_offset as usize..(slice.piece_offset + slice.len) as usize];
            file.read_exact_at(dst, slice.file_offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    CreateError::Changed {
                        path: src.path.clone(),
                        reason: "it became shorter".into(),
                    }
                } else {
                    io_err(&src.path)(e)
                }
            })?;
        }
        digest.copy_from_slice(&Sha1::digest(&buf[..size]));
        progress(size as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rule() {
        assert_eq!(auto_piece_length(1), 256 << 10);
        assert_eq!(auto_piece_length(512 << 20), 256 << 10);
        assert_eq!(auto_piece_length((512 << 20) + 1), 512 << 10);
        assert_eq!(auto_piece_length(1 << 30), 512 << 10);
        assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    }

    fn write(dir: &Path, rel: &str, data: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn single_file_hashes_match_a_direct_sha1() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        write(dir.path(), "a.bin", &data);
        let opts = CreateOptions {
            piece_length: Some(16 << 10),
            threads: Some(3),
            ..Default::default()
        };
        let c = create_torrent(&dir.path().join("a.bin"), &opts, &|_| {}).unwrap();
        let m = &c.metainfo;
        assert!(m.info.single_file);
        assert_eq!(m.info.name, "a.bin");
        assert_eq!(m.info.pieces.len(), 7);
        for (i, chunk) in data.chunks(16 << 10).enumerate() {
            assert_eq!(m.info.pieces[i], <[u8; 20]>::from(Sha1::digest(chunk)));
        }
        // One thread gives the same bytes.
        let one = create_torrent(
            &dir.path().join("a.bin"),
            &CreateOptions {
                threads: Some(1),
                ..opts
            },
            &|_| {},
        )
        .unwrap();
        assert_eq!(one.bytes, c.bytes);
    }

    #[test]
    fn directory_is_sorted_and_pieces_span_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        write(&root, "b/z.txt", &[1u8; 20_000]);
        write(&root, "a.txt", &[2u8; 30_000]);
        write(&root, "b/empty", b"");
        write(&root, "c", &[3u8; 5]);
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let opts = CreateOptions {
            piece_length: Some(16 << 10),
            trackers: vec![
                vec!["http://127.0.0.1:1/announce".into()],
                vec!["udp://127.0.0.1:2".into()],
            ],
            web_seeds: vec!["http://127.0.0.1:3/".into()],
            private: true,
            ..Default::default()
        };
        let c = create_torrent(&root, &opts, &|_| {}).unwrap();
        let m = &c.metainfo;
        let paths: Vec<String> = m.info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, vec!["a.txt", "b/empty", "b/z.txt", "c"]);
        assert_eq!(c.skipped, vec![root.join("link")]);
        assert!(m.info.private);
        assert_eq!(m.announce.as_deref(), Some("http://127.0.0.1:1/announce"));
        assert_eq!(m.announce_list.len(), 2);
        assert_eq!(m.url_list, vec!["http://127.0.0.1:3/"]);
        let mut all = vec![2u8; 30_000];
        all.extend([1u8; 20_000]);
        all.extend([3u8; 5]);
        for (i, chunk) in all.chunks(16 << 10).enumerate() {
            assert_eq!(m.info.pieces[i], <[u8; 20]>::from(Sha1::digest(chunk)));
        }
    }

    #[test]
    fn refuses_empty_and_bad_piece_length() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "e", b"");
        assert!(matches!(
            create_torrent(&dir.path().join("e"), &CreateOptions::default(), &|_| {}),
            Err(CreateError::Empty(_))
        ));
        write(dir.path(), "f", b"x");
        let opts = CreateOptions {
            piece_length: Some(1000),
            ..Default::default()
        };
        assert!(matches!(
            create_torrent(&dir.path().join("f"), &opts, &|_| {}),
            Err(CreateError::PieceLength(1000))
        ));
    }

    #[test]
    fn refuses_names_that_clients_would_store_differently() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d/ok.txt", b"x");
        write(dir.path(), "d/back\\slash.txt", b"y");
        let e =
            create_torrent(&dir.path().join("d"), &CreateOptions::default(), &|_| {}).unwrap_err();
        assert!(
            matches!(&e, CreateError::UnsafeName { stored, .. } if stored == "backslash.txt"),
            "{e}"
        );
        write(dir.path(), "ctl\x07", b"z");
        assert!(matches!(
            create_torrent(
                &dir.path().join("ctl\x07"),
                &CreateOptions::default(),
                &|_| {}
            ),
            Err(CreateError::UnsafeName { .. })
        ));
        // Two names that differ only in case are one file for clients that ignore case
        // (libtorrent renames the second).
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c/A.txt", b"x");
        write(dir.path(), "c/a.txt", b"y");
        let e =
            create_torrent(&dir.path().join("c"), &CreateOptions::default(), &|_| {}).unwrap_err();
        assert!(
            matches!(&e, CreateError::UnsafeName { stored, .. } if stored == "a.1.txt"),
            "{e}"
        );
    }

    /// `assemble` (what `serve --cid` uses, with names from the store) checks the names
    /// itself.
    #[test]
    fn assemble_refuses_names_that_clients_would_store_differently() {
        let opts = CreateOptions::default();
        let one = |name: &str, files: &[(Vec<String>, u64)], single| {
            assemble(name, single, files, 16384, vec![0; 20], &opts).map(|_| ())
        };
        let file = |p: &[&str]| (p.iter().map(|c| c.to_string()).collect(), 1);
        assert!(one("ok", &[file(&["a"]), file(&["b"])], false).is_ok());
        for (name, files, single, stored) in [
            ("a/b", vec![file(&["a/b"])], true, "ab"),
            ("..", vec![file(&["x"]), file(&["y"])], false, ""),
            ("ok", vec![file(&["..", "x"]), file(&["y"])], false, "x"),
            ("ok", vec![file(&["d\\x"]), file(&["y"])], false, "dx"),
            ("ok", vec![file(&["D"]), file(&["d", "x"])], false, "D.1"),
            ("ok", vec![file(&["x"]), file(&["X"])], false, "X.1"),
        ] {
            let e = one(name, &files, single).unwrap_err();
            match &e {
                CreateError::UnsafeName { stored: s, .. } if stored.is_empty() => {
                    assert_eq!(s.len(), 40, "{e}")
                }
                CreateError::UnsafeName { stored: s, .. } => assert_eq!(s, stored, "{e}"),
                _ => panic!("{name} {files:?}: {e}"),
            }
        }
    }
}

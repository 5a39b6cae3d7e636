//! The files of a torrent: v1 `length` / `files`, the v2 `file tree`, BEP 47
//! attributes, and the path each file is stored under.
//!
//! Policy:
//! - Names are kept as written ([`FileEntry::path`], [`FileEntry::path_utf8`]) for
//!   display, and every file gets a stored path ([`FileEntry::stored`]): the path
//!   rewritten by [`sanitize::path`], then renamed when another file or a folder already
//!   has it, ignoring ASCII case. Storage, the bridge, `serve` and the output use the
//!   stored path; web seeds the rewritten path before renaming, as libtorrent does
//!   ([`FileEntry::web_seed_path`]); the infohash covers the bytes as written. Every
//!   rewrite is a warning.
//! - Memory stays proportional to the torrent whatever it lists: a name as written is at
//!   most [`MAX_WRITTEN_NAME_BYTES`], and the paths of all files together (as written,
//!   `path.utf-8`, stored, symlink targets) at most [`MAX_PATHS_BYTES`], counted as they
//!   are made, so a deep or wide tree of many files is refused before it costs more.
//!   Field names and warnings are only formatted when they are reported.
//! - A symlink (`attr` holding `l`) carries no data: its length is 0 whatever `length`
//!   says, and it needs no `length` nor `pieces root`. Without a `symlink path` it is a
//!   regular (empty) file, as in libtorrent.
//! - A v1 pad file may omit its path (it is `.pad/<length>` then); pad files are never
//!   written, so they take no stored path from real files. A v2 file tree has no pad
//!   files: one is refused, as libtorrent refuses it.

use super::sanitize::{self, StoredPaths};
use super::{invalid, length, FileAttr, FileEntry, MetainfoError, Warnings};
use crate::bencode::{Kind, Value};

/// Longest name a torrent may write for a file, a folder or a symlink target component,
/// in bytes. A stored name is at most 255 bytes; a longer name only makes every copy of
/// the path larger. libtorrent accepts longer ones (and cuts them); no real torrent has
/// them.
pub const MAX_WRITTEN_NAME_BYTES: usize = 4096;

/// Most memory the file paths of one torrent may take, as [`PathBudget`] counts it. A
/// 16 MiB torrent of half a million short paths takes about 80 MiB; a v2 tree that
/// repeats deep folders for every file can list far more, and is refused.
pub const MAX_PATHS_BYTES: usize = 128 << 20;

/// Bytes counted for each path and each component besides its text: what a `Vec` and a
/// `String` take on the heap and beside it.
const PATH_OVERHEAD_BYTES: usize = 32;

/// The field a file is read from, formatted only when an error or a warning names it.
type Field<'f> = &'f dyn Fn() -> String;

/// The bytes of a string field.
pub(super) fn bytes<'a>(v: &Value<'a>, field: &str) -> Result<&'a [u8], MetainfoError> {
    v.as_bytes().ok_or_else(|| {
        invalid(
            field,
            v,
            format!("expected a string, found {}", v.type_name()),
        )
    })
}

/// A name as written, for display: bytes that are not UTF-8 as U+FFFD.
pub(super) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn lossy_path(raw: &[&[u8]]) -> Vec<String> {
    raw.iter().map(|c| lossy(c)).collect()
}

/// At most 64 bytes of a name, for an error message.
fn shown(raw: &[u8]) -> String {
    if raw.len() <= 64 {
        lossy(raw)
    } else {
        format!("{}…", String::from_utf8_lossy(&raw[..64]))
    }
}

/// A name as written, refused when longer than [`MAX_WRITTEN_NAME_BYTES`].
fn written_name<'a>(
    raw: &'a [u8],
    v: &Value<'_>,
    field: Field<'_>,
) -> Result<&'a [u8], MetainfoError> {
    if raw.len() > MAX_WRITTEN_NAME_BYTES {
        return Err(invalid(
            field(),
            v,
            format!(
                "a name of {} bytes starting {:?}: names longer than {MAX_WRITTEN_NAME_BYTES} bytes are refused",
                raw.len(),
                shown(raw)
            ),
        ));
    }
    Ok(raw)
}

/// The components of a path list; `allow_empty` for symlink targets.
fn components<'a>(
    v: &Value<'a>,
    field: Field<'_>,
    allow_empty: bool,
) -> Result<Vec<&'a [u8]>, MetainfoError> {
    let items = v.as_list().ok_or_else(|| {
        invalid(
            field(),
            v,
            format!("expected a list, found {}", v.type_name()),
        )
    })?;
    if items.is_empty() && !allow_empty {
        return Err(invalid(field(), v, "empty path"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = || format!("{}[{i}]", field());
            written_name(bytes(c, &at())?, c, &at)
        })
        .collect()
}

/// What the paths made so far take; refuses a torrent past [`MAX_PATHS_BYTES`].
struct PathBudget {
    left: usize,
}

impl PathBudget {
    fn spend(
        &mut self,
        path: &[String],
        v: &Value<'_>,
        field: Field<'_>,
    ) -> Result<(), MetainfoError> {
        let cost = path
            .iter()
            .map(|c| c.len() + PATH_OVERHEAD_BYTES)
            .sum::<usize>()
            + PATH_OVERHEAD_BYTES;
        self.left = self.left.checked_sub(cost).ok_or_else(|| {
            invalid(
                field(),
                v,
                format!(
                    "the file paths of this torrent take more than {} MiB; refused",
                    MAX_PATHS_BYTES >> 20
                ),
            )
        })?;
        Ok(())
    }
}

/// Reads the file lists of one torrent, counting what their paths take.
pub(super) struct FileReader<'w> {
    w: &'w mut Warnings,
    budget: PathBudget,
}

impl<'w> FileReader<'w> {
    pub(super) fn new(w: &'w mut Warnings) -> Self {
        FileReader {
            w,
            budget: PathBudget {
                left: MAX_PATHS_BYTES,
            },
        }
    }

    /// Counts the paths of `f` against [`MAX_PATHS_BYTES`].
    fn spend(
        &mut self,
        f: &FileEntry,
        v: &Value<'_>,
        field: Field<'_>,
    ) -> Result<(), MetainfoError> {
        self.budget.spend(&f.path, v, field)?;
        self.budget.spend(&f.stored, v, field)?;
        if let Some(p) = &f.path_utf8 {
            self.budget.spend(p, v, field)?;
        }
        if let Some(t) = &f.attr.symlink {
            self.budget.spend(t, v, field)?;
        }
        Ok(())
    }

    /// BEP 47 attributes.
    fn attr(&mut self, file: &Value<'_>, field: Field<'_>) -> Result<FileAttr, MetainfoError> {
        let mut a = FileAttr::default();
        let Some(v) = file.get(b"attr") else {
            return Ok(a);
        };
        let Some(s) = v.as_bytes() else {
            self.w.push_with(|| {
                format!(
                    "{}.attr (byte {}): not a string; ignored",
                    field(),
                    v.offset
                )
            });
            return Ok(a);
        };
        a.pad = s.contains(&b'p');
        a.executable = s.contains(&b'x');
        a.hidden = s.contains(&b'h');
        if s.contains(&b'l') {
            match file.get(b"symlink path") {
                Some(t) => {
                    let at = || format!("{}.symlink path", field());
                    let target = components(t, &at, true)?;
                    a.symlink = Some(sanitize::symlink_target(&target));
                }
                None => self.w.push_with(|| {
                    format!(
                        "{}: a symlink without \"symlink path\"; read as an empty regular file",
                        field()
                    )
                }),
            }
        }
        Ok(a)
    }

    /// A file's length: 0 for a symlink, whatever it claims (with a warning when it
    /// claims data), and so also for `attr` with `l` but no target, as in libtorrent.
    fn file_length(&mut self, f: &Value<'_>, field: Field<'_>) -> Result<u64, MetainfoError> {
        let symlink = f
            .get(b"attr")
            .and_then(Value::as_bytes)
            .is_some_and(|a| a.contains(&b'l'));
        if symlink {
            if let Some(n) = f.get(b"length").and_then(Value::as_i64).filter(|&n| n != 0) {
                self.w.push_with(|| {
                    format!(
                        "{}: a symlink carries no data; its length {n} is ignored",
                        field()
                    )
                });
            }
            return Ok(0);
        }
        let v = f
            .get(b"length")
            .ok_or_else(|| invalid(field(), f, "missing required key \"length\""))?;
        length(v, &format!("{}.length", field()))
    }

    /// v1 `length` (single file) or `files` (multi-file), offsets set. `name` and
    /// `name_utf8` are the torrent's name as written.
    pub(super) fn v1_files(
        &mut self,
        info: &Value<'_>,
        name: &str,
        name_utf8: Option<&str>,
    ) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
        match (info.get(b"length"), info.get(b"files")) {
            (Some(_), None) => {
                let field = || "info".to_owned();
                let attr = self.attr(info, &field)?;
                let length = self.file_length(info, &field)?;
                Ok((
                    vec![FileEntry {
                        path: vec![name.to_owned()],
                        path_utf8: name_utf8.map(|n| vec![n.to_owned()]),
                        stored: Vec::new(),
                        renamed_from: None,
                        length,
                        offset: 0,
                        attr,
                        pieces_root: None,
                    }],
                    true,
                ))
            }
            (None, Some(files_v)) => {
                let list = files_v.as_list().ok_or_else(|| {
                    invalid(
                        "info.files",
                        files_v,
                        format!("expected a list, found {}", files_v.type_name()),
                    )
                })?;
                if list.is_empty() {
                    return Err(invalid("info.files", files_v, "no files"));
                }
                let mut files = Vec::with_capacity(list.len());
                let mut offset = 0u64;
                for (i, f) in list.iter().enumerate() {
                    let field = || format!("info.files[{i}]");
                    let mut file = self.v1_file(f, &field)?;
                    file.offset = offset;
                    offset = offset
                        .checked_add(file.length)
                        .ok_or_else(|| invalid(field(), f, "total length overflows"))?;
                    files.push(file);
                }
                Ok((files, false))
            }
            (Some(v), Some(_)) => Err(invalid("info", v, "has both \"length\" and \"files\"")),
            (None, None) => Err(invalid(
                "info",
                info,
                "missing \"length\" (single file) or \"files\" (multi-file)",
            )),
        }
    }

    /// One entry of v1 `files` (offset left at 0).
    fn v1_file(&mut self, f: &Value<'_>, field: Field<'_>) -> Result<FileEntry, MetainfoError> {
        if f.as_dict().is_none() {
            return Err(invalid(
                field(),
                f,
                format!("expected a dictionary, found {}", f.type_name()),
            ));
        }
        let attr = self.attr(f, field)?;
        let length = self.file_length(f, field)?;
        let raw = match f.get(b"path") {
            Some(v) => Some(components(v, &|| format!("{}.path", field()), false)?),
            None if attr.pad => None,
            None => return Err(invalid(field(), f, "missing required key \"path\"")),
        };
        let raw_utf8 = match f.get(b"path.utf-8") {
            Some(v) if matches!(v.kind, Kind::List(_)) => {
                Some(components(v, &|| format!("{}.path.utf-8", field()), false)?)
            }
            Some(v) => {
                self.w.push_with(|| {
                    format!(
                        "{}.path.utf-8 (byte {}): not a list; ignored",
                        field(),
                        v.offset
                    )
                });
                None
            }
            None => None,
        };
        let (path, stored) = match (&raw_utf8, &raw) {
            (Some(p), _) | (None, Some(p)) => (
                raw.as_deref().map_or_else(|| lossy_path(p), lossy_path),
                sanitize::path(p),
            ),
            // A pad file without a path, named as libtorrent names it.
            (None, None) => {
                let p = vec![".pad".to_owned(), length.to_string()];
                (p.clone(), p)
            }
        };
        let file = FileEntry {
            path,
            path_utf8: raw_utf8.as_deref().map(lossy_path),
            stored,
            renamed_from: None,
            length,
            offset: 0,
            attr,
            pieces_root: None,
        };
        self.spend(&file, f, field)?;
        Ok(file)
    }

    /// Walks a v2 `file tree`, appending its files in tree order. `prefix` holds the
    /// names of the folders above `node`.
    pub(super) fn walk_file_tree<'a>(
        &mut self,
        node: &Value<'a>,
        prefix: &mut Vec<&'a [u8]>,
        out: &mut Vec<FileEntry>,
    ) -> Result<(), MetainfoError> {
        let entries = node.as_dict().ok_or_else(|| {
            invalid(
                tree_field(prefix),
                node,
                format!("expected a dictionary, found {}", node.type_name()),
            )
        })?;
        for (key, child) in entries {
            if key.is_empty() {
                // A file: {"": {length, pieces root}}; only valid below a name.
                if prefix.is_empty() || entries.len() != 1 {
                    return Err(invalid(
                        tree_field(prefix),
                        node,
                        "a file entry must be the only key of its node",
                    ));
                }
                let file = self.v2_file(child, prefix)?;
                out.push(file);
                continue;
            }
            let key = written_name(key, child, &|| tree_field(prefix))?;
            prefix.push(key);
            self.walk_file_tree(child, prefix, out)?;
            prefix.pop();
        }
        Ok(())
    }

    /// The leaf of a v2 file tree at `path`.
    fn v2_file(&mut self, leaf: &Value<'_>, path: &[&[u8]]) -> Result<FileEntry, MetainfoError> {
        let field = || format!("{}[\"\"]", tree_field(path));
        if leaf.as_dict().is_none() {
            return Err(invalid(field(), leaf, "expected a dictionary"));
        }
        let attr = self.attr(leaf, &field)?;
        if attr.pad {
            return Err(invalid(
                field(),
                leaf,
                "a pad file in a v2 file tree (v2 files need no padding); refused, as libtorrent refuses it",
            ));
        }
        let length = self.file_length(leaf, &field)?;
        let pieces_root = match leaf.get(b"pieces root") {
            _ if length == 0 => None,
            Some(r) => {
                let b = r.as_bytes().filter(|b| b.len() == 32).ok_or_else(|| {
                    invalid(format!("{}.pieces root", field()), r, "expected 32 bytes")
                })?;
                let mut h = [0u8; 32];
                h.copy_from_slice(b);
                Some(h)
            }
            None => {
                return Err(invalid(
                    field(),
                    leaf,
                    "missing \"pieces root\" for a non-empty file",
                ))
            }
        };
        let file = FileEntry {
            path: lossy_path(path),
            path_utf8: None,
            stored: sanitize::path(path),
            renamed_from: None,
            length,
            offset: 0,
            attr,
            pieces_root,
        };
        self.spend(&file, leaf, &field)?;
        Ok(file)
    }
}

/// The field of a node of the file tree, e.g. `info.file tree/folder/file`.
fn tree_field(path: &[&[u8]]) -> String {
    let mut f = "info.file tree".to_owned();
    for c in path {
        f.push('/');
        f.push_str(&shown(c));
    }
    f
}

/// Gives every file its stored path: the stored name for a single file; otherwise the
/// rewritten components, renamed when taken. Each change is a warning.
pub(super) fn assign_stored(
    files: &mut [FileEntry],
    single: bool,
    stored_name: &str,
    w: &mut Warnings,
) {
    if single {
        if let Some(f) = files.first_mut() {
            f.stored = vec![stored_name.to_owned()];
        }
        return;
    }
    let mut taken = StoredPaths::with_folders(
        files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| f.stored.as_slice()),
    );
    for (i, f) in files.iter_mut().enumerate() {
        if f.attr.pad {
            continue;
        }
        let before = f.stored.last().cloned();
        taken.claim(&mut f.stored);
        if f.stored.last() != before.as_ref() {
            f.renamed_from = before;
        }
        if f.stored != f.torrent_path() {
            w.push_with(|| {
                format!(
                    "file {i}: {:?} is stored as {:?}",
                    f.torrent_path().join("/"),
                    f.stored.join("/")
                )
            });
        }
    }
}

/// The stored paths stay inside the download folder and name one file each: every
/// component is a safe name, no two files share a path and no file is another's folder,
/// ignoring ASCII case. Pad files are never written, so they are exempt.
pub(super) fn check_stored(files: &[FileEntry], info: &Value<'_>) -> Result<(), MetainfoError> {
    let real = || files.iter().filter(|f| !f.attr.pad);
    if let Some(bad) =
        real().find(|f| f.stored.is_empty() || !f.stored.iter().all(|c| sanitize::is_safe(c)))
    {
        return Err(invalid(
            "info.files",
            info,
            format!("unsafe stored path {:?}", bad.stored.join("/")),
        ));
    }
    let mut taken = StoredPaths::with_folders(real().map(|f| f.stored.as_slice()));
    if let Some(dup) = real().find(|f| !taken.try_claim(&f.stored)) {
        return Err(invalid(
            "info.files",
            info,
            format!(
                "two files, or a file and a folder, are stored as {:?} (ignoring case)",
                dup.stored.join("/")
            ),
        ));
    }
    Ok(())
}

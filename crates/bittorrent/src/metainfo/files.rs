//! The files of a torrent: v1 `length` / `files`, the v2 `file tree`, BEP 47
//! attributes, and the path each file is stored under.
//!
//! Policy:
//! - Names are kept as written ([`FileEntry::path`], [`FileEntry::path_utf8`]) for
//!   display and web seeds, and every file gets a stored path ([`FileEntry::stored`]):
//!   the path rewritten by [`sanitize::path`], then renamed when another file or a
//!   folder already has it. Storage, the bridge, `serve` and the output use the stored
//!   path; the infohash covers the bytes as written. Every rewrite is a warning.
//! - A symlink (`attr` holding `l`) carries no data: its length is 0 whatever `length`
//!   says, and it needs no `length` nor `pieces root`. Without a `symlink path` it is a
//!   regular (empty) file, as in libtorrent.
//! - A pad file may omit its path (it is `.pad/<length>` then); pad files are never
//!   written, so they take no stored path from real files.

use super::sanitize::{self, StoredPaths};
use super::{invalid, length, req, FileAttr, FileEntry, MetainfoError, Warnings};
use crate::bencode::{Kind, Value};

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

/// The components of a path list; `allow_empty` for symlink targets.
fn components<'a>(
    v: &Value<'a>,
    field: &str,
    allow_empty: bool,
) -> Result<Vec<&'a [u8]>, MetainfoError> {
    let items = v.as_list().ok_or_else(|| {
        invalid(
            field,
            v,
            format!("expected a list, found {}", v.type_name()),
        )
    })?;
    if items.is_empty() && !allow_empty {
        return Err(invalid(field, v, "empty path"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, c)| bytes(c, &format!("{field}[{i}]")))
        .collect()
}

fn stored(raw: &[&[u8]]) -> Vec<String> {
    sanitize::path(raw)
}

/// BEP 47 attributes.
fn attr(file: &Value<'_>, field: &str, w: &mut Warnings) -> Result<FileAttr, MetainfoError> {
    let mut a = FileAttr::default();
    let Some(v) = file.get(b"attr") else {
        return Ok(a);
    };
    let Some(s) = v.as_bytes() else {
        w.ignored(&format!("{field}.attr"), v, "not a string");
        return Ok(a);
    };
    a.pad = s.contains(&b'p');
    a.executable = s.contains(&b'x');
    a.hidden = s.contains(&b'h');
    if s.contains(&b'l') {
        match file.get(b"symlink path") {
            Some(t) => {
                let target = components(t, &format!("{field}.symlink path"), true)?;
                a.symlink = Some(sanitize::symlink_target(&target));
            }
            None => w.push(format!(
                "{field}: a symlink without \"symlink path\"; read as an empty regular file"
            )),
        }
    }
    Ok(a)
}

/// A file's length: 0 for a symlink, whatever it claims (with a warning when it
/// claims data), and so also for `attr` with `l` but no target, as in libtorrent.
fn file_length(f: &Value<'_>, field: &str, w: &mut Warnings) -> Result<u64, MetainfoError> {
    let symlink = f
        .get(b"attr")
        .and_then(Value::as_bytes)
        .is_some_and(|a| a.contains(&b'l'));
    if symlink {
        if let Some(n) = f.get(b"length").and_then(Value::as_i64).filter(|&n| n != 0) {
            w.push(format!(
                "{field}: a symlink carries no data; its length {n} is ignored"
            ));
        }
        return Ok(0);
    }
    length(req(f, "length", field)?, &format!("{field}.length"))
}

/// v1 `length` (single file) or `files` (multi-file), offsets set. `name` and
/// `name_utf8` are the torrent's name as written.
pub(super) fn v1_files(
    info: &Value<'_>,
    name: &str,
    name_utf8: Option<&str>,
    w: &mut Warnings,
) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    match (info.get(b"length"), info.get(b"files")) {
        (Some(_), None) => {
            let attr = attr(info, "info", w)?;
            let length = file_length(info, "info", w)?;
            Ok((
                vec![FileEntry {
                    path: vec![name.to_owned()],
                    path_utf8: name_utf8.map(|n| vec![n.to_owned()]),
                    stored: Vec::new(),
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
                let mut file = v1_file(f, &format!("info.files[{i}]"), w)?;
                file.offset = offset;
                offset = offset.checked_add(file.length).ok_or_else(|| {
                    invalid(format!("info.files[{i}]"), f, "total length overflows")
                })?;
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
fn v1_file(f: &Value<'_>, field: &str, w: &mut Warnings) -> Result<FileEntry, MetainfoError> {
    if f.as_dict().is_none() {
        return Err(invalid(
            field,
            f,
            format!("expected a dictionary, found {}", f.type_name()),
        ));
    }
    let attr = attr(f, field, w)?;
    let length = file_length(f, field, w)?;
    let raw = match f.get(b"path") {
        Some(v) => Some(components(v, &format!("{field}.path"), false)?),
        None if attr.pad => None,
        None => return Err(invalid(field, f, "missing required key \"path\"")),
    };
    let raw_utf8 = match f.get(b"path.utf-8") {
        Some(v) if matches!(v.kind, Kind::List(_)) => {
            Some(components(v, &format!("{field}.path.utf-8"), false)?)
        }
        Some(v) => {
            w.ignored(&format!("{field}.path.utf-8"), v, "not a list");
            None
        }
        None => None,
    };
    let (path, stored) = match (&raw_utf8, &raw) {
        (Some(p), _) | (None, Some(p)) => (
            raw.as_deref().map_or_else(|| lossy_path(p), lossy_path),
            stored(p),
        ),
        // A pad file without a path, named as libtorrent names it.
        (None, None) => {
            let p = vec![".pad".to_owned(), length.to_string()];
            (p.clone(), p)
        }
    };
    Ok(FileEntry {
        path,
        path_utf8: raw_utf8.as_deref().map(lossy_path),
        stored,
        length,
        offset: 0,
        attr,
        pieces_root: None,
    })
}

fn lossy_path(raw: &[&[u8]]) -> Vec<String> {
    raw.iter().map(|c| lossy(c)).collect()
}

/// Walks a v2 `file tree`, appending its files in tree order.
pub(super) fn walk_file_tree<'a>(
    node: &Value<'a>,
    prefix: &mut Vec<&'a [u8]>,
    field: &str,
    out: &mut Vec<FileEntry>,
    w: &mut Warnings,
) -> Result<(), MetainfoError> {
    let entries = node.as_dict().ok_or_else(|| {
        invalid(
            field,
            node,
            format!("expected a dictionary, found {}", node.type_name()),
        )
    })?;
    for (key, child) in entries {
        if key.is_empty() {
            // A file: {"": {length, pieces root}}; only valid below a name.
            if prefix.is_empty() || entries.len() != 1 {
                return Err(invalid(
                    field,
                    node,
                    "a file entry must be the only key of its node",
                ));
            }
            out.push(v2_file(child, prefix, &format!("{field}[\"\"]"), w)?);
            continue;
        }
        let name_field = format!("{field}/{}", String::from_utf8_lossy(key));
        prefix.push(key);
        walk_file_tree(child, prefix, &name_field, out, w)?;
        prefix.pop();
    }
    Ok(())
}

/// The leaf of a v2 file tree at `path`.
fn v2_file(
    leaf: &Value<'_>,
    path: &[&[u8]],
    f: &str,
    w: &mut Warnings,
) -> Result<FileEntry, MetainfoError> {
    if leaf.as_dict().is_none() {
        return Err(invalid(f, leaf, "expected a dictionary"));
    }
    let attr = attr(leaf, f, w)?;
    let length = file_length(leaf, f, w)?;
    let pieces_root = match leaf.get(b"pieces root") {
        _ if length == 0 => None,
        Some(r) => {
            let b = r
                .as_bytes()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| invalid(format!("{f}.pieces root"), r, "expected 32 bytes"))?;
            let mut h = [0u8; 32];
            h.copy_from_slice(b);
            Some(h)
        }
        None => {
            return Err(invalid(
                f,
                leaf,
                "missing \"pieces root\" for a non-empty file",
            ))
        }
    };
    Ok(FileEntry {
        path: lossy_path(path),
        path_utf8: None,
        stored: stored(path),
        length,
        offset: 0,
        attr,
        pieces_root,
    })
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
        taken.claim(&mut f.stored);
        if f.stored != f.torrent_path() {
            w.push(format!(
                "file {i}: {:?} is stored as {:?}",
                f.torrent_path().join("/"),
                f.stored.join("/")
            ));
        }
    }
}

/// The stored paths stay inside the download folder and name one file each: every
/// component is a plain name, no two files share a path, and no file is another's
/// folder. Pad files are never written, so they are exempt.
pub(super) fn check_stored(files: &[FileEntry], info: &Value<'_>) -> Result<(), MetainfoError> {
    let mut paths: Vec<&[String]> = files
        .iter()
        .filter(|f| !f.attr.pad)
        .map(|f| f.stored.as_slice())
        .collect();
    if let Some(bad) = paths
        .iter()
        .find(|p| p.is_empty() || !p.iter().all(|c| sanitize::is_safe(c)))
    {
        return Err(invalid(
            "info.files",
            info,
            format!("unsafe stored path {:?}", bad.join("/")),
        ));
    }
    paths.sort_unstable();
    for w in paths.windows(2) {
        if w[1].starts_with(w[0]) {
            return Err(invalid(
                "info.files",
                info,
                format!("two files are stored as {:?}", w[0].join("/")),
            ));
        }
    }
    Ok(())
}

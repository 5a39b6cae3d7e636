//! Torrent metainfo (BEP 3) with BEP 5 `nodes`, BEP 12 `announce-list`, BEP 17/19 seeds,
//! BEP 27 `private`, BEP 47 file attributes and BEP 52 (v2 and hybrid) torrents.
//!
//! This module turns untrusted `.torrent` bytes into a checked [`Metainfo`], or an error
//! that names the field and the byte offset at fault. It never touches the filesystem.
//! Submodules: [`files`] (file lists and stored paths), [`sanitize`] (safe names),
//! [`extras`] (trackers, seeds, nodes, comments).
//!
//! Policy (libtorrent's, so that a torrent other clients load loads here too):
//! - The `info` dictionary decides what is downloaded, so its structure is checked
//!   strictly: a bad piece length, a `pieces` string that is not a multiple of 20 or does
//!   not match the content length, or a missing or mistyped field is an error.
//! - File names are **rewritten, not rejected**: each file keeps its names as written
//!   and gets a stored path made of safe names (separators and invisible characters
//!   removed, control characters replaced, `.` and `..` components dropped, empty ones
//!   `_`, long names cut keeping the extension, duplicates renamed `name.1.ext`), which
//!   is checked to stay inside the download folder. Every rewrite is a warning.
//! - Fields outside `info` only help find peers, so a malformed one is skipped and
//!   reported in [`Metainfo::warnings`]; so are stray bytes after the top-level
//!   dictionary (the infohash covers `info` only).
//! - Hybrid torrents must describe the same files in their v1 and v2 parts.
//! - Work is linear in the size of the torrent (sets and maps, never pairwise scans),
//!   and a torrent is at most [`MAX_TORRENT_SIZE`] bytes.

mod extras;
mod files;
pub mod sanitize;

use crate::bencode::{self, DecodeError, Kind, Value};
use crate::geometry::{FileMap, Geometry, GeometryError, MAX_PIECE_LENGTH};
use crate::infohash::{InfoHash, InfoHashV2};
use std::collections::{BTreeMap, HashMap};

/// Largest `.torrent` accepted: 16 MiB. The largest real torrents are a few MiB
/// (libtorrent refuses more than 10 MB); metadata fetched from peers is at most 8 MiB.
pub const MAX_TORRENT_SIZE: usize = 16 << 20;

/// Most warnings kept; the rest are counted in a last one.
pub const MAX_WARNINGS: usize = 100;

/// How a `.torrent` is decoded: [`MAX_TORRENT_SIZE`] bytes, 100 levels of nesting.
const TORRENT_LIMITS: bencode::Limits = bencode::Limits {
    max_depth: 100,
    max_size: MAX_TORRENT_SIZE,
};

#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] DecodeError),
    #[error("{field} (byte {offset}): {message}")]
    Invalid {
        /// Where in the torrent, e.g. `info.files[3].path[1]`.
        field: String,
        offset: usize,
        message: String,
    },
}

fn invalid(field: impl Into<String>, v: &Value<'_>, message: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid {
        field: field.into(),
        offset: v.offset,
        message: message.into(),
    }
}

/// What was ignored or rewritten while parsing, at most [`MAX_WARNINGS`] of them.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    more: usize,
}

impl Warnings {
    fn push(&mut self, w: String) {
        self.push_with(|| w);
    }

    /// Adds the warning `w` makes, made only when it is kept (a torrent may give reasons
    /// for millions of them).
    fn push_with(&mut self, w: impl FnOnce() -> String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w());
        } else {
            self.more += 1;
        }
    }

    /// A malformed optional field, skipped.
    fn ignored(&mut self, field: &str, v: &Value<'_>, what: &str) {
        self.push(format!("{field} (byte {}): {what}; ignored", v.offset));
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list
                .push(format!("{} more warnings not shown", self.more));
        }
        self.list
    }
}

/// One file of a torrent, in torrent order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent root as written in `path` (or the name, for a
    /// single-file torrent); bytes that are not UTF-8 are shown as U+FFFD.
    pub path: Vec<String>,
    /// `path.utf-8`, when the torrent has it.
    pub path_utf8: Option<Vec<String>>,
    /// The path the file is stored under below the torrent's folder (for a single-file
    /// torrent, the stored name): safe names only, unique among the files (see
    /// [`sanitize`]).
    pub stored: Vec<String>,
    /// The last stored component before it was renamed for being taken by another file
    /// or a folder (see [`FileEntry::web_seed_path`]).
    pub renamed_from: Option<String>,
    /// Length in bytes; 0 for a symlink, which carries no data.
    pub length: u64,
    /// Offset in the v1 byte stream (pad files included); for v2-only torrents, in the
    /// stream where every file starts on a piece boundary.
    pub offset: u64,
    pub attr: FileAttr,
    /// BEP 52 `pieces root`, for v2 and hybrid torrents (absent for empty files).
    pub pieces_root: Option<[u8; 32]>,
}

impl FileEntry {
    /// The path as the torrent writes it (`path.utf-8` when present, otherwise `path`).
    pub fn torrent_path(&self) -> &[String] {
        self.path_utf8.as_deref().unwrap_or(&self.path)
    }

    /// The path a web seed serves the file under (BEP 19), as libtorrent builds it: the
    /// names made safe, before any renaming of duplicates (libtorrent's `orig_files()`).
    /// Never `.` or `..`, so no URL can climb out of the seed's folder.
    pub fn web_seed_path(&self) -> impl Iterator<Item = &str> {
        let n = self.stored.len();
        self.stored
            .iter()
            .enumerate()
            .map(move |(i, c)| match (&self.renamed_from, i + 1 == n) {
                (Some(orig), true) => orig.as_str(),
                _ => c.as_str(),
            })
    }
}

/// BEP 47 attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttr {
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    /// Symlink target components below the torrent root (rewritten as stored paths are,
    /// `.` and `..` dropped), when `attr` holds `l`. Never created as a link.
    pub symlink: Option<Vec<String>>,
}

/// The checked `info` dictionary.
#[derive(Debug, Clone)]
pub struct Info {
    /// `name` as written (U+FFFD for bytes that are not UTF-8).
    pub name: String,
    pub name_utf8: Option<String>,
    /// The name the torrent is stored under: `name.utf-8` or `name` made safe (see
    /// [`sanitize`]), or the infohash in hex when nothing usable is left of it.
    pub stored_name: String,
    pub piece_length: u64,
    /// v1 piece hashes; empty for v2-only torrents.
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// True when the torrent is a single file (`length` instead of `files` / a file tree
    /// with one file at its root).
    pub single_file: bool,
    pub private: bool,
    /// `meta version` (2 for v2 and hybrid torrents).
    pub meta_version: Option<i64>,
    /// v1 piece geometry and file map; `None` for v2-only torrents.
    pub v1: Option<FileMap>,
}

impl Info {
    /// The name as the torrent writes it: `name.utf-8` when present, otherwise `name`.
    pub fn torrent_name(&self) -> &str {
        self.name_utf8.as_deref().unwrap_or(&self.name)
    }

    pub fn total_length(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }

    /// Total length without BEP 47 pad files.
    pub fn content_length(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| f.length)
            .sum()
    }

    pub fn is_v2(&self) -> bool {
        self.meta_version == Some(2)
    }

    /// Number of pieces: v1 pieces when present, otherwise the sum of v2 per-file pieces.
    pub fn piece_count(&self) -> u64 {
        match &self.v1 {
            Some(m) => u64::from(m.geometry().piece_count()),
            None => self
                .files
                .iter()
                .map(|f| f.length.div_ceil(self.piece_length))
                .sum(),
        }
    }

    pub fn geometry(&self) -> Option<Geometry> {
        self.v1.as_ref().map(FileMap::geometry)
    }
}

/// A parsed `.torrent`.
#[derive(Debug, Clone)]
pub struct Metainfo {
    /// v1 infohash; `None` for v2-only torrents.
    pub info_hash: Option<InfoHash>,
    /// v2 infohash for v2 and hybrid torrents.
    pub info_hash_v2: Option<InfoHashV2>,
    /// The info dictionary exactly as it appears in the file.
    pub info_bytes: Vec<u8>,
    pub info: Info,
    pub announce: Option<String>,
    /// BEP 12 tiers, empty tiers dropped.
    pub announce_list: Vec<Vec<String>>,
    /// BEP 19 web seeds (`url-list`).
    pub url_list: Vec<String>,
    /// BEP 17 seeds (`httpseeds`).
    pub httpseeds: Vec<String>,
    /// BEP 5 DHT nodes as `(host, port)`.
    pub nodes: Vec<(String, u16)>,
    pub creation_date: Option<i64>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub encoding: Option<String>,
    /// BEP 52 piece layers: pieces root → concatenated SHA-256 leaf-layer hashes.
    pub piece_layers: BTreeMap<[u8; 32], Vec<u8>>,
    /// What was ignored or rewritten: malformed optional fields, stray bytes, file names
    /// stored differently than written, symlink lengths (at most [`MAX_WARNINGS`] and a
    /// count of the rest).
    pub warnings: Vec<String>,
}

impl Metainfo {
    /// Parses and checks a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let (root, used) = bencode::decode_prefix_with(bytes, TORRENT_LIMITS)?;
        if root.as_dict().is_none() {
            return Err(invalid(
                "torrent",
                &root,
                format!("expected a dictionary, found {}", root.type_name()),
            ));
        }
        let mut w = Warnings::default();
        if used < bytes.len() {
            // Some tools append a newline; the infohash depends on `info` alone.
            w.push(format!(
                "torrent (byte {used}): {} bytes after the torrent's dictionary; ignored",
                bytes.len() - used
            ));
        }
        let info_v = root
            .get(b"info")
            .ok_or_else(|| invalid("info", &root, "missing: a torrent needs an info dictionary"))?;
        let (info, v1_hash_present) = parse_info(info_v, &mut w)?;
        let info_hash = v1_hash_present.then(|| InfoHash::of(info_v.raw));
        let info_hash_v2 = info.is_v2().then(|| InfoHashV2::of(info_v.raw));

        let mut m = Metainfo {
            info_hash,
            info_hash_v2,
            info_bytes: info_v.raw.to_vec(),
            info,
            announce: None,
            announce_list: Vec::new(),
            url_list: Vec::new(),
            httpseeds: Vec::new(),
            nodes: Vec::new(),
            creation_date: None,
            comment: None,
            created_by: None,
            encoding: None,
            piece_layers: BTreeMap::new(),
            warnings: Vec::new(),
        };
        extras::read(&root, &mut m, &mut w);
        if let Some(v) = root.get(b"piece layers") {
            m.piece_layers = parse_piece_layers(v, &m.info)?;
        }
        if m.info.is_v2() {
            let missing = m
                .info
                .files
                .iter()
                .filter(|f| f.length > m.info.piece_length)
                .filter_map(|f| f.pieces_root)
                .filter(|r| !m.piece_layers.contains_key(r))
                .count();
            if missing > 0 {
                w.push(format!(
                    "piece layers: missing for {missing} file(s); v2 verification of those files needs them from peers"
                ));
            }
        }
        m.warnings = w.into_vec();
        Ok(m)
    }

    /// All tracker URLs, tier by tier: `announce-list` when present (BEP 12 says to
    /// ignore `announce` then), otherwise `announce` as a single tier.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else {
            self.announce.iter().map(|a| vec![a.clone()]).collect()
        }
    }

    /// The infohash that names this torrent on the wire: v1, or truncated v2.
    pub fn wire_info_hash(&self) -> InfoHash {
        match (self.info_hash, self.info_hash_v2) {
            (Some(h), _) => h,
            (None, Some(h2)) => h2.truncated(),
            // parse_info guarantees at least one of v1 pieces or meta version 2.
            (None, None) => InfoHash::of(&self.info_bytes),
        }
    }

    /// A magnet link for this torrent (infohashes, name as written, trackers, web seeds).
    pub fn magnet(&self) -> crate::magnet::Magnet {
        crate::magnet::Magnet {
            info_hash: self.info_hash,
            info_hash_v2: self.info_hash_v2,
            display_name: Some(self.info.torrent_name().to_owned()),
            trackers: {
                let mut seen = std::collections::HashSet::new();
                self.tracker_tiers()
                    .into_iter()
                    .flatten()
                    .filter(|t| seen.insert(t.clone()))
                    .collect()
            },
            web_seeds: self.url_list.clone(),
            peers: Vec::new(),
            exact_length: Some(self.info.content_length()),
            select_only: Vec::new(),
        }
    }
}

fn req<'v, 'a>(
    dict: &'v Value<'a>,
    key: &str,
    field: &str,
) -> Result<&'v Value<'a>, MetainfoError> {
    dict.get(key.as_bytes())
        .ok_or_else(|| invalid(field, dict, format!("missing required key {key:?}")))
}

fn int(v: &Value<'_>, field: &str) -> Result<i64, MetainfoError> {
    v.as_i64().ok_or_else(|| match v.kind {
        Kind::Int(_) => invalid(field, v, "integer out of range"),
        _ => invalid(
            field,
            v,
            format!("expected an integer, found {}", v.type_name()),
        ),
    })
}

fn length(v: &Value<'_>, field: &str) -> Result<u64, MetainfoError> {
    let n = int(v, field)?;
    u64::try_from(n).map_err(|_| invalid(field, v, format!("length {n} is negative")))
}

/// The fields of `info` that every torrent has, checked.
struct Header {
    name: String,
    name_utf8: Option<String>,
    stored_name: String,
    piece_length: u64,
    private: bool,
    /// `Some(2)` for v2 and hybrid torrents.
    meta_version: Option<i64>,
}

fn parse_header(info: &Value<'_>, w: &mut Warnings) -> Result<Header, MetainfoError> {
    let name_raw = files::bytes(req(info, "name", "info")?, "info.name")?;
    let name_utf8_raw = match info.get(b"name.utf-8") {
        Some(v) if v.as_bytes().is_none() => {
            w.ignored("info.name.utf-8", v, "not a string");
            None
        }
        Some(v) => v.as_bytes(),
        None => None,
    };
    let pl_v = req(info, "piece length", "info")?;
    let pl = int(pl_v, "info.piece length")?;
    if pl <= 0 {
        return Err(invalid(
            "info.piece length",
            pl_v,
            format!("{pl} is not a positive length"),
        ));
    }
    let piece_length = pl as u64;
    if piece_length > MAX_PIECE_LENGTH {
        return Err(invalid(
            "info.piece length",
            pl_v,
            GeometryError::PieceLengthTooLarge(piece_length).to_string(),
        ));
    }
    let private = match info.get(b"private") {
        Some(v) => int(v, "info.private")? == 1,
        None => false,
    };
    let meta_version = match info.get(b"meta version") {
        Some(v) => match int(v, "info.meta version")? {
            1 => None,
            2 => Some(2),
            mv => {
                return Err(invalid(
                    "info.meta version",
                    v,
                    format!("version {mv} is not supported (1 or 2)"),
                ))
            }
        },
        None => None,
    };
    if meta_version.is_some() && (!piece_length.is_power_of_two() || piece_length < 16 * 1024) {
        return Err(invalid(
            "info.piece length",
            pl_v,
            format!("{piece_length} is not a power of two of at least 16 KiB, as v2 requires"),
        ));
    }
    let written = name_utf8_raw.unwrap_or(name_raw);
    let stored_name = match sanitize::component(written) {
        Some(n) => n,
        // Nothing usable: named by its infohash in hex, as libtorrent names it (v1, or
        // all 64 digits of v2 for a v2-only torrent).
        None if info.get(b"pieces").is_some() || meta_version.is_none() => {
            InfoHash::of(info.raw).to_hex()
        }
        None => InfoHashV2::of(info.raw).to_hex(),
    };
    if stored_name.as_bytes() != written {
        w.push(format!(
            "info.name: {:?} is stored as {stored_name:?}",
            String::from_utf8_lossy(written)
        ));
    }
    Ok(Header {
        name: files::lossy(name_raw),
        name_utf8: name_utf8_raw.map(files::lossy),
        stored_name,
        piece_length,
        private,
        meta_version,
    })
}

/// Parses the info dictionary; the bool says whether it has v1 `pieces`.
fn parse_info(info: &Value<'_>, w: &mut Warnings) -> Result<(Info, bool), MetainfoError> {
    if info.as_dict().is_none() {
        return Err(invalid(
            "info",
            info,
            format!("expected a dictionary, found {}", info.type_name()),
        ));
    }
    let h = parse_header(info, w)?;
    let pieces_v = info.get(b"pieces");
    let mut reader = files::FileReader::new(w);
    let v1_files = if pieces_v.is_some() || h.meta_version.is_none() {
        Some(reader.v1_files(info, &h.name, h.name_utf8.as_deref())?)
    } else {
        None
    };
    let v2_files = match h.meta_version {
        Some(_) => {
            let tree = req(info, "file tree", "info")?;
            let mut files = Vec::new();
            reader.walk_file_tree(tree, &mut Vec::new(), &mut files)?;
            if files.is_empty() {
                return Err(invalid("info.file tree", tree, "no files"));
            }
            Some(files)
        }
        None => None,
    };
    let (mut files, single_file, v1, pieces) = match (v1_files, v2_files) {
        (Some((mut files, single)), v2) => {
            let (map, pieces) = v1_layout(info, &files, h.piece_length)?;
            if let Some(v2) = v2 {
                merge_hybrid(&mut files, v2, info)?;
            }
            (files, single, Some(map), pieces)
        }
        (None, Some(mut files)) => {
            // v2 only: files start on piece boundaries.
            let mut at = 0u64;
            for f in &mut files {
                f.offset = at;
                at = at
                    .checked_add(f.length.div_ceil(h.piece_length) * h.piece_length)
                    .ok_or_else(|| invalid("info.file tree", info, "total length overflows"))?;
            }
            if at == 0 {
                return Err(invalid("info", info, GeometryError::Empty.to_string()));
            }
            let single = files.len() == 1 && files[0].path.len() == 1;
            (files, single, None, Vec::new())
        }
        (None, None) => {
            return Err(invalid(
                "info",
                info,
                "neither v1 pieces nor a v2 file tree",
            ))
        }
    };
    check_roots(&files, info)?;
    files::assign_stored(&mut files, single_file, &h.stored_name, w);
    files::check_stored(&files, info)?;
    let has_v1 = v1.is_some();
    Ok((
        Info {
            name: h.name,
            name_utf8: h.name_utf8,
            stored_name: h.stored_name,
            piece_length: h.piece_length,
            pieces,
            files,
            single_file,
            private: h.private,
            meta_version: h.meta_version,
            v1,
        },
        has_v1,
    ))
}

/// The v1 piece layout of `files` and its piece hashes, checked against each other.
fn v1_layout(
    info: &Value<'_>,
    files: &[FileEntry],
    piece_length: u64,
) -> Result<(FileMap, Vec<[u8; 20]>), MetainfoError> {
    let geometry = Geometry::new(files.iter().map(|f| f.length).sum(), piece_length)
        .map_err(|e| invalid("info", info, e.to_string()))?;
    let pieces_v = req(info, "pieces", "info")?;
    let pieces = pieces_v.as_bytes().ok_or_else(|| {
        invalid(
            "info.pieces",
            pieces_v,
            format!("expected a string, found {}", pieces_v.type_name()),
        )
    })?;
    if pieces.len() % 20 != 0 {
        return Err(invalid(
            "info.pieces",
            pieces_v,
            format!(
                "{} bytes is not a multiple of 20 (one SHA-1 per piece)",
                pieces.len()
            ),
        ));
    }
    if (pieces.len() / 20) as u64 != u64::from(geometry.piece_count()) {
        return Err(invalid(
            "info.pieces",
            pieces_v,
            format!(
                "{} hashes for {} bytes in pieces of {piece_length}: expected {}",
                pieces.len() / 20,
                geometry.total_length(),
                geometry.piece_count()
            ),
        ));
    }
    let lengths: Vec<u64> = files.iter().map(|f| f.length).collect();
    let map = FileMap::new(geometry, &lengths)
        .ok_or_else(|| invalid("info", info, "file lengths do not add up"))?;
    let hashes = pieces
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok((map, hashes))
}

/// Checks that the v1 files (without pads) and the v2 tree list the same files, and
/// copies the v2 `pieces root` onto the v1 entries.
fn merge_hybrid(
    v1: &mut [FileEntry],
    v2: Vec<FileEntry>,
    info: &Value<'_>,
) -> Result<(), MetainfoError> {
    let mut real = v1.iter_mut().filter(|f| !f.attr.pad);
    for f2 in &v2 {
        let Some(f1) = real.next() else {
            return Err(invalid(
                "info.file tree",
                info,
                "hybrid torrent: v2 lists more files than v1",
            ));
        };
        // As written: `path` (a single file's is its name) or `path.utf-8`.
        let same_path = f1.path == f2.path || f1.path_utf8.as_ref() == Some(&f2.path);
        if !same_path || f1.length != f2.length {
            return Err(invalid(
                "info.file tree",
                info,
                format!(
                    "hybrid torrent: v1 file {:?} ({} bytes) differs from v2 file {:?} ({} bytes)",
                    f1.path.join("/"),
                    f1.length,
                    f2.path.join("/"),
                    f2.length
                ),
            ));
        }
        f1.pieces_root = f2.pieces_root;
    }
    if real.next().is_some() {
        return Err(invalid(
            "info.files",
            info,
            "hybrid torrent: v1 lists more files than v2",
        ));
    }
    Ok(())
}

/// Files with the same content share a `pieces root`; files of different lengths
/// cannot, and one piece layer could not match both.
fn check_roots(files: &[FileEntry], info: &Value<'_>) -> Result<(), MetainfoError> {
    let mut by_root: HashMap<[u8; 32], &FileEntry> = HashMap::new();
    for f in files {
        let Some(root) = f.pieces_root else { continue };
        if let Some(other) = by_root.insert(root, f).filter(|o| o.length != f.length) {
            return Err(invalid(
                "info.file tree",
                info,
                format!(
                    "files {:?} ({} bytes) and {:?} ({} bytes) have the same pieces root {}",
                    other.path.join("/"),
                    other.length,
                    f.path.join("/"),
                    f.length,
                    hex::encode(root)
                ),
            ));
        }
    }
    Ok(())
}

fn parse_piece_layers(
    v: &Value<'_>,
    info: &Info,
) -> Result<BTreeMap<[u8; 32], Vec<u8>>, MetainfoError> {
    let dict = v
        .as_dict()
        .ok_or_else(|| invalid("piece layers", v, "expected a dictionary"))?;
    // Indexed by root, so matching layers to files is linear in both (roots are
    // checked to agree on length by `check_roots`).
    let by_root: HashMap<[u8; 32], &FileEntry> = info
        .files
        .iter()
        .filter_map(|f| Some((f.pieces_root?, f)))
        .collect();
    let mut out = BTreeMap::new();
    for (k, layer) in dict {
        let field = format!("piece layers[{}]", hex::encode(k));
        let root: [u8; 32] = (*k)
            .try_into()
            .map_err(|_| invalid(&field, layer, "key is not a 32-byte pieces root"))?;
        let bytes = layer
            .as_bytes()
            .ok_or_else(|| invalid(&field, layer, "expected a string"))?;
        let Some(file) = by_root.get(&root) else {
            // Unknown roots carry no meaning; skip them.
            continue;
        };
        let expected = file.length.div_ceil(info.piece_length) * 32;
        if bytes.len() as u64 != expected {
            return Err(invalid(
                &field,
                layer,
                format!(
                    "{} bytes, expected {expected} for a file of {} bytes",
                    bytes.len(),
                    file.length
                ),
            ));
        }
        out.insert(root, bytes.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

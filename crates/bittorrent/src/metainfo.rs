//! Torrent metainfo (BEP 3) with BEP 5 `nodes`, BEP 12 `announce-list`, BEP 17/19 seeds,
//! BEP 27 `private`, BEP 47 file attributes and BEP 52 (v2 and hybrid) torrents.
//!
//! This module turns untrusted `.torrent` bytes into a checked [`Metainfo`], or an error
//! that names the field and the byte offset at fault. It never touches the filesystem.
//!
//! Policy:
//! - The `info` dictionary decides what is downloaded, so it is checked strictly: a bad
//!   piece length, a `pieces` string that is not a multiple of 20 or does not match the
//!   content length, or an unsafe or duplicate file path is an error.
//! - File paths are **rejected, not sanitised**: a component that is empty, `.`, `..`,
//!   or contains `/`, `\` or NUL makes the torrent invalid, so nothing can ever be
//!   written outside the download folder and no two files can map to one path.
//! - Fields outside `info` (trackers, seeds, nodes, comments) only help find peers, so a
//!   malformed one is skipped and reported in [`Metainfo::warnings`], as other clients do.
//! - Hybrid torrents must describe the same files in their v1 and v2 parts.

use crate::bencode::{self, DecodeError, Kind, Value};
use crate::geometry::{FileMap, Geometry, GeometryError, MAX_PIECE_LENGTH};
use crate::infohash::{InfoHash, InfoHashV2};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Largest `.torrent` accepted: 16 MiB. The largest real torrents are a few MiB
/// (libtorrent refuses more than 10 MB); metadata fetched from peers is at most 8 MiB.
pub const MAX_TORRENT_SIZE: usize = 16 << 20;

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

/// One file of a torrent, in torrent order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent root as written in `path` (or the name, for a
    /// single-file torrent); bytes that are not UTF-8 are shown as U+FFFD.
    pub path: Vec<String>,
    /// `path.utf-8`, when the torrent has it.
    pub path_utf8: Option<Vec<String>>,
    pub length: u64,
    /// Offset in the v1 byte stream (pad files included); for v2-only torrents, in the
    /// stream where every file starts on a piece boundary.
    pub offset: u64,
    pub attr: FileAttr,
    /// BEP 52 `pieces root`, for v2 and hybrid torrents (absent for empty files).
    pub pieces_root: Option<[u8; 32]>,
}

impl FileEntry {
    /// The path used on disk: `path.utf-8` when present, otherwise `path`.
    pub fn storage_path(&self) -> &[String] {
        self.path_utf8.as_deref().unwrap_or(&self.path)
    }
}

/// BEP 47 attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttr {
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    /// Symlink target components, when `attr` holds `l`.
    pub symlink: Option<Vec<String>>,
}

/// The checked `info` dictionary.
#[derive(Debug, Clone)]
pub struct Info {
    /// `name` as written (U+FFFD for bytes that are not UTF-8).
    pub name: String,
    pub name_utf8: Option<String>,
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
    /// The name used on disk: `name.utf-8` when present, otherwise `name`.
    pub fn storage_name(&self) -> &str {
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
    /// Optional fields that were malformed and ignored.
    pub warnings: Vec<String>,
}

impl Metainfo {
    /// Parses and checks a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let root = bencode::decode_with(bytes, TORRENT_LIMITS)?;
        if root.as_dict().is_none() {
            return Err(invalid(
                "torrent",
                &root,
                format!("expected a dictionary, found {}", root.type_name()),
            ));
        }
        let info_v = root
            .get(b"info")
            .ok_or_else(|| invalid("info", &root, "missing: a torrent needs an info dictionary"))?;
        let mut warnings = Vec::new();
        let (info, v1_hash_present) = parse_info(info_v)?;
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
        let mut warn = |field: &str, v: &Value<'_>, what: &str| {
            warnings.push(format!("{field} (byte {}): {what}; ignored", v.offset));
        };

        if let Some(v) = root.get(b"announce") {
            match v.as_str() {
                Some(s) if !s.is_empty() => m.announce = Some(s.to_owned()),
                Some(_) => {}
                None => warn("announce", v, "not a UTF-8 string"),
            }
        }
        if let Some(v) = root.get(b"announce-list") {
            match v.as_list() {
                Some(tiers) => {
                    for (i, tier) in tiers.iter().enumerate() {
                        let Some(urls) = tier.as_list() else {
                            warn(&format!("announce-list[{i}]"), tier, "not a list");
                            continue;
                        };
                        let mut t = UniqueUrls::default();
                        for (j, u) in urls.iter().enumerate() {
                            match u.as_str() {
                                Some(s) => t.push(s),
                                None => warn(
                                    &format!("announce-list[{i}][{j}]"),
                                    u,
                                    "not a UTF-8 string",
                                ),
                            }
                        }
                        if !t.urls.is_empty() {
                            m.announce_list.push(t.urls);
                        }
                    }
                }
                None => warn("announce-list", v, "not a list"),
            }
        }
        if let Some(v) = root.get(b"url-list") {
            m.url_list = string_or_list(v, "url-list", &mut warn);
        }
        if let Some(v) = root.get(b"httpseeds") {
            m.httpseeds = string_or_list(v, "httpseeds", &mut warn);
        }
        if let Some(v) = root.get(b"nodes") {
            match v.as_list() {
                Some(nodes) => {
                    for (i, n) in nodes.iter().enumerate() {
                        let pair = n.as_list().unwrap_or_default();
                        match (
                            pair.first().and_then(Value::as_str),
                            pair.get(1).and_then(Value::as_i64),
                        ) {
                            (Some(host), Some(port)) if pair.len() == 2 && !host.is_empty() => {
                                match u16::try_from(port) {
                                    Ok(p) if p != 0 => m.nodes.push((host.to_owned(), p)),
                                    _ => warn(&format!("nodes[{i}]"), n, "port out of range"),
                                }
                            }
                            _ => warn(&format!("nodes[{i}]"), n, "expected [host, port]"),
                        }
                    }
                }
                None => warn("nodes", v, "not a list"),
            }
        }
        if let Some(v) = root.get(b"creation date") {
            match v.as_i64() {
                Some(d) => m.creation_date = Some(d),
                None => warn("creation date", v, "not an integer"),
            }
        }
        for (key, slot) in [
            (&b"comment"[..], &mut m.comment),
            (b"created by", &mut m.created_by),
            (b"encoding", &mut m.encoding),
        ] {
            let utf8_key = [key, b".utf-8"].concat();
            let v = root.get(&utf8_key).or_else(|| root.get(key));
            if let Some(v) = v {
                match v.as_bytes() {
                    Some(b) => *slot = Some(String::from_utf8_lossy(b).into_owned()),
                    None => warn(&String::from_utf8_lossy(key), v, "not a string"),
                }
            }
        }
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
                warnings.push(format!(
                    "piece layers: missing for {missing} file(s); v2 verification of those files needs them from peers"
                ));
            }
        }
        m.warnings = warnings;
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

    /// A magnet link for this torrent (infohashes, name, trackers, web seeds).
    pub fn magnet(&self) -> crate::magnet::Magnet {
        crate::magnet::Magnet {
            info_hash: self.info_hash,
            info_hash_v2: self.info_hash_v2,
            display_name: Some(self.info.storage_name().to_owned()),
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

fn string_or_list<'a>(
    v: &Value<'a>,
    field: &str,
    warn: &mut impl FnMut(&str, &Value<'_>, &str),
) -> Vec<String> {
    let mut out = UniqueUrls::default();
    match &v.kind {
        Kind::Bytes(_) => match v.as_str() {
            Some(s) => out.push(s),
            None => warn(field, v, "not a UTF-8 string"),
        },
        Kind::List(items) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push(s),
                    None => warn(&format!("{field}[{i}]"), item, "not a UTF-8 string"),
                }
            }
        }
        _ => warn(field, v, "not a string or list"),
    }
    out.urls
}

/// Distinct URLs in the order first seen, empty ones skipped. De-duplication goes
/// through a hash set, so it stays linear however many URLs a torrent lists.
#[derive(Default)]
struct UniqueUrls<'a> {
    urls: Vec<String>,
    seen: HashSet<UrlKey<'a>>,
}

impl<'a> UniqueUrls<'a> {
    fn push(&mut self, url: &'a str) {
        if !url.is_empty() && self.seen.insert(UrlKey(url)) {
            self.urls.push(url.to_owned());
        }
    }
}

/// A URL as a set key. Its comparisons are counted in tests, to show that
/// de-duplication makes a bounded number of them per URL.
#[derive(Hash, Eq)]
struct UrlKey<'a>(&'a str);

impl PartialEq for UrlKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(test)]
        tests::count_url_comparison();
        self.0 == other.0
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

/// Checks one path component: it must name an entry inside its parent directory.
fn component(v: &Value<'_>, field: &str) -> Result<String, MetainfoError> {
    let b = v.as_bytes().ok_or_else(|| {
        invalid(
            field,
            v,
            format!("expected a string, found {}", v.type_name()),
        )
    })?;
    let reason = match b {
        b"" => Some("empty path component"),
        b"." | b".." => Some("path component would leave the download folder"),
        _ if b.contains(&b'/') || b.contains(&b'\\') => Some("path component contains a separator"),
        _ if b.contains(&0) => Some("path component contains a NUL byte"),
        _ => None,
    };
    if let Some(r) = reason {
        return Err(invalid(
            field,
            v,
            format!("{r}: {:?}", String::from_utf8_lossy(b)),
        ));
    }
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn path_list(v: &Value<'_>, field: &str) -> Result<Vec<String>, MetainfoError> {
    let items = v.as_list().ok_or_else(|| {
        invalid(
            field,
            v,
            format!("expected a list, found {}", v.type_name()),
        )
    })?;
    if items.is_empty() {
        return Err(invalid(field, v, "empty path"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, c)| component(c, &format!("{field}[{i}]")))
        .collect()
}

fn attr(file: &Value<'_>, field: &str) -> Result<FileAttr, MetainfoError> {
    let mut a = FileAttr::default();
    if let Some(v) = file.get(b"attr") {
        let s = v
            .as_bytes()
            .ok_or_else(|| invalid(format!("{field}.attr"), v, "expected a string"))?;
        a.pad = s.contains(&b'p');
        a.executable = s.contains(&b'x');
        a.hidden = s.contains(&b'h');
        if s.contains(&b'l') {
            let target = req(file, "symlink path", field)?;
            a.symlink = Some(path_list(target, &format!("{field}.symlink path"))?);
        }
    }
    Ok(a)
}

/// Parses the info dictionary; the bool says whether it has v1 `pieces`.
fn parse_info(info: &Value<'_>) -> Result<(Info, bool), MetainfoError> {
    if info.as_dict().is_none() {
        return Err(invalid(
            "info",
            info,
            format!("expected a dictionary, found {}", info.type_name()),
        ));
    }
    let name_v = req(info, "name", "info")?;
    let name = component(name_v, "info.name")?;
    let name_utf8 = match info.get(b"name.utf-8") {
        Some(v) => Some(component(v, "info.name.utf-8")?),
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
        Some(v) => Some(int(v, "info.meta version")?),
        None => None,
    };
    if let (Some(mv), Some(v)) = (meta_version, info.get(b"meta version")) {
        if mv != 2 && mv != 1 {
            return Err(invalid(
                "info.meta version",
                v,
                format!("version {mv} is not supported (1 or 2)"),
            ));
        }
    }
    let meta_version = meta_version.filter(|&mv| mv == 2);

    // v1 part.
    let pieces_v = info.get(b"pieces");
    let v1_files = if pieces_v.is_some() || meta_version.is_none() {
        Some(parse_v1_files(info, &name, name_utf8.as_deref())?)
    } else {
        None
    };
    // v2 part.
    let v2_files = match meta_version {
        Some(_) => {
            if !piece_length.is_power_of_two() || piece_length < 16 * 1024 {
                return Err(invalid(
                    "info.piece length",
                    pl_v,
                    format!(
                        "{piece_length} is not a power of two of at least 16 KiB, as v2 requires"
                    ),
                ));
            }
            let tree = req(info, "file tree", "info")?;
            let mut files = Vec::new();
            walk_file_tree(tree, &mut Vec::new(), "info.file tree", &mut files)?;
            if files.is_empty() {
                return Err(invalid("info.file tree", tree, "no files"));
            }
            Some(files)
        }
        None => None,
    };

    let (files, single_file, v1) = match (v1_files, v2_files) {
        (Some((files, single)), v2) => {
            let geometry = Geometry::new(files.iter().map(|f| f.length).sum(), piece_length)
                .map_err(|e| invalid("info", info, e.to_string()))?;
            let pieces_v =
                pieces_v.ok_or_else(|| invalid("info", info, "missing required key \"pieces\""))?;
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
            let mut files = files;
            if let Some(v2) = v2 {
                merge_hybrid(&mut files, v2, info)?;
            }
            let hashes = pieces
                .chunks_exact(20)
                .map(|c| {
                    let mut h = [0u8; 20];
                    h.copy_from_slice(c);
                    h
                })
                .collect::<Vec<_>>();
            let info = Info {
                name,
                name_utf8,
                piece_length,
                pieces: hashes,
                files,
                single_file: single,
                private,
                meta_version,
                v1: Some(map),
            };
            return Ok((info, true));
        }
        (None, Some(mut files)) => {
            // v2 only: files start on piece boundaries.
            let mut at = 0u64;
            for f in &mut files {
                f.offset = at;
                at = at
                    .checked_add(f.length.div_ceil(piece_length) * piece_length)
                    .ok_or_else(|| invalid("info.file tree", info, "total length overflows"))?;
            }
            if at == 0 {
                return Err(invalid("info", info, GeometryError::Empty.to_string()));
            }
            let single = files.len() == 1 && files[0].path.len() == 1;
            (files, single, None)
        }
        (None, None) => unreachable_info(info)?,
    };
    check_unique_paths(&files, info)?;
    Ok((
        Info {
            name,
            name_utf8,
            piece_length,
            pieces: Vec::new(),
            files,
            single_file,
            private,
            meta_version,
            v1,
        },
        false,
    ))
}

fn unreachable_info<T>(info: &Value<'_>) -> Result<T, MetainfoError> {
    Err(invalid(
        "info",
        info,
        "neither v1 pieces nor a v2 file tree",
    ))
}

/// v1 `length` (single file) or `files` (multi-file), offsets set, paths checked.
fn parse_v1_files(
    info: &Value<'_>,
    name: &str,
    name_utf8: Option<&str>,
) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    match (info.get(b"length"), info.get(b"files")) {
        (Some(len_v), None) => {
            let length = length(len_v, "info.length")?;
            let attr = attr(info, "info")?;
            Ok((
                vec![FileEntry {
                    path: vec![name.to_owned()],
                    path_utf8: name_utf8.map(|n| vec![n.to_owned()]),
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
                let field = format!("info.files[{i}]");
                if f.as_dict().is_none() {
                    return Err(invalid(
                        &field,
                        f,
                        format!("expected a dictionary, found {}", f.type_name()),
                    ));
                }
                let length = length(req(f, "length", &field)?, &format!("{field}.length"))?;
                let path = path_list(req(f, "path", &field)?, &format!("{field}.path"))?;
                let path_utf8 = match f.get(b"path.utf-8") {
                    Some(v) => Some(path_list(v, &format!("{field}.path.utf-8"))?),
                    None => None,
                };
                let attr = attr(f, &field)?;
                files.push(FileEntry {
                    path,
                    path_utf8,
                    length,
                    offset,
                    attr,
                    pieces_root: None,
                });
                offset = offset
                    .checked_add(length)
                    .ok_or_else(|| invalid(&field, f, "total length overflows"))?;
            }
            check_unique_paths(&files, info)?;
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

/// Rejects two files with one path, or a file whose path is another file's directory.
/// Pad files are never written, so they are exempt (libtorrent names them `.pad/N`).
fn check_unique_paths(files: &[FileEntry], info: &Value<'_>) -> Result<(), MetainfoError> {
    fn raw_path(f: &FileEntry) -> &[String] {
        &f.path
    }
    for pick in [FileEntry::storage_path, raw_path] {
        let mut paths: Vec<&[String]> = files.iter().filter(|f| !f.attr.pad).map(pick).collect();
        paths.sort_unstable();
        for w in paths.windows(2) {
            if w[1].starts_with(w[0]) {
                let what = if w[0].len() == w[1].len() {
                    "two files have the path"
                } else {
                    "a file is also used as a directory:"
                };
                return Err(invalid(
                    "info.files",
                    info,
                    format!("{what} {:?}", w[0].join("/")),
                ));
            }
        }
    }
    Ok(())
}

fn walk_file_tree(
    node: &Value<'_>,
    prefix: &mut Vec<String>,
    field: &str,
    out: &mut Vec<FileEntry>,
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
            let f = format!("{field}[\"\"]");
            if child.as_dict().is_none() {
                return Err(invalid(&f, child, "expected a dictionary"));
            }
            let length = length(req(child, "length", &f)?, &format!("{f}.length"))?;
            let pieces_root = match child.get(b"pieces root") {
                Some(r) => {
                    let b = r.as_bytes().filter(|b| b.len() == 32).ok_or_else(|| {
                        invalid(format!("{f}.pieces root"), r, "expected 32 bytes")
                    })?;
                    let mut h = [0u8; 32];
                    h.copy_from_slice(b);
                    Some(h)
                }
                None if length > 0 => {
                    return Err(invalid(
                        &f,
                        child,
                        "missing \"pieces root\" for a non-empty file",
                    ))
                }
                None => None,
            };
            let attr = attr(child, &f)?;
            out.push(FileEntry {
                path: prefix.clone(),
                path_utf8: None,
                length,
                offset: 0,
                attr,
                pieces_root,
            });
            continue;
        }
        let name_field = format!("{field}/{}", String::from_utf8_lossy(key));
        let name = component(
            &Value {
                offset: child.offset,
                raw: key,
                kind: Kind::Bytes(key),
            },
            &name_field,
        )?;
        prefix.push(name);
        walk_file_tree(child, prefix, &name_field, out)?;
        prefix.pop();
    }
    Ok(())
}

/// Checks that the v1 files (without pads) and the v2 tree list the same files, and
/// copies the v2 `pieces root` onto the v1 entries.
fn merge_hybrid(
    v1: &mut [FileEntry],
    v2: Vec<FileEntry>,
    info: &Value<'_>,
) -> Result<(), MetainfoError> {
    let mut real = v1.iter_mut().filter(|f| !f.attr.pad);
    let single = v2.len() == 1;
    for f2 in &v2 {
        let Some(f1) = real.next() else {
            return Err(invalid(
                "info.file tree",
                info,
                "hybrid torrent: v2 lists more files than v1",
            ));
        };
        // A single-file v1 torrent's path is its name; the v2 tree's is the same name.
        let same_path = f1.path == f2.path || (single && f1.path.len() == 1 && f2.path.len() == 1);
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

fn parse_piece_layers(
    v: &Value<'_>,
    info: &Info,
) -> Result<BTreeMap<[u8; 32], Vec<u8>>, MetainfoError> {
    let dict = v
        .as_dict()
        .ok_or_else(|| invalid("piece layers", v, "expected a dictionary"))?;
    // Indexed by root, so matching layers to files is linear in both.
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

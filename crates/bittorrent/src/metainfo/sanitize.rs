//! File names from a torrent made safe to create on disk, the way libtorrent 2.0.8 (and
//! so qBittorrent and Deluge) rewrites them (`sanitize_append_path_element`), so a
//! torrent other clients load is stored under the same names by btfs.
//!
//! Policy, per path component ([`component`]):
//! - `/` and `\` are removed, as are the bidi controls libtorrent removes (U+202A to
//!   U+202E, U+200E, U+200F), which can disguise an extension;
//! - characters below U+0020 become `_`, and so does each invalid UTF-8 sequence (one
//!   `_` per sequence, its length as its first byte declares, as libtorrent's
//!   `parse_utf8_codepoint` reads it); DEL, C1 and other invisible characters are kept,
//!   as libtorrent keeps them (text output escapes them, see the CLI's `output::clean`);
//! - an empty component becomes `_`; one that is `.` or `..` once rewritten is dropped,
//!   and a path left with no component at all becomes `_` ([`path`]);
//! - once a valid character brings a name to [`MAX_NAME_BYTES`] or more, it is cut
//!   there, keeping an extension of up to nine bytes; as in libtorrent, a `_` written
//!   for a control character or an invalid sequence does not trigger the cut, so a name
//!   may run on past it;
//! - the one difference from libtorrent: a name still longer than
//!   [`MAX_COMPONENT_BYTES`] (made so by such `_`s), which libtorrent keeps and then
//!   cannot create, is cut to fit, keeping a dot among its last nine bytes and what
//!   follows (`fit`).
//!
//! The result is never empty, never `.` or `..`, and holds no separator or character
//! below U+0020: joined below a folder it names an entry of that folder. [`StoredPaths`]
//! then renames files whose rewritten path is already taken by a file or a folder,
//! ignoring ASCII case as libtorrent does (`name.1.ext`, `.1.hidden`, …), shortening
//! the stem so the new name still fits in [`MAX_COMPONENT_BYTES`].
//!
//! Everything here is linear in the length of the names.

use std::collections::{HashMap, HashSet};

/// Longest rewritten name before its extension, in bytes (libtorrent's rule).
pub const MAX_NAME_BYTES: usize = 240;
/// Longest extension kept when a name is cut, dot included.
const MAX_EXTENSION_BYTES: usize = 9;
/// Longest stored name, in bytes: what Linux file systems allow.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// The characters libtorrent removes from names.
fn is_filtered(c: char) -> bool {
    matches!(
        c,
        '/' | '\\' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
    )
}

/// The characters libtorrent replaces by `_`.
fn is_control(c: char) -> bool {
    c < ' '
}

/// The character starting `bytes` and the bytes it takes, read as libtorrent's
/// `parse_utf8_codepoint` reads it: `None` for an invalid sequence, which takes the
/// length its first byte declares (one byte for a byte that starts no sequence, the
/// rest of the name for a truncated one).
fn next_char(bytes: &[u8]) -> (Option<char>, usize) {
    let len = match bytes[0] {
        b @ 0x00..=0x7f => return (Some(char::from(b)), 1),
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        0xf8..=0xfb => return (None, 5.min(bytes.len())),
        _ => return (None, 1),
    };
    match bytes.get(..len).map(std::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next(), len),
        Some(Err(_)) => (None, len),
        None => (None, bytes.len()),
    }
}

/// Rewrites one name; `None` when nothing is left of it, or only `.` or `..`.
fn rewrite(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_BYTES + MAX_EXTENSION_BYTES));
    let mut dots = 0;
    let mut extension_taken = false;
    let mut i = 0;
    while i < raw.len() {
        let (c, len) = next_char(&raw[i..]);
        let start = i;
        i += len;
        let c = match c {
            Some(c) if is_filtered(c) => continue,
            Some(c) if !is_control(c) => c,
            // libtorrent checks the length only after a valid character.
            _ => {
                out.push('_');
                continue;
            }
        };
        out.push(c);
        dots += usize::from(c == '.');
        if out.len() >= MAX_NAME_BYTES && !extension_taken && i < raw.len() {
            // Cut here, but keep the extension: a dot among the last bytes.
            let tail_start = raw.len().saturating_sub(MAX_EXTENSION_BYTES).max(start + 1);
            match raw[tail_start..].iter().rposition(|&b| b == b'.') {
                Some(p) => {
                    extension_taken = true;
                    i = tail_start + p;
                }
                None => break,
            }
        }
    }
    (dots != out.len() || out.len() > 2).then(|| fit(out))
}

/// A rewritten name cut to [`MAX_COMPONENT_BYTES`] when it is longer (only `_`s for
/// control characters or invalid sequences make it so), keeping its extension: a dot
/// among its last [`MAX_EXTENSION_BYTES`] bytes and what follows.
fn fit(mut name: String) -> String {
    if name.len() <= MAX_COMPONENT_BYTES {
        return name;
    }
    let tail = name.len() - MAX_EXTENSION_BYTES;
    let ext_at = name.as_bytes()[tail..]
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(name.len(), |p| tail + p);
    let ext = name.split_off(ext_at);
    let stem = cut(&name, MAX_COMPONENT_BYTES - ext.len());
    format!("{stem}{ext}")
}

/// A path component (a file or folder name) as it is stored; `None` when it is
/// dropped (nothing is left of it but `.` or `..`). An empty component is `_`.
pub fn component(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return Some("_".to_owned());
    }
    rewrite(raw)
}

/// A file's path as it is stored: its components rewritten, dropped ones left out, and
/// `_` when none is left.
pub fn path(raw: &[&[u8]]) -> Vec<String> {
    let mut p = symlink_target(raw);
    if p.is_empty() {
        p.push("_".to_owned());
    }
    p
}

/// A symlink target (BEP 47) as stored: rewritten as paths are (`.` and `..` dropped,
/// so it stays relative to the torrent's root); may be empty (the root itself).
pub fn symlink_target(raw: &[&[u8]]) -> Vec<String> {
    raw.iter().filter_map(|c| component(c)).collect()
}

/// Is `name` one that [`component`] or [`StoredPaths`] could have made (a safe name
/// inside a folder, at most [`MAX_COMPONENT_BYTES`])?
pub fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT_BYTES
        && name != "."
        && name != ".."
        && !name.chars().any(|c| is_filtered(c) || is_control(c))
}

/// A folder of the stored tree, compared ignoring ASCII case; 0 is the torrent's root.
type FolderId = u32;

/// A name in a folder, as compared: ASCII lower case.
type Entry = (FolderId, Box<str>);

fn entry(folder: FolderId, name: &str) -> Entry {
    (folder, name.to_ascii_lowercase().into_boxed_str())
}

/// Gives every file a path of its own, as libtorrent's `resolve_duplicate_filenames`
/// does: a path already taken by an earlier file or by a folder of any file, ignoring
/// ASCII case, is renamed `stem.N.ext` with the smallest free `N` (the extension is
/// what follows the last dot, so `.hidden` becomes `.1.hidden`).
///
/// Each folder is kept once, by id, whatever the number of files in it, so the work
/// and memory are linear in the length of the paths; each stem keeps its next number
/// to try.
#[derive(Default)]
pub struct StoredPaths {
    /// Folders by parent and name; ids start at 1.
    folders: HashMap<Entry, FolderId>,
    /// Every folder's and every claimed file's entry.
    taken: HashSet<Entry>,
    /// Next number to try, by folder and `stem\0ext`.
    next: HashMap<Entry, u64>,
}

impl StoredPaths {
    /// Reserves every folder of every path first, so no file can take a folder's name.
    pub fn with_folders<'a>(paths: impl Iterator<Item = &'a [String]>) -> Self {
        let mut s = StoredPaths::default();
        for p in paths {
            s.folder_of(p);
        }
        s
    }

    /// The folder holding the last component of `path`, its folders reserved.
    fn folder_of(&mut self, path: &[String]) -> FolderId {
        let mut at = 0;
        for c in path.iter().take(path.len().saturating_sub(1)) {
            let e = entry(at, c);
            at = match self.folders.get(&e) {
                Some(&id) => id,
                None => {
                    let id = FolderId::try_from(self.folders.len() + 1).unwrap_or(FolderId::MAX);
                    self.taken.insert(e.clone());
                    self.folders.insert(e, id);
                    id
                }
            };
        }
        at
    }

    /// Claims `path` as it is; false when a file or a folder already has it.
    pub fn try_claim(&mut self, path: &[String]) -> bool {
        let Some(last) = path.last() else {
            return false;
        };
        let folder = self.folder_of(path);
        self.taken.insert(entry(folder, last))
    }

    /// Claims `path` for a file; renames its last component when the path is taken.
    pub fn claim(&mut self, path: &mut [String]) {
        if path.is_empty() || self.try_claim(path) {
            return;
        }
        let folder = self.folder_of(path);
        let Some(last) = path.last_mut() else {
            return;
        };
        let (stem, ext) = last
            .rfind('.')
            .map_or((last.as_str(), ""), |p| last.split_at(p));
        let n = self
            .next
            .entry(entry(folder, &format!("{stem}\0{ext}")))
            .or_insert(1);
        loop {
            let name = numbered(stem, *n, ext);
            *n += 1;
            if self.taken.insert(entry(folder, &name)) {
                *last = name;
                return;
            }
        }
    }
}

/// `stem.n.ext`, the stem (then the extension) shortened at a character boundary so
/// the name fits in [`MAX_COMPONENT_BYTES`].
fn numbered(stem: &str, n: u64, ext: &str) -> String {
    let number = format!(".{n}");
    let room = MAX_COMPONENT_BYTES - number.len();
    let ext = cut(ext, room);
    let stem = cut(stem, room - ext.len());
    format!("{stem}{number}{ext}")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_as_libtorrent_stores_them() {
        for (raw, stored) in [
            (&b"plain.txt"[..], Some("plain.txt")),
            (b"", Some("_")),
            (b"/", None),
            (b"\\", None),
            (b".", None),
            (b"..", None),
            (b"/./", None),
            (b"...", Some("...")),
            (b"abc/../../def", Some("abc....def")),
            (b"foo/../../../bar", Some("foo......bar")),
            (b"temp/../../abc", Some("temp....abc")),
            (b"/foobar", Some("foobar")),
            (b"\\est2", Some("est2")),
            (b"\x82est/MB", Some("_estMB")),
            // Below U+0020 only; DEL and C1 are kept, as libtorrent keeps them.
            (b"a\0b\x1bc\x7f", Some("a_b_c\x7f")),
            ("\u{9b}csi".as_bytes(), Some("\u{9b}csi")),
            // The bidi controls libtorrent removes, and only those.
            ("evil\u{202e}txt.exe".as_bytes(), Some("eviltxt.exe")),
            ("l\u{200e}r\u{200f}".as_bytes(), Some("lr")),
            (
                "zero\u{200b}width\u{feff}".as_bytes(),
                Some("zero\u{200b}width\u{feff}"),
            ),
            // One `_` per invalid sequence, as long as its first byte declares.
            (b"\xc3A.txt", Some("_.txt")),
            (b"\x80\x80x", Some("__x")),
            (b"\xf8\x80\x80\x80\x80z", Some("_z")),
            (b"\xed\xa0\x80s", Some("_s")),
            (b"\xc0\xafo", Some("_o")),
            (b"a\xe2\x82", Some("a_")),
            ("é\u{10ffff}".as_bytes(), Some("é\u{10ffff}")),
            (b"foobar ", Some("foobar ")),
        ] {
            let got = component(raw);
            assert_eq!(got.as_deref(), stored, "{:?}", String::from_utf8_lossy(raw));
            assert!(got.is_none_or(|c| is_safe(&c)));
        }
        let p = |parts: &[&[u8]]| path(parts).join("/");
        assert_eq!(p(&[b"..", b"..", b"bar"]), "bar");
        assert_eq!(p(&[b"/", b"foo"]), "foo");
        assert_eq!(p(&[b"", b""]), "_/_");
        assert_eq!(p(&[b".", b"."]), "_");
        assert_eq!(p(&[b"/", b"."]), "_");
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        // libtorrent's long_name.torrent: 300 bytes ending in ".23456789".
        let raw = format!("{}0.23456789", "abcdefghij".repeat(29));
        let stored = component(raw.as_bytes()).unwrap();
        assert_eq!(stored.len(), MAX_NAME_BYTES + ".23456789".len());
        assert!(stored.ends_with(".23456789"));
        assert!(stored.starts_with(&raw[..MAX_NAME_BYTES]));
        // No extension: cut at the limit.
        assert_eq!(component(&[b'x'; 300]).unwrap().len(), MAX_NAME_BYTES);
        // Multi-byte characters are never split.
        let wide = "é".repeat(200);
        let stored = component(wide.as_bytes()).unwrap();
        assert_eq!(stored, "é".repeat(MAX_NAME_BYTES / 2));
        // Exactly at the limit: kept whole.
        assert_eq!(
            component(&[b'y'; MAX_NAME_BYTES]).unwrap().len(),
            MAX_NAME_BYTES
        );
    }

    /// What libtorrent 2.0.8 stores (python3-libtorrent, `file_path`), then capped.
    #[test]
    fn an_underscore_does_not_trigger_the_cut() {
        let lt = |raw: Vec<u8>| component(&raw).unwrap();
        let a = |n| "a".repeat(n);
        let u = |n| "_".repeat(n);
        // The cut comes after the next valid character, as libtorrent makes it.
        let raw = [&b"a".repeat(239)[..], b"\x01", &b"b".repeat(20), b".txt"].concat();
        assert_eq!(lt(raw), format!("{}_b.txt", a(239)));
        // Up to 255 bytes it is libtorrent's name, whole.
        let raw = [&b"a".repeat(239)[..], &[1; 16]].concat();
        assert_eq!(lt(raw), format!("{}{}", a(239), u(16)));
        // Longer ones (libtorrent: 269, 305, 301 and 300 bytes) are capped, keeping a
        // dot in the last nine bytes and what follows.
        let raw = [&b"a".repeat(239)[..], &[1; 30]].concat();
        assert_eq!(lt(raw), format!("{}{}", a(239), u(16)));
        let raw = [&b"a".repeat(100)[..], &[1; 200], &b"b".repeat(10), b".txt"].concat();
        assert_eq!(lt(raw), format!("{}{}.txt", a(100), u(151)));
        let raw = [&[1u8; 300][..], b".txt"].concat();
        assert_eq!(lt(raw), format!("{}.", u(254)));
        assert_eq!(lt(vec![1; 300]), u(255));
        // Never splitting a character (libtorrent: 250 `_`, `é.bin`, 256 bytes).
        let raw = [&[1u8; 250][..], "é".repeat(10).as_bytes(), b".bin"].concat();
        let stored = lt(raw);
        assert_eq!(stored, format!("{}.bin", u(250)));
        assert!(is_safe(&stored));
    }

    #[test]
    fn names_and_targets() {
        assert_eq!(component(b".."), None);
        assert_eq!(component(b"/"), None);
        assert_eq!(component(b"a/b").as_deref(), Some("ab"));
        let target: Vec<&[u8]> = vec![b"..", b"a", b".", b"/", b"", b"bar"];
        assert_eq!(symlink_target(&target), vec!["a", "_", "bar"]);
    }

    fn claim_all(paths: &[&[&str]]) -> Vec<String> {
        let mut paths: Vec<Vec<String>> = paths
            .iter()
            .map(|p| p.iter().map(|c| c.to_string()).collect())
            .collect();
        let mut stored = StoredPaths::with_folders(paths.iter().map(Vec::as_slice));
        for p in &mut paths {
            stored.claim(p);
        }
        paths.iter().map(|p| p.join("/")).collect()
    }

    #[test]
    fn duplicates_are_renamed() {
        assert_eq!(
            claim_all(&[
                &["foo", "bar.txt"],
                &["foo", "bar.txt"],
                &["foo", "bar.txt"]
            ]),
            ["foo/bar.txt", "foo/bar.1.txt", "foo/bar.2.txt"]
        );
        // A name that is already what a rename would make is skipped over.
        assert_eq!(
            claim_all(&[&["a.txt"], &["a.1.txt"], &["a.txt"]]),
            ["a.txt", "a.1.txt", "a.2.txt"]
        );
        // A file cannot take a folder's name, wherever it comes in the list.
        assert_eq!(
            claim_all(&[&["_"], &["_", "foo"], &["_", "foo"]]),
            ["_.1", "_/foo", "_/foo.1"]
        );
        // libtorrent's extension is from the last dot, so a dot file is `.1.hidden`.
        assert_eq!(
            claim_all(&[&[".hidden"], &[".hidden"]]),
            [".hidden", ".1.hidden"]
        );
        // ASCII case is ignored, as libtorrent ignores it (for case-insensitive disks).
        assert_eq!(
            claim_all(&[&["A.txt"], &["a.txt"], &["a.TXT"]]),
            ["A.txt", "a.1.txt", "a.2.TXT"]
        );
        assert_eq!(claim_all(&[&["a"], &["A", "x"]]), ["a.1", "A/x"]);
        assert_eq!(claim_all(&[&["D", "x"], &["d", "X"]]), ["D/x", "d/X.1"]);
    }

    #[test]
    fn renamed_names_stay_within_255_bytes() {
        // The longest name a cut makes: 240 bytes crossed by a 4-byte character, then
        // a 9-byte extension.
        let raw = format!("{}\u{1f600}tail.abcdefgh", "n".repeat(239));
        let stored = component(raw.as_bytes()).unwrap();
        assert_eq!(stored.len(), 252);
        let copies: Vec<[&str; 1]> = vec![[stored.as_str()]; 120];
        let copies: Vec<&[&str]> = copies.iter().map(|c| &c[..]).collect();
        let out = claim_all(&copies);
        assert_eq!(out[0], stored);
        for name in &out[1..] {
            assert!(name.len() <= MAX_COMPONENT_BYTES && is_safe(name), "{name}");
            assert!(name.ends_with(".abcdefgh"));
        }
        let stem = format!("{}\u{1f600}", "n".repeat(239));
        assert_eq!(out[1], format!("{stem}.1.abcdefgh"));
        assert_eq!(out[10].len(), 255);
        // From `.100`, the stem loses its last character (never half of it).
        assert_eq!(out[119], format!("{}.119.abcdefgh", "n".repeat(239)));
        assert_eq!(out.iter().collect::<HashSet<_>>().len(), 120);
        // An extension too long to keep whole is cut too, at a character boundary.
        let wide = format!("x.{}", "é".repeat(126));
        assert_eq!(wide.len(), 254);
        let out = claim_all(&[&[&wide], &[&wide]]);
        assert!(out[1].len() <= MAX_COMPONENT_BYTES && is_safe(&out[1]));
        assert!(!is_safe(&"z".repeat(256)));
    }

    #[test]
    fn many_duplicates_stay_linear() {
        let n = 100_000;
        let names: Vec<&[&str]> = vec![&["same.bin"]; n];
        let out = claim_all(&names);
        assert_eq!(out[n - 1], format!("same.{}.bin", n - 1));
        let unique: HashSet<&String> = out.iter().collect();
        assert_eq!(unique.len(), n);
    }
}

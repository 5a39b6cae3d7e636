//! File names from a torrent made safe to create on disk, the way libtorrent 2.0 (and
//! so qBittorrent and Deluge) rewrites them, so a torrent other clients load is stored
//! under the same names by btfs.
//!
//! Policy, per path component ([`component`]):
//! - `/` and `\` are removed, as are invisible Unicode formatting characters (bidi
//!   overrides and marks, zero-width characters, byte order marks) that can disguise a
//!   name;
//! - control characters (C0, DEL, C1) and bytes that are not UTF-8 become `_`;
//! - an empty component becomes `_`; one that is `.` or `..` once rewritten is dropped,
//!   and a path left with no component at all becomes `_` ([`path`]);
//! - a name longer than [`MAX_NAME_BYTES`] is cut there, keeping an extension of up to
//!   nine bytes (so it stays under the 255 bytes file systems allow).
//!
//! The result is never empty, never `.` or `..`, and holds no separator or control
//! character: joined below a folder it names an entry of that folder. [`StoredPaths`]
//! then renames files whose rewritten path is already taken, by a file or a folder
//! (`name.1.ext`, …).
//!
//! Everything here is linear in the length of the names.

use std::collections::{HashMap, HashSet};

/// Longest rewritten name before its extension, in bytes (libtorrent's rule).
pub const MAX_NAME_BYTES: usize = 240;
/// Longest extension kept when a name is cut, dot included.
const MAX_EXTENSION_BYTES: usize = 9;

/// Invisible characters that change how a name reads without changing how it looks.
fn is_filtered(c: char) -> bool {
    matches!(c, '/' | '\\' | '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// The character starting `bytes` and its length, or `None` (length 1) for a byte that
/// does not start valid UTF-8.
fn next_char(bytes: &[u8]) -> (Option<char>, usize) {
    let len = match bytes[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (None, 1),
    };
    match bytes.get(..len).map(std::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next(), len),
        _ => (None, 1),
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
        match c {
            Some(c) if is_filtered(c) => continue,
            Some(c) if !is_control(c) => {
                out.push(c);
                dots += usize::from(c == '.');
            }
            _ => out.push('_'),
        }
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
    (dots != out.len() || out.len() > 2).then_some(out)
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
    let p: Vec<String> = raw.iter().filter_map(|c| component(c)).collect();
    if p.is_empty() {
        vec!["_".to_owned()]
    } else {
        p
    }
}

/// The torrent's name as stored; `None` when nothing usable is left (the caller names
/// the torrent by its infohash then, as libtorrent does).
pub fn torrent_name(raw: &[u8]) -> Option<String> {
    component(raw)
}

/// A symlink target (BEP 47) as stored: rewritten as paths are (`.` and `..` dropped,
/// so it stays relative to the torrent's root); may be empty (the root itself).
pub fn symlink_target(raw: &[&[u8]]) -> Vec<String> {
    raw.iter().filter_map(|c| component(c)).collect()
}

/// Is `name` one that [`component`] could have made (a safe name inside a folder)?
pub fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(is_control)
}

/// Gives every file a path of its own: a path already taken by an earlier file, or by
/// a folder of any file, is renamed `stem.N.ext` with the smallest free `N`, as
/// libtorrent does. Linear: each stem keeps its next number to try.
#[derive(Default)]
pub struct StoredPaths {
    taken: HashSet<String>,
    next: HashMap<String, u64>,
}

impl StoredPaths {
    /// Reserves every folder of every path first, so no file can take a folder's name.
    pub fn with_folders<'a>(paths: impl Iterator<Item = &'a [String]>) -> Self {
        let mut s = StoredPaths::default();
        for p in paths {
            let mut joined = String::new();
            for c in p.iter().take(p.len().saturating_sub(1)) {
                if !joined.is_empty() {
                    joined.push('/');
                }
                joined.push_str(c);
                s.taken.insert(joined.clone());
            }
        }
        s
    }

    /// Claims `path` for a file; renames its last component when the path is taken.
    pub fn claim(&mut self, path: &mut [String]) {
        let Some(last) = path.last() else {
            return;
        };
        let joined = path.join("/");
        if self.taken.insert(joined.clone()) {
            return;
        }
        let (stem, ext) = match last.rfind('.') {
            Some(p) if p > 0 => (&last[..p], &last[p..]),
            _ => (last.as_str(), ""),
        };
        let (stem, ext) = (stem.to_owned(), ext.to_owned());
        let dir = &joined[..joined.len() - last.len()];
        let key = format!("{dir}{stem}\0{ext}");
        let n = self.next.entry(key).or_insert(1);
        loop {
            let name = format!("{stem}.{n}{ext}");
            *n += 1;
            if self.taken.insert(format!("{dir}{name}")) {
                if let Some(l) = path.last_mut() {
                    *l = name;
                }
                return;
            }
        }
    }
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
            (b"a\0b\x1bc\x7f", Some("a_b_c_")),
            ("\u{9b}csi".as_bytes(), Some("_csi")),
            ("evil\u{202e}txt.exe".as_bytes(), Some("eviltxt.exe")),
            ("zero\u{200b}width".as_bytes(), Some("zerowidth")),
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

    #[test]
    fn names_and_targets() {
        assert_eq!(torrent_name(b".."), None);
        assert_eq!(torrent_name(b"/"), None);
        assert_eq!(torrent_name(b"a/b").as_deref(), Some("ab"));
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
        assert_eq!(
            claim_all(&[&[".hidden"], &[".hidden"]]),
            [".hidden", ".hidden.1"]
        );
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

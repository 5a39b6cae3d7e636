//! The fields of a torrent outside `info`: trackers (BEP 12), web seeds (BEP 17, 19),
//! DHT nodes (BEP 5), dates and comments.
//!
//! They only help to find peers or describe the torrent, so a malformed one is skipped
//! with a warning, never an error. URLs are trimmed of surrounding whitespace, empty
//! ones dropped, and repeats removed through a hash set, so the work stays linear
//! however many URLs a torrent lists.

use super::{Metainfo, Warnings};
use crate::bencode::{Kind, Value};
use std::collections::HashSet;

/// Reads every optional field of `root` into `m`.
pub(super) fn read(root: &Value<'_>, m: &mut Metainfo, w: &mut Warnings) {
    if let Some(v) = root.get(b"announce") {
        match v.as_str() {
            Some(s) => {
                let mut one = UniqueUrls::default();
                one.push(s);
                m.announce = one.urls.pop();
            }
            None => w.ignored("announce", v, "not a UTF-8 string"),
        }
    }
    if let Some(v) = root.get(b"announce-list") {
        m.announce_list = tiers(v, w);
    }
    if let Some(v) = root.get(b"url-list") {
        m.url_list = string_or_list(v, "url-list", w);
    }
    if let Some(v) = root.get(b"httpseeds") {
        m.httpseeds = string_or_list(v, "httpseeds", w);
    }
    if let Some(v) = root.get(b"nodes") {
        m.nodes = nodes(v, w);
    }
    if let Some(v) = root.get(b"creation date") {
        match v.as_i64() {
            Some(d) => m.creation_date = Some(d),
            None => w.ignored("creation date", v, "not an integer"),
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
                None => w.ignored(&String::from_utf8_lossy(key), v, "not a string"),
            }
        }
    }
}

/// BEP 12 tiers; empty tiers dropped, each tier without repeats.
fn tiers(v: &Value<'_>, w: &mut Warnings) -> Vec<Vec<String>> {
    let Some(tiers) = v.as_list() else {
        w.ignored("announce-list", v, "not a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, tier) in tiers.iter().enumerate() {
        let Some(urls) = tier.as_list() else {
            w.ignored(&format!("announce-list[{i}]"), tier, "not a list");
            continue;
        };
        let mut t = UniqueUrls::default();
        for (j, u) in urls.iter().enumerate() {
            match u.as_str() {
                Some(s) => t.push(s),
                None => w.ignored(&format!("announce-list[{i}][{j}]"), u, "not a UTF-8 string"),
            }
        }
        if !t.urls.is_empty() {
            out.push(t.urls);
        }
    }
    out
}

/// A URL or a list of URLs (`url-list`, `httpseeds`).
fn string_or_list(v: &Value<'_>, field: &str, w: &mut Warnings) -> Vec<String> {
    let mut out = UniqueUrls::default();
    match &v.kind {
        Kind::Bytes(_) => match v.as_str() {
            Some(s) => out.push(s),
            None => w.ignored(field, v, "not a UTF-8 string"),
        },
        Kind::List(items) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push(s),
                    None => w.ignored(&format!("{field}[{i}]"), item, "not a UTF-8 string"),
                }
            }
        }
        _ => w.ignored(field, v, "not a string or list"),
    }
    out.urls
}

/// BEP 5 `nodes`: `[host, port]` pairs.
fn nodes(v: &Value<'_>, w: &mut Warnings) -> Vec<(String, u16)> {
    let Some(nodes) = v.as_list() else {
        w.ignored("nodes", v, "not a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let pair = n.as_list().unwrap_or_default();
        match (
            pair.first().and_then(Value::as_str),
            pair.get(1).and_then(Value::as_i64),
        ) {
            (Some(host), Some(port)) if pair.len() == 2 && !host.is_empty() => {
                match u16::try_from(port) {
                    Ok(p) if p != 0 => out.push((host.to_owned(), p)),
                    _ => w.ignored(&format!("nodes[{i}]"), n, "port out of range"),
                }
            }
            _ => w.ignored(&format!("nodes[{i}]"), n, "expected [host, port]"),
        }
    }
    out
}

/// Distinct URLs in the order first seen, trimmed of surrounding whitespace, empty ones
/// skipped. De-duplication goes through a hash set, so it stays linear however many
/// URLs a torrent lists.
#[derive(Default)]
struct UniqueUrls<'a> {
    urls: Vec<String>,
    seen: HashSet<UrlKey<'a>>,
}

impl<'a> UniqueUrls<'a> {
    fn push(&mut self, url: &'a str) {
        let url = url.trim();
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
        super::tests::count_url_comparison();
        self.0 == other.0
    }
}

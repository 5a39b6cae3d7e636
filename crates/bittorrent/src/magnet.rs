//! Magnet links (BEP 9, with BEP 52 `urn:btmh:` and BEP 53 `so=`).
//!
//! Parses `magnet:?` URIs into a [`Magnet`] and prints them back. Parameters:
//! `xt` (`urn:btih:` as 40 hex or 32 base32 characters, `urn:btmh:` as a sha2-256
//! multihash), `dn`, `tr` (repeatable), `ws`, `x.pe` (`IPv4:port` or `[IPv6]:port`),
//! `xl`, and `so` (file indices and ranges such as `0,2,4-6`). Numbered forms such as
//! `tr.1` are accepted; unknown parameters are ignored. Every value is percent-decoded.

use crate::infohash::{InfoHash, InfoHashV2};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Magnet {
    pub info_hash: Option<InfoHash>,
    pub info_hash_v2: Option<InfoHashV2>,
    pub display_name: Option<String>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub peers: Vec<SocketAddr>,
    pub exact_length: Option<u64>,
    /// BEP 53 file selection, as inclusive index ranges.
    pub select_only: Vec<RangeInclusive<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link: it must start with \"magnet:?\"")]
    NotMagnet,
    #[error("magnet link has no BitTorrent infohash (xt=urn:btih:… or xt=urn:btmh:…)")]
    NoInfoHash,
    #[error("magnet parameter {param}: {reason}")]
    Param { param: String, reason: String },
}

fn param_err(param: &str, reason: impl Into<String>) -> MagnetError {
    MagnetError::Param {
        param: param.to_owned(),
        reason: reason.into(),
    }
}

impl Magnet {
    /// The infohash used on the wire: v1 when present, else the truncated v2 hash.
    pub fn wire_info_hash(&self) -> InfoHash {
        match (self.info_hash, self.info_hash_v2) {
            (Some(h), _) => h,
            (None, Some(h2)) => h2.truncated(),
            (None, None) => InfoHash([0; 20]),
        }
    }

    /// Is file `index` selected by `so=` (every file is, when `so` is absent)?
    pub fn selects(&self, index: u32) -> bool {
        self.select_only.is_empty() || self.select_only.iter().any(|r| r.contains(&index))
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let query = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &s[8..])
            .ok_or(MagnetError::NotMagnet)?;
        // A fragment is not part of the query.
        let query = query.split('#').next().unwrap_or_default();
        let mut m = Magnet::default();
        // Sets keep de-duplication linear however many parameters a link repeats.
        let (mut seen_tr, mut seen_ws, mut seen_pe) =
            (HashSet::new(), HashSet::new(), HashSet::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_val) = pair.split_once('=').unwrap_or((pair, ""));
            let key = raw_key.to_ascii_lowercase();
            // Numbered parameters (tr.1, xt.2, ...) mean the same as the plain ones.
            let base = match key.rsplit_once('.') {
                Some((b, n)) if n.bytes().all(|c| c.is_ascii_digit()) && !n.is_empty() => b,
                _ => key.as_str(),
            };
            let value = percent_decode_str(raw_val)
                .decode_utf8()
                .map_err(|_| param_err(raw_key, "not UTF-8 after percent-decoding"))?
                .into_owned();
            match base {
                "xt" => parse_xt(&mut m, &value, raw_key)?,
                "dn" => m.display_name = Some(value),
                "tr" => push_unique(&mut m.trackers, &mut seen_tr, value),
                "ws" => push_unique(&mut m.web_seeds, &mut seen_ws, value),
                "x.pe" => {
                    let addr = SocketAddr::from_str(&value).map_err(|_| {
                        param_err(
                            raw_key,
                            format!("{value:?} is not IPv4:port or [IPv6]:port"),
                        )
                    })?;
                    if seen_pe.insert(addr) {
                        m.peers.push(addr);
                    }
                }
                "xl" => {
                    m.exact_length = Some(value.parse().map_err(|_| {
                        param_err(raw_key, format!("{value:?} is not a length in bytes"))
                    })?)
                }
                "so" => m.select_only = parse_so(&value).map_err(|r| param_err(raw_key, r))?,
                _ => {}
            }
        }
        if m.info_hash.is_none() && m.info_hash_v2.is_none() {
            return Err(MagnetError::NoInfoHash);
        }
        Ok(m)
    }
}

fn push_unique(list: &mut Vec<String>, seen: &mut HashSet<String>, v: String) {
    if !v.is_empty() && seen.insert(v.clone()) {
        list.push(v);
    }
}

fn parse_xt(m: &mut Magnet, value: &str, key: &str) -> Result<(), MagnetError> {
    let lower = value.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("urn:btih:") {
        let hash: InfoHash = h
            .parse()
            .map_err(|e: crate::infohash::InfoHashParseError| param_err(key, e.to_string()))?;
        match m.info_hash {
            Some(existing) if existing != hash => {
                return Err(param_err(key, "two different urn:btih infohashes"))
            }
            _ => m.info_hash = Some(hash),
        }
    } else if let Some(mh) = lower.strip_prefix("urn:btmh:") {
        let hash: InfoHashV2 = mh
            .parse()
            .map_err(|e: crate::infohash::InfoHashParseError| param_err(key, e.to_string()))?;
        match m.info_hash_v2 {
            Some(existing) if existing != hash => {
                return Err(param_err(key, "two different urn:btmh infohashes"))
            }
            _ => m.info_hash_v2 = Some(hash),
        }
    }
    // Other URNs (ed2k, sha1, ...) name the same content for other networks.
    Ok(())
}

fn parse_so(v: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let bad = || format!("{v:?} is not a list of file indices and ranges like 0,2,4-6");
    v.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            Ok(a..=b)
        })
        .collect()
}

/// Characters escaped in magnet values: everything but RFC 3986 unreserved characters
/// and the `:` `/` `@` that URLs and addresses are made of.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'/')
    .remove(b'@');

/// `x.pe` values: `[IPv6]:port` keeps its brackets and colons unescaped, as libtorrent's
/// `make_magnet_uri` prints it; libtorrent 2.0 does not unescape `x.pe`, so a
/// `%5B…%5D` form would be lost on it.
const PEER: &AsciiSet = &VALUE.remove(b'[').remove(b']');

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "?";
        let mut put_as = |f: &mut fmt::Formatter<'_>, k: &str, v: &str, set: &'static AsciiSet| {
            let r = write!(f, "{sep}{k}={}", utf8_percent_encode(v, set));
            sep = "&";
            r
        };
        f.write_str("magnet:")?;
        if let Some(h) = self.info_hash {
            put_as(f, "xt", &format!("urn:btih:{h}"), VALUE)?;
        }
        if let Some(h) = self.info_hash_v2 {
            put_as(
                f,
                "xt",
                &format!("urn:btmh:{}", h.to_multihash_hex()),
                VALUE,
            )?;
        }
        if let Some(dn) = &self.display_name {
            put_as(f, "dn", dn, VALUE)?;
        }
        if let Some(xl) = self.exact_length {
            put_as(f, "xl", &xl.to_string(), VALUE)?;
        }
        for t in &self.trackers {
            put_as(f, "tr", t, VALUE)?;
        }
        for w in &self.web_seeds {
            put_as(f, "ws", w, VALUE)?;
        }
        for p in &self.peers {
            put_as(f, "x.pe", &p.to_string(), PEER)?;
        }
        if !self.select_only.is_empty() {
            let so: Vec<String> = self
                .select_only
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            put_as(f, "so", &so.join(","), VALUE)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn parses_everything() {
        let s = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Big%20Buck+Bunny&tr=udp%3A%2F%2F127.0.0.1%3A6969&tr.1=http://127.0.0.1/announce?a=1\
             &ws=http%3A%2F%2F127.0.0.1%2Fws%2F&x.pe=127.0.0.1:6881&x.pe=%5B%3A%3A1%5D%3A6882&xl=1234&so=0,2,4-6&foo=bar"
        );
        let m: Magnet = s.parse().unwrap();
        assert_eq!(m.info_hash.unwrap().to_hex(), HEX);
        assert_eq!(m.display_name.as_deref(), Some("Big Buck+Bunny"));
        assert_eq!(
            m.trackers,
            vec!["udp://127.0.0.1:6969", "http://127.0.0.1/announce?a=1"]
        );
        assert_eq!(m.web_seeds, vec!["http://127.0.0.1/ws/"]);
        assert_eq!(
            m.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:6882".parse().unwrap()
            ]
        );
        assert_eq!(m.exact_length, Some(1234));
        assert_eq!(m.select_only, vec![0..=0, 2..=2, 4..=6]);
        assert!(m.selects(5) && !m.selects(3));
        // Printing and parsing again gives the same magnet.
        let again: Magnet = m.to_string().parse().unwrap();
        assert_eq!(again, m);
    }

    /// An IPv6 peer prints as `[addr]:port`, unescaped as libtorrent prints (and
    /// needs) it, and parses back, escaped or not.
    #[test]
    fn ipv6_peers_round_trip() {
        let raw = format!("magnet:?xt=urn:btih:{HEX}&x.pe=[2001:db8::7]:51413&x.pe=10.0.0.1:6881");
        let m: Magnet = raw.parse().unwrap();
        assert_eq!(
            m.peers,
            vec![
                "[2001:db8::7]:51413".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:6881".parse().unwrap()
            ]
        );
        let printed = m.to_string();
        assert_eq!(printed, raw);
        assert_eq!(printed.parse::<Magnet>().unwrap(), m);
        let escaped = format!("magnet:?xt=urn:btih:{HEX}&x.pe=%5B2001%3Adb8%3A%3A7%5D%3A51413");
        assert_eq!(escaped.parse::<Magnet>().unwrap().peers, m.peers[..1]);
        let bad = format!("magnet:?xt=urn:btih:{HEX}&x.pe=2001:db8::7:51413");
        assert!(
            bad.parse::<Magnet>().is_err(),
            "an IPv6 peer needs brackets"
        );
    }

    #[test]
    fn base32_and_v2() {
        let m: Magnet = "MAGNET:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
            .parse()
            .unwrap();
        assert_eq!(m.info_hash.unwrap().to_hex(), HEX);
        let v2 = format!("magnet:?xt=urn:btmh:1220{}", "ab".repeat(32));
        let m: Magnet = v2.parse().unwrap();
        assert!(m.info_hash.is_none());
        assert_eq!(m.wire_info_hash().0, [0xab; 20]);
        assert_eq!(m.to_string(), v2);
    }

    #[test]
    fn errors() {
        assert_eq!("http://x".parse::<Magnet>(), Err(MagnetError::NotMagnet));
        assert_eq!(
            "magnet:?dn=x".parse::<Magnet>(),
            Err(MagnetError::NoInfoHash)
        );
        for bad in [
            "magnet:?xt=urn:btih:1234",
            "magnet:?xt=urn:btmh:1114abcd",
            &format!("magnet:?xt=urn:btih:{HEX}&x.pe=host:1"),
            &format!("magnet:?xt=urn:btih:{HEX}&xl=-1"),
            &format!("magnet:?xt=urn:btih:{HEX}&so=3-1"),
            &format!("magnet:?xt=urn:btih:{HEX}&dn=%FF"),
            &format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}", "0".repeat(40)),
        ] {
            let e = bad.parse::<Magnet>().unwrap_err();
            assert!(matches!(e, MagnetError::Param { .. }), "{bad}: {e}");
        }
    }
}

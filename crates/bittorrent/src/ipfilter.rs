//! IP block lists: the formats qBittorrent reads, parsed into sorted, merged ranges.
//!
//! Formats (one range a line; blank lines and lines starting with `#` or `//` skipped):
//! - **P2P plaintext** (PeerGuardian): `some description:1.2.3.0-1.2.3.255`. The range
//!   is after the last `-` and the first `:` after which an address follows; the
//!   description may hold `:` and `-`. A line with no description is taken too.
//! - **eMule `.dat`**: `001.002.003.000 - 001.002.003.255 , 000 , description`. The
//!   access level (the second field, optional) blocks when it is 127 or less; a range
//!   with a higher level is not blocked, as eMule and qBittorrent read it.
//!
//! Both take IPv4 (octets with leading zeros, as real lists write them) and IPv6
//! ranges. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4: a lookup of one
//! is a lookup of its IPv4 address, and the part of an IPv6 range inside
//! `::ffff:0:0/96` goes to the IPv4 table at load (so `::-::ffff:255.255.255.255` is an
//! IPv6 range that also blocks every IPv4 address). The format is chosen by the file's
//! extension (`.p2p`, `.dat`), otherwise from the first range line: eMule's when it is
//! `FIRST - LAST` before any `,`, P2P's otherwise.
//!
//! Policy: a file that does not parse is refused whole, naming the line and its text
//! (clipped); nothing is half-applied. qBittorrent instead skips a bad line, logs
//! "IP filter line N is malformed" and applies the rest. btfs refuses because a
//! block list is a safety setting: a list that only partly applies (a wrong file, a
//! truncated download, a format misread from the first line) would leave addresses
//! open that the user believes blocked, with nothing but a log line to say so; a whole
//! refusal with the line number is seen at once and fixed in the file.
//!
//! Bounded: at most [`MAX_FILTER_FILE_SIZE`] bytes, lines of at most [`MAX_LINE_LEN`]
//! bytes, at most [`MAX_FILTER_RANGES`] range lines (an IPv6 line split around the
//! mapped block adds at most two table entries). Ranges are sorted and merged in place
//! at load; a lookup is a binary search. The filter is immutable once built and shared
//! as an `Arc`. What it turned away is kept as a [`BlockedSet`] of distinct addresses
//! (at most [`MAX_BLOCKED_TRACKED`]), one for the filter and one per user of it
//! ([`FilterScope`], a torrent); each set has its own mutex, taken alone and only when
//! an address is blocked.

use std::collections::HashSet;
use std::io::{self, BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest filter file read (typical lists are 10–30 MiB).
pub const MAX_FILTER_FILE_SIZE: u64 = 256 << 20;
/// Most ranges in one filter, counted before merging.
pub const MAX_FILTER_RANGES: usize = 2_000_000;
/// Longest line, in bytes.
pub const MAX_LINE_LEN: usize = 4096;
/// Characters of a bad line shown in an error.
const SHOWN_CHARS: usize = 60;
/// Longest text of an address (an IPv6 address with an IPv4 tail), in bytes.
const MAX_ADDR_LEN: usize = 45;
/// Most distinct blocked addresses a [`BlockedSet`] holds; its count stops there.
pub const MAX_BLOCKED_TRACKED: usize = 16_384;
/// `::ffff:0:0/96`, the IPv4-mapped IPv6 addresses.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

/// A block-list format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PeerGuardian text: `description:first-last`.
    P2p,
    /// eMule: `first - last , access , description`.
    Dat,
}

impl Format {
    /// The format a file's extension names, if it names one.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "p2p" => Some(Format::P2p),
            "dat" => Some(Format::Dat),
            _ => None,
        }
    }
}

/// Why a line is not a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not an address range")]
    NotARange,
    #[error("the first address is not an IP address")]
    BadFirst,
    #[error("the last address is not an IP address")]
    BadLast,
    #[error("one address is IPv4, the other IPv6")]
    MixedFamilies,
    #[error("the last address is below the first")]
    Reversed,
    #[error("the access level is not a number")]
    BadAccess,
    #[error("longer than {MAX_LINE_LEN} bytes")]
    TooLong,
}

#[derive(Debug, thiserror::Error)]
pub enum IpFilterError {
    #[error("cannot read the IP filter {name}: {source}")]
    Io { name: String, source: io::Error },
    #[error("the IP filter {name} is larger than {MAX_FILTER_FILE_SIZE} bytes")]
    TooLarge { name: String },
    #[error("{name}:{line}: more than {MAX_FILTER_RANGES} address ranges")]
    TooManyRanges { name: String, line: usize },
    #[error("{name}: a PeerGuardian binary (.p2b) list; give the P2P text or eMule .dat form")]
    Binary { name: String },
    #[error("{name}:{line}: {text:?}: {reason}")]
    Line {
        name: String,
        line: usize,
        /// The line, clipped to a few dozen characters (`…` marks a cut).
        text: String,
        reason: LineError,
    },
}

/// A parsed range, either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

/// Distinct addresses turned away (IPv4-mapped ones as IPv4), at most
/// [`MAX_BLOCKED_TRACKED`]: an address offered or connecting again is not counted again,
/// and past the bound the count stays at it.
#[derive(Debug, Default)]
pub struct BlockedSet {
    seen: Mutex<HashSet<IpAddr>>,
}

impl BlockedSet {
    /// Remembers `ip` as blocked.
    pub fn record(&self, ip: IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_BLOCKED_TRACKED {
            seen.insert(ip.to_canonical());
        }
    }

    /// Distinct addresses blocked so far (at most [`MAX_BLOCKED_TRACKED`]).
    pub fn count(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }
}

/// A block list: sorted, non-overlapping ranges of each family, and the distinct
/// addresses it turned away.
#[derive(Debug, Default)]
pub struct IpFilter {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    blocked: BlockedSet,
}

/// A filter as one of its users (a torrent) applies it: what it blocks is counted both
/// in the filter's set and in this user's own.
#[derive(Debug, Clone)]
pub struct FilterScope {
    filter: Arc<IpFilter>,
    blocked: Arc<BlockedSet>,
}

impl FilterScope {
    pub fn new(filter: Arc<IpFilter>) -> Self {
        FilterScope {
            filter,
            blocked: Arc::default(),
        }
    }

    /// Whether `ip` is blocked, remembered in both sets when it is.
    pub fn check(&self, ip: IpAddr) -> bool {
        let blocked = self.filter.check(ip);
        if blocked {
            self.blocked.record(ip);
        }
        blocked
    }

    /// Distinct addresses this user turned away (at most [`MAX_BLOCKED_TRACKED`]).
    pub fn blocked(&self) -> u64 {
        self.blocked.count()
    }
}

impl IpFilter {
    /// Reads a block list from a file (format from the extension, else detected).
    pub fn load(path: &Path) -> Result<IpFilter, IpFilterError> {
        let name = path.display().to_string();
        let io_err = |source| IpFilterError::Io {
            name: name.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        if file.metadata().map_err(io_err)?.len() > MAX_FILTER_FILE_SIZE {
            return Err(IpFilterError::TooLarge { name });
        }
        let display = path
            .file_name()
            .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
        let reader = io::BufReader::with_capacity(1 << 20, file);
        IpFilter::parse(&display, Format::from_path(path), reader).map_err(|e| match e {
            // The full path where the file could not be read; the name elsewhere.
            IpFilterError::Io { source, .. } => IpFilterError::Io { name, source },
            e => e,
        })
    }

    /// Parses a block list read from `input`; `name` is used in errors.
    pub fn parse(
        name: &str,
        format: Option<Format>,
        input: impl BufRead,
    ) -> Result<IpFilter, IpFilterError> {
        let mut input = input.take(MAX_FILTER_FILE_SIZE + 1);
        let mut format = format;
        let mut v4: Vec<(u32, u32)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        let mut buf = Vec::with_capacity(256);
        let mut total = 0u64;
        let mut line_no = 0usize;
        let err = |line: usize, text: &[u8], reason: LineError| IpFilterError::Line {
            name: name.to_owned(),
            line,
            text: clip(text),
            reason,
        };
        loop {
            buf.clear();
            let n = (&mut input)
                .take(MAX_LINE_LEN as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|source| IpFilterError::Io {
                    name: name.to_owned(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_FILTER_FILE_SIZE {
                return Err(IpFilterError::TooLarge {
                    name: name.to_owned(),
                });
            }
            line_no += 1;
            if line_no == 1 && buf.starts_with(b"\xFF\xFF\xFF\xFFP2B") {
                return Err(IpFilterError::Binary {
                    name: name.to_owned(),
                });
            }
            if buf.len() > MAX_LINE_LEN && buf.last() != Some(&b'\n') {
                return Err(err(line_no, &buf, LineError::TooLong));
            }
            let mut line: &[u8] = &buf;
            if line_no == 1 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") || line.starts_with(b"//") {
                continue;
            }
            let f = *format.get_or_insert_with(|| detect(line));
            let range = match f {
                Format::P2p => parse_p2p(line),
                Format::Dat => parse_dat(line),
            }
            .map_err(|reason| err(line_no, line, reason))?;
            if v4.len() + v6.len() >= MAX_FILTER_RANGES {
                return Err(IpFilterError::TooManyRanges {
                    name: name.to_owned(),
                    line: line_no,
                });
            }
            match range {
                Some(Range::V4(a, b)) => v4.push((a, b)),
                Some(Range::V6(a, b)) => v6.push((a, b)),
                None => {}
            }
        }
        Ok(IpFilter::from_ranges(v4, v6))
    }

    /// A filter of these ranges (in any order, overlapping or not); the parts of IPv6
    /// ranges inside `::ffff:0:0/96` go to the IPv4 table.
    pub fn from_ranges(mut v4: Vec<(u32, u32)>, mut v6: Vec<(u128, u128)>) -> IpFilter {
        split_mapped(&mut v4, &mut v6);
        merge(&mut v4);
        merge(&mut v6);
        IpFilter {
            v4,
            v6,
            blocked: BlockedSet::default(),
        }
    }

    /// Whether `ip` is in a blocked range (IPv4-mapped IPv6 addresses as IPv4).
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => contains(&self.v6, u128::from(a)),
        }
    }

    /// Like [`IpFilter::is_blocked`], and remembers the address when it is blocked.
    pub fn check(&self, ip: IpAddr) -> bool {
        let blocked = self.is_blocked(ip);
        if blocked {
            self.blocked.record(ip);
        }
        blocked
    }

    /// Distinct addresses turned away so far by any user of the filter (at most
    /// [`MAX_BLOCKED_TRACKED`]).
    pub fn blocked(&self) -> u64 {
        self.blocked.count()
    }

    /// Ranges after merging (IPv4, IPv6).
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Moves the parts of IPv6 ranges inside `::ffff:0:0/96` to the IPv4 table (lookups
/// of mapped addresses go there); what lies outside stays IPv6, split in two when the
/// range runs past both ends of the mapped block.
fn split_mapped(v4: &mut Vec<(u32, u32)>, v6: &mut Vec<(u128, u128)>) {
    let n = v6.len();
    let mut i = 0;
    let mut kept = 0;
    while i < n {
        let (a, b) = v6[i];
        i += 1;
        if b < MAPPED_FIRST || a > MAPPED_LAST {
            v6[kept] = (a, b);
            kept += 1;
            continue;
        }
        let (lo, hi) = (a.max(MAPPED_FIRST), b.min(MAPPED_LAST));
        v4.push(((lo - MAPPED_FIRST) as u32, (hi - MAPPED_FIRST) as u32));
        if a < MAPPED_FIRST {
            v6[kept] = (a, MAPPED_FIRST - 1);
            kept += 1;
        }
        if b > MAPPED_LAST {
            // Appended past the ones still to read; moved down below.
            v6.push((MAPPED_LAST + 1, b));
        }
    }
    // Drop the ranges read (and the moved ones), keeping the appended tails.
    v6.drain(kept..n);
}

/// Sorts ranges and merges those that overlap or touch, in place.
fn merge<T: Copy + Ord + num::Step>(ranges: &mut Vec<(T, T)>) {
    ranges.sort_unstable();
    let mut w = 0usize;
    for r in 0..ranges.len() {
        let (a, b) = ranges[r];
        if w > 0 && a <= ranges[w - 1].1.next_or_max() {
            ranges[w - 1].1 = ranges[w - 1].1.max(b);
        } else {
            ranges[w] = (a, b);
            w += 1;
        }
    }
    ranges.truncate(w);
    ranges.shrink_to_fit();
}

fn contains<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// The integer forms of addresses, for merging.
mod num {
    pub trait Step {
        /// One more, or the same at the top of the range.
        fn next_or_max(self) -> Self;
    }
    impl Step for u32 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// The format of a file whose first range line is `line`.
fn detect(line: &[u8]) -> Format {
    let range = line.split(|&c| c == b',').next().unwrap_or(line);
    match split_once(range, b'-') {
        Some((a, b)) if parse_addr(a).is_some() && parse_addr(b).is_some() => Format::Dat,
        _ => Format::P2p,
    }
}

fn split_once(s: &[u8], c: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&x| x == c)?;
    Some((&s[..i], &s[i + 1..]))
}

/// An eMule line: `first - last [, access [, description]]`; `None` when its access
/// level does not block.
pub fn parse_dat(line: &[u8]) -> Result<Option<Range>, LineError> {
    let mut fields = line.splitn(3, |&c| c == b',');
    let range = fields.next().unwrap_or_default();
    if let Some(access) = fields.next() {
        let access = access.trim_ascii();
        if access.is_empty() || access.len() > 9 || !access.iter().all(u8::is_ascii_digit) {
            return Err(LineError::BadAccess);
        }
        let level: u32 = std::str::from_utf8(access)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(LineError::BadAccess)?;
        if level > 127 {
            return Ok(None);
        }
    }
    let (a, b) = split_once(range, b'-').ok_or(LineError::NotARange)?;
    let first = parse_addr(a).ok_or(LineError::BadFirst)?;
    let last = parse_addr(b).ok_or(LineError::BadLast)?;
    make_range(first, last).map(Some)
}

/// A P2P line: `description:first-last` (the description may be empty or missing).
pub fn parse_p2p(line: &[u8]) -> Result<Option<Range>, LineError> {
    let dash = line
        .iter()
        .rposition(|&c| c == b'-')
        .ok_or(LineError::NotARange)?;
    let (head, tail) = (&line[..dash], &line[dash + 1..]);
    let first = match parse_addr(head) {
        // No description.
        Some(a) => a,
        None => {
            // Only colons whose tail is short enough to be an address are tried, so a
            // long line of colons costs one pass, not one parse per colon. Skipping
            // the blanks after each colon stops at the next colon: one pass in all.
            let head = head.trim_ascii_end();
            head.iter()
                .enumerate()
                .filter(|(_, &c)| c == b':')
                .find_map(|(i, _)| {
                    let rest = head[i + 1..].trim_ascii_start();
                    (rest.len() <= MAX_ADDR_LEN)
                        .then(|| parse_addr(rest))
                        .flatten()
                })
                .ok_or(if head.contains(&b':') {
                    LineError::BadFirst
                } else {
                    LineError::NotARange
                })?
        }
    };
    let last = parse_addr(tail).ok_or(LineError::BadLast)?;
    make_range(first, last).map(Some)
}

/// The range `first`–`last`: IPv4 when both are IPv4 (IPv4-mapped IPv6 counted as
/// IPv4), IPv6 when both are written as IPv6 and not both mapped (the mapped part is
/// moved to the IPv4 table at load), an error when one is IPv4 and the other a plain
/// IPv6 address.
fn make_range(first: IpAddr, last: IpAddr) -> Result<Range, LineError> {
    let both_v6 = first.is_ipv6() && last.is_ipv6();
    let (first, last) = match (first.to_canonical(), last.to_canonical()) {
        (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) => (a, b),
        _ if both_v6 => (first, last),
        pair => pair,
    };
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b {
                return Err(LineError::Reversed);
            }
            Ok(Range::V4(a, b))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let (a, b) = (u128::from(a), u128::from(b));
            if a > b {
                return Err(LineError::Reversed);
            }
            Ok(Range::V6(a, b))
        }
        _ => Err(LineError::MixedFamilies),
    }
}

/// An IPv4 address (each octet 1–3 digits, leading zeros allowed) or an IPv6 one,
/// surrounding whitespace ignored.
pub fn parse_addr(s: &[u8]) -> Option<IpAddr> {
    let s = s.trim_ascii();
    if let Some(v4) = parse_v4(s) {
        return Some(IpAddr::V4(v4));
    }
    if s.is_empty() || s.len() > MAX_ADDR_LEN || !s.contains(&b':') {
        return None;
    }
    std::str::from_utf8(s)
        .ok()?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn parse_v4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = p.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        *o = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A line for an error message: lossy UTF-8, at most [`SHOWN_CHARS`] characters.
fn clip(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line.trim_ascii());
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;

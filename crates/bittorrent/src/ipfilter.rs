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
//! ranges; IPv4-mapped IPv6 addresses count as IPv4. The format is chosen by the file's
//! extension (`.p2p`, `.dat`), otherwise from the first range line: eMule's when it is
//! `FIRST - LAST` before any `,`, P2P's otherwise.
//!
//! Policy: a file that does not parse is refused whole, naming the line and its text
//! (clipped); nothing is half-applied. Bounded: at most [`MAX_FILTER_FILE_SIZE`] bytes,
//! lines of at most [`MAX_LINE_LEN`] bytes, at most [`MAX_FILTER_RANGES`] ranges. Ranges
//! are sorted and merged at load; a lookup is a binary search. The filter is immutable
//! once built and shared as an `Arc` (no lock); its `blocked` counter is atomic.

use std::io::{self, BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest filter file read (typical lists are 10–30 MiB).
pub const MAX_FILTER_FILE_SIZE: u64 = 256 << 20;
/// Most ranges in one filter, counted before merging.
pub const MAX_FILTER_RANGES: usize = 2_000_000;
/// Longest line, in bytes.
pub const MAX_LINE_LEN: usize = 4096;
/// Characters of a bad line shown in an error.
const SHOWN_CHARS: usize = 60;

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

/// A block list: sorted, non-overlapping ranges of each family, and how many addresses
/// it turned away.
#[derive(Debug, Default)]
pub struct IpFilter {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    blocked: AtomicU64,
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

    /// A filter of these ranges (in any order, overlapping or not).
    pub fn from_ranges(v4: Vec<(u32, u32)>, v6: Vec<(u128, u128)>) -> IpFilter {
        IpFilter {
            v4: merge(v4),
            v6: merge(v6),
            blocked: AtomicU64::new(0),
        }
    }

    /// Whether `ip` is in a blocked range (IPv4-mapped IPv6 addresses as IPv4).
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => contains(&self.v6, u128::from(a)),
        }
    }

    /// Like [`IpFilter::is_blocked`], and counts the address when it is blocked: for
    /// each connection or address turned away.
    pub fn check(&self, ip: IpAddr) -> bool {
        let blocked = self.is_blocked(ip);
        if blocked {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        blocked
    }

    /// Addresses and connections turned away so far.
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Ranges after merging (IPv4, IPv6).
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Copy + Ord + num::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.next_or_max() => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.shrink_to_fit();
    out
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
        None => head
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b':')
            .find_map(|(i, _)| parse_addr(&head[i + 1..]))
            .ok_or(if head.contains(&b':') {
                LineError::BadFirst
            } else {
                LineError::NotARange
            })?,
    };
    let last = parse_addr(tail).ok_or(LineError::BadLast)?;
    make_range(first, last).map(Some)
}

fn make_range(first: IpAddr, last: IpAddr) -> Result<Range, LineError> {
    match (first.to_canonical(), last.to_canonical()) {
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
    if s.is_empty() || s.len() > 45 || !s.contains(&b':') {
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

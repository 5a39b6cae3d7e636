//! Bencode (BEP 3): a strict, bounded, zero-copy decoder and a canonical encoder.
//!
//! This module owns the byte-level format. It never allocates in proportion to a
//! length it has not yet seen in the input (a declared string length is checked against
//! the bytes that remain before anything is sliced), never recurses deeper than
//! [`Limits::max_depth`], never builds more than [`MAX_VALUES`] values, and never panics
//! on any input.
//!
//! Memory: a decoded value is a fixed-size [`Value`] that borrows its bytes from the
//! input (strings and integers are spans, never copies). Decoding makes two passes: the
//! first only counts the items of every list and dictionary (and refuses an input of
//! too many values before anything is built), the second allocates each list and
//! dictionary once at its exact size. So what a decoded input costs is bounded by its
//! number of values, whatever its shape.
//!
//! Design:
//! - [`Value`] borrows from the input and remembers the raw byte span of every value,
//!   so the infohash is the SHA-1 of the `info` dictionary exactly as it appears in the
//!   file, whatever its key order.
//! - Dictionary entries are kept in input order. Unsorted keys are accepted (real
//!   torrents have them); duplicate keys are rejected.
//! - Integers keep their decimal text, so integers of any size survive a round trip.
//! - The decoder accepts only canonical encodings of integers and string lengths (no
//!   leading zeros, no `-0`), so every accepted input re-encodes byte-identically with
//!   [`Value::to_owned_value`] followed by [`OwnedValue::encode`].
//!
//! A lossless JSON form lives in [`json`].

pub mod json;

use std::collections::HashSet;
use std::fmt;

/// Most values (integers, strings, lists, dictionaries, and dictionary keys) one decode
/// builds: four million, above the largest real torrents (a hybrid torrent of 100 000
/// files has under three million; libtorrent stops at three million tokens). Each costs
/// 48 bytes (a dictionary entry 64), so a decode stays within a few hundred MiB even
/// for an input made only of empty strings.
pub const MAX_VALUES: usize = 4_000_000;

/// Hard limits applied while decoding untrusted input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries accepted.
    pub max_depth: usize,
    /// Largest input accepted, in bytes.
    pub max_size: usize,
}

impl Limits {
    /// Limits for `.torrent` files and other metadata: 100 levels, 64 MiB.
    pub const METAINFO: Limits = Limits {
        max_depth: 100,
        max_size: 64 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::METAINFO
    }
}

/// Why a byte sequence is not acceptable bencode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode at byte {offset}: {kind}")]
pub struct DecodeError {
    /// Offset of the first offending byte in the input.
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    UnexpectedEnd { expected: &'static str },
    UnexpectedByte { found: u8, expected: &'static str },
    LeadingZero,
    NegativeZero,
    EmptyInteger,
    StringTooLong { declared: u64, available: usize },
    TooDeep { max: usize },
    TooLarge { size: usize, max: usize },
    DuplicateKey { key: String },
    TrailingBytes { count: usize },
    TooManyValues { max: usize },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd { expected } => {
                write!(f, "input ends early, expected {expected}")
            }
            Self::UnexpectedByte { found, expected } => {
                write!(f, "found {}, expected {expected}", describe_byte(*found))
            }
            Self::LeadingZero => write!(f, "number with a leading zero"),
            Self::NegativeZero => write!(f, "integer -0 is not allowed"),
            Self::EmptyInteger => write!(f, "integer without digits"),
            Self::StringTooLong {
                declared,
                available,
            } => write!(
                f,
                "string declares {declared} bytes but only {available} remain"
            ),
            Self::TooDeep { max } => write!(f, "nesting deeper than {max} levels"),
            Self::TooLarge { size, max } => {
                write!(f, "input of {size} bytes is larger than the limit of {max}")
            }
            Self::DuplicateKey { key } => write!(f, "duplicate dictionary key {key:?}"),
            Self::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the value")
            }
            Self::TooManyValues { max } => write!(
                f,
                "more than {max} values (integers, strings, lists, dictionaries and keys)"
            ),
        }
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// A decoded value borrowing from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// Offset of the value's first byte in the input.
    pub offset: usize,
    /// The exact bytes that encode this value.
    pub raw: &'a [u8],
    pub kind: Kind<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// The canonical decimal text of an integer, sign included.
    Int(&'a str),
    Bytes(&'a [u8]),
    /// Items in input order, in a slice of exactly their number.
    List(Box<[Value<'a>]>),
    /// Entries in input order; keys are unique.
    Dict(Box<[(&'a [u8], Value<'a>)]>),
}

impl<'a> Value<'a> {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Int(_) => "an integer",
            Kind::Bytes(_) => "a string",
            Kind::List(_) => "a list",
            Kind::Dict(_) => "a dictionary",
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer as i64, if it is an integer and fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a key up in a dictionary; `None` for other kinds.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn to_owned_value(&self) -> OwnedValue {
        match &self.kind {
            Kind::Int(s) => OwnedValue::Int((*s).to_owned()),
            Kind::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Kind::List(l) => OwnedValue::List(l.iter().map(Value::to_owned_value).collect()),
            Kind::Dict(d) => OwnedValue::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// Decodes exactly one value that spans the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    decode_with(input, Limits::default())
}

/// Decodes exactly one value that spans the whole input, with explicit limits.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value<'_>, DecodeError> {
    let (value, used) = decode_prefix_with(input, limits)?;
    if used != input.len() {
        return Err(DecodeError {
            offset: used,
            kind: DecodeErrorKind::TrailingBytes {
                count: input.len() - used,
            },
        });
    }
    Ok(value)
}

/// Decodes one value from the start of `input` and returns it with the number of bytes
/// it used (for messages that carry data after a bencoded header, like BEP 9).
pub fn decode_prefix_with(input: &[u8], limits: Limits) -> Result<(Value<'_>, usize), DecodeError> {
    decode_prefix_max_values(input, limits, MAX_VALUES)
}

/// [`decode_prefix_with`] with at most `max_values` values: [`MAX_VALUES`], or fewer in
/// tests, which then need not build millions of values to reach the limit.
fn decode_prefix_max_values(
    input: &[u8],
    limits: Limits,
    max_values: usize,
) -> Result<(Value<'_>, usize), DecodeError> {
    if input.len() > limits.max_size {
        return Err(DecodeError {
            offset: 0,
            kind: DecodeErrorKind::TooLarge {
                size: input.len(),
                max: limits.max_size,
            },
        });
    }
    let sizes = count_items(input, limits.max_depth, max_values)?;
    let mut d = Decoder {
        input,
        pos: 0,
        max_depth: limits.max_depth,
        sizes,
        opened: 0,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// The first pass: the number of items (keys included) of every list and dictionary of
/// the first value in `input`, in the order they open. It refuses more than
/// `max_values` values; at any other fault it stops and returns what it counted, and
/// the decoder, which checks everything, reports the fault.
fn count_items(input: &[u8], max_depth: usize, max_values: usize) -> Result<Vec<u32>, DecodeError> {
    let mut sizes: Vec<u32> = Vec::new();
    // Indices in `sizes` of the lists and dictionaries that are open.
    let mut open: Vec<usize> = Vec::new();
    let mut pos = 0;
    let mut values = 0usize;
    while let Some(&b) = input.get(pos) {
        if b == b'e' && !open.is_empty() {
            open.pop();
            pos += 1;
            if open.is_empty() {
                break;
            }
            continue;
        }
        values += 1;
        if values > max_values {
            return Err(DecodeError {
                offset: pos,
                kind: DecodeErrorKind::TooManyValues { max: max_values },
            });
        }
        if let Some(&top) = open.last() {
            sizes[top] = sizes[top].saturating_add(1);
        }
        match b {
            b'i' => match input[pos..].iter().position(|&c| c == b'e') {
                Some(n) => pos += n + 1,
                None => break,
            },
            b'0'..=b'9' => {
                let digits = input[pos..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                let len = std::str::from_utf8(&input[pos..pos + digits])
                    .ok()
                    .and_then(|d| d.parse::<usize>().ok());
                let start = pos + digits + 1;
                match len {
                    Some(len) if input.get(pos + digits) == Some(&b':') => {
                        match start.checked_add(len).filter(|&end| end <= input.len()) {
                            Some(end) => pos = end,
                            None => break,
                        }
                    }
                    _ => break,
                }
            }
            b'l' | b'd' if open.len() < max_depth => {
                open.push(sizes.len());
                sizes.push(0);
                pos += 1;
                continue;
            }
            _ => break,
        }
        if open.is_empty() {
            break;
        }
    }
    Ok(sizes)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    max_depth: usize,
    /// Item counts of the lists and dictionaries, in opening order (from [`count_items`]).
    sizes: Vec<u32>,
    /// How many lists and dictionaries have opened so far.
    opened: usize,
}

const VALUE_START: &str = "a value ('i', 'l', 'd' or a string length)";

impl<'a> Decoder<'a> {
    fn err(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, kind }
    }

    fn peek(&self, expected: &'static str) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(self.pos, DecodeErrorKind::UnexpectedEnd { expected }))
    }

    /// The item count the first pass found for the list or dictionary opening now.
    fn next_size(&mut self) -> usize {
        let n = self.sizes.get(self.opened).copied().unwrap_or(0);
        self.opened += 1;
        n as usize
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        let start = self.pos;
        let kind = match self.peek(VALUE_START)? {
            b'i' => {
                self.pos += 1;
                Kind::Int(self.integer()?)
            }
            b'0'..=b'9' => Kind::Bytes(self.string()?),
            b'l' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut items = Vec::with_capacity(self.next_size());
                while self.peek("a list item or 'e'")? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Kind::List(items.into_boxed_slice())
            }
            b'd' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> =
                    Vec::with_capacity(self.next_size() / 2);
                let mut seen: Option<HashSet<&'a [u8]>> = None;
                loop {
                    let b = self.peek("a dictionary key or 'e'")?;
                    if b == b'e' {
                        break;
                    }
                    if !b.is_ascii_digit() {
                        return Err(self.err(
                            self.pos,
                            DecodeErrorKind::UnexpectedByte {
                                found: b,
                                expected: "a dictionary key (a string) or 'e'",
                            },
                        ));
                    }
                    let key_pos = self.pos;
                    let key = self.string()?;
                    // Keys are almost always sorted: while they are, comparing with the
                    // last key finds duplicates; once they are not, a set keeps the check
                    // linear even for a hostile dictionary of millions of keys.
                    let duplicate = match (&mut seen, entries.last()) {
                        (Some(set), _) => !set.insert(key),
                        (None, Some((last, _))) if *last < key => false,
                        (None, None) => false,
                        (None, Some(_)) => {
                            let mut set: HashSet<&'a [u8]> =
                                entries.iter().map(|(k, _)| *k).collect();
                            let dup = !set.insert(key);
                            seen = Some(set);
                            dup
                        }
                    };
                    if duplicate {
                        return Err(self.err(
                            key_pos,
                            DecodeErrorKind::DuplicateKey {
                                key: String::from_utf8_lossy(key).into_owned(),
                            },
                        ));
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                self.pos += 1;
                Kind::Dict(entries.into_boxed_slice())
            }
            found => {
                return Err(self.err(
                    start,
                    DecodeErrorKind::UnexpectedByte {
                        found,
                        expected: VALUE_START,
                    },
                ))
            }
        };
        Ok(Value {
            offset: start,
            raw: &self.input[start..self.pos],
            kind,
        })
    }

    fn enter(&self, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.max_depth {
            return Err(self.err(
                self.pos,
                DecodeErrorKind::TooDeep {
                    max: self.max_depth,
                },
            ));
        }
        Ok(())
    }

    /// Parses `<digits>e` or `-<digits>e` after the leading 'i'.
    fn integer(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        if self.peek("an integer")? == b'-' {
            self.pos += 1;
        }
        let digits_start = self.pos;
        self.digits("a digit or 'e'")?;
        let digits = &self.input[digits_start..self.pos];
        if digits.is_empty() {
            return Err(self.err(digits_start, DecodeErrorKind::EmptyInteger));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.err(digits_start, DecodeErrorKind::LeadingZero));
        }
        if digits == b"0" && digits_start != start {
            return Err(self.err(start, DecodeErrorKind::NegativeZero));
        }
        self.expect(b'e', "'e' to end the integer")?;
        // Only ASCII digits and '-' were accepted above.
        Ok(std::str::from_utf8(&self.input[start..self.pos - 1]).unwrap_or_default())
    }

    /// Parses `<length>:<bytes>`.
    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.digits("a digit or ':'")?;
        let digits = &self.input[start..self.pos];
        if digits.is_empty() {
            let found = self.peek(VALUE_START)?;
            return Err(self.err(
                start,
                DecodeErrorKind::UnexpectedByte {
                    found,
                    expected: "a string length",
                },
            ));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.err(start, DecodeErrorKind::LeadingZero));
        }
        self.expect(b':', "':' after the string length")?;
        let available = self.input.len() - self.pos;
        // A length with more than 19 digits cannot fit in u64; treat it as u64::MAX,
        // which is always more than what remains.
        let declared = if digits.len() > 19 {
            u64::MAX
        } else {
            digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
        };
        if declared > available as u64 {
            return Err(self.err(
                start,
                DecodeErrorKind::StringTooLong {
                    declared,
                    available,
                },
            ));
        }
        let s = &self.input[self.pos..self.pos + declared as usize];
        self.pos += declared as usize;
        Ok(s)
    }

    fn digits(&mut self, expected: &'static str) -> Result<(), DecodeError> {
        loop {
            match self.peek(expected)? {
                b'0'..=b'9' => self.pos += 1,
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), DecodeError> {
        let found = self.peek(expected)?;
        if found != byte {
            return Err(self.err(
                self.pos,
                DecodeErrorKind::UnexpectedByte { found, expected },
            ));
        }
        self.pos += 1;
        Ok(())
    }
}

/// An owned bencode value, for building and re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    /// Canonical decimal text (no leading zeros, no `-0`).
    Int(String),
    Bytes(Vec<u8>),
    List(Vec<OwnedValue>),
    /// Entries are encoded in this order; keep them sorted for canonical output
    /// (see [`OwnedValue::dict`]).
    Dict(Vec<(Vec<u8>, OwnedValue)>),
}

impl OwnedValue {
    pub fn int(n: i64) -> Self {
        OwnedValue::Int(n.to_string())
    }

    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        OwnedValue::Bytes(b.into())
    }

    /// A dictionary with keys sorted by raw bytes, as BEP 3 requires.
    pub fn dict<K: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (K, OwnedValue)>) -> Self {
        let mut e: Vec<(Vec<u8>, OwnedValue)> =
            entries.into_iter().map(|(k, v)| (k.into(), v)).collect();
        e.sort_by(|a, b| a.0.cmp(&b.0));
        OwnedValue::Dict(e)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Int(s) => {
                out.push(b'i');
                out.extend_from_slice(s.as_bytes());
                out.push(b'e');
            }
            OwnedValue::Bytes(b) => encode_bytes(b, out),
            OwnedValue::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            OwnedValue::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Is `s` a canonical bencode integer text (what [`OwnedValue::Int`] must hold)?
pub fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let negative = digits.len() != s.len();
    let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    well_formed && !leading_zero && !(negative && digits == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &[u8]) -> DecodeError {
        decode(input).unwrap_err()
    }

    #[test]
    fn decodes_all_kinds_with_spans() {
        let input = b"d3:bar4:spam3:fooi42e4:listli-7e0:ee";
        let v = decode(input).unwrap();
        assert_eq!(v.raw, input);
        assert_eq!(v.get(b"bar").unwrap().as_str(), Some("spam"));
        assert_eq!(v.get(b"foo").unwrap().as_i64(), Some(42));
        let list = v.get(b"list").unwrap();
        assert_eq!(list.raw, b"li-7e0:e");
        assert_eq!(list.offset, 27);
        assert_eq!(list.as_list().unwrap()[0].as_i64(), Some(-7));
        assert_eq!(list.as_list().unwrap()[1].as_bytes(), Some(&b""[..]));
    }

    #[test]
    fn unsorted_keys_keep_their_order_and_raw_bytes() {
        let input = b"d1:bi1e1:ai2ee";
        let v = decode(input).unwrap();
        let keys: Vec<_> = v.as_dict().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![&b"b"[..], &b"a"[..]]);
        assert_eq!(v.to_owned_value().encode(), input);
    }

    #[test]
    fn big_integers_are_exact() {
        let input = b"i-123456789012345678901234567890e";
        let v = decode(input).unwrap();
        assert_eq!(v.kind, Kind::Int("-123456789012345678901234567890"));
        assert_eq!(v.as_i64(), None);
        assert_eq!(v.to_owned_value().encode(), input);
    }

    #[test]
    fn rejects_non_canonical_integers() {
        assert_eq!(err(b"i03e").kind, DecodeErrorKind::LeadingZero);
        assert_eq!(err(b"i-0e").kind, DecodeErrorKind::NegativeZero);
        assert_eq!(err(b"ie").kind, DecodeErrorKind::EmptyInteger);
        assert_eq!(err(b"i-e").kind, DecodeErrorKind::EmptyInteger);
        assert_eq!(err(b"03:abc").kind, DecodeErrorKind::LeadingZero);
        assert!(matches!(
            err(b"i1x").kind,
            DecodeErrorKind::UnexpectedByte { found: b'x', .. }
        ));
        assert_eq!(err(b"i1x").offset, 2);
    }

    #[test]
    fn rejects_truncation_with_offsets() {
        let e = err(b"d3:foo");
        assert_eq!(e.offset, 6);
        assert!(matches!(e.kind, DecodeErrorKind::UnexpectedEnd { .. }));
        let e = err(b"5:abc");
        assert_eq!(
            e.kind,
            DecodeErrorKind::StringTooLong {
                declared: 5,
                available: 3
            }
        );
        assert!(matches!(
            err(b"").kind,
            DecodeErrorKind::UnexpectedEnd { .. }
        ));
    }

    #[test]
    fn rejects_huge_declared_lengths_without_allocating() {
        // 2^40 and a length that overflows u64.
        let e = err(b"1099511627776:abc");
        assert!(matches!(
            e.kind,
            DecodeErrorKind::StringTooLong {
                declared: 1099511627776,
                ..
            }
        ));
        let e = err(b"99999999999999999999999999:x");
        assert!(matches!(e.kind, DecodeErrorKind::StringTooLong { .. }));
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut input = vec![b'l'; 100_000];
        input.extend(vec![b'e'; 100_000]);
        let e = err(&input);
        assert_eq!(e.kind, DecodeErrorKind::TooDeep { max: 100 });
        assert_eq!(e.offset, 100);
        let mut ok = vec![b'l'; 100];
        ok.extend(vec![b'e'; 100]);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn rejects_duplicates_trailing_data_and_bad_keys() {
        assert!(matches!(
            err(b"d1:ai1e1:ai2ee").kind,
            DecodeErrorKind::DuplicateKey { .. }
        ));
        assert!(matches!(
            err(b"d1:bi1e1:ai2e1:bi3ee").kind,
            DecodeErrorKind::DuplicateKey { .. }
        ));
        assert_eq!(
            err(b"i1ei2e"),
            DecodeError {
                offset: 3,
                kind: DecodeErrorKind::TrailingBytes { count: 3 }
            }
        );
        assert!(matches!(
            err(b"di1ei2ee").kind,
            DecodeErrorKind::UnexpectedByte { found: b'i', .. }
        ));
    }

    #[test]
    fn too_many_values_are_refused_before_they_are_built() {
        // A lower limit than MAX_VALUES, so the test builds thousands of values, not
        // millions (the limit is the same code whatever its value).
        const MAX: usize = 4000;
        fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
            decode_prefix_max_values(input, Limits::default(), MAX).map(|(v, _)| v)
        }
        // The list itself and MAX - 1 empty strings: accepted.
        let mut input = vec![b'l'];
        input.extend(b"0:".repeat(MAX - 1));
        input.push(b'e');
        let v = decode(&input).unwrap();
        assert_eq!(v.as_list().unwrap().len(), MAX - 1);
        // One more value is one too many; the error names the limit and the offset of
        // the first value past it.
        input.pop();
        input.extend(b"0:e");
        let e = decode(&input).unwrap_err();
        assert_eq!(
            e,
            DecodeError {
                offset: 1 + 2 * (MAX - 1),
                kind: DecodeErrorKind::TooManyValues { max: MAX }
            }
        );
        assert!(e.to_string().contains("more than 4000 values"), "{e}");
        // Dictionary keys count too.
        let mut dict = vec![b'd'];
        for i in 0..MAX / 2 {
            dict.extend(format!("{}:{i:07}0:", i.to_string().len().max(7)).bytes());
        }
        dict.push(b'e');
        assert!(matches!(
            decode(&dict).unwrap_err().kind,
            DecodeErrorKind::TooManyValues { .. }
        ));
        // The real limit, without building anything: counting stops at it.
        let mut input = vec![b'l'];
        input.extend(b"i0e".repeat(MAX_VALUES + 1));
        input.push(b'e');
        assert_eq!(
            count_items(&input, 100, MAX_VALUES).unwrap_err().kind,
            DecodeErrorKind::TooManyValues { max: MAX_VALUES }
        );
    }

    #[test]
    fn values_are_compact() {
        // A value is a fixed-size record pointing into the input; lists and
        // dictionaries hold exactly their items (growing a vector one item at a time
        // leaves up to twice the room).
        assert!(std::mem::size_of::<Value<'_>>() <= 48);
        let mut input = b"d1:al".to_vec();
        input.extend(b"0:".repeat(100_001));
        input.extend(b"e1:bd");
        for i in 0..1_001 {
            input.extend(format!("4:{i:04}i{i}e").bytes());
        }
        input.extend(b"ee");
        let v = decode(&input).unwrap();
        assert_eq!(v.get(b"a").unwrap().as_list().unwrap().len(), 100_001);
        assert_eq!(v.get(b"b").unwrap().as_dict().unwrap().len(), 1_001);
        let Kind::Bytes(b) = v.get(b"a").unwrap().as_list().unwrap()[7].kind else {
            panic!("a string")
        };
        assert_eq!(
            b.as_ptr(),
            input[5 + 7 * 2 + 2..].as_ptr(),
            "borrowed, not copied"
        );
    }

    #[test]
    fn size_limit() {
        let limits = Limits {
            max_depth: 4,
            max_size: 3,
        };
        assert!(matches!(
            decode_with(b"4:abcd", limits).unwrap_err().kind,
            DecodeErrorKind::TooLarge { size: 6, max: 3 }
        ));
    }

    #[test]
    fn error_messages_are_readable() {
        let e = err(b"d3:fooxe");
        assert_eq!(
            e.to_string(),
            "invalid bencode at byte 6: found 'x', expected a value ('i', 'l', 'd' or a string length)"
        );
    }

    #[test]
    fn canonical_int_check() {
        for ok in ["0", "-1", "10", "123456789012345678901234567890"] {
            assert!(is_canonical_int(ok), "{ok}");
        }
        for bad in ["", "-", "-0", "01", "+1", "1.0", " 1"] {
            assert!(!is_canonical_int(bad), "{bad}");
        }
    }

    #[test]
    fn owned_dict_sorts_keys() {
        let v = OwnedValue::dict([("b", OwnedValue::int(1)), ("a", OwnedValue::bytes("x"))]);
        assert_eq!(v.encode(), b"d1:a1:x1:bi1ee");
    }
}

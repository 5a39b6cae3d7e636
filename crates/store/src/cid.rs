//! Content identifiers: CIDv0 (base58 sha2-256 multihash of a DAG-PB block) and CIDv1
//! (version, codec, multihash; printed in base32). Only sha2-256 is produced or accepted,
//! and binary CIDs only in their one encoding (minimal varints).

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Multicodec of DAG-PB blocks (UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks (raw leaves).
pub const RAW: u64 = 0x55;
const SHA2_256: u8 = 0x12;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: u8,
    codec: u64,
    digest: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidError {
    #[error("empty CID")]
    Empty,
    #[error("not a CID: {0}")]
    Invalid(&'static str),
    #[error("unsupported multibase prefix {0:?} (use base58 Qm…, or base32 b…)")]
    Multibase(char),
    #[error("unsupported codec 0x{0:x} (dag-pb and raw are served)")]
    Codec(u64),
    #[error("unsupported hash function 0x{0:x} (only sha2-256)")]
    Hash(u64),
}

impl Cid {
    /// The CID of `block` with the given version and codec (CIDv0 is always DAG-PB).
    pub fn hash(version: u8, codec: u64, block: &[u8]) -> Cid {
        Cid::from_digest(version, codec, Sha256::digest(block).into())
    }

    pub fn from_digest(version: u8, codec: u64, digest: [u8; 32]) -> Cid {
        let version = if version == 0 && codec == DAG_PB {
            0
        } else {
            1
        };
        Cid {
            version,
            codec,
            digest,
        }
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    pub fn codec(&self) -> u64 {
        self.codec
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The same block under a CIDv1.
    pub fn to_v1(self) -> Cid {
        Cid { version: 1, ..self }
    }

    /// The multihash: `0x12 0x20 digest`.
    pub fn multihash(&self) -> [u8; 34] {
        let mut m = [0u8; 34];
        m[0] = SHA2_256;
        m[1] = 32;
        m[2..].copy_from_slice(&self.digest);
        m
    }

    /// Binary form, as stored in DAG-PB links.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(38);
        if self.version == 1 {
            put_varint(&mut out, 1);
            put_varint(&mut out, self.codec);
        }
        out.extend_from_slice(&self.multihash());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Cid, CidError> {
        if b.len() == 34 && b[0] == SHA2_256 && b[1] == 32 {
            return Ok(Cid {
                version: 0,
                codec: DAG_PB,
                digest: b[2..].try_into().expect("32 bytes"),
            });
        }
        let mut pos = 0;
        let version = get_varint(b, &mut pos).ok_or(CidError::Invalid("truncated"))?;
        if version != 1 {
            return Err(CidError::Invalid("unknown CID version"));
        }
        let codec = get_varint(b, &mut pos).ok_or(CidError::Invalid("truncated"))?;
        if codec != DAG_PB && codec != RAW {
            return Err(CidError::Codec(codec));
        }
        let hash = get_varint(b, &mut pos).ok_or(CidError::Invalid("truncated"))?;
        let len = get_varint(b, &mut pos).ok_or(CidError::Invalid("truncated"))?;
        if hash != u64::from(SHA2_256) {
            return Err(CidError::Hash(hash));
        }
        if len != 32 || b.len() != pos + 32 {
            return Err(CidError::Invalid("bad multihash length"));
        }
        let cid = Cid {
            version: 1,
            codec,
            digest: b[pos..].try_into().expect("32 bytes"),
        };
        // One CID, one encoding: varints padded with 0x80 bytes are refused (as go-cid does).
        if cid.to_bytes() != b {
            return Err(CidError::Invalid("varint not minimally encoded"));
        }
        Ok(cid)
    }

    /// Whether `block` hashes to this CID.
    pub fn matches(&self, block: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(block).into();
        d == self.digest
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == 0 {
            f.write_str(&bs58::encode(self.multihash()).into_string())
        } else {
            let s = data_encoding::BASE32_NOPAD.encode(&self.to_bytes());
            write!(f, "b{}", s.to_ascii_lowercase())
        }
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Cid, CidError> {
        if s.is_empty() {
            return Err(CidError::Empty);
        }
        if s.len() > 200 {
            return Err(CidError::Invalid("too long"));
        }
        if s.len() == 46 && s.starts_with("Qm") {
            let b = bs58::decode(s)
                .into_vec()
                .map_err(|_| CidError::Invalid("bad base58"))?;
            return Cid::from_bytes(&b).and_then(|c| {
                if c.version == 0 {
                    Ok(c)
                } else {
                    Err(CidError::Invalid("bad CIDv0"))
                }
            });
        }
        let (prefix, rest) = s.split_at(s.chars().next().map_or(0, char::len_utf8));
        let bytes = match prefix {
            "b" | "B" => data_encoding::BASE32_NOPAD
                .decode(rest.to_ascii_uppercase().as_bytes())
                .map_err(|_| CidError::Invalid("bad base32"))?,
            "z" => bs58::decode(rest)
                .into_vec()
                .map_err(|_| CidError::Invalid("bad base58"))?,
            "f" | "F" => data_encoding::HEXLOWER_PERMISSIVE
                .decode(rest.as_bytes())
                .map_err(|_| CidError::Invalid("bad base16"))?,
            _ => {
                return Err(CidError::Multibase(
                    prefix.chars().next().unwrap_or_default(),
                ))
            }
        };
        if bytes.first() != Some(&1) {
            return Err(CidError::Invalid("not a CIDv1"));
        }
        Cid::from_bytes(&bytes)
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint of at most 10 bytes.
pub(crate) fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v0: Cid = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
            .parse()
            .unwrap();
        assert_eq!(v0.version(), 0);
        assert_eq!(
            v0.to_string(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
        let v1 = v0.to_v1();
        let s = v1.to_string();
        assert!(s.starts_with("bafybei"), "{s}");
        assert_eq!(s.parse::<Cid>().unwrap(), v1);
        assert_eq!(s.to_uppercase().parse::<Cid>().unwrap(), v1);
        let z = format!("z{}", bs58::encode(v1.to_bytes()).into_string());
        assert_eq!(z.parse::<Cid>().unwrap(), v1);
        let f = format!("f{}", data_encoding::HEXLOWER.encode(&v1.to_bytes()));
        assert_eq!(f.parse::<Cid>().unwrap(), v1);
        let raw = Cid::hash(1, RAW, b"");
        assert_eq!(
            raw.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "Qm",
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXE0",
            "bafy",
            "x123",
            "é",
            "b",
            "zzzz",
            "bagaaierasords4njcts6vs7qvdjfcvgnume4hqohf65zsfguprqphs3icwea",
        ] {
            assert!(s.parse::<Cid>().is_err(), "{s}");
        }
    }

    #[test]
    fn only_minimal_varints() {
        // The CIDv1 of a raw block with its version and then its codec written in two
        // bytes instead of one: the same numbers, but not the one encoding of that CID.
        let canonical = Cid::hash(1, RAW, b"x").to_bytes();
        let mut long_version = vec![0x81, 0x00];
        long_version.extend_from_slice(&canonical[1..]);
        let mut long_codec = vec![0x01, 0xd5, 0x00];
        long_codec.extend_from_slice(&canonical[2..]);
        for b in [long_version, long_codec] {
            assert_eq!(
                Cid::from_bytes(&b),
                Err(CidError::Invalid("varint not minimally encoded")),
                "{b:02x?}"
            );
        }
        let text = format!(
            "b{}",
            data_encoding::BASE32_NOPAD.encode(&{
                let mut b = vec![0x01, 0xd5, 0x00];
                b.extend_from_slice(&canonical[2..]);
                b
            })
        );
        assert!(text.to_ascii_lowercase().parse::<Cid>().is_err());
        assert_eq!(Cid::from_bytes(&canonical), Ok(Cid::hash(1, RAW, b"x")));
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(get_varint(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }
}

//! Infohashes: v1 (SHA-1 of the info dictionary, BEP 3) and v2 (SHA-256, BEP 52).

use std::fmt;
use std::str::FromStr;

/// A v1 infohash, or a v2 infohash truncated to 20 bytes as used on the peer wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A full v2 infohash (SHA-256 of the info dictionary).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an infohash: {reason}")]
pub struct InfoHashParseError {
    pub input: String,
    pub reason: &'static str,
}

impl InfoHash {
    /// SHA-1 of the given bytes (the raw info dictionary).
    pub fn of(info_bytes: &[u8]) -> Self {
        use sha1::Digest;
        InfoHash(sha1::Sha1::digest(info_bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl InfoHashV2 {
    /// SHA-256 of the given bytes (the raw info dictionary).
    pub fn of(info_bytes: &[u8]) -> Self {
        use sha2::Digest;
        InfoHashV2(sha2::Sha256::digest(info_bytes).into())
    }

    /// The first 20 bytes, which stand for the torrent in handshakes, trackers and DHT.
    pub fn truncated(&self) -> InfoHash {
        let mut t = [0u8; 20];
        t.copy_from_slice(&self.0[..20]);
        InfoHash(t)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The BEP 52 / BEP 9 multihash form: `1220` followed by the hex digest.
    pub fn to_multihash_hex(&self) -> String {
        format!("1220{}", self.to_hex())
    }
}

impl FromStr for InfoHash {
    type Err = InfoHashParseError;

    /// Accepts 40 hex digits or 32 base32 characters (RFC 4648, either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| InfoHashParseError {
            input: s.to_owned(),
            reason,
        };
        let mut out = [0u8; 20];
        match s.len() {
            40 => hex::decode_to_slice(s, &mut out).map_err(|_| err("not hexadecimal"))?,
            32 => {
                let bytes = data_encoding::BASE32
                    .decode(s.to_ascii_uppercase().as_bytes())
                    .map_err(|_| err("not base32"))?;
                // Padding ('=') makes 32 characters decode to fewer than 20 bytes.
                if bytes.len() != 20 {
                    return Err(err("base32 infohash must decode to 20 bytes"));
                }
                out.copy_from_slice(&bytes);
            }
            _ => return Err(err("expected 40 hex or 32 base32 characters")),
        }
        Ok(InfoHash(out))
    }
}

impl FromStr for InfoHashV2 {
    type Err = InfoHashParseError;

    /// Accepts 64 hex digits, or the multihash form `1220` + 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| InfoHashParseError {
            input: s.to_owned(),
            reason,
        };
        let digest = match s.len() {
            64 => s,
            68 if s.starts_with("1220") => &s[4..],
            68 => {
                return Err(err(
                    "only sha2-256 multihashes (prefix 1220) are v2 infohashes",
                ))
            }
            _ => return Err(err("expected 64 hex digits or a 1220… multihash")),
        };
        let mut out = [0u8; 32];
        hex::decode_to_slice(digest, &mut out).map_err(|_| err("not hexadecimal"))?;
        Ok(InfoHashV2(out))
    }
}

macro_rules! hex_fmt {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }
    };
}
hex_fmt!(InfoHash);
hex_fmt!(InfoHashV2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base32() {
        let hex: InfoHash = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a".parse().unwrap();
        let b32: InfoHash = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK".parse().unwrap();
        assert_eq!(hex, b32);
        let lower: InfoHash = "yex6dqdlxisuvhoj6um3gnnkpqjwpkek".parse().unwrap();
        assert_eq!(hex, lower);
        assert!("c12f".parse::<InfoHash>().is_err());
        assert!("zz2fe1c06bba254a9dc9f519b335aa7c1367a88a"
            .parse::<InfoHash>()
            .is_err());
        assert!("1111111111111111111111111111111!"
            .parse::<InfoHash>()
            .is_err());
    }

    #[test]
    fn v2_forms() {
        let h = InfoHashV2([7; 32]);
        assert_eq!(h.to_multihash_hex().parse::<InfoHashV2>().unwrap(), h);
        assert_eq!(h.to_hex().parse::<InfoHashV2>().unwrap(), h);
        assert_eq!(h.truncated().0, [7; 20]);
        assert!(format!("1114{}", h.to_hex()).parse::<InfoHashV2>().is_err());
    }
}

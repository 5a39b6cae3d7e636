//! The peer wire protocol (BEP 3) with the fast extension (BEP 6) and the extension
//! protocol handshake (BEP 10): handshake and message framing.
//!
//! Reading never trusts a length: a message longer than the caller's cap is an error
//! before any byte of it is buffered, so a 4 GiB length prefix costs nothing.

use crate::infohash::InfoHash;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Block size requested from peers (BEP 3 convention).
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block a peer may ask of us; larger requests are refused.
pub const MAX_REQUEST: u32 = 128 * 1024;

/// Reserved bits we set: BEP 10 extension protocol and BEP 6 fast extension; BEP 5
/// (DHT) only when a DHT node runs, via [`reserved_with_dht`].
pub fn our_reserved() -> [u8; 8] {
    let mut r = [0u8; 8];
    r[5] |= 0x10; // BEP 10
    r[7] |= 0x04; // BEP 6
    r
}

/// [`our_reserved`] plus the BEP 5 DHT bit when `dht` is true.
pub fn reserved_with_dht(dht: bool) -> [u8; 8] {
    let mut r = our_reserved();
    if dht {
        r[7] |= 0x01;
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    pub fn to_bytes(&self) -> [u8; 68] {
        let mut b = [0u8; 68];
        b[0] = 19;
        b[1..20].copy_from_slice(PROTOCOL);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash.0);
        b[48..68].copy_from_slice(&self.peer_id);
        b
    }

    pub fn parse(b: &[u8; 68]) -> io::Result<Self> {
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(bad("not a BitTorrent handshake"));
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&b[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&b[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&b[48..68]);
        Ok(Handshake {
            reserved,
            info_hash: InfoHash(info_hash),
            peer_id,
        })
    }

    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Self> {
        let mut b = [0u8; 68];
        r.read_exact(&mut b).await?;
        Handshake::parse(&b)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Vec<u8>),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: Vec<u8>,
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    Port(u16),
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    AllowedFast(u32),
    /// BEP 10: extended message id and bencoded payload.
    Extended {
        id: u8,
        payload: Vec<u8>,
    },
    /// A message id this client does not know; ignored.
    Unknown(u8),
}

impl Message {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn header(out: &mut Vec<u8>, len: u32, id: u8) {
            out.extend(len.to_be_bytes());
            out.push(id);
        }
        fn triple(out: &mut Vec<u8>, id: u8, a: u32, b: u32, c: u32) {
            header(out, 13, id);
            out.extend(a.to_be_bytes());
            out.extend(b.to_be_bytes());
            out.extend(c.to_be_bytes());
        }
        match self {
            Message::KeepAlive => out.extend(0u32.to_be_bytes()),
            Message::Choke => header(out, 1, 0),
            Message::Unchoke => header(out, 1, 1),
            Message::Interested => header(out, 1, 2),
            Message::NotInterested => header(out, 1, 3),
            Message::Have(i) => {
                header(out, 5, 4);
                out.extend(i.to_be_bytes());
            }
            Message::Bitfield(b) => {
                header(out, 1 + b.len() as u32, 5);
                out.extend(b);
            }
            Message::Request {
                index,
                begin,
                length,
            } => triple(out, 6, *index, *begin, *length),
            Message::Piece { index, begin, data } => {
                header(out, 9 + data.len() as u32, 7);
                out.extend(index.to_be_bytes());
                out.extend(begin.to_be_bytes());
                out.extend(data);
            }
            Message::Cancel {
                index,
                begin,
                length,
            } => triple(out, 8, *index, *begin, *length),
            Message::Port(p) => {
                header(out, 3, 9);
                out.extend(p.to_be_bytes());
            }
            Message::Suggest(i) => {
                header(out, 5, 0x0d);
                out.extend(i.to_be_bytes());
            }
            Message::HaveAll => header(out, 1, 0x0e),
            Message::HaveNone => header(out, 1, 0x0f),
            Message::Reject {
                index,
                begin,
                length,
            } => triple(out, 0x10, *index, *begin, *length),
            Message::AllowedFast(i) => {
                header(out, 5, 0x11);
                out.extend(i.to_be_bytes());
            }
            Message::Extended { id, payload } => {
                header(out, 2 + payload.len() as u32, 20);
                out.push(*id);
                out.extend(payload);
            }
            Message::Unknown(_) => {}
        }
    }

    /// Reads one message; a length over `max_len` is an error before any payload is read.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R, max_len: u32) -> io::Result<Message> {
        let len = r.read_u32().await?;
        if len == 0 {
            return Ok(Message::KeepAlive);
        }
        if len > max_len {
            return Err(bad(format!(
                "message of {len} bytes is over the limit of {max_len}"
            )));
        }
        let id = r.read_u8().await?;
        let body = len - 1;
        let fixed = |want: u32| {
            if body == want {
                Ok(())
            } else {
                Err(bad(format!(
                    "message {id} has {body} payload bytes, expected {want}"
                )))
            }
        };
        Ok(match id {
            0 => fixed(0).map(|_| Message::Choke)?,
            1 => fixed(0).map(|_| Message::Unchoke)?,
            2 => fixed(0).map(|_| Message::Interested)?,
            3 => fixed(0).map(|_| Message::NotInterested)?,
            4 => {
                fixed(4)?;
                Message::Have(r.read_u32().await?)
            }
            5 => {
                let mut b = vec![0u8; body as usize];
                r.read_exact(&mut b).await?;
                Message::Bitfield(b)
            }
            6 | 8 | 0x10 => {
                fixed(12)?;
                let (index, begin, length) = (
                    r.read_u32().await?,
                    r.read_u32().await?,
                    r.read_u32().await?,
                );
                match id {
                    6 => Message::Request {
                        index,
                        begin,
                        length,
                    },
                    8 => Message::Cancel {
                        index,
                        begin,
                        length,
                    },
                    _ => Message::Reject {
                        index,
                        begin,
                        length,
                    },
                }
            }
            7 => {
                if body < 8 {
                    return Err(bad("piece message shorter than its header"));
                }
                let index = r.read_u32().await?;
                let begin = r.read_u32().await?;
                let data = read_payload(r, body - 8).await?;
                Message::Piece { index, begin, data }
            }
            9 => {
                fixed(2)?;
                Message::Port(r.read_u16().await?)
            }
            0x0d | 0x11 => {
                fixed(4)?;
                let i = r.read_u32().await?;
                if id == 0x0d {
                    Message::Suggest(i)
                } else {
                    Message::AllowedFast(i)
                }
            }
            0x0e => fixed(0).map(|_| Message::HaveAll)?,
            0x0f => fixed(0).map(|_| Message::HaveNone)?,
            20 => {
                if body < 1 {
                    return Err(bad("empty extended message"));
                }
                let eid = r.read_u8().await?;
                let mut payload = vec![0u8; (body - 1) as usize];
                r.read_exact(&mut payload).await?;
                Message::Extended { id: eid, payload }
            }
            other => {
                // Skip what we do not understand, within the cap already checked.
                let mut skip = r.take(u64::from(body));
                tokio::io::copy(&mut skip, &mut tokio::io::sink()).await?;
                Message::Unknown(other)
            }
        })
    }
}

/// Reads exactly `len` bytes (already checked against the cap) without zero-filling
/// the buffer first.
async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len as usize);
    r.take(u64::from(len)).read_to_end(&mut data).await?;
    if data.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a message",
        ));
    }
    Ok(data)
}

/// Writes a handshake.
pub async fn write_handshake<W: AsyncWrite + Unpin>(w: &mut W, h: &Handshake) -> io::Result<()> {
    w.write_all(&h.to_bytes()).await?;
    w.flush().await
}

/// The cap on one message for a torrent of `pieces` pieces: a block of the largest
/// size we accept plus headers, or the bitfield, whichever is larger.
pub fn max_message_len(pieces: u32) -> u32 {
    (MAX_REQUEST + 9).max(1 + pieces.div_ceil(8)).max(1 << 16)
}

/// BEP 10 extended handshake that we send: `ut_metadata` (BEP 9) with the metadata size
/// when we have it, our request queue depth, client name and listen port.
pub fn extended_handshake(
    port: u16,
    reqq: u32,
    metadata_size: Option<usize>,
    pex: bool,
) -> Vec<u8> {
    use crate::bencode::OwnedValue;
    let mut m = vec![(
        "ut_metadata",
        OwnedValue::int(i64::from(crate::metadata::UT_METADATA)),
    )];
    if pex {
        m.push(("ut_pex", OwnedValue::int(i64::from(crate::pex::UT_PEX))));
    }
    let mut entries = vec![
        ("m", OwnedValue::dict(m)),
        ("p", OwnedValue::int(i64::from(port))),
        ("reqq", OwnedValue::int(i64::from(reqq))),
        (
            "v",
            OwnedValue::bytes(format!("btfs {}", env!("CARGO_PKG_VERSION"))),
        ),
    ];
    if let Some(size) = metadata_size {
        entries.push(("metadata_size", OwnedValue::int(size as i64)));
    }
    OwnedValue::dict(entries).encode()
}

/// What we read from a peer's BEP 10 handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerExtensions {
    pub client: Option<String>,
    pub reqq: Option<u32>,
    /// The id the peer wants `ut_metadata` messages sent with.
    pub ut_metadata: Option<u8>,
    /// The id the peer wants `ut_pex` messages sent with.
    pub ut_pex: Option<u8>,
    pub metadata_size: Option<usize>,
    /// The peer's listen port (`p`).
    pub port: Option<u16>,
}

pub fn parse_extended_handshake(payload: &[u8]) -> Option<PeerExtensions> {
    let limits = crate::bencode::Limits {
        max_depth: 8,
        max_size: 1 << 20,
    };
    let v = crate::bencode::decode_prefix_with(payload, limits).ok()?.0;
    v.as_dict()?;
    Some(PeerExtensions {
        client: v
            .get(b"v")
            .and_then(|c| c.as_bytes())
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()),
        reqq: v
            .get(b"reqq")
            .and_then(|n| n.as_i64())
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0),
        ut_metadata: v
            .get(b"m")
            .and_then(|m| m.get(b"ut_metadata"))
            .and_then(|n| n.as_i64())
            .and_then(|n| u8::try_from(n).ok())
            .filter(|&n| n > 0),
        ut_pex: v
            .get(b"m")
            .and_then(|m| m.get(b"ut_pex"))
            .and_then(|n| n.as_i64())
            .and_then(|n| u8::try_from(n).ok())
            .filter(|&n| n > 0),
        port: v
            .get(b"p")
            .and_then(|n| n.as_i64())
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n > 0),
        metadata_size: v
            .get(b"metadata_size")
            .and_then(|n| n.as_i64())
            .and_then(|n| usize::try_from(n).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(m: Message) {
        let mut buf = Vec::new();
        m.encode_into(&mut buf);
        let mut r = &buf[..];
        assert_eq!(Message::read(&mut r, 1 << 20).await.unwrap(), m);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn messages_round_trip() {
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(vec![0xff, 0x80]),
            Message::Request {
                index: 1,
                begin: 16384,
                length: 16384,
            },
            Message::Piece {
                index: 2,
                begin: 0,
                data: vec![9; 100],
            },
            Message::Cancel {
                index: 1,
                begin: 0,
                length: 5,
            },
            Message::Port(6881),
            Message::Suggest(3),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject {
                index: 4,
                begin: 0,
                length: 16384,
            },
            Message::AllowedFast(5),
            Message::Extended {
                id: 0,
                payload: extended_handshake(6881, 500, Some(100), true),
            },
        ] {
            round_trip(m).await;
        }
    }

    #[tokio::test]
    async fn hostile_framing() {
        // 4 GiB length prefix: refused without reading further.
        let mut r = &[0xff, 0xff, 0xff, 0xff, 7][..];
        assert!(Message::read(&mut r, 1 << 20).await.is_err());
        // Wrong fixed size.
        let mut r = &[0, 0, 0, 2, 1, 0][..];
        assert!(Message::read(&mut r, 1 << 20).await.is_err());
        // Truncated.
        let mut r = &[0, 0, 0, 13, 6, 0][..];
        assert!(Message::read(&mut r, 1 << 20).await.is_err());
        // Unknown ids are skipped.
        let mut r = &[0, 0, 0, 3, 99, 1, 2, 0, 0, 0, 1, 1][..];
        assert_eq!(
            Message::read(&mut r, 1 << 20).await.unwrap(),
            Message::Unknown(99)
        );
        assert_eq!(
            Message::read(&mut r, 1 << 20).await.unwrap(),
            Message::Unchoke
        );
    }

    #[test]
    fn handshakes() {
        let h = Handshake {
            reserved: our_reserved(),
            info_hash: InfoHash([1; 20]),
            peer_id: [2; 20],
        };
        let p = Handshake::parse(&h.to_bytes()).unwrap();
        assert_eq!(p, h);
        assert!(p.supports_extensions() && p.supports_fast());
        let mut b = h.to_bytes();
        b[3] = b'x';
        assert!(Handshake::parse(&b).is_err());
        let ext = parse_extended_handshake(&extended_handshake(1, 250, Some(77), true)).unwrap();
        assert_eq!(ext.ut_pex, Some(crate::pex::UT_PEX));
        assert_eq!(ext.port, Some(1));
        assert_eq!(ext.reqq, Some(250));
        assert_eq!(ext.ut_metadata, Some(crate::metadata::UT_METADATA));
        assert_eq!(ext.metadata_size, Some(77));
        assert!(ext.client.unwrap().starts_with("btfs"));
        assert!(parse_extended_handshake(b"garbage").is_none());
    }
}

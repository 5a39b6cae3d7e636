//! BEP 9 (`ut_metadata`): the info dictionary of a magnet link, fetched from peers.
//!
//! [`fetch`] dials candidates from a [`PeerStream`] a few at a time; each connection
//! asks for every 16 KiB piece of the metadata, and the first complete copy whose SHA-1
//! equals the magnet's infohash wins. Nothing a peer sends is trusted before that check:
//! `metadata_size` is capped at [`MAX_METADATA_SIZE`], pieces must have the announced
//! sizes, and a copy with the wrong hash is thrown away (the next peer is tried).
//! The same message format serves our own metadata to others (see the engine).

use crate::bencode::{self, Limits, OwnedValue};
use crate::infohash::InfoHash;
use crate::peers::PeerStream;
use crate::wire::{self, Handshake, Message};
use sha1::{Digest, Sha1};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The extended message id we assign to `ut_metadata` (peers send it to us with it).
pub const UT_METADATA: u8 = 1;
/// Size of one metadata piece (BEP 9).
pub const PIECE: usize = 16 * 1024;
/// Largest info dictionary accepted from peers (8 MiB: a torrent of ~400,000 pieces).
pub const MAX_METADATA_SIZE: usize = 8 << 20;
/// Connections tried at once.
const PARALLEL: usize = 4;
/// One connection's whole exchange must finish within this.
const PER_PEER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    Request(u32),
    Data {
        piece: u32,
        total_size: usize,
        data: Vec<u8>,
    },
    Reject(u32),
}

fn dict(msg_type: i64, piece: u32, total: Option<usize>) -> Vec<u8> {
    let mut entries = vec![
        ("msg_type", OwnedValue::int(msg_type)),
        ("piece", OwnedValue::int(i64::from(piece))),
    ];
    if let Some(t) = total {
        entries.push(("total_size", OwnedValue::int(t as i64)));
    }
    OwnedValue::dict(entries).encode()
}

impl MetadataMessage {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetadataMessage::Request(p) => dict(0, *p, None),
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                let mut b = dict(1, *piece, Some(*total_size));
                b.extend_from_slice(data);
                b
            }
            MetadataMessage::Reject(p) => dict(2, *p, None),
        }
    }

    /// Parses a `ut_metadata` payload; `None` for anything malformed.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let limits = Limits {
            max_depth: 4,
            max_size: PIECE + 1024,
        };
        let (v, used) = bencode::decode_prefix_with(payload, limits).ok()?;
        let msg_type = v.get(b"msg_type")?.as_i64()?;
        let piece = u32::try_from(v.get(b"piece")?.as_i64()?).ok()?;
        match msg_type {
            0 => Some(MetadataMessage::Request(piece)),
            1 => {
                let total = usize::try_from(v.get(b"total_size")?.as_i64()?).ok()?;
                Some(MetadataMessage::Data {
                    piece,
                    total_size: total,
                    data: payload[used..].to_vec(),
                })
            }
            2 => Some(MetadataMessage::Reject(piece)),
            _ => None,
        }
    }
}

/// The piece `piece` of `info` as a data message, or a reject if out of range.
pub fn serve(info: &[u8], piece: u32) -> MetadataMessage {
    let start = piece as usize * PIECE;
    if start >= info.len() {
        return MetadataMessage::Reject(piece);
    }
    MetadataMessage::Data {
        piece,
        total_size: info.len(),
        data: info[start..(start + PIECE).min(info.len())].to_vec(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("no peer gave the torrent's metadata within {0:?} ({1})")]
    Timeout(Duration, String),
    #[error("no peer left to ask for the torrent's metadata ({0})")]
    NoPeers(String),
}

/// Fetches and verifies the info dictionary for `info_hash` from the peers that
/// `candidates` yields, within `timeout`.
pub async fn fetch(
    info_hash: InfoHash,
    peer_id: [u8; 20],
    port: u16,
    candidates: PeerStream,
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<SocketAddr>), MetadataError> {
    fetch_filtered(info_hash, peer_id, port, candidates, timeout, None).await
}

/// [`fetch`], never dialling an address that `filter` blocks.
pub async fn fetch_filtered(
    info_hash: InfoHash,
    peer_id: [u8; 20],
    port: u16,
    mut candidates: PeerStream,
    timeout: Duration,
    filter: Option<std::sync::Arc<crate::ipfilter::IpFilter>>,
) -> Result<(Vec<u8>, Vec<SocketAddr>), MetadataError> {
    let mut tried: HashSet<SocketAddr> = HashSet::new();
    let mut queue: Vec<SocketAddr> = Vec::new();
    let mut running: JoinSet<(SocketAddr, io::Result<Vec<u8>>)> = JoinSet::new();
    let mut open = true;
    let mut errors: Vec<String> = Vec::new();
    let mut good_peers: Vec<SocketAddr> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let summary = |errors: &[String], tried: usize| {
        let last: Vec<&String> = errors.iter().rev().take(3).collect();
        format!("{tried} peer(s) tried; last errors: {last:?}")
    };
    loop {
        while running.len() < PARALLEL {
            let Some(addr) = queue.pop() else { break };
            running.spawn(async move {
                let r = tokio::time::timeout(PER_PEER, fetch_from(addr, info_hash, peer_id, port))
                    .await
                    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
                (addr, r)
            });
        }
        if !open && running.is_empty() && queue.is_empty() {
            return Err(MetadataError::NoPeers(summary(&errors, tried.len())));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(MetadataError::Timeout(timeout, summary(&errors, tried.len())));
            }
            c = candidates.next(), if open => match c {
                Some(c) => {
                    if filter.as_ref().is_some_and(|f| f.check(c.addr.ip())) {
                        if errors.len() < 64 {
                            errors.push(format!("{}: blocked by the IP filter", c.addr));
                        }
                    } else if tried.insert(c.addr) {
                        queue.push(c.addr);
                    }
                }
                None => open = false,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((addr, r)) = done {
                    match r {
                        Ok(info) => {
                            good_peers.push(addr);
                            return Ok((info, good_peers));
                        }
                        Err(e) => errors.push(format!("{addr}: {e}")),
                    }
                }
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One peer: handshake, extended handshake, every metadata piece, hash check.
async fn fetch_from(
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: [u8; 20],
    port: u16,
) -> io::Result<Vec<u8>> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let ours = Handshake {
        reserved: wire::our_reserved(),
        info_hash,
        peer_id,
    };
    wire::write_handshake(&mut sock, &ours).await?;
    let theirs = Handshake::read(&mut sock).await?;
    if theirs.info_hash != info_hash {
        return Err(bad("the peer answered for another torrent"));
    }
    if !theirs.supports_extensions() {
        return Err(bad(
            "the peer does not support the extension protocol (BEP 10)",
        ));
    }
    let (rd, mut wr) = sock.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut out = Vec::new();
    Message::Extended {
        id: 0,
        payload: wire::extended_handshake(port, 250, None, false),
    }
    .encode_into(&mut out);
    // Interested, so that peers that want it before talking keep the connection.
    Message::Interested.encode_into(&mut out);
    tokio::io::AsyncWriteExt::write_all(&mut wr, &out).await?;
    let mut buf: Vec<u8> = Vec::new();
    let mut have: Vec<bool> = Vec::new();
    let mut size = 0usize;
    loop {
        let msg = Message::read(&mut rd, (PIECE + 1024).max(1 << 20) as u32).await?;
        let Message::Extended { id, payload } = msg else {
            continue;
        };
        if id == 0 {
            let ext = wire::parse_extended_handshake(&payload)
                .ok_or_else(|| bad("malformed extended handshake"))?;
            let their_id = ext
                .ut_metadata
                .ok_or_else(|| bad("the peer does not serve metadata (no ut_metadata)"))?;
            size = ext
                .metadata_size
                .ok_or_else(|| bad("the peer does not have the metadata yet"))?;
            if size == 0 || size > MAX_METADATA_SIZE {
                return Err(bad(format!(
                    "metadata_size {size} is outside 1..={MAX_METADATA_SIZE}"
                )));
            }
            let pieces = size.div_ceil(PIECE);
            buf = vec![0u8; size];
            have = vec![false; pieces];
            let mut req = Vec::new();
            for p in 0..pieces {
                Message::Extended {
                    id: their_id,
                    payload: MetadataMessage::Request(p as u32).encode(),
                }
                .encode_into(&mut req);
            }
            tokio::io::AsyncWriteExt::write_all(&mut wr, &req).await?;
            continue;
        }
        if id != UT_METADATA || have.is_empty() {
            continue;
        }
        match MetadataMessage::parse(&payload) {
            Some(MetadataMessage::Data {
                piece,
                total_size,
                data,
            }) => {
                let p = piece as usize;
                let start = p * PIECE;
                let expected = PIECE.min(size.saturating_sub(start));
                if total_size != size || p >= have.len() || data.len() != expected {
                    return Err(bad("a metadata piece of the wrong size"));
                }
                buf[start..start + expected].copy_from_slice(&data);
                have[p] = true;
                if have.iter().all(|h| *h) {
                    if InfoHash(Sha1::digest(&buf).into()) == info_hash
                        || crate::InfoHashV2::of(&buf).truncated() == info_hash
                    {
                        return Ok(buf);
                    }
                    return Err(bad("the metadata does not match the infohash"));
                }
            }
            Some(MetadataMessage::Reject(_)) => return Err(bad("the peer refused the metadata")),
            Some(MetadataMessage::Request(_)) => {}
            None => return Err(bad("malformed ut_metadata message")),
        }
    }
}

/// A `.torrent` file around a fetched info dictionary, with the magnet's trackers and
/// web seeds (each tracker its own tier).
pub fn torrent_bytes(info: &[u8], trackers: &[String], web_seeds: &[String]) -> Vec<u8> {
    // The info dictionary goes in byte for byte: its hash is the torrent's identity.
    let mut out = b"d".to_vec();
    let mut put = |k: &str, v: &OwnedValue| {
        OwnedValue::bytes(k.as_bytes()).encode_into(&mut out);
        v.encode_into(&mut out);
    };
    if let Some(first) = trackers.first() {
        put("announce", &OwnedValue::bytes(first.as_bytes()));
    }
    if trackers.len() > 1 {
        put(
            "announce-list",
            &OwnedValue::List(
                trackers
                    .iter()
                    .map(|t| OwnedValue::List(vec![OwnedValue::bytes(t.as_bytes())]))
                    .collect(),
            ),
        );
    }
    put(
        "created by",
        &OwnedValue::bytes(format!("btfs/{}", env!("CARGO_PKG_VERSION"))),
    );
    out.extend_from_slice(b"4:info");
    out.extend_from_slice(info);
    if !web_seeds.is_empty() {
        let list = OwnedValue::List(
            web_seeds
                .iter()
                .map(|u| OwnedValue::bytes(u.as_bytes()))
                .collect(),
        );
        OwnedValue::bytes("url-list").encode_into(&mut out);
        list.encode_into(&mut out);
    }
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            MetadataMessage::Request(3),
            MetadataMessage::Reject(1),
            MetadataMessage::Data {
                piece: 0,
                total_size: 5,
                data: b"hello".to_vec(),
            },
        ] {
            assert_eq!(MetadataMessage::parse(&m.encode()), Some(m));
        }
        assert_eq!(MetadataMessage::parse(b"garbage"), None);
        assert_eq!(MetadataMessage::parse(b"d8:msg_typei7e5:piecei0ee"), None);
    }

    #[test]
    fn serving_pieces() {
        let info = vec![7u8; PIECE + 10];
        assert!(
            matches!(serve(&info, 1), MetadataMessage::Data { ref data, .. } if data.len() == 10)
        );
        assert_eq!(serve(&info, 2), MetadataMessage::Reject(2));
    }

    #[test]
    fn torrent_around_info_keeps_the_hash() {
        let info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let t = torrent_bytes(
            info,
            &[
                "udp://127.0.0.1:1".into(),
                "http://127.0.0.1/announce".into(),
            ],
            &["http://127.0.0.1/ws".into()],
        );
        let m = crate::Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info_hash, Some(InfoHash::of(info)));
        assert_eq!(m.announce_list.len(), 2);
        assert_eq!(m.url_list, vec!["http://127.0.0.1/ws"]);
    }
}

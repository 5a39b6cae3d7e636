//! Peer exchange (BEP 11, `ut_pex`): the message format.
//!
//! Incoming lists are capped ([`MAX_PEERS`] addresses of each family per message) and
//! the engine accepts at most one message per peer per [`MIN_INTERVAL`]; private
//! torrents (BEP 27) never use PEX.

use crate::bencode::{self, Limits, OwnedValue};
use crate::tracker::{parse_compact_v4, parse_compact_v6};
use std::net::SocketAddr;
use std::time::Duration;

/// The extended message id we assign to `ut_pex`.
pub const UT_PEX: u8 = 2;
/// Most addresses of one family taken from (or put in) one message.
pub const MAX_PEERS: usize = 50;
/// Shortest time between two messages from (or to) one peer.
pub const MIN_INTERVAL: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    pub added: Vec<SocketAddr>,
    pub dropped: Vec<SocketAddr>,
}

fn compact(addrs: &[SocketAddr], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs.iter().filter(|a| a.is_ipv6() == v6).take(MAX_PEERS) {
        match a {
            SocketAddr::V4(a) if !v6 => {
                out.extend(a.ip().octets());
                out.extend(a.port().to_be_bytes());
            }
            SocketAddr::V6(a) if v6 => {
                out.extend(a.ip().octets());
                out.extend(a.port().to_be_bytes());
            }
            _ => {}
        }
    }
    out
}

impl PexMessage {
    pub fn encode(&self) -> Vec<u8> {
        let added4 = compact(&self.added, false);
        let added6 = compact(&self.added, true);
        OwnedValue::dict([
            ("added", OwnedValue::Bytes(added4.clone())),
            ("added.f", OwnedValue::Bytes(vec![0; added4.len() / 6])),
            ("added6", OwnedValue::Bytes(added6.clone())),
            ("added6.f", OwnedValue::Bytes(vec![0; added6.len() / 18])),
            ("dropped", OwnedValue::Bytes(compact(&self.dropped, false))),
            ("dropped6", OwnedValue::Bytes(compact(&self.dropped, true))),
        ])
        .encode()
    }

    /// Parses a `ut_pex` payload, keeping at most [`MAX_PEERS`] addresses per family.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let limits = Limits {
            max_depth: 4,
            max_size: 64 * 1024,
        };
        let v = bencode::decode_with(payload, limits).ok()?;
        v.as_dict()?;
        let list = |key: &[u8], v6: bool| -> Vec<SocketAddr> {
            let Some(b) = v.get(key).and_then(|x| x.as_bytes()) else {
                return Vec::new();
            };
            let width = if v6 { 18 } else { 6 };
            let b = &b[..(b.len() / width * width).min(MAX_PEERS * width)];
            (if v6 {
                parse_compact_v6(b)
            } else {
                parse_compact_v4(b)
            })
            .unwrap_or_default()
        };
        let mut added = list(b"added", false);
        added.extend(list(b"added6", true));
        let mut dropped = list(b"dropped", false);
        dropped.extend(list(b"dropped6", true));
        Some(PexMessage { added, dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_caps() {
        let m = PexMessage {
            added: vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:6882".parse().unwrap(),
            ],
            dropped: vec!["10.0.0.1:1".parse().unwrap()],
        };
        assert_eq!(PexMessage::parse(&m.encode()), Some(m));
        let many: Vec<SocketAddr> = (1..=200u16)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let big = PexMessage {
            added: many,
            dropped: vec![],
        };
        assert_eq!(
            PexMessage::parse(&big.encode()).unwrap().added.len(),
            MAX_PEERS
        );
        assert_eq!(PexMessage::parse(b"garbage"), None);
        // A ragged compact string keeps its whole entries.
        assert_eq!(
            PexMessage::parse(b"d5:added7:\x7f\x00\x00\x01\x1a\xe1\x00e")
                .unwrap()
                .added
                .len(),
            1
        );
    }

    #[test]
    fn each_family_has_its_own_cap() {
        // MAX_PEERS IPv4 peers listed before an IPv6 one: the IPv6 one is still sent.
        let mut added: Vec<SocketAddr> = (1..=MAX_PEERS as u16)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        added.push("[::1]:6881".parse().unwrap());
        let m = PexMessage {
            added,
            dropped: vec![],
        };
        assert_eq!(PexMessage::parse(&m.encode()), Some(m));
    }
}

//! UDP trackers (BEP 15): connect, announce, scrape, error.
//!
//! Each request uses its own socket, connected to the tracker, so the kernel drops
//! datagrams from any other address. A reply is accepted only with the right action,
//! our random transaction id and a valid size; anything else is ignored and the wait
//! goes on. Retransmissions follow BEP 15 (`base · 2^n`), with the base and the number
//! of retries taken from [`TrackerConfig`]. Connection ids are kept for 60 s per
//! tracker address and reused.

use super::{
    parse_compact_v4, parse_compact_v6, AnnounceRequest, AnnounceResponse, ScrapeStats,
    TrackerConfig, TrackerError,
};
use crate::infohash::InfoHash;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;
/// How long a connection id stays valid (BEP 15: one minute).
const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// Most hashes in one scrape packet (BEP 15).
pub const MAX_SCRAPE_HASHES: usize = 74;

pub(super) struct UdpTracker {
    base_timeout: Duration,
    max_retries: u32,
    connections: Mutex<HashMap<SocketAddr, (u64, Instant)>>,
}

fn protocol(url: &str, reason: impl Into<String>) -> TrackerError {
    TrackerError::Protocol {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// `udp://host:port[/path]` → `host:port`.
fn host_port(url: &str) -> Result<&str, TrackerError> {
    let rest = &url[6..];
    let hp = rest.split(['/', '?']).next().unwrap_or_default();
    let has_port = hp
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !has_port {
        return Err(TrackerError::BadUrl {
            url: url.to_owned(),
            reason: "a UDP tracker URL needs a host and a port (udp://host:port)".into(),
        });
    }
    Ok(hp)
}

impl UdpTracker {
    pub(super) fn new(config: &TrackerConfig) -> Self {
        UdpTracker {
            base_timeout: config.udp_base_timeout,
            max_retries: config.udp_max_retries,
            connections: Mutex::new(HashMap::new()),
        }
    }

    async fn socket(&self, url: &str) -> Result<(UdpSocket, SocketAddr), TrackerError> {
        let hp = host_port(url)?;
        let net = |reason: String| TrackerError::Network {
            url: url.to_owned(),
            reason,
        };
        let addr = tokio::net::lookup_host(hp)
            .await
            .map_err(|e| net(format!("cannot resolve {hp}: {e}")))?
            .next()
            .ok_or_else(|| net(format!("{hp} has no address")))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| net(format!("cannot open a UDP socket: {e}")))?;
        sock.connect(addr)
            .await
            .map_err(|e| net(format!("cannot reach {addr}: {e}")))?;
        Ok((sock, addr))
    }

    /// Sends `packet` (whose bytes 12..16 are the transaction id) as try `n` and waits
    /// `base · 2^n` for a reply that `accept` takes; `None` when none came in time.
    async fn transact<T>(
        &self,
        url: &str,
        sock: &UdpSocket,
        packet: &[u8],
        action: u32,
        n: u32,
        accept: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, TrackerError> {
        let txid = &packet[12..16];
        let mut buf = vec![0u8; 65_536];
        sock.send(packet).await.map_err(|e| TrackerError::Network {
            url: url.to_owned(),
            reason: format!("cannot send: {e}"),
        })?;
        let deadline = tokio::time::Instant::now() + self.try_timeout(n);
        loop {
            let len = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(TrackerError::Network {
                        url: url.to_owned(),
                        reason: match e.kind() {
                            std::io::ErrorKind::ConnectionRefused => {
                                "connection refused (nothing listens on that port)".into()
                            }
                            _ => e.to_string(),
                        },
                    })
                }
                Ok(Ok(len)) => len,
            };
            let reply = &buf[..len];
            if len < 8 || &reply[4..8] != txid {
                continue; // not ours
            }
            let got = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
            if got == ACTION_ERROR {
                return Err(TrackerError::Failure {
                    url: url.to_owned(),
                    reason: String::from_utf8_lossy(&reply[8..]).into_owned(),
                });
            }
            if got != action {
                continue;
            }
            if let Some(v) = accept(reply) {
                return Ok(Some(v));
            }
            tracing::debug!(url, len, "ignoring a UDP tracker reply of the wrong size");
        }
    }

    fn try_timeout(&self, n: u32) -> Duration {
        self.base_timeout.saturating_mul(1 << n.min(16))
    }

    fn cached(&self, addr: SocketAddr) -> Option<u64> {
        let m = self.connections.lock().ok()?;
        m.get(&addr)
            .filter(|(_, at)| at.elapsed() < CONNECTION_ID_LIFETIME)
            .map(|(id, _)| *id)
    }

    fn remember(&self, addr: SocketAddr, id: u64) {
        if let Ok(mut m) = self.connections.lock() {
            m.retain(|_, (_, at)| at.elapsed() < CONNECTION_ID_LIFETIME);
            m.insert(addr, (id, Instant::now()));
        }
    }

    fn forget(&self, addr: SocketAddr) {
        if let Ok(mut m) = self.connections.lock() {
            m.remove(&addr);
        }
    }

    /// Runs a request that needs a connection id. Try `n` waits `base · 2^n`, whether it
    /// sends a connect or the request; a connection id older than a minute is renewed
    /// first, and one the tracker rejects is dropped and renewed once.
    async fn with_connection<T>(
        &self,
        url: &str,
        action: u32,
        build: impl Fn(u64, u32) -> Vec<u8>,
        accept: impl Fn(&[u8], bool) -> Option<T>,
    ) -> Result<T, TrackerError> {
        let (sock, addr) = self.socket(url).await?;
        let v6 = addr.is_ipv6();
        let mut request: Option<(u64, Vec<u8>)> = None;
        let mut renewed_after_error = false;
        for n in 0..=self.max_retries {
            let (conn, from_cache) = match self.cached(addr) {
                Some(id) => (id, true),
                None => {
                    let mut p = Vec::with_capacity(16);
                    p.extend(PROTOCOL_ID.to_be_bytes());
                    p.extend(ACTION_CONNECT.to_be_bytes());
                    p.extend(rand::random::<u32>().to_be_bytes());
                    let id = self
                        .transact(url, &sock, &p, ACTION_CONNECT, n, |r| {
                            r.get(8..16)
                                .and_then(|b| b.try_into().ok())
                                .map(u64::from_be_bytes)
                        })
                        .await?;
                    match id {
                        Some(id) => {
                            self.remember(addr, id);
                            (id, false)
                        }
                        None => continue,
                    }
                }
            };
            // Retransmissions repeat the same packet (same transaction id) while the
            // connection id stays the same.
            if request.as_ref().is_none_or(|(c, _)| *c != conn) {
                request = Some((conn, build(conn, rand::random())));
            }
            let packet = request
                .as_ref()
                .map(|(_, p)| p.as_slice())
                .unwrap_or_default();
            match self
                .transact(url, &sock, packet, action, n, |r| accept(r, v6))
                .await
            {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(TrackerError::Failure { .. }) if from_cache && !renewed_after_error => {
                    self.forget(addr);
                    renewed_after_error = true;
                }
                Err(e) => return Err(e),
            }
        }
        let total: Duration = (0..=self.max_retries).map(|n| self.try_timeout(n)).sum();
        Err(TrackerError::Timeout {
            url: url.to_owned(),
            after: total,
        })
    }

    pub(super) async fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let build = |conn: u64, txid: u32| {
            let mut p = Vec::with_capacity(98);
            p.extend(conn.to_be_bytes());
            p.extend(ACTION_ANNOUNCE.to_be_bytes());
            p.extend(txid.to_be_bytes());
            p.extend(req.info_hash.0);
            p.extend(req.peer_id);
            p.extend(req.downloaded.to_be_bytes());
            p.extend(req.left.to_be_bytes());
            p.extend(req.uploaded.to_be_bytes());
            p.extend(req.event.udp_code().to_be_bytes());
            p.extend(0u32.to_be_bytes()); // IP: the sender's
            p.extend(req.key.to_be_bytes());
            let numwant = req.numwant.map_or(-1, |n| n.min(i32::MAX as u32) as i32);
            p.extend(numwant.to_be_bytes());
            p.extend(req.port.to_be_bytes());
            p
        };
        self.with_connection(url, ACTION_ANNOUNCE, build, parse_announce)
            .await
    }

    pub(super) async fn scrape(
        &self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<ScrapeStats>, TrackerError> {
        if hashes.is_empty() {
            return Err(protocol(url, "nothing to scrape: no infohash given"));
        }
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(MAX_SCRAPE_HASHES) {
            let build = |conn: u64, txid: u32| {
                let mut p = Vec::with_capacity(16 + 20 * chunk.len());
                p.extend(conn.to_be_bytes());
                p.extend(ACTION_SCRAPE.to_be_bytes());
                p.extend(txid.to_be_bytes());
                for h in chunk {
                    p.extend(h.0);
                }
                p
            };
            let n = chunk.len();
            let accept = move |r: &[u8], _v6: bool| parse_scrape(r, n);
            out.extend(
                self.with_connection(url, ACTION_SCRAPE, build, accept)
                    .await?,
            );
        }
        Ok(out)
    }
}

/// An announce reply: 20 header bytes, then 6 (IPv4) or 18 (IPv6) bytes per peer.
pub fn parse_announce(r: &[u8], v6: bool) -> Option<AnnounceResponse> {
    if r.len() < 20 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
    let peers = if v6 {
        parse_compact_v6(&r[20..])?
    } else {
        parse_compact_v4(&r[20..])?
    };
    Some(AnnounceResponse {
        interval: Duration::from_secs(u64::from(word(8)).clamp(1, 7 * 24 * 3600)),
        min_interval: None,
        peers,
        leechers: Some(word(12)),
        seeders: Some(word(16)),
        warning: None,
        tracker_id: None,
    })
}

/// A scrape reply: 8 header bytes, then 12 bytes (seeders, completed, leechers) per hash.
pub fn parse_scrape(r: &[u8], n: usize) -> Option<Vec<ScrapeStats>> {
    if r.len() != 8 + 12 * n {
        return None;
    }
    Some(
        r[8..]
            .chunks_exact(12)
            .map(|c| {
                let word = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                ScrapeStats {
                    seeders: word(0),
                    completed: word(4),
                    leechers: word(8),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(host_port("udp://127.0.0.1:6969").unwrap(), "127.0.0.1:6969");
        assert_eq!(
            host_port("udp://t.example:80/announce").unwrap(),
            "t.example:80"
        );
        assert_eq!(host_port("udp://[::1]:6969/x").unwrap(), "[::1]:6969");
        for bad in [
            "udp://host",
            "udp://:80",
            "udp://h:0",
            "udp://h:99999",
            "udp://",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies() {
        let mut r = vec![0, 0, 0, 1, 9, 9, 9, 9, 0, 0, 0, 60, 0, 0, 0, 2, 0, 0, 0, 3];
        r.extend([127, 0, 0, 1, 0x1a, 0xe1]);
        let a = parse_announce(&r, false).unwrap();
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!((a.seeders, a.leechers), (Some(3), Some(2)));
        assert_eq!(a.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert!(
            parse_announce(&r, true).is_none(),
            "6 bytes is not an IPv6 peer"
        );
        assert!(parse_announce(&r[..19], false).is_none());
        // Over IPv6 (BEP 15): 18 bytes per peer.
        let mut r6 = r[..20].to_vec();
        r6.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        r6.extend([0x1a, 0xe2]);
        assert_eq!(
            parse_announce(&r6, true).unwrap().peers,
            vec!["[::1]:6882".parse().unwrap()]
        );
        let s = [0, 0, 0, 2, 1, 1, 1, 1, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7];
        assert_eq!(
            parse_scrape(&s, 1).unwrap(),
            vec![ScrapeStats {
                seeders: 5,
                completed: 6,
                leechers: 7
            }]
        );
        assert!(parse_scrape(&s, 2).is_none());
    }
}

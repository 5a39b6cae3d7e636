//! Trackers: HTTP(S) (BEP 3, 7, 23, 48) and UDP (BEP 15) announce and scrape, and the
//! BEP 12 multitracker announcer in [`announcer`].
//!
//! This module owns talking to trackers. Every request is bounded in time
//! ([`TrackerConfig::timeout`]) and in size (HTTP bodies are read up to
//! [`MAX_HTTP_BODY`]); every reply is treated as hostile: malformed replies are errors,
//! replies to someone else (wrong transaction id, wrong size) are ignored. Nothing here
//! panics on what a tracker sends.

pub mod announcer;
pub mod http;
pub mod udp;

use crate::infohash::InfoHash;
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Largest HTTP tracker response read (4 MiB): a full compact reply of 200 peers is
/// about 1.2 KB, and a scrape of thousands of torrents fits easily.
pub const MAX_HTTP_BODY: usize = 4 << 20;

/// Interval used when a tracker gives none (30 minutes).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);

/// Shortest re-announce interval honoured, whatever a tracker says (guards against
/// trackers that ask for an announce every second).
pub const MIN_INTERVAL_FLOOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

impl Event {
    fn http_name(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// Random per-session key that lets a tracker recognise us across IP changes.
    pub key: u32,
    /// BEP 7, private torrents only: our IPv4 address we listen on, sent (HTTP `ipv4=`)
    /// unless the tracker is reached at an IPv4 address (it sees that address then).
    pub ipv4: Option<Ipv4Addr>,
    /// BEP 7, private torrents only: our IPv6 address we listen on, sent as `ipv6=`.
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub interval: Duration,
    pub min_interval: Option<Duration>,
    pub peers: Vec<SocketAddr>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub warning: Option<String>,
    /// HTTP `tracker id`, to echo back as `trackerid` on later announces.
    pub tracker_id: Option<Vec<u8>>,
}

/// One torrent's counts in a scrape reply. Field names are go-btfs's JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("{url}: timed out (no answer within {after:?})")]
    Timeout { url: String, after: Duration },
    #[error("{url}: the tracker refused: {reason}")]
    Failure { url: String, reason: String },
    #[error("{url}: invalid reply: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: not a tracker URL (use udp://, http:// or https://)")]
    UnsupportedScheme { url: String },
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: this tracker has no scrape URL (its announce path must end in \"announce\", BEP 48)")]
    NoScrapeUrl { url: String },
}

/// Limits for tracker requests.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Whole-request deadline (connect, retransmissions, reading the body).
    pub timeout: Duration,
    /// UDP: first retransmission timeout; BEP 15 says 15 s, doubled after each try.
    pub udp_base_timeout: Duration,
    /// UDP: retransmissions after the first try (BEP 15 allows up to 8).
    pub udp_max_retries: u32,
    /// HTTP `User-Agent`.
    pub user_agent: String,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            timeout: Duration::from_secs(15),
            udp_base_timeout: Duration::from_secs(15),
            udp_max_retries: 8,
            user_agent: format!("btfs/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Announces and scrapes over HTTP(S) and UDP; cheap to share (`Arc`) between torrents.
pub struct TrackerClient {
    config: TrackerConfig,
    http: http::HttpTracker,
    udp: udp::UdpTracker,
}

impl TrackerClient {
    pub fn new(config: TrackerConfig) -> Result<Self, TrackerError> {
        Ok(TrackerClient {
            http: http::HttpTracker::new(&config)?,
            udp: udp::UdpTracker::new(&config),
            config,
        })
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Announces to one tracker. `tracker_id` is what that tracker sent last time.
    pub async fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
        tracker_id: Option<&[u8]>,
    ) -> Result<AnnounceResponse, TrackerError> {
        let work = async {
            match scheme(url)? {
                Scheme::Http => self.http.announce(url, req, tracker_id).await,
                Scheme::Udp => self.udp.announce(url, req).await,
            }
        };
        self.bounded(url, work).await
    }

    /// Scrapes one tracker; the result has one entry per hash, in order.
    pub async fn scrape(
        &self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<ScrapeStats>, TrackerError> {
        let work = async {
            match scheme(url)? {
                Scheme::Http => self.http.scrape(url, hashes).await,
                Scheme::Udp => self.udp.scrape(url, hashes).await,
            }
        };
        self.bounded(url, work).await
    }

    async fn bounded<T>(
        &self,
        url: &str,
        work: impl std::future::Future<Output = Result<T, TrackerError>>,
    ) -> Result<T, TrackerError> {
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(TrackerError::Timeout {
                url: url.to_owned(),
                after: self.config.timeout,
            }),
        }
    }
}

enum Scheme {
    Http,
    Udp,
}

fn scheme(url: &str) -> Result<Scheme, TrackerError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(Scheme::Http)
    } else if lower.starts_with("udp://") {
        Ok(Scheme::Udp)
    } else {
        Err(TrackerError::UnsupportedScheme {
            url: url.to_owned(),
        })
    }
}

/// Compact IPv4 peers (BEP 23): 6 bytes each.
pub fn parse_compact_v4(b: &[u8]) -> Option<Vec<SocketAddr>> {
    if !b.len().is_multiple_of(6) {
        return None;
    }
    Some(
        b.chunks_exact(6)
            .map(|c| {
                let ip = std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                SocketAddr::from((ip, u16::from_be_bytes([c[4], c[5]])))
            })
            .filter(|a| a.port() != 0)
            .collect(),
    )
}

/// Compact IPv6 peers (BEP 7): 18 bytes each.
pub fn parse_compact_v6(b: &[u8]) -> Option<Vec<SocketAddr>> {
    if !b.len().is_multiple_of(18) {
        return None;
    }
    Some(
        b.chunks_exact(18)
            .map(|c| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&c[..16]);
                let ip = std::net::Ipv6Addr::from(ip);
                SocketAddr::from((ip, u16::from_be_bytes([c[16], c[17]])))
            })
            .filter(|a| a.port() != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_peers() {
        let v4 = parse_compact_v4(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0]).unwrap();
        assert_eq!(
            v4,
            vec!["127.0.0.1:6881".parse().unwrap()],
            "port 0 dropped"
        );
        assert!(parse_compact_v4(&[1, 2, 3]).is_none());
        let mut b = [0u8; 18];
        b[15] = 1;
        b[17] = 80;
        assert_eq!(
            parse_compact_v6(&b).unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
        assert!(parse_compact_v6(&b[..17]).is_none());
    }

    #[test]
    fn schemes() {
        assert!(matches!(scheme("HTTP://x/announce"), Ok(Scheme::Http)));
        assert!(matches!(scheme("https://x/announce"), Ok(Scheme::Http)));
        assert!(matches!(scheme("udp://x:1"), Ok(Scheme::Udp)));
        assert!(scheme("wss://x").is_err());
        assert!(scheme("").is_err());
    }
}

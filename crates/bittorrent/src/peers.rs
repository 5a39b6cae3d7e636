//! Where peer addresses come from: one stream that trackers, the DHT, peer exchange,
//! magnet `x.pe` parameters and the command line all feed, each candidate tagged with
//! its source. The download engine consumes the stream; sources never connect to peers.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerSource {
    /// An announce reply from this tracker URL.
    Tracker(Arc<str>),
    Dht,
    Pex,
    /// `x.pe` in a magnet link.
    Magnet,
    /// Given by the user.
    Manual,
    /// A peer that connected to us.
    Incoming,
}

impl fmt::Display for PeerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSource::Tracker(url) => write!(f, "tracker {url}"),
            PeerSource::Dht => f.write_str("DHT"),
            PeerSource::Pex => f.write_str("peer exchange"),
            PeerSource::Magnet => f.write_str("magnet link"),
            PeerSource::Manual => f.write_str("command line"),
            PeerSource::Incoming => f.write_str("incoming"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCandidate {
    pub addr: SocketAddr,
    pub source: PeerSource,
}

/// The sending side, cloned into every source.
#[derive(Debug, Clone)]
pub struct PeerSink(mpsc::Sender<PeerCandidate>);

/// The receiving side, owned by the engine.
#[derive(Debug)]
pub struct PeerStream(mpsc::Receiver<PeerCandidate>);

/// A bounded channel of candidates: a source that outruns the engine waits.
pub fn peer_channel(capacity: usize) -> (PeerSink, PeerStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (PeerSink(tx), PeerStream(rx))
}

/// Addresses nobody can connect to: port 0, unspecified, multicast or broadcast.
pub fn is_dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

impl PeerSink {
    /// Offers addresses from one source; undialable ones are dropped. Returns the number
    /// offered, or `None` once the engine has gone away.
    pub async fn offer(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
        source: &PeerSource,
    ) -> Option<usize> {
        let mut n = 0;
        for addr in addrs.into_iter().filter(is_dialable) {
            self.0
                .send(PeerCandidate {
                    addr,
                    source: source.clone(),
                })
                .await
                .ok()?;
            n += 1;
        }
        Some(n)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl PeerStream {
    pub async fn next(&mut self) -> Option<PeerCandidate> {
        self.0.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offers_only_dialable_addresses() {
        let (sink, mut stream) = peer_channel(8);
        let src = PeerSource::Tracker("udp://127.0.0.1:1".into());
        let addrs = [
            "127.0.0.1:6881",
            "0.0.0.0:1",
            "127.0.0.1:0",
            "224.0.0.1:5",
            "255.255.255.255:5",
            "[::1]:7",
        ]
        .map(|a| a.parse().unwrap());
        assert_eq!(sink.offer(addrs, &src).await, Some(2));
        assert_eq!(stream.next().await.unwrap().addr, addrs[0]);
        let last = stream.next().await.unwrap();
        assert_eq!(last.addr, addrs[5]);
        assert_eq!(last.source.to_string(), "tracker udp://127.0.0.1:1");
        drop(stream);
        assert_eq!(sink.offer([addrs[0]], &src).await, None);
    }
}

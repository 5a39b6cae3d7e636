//! The mainline DHT (BEP 5) through the `mainline` crate: one node per process, used to
//! find peers for an infohash and to announce ourselves.
//!
//! No bootstrap node is built in here: the node joins through the addresses it is given,
//! already resolved (the caller resolves host names itself, with its own time limit).
//! Whether anyone answered is [`DhtNode::bootstrapped`], which the caller bounds in time.
//!
//! IPv4 only: `mainline` 8 has no IPv6 DHT (BEP 32): its node addresses, routing table,
//! tokens and peer store are all `SocketAddrV4`, and it binds one IPv4 UDP socket, so
//! only IPv4 bootstrap addresses are used. Peers on IPv6 come from trackers (`peers6`),
//! PEX (`added6`) and magnets (`x.pe`).

use crate::infohash::InfoHash;
use crate::peers::{PeerSink, PeerSource};
use futures_lite::StreamExt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A running DHT node.
pub struct DhtNode {
    dht: mainline::async_dht::AsyncDht,
}

impl std::fmt::Debug for DhtNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhtNode")
    }
}

#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// UDP port (0: any).
    pub port: u16,
    pub bind: Ipv4Addr,
    /// Nodes to join through (IPv6 addresses are left out: the DHT is IPv4 only).
    pub bootstrap: Vec<SocketAddr>,
}

impl DhtNode {
    pub fn start(cfg: &DhtConfig) -> std::io::Result<Self> {
        let mut b = mainline::Dht::builder();
        b.bind_address(cfg.bind).server_mode();
        // Always set: left unset, `mainline` would try 6881 before any port.
        b.port(cfg.port);
        let v4: Vec<SocketAddr> = cfg
            .bootstrap
            .iter()
            .filter(|a| a.is_ipv4())
            .copied()
            .collect();
        if v4.is_empty() {
            b.no_bootstrap();
        } else {
            b.bootstrap(&v4);
        }
        Ok(DhtNode {
            dht: b.build()?.as_async(),
        })
    }

    /// Whether a node answered the bootstrap lookup (a lookup of our own id). Waits for
    /// that lookup to end; the caller bounds the wait.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    /// Nodes of the routing table as `host:port`, to bootstrap from next time.
    pub async fn routing_nodes(&self) -> Vec<String> {
        self.dht.to_bootstrap().await
    }

    /// The UDP address the node listens on.
    pub async fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.dht.info().await.local_addr())
    }

    /// Looks `info_hash` up every `every` (the first time at once), offering the peers
    /// found and announcing `port` when given, until the sink's receiver is gone.
    pub async fn search(
        &self,
        info_hash: InfoHash,
        port: Option<u16>,
        sink: PeerSink,
        every: Duration,
    ) {
        let id = mainline::Id::from(info_hash.0);
        loop {
            let mut stream = self.dht.get_peers(id);
            while let Some(batch) = stream.next().await {
                let addrs = batch.into_iter().map(SocketAddr::V4);
                if sink.offer(addrs, &PeerSource::Dht).await.is_none() {
                    return;
                }
            }
            if let Some(p) = port {
                if let Err(e) = self.dht.announce_peer(id, Some(p)).await {
                    tracing::debug!(error = %e, "DHT announce failed");
                }
            }
            if sink.is_closed() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

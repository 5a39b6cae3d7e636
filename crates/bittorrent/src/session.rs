//! One listening port for many torrents: the [`Router`] accepts connections (on every
//! address it listens on, IPv4 and IPv6, one port number: see [`crate::listen`]), reads the
//! peer's handshake and hands the connection to the engine of the torrent it names
//! (through [`crate::engine::Incoming`]); connections for unknown torrents are closed.
//!
//! Policy: at most [`PENDING`] handshakes are read at once, each for at most
//! [`HANDSHAKE_TIMEOUT`], and at most [`MAX_PENDING_PER_IP`] of them from one IP (its
//! /64 for IPv6; loopback included): a connection past that is closed at once, so one
//! address cannot hold every slot. Each torrent's engine then applies its own cap of
//! connections per IP (`--max-connections-per-ip`, counted per torrent). A
//! connection from an address the IP filter ([`Router::set_ip_filter`]) blocks is
//! closed right after it is accepted, before anything is read.
//!
//! Locks: `routes` and the pending table are each taken alone, briefly, never across an
//! `.await`.

use crate::engine::{Incoming, IpKey};
use crate::ipfilter::IpFilter;
use crate::listen::{ListenError, Listeners, Listening};
use crate::wire::Handshake;
use crate::InfoHash;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type Route = mpsc::Sender<(TcpStream, SocketAddr, Handshake)>;

/// Connections waiting for their torrent's engine, per torrent.
const QUEUE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is being read at once; more wait in the kernel's backlog.
pub const PENDING: usize = 256;
/// Handshakes read at once from one IP; a fixed small number (not the per-torrent
/// connection cap): an honest peer sends its handshake at once, so few are ever pending.
pub const MAX_PENDING_PER_IP: usize = 8;

/// Handshakes being read, per IP (at most [`PENDING`] entries: each holds a permit).
type PendingTable = Arc<Mutex<HashMap<IpKey, usize>>>;

/// One handshake being read from an IP; gives its place back when dropped.
struct PendingSlot {
    ip: IpKey,
    table: PendingTable,
}

impl PendingSlot {
    /// A place for one more handshake from `ip`, unless it has [`MAX_PENDING_PER_IP`].
    fn take(table: &PendingTable, ip: IpAddr) -> Option<PendingSlot> {
        let ip = IpKey::of(ip);
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_IP {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            ip,
            table: table.clone(),
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// The IP filter of a router, set once.
type FilterCell = Arc<std::sync::OnceLock<Arc<IpFilter>>>;

pub struct Router {
    addrs: Vec<SocketAddr>,
    port: u16,
    listening: Listening,
    routes: Arc<Mutex<HashMap<InfoHash, Route>>>,
    filter: FilterCell,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Router {
    /// Listens on every one of `ips` with one port: `port`, or the next free on all of
    /// them of the `tries` after it (0: a random one); says which through
    /// [`Router::port`] and [`Router::local_addrs`]. An address of a family the host
    /// lacks is skipped when another is bound.
    pub async fn bind(ips: &[IpAddr], port: u16, tries: u16) -> Result<Router, ListenError> {
        Ok(Router::serve(Listeners::bind(ips, port, tries)?))
    }

    /// Routes the connections of listeners bound already (by [`Listeners::bind`]), so
    /// a caller can learn the port before anything is served. Must run inside a Tokio
    /// runtime.
    pub fn serve(listener: Listeners) -> Router {
        let (addrs, port, listening) = (
            listener.local_addrs(),
            listener.port(),
            listener.listening(),
        );
        let routes: Arc<Mutex<HashMap<InfoHash, Route>>> = Arc::default();
        let r = routes.clone();
        let pending = Arc::new(tokio::sync::Semaphore::new(PENDING));
        let per_ip: PendingTable = Arc::default();
        let filter: FilterCell = Arc::default();
        let blocks = filter.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                // `accept` passes over failed connections and waits out a lack of
                // descriptors itself; an error is a listener that cannot accept any more.
                let (mut sock, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "the shared peer listener failed; not accepting");
                        return;
                    }
                };
                if blocks.get().is_some_and(|f| f.check(peer.ip())) {
                    tracing::debug!(%peer, "inbound connection blocked by the IP filter");
                    drop(sock);
                    continue;
                }
                let Some(slot) = PendingSlot::take(&per_ip, peer.ip()) else {
                    // Too many handshakes from this IP: closed unread.
                    drop(sock);
                    continue;
                };
                let routes = r.clone();
                tokio::spawn(async move {
                    let _held = (permit, slot);
                    let hs =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Handshake::read(&mut sock))
                            .await
                        {
                            Ok(Ok(hs)) => hs,
                            _ => return,
                        };
                    let route = routes.lock().expect("routes").get(&hs.info_hash).cloned();
                    if let Some(route) = route {
                        let _ = route.try_send((sock, peer, hs));
                    }
                });
            }
        });
        Router {
            addrs,
            port,
            listening,
            routes,
            filter,
            accept,
        }
    }

    /// The port listened on, the same on every address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses listened on (with [`Router::port`]).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Closes connections from the addresses `filter` blocks from now on (counted in
    /// its `blocked`). Set once: a later call is refused, returning the filter given.
    pub fn set_ip_filter(&self, filter: Arc<IpFilter>) -> Result<(), Arc<IpFilter>> {
        self.filter.set(filter)
    }

    /// Routes connections for `info_hash` to the returned [`Incoming`].
    pub fn register(&self, info_hash: InfoHash) -> Incoming {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.routes.lock().expect("routes").insert(info_hash, tx);
        Incoming {
            port: self.port,
            listening: self.listening.clone(),
            connections: rx,
        }
    }

    pub fn unregister(&self, info_hash: &InfoHash) {
        self.routes.lock().expect("routes").remove(info_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::net::Ipv4Addr;
    use tokio::io::AsyncReadExt;

    async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((src, 0))).unwrap();
        sock.connect(to).await.unwrap()
    }

    /// Whether the router closed `s` (end of stream or reset) rather than holding it.
    fn closed(s: &TcpStream) -> bool {
        let mut b = [0u8; 1];
        !matches!(s.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// One IP holding its handshakes unsent keeps only a few slots: a connection past
    /// that is closed at once while the first ones are still held (before the cap, it
    /// too was held until its handshake timed out, after theirs), and other IPs are
    /// still routed.
    #[tokio::test]
    async fn one_ip_cannot_hold_every_pending_handshake() {
        let router = Router::bind(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 0, 0)
            .await
            .unwrap();
        let to = router.local_addrs()[0];
        let hog = Ipv4Addr::new(127, 0, 0, 2);
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING_PER_IP {
            held.push(connect_from(hog, to).await);
        }
        let mut extra = connect_from(hog, to).await;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(30), extra.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "the connection past the cap was not closed: {r:?}"
        );
        assert!(
            held.iter().all(|s| !closed(s)),
            "the first handshakes were dropped, not the one past the cap"
        );

        let ih = InfoHash([7u8; 20]);
        let mut incoming = router.register(ih);
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), to).await;
        let hs = Handshake {
            reserved: crate::wire::our_reserved(),
            info_hash: ih,
            peer_id: *b"-TS0001-router-test-",
        };
        crate::wire::write_handshake(&mut s, &hs).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), incoming.connections.recv())
            .await
            .expect("routed")
            .expect("open");
        assert_eq!(got.1.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }

    /// A connection from a blocked address is closed before its handshake is read,
    /// counted in the filter; others are routed as before.
    #[tokio::test]
    async fn blocked_addresses_are_closed_at_accept() {
        let router = Router::bind(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 0, 0)
            .await
            .unwrap();
        let to = router.local_addrs()[0];
        let filter = Arc::new(crate::ipfilter::IpFilter::from_ranges(
            vec![(
                u32::from(Ipv4Addr::new(127, 0, 0, 2)),
                u32::from(Ipv4Addr::new(127, 0, 0, 2)),
            )],
            Vec::new(),
        ));
        router.set_ip_filter(filter.clone()).unwrap();
        assert!(router.set_ip_filter(filter.clone()).is_err(), "set once");
        let ih = InfoHash([9u8; 20]);
        let mut incoming = router.register(ih);
        let hs = Handshake {
            reserved: crate::wire::our_reserved(),
            info_hash: ih,
            peer_id: *b"-TS0001-filter-test-",
        };
        let mut blocked = connect_from(Ipv4Addr::new(127, 0, 0, 2), to).await;
        // Its handshake may or may not be written before the close; it is never routed.
        let _ = crate::wire::write_handshake(&mut blocked, &hs).await;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(30), blocked.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "not closed: {r:?}");
        assert_eq!(filter.blocked(), 1);

        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), to).await;
        crate::wire::write_handshake(&mut s, &hs).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), incoming.connections.recv())
            .await
            .expect("routed")
            .expect("open");
        assert_eq!(got.1.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert!(
            incoming.connections.try_recv().is_err(),
            "the blocked one was routed"
        );
    }
}

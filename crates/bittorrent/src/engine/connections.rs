//! The torrent loop's side of peer connections: the [`PeerBook`], the caps (peers,
//! connection attempts in flight, connections per IP) and the keys given to new
//! connections, with one method per connection event.
//!
//! Policy: an inbound connection from an address the IP filter blocks is closed at
//! once, before its handshake is read; otherwise it is admitted only while the torrent has room for
//! another peer and its IP has fewer than `max_connections_per_ip` connections and
//! attempts; a handshaken one is registered under the same checks (a dial refused then
//! backs off). Peer exchange is taken once per source IP per interval (see
//! [`super::candidates`]).
//!
//! Owned by the torrent loop alone; takes [`Shared::state`] briefly, never across an
//! `.await` (the same lock order as the rest of the engine).

use super::candidates::{IpKey, PeerBook};
use super::{ban, peer, peers_from, remove_peer, Event, Options, Shared};
use crate::picker::PeerKey;
use crate::wire;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

pub(super) struct Connections {
    pub(super) book: PeerBook,
    per_ip: usize,
    max_peers: usize,
    next_key: PeerKey,
}

impl Connections {
    pub(super) fn new(opts: &Options, filter: Option<crate::ipfilter::FilterScope>) -> Self {
        Connections {
            book: PeerBook::with_filter(filter),
            per_ip: opts.max_connections_per_ip.max(1),
            max_peers: opts.max_peers,
            next_key: 1,
        }
    }

    /// Addresses a peer sent by PEX: taken once per source IP per interval, capped per
    /// address family.
    pub(super) fn on_pex(&mut self, from: SocketAddr, addrs: Vec<SocketAddr>, wanted: bool) {
        if wanted {
            self.book.offer_pex(from.ip(), &addrs, Instant::now());
        }
    }

    /// A handshaken connection: registered when there is still room for it.
    pub(super) fn on_connected(
        &mut self,
        shared: &Arc<Shared>,
        sock: TcpStream,
        addr: SocketAddr,
        hs: wire::Handshake,
        outgoing: bool,
    ) {
        self.book.attempt_ended(addr.ip());
        let now = Instant::now();
        // An inbound connection's port is ephemeral: only its IP can be banned yet.
        let banned = if outgoing {
            self.book.is_banned(addr)
        } else {
            self.book.is_banned_peer(addr.ip(), None)
        };
        let full = {
            let st = shared.lock();
            st.peers.len() >= self.max_peers || peers_from(&st, addr.ip()) >= self.per_ip
        };
        if banned || full {
            // No room is not the address's fault: it waits again without a failure.
            if outgoing && !banned {
                self.book.dial_refused(addr, now);
            } else if outgoing {
                self.book.dial_failed(addr, now);
            }
            return;
        }
        if outgoing {
            self.book.connected(addr, now);
        }
        let key = self.next_key;
        self.next_key += 1;
        peer::start(shared.clone(), key, sock, addr, hs, outgoing);
    }

    pub(super) fn on_connect_failed(&mut self, addr: SocketAddr, outgoing: bool) {
        self.book.attempt_ended(addr.ip());
        tracing::debug!(%addr, "connection failed");
        // Only addresses we dialled are worth dialling again.
        if outgoing {
            self.book.dial_failed(addr, Instant::now());
        }
    }

    /// An inbound connection: its handshake is answered when there is room for it.
    pub(super) fn on_incoming(
        &mut self,
        shared: &Arc<Shared>,
        sock: TcpStream,
        addr: SocketAddr,
        hs: Option<wire::Handshake>,
    ) {
        if shared.blocks(addr.ip()) {
            tracing::debug!(%addr, "inbound connection blocked by the IP filter");
            return;
        }
        let admit = {
            let st = shared.lock();
            st.peers.len() + self.book.attempts_total() < self.max_peers
                && peers_from(&st, addr.ip()) + self.book.attempts(addr.ip()) < self.per_ip
                && !self.book.is_banned_peer(addr.ip(), None)
        };
        if !admit {
            return;
        }
        self.book.attempt_started(addr.ip());
        let sh = shared.clone();
        tokio::spawn(async move {
            match peer::accept(&sh, sock, hs).await {
                Ok((sock, hs)) => {
                    let _ = sh.events.send(Event::Connected(sock, addr, hs, false));
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "incoming handshake failed");
                    let _ = sh.events.send(Event::ConnectFailed(addr, false));
                }
            }
        });
    }

    pub(super) fn on_closed(
        &mut self,
        shared: &Arc<Shared>,
        key: PeerKey,
        addr: SocketAddr,
        why: &str,
    ) {
        tracing::debug!(%addr, reason = why, "peer closed");
        let mut st = shared.lock();
        let outgoing = st.peers.get(&key).is_some_and(|p| p.outgoing);
        remove_peer(&mut st, key);
        // A peer we dialled that went away is dialled again later.
        if outgoing {
            self.book.closed(addr, Instant::now());
        }
    }

    pub(super) fn on_misbehaved(&mut self, shared: &Arc<Shared>, key: PeerKey, why: &str) {
        let mut st = shared.lock();
        if let Some((addr, ban_key)) = st.peers.get(&key).map(|p| (p.addr, p.ban_key())) {
            tracing::warn!(peer = %addr, reason = why, "banned");
            ban(&mut st, &mut self.book, ban_key);
        }
    }

    /// Dials the addresses that are due while there is room: fewer than `max_half_open`
    /// attempts, `max_peers` connections, and the cap of connections with any IP.
    pub(super) fn dial_due(&mut self, shared: &Arc<Shared>, max_half_open: usize) {
        let now = Instant::now();
        let (count, established) = {
            let st = shared.lock();
            let mut by_ip: HashMap<IpKey, usize> = HashMap::new();
            for p in st.peers.values() {
                *by_ip.entry(IpKey::of(p.addr.ip())).or_default() += 1;
            }
            (st.peers.len(), by_ip)
        };
        while self.book.attempts_total() < max_half_open
            && count + self.book.attempts_total() < self.max_peers
        {
            let Some(addr) = self.book.next_to_dial(now, self.per_ip, |ip| {
                established.get(&ip).copied().unwrap_or(0)
            }) else {
                break;
            };
            let sh = shared.clone();
            tokio::spawn(async move {
                match peer::connect(&sh, addr).await {
                    Ok((sock, hs)) => {
                        let _ = sh.events.send(Event::Connected(sock, addr, hs, true));
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "connect failed");
                        let _ = sh.events.send(Event::ConnectFailed(addr, true));
                    }
                }
            });
        }
    }
}

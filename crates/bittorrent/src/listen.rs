//! Where btfs listens for peers, and the addresses it can be reached on.
//!
//! This module owns binding the peer listeners: [`Listeners::bind`] listens on a list of
//! addresses (IPv4 and IPv6, typically `0.0.0.0` and `::`) on ONE port number, so that a
//! peer, a tracker or the DHT told "port P" reaches us on either family. It also finds
//! our global addresses for BEP 7 ([`global_address`]).
//!
//! Policy:
//! - a configured port P is bound on every address; when any address has P taken, the
//!   same is tried with P+1 … P+`tries` (the same port on all addresses each time);
//! - port 0 picks a random port of [`DEFAULT_PORT_RANGE`] (at most
//!   [`MAX_RANDOM_PORT_TRIES`] tries), then one the kernel picks, the same on all
//!   addresses;
//! - IPv6 sockets are `IPV6_V6ONLY`, so `0.0.0.0` and `::` coexist on one port;
//! - an address whose family the host lacks (no IPv6: `EAFNOSUPPORT`,
//!   `EADDRNOTAVAIL`) is skipped with a debug log when another address was bound, and
//!   is an error when none was;
//! - [`Listeners::accept`] takes connections from every listener, in turn.
//!
//! Our global addresses are found without sending anything: a UDP socket is
//! `connect`ed to a documentation address (`192.0.2.1`, `2001:db8::1`), which only asks
//! the kernel for the route and its source address, and the source is kept only when
//! it is global (never loopback, link-local, private/ULA, documentation…).
//!
//! Locks: none; the turn counter of `accept` is an atomic.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use tokio::net::{TcpListener, TcpStream};

/// Ports tried when none is given: a random one of 49152–65535 (the dynamic range).
pub const DEFAULT_PORT_RANGE: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Random ports of [`DEFAULT_PORT_RANGE`] tried for port 0 before the kernel picks one.
pub const MAX_RANDOM_PORT_TRIES: usize = 32;

/// Ports tried after a configured one that is taken (P+1 … P+20).
pub const PORT_FALLBACK_TRIES: u16 = 20;

/// Most addresses listened on at once.
pub const MAX_LISTEN_ADDRESSES: usize = 16;

/// Connections waiting in each listener's kernel queue.
const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("no address to listen on")]
    NoAddress,
    #[error("{0} addresses to listen on; at most {MAX_LISTEN_ADDRESSES}")]
    TooMany(usize),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no free port to listen on {ips}: {tried} (the last was taken on {addr}: {source})")]
    Taken {
        ips: String,
        tried: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Listeners on one port number, one per address.
#[derive(Debug)]
pub struct Listeners {
    listeners: Vec<TcpListener>,
    port: u16,
    turn: AtomicUsize,
}

/// What one port gave: every available address bound, or one address had it taken.
enum Attempt {
    Bound(Listeners),
    Taken(SocketAddr, io::Error),
}

impl Listeners {
    /// Listens on every one of `ips` (duplicates ignored) with one port: `port`, or the
    /// first of the `tries` after it free on all of them; port 0 picks a random one (see
    /// the module doc). Must run inside a Tokio runtime.
    pub fn bind(ips: &[IpAddr], port: u16, tries: u16) -> Result<Listeners, ListenError> {
        let mut uniq: Vec<IpAddr> = Vec::with_capacity(ips.len());
        for ip in ips {
            if !uniq.contains(ip) {
                uniq.push(*ip);
            }
        }
        if uniq.is_empty() {
            return Err(ListenError::NoAddress);
        }
        if uniq.len() > MAX_LISTEN_ADDRESSES {
            return Err(ListenError::TooMany(uniq.len()));
        }
        let candidates: Vec<u16> = if port == 0 {
            let span = u32::from(DEFAULT_PORT_RANGE.end() - DEFAULT_PORT_RANGE.start()) + 1;
            (0..MAX_RANDOM_PORT_TRIES)
                .map(|_| DEFAULT_PORT_RANGE.start() + (rand::random::<u32>() % span) as u16)
                // Then ports the kernel picks (0: see `try_port`).
                .chain([0; 4])
                .collect()
        } else {
            (port..=port.saturating_add(tries)).collect()
        };
        let mut last = None;
        for p in &candidates {
            match try_port(&uniq, *p)? {
                Attempt::Bound(l) => return Ok(l),
                Attempt::Taken(addr, e) => {
                    tracing::debug!(%addr, error = %e, "port taken; trying another");
                    last = Some((addr, e));
                }
            }
        }
        let (addr, source) = last.expect("at least one port was tried");
        Err(ListenError::Taken {
            ips: uniq
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            tried: if port == 0 {
                format!("{} random ports", candidates.len())
            } else {
                format!("ports {port}–{}", port.saturating_add(tries))
            },
            addr,
            source,
        })
    }

    /// The port every listener has.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses listened on (those skipped for a missing family are not here).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Whether some listener is IPv4, and whether some is IPv6.
    pub fn families(&self) -> Families {
        Families::of(&self.local_addrs())
    }

    /// The next connection on any listener (each is polled first in turn).
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let n = self.listeners.len();
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        poll_fn(|cx| {
            for i in 0..n {
                if let Poll::Ready(r) = self.listeners[(first + i) % n].poll_accept(cx) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The address families listened on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub fn of(addrs: &[SocketAddr]) -> Families {
        Families {
            v4: addrs.iter().any(SocketAddr::is_ipv4),
            v6: addrs.iter().any(SocketAddr::is_ipv6),
        }
    }
}

/// Binds `port` on every address; port 0 takes the kernel's pick for the first address
/// bound and that same port for the others.
fn try_port(ips: &[IpAddr], mut port: u16) -> Result<Attempt, ListenError> {
    let mut listeners = Vec::with_capacity(ips.len());
    let mut missing = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        match bind_one(addr) {
            Ok(l) => {
                if port == 0 {
                    port = l
                        .local_addr()
                        .map_err(|source| ListenError::Bind { addr, source })?
                        .port();
                }
                listeners.push(l);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(Attempt::Taken(addr, e)),
            Err(e) if family_missing(&e) => missing.push((addr, e)),
            Err(source) => return Err(ListenError::Bind { addr, source }),
        }
    }
    if listeners.is_empty() {
        let (addr, source) = missing.swap_remove(0);
        return Err(ListenError::Bind { addr, source });
    }
    for (addr, e) in missing {
        tracing::debug!(%addr, error = %e, "not listening on an address family this host lacks");
    }
    Ok(Attempt::Bound(Listeners {
        listeners,
        port,
        turn: AtomicUsize::new(0),
    }))
}

/// The host has no such address or family (IPv6 off or absent).
fn family_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::AFNOSUPPORT)
}

/// One listener; IPv6 ones accept IPv6 only, so `::` does not take IPv4's port.
fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // As tokio's own `bind`: a port in TIME_WAIT can be listened on again.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    TcpListener::from_std(s.into())
}

/// Our global address of `family`'s kind (the source the kernel would use to reach the
/// internet), if there is one. Sends nothing (see the module doc).
pub fn global_address(v6: bool) -> Option<IpAddr> {
    let (local, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
        )
    } else {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        )
    };
    let s = UdpSocket::bind(local).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    is_global(ip).then_some(ip)
}

/// Whether `ip` can be reached from the internet: not unspecified, loopback,
/// link-local, private (RFC 1918, shared 100.64/10, IPv6 ULA fc00::/7, site-local),
/// documentation, multicast, reserved or IPv4-mapped.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || a.to_ipv4_mapped().is_some()
                || s[..6] == [0; 6])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    /// A free port on both 127.0.0.1 and ::1, with the one after it free on both too.
    fn free_pair() -> u16 {
        for _ in 0..64 {
            let l = Listeners::bind(&[V4, V6], 0, 0).unwrap();
            let p = l.port();
            drop(l);
            if p < u16::MAX && Listeners::bind(&[V4, V6], p + 1, 0).is_ok() {
                return p;
            }
        }
        panic!("no two free ports in a row on 127.0.0.1 and ::1");
    }

    #[tokio::test]
    async fn one_port_on_both_families_and_the_next_when_one_has_it_taken() {
        let p = free_pair();
        let both = Listeners::bind(&[V4, V6], p, PORT_FALLBACK_TRIES).unwrap();
        assert_eq!(both.port(), p);
        let mut addrs = both.local_addrs();
        addrs.sort();
        assert_eq!(addrs, vec![SocketAddr::new(V4, p), SocketAddr::new(V6, p)]);
        assert_eq!(both.families(), Families { v4: true, v6: true });
        drop(both);

        // Taken on ::1 only: both move to the next port together.
        let taken = std::net::TcpListener::bind(SocketAddr::new(V6, p)).unwrap();
        let moved = Listeners::bind(&[V4, V6], p, PORT_FALLBACK_TRIES).unwrap();
        assert_eq!(moved.port(), p + 1);
        assert_eq!(moved.local_addrs().len(), 2);
        // Without fallback it is an error that names the address taken.
        let e = Listeners::bind(&[V4, V6], p, 0).unwrap_err().to_string();
        assert!(e.contains(&format!("[::1]:{p}")), "{e}");
        drop(taken);
    }

    #[tokio::test]
    async fn unspecified_addresses_of_both_families_coexist_and_accept() {
        let any = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        let l = Listeners::bind(&any, 0, 0).unwrap();
        assert!(DEFAULT_PORT_RANGE.contains(&l.port()) || l.port() > 0);
        assert_eq!(l.local_addrs().len(), 2, "{:?}", l.local_addrs());
        for to in [V4, V6] {
            let c = tokio::net::TcpStream::connect((to, l.port()));
            let (c, a) = tokio::join!(c, l.accept());
            let (_s, from) = a.unwrap();
            assert_eq!(from.ip(), to);
            drop(c.unwrap());
        }
    }

    #[tokio::test]
    async fn a_missing_address_is_skipped_only_when_another_was_bound() {
        // 192.0.2.1 (documentation) is on no interface here: EADDRNOTAVAIL.
        let absent = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let l = Listeners::bind(&[V4, absent], 0, 0).unwrap();
        assert_eq!(l.local_addrs(), vec![SocketAddr::new(V4, l.port())]);
        let e = Listeners::bind(&[absent], 0, 0).unwrap_err();
        assert!(matches!(e, ListenError::Bind { .. }), "{e}");
        assert!(matches!(
            Listeners::bind(&[], 0, 0),
            Err(ListenError::NoAddress)
        ));
    }

    #[test]
    fn global_addresses_only() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "ff02::1",
        ] {
            assert!(!is_global(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2a00:1450:4001::1", "2606:4700::1111"] {
            assert!(is_global(a.parse().unwrap()), "{a}");
        }
    }
}

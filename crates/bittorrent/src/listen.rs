//! Where btfs listens for peers, and the addresses it can be reached on.
//!
//! This module owns binding the peer listeners: [`Listeners::bind`] listens on a list of
//! addresses (IPv4 and IPv6, typically `0.0.0.0` and `::`) on ONE port number, so that a
//! peer, a tracker or the DHT told "port P" reaches us on either family. It also says
//! which of our addresses a private torrent's announces carry (BEP 7, [`Listening`]).
//!
//! Policy:
//! - a configured port P is bound on every address; when any address has P taken, the
//!   same is tried with P+1 … P+`tries` (the same port on all addresses each time);
//! - port 0 picks a random port of [`DEFAULT_PORT_RANGE`] (at most
//!   [`MAX_RANDOM_PORT_TRIES`] tries), then one the kernel picks (at most
//!   [`MAX_KERNEL_PORT_TRIES`]), the same on all addresses;
//! - IPv6 sockets are `IPV6_V6ONLY` only when the list also holds an IPv4 address (both
//!   families are then bound separately, so `0.0.0.0` and `::` coexist on one port); a
//!   list without IPv4 leaves them dual-stack, so a lone `::` takes IPv4 too (as Linux
//!   does by default);
//! - an address the host lacks (no IPv6: `EAFNOSUPPORT`; an address on no interface:
//!   `EADDRNOTAVAIL`) is skipped when another address was bound (a debug log for
//!   `0.0.0.0`/`::`, a warning for a concrete address), and is an error when none was;
//! - [`Listeners::accept`] takes connections from every listener, in turn; a connection
//!   that failed before it was taken (`ECONNABORTED`, `ECONNRESET`…) is passed over at
//!   once, and only running out of descriptors or memory (`EMFILE`, `ENFILE`,
//!   `ENOBUFS`, `ENOMEM`) waits [`ACCEPT_BACKOFF`] (see [`AcceptFailure`]).
//!
//! BEP 7 (`ipv4=`/`ipv6=` in HTTP announces) follows libtorrent 2.0: only PRIVATE
//! torrents send them (a public torrent would hand every tracker our other family's
//! address, often a privacy address; BEP 7's 2020 text discourages them), and only
//! addresses we listen on: a global address bound as such is sent as is; for
//! `0.0.0.0`/`::` (and IPv4 through a dual-stack `::`), our global address of that
//! family; for a loopback or other non-global bound address, nothing. Our global address
//! is found without sending anything: a UDP socket is `connect`ed to a documentation
//! address (`192.0.2.1`, `2001:db8::1`), which only asks the kernel for the route and
//! its source address, and the source is kept only when it is global (never loopback,
//! link-local, private/ULA, documentation, NAT64…).
//!
//! Locks: none; the turn counter of `accept` is an atomic.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Ports tried when none is given: a random one of 49152–65535 (the dynamic range).
pub const DEFAULT_PORT_RANGE: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Random ports of [`DEFAULT_PORT_RANGE`] tried for port 0 before the kernel picks one.
pub const MAX_RANDOM_PORT_TRIES: usize = 32;

/// Ports the kernel picks tried for port 0 after the random ones (one may be taken on
/// another of the addresses).
pub const MAX_KERNEL_PORT_TRIES: usize = 4;

/// Ports tried after a configured one that is taken (P+1 … P+20).
pub const MAX_PORT_FALLBACK_TRIES: u16 = 20;

/// Most addresses listened on at once.
pub const MAX_LISTEN_ADDRESSES: usize = 16;

/// How long accepting pauses when out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    #[error(
        "no free port to listen on {ips}: tried {tried} (the last was taken on {addr}: {source})"
    )]
    Taken {
        ips: String,
        tried: PortsTried,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// The ports [`Listeners::bind`] tried before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortsTried {
    /// A configured port and the ones after it, `first..=last`.
    Configured { first: u16, last: u16 },
    /// Port 0: random ports of [`DEFAULT_PORT_RANGE`], then ports the kernel picked.
    Dynamic { random: usize, kernel_picked: usize },
}

impl std::fmt::Display for PortsTried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortsTried::Configured { first, last } => write!(f, "ports {first}–{last}"),
            PortsTried::Dynamic {
                random,
                kernel_picked,
            } => write!(
                f,
                "{random} random ports of {}–{} and {kernel_picked} ports the kernel picked",
                DEFAULT_PORT_RANGE.start(),
                DEFAULT_PORT_RANGE.end()
            ),
        }
    }
}

/// Listeners on one port number, one per address.
#[derive(Debug)]
pub struct Listeners {
    listeners: Vec<TcpListener>,
    port: u16,
    listening: Listening,
    turn: AtomicUsize,
}

/// What one port gave: every available address bound, or one address had it taken.
enum Attempt {
    Bound(Listeners),
    Taken(SocketAddr, io::Error),
}

/// What a failed `accept` means for the loop calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The connection failed before we took it (aborted, reset, a network error Linux
    /// passes on): take the next at once.
    Connection,
    /// Out of descriptors or memory: wait [`ACCEPT_BACKOFF`] rather than spin.
    Resources,
    /// The listener itself is unusable (a bad descriptor and the like).
    Listener,
}

impl AcceptFailure {
    pub fn of(e: &io::Error) -> AcceptFailure {
        use rustix::io::Errno;
        match Errno::from_io_error(e) {
            Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                AcceptFailure::Resources
            }
            Some(Errno::BADF | Errno::INVAL | Errno::NOTSOCK | Errno::FAULT) => {
                AcceptFailure::Listener
            }
            // ECONNABORTED, ECONNRESET, EPROTO, EPERM (a firewall), ENETDOWN,
            // EHOSTUNREACH, ETIMEDOUT, EINTR…: that one connection only.
            _ => AcceptFailure::Connection,
        }
    }
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
        let (candidates, tried): (Vec<u16>, PortsTried) = if port == 0 {
            let span = u32::from(DEFAULT_PORT_RANGE.end() - DEFAULT_PORT_RANGE.start()) + 1;
            let ports = (0..MAX_RANDOM_PORT_TRIES)
                .map(|_| DEFAULT_PORT_RANGE.start() + (rand::random::<u32>() % span) as u16)
                // Then ports the kernel picks (0: see `try_port`).
                .chain([0; MAX_KERNEL_PORT_TRIES])
                .collect();
            let tried = PortsTried::Dynamic {
                random: MAX_RANDOM_PORT_TRIES,
                kernel_picked: MAX_KERNEL_PORT_TRIES,
            };
            (ports, tried)
        } else {
            let last = port.saturating_add(tries);
            (
                (port..=last).collect(),
                PortsTried::Configured { first: port, last },
            )
        };
        let mut last = None;
        for p in candidates {
            match try_port(&uniq, p)? {
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
            tried,
            addr,
            source,
        })
    }

    /// The port every listener has.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses listened on (those skipped as absent are not here).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// What is listened on, for BEP 7 announces.
    pub fn listening(&self) -> Listening {
        self.listening.clone()
    }

    /// The next connection on any listener (each is polled first in turn). Connections
    /// that failed before they were taken are passed over, and running out of
    /// descriptors or memory waits [`ACCEPT_BACKOFF`]; an error is returned only when a
    /// listener is unusable ([`AcceptFailure::Listener`]).
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            match self.accept_once().await {
                Ok(c) => return Ok(c),
                Err(e) => match AcceptFailure::of(&e) {
                    AcceptFailure::Connection => {
                        tracing::debug!(error = %e, "a connection failed before it was accepted");
                    }
                    AcceptFailure::Resources => {
                        tracing::warn!(error = %e, "cannot accept connections for now");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    AcceptFailure::Listener => return Err(e),
                },
            }
        }
    }

    async fn accept_once(&self) -> io::Result<(TcpStream, SocketAddr)> {
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

/// The addresses listened on as configured (`0.0.0.0` and `::` included), and whether
/// IPv6 sockets take IPv4 too: which of our addresses a private torrent announces
/// (BEP 7, see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    ips: Vec<IpAddr>,
    v6_dual_stack: bool,
}

impl Listening {
    pub fn new(ips: Vec<IpAddr>, v6_dual_stack: bool) -> Listening {
        Listening { ips, v6_dual_stack }
    }

    /// The IPv4 address to announce as `ipv4=`, if any.
    pub fn ipv4_to_announce(&self) -> Option<Ipv4Addr> {
        self.ipv4_with(global_ipv4)
    }

    /// The IPv6 address to announce as `ipv6=`, if any.
    pub fn ipv6_to_announce(&self) -> Option<Ipv6Addr> {
        self.ipv6_with(global_ipv6)
    }

    /// A global IPv4 address bound as such, else `probe()` when IPv4 is listened on
    /// unspecified (`0.0.0.0`, or `::` dual-stack).
    fn ipv4_with(&self, probe: impl FnOnce() -> Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let mut unspecified = false;
        for ip in &self.ips {
            match ip {
                IpAddr::V4(a) if a.is_unspecified() => unspecified = true,
                IpAddr::V4(a) if is_global(*ip) => return Some(*a),
                IpAddr::V6(a) if a.is_unspecified() && self.v6_dual_stack => unspecified = true,
                _ => {}
            }
        }
        unspecified.then(probe).flatten()
    }

    /// A global IPv6 address bound as such, else `probe()` when `::` is listened on.
    fn ipv6_with(&self, probe: impl FnOnce() -> Option<Ipv6Addr>) -> Option<Ipv6Addr> {
        let mut unspecified = false;
        for ip in &self.ips {
            match ip {
                IpAddr::V6(a) if a.is_unspecified() => unspecified = true,
                IpAddr::V6(a) if is_global(*ip) => return Some(*a),
                _ => {}
            }
        }
        unspecified.then(probe).flatten()
    }
}

/// Binds `port` on every address; port 0 takes the kernel's pick for the first address
/// bound and that same port for the others.
fn try_port(ips: &[IpAddr], mut port: u16) -> Result<Attempt, ListenError> {
    let only_v6 = v6_only(ips);
    let mut listeners = Vec::with_capacity(ips.len());
    let mut bound = Vec::with_capacity(ips.len());
    let mut missing = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        match bind_one(addr, only_v6) {
            Ok(l) => {
                if port == 0 {
                    port = l
                        .local_addr()
                        .map_err(|source| ListenError::Bind { addr, source })?
                        .port();
                }
                listeners.push(l);
                bound.push(*ip);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(Attempt::Taken(addr, e)),
            Err(e) if address_missing(&e) => missing.push((addr, e)),
            Err(source) => return Err(ListenError::Bind { addr, source }),
        }
    }
    if listeners.is_empty() {
        let (addr, source) = missing.swap_remove(0);
        return Err(ListenError::Bind { addr, source });
    }
    for (addr, e) in missing {
        if addr.ip().is_unspecified() {
            tracing::debug!(%addr, error = %e, "not listening on an address family this host lacks");
        } else {
            tracing::warn!(%addr, error = %e, "not listening on an address this host lacks");
        }
    }
    Ok(Attempt::Bound(Listeners {
        listeners,
        port,
        listening: Listening::new(bound, !only_v6),
        turn: AtomicUsize::new(0),
    }))
}

/// The host has no such address or family (IPv6 off or absent, an address on no
/// interface).
fn address_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::AFNOSUPPORT)
}

/// Whether IPv6 sockets are `IPV6_V6ONLY` for the list `ips`: when it holds IPv4 too
/// (both families bound separately); otherwise a lone `::` takes IPv4 as well.
fn v6_only(ips: &[IpAddr]) -> bool {
    ips.iter().any(IpAddr::is_ipv4)
}

/// One listener on `addr`.
fn bind_one(addr: SocketAddr, only_v6: bool) -> io::Result<TcpListener> {
    let s = listen_socket(addr, only_v6)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    TcpListener::from_std(s.into())
}

/// A socket for a listener on `addr`, not bound yet; an IPv6 one accepts IPv6 only when
/// `only_v6`, so that `::` does not take the port of IPv4 listeners beside it. (Linux
/// makes a socket bound to a concrete IPv6 address IPv6-only whatever this says.)
fn listen_socket(addr: SocketAddr, only_v6: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(only_v6)?;
    }
    // As tokio's own `bind`: a port in TIME_WAIT can be listened on again.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Our global IPv4 address (the source the kernel would use to reach the internet), if
/// there is one. Sends nothing (see the module doc).
pub fn global_ipv4() -> Option<Ipv4Addr> {
    match route_source((Ipv4Addr::UNSPECIFIED, 0), (Ipv4Addr::new(192, 0, 2, 1), 9))? {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// Our global IPv6 address, as [`global_ipv4`].
pub fn global_ipv6() -> Option<Ipv6Addr> {
    let probe = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    match route_source((Ipv6Addr::UNSPECIFIED, 0), (probe, 9))? {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// The source address the kernel picks to reach `probe`, when it is global.
fn route_source(local: impl Into<SocketAddr>, probe: impl Into<SocketAddr>) -> Option<IpAddr> {
    let s = UdpSocket::bind(local.into()).ok()?;
    s.connect(probe.into()).ok()?;
    let ip = s.local_addr().ok()?.ip();
    is_global(ip).then_some(ip)
}

/// Whether `ip` can be reached from the internet: not unspecified, loopback,
/// link-local, private (RFC 1918, shared 100.64/10, IPv6 ULA fc00::/7, site-local),
/// documentation, multicast, reserved, IPv4-mapped, NAT64 (64:ff9b::/96) or discard
/// (100::/64).
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
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || s[..4] == [0x100, 0, 0, 0]
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
        let both = Listeners::bind(&[V4, V6], p, MAX_PORT_FALLBACK_TRIES).unwrap();
        assert_eq!(both.port(), p);
        let mut addrs = both.local_addrs();
        addrs.sort();
        assert_eq!(addrs, vec![SocketAddr::new(V4, p), SocketAddr::new(V6, p)]);
        drop(both);

        // Taken on ::1 only: both move to the next port together…
        let taken = std::net::TcpListener::bind(SocketAddr::new(V6, p)).unwrap();
        let moved = Listeners::bind(&[V4, V6], p, MAX_PORT_FALLBACK_TRIES).unwrap();
        assert_eq!(moved.port(), p + 1);
        assert_eq!(moved.local_addrs().len(), 2);
        // …and 127.0.0.1:P, bound while trying P, was let go.
        let v4_p = std::net::TcpListener::bind(SocketAddr::new(V4, p));
        assert!(v4_p.is_ok(), "127.0.0.1:{p} still held: {v4_p:?}");
        drop(v4_p);
        // Without fallback it is an error that names the ports and the address taken.
        let e = Listeners::bind(&[V4, V6], p, 0).unwrap_err().to_string();
        assert!(e.contains(&format!("tried ports {p}–{p}")), "{e}");
        assert!(e.contains(&format!("[::1]:{p}")), "{e}");
        drop(taken);
    }

    /// Both families listed: IPv6 sockets are `V6ONLY` (IPv4 has its own). IPv6 alone
    /// (a lone `::`) stays dual-stack. The sockets are not bound: Linux makes one bound
    /// to a concrete address such as ::1 IPv6-only anyway, and a unit test binds no
    /// more than loopback (`tests/dualstack.rs` has `::` accept IPv4, in a namespace).
    #[test]
    fn ipv6_is_v6only_only_beside_ipv4() {
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        for (ips, want) in [
            (&[any4, any6][..], true),
            (&[V4, V6], true),
            (&[any6], false),
            (&[V6, any6], false),
        ] {
            assert_eq!(v6_only(ips), want, "{ips:?}");
            let s = listen_socket(SocketAddr::new(any6, 0), v6_only(ips)).unwrap();
            assert_eq!(s.only_v6().unwrap(), want, "{ips:?}");
        }
    }

    #[tokio::test]
    async fn both_families_accept_on_one_port() {
        let both = Listeners::bind(&[V4, V6], 0, 0).unwrap();
        assert!(DEFAULT_PORT_RANGE.contains(&both.port()), "{}", both.port());
        assert_eq!(both.listening(), Listening::new(vec![V4, V6], false));
        for to in [V4, V6] {
            let c = tokio::net::TcpStream::connect((to, both.port()));
            let (c, a) = tokio::join!(c, both.accept());
            let (_s, from) = a.unwrap();
            assert_eq!(from.ip(), to);
            drop(c.unwrap());
        }
        let alone = Listeners::bind(&[V6], 0, 0).unwrap();
        assert_eq!(alone.listening(), Listening::new(vec![V6], true));
    }

    #[tokio::test]
    async fn a_missing_address_is_skipped_only_when_another_was_bound() {
        // 192.0.2.1 (documentation) is on no interface here: EADDRNOTAVAIL.
        let absent = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let l = Listeners::bind(&[V4, absent], 0, 0).unwrap();
        assert_eq!(l.local_addrs(), vec![SocketAddr::new(V4, l.port())]);
        assert_eq!(l.listening(), Listening::new(vec![V4], false));
        let e = Listeners::bind(&[absent], 0, 0).unwrap_err();
        assert!(matches!(e, ListenError::Bind { .. }), "{e}");
        assert!(matches!(
            Listeners::bind(&[], 0, 0),
            Err(ListenError::NoAddress)
        ));
    }

    #[test]
    fn ports_tried_are_named_for_what_they_were() {
        let c = PortsTried::Configured {
            first: 6881,
            last: 6901,
        };
        assert_eq!(c.to_string(), "ports 6881–6901");
        let d = PortsTried::Dynamic {
            random: 32,
            kernel_picked: 4,
        };
        assert_eq!(
            d.to_string(),
            "32 random ports of 49152–65535 and 4 ports the kernel picked"
        );
    }

    #[test]
    fn only_running_out_of_resources_pauses_accepting() {
        use rustix::io::Errno;
        let of = |e: Errno| AcceptFailure::of(&io::Error::from(e));
        for e in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert_eq!(of(e), AcceptFailure::Resources, "{e:?}");
        }
        for e in [
            Errno::CONNABORTED,
            Errno::CONNRESET,
            Errno::PROTO,
            Errno::PERM,
            Errno::NETDOWN,
            Errno::HOSTUNREACH,
            Errno::INTR,
        ] {
            assert_eq!(of(e), AcceptFailure::Connection, "{e:?}");
        }
        assert_eq!(of(Errno::BADF), AcceptFailure::Listener);
        assert_eq!(
            AcceptFailure::of(&io::ErrorKind::ConnectionAborted.into()),
            AcceptFailure::Connection
        );
    }

    /// BEP 7: a global address bound as such as is; unspecified binds the probe's
    /// address; loopback and other non-global binds nothing.
    #[test]
    fn announced_addresses_are_those_listened_on() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4: Ipv4Addr = "81.2.69.160".parse().unwrap();
        let v6: Ipv6Addr = "2a00:1450::9".parse().unwrap();
        let probe4 = || Some("81.2.69.7".parse::<Ipv4Addr>().unwrap());
        let probe6 = || Some("2a00:1450::7".parse::<Ipv6Addr>().unwrap());
        let at = |ips: &[&str], dual: bool| {
            let l = Listening::new(ips.iter().map(|s| ip(s)).collect(), dual);
            (l.ipv4_with(probe4), l.ipv6_with(probe6))
        };
        assert_eq!(at(&["0.0.0.0", "::"], false), (probe4(), probe6()));
        assert_eq!(at(&["::"], true), (probe4(), probe6()), "dual-stack ::");
        assert_eq!(at(&["::"], false), (None, probe6()));
        assert_eq!(
            at(&["81.2.69.160", "2a00:1450::9"], false),
            (Some(v4), Some(v6))
        );
        assert_eq!(at(&["127.0.0.1", "::1"], false), (None, None));
        assert_eq!(at(&["::1"], true), (None, None));
        assert_eq!(at(&["192.168.1.2", "fd00::2"], false), (None, None));
        assert_eq!(at(&["10.0.0.1", "::"], false), (None, probe6()));
        assert_eq!(at(&[], false), (None, None));
        // No global address of the family: nothing.
        let l = Listening::new(vec![ip("0.0.0.0"), ip("::")], false);
        assert_eq!((l.ipv4_with(|| None), l.ipv6_with(|| None)), (None, None));
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
            "64:ff9b::808:808",
            "100::1",
        ] {
            assert!(!is_global(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2a00:1450:4001::1", "2606:4700::1111"] {
            assert!(is_global(a.parse().unwrap()), "{a}");
        }
    }
}

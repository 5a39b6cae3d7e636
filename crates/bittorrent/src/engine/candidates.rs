//! The peer book of one torrent: every address the engine may dial (from trackers, the
//! DHT, peer exchange, magnet links, the command line), its dial state and back-off, the
//! banned addresses, connection attempts per IP and the peer-exchange rate limit per
//! source IP.
//!
//! Policy: the book stays bounded whatever peers send.
//! - IPs are counted as [`IpKey`]s: IPv4 (IPv4-mapped IPv6 included) as the address,
//!   IPv6 by its /64, since one host commonly holds a whole /64. Connection caps, the
//!   peer-exchange table, ports per IP and bans all use it.
//! - At most [`MAX_CANDIDATES`] addresses, de-duplicated, and at most
//!   [`MAX_PORTS_PER_IP`] ports of one IP ([`MAX_PEX_PORTS_PER_IP`] when learnt by peer
//!   exchange; [`MAX_PORTS_PER_LOOPBACK_IP`] on loopback, where local peers share one
//!   address). When full, a new address takes the place of a waiting one that already
//!   failed (the most backed-off first) or, for an address not learnt by peer exchange,
//!   of an untried PEX one; otherwise it is dropped. Addresses being dialled or
//!   connected are never dropped.
//! - Dials go to due addresses in due order, skipping IPs at their connection cap
//!   without giving up: every due address is looked at (at most [`MAX_CANDIDATES`]).
//! - An address that fails [`MAX_FAILURES`] times in a row is forgotten (those given
//!   on the command line are kept): a source can offer it again later. A dial refused
//!   because we were full is put back without counting as a failure.
//! - Addresses in the IP filter's blocked ranges are never taken, whatever their
//!   source: this is the one place every peer source's addresses come through. Each
//!   is remembered once in the torrent's set of blocked addresses (a tracker offering
//!   it again every announce does not count it again).
//! - At most [`MAX_BANNED`] bans, the oldest forgotten first (see [`BanKey`]).
//! - Peer exchange: one message per source IP per [`PEX_INTERVAL`] (reconnecting does
//!   not reset it), at most [`MAX_PEX_ADDED`] addresses of each family taken from it,
//!   and at most [`MAX_PEX_SOURCES`] source IPs remembered (expired ones are pruned
//!   first; when still full, the message is ignored).
//!
//! No clock and no I/O: callers pass `now`, so the book is tested in virtual time. It is
//! owned by the torrent loop alone (no lock).

use crate::ipfilter::FilterScope;
use crate::peers::PeerSource;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Most addresses known at once.
pub const MAX_CANDIDATES: usize = 4096;
/// Most ports of one IP known at once.
pub const MAX_PORTS_PER_IP: usize = 4;
/// Ports of one IP past which addresses learnt by peer exchange are dropped.
pub const MAX_PEX_PORTS_PER_IP: usize = 2;
/// Most ports of one loopback IP (local peers all listen on 127.0.0.1 or ::1).
pub const MAX_PORTS_PER_LOOPBACK_IP: usize = 256;
/// Failures in a row after which an address is forgotten.
pub const MAX_FAILURES: u32 = 10;
/// Most banned addresses remembered.
pub const MAX_BANNED: usize = 4096;
/// Most source IPs whose last peer-exchange message is remembered.
pub const MAX_PEX_SOURCES: usize = 4096;
/// Most addresses of each family taken from one peer-exchange message (BEP 11 caps
/// `added` and `added6` at 50 each).
pub const MAX_PEX_ADDED: usize = 50;
/// Shortest time between two peer-exchange messages accepted from one IP.
pub const PEX_INTERVAL: Duration = crate::pex::MIN_INTERVAL;
/// A connection that lasted this long counts as a success: its failures are forgotten.
const GOOD_CONNECTION: Duration = Duration::from_secs(60);
/// Waiting entries looked at from the back when one must make room.
const EVICT_SCAN: usize = 64;
/// Wait before dialling again an address whose dial was refused because we were full.
const REFUSED_DELAY: Duration = Duration::from_secs(1);

/// An IP as limits and bans count it: an IPv4 address (IPv4-mapped IPv6 ones made
/// IPv4), or an IPv6 /64 (the rest of the address zeroed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpKey(IpAddr);

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) if v6.is_loopback() => IpKey(IpAddr::V6(v6)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }

    /// 127.0.0.1 or ::1, where every local peer (those of the tests included) lives.
    fn is_shared_loopback(self) -> bool {
        self.0 == IpAddr::V4(Ipv4Addr::LOCALHOST) || self.0 == IpAddr::V6(Ipv6Addr::LOCALHOST)
    }

    fn max_ports(self, from_pex: bool) -> usize {
        if self.0.is_loopback() {
            MAX_PORTS_PER_LOOPBACK_IP
        } else if from_pex {
            MAX_PEX_PORTS_PER_IP
        } else {
            MAX_PORTS_PER_IP
        }
    }
}

/// What a ban applies to: an [`IpKey`], or on 127.0.0.1 and ::1 one listen port of it.
///
/// Every local peer shares 127.0.0.1 and listens on its own port, so there a peer whose
/// listen port is known (we dialled it, or its extension handshake named it) is banned
/// by that port alone. An inbound connection comes from an ephemeral port, which says
/// nothing of the peer: without a listen port the whole IP is banned. Everywhere else
/// the IP (the /64 for IPv6) is banned, whatever the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BanKey {
    ip: IpKey,
    /// 0: every port.
    port: u16,
}

impl BanKey {
    /// The key of a peer at `ip` listening on `listen_port`, when known.
    pub fn new(ip: IpAddr, listen_port: Option<u16>) -> BanKey {
        let ip = IpKey::of(ip);
        let port = match listen_port {
            Some(p) if ip.is_shared_loopback() => p,
            _ => 0,
        };
        BanKey { ip, port }
    }

    /// The key of an address we dial (where the peer listens).
    pub fn listening(addr: SocketAddr) -> BanKey {
        BanKey::new(addr.ip(), Some(addr.port()))
    }

    /// Whether banning `self` bans `other` as well: the same key, or `other`'s IP.
    pub fn includes(&self, other: &BanKey) -> bool {
        self.ip == other.ip && (self.port == 0 || self.port == other.port)
    }
}

/// Wait before dialling an address again after its `n`th failure: 1 s, doubling, at
/// most a minute.
pub fn retry_delay(n: u32) -> Duration {
    Duration::from_secs(1 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialState {
    /// In [`PeerBook::waiting`], dialled once due.
    Waiting,
    Dialling,
    Connected {
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    state: DialState,
    failures: u32,
    /// When it may be dialled (meaningful while waiting), and its insertion number.
    due: Instant,
    seq: u64,
    from_pex: bool,
    manual: bool,
}

/// Addresses to dial, bans, and rate limits; see the module documentation.
#[derive(Debug, Default)]
pub struct PeerBook {
    entries: HashMap<SocketAddr, Entry>,
    /// Waiting addresses by (due time, insertion number).
    waiting: BTreeSet<(Instant, u64, SocketAddr)>,
    /// Entries per IP (the ports known of it).
    ports: HashMap<IpKey, usize>,
    banned: HashSet<BanKey>,
    ban_order: VecDeque<BanKey>,
    pex_seen: HashMap<IpKey, Instant>,
    /// Connection attempts (dials and inbound handshakes) in flight, per IP.
    attempts: HashMap<IpKey, usize>,
    next_seq: u64,
    filter: Option<FilterScope>,
}

impl PeerBook {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// A book that takes no address `filter` blocks (remembered in its scope).
    pub fn with_filter(filter: Option<FilterScope>) -> Self {
        PeerBook {
            filter,
            ..Self::default()
        }
    }

    /// Adds an address to dial. Returns whether it was taken (not known, not banned,
    /// dialable, its IP with room for another port, and room made for it).
    pub fn offer(&mut self, addr: SocketAddr, source: &PeerSource, now: Instant) -> bool {
        if self.entries.contains_key(&addr)
            || self.is_banned(addr)
            || !crate::peers::is_dialable(&addr)
        {
            return false;
        }
        if self.filter.as_ref().is_some_and(|f| f.check(addr.ip())) {
            return false;
        }
        let from_pex = *source == PeerSource::Pex;
        let ip = IpKey::of(addr.ip());
        if self.ports.get(&ip).copied().unwrap_or(0) >= ip.max_ports(from_pex) {
            return false;
        }
        if self.entries.len() >= MAX_CANDIDATES && !self.make_room(from_pex) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            addr,
            Entry {
                state: DialState::Waiting,
                failures: 0,
                due: now,
                seq,
                from_pex,
                manual: *source == PeerSource::Manual,
            },
        );
        *self.ports.entry(ip).or_default() += 1;
        self.waiting.insert((now, seq, addr));
        true
    }

    /// Addresses a peer at `from` sent by peer exchange: taken once per source IP per
    /// [`PEX_INTERVAL`], at most [`MAX_PEX_ADDED`] of each family. Returns how many were
    /// taken.
    pub fn offer_pex(&mut self, from: IpAddr, addrs: &[SocketAddr], now: Instant) -> usize {
        if !self.pex_allowed(from, now) {
            return 0;
        }
        let v4 = addrs.iter().filter(|a| a.is_ipv4()).take(MAX_PEX_ADDED);
        let v6 = addrs.iter().filter(|a| a.is_ipv6()).take(MAX_PEX_ADDED);
        v4.chain(v6)
            .filter(|a| self.offer(**a, &PeerSource::Pex, now))
            .count()
    }

    /// Forgets an address (and takes it out of the waiting queue).
    fn forget(&mut self, addr: SocketAddr) {
        let Some(e) = self.entries.remove(&addr) else {
            return;
        };
        self.waiting.remove(&(e.due, e.seq, addr));
        let ip = IpKey::of(addr.ip());
        if let Some(n) = self.ports.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.ports.remove(&ip);
            }
        }
    }

    /// Drops one waiting address to make room for an address of the given kind.
    fn make_room(&mut self, new_from_pex: bool) -> bool {
        let victim = self
            .waiting
            .iter()
            .rev()
            .take(EVICT_SCAN)
            .find(|(_, _, a)| {
                let e = &self.entries[a];
                !e.manual && (e.failures > 0 || (e.from_pex && !new_from_pex))
            })
            .copied();
        match victim {
            Some((_, _, a)) => {
                self.forget(a);
                true
            }
            None => false,
        }
    }

    /// The next address due for a dial whose IP has fewer than `per_ip` connections
    /// (`established(ip)` plus attempts in flight). It is marked as being dialled and
    /// its attempt as started: report the outcome with [`PeerBook::connected`],
    /// [`PeerBook::dial_failed`] or [`PeerBook::dial_refused`], and
    /// [`PeerBook::attempt_ended`].
    ///
    /// Every due address may be looked at (at most [`MAX_CANDIDATES`]); each IP's
    /// count is asked once per call.
    pub fn next_to_dial(
        &mut self,
        now: Instant,
        per_ip: usize,
        established: impl Fn(IpKey) -> usize,
    ) -> Option<SocketAddr> {
        let attempts = &self.attempts;
        let mut full: HashSet<IpKey> = HashSet::new();
        let key = self
            .waiting
            .iter()
            .take_while(|(due, _, _)| *due <= now)
            .find(|(_, _, a)| {
                let ip = IpKey::of(a.ip());
                if full.contains(&ip) {
                    return false;
                }
                let room = established(ip) + attempts.get(&ip).copied().unwrap_or(0) < per_ip;
                if !room {
                    full.insert(ip);
                }
                room
            })
            .copied()?;
        self.waiting.remove(&key);
        if let Some(e) = self.entries.get_mut(&key.2) {
            e.state = DialState::Dialling;
        }
        self.attempt_started(key.2.ip());
        Some(key.2)
    }

    /// Whether any address waits to be dialled (now or after a back-off).
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// A dialled address answered the handshake.
    pub fn connected(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(e) = self.entries.get_mut(&addr) {
            if e.state == DialState::Dialling {
                e.state = DialState::Connected { since: now };
            }
        }
    }

    /// A dial failed: the address is dialled again after a back-off, or forgotten.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        if self
            .entries
            .get(&addr)
            .is_some_and(|e| e.state == DialState::Dialling)
        {
            self.back_off(addr, now);
        }
    }

    /// A dialled address answered but we had no room for it (too many peers, or its
    /// IP's slots taken meanwhile): it waits again, without counting as a failure.
    pub fn dial_refused(&mut self, addr: SocketAddr, now: Instant) {
        let Some(e) = self.entries.get_mut(&addr) else {
            return;
        };
        if e.state != DialState::Dialling {
            return;
        }
        e.state = DialState::Waiting;
        e.due = now + REFUSED_DELAY;
        self.waiting.insert((e.due, e.seq, addr));
    }

    /// A connection we dialled closed: dialled again after a back-off (its failures
    /// forgotten first when it lasted), or forgotten.
    pub fn closed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(e) = self.entries.get_mut(&addr) else {
            return;
        };
        let DialState::Connected { since } = e.state else {
            return;
        };
        if now.saturating_duration_since(since) >= GOOD_CONNECTION {
            e.failures = 0;
        }
        self.back_off(addr, now);
    }

    fn back_off(&mut self, addr: SocketAddr, now: Instant) {
        let Some(e) = self.entries.get_mut(&addr) else {
            return;
        };
        e.failures += 1;
        if e.failures >= MAX_FAILURES && !e.manual {
            self.forget(addr);
            return;
        }
        e.state = DialState::Waiting;
        e.due = now + retry_delay(e.failures);
        self.waiting.insert((e.due, e.seq, addr));
    }

    /// Bans `key` and forgets the addresses it covers.
    pub fn ban(&mut self, key: BanKey) {
        if self.banned.insert(key) {
            self.ban_order.push_back(key);
            if self.ban_order.len() > MAX_BANNED {
                if let Some(old) = self.ban_order.pop_front() {
                    self.banned.remove(&old);
                }
            }
        }
        let gone: Vec<SocketAddr> = self
            .entries
            .keys()
            .filter(|a| key.includes(&BanKey::listening(**a)))
            .copied()
            .collect();
        for a in gone {
            self.forget(a);
        }
    }

    /// Whether a peer at `ip` listening on `listen_port` (when known) is banned.
    pub fn is_banned_peer(&self, ip: IpAddr, listen_port: Option<u16>) -> bool {
        let any_port = BanKey::new(ip, None);
        self.banned.contains(&any_port)
            || (listen_port.is_some() && self.banned.contains(&BanKey::new(ip, listen_port)))
    }

    /// Whether an address we would dial (where a peer listens) is banned.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.is_banned_peer(addr.ip(), Some(addr.port()))
    }

    #[cfg(test)]
    fn knows(&self, addr: SocketAddr) -> bool {
        self.entries.contains_key(&addr)
    }

    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// Whether a peer-exchange message from `ip` is taken now; if so, the next one from
    /// that IP (its /64 for IPv6) is taken only after [`PEX_INTERVAL`].
    pub fn pex_allowed(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = IpKey::of(ip);
        if let Some(&last) = self.pex_seen.get(&ip) {
            if now.saturating_duration_since(last) < PEX_INTERVAL {
                return false;
            }
        } else if self.pex_seen.len() >= MAX_PEX_SOURCES {
            self.pex_seen
                .retain(|_, &mut t| now.saturating_duration_since(t) < PEX_INTERVAL);
            if self.pex_seen.len() >= MAX_PEX_SOURCES {
                return false;
            }
        }
        self.pex_seen.insert(ip, now);
        true
    }

    /// A connection attempt (dial or inbound handshake) to or from `ip` began.
    pub fn attempt_started(&mut self, ip: IpAddr) {
        *self.attempts.entry(IpKey::of(ip)).or_default() += 1;
    }

    /// A connection attempt ended (connected or failed).
    pub fn attempt_ended(&mut self, ip: IpAddr) {
        let ip = IpKey::of(ip);
        if let Some(n) = self.attempts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.attempts.remove(&ip);
            }
        }
    }

    /// Connection attempts in flight with `ip` (its /64 for IPv6).
    pub fn attempts(&self, ip: IpAddr) -> usize {
        self.attempts.get(&IpKey::of(ip)).copied().unwrap_or(0)
    }

    /// Attempts in flight with every IP.
    pub fn attempts_total(&self) -> usize {
        self.attempts.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u32, port: u16) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x7f00_0000 | i), port))
    }

    /// Whatever the source, an address the filter blocks is not taken, and counted
    /// once however often it is offered.
    #[test]
    fn blocked_addresses_are_never_taken() {
        let t = Instant::now();
        let f = std::sync::Arc::new(crate::ipfilter::IpFilter::from_ranges(
            vec![(0x7f00_0001, 0x7f00_0001)],
            vec![(1, 1)],
        ));
        let scope = FilterScope::new(f.clone());
        let mut b = PeerBook::with_filter(Some(scope.clone()));
        for source in [
            PeerSource::Manual,
            PeerSource::Dht,
            PeerSource::Pex,
            PeerSource::Magnet,
        ] {
            assert!(!b.offer(a(1, 10), &source, t));
        }
        // IPv4-mapped, ::1 (in the IPv6 range), and peer exchange.
        assert!(!b.offer(
            "[::ffff:127.0.0.1]:10".parse().unwrap(),
            &PeerSource::Dht,
            t
        ));
        assert!(!b.offer("[::1]:10".parse().unwrap(), &PeerSource::Dht, t));
        assert_eq!(b.offer_pex(a(9, 1).ip(), &[a(1, 11), a(2, 11)], t), 1);
        // 127.0.0.1 (however offered, mapped too) and ::1.
        assert_eq!(scope.blocked(), 2);
        assert_eq!(f.blocked(), 2);
        assert_eq!(b.next_to_dial(t, 1, |_| 0), Some(a(2, 11)));
        assert_eq!(b.next_to_dial(t, 1, |_| 0), None);
    }

    #[test]
    fn offers_are_deduplicated_and_dialled_once_due() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        assert!(b.offer(a(1, 10), &PeerSource::Pex, t));
        assert!(!b.offer(a(1, 10), &PeerSource::Dht, t));
        assert!(!b.offer(a(1, 0), &PeerSource::Dht, t));
        assert_eq!(b.len(), 1);
        assert_eq!(b.next_to_dial(t, 9, |_| 0), Some(a(1, 10)));
        assert_eq!(b.next_to_dial(t, 9, |_| 0), None);
        // Dialling or connected: still known, not offered again.
        assert!(!b.offer(a(1, 10), &PeerSource::Pex, t));
        b.dial_failed(a(1, 10), t);
        assert_eq!(b.next_to_dial(t, 9, |_| 0), None, "backing off");
        let later = t + retry_delay(1);
        assert_eq!(b.next_to_dial(later, 9, |_| 0), Some(a(1, 10)));
    }

    #[test]
    fn the_book_is_bounded_and_failed_addresses_make_room() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        for i in 0..MAX_CANDIDATES as u32 {
            assert!(b.offer(a(i + 1, 7), &PeerSource::Pex, t));
        }
        // Full of untried PEX addresses: more PEX ones are dropped...
        assert!(!b.offer(a(1, 8), &PeerSource::Pex, t));
        assert_eq!(b.len(), MAX_CANDIDATES);
        // ...but a tracker's address takes the place of one of them.
        let tracker = PeerSource::Tracker("http://127.0.0.1:1/announce".into());
        assert!(b.offer(a(1, 9), &tracker, t));
        assert_eq!(b.len(), MAX_CANDIDATES);
        // A failed address makes room for any new one.
        let first = b.next_to_dial(t, 9, |_| 0).unwrap();
        b.dial_failed(first, t);
        assert!(b.offer(a(2, 8), &PeerSource::Pex, t));
        assert_eq!(b.len(), MAX_CANDIDATES);
        assert!(!b.offer(first, &PeerSource::Pex, t), "dropped to make room");
    }

    #[test]
    fn addresses_failing_again_and_again_are_forgotten_except_manual_ones() {
        let mut t = Instant::now();
        let mut b = PeerBook::new();
        b.offer(a(1, 1), &PeerSource::Pex, t);
        b.offer(a(2, 2), &PeerSource::Manual, t);
        for _ in 0..MAX_FAILURES {
            while let Some(x) = b.next_to_dial(t, 1, |_| 0) {
                b.attempt_ended(x.ip());
                b.dial_failed(x, t);
            }
            t += Duration::from_secs(61);
        }
        assert_eq!(b.len(), 1);
        assert_eq!(b.next_to_dial(t, 9, |_| 0), Some(a(2, 2)));
        // Forgotten, so offered again it is taken.
        assert!(b.offer(a(1, 1), &PeerSource::Pex, t));
    }

    #[test]
    fn closed_connections_back_off_and_long_ones_reset_failures() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        b.offer(a(1, 1), &PeerSource::Dht, t);
        let x = b.next_to_dial(t, 9, |_| 0).unwrap();
        b.connected(x, t);
        b.closed(x, t);
        let t2 = t + retry_delay(1);
        assert_eq!(b.next_to_dial(t2, 9, |_| 0), Some(x));
        b.connected(x, t2);
        // Closed quickly again: second failure, longer wait.
        b.closed(x, t2);
        assert_eq!(b.next_to_dial(t2 + retry_delay(1), 9, |_| 0), None);
        let t3 = t2 + retry_delay(2);
        assert_eq!(b.next_to_dial(t3, 9, |_| 0), Some(x));
        b.connected(x, t3);
        // A long connection: failures forgotten, back to the shortest wait.
        let t4 = t3 + GOOD_CONNECTION;
        b.closed(x, t4);
        assert_eq!(b.next_to_dial(t4 + retry_delay(1), 9, |_| 0), Some(x));
    }

    #[test]
    fn dials_respect_the_cap_per_ip() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        b.offer(a(1, 1), &PeerSource::Dht, t);
        b.offer(a(1, 2), &PeerSource::Dht, t);
        b.offer(a(2, 1), &PeerSource::Dht, t);
        let busy = a(1, 1).ip();
        // One connection with 127.0.0.1 already: the cap of one skips its addresses.
        let established = |ip: IpKey| usize::from(ip == IpKey::of(busy));
        assert_eq!(b.next_to_dial(t, 1, established), Some(a(2, 1)));
        assert_eq!(b.next_to_dial(t, 1, established), None);
        // No connection but a dial in flight counts as well.
        assert_eq!(b.next_to_dial(t, 1, |_| 0), Some(a(1, 1)));
        assert_eq!(b.attempts(busy), 1);
        assert_eq!(b.next_to_dial(t, 1, |_| 0), None);
        assert_eq!(b.next_to_dial(t, 2, |_| 0), Some(a(1, 2)));
        b.attempt_ended(busy);
        b.attempt_ended(busy);
        b.attempt_ended(busy);
        assert_eq!(b.attempts(busy), 0);
        b.attempt_ended(a(2, 1).ip());
        assert_eq!(b.attempts_total(), 0);
    }

    #[test]
    fn bans_cover_the_ip_off_loopback_and_are_bounded() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        let remote = |p| SocketAddr::from(([192, 0, 2, 1], p));
        b.offer(remote(1), &PeerSource::Dht, t);
        b.offer(remote(2), &PeerSource::Dht, t);
        b.offer(a(1, 1), &PeerSource::Dht, t);
        b.offer(a(1, 2), &PeerSource::Dht, t);
        b.ban(BanKey::listening(remote(1)));
        b.ban(BanKey::listening(a(1, 1)));
        assert!(b.is_banned(remote(3)));
        assert!(b.is_banned(a(1, 1)) && !b.is_banned(a(1, 2)));
        assert_eq!(b.len(), 1);
        assert!(!b.offer(remote(4), &PeerSource::Dht, t));
        for i in 0..MAX_BANNED as u32 + 10 {
            b.ban(BanKey::listening(a(i + 5, 1)));
        }
        assert_eq!(b.banned_count(), MAX_BANNED);
        assert!(!b.is_banned(remote(1)), "the oldest ban went first");
    }

    #[test]
    fn pex_is_limited_per_source_ip_not_per_connection() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        let ip = a(9, 1).ip();
        assert!(b.pex_allowed(ip, t));
        // Any number of reconnections within the interval: refused.
        for s in 0..100 {
            assert!(!b.pex_allowed(ip, t + Duration::from_millis(s * 100)));
        }
        assert!(b.pex_allowed(a(10, 1).ip(), t));
        assert!(b.pex_allowed(ip, t + PEX_INTERVAL));
        // The table of sources is bounded; expired ones make room.
        let mut b = PeerBook::new();
        for i in 0..MAX_PEX_SOURCES as u32 {
            assert!(b.pex_allowed(a(i + 1, 1).ip(), t));
        }
        assert!(!b.pex_allowed(a(MAX_PEX_SOURCES as u32 + 5, 1).ip(), t));
        let later = t + PEX_INTERVAL;
        assert!(b.pex_allowed(a(MAX_PEX_SOURCES as u32 + 5, 1).ip(), later));
        assert_eq!(b.pex_seen.len(), 1);
    }

    fn v6(net: u16, host: u16, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, host), port))
    }

    #[test]
    fn ips_at_their_cap_never_stall_the_dials_of_others() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        for port in 1..=100 {
            assert!(b.offer(a(1, port), &PeerSource::Dht, t));
        }
        assert!(b.offer(a(2, 1), &PeerSource::Dht, t));
        // 127.0.0.1 already has its one connection: its 100 due addresses are skipped.
        let busy = IpKey::of(a(1, 1).ip());
        let established = |ip: IpKey| usize::from(ip == busy);
        assert_eq!(b.next_to_dial(t, 1, established), Some(a(2, 1)));
        assert_eq!(b.next_to_dial(t, 1, established), None);
    }

    #[test]
    fn ports_per_ip_are_capped_off_loopback() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        let remote = |host: u8, p| SocketAddr::from(([192, 0, 2, host], p));
        let taken = (1..=10)
            .filter(|&p| b.offer(remote(1, p), &PeerSource::Dht, t))
            .count();
        assert_eq!(taken, MAX_PORTS_PER_IP);
        let taken = (1..=10)
            .filter(|&p| b.offer(remote(2, p), &PeerSource::Pex, t))
            .count();
        assert_eq!(taken, MAX_PEX_PORTS_PER_IP);
        // An IP's forgotten address makes room for another port of it.
        b.ban(BanKey::listening(remote(2, 1)));
        assert!(!b.offer(remote(2, 20), &PeerSource::Pex, t), "banned");
        let taken = (1..=300)
            .filter(|&p| b.offer(a(1, p), &PeerSource::Pex, t))
            .count();
        assert_eq!(taken, MAX_PORTS_PER_LOOPBACK_IP);
        // IPv6: one /64 is one IP.
        let taken = (1..=10)
            .filter(|&h| b.offer(v6(1, h, 7), &PeerSource::Dht, t))
            .count();
        assert_eq!(taken, MAX_PORTS_PER_IP);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        assert_eq!(
            IpKey::of(v6(3, 1, 1).ip()),
            IpKey::of(v6(3, 0xffff, 1).ip())
        );
        assert_ne!(IpKey::of(v6(3, 1, 1).ip()), IpKey::of(v6(4, 1, 1).ip()));
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        assert_eq!(IpKey::of(mapped), IpKey::of(a(9, 1).ip()));
        // The PEX table: another address of the /64, or the mapped form, is the same source.
        assert!(b.pex_allowed(v6(3, 1, 1).ip(), t));
        assert!(!b.pex_allowed(v6(3, 2, 1).ip(), t));
        assert!(b.pex_allowed(v6(4, 1, 1).ip(), t));
        assert!(b.pex_allowed(a(9, 1).ip(), t));
        assert!(!b.pex_allowed(mapped, t));
        // Attempts and bans too.
        b.attempt_started(v6(5, 1, 1).ip());
        assert_eq!(b.attempts(v6(5, 9, 1).ip()), 1);
        b.ban(BanKey::new(v6(6, 1, 1).ip(), None));
        assert!(b.is_banned(v6(6, 77, 9)));
        assert!(!b.is_banned(v6(7, 1, 9)));
    }

    #[test]
    fn pex_takes_up_to_the_cap_of_each_family() {
        let t = Instant::now();
        let mut b = PeerBook::new();
        let mut addrs: Vec<SocketAddr> = (1..=60)
            .map(|h| SocketAddr::from(([192, 0, 2, h], 7)))
            .collect();
        addrs.extend((1..=10).map(|n| v6(n, 1, 7)));
        assert_eq!(b.offer_pex(a(9, 1).ip(), &addrs, t), MAX_PEX_ADDED + 10);
        assert!(
            b.knows(v6(10, 1, 7)),
            "IPv6 addresses after 50 IPv4 ones are taken"
        );
        assert!(!b.knows(SocketAddr::from(([192, 0, 2, 51], 7))));
        // A second message from the source within the interval: nothing.
        let more = [SocketAddr::from(([192, 0, 2, 200], 7))];
        assert_eq!(b.offer_pex(a(9, 1).ip(), &more, t), 0);
    }

    #[test]
    fn dials_refused_for_want_of_room_are_not_failures() {
        let mut t = Instant::now();
        let mut b = PeerBook::new();
        b.offer(a(1, 1), &PeerSource::Pex, t);
        for _ in 0..MAX_FAILURES * 2 {
            let x = b.next_to_dial(t, 1, |_| 0).unwrap();
            b.attempt_ended(x.ip());
            b.dial_refused(x, t);
            assert_eq!(b.next_to_dial(t, 1, |_| 0), None, "waits a little");
            t += REFUSED_DELAY;
        }
        assert!(b.knows(a(1, 1)), "never forgotten");
        assert_eq!(b.entries[&a(1, 1)].failures, 0);
    }

    #[test]
    fn bans_on_loopback_use_the_listen_port_when_known() {
        let mut b = PeerBook::new();
        // Dialled (or named in its handshake): that port of 127.0.0.1 alone.
        b.ban(BanKey::new(a(1, 0).ip(), Some(6881)));
        assert!(b.is_banned(a(1, 6881)));
        assert!(!b.is_banned(a(1, 6882)));
        assert!(!b.is_banned_peer(a(1, 0).ip(), None));
        // Another loopback address than 127.0.0.1 is not shared: the IP is banned.
        b.ban(BanKey::new(a(5, 0).ip(), Some(6881)));
        assert!(b.is_banned(a(5, 7000)));
        // Inbound with no listen port: its ephemeral port means nothing, the IP goes.
        b.ban(BanKey::new(a(1, 0).ip(), None));
        assert!(b.is_banned(a(1, 6882)));
        assert!(b.is_banned_peer(a(1, 0).ip(), None));
    }
}

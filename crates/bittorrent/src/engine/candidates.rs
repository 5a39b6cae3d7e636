//! The peer book of one torrent: every address the engine may dial (from trackers, the
//! DHT, peer exchange, magnet links, the command line), its dial state and back-off, the
//! banned addresses, connection attempts per IP and the peer-exchange rate limit per
//! source IP.
//!
//! Policy: the book stays bounded whatever peers send.
//! - At most [`MAX_CANDIDATES`] addresses, de-duplicated. When full, a new address takes
//!   the place of a waiting one that already failed (the most backed-off first) or, for
//!   an address not learnt by peer exchange, of an untried PEX one; otherwise it is
//!   dropped. Addresses being dialled or connected are never dropped.
//! - An address that fails [`MAX_FAILURES`] times in a row is forgotten (those given
//!   on the command line are kept): a source can offer it again later.
//! - At most [`MAX_BANNED`] bans, the oldest forgotten first.
//! - Peer exchange: one message per source IP per [`PEX_INTERVAL`] (reconnecting does
//!   not reset it), at most [`MAX_PEX_ADDED`] addresses taken from it, and at most
//!   [`MAX_PEX_SOURCES`] source IPs remembered (expired ones are pruned first; when
//!   still full, the message is ignored).
//!
//! No clock and no I/O: callers pass `now`, so the book is tested in virtual time. It is
//! owned by the torrent loop alone (no lock).

use crate::peers::PeerSource;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most addresses known at once.
pub const MAX_CANDIDATES: usize = 4096;
/// Failures in a row after which an address is forgotten.
pub const MAX_FAILURES: u32 = 10;
/// Most banned addresses remembered.
pub const MAX_BANNED: usize = 4096;
/// Most source IPs whose last peer-exchange message is remembered.
pub const MAX_PEX_SOURCES: usize = 4096;
/// Most addresses taken from one peer-exchange message (BEP 11 caps `added` at 50).
pub const MAX_PEX_ADDED: usize = 50;
/// Shortest time between two peer-exchange messages accepted from one IP.
pub const PEX_INTERVAL: Duration = crate::pex::MIN_INTERVAL;
/// A connection that lasted this long counts as a success: its failures are forgotten.
const GOOD_CONNECTION: Duration = Duration::from_secs(60);
/// Waiting entries looked at from the back when one must make room.
const EVICT_SCAN: usize = 64;
/// Due entries looked at for one whose IP has room for another connection.
const DIAL_SCAN: usize = 64;

/// What a ban applies to: the IP, or on loopback (where every local peer shares one
/// address) the IP and port.
pub type BanKey = (IpAddr, u16);

pub fn ban_key(addr: SocketAddr) -> BanKey {
    if addr.ip().is_loopback() {
        (addr.ip(), addr.port())
    } else {
        (addr.ip(), 0)
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
    banned: HashSet<BanKey>,
    ban_order: VecDeque<BanKey>,
    pex_seen: HashMap<IpAddr, Instant>,
    /// Connection attempts (dials and inbound handshakes) in flight, per IP.
    attempts: HashMap<IpAddr, usize>,
    next_seq: u64,
}

impl PeerBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an address to dial. Returns whether it was taken (not known, not banned,
    /// dialable, and room made for it).
    pub fn offer(&mut self, addr: SocketAddr, source: &PeerSource, now: Instant) -> bool {
        if self.entries.contains_key(&addr)
            || self.is_banned(addr)
            || !crate::peers::is_dialable(&addr)
        {
            return false;
        }
        let from_pex = *source == PeerSource::Pex;
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
        self.waiting.insert((now, seq, addr));
        true
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
            Some(k) => {
                self.waiting.remove(&k);
                self.entries.remove(&k.2);
                true
            }
            None => false,
        }
    }

    /// The next address due for a dial whose IP has fewer than `per_ip` connections
    /// (`established(ip)` plus attempts in flight). It is marked as being dialled and
    /// its attempt as started: report the outcome with [`PeerBook::connected`] or
    /// [`PeerBook::dial_failed`], and [`PeerBook::attempt_ended`].
    pub fn next_to_dial(
        &mut self,
        now: Instant,
        per_ip: usize,
        established: impl Fn(IpAddr) -> usize,
    ) -> Option<SocketAddr> {
        let attempts = &self.attempts;
        let key = self
            .waiting
            .iter()
            .take(DIAL_SCAN)
            .take_while(|(due, _, _)| *due <= now)
            .find(|(_, _, a)| {
                established(a.ip()) + attempts.get(&a.ip()).copied().unwrap_or(0) < per_ip
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
            self.entries.remove(&addr);
            return;
        }
        e.state = DialState::Waiting;
        e.due = now + retry_delay(e.failures);
        self.waiting.insert((e.due, e.seq, addr));
    }

    /// Bans `addr` (see [`ban_key`]) and forgets the addresses it covers.
    pub fn ban(&mut self, addr: SocketAddr) {
        let key = ban_key(addr);
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
            .filter(|a| ban_key(**a) == key)
            .copied()
            .collect();
        for a in gone {
            if let Some(e) = self.entries.remove(&a) {
                self.waiting.remove(&(e.due, e.seq, a));
            }
        }
    }

    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned.contains(&ban_key(addr))
    }

    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// Whether a peer-exchange message from `ip` is taken now; if so, the next one from
    /// that IP is taken only after [`PEX_INTERVAL`].
    pub fn pex_allowed(&mut self, ip: IpAddr, now: Instant) -> bool {
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
        *self.attempts.entry(ip).or_default() += 1;
    }

    /// A connection attempt ended (connected or failed).
    pub fn attempt_ended(&mut self, ip: IpAddr) {
        if let Some(n) = self.attempts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.attempts.remove(&ip);
            }
        }
    }

    /// Connection attempts in flight with `ip`.
    pub fn attempts(&self, ip: IpAddr) -> usize {
        self.attempts.get(&ip).copied().unwrap_or(0)
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
        let established = |ip: IpAddr| usize::from(ip == busy);
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
        b.ban(remote(1));
        b.ban(a(1, 1));
        assert!(b.is_banned(remote(3)));
        assert!(b.is_banned(a(1, 1)) && !b.is_banned(a(1, 2)));
        assert_eq!(b.len(), 1);
        assert!(!b.offer(remote(4), &PeerSource::Dht, t));
        for i in 0..MAX_BANNED as u32 + 10 {
            b.ban(a(i + 5, 1));
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
}

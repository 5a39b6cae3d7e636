//! UDP tracker replies (BEP 15) that passed the action and transaction checks: announce
//! (IPv4 and IPv6 peers) and scrape. Never panics; an announce's interval is within
//! 1 s..=7 days, its peers are whole compact entries without port 0; a scrape has
//! exactly one entry per hash asked.
//!
//! Input: one byte (bit 0: scrape; else bit 1: IPv6 announce; a scrape asks for
//! `byte >> 1` hashes, at most 74 as BEP 15 allows), then the datagram.

#![no_main]

use bittorrent::tracker::udp::{parse_announce, parse_scrape, MAX_SCRAPE_HASHES};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, reply)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let n = usize::from(mode >> 1).min(MAX_SCRAPE_HASHES);
        if let Some(s) = parse_scrape(reply, n) {
            assert_eq!(s.len(), n);
        }
        return;
    }
    let v6 = mode & 2 != 0;
    let Some(r) = parse_announce(reply, v6) else {
        return;
    };
    assert!(r.interval >= Duration::from_secs(1));
    assert!(r.interval <= Duration::from_secs(7 * 24 * 3600));
    let width = if v6 { 18 } else { 6 };
    assert!(r.peers.len() <= (reply.len() - 20) / width);
    assert!(r.peers.iter().all(|p| p.port() != 0 && p.is_ipv6() == v6));
});

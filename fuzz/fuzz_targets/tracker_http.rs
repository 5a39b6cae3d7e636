//! HTTP tracker reply bodies: announce (BEP 3, 7, 23) and scrape (BEP 48). Never
//! panics; an announce keeps intervals within the honoured bounds and no peer with port
//! 0; a scrape has one entry per hash asked.
//!
//! Input: one byte (bit 0: scrape; bits 1-2: how many hashes a scrape asks for, each
//! taken as the next 20 bytes), then the body.

#![no_main]

use bittorrent::tracker::http::{parse_announce, parse_scrape};
use bittorrent::InfoHash;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut body)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(r) = parse_announce("http://127.0.0.1/announce", body) else {
            return;
        };
        assert!(r.interval > Duration::ZERO && r.interval <= WEEK);
        assert!(r
            .min_interval
            .is_none_or(|d| d > Duration::ZERO && d <= WEEK));
        assert!(r.peers.iter().all(|p| p.port() != 0));
        return;
    }
    let mut hashes = Vec::new();
    for _ in 0..(mode >> 1) & 3 {
        let Some((h, rest)) = body.split_first_chunk::<20>() else {
            return;
        };
        hashes.push(InfoHash(*h));
        body = rest;
    }
    if let Ok(s) = parse_scrape("http://127.0.0.1/scrape", body, &hashes) {
        assert_eq!(s.len(), hashes.len());
    }
});

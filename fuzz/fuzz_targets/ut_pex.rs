//! `ut_pex` payloads (BEP 11) as a peer sends them: never panics, keeps at most
//! `MAX_PEERS` addresses of each family and none with port 0, and a parsed message
//! encodes to a payload that parses back to the same message.

#![no_main]

use bittorrent::pex::{PexMessage, MAX_PEERS};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fn check(list: &[SocketAddr]) {
    assert!(list.iter().filter(|a| a.is_ipv4()).count() <= MAX_PEERS);
    assert!(list.iter().filter(|a| a.is_ipv6()).count() <= MAX_PEERS);
    assert!(list.iter().all(|a| a.port() != 0));
}

fuzz_target!(|data: &[u8]| {
    let Some(m) = PexMessage::parse(data) else {
        return;
    };
    check(&m.added);
    check(&m.dropped);
    assert_eq!(PexMessage::parse(&m.encode()), Some(m));
});

//! IP block lists (P2P text, eMule .dat, detected): never panics; in a list that
//! parses, both ends of every range line are blocked, and an IPv4 address just past a
//! range is blocked exactly when a range holds it (an IPv4 range, or the mapped part
//! of an IPv6 one).

#![no_main]

use bittorrent::ipfilter::{parse_dat, parse_p2p, Format, IpFilter, Range};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `::ffff:0:0/96`, the IPv4-mapped IPv6 addresses.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

fn ends(r: Range) -> [IpAddr; 2] {
    match r {
        Range::V4(a, b) => [Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()],
        Range::V6(a, b) => [Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into()],
    }
}

fuzz_target!(|data: &[u8]| {
    for format in [Format::P2p, Format::Dat] {
        let Ok(filter) = IpFilter::parse("fuzz", Some(format), data) else {
            continue;
        };
        let mut v4 = Vec::new();
        for (i, line) in data.split(|&c| c == b'\n').enumerate() {
            let line = match i {
                0 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line),
                _ => line,
            };
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") || line.starts_with(b"//") {
                continue;
            }
            let parsed = match format {
                Format::P2p => parse_p2p(line),
                Format::Dat => parse_dat(line),
            };
            if let Ok(Some(r)) = parsed {
                for ip in ends(r) {
                    assert!(filter.is_blocked(ip), "{ip} of {line:?} not blocked");
                }
                match r {
                    Range::V4(a, b) => v4.push((a, b)),
                    // The part inside ::ffff:0:0/96 blocks IPv4 addresses.
                    Range::V6(a, b) if b >= MAPPED_FIRST && a <= MAPPED_LAST => {
                        let (lo, hi) = (a.max(MAPPED_FIRST), b.min(MAPPED_LAST));
                        v4.push(((lo - MAPPED_FIRST) as u32, (hi - MAPPED_FIRST) as u32));
                    }
                    Range::V6(..) => {}
                }
            }
        }
        // Just past each IPv4 range: blocked only when another range holds it.
        for &(_, b) in &v4 {
            let Some(x) = b.checked_add(1) else { continue };
            let want = v4.iter().any(|&(s, e)| s <= x && x <= e);
            assert_eq!(filter.is_blocked(Ipv4Addr::from(x).into()), want);
        }
    }
    let _ = IpFilter::parse("fuzz", None, data);
});

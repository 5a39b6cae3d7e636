use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn p2p(text: &str) -> IpFilter {
    IpFilter::parse("t.p2p", Some(Format::P2p), text.as_bytes()).unwrap()
}

fn line_error(format: Option<Format>, text: &str) -> (usize, String, LineError) {
    match IpFilter::parse("list.txt", format, text.as_bytes()) {
        Err(IpFilterError::Line {
            line, text, reason, ..
        }) => (line, text, reason),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn p2p_lines_with_colons_and_dashes_in_the_description() {
    let f = p2p("# a comment\n\
         // another\n\
         \n\
         Some Org: Inc - Label:1.2.3.0-1.2.3.255\r\n\
         My:Company:Label:2001:db8::1-2001:db8::ff\n\
         :010.000.000.001 - 010.000.000.009\n\
         9.9.9.9-9.9.9.9\n");
    for yes in [
        "1.2.3.0",
        "1.2.3.77",
        "1.2.3.255",
        "2001:db8::1",
        "2001:db8::80",
        "10.0.0.1",
        "10.0.0.9",
        "9.9.9.9",
    ] {
        assert!(f.is_blocked(ip(yes)), "{yes}");
    }
    for no in [
        "1.2.2.255",
        "1.2.4.0",
        "2001:db8::100",
        "2001:db8::",
        "10.0.0.10",
        "9.9.9.8",
    ] {
        assert!(!f.is_blocked(ip(no)), "{no}");
    }
    assert_eq!(f.len(), (3, 1));
}

#[test]
fn emule_dat_access_levels() {
    let text = "001.002.003.000 - 001.002.003.255 , 000 , blocked org\n\
                 005.000.000.000 - 005.000.000.255 , 127 , still blocked\n\
                 006.000.000.000 - 006.000.000.255 , 128 , allowed\n\
                 007.000.000.000 - 007.000.000.010\n\
                 2001:0db8:0000:0000:0000:0000:0000:0000 - 2001:0db8:0000:0000:ffff:ffff:ffff:ffff , 100 , v6\n";
    let f = IpFilter::parse("x.dat", Some(Format::Dat), text.as_bytes()).unwrap();
    assert!(f.is_blocked(ip("1.2.3.4")));
    assert!(f.is_blocked(ip("5.0.0.255")));
    assert!(!f.is_blocked(ip("6.0.0.1")));
    assert!(f.is_blocked(ip("7.0.0.10")));
    assert!(f.is_blocked(ip("2001:db8::ffff:1")));
    assert!(!f.is_blocked(ip("2001:db8:0:1::")));
    // Detected without the extension too.
    let g = IpFilter::parse("list", None, text.as_bytes()).unwrap();
    assert_eq!(g.len(), f.len());
}

#[test]
fn format_detected_from_the_first_range_line() {
    assert_eq!(detect(b"1.2.3.4 - 1.2.3.5 , 0 , x"), Format::Dat);
    assert_eq!(detect(b"1.2.3.4-1.2.3.5"), Format::Dat);
    assert_eq!(detect(b"a,b:1.2.3.4-1.2.3.5"), Format::P2p);
    assert_eq!(detect(b"name-x:1.2.3.4-1.2.3.5"), Format::P2p);
    assert_eq!(
        Format::from_path(Path::new("/a/level1.P2P")),
        Some(Format::P2p)
    );
    assert_eq!(
        Format::from_path(Path::new("ipfilter.dat")),
        Some(Format::Dat)
    );
    assert_eq!(Format::from_path(Path::new("list.txt")), None);
}

#[test]
fn ipv4_mapped_addresses_count_as_ipv4() {
    let f = p2p("x:127.0.0.1-127.0.0.1\ny:::ffff:10.0.0.0-::ffff:10.0.0.255\n");
    assert!(f.is_blocked(ip("::ffff:127.0.0.1")));
    assert!(f.is_blocked(ip("10.0.0.7")));
    assert!(!f.is_blocked(ip("127.0.0.2")));
    assert_eq!(f.len(), (2, 0));
}

#[test]
fn bad_lines_name_their_number_and_text() {
    let (line, text, reason) = line_error(None, "a:1.2.3.4-1.2.3.5\n\nb:1.2.3.4\n");
    assert_eq!(
        (line, text.as_str(), reason),
        (3, "b:1.2.3.4", LineError::NotARange)
    );
    let (_, _, reason) = line_error(None, "a:1.2.3.9-1.2.3.5\n");
    assert_eq!(reason, LineError::Reversed);
    let (_, _, reason) = line_error(None, "a:1.2.3.9-::1\n");
    assert_eq!(reason, LineError::MixedFamilies);
    let (_, _, reason) = line_error(None, "a:1.2.3.256-1.2.3.9\n");
    assert_eq!(reason, LineError::BadFirst);
    let (_, _, reason) = line_error(None, "a:1.2.3.2-1.2.3\n");
    assert_eq!(reason, LineError::BadLast);
    let (_, _, reason) = line_error(Some(Format::Dat), "1.2.3.4 - 1.2.3.5 , x , y\n");
    assert_eq!(reason, LineError::BadAccess);
    let long = format!("{}:1.2.3.4-1.2.3.x\n", "n".repeat(100));
    let (_, text, _) = line_error(None, &long);
    assert_eq!(text.chars().count(), SHOWN_CHARS + 1);
    assert!(text.ends_with('…'));
    let e = IpFilter::parse(
        "blocklist.p2p",
        None,
        "ok:1.1.1.1-1.1.1.2\nbad line\n".as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "blocklist.p2p:2: \"bad line\": not an address range"
    );
    let huge = format!("{}\n", "x".repeat(MAX_LINE_LEN + 10));
    assert_eq!(line_error(None, &huge).2, LineError::TooLong);
    let binary = IpFilter::parse("a.p2b", None, &b"\xFF\xFF\xFF\xFFP2B\x03"[..]);
    assert!(matches!(binary, Err(IpFilterError::Binary { .. })));
}

#[test]
fn not_utf8_descriptions_are_fine() {
    let f = IpFilter::parse("l", None, &b"Caf\xe9 \xff:1.0.0.0-1.0.0.3\n"[..]).unwrap();
    assert!(f.is_blocked(ip("1.0.0.2")));
}

#[test]
fn ranges_merge() {
    let f = IpFilter::from_ranges(
        vec![
            (10, 20),
            (21, 30),
            (5, 12),
            (40, 50),
            (0, 0),
            (u32::MAX, u32::MAX),
        ],
        vec![(u128::MAX - 1, u128::MAX), (7, 9), (3, 8)],
    );
    assert_eq!(f.v4, vec![(0, 0), (5, 30), (40, 50), (u32::MAX, u32::MAX)]);
    assert_eq!(f.v6, vec![(3, 9), (u128::MAX - 1, u128::MAX)]);
}

/// An IPv6 range over `::ffff:0:0/96` keeps its IPv6 parts and gives the mapped part
/// to the IPv4 table, where lookups of mapped addresses go.
#[test]
fn ipv6_ranges_over_the_mapped_block_are_split() {
    let f = IpFilter::from_ranges(vec![(10, 20)], vec![(0, u128::MAX - 5)]);
    assert_eq!(f.v4, vec![(0, u32::MAX)]);
    assert_eq!(
        f.v6,
        vec![(0, MAPPED_FIRST - 1), (MAPPED_LAST + 1, u128::MAX - 5)]
    );
    // Part of the block, from below and from above.
    let g = IpFilter::from_ranges(
        Vec::new(),
        vec![
            (MAPPED_FIRST - 3, MAPPED_FIRST + 9),
            (MAPPED_LAST - 2, MAPPED_LAST + 2),
        ],
    );
    assert_eq!(g.v4, vec![(0, 9), (u32::MAX - 2, u32::MAX)]);
    assert_eq!(
        g.v6,
        vec![
            (MAPPED_FIRST - 3, MAPPED_FIRST - 1),
            (MAPPED_LAST + 1, MAPPED_LAST + 2)
        ]
    );
    // Written in a list: a plain IPv6 start and a mapped end are one IPv6 range.
    let h = p2p("all v4 and below:::0-::ffff:255.255.255.255
");
    assert!(h.is_blocked(ip("1.2.3.4")));
    assert!(h.is_blocked(ip("::ffff:255.255.255.255")));
    assert!(h.is_blocked(ip("::1")));
    assert!(h.is_blocked(ip("::fffe:ffff:ffff")));
    assert!(!h.is_blocked(ip("::1:0:0:0")));
    assert!(!h.is_blocked(ip("2001:db8::1")));
    assert_eq!(h.len(), (1, 1));
    let d = IpFilter::parse(
        "x.dat",
        None,
        "0000:0000:0000:0000:0000:0000:0000:0000 - ::ffff:10.0.0.255 , 000 , x
"
        .as_bytes(),
    )
    .unwrap();
    assert!(d.is_blocked(ip("10.0.0.3")));
    assert!(!d.is_blocked(ip("10.0.1.0")));
}

/// A description of thousands of colons (each followed by blanks) is read in one pass
/// and the range after it found.
#[test]
fn long_descriptions_of_colons_parse() {
    let desc = ": ".repeat(2000);
    let f = p2p(&format!(
        "{desc}:1.2.3.4-1.2.3.5
{desc}::1-::2
"
    ));
    assert!(f.is_blocked(ip("1.2.3.5")));
    assert!(f.is_blocked(ip("::2")));
    let spaced = format!(
        "x:{}1.2.3.4 - 1.2.3.5
",
        " ".repeat(200)
    );
    assert!(p2p(&spaced).is_blocked(ip("1.2.3.4")));
    let (_, _, reason) = line_error(
        Some(Format::P2p),
        &format!(
            "{desc}-1.2.3.5
"
        ),
    );
    assert_eq!(reason, LineError::BadFirst);
}

#[test]
fn blocked_counts_distinct_addresses() {
    let f = Arc::new(p2p("x:1.1.1.0-1.1.1.1\n"));
    assert!(f.check(ip("1.1.1.1")));
    assert!(!f.check(ip("1.1.1.2")));
    assert!(f.is_blocked(ip("1.1.1.0")));
    assert_eq!(f.blocked(), 1);
    // Again, and as an IPv4-mapped address: the same address.
    assert!(f.check(ip("1.1.1.1")));
    assert!(f.check(ip("::ffff:1.1.1.1")));
    assert_eq!(f.blocked(), 1);
    // Each scope counts its own; the filter counts them all.
    let (a, b) = (FilterScope::new(f.clone()), FilterScope::new(f.clone()));
    assert!(a.check(ip("1.1.1.0")));
    assert!(a.check(ip("1.1.1.0")));
    assert!(!a.check(ip("1.1.1.9")));
    assert!(b.check(ip("1.1.1.1")));
    assert_eq!((a.blocked(), b.blocked(), f.blocked()), (1, 1, 2));
}

#[test]
fn the_blocked_set_is_bounded() {
    let set = BlockedSet::default();
    for i in 0..MAX_BLOCKED_TRACKED as u32 + 100 {
        set.record(IpAddr::V4(Ipv4Addr::from(i)));
    }
    set.record(ip("::1"));
    assert_eq!(set.count(), MAX_BLOCKED_TRACKED as u64);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ipfilter.dat");
    std::fs::write(&good, "127.000.000.001 - 127.000.000.001 , 000 , me\n").unwrap();
    assert!(IpFilter::load(&good).unwrap().is_blocked(ip("127.0.0.1")));
    let bad = dir.path().join("blocklist.p2p");
    std::fs::write(&bad, "x:1.1.1.1-1.1.1.1\n# c\nnope\n").unwrap();
    let e = IpFilter::load(&bad).unwrap_err().to_string();
    assert_eq!(e, "blocklist.p2p:3: \"nope\": not an address range");
    let missing = IpFilter::load(&dir.path().join("none.p2p")).unwrap_err();
    assert!(missing.to_string().contains("none.p2p"), "{missing}");
}

fn naive(ranges: &[(u32, u32)], x: u32) -> bool {
    ranges.iter().any(|&(a, b)| a <= x && x <= b)
}

proptest! {
    #[test]
    fn lookup_equals_a_naive_scan(
        raw in proptest::collection::vec((0u32..2000, 0u32..50), 0..40),
        probes in proptest::collection::vec(0u32..2100, 1..60),
    ) {
        let ranges: Vec<(u32, u32)> = raw.iter().map(|&(a, l)| (a, a + l)).collect();
        let f = IpFilter::from_ranges(ranges.clone(), Vec::new());
        // Merged ranges are sorted, disjoint and do not touch.
        for w in f.v4.windows(2) {
            prop_assert!(w[0].1.saturating_add(1) < w[1].0);
        }
        for x in probes {
            prop_assert_eq!(f.is_blocked(IpAddr::V4(Ipv4Addr::from(x))), naive(&ranges, x));
        }
    }

    #[test]
    fn text_round_trips_through_both_formats(
        raw in proptest::collection::vec((any::<u32>(), 0u32..100_000), 1..20),
        probes in proptest::collection::vec(any::<u32>(), 1..20),
    ) {
        let ranges: Vec<(u32, u32)> = raw.iter().map(|&(a, l)| (a, a.saturating_add(l))).collect();
        let mut dat = String::new();
        let mut p2p = String::new();
        for (i, (a, b)) in ranges.iter().enumerate() {
            let (a, b) = (Ipv4Addr::from(*a).octets(), Ipv4Addr::from(*b).octets());
            dat.push_str(&format!(
                "{:03}.{:03}.{:03}.{:03} - {:03}.{:03}.{:03}.{:03} , 000 , org {i}\n",
                a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]
            ));
            p2p.push_str(&format!(
                "Org:{i}-x:{}-{}\n",
                Ipv4Addr::from(a),
                Ipv4Addr::from(b)
            ));
        }
        let fd = IpFilter::parse("d", None, dat.as_bytes()).unwrap();
        let fp = IpFilter::parse("p", None, p2p.as_bytes()).unwrap();
        for x in probes.into_iter().chain(ranges.iter().flat_map(|r| [r.0, r.1])) {
            let want = naive(&ranges, x);
            prop_assert_eq!(fd.is_blocked(IpAddr::V4(Ipv4Addr::from(x))), want);
            prop_assert_eq!(fp.is_blocked(IpAddr::V4(Ipv4Addr::from(x))), want);
        }
    }

    /// With IPv6 ranges around and over the mapped block: an IPv4 address is blocked
    /// when an IPv4 range holds it or an IPv6 range holds its mapped form.
    #[test]
    fn mapped_lookups_equal_a_naive_scan(
        raw4 in proptest::collection::vec((0u32..300, 0u32..50), 0..10),
        raw6 in proptest::collection::vec((0u128..400, 0u128..200), 0..10),
        probes in proptest::collection::vec(0u128..700, 1..60),
    ) {
        // IPv6 ranges near the block's start, or its end.
        let base = |i: usize| if i.is_multiple_of(2) { MAPPED_FIRST - 200 } else { MAPPED_LAST - 200 };
        let v4: Vec<(u32, u32)> = raw4.iter().map(|&(a, l)| (a, a + l)).collect();
        let v6: Vec<(u128, u128)> = raw6
            .iter()
            .enumerate()
            .map(|(i, &(a, l))| (base(i) + a, base(i) + a + l))
            .collect();
        let f = IpFilter::from_ranges(v4.clone(), v6.clone());
        for w in f.v6.windows(2) {
            prop_assert!(w[0].1 + 1 < w[1].0);
        }
        prop_assert!(f.v6.iter().all(|&(a, b)| b < MAPPED_FIRST || a > MAPPED_LAST));
        for (i, p) in probes.iter().enumerate() {
            let x = base(i) + p;
            let in6 = v6.iter().any(|&(a, b)| a <= x && x <= b);
            let mapped = (MAPPED_FIRST..=MAPPED_LAST).contains(&x);
            let want = in6 || (mapped && naive(&v4, (x - MAPPED_FIRST) as u32));
            prop_assert_eq!(f.is_blocked(IpAddr::V6(Ipv6Addr::from(x))), want);
            if mapped {
                let y = IpAddr::V4(Ipv4Addr::from((x - MAPPED_FIRST) as u32));
                prop_assert_eq!(f.is_blocked(y), want);
            }
        }
    }

    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = IpFilter::parse("x", None, &data[..]);
        let _ = IpFilter::parse("x", Some(Format::Dat), &data[..]);
    }
}

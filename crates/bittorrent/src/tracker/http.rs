//! HTTP(S) trackers: announce (BEP 3 with compact peers, BEP 23, and IPv6 peers, BEP 7)
//! and scrape (BEP 48). TLS is rustls with the ring provider.

use super::{
    parse_compact_v4, parse_compact_v6, AnnounceRequest, AnnounceResponse, ScrapeStats,
    TrackerConfig, TrackerError, DEFAULT_INTERVAL, MAX_HTTP_BODY,
};
use crate::bencode::{self, Kind, Limits, Value};
use crate::infohash::InfoHash;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Bytes left as they are in query values: RFC 3986 unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const REPLY_LIMITS: Limits = Limits {
    max_depth: 16,
    max_size: MAX_HTTP_BODY,
};

pub(super) struct HttpTracker {
    client: reqwest::Client,
}

fn protocol(url: &str, reason: impl Into<String>) -> TrackerError {
    TrackerError::Protocol {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

impl HttpTracker {
    pub(super) fn new(config: &TrackerConfig) -> Result<Self, TrackerError> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            // Announces are minutes apart and trackers close idle connections: a kept
            // connection is mostly a stale one (a reset on the next request).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| TrackerError::Network {
                url: String::new(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(HttpTracker { client })
    }

    pub(super) async fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
        tracker_id: Option<&[u8]>,
    ) -> Result<AnnounceResponse, TrackerError> {
        let full = announce_url(url, req, tracker_id);
        let body = self.get(url, &full).await?;
        parse_announce(url, &body)
    }

    pub(super) async fn scrape(
        &self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<ScrapeStats>, TrackerError> {
        let mut full = scrape_url(url)?;
        for (i, h) in hashes.iter().enumerate() {
            let sep = if i == 0 && !full.contains('?') {
                '?'
            } else {
                '&'
            };
            let _ = write!(full, "{sep}info_hash={}", percent_encode(&h.0, QUERY));
        }
        let body = self.get(url, &full).await?;
        parse_scrape(url, &body, hashes)
    }

    /// GETs `full` and returns the body, refusing bodies over [`MAX_HTTP_BODY`].
    async fn get(&self, url: &str, full: &str) -> Result<Vec<u8>, TrackerError> {
        let net = |e: reqwest::Error| TrackerError::Network {
            url: url.to_owned(),
            reason: describe(&e),
        };
        let mut resp = self.client.get(full).send().await.map_err(net)?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_HTTP_BODY as u64)
        {
            return Err(protocol(
                url,
                format!("reply larger than {} MiB", MAX_HTTP_BODY >> 20),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            if body.len() + chunk.len() > MAX_HTTP_BODY {
                return Err(protocol(
                    url,
                    format!("reply larger than {} MiB", MAX_HTTP_BODY >> 20),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // Some trackers explain a refusal in a bencoded body with an error status.
            if let Ok(v) = bencode::decode_with(&body, REPLY_LIMITS) {
                if let Some(reason) = v.get(b"failure reason").and_then(Value::as_bytes) {
                    return Err(TrackerError::Failure {
                        url: url.to_owned(),
                        reason: String::from_utf8_lossy(reason).into_owned(),
                    });
                }
            }
            return Err(TrackerError::HttpStatus {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        Ok(body)
    }
}

/// The innermost cause of a reqwest error, which is the one a user can act on.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("timed out ({msg})")
    } else if e.is_connect() {
        format!("cannot connect: {msg}")
    } else {
        msg
    }
}

/// The announce URL with every BEP 3 parameter; binary values are percent-encoded
/// byte by byte.
pub fn announce_url(base: &str, req: &AnnounceRequest, tracker_id: Option<&[u8]>) -> String {
    let mut u = base.to_owned();
    u.push(if base.contains('?') { '&' } else { '?' });
    let _ = write!(
        u,
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&key={:08x}",
        percent_encode(&req.info_hash.0, QUERY),
        percent_encode(&req.peer_id, QUERY),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        req.key
    );
    if let Some(n) = req.numwant {
        let _ = write!(u, "&numwant={n}");
    }
    if let Some(e) = req.event.http_name() {
        let _ = write!(u, "&event={e}");
    }
    if let Some(id) = tracker_id {
        let _ = write!(u, "&trackerid={}", percent_encode(id, QUERY));
    }
    // BEP 7. A tracker reached at an IPv4 literal sees our IPv4 address; with a host
    // name the connection may go over IPv6, so `ipv4=` goes along (it is the address
    // the tracker would see over IPv4 anyway: only global addresses are given here).
    if let Some(a) = req.ipv6 {
        let _ = write!(
            u,
            "&ipv6={}",
            percent_encode(a.to_string().as_bytes(), QUERY)
        );
    }
    if let Some(a) = req.ipv4 {
        let over_v4 = reqwest::Url::parse(base)
            .ok()
            .and_then(|b| {
                b.host_str()
                    .map(|h| h.parse::<std::net::Ipv4Addr>().is_ok())
            })
            .unwrap_or(false);
        if !over_v4 {
            let _ = write!(u, "&ipv4={a}");
        }
    }
    u
}

/// BEP 48: the scrape URL replaces the `announce` that starts the last path component.
pub fn scrape_url(announce: &str) -> Result<String, TrackerError> {
    let (base, query) = match announce.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (announce, None),
    };
    let path_start = base.find("://").map_or(0, |i| i + 3);
    let slash = base[path_start..]
        .rfind('/')
        .map(|i| i + path_start)
        .ok_or_else(|| TrackerError::NoScrapeUrl {
            url: announce.to_owned(),
        })?;
    let last = &base[slash + 1..];
    let Some(rest) = last.strip_prefix("announce") else {
        return Err(TrackerError::NoScrapeUrl {
            url: announce.to_owned(),
        });
    };
    let mut out = format!("{}scrape{rest}", &base[..=slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

fn failure(url: &str, v: &Value<'_>) -> Option<TrackerError> {
    v.get(b"failure reason").map(|r| TrackerError::Failure {
        url: url.to_owned(),
        reason: String::from_utf8_lossy(r.as_bytes().unwrap_or(b"(not a string)")).into_owned(),
    })
}

fn count(v: &Value<'_>, key: &[u8]) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(|n| u32::try_from(n).ok())
}

fn seconds(v: &Value<'_>, key: &[u8]) -> Option<Duration> {
    v.get(key)
        .and_then(Value::as_i64)
        .filter(|&n| n > 0)
        .map(|n| Duration::from_secs(n.min(7 * 24 * 3600) as u64))
}

pub fn parse_announce(url: &str, body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = bencode::decode_with(body, REPLY_LIMITS)
        .map_err(|e| protocol(url, format!("not bencode: {e}")))?;
    if v.as_dict().is_none() {
        return Err(protocol(
            url,
            format!("expected a dictionary, found {}", v.type_name()),
        ));
    }
    if let Some(e) = failure(url, &v) {
        return Err(e);
    }
    let mut peers = Vec::new();
    match v.get(b"peers").map(|p| &p.kind) {
        Some(Kind::Bytes(b)) => peers.extend(
            parse_compact_v4(b)
                .ok_or_else(|| protocol(url, "compact peers are not a multiple of 6 bytes"))?,
        ),
        Some(Kind::List(list)) => {
            for p in list {
                let ip = p
                    .get(b"ip")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = p
                    .get(b"port")
                    .and_then(Value::as_i64)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&n| n != 0);
                // Host names in peer lists are skipped: resolving names a tracker
                // hands out would let it point us at anything.
                if let (Some(ip), Some(port)) = (ip, port) {
                    peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        Some(_) => return Err(protocol(url, "\"peers\" is neither a string nor a list")),
        None => {}
    }
    if let Some(p6) = v.get(b"peers6") {
        let b = p6
            .as_bytes()
            .ok_or_else(|| protocol(url, "\"peers6\" is not a string"))?;
        peers.extend(
            parse_compact_v6(b).ok_or_else(|| {
                protocol(url, "compact IPv6 peers are not a multiple of 18 bytes")
            })?,
        );
    }
    Ok(AnnounceResponse {
        interval: seconds(&v, b"interval").unwrap_or(DEFAULT_INTERVAL),
        min_interval: seconds(&v, b"min interval"),
        peers,
        seeders: count(&v, b"complete"),
        leechers: count(&v, b"incomplete"),
        warning: v
            .get(b"warning message")
            .and_then(Value::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        tracker_id: v
            .get(b"tracker id")
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec),
    })
}

pub fn parse_scrape(
    url: &str,
    body: &[u8],
    hashes: &[InfoHash],
) -> Result<Vec<ScrapeStats>, TrackerError> {
    let v = bencode::decode_with(body, REPLY_LIMITS)
        .map_err(|e| protocol(url, format!("not bencode: {e}")))?;
    if let Some(e) = failure(url, &v) {
        return Err(e);
    }
    let files = v
        .get(b"files")
        .filter(|f| f.as_dict().is_some())
        .ok_or_else(|| protocol(url, "no \"files\" dictionary in the scrape reply"))?;
    // A hash the tracker does not know is absent: it has no peers.
    Ok(hashes
        .iter()
        .map(|h| {
            files
                .get(&h.0)
                .map(|f| ScrapeStats {
                    seeders: count(f, b"complete").unwrap_or(0),
                    completed: count(f, b"downloaded").unwrap_or(0),
                    leechers: count(f, b"incomplete").unwrap_or(0),
                })
                .unwrap_or_default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;

    #[test]
    fn announce_url_encodes_raw_bytes() {
        let req = AnnounceRequest {
            info_hash: InfoHash([
                0x12, 0xff, b'a', b'.', b' ', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ]),
            peer_id: *b"-FS0100-abcdefghijkl",
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: Some(50),
            key: 0xdead,
            ipv4: None,
            ipv6: None,
        };
        let u = announce_url("http://t/announce?passkey=x", &req, Some(b"id 1"));
        assert_eq!(
            u,
            "http://t/announce?passkey=x&info_hash=%12%FFa.%20%00%00%00%00%00%00%00%00%00%00%00%00%00%00%01\
             &peer_id=-FS0100-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3&compact=1\
             &key=0000dead&numwant=50&event=started&trackerid=id%201"
        );
    }

    /// BEP 7: `ipv6=` always (percent-encoded as libtorrent does), `ipv4=` unless the
    /// tracker is reached at an IPv4 address.
    #[test]
    fn announce_url_carries_bep7_addresses() {
        let req = AnnounceRequest {
            info_hash: InfoHash([1; 20]),
            peer_id: [b'p'; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::None,
            numwant: None,
            key: 1,
            ipv4: Some("203.0.113.7".parse().unwrap()),
            ipv6: Some("2a00:1450::5".parse().unwrap()),
        };
        let both = "&ipv6=2a00%3A1450%3A%3A5&ipv4=203.0.113.7";
        for base in [
            "http://t.example/announce",
            "http://[2001:db8::1]:80/announce",
        ] {
            assert!(announce_url(base, &req, None).ends_with(both), "{base}");
        }
        let v4 = announce_url("http://192.0.2.1:6969/announce", &req, None);
        assert!(
            v4.ends_with("&key=00000001&ipv6=2a00%3A1450%3A%3A5"),
            "{v4}"
        );
        let none = AnnounceRequest {
            ipv4: None,
            ipv6: None,
            ..req
        };
        let u = announce_url("http://t.example/announce", &none, None);
        assert!(!u.contains("ipv4=") && !u.contains("ipv6="), "{u}");
    }

    #[test]
    fn scrape_urls_follow_bep48() {
        let ok = |a: &str, s: &str| assert_eq!(scrape_url(a).unwrap(), s);
        ok("http://example.com/announce", "http://example.com/scrape");
        ok(
            "http://example.com/x/announce",
            "http://example.com/x/scrape",
        );
        ok(
            "http://example.com/announce.php",
            "http://example.com/scrape.php",
        );
        ok(
            "http://example.com/announce?x2%0644",
            "http://example.com/scrape?x2%0644",
        );
        for bad in [
            "http://example.com/a",
            "http://example.com/announce/x",
            "http://example.com/x%064announce",
            "http://example.com",
            "http://announce",
        ] {
            assert!(
                matches!(scrape_url(bad), Err(TrackerError::NoScrapeUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn announce_replies() {
        let r = parse_announce(
            "t",
            b"d8:completei5e10:incompletei2e8:intervali900e12:min intervali60e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe26:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x5010:tracker id2:ab15:warning message4:slowe",
        )
        .unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!(r.seeders, Some(5));
        assert_eq!(r.leechers, Some(2));
        assert_eq!(r.peers.len(), 3);
        assert_eq!(r.peers[2], "[::1]:80".parse().unwrap());
        assert_eq!(r.tracker_id.as_deref(), Some(&b"ab"[..]));
        assert_eq!(r.warning.as_deref(), Some("slow"));
        // Dictionary peers; host names and bad ports skipped.
        let r = parse_announce(
            "t",
            b"d8:intervali60e5:peersld2:ip9:127.0.0.14:porti80eed2:ip7:example4:porti80eed2:ip9:127.0.0.24:porti0eeee",
        )
        .unwrap();
        assert_eq!(r.peers, vec!["127.0.0.1:80".parse().unwrap()]);
    }

    #[test]
    fn announce_errors() {
        let e = parse_announce("t", b"d14:failure reason6:banned").unwrap_err();
        assert!(matches!(e, TrackerError::Protocol { .. }), "{e}");
        let e = parse_announce("t", b"d14:failure reason6:bannede").unwrap_err();
        assert_eq!(e.to_string(), "t: the tracker refused: banned");
        for bad in [
            &b"<html>"[..],
            b"le",
            b"d5:peers5:abcdee",
            b"d5:peersi1ee",
            b"d6:peers65:abcdee",
        ] {
            assert!(matches!(
                parse_announce("t", bad),
                Err(TrackerError::Protocol { .. })
            ));
        }
    }

    #[test]
    fn scrape_replies() {
        let h1 = InfoHash([1; 20]);
        let h2 = InfoHash([2; 20]);
        let mut body = b"d5:filesd20:".to_vec();
        body.extend([1; 20]);
        body.extend(b"d8:completei3e10:downloadedi7e10:incompletei1eeee");
        let s = parse_scrape("t", &body, &[h2, h1]).unwrap();
        assert_eq!(s[0], ScrapeStats::default());
        assert_eq!(
            s[1],
            ScrapeStats {
                seeders: 3,
                completed: 7,
                leechers: 1
            }
        );
        assert!(parse_scrape("t", b"de", &[h1]).is_err());
    }
}

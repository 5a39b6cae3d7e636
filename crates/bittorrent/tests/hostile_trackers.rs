//! Hostile trackers: small servers on 127.0.0.1 that answer garbage, too late, with the
//! wrong transaction id or size, with huge bodies, redirect loops or closed sockets.
//! Each must end in a clear error or be ignored; never a panic or a hang.

use bittorrent::tracker::{
    AnnounceRequest, Event, TrackerClient, TrackerConfig, TrackerError, MAX_HTTP_BODY,
};
use bittorrent::InfoHash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn client() -> TrackerClient {
    TrackerClient::new(TrackerConfig {
        timeout: Duration::from_secs(2),
        udp_base_timeout: Duration::from_millis(100),
        udp_max_retries: 2,
        ..TrackerConfig::default()
    })
    .unwrap()
}

fn request() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([7; 20]),
        peer_id: *b"-FS0100-testtesttest",
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event: Event::Started,
        numwant: None,
        key: 1,
        ipv4: None,
        ipv6: None,
    }
}

/// Guards against hangs: every call must finish well within this.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the tracker call hung")
}

/// An HTTP server that answers every connection with `respond`.
async fn http_server<F, Fut>(respond: F) -> String
where
    F: Fn(tokio::net::TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                respond(sock, head).await;
            });
        }
    });
    format!("http://{addr}/announce")
}

async fn reply(mut sock: tokio::net::TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
}

#[tokio::test]
async fn http_garbage_is_a_protocol_error() {
    let url = http_server(|s, _| reply(s, "200 OK", b"<html>hi</html>")).await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("not bencode"), "{e}");
}

#[tokio::test]
async fn http_failure_reason_is_shown_even_with_an_error_status() {
    let url =
        http_server(|s, _| reply(s, "400 Bad Request", b"d14:failure reason12:unregisterede"))
            .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url}: the tracker refused: unregistered")
    );
    let url = http_server(|s, _| reply(s, "503 Service Unavailable", b"")).await;
    let e = bounded(client().scrape(&url, &[InfoHash([1; 20])]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TrackerError::HttpStatus { status: 503, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn http_late_answer_times_out() {
    let url = http_server(|s, _| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        reply(s, "200 OK", b"d8:intervali60ee").await;
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TrackerError::Timeout { .. } | TrackerError::Network { .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("time"), "{e}");
}

#[tokio::test]
async fn http_huge_bodies_are_refused() {
    // Declared length over the limit.
    let url = http_server(|s, _| async move {
        reply(s, "200 OK", &vec![b'x'; 10 << 20]).await;
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    // No length: chunked, 10 MB of chunks.
    let url = http_server(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = vec![b'y'; 64 << 10];
        for _ in 0..160 {
            let head = format!("{:x}\r\n", chunk.len());
            if s.write_all(head.as_bytes()).await.is_err()
                || s.write_all(&chunk).await.is_err()
                || s.write_all(b"\r\n").await.is_err()
            {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("larger than {} MiB", MAX_HTTP_BODY >> 20)),
        "{e}"
    );
}

#[tokio::test]
async fn http_closed_socket_and_redirect_loop_are_network_errors() {
    let url = http_server(|s, _| async move { drop(s) }).await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Network { .. }), "{e}");
    let url = http_server(|s, head| async move {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut s = s;
        let msg = format!("HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\n\r\n");
        let _ = s.write_all(msg.as_bytes()).await;
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Network { .. }), "{e}");
}

/// A UDP tracker driven by `answer`, which maps each datagram to the datagrams sent back.
async fn udp_server<F>(answer: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
{
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if n >= 12 && buf[8..12] == [0, 0, 0, 0] {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            for out in answer(&buf[..n]) {
                let _ = sock.send_to(&out, from).await;
            }
        }
    });
    (format!("udp://{addr}"), connects)
}

fn txid(p: &[u8]) -> [u8; 4] {
    p[12..16].try_into().unwrap()
}

fn connect_reply(p: &[u8]) -> Vec<u8> {
    let mut r = vec![0, 0, 0, 0];
    r.extend(txid(p));
    r.extend(0x1122_3344_5566_7788u64.to_be_bytes());
    r
}

fn announce_reply(p: &[u8], peers: &[[u8; 6]]) -> Vec<u8> {
    let mut r = vec![0, 0, 0, 1];
    r.extend(txid(p));
    r.extend(60u32.to_be_bytes());
    r.extend(1u32.to_be_bytes());
    r.extend(2u32.to_be_bytes());
    for peer in peers {
        r.extend(peer);
    }
    r
}

fn action(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[8..12].try_into().unwrap())
}

#[tokio::test]
async fn udp_silence_times_out_within_the_schedule() {
    let (url, _) = udp_server(|_| vec![]).await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn udp_noise_is_ignored_and_the_real_answer_taken() {
    let (url, _) = udp_server(|p| {
        let mut wrong_tx = connect_reply(p);
        wrong_tx[4] ^= 0xff;
        let short = vec![0, 0, 0];
        let wrong_action = {
            let mut r = connect_reply(p);
            r[3] = 9;
            r
        };
        match action(p) {
            0 => vec![short, wrong_tx, wrong_action, connect_reply(p)],
            1 => {
                let mut wrong_size = announce_reply(p, &[]);
                wrong_size.push(1);
                let mut wrong_tx = announce_reply(p, &[[9, 9, 9, 9, 0, 1]]);
                wrong_tx[5] ^= 1;
                vec![
                    wrong_size,
                    wrong_tx,
                    announce_reply(p, &[[127, 0, 0, 1, 0x1a, 0xe1]]),
                ]
            }
            _ => vec![],
        }
    })
    .await;
    let r = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap();
    assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
    assert_eq!((r.seeders, r.leechers), (Some(2), Some(1)));
}

#[tokio::test]
async fn udp_only_wrong_answers_time_out() {
    let (url, _) = udp_server(|p| match action(p) {
        0 => vec![connect_reply(p)],
        // Always a byte too many.
        _ => {
            let mut r = announce_reply(p, &[]);
            r.push(0);
            vec![r]
        }
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn udp_error_action_is_reported() {
    let (url, _) = udp_server(|p| match action(p) {
        0 => vec![connect_reply(p)],
        _ => {
            let mut r = vec![0, 0, 0, 3];
            r.extend(txid(p));
            r.extend(b"torrent not registered");
            vec![r]
        }
    })
    .await;
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url}: the tracker refused: torrent not registered")
    );
}

#[tokio::test]
async fn udp_connection_id_is_reused_and_scrapes_are_split() {
    let (url, connects) = udp_server(|p| match action(p) {
        0 => vec![connect_reply(p)],
        1 => vec![announce_reply(p, &[])],
        2 => {
            let n = (p.len() - 16) / 20;
            assert!(n <= 74, "BEP 15 allows 74 hashes per scrape");
            let mut r = vec![0, 0, 0, 2];
            r.extend(txid(p));
            for h in p[16..].chunks(20) {
                // Seeders = first byte of the hash, so order can be checked.
                r.extend(u32::from(h[0]).to_be_bytes());
                r.extend(0u32.to_be_bytes());
                r.extend(0u32.to_be_bytes());
            }
            vec![r]
        }
        _ => vec![],
    })
    .await;
    let c = client();
    bounded(c.announce(&url, &request(), None)).await.unwrap();
    bounded(c.announce(&url, &request(), None)).await.unwrap();
    let hashes: Vec<InfoHash> = (0..100u8).map(|i| InfoHash([i; 20])).collect();
    let stats = bounded(c.scrape(&url, &hashes)).await.unwrap();
    assert_eq!(stats.len(), 100);
    assert!(stats.iter().enumerate().all(|(i, s)| s.seeders == i as u32));
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "one connect for all requests"
    );
}

#[tokio::test]
async fn unreachable_and_malformed_urls_fail_fast() {
    let c = client();
    // Nothing listens: the kernel refuses at once.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = bounded(c.announce(&format!("udp://127.0.0.1:{port}"), &request(), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    for bad in [
        "udp://127.0.0.1",
        "ftp://x/announce",
        "http://127.0.0.1:1/a",
    ] {
        let e = bounded(c.scrape(bad, &[InfoHash([0; 20])]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                TrackerError::BadUrl { .. }
                    | TrackerError::UnsupportedScheme { .. }
                    | TrackerError::NoScrapeUrl { .. }
            ),
            "{bad}: {e}"
        );
    }
}

#[tokio::test]
async fn udp_answers_from_another_address_are_ignored() {
    // The tracker's socket stays silent; a second socket sends well-formed replies.
    let tracker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!("udp://{}", tracker.local_addr().unwrap());
    tokio::spawn(async move {
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = tracker.recv_from(&mut buf).await {
            let _ = other.send_to(&connect_reply(&buf[..n]), from).await;
        }
    });
    let e = bounded(client().announce(&url, &request(), None))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Timeout { .. }), "{e}");
}

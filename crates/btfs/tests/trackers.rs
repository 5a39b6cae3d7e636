//! Trackers against real software: opentracker (HTTP and UDP on 127.0.0.1) with a
//! libtorrent seeder announcing the same torrent.

mod common;

use bittorrent::peers::{peer_channel, PeerSource};
use bittorrent::tracker::announcer::{Announcer, Progress};
use bittorrent::tracker::{AnnounceRequest, Event, ScrapeStats, TrackerClient, TrackerConfig};
use bittorrent::{InfoHash, Metainfo};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn client() -> TrackerClient {
    TrackerClient::new(TrackerConfig {
        timeout: Duration::from_secs(10),
        udp_base_timeout: Duration::from_millis(500),
        udp_max_retries: 3,
        ..TrackerConfig::default()
    })
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A seeded torrent: returns (tracker, seeder, info hash, seeder address, tempdir).
fn swarm() -> (Tracker, Daemon, InfoHash, SocketAddr, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("shared.bin");
    write(&file, &data(300_000, 11));
    let torrent = tmp.path().join("shared.torrent");
    // The tracker port is only known once it runs; whitelist by infohash, which does
    // not depend on the announce URL.
    let probe = tmp.path().join("probe.torrent");
    btfs(&["bittorrent", "create", s(&file), "-o", s(&probe)]).ok();
    let hash = Metainfo::from_bytes(&std::fs::read(&probe).unwrap())
        .unwrap()
        .info_hash
        .unwrap();
    let other = "ab".repeat(20);
    let tracker = Tracker::start(&[hash.to_hex(), other]);
    btfs(&[
        "bittorrent",
        "create",
        s(&file),
        "-o",
        s(&torrent),
        "--tracker",
        &tracker.http(),
        "--tracker",
        &tracker.udp(),
    ])
    .ok();
    let port = free_port();
    let seeder = lt_seed(&torrent, tmp.path(), port);
    (tracker, seeder, hash, ([127, 0, 0, 1], port).into(), tmp)
}

/// Scrapes until `want` holds for the first hash (bounded), returning the last stats.
async fn scrape_until(
    c: &TrackerClient,
    url: &str,
    hashes: &[InfoHash],
    want: impl Fn(&ScrapeStats) -> bool,
) -> Vec<ScrapeStats> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = c.scrape(url, hashes).await.unwrap();
        if want(&stats[0]) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request(hash: InfoHash, port: u16, left: u64, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: hash,
        peer_id: bittorrent::peer_id::generate(),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: Some(50),
        key: 7,
        ipv4: None,
        ipv6: None,
    }
}

#[test]
fn announce_and_scrape_over_http_and_udp_find_the_libtorrent_seeder() {
    let (tracker, _seeder, hash, seeder_addr, _tmp) = swarm();
    let other: InfoHash = "ab".repeat(20).parse().unwrap();
    runtime().block_on(async {
        let c = client();
        let stats = scrape_until(&c, &tracker.udp(), &[hash, other], |s| s.seeders == 1).await;
        assert_eq!(
            stats[0].seeders, 1,
            "the libtorrent seeder announced: {stats:?}"
        );
        assert_eq!(stats[1], ScrapeStats::default());
        for (i, url) in [tracker.http(), tracker.udp()].iter().enumerate() {
            let port = 40_000 + i as u16;
            let resp = c
                .announce(url, &request(hash, port, 1000, Event::Started), None)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(
                resp.peers.contains(&seeder_addr),
                "{url}: {:?} lacks {seeder_addr}",
                resp.peers
            );
            assert!(resp.interval >= Duration::from_secs(1));
            assert_eq!(resp.seeders, Some(1), "{url}");
        }
        // Both our leechers and the seeder show up, over both transports, for several
        // hashes at once and in the order asked.
        for url in [tracker.http(), tracker.udp()] {
            let stats = scrape_until(&c, &url, &[other, hash], |_| true).await;
            assert_eq!(stats[0], ScrapeStats::default(), "{url}");
            assert_eq!((stats[1].seeders, stats[1].leechers), (1, 2), "{url}");
        }
        // `stopped` removes a peer.
        c.announce(
            &tracker.udp(),
            &request(hash, 40_000, 1000, Event::Stopped),
            None,
        )
        .await
        .unwrap();
        c.announce(
            &tracker.http(),
            &request(hash, 40_001, 1000, Event::Stopped),
            None,
        )
        .await
        .unwrap();
        let stats = scrape_until(&c, &tracker.http(), &[hash], |s| s.leechers == 0).await;
        assert_eq!((stats[0].seeders, stats[0].leechers), (1, 0));
    });
}

#[test]
fn announcer_falls_back_across_tiers_reports_completion_and_stops() {
    let (tracker, _seeder, hash, seeder_addr, _tmp) = swarm();
    let dead = format!("udp://127.0.0.1:{}", free_port());
    runtime().block_on(async {
        let c = Arc::new(client());
        let (progress_tx, progress_rx) = watch::channel(Progress {
            uploaded: 0,
            downloaded: 0,
            left: 300_000,
        });
        let (sink, mut stream) = peer_channel(16);
        let our_port = 40_100;
        let announcer = Announcer::new(
            c.clone(),
            vec![vec![dead.clone()], vec![tracker.http()]],
            hash,
            bittorrent::peer_id::generate(),
            our_port,
            progress_rx,
            sink,
        );
        let status = announcer.status.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(announcer.run(stop_rx));

        // The tracker also lists our own address; skip it.
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let c = stream.next().await.unwrap();
                if c.addr.port() != our_port {
                    return c;
                }
            }
        })
        .await
        .expect("a peer within 30 s");
        assert_eq!(found.addr, seeder_addr);
        assert_eq!(found.source, PeerSource::Tracker(tracker.http().into()));
        {
            let board = status.lock().unwrap();
            assert!(
                board[&dead].result.is_err(),
                "the dead tier-1 tracker failed first"
            );
            assert_eq!(board[&tracker.http()].result, Ok(2), "the seeder and us");
        }
        let stats = scrape_until(&c, &tracker.udp(), &[hash], |s| s.leechers == 1).await;
        assert_eq!((stats[0].seeders, stats[0].leechers), (1, 1));

        // Finishing the download announces `completed` at once, not after the interval.
        progress_tx
            .send(Progress {
                uploaded: 0,
                downloaded: 300_000,
                left: 0,
            })
            .unwrap();
        let stats = scrape_until(&c, &tracker.udp(), &[hash], |s| s.seeders == 2).await;
        assert_eq!((stats[0].seeders, stats[0].leechers), (2, 0), "{stats:?}");
        assert!(stats[0].completed >= 1);

        // Shutdown sends `stopped`.
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the announcer stops")
            .unwrap();
        let stats = scrape_until(&c, &tracker.udp(), &[hash], |s| s.seeders == 1).await;
        assert_eq!(stats[0].seeders, 1, "{stats:?}");
    });
}

#[test]
fn scrape_command_prints_text_and_go_btfs_json() {
    let (tracker, _seeder, hash, _addr, _tmp) = swarm();
    let other = "ab".repeat(20);
    let hashes = format!("{other},{hash}");
    // Wait (bounded) until the tracker has the seeder.
    let deadline = Instant::now() + Duration::from_secs(30);
    let json = loop {
        let j = btfs(&[
            "--json",
            "bittorrent",
            "scrape",
            "-t",
            &tracker.udp(),
            "-i",
            &hashes,
        ])
        .ok()
        .json();
        if j[1]["Seeders"] == 1 || Instant::now() > deadline {
            break j;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        json,
        serde_json::json!([
            {"Seeders": 0, "Completed": 0, "Leechers": 0},
            {"Seeders": 1, "Completed": json[1]["Completed"], "Leechers": 0}
        ])
    );
    let text = btfs(&["bittorrent", "scrape", "-t", &tracker.http(), "-i", &hashes]).ok();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(&other) && lines[1].starts_with(&hash.to_hex()));
    assert!(lines[1].contains("seeders      1"), "{}", text.stdout);
    // An unreachable tracker fails within the timeout, with a clear message.
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let r = btfs(&[
        "bittorrent",
        "scrape",
        "-t",
        &dead,
        "-i",
        &other,
        "--timeout",
        "2s",
    ]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
}

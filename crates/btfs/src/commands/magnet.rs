//! Magnet links: fetching the info dictionary from the peers a magnet names (`x.pe`,
//! `--peer`) and from its trackers (`tr`), via BEP 9.

use anyhow::{bail, Context};
use bittorrent::dht::{DhtConfig, DhtNode};
use bittorrent::metadata;
use bittorrent::peers::{peer_channel, PeerSource};
use bittorrent::tracker::announcer::{Announcer, Progress};
use bittorrent::tracker::{TrackerClient, TrackerConfig};
use bittorrent::{Magnet, Metainfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The torrent a magnet names, built around the fetched info dictionary (with the
/// magnet's trackers and web seeds), its bytes, and the peers that had it.
pub struct Fetched {
    pub meta: Metainfo,
    pub torrent: Vec<u8>,
    pub peers: Vec<SocketAddr>,
}

/// Where the DHT routing table is kept between runs.
fn saved_nodes_path() -> Option<std::path::PathBuf> {
    super::btfs_path()
        .ok()
        .map(|p| p.join("bittorrent").join("dht-nodes"))
}

/// Saves the node's routing table (one `host:port` per line) for the next run.
pub async fn save_dht(node: &DhtNode) {
    let nodes = node.routing_nodes().await;
    if let (Some(path), false) = (saved_nodes_path(), nodes.is_empty()) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, nodes.join("\n") + "\n");
    }
}

/// `BTFS_DHT_INTERVAL_SECS`: for tests on loopback, search and announce more often than
/// every 5 minutes.
pub fn dht_interval_override() -> Option<std::time::Duration> {
    std::env::var("BTFS_DHT_INTERVAL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs)
}

/// A DHT node joined through `bootstrap` (none when the list is empty). The routing
/// table saved by an earlier run is added to a given bootstrap list, never used alone,
/// so no DHT traffic happens unless the user asked for it.
pub fn start_dht(
    bootstrap: &[String],
    port: u16,
    ip: std::net::IpAddr,
) -> anyhow::Result<Option<Arc<DhtNode>>> {
    if bootstrap.is_empty() {
        return Ok(None);
    }
    let mut bootstrap = bootstrap.to_vec();
    if let Some(saved) = saved_nodes_path().and_then(|p| std::fs::read_to_string(p).ok()) {
        for line in saved
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(200)
        {
            if !bootstrap.iter().any(|b| b == line) {
                bootstrap.push(line.to_owned());
            }
        }
    }
    let bind = match ip {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
    };
    let node = DhtNode::start(&DhtConfig {
        port,
        bind,
        bootstrap: bootstrap.to_vec(),
    })
    .context("starting the DHT node")?;
    Ok(Some(Arc::new(node)))
}

pub async fn fetch(
    magnet: &Magnet,
    extra_peers: &[SocketAddr],
    use_trackers: bool,
    timeout: Duration,
    dht: Option<Arc<DhtNode>>,
) -> anyhow::Result<Fetched> {
    let has_trackers = use_trackers && !magnet.trackers.is_empty();
    if magnet.peers.is_empty() && extra_peers.is_empty() && !has_trackers && dht.is_none() {
        bail!(
            "the magnet link names no peers (x.pe) and no trackers (tr), and no DHT node to \
             look the infohash up was given: add --peer IP:PORT or --dht-bootstrap HOST:PORT"
        );
    }
    let info_hash = magnet.wire_info_hash();
    let peer_id = bittorrent::peer_id::generate();
    let (sink, stream) = peer_channel(256);
    sink.offer(magnet.peers.iter().copied(), &PeerSource::Magnet)
        .await;
    sink.offer(extra_peers.iter().copied(), &PeerSource::Manual)
        .await;
    let (_progress_tx, progress_rx) = watch::channel(Progress {
        uploaded: 0,
        downloaded: 0,
        left: 1,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let announcer = if has_trackers {
        let client = Arc::new(TrackerClient::new(TrackerConfig::default())?);
        let tiers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
        let a = Announcer::new(
            client,
            tiers,
            info_hash,
            peer_id,
            6881,
            progress_rx,
            sink.clone(),
        );
        Some(tokio::spawn(a.run(stop_rx)))
    } else {
        None
    };
    let dht_task = dht.map(|d| {
        let sink = sink.clone();
        tokio::spawn(async move {
            d.search(info_hash, None, sink, Duration::from_secs(5))
                .await
        })
    });
    drop(sink);
    let result = metadata::fetch(info_hash, peer_id, 0, stream, timeout).await;
    if let Some(t) = dht_task {
        t.abort();
    }
    let _ = stop_tx.send(true);
    if let Some(a) = announcer {
        a.abort();
    }
    let (info, peers) = result?;
    let torrent = metadata::torrent_bytes(&info, &magnet.trackers, &magnet.web_seeds);
    // Parsing is CPU work proportional to the metadata (up to 8 MiB): off the async
    // threads, which keep serving peers meanwhile.
    let (meta, torrent) = tokio::task::spawn_blocking(move || {
        let meta = Metainfo::from_bytes(&torrent);
        (meta, torrent)
    })
    .await
    .context("parsing the metadata")?;
    let meta = meta.context("the metadata peers sent is not a valid torrent")?;
    Ok(Fetched {
        meta,
        torrent,
        peers,
    })
}

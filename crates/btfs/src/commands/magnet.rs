//! Magnet links: fetching the info dictionary from the peers a magnet names (`x.pe`,
//! `--peer`), its trackers (`tr`) and the DHT, via BEP 9; and the DHT node of a command:
//! joining through the bootstrap hosts (resolved here, in parallel, each within a time
//! limit), watching the join, and one message naming each host and why when it fails.

use super::settings::{DhtSettings, Settings};
use crate::output::Encoding;
use anyhow::{bail, Context};
use bittorrent::dht::{DhtConfig, DhtNode};
use bittorrent::metadata;
use bittorrent::peers::{peer_channel, PeerSource};
use bittorrent::tracker::announcer::{Announcer, Progress};
use bittorrent::tracker::{TrackerClient, TrackerConfig};
use bittorrent::{Magnet, Metainfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// Longest wait for one bootstrap host's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a bootstrap node to answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Most nodes of the saved routing table used to bootstrap.
const MAX_SAVED_NODES: usize = 200;

/// A DHT node on its way into the network: the node (none when no bootstrap address
/// could be resolved) and whether it joined.
pub struct DhtJoin {
    pub node: Option<Arc<DhtNode>>,
    outcome: tokio::task::JoinHandle<Result<(), String>>,
}

impl DhtJoin {
    /// Waits (bounded) until the node joined, or the message saying why it did not.
    pub async fn joined(self) -> Result<Arc<DhtNode>, String> {
        let r = self
            .outcome
            .await
            .unwrap_or_else(|e| Err(format!("DHT: {e}")));
        match (r, self.node) {
            (Ok(()), Some(n)) => Ok(n),
            (Err(m), _) => Err(m),
            (Ok(()), None) => Err("DHT: no node".into()),
        }
    }

    /// The node, with the failure to join reported as a warning when it comes (the
    /// command goes on with its other peer sources). Needs a runtime context.
    pub fn warn_on_failure(self, enc: Encoding) -> Option<Arc<DhtNode>> {
        let outcome = self.outcome;
        tokio::spawn(async move {
            if let Ok(Err(m)) = outcome.await {
                warn(&m, enc);
            }
        });
        self.node
    }
}

/// A warning on stderr, or a `warning` event with --enc json.
pub fn warn(message: &str, enc: Encoding) {
    match enc {
        Encoding::Text => eprintln!("warning: {message}"),
        Encoding::Json => println!(
            "{}",
            serde_json::json!({"Type": "warning", "Message": message})
        ),
    }
}

/// Resolves `host:port` to its IPv4 addresses (the DHT is IPv4 only), within
/// [`RESOLVE_TIMEOUT`]. The lookup runs on a thread of its own, left behind (not waited
/// for) when it takes too long.
async fn resolve_v4(host_port: String) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let h = host_port.clone();
    std::thread::Builder::new()
        .name("dht-resolve".into())
        .spawn(move || {
            use std::net::ToSocketAddrs;
            let _ = tx.send(h.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(|e| format!("cannot resolve: {e}"))?;
    match tokio::time::timeout(RESOLVE_TIMEOUT, rx).await {
        Err(_) => Err(format!(
            "cannot resolve: no answer within {} s",
            RESOLVE_TIMEOUT.as_secs()
        )),
        Ok(Err(_)) => Err("cannot resolve: the lookup stopped".into()),
        Ok(Ok(Err(e))) => Err(format!("cannot resolve: {e}")),
        Ok(Ok(Ok(addrs))) => {
            let v4: Vec<SocketAddr> = addrs.into_iter().filter(SocketAddr::is_ipv4).collect();
            if v4.is_empty() {
                Err("no IPv4 address (the DHT is IPv4 only)".into())
            } else {
                Ok(v4)
            }
        }
    }
}

/// The nodes saved by an earlier run (IPv4 literals only).
fn saved_nodes() -> Vec<SocketAddr> {
    saved_nodes_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse::<SocketAddr>().ok())
                .filter(SocketAddr::is_ipv4)
                .take(MAX_SAVED_NODES)
                .collect()
        })
        .unwrap_or_default()
}

/// The one message for a DHT that could not join: each host and why, and how long.
fn join_failure(tried: &[(String, String)], saved: usize, started: Instant) -> String {
    let mut parts: Vec<String> = tried
        .iter()
        .map(|(h, why)| format!("{h} ({why})"))
        .collect();
    if saved > 0 {
        parts.push(format!("{saved} nodes saved by an earlier run (no answer)"));
    }
    format!(
        "DHT: could not join through any bootstrap node after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        parts.join(", ")
    )
}

/// The DHT node that looks a magnet's peers up, joining through the run's routers (none
/// when the DHT is off or has none). When the DHT is the only source of peers
/// (`dht_only`) it is waited for, and its failure to join is the command's error;
/// otherwise the failure is a warning when it comes. `listen_port`: the peer listeners'
/// port, which the node's UDP socket takes when free (see [`start_dht`]).
pub fn magnet_dht(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    dht_only: bool,
    enc: Encoding,
    listen_port: Option<u16>,
) -> anyhow::Result<Option<Arc<DhtNode>>> {
    let Some(d) = &settings.dht else {
        return Ok(None);
    };
    let join = runtime.block_on(start_dht(d, settings.dht_bind(), listen_port))?;
    Ok(match join {
        Some(j) if dht_only => Some(runtime.block_on(j.joined()).map_err(anyhow::Error::msg)?),
        Some(j) => {
            let _guard = runtime.enter();
            j.warn_on_failure(enc)
        }
        None => None,
    })
}

/// Starts a DHT node joining through `settings.bootstrap` (none when the list is empty):
/// resolves every host at once (each within [`RESOLVE_TIMEOUT`]), adds the routing table
/// saved by an earlier run when `settings.saved_nodes` (never used alone, so an empty
/// list means no DHT traffic), and watches the join for [`JOIN_TIMEOUT`]. Its UDP port
/// is `--dht-port` when given, else `listen_port` (the peer listeners' port, as
/// libtorrent: one port mapping then serves TCP and UDP) when free, else any.
pub async fn start_dht(
    settings: &DhtSettings,
    bind: std::net::Ipv4Addr,
    listen_port: Option<u16>,
) -> anyhow::Result<Option<DhtJoin>> {
    if settings.bootstrap.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let lookups: Vec<_> = settings
        .bootstrap
        .iter()
        .map(|h| tokio::spawn(resolve_v4(h.clone())))
        .collect();
    let mut addrs = Vec::new();
    let mut tried = Vec::new();
    for (host, lookup) in settings.bootstrap.iter().zip(lookups) {
        match lookup.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(a) => {
                addrs.extend(a);
                tried.push((host.clone(), "no answer".to_string()));
            }
            Err(why) => tried.push((host.clone(), why)),
        }
    }
    // A node bound to loopback (the test profile) can reach only loopback nodes: a table
    // saved by a run with the default config is not even tried.
    let saved = if settings.saved_nodes {
        saved_nodes()
            .into_iter()
            .filter(|a| !bind.is_loopback() || a.ip().is_loopback())
            .collect()
    } else {
        Vec::new()
    };
    let saved_count = saved.len();
    for a in saved {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        let message = join_failure(&tried, 0, started);
        return Ok(Some(DhtJoin {
            node: None,
            outcome: tokio::spawn(async move { Err(message) }),
        }));
    }
    let start = |port: u16| {
        DhtNode::start(&DhtConfig {
            port,
            bind,
            bootstrap: addrs.clone(),
        })
    };
    let node = match (settings.port, listen_port) {
        (Some(port), _) => start(port),
        // The peer listeners' port when free for UDP too, else any.
        (None, Some(port)) => start(port).or_else(|_| start(0)),
        (None, None) => start(0),
    };
    let node = Arc::new(node.context("starting the DHT node")?);
    let watched = node.clone();
    let outcome = tokio::spawn(async move {
        match tokio::time::timeout(JOIN_TIMEOUT, watched.bootstrapped()).await {
            Ok(true) => Ok(()),
            _ => Err(join_failure(&tried, saved_count, started)),
        }
    });
    Ok(Some(DhtJoin {
        node: Some(node),
        outcome,
    }))
}

/// Fetches the metadata a magnet names, never dialling an address `filter` blocks.
/// `listen_port` is the port of this run's peer listeners, announced to the trackers and
/// offered in the BEP 10 handshake; without listeners (`metainfo -m`) the trackers are
/// told 6881 (they need a port) and peers none.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    magnet: &Magnet,
    extra_peers: &[SocketAddr],
    use_trackers: bool,
    timeout: Duration,
    dht: Option<Arc<DhtNode>>,
    no_dht: &str,
    filter: Option<Arc<bittorrent::ipfilter::IpFilter>>,
    listen_port: Option<u16>,
) -> anyhow::Result<Fetched> {
    let has_trackers = use_trackers && !magnet.trackers.is_empty();
    if magnet.peers.is_empty() && extra_peers.is_empty() && !has_trackers && dht.is_none() {
        bail!(
            "the magnet link names no peers (x.pe) and no trackers (tr), and {no_dht}; \
             or add --peer IP:PORT"
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
            listen_port.unwrap_or(6881),
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
    let result = metadata::fetch_filtered(
        info_hash,
        peer_id,
        listen_port.unwrap_or(0),
        stream,
        timeout,
        filter,
    )
    .await;
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

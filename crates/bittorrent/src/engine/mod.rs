//! The download engine for one torrent.
//!
//! Tasks and ownership:
//! - the **torrent loop** ([`run`]) owns the peer addresses and connection limits
//!   (`connections::Connections` with its bounded `candidates::PeerBook`), the
//!   choker, resume saving and progress; it reacts to [`Event`]s;
//! - each peer connection has a **reader** task (parses messages, updates the shared
//!   state, requests blocks), a **writer** task (the only one writing to the socket,
//!   fed by a channel) and an **uploader** task (reads requested blocks from storage on
//!   the blocking pool);
//! - **verification** of a completed piece runs on the blocking pool, at most one job
//!   per core at a time: SHA-1 of the in-memory buffer, then the write to storage; the
//!   result comes back to the torrent loop as an event. Nothing hashes or touches files
//!   on the async reactor.
//!
//! Lock order: there is one lock, [`Shared::state`]; it is never held across an
//! `.await` and never taken by blocking jobs.
//!
//! Crash safety: a piece is marked verified only after its hash matched and its bytes
//! were written; resume data is saved only after a storage sync, so a recorded piece is
//! always on disk (see [`crate::resume`]).

mod candidates;
mod connections;
mod peer;
mod pipeline;
mod webseed;

pub use candidates::{IpKey, MAX_CANDIDATES, MAX_PEX_ADDED};

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::listen::Listeners;
use crate::metainfo::Metainfo;
use crate::peers::{peer_channel, PeerSink, PeerSource, PeerStream};
use crate::picker::{PeerKey, Picker};
use crate::resume::ResumeData;
use crate::storage::{FileStorage, Storage};
use crate::tracker::announcer::{Announcer, Progress as AnnounceProgress};
use crate::tracker::{TrackerClient, TrackerConfig};
use crate::wire::{self, Message};
use crate::InfoHash;
use candidates::{BanKey, PeerBook};
use connections::Connections;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

/// Connections with one IP address unless told otherwise (as libtorrent, which allows
/// one unless asked).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1;

pub use crate::listen::DEFAULT_PORT_RANGE;

pub struct Options {
    pub save_path: PathBuf,
    /// Publish [`Stats::detail`] (peers, trackers, piece map) with each snapshot.
    pub detail: bool,
    /// Where resume data lives; none kept when `None`.
    pub resume_file: Option<PathBuf>,
    /// Addresses to listen on (IPv4 and IPv6), all with the port [`Options::port`];
    /// an address whose family the host lacks is skipped (see [`crate::listen`]).
    pub listen: Vec<IpAddr>,
    /// Port to listen on, or the next free of the [`crate::listen::MAX_PORT_FALLBACK_TRIES`]
    /// after it; 0 picks one from [`DEFAULT_PORT_RANGE`].
    pub port: u16,
    /// Listeners bound by the caller already (so that it knew the port early, for the
    /// DHT's UDP socket): used instead of binding [`Options::listen`] and
    /// [`Options::port`].
    pub listeners: Option<Listeners>,
    /// Peers to connect to besides those the trackers give.
    pub peers: Vec<SocketAddr>,
    /// Files to download (all when `None`).
    pub selected: Option<Vec<bool>>,
    pub sequential: bool,
    /// Keep seeding after the download until shut down.
    pub seed: bool,
    /// Hash every piece on disk first, ignoring resume data.
    pub recheck: bool,
    pub use_trackers: bool,
    /// Download from the torrent's web seeds (BEP 19 `url-list`).
    pub use_webseeds: bool,
    /// Web seeds: give up on a request after this long without data.
    pub webseed_timeout: Duration,
    pub tracker: TrackerConfig,
    /// Most peer connections for this torrent.
    pub max_peers: usize,
    /// Most connection attempts in flight.
    pub max_half_open: usize,
    /// Most connections (and attempts in flight) with one IP address (its /64 for
    /// IPv6), both ways. Counted per torrent: with a shared listener, each torrent
    /// served admits this many from one IP.
    pub max_connections_per_ip: usize,
    /// A DHT node to find peers with and announce to (never for private torrents).
    pub dht: Option<Arc<crate::dht::DhtNode>>,
    /// How often the DHT is searched and announced to.
    pub dht_interval: Duration,
    /// Told the index of every verified piece whose bytes are on disk: first those
    /// found at start (resume data or a check), then each piece as it passes.
    pub verified: Option<mpsc::UnboundedSender<u32>>,
    /// Where pieces are read and written; files under `save_path` when `None`.
    pub storage: Option<Arc<dyn Storage>>,
    /// Every piece is known to be there (a torrent just made from this data): no check.
    pub trust_complete: bool,
    /// Connections accepted (and handshaken) by a shared listener instead of our own.
    pub incoming: Option<Incoming>,
    /// Limits what we upload (shared with other torrents when the same limiter is given).
    pub upload_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// Limits the piece data we read from peers and web seeds (shared with other
    /// torrents when the same limiter is given).
    pub download_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// Addresses never dialled nor accepted, and left out of web seeds' resolved
    /// addresses (see [`crate::ipfilter`]).
    pub ip_filter: Option<Arc<crate::ipfilter::IpFilter>>,
}

/// Inbound connections for one torrent from a listener shared by several (see
/// [`crate::session::Router`]): their handshake is read, ours is not sent yet.
pub struct Incoming {
    /// The shared listener's port (announced to trackers and the DHT).
    pub port: u16,
    /// What it listens on (for BEP 7 announces).
    pub listening: crate::listen::Listening,
    pub connections: mpsc::Receiver<(TcpStream, SocketAddr, wire::Handshake)>,
}

impl Options {
    pub fn new(save_path: PathBuf) -> Self {
        Options {
            save_path,
            resume_file: None,
            listen: vec![
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            ],
            port: 0,
            listeners: None,
            peers: Vec::new(),
            selected: None,
            sequential: false,
            seed: false,
            recheck: false,
            use_trackers: true,
            use_webseeds: true,
            webseed_timeout: Duration::from_secs(20),
            tracker: TrackerConfig::default(),
            max_peers: 50,
            max_half_open: 8,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            dht: None,
            dht_interval: Duration::from_secs(300),
            verified: None,
            storage: None,
            trust_complete: false,
            incoming: None,
            upload_limit: None,
            download_limit: None,
            ip_filter: None,
            detail: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    #[default]
    Starting,
    Checking,
    Downloading,
    Seeding,
    Done,
    Stopped,
}

/// A snapshot of the torrent, published about once a second.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Stats {
    pub phase: Phase,
    pub listen_port: u16,
    pub pieces_total: u32,
    pub pieces_wanted: u32,
    pub pieces_have: u32,
    pub bytes_wanted: u64,
    pub bytes_have: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub wasted: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub seeds: usize,
    pub hash_failures: u32,
    pub banned: usize,
    /// Distinct IP addresses the IP filter ([`Options::ip_filter`]) turned away for
    /// this torrent: offered peers, inbound connections, web seed addresses. Each counts
    /// once however often it comes back; at most [`crate::ipfilter::MAX_BLOCKED_TRACKED`].
    pub blocked: u64,
    /// Bytes of pieces received from web seeds (also counted in `downloaded`).
    pub web_seed_bytes: u64,
    /// Web seeds in use (not dropped).
    pub web_seeds: usize,
    pub elapsed: f64,
    /// Peers, trackers and the piece map, when [`Options::detail`] asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

/// What a status display shows of a torrent beyond the counters.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Detail {
    pub peer_list: Vec<PeerInfo>,
    pub trackers: Vec<TrackerInfo>,
    /// The verified pieces as hex, in wire order (the high bit of byte 0 is piece 0).
    pub piece_map: String,
}

/// One connected peer.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeerInfo {
    pub addr: String,
    /// The client it names in its extension handshake (BEP 10 `v`).
    pub client: Option<String>,
    pub down_rate: f64,
    pub up_rate: f64,
    /// Share of the pieces it has, 0 to 1.
    pub progress: f64,
    pub seed: bool,
    /// It chokes us.
    pub choked: bool,
    /// We want pieces it has.
    pub interested: bool,
    /// We dialled it.
    pub outgoing: bool,
}

/// The last announce to one tracker.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TrackerInfo {
    pub url: String,
    pub tier: usize,
    /// Unix time of the last answer or failure; `None` before the first.
    pub last_announce: Option<u64>,
    /// Peers the last answer gave.
    pub peers: Option<usize>,
    pub error: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("writing a verified piece failed: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Per-peer state shared between its tasks and the torrent loop.
struct PeerEntry {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Message>,
    bitfield: Bitfield,
    peer_choking: bool,
    am_interested: bool,
    peer_interested: bool,
    am_choking: bool,
    fast: bool,
    requested: HashSet<crate::picker::Block>,
    /// Blocks cancelled or given up on recently: their late arrival is not misbehaviour.
    cancelled: std::collections::VecDeque<crate::picker::Block>,
    /// Control messages queued for the writer and not yet written.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Metadata pieces served on this connection (BEP 9), capped.
    metadata_served: u32,
    depth: usize,
    reqq: usize,
    down_bytes: u64,
    up_bytes: u64,
    /// Everything uploaded to this peer, and that total when it was last unchoked.
    up_total: u64,
    up_at_unchoke: u64,
    /// Requests the peer cancelled that may still sit in the upload queue.
    upload_cancels: HashSet<(u32, u32, u32)>,
    down_rate: f64,
    up_rate: f64,
    unwanted: u32,
    client: Option<String>,
    /// The peer's id for `ut_metadata` messages (BEP 9), if it speaks it.
    ut_metadata: Option<u8>,
    /// The peer's id for `ut_pex` messages (BEP 11), if it speaks it.
    ut_pex: Option<u8>,
    /// Its listen port from the BEP 10 handshake.
    listen_port: Option<u16>,
    /// We dialled it (so its address is where it listens).
    outgoing: bool,
    last_pex_in: Option<Instant>,
    /// Addresses we told it about by PEX.
    pex_sent: HashSet<SocketAddr>,
    abort: Vec<tokio::task::AbortHandle>,
}

/// Who sent a block: a peer (its address, and what banning it bans, fixed when the
/// block came so a peer gone since is still banned as itself), or a web seed (its index
/// in [`State::webseeds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sender {
    Peer(SocketAddr, BanKey),
    WebSeed(usize),
}

/// Most control messages waiting for a peer's writer before the peer is dropped: a
/// peer that sends requests but never reads could otherwise make the queue grow.
const MAX_QUEUED: usize = 4096;

impl PeerEntry {
    /// Queues a control message for the writer.
    fn send(&self, m: Message) -> bool {
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx.send(m).is_ok()
    }

    /// The port it listens on, when known: the one we dialled, or the one its
    /// extension handshake named (an inbound connection's own port is ephemeral).
    fn listen(&self) -> Option<u16> {
        if self.outgoing {
            Some(self.addr.port())
        } else {
            self.listen_port
        }
    }

    /// What banning this peer bans (see [`BanKey`]).
    fn ban_key(&self) -> BanKey {
        BanKey::new(self.addr.ip(), self.listen())
    }

    fn clogged(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Relaxed) > MAX_QUEUED
    }
}

struct PieceBuf {
    data: Vec<u8>,
    /// Which source sent each block.
    from: Vec<Option<Sender>>,
    /// The piece failed a hash check before: return per-block hashes when it passes,
    /// to find who sent the bad blocks.
    suspect: bool,
}

/// A block of a piece that failed its hash check: who sent it and its SHA-1.
struct SuspectBlock {
    addr: Sender,
    block: usize,
    hash: [u8; 20],
}

struct State {
    picker: Picker,
    buffers: HashMap<u32, PieceBuf>,
    /// Blocks of pieces that failed, kept until the piece passes (smart ban).
    suspects: HashMap<u32, Vec<SuspectBlock>>,
    peers: HashMap<PeerKey, PeerEntry>,
    webseeds: Vec<webseed::WebSeedStatus>,
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
    /// Under a download limit: blocks kept in flight over all peers (see
    /// [`pipeline`]).
    request_budget: Option<usize>,
}

enum Event {
    Checked {
        piece: u32,
        ok: bool,
        from: Vec<Option<Sender>>,
        /// SHA-1 of each block, when the piece failed or was suspect.
        block_hashes: Option<Vec<[u8; 20]>>,
        error: Option<std::io::Error>,
    },
    /// A handshaken connection; the bool says whether we dialled it.
    Connected(TcpStream, SocketAddr, wire::Handshake, bool),
    /// Addresses a peer (the first address) told us about (BEP 11).
    Pex(SocketAddr, Vec<SocketAddr>),
    /// A dial (true) or an inbound handshake (false) failed.
    ConnectFailed(SocketAddr, bool),
    /// An inbound connection; with the handshake when a shared listener read it.
    Incoming(TcpStream, SocketAddr, Option<wire::Handshake>),
    Closed(PeerKey, SocketAddr, String),
    Misbehaved(PeerKey, String),
}

struct Shared {
    meta: Arc<Metainfo>,
    geometry: Geometry,
    info_hash: InfoHash,
    peer_id: [u8; 20],
    listen_port: u16,
    storage: Arc<dyn Storage>,
    upload_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    download_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// The IP filter as this torrent applies it (its own set of blocked addresses,
    /// shared with the peer book and the web seeds' resolver).
    ip_filter: Option<crate::ipfilter::FilterScope>,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
    hashers: Arc<Semaphore>,
    max_message: u32,
    /// UDP port of our DHT node, sent to peers with the `port` message (BEP 5).
    dht_port: Option<u16>,
    /// Completed pieces handed to verification and not yet reported back; requests
    /// pause above [`MAX_VERIFY_BACKLOG`] so memory stays bounded when disks are slow.
    verifying: std::sync::atomic::AtomicUsize,
    /// Piece buffers for reuse (no page faults and zeroing per piece).
    pool: Mutex<Vec<Vec<u8>>>,
}

/// Most completed pieces waiting for hashing and writing before requests pause.
pub const MAX_VERIFY_BACKLOG: usize = 8;
/// Most spare piece buffers kept.
const POOL_SIZE: usize = 16;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving what is consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn piece_hash(&self, i: u32) -> [u8; 20] {
        self.meta.info.pieces[i as usize]
    }

    /// Whether the IP filter blocks `ip` (remembered as blocked for this torrent).
    fn blocks(&self, ip: IpAddr) -> bool {
        self.ip_filter.as_ref().is_some_and(|f| f.check(ip))
    }

    /// Distinct addresses the IP filter turned away for this torrent.
    fn blocked_count(&self) -> u64 {
        self.ip_filter
            .as_ref()
            .map_or(0, crate::ipfilter::FilterScope::blocked)
    }

    fn backlogged(&self) -> bool {
        self.verifying.load(std::sync::atomic::Ordering::Relaxed) >= MAX_VERIFY_BACKLOG
    }

    /// A buffer of `size` bytes, reused when one is spare. Its contents are stale: every
    /// byte is overwritten by blocks before the piece is hashed.
    fn buffer(&self, size: usize) -> Vec<u8> {
        let reused = self.pool.lock().ok().and_then(|mut p| p.pop());
        match reused {
            Some(mut b) => {
                b.resize(size, 0);
                b
            }
            None => vec![0u8; size],
        }
    }

    fn recycle(&self, buf: Vec<u8>) {
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL_SIZE {
                p.push(buf);
            }
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    pub complete: bool,
    pub stats: Stats,
    /// Why the download stopped before completion, when it stopped by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// Connections with `ip` (its /64 for IPv6) established now.
fn peers_from(st: &State, ip: IpAddr) -> usize {
    let ip = IpKey::of(ip);
    st.peers
        .values()
        .filter(|p| IpKey::of(p.addr.ip()) == ip)
        .count()
}

/// Which files a torrent's pieces need; a piece is wanted if it holds any byte of a
/// selected, non-pad file.
fn wanted_pieces(meta: &Metainfo, selected: &[bool]) -> Vec<bool> {
    let g = meta.info.geometry().map(|g| g.piece_count()).unwrap_or(0);
    let mut wanted = vec![false; g as usize];
    if let Some(map) = &meta.info.v1 {
        for (i, f) in meta.info.files.iter().enumerate() {
            if !f.attr.pad && selected.get(i).copied().unwrap_or(true) {
                for p in map.pieces_of_file(i) {
                    wanted[p as usize] = true;
                }
            }
        }
    }
    wanted
}

/// Hashes the pieces already on disk with one thread per core; returns those that match.
fn check_existing(meta: &Metainfo, storage: &dyn Storage, candidates: &[u32]) -> Bitfield {
    let g = meta
        .info
        .geometry()
        .expect("v1 geometry checked by the caller");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = candidates.len().div_ceil(threads).max(1);
    let found: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = candidates
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut buf = vec![0u8; g.piece_length() as usize];
                    part.iter()
                        .copied()
                        .filter(|&i| {
                            let Some(p) = g.piece(i) else { return false };
                            let b = &mut buf[..g.piece_size(p) as usize];
                            storage.read_at(p, 0, b).is_ok()
                                && <[u8; 20]>::from(Sha1::digest(&*b))
                                    == meta.info.pieces[i as usize]
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut have = Bitfield::new(g.piece_count());
    for i in found.into_iter().flatten() {
        have.set(i);
    }
    have
}

/// The pieces already here: all when told so, those of trusted resume data, or those
/// found by hashing the files on disk (`checking` is called first).
async fn what_is_here(
    meta: &Arc<Metainfo>,
    opts: &Options,
    storage: Arc<dyn Storage>,
    checking: impl FnOnce(),
) -> Result<Bitfield, EngineError> {
    let n = meta
        .info
        .geometry()
        .ok_or(crate::storage::StorageError::NoV1)?
        .piece_count();
    let info_hash = meta.wire_info_hash();
    if opts.trust_complete {
        let mut all = Bitfield::new(n);
        (0..n).for_each(|i| {
            all.set(i);
        });
        return Ok(all);
    }
    let resume = opts
        .resume_file
        .as_deref()
        .and_then(ResumeData::load)
        .filter(|r| {
            r.info_hash == info_hash
                && r.have.len() == n
                && r.save_path == opts.save_path
                && r.files == storage.fingerprints()
        });
    match resume {
        Some(r) if !opts.recheck => Ok(r.have),
        _ if opts.recheck || storage.has_existing_data() => {
            checking();
            let candidates: Vec<u32> = (0..n).collect();
            let m = meta.clone();
            tokio::task::spawn_blocking(move || check_existing(&m, storage.as_ref(), &candidates))
                .await
                .map_err(|e| EngineError::Other(format!("checking failed: {e}")))
        }
        _ => Ok(Bitfield::new(n)),
    }
}

/// Hands inbound connections to the torrent loop: from our own listener, or from a
/// shared one (with their handshake read).
fn spawn_acceptor(
    listener: Option<Listeners>,
    mut incoming: Option<Incoming>,
    events: mpsc::UnboundedSender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(listener) = listener {
            // `accept` passes over failed connections and waits out a lack of
            // descriptors itself; an error is a listener that cannot accept any more.
            loop {
                let (sock, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "the peer listener failed; not accepting");
                        break;
                    }
                };
                if events.send(Event::Incoming(sock, addr, None)).is_err() {
                    break;
                }
            }
        } else if let Some(mut inc) = incoming.take() {
            while let Some((sock, addr, hs)) = inc.connections.recv().await {
                if events.send(Event::Incoming(sock, addr, Some(hs))).is_err() {
                    break;
                }
            }
        }
    })
}

/// One worker per web seed in use (BEP 19), sharing one HTTP client. With an IP
/// filter the client uses no proxy, even one set in the environment: a proxy would
/// resolve and dial the seed's host itself, past the filter.
fn start_webseeds(
    shared: &Arc<Shared>,
    opts: &Options,
) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
    let seeds = shared.lock().webseeds.len();
    if seeds == 0 {
        return Ok(Vec::new());
    }
    crate::install_tls_provider();
    let client = reqwest::Client::builder()
        .user_agent(opts.tracker.user_agent.clone())
        .connect_timeout(opts.webseed_timeout)
        .read_timeout(opts.webseed_timeout)
        .redirect(webseed::redirect_policy(shared.ip_filter.clone()));
    let client = match &shared.ip_filter {
        Some(filter) => client
            .no_proxy()
            .dns_resolver(Arc::new(webseed::FilteredResolver {
                filter: filter.clone(),
            })),
        None => client,
    };
    let client = client
        .build()
        .map_err(|e| EngineError::Other(format!("cannot set up the HTTP client: {e}")))?;
    Ok((0..seeds)
        .map(|i| tokio::spawn(webseed::worker(shared.clone(), i, client.clone())))
        .collect())
}

/// Downloads (and optionally seeds) one torrent until it is complete, or until
/// `shutdown` turns true. Progress is published on `stats`.
pub async fn run(
    meta: Arc<Metainfo>,
    mut opts: Options,
    stats: watch::Sender<Stats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let want_detail = opts.detail;
    let geometry = meta
        .info
        .geometry()
        .ok_or(crate::storage::StorageError::NoV1)?;
    let n = geometry.piece_count();
    let selected = opts
        .selected
        .clone()
        .unwrap_or_else(|| vec![true; meta.info.files.len()]);
    let storage: Arc<dyn Storage> = match &opts.storage {
        Some(s) => s.clone(),
        None => Arc::new(FileStorage::create(&opts.save_path, &meta, &selected)?),
    };
    let wanted = wanted_pieces(&meta, &selected);
    let info_hash = meta.wire_info_hash();

    // What is already here: trusted resume data, or a check of the files on disk.
    let publish_phase = |phase: Phase| stats.send_modify(|s| s.phase = phase);
    let have = what_is_here(&meta, &opts, storage.clone(), || {
        publish_phase(Phase::Checking)
    })
    .await?;

    let incoming = opts.incoming.take();
    let listener = match (&incoming, opts.listeners.take()) {
        (Some(_), _) => None,
        (None, Some(bound)) => Some(bound),
        (None, None) => Some(Listeners::bind(
            &opts.listen,
            opts.port,
            crate::listen::MAX_PORT_FALLBACK_TRIES,
        )?),
    };
    let (listen_port, listening) = match (&listener, &incoming) {
        (Some(l), _) => (l.port(), l.listening()),
        (None, Some(i)) => (i.port, i.listening.clone()),
        (None, None) => unreachable!("a listener or a shared one"),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    if let Some(tx) = &opts.verified {
        for i in (0..n).filter(|&i| have.get(i)) {
            let _ = tx.send(i);
        }
    }
    let mut picker = Picker::new(geometry, have, wanted.clone(), opts.sequential);
    // Each piece in progress holds a buffer: at most 256 MiB of them (and at least 16
    // pieces), so peers that each send a block of a different piece cannot hold more.
    picker.set_max_started(((256u64 << 20) / u64::from(geometry.piece_length())).max(16) as usize);
    let shared = Arc::new(Shared {
        geometry,
        info_hash,
        peer_id: crate::peer_id::generate(),
        listen_port,
        storage: storage.clone(),
        upload_limit: opts.upload_limit.clone(),
        download_limit: opts.download_limit.clone(),
        ip_filter: opts
            .ip_filter
            .clone()
            .map(crate::ipfilter::FilterScope::new),
        state: Mutex::new(State {
            picker,
            buffers: HashMap::new(),
            suspects: HashMap::new(),
            peers: HashMap::new(),
            webseeds: if opts.use_webseeds {
                meta.url_list
                    .iter()
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .map(|u| webseed::WebSeedStatus::new(u.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            downloaded: 0,
            uploaded: 0,
            wasted: 0,
            request_budget: opts
                .download_limit
                .as_ref()
                .map(|l| pipeline::budget(l.rate())),
        }),
        events: events_tx.clone(),
        hashers: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )),
        max_message: wire::max_message_len(n),
        dht_port: match &opts.dht {
            Some(d) if !meta.info.private => Some(d.local_addr().await.port()),
            _ => None,
        },
        verifying: std::sync::atomic::AtomicUsize::new(0),
        pool: Mutex::new(Vec::new()),
        meta: meta.clone(),
    });

    let acceptor = spawn_acceptor(listener, incoming, events_tx.clone());

    let webseed_tasks = start_webseeds(&shared, &opts)?;

    // Peer sources: explicit peers, then trackers.
    let (sink, mut candidates): (PeerSink, PeerStream) = peer_channel(1024);
    let explicit = opts.peers.clone();
    let manual_sink = sink.clone();
    tokio::spawn(async move {
        manual_sink.offer(explicit, &PeerSource::Manual).await;
    });
    let bytes_wanted: u64 = (0..n)
        .filter(|&i| wanted[i as usize])
        .filter_map(|i| geometry.piece(i))
        .map(|p| u64::from(geometry.piece_size(p)))
        .sum();
    let wanted_count = wanted.iter().filter(|w| **w).count() as u32;
    let left_now = |st: &State| -> u64 {
        (0..n)
            .filter(|&i| wanted[i as usize] && !st.picker.have().get(i))
            .filter_map(|i| geometry.piece(i))
            .map(|p| u64::from(geometry.piece_size(p)))
            .sum()
    };
    let (announce_tx, announce_rx) = watch::channel(AnnounceProgress {
        uploaded: 0,
        downloaded: 0,
        left: left_now(&shared.lock()),
    });
    let (announcer_stop_tx, announcer_stop_rx) = watch::channel(false);
    let mut tracker_board = None;
    let announcer = if opts.use_trackers && !meta.tracker_tiers().is_empty() {
        let client = Arc::new(
            TrackerClient::new(opts.tracker.clone())
                .map_err(|e| EngineError::Other(e.to_string()))?,
        );
        let mut a = Announcer::new(
            client,
            meta.tracker_tiers(),
            info_hash,
            shared.peer_id,
            listen_port,
            announce_rx,
            sink.clone(),
        );
        (a.listening, a.private) = (listening, meta.info.private);
        tracker_board = Some((a.status.clone(), meta.tracker_tiers()));
        Some(tokio::spawn(a.run(announcer_stop_rx)))
    } else {
        None
    };
    let dht_task = match &opts.dht {
        Some(d) if !meta.info.private => {
            let (d, sink, every) = (d.clone(), sink.clone(), opts.dht_interval);
            Some(tokio::spawn(async move {
                d.search(info_hash, Some(listen_port), sink, every).await
            }))
        }
        _ => None,
    };
    drop(sink);

    // Addresses to dial (failed ones come back after a back-off), bans, rate limits.
    let mut conns = Connections::new(&opts, shared.ip_filter.clone());
    let mut hash_failures = 0u32;
    let mut resume_dirty = false;
    let mut last_resume = Instant::now();
    let mut choker = Choker::new(Instant::now());
    let mut rate_at = Instant::now();
    // The first exchange goes out a little after peers connect.
    let mut last_pex = Instant::now() - Duration::from_secs(50);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut completed_at: Option<Instant> = None;
    let mut result: Result<(), EngineError> = Ok(());
    let mut stop_reason: Option<String> = None;
    let mut candidates_open = true;

    let save_resume = {
        let storage = storage.clone();
        let path = opts.resume_file.clone();
        let save_path = opts.save_path.clone();
        move |have: Bitfield| {
            let storage = storage.clone();
            let path = path.clone();
            let save_path = save_path.clone();
            async move {
                let Some(path) = path else { return };
                let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    // Data first, then the record that points at it.
                    storage.sync()?;
                    ResumeData {
                        info_hash,
                        save_path,
                        have,
                        files: storage.fingerprints(),
                    }
                    .save(&path)
                })
                .await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "saving resume data failed");
                }
            }
        }
    };

    {
        let st = shared.lock();
        let left = left_now(&st);
        stats.send_modify(|s| {
            fill_stats(s, &st, wanted_count, bytes_wanted, left);
            s.listen_port = listen_port;
        });
    }
    publish_phase(if shared.lock().picker.is_complete() {
        Phase::Seeding
    } else {
        Phase::Downloading
    });

    loop {
        let complete = shared.lock().picker.is_complete();
        if complete && completed_at.is_none() {
            completed_at = Some(Instant::now());
            let have = {
                let mut st = shared.lock();
                for p in st.peers.values_mut() {
                    if p.am_interested {
                        p.am_interested = false;
                        let _ = p.send(Message::NotInterested);
                    }
                }
                st.picker.have().clone()
            };
            save_resume(have).await;
            resume_dirty = false;
            announce_tx.send_modify(|p| p.left = 0);
            if !opts.seed {
                break;
            }
            publish_phase(Phase::Seeding);
        }
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            c = candidates.next(), if candidates_open => {
                match c {
                    Some(c) => {
                        if !complete || opts.seed {
                            conns.book.offer(c.addr, &c.source, Instant::now());
                        }
                    }
                    None => candidates_open = false,
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::Checked { piece, ok, from, block_hashes, error } => {
                        resume_backlogged(&shared);
                        if let Some(e) = error {
                            result = Err(EngineError::Write(e));
                            break;
                        }
                        let checked = Checked { piece, ok, from, block_hashes };
                        on_checked(&shared, &mut conns.book, opts.verified.as_ref(), checked);
                        if ok {
                            resume_dirty = true;
                        } else {
                            hash_failures += 1;
                        }
                    }
                    Event::Pex(from, addrs) => conns.on_pex(from, addrs, !complete || opts.seed),
                    Event::Connected(sock, addr, hs, outgoing) => conns.on_connected(&shared, sock, addr, hs, outgoing),
                    Event::ConnectFailed(addr, outgoing) => conns.on_connect_failed(addr, outgoing),
                    Event::Incoming(sock, addr, hs) => conns.on_incoming(&shared, sock, addr, hs),
                    Event::Closed(key, addr, why) => conns.on_closed(&shared, key, addr, &why),
                    Event::Misbehaved(key, why) => conns.on_misbehaved(&shared, key, &why),
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let dt = now.duration_since(rate_at).as_secs_f64().max(0.001);
                rate_at = now;
                let (left, down, up, snapshot) = {
                let mut st = shared.lock();
                // Nothing left to download from: say why instead of waiting forever.
                let peer_sources = announcer.is_some()
                    || dht_task.is_some()
                    || candidates_open
                    || conns.book.attempts_total() > 0
                    || conns.book.has_waiting();
                if !complete && !peer_sources {
                    if let Some(why) = nothing_left(&st, &conns.book) {
                        stop_reason = Some(why);
                        break;
                    }
                }
                update_rates(&mut st, dt);
                let limit = shared.download_limit.as_ref().map(|l| (l.rate(), l.backlog()));
                expire_requests(&mut st, now, limit);
                if !shared.backlogged() {
                    fill_all_requests(&mut st, now);
                }
                choker.tick(&mut st, now, complete);
                if !meta.info.private && now.duration_since(last_pex) >= Duration::from_secs(60) {
                    last_pex = now;
                    send_pex(&mut st);
                }
                let left = left_now(&st);
                let (down, up) = (st.downloaded, st.uploaded);
                let snapshot = if resume_dirty && now.duration_since(last_resume) >= Duration::from_secs(5) {
                    Some(st.picker.have().clone())
                } else {
                    None
                };
                stats.send_modify(|s| {
                    fill_stats(s, &st, wanted_count, bytes_wanted, left);
                    s.listen_port = listen_port;
                    s.hash_failures = hash_failures;
                    s.banned = conns.book.banned_count();
                    s.blocked = shared.blocked_count();
                    s.elapsed = started.elapsed().as_secs_f64();
                    if want_detail {
                        s.detail = Some(detail(&st, tracker_board.as_ref()));
                    }
                });
                (left, down, up, snapshot)
                };
                announce_tx.send_modify(|p| { p.uploaded = up; p.downloaded = down; p.left = left; });
                if let Some(have) = snapshot {
                    last_resume = now;
                    resume_dirty = false;
                    save_resume(have).await;
                }
            }
        }
        // Start connections while there is room.
        if !shared.lock().picker.is_complete() || opts.seed {
            conns.dial_due(&shared, opts.max_half_open);
        }
    }

    // Shut down: web seeds, peers, announcer (`stopped`), final resume save.
    acceptor.abort();
    if let Some(t) = &dht_task {
        t.abort();
    }
    for t in &webseed_tasks {
        t.abort();
    }
    let have = {
        let mut st = shared.lock();
        let keys: Vec<PeerKey> = st.peers.keys().copied().collect();
        for k in keys {
            remove_peer(&mut st, k);
        }
        st.picker.have().clone()
    };
    let _ = announcer_stop_tx.send(true);
    if let Some(a) = announcer {
        let _ = tokio::time::timeout(opts.tracker.timeout + Duration::from_secs(1), a).await;
    }
    save_resume(have).await;
    result?;
    let complete = {
        let st = shared.lock();
        let left = left_now(&st);
        let complete = st.picker.is_complete();
        stats.send_modify(|s| {
            fill_stats(s, &st, wanted_count, bytes_wanted, left);
            s.phase = if complete {
                Phase::Done
            } else {
                Phase::Stopped
            };
            s.listen_port = listen_port;
            s.hash_failures = hash_failures;
            s.banned = conns.book.banned_count();
            s.blocked = shared.blocked_count();
            s.elapsed = started.elapsed().as_secs_f64();
            if want_detail {
                s.detail = Some(detail(&st, tracker_board.as_ref()));
            }
            // Averages over the whole run, now that it is over.
            s.download_rate = s.downloaded as f64 / s.elapsed.max(0.001);
            s.upload_rate = s.uploaded as f64 / s.elapsed.max(0.001);
        });
        complete
    };
    Ok(Summary {
        complete,
        stats: stats.borrow().clone(),
        stop_reason,
    })
}

/// A piece's verification result, as [`Event::Checked`] brings it (without the error).
struct Checked {
    piece: u32,
    ok: bool,
    from: Vec<Option<Sender>>,
    block_hashes: Option<Vec<[u8; 20]>>,
}

/// One verification job fewer: if requests were paused on the backlog, they resume.
fn resume_backlogged(shared: &Shared) {
    let was = shared
        .verifying
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if was == MAX_VERIFY_BACKLOG {
        fill_all_requests(&mut shared.lock(), Instant::now());
    }
}

/// Records a verified or failed piece and bans whoever is shown to have sent bad data
/// (smart ban).
fn on_checked(
    shared: &Shared,
    book: &mut PeerBook,
    verified: Option<&mpsc::UnboundedSender<u32>>,
    c: Checked,
) {
    let mut st = shared.lock();
    let mut culprits: Vec<Sender> = Vec::new();
    if c.ok {
        st.picker.verified(c.piece);
        if let Some(tx) = verified {
            let _ = tx.send(c.piece);
        }
        for p in st.peers.values() {
            let _ = p.send(Message::Have(c.piece));
        }
        // Whoever sent a block that differs from the good data in an earlier failed
        // attempt sent bad data.
        if let (Some(records), Some(good)) = (st.suspects.remove(&c.piece), &c.block_hashes) {
            for r in records {
                if good.get(r.block) != Some(&r.hash) && !culprits.contains(&r.addr) {
                    culprits.push(r.addr);
                }
            }
        }
    } else {
        st.picker.failed(c.piece);
        let g = shared.geometry;
        st.wasted += u64::from(g.piece(c.piece).map_or(0, |p| g.piece_size(p)));
        let senders: HashSet<Sender> = c.from.iter().flatten().copied().collect();
        if senders.len() == 1 {
            // Every block came from one peer: it is the culprit.
            culprits.extend(senders);
        } else if let Some(hashes) = c.block_hashes {
            // Several senders: remember who sent what; the piece will pass later and
            // show which blocks were wrong.
            let records = st.suspects.entry(c.piece).or_default();
            for (block, (addr, hash)) in c.from.iter().zip(hashes).enumerate() {
                if let Some(addr) = addr {
                    records.push(SuspectBlock {
                        addr: *addr,
                        block,
                        hash,
                    });
                }
            }
        }
    }
    for sender in culprits {
        match sender {
            Sender::Peer(addr, key) => {
                tracing::warn!(peer = %addr, piece = c.piece, "banned: sent data that failed the hash check");
                ban(&mut st, book, key);
            }
            Sender::WebSeed(i) => webseed::bad_data(&mut st, i),
        }
    }
}

/// Why nothing is left to download from (no peer and every web seed dropped), if so.
fn nothing_left(st: &State, book: &PeerBook) -> Option<String> {
    if !st.peers.is_empty() || st.webseeds.iter().any(|w| w.disabled.is_none()) {
        return None;
    }
    let mut why: Vec<String> = st
        .webseeds
        .iter()
        .map(|w| {
            format!(
                "web seed {} dropped: {}",
                w.url,
                w.disabled.clone().unwrap_or_default()
            )
        })
        .collect();
    if book.banned_count() > 0 {
        why.push(format!(
            "{} peer address(es) banned for bad data or protocol violations",
            book.banned_count()
        ));
    }
    Some(if why.is_empty() {
        "no peer or web seed left to download from".into()
    } else {
        format!(
            "no peer or web seed left to download from ({})",
            why.join("; ")
        )
    })
}

/// Each peer's rates over the last `dt` seconds, and its pipeline depth (capped where
/// requests are filled under a download limit: see [`pipeline`]).
fn update_rates(st: &mut State, dt: f64) {
    for p in st.peers.values_mut() {
        p.down_rate = p.down_rate * 0.5 + (p.down_bytes as f64 / dt) * 0.5;
        p.up_rate = p.up_rate * 0.5 + (p.up_bytes as f64 / dt) * 0.5;
        p.down_bytes = 0;
        p.up_bytes = 0;
        // Three seconds of data at the current rate: deep enough that a peer slow to
        // answer still fills the pipe, so the rate can grow.
        let want = (p.down_rate * 3.0 / f64::from(wire::BLOCK_SIZE)) as usize;
        p.depth = want.clamp(64, p.reqq.clamp(64, 1000));
    }
}

/// Requests that took too long are cancelled and go to other peers; under a download
/// limit (its rate and backlog), "too long" counts the wait the limit imposes.
fn expire_requests(st: &mut State, now: Instant, limit: Option<(u64, Duration)>) {
    let in_flight = match limit {
        Some(_) => st.peers.values().map(|p| p.requested.len()).sum(),
        None => 0,
    };
    let expiry = pipeline::request_expiry(limit, in_flight);
    for (key, block) in st.picker.expire(now, expiry) {
        if let Some(p) = st.peers.get_mut(&key) {
            if p.requested.remove(&block) {
                peer::forget(p, block);
                let _ = p.send(Message::Cancel {
                    index: block.piece,
                    begin: block.begin,
                    length: block.len,
                });
            }
        }
    }
}

/// Tops up every peer's requests.
fn fill_all_requests(st: &mut State, now: Instant) {
    let keys: Vec<PeerKey> = st.peers.keys().copied().collect();
    for k in keys {
        peer::fill_requests(st, k, now);
    }
}

/// The choker's clock: a round every 10 s, a new optimistic unchoke every 30 s (or when
/// the last one left).
struct Choker {
    last_round: Instant,
    last_optimistic: Instant,
    optimistic: Option<PeerKey>,
}

impl Choker {
    fn new(now: Instant) -> Self {
        Choker {
            // The first round comes at once.
            last_round: now - Duration::from_secs(60),
            last_optimistic: now,
            optimistic: None,
        }
    }

    fn tick(&mut self, st: &mut State, now: Instant, seeding: bool) {
        if now.duration_since(self.last_round) < Duration::from_secs(10) {
            return;
        }
        self.last_round = now;
        if now.duration_since(self.last_optimistic) >= Duration::from_secs(30)
            || self.optimistic.is_none_or(|k| !st.peers.contains_key(&k))
        {
            self.last_optimistic = now;
            let choked: Vec<PeerKey> = st
                .peers
                .iter()
                .filter(|(_, p)| p.am_choking && p.peer_interested)
                .map(|(k, _)| *k)
                .collect();
            self.optimistic = if choked.is_empty() {
                None
            } else {
                Some(choked[rand::random::<u32>() as usize % choked.len()])
            };
        }
        choke_round(st, seeding, self.optimistic);
    }
}

/// Tells every peer that speaks BEP 11 which peers joined and left since last time
/// (addresses where they listen: ours dialled, or the port from their handshake).
fn send_pex(st: &mut State) {
    let contacts: Vec<(PeerKey, SocketAddr)> = st
        .peers
        .iter()
        .filter_map(|(k, q)| {
            let addr = if q.outgoing {
                Some(q.addr)
            } else {
                q.listen_port.map(|p| SocketAddr::new(q.addr.ip(), p))
            };
            addr.map(|a| (*k, a))
        })
        .collect();
    for (k, p) in st.peers.iter_mut() {
        let Some(id) = p.ut_pex else { continue };
        let now: HashSet<SocketAddr> = contacts
            .iter()
            .filter(|(other, _)| other != k)
            .map(|(_, a)| *a)
            .collect();
        let added: Vec<SocketAddr> = now
            .difference(&p.pex_sent)
            .copied()
            .take(crate::pex::MAX_PEERS)
            .collect();
        let dropped: Vec<SocketAddr> = p
            .pex_sent
            .difference(&now)
            .copied()
            .take(crate::pex::MAX_PEERS)
            .collect();
        if added.is_empty() && dropped.is_empty() {
            continue;
        }
        for a in &added {
            p.pex_sent.insert(*a);
        }
        for d in &dropped {
            p.pex_sent.remove(d);
        }
        let payload = crate::pex::PexMessage { added, dropped }.encode();
        let _ = p.send(Message::Extended { id, payload });
    }
}

/// Copies the shared state's counters into a stats snapshot.
fn fill_stats(s: &mut Stats, st: &State, pieces_wanted: u32, bytes_wanted: u64, left: u64) {
    s.pieces_total = st.picker.have().len();
    s.pieces_wanted = pieces_wanted;
    s.pieces_have = st.picker.have().count();
    s.bytes_wanted = bytes_wanted;
    s.bytes_have = bytes_wanted - left;
    s.downloaded = st.downloaded;
    s.uploaded = st.uploaded;
    s.wasted = st.wasted;
    s.download_rate = st.peers.values().fold(0.0, |a, p| a + p.down_rate);
    s.upload_rate = st.peers.values().fold(0.0, |a, p| a + p.up_rate);
    s.peers = st.peers.len();
    s.seeds = st.peers.values().filter(|p| p.bitfield.is_full()).count();
    s.web_seed_bytes = st.webseeds.iter().map(|w| w.bytes).sum();
    s.web_seeds = st.webseeds.iter().filter(|w| w.disabled.is_none()).count();
}

/// Peers, trackers and the piece map for status displays.
fn detail(
    st: &State,
    trackers: Option<&(crate::tracker::announcer::StatusBoard, Vec<Vec<String>>)>,
) -> Detail {
    let total = st.picker.have().len().max(1);
    let mut peer_list: Vec<PeerInfo> = st
        .peers
        .values()
        .map(|p| PeerInfo {
            addr: p.addr.to_string(),
            client: p.client.clone(),
            down_rate: p.down_rate,
            up_rate: p.up_rate,
            progress: f64::from(p.bitfield.count()) / f64::from(total),
            seed: p.bitfield.is_full(),
            choked: p.peer_choking,
            interested: p.am_interested,
            outgoing: p.outgoing,
        })
        .collect();
    peer_list.sort_by(|a, b| {
        b.down_rate
            .total_cmp(&a.down_rate)
            .then(a.addr.cmp(&b.addr))
    });
    let mut tracker_list = Vec::new();
    if let Some((board, tiers)) = trackers {
        let board = board.lock().map(|b| b.clone()).unwrap_or_default();
        for (tier, urls) in tiers.iter().enumerate() {
            for url in urls {
                let last = board.get(url);
                tracker_list.push(TrackerInfo {
                    url: url.clone(),
                    tier,
                    last_announce: last.and_then(|t| {
                        t.at.duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs())
                    }),
                    peers: last.and_then(|t| t.result.as_ref().ok().copied()),
                    error: last.and_then(|t| t.result.as_ref().err().cloned()),
                    seeders: last.and_then(|t| t.seeders),
                    leechers: last.and_then(|t| t.leechers),
                });
            }
        }
    }
    Detail {
        peer_list,
        trackers: tracker_list,
        piece_map: hex::encode(st.picker.have().as_bytes()),
    }
}

/// Bans `key`: drops its connections and throws away every block it sent to pieces
/// not yet complete, so its data can neither spoil a piece nor get an honest peer
/// blamed for the failure.
fn ban(st: &mut State, book: &mut PeerBook, key: BanKey) {
    book.ban(key);
    let peers: Vec<PeerKey> = st
        .peers
        .iter()
        .filter(|(_, p)| key.includes(&p.ban_key()))
        .map(|(k, _)| *k)
        .collect();
    for k in peers {
        remove_peer(st, k);
    }
    let sent_by = |s: &Sender| matches!(s, Sender::Peer(_, k) if key.includes(k));
    let spoiled: Vec<u32> = st
        .buffers
        .iter()
        .filter(|(_, b)| b.from.iter().flatten().any(sent_by))
        .map(|(i, _)| *i)
        .collect();
    for i in spoiled {
        st.buffers.remove(&i);
        st.picker.failed(i);
    }
    for records in st.suspects.values_mut() {
        records.retain(|r| !sent_by(&r.addr));
    }
}

/// Removes a peer everywhere and stops its tasks; returns its address.
fn remove_peer(st: &mut State, key: PeerKey) -> Option<SocketAddr> {
    let p = st.peers.remove(&key)?;
    st.picker.peer_gone(key, &p.bitfield);
    for a in &p.abort {
        a.abort();
    }
    Some(p.addr)
}

/// Unchokes up to four interested peers with the best rates (download rate from them
/// while downloading, upload rate to them while seeding) plus one optimistic unchoke.
fn choke_round(st: &mut State, seeding: bool, optimistic: Option<PeerKey>) {
    const SLOTS: usize = 4;
    /// Seeding: an unchoked peer keeps its slot until it got this much since.
    const TURN: u64 = 4 << 20;
    let mut ranked: Vec<(PeerKey, (bool, f64))> = st
        .peers
        .iter()
        .filter(|(_, p)| p.peer_interested)
        .map(|(k, p)| {
            let key = if seeding {
                // Round robin: peers in the middle of their turn first (fastest first),
                // then those that got the least so far.
                // A peer that stopped asking (no recent upload) gives its turn away.
                let in_turn =
                    !p.am_choking && p.up_rate > 1.0 && p.up_total - p.up_at_unchoke < TURN;
                (
                    in_turn,
                    if in_turn {
                        p.up_rate
                    } else {
                        -(p.up_total as f64)
                    },
                )
            } else {
                (true, p.down_rate)
            };
            (*k, key)
        })
        .collect();
    ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(b.1 .1.total_cmp(&a.1 .1)));
    let mut unchoke: HashSet<PeerKey> = ranked.iter().take(SLOTS).map(|(k, _)| *k).collect();
    if let Some(o) = optimistic {
        unchoke.insert(o);
    }
    for (k, p) in st.peers.iter_mut() {
        let should_choke = !unchoke.contains(k);
        if should_choke != p.am_choking {
            p.am_choking = should_choke;
            if !should_choke {
                p.up_at_unchoke = p.up_total;
            }
            let _ = p.send(if should_choke {
                Message::Choke
            } else {
                Message::Unchoke
            });
        }
    }
}

//! One peer connection: handshake, then a reader, a writer and an uploader task.

use super::{Event, PeerEntry, PieceBuf, Shared, State};
use crate::bitfield::Bitfield;
use crate::picker::{Arrival, Block, PeerKey};
use crate::wire::{self, Handshake, Message};
use sha1::{Digest, Sha1};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer silent for this long is dropped (keep-alives come every two minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Blocks nobody asked this peer for, before it is dropped.
const MAX_UNWANTED_BLOCKS: u32 = 64;
/// Cancelled blocks remembered per peer, so a late copy is not held against it.
const CANCELLED_MEMORY: usize = 1024;
/// A peer's writer that cannot write for this long means a dead or stuck peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request queue depth assumed for peers that do not say (BEP 10 `reqq`).
const DEFAULT_REQQ: usize = 250;
/// Requests from a peer waiting to be served.
/// As deep as the `reqq` we advertise, so a peer that fills it is never refused.
const UPLOAD_QUEUE: usize = ADVERTISED_REQQ as usize;
/// The request queue depth we tell peers (BEP 10 `reqq`).
const ADVERTISED_REQQ: u32 = 2000;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn check_handshake(sh: &Shared, hs: &Handshake) -> io::Result<()> {
    if hs.info_hash != sh.info_hash {
        return Err(bad("handshake for another torrent"));
    }
    if hs.peer_id == sh.peer_id {
        return Err(bad("connected to ourselves"));
    }
    Ok(())
}

fn ours(sh: &Shared) -> Handshake {
    Handshake {
        reserved: wire::reserved_with_dht(sh.dht_port.is_some()),
        info_hash: sh.info_hash,
        peer_id: sh.peer_id,
    }
}

/// Outgoing: connect, send our handshake, check theirs.
pub(super) async fn connect(sh: &Shared, addr: SocketAddr) -> io::Result<(TcpStream, Handshake)> {
    if sh.blocks(addr.ip()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "blocked by the IP filter",
        ));
    }
    let mut sock = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    sock.set_nodelay(true)?;
    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        wire::write_handshake(&mut sock, &ours(sh)).await?;
        Handshake::read(&mut sock).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    check_handshake(sh, &hs)?;
    Ok((sock, hs))
}

/// Incoming: read their handshake (unless a shared listener did), check it is for this
/// torrent, answer with ours.
pub(super) async fn accept(
    sh: &Shared,
    mut sock: TcpStream,
    read: Option<Handshake>,
) -> io::Result<(TcpStream, Handshake)> {
    sock.set_nodelay(true)?;
    let hs = match read {
        Some(hs) => hs,
        None => tokio::time::timeout(HANDSHAKE_TIMEOUT, Handshake::read(&mut sock))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??,
    };
    check_handshake(sh, &hs)?;
    wire::write_handshake(&mut sock, &ours(sh)).await?;
    Ok((sock, hs))
}

/// Registers a handshaken connection and starts its tasks.
pub(super) fn start(
    sh: Arc<Shared>,
    key: PeerKey,
    sock: TcpStream,
    addr: SocketAddr,
    hs: Handshake,
    outgoing: bool,
) {
    let (rd, wr) = sock.into_split();
    let (tx, ctrl_rx) = mpsc::unbounded_channel::<Message>();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (data_tx, data_rx) = mpsc::channel::<Message>(64);
    let (up_tx, up_rx) = mpsc::channel::<(u32, u32, u32)>(UPLOAD_QUEUE);
    let mut st = sh.lock();
    let have = st.picker.have();
    let n = have.len();
    if hs.supports_fast() && have.is_full() {
        let _ = tx.send(Message::HaveAll);
    } else if hs.supports_fast() && have.count() == 0 {
        let _ = tx.send(Message::HaveNone);
    } else if have.count() > 0 {
        let _ = tx.send(Message::Bitfield(have.as_bytes().to_vec()));
    }
    if let (true, Some(port)) = (hs.supports_dht(), sh.dht_port) {
        // BEP 5: tell DHT-capable peers where our node listens.
        let _ = tx.send(Message::Port(port));
    }
    if hs.supports_extensions() {
        let _ = tx.send(Message::Extended {
            id: 0,
            payload: wire::extended_handshake(
                sh.listen_port,
                ADVERTISED_REQQ,
                Some(sh.meta.info_bytes.len()),
                !sh.meta.info.private,
            ),
        });
    }
    let writer = tokio::spawn(writer(wr, ctrl_rx, data_rx, queued.clone()));
    let uploader = tokio::spawn(uploader(sh.clone(), key, up_rx, data_tx));
    let reader = tokio::spawn(reader(sh.clone(), key, addr, rd, up_tx));
    st.peers.insert(
        key,
        PeerEntry {
            addr,
            tx,
            bitfield: Bitfield::new(n),
            peer_choking: true,
            am_interested: false,
            peer_interested: false,
            am_choking: true,
            fast: hs.supports_fast(),
            requested: HashSet::new(),
            cancelled: std::collections::VecDeque::new(),
            queued: queued.clone(),
            metadata_served: 0,
            depth: 128,
            reqq: DEFAULT_REQQ,
            down_bytes: 0,
            up_bytes: 0,
            up_total: 0,
            up_at_unchoke: 0,
            upload_cancels: HashSet::new(),
            down_rate: 0.0,
            up_rate: 0.0,
            unwanted: 0,
            client: None,
            ut_metadata: None,
            ut_pex: None,
            listen_port: None,
            outgoing,
            last_pex_in: None,
            pex_sent: HashSet::new(),
            abort: vec![
                reader.abort_handle(),
                writer.abort_handle(),
                uploader.abort_handle(),
            ],
        },
    );
}

/// The only task that writes to the socket: control messages first, then blocks.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut ctrl: mpsc::UnboundedReceiver<Message>,
    mut data: mpsc::Receiver<Message>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let dec = |q: &std::sync::atomic::AtomicUsize| {
        let _ = q.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    };
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        let first = tokio::time::timeout(Duration::from_secs(90), async {
            tokio::select! {
                biased;
                m = ctrl.recv() => m.map(|m| (m, true)),
                m = data.recv() => m.map(|m| (m, false)),
            }
        })
        .await;
        let msg = match first {
            Ok(Some((m, control))) => {
                if control {
                    dec(&queued);
                }
                m
            }
            Ok(None) => break,
            Err(_) => Message::KeepAlive,
        };
        buf.clear();
        msg.encode_into(&mut buf);
        while buf.len() < 256 * 1024 {
            match ctrl.try_recv() {
                Ok(m) => {
                    dec(&queued);
                    m.encode_into(&mut buf);
                }
                Err(_) => match data.try_recv() {
                    Ok(m) => m.encode_into(&mut buf),
                    Err(_) => break,
                },
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = wr.shutdown().await;
}

/// Serves requested blocks, one storage read at a time on the blocking pool.
async fn uploader(
    sh: Arc<Shared>,
    key: PeerKey,
    mut rx: mpsc::Receiver<(u32, u32, u32)>,
    tx: mpsc::Sender<Message>,
) {
    /// Requests read in one trip to the blocking pool (they queue while one is served).
    const BATCH: usize = 64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let sh2 = sh.clone();
        let read = tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|(index, begin, length)| {
                    let data = sh2.geometry.piece(index).and_then(|piece| {
                        let mut buf = vec![0u8; length as usize];
                        sh2.storage
                            .read_at(piece, begin, &mut buf)
                            .ok()
                            .map(|()| buf)
                    });
                    (index, begin, length, data)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(blocks) = read else { break };
        for (index, begin, length, data) in blocks {
            // Not sent: a block that could not be read (rejected), a request the peer
            // cancelled since (dropped), or one from before we choked the peer (rejected
            // for fast-extension peers; for others a choke drops every request).
            let skip = if data.is_none() {
                tracing::debug!(piece = index, "reading a block to upload failed");
                Some(true)
            } else {
                let mut st = sh.lock();
                let Some(p) = st.peers.get_mut(&key) else {
                    return;
                };
                if p.upload_cancels.remove(&(index, begin, length)) {
                    Some(false)
                } else if p.am_choking {
                    Some(p.fast)
                } else {
                    None
                }
            };
            let (Some(data), None) = (data, skip) else {
                if skip == Some(true) {
                    let _ = tx
                        .send(Message::Reject {
                            index,
                            begin,
                            length,
                        })
                        .await;
                }
                continue;
            };
            // Paced block by block, so a peer that leaves owes the limiter nothing more.
            if let Some(limit) = &sh.upload_limit {
                limit.acquire(u64::from(length)).await;
            }
            {
                let mut st = sh.lock();
                st.uploaded += u64::from(length);
                if let Some(p) = st.peers.get_mut(&key) {
                    p.up_bytes += u64::from(length);
                    p.up_total += u64::from(length);
                }
            }
            if tx
                .send(Message::Piece { index, begin, data })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn reader(
    sh: Arc<Shared>,
    key: PeerKey,
    addr: SocketAddr,
    rd: OwnedReadHalf,
    up_tx: mpsc::Sender<(u32, u32, u32)>,
) {
    let mut r = BufReader::with_capacity(256 * 1024, rd);
    let why = loop {
        let msg =
            match tokio::time::timeout(IDLE_TIMEOUT, Message::read(&mut r, sh.max_message)).await {
                Err(_) => break "idle for 3 minutes".to_owned(),
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = sh.events.send(Event::Misbehaved(key, e.to_string()));
                    return;
                }
                Ok(Err(e)) => break e.to_string(),
                Ok(Ok(m)) => m,
            };
        // The download limit: piece data waits here, so the socket is not read meanwhile
        // and the peer's sending slows to what we take.
        if let (Some(limit), Message::Piece { data, .. }) = (&sh.download_limit, &msg) {
            limit.acquire(data.len() as u64).await;
        }
        if let Err(why) = handle(&sh, key, msg, &up_tx) {
            let _ = sh.events.send(Event::Misbehaved(key, why));
            return;
        }
    };
    let _ = sh.events.send(Event::Closed(key, addr, why));
}

fn set_interest(p: &mut PeerEntry, want: bool) {
    if want != p.am_interested {
        p.am_interested = want;
        let _ = p.send(if want {
            Message::Interested
        } else {
            Message::NotInterested
        });
    }
}

/// Handles one message; `Err` means the peer broke the protocol and is dropped.
fn handle(
    sh: &Arc<Shared>,
    key: PeerKey,
    msg: Message,
    up_tx: &mpsc::Sender<(u32, u32, u32)>,
) -> Result<(), String> {
    let now = Instant::now();
    let n = sh.geometry.piece_count();
    let mut guard = sh.lock();
    let st: &mut State = &mut guard;
    let State {
        picker,
        peers,
        buffers,
        suspects,
        ..
    } = st;
    let Some(p) = peers.get_mut(&key) else {
        return Err("connection already closed".into());
    };
    let p_addr = p.addr;
    let p_ban = p.ban_key();
    if p.clogged() {
        return Err("does not read what we send".into());
    }
    match msg {
        Message::KeepAlive
        | Message::Port(_)
        | Message::Suggest(_)
        | Message::AllowedFast(_)
        | Message::Unknown(_) => {}
        Message::Cancel {
            index,
            begin,
            length,
        } => {
            // Requests still queued for the uploader are skipped; a stale list is dropped.
            if p.upload_cancels.len() >= 256 {
                p.upload_cancels.clear();
            }
            p.upload_cancels.insert((index, begin, length));
        }
        Message::Choke => {
            p.peer_choking = true;
            if !p.fast {
                // Without the fast extension a choke drops every pending request.
                for b in std::mem::take(&mut p.requested) {
                    picker.release(key, b);
                    forget(p, b);
                }
            }
        }
        Message::Unchoke => {
            p.peer_choking = false;
            fill_requests(st, key, now);
        }
        Message::Interested => {
            p.peer_interested = true;
            if p.am_choking {
                // Unchoke at once while upload slots are free; the choker rebalances.
                let unchoked = peers.values().filter(|q| !q.am_choking).count();
                if let Some(p) = peers.get_mut(&key) {
                    if unchoked < 4 {
                        p.am_choking = false;
                        p.up_at_unchoke = p.up_total;
                        let _ = p.send(Message::Unchoke);
                    }
                }
            }
        }
        Message::NotInterested => p.peer_interested = false,
        Message::Have(i) => {
            if i >= n {
                return Err(format!("have for piece {i} of {n}"));
            }
            if p.bitfield.set(i) {
                picker.peer_has(i);
                if !p.am_interested && picker.is_wanted(i) && !picker.have().get(i) {
                    set_interest(p, true);
                }
                fill_requests(st, key, now);
            }
        }
        Message::Bitfield(bytes) => {
            let b = Bitfield::from_bytes(&bytes, n).ok_or("bitfield of the wrong length")?;
            if p.bitfield.count() == 0 {
                picker.peer_bitfield(&b);
                p.bitfield = b;
            } else {
                // A later bitfield (aria2 sends them to announce several pieces at once):
                // its new pieces count as `have`s; a peer never loses pieces.
                for i in (0..n).filter(|&i| b.get(i)) {
                    if p.bitfield.set(i) {
                        picker.peer_has(i);
                    }
                }
            }
            let want = picker.interesting(&p.bitfield);
            set_interest(p, want);
            fill_requests(st, key, now);
        }
        Message::HaveAll => {
            if p.bitfield.count() > 0 {
                return Err("have-all after it announced pieces".into());
            }
            let b = Bitfield::full(n);
            picker.peer_bitfield(&b);
            p.bitfield = b;
            let want = !picker.is_complete();
            set_interest(p, want);
            fill_requests(st, key, now);
        }
        Message::HaveNone => {}
        Message::Request {
            index,
            begin,
            length,
        } => {
            let valid = !p.am_choking
                && picker.have().get(index)
                && length > 0
                // 16 KiB, as every client asks: larger ones would let a slow reader make
                // us hold big buffers.
                && length <= wire::BLOCK_SIZE
                && sh.geometry.piece(index).is_some_and(|pc| {
                    u64::from(begin) + u64::from(length) <= u64::from(sh.geometry.piece_size(pc))
                });
            // A valid request is queued for the uploader; others are refused.
            let queued = valid && up_tx.try_send((index, begin, length)).is_ok();
            if !queued && p.fast {
                let _ = p.send(Message::Reject {
                    index,
                    begin,
                    length,
                });
            }
        }
        Message::Piece { index, begin, data } => {
            let len = data.len() as u32;
            let block = Block {
                piece: index,
                begin,
                len,
            };
            if !p.requested.remove(&block) {
                if let Some(pos) = p.cancelled.iter().position(|b| *b == block) {
                    // A block we cancelled or gave up on, arriving late: not misbehaviour.
                    p.cancelled.remove(pos);
                    st.wasted += u64::from(len);
                    return Ok(());
                }
                p.unwanted += 1;
                st.wasted += u64::from(len);
                if st
                    .peers
                    .get(&key)
                    .is_some_and(|p| p.unwanted > MAX_UNWANTED_BLOCKS)
                {
                    return Err("sent too many blocks nobody asked for".into());
                }
                return Ok(());
            }
            p.down_bytes += u64::from(len);
            match picker.received(key, block) {
                Arrival::Unwanted => st.wasted += u64::from(len),
                Arrival::Accepted { complete, cancel } => {
                    for c in cancel {
                        if let Some(o) = peers.get_mut(&c) {
                            if o.requested.remove(&block) {
                                forget(o, block);
                                let _ = o.send(Message::Cancel {
                                    index,
                                    begin,
                                    length: len,
                                });
                            }
                        }
                    }
                    let size = sh
                        .geometry
                        .piece(index)
                        .map_or(0, |pc| sh.geometry.piece_size(pc))
                        as usize;
                    let blocks = size.div_ceil(wire::BLOCK_SIZE as usize);
                    let suspect = suspects.contains_key(&index);
                    let buf = buffers.entry(index).or_insert_with(|| PieceBuf {
                        data: sh.buffer(size),
                        from: vec![None; blocks],
                        suspect,
                    });
                    buf.data[begin as usize..(begin + len) as usize].copy_from_slice(&data);
                    buf.from[(begin / wire::BLOCK_SIZE) as usize] =
                        Some(super::Sender::Peer(p_addr, p_ban));
                    if complete {
                        if let Some(buf) = buffers.remove(&index) {
                            sh.verifying
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            verify(sh.clone(), index, buf);
                        }
                    }
                }
            }
            st.downloaded += u64::from(len);
            if !sh.backlogged() {
                fill_requests(st, key, now);
            }
        }
        Message::Reject {
            index,
            begin,
            length,
        } => {
            let block = Block {
                piece: index,
                begin,
                len: length,
            };
            if p.requested.remove(&block) {
                picker.release(key, block);
                forget(p, block);
            }
        }
        Message::Extended { id: 0, payload } => {
            if let Some(ext) = wire::parse_extended_handshake(&payload) {
                if let Some(q) = ext.reqq {
                    p.reqq = q as usize;
                }
                p.client = ext.client;
                p.ut_metadata = ext.ut_metadata;
                p.ut_pex = ext.ut_pex;
                p.listen_port = ext.port;
            }
        }
        Message::Extended {
            id: crate::metadata::UT_METADATA,
            payload,
        } => {
            // BEP 9: serve our info dictionary to peers that came by magnet link.
            let pieces = sh.meta.info_bytes.len().div_ceil(crate::metadata::PIECE) as u32;
            if let (Some(their_id), Some(crate::metadata::MetadataMessage::Request(piece))) = (
                p.ut_metadata,
                crate::metadata::MetadataMessage::parse(&payload),
            ) {
                // Each piece a few times at most: a peer cannot make us queue without end.
                p.metadata_served += 1;
                if p.metadata_served > 4 * pieces + 8 {
                    return Err("asked for the metadata over and over".into());
                }
                let _ = p.send(Message::Extended {
                    id: their_id,
                    payload: crate::metadata::serve(&sh.meta.info_bytes, piece).encode(),
                });
            }
        }
        Message::Extended {
            id: crate::pex::UT_PEX,
            payload,
        } => {
            // BEP 11; never for private torrents (BEP 27), at most one message per
            // connection per interval (and per source IP: the torrent loop), a capped list.
            let now = Instant::now();
            let recent = p
                .last_pex_in
                .is_some_and(|t| now.duration_since(t) < crate::pex::MIN_INTERVAL);
            if !sh.meta.info.private && !recent {
                p.last_pex_in = Some(now);
                if let Some(m) = crate::pex::PexMessage::parse(&payload) {
                    let _ = sh.events.send(Event::Pex(p_addr, m.added));
                }
            }
        }
        Message::Extended { .. } => {}
    }
    Ok(())
}

/// Remembers a block no longer expected from `p`, so a late copy is not held against it.
pub(super) fn forget(p: &mut PeerEntry, block: Block) {
    if p.cancelled.len() >= CANCELLED_MEMORY {
        p.cancelled.pop_front();
    }
    p.cancelled.push_back(block);
}

/// Tops up the requests in flight to this peer to its pipeline depth (under a download
/// limit, to its part of the torrent's budget: see [`super::pipeline`]).
pub(super) fn fill_requests(st: &mut State, key: PeerKey, now: Instant) {
    let State {
        picker,
        peers,
        request_budget,
        ..
    } = st;
    let depth = match (*request_budget, peers.get(&key)) {
        (_, None) => return,
        (None, Some(p)) => p.depth,
        (Some(budget), Some(p)) => {
            let (mut active, mut others) = (0, 0);
            for (k, q) in peers.iter() {
                if !q.peer_choking && q.am_interested {
                    active += 1;
                }
                if *k != key {
                    others += q.requested.len();
                }
            }
            super::pipeline::limited_depth(p.depth, budget, active, others)
        }
    };
    let Some(p) = peers.get_mut(&key) else { return };
    if p.peer_choking || !p.am_interested {
        return;
    }
    let outstanding = p.requested.len();
    if outstanding >= depth {
        return;
    }
    let want = depth - outstanding;
    // Batch small top-ups while plenty is in flight.
    if outstanding > 16 && want < 8 {
        return;
    }
    for b in picker.pick(key, &p.bitfield, want, now) {
        if !p.requested.insert(b) {
            continue; // already asked of this peer
        }
        let _ = p.send(Message::Request {
            index: b.piece,
            begin: b.begin,
            length: b.len,
        });
    }
    if p.requested.is_empty() && !picker.interesting(&p.bitfield) {
        set_interest(p, false);
    }
}

/// Hashes a completed piece on the blocking pool and writes it if it matches.
pub(super) fn verify(sh: Arc<Shared>, piece: u32, buf: PieceBuf) {
    tokio::spawn(async move {
        let Ok(_permit) = sh.hashers.clone().acquire_owned().await else {
            return;
        };
        let job = sh.clone();
        let r = tokio::task::spawn_blocking(move || {
            let ok = <[u8; 20]>::from(Sha1::digest(&buf.data)) == job.piece_hash(piece);
            let error = match (ok, job.geometry.piece(piece)) {
                (true, Some(p)) => job.storage.write_piece(p, &buf.data).err(),
                _ => None,
            };
            // Per-block hashes tell good blocks from bad ones (smart ban).
            let block_hashes = (!ok || buf.suspect).then(|| {
                buf.data
                    .chunks(wire::BLOCK_SIZE as usize)
                    .map(|b| <[u8; 20]>::from(Sha1::digest(b)))
                    .collect()
            });
            job.recycle(buf.data);
            (ok, error, buf.from, block_hashes)
        })
        .await;
        if let Ok((ok, error, from, block_hashes)) = r {
            let _ = sh.events.send(Event::Checked {
                piece,
                ok,
                from,
                block_hashes,
                error,
            });
        }
    });
}

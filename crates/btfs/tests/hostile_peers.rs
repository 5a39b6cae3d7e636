//! Hostile peers: small BitTorrent peers inside the test that complete the real
//! handshake for the torrent and then misbehave, each next to an honest libtorrent
//! seeder. The download must still complete with the right bytes, the hostile peer
//! must be dropped (and banned where it broke the protocol or sent bad data), and
//! nothing a hostile peer sent may ever be recorded as verified.
//!
//! Determinism: btfs reaches the honest seeder through a gate, a TCP relay in the test
//! that opens only once the hostile peer has played its part (btfs dropped it, or it
//! received a request), so the hostile peer is always served first and the outcome
//! does not depend on which peer is faster. The gate also opens after [`GATE_LIMIT`]
//! whatever happens (below btfs's 10 s handshake timeout): a btfs that never drops the
//! hostile peer then shows up as a failed assertion on the summary, not as a hang.

mod common;

use bittorrent::resume::ResumeData;
use bittorrent::wire::{self, our_reserved, Handshake, Message, BLOCK_SIZE};
use bittorrent::{InfoHash, Metainfo};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Longest wait for anything: a download, a shutdown, a hostile peer's progress.
const LIMIT: Duration = Duration::from_secs(60);
/// The gate in front of the honest seeder opens by itself after this long.
const GATE_LIMIT: Duration = Duration::from_secs(8);
const PEER_ID: [u8; 20] = *b"-HP0001-hostile-peer";

/// What a hostile peer does after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehavior {
    /// Claims every piece, unchokes, and answers every request with the block's bytes
    /// with one byte changed.
    Corrupt,
    /// Claims every piece and unchokes; once the first batch of requests is in, sends
    /// the (corrupt) first block of every requested piece but one, then every block of
    /// that last piece, and answers nothing more: btfs is left with partial pieces
    /// whose first block came from the peer it bans.
    CorruptPartial,
    /// Sends its bitfield, then a message header with this length prefix (a piece
    /// message id and a few bytes, never the body).
    Frame(u32),
    /// [`Misbehavior::Frame`] with the smallest length over btfs's cap for the torrent.
    FrameOverCap,
    /// Sends its bitfield, keeps btfs choked, and sends this many 16 KiB blocks.
    Unrequested(u32),
    /// Sends a bitfield this many bytes longer (positive) or shorter than the torrent's.
    BadBitfield(i32),
    /// Claims every piece, unchokes, reads requests and never answers them.
    Stall,
}

impl Misbehavior {
    /// When the gate to the honest seeder opens: on the first request for a stalling
    /// peer, once btfs has dropped the peer for the others.
    fn gate_on_request(self) -> bool {
        self == Misbehavior::Stall
    }
}

/// What a hostile peer saw.
#[derive(Debug, Default)]
struct Log {
    /// Handshakes from btfs for the right torrent, answered.
    handshakes: u32,
    requests: u32,
    blocks_sent: u32,
    /// Pieces left with only their first block sent ([`Misbehavior::CorruptPartial`]).
    partial_pieces: u32,
    /// btfs closed a connection (or reset it) that this peer would have kept open.
    dropped: bool,
    events: Vec<String>,
}

/// The torrent under test and its source bytes.
struct Torrent {
    file: PathBuf,
    meta: Metainfo,
    info_hash: InfoHash,
    /// Where the source files are (the folder the torrent was made in).
    src_root: PathBuf,
    /// The v1 byte stream of the source (pad files as zeros).
    content: Vec<u8>,
}

impl Torrent {
    fn pieces(&self) -> u32 {
        self.meta.info.geometry().unwrap().piece_count()
    }

    fn piece_length(&self) -> u32 {
        self.meta.info.geometry().unwrap().piece_length()
    }

    fn piece_size(&self, i: u32) -> u32 {
        let g = self.meta.info.geometry().unwrap();
        g.piece(i).map_or(0, |p| g.piece_size(p))
    }

    fn full_bitfield(&self) -> Vec<u8> {
        let n = self.pieces();
        let mut b = vec![0u8; n.div_ceil(8) as usize];
        for i in 0..n {
            b[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        b
    }

    /// The real bytes of a block with one byte changed (whatever the request asks;
    /// out-of-range requests get filler).
    fn corrupt_block(&self, index: u32, begin: u32, length: u32) -> Vec<u8> {
        let start = u64::from(index) * u64::from(self.piece_length()) + u64::from(begin);
        let mut data: Vec<u8> = (0..u64::from(length))
            .map(|k| {
                self.content
                    .get((start + k) as usize)
                    .copied()
                    .unwrap_or(0xEE)
            })
            .collect();
        if let Some(b) = data.get_mut(length as usize / 2) {
            *b ^= 0x01;
        }
        data
    }
}

/// The v1 byte stream of the files of `meta` below `root`; missing files read as zeros.
fn stream(meta: &Metainfo, root: &Path) -> Vec<u8> {
    let files = &meta.info.files;
    let total = files.iter().map(|f| f.offset + f.length).max().unwrap_or(0);
    let mut out = vec![0u8; total as usize];
    for (f, path) in files
        .iter()
        .zip(bittorrent::storage::file_paths(root, meta))
    {
        if f.attr.pad || f.length == 0 {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&path) {
            let n = bytes.len().min(f.length as usize);
            out[f.offset as usize..f.offset as usize + n].copy_from_slice(&bytes[..n]);
        }
    }
    out
}

/// Every file of the download equals its source byte for byte.
fn assert_same_files(t: &Torrent, out: &Path, context: &str) {
    for (f, (src, dst)) in t.meta.info.files.iter().zip(
        bittorrent::storage::file_paths(&t.src_root, &t.meta)
            .into_iter()
            .zip(bittorrent::storage::file_paths(out, &t.meta)),
    ) {
        if f.attr.pad {
            continue;
        }
        let want = std::fs::read(&src).unwrap();
        let got =
            std::fs::read(&dst).unwrap_or_else(|e| panic!("{}: {e}\n{context}", dst.display()));
        if got != want {
            let first = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            panic!(
                "{} differs from the source: {} bytes vs {}, first difference at byte {first}\n{context}",
                dst.display(),
                got.len(),
                want.len()
            );
        }
    }
}

/// Pieces on disk below `out` that hold the right bytes, after checking that every
/// other piece holds only zeros (never written): no piece holds anything else.
fn pieces_on_disk(t: &Torrent, out: &Path) -> u32 {
    let disk = stream(&t.meta, out);
    let mut good = 0;
    for i in 0..t.pieces() {
        let a = (i as usize) * t.piece_length() as usize;
        let b = a + t.piece_size(i) as usize;
        if disk[a..b] == t.content[a..b] {
            good += 1;
        } else {
            assert!(
                disk[a..b].iter().all(|&x| x == 0),
                "piece {i} on disk holds bytes that are neither the source nor unwritten zeros"
            );
        }
    }
    good
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn send(wr: &mut OwnedWriteHalf, msgs: &[Message]) -> io::Result<()> {
    let mut buf = Vec::new();
    for m in msgs {
        m.encode_into(&mut buf);
    }
    wr.write_all(&buf).await
}

/// A hostile peer listening on 127.0.0.1.
struct Hostile {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// Turns true when the gate to the honest seeder may open.
    gate: watch::Receiver<bool>,
}

impl Hostile {
    fn start(rt: &tokio::runtime::Runtime, t: Arc<Torrent>, how: Misbehavior) -> Hostile {
        let log = Arc::new(Mutex::new(Log::default()));
        let (gate_tx, gate) = watch::channel(false);
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the hostile peer");
        let addr = listener.local_addr().unwrap();
        let l = log.clone();
        rt.spawn(async move {
            let gate_tx = Arc::new(gate_tx);
            while let Ok((sock, from)) = listener.accept().await {
                l.lock()
                    .unwrap()
                    .events
                    .push(format!("connection from {from}"));
                let (t, l, g) = (t.clone(), l.clone(), gate_tx.clone());
                tokio::spawn(async move {
                    let end = session(sock, &t, how, &l, &g).await;
                    let mut log = l.lock().unwrap();
                    log.events.push(format!("connection ended: {end:?}"));
                    if log.handshakes > 0 {
                        log.dropped = true;
                    }
                    drop(log);
                    if !how.gate_on_request() {
                        g.send_replace(true);
                    }
                });
            }
        });
        Hostile { addr, log, gate }
    }

    fn report(&self) -> String {
        format!("hostile peer: {:?}", self.log.lock().unwrap())
    }
}

/// One connection from btfs; returns only when btfs ends it (or the handshake fails).
async fn session(
    mut sock: TcpStream,
    t: &Torrent,
    how: Misbehavior,
    log: &Mutex<Log>,
    gate: &watch::Sender<bool>,
) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let theirs = tokio::time::timeout(LIMIT, Handshake::read(&mut sock))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake"))??;
    if theirs.info_hash != t.info_hash {
        return Err(io::Error::other("handshake for another torrent"));
    }
    wire::write_handshake(
        &mut sock,
        &Handshake {
            reserved: our_reserved(),
            info_hash: t.info_hash,
            peer_id: PEER_ID,
        },
    )
    .await?;
    log.lock().unwrap().handshakes += 1;
    let (rd, mut wr) = sock.into_split();
    // Messages from btfs through a channel, so waiting for them can time out safely;
    // the channel closes when btfs closes the connection.
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut rd = BufReader::new(rd);
        loop {
            match Message::read(&mut rd, 1 << 20).await {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let bitfield = Message::Bitfield(t.full_bitfield());
    match how {
        Misbehavior::Frame(_) | Misbehavior::FrameOverCap => {
            let len = match how {
                Misbehavior::Frame(len) => len,
                _ => wire::max_message_len(t.pieces()) + 1,
            };
            send(&mut wr, &[bitfield]).await?;
            let mut frame = len.to_be_bytes().to_vec();
            frame.push(7);
            frame.extend([0u8; 8]);
            wr.write_all(&frame).await?;
        }
        Misbehavior::Unrequested(count) => {
            send(&mut wr, &[bitfield]).await?;
            for k in 0..count {
                let index = k % t.pieces();
                let data = t.corrupt_block(index, 0, BLOCK_SIZE.min(t.piece_size(index)));
                send(
                    &mut wr,
                    &[Message::Piece {
                        index,
                        begin: 0,
                        data,
                    }],
                )
                .await?;
                log.lock().unwrap().blocks_sent += 1;
            }
        }
        Misbehavior::BadBitfield(delta) => {
            let mut b = t.full_bitfield();
            b.resize((b.len() as i64 + i64::from(delta)).max(0) as usize, 0xff);
            send(&mut wr, &[Message::Bitfield(b)]).await?;
        }
        Misbehavior::Corrupt | Misbehavior::CorruptPartial | Misbehavior::Stall => {
            send(&mut wr, &[bitfield, Message::Unchoke]).await?;
        }
    }
    if how == Misbehavior::CorruptPartial {
        // The first batch of requests: until they stop coming for a moment.
        let mut asked: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
        loop {
            let wait = if asked.is_empty() {
                LIMIT
            } else {
                Duration::from_millis(500)
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) => break,
                Ok(None) => return Ok(()),
                Ok(Some(Message::Request {
                    index,
                    begin,
                    length,
                })) => {
                    log.lock().unwrap().requests += 1;
                    asked.entry(index).or_default().push((begin, length));
                }
                Ok(Some(_)) => {}
            }
        }
        let whole = asked
            .iter()
            .rev()
            .find(|(i, blocks)| blocks.len() as u32 == t.piece_size(**i).div_ceil(BLOCK_SIZE))
            .map(|(i, _)| *i);
        let mut out = Vec::new();
        for (&index, blocks) in &asked {
            if Some(index) == whole {
                continue;
            }
            if let Some(&(begin, length)) = blocks.iter().find(|(b, _)| *b == 0) {
                if t.piece_size(index) > BLOCK_SIZE {
                    log.lock().unwrap().partial_pieces += 1;
                }
                out.push(Message::Piece {
                    index,
                    begin,
                    data: t.corrupt_block(index, begin, length),
                });
            }
        }
        if let Some(index) = whole {
            for &(begin, length) in &asked[&index] {
                out.push(Message::Piece {
                    index,
                    begin,
                    data: t.corrupt_block(index, begin, length),
                });
            }
        }
        log.lock().unwrap().blocks_sent += out.len() as u32;
        send(&mut wr, &out).await?;
    }
    while let Some(msg) = rx.recv().await {
        if let Message::Request {
            index,
            begin,
            length,
        } = msg
        {
            log.lock().unwrap().requests += 1;
            match how {
                Misbehavior::Corrupt => {
                    let data = t.corrupt_block(index, begin, length);
                    send(&mut wr, &[Message::Piece { index, begin, data }]).await?;
                    log.lock().unwrap().blocks_sent += 1;
                }
                Misbehavior::Stall => {
                    gate.send_replace(true);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The honest seeder behind a gate: a relay on 127.0.0.1 that holds each connection
/// until `gate` turns true (or [`GATE_LIMIT`] passes), then joins it to `upstream`.
struct Gate {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gate {
    fn start(
        rt: &tokio::runtime::Runtime,
        upstream: SocketAddr,
        gate: watch::Receiver<bool>,
    ) -> Gate {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the gate");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (mut gate, l) = (gate.clone(), l.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let opened = tokio::time::timeout(GATE_LIMIT, gate.wait_for(|open| *open))
                        .await
                        .is_ok_and(|r| r.is_ok());
                    l.lock().unwrap().push(format!(
                        "gate opened {} after {:?}",
                        if opened {
                            "by the hostile peer"
                        } else {
                            "by its time limit"
                        },
                        start.elapsed()
                    ));
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        l.lock().unwrap().push("cannot reach the seeder".into());
                        return;
                    };
                    let end = tokio::io::copy_bidirectional(&mut inbound, &mut up).await;
                    l.lock().unwrap().push(format!(
                        "relay ended after {:?}: {end:?} (bytes to the seeder, from it)",
                        start.elapsed()
                    ));
                });
            }
        });
        Gate { addr, log }
    }

    fn report(&self) -> String {
        format!("gate: {:?}", self.log.lock().unwrap())
    }
}

/// A running `btfs bittorrent download`, stdout and stderr in files; killed (by PID)
/// when dropped.
struct Download {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

struct Finished {
    status: i32,
    stdout: String,
    stderr: String,
    summary: Value,
}

impl Finished {
    fn n(&self, key: &str) -> u64 {
        self.summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary lacks {key}: {}", self.summary))
    }

    fn complete(&self) -> bool {
        self.summary["Complete"] == true
    }
}

impl Download {
    fn start(t: &Torrent, btfs_path: &Path, out: &Path, peers: &[SocketAddr]) -> Download {
        std::fs::create_dir_all(btfs_path).unwrap();
        let n = std::fs::read_dir(btfs_path).unwrap().count();
        let stdout = btfs_path.join(format!("stdout-{n}.txt"));
        let stderr = btfs_path.join(format!("stderr-{n}.txt"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_btfs"));
        cmd.args([
            "--json",
            "bittorrent",
            "download",
            "-t",
            s(&t.file),
            "-o",
            s(out),
            "--no-trackers",
            "--listen-ip",
            "127.0.0.1",
        ]);
        for p in peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        let child = cmd
            .env("BTFS_PATH", btfs_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start btfs");
        Download {
            child,
            stdout,
            stderr,
        }
    }

    /// SIGINT, as Ctrl-C would send.
    fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -INT {} failed", self.child.id());
    }

    /// Waits (at most [`LIMIT`]) for btfs to exit; kills it and fails the test with
    /// `context()` if it does not.
    fn finish(mut self, context: &dyn Fn() -> String) -> Finished {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "btfs did not finish within {LIMIT:?}\nstdout (last lines):\n{}\nstderr:\n{}\n{}",
                    tail(&read(&self.stdout), 6),
                    read(&self.stderr),
                    context()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (read(&self.stdout), read(&self.stderr));
        assert!(
            !stderr.contains("panicked"),
            "btfs panicked:\n{stderr}\n{}",
            context()
        );
        let last = stdout.lines().last().unwrap_or_default();
        let summary: Value = serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "the last stdout line is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}\n{}",
                context()
            )
        });
        assert_eq!(
            summary["Type"],
            "summary",
            "{stdout}\nstderr:\n{stderr}\n{}",
            context()
        );
        Finished {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
            summary,
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A torrent, its source and a libtorrent seeder for it.
struct Swarm {
    rt: tokio::runtime::Runtime,
    t: Arc<Torrent>,
    seeder: SocketAddr,
    _seeder: Daemon,
    tmp: tempfile::TempDir,
}

enum Content {
    /// `common::sample_dir`: several files, pieces across file boundaries.
    SampleDir,
    /// One file of this many bytes.
    File(usize),
}

impl Swarm {
    fn new(content: Content, piece_length: &str) -> Swarm {
        let tmp = tempfile::tempdir().unwrap();
        let src_root = tmp.path().join("src");
        let data_path = match content {
            Content::SampleDir => sample_dir(&src_root, "set"),
            Content::File(len) => {
                let p = src_root.join("big.bin");
                write(&p, &common::data(len, 42));
                p
            }
        };
        let file = tmp.path().join("t.torrent");
        btfs(&[
            "bittorrent",
            "create",
            s(&data_path),
            "-o",
            s(&file),
            "--piece-length",
            piece_length,
        ])
        .ok();
        let meta = Metainfo::from_bytes(&std::fs::read(&file).unwrap()).unwrap();
        let info_hash = meta.wire_info_hash();
        let content = stream(&meta, &src_root);
        let port = free_port();
        let seeder = lt_seed(&file, &src_root, port);
        Swarm {
            rt: runtime(),
            t: Arc::new(Torrent {
                file,
                meta,
                info_hash,
                src_root,
                content,
            }),
            seeder: ([127, 0, 0, 1], port).into(),
            _seeder: seeder,
            tmp,
        }
    }

    fn hostile(&self, how: Misbehavior) -> Hostile {
        Hostile::start(&self.rt, self.t.clone(), how)
    }

    fn gate(&self, hostile: &Hostile) -> Gate {
        Gate::start(&self.rt, self.seeder, hostile.gate.clone())
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// Downloads with one hostile peer and the gated honest seeder from scratch; checks
/// what every such run must show and returns the summary and what the peer saw.
fn download_next_to(
    how: Misbehavior,
    content: Content,
    piece_length: &str,
) -> (Finished, Arc<Mutex<Log>>, Swarm) {
    let swarm = Swarm::new(content, piece_length);
    let hostile = swarm.hostile(how);
    let gate = swarm.gate(&hostile);
    let (home, out) = (swarm.dir("home"), swarm.dir("out"));
    let context = || format!("{how:?}\n{}\n{}", hostile.report(), gate.report());
    let run = Download::start(&swarm.t, &home, &out, &[hostile.addr, gate.addr]).finish(&context);
    let ctx = format!(
        "summary: {}\nstderr: {}\n{}",
        run.summary,
        run.stderr,
        context()
    );
    assert_eq!(
        hostile.log.lock().unwrap().handshakes,
        1,
        "btfs handshook with the hostile peer once\n{ctx}"
    );
    assert!(
        run.complete() && run.status == 0,
        "the download completes from the honest seeder (exit {})\n{ctx}",
        run.status
    );
    assert_eq!(run.n("PiecesHave"), u64::from(swarm.t.pieces()), "{ctx}");
    assert_same_files(&swarm.t, &out, &ctx);
    (run, hostile.log, swarm)
}

/// Asserts btfs banned the peer for breaking the protocol, with no data hash-checked.
fn assert_banned_for_protocol(how: Misbehavior, content: Content) {
    let (run, log, _swarm) = download_next_to(how, content, "16KiB");
    let ctx = format!(
        "{how:?}: summary {}\n{:?}",
        run.summary,
        log.lock().unwrap()
    );
    assert!(run.n("Banned") >= 1, "the hostile peer is banned\n{ctx}");
    assert_eq!(
        run.n("HashFailures"),
        0,
        "nothing it sent was taken as a block\n{ctx}"
    );
}

#[test]
fn corrupt_data_is_never_kept_and_the_peer_is_banned() {
    let swarm = Swarm::new(Content::SampleDir, "16KiB");
    let t = &swarm.t;
    let (home, out) = (swarm.dir("home"), swarm.dir("out"));

    // 1. The corrupting peer alone: btfs asks it for blocks (it is the only peer),
    //    hash-checks the pieces, bans it; then Ctrl-C.
    let hostile = swarm.hostile(Misbehavior::Corrupt);
    let run = Download::start(t, &home, &out, &[hostile.addr]);
    let deadline = Instant::now() + LIMIT;
    while !hostile.log.lock().unwrap().dropped && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = hostile.log.lock().unwrap().dropped;
    run.interrupt();
    let context = || hostile.report();
    let first = run.finish(&context);
    let ctx = format!(
        "summary: {}\nstderr: {}\n{}",
        first.summary,
        first.stderr,
        context()
    );
    assert!(
        dropped,
        "btfs dropped the corrupting peer within {LIMIT:?}\n{ctx}"
    );
    assert!(
        hostile.log.lock().unwrap().blocks_sent >= 1,
        "the peer was asked for blocks\n{ctx}"
    );
    assert_ne!(first.status, 0, "an interrupted download is not a success");
    assert!(!first.complete(), "{ctx}");
    assert!(first.n("HashFailures") >= 1, "{ctx}");
    assert!(
        first.n("Banned") >= 1,
        "the sole contributor of a bad piece is banned\n{ctx}"
    );
    assert_eq!(
        first.n("PiecesHave"),
        0,
        "no corrupt piece is verified\n{ctx}"
    );
    assert_eq!(
        pieces_on_disk(t, &out),
        0,
        "no piece was written to disk\n{ctx}"
    );
    let resume = home
        .join("bittorrent/resume")
        .join(format!("{}.resume", t.info_hash));
    let r = ResumeData::load(&resume)
        .unwrap_or_else(|| panic!("no resume data at {}\n{ctx}", resume.display()));
    assert_eq!(
        r.have.count(),
        0,
        "resume data records no piece as verified\n{ctx}"
    );

    // 2. Run again (same BTFS_PATH and folder): a new corrupting peer first, then the
    //    honest seeder behind the gate. It completes with the right bytes.
    let hostile = swarm.hostile(Misbehavior::Corrupt);
    let gate = swarm.gate(&hostile);
    let context = || format!("{}\n{}", hostile.report(), gate.report());
    let second = Download::start(t, &home, &out, &[hostile.addr, gate.addr]).finish(&context);
    let ctx = format!(
        "summary: {}\nstderr: {}\n{}",
        second.summary,
        second.stderr,
        context()
    );
    assert!(second.complete() && second.status == 0, "{ctx}");
    assert!(
        hostile.log.lock().unwrap().blocks_sent >= 1,
        "the peer was asked for blocks\n{ctx}"
    );
    assert!(second.n("HashFailures") >= 1, "{ctx}");
    assert!(second.n("Banned") >= 1, "{ctx}");
    assert!(second.n("Wasted") >= 1, "{ctx}");
    assert_eq!(second.n("PiecesHave"), u64::from(t.pieces()), "{ctx}");
    assert_same_files(t, &out, &ctx);
    assert_eq!(pieces_on_disk(t, &out), t.pieces());

    // 3. Once more, the honest seeder alone: everything is already verified.
    let third = Download::start(t, &home, &out, &[swarm.seeder]).finish(&|| String::new());
    assert!(third.complete() && third.status == 0, "{}", third.stdout);
    assert_same_files(t, &out, "third run");
}

#[test]
fn corrupt_first_blocks_left_by_a_banned_peer_do_not_cost_the_honest_seeder() {
    // 64 KiB pieces of four blocks: the peer leaves many started pieces holding one
    // corrupt block each when it is banned; finishing them must not end with the
    // honest seeder banned and the download stuck.
    let (run, log, _swarm) =
        download_next_to(Misbehavior::CorruptPartial, Content::File(2 << 20), "64KiB");
    let ctx = format!("summary {}\n{:?}", run.summary, log.lock().unwrap());
    assert!(
        log.lock().unwrap().partial_pieces >= 3,
        "the peer left several partial pieces\n{ctx}"
    );
    assert!(run.n("HashFailures") >= 1, "{ctx}");
    assert!(run.n("Banned") >= 1, "{ctx}");
}

#[test]
fn four_gib_length_prefix_gets_the_peer_banned() {
    assert_banned_for_protocol(Misbehavior::Frame(u32::MAX), Content::SampleDir);
}

#[test]
fn length_prefix_over_one_mib_gets_the_peer_banned() {
    assert_banned_for_protocol(Misbehavior::Frame((1 << 20) + 1), Content::SampleDir);
}

#[test]
fn length_prefix_just_over_the_cap_gets_the_peer_banned() {
    // For a torrent this small the cap is a 128 KiB block plus its header.
    assert_banned_for_protocol(Misbehavior::FrameOverCap, Content::SampleDir);
}

#[test]
fn blocks_nobody_requested_get_the_peer_banned() {
    assert_banned_for_protocol(Misbehavior::Unrequested(200), Content::SampleDir);
}

#[test]
fn bitfield_too_long_gets_the_peer_banned() {
    assert_banned_for_protocol(Misbehavior::BadBitfield(1), Content::SampleDir);
}

#[test]
fn bitfield_too_short_gets_the_peer_banned() {
    assert_banned_for_protocol(Misbehavior::BadBitfield(-1), Content::SampleDir);
}

#[test]
fn stalling_peer_does_not_stop_the_download() {
    let (run, log, _swarm) = download_next_to(Misbehavior::Stall, Content::SampleDir, "16KiB");
    let ctx = format!("summary {}\n{:?}", run.summary, log.lock().unwrap());
    assert!(
        log.lock().unwrap().requests >= 1,
        "btfs asked the stalling peer for blocks\n{ctx}"
    );
    assert_eq!(log.lock().unwrap().blocks_sent, 0);
    assert_eq!(run.n("HashFailures"), 0, "{ctx}");
}

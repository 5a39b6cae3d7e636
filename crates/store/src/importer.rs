//! UnixFS import with `btfs add`'s defaults: fixed-size chunks (256 KiB), a balanced DAG
//! of at most 174 links per node, DAG-PB leaves and CIDv0 — the same CIDs kubo gives.
//!
//! Leaves and inner nodes may go to different sinks ([`ImportOptions::import_file_split`]):
//! `btfs add --nocopy` drops the leaf blocks (they stay in the file, recorded by offset
//! in the filestore) and writes only the inner nodes. Chunks are hashed on all cores
//! either way.

use crate::cid::{put_varint, Cid, DAG_PB, RAW};
use crate::dagpb::{Link, PbNode, UnixFs};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

pub const DEFAULT_CHUNK: usize = 256 * 1024;
pub const MAX_LINKS: usize = 174;
/// Chunks larger than this make blocks other nodes refuse (kubo's limit too).
pub const MAX_CHUNK: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    pub cid_version: u8,
    pub raw_leaves: bool,
    pub chunk_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            cid_version: 0,
            raw_leaves: false,
            chunk_size: DEFAULT_CHUNK,
        }
    }
}

/// A node of an imported DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub cid: Cid,
    /// Bytes of file content below this node.
    pub size: u64,
    /// Cumulative size of the blocks (what a parent's link records).
    pub tsize: u64,
}

/// A leaf of an imported file: its node and where its bytes start in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub node: Node,
    pub offset: u64,
}

/// Where new blocks go.
pub trait BlockSink: Sync {
    fn put(&self, cid: &Cid, block: &[u8]) -> io::Result<()>;
}

/// `--only-hash`: blocks are computed and dropped.
pub struct Discard;

impl BlockSink for Discard {
    fn put(&self, _: &Cid, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

impl BlockSink for crate::blockstore::Blockstore {
    fn put(&self, cid: &Cid, block: &[u8]) -> io::Result<()> {
        crate::blockstore::Blockstore::put(self, cid, block).map(|_| ())
    }
}

impl ImportOptions {
    fn node_cid(&self, block: &[u8]) -> Cid {
        Cid::hash(self.cid_version, DAG_PB, block)
    }

    /// Stores the leaf for `chunk`.
    pub fn put_leaf(&self, chunk: &[u8], sink: &dyn BlockSink) -> io::Result<Node> {
        self.put_leaf_with(chunk, sink, &mut Vec::new())
    }

    /// [`Self::put_leaf`], building the block in `scratch` (reused across calls).
    pub fn put_leaf_with(
        &self,
        chunk: &[u8],
        sink: &dyn BlockSink,
        scratch: &mut Vec<u8>,
    ) -> io::Result<Node> {
        let (cid, block) = if self.raw_leaves {
            (Cid::hash(1, RAW, chunk), chunk)
        } else {
            scratch.clear();
            file_leaf_block_into(chunk, scratch);
            (self.node_cid(scratch), &scratch[..])
        };
        sink.put(&cid, block)?;
        Ok(Node {
            cid,
            size: chunk.len() as u64,
            tsize: block.len() as u64,
        })
    }

    /// Builds the balanced tree over `leaves` (in file order) and returns its root.
    /// A single leaf is its own root; no leaves is the empty file.
    pub fn file_root(&self, leaves: Vec<Node>, sink: &dyn BlockSink) -> io::Result<Node> {
        let mut level = leaves;
        if level.is_empty() {
            level.push(self.put_leaf(&[], sink)?);
        }
        while level.len() > 1 {
            let mut parents = Vec::with_capacity(level.len().div_ceil(MAX_LINKS));
            for group in level.chunks(MAX_LINKS) {
                parents.push(self.file_node(group, sink)?);
            }
            level = parents;
        }
        Ok(level[0])
    }

    fn file_node(&self, children: &[Node], sink: &dyn BlockSink) -> io::Result<Node> {
        let size: u64 = children.iter().map(|c| c.size).sum();
        let node = PbNode {
            links: children
                .iter()
                .map(|c| Link {
                    cid: c.cid,
                    name: String::new(),
                    tsize: c.tsize,
                })
                .collect(),
            data: Some(
                UnixFs::file(None, size, children.iter().map(|c| c.size).collect()).encode(),
            ),
        };
        let block = node.encode();
        let cid = self.node_cid(&block);
        sink.put(&cid, &block)?;
        Ok(Node {
            cid,
            size,
            tsize: block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
        })
    }

    /// A UnixFS directory over named entries (sorted by name bytes, as DAG-PB requires).
    pub fn directory(
        &self,
        mut entries: Vec<(String, Node)>,
        sink: &dyn BlockSink,
    ) -> io::Result<Node> {
        if crate::hamt::needs_sharding(&entries) {
            return crate::hamt::sharded_directory(self, entries, sink);
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let node = PbNode {
            links: entries
                .iter()
                .map(|(name, n)| Link {
                    cid: n.cid,
                    name: name.clone(),
                    tsize: n.tsize,
                })
                .collect(),
            data: Some(UnixFs::directory().encode()),
        };
        let block = node.encode();
        if block.len() as u64 > crate::blockstore::MAX_BLOCK {
            return Err(io::Error::other(format!(
                "a folder of {} entries needs a HAMT-sharded directory, which this build does not make yet",
                entries.len()
            )));
        }
        let cid = self.node_cid(&block);
        sink.put(&cid, &block)?;
        Ok(Node {
            cid,
            size: entries.iter().map(|(_, n)| n.size).sum(),
            tsize: block.len() as u64 + entries.iter().map(|(_, n)| n.tsize).sum::<u64>(),
        })
    }

    pub fn symlink(&self, target: &[u8], sink: &dyn BlockSink) -> io::Result<Node> {
        let block = PbNode {
            links: Vec::new(),
            data: Some(UnixFs::symlink(target).encode()),
        }
        .encode();
        let cid = self.node_cid(&block);
        sink.put(&cid, &block)?;
        Ok(Node {
            cid,
            size: 0,
            tsize: block.len() as u64,
        })
    }

    /// Imports a stream: chunks are hashed and stored on all cores, in order of the
    /// file. `progress` gets the bytes read so far.
    pub fn import_reader(
        &self,
        reader: impl Read,
        sink: &dyn BlockSink,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<Node> {
        let leaves = self.import_leaves(reader, sink, progress)?;
        self.file_root(leaves, sink)
    }

    /// The leaves of a stream, in order: chunks hashed (and put into `sink`) on all cores.
    fn import_leaves(
        &self,
        mut reader: impl Read,
        sink: &dyn BlockSink,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<Vec<Node>> {
        let chunk = self.chunk_size;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let results: Mutex<Vec<(usize, Node)>> = Mutex::new(Vec::new());
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(workers * 2);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
        let failed: Mutex<Option<io::Error>> = Mutex::new(None);
        std::thread::scope(|s| -> io::Result<()> {
            for _ in 0..workers {
                let (rx, pool, results, failed) =
                    (work_rx.clone(), pool_tx.clone(), &results, &failed);
                s.spawn(move || {
                    let mut scratch = Vec::new();
                    loop {
                        let job = rx.lock().expect("work queue").recv();
                        let Ok((i, buf)) = job else { break };
                        match self.put_leaf_with(&buf, sink, &mut scratch) {
                            Ok(n) => results.lock().expect("results").push((i, n)),
                            Err(e) => {
                                failed.lock().expect("errors").get_or_insert(e);
                            }
                        }
                        let _ = pool.send(buf);
                    }
                });
            }
            drop(pool_tx);
            let mut total = 0u64;
            let mut i = 0;
            loop {
                if failed.lock().expect("errors").is_some() {
                    break;
                }
                let mut buf = pool_rx.try_recv().unwrap_or_default();
                let n = read_chunk(&mut reader, &mut buf, chunk)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                progress(total);
                if work_tx.send((i, buf)).is_err() {
                    break;
                }
                i += 1;
                if n < chunk {
                    break;
                }
            }
            drop(work_tx);
            Ok(())
        })?;
        if let Some(e) = failed.into_inner().expect("errors") {
            return Err(e);
        }
        let mut leaves = results.into_inner().expect("results");
        leaves.sort_unstable_by_key(|(i, _)| *i);
        Ok(leaves.into_iter().map(|(_, n)| n).collect())
    }

    pub fn import_file(
        &self,
        path: &Path,
        sink: &dyn BlockSink,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<Node> {
        Ok(self.import_file_split(path, sink, sink, progress)?.0)
    }

    /// Imports a file with its leaf blocks put into `leaves` and its inner nodes into
    /// `nodes`; returns the root and the leaves in file order with their offsets (for
    /// `add --nocopy`: `leaves` is [`Discard`] and the leaves become filestore
    /// references). The empty file has no leaf to refer to: its one block (which holds
    /// no bytes of the file) goes to `nodes`. A single-chunk file's root is its leaf.
    pub fn import_file_split(
        &self,
        path: &Path,
        leaves: &dyn BlockSink,
        nodes: &dyn BlockSink,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<(Node, Vec<Leaf>)> {
        // Chunk-sized reads go straight into the chunk buffers; no BufReader copy.
        let mut f = open_regular(path)?;
        let len = f.metadata()?.len();
        let mut found = None;
        if len <= self.chunk_size as u64 {
            // One chunk: no hashing threads for it (folders of many small files).
            let mut buf = Vec::new();
            read_chunk(&mut f, &mut buf, len as usize)?;
            progress(buf.len() as u64);
            let mut rest = [0u8; 1];
            if f.read(&mut rest)? == 0 {
                found = Some(if buf.is_empty() {
                    Vec::new()
                } else {
                    vec![self.put_leaf(&buf, leaves)?]
                });
            } else {
                // It grew while being read: import it the general way from the start.
                f = open_regular(path)?;
            }
        }
        let found = match found {
            Some(l) => l,
            None => self.import_leaves(f, leaves, progress)?,
        };
        let mut offset = 0u64;
        let placed: Vec<Leaf> = found
            .iter()
            .map(|n| {
                let l = Leaf { node: *n, offset };
                offset += n.size;
                l
            })
            .collect();
        let root = self.file_root(found, nodes)?;
        Ok((root, placed))
    }
}

/// Opens a file to import: never through a final link, never blocking on a FIFO swapped
/// in after the caller looked, and a regular file only.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// Fills `buf` with up to `chunk` bytes (fewer only at the end of the stream).
fn read_chunk(reader: &mut impl Read, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
    buf.resize(chunk, 0);
    let mut n = 0;
    while n < chunk {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(n)
}

#[cfg(test)]
fn file_leaf_block(chunk: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    file_leaf_block_into(chunk, &mut block);
    block
}

/// The bytes around an `n`-byte chunk in its UnixFS file leaf block:
/// `PbNode { Data: UnixFs { Type: File, Data: chunk, filesize } }` is `head ++ chunk ++ tail`.
pub(crate) fn file_leaf_frame(n: u64) -> (Vec<u8>, Vec<u8>) {
    let mut inner_head = Vec::with_capacity(16);
    inner_head.extend_from_slice(&[0x08, 0x02]);
    if n > 0 {
        inner_head.push(0x12);
        put_varint(&mut inner_head, n);
    }
    let mut tail = vec![0x18];
    put_varint(&mut tail, n);
    let inner_len = inner_head.len() as u64 + n + tail.len() as u64;
    let mut head = vec![0x0a];
    put_varint(&mut head, inner_len);
    head.extend_from_slice(&inner_head);
    (head, tail)
}

/// The length of the UnixFS file leaf block of an `n`-byte chunk.
pub(crate) fn file_leaf_block_len(n: u64) -> u64 {
    let (head, tail) = file_leaf_frame(n);
    head.len() as u64 + n + tail.len() as u64
}

/// The UnixFS file leaf block of `chunk`, written in one pass.
pub(crate) fn file_leaf_block_into(chunk: &[u8], block: &mut Vec<u8>) {
    let (head, tail) = file_leaf_frame(chunk.len() as u64);
    block.reserve(head.len() + chunk.len() + tail.len());
    block.extend_from_slice(&head);
    block.extend_from_slice(chunk);
    block.extend_from_slice(&tail);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid_of(data: &[u8], opts: ImportOptions) -> String {
        opts.import_reader(data, &Discard, &mut |_| {})
            .unwrap()
            .cid
            .to_string()
    }

    #[test]
    fn anchors() {
        let o = ImportOptions::default();
        assert_eq!(
            cid_of(b"hello\n", o),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
        assert_eq!(
            cid_of(b"", o),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        assert_eq!(
            cid_of(b"hello world\n", o),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        );
        assert_eq!(
            cid_of(&vec![0u8; 64 << 20], o),
            "QmfKyrN38oa8CrSYirAYZq4X4Hvq73JtVkgSgeVzHCkAuT"
        );
    }

    /// Counts what a sink is given.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl BlockSink for Count {
        fn put(&self, _: &Cid, _: &[u8]) -> io::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn split_import_gives_the_same_root_and_the_leaves_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        for (len, raw) in [(0usize, false), (5, true), (1000, false), (700_001, true)] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let o = ImportOptions {
                raw_leaves: raw,
                chunk_size: 262_144,
                ..ImportOptions::default()
            };
            let whole = o.import_file(&path, &Discard, &mut |_| {}).unwrap();
            let (leaves, nodes) = (Count::default(), Count::default());
            let (root, placed) = o
                .import_file_split(&path, &leaves, &nodes, &mut |_| {})
                .unwrap();
            assert_eq!(root, whole, "{len}");
            assert_eq!(placed.len(), len.div_ceil(262_144), "{len}");
            assert_eq!(leaves.0.into_inner(), placed.len());
            // Inner nodes only (the empty file's one block too); a one-leaf file has none.
            let inner = match len {
                0 => 1,
                l if l <= 262_144 => 0,
                _ => 1,
            };
            assert_eq!(nodes.0.into_inner(), inner, "{len}");
            for l in &placed {
                let bytes = &data[l.offset as usize..(l.offset + l.node.size) as usize];
                let again = o.put_leaf(bytes, &Discard).unwrap();
                assert_eq!(again, l.node);
            }
            if len > 0 && len <= 262_144 {
                assert_eq!(placed[0].node, root);
            }
        }
    }

    #[test]
    fn leaf_block_matches_generic_encoding() {
        for chunk in [&b""[..], b"x", &[7u8; 300][..]] {
            let generic = PbNode {
                links: vec![],
                data: Some(
                    UnixFs::file(
                        (!chunk.is_empty()).then_some(chunk),
                        chunk.len() as u64,
                        vec![],
                    )
                    .encode(),
                ),
            }
            .encode();
            assert_eq!(file_leaf_block(chunk), generic);
        }
    }
}

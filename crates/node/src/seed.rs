//! Seeding content that is already in the BTFS store: a torrent made from a UnixFS DAG
//! (deterministic: same CID and name, same infohash) and a piece storage that reads
//! straight from the blockstore, with no export to files.

use bittorrent::create::{assemble, auto_piece_length, CreateOptions};
use bittorrent::geometry::PieceIndex;
use bittorrent::storage::Storage;
use bittorrent::Metainfo;
use sha1::{Digest, Sha1};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use store::dag::{Kind, Leaf, RangeReader};
use store::{Blockstore, Cid, Dag, DagError};

/// A file of a torrent made from a DAG.
#[derive(Debug, Clone)]
pub struct DagFile {
    pub components: Vec<String>,
    pub cid: Cid,
    pub size: u64,
}

/// Files of the DAG under `root` in torrent order (a single file: its own entry).
/// Directories are walked in link order; symbolic links and empty files are left out.
pub fn dag_files(dag: &Dag, root: &Cid, name: &str) -> Result<(Vec<DagFile>, bool), DagError> {
    let block = dag.block(root)?;
    if block.kind() == Kind::File {
        let file = DagFile {
            components: vec![name.to_owned()],
            cid: *root,
            size: block.file_size(),
        };
        return Ok((vec![file], true));
    }
    let mut out = Vec::new();
    let mut stack = vec![(*root, Vec::<String>::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        if depth > 64 {
            return Err(DagError::Inconsistent(dir));
        }
        let mut subdirs = Vec::new();
        for e in dag.list(&dir)? {
            let mut path = prefix.clone();
            path.push(e.name.clone());
            match e.kind {
                Kind::File if e.size > 0 => out.push(DagFile {
                    components: path,
                    cid: e.cid,
                    size: e.size,
                }),
                Kind::Directory => subdirs.push((e.cid, path, depth + 1)),
                _ => {}
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort_by(|a, b| a.components.cmp(&b.components));
    Ok((out, false))
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error("{0} holds no file content to share")]
    Empty(Cid),
    #[error(transparent)]
    Create(#[from] bittorrent::create::CreateError),
}

/// A v1 torrent of the content under `root`, hashed from the blockstore.
pub fn torrent_of_cid(
    dag: &Dag,
    root: &Cid,
    name: &str,
    opts: &CreateOptions,
) -> Result<(Vec<u8>, Metainfo, Vec<DagFile>), SeedError> {
    let (files, single) = dag_files(dag, root, name)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    if total == 0 {
        return Err(SeedError::Empty(*root));
    }
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    let mut pieces = Vec::with_capacity(total.div_ceil(piece_length) as usize * 20);
    let mut hasher = Sha1::new();
    let mut in_piece = 0u64;
    let mut buf = Vec::new();
    for f in &files {
        let mut reader = RangeReader::new(f.cid, 0, f.size);
        while let Some(range) = reader.next_into(dag, &mut buf)? {
            let mut data = &buf[range];
            while !data.is_empty() {
                let take = ((piece_length - in_piece) as usize).min(data.len());
                hasher.update(&data[..take]);
                in_piece += take as u64;
                data = &data[take..];
                if in_piece == piece_length {
                    pieces.extend_from_slice(&hasher.finalize_reset());
                    in_piece = 0;
                }
            }
        }
    }
    if in_piece > 0 {
        pieces.extend_from_slice(&hasher.finalize_reset());
    }
    let listed: Vec<(Vec<String>, u64)> = files
        .iter()
        .map(|f| (f.components.clone(), f.size))
        .collect();
    let (bytes, meta) = assemble(name, single, &listed, piece_length, pieces, opts)?;
    Ok((bytes, meta, files))
}

/// Pieces read from leaf blocks of the store. Read-only: a seed never writes.
pub struct BlockStorage {
    blocks: Arc<Blockstore>,
    /// Every leaf of every file, by offset in the torrent's byte stream.
    leaves: Vec<(u64, Leaf)>,
    piece_length: u64,
    /// Recently read leaves (a peer asks for 16 KiB at a time, a leaf holds 256 KiB).
    cache: Mutex<VecDeque<(Cid, Arc<LeafContent>)>>,
    /// Leaf blocks read from disk so far.
    pub block_reads: AtomicU64,
}

const CACHE_LEAVES: usize = 32;

/// A leaf block and where its file content sits in it.
type LeafContent = (Vec<u8>, std::ops::Range<usize>);

impl BlockStorage {
    pub fn new(
        blocks: Arc<Blockstore>,
        files: &[DagFile],
        piece_length: u64,
    ) -> Result<BlockStorage, DagError> {
        let dag = Dag { blocks: &blocks };
        let mut leaves = Vec::new();
        let mut offset = 0u64;
        for f in files {
            // The leaves must tile the file exactly, or reads would fall between them.
            let mut next = 0u64;
            for l in dag.leaves(&f.cid)? {
                if l.offset != next {
                    return Err(DagError::Inconsistent(f.cid));
                }
                next = l.offset + l.size;
                if l.size > 0 {
                    leaves.push((offset + l.offset, l));
                }
            }
            if next != f.size {
                return Err(DagError::Inconsistent(f.cid));
            }
            offset += f.size;
        }
        Ok(BlockStorage {
            blocks,
            leaves,
            piece_length,
            cache: Mutex::new(VecDeque::new()),
            block_reads: AtomicU64::new(0),
        })
    }

    fn leaf_content(&self, leaf: &Leaf) -> io::Result<Arc<LeafContent>> {
        if let Some((_, c)) = self
            .cache
            .lock()
            .expect("cache")
            .iter()
            .find(|(c, _)| *c == leaf.cid)
        {
            return Ok(c.clone());
        }
        let mut buf = Vec::new();
        if !self.blocks.get_into(&leaf.cid, &mut buf)? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("block {} is not in the store", leaf.cid),
            ));
        }
        self.block_reads.fetch_add(1, Ordering::Relaxed);
        let range = if leaf.cid.codec() == store::cid::RAW {
            Some(0..buf.len())
        } else {
            store::dagpb::leaf_content_range(&buf)
        };
        let range = range
            .filter(|r| r.len() as u64 == leaf.size)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "block {} is not the leaf its parent says",
                    leaf.cid
                ))
            })?;
        let entry = Arc::new((buf, range));
        let mut cache = self.cache.lock().expect("cache");
        if cache.len() >= CACHE_LEAVES {
            cache.pop_front();
        }
        cache.push_back((leaf.cid, entry.clone()));
        Ok(entry)
    }
}

impl Storage for BlockStorage {
    fn write_piece(&self, _: PieceIndex, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "content seeded from the BTFS store is read-only",
        ))
    }

    fn read_at(&self, piece: PieceIndex, offset: u32, buf: &mut [u8]) -> io::Result<()> {
        let mut pos = u64::from(piece.get()) * self.piece_length + u64::from(offset);
        let mut done = 0;
        while done < buf.len() {
            let i = self.leaves.partition_point(|(o, l)| o + l.size <= pos);
            let Some((start, leaf)) = self.leaves.get(i) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the content",
                ));
            };
            let content = self.leaf_content(leaf)?;
            let (data, range) = (&content.0, &content.1);
            let within = (pos - start) as usize;
            let n = (range.len() - within).min(buf.len() - done);
            buf[done..done + n]
                .copy_from_slice(&data[range.start + within..range.start + within + n]);
            done += n;
            pos += n as u64;
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

//! Reading UnixFS DAGs back: path resolution, directory listings and byte ranges of
//! files, one block at a time.

use crate::blockstore::Blockstore;
use crate::cid::{Cid, RAW};
use crate::dagpb::{DataType, DecodeError, Link, PbNode, UnixFs};

/// Deepest file tree followed (a 174-ary tree of depth 12 holds far more than 2^64 bytes).
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("{0} is not in the local store")]
    NotFound(Cid),
    #[error("no link named {name:?} under {parent}")]
    NoSuchName { parent: Cid, name: String },
    #[error("{0} is not a directory")]
    NotDirectory(Cid),
    #[error("{0} is not a file")]
    NotFile(Cid),
    #[error("{cid}: {source}")]
    Decode { cid: Cid, source: DecodeError },
    #[error("{0}: the file tree is inconsistent (sizes do not add up or it is too deep)")]
    Inconsistent(Cid),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink(Vec<u8>),
}

/// A decoded block.
#[derive(Debug)]
pub enum Block {
    Raw(Vec<u8>),
    Node(PbNode, UnixFs),
}

impl Block {
    pub fn kind(&self) -> Kind {
        match self {
            Block::Raw(_) => Kind::File,
            Block::Node(_, u) => match u.kind {
                DataType::Directory | DataType::HamtShard => Kind::Directory,
                DataType::Symlink => Kind::Symlink(u.data.clone().unwrap_or_default()),
                _ => Kind::File,
            },
        }
    }

    /// File content size (0 for directories and symlinks).
    pub fn file_size(&self) -> u64 {
        match self {
            Block::Raw(b) => b.len() as u64,
            Block::Node(_, u) if matches!(u.kind, DataType::File | DataType::Raw) => u
                .filesize
                .unwrap_or_else(|| u.data.as_ref().map_or(0, |d| d.len() as u64)),
            Block::Node(..) => 0,
        }
    }

    /// The content this block holds itself (before its children).
    pub fn own_data(&self) -> &[u8] {
        match self {
            Block::Raw(b) => b,
            Block::Node(_, u) => u.data.as_deref().unwrap_or_default(),
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub cid: Cid,
    pub kind: Kind,
    pub size: u64,
}

/// A piece of a file's content: bytes `start..end` of the content below `cid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub cid: Cid,
    pub start: u64,
    pub end: u64,
}

pub struct Dag<'a> {
    pub blocks: &'a Blockstore,
}

/// A leaf block of a file and the bytes `offset..offset + size` of the file it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub cid: Cid,
    pub offset: u64,
    pub size: u64,
}

/// A DAG-PB leaf holds its content plus at most this many bytes of framing.
const LEAF_OVERHEAD: u64 = 24;

/// Reads bytes `start..end` of a file, each block once, descending into only the parts
/// of the tree the range covers. It holds no reference to the store, so it can move
/// between threads between blocks.
pub struct RangeReader {
    /// Parts still to read, the next on top, with their depth in the tree.
    stack: Vec<(Segment, usize)>,
}

impl RangeReader {
    pub fn new(file: Cid, start: u64, end: u64) -> RangeReader {
        let mut stack = Vec::new();
        if start < end {
            stack.push((
                Segment {
                    cid: file,
                    start,
                    end,
                },
                0,
            ));
        }
        RangeReader { stack }
    }

    /// Reads the next block holding content of the range into `buf` (reused across
    /// calls) and returns where in `buf` that content is; `None` at the end.
    pub fn next_into(
        &mut self,
        dag: &Dag,
        buf: &mut Vec<u8>,
    ) -> Result<Option<std::ops::Range<usize>>, DagError> {
        while let Some((seg, depth)) = self.stack.pop() {
            if depth > MAX_DEPTH {
                return Err(DagError::Inconsistent(seg.cid));
            }
            if !dag.blocks.get_into(&seg.cid, buf)? {
                return Err(DagError::NotFound(seg.cid));
            }
            let content = if seg.cid.codec() == RAW {
                Some(0..buf.len())
            } else {
                crate::dagpb::leaf_content_range(buf)
            };
            let (a, b) = (seg.start as usize, seg.end as usize);
            if let Some(r) = content {
                if a >= b || b > r.len() {
                    return Err(DagError::Inconsistent(seg.cid));
                }
                return Ok(Some(r.start + a..r.start + b));
            }
            // An inner node: its own data first (rare), then the children the range covers.
            let decode = |source| DagError::Decode {
                cid: seg.cid,
                source,
            };
            let node = PbNode::decode(buf).map_err(decode)?;
            let u = node.unixfs().map_err(decode)?;
            if !matches!(u.kind, DataType::File | DataType::Raw)
                || node.links.len() != u.blocksizes.len()
            {
                return Err(DagError::Inconsistent(seg.cid));
            }
            let own = u.data.as_ref().map_or(0, |d| d.len() as u64);
            let mut offset = own;
            let mut children = Vec::new();
            for (link, &size) in node.links.iter().zip(&u.blocksizes) {
                let (lo, hi) = (offset, offset.saturating_add(size));
                offset = hi;
                if hi <= seg.start || lo >= seg.end {
                    continue;
                }
                children.push(Segment {
                    cid: link.cid,
                    start: seg.start.saturating_sub(lo),
                    end: seg.end.min(hi) - lo,
                });
            }
            if seg.end > offset {
                return Err(DagError::Inconsistent(seg.cid));
            }
            dag.blocks
                .prefetch(&children.iter().map(|c| c.cid).collect::<Vec<_>>())?;
            self.stack
                .extend(children.into_iter().rev().map(|c| (c, depth + 1)));
            if seg.start < own {
                let data = u.data.unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(&data[a..b.min(own as usize)]);
                return Ok(Some(0..buf.len()));
            }
        }
        Ok(None)
    }
}

impl Dag<'_> {
    pub fn block(&self, cid: &Cid) -> Result<Block, DagError> {
        let bytes = self.blocks.get(cid)?.ok_or(DagError::NotFound(*cid))?;
        if cid.codec() == RAW {
            return Ok(Block::Raw(bytes));
        }
        let decode = |source| DagError::Decode { cid: *cid, source };
        let node = PbNode::decode(&bytes).map_err(decode)?;
        let u = node.unixfs().map_err(decode)?;
        Ok(Block::Node(node, u))
    }

    /// Follows `path` (names separated by `/`) from `root`.
    pub fn resolve(&self, root: Cid, path: &[&str]) -> Result<Cid, DagError> {
        let mut cid = root;
        for name in path.iter().filter(|n| !n.is_empty()) {
            let block = self.block(&cid)?;
            let links = self.dir_links(&cid, &block)?;
            cid = links
                .iter()
                .find(|l| l.name == *name)
                .map(|l| l.cid)
                .ok_or_else(|| DagError::NoSuchName {
                    parent: cid,
                    name: name.to_string(),
                })?;
        }
        Ok(cid)
    }

    /// The entries of a directory: its links, or for a HAMT-sharded one the entries of
    /// every shard with their slot prefixes taken off.
    fn dir_links(&self, cid: &Cid, block: &Block) -> Result<Vec<Link>, DagError> {
        match block {
            Block::Node(n, u) if u.kind == DataType::Directory => Ok(n.links.clone()),
            Block::Node(n, u) if u.kind == DataType::HamtShard => {
                let mut out = Vec::new();
                self.shard_entries(n, 0, &mut out)?;
                out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
                Ok(out)
            }
            _ => Err(DagError::NotDirectory(*cid)),
        }
    }

    fn shard_entries(
        &self,
        shard: &PbNode,
        depth: usize,
        out: &mut Vec<Link>,
    ) -> Result<(), DagError> {
        for l in &shard.links {
            let (prefix, name) = (l.name.get(..2), l.name.get(2..).unwrap_or_default());
            if prefix.is_none_or(|p| !p.bytes().all(|c| c.is_ascii_hexdigit())) {
                return Err(DagError::Inconsistent(l.cid));
            }
            if name.is_empty() {
                // A sub-shard.
                if depth >= 8 {
                    return Err(DagError::Inconsistent(l.cid));
                }
                match self.block(&l.cid)? {
                    Block::Node(n, u) if u.kind == DataType::HamtShard => {
                        self.shard_entries(&n, depth + 1, out)?
                    }
                    _ => return Err(DagError::Inconsistent(l.cid)),
                }
            } else {
                out.push(Link {
                    cid: l.cid,
                    name: name.to_owned(),
                    tsize: l.tsize,
                });
            }
        }
        Ok(())
    }

    /// The links of a directory (names and CIDs, no child read).
    pub fn links(&self, dir: &Cid) -> Result<Vec<Link>, DagError> {
        let block = self.block(dir)?;
        self.dir_links(dir, &block)
    }

    /// The entries of a directory, in link order (sorted by name).
    pub fn list(&self, dir: &Cid) -> Result<Vec<DirEntry>, DagError> {
        let block = self.block(dir)?;
        let links = self.dir_links(dir, &block)?;
        links
            .iter()
            .map(|l| {
                let child = self.block(&l.cid)?;
                Ok(DirEntry {
                    name: l.name.clone(),
                    cid: l.cid,
                    kind: child.kind(),
                    size: child.file_size(),
                })
            })
            .collect()
    }

    /// The leaf blocks of a file in order, with the byte range of the file each holds.
    /// Inner nodes are read; leaves are recognised from their parent as in
    /// [`Dag::walk`] and not read.
    pub fn leaves(&self, file: &Cid) -> Result<Vec<Leaf>, DagError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        // (cid, file offset, size, depth)
        let mut stack = vec![(*file, 0u64, None::<u64>, 0usize)];
        while let Some((cid, offset, size, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(DagError::Inconsistent(cid));
            }
            if let (Some(size), true) = (size, cid.codec() == RAW) {
                out.push(Leaf { cid, offset, size });
                continue;
            }
            if !self.blocks.get_into(&cid, &mut buf)? {
                return Err(DagError::NotFound(cid));
            }
            if cid.codec() == RAW {
                out.push(Leaf {
                    cid,
                    offset,
                    size: buf.len() as u64,
                });
                continue;
            }
            if let Some(r) = crate::dagpb::leaf_content_range(&buf) {
                out.push(Leaf {
                    cid,
                    offset,
                    size: r.len() as u64,
                });
                continue;
            }
            let decode = |source| DagError::Decode { cid, source };
            let node = PbNode::decode(&buf).map_err(decode)?;
            let u = node.unixfs().map_err(decode)?;
            if u.kind != DataType::File
                || u.data.as_ref().is_some_and(|d| !d.is_empty())
                || node.links.len() != u.blocksizes.len()
            {
                return Err(DagError::Inconsistent(cid));
            }
            self.blocks
                .prefetch(&node.links.iter().map(|l| l.cid).collect::<Vec<_>>())?;
            let mut at = offset;
            let mut children = Vec::with_capacity(node.links.len());
            for (l, &bs) in node.links.iter().zip(&u.blocksizes) {
                children.push((
                    l.cid,
                    at,
                    Some(bs),
                    depth + 1,
                    l.tsize <= bs + LEAF_OVERHEAD,
                ));
                at += bs;
            }
            for (c, at, bs, d, leaf) in children.into_iter().rev() {
                if leaf && c.codec() != RAW {
                    // A DAG-PB leaf: its content range is found when it is read.
                    out.push(Leaf {
                        cid: c,
                        offset: at,
                        size: bs.unwrap_or(0),
                    });
                    // Keep file order: leaves pushed in reverse are reversed below.
                } else {
                    stack.push((c, at, bs, d));
                }
            }
        }
        out.sort_by_key(|l| l.offset);
        Ok(out)
    }

    /// Bytes `start..end` of a file, collected (for small ranges).
    pub fn read_range(&self, file: Cid, start: u64, end: u64) -> Result<Vec<u8>, DagError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut r = RangeReader::new(file, start, end);
        while let Some(range) = r.next_into(self, &mut buf)? {
            out.extend_from_slice(&buf[range]);
        }
        Ok(out)
    }

    /// Every block reachable from `root` (each once), calling `visit` with its CID;
    /// fails on the first block that is not here. Leaves of files are recognised from
    /// their parent (a raw CID, or a cumulative size no larger than the content plus a
    /// leaf header) and only checked for presence and length, not read.
    pub fn walk(&self, root: &Cid, visit: &mut dyn FnMut(&Cid)) -> Result<(), DagError> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![*root];
        let mut buf = Vec::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(*cid.digest()) {
                continue;
            }
            visit(&cid);
            if cid.codec() == RAW {
                if !self.blocks.has(&cid) {
                    return Err(DagError::NotFound(cid));
                }
                continue;
            }
            if !self.blocks.get_into(&cid, &mut buf)? {
                return Err(DagError::NotFound(cid));
            }
            let node = PbNode::decode(&buf).map_err(|source| DagError::Decode { cid, source })?;
            let sizes = match node.unixfs() {
                Ok(u) if u.kind == DataType::File && u.blocksizes.len() == node.links.len() => {
                    u.blocksizes
                }
                _ => Vec::new(),
            };
            // Children found in one lookup: a file's leaves, or a folder's small files.
            self.blocks
                .prefetch(&node.links.iter().map(|l| l.cid).collect::<Vec<_>>())?;
            for (i, l) in node.links.iter().enumerate().rev() {
                let leaf = sizes
                    .get(i)
                    .is_some_and(|&size| l.cid.codec() == RAW || l.tsize <= size + LEAF_OVERHEAD);
                if !leaf {
                    stack.push(l.cid);
                    continue;
                }
                if !seen.insert(*l.cid.digest()) {
                    continue;
                }
                visit(&l.cid);
                match self.blocks.len_of(&l.cid)? {
                    Some(n) if n == l.tsize => {}
                    Some(_) => return Err(DagError::Inconsistent(l.cid)),
                    None => return Err(DagError::NotFound(l.cid)),
                }
            }
        }
        Ok(())
    }
}

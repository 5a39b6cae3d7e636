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
    #[error("{0}: HAMT-sharded directories are not supported yet")]
    Sharded(Cid),
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

/// A piece of a file's content: bytes `start..end` of `cid`'s own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub cid: Cid,
    pub start: u64,
    pub end: u64,
}

pub struct Dag<'a> {
    pub blocks: &'a Blockstore,
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

    fn dir_links<'b>(&self, cid: &Cid, block: &'b Block) -> Result<&'b [Link], DagError> {
        match block {
            Block::Node(n, u) if u.kind == DataType::Directory => Ok(&n.links),
            Block::Node(_, u) if u.kind == DataType::HamtShard => Err(DagError::Sharded(*cid)),
            _ => Err(DagError::NotDirectory(*cid)),
        }
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

    /// The blocks holding bytes `start..end` of a file, in order.
    pub fn segments(&self, file: &Cid, start: u64, end: u64) -> Result<Vec<Segment>, DagError> {
        let mut out = Vec::new();
        let block = self.block(file)?;
        if block.kind() != Kind::File {
            return Err(DagError::NotFile(*file));
        }
        self.collect(file, block, start, end, 0, &mut out)?;
        Ok(out)
    }

    fn collect(
        &self,
        cid: &Cid,
        block: Block,
        start: u64,
        end: u64,
        depth: usize,
        out: &mut Vec<Segment>,
    ) -> Result<(), DagError> {
        if depth > MAX_DEPTH || block.kind() != Kind::File {
            return Err(DagError::Inconsistent(*cid));
        }
        let own = block.own_data().len() as u64;
        if start < own && start < end {
            out.push(Segment {
                cid: *cid,
                start,
                end: end.min(own),
            });
        }
        let Block::Node(node, u) = block else {
            return Ok(());
        };
        if node.links.len() != u.blocksizes.len() {
            return Err(DagError::Inconsistent(*cid));
        }
        let mut offset = own;
        for (link, &size) in node.links.iter().zip(&u.blocksizes) {
            let (lo, hi) = (offset, offset.saturating_add(size));
            offset = hi;
            if hi <= start {
                continue;
            }
            if lo >= end {
                break;
            }
            let child = self.block(&link.cid)?;
            if child.file_size() != size {
                return Err(DagError::Inconsistent(link.cid));
            }
            self.collect(
                &link.cid,
                child,
                start.saturating_sub(lo),
                end.min(hi) - lo,
                depth + 1,
                out,
            )?;
        }
        Ok(())
    }

    /// The bytes of one segment: a block and the range of it that holds them (leaf
    /// blocks are not copied).
    pub fn read_segment(&self, s: &Segment) -> Result<(Vec<u8>, std::ops::Range<usize>), DagError> {
        let bytes = self.blocks.get(&s.cid)?.ok_or(DagError::NotFound(s.cid))?;
        let content = if s.cid.codec() == RAW {
            Some(0..bytes.len())
        } else {
            crate::dagpb::leaf_content_range(&bytes)
        };
        let (a, b) = (s.start as usize, s.end as usize);
        match content {
            Some(r) if a <= b && b <= r.len() => Ok((bytes, r.start + a..r.start + b)),
            Some(_) => Err(DagError::Inconsistent(s.cid)),
            None => {
                // A node with links and content of its own: decode it.
                let block = self.block(&s.cid)?;
                let data = block.own_data();
                if a > b || b > data.len() {
                    return Err(DagError::Inconsistent(s.cid));
                }
                Ok((data[a..b].to_vec(), 0..b - a))
            }
        }
    }

    /// Every block reachable from `root` (each once), calling `visit` with its CID.
    pub fn walk(&self, root: &Cid, visit: &mut dyn FnMut(&Cid)) -> Result<(), DagError> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            if !seen.insert(*cid.digest()) {
                continue;
            }
            visit(&cid);
            if cid.codec() == RAW {
                continue;
            }
            let bytes = self.blocks.get(&cid)?.ok_or(DagError::NotFound(cid))?;
            let node = PbNode::decode(&bytes).map_err(|source| DagError::Decode { cid, source })?;
            stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        Ok(())
    }
}

//! The bridge: imports a torrent into the BTFS store while it downloads.
//!
//! Each file of the torrent (pad files excluded) is cut into 256 KiB UnixFS chunks, as
//! `btfs add` cuts it. A chunk becomes a leaf block as soon as every torrent piece that
//! covers it is verified and on disk, so when the last piece arrives only the last few
//! chunks and the small upper tree remain: the root CID follows within moments. A
//! multi-file torrent becomes a UnixFS directory named like the torrent, built exactly
//! as `btfs add -r` builds the same files (names sorted by bytes, every file included —
//! `--hidden` in `add` terms).
//!
//! Two modes ([`ImportMode`], `Bittorrent.ImportMode`). With the filestore (the default)
//! every byte is written once: the downloaded files are the store's copy, each leaf is
//! hashed and recorded as a reference into its file ([`store::filestore`]), and only the
//! small DAG-PB inner nodes are written as blocks; the references, the pin and the
//! torrent record are committed in one transaction after the files are synced. With
//! `copy` each leaf is written as a block, and the files may go once the import is done.
//!
//! Files are read through the download's own [`FileStorage`] handles, never reopened by
//! path, so a link or another file swapped in below the download folder is never read.
//! The import's state grows with what is verified (one entry per imported chunk, one
//! flag per piece), never with the sizes a torrent declares.

use bittorrent::storage::FileStorage;
use bittorrent::Metainfo;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use store::config::ImportMode;
use store::filestore::{FileRef, LeafFormat};
use store::importer::{Discard, ImportOptions, Node};
use store::repo::TorrentRecord;
use store::{PinKind, Repo};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("the download stopped before every piece was verified; nothing was imported")]
    Incomplete,
    #[error("importing {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storing blocks: {0}")]
    Store(#[from] std::io::Error),
    #[error(transparent)]
    Repo(#[from] store::RepoError),
    #[error("import task failed: {0}")]
    Task(String),
    #[error("the torrent declares {0} bytes; imports are limited to 4 TiB")]
    TooLarge(u64),
    #[error(
        "the files no longer match the torrent's import (root {now}, recorded {known}): a file changed after it was verified; run the download again with --recheck"
    )]
    Changed { known: String, now: String },
}

/// The outcome of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `added` lines in the order `btfs add -r` prints them; the root is last.
    pub added: Vec<(String, Node)>,
    pub root: Node,
    /// Whether every file of the torrent was imported (and the infohash recorded).
    pub whole_torrent: bool,
    /// From the last verified piece to the pinned root.
    pub after_last_piece: std::time::Duration,
}

struct FilePlan {
    /// The file's index in the torrent (and in the storage).
    index: usize,
    /// Path inside the torrent (empty for a single-file torrent).
    components: Vec<String>,
    offset: u64,
    len: u64,
    /// Chunks the file is cut into.
    chunks: u64,
    /// Leaves imported so far, by chunk: this grows with the verified data only.
    leaves: BTreeMap<u64, Node>,
}

impl FilePlan {
    fn done(&self) -> bool {
        self.leaves.len() as u64 == self.chunks
    }
}

/// Everything needed to import one torrent.
pub struct Bridge {
    repo: Arc<Repo>,
    storage: Arc<FileStorage>,
    meta: Arc<Metainfo>,
    opts: ImportOptions,
    files: Vec<FilePlan>,
    piece_len: u64,
    verified: Vec<bool>,
    whole_torrent: bool,
    mode: ImportMode,
}

/// Largest torrent imported (its declared total size).
pub const MAX_IMPORT_BYTES: u64 = 4 << 40;

impl Bridge {
    /// Refuses a torrent too large to import. The import keeps a few dozen bytes per
    /// 256 KiB chunk, so this bounds what declared sizes can make it allocate; callers
    /// run it before creating any file, so a refused torrent leaves nothing on disk.
    pub fn check_size(meta: &Metainfo) -> Result<(), BridgeError> {
        let total: u64 = meta
            .info
            .files
            .iter()
            .map(|f| f.length)
            .fold(0, u64::saturating_add);
        if total > MAX_IMPORT_BYTES {
            return Err(BridgeError::TooLarge(total));
        }
        Ok(())
    }

    /// Plans the import of the selected files of `meta` as `storage` (the download's)
    /// holds them.
    pub fn new(
        repo: Arc<Repo>,
        meta: Arc<Metainfo>,
        storage: Arc<FileStorage>,
        selected: Option<&[bool]>,
        mode: ImportMode,
    ) -> Result<Bridge, BridgeError> {
        Bridge::check_size(&meta)?;
        let opts = ImportOptions::default();
        let chunk = opts.chunk_size as u64;
        let mut files = Vec::new();
        let mut whole = true;
        for (i, f) in meta.info.files.iter().enumerate() {
            if f.attr.pad {
                continue;
            }
            if !selected.is_none_or(|s| s.get(i).copied().unwrap_or(false)) {
                whole = false;
                continue;
            }
            files.push(FilePlan {
                index: i,
                components: if meta.info.single_file {
                    Vec::new()
                } else {
                    f.stored.clone()
                },
                offset: f.offset,
                len: f.length,
                chunks: f.length.div_ceil(chunk),
                leaves: BTreeMap::new(),
            });
        }
        let geometry = meta.info.geometry();
        Ok(Bridge {
            repo,
            storage,
            opts,
            files,
            piece_len: geometry.map_or(1, |g| u64::from(g.piece_length())),
            verified: vec![false; geometry.map_or(0, |g| g.piece_count() as usize)],
            whole_torrent: whole,
            mode,
            meta,
        })
    }

    fn chunk_pieces(&self, f: &FilePlan, k: u64) -> std::ops::RangeInclusive<u64> {
        let chunk = self.opts.chunk_size as u64;
        let start = f.offset + k * chunk;
        let end = f.offset + ((k + 1) * chunk).min(f.len);
        start / self.piece_len..=(end - 1) / self.piece_len
    }

    /// Chunks that piece `p` completes. A piece counts once, so each chunk is returned
    /// once: when the last of its pieces is verified.
    fn ready_after(&mut self, p: u32) -> Vec<(usize, u64)> {
        let Some(v) = self.verified.get_mut(p as usize) else {
            return Vec::new();
        };
        if std::mem::replace(v, true) {
            return Vec::new();
        }
        let chunk = self.opts.chunk_size as u64;
        let (lo, hi) = (
            u64::from(p) * self.piece_len,
            (u64::from(p) + 1) * self.piece_len,
        );
        // Files are in offset order: start at the last one beginning before this piece ends.
        let first = self.files.partition_point(|f| f.offset + f.len <= lo);
        let mut out = Vec::new();
        for fi in first..self.files.len() {
            let f = &self.files[fi];
            if f.offset >= hi {
                break;
            }
            if f.len == 0 {
                continue;
            }
            let a = (lo.max(f.offset) - f.offset) / chunk;
            let b = (hi.min(f.offset + f.len) - 1 - f.offset) / chunk;
            for k in a..=b {
                if self.chunk_pieces(f, k).all(|q| self.verified[q as usize]) {
                    out.push((fi, k));
                }
            }
        }
        out
    }

    fn done(&self) -> bool {
        self.files.iter().all(FilePlan::done)
    }

    /// Imports chunks as `verified` reports pieces, until every selected file is in the
    /// store; then builds the DAG, pins it and records the torrent.
    pub async fn run(
        mut self,
        mut verified: mpsc::UnboundedReceiver<u32>,
    ) -> Result<Imported, BridgeError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (done_tx, mut done_rx) =
            mpsc::unbounded_channel::<Result<(usize, u64, Node), BridgeError>>();
        let mut in_flight = 0usize;
        let mut queue: std::collections::VecDeque<(usize, u64)> = Default::default();
        let mut source_open = true;
        let mut last_piece = std::time::Instant::now();
        while !self.done() {
            while in_flight < workers {
                let Some((fi, k)) = queue.pop_front() else {
                    break;
                };
                in_flight += 1;
                let f = &self.files[fi];
                let chunk = self.opts.chunk_size as u64;
                let at = k * chunk;
                let len = (f.len - at).min(chunk) as usize;
                let (index, storage, repo, opts, tx, mode) = (
                    f.index,
                    self.storage.clone(),
                    self.repo.clone(),
                    self.opts,
                    done_tx.clone(),
                    self.mode,
                );
                tokio::task::spawn_blocking(move || {
                    // Buffers stay with the blocking thread, reused chunk after chunk.
                    thread_local! {
                        static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = Default::default();
                    }
                    let r = BUFS.with_borrow_mut(|(buf, scratch)| {
                        buf.resize(len, 0);
                        storage.read_file_at(index, at, buf).map_err(|source| {
                            BridgeError::Read {
                                path: storage.paths()[index].clone(),
                                source,
                            }
                        })?;
                        // With the filestore the leaf is only hashed: its bytes stay
                        // in the file, and `finish` records where.
                        let sink: &dyn store::importer::BlockSink = match mode {
                            ImportMode::Filestore => &Discard,
                            ImportMode::Copy => &repo.blocks,
                        };
                        Ok((fi, k, opts.put_leaf_with(buf, sink, scratch)?))
                    });
                    let _ = tx.send(r);
                });
            }
            if !source_open && in_flight == 0 && queue.is_empty() {
                return Err(BridgeError::Incomplete);
            }
            tokio::select! {
                p = verified.recv(), if source_open => match p {
                    Some(p) => {
                        last_piece = std::time::Instant::now();
                        let ready = self.ready_after(p);
                        queue.extend(ready);
                    }
                    None => source_open = false,
                },
                r = done_rx.recv() => {
                    in_flight -= 1;
                    let (fi, k, node) = r.ok_or_else(|| BridgeError::Task("import worker vanished".into()))??;
                    self.files[fi].leaves.insert(k, node);
                }
            }
        }
        while in_flight > 0 {
            match done_rx.recv().await {
                Some(_) => in_flight -= 1,
                None => break,
            }
        }
        let mut imported = tokio::task::spawn_blocking(move || self.finish())
            .await
            .map_err(|e| BridgeError::Task(e.to_string()))??;
        imported.after_last_piece = last_piece.elapsed();
        Ok(imported)
    }

    /// Builds file roots and directories, pins the root and records the torrent (with
    /// the filestore: after syncing the files, with the references, in one transaction).
    fn finish(self) -> Result<Imported, BridgeError> {
        let sink = &self.repo.blocks;
        let name = self.meta.info.stored_name.clone();
        let mut tree = Tree::default();
        let mut single = None;
        let refs = match self.mode {
            ImportMode::Filestore => self.file_refs()?,
            ImportMode::Copy => Vec::new(),
        };
        for f in self.files {
            if !f.done() {
                return Err(BridgeError::Incomplete);
            }
            let leaves: Vec<Node> = f.leaves.into_values().collect();
            let node = self.opts.file_root(leaves, sink)?;
            if f.components.is_empty() {
                single = Some(node);
            } else {
                tree.insert(&f.components, node);
            }
        }
        let mut added = Vec::new();
        let root = match single {
            Some(node) if self.meta.info.single_file => {
                added.push((name.clone(), node));
                node
            }
            _ => {
                let mut dirs = Vec::new();
                let root = tree.build(&self.opts, sink, &name, &mut added, &mut dirs)?;
                added.extend(dirs);
                root
            }
        };
        let record = TorrentRecord {
            name,
            root: root.cid.to_string(),
        };
        let info_hash = self.meta.wire_info_hash().0;
        // The same torrent always gives the same root: another one means bytes this run
        // did not verify (a file changed behind trusted resume data) — never recorded.
        if let Some(known) = self.repo.torrent(&info_hash)? {
            if self.whole_torrent && known.root != record.root {
                return Err(BridgeError::Changed {
                    known: known.root,
                    now: record.root,
                });
            }
        }
        let torrent = self.whole_torrent.then_some((&info_hash, &record));
        match self.mode {
            ImportMode::Filestore => self.repo.commit_import(&refs, Some(&root.cid), torrent)?,
            ImportMode::Copy => {
                self.repo.pin(&root.cid, PinKind::Recursive)?;
                if let Some((ih, record)) = torrent {
                    self.repo.set_torrent(ih, record)?;
                }
            }
        }
        Ok(Imported {
            added,
            root,
            whole_torrent: self.whole_torrent,
            after_last_piece: std::time::Duration::ZERO,
        })
    }

    /// The filestore references of every imported leaf, after the files are synced (so
    /// that what the references name is on disk before they are committed).
    fn file_refs(&self) -> Result<Vec<(store::Cid, FileRef)>, BridgeError> {
        use bittorrent::storage::Storage;
        self.storage.sync()?;
        let chunk = self.opts.chunk_size as u64;
        let mut refs = Vec::new();
        for f in &self.files {
            let path = &self.storage.paths()[f.index];
            if path.as_os_str().len() > store::filestore::MAX_REF_PATH {
                // Too long a path for a reference: this file's leaves become blocks.
                self.copy_leaves(f)?;
                continue;
            }
            let meta = std::fs::metadata(path).map_err(|source| BridgeError::Read {
                path: path.clone(),
                source,
            })?;
            let mtime_ns = store::filestore::mtime_ns(&meta);
            for (&k, node) in &f.leaves {
                refs.push((
                    node.cid,
                    FileRef {
                        path: path.clone(),
                        offset: k * chunk,
                        size: node.size,
                        format: if self.opts.raw_leaves {
                            LeafFormat::Raw
                        } else {
                            LeafFormat::UnixFsFile
                        },
                        mtime_ns,
                    },
                ));
            }
        }
        Ok(refs)
    }

    /// Writes the leaves of `f` as blocks (read again through the download's handles).
    fn copy_leaves(&self, f: &FilePlan) -> Result<(), BridgeError> {
        let chunk = self.opts.chunk_size as u64;
        let mut buf = Vec::new();
        let mut scratch = Vec::new();
        for (&k, node) in &f.leaves {
            buf.resize(node.size as usize, 0);
            self.storage
                .read_file_at(f.index, k * chunk, &mut buf)
                .map_err(|source| BridgeError::Read {
                    path: self.storage.paths()[f.index].clone(),
                    source,
                })?;
            let stored = self
                .opts
                .put_leaf_with(&buf, &self.repo.blocks, &mut scratch)?;
            if stored.cid != node.cid {
                return Err(BridgeError::Read {
                    path: self.storage.paths()[f.index].clone(),
                    source: std::io::Error::other("the file changed while it was imported"),
                });
            }
        }
        Ok(())
    }
}

/// Files by path, for building directories.
#[derive(Default)]
struct Tree {
    files: BTreeMap<String, Node>,
    dirs: BTreeMap<String, Tree>,
}

impl Tree {
    fn insert(&mut self, path: &[String], node: Node) {
        match path {
            [name] => {
                self.files.insert(name.clone(), node);
            }
            [dir, rest @ ..] => self.dirs.entry(dir.clone()).or_default().insert(rest, node),
            [] => {}
        }
    }

    /// The directory node; files are listed in `added` in walk order, directories in
    /// `dirs` children first — the order of `btfs add -r`.
    fn build(
        self,
        opts: &ImportOptions,
        sink: &store::Blockstore,
        display: &str,
        added: &mut Vec<(String, Node)>,
        dirs: &mut Vec<(String, Node)>,
    ) -> std::io::Result<Node> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        let mut files = self.files.into_iter().peekable();
        let mut subdirs = self.dirs.into_iter().peekable();
        // Walk names in byte order across files and folders, as a directory listing does.
        loop {
            let take_file = match (files.peek(), subdirs.peek()) {
                (Some((f, _)), Some((d, _))) => f.as_bytes() < d.as_bytes(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_file {
                let (n, node) = files.next().expect("peeked");
                added.push((format!("{display}/{n}"), node));
                entries.push((n, node));
            } else {
                let (n, sub) = subdirs.next().expect("peeked");
                let node = sub.build(opts, sink, &format!("{display}/{n}"), added, dirs)?;
                entries.push((n, node));
            }
        }
        let node = opts.directory(entries, sink)?;
        dirs.push((display.to_owned(), node));
        Ok(node)
    }
}

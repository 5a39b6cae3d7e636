//! The BTFS repo at `$BTFS_PATH`: `config`, `blocks/` (flatfs layout) and `datastore.redb`
//! (pins, the torrent ↔ CID index and the filestore's references), guarded by `repo.lock`.
//!
//! Filestore: an import that keeps its leaves in files ([`crate::filestore`]) commits its
//! references, its pin and its torrent record in one database transaction, after the
//! inner blocks and the files are synced, so a crash leaves either all of them or none.
//! `gc` drops references no pin keeps, and deletes a download's folder under
//! [`DOWNLOADS_DIR`] (the store's own copy of downloaded files) once nothing pinned is
//! read from it; it never deletes any other referenced file.
//!
//! Locking: commands that write (add, downloads, pin changes) hold a shared lock, so
//! several of them run at once — block writes are atomic renames and metadata changes
//! are short redb transactions. `repo gc` holds the lock exclusively, so it never deletes
//! a block another process has written but not pinned yet. Each holder records itself
//! in `owners/<pid>` so a refused command can say who holds the repo; the record is the
//! command's name only (see [`set_owner_label`]), never its arguments (they may hold
//! secrets such as an API token).
//!
//! Permissions: a new repo folder is made `0700` (as kubo makes its own), so other users
//! of the machine cannot read its blocks, records or the daemon's token. An existing
//! folder is left as it is.
//!
//! Damage: every repo file is read as untrusted. redb panics on some damaged pages, so
//! each use of `datastore.redb` runs under [`contain`], which turns a panic into
//! [`RepoError::Damaged`] naming the file and what to do; nothing reaches the terminal
//! as a panic.

use crate::blockstore::Blockstore;
use crate::cid::Cid;
pub use crate::config::{parse_listen_addr, Addresses, Config, ConfigError, DatastoreConfig};
use crate::dag::{Dag, DagError};
use crate::filestore::{FileRef, Filestore, RefLookup};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PINS: TableDefinition<&[u8], u8> = TableDefinition::new("pins");
/// v1 infohash (20 bytes) → torrent record (JSON).
const TORRENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("torrents");
/// v1 infohash (20 bytes) → what `bittorrent serve` seeds (JSON).
const SERVED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("served");
/// sha2-256 digest of a leaf block (32 bytes) → [`FileRef`] (its own encoding).
const FILESTORE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("filestore");

/// A filestore entry: the block's digest and its reference (`None`: damaged).
pub type RefEntry = ([u8; 32], Option<FileRef>);

/// Where downloads without an output folder keep their files, inside the repo: the
/// store's copy of them when they are imported into the filestore.
pub const DOWNLOADS_DIR: &str = "bittorrent/downloads";
/// The database file inside the repo.
const DB_FILE: &str = "datastore.redb";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the repo at {path} is in use by {holders}; try again when it is done")]
    Locked { path: PathBuf, holders: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: bad config: {message}")]
    Config { path: PathBuf, message: String },
    /// The config file cannot be read, is not JSON, or is too large (the error names it).
    #[error(transparent)]
    ConfigFile(ConfigError),
    /// `$BTFS_PROFILE` names a profile that does not exist.
    #[error("{PROFILE_ENV}: {0}")]
    Profile(ConfigError),
    #[error("metadata database: {0}")]
    Db(String),
    #[error(
        "{path} is damaged ({detail}): restore it from a backup, or move it aside to start \
         an empty one (its pins and torrent index are lost; the blocks stay, and `btfs repo \
         verify` checks them)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(transparent)]
    Dag(#[from] DagError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A redb error: [`RepoError::Damaged`] (its path filled in by [`Repo::with_db`]) when
/// the file is not a sound database, else [`RepoError::Db`].
fn db_err(e: impl Into<redb::Error>) -> RepoError {
    let e: redb::Error = e.into();
    let damaged = match &e {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => io.kind() == io::ErrorKind::InvalidData,
        _ => false,
    };
    if damaged {
        RepoError::Damaged {
            path: PathBuf::new(),
            detail: e.to_string(),
        }
    } else {
        RepoError::Db(e.to_string())
    }
}

/// The environment variable naming the profiles (comma-separated) a repo created on
/// first use gets, such as `test` for a test suite.
pub const PROFILE_ENV: &str = "BTFS_PROFILE";

/// `$BTFS_PROFILE`, its names checked.
fn env_profiles() -> Result<String, RepoError> {
    let profiles = std::env::var(PROFILE_ENV).unwrap_or_default();
    crate::config::check_profiles(&profiles).map_err(RepoError::Profile)?;
    Ok(profiles)
}

fn config_err(file: &Path, e: ConfigError) -> RepoError {
    match e {
        ConfigError::Invalid { .. } | ConfigError::UnknownProfile(_) => RepoError::Config {
            path: file.to_path_buf(),
            message: e.to_string(),
        },
        other => RepoError::ConfigFile(other),
    }
}

/// Who takes the repo, as `owners/<pid>` records it (set once by the program).
static OWNER_LABEL: OnceLock<String> = OnceLock::new();

/// Names the command that opens the repo in this process (e.g. `btfs daemon`), for the
/// message of a command refused because the repo is in use. Only the first call counts.
/// Without it, the executable's file name is recorded. Never pass arguments: they may
/// hold secrets.
pub fn set_owner_label(label: &str) {
    let _ = OWNER_LABEL.set(
        label
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
    );
}

fn owner_label() -> String {
    OWNER_LABEL.get().cloned().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "btfs".into())
    })
}

thread_local! {
    /// Set while [`contain`] runs: a panic then is reported as an error, not printed.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it into an error with the panic's message. The
/// process's panic hook stays silent for such a panic (the error says what happened);
/// any other panic is printed as before.
fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = CONTAINED.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    r.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an internal check failed".into())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PinKind {
    Recursive,
    Direct,
}

/// What the repo knows about a torrent it imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TorrentRecord {
    pub name: String,
    pub root: String,
}

/// A torrent `bittorrent serve` seeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServedRecord {
    pub name: String,
    /// An absolute path, or `/btfs/<cid>` for content seeded from the store.
    pub source: String,
    /// Root CID in the store (when added, or seeded from it).
    pub cid: Option<String>,
    /// The .torrent file in the repo.
    pub torrent: String,
}

pub struct Repo {
    path: PathBuf,
    pub config: Config,
    pub blocks: Blockstore,
    _lock: fs::File,
    owner: PathBuf,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("path", &self.path).finish()
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.owner);
    }
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GcReport {
    pub removed: u64,
    pub bytes: u64,
    pub kept: u64,
    /// Filestore references dropped and kept.
    pub refs_removed: u64,
    pub refs_kept: u64,
    /// Download folders of the repo deleted with the last references into them.
    pub folders_removed: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyReport {
    pub checked: u64,
    /// How many of the blocks checked are filestore references (their files read).
    pub refs_checked: u64,
    /// Block files whose bytes do not hash to their name.
    pub corrupt: Vec<String>,
    /// Blocks that pinned DAGs need but the store lacks.
    pub missing: Vec<String>,
    /// Why the metadata database (pins, torrent index) cannot be read, when it is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Repo {
    /// Whether a repo exists at `path`.
    pub fn exists(path: &Path) -> bool {
        path.join("config").is_file()
    }

    /// Creates a repo (an existing one is kept as it is), its config with the profiles
    /// named in `$BTFS_PROFILE` (comma-separated) applied.
    /// An unknown profile in `$BTFS_PROFILE` is an error even when the repo exists (and
    /// so the variable is not used), so that a misspelt name is never silently ignored.
    pub fn init(path: &Path) -> Result<bool, RepoError> {
        let profiles = env_profiles()?;
        Self::init_with_profiles(path, &profiles)
    }

    /// Creates a repo with the comma-separated `profiles` applied to its config (an
    /// existing repo is kept as it is). An unknown profile creates nothing. The config is
    /// written under the config lock, so a repo created by two processes at once gets
    /// one config, never one written over a change made meanwhile.
    pub fn init_with_profiles(path: &Path, profiles: &str) -> Result<bool, RepoError> {
        let file = path.join("config");
        if Self::exists(path) {
            return Ok(false);
        }
        let config = crate::config::apply_profiles(&Config::default(), profiles)
            .map_err(|e| config_err(&file, e))?;
        if !path.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io_err(path))?;
        }
        let _lock = crate::config::lock(path).map_err(|e| config_err(&file, e))?;
        if Self::exists(path) {
            return Ok(false);
        }
        Blockstore::open(&path.join("blocks")).map_err(io_err(path))?;
        config.write(&file).map_err(|e| config_err(&file, e))?;
        Ok(true)
    }

    /// Reads the config without opening (or locking) the repo, fully checked.
    pub fn read_config(path: &Path) -> Result<Config, RepoError> {
        let p = path.join("config");
        Config::read(&p).map_err(|e| config_err(&p, e))
    }

    /// The config in effect: the repo's, or (no repo yet) the default with the profiles
    /// of `$BTFS_PROFILE` applied, as a repo created now would have it.
    pub fn effective_config(path: &Path) -> Result<Config, RepoError> {
        let profiles = env_profiles()?;
        if Self::exists(path) {
            return Self::read_config(path);
        }
        crate::config::apply_profiles(&Config::default(), &profiles)
            .map_err(|e| config_err(&path.join("config"), e))
    }

    /// Opens the repo, creating it first when it does not exist (`created` tells).
    pub fn open(path: &Path, mode: LockMode) -> Result<(Repo, bool), RepoError> {
        let created = Self::init(path)?;
        let config = Self::read_config(path)?;
        let lock_path = path.join("repo.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let locked = match mode {
            LockMode::Shared => lock.try_lock_shared(),
            LockMode::Exclusive => lock.try_lock(),
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(RepoError::Locked {
                    path: path.to_path_buf(),
                    holders: holders(path),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let owners = path.join("owners");
        fs::create_dir_all(&owners).map_err(io_err(&owners))?;
        let owner = owners.join(std::process::id().to_string());
        let _ = fs::write(&owner, owner_label());
        let blocks = Self::blockstore_at(path).map_err(io_err(path))?;
        Ok((
            Repo {
                path: path.to_path_buf(),
                config,
                blocks,
                _lock: lock,
                owner,
            },
            created,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blocks of the repo at `path`, with its filestore, as a handle of its own (for
    /// a server that shares it between tasks).
    pub fn blockstore_at(path: &Path) -> io::Result<Blockstore> {
        Ok(
            Blockstore::open(&path.join("blocks"))?.with_filestore(Filestore::new(Box::new(
                DbRefs {
                    db: path.join(DB_FILE),
                },
            ))),
        )
    }

    pub fn dag(&self) -> Dag<'_> {
        Dag {
            blocks: &self.blocks,
        }
    }

    /// Runs `f` on the metadata database (see [`with_db_at`]).
    fn with_db<T>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        with_db_at(&self.path.join(DB_FILE), f)
    }

    /// Makes written blocks durable (when the config asks for it).
    pub fn sync(&self) -> Result<(), RepoError> {
        if self.config.datastore.sync {
            self.blocks.sync().map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    /// A write transaction on the metadata database, committed when `f` succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(db_err)?;
            let r = f(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(r)
        })
    }

    /// Reads `table`; `None` when it was never written.
    fn read<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: TableDefinition<K, V>,
        f: impl FnOnce(&redb::ReadOnlyTable<K, V>) -> Result<T, RepoError>,
    ) -> Result<Option<T>, RepoError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            match tx.open_table(table) {
                Ok(t) => f(&t).map(Some),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(e) => Err(db_err(e)),
            }
        })
    }

    /// Pins `cid` (after syncing the blocks it refers to).
    pub fn pin(&self, cid: &Cid, kind: PinKind) -> Result<(), RepoError> {
        self.sync()?;
        self.write(|tx| pin_in(tx, cid, kind))
    }

    /// Records an import whose leaves stay in files: the filestore `refs`, the recursive
    /// pin of `root` (when given) and the torrent record, in one transaction, after the
    /// inner blocks are synced. The referenced files must be synced by the caller.
    pub fn commit_import(
        &self,
        refs: &[(Cid, FileRef)],
        root: Option<&Cid>,
        torrent: Option<(&[u8; 20], &TorrentRecord)>,
    ) -> Result<(), RepoError> {
        self.commit(
            refs,
            root.map(std::slice::from_ref).unwrap_or_default(),
            torrent,
        )
    }

    /// [`Repo::commit_import`] of an `add --nocopy`: the references and the recursive
    /// pins of `roots` (none: `--pin=false`, or a batch of references before the last).
    pub fn commit_refs(&self, refs: &[(Cid, FileRef)], roots: &[Cid]) -> Result<(), RepoError> {
        self.commit(refs, roots, None)
    }

    fn commit(
        &self,
        refs: &[(Cid, FileRef)],
        roots: &[Cid],
        torrent: Option<(&[u8; 20], &TorrentRecord)>,
    ) -> Result<(), RepoError> {
        self.sync()?;
        self.write(|tx| {
            {
                let mut t = tx.open_table(FILESTORE).map_err(db_err)?;
                for (cid, r) in refs {
                    t.insert(cid.digest().as_slice(), r.encode().as_slice())
                        .map_err(db_err)?;
                }
            }
            for root in roots {
                pin_in(tx, root, PinKind::Recursive)?;
            }
            if let Some((ih, record)) = torrent {
                let value = serde_json::to_vec(record).expect("record serialises");
                let mut t = tx.open_table(TORRENTS).map_err(db_err)?;
                t.insert(ih.as_slice(), value.as_slice()).map_err(db_err)?;
            }
            Ok(())
        })?;
        if let Some(f) = self.blocks.filestore() {
            f.invalidate();
        }
        Ok(())
    }

    /// Every filestore reference, by block digest (`None`: an entry that is damaged).
    pub fn file_refs(&self) -> Result<Vec<RefEntry>, RepoError> {
        let all = self.read(FILESTORE, |t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let Ok(digest) = <[u8; 32]>::try_from(k.value()) else {
                    continue;
                };
                out.push((digest, FileRef::decode(v.value())));
            }
            Ok(out)
        })?;
        Ok(all.unwrap_or_default())
    }

    /// The filestore entries of these digests, in order (`None`: not in the filestore).
    pub fn file_refs_of(&self, digests: &[[u8; 32]]) -> Result<Vec<Option<RefEntry>>, RepoError> {
        let found = self.read(FILESTORE, |t| {
            digests
                .iter()
                .map(|d| {
                    let v = t.get(d.as_slice()).map_err(db_err)?;
                    Ok(v.map(|v| (*d, FileRef::decode(v.value()))))
                })
                .collect()
        })?;
        Ok(found.unwrap_or_else(|| vec![None; digests.len()]))
    }

    /// Drops the filestore references of these digests (the files are left alone).
    pub fn remove_refs(&self, digests: &[[u8; 32]]) -> Result<u64, RepoError> {
        let n = self.write(|tx| {
            let mut t = tx.open_table(FILESTORE).map_err(db_err)?;
            let mut n = 0;
            for d in digests {
                n += u64::from(t.remove(d.as_slice()).map_err(db_err)?.is_some());
            }
            Ok(n)
        })?;
        if let Some(f) = self.blocks.filestore() {
            f.invalidate();
        }
        Ok(n)
    }

    /// Drops the filestore references into any of `paths` (files, or folders and
    /// everything below them, about to be deleted); the number dropped.
    ///
    /// A leaf has one reference, into the files of whichever import recorded it last, so
    /// a leaf that another pinned DAG shares (the same file in two torrents) may point
    /// into files that go. Such a leaf is first stored as a block (read through its
    /// reference, so hash-checked; synced before the reference is dropped), and the other
    /// DAG stays whole. Call this after unpinning what goes and before deleting the
    /// files. A pinned DAG that cannot be walked (incomplete, damaged) keeps nothing.
    pub fn remove_refs_under(&self, paths: &[PathBuf]) -> Result<u64, RepoError> {
        let doomed: Vec<([u8; 32], FileRef)> = self
            .file_refs()?
            .into_iter()
            .filter_map(|(d, r)| {
                let r = r?;
                paths
                    .iter()
                    .any(|p| r.path.starts_with(p))
                    .then_some((d, r))
            })
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let live = self.live_set().unwrap_or_default();
        let mut buf = Vec::new();
        let mut stored = false;
        for (d, r) in doomed.iter().filter(|(d, _)| live.contains(d)) {
            let cid = Blockstore::cid_of_digest(*d);
            if self.blocks.has_file(&cid) || r.read_block(&cid, &mut buf).is_err() {
                // Already a block, or its bytes are gone already: nothing to keep.
                continue;
            }
            self.blocks
                .put(&cid, &buf)
                .map_err(io_err(self.blocks.root()))?;
            stored = true;
        }
        if stored {
            self.sync()?;
        }
        let digests: Vec<[u8; 32]> = doomed.iter().map(|(d, _)| *d).collect();
        self.remove_refs(&digests)
    }

    /// The folder where downloads without an output folder keep their files.
    pub fn downloads_dir(&self) -> PathBuf {
        self.path.join(DOWNLOADS_DIR)
    }

    /// Removes a pin; `false` when `cid` was not pinned.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, RepoError> {
        self.write(|tx| {
            let mut t = tx.open_table(PINS).map_err(db_err)?;
            let removed = t
                .remove(cid.to_bytes().as_slice())
                .map_err(db_err)?
                .is_some();
            Ok(removed)
        })
    }

    pub fn pins(&self) -> Result<Vec<(Cid, PinKind)>, RepoError> {
        let pins = self.read(PINS, |t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let cid = Cid::from_bytes(k.value()).map_err(|e| RepoError::Damaged {
                    path: PathBuf::new(),
                    detail: format!("a pin that is not a CID: {e}"),
                })?;
                let kind = if v.value() == 1 {
                    PinKind::Recursive
                } else {
                    PinKind::Direct
                };
                out.push((cid, kind));
            }
            Ok(out)
        })?;
        Ok(pins.unwrap_or_default())
    }

    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        key: &[u8],
        value: &T,
    ) -> Result<(), RepoError> {
        let value = serde_json::to_vec(value).expect("record serialises");
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(db_err)?;
            t.insert(key, value.as_slice()).map_err(db_err)?;
            Ok(())
        })
    }

    /// Every (key, record) of a table; records that no longer parse are skipped.
    fn all_json<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
    ) -> Result<Vec<(Vec<u8>, T)>, RepoError> {
        let all = self.read(table, |t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                if let Ok(r) = serde_json::from_slice(v.value()) {
                    out.push((k.value().to_vec(), r));
                }
            }
            Ok(out)
        })?;
        Ok(all.unwrap_or_default())
    }

    fn remove_key(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        key: &[u8],
    ) -> Result<bool, RepoError> {
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(db_err)?;
            let removed = t.remove(key).map_err(db_err)?.is_some();
            Ok(removed)
        })
    }

    pub fn set_torrent(
        &self,
        info_hash: &[u8; 20],
        record: &TorrentRecord,
    ) -> Result<(), RepoError> {
        self.put_json(TORRENTS, info_hash, record)
    }

    pub fn torrent(&self, info_hash: &[u8; 20]) -> Result<Option<TorrentRecord>, RepoError> {
        let found = self.read(TORRENTS, |t| {
            let v = t.get(info_hash.as_slice()).map_err(db_err)?;
            Ok(v.and_then(|v| serde_json::from_slice(v.value()).ok()))
        })?;
        Ok(found.flatten())
    }

    pub fn set_served(&self, info_hash: &[u8; 20], record: &ServedRecord) -> Result<(), RepoError> {
        self.put_json(SERVED, info_hash, record)
    }

    /// Everything `bittorrent serve` seeds, by infohash.
    pub fn served(&self) -> Result<Vec<([u8; 20], ServedRecord)>, RepoError> {
        Ok(self
            .all_json::<ServedRecord>(SERVED)?
            .into_iter()
            .filter_map(|(k, r)| Some((<[u8; 20]>::try_from(k.as_slice()).ok()?, r)))
            .collect())
    }

    pub fn remove_served(&self, info_hash: &[u8; 20]) -> Result<bool, RepoError> {
        self.remove_key(SERVED, info_hash)
    }

    /// Whether every block of the DAG under `root` is here, and every file holding
    /// filestore leaves of it is still there with the size and modification time it had
    /// when it was imported (a quick check: reads hash every block).
    pub fn is_complete(&self, root: &Cid) -> bool {
        let mut leaves = Vec::new();
        if self.dag().walk(root, &mut |c| leaves.push(*c)).is_err() {
            return false;
        }
        let mut checked: HashSet<(PathBuf, u64)> = HashSet::new();
        leaves
            .iter()
            .filter(|c| !self.blocks.has_file(c))
            .all(|c| match self.blocks.file_ref(c) {
                Ok(Some(r)) => {
                    checked.contains(&(r.path.clone(), r.mtime_ns)) || {
                        let ok = r.file_unchanged();
                        if ok {
                            checked.insert((r.path.clone(), r.mtime_ns));
                        }
                        ok
                    }
                }
                Ok(None) => true,
                Err(_) => false,
            })
    }

    /// The digests of every block a pin keeps.
    fn live_set(&self) -> Result<HashSet<[u8; 32]>, RepoError> {
        let mut live = HashSet::new();
        let dag = self.dag();
        for (cid, kind) in self.pins()? {
            match kind {
                PinKind::Direct => {
                    live.insert(*cid.digest());
                }
                PinKind::Recursive => dag.walk(&cid, &mut |c| {
                    live.insert(*c.digest());
                })?,
            }
        }
        Ok(live)
    }

    /// Removes every block no pin keeps, the filestore references no pin keeps, and the
    /// download folders of the repo that only those references used. Needs the
    /// exclusive lock.
    pub fn gc(&self) -> Result<GcReport, RepoError> {
        let live = self.live_set()?;
        let mut report = GcReport::default();
        self.blocks
            .clean_temp()
            .map_err(io_err(self.blocks.root()))?;
        for f in self.blocks.files().map_err(io_err(self.blocks.root()))? {
            match f.digest {
                Some(d) if live.contains(&d) => report.kept += 1,
                _ => {
                    report.bytes += fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
                    self.blocks.delete_file(&f.path).map_err(io_err(&f.path))?;
                    report.removed += 1;
                }
            }
        }
        let (dead, kept): (Vec<_>, Vec<_>) = self
            .file_refs()?
            .into_iter()
            .partition(|(d, _)| !live.contains(d));
        report.refs_kept = kept.len() as u64;
        if !dead.is_empty() {
            let digests: Vec<[u8; 32]> = dead.iter().map(|(d, _)| *d).collect();
            report.refs_removed = self.remove_refs(&digests)?;
        }
        // The repo's own download folders that nothing pinned reads from any more.
        let Ok(downloads) = self.downloads_dir().canonicalize() else {
            return Ok(report);
        };
        let folder = |r: &FileRef| {
            let rest = r.path.strip_prefix(&downloads).ok()?;
            Some(downloads.join(rest.components().next()?))
        };
        let used: HashSet<PathBuf> = kept
            .iter()
            .filter_map(|(_, r)| folder(r.as_ref()?))
            .collect();
        let unused: HashSet<PathBuf> = dead
            .iter()
            .filter_map(|(_, r)| folder(r.as_ref()?))
            .filter(|f| !used.contains(f))
            .collect();
        for f in unused {
            match fs::remove_dir_all(&f) {
                Ok(()) => report.folders_removed.push(f.display().to_string()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&f)(e)),
            }
            let _ = fs::remove_file(f.with_extension("lock"));
        }
        Ok(report)
    }

    /// Rehashes every block and every filestore leaf (reading its file), and checks that
    /// every pinned DAG is complete (and so that the metadata database can be read).
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, RepoError> {
        use sha2::Digest;
        let mut report = VerifyReport::default();
        for f in self.blocks.files().map_err(io_err(self.blocks.root()))? {
            report.checked += 1;
            progress(report.checked);
            let ok = match (f.digest, fs::read(&f.path)) {
                (Some(d), Ok(bytes)) => <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) == d,
                _ => false,
            };
            if !ok {
                report.corrupt.push(f.path.display().to_string());
            }
        }
        let refs = match self.file_refs() {
            Ok(r) => r,
            Err(e @ RepoError::Damaged { .. }) => {
                report.database = Some(e.to_string());
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        for (digest, r) in refs {
            report.checked += 1;
            report.refs_checked += 1;
            progress(report.checked);
            let cid = Blockstore::cid_of_digest(digest);
            match r {
                Some(r) => {
                    if let Err(e) = r.read_block(&cid, &mut buf) {
                        report.corrupt.push(e.to_string());
                    }
                }
                None => report
                    .corrupt
                    .push(format!("{cid}: a filestore entry that cannot be read")),
            }
        }
        let dag = self.dag();
        let pins = match self.pins() {
            Ok(p) => p,
            Err(e @ RepoError::Damaged { .. }) => {
                report.database = Some(e.to_string());
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        for (cid, kind) in pins {
            let r = match kind {
                PinKind::Recursive => dag.walk(&cid, &mut |_| {}),
                PinKind::Direct if self.blocks.has(&cid) => Ok(()),
                PinKind::Direct => Err(DagError::NotFound(cid)),
            };
            match r {
                Ok(()) => {}
                Err(DagError::NotFound(missing)) => {
                    report.missing.push(format!("{missing} (pinned by {cid})"))
                }
                Err(e) => report.missing.push(format!("{cid}: {e}")),
            }
        }
        Ok(report)
    }
}

fn pin_in(tx: &redb::WriteTransaction, cid: &Cid, kind: PinKind) -> Result<(), RepoError> {
    let mut t = tx.open_table(PINS).map_err(db_err)?;
    let key = cid.to_bytes();
    let old = t.get(key.as_slice()).map_err(db_err)?.map(|v| v.value());
    // A recursive pin is never weakened to a direct one.
    let new = match (old, kind) {
        (Some(1), _) | (_, PinKind::Recursive) => 1,
        _ => 2,
    };
    t.insert(key.as_slice(), new).map_err(db_err)?;
    Ok(())
}

/// Runs `f` on the metadata database at `path`. redb admits one process at a time, so
/// the database is opened per operation, waiting up to 30 s for another process. A
/// damaged file (a panic inside redb, or an error that says so) is
/// [`RepoError::Damaged`] with the file's path.
fn with_db_at<T>(
    path: &Path,
    f: impl FnOnce(&redb::Database) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = contain(|| loop {
        match redb::Database::create(path) {
            Ok(db) => return f(&db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(db_err(e)),
        }
    });
    match r {
        Err(detail) | Ok(Err(RepoError::Damaged { detail, .. })) => Err(RepoError::Damaged {
            path: path.to_path_buf(),
            detail,
        }),
        Ok(other) => other,
    }
}

/// The filestore's references in the repo's database, for [`Blockstore`] reads.
#[derive(Debug)]
struct DbRefs {
    db: PathBuf,
}

impl RefLookup for DbRefs {
    fn lookup(&self, digests: &[[u8; 32]]) -> io::Result<Vec<Option<FileRef>>> {
        if !self.db.exists() {
            return Ok(vec![None; digests.len()]);
        }
        let r = with_db_at(&self.db, |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = match tx.open_table(FILESTORE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(vec![None; digests.len()])
                }
                Err(e) => return Err(db_err(e)),
            };
            digests
                .iter()
                .map(|d| {
                    let v = t.get(d.as_slice()).map_err(db_err)?;
                    Ok(v.and_then(|v| FileRef::decode(v.value())))
                })
                .collect()
        });
        r.map_err(|e| io::Error::other(e.to_string()))
    }

    fn version(&self) -> u64 {
        fs::metadata(&self.db).map_or(0, |m| {
            crate::filestore::mtime_ns(&m)
                .wrapping_mul(31)
                .wrapping_add(m.len())
        })
    }
}

/// Who holds the repo, from `owners/<pid>` files of live processes.
fn holders(path: &Path) -> String {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(path.join("owners")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let alive =
                Path::new("/proc").join(&name).exists() || !Path::new("/proc/self").exists();
            if alive {
                let cmd = fs::read_to_string(e.path()).unwrap_or_default();
                out.push(format!("pid {name} ({})", cmd.trim()));
            }
        }
    }
    if out.is_empty() {
        "another process".into()
    } else {
        out.join(", ")
    }
}

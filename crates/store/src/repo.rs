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
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const PINS: TableDefinition<&[u8], u8> = TableDefinition::new("pins");
/// v1 infohash (20 bytes) → torrent record (JSON).
pub(crate) const TORRENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("torrents");
/// v1 infohash (20 bytes) → what `bittorrent serve` seeds (JSON).
const SERVED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("served");
/// Where downloads without an output folder keep their files, inside the repo: the
/// store's copy of them when they are imported into the filestore.
pub const DOWNLOADS_DIR: &str = "bittorrent/downloads";
/// The database file inside the repo.
pub(crate) const DB_FILE: &str = "datastore.redb";

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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A redb error: [`RepoError::Damaged`] (its path filled in by [`Repo::with_db`]) when
/// the file is not a sound database, else [`RepoError::Db`].
pub(crate) fn db_err(e: impl Into<redb::Error>) -> RepoError {
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
pub(crate) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
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
    pub(crate) path: PathBuf,
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

    pub fn dag(&self) -> Dag<'_> {
        Dag {
            blocks: &self.blocks,
        }
    }

    /// Runs `f` on the metadata database (see [`with_db_at`]).
    pub(crate) fn with_db<T>(
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
    pub(crate) fn write<T>(
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
    pub(crate) fn read<K: redb::Key + 'static, V: redb::Value + 'static, T>(
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
        let mut blocks = Vec::new();
        self.dag().walk(root, &mut |c| blocks.push(*c)).is_ok() && self.files_unchanged(&blocks)
    }

    /// The digests of every block a pin keeps.
    pub(crate) fn live_set(&self) -> Result<HashSet<[u8; 32]>, RepoError> {
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
        self.gc_refs(&live, &mut report)?;
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
        self.verify_refs(&mut report, progress)?;
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

pub(crate) fn pin_in(
    tx: &redb::WriteTransaction,
    cid: &Cid,
    kind: PinKind,
) -> Result<(), RepoError> {
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
pub(crate) fn with_db_at<T>(
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
    damaged_at(path, r)
}

/// The outcome of a database use under [`contain`]: a panic or a damage error names the
/// file at `path`.
pub(crate) fn damaged_at<T>(
    path: &Path,
    r: Result<Result<T, RepoError>, String>,
) -> Result<T, RepoError> {
    match r {
        Err(detail) | Ok(Err(RepoError::Damaged { detail, .. })) => Err(RepoError::Damaged {
            path: path.to_path_buf(),
            detail,
        }),
        Ok(other) => other,
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

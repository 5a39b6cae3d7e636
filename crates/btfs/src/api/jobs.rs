//! Downloads run by the daemon: jobs that outlive the request that started them.
//!
//! A job is one `btfs bittorrent download` child of the daemon (JSON output, with the
//! peer/tracker/piece detail turned on); its events are read line by line into the job's
//! state and passed on to whoever is attached. Pause and cancel stop the child with
//! SIGTERM (resume data is saved, as on Ctrl-C); resume starts it again and it carries
//! on from the verified pieces. The records live in `$BTFS_PATH/bittorrent/jobs/jobs.json`
//! (written whole, atomically, on every change of state), so jobs that were running when
//! the daemon stopped start again with it. A job that seeds keeps its files in
//! `jobs/<id>/files` (or its `-o` folder) so it can seed again after a restart.
//!
//! Downloads wait their turn: at most `max_active` jobs download at once (seeding and
//! complete jobs do not count); the others are `queued` and start, oldest first, as
//! active ones finish or turn to seeding.
//!
//! Removing a job with its data deletes what the job made: its own folders in the repo
//! (working folder, resume data, the folder of a seeding job), and in a user's `-o`
//! folder only the files of the verified torrent, as the job's process reported them
//! (its `torrent` event, printed once the metadata is verified and the files were set
//! up), then the folders those leave empty ([`super::delete`]). Nothing is ever deleted
//! by a name that only the magnet link (`dn`) or an unverified source gives: a job that
//! never had its metadata, or failed before its files were set up, leaves `-o`
//! untouched. A path another job lists in the same folder stays; so does everything when
//! another job has the same torrent or content. Errors do not stop the removal: every
//! path is tried, the pin always goes, and what failed is reported; the job is then kept
//! (not saved as removed) so the removal can be run again. While its data is deleted the
//! job stays in the list (and in every `jobs.json` written meanwhile), marked
//! `removing`: it cannot be started, resumed, paused or removed again, the queue skips
//! it, and a new job with its infohash is refused (whose working folder and resume data
//! would be deleted); only then is it dropped and the list saved. The mark is not saved:
//! after a crash the job is back as it was, to be removed again.
//!
//! Lock order: the queue mutex before the jobs mutex; the jobs mutex is never held
//! across an await or while writing files other than `jobs.json`.

use super::mapping;
use super::server::{self, error, json, Daemon, Running, Signaller};
use crate::cli::{Cli, DownloadArgs};
use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::http::{Response, StatusCode};
use bittorrent::engine::{Phase, Stats};
use clap::CommandFactory;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead};
use tokio::sync::broadcast;

/// Longest line of a job's output that is read (a piece map of a few million pieces).
const MAX_LINE: usize = 16 << 20;
/// How long a stop waits for a job's process.
const STOP_WAIT: Duration = Duration::from_secs(25);

/// The lines of a job's process; `true` with the last.
pub type Receiver = broadcast::Receiver<(bool, Bytes)>;

pub enum JobSpec {
    Magnet(String),
    /// An uploaded torrent, parsed once by the API: its bytes, stored name and infohash.
    Torrent {
        bytes: Vec<u8>,
        name: String,
        info_hash: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for one of the download slots.
    Queued,
    Starting,
    Metadata,
    Checking,
    Downloading,
    Seeding,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    /// The job's process runs (or should run) in this state.
    fn live(self) -> bool {
        matches!(
            self,
            State::Queued
                | State::Starting
                | State::Metadata
                | State::Checking
                | State::Downloading
                | State::Seeding
        )
    }
}

/// What is kept of a job across daemon restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    id: String,
    /// The magnet link, or the name of the uploaded .torrent.
    source: String,
    /// The saved .torrent of a job started from one.
    torrent: Option<PathBuf>,
    /// Options of the download command, as API query pairs.
    options: Vec<(String, String)>,
    seed: bool,
    /// Where the files are kept (`-o`, or the job's own folder when it seeds).
    output: Option<PathBuf>,
    /// The job made `output` itself (removed with the job's data).
    own_output: bool,
    state: State,
    name: Option<String>,
    info_hash: Option<String>,
    cid: Option<String>,
    gateway_url: Option<String>,
    error: Option<String>,
    created: u64,
    size: u64,
    have: u64,
    /// What the detail view shows once the process has ended (kept across restarts).
    #[serde(default)]
    files: Vec<FileInfo>,
    #[serde(default)]
    piece_count: u32,
    #[serde(default)]
    piece_map: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct FileInfo {
    index: usize,
    path: String,
    length: u64,
    /// The name its `added` line has (its path below the download folder).
    added_name: String,
    cid: Option<String>,
    /// Whether the job downloads it (records from before this field: yes).
    selected: Option<bool>,
}

/// Why the daemon stopped a job's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Pause,
    Cancel,
    Remove,
    Shutdown,
}

struct Job {
    rec: Record,
    stats: Option<Stats>,
    /// The last `port-mapping` event of its process (`Bittorrent.PortMapping`).
    port_mapping: Option<node::portmap::PortMapStatus>,
    /// Signals the job's process (set while it runs; never a bare pid, see
    /// [`Signaller`]).
    signal: Option<Signaller>,
    running: bool,
    stop: Option<Stop>,
    /// Its data is being deleted by a removal (not saved; see the module doc).
    removing: bool,
    /// Lines of the process, and `true` with the last one.
    events: broadcast::Sender<(bool, Bytes)>,
}

pub struct Jobs {
    program: server::Program,
    dir: PathBuf,
    inner: Mutex<Vec<Job>>,
    stopping: AtomicBool,
    /// How many jobs may download at once (0: no limit).
    max_active: usize,
    /// Held while queued jobs are chosen and started, so two never take one slot.
    queue: Mutex<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What [`Jobs::create`] makes: eight hex digits (a little more room is allowed).
fn is_job_id(id: &str) -> bool {
    (1..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Jobs {
    /// Reads the saved jobs (none on first use).
    pub fn load(program: server::Program, max_active: usize) -> anyhow::Result<Arc<Jobs>> {
        let dir = program.btfs_path.join("bittorrent").join("jobs");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("jobs.json");
        let records: Vec<Record> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{}: not a job list", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("{}", file.display())),
        };
        // Ids name files beside the list (`<id>.metadata.torrent`, `<id>/files`): only
        // the ones btfs makes are taken, so an edited list cannot point outside.
        if let Some(bad) = records.iter().find(|r| !is_job_id(&r.id)) {
            anyhow::bail!(
                "{}: job id {:?} is not one btfs makes (hex digits); restore the file or remove that job from it",
                file.display(),
                bad.id
            );
        }
        let jobs = records
            .into_iter()
            .map(|rec| Job {
                stats: None,
                port_mapping: None,
                rec,
                signal: None,
                running: false,
                stop: None,
                removing: false,
                events: broadcast::channel(32).0,
            })
            .collect();
        Ok(Arc::new(Jobs {
            program,
            dir,
            inner: Mutex::new(jobs),
            stopping: AtomicBool::new(false),
            max_active,
            queue: Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Job>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the jobs that were running, queued or seeding when the daemon last
    /// stopped: all of them join the queue (seeds pass it at once).
    pub fn start_saved(self: &Arc<Self>) {
        {
            let mut jobs = self.lock();
            for j in jobs.iter_mut() {
                if j.rec.state.live() || (j.rec.seed && j.rec.state == State::Completed) {
                    j.rec.state = State::Queued;
                }
            }
            self.save(&jobs);
        }
        self.pump();
    }

    /// Starts queued jobs, oldest first, while download slots are free; a queued job
    /// that is already complete (a seed) starts whatever the count.
    fn pump(self: &Arc<Self>) {
        let _queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopping() {
                return;
            }
            let next = {
                let jobs = self.lock();
                let active = jobs.iter().filter(|j| j.downloading()).count();
                let room = self.max_active == 0 || active < self.max_active;
                jobs.iter()
                    .filter(|j| !j.running && !j.removing && j.rec.state == State::Queued)
                    .filter(|j| room || j.complete())
                    .min_by_key(|j| j.rec.created)
                    .map(|j| j.rec.id.clone())
            };
            let Some(id) = next else { return };
            // A job that cannot start is marked failed, so it is not chosen again.
            if let Err(e) = self.start(&id) {
                eprintln!(
                    "job {id}: cannot start: {}",
                    crate::output::clean(&format!("{e:#}"))
                );
            }
        }
    }

    /// Puts a job in the queue and starts what the queue allows.
    fn enqueue(self: &Arc<Self>, id: &str) {
        {
            let mut jobs = self.lock();
            let found = jobs
                .iter_mut()
                .find(|j| j.rec.id == id && !j.running && !j.removing);
            if let Some(j) = found {
                j.rec.state = State::Queued;
                j.rec.error = None;
                self.save(&jobs);
            }
        }
        self.pump();
    }

    fn save(&self, jobs: &[Job]) {
        let records: Vec<&Record> = jobs.iter().map(|j| &j.rec).collect();
        let file = self.dir.join("jobs.json");
        let tmp = self.dir.join("jobs.json.tmp");
        let r = serde_json::to_vec_pretty(&records)
            .map_err(std::io::Error::from)
            .and_then(|b| {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&b)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &file)
            });
        if let Err(e) = r {
            eprintln!("saving {}: {e}", file.display());
        }
    }

    /// A new job, started at once when a download slot is free, else queued.
    /// (Errors only before the job exists.)
    pub fn create(
        self: &Arc<Self>,
        spec: JobSpec,
        options: Vec<(String, String)>,
        args: &DownloadArgs,
    ) -> anyhow::Result<(String, Receiver)> {
        if self.stopping() {
            anyhow::bail!("the daemon is stopping");
        }
        let id = loop {
            let id = format!("{:08x}", rand::random::<u32>());
            if !self.lock().iter().any(|j| j.rec.id == id) {
                break id;
            }
        };
        // Name and infohash as far as they are known before the process runs (shown
        // while the job is queued; the process reports its own).
        let (source, torrent, name, info_hash) = match spec {
            JobSpec::Magnet(m) => {
                let parsed = m.parse::<bittorrent::Magnet>().ok();
                let name = parsed.as_ref().and_then(|p| p.display_name.clone());
                let ih = parsed.map(|p| p.wire_info_hash().to_hex());
                (m, None, name, ih)
            }
            JobSpec::Torrent {
                bytes,
                name,
                info_hash,
            } => {
                let p = self.dir.join(format!("{id}.torrent"));
                std::fs::write(&p, &bytes).with_context(|| format!("{}", p.display()))?;
                (
                    format!("{name}.torrent"),
                    Some(p),
                    Some(name),
                    Some(info_hash),
                )
            }
        };
        let (output, own_output) = match (&args.output, args.seed) {
            (Some(o), _) => (Some(o.clone()), false),
            (None, true) => (Some(self.dir.join(&id).join("files")), true),
            (None, false) => (None, false),
        };
        let options: Vec<(String, String)> = options
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "detach" | "output" | "o"))
            .collect();
        let rec = Record {
            id: id.clone(),
            source,
            torrent,
            options,
            seed: args.seed,
            output,
            own_output,
            state: State::Queued,
            name,
            info_hash,
            cid: None,
            gateway_url: None,
            error: None,
            created: now(),
            size: 0,
            have: 0,
            files: Vec::new(),
            piece_count: 0,
            piece_map: String::new(),
        };
        let rx = {
            let mut jobs = self.lock();
            // Checked under the lock that marks removals: a removal marked later sees
            // this job and keeps the data.
            let removing = jobs
                .iter()
                .find(|j| j.removing && same_info_hash(&j.rec, &rec));
            if let Some(r) = removing {
                let e = BeingRemoved(format!(
                    "job {} with the same torrent is being removed (with its data); add \
                     it again once that is done",
                    r.rec.id
                ));
                drop(jobs);
                if let Some(t) = &rec.torrent {
                    let _ = std::fs::remove_file(t);
                }
                return Err(e.into());
            }
            let events = broadcast::channel(32).0;
            // Subscribed before the process starts, so nothing it prints is missed.
            let rx = events.subscribe();
            jobs.push(Job {
                rec,
                stats: None,
                port_mapping: None,
                signal: None,
                running: false,
                stop: None,
                removing: false,
                events,
            });
            self.save(&jobs);
            rx
        };
        // A job that cannot start is failed with its error, and its stream ends.
        self.enqueue(&id);
        Ok((id, rx))
    }

    /// Starts a queued job's process. A failure to start marks the job failed (one
    /// refused because the daemon is stopping stays queued for the next daemon).
    fn start(self: &Arc<Self>, id: &str) -> anyhow::Result<()> {
        let r = self.try_start(id);
        if let (Err(e), false) = (&r, self.stopping()) {
            let mut jobs = self.lock();
            if let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) {
                if !job.running {
                    job.rec.state = State::Failed;
                    job.rec.error = Some(format!("{e:#}"));
                    job.send_end();
                    self.save(&jobs);
                }
            }
        }
        r
    }

    fn try_start(self: &Arc<Self>, id: &str) -> anyhow::Result<()> {
        if self.stopping.load(Ordering::SeqCst) {
            anyhow::bail!("the daemon is stopping");
        }
        let (argv, output) = {
            let mut jobs = self.lock();
            let job = jobs
                .iter_mut()
                .find(|j| j.rec.id == id)
                .context("no such job")?;
            if job.running || job.removing || job.rec.state != State::Queued {
                // Already running, or paused, cancelled or removed since it was chosen.
                return Ok(());
            }
            let mut pairs = job.rec.options.clone();
            if let Some(o) = &job.rec.output {
                pairs.push(("output".into(), o.display().to_string()));
            }
            pairs.push(("progress-detail".into(), "true".into()));
            // Each job is a process with a listen port of its own: from the config's
            // Port, the range of 20 after it runs out after ~20 jobs. A random port each
            // (unless the job asked for one); once the daemon runs one session for every
            // job, they share its port instead.
            if !pairs.iter().any(|(k, _)| k == "port" || k == "random-port") {
                pairs.push(("random-port".into(), "true".into()));
            }
            match &job.rec.torrent {
                Some(t) => pairs.push(("torrent".into(), t.display().to_string())),
                None => {
                    // A magnet's metadata is kept once fetched: a restart needs no peer
                    // that has it.
                    let cache = self.dir.join(format!("{}.metadata.torrent", job.rec.id));
                    pairs.push(("metadata-cache".into(), cache.display().to_string()));
                    pairs.push(("arg".into(), job.rec.source.clone()));
                }
            }
            let argv =
                mapping::argv_from_query(&Cli::command(), &["bittorrent", "download"], &pairs)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            // Claimed under the lock: a second start returns above, and a stop asked
            // for meanwhile is kept in `stop` and applied once the process exists.
            job.running = true;
            job.signal = None;
            job.stop = None;
            (argv, job.rec.output.clone())
        };
        let spawned = output
            .as_ref()
            .map_or(Ok(()), |o| {
                std::fs::create_dir_all(o).with_context(|| format!("creating {}", o.display()))
            })
            .and_then(|()| {
                self.program
                    .spawn("json", &argv, Stdio::null(), None)
                    .context("starting the download")
            });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let mut jobs = self.lock();
                if let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) {
                    job.running = false;
                }
                return Err(e);
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let running = Running::new(child);
        {
            let mut jobs = self.lock();
            let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) else {
                return Ok(());
            };
            job.signal = Some(running.signaller());
            job.rec.error = None;
            if job.stop.is_some() {
                job.terminate();
            } else if !job.rec.state.live() || job.rec.state == State::Queued {
                job.rec.state = State::Starting;
            }
            self.save(&jobs);
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move { me.supervise(id, running, stdout, stderr).await });
        Ok(())
    }

    async fn supervise(
        self: Arc<Self>,
        id: String,
        mut running: Running,
        stdout: impl AsyncRead + Unpin + Send + 'static,
        stderr: impl AsyncRead + Unpin + Send + 'static,
    ) {
        // Read to the end whatever comes (a closed pipe would make the child fail on
        // its next message); the tail is kept for the error message.
        let stderr_task = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stderr = stderr;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 32 << 10 {
                    tail.drain(..tail.len() - (16 << 10));
                }
            }
            String::from_utf8_lossy(&tail).into_owned()
        });
        let mut reader = tokio::io::BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = match read_line(&mut reader, &mut line).await {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
            let freed = {
                let mut jobs = self.lock();
                let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) else {
                    break;
                };
                let was = job.downloading();
                let changed = value.as_ref().is_some_and(|v| job.apply(v));
                let mut out = text.to_string();
                out.push('\n');
                let _ = job.events.send((false, Bytes::from(out)));
                let freed = was && !job.downloading();
                if changed {
                    self.save(&jobs);
                }
                freed
            };
            // Seeding (or complete and importing) takes no download slot.
            if freed {
                self.pump();
            }
        }
        let code = running.wait().await;
        let stderr = stderr_task.await.unwrap_or_default();
        let mut jobs = self.lock();
        let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) else {
            return;
        };
        job.running = false;
        job.signal = None;
        let stop = match job.stop.take() {
            // The daemon is stopping (its signal may have reached the child first).
            None if self.stopping() => Some(Stop::Shutdown),
            other => other,
        };
        // Exit 0 means every piece was verified (a seeding download stopped, or one
        // that ended just as it was told to stop).
        match stop {
            // Kept as it was, so the next daemon starts it again.
            Some(Stop::Shutdown) => {}
            // A paused seed seeds again when resumed.
            Some(Stop::Pause) if code == 0 && !job.rec.seed => job.rec.state = State::Completed,
            Some(Stop::Cancel | Stop::Remove) if code == 0 => job.rec.state = State::Completed,
            Some(Stop::Pause) => job.rec.state = State::Paused,
            // A removal that outlasted its wait leaves the job cancelled, not live.
            Some(Stop::Cancel | Stop::Remove) => job.rec.state = State::Cancelled,
            None if code == 0 => job.rec.state = State::Completed,
            None => {
                job.rec.state = State::Failed;
                job.rec.error = Some(server::error_of(&stderr).0);
            }
        }
        job.keep_detail();
        if let Some(s) = &mut job.stats {
            s.download_rate = 0.0;
            s.upload_rate = 0.0;
            s.peers = 0;
            s.seeds = 0;
            // No connections are left; the piece map and trackers stay.
            if let Some(d) = &mut s.detail {
                d.peer_list.clear();
            }
        }
        job.send_end();
        self.save(&jobs);
        drop(jobs);
        self.pump();
    }

    /// The job as the API shows it.
    pub fn summary(&self, id: &str) -> Option<serde_json::Value> {
        self.lock()
            .iter()
            .find(|j| j.rec.id == id)
            .map(Job::summary)
    }

    fn list(&self) -> Vec<serde_json::Value> {
        self.lock().iter().map(Job::summary).collect()
    }

    fn detail(&self, id: &str) -> Option<serde_json::Value> {
        self.lock().iter().find(|j| j.rec.id == id).map(Job::detail)
    }

    fn stop(&self, id: &str, why: Stop) -> Result<bool, String> {
        let mut jobs = self.lock();
        let job = jobs
            .iter_mut()
            .find(|j| j.rec.id == id)
            .ok_or_else(|| format!("no job {id:?} (see jobs ls)"))?;
        if job.removing {
            return Err(format!("job {id} is being removed"));
        }
        if job.running {
            job.stop = Some(why);
            // While it is being started it has no handle yet: the start applies it.
            job.terminate();
            return Ok(true);
        }
        let before = job.rec.state;
        match why {
            Stop::Pause if job.rec.state.live() => job.rec.state = State::Paused,
            Stop::Cancel if job.rec.state != State::Completed => job.rec.state = State::Cancelled,
            Stop::Remove if job.rec.state == State::Queued => job.rec.state = State::Cancelled,
            _ => {}
        }
        // A queued job stopped here has no process to end the streams attached to it.
        if before == State::Queued && job.rec.state != State::Queued {
            job.send_end();
        }
        self.save(&jobs);
        Ok(false)
    }

    async fn wait_stopped(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while tokio::time::Instant::now() < deadline {
            let running = self.lock().iter().any(|j| j.rec.id == id && j.running);
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn resume(self: &Arc<Self>, id: &str) -> Result<(), String> {
        {
            let jobs = self.lock();
            let job = jobs
                .iter()
                .find(|j| j.rec.id == id)
                .ok_or_else(|| format!("no job {id:?} (see jobs ls)"))?;
            if job.removing {
                return Err(format!("job {id} is being removed"));
            }
            if job.running {
                return Ok(());
            }
            if job.rec.state == State::Completed && !job.rec.seed {
                return Err(format!("job {id} is complete"));
            }
        }
        self.enqueue(id);
        match self.lock().iter().find(|j| j.rec.id == id) {
            Some(j) if j.rec.state == State::Failed && !j.running => {
                Err(j.rec.error.clone().unwrap_or_else(|| "cannot start".into()))
            }
            _ => Ok(()),
        }
    }

    /// Removes a job (stopping it first); with `delete_data` also its files, resume
    /// data and the pin of its content. When some data cannot be deleted, the job stays
    /// (with everything else done) and the error says what is left.
    async fn remove(&self, id: &str, delete_data: bool) -> Result<Option<String>, RemoveError> {
        if self.stop(id, Stop::Remove).map_err(RemoveError::Refused)? {
            self.wait_stopped(id).await;
        }
        // Kept in the list (and in every save) while its data goes, marked so that
        // nothing starts it and no job with its torrent is added meanwhile.
        let rec = {
            let mut jobs = self.lock();
            let job = jobs
                .iter_mut()
                .find(|j| j.rec.id == id)
                .ok_or_else(|| RemoveError::Refused(format!("no job {id:?}")))?;
            if job.removing {
                return Err(RemoveError::Refused(format!("job {id} is being removed")));
            }
            if job.running {
                return Err(RemoveError::Refused(format!("job {id} did not stop")));
            }
            job.removing = true;
            job.rec.clone()
        };
        let mut kept = None;
        if delete_data {
            let others = self.others_sharing(&rec);
            if others.same_torrent {
                kept = Some("another job has the same torrent: its data stays".to_string());
            } else {
                let (path, r, keep) = (self.program.btfs_path.clone(), rec.clone(), others.paths);
                let errors = tokio::task::spawn_blocking(move || delete_job_data(&path, &r, &keep))
                    .await
                    .unwrap_or_else(|e| vec![format!("deleting the data failed: {e}")]);
                if !errors.is_empty() {
                    let mut jobs = self.lock();
                    if let Some(job) = jobs.iter_mut().find(|j| j.rec.id == id) {
                        job.removing = false;
                    }
                    return Err(RemoveError::Data(errors));
                }
            }
        }
        {
            let mut jobs = self.lock();
            jobs.retain(|j| j.rec.id != id);
            self.save(&jobs);
        }
        if let Some(t) = &rec.torrent {
            let _ = std::fs::remove_file(t);
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{}.metadata.torrent", rec.id)));
        let _ = std::fs::remove_dir(self.dir.join(&rec.id));
        Ok(kept)
    }

    /// What the other jobs share with `rec`: the same torrent or content, and the paths
    /// they list in the same `-o` folder.
    fn others_sharing(&self, rec: &Record) -> Shared {
        let (same_torrent, folders) = {
            let jobs = self.lock();
            // Every job but this one (one being removed too counts: its data stays).
            let others = || jobs.iter().filter(|j| j.rec.id != rec.id);
            let same = others().any(|j| {
                same_info_hash(&j.rec, rec) || (rec.cid.is_some() && j.rec.cid == rec.cid)
            });
            let folders: Vec<(PathBuf, Vec<String>)> = others()
                .filter(|j| !j.rec.own_output)
                .filter_map(|j| {
                    let names = j
                        .rec
                        .files
                        .iter()
                        .filter(|f| f.selected != Some(false))
                        .map(|f| f.added_name.clone());
                    Some((j.rec.output.clone()?, names.collect()))
                })
                .collect();
            (same, folders)
        };
        let mut paths = HashSet::new();
        if let (Some(mine), false) = (&rec.output, rec.own_output) {
            let mine = same_folder_key(mine);
            for (folder, names) in folders {
                if same_folder_key(&folder) == mine {
                    paths.extend(names);
                }
            }
        }
        Shared {
            same_torrent,
            paths,
        }
    }

    /// Stops every job's process for a daemon shutdown; their states stay as they were
    /// so the next daemon starts them again. Those still running after [`STOP_WAIT`]
    /// are killed.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        {
            let mut jobs = self.lock();
            for j in jobs.iter_mut() {
                if j.running {
                    j.stop = Some(Stop::Shutdown);
                    j.terminate();
                } else if j.rec.state == State::Queued {
                    // No process will end the streams attached to it.
                    j.send_end();
                }
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            let left = self.lock().iter().filter(|j| j.running).count();
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for j in self.lock().iter().filter(|j| j.running) {
                    if let Some(s) = &j.signal {
                        s.kill();
                    }
                }
                // Reaped by their supervisors; a moment for them to record it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let jobs = self.lock();
        self.save(&jobs);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Why a job was not removed.
#[derive(Debug)]
enum RemoveError {
    /// No such job, or it did not stop.
    Refused(String),
    /// Some of its data could not be deleted (the rest was); the job is kept.
    Data(Vec<String>),
}

/// What other jobs share with one being removed with its data.
struct Shared {
    /// Another job has the same torrent or content: nothing is deleted.
    same_torrent: bool,
    /// Paths other jobs list below the same `-o` folder: they stay.
    paths: HashSet<String>,
}

/// Refuses a new job while a job with its torrent is being removed.
#[derive(Debug)]
pub struct BeingRemoved(String);

impl std::fmt::Display for BeingRemoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BeingRemoved {}

/// Both records name the same infohash (hex, in either case).
fn same_info_hash(a: &Record, b: &Record) -> bool {
    matches!((&a.info_hash, &b.info_hash), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
}

/// A folder as compared between jobs: its real path when it has one.
fn same_folder_key(p: &std::path::Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Reads one line (without a cap on the reader's buffer growing past [`MAX_LINE`]).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() < MAX_LINE {
            out.extend_from_slice(&buf[..take.min(MAX_LINE - out.len())]);
        }
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

impl Job {
    /// SIGTERM to the job's process, if it has one.
    fn terminate(&self) {
        if let Some(s) = &self.signal {
            s.terminate();
        }
    }

    /// Every wanted byte is verified (as last known).
    fn complete(&self) -> bool {
        self.rec.size > 0 && self.rec.have >= self.rec.size
    }

    /// Takes a download slot: its process runs and it is not yet complete.
    fn downloading(&self) -> bool {
        self.running && self.rec.state != State::Seeding && !self.complete()
    }

    /// Tells the attached streams that the job has ended.
    fn send_end(&self) {
        let end = serde_json::json!({"Type": "end", "Job": self.summary()});
        let mut out = end.to_string();
        out.push('\n');
        let _ = self.events.send((true, Bytes::from(out)));
    }

    /// Keeps the last piece map in the record once the process has ended.
    fn keep_detail(&mut self) {
        if let Some(d) = self.stats.as_ref().and_then(|s| s.detail.as_ref()) {
            if !d.piece_map.is_empty() {
                self.rec.piece_map = d.piece_map.clone();
            }
        }
    }

    /// Takes in one event of the job's process; true when the record changed.
    fn apply(&mut self, v: &serde_json::Value) -> bool {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let before = (self.rec.state, self.rec.name.clone(), self.rec.cid.clone());
        match v["Type"].as_str() {
            Some("metadata") => {
                if v["Phase"] == "Fetching" {
                    self.rec.state = State::Metadata;
                    self.rec.info_hash = s("InfoHash").or(self.rec.info_hash.take());
                }
                if let Some(n) = s("Name") {
                    self.rec.name = Some(n);
                }
            }
            Some("torrent") => {
                self.rec.name = s("Name").or(self.rec.name.take());
                self.rec.info_hash = s("InfoHash").or(self.rec.info_hash.take());
                self.rec.piece_count = v["PieceCount"].as_u64().unwrap_or(0) as u32;
                if let Ok(files) = serde_json::from_value::<Vec<FileInfo>>(v["Files"].clone()) {
                    self.rec.files = files;
                }
            }
            Some("port-mapping") => {
                if let Ok(pm) = serde_json::from_value(v.clone()) {
                    self.port_mapping = Some(pm);
                }
            }
            Some("progress") => {
                if let Ok(stats) = serde_json::from_value::<Stats>(v.clone()) {
                    let state = match stats.phase {
                        Phase::Checking => Some(State::Checking),
                        Phase::Downloading => Some(State::Downloading),
                        Phase::Seeding => Some(State::Seeding),
                        _ => None,
                    };
                    if let Some(st) = state {
                        self.rec.state = st;
                    }
                    self.rec.size = stats.bytes_wanted;
                    self.rec.have = stats.bytes_have;
                    self.stats = Some(stats);
                }
            }
            Some("added") => {
                if let (Some(name), Some(hash)) = (s("Name"), s("Hash")) {
                    for f in &mut self.rec.files {
                        if f.added_name == name {
                            f.cid = Some(hash.clone());
                        }
                    }
                }
            }
            Some("imported") => {
                self.rec.cid = s("Cid");
                self.rec.gateway_url = s("GatewayUrl");
            }
            Some("summary") => {
                if let Some(c) = s("Cid") {
                    self.rec.cid = Some(c);
                }
                if let Some(g) = s("GatewayUrl") {
                    self.rec.gateway_url = Some(g);
                }
                if let Some(n) = s("Name") {
                    self.rec.name = Some(n);
                }
                self.rec.info_hash = s("InfoHash").or(self.rec.info_hash.take());
                if v["AlreadyImported"] == true {
                    self.rec.have = self.rec.size;
                    if self.rec.size == 0 {
                        // Nothing was downloaded: the import itself is the progress.
                        self.stats = None;
                    }
                }
                if let Ok(stats) = serde_json::from_value::<Stats>(v.clone()) {
                    if v.get("BytesWanted").is_some() {
                        self.rec.size = stats.bytes_wanted;
                        self.rec.have = stats.bytes_have;
                        // The summary's own detail is the last word (the piece map
                        // complete); an older one only when it has none.
                        let older = self.stats.take().and_then(|s| s.detail);
                        let detail = stats.detail.clone().or(older);
                        self.stats = Some(Stats { detail, ..stats });
                    }
                }
            }
            _ => {}
        }
        before != (self.rec.state, self.rec.name.clone(), self.rec.cid.clone())
    }

    fn summary(&self) -> serde_json::Value {
        let r = &self.rec;
        let st = self.stats.clone().unwrap_or_default();
        let done = r.state == State::Completed || (r.cid.is_some() && r.size == r.have);
        let progress = if r.size > 0 {
            r.have as f64 / r.size as f64
        } else if done {
            1.0
        } else {
            0.0
        };
        let left = r.size.saturating_sub(r.have);
        let eta = (self.running && st.download_rate >= 1.0 && left > 0)
            .then(|| left as f64 / st.download_rate);
        serde_json::json!({
            "Id": r.id,
            "Name": r.name,
            "InfoHash": r.info_hash,
            "Source": r.source,
            "State": r.state,
            "Seed": r.seed,
            "Size": r.size,
            "Have": r.have,
            "Progress": progress,
            "PiecesHave": st.pieces_have,
            "PiecesWanted": st.pieces_wanted,
            "DownloadRate": if self.running { st.download_rate } else { 0.0 },
            "UploadRate": if self.running { st.upload_rate } else { 0.0 },
            "Downloaded": st.downloaded,
            "Uploaded": st.uploaded,
            "Peers": if self.running { st.peers } else { 0 },
            "Seeds": if self.running { st.seeds } else { 0 },
            "Eta": eta,
            "Cid": r.cid,
            "GatewayUrl": r.gateway_url,
            "Error": r.error,
            "Created": r.created,
            "Output": r.output.as_ref().filter(|_| !r.own_output).map(|o| o.display().to_string()),
            // Where peers reach it while it runs (for seeds).
            "ListenPort": (self.running && st.listen_port > 0).then_some(st.listen_port),
        })
    }

    fn detail(&self) -> serde_json::Value {
        let mut v = self.summary();
        let detail = self
            .stats
            .as_ref()
            .and_then(|s| s.detail.clone())
            .unwrap_or_default();
        v["Files"] = serde_json::json!(self
            .rec
            .files
            .iter()
            .map(|f| serde_json::json!({"Index": f.index, "Path": f.path, "Length": f.length, "Cid": f.cid}))
            .collect::<Vec<_>>());
        v["PeerList"] = serde_json::to_value(&detail.peer_list).unwrap_or_default();
        v["Trackers"] = serde_json::to_value(&detail.trackers).unwrap_or_default();
        v["PortMapping"] = serde_json::to_value(&self.port_mapping).unwrap_or_default();
        v["PieceCount"] = self.rec.piece_count.into();
        v["PieceMap"] = if detail.piece_map.is_empty() {
            self.rec.piece_map.clone().into()
        } else {
            detail.piece_map.into()
        };
        v
    }
}

/// `POST /api/v1/bittorrent/jobs/<sub>?arg=ID`.
pub async fn command(d: &Daemon, sub: &str, query: &[(String, String)]) -> Response<Body> {
    let jobs = &d.jobs;
    if sub == "ls" {
        return json(StatusCode::OK, &serde_json::json!({ "Jobs": jobs.list() }));
    }
    if !matches!(sub, "show" | "pause" | "resume" | "cancel" | "rm") {
        return error(
            StatusCode::NOT_FOUND,
            1,
            format!("jobs {sub}: no such command (ls, show, pause, resume, cancel, rm, events)"),
        );
    }
    let Some(id) = query
        .iter()
        .find(|(k, _)| k == "arg")
        .map(|(_, v)| v.as_str())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            2,
            format!("jobs {sub}: give the job id as arg=ID"),
        );
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            1,
            format!("no job {id:?} (see jobs ls)"),
        )
    };
    if jobs.summary(id).is_none() {
        return not_found();
    }
    match sub {
        "show" => {}
        "pause" | "cancel" => {
            let why = if sub == "pause" {
                Stop::Pause
            } else {
                Stop::Cancel
            };
            match jobs.stop(id, why) {
                Ok(true) => jobs.wait_stopped(id).await,
                Ok(false) => {}
                Err(e) if jobs.summary(id).is_some() => return error(StatusCode::CONFLICT, 1, e),
                Err(_) => return not_found(),
            }
        }
        "resume" => {
            if let Err(e) = jobs.resume(id) {
                let status = if jobs.stopping() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::CONFLICT
                };
                return error(status, 1, e);
            }
        }
        _ => {
            let delete = query
                .iter()
                .any(|(k, v)| k == "delete-data" && matches!(v.as_str(), "" | "true" | "1"));
            return match jobs.remove(id, delete).await {
                Ok(kept) => json(
                    StatusCode::OK,
                    &serde_json::json!({"Id": id, "Removed": true, "DataKept": kept}),
                ),
                Err(RemoveError::Refused(e)) => error(StatusCode::CONFLICT, 1, e),
                Err(RemoveError::Data(errors)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    1,
                    format!(
                        "job {id} is kept: some of its data could not be deleted ({}); \
                         remove it again once fixed",
                        super::delete::summary(&errors)
                    ),
                ),
            };
        }
    }
    let v = if sub == "show" {
        jobs.detail(id)
    } else {
        jobs.summary(id)
    };
    match v {
        Some(v) => json(StatusCode::OK, &v),
        None => not_found(),
    }
}

/// The events of one job as newline-delimited JSON: the job, then every line its process
/// prints, then `{"Type": "end", "Job": …}`. Closing the connection cancels the job.
pub fn attach(jobs: Arc<Jobs>, id: String, rx: Receiver) -> Response<Body> {
    let Some(job) = jobs.summary(&id) else {
        return error(StatusCode::NOT_FOUND, 1, "no such job");
    };
    let mut first = serde_json::json!({"Type": "job", "Job": job}).to_string();
    first.push('\n');
    /// Cancels the job when the stream is dropped before its end.
    struct Attached {
        jobs: Arc<Jobs>,
        id: String,
        ended: bool,
    }
    impl Attached {
        fn end(&mut self) {
            self.ended = true;
        }
    }
    impl Drop for Attached {
        fn drop(&mut self) {
            if !self.ended && !self.jobs.stopping() {
                let _ = self.jobs.stop(&self.id, Stop::Cancel);
            }
        }
    }
    let state = (
        Some(Bytes::from(first)),
        rx,
        Attached {
            jobs,
            id,
            ended: false,
        },
    );
    let stream = futures_lite::stream::unfold(state, |(first, mut rx, mut att)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, std::io::Error>(f), (None, rx, att)));
        }
        if att.ended {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok((last, b)) => {
                    att.ended = last;
                    return Some((Ok(b), (None, rx, att)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    att.end();
                    return None;
                }
            }
        }
    });
    server::uncached("application/x-ndjson", Body::from_stream(stream))
}

/// `GET /api/v1/bittorrent/jobs/events[?arg=ID]`: server-sent events, about once a
/// second: `jobs` with every job, and `detail` with the job `arg` names.
pub fn events(d: Arc<Daemon>, query: &[(String, String)]) -> Response<Body> {
    let id = query
        .iter()
        .find(|(k, _)| k == "arg")
        .map(|(_, v)| v.clone());
    let jobs = d.jobs.clone();
    let tick = tokio::time::interval(Duration::from_secs(1));
    let stream =
        futures_lite::stream::unfold((jobs, id, tick), |(jobs, id, mut tick)| async move {
            tick.tick().await;
            if jobs.stopping() {
                return None;
            }
            let mut out = format!(
                "event: jobs\ndata: {}\n\n",
                serde_json::json!({ "Jobs": jobs.list() })
            );
            if let Some(v) = id.as_deref().and_then(|i| jobs.detail(i)) {
                out.push_str(&format!("event: detail\ndata: {v}\n\n"));
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(out)), (jobs, id, tick)))
        });
    server::uncached("text/event-stream", Body::from_stream(stream))
}

/// Reads a `jobs.json` as [`Jobs::load`] does and writes its records back as
/// [`Jobs::save`] does; for the `jobs_json` fuzz target (what is saved loads again).
#[doc(hidden)]
pub fn reparse_saved(bytes: &[u8]) -> serde_json::Result<Vec<u8>> {
    let records: Vec<Record> = serde_json::from_slice(bytes)?;
    serde_json::to_vec_pretty(&records)
}

/// Deletes a removed job's data, skipping `keep` (paths below its `-o` folder that
/// other jobs list). The pin and the filestore's references into the files go first,
/// in the repo, so a crash never leaves them naming deleted files (a leaf other
/// pinned content shares is stored as a block first, see `Repo::release_files`).
/// Every other step is tried. What failed. Blocking (file system and database work):
/// run on a blocking thread.
fn delete_job_data(btfs_path: &Path, rec: &Record, keep: &HashSet<String>) -> Vec<String> {
    let mut errors = Vec::new();
    let bt = btfs_path.join("bittorrent");
    let ih = rec
        .info_hash
        .as_deref()
        .filter(|ih| ih.len() == 40 && ih.bytes().all(|b| b.is_ascii_hexdigit()));
    // The repo's own folder for the download is the job's only when it had no -o.
    let working = ih
        .filter(|_| rec.output.is_none())
        .map(|ih| bt.join("downloads").join(ih));
    let own = match (&rec.output, rec.own_output) {
        (Some(o), true) => Some(o.parent().unwrap_or(o).to_path_buf()),
        _ => None,
    };
    let listed: Vec<&str> = match (&rec.output, rec.own_output) {
        (Some(_), false) => rec
            .files
            .iter()
            .filter(|f| f.selected != Some(false) && !keep.contains(&f.added_name))
            .map(|f| f.added_name.as_str())
            .collect(),
        _ => Vec::new(),
    };
    // What goes, as the filestore names it (canonical paths, known before deleting).
    let mut doomed: Vec<PathBuf> = Vec::new();
    doomed.extend(
        working
            .iter()
            .chain(&own)
            .filter_map(|p| p.canonicalize().ok()),
    );
    if let Some(o) = &rec.output {
        doomed.extend(listed.iter().filter_map(|n| o.join(n).canonicalize().ok()));
    }
    // A download of this torrent into the repo's folder (one outside the daemon's
    // jobs) holds its lock: then nothing goes. Held until the folder is gone.
    let _working_lock = match (ih, &working) {
        (Some(ih), Some(_)) => {
            let p = bt.join("downloads").join(format!("{ih}.lock"));
            match std::fs::OpenOptions::new().write(true).open(&p) {
                Ok(f) if f.try_lock().is_err() => {
                    errors.push(format!(
                        "{}: a download of this torrent is running; its data stays",
                        p.display()
                    ));
                    return errors;
                }
                Ok(f) => Some(f),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let cid = rec
        .cid
        .as_deref()
        .and_then(|c| c.parse::<store::Cid>().ok());
    let released = store::Repo::open(btfs_path, store::LockMode::Shared)
        .and_then(|(repo, _)| repo.release_files(cid.as_ref(), &doomed));
    match released {
        // Nothing deleted: the pin or references may still name the files.
        Err(e) => {
            errors.push(format!("releasing the content in the store: {e}"));
            return errors;
        }
        Ok(r) if r.lost > 0 => eprintln!(
            "jobs rm {}: other pinned content needed {} block(s) whose files had \
             changed already; `btfs repo verify` names what is incomplete",
            rec.id, r.lost
        ),
        Ok(_) => {}
    }
    let mut gone = |p: &std::path::Path, r: std::io::Result<()>| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            errors.push(format!("removing {}: {e}", p.display()))
        }
        _ => {}
    };
    if let Some(ih) = ih {
        let resume = bt.join("resume").join(format!("{ih}.resume"));
        gone(&resume, std::fs::remove_file(&resume));
    }
    for folder in working.iter().chain(&own) {
        gone(folder, std::fs::remove_dir_all(folder));
    }
    if let (Some(ih), Some(_)) = (ih, &working) {
        let lock = bt.join("downloads").join(format!("{ih}.lock"));
        gone(&lock, std::fs::remove_file(&lock));
    }
    if let Some(o) = &rec.output {
        errors.extend(super::delete::remove_files(o, listed.iter().copied()));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CID pinned by the job in the tests (any valid one: pins do not need blocks).
    const CID: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

    fn file(added: &str) -> FileInfo {
        FileInfo {
            added_name: added.into(),
            selected: Some(true),
            ..FileInfo::default()
        }
    }

    fn record(id: &str, output: &std::path::Path, files: &[&str], cid: Option<&str>) -> Record {
        Record {
            id: id.into(),
            source: "test".into(),
            torrent: None,
            options: Vec::new(),
            seed: false,
            output: Some(output.to_path_buf()),
            own_output: false,
            state: State::Completed,
            name: None,
            info_hash: Some(id.repeat(40 / id.len())),
            cid: cid.map(str::to_string),
            gateway_url: None,
            error: None,
            created: 0,
            size: 0,
            have: 0,
            files: files.iter().map(|f| file(f)).collect(),
            piece_count: 0,
            piece_map: String::new(),
        }
    }

    /// A repo with `CID` pinned, and the daemon's jobs holding `records`.
    fn jobs_with(root: &std::path::Path, records: &[Record]) -> (Arc<Jobs>, PathBuf) {
        let repo = root.join("repo");
        store::Repo::init(&repo).unwrap();
        let (r, _) = store::Repo::open(&repo, store::LockMode::Shared).unwrap();
        r.pin(&CID.parse().unwrap(), store::repo::PinKind::Recursive)
            .unwrap();
        drop(r);
        let dir = repo.join("bittorrent").join("jobs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jobs.json"), serde_json::to_vec(records).unwrap()).unwrap();
        let program = server::Program {
            exe: PathBuf::from("/nonexistent/btfs"),
            btfs_path: repo.clone(),
            gateway_url: "http://127.0.0.1:1".into(),
        };
        (Jobs::load(program, 0).unwrap(), repo)
    }

    #[test]
    fn a_job_list_with_an_id_that_is_a_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bad = record("0a1b2c3d", tmp.path(), &[], None);
        bad.id = "../x".into();
        let repo = tmp.path().join("repo");
        let dir = repo.join("bittorrent").join("jobs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jobs.json"), serde_json::to_vec(&[bad]).unwrap()).unwrap();
        let program = server::Program {
            exe: PathBuf::from("/nonexistent/btfs"),
            btfs_path: repo,
            gateway_url: "http://127.0.0.1:1".into(),
        };
        let e = Jobs::load(program, 0).err().expect("refused").to_string();
        assert!(e.contains("jobs.json") && e.contains("\"../x\""), "{e}");
        assert!(is_job_id("0a1b2c3d") && !is_job_id("") && !is_job_id("a/b"));
    }

    fn pinned(repo: &std::path::Path) -> bool {
        let (r, _) = store::Repo::open(repo, store::LockMode::Shared).unwrap();
        r.pins().unwrap().iter().any(|(c, _)| c.to_string() == CID)
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Two torrents in one `-o` folder that list the same path (a subset of a folder,
    /// made with another piece length: another infohash and CID): removing one with its
    /// data leaves the path the other lists.
    #[test]
    fn a_path_another_job_lists_in_the_same_folder_stays() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        for f in ["set/a.bin", "set/b.bin"] {
            std::fs::create_dir_all(out.join(f).parent().unwrap()).unwrap();
            std::fs::write(out.join(f), b"x").unwrap();
        }
        let (jobs, _) = jobs_with(
            t.path(),
            &[
                record("a", &out, &["set/a.bin", "set/b.bin"], None),
                // The same folder by another spelling.
                record("b", &out.join("set/.."), &["set/b.bin"], None),
            ],
        );
        assert_eq!(block_on(jobs.remove("a", true)).unwrap(), None);
        assert!(!out.join("set/a.bin").exists());
        assert!(out.join("set/b.bin").exists(), "job b's file was deleted");
        assert!(jobs.summary("a").is_none());
        assert_eq!(block_on(jobs.remove("b", true)).unwrap(), None);
        assert!(!out.join("set").exists());
        assert!(out.exists());
    }

    /// A magnet's download arguments, as the API parses them.
    fn download_args(magnet: &str) -> DownloadArgs {
        use clap::Parser;
        let cli = Cli::try_parse_from(["btfs", "bittorrent", "download", magnet]).unwrap();
        let crate::cli::Command::Bittorrent(bt) = cli.command else {
            panic!("not a bittorrent command")
        };
        let crate::cli::Bittorrent::Download(args) = *bt else {
            panic!("not a download")
        };
        args
    }

    /// While a removal deletes the data, the job stays in every `jobs.json` written
    /// meanwhile (a crash then still has its record), cannot be resumed, and a new job
    /// with its torrent is refused; once the data is gone it is dropped and saved so.
    #[test]
    fn a_job_being_removed_stays_listed_until_its_data_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir_all(out.join("set")).unwrap();
        std::fs::write(out.join("set/a.bin"), b"x").unwrap();
        let mut a = record("a", &out, &["set/a.bin"], Some(CID));
        a.state = State::Paused;
        let b = record("b", &t.path().join("other"), &[], None);
        let (jobs, repo) = jobs_with(t.path(), &[a, b]);
        // The unpin, the first step of the deletion, waits while the repo's database is
        // open here: the removal is held inside its window, the file not deleted yet.
        let db = redb::Database::create(repo.join("datastore.redb")).unwrap();
        let removal = {
            let jobs = jobs.clone();
            std::thread::spawn(move || block_on(jobs.remove("a", true)))
        };
        for waited in 0.. {
            if jobs.lock().iter().any(|j| j.rec.id == "a" && j.removing) {
                break;
            }
            assert!(waited < 2000, "the removal did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            out.join("set/a.bin").exists(),
            "the file went before the pin"
        );
        let saved = || std::fs::read_to_string(repo.join("bittorrent/jobs/jobs.json")).unwrap();
        // Another change saves the list meanwhile.
        assert_eq!(jobs.stop("b", Stop::Pause), Ok(false));
        assert!(saved().contains("\"Id\": \"a\""), "{}", saved());
        let refused = jobs.resume("a").unwrap_err();
        assert!(refused.contains("being removed"), "{refused}");
        let refused = jobs.stop("a", Stop::Cancel).unwrap_err();
        assert!(refused.contains("being removed"), "{refused}");
        let magnet = format!("magnet:?xt=urn:btih:{}", "A".repeat(40));
        let added = jobs.create(
            JobSpec::Magnet(magnet.clone()),
            Vec::new(),
            &download_args(&magnet),
        );
        let Err(e) = added else {
            panic!("a job with the torrent being removed was added")
        };
        assert!(e.is::<BeingRemoved>(), "{e:#}");
        assert_eq!(jobs.list().len(), 2);

        drop(db);
        assert_eq!(removal.join().unwrap().unwrap(), None);
        assert!(!out.join("set/a.bin").exists(), "the file stayed");
        assert!(jobs.summary("a").is_none());
        assert!(!saved().contains("\"Id\": \"a\""), "{}", saved());
        assert!(!pinned(&repo), "the pin stayed");
    }

    /// A file that cannot be deleted does not stop the rest: the other files go, the
    /// pin goes, the error names the file, and the job is kept so the removal can be
    /// run again, which then completes.
    #[test]
    fn errors_do_not_stop_the_removal_and_keep_the_job() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir_all(out.join("set")).unwrap();
        std::fs::write(out.join("set/b.bin"), b"x").unwrap();
        let long = format!("set/{}", "n".repeat(300));
        let (jobs, repo) = jobs_with(
            t.path(),
            &[record("a", &out, &[&long, "set/b.bin"], Some(CID))],
        );
        assert!(pinned(&repo));
        match block_on(jobs.remove("a", true)) {
            Err(RemoveError::Data(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].contains("nnnn"), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !out.join("set/b.bin").exists(),
            "the removal stopped at an error"
        );
        assert!(!pinned(&repo), "the pin stayed");
        assert!(jobs.summary("a").is_some(), "the job is gone");
        let saved = std::fs::read_to_string(repo.join("bittorrent/jobs/jobs.json")).unwrap();
        assert!(saved.contains("\"Id\": \"a\""), "{saved}");

        jobs.lock()[0].rec.files.remove(0);
        assert_eq!(block_on(jobs.remove("a", true)).unwrap(), None);
        assert!(jobs.summary("a").is_none());
        assert!(!out.join("set").exists());
    }
}

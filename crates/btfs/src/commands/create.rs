//! `btfs bittorrent create`: a deterministic .torrent from a file or a directory.

use crate::cli::CreateArgs;
use crate::output::{clean, emit, human_size, Encoding, Output};
use anyhow::{bail, Context};
use bittorrent::create::{create_torrent, CreateOptions, Created};
use serde::Serialize;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub fn run(args: CreateArgs, enc: Encoding) -> anyhow::Result<()> {
    let opts = CreateOptions {
        piece_length: args.piece_length,
        trackers: args
            .trackers
            .iter()
            .map(|t| t.split(',').map(|u| u.trim().to_owned()).collect())
            .collect(),
        web_seeds: args.webseeds.clone(),
        private: args.private,
        comment: args.comment.clone(),
        created_by: None,
        creation_date: args.date.then(now),
        threads: args.threads,
    };
    let several = args.paths.len() > 1;
    if several {
        if let Some(o) = &args.output {
            if !o.is_dir() {
                bail!(
                    "{}: with several paths, -o must be an existing folder",
                    o.display()
                );
            }
        }
    }
    let mut reports = Vec::new();
    for path in &args.paths {
        let created = with_progress(path, |progress| create_torrent(path, &opts, progress))
            .with_context(|| format!("creating a torrent of {}", path.display()))?;
        let file_name = format!("{}.torrent", created.metainfo.info.name);
        let out = match &args.output {
            Some(o) if several || o.is_dir() => o.join(&file_name),
            Some(o) => o.clone(),
            None => PathBuf::from(&file_name),
        };
        write_new(&out, &created.bytes, args.force)?;
        reports.push(CreateReport::new(&created, &out));
    }
    if several {
        emit(&reports, enc)
    } else {
        // Exactly one path was required by the command line.
        emit(&reports.remove(0), enc)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs `f` while a progress line is drawn on stderr, when stderr is a terminal.
fn with_progress<T>(path: &Path, f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T) -> T {
    let total = dir_size(path);
    let hashed = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let show = io::stderr().is_terminal() && total > 64 << 20;
    std::thread::scope(|s| {
        if show {
            s.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    let h = hashed.load(Ordering::Relaxed);
                    eprint!(
                        "\rhashing {}: {} of {} ({:.0}%)   ",
                        clean(&path.display().to_string()),
                        human_size(h),
                        human_size(total),
                        h as f64 * 100.0 / total as f64
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprint!("\r\x1b[K");
            });
        }
        let r = f(&|n| {
            hashed.fetch_add(n, Ordering::Relaxed);
        });
        finished.store(true, Ordering::Relaxed);
        r
    })
}

fn dir_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a torrent.
fn write_new(out: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!("{} exists; use --force to overwrite it", out.display());
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, out));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", out.display()))
}

#[derive(Serialize)]
pub struct CreateReport {
    #[serde(rename = "Torrent")]
    torrent: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "InfoHash")]
    info_hash: String,
    #[serde(rename = "NumFiles")]
    num_files: usize,
    #[serde(rename = "TotalLength")]
    total_length: u64,
    #[serde(rename = "PieceLength")]
    piece_length: u64,
    #[serde(rename = "NumPieces")]
    num_pieces: u64,
    #[serde(rename = "Magnet")]
    magnet: String,
    #[serde(rename = "Skipped", skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<String>,
}

impl CreateReport {
    fn new(c: &Created, out: &Path) -> Self {
        let m = &c.metainfo;
        CreateReport {
            torrent: out.display().to_string(),
            name: m.info.name.clone(),
            info_hash: m.wire_info_hash().to_hex(),
            num_files: m.info.files.len(),
            total_length: m.info.total_length(),
            piece_length: m.info.piece_length,
            num_pieces: m.info.piece_count(),
            magnet: m.magnet().to_string(),
            skipped: c.skipped.iter().map(|p| p.display().to_string()).collect(),
        }
    }
}

impl Output for CreateReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "created {}", clean(&self.torrent))?;
        writeln!(w, "  name       {}", clean(&self.name))?;
        writeln!(w, "  info hash  {}", self.info_hash)?;
        writeln!(
            w,
            "  size       {} in {} file(s), {} pieces of {}",
            human_size(self.total_length),
            self.num_files,
            self.num_pieces,
            human_size(self.piece_length)
        )?;
        writeln!(w, "  magnet     {}", self.magnet)?;
        for s in &self.skipped {
            writeln!(
                w,
                "  skipped    {} (not a regular file or folder)",
                clean(s)
            )?;
        }
        Ok(())
    }
}

impl Output for Vec<CreateReport> {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        self.iter().try_for_each(|r| r.write_text(w))
    }
}

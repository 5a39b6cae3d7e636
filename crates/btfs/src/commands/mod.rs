//! Runs one parsed command and emits its result.

mod bencode;
mod config;
mod create;
pub(crate) mod daemon;
pub(crate) mod download;
mod filestore;
mod magnet;
mod metainfo;
mod portmap;
mod scrape;
pub(crate) mod serve;
pub mod settings;
pub(crate) mod store;

use crate::cli::{Bittorrent, Command};
use crate::output::Encoding;
use anyhow::Context;
use std::io::Read;
use std::path::Path;

pub use scrape::parse_duration;

pub fn run(command: Command, enc: Encoding) -> anyhow::Result<()> {
    match command {
        Command::Bittorrent(bt) => match *bt {
            Bittorrent::Metainfo(a) => metainfo::run(a, enc),
            Bittorrent::Bencode(a) => bencode::run(a, enc),
            Bittorrent::Create(a) => create::run(a, enc),
            Bittorrent::Download(a) => download::run(a, enc),
            Bittorrent::Scrape(a) => scrape::run(a, enc),
            Bittorrent::Serve(a) => serve::run(a, enc),
            Bittorrent::Jobs(_) => anyhow::bail!(
                "jobs are the downloads of a running daemon, and none is running for this repo (start `btfs daemon`)"
            ),
        },
        Command::Init(a) => store::init(a, enc),
        Command::Config(a) => config::run(a, enc),
        Command::Add(a) => store::add(a, enc),
        Command::Cat(a) => store::cat(a),
        Command::Get(a) => store::get(a, enc),
        Command::Ls(a) => store::ls(a, enc),
        Command::Pin(c) => store::pin(c, enc),
        Command::Repo(c) => store::repo(c, enc),
        Command::Filestore(c) => filestore::run(c, enc),
        Command::Daemon(a) => daemon::run(a, enc),
    }
}

/// The BTFS repository folder: `$BTFS_PATH`, or `~/.btfs`.
pub fn btfs_path() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("BTFS_PATH") {
        Some(p) if !p.is_empty() => Ok(std::path::PathBuf::from(p)),
        _ => {
            let home = std::env::var_os("HOME").context("neither BTFS_PATH nor HOME is set")?;
            Ok(std::path::PathBuf::from(home).join(".btfs"))
        }
    }
}

/// Limit on files read whole into memory (torrents, bencode, JSON).
const MAX_INPUT: u64 = 64 << 20;

/// Reads a whole input file, or standard input for `-`, refusing oversized inputs.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .context("reading standard input")?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        f.take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("{}", path.display()))?;
    }
    if buf.len() as u64 > MAX_INPUT {
        anyhow::bail!(
            "{}: larger than {} MiB, which is more than any torrent needs",
            path.display(),
            MAX_INPUT >> 20
        );
    }
    Ok(buf)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

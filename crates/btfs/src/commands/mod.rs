//! Runs one parsed command and emits its result.

mod bencode;
mod create;
mod download;
mod magnet;
mod metainfo;
mod scrape;

use crate::cli::{Bittorrent, Command};
use crate::output::{Encoding, Unavailable};
use anyhow::Context;
use std::io::Read;
use std::path::Path;

pub use scrape::parse_duration;

pub fn run(command: Command, enc: Encoding) -> anyhow::Result<()> {
    match command {
        Command::Bittorrent(bt) => match bt {
            Bittorrent::Metainfo(a) => metainfo::run(a, enc),
            Bittorrent::Bencode(a) => bencode::run(a, enc),
            Bittorrent::Create(a) => create::run(a, enc),
            Bittorrent::Download(a) => download::run(a, enc),
            Bittorrent::Scrape(a) => scrape::run(a, enc),
            Bittorrent::Serve(_) => unavailable("bittorrent serve", "the seeding daemon"),
        },
        Command::Init => unavailable("init", "the BTFS store"),
        Command::Add(_) => unavailable("add", "the BTFS store"),
        Command::Cat(_) => unavailable("cat", "the BTFS store"),
        Command::Get(_) => unavailable("get", "the BTFS store"),
        Command::Ls(_) => unavailable("ls", "the BTFS store"),
        Command::Daemon => unavailable("daemon", "the gateway and HTTP API"),
    }
}

fn unavailable(command: &str, part: &str) -> anyhow::Result<()> {
    Err(Unavailable(format!(
        "`btfs {command}` is not available in this build yet: it arrives with {part}"
    ))
    .into())
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

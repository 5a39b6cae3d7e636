//! `btfs bittorrent bencode`: bencode → lossless JSON, and back with `--encode`.

use super::read_input;
use crate::cli::BencodeArgs;
use crate::output::Encoding;
use anyhow::{bail, Context};
use bittorrent::bencode::{self, json};
use std::io::Write;
use std::path::Path;

pub fn run(args: BencodeArgs, _enc: Encoding) -> anyhow::Result<()> {
    let Some(path) = args.file.or(args.path) else {
        bail!("give the file to read with -f FILE (or as an argument; '-' reads standard input)");
    };
    let input = read_input(&path)?;
    let shown = path.display();
    // The JSON form is already the machine-readable output, so both encodings print it.
    let out: Vec<u8> = if args.encode {
        let text =
            std::str::from_utf8(&input).with_context(|| format!("{shown}: not UTF-8 JSON"))?;
        json::from_json(text)
            .with_context(|| format!("{shown}: not the JSON form of bencode"))?
            .encode()
    } else {
        let value = bencode::decode(&input).with_context(|| format!("{shown}"))?;
        let mut s = json::to_json(&value);
        s.push('\n');
        s.into_bytes()
    };
    write_output(args.output.as_deref(), &out)
}

fn write_output(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(bytes).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => Ok(r?),
            }
        }
    }
}

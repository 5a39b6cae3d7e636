//! The store commands: `init`, `add`, `cat`, `get`, `ls`, `pin`, `repo gc|verify`.
//!
//! `add --nocopy` keeps the files' bytes where they are: each file is read once, its
//! leaves hashed on all cores and recorded as filestore references (canonical path,
//! offset, length, the file's mtime), only inner nodes and folders written as blocks.
//! References are committed in one database transaction with the pins, after the
//! blocks are synced; an add of more than [`MAX_PENDING_REFS`] leaves commits the
//! earlier ones in batches first (unpinned until the last commit, which `repo gc`
//! cannot run between: it needs the repo lock this command shares).

use super::btfs_path;
use crate::cli::{AddArgs, CatArgs, GetArgs, LsArgs, PinCommand, RepoCommand};
use crate::output::{clean, human_size, Encoding};
use anyhow::{bail, Context};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use store::dag::{Kind, RangeReader};
use store::filestore::{mtime_ns, ref_path, FileRef, LeafFormat};
use store::importer::{BlockSink, Discard, ImportOptions, Node, MAX_CHUNK};
use store::{Cid, LockMode, PinKind, Repo};

/// References `add --nocopy` holds before committing a batch (16 GiB of 256 KiB leaves).
const MAX_PENDING_REFS: usize = 1 << 16;

/// Opens (creating on first use) the repo at `$BTFS_PATH`.
pub fn open_repo(mode: LockMode) -> anyhow::Result<Repo> {
    let path = btfs_path()?;
    let (repo, created) = Repo::open(&path, mode)?;
    if created {
        eprintln!("initialized a BTFS repo at {}", path.display());
    }
    Ok(repo)
}

pub fn init(args: crate::cli::InitArgs, enc: Encoding) -> anyhow::Result<()> {
    let path = btfs_path()?;
    let created = match &args.profile {
        Some(p) => {
            store::config::check_profiles(p)?;
            if Repo::exists(&path) {
                bail!(
                    "a BTFS repo already exists at {}: --profile applies only to a new one; \
                     change this one with `btfs config profile apply {p}`",
                    path.display()
                );
            }
            Repo::init_with_profiles(&path, p)?
        }
        None => Repo::init(&path)?,
    };
    match enc {
        Encoding::Json => println!(
            "{}",
            serde_json::json!({"Path": path.display().to_string(), "Created": created})
        ),
        Encoding::Text if created => println!("initialized a BTFS repo at {}", path.display()),
        Encoding::Text => println!("a BTFS repo already exists at {}", path.display()),
    }
    Ok(())
}

/// `CID`, `CID/a/b`, `/btfs/CID/a` or `/ipfs/CID/a` → the CID and the names after it.
pub fn parse_content_path(s: &str) -> anyhow::Result<(Cid, Vec<String>)> {
    let t = s
        .strip_prefix("/btfs/")
        .or_else(|| s.strip_prefix("/ipfs/"))
        .unwrap_or(s);
    let mut parts = t.split('/');
    let first = parts.next().unwrap_or_default();
    let cid: Cid = first
        .parse()
        .with_context(|| format!("{s:?} does not start with a CID"))?;
    let rest: Vec<String> = parts.filter(|p| !p.is_empty()).map(str::to_owned).collect();
    Ok((cid, rest))
}

fn resolve(repo: &Repo, s: &str) -> anyhow::Result<Cid> {
    let (cid, rest) = parse_content_path(s)?;
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    Ok(repo.dag().resolve(cid, &names)?)
}

fn parse_chunker(s: &str) -> anyhow::Result<usize> {
    let Some(n) = s.strip_prefix("size-") else {
        bail!("--chunker {s:?}: only fixed-size chunking is supported (size-<bytes>)");
    };
    let n: usize = n
        .parse()
        .with_context(|| format!("--chunker {s:?}: the size is not a number"))?;
    if n == 0 || n > MAX_CHUNK {
        bail!("--chunker {s:?}: the size must be 1 to {MAX_CHUNK} bytes");
    }
    Ok(n)
}

/// Prints `added <cid> <path>` lines (or JSON objects) as `btfs add` does.
pub struct AddPrinter {
    pub enc: Encoding,
    pub quiet: bool,
    pub quieter: bool,
    last: Option<(String, Node)>,
}

impl AddPrinter {
    pub fn new(enc: Encoding, quiet: bool, quieter: bool) -> Self {
        AddPrinter {
            enc,
            quiet,
            quieter,
            last: None,
        }
    }

    pub fn added(&mut self, name: &str, node: &Node) {
        if !self.quieter {
            print_added(self.enc, self.quiet, name, node);
        }
        self.last = Some((name.to_owned(), *node));
    }

    /// With `-Q`, the final line.
    pub fn finish(&mut self) {
        if let (true, Some((name, node))) = (self.quieter, self.last.take()) {
            print_added(self.enc, true, &name, &node);
        }
    }
}

fn print_added(enc: Encoding, quiet: bool, name: &str, node: &Node) {
    let mut out = std::io::stdout().lock();
    let _ = match (enc, quiet) {
        (Encoding::Json, _) => writeln!(
            out,
            "{}",
            serde_json::json!({"Name": name, "Hash": node.cid.to_string(), "Size": node.tsize.to_string()})
        ),
        (Encoding::Text, true) => writeln!(out, "{}", node.cid),
        (Encoding::Text, false) => writeln!(out, "added {} {}", node.cid, clean(name)),
    };
}

/// The filestore references `add --nocopy` makes, committed in batches.
struct Refs<'a> {
    repo: &'a Repo,
    format: LeafFormat,
    pending: Vec<(Cid, FileRef)>,
}

impl Refs<'_> {
    /// Imports a file whose leaves stay in it: the inner nodes go to `nodes`, the
    /// leaves become references. A file changed while it was read is refused.
    fn import(
        &mut self,
        opts: &ImportOptions,
        path: &Path,
        nodes: &dyn BlockSink,
        progress: &mut dyn FnMut(u64),
    ) -> anyhow::Result<Node> {
        let file = ref_path(path)?;
        let before = std::fs::metadata(&file)?;
        let (root, leaves) = opts.import_file_split(&file, &Discard, nodes, progress)?;
        let after = std::fs::metadata(&file)?;
        let mtime = mtime_ns(&before);
        if before.len() != root.size || after.len() != root.size || mtime_ns(&after) != mtime {
            bail!("changed while it was being added; add it again once nothing writes to it");
        }
        for l in leaves {
            self.pending.push((
                l.node.cid,
                FileRef {
                    path: file.clone(),
                    offset: l.offset,
                    size: l.node.size,
                    format: self.format,
                    mtime_ns: mtime,
                },
            ));
        }
        if self.pending.len() >= MAX_PENDING_REFS {
            self.commit(&[])?;
        }
        Ok(root)
    }

    /// Commits the pending references with the pins of `roots`, after syncing the files
    /// they name (and the inner blocks): a power cut never leaves a reference to bytes
    /// that were not on disk.
    fn commit(&mut self, roots: &[Cid]) -> anyhow::Result<()> {
        let files: std::collections::BTreeSet<&Path> =
            self.pending.iter().map(|(_, r)| r.path.as_path()).collect();
        for f in files {
            std::fs::File::open(f)
                .and_then(|h| h.sync_data())
                .with_context(|| format!("syncing {}", f.display()))?;
        }
        self.repo.commit_refs(&self.pending, roots)?;
        self.pending.clear();
        Ok(())
    }
}

struct Adder<'a> {
    opts: ImportOptions,
    sink: &'a dyn BlockSink,
    /// `--nocopy` (and not `-n`): leaves become filestore references.
    refs: Option<Refs<'a>>,
    recursive: bool,
    hidden: bool,
    printer: AddPrinter,
    /// Directories, printed after everything else (children before parents).
    dirs: Vec<(String, Node)>,
    progress: Progress,
}

impl Adder<'_> {
    fn add_path(&mut self, path: &Path, display: &str) -> anyhow::Result<Node> {
        let meta =
            std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(path).with_context(|| format!("{}", path.display()))?;
            let node = self
                .opts
                .symlink(target.as_os_str().as_encoded_bytes(), self.sink)?;
            self.printer.added(display, &node);
            return Ok(node);
        }
        if ft.is_dir() {
            if !self.recursive {
                bail!(
                    "{} is a directory; use -r to add directories",
                    path.display()
                );
            }
            let mut children: Vec<(String, PathBuf)> = Vec::new();
            for e in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
                let e = e.with_context(|| format!("{}", path.display()))?;
                let name = e.file_name().into_string().map_err(|n| {
                    anyhow::anyhow!("{}: the name {n:?} is not UTF-8", path.display())
                })?;
                if name.starts_with('.') && !self.hidden {
                    continue;
                }
                children.push((name, e.path()));
            }
            children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut entries = Vec::with_capacity(children.len());
            for (name, p) in children {
                let node = self.add_path(&p, &format!("{display}/{name}"))?;
                entries.push((name, node));
            }
            let node = self.opts.directory(entries, self.sink)?;
            self.dirs.push((display.to_owned(), node));
            return Ok(node);
        }
        if !ft.is_file() {
            bail!("{}: not a file, directory or symbolic link", path.display());
        }
        let progress = &mut self.progress;
        let base = progress.done;
        let mut show = |n| progress.show(base + n);
        let node = match &mut self.refs {
            Some(refs) => refs.import(&self.opts, path, self.sink, &mut show),
            None => Ok(self.opts.import_file(path, self.sink, &mut show)?),
        }
        .with_context(|| format!("{}", path.display()))?;
        progress.done = base + node.size;
        self.printer.added(display, &node);
        Ok(node)
    }
}

/// A byte counter on standard error when it is a terminal.
struct Progress {
    tty: bool,
    done: u64,
    last: std::time::Instant,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            done: 0,
            last: std::time::Instant::now(),
            shown: false,
        }
    }

    fn show(&mut self, n: u64) {
        if self.tty && n >= (16 << 20) && self.last.elapsed().as_millis() >= 200 {
            self.last = std::time::Instant::now();
            self.shown = true;
            eprint!("\r\x1b[Kadding… {}", human_size(n));
        }
    }

    fn end(&self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// Whether `add` reads standard input (no paths, or `-`).
pub fn adds_stdin(paths: &[PathBuf]) -> bool {
    paths.is_empty() || paths == [PathBuf::from("-")]
}

/// What `add --nocopy` says of standard input.
pub const NOCOPY_STDIN: &str = "--nocopy keeps the bytes in the files they are in, and \
    standard input is no file: save it to a file and add that, or add it without --nocopy";

pub fn add(args: AddArgs, enc: Encoding) -> anyhow::Result<()> {
    let opts = ImportOptions {
        cid_version: args.cid_version,
        // kubo's --nocopy implies raw leaves; --raw-leaves=false keeps `add`'s CIDs.
        raw_leaves: args
            .raw_leaves
            .unwrap_or(args.cid_version == 1 || args.nocopy),
        chunk_size: parse_chunker(&args.chunker)?,
    };
    if args.nocopy && adds_stdin(&args.paths) {
        bail!("{NOCOPY_STDIN}");
    }
    let repo = if args.only_hash {
        None
    } else {
        Some(open_repo(LockMode::Shared)?)
    };
    let sink: &dyn BlockSink = match &repo {
        Some(r) => &r.blocks,
        None => &Discard,
    };
    let refs = match &repo {
        Some(repo) if args.nocopy => Some(Refs {
            repo,
            format: if opts.raw_leaves {
                LeafFormat::Raw
            } else {
                LeafFormat::UnixFsFile
            },
            pending: Vec::new(),
        }),
        _ => None,
    };
    let mut adder = Adder {
        opts,
        sink,
        refs,
        recursive: args.recursive,
        hidden: args.hidden,
        printer: AddPrinter::new(enc, args.quiet, args.quieter),
        dirs: Vec::new(),
        progress: Progress::new(),
    };
    let mut roots: Vec<(String, Node)> = Vec::new();
    if adds_stdin(&args.paths) {
        let node = opts.import_reader(std::io::stdin().lock(), sink, &mut |_| {})?;
        let name = node.cid.to_string();
        adder.printer.added(&name, &node);
        roots.push((name, node));
    } else {
        for p in &args.paths {
            let name = match p.file_name() {
                Some(n) => n
                    .to_str()
                    .with_context(|| format!("{}: the name is not UTF-8", p.display()))?
                    .to_owned(),
                None => {
                    let canon = p
                        .canonicalize()
                        .with_context(|| format!("{}", p.display()))?;
                    canon
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("root")
                        .to_owned()
                }
            };
            let node = adder.add_path(p, &name)?;
            roots.push((name, node));
        }
    }
    adder.progress.end();
    let dirs = std::mem::take(&mut adder.dirs);
    for (name, node) in &dirs {
        adder.printer.added(name, node);
    }
    if args.wrap {
        let mut names: Vec<&str> = roots.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            bail!("-w: two of the paths have the same name");
        }
        let node = opts.directory(roots, sink)?;
        adder.printer.added("", &node);
        roots = vec![(String::new(), node)];
    }
    adder.printer.finish();
    if let Some(mut refs) = adder.refs.take() {
        let pins: Vec<Cid> = if args.pin {
            roots.iter().map(|(_, n)| n.cid).collect()
        } else {
            Vec::new()
        };
        refs.commit(&pins)?;
    } else if let Some(repo) = &repo {
        if args.pin {
            for (_, node) in &roots {
                repo.pin(&node.cid, PinKind::Recursive)?;
            }
        } else {
            repo.sync()?;
        }
    }
    Ok(())
}

/// Adds a file or folder (everything in it, dotfiles too) with the default options,
/// prints nothing, and pins it.
pub fn import_path(repo: &Repo, path: &Path) -> anyhow::Result<Node> {
    let mut adder = Adder {
        opts: ImportOptions::default(),
        sink: &repo.blocks,
        refs: None,
        recursive: true,
        hidden: true,
        printer: AddPrinter::new(Encoding::Text, true, true),
        dirs: Vec::new(),
        progress: Progress::new(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let node = adder.add_path(path, &name)?;
    adder.progress.end();
    repo.pin(&node.cid, PinKind::Recursive)?;
    Ok(node)
}

pub fn cat(args: CatArgs) -> anyhow::Result<()> {
    let repo = open_repo(LockMode::Shared)?;
    let cid = resolve(&repo, &args.path)?;
    let dag = repo.dag();
    let block = dag.block(&cid)?;
    if block.kind() != Kind::File {
        return Err(store::DagError::NotFile(cid).into());
    }
    let size = block.file_size();
    let end = match args.length {
        Some(l) => size.min(args.offset.saturating_add(l)),
        None => size,
    };
    let mut reader = RangeReader::new(cid, args.offset.min(end), end);
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    while let Some(range) = reader.next_into(&dag, &mut buf)? {
        match out.write_all(&buf[range]) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r?,
        }
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

/// A link name that is safe to create on disk.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn export(dag: &store::Dag, cid: &Cid, out: &Path) -> anyhow::Result<u64> {
    let block = dag.block(cid)?;
    match block.kind() {
        Kind::Directory => {
            std::fs::create_dir(out).with_context(|| format!("{}", out.display()))?;
            let mut total = 0;
            for e in dag.list(cid)? {
                if !safe_name(&e.name) {
                    bail!("{cid}: refusing the unsafe entry name {:?}", e.name);
                }
                total += export(dag, &e.cid, &out.join(&e.name))?;
            }
            Ok(total)
        }
        Kind::Symlink(target) => {
            #[cfg(unix)]
            {
                use std::os::unix::ffi::OsStrExt;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), out)
                    .with_context(|| format!("{}", out.display()))?;
            }
            #[cfg(not(unix))]
            let _ = target;
            Ok(0)
        }
        Kind::File => {
            let size = block.file_size();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .with_context(|| format!("{}", out.display()))?;
            let mut reader = RangeReader::new(*cid, 0, size);
            let mut buf = Vec::new();
            while let Some(range) = reader.next_into(dag, &mut buf)? {
                f.write_all(&buf[range])
                    .with_context(|| format!("{}", out.display()))?;
            }
            Ok(size)
        }
    }
}

pub fn get(args: GetArgs, enc: Encoding) -> anyhow::Result<()> {
    let repo = open_repo(LockMode::Shared)?;
    let (root, rest) = parse_content_path(&args.path)?;
    let cid = resolve(&repo, &args.path)?;
    let out = match args.output {
        Some(o) => o,
        None => {
            let name = rest.last().cloned().unwrap_or_else(|| root.to_string());
            if !safe_name(&name) {
                bail!("give -o: {name:?} is not a usable file name");
            }
            PathBuf::from(name)
        }
    };
    if std::fs::symlink_metadata(&out).is_ok() {
        bail!("{} already exists", out.display());
    }
    let bytes = export(&repo.dag(), &cid, &out)?;
    match enc {
        Encoding::Json => println!(
            "{}",
            serde_json::json!({"Hash": cid.to_string(), "Path": out.display().to_string(), "Bytes": bytes})
        ),
        Encoding::Text => eprintln!("saved {} to {} ({})", cid, out.display(), human_size(bytes)),
    }
    Ok(())
}

pub fn ls(args: LsArgs, enc: Encoding) -> anyhow::Result<()> {
    let repo = open_repo(LockMode::Shared)?;
    let cid = resolve(&repo, &args.path)?;
    let entries = repo.dag().list(&cid)?;
    let mut out = std::io::stdout().lock();
    match enc {
        Encoding::Json => {
            let links: Vec<_> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "Name": e.name, "Hash": e.cid.to_string(), "Size": e.size,
                        "Type": match e.kind { Kind::Directory => "directory", Kind::File => "file", Kind::Symlink(_) => "symlink" },
                    })
                })
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::json!({"Hash": cid.to_string(), "Links": links})
            )?;
        }
        Encoding::Text => {
            for e in &entries {
                // As kubo prints it: no size for folders.
                match e.kind {
                    Kind::Directory => writeln!(out, "{} - {}/", e.cid, clean(&e.name))?,
                    _ => writeln!(out, "{} {} {}", e.cid, e.size, clean(&e.name))?,
                }
            }
        }
    }
    Ok(())
}

pub fn pin(cmd: PinCommand, enc: Encoding) -> anyhow::Result<()> {
    let repo = open_repo(LockMode::Shared)?;
    match cmd {
        PinCommand::Ls => {
            let pins = repo.pins()?;
            match enc {
                Encoding::Json => {
                    let keys: serde_json::Map<String, serde_json::Value> = pins
                        .iter()
                        .map(|(c, k)| {
                            (
                                c.to_string(),
                                serde_json::json!({"Type": format!("{k:?}").to_lowercase()}),
                            )
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "Keys": keys }));
                }
                Encoding::Text => {
                    for (c, k) in pins {
                        println!("{c} {}", format!("{k:?}").to_lowercase());
                    }
                }
            }
        }
        PinCommand::Add { cids, direct } => {
            for s in &cids {
                let cid = resolve(&repo, s)?;
                let kind = if direct {
                    if !repo.blocks.has(&cid) {
                        bail!("{cid} is not in the local store");
                    }
                    PinKind::Direct
                } else {
                    repo.dag().walk(&cid, &mut |_| {})?;
                    PinKind::Recursive
                };
                repo.pin(&cid, kind)?;
                println!("pinned {cid} {}", format!("{kind:?}").to_lowercase());
            }
        }
        PinCommand::Rm { cids } => {
            for s in &cids {
                let (root, rest) = parse_content_path(s)?;
                // A path inside a pinned DAG names a block, not the pin of its root.
                let cid = if rest.is_empty() {
                    root
                } else {
                    resolve(&repo, s)?
                };
                if !repo.unpin(&cid)? {
                    bail!("{cid} is not pinned");
                }
                println!("unpinned {cid}");
            }
        }
    }
    Ok(())
}

pub fn repo(cmd: RepoCommand, enc: Encoding) -> anyhow::Result<()> {
    match cmd {
        RepoCommand::Gc => {
            let repo = open_repo(LockMode::Exclusive)?;
            let r = repo.gc()?;
            match enc {
                Encoding::Json => println!("{}", serde_json::to_string(&r)?),
                Encoding::Text => {
                    let refs = if r.refs_removed + r.refs_kept > 0 {
                        format!(
                            "; removed {} filestore references, kept {}",
                            r.refs_removed, r.refs_kept
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "removed {} blocks ({}), kept {}{refs}",
                        r.removed,
                        human_size(r.bytes),
                        r.kept
                    );
                    for f in &r.folders_removed {
                        println!("removed download folder {}", clean(f));
                    }
                }
            }
        }
        RepoCommand::Verify => {
            let repo = open_repo(LockMode::Shared)?;
            let tty = std::io::stderr().is_terminal();
            let r = repo.verify(&mut |n| {
                if tty && n % 1000 == 0 {
                    eprint!("\r\x1b[Kverified {n} blocks");
                }
            })?;
            if tty {
                eprint!("\r\x1b[K");
            }
            match enc {
                Encoding::Json => println!("{}", serde_json::to_string(&r)?),
                Encoding::Text => {
                    for c in &r.corrupt {
                        println!("corrupt block: {c}");
                    }
                    for m in &r.missing {
                        println!("missing block: {m}");
                    }
                    // A damaged database is said once, as the error below.
                    if r.corrupt.is_empty() && r.missing.is_empty() && r.database.is_none() {
                        match r.refs_checked {
                            0 => println!("verified {} blocks: all good", r.checked),
                            n => println!(
                                "verified {} blocks ({n} of them filestore references, \
                                 their files read): all good",
                                r.checked
                            ),
                        }
                    }
                }
            }
            let blocks = (!r.corrupt.is_empty() || !r.missing.is_empty()).then(|| {
                format!(
                    "{} corrupt and {} missing blocks (run `btfs repo gc` to drop corrupt unpinned ones; re-add or re-download pinned content)",
                    r.corrupt.len(),
                    r.missing.len()
                )
            });
            match (r.database, blocks) {
                (Some(d), Some(b)) => bail!("{d}; besides, {b}"),
                (Some(d), None) => bail!("{d}"),
                (None, Some(b)) => bail!("{b}"),
                (None, None) => {}
            }
        }
    }
    Ok(())
}

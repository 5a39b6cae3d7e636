//! `btfs bittorrent serve`: seeds files, folders and content of the BTFS store, one
//! torrent each, all on one port, until interrupted; prints a magnet link per torrent.

use super::btfs_path;
use super::store::{import_path, open_repo, parse_content_path};
use crate::cli::ServeArgs;
use crate::output::{clean, human_size, Encoding};
use anyhow::{bail, Context};
use bittorrent::create::{create_torrent, CreateOptions};
use bittorrent::engine::{self, Options, Phase, Stats};
use bittorrent::session::Router;
use bittorrent::storage::Storage;
use bittorrent::{InfoHash, Metainfo};
use node::seed::{dag_files, torrent_of_cid, BlockStorage};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::repo::ServedRecord;
use store::{Blockstore, Cid, LockMode, Repo};
use tokio::sync::watch;

/// `-f` list: commas separate names; `\,` is a comma and `\\` a backslash.
pub fn split_files(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// One torrent to seed.
struct Seed {
    meta: Arc<Metainfo>,
    torrent_file: PathBuf,
    save_path: PathBuf,
    storage: Option<Arc<BlockStorage>>,
    cid: Option<Cid>,
    /// Made from the data just now: every piece is known to be there.
    fresh: bool,
}

fn served_dir() -> anyhow::Result<PathBuf> {
    Ok(btfs_path()?.join("bittorrent").join("served"))
}

/// Writes `bytes` to `path` through a temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}

fn keep_torrent(args: &ServeArgs, meta: &Metainfo, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = served_dir()?.join(format!("{}.torrent", meta.wire_info_hash()));
    write_atomic(&path, bytes)?;
    if let Some(dir) = &args.output {
        write_atomic(
            &dir.join(format!("{}.torrent", short_stem(&meta.info.stored_name))),
            bytes,
        )?;
    }
    Ok(path)
}

/// A stored name may take up to 255 bytes: leave room for `.torrent` and the temporary
/// file's decoration, cutting on a character boundary.
fn short_stem(name: &str) -> &str {
    const MAX_STEM: usize = 200;
    let mut end = name.len().min(MAX_STEM);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn load_torrent(path: &Path) -> anyhow::Result<Metainfo> {
    let bytes = super::read_input(path)?;
    Metainfo::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

pub fn run(args: ServeArgs, enc: Encoding) -> anyhow::Result<()> {
    let repo = Arc::new(open_repo(LockMode::Shared)?);
    if args.list {
        return list(&repo, enc);
    }
    if let Some(which) = &args.remove {
        return remove(&repo, which);
    }
    let blocks =
        Arc::new(store::Repo::blockstore_at(repo.path()).context("opening the blockstore")?);
    let mut paths: Vec<PathBuf> = args.paths.clone();
    if let Some(f) = &args.files {
        paths.extend(split_files(f).into_iter().map(PathBuf::from));
    }
    let create_opts = CreateOptions {
        piece_length: args.piece_length,
        trackers: args.trackers.iter().map(|t| vec![t.clone()]).collect(),
        private: args.private,
        ..Default::default()
    };
    let mut seeds = Vec::new();
    for p in &paths {
        seeds.push(seed_path(&args, &repo, p, &create_opts)?);
    }
    for c in &args.cids {
        seeds.push(seed_cid(&args, &repo, &blocks, c, &create_opts)?);
    }
    if paths.is_empty() && args.cids.is_empty() {
        seeds = resume_all(&repo, &blocks)?;
        if seeds.is_empty() {
            bail!("nothing to serve: give files or folders (or -f 'a,b', or --cid CID); `--list` shows what was served before");
        }
    }
    // The same torrent twice (a path given twice, or a folder and its CID): seed it once.
    let mut seen = std::collections::HashSet::new();
    seeds.retain(|s| seen.insert(s.meta.wire_info_hash()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(seed_all(args, seeds, enc))
}

fn seed_path(
    args: &ServeArgs,
    repo: &Repo,
    p: &Path,
    opts: &CreateOptions,
) -> anyhow::Result<Seed> {
    let abs = p
        .canonicalize()
        .with_context(|| format!("{}", p.display()))?;
    let tty = std::io::stderr().is_terminal();
    let done = std::sync::atomic::AtomicU64::new(0);
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = |n: u64| {
        let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if tty && d % (64 << 20) < n {
            eprint!("\r\x1b[Khashing {}: {}", clean(&name), human_size(d));
        }
    };
    let created = create_torrent(&abs, opts, &progress)?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let meta = created.metainfo;
    let torrent_file = keep_torrent(args, &meta, &created.bytes)?;
    let cid = if args.no_add {
        None
    } else {
        Some(import_path(repo, &abs)?.cid)
    };
    repo.set_served(
        &meta.wire_info_hash().0,
        &ServedRecord {
            name: meta.info.stored_name.clone(),
            source: abs.display().to_string(),
            cid: cid.map(|c| c.to_string()),
            torrent: torrent_file.display().to_string(),
        },
    )?;
    Ok(Seed {
        meta: Arc::new(meta),
        torrent_file,
        save_path: abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
        storage: None,
        cid,
        fresh: true,
    })
}

fn seed_cid(
    args: &ServeArgs,
    repo: &Repo,
    blocks: &Arc<Blockstore>,
    text: &str,
    opts: &CreateOptions,
) -> anyhow::Result<Seed> {
    let (root, rest) = parse_content_path(text)?;
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    let dag = repo.dag();
    let cid = dag.resolve(root, &names)?;
    let name = args.name.clone().unwrap_or_else(|| cid.to_string());
    let (bytes, meta, files) = torrent_of_cid(&dag, &cid, &name, opts)?;
    // Served content stays in the store: `repo gc` must not take it away.
    repo.pin(&cid, store::PinKind::Recursive)?;
    let torrent_file = keep_torrent(args, &meta, &bytes)?;
    repo.set_served(
        &meta.wire_info_hash().0,
        &ServedRecord {
            name: name.clone(),
            source: format!("/btfs/{cid}"),
            cid: Some(cid.to_string()),
            torrent: torrent_file.display().to_string(),
        },
    )?;
    let plen = u64::from(meta.info.geometry().context("a v1 torrent")?.piece_length());
    let storage = BlockStorage::new(blocks.clone(), &files, plen)?;
    Ok(Seed {
        meta: Arc::new(meta),
        torrent_file,
        save_path: repo.path().to_path_buf(),
        storage: Some(Arc::new(storage)),
        cid: Some(cid),
        fresh: true,
    })
}

/// Everything served before, from the repo.
fn resume_all(repo: &Repo, blocks: &Arc<Blockstore>) -> anyhow::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    for (_, r) in repo.served()? {
        let meta = match load_torrent(Path::new(&r.torrent)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping {}: {}", clean(&r.name), clean(&format!("{e:#}")));
                continue;
            }
        };
        let cid = r.cid.as_deref().and_then(|c| c.parse::<Cid>().ok());
        if let Some(c) = r.source.strip_prefix("/btfs/") {
            let cid: Cid = c
                .parse()
                .with_context(|| format!("{}: bad source {}", r.name, r.source))?;
            let (files, _) = dag_files(&repo.dag(), &cid, &r.name)?;
            let plen = u64::from(meta.info.geometry().context("a v1 torrent")?.piece_length());
            seeds.push(Seed {
                meta: Arc::new(meta),
                torrent_file: PathBuf::from(&r.torrent),
                save_path: repo.path().to_path_buf(),
                storage: Some(Arc::new(BlockStorage::new(blocks.clone(), &files, plen)?)),
                cid: Some(cid),
                fresh: true,
            });
        } else {
            let source = PathBuf::from(&r.source);
            if !source.exists() {
                eprintln!(
                    "skipping {}: {} is gone (`--remove {}` forgets it)",
                    clean(&r.name),
                    clean(&r.source),
                    clean(&r.name)
                );
                continue;
            }
            seeds.push(Seed {
                meta: Arc::new(meta),
                torrent_file: PathBuf::from(&r.torrent),
                save_path: source.parent().map(Path::to_path_buf).unwrap_or_default(),
                storage: None,
                cid,
                // The files may have changed since: check them.
                fresh: false,
            });
        }
    }
    Ok(seeds)
}

fn list(repo: &Repo, enc: Encoding) -> anyhow::Result<()> {
    let served = repo.served()?;
    for (ih, r) in &served {
        let ih = InfoHash(*ih).to_hex();
        match enc {
            Encoding::Json => {
                // The magnet of the saved torrent (peers come from the DHT, trackers or
                // the address the seeder is given).
                let magnet = std::fs::read(&r.torrent)
                    .ok()
                    .and_then(|b| Metainfo::from_bytes(&b).ok())
                    .map(|m| m.magnet().to_string());
                println!(
                    "{}",
                    serde_json::json!({"Name": r.name, "InfoHash": ih, "Source": r.source, "Cid": r.cid, "Torrent": r.torrent, "Magnet": magnet})
                )
            }
            Encoding::Text => println!("{ih}  {}  {}", clean(&r.name), clean(&r.source)),
        }
    }
    if served.is_empty() && enc == Encoding::Text {
        eprintln!("nothing is served yet");
    }
    Ok(())
}

fn remove(repo: &Repo, which: &str) -> anyhow::Result<()> {
    let served = repo.served()?;
    let matches: Vec<_> = served
        .iter()
        .filter(|(ih, r)| InfoHash(*ih).to_hex().eq_ignore_ascii_case(which) || r.name == which)
        .collect();
    if matches.is_empty() {
        bail!("nothing served matches {which:?} (see --list)");
    }
    for (ih, r) in matches {
        repo.remove_served(ih)?;
        let _ = std::fs::remove_file(&r.torrent);
        println!(
            "stopped serving {} ({})",
            clean(&r.name),
            InfoHash(*ih).to_hex()
        );
    }
    Ok(())
}

async fn seed_all(args: ServeArgs, seeds: Vec<Seed>, enc: Encoding) -> anyhow::Result<()> {
    let settings = super::settings::effective(&args.net)?;
    // Before listening: a list that does not parse stops here, and the filter is set
    // on the router right after it binds (no await between).
    let ip_filter = super::settings::load_ip_filter(settings.ip_filter.as_ref())?;
    let router = Router::serve(settings.bind_listeners()?);
    if let Some(f) = &ip_filter {
        let _ = router.set_ip_filter(f.clone());
    }
    let port = router.port();
    if settings.port != 0 && port != settings.port {
        eprintln!("port {} is taken; listening on {port}", settings.port);
    }
    let addrs: Vec<String> = router.local_addrs().iter().map(|a| a.to_string()).collect();
    eprintln!("listening for peers on {}", addrs.join(", "));
    // No DHT node at all when every torrent is private (BEP 27). Its UDP port is the
    // listeners' when free.
    let public = seeds.iter().any(|s| !s.meta.info.private);
    let dht = match &settings.dht {
        Some(d) if public => super::magnet::start_dht(d, settings.dht_bind(), Some(port))
            .await?
            .and_then(|j| j.warn_on_failure(enc)),
        _ => None,
    };
    let limit = settings
        .upload_rate_limit
        .map(|r| Arc::new(bittorrent::ratelimit::RateLimiter::new(r)));
    // Shared by every torrent, as the upload limit (serve seeds: it only matters for
    // data it may fetch).
    let download_limit = super::settings::download_limiter(&settings);
    let mut signal = super::portmap::signals();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut engines = Vec::new();
    let mut boards = Vec::new();
    // Every torrent's storage first, so a file that changed stops the run before any
    // torrent is announced.
    let mut ready = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let storage: Arc<dyn Storage> = match &seed.storage {
            Some(s) => s.clone(),
            None => Arc::new(
                bittorrent::storage::FileStorage::open_existing(&seed.save_path, &seed.meta)
                    .with_context(|| format!("seeding {}", seed.meta.info.stored_name))?,
            ),
        };
        ready.push((seed, storage));
    }
    let mapper = match settings.port_mapping {
        true => Some(super::portmap::start(port, dht.as_ref()).await?),
        false => None,
    };
    // From here on, every way out removes the mappings.
    let Ok(mapped) = super::portmap::settle(mapper.as_ref(), port, &mut signal, enc).await else {
        super::portmap::finish(mapper, enc).await;
        return Ok(());
    };
    // Where a magnet's reader can reach us: --announce-addr, else the mapped external
    // address and every concrete address listened on (none for 0.0.0.0 and ::).
    let reachable: Vec<SocketAddr> = match args.announce_addr {
        Some(a) => vec![a],
        None => mapped
            .into_iter()
            .chain(
                router
                    .local_addrs()
                    .iter()
                    .filter(|a| !a.ip().is_unspecified())
                    .copied(),
            )
            .collect(),
    };
    for (seed, storage) in ready {
        let mut magnet = seed.meta.magnet();
        magnet.peers.extend(reachable.iter().copied());
        let name = seed.meta.info.stored_name.clone();
        match enc {
            Encoding::Json => println!(
                "{}",
                serde_json::json!({
                    "Name": name, "InfoHash": seed.meta.wire_info_hash().to_hex(),
                    "Magnet": magnet.to_string(), "Torrent": seed.torrent_file.display().to_string(),
                    "Cid": seed.cid.map(|c| c.to_string()),
                })
            ),
            Encoding::Text => println!("{}  {}", clean(&name), clean(&magnet.to_string())),
        }
        let mut opts = Options::new(seed.save_path.clone());
        opts.seed = true;
        opts.trust_complete = seed.fresh;
        // Seeding never downloads: nothing is wanted, and the user's files are opened
        // read-only (never created, resized or written).
        opts.selected = Some(vec![false; seed.meta.info.files.len()]);
        opts.storage = Some(storage);
        opts.incoming = Some(router.register(seed.meta.wire_info_hash()));
        opts.use_webseeds = false;
        opts.dht = if seed.meta.info.private {
            None
        } else {
            dht.clone()
        };
        opts.upload_limit = limit.clone();
        opts.ip_filter = ip_filter.clone();
        opts.download_limit = download_limit.clone();
        opts.max_connections_per_ip = settings.max_connections_per_ip.max(1);
        opts.max_peers = settings.max_peers.max(1);
        let (stats_tx, stats_rx) = watch::channel(Stats::default());
        boards.push((name, stats_rx, seed.storage.clone()));
        let (meta, stop) = (seed.meta.clone(), stop_rx.clone());
        engines.push(tokio::spawn(async move {
            engine::run(meta, opts, stats_tx, stop).await
        }));
    }
    let _ = std::io::stdout().flush();
    eprintln!(
        "seeding {} torrent{} on port {port}; Ctrl-C stops",
        engines.len(),
        if engines.len() == 1 { "" } else { "s" }
    );
    let status = tokio::spawn(status_lines(
        boards
            .iter()
            .map(|(n, rx, _)| (n.clone(), rx.clone()))
            .collect(),
    ));
    let follower = mapper
        .as_ref()
        .map(|m| tokio::spawn(super::portmap::follow(m.status(), enc)));
    match args.duration {
        Some(d) => tokio::select! {
            _ = signal.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(d) => {}
        },
        None => drop(signal.wait_for(|s| *s).await),
    }
    let _ = stop_tx.send(true);
    status.abort();
    if let Some(d) = &dht {
        super::magnet::save_dht(d).await;
    }
    // Every engine announces `stopped` at once; all get one deadline together.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut failed = Vec::new();
    for (mut engine, (name, rx, storage)) in engines.into_iter().zip(boards) {
        let waited = tokio::time::timeout_at(deadline, &mut engine).await;
        if waited.is_err() {
            engine.abort();
        }
        match waited {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => failed.push(format!("{name}: {e}")),
            Ok(Err(e)) => failed.push(format!("{name}: {e}")),
            Err(_) => failed.push(format!("{name}: did not stop within 20 s")),
        }
        let s = rx.borrow().clone();
        match enc {
            Encoding::Json => {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["Type"] = "summary".into();
                v["Name"] = name.clone().into();
                if let Some(st) = storage {
                    v["BlockReads"] = st
                        .block_reads
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .into();
                }
                println!("{v}");
            }
            Encoding::Text => eprintln!("{}: uploaded {}", clean(&name), human_size(s.uploaded)),
        }
    }
    if let Some(f) = &ip_filter {
        eprintln!("IP filter: blocked {} distinct address(es)", f.blocked());
    }
    if let Some(f) = follower {
        f.abort();
    }
    super::portmap::finish(mapper, enc).await;
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// One line per torrent every 5 s on a terminal.
async fn status_lines(boards: Vec<(String, watch::Receiver<Stats>)>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        for (name, rx) in &boards {
            let s = rx.borrow().clone();
            let state = match s.phase {
                Phase::Checking => "checking",
                Phase::Seeding => "seeding",
                _ => "starting",
            };
            eprintln!(
                "{}: {state}, peers {}, uploaded {}, up {}/s",
                clean(name),
                s.peers,
                human_size(s.uploaded),
                human_size(s.upload_rate as u64)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{short_stem, split_files};

    #[test]
    fn torrent_file_names_fit_the_file_system() {
        let long = "é".repeat(127) + ".mkv";
        let stem = short_stem(&long);
        assert!(stem.len() <= 200 && long.starts_with(stem));
        assert!(format!("{stem}.torrent").len() <= 255);
        assert_eq!(short_stem("a.mkv"), "a.mkv");
    }

    #[test]
    fn file_lists() {
        assert_eq!(split_files("a.mp4,b.jpeg"), ["a.mp4", "b.jpeg"]);
        assert_eq!(split_files(r"a\,b.txt,c"), ["a,b.txt", "c"]);
        assert_eq!(split_files(r"dir\\,x"), [r"dir\", "x"]);
        assert_eq!(split_files(r"C:\x"), [r"C:\x"]);
        assert_eq!(split_files(",,a,"), ["a"]);
    }
}

//! `btfs bittorrent download`: runs the engine for one torrent with live progress.

use super::{read_input, wait_for_signal};
use crate::cli::DownloadArgs;
use crate::output::{clean, human_size, Encoding};
use anyhow::{bail, Context};
use bittorrent::engine::{self, Options, Phase, Stats};
use bittorrent::listen::Listeners;
use bittorrent::storage::FileStorage;
use bittorrent::{InfoHash, Metainfo};
use node::bridge::{Bridge, BridgeError, Imported};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::repo::{parse_listen_addr, TorrentRecord};
use store::{Cid, LockMode, Repo};
use tokio::sync::watch;

pub fn run(args: DownloadArgs, enc: Encoding) -> anyhow::Result<()> {
    if args.detach {
        bail!("--detach hands the download to a running daemon, and none is running for this repo (start `btfs daemon`)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let settings = super::settings::effective(&args.net)?;
    // Before anything reaches the network: a list that does not parse stops here.
    let ip_filter = super::settings::load_ip_filter(settings.ip_filter.as_ref())?;
    let mut extra_peers = args.peers.clone();
    // The DHT node starts for a magnet at once (it may be the only source of the
    // metadata), for a .torrent once it is known not to be private (BEP 27).
    // `Some` once a node was tried for a magnet (holding it when it started).
    let mut magnet_dht = None;
    // The peer listeners, bound before any DHT node starts (see `bound_port`).
    let mut listeners = None;
    let output = args.output.clone().or(settings.download_dir.clone());
    let repo = Arc::new(super::store::open_repo(LockMode::Shared)?);
    let gateway = gateway_base(&repo);
    let mut magnet_selection = None;
    let meta = match (&args.torrent, &args.source) {
        (None, Some(s)) if s.trim_start().to_ascii_lowercase().starts_with("magnet:") => {
            let magnet: bittorrent::Magnet = s.parse().context("reading the magnet link")?;
            if !args.seed && output.is_none() && magnet.select_only.is_empty() {
                if let Some(done) = already_imported(&repo, &magnet.wire_info_hash())? {
                    return report_known(done, &gateway, enc);
                }
            }
            match enc {
                Encoding::Text => eprintln!(
                    "fetching the metadata of {} from peers…",
                    clean(magnet.display_name.as_deref().unwrap_or("the torrent"))
                ),
                Encoding::Json => println!(
                    "{}",
                    serde_json::json!({"Type": "metadata", "Phase": "Fetching", "InfoHash": magnet.wire_info_hash().to_hex()})
                ),
            }
            // Metadata fetched by an earlier run (the daemon's jobs keep it), when it is
            // this torrent's.
            let cached = args
                .metadata_cache
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| Metainfo::from_bytes(&b).ok().map(|m| (m, b)))
                .filter(|(m, _)| m.wire_info_hash() == magnet.wire_info_hash());
            // The DHT as the only source of peers: no use going on unless it joined.
            let dht_only = magnet.peers.is_empty()
                && args.peers.is_empty()
                && (args.no_trackers || magnet.trackers.is_empty());
            let fetched = match cached {
                Some((meta, torrent)) => super::magnet::Fetched {
                    meta,
                    torrent,
                    peers: Vec::new(),
                },
                None => {
                    // Bound before the fetch: the trackers and the peers asked for the
                    // metadata learn the real port, and the DHT's UDP socket takes it too.
                    let listen_port = bound_port(&mut listeners, &settings, &runtime)?;
                    let dht = super::magnet::magnet_dht(
                        &runtime,
                        &settings,
                        dht_only,
                        enc,
                        Some(listen_port),
                    )?;
                    magnet_dht = Some(dht.clone());
                    let fetched = runtime.block_on(super::magnet::fetch(
                        &magnet,
                        &args.peers,
                        !args.no_trackers,
                        args.metadata_timeout,
                        dht,
                        settings.no_dht_reason(),
                        ip_filter.clone(),
                        Some(listen_port),
                    ))?;
                    if let Some(p) = &args.metadata_cache {
                        let tmp = p.with_extension("tmp");
                        std::fs::write(&tmp, &fetched.torrent)
                            .and_then(|()| std::fs::rename(&tmp, p))
                            .with_context(|| format!("writing {}", p.display()))?;
                    }
                    fetched
                }
            };
            if enc == Encoding::Json {
                println!(
                    "{}",
                    serde_json::json!({"Type": "metadata", "Phase": "Done", "Name": fetched.meta.info.stored_name.as_str(), "Peers": fetched.peers.len()})
                );
            }
            extra_peers.extend(magnet.peers.iter().copied());
            extra_peers.extend(fetched.peers);
            if !magnet.select_only.is_empty() {
                magnet_selection = Some(
                    (0..fetched.meta.info.files.len())
                        .map(|i| magnet.selects(i as u32))
                        .collect::<Vec<bool>>(),
                );
            }
            fetched.meta
        }
        (Some(t), _) => load(t)?,
        (None, Some(s)) => load(&PathBuf::from(s))?,
        (None, None) => {
            bail!("give a .torrent file or a magnet link: btfs bittorrent download -t FILE.torrent")
        }
    };
    if meta.info.v1.is_none() {
        bail!(
            "{}: a v2-only torrent; this build downloads v1 and hybrid torrents",
            meta.info.name
        );
    }
    // Already in the store: done, unless the files are wanted in a folder (-o) or seeded.
    if !args.seed && output.is_none() && args.only_files.is_empty() {
        if let Some(done) = already_imported(&repo, &meta.wire_info_hash())? {
            return report_known(done, &gateway, enc);
        }
    }
    // Too large to import: refused before any folder or file is created.
    Bridge::check_size(&meta)?;
    // Without -o the files live in a folder of the repo: the store's copy with the
    // filestore, a working copy until they are imported with `copy`.
    let working = output.is_none();
    let save_path = match &output {
        Some(o) => o.clone(),
        None => repo.downloads_dir().join(meta.wire_info_hash().to_hex()),
    };
    std::fs::create_dir_all(&save_path)
        .with_context(|| format!("creating {}", save_path.display()))?;
    // One download per working folder: a second one would delete files under the first.
    let _working_lock = if working {
        let p = save_path.with_extension("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("{}", p.display()))?;
        if f.try_lock().is_err() {
            bail!(
                "{} is already being downloaded by another btfs process",
                meta.info.stored_name.as_str()
            );
        }
        Some(f)
    } else {
        None
    };
    let save_path = save_path
        .canonicalize()
        .with_context(|| format!("{}", save_path.display()))?;
    let selected = select_files(&meta, &args.only_files)?.or(magnet_selection);
    let mut opts = Options::new(save_path.clone());
    let resume_file = Some(resume_dir()?.join(format!("{}.resume", meta.wire_info_hash())));
    opts.resume_file = resume_file.clone();
    (opts.listen, opts.port) = (settings.listen.clone(), settings.port);
    let listen_port = bound_port(&mut listeners, &settings, &runtime)?;
    opts.listeners = listeners.take();
    extra_peers.sort();
    extra_peers.dedup();
    opts.peers = extra_peers.clone();
    opts.selected = selected.clone();
    let (verified_tx, verified_rx) = tokio::sync::mpsc::unbounded_channel();
    opts.verified = Some(verified_tx);
    opts.sequential = args.sequential;
    opts.seed = args.seed;
    // A torrent imported before is hashed again (a seeding run excepted, so that seeding
    // jobs restart at once): the import must come from bytes verified in this run, and
    // a change that kept a file's size and time (bit rot, a tool restoring the time)
    // passes the resume data's check and would be imported as another root CID.
    let known = repo.torrent(&meta.wire_info_hash().0)?.is_some();
    opts.recheck = args.recheck || (known && !args.seed);
    opts.use_trackers = !args.no_trackers;
    opts.use_webseeds = !args.no_webseeds;
    opts.max_peers = settings.max_peers.max(1);
    opts.max_connections_per_ip = settings.max_connections_per_ip.max(1);
    opts.upload_limit = settings
        .upload_rate_limit
        .map(|r| Arc::new(bittorrent::ratelimit::RateLimiter::new(r)));
    opts.detail = args.progress_detail;
    opts.ip_filter = ip_filter;
    opts.download_limit = super::settings::download_limiter(&settings);
    opts.dht = torrent_dht(&runtime, &meta, &settings, magnet_dht, enc, listen_port)?;
    if let (true, Some(d)) = (opts.dht.is_some(), super::magnet::dht_interval_override()) {
        opts.dht_interval = d;
    }
    let webseeds = !args.no_webseeds && !meta.url_list.is_empty();
    if args.no_trackers && extra_peers.is_empty() && !webseeds && opts.dht.is_none() && !args.seed {
        bail!("--no-trackers without any --peer or web seed leaves nothing to download from");
    }

    let meta = Arc::new(meta);
    let name = meta.info.stored_name.clone();
    // The files are opened once, here: the engine writes and the bridge reads through
    // the same handles (see bittorrent::storage). They are set up before anything names
    // them: the `torrent` event is what the daemon deletes with `jobs rm --delete-data`,
    // so a download that fails here (a folder in the way, a link) must not have claimed
    // the names already in the folder.
    let all = vec![true; meta.info.files.len()];
    let storage = Arc::new(
        FileStorage::create(&save_path, &meta, selected.as_deref().unwrap_or(&all))
            .with_context(|| format!("preparing the files in {}", save_path.display()))?,
    );
    opts.storage = Some(storage.clone());
    let bridge = Bridge::new(
        repo.clone(),
        meta.clone(),
        storage,
        selected.as_deref(),
        settings.import_mode,
    )?;
    if args.progress_detail && enc == Encoding::Json {
        println!("{}", torrent_event(&meta, selected.as_deref()));
    }
    let (summary, imported) = runtime.block_on(async {
        let import = {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let r = bridge.run(verified_rx).await;
                if let Ok(imported) = &r {
                    print_imported(imported, &gateway, enc);
                }
                r
            })
        };
        let (stats_tx, stats_rx) = watch::channel(Stats::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        let mapping = settings.port_mapping.then(|| {
            let (stats, dht, stop) = (stats_rx.clone(), opts.dht.clone(), stop_rx.clone());
            tokio::spawn(super::portmap::for_download(stats, dht, stop, enc))
        });
        let reporter = tokio::spawn(report(stats_rx, enc, name.clone()));
        let dht = opts.dht.clone();
        let r = engine::run(meta.clone(), opts, stats_tx, stop_rx).await;
        let _ = reporter.await;
        if let Some(m) = mapping {
            let _ = tokio::time::timeout(super::portmap::DOWNLOAD_END, m).await;
        }
        if let Some(d) = dht {
            super::magnet::save_dht(&d).await;
        }
        let imported = import.await;
        (r, imported)
    });
    let summary = summary?;
    let imported = match imported {
        Ok(Ok(i)) => Some(i),
        Ok(Err(BridgeError::Incomplete)) if !summary.complete => None,
        Ok(Err(e)) => return Err(e).context("importing into the BTFS store"),
        Err(e) => bail!("the import task failed: {e}"),
    };
    // With the filestore the files are the store's copy (and the resume data lets a run
    // of the same torrent find and repair a file changed since); with `copy` the import
    // is durable (blocks synced, pin committed) and the working copy can go.
    let copied = settings.import_mode == store::config::ImportMode::Copy;
    // An earlier import of this torrent in filestore mode may read from the same folder
    // (only a torrent imported before can have one).
    let referenced = || {
        known
            && repo.file_refs().map_or(true, |refs| {
                refs.iter().any(|e| {
                    e.file
                        .as_ref()
                        .is_some_and(|f| f.path.starts_with(&save_path))
                })
            })
    };
    if working && copied && imported.is_some() && !referenced() {
        if let Err(e) = std::fs::remove_dir_all(&save_path) {
            eprintln!(
                "could not remove the working folder {}: {e}",
                save_path.display()
            );
        }
        if let Some(r) = &resume_file {
            let _ = std::fs::remove_file(r);
        }
    }
    let s = &summary.stats;
    match enc {
        Encoding::Json => {
            let mut v = serde_json::to_value(s)?;
            v["Type"] = "summary".into();
            v["Complete"] = summary.complete.into();
            v["Name"] = meta.info.stored_name.as_str().into();
            v["InfoHash"] = meta.wire_info_hash().to_hex().into();
            if !working || !copied {
                v["SavePath"] = save_path.display().to_string().into();
            }
            if let Some(i) = &imported {
                v["Cid"] = i.root.cid.to_string().into();
                v["GatewayUrl"] = format!("{gateway}/btfs/{}", i.root.cid).into();
            }
            if let Some(r) = &summary.stop_reason {
                v["StopReason"] = r.clone().into();
            }
            println!("{v}");
        }
        Encoding::Text => {
            if s.blocked > 0 {
                println!("IP filter: blocked {} distinct address(es)", s.blocked);
            }
            if summary.complete {
                let saved = (!working || !copied).then(|| save_path.display().to_string());
                println!(
                    "{}",
                    done_line(
                        meta.info.stored_name.as_str(),
                        s.bytes_wanted,
                        s.elapsed,
                        s.downloaded,
                        saved.as_deref()
                    )
                );
            }
        }
    }
    if !summary.complete {
        if let Some(reason) = &summary.stop_reason {
            bail!(
                "{reason}: {} of {} pieces verified and kept in {}",
                s.pieces_have,
                s.pieces_wanted,
                save_path.display()
            );
        }
        bail!(
            "stopped before the end: {} of {} pieces verified and kept in {}; run the same command to resume",
            s.pieces_have,
            s.pieces_wanted,
            save_path.display()
        );
    }
    Ok(())
}

/// The DHT node of the download: none for a private torrent (BEP 27); the one started
/// for a magnet's metadata (`started`: `Some` when one was tried), else one joining
/// through the configured routers, else, when that list is empty and
/// Bittorrent.DHT.TorrentNodes allows, through the torrent's own `nodes` (without the
/// routing table saved by an earlier run: a torrent's `nodes` alone decide where to go).
/// A node started here takes `listen_port` for UDP when free.
fn torrent_dht(
    runtime: &tokio::runtime::Runtime,
    meta: &Metainfo,
    settings: &super::settings::Settings,
    started: Option<Option<Arc<bittorrent::dht::DhtNode>>>,
    enc: Encoding,
    listen_port: u16,
) -> anyhow::Result<Option<Arc<bittorrent::dht::DhtNode>>> {
    let Some(d) = &settings.dht else {
        return Ok(None);
    };
    if meta.info.private {
        return Ok(None);
    }
    let through = match started {
        Some(Some(node)) => return Ok(Some(node)),
        // Tried for the magnet and failed: the warning was given.
        Some(None) if !d.bootstrap.is_empty() => return Ok(None),
        _ if !d.bootstrap.is_empty() => d.clone(),
        _ if d.torrent_nodes => super::settings::DhtSettings {
            bootstrap: meta
                .nodes
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .filter(|hp| store::config::HostPort::parse(hp).is_ok())
                .take(store::config::MAX_BOOTSTRAP_ENTRIES)
                .collect(),
            saved_nodes: false,
            ..d.clone()
        },
        _ => return Ok(None),
    };
    let join = runtime.block_on(super::magnet::start_dht(
        &through,
        settings.dht_bind(),
        Some(listen_port),
    ))?;
    let _guard = runtime.enter();
    Ok(join.and_then(|j| j.warn_on_failure(enc)))
}

/// The port of this run's peer listeners, binding them on first use: before any DHT node
/// starts, so that its UDP socket can take the same port number.
fn bound_port(
    slot: &mut Option<Listeners>,
    settings: &super::settings::Settings,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<u16> {
    if let Some(l) = slot {
        return Ok(l.port());
    }
    let _guard = runtime.enter();
    let l = settings.bind_listeners()?;
    let port = l.port();
    *slot = Some(l);
    Ok(port)
}

/// `http://IP:PORT` of the gateway in the repo's config.
fn gateway_base(repo: &Repo) -> String {
    // Run by the daemon: its gateway, wherever it listens this run.
    if let Ok(url) = std::env::var(crate::api::server::GATEWAY_ENV) {
        if std::env::var_os(crate::api::server::CHILD_ENV).is_some() && !url.is_empty() {
            return url;
        }
    }
    let addr = parse_listen_addr(&repo.config.addresses.gateway)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The torrent's root, when an earlier download imported it whole and every block is
/// still here.
fn already_imported(
    repo: &Repo,
    info_hash: &InfoHash,
) -> anyhow::Result<Option<(TorrentRecord, Cid)>> {
    let Some(record) = repo.torrent(&info_hash.0)? else {
        return Ok(None);
    };
    let Ok(root) = record.root.parse::<Cid>() else {
        return Ok(None);
    };
    Ok(repo.is_complete(&root).then_some((record, root)))
}

fn report_known(
    (record, root): (TorrentRecord, Cid),
    gateway: &str,
    enc: Encoding,
) -> anyhow::Result<()> {
    let url = format!("{gateway}/btfs/{root}");
    match enc {
        Encoding::Json => println!(
            "{}",
            serde_json::json!({"Type": "summary", "Complete": true, "AlreadyImported": true, "Name": record.name, "Cid": root.to_string(), "GatewayUrl": url})
        ),
        Encoding::Text => {
            eprintln!("{} is already in the BTFS store", clean(&record.name));
            println!("added {root} {}", clean(&record.name));
            println!("gateway: {url}");
        }
    }
    Ok(())
}

fn print_imported(imported: &Imported, gateway: &str, enc: Encoding) {
    let url = format!("{gateway}/btfs/{}", imported.root.cid);
    let mut out = std::io::stdout().lock();
    for (name, node) in &imported.added {
        let _ = match enc {
            Encoding::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"Type": "added", "Name": name, "Hash": node.cid.to_string(), "Size": node.tsize.to_string()})
            ),
            Encoding::Text => writeln!(out, "added {} {}", node.cid, clean(name)),
        };
    }
    let _ = match enc {
        Encoding::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"Type": "imported", "Cid": imported.root.cid.to_string(), "GatewayUrl": url, "SecondsAfterLastPiece": imported.after_last_piece.as_secs_f64()})
        ),
        Encoding::Text => writeln!(out, "gateway: {url}"),
    };
    let _ = out.flush();
}

/// The torrent's name, infohash, piece count and files, with the name each file's
/// `added` line will have and whether it is downloaded (`--only-files`, a magnet's `so`).
fn torrent_event(meta: &Metainfo, selected: Option<&[bool]>) -> serde_json::Value {
    let name = meta.info.stored_name.as_str();
    let files: Vec<serde_json::Value> = meta
        .info
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.attr.pad)
        .map(|(i, f)| {
            let path = f.stored.join("/");
            let added = if meta.info.single_file {
                name.to_string()
            } else {
                format!("{name}/{path}")
            };
            let wanted = selected.is_none_or(|s| s.get(i).copied().unwrap_or(false));
            serde_json::json!({"Index": i, "Path": path, "Length": f.length, "AddedName": added, "Selected": wanted})
        })
        .collect();
    serde_json::json!({
        "Type": "torrent",
        "Name": name,
        "InfoHash": meta.wire_info_hash().to_hex(),
        "PieceCount": meta.info.geometry().map(|g| g.piece_count()).unwrap_or(0),
        "Files": files,
    })
}

fn load(path: &std::path::Path) -> anyhow::Result<Metainfo> {
    let bytes = read_input(path)?;
    Metainfo::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

/// `$BTFS_PATH/bittorrent/resume` (default `~/.btfs`).
fn resume_dir() -> anyhow::Result<PathBuf> {
    Ok(super::btfs_path()?.join("bittorrent").join("resume"))
}

/// `--only-files`: indices and glob patterns → a selection, or `None` for all files.
fn select_files(meta: &Metainfo, spec: &[String]) -> anyhow::Result<Option<Vec<bool>>> {
    let spec: Vec<&str> = spec
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if spec.is_empty() {
        return Ok(None);
    }
    let files = &meta.info.files;
    let mut selected = vec![false; files.len()];
    for item in spec {
        if let Ok(i) = item.parse::<usize>() {
            if i >= files.len() {
                bail!(
                    "--only-files: the torrent has {} files (0 to {})",
                    files.len(),
                    files.len() - 1
                );
            }
            selected[i] = true;
            continue;
        }
        let mut matched = false;
        for (i, f) in files.iter().enumerate() {
            if !f.attr.pad && glob(item, &f.stored.join("/")) {
                selected[i] = true;
                matched = true;
            }
        }
        if !matched {
            bail!("--only-files: no file matches {item:?}");
        }
    }
    Ok(Some(selected))
}

/// `*` matches any text (slashes included), `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn eta(s: &Stats) -> String {
    let left = s.bytes_wanted.saturating_sub(s.bytes_have);
    if left == 0 {
        return "0:00".into();
    }
    if s.download_rate < 1.0 {
        return "--:--".into();
    }
    let secs = (left as f64 / s.download_rate) as u64;
    format!("{}:{:02}", secs / 60, secs % 60)
}

fn line(s: &Stats) -> String {
    let pct = if s.bytes_wanted == 0 {
        100.0
    } else {
        s.bytes_have as f64 * 100.0 / s.bytes_wanted as f64
    };
    let phase = match s.phase {
        Phase::Checking => "checking ",
        Phase::Seeding => "seeding ",
        _ => "",
    };
    format!(
        "{phase}{pct:5.1}%  {} / {}  pieces {}/{}  down {}/s  up {}/s  peers {} ({} seeds){}{}  ETA {}",
        human_size(s.bytes_have),
        human_size(s.bytes_wanted),
        s.pieces_have,
        s.pieces_wanted,
        human_size(s.download_rate as u64),
        human_size(s.upload_rate as u64),
        s.peers,
        s.seeds,
        if s.web_seeds > 0 {
            format!(" web seeds {}", s.web_seeds)
        } else {
            String::new()
        },
        if s.blocked > 0 {
            format!("  blocked {}", s.blocked)
        } else {
            String::new()
        },
        eta(s)
    )
}

/// Renders progress until the engine's stats channel closes.
async fn report(mut rx: watch::Receiver<Stats>, enc: Encoding, name: String) {
    let mut view = ProgressView::new(name, enc);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let s = rx.borrow().clone();
        if s.phase == Phase::Starting {
            continue;
        }
        view.show(&s);
        if matches!(s.phase, Phase::Done | Phase::Stopped) {
            break;
        }
    }
    view.finish();
}

/// The progress of a download on the console: a live line on a terminal, a plain line
/// every 5 s otherwise, or (JSON) one progress event a second. Used for downloads run
/// here and for those the daemon runs.
pub struct ProgressView {
    name: String,
    enc: Encoding,
    tty: bool,
    started: Instant,
    last: Instant,
}

impl ProgressView {
    pub fn new(name: String, enc: Encoding) -> Self {
        let started = Instant::now();
        ProgressView {
            name: clean(&name).into_owned(),
            enc,
            tty: std::io::stderr().is_terminal(),
            started,
            last: started - Duration::from_secs(60),
        }
    }

    pub fn set_name(&mut self, name: String) {
        self.name = clean(&name).into_owned();
    }

    pub fn show(&mut self, s: &Stats) {
        let name = &self.name;
        match self.enc {
            Encoding::Json => {
                if self.last.elapsed() >= Duration::from_secs(1) {
                    self.last = Instant::now();
                    if let Ok(mut v) = serde_json::to_value(s) {
                        v["Type"] = "progress".into();
                        println!("{v}");
                    }
                }
            }
            Encoding::Text if self.tty => {
                eprint!("\r\x1b[K{name}: {}", line(s));
                let _ = std::io::stderr().flush();
            }
            Encoding::Text => {
                // Plain lines (not a terminal) every 5 s, the first after 5 s.
                if self.last.elapsed() >= Duration::from_secs(5)
                    && self.started.elapsed() >= Duration::from_secs(5)
                {
                    self.last = Instant::now();
                    eprintln!("{name}: {}", line(s));
                }
            }
        }
    }

    /// Ends a live line.
    pub fn finish(&mut self) {
        if self.tty && self.enc == Encoding::Text {
            eprintln!();
            self.tty = false;
        }
    }
}

/// The closing line of a complete download.
pub fn done_line(
    name: &str,
    bytes: u64,
    elapsed: f64,
    downloaded: u64,
    saved_in: Option<&str>,
) -> String {
    let secs = elapsed.max(0.001);
    let place = match saved_in {
        None => "imported into the BTFS store".to_string(),
        Some(p) => format!("saved in {}", clean(p)),
    };
    format!(
        "downloaded {} ({}) in {secs:.1} s, {}/s; {place}",
        clean(name),
        human_size(bytes),
        human_size((downloaded as f64 / secs) as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*.mkv", "dir/a.mkv"));
        assert!(glob("dir/*", "dir/a/b"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("*.mkv", "a.mkv.txt"));
        assert!(glob("*", ""));
    }
}

//! `btfs daemon`: the HTTP API with the dashboard, and the gateway over the local store,
//! until interrupted. The API's address goes into `$BTFS_PATH/api` (as kubo writes it) so
//! that other commands find the daemon and go through it.
//!
//! At start the daemon raises its soft limit on open files to the hard limit (many
//! systems start programs at 1024 with a far higher hard limit) and sizes each listener's
//! cap on connections from the limit in force ([`node::http::connections_for`]), so
//! connections alone cannot take the descriptors its repo, jobs and commands need. It
//! warns (once, on standard error) when the repo folder is open to other users; it
//! never changes the folder's mode itself, as kubo does not.
//!
//! No locks of its own; see [`crate::api`] for those of the API and the jobs.

use super::{btfs_path, wait_for_signal};
use crate::api::jobs::Jobs;
use crate::api::server::{self, Daemon};
use crate::cli::DaemonArgs;
use crate::output::Encoding;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::repo::parse_listen_addr;
use store::{LockMode, Repo};
use tokio::sync::watch;

/// The file that names the running daemon's API.
pub const API_FILE: &str = "api";
/// The file a running daemon holds locked (exclusively), with its pid.
pub const LOCK_FILE: &str = "daemon.lock";
/// The file that holds the API token of the running daemon, readable by its owner only.
pub const TOKEN_FILE: &str = "api.token";

pub fn run(args: DaemonArgs, enc: Encoding) -> anyhow::Result<()> {
    let path = btfs_path()?;
    if Repo::init(&path)? {
        eprintln!("initialized a BTFS repo at {}", path.display());
    }
    warn_if_shared(&path);
    let config = Repo::read_config(&path)?;
    let gateway = args.gateway.unwrap_or(config.addresses.gateway);
    let gateway_addr = parse_listen_addr(&gateway).with_context(|| {
        format!("gateway address {gateway:?}: give IP:PORT or /ip4/IP/tcp/PORT")
    })?;
    let api = args.api.unwrap_or(config.addresses.api);
    let api_addr = parse_listen_addr(&api)
        .with_context(|| format!("API address {api:?}: give IP:PORT or /ip4/IP/tcp/PORT"))?;
    let given = args.api_token.filter(|t| !t.is_empty());
    if !api_addr.ip().is_loopback() && given.is_none() {
        anyhow::bail!(
            "the API on {api_addr} would be reachable from other machines: choose its token \
             with BTFS_API_TOKEN (or --api-token), or listen on 127.0.0.1"
        );
    }
    // Every request needs the token, on loopback too (other users and programs of this
    // machine reach loopback as well). Without one given, a fresh one each run; the
    // command line reads it from the repo, the dashboard from its URL.
    let token = given.unwrap_or_else(|| {
        format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    });
    // One daemon per repo: two would run every job twice.
    let daemon_lock = path.join(LOCK_FILE);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&daemon_lock)
        .with_context(|| format!("{}", daemon_lock.display()))?;
    if lock_file.try_lock().is_err() {
        let pid = std::fs::read_to_string(&daemon_lock).unwrap_or_default();
        anyhow::bail!(
            "a daemon already runs for the repo at {} (pid {})",
            path.display(),
            pid.trim()
        );
    }
    // Uploads a killed daemon left behind.
    let _ = std::fs::remove_dir_all(path.join("api-uploads"));
    {
        use std::io::{Seek, Write};
        let mut f = &lock_file;
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = write!(f, "{}", std::process::id());
    }
    // A shared hold on the repo: downloads and `add` go on while the daemon runs, but
    // `repo gc` (exclusive) cannot delete blocks under a response being streamed; gc
    // through the API lets go of it for the time it runs.
    let (repo, _) = Repo::open(&path, LockMode::Shared)?;
    let blocks = Arc::new(Repo::blockstore_at(&path).context("opening the blockstore")?);
    let exe = std::env::current_exe().context("finding the btfs executable")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let gw_listener = tokio::net::TcpListener::bind(gateway_addr)
            .await
            .with_context(|| format!("gateway: cannot listen on {gateway_addr}"))?;
        let api_listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("API: cannot listen on {api_addr}"))?;
        let gw_local = gw_listener.local_addr()?;
        let api_local = api_listener.local_addr()?;
        let program = server::Program {
            exe,
            btfs_path: path.clone(),
            gateway_url: format!("http://{}", loopback_if_unspecified(gw_local)),
        };
        let jobs = Jobs::load(program.clone(), args.max_active_downloads)?;
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let d = Arc::new(Daemon {
            btfs_path: path.clone(),
            program,
            api_addr: api_local,
            token: token.clone(),
            hold: Mutex::new(Some(repo)),
            jobs: jobs.clone(),
            shutdown: shutdown_tx,
            gc: Arc::new(tokio::sync::Mutex::new(())),
            commands: Default::default(),
        });
        write_api_files(&path, api_local, &token)?;
        let (stop_servers_tx, stop_servers_rx) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let limits = http_limits(raise_descriptor_limit());
        let gw_task = tokio::spawn(node::gateway::serve(
            gw_listener,
            blocks,
            limits,
            until(stop_servers_rx.clone()),
        ));
        let api_task = tokio::spawn(node::http::serve(
            api_listener,
            server::router(d.clone()),
            limits,
            until(stop_servers_rx),
        ));
        let api_url = format!("http://{}", loopback_if_unspecified(api_local));
        match enc {
            Encoding::Json => println!(
                "{}",
                serde_json::json!({
                    "Api": api_url,
                    "Dashboard": format!("{api_url}/dashboard/#token={token}"),
                    "Gateway": format!("http://{gw_local}"),
                    "Repo": path.display().to_string(),
                })
            ),
            Encoding::Text => {
                println!("API server listening on {api_url}");
                println!("dashboard: {api_url}/dashboard/#token={token}");
                println!("gateway listening on http://{gw_local}");
                println!("daemon is ready (repo {}); Ctrl-C stops it", path.display());
            }
        }
        jobs.start_saved();
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = shutdown_rx.wait_for(|v| *v) => {}
        }
        if enc == Encoding::Text {
            eprintln!("stopping: jobs save their state…");
        }
        jobs.shutdown().await;
        remove_api_files(&path);
        let _ = stop_servers_tx.send(true);
        // Streams that do not end by themselves (a `serve` run through the API) get a
        // few seconds; their commands are stopped when the runtime goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = gw_task.await;
            let _ = api_task.await;
        })
        .await;
        if enc == Encoding::Text {
            eprintln!("daemon stopped");
        }
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The connection limits of both listeners ([`node::http`]) for a process that may open
/// `descriptors` files; tests shorten them with `BTFS_HTTP_MAX_CONNECTIONS` (never above
/// what the descriptors allow), `BTFS_HTTP_HEADER_TIMEOUT_MS`, `BTFS_HTTP_IDLE_TIMEOUT_MS`
/// and `BTFS_HTTP_WRITE_STALL_TIMEOUT_MS`.
fn http_limits(descriptors: u64) -> node::http::Limits {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let ms = |v: u64| Duration::from_millis(v.max(1));
    let fit = node::http::connections_for(descriptors);
    if fit < node::http::MAX_CONNECTIONS {
        eprintln!(
            "warning: this process may open only {descriptors} files (ulimit -n), so each \
             listener takes at most {fit} connections at once; raise the limit for more"
        );
    }
    let mut l = node::http::Limits {
        max_connections: fit,
        ..Default::default()
    };
    if let Some(n) = var("BTFS_HTTP_MAX_CONNECTIONS") {
        l.max_connections = usize::try_from(n).unwrap_or(usize::MAX).clamp(1, fit);
    }
    if let Some(v) = var("BTFS_HTTP_HEADER_TIMEOUT_MS") {
        l.header_read_timeout = ms(v);
    }
    if let Some(v) = var("BTFS_HTTP_IDLE_TIMEOUT_MS") {
        l.idle_timeout = ms(v);
    }
    if let Some(v) = var("BTFS_HTTP_WRITE_STALL_TIMEOUT_MS") {
        l.write_stall_timeout = ms(v);
    }
    l
}

/// Raises the soft limit on open files to the hard one, and returns the soft limit then
/// in force (the old one when it cannot be raised).
fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let soft = now.current.unwrap_or(u64::MAX);
    match now.maximum {
        Some(hard) if hard > soft => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => hard,
                Err(_) => soft,
            }
        }
        _ => soft,
    }
}

/// One line on standard error when the repo folder can be read or entered by its group
/// or by others (a repo made before btfs made them private, or by hand).
fn warn_if_shared(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let shown = path.display().to_string();
        let shown = crate::output::clean(&shown);
        eprintln!(
            "warning: the repo folder {shown} is open to other users (mode {mode:03o}): they \
             can read its blocks and records; `chmod 700 {shown}` makes it private"
        );
    }
}

fn loopback_if_unspecified(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

fn write_api_files(path: &std::path::Path, api: SocketAddr, token: &str) -> anyhow::Result<()> {
    let a = loopback_if_unspecified(api);
    let multiaddr = match a {
        SocketAddr::V4(v) => format!("/ip4/{}/tcp/{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("/ip6/{}/tcp/{}", v.ip(), v.port()),
    };
    let f = path.join(API_FILE);
    std::fs::write(&f, multiaddr).with_context(|| format!("{}", f.display()))?;
    let t = path.join(TOKEN_FILE);
    let _ = std::fs::remove_file(&t);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&t)
        .with_context(|| format!("{}", t.display()))?;
    file.write_all(token.as_bytes())?;
    Ok(())
}

fn remove_api_files(path: &std::path::Path) {
    let _ = std::fs::remove_file(path.join(API_FILE));
    let _ = std::fs::remove_file(path.join(TOKEN_FILE));
}

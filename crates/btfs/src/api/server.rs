//! The daemon's HTTP API (`/api/v1/…`) and the dashboard (`/dashboard/`).
//!
//! Every command of the command line is reachable as `POST /api/v1/<path>?arg=…&<option>=…`
//! ([`super::mapping`] turns the query into the command's arguments with the same clap
//! tree). A command runs as a child `btfs` process of the daemon with the same repo: the
//! child takes the repo lock in shared mode beside the daemon, a crash of one command
//! cannot take the daemon down, and cancelling a request (closing the connection) stops
//! its command with SIGTERM, which every long-running command handles cleanly. Downloads
//! are jobs ([`super::jobs`]) that outlive their request.
//!
//! Every request passes [`check_access`] first: the `Host` must be this API (no DNS
//! rebinding), an `Origin`/`Referer` must be the API's own origin (a web page elsewhere
//! cannot drive it), and the bearer token is checked when one is set. Bodies are capped.
//!
//! Signals: a child is signalled only through a handle that names it and no other
//! process: its `Child` while it is not reaped, or a [`Signaller`] (a pidfd) kept by the
//! maps of running commands and jobs. A stored pid number is never signalled: once the
//! child is reaped the number may name another process.

use super::jobs::{JobSpec, Jobs};
use super::mapping;
use crate::cli::Cli;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use clap::CommandFactory;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Set in the environment of commands the daemon runs, so they run themselves instead
/// of asking the daemon again.
pub const CHILD_ENV: &str = "BTFS_DAEMON_CHILD";
/// The gateway URL of the daemon, for the commands it runs (see [`Program`]).
pub const GATEWAY_ENV: &str = "BTFS_DAEMON_GATEWAY";
/// The response header naming a running command, for `POST /api/v1/requests/stop?arg=ID`.
pub const COMMAND_HEADER: &str = "x-btfs-command";
/// Largest uploaded `.torrent` (16 MiB), as for every torrent btfs reads.
pub const MAX_TORRENT_SIZE: usize = bittorrent::metainfo::MAX_TORRENT_SIZE;
/// Largest `add` upload.
pub const MAX_ADD_BODY: u64 = 64 << 30;
/// Most files and folders in one `add` upload.
const MAX_PARTS: usize = 100_000;
/// Longest query string (a second guard: the listener refuses a request head longer
/// than [`node::http::MAX_BUF_SIZE`] before it gets here).
const MAX_QUERY: usize = 64 << 10;
/// Most bytes of a command's standard error kept for its error message.
const STDERR_TAIL: usize = 16 << 10;

pub struct Daemon {
    pub btfs_path: PathBuf,
    pub program: Program,
    pub api_addr: SocketAddr,
    /// Every API request must carry it (`Authorization: Bearer …`).
    pub token: String,
    /// The daemon's shared hold on the repo (see `daemon.rs`); let go during `repo gc`.
    pub hold: Mutex<Option<store::Repo>>,
    pub jobs: Arc<Jobs>,
    /// Turns true when the daemon is asked to stop (`/api/v1/shutdown`).
    pub shutdown: watch::Sender<bool>,
    /// Serialises `repo gc` runs.
    pub gc: Arc<tokio::sync::Mutex<()>>,
    /// Commands running for requests, by the id sent in [`COMMAND_HEADER`].
    pub commands: Arc<Mutex<std::collections::HashMap<String, Arc<Signaller>>>>,
}

pub fn router(d: Arc<Daemon>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(d)
}

async fn handle(State(d): State<Arc<Daemon>>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    if raw_query.len() > MAX_QUERY {
        return error(StatusCode::URI_TOO_LONG, 2, "the query string is too long");
    }
    let query = match mapping::parse_query(&raw_query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, 2, e.to_string()),
    };
    let query_token = (req.method() == Method::GET)
        .then(|| {
            query
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        })
        .flatten();
    // The dashboard's files are static and hold no secret: they need no token (a
    // browser cannot send the one in the page's #fragment for them), and a link to the
    // page from elsewhere may open it.
    let page = (req.method() == Method::GET || req.method() == Method::HEAD)
        && (path == "/" || path == "/dashboard" || path.starts_with("/dashboard/"));
    if let Err(r) = check_access(&d, req.headers(), query_token.as_deref(), page) {
        return *r;
    }
    if path == "/" || path == "/dashboard" {
        return redirect("/dashboard/");
    }
    if let Some(file) = path.strip_prefix("/dashboard/") {
        return dashboard(req.method(), file);
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return error(
            StatusCode::NOT_FOUND,
            1,
            format!("{path}: not found (the API is under /api/v1/, the dashboard at /dashboard/)"),
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return error(StatusCode::NOT_FOUND, 1, format!("{path}: no such command"));
    }
    let is_events = segments == ["bittorrent", "jobs", "events"];
    let method_ok = if is_events {
        req.method() == Method::GET
    } else {
        req.method() == Method::POST
    };
    if !method_ok {
        let allow = if is_events { "GET" } else { "POST" };
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            2,
            format!("{} /api/v1/{rest}: use {allow}", req.method()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return r;
    }
    let enc = match query
        .iter()
        .rev()
        .find(|(k, _)| k == "enc")
        .map(|(_, v)| v.as_str())
    {
        None | Some("json") => "json",
        Some("text") => "text",
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                format!("enc={other}: use json or text"),
            )
        }
    };
    let channels = query.iter().any(|(k, v)| k == "channels" && v != "false");
    match segments.as_slice() {
        ["version"] => json(
            StatusCode::OK,
            &serde_json::json!({
                "Version": env!("CARGO_PKG_VERSION"),
                "Api": format!("http://{}", d.api_addr),
                "Gateway": d.program.gateway_url,
                "Repo": d.btfs_path.display().to_string(),
            }),
        ),
        ["commands"] => json(StatusCode::OK, &mapping::describe(&Cli::command())),
        ["shutdown"] => {
            let _ = d.shutdown.send(true);
            json(
                StatusCode::OK,
                &serde_json::json!({"Message": "the daemon is stopping"}),
            )
        }
        ["daemon"] => error(
            StatusCode::BAD_REQUEST,
            2,
            "the daemon is already running: this is its API",
        ),
        // SIGTERM to a command a request runs (the CLI's Ctrl-C): it ends as on Ctrl-C
        // here and its last words still reach the client.
        ["requests", "stop"] => {
            let id = query
                .iter()
                .find(|(k, _)| k == "arg")
                .map(|(_, v)| v.clone());
            let child = id
                .as_ref()
                .and_then(|i| d.commands.lock().ok().and_then(|c| c.get(i).cloned()));
            match child {
                Some(child) => {
                    child.terminate();
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"Id": id, "Stopped": true}),
                    )
                }
                None => error(StatusCode::NOT_FOUND, 1, "no such running command"),
            }
        }
        ["bittorrent", "jobs", "events"] => super::jobs::events(d.clone(), &query),
        ["bittorrent", "jobs", sub] => super::jobs::command(&d, sub, &query).await,
        ["bittorrent", "download"] => download(d.clone(), req, &query).await,
        ["add"] => add(d.clone(), req, &query, enc, channels).await,
        ["repo", "gc"] => {
            let argv = match checked_argv(&["repo", "gc"], &query) {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let guard = d.gc.clone().lock_owned().await;
            // gc needs the repo to itself: the daemon lets go of its shared hold while
            // it runs (commands and jobs that run still hold theirs, and gc says so).
            let held = d.hold.lock().map(|mut h| h.take()).unwrap_or(None);
            drop(held);
            let d2 = d.clone();
            let after = move || {
                if let Ok((repo, _)) = store::Repo::open(&d2.btfs_path, store::LockMode::Shared) {
                    if let Ok(mut h) = d2.hold.lock() {
                        *h = Some(repo);
                    }
                }
                drop(guard);
            };
            let run = Run {
                argv,
                enc,
                channels,
                ..Run::default()
            };
            exec(&d, run, Some(Box::new(after))).await
        }
        _ => {
            let argv = match checked_argv(&segments, &query) {
                Ok(a) => a,
                Err(r) => return *r,
            };
            let raw = segments == ["cat"];
            let run = Run {
                argv,
                enc,
                channels,
                raw,
                ..Run::default()
            };
            exec(&d, run, None).await
        }
    }
}

/// The arguments of the command at `path` from the query, checked by the command
/// line's own parser (so the API refuses exactly what the CLI refuses).
fn checked_argv(path: &[&str], query: &[(String, String)]) -> Result<Vec<String>, Refusal> {
    let argv = mapping::argv_from_query(&Cli::command(), path, query).map_err(|e| {
        let status = if e.0.starts_with("unknown command") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        Box::new(error(status, 2, e.to_string()))
    })?;
    parse_cli(&argv).map(|_| argv)
}

/// Parses an argument vector (after the program name) as the command line would.
pub fn parse_cli(argv: &[String]) -> Result<Cli, Refusal> {
    use clap::Parser;
    let full = std::iter::once("btfs".to_string()).chain(argv.iter().cloned());
    Cli::try_parse_from(full).map_err(|e| {
        let msg = e.render().to_string();
        let msg = msg.trim().trim_start_matches("error: ").to_string();
        Box::new(error(StatusCode::BAD_REQUEST, 2, msg))
    })
}

/// Checks that a request may use the API: the `Host` names this API (an IP literal or
/// `localhost`, with its port), a browser's `Origin` (or `Referer`) is the API's own
/// origin, and the bearer token matches. For the dashboard's static files (`page`) only
/// the `Host` is checked.
pub fn check_access(
    d: &Daemon,
    headers: &HeaderMap,
    query_token: Option<&str>,
    page: bool,
) -> Result<(), Refusal> {
    let forbidden = |m: String| Err(Box::new(error(StatusCode::FORBIDDEN, 1, m)));
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return forbidden("a Host header is required".into());
    };
    if !host_allowed(host, d.api_addr.port()) {
        return forbidden(format!(
            "Host {host:?} is not this API; use http://127.0.0.1:{}",
            d.api_addr.port()
        ));
    }
    if page {
        return Ok(());
    }
    let own = format!("http://{host}");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if origin != own {
            return forbidden(format!(
                "cross-origin request from {origin:?} refused: the API only takes requests from {own}"
            ));
        }
    } else if let Some(referer) = headers.get(header::REFERER) {
        let referer = referer.to_str().unwrap_or("");
        if referer != own && !referer.starts_with(&format!("{own}/")) {
            return forbidden(format!(
                "cross-origin request (Referer {referer:?}) refused"
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return forbidden("cross-site request refused".into());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token);
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), d.token.as_bytes())) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            1,
            "this API needs its token: Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(Box::new(r));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `127.0.0.1:5001`, `[::1]:5001`, `localhost:5001` and other IP literals with the API's
/// port; no other names (a name could be re-bound to 127.0.0.1 by a hostile page). The
/// header is split by the gateway's parser ([`node::host::parse_host`]).
pub fn host_allowed(host: &str, port: u16) -> bool {
    let Ok(h) = node::host::parse_host(host) else {
        return false;
    };
    h.port.unwrap_or(80) == port
        && (h.name.eq_ignore_ascii_case("localhost") || h.name.parse::<std::net::IpAddr>().is_ok())
}

/// A response that ends a request early (boxed: a `Response` is large).
pub type Refusal = Box<Response<Body>>;

pub fn error(status: StatusCode, code: u8, msg: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"Message": msg.into(), "Code": code, "Type": "error"}),
    )
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut body = v.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .expect("static response")
}

fn redirect(to: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .expect("static response")
}

fn dashboard(method: &Method, file: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            2,
            "the dashboard is read with GET",
        );
    }
    let Some((body, kind)) = node::dashboard::file(file) else {
        return error(
            StatusCode::NOT_FOUND,
            1,
            format!("/dashboard/{file}: not found"),
        );
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        )
        .header(header::CACHE_CONTROL, "no-cache")
        .body(if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        })
        .expect("static response")
}

/// One command for [`exec`].
#[derive(Default)]
pub struct Run {
    /// Arguments after `--enc`.
    pub argv: Vec<String>,
    pub enc: &'static str,
    /// Frames of `{"Stdout": text}`, `{"Stderr": text}` and a last `{"Exit": code}` (the
    /// command line uses this to print what the command prints, exit code included).
    pub channels: bool,
    /// The output is bytes (`cat`), not text.
    pub raw: bool,
    /// Standard input of the command.
    pub stdin: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    /// Removed once the command has finished.
    pub temp: Option<TempDir>,
}

/// A folder removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What came first from a command: output, or its end.
enum First {
    Output,
    Exit { code: i32, stderr: String },
}

/// How the daemon starts commands: this executable, with the daemon's repo and gateway.
#[derive(Debug, Clone)]
pub struct Program {
    pub exe: PathBuf,
    pub btfs_path: PathBuf,
    /// `http://IP:PORT` of the daemon's gateway, for the URLs commands print.
    pub gateway_url: String,
}

impl Program {
    /// Starts a `btfs` child of the daemon.
    pub fn spawn(
        &self,
        enc: &str,
        argv: &[String],
        stdin: Stdio,
        cwd: Option<&Path>,
    ) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--enc")
            .arg(enc)
            .args(argv)
            .env("BTFS_PATH", &self.btfs_path)
            .env(CHILD_ENV, "1")
            .env(GATEWAY_ENV, &self.gateway_url)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        // A daemon that dies (even by SIGKILL) stops its commands cleanly: they save
        // their state, and the next daemon starts the jobs again.
        // SAFETY: prctl(2) is async-signal-safe and touches nothing of the parent.
        // Its own process group: a Ctrl-C at the daemon's terminal reaches the daemon,
        // which stops its commands itself (and keeps the jobs to start again).
        cmd.process_group(0).env_remove("BTFS_API_TOKEN");
        let parent = std::process::id();
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The daemon died before the line above: do not run orphaned.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the daemon is gone"));
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

/// A handle that signals one child process, and only it: a pidfd (Linux 5.3+) opened
/// while the child could not have been reaped, so it names that process even after it
/// has ended and its pid number has been given to another (a signal then does nothing).
/// Only where pidfds do not exist (the kernel has no `pidfd_open`, or a seccomp filter
/// refuses it) is the pid number kept, with the reuse window that implies; any other
/// failure (out of descriptors, say) leaves no handle and is logged, never a pid that
/// could be signalled after it names another process.
#[derive(Debug)]
pub struct Signaller(Handle);

#[derive(Debug)]
enum Handle {
    Pidfd(std::os::fd::OwnedFd),
    Pid(rustix::process::Pid),
    None,
}

/// Whether a `pidfd_open` failure means this system has no pidfds at all: `ENOSYS` (a
/// kernel before 5.3) or `EPERM` (the man page lists no `EPERM`: it is what seccomp
/// filters, such as older container runtimes' defaults, answer for unknown calls).
fn no_pidfds(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM
}

impl Signaller {
    /// The handle of `child`, which must not have been waited for yet.
    pub fn of(child: &tokio::process::Child) -> Signaller {
        let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            return Signaller(Handle::None);
        };
        match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => Signaller(Handle::Pidfd(fd)),
            Err(e) if no_pidfds(e) => Signaller(Handle::Pid(pid)),
            Err(e) => {
                eprintln!(
                    "cannot take a handle on child process {}: {e}; it cannot be signalled \
                     (it still stops when its request ends or the daemon stops)",
                    pid.as_raw_pid()
                );
                Signaller(Handle::None)
            }
        }
    }

    /// SIGTERM: a clean stop for every btfs command.
    pub fn terminate(&self) {
        self.send(rustix::process::Signal::TERM);
    }

    pub fn kill(&self) {
        self.send(rustix::process::Signal::KILL);
    }

    fn send(&self, sig: rustix::process::Signal) {
        // A process that has ended already: nothing to do.
        let _ = match &self.0 {
            Handle::Pidfd(fd) => rustix::process::pidfd_send_signal(fd, sig),
            Handle::Pid(pid) => rustix::process::kill_process(*pid, sig),
            Handle::None => Ok(()),
        };
    }
}

/// A running child: SIGTERM when dropped before it ended (the request went away), then
/// SIGKILL if it has not stopped 20 s later.
pub struct Running(Option<tokio::process::Child>);

impl Running {
    pub fn new(child: tokio::process::Child) -> Self {
        Running(Some(child))
    }

    /// A handle for signals from elsewhere (see [`Signaller`]).
    pub fn signaller(&self) -> Signaller {
        match &self.0 {
            Some(c) => Signaller::of(c),
            None => Signaller(Handle::None),
        }
    }

    pub async fn wait(&mut self) -> i32 {
        let Some(child) = self.0.as_mut() else {
            return -1;
        };
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or(-1),
            Err(_) => -1,
        };
        self.0 = None;
        code
    }
}

impl Running {
    /// SIGTERM, then SIGKILL if it has not ended within `grace`; reaps it.
    pub async fn stop(&mut self, grace: std::time::Duration) -> i32 {
        let Some(child) = self.0.as_mut() else {
            return -1;
        };
        terminate_unreaped(child);
        let code = match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(s)) => s.code().unwrap_or(-1),
            _ => {
                let _ = child.kill().await;
                -1
            }
        };
        self.0 = None;
        code
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            terminate_unreaped(&child);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let waited =
                        tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
                            .await;
                    if waited.is_err() {
                        let _ = child.kill().await;
                    }
                });
            }
        }
    }
}

/// Sends SIGTERM to a child we hold and have not reaped: its pid cannot have been
/// reused (an exited child stays a zombie until it is waited for), and tokio reports no
/// pid once it has been.
fn terminate_unreaped(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with the pid of our own unreaped child and a valid signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// The message of a failed command from the tail of its standard error: its JSON error
/// object (`--enc json`), else the text.
pub fn error_of(stderr: &str) -> (String, u8) {
    for line in stderr.lines().rev() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v["Type"] == "error" {
                let code = v["Code"].as_u64().unwrap_or(1).min(255) as u8;
                return (v["Message"].as_str().unwrap_or("").to_string(), code);
            }
        }
    }
    let text = stderr.trim();
    let text = text
        .lines()
        .rev()
        .find(|l| l.starts_with("Error: "))
        .map(|l| l.trim_start_matches("Error: "))
        .unwrap_or(text);
    let msg = if text.is_empty() {
        "the command failed".to_string()
    } else {
        text.to_string()
    };
    (msg, 1)
}

async fn read_tail(mut r: impl AsyncRead + Unpin, frames: Option<mpsc::Sender<Chunk>>) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut text = Utf8Carry::default();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(tx) = &frames {
            let _ = tx.send(Ok(frame("Stderr", &text.take(&buf[..n])))).await;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    if let Some(tx) = &frames {
        let rest = text.finish();
        if !rest.is_empty() {
            let _ = tx.send(Ok(frame("Stderr", &rest))).await;
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

fn frame(kind: &str, data: &[u8]) -> Bytes {
    let mut s = serde_json::json!({ kind: String::from_utf8_lossy(data) }).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Runs a command and streams its output as the response. Status 200 once it prints
/// something (a later failure ends the stream with an error object, or an `Exit` frame);
/// a command that fails before any output gets a 500 with its error.
pub async fn exec(d: &Daemon, run: Run, after: Option<Box<dyn FnOnce() + Send>>) -> Response<Body> {
    let stdin = match &run.stdin {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Stdio::from(f),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()),
        },
        None => Stdio::null(),
    };
    let mut child = match d
        .program
        .spawn(run.enc, &run.argv, stdin, run.cwd.as_deref())
    {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1,
                format!("cannot start the command: {e}"),
            )
        }
    };
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let command_id = format!("{:016x}", rand::random::<u64>());
    if let Ok(mut c) = d.commands.lock() {
        c.insert(command_id.clone(), Arc::new(Signaller::of(&child)));
    }
    let forget = {
        let id = command_id.clone();
        let commands = d.commands.clone();
        move || {
            if let Ok(mut c) = commands.lock() {
                c.remove(&id);
            }
        }
    };
    let (tx, mut rx) = mpsc::channel::<Chunk>(16);
    let (first_tx, first_rx) = oneshot::channel::<First>();
    let channels = run.channels;
    let raw = run.raw;
    let temp = run.temp;
    tokio::spawn(async move {
        // Run last, whatever happens: after the command has been reaped.
        let _after = After(after);
        let _forget = After(Some(Box::new(forget)));
        let _temp = temp;
        let mut running = Running::new(child);
        let stderr_task = tokio::spawn(read_tail(stderr, channels.then(|| tx.clone())));
        let mut first_tx = Some(first_tx);
        if channels {
            if let Some(f) = first_tx.take() {
                let _ = f.send(First::Output);
            }
        }
        let mut buf = vec![0u8; 64 << 10];
        let mut text = Utf8Carry::default();
        let mut gone = false;
        loop {
            let n = tokio::select! {
                r = stdout.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                // The client went away (a command may print nothing for a long time).
                _ = tx.closed() => {
                    gone = true;
                    break;
                }
            };
            let chunk = if channels {
                frame("Stdout", &text.take(&buf[..n]))
            } else {
                Bytes::copy_from_slice(&buf[..n])
            };
            if let Some(f) = first_tx.take() {
                let _ = f.send(First::Output);
            }
            if tx.send(Ok(chunk)).await.is_err() {
                gone = true;
                break;
            }
        }
        if gone {
            running.stop(STOP_GRACE).await;
            return;
        }
        if channels {
            let rest = text.finish();
            if !rest.is_empty() {
                let _ = tx.send(Ok(frame("Stdout", &rest))).await;
            }
        }
        let code = tokio::select! {
            c = running.wait() => c,
            _ = tx.closed() => {
                running.stop(STOP_GRACE).await;
                return;
            }
        };
        let stderr = stderr_task.await.unwrap_or_default();
        match first_tx.take() {
            Some(f) => {
                let _ = f.send(First::Exit { code, stderr });
            }
            None if channels => {
                let mut s = serde_json::json!({ "Exit": code }).to_string();
                s.push('\n');
                let _ = tx.send(Ok(Bytes::from(s))).await;
            }
            // Bytes cannot carry an error object: the response is cut off instead, so
            // the client sees a failed transfer, not a file with an error at its end.
            None if code != 0 && raw => {
                let (msg, _) = error_of(&stderr);
                let _ = tx.send(Err(std::io::Error::other(msg))).await;
            }
            None if code != 0 => {
                let (msg, c) = error_of(&stderr);
                let mut s =
                    serde_json::json!({"Message": msg, "Code": c, "Type": "error"}).to_string();
                s.insert(0, '\n');
                s.push('\n');
                let _ = tx.send(Ok(Bytes::from(s))).await;
            }
            None => {}
        }
    });
    match first_rx.await {
        Ok(First::Exit { code, stderr }) => {
            if code == 0 {
                return content(run.enc, run.raw, false, Body::empty());
            }
            let (msg, c) = error_of(&stderr);
            error(StatusCode::INTERNAL_SERVER_ERROR, c, msg)
        }
        Ok(First::Output) => {
            let stream = futures_lite::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (b, rx))
            });
            let mut r = content(run.enc, run.raw, channels, Body::from_stream(stream));
            if let Ok(v) = HeaderValue::from_str(&command_id) {
                r.headers_mut().insert(COMMAND_HEADER, v);
            }
            r
        }
        Err(_) => {
            // The task ended without a word: a read error before any output.
            rx.close();
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1,
                "the command ended unexpectedly",
            )
        }
    }
}

/// A piece of a response body, or the error that cuts it off.
type Chunk = Result<Bytes, std::io::Error>;

/// How long a stopped command has to end after SIGTERM before it is killed.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs a closure when dropped.
struct After(Option<Box<dyn FnOnce() + Send>>);

impl Drop for After {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Turns a byte stream into text without splitting a character between two reads.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn take(&mut self, data: &[u8]) -> Vec<u8> {
        self.0.extend_from_slice(data);
        let keep = match std::str::from_utf8(&self.0) {
            Ok(_) => 0,
            // An incomplete character at the end waits for the next read.
            Err(e) if e.error_len().is_none() => self.0.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let rest = self.0.split_off(self.0.len() - keep);
        std::mem::replace(&mut self.0, rest)
    }

    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

fn content(enc: &str, raw: bool, channels: bool, body: Body) -> Response<Body> {
    let kind = if channels {
        "application/x-ndjson"
    } else if raw {
        "application/octet-stream"
    } else if enc == "json" {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    uncached(kind, body)
}

/// A 200 response of this media type that no cache keeps (and no browser sniffs).
pub fn uncached(kind: &str, body: Body) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response")
}

/// A path inside an upload: relative, with no empty, `.` or `..` components.
fn upload_path(name: &str) -> Result<PathBuf, String> {
    let decoded = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| format!("file name {name:?} is not UTF-8"))?;
    let mut p = PathBuf::new();
    for c in decoded.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\\') || c.contains('\0') {
            return Err(format!(
                "file name {decoded:?}: every part of an uploaded path must be a plain name"
            ));
        }
        p.push(c);
    }
    if p.as_os_str().is_empty() {
        return Err("an uploaded file needs a name".into());
    }
    Ok(p)
}

/// Where uploads wait for their command: `$BTFS_PATH/api-uploads/<random>`.
fn upload_dir(d: &Daemon) -> std::io::Result<TempDir> {
    let dir = d
        .btfs_path
        .join("api-uploads")
        .join(format!("{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

/// Most bytes of a refused upload read before the refusal is sent.
const MAX_REFUSED_UPLOAD: usize = 16 << 20;

/// `POST /api/v1/add?nocopy=true&arg=/abs/path…`: the files are read where they are, on
/// the daemon's machine (as `serve` reads its paths), and their leaves recorded as
/// filestore references. Paths must be absolute; an upload is refused (its bytes would
/// be in a temporary folder, removed when the command ends).
async fn add_nocopy(
    d: Arc<Daemon>,
    req: Request<Body>,
    query: &[(String, String)],
    enc: &'static str,
    channels: bool,
) -> Response<Body> {
    let paths: Vec<&String> = query
        .iter()
        .filter(|(k, _)| k == "arg")
        .map(|(_, v)| v)
        .collect();
    let upload = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    if paths.is_empty() || upload {
        // Read what was sent (bounded) before answering: a client still sending when the
        // answer comes would see the connection reset instead of the message.
        let _ = axum::body::to_bytes(req.into_body(), MAX_REFUSED_UPLOAD).await;
        return error(
            StatusCode::BAD_REQUEST,
            2,
            "add --nocopy refers to files where they are, on the daemon's machine: give \
             their absolute paths as arg=…, with no upload (uploaded bytes have no file to \
             stay in)",
        );
    }
    if let Some(p) = paths.iter().find(|p| !Path::new(p.as_str()).is_absolute()) {
        return error(
            StatusCode::BAD_REQUEST,
            2,
            format!("add --nocopy: {p:?} is not an absolute path"),
        );
    }
    // The repo's own files (config, API token, blocks) are never referenced.
    let repo = d
        .btfs_path
        .canonicalize()
        .unwrap_or_else(|_| d.btfs_path.clone());
    if let Some(p) = paths.iter().find(|p| {
        Path::new(p.as_str())
            .canonicalize()
            .is_ok_and(|c| c.starts_with(&repo))
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            2,
            format!("add --nocopy: {p:?} is inside the repo"),
        );
    }
    let argv = match checked_argv(&["add"], query) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let run = Run {
        argv,
        enc,
        channels,
        ..Run::default()
    };
    exec(&d, run, None).await
}

/// Whether an `add` request asks for `--nocopy`.
fn wants_nocopy(query: &[(String, String)]) -> bool {
    query
        .iter()
        .any(|(k, v)| k == "nocopy" && !matches!(v.as_str(), "false" | "0"))
}

/// `POST /api/v1/add`: the files come as `multipart/form-data` parts, each named by its
/// path (`dir/a.txt`, percent-encoded as kubo sends them), folders as parts of type
/// `application/x-directory`, symbolic links as `application/symlink` (the body is the
/// target); a part without a file name is standard input. They are written to a folder
/// of the repo and added from there, so names and CIDs are those of a local `btfs add`.
/// With `nocopy=true`: [`add_nocopy`].
async fn add(
    d: Arc<Daemon>,
    req: Request<Body>,
    query: &[(String, String)],
    enc: &'static str,
    channels: bool,
) -> Response<Body> {
    if wants_nocopy(query) {
        return add_nocopy(d, req, query, enc, channels).await;
    }
    if query.iter().any(|(k, _)| k == "arg") {
        return error(
            StatusCode::BAD_REQUEST,
            2,
            "add takes its files as a multipart/form-data upload, not as paths",
        );
    }
    let mut argv = match checked_argv(&["add"], query) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let temp = match upload_dir(&d) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()),
    };
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, 2, format!("add: {e}")),
    };
    let mut tops: Vec<String> = Vec::new();
    let mut seen_tops = std::collections::HashSet::new();
    // Symbolic links are made after every part is written, and no part may lie under
    // one: a link made earlier could otherwise lead a later part out of the folder.
    let mut links: Vec<(PathBuf, std::ffi::OsString)> = Vec::new();
    let mut link_paths = std::collections::HashSet::new();
    let mut parts = 0usize;
    let mut stdin = None;
    let mut total: u64 = 0;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return error(StatusCode::BAD_REQUEST, 2, format!("add: {e}")),
        };
        let kind = field.content_type().unwrap_or("").to_string();
        let name = field.file_name().unwrap_or("").to_string();
        parts += 1;
        if parts > MAX_PARTS {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                2,
                format!("add: at most {MAX_PARTS} files and folders in one upload"),
            );
        }
        let target = if name.is_empty() {
            if stdin.is_some() {
                return error(
                    StatusCode::BAD_REQUEST,
                    2,
                    "add: more than one unnamed part",
                );
            }
            let p = temp.0.join(".stdin");
            stdin = Some(p.clone());
            p
        } else {
            let rel = match upload_path(&name) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, 2, format!("add: {e}")),
            };
            if rel.ancestors().any(|a| link_paths.contains(a)) {
                return error(
                    StatusCode::BAD_REQUEST,
                    2,
                    format!("add: {name}: a path inside a symbolic link of the upload"),
                );
            }
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if seen_tops.insert(top.clone()) {
                tops.push(top);
            }
            if kind == "application/symlink" {
                link_paths.insert(rel.clone());
            }
            temp.0.join("files").join(rel)
        };
        if let Some(parent) = target.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string());
            }
        }
        if kind == "application/x-directory" {
            if let Err(e) = std::fs::create_dir_all(&target) {
                return error(StatusCode::BAD_REQUEST, 2, format!("add: {name}: {e}"));
            }
            continue;
        }
        let mut data = Vec::new();
        let mut file = if kind == "application/symlink" {
            None
        } else {
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .await
            {
                Ok(f) => Some(f),
                Err(e) => return error(StatusCode::BAD_REQUEST, 2, format!("add: {name}: {e}")),
            }
        };
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return error(StatusCode::BAD_REQUEST, 2, format!("add: {e}")),
            };
            total += chunk.len() as u64;
            if total > MAX_ADD_BODY {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    2,
                    format!("add: uploads are limited to {} GiB", MAX_ADD_BODY >> 30),
                );
            }
            match &mut file {
                Some(f) => {
                    if let Err(e) = f.write_all(&chunk).await {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string());
                    }
                }
                None if data.len() + chunk.len() <= 4096 => data.extend_from_slice(&chunk),
                None => return error(StatusCode::BAD_REQUEST, 2, "add: symlink target too long"),
            }
        }
        if let Some(mut f) = file {
            if let Err(e) = f.flush().await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string());
            }
        } else {
            use std::os::unix::ffi::OsStringExt;
            links.push((target, std::ffi::OsString::from_vec(data)));
        }
    }
    for (target, link) in links {
        if let Err(e) = std::os::unix::fs::symlink(&link, &target) {
            let shown = target
                .strip_prefix(&temp.0)
                .unwrap_or(&target)
                .display()
                .to_string();
            return error(StatusCode::BAD_REQUEST, 2, format!("add: {shown}: {e}"));
        }
    }
    if !tops.is_empty() {
        if stdin.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                "add: give either files or standard input, not both",
            );
        }
        argv.push("--".into());
        argv.extend(tops);
    } else if stdin.is_none() {
        // Nothing uploaded: add empty standard input, as `btfs add < /dev/null` does.
        let p = temp.0.join(".stdin");
        if let Err(e) = std::fs::write(&p, b"") {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string());
        }
        stdin = Some(p);
    }
    let files = temp.0.join("files");
    let _ = std::fs::create_dir_all(&files);
    let run = Run {
        argv,
        enc,
        channels,
        stdin,
        cwd: Some(files),
        temp: Some(temp),
        ..Run::default()
    };
    exec(&d, run, None).await
}

/// Most uploaded torrents parsed at once: parsing takes a blocking thread and memory
/// proportional to the torrent (up to 16 MiB), so a burst of uploads waits its turn.
const MAX_CONCURRENT_PARSES: usize = 2;

static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_PARSES);

/// The multipart part `file` of a download request (at most [`MAX_TORRENT_SIZE`]
/// bytes), if there is one.
async fn torrent_part(req: Request<Body>) -> Result<Option<Vec<u8>>, Response<Body>> {
    let bad =
        |e: &dyn std::fmt::Display| error(StatusCode::BAD_REQUEST, 2, format!("download: {e}"));
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(&e))?;
    let mut torrent = None;
    while let Some(mut field) = multipart.next_field().await.map_err(|e| bad(&e))? {
        if field.name() != Some("file") {
            continue;
        }
        let mut data = Vec::new();
        while let Some(c) = field.chunk().await.map_err(|e| bad(&e))? {
            if data.len() + c.len() > MAX_TORRENT_SIZE {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    2,
                    format!(
                        "download: a .torrent is at most {} MiB (real torrents are a few MiB)",
                        MAX_TORRENT_SIZE >> 20
                    ),
                ));
            }
            data.extend_from_slice(&c);
        }
        torrent = Some(data);
    }
    Ok(torrent)
}

/// Parses an uploaded torrent once, for the job to use: off the async threads (the API
/// and the gateway keep answering meanwhile), at most [`MAX_CONCURRENT_PARSES`] at once.
async fn parse_upload(t: Vec<u8>) -> Result<JobSpec, Response<Body>> {
    // The permit moves into the blocking task: a client that goes away mid-parse drops
    // this handler, but the parse runs on, and must keep its slot until it ends.
    let permit = PARSES
        .acquire()
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))?;
    let parsed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        bittorrent::Metainfo::from_bytes(&t).map(|m| JobSpec::Torrent {
            info_hash: m.wire_info_hash().to_hex(),
            name: m.info.stored_name,
            bytes: t,
        })
    })
    .await;
    match parsed {
        Ok(Ok(spec)) => Ok(spec),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            2,
            format!("the uploaded .torrent: {e}"),
        )),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string())),
    }
}

/// What a download request downloads: the magnet link in `arg`, or the uploaded torrent.
async fn job_spec(
    query: &[(String, String)],
    torrent: Option<Vec<u8>>,
) -> Result<JobSpec, Response<Body>> {
    let source = query
        .iter()
        .find(|(k, _)| k == "arg")
        .map(|(_, v)| v.clone());
    if query.iter().any(|(k, _)| k == "t" || k == "torrent") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            2,
            "upload the .torrent as the multipart part \"file\" (the daemon does not read paths)",
        ));
    }
    match (source, torrent) {
        (Some(_), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            2,
            "give a magnet link or a .torrent, not both",
        )),
        (Some(m), None) if m.trim_start().to_ascii_lowercase().starts_with("magnet:") => {
            match m.parse::<bittorrent::Magnet>() {
                Ok(_) => Ok(JobSpec::Magnet(m)),
                Err(e) => Err(error(
                    StatusCode::BAD_REQUEST,
                    2,
                    format!("reading the magnet link: {e}"),
                )),
            }
        }
        (Some(_), None) => Err(error(
            StatusCode::BAD_REQUEST,
            2,
            "arg is a magnet link; upload a .torrent as the multipart part \"file\"",
        )),
        (None, Some(t)) => parse_upload(t).await,
        (None, None) => Err(error(
            StatusCode::BAD_REQUEST,
            2,
            "give a magnet link (arg=magnet:?…) or upload a .torrent (multipart part \"file\")",
        )),
    }
}

/// `POST /api/v1/bittorrent/download`: a job. The source is `arg` (a magnet link) or a
/// `.torrent` uploaded as the multipart part `file`; the other options are the
/// command's. With `detach=true` the job is returned at once; otherwise its events
/// stream as newline-delimited JSON and closing the connection cancels it.
async fn download(
    d: Arc<Daemon>,
    req: Request<Body>,
    query: &[(String, String)],
) -> Response<Body> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let torrent = if is_multipart {
        match torrent_part(req).await {
            Ok(t) => t,
            Err(r) => return r,
        }
    } else {
        None
    };
    let spec = match job_spec(query, torrent).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The options, checked by the command line's parser (with a stand-in source).
    let options: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| {
            k != "arg"
                && k != "progress-detail"
                && k != "metadata-cache"
                && !mapping::API_KEYS.contains(&k.as_str())
        })
        .cloned()
        .collect();
    let mut probe = options.clone();
    probe.push((
        "arg".into(),
        "magnet:?xt=urn:btih:0000000000000000000000000000000000000000".into(),
    ));
    let argv = match checked_argv(&["bittorrent", "download"], &probe) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Ok(Cli {
        command: crate::cli::Command::Bittorrent(bt),
        ..
    }) = parse_cli(&argv)
    else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, "unexpected command");
    };
    let crate::cli::Bittorrent::Download(args) = *bt else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, "unexpected command");
    };
    let detach = args.detach;
    // Creating the job writes the upload to disk and reads its name again: blocking work.
    let jobs = d.jobs.clone();
    let created = tokio::task::spawn_blocking(move || jobs.create(spec, options, &args))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("creating the job: {e}")));
    match created {
        Ok((id, rx)) => {
            if detach {
                match d.jobs.summary(&id) {
                    Some(j) => json(StatusCode::OK, &j),
                    None => error(StatusCode::INTERNAL_SERVER_ERROR, 1, "the job vanished"),
                }
            } else {
                super::jobs::attach(d.jobs.clone(), id, rx)
            }
        }
        Err(e) if e.is::<super::jobs::BeingRemoved>() => {
            error(StatusCode::CONFLICT, 1, format!("{e:#}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 1, format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(host_allowed("127.0.0.1:5001", 5001));
        assert!(host_allowed("localhost:5001", 5001));
        assert!(host_allowed("LOCALHOST:5001", 5001));
        assert!(host_allowed("[::1]:5001", 5001));
        assert!(host_allowed("10.0.0.2:5001", 5001));
        assert!(!host_allowed("127.0.0.1:5002", 5001));
        assert!(!host_allowed("127.0.0.1", 5001));
        assert!(!host_allowed("evil.example:5001", 5001));
        assert!(!host_allowed("localhost.evil.example:5001", 5001));
        assert!(!host_allowed("127.0.0.1:x", 5001));
        assert!(!host_allowed("::1", 5001));
        assert!(!host_allowed("localhost:@127.0.0.1:5001", 5001));
        assert!(!host_allowed("localhost:5001@evil.example", 5001));
        assert!(host_allowed("localhost", 80));
    }

    #[test]
    fn only_a_system_without_pidfds_falls_back_to_pids() {
        use rustix::io::Errno;
        assert!(no_pidfds(Errno::NOSYS));
        assert!(no_pidfds(Errno::PERM));
        for e in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::SRCH,
            Errno::INVAL,
        ] {
            assert!(!no_pidfds(e), "{e}");
        }
    }

    #[test]
    fn upload_paths() {
        assert_eq!(upload_path("a%2Fb.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(upload_path("dir/x").unwrap(), PathBuf::from("dir/x"));
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\b",
            "a%00b",
            "%2e%2e/x",
        ] {
            assert!(upload_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_of("noise\n{\"Message\":\"bad\",\"Code\":1,\"Type\":\"error\"}\n"),
            ("bad".to_string(), 1)
        );
        assert_eq!(
            error_of("Error: no such file\n"),
            ("no such file".to_string(), 1)
        );
        assert_eq!(error_of(""), ("the command failed".to_string(), 1));
    }
}

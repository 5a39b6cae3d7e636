//! The command line's side of the API: when a daemon runs for the repo (its address is
//! in `$BTFS_PATH/api` and it answers), the commands that use the repo are sent to it
//! instead of opening the repo here. The request is made from the parsed command line
//! by [`mapping::query_from_matches`]; the output (stdout, stderr and the exit code, as
//! frames) is printed as the command would print it here. Files to add and .torrent
//! files are uploaded; other paths are made absolute (the daemon runs on this machine),
//! among them those of `add --nocopy`, whose files the daemon refers to where they are.

use super::mapping;
use super::server::CHILD_ENV;
use crate::cli::{Bittorrent, Cli, Command, JobsCommand};
use crate::commands::download::{done_line, ProgressView};
use crate::output::{clean, human_size, Encoding};
use anyhow::{bail, Context};
use bittorrent::engine::Stats;
use clap::{ArgMatches, CommandFactory};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running daemon's API.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
}

/// Commands the daemon runs when it is up. The others do not use the repo (`metainfo`,
/// `bencode`, `create`, `scrape`), write local files (`get`), or are the daemon itself.
pub fn goes_through_daemon(c: &Command) -> bool {
    match c {
        Command::Add(_)
        | Command::Cat(_)
        | Command::Ls(_)
        | Command::Pin(_)
        | Command::Repo(_)
        | Command::Filestore(_)
        | Command::Config(_) => true,
        Command::Bittorrent(b) => matches!(
            **b,
            Bittorrent::Download(_) | Bittorrent::Serve(_) | Bittorrent::Jobs(_)
        ),
        Command::Init(_) | Command::Get(_) | Command::Daemon(_) => false,
    }
}

/// The daemon of the repo at `btfs_path`, if one runs. Commands the daemon itself runs
/// never look (they would ask themselves).
pub fn find(btfs_path: &Path) -> Option<Api> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return None;
    }
    // A daemon holds `daemon.lock` while it runs: without that, the `api` file is left
    // from one that died, and whatever listens on its port now is not ours.
    let lock = std::fs::File::open(btfs_path.join(crate::commands::daemon::LOCK_FILE)).ok()?;
    if lock.try_lock_shared().is_ok() {
        return None;
    }
    let text = std::fs::read_to_string(btfs_path.join(crate::commands::daemon::API_FILE)).ok()?;
    let addr: SocketAddr = store::repo::parse_listen_addr(text.trim())?;
    // A file left by a daemon that was killed names nothing that answers.
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let token = std::env::var("BTFS_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::fs::read_to_string(btfs_path.join(crate::commands::daemon::TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_string())
        });
    Some(Api {
        base: format!("http://{addr}"),
        token,
    })
}

/// Runs a parsed command through the daemon; the result is the exit code.
pub fn run(api: Api, matches: &ArgMatches, cli: &Cli, enc: Encoding) -> anyhow::Result<u8> {
    bittorrent::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("setting up the HTTP client")?;
        let (path, query) = mapping::query_from_matches(&Cli::command(), matches);
        let conn = Conn { api, client };
        match &cli.command {
            Command::Bittorrent(b) => match &**b {
                Bittorrent::Download(_) => download(&conn, &path, query, enc).await,
                Bittorrent::Jobs(j) => jobs(&conn, &path, query, j, enc).await,
                Bittorrent::Serve(_) => {
                    let query = absolute(query, &["output", "ip-filter"])?;
                    let query = absolute_serve_paths(query)?;
                    generic(&conn, &path, query, enc, None).await
                }
                Bittorrent::Metainfo(_) => {
                    // A relative block list names a file here, not in the daemon's folder.
                    let query = absolute(query, &["ip-filter"])?;
                    generic(&conn, &path, query, enc, None).await
                }
                _ => generic(&conn, &path, query, enc, None).await,
            },
            // The daemon reads the files where they are (it runs on this machine, as for
            // `serve`): an upload would leave it nothing to refer to.
            Command::Add(a) if a.nocopy => {
                if crate::commands::store::adds_stdin(&a.paths) {
                    bail!("{}", crate::commands::store::NOCOPY_STDIN);
                }
                let query = absolute(query, &["arg"])?;
                generic(&conn, &path, query, enc, None).await
            }
            Command::Add(a) => {
                let form = upload_form(&a.paths, a.recursive, a.hidden).await?;
                generic(
                    &conn,
                    &path,
                    query.into_iter().filter(|(k, _)| k != "arg").collect(),
                    enc,
                    Some(form),
                )
                .await
            }
            Command::Cat(_) => raw(&conn, &path, query).await,
            _ => generic(&conn, &path, query, enc, None).await,
        }
    })
}

struct Conn {
    api: Api,
    client: reqwest::Client,
}

impl Conn {
    /// Sends a bodiless command; an error status becomes the error.
    async fn send(
        &self,
        path: &[String],
        query: &[(String, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .post(path, query)
            .send()
            .await
            .context("sending the command to the daemon")?;
        if !resp.status().is_success() {
            return Err(failed(resp).await);
        }
        Ok(resp)
    }

    fn post(&self, path: &[String], query: &[(String, String)]) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/api/v1/{}?{}",
            self.api.base,
            path.join("/"),
            mapping::encode_query(query)
        );
        let mut r = self.client.post(url);
        if let Some(t) = &self.api.token {
            r = r.bearer_auth(t);
        }
        r
    }
}

/// An error response of the API as an error here.
async fn failed(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["Message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    if msg.is_empty() {
        anyhow::anyhow!("the daemon answered {status}")
    } else {
        anyhow::anyhow!("{msg}")
    }
}

/// Reads a response as lines, handing each complete one to `f`.
async fn lines(
    mut resp: reqwest::Response,
    mut f: impl FnMut(&str) -> anyhow::Result<Option<u8>>,
) -> anyhow::Result<Option<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading from the daemon")? {
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            if let Some(code) = f(&text)? {
                return Ok(Some(code));
            }
        }
    }
    Ok(None)
}

/// Sends a command and prints its frames: stdout, stderr, exit code.
async fn generic(
    conn: &Conn,
    path: &[String],
    mut query: Vec<(String, String)>,
    enc: Encoding,
    form: Option<reqwest::multipart::Form>,
) -> anyhow::Result<u8> {
    query.push(("enc".into(), enc_name(enc).into()));
    query.push(("channels".into(), "true".into()));
    let mut req = conn.post(path, &query);
    if let Some(f) = form {
        req = req.multipart(f);
    }
    let resp = tokio::select! {
        r = req.send() => r.context("sending the command to the daemon")?,
        _ = crate::commands::wait_for_signal() => return Ok(130),
    };
    if !resp.status().is_success() {
        return Err(failed(resp).await);
    }
    let command = resp
        .headers()
        .get(super::server::COMMAND_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let done = lines(resp, |line| {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        if let Some(s) = v["Stdout"].as_str() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        } else if let Some(s) = v["Stderr"].as_str() {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(s.as_bytes());
            let _ = e.flush();
        } else if let Some(c) = v["Exit"].as_i64() {
            return Ok(Some(u8::try_from(c).unwrap_or(1)));
        }
        Ok(None)
    });
    let ended = |r: anyhow::Result<Option<u8>>| match r? {
        Some(code) => Ok(code),
        None => bail!("the daemon closed the connection before the command ended"),
    };
    let mut done = std::pin::pin!(done);
    tokio::select! {
        r = &mut done => return ended(r),
        _ = crate::commands::wait_for_signal() => {}
    }
    // Ctrl-C: the daemon stops the command as Ctrl-C would stop it here, and what it
    // prints as it ends still comes; a second Ctrl-C (or 30 s) leaves at once (closing
    // the connection stops it too).
    let Some(id) = command else { return Ok(130) };
    let stop = conn
        .send(&["requests".into(), "stop".into()], &[("arg".into(), id)])
        .await;
    if stop.is_err() {
        return Ok(130);
    }
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), &mut done) => match r {
            Ok(r) => ended(r),
            Err(_) => Ok(130),
        },
        _ = crate::commands::wait_for_signal() => Ok(130),
    }
}

/// `cat`: the body is the file.
async fn raw(conn: &Conn, path: &[String], query: Vec<(String, String)>) -> anyhow::Result<u8> {
    let mut resp = conn.send(path, &query).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = resp.chunk().await.context("reading from the daemon")? {
        match out.write_all(&chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            r => r?,
        }
    }
    out.flush()?;
    Ok(0)
}

fn enc_name(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Json => "json",
        Encoding::Text => "text",
    }
}

fn cwd_join(p: &str) -> anyhow::Result<String> {
    let p = PathBuf::from(p);
    let abs = if p.is_absolute() {
        p
    } else {
        std::env::current_dir()
            .context("the current folder")?
            .join(p)
    };
    Ok(abs.display().to_string())
}

/// Makes the values of these options absolute paths.
fn absolute(query: Vec<(String, String)>, keys: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    query
        .into_iter()
        .map(|(k, v)| {
            if keys.contains(&k.as_str()) {
                Ok((k, cwd_join(&v)?))
            } else {
                Ok((k, v))
            }
        })
        .collect()
}

/// `serve`'s paths and `-f` list, made absolute (the files are seeded where they are).
fn absolute_serve_paths(query: Vec<(String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    query
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "arg" => Ok((k, cwd_join(&v)?)),
            "files" => {
                let names = crate::commands::serve::split_files(&v);
                let abs: anyhow::Result<Vec<String>> = names
                    .iter()
                    .map(|n| Ok(cwd_join(n)?.replace('\\', "\\\\").replace(',', "\\,")))
                    .collect();
                Ok((k, abs?.join(",")))
            }
            _ => Ok((k, v)),
        })
        .collect()
}

/// The files of `btfs add PATH…` as a multipart upload: each file, folder and symbolic
/// link a part named by its path from the added name on (a file or folder's own name),
/// so the daemon adds the same tree under the same names. No paths: standard input.
async fn upload_form(
    paths: &[PathBuf],
    recursive: bool,
    hidden: bool,
) -> anyhow::Result<reqwest::multipart::Form> {
    use reqwest::multipart::{Form, Part};
    let mut form = Form::new();
    if paths.is_empty() || paths == [PathBuf::from("-")] {
        let body = reqwest::Body::wrap_stream(tokio_util_stream(tokio::io::stdin()));
        return Ok(form.part("file", Part::stream(body).file_name("")));
    }
    let mut entries: Vec<(String, PathBuf, Kind)> = Vec::new();
    for p in paths {
        let meta = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
        // Named as a local `add` names it: its last component, or for `.`, `..` and
        // `/` the name of the folder it is.
        let name = match p.file_name() {
            Some(n) => n.to_os_string(),
            None => p
                .canonicalize()
                .with_context(|| format!("{}", p.display()))?
                .file_name()
                .map_or_else(|| "root".into(), |n| n.to_os_string()),
        };
        let name = name
            .into_string()
            .map_err(|_| anyhow::anyhow!("{}: the name is not UTF-8", p.display()))?;
        if meta.is_dir() {
            if !recursive {
                bail!("{} is a directory; use -r to add directories", p.display());
            }
            walk(p, &name, hidden, &mut entries)?;
        } else if meta.file_type().is_symlink() {
            entries.push((name, p.clone(), Kind::Link));
        } else {
            entries.push((name, p.clone(), Kind::File));
        }
    }
    for (name, path, kind) in entries {
        let encoded = percent_encoding::utf8_percent_encode(&name, PATH_SET).to_string();
        let part = match kind {
            Kind::Dir => Part::bytes(Vec::new())
                .file_name(encoded)
                .mime_str("application/x-directory")?,
            Kind::Link => {
                let target =
                    std::fs::read_link(&path).with_context(|| format!("{}", path.display()))?;
                Part::bytes(target.to_string_lossy().into_owned().into_bytes())
                    .file_name(encoded)
                    .mime_str("application/symlink")?
            }
            Kind::File => {
                let f = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("{}", path.display()))?;
                let len = f.metadata().await?.len();
                Part::stream_with_length(reqwest::Body::wrap_stream(tokio_util_stream(f)), len)
                    .file_name(encoded)
                    .mime_str("application/octet-stream")?
            }
        };
        form = form.part("file", part);
    }
    Ok(form)
}

const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'%')
    .add(b'"')
    .add(b'\\')
    .add(b'\r')
    .add(b'\n');

enum Kind {
    File,
    Dir,
    Link,
}

fn walk(
    dir: &Path,
    name: &str,
    hidden: bool,
    out: &mut Vec<(String, PathBuf, Kind)>,
) -> anyhow::Result<()> {
    out.push((name.to_string(), dir.to_path_buf(), Kind::Dir));
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for e in children {
        let n = e
            .file_name()
            .into_string()
            .map_err(|_| anyhow::anyhow!("{}: a name is not UTF-8", dir.display()))?;
        if n.starts_with('.') && !hidden {
            continue;
        }
        let path = e.path();
        let child = format!("{name}/{n}");
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(&path, &child, hidden, out)?;
        } else if ft.is_symlink() {
            out.push((child, path, Kind::Link));
        } else {
            out.push((child, path, Kind::File));
        }
    }
    Ok(())
}

/// A byte stream of an async reader, 256 KiB at a time.
fn tokio_util_stream(
    r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures_lite::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_lite::stream::unfold(r, |mut r| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
}

/// `bittorrent download` through the daemon: a job whose events are shown here as the
/// command shows its own; Ctrl-C cancels the job (unless `--detach`, which returns at
/// once).
async fn download(
    conn: &Conn,
    path: &[String],
    query: Vec<(String, String)>,
    enc: Encoding,
) -> anyhow::Result<u8> {
    let mut torrent: Option<PathBuf> = None;
    let mut q = Vec::new();
    for (k, v) in query {
        match k.as_str() {
            "torrent" => torrent = Some(PathBuf::from(v)),
            "arg" if !v.trim_start().to_ascii_lowercase().starts_with("magnet:") => {
                torrent = Some(PathBuf::from(v))
            }
            "output" | "ip-filter" => q.push((k, cwd_join(&v)?)),
            _ => q.push((k, v)),
        }
    }
    let detach = q.iter().any(|(k, v)| k == "detach" && v == "true");
    let detail = q.iter().any(|(k, v)| k == "progress-detail" && v == "true");
    let mut req = conn.post(path, &q);
    if let Some(t) = &torrent {
        let bytes = crate::commands::read_input(t)?;
        let part = reqwest::multipart::Part::bytes(bytes).file_name("upload.torrent");
        req = req.multipart(reqwest::multipart::Form::new().part("file", part));
    }
    let resp = req
        .send()
        .await
        .context("sending the download to the daemon")?;
    if !resp.status().is_success() {
        return Err(failed(resp).await);
    }
    if detach {
        let job: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.context("reading the daemon's answer")?)
                .context("reading the daemon's answer")?;
        if job["State"] == "failed" {
            bail!(
                "{}",
                job["Error"].as_str().unwrap_or("the job failed to start")
            );
        }
        match enc {
            Encoding::Json => println!("{job}"),
            Encoding::Text => println!(
                "started job {} ({}); `btfs bittorrent jobs ls` shows it",
                clean(job["Id"].as_str().unwrap_or("?")),
                clean(
                    job["Name"]
                        .as_str()
                        .or(job["Source"].as_str())
                        .unwrap_or("")
                )
            ),
        }
        return Ok(0);
    }
    let mut view = ProgressView::new(String::new(), enc);
    let mut id = String::new();
    let mut failure: Option<String> = None;
    let mut saved_in: Option<String> = None;
    let mut seeding = false;
    let events = lines(resp, |line| {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        let kind = v["Type"].as_str().unwrap_or("");
        if kind == "progress" {
            seeding = v["Phase"] == "Seeding";
        }
        if kind == "job" {
            id = v["Job"]["Id"].as_str().unwrap_or("").to_string();
            if enc == Encoding::Text {
                eprintln!("downloading in the daemon as job {id} (Ctrl-C cancels it)");
                if v["Job"]["State"] == "queued" {
                    eprintln!(
                        "queued: the daemon's other downloads take its slots \
                         (daemon --max-active-downloads); this one starts when one ends"
                    );
                }
            }
        }
        if enc == Encoding::Json {
            // What the command prints when it runs here: without the daemon's extras
            // (the torrent event and the detail of progress events) unless asked for.
            match kind {
                "job" | "end" => {}
                "torrent" if !detail => {}
                _ if !detail && v.get("Detail").is_some() => {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("Detail");
                    }
                    println!("{v}");
                }
                _ => println!("{line}"),
            }
        } else {
            match kind {
                "metadata" if v["Phase"] == "Fetching" => {
                    eprintln!("fetching the metadata from peers…")
                }
                "torrent" => view.set_name(v["Name"].as_str().unwrap_or("").to_string()),
                "progress" => {
                    if let Ok(s) = serde_json::from_value::<Stats>(v.clone()) {
                        if s.phase != bittorrent::engine::Phase::Starting {
                            view.show(&s);
                        }
                    }
                }
                "added" => {
                    view.finish();
                    println!(
                        "added {} {}",
                        clean(v["Hash"].as_str().unwrap_or("")),
                        clean(v["Name"].as_str().unwrap_or(""))
                    );
                }
                "imported" => {
                    println!("gateway: {}", clean(v["GatewayUrl"].as_str().unwrap_or("")))
                }
                "summary" => {
                    view.finish();
                    saved_in = v["SavePath"].as_str().map(str::to_string);
                    if v["AlreadyImported"] == true {
                        eprintln!(
                            "{} is already in the BTFS store",
                            clean(v["Name"].as_str().unwrap_or(""))
                        );
                        println!(
                            "added {} {}",
                            clean(v["Cid"].as_str().unwrap_or("")),
                            clean(v["Name"].as_str().unwrap_or(""))
                        );
                        println!("gateway: {}", clean(v["GatewayUrl"].as_str().unwrap_or("")));
                    } else if v["Complete"] == true {
                        println!(
                            "{}",
                            done_line(
                                v["Name"].as_str().unwrap_or(""),
                                v["BytesWanted"].as_u64().unwrap_or(0),
                                v["Elapsed"].as_f64().unwrap_or(0.0),
                                v["Downloaded"].as_u64().unwrap_or(0),
                                saved_in.as_deref(),
                            )
                        );
                    }
                }
                _ => {}
            }
        }
        if kind == "end" {
            view.finish();
            let job = &v["Job"];
            if job["State"] == "completed" {
                return Ok(Some(0));
            }
            failure = Some(match job["Error"].as_str() {
                Some(e) => e.to_string(),
                None => format!("the job ended {}", job["State"].as_str().unwrap_or("")),
            });
            return Ok(Some(1));
        }
        Ok(None)
    });
    let code = tokio::select! {
        r = events => r?,
        _ = crate::commands::wait_for_signal() => {
            view.finish();
            if !id.is_empty() {
                let _ = conn
                    .post(&["bittorrent".into(), "jobs".into(), "cancel".into()], &[("arg".into(), id.clone())])
                    .send()
                    .await;
                if seeding {
                    // Complete and seeding: stopping is the normal end, as it is here.
                    return Ok(0);
                }
                bail!("cancelled job {id}; its verified pieces are kept (`btfs bittorrent jobs resume {id}`)");
            }
            return Ok(130);
        }
    };
    match (code, failure) {
        (Some(0), _) => Ok(0),
        (_, Some(f)) => bail!("{f}"),
        (None, _) => bail!("the daemon closed the connection before the download ended"),
        (Some(c), None) => Ok(c),
    }
}

/// `bittorrent jobs …`: the daemon answers JSON, shown as it is or as text.
async fn jobs(
    conn: &Conn,
    path: &[String],
    query: Vec<(String, String)>,
    cmd: &JobsCommand,
    enc: Encoding,
) -> anyhow::Result<u8> {
    let resp = conn.send(path, &query).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.context("reading the daemon's answer")?)
            .context("reading the daemon's answer")?;
    if enc == Encoding::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    match cmd {
        JobsCommand::Ls => {
            let list = v["Jobs"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no jobs");
            }
            for j in &list {
                println!("{}", job_line(j));
            }
        }
        JobsCommand::Show { .. } => {
            println!("{}", job_line(&v));
            if let Some(c) = v["GatewayUrl"].as_str() {
                println!("gateway: {}", clean(c));
            }
            for f in v["Files"].as_array().into_iter().flatten() {
                println!(
                    "  file {:>3}  {:>10}  {}  {}",
                    f["Index"],
                    human_size(f["Length"].as_u64().unwrap_or(0)),
                    clean(f["Cid"].as_str().unwrap_or("-")),
                    clean(f["Path"].as_str().unwrap_or(""))
                );
            }
            for p in v["PeerList"].as_array().into_iter().flatten() {
                println!(
                    "  peer {}  {}  down {}/s  up {}/s  {:.0}%",
                    clean(p["Addr"].as_str().unwrap_or("")),
                    clean(p["Client"].as_str().unwrap_or("?")),
                    human_size(p["DownRate"].as_f64().unwrap_or(0.0) as u64),
                    human_size(p["UpRate"].as_f64().unwrap_or(0.0) as u64),
                    p["Progress"].as_f64().unwrap_or(0.0) * 100.0
                );
            }
            let pm =
                serde_json::from_value::<node::portmap::PortMapStatus>(v["PortMapping"].clone());
            for line in pm.map(|p| p.lines()).unwrap_or_default() {
                println!("  port mapping {}", clean(&line));
            }
            for t in v["Trackers"].as_array().into_iter().flatten() {
                let result = match (t["Peers"].as_u64(), t["Error"].as_str()) {
                    (_, Some(e)) => format!("error: {}", clean(e)),
                    (Some(n), None) => format!("{n} peers"),
                    _ => "not announced yet".into(),
                };
                println!(
                    "  tracker {}  {result}",
                    clean(t["Url"].as_str().unwrap_or(""))
                );
            }
        }
        JobsCommand::Rm { id, .. } => {
            println!("removed job {id}");
            if let Some(why) = v["DataKept"].as_str() {
                eprintln!("{}", clean(why));
            }
        }
        _ => println!("{}", job_line(&v)),
    }
    Ok(0)
}

fn job_line(j: &serde_json::Value) -> String {
    format!(
        "{}  {:<11}  {:5.1}%  {:>10}  {}{}",
        clean(j["Id"].as_str().unwrap_or("")),
        clean(j["State"].as_str().unwrap_or("")),
        j["Progress"].as_f64().unwrap_or(0.0) * 100.0,
        human_size(j["Size"].as_u64().unwrap_or(0)),
        clean(j["Name"].as_str().or(j["Source"].as_str()).unwrap_or("")),
        match j["Cid"].as_str() {
            Some(c) => format!("  {}", clean(c)),
            None => String::new(),
        }
    )
}

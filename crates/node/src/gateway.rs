//! The HTTP gateway: `GET`/`HEAD /btfs/{cid}[/path]` (and `/ipfs/…`) from the local
//! blockstore. Files are streamed one block at a time (memory stays flat whatever the
//! file size), with single and multiple byte ranges, the CID as ETag and immutable
//! caching; directories get an `index.html` or a listing page. Blocks are checked as
//! they are read (filestore leaves are hashed from their files): a response whose first
//! block cannot be read is a 500 naming the file; one failing later, once the headers
//! are out, ends short of its Content-Length. Wrong bytes are never sent.
//!
//! Paths are taken from the raw request URI: segments are percent-decoded one by one,
//! and `.`/`..` segments or names with a slash in them are refused, so nothing but
//! links of the DAG is ever followed.
//!
//! Origins: content is untrusted, so every response says `X-Content-Type-Options:
//! nosniff`. On the gateway's own host (`/btfs/{cid}/…`, one origin for every CID) a
//! response a browser would run as a document (HTML, XHTML, SVG, XML — whatever typed it:
//! the name, `?filename=`, or sniffing) carries `Content-Security-Policy: sandbox …`
//! without `allow-same-origin`, so its scripts run in an opaque origin and cannot read
//! the gateway's origin. As in kubo's `localhost` subdomain mode, `{cidv1}.btfs.localhost`
//! (or `.ipfs.localhost`) serves that CID at its own origin, unsandboxed, and path
//! requests to `localhost` are redirected there. The `Host` is parsed by
//! [`crate::host::parse_host`] (one parser with the API); anything else is a 400, as it
//! would end up in `Location` headers and links.
//!
//! Reading is open to every origin (`Access-Control-Allow-Origin: *` on `GET`/`HEAD`, as
//! kubo): the data is public and content-addressed, and a sandboxed page (origin `null`)
//! can fetch its own CID's files. No credentials are ever involved.
//!
//! Locks: one small mutex per streamed response (its pool of block buffers), never held
//! across an await; blocks are read on the blocking pool.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use axum::Router;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use store::dag::{DagError, DirEntry, Kind, RangeReader};
use store::{Blockstore, Cid, Dag};

/// Most ranges one request may ask for.
pub const MAX_RANGES: usize = 100;
const CACHE_IMMUTABLE: &str = "public, max-age=29030400, immutable";

pub fn router(blocks: Arc<Blockstore>) -> Router {
    Router::new().fallback(handle).with_state(blocks)
}

/// Serves the gateway on `listener` until `shutdown` completes, with the connection
/// limits of [`crate::http`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    blocks: Arc<Blockstore>,
    limits: crate::http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::serve(listener, router(blocks), limits, shutdown).await
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from(body))
        .expect("static response")
}

fn dag_status(e: &DagError) -> StatusCode {
    match e {
        DagError::NotFound(_) | DagError::NoSuchName { .. } | DagError::NotDirectory(_) => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
pub struct ContentPath {
    pub root: Cid,
    pub names: Vec<String>,
    pub trailing_slash: bool,
}

/// `/btfs/{cid}/a/b` from a raw (still percent-encoded) URI path.
pub fn parse_path(raw: &str) -> Result<ContentPath, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let rest = raw
        .strip_prefix("/btfs/")
        .or_else(|| raw.strip_prefix("/ipfs/"))
        .ok_or((
            StatusCode::NOT_FOUND,
            "not found: paths start with /btfs/{cid}".to_string(),
        ))?;
    let mut segments = rest.split('/');
    let cid_text = decode_segment(segments.next().unwrap_or_default()).map_err(bad)?;
    let root: Cid = cid_text.parse().map_err(|e| {
        let shown: String = cid_text.chars().take(100).collect();
        let more = if shown.len() < cid_text.len() {
            "…"
        } else {
            ""
        };
        bad(format!("invalid CID {shown:?}{more}: {e}"))
    })?;
    let mut names = Vec::new();
    for seg in segments {
        if seg.is_empty() {
            continue;
        }
        let name = decode_segment(seg).map_err(bad)?;
        if name == "." || name == ".." {
            return Err(bad(format!("invalid path segment {name:?}")));
        }
        if name.contains(['/', '\\', '\0']) {
            return Err(bad(format!(
                "invalid path segment {name:?}: names cannot contain '/', '\\' or NUL"
            )));
        }
        names.push(name);
    }
    Ok(ContentPath {
        root,
        names,
        trailing_slash: raw.ends_with('/'),
    })
}

fn decode_segment(seg: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("path segment {seg:?} is not UTF-8"))
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// What a path resolved to.
enum Target {
    File {
        cid: Cid,
        size: u64,
        head: Vec<u8>,
    },
    /// A folder asked for without the trailing slash.
    DirRedirect,
    DirIndex {
        cid: Cid,
        index: Cid,
        size: u64,
    },
    DirListing {
        cid: Cid,
        entries: Vec<DirEntry>,
    },
    Symlink {
        cid: Cid,
        target: Vec<u8>,
    },
}

fn resolve(blocks: &Blockstore, path: &ContentPath) -> Result<Target, DagError> {
    let dag = Dag { blocks };
    let names: Vec<&str> = path.names.iter().map(String::as_str).collect();
    let cid = dag.resolve(path.root, &names)?;
    let block = dag.block(&cid)?;
    Ok(match block.kind() {
        Kind::Directory if !path.trailing_slash => Target::DirRedirect,
        Kind::Directory => {
            // Children are read only for a listing page.
            let index = dag
                .links(&cid)?
                .into_iter()
                .find(|l| l.name == "index.html");
            let index = match index {
                Some(l) => {
                    let b = dag.block(&l.cid)?;
                    (b.kind() == Kind::File).then(|| (l.cid, b.file_size()))
                }
                None => None,
            };
            match index {
                Some((index, size)) => Target::DirIndex { cid, index, size },
                None => Target::DirListing {
                    cid,
                    entries: dag.list(&cid)?,
                },
            }
        }
        Kind::Symlink(target) => Target::Symlink { cid, target },
        Kind::File => {
            let size = block.file_size();
            let head = dag.read_range(cid, 0, size.min(512))?;
            Target::File { cid, size, head }
        }
    })
}

/// Whose origin a request is served on (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// `/btfs/{cid}/…` on the gateway's own host: one origin for all content, so active
    /// content (HTML, SVG, XML) is sandboxed into an opaque origin.
    Path,
    /// `{cid}.btfs.localhost[:port]/…`: the CID's own origin. `suffix` is the host after
    /// the CID (`btfs.localhost:8080`), for links to other CIDs.
    Subdomain { root: Cid, suffix: String },
    /// `localhost[:port]`: path requests are redirected to their subdomain.
    Localhost { port: Option<u16> },
}

/// The origin a `Host` header gives; an error for a `Host` that is not a plain
/// `name[:port]` ([`crate::host::parse_host`]: it ends up in `Location` headers and
/// links) or a subdomain that is not a CID.
fn origin_of(host: Option<&str>) -> Result<Origin, String> {
    let Some(host) = host.map(str::to_ascii_lowercase) else {
        return Ok(Origin::Path);
    };
    let parsed = crate::host::parse_host(&host).map_err(|e| e.to_string())?;
    let (name, port) = (parsed.name, parsed.port);
    if name == "localhost" {
        return Ok(Origin::Localhost { port });
    }
    for ns in SUBDOMAIN_NAMESPACES {
        if let Some(label) = name.strip_suffix(&format!(".{ns}.localhost")) {
            if label.contains('.') || label.is_empty() {
                return Err(format!("{host}: one CID before .{ns}.localhost"));
            }
            let root: Cid = label.parse().map_err(|e| {
                format!("{label:?} is not a CID ({e}); subdomains need a CIDv1 in base32")
            })?;
            let suffix = match port {
                Some(p) => format!("{ns}.localhost:{p}"),
                None => format!("{ns}.localhost"),
            };
            return Ok(Origin::Subdomain { root, suffix });
        }
    }
    Ok(Origin::Path)
}

/// The subdomain namespaces a `Host` may use (`{cid}.btfs.localhost`, as kubo's
/// `{cid}.ipfs.localhost`).
const SUBDOMAIN_NAMESPACES: [&str; 2] = ["btfs", "ipfs"];

/// Media types a browser runs as a document with scripts.
fn is_active(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        t.as_str(),
        "text/html" | "application/xhtml+xml" | "image/svg+xml" | "text/xml" | "application/xml"
    )
}

/// Active content on the shared path origin runs in a sandbox with an opaque origin: its
/// scripts run, but cannot read the gateway's origin (other CIDs' pages, their storage).
const PATH_SANDBOX: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// Response headers a page on another origin may read (besides the safelisted ones).
const EXPOSED_HEADERS: &str = "Content-Range, X-Ipfs-Path";

async fn handle(State(blocks): State<Arc<Blockstore>>, req: Request<Body>) -> Response<Body> {
    let origin = origin_of(
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    );
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let mut resp = match origin {
        Ok(origin) => respond(blocks, req, &origin).await,
        Err(msg) => text(StatusCode::BAD_REQUEST, msg),
    };
    let h = resp.headers_mut();
    // Every response: no browser second-guesses its type.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if read {
        // Content-addressed, public data, as kubo serves it: any page may read it,
        // sandboxed pages (origin `null`) included, never with credentials.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    resp
}

async fn respond(blocks: Arc<Blockstore>, req: Request<Body>, origin: &Origin) -> Response<Body> {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the gateway serves GET and HEAD",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let raw_path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let content_path = match origin {
        Origin::Subdomain { root, .. } => format!("/btfs/{root}{raw_path}"),
        _ if raw_path == "/" => {
            return text(StatusCode::OK, "btfs gateway: GET /btfs/{cid}[/path]");
        }
        _ => raw_path.clone(),
    };
    let path = match parse_path(&content_path) {
        Ok(p) => p,
        Err((status, msg)) => return text(status, msg),
    };
    if let Origin::Localhost { port } = origin {
        return to_subdomain(&path, &raw_path, query.as_deref(), *port);
    }
    let b = blocks.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let r = resolve(&b, &path);
        (path, r)
    })
    .await;
    let (path, target) = match resolved {
        Ok((path, Ok(t))) => (path, t),
        Ok((_, Err(e))) => return text(dag_status(&e), e.to_string()),
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
        }
    };
    let request = Served {
        blocks: &blocks,
        headers: req.headers(),
        method: &method,
        raw_path: &raw_path,
        query: query.as_deref(),
        path: &path,
        origin,
    };
    let mut resp = request.target(target).await;
    if *origin == Origin::Path {
        let active = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_active);
        if active {
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PATH_SANDBOX),
            );
        }
    }
    if let Ok(v) = HeaderValue::from_str(&content_path) {
        resp.headers_mut().insert("x-ipfs-path", v);
    }
    resp
}

/// `localhost[:port]/btfs/{cid}/rest?q` → `http://{cidv1}.btfs.localhost[:port]/rest?q`,
/// as kubo's gateway does for `localhost`: each CID gets its own origin.
fn to_subdomain(
    path: &ContentPath,
    raw_path: &str,
    query: Option<&str>,
    port: Option<u16>,
) -> Response<Body> {
    // The raw rest of the path, after `/btfs/{cid}`, keeps its encoding.
    let rest = raw_path
        .splitn(4, '/')
        .nth(3)
        .map_or_else(|| "/".to_string(), |r| format!("/{r}"));
    let mut location = format!("http://{}.btfs.localhost", path.root.to_v1());
    if let Some(p) = port {
        let _ = write!(location, ":{p}");
    }
    location.push_str(&rest);
    moved_permanently(location, query)
}

/// A 301 to `location` (with `query` appended), its text body saying where.
fn moved_permanently(mut location: String, query: Option<&str>) -> Response<Body> {
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut r = text(
        StatusCode::MOVED_PERMANENTLY,
        format!("moved to {location}"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// One resolved request and what its response needs.
struct Served<'a> {
    blocks: &'a Arc<Blockstore>,
    headers: &'a HeaderMap,
    method: &'a Method,
    raw_path: &'a str,
    query: Option<&'a str>,
    path: &'a ContentPath,
    origin: &'a Origin,
}

impl Served<'_> {
    async fn target(&self, target: Target) -> Response<Body> {
        match target {
            Target::DirRedirect => self.dir_redirect(),
            Target::DirIndex { cid, index, size } => {
                serve_file(
                    self.blocks,
                    self.headers,
                    self.method,
                    cid,
                    index,
                    size,
                    "text/html; charset=utf-8".into(),
                    None,
                )
                .await
            }
            Target::DirListing { cid, entries } => self.listing(&cid, &entries),
            Target::Symlink { cid, target } => {
                let r = Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "inode/symlink")
                    .header(header::ETAG, format!("\"{cid}\""))
                    .header(header::CACHE_CONTROL, CACHE_IMMUTABLE)
                    .header(header::CONTENT_LENGTH, target.len());
                let body = if self.method == Method::HEAD {
                    Body::empty()
                } else {
                    Body::from(target)
                };
                r.body(body).expect("symlink response")
            }
            Target::File { cid, size, head } => self.file(cid, size, &head).await,
        }
    }

    fn dir_redirect(&self) -> Response<Body> {
        moved_permanently(format!("{}/", self.raw_path), self.query)
    }

    fn listing(&self, cid: &Cid, entries: &[DirEntry]) -> Response<Body> {
        // Links to other CIDs go to their own origin on a subdomain gateway.
        let link = |c: &Cid, dir: bool| match self.origin {
            Origin::Subdomain { suffix, .. } => format!("http://{}.{suffix}/", c.to_v1()),
            _ => format!("/btfs/{c}{}", if dir { "/" } else { "" }),
        };
        let html = listing(self.raw_path, self.path, cid, entries, &link);
        let r = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::ETAG, format!("\"DirIndex-{cid}\""))
            .header(header::CACHE_CONTROL, "public, max-age=604800")
            .header(header::CONTENT_LENGTH, html.len());
        let body = if self.method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(html)
        };
        r.body(body).expect("listing response")
    }

    /// A file: its type from `?filename=`, the path's last name or its first bytes (as
    /// kubo types it; on the path origin, active types are sandboxed by [`respond`]).
    async fn file(&self, cid: Cid, size: u64, head: &[u8]) -> Response<Body> {
        let filename = query_param(self.query, "filename");
        let name_for_type = filename.clone().or_else(|| self.path.names.last().cloned());
        let content_type = name_for_type
            .as_deref()
            .and_then(type_by_extension)
            .map(str::to_owned)
            .unwrap_or_else(|| sniff(head).to_owned());
        let disposition = filename.map(|f| {
            let kind = if query_param(self.query, "download").as_deref() == Some("true") {
                "attachment"
            } else {
                "inline"
            };
            content_disposition(kind, &f)
        });
        serve_file(
            self.blocks,
            self.headers,
            self.method,
            cid,
            cid,
            size,
            content_type,
            disposition,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_file(
    blocks: &Arc<Blockstore>,
    headers: &HeaderMap,
    method: &Method,
    etag_cid: Cid,
    file: Cid,
    size: u64,
    content_type: String,
    disposition: Option<String>,
) -> Response<Body> {
    let etag = format!("\"{etag_cid}\"");
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t == etag || t.strip_prefix("W/") == Some(&etag)
        }) {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, &etag)
                .header(header::CACHE_CONTROL, CACHE_IMMUTABLE)
                .body(Body::empty())
                .expect("304");
        }
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A Range with a stale If-Range is answered with the whole file.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let ranges = match range_header.filter(|_| if_range_ok) {
        None => Ok(None),
        Some(h) => parse_ranges(h, size),
    };
    let mut b = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, CACHE_IMMUTABLE)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(d) = &disposition {
        b = b.header(header::CONTENT_DISPOSITION, d);
    }
    let head = method == Method::HEAD;
    match ranges {
        Err(RangeError::Unsatisfiable) | Err(RangeError::TooMany) => {
            let msg = match ranges {
                Err(RangeError::TooMany) => format!("more than {MAX_RANGES} ranges"),
                _ => format!("no requested range overlaps the {size} bytes of the file"),
            };
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, msg);
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            r
        }
        Ok(None) => {
            let parts = if head {
                Vec::new()
            } else {
                vec![Part::Range(file, 0, size)]
            };
            let body = match stream_body(blocks.clone(), parts).await {
                Ok(body) => body,
                Err(e) => return unreadable(&e),
            };
            b.status(StatusCode::OK)
                .header(header::CONTENT_TYPE, &content_type)
                .header(header::CONTENT_LENGTH, size)
                .body(body)
                .expect("file response")
        }
        Ok(Some(r)) if r.len() == 1 => {
            let (start, end) = r[0];
            let parts = if head {
                Vec::new()
            } else {
                vec![Part::Range(file, start, end)]
            };
            let body = match stream_body(blocks.clone(), parts).await {
                Ok(body) => body,
                Err(e) => return unreadable(&e),
            };
            b.status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, &content_type)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{size}", end - 1),
                )
                .header(header::CONTENT_LENGTH, end - start)
                .body(body)
                .expect("range response")
        }
        Ok(Some(r)) => {
            let boundary = format!("btfs-{}", &etag_cid.to_string()[2..18]);
            let mut parts = Vec::with_capacity(r.len() * 2 + 1);
            let mut len = 0u64;
            for (i, &(start, end)) in r.iter().enumerate() {
                let head_text = format!(
                    "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{}/{size}\r\n\r\n",
                    if i == 0 { "" } else { "\r\n" },
                    end - 1
                );
                len += head_text.len() as u64 + (end - start);
                parts.push(Part::Bytes(Bytes::from(head_text)));
                parts.push(Part::Range(file, start, end));
            }
            let tail = format!("\r\n--{boundary}--\r\n");
            len += tail.len() as u64;
            parts.push(Part::Bytes(Bytes::from(tail)));
            if head {
                parts.clear();
            }
            let body = match stream_body(blocks.clone(), parts).await {
                Ok(body) => body,
                Err(e) => return unreadable(&e),
            };
            b.status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/byteranges; boundary={boundary}"),
                )
                .header(header::CONTENT_LENGTH, len)
                .body(body)
                .expect("multipart response")
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeError {
    Unsatisfiable,
    TooMany,
}

/// A `Range` header → `[start, end)` byte ranges within `size`. `Ok(None)` means the
/// header is not a valid bytes range and is ignored (the whole file is sent), as RFC
/// 9110 says. Overlapping ranges are merged, so no request gets more than the file.
pub fn parse_ranges(h: &str, size: u64) -> Result<Option<Vec<(u64, u64)>>, RangeError> {
    let Some(specs) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let specs: Vec<&str> = specs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() {
        return Ok(None);
    }
    if specs.len() > MAX_RANGES {
        return Err(RangeError::TooMany);
    }
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let Some((a, b)) = spec.split_once('-') else {
            return Ok(None);
        };
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                s.parse().ok().or(Some(u64::MAX))
            }
        };
        match (a.trim(), b.trim()) {
            ("", n) => {
                let Some(n) = num(n) else { return Ok(None) };
                if n > 0 && size > 0 {
                    out.push((size - n.min(size), size));
                }
            }
            (s, "") => {
                let Some(s) = num(s) else { return Ok(None) };
                if s < size {
                    out.push((s, size));
                }
            }
            (s, e) => {
                let (Some(s), Some(e)) = (num(s), num(e)) else {
                    return Ok(None);
                };
                if e < s {
                    return Ok(None);
                }
                if s < size {
                    out.push((s, e.saturating_add(1).min(size)));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(RangeError::Unsatisfiable);
    }
    let overlapping = {
        let mut sorted = out.clone();
        sorted.sort_unstable();
        sorted.windows(2).any(|w| w[1].0 < w[0].1)
    };
    if overlapping {
        out.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        out = merged;
    }
    Ok(Some(out))
}

enum Part {
    Bytes(Bytes),
    /// Bytes `start..end` of a file.
    Range(Cid, u64, u64),
}

/// A block buffer lent to the response body; it goes back to its pool when hyper is
/// done with it, so streaming a file reuses a few buffers instead of touching fresh
/// memory for every block.
struct Lent {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < 8 {
                p.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// A file whose first block cannot be read (a filestore file changed or gone, a block
/// missing): the error, naming the file, instead of headers promising bytes.
fn unreadable(e: &std::io::Error) -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// One item of a streamed body, and whether it holds file bytes (not a multipart
/// boundary).
type Item = (bool, std::io::Result<Bytes>);

/// The body: parts in order. File ranges are read one block per blocking task, a few
/// blocks ahead of the client (the channel bounds it); a slow client holds no thread.
///
/// The first block is read before the response is made, so a file that cannot be read
/// where the response starts gets an error status naming it ([`unreadable`]). A block
/// that fails later, after the headers went out, ends the body early: the client sees
/// a short response (its Content-Length unmet), never wrong bytes.
async fn stream_body(blocks: Arc<Blockstore>, parts: Vec<Part>) -> std::io::Result<Body> {
    if parts.is_empty() {
        return Ok(Body::empty());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(4);
    tokio::spawn(send_parts(blocks, parts, tx));
    // Items up to the first one of file bytes (or the end): at most a boundary before it.
    let mut first = Vec::new();
    while let Some((data, item)) = rx.recv().await {
        let bytes = item?;
        first.push(Ok(bytes));
        if data {
            break;
        }
    }
    let rest = futures_lite::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|(_, item)| (item, rx))
    });
    Ok(Body::from_stream(futures_lite::StreamExt::chain(
        futures_lite::stream::iter(first),
        rest,
    )))
}

/// Reads `parts` into `tx` in order; stops at the first error (sent on) or when the
/// client goes away (the channel closes).
async fn send_parts(
    blocks: Arc<Blockstore>,
    parts: Vec<Part>,
    tx: tokio::sync::mpsc::Sender<Item>,
) {
    let pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    for part in parts {
        let (cid, start, end) = match part {
            Part::Bytes(b) => {
                if tx.send((false, Ok(b))).await.is_err() {
                    return;
                }
                continue;
            }
            Part::Range(cid, start, end) => (cid, start, end),
        };
        let mut next = Some(RangeReader::new(cid, start, end));
        while let Some(mut reader) = next.take() {
            let buf = pool
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .unwrap_or_default();
            let b = blocks.clone();
            let step = tokio::task::spawn_blocking(move || {
                let mut buf = buf;
                let r = reader.next_into(&Dag { blocks: &b }, &mut buf);
                (reader, buf, r)
            })
            .await;
            let item = match step {
                Ok((r, buf, Ok(Some(range)))) => {
                    next = Some(r);
                    Ok(Bytes::from_owner(Lent {
                        buf,
                        range,
                        pool: pool.clone(),
                    }))
                }
                Ok((_, _, Ok(None))) => break,
                Ok((_, _, Err(e))) => Err(std::io::Error::other(e.to_string())),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            // A closed channel means the client went away.
            if tx.send((true, item)).await.is_err() || failed {
                return;
            }
        }
    }
}

fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(name, SET)
    )
}

/// The MIME type for a file name's extension.
pub fn type_by_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "wasm" => "application/wasm",
        "torrent" => "application/x-bittorrent",
        "iso" => "application/x-iso9660-image",
        "epub" => "application/epub+zip",
        "srt" => "application/x-subrip",
        "vtt" => "text/vtt; charset=utf-8",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

/// The MIME type from the first bytes of a file.
pub fn sniff(head: &[u8]) -> &'static str {
    let starts = |m: &[u8]| head.starts_with(m);
    let trimmed: Vec<u8> = head
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(16)
        .map(u8::to_ascii_lowercase)
        .collect();
    if [&b"<!doctype html"[..], b"<html", b"<head", b"<body"]
        .iter()
        .any(|m| trimmed.starts_with(m))
    {
        return "text/html; charset=utf-8";
    }
    if starts(b"%PDF-") {
        "application/pdf"
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if starts(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        "image/gif"
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        "image/webp"
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        "audio/wav"
    } else if head.get(4..8) == Some(b"ftyp") {
        "video/mp4"
    } else if starts(b"\x1a\x45\xdf\xa3") {
        "video/webm"
    } else if starts(b"ID3") || starts(b"\xff\xfb") {
        "audio/mpeg"
    } else if starts(b"OggS") {
        "application/ogg"
    } else if starts(b"PK\x03\x04") {
        "application/zip"
    } else if starts(b"\x1f\x8b") {
        "application/gzip"
    } else if trimmed.starts_with(b"<svg") {
        "image/svg+xml"
    } else if trimmed.starts_with(b"<?xml") {
        "text/xml; charset=utf-8"
    } else if looks_like_text(head) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => head,
        // A character cut at the end of the sniffed bytes is fine.
        Err(e) if e.error_len().is_none() => &head[..e.valid_up_to()],
        Err(_) => return false,
    };
    valid
        .iter()
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn listing(
    raw_path: &str,
    path: &ContentPath,
    cid: &Cid,
    entries: &[DirEntry],
    link: &dyn Fn(&Cid, bool) -> String,
) -> String {
    const SEG: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'\\')
        .add(b'\'');
    let title = format!("/btfs/{}/{}", path.root, path.names.join("/"));
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let mut h = String::with_capacity(1024 + entries.len() * 200);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>\
         body{{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}}\
         h1{{font-size:1.1rem;word-break:break-all}}table{{border-collapse:collapse;width:100%}}\
         td,th{{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:left}}\
         td.s,th.s{{text-align:right;white-space:nowrap}}a{{color:#0b5cad;text-decoration:none}}\
         a:hover{{text-decoration:underline}}.cid{{font:12px monospace;color:#777}}\
         </style></head><body><h1>Index of {t}</h1><p class=\"cid\">{cid} · {n} entries · {size}</p>\
         <table><tr><th>Name</th><th class=\"s\">Size</th><th>CID</th></tr>",
        t = html_escape(&title),
        n = entries.len(),
        size = human(total)
    );
    if !path.names.is_empty() {
        let parent = raw_path
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or("/", |p| p.0);
        let _ = write!(
            h,
            "<tr><td><a href=\"{}/\">..</a></td><td></td><td></td></tr>",
            html_escape(parent)
        );
    }
    for e in entries {
        let dir = e.kind == Kind::Directory;
        let href = percent_encoding::utf8_percent_encode(&e.name, SEG).to_string();
        let _ = write!(
            h,
            "<tr><td><a href=\"./{href}{slash}\">{name}{slash}</a></td><td class=\"s\">{size}</td>\
             <td class=\"cid\"><a href=\"{target}\">{cid}</a></td></tr>",
            slash = if dir { "/" } else { "" },
            name = html_escape(&e.name),
            size = if dir { String::new() } else { human(e.size) },
            target = html_escape(&link(&e.cid, dir)),
            cid = e.cid,
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";

    #[test]
    fn paths() {
        let p = parse_path(&format!("/btfs/{CID}/a%20b//c/")).unwrap();
        assert_eq!(p.names, ["a b", "c"]);
        assert!(p.trailing_slash);
        for bad in [
            format!("/btfs/{CID}/../x"),
            format!("/btfs/{CID}/%2e%2e/x"),
            format!("/btfs/{CID}/a%2Fb"),
            format!("/btfs/{CID}/a%00"),
            format!("/btfs/{CID}/%ff"),
            "/btfs/notacid".into(),
            "/btfs/".into(),
        ] {
            assert_eq!(
                parse_path(&bad).unwrap_err().0,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(
            parse_path("/etc/passwd").unwrap_err().0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_ranges("bytes=0-9", 100), Ok(Some(vec![(0, 10)])));
        assert_eq!(parse_ranges("bytes=90-", 100), Ok(Some(vec![(90, 100)])));
        assert_eq!(parse_ranges("bytes=-10", 100), Ok(Some(vec![(90, 100)])));
        assert_eq!(parse_ranges("bytes=-1000", 100), Ok(Some(vec![(0, 100)])));
        assert_eq!(
            parse_ranges("bytes=0-99999999999999999999999", 100),
            Ok(Some(vec![(0, 100)]))
        );
        assert_eq!(
            parse_ranges("bytes=0-1,5-6", 100),
            Ok(Some(vec![(0, 2), (5, 7)]))
        );
        assert_eq!(parse_ranges("bytes=5-10,0-6", 100), Ok(Some(vec![(0, 11)])));
        assert_eq!(
            parse_ranges("bytes=100-", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            parse_ranges("bytes=-0", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(parse_ranges("bytes=0-0", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_ranges("bytes=5-1", 100), Ok(None));
        assert_eq!(parse_ranges("items=0-1", 100), Ok(None));
        assert_eq!(parse_ranges("bytes=a-b", 100), Ok(None));
        let many = format!("bytes={}", vec!["0-0"; 10_000].join(","));
        assert_eq!(parse_ranges(&many, 100), Err(RangeError::TooMany));
    }

    #[test]
    fn types() {
        assert_eq!(type_by_extension("a.MP4"), Some("video/mp4"));
        assert_eq!(type_by_extension("noext"), None);
        assert_eq!(sniff(b"  <!DOCTYPE HTML><p>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"hello\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff(&[0, 1, 2, 3]), "application/octet-stream");
        assert_eq!(
            sniff("é".as_bytes()[..1].as_ref()),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            content_disposition("inline", "naïve \"x\".txt"),
            "inline; filename=\"na_ve _x_.txt\"; filename*=UTF-8''na%C3%AFve%20%22x%22.txt"
        );
    }
}

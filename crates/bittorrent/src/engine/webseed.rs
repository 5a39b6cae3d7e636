//! Web seeds (BEP 19): HTTP servers that hold the torrent's files.
//!
//! One worker per URL asks the picker for runs of consecutive pieces that peers are not
//! fetching, downloads them with HTTP range requests per file (split at file
//! boundaries, pad files filled with zeros locally), reassembles whole pieces and hands
//! them to the same verification as peer data. A seed whose pieces fail the hash check
//! twice, that ignores `Range`, or that redirects in a loop is dropped with its URL and
//! the reason in the log; a 404 for one file only stops asking it for that file; 503 and
//! 429 honour `Retry-After`; other failures back off. Memory per seed is one run
//! ([`RUN_BYTES`]).
//!
//! The IP filter applies to the addresses a seed's host resolves to (blocked ones are
//! left out; a host with none left fails) and to hosts given as literal addresses, in
//! the URL or in a redirect: a seed with no address left is dropped, saying so. With a
//! filter, no proxy is used (one from the environment would resolve and dial hosts
//! past the filter). The download limit paces the body as it is read, charging only
//! the bytes used.

use super::{PieceBuf, Sender, Shared, State};
use crate::ipfilter::FilterScope;
use crate::picker::PeerKey;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes fetched per run (rounded to whole pieces, at least one).
pub const RUN_BYTES: u64 = 4 << 20;
/// Hash failures after which a web seed is dropped.
const MAX_BAD_PIECES: u32 = 2;
/// Other failures in a row after which a web seed is dropped.
const MAX_FAILURES: u32 = 6;

/// Path characters escaped in web seed URLs: everything but unreserved characters.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the engine knows about one web seed.
#[derive(Debug, Clone)]
pub(super) struct WebSeedStatus {
    pub url: String,
    pub bad_pieces: u32,
    pub failures: u32,
    pub disabled: Option<String>,
    pub bytes: u64,
    /// Files this seed answered 404 for.
    pub missing: HashSet<usize>,
}

impl WebSeedStatus {
    pub fn new(url: String) -> Self {
        WebSeedStatus {
            url,
            bad_pieces: 0,
            failures: 0,
            disabled: None,
            bytes: 0,
            missing: HashSet::new(),
        }
    }
}

/// Picker key of web seed `i` (peer keys count up from 1).
fn key(i: usize) -> PeerKey {
    crate::picker::Picker::WEB_SEED_KEYS + i as u64
}

/// A piece from web seed `i` failed its hash check.
pub(super) fn bad_data(st: &mut State, i: usize) {
    if let Some(ws) = st.webseeds.get_mut(i) {
        ws.bad_pieces += 1;
        tracing::warn!(
            url = ws.url,
            "web seed sent a piece that failed the hash check"
        );
        if ws.bad_pieces >= MAX_BAD_PIECES && ws.disabled.is_none() {
            ws.disabled = Some(format!("{} pieces failed the hash check", ws.bad_pieces));
            tracing::warn!(url = ws.url, "web seed dropped: it sends wrong data");
        }
    }
}

/// The URL of file `file` (BEP 19): a single-file torrent's URL is used as is, or with
/// the name appended when it ends in `/`; a multi-file torrent's is URL/name/path. The
/// names are those libtorrent requests: made safe, before duplicates are renamed
/// ([`crate::metainfo::FileEntry::web_seed_path`]), so no component is `.` or `..` and
/// no URL climbs out of the seed's folder.
pub fn file_url(base: &str, meta: &crate::Metainfo, file: usize) -> String {
    let info = &meta.info;
    let enc = |c: &str| utf8_percent_encode(c, PATH).to_string();
    if info.single_file {
        if base.ends_with('/') {
            format!("{base}{}", enc(&info.stored_name))
        } else {
            base.to_owned()
        }
    } else {
        let mut u = base.trim_end_matches('/').to_owned();
        u.push('/');
        u.push_str(&enc(&info.stored_name));
        for c in info.files[file].web_seed_path() {
            u.push('/');
            u.push_str(&enc(c));
        }
        u
    }
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// A web seed host none of whose addresses the IP filter lets through.
#[derive(Debug, thiserror::Error)]
#[error("every address of {host} is blocked by the IP filter")]
pub(super) struct AllBlocked {
    host: String,
}

/// Resolves web seed hosts, leaving out the addresses the IP filter blocks (each
/// remembered in the torrent's blocked set).
pub(super) struct FilteredResolver {
    pub filter: FilterScope,
}

impl reqwest::dns::Resolve for FilteredResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let filter = self.filter.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !filter.check(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(
                    Box::new(AllBlocked { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The address a URL's host is written as, if it is one.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Follows up to [`MAX_REDIRECTS`] redirects, none to an address the filter blocks.
pub(super) fn redirect_policy(filter: Option<FilterScope>) -> reqwest::redirect::Policy {
    let Some(filter) = filter else {
        return reqwest::redirect::Policy::limited(MAX_REDIRECTS);
    };
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        match literal_ip(attempt.url()) {
            Some(ip) if filter.check(ip) => attempt.error(AllBlocked {
                host: ip.to_string(),
            }),
            _ => attempt.follow(),
        }
    })
}

/// The IP filter's refusal somewhere in an HTTP error's chain of causes, if any.
fn blocked_cause(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(b) = c.downcast_ref::<AllBlocked>() {
            return Some(b.to_string());
        }
        cause = c.source();
    }
    None
}

/// Drops web seed `index` for good.
fn drop_seed(sh: &Shared, index: usize, why: String) {
    if let Some(ws) = sh.lock().webseeds.get_mut(index) {
        tracing::warn!(url = ws.url, reason = why, "web seed dropped");
        ws.disabled = Some(why);
    }
}

enum Failure {
    /// The file is not on this seed.
    NotFound(usize),
    /// Try again after this long.
    RetryAfter(Duration),
    /// Never use this seed again.
    Fatal(String),
    /// Back off and try again.
    Transient(String),
}

pub(super) async fn worker(sh: Arc<Shared>, index: usize, client: reqwest::Client) {
    let url = match sh.lock().webseeds.get(index) {
        Some(w) => w.url.clone(),
        None => return,
    };
    let k = key(index);
    let g = sh.geometry;
    let run_pieces = (RUN_BYTES / u64::from(g.piece_length())).max(1) as usize;
    let map = match sh.meta.info.v1.clone() {
        Some(m) => m,
        None => return,
    };
    if let Some(ip) = reqwest::Url::parse(&url).ok().as_ref().and_then(literal_ip) {
        if sh.blocks(ip) {
            drop_seed(&sh, index, format!("{ip} is blocked by the IP filter"));
            return;
        }
    }
    let mut cursor = 0u32;
    loop {
        if sh.lock().picker.is_complete() {
            return;
        }
        if sh.backlogged() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let run = {
            let mut st = sh.lock();
            let State {
                picker, webseeds, ..
            } = &mut *st;
            let Some(ws) = webseeds.get(index) else {
                return;
            };
            if ws.disabled.is_some() {
                return;
            }
            let missing = ws.missing.clone();
            let usable = |p: u32| {
                g.piece(p).is_some_and(|pc| {
                    map.slices(pc).all(|s| {
                        !missing.contains(&s.file_index)
                            || sh.meta.info.files[s.file_index].attr.pad
                    })
                })
            };
            picker.pick_run(k, run_pieces, cursor, usable, Instant::now())
        };
        let Some(&last) = run.last() else {
            // Nothing left for us now (peers have the rest in hand): look again later.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        cursor = last + 1;
        let result = fetch_run(&sh, &client, &url, index, &run).await;
        let wait = {
            let mut st = sh.lock();
            // Blocks of the run not handed over go back to the picker.
            st.picker.release_all(k);
            let Some(ws) = st.webseeds.get_mut(index) else {
                return;
            };
            match result {
                Ok(()) => {
                    ws.failures = 0;
                    None
                }
                Err(Failure::NotFound(file)) => {
                    tracing::warn!(url = ws.url, file, "web seed does not have this file");
                    ws.missing.insert(file);
                    None
                }
                Err(Failure::RetryAfter(d)) => Some(d),
                Err(Failure::Fatal(why)) => {
                    drop(st);
                    drop_seed(&sh, index, why);
                    return;
                }
                Err(Failure::Transient(why)) => {
                    ws.failures += 1;
                    tracing::debug!(url = ws.url, reason = why, "web seed request failed");
                    if ws.failures >= MAX_FAILURES {
                        ws.disabled = Some(format!(
                            "{} failures in a row, the last: {why}",
                            ws.failures
                        ));
                        return;
                    }
                    Some(Duration::from_secs(1 << ws.failures.min(6)))
                }
            }
        };
        if let Some(d) = wait {
            tokio::time::sleep(d.min(Duration::from_secs(300))).await;
        }
    }
}

/// Downloads the pieces of `run` (consecutive) and hands each complete piece over.
async fn fetch_run(
    sh: &Arc<Shared>,
    client: &reqwest::Client,
    url: &str,
    index: usize,
    run: &[u32],
) -> Result<(), Failure> {
    let g = sh.geometry;
    let Some(map) = sh.meta.info.v1.as_ref() else {
        return Ok(());
    };
    // Pieces being filled, in order; `filled` counts bytes of the current one.
    let sizes: Vec<usize> = run
        .iter()
        .map(|&p| g.piece(p).map_or(0, |pc| g.piece_size(pc)) as usize)
        .collect();
    let mut current = 0usize;
    let mut buf = sh.buffer(sizes[0]);
    let mut filled = 0usize;
    // File segments of the run, merged where consecutive pieces continue a file.
    let mut segments: Vec<(usize, u64, u64)> = Vec::new();
    for &p in run {
        let Some(pc) = g.piece(p) else { continue };
        for s in map.slices(pc) {
            match segments.last_mut() {
                Some((f, off, len)) if *f == s.file_index && *off + *len == s.file_offset => {
                    *len += u64::from(s.len)
                }
                _ => segments.push((s.file_index, s.file_offset, u64::from(s.len))),
            }
        }
    }
    for (file, offset, len) in segments {
        let mut left = len;
        if sh.meta.info.files[file].attr.pad {
            // Pad files are zeros by definition: no request.
            while left > 0 {
                let Some(&size) = sizes.get(current) else {
                    break;
                };
                let n = (left as usize).min(size - filled);
                buf[filled..filled + n].fill(0);
                filled += n;
                left -= n as u64;
                complete(sh, index, run, &sizes, &mut current, &mut buf, &mut filled);
            }
            continue;
        }
        let target = file_url(url, &sh.meta, file);
        let resp = client
            .get(&target)
            .header(
                reqwest::header::RANGE,
                format!("bytes={offset}-{}", offset + len - 1),
            )
            .send()
            .await
            .map_err(|e| {
                if let Some(why) = blocked_cause(&e) {
                    Failure::Fatal(why)
                } else if e.is_redirect() {
                    Failure::Fatal(format!("redirects too often ({e})"))
                } else {
                    Failure::Transient(e.to_string())
                }
            })?;
        let status = resp.status().as_u16();
        match status {
            206 => {}
            // A server that ignores Range sends the whole file: usable only from its start.
            200 if offset == 0 => {}
            200 => return Err(Failure::Fatal("ignores Range requests".into())),
            404 | 410 => return Err(Failure::NotFound(file)),
            429 | 503 => {
                let secs = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(10);
                return Err(Failure::RetryAfter(Duration::from_secs(secs.clamp(1, 300))));
            }
            s => return Err(Failure::Transient(format!("HTTP status {s}"))),
        }
        let mut resp = resp;
        while left > 0 {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(Failure::Transient("the body ended early".into())),
                Err(e) => return Err(Failure::Transient(e.to_string())),
            };
            // Only what was asked for; a 200 body goes on past it and is dropped (and
            // not charged to the download limit: the response is dropped after it).
            let mut data = &chunk[..chunk.len().min(left as usize)];
            if let Some(limit) = &sh.download_limit {
                limit.acquire(data.len() as u64).await;
            }
            while !data.is_empty() {
                let Some(&size) = sizes.get(current) else {
                    return Ok(());
                };
                let n = data.len().min(size - filled);
                buf[filled..filled + n].copy_from_slice(&data[..n]);
                filled += n;
                data = &data[n..];
                left -= n as u64;
                complete(sh, index, run, &sizes, &mut current, &mut buf, &mut filled);
            }
        }
    }
    Ok(())
}

/// Hands the current piece over when it is full and moves to the next.
fn complete(
    sh: &Arc<Shared>,
    index: usize,
    run: &[u32],
    sizes: &[usize],
    current: &mut usize,
    buf: &mut Vec<u8>,
    filled: &mut usize,
) {
    if sizes.get(*current).is_none_or(|&s| *filled < s) {
        return;
    }
    let piece = run[*current];
    let next_size = sizes.get(*current + 1).copied().unwrap_or(0);
    let data = std::mem::replace(
        buf,
        if next_size > 0 {
            sh.buffer(next_size)
        } else {
            Vec::new()
        },
    );
    *current += 1;
    *filled = 0;
    let mut st = sh.lock();
    let len = data.len() as u64;
    if !st.picker.take_whole(key(index), piece) {
        // Peers fetched some of it meanwhile (endgame): theirs stands.
        st.wasted += len;
        drop(st);
        sh.recycle(data);
        return;
    }
    st.downloaded += len;
    if let Some(ws) = st.webseeds.get_mut(index) {
        ws.bytes += len;
    }
    let blocks = data.len().div_ceil(crate::wire::BLOCK_SIZE as usize);
    let suspect = st.suspects.contains_key(&piece);
    drop(st);
    sh.verifying.fetch_add(1, Ordering::Relaxed);
    super::peer::verify(
        sh.clone(),
        piece,
        PieceBuf {
            data,
            from: vec![Some(Sender::WebSeed(index)); blocks],
            suspect,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::OwnedValue as O;

    fn torrent(files: Option<Vec<(&str, i64)>>) -> crate::Metainfo {
        let mut info = vec![
            ("name", O::bytes("my set")),
            ("piece length", O::int(16384)),
            ("pieces", O::Bytes(vec![0; 20])),
        ];
        match files {
            Some(f) => info.push((
                "files",
                O::List(
                    f.iter()
                        .map(|(p, l)| {
                            O::dict([
                                ("length", O::int(*l)),
                                ("path", O::List(p.split('/').map(O::bytes).collect())),
                            ])
                        })
                        .collect(),
                ),
            )),
            None => info.push(("length", O::int(10))),
        }
        crate::Metainfo::from_bytes(&O::dict([("info", O::dict(info))]).encode()).unwrap()
    }

    #[test]
    fn bep19_urls() {
        let single = torrent(None);
        assert_eq!(file_url("http://h/f.bin", &single, 0), "http://h/f.bin");
        assert_eq!(file_url("http://h/d/", &single, 0), "http://h/d/my%20set");
        let multi = torrent(Some(vec![("a b/c#1.txt", 5), ("z", 5)]));
        assert_eq!(
            file_url("http://h/ws", &multi, 0),
            "http://h/ws/my%20set/a%20b/c%231.txt"
        );
        assert_eq!(
            file_url("http://h/ws/", &multi, 1),
            "http://h/ws/my%20set/z"
        );
    }

    #[test]
    fn urls_use_safe_names_before_renaming() {
        // `..` components are dropped as libtorrent drops them: a URL never climbs out
        // of the seed's folder (reqwest would collapse `/../`).
        let t = torrent(Some(vec![
            ("../../etc/passwd", 5),
            ("A.txt", 5),
            ("a.txt", 5),
        ]));
        assert_eq!(
            file_url("http://h/ws/", &t, 0),
            "http://h/ws/my%20set/etc/passwd"
        );
        for f in 0..3 {
            let u = reqwest::Url::parse(&file_url("http://h/ws/", &t, f)).unwrap();
            assert!(u.path().starts_with("/ws/my%20set/"), "{u}");
        }
        // The second file is stored as a.1.txt, but the seed has it as a.txt.
        assert_eq!(t.info.files[2].stored, ["a.1.txt"]);
        assert_eq!(file_url("http://h/ws", &t, 2), "http://h/ws/my%20set/a.txt");
    }
}

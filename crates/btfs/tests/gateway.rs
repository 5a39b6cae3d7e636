//! The HTTP gateway of `btfs daemon`, spoken to over raw TCP (so the exact request bytes
//! are ours: `..`, encoded slashes, NUL) and with curl: file bytes and headers, caching,
//! content types, byte ranges (single, multiple, hostile), directory listings and
//! redirects, CIDv1, and requests that try to leave the store.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const CHUNK: usize = 262_144;
const BIG: usize = 3 << 20;
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// `hello world\n`: a valid CID that is never added.
const ABSENT: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
const PAGE: &[u8] = b"<!DOCTYPE html><title>page</title><p>hi</p>\n";
const ODD: &str = "x&y<z>'q'.txt";
const UNI: &str = "ünïcødé 名前.txt";

/// A repo with a sample tree added and `btfs daemon` serving it.
struct Gateway {
    /// Declared first: the daemon stops before its repo is deleted.
    _daemon: Daemon,
    tmp: tempfile::TempDir,
    addr: String,
    /// `tree/…` names → CIDs, from `btfs add -r`.
    cids: BTreeMap<String, String>,
    root: String,
}

impl Gateway {
    fn start() -> Gateway {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("tree");
        write(&t.join("big.bin"), &data(BIG, 61));
        write(&t.join("hello.txt"), b"hello\n");
        write(&t.join("a file.txt"), b"spaced out\n");
        write(&t.join("empty.bin"), b"");
        let mut png = PNG.to_vec();
        png.extend_from_slice(&data(5000, 62));
        write(&t.join("image"), &png);
        write(&t.join("page/index.html"), PAGE);
        write(&t.join("page/style.css"), b"p{color:red}\n");
        write(&t.join("nodir").join(ODD), b"odd\n");
        write(&t.join("nodir").join(UNI), "unicode ✓\n".as_bytes());
        write(&t.join("nodir/sub dir/deep.txt"), b"deep\n");
        std::fs::create_dir_all(t.join("nodir/empty")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.join("link")).unwrap();

        let repo = tmp.path().join("repo");
        let r = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args(["add", "-r", s(&t)]),
            Duration::from_secs(120),
        )
        .ok();
        let cids: BTreeMap<String, String> = r
            .stdout
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("added ").expect("added <cid> <name>");
                let (cid, name) = rest.split_once(' ').unwrap();
                (name.to_owned(), cid.to_owned())
            })
            .collect();
        let root = cids["tree"].clone();

        let port = free_port();
        let daemon = Daemon::spawn(
            "btfs daemon",
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", &repo)
                .args([
                    "daemon",
                    "--api",
                    "127.0.0.1:0",
                    "--gateway",
                    &format!("127.0.0.1:{port}"),
                ]),
        );
        let line = daemon.wait_for_line("gateway listening on http://", Duration::from_secs(60));
        let addr = line.split("http://").nth(1).unwrap().trim().to_owned();
        assert_eq!(addr, format!("127.0.0.1:{port}"));
        Gateway {
            _daemon: daemon,
            tmp,
            addr,
            cids,
            root,
        }
    }

    fn tree(&self) -> PathBuf {
        self.tmp.path().join("tree")
    }

    fn file(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.tree().join(rel)).unwrap()
    }

    fn cid(&self, rel: &str) -> &str {
        &self.cids[&format!("tree/{rel}")]
    }

    /// `btfs ARGS` on this gateway's repo.
    fn btfs(&self, args: &[&str]) -> Run {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_btfs"))
                .env("BTFS_PATH", self.tmp.path().join("repo"))
                .args(args),
            Duration::from_secs(120),
        )
        .ok()
    }

    /// A request with exactly this target and extra header lines.
    fn req(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" || method == "PUT" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        send(&self.addr, head.as_bytes(), method == "HEAD")
    }

    fn get(&self, target: &str) -> Resp {
        self.req("GET", target, &[])
    }

    fn range(&self, target: &str, range: &str) -> Resp {
        self.req("GET", target, &[("Range", range)])
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn expect(&self, status: u16, what: &str) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{what}: headers {:?}, body {:?}",
            self.headers,
            String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
        );
        self
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` on a new connection and reads the response until the server closes
/// it (every request says `Connection: close`).
fn send(addr: &str, request: &[u8], head: bool) -> Resp {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    sock.write_all(request).unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the response: {e}"));
    let end = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head_text = std::str::from_utf8(&raw[..end]).expect("ASCII head");
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked && !head {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let eol = pos + find(&body[pos..], b"\r\n").expect("chunk size line");
            let size_text = std::str::from_utf8(&body[pos..eol]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            pos = eol + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&body[pos..pos + size]);
            pos += size + 2;
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// The parts of a `multipart/byteranges` body: (first, last, total, bytes).
fn multipart(r: &Resp) -> Vec<(u64, u64, u64, Vec<u8>)> {
    let ct = r.h("content-type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("Content-Type {ct:?} is not multipart/byteranges"));
    let delim = format!("--{boundary}");
    let b = &r.body;
    let mut pos = 0;
    let mut parts = Vec::new();
    loop {
        if b[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        assert!(
            b[pos..].starts_with(delim.as_bytes()),
            "no boundary at byte {pos}"
        );
        pos += delim.len();
        if b[pos..].starts_with(b"--") {
            assert!(
                &b[pos + 2..] == b"\r\n" || b[pos + 2..].is_empty(),
                "bytes after the closing boundary"
            );
            break;
        }
        assert!(b[pos..].starts_with(b"\r\n"), "no CRLF after a boundary");
        pos += 2;
        let end = pos + find(&b[pos..], b"\r\n\r\n").expect("part headers");
        let head = std::str::from_utf8(&b[pos..end]).unwrap();
        pos = end + 4;
        assert!(
            head.contains("Content-Type: "),
            "part without a type: {head}"
        );
        let cr = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: bytes "))
            .unwrap_or_else(|| panic!("part without Content-Range: {head}"));
        let (first, last, total) = parse_content_range(cr);
        let len = (last - first + 1) as usize;
        parts.push((first, last, total, b[pos..pos + len].to_vec()));
        pos += len;
    }
    parts
}

/// `a-b/size` → (a, b, size).
fn parse_content_range(s: &str) -> (u64, u64, u64) {
    let (range, total) = s.split_once('/').unwrap();
    let (a, b) = range.split_once('-').unwrap();
    (
        a.parse().unwrap(),
        b.parse().unwrap(),
        total.parse().unwrap(),
    )
}

/// `curl ARGS` (bounded), which must succeed.
fn curl(args: &[&str]) -> Run {
    run_with_timeout(
        Command::new(tool("curl"))
            .args(["-sS", "--max-time", "60"])
            .args(args),
        Duration::from_secs(90),
    )
    .ok()
}

#[test]
fn files_headers_and_types() {
    let g = Gateway::start();
    let big = g.file("big.bin");
    let big_cid = g.cid("big.bin").to_owned();
    let root = g.root.clone();

    for target in [
        format!("/btfs/{big_cid}"),
        format!("/btfs/{root}/big.bin"),
        format!("/ipfs/{root}/big.bin"),
    ] {
        let r = g.get(&target);
        r.expect(200, &target);
        assert!(r.body == big, "{target}: {} bytes differ", r.body.len());
        assert_eq!(r.h("etag"), format!("\"{big_cid}\""));
        assert_eq!(r.h("cache-control"), IMMUTABLE);
        assert_eq!(r.h("content-length"), BIG.to_string());
        assert_eq!(r.h("accept-ranges"), "bytes");
        assert_eq!(r.h("content-type"), "application/octet-stream");
        assert!(r.header("content-range").is_none());

        // HEAD: the same headers, no body.
        let h = g.req("HEAD", &target, &[]);
        h.expect(200, &format!("HEAD {target}"));
        assert!(h.body.is_empty(), "HEAD sent {} body bytes", h.body.len());
        for name in [
            "etag",
            "cache-control",
            "content-type",
            "content-length",
            "accept-ranges",
        ] {
            assert_eq!(h.header(name), r.header(name), "HEAD {target}: {name}");
        }
    }

    // Conditional requests.
    let target = format!("/btfs/{root}/big.bin");
    for inm in [
        format!("\"{big_cid}\""),
        format!("W/\"{big_cid}\""),
        format!("\"other\", \"{big_cid}\""),
        "*".to_owned(),
    ] {
        let r = g.req("GET", &target, &[("If-None-Match", &inm)]);
        r.expect(304, &format!("If-None-Match: {inm}"));
        assert!(r.body.is_empty());
        assert_eq!(r.h("etag"), format!("\"{big_cid}\""));
    }
    let r = g.req("GET", &target, &[("If-None-Match", &format!("\"{root}\""))]);
    r.expect(200, "If-None-Match of another CID");
    assert!(r.body == big);

    // Types by extension, then by content.
    let r = g.get(&format!("/btfs/{root}/hello.txt"));
    r.expect(200, "hello.txt");
    assert_eq!(r.body, b"hello\n");
    assert!(
        r.h("content-type").starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.h("etag"), format!("\"{}\"", g.cid("hello.txt")));
    let r = g.get(&format!("/btfs/{root}/page/index.html"));
    r.expect(200, "page/index.html");
    assert!(r.h("content-type").starts_with("text/html"));
    assert_eq!(r.body, PAGE);
    let r = g.get(&format!("/btfs/{root}/page/style.css"));
    assert!(r.h("content-type").starts_with("text/css"));
    let r = g.get(&format!("/btfs/{root}/image"));
    r.expect(200, "image");
    assert_eq!(r.h("content-type"), "image/png");
    assert!(r.body == g.file("image"));
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    let r = g.get(&format!("/btfs/{}", g.cid("image")));
    assert_eq!(r.h("content-type"), "image/png", "sniffed without a name");

    // A 0-byte file.
    let r = g.get(&format!("/btfs/{root}/empty.bin"));
    r.expect(200, "empty.bin");
    assert!(r.body.is_empty());
    assert_eq!(r.h("content-length"), "0");

    // ?filename= names the download (and types it); download=true makes it an attachment.
    let r = g.get(&format!("/btfs/{big_cid}?filename=x.bin&download=true"));
    r.expect(200, "?filename&download");
    let cd = r.h("content-disposition");
    assert!(
        cd.starts_with("attachment; filename=\"x.bin\""),
        "Content-Disposition: {cd}"
    );
    assert!(r.body == big);
    let r = g.get(&format!("/btfs/{}?filename=notes.txt", g.cid("hello.txt")));
    assert!(r
        .h("content-disposition")
        .starts_with("inline; filename=\"notes.txt\""));
    assert!(r.h("content-type").starts_with("text/plain"));

    // curl agrees, byte for byte.
    let out = g.tmp.path().join("curl-big.bin");
    curl(&[
        "--fail",
        "-o",
        s(&out),
        &format!("http://{}/btfs/{root}/big.bin", g.addr),
    ]);
    assert!(std::fs::read(&out).unwrap() == big, "curl download differs");
    let headers = curl(&["--fail", "-I", &format!("http://{}/btfs/{big_cid}", g.addr)]);
    assert!(
        headers.stdout.contains(&format!("content-length: {BIG}"))
            || headers.stdout.contains(&format!("Content-Length: {BIG}")),
        "{}",
        headers.stdout
    );
}

#[test]
fn byte_ranges() {
    let g = Gateway::start();
    let big = g.file("big.bin");
    let size = BIG as u64;
    let target = format!("/btfs/{}/big.bin", g.root);

    let single = |range: &str, first: usize, last: usize| {
        let r = g.range(&target, range);
        r.expect(206, range);
        assert_eq!(
            r.h("content-range"),
            format!("bytes {first}-{last}/{size}"),
            "{range}"
        );
        assert_eq!(
            r.h("content-length"),
            (last - first + 1).to_string(),
            "{range}"
        );
        assert!(
            r.body == big[first..=last],
            "{range}: {} bytes, not bytes {first}-{last}",
            r.body.len()
        );
        assert_eq!(r.h("etag"), format!("\"{}\"", g.cid("big.bin")));
    };
    for (a, b) in [
        (0, 0),
        (0, 99),
        (262_000, 262_300),
        (CHUNK - 1, CHUNK),
        (524_287, 524_288),
        (CHUNK - 5, 3 * CHUNK + 5),
        (BIG - 1, BIG - 1),
        (1, BIG - 1),
    ] {
        single(&format!("bytes={a}-{b}"), a, b);
    }
    single("bytes=-100", BIG - 100, BIG - 1);
    single("bytes=-99999999", 0, BIG - 1);
    single("bytes=2000000-", 2_000_000, BIG - 1);
    single("bytes=3000000-3999999", 3_000_000, BIG - 1);
    single("bytes=0-99999999999999999999", 0, BIG - 1);
    single("bytes=0-18446744073709551615", 0, BIG - 1);
    // Curl's -r, and HEAD with a range.
    let out = g.tmp.path().join("curl-range.bin");
    curl(&[
        "--fail",
        "-r",
        "524280-524295",
        "-o",
        s(&out),
        &format!("http://{}{target}", g.addr),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), big[524_280..=524_295]);
    let h = g.req("HEAD", &target, &[("Range", "bytes=10-19")]);
    h.expect(206, "HEAD with Range");
    assert!(h.body.is_empty());
    assert_eq!(h.h("content-range"), format!("bytes 10-19/{size}"));

    // Several ranges: multipart/byteranges.
    let r = g.range(&target, "bytes=0-9,262140-262150,524287-524288,-5");
    r.expect(206, "four ranges");
    assert_eq!(r.h("content-length"), r.body.len().to_string());
    assert!(r.header("content-range").is_none());
    let parts = multipart(&r);
    let want: [(usize, usize); 4] = [
        (0, 9),
        (262_140, 262_150),
        (524_287, 524_288),
        (BIG - 5, BIG - 1),
    ];
    assert_eq!(parts.len(), want.len(), "{parts:?}");
    for ((first, last, total, bytes), (a, b)) in parts.iter().zip(want) {
        assert_eq!((*first, *last, *total), (a as u64, b as u64, size));
        assert!(*bytes == big[a..=b], "part {a}-{b}");
    }
    let h = g.req("HEAD", &target, &[("Range", "bytes=0-9,100-109")]);
    h.expect(206, "HEAD with two ranges");
    assert!(h.body.is_empty());
    assert!(h
        .h("content-type")
        .starts_with("multipart/byteranges; boundary="));

    // Overlapping ranges are merged: never more than the file (plus part headers).
    let r = g.range(&target, "bytes=0-1000000,500-2000000,100-3000000");
    r.expect(206, "overlapping ranges");
    assert_eq!(r.h("content-range"), format!("bytes 0-3000000/{size}"));
    assert!(r.body == big[..=3_000_000]);
    let whole = format!("0-{}", BIG - 1);
    let many_whole = format!("bytes={whole}{}", format!(",{whole}").repeat(99));
    let r = g.range(&target, &many_whole);
    r.expect(206, "100 whole-file ranges");
    assert_eq!(r.body.len(), BIG, "100 copies of the file were served");
    let r = g.range(&target, "bytes=0-10,5-20,100-200,150-250");
    r.expect(206, "two overlapping pairs");
    let parts = multipart(&r);
    assert_eq!(
        parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        [(0, 20), (100, 250)]
    );
    let staggered: Vec<String> = (0..100)
        .map(|i| format!("{}-{}", i * 10, BIG - 1))
        .collect();
    let r = g.range(&target, &format!("bytes={}", staggered.join(",")));
    r.expect(206, "100 staggered overlapping ranges");
    assert!(
        r.body.len() <= BIG,
        "{} bytes for a {BIG}-byte file",
        r.body.len()
    );

    // Unsatisfiable.
    for range in [
        format!("bytes={BIG}-"),
        format!("bytes={}-{}", BIG + 10, BIG + 20),
        "bytes=-0".to_owned(),
    ] {
        let r = g.range(&target, &range);
        r.expect(416, &range);
        assert_eq!(r.h("content-range"), format!("bytes */{size}"));
        assert!(r.body.len() < 1000);
    }
    let r = g.range(&format!("/btfs/{}/empty.bin", g.root), "bytes=0-0");
    r.expect(416, "a range of an empty file");
    assert_eq!(r.h("content-range"), "bytes */0");

    // Too many ranges are refused, not served.
    let many = format!("bytes=0-0{}", ",0-0".repeat(9_999));
    let r = g.range(&target, &many);
    r.expect(416, "10 000 ranges");
    assert!(r.body.len() < 1000, "{} bytes", r.body.len());
    let spread = |n: usize| {
        let s: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 300, i * 300)).collect();
        format!("bytes={}", s.join(","))
    };
    let r = g.range(&target, &spread(101));
    r.expect(416, "101 disjoint ranges");
    assert!(r.body.len() < 1000);
    // 10 000 of them do not even fit in a request head (64 KiB).
    let r = g.range(&target, &spread(10_000));
    r.expect(431, "10 000 disjoint ranges");
    assert!(r.body.len() < 1000);

    // A malformed Range is ignored: the whole file.
    for range in [
        "bytes=abc",
        "bytes=5-1",
        "items=0-1",
        "bytes=",
        "bytes=1-2-3",
        "bytes=0x10-20",
        "bytes=--5",
        "bytes=0-1,x",
        "0-100",
    ] {
        let r = g.range(&target, range);
        r.expect(200, range);
        assert!(r.header("content-range").is_none(), "{range}");
        assert!(r.body == big, "{range}");
    }

    // If-Range: the current ETag honours the range, another one gets the whole file.
    let etag = format!("\"{}\"", g.cid("big.bin"));
    let r = g.req(
        "GET",
        &target,
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    );
    r.expect(206, "If-Range with the ETag");
    assert_eq!(r.body, big[..10]);
    let r = g.req(
        "GET",
        &target,
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    );
    r.expect(200, "If-Range with a stale ETag");
    assert!(r.body == big);
}

/// `href="./…"` values of a listing page.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"./")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn directories_listings_and_index() {
    let g = Gateway::start();
    let root = g.root.clone();

    // No trailing slash: a redirect that keeps the query.
    let r = g.get(&format!("/btfs/{root}"));
    r.expect(301, "directory without a slash");
    assert_eq!(r.h("location"), format!("/btfs/{root}/"));
    let r = g.get(&format!("/btfs/{root}/page?x=1"));
    r.expect(301, "page without a slash");
    assert_eq!(r.h("location"), format!("/btfs/{root}/page/?x=1"));

    // The root has no index.html: a listing with every name, link and size.
    let r = g.get(&format!("/btfs/{root}/"));
    r.expect(200, "root listing");
    assert!(r.h("content-type").starts_with("text/html"));
    let html = r.text();
    for want in [
        "href=\"./big.bin\">big.bin</a>",
        "href=\"./hello.txt\">hello.txt</a>",
        "href=\"./a%20file.txt\">a file.txt</a>",
        "href=\"./empty.bin\">empty.bin</a>",
        "href=\"./page/\">page/</a>",
        "href=\"./nodir/\">nodir/</a>",
        "3.0 MiB",
        "6 B",
        "0 B",
        g.cid("big.bin"),
    ] {
        assert!(html.contains(want), "the listing lacks {want:?}:\n{html}");
    }
    let head = g.req("HEAD", &format!("/btfs/{root}/"), &[]);
    head.expect(200, "HEAD of a listing");
    assert!(head.body.is_empty());

    // Names are escaped in the page, and every link leads to the entry.
    let r = g.get(&format!("/btfs/{root}/nodir/"));
    r.expect(200, "nodir listing");
    let html = r.text();
    assert!(
        html.contains("x&amp;y&lt;z&gt;&#39;q&#39;.txt"),
        "the odd name is not escaped:\n{html}"
    );
    assert!(!html.contains("<z>"), "raw '<z>' in the page:\n{html}");
    assert!(html.contains(UNI), "{html}");
    assert!(html.contains("sub dir/"), "{html}");
    let links = hrefs(&html);
    assert_eq!(links.len(), 4, "{links:?}");
    for (link, name, body) in [
        (&links[0], "empty/", None),
        (&links[1], "sub dir/", None),
        (&links[2], ODD, Some(&b"odd\n"[..])),
        (&links[3], UNI, Some("unicode ✓\n".as_bytes())),
    ] {
        assert!(
            link.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'"'),
            "link {link:?} for {name:?} is not encoded"
        );
        let r = g.get(&format!("/btfs/{root}/nodir/{link}"));
        r.expect(200, &format!("the link {link:?} of {name:?}"));
        if let Some(b) = body {
            assert_eq!(r.body, b, "{name}");
        }
    }
    let r = g.get(&format!("/btfs/{root}/nodir/sub%20dir/"));
    assert!(r.text().contains("href=\"./deep.txt\""), "{}", r.text());
    assert!(r.text().contains(">..</a>"), "no parent link");

    // A directory with index.html serves it.
    let r = g.get(&format!("/btfs/{root}/page/"));
    r.expect(200, "page/");
    assert_eq!(r.body, PAGE);
    assert!(r.h("content-type").starts_with("text/html"));
    assert_eq!(r.h("etag"), format!("\"{}\"", g.cid("page")));
    let r = g.get(&format!("/btfs/{}/", g.cid("page")));
    assert_eq!(r.body, PAGE);

    // Percent-encoded names.
    let r = g.get(&format!("/btfs/{root}/a%20file.txt"));
    r.expect(200, "a%20file.txt");
    assert_eq!(r.body, b"spaced out\n");
    let enc: String = UNI
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = g.get(&format!("/btfs/{root}/nodir/{enc}"));
    r.expect(200, &enc);
    assert_eq!(r.body, "unicode ✓\n".as_bytes());
    let r = g.get(&format!("/btfs/{root}/nodir/x%26y%3Cz%3E'q'.txt"));
    r.expect(200, "the odd name, encoded");
}

#[test]
fn hostile_requests_stay_inside_the_store() {
    let g = Gateway::start();
    let root = g.root.clone();
    let long = "Q".repeat(5000);
    let cases: &[(String, &[u16])] = &[
        (format!("/btfs/{root}/../../etc/passwd"), &[400]),
        (format!("/btfs/{root}/page/../hello.txt"), &[400]),
        (format!("/btfs/{root}/.."), &[400]),
        (format!("/btfs/{root}/./hello.txt"), &[400]),
        (format!("/btfs/{root}/%2e%2e/%2e%2e/etc/passwd"), &[400]),
        (format!("/btfs/{root}/%2E%2E"), &[400]),
        (format!("/btfs/{root}/..%2f..%2fetc%2fpasswd"), &[400]),
        (format!("/btfs/{root}/page%2Findex.html"), &[400]),
        (format!("/btfs/{root}/a%2Fb"), &[400]),
        (format!("/btfs/{root}/page%5Cindex.html"), &[400]),
        (format!("/btfs/{root}/hello.txt%00"), &[400]),
        (format!("/btfs/{root}/%00"), &[400]),
        (format!("/btfs/{root}/%ff"), &[400]),
        ("/btfs/notacid".into(), &[400]),
        ("/btfs/Qm123".into(), &[400]),
        (format!("/btfs/{long}"), &[400]),
        (format!("/btfs/{long}/x"), &[400]),
        ("/btfs/".into(), &[400]),
        ("/btfs//etc/passwd".into(), &[400]),
        ("/btfs/%2e%2e/%2e%2e/etc/passwd".into(), &[400]),
        ("/btfs/bafyINVALID".into(), &[400]),
        (format!("/btfs/{ABSENT}"), &[404]),
        (format!("/btfs/{ABSENT}/x/y"), &[404]),
        (format!("/btfs/{root}/nope.txt"), &[404]),
        (format!("/btfs/{root}/nodir/nope/deeper"), &[404]),
        (format!("/btfs/{root}/hello.txt/x"), &[404]),
        ("/etc/passwd".into(), &[404]),
        ("/../../etc/passwd".into(), &[400, 404]),
        ("/btfs".into(), &[404]),
        ("/ipfs/../etc/passwd".into(), &[400, 404]),
        ("/favicon.ico".into(), &[404]),
        ("/".into(), &[200]),
    ];
    for (target, statuses) in cases {
        for method in ["GET", "HEAD"] {
            let r = g.req(method, target, &[]);
            assert!(
                statuses.contains(&r.status),
                "{method} {}: status {}, want one of {statuses:?}; body {:?}",
                &target[..target.len().min(120)],
                r.status,
                r.text()
            );
            let body = r.text();
            assert!(!body.contains("root:"), "{target} leaked a file: {body}");
            // Error texts may quote the request, nothing more.
            assert!(
                r.body.len() < 1000 + target.len(),
                "{}: {} bytes",
                &target[..target.len().min(120)],
                r.body.len()
            );
        }
    }
    // A symbolic link is served as its target text, never followed.
    let r = g.get(&format!("/btfs/{root}/link"));
    r.expect(200, "a symlink");
    assert_eq!(r.body, b"/etc/passwd");
    assert_eq!(r.h("content-type"), "inode/symlink");
    g.get(&format!("/btfs/{root}/link/x"))
        .expect(404, "a path under a symlink");

    let help = g.get("/");
    assert!(help.text().contains("/btfs/"), "{}", help.text());

    // curl sends `..` as it is with --path-as-is.
    let code = curl(&[
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/btfs/{root}/../../../../etc/passwd", g.addr),
    ]);
    assert_eq!(code.stdout, "400");
    let body = curl(&[
        "--path-as-is",
        &format!("http://{}/../../../../etc/passwd", g.addr),
    ]);
    assert!(!body.stdout.contains("root:"), "{}", body.stdout);

    // Only GET and HEAD.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = g.req(method, &format!("/btfs/{root}/hello.txt"), &[]);
        r.expect(405, method);
        assert_eq!(r.h("allow"), "GET, HEAD");
    }

    // Garbage on the wire gets an error, not a crash.
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /btfs/\x01\x02 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET http://evil.example/../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut sock = TcpStream::connect(&g.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = sock.write_all(raw);
        let mut out = Vec::new();
        let _ = sock.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("root:"), "{text}");
        assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    }

    // Still serving.
    let r = g.get(&format!("/btfs/{root}/big.bin"));
    r.expect(200, "the final GET");
    assert!(r.body == g.file("big.bin"));
}

/// Base58 (bitcoin alphabet) → bytes.
fn base58_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut le: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c).expect("base58") as u32;
        for b in le.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            le.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    le.extend(s.bytes().take_while(|&c| c == b'1').map(|_| 0));
    le.reverse();
    le
}

/// RFC 4648 base32, lower case, no padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The CIDv1 (dag-pb, base32) of the same block as a CIDv0.
fn v0_to_v1(v0: &str) -> String {
    let mh = base58_decode(v0);
    assert_eq!(&mh[..2], [0x12, 0x20], "{v0} is not a sha2-256 CIDv0");
    let mut b = vec![0x01, 0x70];
    b.extend_from_slice(&mh);
    format!("b{}", base32_lower(&b))
}

#[test]
fn cidv1_is_served() {
    // A known pair (checked with an independent base58/base32 conversion).
    assert_eq!(
        v0_to_v1("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"),
        "bafybeiffndsajwhk3lwjewwdxqntmjm4b5wxaaanokonsggenkbw6slwk4"
    );
    let g = Gateway::start();
    let big = g.file("big.bin");

    // The v0 content under its v1 name.
    let v1 = v0_to_v1(g.cid("big.bin"));
    let r = g.get(&format!("/btfs/{v1}"));
    r.expect(200, &v1);
    assert!(r.body == big);
    assert_eq!(r.h("etag"), format!("\"{v1}\""));
    let root1 = v0_to_v1(&g.root);
    let r = g.get(&format!("/btfs/{root1}/hello.txt"));
    r.expect(200, "hello.txt under the root's CIDv1");
    assert_eq!(r.body, b"hello\n");
    let r = g.range(&format!("/btfs/{root1}/big.bin"), "bytes=262000-262300");
    r.expect(206, "a range under the CIDv1");
    assert!(r.body == big[262_000..=262_300]);

    // Content added with --cid-version 1 while the daemon runs (raw leaves, base32).
    let f = g.tmp.path().join("v1.bin");
    let bytes = data(2 * CHUNK + 1000, 71);
    write(&f, &bytes);
    let cid = g.btfs(&["add", "-Q", "--cid-version", "1", s(&f)]).stdout;
    let cid = cid.trim();
    assert!(cid.starts_with("bafy"), "{cid}");
    let r = g.get(&format!("/btfs/{cid}"));
    r.expect(200, cid);
    assert!(r.body == bytes);
    assert_eq!(r.h("etag"), format!("\"{cid}\""));
    let r = g.range(&format!("/btfs/{cid}"), "bytes=262100-262200,524287-524300");
    r.expect(206, "two ranges of the CIDv1 file");
    let parts = multipart(&r);
    assert!(parts[0].3 == bytes[262_100..=262_200]);
    assert!(parts[1].3 == bytes[524_287..=524_300]);
    // A single raw block.
    let small = g.tmp.path().join("small.txt");
    write(&small, b"raw leaf\n");
    let raw = g
        .btfs(&["add", "-Q", "--cid-version", "1", s(&small)])
        .stdout;
    let raw = raw.trim();
    assert!(raw.starts_with("bafkrei"), "{raw}");
    let r = g.get(&format!("/btfs/{raw}"));
    r.expect(200, raw);
    assert_eq!(r.body, b"raw leaf\n");
    assert!(r.h("content-type").starts_with("text/plain"));
    let r = g.get(&format!("/ipfs/{raw}?filename=a.txt"));
    assert_eq!(r.body, b"raw leaf\n");
}

/// A request with this `Host` (the helpers send the gateway's address).
fn get_as(g: &Gateway, host: &str, target: &str) -> Resp {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send(&g.addr, req.as_bytes(), false)
}

/// Untrusted content and the gateway's origin: `nosniff` on every response; on the
/// shared path origin, whatever a browser would run as a document (HTML by name, by
/// `?filename=`, by sniffing, an index.html) is sandboxed into an opaque origin; on
/// `{cidv1}.btfs.localhost` a CID is served at its own origin, and `localhost` path
/// requests are redirected there, as kubo's subdomain mode does.
#[test]
fn content_is_sandboxed_on_the_shared_origin_and_has_its_own_on_subdomains() {
    let g = Gateway::start();
    let root = g.root.clone();
    let hello = g.cid("hello.txt").to_owned();
    let port = g.addr.rsplit(':').next().unwrap().to_owned();
    let sandboxed = |r: &Resp, what: &str| {
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy in {:?}", r.headers));
        assert!(
            csp.contains("sandbox") && !csp.contains("allow-same-origin"),
            "{what}: {csp}"
        );
    };

    // Every kind of response says nosniff.
    let cases: Vec<(String, u16)> = vec![
        (format!("/btfs/{hello}"), 200),
        (format!("/btfs/{root}"), 301),
        (format!("/btfs/{root}/"), 200),
        (format!("/btfs/{root}/nope"), 404),
        ("/btfs/notacid".into(), 400),
        ("/".into(), 200),
        ("/elsewhere".into(), 404),
    ];
    for (target, status) in &cases {
        let r = g.get(target);
        r.expect(*status, target);
        assert_eq!(r.h("x-content-type-options"), "nosniff", "{target}");
    }
    let r = g.req(
        "GET",
        &format!("/btfs/{hello}"),
        &[("If-None-Match", &format!("\"{hello}\""))],
    );
    r.expect(304, "a conditional request");
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    let r = g.req("POST", &format!("/btfs/{hello}"), &[]);
    r.expect(405, "POST");
    assert_eq!(r.h("x-content-type-options"), "nosniff");

    // ?filename=x.html types plain text as HTML (as kubo does) but only in a sandbox;
    // so are HTML by name, by content, a folder's index.html and a listing.
    let r = g.get(&format!("/btfs/{hello}?filename=x.html"));
    r.expect(200, "?filename=x.html");
    assert!(
        r.h("content-type").starts_with("text/html"),
        "{:?}",
        r.headers
    );
    sandboxed(&r, "?filename=x.html");
    sandboxed(
        &g.get(&format!("/btfs/{root}/page/index.html")),
        "index.html",
    );
    sandboxed(
        &g.get(&format!("/btfs/{}", g.cid("page/index.html"))),
        "sniffed HTML",
    );
    sandboxed(
        &g.get(&format!("/btfs/{root}/page/")),
        "a folder's index.html",
    );
    sandboxed(&g.get(&format!("/btfs/{root}/")), "a listing");
    let r = g.get(&format!("/btfs/{root}/page/style.css"));
    assert!(
        r.header("content-security-policy").is_none(),
        "{:?}",
        r.headers
    );

    // A subdomain is the CID's own origin: its pages run unsandboxed.
    let page1 = v0_to_v1(g.cid("page"));
    let host = format!("{page1}.btfs.localhost:{port}");
    for target in ["/", "/index.html"] {
        let r = get_as(&g, &host, target);
        r.expect(200, &format!("{host}{target}"));
        assert_eq!(r.body, PAGE);
        assert!(r.h("content-type").starts_with("text/html"));
        assert!(
            r.header("content-security-policy").is_none(),
            "{:?}",
            r.headers
        );
        assert_eq!(r.h("x-content-type-options"), "nosniff");
    }
    let r = get_as(&g, &host, "/style.css");
    assert_eq!(r.body, b"p{color:red}\n");
    let root1 = v0_to_v1(&root);
    let r = get_as(&g, &format!("{root1}.ipfs.localhost:{port}"), "/hello.txt");
    r.expect(200, "hello.txt on an ipfs.localhost subdomain");
    assert_eq!(r.body, b"hello\n");
    // A listing links other CIDs to their own subdomains.
    let r = get_as(&g, &format!("{root1}.btfs.localhost:{port}"), "/");
    r.expect(200, "a listing on a subdomain");
    let sub1 = v0_to_v1(g.cid("nodir"));
    assert!(
        r.text()
            .contains(&format!("href=\"http://{sub1}.btfs.localhost:{port}/\"")),
        "{}",
        r.text()
    );
    // A subdomain that is not a CIDv1 (a CIDv0 loses its case in a host name).
    let r = get_as(
        &g,
        &format!("{}.btfs.localhost:{port}", root.to_lowercase()),
        "/",
    );
    r.expect(400, "a lower-cased CIDv0 subdomain");

    // localhost path requests go to the subdomain, path and query kept.
    let r = get_as(
        &g,
        &format!("localhost:{port}"),
        &format!("/btfs/{root}/page/?a=1"),
    );
    r.expect(301, "localhost path request");
    assert_eq!(
        r.h("location"),
        format!("http://{root1}.btfs.localhost:{port}/page/?a=1")
    );
    let r = get_as(&g, &format!("localhost:{port}"), &format!("/ipfs/{hello}"));
    assert_eq!(
        r.h("location"),
        format!("http://{}.btfs.localhost:{port}/", v0_to_v1(&hello))
    );
}

/// A `Host` whose port is not a number (`localhost:@evil.example`) would put another
/// site into the redirect's `Location` and the subdomain listing's links: it is refused.
#[test]
fn hosts_with_a_bad_port_are_refused() {
    let g = Gateway::start();
    let root = g.root.clone();
    let root1 = v0_to_v1(&root);
    let port = g.addr.rsplit(':').next().unwrap().to_owned();
    for (host, target) in [
        (
            "localhost:@evil.example".to_string(),
            format!("/btfs/{root}/"),
        ),
        (
            "localhost:80@evil.example".to_string(),
            format!("/btfs/{root}/"),
        ),
        ("localhost:99999".to_string(), format!("/btfs/{root}/")),
        (
            format!("{root1}.btfs.localhost:@evil.example"),
            "/".to_string(),
        ),
        (format!("{root1}.btfs.localhost:{port}/x"), "/".to_string()),
    ] {
        let r = get_as(&g, &host, &target);
        r.expect(400, &format!("Host {host:?}"));
        assert!(r.header("location").is_none(), "{host}: {:?}", r.headers);
        assert!(r.h("content-type").starts_with("text/plain"), "{host}");
    }
    // The good forms still work.
    let r = get_as(&g, &format!("localhost:{port}"), &format!("/btfs/{root}/"));
    r.expect(301, "localhost with its port");
    assert_eq!(
        r.h("location"),
        format!("http://{root1}.btfs.localhost:{port}/")
    );
    let r = get_as(&g, &format!("{root1}.btfs.localhost:{port}"), "/");
    r.expect(200, "a subdomain listing");
    assert!(r.text().contains(&format!(".btfs.localhost:{port}/\"")));
}

/// Reads are open to every origin, as kubo's gateway: a sandboxed page (origin `null`)
/// on the shared path origin can fetch its own CID's files.
#[test]
fn reads_are_open_to_every_origin() {
    let g = Gateway::start();
    let root = g.root.clone();
    let hello = g.cid("hello.txt").to_owned();
    let null = [("Origin", "null")];
    for (method, target, status) in [
        ("GET", format!("/btfs/{root}/hello.txt"), 200),
        ("HEAD", format!("/btfs/{root}/hello.txt"), 200),
        ("GET", format!("/btfs/{root}/page/"), 200),
        ("GET", format!("/btfs/{hello}"), 200),
        ("GET", format!("/btfs/{root}/nope"), 404),
    ] {
        let r = g.req(method, &target, &null);
        r.expect(status, &format!("{method} {target}"));
        assert_eq!(r.h("access-control-allow-origin"), "*", "{method} {target}");
        assert!(
            r.h("access-control-expose-headers")
                .contains("Content-Range"),
            "{:?}",
            r.headers
        );
        assert!(r.header("access-control-allow-credentials").is_none());
    }
    let r = g.req("GET", &format!("/btfs/{hello}"), &[("Range", "bytes=0-1")]);
    r.expect(206, "a range");
    assert_eq!(r.h("access-control-allow-origin"), "*");
    let r = g.req("POST", &format!("/btfs/{hello}"), &null);
    r.expect(405, "POST");
    assert!(r.header("access-control-allow-origin").is_none());
}

//! Whole gateway requests, through the same router the daemon serves, over a small store
//! (a folder with a multi-block file, a raw-leaves CIDv1 file, an `index.html` folder, a
//! symbolic link). Never panics and never answers 500; a body is exactly as long as its
//! `Content-Length`; a partial answer's `Content-Range` lies within the file.
//!
//! Input: text. The first line is the method (`HEAD`, else GET) and path, where `ROOT`
//! stands for the folder's CID and `V1` for the CIDv1 file's; each further line is a
//! header (`Name: value`, as `Range`, `If-None-Match`, `If-Range`).

#![no_main]

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use store::importer::{ImportOptions, Node};
use store::Blockstore;
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    root: String,
    v1: String,
}

fn file(opts: &ImportOptions, bytes: &[u8], blocks: &Blockstore) -> Node {
    opts.import_reader(bytes, blocks, &mut |_| {})
        .expect("import")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("btfs-fuzz-gateway-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let blocks = Blockstore::open(&dir).expect("blockstore");
        let v0 = ImportOptions {
            chunk_size: 1000,
            ..ImportOptions::default()
        };
        let v1 = ImportOptions {
            cid_version: 1,
            raw_leaves: true,
            chunk_size: 700,
        };
        let big: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let html = file(&v0, b"<!doctype html><title>x</title>", &blocks);
        let page = v0
            .directory(vec![("index.html".into(), html)], &blocks)
            .expect("dir");
        let raw = file(&v1, &big[..3000], &blocks);
        let entries = vec![
            ("a.bin".to_string(), file(&v0, &big, &blocks)),
            ("hello.txt".to_string(), file(&v0, b"hello\n", &blocks)),
            ("empty".to_string(), file(&v0, b"", &blocks)),
            ("page".to_string(), page),
            (
                "link".to_string(),
                v0.symlink(b"../a.bin", &blocks).expect("link"),
            ),
            ("raw.bin".to_string(), raw),
        ];
        let root = v0.directory(entries, &blocks).expect("root");
        Fixture {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            router: node::gateway::router(Arc::new(blocks)),
            root: root.cid.to_string(),
            v1: raw.cid.to_string(),
        }
    })
}

fn request(f: &Fixture, text: &str) -> Option<Request<Body>> {
    let mut lines = text.split('\n');
    let first = lines.next()?;
    let (method, path) = match first.strip_prefix("HEAD ") {
        Some(p) => (Method::HEAD, p),
        None => (Method::GET, first.strip_prefix("GET ").unwrap_or(first)),
    };
    let path = path.replace("ROOT", &f.root).replace("V1", &f.v1);
    let mut b = Request::builder().method(method).uri(path);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        let value = HeaderValue::from_str(value.trim()).ok()?;
        b = b.header(name, value);
    }
    b.body(Body::empty()).ok()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some(req) = request(f, &String::from_utf8_lossy(data)) else {
        return;
    };
    let head = req.method() == Method::HEAD;
    f.rt.block_on(async {
        let resp = f.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().expect("ascii").parse::<u64>().expect("a number"));
        let range = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("the body streams");
        if let (Some(n), false) = (length, head) {
            assert_eq!(body.len() as u64, n, "{status}");
        }
        if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (status, range) {
            let (span, size) = r
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .expect("bytes a-b/size");
            let (a, b) = span.split_once('-').expect("a-b");
            let (a, b, size): (u64, u64, u64) = (
                a.parse().unwrap(),
                b.parse().unwrap(),
                size.parse().unwrap(),
            );
            assert!(a <= b && b < size, "{r}");
        }
    });
});

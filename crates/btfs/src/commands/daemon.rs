//! `btfs daemon`: the gateway over the local store until interrupted.

use super::{btfs_path, wait_for_signal};
use crate::cli::DaemonArgs;
use crate::output::Encoding;
use anyhow::Context;
use std::sync::Arc;
use store::repo::parse_listen_addr;
use store::{Blockstore, LockMode, Repo};

pub fn run(args: DaemonArgs, enc: Encoding) -> anyhow::Result<()> {
    let path = btfs_path()?;
    if Repo::init(&path)? {
        eprintln!("initialized a BTFS repo at {}", path.display());
    }
    let config = Repo::read_config(&path)?;
    let gateway = args.gateway.unwrap_or(config.addresses.gateway);
    let addr = parse_listen_addr(&gateway).with_context(|| {
        format!("gateway address {gateway:?}: give IP:PORT or /ip4/IP/tcp/PORT")
    })?;
    if let Some(api) = &args.api {
        parse_listen_addr(api)
            .with_context(|| format!("API address {api:?}: give IP:PORT or /ip4/IP/tcp/PORT"))?;
    }
    // A shared hold on the repo: downloads and `add` go on while the daemon runs, but
    // `repo gc` (exclusive) cannot delete blocks under a response being streamed.
    let (_repo, _) = Repo::open(&path, LockMode::Shared)?;
    let blocks =
        Arc::new(Blockstore::open(&path.join("blocks")).context("opening the blockstore")?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("gateway: cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        match enc {
            Encoding::Json => println!(
                "{}",
                serde_json::json!({"Gateway": format!("http://{local}"), "Repo": path.display().to_string()})
            ),
            Encoding::Text => {
                println!("gateway listening on http://{local}");
                println!("daemon is ready (repo {}); Ctrl-C stops it", path.display());
            }
        }
        node::gateway::serve(listener, blocks, wait_for_signal())
            .await
            .context("gateway")?;
        if enc == Encoding::Text {
            eprintln!("daemon stopped");
        }
        anyhow::Ok(())
    })
}

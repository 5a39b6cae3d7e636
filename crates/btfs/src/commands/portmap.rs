//! The commands' side of port mapping (`serve`, `download`): which ports are mapped (the
//! peer listen port over TCP, the DHT's over UDP) and how the state is shown: one
//! `port mapping: …` line per mapping on stderr, and with `--enc json` a
//! `{"Type":"port-mapping", …}` event on stdout, each time the state changes.
//! The mapping itself is [`node::portmap`]'s; every wait here is bounded.

use crate::output::{clean, Encoding};
use bittorrent::dht::DhtNode;
use bittorrent::engine::Stats;
use node::portmap::{PortMapSpec, PortMapStatus, PortMapper, Protocol};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long `serve` waits for the first answers before printing its magnets (so they can
/// carry the external address).
pub const SETTLE: Duration = Duration::from_secs(10);
/// How long removing the mappings may take on exit.
pub const STOP: Duration = Duration::from_secs(10);

/// `BTFS_PORT_MAPPING_PCP=0` maps by NAT-PMP without trying PCP first (for gateways
/// whose PCP misbehaves, and to test the NAT-PMP path against a gateway that speaks both).
pub const PCP_ENV: &str = "BTFS_PORT_MAPPING_PCP";

/// Starts mapping `tcp_port` and the DHT node's UDP port.
pub async fn start(tcp_port: u16, dht: Option<&Arc<DhtNode>>) -> anyhow::Result<PortMapper> {
    let mut ports = vec![(Protocol::Tcp, tcp_port)];
    if let Some(d) = dht {
        ports.push((Protocol::Udp, d.local_addr().await.port()));
    }
    Ok(PortMapper::start(
        PortMapSpec::new(ports)?
            .description("btfs")
            .pcp(std::env::var(PCP_ENV).map_or(true, |v| v != "0")),
    ))
}

/// Prints the state: lines on stderr, and a JSON event on stdout with `--enc json`.
pub fn show(s: &PortMapStatus, enc: Encoding) {
    for line in s.lines() {
        eprintln!("port mapping: {}", clean(&line));
    }
    if enc == Encoding::Json {
        if let Ok(mut v) = serde_json::to_value(s) {
            v["Type"] = "port-mapping".into();
            println!("{v}");
        }
    }
}

/// Shows each change of the state after the current one, until the mapper is gone.
pub async fn follow(mut rx: watch::Receiver<PortMapStatus>, enc: Encoding) {
    rx.borrow_and_update();
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update().clone();
        show(&s, enc);
    }
}

/// `download`'s mapping: starts once the engine listens (its port is in the stats),
/// shows the state as it changes, and removes the mappings when `stop` turns true or
/// the engine's stats end.
pub async fn for_download(
    mut stats: watch::Receiver<Stats>,
    dht: Option<Arc<DhtNode>>,
    mut stop: watch::Receiver<bool>,
    enc: Encoding,
) {
    let port = tokio::select! {
        r = stats.wait_for(|s| s.listen_port != 0) => match r {
            Ok(s) => s.listen_port,
            Err(_) => return,
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    let mapper = match start(port, dht.as_ref()).await {
        Ok(m) => m,
        Err(e) => return eprintln!("port mapping: {e}"),
    };
    let first = mapper.settled(SETTLE).await;
    show(&first, enc);
    let follower = tokio::spawn(follow(mapper.status(), enc));
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = async { while stats.changed().await.is_ok() {} } => {}
    }
    follower.abort();
    show(&mapper.stop(STOP).await, enc);
}

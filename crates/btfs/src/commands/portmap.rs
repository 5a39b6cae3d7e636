//! The commands' side of port mapping (`serve`, `download`, and so the daemon's jobs):
//! which ports are mapped (the peer listen port over TCP, the DHT's over UDP) and how the
//! state is shown: one `port mapping: …` line per mapping on stderr, and with `--enc json`
//! a `{"Type":"port-mapping", …}` event on stdout, each time the state changes.
//!
//! Policy: mapping runs when the run's settings say so (`Bittorrent.PortMapping`, on by
//! default, off in the `test` profile; `--no-port-mapping` turns it off for one run).
//! The mapping itself is [`node::portmap`]'s; every wait here is bounded, and every wait
//! for the mappings to settle also ends on Ctrl-C/SIGTERM (or the download's end), so
//! the mappings are removed on every way out. No locks.
//!
//! Test/diagnostic knob, not a setting: `BTFS_PORT_MAPPING_PCP=0` ([`PCP_ENV`]) asks by
//! NAT-PMP without trying PCP first, so the NAT-PMP path can be tested on its own against
//! a gateway that speaks both, or a gateway whose PCP misbehaves can be told apart.

use crate::output::{clean, Encoding};
use bittorrent::dht::DhtNode;
use bittorrent::engine::Stats;
use node::portmap::{PortMapSpec, PortMapStatus, PortMapper, Protocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long `serve` waits for the first answers before printing its magnets (so they can
/// carry the external address).
pub const SETTLE: Duration = Duration::from_secs(10);
/// How long removing the mappings may take on exit: the removals run at once, each
/// within [`node::portmap::REQUEST_TIMEOUT`].
pub const STOP: Duration = Duration::from_secs(node::portmap::REQUEST_TIMEOUT.as_secs() + 5);
/// [`for_download`] ends within this after its stop or the engine's end (the removal,
/// and a little for the rest).
pub const DOWNLOAD_END: Duration = Duration::from_secs(STOP.as_secs() + 2);

/// `BTFS_PORT_MAPPING_PCP=0` maps by NAT-PMP without trying PCP first (a test and
/// diagnostic knob; see the module doc).
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

/// Ctrl-C/SIGTERM as a flag that turns true on the first. The handlers are installed
/// here, at once (not at a first poll), so a signal while the mappings settle is caught
/// and the mappings are removed.
pub fn signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let _ = tx.send(true);
            });
            return rx;
        }
    }
    tokio::spawn(async move {
        super::wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// `serve`'s wait for the first answers (at most [`SETTLE`]); shows the state. Returns
/// the TCP port's external address when it is global (a private one, as behind a double
/// NAT, is not what peers out there can reach), `Err(())` when a signal came first.
pub async fn settle(
    mapper: Option<&PortMapper>,
    port: u16,
    signal: &mut watch::Receiver<bool>,
    enc: Encoding,
) -> Result<Option<SocketAddr>, ()> {
    let Some(m) = mapper else { return Ok(None) };
    let s = tokio::select! {
        s = m.settled(SETTLE) => s,
        _ = signal.wait_for(|s| *s) => return Err(()),
    };
    show(&s, enc);
    Ok(s.public_addr(Protocol::Tcp, port))
}

/// Removes the mappings (bounded by [`STOP`]) and shows the last state.
pub async fn finish(mapper: Option<PortMapper>, enc: Encoding) {
    if let Some(m) = mapper {
        show(&m.stop(STOP).await, enc);
    }
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
    // The download ends on a stop or when the engine's stats end; the wait for the
    // first answers ends then too.
    let ended = async {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = async { while stats.changed().await.is_ok() {} } => {}
        }
    };
    tokio::pin!(ended);
    let first = tokio::select! {
        s = mapper.settled(SETTLE) => Some(s),
        _ = &mut ended => None,
    };
    if let Some(first) = first {
        show(&first, enc);
        let follower = tokio::spawn(follow(mapper.status(), enc));
        ended.await;
        follower.abort();
    }
    show(&mapper.stop(STOP).await, enc);
}

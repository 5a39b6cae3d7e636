//! One listening port for many torrents: the [`Router`] accepts connections, reads the
//! peer's handshake and hands the connection to the engine of the torrent it names
//! (through [`crate::engine::Incoming`]); connections for unknown torrents are closed.

use crate::engine::Incoming;
use crate::wire::Handshake;
use crate::InfoHash;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Route = mpsc::Sender<(TcpStream, SocketAddr, Handshake)>;

/// Connections waiting for their torrent's engine, per torrent.
const QUEUE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is being read at once; more wait in the kernel's backlog.
const PENDING: usize = 256;

pub struct Router {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<InfoHash, Route>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Router {
    /// Listens on `ip:port`, or on the next free port of the `tries` after it; says
    /// which through [`Router::local_addr`].
    pub async fn bind(ip: IpAddr, port: u16, tries: u16) -> io::Result<Router> {
        let mut last = None;
        for p in port..=port.saturating_add(tries) {
            match TcpListener::bind(SocketAddr::new(ip, p)).await {
                Ok(l) => return Router::serve(l),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port to listen on")))
    }

    fn serve(listener: TcpListener) -> io::Result<Router> {
        let addr = listener.local_addr()?;
        let routes: Arc<Mutex<HashMap<InfoHash, Route>>> = Arc::default();
        let r = routes.clone();
        let pending = Arc::new(tokio::sync::Semaphore::new(PENDING));
        let accept = tokio::spawn(async move {
            loop {
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                let Ok((mut sock, peer)) = listener.accept().await else {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let routes = r.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let hs =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Handshake::read(&mut sock))
                            .await
                        {
                            Ok(Ok(hs)) => hs,
                            _ => return,
                        };
                    let route = routes.lock().expect("routes").get(&hs.info_hash).cloned();
                    if let Some(route) = route {
                        let _ = route.try_send((sock, peer, hs));
                    }
                });
            }
        });
        Ok(Router {
            addr,
            routes,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Routes connections for `info_hash` to the returned [`Incoming`].
    pub fn register(&self, info_hash: InfoHash) -> Incoming {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.routes.lock().expect("routes").insert(info_hash, tx);
        Incoming {
            port: self.addr.port(),
            connections: rx,
        }
    }

    pub fn unregister(&self, info_hash: &InfoHash) {
        self.routes.lock().expect("routes").remove(info_hash);
    }
}

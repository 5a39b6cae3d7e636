//! Serving an axum router on a TCP listener with limits, for the gateway and the API.
//!
//! One local program must not be able to exhaust the daemon's descriptors or memory by
//! opening connections and saying little or nothing, so each listener has:
//!
//! - a cap on open connections ([`Limits::max_connections`]): at the cap the listener
//!   stops accepting, and new connections wait in the kernel's backlog (as Go's
//!   `netutil.LimitListener` makes them wait) until one closes;
//! - a header-read timeout ([`Limits::header_read_timeout`], hyper's): a request head
//!   must have fully arrived that long after the connection opened or the previous
//!   response ended, else the connection is closed (so an idle keep-alive connection is
//!   closed then too);
//! - an idle timeout ([`Limits::idle_timeout`]), a second guard kept by this module: a
//!   connection with no request in flight for that long is closed, whatever state hyper
//!   is in. A request is in flight from its head until its response's last byte is handed
//!   to the socket, so long streams (job events, server-sent events, a big `cat`) are
//!   never cut, however quiet they are.
//!
//! Shutdown stops accepting, asks every connection to finish its response and close,
//! and returns once all have.
//!
//! Locks: one small mutex per connection (when it last went idle), never held across an
//! await.

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most connections one listener keeps open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest wait for a request's head (from the connection's start, or from the end of
/// the previous response).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time a connection stays open with no request in flight.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish their responses.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(cap));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                // Out of descriptors or a connection reset before it was accepted: a
                // moment, then on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn = Connection {
            limits,
            activity: Arc::default(),
            stop: stop_rx.clone(),
            _slot: slot,
        };
        tokio::spawn(conn.run(stream, router.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it has ended.
    let _ = slots
        .acquire_many(u32::try_from(cap).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Requests in flight on one connection, and since when none has been.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `idle`, if nothing is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since + idle)
    }
}

/// A request in flight; dropped with its response's body.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// One accepted connection and its slot of the listener.
struct Connection {
    limits: Limits,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, router: axum::Router) {
        let inner = TowerToHyperService::new(router);
        let activity = self.activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = activity.enter();
            let call = hyper::service::Service::call(&inner, req);
            async move {
                let resp: Response<Body> = call.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            let wake = self
                .activity
                .idle_deadline(self.limits.idle_timeout)
                .unwrap_or_else(|| Instant::now() + self.limits.idle_timeout);
            tokio::select! {
                _ = conn.as_mut() => return,
                r = self.stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if r.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let idle = self.activity.idle_deadline(self.limits.idle_timeout);
                    if idle.is_some_and(|d| d <= Instant::now()) {
                        // Nothing in flight: dropping the connection closes it.
                        return;
                    }
                }
            }
        }
    }
}

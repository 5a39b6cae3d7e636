//! Serving an axum router on a TCP listener with limits, for the gateway and the API.
//!
//! One local program must not be able to exhaust the daemon's descriptors or memory by
//! opening connections and saying little or nothing, or by reading nothing, so each
//! listener has:
//!
//! - a cap on open connections ([`Limits::max_connections`]): at the cap the listener
//!   stops accepting, and new connections wait in the kernel's backlog (as Go's
//!   `netutil.LimitListener` makes them wait) until one closes. The daemon sizes it from
//!   its descriptor limit with [`connections_for`], so the caps of both listeners, with
//!   what each connection may open besides its socket, fit under `RLIMIT_NOFILE`;
//! - a header-read timeout ([`Limits::header_read_timeout`], hyper's): a request head
//!   must have fully arrived that long after the connection opened or the previous
//!   response ended, else the connection is closed (so an idle keep-alive connection is
//!   closed then too);
//! - an idle timeout ([`Limits::idle_timeout`]), a second guard kept by this module: a
//!   connection with no request in flight for that long is closed, whatever state hyper
//!   is in. A request is in flight from its head until its response's last byte is handed
//!   to the socket, so long streams (job events, server-sent events, a big `cat`) are
//!   never cut, however quiet they are;
//! - a write-stall timeout ([`Limits::write_stall_timeout`]): a connection whose socket
//!   has made no room for a write of a response for that long (the client stopped
//!   reading, and the kernel's buffers are full) is closed, as nginx's `send_timeout`
//!   does. Linux reports a full socket writable again only once about a third of its
//!   send buffer is free, so a client that reads, but only a trickle, is cut too. A quiet
//!   stream has nothing waiting to be written, so it is never cut by this either;
//! - at most [`MAX_BUF_SIZE`] bytes buffered per connection by hyper, and a request head
//!   (request line with its query, and headers) of at most as much: a longer one is
//!   answered 431.
//!
//! Shutdown stops accepting, asks every connection to finish its response and close,
//! and returns once all have (a client that stopped reading is cut by the write-stall
//! timeout, so shutdown never waits on one forever).
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

/// Most connections one listener keeps open at once (fewer when the descriptor limit is
/// low, see [`connections_for`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// Descriptors the daemon keeps for everything but connections: its repo and block files,
/// redb, the jobs' processes (a pidfd and two pipes each), the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// What one connection may hold at once, counted for both listeners together: an API
/// connection its socket and a command's process (three pipes and a pidfd), a gateway
/// connection its socket and a block file. Seven, rounded up.
pub const DESCRIPTORS_PER_CONNECTION_PAIR: u64 = 8;
/// Longest time a response's write may wait for room in the socket.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes hyper buffers for one connection, and the longest request head.
pub const MAX_BUF_SIZE: usize = 64 << 10;
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
    pub write_stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// The cap on connections of each of the daemon's two listeners when the process may
/// open `descriptors` files (its soft `RLIMIT_NOFILE`): [`RESERVED_DESCRIPTORS`] are
/// kept for the rest of the daemon, and the two listeners at their caps, each connection
/// with what it may open besides ([`DESCRIPTORS_PER_CONNECTION_PAIR`] for one of each),
/// fit in what is left. At most [`MAX_CONNECTIONS`], at least 1.
pub fn connections_for(descriptors: u64) -> usize {
    let fit = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION_PAIR;
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
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
            .max_buf_size(MAX_BUF_SIZE)
            .max_header_size(MAX_BUF_SIZE)
            .keep_alive(true);
        let io = StallGuard::new(stream, self.limits.write_stall_timeout);
        let conn = builder.serve_connection(TokioIo::new(io), service);
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

/// A connection's socket that fails a write which has waited longer than its limit for
/// room in the socket (hyper then closes the connection), as nginx's `send_timeout`.
/// The timer re-arms only when a write goes through, which Linux allows once about a
/// third of the send buffer is free, not at each byte the client takes. Only writes are
/// timed: a response with nothing to send has no write waiting.
struct StallGuard {
    io: TcpStream,
    limit: Duration,
    /// Armed when a write first has to wait; dropped once one goes through.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(io: TcpStream, limit: Duration) -> Self {
        StallGuard {
            io,
            limit,
            timer: None,
        }
    }

    /// After a write of the socket: a write that went through disarms the timer; one
    /// that has to wait arms it, and fails once it has waited for the whole limit.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no byte of the response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit() {
        assert_eq!(connections_for(1 << 20), MAX_CONNECTIONS);
        assert_eq!(connections_for(1024), 96);
        // Both listeners full, with what their connections open, stay under the limit.
        for limit in [300, 512, 1024, 4096, 8448] {
            let cap = connections_for(limit) as u64;
            assert!(
                RESERVED_DESCRIPTORS + cap * 7 <= limit,
                "{limit}: cap {cap}"
            );
        }
        assert_eq!(connections_for(0), 1);
        assert_eq!(connections_for(100), 1);
    }

    /// A connection and its guarded server end.
    async fn pair(limit: Duration) -> (TcpStream, StallGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, StallGuard::new(server, limit))
    }

    /// Writes the client never takes fail after the limit; a client that reads gets
    /// everything, however long the whole takes.
    #[tokio::test]
    async fn a_write_the_client_never_takes_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let chunk = vec![7u8; 1 << 16];
        let (_client, mut guard) = pair(Duration::from_millis(300)).await;
        let stalled = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = guard.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the write was not cut within 30 s");
        assert_eq!(stalled.kind(), std::io::ErrorKind::TimedOut);

        let (mut reader, mut guard) = pair(Duration::from_millis(300)).await;
        let total = 64usize << 20;
        let writer = tokio::spawn(async move {
            for _ in 0..total / chunk.len() {
                guard.write_all(&chunk).await?;
            }
            Ok::<(), std::io::Error>(())
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "cut after {got} bytes");
            got += n;
        }
        writer.await.unwrap().unwrap();
    }
}

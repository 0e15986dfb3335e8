//! Serving HTTP connections: the accept loop, the cap on open connections, the timeouts that close
//! silent and idle ones, and graceful shutdown.
//!
//! `axum::serve` has no timeout and no cap, so a thousand silent sockets used to exhaust the
//! process's descriptors. Here every connection holds a permit of [`Connections`] (and, when a
//! per-address cap is set, one of its address's) for as long as its socket lives, upgraded ones
//! included; past the cap a new connection is answered `503` with `Retry-After` in the API's
//! JSON shape and closed. A watchdog per connection closes it when a request head takes longer
//! than `header_read_timeout` to arrive, or when no request is in flight and no byte has moved
//! for `idle_timeout`. A request body that pauses longer than `body_read_timeout` fails its
//! request (see the router's middleware).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::state::AppState;

/// How connections are limited; see `docs/configuration.md` (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// 0: no cap per address.
    pub max_per_address: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The largest request head hyper itself reads; past it hyper answers `431` on its own.
    pub max_head_bytes: usize,
    /// CORS allows any origin: the `503` of a shed connection, written before any request is
    /// read, says so too, so that a browser can read it (with listed origins it can not know
    /// the request's).
    pub cors_any_origin: bool,
}

/// Connections being refused at once, each for at most [`SHED_TIMEOUT`]: past this, a refused
/// connection is closed without an answer.
const MAX_SHEDDING: usize = 64;
const SHED_TIMEOUT: Duration = Duration::from_secs(1);

/// The open connections: a permit each, and a count per address when that is capped.
struct Connections {
    limits: ConnectionLimits,
    open: Arc<Semaphore>,
    shedding: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// What a connection holds while its socket lives: given back when the socket is dropped, also
/// after an upgrade took it over.
struct Held {
    _permit: OwnedSemaphorePermit,
    address: Option<(Arc<Connections>, IpAddr)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((connections, ip)) = self.address.take() {
            let mut counts = connections
                .per_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl Connections {
    fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: Arc::new(Semaphore::new(limits.max_connections)),
            shedding: Arc::new(Semaphore::new(MAX_SHEDDING)),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `ip`, if there is one.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let permit = Arc::clone(&self.open).try_acquire_owned().ok()?;
        if self.limits.max_per_address == 0 {
            return Some(Held {
                _permit: permit,
                address: None,
            });
        }
        // One client behind IPv4 is one address, whether it arrived as v4 or v4-mapped v6; over
        // IPv6 it is its /64, whose addresses are all its own to use.
        let ip = match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::from(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limits.max_per_address {
            return None;
        }
        *count += 1;
        Some(Held {
            _permit: permit,
            address: Some((Arc::clone(self), ip)),
        })
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then stops accepting, asks every
/// connection to finish its request in flight and close, and waits for them up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: AppState,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let connections = Connections::new(limits);
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: the cap is meant to prevent it; back off
                // rather than spin.
                tracing::warn!(error = %e, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match connections.admit(peer.ip()) {
            Some(held) => {
                let app = app.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(connection(stream, peer, held, app, limits, shutdown));
            }
            None => {
                if let Ok(permit) = Arc::clone(&connections.shedding).try_acquire_owned() {
                    let id = state.new_request_id();
                    let cors = limits.cors_any_origin;
                    tracker.spawn(async move {
                        shed(stream, &id, cors).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    state.stop_accepting();
    tracing::info!(
        grace_secs = grace.as_secs(),
        open = limits.max_connections - connections.open.available_permits(),
        "shutting down: draining in-flight requests"
    );
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period were dropped");
    }
}

/// Answers a connection over the cap with `503` and closes it.
async fn shed(mut stream: TcpStream, request_id: &str, cors_any_origin: bool) {
    let body = serde_json::json!({
        "error": {
            "code": crate::error::Code::ServerBusy.as_str(),
            "message": "the server is at its connection limit; try again shortly",
            "request_id": request_id,
        }
    })
    .to_string();
    let cors = if cors_any_origin {
        "access-control-allow-origin: *\r\naccess-control-expose-headers: x-request-id,retry-after\r\n"
    } else {
        ""
    };
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         x-request-id: {request_id}\r\n{cors}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(SHED_TIMEOUT, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one connection until it closes, times out, or shutdown asks it to finish.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    held: Held,
    app: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
        _held: held,
    });
    let in_flight = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let started = InFlight::start(Arc::clone(&in_flight));
        let answer = app.clone().oneshot(request.map(axum::body::Body::new));
        async move {
            let response = answer.await;
            drop(started);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()), if !draining => {
                if Instant::now() >= activity.deadline(&limits) {
                    // Silent, half-sent or idle past its time: dropped, which closes the socket.
                    return;
                }
            }
            () = activity.head_began.notified() => {}
            () = crate::stopped(&mut shutdown), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection's watchdog reads: bytes moving and requests in flight. Times are
/// milliseconds since the connection's start.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection started) or a byte last moved.
    last_ms: AtomicU64,
    /// When the first byte of a request head came, while none is in flight; `u64::MAX` if none.
    /// A new connection starts as if its head had begun: its first request is due at once.
    head_started_ms: AtomicU64,
    /// Wakes the watchdog when a head begins, which brings its deadline closer.
    head_began: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            head_began: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn moved(&self, read: bool) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if read
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_started_ms
                .compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.head_began.notify_one();
        }
    }

    /// When the connection is closed unless something happens first. A request in flight
    /// holds it open (its body has a timeout of its own, its handler limits of their own).
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + limits.idle_timeout;
        }
        let at = |ms: u64| self.start + Duration::from_millis(ms);
        match self.head_started_ms.load(Ordering::Relaxed) {
            u64::MAX => at(self.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout,
            started => at(started) + limits.header_read_timeout,
        }
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_started_ms.store(u64::MAX, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = self.0.now_ms();
        self.0.last_ms.store(now, Ordering::Relaxed);
    }
}

/// A connection's socket, telling its [`Activity`] when bytes move, and holding its place among
/// the open connections for as long as it lives.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    _held: Held,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved(true);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The descriptors the process may hold: its soft limit, first raised to the hard limit (as Go
/// and many servers do at start), since the defaults of many systems are far below what a
/// server needs.
pub fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one plain struct owned by this frame.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_per_address_counts_an_ipv6_64_as_one_address() {
        let connections = Connections::new(ConnectionLimits {
            max_connections: 100,
            max_per_address: 2,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_head_bytes: 1024,
            cors_any_origin: true,
        });
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let a = connections.admit(ip("2001:db8:1:2::1")).unwrap();
        let b = connections.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(connections.admit(ip("2001:db8:1:2::77")).is_none());
        let other = connections.admit(ip("2001:db8:1:3::1"));
        assert!(other.is_some(), "another /64 is another address");
        let v4 = connections.admit(ip("203.0.113.1")).unwrap();
        let mapped = connections.admit(ip("::ffff:203.0.113.1")).unwrap();
        assert!(connections.admit(ip("203.0.113.1")).is_none());
        drop((a, v4));
        assert!(connections.admit(ip("2001:db8:1:2::1")).is_some());
        assert!(connections.admit(ip("203.0.113.1")).is_some());
        drop((b, mapped, other));
    }
}

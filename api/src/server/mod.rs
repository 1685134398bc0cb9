//! The node's HTTP(S) server: its own accept loop over hyper, so that every connection a
//! client can hold is bounded (the public API and `/raft` RPC share one listener, and a
//! flood of slow clients must not starve the peers' RPC).
//!
//! * **Open connections**: at most `max_connections`. At the limit the oldest connection
//!   that is not serving a request and is not a peer's is evicted for the newcomer
//!   ([`slots`]); when every slot serves a request or a peer, the newcomer is closed at
//!   once. The loop never stops accepting, so the backlog never fills.
//! * **Header read time**: a new connection must complete its TLS handshake and first
//!   request head within `header_read_timeout`; a later request head, once its first byte
//!   arrived, too. Otherwise it is closed.
//! * **Idle time**: a keep-alive connection with no request for `idle_timeout` is closed.
//! * **Body read time**: a request body (outside `/raft`, whose sender proved the cluster
//!   secret before any byte is read) must arrive within `body_read_timeout` of its head;
//!   `read_body` answers 408 otherwise, and the connection closes.
//! * **TLS** ([`tls`]): with `[tls]` only HTTPS is served. With `peer_client_auth`,
//!   `/raft/*` and forwarded requests need a verified client certificate (401 otherwise);
//!   a presented certificate that does not chain to the CA fails the handshake.
//!
//! Only HTTP/1.1 is served. Graceful shutdown: the listener closes, idle connections close,
//! requests in progress finish.

mod slots;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::forward::FORWARDED_HEADER;
use slots::{Admission, ConnId, Slots};
pub use tls::{TlsError, TlsFiles, TlsServer};

/// Bounds on the connections of one listener (`[http]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`serve`] serves with.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub limits: HttpLimits,
    /// `None`: plain HTTP.
    pub tls: Option<TlsServer>,
    /// A connection that carries it is a peer's (or an operator's): never evicted.
    pub secret: Arc<str>,
}

/// Set on a request that came over a connection with a verified client certificate.
#[derive(Clone, Copy, Debug)]
pub struct PeerCertificate;

/// Whether a request must come with a verified client certificate when `peer_client_auth`
/// is on: Raft RPC, and requests another node forwarded.
pub fn needs_peer_certificate(path: &str, headers: &HeaderMap) -> bool {
    path.starts_with("/raft/") || headers.contains_key(FORWARDED_HEADER)
}

/// Whether a request body gets the body read deadline: every one but Raft RPC's.
fn body_has_deadline(path: &str) -> bool {
    !path.starts_with("/raft/")
}

/// Connections the kernel completes and queues for `accept` (it caps this at
/// `net.core.somaxconn`). Deep enough that a burst of a few thousand connections is queued
/// and then accepted (and bounded by the slots) rather than left half-open by the kernel,
/// out of the server's reach.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `listen` (`host:port`) with [`LISTEN_BACKLOG`].
pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{listen} resolves to no address"),
        )
    }))
}

/// Serves `router` on `listener` until `shutdown` completes, then drains: stops accepting,
/// closes idle connections and waits for the requests in progress.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        slots: Mutex::new(Slots::new(
            options.limits.max_connections,
            slots::EVICTION_GRACE,
        )),
        closed: Notify::new(),
        options,
        router,
    });
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut next_id: ConnId = 0;
    let mut refused = Throttled::default();
    let mut accept_errors = Throttled::default();
    tokio::pin!(shutdown);
    loop {
        // Evicted connections give their descriptors back when their task runs: accept no
        // more until few are pending, so descriptors stay within the limit plus a few.
        let closing = shared.lock_slots().closing() >= MAX_CLOSING;
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shared.closed.notified(), if closing => {}
            accepted = listener.accept(), if !closing => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors (or a transient error): wait a little
                        // rather than spin; the slots bound makes this rare.
                        if accept_errors.due() {
                            tracing::warn!("accepting a connection: {e} ({} times since the last report)", accept_errors.take());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let id = next_id;
                next_id += 1;
                let conn = Arc::new(Conn::new(id, Instant::now()));
                let admission = shared.lock_slots().admit(id, conn.accepted.into_std(), conn.clone());
                match admission {
                    Admission::Admitted => {}
                    Admission::Evicted(victim) => victim.evict(),
                    Admission::Refused => {
                        if refused.due() {
                            tracing::warn!(
                                max_connections = shared.options.limits.max_connections,
                                "connection limit reached with every connection serving a request or a peer: \
                                 closing new connections ({} since the last report)", refused.take()
                            );
                        }
                        drop(stream);
                        continue;
                    }
                }
                connections.spawn(serve_connection(shared.clone(), conn, stream, remote, stopped.clone()));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Evicted connections not yet closed beyond which the loop waits before accepting more.
const MAX_CLOSING: usize = 32;

struct Shared {
    slots: Mutex<Slots<Arc<Conn>>>,
    /// An evicted connection was dropped.
    closed: Notify,
    options: ServeOptions,
    router: Router,
}

impl Shared {
    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots<Arc<Conn>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts an event and says when it is time to log it again (at most every 10 s).
#[derive(Default)]
struct Throttled {
    count: u64,
    last: Option<Instant>,
}

impl Throttled {
    fn due(&mut self) -> bool {
        self.count += 1;
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            self.last = Some(Instant::now());
        }
        due
    }

    fn take(&mut self) -> u64 {
        std::mem::take(&mut self.count)
    }
}

/// Where a connection stands, for its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No byte of a request since `since` (its accept, or the end of its last request);
    /// `fresh`: it has carried no request yet.
    Waiting { since: Instant, fresh: bool },
    /// Part of a request head (or, on a fresh connection, of the TLS handshake) has arrived:
    /// the head is due `header_read_timeout` after `since`.
    Head { since: Instant },
    /// This many requests in progress.
    Busy(u32),
}

/// When a connection in `phase` is closed unless something happens first.
fn deadline(phase: Phase, limits: &HttpLimits) -> Option<Instant> {
    match phase {
        Phase::Waiting { since, fresh: true } | Phase::Head { since } => {
            Some(since + limits.header_read_timeout)
        }
        Phase::Waiting {
            since,
            fresh: false,
        } => Some(since + limits.idle_timeout),
        Phase::Busy(_) => None,
    }
}

/// One connection's shared state: its phase, and how to tell its task to close.
struct Conn {
    id: ConnId,
    accepted: Instant,
    evicted: Notify,
    /// The phase changed so that the deadline may be sooner.
    changed: Notify,
    /// In [`Phase::Waiting`]: the next byte read starts a head.
    waiting: AtomicBool,
    trusted: AtomicBool,
    was_evicted: AtomicBool,
    phase: Mutex<Phase>,
}

impl Conn {
    fn new(id: ConnId, accepted: Instant) -> Conn {
        Conn {
            id,
            accepted,
            evicted: Notify::new(),
            changed: Notify::new(),
            waiting: AtomicBool::new(true),
            trusted: AtomicBool::new(false),
            was_evicted: AtomicBool::new(false),
            phase: Mutex::new(Phase::Waiting {
                since: accepted,
                fresh: true,
            }),
        }
    }

    /// Tells its task to close it (it gave its slot to a newcomer).
    fn evict(&self) {
        self.was_evicted.store(true, Ordering::Release);
        self.evicted.notify_one();
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        deadline(*self.phase(), limits)
    }

    /// Bytes arrived.
    fn on_read(&self) {
        if !self.waiting.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut phase = self.phase();
        if let Phase::Waiting { since, fresh } = *phase {
            // A fresh connection's head was due from its accept on.
            let since = if fresh { since } else { Instant::now() };
            *phase = Phase::Head { since };
        }
        drop(phase);
        self.changed.notify_one();
    }

    fn trust(&self, shared: &Shared) {
        if !self.trusted.swap(true, Ordering::AcqRel) {
            shared.lock_slots().trust(self.id);
        }
    }
}

/// A request in progress on a connection, from its head to its answer's head.
struct Busy {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Busy {
    fn begin(shared: &Arc<Shared>, conn: &Arc<Conn>) -> Busy {
        conn.waiting.store(false, Ordering::Release);
        {
            let mut phase = conn.phase();
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                _ => Phase::Busy(1),
            };
        }
        shared.lock_slots().begin_request(conn.id);
        Busy {
            shared: shared.clone(),
            conn: conn.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = Instant::now();
        {
            let mut phase = self.conn.phase();
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => {
                    self.conn.waiting.store(true, Ordering::Release);
                    Phase::Waiting {
                        since: now,
                        fresh: false,
                    }
                }
            };
        }
        self.shared
            .lock_slots()
            .end_request(self.conn.id, now.into_std());
        self.conn.changed.notify_one();
    }
}

/// Gives the connection's slot back however its task ends.
struct SlotGuard {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let evicted = self.conn.was_evicted.load(Ordering::Acquire);
        self.shared.lock_slots().remove(self.conn.id, evicted);
        if evicted {
            self.shared.closed.notify_one();
        }
    }
}

/// Why a connection's task stopped waiting.
enum Wake<T> {
    Done(T),
    Close(&'static str),
    Again,
    Shutdown,
}

/// Waits for `fut` unless the connection is evicted, passes its deadline or shutdown
/// begins; `Again` when its phase changed (the caller re-arms the deadline).
async fn watch<T>(
    conn: &Conn,
    limits: &HttpLimits,
    fut: impl Future<Output = T>,
    stopped: &mut watch::Receiver<bool>,
    shutting_down: bool,
) -> Wake<T> {
    let deadline = conn.deadline(limits);
    tokio::select! {
        out = fut => Wake::Done(out),
        _ = conn.evicted.notified() => Wake::Close("evicted for a new connection at the connection limit"),
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => {
            if conn.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                Wake::Close("timed out (header read or idle)")
            } else {
                Wake::Again
            }
        }
        _ = conn.changed.notified() => Wake::Again,
        _ = stopped.wait_for(|s| *s), if !shutting_down => Wake::Shutdown,
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    stream: TcpStream,
    remote: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let _slot = SlotGuard {
        shared: shared.clone(),
        conn: conn.clone(),
    };
    let _ = stream.set_nodelay(true);
    let io = Tracked {
        inner: stream,
        conn: conn.clone(),
    };
    let limits = shared.options.limits.clone();
    match shared.options.tls.clone() {
        None => drive(shared, conn, TokioIo::new(io), remote, false, stopped).await,
        Some(tls) => {
            let handshake = tls.acceptor.accept(io);
            tokio::pin!(handshake);
            let stream = loop {
                match watch(&conn, &limits, &mut handshake, &mut stopped, false).await {
                    Wake::Done(Ok(s)) => break s,
                    Wake::Done(Err(e)) => {
                        tracing::debug!(%remote, "TLS handshake failed: {e}");
                        return;
                    }
                    Wake::Close(why) => {
                        tracing::debug!(%remote, "closing connection during its TLS handshake: {why}");
                        return;
                    }
                    Wake::Shutdown => return,
                    Wake::Again => {}
                }
            };
            let verified = stream.get_ref().1.peer_certificates().is_some();
            if verified {
                conn.trust(&shared);
            }
            drive(
                shared,
                conn,
                TokioIo::new(stream),
                remote,
                verified,
                stopped,
            )
            .await
        }
    }
}

/// Serves HTTP/1.1 on one (plain or TLS) connection until it ends or is closed.
async fn drive<IO>(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    io: TokioIo<IO>,
    remote: SocketAddr,
    peer_certificate: bool,
    mut stopped: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.options.limits.clone();
    let service = {
        let shared = shared.clone();
        let conn = conn.clone();
        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move {
                let _busy = Busy::begin(&shared, &conn);
                Ok::<_, Infallible>(handle(&shared, &conn, remote, peer_certificate, request).await)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Header and idle deadlines are kept here (hyper's header timeout would also cut idle
    // keep-alive connections at the header deadline).
    builder.keep_alive(true).header_read_timeout(None);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut shutting_down = false;
    loop {
        match watch(&conn, &limits, served.as_mut(), &mut stopped, shutting_down).await {
            Wake::Done(Ok(())) => return,
            Wake::Done(Err(e)) => {
                tracing::debug!(%remote, "connection ended: {e}");
                return;
            }
            Wake::Close(why) => {
                tracing::debug!(%remote, "closing connection: {why}");
                return;
            }
            Wake::Shutdown => {
                served.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            Wake::Again => {}
        }
    }
}

/// One request: the peer-certificate rule, the body deadline, then the router.
async fn handle(
    shared: &Shared,
    conn: &Conn,
    remote: SocketAddr,
    peer_certificate: bool,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let peer_client_auth = shared
        .options
        .tls
        .as_ref()
        .is_some_and(|t| t.peer_client_auth);
    if peer_client_auth && !peer_certificate && needs_peer_certificate(&path, request.headers()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "peer_certificate_required",
            "Raft RPC and forwarded requests need a client certificate from the cluster's CA \
             (tls.peer_client_auth is on)",
        )
        .into_response();
    }
    let given = request
        .headers()
        .get(tally_raft::rpc::SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !given.is_empty() && tally_raft::rpc::secret_matches(&shared.options.secret, given) {
        conn.trust(shared);
    }
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(axum::extract::ConnectInfo(remote));
    if peer_certificate {
        parts.extensions.insert(PeerCertificate);
    }
    let body = if body_has_deadline(&path) {
        let deadline = Instant::now() + shared.options.limits.body_read_timeout;
        Body::new(DeadlineBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            limit: shared.options.limits.body_read_timeout,
        })
    } else {
        Body::new(body)
    };
    let mut router = shared.router.clone();
    let response =
        match tower_service::Service::call(&mut router, Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    let mut response = response;
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body was never read: the connection cannot carry another request.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

/// The body did not arrive within `[http] body_read_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(pub Duration);

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's byte stream, telling its [`Conn`] when bytes arrive.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(out, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        out
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = HttpLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        };
        let t = Instant::now();
        let fresh = Phase::Waiting {
            since: t,
            fresh: true,
        };
        assert_eq!(deadline(fresh, &limits), Some(t + Duration::from_secs(5)));
        let idle = Phase::Waiting {
            since: t,
            fresh: false,
        };
        assert_eq!(deadline(idle, &limits), Some(t + Duration::from_secs(60)));
        let head = Phase::Head { since: t };
        assert_eq!(deadline(head, &limits), Some(t + Duration::from_secs(5)));
        assert_eq!(deadline(Phase::Busy(1), &limits), None);
    }

    #[test]
    fn a_connection_moves_through_its_phases() {
        let t = Instant::now();
        let conn = Conn::new(1, t);
        // A fresh connection's first bytes keep the accept time as the head's start.
        conn.on_read();
        assert_eq!(*conn.phase(), Phase::Head { since: t });
        conn.on_read();
        assert_eq!(*conn.phase(), Phase::Head { since: t });
    }

    #[test]
    fn peer_routes_need_the_certificate() {
        let mut h = HeaderMap::new();
        assert!(needs_peer_certificate("/raft/append", &h));
        assert!(needs_peer_certificate("/raft/vote", &h));
        assert!(!needs_peer_certificate("/v1/events", &h));
        assert!(!needs_peer_certificate("/raftx", &h));
        h.insert(FORWARDED_HEADER, "2".parse().unwrap());
        assert!(needs_peer_certificate("/v1/events", &h));
        assert!(body_has_deadline("/v1/events"));
        assert!(!body_has_deadline("/raft/snapshot"));
    }
}

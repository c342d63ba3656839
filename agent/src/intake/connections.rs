//! The connections a listener holds and when each must go: the connection cap, with eviction
//! (idle connections first, then those stalled on their client, longest first) instead of a
//! blocked accept, and the deadlines every connection lives by (first bytes, idle time, body
//! reads). `serve.rs` (HTTP, HTTPS, gRPC, Unix) and `forward.rs` apply them.
//!
//! Invariant: a connection whose request Hooker is working on is never evicted; only a client
//! that sends nothing (idle) or keeps Hooker waiting for bytes (stalled) makes room.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::metrics::{ClosedLabels, ListenerLabels, Metrics};

/// Bytes after which a connection is past its opening: the HTTP/2 client preface is 24 bytes,
/// and an HTTP/1.1 request line this long is in hyper's header timer.
const OPENING_BYTES: u64 = 24;

/// How often the "connection cap is full" warning may be logged per listener.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The bounds and deadlines of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once; past it the longest-idle one is evicted, or the new one refused.
    pub max_connections: usize,
    /// First bytes of a connection (and a TLS handshake, and HTTP/1.1 request headers).
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a body (or Forward message) that has started.
    pub read_timeout: Duration,
    /// Whole request body (a gRPC message, a Forward message), from its first byte.
    pub body_timeout: Duration,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (an unanswered ping closes the connection); `None` = off.
    pub h2_keepalive: Option<Duration>,
}

impl Limits {
    /// The probes listener: a small cap and short deadlines (its requests are tiny).
    pub const PROBES: Limits = Limits {
        max_connections: 64,
        header_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        h2_keepalive: Some(Duration::from_secs(10)),
    };
}

/// Why a connection was closed (the `reason` label of `hooker_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No request in progress for `idle_timeout`.
    Idle,
    /// A deadline for first bytes, headers or a body passed.
    Slow,
    /// Made room for a new connection while the cap was full.
    Evicted,
    /// The cap was full and no connection could be evicted.
    Refused,
    /// An HTTP/2 keep-alive ping was not answered.
    KeepAlive,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Slow => "slow",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::KeepAlive => "keepalive",
        }
    }
}

/// The connections of one listener.
pub struct Connections {
    listener: &'static str,
    limits: Limits,
    epoch: Instant,
    registry: Mutex<Registry>,
    open: Gauge,
    /// `Closed::Slow`, cached: every request body carries it.
    slow: Counter,
    metrics: Metrics,
}

struct Registry {
    next_id: u64,
    held: HashMap<u64, Arc<ConnState>>,
    /// When the "cap full" warning was last logged (ms since `epoch`).
    warned_ms: Option<u64>,
}

/// What the accept loop, the connection's task and its requests share about one connection.
pub struct ConnState {
    epoch: Instant,
    /// Requests open (from their headers until their response is sent).
    requests: AtomicUsize,
    /// Of those, requests waiting for their client to send body bytes.
    waiting: AtomicUsize,
    /// Milliseconds since `epoch` of the last sign of progress: accepted, a request started or
    /// ended, body bytes arrived.
    quiet_since: AtomicU64,
    /// Past its opening bytes (or a first request): idle rules apply instead of the header one.
    opened: AtomicBool,
    evicted: Notify,
}

/// A connection's place under the cap; dropping it frees the place.
pub struct Slot {
    id: u64,
    connections: Arc<Connections>,
    state: Arc<ConnState>,
}

/// What the connection's task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Close(Closed),
    /// Look again at this instant.
    CheckAt(Instant),
}

/// Counts an open request until dropped (when its response body is done).
pub struct RequestGuard(Arc<ConnState>);

/// Marks a request as waiting for its client until dropped.
pub struct WaitingGuard(Arc<ConnState>);

// === impl Connections ===

impl Connections {
    pub fn new(listener: &'static str, limits: Limits, metrics: &Metrics) -> Arc<Connections> {
        let open = metrics
            .connections
            .get_or_create(&ListenerLabels { listener })
            .clone();
        Arc::new(Connections {
            listener,
            limits: Limits {
                max_connections: limits.max_connections.max(1),
                ..limits
            },
            epoch: Instant::now(),
            registry: Mutex::new(Registry {
                next_id: 0,
                held: HashMap::new(),
                warned_ms: None,
            }),
            open,
            slow: metrics
                .connections_closed
                .get_or_create(&ClosedLabels {
                    listener,
                    reason: Closed::Slow.as_str(),
                })
                .clone(),
            metrics: metrics.clone(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// Counts a closed connection (or, for `Slow` on HTTP/2, a stream reset for a slow body).
    pub fn count(&self, reason: Closed) {
        self.metrics
            .connections_closed
            .get_or_create(&ClosedLabels {
                listener: self.listener,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A place for a new connection: free, or made by evicting the longest-idle connection (else
    /// the one stalled longest on its client). `None` when every connection is busy: refuse it.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let now_ms = self.now_ms();
        let Ok(mut registry) = self.registry.lock() else {
            return None;
        };
        if registry.held.len() >= self.limits.max_connections {
            let victim = registry
                .held
                .iter()
                .filter_map(|(id, state)| state.eviction_rank().map(|rank| (rank, *id)))
                .min()
                .map(|(_, id)| id);
            match victim.and_then(|id| registry.held.remove(&id)) {
                Some(state) => {
                    state.evicted.notify_one();
                    self.count(Closed::Evicted);
                }
                None => {
                    let warn = registry.warned_ms.is_none_or(|at| {
                        now_ms.saturating_sub(at) >= FULL_LOG_EVERY.as_millis() as u64
                    });
                    if warn {
                        registry.warned_ms = Some(now_ms);
                        tracing::warn!(
                            listener = self.listener,
                            max_connections = self.limits.max_connections,
                            "Every connection is busy: refusing new ones (counted in hooker_connections_closed_total{{reason=\"refused\"}})."
                        );
                    }
                    drop(registry);
                    self.count(Closed::Refused);
                    return None;
                }
            }
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let state = Arc::new(ConnState {
            epoch: self.epoch,
            requests: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(now_ms),
            opened: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        registry.held.insert(id, state.clone());
        drop(registry);
        self.open.inc();
        Some(Slot {
            id,
            connections: self.clone(),
            state,
        })
    }

    /// A body with this connection's read deadlines, counting its timeouts.
    pub fn timed_body<B>(&self, state: &Arc<ConnState>, inner: B, grpc: bool) -> TimedBody<B> {
        let limits = &self.limits;
        TimedBody {
            inner,
            state: state.clone(),
            read_timeout: limits.read_timeout,
            body_timeout: limits.body_timeout,
            framing: if grpc {
                Framing::Grpc(GrpcFraming::Between)
            } else {
                Framing::Whole
            },
            message_deadline: if grpc {
                None
            } else {
                Some(later(Instant::now(), limits.body_timeout))
            },
            sleep: None,
            armed: false,
            waiting: None,
            slow: self.slow.clone(),
            failed: false,
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Connections held under the cap (evicted ones leave it at once).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.registry.lock().map(|r| r.held.len()).unwrap_or(0)
    }
}

// === impl Slot ===

impl Slot {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Resolves when this connection is evicted to make room for another.
    pub async fn evicted(&self) {
        self.state.evicted.notified().await;
    }

    /// What to do now: close for a reason, or look again later. For a connection whose bodies
    /// keep their own deadlines ([`TimedBody`]); Forward keeps its own.
    pub fn verdict(&self) -> Verdict {
        let limits = &self.connections.limits;
        let now = Instant::now();
        if self.state.requests.load(Ordering::Relaxed) > 0 {
            return Verdict::CheckAt(later(now, limits.idle_timeout));
        }
        let since = self.state.epoch + Duration::from_millis(self.state.quiet_since());
        let (timeout, reason) = if self.state.opened.load(Ordering::Relaxed) {
            (limits.idle_timeout, Closed::Idle)
        } else {
            (limits.header_timeout, Closed::Slow)
        };
        let deadline = later(since, timeout);
        if now >= deadline {
            Verdict::Close(reason)
        } else {
            Verdict::CheckAt(deadline)
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.connections.registry.lock() {
            registry.held.remove(&self.id);
        }
        self.connections.open.dec();
    }
}

// === impl ConnState ===

impl ConnState {
    /// Notes progress now (resets the idle clock and the eviction order).
    pub fn touch(&self) {
        self.quiet_since
            .store(millis(self.epoch.elapsed()), Ordering::Relaxed);
    }

    fn quiet_since(&self) -> u64 {
        self.quiet_since.load(Ordering::Relaxed)
    }

    /// The connection is past its opening bytes: idle rules apply from now on.
    pub fn opened(&self) {
        self.opened.store(true, Ordering::Relaxed);
    }

    pub fn is_opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }

    /// A request started; it counts until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.opened();
        self.touch();
        RequestGuard(self.clone())
    }

    /// A request waits for its client until the guard is dropped.
    pub fn waiting(self: &Arc<Self>) -> WaitingGuard {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitingGuard(self.clone())
    }

    /// Eviction order: idle connections (class 0) before stalled ones (class 1), each longest
    /// quiet first; `None` while Hooker is working on one of its requests.
    fn eviction_rank(&self) -> Option<(u8, u64)> {
        let requests = self.requests.load(Ordering::Relaxed);
        let since = self.quiet_since();
        if requests == 0 {
            return Some((0, since));
        }
        (self.waiting.load(Ordering::Relaxed) >= requests).then_some((1, since))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

// === TimedBody ===

/// A request body whose client must keep sending: at most `read_timeout` between reads while
/// the handler waits for bytes, and `body_timeout` for the whole body (for gRPC, for each
/// message, from its first byte: a quiet stream between messages is not slow). Time the
/// handler spends not reading (a held gRPC stream) does not count against the client.
pub struct TimedBody<B> {
    inner: B,
    state: Arc<ConnState>,
    read_timeout: Duration,
    body_timeout: Duration,
    framing: Framing,
    /// When the body (or the gRPC message in progress) must be complete.
    message_deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is set for the current wait.
    armed: bool,
    waiting: Option<WaitingGuard>,
    slow: Counter,
    failed: bool,
}

enum Framing {
    Whole,
    Grpc(GrpcFraming),
}

/// Where a gRPC request body is: between messages, in a message's 5-byte prefix, or in its
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcFraming {
    Between,
    Prefix { have: u8, length: [u8; 4] },
    Payload { remaining: u32 },
}

/// A body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the request body stopped arriving (HOOKER_READ_TIMEOUT) or took too long (HOOKER_BODY_TIMEOUT)"
    )]
    TimedOut,
    #[error(transparent)]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

impl GrpcFraming {
    /// Advances over `data`; returns whether a message is in progress afterwards and whether
    /// one started in it.
    fn advance(&mut self, mut data: &[u8]) -> (bool, bool) {
        let mut started = false;
        while !data.is_empty() {
            match self {
                GrpcFraming::Between => {
                    started = true;
                    *self = GrpcFraming::Prefix {
                        have: 0,
                        length: [0; 4],
                    };
                }
                GrpcFraming::Prefix { have, length } => {
                    // Byte 0 is the compression flag, bytes 1..5 the big-endian length.
                    if *have > 0 {
                        length[usize::from(*have) - 1] = data[0];
                    }
                    *have += 1;
                    data = &data[1..];
                    if *have == 5 {
                        let remaining = u32::from_be_bytes(*length);
                        *self = if remaining == 0 {
                            GrpcFraming::Between
                        } else {
                            GrpcFraming::Payload { remaining }
                        };
                    }
                }
                GrpcFraming::Payload { remaining } => {
                    let take = data.len().min(*remaining as usize);
                    data = &data[take..];
                    *remaining -= take as u32;
                    if *remaining == 0 {
                        *self = GrpcFraming::Between;
                    }
                }
            }
        }
        (*self != GrpcFraming::Between, started)
    }
}

impl<B> TimedBody<B> {
    fn fail(&mut self) -> BodyError {
        self.failed = true;
        self.waiting = None;
        self.slow.inc();
        BodyError::TimedOut
    }

    /// The deadline of the current wait for bytes, if the client owes any.
    fn wait_deadline(&self, now: Instant) -> Option<Instant> {
        let deadline = self.message_deadline?;
        Some(deadline.min(later(now, self.read_timeout)))
    }

    fn received(&mut self, data: &[u8], now: Instant) {
        self.state.touch();
        if let Framing::Grpc(framing) = &mut self.framing {
            let (in_message, started) = framing.advance(data);
            if !in_message {
                self.message_deadline = None;
            } else if started || self.message_deadline.is_none() {
                self.message_deadline = Some(later(now, self.body_timeout));
            }
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = None;
                this.armed = false;
                let now = Instant::now();
                if let Some(data) = frame.data_ref() {
                    this.received(data.chunk(), now);
                }
                if matches!(this.framing, Framing::Whole)
                    && this.message_deadline.is_some_and(|d| now >= d)
                {
                    return Poll::Ready(Some(Err(this.fail())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.waiting = None;
                Poll::Ready(Some(Err(BodyError::Read(error.into()))))
            }
            Poll::Ready(None) => {
                this.waiting = None;
                this.message_deadline = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.waiting.is_none() {
                    this.waiting = Some(this.state.waiting());
                }
                let now = Instant::now();
                let Some(deadline) = this.wait_deadline(now) else {
                    return Poll::Pending;
                };
                if !this.armed {
                    this.armed = true;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let expired = this
                    .sleep
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Some(Err(this.fail())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === Guarded ===

/// A response body that keeps its request counted until it is sent (a gRPC stream's response
/// lives as long as the stream).
pub struct Guarded<B> {
    inner: B,
    _request: RequestGuard,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, request: RequestGuard) -> Guarded<B> {
        Guarded {
            inner,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === Counted ===

/// An I/O stream that marks its connection opened once its first bytes have arrived.
pub struct Counted<I> {
    inner: I,
    state: Arc<ConnState>,
    read: u64,
}

impl<I> Counted<I> {
    pub fn new(inner: I, state: Arc<ConnState>) -> Counted<I> {
        Counted {
            inner,
            state,
            read: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.read < OPENING_BYTES {
            this.read += (buf.filled().len() - before) as u64;
            if this.read >= OPENING_BYTES {
                this.state.opened();
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `at + duration`, or far in the future when that does not fit (a huge setting).
pub fn later(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            h2_keepalive: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cap_evicts_the_longest_idle_connection_first() {
        let connections = Connections::new("test", limits(3), &Metrics::new());
        let oldest_idle = connections.admit().expect("room");
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = connections.admit().expect("room");
        let _working = busy.state().request();
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer_idle = connections.admit().expect("room");
        // Full: the oldest idle one goes, not the busy one, not the newer idle one.
        let fourth = connections.admit().expect("an idle connection makes room");
        assert_eq!(connections.held(), 3);
        let evicted = tokio::time::timeout(Duration::from_millis(1), oldest_idle.evicted()).await;
        assert!(evicted.is_ok(), "the longest-idle connection is told to go");
        let spared = tokio::time::timeout(Duration::from_millis(1), newer_idle.evicted()).await;
        assert!(spared.is_err());
        drop((fourth, newer_idle));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_connections_go_after_idle_ones_and_busy_ones_never() {
        let connections = Connections::new("test", limits(2), &Metrics::new());
        let stalled = connections.admit().expect("room");
        let request = stalled.state().request();
        let waiting = stalled.state().waiting();
        let busy = connections.admit().expect("room");
        let _working = busy.state().request();
        // No idle connection: the one waiting on its client makes room.
        let third = connections
            .admit()
            .expect("a stalled connection makes room");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), stalled.evicted())
                .await
                .is_ok()
        );
        drop((request, waiting, stalled));
        let _third_working = third.state().request();
        // Every held connection is busy: the next one is refused.
        assert!(connections.admit().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_gets_the_header_timeout_then_idle_ones_the_idle_timeout() {
        let connections = Connections::new("test", limits(8), &Metrics::new());
        let silent = connections.admit().expect("room");
        let opened = connections.admit().expect("room");
        opened.state().opened();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(silent.verdict(), Verdict::Close(Closed::Slow));
        assert!(matches!(opened.verdict(), Verdict::CheckAt(_)));
        {
            let _request = opened.state().request();
            tokio::time::advance(Duration::from_secs(300)).await;
            assert!(
                matches!(opened.verdict(), Verdict::CheckAt(_)),
                "a request in progress is never idle"
            );
        }
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(matches!(opened.verdict(), Verdict::CheckAt(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(opened.verdict(), Verdict::Close(Closed::Idle));
    }

    type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

    /// A request body fed by the test, wrapped as `serve.rs` wraps one.
    fn body(
        connections: &Arc<Connections>,
        slot: &Slot,
    ) -> (
        Frames,
        impl Body<Data = Bytes, Error = BodyError> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stream =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (tx, connections.timed_body(slot.state(), stream, false))
    }

    async fn next<B: Body<Data = Bytes, Error = BodyError> + Unpin>(
        body: &mut B,
    ) -> Result<usize, BodyError> {
        use http_body_util::BodyExt;
        match body.frame().await {
            Some(Ok(frame)) => Ok(frame.into_data().map(|d| d.len()).unwrap_or(0)),
            Some(Err(error)) => Err(error),
            None => Ok(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_off_at_the_body_timeout() {
        let connections = Connections::new("test", limits(8), &Metrics::new());
        let slot = connections.admit().expect("room");
        let (tx, body) = body(&connections, &slot);
        let mut body = Box::pin(body);
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let started = Instant::now();
        // Virtual time: an hour passes at once if nothing ever cuts the body off.
        let outcome = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                if let Err(error) = next(&mut body).await {
                    break error;
                }
            }
        })
        .await
        .expect("the body is cut off");
        assert!(matches!(outcome, BodyError::TimedOut));
        // Each byte came within the read timeout: only the whole-body deadline could stop it.
        assert!(started.elapsed() >= Duration::from_secs(60));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_after_the_read_timeout() {
        let connections = Connections::new("test", limits(8), &Metrics::new());
        let slot = connections.admit().expect("room");
        let _request = slot.state().request();
        let (tx, body) = body(&connections, &slot);
        let mut body = Box::pin(body);
        tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
            .await
            .expect("open");
        assert_eq!(next(&mut body).await.expect("a byte"), 1);
        // Waiting on the client: a stalled connection, first in line after idle ones.
        let waiting = tokio::spawn(async move { next(&mut body).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            slot.state().eviction_rank().map(|(class, _)| class),
            Some(1)
        );
        let outcome = tokio::time::timeout(Duration::from_secs(3600), waiting)
            .await
            .expect("the wait ends")
            .expect("joined");
        assert!(matches!(outcome, Err(BodyError::TimedOut)));
        drop(tx);
    }

    #[test]
    fn grpc_framing_tracks_messages_across_chunks() {
        let mut framing = GrpcFraming::Between;
        // A 3-byte message split across chunks, then an empty message, then a partial one.
        assert_eq!(framing.advance(&[0, 0, 0]), (true, true));
        assert_eq!(framing.advance(&[0, 3, b'a']), (true, false));
        assert_eq!(framing.advance(b"bc"), (false, false));
        assert_eq!(framing.advance(&[0, 0, 0, 0, 0, 0, 0]), (true, true));
        assert_eq!(
            framing,
            GrpcFraming::Prefix {
                have: 2,
                length: [0, 0, 0, 0]
            }
        );
    }
}

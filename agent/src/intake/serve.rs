//! The one accept loop behind every HTTP listener (TCP, TLS, Unix; the HTTP intake, gRPC and the
//! probes): HTTP/1.1 and HTTP/2, the connection cap with eviction, the deadlines of
//! `connections.rs` (first bytes, TLS handshake, headers, bodies, idle connections, HTTP/2
//! keep-alive pings), and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::connections::{Closed, Connections, Counted, Guarded, Limits, Slot, Verdict, later};
use crate::metrics::Metrics;

/// Who is on the other end, for logs; inserted into every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub listener: &'static str,
    pub address: Option<String>,
}

/// How long open requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long an evicted or expired connection may take to close gracefully (an HTTP/2 GOAWAY,
/// a response being written) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Something that yields connections: a TCP or Unix listener.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Io, Option<String>)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, Option<String>)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Some(addr.to_string())))
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, Option<String>)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let peer = stream
            .peer_cred()
            .ok()
            .map(|c| format!("uid={} pid={}", c.uid(), c.pid().unwrap_or_default()));
        Ok((stream, peer))
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets open requests finish.
pub async fn serve<L: Accept>(
    mut listener: L,
    name: &'static str,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Connections::new(name, limits, &metrics);
    let builder = Arc::new(builder(&limits));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // Finished connections' tasks are reaped here: a JoinSet keeps them until joined.
        while tasks.try_join_next().is_some() {}
        let (io, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // A full cap evicts an idle (or stalled) connection; with none, the new one is closed.
        let Some(slot) = connections.admit() else {
            drop(io);
            continue;
        };
        let peer = Peer {
            listener: name,
            address,
        };
        tasks.spawn(connection(
            io,
            slot,
            peer,
            app.clone(),
            tls.clone(),
            builder.clone(),
            shutdown.clone(),
        ));
    }
    // Finish in-flight requests, but not forever: each connection closes gracefully within
    // SHUTDOWN_GRACE, and what is left then is dropped.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE + CLOSE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

/// The HTTP/1.1 + HTTP/2 settings of a listener.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer also runs while a kept-alive HTTP/1.1 connection waits for its next
    // request, so it bounds HTTP/1.1 idle time too.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new()).max_concurrent_streams(256);
    if let Some(interval) = limits.h2_keepalive {
        http2
            .keep_alive_interval(interval)
            .keep_alive_timeout(interval);
    }
    builder
}

/// One connection: TLS handshake, then HTTP until it ends, is evicted, expires or shutdown.
async fn connection<I>(
    io: I,
    slot: Slot,
    peer: Peer,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = *slot_limits(&slot);
    match tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)) => handshake,
                _ = slot.evicted() => {
                    return;
                }
            };
            match handshake {
                Ok(Ok(stream)) => {
                    // The handshake was the first bytes; the request gets its own time.
                    slot.state().touch();
                    http(stream, slot, peer, app, &builder, shutdown).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed.");
                }
                Err(_) => {
                    tracing::debug!(listener = peer.listener, "TLS handshake timed out.");
                    count(&slot, Closed::Slow);
                }
            }
        }
        None => http(io, slot, peer, app, &builder, shutdown).await,
    }
}

fn slot_limits(slot: &Slot) -> &Limits {
    slot.connections().limits()
}

fn count(slot: &Slot, reason: Closed) {
    slot.connections().count(reason);
}

/// Serves HTTP on `io`; closes it when it has been idle or silent too long, when it is evicted,
/// and at shutdown (gracefully first, then by dropping it).
async fn http<I>(
    io: I,
    slot: Slot,
    peer: Peer,
    app: axum::Router,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = peer.listener;
    let state = slot.state().clone();
    let io = TokioIo::new(Counted::new(io, state.clone()));
    let service = {
        let state = state.clone();
        let connections = slot.connections().clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = state.request();
            let grpc = request
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(peer.clone());
            let request =
                hyper::Request::from_parts(parts, connections.timed_body(&state, body, grpc));
            let app = app.clone();
            async move {
                let response = tower::ServiceExt::oneshot(app, request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Guarded::new(body, guard)))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    // Once closing, the instant past which the connection is dropped.
    let mut closing: Option<Instant> = None;
    let mut check = Box::pin(tokio::time::sleep(Duration::ZERO));
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stopped(&mut shutdown), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(later(Instant::now(), SHUTDOWN_GRACE));
                check.as_mut().reset(later(Instant::now(), SHUTDOWN_GRACE));
            }
            _ = slot.evicted(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(later(Instant::now(), CLOSE_GRACE));
                check.as_mut().reset(later(Instant::now(), CLOSE_GRACE));
            }
            _ = check.as_mut() => {
                if let Some(deadline) = closing {
                    if Instant::now() >= deadline {
                        break Ok(());
                    }
                    check.as_mut().reset(deadline);
                    continue;
                }
                match slot.verdict() {
                    Verdict::CheckAt(at) => check.as_mut().reset(at),
                    Verdict::Close(reason) => {
                        tracing::debug!(listener, reason = reason.as_str(), "Closing a connection.");
                        count(&slot, reason);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(later(Instant::now(), CLOSE_GRACE));
                        check.as_mut().reset(later(Instant::now(), CLOSE_GRACE));
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        if let Some(reason) = timed_out(error.as_ref()) {
            count(&slot, reason);
        }
        tracing::debug!(%error, "Connection ended with an error.");
    }
}

/// A hyper timeout, as a close reason: an unanswered HTTP/2 ping, or HTTP/1.1 headers too slow.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<Closed> {
    let hyper_error = error.downcast_ref::<hyper::Error>()?;
    if !hyper_error.is_timeout() {
        return None;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.to_string() == "keep-alive timed out" {
            return Some(Closed::KeepAlive);
        }
        source = error.source();
    }
    Some(Closed::Slow)
}

//! The one accept loop behind every HTTP listener (TCP, TLS, Unix): HTTP/1.1 and HTTP/2,
//! a connection cap, a header-read timeout, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

use crate::metrics::{ListenerLabels, Metrics};

/// Who is on the other end, for logs; inserted into every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub listener: &'static str,
    pub address: Option<String>,
}

/// How long a client may take to send request headers or finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    max_connections: usize,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = metrics
        .connections
        .get_or_create(&ListenerLabels { listener: name })
        .clone();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
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
        let peer = Peer {
            listener: name,
            address,
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let open = open.clone();
        tokio::spawn(async move {
            open.inc();
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    tower::ServiceExt::oneshot(app.clone(), request)
                },
            );
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(256);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed.");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "Connection ended with an error.");
            }
            open.dec();
            drop(permit);
        });
    }
    // Finish in-flight requests, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

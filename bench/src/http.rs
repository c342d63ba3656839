//! HTTP/1.1 intake sender over TCP or a Unix socket: `POST /`, one keep-alive connection each.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::{Events, Outcome, Sender};

pub struct HttpSender {
    send: http1::SendRequest<Full<Bytes>>,
    authority: String,
    token: Option<String>,
    events: Events,
}

impl HttpSender {
    pub async fn connect(target: &str, events: Events, token: Option<String>) -> Result<Self> {
        let (send, authority) = if let Some(path) = target.strip_prefix("unix:") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connect {path}"))?;
            (handshake(stream).await?, "localhost".to_string())
        } else if let Some(address) = target.strip_prefix("http://") {
            let address = address.trim_end_matches('/');
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .with_context(|| format!("connect {address}"))?;
            stream.set_nodelay(true)?;
            (handshake(stream).await?, address.to_string())
        } else {
            bail!("{target}: expected http://HOST:PORT or unix:/PATH");
        };
        Ok(HttpSender {
            send,
            authority,
            token,
            events,
        })
    }
}

async fn handshake<S>(stream: S) -> Result<http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(send)
}

impl Sender for HttpSender {
    async fn send(&mut self, first: u64, n: usize) -> Result<Outcome> {
        let body = self.events.batch(first, n);
        let mut request = hyper::Request::post("/")
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send.ready().await?;
        let response = self
            .send
            .send_request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status();
        // Read the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        match status.as_u16() {
            200..=299 => Ok(Outcome::Accepted(n)),
            429 | 503 => Ok(Outcome::Rejected(n)),
            other => bail!("HTTP {other}"),
        }
    }
}

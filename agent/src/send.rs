//! `hooker send FILE...`: posts events to a running agent over its Unix socket or over HTTP.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::intake::unix;

/// Where to send.
pub enum Target {
    Socket(PathBuf),
    Url(String),
}

impl Target {
    /// `--url` wins; otherwise the socket `run` would use (including its per-user fallback).
    pub fn resolve(url: Option<String>, socket: Option<&str>) -> anyhow::Result<Target> {
        if let Some(url) = url {
            return Ok(Target::Url(url.trim_end_matches('/').to_string()));
        }
        match unix::socket_path(socket) {
            Some((path, true)) => Ok(Target::Socket(path)),
            Some((path, false)) if path.exists() => Ok(Target::Socket(path)),
            Some(_) => Ok(Target::Socket(unix::fallback_socket_path())),
            None => Err(anyhow!("the Unix socket is off; give --url")),
        }
    }
}

/// Posts each file; returns false when any was refused.
pub async fn send(
    target: &Target,
    files: &[PathBuf],
    tenant: Option<&str>,
) -> anyhow::Result<bool> {
    let path = match tenant {
        Some(route) => format!("/tenant/{route}"),
        None => "/".to_string(),
    };
    let mut all_ok = true;
    for file in files {
        let body =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let (status, reply) = match target {
            Target::Socket(socket) => post_unix(socket, &path, body).await?,
            Target::Url(url) => post_http(&format!("{url}{path}"), body).await?,
        };
        println!("{}: {status} {}", file.display(), reply.trim());
        all_ok &= (200..300).contains(&status);
    }
    Ok(all_ok)
}

/// Calls an operator endpoint (`/admin/dlq…`, `/reload`); returns the status and the JSON answer.
pub async fn admin(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    match target {
        Target::Socket(socket) => request_unix(socket, method, path, bytes).await,
        Target::Url(url) => {
            let client = crate::action::http_client_builder(std::time::Duration::from_secs(60))
                .danger_accept_invalid_certs(true)
                .build()?;
            let method = reqwest::Method::from_bytes(method.as_bytes())?;
            let mut request = client
                .request(method, format!("{url}{path}"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = response.status().as_u16();
            Ok((status, response.text().await.unwrap_or_default()))
        }
    }
}

async fn post_unix(socket: &Path, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    request_unix(socket, "POST", path, body).await
}

async fn request_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {} (is `hooker run` running?)",
                socket.display()
            )
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "hooker")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let reply = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&reply).into_owned()))
}

async fn post_http(url: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    let client = crate::action::http_client_builder(std::time::Duration::from_secs(60))
        // `send` talks to the local agent, whose certificate is usually self-signed.
        .danger_accept_invalid_certs(true)
        .build()?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

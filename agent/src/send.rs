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
    /// `--agent` (a URL) wins; otherwise the socket `run` would use (including its per-user fallback).
    pub fn resolve(url: Option<String>, socket: Option<&str>) -> anyhow::Result<Target> {
        if let Some(url) = url {
            return Ok(Target::Url(url.trim_end_matches('/').to_string()));
        }
        match unix::socket_path(socket) {
            Some((path, true)) => Ok(Target::Socket(path)),
            Some((path, false)) if path.exists() => Ok(Target::Socket(path)),
            Some(_) => Ok(Target::Socket(unix::fallback_socket_path())),
            None => Err(anyhow!("the Unix socket is off; give --agent URL")),
        }
    }
}

/// Posts each file; returns false when any was refused.
pub async fn send(
    target: &Target,
    files: &[PathBuf],
    tenant: Option<&str>,
    token: Option<&str>,
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
            Target::Url(url) => post_http(&format!("{url}{path}"), body, token).await?,
        };
        crate::output::line(format_args!(
            "{}: {status} {}",
            file.display(),
            reply.trim()
        ))?;
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

async fn post_http(url: &str, body: Vec<u8>, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let client = crate::action::http_client_builder(std::time::Duration::from_secs(60))
        // `send` talks to the local agent, whose certificate is usually self-signed.
        .danger_accept_invalid_certs(true)
        .build()?;
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
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

/// Events per streamed batch, and bytes, at most.
const GRPC_BATCH_EVENTS: usize = 1000;
const GRPC_BATCH_BYTES: usize = 4 << 20;

/// `hooker send --grpc ADDR`: streams every event of `files` (`repeat` times) over
/// `PublishStream` and reports what the agent accepted; false when anything was refused.
/// `address` is `host:port`, `http://host:port` or `unix:/path`.
pub async fn send_grpc(
    address: &str,
    files: &[PathBuf],
    tenant: Option<&str>,
    repeat: usize,
    token: Option<&str>,
) -> anyhow::Result<bool> {
    use hooker_grpc::hooker::v1 as pb;
    let mut events = Vec::new();
    for file in files {
        let body =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let payloads = crate::event::parse_payloads(&body)
            .map_err(|err| anyhow!("{}: {err}", file.display()))?;
        for payload in payloads {
            events.push(pb::Event {
                payload: payload.text().get().as_bytes().to_vec(),
                source: "hooker send".into(),
                metadata: Default::default(),
                route: tenant.unwrap_or_default().to_string(),
            });
        }
    }
    let mut batches: Vec<Vec<pb::Event>> = Vec::new();
    let mut size = 0;
    for event in events.iter().cycle().take(events.len() * repeat) {
        let fits = batches.last().is_some_and(|last| {
            last.len() < GRPC_BATCH_EVENTS && size + event.payload.len() <= GRPC_BATCH_BYTES
        });
        if !fits {
            batches.push(Vec::new());
            size = 0;
        }
        size += event.payload.len();
        if let Some(last) = batches.last_mut() {
            last.push(event.clone());
        }
    }
    let total = events.len() * repeat;
    let n_batches = batches.len();

    let uri = if address.starts_with("unix:") || address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .with_context(|| format!("`{address}` is not host:port or unix:/path"))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {address} (is `hooker run` serving gRPC?)"))?;
    let authorization = token
        .map(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>())
        .transpose()
        .context("the token is not a valid header value")?;
    let mut client = pb::intake_client::IntakeClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    )
    .max_encoding_message_size(usize::MAX)
    .max_decoding_message_size(64 << 20);

    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        for (index, events) in batches.into_iter().enumerate() {
            let batch = pb::PublishBatch {
                seq: index as u64 + 1,
                events,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let refused = |status: tonic::Status| {
        anyhow!(
            "the agent refused the stream: {:?}: {}",
            status.code(),
            status.message()
        )
    };
    let mut acks = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(refused)?
        .into_inner();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut reasons: std::collections::BTreeMap<(i32, String), u64> = Default::default();
    while let Some(ack) = acks.message().await.map_err(refused)? {
        accepted += ack.accepted;
        rejected += ack.rejected;
        for rejection in ack.rejections {
            *reasons
                .entry((rejection.code, rejection.reason))
                .or_default() += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    crate::output::line(format_args!(
        "{total} events in {n_batches} batches over gRPC in {seconds:.2}s ({:.0} events/s): accepted {accepted}, rejected {rejected}",
        total as f64 / seconds.max(1e-9)
    ))?;
    for ((code, reason), n) in &reasons {
        crate::output::line(format_args!(
            "  {n} rejection(s) {:?}: {reason}",
            tonic::Code::from_i32(*code)
        ))?;
    }
    Ok(rejected == 0 && accepted == total as u64)
}

//! The Unix-socket intake: same router, HTTP/1.1 and HTTP/2, mode 0660, stale files replaced,
//! the file removed on shutdown; and `hooker send` over it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;
use hooker_tests::{Agent, Sink, fixture, hooker};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn config(sink: &Sink) -> String {
    format!(
        r#"
routes:
  - name: all
    input: input
    template: raw
    actions: [sink]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: sink
    type: webhook
    enable: true
    url: {}
"#,
        sink.url("/")
    )
}

async fn post_h1(socket: &Path, body: &'static str) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/")
        .header("host", "hooker")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((
        status,
        String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned(),
    ))
}

async fn post_h2(socket: &Path, body: &'static str) -> anyhow::Result<u16> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post("http://hooker/").body(Full::new(Bytes::from(body)))?;
    Ok(sender.send_request(request).await?.status().as_u16())
}

#[tokio::test]
async fn socket_takes_http1_and_http2_with_mode_0660() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let socket = agent.socket_path();
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let (status, answer) = post_h1(&socket, r#"{"via":"h1"}"#).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(post_h2(&socket, r#"{"via":"h2"}"#).await?, 200);
    let requests = sink.wait_for(2).await?;
    let vias: Vec<String> = requests
        .iter()
        .map(|r| {
            r.body_json()["via"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        vias.contains(&"h1".to_string()) && vias.contains(&"h2".to_string()),
        "{vias:?}"
    );
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="unix",outcome="accepted"}"#)
            .await?,
        2.0
    );
    let status = agent.stop().await?;
    assert!(status.success());
    assert!(!socket.exists(), "socket file removed on shutdown");
    Ok(())
}

#[tokio::test]
async fn stale_socket_file_is_replaced() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = hooker_tests::TempDir::new("stale");
    let socket = dir.join("stale.sock");
    // A socket file left behind by a crashed process: bound, then the listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    assert!(socket.exists());
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_SOCKET", socket.display().to_string())
        .start()
        .await?;
    assert_eq!(agent.socket_path(), socket);
    assert_eq!(post_h1(&socket, r#"{"a":1}"#).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn hooker_send_posts_files_over_the_socket() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let socket = agent.socket_path().display().to_string();
    let trivy = fixture("trivy/trivy-image-alpine-310.json")
        .display()
        .to_string();
    let operator = fixture("trivy/trivy-operator-VulnerabilityReport-cr.json")
        .display()
        .to_string();
    let (code, stdout, stderr) =
        hooker(&["send", "--socket", &socket, &trivy, &operator], &[]).await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(": 200 ").count(), 2, "{stdout}");
    let requests = sink.wait_for(2).await?;
    let names: Vec<_> = requests.iter().map(|r| r.body_json()).collect();
    assert!(
        names
            .iter()
            .any(|b| b["ArtifactType"] == "container_image" && b["SchemaVersion"] == 2),
        "the Trivy report arrived"
    );
    assert!(
        names.iter().any(|b| b["kind"] == "VulnerabilityReport"),
        "the trivy-operator report arrived"
    );
    let (code, stdout, _) = hooker(
        &["send", "--socket", &socket, "--tenant", "missing", &trivy],
        &[],
    )
    .await?;
    assert_eq!(code, 1, "a refused event makes `send` fail");
    assert!(stdout.contains(": 404 "), "{stdout}");
    Ok(())
}

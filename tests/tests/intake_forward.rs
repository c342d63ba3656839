//! The Fluent Forward intake, fed by Python's msgpack (a real encoder) the way Tracee's
//! `--output forward:` sends: Message, Forward and PackedForward modes over TCP and the Unix
//! socket, `chunk` acknowledged only once stored, bad and oversized frames refused and counted.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use hooker_tests::{Agent, Reply, Sink, TempDir, fixture, fixture_json, python};
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
        sink.url("/forward")
    )
}

/// Runs forward_send.py; returns its one-line JSON report.
async fn send(target: &str, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec![target];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = python("forward_send.py", &all).await?;
    assert_eq!(code, 0, "forward_send.py {all:?} failed:\n{stderr}");
    Ok(serde_json::from_str(stdout.trim())?)
}

/// Keys sorted, numbers as f64 (Rego holds Tracee's nanosecond timestamps as doubles).
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

fn counts(sink: &Sink) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for request in sink.requests() {
        *seen
            .entry(canonical(&request.body_json()).to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn tracee_forward_output_is_routed_in_every_mode_and_acknowledged() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("forward");
    let socket = dir.join("forward.sock");
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        .env("HOOKER_FORWARD_SOCKET", socket.display().to_string())
        .start()
        .await?;
    let tcp = agent
        .address("forward")
        .expect("forward listener")
        .to_string();
    assert_eq!(
        std::fs::metadata(&socket)?.permissions().mode() & 0o777,
        0o660
    );
    let unix = format!("unix:{}", socket.display());
    let paths: Vec<String> = FIXTURES
        .iter()
        .map(|f| fixture(f).display().to_string())
        .collect();
    let files: Vec<&str> = paths.iter().map(String::as_str).collect();

    // Message mode (what Tracee sends), one ack per entry.
    let mut args = vec!["message", "--chunk", "m"];
    args.extend(&files);
    let report = send(&tcp, &args).await?;
    let expected: Vec<String> = (0..FIXTURES.len()).map(|i| format!("m-{i}")).collect();
    assert_eq!(report["acks"], serde_json::json!(expected));

    // Forward mode over the Unix socket: one ack for the whole message.
    let mut args = vec!["forward", "--chunk", "f"];
    args.extend(&files);
    let report = send(&unix, &args).await?;
    assert_eq!(report["acks"], serde_json::json!(["f"]));

    // PackedForward with EventTime timestamps, no ack asked: nothing comes back.
    let mut args = vec!["packed"];
    args.extend(&files);
    let report = send(&tcp, &args).await?;
    assert_eq!(report["acks"], serde_json::json!([]));

    sink.wait_for(3 * FIXTURES.len()).await?;
    let seen = counts(&sink);
    for name in FIXTURES {
        let key = canonical(&fixture_json(name)).to_string();
        assert_eq!(seen.get(&key), Some(&3), "{name} once per mode");
    }
    for request in sink.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/forward");
    }

    // Records of other Forward producers are routed as they are.
    let plain = dir.join("plain.json");
    std::fs::write(&plain, r#"{"log": "hello", "n": 7}"#)?;
    let report = send(
        &tcp,
        &[
            "message",
            "--plain",
            "--chunk",
            "p",
            &plain.display().to_string(),
        ],
    )
    .await?;
    assert_eq!(report["acks"], serde_json::json!(["p-0"]));
    let all = sink.wait_for(3 * FIXTURES.len() + 1).await?;
    assert!(
        all.iter()
            .any(|r| r.body_json() == serde_json::json!({"log": "hello", "n": 7}))
    );
    assert_eq!(
        agent
            .metric(r#"hooker_events_received_total{intake="forward",outcome="accepted"}"#)
            .await?,
        (3 * FIXTURES.len() + 1) as f64
    );
    Ok(())
}

#[tokio::test]
async fn bad_oversized_and_unstorable_entries_are_refused_and_counted() -> anyhow::Result<()> {
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    let dir = TempDir::new("forward-bad");
    let agent = Agent::builder(&config(&down))
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        .env("HOOKER_MAX_BODY", "8KB")
        .env("HOOKER_OUTBOX_MAX_PENDING", "1")
        .start()
        .await?;
    let tcp = agent
        .address("forward")
        .expect("forward listener")
        .to_string();

    // An "event" that is not JSON is refused alone; the good entry next to it is acknowledged.
    std::fs::write(dir.join("bad.txt"), "{not json")?;
    std::fs::write(dir.join("good.json"), r#"{"n": 1}"#)?;
    let bad = dir.join("bad.txt").display().to_string();
    let good = dir.join("good.json").display().to_string();
    let report = send(&tcp, &["forward", "--chunk", "c1", &bad, &good]).await?;
    assert_eq!(report["acks"], serde_json::json!(["c1"]));
    assert_eq!(
        down.wait_for(1).await?[0].body_json(),
        serde_json::json!({"n": 1})
    );

    // The outbox now holds its one pending delivery (the sink answers 503): a chunk that cannot
    // be stored is not acknowledged, so the producer resends it.
    let report = send(&tcp, &["message", "--chunk", "full", &good]).await?;
    assert_eq!(
        report["acks"],
        serde_json::json!([]),
        "no ack when not stored"
    );

    // A message larger than HOOKER_MAX_BODY closes that connection only.
    std::fs::write(
        dir.join("big.json"),
        format!(r#"{{"pad": "{}"}}"#, "x".repeat(16 * 1024)),
    )?;
    let big = dir.join("big.json").display().to_string();
    let report = send(&tcp, &["message", "--chunk", "big", &big]).await?;
    assert_eq!(report["acks"], serde_json::json!([]));

    let metrics = agent.metrics().await?;
    let value = |outcome: &str| {
        hooker_tests::metric_value(
            &metrics,
            &format!(r#"hooker_events_received_total{{intake="forward",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(value("invalid"), 1.0, "{metrics}");
    assert_eq!(value("accepted"), 1.0, "{metrics}");
    assert_eq!(value("queue_full"), 1.0, "{metrics}");
    assert_eq!(value("too_large"), 1.0, "{metrics}");
    Ok(())
}

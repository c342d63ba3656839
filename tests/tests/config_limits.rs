//! Durations and sizes past what Hooker can hold: `validate` (and `run`) answer with an error
//! that names the key, never a panic (exit 101); a server's `Retry-After` past them is held to
//! them. And a config whose actions need the runtime to shut down (email) reloads without
//! killing a router thread.

use hooker_tests::{Agent, Reply, Sink, TempDir, hooker};

const HUGE: &str = "99999999999999999999s";

/// Writes `config` to a fresh directory and runs `hooker validate` on it.
async fn validate(label: &str, config: &str) -> anyhow::Result<(i32, String, String, String)> {
    let dir = TempDir::new(label);
    let cfg = dir.join("cfg.yaml");
    std::fs::write(&cfg, config)?;
    let path = cfg.display().to_string();
    let (code, stdout, stderr) = hooker(&["validate", &path], &[]).await?;
    Ok((code, stdout, stderr, path))
}

/// The line (from 1) where `key:` is written in `config`.
fn line_of(config: &str, key: &str) -> usize {
    let written = format!("{key}:");
    config
        .lines()
        .position(|line| line.trim_start().starts_with(&written))
        .map_or(0, |index| index + 1)
}

#[tokio::test]
async fn validate_refuses_a_huge_duration_in_every_duration_key() -> anyhow::Result<()> {
    let config = format!(
        r#"db-verify-interval: {HUGE}
routes:
  - name: r1
    input: input.x == "y"
    actions: [a1, a2, a3, a4, a5]
    template: raw
    plugins:
      aggregate-message-timeout: {HUGE}
  - name: r2
    input: input.x == "z"
    actions: [a1]
    template: raw
    plugins:
      unique-message-timeout: {HUGE}
      unique-message-props: [x]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: a1
    type: webhook
    enable: true
    url: http://127.0.0.1:9/x
    timeout: {HUGE}
  - name: a2
    type: stdout
    enable: true
    retry-initial-backoff: {HUGE}
  - name: a3
    type: stdout
    enable: true
    retry-max-backoff: {HUGE}
  - name: a4
    type: stdout
    enable: true
    retry-max-age: {HUGE}
  - name: a5
    type: stdout
    enable: true
    circuit-breaker-cooldown: {HUGE}
"#
    );
    let (code, stdout, stderr, path) = validate("huge-durations", &config).await?;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    for key in [
        "db-verify-interval",
        "aggregate-message-timeout",
        "unique-message-timeout",
        "timeout",
        "retry-initial-backoff",
        "retry-max-backoff",
        "retry-max-age",
        "circuit-breaker-cooldown",
    ] {
        let expected = format!("{path}:{}:", line_of(&config, key));
        let found = stderr.lines().any(|l| {
            l.starts_with(&format!("error: {expected}"))
                && l.contains(key)
                && l.contains("is too long")
        });
        assert!(found, "no `{expected} … {key} … is too long` in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn validate_refuses_huge_numbers_of_hours_seconds_and_bytes() -> anyhow::Result<()> {
    // Postee's db-verify-interval is a number of hours: u64::MAX hours overflowed.
    let config = r#"db-verify-interval: 18446744073709551615
max-db-size: 99999999999999999999MB
routes:
  - name: r
    input: input.x == "y"
    actions: [w]
    template: raw
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: w
    type: webhook
    enable: true
    url: http://127.0.0.1:9/x
    timeout: 18446744073709551615
"#;
    let (code, stdout, stderr, path) = validate("huge-numbers", config).await?;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    for (key, why) in [
        ("db-verify-interval", "is too long"),
        ("max-db-size", "is too large"),
        ("timeout", "is too long"),
    ] {
        let expected = format!("{path}:{}:", line_of(config, key));
        let found = stderr.lines().any(|l| {
            l.starts_with(&format!("error: {expected}")) && l.contains(key) && l.contains(why)
        });
        assert!(found, "no `{expected} … {key} … {why}` in:\n{stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn a_huge_duration_setting_is_a_usage_error() -> anyhow::Result<()> {
    let (code, stdout, stderr) = hooker(
        &["run", "--http", "off", "--https", "off", "--grpc", "off"],
        &[("HOOKER_GRPC_STREAM_WAIT", HUGE)],
    )
    .await?;
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("HOOKER_GRPC_STREAM_WAIT") || stderr.contains("grpc-stream-wait"),
        "{stderr}"
    );
    assert!(stderr.contains("is too long"), "{stderr}");
    Ok(())
}

/// Found by the config property tests (agent/tests/prop_config.rs): dropping a pipeline with an
/// email action outside the runtime panics in lettre. A router thread drops the replaced
/// pipeline when it takes its next batch after a reload.
#[tokio::test]
async fn a_reloaded_email_action_does_not_kill_the_router() -> anyhow::Result<()> {
    let dir = TempDir::new("reload-email");
    let path = dir.join("cfg.yaml");
    let config = |port: u16| {
        format!(
            r#"routes:
  - name: r
    input: contains(input.kind, "x")
    template: raw
    actions: [mail]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: mail
    type: email
    enable: true
    host: 127.0.0.1
    port: {port}
    sender: a@example.com
    recipients: [b@example.com]
"#
        )
    };
    std::fs::write(&path, config(1))?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .env("HOOKER_WATCH_CONFIG", "false")
        .env("HOOKER_WORKERS", "1")
        .start()
        .await?;
    // More than the inline limit (8 events), so a router thread routes the batch.
    let batch = format!("[{}]", [r#"{"kind":"x"}"#; 10].join(","));
    let (status, answer) = agent.post("/", batch.clone()).await?;
    assert_eq!(status, 200, "{answer}");
    std::fs::write(&path, config(2))?;
    let (code, answer, stderr) = agent.cli(&["reload"]).await?;
    assert_eq!(code, 0, "{answer}{stderr}");
    for round in 0..3 {
        let (status, answer) = agent.post("/", batch.clone()).await?;
        assert_eq!(status, 200, "batch {round} after the reload: {answer}");
    }
    let panicked = agent
        .logs()
        .iter()
        .any(|line| line.to_string().contains("panicked"));
    assert!(!panicked, "a thread panicked");
    Ok(())
}

/// A `Retry-After` of u64::MAX seconds overflowed the delivery engine's schedule (now + delay in
/// milliseconds): the engine panicked and delivered nothing more.
#[tokio::test]
async fn a_huge_retry_after_does_not_stop_deliveries() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![
        Reply::status(503).header("retry-after", "18446744073709551615"),
        Reply::status(200),
    ])
    .await?;
    let config = format!(
        r#"routes:
  - name: r
    input: input.kind == "x"
    template: raw
    actions: [hook]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {}
    retry-initial-backoff: 10ms
"#,
        sink.url("/hook")
    );
    let agent = Agent::start(&config).await?;
    let (status, answer) = agent.post("/", r#"{"kind":"x","n":1}"#).await?;
    assert_eq!(status, 200, "{answer}");
    sink.wait_for(1).await?;
    // The first delivery waits as long as the server asked (within the limit); the next one is
    // delivered.
    let (status, answer) = agent.post("/", r#"{"kind":"x","n":2}"#).await?;
    assert_eq!(status, 200, "{answer}");
    let requests = sink.wait_for(2).await?;
    let second = requests[1].body_text().replace([' ', '\n'], "");
    assert!(second.contains("\"n\":2"), "{second}");
    Ok(())
}

//! Durations and sizes past what Hooker can hold: `validate` (and `run`) answer with an error
//! that names the key, never a panic (exit 101).

use hooker_tests::{TempDir, hooker};

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

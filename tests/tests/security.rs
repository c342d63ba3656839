//! Security: a token setting without a token refuses to start instead of turning auth off, an
//! open TCP listener is warned about, the `Bearer` scheme is matched in any case and tokens
//! exactly; event values cannot add structure to an `http` action's body; a NUL byte in an
//! event reaches an exec script instead of the dead letters.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow};
use hooker_grpc::hooker::v1 as pb;
use hooker_tests::{Agent, Sink, TempDir, hooker_bin, wait_until, webhook_config};
use serde_json::{Value, json};

/// Runs `hooker run` (listeners on loopback, a fresh state directory) with `env`, expecting it
/// to refuse to start; returns its exit code and stderr.
async fn refused_start(env: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let dir = TempDir::new("refused");
    let mut command = tokio::process::Command::new(hooker_bin());
    command
        .arg("run")
        .env_remove("HOOKER_CFG")
        .env_remove("HOOKER_AUTH_TOKEN")
        .env_remove("HOOKER_AUTH_TOKEN_FILE")
        .env("HOOKER_HTTP", "127.0.0.1:0")
        .env("HOOKER_HTTPS", "off")
        .env("HOOKER_GRPC", "127.0.0.1:0")
        .env("HOOKER_SOCKET", "off")
        .env("HOOKER_STATE_DIR", dir.join("state"))
        .env("HOOKER_LOG_DIR", dir.join("log"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    // Dropping the future on timeout drops the child, which kill_on_drop kills.
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .map_err(|_| anyhow!("hooker kept running with {env:?}; it must refuse to start"))?
        .context("run hooker")?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_token_setting_without_a_token_refuses_to_start() -> anyhow::Result<()> {
    for value in ["", " ", ",", " , ,"] {
        let (code, stderr) = refused_start(&[("HOOKER_AUTH_TOKEN", value)]).await?;
        assert_ne!(code, 0, "{value:?}: {stderr}");
        assert!(
            stderr.contains("HOOKER_AUTH_TOKEN is set but holds no token"),
            "{value:?}: {stderr}"
        );
    }
    let dir = TempDir::new("empty-tokens");
    let file = dir.join("tokens");
    std::fs::write(&file, "# rotated out\n\n   \n")?;
    let file = file.display().to_string();
    for env in [
        vec![("HOOKER_AUTH_TOKEN_FILE", file.as_str())],
        vec![
            ("HOOKER_AUTH_TOKEN", "inline-token"),
            ("HOOKER_AUTH_TOKEN_FILE", file.as_str()),
        ],
    ] {
        let (code, stderr) = refused_start(&env).await?;
        assert_ne!(code, 0, "{env:?}: {stderr}");
        assert!(stderr.contains("holds no token"), "{env:?}: {stderr}");
    }
    // The command line refuses an empty path itself, naming the setting (the agent would too).
    let (code, stderr) = refused_start(&[("HOOKER_AUTH_TOKEN_FILE", "")]).await?;
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("auth-token-file") || stderr.contains("HOOKER_AUTH_TOKEN_FILE"),
        "{stderr}"
    );
    Ok(())
}

fn open_listener_warning(agent: &Agent) -> Option<Value> {
    agent.logs().into_iter().find(|entry| {
        entry["level"] == "WARN"
            && entry["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("No bearer token is set"))
    })
}

#[tokio::test]
async fn tcp_listeners_without_a_token_are_warned_about() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let open = Agent::start(&webhook_config(&sink.url("/"))).await?;
    let warning = open_listener_warning(&open)
        .ok_or_else(|| anyhow!("no warning about the open listeners: {:?}", open.logs()))?;
    assert_eq!(warning["listeners"], "http,grpc", "{warning}");
    drop(open);

    let guarded = Agent::builder(&webhook_config(&sink.url("/")))
        .env("HOOKER_AUTH_TOKEN", "s3cret")
        .start()
        .await?;
    assert_eq!(open_listener_warning(&guarded), None);
    drop(guarded);

    // Only the Unix socket (protected by its file mode): nothing to warn about.
    let unix_only = Agent::builder(&webhook_config(&sink.url("/")))
        .env("HOOKER_HTTP", "off")
        .env("HOOKER_GRPC", "off")
        .start()
        .await?;
    assert_eq!(open_listener_warning(&unix_only), None);
    Ok(())
}

const TOKEN: &str = "tok-12345";

#[tokio::test]
async fn bearer_is_matched_in_any_case_and_tokens_exactly() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::builder(&webhook_config(&sink.url("/")))
        .env("HOOKER_AUTH_TOKEN", TOKEN)
        .start()
        .await?;
    let url = format!("{}/", agent.http_url());
    let post = async |authorization: &str, n: u32| -> anyhow::Result<u16> {
        Ok(agent
            .client
            .post(&url)
            .header("authorization", authorization)
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await?
            .status()
            .as_u16())
    };
    for (n, accepted) in [
        format!("Bearer {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("BEARER {TOKEN}"),
        format!("bEaReR {TOKEN}"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(post(accepted, n as u32).await?, 200, "{accepted}");
    }
    for refused in [
        "Bearer tok-12346",   // same length, last byte differs
        "Bearer xok-12345",   // same length, first byte differs
        "Bearer tok-1234",    // a prefix
        "Bearer tok-123456",  // longer
        "Bearer TOK-12345",   // the token is compared exactly
        "Bearer ",            // empty
        "Basic dG9rLTEyMzQ1", // another scheme
        TOKEN,                // no scheme
    ] {
        assert_eq!(post(refused, 99).await?, 401, "{refused}");
    }
    let delivered = sink.wait_for(4).await?;
    assert!(delivered.iter().all(|r| r.body_json()["n"] != 99));

    // The gRPC intake shares the check.
    let address = agent
        .address("grpc")
        .ok_or_else(|| anyhow!("no gRPC listener"))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client = pb::intake_client::IntakeClient::new(channel);
    let publish = |authorization: &str| -> anyhow::Result<tonic::Request<pb::PublishRequest>> {
        let mut request = tonic::Request::new(pb::PublishRequest {
            event: Some(pb::Event {
                payload: br#"{"n":7}"#.to_vec(),
                ..Default::default()
            }),
        });
        request
            .metadata_mut()
            .insert("authorization", authorization.parse()?);
        Ok(request)
    };
    let reply = client.publish(publish(&format!("BEARER {TOKEN}"))?).await?;
    assert_eq!(reply.into_inner().events, 1);
    let refused = client
        .publish(publish("bearer tok-12346")?)
        .await
        .err()
        .ok_or_else(|| anyhow!("a wrong token was accepted over gRPC"))?;
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    Ok(())
}

/// Values crafted to add a key to a JSON body or a field to a form, were they not escaped.
const INJECT_JSON: &str = r#"", "admin": true, "x": ""#;
const AWKWARD: &str = "back\\slash \\\" quote\" new\nline\r\ttab \u{1}\u{1f} \u{0} é ✓ \\";
const INJECT_FORM: &str = "eve&role=admin";

#[tokio::test]
async fn http_body_placeholders_cannot_add_keys() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: r
    input: input.kind == "hostile"
    template: raw
    actions: [typed, untyped, form]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: typed
    type: http
    enable: true
    url: {typed}
    headers:
      Content-Type: application/json
    body-content: '{{"user": "event.input.user", "note": "event.input.note", "n": event.input.n}}'
  - name: untyped
    type: http
    enable: true
    url: {untyped}
    body-content: |
      {{"user": "event.input.user", "note": "event.input.note", "n": event.input.n}}
  - name: form
    type: http
    enable: true
    url: {form}
    headers:
      Content-Type: application/x-www-form-urlencoded
    body-content: user=event.input.login&role=viewer
"#,
        typed = sink.url("/typed"),
        untyped = sink.url("/untyped"),
        form = sink.url("/form"),
    );
    let agent = Agent::start(&config).await?;
    let event = json!({
        "kind": "hostile",
        "user": INJECT_JSON,
        "note": AWKWARD,
        "n": 7,
        "login": INJECT_FORM,
    });
    let (status, answer) = agent.post("/", event.to_string()).await?;
    assert_eq!(status, 200, "{answer}");
    let received = sink.wait_for(3).await?;
    let expected = json!({ "user": INJECT_JSON, "note": AWKWARD, "n": 7 });
    for path in ["/typed", "/untyped"] {
        let request = received
            .iter()
            .find(|r| r.path == path)
            .ok_or_else(|| anyhow!("nothing at {path}"))?;
        let body: Value = serde_json::from_slice(&request.body)
            .with_context(|| format!("{path} got a broken body: {}", request.body_text()))?;
        assert_eq!(body, expected, "{path}");
    }
    let form = received
        .iter()
        .find(|r| r.path == "/form")
        .ok_or_else(|| anyhow!("nothing at /form"))?;
    let fields: Vec<(String, String)> = form
        .body_text()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        fields,
        [
            ("user".to_string(), "eve%26role%3Dadmin".to_string()),
            ("role".to_string(), "viewer".to_string()),
        ],
        "{}",
        form.body_text()
    );
    Ok(())
}

#[tokio::test]
async fn exec_receives_nul_bytes_instead_of_dead_lettering() -> anyhow::Result<()> {
    let work = TempDir::new("exec-nul");
    let config = format!(
        r#"
routes:
  - name: r
    input: input.kind == "nul"
    template: text
    actions: [script]
templates:
  - name: text
    body: |
      package nul
      title := input.title
      result := input.text
actions:
  - name: script
    type: exec
    enable: true
    env: ["OUT_DIR={dir}"]
    exec-script: |
      cd "$OUT_DIR"
      printf '%s' "$HOOKER_EVENT" > env.txt
      printf '%s' "$HOOKER_TITLE" > title.txt
      cat > stdin.bin
"#,
        dir = work.path().display()
    );
    let agent = Agent::start(&config).await?;
    let event = json!({ "kind": "nul", "title": "ti\u{0}tle", "text": "a\u{0}b\u{0}" });
    let (status, answer) = agent.post("/", event.to_string()).await?;
    assert_eq!(status, 200, "{answer}");
    let outcome = wait_until(
        "the script's outcome",
        Duration::from_secs(15),
        async || {
            agent.logs().into_iter().find(|l| {
                l["action"] == "script"
                    && matches!(
                        l["message"].as_str(),
                        Some("Delivered." | "Delivery failed." | "Delivery dead-lettered.")
                    )
            })
        },
    )
    .await?;
    assert_eq!(outcome["message"], "Delivered.", "{outcome}");
    assert_eq!(std::fs::read(work.join("stdin.bin"))?, b"a\0b\0");
    assert_eq!(
        std::fs::read_to_string(work.join("env.txt"))?,
        r"a\u0000b\u0000"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("title.txt"))?,
        r"ti\u0000tle"
    );
    let (code, stdout, stderr) = agent.cli(&["dlq", "list"]).await?;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("\"r\""), "dead-lettered: {stdout}");
    Ok(())
}

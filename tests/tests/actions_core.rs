//! The actions of the core: webhook, http, exec and log, against real processes and servers.

use std::time::Duration;

use base64::Engine as _;
use hooker_tests::{Agent, Reply, Sink, TempDir, wait_until};

#[tokio::test]
async fn webhook_posts_the_rendered_body_and_any_2xx_is_success() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::status(202)]).await?;
    let config = format!(
        r#"
routes:
  - name: r
    input: input.kind == "test"
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
    headers:
      X-Team: secops
"#,
        sink.url("/in?token=abc")
    );
    let agent = Agent::start(&config).await?;
    agent.post("/", r#"{"kind":"test","n":1}"#).await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/in");
    assert_eq!(request.query.as_deref(), Some("token=abc"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-team"), Some("secops"));
    assert_eq!(request.body_text(), "{\n \"kind\": \"test\",\n \"n\": 1\n}");
    wait_until("success counted", Duration::from_secs(10), async || {
        let n = agent
            .metric(r#"hooker_deliveries_total{action="hook",type="webhook",outcome="success"}"#)
            .await
            .ok()?;
        (n == 1.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn http_action_substitutes_event_values_and_sends_hooker_event() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: r
    input: input.SigMetadata.ID == "TRC-2"
    template: raw
    actions: [call]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: call
    type: http
    enable: true
    url: {}
    method: put
    timeout: 2s
    headers:
      Authorization: ["Bearer t0k3n"]
      X-Multi: ["a", "b"]
    body-content: |
      signature=event.input.SigMetadata.ID host=event.input.SigMetadata.Hostname
"#,
        sink.url("/api")
    );
    let agent = Agent::start(&config).await?;
    let event = std::fs::read_to_string(hooker_tests::fixture("postee/tracee-minimal.json"))?;
    agent.post("/", event).await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "PUT");
    assert_eq!(request.body_text(), "signature=TRC-2 host=nginx\n");
    assert_eq!(request.header("authorization"), Some("Bearer t0k3n"));
    let encoded = request.header("hooker-event").expect("Hooker-Event header");
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let event: serde_json::Value = serde_json::from_slice(&decoded)?;
    assert_eq!(event["SigMetadata"]["ID"], "TRC-2");
    Ok(())
}

#[tokio::test]
async fn failing_action_is_counted_and_does_not_affect_the_others() -> anyhow::Result<()> {
    let good = Sink::start().await?;
    let bad = Sink::scripted(vec![Reply::json(
        400,
        serde_json::json!({"error": "bad channel"}),
    )])
    .await?;
    let config = format!(
        r#"
routes:
  - name: r
    input: input
    template: raw
    actions: [bad, good]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: bad
    type: webhook
    enable: true
    url: {}
  - name: good
    type: webhook
    enable: true
    url: {}
"#,
        bad.url("/"),
        good.url("/")
    );
    let agent = Agent::start(&config).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    good.wait_for(1).await?;
    let failure = wait_until("the failure logged", Duration::from_secs(10), async || {
        agent
            .logs()
            .into_iter()
            .find(|l| l["message"] == "Delivery failed.")
    })
    .await?;
    assert_eq!(failure["action"], "bad");
    let error = failure["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("HTTP 400") && error.contains("bad channel"),
        "{failure}"
    );
    assert_eq!(
        agent
            .metric(
                r#"hooker_deliveries_total{action="bad",type="webhook",outcome="permanent_error"}"#
            )
            .await?,
        1.0
    );
    assert_eq!(
        agent
            .metric(r#"hooker_deliveries_total{action="good",type="webhook",outcome="success"}"#)
            .await?,
        1.0
    );
    Ok(())
}

/// An event crafted to break out of a shell command line, if it were ever put on one.
const HOSTILE: &str = r#"{"kind":"hostile","cmd":"$(touch PWNED_DOLLAR)","tick":"`touch PWNED_TICK`","quote":"'; touch PWNED_QUOTE; echo '","dq":"\"; touch PWNED_DQ; \""}"#;

#[tokio::test]
async fn exec_passes_the_event_in_env_and_stdin_never_on_a_command_line() -> anyhow::Result<()> {
    let work = TempDir::new("exec");
    let config = format!(
        r#"
routes:
  - name: r
    input: input.kind == "hostile"
    template: raw
    actions: [script]
templates:
  - name: raw
    body: |
      package hostile
      title := "hostile"
      result := json.marshal(input_only)
      input_only := object.remove(input, ["postee", "hooker"])
actions:
  - name: script
    type: exec
    enable: true
    env: ["OUT_DIR={dir}"]
    exec-script: |
      cd "$OUT_DIR"
      printf '%s' "$HOOKER_EVENT" > env.json
      cat > stdin.json
      echo "route=$HOOKER_ROUTE"
"#,
        dir = work.path().display()
    );
    let agent = Agent::start(&config).await?;
    agent.post("/", HOSTILE).await?;
    let stdin = wait_until("the script ran", Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(work.join("stdin.json")).ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await?;
    let expected: serde_json::Value = serde_json::from_str(HOSTILE)?;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdin)?, expected);
    let env = std::fs::read_to_string(work.join("env.json"))?;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&env)?, expected);
    for marker in ["PWNED_DOLLAR", "PWNED_TICK", "PWNED_QUOTE", "PWNED_DQ"] {
        assert!(
            !work.join(marker).exists(),
            "{marker}: event text was executed"
        );
        assert!(
            !agent.dir.join(marker).exists(),
            "{marker}: event text was executed"
        );
    }
    let delivered = wait_until("the delivery logged", Duration::from_secs(10), async || {
        agent
            .logs()
            .into_iter()
            .find(|l| l["message"] == "Delivered." && l["action"] == "script")
    })
    .await?;
    let detail = delivered["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("exit 0") && detail.contains("route=r"),
        "{delivered}"
    );
    Ok(())
}

#[tokio::test]
async fn exec_records_exit_codes_and_kills_on_timeout() -> anyhow::Result<()> {
    let config = r#"
routes:
  - name: r
    input: input
    template: raw
    actions: [fails, hangs]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: fails
    type: exec
    enable: true
    exec-script: echo "about to fail" >&2; exit 3
  - name: hangs
    type: exec
    enable: true
    timeout: 300ms
    exec-script: sleep 3137
"#;
    let agent = Agent::start(config).await?;
    agent.post("/", r#"{"a":1}"#).await?;
    let failures = wait_until(
        "both failures logged",
        Duration::from_secs(20),
        async || {
            let logs: Vec<_> = agent
                .logs()
                .into_iter()
                .filter(|l| l["message"] == "Delivery failed.")
                .collect();
            (logs.len() == 2).then_some(logs)
        },
    )
    .await?;
    let by_action = |name: &str| {
        failures
            .iter()
            .find(|l| l["action"] == name)
            .map(|l| l["error"].as_str().unwrap_or_default().to_string())
    };
    let fails = by_action("fails").unwrap_or_default();
    assert!(
        fails.contains("exit 3") && fails.contains("about to fail"),
        "{fails}"
    );
    let hangs = by_action("hangs").unwrap_or_default();
    assert!(
        hangs.contains("timed out") && hangs.contains("killed"),
        "{hangs}"
    );
    let no_sleep_left = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 3137$"])
        .output()?;
    assert!(
        no_sleep_left.stdout.is_empty(),
        "the timed-out script's process group was killed"
    );
    Ok(())
}

/// A config of `routes` (YAML list items) rendered with the raw-JSON template and delivered to
/// one forensic log at `path`, with `settings` (indented YAML lines) added to the action.
fn forensic_config(routes: &str, path: &std::path::Path, settings: &str) -> String {
    format!(
        "\nroutes:{routes}templates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\n\
         actions:\n  - name: forensic\n    type: log\n    enable: true\n    path: {}\n{settings}",
        path.display()
    )
}

async fn wait_for_log_deliveries(agent: &Agent, n: f64) -> anyhow::Result<()> {
    wait_until(
        &format!("{n} log deliveries"),
        Duration::from_secs(10),
        async || {
            let delivered = agent
                .metric(
                    r#"hooker_deliveries_total{action="forensic",type="log",outcome="success"}"#,
                )
                .await
                .ok()?;
            (delivered == n).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn log_action_appends_json_lines_and_rotates() -> anyhow::Result<()> {
    let dir = TempDir::new("forensic");
    let path = dir.join("forensic.jsonl");
    let config = forensic_config(
        r#"
  - name: r
    input: input
    template: raw
    actions: [forensic]
  - name: late
    input: input.n >= 11
    template: raw
    actions: [forensic]
"#,
        &path,
        "    max-size: 2KB\n    max-files: 2\n",
    );
    let agent = Agent::builder(&config)
        .env("NODE_NAME", "node-7")
        .start()
        .await?;
    for n in 0..12 {
        let (status, _) = agent
            .post("/", format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(300)))
            .await?;
        assert_eq!(status, 200);
    }
    wait_for_log_deliveries(&agent, 13.0).await?;
    let rotated = |n: u32| dir.join(&format!("forensic.jsonl.{n}"));
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
    // Oldest first: the rotated files, then the current one.
    let all = [rotated(2), rotated(1), path.clone()]
        .iter()
        .map(std::fs::read_to_string)
        .collect::<Result<String, _>>()?;
    let last: Vec<serde_json::Value> = all
        .lines()
        .rev()
        .take(2)
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // Event 11 matched both routes, which share one rendering: each line names its own route.
    let mut routes: Vec<&str> = last.iter().filter_map(|l| l["route"].as_str()).collect();
    routes.sort_unstable();
    assert_eq!(routes, ["late", "r"], "{last:?}");
    for line in &last {
        assert_eq!(line["node"], "node-7");
        assert_eq!(line["event"]["n"], 11);
        assert_eq!(line["title"], "Raw Message Received");
    }
    for file in [path.clone(), rotated(1), rotated(2)] {
        assert!(
            std::fs::metadata(&file)?.len() <= 2048,
            "{} exceeds max-size",
            file.display()
        );
    }
    Ok(())
}

/// A config routed natively parses a one-line body into the fields its routes read only; the
/// forensic log still gets the whole event, as it was sent.
#[tokio::test]
async fn a_natively_routed_event_reaches_the_log_whole() -> anyhow::Result<()> {
    let dir = TempDir::new("forensic-native");
    let path = dir.join("forensic.jsonl");
    let config = forensic_config(
        r#"
  - name: r
    input: |
      input.kind == "test"
      some a in input.args
      a.name == "pathname"
    template: raw
    actions: [forensic]
"#,
        &path,
        "",
    );
    let agent = Agent::builder(&config).start().await?;
    assert_eq!(agent.metric("hooker_routes_native").await?, 1.0);
    let sent = r#"{"kind":"test","detail":{"nested":[1,{"b":"x\ny"}]},"args":[{"name":"pathname","value":"/bin/sh"}],"kind2":null}"#;
    let (status, body) = agent.post("/", sent).await?;
    assert_eq!(status, 200, "{body}");
    // Not routed: the other route's field has the wrong value.
    let (status, body) = agent
        .post("/", r#"{"kind":"test","args":[{"name":"path"}]}"#)
        .await?;
    assert_eq!((status, body["matches"].as_u64()), (200, Some(0)));
    wait_for_log_deliveries(&agent, 1.0).await?;
    let text = std::fs::read_to_string(&path)?;
    let line: serde_json::Value = serde_json::from_str(text.trim_end())?;
    assert_eq!(
        line["event"],
        serde_json::from_str::<serde_json::Value>(sent)?
    );
    Ok(())
}

#[tokio::test]
async fn url_templates_exec_input_files_and_body_files_work() -> anyhow::Result<()> {
    let work = TempDir::new("files");
    let template = "package remote.tmpl\nimport rego.v1\ntitle := \"remote\"\nresult := sprintf(\"image=%s\", [input.image])\n";
    let templates = Sink::with(move |_| Reply {
        status: 200,
        body: template.to_string(),
        headers: vec![],
        delay: None,
    })
    .await?;
    let sink = Sink::start().await?;
    std::fs::write(
        work.join("script.sh"),
        "printf '%s' \"$HOOKER_EVENT\" > \"$OUT\"\n",
    )?;
    std::fs::write(work.join("body.json"), r#"{"static":"body"}"#)?;
    let config = format!(
        r#"
routes:
  - name: r
    input: input.image
    template: remote
    actions: [script, post-file]
templates:
  - name: remote
    url: {template_url}
actions:
  - name: script
    type: exec
    enable: true
    input-file: {script}
    env: ["OUT={out}"]
  - name: post-file
    type: http
    enable: true
    url: {sink_url}
    body-file: {body}
"#,
        template_url = templates.url("/templates/remote.rego"),
        script = work.join("script.sh").display(),
        out = work.join("out.txt").display(),
        sink_url = sink.url("/file"),
        body = work.join("body.json").display(),
    );
    let agent = Agent::start(&config).await?;
    assert_eq!(
        templates.requests().len(),
        1,
        "the template is fetched once, at load"
    );
    agent.post("/", r#"{"image":"alpine:3.10"}"#).await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.body_text(), r#"{"static":"body"}"#);
    let out = wait_until("the script ran", Duration::from_secs(10), async || {
        std::fs::read_to_string(work.join("out.txt")).ok()
    })
    .await?;
    assert_eq!(out, "image=alpine:3.10");
    Ok(())
}

#[tokio::test]
async fn hooker_send_posts_over_http_too() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        "routes:\n  - name: r\n    input: input\n    template: raw\n    actions: [hook]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: {}\n",
        sink.url("/")
    );
    let agent = Agent::start(&config).await?;
    let event = hooker_tests::fixture("postee/simple-input.json")
        .display()
        .to_string();
    let (code, stdout, stderr) =
        hooker_tests::hooker(&["send", "--url", &agent.http_url(), &event], &[]).await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    sink.wait_for(1).await?;
    Ok(())
}

//! The paging actions, `pagerduty` and `opsgenie`, against local servers that check exactly what
//! arrives: paths, auth, severity mapping, stable dedup keys and template overrides.

use std::time::Duration;

use hooker_tests::{Agent, Reply, Sink, TempDir, fixture, wait_until};
use serde_json::{Value, json};

/// One route `r` taking every event, an inline template `t` and the given actions.
fn config(rego: &str, names: &[&str], actions: &str) -> String {
    let rego: String = rego.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "routes:\n  - name: r\n    input: input\n    template: t\n    actions: [{}]\ntemplates:\n  - name: t\n    body: |\n{rego}actions:\n{actions}",
        names.join(", ")
    )
}

fn event(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture")
}

async fn failure(agent: &Agent, action: &str) -> anyhow::Result<Value> {
    wait_until(
        &format!("a failure of {action} logged"),
        Duration::from_secs(20),
        async || {
            agent
                .logs()
                .into_iter()
                .find(|l| l["message"] == "Delivery failed." && l["action"] == action)
        },
    )
    .await
}

async fn outcome(
    agent: &Agent,
    action: &str,
    kind: &str,
    outcome: &str,
    n: f64,
) -> anyhow::Result<()> {
    let series = format!(
        r#"hooker_deliveries_total{{action="{action}",type="{kind}",outcome="{outcome}"}}"#
    );
    wait_until(&series, Duration::from_secs(20), async || {
        (agent.metric(&series).await.ok()? == n).then_some(())
    })
    .await
}

const TRACEE_TEMPLATE: &str = r#"package paging.tracee
import rego.v1
title := sprintf("Tracee: %s", [input.metadata.Properties.signatureName])
result := {"signature": input.metadata.Properties.signatureID, "pod": input.podName}
url := "https://console.example/detections"
"#;

#[tokio::test]
async fn pagerduty_triggers_with_mapped_severity_and_a_stable_dedup_key() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": "x"}),
    )])
    .await?;
    let actions = format!(
        "  - name: pager\n    type: pagerduty\n    enable: true\n    pagerduty-auth-token: unused\n    pagerduty-routing-key: $PD_ROUTING_KEY\n    api-url: {}\n    component: runtime\n",
        sink.url("/")
    );
    let agent = Agent::builder(&config(TRACEE_TEMPLATE, &["pager"], &actions))
        .env("PD_ROUTING_KEY", "R0UT1NGKEY0123456789012345678901")
        .start()
        .await?;
    let dropped = event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json");
    let mut again: Value = serde_json::from_str(&dropped)?;
    again["timestamp"] = json!(1677676299000000000_i64);
    again["processId"] = json!(4242);
    agent.post("/", dropped).await?;
    agent.post("/", again.to_string()).await?;
    agent
        .post(
            "/",
            event("tracee/v0.12-era-signature-anti-debugging-TRC-102.json"),
        )
        .await?;
    let requests = sink.wait_for(3).await?;
    let mut bodies = Vec::new();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v2/enqueue");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let mut body = request.body_json();
        let timestamp = body["payload"]["timestamp"].take();
        assert!(
            timestamp
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "RFC 3339 timestamp: {timestamp}"
        );
        bodies.push(body);
    }
    bodies.sort_by_key(|b| b["payload"]["summary"].to_string());
    let (debug, dropped) = (&bodies[0], &bodies[1]);
    let dedup_key = dropped["dedup_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(dedup_key.starts_with("hooker-"), "{dedup_key}");
    assert_eq!(
        *dropped,
        json!({
            "routing_key": "R0UT1NGKEY0123456789012345678901",
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "Hooker",
            "payload": {
                "summary": "Tracee: New executable dropped",
                "source": "app-75ff449bcd-hfwnz",
                "severity": "warning",
                "timestamp": null,
                "custom_details": {"signature": "TRC-1022", "pod": "app-75ff449bcd-hfwnz"},
                "component": "runtime",
            },
            "links": [{"href": "https://console.example/detections", "text": "Details"}],
        })
    );
    assert_eq!(bodies[2], *dropped, "the same finding later: same incident");
    assert_eq!(
        debug["payload"]["severity"], "info",
        "Tracee severity 1 is low"
    );
    assert_ne!(debug["dedup_key"], dropped["dedup_key"], "another finding");
    outcome(&agent, "pager", "pagerduty", "success", 3.0).await
}

#[tokio::test]
async fn pagerduty_retries_429_and_dead_letters_an_invalid_event() -> anyhow::Result<()> {
    let busy = Sink::scripted(vec![
        Reply::json(429, json!({"status": "throttle event"})).header("retry-after", "0"),
        Reply::json(202, json!({"status": "success"})),
    ])
    .await?;
    let invalid = Sink::scripted(vec![Reply::json(
        400,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"]}),
    )])
    .await?;
    let policy = "    retry-initial-backoff: 10ms\n    retry-max-attempts: 3\n";
    let actions = format!(
        "  - name: busy\n    type: pagerduty\n    enable: true\n    pagerduty-routing-key: k\n    api-url: {}\n{policy}  - name: invalid\n    type: pagerduty\n    enable: true\n    pagerduty-routing-key: k\n    api-url: {}\n{policy}",
        busy.url("/"),
        invalid.url("/"),
    );
    let agent = Agent::start(&config(TRACEE_TEMPLATE, &["busy", "invalid"], &actions)).await?;
    agent
        .post(
            "/",
            event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        )
        .await?;
    outcome(&agent, "busy", "pagerduty", "success", 1.0).await?;
    assert_eq!(busy.requests().len(), 2);
    let error = failure(&agent, "invalid").await?;
    let text = error["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("HTTP 400") && text.contains("routing_key"),
        "{error}"
    );
    wait_until("dead-lettered", Duration::from_secs(20), async || {
        (agent.metric("hooker_dead_letters").await.ok()? == 1.0).then_some(())
    })
    .await?;
    assert_eq!(invalid.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn opsgenie_creates_an_alert_with_responders_and_template_overrides() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::json(
        202,
        json!({"result": "Request will be processed", "took": 0.1, "requestId": "r"}),
    )])
    .await?;
    let config = format!(
        r#"routes:
  - name: detections
    input: input.metadata.Properties.signatureID
    template: override
    actions: [genie]
  - name: scans
    input: input.ArtifactName
    template: plain
    actions: [genie]
templates:
  - name: override
    body: |
      package paging.override
      import rego.v1
      title := sprintf("Tracee: %s", [input.metadata.Properties.signatureName])
      result := json.marshal({{"description": input.metadata.Description, "alias": input.metadata.Properties.signatureID, "entity": input.podName, "priority": "P2", "tags": "runtime, tracee", "details": {{"pod": input.podName}}}})
  - name: plain
    body: |
      package paging.plain
      import rego.v1
      title := sprintf("Trivy: %s", [input.ArtifactName])
      result := "Vulnerabilities found"
actions:
  - name: genie
    type: opsgenie
    enable: true
    token: $OPSGENIE_KEY
    api-url: {}
    user: hooker
    assignee: [alice@example.com]
    responders: ["team:SecOps", "escalation:Night"]
    recipients: [bob@example.com]
    visible-to: ["team:SecOps"]
    tags: [hooker, tracee]
    entity: cluster-1
"#,
        sink.url("/")
    );
    let agent = Agent::builder(&config)
        .env("OPSGENIE_KEY", "eb243592-faa2-4ba2-a551-1afdf565c889")
        .start()
        .await?;
    agent
        .post(
            "/",
            event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        )
        .await?;
    let detection = sink.wait_for(1).await?.remove(0);
    agent
        .post("/", event("trivy/trivy-image-alpine-310.json"))
        .await?;
    let scan = sink.wait_for(2).await?.remove(1);
    for request in [&detection, &scan] {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v2/alerts");
        assert_eq!(
            request.header("authorization"),
            Some("GenieKey eb243592-faa2-4ba2-a551-1afdf565c889")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let responders = json!([
        {"type": "user", "username": "alice@example.com"},
        {"type": "team", "name": "SecOps"},
        {"type": "escalation", "name": "Night"},
    ]);
    let visible = json!([
        {"type": "user", "username": "bob@example.com"},
        {"type": "team", "name": "SecOps"},
    ]);
    assert_eq!(
        detection.body_json(),
        json!({
            "message": "Tracee: New executable dropped",
            "alias": "TRC-1022",
            "description": "An Executable file was dropped in the system during runtime. Container images are usually built with all binaries needed inside. A dropped binary may indicate that an adversary infiltrated your container.",
            "priority": "P2",
            "responders": responders,
            "visibleTo": visible,
            "tags": ["hooker", "tracee", "runtime"],
            "entity": "app-75ff449bcd-hfwnz",
            "user": "hooker",
            "details": {"pod": "app-75ff449bcd-hfwnz"},
        })
    );
    let scan = scan.body_json();
    let alias = scan["alias"].as_str().unwrap_or_default().to_string();
    assert!(
        alias.starts_with("hooker-"),
        "a stable per-finding alias: {alias}"
    );
    assert_eq!(
        scan,
        json!({
            "message": "Trivy: testdata/fixtures/images/alpine-310.tar.gz",
            "alias": alias,
            "description": "Vulnerabilities found",
            "priority": "P3",
            "responders": responders,
            "visibleTo": visible,
            "tags": ["hooker", "tracee"],
            "entity": "cluster-1",
            "user": "hooker",
        }),
        "the worst Trivy severity in the report is MEDIUM: P3"
    );
    outcome(&agent, "genie", "opsgenie", "success", 2.0).await
}

#[tokio::test]
async fn opsgenie_region_picks_the_api_host_in_previews() -> anyhow::Result<()> {
    let dir = TempDir::new("opsgenie-region");
    let cfg = dir.join("cfg.yaml");
    let actions = "  - name: eu\n    type: opsgenie\n    enable: true\n    token: secret-key\n    region: eu\n  - name: us\n    type: opsgenie\n    enable: true\n    token: secret-key\n  - name: pd\n    type: pagerduty\n    enable: true\n    pagerduty-routing-key: secret-routing-key\n    region: eu\n";
    std::fs::write(&cfg, config(TRACEE_TEMPLATE, &["eu", "us", "pd"], actions))?;
    let event = fixture("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json");
    let (code, stdout, stderr) = hooker_tests::hooker(
        &[
            "test-route",
            "--cfgfile",
            &cfg.display().to_string(),
            "--event",
            &event.display().to_string(),
        ],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains("secret-"),
        "previews hide secrets: {stdout}"
    );
    let report: Value = serde_json::from_str(&stdout)?;
    let deliveries = report[0]["routes"][0]["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let preview = |name: &str| {
        deliveries
            .iter()
            .find(|d| d["action"] == name)
            .map(|d| d["would_send"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        preview("eu")["url"],
        "https://api.eu.opsgenie.com/v2/alerts"
    );
    assert_eq!(preview("us")["url"], "https://api.opsgenie.com/v2/alerts");
    assert_eq!(preview("us")["headers"]["authorization"], "***");
    assert_eq!(preview("us")["body"]["priority"], "P3");
    assert_eq!(
        preview("pd")["url"],
        "https://events.eu.pagerduty.com/v2/enqueue"
    );
    assert_eq!(preview("pd")["body"]["routing_key"], "***");
    assert_eq!(preview("pd")["body"]["payload"]["severity"], "warning");
    Ok(())
}

#[tokio::test]
async fn paging_actions_time_out_and_verify_tls() -> anyhow::Result<()> {
    let slow = Sink::with(|_| Reply::status(202).delay(Duration::from_secs(30))).await?;
    let secure = Sink::tls_with(|_| Reply::status(202)).await?;
    let dir = TempDir::new("paging-tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, secure.ca_pem().unwrap_or_default())?;
    let block = |name: &str, kind: &str, url: &str, extra: &str| {
        let key = if kind == "pagerduty" {
            "pagerduty-routing-key"
        } else {
            "token"
        };
        format!(
            "  - name: {name}\n    type: {kind}\n    enable: true\n    {key}: k\n    api-url: {url}\n    retry-max-attempts: 1\n{extra}"
        )
    };
    let with_ca = format!("    ca-file: {}\n", ca.display());
    let timeout = "    timeout: 300ms\n";
    let actions = [
        block("pd-slow", "pagerduty", &slow.url("/"), timeout),
        block("og-slow", "opsgenie", &slow.url("/"), timeout),
        block("pd-tls", "pagerduty", &secure.url("/"), &with_ca),
        block("og-tls", "opsgenie", &secure.url("/"), &with_ca),
        block("pd-untrusted", "pagerduty", &secure.url("/"), ""),
        block("og-untrusted", "opsgenie", &secure.url("/"), ""),
    ]
    .concat();
    let names = [
        "pd-slow",
        "og-slow",
        "pd-tls",
        "og-tls",
        "pd-untrusted",
        "og-untrusted",
    ];
    let agent = Agent::start(&config(TRACEE_TEMPLATE, &names, &actions)).await?;
    agent
        .post(
            "/",
            event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        )
        .await?;
    outcome(&agent, "pd-tls", "pagerduty", "success", 1.0).await?;
    outcome(&agent, "og-tls", "opsgenie", "success", 1.0).await?;
    for (action, expected) in [
        ("pd-slow", "timed out"),
        ("og-slow", "timed out"),
        ("pd-untrusted", "certificate"),
        ("og-untrusted", "certificate"),
    ] {
        let error = failure(&agent, action).await?;
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(expected), "{action}: {error}");
    }
    let paths: Vec<String> = secure.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    Ok(())
}

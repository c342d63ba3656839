//! The chat actions, `slack` and `teams`, against local servers that check exactly what arrives.

use std::time::Duration;

use hooker_tests::{Agent, Reply, Sink, TempDir, wait_until};
use serde_json::{Value, json};

/// One route `r` taking every event, an inline template `t` and the given actions.
fn config(rego: &str, names: &[&str], actions: &str) -> String {
    let rego: String = rego.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "routes:\n  - name: r\n    input: input\n    template: t\n    actions: [{}]\ntemplates:\n  - name: t\n    body: |\n{rego}actions:\n{actions}",
        names.join(", ")
    )
}

fn tracee_event(name: &str) -> String {
    std::fs::read_to_string(hooker_tests::fixture(name)).expect("fixture")
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

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

const SLACK_TEMPLATE: &str = r#"package chat.slack
import rego.v1
title := sprintf("Tracee: %s", [input.SigMetadata.ID])
result := `{"type":"section","text":{"type":"mrkdwn","text":"host <nginx> & co"}},`
"#;

#[tokio::test]
async fn slack_posts_the_title_and_template_blocks_with_a_text_fallback() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::status(200)]).await?;
    let actions = format!(
        "  - name: chat\n    type: slack\n    enable: true\n    url: {}\n    channel: \"#alerts\"\n    headers:\n      X-Team: secops\n",
        sink.url("/services/T000/B000/XXXX")
    );
    let agent = Agent::start(&config(SLACK_TEMPLATE, &["chat"], &actions)).await?;
    agent
        .post("/", tracee_event("postee/tracee-minimal.json"))
        .await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/services/T000/B000/XXXX");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-team"), Some("secops"));
    assert_eq!(
        request.body_json(),
        json!({
            "blocks": [section("*Tracee: TRC-2*"), section("host &lt;nginx&gt; &amp; co")],
            "text": "Tracee: TRC-2",
            "channel": "#alerts",
        })
    );
    outcome(&agent, "chat", "slack", "success", 1.0).await
}

#[tokio::test]
async fn slack_splits_more_than_fifty_blocks_over_several_messages() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let template = r#"package chat.many
import rego.v1
title := "Scan report"
result := json.marshal([b | some n in numbers.range(1, 120); b := {"type": "section", "text": {"type": "mrkdwn", "text": sprintf("finding %d", [n])}}])
"#;
    let actions = format!(
        "  - name: chat\n    type: slack\n    enable: true\n    url: {}\n",
        sink.url("/hook")
    );
    let agent = Agent::start(&config(template, &["chat"], &actions)).await?;
    agent.post("/", r#"{"image":"alpine"}"#).await?;
    let requests = sink.wait_for(3).await?;
    outcome(&agent, "chat", "slack", "success", 1.0).await?;
    assert_eq!(sink.requests().len(), 3, "one delivery, three messages");
    let mut findings = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let body = request.body_json();
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        assert!(blocks.len() <= 50, "Slack's block limit");
        let heading = format!("Scan report (part {} of 3)", index + 1);
        assert_eq!(blocks[0], section(&format!("*{heading}*")));
        assert_eq!(body["text"], heading.as_str());
        findings.extend(blocks[1..].iter().map(|b| b["text"]["text"].clone()));
    }
    let expected: Vec<Value> = (1..=120)
        .map(|n| Value::from(format!("finding {n}")))
        .collect();
    assert_eq!(findings, expected, "every block delivered once, in order");
    Ok(())
}

#[tokio::test]
async fn slack_plain_text_bodies_become_sections() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let template = "package chat.text\nimport rego.v1\ntitle := \"Plain\"\nresult := \"line one\\nline <two>\"\n";
    let actions = format!(
        "  - name: chat\n    type: slack\n    enable: true\n    url: {}\n",
        sink.url("/hook")
    );
    let agent = Agent::start(&config(template, &["chat"], &actions)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(
        request.body_json(),
        json!({"blocks": [section("*Plain*"), section("line one\nline &lt;two&gt;")], "text": "Plain"})
    );
    Ok(())
}

#[tokio::test]
async fn chat_actions_retry_5xx_and_dead_letter_4xx() -> anyhow::Result<()> {
    let flaky = Sink::scripted(vec![
        Reply::status(503).header("retry-after", "0"),
        Reply::status(200),
    ])
    .await?;
    let refusing = Sink::scripted(vec![Reply {
        status: 400,
        body: "invalid_blocks".into(),
        headers: vec![],
        delay: None,
    }])
    .await?;
    let teams_flaky = Sink::scripted(vec![
        Reply {
            status: 200,
            body: "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId x".into(),
            headers: vec![],
            delay: None,
        },
        Reply {
            status: 200,
            body: "1".into(),
            headers: vec![],
            delay: None,
        },
    ])
    .await?;
    let policy = "    retry-initial-backoff: 10ms\n    retry-max-attempts: 3\n";
    let actions = format!(
        "  - name: flaky\n    type: slack\n    enable: true\n    url: {}\n{policy}  - name: refused\n    type: slack\n    enable: true\n    url: {}\n{policy}  - name: connector\n    type: teams\n    enable: true\n    teams-format: connector\n    url: {}\n{policy}",
        flaky.url("/a"),
        refusing.url("/b"),
        teams_flaky.url("/c"),
    );
    let agent = Agent::start(&config(
        SLACK_TEMPLATE,
        &["flaky", "refused", "connector"],
        &actions,
    ))
    .await?;
    agent
        .post("/", tracee_event("postee/tracee-minimal.json"))
        .await?;
    outcome(&agent, "flaky", "slack", "success", 1.0).await?;
    let attempts = flaky.requests();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].body, attempts[1].body,
        "the retry sends the same message"
    );

    outcome(&agent, "connector", "teams", "success", 1.0).await?;
    assert_eq!(
        teams_flaky.requests().len(),
        2,
        "a 429 sentence in a 200 is retried"
    );

    let error = failure(&agent, "refused").await?;
    let text = error["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("HTTP 400") && text.contains("invalid_blocks"),
        "{error}"
    );
    assert_eq!(error["retryable"], false);
    wait_until("dead-lettered", Duration::from_secs(20), async || {
        (agent.metric("hooker_dead_letters").await.ok()? == 1.0).then_some(())
    })
    .await?;
    assert_eq!(refusing.requests().len(), 1, "a 400 is not retried");
    Ok(())
}

#[tokio::test]
async fn teams_connector_card_carries_the_html_link_and_severity_colour() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply {
        status: 200,
        body: "1".into(),
        headers: vec![],
        delay: None,
    }])
    .await?;
    let template = r#"package chat.teams
import rego.v1
title := sprintf("Tracee: %s", [input.metadata.Properties.signatureName])
result := sprintf("<p>Pod <b>%s</b></p>", [input.podName])
url := "https://console.example/pods"
"#;
    let actions = format!(
        "  - name: card\n    type: teams\n    enable: true\n    teams-format: connector\n    url: {}\n",
        sink.url("/webhookb2/abc/IncomingWebhook/x/y")
    );
    let agent = Agent::start(&config(template, &["card"], &actions)).await?;
    agent
        .post(
            "/",
            tracee_event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        )
        .await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/webhookb2/abc/IncomingWebhook/x/y");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body_json(),
        json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": "Tracee: New executable dropped",
            "themeColor": "FBCA04",
            "title": "Tracee: New executable dropped",
            "text": "<p>Pod <b>app-75ff449bcd-hfwnz</b></p>",
            "potentialAction": [{
                "@type": "OpenUri",
                "name": "Open",
                "targets": [{"os": "default", "uri": "https://console.example/pods"}],
            }],
        })
    );
    outcome(&agent, "card", "teams", "success", 1.0).await
}

#[tokio::test]
async fn teams_workflows_get_an_adaptive_card_and_long_bodies_are_split() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::status(202)]).await?;
    let template = r#"package chat.adaptive
import rego.v1
title := "Trivy report"
rows := concat("", [sprintf("<tr><td>CVE-%d</td><td>HIGH</td></tr>", [n]) | some n in numbers.range(1, 300)])
result := sprintf("<h2>Image %s</h2><table>%s</table>", [input.image, rows])
"#;
    let actions = format!(
        "  - name: flow\n    type: teams\n    enable: true\n    teams-format: adaptive\n    size-limit: 2000\n    url: {}\n",
        sink.url("/workflows/abc/triggers/manual/paths/invoke?sig=secret")
    );
    let agent = Agent::start(&config(template, &["flow"], &actions)).await?;
    agent.post("/", r#"{"image":"alpine:3.10"}"#).await?;
    outcome(&agent, "flow", "teams", "success", 1.0).await?;
    let requests = sink.requests();
    assert!(requests.len() > 1, "split into several cards");
    let mut text = String::new();
    for (index, request) in requests.iter().enumerate() {
        assert_eq!(request.path, "/workflows/abc/triggers/manual/paths/invoke");
        assert_eq!(request.query.as_deref(), Some("sig=secret"));
        let body = request.body_json();
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["body"][0]["text"],
            format!("Trivy report (part {} of {})", index + 1, requests.len())
        );
        let part = card["body"][1]["text"].as_str().unwrap_or_default();
        assert!(part.len() <= 2000);
        assert!(!part.contains('<'), "HTML converted: {part}");
        text.push_str(part);
    }
    assert!(text.starts_with("**Image alpine:3.10**"), "{text}");
    for n in 1..300 {
        assert!(
            text.contains(&format!("CVE-{n} | HIGH")),
            "row {n} delivered"
        );
    }
    Ok(())
}

#[tokio::test]
async fn chat_actions_time_out_as_configured() -> anyhow::Result<()> {
    let slow = Sink::with(|_| Reply::status(200).delay(Duration::from_secs(30))).await?;
    let policy = "    timeout: 300ms\n    retry-max-attempts: 1\n";
    let actions = format!(
        "  - name: chat\n    type: slack\n    enable: true\n    url: {}\n{policy}  - name: card\n    type: teams\n    enable: true\n    url: {}\n{policy}",
        slow.url("/a"),
        slow.url("/b"),
    );
    let agent = Agent::start(&config(SLACK_TEMPLATE, &["chat", "card"], &actions)).await?;
    agent
        .post("/", tracee_event("postee/tracee-minimal.json"))
        .await?;
    for action in ["chat", "card"] {
        let error = failure(&agent, action).await?;
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains("timed out"), "{action}: {error}");
        assert_eq!(error["retryable"], true);
    }
    Ok(())
}

#[tokio::test]
async fn chat_actions_verify_tls_against_the_configured_ca() -> anyhow::Result<()> {
    let sink = Sink::tls_with(|_| Reply::status(200)).await?;
    let dir = TempDir::new("chat-tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sink.ca_pem().unwrap_or_default())?;
    let ok = |name: &str, kind: &str, extra: &str| {
        format!(
            "  - name: {name}\n    type: {kind}\n    enable: true\n    url: {}\n    retry-max-attempts: 1\n{extra}",
            sink.url(&format!("/{name}"))
        )
    };
    let with_ca = format!("    ca-file: {}\n", ca.display());
    let actions = [
        ok("slack-ca", "slack", &with_ca),
        ok("teams-ca", "teams", &with_ca),
        ok("slack-unknown", "slack", ""),
        ok("teams-unknown", "teams", ""),
    ]
    .concat();
    let agent = Agent::start(&config(
        SLACK_TEMPLATE,
        &["slack-ca", "teams-ca", "slack-unknown", "teams-unknown"],
        &actions,
    ))
    .await?;
    agent
        .post("/", tracee_event("postee/tracee-minimal.json"))
        .await?;
    outcome(&agent, "slack-ca", "slack", "success", 1.0).await?;
    outcome(&agent, "teams-ca", "teams", "success", 1.0).await?;
    for action in ["slack-unknown", "teams-unknown"] {
        let error = failure(&agent, action).await?;
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains("certificate"), "{action}: {error}");
    }
    let paths: Vec<String> = sink.requests().into_iter().map(|r| r.path).collect();
    assert!(!paths.iter().any(|p| p.contains("unknown")), "{paths:?}");
    Ok(())
}

//! The SIEM and ticketing actions, `splunk`, `servicenow` and `awssecurityhub`, against local
//! servers that check exactly what arrives. The Security Hub stand-in recomputes every SigV4
//! signature with its own implementation below and refuses requests whose signature is wrong.

use std::time::Duration;

use hooker_tests::{Agent, Recorded, Reply, Sink, TempDir, fixture, fixture_json, wait_until};
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

async fn delivered(agent: &Agent, action: &str) -> anyhow::Result<Value> {
    wait_until(
        &format!("{action} delivered"),
        Duration::from_secs(20),
        async || {
            agent
                .logs()
                .into_iter()
                .find(|l| l["message"] == "Delivered." && l["action"] == action)
        },
    )
    .await
}

async fn dead_letters(agent: &Agent, n: f64) -> anyhow::Result<()> {
    wait_until("dead letters", Duration::from_secs(20), async || {
        (agent.metric("hooker_dead_letters").await.ok()? == n).then_some(())
    })
    .await
}

const RAW: &str = "package siem.raw\nimport rego.v1\ntitle := \"raw\"\nresult := json.marshal(object.remove(input, [\"postee\", \"hooker\"]))\n";

#[tokio::test]
async fn splunk_sends_a_hec_envelope_for_any_event_and_truncates_big_bodies() -> anyhow::Result<()>
{
    let sink = Sink::scripted(vec![Reply::json(
        200,
        json!({"text": "Success", "code": 0}),
    )])
    .await?;
    let actions = format!(
        "  - name: hec\n    type: splunk\n    enable: true\n    url: {}\n    token: $SPLUNK_TOKEN\n    index: security\n    source: hooker:test\n    sourcetype: tracee\n  - name: small\n    type: splunk\n    enable: true\n    url: {}\n    token: $SPLUNK_TOKEN\n    size-limit: 2KB\n",
        sink.url("/"),
        sink.url("/services/collector"),
    );
    let agent = Agent::builder(&config(RAW, &["hec", "small"], &actions))
        .env("SPLUNK_TOKEN", "11111111-2222-3333-4444-555555555555")
        .env("NODE_NAME", "node-7")
        .start()
        .await?;
    let tracee = "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json";
    agent.post("/", event(tracee)).await?;
    let requests = sink.wait_for(2).await?;
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/services/collector/event");
        assert_eq!(
            request.header("authorization"),
            Some("Splunk 11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let full = requests
        .iter()
        .map(Recorded::body_json)
        .find(|b| b["index"] == "security")
        .unwrap_or_default();
    assert_eq!(
        full,
        json!({
            "host": "node-7",
            "source": "hooker:test",
            "sourcetype": "tracee",
            "index": "security",
            "time": 1677676197.9,
            "event": fixture_json(tracee),
        })
    );

    let big = event("postee/all-in-one-image.json");
    agent.post("/", big).await?;
    let requests = sink.wait_for(4).await?;
    let cut = requests[2..]
        .iter()
        .map(Recorded::body_json)
        .find(|b| b["event"].is_string())
        .unwrap_or_default();
    assert_eq!(cut["host"], "node-7");
    assert_eq!(cut["sourcetype"], "_json");
    assert!(cut.get("index").is_none(), "index left to the token");
    let text = cut["event"].as_str().unwrap_or_default();
    let (kept, marker) = text
        .split_once("… [truncated by hooker: ")
        .unwrap_or_default();
    assert!(
        kept.starts_with('{') && kept.len() == 2048,
        "{}",
        kept.len()
    );
    let total: usize = marker
        .strip_prefix("2048 of ")
        .and_then(|m| m.strip_suffix(" bytes]"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(total > 50_000, "the marker names the full size: {marker}");
    let whole = requests[2..]
        .iter()
        .map(Recorded::body_json)
        .find(|b| b["event"].is_object())
        .unwrap_or_default();
    assert_eq!(whole["event"]["image"], "all-in-one:3.5.19223");
    let detail = wait_until("truncation reported", Duration::from_secs(20), async || {
        agent.logs().into_iter().find(|l| {
            l["message"] == "Delivered."
                && l["action"] == "small"
                && l["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("truncated"))
        })
    })
    .await?;
    assert!(
        detail["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("body truncated to 2048 of"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn siem_actions_retry_5xx_and_dead_letter_refusals() -> anyhow::Result<()> {
    let busy = Sink::scripted(vec![
        Reply::json(503, json!({"text": "Server is busy", "code": 9})),
        Reply::json(200, json!({"text": "Success", "code": 0})),
    ])
    .await?;
    let refusing = Sink::scripted(vec![Reply::json(
        403,
        json!({"text": "Invalid token", "code": 4}),
    )])
    .await?;
    let ticketing = Sink::scripted(vec![Reply::json(
        401,
        json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}),
    )])
    .await?;
    let policy = "    retry-initial-backoff: 10ms\n    retry-max-attempts: 3\n";
    let actions = format!(
        "  - name: busy\n    type: splunk\n    enable: true\n    url: {}\n    token: t\n{policy}  - name: refused\n    type: splunk\n    enable: true\n    url: {}\n    token: t\n{policy}  - name: tickets\n    type: servicenow\n    enable: true\n    instance: {}\n    user: admin\n    password: wrong\n{policy}",
        busy.url("/"),
        refusing.url("/"),
        ticketing.url("/"),
    );
    let agent = Agent::start(&config(RAW, &["busy", "refused", "tickets"], &actions)).await?;
    agent.post("/", r#"{"kind":"test"}"#).await?;
    delivered(&agent, "busy").await?;
    assert_eq!(busy.requests().len(), 2);
    for (action, expected) in [
        ("refused", "Invalid token"),
        ("tickets", "User Not Authenticated"),
    ] {
        let error = failure(&agent, action).await?;
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(expected), "{action}: {error}");
        assert_eq!(error["retryable"], false);
    }
    dead_letters(&agent, 2.0).await?;
    assert_eq!(refusing.requests().len(), 1);
    assert_eq!(ticketing.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn servicenow_inserts_a_record_with_the_result_fields() -> anyhow::Result<()> {
    let sink = Sink::with(|request| {
        let status = if request.path.ends_with("/incident") {
            201
        } else {
            200
        };
        Reply::json(
            status,
            json!({"result": {"number": "INC0010001", "sys_id": "abc"}}),
        )
    })
    .await?;
    let template = r#"package siem.servicenow
import rego.v1
title := sprintf("Aqua incident: %s", [input.name])
result := sprintf("Host %s: %s", [input.host_name, input.type])
result_date := input.create_time
result_severity := input.severity_score
result_category := "Security incident"
result_subcategory := input.type
result_assigned_group := input.application_scope[0]
result_summary := sprintf("Policy %s", [input.response_policy_name])
"#;
    let actions = format!(
        "  - name: incident\n    type: serviceNow\n    enable: true\n    instance: {}\n    user: admin\n    password: $SN_PASSWORD\n  - name: secops\n    type: servicenow\n    enable: true\n    instance: {}\n    user: admin\n    password: $SN_PASSWORD\n    board: sn_si_incident\n",
        sink.url(""),
        sink.url("/"),
    );
    let agent = Agent::builder(&config(template, &["incident", "secops"], &actions))
        .env("SN_PASSWORD", "pa:ss")
        .start()
        .await?;
    agent
        .post("/", event("postee/aqua-incident-input.json"))
        .await?;
    let requests = sink.wait_for(2).await?;
    let mut paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/api/now/table/incident", "/api/now/table/sn_si_incident"]
    );
    for request in &requests {
        assert_eq!(request.method, "POST");
        // base64("admin:pa:ss")
        assert_eq!(
            request.header("authorization"),
            Some("Basic YWRtaW46cGE6c3M=")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(
            request.body_json(),
            json!({
                "short_description": "Aqua incident: test",
                "work_notes": "[code]Host ubuntu: Malware[/code]",
                "caller_id": "admin",
                "impact": 3,
                "urgency": 3,
                "opened_at": "1970-01-01 00:00:00",
                "category": "Security incident",
                "subcategory": "Malware",
                "description": "Policy test",
                "assignment_group": "scope1",
            })
        );
    }
    let line = delivered(&agent, "incident").await?;
    assert_eq!(line["detail"], "HTTP 201 INC0010001");
    delivered(&agent, "secops").await?;
    Ok(())
}

// === Security Hub ===

/// What the Security Hub stand-in answers: a SigV4 check done here, independently of Hooker.
fn security_hub(secret: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |request| match verify_sigv4(request, secret) {
        Ok(()) => {
            let n = request.body_json()["Findings"]
                .as_array()
                .map_or(0, Vec::len);
            Reply::json(
                200,
                json!({"FailedCount": 0, "SuccessCount": n, "FailedFindings": []}),
            )
        }
        Err(why) => Reply::json(
            403,
            json!({"message": format!("The request signature we calculated does not match: {why}")}),
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Recomputes the request's signature from what arrived, per the SigV4 specification.
fn verify_sigv4(request: &Recorded, secret: &str) -> Result<(), String> {
    let authorization = request.header("authorization").ok_or("no authorization")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut parts = std::collections::HashMap::new();
    for part in rest.split(", ") {
        let (key, value) = part.split_once('=').ok_or("malformed authorization")?;
        parts.insert(key, value);
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let scope: Vec<&str> = credential.splitn(2, '/').collect();
    let scope = scope.get(1).ok_or("no scope")?;
    let fields: Vec<&str> = scope.split('/').collect();
    let [date, region, service, "aws4_request"] = fields[..] else {
        return Err(format!("bad scope {scope}"));
    };
    let signed = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let amz_date = request.header("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date and scope disagree".into());
    }
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value = request
            .header(name)
            .ok_or_else(|| format!("signed header {name} missing"))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        request.method,
        request.path,
        request.query.clone().unwrap_or_default(),
        sha256(&request.body)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256(canonical.as_bytes())
    );
    let key = hmac(
        &hmac(
            &hmac(&hmac(format!("AWS4{secret}").as_bytes(), date), region),
            service,
        ),
        "aws4_request",
    );
    let expected = hex(&hmac(&key, &to_sign));
    let given = parts.get("Signature").ok_or("no Signature")?;
    if *given == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {given}"))
    }
}

#[test]
fn the_test_verifier_accepts_aws_published_get_vanilla() {
    let request = Recorded {
        method: "GET".into(),
        path: "/".into(),
        query: None,
        headers: [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        body: Vec::new(),
    };
    assert_eq!(
        verify_sigv4(&request, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        Ok(())
    );
    assert!(verify_sigv4(&request, "another secret").is_err());
}

#[tokio::test]
async fn security_hub_imports_signed_batches_of_asff_findings() -> anyhow::Result<()> {
    let sink = Sink::with(security_hub("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")).await?;
    let config = format!(
        r#"routes:
  - name: asff
    input: input.Findings
    template: raw
    actions: [hub]
  - name: trivy
    input: input.ArtifactName
    template: trivy
    actions: [hub]
  - name: tracee
    input: input.metadata.Properties.signatureID
    template: tracee
    actions: [hub-env]
  - name: many
    input: input.many
    template: many
    actions: [hub]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
  - name: trivy
    body: |
      package siem.trivy
      title := sprintf("Trivy: %s", [input.ArtifactName])
      result := "report"
  - name: tracee
    body: |
      package siem.tracee
      title := sprintf("Tracee: %s", [input.metadata.Properties.signatureName])
      result := input.metadata.Description
  - name: many
    body: |
      package siem.many
      import rego.v1
      title := "many"
      result := json.marshal({{"Findings": [f | some n in numbers.range(1, 150); f := {{"SchemaVersion": "2018-10-08", "Id": sprintf("finding-%d", [n]), "Title": "t"}}]}})
actions:
  - name: hub
    type: awssecurityhub
    enable: true
    endpoint: {endpoint}
    region: eu-west-1
    access-key-id: AKIDEXAMPLE
    secret-access-key: $HUB_SECRET
    session-token: session-token-value
    account-id: "123456789012"
  - name: hub-env
    type: awssecurityhub
    enable: true
    endpoint: {endpoint}
"#,
        endpoint = sink.url("/")
    );
    let agent = Agent::builder(&config)
        .env("HUB_SECRET", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_ACCOUNT_ID", "210987654321")
        .start()
        .await?;

    // Trivy's ASFF output passes through whole.
    agent
        .post("/", event("postee/trivy-aws-securityhub-findings.json"))
        .await?;
    let first = sink.wait_for(1).await?.remove(0);
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/findings/import");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(
        first.header("x-amz-security-token"),
        Some("session-token-value")
    );
    let date = first.header("x-amz-date").unwrap_or_default().to_string();
    assert!(date.len() == 16 && date.ends_with('Z'), "{date}");
    assert_eq!(
        first.header("authorization").unwrap_or_default(),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}/eu-west-1/securityhub/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature={}",
            &date[..8],
            first
                .header("authorization")
                .and_then(|a| a.rsplit_once("Signature="))
                .map(|(_, s)| s)
                .unwrap_or_default()
        )
    );
    assert_eq!(
        verify_sigv4(&first, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        Ok(())
    );
    let given = fixture_json("postee/trivy-aws-securityhub-findings.json");
    assert_eq!(first.body_json(), given, "Trivy's findings, unchanged");
    let line = delivered(&agent, "hub").await?;
    assert_eq!(line["detail"], "imported 2 finding(s) in 1 request(s)");

    // A Trivy report: one finding per vulnerability.
    agent
        .post("/", event("trivy/trivy-image-alpine-310.json"))
        .await?;
    let second = sink.wait_for(2).await?.remove(1);
    let findings = second.body_json()["Findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(findings.len(), 4);
    for finding in &findings {
        assert_eq!(finding["AwsAccountId"], "123456789012");
        assert_eq!(
            finding["ProductArn"],
            "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
        );
        assert_eq!(
            finding["Types"],
            json!(["Software and Configuration Checks/Vulnerabilities/CVE"])
        );
        assert_eq!(finding["Resources"][0]["Region"], "eu-west-1");
    }
    let labels: Vec<&str> = findings
        .iter()
        .filter_map(|f| f["Severity"]["Label"].as_str())
        .collect();
    assert!(labels.contains(&"MEDIUM"), "{labels:?}");

    // Any other event: one generic finding, credentials and region from the environment.
    agent
        .post(
            "/",
            event("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        )
        .await?;
    let third = sink.wait_for(3).await?.remove(2);
    assert!(
        third
            .header("authorization")
            .unwrap_or_default()
            .contains("Credential=AKIDFROMENV/")
            && third
                .header("authorization")
                .unwrap_or_default()
                .contains("/us-west-2/securityhub/aws4_request"),
        "{:?}",
        third.header("authorization")
    );
    assert_eq!(third.header("x-amz-security-token"), None);
    let finding = third.body_json()["Findings"][0].clone();
    let id = finding["Id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("hooker-"), "{id}");
    assert_eq!(finding["AwsAccountId"], "210987654321");
    assert_eq!(finding["GeneratorId"], "hooker/tracee");
    assert_eq!(finding["Title"], "Tracee: New executable dropped");
    assert_eq!(finding["Types"], json!(["TTPs/Defense Evasion"]));
    assert_eq!(finding["Severity"]["Label"], "MEDIUM");
    assert_eq!(finding["Resources"][0]["Type"], "Container");
    assert_eq!(
        finding["Resources"][0]["Id"],
        "docker.io/library/ubuntu:latest"
    );
    delivered(&agent, "hub-env").await?;

    // More than 100 findings: several signed requests.
    agent.post("/", r#"{"many": true}"#).await?;
    let all = sink.wait_for(5).await?;
    let sizes: Vec<usize> = all[3..]
        .iter()
        .map(|r| r.body_json()["Findings"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 50]);
    wait_until("all imports succeed", Duration::from_secs(20), async || {
        let n = agent
            .metric(
                r#"hooker_deliveries_total{action="hub",type="awssecurityhub",outcome="success"}"#,
            )
            .await
            .ok()?;
        (n == 3.0).then_some(())
    })
    .await?;
    assert!(
        sink.requests()
            .iter()
            .all(|r| verify_sigv4(r, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").is_ok())
    );
    Ok(())
}

#[tokio::test]
async fn security_hub_refusals_and_bad_signatures_fail_the_delivery() -> anyhow::Result<()> {
    let refusing = Sink::scripted(vec![Reply::json(
        200,
        json!({"FailedCount": 1, "SuccessCount": 0, "FailedFindings": [{"Id": "x", "ErrorCode": "InvalidInput", "ErrorMessage": "Finding does not adhere to ASFF"}]}),
    )])
    .await?;
    let checking = Sink::with(security_hub("the-right-secret")).await?;
    let actions = format!(
        "  - name: refused\n    type: awssecurityhub\n    enable: true\n    endpoint: {}\n    region: eu-west-1\n    access-key-id: AKID\n    secret-access-key: s\n    account-id: \"123456789012\"\n  - name: wrong-key\n    type: awssecurityhub\n    enable: true\n    endpoint: {}\n    region: eu-west-1\n    access-key-id: AKID\n    secret-access-key: the-wrong-secret\n    account-id: \"123456789012\"\n",
        refusing.url("/"),
        checking.url("/"),
    );
    let agent = Agent::start(&config(RAW, &["refused", "wrong-key"], &actions)).await?;
    agent.post("/", r#"{"kind":"test"}"#).await?;
    let refused = failure(&agent, "refused").await?;
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Security Hub refused 1 finding(s): x: InvalidInput"),
        "{refused}"
    );
    let wrong = failure(&agent, "wrong-key").await?;
    let text = wrong["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("HTTP 403") && text.contains("signature"),
        "{wrong}"
    );
    dead_letters(&agent, 2.0).await
}

// === Security Hub credentials from the AWS credential chain ===

/// A Security Hub action with no keys in its config, so the agent's AWS credential chain
/// (configured by `env` alone) signs. Returns the import the stand-in accepted.
async fn import_with_chain(
    env: Vec<(&str, String)>,
    secret: &'static str,
) -> anyhow::Result<Recorded> {
    let hub = Sink::with(security_hub(secret)).await?;
    let actions = format!(
        "  - name: hub\n    type: awssecurityhub\n    enable: true\n    endpoint: {}\n    account-id: \"123456789012\"\n",
        hub.url("/")
    );
    let mut builder = Agent::builder(&config(RAW, &["hub"], &actions));
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    // The signer's and the chain's own traces on: no secret may reach them either.
    let agent = builder
        .env("AWS_REGION", "eu-west-1")
        .env(
            "HOOKER_LOG",
            "hooker=debug,info,aws_sigv4=trace,object_store=trace",
        )
        .start()
        .await?;
    agent.post("/", r#"{"kind":"test"}"#).await?;
    let line = delivered(&agent, "hub").await?;
    assert_eq!(line["detail"], "imported 1 finding(s) in 1 request(s)");
    let import = hub.wait_for(1).await?.remove(0);
    assert_eq!(verify_sigv4(&import, secret), Ok(()));
    let logs = serde_json::to_string(&agent.logs())?;
    let mut secrets = vec![secret];
    secrets.extend(import.header("x-amz-security-token"));
    for secret in secrets {
        assert!(!logs.contains(secret), "{secret} logged");
    }
    Ok(import)
}

/// The query parameters of a request, percent-decoded.
fn query_params(request: &Recorded) -> std::collections::HashMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut index = 0;
        while index < bytes.len() {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[index], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    index += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    index += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    request
        .query
        .clone()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (decode(key), decode(value)))
        .collect()
}

const IRSA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.service-account-token.signature";
const IRSA_ROLE: &str = "arn:aws:iam::123456789012:role/hooker-securityhub";
const IRSA_SECRET: &str = "irsa/Secret+Access+Key";

/// AWS STS's `AssumeRoleWithWebIdentity` as documented: refuses anything but the expected
/// request, answers the documented XML with known credentials.
fn sts(request: &Recorded) -> Reply {
    let params = query_params(request);
    let expected = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", IRSA_ROLE),
        ("RoleSessionName", "hooker-test"),
        ("WebIdentityToken", IRSA_TOKEN),
    ];
    if request.method != "POST"
        || expected
            .iter()
            .any(|(key, value)| params.get(*key).map(String::as_str) != Some(*value))
    {
        return Reply::status(400);
    }
    let mut reply = Reply::status(200).header("content-type", "text/xml");
    reply.body = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:hooker:hooker</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/hooker-securityhub/hooker-test</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:hooker-test</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>IRSA-SESSION-TOKEN</SessionToken>
      <SecretAccessKey>{IRSA_SECRET}</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAIRSAEXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    );
    reply
}

#[tokio::test]
async fn security_hub_signs_with_irsa_credentials_from_sts() -> anyhow::Result<()> {
    let sts = Sink::tls_with(sts).await?;
    let dir = TempDir::new("hub-irsa");
    let token = dir.join("token");
    std::fs::write(&token, IRSA_TOKEN)?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sts.ca_pem().unwrap_or_default())?;
    let import = import_with_chain(
        vec![
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            ("AWS_ROLE_ARN", IRSA_ROLE.to_string()),
            ("AWS_ROLE_SESSION_NAME", "hooker-test".to_string()),
            ("AWS_ENDPOINT_URL_STS", sts.url("/")),
            ("AWS_CA_BUNDLE", ca.display().to_string()),
        ],
        IRSA_SECRET,
    )
    .await?;
    assert_eq!(
        import.header("x-amz-security-token"),
        Some("IRSA-SESSION-TOKEN")
    );
    assert!(
        import
            .header("authorization")
            .unwrap_or_default()
            .contains("Credential=ASIAIRSAEXAMPLE/"),
        "{:?}",
        import.header("authorization")
    );
    assert_eq!(sts.requests().len(), 1, "the credentials are cached");
    Ok(())
}

const IMDS_SECRET: &str = "imds-secret-access-key";

/// The EC2 instance metadata service, IMDSv2 only: every read needs the session token.
fn imds(request: &Recorded) -> Reply {
    let token = request.header("x-aws-ec2-metadata-token") == Some("IMDS-SESSION");
    match (request.method.as_str(), request.path.as_str()) {
        ("PUT", "/latest/api/token")
            if request
                .header("x-aws-ec2-metadata-token-ttl-seconds")
                .is_some() =>
        {
            let mut reply = Reply::status(200);
            reply.body = "IMDS-SESSION".into();
            reply
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") if token => {
            let mut reply = Reply::status(200);
            reply.body = "hooker-node-role".into();
            reply
        }
        ("GET", "/latest/meta-data/iam/security-credentials/hooker-node-role") if token => {
            Reply::json(
                200,
                json!({
                    "Code": "Success",
                    "LastUpdated": "2026-12-06T12:00:00Z",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIAIMDSEXAMPLE",
                    "SecretAccessKey": IMDS_SECRET,
                    "Token": "IMDS-ROLE-TOKEN",
                    "Expiration": "2099-01-01T00:00:00Z",
                }),
            )
        }
        _ => Reply::status(401),
    }
}

#[tokio::test]
async fn security_hub_signs_with_instance_metadata_credentials() -> anyhow::Result<()> {
    let metadata = Sink::with(imds).await?;
    let import = import_with_chain(
        vec![(
            "AWS_METADATA_ENDPOINT",
            metadata.url("").trim_end_matches('/').to_string(),
        )],
        IMDS_SECRET,
    )
    .await?;
    assert_eq!(
        import.header("x-amz-security-token"),
        Some("IMDS-ROLE-TOKEN")
    );
    assert!(
        import
            .header("authorization")
            .unwrap_or_default()
            .contains("Credential=ASIAIMDSEXAMPLE/"),
        "{:?}",
        import.header("authorization")
    );
    let paths: Vec<String> = metadata
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/hooker-node-role",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn security_hub_signs_with_the_shared_credentials_files_profile() -> anyhow::Result<()> {
    let dir = TempDir::new("hub-profile");
    let file = dir.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = wrong\n\n\
         [security]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )?;
    let import = import_with_chain(
        vec![
            ("AWS_SHARED_CREDENTIALS_FILE", file.display().to_string()),
            ("AWS_PROFILE", "security".to_string()),
        ],
        "profile-secret",
    )
    .await?;
    assert!(
        import
            .header("authorization")
            .unwrap_or_default()
            .contains("Credential=AKIDPROFILE/20"),
        "{:?}",
        import.header("authorization")
    );
    assert_eq!(import.header("x-amz-security-token"), None);
    Ok(())
}

#[tokio::test]
async fn siem_actions_time_out_and_verify_tls() -> anyhow::Result<()> {
    let slow = Sink::with(|_| Reply::status(200).delay(Duration::from_secs(30))).await?;
    let secure = Sink::tls_with(|request| {
        let body = if request.path.starts_with("/findings") {
            json!({"FailedCount": 0, "SuccessCount": 1})
        } else {
            json!({"result": {"number": "INC1"}, "text": "Success"})
        };
        Reply::json(201, body)
    })
    .await?;
    let dir = TempDir::new("siem-tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, secure.ca_pem().unwrap_or_default())?;
    let block = |name: &str, kind: &str, url: &str, extra: &str| {
        let keys = match kind {
            "splunk" => format!("url: {url}\n    token: t"),
            "servicenow" => format!("instance: {url}\n    user: u\n    password: p"),
            _ => format!(
                "endpoint: {url}\n    region: eu-west-1\n    access-key-id: a\n    secret-access-key: s\n    account-id: \"1\""
            ),
        };
        format!(
            "  - name: {name}\n    type: {kind}\n    enable: true\n    {keys}\n    retry-max-attempts: 1\n{extra}"
        )
    };
    let with_ca = format!("    ca-file: {}\n", ca.display());
    let timeout = "    timeout: 300ms\n";
    let kinds = [
        ("splunk", "sp"),
        ("servicenow", "sn"),
        ("awssecurityhub", "hub"),
    ];
    let mut actions = String::new();
    let mut names = Vec::new();
    for (kind, short) in kinds {
        for (suffix, url, extra) in [
            ("slow", slow.url("/"), timeout.to_string()),
            ("tls", secure.url("/"), with_ca.clone()),
            ("untrusted", secure.url("/"), String::new()),
        ] {
            let name = format!("{short}-{suffix}");
            actions.push_str(&block(&name, kind, &url, &extra));
            names.push(name);
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let agent = Agent::start(&config(RAW, &names, &actions)).await?;
    agent.post("/", r#"{"kind":"test"}"#).await?;
    for (_, short) in kinds {
        delivered(&agent, &format!("{short}-tls")).await?;
        for (suffix, expected) in [("slow", "timed out"), ("untrusted", "certificate")] {
            let action = format!("{short}-{suffix}");
            let error = failure(&agent, &action).await?;
            let text = error["error"].as_str().unwrap_or_default();
            assert!(text.contains(expected), "{action}: {error}");
        }
    }
    assert_eq!(
        secure.requests().len(),
        3,
        "only the trusted ones got through"
    );
    Ok(())
}

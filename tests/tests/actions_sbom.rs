//! The SBOM actions, `nexusiq` and `dependencytrack`, against local servers that check the exact
//! requests: application look-up and creation, the upload itself, errors, timeouts and TLS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hooker_tests::{Agent, Recorded, Reply, Sink, TempDir, fixture, wait_until};
use serde_json::json;

/// The first "Delivery failed." log line of `action`.
async fn failure(agent: &Agent, action: &str) -> anyhow::Result<serde_json::Value> {
    wait_until(
        &format!("a failed delivery of {action}"),
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

async fn delivered(agent: &Agent, action: &str, kind: &str) -> anyhow::Result<()> {
    let series =
        format!(r#"hooker_deliveries_total{{action="{action}",type="{kind}",outcome="success"}}"#);
    wait_until(&series, Duration::from_secs(20), async || {
        (agent.metric(&series).await.ok()? >= 1.0).then_some(())
    })
    .await
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An event carrying the BOM; the template makes the image the title and the BOM the body.
fn sbom_event() -> anyhow::Result<String> {
    let xml = std::fs::read_to_string(fixture("postee/nexus-iq-sbom.xml"))?;
    Ok(json!({ "image": "docker.io/library/alpine:3.10", "bom": xml }).to_string())
}

fn nexus_config(actions: &str) -> String {
    format!(
        r#"
routes:
  - name: sbom
    input: input.bom
    template: sbom
    actions: [{names}]
templates:
  - name: sbom
    body: |
      package sbom
      title := input.image
      result := input.bom
actions:
{actions}
"#,
        names = actions
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A fake IQ server: the organization holds `existing` applications; creating one answers id
/// `app-new`; scans answer `scan`.
async fn nexus(existing: serde_json::Value, scan: Reply) -> anyhow::Result<Sink> {
    Sink::with(
        move |request: &Recorded| match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/iq/api/v2/applications/organization/org-1") => {
                Reply::json(200, json!({ "applications": existing.clone() }))
            }
            ("POST", "/iq/api/v2/applications") => Reply::json(
                200,
                json!({"id": "app-new", "publicId": "docker_io_library_alpine_3_10"}),
            ),
            ("POST", path) if path.starts_with("/iq/api/v2/scan/applications/") => scan.clone(),
            _ => Reply::status(404),
        },
    )
    .await
}

#[tokio::test]
async fn nexusiq_uploads_to_the_existing_application() -> anyhow::Result<()> {
    let existing = json!([
        {"id": "app-other", "publicId": "nginx", "name": "nginx"},
        {"id": "app-7", "publicId": "docker_io_library_alpine_3_10", "name": "alpine"}
    ]);
    let sink = nexus(
        existing,
        Reply::json(
            202,
            json!({"statusUrl": "api/v2/scan/applications/app-7/status/s1"}),
        ),
    )
    .await?;
    let config = nexus_config(&format!(
        r#"  - name: iq
    type: nexusIq
    enable: true
    url: {}
    user: admin
    password: $IQ_PASSWORD
    organization-id: org-1
    stage: release
    headers:
      X-Trace: t1
"#,
        sink.url("/iq/")
    ));
    let agent = Agent::builder(&config)
        .env("IQ_PASSWORD", "s3cret")
        .start()
        .await?;
    agent.post("/", sbom_event()?).await?;
    let requests = sink.wait_for(2).await?;
    let auth = basic("admin", "s3cret");
    let list = &requests[0];
    assert_eq!(list.method, "GET");
    assert_eq!(list.path, "/iq/api/v2/applications/organization/org-1");
    assert_eq!(list.header("authorization"), Some(auth.as_str()));
    assert_eq!(list.header("x-trace"), Some("t1"));
    let scan = &requests[1];
    assert_eq!(scan.method, "POST");
    assert_eq!(
        scan.path,
        "/iq/api/v2/scan/applications/app-7/sources/cyclone"
    );
    assert_eq!(scan.query.as_deref(), Some("stageId=release"));
    assert_eq!(scan.header("authorization"), Some(auth.as_str()));
    assert_eq!(scan.header("content-type"), Some("application/xml"));
    assert_eq!(
        scan.body_text(),
        std::fs::read_to_string(fixture("postee/nexus-iq-sbom.xml"))?
    );
    delivered(&agent, "iq", "nexusiq").await?;
    assert_eq!(sink.requests().len(), 2, "no application was created");
    Ok(())
}

#[tokio::test]
async fn nexusiq_creates_a_missing_application_then_scans_it() -> anyhow::Result<()> {
    let sink = nexus(json!([]), Reply::json(202, json!({"statusUrl": "s"}))).await?;
    let config = nexus_config(&format!(
        r#"  - name: iq
    type: nexusiq
    enable: true
    url: {}
    user: admin
    password: pw
    organization-id: org-1
    source: cyclonedx
"#,
        sink.url("/iq")
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", sbom_event()?).await?;
    let requests = sink.wait_for(3).await?;
    let create = &requests[1];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/iq/api/v2/applications");
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(
        create.body_json(),
        json!({
            "publicId": "docker_io_library_alpine_3_10",
            "name": "docker_io_library_alpine_3_10",
            "organizationId": "org-1"
        })
    );
    assert_eq!(
        requests[2].path,
        "/iq/api/v2/scan/applications/app-new/sources/cyclonedx"
    );
    assert_eq!(requests[2].query, None);
    delivered(&agent, "iq", "nexusiq").await?;
    Ok(())
}

#[tokio::test]
async fn nexusiq_reports_status_and_body_and_honours_its_timeout() -> anyhow::Result<()> {
    let refused = Sink::scripted(vec![Reply::json(
        401,
        json!({"error": "bad credentials for admin"}),
    )])
    .await?;
    let slow = nexus(
        json!([{"id": "a", "publicId": "docker_io_library_alpine_3_10"}]),
        Reply::json(202, json!({})).delay(Duration::from_secs(10)),
    )
    .await?;
    let config = nexus_config(&format!(
        r#"  - name: refused
    type: nexusiq
    enable: true
    url: {}
    user: admin
    password: wrong-password
    organization-id: org-1
  - name: slow
    type: nexusiq
    enable: true
    url: {}
    user: admin
    password: pw
    organization-id: org-1
    timeout: 1s
"#,
        refused.url("/iq"),
        slow.url("/iq")
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", sbom_event()?).await?;
    let refused_log = failure(&agent, "refused").await?;
    let error = refused_log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("listing the organization's applications: HTTP 401")
            && error.contains("bad credentials for admin"),
        "{refused_log}"
    );
    assert_eq!(refused_log["retryable"], false);
    assert!(!error.contains("wrong-password"));
    let slow_log = failure(&agent, "slow").await?;
    let error = slow_log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("uploading the SBOM:") && error.contains("timed out"),
        "{slow_log}"
    );
    assert_eq!(slow_log["retryable"], true);
    Ok(())
}

/// A fake Dependency-Track that records uploads.
async fn dtrack(reply: Reply) -> anyhow::Result<Sink> {
    Sink::with(move |request: &Recorded| {
        if request.method == "PUT" && request.path == "/api/v1/bom" {
            reply.clone()
        } else {
            Reply::status(404)
        }
    })
    .await
}

fn dtrack_config(actions: &str) -> String {
    format!(
        r#"
routes:
  - name: sbom
    input: input.cyclonedx
    template: dt
    actions: [{names}]
templates:
  - name: dt
    body: |
      package dt
      title := input.image
      result := input.cyclonedx
actions:
{actions}
"#,
        names = actions
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn cyclonedx() -> serde_json::Value {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.4",
        "version": 1,
        "components": [{"type": "library", "name": "musl", "version": "1.1.18-r3"}]
    })
}

#[tokio::test]
async fn dependencytrack_puts_the_bom_for_the_project_in_the_title() -> anyhow::Result<()> {
    let sink = dtrack(Reply::json(200, json!({"token": "t-123"}))).await?;
    let config = dtrack_config(&format!(
        r#"  - name: dt
    type: dependencytrack
    enable: true
    url: {}
    dependency-track-api-key: $DT_KEY
    headers:
      X-Trace: t2
"#,
        sink.url("/")
    ));
    let agent = Agent::builder(&config)
        .env("DT_KEY", "odt_abc")
        .start()
        .await?;
    agent
        .post(
            "/",
            json!({"image": "alpine:3.10", "cyclonedx": cyclonedx()}).to_string(),
        )
        .await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/api/v1/bom");
    assert_eq!(request.header("x-api-key"), Some("odt_abc"));
    assert_eq!(request.header("x-trace"), Some("t2"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.body_json();
    let bom =
        base64::engine::general_purpose::STANDARD.decode(body["bom"].as_str().unwrap_or(""))?;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bom)?,
        cyclonedx()
    );
    let mut rest = body.clone();
    rest.as_object_mut().map(|o| o.remove("bom"));
    assert_eq!(
        rest,
        json!({"projectName": "alpine", "projectVersion": "3.10", "autoCreate": true})
    );
    delivered(&agent, "dt", "dependencytrack").await?;
    Ok(())
}

#[tokio::test]
async fn dependencytrack_errors_carry_status_and_body() -> anyhow::Result<()> {
    let sink = dtrack(Reply::json(
        403,
        json!({"message": "PORTFOLIO_MANAGEMENT permission required"}),
    ))
    .await?;
    let config = dtrack_config(&format!(
        r#"  - name: dt
    type: dependencytrack
    enable: true
    url: {}
    dependency-track-api-key: odt_key
    project-version: latest
    auto-create: false
"#,
        sink.url("")
    ));
    let agent = Agent::start(&config).await?;
    agent
        .post(
            "/",
            json!({"image": "alpine", "cyclonedx": cyclonedx()}).to_string(),
        )
        .await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.body_json()["projectName"], "alpine");
    assert_eq!(request.body_json()["projectVersion"], "latest");
    assert_eq!(request.body_json()["autoCreate"], false);
    let log = failure(&agent, "dt").await?;
    let error = log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("uploading the BOM: HTTP 403")
            && error.contains("PORTFOLIO_MANAGEMENT permission required"),
        "{log}"
    );
    assert!(!error.contains("odt_key"));
    Ok(())
}

#[tokio::test]
async fn sbom_actions_verify_tls_and_trust_a_configured_ca() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    let sink = Sink::tls_with(move |request: &Recorded| {
        if let Ok(mut n) = counter.lock() {
            *n += 1;
        }
        match request.path.as_str() {
            "/api/v1/bom" => Reply::json(200, json!({"token": "t"})),
            _ => Reply::status(404),
        }
    })
    .await?;
    let dir = TempDir::new("sbom-ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sink.ca_pem().unwrap_or_default())?;
    let config = dtrack_config(&format!(
        r#"  - name: trusted
    type: dependencytrack
    enable: true
    url: {url}
    dependency-track-api-key: k
    ca-file: {ca}
  - name: untrusted
    type: dependencytrack
    enable: true
    url: {url}
    dependency-track-api-key: k
"#,
        url = sink.url(""),
        ca = ca.display()
    ));
    let agent = Agent::start(&config).await?;
    agent
        .post(
            "/",
            json!({"image": "alpine:3.10", "cyclonedx": cyclonedx()}).to_string(),
        )
        .await?;
    delivered(&agent, "trusted", "dependencytrack").await?;
    let log = failure(&agent, "untrusted").await?;
    let error = log["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(error.contains("certificate"), "{log}");
    assert_eq!(*seen.lock().map_err(|_| anyhow::anyhow!("lock"))?, 1);
    Ok(())
}

#[tokio::test]
async fn test_route_previews_sbom_requests_without_secrets() -> anyhow::Result<()> {
    let dir = TempDir::new("sbom-preview");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        nexus_config(
            r#"  - name: iq
    type: nexusiq
    enable: true
    url: https://iq.example.com
    user: admin
    password: hunter2-secret
    organization-id: org-1
"#,
        ),
    )?;
    let event = dir.join("event.json");
    std::fs::write(&event, sbom_event()?)?;
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
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let preview = &report[0]["routes"][0]["deliveries"][0]["would_send"];
    assert_eq!(preview["authorization"], "Basic ***");
    assert_eq!(
        preview["requests"][0]["url"],
        "https://iq.example.com/api/v2/applications/organization/org-1"
    );
    assert_eq!(
        preview["requests"][2]["url"],
        "https://iq.example.com/api/v2/scan/applications/{applicationId}/sources/cyclone"
    );
    assert_eq!(
        preview["requests"][1]["body"]["publicId"],
        "docker_io_library_alpine_3_10"
    );
    assert!(!stdout.contains("hunter2-secret"));
    Ok(())
}

//! What a library prints on stderr itself (regorus' "could not schedule all statements [0]" on
//! every render of some Postee templates) reaches the log as log events, so every stderr line of
//! `hooker run` with `HOOKER_LOG_FORMAT=json` is JSON.

use std::time::Duration;

use anyhow::Result;
use hooker_tests::{Agent, Sink, TempDir, wait_until};
use serde_json::json;

/// A user template with the construct of Postee's `servicenow` and `trivy-jira` templates that
/// makes regorus print its scheduling notice: `some i, j` declared outside the comprehension that
/// uses them.
const TEMPLATE: &str = r#"package user.sched

vln_list(severity) = vlnrb {
    some i, j
    vlnrb := [r |
        item := input.resources[i]
        item.vulnerabilities[j].aqua_severity == severity
        r := [item.vulnerabilities[j].name]
    ]
}

title := "t"

result := sprintf("%v", [vln_list("high")])
"#;

#[tokio::test]
async fn a_library_printing_on_stderr_keeps_json_logs_json() -> Result<()> {
    let templates = TempDir::new("stderr-templates");
    std::fs::write(templates.join("sched.rego"), TEMPLATE)?;
    let sink = Sink::start().await?;
    let config = format!(
        "routes:\n  - name: r\n    template: t\n    actions: [hook]\ntemplates:\n  - name: t\n    rego-package: user.sched\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: {}\n",
        sink.url("/hook")
    );
    let agent = Agent::builder(&config)
        .env(
            "HOOKER_REGO_TEMPLATES",
            templates.path().display().to_string(),
        )
        .start()
        .await?;
    let event = json!({"image": "x", "resources": [{"vulnerabilities": [{"name": "CVE-1", "aqua_severity": "high"}]}]});
    for _ in 0..3 {
        let (status, answer) = agent.post("/", event.to_string()).await?;
        assert_eq!(status, 200, "{answer}");
    }
    let delivered = sink.wait_for(3).await?;
    assert!(
        delivered[0].body_text().contains("CVE-1"),
        "{}",
        delivered[0].body_text()
    );
    // Wait for the notice, logged (at debug, which the test agent runs with) or printed raw.
    let notice = |l: &serde_json::Value| {
        let text = if l.get("raw").is_some() {
            &l["raw"]
        } else {
            &l["output"]
        };
        text.as_str()
            .is_some_and(|t| t.starts_with("could not schedule all statements"))
    };
    wait_until("regorus' notice", Duration::from_secs(30), async || {
        agent.logs().iter().any(notice).then_some(())
    })
    .await?;
    let logs = agent.logs();
    let raw: Vec<String> = logs
        .iter()
        .filter_map(|l| l.get("raw").map(|r| r.to_string()))
        .collect();
    assert!(raw.is_empty(), "stderr lines that are not JSON: {raw:#?}");
    assert!(
        logs.iter()
            .any(|l| notice(l) && l["message"] == "Rego engine notice on stderr."),
        "the notice is logged as a debug event"
    );
    agent.stop().await?;
    Ok(())
}

//! The `jira` action against a fake Jira that checks every request: createmeta (paged and old),
//! user, board and sprint look-ups, the create request field by field, and the duplicate check
//! that turns a second event for the same finding into a comment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hooker_tests::{Agent, Recorded, Reply, Sink, TempDir, fixture, wait_until};
use serde_json::json;

/// How the fake Jira behaves.
#[derive(Clone, Copy)]
struct Flavour {
    /// Answers Cloud-style (`issueTypes`, `/search/jql`, account ids).
    cloud: bool,
    /// Has only the old `createmeta?expand=` endpoint (Jira before 9).
    legacy: bool,
}

/// The fields of the create screen for the `Bug` type (id 10002), in createmeta's paged shape.
fn bug_fields() -> serde_json::Value {
    json!([
        {"fieldId": "summary", "name": "Summary", "required": true, "schema": {"type": "string", "system": "summary"}},
        {"fieldId": "description", "name": "Description", "schema": {"type": "string", "system": "description"}},
        {"fieldId": "priority", "name": "Priority", "schema": {"type": "priority", "system": "priority"},
         "allowedValues": [{"id": "1", "name": "Highest"}, {"id": "2", "name": "High"}, {"id": "4", "name": "Low"}]},
        {"fieldId": "labels", "name": "Labels", "schema": {"type": "array", "items": "string", "system": "labels"}},
        {"fieldId": "customfield_10020", "name": "Sprint",
         "schema": {"type": "array", "items": "json", "custom": "com.pyxis.greenhopper.jira:gh-sprint", "customId": 10020}},
        {"fieldId": "customfield_10100", "name": "Risk Score", "schema": {"type": "number", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:float"}},
        {"fieldId": "customfield_10101", "name": "Affected Hosts",
         "schema": {"type": "array", "items": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:multiselect"}},
        {"fieldId": "customfield_10102", "name": "Notes", "schema": {"type": "string", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textarea"}},
        {"fieldId": "customfield_10103", "name": "Detected At", "schema": {"type": "datetime", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:datetime"}},
        {"fieldId": "customfield_10104", "name": "Advisory", "schema": {"type": "string", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:url"}},
        {"fieldId": "customfield_10105", "name": "Team", "schema": {"type": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select"}}
    ])
}

fn task_fields() -> serde_json::Value {
    json!([
        {"fieldId": "summary", "name": "Summary", "schema": {"type": "string"}},
        {"fieldId": "priority", "name": "Priority", "schema": {"type": "priority"},
         "allowedValues": [{"id": "2", "name": "High"}, {"id": "3", "name": "Medium"}]}
    ])
}

/// An issue the fake Jira created: its key and labels.
type Created = (String, Vec<String>);

/// A fake Jira with project `SEC`. Created issues are `SEC-1`, `SEC-2`…; a search finds an
/// issue when the JQL names a label the issue was created with.
async fn fake_jira(flavour: Flavour) -> anyhow::Result<Sink> {
    let created: Arc<Mutex<Vec<Created>>> = Arc::default();
    Sink::with(move |request: &Recorded| {
        let query = request.query.clone().unwrap_or_default();
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/jira/rest/api/2/issue/createmeta/SEC/issuetypes") if !flavour.legacy => {
                let types = json!([
                    {"id": "10001", "name": "Task", "subtask": false},
                    {"id": "10002", "name": "Bug", "subtask": false},
                    {"id": "10003", "name": "Sub-task", "subtask": true}
                ]);
                let key = if flavour.cloud { "issueTypes" } else { "values" };
                Reply::json(200, json!({"startAt": 0, "maxResults": 100, "total": 3, key: types}))
            }
            ("GET", "/jira/rest/api/2/issue/createmeta/SEC/issuetypes/10002") if !flavour.legacy => {
                let key = if flavour.cloud { "fields" } else { "values" };
                Reply::json(200, json!({"startAt": 0, "maxResults": 100, "total": 11, "isLast": true, key: bug_fields()}))
            }
            ("GET", "/jira/rest/api/2/issue/createmeta/SEC/issuetypes/10001") if !flavour.legacy => {
                let key = if flavour.cloud { "fields" } else { "values" };
                Reply::json(200, json!({"startAt": 0, "maxResults": 100, "total": 2, key: task_fields()}))
            }
            ("GET", "/jira/rest/api/2/issue/createmeta") if flavour.legacy => {
                let as_map = |list: serde_json::Value| {
                    let mut map = serde_json::Map::new();
                    for f in list.as_array().cloned().unwrap_or_default() {
                        map.insert(f["fieldId"].as_str().unwrap_or("").to_string(), f);
                    }
                    serde_json::Value::Object(map)
                };
                Reply::json(200, json!({"projects": [{"id": "1", "key": "SEC", "issuetypes": [
                    {"id": "10001", "name": "Task", "fields": as_map(task_fields())},
                    {"id": "10002", "name": "Bug", "fields": as_map(bug_fields())}
                ]}]}))
            }
            ("GET", "/jira/rest/api/2/user/search") => match query.as_str() {
                "username=alice" => Reply::json(200, json!([{"name": "alice", "key": "JIRAUSER10"}])),
                "query=owner%40example.com" => Reply::json(200, json!([
                    {"accountId": "5b10ac8d82e05b22cc7d4ef5", "emailAddress": "owner@example.com"}
                ])),
                _ => Reply::json(200, json!([])),
            },
            ("GET", "/jira/rest/agile/1.0/board") => Reply::json(200, json!({"values": [
                {"id": 7, "name": "SEC board", "type": "scrum"}
            ]})),
            ("GET", "/jira/rest/agile/1.0/board/7/sprint") => Reply::json(200, json!({"values": [
                {"id": 41, "name": "Sprint 41", "state": "active"},
                {"id": 42, "name": "Sprint 42", "state": "future"}
            ]})),
            ("POST", "/jira/rest/api/2/search" | "/jira/rest/api/2/search/jql") => {
                let jql = request.body_json()["jql"].as_str().unwrap_or("").to_string();
                let issues: Vec<_> = created
                    .lock()
                    .map(|c| c.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .rev()
                    .filter(|(_, labels)| labels.iter().any(|l| jql.contains(&format!("labels = \"{l}\""))))
                    .map(|(key, _)| json!({"id": "1", "key": key}))
                    .take(1)
                    .collect();
                Reply::json(200, json!({"issues": issues}))
            }
            ("POST", "/jira/rest/api/2/issue") => {
                let labels: Vec<String> = request.body_json()["fields"]["labels"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect();
                let Ok(mut created) = created.lock() else {
                    return Reply::status(500);
                };
                let key = format!("SEC-{}", created.len() + 1);
                created.push((key.clone(), labels));
                Reply::json(201, json!({"id": "10500", "key": key, "self": "x"}))
            }
            ("POST", path) if path.starts_with("/jira/rest/api/2/issue/") && path.ends_with("/comment") => {
                Reply::json(201, json!({"id": "9"}))
            }
            _ => Reply::json(404, json!({"errorMessages": ["no such endpoint"]})),
        }
    })
    .await
}

fn config(actions: &str) -> String {
    format!(
        r#"
routes:
  - name: detections
    input: input.SigMetadata.ID
    template: jira
    actions: [{names}]
templates:
  - name: jira
    body: |
      package jira
      title := sprintf("%s on %s", [input.SigMetadata.ID, input.SigMetadata.Hostname])
      result := sprintf("h1. Detection\n*Signature:* %s", [input.SigMetadata.ID])
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

fn tracee_event() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(fixture(
        "postee/tracee-minimal.json",
    ))?)
}

fn paths(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| match &r.query {
            Some(q) => format!("{} {}?{q}", r.method, r.path),
            None => format!("{} {}", r.method, r.path),
        })
        .collect()
}

fn find<'a>(requests: &'a [Recorded], method: &str, path: &str) -> Vec<&'a Recorded> {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

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

async fn successes(agent: &Agent, action: &str, n: f64) -> anyhow::Result<()> {
    let series =
        format!(r#"hooker_deliveries_total{{action="{action}",type="jira",outcome="success"}}"#);
    wait_until(&series, Duration::from_secs(20), async || {
        (agent.metric(&series).await.ok()? >= n).then_some(())
    })
    .await
}

#[tokio::test]
async fn jira_server_opens_one_ticket_per_finding_and_comments_on_repeats() -> anyhow::Result<()> {
    let sink = fake_jira(Flavour {
        cloud: false,
        legacy: false,
    })
    .await?;
    let config = config(&format!(
        r#"  - name: tickets
    type: jira
    enable: true
    url: {}
    token: $JIRA_PAT
    project-key: sec
    issuetype: Bug
    priority: high
    assignee: [alice]
    labels: [security, tracee alert]
    fix-versions: ["1.0"]
    affects-versions: ["0.9"]
    board: SEC board
    sprint: Sprint 42
    headers:
      X-Team: secops
    unknowns:
      Risk Score-numeric-field: 7.5
      Affected Hosts-multiple-value: web-1, event.input.SigMetadata.Hostname
      Notes-multiple-line-text-field: "first line\nsecond line"
      Detected At-date-time-picker: 2014-04-11T12:14:26.880+0400
      Advisory-url: https://avd.aquasec.com/misconfig/trc-2
      Team: Blue
      No Such Field: ignored
"#,
        sink.url("/jira/")
    ));
    let agent = Agent::builder(&config)
        .env("JIRA_PAT", "pat-0123")
        .start()
        .await?;
    agent.post("/", tracee_event()?).await?;
    successes(&agent, "tickets", 1.0).await?;
    let first = sink.requests();
    let label = "hooker-";
    assert_eq!(
        paths(&first),
        vec![
            "POST /jira/rest/api/2/search".to_string(),
            "GET /jira/rest/api/2/issue/createmeta/SEC/issuetypes?maxResults=100".into(),
            "GET /jira/rest/api/2/issue/createmeta/SEC/issuetypes/10002?startAt=0&maxResults=100"
                .into(),
            "GET /jira/rest/api/2/user/search?username=alice".into(),
            "GET /jira/rest/agile/1.0/board?projectKeyOrId=SEC&name=SEC+board".into(),
            "GET /jira/rest/agile/1.0/board/7/sprint?state=active%2Cfuture".into(),
            "POST /jira/rest/api/2/issue".into(),
        ]
    );
    for request in &first {
        assert_eq!(request.header("authorization"), Some("Bearer pat-0123"));
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(request.header("x-team"), Some("secops"));
    }
    let search = first[0].body_json();
    let jql = search["jql"].as_str().unwrap_or_default().to_string();
    let finding = jql
        .split('"')
        .find(|part| part.starts_with(label))
        .unwrap_or_default()
        .to_string();
    assert_eq!(finding.len(), label.len() + 16, "{jql}");
    assert_eq!(
        search,
        json!({
            "jql": format!("project = \"SEC\" AND labels = \"{finding}\" AND statusCategory != Done ORDER BY created DESC"),
            "maxResults": 1,
            "fields": ["summary"],
        })
    );
    let create = &first[6];
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(
        create.body_json(),
        json!({"fields": {
            "project": {"key": "SEC"},
            "issuetype": {"id": "10002"},
            "summary": "TRC-2 on nginx",
            "description": "h1. Detection\n*Signature:* TRC-2",
            "priority": {"id": "2"},
            "assignee": {"name": "alice"},
            "labels": ["security", "tracee_alert", finding],
            "fixVersions": [{"name": "1.0"}],
            "versions": [{"name": "0.9"}],
            "customfield_10020": 42,
            "customfield_10104": "https://avd.aquasec.com/misconfig/trc-2",
            "customfield_10101": [{"value": "web-1"}, {"value": "nginx"}],
            "customfield_10103": "2014-04-11T12:14:26.880+0400",
            "customfield_10102": "first line\nsecond line",
            "customfield_10100": 7.5,
            "customfield_10105": {"value": "Blue"}
        }})
    );
    assert!(agent.logs().iter().any(|l| {
        l["message"] == "Jira field left out."
            && l["problem"]
                .as_str()
                .is_some_and(|p| p.contains("No Such Field"))
    }));

    // The same finding again: found by its label, commented on, no second ticket.
    agent.post("/", tracee_event()?).await?;
    successes(&agent, "tickets", 2.0).await?;
    let all = sink.requests();
    let second = &all[first.len()..];
    assert_eq!(
        paths(second),
        vec![
            "POST /jira/rest/api/2/search".to_string(),
            "POST /jira/rest/api/2/issue/SEC-1/comment".into(),
        ]
    );
    assert_eq!(second[0].body_json()["jql"], jql.as_str());
    assert_eq!(
        second[1].body_json(),
        json!({"body": "h1. Detection\n*Signature:* TRC-2"})
    );
    assert_eq!(find(&all, "POST", "/jira/rest/api/2/issue").len(), 1);
    Ok(())
}

#[tokio::test]
async fn jira_cloud_uses_email_and_api_token_search_jql_and_account_ids() -> anyhow::Result<()> {
    let sink = fake_jira(Flavour {
        cloud: true,
        legacy: false,
    })
    .await?;
    let config = config(&format!(
        r#"  - name: cloud
    type: jira
    enable: true
    url: {}
    deployment: cloud
    user: me@example.com
    token: api-token-1
    project-key: SEC
    assignee: ["<%application_scope_owner%>"]
"#,
        sink.url("/jira")
    ));
    let agent = Agent::start(&config).await?;
    let mut event: serde_json::Value = serde_json::from_str(&tracee_event()?)?;
    event["application_scope_owners"] = json!(["owner@example.com"]);
    agent.post("/", event.to_string()).await?;
    successes(&agent, "cloud", 1.0).await?;
    let requests = sink.requests();
    assert_eq!(
        paths(&requests),
        vec![
            "POST /jira/rest/api/2/search/jql".to_string(),
            "GET /jira/rest/api/2/issue/createmeta/SEC/issuetypes?maxResults=100".into(),
            "GET /jira/rest/api/2/issue/createmeta/SEC/issuetypes/10001?startAt=0&maxResults=100"
                .into(),
            "GET /jira/rest/api/2/user/search?query=owner%40example.com".into(),
            "POST /jira/rest/api/2/issue".into(),
        ]
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("me@example.com:api-token-1")
    );
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(basic.as_str()))
    );
    let fields = &requests[4].body_json()["fields"];
    assert_eq!(
        fields["issuetype"],
        json!({"id": "10001"}),
        "Task by default"
    );
    assert_eq!(fields["priority"], json!({"id": "2"}), "High by default");
    assert_eq!(
        fields["assignee"],
        json!({"accountId": "5b10ac8d82e05b22cc7d4ef5"})
    );
    Ok(())
}

#[tokio::test]
async fn jira_falls_back_to_the_old_createmeta_and_can_skip_the_duplicate_check()
-> anyhow::Result<()> {
    let sink = fake_jira(Flavour {
        cloud: false,
        legacy: true,
    })
    .await?;
    let config = config(&format!(
        r#"  - name: legacy
    type: jira
    enable: true
    url: {}
    user: bot
    password: $JIRA_PW
    project-key: SEC
    issuetype: bug
    assignee: [nobody-known]
    dedup: false
    unknowns:
      customfield_10100: "3"
"#,
        sink.url("/jira")
    ));
    let agent = Agent::builder(&config).env("JIRA_PW", "pw").start().await?;
    agent.post("/", tracee_event()?).await?;
    successes(&agent, "legacy", 1.0).await?;
    let requests = sink.requests();
    assert_eq!(
        paths(&requests),
        vec![
            "GET /jira/rest/api/2/issue/createmeta/SEC/issuetypes?maxResults=100".to_string(),
            "GET /jira/rest/api/2/issue/createmeta?projectKeys=SEC&expand=projects.issuetypes.fields"
                .into(),
            "GET /jira/rest/api/2/user/search?username=nobody-known".into(),
            "POST /jira/rest/api/2/issue".into(),
        ]
    );
    assert_eq!(
        requests[0].header("authorization"),
        Some(
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("bot:pw")
            )
            .as_str()
        )
    );
    let fields = &requests[3].body_json()["fields"];
    assert_eq!(fields["issuetype"], json!({"id": "10002"}));
    assert_eq!(
        fields["customfield_10100"],
        json!(3),
        "a number field, by key"
    );
    assert_eq!(fields.get("labels"), None, "no finding label without dedup");
    assert_eq!(fields.get("assignee"), None, "unknown users are left out");
    Ok(())
}

#[tokio::test]
async fn jira_errors_name_the_step_status_and_body_and_honour_the_timeout() -> anyhow::Result<()> {
    let rejecting = Sink::with(|request: &Recorded| match request.path.as_str() {
        "/rest/api/2/search" => Reply::json(200, json!({"issues": []})),
        "/rest/api/2/issue/createmeta/SEC/issuetypes" => {
            Reply::json(200, json!({"values": [{"id": "1", "name": "Task"}]}))
        }
        "/rest/api/2/issue/createmeta/SEC/issuetypes/1" => {
            Reply::json(200, json!({"values": [], "isLast": true}))
        }
        "/rest/api/2/issue" => Reply::json(
            400,
            json!({"errorMessages": [], "errors": {"summary": "Field 'summary' cannot be set."}}),
        ),
        _ => Reply::status(404),
    })
    .await?;
    let slow = Sink::scripted(vec![
        Reply::json(200, json!({"issues": []})).delay(Duration::from_secs(10)),
    ])
    .await?;
    let config = config(&format!(
        r#"  - name: rejecting
    type: jira
    enable: true
    url: {}
    user: bot
    password: pw-secret
    project-key: SEC
  - name: slow
    type: jira
    enable: true
    url: {}
    user: bot
    password: pw
    project-key: SEC
    timeout: 1s
"#,
        rejecting.url(""),
        slow.url("")
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", tracee_event()?).await?;
    let log = failure(&agent, "rejecting").await?;
    let error = log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("creating the issue: HTTP 400")
            && error.contains("Field 'summary' cannot be set."),
        "{log}"
    );
    assert_eq!(log["retryable"], false);
    assert!(!error.contains("pw-secret"));
    let log = failure(&agent, "slow").await?;
    let error = log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("searching for an open ticket:") && error.contains("timed out"),
        "{log}"
    );
    assert_eq!(log["retryable"], true);
    Ok(())
}

#[tokio::test]
async fn jira_verifies_tls_unless_given_the_ca() -> anyhow::Result<()> {
    let sink = Sink::tls_with(|request: &Recorded| match request.path.as_str() {
        "/rest/api/2/search" => Reply::json(200, json!({"issues": [{"key": "SEC-9"}]})),
        _ => Reply::json(201, json!({})),
    })
    .await?;
    let dir = TempDir::new("jira-ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sink.ca_pem().unwrap_or_default())?;
    let config = config(&format!(
        r#"  - name: trusted
    type: jira
    enable: true
    url: {url}
    token: pat
    project-key: SEC
    ca-file: {ca}
  - name: untrusted
    type: jira
    enable: true
    url: {url}
    token: pat
    project-key: SEC
"#,
        url = sink.url(""),
        ca = ca.display()
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", tracee_event()?).await?;
    successes(&agent, "trusted", 1.0).await?;
    let log = failure(&agent, "untrusted").await?;
    assert!(
        log["error"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("certificate"),
        "{log}"
    );
    assert_eq!(
        paths(&sink.requests()),
        vec![
            "POST /rest/api/2/search".to_string(),
            "POST /rest/api/2/issue/SEC-9/comment".into()
        ]
    );
    Ok(())
}

#[tokio::test]
async fn jira_config_problems_are_located_and_previews_hide_secrets() -> anyhow::Result<()> {
    let dir = TempDir::new("jira-cli");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        config(
            r#"  - name: broken
    type: jira
    enable: true
    url: https://jira.example.com
    project-key: SEC
    auth: kerberos
"#,
        ),
    )?;
    let path = bad.display().to_string();
    let line = std::fs::read_to_string(&bad)?
        .lines()
        .position(|l| l.contains("auth: kerberos"))
        .map_or(0, |i| i + 1);
    let (code, _, stderr) = hooker_tests::hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:{line}: action \"broken\", key `auth`: `kerberos` is not an auth mode"
        )),
        "{stderr}"
    );

    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        config(
            r#"  - name: tickets
    type: jira
    enable: true
    url: https://acme.atlassian.net
    user: me@example.com
    password: very-secret-token
    project-key: SEC
    labels: [security]
"#,
        ),
    )?;
    let event = dir.join("event.json");
    std::fs::write(&event, tracee_event()?)?;
    let (code, stdout, stderr) = hooker_tests::hooker(
        &[
            "test-route",
            "--cfgfile",
            &good.display().to_string(),
            "--event",
            &event.display().to_string(),
        ],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let preview = &report[0]["routes"][0]["deliveries"][0]["would_send"];
    assert_eq!(preview["method"], "POST");
    assert_eq!(
        preview["url"],
        "https://acme.atlassian.net/rest/api/2/issue"
    );
    assert_eq!(preview["authorization"], "Basic ***");
    assert_eq!(preview["body"]["fields"]["summary"], "TRC-2 on nginx");
    let label = preview["dedup"]["label"].as_str().unwrap_or_default();
    assert!(label.starts_with("hooker-"), "{preview}");
    assert_eq!(
        preview["body"]["fields"]["labels"],
        json!(["security", label])
    );
    assert!(!stdout.contains("very-secret-token"));
    Ok(())
}

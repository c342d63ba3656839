//! Memory is bounded by the documented limits, not by what a client sends: a Fluent Forward
//! frame that would expand past `HOOKER_MAX_BODY`, forty clients posting 15 MB bodies at once,
//! and a 9.5 MB Trivy report rendered for Slack (and one rendered for Slack, Jira and e-mail at
//! once) each keep the agent's peak resident memory (VmHWM, read from /proc) under 128 MB. No
//! timing is asserted.

use std::time::Duration;

use hooker_tests::{Agent, Sink, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The peak every case must stay under.
const PEAK_LIMIT_KB: u64 = 128 * 1024;

/// The agent's peak resident set (VmHWM), in kB.
fn peak_kb(agent: &Agent) -> u64 {
    let pid = agent.pid().expect("the agent is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status is readable (Linux)");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn assert_peak_under_limit(agent: &Agent, case: &str) {
    let peak = peak_kb(agent);
    eprintln!("{case}: agent peak RSS {} MB", peak / 1024);
    assert!(
        peak < PEAK_LIMIT_KB,
        "{case}: the agent's peak RSS was {} MB, over {} MB",
        peak / 1024,
        PEAK_LIMIT_KB / 1024
    );
}

/// msgpack `["nils", 1, {"n": <items>}]` (Message mode), with `items` already encoded.
fn message_frame(items: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x93, 0xa4, b'n', b'i', b'l', b's', 0x01, 0x81, 0xa1, b'n'];
    frame.extend_from_slice(items);
    frame
}

/// An array32 of `n` nils.
fn nils(n: usize) -> Vec<u8> {
    let mut bytes = vec![0xdd];
    bytes.extend((n as u32).to_be_bytes());
    bytes.resize(5 + n, 0xc0);
    bytes
}

/// About `bytes` of nils whose containers are all small: arrays of 65,535 fixarrays of 15
/// nils, so that no length prefix alone gives the size away.
fn nested_nils(bytes: usize) -> Vec<u8> {
    let inner_len = 65_535 * 16 + 3;
    let outer = bytes / inner_len;
    let mut out = vec![0xdc];
    out.extend((outer as u16).to_be_bytes());
    for _ in 0..outer {
        out.push(0xdc);
        out.extend(65_535u16.to_be_bytes());
        for _ in 0..65_535 {
            out.push(0x9f);
            out.extend([0xc0; 15]);
        }
    }
    out
}

/// Sends `frame` on a new connection and reads until the agent closes it (or 60 s pass); a
/// refused write is the agent closing early.
async fn send_frame(address: &str, frame: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    let (mut read, mut write) = stream.split();
    let writing = async {
        for chunk in frame.chunks(64 * 1024) {
            if write.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let reading = async {
        let mut sink = vec![0u8; 4096];
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writing, reading)
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn forward_frames_of_nils_are_refused_before_they_expand() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::builder(&hooker_tests::webhook_config(&sink.url("/forward")))
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        .start()
        .await?;
    let address = agent
        .address("forward")
        .expect("forward listener")
        .to_string();
    let frames = [
        ("2 MB of nils", message_frame(&nils(2 << 20))),
        ("15 MB of nils", message_frame(&nils(15 << 20))),
        (
            "15 MB of nils in small arrays",
            message_frame(&nested_nils(15 << 20)),
        ),
    ];
    for (case, frame) in &frames {
        send_frame(&address, frame).await?;
        assert_peak_under_limit(&agent, case);
    }
    let series = r#"hooker_events_received_total{intake="forward",outcome="too_large"}"#;
    let refused = wait_until(
        "three refusals counted",
        Duration::from_secs(30),
        async || {
            let n = agent.metric(series).await.ok()?;
            (n >= 3.0).then_some(n)
        },
    )
    .await?;
    assert_eq!(refused, 3.0);
    assert!(
        agent.logs().iter().any(|line| line
            .to_string()
            .contains("MessagePack decodes to more than the limit of")),
        "the refusal says why"
    );
    // A frame within the limit still goes through.
    let record = b"\x81\xa1n\x01";
    let mut small = vec![0x93, 0xa1, b't', 0x01];
    small.extend_from_slice(record);
    send_frame(&address, &small).await?;
    sink.wait_for(1).await?;
    assert_peak_under_limit(&agent, "after the Forward frames");
    Ok(())
}

/// One raw HTTP/1.1 request with a `len`-byte JSON body, chunked or with `Content-Length`; the
/// status the agent answered, or `None` if it closed the connection without answering.
async fn post_large(address: &str, body: &[u8], chunked: bool) -> anyhow::Result<Option<u16>> {
    let mut stream = TcpStream::connect(address).await?;
    let (mut read, mut write) = stream.split();
    let head = if chunked {
        "POST / HTTP/1.1\r\nhost: hooker\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
    } else {
        format!(
            "POST / HTTP/1.1\r\nhost: hooker\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
    };
    let writing = async {
        write.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            if chunked {
                write
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                write.write_all(chunk).await?;
                write.write_all(b"\r\n").await?;
            } else {
                write.write_all(chunk).await?;
            }
        }
        if chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        // Then wait for the answer.
        std::future::pending::<()>().await;
        Ok::<(), std::io::Error>(())
    };
    let reading = async {
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
    };
    let status = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::select! {
            status = reading => status,
            // A refused write: the agent answered and closed; read what it answered.
            _ = writing => None,
        }
    })
    .await
    .unwrap_or(None);
    Ok(status)
}

#[tokio::test]
async fn forty_clients_posting_15_mb_bodies_are_refused_before_they_are_read() -> anyhow::Result<()>
{
    let sink = Sink::start().await?;
    let agent = Agent::builder(&hooker_tests::webhook_config(&sink.url("/big")))
        .start()
        .await?;
    let address = agent.address("http").expect("HTTP listener").to_string();
    // One event of 15 MB: a JSON object with a long string.
    let mut body = br#"{"n":1,"kind":"big","pad":""#.to_vec();
    body.resize(15 << 20, b'x');
    body.extend_from_slice(br#""}"#);
    let body = std::sync::Arc::new(body);
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..40 {
        let address = address.clone();
        let body = body.clone();
        clients.spawn(async move { post_large(&address, &body, index % 2 == 1).await });
    }
    let mut statuses = Vec::new();
    while let Some(answer) = clients.join_next().await {
        statuses.push(answer??);
    }
    eprintln!("answers: {statuses:?}");
    assert!(
        statuses.iter().flatten().all(|s| *s == 200 || *s == 429),
        "only 200 and 429: {statuses:?}"
    );
    assert!(
        statuses.contains(&Some(429)),
        "the queue's byte budget refused some: {statuses:?}"
    );
    assert_peak_under_limit(&agent, "40 clients × 15 MB");
    // Still serving: a small event is accepted.
    let (status, _) = agent.post("/", r#"{"kind":"small"}"#).await?;
    assert_eq!(status, 200);
    Ok(())
}

/// A Trivy report of about `bytes`: vulnerabilities as Trivy writes them (with descriptions,
/// CVSS and references), repeated.
fn trivy_report(bytes: usize) -> Value {
    let severities = ["LOW", "MEDIUM", "HIGH", "CRITICAL", "UNKNOWN"];
    let description = "A flaw was found in the package's parser: a crafted input can make it read past the end of a buffer, crash, or run code. ".repeat(4);
    let vulnerability = |i: usize| {
        json!({
            "VulnerabilityID": format!("CVE-2024-{:05}", 10000 + i),
            "PkgID": format!("pkg-{}@1.{i}.0", i % 7),
            "PkgName": format!("pkg-{}", i % 7),
            "InstalledVersion": format!("1.{i}.0"),
            "FixedVersion": if i.is_multiple_of(3) { String::new() } else { format!("1.{i}.1") },
            "Status": "fixed",
            "SeveritySource": "nvd",
            "PrimaryURL": format!("https://avd.aquasec.com/nvd/cve-2024-{:05}", 10000 + i),
            "Title": format!("pkg-{}: generated vulnerability number {i}", i % 7),
            "Description": description,
            "Severity": severities[i % severities.len()],
            "CweIDs": ["CWE-125"],
            "CVSS": {"nvd": {"V3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "V3Score": 9.8}},
            "References": [
                format!("https://nvd.nist.gov/vuln/detail/CVE-2024-{:05}", 10000 + i),
                "https://security-tracker.debian.org/tracker/",
            ],
            "PublishedDate": "2024-01-01T00:00:00Z",
            "LastModifiedDate": "2024-02-01T00:00:00Z",
        })
    };
    let one = vulnerability(0).to_string().len();
    let vulnerabilities: Vec<Value> = (0..bytes / one).map(vulnerability).collect();
    json!({
        "SchemaVersion": 2,
        "ArtifactName": "registry.example/big:1.0",
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}},
        "Results": [{"Target": "registry.example/big:1.0 (debian 12.5)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vulnerabilities}],
    })
}

#[tokio::test]
async fn a_large_trivy_report_renders_for_slack_within_the_memory_limit() -> anyhow::Result<()> {
    let slack = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: trivy
    input: input.ArtifactName
    template: trivy-slack
    actions: [slack]
templates:
  - name: trivy-slack
    rego-package: hooker.trivy.slack
actions:
  - name: slack
    type: slack
    enable: true
    url: {}
"#,
        slack.url("/slack")
    );
    let agent = Agent::builder(&config).start().await?;
    let report = trivy_report(9_500_000).to_string();
    eprintln!("report: {} bytes", report.len());
    let (status, answer) = agent.post("/", report).await?;
    assert_eq!(status, 200, "{answer}");
    let sent = slack.wait_for(1).await?;
    let body = sent[0].body_text();
    assert!(body.contains("CVE-2024-10003"), "the worst first: {body}");
    assert!(body.contains("more vulnerabilities"), "{body}");
    assert_peak_under_limit(&agent, "a 9.5 MB Trivy report to Slack");
    Ok(())
}

/// The built-in Trivy cards render a 10 MB report natively: for Slack, Jira and e-mail at once, in
/// bounded memory, each cut to its channel's number of vulnerabilities as the Rego modules cut it.
#[tokio::test]
async fn a_large_trivy_report_renders_for_slack_jira_and_email_within_the_memory_limit()
-> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: trivy-slack
    input: input.ArtifactName
    template: trivy-slack
    actions: [slack]
  - name: trivy-jira
    input: input.ArtifactName
    template: trivy-jira
    actions: [jira]
  - name: trivy-email
    input: input.ArtifactName
    template: trivy-email
    actions: [email]
templates:
  - name: trivy-slack
    rego-package: hooker.trivy.slack
  - name: trivy-jira
    rego-package: hooker.trivy.jira
  - name: trivy-email
    rego-package: hooker.trivy.email
actions:
  - name: slack
    type: slack
    enable: true
    url: {}
  - name: jira
    type: webhook
    enable: true
    url: {}
  - name: email
    type: webhook
    enable: true
    url: {}
"#,
        sink.url("/slack"),
        sink.url("/jira"),
        sink.url("/email"),
    );
    let agent = Agent::builder(&config).start().await?;
    let report = trivy_report(10_000_000).to_string();
    eprintln!("report: {} bytes", report.len());
    let (status, answer) = agent.post("/", report).await?;
    assert_eq!(status, 200, "{answer}");
    let sent = sink.wait_for(3).await?;
    let body = |path: &str| {
        sent.iter()
            .find(|r| r.path == path)
            .map(|r| r.body_text())
            .unwrap_or_else(|| panic!("nothing sent to {path}"))
    };
    // Worst first; Slack shows 20 vulnerabilities, Jira 50, e-mail 100, and says how many more.
    let slack = body("/slack");
    assert!(slack.contains("CVE-2024-10003"), "{slack}");
    assert!(slack.contains("more vulnerabilities"), "{slack}");
    let jira = body("/jira");
    assert!(jira.contains("CVE-2024-10003"), "{jira}");
    assert_eq!(jira.matches("\n|CRITICAL|").count(), 50, "{jira}");
    assert!(jira.contains("more vulnerabilities_"), "{jira}");
    let email = body("/email");
    assert_eq!(
        email.matches("<tr><td>critical</td>").count(),
        100,
        "{email}"
    );
    assert!(email.contains("more vulnerabilities</p>"), "{email}");
    assert_peak_under_limit(&agent, "a 10 MB Trivy report to Slack, Jira and e-mail");
    Ok(())
}

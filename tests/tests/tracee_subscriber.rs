//! The Tracee subscriber against a stand-in Tracee gRPC server (`fake_tracee`, a separate
//! process built from the same proto): it waits for an absent Tracee, subscribes with the
//! configured policies, routes real-shaped detections and syscall events (as the JSON Tracee
//! prints), survives `kill -9` of Tracee mid-stream by reconnecting, and sheds (counted) instead
//! of stalling when the outbox is full.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use hooker_tests::{Agent, Reply, Sink, TempDir, fixture, wait_until};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

const FIXTURES: &[&str] = &[
    "tracee/v0.8-syscall-openat.json",
    "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
    "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
    "tracee/v0.13-security_file_open.json",
    "tracee/v0.13-signature-custom-golang.json",
    "tracee/v0.16-syscall-execve-matchedPolicies.json",
    "tracee/v0.20-net_packet_dns_request.json",
];

/// Detections among the fixtures as Tracee streams them: signatures with a severity (the custom
/// signature has none, so Tracee sends no `threat` for it).
const DETECTIONS: usize = 2;

/// A `fake_tracee` process, its stdin for commands and the JSON lines it printed.
struct FakeTracee {
    child: Child,
    stdin: ChildStdin,
    said: Arc<Mutex<Vec<Value>>>,
}

impl FakeTracee {
    async fn start(listen: &[&str]) -> Result<FakeTracee> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake_tracee"))
            .args(listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start fake_tracee")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let said = Arc::new(Mutex::new(Vec::new()));
        {
            let said = said.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let (Ok(value), Ok(mut said)) =
                        (serde_json::from_str::<Value>(&line), said.lock())
                    {
                        said.push(value);
                    }
                }
            });
        }
        let tracee = FakeTracee { child, stdin, said };
        tracee.wait_for("listening", 1).await?;
        Ok(tracee)
    }

    fn lines(&self, event: &str) -> Vec<Value> {
        self.said
            .lock()
            .map(|all| {
                all.iter()
                    .filter(|v| v["event"] == event)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_for(&self, event: &str, n: usize) -> Result<Vec<Value>> {
        wait_until(
            &format!("{n} `{event}` line(s) from fake_tracee"),
            Duration::from_secs(20),
            async || {
                let lines = self.lines(event);
                (lines.len() >= n).then_some(lines)
            },
        )
        .await
    }

    fn address(&self) -> String {
        self.lines("listening")[0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Streams the fixtures to every subscriber, tagged; waits until they are handed to the stream.
    async fn emit(&mut self, tag: &str, files: &[&str]) -> Result<()> {
        let paths: Vec<String> = files
            .iter()
            .map(|f| fixture(f).display().to_string())
            .collect();
        let emitted = self.lines("emitted").len();
        self.stdin
            .write_all(format!("emit {tag} {}\n", paths.join(" ")).as_bytes())
            .await?;
        self.stdin.flush().await?;
        let lines = self.wait_for("emitted", emitted + 1).await?;
        let last = &lines[emitted];
        anyhow::ensure!(last["sent"] == files.len(), "fake_tracee sent {last}");
        Ok(())
    }

    /// Streams one event of about `bytes` bytes.
    async fn emit_big(&mut self, tag: &str, bytes: usize) -> Result<()> {
        let emitted = self.lines("emitted").len();
        self.stdin
            .write_all(format!("emit-big {tag} {bytes}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        self.wait_for("emitted", emitted + 1).await?;
        Ok(())
    }

    /// `kill -9`, mid-stream.
    async fn kill9(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

fn config(sink: &Sink) -> String {
    format!(
        r#"
routes:
  - name: detections
    input: data.hooker.lib.tracee.is_detection
    template: tracee-text
    actions: [detections]
  - name: everything
    input: input
    template: raw
    actions: [everything]
templates:
  - name: tracee-text
    rego-package: hooker.tracee.text
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: detections
    type: webhook
    enable: true
    url: {}
  - name: everything
    type: webhook
    enable: true
    url: {}
"#,
        sink.url("/detections"),
        sink.url("/everything")
    )
}

fn at(sink: &Sink, path: &str) -> Vec<hooker_tests::Recorded> {
    sink.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// The `test_tag` datum fake_tracee adds to each event.
fn tag_of(body: &Value) -> String {
    body["data"]
        .as_array()
        .and_then(|data| data.iter().find(|d| d["name"] == "test_tag"))
        .and_then(|d| d["str"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn metric(agent: &Agent, series: &str) -> Result<f64> {
    agent.metric(series).await
}

const CONNECTED: &str = r#"hooker_intake_connected{intake="tracee"}"#;
const RECONNECTS: &str = r#"hooker_intake_connection_attempts_total{intake="tracee"}"#;

async fn wait_metric(agent: &Agent, series: &str, done: impl Fn(f64) -> bool) -> Result<f64> {
    wait_until(
        &format!("{series} to reach the expected value"),
        Duration::from_secs(20),
        async || {
            let value = metric(agent, series).await.ok()?;
            done(value).then_some(value)
        },
    )
    .await
}

#[tokio::test]
async fn subscriber_waits_for_tracee_routes_its_events_and_survives_a_kill() -> Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("tracee-sub");
    let socket = dir.join("tracee.sock");
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_TRACEE", format!("unix:{}", socket.display()))
        .env("HOOKER_TRACEE_POLICIES", "signatures, execs")
        .start()
        .await?;

    // Tracee is not there yet: the subscriber keeps retrying, and says it is disconnected.
    wait_metric(&agent, RECONNECTS, |n| n >= 1.0).await?;
    assert_eq!(metric(&agent, CONNECTED).await?, 0.0);

    let mut tracee = FakeTracee::start(&["--socket", &socket.display().to_string()]).await?;
    let subscribed = tracee.wait_for("subscribed", 1).await?;
    assert_eq!(
        subscribed[0]["policies"],
        serde_json::json!(["signatures", "execs"])
    );
    wait_metric(&agent, CONNECTED, |n| n == 1.0).await?;
    tracee.emit("first", FIXTURES).await?;
    sink.wait_for(FIXTURES.len() + DETECTIONS).await?;

    // Every event arrives in Tracee's own JSON shape (v1beta1.Event, snake_case).
    let everything = at(&sink, "/everything");
    assert_eq!(everything.len(), FIXTURES.len());
    for request in &everything {
        let body = request.body_json();
        assert_eq!(tag_of(&body), "first");
        assert_eq!(
            body["policies"]["matched"],
            serde_json::json!(["signatures", "execs"])
        );
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{body}"
        );
        assert!(
            body["workload"]["process"]["thread"]["name"].is_string(),
            "{body}"
        );
    }
    let openat = everything
        .iter()
        .map(|r| r.body_json())
        .find(|b| b["name"] == "openat")
        .expect("the openat syscall event");
    assert_eq!(openat["id"], 258, "gRPC carries Tracee's external event id");
    assert_eq!(openat["timestamp"], "2022-07-08T14:24:05.02085599Z");
    assert_eq!(openat["workload"]["process"]["thread"]["name"], "exa");
    assert_eq!(openat["workload"]["process"]["host_pid"], 1664936);
    assert_eq!(
        openat["data"][1],
        serde_json::json!({"name": "pathname", "str": "/etc/ld.so.cache"})
    );
    let dns = everything
        .iter()
        .map(|r| r.body_json())
        .find(|b| b["name"] == "net_packet_dns_request")
        .expect("the DNS event");
    assert_eq!(
        dns["data"][1]["dns_questions"]["questions"][0]["query"],
        "www.zip.net"
    );
    let dropped = everything
        .iter()
        .map(|r| r.body_json())
        .find(|b| b["threat"]["properties"]["signatureID"] == "TRC-1022")
        .expect("the TRC-1022 detection");
    assert_eq!(
        dropped["id"], 6029,
        "detections come with their real signature event id over gRPC"
    );
    assert_eq!(dropped["threat"]["severity"], 2);
    assert_eq!(
        dropped["workload"]["k8s"]["pod"]["name"],
        "app-75ff449bcd-hfwnz"
    );

    // Detections are recognised by their threat and rendered by the Tracee template.
    let detections = at(&sink, "/detections");
    assert_eq!(detections.len(), DETECTIONS);
    let texts: Vec<String> = detections.iter().map(|r| r.body_text()).collect();
    let anti_debugging = texts
        .iter()
        .find(|t| t.contains("Signature: TRC-102\n"))
        .unwrap_or_else(|| panic!("TRC-102 rendered: {texts:?}"));
    assert!(
        anti_debugging.starts_with("Tracee Detection - Anti-Debugging detected"),
        "{anti_debugging}"
    );
    assert!(
        anti_debugging.contains("Severity: low (1)"),
        "{anti_debugging}"
    );
    assert!(
        anti_debugging.contains("MITRE ATT&CK: defense-evasion: Debugger Evasion"),
        "{anti_debugging}"
    );
    let trc1022 = texts
        .iter()
        .find(|t| t.contains("Signature: TRC-1022"))
        .unwrap_or_else(|| panic!("TRC-1022 rendered: {texts:?}"));
    assert!(
        trc1022.contains("Pod: default/app-75ff449bcd-hfwnz"),
        "{trc1022}"
    );
    assert!(
        trc1022.contains("Image: docker.io/library/ubuntu:latest"),
        "{trc1022}"
    );

    // Tracee dies mid-stream and comes back on the same socket: the subscriber reconnects.
    let before = metric(&agent, RECONNECTS).await?;
    tracee.kill9().await?;
    wait_metric(&agent, CONNECTED, |n| n == 0.0).await?;
    let mut tracee = FakeTracee::start(&["--socket", &socket.display().to_string()]).await?;
    tracee.wait_for("subscribed", 1).await?;
    wait_metric(&agent, CONNECTED, |n| n == 1.0).await?;
    assert!(metric(&agent, RECONNECTS).await? > before);
    tracee.emit("second", FIXTURES).await?;
    sink.wait_for(2 * (FIXTURES.len() + DETECTIONS)).await?;
    let tags: Vec<String> = at(&sink, "/everything")
        .iter()
        .map(|r| tag_of(&r.body_json()))
        .collect();
    assert_eq!(
        tags.iter().filter(|t| *t == "first").count(),
        FIXTURES.len()
    );
    assert_eq!(
        tags.iter().filter(|t| *t == "second").count(),
        FIXTURES.len()
    );
    assert_eq!(
        metric(
            &agent,
            r#"hooker_events_received_total{intake="tracee",outcome="accepted"}"#
        )
        .await?,
        (2 * FIXTURES.len()) as f64
    );
    assert_eq!(
        metric(
            &agent,
            r#"hooker_intake_events_shed_total{intake="tracee"}"#
        )
        .await?,
        0.0
    );
    assert!(agent.stop().await?.success());
    tracee.kill9().await?;
    Ok(())
}

/// A mistyped `HOOKER_TRACEE_POLICIES`: Tracee refuses every subscription. Hooker says so at
/// error level on every attempt and counts the refusals, instead of one warning then silence.
#[tokio::test]
async fn a_refused_subscription_is_counted_and_logged_every_time() -> Result<()> {
    let sink = Sink::start().await?;
    let tracee = FakeTracee::start(&["--tcp", "127.0.0.1:0", "--policies", "signatures"]).await?;
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_TRACEE", format!("tcp:{}", tracee.address()))
        .env("HOOKER_TRACEE_POLICIES", "signaturse")
        .start()
        .await?;
    tracee.wait_for("refused", 3).await?;
    wait_metric(
        &agent,
        r#"hooker_intake_subscriptions_refused_total{intake="tracee"}"#,
        |n| n >= 3.0,
    )
    .await?;
    let errors = agent
        .logs()
        .iter()
        .filter(|l| {
            l["level"] == "ERROR"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("HOOKER_TRACEE_POLICIES"))
        })
        .count();
    assert!(errors >= 3, "one error log per refusal, got {errors}");
    assert_eq!(metric(&agent, CONNECTED).await?, 0.0);
    tracee.kill9().await?;
    Ok(())
}

/// An event over the message size limit is skipped and counted; the stream goes on (it used to
/// end the subscription, and the next event only came after a reconnect).
#[tokio::test]
async fn an_oversized_event_is_skipped_and_the_stream_goes_on() -> Result<()> {
    let sink = Sink::start().await?;
    let mut tracee = FakeTracee::start(&["--tcp", "127.0.0.1:0"]).await?;
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_TRACEE", format!("tcp:{}", tracee.address()))
        .env("HOOKER_MAX_BODY", "64KB")
        .start()
        .await?;
    tracee.wait_for("subscribed", 1).await?;
    wait_metric(&agent, CONNECTED, |n| n == 1.0).await?;
    tracee.emit_big("big", 100_000).await?;
    tracee.emit("after", &[FIXTURES[0]]).await?;
    sink.wait_for(1).await?;
    let everything = at(&sink, "/everything");
    assert_eq!(everything.len(), 1);
    assert_eq!(tag_of(&everything[0].body_json()), "after");
    assert_eq!(
        metric(
            &agent,
            r#"hooker_events_received_total{intake="tracee",outcome="too_large"}"#
        )
        .await?,
        1.0
    );
    assert_eq!(tracee.lines("subscribed").len(), 1, "never resubscribed");
    assert_eq!(metric(&agent, CONNECTED).await?, 1.0);
    tracee.kill9().await?;
    Ok(())
}

#[tokio::test]
async fn a_full_outbox_sheds_tracee_events_without_stalling_the_stream() -> Result<()> {
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    // Over TCP this time.
    let mut tracee = FakeTracee::start(&["--tcp", "127.0.0.1:0"]).await?;
    let agent = Agent::builder(&config(&down))
        .env("HOOKER_TRACEE", format!("tcp:{}", tracee.address()))
        .env("HOOKER_OUTBOX_MAX_PENDING", "1")
        .start()
        .await?;
    let subscribed = tracee.wait_for("subscribed", 1).await?;
    assert_eq!(subscribed[0]["policies"], serde_json::json!([]));
    wait_metric(&agent, CONNECTED, |n| n == 1.0).await?;

    tracee.emit("fills", &[FIXTURES[0]]).await?;
    wait_metric(&agent, "hooker_outbox_pending", |n| n >= 1.0).await?;
    tracee.emit("shed", FIXTURES).await?;
    wait_metric(
        &agent,
        r#"hooker_intake_events_shed_total{intake="tracee"}"#,
        |n| n == FIXTURES.len() as f64,
    )
    .await?;
    assert_eq!(
        metric(
            &agent,
            r#"hooker_events_received_total{intake="tracee",outcome="shed"}"#
        )
        .await?,
        FIXTURES.len() as f64
    );
    assert_eq!(
        metric(
            &agent,
            r#"hooker_events_received_total{intake="tracee",outcome="accepted"}"#
        )
        .await?,
        1.0
    );
    // Still subscribed: shedding never cost the stream.
    assert_eq!(metric(&agent, CONNECTED).await?, 1.0);
    assert_eq!(tracee.lines("subscribed").len(), 1);
    assert!(agent.logs().iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("shedding events"))
    }));
    tracee.kill9().await?;
    Ok(())
}

//! The Tracee subscriber against a stand-in Tracee gRPC server (`fake_tracee`, a separate
//! process built from the same proto): it waits for an absent Tracee, subscribes with the
//! configured policies, routes real-shaped detections and syscall events (as the JSON Tracee
//! prints), survives `kill -9` of Tracee mid-stream by reconnecting, and sheds (counted) instead
//! of stalling when the outbox is full. Every Tracee data type routes the same over gRPC as in the
//! JSON Tracee prints for it (its webhook, json and forward outputs) posted over HTTP.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use hooker_grpc::tracee::v1beta1 as pb;
use hooker_tests::{Agent, Reply, Sink, TempDir, fixture, wait_until};
use pb::event_value::Value as Kind;
use serde_json::{Value, json};
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

    /// Streams `events` (written to a file for fake_tracee), tagged; waits until they are sent.
    async fn emit_pb(&mut self, tag: &str, events: &[pb::Event]) -> Result<()> {
        use prost::Message;
        let dir = TempDir::new("tracee-pb");
        let file = dir.join("events.pb");
        let mut bytes = Vec::new();
        for event in events {
            event.encode_length_delimited(&mut bytes)?;
        }
        std::fs::write(&file, bytes)?;
        let emitted = self.lines("emitted").len();
        self.stdin
            .write_all(format!("emit-pb {tag} {}\n", file.display()).as_bytes())
            .await?;
        self.stdin.flush().await?;
        let lines = self.wait_for("emitted", emitted + 1).await?;
        let last = &lines[emitted];
        anyhow::ensure!(last["sent"] == events.len(), "fake_tracee sent {last}");
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

/// One Tracee argument of each data type (and the edge values of each), with the `data[]` item
/// Tracee prints for it: its `Event.MarshalJSON` (api/v1beta1/event_json.go) writes the scalar
/// kinds itself (64-bit integers as strings, bytes as base64, empty arrays as `{}`, an empty
/// sockaddr as `{}`, capabilities and wrapped ids as numbers, floats as Go's `%g`) and the network
/// kinds with protojson (proto field names, zero values left out, enums by name, 64-bit integers
/// as strings, a set but empty message as `{}`).
fn data_cases() -> Vec<(&'static str, Option<Kind>, Value)> {
    let header = |values: &[&str]| pb::HttpHeader {
        header: values.iter().map(|v| v.to_string()).collect(),
    };
    let record = |name: &str, kind: &str| pb::DnsResourceRecord {
        name: name.into(),
        r#type: kind.into(),
        class: "IN".into(),
        ttl: 300,
        ..Default::default()
    };
    let structure = prost_types::Struct {
        fields: [
            ("n", prost_types::value::Kind::NumberValue(1.0)),
            ("f", prost_types::value::Kind::NumberValue(2.5)),
            ("big", prost_types::value::Kind::NumberValue(1e6)),
            ("s", prost_types::value::Kind::StringValue("x".into())),
            ("b", prost_types::value::Kind::BoolValue(true)),
            ("z", prost_types::value::Kind::NullValue(0)),
            (
                "l",
                prost_types::value::Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("y".into())),
                    }],
                }),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), prost_types::Value { kind: Some(v) }))
        .collect(),
    };
    vec![
        ("int32", Some(Kind::Int32(-5)), json!({"int32": -5})),
        ("int32_zero", Some(Kind::Int32(0)), json!({"int32": 0})),
        (
            "int64",
            Some(Kind::Int64(-9_007_199_254_740_993)),
            json!({"int64": "-9007199254740993"}),
        ),
        (
            "u_int32",
            Some(Kind::UInt32(u32::MAX)),
            json!({"u_int32": 4_294_967_295u32}),
        ),
        (
            "u_int64",
            Some(Kind::UInt64(u64::MAX)),
            json!({"u_int64": "18446744073709551615"}),
        ),
        (
            "str",
            Some(Kind::Str("a \"quoted\"\n\tline, ünïcode \u{1}".into())),
            json!({"str": "a \"quoted\"\n\tline, ünïcode \u{1}"}),
        ),
        (
            "str_empty",
            Some(Kind::Str(String::new())),
            json!({"str": ""}),
        ),
        (
            "bytes",
            Some(Kind::Bytes(vec![0, 1, 2, 255, 254])),
            json!({"bytes": "AAEC//4="}),
        ),
        ("bool", Some(Kind::Bool(false)), json!({"bool": false})),
        (
            "str_array",
            Some(Kind::StrArray(pb::StringArray {
                value: vec!["/bin/sh".into(), "-c".into(), String::new()],
            })),
            json!({"str_array": {"value": ["/bin/sh", "-c", ""]}}),
        ),
        (
            "str_array_empty",
            Some(Kind::StrArray(pb::StringArray::default())),
            json!({"str_array": {}}),
        ),
        (
            "int32_array",
            Some(Kind::Int32Array(pb::Int32Array {
                value: vec![-1, 0, 2],
            })),
            json!({"int32_array": {"value": [-1, 0, 2]}}),
        ),
        (
            "int32_array_empty",
            Some(Kind::Int32Array(pb::Int32Array::default())),
            json!({"int32_array": {}}),
        ),
        (
            "u_int64_array",
            Some(Kind::UInt64Array(pb::UInt64Array {
                value: vec![0, u64::MAX],
            })),
            json!({"u_int64_array": {"value": ["0", "18446744073709551615"]}}),
        ),
        (
            "sockaddr_inet",
            Some(Kind::Sockaddr(pb::SockAddr {
                sa_family: pb::SaFamilyT::AfInet as i32,
                sin_addr: "192.0.2.1".into(),
                sin_port: 443,
                ..Default::default()
            })),
            json!({"sockaddr": {"sa_family": "AF_INET", "sin_addr": "192.0.2.1", "sin_port": 443}}),
        ),
        (
            "sockaddr_inet6",
            Some(Kind::Sockaddr(pb::SockAddr {
                sa_family: pb::SaFamilyT::AfInet6 as i32,
                sin6_addr: "2001:db8::1".into(),
                sin6_port: 8443,
                sin6_flowinfo: 7,
                sin6_scopeid: 2,
                ..Default::default()
            })),
            json!({"sockaddr": {"sa_family": "AF_INET6", "sin6_addr": "2001:db8::1", "sin6_port": 8443, "sin6_flowinfo": 7, "sin6_scopeid": 2}}),
        ),
        (
            "sockaddr_unix",
            Some(Kind::Sockaddr(pb::SockAddr {
                sa_family: pb::SaFamilyT::AfUnix as i32,
                sun_path: "/run/containerd/containerd.sock".into(),
                ..Default::default()
            })),
            json!({"sockaddr": {"sa_family": "AF_UNIX", "sun_path": "/run/containerd/containerd.sock"}}),
        ),
        (
            "sockaddr_empty",
            Some(Kind::Sockaddr(pb::SockAddr::default())),
            json!({"sockaddr": {}}),
        ),
        (
            "sockaddr_unspec_with_port",
            Some(Kind::Sockaddr(pb::SockAddr {
                sin_port: 53,
                ..Default::default()
            })),
            json!({"sockaddr": {"sa_family": "SA_FAMILY_T_UNSPEC", "sin_port": 53}}),
        ),
        (
            "sockaddr_unknown_family",
            Some(Kind::Sockaddr(pb::SockAddr {
                sa_family: 99,
                ..Default::default()
            })),
            json!({"sockaddr": {"sa_family": "99"}}),
        ),
        (
            "credentials",
            Some(Kind::Credentials(pb::Credentials {
                uid: Some(0),
                gid: Some(1000),
                euid: Some(0),
                user_namespace: Some(4_026_531_837),
                cap_effective: vec![0, 21, 40],
                cap_bounding: vec![pb::Capability::CapChown as i32],
                ..Default::default()
            })),
            json!({"credentials": {"uid": 0, "gid": 1000, "euid": 0, "user_namespace": 4_026_531_837u32, "cap_effective": [0, 21, 40], "cap_bounding": [0]}}),
        ),
        (
            "credentials_empty",
            Some(Kind::Credentials(pb::Credentials::default())),
            json!({"credentials": {}}),
        ),
        (
            "timespec",
            Some(Kind::Timespec(pb::Timespec { value: Some(1.5) })),
            json!({"timespec": {"value": 1.5}}),
        ),
        (
            "timespec_integral",
            Some(Kind::Timespec(pb::Timespec { value: Some(3.0) })),
            json!({"timespec": {"value": 3}}),
        ),
        (
            // Go prints 1.70000000025e+09.
            "timespec_large",
            Some(Kind::Timespec(pb::Timespec {
                value: Some(1_700_000_000.25),
            })),
            json!({"timespec": {"value": 1_700_000_000.25}}),
        ),
        (
            // Go prints 2e+06: a float to a JSON reader.
            "timespec_large_integral",
            Some(Kind::Timespec(pb::Timespec {
                value: Some(2_000_000.0),
            })),
            json!({"timespec": {"value": 2e6}}),
        ),
        (
            "timespec_empty",
            Some(Kind::Timespec(pb::Timespec::default())),
            json!({"timespec": null}),
        ),
        (
            "pointer",
            Some(Kind::Pointer(0xffff_ffff_8100_0000)),
            json!({"pointer": "18446744071578845184"}),
        ),
        (
            "struct",
            Some(Kind::Struct(structure)),
            json!({"struct": {"n": 1, "f": 2.5, "big": 1e6, "s": "x", "b": true, "z": null, "l": ["y"]}}),
        ),
        (
            "hooked_syscalls",
            Some(Kind::HookedSyscalls(pb::HookedSyscalls {
                value: vec![
                    pb::HookedSymbolData {
                        symbol_name: "__x64_sys_kill".into(),
                        module_owner: "diamorphine".into(),
                    },
                    pb::HookedSymbolData::default(),
                ],
            })),
            json!({"hooked_syscalls": {"value": [{"symbol_name": "__x64_sys_kill", "module_owner": "diamorphine"}, {}]}}),
        ),
        (
            "hooked_seq_ops",
            Some(Kind::HookedSeqOps(pb::HookedSeqOps {
                value: [(
                    "tcp4_seq_ops_show".to_string(),
                    pb::HookedSymbolData {
                        symbol_name: "hooked_show".into(),
                        module_owner: "reptile".into(),
                    },
                )]
                .into(),
            })),
            json!({"hooked_seq_ops": {"value": {"tcp4_seq_ops_show": {"symbol_name": "hooked_show", "module_owner": "reptile"}}}}),
        ),
        (
            "ipv4",
            Some(Kind::Ipv4(pb::IPv4 {
                version: 4,
                ihl: 5,
                length: 60,
                id: 4321,
                flags: 2,
                ttl: 64,
                protocol: "TCP".into(),
                checksum: 51_234,
                src_ip: "192.0.2.1".into(),
                dst_ip: "198.51.100.7".into(),
                ..Default::default()
            })),
            json!({"ipv4": {"version": 4, "ihl": 5, "length": 60, "id": 4321, "flags": 2, "ttl": 64, "protocol": "TCP", "checksum": 51_234, "src_ip": "192.0.2.1", "dst_ip": "198.51.100.7"}}),
        ),
        (
            "ipv6",
            Some(Kind::Ipv6(pb::IPv6 {
                version: 6,
                flow_label: 12_345,
                length: 40,
                next_header: "UDP".into(),
                hop_limit: 255,
                src_ip: "2001:db8::1".into(),
                dst_ip: "2001:db8::2".into(),
                ..Default::default()
            })),
            json!({"ipv6": {"version": 6, "flow_label": 12_345, "length": 40, "next_header": "UDP", "hop_limit": 255, "src_ip": "2001:db8::1", "dst_ip": "2001:db8::2"}}),
        ),
        (
            "tcp",
            Some(Kind::Tcp(pb::Tcp {
                src_port: 43_210,
                dst_port: 443,
                seq: u32::MAX,
                data_offset: 5,
                syn_flag: 1,
                window: 64_240,
                checksum: 7,
                ..Default::default()
            })),
            json!({"tcp": {"src_port": 43_210, "dst_port": 443, "seq": 4_294_967_295u32, "data_offset": 5, "syn_flag": 1, "window": 64_240, "checksum": 7}}),
        ),
        (
            "udp",
            Some(Kind::Udp(pb::Udp {
                src_port: 5353,
                dst_port: 53,
                length: 40,
                checksum: 0,
            })),
            json!({"udp": {"src_port": 5353, "dst_port": 53, "length": 40}}),
        ),
        (
            "icmp",
            Some(Kind::Icmp(pb::Icmp {
                type_code: "EchoRequest".into(),
                checksum: 1,
                id: 2,
                seq: 3,
            })),
            json!({"icmp": {"type_code": "EchoRequest", "checksum": 1, "id": 2, "seq": 3}}),
        ),
        (
            "icmpv6",
            Some(Kind::Icmpv6(pb::IcmPv6 {
                type_code: "NeighborSolicitation".into(),
                checksum: 9,
            })),
            json!({"icmpv6": {"type_code": "NeighborSolicitation", "checksum": 9}}),
        ),
        (
            "dns",
            Some(Kind::Dns(pb::Dns {
                id: 4660,
                qr: 1,
                op_code: "Query".into(),
                rd: 1,
                ra: 1,
                response_code: "No Error".into(),
                qd_count: 1,
                an_count: 8,
                questions: vec![pb::DnsQuestion {
                    name: "example.com".into(),
                    r#type: "ANY".into(),
                    class: "IN".into(),
                }],
                answers: vec![
                    pb::DnsResourceRecord {
                        ip: "192.0.2.10".into(),
                        ..record("example.com", "A")
                    },
                    pb::DnsResourceRecord {
                        txts: vec!["v=spf1 -all".into(), String::new()],
                        txt: "v=spf1 -all".into(),
                        ..record("example.com", "TXT")
                    },
                    pb::DnsResourceRecord {
                        soa: Some(pb::Dnssoa {
                            mname: "ns1.example.com".into(),
                            rname: "hostmaster.example.com".into(),
                            serial: 2_026_120_601,
                            refresh: 7200,
                            retry: 3600,
                            expire: 1_209_600,
                            minimum: 0,
                        }),
                        ..record("example.com", "SOA")
                    },
                    pb::DnsResourceRecord {
                        srv: Some(pb::Dnssrv {
                            priority: 10,
                            weight: 0,
                            port: 5060,
                            name: "sip.example.com".into(),
                        }),
                        ..record("_sip._udp.example.com", "SRV")
                    },
                    pb::DnsResourceRecord {
                        mx: Some(pb::Dnsmx {
                            preference: 10,
                            name: "mail.example.com".into(),
                        }),
                        ..record("example.com", "MX")
                    },
                    pb::DnsResourceRecord {
                        opt: vec![
                            pb::Dnsopt {
                                code: "Cookie".into(),
                                data: "0102030405060708".into(),
                            },
                            pb::Dnsopt::default(),
                        ],
                        ..record("", "OPT")
                    },
                    pb::DnsResourceRecord {
                        uri: Some(pb::Dnsuri {
                            priority: 1,
                            weight: 2,
                            target: "https://example.com/".into(),
                        }),
                        ..record("_http._tcp.example.com", "URI")
                    },
                    pb::DnsResourceRecord {
                        soa: Some(pb::Dnssoa::default()),
                        mx: Some(pb::Dnsmx::default()),
                        ..record("empty.example.com", "SOA")
                    },
                ],
                authorities: vec![pb::DnsResourceRecord {
                    ns: "ns1.example.com".into(),
                    ..record("example.com", "NS")
                }],
                additionals: vec![pb::DnsResourceRecord {
                    cname: "www.example.com".into(),
                    ptr: "ptr.example.com".into(),
                    ..record("alias.example.com", "CNAME")
                }],
                ..Default::default()
            })),
            json!({"dns": {
                "id": 4660, "qr": 1, "op_code": "Query", "rd": 1, "ra": 1,
                "response_code": "No Error", "qd_count": 1, "an_count": 8,
                "questions": [{"name": "example.com", "type": "ANY", "class": "IN"}],
                "answers": [
                    {"name": "example.com", "type": "A", "class": "IN", "ttl": 300, "ip": "192.0.2.10"},
                    {"name": "example.com", "type": "TXT", "class": "IN", "ttl": 300, "txts": ["v=spf1 -all", ""], "txt": "v=spf1 -all"},
                    {"name": "example.com", "type": "SOA", "class": "IN", "ttl": 300, "soa": {"mname": "ns1.example.com", "rname": "hostmaster.example.com", "serial": 2_026_120_601u32, "refresh": 7200, "retry": 3600, "expire": 1_209_600}},
                    {"name": "_sip._udp.example.com", "type": "SRV", "class": "IN", "ttl": 300, "srv": {"priority": 10, "port": 5060, "name": "sip.example.com"}},
                    {"name": "example.com", "type": "MX", "class": "IN", "ttl": 300, "mx": {"Preference": 10, "name": "mail.example.com"}},
                    {"type": "OPT", "class": "IN", "ttl": 300, "opt": [{"code": "Cookie", "data": "0102030405060708"}, {}]},
                    {"name": "_http._tcp.example.com", "type": "URI", "class": "IN", "ttl": 300, "uri": {"priority": 1, "weight": 2, "target": "https://example.com/"}},
                    {"name": "empty.example.com", "type": "SOA", "class": "IN", "ttl": 300, "soa": {}, "mx": {}}
                ],
                "authorities": [{"name": "example.com", "type": "NS", "class": "IN", "ttl": 300, "ns": "ns1.example.com"}],
                "additionals": [{"name": "alias.example.com", "type": "CNAME", "class": "IN", "ttl": 300, "cname": "www.example.com", "ptr": "ptr.example.com"}]
            }}),
        ),
        (
            "dns_questions",
            Some(Kind::DnsQuestions(pb::DnsQuestions {
                questions: vec![pb::DnsQueryData {
                    query: "www.example.com".into(),
                    query_type: "AAAA".into(),
                    query_class: "IN".into(),
                }],
            })),
            json!({"dns_questions": {"questions": [{"query": "www.example.com", "query_type": "AAAA", "query_class": "IN"}]}}),
        ),
        (
            "dns_responses",
            Some(Kind::DnsResponses(pb::DnsResponses {
                responses: vec![
                    pb::DnsResponseData {
                        dns_query_data: Some(pb::DnsQueryData {
                            query: "www.example.com".into(),
                            query_type: "A".into(),
                            query_class: "IN".into(),
                        }),
                        dns_answer: vec![pb::DnsAnswer {
                            r#type: "A".into(),
                            ttl: 60,
                            answer: "192.0.2.10".into(),
                        }],
                    },
                    pb::DnsResponseData {
                        dns_query_data: Some(pb::DnsQueryData::default()),
                        dns_answer: vec![pb::DnsAnswer::default()],
                    },
                ],
            })),
            json!({"dns_responses": {"responses": [
                {"dns_query_data": {"query": "www.example.com", "query_type": "A", "query_class": "IN"}, "dns_answer": [{"type": "A", "ttl": 60, "answer": "192.0.2.10"}]},
                {"dns_query_data": {}, "dns_answer": [{}]}
            ]}}),
        ),
        (
            "packet_metadata_egress",
            Some(Kind::PacketMetadata(pb::PacketMetadata {
                src_ip: "192.0.2.1".into(),
                dst_ip: "198.51.100.7".into(),
                src_port: 43_210,
                dst_port: 53,
                protocol: 17,
                packet_len: 72,
                iface: "eth0".into(),
                direction: pb::PacketDirection::Egress as i32,
            })),
            json!({"packet_metadata": {"src_ip": "192.0.2.1", "dst_ip": "198.51.100.7", "src_port": 43_210, "dst_port": 53, "protocol": 17, "packet_len": 72, "iface": "eth0", "direction": "EGRESS"}}),
        ),
        (
            "packet_metadata_ingress",
            Some(Kind::PacketMetadata(pb::PacketMetadata {
                direction: pb::PacketDirection::Ingress as i32,
                ..Default::default()
            })),
            json!({"packet_metadata": {"direction": "INGRESS"}}),
        ),
        (
            "packet_metadata_invalid",
            Some(Kind::PacketMetadata(pb::PacketMetadata {
                iface: "lo".into(),
                ..Default::default()
            })),
            json!({"packet_metadata": {"iface": "lo"}}),
        ),
        (
            "packet_metadata_unknown_direction",
            Some(Kind::PacketMetadata(pb::PacketMetadata {
                direction: 7,
                ..Default::default()
            })),
            json!({"packet_metadata": {"direction": 7}}),
        ),
        (
            "http",
            Some(Kind::Http(pb::Http {
                direction: "request".into(),
                method: "POST".into(),
                protocol: "HTTP/1.1".into(),
                host: "api.example.com".into(),
                uri_path: "/v1/upload".into(),
                headers: [
                    ("Accept".to_string(), header(&["*/*"])),
                    ("X-Empty".to_string(), header(&[])),
                ]
                .into(),
                content_length: 1_234,
                ..Default::default()
            })),
            json!({"http": {"direction": "request", "method": "POST", "protocol": "HTTP/1.1", "host": "api.example.com", "uri_path": "/v1/upload", "headers": {"Accept": {"header": ["*/*"]}, "X-Empty": {}}, "content_length": "1234"}}),
        ),
        (
            "http_request",
            Some(Kind::HttpRequest(pb::HttpRequest {
                method: "GET".into(),
                protocol: "HTTP/2".into(),
                host: "example.com".into(),
                uri_path: "/".into(),
                headers: [("User-Agent".to_string(), header(&["curl/8.5.0", "second"]))].into(),
                content_length: 0,
            })),
            json!({"http_request": {"method": "GET", "protocol": "HTTP/2", "host": "example.com", "uri_path": "/", "headers": {"User-Agent": {"header": ["curl/8.5.0", "second"]}}}}),
        ),
        (
            "http_response",
            Some(Kind::HttpResponse(pb::HttpResponse {
                status: "200 OK".into(),
                status_code: 200,
                protocol: "HTTP/1.1".into(),
                content_length: 9_007_199_254_740_993,
                ..Default::default()
            })),
            json!({"http_response": {"status": "200 OK", "status_code": 200, "protocol": "HTTP/1.1", "content_length": "9007199254740993"}}),
        ),
        (
            "http_response_negative_length",
            Some(Kind::HttpResponse(pb::HttpResponse {
                status_code: 404,
                content_length: -1,
                ..Default::default()
            })),
            json!({"http_response": {"status_code": 404, "content_length": "-1"}}),
        ),
        ("unset", None, json!({"value": null})),
    ]
}

/// A detection with every part of an event set (and an event without a timestamp), as gRPC
/// messages and as the JSON Tracee prints for them.
fn whole_events() -> Vec<(pb::Event, Value)> {
    let detection = pb::Event {
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_765_000_000,
            nanos: 120_000_000,
        }),
        id: 6018,
        name: "kernel_module_loading".into(),
        policies: Some(pb::Policies {
            matched: vec!["default".into()],
        }),
        workload: Some(pb::Workload {
            process: Some(pb::Process {
                executable: Some(pb::Executable {
                    path: "/usr/sbin/insmod".into(),
                }),
                unique_id: Some(0),
                host_pid: Some(4242),
                pid: Some(1),
                real_user: Some(pb::User { id: Some(0) }),
                thread: Some(pb::Thread {
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1_765_000_000,
                        nanos: 0,
                    }),
                    name: "insmod".into(),
                    unique_id: Some(7),
                    host_tid: Some(4242),
                    tid: Some(1),
                    syscall: "finit_module".into(),
                    compat: true,
                    user_stack_trace: Some(pb::UserStackTrace {
                        addresses: vec![pb::StackAddress {
                            address: u64::MAX,
                            symbol: "main".into(),
                        }],
                    }),
                }),
                ancestors: vec![pb::Process {
                    host_pid: Some(1),
                    ..Default::default()
                }],
            }),
            container: Some(pb::Container {
                id: "c0ffee".into(),
                name: "app".into(),
                image: Some(pb::ContainerImage {
                    id: "sha256:1".into(),
                    repo_digests: vec!["docker.io/library/app@sha256:2".into()],
                    name: "docker.io/library/app:1".into(),
                }),
                started: false,
            }),
            k8s: Some(pb::K8s {
                pod: Some(pb::Pod {
                    name: "app-0".into(),
                    uid: "uid-1".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                }),
                namespace: Some(pb::K8sNamespace {
                    name: "default".into(),
                }),
            }),
        }),
        data: vec![pb::EventValue {
            name: "pathname".into(),
            value: Some(Kind::Str("/tmp/rootkit.ko".into())),
        }],
        threat: Some(pb::Threat {
            description: "A kernel module was loaded.".into(),
            mitre: Some(pb::Mitre {
                tactic: Some(pb::MitreTactic {
                    name: "persistence".into(),
                }),
                technique: None,
            }),
            severity: 2,
            name: "Kernel module loading detected".into(),
            properties: [("signatureID".to_string(), "TRC-1017".to_string())].into(),
        }),
        detected_from: Some(pb::DetectedFrom {
            id: 758,
            name: "init_module".into(),
            data: vec![pb::EventValue {
                name: "flags".into(),
                value: Some(Kind::Int64(1)),
            }],
            parent: Some(Box::new(pb::DetectedFrom {
                id: 1,
                name: "raw".into(),
                data: vec![],
                parent: None,
            })),
        }),
    };
    let detection_json = json!({
        "timestamp": "2025-12-06T05:46:40.12Z",
        "id": 6018,
        "name": "kernel_module_loading",
        "policies": {"matched": ["default"]},
        "workload": {
            "process": {
                "executable": {"path": "/usr/sbin/insmod"},
                "unique_id": 0, "host_pid": 4242, "pid": 1, "real_user": {"id": 0},
                "thread": {
                    "start_time": "2025-12-06T05:46:40Z", "name": "insmod", "unique_id": 7,
                    "host_tid": 4242, "tid": 1, "syscall": "finit_module", "compat": true,
                    "user_stack_trace": {"addresses": [{"address": u64::MAX, "symbol": "main"}]}
                },
                "ancestors": [{"host_pid": 1}]
            },
            "container": {
                "id": "c0ffee", "name": "app",
                "image": {"id": "sha256:1", "repo_digests": ["docker.io/library/app@sha256:2"], "name": "docker.io/library/app:1"},
                "started": false
            },
            "k8s": {"pod": {"name": "app-0", "uid": "uid-1", "labels": {"app": "web"}}, "namespace": {"name": "default"}}
        },
        "data": [{"name": "pathname", "str": "/tmp/rootkit.ko"}],
        "threat": {
            "description": "A kernel module was loaded.",
            "mitre": {"tactic": {"name": "persistence"}},
            "severity": 2,
            "name": "Kernel module loading detected",
            "properties": {"signatureID": "TRC-1017"}
        },
        "detected_from": {
            "id": 758, "name": "init_module",
            "data": [{"name": "flags", "int64": "1"}],
            "parent": {"id": 1, "name": "raw"}
        }
    });
    let no_timestamp = pb::Event {
        id: 1,
        name: "no_timestamp".into(),
        workload: Some(pb::Workload::default()),
        ..Default::default()
    };
    let no_timestamp_json =
        json!({"timestamp": "null", "id": 1, "name": "no_timestamp", "workload": {}});
    vec![
        (detection, detection_json),
        (no_timestamp, no_timestamp_json),
    ]
}

/// Each data type through both paths: the gRPC subscriber (fake_tracee streams the message) and
/// Tracee's JSON for it posted over HTTP (as its webhook output does), both delivered by the raw
/// JSON template. The two deliveries must be equal, and equal to Tracee's JSON.
#[tokio::test]
async fn every_data_type_routes_the_same_over_grpc_and_as_tracee_json() -> Result<()> {
    let sink = Sink::start().await?;
    let mut tracee = FakeTracee::start(&["--tcp", "127.0.0.1:0"]).await?;
    let agent = Agent::builder(&config(&sink))
        .env("HOOKER_TRACEE", format!("tcp:{}", tracee.address()))
        .start()
        .await?;
    tracee.wait_for("subscribed", 1).await?;
    wait_metric(&agent, CONNECTED, |n| n == 1.0).await?;

    let mut cases: Vec<(String, pb::Event, Value)> = data_cases()
        .into_iter()
        .map(|(name, value, item)| {
            let event = pb::Event {
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_765_000_000,
                    nanos: 5,
                }),
                id: 1000,
                name: name.into(),
                data: vec![pb::EventValue {
                    name: "arg".into(),
                    value,
                }],
                ..Default::default()
            };
            let mut arg = json!({"name": "arg"});
            if let (Some(arg), Some(item)) = (arg.as_object_mut(), item.as_object()) {
                arg.extend(item.clone());
            }
            let json = json!({
                "timestamp": "2025-12-06T05:46:40.000000005Z",
                "id": 1000,
                "name": name,
                "data": [arg],
            });
            (name.to_string(), event, json)
        })
        .collect();
    for (event, json) in whole_events() {
        cases.push((event.name.clone(), event, json));
    }
    let events: Vec<pb::Event> = cases.iter().map(|(_, event, _)| event.clone()).collect();
    tracee.emit_pb("grpc", &events).await?;
    for (name, _, json) in &cases {
        let mut posted = json.clone();
        let tag = json!({"name": "test_tag", "str": "http"});
        match posted["data"].as_array_mut() {
            Some(data) => data.push(tag),
            None => posted["data"] = json!([tag]),
        }
        let (status, answer) = agent.post("/", posted.to_string()).await?;
        anyhow::ensure!(status == 200, "{name}: HTTP {status} {answer}");
    }
    wait_until(
        "both deliveries of every event",
        Duration::from_secs(30),
        async || (at(&sink, "/everything").len() >= 2 * cases.len()).then_some(()),
    )
    .await?;

    let delivered = at(&sink, "/everything");
    let find = |name: &str, tag: &str| {
        delivered
            .iter()
            .map(|r| r.body_json())
            .find(|b| b["name"] == name && tag_of(b) == tag)
            .map(|mut body| {
                if let Some(data) = body["data"].as_array_mut() {
                    data.retain(|d| d["name"] != "test_tag");
                    if data.is_empty() {
                        body.as_object_mut().map(|o| o.remove("data"));
                    }
                }
                body
            })
    };
    let mut problems = Vec::new();
    for (name, _, expected) in &cases {
        let (Some(grpc), Some(http)) = (find(name, "grpc"), find(name, "http")) else {
            problems.push(format!("{name}: not delivered on both paths"));
            continue;
        };
        if grpc != http {
            problems.push(format!(
                "{name}: the paths differ\n  gRPC: {grpc}\n  HTTP: {http}"
            ));
        } else if &grpc != expected {
            problems.push(format!(
                "{name}: not what Tracee prints\n  routed: {grpc}\n  Tracee: {expected}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    tracee.kill9().await?;
    Ok(())
}

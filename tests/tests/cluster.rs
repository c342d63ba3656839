//! Cluster mode with real parts: a 3-node `nats-server` JetStream cluster on loopback ports,
//! node agents that relay their `runs-on: responder` deliveries, and two responders that run
//! them against a local webhook sink. Every process is killed when its guard drops.
//!
//! The tests take one lock in turn: each starts a NATS cluster and five agents, which is as much
//! as a small machine runs at once.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hooker_tests::{Agent, Sink, TempDir, metric_value, wait_until};
use tokio::process::{Child, Command};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Long enough for a JetStream cluster to elect its leaders again after a restart.
const RECOVERY: Duration = Duration::from_secs(90);

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `nats-server` of the cluster: its ports and store survive a kill, so it can come back.
struct NatsServer {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    routes: String,
    child: Option<Child>,
}

impl NatsServer {
    fn start(&mut self) -> Result<()> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(&self.store)
            .args(["--cluster_name", "hooker-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.cluster_port),
            ])
            .args(["--routes", &self.routes])
            .arg("-l")
            .arg(self.store.with_extension("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "cannot start nats-server: install it (Debian package nats-server, 2.9); tests/run.sh does",
            )?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A 3-node JetStream cluster on loopback.
struct NatsCluster {
    servers: Vec<NatsServer>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts a cluster; tries again on fresh ports when one does not come up (a port picked
    /// free can be taken by another process before the server binds it).
    async fn start() -> Result<NatsCluster> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match NatsCluster::try_start().await {
                Ok(cluster) => return Ok(cluster),
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        bail!("no JetStream cluster came up: {failures:?}")
    }

    async fn try_start() -> Result<NatsCluster> {
        let dir = TempDir::new("nats");
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (port, cluster_port, monitor_port)) in ports.into_iter().enumerate() {
            let others: Vec<String> = routes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.clone())
                .collect();
            let mut server = NatsServer {
                name: format!("n{i}"),
                port,
                cluster_port,
                monitor_port,
                store: dir.join(&format!("n{i}")),
                routes: others.join(","),
                child: None,
            };
            server.start()?;
            servers.push(server);
        }
        let cluster = NatsCluster { servers, _dir: dir };
        if let Err(error) = cluster.wait_healthy_within(Duration::from_secs(30)).await {
            let logs: Vec<String> = cluster
                .servers
                .iter()
                .map(|s| {
                    let log =
                        std::fs::read_to_string(s.store.with_extension("log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    format!("{}: {:?}", s.name, tail)
                })
                .collect();
            bail!("{error}; server logs: {logs:?}");
        }
        Ok(cluster)
    }

    fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every running server answers its JetStream health check.
    async fn wait_healthy(&self) -> Result<()> {
        self.wait_healthy_within(RECOVERY).await
    }

    async fn wait_healthy_within(&self, timeout: Duration) -> Result<()> {
        let client = hooker_tests::client()?;
        wait_until("a healthy JetStream cluster", timeout, async || {
            for server in self.servers.iter().filter(|s| s.child.is_some()) {
                let url = format!("http://127.0.0.1:{}/healthz", server.monitor_port);
                let ok = client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    async fn kill_all(&mut self) -> Result<()> {
        for server in &mut self.servers {
            server.kill().await?;
        }
        Ok(())
    }

    async fn restart_all(&mut self) -> Result<()> {
        for server in &mut self.servers {
            if server.child.is_none() {
                server.start()?;
            }
        }
        self.wait_healthy().await
    }
}

/// One route, deduplicated by `finding` for the cluster, posting to `sink` from the responder.
fn config(sink: &Sink) -> String {
    format!(
        r#"
routes:
  - name: findings
    input: input.finding
    template: raw
    actions: [hook]
    plugins:
      unique-message-props: ["finding"]
      unique-message-timeout: 1h
  - name: events
    input: input.n
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
    retry-initial-backoff: 200ms
    retry-max-backoff: 1s
    retry-max-attempts: 100000
    circuit-breaker-cooldown: 1s
"#,
        sink.url("/")
    )
}

async fn node(config: &str, nats: &str, name: &str, state: Option<&TempDir>) -> Result<Agent> {
    let mut builder = Agent::builder(config)
        .env("HOOKER_NATS", nats)
        .env("NODE_NAME", name);
    if let Some(state) = state {
        builder = builder.state_dir(state.path());
    }
    builder.start().await
}

async fn responder(config: &str, nats: &str, name: &str, state: &TempDir) -> Result<Agent> {
    responder_waiting(config, nats, name, state, "2s").await
}

/// A responder whose JetStream ack wait is `ack_wait`.
async fn responder_waiting(
    config: &str,
    nats: &str,
    name: &str,
    state: &TempDir,
    ack_wait: &str,
) -> Result<Agent> {
    Agent::builder(config)
        .env("HOOKER_NATS", nats)
        .env("HOOKER_ROLE", "responder")
        .env("HOOKER_NATS_ACK_WAIT", ack_wait)
        .env("NODE_NAME", name)
        .state_dir(state.path())
        .start()
        .await
}

async fn sum(agents: &[&Agent], series: &str) -> f64 {
    let mut total = 0.0;
    for agent in agents {
        if let Ok(text) = agent.metrics().await {
            total += metric_value(&text, series);
        }
    }
    total
}

/// The `n` of every request the sink received, sorted, duplicates kept.
fn numbers(sink: &Sink) -> Vec<u64> {
    let mut all: Vec<u64> = sink
        .requests()
        .iter()
        .filter_map(|r| r.body_json()["n"].as_u64())
        .collect();
    all.sort_unstable();
    all
}

async fn wait_numbers(
    sink: &Sink,
    expected: std::ops::Range<u64>,
    timeout: Duration,
) -> Result<()> {
    let want: Vec<u64> = expected.collect();
    wait_until("every event at the sink", timeout, async || {
        let mut got = numbers(sink);
        got.dedup();
        want.iter().all(|n| got.contains(n)).then_some(())
    })
    .await
    .with_context(|| format!("the sink has {:?}", numbers(sink)))
}

#[tokio::test]
async fn the_same_finding_from_three_nodes_is_delivered_once() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let nats = NatsCluster::start().await?;
    let sink = Sink::start().await?;
    let config = config(&sink);
    let (state_a, state_b) = (TempDir::new("resp-a"), TempDir::new("resp-b"));
    let responders = [
        responder(&config, &nats.urls(), "resp-a", &state_a).await?,
        responder(&config, &nats.urls(), "resp-b", &state_b).await?,
    ];
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&config, &nats.urls(), &format!("node-{i}"), None).await?);
    }
    let finding = r#"{"finding":"CVE-2024-1 in nginx:1.25","severity":"high"}"#;
    for node in &nodes {
        assert_eq!(node.post("/", finding).await?.0, 200);
    }
    sink.wait_for(1).await?;
    let consumers: Vec<&Agent> = responders.iter().collect();
    let acked = r#"hooker_responder_messages_total{outcome="acked"}"#;
    wait_until(
        "three relayed deliveries acknowledged",
        RECOVERY,
        async || (sum(&consumers, acked).await >= 3.0).then_some(()),
    )
    .await?;
    let other = r#"{"finding":"CVE-2024-2 in redis:7","severity":"high"}"#;
    assert_eq!(nodes[1].post("/", other).await?.0, 200);
    sink.wait_for(2).await?;
    wait_until(
        "four relayed deliveries acknowledged",
        RECOVERY,
        async || (sum(&consumers, acked).await >= 4.0).then_some(()),
    )
    .await?;
    wait_until("the responders' outboxes empty", RECOVERY, async || {
        (sum(&consumers, "hooker_outbox_pending").await == 0.0).then_some(())
    })
    .await?;
    let requests = sink.requests();
    // On failure: the responders' fail-open count and warnings say why dedup did not hold.
    let diagnostics: Vec<String> = {
        let mut lines = Vec::new();
        for agent in &consumers {
            let text = agent.metrics().await?;
            lines.extend(
                text.lines()
                    .filter(|l| l.starts_with("hooker_kv_dedup_total{outcome=\"fail"))
                    .map(String::from),
            );
            lines.extend(
                agent
                    .logs()
                    .iter()
                    .filter(|l| l["level"] == "WARN")
                    .map(|l| l.to_string()),
            );
        }
        lines
    };
    assert_eq!(
        requests.len(),
        2,
        "one request per finding: {diagnostics:?}"
    );
    let findings: Vec<String> = requests
        .iter()
        .map(|r| {
            r.body_json()["finding"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(findings.contains(&"CVE-2024-1 in nginx:1.25".to_string()));
    assert!(findings.contains(&"CVE-2024-2 in redis:7".to_string()));
    // Two copies dropped (a redelivered copy is dropped again).
    assert!(sum(&consumers, r#"hooker_kv_dedup_total{outcome="duplicate"}"#).await >= 2.0);
    assert_eq!(
        sum(&consumers, r#"hooker_kv_dedup_total{outcome="fail_open"}"#).await,
        0.0
    );
    // Nodes relayed, they did not post to the sink themselves.
    for node in &nodes {
        assert!(
            node.metric(r#"hooker_relay_published_total{outcome="acked"}"#)
                .await?
                >= 1.0
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_responder_killed_mid_work_with_its_disk_loses_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let nats = NatsCluster::start().await?;
    // A slow sink: deliveries are in flight on the responders when one is killed.
    let sink =
        Sink::with(|_| hooker_tests::Reply::status(200).delay(Duration::from_millis(100))).await?;
    let config = config(&sink);
    let (state_a, state_b) = (TempDir::new("resp-a"), TempDir::new("resp-b"));
    let mut responders = vec![
        responder(&config, &nats.urls(), "resp-a", &state_a).await?,
        responder(&config, &nats.urls(), "resp-b", &state_b).await?,
    ];
    let node = node(&config, &nats.urls(), "node-0", None).await?;
    // One finding, seen three times: one request for the cluster, whoever delivers it.
    let finding = r#"{"finding":"CVE-2024-3 in postgres:16","severity":"critical"}"#;
    for _ in 0..3 {
        assert_eq!(node.post("/", finding).await?.0, 200);
    }
    const N: u64 = 60;
    for n in 0..N {
        assert_eq!(node.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    let consumed = r#"hooker_responder_messages_total{outcome="consumed"}"#;
    let at_work: Vec<&Agent> = responders.iter().collect();
    wait_until("the responders at work", RECOVERY, async || {
        (sum(&at_work, consumed).await >= 8.0).then_some(())
    })
    .await?;
    // Kill the busier one, and its disk with it (a deleted pod): it is not started again.
    let busier =
        usize::from(responders[1].metric(consumed).await? > responders[0].metric(consumed).await?);
    let killed = responders.remove(busier);
    let other = responders.remove(0);
    killed.kill9().await?;
    let gone = if busier == 0 { state_a } else { state_b };
    std::fs::remove_dir_all(gone.path())?;
    let arrived_before = numbers(&sink).len();
    // What the killed one held (pulled, even committed to its outbox) was never acknowledged
    // to JetStream: it comes back to the other replica after the ack wait.
    wait_numbers(&sink, 0..N, RECOVERY).await?;
    assert!(
        arrived_before < N as usize,
        "the kill came after everything had arrived"
    );
    let findings = sink
        .requests()
        .iter()
        .filter(|r| r.body_json()["finding"].is_string())
        .count();
    assert_eq!(findings, 1, "one request for the finding");
    drop(other);
    Ok(())
}

#[tokio::test]
async fn a_stopped_responder_hands_its_backlog_over_while_its_sink_is_down() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let _serial = SERIAL.lock().await;
    let nats = NatsCluster::start().await?;
    // The sink refuses (503) until `up`; what it takes (200) is noted.
    let up = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sink = {
        let (up, taken) = (up.clone(), taken.clone());
        Sink::with(move |request| {
            if !up.load(Ordering::SeqCst) {
                return hooker_tests::Reply::status(503);
            }
            if let (Some(n), Ok(mut taken)) = (request.body_json()["n"].as_u64(), taken.lock()) {
                taken.push(n);
            }
            hooker_tests::Reply::status(200)
        })
        .await?
    };
    let config = config(&sink);
    let (state_a, state_b) = (TempDir::new("resp-a"), TempDir::new("resp-b"));
    // An ack wait far beyond the test's deadline: only a handover gets the stopped one's
    // messages to the other replica in time.
    let stopping = responder_waiting(&config, &nats.urls(), "resp-a", &state_a, "30m").await?;
    let node = node(&config, &nats.urls(), "node-0", None).await?;
    const N: u64 = 20;
    for n in 0..N {
        assert_eq!(node.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    let consumed = r#"hooker_responder_messages_total{outcome="consumed"}"#;
    wait_until(
        "the first responder holding everything",
        RECOVERY,
        async || (stopping.metric(consumed).await.ok()? >= N as f64).then_some(()),
    )
    .await?;
    let other = responder_waiting(&config, &nats.urls(), "resp-b", &state_b, "30m").await?;
    let status = stopping.stop().await?;
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(state_a.path())?;
    up.store(true, Ordering::SeqCst);
    let all: Vec<u64> = (0..N).collect();
    wait_until(
        "every event delivered by the other replica",
        RECOVERY,
        async || {
            let mut got = taken.lock().ok()?.clone();
            got.sort_unstable();
            got.dedup();
            (got == all).then_some(())
        },
    )
    .await
    .with_context(|| format!("the sink took {:?}", taken.lock().map(|t| t.clone())))?;
    // Exactly once: the stopped one delivered none of what it handed back.
    wait_until("the other replica's outbox empty", RECOVERY, async || {
        (other.metric("hooker_outbox_pending").await.ok()? == 0.0).then_some(())
    })
    .await?;
    let mut got = taken.lock().map(|t| t.clone()).unwrap_or_default();
    got.sort_unstable();
    assert_eq!(got, all, "each event delivered once");
    Ok(())
}

/// One route aggregating three messages into one, run on the responder.
fn aggregating_config(sink: &Sink) -> String {
    format!(
        r#"
routes:
  - name: batch
    input: input.b
    template: text
    actions: [hook]
    plugins:
      aggregate-message-number: 3
templates:
  - name: text
    body: |
      package custom
      import rego.v1
      title := sprintf("event %d", [input.b])
      result := sprintf("b=%d", [input.b])
      aggregation_pkg := "hooker.aggregate.text"
actions:
  - name: hook
    type: webhook
    enable: true
    url: {}
    retry-initial-backoff: 200ms
    retry-max-backoff: 1s
"#,
        sink.url("/")
    )
}

/// The `b` of each event in an aggregated body.
fn batch_items(body: &str) -> Vec<u64> {
    body.split("b=")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test]
async fn aggregation_runs_once_for_the_cluster_on_the_responder() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let nats = NatsCluster::start().await?;
    let sink = Sink::start().await?;
    let config = aggregating_config(&sink);
    let (state_a, state_b) = (TempDir::new("resp-a"), TempDir::new("resp-b"));
    let _responders = [
        responder(&config, &nats.urls(), "resp-a", &state_a).await?,
        responder(&config, &nats.urls(), "resp-b", &state_b).await?,
    ];
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&config, &nats.urls(), &format!("node-{i}"), None).await?);
    }
    // One event per node: no node has three, the cluster has.
    for (b, node) in nodes.iter().enumerate() {
        assert_eq!(node.post("/", format!(r#"{{"b":{b}}}"#)).await?.0, 200);
    }
    let first = wait_until("the first aggregate", RECOVERY, async || {
        sink.requests().first().map(|r| r.body_text())
    })
    .await?;
    for (b, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.post("/", format!(r#"{{"b":{}}}"#, b + 3)).await?.0,
            200
        );
    }
    let second = wait_until("the second aggregate", RECOVERY, async || {
        sink.requests().get(1).map(|r| r.body_text())
    })
    .await?;
    let mut first_items = batch_items(&first);
    first_items.sort_unstable();
    assert_eq!(first_items, vec![0, 1, 2], "{first}");
    let mut second_items = batch_items(&second);
    second_items.sort_unstable();
    assert_eq!(second_items, vec![3, 4, 5], "{second}");
    let consumers: Vec<&Agent> = _responders.iter().collect();
    wait_until(
        "the aggregated messages acknowledged",
        RECOVERY,
        async || {
            (sum(
                &consumers,
                r#"hooker_responder_messages_total{outcome="acked"}"#,
            )
            .await
                >= 6.0)
                .then_some(())
        },
    )
    .await?;
    assert_eq!(sink.requests().len(), 2, "two aggregates, nothing else");
    assert_eq!(
        sum(
            &consumers,
            r#"hooker_aggregation_flushes_total{route="batch",reason="count"}"#
        )
        .await,
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn a_responder_takes_no_events() -> Result<()> {
    let sink = Sink::start().await?;
    let state = TempDir::new("resp");
    // Nothing listens there: the responder starts and waits for NATS in the background.
    let port = free_port()?;
    let responder = responder(
        &config(&sink),
        &format!("nats://127.0.0.1:{port}"),
        "resp",
        &state,
    )
    .await?;
    for path in ["/", "/scan", "/tenant/findings"] {
        let (status, answer) = responder.post(path, r#"{"finding":"x"}"#).await?;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("responders do not take events")),
            "{path}: {answer}"
        );
    }
    // Its operator endpoints and probes stay.
    assert_eq!(responder.get("/admin/dlq").await?.0, 200);
    assert_eq!(responder.get("/healthz").await?.0, 200);
    assert_eq!(responder.get("/metrics").await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn relaying_survives_nats_outages() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut nats = NatsCluster::start().await?;
    let sink = Sink::start().await?;
    let config = config(&sink);
    let (state_a, state_b) = (TempDir::new("resp-a"), TempDir::new("resp-b"));
    let _responders = [
        responder(&config, &nats.urls(), "resp-a", &state_a).await?,
        responder(&config, &nats.urls(), "resp-b", &state_b).await?,
    ];
    let node_state = TempDir::new("node-state");
    let node = node(&config, &nats.urls(), "node-0", Some(&node_state)).await?;
    assert_eq!(node.post("/", r#"{"n":0}"#).await?.0, 200);
    wait_numbers(&sink, 0..1, RECOVERY).await?;

    // One server down: the others carry on (the stream has three replicas).
    nats.servers[0].kill().await?;
    for n in 1..10 {
        assert_eq!(node.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    wait_numbers(&sink, 0..10, RECOVERY).await?;

    // All down: the node keeps accepting; its outbox holds the backlog.
    nats.kill_all().await?;
    for n in 10..20 {
        assert_eq!(node.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    wait_until("relay errors counted", RECOVERY, async || {
        let errors = node
            .metric(r#"hooker_relay_published_total{outcome="error"}"#)
            .await
            .ok()?;
        (errors >= 1.0).then_some(())
    })
    .await?;
    assert!(node.metric("hooker_relay_backlog").await? >= 1.0);
    let got = numbers(&sink);
    if got.iter().any(|n| *n >= 10) {
        bail!("an event went through while every NATS server was down: {got:?}");
    }

    // A node agent restarted during the outage relays its backlog after the restart.
    let status = node.stop().await?;
    assert!(status.success(), "{status:?}");
    let node = self::node(&config, &nats.urls(), "node-0", Some(&node_state)).await?;
    for n in 20..25 {
        assert_eq!(node.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    nats.restart_all().await?;
    wait_numbers(&sink, 0..25, RECOVERY).await?;
    wait_until("the relay backlog drained", RECOVERY, async || {
        (node.metric("hooker_relay_backlog").await.ok()? == 0.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn validate_refuses_a_node_local_action_on_the_responder() -> Result<()> {
    let dir = TempDir::new("runs-on");
    let path = dir.join("cfg.yaml");
    std::fs::write(
        &path,
        "routes:\n  - name: r\n    input: input.n\n    template: raw\n    actions: [script]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: script\n    type: exec\n    enable: true\n    exec-script: echo\n    runs-on: responder\n",
    )?;
    let path = path.display().to_string();
    let (code, stdout, stderr) = hooker_tests::hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("{path}:14: action \"script\", key `runs-on`")),
        "{stderr}"
    );
    assert!(stderr.contains("always run on the node"), "{stderr}");
    Ok(())
}

//! The log and alert outputs against the real thing where Debian has it: `alertmanager` against
//! Prometheus Alertmanager (`prometheus-alertmanager`), `syslog` against rsyslog (UDP, TCP and TLS
//! inputs with its `ossl` driver, writing the raw message to files), `nats` against
//! `nats-server` (core and JetStream). `loki` and `elasticsearch` against local servers that check
//! the exact request their documentation defines (no Debian package of either).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use hooker_tests::{Agent, Reply, Sink, TempDir, client, fixture, fixture_json, wait_until};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const TRACEE: &str = "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json";
/// The fixture's `timestamp` (ns), as RFC 5424 and RFC 3339 write it.
const TRACEE_NS: &str = "1677676197900822209";
const TRACEE_TIME: &str = "2023-03-01T13:09:57.900822Z";

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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn delivered(agent: &Agent, action: &str, n: usize) -> Result<Vec<Value>> {
    wait_until(
        &format!("{n} deliveries by {action}"),
        Duration::from_secs(30),
        async || {
            let found: Vec<Value> = agent
                .logs()
                .into_iter()
                .filter(|l| l["message"] == "Delivered." && l["action"] == action)
                .collect();
            (found.len() >= n).then_some(found)
        },
    )
    .await
}

/// A server process for one test; killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn spawn(command: &mut Command, what: &str) -> Result<Server> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {what}; tests/run.sh installs it"))?;
        Ok(Server { child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// === alertmanager ===

const ALERT_TEMPLATE: &str = "package outputs.alert\nimport rego.v1\ntitle := \"Dropped executable\"\nresult := sprintf(\"%s ran in %s\", [input.processName, input.containerName])\n";

#[tokio::test]
async fn alertmanager_shows_the_alert_with_its_labels_and_repeats_group() -> Result<()> {
    let dir = TempDir::new("alertmanager");
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )?;
    let port = free_port()?;
    let _alertmanager = Server::spawn(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address="),
        "prometheus-alertmanager (Debian package prometheus-alertmanager)",
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let http = client()?;
    wait_until("Alertmanager ready", Duration::from_secs(30), async || {
        let response = http.get(format!("{base}/-/ready")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await?;

    let actions = format!(
        "  - name: am\n    type: alertmanager\n    enable: true\n    url: {base}\n    ends-after: 2h\n    labels:\n      team: secops\n      image: event.input.containerImage\n"
    );
    let agent = Agent::builder(&config(ALERT_TEMPLATE, &["am"], &actions))
        .env("NODE_NAME", "node-7")
        .start()
        .await?;
    agent.post("/", event(TRACEE)).await?;
    delivered(&agent, "am", 1).await?;
    // The same finding again, later: it updates the same alert instead of adding one.
    let mut later = fixture_json(TRACEE);
    later["timestamp"] = json!(1677676297900822209_i64);
    later["processId"] = json!(4242);
    agent.post("/", later.to_string()).await?;
    delivered(&agent, "am", 2).await?;

    let alerts: Value = http
        .get(format!("{base}/api/v2/alerts"))
        .send()
        .await?
        .json()
        .await?;
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    assert_eq!(alerts.len(), 1, "repeats group into one alert: {alerts:?}");
    let alert = &alerts[0];
    let labels = alert["labels"].as_object().cloned().unwrap_or_default();
    let finding = labels
        .get("finding")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(finding.starts_with("hooker-"), "{labels:?}");
    assert_eq!(
        Value::Object(labels.clone()),
        json!({
            "alertname": "Dropped executable",
            "severity": "medium",
            "source": "tracee",
            "node": "node-7",
            "route": "r",
            "finding": finding,
            "team": "secops",
            "image": "docker.io/library/ubuntu:latest",
        })
    );
    assert_eq!(
        alert["annotations"],
        json!({"summary": "Dropped executable", "description": "dpkg ran in app"})
    );
    assert_eq!(alert["status"]["state"], "active");
    let ends = alert["endsAt"].as_str().unwrap_or_default();
    let starts = alert["startsAt"].as_str().unwrap_or_default();
    assert!(ends > starts, "endsAt {ends} after startsAt {starts}");
    agent.stop().await?;
    Ok(())
}

// === syslog ===

const SYSLOG_TEMPLATE: &str = "package outputs.syslog\nimport rego.v1\ntitle := \"Drop|ped \\\\ exe\"\nresult := \"k=v | \\\\ \\\"q\\\" ] done\"\nresult_dedup_key := \"finding-1\"\n";

/// rsyslog with a UDP, a TCP and a TLS input, each writing the raw message to its own file.
struct Rsyslog {
    _server: Server,
    dir: TempDir,
    udp: u16,
    tcp: u16,
    tls: u16,
}

impl Rsyslog {
    async fn start() -> Result<Rsyslog> {
        let dir = TempDir::new("rsyslog");
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])?;
        std::fs::write(dir.join("cert.pem"), certified.cert.pem())?;
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())?;
        let (udp, tcp, tls) = (free_port()?, free_port()?, free_port()?);
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k"
  DefaultNetstreamDriverCAFile="{d}/cert.pem"
  DefaultNetstreamDriverCertFile="{d}/cert.pem"
  DefaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf)?;
        let server = Server::spawn(
            Command::new("rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(dir.join("rsyslog.conf"))
                .arg("-i")
                .arg(dir.join("rsyslog.pid")),
            "rsyslogd (Debian packages rsyslog, rsyslog-openssl)",
        )?;
        for port in [tcp, tls] {
            wait_until("rsyslog listening", Duration::from_secs(30), async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await?;
        }
        Ok(Rsyslog {
            _server: server,
            dir,
            udp,
            tcp,
            tls,
        })
    }

    async fn line(&self, input: &str) -> Result<String> {
        let path = self.dir.join(&format!("{input}.log"));
        wait_until(
            &format!("a line in rsyslog's {input} file"),
            Duration::from_secs(30),
            async || {
                let text = std::fs::read_to_string(&path).ok()?;
                text.lines().next().map(str::to_string)
            },
        )
        .await
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn syslog_delivers_exact_rfc5424_and_cef_lines_to_rsyslog_over_udp_tcp_and_tls() -> Result<()>
{
    let rsyslog = Rsyslog::start().await?;
    let ca = rsyslog.dir.join("cert.pem");
    let actions = format!(
        "  - name: udp\n    type: syslog\n    enable: true\n    protocol: udp\n    address: 127.0.0.1:{}\n    facility: local4\n  - name: tcp\n    type: syslog\n    enable: true\n    protocol: tcp\n    address: 127.0.0.1:{}\n    format: cef\n  - name: tls\n    type: syslog\n    enable: true\n    protocol: tls\n    address: 127.0.0.1:{}\n    server-name: localhost\n    ca-file: {}\n    app-name: hooker-tls\n",
        rsyslog.udp,
        rsyslog.tcp,
        rsyslog.tls,
        ca.display()
    );
    let agent = Agent::builder(&config(SYSLOG_TEMPLATE, &["udp", "tcp", "tls"], &actions))
        .env("NODE_NAME", "node-7")
        .start()
        .await?;
    agent.post("/", event(TRACEE)).await?;
    let done = delivered(&agent, "tls", 1).await?;
    let event_id = done[0]["event"].as_str().unwrap_or_default().to_string();
    let pid = agent.pid().context("agent pid")?;
    assert!(read_pid(&rsyslog.dir.join("rsyslog.pid")).is_some());
    let sd = format!(
        "[hooker@32473 route=\"r\" event=\"{event_id}\" severity=\"medium\" source=\"tracee\" finding=\"finding-1\"]"
    );
    let body = r#"k=v | \ "q" ] done"#;
    // local4 (20) × 8 + warning (4) = 164; authpriv (10) × 8 + 4 = 84.
    assert_eq!(
        rsyslog.line("udp").await?,
        format!("<164>1 {TRACEE_TIME} node-7 hooker {pid} r {sd} {body}")
    );
    assert_eq!(
        rsyslog.line("tls").await?,
        format!("<84>1 {TRACEE_TIME} node-7 hooker-tls {pid} r {sd} {body}")
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        rsyslog.line("tcp").await?,
        format!(
            "<84>1 {TRACEE_TIME} node-7 hooker {pid} r {sd} CEF:0|Hooker|Hooker|{version}|TRC-1022|Drop\\|ped \\\\ exe|5|rt=1677676197900 dvchost=node-7 externalId={event_id} cs1Label=route cs1=r cs2Label=finding cs2=finding-1 cs3Label=source cs3=tracee msg=k\\=v | \\\\ \"q\" ] done"
        )
    );
    agent.stop().await?;
    Ok(())
}

// === loki ===

const LOKI_TEMPLATE: &str = "package outputs.loki\nimport rego.v1\ntitle := \"t\"\nresult := sprintf(\"%s ran \\\"%s\\\"\", [input.containerName, input.processName])\n";

#[tokio::test]
async fn loki_pushes_the_documented_json_with_labels_tenant_and_auth() -> Result<()> {
    let loki = Sink::scripted(vec![Reply::status(429), Reply::status(204)]).await?;
    let cloud = Sink::scripted(vec![Reply::status(204)]).await?;
    let actions = format!(
        "  - name: loki\n    type: loki\n    enable: true\n    url: {}\n    tenant: team-a\n    user: \"12345\"\n    password: $LOKI_PASSWORD\n    labels:\n      cluster: prod\n      image: event.input.containerImage\n    retry-initial-backoff: 10ms\n  - name: cloud\n    type: loki\n    enable: true\n    url: {}\n    token: $LOKI_TOKEN\n",
        loki.url("/"),
        cloud.url("/gateway/loki/api/v1/push"),
    );
    let agent = Agent::builder(&config(LOKI_TEMPLATE, &["loki", "cloud"], &actions))
        .env("NODE_NAME", "node-7")
        .env("LOKI_PASSWORD", "s3cret")
        .env("LOKI_TOKEN", "glc_token")
        .start()
        .await?;
    agent.post("/", event(TRACEE)).await?;
    delivered(&agent, "loki", 1).await?;
    delivered(&agent, "cloud", 1).await?;
    let requests = loki.requests();
    assert_eq!(requests.len(), 2, "the 429 retried: {requests:?}");
    let line = r#"app ran "dpkg""#;
    let labels = json!({"node": "node-7", "route": "r", "severity": "medium", "source": "tracee"});
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "12345:s3cret")
    );
    for request in &requests {
        assert_eq!(request.header("x-scope-orgid"), Some("team-a"));
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/loki/api/v1/push");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), Some(basic.as_str()));
        let mut expected = labels.clone();
        expected["cluster"] = json!("prod");
        expected["image"] = json!("docker.io/library/ubuntu:latest");
        assert_eq!(
            request.body_json(),
            json!({"streams": [{"stream": expected, "values": [[TRACEE_NS, line]]}]})
        );
    }
    let cloud = cloud.requests();
    assert_eq!(cloud.len(), 1);
    let cloud = &cloud[0];
    assert_eq!(cloud.path, "/gateway/loki/api/v1/push");
    assert_eq!(cloud.header("authorization"), Some("Bearer glc_token"));
    assert_eq!(cloud.header("x-scope-orgid"), None);
    assert_eq!(
        cloud.body_json(),
        json!({"streams": [{"stream": labels, "values": [[TRACEE_NS, line]]}]})
    );
    let logged = agent.stdout()
        + &agent
            .logs()
            .iter()
            .map(Value::to_string)
            .collect::<String>();
    assert!(!logged.contains("s3cret") && !logged.contains("glc_token"));
    agent.stop().await?;
    Ok(())
}

// === elasticsearch ===

const BULK_TEMPLATE: &str = "package outputs.bulk\nimport rego.v1\ntitle := \"findings\"\nresult := [{\"n\": 1}, {\"n\": \"two\"}, {\"n\": 3}]\n";

#[tokio::test]
async fn elasticsearch_bulk_retries_only_throttled_items_and_dead_letters_mapping_errors()
-> Result<()> {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let es = Sink::with(move |request| {
        let call = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lines = request.body_text().lines().count();
        let created = |id: &str| json!({"create": {"_index": "hooker-2023.03.01", "_id": id, "status": 201, "result": "created"}});
        let ids: Vec<String> = request
            .body_text()
            .lines()
            .step_by(2)
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap_or_default()["create"]["_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        match (call, lines) {
            (0, 6) => Reply::json(
                200,
                json!({"took": 3, "errors": true, "items": [
                    created(&ids[0]),
                    {"create": {"_index": "hooker-2023.03.01", "_id": ids[1], "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}},
                    {"create": {"_index": "hooker-2023.03.01", "_id": ids[2], "status": 400, "error": {"type": "document_parsing_exception", "reason": "[1:6] failed to parse field [n] of type [long]"}}},
                ]}),
            ),
            (_, 2) => Reply::json(200, json!({"took": 1, "errors": false, "items": [created(&ids[0])]})),
            _ => Reply::status(500),
        }
    })
    .await?;
    let actions = format!(
        "  - name: es\n    type: elasticsearch\n    enable: true\n    url: {}\n    api-key: $ES_API_KEY\n    retry-initial-backoff: 10ms\n    retry-max-attempts: 5\n",
        es.url("/")
    );
    let agent = Agent::builder(&config(BULK_TEMPLATE, &["es"], &actions))
        .env("NODE_NAME", "node-7")
        .env(
            "ES_API_KEY",
            "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
        )
        .start()
        .await?;
    agent.post("/", event(TRACEE)).await?;
    let failure = wait_until(
        "the delivery dead-lettered",
        Duration::from_secs(30),
        async || {
            agent
                .logs()
                .into_iter()
                .find(|l| l["message"] == "Delivery dead-lettered." && l["action"] == "es")
        },
    )
    .await?;
    let error = failure["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("1 of 3 documents refused (2 indexed)")
            && error.contains(
                "#3: 400 document_parsing_exception: [1:6] failed to parse field [n] of type [long]"
            ),
        "{failure}"
    );
    let requests = es.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/_bulk");
        assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(
            request.header("authorization"),
            Some("ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==")
        );
        assert!(request.body_text().ends_with('\n'));
    }
    let first: Vec<Value> = requests[0]
        .body_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect();
    assert_eq!(first.len(), 6);
    let event_id = first[1]["hooker"]["event_id"].clone();
    let meta = json!({"route": "r", "node": "node-7", "event_id": event_id, "title": "findings", "severity": "medium", "source": "tracee", "url": null});
    for (i, n) in [json!(1), json!("two"), json!(3)].into_iter().enumerate() {
        let id = first[2 * i]["create"]["_id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 40);
        assert_eq!(
            first[2 * i],
            json!({"create": {"_index": "hooker-2023.03.01", "_id": id}})
        );
        assert_eq!(
            first[2 * i + 1],
            json!({"n": n, "@timestamp": "2023-03-01T13:09:57.900Z", "hooker": meta})
        );
    }
    // Only the throttled document went again, under the same _id.
    let second: Vec<Value> = requests[1]
        .body_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect();
    assert_eq!(second, vec![first[2].clone(), first[3].clone()]);
    agent.stop().await?;
    Ok(())
}

// === nats ===

const NATS_TEMPLATE: &str = "package outputs.nats\nimport rego.v1\ntitle := \"t\"\nresult := json.marshal({\"process\": input.processName, \"image\": input.containerImage})\n";

#[tokio::test]
async fn nats_publishes_core_and_jetstream_acked_to_subjects_built_from_the_message() -> Result<()>
{
    let dir = TempDir::new("nats-output");
    let port = free_port()?;
    let _server = Server::spawn(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("store")),
        "nats-server (Debian package nats-server)",
    )?;
    let url = format!("nats://127.0.0.1:{port}");
    let nats = wait_until("nats-server up", Duration::from_secs(30), async || {
        async_nats::connect(&url).await.ok()
    })
    .await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "SECURITY".into(),
            subjects: vec!["security.>".into()],
            ..Default::default()
        })
        .await?;
    let mut core = nats.subscribe("alerts.>").await?;
    nats.flush().await?;

    let actions = format!(
        "  - name: core\n    type: nats\n    enable: true\n    url: {url}\n    subject: alerts.{{source}}.{{severity}}.img-{{event.input.image}}\n  - name: js\n    type: nats\n    enable: true\n    url: {url}\n    mode: jetstream\n    subject: security.{{route}}.{{node}}\n"
    );
    let agent = Agent::builder(&config(NATS_TEMPLATE, &["core", "js"], &actions))
        .env("NODE_NAME", "node.7*")
        .start()
        .await?;
    agent.post("/", event(TRACEE)).await?;
    let message = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::StreamExt::next(&mut core),
    )
    .await
    .context("no core NATS message within 30 s")?
    .context("subscription ended")?;
    assert_eq!(
        message.subject.as_str(),
        "alerts.tracee.medium.img-docker_io_library_ubuntu_latest"
    );
    assert_eq!(
        message.payload.as_ref(),
        br#"{"image":"docker.io/library/ubuntu:latest","process":"dpkg"}"#
    );
    let headers = message.headers.clone().unwrap_or_default();
    assert_eq!(headers.get("Hooker-Route").map(|v| v.as_str()), Some("r"));
    assert_eq!(
        headers.get("Hooker-Source").map(|v| v.as_str()),
        Some("tracee")
    );

    let done = delivered(&agent, "js", 1).await?;
    let detail = done[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("stored in stream SECURITY as 1"),
        "{detail}"
    );
    let stored = stream
        .get_last_raw_message_by_subject("security.r.node_7_")
        .await?;
    assert_eq!(
        stored.payload.as_ref(),
        br#"{"image":"docker.io/library/ubuntu:latest","process":"dpkg"}"#
    );
    let stored_headers = stored.headers;
    assert_eq!(
        stored_headers.get("Nats-Msg-Id").map(|v| v.as_str().len()),
        Some(40)
    );
    agent.stop().await?;
    Ok(())
}

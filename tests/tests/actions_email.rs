//! The `email` action against a real SMTP server (Python aiosmtpd, `tests/python/smtp_server.py`)
//! with STARTTLS, implicit TLS, plain, and AUTH; each delivered message is read back and its
//! envelope, headers and both MIME parts checked. `use-mx` runs against a small DNS responder.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message as Dns, MessageType, OpCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use hooker_tests::{Agent, TempDir, fixture, wait_until};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `smtp_server.py`; killed when dropped (it also exits when its stdin closes).
struct SmtpServer {
    _child: tokio::process::Child,
    port: u16,
    out: TempDir,
}

impl SmtpServer {
    async fn start(args: &[&str]) -> anyhow::Result<SmtpServer> {
        let out = TempDir::new("smtp");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/smtp_server.py");
        let mut child = tokio::process::Command::new("python3")
            .arg("-W")
            .arg("ignore")
            .arg(&script)
            .arg(out.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                anyhow::anyhow!("cannot start python3 (needed for the SMTP tests): {err}")
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("the SMTP server did not start within 30 s"))??
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the SMTP server exited at once: is aiosmtpd installed for python3? \
                     (tests/run.sh installs it: pip install aiosmtpd)"
                )
            })?;
        let port = serde_json::from_str::<serde_json::Value>(&first)?["port"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("bad first line from the SMTP server: {first}"))?;
        Ok(SmtpServer {
            _child: child,
            port: port as u16,
            out,
        })
    }

    /// Waits for `n` delivered messages; returns their records, in delivery order.
    async fn messages(&self, n: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        wait_until(
            &format!("{n} delivered message(s)"),
            Duration::from_secs(20),
            async || {
                let records: Vec<serde_json::Value> = (1..=n)
                    .map_while(|i| {
                        let text =
                            std::fs::read_to_string(self.out.join(&format!("{i}.json"))).ok()?;
                        serde_json::from_str(&text).ok()
                    })
                    .collect();
                (records.len() == n).then_some(records)
            },
        )
        .await
    }

    fn count(&self) -> usize {
        std::fs::read_dir(self.out.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A self-signed certificate for 127.0.0.1: (cert path, key path, dir holding them).
fn certificate() -> anyhow::Result<(String, String, TempDir)> {
    let dir = TempDir::new("smtp-cert");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    Ok((cert.display().to_string(), key.display().to_string(), dir))
}

const TITLE: &str = "Détection ✓ TRC-2 on nginx";
const HTML: &str =
    "<h1>Detection</h1><p>Signature <b>TRC-2</b> &amp; more</p><ul><li>host: nginx</li></ul>";

fn config(actions: &str) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input.SigMetadata.ID
    template: mail
    actions: [{names}]
templates:
  - name: mail
    body: |
      package mail
      title := sprintf("Détection ✓ %s on %s", [input.SigMetadata.ID, input.SigMetadata.Hostname])
      result := "{HTML}"
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

fn event_with_owner() -> anyhow::Result<String> {
    let mut event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(
        "postee/tracee-minimal.json",
    ))?)?;
    event["application_scope_owners"] = json!(["owner@example.com"]);
    Ok(event.to_string())
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

#[tokio::test]
async fn email_starttls_with_auth_delivers_html_and_text_with_proper_headers() -> anyhow::Result<()>
{
    let (cert, key, _certs) = certificate()?;
    let server = SmtpServer::start(&["--starttls", &cert, &key, "--auth", "hooker:s3cret"]).await?;
    let config = config(&format!(
        r#"  - name: mail
    type: email
    enable: true
    host: 127.0.0.1
    port: {port}
    user: hooker
    password: $SMTP_PW
    sender: Hooker Alerts <alerts@hooker.test>
    recipients: [secops@example.com, "<%application_scope_owner%>"]
    client-host-name: node-1.hooker.test
    ca-file: {cert}
"#,
        port = server.port
    ));
    let agent = Agent::builder(&config)
        .env("SMTP_PW", "s3cret")
        .start()
        .await?;
    agent.post("/", event_with_owner()?).await?;
    let record = server.messages(1).await?.remove(0);
    assert_eq!(record["mail_from"], "alerts@hooker.test");
    assert_eq!(
        record["rcpt_tos"],
        json!(["secops@example.com", "owner@example.com"])
    );
    assert_eq!(record["tls"], true, "STARTTLS before anything else");
    assert_eq!(record["login"], "hooker");
    assert_eq!(record["helo"], "node-1.hooker.test");

    let headers = &record["headers"];
    assert_eq!(headers["subject"], TITLE);
    let raw_subject = record["raw_headers"]["subject"]
        .as_str()
        .unwrap_or_default();
    assert!(
        raw_subject.to_ascii_lowercase().starts_with("=?utf-8?"),
        "the subject is RFC 2047 encoded: {raw_subject}"
    );
    assert_eq!(headers["from"], "Hooker Alerts <alerts@hooker.test>");
    assert_eq!(headers["to"], "secops@example.com, owner@example.com");
    let date = headers["date"].as_str().unwrap_or_default();
    assert!(
        date.len() >= 29 && date.ends_with("+0000") && date.contains(", "),
        "RFC 5322 date: {date}"
    );
    let id = headers["message-id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with('<') && id.ends_with("@hooker.test>"),
        "message id in the sender's domain: {id}"
    );
    assert_eq!(headers["mime-version"], "1.0");
    assert_eq!(record["content_type"], "multipart/alternative");
    let parts = record["parts"].as_array().cloned().unwrap_or_default();
    assert_eq!(parts.len(), 2, "{record}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(parts[0]["charset"], "utf-8");
    assert_eq!(
        parts[0]["content"]
            .as_str()
            .map(|s| s.replace("\r\n", "\n")),
        Some("Detection\nSignature TRC-2 & more\n- host: nginx\n".to_string())
    );
    assert_eq!(parts[1]["content_type"], "text/html");
    assert_eq!(
        parts[1]["content"]
            .as_str()
            .map(|s| s.trim_end().to_string()),
        Some(HTML.to_string())
    );
    Ok(())
}

#[tokio::test]
async fn email_implicit_tls_and_plain_delivery() -> anyhow::Result<()> {
    let (cert, key, _certs) = certificate()?;
    let implicit = SmtpServer::start(&["--implicit-tls", &cert, &key, "--auth", "u:p"]).await?;
    let plain = SmtpServer::start(&[]).await?;
    let config = config(&format!(
        r#"  - name: smtps
    type: email
    enable: true
    host: 127.0.0.1
    port: {implicit}
    tls: tls
    ca-file: {cert}
    user: u
    password: p
    sender: alerts@hooker.test
    recipients: [secops@example.com]
  - name: relay
    type: email
    enable: true
    host: 127.0.0.1
    port: {plain}
    sender: alerts@hooker.test
    recipients: ["<%application_scope_owner%>"]
"#,
        implicit = implicit.port,
        plain = plain.port
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", event_with_owner()?).await?;
    let smtps = implicit.messages(1).await?.remove(0);
    assert_eq!(smtps["tls"], true);
    assert_eq!(smtps["login"], "u");
    assert_eq!(smtps["headers"]["subject"], TITLE);
    let relayed = plain.messages(1).await?.remove(0);
    assert_eq!(relayed["tls"], false, "the server offers no STARTTLS");
    assert_eq!(relayed["login"], serde_json::Value::Null);
    assert_eq!(relayed["rcpt_tos"], json!(["owner@example.com"]));
    assert_eq!(relayed["content_type"], "multipart/alternative");
    Ok(())
}

#[tokio::test]
async fn email_refuses_an_untrusted_certificate_and_reports_rejected_auth() -> anyhow::Result<()> {
    let (cert, key, _certs) = certificate()?;
    let server = SmtpServer::start(&["--starttls", &cert, &key, "--auth", "hooker:right"]).await?;
    let config = config(&format!(
        r#"  - name: untrusted
    type: email
    enable: true
    host: 127.0.0.1
    port: {port}
    user: hooker
    password: right
    sender: alerts@hooker.test
    recipients: [secops@example.com]
  - name: wrong-password
    type: email
    enable: true
    host: 127.0.0.1
    port: {port}
    user: hooker
    password: wrong-secret
    ca-file: {cert}
    sender: alerts@hooker.test
    recipients: [secops@example.com]
"#,
        port = server.port
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", event_with_owner()?).await?;
    let log = failure(&agent, "untrusted").await?;
    let error = log["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("sending through 127.0.0.1:")
            && error.to_ascii_lowercase().contains("certificate"),
        "{log}"
    );
    let log = failure(&agent, "wrong-password").await?;
    let error = log["error"].as_str().unwrap_or_default();
    assert!(error.contains("535"), "{log}");
    assert_eq!(log["retryable"], false);
    assert!(!error.contains("wrong-secret"));
    assert_eq!(server.count(), 0);
    Ok(())
}

#[tokio::test]
async fn email_gives_up_on_a_silent_server_after_its_timeout() -> anyhow::Result<()> {
    // Accepts connections and never says hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok(mut streams) = keep.lock() {
                streams.push(stream);
            }
        }
    });
    let config = config(&format!(
        r#"  - name: mail
    type: email
    enable: true
    host: 127.0.0.1
    port: {port}
    tls: none
    timeout: 1s
    sender: alerts@hooker.test
    recipients: [secops@example.com]
"#
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", event_with_owner()?).await?;
    let log = failure(&agent, "mail").await?;
    assert!(
        log["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{log}"
    );
    assert_eq!(log["retryable"], true);
    accept.abort();
    Ok(())
}

/// A DNS server for the test domain: `example.test` has MX 10 `mx.example.test`, which is
/// 127.0.0.1. Returns its address and the names it was asked about.
async fn dns() -> anyhow::Result<(std::net::SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let address = socket.local_addr()?;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Dns::from_bytes(&buffer[..n]) else {
                continue;
            };
            let mut reply = Dns::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true)
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true);
            reply.add_queries(query.queries().to_vec());
            for question in query.queries() {
                let name = question.name().to_ascii().to_ascii_lowercase();
                if let Ok(mut log) = log.lock() {
                    log.push(format!("{} {name}", question.query_type()));
                }
                let rdata = match (question.query_type(), name.as_str()) {
                    (RecordType::MX, "example.test.") => Name::from_ascii("mx.example.test.")
                        .ok()
                        .map(|exchange| RData::MX(MX::new(10, exchange))),
                    (RecordType::A, "mx.example.test.") => Some(RData::A(A::new(127, 0, 0, 1))),
                    _ => None,
                };
                if let Some(rdata) = rdata {
                    reply.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
                }
            }
            if let Ok(bytes) = reply.to_bytes() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    Ok((address, asked))
}

#[tokio::test]
async fn email_use_mx_delivers_to_the_domains_mail_exchanger() -> anyhow::Result<()> {
    let server = SmtpServer::start(&[]).await?;
    let (resolver, asked) = dns().await?;
    let config = config(&format!(
        r#"  - name: direct
    type: email
    enable: true
    use-mx: true
    mx-resolver: {resolver}
    port: {port}
    sender: alerts@hooker.test
    recipients: [a@example.test, B@Example.test]
"#,
        port = server.port
    ));
    let agent = Agent::start(&config).await?;
    agent.post("/", event_with_owner()?).await?;
    let record = server.messages(1).await?.remove(0);
    assert_eq!(
        record["rcpt_tos"],
        json!(["a@example.test", "B@Example.test"])
    );
    assert_eq!(record["headers"]["subject"], TITLE);
    let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(
        asked.first().map(String::as_str),
        Some("MX example.test."),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"A mx.example.test.".to_string()),
        "{asked:?}"
    );
    Ok(())
}

#[tokio::test]
async fn email_preview_shows_the_message_and_validate_locates_bad_addresses() -> anyhow::Result<()>
{
    let dir = TempDir::new("email-cli");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        config(
            r#"  - name: mail
    type: email
    enable: true
    host: smtp.example.com
    user: bot@example.com
    password: hunter2-secret
    recipients: [secops@example.com, "<%application_scope_owner%>"]
"#,
        ),
    )?;
    let event = dir.join("event.json");
    std::fs::write(&event, event_with_owner()?)?;
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
    assert_eq!(
        preview["transport"],
        json!({"host": "smtp.example.com", "port": 587, "tls": "StartTls", "auth": "bot@example.com / ***"})
    );
    assert_eq!(
        preview["envelope"],
        json!({"from": "bot@example.com", "to": ["secops@example.com", "owner@example.com"]})
    );
    let message = preview["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Content-Type: multipart/alternative"),
        "{message}"
    );
    assert!(
        message.contains("To: secops@example.com, owner@example.com"),
        "{message}"
    );
    assert!(!stdout.contains("hunter2-secret"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        config(
            r#"  - name: mail
    type: email
    enable: true
    host: smtp.example.com
    sender: alerts@hooker.test
    recipients: [not-an-address]
"#,
        ),
    )?;
    let path = bad.display().to_string();
    let line = std::fs::read_to_string(&bad)?
        .lines()
        .position(|l| l.contains("recipients:"))
        .map_or(0, |i| i + 1);
    let (code, _, stderr) = hooker_tests::hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:{line}: action \"mail\", key `recipients`: `not-an-address` is not an address"
        )),
        "{stderr}"
    );
    Ok(())
}

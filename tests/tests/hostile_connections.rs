//! Hostile connections cannot stop Hooker: with thousands of connections that send nothing,
//! trickle a body one byte every few seconds, or open HTTP/2 and go quiet (held open again as
//! soon as Hooker closes them), a new client still gets `/healthz` and an event accepted on
//! HTTP, gRPC and Fluent Forward within 15 s; and the probes listener answers `HEAD /metrics`
//! like `GET`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hooker_grpc::hooker::v1 as pb;
use hooker_tests::{Agent, Sink, webhook_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TOKEN: &str = "hostile-test-token";

/// How long a new client may take to get its answers while a flood is held open.
const DEADLINE: Duration = Duration::from_secs(15);

/// Pause between two bytes of a trickled body.
const TRICKLE_EVERY: Duration = Duration::from_secs(3);

/// One flood at a time: each holds thousands of sockets.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test process (and the agents it starts, which inherit it) may open as many files as the
/// hard limit allows.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(
        hard >= 12_000,
        "this test holds about 7,000 sockets at once (both ends); the hard file limit is {hard}"
    );
}

/// What a flood connection does once connected, until Hooker closes it.
#[derive(Clone)]
enum Behaviour {
    /// Sends nothing.
    Silent,
    /// Sends `head` at once, then `body` one byte every few seconds.
    Trickle { head: Vec<u8>, body: Vec<u8> },
}

/// Flood connections, each reopened a second after Hooker closes it; stopped when dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    /// Connections opened at least once.
    started: Arc<AtomicUsize>,
    size: usize,
}

impl Flood {
    fn new() -> Flood {
        Flood {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: tokio::task::JoinSet::new(),
            started: Arc::new(AtomicUsize::new(0)),
            size: 0,
        }
    }

    fn add(&mut self, address: &str, n: usize, behaviour: Behaviour) {
        self.size += n;
        for _ in 0..n {
            let address = address.to_string();
            let behaviour = behaviour.clone();
            let stop = self.stop.clone();
            let started = self.started.clone();
            self.tasks.spawn(async move {
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let connected =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&address))
                            .await;
                    if first {
                        first = false;
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(Ok(stream)) = connected {
                        hold(stream, &behaviour).await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }

    /// Waits until every connection was tried once (or 30 s: a stuck listener's backlog is full).
    async fn established(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.started.load(Ordering::Relaxed) < self.size && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the trickles start and the listener's cap fill.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.abort_all();
    }
}

/// Behaves as told until Hooker closes the connection (or answers and closes).
async fn hold(mut stream: TcpStream, behaviour: &Behaviour) {
    let (head, body): (&[u8], &[u8]) = match behaviour {
        Behaviour::Silent => (&[], &[]),
        Behaviour::Trickle { head, body } => (head, body),
    };
    if stream.write_all(head).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let mut sink = [0u8; 4096];
    let mut next = 0;
    let mut ticker = tokio::time::interval_at(Instant::now() + TRICKLE_EVERY, TRICKLE_EVERY);
    loop {
        tokio::select! {
            read = reader.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = ticker.tick(), if next < body.len() => {
                if writer.write_all(&body[next..next + 1]).await.is_err() {
                    return;
                }
                next += 1;
            }
        }
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame: an HTTP/2 connection, then nothing.
fn h2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes
}

fn idle_h2() -> Behaviour {
    Behaviour::Trickle {
        head: h2_preface(),
        body: Vec::new(),
    }
}

/// An authorised request whose 1,000-byte body trickles (the worst case: it passes auth).
fn trickled_request(path: &str, content_type: &str, body: Vec<u8>) -> Behaviour {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: hooker\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    Behaviour::Trickle {
        head: head.into_bytes(),
        body,
    }
}

/// A gRPC message of 995 bytes: its 5-byte prefix, then the payload.
fn grpc_message() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0x03, 0xe3];
    bytes.extend(std::iter::repeat_n(b'x', 995));
    bytes
}

/// A Forward message `[tag, time, {"p": <str of 990>}]`, written whole or trickled.
fn forward_partial_message() -> Vec<u8> {
    let mut bytes = vec![0x93, 0xa1, b't', 0x01, 0x81, 0xa1, b'p', 0xda, 0x03, 0xde];
    bytes.extend(std::iter::repeat_n(b'x', 990));
    bytes
}

/// `[tag, time, {"n": 1}, {"chunk": "<chunk>"}]`.
fn forward_message_with_chunk(chunk: &str) -> Vec<u8> {
    let mut bytes = vec![0x94, 0xa1, b't', 0x01, 0x81, 0xa1, b'n', 0x01, 0x81, 0xa5];
    bytes.extend_from_slice(b"chunk");
    bytes.push(0xa0 | chunk.len() as u8);
    bytes.extend_from_slice(chunk.as_bytes());
    bytes
}

/// Starts an agent with a token, the Forward listener, and `env`.
async fn agent(sink: &Sink, env: &[(&str, &str)]) -> anyhow::Result<Agent> {
    let mut builder = Agent::builder(&webhook_config(&sink.url("/hostile")))
        .env("HOOKER_AUTH_TOKEN", TOKEN)
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        // Thousands of closed connections are logged at debug level.
        .env("HOOKER_DEBUG", "false");
    for (key, value) in env {
        builder = builder.env(key, *value);
    }
    builder.start().await
}

/// Retries `attempt` until it succeeds or `DEADLINE` passes; the error says what last failed.
async fn within_deadline<F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let outcome = match tokio::time::timeout(left, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("no answer")),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= until => {
                anyhow::bail!(
                    "{what} did not succeed within {DEADLINE:?} under the flood: {error:#}"
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A client with no connection pool: every attempt is a new connection, as a new client's is.
fn fresh_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .build()?)
}

async fn get_ok(url: &str) -> anyhow::Result<()> {
    let response = fresh_client()?.get(url).send().await?;
    anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
    Ok(())
}

async fn post_event(url: &str) -> anyhow::Result<()> {
    let response = fresh_client()?
        .post(url)
        .bearer_auth(TOKEN)
        .body(r#"{"n":1,"hostile":"flood"}"#)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status == 200, "POST {url}: {status} {text}");
    Ok(())
}

async fn grpc_publish(address: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut request = tonic::Request::new(pb::PublishRequest {
        event: Some(pb::Event {
            payload: br#"{"n":2,"hostile":"grpc"}"#.to_vec(),
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let reply = pb::intake_client::IntakeClient::new(channel)
        .publish(request)
        .await?
        .into_inner();
    anyhow::ensure!(reply.events == 1, "{reply:?}");
    Ok(())
}

async fn forward_acknowledged(address: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(&forward_message_with_chunk("probe"))
        .await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed without an ack");
        answer.extend_from_slice(&buf[..n]);
        // {"ack": "probe"}
        if answer.windows(3).any(|w| w == b"ack") && answer.windows(5).any(|w| w == b"probe") {
            return Ok(());
        }
    }
}

fn address(agent: &Agent, intake: &str) -> String {
    agent
        .address(intake)
        .unwrap_or_else(|| panic!("the {intake} listener is on"))
        .to_string()
}

/// The three floods, one listener at a time, each followed by a new client's requests.
async fn survives_floods(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let sink = Sink::start().await?;
    let agent = agent(&sink, env).await?;
    let http = address(&agent, "http");
    let grpc = address(&agent, "grpc");
    let forward = address(&agent, "forward");

    let mut flood = Flood::new();
    flood.add(&http, 2000, Behaviour::Silent);
    flood.add(
        &http,
        1000,
        trickled_request("/", "application/json", vec![b' '; 1000]),
    );
    flood.add(&http, 500, idle_h2());
    flood.established().await;
    // Every phase runs, and the failures are reported together.
    let mut failures = Vec::new();
    failures.extend(
        within_deadline("GET /healthz on the HTTP intake", || {
            get_ok_owned(format!("http://{http}/healthz"))
        })
        .await
        .err(),
    );
    failures.extend(
        within_deadline("POST / with a token", || {
            post_event_owned(format!("http://{http}/"))
        })
        .await
        .err(),
    );
    let probes = agent.address("probes").unwrap_or("127.0.0.1:1").to_string();
    failures.extend(
        within_deadline("GET /healthz on the probes listener", || {
            get_ok_owned(format!("http://{probes}/healthz"))
        })
        .await
        .err(),
    );
    failures.extend(
        within_deadline("GET /readyz on the probes listener", || {
            get_ok_owned(format!("http://{probes}/readyz"))
        })
        .await
        .err(),
    );
    drop(flood);

    let mut flood = Flood::new();
    flood.add(&grpc, 2000, Behaviour::Silent);
    flood.add(
        &grpc,
        1000,
        trickled_request(
            "/hooker.v1.Intake/Publish",
            "application/grpc",
            grpc_message(),
        ),
    );
    flood.add(&grpc, 500, idle_h2());
    flood.established().await;
    failures.extend(
        within_deadline("a gRPC Publish", || grpc_publish_owned(grpc.clone()))
            .await
            .err(),
    );
    drop(flood);

    let mut flood = Flood::new();
    flood.add(&forward, 2000, Behaviour::Silent);
    flood.add(
        &forward,
        1000,
        Behaviour::Trickle {
            head: Vec::new(),
            body: forward_partial_message(),
        },
    );
    flood.established().await;
    failures.extend(
        within_deadline("a Forward chunk's ack", || {
            forward_acknowledged_owned(forward.clone())
        })
        .await
        .err(),
    );
    drop(flood);
    anyhow::ensure!(failures.is_empty(), "{failures:#?}");

    // Every accepted event arrives: HTTP, gRPC, Forward.
    let got = sink.wait_for(3).await?;
    assert!(got.len() >= 3);
    let metrics = reqwest::get(format!("http://{probes}/metrics"))
        .await?
        .text()
        .await?;
    for reason in ["slow", "evicted"] {
        assert!(
            metrics.contains(&format!(
                "hooker_connections_closed_total{{listener=\"http\",reason=\"{reason}\"}}"
            )),
            "no {reason} closes counted:\n{metrics}"
        );
    }
    agent.stop().await?;
    Ok(())
}

async fn get_ok_owned(url: String) -> anyhow::Result<()> {
    get_ok(&url).await
}

async fn post_event_owned(url: String) -> anyhow::Result<()> {
    post_event(&url).await
}

async fn grpc_publish_owned(address: String) -> anyhow::Result<()> {
    grpc_publish(&address).await
}

async fn forward_acknowledged_owned(address: String) -> anyhow::Result<()> {
    forward_acknowledged(&address).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_connection_cap_evicts_idle_and_stalled_connections_for_new_clients()
-> anyhow::Result<()> {
    survives_floods(&[("HOOKER_MAX_CONNECTIONS", "512")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_settings_hold_against_floods_of_idle_and_slow_connections()
-> anyhow::Result<()> {
    survives_floods(&[]).await
}

#[tokio::test]
async fn head_metrics_answers_like_get_on_the_probes_and_intake_listeners() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let sink = Sink::start().await?;
    let agent = agent(&sink, &[]).await?;
    let client = fresh_client()?;
    for listener in ["http", "probes"] {
        let url = format!("http://{}/metrics", address(&agent, listener));
        let get = client.get(&url).send().await?;
        let head = client.head(&url).send().await?;
        assert_eq!(head.status(), 200, "HEAD {url}");
        assert_eq!(get.status(), 200, "GET {url}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{url}"
        );
        assert!(get.text().await?.contains("hooker_build_info"));
        assert_eq!(head.bytes().await?.len(), 0, "HEAD {url} has no body");
    }
    // The probes listener serves probes and metrics only.
    let probes = address(&agent, "probes");
    for path in ["/healthz", "/readyz", "/ping"] {
        let response = client.get(format!("http://{probes}{path}")).send().await?;
        assert_eq!(response.status(), 200, "{path}");
    }
    let intake = client
        .post(format!("http://{probes}/"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await?;
    assert_eq!(intake.status(), 404, "no intake on the probes listener");
    Ok(())
}

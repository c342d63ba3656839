//! Support for the end-to-end suite: start the real `hooker` binary, talk to it over TCP and its
//! Unix socket, and stand up local HTTP servers that record exactly what actions send.
//!
//! Nothing here sleeps to synchronise: readiness comes from the agent's own log line, and
//! [`wait_until`] polls a condition against a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `hooker` binary built by `cargo build` in this workspace.
pub fn hooker_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKER_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/<test> → target/debug/hooker
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("hooker");
    assert!(
        bin.exists(),
        "hooker binary not found at {}: run `cargo build -p hooker` first (the test script does)",
        bin.display()
    );
    bin
}

/// A file under `tests/fixtures` (or under `HOOKER_FIXTURES`, a corpus with the same layout).
pub fn fixture(relative: &str) -> PathBuf {
    let base = std::env::var_os("HOOKER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"));
    let path = base.join(relative);
    assert!(
        path.exists(),
        "fixture {} is missing (tests/fixtures in the repository, or HOOKER_FIXTURES)",
        path.display()
    );
    path
}

pub fn fixture_json(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(relative)).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hooker-e2e-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How to start an agent.
pub struct AgentBuilder {
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    label: String,
}

impl AgentBuilder {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Uses `dir` as the state directory, so a second agent can resume where the first stopped.
    pub fn state_dir(self, dir: &Path) -> Self {
        self.env("HOOKER_STATE_DIR", dir.display().to_string())
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the agent and waits for "Hooker is ready.".
    pub async fn start(self) -> Result<Agent> {
        let dir = TempDir::new(&self.label);
        let socket = dir.join("hooker.sock");
        let mut command = Command::new(hooker_bin());
        command
            .arg("run")
            .args(&self.args)
            .env_remove("HOOKER_CFG")
            .env("HOOKER_HTTP", "127.0.0.1:0")
            .env("HOOKER_HTTPS", "off")
            .env("HOOKER_GRPC", "127.0.0.1:0")
            .env("HOOKER_PROBES", "127.0.0.1:0")
            .env("HOOKER_SOCKET", &socket)
            .env("HOOKER_LOG_FORMAT", "json")
            .env("HOOKER_LOG_DIR", dir.join("log"))
            .env("HOOKER_STATE_DIR", dir.join("state"))
            .env("HOOKER_DEBUG", "true")
            .env("HOOKER_REGO_FILTERS", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The machine's AWS settings must not reach the agent: its AWS credential chain would
        // find them, or ask the real instance metadata service (a link-local address) for keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            )
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
        if let Some(config) = &self.config {
            let path = dir.join("cfg.yaml");
            std::fs::write(&path, config)?;
            command.env("HOOKER_CFG", &path);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().context("start hooker")?;
        let logs = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut lines = BufReader::new(stderr).lines();
                let mut raw = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let parsed: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                    if parsed.get("message").and_then(|m| m.as_str()) == Some("Hooker is ready.")
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(Ok(()));
                    }
                    raw.push(line);
                    if let Ok(mut logs) = logs.lock() {
                        logs.push(parsed);
                    }
                }
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(Err(anyhow!(
                        "hooker exited before it was ready; stderr:\n{}",
                        raw.join("\n")
                    )));
                }
            });
        }
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        {
            let stdout = stdout.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut s) = stdout.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => return Err(err),
            _ => bail!("hooker did not become ready within 30 s"),
        }
        let mut addresses = HashMap::new();
        for entry in logs.lock().map_err(|_| anyhow!("log lock"))?.iter() {
            if entry.get("message").and_then(|m| m.as_str()) == Some("Listening.") {
                let intake = entry
                    .get("intake")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let address = entry
                    .get("address")
                    .or_else(|| entry.get("path"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                addresses.insert(intake, address.to_string());
            }
        }
        Ok(Agent {
            child: Some(child),
            dir,
            addresses,
            logs,
            stdout,
            client: client()?,
        })
    }
}

/// A reqwest client for tests (installs the ring provider first: reqwest panics without one).
pub fn client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(true)
        .build()?)
}

/// A running agent. Killed when dropped; [`Agent::stop`] shuts it down gracefully.
pub struct Agent {
    child: Option<Child>,
    pub dir: TempDir,
    addresses: HashMap<String, String>,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    stdout: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

impl Agent {
    pub fn builder(config: &str) -> AgentBuilder {
        AgentBuilder {
            config: Some(config.to_string()),
            env: Vec::new(),
            args: Vec::new(),
            label: "agent".into(),
        }
    }

    /// An agent on its embedded default config.
    pub fn default_config() -> AgentBuilder {
        AgentBuilder {
            config: None,
            env: Vec::new(),
            args: Vec::new(),
            label: "default".into(),
        }
    }

    pub async fn start(config: &str) -> Result<Agent> {
        Agent::builder(config).start().await
    }

    pub fn address(&self, intake: &str) -> Option<&str> {
        self.addresses.get(intake).map(String::as_str)
    }

    pub fn http_url(&self) -> String {
        format!(
            "http://{}",
            self.address("http").expect("the HTTP listener is on")
        )
    }

    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.address("unix").expect("the Unix socket is on"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// POSTs a body; returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, serde_json::Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.http_url()))
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = self
            .client
            .get(format!("{}{path}", self.http_url()))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics").await?.1)
    }

    /// The value of one sample line on `/metrics` (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(metric_value(&text, series))
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `kill -9`: no chance to flush anything.
    pub async fn kill9(mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        child.kill().await?;
        Ok(())
    }

    /// Sends a signal (e.g. SIGHUP).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("not running"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Runs `hooker ARGS` against this agent's Unix socket.
    pub async fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let socket = self.socket_path().display().to_string();
        hooker(args, &[("HOOKER_SOCKET", socket.as_str())]).await
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        if let Some(pid) = child.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("hooker did not exit after SIGTERM")??)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Reads `series` (`name{labels}` exactly as exposed) from a text exposition; 0 when absent.
pub fn metric_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// One request a [`Sink`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A scripted reply: status, body and extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
            headers: Vec::new(),
            delay: None,
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A local HTTP server that records every request and answers as scripted.
pub struct Sink {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    scheme: &'static str,
    ca_pem: Option<String>,
}

/// TLS on top of a TCP listener, for [`Sink::tls_with`]. Failed handshakes are skipped.
struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            if let Ok(stream) = self.acceptor.accept(stream).await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Sink {
    /// Answers 200 to everything.
    pub async fn start() -> Result<Sink> {
        Sink::with(|_| Reply::status(200)).await
    }

    /// Answers with `responder(request)`.
    pub async fn with(
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Result<Sink> {
        Sink::serve(
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            Arc::new(responder),
        )
        .await
    }

    /// Answers from `replies` in order; the last one repeats.
    pub async fn scripted(replies: Vec<Reply>) -> Result<Sink> {
        let replies = Arc::new(Mutex::new(replies));
        Sink::with(move |_| {
            let mut replies = replies.lock().expect("replies lock");
            if replies.len() > 1 {
                replies.remove(0)
            } else {
                replies.first().cloned().unwrap_or(Reply::status(200))
            }
        })
        .await
    }

    /// Like [`Sink::with`], over HTTPS with a fresh self-signed certificate for `127.0.0.1` and
    /// `localhost`; [`Sink::ca_pem`] is the certificate to trust.
    pub async fn tls_with(
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Result<Sink> {
        Sink::tls_serve(Arc::new(responder), None).await
    }

    /// Like [`Sink::tls_with`], and every client must present a certificate signed by
    /// `client_ca` (mutual TLS); handshakes without one fail.
    pub async fn mtls_with(
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        client_ca: rustls::pki_types::CertificateDer<'static>,
    ) -> Result<Sink> {
        Sink::tls_serve(Arc::new(responder), Some(client_ca)).await
    }

    async fn tls_serve(
        responder: Responder,
        client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<Sink> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])?;
        let ca_pem = certified.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| anyhow!(e))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            Some(client_ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(client_ca)?;
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(vec![certified.cert.der().clone()], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut sink = Sink::serve(
            TlsListener {
                inner: listener,
                acceptor,
            },
            responder,
        )
        .await?;
        sink.scheme = "https";
        sink.ca_pem = Some(ca_pem);
        Ok(sink)
    }

    /// The PEM certificate of a TLS sink.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    async fn serve<L>(listener: L, responder: Responder) -> Result<Sink>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let recorded = recorded.clone();
            let responder = responder.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20)
                    .await
                    .unwrap_or_default();
                let request = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().map(str::to_string),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                v.to_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                };
                let reply = responder(&request);
                if let Ok(mut all) = recorded.lock() {
                    all.push(request);
                }
                if let Some(delay) = reply.delay {
                    tokio::time::sleep(delay).await;
                }
                let mut response = axum::response::Response::builder().status(reply.status);
                for (name, value) in &reply.headers {
                    response = response.header(name, value);
                }
                response
                    .body(axum::body::Body::from(reply.body))
                    .unwrap_or_default()
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Sink {
            addr,
            requests,
            shutdown: Some(tx),
            scheme: "http",
            ca_pem: None,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Result<Vec<Recorded>> {
        wait_until(
            &format!("{n} request(s) at the sink"),
            Duration::from_secs(20),
            async || {
                let all = self.requests();
                (all.len() >= n).then_some(all)
            },
        )
        .await
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The config most tests need: one route `r` taking events that have `input.n` (or anything,
/// with `input`), the raw-JSON template, and one webhook action `hook` posting to `url`.
/// A 200 KB string, for events whose records are too big to stay in the agent's memory.
pub fn big_pad() -> String {
    "x".repeat(200_000)
}

/// Every request `sink` received carried its event's whole `pad` (read back from disk uncut).
pub fn assert_arrived_whole(sink: &Sink, pad: &str) {
    for request in sink.requests() {
        let body = request.body_json();
        assert_eq!(
            body["pad"].as_str().map(str::len),
            Some(pad.len()),
            "event {} arrived cut",
            body["n"]
        );
    }
}

pub fn webhook_config(url: &str) -> String {
    format!(
        "routes:\n  - name: r\n    input: input.n\n    template: raw\n    actions: [hook]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: {url}\n"
    )
}

/// Runs `python3 tests/python/<script> ARGS`; returns (exit code, stdout, stderr). The scripts
/// exit 3 naming the module when a Python package they need is missing.
pub async fn python(script: &str, args: &[&str]) -> Result<(i32, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("python script timed out")?
    .context("cannot run python3 (needed by this test; tests/run.sh installs what it needs)")?;
    let code = output.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if code == 3 {
        bail!("{script} cannot run: {stderr}");
    }
    Ok((
        code,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    ))
}

/// Runs the `hooker` binary with `args`; returns (exit code, stdout, stderr).
pub async fn hooker(args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String, String)> {
    let mut command = Command::new(hooker_bin());
    command
        .args(args)
        .env_remove("HOOKER_CFG")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("hooker command timed out")??;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

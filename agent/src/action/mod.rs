//! Actions: what Hooker does with a rendered message. One file per `type`, one trait, one registry.
//!
//! An action is built once per config version from its `actions:` block (`build` must not touch
//! the network), then `send` is called for each message. Actions never see raw bytes or the config
//! file; they get a typed config at build and a [`Message`] at send. The error an action returns
//! says whether trying again could help ([`ErrorKind`]); when to retry is decided elsewhere.

mod alert;
mod alertmanager;
mod api_client;
mod awssecurityhub;
mod chat;
mod dependencytrack;
mod docker;
mod elasticsearch;
mod email;
mod escape;
mod exec;
mod http;
mod jira;
mod kubernetes;
mod log;
mod loki;
mod nats;
mod nexusiq;
mod opsgenie;
mod outputs;
mod pagerduty;
mod servicenow;
mod slack;
mod splunk;
mod stdout;
mod syslog;
mod teams;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ActionConfig, Diagnostic};
use crate::message::Message;

/// Every action type Postee knows, plus Hooker's own (`log`, the chat webhooks beyond Slack and
/// Teams). A type listed here but not built by [`REGISTRY`] is recognised and reported as not yet
/// supported.
pub const KNOWN_TYPES: &[&str] = &[
    "alertmanager",
    "awssecurityhub",
    "dependencytrack",
    "discord",
    "docker",
    "elasticsearch",
    "email",
    "exec",
    "googlechat",
    "http",
    "jira",
    "kubernetes",
    "log",
    "loki",
    "mattermost",
    "nats",
    "nexusiq",
    "opsgenie",
    "pagerduty",
    "rocketchat",
    "servicenow",
    "slack",
    "splunk",
    "stdout",
    "syslog",
    "teams",
    "webhook",
];

type BuildFn = fn(&ActionConfig, &BuildContext) -> Result<Built, Diagnostic>;

/// `type` → builder. Adding an action type is one file plus one line here.
const REGISTRY: &[(&str, BuildFn)] = &[
    ("docker", docker::build),
    ("awssecurityhub", awssecurityhub::build),
    ("exec", exec::build),
    ("http", http::build),
    ("kubernetes", kubernetes::build),
    ("log", log::build),
    ("opsgenie", opsgenie::build),
    ("pagerduty", pagerduty::build),
    ("servicenow", servicenow::build),
    ("slack", slack::build),
    ("splunk", splunk::build),
    ("dependencytrack", dependencytrack::build),
    ("email", email::build),
    ("jira", jira::build),
    ("nexusiq", nexusiq::build),
    ("stdout", stdout::build),
    ("teams", teams::build),
    ("webhook", webhook::build),
    ("mattermost", chat::build_mattermost),
    ("rocketchat", chat::build_rocketchat),
    ("googlechat", chat::build_googlechat),
    ("discord", chat::build_discord),
    ("alertmanager", alertmanager::build),
    ("syslog", syslog::build),
    ("loki", loki::build),
    ("elasticsearch", elasticsearch::build),
    ("nats", nats::build),
];

/// A built action and the warnings its config produced.
pub struct Built {
    pub action: Arc<dyn Action>,
    pub warnings: Vec<Diagnostic>,
}

impl Built {
    pub fn new(action: impl Action, warnings: Vec<Diagnostic>) -> Result<Built, Diagnostic> {
        Ok(Built {
            action: Arc::new(action),
            warnings,
        })
    }
}

/// What a delivery achieved, for logs and `test-route`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub detail: Option<String>,
}

impl Report {
    pub fn none() -> Report {
        Report { detail: None }
    }

    pub fn detail(detail: impl Into<String>) -> Report {
        Report {
            detail: Some(detail.into()),
        }
    }
}

/// Whether an error may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Timeouts, connection errors, 408, 429, 5xx.
    Retryable,
    /// Other 4xx, bad config, bad message: retrying cannot help.
    Permanent,
}

/// Why a delivery failed. The message never carries a secret or a URL with credentials in it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub kind: ErrorKind,
    pub message: String,
    /// From a `Retry-After` header.
    pub retry_after: Option<Duration>,
}

impl ActionError {
    pub fn retryable(message: impl Into<String>) -> ActionError {
        ActionError {
            kind: ErrorKind::Retryable,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A request that got no response. The URL is stripped: webhook URLs carry tokens.
    pub fn transport(err: reqwest::Error) -> ActionError {
        let retryable = err.is_timeout() || err.is_connect() || err.is_request() || err.is_body();
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if retryable {
            ActionError::retryable(message)
        } else {
            ActionError::permanent(message)
        }
    }
}

/// The shared rule for HTTP replies: 2xx is success; 408, 429 and 5xx are retryable (honouring
/// `Retry-After`); anything else is permanent. Errors carry the status and a bounded body excerpt.
pub async fn check_response(response: reqwest::Response) -> Result<Report, ActionError> {
    let status = response.status();
    if status.is_success() {
        return Ok(Report::detail(format!("HTTP {}", status.as_u16())));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        // A server's number, held to the longest duration Hooker schedules (the outbox adds it
        // to now in milliseconds; u64::MAX seconds overflowed that and stopped the engine).
        .map(|seconds| Duration::from_secs(seconds).min(crate::config::units::MAX_DURATION));
    let body = response.bytes().await.unwrap_or_default();
    let message = format!("HTTP {}: {}", status.as_u16(), excerpt(&body, 512));
    let retryable = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
    let kind = if retryable {
        ErrorKind::Retryable
    } else {
        ErrorKind::Permanent
    };
    Err(ActionError {
        kind,
        message,
        retry_after,
    })
}

/// At most `limit` bytes of `bytes` as text, cut on a character boundary and marked when cut.
pub fn excerpt(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], bytes.len())
}

/// One action. Implementations are cheap to share: the pipeline holds them in `Arc`s.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// The config `type`, lower case; used as a metric label.
    fn kind(&self) -> &'static str;

    async fn send(&self, message: &Message) -> Result<Report, ActionError>;

    /// Whether `send` reads the message's body. One that does not (the forensic `log`) lets its
    /// routes skip rendering the raw-JSON template's body ([`Message::body_pending`]).
    fn reads_body(&self) -> bool {
        true
    }

    /// What `send` would do with `message`, without doing it (`hooker test-route`).
    fn preview(&self, message: &Message) -> serde_json::Value {
        serde_json::json!({ "title": message.title, "body": message.body })
    }
}

/// What building an action may use: shared clients and facts about this node.
#[derive(Clone)]
pub struct BuildContext {
    http: reqwest::Client,
    pub node_name: String,
    /// Built for a running agent (not `validate`/`test-route`): actions may start their
    /// background work (the forensic log's shipping).
    pub background: bool,
}

impl BuildContext {
    pub fn new(node_name: String) -> anyhow::Result<BuildContext> {
        crate::tls::install_crypto_provider();
        let http = http_client_builder(Duration::from_secs(30)).build()?;
        Ok(BuildContext {
            http,
            node_name,
            background: false,
        })
    }

    /// For the running agent: see [`BuildContext::background`].
    pub fn running(mut self) -> BuildContext {
        self.background = true;
        self
    }

    /// The shared client: connection pooling across actions, TLS verification on.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }
}

/// The client settings every remote action starts from.
pub fn http_client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("hooker/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
}

/// A client for one remote action: its own timeout, TLS verification (on unless `tls_verify` is
/// false), and optionally an extra CA bundle (PEM) to trust, e.g. an internal Jira's.
pub fn remote_client(
    timeout: Duration,
    tls_verify: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = http_client_builder(timeout);
    if !tls_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|err| format!("cannot read CA file {}: {err}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("CA file {} is not PEM: {err}", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|err| format!("cannot build HTTP client: {err}"))
}

/// Builds one action from its block. Unknown types are errors; known but unbuilt ones warn.
pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    if let Some((_, build)) = REGISTRY.iter().find(|(kind, _)| *kind == config.kind) {
        return build(config, cx);
    }
    if let Some(kind) = KNOWN_TYPES.iter().find(|k| **k == config.kind) {
        let warning = Diagnostic::new(
            config.place(),
            format!("action type \"{kind}\" is recognised but not yet supported by this build; deliveries to it fail"),
        )
        .key("type")
        .line(config.item.line_of("type"));
        return Built::new(
            Unsupported {
                name: config.name.clone(),
                kind,
            },
            vec![warning],
        );
    }
    Err(Diagnostic::new(
        config.place(),
        format!(
            "unknown action type \"{}\"{} (known types: {})",
            config.kind,
            crate::config::closest(&config.kind, KNOWN_TYPES.iter().copied())
                .map(|known| format!("; did you mean \"{known}\"?"))
                .unwrap_or_default(),
            KNOWN_TYPES.join(", ")
        ),
    )
    .key("type")
    .line(config.item.line_of("type")))
}

/// Reads an action's own keys, turning serde errors into a located diagnostic.
pub fn settings<T: serde::de::DeserializeOwned>(
    config: &ActionConfig,
) -> Result<(T, Vec<Diagnostic>), Diagnostic> {
    config.settings::<T>()
}

/// Stands in for a recognised type this build cannot run, so nothing is silently dropped.
struct Unsupported {
    name: String,
    kind: &'static str,
}

#[async_trait]
impl Action for Unsupported {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn send(&self, _message: &Message) -> Result<Report, ActionError> {
        Err(ActionError::permanent(format!(
            "action type \"{}\" is not yet supported by this build",
            self.kind
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded_and_marked() {
        assert_eq!(excerpt(b"  short ", 10), "short");
        let long = "é".repeat(100);
        let cut = excerpt(long.as_bytes(), 11);
        assert!(cut.starts_with("ééééé…"), "{cut}");
        assert!(cut.ends_with("(200 bytes in all)"), "{cut}");
    }
}

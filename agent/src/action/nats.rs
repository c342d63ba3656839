//! `type: nats`: publishes each message's body to a NATS subject built from the message, as a
//! core NATS publish (confirmed by a round trip to the server) or a JetStream publish that
//! counts only once the stream acknowledges it (`mode: jetstream`, deduplicated by a stable
//! `Nats-Msg-Id`).
//!
//! The subject is a template of dot-separated tokens; `{route}`, `{severity}`, `{source}`,
//! `{node}` and `{event.input.<path>}` are filled from the message and reduced to one valid
//! token each (`[A-Za-z0-9_-]`, other characters become `_`), so event text can neither add
//! tokens nor wildcards. The connection is made on first use (build does no I/O) and then kept;
//! while it is down, publishes fail as retryable instead of waiting in the client's buffer.
//! Invariant: the password or token never reaches logs, errors or previews.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::outputs;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_SUBJECT: &str = "hooker.{source}.{severity}";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's default `max_payload`.
const DEFAULT_SIZE_LIMIT: u64 = 1024 * 1024;
/// Longest token a placeholder fills.
const MAX_TOKEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Core,
    Jetstream,
}

/// One `type: nats` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NatsConfig {
    /// `nats://host:4222` (`tls://` for TLS), or several, comma-separated.
    url: Secret,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    token: Option<Secret>,
    /// PEM CA to trust for TLS (turns TLS on).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
}

/// One token of the subject template.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(String),
    /// A token with placeholders: literal parts and `{…}` names, in order.
    Filled(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

pub struct Nats {
    name: String,
    urls: Vec<async_nats::ServerAddr>,
    subject: Vec<Token>,
    mode: Mode,
    user: Option<(String, Secret)>,
    token: Option<Secret>,
    ca_file: Option<PathBuf>,
    node: String,
    size_limit: usize,
    timeout: Duration,
    client: tokio::sync::OnceCell<async_nats::Client>,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<NatsConfig>(config)?;
    let urls = settings
        .url
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|err| config.error_at("url", format!("not a NATS server URL: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(config.error_at("url", "`url` is empty"));
    }
    let template = settings
        .subject
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SUBJECT.to_string());
    let subject = parse_subject(&template).map_err(|why| config.error_at("subject", why))?;
    let user = match (settings.user, settings.password, &settings.token) {
        (Some(_), _, Some(_)) => {
            return Err(config.error_at(
                "token",
                "set either `token` or `user` and `password`, not both",
            ));
        }
        (Some(user), password, None) if !user.is_empty() => {
            Some((user, password.unwrap_or_else(|| Secret::new(""))))
        }
        (Some(_), _, None) => return Err(config.error_at("user", "`user` is empty")),
        (None, Some(_), _) => {
            return Err(config.error_at("password", "`password` is set without `user`"));
        }
        (None, None, _) => None,
    };
    let token = settings.token.filter(|t| !t.is_empty());
    let size_limit =
        super::api_client::size_limit(config, settings.size_limit, DEFAULT_SIZE_LIMIT, 1024)?;
    Built::new(
        Nats {
            name: config.name.clone(),
            urls,
            subject,
            mode: settings.mode,
            user,
            token,
            ca_file: settings.ca_file,
            node: cx.node_name.clone(),
            size_limit,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            client: tokio::sync::OnceCell::new(),
        },
        warnings,
    )
}

/// Splits a subject template into tokens and checks its literal parts.
fn parse_subject(template: &str) -> Result<Vec<Token>, String> {
    let template = template.trim();
    let mut tokens = Vec::new();
    for raw in split_outside_braces(template) {
        if raw.is_empty() {
            return Err(format!("subject `{template}` has an empty token"));
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("subject `{template}` has a `{{` without `}}`"))?;
            let field = after[..close].trim();
            let known = matches!(field, "route" | "severity" | "source" | "node")
                || field.starts_with("event.input.");
            if !known {
                return Err(format!(
                    "subject placeholder `{{{field}}}` is not one of {{route}}, {{severity}}, {{source}}, {{node}}, {{event.input.<path>}}"
                ));
            }
            parts.push(Part::Field(field.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        for part in &parts {
            if let Part::Text(text) = part
                && text
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | '}'))
            {
                return Err(format!(
                    "subject `{template}` has a space, control character or wildcard in `{text}`"
                ));
            }
        }
        match parts.as_slice() {
            [Part::Text(text)] => tokens.push(Token::Literal(text.clone())),
            _ => tokens.push(Token::Filled(parts)),
        }
    }
    Ok(tokens)
}

/// Splits on the dots that are not inside `{…}` (placeholders hold dotted paths).
fn split_outside_braces(template: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in template.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&template[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&template[start..]);
    parts
}

/// A value reduced to one subject token: `[A-Za-z0-9_-]`, others `_`, never empty.
fn sanitize_token(value: &str) -> String {
    let token: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOKEN)
        .collect();
    if token.is_empty() { "_".into() } else { token }
}

/// A header value without line breaks or other control characters.
fn header_text(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

// === impl Nats ===

impl Nats {
    fn subject(&self, message: &Message) -> String {
        let tokens: Vec<String> = self
            .subject
            .iter()
            .map(|token| match token {
                Token::Literal(text) => text.clone(),
                Token::Filled(parts) => {
                    let mut out = String::new();
                    for part in parts {
                        match part {
                            Part::Text(text) => out.push_str(text),
                            Part::Field(field) => {
                                out.push_str(&sanitize_token(&self.field(message, field)))
                            }
                        }
                    }
                    out
                }
            })
            .collect();
        tokens.join(".")
    }

    fn field(&self, message: &Message, field: &str) -> String {
        match field {
            "route" => message.route.clone(),
            "severity" => outputs::severity_word(outputs::severity(message)).to_string(),
            "source" => outputs::source(message),
            "node" => self.node.clone(),
            other => message.substitute(other),
        }
    }

    fn headers(&self, message: &Message) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Hooker-Route", header_text(&message.route).as_str());
        headers.insert("Hooker-Event-Id", header_text(&message.event_id).as_str());
        headers.insert(
            "Hooker-Severity",
            outputs::severity_word(outputs::severity(message)),
        );
        headers.insert(
            "Hooker-Source",
            header_text(&outputs::source(message)).as_str(),
        );
        headers.insert("Hooker-Node", header_text(&self.node).as_str());
        headers
    }

    /// A stable id of this delivery, so JetStream drops a retried duplicate.
    fn message_id(&self, message: &Message) -> String {
        let key = format!("{}\n{}\n{}", self.name, message.route, message.event_id);
        super::alert::sha256_hex(key.as_bytes())[..40].to_string()
    }

    fn payload(&self, message: &Message) -> String {
        outputs::truncated_marked(&message.body, self.size_limit.saturating_sub(1024)).0
    }

    async fn client(&self) -> Result<&async_nats::Client, ActionError> {
        self.client
            .get_or_try_init(|| async {
                let mut options = async_nats::ConnectOptions::new()
                    .name(format!("hooker action {}", self.name))
                    .max_reconnects(None)
                    .connection_timeout(self.timeout);
                if let Some((user, password)) = &self.user {
                    options = options.user_and_password(user.clone(), password.expose().into());
                }
                if let Some(token) = &self.token {
                    options = options.token(token.expose().into());
                }
                if let Some(ca) = &self.ca_file {
                    options = options.add_root_certificates(ca.clone()).require_tls(true);
                }
                crate::tls::install_crypto_provider();
                options
                    .connect(self.urls.clone())
                    .await
                    .map_err(|err| ActionError::retryable(format!("cannot connect to NATS: {err}")))
            })
            .await
    }

    async fn publish(&self, message: &Message) -> Result<Report, ActionError> {
        let client = self.client().await?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(ActionError::retryable("not connected to NATS"));
        }
        let subject = self.subject(message);
        let payload = bytes::Bytes::from(self.payload(message));
        match self.mode {
            Mode::Core => {
                client
                    .publish_with_headers(subject.clone(), self.headers(message), payload)
                    .await
                    .map_err(|err| ActionError::retryable(format!("NATS publish failed: {err}")))?;
                // The server answers the flush's PING after it has read the publish.
                client
                    .flush()
                    .await
                    .map_err(|err| ActionError::retryable(format!("NATS flush failed: {err}")))?;
                Ok(Report::detail(format!("published to {subject}")))
            }
            Mode::Jetstream => {
                let mut jetstream = async_nats::jetstream::new(client.clone());
                jetstream.set_timeout(self.timeout);
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(self.headers(message))
                    .message_id(self.message_id(message));
                let ack = jetstream
                    .send_publish(subject.clone(), publish)
                    .await
                    .map_err(|err| {
                        ActionError::retryable(format!("JetStream publish failed: {err}"))
                    })?
                    .await
                    .map_err(|err| {
                        ActionError::retryable(format!("JetStream did not acknowledge: {err}"))
                    })?;
                Ok(Report::detail(format!(
                    "stored in stream {} as {}{}",
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate { " (duplicate)" } else { "" }
                )))
            }
        }
    }
}

#[async_trait]
impl Action for Nats {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        match tokio::time::timeout(self.timeout * 2, self.publish(message)).await {
            Ok(result) => result,
            Err(_) => Err(ActionError::retryable(format!(
                "NATS did not confirm the publish within {:?}",
                self.timeout * 2
            ))),
        }
    }

    fn preview(&self, message: &Message) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers(message)
            .iter()
            .map(|(name, values)| {
                let value = values
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                (name.to_string(), Value::String(value))
            })
            .collect();
        let mut preview = json!({
            "mode": match self.mode { Mode::Core => "core", Mode::Jetstream => "jetstream" },
            "subject": self.subject(message),
            "headers": headers,
            "payload": self.payload(message),
        });
        if self.mode == Mode::Jetstream {
            preview["msg_id"] = self.message_id(message).into();
        }
        preview
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_reject_wildcards() {
        assert_eq!(
            parse_subject("hooker.{source}.x-{severity}"),
            Ok(vec![
                Token::Literal("hooker".into()),
                Token::Filled(vec![Part::Field("source".into())]),
                Token::Filled(vec![
                    Part::Text("x-".into()),
                    Part::Field("severity".into())
                ]),
            ])
        );
        assert_eq!(
            parse_subject("a.{event.input.x.y}"),
            Ok(vec![
                Token::Literal("a".into()),
                Token::Filled(vec![Part::Field("event.input.x.y".into())]),
            ])
        );
        for bad in [
            "a..b",
            "a.*",
            "a.>",
            "a b",
            "a.{nope}",
            "a.{route",
            "a.{route}}",
        ] {
            assert!(parse_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filled_tokens_stay_one_token() {
        assert_eq!(sanitize_token("a.b c>*"), "a_b_c__");
        assert_eq!(sanitize_token(""), "_");
        assert_eq!(sanitize_token("TRC-1022_x"), "TRC-1022_x");
    }
}

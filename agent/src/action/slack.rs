//! `type: slack`: posts Block Kit messages to an incoming webhook.
//!
//! The template's body is a JSON array of blocks (Postee's contract: a trailing comma and missing
//! brackets are tolerated); any other body becomes mrkdwn sections. Slack refuses more than 50
//! blocks per message, so longer content is split over several messages: nothing is dropped.
//! Invariant: the webhook URL is a secret; it never reaches logs, errors or previews.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// Slack's limit of blocks in one message.
const MAX_BLOCKS: usize = 50;
/// Slack's limit for the text of one section block, in characters (we count bytes: stricter).
const SECTION_TEXT_LIMIT: usize = 3000;

/// One `type: slack` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SlackConfig {
    /// Incoming-webhook URL (`https://hooks.slack.com/services/…`). Secret.
    url: Secret,
    /// Limit for one attempt; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server's certificate (default true).
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    /// Extra CA bundle (PEM) to trust, e.g. for a proxy.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    /// Channel, user name and icon overrides (honoured by legacy webhooks only).
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    icon_emoji: Option<String>,
    #[serde(default)]
    icon_url: Option<String>,
}

pub struct Slack {
    name: String,
    url: reqwest::Url,
    extras: serde_json::Map<String, Value>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<SlackConfig>(config)?;
    let url = super::http::parse_url(config, "url", settings.url.expose())?;
    let remote = Remote::build(
        config,
        RemoteKeys {
            timeout: settings.timeout,
            tls_verify: settings.tls_verify,
            ca_file: settings.ca_file.as_deref(),
            headers: &settings.headers,
        },
        &mut warnings,
    )?;
    let mut extras = serde_json::Map::new();
    for (key, value) in [
        ("channel", settings.channel),
        ("username", settings.username),
        ("icon_emoji", settings.icon_emoji),
        ("icon_url", settings.icon_url),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            extras.insert(key.into(), value.into());
        }
    }
    Built::new(
        Slack {
            name: config.name.clone(),
            url,
            extras,
            remote,
        },
        warnings,
    )
}

// === impl Slack ===

impl Slack {
    fn requests(&self, message: &Message) -> Vec<ApiRequest> {
        payloads(message, &self.extras)
            .into_iter()
            .map(|payload| ApiRequest::post(self.url.clone(), payload).with_secret_url())
            .collect()
    }
}

#[async_trait]
impl Action for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        api_client::send_all(&self.remote, &self.requests(message)).await
    }

    fn preview(&self, message: &Message) -> Value {
        api_client::preview_all(&self.requests(message))
    }
}

/// The messages to post: a title section plus up to 49 content blocks each, with `text` (the
/// notification fallback) always set.
fn payloads(message: &Message, extras: &serde_json::Map<String, Value>) -> Vec<Value> {
    let content = blocks(&message.body);
    let chunks: Vec<&[Value]> = if content.is_empty() {
        vec![&[]]
    } else {
        content.chunks(MAX_BLOCKS - 1).collect()
    };
    let parts = chunks.len();
    let title = escape(&message.title);
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let heading = if parts > 1 {
                format!("{title} (part {} of {parts})", index + 1)
            } else {
                title.clone()
            };
            let bold = format!(
                "*{}*",
                api_client::truncate(&heading, SECTION_TEXT_LIMIT - 2)
            );
            let mut all =
                vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": bold}})];
            all.extend(chunk.iter().cloned());
            let mut payload = serde_json::Map::new();
            payload.insert("blocks".into(), Value::Array(all));
            payload.insert("text".into(), heading.into());
            payload.extend(extras.clone());
            Value::Object(payload)
        })
        .collect()
}

/// The body as blocks: a JSON block array (Postee's shape, tolerating a trailing comma and missing
/// brackets), a `{"blocks": [...]}` object, or else plain text as mrkdwn sections.
fn blocks(body: &str) -> Vec<Value> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(trimmed)
        && let Some(Value::Array(items)) = object.remove("blocks")
    {
        return escape_blocks(items);
    }
    let without_trailing = trimmed.strip_suffix(',').unwrap_or(trimmed).trim_end();
    // `[a, b,]`: drop the comma before the closing bracket too.
    let fixed = match without_trailing.strip_suffix(']') {
        Some(inner) if inner.trim_end().ends_with(',') => {
            format!("{}]", inner.trim_end().trim_end_matches(','))
        }
        _ => without_trailing.to_string(),
    };
    let wrapped = if fixed.starts_with('[') {
        fixed
    } else {
        format!("[{fixed}]")
    };
    parse_blocks(&wrapped).unwrap_or_else(|| text_sections(body))
}

fn parse_blocks(text: &str) -> Option<Vec<Value>> {
    let items: Vec<Value> = serde_json::from_str(text).ok()?;
    items
        .iter()
        .all(|item| item.get("type").is_some_and(Value::is_string))
        .then(|| escape_blocks(items))
}

/// Escapes the text of every mrkdwn object, as Slack requires (Postee did this for the whole body).
fn escape_blocks(items: Vec<Value>) -> Vec<Value> {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                let is_mrkdwn = map.get("type").and_then(Value::as_str) == Some("mrkdwn");
                for (key, inner) in map.iter_mut() {
                    match inner {
                        Value::String(text) if is_mrkdwn && key == "text" => *text = escape(text),
                        _ => walk(inner),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut items = items;
    items.iter_mut().for_each(walk);
    items
}

/// Plain text as mrkdwn section blocks of at most 3000 bytes each, split at line ends.
fn text_sections(body: &str) -> Vec<Value> {
    split_text(&escape(body.trim()), SECTION_TEXT_LIMIT)
        .into_iter()
        .map(|chunk| json!({"type": "section", "text": {"type": "mrkdwn", "text": chunk}}))
        .collect()
}

/// Splits at line ends where possible, never inside a character or an `&…;` entity.
pub(super) fn split_text(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > limit {
        let window = api_client::truncate(rest, limit);
        let mut cut = window.rfind('\n').map(|at| at + 1).unwrap_or(window.len());
        if cut == 0 || cut < window.len() / 2 {
            cut = window.len();
            if let Some(amp) = window.rfind('&')
                && !window[amp..].contains(';')
                && amp > 0
            {
                cut = amp;
            }
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head.trim_end_matches('\n').to_string());
        rest = tail;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

/// Escapes `&`, `<` and `>` for mrkdwn, leaving alone what is already an entity and Slack's own
/// `<https://…|label>`, `<@U…>`, `<#C…>` and `<!here>` sequences.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix('&') {
            if is_entity(after) {
                out.push('&');
            } else {
                out.push_str("&amp;");
            }
            rest = after;
        } else if let Some(after) = tail.strip_prefix('<') {
            match slack_sequence(tail) {
                Some(len) => {
                    out.push_str(&tail[..len]);
                    rest = &tail[len..];
                }
                None => {
                    out.push_str("&lt;");
                    rest = after;
                }
            }
        } else {
            out.push_str("&gt;");
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn is_entity(after_ampersand: &str) -> bool {
    ["amp;", "lt;", "gt;", "quot;", "#"]
        .iter()
        .any(|entity| after_ampersand.starts_with(entity))
        && after_ampersand
            .find(';')
            .is_some_and(|semi| semi <= 8 && !after_ampersand[..semi].contains(char::is_whitespace))
}

/// The length of a Slack control sequence starting at `<`, if `text` starts with one.
fn slack_sequence(text: &str) -> Option<usize> {
    let inner = &text[1..];
    let known = ["http://", "https://", "mailto:", "@", "#", "!"];
    if !known.iter().any(|prefix| inner.starts_with(prefix)) {
        return None;
    }
    let end = inner.find(['>', '<', '\n'])?;
    (inner.as_bytes()[end] == b'>').then_some(end + 2)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn message(title: &str, body: &str) -> Message {
        Message {
            route: "r".into(),
            event_id: "e".into(),
            title: title.into(),
            body: body.into(),
            body_pending: false,
            url: None,
            fields: BTreeMap::new(),
            owners: vec![],
            event: Arc::new(json!({}).into()),
        }
    }

    fn section(text: &str) -> Value {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    }

    #[test]
    fn postee_block_bodies_are_accepted_with_trailing_commas_and_without_brackets() {
        let block = r#"{"type":"section","text":{"type":"mrkdwn","text":"a"}}"#;
        for body in [
            format!("{block},"),
            format!("{block},{block},"),
            format!("[{block},{block}]"),
            format!("[{block},{block},]"),
            format!(r#"{{"blocks":[{block}]}}"#),
        ] {
            let parsed = blocks(&body);
            assert!(!parsed.is_empty(), "{body}");
            assert!(parsed.iter().all(|b| *b == section("a")), "{body}");
        }
    }

    #[test]
    fn plain_text_becomes_escaped_sections_of_at_most_3000_bytes() {
        let line = format!("{}\n", "x < y & z ".repeat(20));
        let body = line.repeat(40);
        let parsed = blocks(&body);
        assert!(parsed.len() > 1);
        let texts: Vec<&str> = parsed
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap_or_default())
            .collect();
        assert!(texts.iter().all(|t| t.len() <= SECTION_TEXT_LIMIT));
        assert!(texts[0].starts_with("x &lt; y &amp; z"));
        assert_eq!(texts.concat().matches("&amp;").count(), 20 * 40);
    }

    #[test]
    fn escaping_keeps_entities_and_slack_links() {
        assert_eq!(escape("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(escape("already &amp; &lt;x&gt;"), "already &amp; &lt;x&gt;");
        assert_eq!(
            escape("see <https://x.io/a?b=1|the report> <@U123> <b>"),
            "see <https://x.io/a?b=1|the report> <@U123> &lt;b&gt;"
        );
    }

    #[test]
    fn more_than_fifty_blocks_are_split_into_several_messages() {
        let items: Vec<String> = (0..120)
            .map(|n| section(&n.to_string()).to_string())
            .collect();
        let m = message("Scan & report", &format!("[{}]", items.join(",")));
        let sent = payloads(&m, &serde_json::Map::new());
        assert_eq!(sent.len(), 3);
        let mut seen = Vec::new();
        for (index, payload) in sent.iter().enumerate() {
            let all = payload["blocks"].as_array().cloned().unwrap_or_default();
            assert!(all.len() <= MAX_BLOCKS);
            let heading = format!("Scan &amp; report (part {} of 3)", index + 1);
            assert_eq!(all[0], section(&format!("*{heading}*")));
            assert_eq!(payload["text"], heading.as_str());
            seen.extend(all[1..].iter().map(|b| b["text"]["text"].clone()));
        }
        let expected: Vec<Value> = (0..120).map(|n| Value::from(n.to_string())).collect();
        assert_eq!(seen, expected, "every block sent once, in order");
    }

    #[test]
    fn an_empty_body_still_sends_the_title() {
        let sent = payloads(&message("Only a title", ""), &serde_json::Map::new());
        assert_eq!(
            sent,
            vec![json!({"blocks": [section("*Only a title*")], "text": "Only a title"})]
        );
    }
}

//! `type: teams`: posts a card to Microsoft Teams, either as a legacy Office 365 connector
//! `MessageCard` or as the Adaptive Card that Workflows (Power Automate) webhooks require.
//!
//! The template's body is HTML (Postee's contract). Connector cards carry it as is; Adaptive Cards
//! get it converted to their Markdown subset. A body over `size-limit` is split over several cards,
//! and past [`MAX_MESSAGES`] the last card says how much was left out and links to the rest.
//! Invariant: the webhook URL is a secret; it never reaches logs, errors or previews.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::alert::{self, Severity};
use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// Postee's limit for the card text; Teams refuses payloads over about 28 KB.
const DEFAULT_SIZE_LIMIT: u64 = 18_000;
/// Cards sent for one message at most; the last one notes what was left out.
pub const MAX_MESSAGES: usize = 10;

/// One `type: teams` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct TeamsConfig {
    /// Incoming-webhook or Workflows URL. Secret.
    url: Secret,
    /// `connector`, `adaptive` or `auto` (default: decided from the URL's host).
    #[serde(default)]
    teams_format: TeamsFormat,
    /// Bytes of card text per message before splitting; default 18000.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    /// Limit for one attempt; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server's certificate (default true).
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    /// Extra CA bundle (PEM) to trust.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
}

/// Which card a Teams URL takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TeamsFormat {
    /// Legacy Office 365 connector (`*.webhook.office.com`): `MessageCard`.
    Connector,
    /// Workflows / Power Automate: a message with an Adaptive Card attachment.
    Adaptive,
    #[default]
    Auto,
}

pub struct Teams {
    name: String,
    url: reqwest::Url,
    format: TeamsFormat,
    size_limit: usize,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<TeamsConfig>(config)?;
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
    let size_limit = settings.size_limit.unwrap_or(DEFAULT_SIZE_LIMIT);
    if size_limit < 1000 {
        return Err(Diagnostic::new(
            config.place(),
            format!("size-limit {size_limit} is too small; use at least 1000 bytes"),
        )
        .key("size-limit")
        .line(config.item.line_of("size-limit")));
    }
    let format = match settings.teams_format {
        TeamsFormat::Auto => detect(&url),
        chosen => chosen,
    };
    Built::new(
        Teams {
            name: config.name.clone(),
            url,
            format,
            size_limit: usize::try_from(size_limit).unwrap_or(usize::MAX),
            remote,
        },
        warnings,
    )
}

/// Connector URLs live on `*.webhook.office.com` (formerly `outlook.office.com`); Workflows URLs
/// on `*.logic.azure.com` or `*.powerplatform.com`. Anything else gets the current format.
fn detect(url: &reqwest::Url) -> TeamsFormat {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let connector = host == "webhook.office.com"
        || host.ends_with(".webhook.office.com")
        || host == "outlook.office.com"
        || host == "outlook.office365.com";
    if connector {
        TeamsFormat::Connector
    } else {
        TeamsFormat::Adaptive
    }
}

// === impl Teams ===

impl Teams {
    fn requests(&self, message: &Message) -> Vec<ApiRequest> {
        let severity = alert::severity(message);
        let cards = match self.format {
            TeamsFormat::Connector => {
                let parts = parts(&message.body, self.size_limit, message.url.as_deref(), true);
                let total = parts.len();
                parts
                    .into_iter()
                    .enumerate()
                    .map(|(index, text)| {
                        connector_card(
                            &part_title(&message.title, index, total),
                            &text,
                            message,
                            severity,
                        )
                    })
                    .collect::<Vec<_>>()
            }
            TeamsFormat::Adaptive | TeamsFormat::Auto => {
                let text = html_to_markdown(&message.body);
                let parts = parts(&text, self.size_limit, message.url.as_deref(), false);
                let total = parts.len();
                parts
                    .into_iter()
                    .enumerate()
                    .map(|(index, text)| {
                        adaptive_card(
                            &part_title(&message.title, index, total),
                            &text,
                            message,
                            severity,
                        )
                    })
                    .collect()
            }
        };
        cards
            .into_iter()
            .map(|card| ApiRequest::post(self.url.clone(), card).with_secret_url())
            .collect()
    }
}

#[async_trait]
impl Action for Teams {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "teams"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let requests = self.requests(message);
        let total = requests.len();
        for (index, request) in requests.iter().enumerate() {
            let response = self.remote.send(request).await?;
            let outcome = if self.format == TeamsFormat::Connector && response.status().is_success()
            {
                let text = response.text().await.unwrap_or_default();
                connector_error(&text).map_or(Ok(()), Err)
            } else {
                super::check_response(response).await.map(|_| ())
            };
            outcome.map_err(|mut err| {
                if total > 1 {
                    err.message = format!("card {} of {total}: {}", index + 1, err.message);
                }
                err
            })?;
        }
        let format = match self.format {
            TeamsFormat::Connector => "connector card",
            _ => "adaptive card",
        };
        Ok(Report::detail(if total > 1 {
            format!("{total} {format}s")
        } else {
            format.to_string()
        }))
    }

    fn preview(&self, message: &Message) -> Value {
        api_client::preview_all(&self.requests(message))
    }
}

/// Old connectors answer 200 with a text body: `1` on success, an error sentence otherwise.
fn connector_error(body: &str) -> Option<ActionError> {
    let text = body.trim();
    if text.is_empty() || text.starts_with('1') {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let message = format!("Teams answered: {}", super::excerpt(text.as_bytes(), 512));
    if lower.contains("429") || lower.contains("throttl") || lower.contains("try again") {
        Some(ActionError::retryable(message))
    } else if lower.contains("error") || lower.contains("fail") {
        Some(ActionError::permanent(message))
    } else {
        None
    }
}

fn part_title(title: &str, index: usize, total: usize) -> String {
    if total > 1 {
        format!("{title} (part {} of {total})", index + 1)
    } else {
        title.to_string()
    }
}

/// Splits the text into at most [`MAX_MESSAGES`] parts of at most `limit` bytes; what does not fit
/// is named in a note at the end of the last part, with the message's link when it has one.
fn parts(text: &str, limit: usize, url: Option<&str>, html: bool) -> Vec<String> {
    let mut parts = split(text.trim(), limit);
    if parts.len() > MAX_MESSAGES {
        let left_out: usize = parts[MAX_MESSAGES..].iter().map(String::len).sum();
        parts.truncate(MAX_MESSAGES);
        let note = match (url, html) {
            (Some(url), true) => format!(
                "<p>… {left_out} more bytes not shown. <a href=\"{}\">Open the full report</a></p>",
                url.replace('"', "%22")
            ),
            (Some(url), false) => {
                format!("\n\n… {left_out} more bytes not shown. [Open the full report]({url})")
            }
            (None, _) => format!("\n\n… {left_out} more bytes not shown."),
        };
        if let Some(last) = parts.last_mut() {
            last.push_str(&note);
        }
    }
    parts
}

/// Splits at line ends, else after a tag; never inside a tag, an entity or a character.
fn split(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > limit {
        let window = api_client::truncate(rest, limit);
        let half = window.len() / 2;
        let mut cut = window
            .rfind('\n')
            .map(|at| at + 1)
            .filter(|&at| at > half)
            .or_else(|| window.rfind('>').map(|at| at + 1).filter(|&at| at > half))
            .unwrap_or(window.len());
        let head = &window[..cut];
        if let Some(open) = head.rfind('<')
            && !head[open..].contains('>')
            && open > 0
        {
            cut = open;
        }
        let head = &window[..cut];
        if let Some(amp) = head.rfind('&')
            && !head[amp..].contains(';')
            && head.len() - amp < 10
            && amp > 0
        {
            cut = amp;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head.to_string());
        rest = tail;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

fn theme_color(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Critical) => "B60205",
        Some(Severity::High) => "D93F0B",
        Some(Severity::Medium) => "FBCA04",
        Some(Severity::Low) => "0E8A16",
        Some(Severity::Info) | None => "1D76DB",
    }
}

/// A legacy Office 365 connector card; its `text` takes the template's HTML.
fn connector_card(title: &str, text: &str, message: &Message, severity: Option<Severity>) -> Value {
    let mut card = json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": api_client::truncate(title, 256),
        "themeColor": theme_color(severity),
        "title": title,
        "text": text,
    });
    if let Some(url) = &message.url {
        card["potentialAction"] = json!([{
            "@type": "OpenUri",
            "name": "Open",
            "targets": [{"os": "default", "uri": url}],
        }]);
    }
    card
}

/// A Workflows message: one Adaptive Card (schema 1.4, which Teams renders everywhere).
fn adaptive_card(title: &str, text: &str, message: &Message, severity: Option<Severity>) -> Value {
    let color = match severity {
        Some(Severity::Critical | Severity::High) => "Attention",
        Some(Severity::Medium) => "Warning",
        _ => "Default",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": title,
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    if !text.is_empty() {
        body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
    }
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    });
    if let Some(url) = &message.url {
        content["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

/// HTML as the Markdown subset Adaptive Cards render: headings and `<b>` bold, `<i>` italic,
/// links, list items, table cells joined with `|`, line breaks kept, other tags dropped,
/// entities decoded. Text without tags is returned as is.
fn html_to_markdown(html: &str) -> String {
    let looks_like_html = html
        .match_indices('<')
        .any(|(at, _)| html[at + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/'));
    if !looks_like_html {
        return html.to_string();
    }
    let mut out = String::with_capacity(html.len());
    let mut links: Vec<String> = Vec::new();
    let mut cells_in_row = 0usize;
    let mut preformatted = 0usize;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            push_text(&mut out, rest, preformatted > 0);
            break;
        };
        push_text(&mut out, &rest[..open], preformatted > 0);
        let tail = &rest[open..];
        let Some(close) = tail.find('>') else {
            push_text(&mut out, tail, preformatted > 0);
            break;
        };
        let tag = &tail[1..close];
        rest = &tail[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match (name.as_str(), closing) {
            ("script" | "style", false) => {
                let end = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = match lower.find(&end) {
                    Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                    None => "",
                };
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", false) => {
                new_paragraph(&mut out);
                out.push_str("**");
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", true) => {
                out.push_str("**");
                new_paragraph(&mut out);
            }
            ("b" | "strong", _) => out.push_str("**"),
            ("i" | "em", _) => out.push('_'),
            ("br", _) => out.push('\n'),
            ("p" | "div" | "table" | "ul" | "ol" | "tr" | "thead" | "tbody", _) => {
                if name == "tr" {
                    cells_in_row = 0;
                }
                new_line(&mut out);
            }
            ("pre", false) => {
                preformatted += 1;
                new_line(&mut out);
            }
            ("pre", true) => {
                preformatted = preformatted.saturating_sub(1);
                new_line(&mut out);
            }
            ("li", false) => {
                new_line(&mut out);
                out.push_str("- ");
            }
            ("td" | "th", false) => {
                if cells_in_row > 0 {
                    out.push_str(" | ");
                }
                cells_in_row += 1;
            }
            ("a", false) => {
                links.push(attribute(tag, "href").unwrap_or_default());
                out.push('[');
            }
            ("a", true) => {
                let href = links.pop().unwrap_or_default();
                if href.is_empty() {
                    out.push(']');
                } else {
                    out.push_str(&format!("]({href})"));
                }
            }
            _ => {}
        }
    }
    tidy(&out)
}

fn push_text(out: &mut String, text: &str, preformatted: bool) {
    let decoded = decode_entities(text);
    if preformatted {
        out.push_str(&decoded);
        return;
    }
    let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
    for c in decoded.chars() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(c);
            last_space = false;
        }
    }
}

fn new_line(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn new_paragraph(out: &mut String) {
    new_line(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Trailing spaces trimmed, at most one blank line in a row.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let value = match value.chars().next()? {
        quote @ ('"' | '\'') => value[1..].split(quote).next()?,
        _ => value.split(char::is_whitespace).next()?,
    };
    Some(decode_entities(value))
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let entity = tail
            .find(';')
            .filter(|&semi| semi <= 10)
            .map(|semi| &tail[1..semi]);
        let decoded = entity.and_then(|name| match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            other => other
                .strip_prefix("#x")
                .or_else(|| other.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| other.strip_prefix('#').and_then(|n| n.parse().ok()))
                .and_then(char::from_u32),
        });
        match (decoded, entity) {
            (Some(c), Some(name)) => {
                out.push(c);
                rest = &tail[name.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn format_is_detected_from_the_webhook_host() {
        for (text, expected) in [
            (
                "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y",
                TeamsFormat::Connector,
            ),
            (
                "https://outlook.office.com/webhook/abc/IncomingWebhook/x/y",
                TeamsFormat::Connector,
            ),
            (
                "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
                TeamsFormat::Adaptive,
            ),
            (
                "https://default1234.56.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/x",
                TeamsFormat::Adaptive,
            ),
            ("http://127.0.0.1:8080/hook", TeamsFormat::Adaptive),
        ] {
            assert_eq!(detect(&url(text)), expected, "{text}");
        }
    }

    #[test]
    fn html_becomes_adaptive_card_markdown() {
        let html = "<h2>Tracee &amp; co</h2>\n<p>Pod <b>web-1</b> in <i>prod</i>:</p><table><tr><th>CVE</th><th>Sev</th></tr>\n<tr><td>CVE-1</td><td>HIGH</td></tr></table><ul><li>one</li><li>two &lt;3</li></ul><a href=\"https://x.io/?a=1&amp;b=2\">report</a><br/><pre>{\n  \"a\": 1\n}</pre><script>ignored()</script>end";
        assert_eq!(
            html_to_markdown(html),
            "**Tracee & co**\n\nPod **web-1** in _prod_:\nCVE | Sev\nCVE-1 | HIGH\n- one\n- two <3\n[report](https://x.io/?a=1&b=2)\n{\n  \"a\": 1\n}\nend"
        );
        assert_eq!(html_to_markdown("plain a < b text"), "plain a < b text");
    }

    #[test]
    fn long_html_is_split_outside_tags_and_capped_with_a_link() {
        let row = "<tr><td>CVE-2024-0001</td><td>openssl &amp; friends</td></tr>";
        let html = format!("<table>{}</table>", row.repeat(400));
        let pieces = split(&html, 1000);
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), html, "splitting loses nothing");
        for piece in &pieces {
            assert!(piece.len() <= 1000);
            assert!(
                piece.rfind('<') < piece.rfind('>'),
                "cut inside a tag: {piece}"
            );
        }
        let capped = parts(&html, 1000, Some("https://console/x"), true);
        assert_eq!(capped.len(), MAX_MESSAGES);
        let last = capped.last().cloned().unwrap_or_default();
        assert!(
            last.contains("more bytes not shown. <a href=\"https://console/x\">"),
            "{last}"
        );
    }

    #[test]
    fn cards_carry_title_text_link_and_severity() {
        let message = Message {
            route: "r".into(),
            event_id: "e".into(),
            title: "Alert".into(),
            body: "<p>x</p>".into(),
            url: Some("https://console/x".into()),
            fields: BTreeMap::from([("severity".to_string(), json!("critical"))]),
            owners: vec![],
            event: Arc::new(json!({})),
        };
        let severity = alert::severity(&message);
        let card = connector_card("Alert", "<p>x</p>", &message, severity);
        assert_eq!(card["themeColor"], "B60205");
        assert_eq!(
            card["potentialAction"][0]["targets"][0]["uri"],
            "https://console/x"
        );
        let adaptive = adaptive_card("Alert", "x", &message, severity);
        let content = &adaptive["attachments"][0]["content"];
        assert_eq!(content["body"][0]["color"], "Attention");
        assert_eq!(content["actions"][0]["url"], "https://console/x");
    }

    #[test]
    fn connector_error_bodies_are_failures() {
        assert!(connector_error("1").is_none());
        assert!(connector_error("").is_none());
        let throttled = connector_error(
            "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429",
        );
        assert!(matches!(throttled, Some(e) if e.kind == super::super::ErrorKind::Retryable));
        let bad = connector_error("Summary or Text is required.");
        assert!(bad.is_none());
        let failed = connector_error("Bad payload received by generic incoming webhook: error");
        assert!(matches!(failed, Some(e) if e.kind == super::super::ErrorKind::Permanent));
    }
}

//! `type: teams`: posts a card to Microsoft Teams, either as a legacy Office 365 connector
//! `MessageCard` or as the Adaptive Card that Workflows (Power Automate) webhooks require.
//! `markup.rs` converts HTML for Adaptive Cards and splits long text.
//!
//! The template's body is HTML (Postee's contract). Connector cards carry it as is; Adaptive Cards
//! get it converted to their Markdown subset. A body over `size-limit` is split over several cards,
//! and past [`MAX_MESSAGES`] the last card says how much was left out and links to the rest.
//! Invariant: the webhook URL is a secret; it never reaches logs, errors or previews.

mod markup;

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
                let text = markup::html_to_markdown(&message.body);
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
    let mut parts = markup::split(text.trim(), limit);
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
    fn past_ten_cards_the_last_one_names_what_was_left_out() {
        let row = "<tr><td>CVE-2024-0001</td><td>openssl &amp; friends</td></tr>";
        let html = format!("<table>{}</table>", row.repeat(400));
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
            body_pending: false,
            url: Some("https://console/x".into()),
            fields: BTreeMap::from([("severity".to_string(), json!("critical"))]),
            owners: vec![],
            event: Arc::new(json!({}).into()),
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

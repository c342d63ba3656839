//! `type: pagerduty`: triggers a PagerDuty incident through the Events API v2.
//!
//! Beyond Postee: a stable `dedup_key` per route and finding (so a repeated finding updates one
//! incident instead of opening new ones), a severity taken from the template or the event instead
//! of a fixed "critical", a link to the message's URL, and a configurable API URL.
//! Invariant: the routing key never reaches logs, errors or previews.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::alert::{self, Severity};
use super::api_client::{self, ApiRequest, HeaderValues, Region, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const US_API: &str = "https://events.pagerduty.com";
const EU_API: &str = "https://events.eu.pagerduty.com";
/// PagerDuty refuses events over 512 KB; details past this are truncated.
const DETAILS_LIMIT: usize = 400 * 1024;
/// Limits of the Events API v2 fields.
const SUMMARY_LIMIT: usize = 1024;
const DEDUP_KEY_LIMIT: usize = 255;

/// One `type: pagerduty` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PagerDutyConfig {
    /// Integration (routing) key of the service. Secret.
    #[serde(alias = "routing-key")]
    pagerduty_routing_key: Secret,
    /// Accepted for Postee configs; the Events API does not use it.
    #[serde(default)]
    #[allow(dead_code)]
    pagerduty_auth_token: Option<Secret>,
    /// `us` (default) or `eu`; picks the API host unless `api-url` is set.
    #[serde(default)]
    region: Region,
    /// Events API base URL; `/v2/enqueue` is appended. Overrides `region`.
    #[serde(default)]
    api_url: Option<String>,
    /// `payload.source`; default: the event's host or pod, else the node name.
    #[serde(default)]
    source: Option<String>,
    /// `payload.component`, `payload.group`, `payload.class`.
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    class: Option<String>,
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

pub struct PagerDuty {
    name: String,
    url: reqwest::Url,
    routing_key: Secret,
    source: Option<String>,
    node: String,
    payload_extras: serde_json::Map<String, Value>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<PagerDutyConfig>(config)?;
    if settings.pagerduty_routing_key.is_empty() {
        return Err(
            Diagnostic::new(config.place(), "`pagerduty-routing-key` is empty")
                .key("pagerduty-routing-key")
                .line(config.item.line_of("pagerduty-routing-key")),
        );
    }
    let base = match &settings.api_url {
        Some(url) => super::http::parse_url(config, "api-url", url)?,
        None => super::http::parse_url(
            config,
            "region",
            match settings.region {
                Region::Us => US_API,
                Region::Eu => EU_API,
            },
        )?,
    };
    let url = api_client::endpoint(&base, "v2/enqueue");
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
    let mut payload_extras = serde_json::Map::new();
    for (key, value) in [
        ("component", settings.component),
        ("group", settings.group),
        ("class", settings.class),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            payload_extras.insert(key.into(), value.into());
        }
    }
    Built::new(
        PagerDuty {
            name: config.name.clone(),
            url,
            routing_key: settings.pagerduty_routing_key,
            source: settings.source.filter(|s| !s.is_empty()),
            node: cx.node_name.clone(),
            payload_extras,
            remote,
        },
        warnings,
    )
}

// === impl PagerDuty ===

impl PagerDuty {
    fn request(&self, message: &Message, routing_key: &str) -> ApiRequest {
        let source = message
            .field_str("source")
            .or_else(|| self.source.clone())
            .or_else(|| event_source(&message.event))
            .unwrap_or_else(|| self.node.clone());
        let mut payload = json!({
            "summary": summary(message),
            "source": source,
            "severity": pagerduty_severity(alert::severity(message)),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "custom_details": custom_details(&message.body),
        });
        for (key, value) in &self.payload_extras {
            payload[key] = value.clone();
        }
        for key in ["component", "group", "class"] {
            if let Some(value) = message.field_str(key) {
                payload[key] = value.into();
            }
        }
        let dedup_key = alert::finding_key(message);
        // A template may close what it opened (trivy-operator's `delete` → "resolve").
        let event_action = message
            .body_json()
            .and_then(|body| body.get("event_action")?.as_str().map(str::to_owned))
            .filter(|a| matches!(a.as_str(), "trigger" | "acknowledge" | "resolve"))
            .unwrap_or_else(|| "trigger".to_string());
        let mut body = json!({
            "routing_key": routing_key,
            "event_action": event_action,
            "dedup_key": api_client::truncate(&dedup_key, DEDUP_KEY_LIMIT),
            "client": "Hooker",
            "payload": payload,
        });
        if let Some(url) = &message.url {
            body["links"] = json!([{"href": url, "text": "Details"}]);
        }
        ApiRequest::post(self.url.clone(), body)
    }
}

#[async_trait]
impl Action for PagerDuty {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let request = self.request(message, self.routing_key.expose());
        let dedup_key = request.body["dedup_key"].clone();
        let response = self.remote.send(&request).await?;
        let report = super::check_response(response).await?;
        Ok(Report::detail(format!(
            "{}, dedup_key {}",
            report.detail.unwrap_or_default(),
            dedup_key.as_str().unwrap_or_default()
        )))
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message, "***").preview()
    }
}

/// PagerDuty has four levels; an unknown severity counts as medium ("warning").
fn pagerduty_severity(severity: Option<Severity>) -> &'static str {
    match severity.unwrap_or(Severity::Medium) {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    }
}

fn summary(message: &Message) -> String {
    let title = if message.title.trim().is_empty() {
        format!("Hooker alert from route {}", message.route)
    } else {
        message.title.clone()
    };
    api_client::truncate(&title, SUMMARY_LIMIT).to_string()
}

/// The body as JSON when it parses, else as text; cut and marked past [`DETAILS_LIMIT`].
fn custom_details(body: &str) -> Value {
    if body.len() > DETAILS_LIMIT {
        let kept = api_client::truncate(body, DETAILS_LIMIT);
        return Value::String(format!(
            "{kept}… [truncated by hooker: {} of {} bytes]",
            kept.len(),
            body.len()
        ));
    }
    serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .unwrap_or_else(|| Value::String(body.to_string()))
}

/// Where the event happened, for `payload.source`: a pod, else a host.
fn event_source(event: &Value) -> Option<String> {
    let event = event.get("operatorObject").unwrap_or(event);
    [
        "/kubernetes/podName",
        "/podName",
        "/workload/k8s/pod/name",
        "/hostName",
        "/Context/hostName",
        "/SigMetadata/Hostname",
        "/ArtifactName",
        "/report/artifact/repository",
        "/image",
        "/host_name",
    ]
    .iter()
    .find_map(|path| event.pointer(path).and_then(Value::as_str))
    .filter(|s| !s.is_empty())
    .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_onto_pagerduty_levels() {
        assert_eq!(pagerduty_severity(Some(Severity::Critical)), "critical");
        assert_eq!(pagerduty_severity(Some(Severity::High)), "error");
        assert_eq!(pagerduty_severity(Some(Severity::Medium)), "warning");
        assert_eq!(pagerduty_severity(Some(Severity::Low)), "info");
        assert_eq!(pagerduty_severity(None), "warning");
    }

    #[test]
    fn details_are_json_when_they_parse() {
        assert_eq!(custom_details(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(custom_details("text"), json!("text"));
        let huge = "x".repeat(DETAILS_LIMIT + 10);
        let cut = custom_details(&huge);
        assert!(
            cut.as_str()
                .unwrap_or_default()
                .ends_with("[truncated by hooker: 409600 of 409610 bytes]")
        );
    }
}

//! `type: splunk`: sends each message as one event to a Splunk HTTP Event Collector.
//!
//! Any message goes, not only Aqua scans: the envelope is `time`, `host`, `source`, `sourcetype`,
//! `index` and `event` (the rendered body, as JSON when it is JSON). A body over `size-limit` is
//! truncated and marked, never dropped. Unlike Postee, `tls-verify: true` means "verify".
//! Invariant: the HEC token never reaches logs, errors or previews.

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

/// Rendered bodies larger than this are truncated (Hooker's default; Postee's was 10000).
const DEFAULT_SIZE_LIMIT: u64 = 1_000_000;
const HEC_PATH: &str = "services/collector/event";

/// One `type: splunk` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SplunkConfig {
    /// HEC base URL (`https://splunk:8088`); `/services/collector/event` is appended.
    url: Secret,
    /// HEC token. Secret.
    token: Secret,
    /// Largest rendered body sent whole, in bytes (`10000`, `1MB`); larger ones are truncated.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    /// Envelope fields; `host` defaults to the node name, `source` to `hooker`, `sourcetype` to
    /// `_json`; `index` is left to the token's default when unset.
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    sourcetype: Option<String>,
    #[serde(default)]
    host: Option<String>,
    /// Limit for one attempt; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server's certificate (default true).
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    /// Extra CA bundle (PEM) to trust, e.g. Splunk's own CA.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
}

pub struct Splunk {
    name: String,
    url: reqwest::Url,
    token: Secret,
    size_limit: usize,
    envelope: serde_json::Map<String, Value>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<SplunkConfig>(config)?;
    let base = super::http::parse_url(config, "url", settings.url.expose())?;
    if settings.token.is_empty() {
        return Err(
            Diagnostic::new(config.place(), "`token` (the HEC token) is empty")
                .key("token")
                .line(config.item.line_of("token")),
        );
    }
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
    if !settings.tls_verify {
        warnings.push(
            Diagnostic::new(
                config.place(),
                "note: Postee read `tls-verify: true` as \"skip verification\"; in Hooker `true` verifies and `false` skips",
            )
            .key("tls-verify")
            .line(config.item.line_of("tls-verify")),
        );
    }
    let size_limit = api_client::size_limit(config, settings.size_limit, DEFAULT_SIZE_LIMIT, 1024)?;
    let mut envelope = serde_json::Map::new();
    envelope.insert(
        "host".into(),
        settings.host.unwrap_or_else(|| cx.node_name.clone()).into(),
    );
    envelope.insert(
        "source".into(),
        settings.source.unwrap_or_else(|| "hooker".into()).into(),
    );
    envelope.insert(
        "sourcetype".into(),
        settings.sourcetype.unwrap_or_else(|| "_json".into()).into(),
    );
    if let Some(index) = settings.index.filter(|i| !i.is_empty()) {
        envelope.insert("index".into(), index.into());
    }
    Built::new(
        Splunk {
            name: config.name.clone(),
            url: hec_url(&base),
            token: settings.token,
            size_limit,
            envelope,
            remote,
        },
        warnings,
    )
}

/// The event endpoint under the configured base, unless the URL already names it.
fn hec_url(base: &reqwest::Url) -> reqwest::Url {
    let path = base.path().trim_end_matches('/');
    if path.ends_with("/services/collector/event") {
        base.clone()
    } else if path.ends_with("/services/collector") {
        api_client::join_path(base, "event")
    } else {
        api_client::join_path(base, HEC_PATH)
    }
}

// === impl Splunk ===

impl Splunk {
    /// The request and, when the body was cut, by how much.
    fn request(&self, message: &Message) -> (ApiRequest, Option<usize>) {
        let (event, truncated) = event_value(&message.body, self.size_limit);
        let mut envelope = self.envelope.clone();
        envelope.insert("time".into(), event_time(&message.event));
        envelope.insert("event".into(), event);
        let request = ApiRequest::post(self.url.clone(), Value::Object(envelope)).header(
            "authorization",
            &format!("Splunk {}", self.token.expose()),
            true,
        );
        (request, truncated)
    }
}

#[async_trait]
impl Action for Splunk {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "splunk"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let (request, truncated) = self.request(message);
        let response = self.remote.send(&request).await?;
        let report = super::check_response(response).await?;
        Ok(match truncated {
            Some(total) => Report::detail(format!(
                "{}; body truncated to {} of {total} bytes",
                report.detail.unwrap_or_default(),
                self.size_limit
            )),
            None => report,
        })
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message).0.preview()
    }
}

/// The `event` field: the body as JSON when it parses, else as text; over the limit, the first
/// `limit` bytes as text with a marker saying how much there was.
fn event_value(body: &str, limit: usize) -> (Value, Option<usize>) {
    if body.len() > limit {
        let kept = api_client::truncate(body, limit);
        let marked = format!(
            "{kept}… [truncated by hooker: {} of {} bytes]",
            kept.len(),
            body.len()
        );
        return (Value::String(marked), Some(body.len()));
    }
    let value = serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .unwrap_or_else(|| Value::String(body.to_string()));
    (value, None)
}

/// Epoch seconds (millisecond precision) of the event: Tracee's nanosecond `timestamp`, an
/// RFC 3339 `timestamp`/`time`/`CreatedAt`, else now.
fn event_time(event: &Value) -> Value {
    let millis = ["timestamp", "time", "CreatedAt", "create_time"]
        .iter()
        .filter_map(|key| event.get(*key))
        .find_map(|value| match value {
            Value::Number(n) => n.as_i64().and_then(epoch_millis),
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis()),
            _ => None,
        })
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    json!(millis as f64 / 1000.0)
}

/// Reads an integer epoch in ns, µs, ms or s by its magnitude.
fn epoch_millis(n: i64) -> Option<i64> {
    match n {
        n if n > 100_000_000_000_000_000 => Some(n / 1_000_000),
        n if n > 100_000_000_000_000 => Some(n / 1_000),
        n if n > 100_000_000_000 => Some(n),
        n if n > 0 => Some(n * 1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hec_url_is_appended_once() {
        for (base, expected) in [
            (
                "https://splunk:8088",
                "https://splunk:8088/services/collector/event",
            ),
            (
                "https://splunk:8088/",
                "https://splunk:8088/services/collector/event",
            ),
            (
                "https://splunk:8088/services/collector",
                "https://splunk:8088/services/collector/event",
            ),
            (
                "https://proxy/splunk/services/collector/event",
                "https://proxy/splunk/services/collector/event",
            ),
            (
                "https://proxy/splunk",
                "https://proxy/splunk/services/collector/event",
            ),
        ] {
            let url = reqwest::Url::parse(base).unwrap();
            assert_eq!(hec_url(&url).as_str(), expected, "{base}");
        }
    }

    #[test]
    fn bodies_are_json_when_they_parse_and_truncated_past_the_limit() {
        assert_eq!(event_value(r#"{"a":1}"#, 100), (json!({"a": 1}), None));
        assert_eq!(event_value("plain", 100), (json!("plain"), None));
        assert_eq!(event_value("42", 100), (json!("42"), None));
        let long = "é".repeat(100);
        let (value, truncated) = event_value(&long, 51);
        assert_eq!(truncated, Some(200));
        let text = value.as_str().unwrap_or_default();
        assert!(text.starts_with(&"é".repeat(25)), "{text}");
        assert!(
            text.ends_with("… [truncated by hooker: 50 of 200 bytes]"),
            "{text}"
        );
    }

    #[test]
    fn event_time_reads_tracee_nanoseconds_and_rfc3339() {
        assert_eq!(
            event_time(&json!({"timestamp": 1677676197900822209_i64})),
            json!(1677676197.9)
        );
        assert_eq!(
            event_time(&json!({"timestamp": "2025-11-26T10:00:00.5Z"})),
            json!(1764151200.5)
        );
    }
}

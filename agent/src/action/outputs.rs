//! What the log and alert outputs (`alertmanager`, `syslog`, `loki`, `elasticsearch`, `nats`) read
//! from a message besides its title and body: which tool the event came from, its severity as a
//! word, its time, and the configurable label maps they share. Nothing here does I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::alert::{self, Severity};
use crate::config::{ActionConfig, Diagnostic, Secret};
use crate::message::Message;

/// The tool an event came from: the template's `result_source`, else recognised from the
/// event's shape (`tracee`, `falco`, `trivy`, `trivy-operator`, `aqua`), else `hooker`.
pub fn source(message: &Message) -> String {
    if let Some(source) = message.field_str("source").filter(|s| !s.is_empty()) {
        return source;
    }
    event_source(&message.event).to_string()
}

fn event_source(event: &Value) -> &'static str {
    if let Some(inner) = event.get("operatorObject") {
        return match event_source(inner) {
            "hooker" => "trivy-operator",
            other => other,
        };
    }
    let has = |key: &str| event.get(key).is_some_and(|v| !v.is_null());
    if has("SigMetadata") || has("eventName") || (has("threat") && has("workload")) {
        return "tracee";
    }
    if event.pointer("/metadata/Properties").is_some() && has("eventName") {
        return "tracee";
    }
    if has("rule") && has("priority") && has("output") {
        return "falco";
    }
    if has("ArtifactName") || has("Results") {
        return "trivy";
    }
    if has("report") && has("kind") {
        return "trivy-operator";
    }
    if has("vulnerability_summary") || (has("image") && has("registry")) {
        return "aqua";
    }
    "hooker"
}

/// The severity as a lower-case word (`critical`, `high`, `medium`, `low`, `info`); an event
/// that says none counts as `medium`, as for the other actions.
pub fn severity(message: &Message) -> Severity {
    alert::severity(message).unwrap_or(Severity::Medium)
}

pub fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}

/// When the event happened: Tracee's nanosecond `timestamp`, an RFC 3339 `timestamp`, `time`
/// (Falco) or `CreatedAt`, else now. Stable across retries for events that carry a time.
pub fn event_time(message: &Message) -> DateTime<Utc> {
    ["timestamp", "time", "CreatedAt", "create_time"]
        .iter()
        .filter_map(|key| message.event.get(*key))
        .find_map(|value| match value {
            Value::Number(n) => n.as_i64().and_then(epoch_nanos).and_then(|ns| {
                let time = Utc.timestamp_nanos(ns);
                (time.timestamp() > 0).then_some(time)
            }),
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            _ => None,
        })
        .unwrap_or_else(Utc::now)
}

/// Reads an integer epoch in ns, µs, ms or s by its magnitude, as nanoseconds.
fn epoch_nanos(n: i64) -> Option<i64> {
    match n {
        n if n > 100_000_000_000_000_000 => Some(n),
        n if n > 100_000_000_000_000 => n.checked_mul(1_000),
        n if n > 100_000_000_000 => n.checked_mul(1_000_000),
        n if n > 0 => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

/// The labels every output offers: `source`, `severity`, `node` and `route`.
pub fn standard_labels(message: &Message, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("source".to_string(), source(message)),
        (
            "severity".to_string(),
            severity_word(severity(message)).to_string(),
        ),
        ("node".to_string(), node.to_string()),
        ("route".to_string(), message.route.clone()),
    ])
}

/// Longest label value kept; a value from an event is cut there, on a character boundary.
pub const MAX_LABEL_VALUE: usize = 1024;

/// Configured extra labels: `name: value`, the value a literal or holding `event.input.<path>`
/// placeholders (filled from the message). Names are Prometheus-style.
#[derive(Debug, Clone, Default)]
pub struct ExtraLabels(Vec<(String, String)>);

impl ExtraLabels {
    /// Checks the names under `key`: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
    pub fn build(
        config: &ActionConfig,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<ExtraLabels, Diagnostic> {
        for name in labels.keys() {
            if !is_label_name(name) {
                return Err(Diagnostic::new(
                    config.place(),
                    format!(
                        "label name `{name}` is not valid: use letters, digits and `_`, not starting with a digit or `__`"
                    ),
                )
                .key(key)
                .line(config.item.line_of(key)));
            }
        }
        Ok(ExtraLabels(labels.into_iter().collect()))
    }

    /// Adds (or overrides) the labels into `labels`, values filled from `message`; an empty
    /// value leaves the label out.
    pub fn apply(&self, message: &Message, labels: &mut BTreeMap<String, String>) {
        for (name, template) in &self.0 {
            let value = bounded(&message.substitute(template), MAX_LABEL_VALUE);
            if value.is_empty() {
                labels.remove(name);
            } else {
                labels.insert(name.clone(), value);
            }
        }
    }
}

pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__")
}

/// At most `limit` bytes of `text`, cut on a character boundary.
pub fn bounded(text: &str, limit: usize) -> String {
    super::api_client::truncate(text, limit).to_string()
}

/// `text` cut to `limit` bytes with a marker saying how much there was, or whole.
pub fn truncated_marked(text: &str, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text.to_string(), false);
    }
    let kept = super::api_client::truncate(text, limit);
    (
        format!(
            "{kept}… [truncated by hooker: {} of {} bytes]",
            kept.len(),
            text.len()
        ),
        true,
    )
}

/// The `Authorization` value of the HTTP outputs: `token` (bearer) or `user` and `password`
/// (basic), or none. Both at once, or a password without a user, is a config error.
pub fn http_auth(
    config: &ActionConfig,
    user: Option<&str>,
    password: Option<&Secret>,
    token: Option<&Secret>,
) -> Result<Option<Secret>, Diagnostic> {
    let located = |key: &str, message: &str| config.error_at(key, message);
    match (user, password, token) {
        (Some(_), _, Some(_)) => Err(located(
            "token",
            "set either `token` (bearer) or `user` and `password` (basic), not both",
        )),
        (None, _, Some(token)) if token.is_empty() => Err(located("token", "`token` is empty")),
        (None, _, Some(token)) => Ok(Some(Secret::new(format!("Bearer {}", token.expose())))),
        (Some(""), _, None) => Err(located("user", "`user` is empty")),
        (Some(user), password, None) => {
            use base64::Engine as _;
            let password = password.map(Secret::expose).unwrap_or_default();
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Ok(Some(Secret::new(format!("Basic {encoded}"))))
        }
        (None, Some(_), None) => Err(located("password", "`password` is set without `user`")),
        (None, None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn message(event: Value) -> Message {
        Message {
            route: "r".into(),
            event: Arc::new(event.into()),
            ..Message::default()
        }
    }

    #[test]
    fn source_is_recognised_from_the_event_shape() {
        let check = |event: Value, expected: &str| {
            assert_eq!(source(&message(event.clone())), expected, "{event}");
        };
        check(json!({"eventName": "x", "metadata": {}}), "tracee");
        check(
            json!({"rule": "r", "priority": "Warning", "output": "o"}),
            "falco",
        );
        check(json!({"ArtifactName": "alpine", "Results": []}), "trivy");
        check(
            json!({"kind": "VulnerabilityReport", "report": {}}),
            "trivy-operator",
        );
        check(json!({"image": "i", "registry": "r"}), "aqua");
        check(json!({"anything": 1}), "hooker");
        let mut set = message(json!({"eventName": "x"}));
        set.fields.insert("source".into(), json!("mine"));
        assert_eq!(source(&set), "mine");
    }

    #[test]
    fn event_time_reads_nanoseconds_and_rfc3339() {
        let ns = event_time(&message(json!({"timestamp": 1677676197900822209_i64})));
        assert_eq!(ns.timestamp_nanos_opt(), Some(1677676197900822209));
        let text = event_time(&message(json!({"time": "2025-11-26T10:00:00.5Z"})));
        assert_eq!(text.timestamp_millis(), 1764151200500);
    }

    #[test]
    fn label_names_follow_prometheus() {
        for good in ["a", "_x", "team_1"] {
            assert!(is_label_name(good), "{good}");
        }
        for bad in ["", "1a", "a-b", "a.b", "__reserved", "é"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }
}

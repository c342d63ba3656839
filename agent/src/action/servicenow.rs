//! `type: servicenow`: inserts a record (an incident by default) with the Table API.
//!
//! The record is Postee's: the title as `short_description`, the body as `[code]` work notes, and
//! the template's `result_*` fields as date, category, impact/urgency, summary and assignment.
//! Fields the template leaves empty are left out, so ServiceNow's defaults apply.
//! Invariant: the user's password never reaches logs, errors or previews.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::alert::{self, Severity};
use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// One `type: servicenow` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ServiceNowConfig {
    /// API user (also the record's `caller_id`).
    user: Secret,
    /// The user's password. Secret.
    password: Secret,
    /// Instance name (`dev12345` for `https://dev12345.service-now.com`) or a base URL.
    instance: String,
    /// Table to insert into; default `incident`.
    #[serde(default)]
    board: Option<String>,
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

pub struct ServiceNow {
    name: String,
    url: reqwest::Url,
    user: Secret,
    authorization: Secret,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<ServiceNowConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    if settings.user.is_empty() {
        return Err(located("user", "`user` is empty".into()));
    }
    let instance = settings.instance.trim();
    let base = if instance.contains("://") {
        super::http::parse_url(config, "instance", instance)?
    } else if !instance.is_empty()
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        super::http::parse_url(
            config,
            "instance",
            &format!("https://{instance}.service-now.com"),
        )?
    } else {
        return Err(located(
            "instance",
            format!("`{instance}` is neither an instance name (dev12345) nor a URL"),
        ));
    };
    let board = settings
        .board
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "incident".into());
    if !board.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(located("board", format!("`{board}` is not a table name")));
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
    let credentials = format!("{}:{}", settings.user.expose(), settings.password.expose());
    let authorization = Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ));
    Built::new(
        ServiceNow {
            name: config.name.clone(),
            url: api_client::join_path(&base, &format!("api/now/table/{board}")),
            user: settings.user,
            authorization,
            remote,
        },
        warnings,
    )
}

// === impl ServiceNow ===

impl ServiceNow {
    fn request(&self, message: &Message) -> ApiRequest {
        ApiRequest::post(self.url.clone(), record(message, self.user.expose()))
            .header("authorization", self.authorization.expose(), true)
            .header("accept", "application/json", false)
    }
}

#[async_trait]
impl Action for ServiceNow {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "servicenow"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let response = self.remote.send(&self.request(message)).await?;
        let status = response.status();
        if !status.is_success() {
            return super::check_response(response).await;
        }
        // The reply is the record; its number (INC0010001) is what people search for.
        let reply: Value = response.json().await.unwrap_or_default();
        let number = reply["result"]["number"].as_str().unwrap_or_default();
        Ok(Report::detail(format!("HTTP {} {number}", status.as_u16())))
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message).preview()
    }
}

/// The record Postee sent, with empty fields left out. `impact` and `urgency` are the template's
/// number (1 high … 3 low) when it gives one, else they follow the severity.
fn record(message: &Message, caller: &str) -> Value {
    let text = |key: &str| message.field_str(key).filter(|v| !v.trim().is_empty());
    let level = impact(message);
    let mut record = json!({
        "short_description": message.title,
        "work_notes": format!("[code]{}[/code]", message.body),
        "caller_id": caller,
        "impact": level,
        "urgency": level,
    });
    if let Some(opened) = message.fields.get("date").and_then(opened_at) {
        record["opened_at"] = opened.into();
    }
    for (field, key) in [
        ("category", "category"),
        ("subcategory", "subcategory"),
        ("description", "summary"),
        ("assigned_to", "assigned_to"),
        ("assignment_group", "assigned_group"),
    ] {
        if let Some(value) = text(key) {
            record[field] = value.into();
        }
    }
    record
}

fn impact(message: &Message) -> u8 {
    let given = match message.fields.get("severity") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let Some(number) = given {
        return number.round().clamp(1.0, 3.0) as u8;
    }
    match alert::severity(message) {
        Some(Severity::Critical | Severity::High) => 1,
        Some(Severity::Medium) => 2,
        Some(Severity::Low | Severity::Info) | None => 3,
    }
}

/// `result_date` (Unix seconds, or RFC 3339) as ServiceNow's UTC `YYYY-MM-DD HH:MM:SS`.
fn opened_at(value: &Value) -> Option<String> {
    let seconds = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok().or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| t.timestamp())
        }),
        _ => None,
    }?;
    // Aqua and Tracee also give milliseconds or nanoseconds.
    let seconds = match seconds {
        s if s > 100_000_000_000_000_000 => s / 1_000_000_000,
        s if s > 100_000_000_000_000 => s / 1_000_000,
        s if s > 100_000_000_000 => s / 1_000,
        s => s,
    };
    chrono::DateTime::from_timestamp(seconds, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn message(fields: Value) -> Message {
        Message {
            route: "r".into(),
            event_id: "e".into(),
            title: "Incident".into(),
            body: "<p>x</p>".into(),
            body_pending: false,
            url: None,
            fields: serde_json::from_value(fields).unwrap_or_default(),
            owners: vec![],
            event: Arc::new(json!({"metadata": {"Properties": {"Severity": 4}}}).into()),
        }
    }

    #[test]
    fn record_maps_result_fields_like_postee() {
        let m = message(json!({
            "date": 1_600_000_000,
            "severity": 2,
            "category": "Security incident",
            "summary": "Details",
            "assigned_to": "alice",
            "assigned_group": "secops",
        }));
        assert_eq!(
            record(&m, "admin"),
            json!({
                "short_description": "Incident",
                "work_notes": "[code]<p>x</p>[/code]",
                "caller_id": "admin",
                "impact": 2,
                "urgency": 2,
                "opened_at": "2020-09-13 12:26:40",
                "category": "Security incident",
                "description": "Details",
                "assigned_to": "alice",
                "assignment_group": "secops",
            })
        );
    }

    #[test]
    fn impact_follows_the_severity_when_the_template_gives_no_number() {
        assert_eq!(impact(&message(json!({}))), 1, "Tracee severity 4");
        assert_eq!(impact(&message(json!({"severity": "medium"}))), 2);
        assert_eq!(impact(&message(json!({"severity": 7}))), 3);
        assert_eq!(
            opened_at(&json!("2020-09-13T12:26:40Z")),
            Some("2020-09-13 12:26:40".into())
        );
        assert_eq!(
            opened_at(&json!(1_600_000_000_000_i64)),
            Some("2020-09-13 12:26:40".into())
        );
    }
}

//! `type: opsgenie`: creates an OpsGenie alert (`POST /v2/alerts`) in the US or EU region.
//!
//! Postee's template contract holds: when the body is a JSON object, its `description`, `alias`,
//! `entity`, `priority`, `tags` (and `details`) override the config. Beyond Postee: the priority
//! follows the finding's severity unless set, and the alias defaults to a stable per-finding key so
//! OpsGenie folds repeats into one open alert.
//! Invariant: the API key never reaches logs, errors or previews.

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

const US_API: &str = "https://api.opsgenie.com";
const EU_API: &str = "https://api.eu.opsgenie.com";
/// Field limits of the Alert API, in characters.
const MESSAGE_LIMIT: usize = 130;
const DESCRIPTION_LIMIT: usize = 15_000;
const ALIAS_LIMIT: usize = 512;
const TAG_LIMIT: usize = 50;
const MAX_TAGS: usize = 20;
const PRIORITIES: &[&str] = &["P1", "P2", "P3", "P4", "P5"];
/// The keys of a template body written for OpsGenie (Postee's contract, plus `details`).
const OVERRIDES: &[&str] = &[
    "description",
    "alias",
    "entity",
    "priority",
    "tags",
    "details",
];

/// One `type: opsgenie` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct OpsGenieConfig {
    /// API integration key. Secret.
    token: Secret,
    /// `us` (default) or `eu`; picks the API host unless `api-url` is set.
    #[serde(default)]
    region: Region,
    /// API base URL (`https://api.opsgenie.com`); `/v2/alerts` is appended. Overrides `region`.
    #[serde(default)]
    api_url: Option<String>,
    /// Display name of the request's owner (`user`).
    #[serde(default)]
    user: Option<String>,
    /// Postee's list of user responders (user names).
    #[serde(default, deserialize_with = "units::de_string_list")]
    assignee: Vec<String>,
    /// Responders: `user:NAME`, `team:NAME`, `escalation:NAME`, `schedule:NAME` (bare = user).
    #[serde(default, deserialize_with = "units::de_string_list")]
    responders: Vec<String>,
    /// Postee's list of users the alert is visible to.
    #[serde(default, deserialize_with = "units::de_string_list")]
    recipients: Vec<String>,
    /// Who sees the alert: `user:NAME` or `team:NAME` (bare = user).
    #[serde(default, deserialize_with = "units::de_string_list")]
    visible_to: Vec<String>,
    /// `P1`…`P5`; default: from the finding's severity (critical = P1 … info = P5).
    #[serde(default)]
    priority: Option<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    tags: Vec<String>,
    /// Default alias; else a stable key per route and finding.
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    entity: Option<String>,
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

pub struct OpsGenie {
    name: String,
    url: reqwest::Url,
    token: Secret,
    user: Option<String>,
    responders: Vec<Value>,
    visible_to: Vec<Value>,
    priority: Option<String>,
    tags: Vec<String>,
    alias: Option<String>,
    entity: Option<String>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<OpsGenieConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    if settings.token.is_empty() {
        return Err(located("token", "`token` (the API key) is empty".into()));
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
    let priority = match settings.priority.filter(|p| !p.trim().is_empty()) {
        Some(text) => Some(priority(&text).ok_or_else(|| {
            located(
                "priority",
                format!("`{text}` is not an OpsGenie priority (P1 to P5)"),
            )
        })?),
        None => None,
    };
    let mut responders = Vec::new();
    for (key, list) in [
        ("assignee", &settings.assignee),
        ("responders", &settings.responders),
    ] {
        for text in list {
            responders.push(responder(text).map_err(|why| located(key, why))?);
        }
    }
    let mut visible_to = Vec::new();
    for (key, list) in [
        ("recipients", &settings.recipients),
        ("visible-to", &settings.visible_to),
    ] {
        for text in list {
            let entry = responder(text).map_err(|why| located(key, why))?;
            if !matches!(entry["type"].as_str(), Some("user" | "team")) {
                return Err(located(
                    key,
                    format!("`{text}`: an alert is visible to users and teams only"),
                ));
            }
            visible_to.push(entry);
        }
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
    Built::new(
        OpsGenie {
            name: config.name.clone(),
            url: api_client::join_path(&base, "v2/alerts"),
            token: settings.token,
            user: settings.user.filter(|u| !u.is_empty()),
            responders,
            visible_to,
            priority,
            tags: settings.tags,
            alias: settings.alias.filter(|a| !a.is_empty()),
            entity: settings.entity.filter(|e| !e.is_empty()),
            remote,
        },
        warnings,
    )
}

// === impl OpsGenie ===

impl OpsGenie {
    fn request(&self, message: &Message) -> ApiRequest {
        // Only an object written for OpsGenie overrides; any other JSON is the description.
        let overrides = match message.body_json() {
            Some(Value::Object(map)) if OVERRIDES.iter().any(|key| map.contains_key(*key)) => {
                Some(map)
            }
            _ => None,
        };
        let from_body = |key: &str| {
            overrides
                .as_ref()
                .and_then(|o| o.get(key))
                .filter(|v| !v.is_null())
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
        };
        let description = match &overrides {
            Some(_) => from_body("description").unwrap_or_default(),
            None => message.body.clone(),
        };
        let alias = from_body("alias")
            .or_else(|| self.alias.clone())
            .unwrap_or_else(|| alert::finding_key(message));
        let priority = from_body("priority")
            .and_then(|p| priority(&p))
            .or_else(|| self.priority.clone())
            .unwrap_or_else(|| severity_priority(alert::severity(message)).to_string());
        let mut tags = self.tags.clone();
        if let Some(value) = overrides.as_ref().and_then(|o| o.get("tags")) {
            match value {
                Value::String(text) => tags.extend(text.split(',').map(|t| t.trim().to_string())),
                Value::Array(items) => tags.extend(items.iter().map(|t| match t {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })),
                _ => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        let tags: Vec<String> = tags
            .into_iter()
            .map(|t| chars(&t, TAG_LIMIT))
            .filter(|t| !t.is_empty() && seen.insert(t.clone()))
            .take(MAX_TAGS)
            .collect();
        let title = if message.title.trim().is_empty() {
            format!("Hooker alert from route {}", message.route)
        } else {
            message.title.clone()
        };
        let mut body = json!({
            "message": chars(&title, MESSAGE_LIMIT),
            "alias": chars(&alias, ALIAS_LIMIT),
            "description": chars(&description, DESCRIPTION_LIMIT),
            "priority": priority,
        });
        if !self.responders.is_empty() {
            body["responders"] = Value::Array(self.responders.clone());
        }
        if !self.visible_to.is_empty() {
            body["visibleTo"] = Value::Array(self.visible_to.clone());
        }
        if !tags.is_empty() {
            body["tags"] = json!(tags);
        }
        if let Some(entity) = from_body("entity").or_else(|| self.entity.clone()) {
            body["entity"] = chars(&entity, ALIAS_LIMIT).into();
        }
        if let Some(user) = &self.user {
            body["user"] = chars(user, 100).into();
        }
        if let Some(Value::Object(details)) = overrides.as_ref().and_then(|o| o.get("details")) {
            body["details"] = Value::Object(details.clone());
        }
        ApiRequest::post(self.url.clone(), body).header(
            "authorization",
            &format!("GenieKey {}", self.token.expose()),
            true,
        )
    }
}

#[async_trait]
impl Action for OpsGenie {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "opsgenie"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let response = self.remote.send(&self.request(message)).await?;
        super::check_response(response).await
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message).preview()
    }
}

/// `p2` → `P2`; anything but P1…P5 is refused.
fn priority(text: &str) -> Option<String> {
    let upper = text.trim().to_ascii_uppercase();
    PRIORITIES.contains(&upper.as_str()).then_some(upper)
}

/// Critical = P1 … info = P5; an unknown severity counts as medium (P3, Postee's default).
fn severity_priority(severity: Option<Severity>) -> &'static str {
    match severity.unwrap_or(Severity::Medium) {
        Severity::Critical => "P1",
        Severity::High => "P2",
        Severity::Medium => "P3",
        Severity::Low => "P4",
        Severity::Info => "P5",
    }
}

/// `team:SecOps` → `{"type":"team","name":"SecOps"}`; a bare name is a user.
fn responder(text: &str) -> Result<Value, String> {
    let text = text.trim();
    let (kind, name) = match text.split_once(':') {
        Some((kind, name)) if ["user", "team", "escalation", "schedule"].contains(&kind) => {
            (kind, name.trim())
        }
        _ => ("user", text),
    };
    if name.is_empty() {
        return Err(format!("`{text}` names no one"));
    }
    Ok(match kind {
        "user" => json!({"type": "user", "username": name}),
        other => json!({"type": other, "name": name}),
    })
}

/// At most `limit` characters (OpsGenie counts characters, not bytes).
fn chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responders_and_priorities_parse() {
        assert_eq!(
            responder("team:SecOps"),
            Ok(json!({"type": "team", "name": "SecOps"}))
        );
        assert_eq!(
            responder("alice@example.com"),
            Ok(json!({"type": "user", "username": "alice@example.com"}))
        );
        assert_eq!(
            responder("user:bob"),
            Ok(json!({"type": "user", "username": "bob"}))
        );
        assert!(responder("team:").is_err());
        assert_eq!(priority(" p2"), Some("P2".into()));
        assert_eq!(priority("P6"), None);
        assert_eq!(severity_priority(Some(Severity::Critical)), "P1");
        assert_eq!(severity_priority(None), "P3");
        assert_eq!(chars("ééé", 2), "éé");
    }
}

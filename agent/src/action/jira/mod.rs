//! `type: jira`: opens a Jira issue per finding (Cloud or Server/DC), or comments on the open
//! issue that already tracks the same finding.
//!
//! Each finding gets a label `hooker-<hash>` (route + identity, see [`fields::finding_label`]);
//! before creating, a JQL search looks for an unresolved issue with that label. Issue type,
//! priority, sprint and custom-field keys come from createmeta, cached for [`META_TTL`].

mod api;
mod config;
mod fields;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use self::api::{Auth, CreateMeta, JiraApi};
use self::fields::FieldMeta;
use super::{Action, ActionError, Report};
use crate::message::Message;

pub use self::config::build;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long createmeta, the sprint and assignee look-ups are reused.
const META_TTL: Duration = Duration::from_secs(600);
/// Postee's placeholder for the event's application-scope owners.
const OWNER_PLACEHOLDER: &str = "<%application_scope_owner%>";

pub struct Jira {
    name: String,
    api: JiraApi,
    project: String,
    issue_type: Option<String>,
    priority: Option<String>,
    assignee: Option<String>,
    labels: Vec<String>,
    fix_versions: Vec<String>,
    affects_versions: Vec<String>,
    board: Option<String>,
    sprint: Option<String>,
    summary: Option<String>,
    unknowns: BTreeMap<String, serde_json::Value>,
    dedup: bool,
    dedup_by: Vec<String>,
    cache: tokio::sync::Mutex<Cache>,
}

/// Look-ups reused between deliveries, each with the time it was made.
#[derive(Default)]
struct Cache {
    meta: Option<(tokio::time::Instant, std::sync::Arc<CreateMeta>)>,
    sprint: Option<(tokio::time::Instant, Option<u64>)>,
    users: HashMap<String, (tokio::time::Instant, Option<serde_json::Value>)>,
}

impl Jira {
    /// The finding label for `message`, when de-duplication is on.
    fn finding_label(&self, message: &Message) -> Option<String> {
        if !self.dedup {
            return None;
        }
        let from_paths: Vec<String> = self
            .dedup_by
            .iter()
            .filter_map(|path| crate::message::lookup_path(&message.event, path))
            .map(fields::text_of)
            .filter(|v| !v.is_empty())
            .collect();
        let identity = if !from_paths.is_empty() {
            from_paths.join("\u{1f}")
        } else if let Some(key) = message.field_str("dedup_key").filter(|k| !k.is_empty()) {
            key
        } else {
            message.title.clone()
        };
        Some(fields::finding_label(&message.route, &identity))
    }

    fn summary(&self, message: &Message) -> String {
        match &self.summary {
            Some(template) => fields::summary(&message.substitute(template), &message.route),
            None => fields::summary(&message.title, &message.route),
        }
    }

    /// The assignee name to look up: the configured one, with Postee's owner placeholder
    /// replaced by the event's first application-scope owner.
    fn assignee_name(&self, message: &Message) -> Option<String> {
        let assignee = self.assignee.as_deref()?;
        if assignee == OWNER_PLACEHOLDER {
            return message.owners.first().cloned();
        }
        Some(assignee.to_string())
    }

    async fn meta(&self) -> Result<std::sync::Arc<CreateMeta>, ActionError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, meta)) = &cache.meta
            && at.elapsed() < META_TTL
        {
            return Ok(meta.clone());
        }
        let meta = std::sync::Arc::new(
            self.api
                .create_meta(&self.project, self.issue_type.as_deref())
                .await?,
        );
        cache.meta = Some((tokio::time::Instant::now(), meta.clone()));
        Ok(meta)
    }

    async fn sprint_id(&self) -> Result<Option<u64>, ActionError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, id)) = cache.sprint
            && at.elapsed() < META_TTL
        {
            return Ok(id);
        }
        let id = self
            .api
            .sprint_id(&self.project, self.board.as_deref(), self.sprint.as_deref())
            .await?;
        cache.sprint = Some((tokio::time::Instant::now(), id));
        Ok(id)
    }

    async fn user(&self, who: &str) -> Result<Option<serde_json::Value>, ActionError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, value)) = cache.users.get(who)
            && at.elapsed() < META_TTL
        {
            return Ok(value.clone());
        }
        let value = self.api.user(who).await?;
        cache.users.retain(|_, (at, _)| at.elapsed() < META_TTL);
        cache.users.insert(
            who.to_string(),
            (tokio::time::Instant::now(), value.clone()),
        );
        Ok(value)
    }

    /// The `fields` of the create request. Problems that should not cost the ticket (an unknown
    /// priority, assignee or custom field) are logged and the field left out.
    async fn issue_fields(
        &self,
        message: &Message,
        meta: &CreateMeta,
        label: Option<&str>,
    ) -> Result<serde_json::Value, ActionError> {
        let mut out = serde_json::Map::new();
        out.insert("project".into(), json!({ "key": self.project }));
        out.insert("issuetype".into(), json!({ "id": meta.issue_type.id }));
        out.insert("summary".into(), self.summary(message).into());
        out.insert(
            "description".into(),
            fields::description(&message.body).into(),
        );
        if let Some(priority) = self.priority(meta) {
            out.insert("priority".into(), priority);
        }
        if let Some(who) = self.assignee_name(message) {
            match self.optional(self.user(&who).await)? {
                Some(Some(user)) => {
                    out.insert("assignee".into(), user);
                }
                Some(None) => self.warn("assignee", &format!("no Jira user matches `{who}`")),
                None => {}
            }
        }
        let mut labels: Vec<String> = self.labels.iter().map(|l| l.replace(' ', "_")).collect();
        labels.extend(label.map(str::to_string));
        if !labels.is_empty() {
            out.insert("labels".into(), json!(labels));
        }
        let names = |list: &[String]| {
            json!(
                list.iter()
                    .map(|v| json!({ "name": v }))
                    .collect::<Vec<_>>()
            )
        };
        if !self.fix_versions.is_empty() {
            out.insert("fixVersions".into(), names(&self.fix_versions));
        }
        if !self.affects_versions.is_empty() {
            out.insert("versions".into(), names(&self.affects_versions));
        }
        if self.board.is_some() || self.sprint.is_some() {
            self.add_sprint(meta, &mut out).await?;
        }
        for (name, raw) in &self.unknowns {
            let (base, suffix) = fields::split_suffix(name);
            let Some(field) = fields::find_field(&meta.fields, base) else {
                self.warn(
                    "unknowns",
                    &format!("field `{base}` is not on the create screen"),
                );
                continue;
            };
            let raw = match raw {
                serde_json::Value::String(s) => message.substitute(s).into(),
                other => other.clone(),
            };
            match fields::field_value(field, suffix, &raw, self.api.cloud) {
                Ok(value) => {
                    out.insert(field.key.clone(), value);
                }
                Err(why) => self.warn("unknowns", &format!("field `{base}`: {why}")),
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    /// The configured priority if the project allows it; without one, `High` when allowed
    /// (Postee's default), else Jira's own default.
    fn priority(&self, meta: &CreateMeta) -> Option<serde_json::Value> {
        let listed = meta
            .fields
            .iter()
            .find(|f| f.key == "priority" && !f.allowed.is_empty());
        let id_of = |value: &serde_json::Value| value.get("id").map(|id| json!({ "id": id }));
        match (listed, self.priority.as_deref()) {
            (None, wanted) => wanted.map(|wanted| json!({ "name": wanted })),
            (Some(field), Some(wanted)) => {
                let found = fields::allowed_named(field, wanted).and_then(id_of);
                if found.is_none() {
                    self.warn(
                        "priority",
                        &format!("priority `{wanted}` is not allowed here"),
                    );
                }
                found
            }
            (Some(field), None) => fields::allowed_named(field, "High").and_then(id_of),
        }
    }

    async fn add_sprint(
        &self,
        meta: &CreateMeta,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ActionError> {
        let Some(field) = sprint_field(&meta.fields) else {
            self.warn("sprint", "the create screen has no Sprint field");
            return Ok(());
        };
        match self.optional(self.sprint_id().await)? {
            Some(Some(id)) => {
                out.insert(field.key.clone(), id.into());
            }
            Some(None) => self.warn("sprint", "no matching board or sprint found"),
            None => {}
        }
        Ok(())
    }

    fn warn(&self, key: &str, problem: &str) {
        tracing::warn!(action = %self.name, key, problem, "Jira field left out.");
    }

    /// A look-up that should not cost the ticket: a permanent failure (no permission to browse
    /// users, no agile API) is logged and gives `None`; anything that may pass stays an error.
    fn optional<T>(&self, result: Result<T, ActionError>) -> Result<Option<T>, ActionError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.kind == super::ErrorKind::Permanent => {
                tracing::warn!(action = %self.name, error = %err, "Jira look-up failed; the field is left out.");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

fn sprint_field(fields: &[FieldMeta]) -> Option<&FieldMeta> {
    fields
        .iter()
        .find(|f| f.schema.custom.as_deref() == Some(fields::SPRINT_FIELD_TYPE))
}

#[async_trait]
impl Action for Jira {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "jira"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let label = self.finding_label(message);
        if let Some(label) = &label
            && let Some(key) = self.api.find_open(&self.project, label).await?
        {
            self.api
                .comment(&key, &fields::description(&message.body))
                .await?;
            return Ok(Report::detail(format!("commented on {key} ({label})")));
        }
        let meta = self.meta().await?;
        let fields = self.issue_fields(message, &meta, label.as_deref()).await?;
        let key = self.api.create(fields).await?;
        Ok(Report::detail(format!("created {key}")))
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let label = self.finding_label(message);
        let mut fields = serde_json::Map::new();
        fields.insert("project".into(), json!({ "key": self.project }));
        fields.insert(
            "issuetype".into(),
            json!({ "name": self.issue_type.as_deref().unwrap_or("Task") }),
        );
        fields.insert("summary".into(), self.summary(message).into());
        fields.insert(
            "description".into(),
            fields::description(&message.body).into(),
        );
        if let Some(priority) = &self.priority {
            fields.insert("priority".into(), json!({ "name": priority }));
        }
        if let Some(who) = self.assignee_name(message) {
            fields.insert("assignee".into(), json!({ "lookup": who }));
        }
        let mut labels = self.labels.clone();
        labels.extend(label.clone());
        fields.insert("labels".into(), json!(labels));
        if !self.unknowns.is_empty() {
            fields.insert("unknowns".into(), json!(self.unknowns));
        }
        let auth = match &self.api.auth {
            Auth::Basic { .. } => "Basic ***",
            Auth::Bearer(_) => "Bearer ***",
        };
        json!({
            "method": "POST",
            "url": format!("{}/rest/api/2/issue", self.api.base),
            "authorization": auth,
            "headers": self.api.remote.preview_headers(),
            "body": { "fields": fields },
            "dedup": label.map(|l| json!({
                "label": l,
                "search": api::search_jql(&self.project, &l),
                "if_found": "POST /rest/api/2/issue/{key}/comment with the description",
            })),
            "resolved_at_send": "issue type id, priority id, assignee, sprint and custom-field keys come from createmeta",
        })
    }
}

//! `type: jira`: opens a Jira issue per finding (Cloud or Server/DC), or comments on the open
//! issue that already tracks the same finding.
//!
//! Each finding gets a label `hooker-<hash>` (route + identity, see [`fields::finding_label`]);
//! before creating, a JQL search looks for an unresolved issue with that label. Issue type,
//! priority, sprint and custom-field keys come from createmeta, cached for [`META_TTL`].

mod api;
mod fields;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use self::api::{Auth, CreateMeta, JiraApi};
use self::fields::FieldMeta;
use super::remote_keys::{self, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long createmeta, the sprint and assignee look-ups are reused.
const META_TTL: Duration = Duration::from_secs(600);
/// Postee's placeholder for the event's application-scope owners.
const OWNER_PLACEHOLDER: &str = "<%application_scope_owner%>";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct JiraConfig {
    /// Base URL (`https://acme.atlassian.net`, `https://jira.corp/jira`).
    url: String,
    /// Email (Cloud) or user name (Server/DC).
    #[serde(default)]
    user: Option<Secret>,
    /// Password (Server/DC) or API token (Cloud). Default: `$JIRA_PASSWORD`, as in Postee.
    #[serde(default)]
    password: Option<Secret>,
    /// Personal access token (Server/DC, sent as Bearer) or API token (Cloud, with `user`).
    #[serde(default)]
    token: Option<Secret>,
    /// `basic` or `bearer`; by default bearer when `token` is set on Server/DC, else basic.
    #[serde(default)]
    auth: Option<String>,
    /// `cloud` or `server`; by default cloud when the host ends in `atlassian.net`.
    #[serde(default)]
    deployment: Option<String>,
    project_key: String,
    #[serde(default)]
    issuetype: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    assignee: Vec<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    labels: Vec<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    fix_versions: Vec<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    affects_versions: Vec<String>,
    #[serde(default)]
    board: Option<String>,
    #[serde(default)]
    sprint: Option<String>,
    /// Overrides the template's title as the summary (`event.input.<path>` placeholders work).
    #[serde(default)]
    summary: Option<String>,
    /// Custom fields by name (or key), with Postee's type suffixes.
    #[serde(default)]
    unknowns: BTreeMap<String, serde_json::Value>,
    /// Comment on the open ticket of the same finding instead of opening another (default true).
    #[serde(default = "yes", deserialize_with = "units::de_lenient_bool")]
    dedup: bool,
    /// Event paths whose values identify a finding; default: the template's `result_dedup_key`,
    /// else the title.
    #[serde(default, deserialize_with = "units::de_string_list")]
    dedup_by: Vec<String>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    #[serde(
        default = "remote_keys::tls_verify_default",
        deserialize_with = "units::de_lenient_bool"
    )]
    tls_verify: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

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

fn yes() -> bool {
    true
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<JiraConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let url = super::http::parse_url(config, "url", &settings.url)?;
    let cloud = match settings.deployment.as_deref().map(str::to_ascii_lowercase) {
        None => url.host_str().is_some_and(|h| h.ends_with("atlassian.net")),
        Some(d) if d == "cloud" => true,
        Some(d) if d == "server" || d == "datacenter" || d == "data-center" => false,
        Some(other) => {
            return Err(located(
                "deployment",
                format!("`{other}` is not a deployment (use cloud or server)"),
            ));
        }
    };
    let auth = auth(&settings, cloud).map_err(|(key, why)| located(key, why))?;
    let project = settings.project_key.trim().to_ascii_uppercase();
    if project.is_empty() {
        return Err(located("project-key", "must not be empty".into()));
    }
    let remote = RemoteKeys {
        timeout: settings.timeout,
        tls_verify: settings.tls_verify,
        ca_file: settings.ca_file.clone(),
        headers: settings.headers.clone(),
    }
    .build(config, DEFAULT_TIMEOUT)?;
    // Postee assigns to the configured user when no assignee is given.
    let assignee = settings
        .assignee
        .first()
        .cloned()
        .or_else(|| settings.user.as_ref().map(|u| u.expose().to_string()))
        .filter(|a| !a.is_empty());
    Built::new(
        Jira {
            name: config.name.clone(),
            api: JiraApi {
                base: url.as_str().trim_end_matches('/').to_string(),
                cloud,
                auth,
                remote,
            },
            project,
            issue_type: settings.issuetype.filter(|s| !s.is_empty()),
            priority: settings.priority.filter(|s| !s.is_empty()),
            assignee,
            labels: settings.labels,
            fix_versions: settings.fix_versions,
            affects_versions: settings.affects_versions,
            board: settings.board.filter(|s| !s.is_empty()),
            sprint: settings.sprint.filter(|s| !s.is_empty()),
            summary: settings.summary.filter(|s| !s.is_empty()),
            unknowns: settings.unknowns,
            dedup: settings.dedup,
            dedup_by: settings.dedup_by,
            cache: tokio::sync::Mutex::new(Cache::default()),
        },
        warnings,
    )
}

/// Chooses the authentication; an error names the key to fix.
fn auth(settings: &JiraConfig, cloud: bool) -> Result<Auth, (&'static str, String)> {
    let password = settings
        .password
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::var("JIRA_PASSWORD").ok().map(Secret::new))
        .filter(|p| !p.is_empty());
    let token = settings.token.clone().filter(|t| !t.is_empty());
    let user = settings
        .user
        .as_ref()
        .map(|u| u.expose().to_string())
        .filter(|u| !u.is_empty());
    let mode = match settings.auth.as_deref().map(str::to_ascii_lowercase) {
        Some(m) if m == "basic" => "basic",
        Some(m) if m == "bearer" || m == "pat" => "bearer",
        Some(other) => {
            return Err((
                "auth",
                format!("`{other}` is not an auth mode (use basic or bearer)"),
            ));
        }
        None if token.is_some() && !cloud => "bearer",
        None => "basic",
    };
    if mode == "bearer" {
        let token = token.ok_or((
            "token",
            "bearer auth needs `token` (a personal access token)".to_string(),
        ))?;
        return Ok(Auth::Bearer(token));
    }
    let user = user.ok_or((
        "user",
        "basic auth needs `user` (Cloud: your email)".to_string(),
    ))?;
    let secret = password.or(token).ok_or((
        "password",
        "basic auth needs `password` (Cloud: an API token; or `token`)".to_string(),
    ))?;
    Ok(Auth::Basic { user, secret })
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

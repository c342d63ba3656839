//! The `jira` block as written, and building a [`Jira`] from it: URL, deployment, auth.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::api::{Auth, JiraApi};
use super::{Cache, DEFAULT_TIMEOUT, Jira};
use crate::action::api_client::{self, HeaderValues, Remote, RemoteKeys};
use crate::action::{BuildContext, Built};
use crate::config::{ActionConfig, Diagnostic, Secret, units};

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
    /// Project key; upper-cased.
    project_key: String,
    /// Issue type name; default `Task`, else the first non-sub-task type.
    #[serde(default)]
    issuetype: Option<String>,
    /// Priority name; default `High` when the project allows it.
    #[serde(default)]
    priority: Option<String>,
    /// Only the first entry is used; `<%application_scope_owner%>` allowed. Default `user`.
    #[serde(default, deserialize_with = "units::de_string_list")]
    assignee: Vec<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    labels: Vec<String>,
    /// Version names for `fixVersions`.
    #[serde(default, deserialize_with = "units::de_string_list")]
    fix_versions: Vec<String>,
    /// Version names for `versions` (affects).
    #[serde(default, deserialize_with = "units::de_string_list")]
    affects_versions: Vec<String>,
    /// Board whose sprint new issues go into; default the project's first scrum board.
    #[serde(default)]
    board: Option<String>,
    /// Sprint name (active or future); default the active sprint.
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
    /// One request; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server certificate (default true; Postee's default was false).
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

fn yes() -> bool {
    true
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = crate::action::settings::<JiraConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let url = crate::action::http::parse_url(config, "url", &settings.url)?;
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
    let keys = RemoteKeys {
        timeout: Some(settings.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        tls_verify: settings.tls_verify,
        ca_file: settings.ca_file.as_deref(),
        headers: &settings.headers,
    };
    let remote = Remote::build(config, keys, &mut warnings)?;
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

//! `type: dependencytrack`: uploads the rendered CycloneDX BOM (JSON or XML) to OWASP
//! Dependency-Track (`PUT /api/v1/bom`) for the project named by the title, `name:version`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api_client::{self, HeaderValues, Remote, RemoteKeys, context, json_reply};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DependencyTrackConfig {
    /// Base URL of the API server.
    url: String,
    /// Sent as `X-Api-Key`.
    dependency_track_api_key: Secret,
    /// Version used when the title has no `:version` part.
    #[serde(default)]
    project_version: Option<String>,
    /// Let Dependency-Track create a missing project (default true, as in Postee).
    #[serde(default = "yes", deserialize_with = "units::de_lenient_bool")]
    auto_create: bool,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
}

fn yes() -> bool {
    true
}

pub struct DependencyTrack {
    name: String,
    url: reqwest::Url,
    api_key: Secret,
    project_version: Option<String>,
    auto_create: bool,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<DependencyTrackConfig>(config)?;
    let base = super::http::parse_url(config, "url", &settings.url)?;
    let url = reqwest::Url::parse(&format!(
        "{}/api/v1/bom",
        base.as_str().trim_end_matches('/')
    ))
    .map_err(|err| {
        Diagnostic::new(config.place(), format!("not a valid URL: {err}"))
            .key("url")
            .line(config.item.line_of("url"))
    })?;
    if settings.dependency_track_api_key.is_empty() {
        return Err(Diagnostic::new(config.place(), "must not be empty")
            .key("dependency-track-api-key")
            .line(config.item.line_of("dependency-track-api-key")));
    }
    let keys = RemoteKeys {
        timeout: Some(settings.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        tls_verify: settings.tls_verify,
        ca_file: settings.ca_file.as_deref(),
        headers: &settings.headers,
    };
    let remote = Remote::build(config, keys, &mut warnings)?;
    Built::new(
        DependencyTrack {
            name: config.name.clone(),
            url,
            api_key: settings.dependency_track_api_key,
            project_version: settings.project_version.filter(|v| !v.is_empty()),
            auto_create: settings.auto_create,
            remote,
        },
        warnings,
    )
}

impl DependencyTrack {
    /// The upload request body: project from the title (`name:version`, split on the first `:`),
    /// the BOM base64-encoded exactly as rendered.
    fn upload(&self, message: &Message) -> Result<serde_json::Value, ActionError> {
        let title = message.title.trim();
        let (name, version) = match title.split_once(':') {
            Some((name, version)) => (name.trim(), Some(version.trim().to_string())),
            None => (title, self.project_version.clone()),
        };
        if name.is_empty() {
            return Err(ActionError::permanent(
                "the template's title (the project, `name:version`) is empty",
            ));
        }
        let mut body = json!({
            "projectName": name,
            "autoCreate": self.auto_create,
            "bom": base64::engine::general_purpose::STANDARD.encode(message.body.as_bytes()),
        });
        if let Some(version) = version.filter(|v| !v.is_empty()) {
            body["projectVersion"] = version.into();
        }
        Ok(body)
    }
}

#[async_trait]
impl Action for DependencyTrack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dependencytrack"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let body = self.upload(message)?;
        let mut api_key =
            reqwest::header::HeaderValue::from_str(self.api_key.expose()).map_err(|_| {
                ActionError::permanent("dependency-track-api-key is not a valid header value")
            })?;
        api_key.set_sensitive(true);
        let what = "uploading the BOM";
        let response = self
            .remote
            .request(Method::PUT, self.url.clone())
            .header("X-Api-Key", api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|err| context(ActionError::transport(err), what))?;
        let reply = json_reply(response, what).await?;
        let token = reply.get("token").and_then(|t| t.as_str()).unwrap_or("");
        Ok(Report::detail(format!("BOM accepted, token {token}")))
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let body = self
            .upload(message)
            .unwrap_or_else(|err| json!({ "error": err.message }));
        json!({
            "method": "PUT",
            "url": self.url.as_str(),
            "headers": { "X-Api-Key": "***", "extra": self.remote.preview_headers() },
            "body": body,
        })
    }
}

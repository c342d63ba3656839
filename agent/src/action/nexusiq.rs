//! `type: nexusiq`: uploads the rendered CycloneDX XML to Sonatype Nexus IQ as a third-party scan
//! of the application named by the title, creating the application when it does not exist.
//!
//! The title becomes the application's public id with `.`, `:` and `/` replaced by `_`, as in
//! Postee, so existing applications keep receiving scans.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api_client::{self, HeaderValues, Remote, RemoteKeys, context, json_reply};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// Postee's value (it set it on the process-wide client); here it is this action's own.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_SOURCE: &str = "cyclone";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NexusIqConfig {
    /// Base URL of the IQ server.
    url: String,
    user: Secret,
    password: Secret,
    /// Internal id of the organization new applications are created in.
    organization_id: String,
    /// Scan source (path segment); default `cyclone`.
    #[serde(default)]
    source: Option<String>,
    /// Policy stage to evaluate (`stageId`: `build`, `release`, …); the server's default if unset.
    #[serde(default)]
    stage: Option<String>,
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

pub struct NexusIq {
    name: String,
    base: String,
    user: Secret,
    password: Secret,
    organization: String,
    source: String,
    stage: Option<String>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<NexusIqConfig>(config)?;
    let located = |key: &str, message: &str| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let url = super::http::parse_url(config, "url", &settings.url)?;
    if settings.user.is_empty() {
        return Err(located("user", "must not be empty"));
    }
    let organization = settings.organization_id.trim().to_string();
    if organization.is_empty() {
        return Err(located("organization-id", "must not be empty"));
    }
    let source = settings
        .source
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SOURCE.to_string());
    if !source
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(located("source", "must be letters, digits, - or _"));
    }
    let keys = RemoteKeys {
        timeout: Some(settings.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        tls_verify: settings.tls_verify,
        ca_file: settings.ca_file.as_deref(),
        headers: &settings.headers,
    };
    let remote = Remote::build(config, keys, &mut warnings)?;
    Built::new(
        NexusIq {
            name: config.name.clone(),
            base: url.as_str().trim_end_matches('/').to_string(),
            user: settings.user,
            password: settings.password,
            organization,
            source,
            stage: settings.stage.filter(|s| !s.is_empty()),
            remote,
        },
        warnings,
    )
}

/// Postee's rule for turning a title into an application public id.
pub fn application_id(title: &str) -> String {
    title.replace(['.', ':', '/'], "_")
}

impl NexusIq {
    fn url(&self, path: &str) -> Result<reqwest::Url, ActionError> {
        reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|err| ActionError::permanent(format!("bad Nexus IQ URL for {path}: {err}")))
    }

    fn request(&self, method: Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.remote
            .request(method, url)
            .basic_auth(self.user.expose(), Some(self.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<serde_json::Value, ActionError> {
        let response = request
            .send()
            .await
            .map_err(|err| context(ActionError::transport(err), what))?;
        json_reply(response, what).await
    }

    fn scan_url(&self, application: &str) -> Result<reqwest::Url, ActionError> {
        let mut url = self.url(&format!(
            "/api/v2/scan/applications/{application}/sources/{}",
            self.source
        ))?;
        if let Some(stage) = &self.stage {
            url.query_pairs_mut().append_pair("stageId", stage);
        }
        Ok(url)
    }

    /// The internal id of the application `public_id`, created if missing.
    async fn application(&self, public_id: &str) -> Result<String, ActionError> {
        let list_url = self.url(&format!(
            "/api/v2/applications/organization/{}",
            self.organization
        ))?;
        let list = self
            .call(
                self.request(Method::GET, list_url),
                "listing the organization's applications",
            )
            .await?;
        let existing = list
            .get("applications")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .find(|app| app.get("publicId").and_then(|p| p.as_str()) == Some(public_id))
            .and_then(|app| app.get("id"))
            .and_then(|id| id.as_str());
        if let Some(id) = existing {
            return Ok(id.to_string());
        }
        let created = self
            .call(
                self.request(Method::POST, self.url("/api/v2/applications")?)
                    .json(&self.new_application(public_id)),
                "creating the application",
            )
            .await?;
        created
            .get("id")
            .and_then(|id| id.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                ActionError::permanent("creating the application: the reply has no `id`")
            })
    }

    fn new_application(&self, public_id: &str) -> serde_json::Value {
        json!({ "publicId": public_id, "name": public_id, "organizationId": self.organization })
    }
}

#[async_trait]
impl Action for NexusIq {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nexusiq"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let public_id = application_id(&message.title);
        if public_id.trim().is_empty() {
            return Err(ActionError::permanent(
                "the template's title (the application name) is empty",
            ));
        }
        let application = self.application(&public_id).await?;
        let reply = self
            .call(
                self.request(Method::POST, self.scan_url(&application)?)
                    .header(reqwest::header::CONTENT_TYPE, "application/xml")
                    .body(message.body.clone()),
                "uploading the SBOM",
            )
            .await?;
        let status = reply
            .get("statusUrl")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        Ok(Report::detail(format!(
            "scan submitted for {public_id} {status}"
        )))
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let public_id = application_id(&message.title);
        let list = format!(
            "{}/api/v2/applications/organization/{}",
            self.base, self.organization
        );
        let scan = self
            .scan_url("{applicationId}")
            .map(|u| u.to_string())
            .unwrap_or_default()
            .replace("%7B", "{")
            .replace("%7D", "}");
        json!({
            "authorization": "Basic ***",
            "headers": self.remote.preview_headers(),
            "requests": [
                { "method": "GET", "url": list, "find": { "publicId": public_id } },
                { "method": "POST", "url": format!("{}/api/v2/applications", self.base),
                  "when": "not found", "body": self.new_application(&public_id) },
                { "method": "POST", "url": scan, "content_type": "application/xml",
                  "body": message.body },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_id_follows_postee() {
        assert_eq!(
            application_id("docker.io/library/alpine:3.10"),
            "docker_io_library_alpine_3_10"
        );
        assert_eq!(application_id("plain-name"), "plain-name");
    }
}

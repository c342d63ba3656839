//! `type: loki`: pushes each message as one log line to Grafana Loki's push API
//! (`POST /loki/api/v1/push`, JSON).
//!
//! The stream's labels are `source`, `severity`, `node` and `route` plus configured extras (a
//! small, stable set: Loki indexes labels, so nothing per-event goes there); the line is the
//! rendered body, cut to `size-limit` and marked; its timestamp is the event's time in
//! nanoseconds (so a retried push is deduplicated by Loki), else now. `tenant` sets
//! `X-Scope-OrgID`. Invariant: the password or token never reaches logs, errors or previews.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::outputs::{self, ExtraLabels};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const PUSH_PATH: &str = "loki/api/v1/push";
/// Loki's own default `max_line_size` is 256 KB.
const DEFAULT_SIZE_LIMIT: u64 = 256 * 1024;

/// One `type: loki` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LokiConfig {
    /// Base URL (`http://loki:3100`); `/loki/api/v1/push` is appended unless present.
    url: Secret,
    /// `X-Scope-OrgID` (multi-tenant Loki, Grafana Cloud's user id goes in `user`).
    #[serde(default)]
    tenant: Option<String>,
    /// Extra stream labels, `name: value` (placeholders allowed; keep them few and stable).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Longest line sent whole.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    token: Option<Secret>,
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

pub struct Loki {
    name: String,
    url: reqwest::Url,
    node: String,
    tenant: Option<String>,
    labels: ExtraLabels,
    size_limit: usize,
    authorization: Option<Secret>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<LokiConfig>(config)?;
    let base = super::http::parse_url(config, "url", settings.url.expose())?;
    let authorization = outputs::http_auth(
        config,
        settings.user.as_deref(),
        settings.password.as_ref(),
        settings.token.as_ref(),
    )?;
    let tenant = settings.tenant.filter(|t| !t.is_empty());
    if let Some(tenant) = &tenant
        && reqwest::header::HeaderValue::from_str(tenant).is_err()
    {
        return Err(config.error_at("tenant", "`tenant` holds characters a header cannot carry"));
    }
    let labels = ExtraLabels::build(config, "labels", settings.labels)?;
    let size_limit = api_client::size_limit(config, settings.size_limit, DEFAULT_SIZE_LIMIT, 256)?;
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
        Loki {
            name: config.name.clone(),
            url: api_client::endpoint(&base, PUSH_PATH),
            node: cx.node_name.clone(),
            tenant,
            labels,
            size_limit,
            authorization,
            remote,
        },
        warnings,
    )
}

// === impl Loki ===

impl Loki {
    fn request(&self, message: &Message) -> ApiRequest {
        let mut labels = outputs::standard_labels(message, &self.node);
        self.labels.apply(message, &mut labels);
        let (line, _) = outputs::truncated_marked(&message.body, self.size_limit);
        let nanos = outputs::event_time(message)
            .timestamp_nanos_opt()
            .unwrap_or_default();
        let body = json!({
            "streams": [{
                "stream": labels,
                "values": [[nanos.to_string(), line]],
            }]
        });
        let mut request = ApiRequest::post(self.url.clone(), body);
        if let Some(tenant) = &self.tenant {
            request = request.header("x-scope-orgid", tenant, false);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.expose(), true);
        }
        request
    }
}

#[async_trait]
impl Action for Loki {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "loki"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let request = self.request(message);
        let response = self.remote.send(&request).await?;
        super::check_response(response).await
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message).preview()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_url_is_appended_once() {
        for (base, expected) in [
            ("http://loki:3100", "http://loki:3100/loki/api/v1/push"),
            (
                "https://logs.example/loki/api/v1/push",
                "https://logs.example/loki/api/v1/push",
            ),
        ] {
            let url = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                api_client::endpoint(&url, PUSH_PATH).as_str(),
                expected,
                "{base}"
            );
        }
    }
}

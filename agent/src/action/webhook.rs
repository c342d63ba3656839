//! `type: webhook`: POSTs the rendered body to a URL; any 2xx is success.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// Postee's default, kept so existing configs behave the same.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WebhookConfig {
    /// Target URL. A secret: webhook URLs often embed a token.
    url: Secret,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Extra request headers (Hooker extension).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

pub struct Webhook {
    name: String,
    url: reqwest::Url,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
    http: reqwest::Client,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<WebhookConfig>(config)?;
    let url = super::http::parse_url(config, "url", settings.url.expose())?;
    let headers = super::http::header_map(
        config,
        settings
            .headers
            .iter()
            .map(|(k, v)| (k, std::slice::from_ref(v))),
    )?;
    Built::new(
        Webhook {
            name: config.name.clone(),
            url,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            headers,
            http: cx.http_client(),
        },
        warnings,
    )
}

#[async_trait]
impl Action for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.body.clone())
            .send()
            .await
            .map_err(ActionError::transport)?;
        super::check_response(response).await
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        serde_json::json!({ "method": "POST", "host": self.url.host_str(), "body": message.body })
    }
}

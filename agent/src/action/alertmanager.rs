//! `type: alertmanager`: posts each message as one alert to a Prometheus Alertmanager
//! (`POST /api/v2/alerts`).
//!
//! Labels identify an alert to Alertmanager (its fingerprint), so they hold only what names the
//! finding: `alertname`, `severity`, `source`, `node`, `route`, the finding key and configured
//! extras; never times or ids. A repeat of the same finding therefore updates the same alert and
//! groups with it. Title and body go to the `summary` and `description` annotations (bounded),
//! `endsAt` is now plus `ends-after`. Invariant: the password or token never reaches logs,
//! errors or previews.

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

const ALERTS_PATH: &str = "api/v2/alerts";
/// Alertmanager resolves an alert at `endsAt`; an hour unless configured.
const DEFAULT_ENDS_AFTER: Duration = Duration::from_secs(3600);
/// Longest `description` annotation sent whole.
const DEFAULT_SIZE_LIMIT: u64 = 64 * 1024;

/// One `type: alertmanager` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AlertmanagerConfig {
    /// Base URL (`http://alertmanager:9093`); `/api/v2/alerts` is appended unless present.
    url: Secret,
    /// `alertname` label; `event.input.<path>` placeholders allowed. Default: the template's
    /// `result_alertname`, else the title.
    #[serde(default)]
    alertname: Option<String>,
    /// Extra labels, `name: value` (placeholders allowed).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Extra annotations, `name: value` (placeholders allowed).
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// `endsAt` = now + this (`1h` by default).
    #[serde(default, deserialize_with = "units::de_duration")]
    ends_after: Option<Duration>,
    /// Largest `description` sent whole; longer ones are cut and marked.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    /// Basic auth.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    /// Bearer token (instead of basic auth).
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

pub struct Alertmanager {
    name: String,
    url: reqwest::Url,
    node: String,
    alertname: Option<String>,
    labels: ExtraLabels,
    annotations: Vec<(String, String)>,
    ends_after: chrono::Duration,
    size_limit: usize,
    authorization: Option<Secret>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<AlertmanagerConfig>(config)?;
    let base = super::http::parse_url(config, "url", settings.url.expose())?;
    let authorization = outputs::http_auth(
        config,
        settings.user.as_deref(),
        settings.password.as_ref(),
        settings.token.as_ref(),
    )?;
    for name in settings.annotations.keys() {
        if !outputs::is_label_name(name) {
            return Err(config.error_at(
                "annotations",
                format!("annotation name `{name}` is not valid: use letters, digits and `_`"),
            ));
        }
    }
    let labels = ExtraLabels::build(config, "labels", settings.labels)?;
    let ends_after = settings.ends_after.unwrap_or(DEFAULT_ENDS_AFTER);
    if ends_after < Duration::from_secs(1) {
        return Err(config.error_at(
            "ends-after",
            "`ends-after` must be at least 1s (the alert would arrive resolved)",
        ));
    }
    let ends_after = chrono::Duration::from_std(ends_after)
        .map_err(|_| config.error_at("ends-after", "`ends-after` is too long for a timestamp"))?;
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
        Alertmanager {
            name: config.name.clone(),
            url: api_client::endpoint(&base, ALERTS_PATH),
            node: cx.node_name.clone(),
            alertname: settings.alertname.filter(|a| !a.trim().is_empty()),
            labels,
            annotations: settings.annotations.into_iter().collect(),
            ends_after,
            size_limit,
            authorization,
            remote,
        },
        warnings,
    )
}

// === impl Alertmanager ===

impl Alertmanager {
    /// The alert's labels: what identifies the finding, nothing that changes between repeats.
    fn labels(&self, message: &Message) -> BTreeMap<String, String> {
        let mut labels = outputs::standard_labels(message, &self.node);
        let alertname = match &self.alertname {
            Some(template) => message.substitute(template),
            None => message
                .field_str("alertname")
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| message.title.clone()),
        };
        let alertname = outputs::bounded(alertname.trim(), outputs::MAX_LABEL_VALUE);
        let alertname = if alertname.is_empty() {
            format!("hooker-{}", message.route)
        } else {
            alertname
        };
        labels.insert("alertname".into(), alertname);
        labels.insert("finding".into(), super::alert::finding_key(message));
        self.labels.apply(message, &mut labels);
        labels
    }

    fn request(&self, message: &Message, now: chrono::DateTime<chrono::Utc>) -> ApiRequest {
        let (description, _) = outputs::truncated_marked(&message.body, self.size_limit);
        let mut annotations = serde_json::Map::new();
        annotations.insert("summary".into(), message.title.clone().into());
        annotations.insert("description".into(), description.into());
        for (name, template) in &self.annotations {
            let value = outputs::bounded(&message.substitute(template), self.size_limit);
            annotations.insert(name.clone(), value.into());
        }
        let mut alert = json!({
            "labels": self.labels(message),
            "annotations": annotations,
            "startsAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "endsAt": (now + self.ends_after).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if let Some(url) = message.url.as_deref().and_then(generator_url) {
            alert["generatorURL"] = url.into();
        }
        let mut request = ApiRequest::post(self.url.clone(), json!([alert]));
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.expose(), true);
        }
        request
    }
}

/// The message's link as `generatorURL` when it is an http(s) URL (Alertmanager wants a URI).
fn generator_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.to_string())
}

#[async_trait]
impl Action for Alertmanager {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let request = self.request(message, chrono::Utc::now());
        let response = self.remote.send(&request).await?;
        super::check_response(response).await
    }

    fn preview(&self, message: &Message) -> Value {
        self.request(message, chrono::Utc::now()).preview()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_url_is_appended_once() {
        for (base, expected) in [
            ("http://am:9093", "http://am:9093/api/v2/alerts"),
            ("http://am:9093/", "http://am:9093/api/v2/alerts"),
            ("http://proxy/am/", "http://proxy/am/api/v2/alerts"),
            (
                "http://am:9093/api/v2/alerts",
                "http://am:9093/api/v2/alerts",
            ),
        ] {
            let url = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                api_client::endpoint(&url, ALERTS_PATH).as_str(),
                expected,
                "{base}"
            );
        }
    }

    #[test]
    fn generator_url_takes_only_http_links() {
        assert_eq!(
            generator_url("https://x.io/a b").as_deref(),
            Some("https://x.io/a%20b")
        );
        assert_eq!(generator_url("javascript:alert(1)"), None);
        assert_eq!(generator_url("not a url"), None);
    }
}

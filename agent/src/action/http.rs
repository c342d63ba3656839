//! `type: http`: any method, headers and a templated body, to any URL. Event values in the
//! body template are escaped for its content type (`escape.rs`), so they cannot add structure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;

use super::escape::BodyEscape;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `Hooker-Event` carries the body base64-encoded; past this size servers reject the header.
const MAX_EVENT_HEADER: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct HttpConfig {
    url: Secret,
    #[serde(default)]
    method: Option<String>,
    /// `name: [values]` (Postee) or `name: value`.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    body_file: Option<PathBuf>,
    #[serde(default)]
    body_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

enum Body {
    Empty,
    File(PathBuf),
    /// `body-content`, its placeholders' values escaped for the body's content type.
    Template(String, BodyEscape),
}

pub struct Http {
    name: String,
    url: reqwest::Url,
    method: reqwest::Method,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    body: Body,
    http: reqwest::Client,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<HttpConfig>(config)?;
    let url = parse_url(config, "url", settings.url.expose())?;
    let method_text = settings
        .method
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method_text.as_bytes()).map_err(|_| {
        Diagnostic::new(
            config.place(),
            format!("`{method_text}` is not an HTTP method"),
        )
        .key("method")
        .line(config.item.line_of("method"))
    })?;
    let headers = header_map(
        config,
        settings.headers.iter().map(|(k, v)| match v {
            HeaderValues::One(one) => (k, std::slice::from_ref(one)),
            HeaderValues::Many(many) => (k, many.as_slice()),
        }),
    )?;
    let body = match (settings.body_file, settings.body_content) {
        (Some(_), Some(_)) => {
            return Err(Diagnostic::new(
                config.place(),
                "set either `body-file` or `body-content`, not both",
            )
            .key("body-file")
            .line(config.item.line_of("body-file")));
        }
        (Some(file), None) => Body::File(file),
        (None, Some(content)) => {
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let escape = BodyEscape::for_body(content_type, &content);
            Body::Template(content, escape)
        }
        (None, None) => Body::Empty,
    };
    Built::new(
        Http {
            name: config.name.clone(),
            url,
            method,
            headers,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            body,
            http: cx.http_client(),
        },
        warnings,
    )
}

/// Parses an http(s) URL key; the URL itself is not echoed back, it may hold a token.
pub fn parse_url(config: &ActionConfig, key: &str, text: &str) -> Result<reqwest::Url, Diagnostic> {
    let located = |message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let url = reqwest::Url::parse(text.trim())
        .map_err(|err| located(format!("not a valid URL: {err}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(located(format!(
            "URL scheme must be http or https, not `{other}`"
        ))),
    }
}

/// Builds a header map, rejecting names or values HTTP does not allow.
pub fn header_map<'a>(
    config: &ActionConfig,
    headers: impl Iterator<Item = (&'a String, &'a [String])>,
) -> Result<reqwest::header::HeaderMap, Diagnostic> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, values) in headers {
        let bad = |what: &str| {
            Diagnostic::new(
                config.place(),
                format!("header `{name}` has an invalid {what}"),
            )
            .key("headers")
            .line(config.item.line_of("headers"))
        };
        let header =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        for value in values {
            let resolved = Secret::resolve(value).map_err(|err| bad(&format!("value ({err})")))?;
            let mut value = reqwest::header::HeaderValue::from_str(resolved.expose())
                .map_err(|_| bad("value"))?;
            value.set_sensitive(true);
            map.append(header.clone(), value);
        }
    }
    Ok(map)
}

impl Http {
    async fn body(&self, message: &Message) -> Result<Vec<u8>, ActionError> {
        match &self.body {
            Body::Empty => Ok(Vec::new()),
            Body::Template(template, escape) => {
                Ok(escape.substitute(message, template).into_bytes())
            }
            Body::File(path) => tokio::fs::read(path).await.map_err(|err| {
                ActionError::permanent(format!("cannot read body-file {}: {err}", path.display()))
            }),
        }
    }
}

#[async_trait]
impl Action for Http {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let body = self.body(message).await?;
        let mut request = self
            .http
            .request(self.method.clone(), self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone());
        let encoded = base64::engine::general_purpose::STANDARD.encode(message.body.as_bytes());
        if encoded.len() <= MAX_EVENT_HEADER {
            request = request.header("Hooker-Event", encoded);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(ActionError::transport)?;
        super::check_response(response).await
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let body = match &self.body {
            Body::Empty => String::new(),
            Body::Template(template, escape) => escape.substitute(message, template),
            Body::File(path) => format!("<contents of {}>", path.display()),
        };
        serde_json::json!({ "method": self.method.as_str(), "host": self.url.host_str(), "body": body })
    }
}

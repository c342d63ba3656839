//! Shared plumbing for the actions that call an HTTP API (Slack, Teams, Splunk, OpsGenie, PagerDuty,
//! ServiceNow, Security Hub, Jira, Nexus IQ, Dependency-Track): the keys they all take (`timeout`,
//! `tls-verify`, `ca-file`, `headers`), the client those keys build, reading a JSON reply, and one
//! planned [`ApiRequest`] that `send` executes and `preview` shows, so `hooker test-route` prints
//! exactly the body that would go out.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ActionError;
use crate::config::{ActionConfig, Diagnostic};

/// Default limit for one attempt of an API call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Serde default for `tls-verify`: verification is on unless turned off.
pub const fn yes() -> bool {
    true
}

/// Reads `tls-verify` like any boolean (`yes`, `"false"`, …), except that an empty value keeps
/// verification on: only an explicit false turns it off.
pub fn de_tls_verify<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(value) => {
            crate::config::units::de_lenient_bool(value).map_err(serde::de::Error::custom)
        }
    }
}

/// A `headers:` value: `name: value` or `name: [values]` (Postee's http style).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

/// Which region of a SaaS that has one API host per region (PagerDuty, OpsGenie).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

/// The keys every API action shares, as read from its block. `timeout` is already defaulted by
/// callers that want another default than [`DEFAULT_TIMEOUT`].
pub struct RemoteKeys<'a> {
    pub timeout: Option<Duration>,
    pub tls_verify: bool,
    pub ca_file: Option<&'a Path>,
    pub headers: &'a BTreeMap<String, HeaderValues>,
}

/// One action's HTTP client (its timeout and TLS settings) and its extra headers.
pub struct Remote {
    http: reqwest::Client,
    headers: reqwest::header::HeaderMap,
}

/// One request an action will make. Built by a pure function of the message, so `send` and
/// `preview` cannot disagree.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    /// The action's own headers (auth, signing); they override custom `headers` of the same name.
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
    /// The URL path or query carries a token (webhook URLs): previews show only the host.
    pub secret_url: bool,
}

// === impl Remote ===

impl Remote {
    /// Builds the client from the shared keys. A `tls-verify: false` is allowed but warned about.
    pub fn build(
        config: &ActionConfig,
        keys: RemoteKeys<'_>,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<Remote, Diagnostic> {
        let http = super::remote_client(
            keys.timeout.unwrap_or(DEFAULT_TIMEOUT),
            keys.tls_verify,
            keys.ca_file,
        )
        .map_err(|message| {
            Diagnostic::new(config.place(), message)
                .key("ca-file")
                .line(config.item.line_of("ca-file"))
        })?;
        if !keys.tls_verify {
            warnings.push(
                Diagnostic::new(
                    config.place(),
                    "TLS certificate verification is off; anyone on the path can read and change what this action sends",
                )
                .key("tls-verify")
                .line(config.item.line_of("tls-verify")),
            );
        }
        let headers = super::http::header_map(
            config,
            keys.headers.iter().map(|(name, values)| match values {
                HeaderValues::One(one) => (name, std::slice::from_ref(one)),
                HeaderValues::Many(many) => (name, many.as_slice()),
            }),
        )?;
        Ok(Remote { http, headers })
    }

    /// A request with the action's extra headers, for actions that build their own requests.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.http.request(method, url).headers(self.headers.clone())
    }

    /// The extra headers as `test-route` shows them (all configured headers are sensitive).
    pub fn preview_headers(&self) -> serde_json::Value {
        serde_json::Value::Object(preview_headers(&self.headers))
    }

    /// Sends one request; the reply is the caller's to judge (usually with `check_response`).
    pub async fn send(&self, request: &ApiRequest) -> Result<reqwest::Response, ActionError> {
        let body = serde_json::to_vec(&request.body)
            .map_err(|err| ActionError::permanent(format!("cannot encode the request: {err}")))?;
        self.http
            .request(request.method.clone(), request.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(request.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(ActionError::transport)
    }
}

// === impl ApiRequest ===

impl ApiRequest {
    pub fn post(url: reqwest::Url, body: serde_json::Value) -> ApiRequest {
        ApiRequest {
            method: reqwest::Method::POST,
            url,
            headers: reqwest::header::HeaderMap::new(),
            body,
            secret_url: false,
        }
    }

    /// Adds a header the action owns; `sensitive` ones show as `***` in previews.
    pub fn header(mut self, name: &'static str, value: &str, sensitive: bool) -> ApiRequest {
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(value) {
            value.set_sensitive(sensitive);
            self.headers.insert(name, value);
        }
        self
    }

    pub fn with_secret_url(mut self) -> ApiRequest {
        self.secret_url = true;
        self
    }

    /// What `hooker test-route` shows: method, where (without secrets), headers, exact body.
    pub fn preview(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        headers.insert("content-type".into(), "application/json".into());
        headers.extend(preview_headers(&self.headers));
        let location = if self.secret_url {
            format!(
                "{}://{}/***",
                self.url.scheme(),
                self.url.host_str().unwrap_or_default()
            )
        } else {
            let mut shown = self.url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            shown.to_string()
        };
        serde_json::json!({
            "method": self.method.as_str(),
            "url": location,
            "headers": headers,
            "body": self.body,
        })
    }
}

/// Header map → JSON for `test-route`, values of sensitive headers as `***`.
fn preview_headers(
    headers: &reqwest::header::HeaderMap,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let shown = if value.is_sensitive() {
            "***".to_string()
        } else {
            value.to_str().unwrap_or("<binary>").to_string()
        };
        map.insert(name.as_str().to_string(), shown.into());
    }
    map
}

/// The preview of an action that may make several requests (split messages, batches).
pub fn preview_all(requests: &[ApiRequest]) -> serde_json::Value {
    match requests {
        [one] => one.preview(),
        many => {
            serde_json::json!({ "requests": many.iter().map(ApiRequest::preview).collect::<Vec<_>>() })
        }
    }
}

/// Sends requests in order, stopping at the first failure; reports how many went out.
pub async fn send_all(
    remote: &Remote,
    requests: &[ApiRequest],
) -> Result<super::Report, ActionError> {
    let mut last = super::Report::none();
    for (index, request) in requests.iter().enumerate() {
        let response = remote.send(request).await?;
        last = super::check_response(response).await.map_err(|mut err| {
            if requests.len() > 1 {
                err.message = format!("part {} of {}: {}", index + 1, requests.len(), err.message);
            }
            err
        })?;
    }
    if requests.len() > 1 {
        let detail = last.detail.unwrap_or_default();
        return Ok(super::Report::detail(format!(
            "{detail} ({} requests)",
            requests.len()
        )));
    }
    Ok(last)
}

/// Reads a successful reply as JSON (an empty body is `null`); any other status is the shared
/// [`super::check_response`] error. `what` names the step, e.g. "creating the issue".
pub async fn json_reply(
    response: reqwest::Response,
    what: &str,
) -> Result<serde_json::Value, ActionError> {
    if !response.status().is_success() {
        let err = match super::check_response(response).await {
            Err(err) => err,
            Ok(_) => ActionError::permanent("unexpected success"),
        };
        return Err(context(err, what));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|err| context(ActionError::transport(err), what))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|err| {
        ActionError::permanent(format!(
            "{what}: the reply is not JSON ({err}): {}",
            super::excerpt(&bytes, 256)
        ))
    })
}

/// Prefixes an error with the step that failed, keeping its kind and `Retry-After`.
pub fn context(err: ActionError, what: &str) -> ActionError {
    ActionError {
        message: format!("{what}: {}", err.message),
        ..err
    }
}

/// Cuts `text` to at most `limit` bytes on a character boundary.
pub fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The API endpoint `path` under `base`, unless `base` already names it (a user may configure
/// either `https://am:9093` or `https://am:9093/api/v2/alerts`).
pub fn endpoint(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let wanted = format!("/{}", path.trim_matches('/'));
    if base.path().trim_end_matches('/').ends_with(&wanted) {
        base.clone()
    } else {
        join_path(base, path)
    }
}

/// The `size-limit` key: its value or `default`, refused below `minimum` bytes.
pub fn size_limit(
    config: &ActionConfig,
    value: Option<u64>,
    default: u64,
    minimum: u64,
) -> Result<usize, Diagnostic> {
    let size_limit = value.unwrap_or(default);
    if size_limit < minimum {
        return Err(config.error_at(
            "size-limit",
            format!("size-limit {size_limit} is too small; use at least {minimum} bytes"),
        ));
    }
    Ok(usize::try_from(size_limit).unwrap_or(usize::MAX))
}

/// Joins a path onto a base URL, keeping the base's own path (`https://x/splunk` + `services/…`).
pub fn join_path(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Keys {
        #[serde(default = "yes", deserialize_with = "de_tls_verify")]
        tls_verify: bool,
    }

    #[test]
    fn only_an_explicit_false_turns_tls_verification_off() {
        let read = |text: &str| {
            serde_json::from_str::<Keys>(text)
                .map(|k| k.tls_verify)
                .ok()
        };
        assert_eq!(read("{}"), Some(true));
        assert_eq!(read(r#"{"tls-verify": null}"#), Some(true));
        assert_eq!(read(r#"{"tls-verify": "yes"}"#), Some(true));
        assert_eq!(read(r#"{"tls-verify": false}"#), Some(false));
        assert_eq!(read(r#"{"tls-verify": "off"}"#), Some(false));
        assert_eq!(read(r#"{"tls-verify": "maybe"}"#), None);
    }

    #[test]
    fn paths_join_under_the_base() {
        let base = reqwest::Url::parse("https://x.io/proxy/").unwrap();
        assert_eq!(
            join_path(&base, "/v2/alerts").as_str(),
            "https://x.io/proxy/v2/alerts"
        );
        assert_eq!(truncate("éé", 3), "é");
    }
}

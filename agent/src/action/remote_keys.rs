//! The connection keys the ticketing and SBOM actions share (`timeout`, `tls-verify`, `ca-file`,
//! `headers`), turned into a client, plus reading a JSON reply and redacting a request for
//! `test-route`. Owns no wire format; each action keeps its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::ActionError;
use crate::config::{ActionConfig, Diagnostic};
use reqwest::header::HeaderMap;

/// The keys, as read. Each action's config declares these fields itself (serde `flatten` would
/// hide unknown keys from the warnings) and hands them over here.
#[derive(Debug, Default)]
pub struct RemoteKeys {
    /// `timeout`: limit for one request.
    pub timeout: Option<Duration>,
    /// `tls-verify`: verify the server's certificate (default true; `false` is for test systems).
    pub tls_verify: bool,
    /// `ca-file`: extra CA bundle (PEM) to trust, e.g. an internal CA.
    pub ca_file: Option<PathBuf>,
    /// `headers`: extra request headers; values may be secrets (`$ENV`, `${file:...}`).
    pub headers: BTreeMap<String, String>,
}

/// What the keys build: a client with the action's own timeout and trust, and its headers.
pub struct Remote {
    pub client: reqwest::Client,
    pub headers: HeaderMap,
    pub timeout: Duration,
}

/// The default of `tls-verify`, for `#[serde(default = ...)]`.
pub fn tls_verify_default() -> bool {
    true
}

impl RemoteKeys {
    /// Builds the client; `default_timeout` applies when `timeout` is not set.
    pub fn build(
        &self,
        config: &ActionConfig,
        default_timeout: Duration,
    ) -> Result<Remote, Diagnostic> {
        let timeout = self.timeout.unwrap_or(default_timeout);
        let client = super::remote_client(timeout, self.tls_verify, self.ca_file.as_deref())
            .map_err(|why| {
                Diagnostic::new(config.place(), why)
                    .key("ca-file")
                    .line(config.item.line_of("ca-file"))
            })?;
        let headers = super::http::header_map(
            config,
            self.headers
                .iter()
                .map(|(k, v)| (k, std::slice::from_ref(v))),
        )?;
        Ok(Remote {
            client,
            headers,
            timeout,
        })
    }
}

impl Remote {
    /// A request with the action's timeout and extra headers.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .timeout(self.timeout)
            .headers(self.headers.clone())
    }

    /// Header names for a preview; values are shown only for headers not marked sensitive.
    pub fn preview_headers(&self) -> serde_json::Value {
        preview_headers(&self.headers)
    }
}

/// Header map → JSON for `test-route`, secrets as `***` (configured headers are all sensitive).
pub fn preview_headers(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let shown = if value.is_sensitive() {
            "***".to_string()
        } else {
            value.to_str().unwrap_or("<binary>").to_string()
        };
        map.insert(name.as_str().to_string(), shown.into());
    }
    serde_json::Value::Object(map)
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

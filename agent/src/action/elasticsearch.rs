//! `type: elasticsearch` (Elasticsearch 7+, OpenSearch): indexes each message with one `_bulk`
//! request (NDJSON, `application/x-ndjson`) into a dated index (`hooker-%Y.%m.%d` of the
//! event's time, UTC).
//!
//! A body that is a JSON array becomes one document per element, any other body one document.
//! Each document goes in with `create` and a stable `_id` (message, route, action, position), so
//! a document sent twice is refused as a 409 conflict, which counts as indexed: retries never
//! duplicate. The bulk reply is read per item: items refused with 429 or 5xx are retried, and
//! only those (the ones indexed are remembered between attempts); items refused with another 4xx
//! (a mapping error) cannot succeed and dead-letter the message with Elasticsearch's reason once
//! nothing retryable is left. Invariant: the API key or password never reaches logs, errors or
//! previews.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_client::{self, HeaderValues, Remote, RemoteKeys};
use super::outputs;
use super::{Action, ActionError, BuildContext, Built, ErrorKind, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_INDEX: &str = "hooker-%Y.%m.%d";
/// Largest document sent whole; larger ones become a truncated `message` text.
const DEFAULT_SIZE_LIMIT: u64 = 1_000_000;
/// Documents per `_bulk` request; a body with more goes in several requests.
const BULK_CHUNK: usize = 500;
/// Messages whose partial progress is remembered; past this the memory is cleared (the stable
/// `_id`s still keep a resend from duplicating).
const MAX_PENDING: usize = 10_000;
/// Per-item reasons quoted in an error.
const MAX_REASONS: usize = 5;

/// One `type: elasticsearch` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ElasticsearchConfig {
    /// Base URL (`https://es:9200`); `/_bulk` is appended.
    url: Secret,
    /// Index name pattern, strftime of the event's UTC time (default `hooker-%Y.%m.%d`).
    #[serde(default)]
    index: Option<String>,
    /// `Authorization: ApiKey <api-key>`: the encoded key Elasticsearch returns (`encoded`).
    #[serde(default)]
    api_key: Option<Secret>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
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

pub struct Elasticsearch {
    name: String,
    url: reqwest::Url,
    node: String,
    index: String,
    size_limit: usize,
    authorization: Option<Secret>,
    remote: Remote,
    /// Per message: which documents are settled (indexed, or refused for good and why).
    pending: Mutex<HashMap<String, Progress>>,
}

#[derive(Default, Clone)]
struct Progress {
    indexed: Vec<bool>,
    refused: Vec<Option<String>>,
}

/// One planned document.
struct Document {
    id: String,
    index: String,
    source: Value,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<ElasticsearchConfig>(config)?;
    let base = super::http::parse_url(config, "url", settings.url.expose())?;
    let mut authorization = outputs::http_auth(
        config,
        settings.user.as_deref(),
        settings.password.as_ref(),
        settings.token.as_ref(),
    )?;
    if let Some(key) = &settings.api_key {
        if key.is_empty() {
            return Err(config.error_at("api-key", "`api-key` is empty"));
        }
        if authorization.is_some() {
            return Err(config.error_at(
                "api-key",
                "set one of `api-key`, `token` or `user` and `password`",
            ));
        }
        authorization = Some(Secret::new(format!("ApiKey {}", key.expose())));
    }
    let index = settings
        .index
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_INDEX.to_string());
    let sample = chrono::DateTime::from_timestamp(1_764_151_200, 0).unwrap_or_default();
    let example = index_name(&index, sample).ok_or_else(|| {
        config.error_at(
            "index",
            format!("`{index}` is not a valid strftime pattern"),
        )
    })?;
    if let Err(why) = check_index_name(&example) {
        return Err(config.error_at(
            "index",
            format!("`{index}` makes index names like `{example}`, which {why}"),
        ));
    }
    let size_limit = api_client::size_limit(config, settings.size_limit, DEFAULT_SIZE_LIMIT, 1024)?;
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
        Elasticsearch {
            name: config.name.clone(),
            url: api_client::join_path(&base, "_bulk"),
            node: cx.node_name.clone(),
            index,
            size_limit,
            authorization,
            remote,
            pending: Mutex::new(HashMap::new()),
        },
        warnings,
    )
}

/// The pattern applied to `time`; `None` when the pattern has an invalid specifier.
fn index_name(pattern: &str, time: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let items: Vec<Item<'_>> = StrftimeItems::new(pattern).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return None;
    }
    let mut name = String::new();
    write!(name, "{}", time.format_with_items(items.iter())).ok()?;
    Some(name)
}

/// Elasticsearch's rules for index names.
fn check_index_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("is empty or a dot");
    }
    if name.len() > 255 {
        return Err("is longer than 255 bytes");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err("has upper-case letters");
    }
    if name.starts_with(['-', '_', '+']) {
        return Err("starts with `-`, `_` or `+`");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return Err("has one of \\ / * ? \" < > | , # : or a space");
    }
    Ok(())
}

// === impl Elasticsearch ===

impl Elasticsearch {
    /// The documents a message makes, in order, each with its stable id.
    fn documents(&self, message: &Message) -> Vec<Document> {
        let time = outputs::event_time(message);
        let timestamp = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let index = index_name(&self.index, time).unwrap_or_else(|| self.index.clone());
        let meta = json!({
            "route": message.route,
            "node": self.node,
            "event_id": message.event_id,
            "title": message.title,
            "severity": outputs::severity_word(outputs::severity(message)),
            "source": outputs::source(message),
            "url": message.url,
        });
        let items = match message.body_json() {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(object @ Value::Object(_)) => vec![object],
            _ => vec![Value::String(message.body.clone())],
        };
        let key = self.message_key(message);
        items
            .into_iter()
            .enumerate()
            .map(|(position, item)| {
                let mut source = match item {
                    Value::Object(map) => map,
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("message".into(), other);
                        map
                    }
                };
                let size = serde_json::to_vec(&source).map(|v| v.len()).unwrap_or(0);
                if size > self.size_limit {
                    let text = Value::Object(source).to_string();
                    let (cut, _) = outputs::truncated_marked(&text, self.size_limit);
                    source = serde_json::Map::new();
                    source.insert("message".into(), cut.into());
                }
                source
                    .entry("@timestamp")
                    .or_insert_with(|| timestamp.clone().into());
                source.entry("hooker").or_insert_with(|| meta.clone());
                Document {
                    id: super::alert::sha256_hex(format!("{key}\n{position}").as_bytes())[..40]
                        .to_string(),
                    index: index.clone(),
                    source: Value::Object(source),
                }
            })
            .collect()
    }

    fn message_key(&self, message: &Message) -> String {
        format!("{}\n{}\n{}", self.name, message.route, message.event_id)
    }

    /// The NDJSON body for `documents`: a `create` line and a source line each, newline-ended.
    fn ndjson(documents: &[&Document]) -> String {
        let mut body = String::new();
        for document in documents {
            let action = json!({"create": {"_index": document.index, "_id": document.id}});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(&document.source.to_string());
            body.push('\n');
        }
        body
    }

    async fn bulk(&self, documents: &[&Document]) -> Result<Vec<ItemResult>, ActionError> {
        let mut request = self
            .remote
            .request(reqwest::Method::POST, self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(Elasticsearch::ndjson(documents));
        if let Some(authorization) = &self.authorization {
            let mut value = reqwest::header::HeaderValue::from_str(authorization.expose())
                .map_err(|_| ActionError::permanent("the credential is not a valid header"))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(ActionError::transport)?;
        let reply = api_client::json_reply(response, "bulk indexing").await?;
        let items = reply
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ActionError::retryable("bulk indexing: the reply has no `items` list")
            })?;
        if items.len() != documents.len() {
            return Err(ActionError::retryable(format!(
                "bulk indexing: the reply lists {} items for {} documents",
                items.len(),
                documents.len()
            )));
        }
        Ok(items.iter().map(item_result).collect())
    }

    /// Sends what is not settled yet, records what the reply settled, and says what is left.
    async fn deliver(&self, message: &Message) -> Result<Report, ActionError> {
        let documents = self.documents(message);
        let key = self.message_key(message);
        let mut progress = self
            .pending
            .lock()
            .ok()
            .and_then(|pending| pending.get(&key).cloned())
            .filter(|p| p.indexed.len() == documents.len())
            .unwrap_or_else(|| Progress {
                indexed: vec![false; documents.len()],
                refused: vec![None; documents.len()],
            });
        let open: Vec<usize> = (0..documents.len())
            .filter(|&i| !progress.indexed[i] && progress.refused[i].is_none())
            .collect();
        let mut retry = Vec::new();
        let mut transport = None;
        for chunk in open.chunks(BULK_CHUNK) {
            let batch: Vec<&Document> = chunk.iter().map(|&i| &documents[i]).collect();
            match self.bulk(&batch).await {
                Ok(results) => {
                    for (&i, result) in chunk.iter().zip(results) {
                        match result {
                            ItemResult::Indexed => progress.indexed[i] = true,
                            ItemResult::Refused(reason) => progress.refused[i] = Some(reason),
                            ItemResult::Retry(reason) => {
                                retry.push(format!("#{}: {reason}", i + 1))
                            }
                        }
                    }
                }
                Err(error) => {
                    transport = Some(error);
                    break;
                }
            }
        }
        let total = documents.len();
        let indexed = progress.indexed.iter().filter(|&&done| done).count();
        let refused: Vec<String> = progress
            .refused
            .iter()
            .enumerate()
            .filter_map(|(i, reason)| reason.as_ref().map(|r| format!("#{}: {r}", i + 1)))
            .collect();
        let unsettled = transport.is_some() || !retry.is_empty();
        if let Ok(mut pending) = self.pending.lock() {
            if unsettled {
                if pending.len() >= MAX_PENDING {
                    pending.clear();
                }
                pending.insert(key, progress);
            } else {
                pending.remove(&key);
            }
        }
        if let Some(error) = transport {
            if error.kind == ErrorKind::Permanent || indexed == 0 {
                return Err(error);
            }
            return Err(ActionError {
                message: format!("{indexed} of {total} documents indexed; {}", error.message),
                ..error
            });
        }
        if !retry.is_empty() {
            return Err(ActionError::retryable(format!(
                "{} of {total} documents to retry ({indexed} indexed): {}",
                retry.len(),
                reasons(&retry)
            )));
        }
        if !refused.is_empty() {
            return Err(ActionError::permanent(format!(
                "{} of {total} documents refused ({indexed} indexed): {}",
                refused.len(),
                reasons(&refused)
            )));
        }
        Ok(Report::detail(format!(
            "{indexed} of {total} documents indexed"
        )))
    }

    fn preview_body(&self, message: &Message) -> Value {
        let documents = self.documents(message);
        let all: Vec<&Document> = documents.iter().collect();
        let mut headers = serde_json::Map::new();
        headers.insert("content-type".into(), "application/x-ndjson".into());
        if self.authorization.is_some() {
            headers.insert("authorization".into(), "***".into());
        }
        if let Value::Object(extra) = self.remote.preview_headers() {
            headers.extend(extra);
        }
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        json!({
            "method": "POST",
            "url": shown.to_string(),
            "headers": headers,
            "body": Elasticsearch::ndjson(&all),
        })
    }
}

fn reasons(list: &[String]) -> String {
    let mut text = list
        .iter()
        .take(MAX_REASONS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if list.len() > MAX_REASONS {
        let _ = write!(text, "; and {} more", list.len() - MAX_REASONS);
    }
    text
}

/// What the reply said about one document.
enum ItemResult {
    Indexed,
    Retry(String),
    Refused(String),
}

/// One entry of the reply's `items`: `{"create": {"status": 201, "error": {…}}}`. 2xx and 409
/// (the `_id` is there already: an earlier attempt indexed it) are indexed; 429 and 5xx are
/// retried; any other status is refused for good.
fn item_result(item: &Value) -> ItemResult {
    let result = item
        .as_object()
        .and_then(|map| map.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
    let reason = || {
        let error = result.get("error");
        let kind = error
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("error");
        let why = error
            .and_then(|e| e.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("");
        super::excerpt(format!("{status} {kind}: {why}").as_bytes(), 300)
    };
    match status {
        200..=299 | 409 => ItemResult::Indexed,
        429 | 500..=599 => ItemResult::Retry(reason()),
        0 => ItemResult::Retry("an item without a status".into()),
        _ => ItemResult::Refused(reason()),
    }
}

#[async_trait]
impl Action for Elasticsearch {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        self.deliver(message).await
    }

    fn preview(&self, message: &Message) -> Value {
        self.preview_body(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns_are_strftime_and_checked() {
        let time = chrono::DateTime::from_timestamp(1_764_151_200, 0).unwrap();
        assert_eq!(
            index_name(DEFAULT_INDEX, time).as_deref(),
            Some("hooker-2025.11.26")
        );
        assert_eq!(index_name("x-%Q", time), None);
        assert!(check_index_name("hooker-2025.11.26").is_ok());
        assert!(check_index_name("Hooker").is_err());
        assert!(check_index_name("_x").is_err());
        assert!(check_index_name("a b").is_err());
    }

    #[test]
    fn items_are_read_by_status() {
        let read = |v: Value| match item_result(&v) {
            ItemResult::Indexed => "indexed".to_string(),
            ItemResult::Retry(r) => format!("retry {r}"),
            ItemResult::Refused(r) => format!("refused {r}"),
        };
        assert_eq!(read(json!({"create": {"status": 201}})), "indexed");
        assert_eq!(read(json!({"create": {"status": 409}})), "indexed");
        assert_eq!(
            read(
                json!({"create": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
            ),
            "retry 429 es_rejected_execution_exception: queue full"
        );
        assert_eq!(
            read(
                json!({"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}}})
            ),
            "refused 400 mapper_parsing_exception: failed to parse field [n]"
        );
    }
}

//! The unit of work: one JSON object an intake received, parsed once, with where and when it came.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event_json::{EventJson, one_line};
use crate::router::fields::{Fields, Pruned};

/// Which way an event came in. A closed set, so it is safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeKind {
    Http,
    Https,
    Unix,
    Grpc,
    Tracee,
    Forward,
    Cli,
}

impl IntakeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeKind::Http => "http",
            IntakeKind::Https => "https",
            IntakeKind::Unix => "unix",
            IntakeKind::Grpc => "grpc",
            IntakeKind::Tracee => "tracee",
            IntakeKind::Forward => "forward",
            IntakeKind::Cli => "cli",
        }
    }
}

/// One event. The payload is a JSON object; nothing downstream re-parses bytes.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub received_at: SystemTime,
    pub intake: IntakeKind,
    pub peer: Option<String>,
    /// Only this route may take the event (`POST /tenant/{route}`).
    pub only_route: Option<Arc<str>>,
    pub payload: Arc<EventJson>,
    /// The payload parsed into only the fields the routes read, when the intake did that (the
    /// router then reads it instead of `payload`; see `router::fields`).
    pub pruned: Option<Pruned>,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Event {
    pub fn new(payload: impl Into<EventJson>, intake: IntakeKind, peer: Option<String>) -> Event {
        let received_at = SystemTime::now();
        Event {
            id: next_id(received_at),
            received_at,
            intake,
            peer,
            only_route: None,
            payload: Arc::new(payload.into()),
            pruned: None,
        }
    }
}

/// Ids sort by arrival: `<unix micros hex>-<process sequence hex>`.
fn next_id(at: SystemTime) -> String {
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{micros:013x}-{seq:06x}")
}

/// Why a body was not accepted as events.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not valid JSON: {message} (line {line}, column {column})")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("expected a JSON object or an array of objects, got {0}")]
    NotAnObject(&'static str),
    #[error("item {index} of the array is {kind}, not a JSON object")]
    BatchItem { index: usize, kind: &'static str },
    #[error("the array is empty")]
    EmptyBatch,
}

/// Parses a request body as [`parse_payloads`] does; but with `fields` (the running routes',
/// see `router::fields`), one object on one line is parsed into only those, and kept as the
/// event's text.
pub fn parse_body(
    body: &[u8],
    fields: Option<Arc<Fields>>,
) -> Result<Vec<(EventJson, Option<Pruned>)>, PayloadError> {
    if let Some(fields) = fields
        && let Some(text) = one_line(body)
        && text.first() == Some(&b'{')
        && let Ok(pruned) = fields.prune(text)
        && let Ok(json) = EventJson::from_text(text)
    {
        return Ok(vec![(json, Some(pruned))]);
    }
    // A large object stays text (see `LARGE_EVENT`): checked with the full parse's nesting limit,
    // then compacted onto one line (checked first: compacting can join two tokens).
    if body.len() >= crate::event_json::LARGE_EVENT
        && body.trim_ascii_start().first() == Some(&b'{')
        && crate::router::fields::check(body).is_ok()
        && let Ok(json) = EventJson::from_text(&crate::event_json::compact(body))
    {
        return Ok(vec![(json, None)]);
    }
    // Anything else, a bad body included (parsed again for the precise error).
    Ok(parse_payloads(body)?
        .into_iter()
        .map(|json| (json, None))
        .collect())
}

/// Parses a request body: one object is one event, an array of objects is a batch.
pub fn parse_payloads(body: &[u8]) -> Result<Vec<EventJson>, PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| PayloadError::Syntax {
            message: strip_position(&err.to_string()),
            line: err.line(),
            column: err.column(),
        })?;
    match value {
        serde_json::Value::Object(_) => Ok(vec![EventJson::parsed(value, body)]),
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(PayloadError::EmptyBatch);
            }
            for (index, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(PayloadError::BatchItem {
                        index,
                        kind: kind_of(item),
                    });
                }
            }
            Ok(items.into_iter().map(EventJson::new).collect())
        }
        other => Err(PayloadError::NotAnObject(kind_of(&other))),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pretty-printed report of about `LARGE_EVENT` bytes, with whitespace and escapes inside
    /// its strings.
    fn large_pretty_report() -> (Vec<u8>, serde_json::Value) {
        let item = |i: usize| serde_json::json!({"id": format!("CVE-{i}"), "text": "a  b\t\"quoted\" \\ {x}\n", "n": i});
        let count = crate::event_json::LARGE_EVENT / 60;
        let value = serde_json::json!({"Results": (0..count).map(item).collect::<Vec<_>>()});
        (serde_json::to_vec_pretty(&value).unwrap(), value)
    }

    #[test]
    fn a_large_object_stays_text_compacted_onto_one_line() {
        let (body, value) = large_pretty_report();
        assert!(body.len() >= crate::event_json::LARGE_EVENT);
        let parsed = parse_body(&body, None).unwrap();
        let (json, pruned) = &parsed[0];
        assert!(pruned.is_none());
        assert!(!json.is_parsed(), "a large body is not parsed into a value");
        assert_eq!(json.text().get(), serde_json::to_string(&value).unwrap());
        assert_eq!(**json, value);
    }

    #[test]
    fn a_large_body_that_is_not_json_is_refused_as_before() {
        let (mut body, _) = large_pretty_report();
        // Two numbers side by side: compacting first would have joined them into one.
        let at = body.windows(4).position(|w| w == b"\"n\":").unwrap() + 5;
        body.splice(at..at, b"1 ".iter().copied());
        assert!(matches!(
            parse_body(&body, None),
            Err(PayloadError::Syntax { .. })
        ));
        let mut deep = b"{\"a\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 200));
        deep.extend(std::iter::repeat_n(b']', 200));
        deep.extend(b",\"pad\":\"");
        deep.resize(crate::event_json::LARGE_EVENT + 10, b'x');
        deep.extend(b"\"}");
        assert!(
            parse_body(&deep, None).is_err(),
            "nested past the parser's limit"
        );
    }

    #[test]
    fn a_one_line_object_is_pruned_for_routing_and_kept_as_text() {
        let fields = Arc::new(crate::router::fields::fields_of(&[Arc::from(vec![
            "a".to_string(),
        ])]));
        let parsed = parse_body(br#" {"a":1,"b":[2]} "#, Some(fields.clone())).unwrap();
        let (json, pruned) = &parsed[0];
        assert_eq!(json.text().get(), r#"{"a":1,"b":[2]}"#);
        let pruned = pruned.as_ref().unwrap().for_fields(Some(&fields));
        assert_eq!(pruned, Some(&serde_json::json!({"a": 1})));
        assert_eq!(**json, serde_json::json!({"a": 1, "b": [2]}));
        // Batches and bodies over several lines are parsed whole; a bad body fails as before.
        for body in [&br#"[{"a":1}]"#[..], b"{\n\"a\":1}"] {
            assert!(
                parse_body(body, Some(fields.clone())).unwrap()[0]
                    .1
                    .is_none()
            );
        }
        assert_eq!(
            parse_body(b"{\"a\":}", Some(fields)).unwrap_err(),
            parse_payloads(b"{\"a\":}").unwrap_err()
        );
    }

    #[test]
    fn objects_and_batches_parse() {
        assert_eq!(parse_payloads(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(parse_payloads(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
    }

    #[test]
    fn bad_bodies_say_where() {
        let err = parse_payloads(b"{\n  \"a\": }").unwrap_err();
        assert!(
            matches!(err, PayloadError::Syntax { line: 2, .. }),
            "{err:?}"
        );
        assert_eq!(
            parse_payloads(b"42").unwrap_err(),
            PayloadError::NotAnObject("a number")
        );
        assert_eq!(
            parse_payloads(br#"[{"a":1}, 3]"#).unwrap_err(),
            PayloadError::BatchItem {
                index: 1,
                kind: "a number"
            }
        );
        assert_eq!(parse_payloads(b"[]").unwrap_err(), PayloadError::EmptyBatch);
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = Event::new(serde_json::json!({}), IntakeKind::Http, None);
        let b = Event::new(serde_json::json!({}), IntakeKind::Http, None);
        assert!(a.id < b.id);
    }
}

//! An event as JSON, held as the parsed value, as compact text, or both: each is made from the
//! other the first time it is asked for.
//!
//! The router reads the value; the outbox record and the forensic log write the text. So an event
//! is serialized once however many deliveries it makes, and an event read back from the outbox
//! stays text (checked, not parsed) until an action reads a field of it.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Holds at least one of `value` and `text` from construction on.
pub struct EventJson {
    value: OnceLock<Value>,
    text: OnceLock<Box<RawValue>>,
}

impl EventJson {
    pub fn new(value: Value) -> EventJson {
        EventJson {
            value: OnceLock::from(value),
            text: OnceLock::new(),
        }
    }

    /// An event parsed from `text`, which it keeps as its text when that is [one line](one_line),
    /// so it is not serialized again for the outbox and the forensic log.
    pub fn parsed(value: Value, text: &[u8]) -> EventJson {
        let kept = one_line(text).and_then(|text| checked(text).ok());
        EventJson {
            value: OnceLock::from(value),
            text: kept.map_or_else(OnceLock::new, OnceLock::from),
        }
    }

    /// An event from JSON text, which is checked here (not parsed into a value).
    pub fn from_text(bytes: &[u8]) -> Result<EventJson, serde_json::Error> {
        Ok(EventJson {
            value: OnceLock::new(),
            text: OnceLock::from(checked(bytes)?),
        })
    }

    /// Whether the event has been parsed into a value (else it is text only, so far).
    pub fn is_parsed(&self) -> bool {
        self.value.get().is_some()
    }

    /// Runs `f` on the event's value: the parsed one, or, for a text-only event, one parsed for
    /// this call and dropped after it (a large event read back to render its body must not keep
    /// its whole tree in memory while its action runs).
    pub fn with_value<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        match (self.value.get(), self.text.get()) {
            (None, Some(text)) => match serde_json::from_str(text.get()) {
                Ok(value) => f(&value),
                Err(_) => f(self.value()),
            },
            _ => f(self.value()),
        }
    }

    /// The event, parsed from its text on first use.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let text = self.text.get().map_or("null", |text| text.get());
            serde_json::from_str(text).unwrap_or_else(|error| {
                // Checked JSON fails to parse only past serde_json's nesting limit.
                tracing::error!(%error, "An event read back from the outbox cannot be parsed; actions see null.");
                Value::Null
            })
        })
    }

    /// False only when the event certainly has no member named `key` at any depth; answered from
    /// the text, without parsing it, when the event has not been parsed (a key can hide from a
    /// text search only behind a `\u` escape).
    pub fn may_have(&self, key: &str) -> bool {
        match (self.value.get(), self.text.get()) {
            (None, Some(text)) => {
                let text = text.get();
                text.contains("\\u") || text.contains(&format!("\"{key}\""))
            }
            _ => true,
        }
    }

    /// The event as compact JSON text, serialized from its value on first use.
    pub fn text(&self) -> &RawValue {
        self.text.get_or_init(|| {
            serde_json::value::to_raw_value(self.value()).unwrap_or_else(|error| {
                // A `Value` always serializes; this keeps the record well-formed regardless.
                tracing::error!(%error, "An event cannot be serialized; it is recorded as null.");
                RawValue::NULL.to_owned()
            })
        })
    }
}

/// `body` without the whitespace around it, when it is one line: only such text is kept as an
/// event's (a forensic log line holds it). A line break can only be whitespace between tokens,
/// since strings escape theirs.
pub fn one_line(body: &[u8]) -> Option<&[u8]> {
    let text = body.trim_ascii();
    (!text.contains(&b'\n') && !text.contains(&b'\r')).then_some(text)
}

/// Bodies this large are events kept as text (checked, compacted, not parsed into a value) until
/// something needs their value: the router converts them to Rego straight from the text, so a
/// large report is not held as two trees at once.
pub const LARGE_EVENT: usize = 1 << 20;

/// `json` without the whitespace between its tokens (what is inside strings is kept): valid JSON
/// text on one line. Borrowed when it is one line already.
pub fn compact(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if let Some(line) = one_line(json) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            out.push(byte);
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `bytes` as JSON text, checked (not parsed into a value).
fn checked(bytes: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    Ok(serde_json::from_slice::<&RawValue>(bytes)?.to_owned())
}

impl Default for EventJson {
    fn default() -> EventJson {
        EventJson::new(Value::Null)
    }
}

impl Deref for EventJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl From<Value> for EventJson {
    fn from(value: Value) -> EventJson {
        EventJson::new(value)
    }
}

impl PartialEq for EventJson {
    fn eq(&self, other: &EventJson) -> bool {
        self.value() == other.value()
    }
}

impl fmt::Debug for EventJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text.get() {
            Some(text) => f.write_str(text.get()),
            None => fmt::Debug::fmt(self.value(), f),
        }
    }
}

impl Serialize for EventJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value.get() {
            Some(value) => value.serialize(serializer),
            None => self.text().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EventJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventJson, D::Error> {
        Value::deserialize(deserializer).map(EventJson::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_value_are_made_from_each_other() {
        let event = EventJson::new(json!({"b": 1, "a": [true, "x\"y"]}));
        assert_eq!(event.text().get(), r#"{"b":1,"a":[true,"x\"y"]}"#);

        let read = EventJson::from_text(event.text().get().as_bytes()).unwrap();
        assert!(read.value.get().is_none(), "reading back must not parse");
        assert_eq!(read.text().get(), event.text().get());
        assert_eq!(read["a"][1], "x\"y");
        assert_eq!(read, event);
    }

    #[test]
    fn a_one_line_body_is_kept_as_the_text() {
        let body = b" {\"b\": 1, \"a\":\"x\\ny\"}\n";
        let value: Value = serde_json::from_slice(body).unwrap();
        let event = EventJson::parsed(value.clone(), body);
        assert_eq!(event.text().get(), r#"{"b": 1, "a":"x\ny"}"#);
        assert_eq!(*event, value);
        // Over several lines it is serialized, so a forensic log line stays one line.
        let body = b"{\n  \"b\": 1\n}";
        let event = EventJson::parsed(serde_json::from_slice(body).unwrap(), body);
        assert_eq!(event.text().get(), r#"{"b":1}"#);
    }

    #[test]
    fn a_text_without_the_key_is_answered_unparsed() {
        let read = |text: &str| EventJson::from_text(text.as_bytes()).unwrap();
        assert!(!read(r#"{"owners":["a"],"x":"application_scope"}"#).may_have("owners_x"));
        assert!(read(r#"{"a":{"owners":1}}"#).may_have("owners"));
        // An escaped key is only found by parsing.
        let escaped = read(r#"{"\u006fwners":1}"#);
        assert!(escaped.may_have("owners") && escaped.get("owners").is_some());
        assert!(EventJson::new(json!({})).may_have("owners"));
        let unparsed = read(r#"{"x":1}"#);
        assert!(!unparsed.may_have("owners") && unparsed.value.get().is_none());
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!(EventJson::from_text(b"{\"a\":").is_err());
        assert!(EventJson::from_text(b"{} trailing").is_err());
        assert!(EventJson::from_text(&[0xFF]).is_err());
    }

    #[test]
    fn serializes_as_the_event() {
        let from_value = EventJson::new(json!({"k": [1, 2]}));
        let from_text = EventJson::from_text(br#"{"k":[1,2]}"#).unwrap();
        for event in [from_value, from_text] {
            assert_eq!(serde_json::to_string(&event).unwrap(), r#"{"k":[1,2]}"#);
            assert_eq!(serde_json::to_value(&event).unwrap(), json!({"k": [1, 2]}));
        }
        let back: EventJson = serde_json::from_str(r#"{"k":[1,2]}"#).unwrap();
        assert_eq!(back["k"][0], 1);
    }
}

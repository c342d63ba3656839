//! Escaping event data for where an action puts it: `event.input.<path>` placeholders in a
//! body template (JSON, form or XML, by the body's content type), and environment variables,
//! which cannot hold a NUL byte.
//!
//! Invariant: a value taken from an event can only ever become data where it lands, never
//! structure (an extra JSON key, form field or XML element).

use std::borrow::Cow;
use std::convert::Infallible;

use crate::message::{Message, plain_text};

/// How placeholder values are escaped in a body template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEscape {
    /// Plain text: values go in as they are.
    Text,
    /// Inside a JSON string literal, a value is escaped as string content; elsewhere it is a
    /// JSON value (a string quoted, a missing value `null`).
    Json,
    /// `application/x-www-form-urlencoded`: values are percent-encoded.
    Form,
    /// XML or HTML: `& < > " '` become entities.
    Xml,
}

impl BodyEscape {
    /// From the request's `Content-Type`, else from what the template looks like (`{` or `[`
    /// first is JSON, `<` is XML).
    pub fn for_body(content_type: Option<&str>, template: &str) -> BodyEscape {
        if let Some(content_type) = content_type {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            return if essence.ends_with("json") {
                BodyEscape::Json
            } else if essence == "application/x-www-form-urlencoded" {
                BodyEscape::Form
            } else if essence.ends_with("xml") || essence == "text/html" {
                BodyEscape::Xml
            } else {
                BodyEscape::Text
            };
        }
        match template.trim_start().chars().next() {
            Some('{' | '[') => BodyEscape::Json,
            Some('<') => BodyEscape::Xml,
            _ => BodyEscape::Text,
        }
    }

    /// The template with every placeholder replaced by its escaped value.
    pub fn substitute(self, message: &Message, template: &str) -> String {
        let mut json = JsonScan::default();
        let result = message.substitute_with(template, |out, value| {
            match self {
                BodyEscape::Text => out.push_str(&plain_text(value)),
                BodyEscape::Form => form_encode(out, &plain_text(value)),
                BodyEscape::Xml => xml_escape(out, &plain_text(value)),
                BodyEscape::Json => {
                    json.advance(out);
                    if json.in_string {
                        json_string_content(out, &plain_text(value));
                    } else {
                        match value {
                            Some(value) => out.push_str(&value.to_string()),
                            None => out.push_str("null"),
                        }
                    }
                    // What was inserted is balanced (a whole value, or escaped string content):
                    // it leaves the scan where it was.
                    json.scanned = out.len();
                }
            }
            Ok::<(), Infallible>(())
        });
        match result {
            Ok(body) => body,
            Err(never) => match never {},
        }
    }
}

/// An environment variable's value: a NUL byte, which the environment cannot carry, becomes
/// the six characters `\u0000` (its JSON escape, so a JSON body stays JSON with the same value).
pub fn env_value(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Where a JSON template's output stands: inside a string literal or not.
#[derive(Default)]
struct JsonScan {
    scanned: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonScan {
    /// Reads the output written since the last call (`"` and `\` are ASCII, so bytes will do).
    fn advance(&mut self, out: &str) {
        for &byte in out.as_bytes().get(self.scanned..).unwrap_or_default() {
            if !self.in_string {
                self.in_string = byte == b'"';
            } else if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
        }
        self.scanned = out.len();
    }
}

/// `text` escaped as the content of a JSON string (without the quotes).
fn json_string_content(out: &mut String, text: &str) {
    let quoted = serde_json::Value::String(text.to_string()).to_string();
    out.push_str(
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or_default(),
    );
}

fn form_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
}

fn xml_escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::event_json::EventJson;

    /// Values an attacker would put in an event to change a body's structure.
    const HOSTILE: &[&str] = &[
        r#"", "admin": true, "x": ""#,
        "back\\slash\\",
        "\\",
        "quote\"",
        "new\nline\r\ttab",
        "\u{0}nul\u{1}\u{1f}\u{7f}",
        "}]",
        "é ✓ \u{2028}",
    ];

    fn message(event: serde_json::Value) -> Message {
        Message {
            body: "plain text".into(),
            event: Arc::new(EventJson::from(event)),
            ..Message::default()
        }
    }

    #[test]
    fn json_bodies_keep_their_keys_whatever_the_values() {
        let template = r#"{"user": "event.input.user", "id": event.input.id, "missing": event.input.nope, "note": "by event.input.user at event.input.id"}"#;
        for hostile in HOSTILE {
            let m = message(json!({ "user": hostile, "id": hostile }));
            let body = BodyEscape::Json.substitute(&m, template);
            let parsed: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{hostile:?} broke the body {body:?}: {e}"));
            assert_eq!(
                parsed,
                json!({
                    "user": hostile,
                    "id": hostile,
                    "missing": null,
                    "note": format!("by {hostile} at {hostile}"),
                }),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn json_values_outside_strings_keep_their_type() {
        let m = message(json!({ "n": 3, "ok": true, "list": [1, "a\""], "obj": {"k": "v"} }));
        let template = r#"[event.input.n, event.input.ok, event.input.list, event.input.obj, "event.input.obj"]"#;
        let body = BodyEscape::Json.substitute(&m, template);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!([3, true, [1, "a\""], {"k": "v"}, r#"{"k":"v"}"#])
        );
    }

    #[test]
    fn form_and_xml_values_cannot_add_fields_or_elements() {
        let m = message(json!({ "v": "a b&admin=true%<x/>'\"é" }));
        assert_eq!(
            BodyEscape::Form.substitute(&m, "user=event.input.v&x=1"),
            "user=a+b%26admin%3Dtrue%25%3Cx%2F%3E%27%22%C3%A9&x=1"
        );
        assert_eq!(
            BodyEscape::Xml.substitute(&m, "<user>event.input.v</user>"),
            "<user>a b&amp;admin=true%&lt;x/&gt;&apos;&quot;é</user>"
        );
        assert_eq!(
            BodyEscape::Text.substitute(&m, "user=event.input.v"),
            "user=a b&admin=true%<x/>'\"é"
        );
    }

    #[test]
    fn the_escape_follows_the_content_type_then_the_template() {
        let check = |content_type: Option<&str>, template: &str, expected: BodyEscape| {
            assert_eq!(
                BodyEscape::for_body(content_type, template),
                expected,
                "{content_type:?} {template:?}"
            );
        };
        check(Some("application/json"), "x", BodyEscape::Json);
        check(
            Some("Application/JSON; charset=utf-8"),
            "x",
            BodyEscape::Json,
        );
        check(Some("application/vnd.api+json"), "x", BodyEscape::Json);
        check(
            Some("application/x-www-form-urlencoded"),
            "{",
            BodyEscape::Form,
        );
        check(Some("text/xml"), "{", BodyEscape::Xml);
        check(Some("application/soap+xml"), "{", BodyEscape::Xml);
        check(Some("text/plain"), "{", BodyEscape::Text);
        check(None, "  {\"a\": 1}", BodyEscape::Json);
        check(None, "\n[1]", BodyEscape::Json);
        check(None, "<a/>", BodyEscape::Xml);
        check(None, "image=event.input.image", BodyEscape::Text);
    }

    #[test]
    fn env_values_carry_nul_as_its_json_escape() {
        assert_eq!(env_value("plain"), "plain");
        assert!(matches!(env_value("plain"), Cow::Borrowed(_)));
        assert_eq!(env_value("a\0b\0"), "a\\u0000b\\u0000");
        let body = serde_json::to_string(&json!({"k": "a\0b"})).unwrap();
        assert_eq!(env_value(&body), body, "a JSON body never holds a raw NUL");
    }
}

//! What a template renders and every action receives: title, body, link and the event.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event_json::EventJson;

/// A rendered message, as Postee's templates define it (`title`, `result`, `url`, `result_*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// The route that rendered it.
    pub route: String,
    /// The id of the event it was rendered from (for aggregates: the first event's).
    pub event_id: String,
    pub title: String,
    /// The template's `result` (Postee's "description"): a string, or compact JSON for any other value.
    pub body: String,
    /// The body is the built-in raw-JSON template's rendering of `event`, not made yet: a route
    /// whose actions never read the body (the forensic `log`) skips that render, and the outbox
    /// makes it ([`Message::fill_body`]) before an action that reads it runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_pending: bool,
    pub url: Option<String>,
    /// `result_date`, `result_severity`, … keyed without the `result_` prefix.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Owners of the event's application scope (`<%application_scope_owner%>`).
    pub owners: Vec<String>,
    /// The event the message was rendered from.
    pub event: Arc<EventJson>,
}

impl Message {
    /// Renders a [pending](Message::body_pending) body.
    pub fn fill_body(&mut self) -> Result<(), String> {
        if self.body_pending {
            self.body = self
                .event
                .with_value(crate::router::template::raw_json_body)?;
            self.body_pending = false;
        }
        Ok(())
    }

    /// A message of which only the event id is kept (for the logs), standing in for one whose
    /// content waits on disk (the outbox reads it back when it is needed).
    pub fn placeholder(event_id: String) -> Message {
        Message {
            event_id,
            ..Message::default()
        }
    }

    /// The body parsed as JSON, when it is JSON (templates such as `raw-json` or Slack blocks).
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn field_str(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Resolves `event.input.<path>` (Postee's placeholder syntax) against the body when it is JSON,
    /// otherwise against the event. Returns the whole body when the path is empty.
    pub fn lookup_input(&self, path: &str) -> Option<serde_json::Value> {
        let body = self.body_json().filter(|b| b.is_object() || b.is_array());
        let root = body.as_ref().unwrap_or(&self.event);
        if path.is_empty() {
            return Some(root.clone());
        }
        lookup_path(root, path).cloned()
    }

    /// Replaces every `event.input.<path>` in `text` with the value found (strings unquoted).
    pub fn substitute(&self, text: &str) -> String {
        match self.substitute_checked(text, |_| Ok::<(), std::convert::Infallible>(())) {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }

    /// Like [`Message::substitute`], but every value taken from the event must pass `check`
    /// before it is inserted (e.g. a Kubernetes label value inside a label selector).
    pub fn substitute_checked<E>(
        &self,
        text: &str,
        mut check: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<String, E> {
        self.substitute_with(text, |out, value| {
            let value = plain_text(value);
            check(&value)?;
            out.push_str(&value);
            Ok(())
        })
    }

    /// Replaces every `event.input.<path>` in `text` with what `insert` appends to the output
    /// so far for the value found (`None` when there is none): the way for a caller to escape
    /// values for where they land (a JSON body, a form, a URL).
    pub fn substitute_with<E>(
        &self,
        text: &str,
        mut insert: impl FnMut(&mut String, Option<serde_json::Value>) -> Result<(), E>,
    ) -> Result<String, E> {
        const MARK: &str = "event.input";
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(MARK) {
            out.push_str(&rest[..at]);
            let after = &rest[at + MARK.len()..];
            let path_len = if let Some(stripped) = after.strip_prefix('.') {
                1 + stripped
                    .find(|c: char| {
                        !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
                    })
                    .unwrap_or(stripped.len())
            } else {
                0
            };
            let path = after[..path_len]
                .trim_start_matches('.')
                .trim_end_matches('.');
            insert(&mut out, self.lookup_input(path))?;
            rest = &after[path_len..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A placeholder's value as plain text: strings unquoted, null or missing empty, anything
/// else as compact JSON.
pub fn plain_text(value: Option<serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Follows a dot path (`a.b.0.c`, `a.b[0].c`); arrays also accept an index segment.
pub fn lookup_path<'a>(root: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut current = root;
    for segment in path
        .split('.')
        .flat_map(|s| s.split(['[', ']']))
        .filter(|s| !s.is_empty())
    {
        current = match current {
            serde_json::Value::Object(map) => map.get(segment)?,
            serde_json::Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: &str, event: serde_json::Value) -> Message {
        Message {
            route: "r".into(),
            event_id: "e".into(),
            title: "t".into(),
            body: body.into(),
            body_pending: false,
            url: None,
            fields: BTreeMap::new(),
            owners: vec![],
            event: Arc::new(event.into()),
        }
    }

    #[test]
    fn a_pending_body_is_the_raw_json_rendering_of_the_event() {
        let event = json!({"b": [1, {"d": 2, "c": 3}], "a": "x"});
        let mut pending = message("", event.clone());
        pending.body_pending = true;
        pending.fill_body().unwrap();
        assert!(!pending.body_pending);
        let catalog = crate::router::template::Catalog::load(None).unwrap();
        let mut raw = crate::router::template::Template::compile(
            "raw",
            crate::router::template::TemplateText::Package("hooker.rawmessage.json"),
            &catalog,
        )
        .unwrap();
        let rendered = raw
            .render(|| unreachable!(), "r", "e", Arc::new(event.into()))
            .unwrap();
        assert_eq!(pending.body, rendered.body);
        // A body already made is left alone.
        let before = pending.body.clone();
        pending.fill_body().unwrap();
        assert_eq!(pending.body, before);
    }

    #[test]
    fn substitution_reads_json_body_first() {
        let m = message(r#"{"image":"alpine:3.10","n":3}"#, json!({"image":"other"}));
        assert_eq!(
            m.substitute("img=event.input.image n=event.input.n!"),
            "img=alpine:3.10 n=3!"
        );
    }

    #[test]
    fn substitution_falls_back_to_the_event() {
        let m = message(
            "plain text",
            json!({"kubernetes":{"podName":"p1"},"args":[{"value":"x"}]}),
        );
        assert_eq!(m.substitute("pod=event.input.kubernetes.podName"), "pod=p1");
        assert_eq!(m.substitute("a=event.input.args[0].value"), "a=x");
        assert_eq!(m.substitute("missing=event.input.nope;"), "missing=;");
    }
}

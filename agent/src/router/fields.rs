//! The input fields the running routes read, and parsing an event body into only those.
//!
//! When every route is decided natively (`native.rs`), routing reads just the paths the routes'
//! checks name: `input.metadata.Properties.signatureID`, the collection of a `some a in
//! input.args`. An intake that receives one JSON object on one line parses it with
//! [`Fields::prune`]: those paths are built as a JSON value, every other member is checked as
//! JSON and skipped without being allocated, and the body itself is kept as the event's text
//! (see `EventJson`). The event's full value is parsed from that text only if something else
//! reads it: Rego, when a native check is unsure; a template that renders the event; a dedup
//! key. On a Tracee detection that spares most of the parse and of freeing the parsed tree.
//!
//! - **Invariant:** a pruned value holds, at every path [`Fields::of`] collected, exactly what
//!   the full value holds there (or nothing where the full value has nothing), so a native
//!   decision on it is the decision on the event. Duplicate keys resolve as in the full parse
//!   (the last wins).
//! - **Invariant:** the router uses a pruned value only with the routes whose fields made it
//!   ([`Pruned::for_fields`]); after a reload it reads the full value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::pipeline::Pipeline;

/// A tree of object keys: the paths routing reads.
#[derive(Debug, Default, PartialEq)]
pub struct Fields {
    /// The whole value here is read (a checked path's end, a `some` collection).
    whole: bool,
    children: HashMap<String, Fields>,
}

/// An event's value with only the routing fields, and the fields that made it.
#[derive(Debug, Clone)]
pub struct Pruned {
    fields: Arc<Fields>,
    value: Value,
}

impl Pruned {
    /// The pruned value, when it was made for `fields` (the running routes'); otherwise the
    /// router must read the full value.
    pub fn for_fields(&self, fields: Option<&Arc<Fields>>) -> Option<&Value> {
        fields
            .is_some_and(|fields| Arc::ptr_eq(fields, &self.fields))
            .then_some(&self.value)
    }
}

impl Fields {
    /// The fields `pipeline`'s routes read, or None when a route is not decided natively (Rego
    /// then sees the whole event).
    pub fn of(pipeline: &Pipeline) -> Option<Fields> {
        let mut fields = Fields::default();
        for route in &pipeline.routes {
            for path in route.rule.native_paths()? {
                fields.add(path);
            }
        }
        for path in pipeline.index.paths() {
            fields.add(path);
        }
        Some(fields)
    }

    /// The fields the Rego routes of `pipeline` read, or None when one may read the whole event
    /// (see `input_paths.rs`).
    pub fn of_rego(pipeline: &Pipeline) -> Option<Fields> {
        let mut fields = Fields::default();
        for route in &pipeline.routes {
            for path in route.rule.rego_paths()? {
                fields.add(path);
            }
        }
        Some(fields)
    }

    /// `value` as a Rego value holding only these fields (the whole value at each path's end,
    /// and wherever a path meets something other than an object).
    pub fn to_rego(&self, value: &Value) -> regorus::Value {
        let map = match value {
            Value::Object(map) if !self.whole => map,
            _ => return super::rego::to_rego(value),
        };
        let mut out = regorus::Value::new_object();
        if let Ok(object) = out.as_object_mut() {
            for (key, fields) in &self.children {
                if let Some(member) = map.get(key) {
                    object.insert(regorus::Value::from(key.as_str()), fields.to_rego(member));
                }
            }
        }
        out
    }

    /// Fields from paths, without a pipeline (the property tests make arbitrary ones).
    #[doc(hidden)]
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a [String]>) -> Fields {
        let mut fields = Fields::default();
        for path in paths {
            fields.add(path);
        }
        fields
    }

    fn add(&mut self, path: &[String]) {
        let mut node = self;
        for key in path {
            if node.whole {
                return;
            }
            node = node.children.entry(key.clone()).or_default();
        }
        node.whole = true;
        node.children.clear();
    }

    /// Parses one JSON object from `body` (nothing but whitespace after it), keeping only these
    /// fields. The whole body is checked as JSON.
    pub fn prune(self: &Arc<Self>, body: &[u8]) -> Result<Pruned, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let value = Seed(self).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(Pruned {
            fields: self.clone(),
            value,
        })
    }
}

/// Deserializes the value at one node of [`Fields`].
struct Seed<'a>(&'a Fields);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            return serde::Deserialize::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

/// An object keeps the members on a path; any other value is kept whole (a path through it is
/// undefined either way, and it is small next to the objects being pruned).
impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.0.children.get(&*key) {
                Some(child) => {
                    let value = map.next_value_seed(Seed(child))?;
                    out.insert(key.into_owned(), value);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Checks `text` as one JSON value, with serde_json's nesting limit, without building it.
pub fn check(text: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    Skip.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// A value skipped: checked as JSON without being built. Not `IgnoredAny`, which serde_json skips
/// without its nesting limit: a body the full parse refuses (nested over 128 deep) must be
/// refused here too, or its event would be stored and then unreadable.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }

            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Builds fields from paths (for tests elsewhere in the router).
#[cfg(test)]
pub(crate) fn fields_of<'a>(paths: impl IntoIterator<Item = &'a super::prefilter::Path>) -> Fields {
    let mut fields = Fields::default();
    for path in paths {
        fields.add(path);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::native::Native;
    use crate::router::prefilter::{Path, Truth};
    use serde_json::json;

    fn path(keys: &[&str]) -> Path {
        keys.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .into()
    }

    fn prune(fields: &Arc<Fields>, body: &str) -> Value {
        fields.prune(body.as_bytes()).unwrap().value
    }

    #[test]
    fn keeps_the_paths_and_nothing_else() {
        let fields = Arc::new(fields_of(&[
            path(&["metadata", "Properties", "signatureID"]),
            path(&["args"]),
            path(&["podNamespace"]),
        ]));
        let body = r#"{"eventName":"x","metadata":{"Description":"d","Properties":{"signatureID":"TRC-1","Severity":3}},
            "args":[{"name":"pathname","value":"/etc/x"}],"podNamespace":"prod","big":{"a":[1,2,{"b":"c"}]}}"#;
        assert_eq!(
            prune(&fields, body),
            json!({"metadata":{"Properties":{"signatureID":"TRC-1"}},
                   "args":[{"name":"pathname","value":"/etc/x"}],"podNamespace":"prod"})
        );
    }

    #[test]
    fn resolves_like_the_full_parse() {
        let fields = Arc::new(fields_of(&[path(&["a", "b"]), path(&["sig"])]));
        // The last duplicate wins; an escaped key is the same key; a scalar or an array where
        // an object is expected is kept whole.
        assert_eq!(
            prune(&fields, r#"{"a":{"b":1},"a":{"b":2,"c":3},"si\u0067":"x"}"#),
            json!({"a":{"b":2},"sig":"x"})
        );
        assert_eq!(prune(&fields, r#"{"a":[{"b":1}]}"#), json!({"a":[{"b":1}]}));
        assert_eq!(prune(&fields, r#"{"a":"b"}"#), json!({"a":"b"}));
        // A path under a whole value adds nothing.
        let mut nested = fields_of(&[path(&["a"])]);
        nested.add(&path(&["a", "b"]));
        assert_eq!(nested, fields_of(&[path(&["a"])]));
    }

    #[test]
    fn a_pruned_value_serves_only_the_fields_that_made_it() {
        let fields = Arc::new(fields_of(&[path(&["a"])]));
        let pruned = fields.prune(br#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(pruned.for_fields(Some(&fields)), Some(&json!({"a": 1})));
        // A reload makes new fields, even equal ones.
        let reloaded = Arc::new(fields_of(&[path(&["a"])]));
        assert_eq!(pruned.for_fields(Some(&reloaded)), None);
        assert_eq!(pruned.for_fields(None), None);
    }

    #[test]
    fn checks_the_whole_body() {
        let fields = Arc::new(fields_of(&[path(&["a"])]));
        for bad in [
            r#"{"a":1,"skipped":[1,}"#,
            r#"{"a":1} trailing"#,
            r#"{"a":1,"b":"\x"}"#,
            "{\"a\":1,\"b\":\"\u{1}\"}",
        ] {
            assert!(fields.prune(bad.as_bytes()).is_err(), "{bad}");
        }
        // Nesting the full parse refuses is refused in a skipped member too.
        let deep = |n: usize| format!("{{\"a\":1,\"x\":{}{}}}", "[".repeat(n), "]".repeat(n));
        for n in [100, 127, 128, 200] {
            let full = serde_json::from_str::<Value>(&deep(n)).is_ok();
            assert_eq!(fields.prune(deep(n).as_bytes()).is_ok(), full, "{n}");
        }
        assert!(fields.prune(deep(200).as_bytes()).is_err());
    }

    /// On every fixture and variations of it, the native decision on the pruned value is the
    /// decision on the full one.
    #[test]
    fn native_decisions_on_the_pruned_value_are_the_same() {
        // Each route alone: its own paths must suffice.
        let routes: Vec<(Native, Arc<Fields>)> = crate::router::native::tests::BODIES
            .iter()
            .map(|body| {
                let native = Native::parse(body).unwrap_or_else(|| panic!("not native: {body}"));
                let fields = Arc::new(fields_of(native.paths()));
                (native, fields)
            })
            .collect();
        let mut decided = 0;
        for event in crate::router::prefilter::tests::fixture_events() {
            let text = event.to_string();
            for (native, fields) in &routes {
                let full = native.decide(&event);
                assert_eq!(native.decide(&prune(fields, &text)), full, "{event}");
                decided += usize::from(full != Truth::Unknown);
            }
        }
        assert!(decided > 100, "{decided}");
    }
}

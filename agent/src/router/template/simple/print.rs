//! `result := input` printed straight from the event's JSON text: the compact JSON Rego makes of
//! the input (object keys sorted, Hooker's added keys merged into the top object), without
//! parsing the event into a JSON value first — the intake kept the event as text, and this is
//! the one thing the inline template reads of it.
//!
//! The text is read into a small tree of borrowed slices (one allocation per object or array,
//! none per string or number) and printed with keys sorted. Whatever could print differently
//! from the parsed value declines (None) and the caller prints from the value: a number that is
//! not a plain integer, an escaped string or key that does not decode, a duplicate key, nesting
//! past [`MAX_DEPTH`], text that is not exactly one JSON value.

use std::borrow::Cow;

use super::{AddedKeys, RegoText};

/// serde_json's own nesting limit: deeper text never became an event.
const MAX_DEPTH: usize = 128;

/// The input's compact JSON, keys sorted, `added` merged into the top object (keys the event
/// has win); None when only the parsed value can tell.
pub fn input_text(text: &str, added: &AddedKeys) -> Option<String> {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        text,
        at: 0,
    };
    let mut root = reader.value(0)?;
    reader.blank();
    if reader.at != reader.bytes.len() {
        return None;
    }
    if let Node::Object(entries) = &mut root {
        for (key, value) in added {
            if !entries.iter().any(|(k, _)| k.as_ref() == key.as_str()) {
                entries.push((Cow::Borrowed(key.as_str()), Node::Added(value)));
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 128);
    print(&mut root, &mut out)?;
    Some(out)
}

enum Node<'a> {
    /// `true`, `false`, `null` or an integer, printed as written.
    Plain(&'a str),
    /// A string: the text between its quotes when it has no escape, else the decoded string.
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    /// One of the keys Hooker adds, printed from its value.
    Added(&'a serde_json::Value),
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn blank(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.blank();
        let found = self.bytes.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.blank();
        match *self.bytes.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut entries = Vec::new();
                if self.eat(b'}') {
                    return Some(Node::Object(entries));
                }
                loop {
                    self.blank();
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    entries.push((key, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Some(Node::Object(entries));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Node::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Node::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Node::Str),
            _ => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.at += 1;
                }
                let word = &self.text[start..self.at];
                let integer = word.parse::<i64>().is_ok() || word.parse::<u64>().is_ok();
                // `-0` is the integer 0, printed "0"; JSON numbers have no `+` nor leading zero.
                let digits = word.strip_prefix('-').unwrap_or(word);
                let plain = matches!(word, "true" | "false" | "null")
                    || (integer
                        && word != "-0"
                        && !word.starts_with('+')
                        && !(digits.len() > 1 && digits.starts_with('0')));
                plain.then_some(Node::Plain(word))
            }
        }
    }

    /// A string at the cursor: borrowed when it has no escape, decoded otherwise.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            match *self.bytes.get(at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    at += 2;
                }
                byte if byte < 0x20 => return None,
                _ => at += 1,
            }
        }
        self.at = at + 1;
        if escaped {
            serde_json::from_str::<String>(&self.text[start - 1..=at])
                .ok()
                .map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&self.text[start..at]))
        }
    }
}

fn print(node: &mut Node<'_>, out: &mut String) -> Option<()> {
    match node {
        Node::Plain(word) => out.push_str(word),
        Node::Str(text) => print_str(text, out),
        Node::Added(value) => out.push_str(&serde_json::to_string(&RegoText(value, None)).ok()?),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter_mut().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                print(item, out)?;
            }
            out.push(']');
        }
        Node::Object(entries) => {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            if entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                return None;
            }
            out.push('{');
            for (i, (key, value)) in entries.iter_mut().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                print_str(key, out);
                out.push(':');
                print(value, out)?;
            }
            out.push('}');
        }
    }
    Some(())
}

/// A string as serde_json writes it.
fn print_str(text: &str, out: &mut String) {
    let plain = !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else if let Ok(escaped) = serde_json::to_string(text) {
        out.push_str(&escaped);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

    use super::*;

    fn added() -> AddedKeys {
        let mut added = AddedKeys::new();
        added.insert("postee".into(), json!({"AquaServer": "https://aqua/#/"}));
        added.insert("hooker".into(), json!({"node": "n-1"}));
        added
    }

    /// What the parsed value prints (the reference).
    fn from_value(text: &str, added: &AddedKeys) -> Option<String> {
        let value: Json = serde_json::from_str(text).ok()?;
        serde_json::to_string(&RegoText(&value, Some(added))).ok()
    }

    /// Printed from the text, it is what the parsed value prints, or it declines.
    fn check(text: &str) -> bool {
        let added = added();
        match input_text(text, &added) {
            Some(ours) => {
                assert_eq!(Some(ours), from_value(text, &added), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn prints_what_the_parsed_value_prints_on_every_fixture() {
        for event in crate::router::prefilter::tests::fixture_events() {
            let compact = event.to_string();
            let pretty = serde_json::to_string_pretty(&event).unwrap();
            let has_float = compact.contains('.') && from_value(&compact, &added()).is_none();
            if !has_float {
                assert!(check(&compact), "{compact}");
                assert!(check(&pretty), "{pretty}");
            }
        }
    }

    #[test]
    fn escapes_keys_numbers_and_shapes_print_as_the_value_does() {
        for text in [
            r#"{"b":1,"a":{"z":[1,{"y":null,"x":true}],"é":"\u00e9\/\"\n\t\u0001"}}"#,
            r#"{"postee":"own","k":"\ud83d\ude00"}"#,
            r#"{"n":18446744073709551615,"m":-9223372036854775808,"zero":0}"#,
            r#" [1, "a", {"b": 2}] "#,
            r#""just a string""#,
            r#"{}"#,
            r#"{"a\u0062":1,"aa":2}"#,
        ] {
            assert!(check(text), "{text}");
        }
    }

    #[test]
    fn declines_what_only_the_value_can_tell() {
        for text in [
            r#"{"f":1.0}"#,
            r#"{"f":1e3}"#,
            r#"{"n":-0}"#,
            r#"{"n":18446744073709551616}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            assert_eq!(input_text(text, &added()), None, "{text}");
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(input_text(&deep, &added()), None);
    }

    fn json_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            "\\PC{0,6}".prop_map(Json::String),
            "[\\x00-\\x1f\"\\\\/a\u{e9}\u{1F600}]{0,4}".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::vec(("[a-c\\PC]{0,3}", inner), 0..6)
                    .prop_map(|entries| Json::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_prints_as_its_value(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            prop_assert!(check(&text), "declined {}", text);
        }
    }
}

//! The YAML document as written, with the line of every item and key, before any meaning is given.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

/// One list item of `routes`, `templates` or `actions`: its keys in file order, each with its line.
#[derive(Debug, Clone, Default)]
pub struct RawItem {
    pub line: Option<u64>,
    pub entries: Vec<(String, serde_json::Value, u64)>,
}

impl RawItem {
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v)
    }

    pub fn line_of(&self, key: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, line)| *line)
            .or(self.line)
    }

    /// The item as a JSON object, for typed deserialization.
    pub fn to_object(&self) -> serde_json::Map<String, serde_json::Value> {
        self.entries
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The whole document: top-level keys plus the three lists, each item located.
#[derive(Debug, Default)]
pub struct RawDoc {
    pub top: Vec<(String, serde_json::Value, u64)>,
    pub routes: Vec<RawItem>,
    pub templates: Vec<RawItem>,
    pub actions: Vec<RawItem>,
    pub section_lines: Vec<(String, u64)>,
}

impl RawDoc {
    pub fn parse(text: &str) -> Result<RawDoc, String> {
        if text.trim().is_empty() {
            return Err("the file is empty".into());
        }
        if text.contains("- type: common") {
            return Err("this is a Postee V1 config (a list starting with `- type: common`); Hooker reads the V2 format \
                        with top-level `routes`, `templates` and `actions` (see README, \"Configuration\")"
                .into());
        }
        serde_saphyr::from_str::<RawDoc>(text).map_err(|err| err.to_string())
    }

    pub fn top(&self, key: &str) -> Option<(&serde_json::Value, u64)> {
        self.top
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v, *l))
    }
}

struct ItemMap(Vec<(String, serde_json::Value, u64)>);

impl<'de> Deserialize<'de> for ItemMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = ItemMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: Spanned<serde_json::Value> = map.next_value()?;
                    let line = value.referenced.line();
                    let mut value = value.value;
                    // Postee's loader (ghodss/yaml, then encoding/json) matches keys ignoring
                    // case: `Enable: true` is `enable`, and so are the plugins' keys.
                    let key = key.to_ascii_lowercase();
                    if key == "plugins" {
                        lowercase_keys(&mut value);
                    }
                    entries.push((key, value, line));
                }
                Ok(ItemMap(entries))
            }
        }
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// Lower-cases an object's own keys (not nested ones), as Postee's case-insensitive loader reads them.
fn lowercase_keys(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        let entries = std::mem::take(map);
        for (key, value) in entries {
            map.insert(key.to_ascii_lowercase(), value);
        }
    }
}

impl<'de> Deserialize<'de> for RawDoc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = RawDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping with `routes`, `templates` and `actions`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDoc, A::Error> {
                let mut doc = RawDoc::default();
                while let Some(key) = map.next_key::<String>()? {
                    // Case-insensitive, as Postee's loader: `Routes:` is `routes`.
                    let key = key.to_ascii_lowercase();
                    match key.as_str() {
                        "routes" | "templates" | "actions" => {
                            let list: Spanned<Option<Vec<Spanned<Option<ItemMap>>>>> =
                                map.next_value()?;
                            let items = list
                                .value
                                .unwrap_or_default()
                                .into_iter()
                                .map(|item| RawItem {
                                    line: Some(item.referenced.line()),
                                    entries: item.value.map(|m| m.0).unwrap_or_default(),
                                })
                                .collect();
                            doc.section_lines
                                .push((key.clone(), list.referenced.line()));
                            match key.as_str() {
                                "routes" => doc.routes = items,
                                "templates" => doc.templates = items,
                                _ => doc.actions = items,
                            }
                        }
                        _ => {
                            let value: Spanned<serde_json::Value> = map.next_value()?;
                            doc.top.push((key, value.value, value.referenced.line()));
                        }
                    }
                }
                Ok(doc)
            }
        }
        deserializer
            .deserialize_map(DocVisitor)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_lines() {
        let doc = RawDoc::parse(
            "name: x\nroutes:\n- name: r1\n  input: |\n    true\n  actions: [a]\n- name: r2\n",
        )
        .unwrap();
        assert_eq!(doc.routes.len(), 2);
        assert_eq!(doc.routes[0].line_of("actions"), Some(6));
        assert_eq!(doc.routes[1].line_of("name"), Some(7));
        assert_eq!(doc.top("name").map(|(_, l)| l), Some(1));
    }

    #[test]
    fn keys_match_ignoring_case_as_in_postee() {
        let doc = RawDoc::parse(
            "Routes:\n- Name: r1\n  Plugins:\n    Aggregate-Message-Number: 3\nActions:\n- name: a\n  Enable: true\n",
        )
        .unwrap();
        assert_eq!(doc.routes.len(), 1);
        assert_eq!(doc.routes[0].get("name"), Some(&serde_json::json!("r1")));
        assert_eq!(
            doc.routes[0].get("plugins"),
            Some(&serde_json::json!({"aggregate-message-number": 3}))
        );
        assert_eq!(doc.actions[0].get("enable"), Some(&serde_json::json!(true)));
    }

    #[test]
    fn yaml_errors_carry_a_position() {
        let err = RawDoc::parse("routes:\n  - name: [unclosed\n").unwrap_err();
        assert!(err.contains("line") || err.contains(':'), "{err}");
    }
}

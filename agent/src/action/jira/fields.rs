//! Pure pieces of the Jira action: createmeta parsing, custom-field values (`unknowns` and their
//! type suffixes), the finding label that prevents duplicate tickets, and text limits.

use serde::Deserialize;

/// Jira refuses a summary longer than this.
const SUMMARY_LIMIT: usize = 255;
/// Jira's text fields hold 32 767 characters; keep room for the truncation note.
const DESCRIPTION_LIMIT: usize = 32_000;
/// The custom-field type of the Jira Software sprint field.
pub const SPRINT_FIELD_TYPE: &str = "com.pyxis.greenhopper.jira:gh-sprint";

/// One field of the create screen, from createmeta.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMeta {
    /// `summary`, `priority`, `customfield_10010`, …
    pub key: String,
    /// The name users see and write in `unknowns`.
    pub name: String,
    pub schema: Schema,
    /// `allowedValues` (priorities, options, versions …), when Jira lists them.
    pub allowed: Vec<serde_json::Value>,
}

/// A field's `schema` in createmeta.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Schema {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub items: Option<String>,
    #[serde(default)]
    pub custom: Option<String>,
}

/// An issue type from createmeta.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueType {
    pub id: String,
    pub name: String,
    pub subtask: bool,
}

/// How an `unknowns` value is to be sent, from the documented name suffix or the field schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    /// No suffix: follow the field's schema.
    None,
    /// `-numeric-field`: a number.
    Numeric,
    /// `-multiple-value`: a list (comma-separated text or a YAML list).
    MultipleValue,
    /// `-multiple-line-text-field`: text as is.
    MultiLineText,
    /// `-date-time-picker`: a date-time string as is (`2014-04-11T12:14:26.880+0400`).
    DateTime,
    /// `-url` (Postee's docs also say `-field-url`): a URL string.
    Url,
}

const SUFFIXES: &[(&str, Suffix)] = &[
    ("-numeric-field", Suffix::Numeric),
    ("-multiple-value", Suffix::MultipleValue),
    ("-multiple-line-text-field", Suffix::MultiLineText),
    ("-date-time-picker", Suffix::DateTime),
    ("-field-url", Suffix::Url),
    ("-url", Suffix::Url),
];

/// Splits `mycustom-numeric-field` into (`mycustom`, [`Suffix::Numeric`]).
pub fn split_suffix(name: &str) -> (&str, Suffix) {
    for (suffix, kind) in SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix)
            && !base.is_empty()
        {
            return (base, *kind);
        }
    }
    (name, Suffix::None)
}

/// Finds a field by its name (case-insensitive) or its key (`customfield_10010`).
pub fn find_field<'a>(fields: &'a [FieldMeta], name: &str) -> Option<&'a FieldMeta> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .or_else(|| fields.iter().find(|f| f.key == name))
}

/// The JSON value Jira expects for `raw` in `field`, following `suffix` first, then the schema.
/// `cloud` decides how users are named (`accountId` on Cloud, `name` on Server/DC).
pub fn field_value(
    field: &FieldMeta,
    suffix: Suffix,
    raw: &serde_json::Value,
    cloud: bool,
) -> Result<serde_json::Value, String> {
    match suffix {
        Suffix::Numeric => number(&text_of(raw)),
        Suffix::MultiLineText | Suffix::DateTime | Suffix::Url => Ok(text_of(raw).into()),
        Suffix::MultipleValue => {
            let item_kind = match field.schema.kind.as_str() {
                "array" => field.schema.items.clone().unwrap_or_default(),
                _ => "string".to_string(),
            };
            list_of(raw)
                .iter()
                .map(|item| single(&item_kind, item, cloud))
                .collect::<Result<Vec<_>, _>>()
                .map(serde_json::Value::Array)
        }
        Suffix::None if field.schema.kind == "array" => {
            let item_kind = field.schema.items.clone().unwrap_or_default();
            list_of(raw)
                .iter()
                .map(|item| single(&item_kind, item, cloud))
                .collect::<Result<Vec<_>, _>>()
                .map(serde_json::Value::Array)
        }
        Suffix::None => single(&field.schema.kind, &text_of(raw), cloud),
    }
}

/// One value of schema type `kind`.
fn single(kind: &str, text: &str, cloud: bool) -> Result<serde_json::Value, String> {
    use serde_json::json;
    Ok(match kind {
        "number" => number(text)?,
        "option" | "option-with-child" => json!({ "value": text }),
        "priority" | "issuetype" | "version" | "component" | "resolution" | "securitylevel" => {
            json!({ "name": text })
        }
        "project" => json!({ "key": text }),
        "user" if cloud => json!({ "accountId": text }),
        "user" | "group" => json!({ "name": text }),
        _ => text.into(),
    })
}

fn number(text: &str) -> Result<serde_json::Value, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// A scalar as text (numbers and booleans as written).
pub fn text_of(raw: &serde_json::Value) -> String {
    match raw {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A YAML list, or comma-separated text, as trimmed non-empty items.
fn list_of(raw: &serde_json::Value) -> Vec<String> {
    match raw {
        serde_json::Value::Array(items) => items.iter().map(text_of).collect(),
        other => text_of(other)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// Issue types from either createmeta shape: the paged `/createmeta/{project}/issuetypes`
/// (`issueTypes`, `createMetaIssueType` or `values`) or one project of the old `createmeta`.
pub fn issue_types(reply: &serde_json::Value) -> Vec<IssueType> {
    let list = ["issueTypes", "createMetaIssueType", "values", "issuetypes"]
        .iter()
        .find_map(|key| reply.get(*key).and_then(|v| v.as_array()));
    list.into_iter()
        .flatten()
        .filter_map(|t| {
            Some(IssueType {
                id: t.get("id")?.as_str()?.to_string(),
                name: t.get("name")?.as_str()?.to_string(),
                subtask: t.get("subtask").and_then(|s| s.as_bool()).unwrap_or(false),
            })
        })
        .collect()
}

/// Fields from the paged `/createmeta/{project}/issuetypes/{id}` (`fields`, `results` or
/// `values`: a list of objects with `fieldId`/`key`) or the old shape (`fields`: an object keyed
/// by field key).
pub fn fields_of(reply: &serde_json::Value) -> Vec<FieldMeta> {
    let parse = |key: &str, f: &serde_json::Value| {
        Some(FieldMeta {
            key: key.to_string(),
            name: f.get("name")?.as_str()?.to_string(),
            schema: f
                .get("schema")
                .and_then(|s| Schema::deserialize(s).ok())
                .unwrap_or_default(),
            allowed: f
                .get("allowedValues")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default(),
        })
    };
    for key in ["fields", "results", "values"] {
        match reply.get(key) {
            Some(serde_json::Value::Array(items)) => {
                return items
                    .iter()
                    .filter_map(|f| {
                        let id = f.get("fieldId").or_else(|| f.get("key"))?.as_str()?;
                        parse(id, f)
                    })
                    .collect();
            }
            Some(serde_json::Value::Object(map)) => {
                return map.iter().filter_map(|(id, f)| parse(id, f)).collect();
            }
            _ => {}
        }
    }
    Vec::new()
}

/// Picks the configured issue type, else `Task`, else the first that is not a sub-task (Postee).
pub fn choose_issue_type<'a>(
    types: &'a [IssueType],
    wanted: Option<&str>,
) -> Result<&'a IssueType, String> {
    let by_name = |name: &str| types.iter().find(|t| t.name.eq_ignore_ascii_case(name));
    if let Some(wanted) = wanted {
        return by_name(wanted).ok_or_else(|| {
            format!(
                "issue type \"{wanted}\" is not available in the project (available: {})",
                types
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    by_name("Task")
        .or_else(|| types.iter().find(|t| !t.subtask))
        .or_else(|| types.first())
        .ok_or_else(|| "the project offers no issue type to create".to_string())
}

/// The allowed value of `field` whose `name` (or `value`) matches `wanted`, case-insensitive.
pub fn allowed_named<'a>(field: &'a FieldMeta, wanted: &str) -> Option<&'a serde_json::Value> {
    field.allowed.iter().find(|v| {
        ["name", "value"].iter().any(|k| {
            v.get(*k)
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
        })
    })
}

/// The label that marks every ticket of one finding: `hooker-` and 16 hex digits of a stable
/// hash (FNV-1a 64) of the route and the finding's identity. Stable across versions and nodes.
pub fn finding_label(route: &str, identity: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in route.bytes().chain([0x1f]).chain(identity.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("hooker-{hash:016x}")
}

/// The summary: the first line of `title`, at most 255 characters.
pub fn summary(title: &str, route: &str) -> String {
    let line = title.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    if line.is_empty() {
        return format!("Hooker alert from route {route}");
    }
    truncate(line, SUMMARY_LIMIT, "…")
}

/// The description (Jira wiki markup from the template), cut to what Jira stores.
pub fn description(body: &str) -> String {
    truncate(body, DESCRIPTION_LIMIT, "\n\n_(truncated by Hooker)_")
}

fn truncate(text: &str, limit: usize, mark: &str) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let keep = limit - mark.chars().count();
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(mark);
    out
}

/// Quotes a value for JQL.
pub fn jql_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(kind: &str, items: Option<&str>) -> FieldMeta {
        FieldMeta {
            key: "customfield_1".into(),
            name: "Thing".into(),
            schema: Schema {
                kind: kind.into(),
                items: items.map(str::to_string),
                custom: None,
            },
            allowed: vec![],
        }
    }

    fn check(field: &FieldMeta, name: &str, raw: serde_json::Value, expected: serde_json::Value) {
        let (_, suffix) = split_suffix(name);
        assert_eq!(
            field_value(field, suffix, &raw, false),
            Ok(expected),
            "{name}"
        );
    }

    #[test]
    fn documented_suffixes_convert_values() {
        let text = field("string", None);
        check(&text, "x-numeric-field", json!("123"), json!(123));
        check(&text, "x-numeric-field", json!(1.5), json!(1.5));
        check(
            &text,
            "x-multiple-value",
            json!("1, 2,3"),
            json!(["1", "2", "3"]),
        );
        check(
            &text,
            "x-multiple-line-text-field",
            json!("a\nb"),
            json!("a\nb"),
        );
        check(
            &text,
            "x-date-time-picker",
            json!("2014-04-11T12:14:26.880+0400"),
            json!("2014-04-11T12:14:26.880+0400"),
        );
        check(
            &text,
            "x-url",
            json!("https://e.x/a"),
            json!("https://e.x/a"),
        );
        assert_eq!(split_suffix("my field-url"), ("my field", Suffix::Url));
        assert_eq!(split_suffix("-url"), ("-url", Suffix::None));
    }

    #[test]
    fn values_without_suffix_follow_the_schema() {
        check(
            &field("option", None),
            "x",
            json!("Red"),
            json!({"value": "Red"}),
        );
        check(
            &field("array", Some("option")),
            "x",
            json!(["a", "b"]),
            json!([{"value": "a"}, {"value": "b"}]),
        );
        check(
            &field("array", Some("version")),
            "x-multiple-value",
            json!("1.0,2.0"),
            json!([{"name": "1.0"}, {"name": "2.0"}]),
        );
        check(&field("number", None), "x", json!("7"), json!(7));
        check(&field("any", None), "x", json!("K8S-1"), json!("K8S-1"));
        check(
            &field("user", None),
            "x",
            json!("bob"),
            json!({"name": "bob"}),
        );
        let cloud = field_value(&field("user", None), Suffix::None, &json!("id-1"), true);
        assert_eq!(cloud, Ok(json!({"accountId": "id-1"})));
        assert!(field_value(&field("number", None), Suffix::None, &json!("x"), false).is_err());
    }

    #[test]
    fn createmeta_both_shapes_parse() {
        let paged = json!({"values": [
            {"fieldId": "summary", "name": "Summary", "schema": {"type": "string", "system": "summary"}},
            {"fieldId": "priority", "name": "Priority", "schema": {"type": "priority"},
             "allowedValues": [{"id": "1", "name": "Highest"}, {"id": "2", "name": "High"}]}
        ]});
        let fields = fields_of(&paged);
        assert_eq!(fields.len(), 2);
        assert_eq!(
            allowed_named(&fields[1], "high"),
            Some(&json!({"id": "2", "name": "High"}))
        );
        let old = json!({"fields": {"customfield_10020": {"name": "Sprint",
            "schema": {"type": "array", "items": "json", "custom": SPRINT_FIELD_TYPE}}}});
        let fields = fields_of(&old);
        assert_eq!(fields[0].key, "customfield_10020");
        assert_eq!(fields[0].schema.custom.as_deref(), Some(SPRINT_FIELD_TYPE));
        let cloud = json!({"issueTypes": [{"id": "3", "name": "Sub", "subtask": true}, {"id": "1", "name": "Bug"}]});
        let types = issue_types(&cloud);
        assert_eq!(
            choose_issue_type(&types, None).map(|t| t.id.as_str()),
            Ok("1")
        );
        assert!(
            choose_issue_type(&types, Some("Epic"))
                .unwrap_err()
                .contains("available: Sub, Bug")
        );
    }

    #[test]
    fn finding_label_is_stable_and_jira_safe() {
        let label = finding_label("route", "CVE-1 in alpine");
        assert_eq!(label, finding_label("route", "CVE-1 in alpine"));
        assert_ne!(label, finding_label("other", "CVE-1 in alpine"));
        assert_eq!(label.len(), "hooker-".len() + 16);
        assert!(!label.contains(' '));
        // Pinned: changing the hash would reopen every finding as a new ticket.
        assert_eq!(finding_label("", ""), "hooker-af63d24c8601db8e");
    }

    #[test]
    fn summary_is_one_bounded_line() {
        assert_eq!(summary("\n First line \nsecond", "r"), "First line");
        assert_eq!(summary("", "r"), "Hooker alert from route r");
        let long = "é".repeat(300);
        assert_eq!(summary(&long, "r").chars().count(), 255);
        assert_eq!(jql_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}

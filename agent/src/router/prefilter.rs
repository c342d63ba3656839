//! Native pre-checks: what a route's inline Rego rule certainly requires, tested on the JSON event
//! before any Rego runs, and an index of routes by the literal values they test.
//!
//! A Postee-style `input:` body is one conjunction: every top-level line must hold for the route to
//! match. Lines of the shapes below are *necessary* conditions, so an event failing one cannot
//! match and Rego is skipped; an event passing them is still evaluated by Rego, which alone
//! decides. Anything not recognised is simply not pre-checked, and a check only rejects when the
//! outcome in Rego is certain (undefined path, a string that differs, a number out of range):
//!
//! - `input.a.b == "literal"` / `input["a"].b == 3` (either side);
//! - `input.a.b >= 2` (and `>`, `<=`, `<`) when the value is a number;
//! - `startswith(input.a.b, "literal")` / `endswith(...)` / `contains(...)` when the value is a string.
//!
//! Bodies that rebind `input` (`with input as`, `input :=`) are never pre-checked. When every line
//! of a body is understood, [`super::native`] decides the route without Rego.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

/// Integers below this are exact in an f64.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// What a condition certainly is for an event, or `Unknown` when only Rego can tell (a type
/// Rego would order or report as an error, a number an f64 cannot hold exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    pub(super) fn of(holds: bool) -> Truth {
        if holds { Truth::True } else { Truth::False }
    }

    /// Rego's `not`: true when the expression is false or undefined.
    pub fn negate(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

/// A path into the event, as object keys.
pub type Path = Arc<[String]>;

/// One necessary condition of a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Equals(Path, Literal),
    Compare(Path, Ordering, f64),
    StartsWith(Path, String),
    EndsWith(Path, String),
    Contains(Path, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Check {
    /// The path the condition reads.
    pub fn path(&self) -> &Path {
        match self {
            Check::Equals(path, _)
            | Check::Compare(path, _, _)
            | Check::StartsWith(path, _)
            | Check::EndsWith(path, _)
            | Check::Contains(path, _) => path,
        }
    }

    /// False only when the condition certainly fails in Rego for `event`.
    pub fn may_hold(&self, event: &Json) -> bool {
        self.truth(event) != Truth::False
    }

    /// The condition's outcome in Rego, with its path looked up from `root` (the event, or the
    /// value a `some x in ...` variable is bound to). An undefined path is certainly false.
    pub fn truth(&self, root: &Json) -> Truth {
        let value = lookup(root, self.path());
        match self {
            Check::Equals(_, literal) => equals_truth(value, literal),
            Check::Compare(_, ordering, bound) => compare_truth(value, *ordering, *bound),
            Check::StartsWith(_, text) => string_truth(value, |s| s.starts_with(&**text)),
            Check::EndsWith(_, text) => string_truth(value, |s| s.ends_with(&**text)),
            Check::Contains(_, text) => string_truth(value, |s| s.contains(&**text)),
        }
    }
}

/// `value == literal` in Rego, `value` being undefined when None.
pub(super) fn equals_truth(value: Option<&Json>, literal: &Literal) -> Truth {
    match value {
        None => Truth::False,
        Some(value) => match (value, literal) {
            (Json::String(s), Literal::String(l)) => Truth::of(s == l),
            (Json::Number(n), Literal::Number(l)) => match exact(n, *l) {
                Some(v) => Truth::of(v == *l),
                None => Truth::Unknown,
            },
            (Json::Bool(b), Literal::Bool(l)) => Truth::of(b == l),
            // Different types are never equal in Rego.
            _ => Truth::False,
        },
    }
}

/// `value <op> bound` in Rego.
pub(super) fn compare_truth(value: Option<&Json>, ordering: Ordering, bound: f64) -> Truth {
    match value {
        None => Truth::False,
        Some(Json::Number(n)) => match exact(n, bound) {
            Some(v) => Truth::of(match ordering {
                Ordering::Greater => v > bound,
                Ordering::GreaterOrEqual => v >= bound,
                Ordering::Less => v < bound,
                Ordering::LessOrEqual => v <= bound,
            }),
            None => Truth::Unknown,
        },
        // Rego orders values of different types; leave those to Rego.
        Some(_) => Truth::Unknown,
    }
}

/// The event's number as an f64 when it and `literal` are exact in one (beyond 2^53 an f64 may
/// round: such values are left to Rego).
fn exact(n: &serde_json::Number, literal: f64) -> Option<f64> {
    n.as_f64()
        .filter(|v| v.abs() < EXACT && literal.abs() < EXACT)
}

/// A string built-in (`startswith`, ...) on `value` in Rego.
pub(super) fn string_truth(value: Option<&Json>, test: impl Fn(&str) -> bool) -> Truth {
    match value {
        None => Truth::False,
        Some(Json::String(s)) => Truth::of(test(s)),
        // A type error in Rego: let Rego report it.
        Some(_) => Truth::Unknown,
    }
}

/// The value at `path`, following object keys only (as Rego's `input.a.b` does on objects).
pub fn lookup<'a>(event: &'a Json, path: &[String]) -> Option<&'a Json> {
    let mut at = event;
    for key in path {
        at = at.as_object()?.get(key)?;
    }
    Some(at)
}

/// The necessary conditions found in an inline `input` body (empty when none are certain).
pub fn checks(body: &str) -> Vec<Check> {
    let conjuncts = split_conjuncts(body);
    if conjuncts.iter().any(|c| rebinds_input(c)) {
        return Vec::new();
    }
    conjuncts
        .iter()
        .filter_map(|c| parse_check(c, "input"))
        .collect()
}

pub(super) fn rebinds_input(conjunct: &str) -> bool {
    let compact: String = conjunct.split_whitespace().collect::<Vec<_>>().join(" ");
    compact.contains("with input")
        || compact.starts_with("input :=")
        || compact.starts_with("input =")
        || compact.starts_with("input:=")
        || compact.contains(" input in ")
        || compact.contains(" input, ")
        || compact.contains("some input")
}

/// Top-level statements of a rule body: split on newlines and `;` outside brackets and strings,
/// comments removed.
pub(super) fn split_conjuncts(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                current.push(c);
                while let Some(s) = chars.next() {
                    current.push(s);
                    if s == '\\' {
                        if let Some(escaped) = chars.next() {
                            current.push(escaped);
                        }
                    } else if s == '"' {
                        break;
                    }
                }
            }
            '`' => {
                current.push(c);
                for s in chars.by_ref() {
                    current.push(s);
                    if s == '`' {
                        break;
                    }
                }
            }
            '#' => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        break;
                    }
                }
                if depth == 0 {
                    out.push(std::mem::take(&mut current));
                } else {
                    current.push('\n');
                }
            }
            '{' | '[' | '(' => {
                depth += 1;
                current.push(c);
            }
            '}' | ']' | ')' => {
                depth -= 1;
                current.push(c);
            }
            '\n' | ';' if depth == 0 => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// One condition on paths under `root` (`input`, or a variable bound by `some`).
pub(super) fn parse_check(conjunct: &str, root: &str) -> Option<Check> {
    let (path, test) = parse_test(conjunct, |text| parse_path(text, root))?;
    Some(match test {
        Test::Equals(literal) => Check::Equals(path, literal),
        Test::Compare(ordering, bound) => Check::Compare(path, ordering, bound),
        Test::StartsWith(text) => Check::StartsWith(path, text),
        Test::EndsWith(text) => Check::EndsWith(path, text),
        Test::Contains(text) => Check::Contains(path, text),
    })
}

/// What a line tests of its operand (a path, or a library helper: see `native::helpers`).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Literal),
    Compare(Ordering, f64),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
}

impl Test {
    /// The test's outcome in Rego on `value` (None: undefined).
    pub fn truth(&self, value: Option<&Json>) -> Truth {
        match self {
            Test::Equals(literal) => equals_truth(value, literal),
            Test::Compare(ordering, bound) => compare_truth(value, *ordering, *bound),
            Test::StartsWith(text) => string_truth(value, |s| s.starts_with(&**text)),
            Test::EndsWith(text) => string_truth(value, |s| s.ends_with(&**text)),
            Test::Contains(text) => string_truth(value, |s| s.contains(&**text)),
        }
    }
}

/// A line of one of the shapes above whose operand `operand` recognises.
pub(super) fn parse_test<T>(
    conjunct: &str,
    operand: impl Fn(&str) -> Option<T>,
) -> Option<(T, Test)> {
    for (name, make) in [
        ("startswith(", Test::StartsWith as fn(String) -> Test),
        ("endswith(", Test::EndsWith),
        ("contains(", Test::Contains),
    ] {
        if let Some(args) = conjunct
            .strip_prefix(name)
            .and_then(|rest| rest.strip_suffix(')'))
        {
            let (operand_text, literal) = args.split_once(',')?;
            let found = operand(operand_text.trim())?;
            let Literal::String(text) = parse_literal(literal.trim())? else {
                return None;
            };
            return Some((found, make(text)));
        }
    }
    for (op, ordering) in [
        (">=", Some(Ordering::GreaterOrEqual)),
        ("<=", Some(Ordering::LessOrEqual)),
        ("==", None),
        (">", Some(Ordering::Greater)),
        ("<", Some(Ordering::Less)),
    ] {
        let Some((left, right)) = conjunct.split_once(op) else {
            continue;
        };
        let (left, right) = (left.trim(), right.trim());
        return match ordering {
            None => match (operand(left), operand(right)) {
                (Some(found), None) => Some((found, Test::Equals(parse_literal(right)?))),
                (None, Some(found)) => Some((found, Test::Equals(parse_literal(left)?))),
                _ => None,
            },
            Some(ordering) => {
                let found = operand(left)?;
                let Literal::Number(bound) = parse_literal(right)? else {
                    return None;
                };
                Some((found, Test::Compare(ordering, bound)))
            }
        };
    }
    None
}

/// `input.a.b["c-d"]` → `["a", "b", "c-d"]` (for `root` "input"); anything else (indexes, other
/// variables, calls) → None. A path of `input` itself is refused; a variable's may be empty.
pub(super) fn parse_path(text: &str, root: &str) -> Option<Path> {
    let mut rest = text.strip_prefix(root)?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            path.push(key.to_string());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[\"") {
            let end = after.find("\"]")?;
            let key = &after[..end];
            if key.contains(['\\', '"']) {
                return None;
            }
            path.push(key.to_string());
            rest = &after[end + 2..];
        } else {
            return None;
        }
    }
    if path.is_empty() && root == "input" {
        return None;
    }
    Some(path.into())
}

fn parse_literal(text: &str) -> Option<Literal> {
    if text.starts_with('"') {
        return match serde_json::from_str::<Json>(text).ok()? {
            Json::String(s) => Some(Literal::String(s)),
            _ => None,
        };
    }
    match text {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        _ => {}
    }
    if text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
    {
        return text.parse::<f64>().ok().map(Literal::Number);
    }
    None
}

/// Routes indexed by the string each certainly requires at some path, so an event only visits
/// the routes that can match it.
#[derive(Debug, Default, Clone)]
pub struct RouteIndex {
    /// Per indexed path: literal → routes that require it.
    by_value: Vec<(Path, HashMap<String, Vec<usize>>)>,
    /// Routes with no indexable equality: always candidates.
    always: Vec<usize>,
}

impl RouteIndex {
    /// `checks[i]` are route `i`'s pre-checks.
    pub fn build<'a>(checks: impl IntoIterator<Item = &'a [Check]>) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (route, checks) in checks.into_iter().enumerate() {
            let key = checks.iter().find_map(|c| match c {
                Check::Equals(path, Literal::String(value)) => Some((path, value)),
                _ => None,
            });
            let Some((path, value)) = key else {
                index.always.push(route);
                continue;
            };
            let slot = match index.by_value.iter().position(|(p, _)| p == path) {
                Some(slot) => slot,
                None => {
                    index.by_value.push((path.clone(), HashMap::new()));
                    index.by_value.len() - 1
                }
            };
            index.by_value[slot]
                .1
                .entry(value.clone())
                .or_default()
                .push(route);
        }
        index
    }

    /// The paths the index reads.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.by_value.iter().map(|(path, _)| path)
    }

    /// The routes `event` may match, in route order, into `out`.
    pub fn candidates(&self, event: &Json, out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for (path, values) in &self.by_value {
            if let Some(Json::String(value)) = lookup(event, path)
                && let Some(routes) = values.get(value)
            {
                out.extend_from_slice(routes);
            }
        }
        if !self.by_value.is_empty() {
            out.sort_unstable();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Every JSON fixture, then each again with its top-level scalars' types swapped (numbers as
    /// strings, strings as numbers), then with all its scalars swapped at any depth.
    pub(crate) fn fixture_events() -> Vec<Json> {
        fn swap(value: &mut Json, deep: bool) {
            match value {
                Json::Number(n) => *value = Json::String(n.to_string()),
                Json::String(s) => *value = Json::Number(s.len().into()),
                Json::Array(items) if deep => items.iter_mut().for_each(|v| swap(v, deep)),
                Json::Object(map) if deep => map.values_mut().for_each(|v| swap(v, deep)),
                _ => {}
            }
        }
        let dir = crate::fixtures::dir();
        let mut events = Vec::new();
        for family in ["tracee", "trivy", "postee", "falco"] {
            let Ok(entries) = std::fs::read_dir(dir.join(family)) else {
                panic!("fixtures missing at {}", dir.display());
            };
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Ok(event) = serde_json::from_str::<Json>(&text) {
                    events.push(event);
                }
            }
        }
        // The golden suite's inputs too.
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/inputs");
        let Ok(entries) = std::fs::read_dir(&golden) else {
            panic!("golden inputs missing at {}", golden.display());
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Ok(event) = serde_json::from_str::<Json>(&text) {
                events.push(event);
            }
        }
        assert!(events.len() > 10, "too few fixtures: {}", events.len());
        let base = events.clone();
        for deep in [false, true] {
            for mut event in base.clone() {
                if let Some(map) = event.as_object_mut() {
                    map.values_mut().for_each(|v| swap(v, deep));
                }
                events.push(event);
            }
        }
        events
    }

    fn path(keys: &[&str]) -> Path {
        keys.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn finds_necessary_conditions_in_a_postee_body() {
        let body = r#"
            input.metadata.Properties.signatureID == "TRC-2" # a comment; with == "x"
            input.metadata.Properties.Severity >= 2
            startswith(input["podNamespace"], "prod-")
            some a in input.args
            a.name == "pathname"
            count([x | x := input.args[_]; x.value == "y"]) > 0
        "#;
        assert_eq!(
            checks(body),
            vec![
                Check::Equals(
                    path(&["metadata", "Properties", "signatureID"]),
                    Literal::String("TRC-2".into())
                ),
                Check::Compare(
                    path(&["metadata", "Properties", "Severity"]),
                    Ordering::GreaterOrEqual,
                    2.0
                ),
                Check::StartsWith(path(&["podNamespace"]), "prod-".into()),
            ]
        );
    }

    #[test]
    fn a_body_that_rebinds_input_is_not_prechecked() {
        assert!(checks("input.a == \"x\"\ndata.x.allow with input as {\"a\": 1}").is_empty());
    }

    #[test]
    fn checks_reject_only_what_certainly_fails() {
        let event = json!({"a": {"b": "TRC-2", "n": 3, "o": {}}, "s": "prod-x"});
        let eq = |p: &[&str], l: Literal| Check::Equals(path(p), l).may_hold(&event);
        assert!(eq(&["a", "b"], Literal::String("TRC-2".into())));
        assert!(!eq(&["a", "b"], Literal::String("TRC-3".into())));
        assert!(!eq(&["a", "missing"], Literal::String("TRC-2".into())));
        assert!(eq(&["a", "n"], Literal::Number(3.0)));
        assert!(!eq(&["a", "n"], Literal::String("3".into())));
        let cmp = |o, b| Check::Compare(path(&["a", "n"]), o, b).may_hold(&event);
        assert!(cmp(Ordering::GreaterOrEqual, 3.0));
        assert!(!cmp(Ordering::Greater, 3.0));
        assert!(Check::Compare(path(&["a", "o"]), Ordering::Greater, 3.0).may_hold(&event));
        assert!(Check::StartsWith(path(&["s"]), "prod-".into()).may_hold(&event));
        assert!(!Check::StartsWith(path(&["s"]), "dev-".into()).may_hold(&event));
        assert!(Check::StartsWith(path(&["a", "n"]), "dev-".into()).may_hold(&event));
    }

    /// The pre-checks never reject an event Rego accepts, on every fixture and its variations.
    #[test]
    fn prechecks_agree_with_rego_on_fixtures() {
        let bodies = [
            "input.metadata.Properties.signatureID == \"TRC-1022\"",
            "input.metadata.Properties.Severity >= 2\nstartswith(input.podNamespace, \"def\")",
            "input.metadata.Properties.Severity > 2",
            "input.eventName == \"security_file_open\"\ncontains(input.processName, \"a\")",
            "endswith(input.containerImage, \":latest\")",
            "input.returnValue == 0",
            "input[\"eventName\"] == \"net_packet_dns_request\"",
            "input.contextFlags.containerStarted == true",
            "input.Severity <= 1",
            "input.ArtifactName == \"alpine:3.10\"",
        ];
        let events = fixture_events();
        let filters = std::path::Path::new("/nonexistent");
        let (mut checked, mut rejected) = (0, 0);
        for body in bodies {
            let mut rule = crate::router::rego::RouteRule::compile("t", Some(body), &[], filters)
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(!rule.checks().is_empty(), "no pre-check found in {body}");
            for event in &events {
                let rego = rule.evaluate(&crate::router::rego::to_rego(event));
                if !rule.may_match(event) {
                    rejected += 1;
                    assert_eq!(
                        rego,
                        Ok(false),
                        "{body} rejected natively but Rego says {rego:?} for {event}"
                    );
                }
                checked += 1;
            }
        }
        assert!(rejected > checked / 2, "{rejected} of {checked}");
    }

    #[test]
    fn index_visits_only_candidates_in_route_order() {
        let routes = [
            checks("input.id == \"A\""),
            checks("input.x > 1"),
            checks("input.id == \"B\""),
            checks("input.id == \"A\"\ninput.y == 2"),
        ];
        let index = RouteIndex::build(routes.iter().map(Vec::as_slice));
        let mut out = Vec::new();
        index.candidates(&json!({"id": "A"}), &mut out);
        assert_eq!(out, vec![0, 1, 3]);
        index.candidates(&json!({"id": "C"}), &mut out);
        assert_eq!(out, vec![1]);
        index.candidates(&json!({"id": 1}), &mut out);
        assert_eq!(out, vec![1]);
    }
}

//! Native decisions: routes whose whole `input` body is understood are decided on the JSON event
//! without Rego, and without converting the event for Rego at all.
//!
//! A body qualifies when every line is a pre-check shape (see [`super::prefilter`]), possibly
//! negated with `not`, plus at most one `some x in input.path` whose later lines may test `x`:
//!
//! ```text
//! input.eventName == "sched_process_exec"
//! some a in input.args
//! a.name == "pathname"
//! not endswith(a.value, ".conf")
//! ```
//!
//! A line may also read the helper library instead of a path of `input` (see [`helpers`]):
//! `data.hooker.lib.tracee.is_detection`, `data.hooker.lib.tracee.severity >= 3`,
//! `startswith(data.hooker.lib.tracee.pod_namespace, "prod-")`, `data.hooker.lib.trivy.is_report`.
//! The embedded default config's routes are of this kind.
//!
//! The lines are evaluated in order, as Rego does. Each is certainly true, certainly false, or
//! unknown (a value of a type on which Rego would order across types or report an error, a number
//! beyond 2^53); one unknown hands the whole event to Rego, so a native decision is always the one
//! Rego would make — a property test below compares the two on every fixture and variations.

mod helpers;

use serde_json::Value as Json;

use super::prefilter::{self, Check, Path, Truth};
use helpers::HelperCheck;

/// A body decided natively.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    /// Lines before the `some` (all of them when there is none).
    before: Vec<Line>,
    each: Option<Each>,
}

/// `some x in input.path` and the lines after it, evaluated for each value bound to `x`.
#[derive(Debug, Clone, PartialEq)]
struct Each {
    path: Path,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq)]
struct Line {
    check: LineCheck,
    /// Whether the check is on the `some` variable rather than on `input`.
    on_item: bool,
    negated: bool,
}

/// What a line tests: a path of the event (or of the `some` variable), or a library helper.
#[derive(Debug, Clone, PartialEq)]
enum LineCheck {
    Path(Check),
    Helper(HelperCheck),
}

impl Line {
    fn truth(&self, event: &Json, item: Option<&Json>) -> Truth {
        let root = match (self.on_item, item) {
            (true, Some(item)) => item,
            (true, None) => return Truth::Unknown,
            (false, _) => event,
        };
        let truth = match &self.check {
            LineCheck::Path(check) => check.truth(root),
            LineCheck::Helper(check) => check.truth(root),
        };
        if self.negated { truth.negate() } else { truth }
    }

    /// The paths of `input` the line reads (none when it reads the `some` variable).
    fn paths(&self) -> &[Path] {
        match (&self.check, self.on_item) {
            (_, true) => &[],
            (LineCheck::Path(check), false) => std::slice::from_ref(check.path()),
            (LineCheck::Helper(check), false) => check.paths(),
        }
    }
}

/// Lines in order: the first that is not certainly true decides.
fn all(lines: &[Line], event: &Json, item: Option<&Json>) -> Truth {
    for line in lines {
        match line.truth(event, item) {
            Truth::True => {}
            other => return other,
        }
    }
    Truth::True
}

impl Native {
    /// The body's native form, or None when any line is beyond it (Rego then decides).
    pub fn parse(body: &str) -> Option<Native> {
        let conjuncts = prefilter::split_conjuncts(body);
        if conjuncts.is_empty() || conjuncts.iter().any(|c| prefilter::rebinds_input(c)) {
            return None;
        }
        let mut native = Native {
            before: Vec::new(),
            each: None,
        };
        let mut variable: Option<String> = None;
        for conjunct in &conjuncts {
            if let Some((name, path)) = parse_some(conjunct) {
                if variable.is_some() {
                    return None;
                }
                variable = Some(name);
                native.each = Some(Each {
                    path,
                    lines: Vec::new(),
                });
                continue;
            }
            let (negated, text) = match conjunct.strip_prefix("not ") {
                Some(rest) => (true, rest.trim()),
                None => (false, conjunct.as_str()),
            };
            let line = if let Some(check) = prefilter::parse_check(text, "input") {
                Line {
                    check: LineCheck::Path(check),
                    on_item: false,
                    negated,
                }
            } else if let Some(check) = HelperCheck::parse(text) {
                Line {
                    check: LineCheck::Helper(check),
                    on_item: false,
                    negated,
                }
            } else {
                Line {
                    check: LineCheck::Path(prefilter::parse_check(text, variable.as_deref()?)?),
                    on_item: true,
                    negated,
                }
            };
            match &mut native.each {
                Some(each) => each.lines.push(line),
                None => native.before.push(line),
            }
        }
        Some(native)
    }

    /// The paths of `input` the decision reads (a `some` collection as a whole).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        let lines = self.each.iter().flat_map(|each| &each.lines);
        self.before
            .iter()
            .chain(lines)
            .flat_map(|line| line.paths())
            .chain(self.each.iter().map(|each| &each.path))
    }

    /// Whether the route matches `event`; `Unknown` means "ask Rego".
    pub fn decide(&self, event: &Json) -> Truth {
        match all(&self.before, event, None) {
            Truth::True => {}
            other => return other,
        }
        let Some(each) = &self.each else {
            return Truth::True;
        };
        let items: Box<dyn Iterator<Item = &Json>> = match prefilter::lookup(event, &each.path) {
            None => return Truth::False,
            Some(Json::Array(items)) => Box::new(items.iter()),
            Some(Json::Object(items)) => Box::new(items.values()),
            // `some x in` a scalar: leave to Rego.
            Some(_) => return Truth::Unknown,
        };
        // Every binding is looked at, as Rego evaluates them all: one it cannot be sure of
        // (possibly an error in Rego) hands the event over even when another matched.
        let mut outcome = Truth::False;
        for item in items {
            match all(&each.lines, event, Some(item)) {
                Truth::True => outcome = Truth::True,
                Truth::False => {}
                Truth::Unknown => return Truth::Unknown,
            }
        }
        outcome
    }
}

/// `some x in input.path` → (`x`, path).
fn parse_some(conjunct: &str) -> Option<(String, Path)> {
    let rest = conjunct.strip_prefix("some ")?.trim_start();
    let (name, collection) = rest.split_once(" in ")?;
    let name = name.trim();
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier || matches!(name, "input" | "data" | "_" | "some" | "not" | "in") {
        return None;
    }
    let path = prefilter::parse_path(collection.trim(), "input")?;
    Some((name.to_string(), path))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Native bodies of every shape, tried on every fixture.
    pub(crate) const BODIES: &[&str] = &[
        "input.metadata.Properties.signatureID == \"TRC-1022\"",
        "input.metadata.Properties.Severity >= 2\nstartswith(input.podNamespace, \"def\")",
        "not input.metadata.Properties.Severity > 2",
        "input.eventName == \"security_file_open\"\ncontains(input.processName, \"a\")",
        "endswith(input.containerImage, \":latest\")",
        "input.returnValue == 0",
        "input.contextFlags.containerStarted == true",
        "input.Severity <= 1",
        "input.ArtifactName == \"alpine:3.10\"",
        "some a in input.args\na.name == \"pathname\"\ncontains(a.value, \"/etc/\")\nnot endswith(a.value, \".conf\")",
        "input.metadata.Properties.Severity >= 2\nstartswith(input.podNamespace, \"default\")\nsome a in input.args\na.name == \"path\"\nendswith(a.value, \"-new\")",
        "some a in input.args\nendswith(a.value, \"e\")",
        "some a in input.args\nnot a.type == \"int\"\ninput.argsNum >= 2",
        "some v in input.Vulnerabilities\nv.Severity == \"CRITICAL\"",
        "some r in input.report.vulnerabilities\nnot r.fixedVersion == \"\"",
        "some t in input.matchedScopes\nt == 1",
        "data.hooker.lib.tracee.is_detection",
        "not data.hooker.lib.tracee.is_detection",
        "data.hooker.lib.tracee.is_tracee",
        "data.hooker.lib.tracee.is_detection\ndata.hooker.lib.tracee.severity >= 2",
        "data.hooker.lib.tracee.severity < 1",
        "data.hooker.lib.tracee.severity == -1",
        "data.hooker.lib.tracee.signature_id == \"TRC-1022\"",
        "startswith(data.hooker.lib.tracee.signature_id, \"TRC-10\")",
        "data.hooker.lib.tracee.signature_name == \"Anti-Debugging\"",
        "contains(data.hooker.lib.tracee.signature_name, \"e\")",
        "endswith(data.hooker.lib.tracee.event_name, \"open\")",
        "data.hooker.lib.tracee.event_name == \"\"",
        "not data.hooker.lib.tracee.process_name == \"\"",
        "contains(data.hooker.lib.tracee.process_name, \"s\")",
        "data.hooker.lib.tracee.host_name == \"\"",
        "startswith(data.hooker.lib.tracee.pod_name, \"t\")",
        "startswith(data.hooker.lib.tracee.pod_namespace, \"def\")",
        "data.hooker.lib.tracee.pod_namespace == \"\"",
        "contains(data.hooker.lib.tracee.container_id, \"a\")",
        "contains(data.hooker.lib.tracee.container_image, \":\")",
        "data.hooker.lib.tracee.container_name == \"\"",
        "data.hooker.lib.trivy.is_report",
        "not data.hooker.lib.trivy.is_report",
        "contains(data.hooker.lib.trivy.artifact, \"alpine\")",
        "data.hooker.lib.trivyoperator.is_report",
        "data.hooker.lib.trivyoperator.verb == \"\"",
        "some a in input.args\ndata.hooker.lib.tracee.is_detection\na.name == \"pathname\"",
        "data.hooker.lib.falco.is_falco",
        "not data.hooker.lib.falco.is_falco",
        "data.hooker.lib.falco.priority_at_least(\"Warning\")",
        "data.hooker.lib.falco.priority_at_least(\"critical\")",
        "data.hooker.lib.falco.priority_at_least(\"Sometimes\")",
        "not data.hooker.lib.falco.priority_at_least(\"Error\")",
        "data.hooker.lib.falco.has_tag(\"shell\")",
        "data.hooker.lib.falco.is_falco\nnot data.hooker.lib.falco.has_tag(\"container\")",
        "data.hooker.lib.falco.rule == \"Terminal shell in container\"",
        "startswith(data.hooker.lib.falco.rule, \"Read sensitive\")",
        "data.hooker.lib.falco.priority == \"\"",
        "data.hooker.lib.falco.priority_number <= 4",
        "data.hooker.lib.falco.severity >= 3",
        "data.hooker.lib.falco.severity == -1",
        "data.hooker.lib.falco.source == \"k8s_audit\"",
        "contains(data.hooker.lib.falco.hostname, \"worker\")",
    ];

    fn decide(body: &str, event: Json) -> Truth {
        Native::parse(body)
            .unwrap_or_else(|| panic!("not native: {body}"))
            .decide(&event)
    }

    #[test]
    fn recognises_postee_bodies_and_nothing_more() {
        for body in [
            "input.metadata.Properties.signatureID == \"TRC-1022\"",
            "input.Severity >= 2\nstartswith(input.podNamespace, \"prod\")",
            "some a in input.args\na.name == \"pathname\"\nnot endswith(a.value, \".conf\")",
            "input.eventName == \"x\"; some a in input.args; a == \"y\"",
            "not input.x == \"y\" # a comment",
            "input.x == \"y\"\ndata.hooker.lib.tracee.is_detection",
            "data.hooker.lib.tracee.severity >= 3\nstartswith(data.hooker.lib.tracee.pod_namespace, \"prod-\")",
        ] {
            assert!(Native::parse(body).is_some(), "{body}");
        }
        for body in [
            "",
            "input.x = \"y\"",
            "input.x != \"y\"",
            "a.name == \"x\"\nsome a in input.args",
            "some a in input.args\nsome b in input.args",
            "some input in input.args",
            "some i, a in input.args",
            "count(input.args) > 1",
            "data.hooker.lib.tracee.description == \"x\"",
            "data.hooker.lib.trivy.level == \"critical\"",
            "data.hooker.lib.tracee.is_detection == data.hooker.lib.trivy.is_report",
            "data.hooker.lib.tracee[\"is_detection\"]",
            "some a in input.args\nb.name == \"x\"",
            "input.a == \"x\"\ninput := {}",
        ] {
            assert_eq!(Native::parse(body), None, "{body}");
        }
    }

    #[test]
    fn decides_some_in_over_arrays_and_objects() {
        let body = "some a in input.args\na.name == \"pathname\"\nnot endswith(a.value, \".conf\")";
        let args = |value: Json| json!({"args": [{"name": "flags", "value": 3}, value]});
        assert_eq!(
            decide(body, args(json!({"name": "pathname", "value": "/etc/x"}))),
            Truth::True
        );
        assert_eq!(
            decide(
                body,
                args(json!({"name": "pathname", "value": "/etc/a.conf"}))
            ),
            Truth::False
        );
        // Undefined under `not` is true, as in Rego.
        assert_eq!(decide(body, args(json!({"name": "pathname"}))), Truth::True);
        assert_eq!(decide(body, json!({"args": []})), Truth::False);
        assert_eq!(decide(body, json!({})), Truth::False);
        assert_eq!(
            decide(
                body,
                json!({"args": {"k": {"name": "pathname", "value": "/x"}}})
            ),
            Truth::True
        );
        assert_eq!(decide(body, json!({"args": "pathname"})), Truth::Unknown);
        // A value Rego would reject as a type error hands the event over, match or not.
        assert_eq!(
            decide(
                body,
                json!({"args": [{"name": "pathname", "value": "/x"}, {"name": "pathname", "value": 1}]})
            ),
            Truth::Unknown
        );
    }

    /// The embedded default config routes Tracee detections with the helper library: both its
    /// routes are decided without Rego.
    #[test]
    fn the_default_config_routes_are_native() {
        let text = crate::config::DEFAULT_CONFIG.replace("{{LOG_DIR}}", "/tmp");
        let config = crate::config::Config::parse(&text, None).unwrap();
        assert!(!config.routes.is_empty());
        for route in &config.routes {
            let rule = crate::router::rego::RouteRule::compile(
                &route.name,
                route.input.as_deref(),
                &route.input_files,
                std::path::Path::new("/nonexistent"),
            )
            .unwrap();
            assert!(rule.is_native(), "route {} is not native", route.name);
        }
    }

    #[test]
    fn helpers_decide_as_the_library_defines_them() {
        let detection = "data.hooker.lib.tracee.is_detection";
        assert_eq!(
            decide(detection, json!({"SigMetadata": {"ID": "TRC-2"}})),
            Truth::True
        );
        assert_eq!(decide(detection, json!({"threat": false})), Truth::False);
        assert_eq!(decide(detection, json!({"threat": null})), Truth::Unknown);
        assert_eq!(
            decide(detection, json!({"eventName": "openat"})),
            Truth::False
        );
        let severity = "data.hooker.lib.tracee.severity >= 3";
        let at = |level: Json| json!({"metadata": {"Properties": {"Severity": level}}});
        assert_eq!(decide(severity, at(json!(3))), Truth::True);
        assert_eq!(decide(severity, at(json!("4"))), Truth::True);
        assert_eq!(decide(severity, at(json!("44"))), Truth::False);
        assert_eq!(decide(severity, at(json!(7))), Truth::False);
        assert_eq!(
            decide(
                severity,
                json!({"metadata": {"Properties": {"Severity": 9}}, "threat": {"severity": 3}})
            ),
            Truth::True
        );
        let namespace = "startswith(data.hooker.lib.tracee.pod_namespace, \"prod-\")";
        assert_eq!(
            decide(
                namespace,
                json!({"Context": {"podNamespace": "prod-a"}, "podNamespace": "x"})
            ),
            Truth::True
        );
        assert_eq!(
            decide(namespace, json!({"Context": "x", "podNamespace": "prod-a"})),
            Truth::True
        );
        assert_eq!(
            decide(
                namespace,
                json!({"workload": {"k8s": {"namespace": {"name": "prod-b"}}}})
            ),
            Truth::True
        );
        let operator = "data.hooker.lib.trivyoperator.is_report";
        assert_eq!(
            decide(operator, json!({"operatorObject": {"report": {}}})),
            Truth::True
        );
        assert_eq!(
            decide(operator, json!({"operatorObject": 1, "report": {}})),
            Truth::True
        );
        assert_eq!(decide(operator, json!({"report": []})), Truth::False);
    }

    /// Where the native decision is certain, Rego agrees, on every fixture and variations of it.
    #[test]
    fn native_decisions_agree_with_rego_on_fixtures() {
        let bodies = BODIES;
        let events = crate::router::prefilter::tests::fixture_events();
        let filters = std::path::Path::new("/nonexistent");
        let (mut decided, mut total) = (0, 0);
        for body in bodies {
            let native = Native::parse(body).unwrap_or_else(|| panic!("not native: {body}"));
            let mut rule = crate::router::rego::RouteRule::compile("t", Some(body), &[], filters)
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            for event in &events {
                total += 1;
                let expected = match native.decide(event) {
                    Truth::True => true,
                    Truth::False => false,
                    Truth::Unknown => continue,
                };
                decided += 1;
                let rego = rule.evaluate(&crate::router::rego::to_rego(event));
                assert_eq!(
                    rego,
                    Ok(expected),
                    "{body}: native says {expected}, Rego {rego:?}, for {event}"
                );
            }
        }
        assert!(decided * 10 > total * 9, "{decided} of {total} decided");
    }
}

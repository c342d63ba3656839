//! The helper library's route helpers computed on the JSON event: `data.hooker.lib.tracee.*`
//! (`is_detection`, `severity`, `signature_id`, `pod_namespace`, …), `data.hooker.lib.trivy`'s
//! `is_report` and `artifact`, `data.hooker.lib.trivyoperator`'s `is_report` and `verb`,
//! `data.hooker.lib.falco`'s `is_falco`, `rule`, `priority`, `priority_number`, `severity`,
//! `source`, `hostname` and the calls `priority_at_least("…")` and `has_tag("…")`, each as
//! `agent/templates/lib/*.rego` defines it (that Rego stays the reference: a test compares the
//! two on every fixture and golden input).
//!
//! A route line using one is native when it is the helper alone (`data.hooker.lib.tracee.is_detection`,
//! possibly under `not`) or one of the pre-check shapes with the helper as operand
//! (`data.hooker.lib.tracee.severity >= 3`, `startswith(data.hooker.lib.tracee.pod_namespace, "prod-")`).

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::router::prefilter::{self, Path, Test, Truth};

/// A library rule a route may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    TraceeIsDetection,
    TraceeIsTracee,
    TraceeSignatureId,
    TraceeSignatureName,
    TraceeEventName,
    TraceeSeverity,
    TraceeProcessName,
    TraceeHostName,
    TraceePodName,
    TraceePodNamespace,
    TraceeContainerId,
    TraceeContainerImage,
    TraceeContainerName,
    TrivyIsReport,
    TrivyArtifact,
    OperatorIsReport,
    OperatorVerb,
    FalcoIsFalco,
    FalcoRule,
    FalcoPriority,
    FalcoPriorityNumber,
    FalcoSeverity,
    FalcoSource,
    FalcoHostname,
    FalcoTags,
}

const HELPERS: &[(&str, Helper)] = &[
    ("tracee.is_detection", Helper::TraceeIsDetection),
    ("tracee.is_tracee", Helper::TraceeIsTracee),
    ("tracee.signature_id", Helper::TraceeSignatureId),
    ("tracee.signature_name", Helper::TraceeSignatureName),
    ("tracee.event_name", Helper::TraceeEventName),
    ("tracee.severity", Helper::TraceeSeverity),
    ("tracee.process_name", Helper::TraceeProcessName),
    ("tracee.host_name", Helper::TraceeHostName),
    ("tracee.pod_name", Helper::TraceePodName),
    ("tracee.pod_namespace", Helper::TraceePodNamespace),
    ("tracee.container_id", Helper::TraceeContainerId),
    ("tracee.container_image", Helper::TraceeContainerImage),
    ("tracee.container_name", Helper::TraceeContainerName),
    ("trivy.is_report", Helper::TrivyIsReport),
    ("trivy.artifact", Helper::TrivyArtifact),
    ("trivyoperator.is_report", Helper::OperatorIsReport),
    ("trivyoperator.verb", Helper::OperatorVerb),
    ("falco.is_falco", Helper::FalcoIsFalco),
    ("falco.rule", Helper::FalcoRule),
    ("falco.priority", Helper::FalcoPriority),
    ("falco.priority_number", Helper::FalcoPriorityNumber),
    ("falco.severity", Helper::FalcoSeverity),
    ("falco.source", Helper::FalcoSource),
    ("falco.hostname", Helper::FalcoHostname),
];

/// Falco's priorities as `lib/falco.rego`'s `priority_numbers` (0 = Emergency .. 7 = Debug).
const FALCO_PRIORITIES: &[(&str, i64)] = &[
    ("emergency", 0),
    ("alert", 1),
    ("critical", 2),
    ("error", 3),
    ("warning", 4),
    ("notice", 5),
    ("informational", 6),
    ("info", 6),
    ("debug", 7),
];

/// `lib/falco.rego`'s `severity_of_priority`, indexed by priority number.
const FALCO_SEVERITY: [i64; 8] = [4, 4, 4, 3, 2, 1, 0, 0];

/// A priority name (any case) as its number.
fn falco_priority_number(name: &str) -> Option<i64> {
    let lower = name.to_lowercase();
    FALCO_PRIORITIES
        .iter()
        .find(|(known, _)| *known == lower)
        .map(|(_, n)| *n)
}

/// A helper's value for an event: undefined (None), a value, or `Err(())` when only Rego can
/// tell.
type Outcome<'a> = Result<Option<Cow<'a, Json>>, ()>;

/// Paths of the `context` the Tracee helpers read (`input.Context` when it is an object, else
/// `input`).
const CONTEXT: &str = "Context";

impl Helper {
    /// `data.hooker.lib.<name>` → the helper.
    pub fn parse(text: &str) -> Option<Helper> {
        let name = text.strip_prefix("data.hooker.lib.")?;
        HELPERS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, helper)| *helper)
    }

    /// The helper's value for `event`, as the library's Rego computes it.
    pub fn value<'a>(self, event: &'a Json) -> Outcome<'a> {
        let string = |s: &'a str| Ok(Some(Cow::Owned(Json::String(s.to_string()))));
        match self {
            Helper::TraceeIsDetection => any_truthy(
                event,
                &[
                    &["SigMetadata"],
                    &["metadata", "Properties", "signatureID"],
                    &["threat"],
                ],
            ),
            Helper::TraceeIsTracee => {
                let detection = Helper::TraceeIsDetection.value(event)?;
                let event_name = truthy(at(event, &["eventName"]))?;
                let named = truthy(at(event, &["name"]))? && truthy(at(event, &["workload"]))?;
                Ok((detection.is_some() || event_name || named).then(|| Cow::Owned(true.into())))
            }
            Helper::TraceeSignatureId => first_filled(
                event,
                &[
                    &["SigMetadata", "ID"],
                    &["metadata", "Properties", "signatureID"],
                    &["threat", "properties", "signatureID"],
                    &["threat", "properties", "id"],
                ],
            )
            .map_or_else(|| string(""), string),
            Helper::TraceeSignatureName => first_filled(
                event,
                &[
                    &["SigMetadata", "Name"],
                    &["metadata", "Properties", "signatureName"],
                    &["threat", "name"],
                ],
            )
            .map_or_else(|| Helper::TraceeEventName.value(event), string),
            Helper::TraceeEventName => first_filled(
                event,
                &[
                    &["eventName"],
                    &["name"],
                    &["SigMetadata", "EventName"],
                    &["Context", "eventName"],
                ],
            )
            .map_or_else(|| string(""), string),
            Helper::TraceeSeverity => {
                for path in [
                    &["SigMetadata", "Properties", "Severity"][..],
                    &["metadata", "Properties", "Severity"],
                    &["threat", "severity"],
                ] {
                    if let Some(level) = level_number(at(event, path))? {
                        return Ok(Some(level));
                    }
                }
                Ok(Some(Cow::Owned((-1).into())))
            }
            Helper::TraceeProcessName => context_filled(
                event,
                &[&["processName"]],
                &[&["workload", "process", "thread", "name"]],
            ),
            Helper::TraceeHostName => context_filled(event, &[&["hostName"]], &[]),
            Helper::TraceePodName => context_filled(
                event,
                &[&["kubernetes", "podName"], &["podName"]],
                &[&["workload", "k8s", "pod", "name"]],
            ),
            Helper::TraceePodNamespace => context_filled(
                event,
                &[&["kubernetes", "podNamespace"], &["podNamespace"]],
                &[&["workload", "k8s", "namespace", "name"]],
            ),
            Helper::TraceeContainerId => context_filled(
                event,
                &[&["container", "id"], &["containerId"]],
                &[&["workload", "container", "id"]],
            ),
            Helper::TraceeContainerImage => context_filled(
                event,
                &[&["container", "image"], &["containerImage"]],
                &[&["workload", "container", "image", "name"]],
            ),
            Helper::TraceeContainerName => context_filled(
                event,
                &[&["container", "name"], &["containerName"]],
                &[&["workload", "container", "name"]],
            ),
            Helper::TrivyIsReport => {
                let report = matches!(at(event, &["ArtifactName"]), Some(Json::String(_)))
                    || matches!(at(event, &["Results"]), Some(Json::Array(_)));
                Ok(report.then(|| Cow::Owned(true.into())))
            }
            Helper::TrivyArtifact => first_filled(event, &[&["ArtifactName"]])
                .map_or_else(|| string("unknown artifact"), string),
            Helper::OperatorIsReport => {
                let resource = match at(event, &["operatorObject"]) {
                    Some(object @ Json::Object(_)) => object,
                    _ => event,
                };
                let report = matches!(at(resource, &["report"]), Some(Json::Object(_)));
                Ok(report.then(|| Cow::Owned(true.into())))
            }
            Helper::OperatorVerb => {
                first_filled(event, &[&["verb"]]).map_or_else(|| string(""), string)
            }
            Helper::FalcoIsFalco => {
                let falco = falco_filled(at(event, &["rule"])).is_some()
                    && falco_filled(at(event, &["priority"])).is_some()
                    && matches!(at(event, &["output_fields"]), Some(Json::Object(_)));
                Ok(falco.then(|| Cow::Owned(true.into())))
            }
            Helper::FalcoRule => falco_string(event, "rule"),
            Helper::FalcoPriority => falco_string(event, "priority"),
            Helper::FalcoSource => falco_string(event, "source"),
            Helper::FalcoHostname => falco_string(event, "hostname"),
            Helper::FalcoPriorityNumber => Ok(Some(Cow::Owned(falco_number(event).into()))),
            Helper::FalcoSeverity => {
                let severity = usize::try_from(falco_number(event))
                    .ok()
                    .and_then(|n| FALCO_SEVERITY.get(n).copied())
                    .unwrap_or(-1);
                Ok(Some(Cow::Owned(severity.into())))
            }
            Helper::FalcoTags => {
                let tags = match at(event, &["tags"]) {
                    Some(Json::Array(items)) => items
                        .iter()
                        .filter(|t| falco_filled(Some(t)).is_some())
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                Ok(Some(Cow::Owned(Json::Array(tags))))
            }
        }
    }

    /// The paths of `input` the helper reads (each read whole).
    pub fn paths(self) -> Vec<Path> {
        let paths: Vec<&[&str]> = match self {
            Helper::TraceeIsDetection => vec![&["SigMetadata"], &["metadata"], &["threat"]],
            Helper::TraceeIsTracee => vec![
                &["SigMetadata"],
                &["metadata"],
                &["threat"],
                &["eventName"],
                &["name"],
                &["workload"],
            ],
            Helper::TraceeSignatureId | Helper::TraceeSeverity => {
                vec![&["SigMetadata"], &["metadata"], &["threat"]]
            }
            Helper::TraceeSignatureName | Helper::TraceeEventName => vec![
                &["SigMetadata"],
                &["metadata"],
                &["threat"],
                &["eventName"],
                &["name"],
                &[CONTEXT],
            ],
            Helper::TraceeProcessName => context(&[&["processName"]], &[&["workload"]]),
            Helper::TraceeHostName => context(&[&["hostName"]], &[]),
            Helper::TraceePodName => context(&[&["kubernetes"], &["podName"]], &[&["workload"]]),
            Helper::TraceePodNamespace => {
                context(&[&["kubernetes"], &["podNamespace"]], &[&["workload"]])
            }
            Helper::TraceeContainerId => {
                context(&[&["container"], &["containerId"]], &[&["workload"]])
            }
            Helper::TraceeContainerImage => {
                context(&[&["container"], &["containerImage"]], &[&["workload"]])
            }
            Helper::TraceeContainerName => {
                context(&[&["container"], &["containerName"]], &[&["workload"]])
            }
            Helper::TrivyIsReport => vec![&["ArtifactName"], &["Results"]],
            Helper::TrivyArtifact => vec![&["ArtifactName"]],
            Helper::OperatorIsReport => vec![&["operatorObject"], &["report"]],
            Helper::OperatorVerb => vec![&["verb"]],
            Helper::FalcoIsFalco => vec![&["rule"], &["priority"], &["output_fields"]],
            Helper::FalcoRule => vec![&["rule"]],
            Helper::FalcoPriority | Helper::FalcoPriorityNumber | Helper::FalcoSeverity => {
                vec![&["priority"]]
            }
            Helper::FalcoSource => vec![&["source"]],
            Helper::FalcoHostname => vec![&["hostname"]],
            Helper::FalcoTags => vec![&["tags"]],
        };
        paths
            .into_iter()
            .map(|path| path.iter().map(|key| key.to_string()).collect())
            .collect()
    }
}

/// A route line on a helper: the helper alone (true when defined and not `false`), or a test.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperCheck {
    helper: Helper,
    /// None: the helper alone.
    test: Option<Test>,
    /// A library function called with a literal instead (`test` is then None).
    call: Option<Call>,
    paths: Vec<Path>,
}

/// `data.hooker.lib.falco.priority_at_least("<name>")` and `….has_tag("<tag>")`.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// The threshold's number; None for a name Falco does not have (never true).
    PriorityAtLeast(Option<i64>),
    HasTag(String),
}

impl Call {
    /// `<prefix>("<literal>")` with a literal free of escapes.
    fn parse(text: &str) -> Option<(Helper, Call)> {
        let (name, rest) = text.split_once('(')?;
        let literal = rest.strip_suffix(')')?.trim();
        let literal = literal.strip_prefix('"')?.strip_suffix('"')?;
        if literal.contains(['"', '\\']) {
            return None;
        }
        match name.trim() {
            "data.hooker.lib.falco.priority_at_least" => Some((
                Helper::FalcoPriorityNumber,
                Call::PriorityAtLeast(falco_priority_number(literal)),
            )),
            "data.hooker.lib.falco.has_tag" => {
                Some((Helper::FalcoTags, Call::HasTag(literal.to_string())))
            }
            _ => None,
        }
    }

    fn holds(&self, value: Option<&Json>) -> bool {
        match (self, value) {
            (Call::PriorityAtLeast(Some(at_least)), Some(Json::Number(n))) => {
                n.as_i64().is_some_and(|n| n >= 0 && n <= *at_least)
            }
            (Call::HasTag(tag), Some(Json::Array(tags))) => {
                tags.iter().any(|t| t.as_str() == Some(tag.as_str()))
            }
            _ => false,
        }
    }
}

impl HelperCheck {
    pub fn parse(text: &str) -> Option<HelperCheck> {
        if let Some((helper, call)) = Call::parse(text) {
            return Some(HelperCheck {
                helper,
                test: None,
                call: Some(call),
                paths: helper.paths(),
            });
        }
        let (helper, test) = match Helper::parse(text) {
            Some(helper) => (helper, None),
            None => {
                let (helper, test) = prefilter::parse_test(text, Helper::parse)?;
                (helper, Some(test))
            }
        };
        Some(HelperCheck {
            helper,
            test,
            call: None,
            paths: helper.paths(),
        })
    }

    pub fn paths(&self) -> &[Path] {
        &self.paths
    }

    pub fn truth(&self, event: &Json) -> Truth {
        let Ok(value) = self.helper.value(event) else {
            return Truth::Unknown;
        };
        let value = value.as_deref();
        if let Some(call) = &self.call {
            return Truth::of(call.holds(value));
        }
        match &self.test {
            Some(test) => test.truth(value),
            None => match truthy(value) {
                Ok(holds) => Truth::of(holds),
                Err(()) => Truth::Unknown,
            },
        }
    }
}

/// The paths a `context`-based helper reads: `input.Context`, its own keys (at the top level too,
/// where `context` is `input`) and those of `input`.
fn context<'a>(own: &[&'a [&'a str]], of_input: &[&'a [&'a str]]) -> Vec<&'a [&'a str]> {
    let mut paths: Vec<&[&str]> = vec![&[CONTEXT]];
    paths.extend_from_slice(own);
    paths.extend_from_slice(of_input);
    paths
}

fn at<'a>(root: &'a Json, path: &[&str]) -> Option<&'a Json> {
    let mut value = root;
    for key in path {
        value = value.as_object()?.get(*key)?;
    }
    Some(value)
}

/// Whether an expression of this value holds in a rule body: defined and not `false`. A `null`
/// is left to Rego.
fn truthy(value: Option<&Json>) -> Result<bool, ()> {
    match value {
        None | Some(Json::Bool(false)) => Ok(false),
        Some(Json::Null) => Err(()),
        Some(_) => Ok(true),
    }
}

/// `rule if input.a` for each path: `true` when one holds, undefined when none does.
fn any_truthy<'a>(event: &'a Json, paths: &[&[&str]]) -> Outcome<'a> {
    let mut unsure = false;
    for path in paths {
        match truthy(at(event, path)) {
            Ok(true) => return Ok(Some(Cow::Owned(true.into()))),
            Ok(false) => {}
            Err(()) => unsure = true,
        }
    }
    if unsure { Err(()) } else { Ok(None) }
}

/// The library's `filled(x)`: a non-empty string.
fn filled(value: Option<&Json>) -> Option<&str> {
    match value {
        Some(Json::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// `lib/falco.rego`'s `filled(x)`: a non-empty string other than Falco's `<NA>`.
fn falco_filled(value: Option<&Json>) -> Option<&str> {
    filled(value).filter(|s| *s != "<NA>")
}

/// `x := input.<key> if filled(input.<key>) else := ""` (Falco's `filled`).
fn falco_string<'a>(event: &'a Json, key: &str) -> Outcome<'a> {
    let found = falco_filled(at(event, &[key])).unwrap_or_default();
    Ok(Some(Cow::Owned(Json::String(found.to_string()))))
}

/// `priority_number`: the priority's number, -1 when missing or unknown.
fn falco_number(event: &Json) -> i64 {
    falco_filled(at(event, &["priority"]))
        .and_then(falco_priority_number)
        .unwrap_or(-1)
}

/// The first path holding a non-empty string.
fn first_filled<'a>(event: &'a Json, paths: &[&[&str]]) -> Option<&'a str> {
    paths.iter().find_map(|path| filled(at(event, path)))
}

/// `x := context.<own> if filled(...) else := input.<of_input> if filled(...) else := ""`.
fn context_filled<'a>(event: &'a Json, own: &[&[&str]], of_input: &[&[&str]]) -> Outcome<'a> {
    let context = match at(event, &[CONTEXT]) {
        Some(context @ Json::Object(_)) => context,
        _ => event,
    };
    let found = own
        .iter()
        .find_map(|path| filled(at(context, path)))
        .or_else(|| first_filled(event, of_input))
        .unwrap_or_default();
    Ok(Some(Cow::Owned(Json::String(found.to_string()))))
}

/// The library's `level_number(x)`: a number in 0..=4 as it is, a digit string 0-4 as its number;
/// undefined otherwise.
fn level_number(value: Option<&Json>) -> Result<Option<Cow<'_, Json>>, ()> {
    match value {
        Some(number @ Json::Number(n)) => {
            let Some(v) = n.as_f64() else {
                return Err(());
            };
            Ok((0.0..=4.0).contains(&v).then_some(Cow::Borrowed(number)))
        }
        Some(Json::String(s)) => Ok(match s.as_bytes() {
            [digit @ b'0'..=b'4'] => Some(Cow::Owned(i64::from(digit - b'0').into())),
            _ => None,
        }),
        _ => Ok(None),
    }
}

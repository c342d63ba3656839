//! The helper library's route helpers computed on the JSON event: `data.hooker.lib.tracee.*`
//! (`is_detection`, `severity`, `signature_id`, `pod_namespace`, …), `data.hooker.lib.trivy`'s
//! `is_report` and `artifact`, `data.hooker.lib.trivyoperator`'s `is_report` and `verb`, each as
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
];

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
    paths: Vec<Path>,
}

impl HelperCheck {
    pub fn parse(text: &str) -> Option<HelperCheck> {
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

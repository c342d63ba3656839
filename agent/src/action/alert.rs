//! What an alert is about, for the paging, ticketing and SIEM actions: its severity and a stable
//! identity for the finding behind it.
//!
//! Both come from the template first (`result_severity`, `result_dedup_key`), then from the event
//! (Tracee, Trivy, trivy-operator and Aqua shapes). Nothing here does I/O.

use crate::message::Message;

/// Five levels every target can map onto (PagerDuty, OpsGenie, ServiceNow, ASFF, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Tracee's integer scale (0 info … 4 critical), also used when a template sets a number.
    fn from_level(level: i64) -> Option<Severity> {
        match level {
            i64::MIN..0 => None,
            0 => Some(Severity::Info),
            1 => Some(Severity::Low),
            2 => Some(Severity::Medium),
            3 => Some(Severity::High),
            _ => Some(Severity::Critical),
        }
    }

    /// Reads the usual spellings: Trivy/Aqua (`CRITICAL`, `negligible`), Falco and syslog
    /// priorities (`error`, `warning`, `notice`), OpsGenie priorities (`P1`…`P5`), and numbers.
    /// `unknown` and empty mean "not said".
    pub fn parse(value: &serde_json::Value) -> Option<Severity> {
        match value {
            serde_json::Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f.round() as i64))
                .and_then(Severity::from_level),
            serde_json::Value::String(text) => Severity::parse_str(text),
            _ => None,
        }
    }

    pub fn parse_str(text: &str) -> Option<Severity> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(level) = text.parse::<i64>() {
            return Severity::from_level(level);
        }
        match text.as_str() {
            "critical" | "crit" | "emergency" | "emerg" | "alert" | "fatal" | "p1" => {
                Some(Severity::Critical)
            }
            "high" | "error" | "err" | "major" | "p2" => Some(Severity::High),
            "medium" | "moderate" | "warning" | "warn" | "p3" => Some(Severity::Medium),
            "low" | "minor" | "notice" | "p4" => Some(Severity::Low),
            "info" | "informational" | "information" | "debug" | "negligible" | "none" | "ok"
            | "p5" => Some(Severity::Info),
            _ => None,
        }
    }
}

/// The message's severity: the template's `result_severity` when it says one, else the event's.
pub fn severity(message: &Message) -> Option<Severity> {
    message
        .fields
        .get("severity")
        .and_then(Severity::parse)
        .or_else(|| event_severity(&message.event))
}

/// The severity an event carries, in any of the shapes Hooker knows.
pub fn event_severity(event: &serde_json::Value) -> Option<Severity> {
    if let Some(inner) = event.get("operatorObject") {
        return event_severity(inner);
    }
    let tracee = [
        pointer(event, "/SigMetadata/Properties/Severity"),
        pointer(event, "/metadata/Properties/Severity"),
        pointer(event, "/threat/severity"),
        event.get("severity"),
        event.get("priority"),
    ];
    if let Some(found) = tracee.into_iter().flatten().find_map(Severity::parse) {
        return Some(found);
    }
    // Trivy JSON report: the worst vulnerability or misconfiguration.
    if let Some(results) = event.get("Results").and_then(|r| r.as_array()) {
        return results
            .iter()
            .flat_map(|result| {
                ["Vulnerabilities", "Misconfigurations"]
                    .into_iter()
                    .filter_map(|kind| result.get(kind).and_then(|v| v.as_array()))
                    .flatten()
            })
            .filter_map(|item| item.get("Severity").and_then(Severity::parse))
            .max();
    }
    // trivy-operator reports: the summary counts, else the findings themselves.
    if let Some(report) = event.get("report") {
        if let Some(summary) = report.get("summary") {
            let counted = [
                ("criticalCount", Severity::Critical),
                ("highCount", Severity::High),
                ("mediumCount", Severity::Medium),
                ("lowCount", Severity::Low),
            ]
            .into_iter()
            .find(|(key, _)| count(summary.get(*key)) > 0)
            .map(|(_, severity)| severity);
            if counted.is_some() {
                return counted;
            }
        }
        let items = ["vulnerabilities", "checks"]
            .into_iter()
            .filter_map(|kind| report.get(kind).and_then(|v| v.as_array()))
            .flatten();
        return items
            .filter_map(|item| item.get("severity").and_then(Severity::parse))
            .max();
    }
    // Aqua image scan.
    if let Some(summary) = event.get("vulnerability_summary") {
        return [
            ("critical", Severity::Critical),
            ("high", Severity::High),
            ("medium", Severity::Medium),
            ("low", Severity::Low),
            ("negligible", Severity::Info),
        ]
        .into_iter()
        .find(|(key, _)| count(summary.get(*key)) > 0)
        .map(|(_, severity)| severity);
    }
    None
}

/// A key that is the same for every message about the same finding on the same route, and
/// different across routes: `result_dedup_key` when the template sets it, else a hash of the
/// route and the event's identity ([`event_identity`]).
pub fn finding_key(message: &Message) -> String {
    if let Some(key) = message.field_str("dedup_key").filter(|k| !k.is_empty()) {
        return key;
    }
    let identity = event_identity(&message.event);
    let digest = sha256_hex(format!("{}\n{identity}", message.route).as_bytes());
    format!("hooker-{}", &digest[..40])
}

/// What makes two events "the same finding": the detection and where it fired for Tracee, the
/// scanned artifact for Trivy, the object for trivy-operator, the image for Aqua; otherwise the
/// event without its timestamps and process ids.
pub fn event_identity(event: &serde_json::Value) -> String {
    if let Some(inner) = event.get("operatorObject") {
        return event_identity(inner);
    }
    let text = |path: &str| pointer(event, path).and_then(scalar_text);
    let first = |paths: &[&str]| paths.iter().find_map(|p| text(p)).unwrap_or_default();
    let signature = first(&[
        "/SigMetadata/ID",
        "/metadata/Properties/signatureID",
        "/threat/properties/signatureID",
        "/threat/name",
    ]);
    let event_name = first(&["/eventName", "/name", "/SigMetadata/Name"]);
    let is_tracee = !signature.is_empty()
        || (event.get("eventName").is_some())
        || (event.get("workload").is_some() && event.get("name").is_some());
    if is_tracee {
        let place = first(&[
            "/containerId",
            "/container/id",
            "/workload/container/id",
            "/Context/containerId",
            "/Context/container/id",
            "/podName",
            "/kubernetes/podName",
            "/workload/k8s/pod/name",
        ]);
        let host = first(&[
            "/hostName",
            "/Context/hostName",
            "/SigMetadata/Hostname",
            "/hooker/node",
        ]);
        if signature.is_empty() {
            let process = first(&["/processName", "/workload/process/thread/name"]);
            return format!("tracee|{event_name}|{place}|{host}|{process}");
        }
        return format!("tracee|{signature}|{place}|{host}");
    }
    if let Some(artifact) = text("/ArtifactName") {
        return format!("trivy|{artifact}");
    }
    if event.get("report").is_some()
        && let Some(name) = text("/metadata/name")
    {
        let kind = text("/kind").unwrap_or_default();
        let namespace = text("/metadata/namespace").unwrap_or_default();
        return format!("k8s|{kind}|{namespace}/{name}");
    }
    if let Some(image) = text("/image") {
        let registry = text("/registry").unwrap_or_default();
        return format!("aqua-image|{registry}/{image}");
    }
    const VOLATILE: &[&str] = &[
        "timestamp",
        "time",
        "threadStartTime",
        "processId",
        "threadId",
        "hostProcessId",
        "hostThreadId",
        "create_time",
        "scan_started",
        "hooker",
        "postee",
    ];
    let stable = match event {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(key, _)| !VOLATILE.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    format!("json|{}", canonical(&stable))
}

/// Hex SHA-256, for keys and request signing.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn pointer<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    value.pointer(path).filter(|v| !v.is_null())
}

fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn count(value: Option<&serde_json::Value>) -> u64 {
    value.and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// JSON with object keys sorted, so key order in the input does not change the identity.
fn canonical(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(key.clone()),
                        canonical(&map[key])
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    use crate::fixtures::json as fixture;

    fn message(route: &str, event: serde_json::Value) -> Message {
        Message {
            route: route.into(),
            event_id: "e".into(),
            title: "t".into(),
            body: String::new(),
            body_pending: false,
            url: None,
            fields: BTreeMap::new(),
            owners: vec![],
            event: Arc::new(event.into()),
        }
    }

    #[test]
    fn severity_comes_from_each_event_shape() {
        let check = |relative: &str, expected: Option<Severity>| {
            assert_eq!(event_severity(&fixture(relative)), expected, "{relative}");
        };
        check(
            "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
            Some(Severity::Medium),
        );
        check(
            "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
            Some(Severity::Low),
        );
        check("tracee/v0.13-signature-custom-golang.json", None);
        check("trivy/trivy-image-alpine-310.json", Some(Severity::Medium));
        check("postee/trivy-input.json", Some(Severity::Critical));
        check("postee/aqua-input.json", Some(Severity::Critical));
        let shape_c = json!({"name": "anti_debugging", "threat": {"severity": 3}});
        assert_eq!(event_severity(&shape_c), Some(Severity::High));
        let wrapped = json!({"verb": "create", "operatorObject": fixture("trivy/trivy-operator-VulnerabilityReport-cr.json")});
        assert_eq!(event_severity(&wrapped), Some(Severity::High));
    }

    #[test]
    fn template_severity_wins_over_the_event() {
        let mut m = message("r", json!({"metadata": {"Properties": {"Severity": 4}}}));
        assert_eq!(severity(&m), Some(Severity::Critical));
        m.fields.insert("severity".into(), json!("low"));
        assert_eq!(severity(&m), Some(Severity::Low));
        m.fields.insert("severity".into(), json!("unknown"));
        assert_eq!(severity(&m), Some(Severity::Critical));
        for (text, expected) in [
            ("P2", Severity::High),
            ("warning", Severity::Medium),
            ("NEGLIGIBLE", Severity::Info),
            ("3", Severity::High),
        ] {
            assert_eq!(Severity::parse_str(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn finding_key_is_stable_per_finding_and_route() {
        let event = fixture("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json");
        let mut later = event.clone();
        later["timestamp"] = json!(1);
        later["processId"] = json!(99);
        assert_eq!(
            finding_key(&message("r", event.clone())),
            finding_key(&message("r", later))
        );
        assert_ne!(
            finding_key(&message("r", event.clone())),
            finding_key(&message("other", event.clone()))
        );
        let mut elsewhere = event.clone();
        elsewhere["containerId"] = json!("another");
        assert_ne!(
            finding_key(&message("r", event.clone())),
            finding_key(&message("r", elsewhere))
        );
        let mut set = message("r", event);
        set.fields.insert("dedup_key".into(), json!("mine"));
        assert_eq!(finding_key(&set), "mine");
        let generic = |n: u64| json!({"b": n, "a": "x", "time": n});
        assert_eq!(
            event_identity(&generic(1)),
            event_identity(&json!({"a": "x", "b": 1, "time": 7}))
        );
        assert_ne!(event_identity(&generic(1)), event_identity(&generic(2)));
    }
}

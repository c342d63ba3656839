//! `lib/tracee.rego`'s card in Rust: the facts, arguments, severity and finding key the built-in
//! `hooker.tracee.*` templates render, from any of Tracee's three JSON shapes (tracee-rules
//! Finding, trace.Event, v1beta1.Event). Each function names the Rego rule it copies; the Rego
//! library stays the reference (`template::golden` checks every input renders the same).

use serde_json::Value;

use super::render::{Card, R, Section, Unsupported, clip, integer, one_line, text};

/// `input.a.b.c`: `None` when a step is missing or not an object.
fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object().and_then(|m| m.get(*key)))
}

/// `filled(x)`: a non-empty string.
fn filled(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The first filled of `paths` (an `else` chain of `filled` rules), or "".
fn first_filled<'a>(candidates: &[Option<&'a Value>]) -> &'a str {
    candidates
        .iter()
        .find_map(|v| filled(*v))
        .unwrap_or_default()
}

/// A Rego expression statement holds: defined and not `false`.
fn holds(value: Option<&Value>) -> bool {
    value.is_some_and(|v| *v != Value::Bool(false))
}

/// `level_number(x)`: a number in 0..4, or a one-digit string "0".."4"; `Ok(None)` when neither.
fn level_number(value: Option<&Value>) -> R<Option<i64>> {
    match value {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok((0..=4).contains(&i).then_some(i)),
            None => match n.as_f64() {
                // A fraction within 0..4 is a severity the Rego module prints as regorus does.
                Some(f) if (0.0..=4.0).contains(&f) => Err(Unsupported),
                _ => Ok(None),
            },
        },
        Some(Value::String(s)) => Ok(match s.as_bytes() {
            [d @ b'0'..=b'4'] => Some(i64::from(d - b'0')),
            _ => None,
        }),
        _ => Ok(None),
    }
}

fn number(value: Option<&Value>) -> Option<&serde_json::Number> {
    value.and_then(|v| match v {
        Value::Number(n) => Some(n),
        _ => None,
    })
}

/// `paren(s)`.
fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("({s})")
    }
}

fn by_default<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn join_nonempty(parts: &[&str], separator: &str) -> String {
    let kept: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    kept.join(separator)
}

/// `data_value(d)`: a v1beta1 data item's value (`{"name": n, "<kind>": v}`).
fn data_value(item: &serde_json::Map<String, Value>) -> Value {
    let mut rest = item.iter().filter(|(k, _)| *k != "name");
    match (rest.next(), rest.next()) {
        (Some((_, v)), None) => match v {
            Value::Object(inner) if inner.len() == 1 && inner.contains_key("value") => {
                inner["value"].clone()
            }
            v => v.clone(),
        },
        _ => Value::Object(
            item.iter()
                .filter(|(k, _)| *k != "name")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    }
}

const TRIGGER_ARGS: [&str; 2] = ["triggeredBy", "detectedFrom"];

/// `[a.name, a.value]` of each object in `args` with a filled name (and, when `skip_triggers`, not
/// a trigger argument). A missing `value` is left to Rego.
fn name_value_pairs(args: &[Value], skip_triggers: bool) -> R<Vec<(String, Value)>> {
    let mut pairs = Vec::new();
    for a in args {
        let Some(name) = filled(a.get("name")) else {
            continue;
        };
        if skip_triggers && TRIGGER_ARGS.contains(&name) {
            continue;
        }
        let value = a.get("value").ok_or(Unsupported)?;
        pairs.push((name.to_string(), value.clone()));
    }
    Ok(pairs)
}

/// `[d.name, data_value(d)]` of each object in `data` with a filled name.
fn data_pairs(data: &[Value]) -> Vec<(String, Value)> {
    data.iter()
        .filter_map(|d| {
            let item = d.as_object()?;
            let name = filled(item.get("name"))?;
            Some((name.to_string(), data_value(item)))
        })
        .collect()
}

/// The card of `lib/tracee.rego` for `input` (the event; `node` gives `input.hooker.node`, asked
/// only for an event that says nothing of where it happened).
pub fn card(input: &Value, node: &mut dyn FnMut() -> String) -> R<(Card, Facts)> {
    let is_detection = holds(input.get("SigMetadata"))
        || holds(get(input, &["metadata", "Properties", "signatureID"]))
        || holds(input.get("threat"));

    let signature_id = first_filled(&[
        get(input, &["SigMetadata", "ID"]),
        get(input, &["metadata", "Properties", "signatureID"]),
        get(input, &["threat", "properties", "signatureID"]),
        get(input, &["threat", "properties", "id"]),
    ]);
    let event_name = first_filled(&[
        input.get("eventName"),
        input.get("name"),
        get(input, &["SigMetadata", "EventName"]),
        get(input, &["Context", "eventName"]),
    ]);
    let signature_name = match filled(get(input, &["SigMetadata", "Name"]))
        .or_else(|| filled(get(input, &["metadata", "Properties", "signatureName"])))
        .or_else(|| filled(get(input, &["threat", "name"])))
    {
        Some(name) => name,
        None => event_name,
    };
    let description = first_filled(&[
        get(input, &["SigMetadata", "Description"]),
        get(input, &["metadata", "Description"]),
        get(input, &["threat", "description"]),
    ]);
    let severity = match level_number(get(input, &["SigMetadata", "Properties", "Severity"]))? {
        Some(n) => n,
        None => match level_number(get(input, &["metadata", "Properties", "Severity"]))? {
            Some(n) => n,
            None => level_number(get(input, &["threat", "severity"]))?.unwrap_or(-1),
        },
    };
    const SEVERITY_NAMES: [&str; 5] = ["info", "low", "medium", "high", "critical"];
    let severity_name = usize::try_from(severity)
        .ok()
        .and_then(|i| SEVERITY_NAMES.get(i))
        .copied()
        .unwrap_or("unknown");
    let mitre_technique = first_filled(&[
        get(input, &["metadata", "Properties", "Technique"]),
        get(input, &["threat", "mitre", "technique", "name"]),
        get(input, &["SigMetadata", "Properties", "MITRE ATT&CK"]),
    ]);
    let mitre_category = first_filled(&[
        get(input, &["metadata", "Properties", "Category"]),
        get(input, &["threat", "mitre", "tactic", "name"]),
    ]);
    let mitre_id = first_filled(&[
        get(input, &["metadata", "Properties", "external_id"]),
        get(input, &["threat", "mitre", "technique", "id"]),
    ]);

    let context = match input.get("Context") {
        Some(c @ Value::Object(_)) => c,
        _ => input,
    };
    let process_name = first_filled(&[
        context.get("processName"),
        get(input, &["workload", "process", "thread", "name"]),
    ]);
    let host_name = first_filled(&[context.get("hostName")]);
    let pod_name = first_filled(&[
        get(context, &["kubernetes", "podName"]),
        context.get("podName"),
        get(input, &["workload", "k8s", "pod", "name"]),
    ]);
    let pod_namespace = first_filled(&[
        get(context, &["kubernetes", "podNamespace"]),
        context.get("podNamespace"),
        get(input, &["workload", "k8s", "namespace", "name"]),
    ]);
    let container_id = first_filled(&[
        get(context, &["container", "id"]),
        context.get("containerId"),
        get(input, &["workload", "container", "id"]),
    ]);
    let container_image = first_filled(&[
        get(context, &["container", "image"]),
        context.get("containerImage"),
        get(input, &["workload", "container", "image", "name"]),
    ]);
    let container_name = first_filled(&[
        get(context, &["container", "name"]),
        context.get("containerName"),
        get(input, &["workload", "container", "name"]),
    ]);
    let event_id = match filled(context.get("eventId")) {
        Some(id) => id.to_string(),
        None => match number(input.get("id")) {
            Some(n) => integer(n)?.to_string(),
            None => String::new(),
        },
    };
    let timestamp = match number(context.get("timestamp")) {
        Some(n) => rfc3339(n.as_i64().ok_or(Unsupported)?),
        None => first_filled(&[input.get("timestamp")]).to_string(),
    };
    let host_pid = match number(context.get("hostProcessId"))
        .or_else(|| number(get(input, &["workload", "process", "host_pid"])))
    {
        Some(n) => Some(integer(n)?),
        None => None,
    };
    let executable = first_filled(&[
        get(context, &["executable", "path"]),
        get(input, &["workload", "process", "executable", "path"]),
    ]);
    let syscall = first_filled(&[
        context.get("syscall"),
        get(input, &["workload", "process", "thread", "syscall"]),
    ]);
    let policies: Vec<&str> = match context.get("matchedPolicies") {
        Some(Value::Array(items)) => items.iter().filter_map(|p| filled(Some(p))).collect(),
        _ => match get(input, &["policies", "matched"]) {
            Some(Value::Array(items)) => items.iter().filter_map(|p| filled(Some(p))).collect(),
            _ => Vec::new(),
        },
    };
    let arg_list = match context.get("args") {
        Some(Value::Array(args)) => name_value_pairs(args, true)?,
        _ => match input.get("data") {
            Some(Value::Array(data)) => data_pairs(data),
            _ => Vec::new(),
        },
    };
    let trigger = trigger(input, context)?;

    // === The card ===
    let display_name = by_default(by_default(signature_name, signature_id), "unknown");
    let title = if is_detection {
        format!("Tracee Detection - {display_name}")
    } else {
        format!("Tracee Event - {}", by_default(event_name, "unknown"))
    };
    let level = if is_detection {
        match severity {
            0 => "info",
            1 => "low",
            2 => "medium",
            3 => "high",
            4 => "critical",
            _ => "info",
        }
    } else {
        "info"
    };
    let severity_text = if severity < 0 {
        String::new()
    } else {
        format!("{severity_name} ({severity})")
    };
    let mitre = join_nonempty(
        &[
            &join_nonempty(&[mitre_category, mitre_technique], ": "),
            &paren(mitre_id),
        ],
        " ",
    );
    let pod = if pod_name.is_empty() {
        String::new()
    } else {
        join_nonempty(&[pod_namespace, pod_name], "/")
    };
    let short_container_id: String = container_id.chars().take(12).collect();
    let container = join_nonempty(&[container_name, &paren(&short_container_id)], " ");
    let process = match host_pid {
        _ if process_name.is_empty() => String::new(),
        Some(pid) if pid >= super::render::Integer::Signed(0) => {
            format!("{process_name} (pid {pid})")
        }
        _ => process_name.to_string(),
    };
    let event_text = if event_name.is_empty() {
        String::new()
    } else if event_id.is_empty() {
        event_name.to_string()
    } else {
        format!("{event_name} (id {event_id})")
    };
    let trigger_text = match &trigger {
        None => String::new(),
        Some(trigger) => {
            let name = text(trigger.get("name").unwrap_or(&Value::String(String::new())))?;
            let pairs = match (trigger.get("args"), trigger.get("data")) {
                (Some(Value::Array(args)), _) => name_value_pairs(args, false)?,
                (_, Some(Value::Array(data))) => data_pairs(data),
                _ => Vec::new(),
            };
            let mut shown = Vec::with_capacity(pairs.len());
            for (name, value) in &pairs {
                shown.push(format!("{name}={}", clip(&one_line(&text(value)?), 100)));
            }
            join_nonempty(&[&name, &paren(&shown.join(", "))], " ")
        }
    };
    let scope = if !pod.is_empty() {
        format!("pod:{pod}")
    } else if !container_id.is_empty() {
        format!("container:{short_container_id}")
    } else if !host_name.is_empty() {
        format!("host:{host_name}")
    } else {
        let node = node();
        if node.is_empty() {
            String::new()
        } else {
            format!("host:{node}")
        }
    };
    let what = if is_detection && !signature_id.is_empty() {
        signature_id
    } else {
        by_default(event_name, "unknown")
    };
    let finding = join_nonempty(&["tracee", what, &scope], ":").replace(' ', "_");
    let return_value = match number(context.get("returnValue")) {
        Some(n) if !is_detection => integer(n)?.to_string(),
        _ => String::new(),
    };
    let facts: Vec<(String, String)> = [
        ("Signature", signature_id.to_string()),
        ("Severity", severity_text),
        ("MITRE ATT&CK", mitre),
        ("Event", event_text),
        ("Time", timestamp),
        ("Host", host_name.to_string()),
        ("Pod", pod),
        ("Container", container),
        ("Image", container_image.to_string()),
        ("Process", process),
        ("Executable", executable.to_string()),
        ("Syscall", syscall.to_string()),
        ("Return value", return_value),
        ("Triggered by", trigger_text),
        ("Policies", policies.join(", ")),
    ]
    .into_iter()
    // `prepare`: facts with a value, on one line.
    .map(|(label, value)| (label.to_string(), one_line(&value)))
    .filter(|(_, value)| !value.is_empty())
    .collect();
    let mut rows = Vec::new();
    for (name, value) in arg_list.iter().take(16) {
        rows.push((name.clone(), clip(&one_line(&text(value)?), 500)));
    }
    let sections = if rows.is_empty() {
        Vec::new()
    } else {
        vec![Section {
            heading: "Arguments".to_string(),
            rows,
        }]
    };
    let kind = if is_detection { "detection" } else { "event" };
    let tags = [
        "tracee",
        kind,
        signature_id,
        mitre_id,
        mitre_category,
        level,
    ]
    .into_iter()
    .filter(|t| !t.is_empty())
    .map(str::to_string)
    .collect();
    let card = Card {
        title: title.clone(),
        lead: description.to_string(),
        url: String::new(),
        vulns: None,
        facts,
        sections,
        severity: level,
        finding: finding.clone(),
        entity: scope.replace(':', " "),
        source: by_default(host_name, "tracee").to_string(),
        component: process_name.to_string(),
        group: pod_namespace.to_string(),
        class: by_default(mitre_category, by_default(event_name, "tracee")).to_string(),
        tags,
    };
    Ok((
        card,
        Facts {
            title,
            level,
            finding,
        },
    ))
}

/// What the templates read beside the card: `tracee.title`, `tracee.level`, `tracee.finding`.
pub struct Facts {
    pub title: String,
    pub level: &'static str,
    pub finding: String,
}

/// `trigger`: `input.detected_from`, else the object value of a `triggeredBy`/`detectedFrom`
/// argument; `None` for `{}`. Two different trigger arguments are left to Rego (a conflict there).
fn trigger<'a>(
    input: &'a Value,
    context: &'a Value,
) -> R<Option<&'a serde_json::Map<String, Value>>> {
    let found = match input.get("detected_from") {
        Some(Value::Object(t)) => Some(t),
        _ => {
            let mut found: Option<&serde_json::Map<String, Value>> = None;
            if let Some(Value::Array(args)) = context.get("args") {
                for a in args {
                    let is_trigger = a
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| TRIGGER_ARGS.contains(&n));
                    if let (true, Some(Value::Object(t))) = (is_trigger, a.get("value")) {
                        if found.is_some_and(|f| f != t) {
                            return Err(Unsupported);
                        }
                        found = Some(t);
                    }
                }
            }
            found
        }
    };
    Ok(found.filter(|t| !t.is_empty()))
}

/// `time.format([ns, "UTC", "RFC3339"])`: whole seconds, `Z`.
fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

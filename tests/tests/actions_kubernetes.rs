//! The `kubernetes` action against a local fake API server (there is no real one on these
//! machines): it answers the few API paths the action uses with pods and ReplicaSets the test
//! defines, and the tests assert the exact requests kube-rs sends — method, path, query, headers
//! (merge patches as `application/merge-patch+json`) and body (DeleteOptions carry `dryRun` and
//! the UID precondition in the body, as the API documents).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hooker_tests::{Agent, Recorded, Reply, Sink, TempDir, fixture, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-123";

/// A pod as the API returns it. `owner` is its controller (kind, name).
fn pod(namespace: &str, name: &str, image: &str, owner: Option<(&str, &str)>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": image}]},
        "status": {"containerStatuses": [{"name": "main", "image": image, "imageID": format!("docker-pullable://{image}@sha256:0000")}]}
    });
    if let Some((kind, owner)) = owner {
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "x", "controller": true}]);
    }
    pod
}

fn list(items: Vec<Value>) -> Reply {
    Reply::json(
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
    )
}

/// The API's error answer.
fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply::json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}),
    )
}

/// A fake API server: `routes` maps "METHOD /path" to a reply; anything else is 404.
async fn fake_api(routes: Vec<(&'static str, Reply)>) -> anyhow::Result<Sink> {
    Sink::with(move |request: &Recorded| {
        let key = format!("{} {}", request.method, request.path);
        routes
            .iter()
            .find(|(route, _)| *route == key)
            .map(|(_, reply)| reply.clone())
            .unwrap_or_else(|| status(404, "NotFound", &format!("{key} not found")))
    })
    .await
}

fn kubeconfig(dir: &TempDir, server: &str) -> String {
    let path = dir.join("kubeconfig");
    let text = format!(
        r#"apiVersion: v1
kind: Config
current-context: test
clusters:
  - name: fake
    cluster:
      server: {server}
users:
  - name: hooker
    user:
      token: {TOKEN}
contexts:
  - name: test
    context:
      cluster: fake
      user: hooker
      namespace: ignored
"#
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path.display().to_string()
}

/// A config with one route taking every event into the action `kube`, whose keys are `keys`.
fn config(kubeconfig: &str, keys: &str) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input
    template: raw
    actions: [kube]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: kube
    type: kubernetes
    enable: true
    retry-max-attempts: 1
    kube-config-file: {kubeconfig}
{keys}
"#
    )
}

async fn outcome(agent: &Agent) -> anyhow::Result<Value> {
    wait_until(
        "the kubernetes action to finish",
        Duration::from_secs(20),
        async || {
            agent.logs().into_iter().find(|l| {
                l["action"] == "kube"
                    && (l["message"] == "Kubernetes action applied."
                        || l["message"] == "Delivery failed.")
            })
        },
    )
    .await
}

fn assert_request(request: &Recorded, method: &str, path: &str, query: Option<&str>) {
    assert_eq!(request.method, method, "{request:?}");
    assert_eq!(request.path, path, "{request:?}");
    // kube-rs writes `path?&a=1` (and `path?` with no parameter): empty parameters, which the
    // API server ignores like any URL parser; the parameters and their order are compared.
    let sent = request.query.as_deref().map(|q| {
        q.split('&')
            .filter(|pair| !pair.is_empty())
            .collect::<Vec<_>>()
            .join("&")
    });
    assert_eq!(
        sent.as_deref().filter(|q| !q.is_empty()),
        query,
        "{request:?}"
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

fn assert_patch(request: &Recorded, path: &str, body: Value) {
    assert_patch_query(request, path, "fieldManager=hooker", body);
}

fn assert_patch_query(request: &Recorded, path: &str, query: &str, body: Value) {
    assert_request(request, "PATCH", path, Some(query));
    assert_eq!(
        request.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.body_json(), body);
}

#[tokio::test]
async fn kubernetes_labels_and_annotates_pods_selected_with_event_values() -> anyhow::Result<()> {
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/default/pods",
            list(vec![
                pod("default", "nginx-1", "nginx:1.25", None),
                pod("default", "nginx-2", "nginx:1.25", None),
            ]),
        ),
        (
            "PATCH /api/v1/namespaces/default/pods/nginx-1",
            Reply::json(200, json!({})),
        ),
        (
            "PATCH /api/v1/namespaces/default/pods/nginx-2",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-labels");
    let keys = r#"    kube-namespace: default
    kube-label-selector: app=event.input.SigMetadata.Hostname,tier!=db
    kube-actions:
      labels:
        hooker-alert: event.input.SigMetadata.ID
        quarantined: true
      annotations:
        hooker.dev/reason: "Tracee event.input.SigMetadata.ID on event.input.SigMetadata.Hostname""#;
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    let event = std::fs::read_to_string(fixture("postee/tracee-minimal.json"))?;
    agent.post("/", event).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    assert_eq!(
        done["detail"],
        "2 pod(s) selected; patched pod default/nginx-1, pod default/nginx-2"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_request(
        &requests[0],
        "GET",
        "/api/v1/namespaces/default/pods",
        Some("labelSelector=app%3Dnginx%2Ctier%21%3Ddb"),
    );
    let patch = json!({"metadata": {
        "labels": {"hooker-alert": "TRC-2", "quarantined": "true"},
        "annotations": {"hooker.dev/reason": "Tracee TRC-2 on nginx"}
    }});
    assert_patch(
        &requests[1],
        "/api/v1/namespaces/default/pods/nginx-1",
        patch.clone(),
    );
    assert_patch(
        &requests[2],
        "/api/v1/namespaces/default/pods/nginx-2",
        patch,
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_labels_the_deployments_running_the_image_a_trivy_operator_report_names()
-> anyhow::Result<()> {
    // postee/trivy-operator-input.json: index.docker.io/library/nginx:1.16 in namespace default.
    let api = fake_api(vec![
        ("GET /api/v1/namespaces/default/pods", list(vec![
            pod("default", "web-6d4cf56db6-a", "nginx:1.16", Some(("ReplicaSet", "web-6d4cf56db6"))),
            pod("default", "web-6d4cf56db6-b", "docker.io/library/nginx:1.16", Some(("ReplicaSet", "web-6d4cf56db6"))),
            pod("default", "db-0", "nginx:1.16", Some(("StatefulSet", "db"))),
            pod("default", "newer-1", "nginx:1.17", Some(("ReplicaSet", "newer-1"))),
            pod("default", "other-1", "quay.io/nginx:1.16", None),
        ])),
        ("GET /apis/apps/v1/namespaces/default/replicasets/web-6d4cf56db6", Reply::json(200, json!({
            "kind": "ReplicaSet",
            "metadata": {"name": "web-6d4cf56db6", "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d", "controller": true}]}
        }))),
        ("PATCH /apis/apps/v1/namespaces/default/deployments/web", Reply::json(200, json!({}))),
    ])
    .await?;
    let dir = TempDir::new("kube-deploy");
    let keys = r#"    kube-namespace: event.input.metadata.namespace
    kube-image: auto
    kube-target: deployments
    kube-actions:
      labels:
        hooker.dev/vulnerable: "true"
      annotations:
        hooker.dev/report: event.input.metadata.name"#;
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    let event = std::fs::read_to_string(fixture("postee/trivy-operator-input.json"))?;
    let report_name = serde_json::from_str::<Value>(&event)?["metadata"]["name"].clone();
    agent.post("/", event).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    assert_eq!(
        done["detail"],
        "3 pod(s) running docker.io/library/nginx:1.16; patched deployment default/web; skipped pod default/db-0 (no Deployment owns it)"
    );
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        3,
        "one list, one ReplicaSet lookup (cached), one patch: {requests:?}"
    );
    assert_request(&requests[0], "GET", "/api/v1/namespaces/default/pods", None);
    assert_request(
        &requests[1],
        "GET",
        "/apis/apps/v1/namespaces/default/replicasets/web-6d4cf56db6",
        None,
    );
    assert_patch(
        &requests[2],
        "/apis/apps/v1/namespaces/default/deployments/web",
        json!({"metadata": {"labels": {"hooker.dev/vulnerable": "true"}, "annotations": {"hooker.dev/report": report_name}}}),
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_workloads_target_patches_statefulsets_and_daemonsets() -> anyhow::Result<()> {
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/data/pods",
            list(vec![
                pod("data", "db-0", "redis:7", Some(("StatefulSet", "db"))),
                pod("data", "db-1", "redis:7", Some(("StatefulSet", "db"))),
                pod("data", "agent-x", "redis:7", Some(("DaemonSet", "agent"))),
                pod("data", "bare", "redis:7", None),
            ]),
        ),
        (
            "PATCH /apis/apps/v1/namespaces/data/daemonsets/agent",
            Reply::json(200, json!({})),
        ),
        (
            "PATCH /apis/apps/v1/namespaces/data/statefulsets/db",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-workloads");
    let keys = "    kube-namespace: data\n    kube-image: redis:7\n    kube-target: workloads\n    kube-dry-run: true\n    kube-actions:\n      labels:\n        checked: \"yes\"";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let done = outcome(&agent).await?;
    assert_eq!(
        done["detail"],
        "dry run; 4 pod(s) running docker.io/library/redis:7; patched daemonset data/agent, statefulset data/db; skipped pod data/bare (no workload owns it)",
        "{done}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for (request, path) in requests[1..].iter().zip([
        "/apis/apps/v1/namespaces/data/daemonsets/agent",
        "/apis/apps/v1/namespaces/data/statefulsets/db",
    ]) {
        assert_patch_query(
            request,
            path,
            "dryRun=All&fieldManager=hooker",
            json!({"metadata": {"labels": {"checked": "yes"}}}),
        );
    }
    Ok(())
}

#[tokio::test]
async fn kubernetes_deletes_pods_of_a_vulnerable_image_but_spares_daemonset_and_static_pods()
-> anyhow::Result<()> {
    // trivy/trivy-image-alpine-310.json names ghcr.io/aquasecurity/trivy-test-images:alpine-310.
    let image = "ghcr.io/aquasecurity/trivy-test-images:alpine-310";
    let mut mirror = pod(
        "kube-system",
        "static-node1",
        image,
        Some(("Node", "node1")),
    );
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    let mut terminating = pod("team-b", "going-away", image, Some(("ReplicaSet", "rs")));
    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let api = fake_api(vec![
        (
            "GET /api/v1/pods",
            list(vec![
                pod("team-a", "app-1", image, Some(("ReplicaSet", "app-rs"))),
                pod("team-a", "agent-x", image, Some(("DaemonSet", "agent"))),
                mirror,
                terminating,
                pod(
                    "team-a",
                    "safe-1",
                    "ghcr.io/aquasecurity/trivy-test-images:alpine-311",
                    None,
                ),
            ]),
        ),
        (
            "DELETE /api/v1/namespaces/team-a/pods/app-1",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-delete");
    let keys = "    kube-namespace: \"*\"\n    kube-image: auto\n    kube-delete-pods: true\n    kube-dry-run: true";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    let event = std::fs::read_to_string(fixture("trivy/trivy-image-alpine-310.json"))?;
    agent.post("/", event).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    assert_eq!(
        done["detail"],
        "dry run; 4 pod(s) running ghcr.io/aquasecurity/trivy-test-images:alpine-310; deleted pod team-a/app-1; skipped pod team-a/agent-x (DaemonSet pod), pod kube-system/static-node1 (static pod), pod team-b/going-away (already terminating)"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_request(&requests[0], "GET", "/api/v1/pods", None);
    // DeleteOptions in the body: dryRun there, as the API documents for DELETE.
    assert_request(
        &requests[1],
        "DELETE",
        "/api/v1/namespaces/team-a/pods/app-1",
        None,
    );
    assert_eq!(requests[1].header("content-type"), Some("application/json"));
    assert_eq!(
        requests[1].body_json(),
        json!({"dryRun": ["All"], "preconditions": {"uid": "uid-app-1"}})
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_deletes_the_pod_a_tracee_detection_came_from() -> anyhow::Result<()> {
    // The v0.12 TRC-1022 fixture names pod default/app-75ff449bcd-hfwnz.
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/default/pods",
            list(vec![pod(
                "default",
                "app-75ff449bcd-hfwnz",
                "ubuntu:latest",
                Some(("ReplicaSet", "app-75ff449bcd")),
            )]),
        ),
        (
            "DELETE /api/v1/namespaces/default/pods/app-75ff449bcd-hfwnz",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-tracee");
    let keys = "    kube-namespace: event.input.podNamespace\n    kube-pod-name: event.input.podName\n    kube-delete-pods: true";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    let event = std::fs::read_to_string(fixture(
        "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
    ))?;
    agent.post("/", event).await?;
    let done = outcome(&agent).await?;
    assert_eq!(
        done["detail"], "1 pod(s) selected; deleted pod default/app-75ff449bcd-hfwnz",
        "{done}"
    );
    let requests = api.requests();
    assert_request(
        &requests[0],
        "GET",
        "/api/v1/namespaces/default/pods",
        Some("fieldSelector=metadata.name%3Dapp-75ff449bcd-hfwnz"),
    );
    assert_request(
        &requests[1],
        "DELETE",
        "/api/v1/namespaces/default/pods/app-75ff449bcd-hfwnz",
        None,
    );
    assert_eq!(
        requests[1].body_json(),
        json!({"preconditions": {"uid": "uid-app-75ff449bcd-hfwnz"}})
    );
    Ok(())
}

/// The NetworkPolicy `kube-isolate-pods` creates in `namespace`: it selects the isolation label
/// and, with both policy types and no rule, lets no traffic in or out.
fn isolation_policy(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "hooker-isolate",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "hooker"}
        },
        "spec": {
            "podSelector": {"matchLabels": {"hooker.dev/isolated": "true"}},
            "policyTypes": ["Ingress", "Egress"]
        }
    })
}

fn assert_isolation(requests: &[Recorded], namespace: &str, pod: &str, query: &str) {
    assert_request(
        &requests[0],
        "POST",
        &format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"),
        Some(query),
    );
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].body_json(), isolation_policy(namespace));
    assert_patch_query(
        &requests[1],
        &format!("/api/v1/namespaces/{namespace}/pods/{pod}"),
        query,
        json!({"metadata": {"labels": {"hooker.dev/isolated": "true"}}}),
    );
}

#[tokio::test]
async fn kubernetes_isolates_the_pod_a_tracee_detection_came_from_in_a_dry_run()
-> anyhow::Result<()> {
    // The v0.12 TRC-1022 fixture names pod default/app-75ff449bcd-hfwnz.
    let pod_name = "app-75ff449bcd-hfwnz";
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/default/pods",
            list(vec![pod(
                "default",
                pod_name,
                "ubuntu:latest",
                Some(("ReplicaSet", "app-75ff449bcd")),
            )]),
        ),
        (
            "POST /apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
            Reply::json(201, isolation_policy("default")),
        ),
        (
            "PATCH /api/v1/namespaces/default/pods/app-75ff449bcd-hfwnz",
            Reply::json(200, pod("default", pod_name, "ubuntu:latest", None)),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-isolate");
    let keys = "    kube-namespace: event.input.podNamespace\n    kube-pod-name: event.input.podName\n    kube-isolate-pods: true\n    kube-dry-run: true";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    let event = std::fs::read_to_string(fixture(
        "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
    ))?;
    agent.post("/", event).await?;
    let done = outcome(&agent).await?;
    assert_eq!(
        done["detail"], "dry run; 1 pod(s) selected; isolated pod default/app-75ff449bcd-hfwnz",
        "{done}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "list, policy, label: {requests:?}");
    assert_isolation(
        &requests[1..],
        "default",
        pod_name,
        "dryRun=All&fieldManager=hooker",
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_isolation_keeps_the_policy_that_already_exists() -> anyhow::Result<()> {
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/shop/pods",
            list(vec![
                pod("shop", "web-1", "nginx:1", None),
                pod("shop", "web-2", "nginx:1", None),
            ]),
        ),
        (
            "POST /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
            status(
                409,
                "AlreadyExists",
                "networkpolicies.networking.k8s.io \"hooker-isolate\" already exists",
            ),
        ),
        (
            "PATCH /api/v1/namespaces/shop/pods/web-1",
            Reply::json(200, json!({})),
        ),
        (
            "PATCH /api/v1/namespaces/shop/pods/web-2",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-isolate-409");
    let keys = "    kube-namespace: shop\n    kube-isolate-pods: true";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    assert_eq!(
        done["detail"],
        "2 pod(s) selected; isolated pod shop/web-1, pod shop/web-2"
    );
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        4,
        "one policy for the namespace: {requests:?}"
    );
    assert_isolation(&requests[1..3], "shop", "web-1", "fieldManager=hooker");
    assert_eq!(requests[3].path, "/api/v1/namespaces/shop/pods/web-2");
    Ok(())
}

#[tokio::test]
async fn kubernetes_isolation_retries_when_the_policy_cannot_be_created() -> anyhow::Result<()> {
    // A 409 that is not AlreadyExists, and a 500: no pod is labelled, the delivery is retryable.
    for (code, reason) in [(409, "Conflict"), (500, "InternalError")] {
        let api = fake_api(vec![
            (
                "GET /api/v1/namespaces/shop/pods",
                list(vec![pod("shop", "web-1", "nginx:1", None)]),
            ),
            (
                "POST /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
                status(code, reason, "try again"),
            ),
        ])
        .await?;
        let dir = TempDir::new("kube-isolate-fail");
        let keys = "    kube-namespace: shop\n    kube-isolate-pods: true";
        let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
        agent.post("/", r#"{"x":1}"#).await?;
        let failed = outcome(&agent).await?;
        assert_eq!(failed["message"], "Delivery failed.", "{failed}");
        assert_eq!(failed["retryable"], true, "{failed}");
        assert!(
            failed["error"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("create networkpolicies: HTTP {code}: try again")),
            "{failed}"
        );
        assert!(
            api.requests().iter().all(|r| r.method != "PATCH"),
            "no pod labelled"
        );
    }
    Ok(())
}

#[tokio::test]
async fn kubernetes_without_kube_config_file_reads_the_kubeconfig_env_var() -> anyhow::Result<()> {
    let api = fake_api(vec![
        (
            "GET /api/v1/namespaces/default/pods",
            list(vec![pod("default", "p", "nginx:1", None)]),
        ),
        (
            "PATCH /api/v1/namespaces/default/pods/p",
            Reply::json(200, json!({})),
        ),
    ])
    .await?;
    let dir = TempDir::new("kube-env");
    let path = kubeconfig(&dir, &api.url(""));
    let cfg = r#"
routes:
  - name: r
    input: input
    template: raw
    actions: [kube]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: kube
    type: kubernetes
    enable: true
    retry-max-attempts: 1
    kube-namespace: default
    kube-actions:
      labels:
        seen: "yes"
"#;
    let agent = Agent::builder(cfg).env("KUBECONFIG", path).start().await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_patch(
        &requests[1],
        "/api/v1/namespaces/default/pods/p",
        json!({"metadata": {"labels": {"seen": "yes"}}}),
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_refuses_to_delete_more_pods_than_allowed() -> anyhow::Result<()> {
    let pods = (0..3)
        .map(|n| pod("default", &format!("p{n}"), "nginx:1", None))
        .collect();
    let api = fake_api(vec![("GET /api/v1/namespaces/default/pods", list(pods))]).await?;
    let dir = TempDir::new("kube-max");
    let keys = "    kube-namespace: default\n    kube-delete-pods: true\n    kube-max-deletions: 2";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let failed = outcome(&agent).await?;
    assert_eq!(failed["message"], "Delivery failed.");
    assert_eq!(failed["retryable"], false);
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("3 pods would be deleted, more than kube-max-deletions (2); deleted none"),
        "{failed}"
    );
    assert!(
        api.requests().iter().all(|r| r.method == "GET"),
        "nothing deleted"
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_retries_a_patch_that_meets_a_conflict() -> anyhow::Result<()> {
    let patches = Arc::new(Mutex::new(0));
    let counter = patches.clone();
    let api = Sink::with(move |request: &Recorded| match request.method.as_str() {
        "GET" => list(vec![pod("default", "p", "nginx:1", None)]),
        _ => {
            let mut n = counter.lock().expect("counter");
            *n += 1;
            if *n == 1 {
                status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified",
                )
            } else {
                Reply::json(200, json!({}))
            }
        }
    })
    .await?;
    let dir = TempDir::new("kube-conflict");
    let keys =
        "    kube-namespace: default\n    kube-actions:\n      labels:\n        seen: \"yes\"";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    let requests = api.requests();
    let patch = json!({"metadata": {"labels": {"seen": "yes"}}});
    assert_eq!(requests.len(), 3);
    assert_patch(
        &requests[1],
        "/api/v1/namespaces/default/pods/p",
        patch.clone(),
    );
    assert_patch(&requests[2], "/api/v1/namespaces/default/pods/p", patch);
    Ok(())
}

#[tokio::test]
async fn kubernetes_forbidden_is_permanent_and_points_at_rbac() -> anyhow::Result<()> {
    let api = fake_api(vec![(
        "GET /api/v1/namespaces/default/pods",
        status(403, "Forbidden", "pods is forbidden: User \"system:serviceaccount:hooker:hooker\" cannot list resource \"pods\""),
    )])
    .await?;
    let dir = TempDir::new("kube-403");
    let keys = "    kube-namespace: default\n    kube-actions:\n      labels:\n        a: b";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let failed = outcome(&agent).await?;
    assert_eq!(failed["retryable"], false, "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("HTTP 403")
            && error.contains("cannot list resource")
            && error.contains("RBAC"),
        "{failed}"
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_event_values_cannot_widen_the_selector() -> anyhow::Result<()> {
    let api = fake_api(vec![]).await?;
    let dir = TempDir::new("kube-inject");
    let keys = "    kube-namespace: default\n    kube-label-selector: app=event.input.app\n    kube-delete-pods: true";
    let agent = Agent::start(&config(&kubeconfig(&dir, &api.url("")), keys)).await?;
    agent.post("/", r#"{"app":"web,app!=web"}"#).await?;
    let failed = outcome(&agent).await?;
    assert_eq!(failed["retryable"], false, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid label value"),
        "{failed}"
    );
    assert!(api.requests().is_empty(), "no request may be sent");
    Ok(())
}

#[tokio::test]
async fn kubernetes_over_https_with_a_client_certificate() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A client CA and a client certificate it signed, as a cluster's kubeconfig would carry.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_params = rcgen::CertificateParams::new(vec!["hooker".to_string()])?;
    let client_key = rcgen::KeyPair::generate()?;
    let client_cert = client_params.signed_by(&client_key, &issuer)?;

    let api = Sink::mtls_with(
        |request: &Recorded| match request.method.as_str() {
            "GET" => list(vec![pod("default", "p", "nginx:1", None)]),
            _ => Reply::json(200, json!({})),
        },
        ca_cert.der().clone(),
    )
    .await?;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let dir = TempDir::new("kube-mtls");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: tls\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: tls\n  context:\n    cluster: c\n    user: u\n",
            api.url(""),
            b64(api.ca_pem().unwrap_or_default()),
            b64(&client_cert.pem()),
            b64(&client_key.serialize_pem()),
        ),
    )?;
    let keys =
        "    kube-namespace: default\n    kube-actions:\n      annotations:\n        seen: \"yes\"";
    let agent = Agent::start(&config(&path.display().to_string(), keys)).await?;
    agent.post("/", r#"{"x":1}"#).await?;
    let done = outcome(&agent).await?;
    assert_eq!(done["message"], "Kubernetes action applied.", "{done}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "a client certificate, no token"
    );
    assert_eq!(
        requests[1].body_json(),
        json!({"metadata": {"annotations": {"seen": "yes"}}})
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_config_errors_are_located() -> anyhow::Result<()> {
    let dir = TempDir::new("kube-validate");
    let kubeconfig_path = kubeconfig(&dir, "http://127.0.0.1:1");
    let check = async |keys: &str, expected: &str| -> anyhow::Result<()> {
        let path = dir.join("cfg.yaml");
        std::fs::write(&path, config(&kubeconfig_path, keys))?;
        let (code, _, stderr) =
            hooker_tests::hooker(&["validate", &path.display().to_string()], &[]).await?;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        Ok(())
    };
    check(
        "    kube-delete-pods: true",
        "action \"kube\", key `kube-namespace`: required",
    )
    .await?;
    check(
        "    kube-namespace: default",
        "key `kube-actions`: nothing to do",
    )
    .await?;
    check(
        "    kube-namespace: default\n    kube-actions:\n      labels:\n        a: \"not valid!\"",
        "is not a valid label value",
    )
    .await?;
    check(
        "    kube-namespace: default\n    kube-delete-pods: true\n    kube-target: replicasets",
        "kube-target",
    )
    .await?;
    check(
        "    kube-namespace: default\n    kube-delete-pods: true\n    kube-isolate-pods: true",
        "key `kube-isolate-pods`: `kube-isolate-pods` keeps the pods for inspection and `kube-delete-pods` deletes them: choose one",
    )
    .await?;
    let missing = config(
        "/nonexistent/kubeconfig",
        "    kube-namespace: default\n    kube-delete-pods: true",
    );
    std::fs::write(dir.join("cfg.yaml"), missing)?;
    let (code, _, stderr) = hooker_tests::hooker(
        &["validate", &dir.join("cfg.yaml").display().to_string()],
        &[],
    )
    .await?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("key `kube-config-file`: cannot read /nonexistent/kubeconfig"),
        "{stderr}"
    );
    Ok(())
}

//! `type: kubernetes`: selects pods (by namespace, label selector, name, and the image an event
//! names), then labels / annotates them or their owning workloads, isolates them with a deny-all
//! NetworkPolicy, or deletes them.
//!
//! Talks to the API server through kube-rs (`api.rs`), configured from a kubeconfig or the pod's
//! service account (`kubeconfig.rs`). Invariant: a value taken from an event is checked against
//! Kubernetes' name rules before it reaches a selector, a path or a label.

mod api;
mod kubeconfig;
mod pods;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use self::api::{Api, Written};
use self::kubeconfig::Source;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
use crate::image_ref::ImageRef;
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_DELETIONS: u32 = 10;
/// The label `kube-isolate-pods` puts on a pod, and the one its NetworkPolicy selects.
pub const ISOLATION_LABEL: &str = "hooker.dev/isolated";
/// The deny-all NetworkPolicy `kube-isolate-pods` creates in each namespace it isolates pods in.
pub const ISOLATION_POLICY: &str = "hooker-isolate";
/// `kube-image: auto` takes the image from the event (Trivy, trivy-operator, Aqua, Tracee).
const IMAGE_FROM_EVENT: &str = "auto";
const REPORT_LIMIT: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KubernetesConfig {
    /// Namespace of the pods; `*` for every namespace. May hold `event.input.<path>`.
    kube_namespace: Option<String>,
    /// kubeconfig path; without it, `KUBECONFIG`, else the pod's service account (in-cluster).
    #[serde(default)]
    kube_config_file: Option<PathBuf>,
    /// Context of the kubeconfig to use instead of its `current-context`.
    #[serde(default)]
    kube_context: Option<String>,
    /// Pod label selector. May hold `event.input.<path>` (each value must be a valid label value).
    #[serde(default)]
    kube_label_selector: Option<String>,
    /// One pod by name. May hold `event.input.<path>` (Tracee: `event.input.kubernetes.podName`).
    #[serde(default)]
    kube_pod_name: Option<String>,
    /// Only pods running this image: `auto` (the image the event names) or a reference.
    #[serde(default)]
    kube_image: Option<String>,
    /// What `kube-actions` applies to: the pods, or their owning workloads.
    #[serde(default)]
    kube_target: Option<Target>,
    /// Labels and annotations to merge in; values may hold `event.input.<path>`.
    #[serde(default)]
    kube_actions: Option<KubeActions>,
    /// Delete the selected pods (their controllers recreate them).
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    kube_delete_pods: bool,
    /// Cut the selected pods off the network: label them and create (if absent) a NetworkPolicy
    /// selecting that label with no ingress or egress rule in their namespace.
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    kube_isolate_pods: bool,
    /// Send every write with `dryRun=All`: the API server checks it and changes nothing.
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    kube_dry_run: bool,
    /// Also delete pods a DaemonSet owns (they come back on the same node at once).
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    kube_include_daemonset_pods: bool,
    /// Also try static (mirror) pods; the API cannot remove them, the kubelet recreates them.
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    kube_include_static_pods: bool,
    /// Refuse to delete anything when more pods than this would go. Default 10.
    #[serde(default)]
    kube_max_deletions: Option<u32>,
    /// Limit for each API request. Default 10 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
struct KubeActions {
    #[serde(default, deserialize_with = "de_string_map")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "de_string_map")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Pods,
    Deployments,
    StatefulSets,
    DaemonSets,
    /// Whichever of the three owns each pod.
    Workloads,
}

pub struct Kubernetes {
    name: String,
    namespace: String,
    label_selector: String,
    pod_name: Option<String>,
    image: Option<String>,
    target: Target,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    delete_pods: bool,
    isolate_pods: bool,
    dry_run: bool,
    include_daemonset_pods: bool,
    include_static_pods: bool,
    max_deletions: u32,
    timeout: Duration,
    source: Source,
    client: OnceCell<kube::Client>,
}

/// A workload that owns selected pods.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Workload {
    kind: &'static str,
    namespace: String,
    name: String,
}

/// What one delivery did, for the report and the log.
#[derive(Default)]
struct Outcome {
    selected: usize,
    patched: Vec<String>,
    isolated: Vec<String>,
    deleted: Vec<String>,
    skipped: Vec<String>,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<KubernetesConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let namespace = settings
        .kube_namespace
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            located(
                "kube-namespace",
                "required (a namespace, `event.input.<path>`, or `*` for every namespace)".into(),
            )
        })?;
    let actions = settings.kube_actions.unwrap_or_default();
    for key in actions.labels.keys().chain(actions.annotations.keys()) {
        pods::check_key(key).map_err(|why| located("kube-actions", why))?;
    }
    for value in actions
        .labels
        .values()
        .filter(|v| !v.contains("event.input"))
    {
        pods::check_label_value(value).map_err(|why| located("kube-actions", why))?;
    }
    let patches = !(actions.labels.is_empty() && actions.annotations.is_empty());
    if !patches && !settings.kube_delete_pods && !settings.kube_isolate_pods {
        return Err(located(
            "kube-actions",
            "nothing to do: set labels or annotations in `kube-actions`, `kube-isolate-pods: true` or `kube-delete-pods: true`".into(),
        ));
    }
    if settings.kube_isolate_pods && settings.kube_delete_pods {
        return Err(located(
            "kube-isolate-pods",
            "`kube-isolate-pods` keeps the pods for inspection and `kube-delete-pods` deletes them: choose one".into(),
        ));
    }
    let target = settings.kube_target.unwrap_or(Target::Pods);
    if settings.kube_delete_pods && target != Target::Pods && patches {
        warnings.push(located(
            "kube-target",
            "`kube-delete-pods` deletes the selected pods; `kube-target` applies only to `kube-actions`".into(),
        ));
    }
    let image = settings
        .kube_image
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty());
    if let Some(image) = image
        .as_deref()
        .filter(|i| *i != IMAGE_FROM_EVENT && !i.contains("event.input"))
    {
        ImageRef::parse(image).ok_or_else(|| {
            located(
                "kube-image",
                format!("`{image}` is not an image reference (or `auto`)"),
            )
        })?;
    }
    let timeout = settings.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let context = settings.kube_context.as_deref();
    let source = match &settings.kube_config_file {
        Some(path) => {
            Source::from_file(path, context).map_err(|why| located("kube-config-file", why))?
        }
        None => match Source::from_env(context).map_err(|why| located("kube-config-file", why))? {
            Some(source) => source,
            None => {
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                    warnings.push(located(
                        "kube-config-file",
                        "not set, KUBECONFIG is unset and not running in a pod (KUBERNETES_SERVICE_HOST is unset): deliveries fail until Hooker runs in a cluster".into(),
                    ));
                }
                Source::InCluster
            }
        },
    };
    Built::new(
        Kubernetes {
            name: config.name.clone(),
            namespace,
            label_selector: settings
                .kube_label_selector
                .unwrap_or_default()
                .trim()
                .to_string(),
            pod_name: settings
                .kube_pod_name
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
            image,
            target,
            labels: actions.labels,
            annotations: actions.annotations,
            delete_pods: settings.kube_delete_pods,
            isolate_pods: settings.kube_isolate_pods,
            dry_run: settings.kube_dry_run,
            include_daemonset_pods: settings.kube_include_daemonset_pods,
            include_static_pods: settings.kube_include_static_pods,
            max_deletions: settings.kube_max_deletions.unwrap_or(DEFAULT_MAX_DELETIONS),
            timeout,
            source,
            client: OnceCell::new(),
        },
        warnings,
    )
}

/// Label and annotation values may be written as numbers or booleans in YAML.
fn de_string_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    map.into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key, s)),
            Value::Number(n) => Ok((key, n.to_string())),
            Value::Bool(b) => Ok((key, b.to_string())),
            Value::Null => Ok((key, String::new())),
            other => Err(serde::de::Error::custom(format!(
                "`{key}`: expected a string, got {other}"
            ))),
        })
        .collect()
}

// === impl Kubernetes ===

impl Kubernetes {
    /// The API client, made at the first delivery (it needs the runtime; an exec plugin runs
    /// then, not at `hooker validate`). A failure is not kept: the next delivery tries again.
    async fn client(&self) -> Result<&kube::Client, ActionError> {
        self.client
            .get_or_try_init(|| async {
                self.source.client(self.timeout).await.map_err(|why| {
                    let place = match self.source {
                        Source::InCluster => "in-cluster config",
                        Source::Kubeconfig { .. } => "Kubernetes client",
                    };
                    ActionError::permanent(format!("{place}: {why}"))
                })
            })
            .await
    }

    /// `None` means every namespace.
    fn namespace(&self, message: &Message) -> Result<Option<String>, ActionError> {
        let namespace = message
            .substitute_checked(&self.namespace, pods::check_namespace)
            .map_err(|why| ActionError::permanent(format!("kube-namespace: {why}")))?;
        match namespace.trim() {
            "*" => Ok(None),
            "" => Err(ActionError::permanent(
                "kube-namespace resolved to an empty value",
            )),
            other => pods::check_namespace(other)
                .map(|()| Some(other.to_string()))
                .map_err(|why| ActionError::permanent(format!("kube-namespace: {why}"))),
        }
    }

    fn field_selector(&self, message: &Message) -> Result<String, ActionError> {
        let Some(template) = &self.pod_name else {
            return Ok(String::new());
        };
        let name = message
            .substitute_checked(template, pods::check_pod_name)
            .map_err(|why| ActionError::permanent(format!("kube-pod-name: {why}")))?;
        if name.is_empty() {
            return Err(ActionError::permanent(
                "kube-pod-name resolved to an empty value",
            ));
        }
        pods::check_pod_name(&name)
            .map_err(|why| ActionError::permanent(format!("kube-pod-name: {why}")))?;
        Ok(format!("metadata.name={name}"))
    }

    fn image(&self, message: &Message) -> Result<Option<ImageRef>, ActionError> {
        let Some(template) = &self.image else {
            return Ok(None);
        };
        if template == IMAGE_FROM_EVENT {
            let found = ImageRef::from_event(&message.event).or_else(|| {
                message
                    .body_json()
                    .and_then(|body| ImageRef::from_event(&body))
            });
            return found.map(Some).ok_or_else(|| {
                ActionError::permanent("kube-image: auto, but the event names no container image")
            });
        }
        let text = message.substitute(template);
        ImageRef::parse(&text).map(Some).ok_or_else(|| {
            ActionError::permanent(format!("kube-image: `{text}` is not an image reference"))
        })
    }

    /// The metadata merge patch, values substituted and checked.
    fn patch(&self, message: &Message) -> Result<Option<Value>, ActionError> {
        if self.labels.is_empty() && self.annotations.is_empty() {
            return Ok(None);
        }
        let mut labels = serde_json::Map::new();
        for (key, value) in &self.labels {
            let value = message.substitute(value);
            pods::check_label_value(&value)
                .map_err(|why| ActionError::permanent(format!("label {key}: {why}")))?;
            labels.insert(key.clone(), Value::String(value));
        }
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(message.substitute(value))))
            .collect();
        let mut metadata = serde_json::Map::new();
        if !labels.is_empty() {
            metadata.insert("labels".into(), Value::Object(labels));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), Value::Object(annotations));
        }
        Ok(Some(json!({ "metadata": metadata })))
    }

    /// The workloads owning `pods` that match the target kind; pods without one are reported.
    async fn owners(
        &self,
        api: &Api<'_>,
        pods: &[Value],
        outcome: &mut Outcome,
    ) -> Result<BTreeSet<Workload>, ActionError> {
        let mut replicasets: HashMap<(String, String), Option<String>> = HashMap::new();
        let mut workloads = BTreeSet::new();
        for pod in pods {
            let namespace = pods::text(pod, "metadata.namespace").to_string();
            let owner = match pods::controller(pod) {
                Some(("ReplicaSet", name)) => {
                    let key = (namespace.clone(), name.to_string());
                    if !replicasets.contains_key(&key) {
                        let deployment =
                            api.get_replicaset(&namespace, name).await?.and_then(|rs| {
                                match pods::controller(&rs) {
                                    Some(("Deployment", name)) => Some(name.to_string()),
                                    _ => None,
                                }
                            });
                        replicasets.insert(key.clone(), deployment);
                    }
                    replicasets[&key].clone().map(|name| ("Deployment", name))
                }
                Some(("StatefulSet", name)) => Some(("StatefulSet", name.to_string())),
                Some(("DaemonSet", name)) => Some(("DaemonSet", name.to_string())),
                _ => None,
            };
            let wanted = |kind: &str| match self.target {
                Target::Deployments => kind == "Deployment",
                Target::StatefulSets => kind == "StatefulSet",
                Target::DaemonSets => kind == "DaemonSet",
                Target::Workloads | Target::Pods => true,
            };
            match owner {
                Some((kind, name)) if wanted(kind) => {
                    workloads.insert(Workload {
                        kind,
                        namespace,
                        name,
                    });
                }
                _ => outcome.skipped.push(format!(
                    "pod {} (no {} owns it)",
                    pods::pod_id(pod),
                    self.target.noun()
                )),
            }
        }
        Ok(workloads)
    }

    async fn apply_patch(
        &self,
        api: &Api<'_>,
        patch: &Value,
        pods: &[Value],
        outcome: &mut Outcome,
    ) -> Result<(), ActionError> {
        let mut targets: Vec<(String, String, String)> = Vec::new();
        if self.target == Target::Pods {
            for pod in pods {
                targets.push((
                    pods_collection(pods::text(pod, "metadata.namespace")),
                    pods::text(pod, "metadata.name").to_string(),
                    format!("pod {}", pods::pod_id(pod)),
                ));
            }
        } else {
            for workload in self.owners(api, pods, outcome).await? {
                let collection = format!(
                    "/apis/apps/v1/namespaces/{}/{}",
                    workload.namespace,
                    workload.plural(),
                );
                targets.push((
                    collection,
                    workload.name.clone(),
                    format!(
                        "{} {}/{}",
                        workload.kind.to_ascii_lowercase(),
                        workload.namespace,
                        workload.name
                    ),
                ));
            }
        }
        for (collection, name, what) in targets {
            match api.merge_patch(&collection, &name, patch).await? {
                Written::Done | Written::Exists => outcome.patched.push(what),
                Written::Gone | Written::Replaced => outcome.skipped.push(format!("{what} (gone)")),
            }
        }
        Ok(())
    }

    /// Creates the deny-all NetworkPolicy in each namespace of `pods` (if absent), then labels
    /// each pod so the policy selects it. The policy goes first: a pod is cut off the moment it
    /// is labelled, and a retry after a failure in between repeats both steps harmlessly.
    async fn isolate(
        &self,
        api: &Api<'_>,
        pods: &[Value],
        outcome: &mut Outcome,
    ) -> Result<(), ActionError> {
        let mut chosen = Vec::new();
        for pod in pods {
            let id = pods::pod_id(pod);
            if pods::is_terminating(pod) {
                outcome
                    .skipped
                    .push(format!("pod {id} (already terminating)"));
            } else if pods::is_static(pod) && !self.include_static_pods {
                outcome.skipped.push(format!("pod {id} (static pod)"));
            } else {
                chosen.push(pod);
            }
        }
        let namespaces: BTreeSet<&str> = chosen
            .iter()
            .map(|pod| pods::text(pod, "metadata.namespace"))
            .collect();
        for namespace in namespaces {
            let collection =
                format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies");
            api.create_if_absent(&collection, &isolation_policy(namespace), "networkpolicies")
                .await?;
        }
        let label = json!({ "metadata": { "labels": { ISOLATION_LABEL: "true" } } });
        for pod in chosen {
            let id = pods::pod_id(pod);
            let collection = pods_collection(pods::text(pod, "metadata.namespace"));
            match api
                .merge_patch(&collection, pods::text(pod, "metadata.name"), &label)
                .await?
            {
                Written::Done | Written::Exists => outcome.isolated.push(format!("pod {id}")),
                Written::Gone | Written::Replaced => {
                    outcome.skipped.push(format!("pod {id} (gone)"))
                }
            }
        }
        Ok(())
    }

    async fn delete(
        &self,
        api: &Api<'_>,
        pods: &[Value],
        outcome: &mut Outcome,
    ) -> Result<(), ActionError> {
        let mut doomed = Vec::new();
        for pod in pods {
            let id = pods::pod_id(pod);
            if pods::is_terminating(pod) {
                outcome
                    .skipped
                    .push(format!("pod {id} (already terminating)"));
            } else if pods::is_static(pod) && !self.include_static_pods {
                outcome.skipped.push(format!("pod {id} (static pod)"));
            } else if pods::is_daemonset_pod(pod) && !self.include_daemonset_pods {
                outcome.skipped.push(format!("pod {id} (DaemonSet pod)"));
            } else {
                doomed.push(pod);
            }
        }
        if doomed.len() > self.max_deletions as usize {
            return Err(ActionError::permanent(format!(
                "{} pods would be deleted, more than kube-max-deletions ({}); deleted none",
                doomed.len(),
                self.max_deletions
            )));
        }
        for pod in doomed {
            let id = pods::pod_id(pod);
            let written = api
                .delete_pod(
                    pods::text(pod, "metadata.namespace"),
                    pods::text(pod, "metadata.name"),
                    pods::text(pod, "metadata.uid"),
                )
                .await?;
            match written {
                Written::Done => outcome.deleted.push(format!("pod {id}")),
                Written::Gone => outcome.skipped.push(format!("pod {id} (gone)")),
                Written::Replaced | Written::Exists => outcome
                    .skipped
                    .push(format!("pod {id} (replaced by a new pod)")),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Action for Kubernetes {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        // Everything taken from the event is resolved and checked before any request.
        let namespace = self.namespace(message)?;
        let label_selector = message
            .substitute_checked(&self.label_selector, pods::check_label_value)
            .map_err(|why| ActionError::permanent(format!("kube-label-selector: {why}")))?;
        let field_selector = self.field_selector(message)?;
        let image = self.image(message)?;
        let patch = self.patch(message)?;

        let client = self.client().await?;
        let api = Api::new(client, self.dry_run);
        let mut pods = api
            .list_pods(namespace.as_deref(), &label_selector, &field_selector)
            .await?;
        if let Some(image) = &image {
            pods.retain(|pod| pods::runs_image(pod, image));
        }
        let mut outcome = Outcome {
            selected: pods.len(),
            ..Outcome::default()
        };
        if let Some(patch) = &patch {
            self.apply_patch(&api, patch, &pods, &mut outcome).await?;
        }
        if self.isolate_pods {
            self.isolate(&api, &pods, &mut outcome).await?;
        }
        if self.delete_pods {
            self.delete(&api, &pods, &mut outcome).await?;
        }
        let summary = outcome.summary(self.dry_run, image.as_ref());
        tracing::info!(action = %self.name, selected = outcome.selected, patched = outcome.patched.len(), isolated = outcome.isolated.len(), deleted = outcome.deleted.len(), skipped = outcome.skipped.len(), dry_run = self.dry_run, detail = %summary, "Kubernetes action applied.");
        Ok(Report::detail(summary))
    }

    fn preview(&self, message: &Message) -> Value {
        json!({
            "namespace": message.substitute(&self.namespace),
            "label_selector": message.substitute(&self.label_selector),
            "pod_name": self.pod_name.as_deref().map(|p| message.substitute(p)),
            "image": self.image(message).ok().flatten().map(|i| i.to_string()),
            "target": self.target.noun(),
            "patch": self.patch(message).ok().flatten(),
            "isolate_pods": self.isolate_pods.then(|| json!({
                "label": { ISOLATION_LABEL: "true" },
                "network_policy": ISOLATION_POLICY,
            })),
            "delete_pods": self.delete_pods,
            "dry_run": self.dry_run,
        })
    }
}

fn pods_collection(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

/// The NetworkPolicy `kube-isolate-pods` creates: it selects the isolation label and, listing both
/// policy types with no rule, allows no traffic in or out of the pods it selects.
fn isolation_policy(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(ISOLATION_POLICY.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "hooker".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    ISOLATION_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ..NetworkPolicySpec::default()
        }),
    }
}

// === impl Target ===

impl Target {
    fn noun(self) -> &'static str {
        match self {
            Target::Pods => "pods",
            Target::Deployments => "Deployment",
            Target::StatefulSets => "StatefulSet",
            Target::DaemonSets => "DaemonSet",
            Target::Workloads => "workload",
        }
    }
}

// === impl Workload ===

impl Workload {
    fn plural(&self) -> &'static str {
        match self.kind {
            "Deployment" => "deployments",
            "StatefulSet" => "statefulsets",
            _ => "daemonsets",
        }
    }
}

// === impl Outcome ===

impl Outcome {
    fn summary(&self, dry_run: bool, image: Option<&ImageRef>) -> String {
        let mut parts = Vec::new();
        if dry_run {
            parts.push("dry run".to_string());
        }
        match image {
            Some(image) => parts.push(format!("{} pod(s) running {image}", self.selected)),
            None => parts.push(format!("{} pod(s) selected", self.selected)),
        }
        if !self.patched.is_empty() {
            parts.push(format!("patched {}", self.patched.join(", ")));
        }
        if !self.isolated.is_empty() {
            parts.push(format!("isolated {}", self.isolated.join(", ")));
        }
        if !self.deleted.is_empty() {
            parts.push(format!("deleted {}", self.deleted.join(", ")));
        }
        if !self.skipped.is_empty() {
            parts.push(format!("skipped {}", self.skipped.join(", ")));
        }
        super::excerpt(parts.join("; ").as_bytes(), REPORT_LIMIT)
    }
}

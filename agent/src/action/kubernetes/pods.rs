//! Reading pod objects (as JSON from the API): their images, their controlling owner, whether they
//! are static or DaemonSet pods; and the Kubernetes name rules that event values must follow
//! before they go into a selector, a path or a label.

use serde_json::Value;

use crate::image_ref::ImageRef;
use crate::message::lookup_path;

/// `namespace/name`, for reports.
pub fn pod_id(pod: &Value) -> String {
    format!(
        "{}/{}",
        text(pod, "metadata.namespace"),
        text(pod, "metadata.name")
    )
}

pub fn text<'a>(object: &'a Value, path: &str) -> &'a str {
    lookup_path(object, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether any container of the pod (init, regular or ephemeral; by spec or by the image the
/// kubelet reports running) runs `image`.
pub fn runs_image(pod: &Value, image: &ImageRef) -> bool {
    let spec = [
        "spec.initContainers",
        "spec.containers",
        "spec.ephemeralContainers",
    ];
    let status = ["status.initContainerStatuses", "status.containerStatuses"];
    let from_spec = spec
        .iter()
        .flat_map(|path| items(pod, path))
        .map(|c| text(c, "image"));
    let from_status = status
        .iter()
        .flat_map(|path| items(pod, path))
        .flat_map(|c| [text(c, "image"), text(c, "imageID")]);
    from_spec
        .chain(from_status)
        .filter_map(ImageRef::parse)
        .any(|running| image.matches(&running))
}

/// The owner reference marked `controller: true`, as (kind, name).
pub fn controller(object: &Value) -> Option<(&str, &str)> {
    items(object, "metadata.ownerReferences")
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|owner| (text(owner, "kind"), text(owner, "name")))
}

/// A static pod's mirror, which the API cannot really delete (the kubelet recreates it).
pub fn is_static(pod: &Value) -> bool {
    lookup_path(pod, "metadata.annotations")
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some()
        || controller(pod).is_some_and(|(kind, _)| kind == "Node")
}

pub fn is_daemonset_pod(pod: &Value) -> bool {
    controller(pod).is_some_and(|(kind, _)| kind == "DaemonSet")
}

pub fn is_terminating(pod: &Value) -> bool {
    lookup_path(pod, "metadata.deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn items<'a>(object: &'a Value, path: &str) -> impl Iterator<Item = &'a Value> {
    lookup_path(object, path)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

// === Kubernetes name rules ===

/// A label value: at most 63 characters, alphanumerics with `-_.` inside; may be empty.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid label value (at most 63 characters: letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit); put it in an annotation instead",
        shorten(value)
    ))
}

/// A label or annotation key: `name` or `prefix/name` (prefix a DNS subdomain).
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if is_label_name(name) && prefix.is_none_or(is_dns_subdomain) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid key (`name` or `prefix/name`; name at most 63 characters of letters, digits, `-`, `_`, `.`)",
        shorten(key)
    ))
}

/// A namespace name: a DNS label.
pub fn check_namespace(value: &str) -> Result<(), String> {
    if is_dns_label(value) {
        return Ok(());
    }
    Err(format!("`{}` is not a namespace name", shorten(value)))
}

/// A pod name: a DNS subdomain.
pub fn check_pod_name(value: &str) -> Result<(), String> {
    if is_dns_subdomain(value) {
        return Ok(());
    }
    Err(format!("`{}` is not a pod name", shorten(value)))
}

fn is_label_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns_label)
}

fn shorten(value: &str) -> String {
    crate::action::excerpt(value.as_bytes(), 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(check_label_value("CVE-2021-3121").is_ok());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("nginx:1.16").is_err());
        assert!(check_label_value("a,b").is_err());
        assert!(check_label_value("x!=y").is_err());
        assert!(check_key("hooker.dev/vulnerable").is_ok());
        assert!(check_key("vulnerable").is_ok());
        assert!(check_key("Bad_Prefix/x").is_err());
        assert!(check_namespace("kube-system").is_ok());
        assert!(check_namespace("Default").is_err());
        assert!(check_pod_name("web-0.x").is_ok());
        assert!(check_pod_name("web/0").is_err());
    }

    #[test]
    fn pods_are_matched_by_spec_or_running_image() {
        let pod = json!({
            "spec": {"containers": [{"image": "nginx:1.16"}]},
            "status": {"containerStatuses": [{"image": "docker.io/library/nginx:1.16",
                "imageID": "docker-pullable://nginx@sha256:abc"}]}
        });
        assert!(runs_image(
            &pod,
            &ImageRef::parse("docker.io/library/nginx:1.16").unwrap()
        ));
        assert!(runs_image(
            &pod,
            &ImageRef::parse("nginx@sha256:abc").unwrap()
        ));
        assert!(!runs_image(&pod, &ImageRef::parse("nginx:1.17").unwrap()));
    }

    #[test]
    fn static_and_daemonset_pods_are_recognised() {
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}});
        assert!(is_static(&mirror));
        let node_owned = json!({"metadata": {"ownerReferences": [{"kind": "Node", "name": "n1", "controller": true}]}});
        assert!(is_static(&node_owned));
        let ds = json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet", "name": "d", "controller": true}]}});
        assert!(is_daemonset_pod(&ds) && !is_static(&ds));
    }
}

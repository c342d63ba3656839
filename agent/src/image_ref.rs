//! Container image references (`nginx`, `docker.io/library/nginx:1.16`, `repo@sha256:…`): parsing,
//! normalising the way Docker and Kubernetes do, matching, and finding the image a security event
//! is about (Trivy, trivy-operator, Aqua, Tracee).
//!
//! Pure: no I/O. Used by the `docker` action (pull policy) and the `kubernetes` action (select the
//! pods that run the image named in an event).

use std::fmt;

/// Docker Hub, as normalised references name it.
const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference. Registry and repository are normalised (`nginx` is
/// `docker.io/library/nginx`); tag and digest are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference. Accepts the runtime prefixes Kubernetes puts on image IDs
    /// (`docker-pullable://`, `docker://`). Returns `None` for text that cannot be a reference.
    pub fn parse(text: &str) -> Option<ImageRef> {
        let text = text.trim();
        let text = ["docker-pullable://", "docker://", "containerd://"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
            .unwrap_or(text);
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return None;
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) if digest.contains(':') => (name, Some(digest.to_string())),
            Some(_) => return None,
            None => (text, None),
        };
        let last_slash = name.rfind('/').map_or(0, |at| at + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(colon) => {
                let at = last_slash + colon;
                (&name[..at], Some(name[at + 1..].to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (normalise_registry(first), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        Some(ImageRef {
            registry,
            repository: repository.to_ascii_lowercase(),
            tag,
            digest,
        })
    }

    /// Builds a reference from separate parts (trivy-operator's `registry.server`,
    /// `artifact.repository`, `artifact.tag` / `artifact.digest`).
    pub fn from_parts(
        registry: Option<&str>,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Option<ImageRef> {
        let mut text = match registry.filter(|r| !r.is_empty()) {
            Some(registry) => format!("{registry}/{repository}"),
            None => repository.to_string(),
        };
        if let Some(tag) = tag.filter(|t| !t.is_empty()) {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = digest.filter(|d| !d.is_empty()) {
            text.push('@');
            text.push_str(digest);
        }
        ImageRef::parse(&text)
    }

    /// Finds the image a security event is about: trivy-operator's report, Trivy's JSON
    /// (`Metadata.Reference`, `RepoTags`, `ArtifactName`), Aqua's `image`, Tracee's container image.
    pub fn from_event(event: &serde_json::Value) -> Option<ImageRef> {
        let text = |path: &str| -> Option<&str> {
            crate::message::lookup_path(event, path)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.trim().is_empty())
        };
        if let Some(repository) = text("report.artifact.repository") {
            return ImageRef::from_parts(
                text("report.registry.server"),
                repository,
                text("report.artifact.tag"),
                text("report.artifact.digest"),
            );
        }
        let trivy = [
            text("Metadata.Reference"),
            text("Metadata.RepoTags.0"),
            text("ArtifactName").filter(|name| {
                text("ArtifactType").is_none_or(|kind| kind == "container_image")
                    && !looks_like_a_file(name)
            }),
        ];
        let others = [
            text("image"),
            text("containerImage"),
            text("container.image"),
        ];
        trivy
            .into_iter()
            .chain(others)
            .flatten()
            .find_map(ImageRef::parse)
    }

    /// Whether a running image (`running`, e.g. a pod's `spec.containers[].image` or its
    /// `imageID`) is this reference. Registry and repository must be equal; a digest, when both
    /// have one, decides; otherwise a tag must be equal (no tag means `latest` on the running
    /// side); a reference with neither tag nor digest matches every tag of the repository.
    pub fn matches(&self, running: &ImageRef) -> bool {
        if self.registry != running.registry || self.repository != running.repository {
            return false;
        }
        if let (Some(want), Some(have)) = (&self.digest, &running.digest) {
            return want == have;
        }
        match (&self.tag, &self.digest) {
            (Some(tag), _) => running.tag.as_deref().unwrap_or("latest") == tag,
            (None, Some(_)) => false,
            (None, None) => true,
        }
    }

    /// The reference to pull: with `:latest` when neither tag nor digest was given (the Engine
    /// API would pull every tag of the repository otherwise).
    pub fn pullable(&self) -> String {
        let mut text = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (None, None) => text.push_str(":latest"),
            (tag, digest) => {
                if let Some(tag) = tag {
                    text.push(':');
                    text.push_str(tag);
                }
                if let Some(digest) = digest {
                    text.push('@');
                    text.push_str(digest);
                }
            }
        }
        text
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn normalise_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => registry,
    }
}

/// Trivy's `ArtifactName` is a path when it scanned an image archive.
fn looks_like_a_file(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".json", ".xml"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
        || name.starts_with('/')
        || name.starts_with("./")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, normalised: &str) {
        let parsed = ImageRef::parse(text).unwrap_or_else(|| panic!("{text} should parse"));
        assert_eq!(parsed.to_string(), normalised, "{text}");
    }

    #[test]
    fn references_normalise_like_docker() {
        check("nginx", "docker.io/library/nginx");
        check("nginx:1.16", "docker.io/library/nginx:1.16");
        check("library/nginx:1.16", "docker.io/library/nginx:1.16");
        check(
            "index.docker.io/library/nginx:1.16",
            "docker.io/library/nginx:1.16",
        );
        check("coredns/coredns:v1.8.0", "docker.io/coredns/coredns:v1.8.0");
        check(
            "k8s.gcr.io/coredns/coredns:v1.8.0",
            "k8s.gcr.io/coredns/coredns:v1.8.0",
        );
        check("localhost:5000/app", "localhost:5000/app");
        check(
            "docker-pullable://nginx@sha256:abc",
            "docker.io/library/nginx@sha256:abc",
        );
        check(
            "registry.example.com:5000/team/app:2@sha256:abc",
            "registry.example.com:5000/team/app:2@sha256:abc",
        );
        assert_eq!(ImageRef::parse(""), None);
        assert_eq!(ImageRef::parse("nginx:"), None);
        assert_eq!(ImageRef::parse("two words"), None);
    }

    #[test]
    fn matching_compares_repository_then_digest_or_tag() {
        let want = |t: &str| ImageRef::parse(t).unwrap();
        assert!(want("nginx:1.16").matches(&want("docker.io/library/nginx:1.16")));
        assert!(!want("nginx:1.16").matches(&want("nginx:1.17")));
        assert!(want("nginx:latest").matches(&want("nginx")));
        assert!(want("nginx").matches(&want("nginx:1.17")));
        assert!(!want("nginx:1.16").matches(&want("quay.io/nginx:1.16")));
        assert!(want("nginx@sha256:abc").matches(&want("docker-pullable://nginx@sha256:abc")));
        assert!(!want("nginx@sha256:abc").matches(&want("nginx@sha256:def")));
        assert!(!want("nginx@sha256:abc").matches(&want("nginx:1.16")));
    }

    #[test]
    fn pullable_reference_always_names_one_tag() {
        assert_eq!(
            ImageRef::parse("busybox").unwrap().pullable(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            ImageRef::parse("hooker-test-busybox:latest")
                .unwrap()
                .pullable(),
            "docker.io/library/hooker-test-busybox:latest"
        );
    }

    #[test]
    fn events_name_their_image() {
        let operator = json!({"report": {"registry": {"server": "index.docker.io"},
            "artifact": {"repository": "library/nginx", "tag": "1.16"}}});
        assert_eq!(
            ImageRef::from_event(&operator).unwrap().to_string(),
            "docker.io/library/nginx:1.16"
        );
        let trivy = json!({"ArtifactName": "testdata/alpine-310.tar.gz", "ArtifactType": "container_image",
            "Metadata": {"RepoTags": ["ghcr.io/aquasecurity/trivy-test-images:alpine-310"]}});
        assert_eq!(
            ImageRef::from_event(&trivy).unwrap().to_string(),
            "ghcr.io/aquasecurity/trivy-test-images:alpine-310"
        );
        let trivy_name = json!({"ArtifactName": "alpine:3.10", "ArtifactType": "container_image"});
        assert_eq!(
            ImageRef::from_event(&trivy_name).unwrap().to_string(),
            "docker.io/library/alpine:3.10"
        );
        let filesystem = json!({"ArtifactName": "pom.xml", "ArtifactType": "filesystem"});
        assert_eq!(ImageRef::from_event(&filesystem), None);
        let tracee = json!({"containerImage": "docker.io/library/ubuntu:latest"});
        assert_eq!(
            ImageRef::from_event(&tracee).unwrap().to_string(),
            "docker.io/library/ubuntu:latest"
        );
        let tracee_new = json!({"container": {"image": "nginx:1.25"}});
        assert_eq!(
            ImageRef::from_event(&tracee_new).unwrap().to_string(),
            "docker.io/library/nginx:1.25"
        );
        let aqua = json!({"image": "all-in-one:3.5.19223", "registry": "Aqua"});
        assert_eq!(
            ImageRef::from_event(&aqua).unwrap().to_string(),
            "docker.io/library/all-in-one:3.5.19223"
        );
    }
}

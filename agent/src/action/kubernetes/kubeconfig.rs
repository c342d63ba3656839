//! Where the Kubernetes API is and how to authenticate, handed to kube-rs: a kubeconfig (the
//! action's `kube-config-file`, else the files `KUBECONFIG` names) or the pod's service account.
//!
//! kube-rs reads every kubeconfig form kubectl reads (token, token file, client certificate,
//! basic auth, exec credential plugins) and re-reads a token file as it rotates. What is checked
//! here is what `hooker validate` can tell before any request: the file reads, parses, and names
//! the context, cluster and user it uses.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where an action's API connection comes from.
pub enum Source {
    /// A kubeconfig read and checked at build, and the context to use in it.
    Kubeconfig {
        kubeconfig: Box<Kubeconfig>,
        context: String,
    },
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted CA and token.
    InCluster,
}

// === impl Source ===

impl Source {
    /// Reads a kubeconfig file; `context` overrides its `current-context`. Relative paths in it
    /// are relative to the file's directory, as kubectl reads them.
    pub fn from_file(path: &Path, context: Option<&str>) -> Result<Source, String> {
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|err| format!("{} is not a kubeconfig: {err}", path.display()))?;
        Source::checked(kubeconfig, context)
    }

    /// The kubeconfig files `KUBECONFIG` names (merged as kubectl merges them), if it is set.
    pub fn from_env(context: Option<&str>) -> Result<Option<Source>, String> {
        match Kubeconfig::from_env() {
            Ok(Some(kubeconfig)) => Source::checked(kubeconfig, context).map(Some),
            Ok(None) => Ok(None),
            Err(err) => Err(format!("KUBECONFIG: {err}")),
        }
    }

    fn checked(kubeconfig: Kubeconfig, context: Option<&str>) -> Result<Source, String> {
        let name = context
            .map(str::to_string)
            .or(kubeconfig.current_context.clone())
            .filter(|c| !c.is_empty())
            .ok_or("the kubeconfig has no current-context; set kube-context")?;
        let found = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| format!("the kubeconfig has no context named \"{name}\""))?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == found.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| format!("the kubeconfig has no cluster named \"{}\"", found.cluster))?;
        if cluster.server.as_deref().is_none_or(str::is_empty) {
            return Err(format!("cluster \"{}\" has no server", found.cluster));
        }
        if let Some(user) = found.user.as_deref().filter(|u| !u.is_empty())
            && !kubeconfig.auth_infos.iter().any(|u| u.name == user)
        {
            return Err(format!("the kubeconfig has no user named \"{user}\""));
        }
        Ok(Source::Kubeconfig {
            kubeconfig: Box::new(kubeconfig),
            context: name,
        })
    }

    /// A client for this source. `timeout` bounds connecting, and each read and write.
    pub async fn client(&self, timeout: Duration) -> Result<kube::Client, String> {
        let mut config = match self {
            Source::Kubeconfig {
                kubeconfig,
                context,
            } => {
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig.as_ref().clone(), &options)
                    .await
                    .map_err(|err| format!("kubeconfig: {}", super::api::chain(&err)))?
            }
            Source::InCluster => in_cluster(Path::new(SERVICE_ACCOUNT_DIR))?,
        };
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        // The outbox retries a failed delivery; a second retry loop underneath would hide it.
        config.default_retry = false;
        kube::Client::try_from(config)
            .map_err(|err| format!("cannot build the API client: {}", super::api::chain(&err)))
    }
}

/// The pod's own service account, from `dir` (the mounted CA and token).
fn in_cluster(dir: &Path) -> Result<kube::Config, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
        "KUBERNETES_SERVICE_HOST is not set: not running in a pod; set kube-config-file or KUBECONFIG"
    })?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    service_account(&host, &port, dir)
}

fn service_account(host: &str, port: &str, dir: &Path) -> Result<kube::Config, String> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("https://{host}:{port}")
        .parse::<http::Uri>()
        .map_err(|err| format!("KUBERNETES_SERVICE_HOST/PORT: {err}"))?;
    let ca_path = dir.join("ca.crt");
    let pem = std::fs::read(&ca_path)
        .map_err(|err| format!("cannot read {}: {err}", ca_path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{} is not PEM: {err}", ca_path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no certificate in it", ca_path.display()));
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(certificates);
    config.root_cert_file = Some(ca_path);
    // kube-rs re-reads the file as projected tokens rotate.
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);

    impl Dir {
        fn new(label: &str) -> Dir {
            let path = std::env::temp_dir()
                .join(format!("hooker-kubeconfig-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ca_pem() -> String {
        crate::tls::install_crypto_provider();
        rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    fn load(dir: &Dir, text: &str, context: Option<&str>) -> Result<Source, String> {
        let path = dir.0.join("config");
        std::fs::write(&path, text).unwrap();
        Source::from_file(&path, context)
    }

    #[test]
    fn kubeconfig_problems_are_explained() {
        let dir = Dir::new("problems");
        let base = "clusters:\n- name: c\n  cluster:\n    server: https://k\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: gone, user: u}\n- name: d\n  context: {cluster: c, user: nobody}\n";
        let err = |context| load(&dir, base, context).err().unwrap_or_default();
        assert!(err(None).contains("no current-context"), "{}", err(None));
        assert!(err(Some("x")).contains("no context named \"x\""));
        assert!(err(Some("b")).contains("no cluster named \"gone\""));
        assert!(err(Some("d")).contains("no user named \"nobody\""));
        assert!(load(&dir, base, Some("a")).is_ok());
        let missing = Source::from_file(&dir.0.join("nope"), None).err();
        assert!(missing.unwrap_or_default().contains("cannot read"));
    }

    #[test]
    fn kubeconfig_exec_plugins_are_accepted() {
        // kube-rs runs them as kubectl does (EKS, GKE, AKS credentials).
        let dir = Dir::new("exec");
        let text = "current-context: a\nclusters:\n- name: c\n  cluster:\n    server: https://k\nusers:\n- name: u\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, args: [eks, get-token]}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n";
        assert!(load(&dir, text, None).is_ok());
    }

    #[test]
    fn in_cluster_uses_the_mounted_ca_and_token_file() {
        let dir = Dir::new("incluster");
        std::fs::write(dir.0.join("ca.crt"), ca_pem()).unwrap();
        std::fs::write(dir.0.join("token"), "sa-token").unwrap();
        let config = service_account("fd00::1", "443", &dir.0).unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://[fd00::1]:443/");
        assert_eq!(config.root_cert.map(|c| c.len()), Some(1));
        assert_eq!(
            config.auth_info.token_file,
            Some(dir.0.join("token").display().to_string())
        );
        std::fs::remove_file(dir.0.join("ca.crt")).unwrap();
        let err = service_account("10.0.0.1", "443", &dir.0).err();
        assert!(err.unwrap_or_default().contains("ca.crt"));
    }
}

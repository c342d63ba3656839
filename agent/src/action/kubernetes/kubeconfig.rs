//! Where the Kubernetes API is and how to authenticate: a kubeconfig file (server, CA, bearer
//! token or token file, client certificate, basic auth), or the pod's service account.
//!
//! Exec and auth-provider credential plugins are refused: they would run programs from a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::config::Secret;

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A way to reach one API server.
pub struct Connection {
    pub server: reqwest::Url,
    pub http: reqwest::Client,
    pub auth: Auth,
}

pub enum Auth {
    None,
    Bearer(Secret),
    /// Re-read for every delivery: projected service-account tokens rotate.
    BearerFile(PathBuf),
    Basic {
        user: String,
        password: Secret,
    },
}

#[derive(Debug, Deserialize)]
struct KubeConfig {
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: Option<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    #[serde(default)]
    certificate_authority: Option<PathBuf>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(default)]
    client_certificate: Option<PathBuf>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    exec: Option<serde_json::Value>,
    #[serde(default, rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

// === impl Connection ===

impl Connection {
    /// Reads a kubeconfig file; `context` overrides its `current-context`. Relative paths in it
    /// are relative to the file's directory, as kubectl reads them.
    pub fn from_kubeconfig(
        path: &Path,
        context: Option<&str>,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let config: KubeConfig = serde_saphyr::from_str(&text)
            .map_err(|err| format!("{} is not a kubeconfig: {err}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let context_name = context
            .map(str::to_string)
            .or(config.current_context.clone())
            .filter(|c| !c.is_empty())
            .ok_or("the kubeconfig has no current-context; set kube-context")?;
        let context = find(&config.contexts, &context_name, "context")?;
        let cluster = find(&config.clusters, &context.cluster, "cluster")?;
        let user = match &context.user {
            Some(name) if !name.is_empty() => find(&config.users, name, "user")?,
            _ => &User::default(),
        };
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(format!(
                "user of context \"{context_name}\" uses a credential plugin (exec / auth-provider), which Hooker does not run; use a service-account token or a client certificate"
            ));
        }
        let server = server_url(&cluster.server)?;
        let mut builder = crate::action::http_client_builder(timeout);
        if cluster.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let ca = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) => Some(decode("certificate-authority-data", data)?),
            (None, Some(file)) => Some(read(base, file)?),
            (None, None) => None,
        };
        if let Some(pem) = ca {
            builder = builder.tls_certs_only(certificates(&pem)?);
        }
        let certificate = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(data), _) => Some(decode("client-certificate-data", data)?),
            (None, Some(file)) => Some(read(base, file)?),
            (None, None) => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(data), _) => Some(decode("client-key-data", data)?),
            (None, Some(file)) => Some(read(base, file)?),
            (None, None) => None,
        };
        match (certificate, key) {
            (Some(mut pem), Some(key)) => {
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|err| format!("client certificate or key is not usable PEM: {err}"))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err("a client certificate needs both its certificate and its key".into()),
        }
        let auth = if let Some(token) = user.token.as_deref().filter(|t| !t.is_empty()) {
            Auth::Bearer(Secret::new(token))
        } else if let Some(file) = &user.token_file {
            Auth::BearerFile(base.join(file))
        } else if let (Some(user), Some(password)) = (&user.username, &user.password) {
            Auth::Basic {
                user: user.clone(),
                password: Secret::new(password.as_str()),
            }
        } else {
            Auth::None
        };
        let http = builder
            .build()
            .map_err(|err| format!("cannot build the API client: {err}"))?;
        Ok(Connection { server, http, auth })
    }

    /// The pod's own service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted CA and
    /// token (re-read at each delivery).
    pub fn in_cluster(dir: &Path, timeout: Duration) -> Result<Connection, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(
            |_| "KUBERNETES_SERVICE_HOST is not set: not running in a pod; set kube-config-file",
        )?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        Connection::service_account(&host, &port, dir, timeout)
    }

    fn service_account(
        host: &str,
        port: &str,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let server = reqwest::Url::parse(&format!("https://{host}:{port}/"))
            .map_err(|err| format!("KUBERNETES_SERVICE_HOST/PORT: {err}"))?;
        let ca = read(dir, Path::new("ca.crt"))?;
        let http = crate::action::http_client_builder(timeout)
            .tls_certs_only(certificates(&ca)?)
            .build()
            .map_err(|err| format!("cannot build the API client: {err}"))?;
        Ok(Connection {
            server,
            http,
            auth: Auth::BearerFile(dir.join("token")),
        })
    }

    /// Headers for one delivery's requests.
    pub fn authorization(&self) -> Result<Option<reqwest::header::HeaderValue>, String> {
        let text = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
            Auth::BearerFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|err| {
                    format!("cannot read the token file {}: {err}", path.display())
                })?;
                format!("Bearer {}", token.trim())
            }
            Auth::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        };
        let mut value = reqwest::header::HeaderValue::from_str(&text)
            .map_err(|_| "the token has characters HTTP headers cannot carry".to_string())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The API base URL, with a trailing `/` so paths join under a proxy prefix (`…/k8s/clusters/c1/`).
fn server_url(text: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(text.trim())
        .map_err(|err| format!("cluster server `{text}`: {err}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("cluster server `{text}`: not an http(s) URL"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn find<'a, T>(items: &'a [Named<T>], name: &str, what: &str) -> Result<&'a T, String> {
    items
        .iter()
        .find(|item| item.name == name)
        .and_then(|item| item.value.as_ref())
        .ok_or_else(|| format!("the kubeconfig has no {what} named \"{name}\""))
}

fn decode(key: &str, data: &str) -> Result<Vec<u8>, String> {
    let compact: String = data.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|err| format!("{key} is not base64: {err}"))
}

fn read(base: &Path, file: &Path) -> Result<Vec<u8>, String> {
    let path = base.join(file);
    std::fs::read(&path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

fn certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|err| format!("CA certificate is not PEM: {err}"))?;
    if certificates.is_empty() {
        return Err("CA certificate: no certificate in the PEM data".into());
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn load(dir: &Dir, text: &str, context: Option<&str>) -> Result<Connection, String> {
        let path = dir.0.join("config");
        std::fs::write(&path, text).unwrap();
        Connection::from_kubeconfig(&path, context, Duration::from_secs(1))
    }

    #[test]
    fn kubeconfig_token_file_is_relative_to_the_file_and_server_gets_a_slash() {
        let dir = Dir::new("tokenfile");
        std::fs::write(dir.0.join("ca.pem"), ca_pem()).unwrap();
        std::fs::write(dir.0.join("token"), "abc\n").unwrap();
        let text = "current-context: a\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443/prefix\n    certificate-authority: ca.pem\nusers:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n";
        let connection = load(&dir, text, None).unwrap();
        assert_eq!(connection.server.as_str(), "https://10.0.0.1:6443/prefix/");
        let header = connection.authorization().unwrap().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer abc");
    }

    #[test]
    fn kubeconfig_problems_are_explained() {
        let dir = Dir::new("problems");
        let base = "clusters:\n- name: c\n  cluster:\n    server: https://k\nusers:\n- name: u\n  user:\n    exec: {command: aws}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n";
        let err = |context| load(&dir, base, context).err().unwrap_or_default();
        assert!(err(None).contains("no current-context"), "{}", err(None));
        assert!(err(Some("b")).contains("no context named \"b\""));
        assert!(err(Some("a")).contains("credential plugin"));
    }

    #[test]
    fn in_cluster_uses_the_mounted_ca_and_a_fresh_token() {
        let dir = Dir::new("incluster");
        std::fs::write(dir.0.join("ca.crt"), ca_pem()).unwrap();
        std::fs::write(dir.0.join("token"), "sa-token").unwrap();
        let connection =
            Connection::service_account("fd00::1", "443", &dir.0, Duration::from_secs(1)).unwrap();
        assert_eq!(connection.server.as_str(), "https://[fd00::1]/");
        let header = connection.authorization().unwrap().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer sa-token");
        // Projected tokens rotate: each delivery reads the file again.
        std::fs::write(dir.0.join("token"), "rotated").unwrap();
        let header = connection.authorization().unwrap().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer rotated");
    }
}

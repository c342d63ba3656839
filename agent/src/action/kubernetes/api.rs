//! The few Kubernetes API calls the action makes, over plain HTTPS: list pods, get a ReplicaSet,
//! merge-patch metadata, delete a pod. Every answer is classified here into done, gone, or a
//! retryable / permanent [`ActionError`].

use std::time::Duration;

use serde_json::Value;

use super::kubeconfig::Connection;
use crate::action::{ActionError, ErrorKind, excerpt};

/// The field manager named on every write, so `kubectl get -o yaml --show-managed-fields` shows
/// which fields Hooker set.
pub const FIELD_MANAGER: &str = "hooker";
/// Attempts of one patch that meets 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 3;

/// One delivery's view of the API: the connection plus this delivery's credentials.
pub struct Api<'a> {
    connection: &'a Connection,
    authorization: Option<reqwest::header::HeaderValue>,
    dry_run: bool,
}

/// What a write achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// 404: the object went away meanwhile.
    Gone,
    /// 409 on a delete precondition: the name now belongs to a new object.
    Replaced,
}

impl<'a> Api<'a> {
    pub fn new(connection: &'a Connection, dry_run: bool) -> Result<Api<'a>, ActionError> {
        let authorization = connection
            .authorization()
            .map_err(|err| ActionError::retryable(format!("Kubernetes credentials: {err}")))?;
        Ok(Api {
            connection,
            authorization,
            dry_run,
        })
    }

    /// Pods in `namespace` (all namespaces for `None`) matching the selectors.
    pub async fn list_pods(
        &self,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<Vec<Value>, ActionError> {
        let path = match namespace {
            Some(namespace) => format!("/api/v1/namespaces/{namespace}/pods"),
            None => "/api/v1/pods".to_string(),
        };
        let mut query = Vec::new();
        if !label_selector.is_empty() {
            query.push(("labelSelector", label_selector));
        }
        if !field_selector.is_empty() {
            query.push(("fieldSelector", field_selector));
        }
        let request = self.request(reqwest::Method::GET, &path, &query)?;
        let list = self.send_json(request, "list pods").await?;
        Ok(match list.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        })
    }

    /// A ReplicaSet, to follow a pod's ownership up to its Deployment. `None` when it is gone.
    pub async fn get_replicaset(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ActionError> {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}");
        let request = self.request(reqwest::Method::GET, &path, &[])?;
        match self.send_json(request, "get replicasets").await {
            Ok(value) => Ok(Some(value)),
            Err(Failure::NotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// A JSON merge patch of `metadata` on the object at `path`, retried on 409 Conflict.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Written, ActionError> {
        let body = serde_json::to_vec(patch)
            .map_err(|err| ActionError::permanent(format!("cannot encode the patch: {err}")))?;
        let mut attempt = 1;
        loop {
            let request = self
                .request(reqwest::Method::PATCH, path, &self.write_query(true))?
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/merge-patch+json",
                )
                .body(body.clone());
            match self.send_json(request, "patch").await {
                Ok(_) => return Ok(Written::Done),
                Err(Failure::NotFound) => return Ok(Written::Gone),
                Err(Failure::Conflict(_)) if attempt < CONFLICT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Deletes a pod, only if it is still the pod that was selected (`uid` precondition).
    pub async fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Written, ActionError> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let options = serde_json::json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": { "uid": uid },
        });
        let request = self
            .request(reqwest::Method::DELETE, &path, &self.write_query(false))?
            .json(&options);
        match self.send_json(request, "delete pods").await {
            Ok(_) => Ok(Written::Done),
            Err(Failure::NotFound) => Ok(Written::Gone),
            Err(Failure::Conflict(_)) => Ok(Written::Replaced),
            Err(err) => Err(err.into()),
        }
    }

    fn write_query(&self, patch: bool) -> Vec<(&'static str, &'static str)> {
        let mut query = Vec::new();
        if self.dry_run {
            query.push(("dryRun", "All"));
        }
        if patch {
            query.push(("fieldManager", FIELD_MANAGER));
        }
        query
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, ActionError> {
        let mut url = self
            .connection
            .server
            .join(path.trim_start_matches('/'))
            .map_err(|err| ActionError::permanent(format!("bad API path {path}: {err}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .connection
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }

    async fn send_json(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, Failure> {
        let response = request
            .send()
            .await
            .map_err(|err| Failure::Other(ActionError::transport(err)))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        // The API's Status object says why; keep its message, not the whole body.
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| excerpt(&body, 512));
        let message = format!("Kubernetes API: {what}: HTTP {}: {reason}", status.as_u16());
        Err(match status.as_u16() {
            404 => Failure::NotFound,
            409 => Failure::Conflict(message),
            401 | 403 => Failure::Other(ActionError::permanent(format!(
                "{message} (check the service account's RBAC: see README, Kubernetes action)"
            ))),
            408 | 429 | 500..=599 => Failure::Other(ActionError::retryable(message)),
            _ => Failure::Other(ActionError::permanent(message)),
        })
    }
}

/// A failed call, before the caller decides whether 404 or 409 matter.
enum Failure {
    NotFound,
    Conflict(String),
    Other(ActionError),
}

impl From<Failure> for ActionError {
    fn from(failure: Failure) -> ActionError {
        match failure {
            Failure::NotFound => ActionError::permanent("Kubernetes API: not found"),
            Failure::Conflict(message) => ActionError {
                kind: ErrorKind::Retryable,
                message,
                retry_after: None,
            },
            Failure::Other(err) => err,
        }
    }
}

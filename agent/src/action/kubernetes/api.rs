//! The few Kubernetes API calls the action makes, built and sent by kube-rs: list pods, get a
//! ReplicaSet, merge-patch metadata, delete a pod, create a NetworkPolicy. Every answer is
//! classified here into done, gone, exists, or a retryable / permanent [`ActionError`].

use std::time::Duration;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Request;
use serde_json::Value;

use crate::action::{ActionError, ErrorKind, excerpt};

/// The field manager named on every write, so `kubectl get -o yaml --show-managed-fields` shows
/// which fields Hooker set.
pub const FIELD_MANAGER: &str = "hooker";
/// Attempts of one patch that meets 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 3;

/// One delivery's view of the API.
pub struct Api<'a> {
    client: &'a kube::Client,
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
    /// 409 AlreadyExists on a create: the object is there already.
    Exists,
}

impl<'a> Api<'a> {
    pub fn new(client: &'a kube::Client, dry_run: bool) -> Api<'a> {
        Api { client, dry_run }
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
        let mut params = ListParams::default();
        if !label_selector.is_empty() {
            params = params.labels(label_selector);
        }
        if !field_selector.is_empty() {
            params = params.fields(field_selector);
        }
        let request = Request::new(path).list(&params).map_err(built)?;
        let list = self.send(request, "list pods").await?;
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
        let request = Request::new(format!("/apis/apps/v1/namespaces/{namespace}/replicasets"))
            .get(name, &Default::default())
            .map_err(built)?;
        match self.send(request, "get replicasets").await {
            Ok(value) => Ok(Some(value)),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// A JSON merge patch (`application/merge-patch+json`) of the object `name` in the
    /// collection at `collection`, retried on 409 Conflict.
    pub async fn merge_patch(
        &self,
        collection: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Written, ActionError> {
        let params = PatchParams {
            dry_run: self.dry_run,
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let mut attempt = 1;
        loop {
            let request = Request::new(collection)
                .patch(name, &params, &Patch::Merge(patch))
                .map_err(built)?;
            match self.send(request, "patch").await {
                Ok(_) => return Ok(Written::Done),
                Err(Failure::NotFound(_)) => return Ok(Written::Gone),
                Err(Failure::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => {
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
        let params = DeleteParams {
            dry_run: self.dry_run,
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let request = Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
            .delete(name, &params)
            .map_err(built)?;
        match self.send(request, "delete pods").await {
            Ok(_) => Ok(Written::Done),
            Err(Failure::NotFound(_)) => Ok(Written::Gone),
            Err(Failure::Conflict { .. }) => Ok(Written::Replaced),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates `object` in the collection at `collection`; one already there is not an error.
    pub async fn create_if_absent(
        &self,
        collection: &str,
        object: &impl serde::Serialize,
        what: &str,
    ) -> Result<Written, ActionError> {
        let params = PostParams {
            dry_run: self.dry_run,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        let body = serde_json::to_vec(object)
            .map_err(|err| ActionError::permanent(format!("cannot encode the {what}: {err}")))?;
        let request = Request::new(collection)
            .create(&params, body)
            .map_err(built)?;
        match self.send(request, &format!("create {what}")).await {
            Ok(_) => Ok(Written::Done),
            Err(Failure::Conflict { reason, .. }) if reason == "AlreadyExists" => {
                Ok(Written::Exists)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn send(&self, request: http::Request<Vec<u8>>, what: &str) -> Result<Value, Failure> {
        let status = match self.client.request_text(request).await {
            Ok(text) => return Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
            Err(kube::Error::Api(status)) => status,
            // No answer (connect, TLS, timeout) or no credentials (a token file or exec plugin
            // that failed): worth another try.
            Err(err) => {
                return Err(Failure::Other(ActionError::retryable(format!(
                    "Kubernetes API: {what}: {}",
                    chain(&err)
                ))));
            }
        };
        // The API's Status says why; a body that is not one is kept as an excerpt.
        let reason = excerpt(status.message.as_bytes(), 512);
        let code = status.code;
        let message = format!("Kubernetes API: {what}: HTTP {code}: {reason}");
        Err(match code {
            404 => Failure::NotFound(message),
            409 => Failure::Conflict {
                reason: status.reason.clone(),
                message,
            },
            401 | 403 => Failure::Other(ActionError::permanent(format!(
                "{message} (check the service account's RBAC: see README, Kubernetes action)"
            ))),
            408 | 429 | 500..=599 => Failure::Other(ActionError::retryable(message)),
            _ => Failure::Other(ActionError::permanent(message)),
        })
    }
}

/// An error and its causes, `: `-separated (kube-rs errors keep the useful part in a source).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn built(err: kube::core::request::Error) -> ActionError {
    ActionError::permanent(format!("cannot build the API request: {err}"))
}

/// A failed call, before the caller decides whether 404 or 409 matter.
enum Failure {
    NotFound(String),
    Conflict { reason: String, message: String },
    Other(ActionError),
}

impl From<Failure> for ActionError {
    fn from(failure: Failure) -> ActionError {
        match failure {
            Failure::NotFound(message) => ActionError::permanent(message),
            Failure::Conflict { message, .. } => ActionError {
                kind: ErrorKind::Retryable,
                message,
                retry_after: None,
            },
            Failure::Other(err) => err,
        }
    }
}

//! `type: awssecurityhub`: imports findings into AWS Security Hub (`BatchImportFindings`).
//!
//! `asff.rs` turns a message into findings, `sigv4.rs` signs each request; this file owns the
//! config, the batches of 100 and the reply (findings Security Hub refused are an error, not a log
//! line). The endpoint and region are configurable, so a local server can stand in for AWS.
//! Invariant: the secret key and session token never reach logs, errors or previews.

mod asff;
mod sigv4;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// `BatchImportFindings` takes at most 100 findings per call.
const BATCH: usize = 100;
const SERVICE: &str = "securityhub";

/// One `type: awssecurityhub` block of cfg.yaml. Every key is optional (Postee had none).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SecurityHubConfig {
    /// AWS region; default `AWS_REGION`, then `AWS_DEFAULT_REGION`.
    #[serde(default)]
    region: Option<String>,
    /// API endpoint; default `https://securityhub.<region>.amazonaws.com`.
    #[serde(default)]
    endpoint: Option<String>,
    /// Credentials; default `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    #[serde(default)]
    access_key_id: Option<Secret>,
    #[serde(default)]
    secret_access_key: Option<Secret>,
    #[serde(default)]
    session_token: Option<Secret>,
    /// Account the findings belong to; default `AWS_ACCOUNT_ID`. Needed unless the template
    /// already renders ASFF findings.
    #[serde(default)]
    account_id: Option<String>,
    /// Product ARN; default `arn:aws:securityhub:<region>:<account>:product/<account>/default`.
    #[serde(default)]
    product_arn: Option<String>,
    /// Limit for one attempt; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server's certificate (default true).
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    /// Extra CA bundle (PEM) to trust.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Extra request headers (not signed).
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
}

pub struct SecurityHub {
    name: String,
    url: reqwest::Url,
    region: String,
    credentials: sigv4::Credentials,
    account_id: Option<String>,
    product_arn: Option<String>,
    remote: Remote,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<SecurityHubConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = settings
        .region
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or_else(|| located("region", "no region: set `region` or AWS_REGION".into()))?;
    if !region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(located(
            "region",
            format!("`{region}` is not an AWS region"),
        ));
    }
    let endpoint = match &settings.endpoint {
        Some(endpoint) => super::http::parse_url(config, "endpoint", endpoint)?,
        None => super::http::parse_url(
            config,
            "region",
            &format!("https://securityhub.{region}.amazonaws.com"),
        )?,
    };
    let credentials = match (settings.access_key_id, settings.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => sigv4::Credentials {
            access_key_id,
            secret_access_key,
            session_token: settings.session_token.filter(|t| !t.is_empty()),
        },
        (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access), Some(secret)) => sigv4::Credentials {
                access_key_id: Secret::new(access),
                secret_access_key: Secret::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
            },
            _ => {
                return Err(located(
                    "access-key-id",
                    "no AWS credentials: set `access-key-id` and `secret-access-key`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                ));
            }
        },
        _ => {
            return Err(located(
                "access-key-id",
                "set both `access-key-id` and `secret-access-key`, or neither".into(),
            ));
        }
    };
    if credentials.access_key_id.is_empty() || credentials.secret_access_key.is_empty() {
        return Err(located(
            "access-key-id",
            "the AWS access key id or secret key is empty".into(),
        ));
    }
    let account_id = settings
        .account_id
        .filter(|a| !a.is_empty())
        .or_else(|| env("AWS_ACCOUNT_ID"));
    if account_id.is_none() {
        warnings.push(located(
            "account-id",
            "no account-id (nor AWS_ACCOUNT_ID): only messages that already hold ASFF findings can be imported".into(),
        ));
    }
    let remote = Remote::build(
        config,
        RemoteKeys {
            timeout: settings.timeout,
            tls_verify: settings.tls_verify,
            ca_file: settings.ca_file.as_deref(),
            headers: &settings.headers,
        },
        &mut warnings,
    )?;
    Built::new(
        SecurityHub {
            name: config.name.clone(),
            url: api_client::join_path(&endpoint, "findings/import"),
            region,
            credentials,
            account_id,
            product_arn: settings.product_arn.filter(|a| !a.is_empty()),
            remote,
        },
        warnings,
    )
}

// === impl SecurityHub ===

impl SecurityHub {
    /// One signed request per batch of 100 findings.
    fn requests(&self, message: &Message) -> Result<Vec<ApiRequest>, ActionError> {
        let now = chrono::Utc::now();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let origin = asff::Origin {
            account_id: self.account_id.as_deref(),
            product_arn: self.product_arn.as_deref(),
            region: &self.region,
            now: &stamp,
        };
        let findings = asff::findings(message, &origin)
            .map_err(|err| ActionError::permanent(err.to_string()))?;
        let scope = sigv4::Scope {
            region: &self.region,
            service: SERVICE,
        };
        findings
            .chunks(BATCH)
            .map(|batch| {
                let body = json!({ "Findings": batch });
                let bytes = serde_json::to_vec(&body).map_err(|err| {
                    ActionError::permanent(format!("cannot encode findings: {err}"))
                })?;
                let signed = sigv4::sign(
                    "POST",
                    &self.url,
                    &[("content-type", "application/json")],
                    &bytes,
                    &self.credentials,
                    &scope,
                    now,
                );
                Ok(signed.iter().fold(
                    ApiRequest::post(self.url.clone(), body),
                    |request, (name, value)| {
                        let sensitive = matches!(*name, "authorization" | "x-amz-security-token");
                        request.header(name, value, sensitive)
                    },
                ))
            })
            .collect()
    }
}

#[async_trait]
impl Action for SecurityHub {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "awssecurityhub"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let requests = self.requests(message)?;
        let mut imported = 0;
        for request in &requests {
            let response = self.remote.send(request).await?;
            if !response.status().is_success() {
                return super::check_response(response)
                    .await
                    .map(|_| Report::none());
            }
            let reply: Value = response.json().await.unwrap_or_default();
            check_import(&reply)?;
            imported += reply["SuccessCount"].as_u64().unwrap_or_default();
        }
        Ok(Report::detail(format!(
            "imported {imported} finding(s) in {} request(s)",
            requests.len()
        )))
    }

    fn preview(&self, message: &Message) -> Value {
        match self.requests(message) {
            Ok(requests) => api_client::preview_all(&requests),
            Err(err) => json!({ "error": err.message }),
        }
    }
}

/// Findings Security Hub refused fail the delivery: throttling and internal errors may pass on
/// a retry (imports are idempotent by `Id`), anything else will not.
fn check_import(reply: &Value) -> Result<(), ActionError> {
    let failed = reply["FailedCount"].as_u64().unwrap_or_default();
    if failed == 0 {
        return Ok(());
    }
    let refused = reply["FailedFindings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let transient = refused.iter().any(|f| {
        let code = f["ErrorCode"].as_str().unwrap_or_default();
        code.contains("Throttl") || code.contains("InternalFailure") || code.contains("Unavailable")
    });
    let examples: Vec<String> = refused
        .iter()
        .take(3)
        .map(|f| {
            format!(
                "{}: {} {}",
                f["Id"].as_str().unwrap_or("?"),
                f["ErrorCode"].as_str().unwrap_or_default(),
                f["ErrorMessage"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let message = format!(
        "Security Hub refused {failed} finding(s): {}",
        super::excerpt(examples.join("; ").as_bytes(), 512)
    );
    Err(if transient {
        ActionError::retryable(message)
    } else {
        ActionError::permanent(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ErrorKind;

    #[test]
    fn refused_findings_fail_the_delivery() {
        assert!(check_import(&json!({"FailedCount": 0, "SuccessCount": 3})).is_ok());
        let invalid = check_import(&json!({
            "FailedCount": 1,
            "SuccessCount": 0,
            "FailedFindings": [{"Id": "f1", "ErrorCode": "InvalidInput", "ErrorMessage": "Finding does not adhere to ASFF"}],
        }))
        .unwrap_err();
        assert_eq!(invalid.kind, ErrorKind::Permanent);
        assert!(
            invalid.message.contains("f1: InvalidInput"),
            "{}",
            invalid.message
        );
        let throttled = check_import(&json!({
            "FailedCount": 1,
            "FailedFindings": [{"Id": "f1", "ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}],
        }))
        .unwrap_err();
        assert_eq!(throttled.kind, ErrorKind::Retryable);
    }
}

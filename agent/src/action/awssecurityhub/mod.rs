//! `type: awssecurityhub`: imports findings into AWS Security Hub (`BatchImportFindings`).
//!
//! `asff.rs` turns a message into findings; this file owns the config, the batches of 100, the
//! SigV4 signature (the `aws-sigv4` crate, with keys from the config or from the AWS credential
//! chain of `crate::aws`, fetched at send time) and the reply (findings Security Hub refused are
//! an error, not a log line). The endpoint and region are configurable, so a local server can
//! stand in for AWS. Invariant: the secret key and session token never reach logs, errors or
//! previews.

mod asff;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use object_store::aws::AwsCredentialProvider;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

/// `BatchImportFindings` takes at most 100 findings per call.
const BATCH: usize = 100;
const SERVICE: &str = "securityhub";
const JSON: &str = "application/json";
/// Where credentials come from when the config has none, for error messages and previews.
const CHAIN: &str = "the AWS credential chain (environment keys, web identity / IRSA, shared credentials file, container credentials, instance metadata)";

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
    /// Static credentials, which win over everything else; without them, the AWS credential
    /// chain (`crate::aws`: `AWS_ACCESS_KEY_ID`…, web identity / IRSA, the shared credentials
    /// file, container credentials, instance metadata), asked at send time.
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
    /// Extra CA bundle (PEM) to trust; default `AWS_CA_BUNDLE`.
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
    keys: Keys,
    account_id: Option<String>,
    product_arn: Option<String>,
    remote: Remote,
    /// The limit of one attempt, which getting credentials from the chain is part of.
    timeout: Duration,
}

/// Where the signing keys come from.
enum Keys {
    /// `access-key-id`, `secret-access-key` and `session-token` from the config.
    Static(Credentials),
    /// The AWS credential chain; it caches what it fetched and fetches temporary credentials
    /// again before they expire.
    Chain(AwsCredentialProvider),
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
    let keys = match (settings.access_key_id, settings.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            if access_key_id.is_empty() || secret_access_key.is_empty() {
                return Err(located(
                    "access-key-id",
                    "the AWS access key id or secret key is empty".into(),
                ));
            }
            Keys::Static(Credentials::new(
                access_key_id.expose(),
                secret_access_key.expose(),
                settings
                    .session_token
                    .filter(|t| !t.is_empty())
                    .map(|t| t.expose().to_string()),
                None,
                "hooker-config",
            ))
        }
        // Nothing is fetched here: the chain may find credentials only at send time (a web
        // identity token mounted later, the instance metadata service reachable later).
        (None, None) => Keys::Chain(
            crate::aws::credentials(&region)
                .map_err(|err| Diagnostic::new(config.place(), err.to_string()))?,
        ),
        _ => {
            return Err(located(
                "access-key-id",
                "set both `access-key-id` and `secret-access-key`, or neither".into(),
            ));
        }
    };
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
    // The AWS SDKs trust `AWS_CA_BUNDLE` for every AWS endpoint; `ca-file` wins over it.
    let ca_file = settings.ca_file.clone().or_else(crate::aws::ca_bundle);
    let remote = Remote::build(
        config,
        RemoteKeys {
            timeout: settings.timeout,
            tls_verify: settings.tls_verify,
            ca_file: ca_file.as_deref(),
            headers: &settings.headers,
        },
        &mut warnings,
    )?;
    Built::new(
        SecurityHub {
            name: config.name.clone(),
            url: api_client::join_path(&endpoint, "findings/import"),
            region,
            keys,
            account_id,
            product_arn: settings.product_arn.filter(|a| !a.is_empty()),
            remote,
            timeout: settings.timeout.unwrap_or(api_client::DEFAULT_TIMEOUT),
        },
        warnings,
    )
}

// === impl SecurityHub ===

impl SecurityHub {
    /// One unsigned request per batch of 100 findings; they are signed as they go out.
    fn requests(&self, message: &Message) -> Result<Vec<ApiRequest>, ActionError> {
        let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let origin = asff::Origin {
            account_id: self.account_id.as_deref(),
            product_arn: self.product_arn.as_deref(),
            region: &self.region,
            now: &stamp,
        };
        let findings = asff::findings(message, &origin)
            .map_err(|err| ActionError::permanent(err.to_string()))?;
        Ok(findings
            .chunks(BATCH)
            .map(|batch| ApiRequest::post(self.url.clone(), json!({ "Findings": batch })))
            .collect())
    }

    /// The keys to sign with now: the config's, or the chain's (fetched, or from its cache).
    /// Failing to get them is retryable: the chain's sources come and go (STS, the metadata
    /// service, a token file being mounted).
    async fn credentials(&self) -> Result<Credentials, ActionError> {
        let provider = match &self.keys {
            Keys::Static(credentials) => return Ok(credentials.clone()),
            Keys::Chain(provider) => provider,
        };
        let fetched = tokio::time::timeout(self.timeout, provider.get_credential())
            .await
            .map_err(|_| {
                ActionError::retryable(format!(
                    "timed out after {:?} getting AWS credentials from {CHAIN}",
                    self.timeout
                ))
            })?
            .map_err(|err| {
                ActionError::retryable(format!("cannot get AWS credentials from {CHAIN}: {err}"))
            })?;
        Ok(Credentials::new(
            fetched.key_id.as_str(),
            fetched.secret_key.as_str(),
            fetched.token.clone().filter(|t| !t.is_empty()),
            None,
            "hooker-aws-chain",
        ))
    }

    /// What `preview` signs with. `test-route` must not call the network, and the chain may
    /// (STS, the instance metadata service), so the preview uses the config's static keys when
    /// it has them (the exact headers, secret ones shown as `***`) and otherwise placeholder
    /// keys: the same header names, a meaningless signature, and no session token, which only
    /// the chain's answer at send time decides.
    fn preview_credentials(&self) -> Credentials {
        match &self.keys {
            Keys::Static(credentials) => credentials.clone(),
            Keys::Chain(_) => Credentials::new(
                "PREVIEW",
                "preview-placeholder",
                None,
                None,
                "hooker-preview",
            ),
        }
    }
}

/// `request` with its SigV4 headers from `aws-sigv4` (`x-amz-date`, `x-amz-security-token` with
/// temporary credentials, `authorization`), signing `content-type`, `host` and those two, and
/// the hash of the body exactly as `Remote::send` encodes it. The secret ones are marked
/// sensitive, so previews show `***`.
fn sign(
    request: ApiRequest,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<ApiRequest, ActionError> {
    let failed = |what: String| ActionError::permanent(format!("cannot sign the request: {what}"));
    let body = serde_json::to_vec(&request.body)
        .map_err(|err| ActionError::permanent(format!("cannot encode findings: {err}")))?;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|err| failed(err.to_string()))?
        .into();
    let signable = SignableRequest::new(
        request.method.as_str(),
        request.url.as_str(),
        [("content-type", JSON)].into_iter(),
        SignableBody::Bytes(&body),
    )
    .map_err(|err| failed(err.to_string()))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|err| failed(err.to_string()))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers.iter().fold(
        request.header("content-type", JSON, false),
        |request, header| {
            let sensitive = header.sensitive()
                || matches!(header.name(), "authorization" | "x-amz-security-token");
            request.header(header.name(), header.value(), sensitive)
        },
    ))
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
        let credentials = self.credentials().await?;
        let mut imported = 0;
        for request in &requests {
            let signed = sign(
                request.clone(),
                &credentials,
                &self.region,
                SystemTime::now(),
            )?;
            let response = self.remote.send(&signed).await?;
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
        let credentials = self.preview_credentials();
        let signed: Result<Vec<ApiRequest>, ActionError> =
            self.requests(message).and_then(|requests| {
                requests
                    .into_iter()
                    .map(|request| sign(request, &credentials, &self.region, SystemTime::now()))
                    .collect()
            });
        match signed {
            Ok(requests) => {
                let mut preview = api_client::preview_all(&requests);
                if let (Keys::Chain(_), Some(fields)) = (&self.keys, preview.as_object_mut()) {
                    fields.insert(
                        "credentials".into(),
                        format!("at send time, from {CHAIN}").into(),
                    );
                }
                preview
            }
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
    fn requests_are_signed_by_aws_sigv4_over_the_exact_body() {
        let credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let url = reqwest::Url::parse("http://127.0.0.1:4566/findings/import").unwrap();
        let request = ApiRequest::post(url, json!({"Findings": []}));
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let signed = sign(request, &credentials, "eu-west-1", time).unwrap();
        let header = |name: &str| {
            signed
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("x-amz-date"), "20150830T123600Z");
        assert_eq!(header("x-amz-security-token"), "token");
        assert_eq!(header("content-type"), "application/json");
        // Computed independently (Python's hmac and hashlib) from the SigV4 specification.
        assert_eq!(
            header("authorization"),
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/eu-west-1/securityhub/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
             Signature=5381aa799e8f955687a5a7f47c0b40efaf986656eb35508567d61a3e2ac13b75"
        );
        let preview = signed.preview().to_string();
        assert!(
            !preview.contains("\"token\"") && !preview.contains("Signature="),
            "{preview}"
        );
    }

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

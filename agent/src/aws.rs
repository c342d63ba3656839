//! The AWS credential chain every AWS client in Hooker uses: the forensic shipper's S3 store
//! builds on [`s3_builder`], Security Hub signs with the keys of [`credentials`].
//! It is `object_store`'s chain (environment keys, web identity / IRSA, ECS and EKS Pod Identity
//! container credentials, instance metadata) plus what `object_store` leaves out: the shared
//! credentials file and `AWS_CA_BUNDLE`. Invariant: no key, token or secret reaches an error.

use std::path::PathBuf;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AwsCredentialProvider};
use object_store::{Certificate, ClientOptions, RetryConfig};

/// Why the chain could not be set up. Failing to *get* credentials happens later, at use.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("cannot read AWS_CA_BUNDLE {path}: {source}")]
    CaBundleRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("AWS_CA_BUNDLE {path} is not a PEM certificate bundle: {message}")]
    CaBundlePem { path: PathBuf, message: String },
    #[error("cannot set up the AWS credential chain: {0}")]
    Chain(String),
}

/// Keys of one profile of the shared credentials file.
struct SharedKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// What the chain's own requests (STS, container and instance metadata) may take: a send
/// waits for them, so they are bounded well below any action's timeout.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(10);
const CHAIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The bucket of the credentials-only store of [`credentials`]; it is never asked anything.
const NO_BUCKET: &str = "hooker-credentials-only";

/// An S3 builder with the chain: `AWS_*` variables ([`AmazonS3Builder::from_env`]), the shared
/// credentials file's keys when nothing earlier in the chain gives any, and `options` with the
/// certificates of `AWS_CA_BUNDLE` added to the trusted roots (for STS, the container and
/// instance endpoints and S3 alike). Callers set the bucket, endpoint and region on top; they
/// must not call `with_client_options` again, which would drop the bundle.
pub fn s3_builder(options: ClientOptions) -> Result<AmazonS3Builder, AwsError> {
    crate::tls::install_crypto_provider();
    let options = with_ca_bundle(options, ca_bundle())?;
    let mut builder = AmazonS3Builder::from_env().with_client_options(options);
    if let Some(keys) = shared_credentials() {
        builder = builder
            .with_access_key_id(keys.access_key_id)
            .with_secret_access_key(keys.secret_access_key);
        if let Some(token) = keys.session_token {
            builder = builder.with_token(token);
        }
    }
    Ok(builder)
}

/// The chain's credential provider for `region` (the region of STS's default endpoint). It
/// does no I/O here: credentials are fetched at the first `get_credential`, then cached, and
/// temporary ones are fetched again before they expire.
pub fn credentials(region: &str) -> Result<AwsCredentialProvider, AwsError> {
    let options = ClientOptions::new()
        .with_timeout(CHAIN_TIMEOUT)
        .with_connect_timeout(CHAIN_CONNECT_TIMEOUT);
    let store = s3_builder(options)?
        .with_region(region)
        .with_bucket_name(NO_BUCKET)
        // A zonal (S3 Express) bucket name would be required; the store is never used for S3.
        .with_s3_express(false)
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: CHAIN_TIMEOUT,
            backoff: Default::default(),
        })
        .build()
        .map_err(|err| AwsError::Chain(err.to_string()))?;
    Ok(store.credentials().clone())
}

/// `options` trusting the certificates of `bundle` (`AWS_CA_BUNDLE`, the AWS SDKs' variable
/// for a private CA or a TLS-inspecting proxy) too.
fn with_ca_bundle(
    mut options: ClientOptions,
    bundle: Option<PathBuf>,
) -> Result<ClientOptions, AwsError> {
    let Some(path) = bundle else {
        return Ok(options);
    };
    let pem = std::fs::read(&path).map_err(|source| AwsError::CaBundleRead {
        path: path.clone(),
        source,
    })?;
    let certificates = Certificate::from_pem_bundle(&pem).map_err(|err| AwsError::CaBundlePem {
        path: path.clone(),
        message: err.to_string(),
    })?;
    if certificates.is_empty() {
        return Err(AwsError::CaBundlePem {
            path,
            message: "it holds no certificate".into(),
        });
    }
    for certificate in certificates {
        options = options.with_root_certificate(certificate);
    }
    Ok(options)
}

/// The path in `AWS_CA_BUNDLE`, when set and not empty.
pub fn ca_bundle() -> Option<PathBuf> {
    std::env::var_os("AWS_CA_BUNDLE")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Keys from the shared credentials file, when nothing earlier in the chain gives any
/// (environment keys, web identity): the file comes after them, before the container and
/// instance metadata.
fn shared_credentials() -> Option<SharedKeys> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("AWS_ACCESS_KEY_ID") || set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        return None;
    }
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".aws/credentials"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse_credentials(&text, &profile)
}

/// The keys of `[profile]` in an INI credentials file.
fn parse_credentials(text: &str, profile: &str) -> Option<SharedKeys> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_profile {
            continue;
        }
        let value = value.trim().to_string();
        match key.trim() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    Some(SharedKeys {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_credentials_file_is_read_for_its_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n\
                    [ops]\n# comment\naws_access_key_id=C\naws_secret_access_key = D\naws_session_token=T\n";
        let keys = parse_credentials(text, "ops").unwrap();
        assert_eq!(
            (
                keys.access_key_id.as_str(),
                keys.secret_access_key.as_str(),
                keys.session_token.as_deref()
            ),
            ("C", "D", Some("T"))
        );
        let keys = parse_credentials(text, "default").unwrap();
        assert_eq!(
            (keys.access_key_id.as_str(), keys.session_token),
            ("A", None)
        );
        assert!(parse_credentials(text, "missing").is_none());
    }

    #[test]
    fn a_ca_bundle_must_be_readable_pem() {
        let dir = std::env::temp_dir().join(format!("hooker-aws-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let missing = with_ca_bundle(ClientOptions::new(), Some(dir.join("missing.pem")));
        assert!(
            matches!(missing, Err(AwsError::CaBundleRead { .. })),
            "{missing:?}"
        );
        std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let empty = with_ca_bundle(ClientOptions::new(), Some(dir.join("empty.pem")));
        assert!(
            matches!(empty, Err(AwsError::CaBundlePem { .. })),
            "{empty:?}"
        );
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("ca.pem"), certified.cert.pem()).unwrap();
        assert!(with_ca_bundle(ClientOptions::new(), Some(dir.join("ca.pem"))).is_ok());
        assert!(with_ca_bundle(ClientOptions::new(), None).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

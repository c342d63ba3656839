//! Shipping the forensic log off the node: its rotated segments, and on an interval the open
//! one, uploaded gzip-compressed to S3-compatible object storage under
//! `<prefix>/<node>/<date>/<first seq>.jsonl.gz`, each with the SHA-256 of the object's bytes in
//! its `sha256` metadata. A rotated segment waits on the node (`<log>.<date>.<first seq>`) and is
//! removed only once the store confirmed its upload; a failed upload is retried with the
//! action's retry policy (backoff with jitter, for as long as it takes: nothing is dropped).
//!
//! The client is `object_store`'s S3 store on reqwest and ring, with Hooker's AWS credential
//! chain (`crate::aws`: environment keys, web identity / IRSA, the shared credentials file,
//! container credentials, instance metadata; `AWS_CA_BUNDLE`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, PutOptions, PutPayload, RetryConfig,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::chain;
use crate::aws;
use crate::metrics::ActionNameLabels;
use crate::outbox::retry::DeliveryPolicy;

/// The object metadata key holding the SHA-256 (hex) of the object's bytes.
pub const SHA256_METADATA: &str = "sha256";
/// How shipped segments end.
pub const SUFFIX: &str = ".jsonl.gz";

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub bucket: String,
    /// A custom endpoint (MinIO, Ceph…); AWS's by default.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot set up the object store: {0}")]
    Store(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot upload {key}: {message}")]
    Upload { key: String, message: String },
    #[error("cannot remove {path} after its upload: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The S3 client for `settings`, with the AWS credential chain of `crate::aws`.
pub fn store(settings: &StoreSettings) -> Result<Arc<dyn ObjectStore>, ShipError> {
    let options = ClientOptions::new()
        .with_timeout(Duration::from_secs(120))
        .with_connect_timeout(Duration::from_secs(10));
    let mut builder = aws::s3_builder(options)
        .map_err(|err| ShipError::Store(err.to_string()))?
        .with_bucket_name(&settings.bucket)
        .with_virtual_hosted_style_request(!settings.path_style)
        // Hooker retries whole uploads itself, with the action's policy.
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(30),
            backoff: Default::default(),
        });
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    let store = builder
        .build()
        .map_err(|err| ShipError::Store(err.to_string()))?;
    Ok(Arc::new(store))
}

/// Uploads `text` (whole lines of one segment) gzip-compressed to `key`, with its SHA-256.
pub async fn upload(store: &dyn ObjectStore, key: &str, text: &[u8]) -> Result<(), ShipError> {
    let failed = |message: String| ShipError::Upload {
        key: key.to_string(),
        message,
    };
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(text)
        .map_err(|err| failed(format!("cannot compress: {err}")))?;
    let compressed = gzip
        .finish()
        .map_err(|err| failed(format!("cannot compress: {err}")))?;
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(SHA256_METADATA.into()),
        chain::hex(&chain::sha256(&compressed)).into(),
    );
    attributes.insert(Attribute::ContentType, "application/gzip".into());
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    store
        .put_opts(&Key::from(key), PutPayload::from(compressed), options)
        .await
        .map_err(|err| failed(err.to_string()))?;
    Ok(())
}

/// The name a rotated segment waits under: `<log>.<date>.<segment>`.
pub fn spooled(log: &Path, date: &str, segment: &str) -> PathBuf {
    PathBuf::from(format!("{}.{date}.{segment}", log.display()))
}

/// A segment's name from its first line's `seq`: zero-padded, so names sort in chain order.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}")
}

/// The rotated segments of `log` waiting to be shipped, oldest first: (path, date, segment).
fn waiting(log: &Path) -> std::io::Result<Vec<(PathBuf, String, String)>> {
    let dir = match log.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Some(base) = log.file_name().map(|n| format!("{}.", n.to_string_lossy())) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&base) else {
            continue;
        };
        // `<YYYY-MM-DD>.<segment>`
        let Some((date, segment)) = rest.split_once('.') else {
            continue;
        };
        if date.len() != 10 || segment.is_empty() || segment.contains('.') {
            continue;
        }
        found.push((entry.path(), date.to_string(), segment.to_string()));
    }
    found.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
    Ok(found)
}

/// The counters of shipping, by action (registered with the agent's metrics).
pub struct ShipMetrics {
    pub uploaded: Family<ActionNameLabels, Counter>,
    pub failed: Family<ActionNameLabels, Counter>,
    pub backlog_bytes: Family<ActionNameLabels, Gauge>,
}

pub static METRICS: LazyLock<ShipMetrics> = LazyLock::new(|| ShipMetrics {
    uploaded: Family::default(),
    failed: Family::default(),
    backlog_bytes: Family::default(),
});

/// Adds the shipping metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "forensic_uploads",
        "Forensic log segments uploaded to object storage, by log action",
        METRICS.uploaded.clone(),
    );
    registry.register(
        "forensic_upload_failures",
        "Failed uploads of forensic log segments (each is retried), by log action",
        METRICS.failed.clone(),
    );
    registry.register(
        "forensic_backlog_bytes",
        "Bytes of rotated forensic log segments waiting on the node for their upload",
        METRICS.backlog_bytes.clone(),
    );
}

/// The shipping side of one `log` action.
pub struct Shipper {
    pub action: String,
    pub store: Arc<dyn ObjectStore>,
    /// `<prefix>/<node>`, no slash at either end.
    pub root: String,
    pub log: PathBuf,
    pub interval: Duration,
    pub policy: DeliveryPolicy,
    /// Woken by a rotation.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Shipper {
    fn key(&self, date: &str, segment: &str) -> String {
        format!("{}/{date}/{segment}{SUFFIX}", self.root)
    }

    /// Ships until the task is aborted (the action is dropped at a reload or shutdown; what was
    /// not confirmed stays on disk for the next shipper).
    pub async fn run(self) {
        let labels = ActionNameLabels {
            action: self.action.clone(),
        };
        let mut failures = 0;
        let mut next_open = tokio::time::Instant::now();
        // The open segment's key and length last shipped, so an idle log is not sent again.
        let mut open_shipped: Option<(String, usize)> = None;
        loop {
            let mut result = self.ship_rotated(&labels).await;
            if result.is_ok() && tokio::time::Instant::now() >= next_open {
                result = self.ship_open(&labels, &mut open_shipped).await;
                if result.is_ok() {
                    next_open = tokio::time::Instant::now() + self.interval;
                }
            }
            match result {
                Ok(()) => {
                    failures = 0;
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep_until(next_open) => {}
                    }
                }
                Err(err) => {
                    failures += 1;
                    METRICS.failed.get_or_create(&labels).inc();
                    let delay = self.policy.backoff(failures, None);
                    tracing::warn!(action = %self.action, error = %err, retry_in = ?delay, "Forensic log upload failed; it stays on the node and is retried.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Uploads every rotated segment waiting, oldest first, removing each once confirmed.
    async fn ship_rotated(&self, labels: &ActionNameLabels) -> Result<(), ShipError> {
        let read = |path: &Path, source| ShipError::Read {
            path: path.to_path_buf(),
            source,
        };
        let waiting = waiting(&self.log).map_err(|source| read(&self.log, source))?;
        let mut backlog: u64 = waiting
            .iter()
            .filter_map(|(path, _, _)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        METRICS
            .backlog_bytes
            .get_or_create(labels)
            .set(backlog as i64);
        for (path, date, segment) in waiting {
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                // Shipped and removed meanwhile (by the shipper of the config before a reload).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(read(&path, source)),
            };
            let key = self.key(&date, &segment);
            upload(self.store.as_ref(), &key, &text).await?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ShipError::Remove { path, source }),
            }
            METRICS.uploaded.get_or_create(labels).inc();
            backlog = backlog.saturating_sub(text.len() as u64);
            METRICS
                .backlog_bytes
                .get_or_create(labels)
                .set(backlog as i64);
            tracing::debug!(action = %self.action, %key, bytes = text.len(), "Forensic log segment shipped.");
        }
        Ok(())
    }

    /// Uploads the open segment's complete lines under the key its rotation will use (which
    /// then overwrites it with the whole segment).
    async fn ship_open(
        &self,
        labels: &ActionNameLabels,
        shipped: &mut Option<(String, usize)>,
    ) -> Result<(), ShipError> {
        let text = match std::fs::read(&self.log) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ShipError::Read {
                    path: self.log.clone(),
                    source,
                });
            }
        };
        let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let text = &text[..=end];
        let Some((date, segment)) = first_line_place(text) else {
            // Lines written before the chain: they ship when the file rotates.
            return Ok(());
        };
        let key = self.key(&date, &segment);
        if shipped
            .as_ref()
            .is_some_and(|(k, len)| *k == key && *len == text.len())
        {
            return Ok(());
        }
        upload(self.store.as_ref(), &key, text).await?;
        METRICS.uploaded.get_or_create(labels).inc();
        *shipped = Some((key, text.len()));
        Ok(())
    }
}

/// The date (of its `time`) and segment name (of its `seq`) of a segment's first line.
pub fn first_line_place(text: &[u8]) -> Option<(String, String)> {
    let line = text.split(|&b| b == b'\n').next()?;
    let sealed = chain::claims(line)?;
    Some((line_date(line)?, segment_name(sealed.seq)))
}

/// The UTC date of a forensic record's `time`, its first member.
pub fn line_date(line: &[u8]) -> Option<String> {
    let date = line.strip_prefix(b"{\"time\":\"")?.get(..10)?;
    let date = std::str::from_utf8(date).ok()?;
    let digits = |range: std::ops::Range<usize>| date[range].bytes().all(|b| b.is_ascii_digit());
    (digits(0..4) && &date[4..5] == "-" && digits(5..7) && &date[7..8] == "-" && digits(8..10))
        .then(|| date.to_string())
}

/// Downloads every `.jsonl.gz` object under `prefix`, checks each against its `sha256`
/// metadata and decompresses it; objects that fail are reported as (key, problem).
pub async fn download(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<(Vec<super::verify::Segment>, Vec<(String, String)>), ShipError> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStoreExt;
    let failed = |message: String| ShipError::Upload {
        key: prefix.to_string(),
        message,
    };
    let prefix = Key::from(prefix.trim_matches('/'));
    let mut objects: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|err| failed(format!("cannot list: {err}")))?;
    objects.retain(|o| o.location.as_ref().ends_with(SUFFIX));
    objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    let mut segments = Vec::new();
    let mut problems = Vec::new();
    for object in objects {
        let name = object.location.to_string();
        let got = store
            .get(&object.location)
            .await
            .map_err(|err| failed(format!("cannot get {name}: {err}")))?;
        let recorded = got
            .attributes
            .get(&Attribute::Metadata(SHA256_METADATA.into()))
            .map(|v| v.as_ref().to_string());
        let bytes = got
            .bytes()
            .await
            .map_err(|err| failed(format!("cannot get {name}: {err}")))?;
        let actual = chain::hex(&chain::sha256(&bytes));
        match recorded {
            Some(recorded) if recorded == actual => {}
            Some(recorded) => problems.push((
                name.clone(),
                format!("its bytes hash to {actual}, its sha256 metadata says {recorded}"),
            )),
            None => problems.push((name.clone(), "it has no sha256 metadata".into())),
        }
        let mut text = Vec::new();
        let mut gunzip = flate2::write::GzDecoder::new(&mut text);
        let unzipped = gunzip.write_all(&bytes).and_then(|()| gunzip.finish());
        if let Err(err) = unzipped {
            problems.push((name, format!("it is not gzip: {err}")));
            continue;
        }
        segments.push(super::verify::Segment { name, text });
    }
    Ok((segments, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_segments_are_found_oldest_first() {
        let dir = std::env::temp_dir().join(format!("hooker-ship-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("forensic.jsonl");
        for name in [
            "forensic.jsonl",
            "forensic.jsonl.1",
            "other.2026-12-06.00000000000000000001",
        ] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        std::fs::write(spooled(&log, "2026-12-06", &segment_name(12)), "x").unwrap();
        std::fs::write(spooled(&log, "2026-12-05", &segment_name(3)), "x").unwrap();
        let found: Vec<String> = waiting(&log).unwrap().into_iter().map(|w| w.2).collect();
        assert_eq!(found, [segment_name(3), segment_name(12)]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

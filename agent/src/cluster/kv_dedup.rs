//! Cluster-wide `unique-message-props`: the first responder to create a finding's key in a
//! JetStream KV bucket delivers it; the others drop it. The key is the SHA-256 of the route's
//! dedup key; its value is the id of the delivery that claimed it, so a redelivery of that same
//! delivery (a responder killed between its claim and its ack) is recognised as the owner and
//! delivered, not dropped.
//!
//! One bucket per distinct `unique-message-timeout` (`hooker-dedup-<seconds>s`, `max_age` = the
//! timeout; `hooker-dedup` without a timeout): a bucket's `max_age` is its keys' TTL (per-key
//! TTLs need NATS 2.11), so routes with different timeouts cannot share one.
//!
//! - **Invariant:** fail open. When the bucket cannot be asked, the delivery goes ahead (a
//!   possible duplicate, counted as `fail_open`), never a loss.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::Mutex;

use super::Nats;
use crate::metrics::{Metrics, OutcomeLabels};

/// What the bucket decided for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery owns the key: deliver.
    First,
    /// Another delivery owns it: drop.
    Duplicate,
    /// The bucket could not be asked: deliver anyway.
    FailOpen(String),
}

/// Tries of a key's creation after the first fails (other than by existing).
const CREATE_RETRIES: usize = 2;

pub struct KvDedup {
    nats: Nats,
    metrics: Metrics,
    buckets: Mutex<HashMap<u64, kv::Store>>,
}

impl KvDedup {
    pub fn new(nats: Nats, metrics: Metrics) -> KvDedup {
        for outcome in ["new", "duplicate", "fail_open"] {
            let _ = metrics.kv_dedup.get_or_create(&OutcomeLabels { outcome });
        }
        KvDedup {
            nats,
            metrics,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket's name for a timeout (`None`: keys never expire).
    pub fn bucket_name(base: &str, ttl: Option<Duration>) -> String {
        match ttl.filter(|t| !t.is_zero()) {
            Some(ttl) => format!("{base}-{}s", ttl.as_secs().max(1)),
            None => base.to_string(),
        }
    }

    /// Claims `key` for delivery `id`; counts the outcome.
    pub async fn claim(&self, key: &str, ttl: Option<Duration>, id: &str) -> Claim {
        let claim =
            match tokio::time::timeout(super::REQUEST_TIMEOUT * 3, self.try_claim(key, ttl, id))
                .await
            {
                Ok(claim) => claim,
                Err(_) => Claim::FailOpen("the KV bucket did not answer in time".into()),
            };
        let outcome = match &claim {
            Claim::First => "new",
            Claim::Duplicate => "duplicate",
            Claim::FailOpen(error) => {
                tracing::warn!(%error, "Cluster dedup unavailable; delivering (a possible duplicate).");
                "fail_open"
            }
        };
        self.metrics
            .kv_dedup
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        claim
    }

    async fn try_claim(&self, key: &str, ttl: Option<Duration>, id: &str) -> Claim {
        let store = match self.bucket(ttl).await {
            Ok(store) => store,
            Err(error) => return Claim::FailOpen(error),
        };
        let key = super::digest(&[key]);
        let mut created = store.create(&key, id.as_bytes().to_vec().into()).await;
        // A bucket just created may not take writes until its stream has a leader.
        for _ in 0..CREATE_RETRIES {
            match &created {
                Err(error) if error.kind() != kv::CreateErrorKind::AlreadyExists => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    created = store.create(&key, id.as_bytes().to_vec().into()).await;
                }
                _ => break,
            }
        }
        match created {
            Ok(_) => Claim::First,
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                match store.get(&key).await {
                    Ok(Some(owner)) if owner.as_ref() == id.as_bytes() => Claim::First,
                    Ok(Some(_)) => Claim::Duplicate,
                    // Expired or deleted between the two calls: try once more.
                    Ok(None) => match store.create(&key, id.as_bytes().to_vec().into()).await {
                        Ok(_) => Claim::First,
                        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                            Claim::Duplicate
                        }
                        Err(error) => Claim::FailOpen(error.to_string()),
                    },
                    Err(error) => Claim::FailOpen(error.to_string()),
                }
            }
            Err(error) => Claim::FailOpen(error.to_string()),
        }
    }

    /// The bucket for `ttl`, looked up or created once per process.
    async fn bucket(&self, ttl: Option<Duration>) -> Result<kv::Store, String> {
        let ttl = ttl.filter(|t| !t.is_zero());
        let seconds = ttl.map_or(0, |t| t.as_secs().max(1));
        let mut buckets = self.buckets.lock().await;
        if let Some(store) = buckets.get(&seconds) {
            return Ok(store.clone());
        }
        let name = Self::bucket_name(&self.nats.settings.nats_kv_bucket, ttl);
        let store = open_bucket(
            &self.nats,
            &name,
            Duration::from_secs(seconds),
            "Hooker: unique-message-props keys, decided once for the cluster",
        )
        .await?;
        buckets.insert(seconds, store.clone());
        Ok(store)
    }
}

/// Opens KV bucket `name`, creating it when absent with `max_age` (zero: keys never expire) as
/// its keys' TTL. Its stream is made as the client's `create_key_value` makes it: that call
/// first asks for account limits in a form NATS 2.9 does not answer.
pub(super) async fn open_bucket(
    nats: &Nats,
    name: &str,
    max_age: Duration,
    description: &str,
) -> Result<kv::Store, String> {
    if let Ok(store) = nats.jetstream.get_key_value(name).await {
        return Ok(store);
    }
    let stream = async_nats::jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: nats.replicas(),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    nats.jetstream
        .get_or_create_stream(stream)
        .await
        .map_err(|error| format!("cannot create KV bucket {name}: {error}"))?;
    nats.jetstream
        .get_key_value(name)
        .await
        .map_err(|error| format!("cannot open KV bucket {name}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_per_timeout() {
        assert_eq!(KvDedup::bucket_name("hooker-dedup", None), "hooker-dedup");
        assert_eq!(
            KvDedup::bucket_name("hooker-dedup", Some(Duration::from_secs(3600))),
            "hooker-dedup-3600s"
        );
        assert_eq!(
            KvDedup::bucket_name("hooker-dedup", Some(Duration::from_millis(10))),
            "hooker-dedup-1s"
        );
    }
}

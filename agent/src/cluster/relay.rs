//! The node side: a delivery for a `runs-on: responder` action is an ordinary outbox delivery
//! whose action is this relay. Its `send` publishes the delivery to JetStream and succeeds only
//! when JetStream acknowledges it, so the outbox's retries, backoff and circuit breaker apply:
//! NATS down is a backlog on the node's disk, relayed when NATS is back.
//!
//! Each delivery has a stable id (node, event, route, action), sent as `Nats-Msg-Id`: a
//! republish after a lost ack is dropped by JetStream within the stream's duplicate window.
//!
//! A route that aggregates (`aggregate-message-number` / `-timeout`) relays each of its messages
//! as it comes, to the aggregate stream: the responder aggregates them once for the cluster. Its
//! node-local actions still aggregate on the node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::envelope::{self, Dedup, Envelope};
use super::{Nats, RunsOn};
use crate::action::{Action, ActionError, Report};
use crate::config::Config;
use crate::message::Message;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::pipeline::Pipeline;

/// Least concurrency of a relayed action: a publish is cheap, and a backlog drains faster.
const RELAY_CONCURRENCY: usize = 32;

/// Longest pause between relay attempts, and of the relay's circuit breaker.
const RELAY_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The node's relay: one per process, shared by every relayed action.
pub struct Relay {
    nats: Nats,
    node: String,
    metrics: Metrics,
    subject: String,
    /// Where single messages of aggregating routes go.
    aggregate_subject: String,
    /// The streams were found or created since the last failure.
    stream_ready: AtomicBool,
    /// Deliveries tried and not yet acknowledged, by id: their attempts (the backlog gauge).
    waiting: Mutex<HashMap<String, u32>>,
}

impl Relay {
    pub fn new(nats: Nats, node: String, metrics: Metrics) -> Arc<Relay> {
        for outcome in ["acked", "duplicate", "error"] {
            let _ = metrics
                .relay_published
                .get_or_create(&OutcomeLabels { outcome });
        }
        let subject = format!("{}.v{}", nats.settings.nats_subject, envelope::VERSION);
        let aggregate_subject = format!("{}.v{}", nats.aggregate_subject(), envelope::VERSION);
        Arc::new(Relay {
            nats,
            node,
            metrics,
            subject,
            aggregate_subject,
            stream_ready: AtomicBool::new(false),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces every action of `pipeline` that runs on the responder with a relay to it, and
    /// gives it a policy that never gives up (a relay fails only while NATS is unreachable).
    pub fn wrap(self: &Arc<Self>, config: &Config, pipeline: &mut Pipeline) {
        let dedup: HashMap<String, RouteDedup> = pipeline
            .routes
            .iter()
            .filter(|route| !route.unique_props.is_empty() && !route.aggregates())
            .map(|route| {
                (
                    route.name.to_string(),
                    RouteDedup {
                        props: route.unique_props.clone(),
                        ttl: route.unique_timeout,
                    },
                )
            })
            .collect();
        let dedup = Arc::new(dedup);
        let aggregating: Arc<std::collections::HashSet<String>> = Arc::new(
            pipeline
                .routes
                .iter()
                .filter(|route| route.aggregates())
                .map(|route| route.name.to_string())
                .collect(),
        );
        let mut relayed_names = std::collections::HashSet::new();
        for block in config.actions.iter().filter(|a| a.enable) {
            if super::runs_on(block, true) != RunsOn::Responder {
                continue;
            }
            let Some(inner) = pipeline.actions.get(&block.name) else {
                continue;
            };
            let relayed = RelayAction {
                relay: self.clone(),
                name: block.name.clone(),
                inner_kind: inner.kind(),
                dedup: dedup.clone(),
                aggregating: aggregating.clone(),
            };
            relayed_names.insert(block.name.clone());
            pipeline
                .actions
                .insert(block.name.clone(), Arc::new(relayed));
            if let Some(policy) = pipeline.policies.get_mut(&block.name) {
                policy.retry_max_attempts = u32::MAX;
                policy.retry_max_age = crate::config::units::MAX_DURATION;
                policy.max_concurrency = policy.max_concurrency.max(RELAY_CONCURRENCY);
                // NATS back: relaying resumes within seconds, not after the action's own backoff.
                policy.retry_max_backoff = policy.retry_max_backoff.min(RELAY_MAX_BACKOFF);
                policy.circuit_breaker_cooldown =
                    policy.circuit_breaker_cooldown.min(RELAY_MAX_BACKOFF);
            }
            tracing::debug!(action = %block.name, "Action runs on the responder: relayed.");
        }
        // An aggregating route hands each message to its relayed actions at once; the node's
        // aggregator keeps the others.
        for route in pipeline.routes.iter_mut().filter(|r| r.aggregates()) {
            route.direct_actions = route
                .actions
                .iter()
                .filter(|name| relayed_names.contains(*name))
                .cloned()
                .collect();
        }
    }

    async fn publish(
        &self,
        id: &str,
        payload: Vec<u8>,
        aggregate: bool,
    ) -> Result<bool, ActionError> {
        if !self.nats.connected() {
            return Err(ActionError::retryable("not connected to NATS"));
        }
        if !self.stream_ready.load(Ordering::Relaxed) {
            self.nats.stream().await.map_err(ActionError::retryable)?;
            self.nats
                .aggregate_stream()
                .await
                .map_err(ActionError::retryable)?;
            self.stream_ready.store(true, Ordering::Relaxed);
        }
        let subject = if aggregate {
            self.aggregate_subject.clone()
        } else {
            self.subject.clone()
        };
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        let acked = async {
            let pending = self
                .nats
                .jetstream
                .send_publish(subject, publish)
                .await
                .map_err(|e| e.to_string())?;
            pending.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(super::REQUEST_TIMEOUT * 2, acked).await {
            Ok(Ok(ack)) => Ok(ack.duplicate),
            Ok(Err(error)) => {
                self.stream_ready.store(false, Ordering::Relaxed);
                Err(ActionError::retryable(format!(
                    "JetStream publish failed: {error}"
                )))
            }
            Err(_) => Err(ActionError::retryable(
                "JetStream did not acknowledge the publish in time",
            )),
        }
    }

    fn attempt(&self, id: &str) -> u32 {
        let Ok(mut waiting) = self.waiting.lock() else {
            return 1;
        };
        let attempts = waiting.entry(id.to_string()).or_insert(0);
        *attempts += 1;
        let attempt = *attempts;
        self.metrics.relay_backlog.set(waiting.len() as i64);
        attempt
    }

    fn settled(&self, id: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(id);
            self.metrics.relay_backlog.set(waiting.len() as i64);
        }
    }
}

/// A route's `unique-message-props`, decided on the responder for the cluster.
struct RouteDedup {
    props: Vec<String>,
    ttl: Option<Duration>,
}

/// An action of the config that runs on the responder, seen from the node.
struct RelayAction {
    relay: Arc<Relay>,
    name: String,
    inner_kind: &'static str,
    dedup: Arc<HashMap<String, RouteDedup>>,
    /// Routes that aggregate: their messages go to the aggregate stream.
    aggregating: Arc<std::collections::HashSet<String>>,
}

impl RelayAction {
    fn envelope(&self, id: String, attempt: u32, message: &Message) -> Envelope {
        let dedup = self.dedup.get(&message.route).and_then(|route| {
            let key =
                crate::router::dedup::dedup_key(&message.route, &route.props, &message.event)?;
            Some(Dedup {
                key,
                ttl_ms: route.ttl.map(|t| t.as_millis() as u64),
            })
        });
        Envelope {
            v: envelope::VERSION,
            id,
            node: self.relay.node.clone(),
            route: message.route.clone(),
            action: self.name.clone(),
            attempt,
            dedup,
            aggregate: self.aggregating.contains(&message.route),
            message: message.clone(),
        }
    }
}

#[async_trait]
impl Action for RelayAction {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "relay"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let id = super::digest(&[
            &self.relay.node,
            &message.event_id,
            &message.route,
            &self.name,
        ]);
        let attempt = self.relay.attempt(&id);
        let envelope = self.envelope(id.clone(), attempt, message);
        let aggregate = envelope.aggregate;
        let payload = envelope
            .encode()
            .map_err(|e| ActionError::permanent(format!("cannot encode the delivery: {e}")))?;
        let metrics = &self.relay.metrics;
        match self.relay.publish(&id, payload, aggregate).await {
            Ok(duplicate) => {
                self.relay.settled(&id);
                let outcome = if duplicate { "duplicate" } else { "acked" };
                metrics
                    .relay_published
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc();
                Ok(Report::detail(format!(
                    "relayed to the responder ({} action)",
                    self.inner_kind
                )))
            }
            Err(error) => {
                metrics
                    .relay_published
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                Err(error)
            }
        }
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        serde_json::json!({ "relay": { "action": self.name, "type": self.inner_kind }, "title": message.title, "body": message.body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{ClusterSettings, RunSettings};

    fn settings() -> ClusterSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunSettings,
        }
        let mut cluster = Cli::parse_from(["hooker"]).run.cluster;
        // Nothing listens there: the client connects in the background and never gets there.
        cluster.nats = vec!["nats://127.0.0.1:1".into()];
        cluster
    }

    #[tokio::test]
    async fn only_responder_actions_are_relayed_and_their_relay_never_gives_up() {
        let config = Config::parse(
            "routes:\n  - name: r\n    input: input.n\n    template: raw\n    actions: [hook, script, pinned]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: http://127.0.0.1:1/\n    retry-max-attempts: 3\n  - name: script\n    type: exec\n    enable: true\n    exec-script: echo\n  - name: pinned\n    type: webhook\n    enable: true\n    url: http://127.0.0.1:1/\n    runs-on: node\n",
            None,
        )
        .unwrap();
        let cx = crate::action::BuildContext::new("n1".into()).unwrap();
        let mut pipeline = Pipeline::build(&config, &Default::default(), &cx)
            .await
            .unwrap();
        let nats = Nats::connect(&settings(), "test").await.unwrap();
        Relay::new(nats, "n1".into(), Metrics::new()).wrap(&config, &mut pipeline);
        assert_eq!(pipeline.actions["hook"].kind(), "relay");
        assert_eq!(pipeline.actions["script"].kind(), "exec");
        assert_eq!(pipeline.actions["pinned"].kind(), "webhook");
        let policy = &pipeline.policies["hook"];
        assert_eq!(policy.retry_max_attempts, u32::MAX);
        assert!(policy.retry_max_backoff <= RELAY_MAX_BACKOFF);
        assert_eq!(pipeline.policies["pinned"].retry_max_attempts, 12);
    }
}

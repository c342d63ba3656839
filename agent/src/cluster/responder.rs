//! The responder role (`hooker run --role responder`): pulls relayed deliveries from JetStream
//! with one durable consumer that every replica shares, and for each message commits a delivery
//! to the named action into its own outbox, then acknowledges the message (double ack: the ack
//! is confirmed by the server). A responder killed between the two loses nothing: JetStream
//! redelivers the message after the ack wait, to whichever replica pulls next.
//!
//! `unique-message-props` of a relayed delivery is decided here, once for the cluster
//! ([`super::kv_dedup`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::Nats;
use super::envelope::Envelope;
use super::kv_dedup::{Claim, KvDedup};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::outbox::Outbox;

/// Messages handed to this replica and not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 256;

/// Messages asked for per pull request.
const PULL_BATCH: usize = 8;

/// How long a message waits before it is offered again when this responder cannot take it.
const NAK_DELAY: Duration = Duration::from_secs(2);

pub struct Responder {
    pub nats: Nats,
    pub outbox: Arc<Outbox>,
    pub metrics: Metrics,
    pub dedup: KvDedup,
}

impl Responder {
    pub fn new(nats: Nats, outbox: Arc<Outbox>, metrics: Metrics) -> Responder {
        for outcome in [
            "consumed",
            "acked",
            "duplicate",
            "malformed",
            "commit_failed",
            "ack_failed",
        ] {
            let _ = metrics
                .responder_messages
                .get_or_create(&OutcomeLabels { outcome });
        }
        let dedup = KvDedup::new(nats.clone(), metrics.clone());
        Responder {
            nats,
            outbox,
            metrics,
            dedup,
        }
    }

    /// Consumes until `stop`; binds the consumer again (with backoff) whenever it fails.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                result = self.consume() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, retry_in = ?backoff, "Responder cannot consume from JetStream; retrying.");
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn consume(&self) -> Result<(), String> {
        if !self.nats.connected() {
            return Err("not connected to NATS".into());
        }
        let stream = self.nats.stream().await?;
        let name = self.nats.settings.nats_consumer.clone();
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.nats.settings.nats_ack_wait,
                    max_deliver: -1,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| format!("cannot bind consumer {name}: {error}"))?;
        // Small pulls: messages are committed one by one, and what a replica has pulled waits
        // for it (a killed one's until the ack wait), so replicas share the work instead of the
        // first one taking hundreds at once.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .map_err(|error| format!("cannot pull from consumer {name}: {error}"))?;
        tracing::info!(consumer = %name, stream = %self.nats.settings.nats_stream, "Responder consuming relayed deliveries.");
        // Up to a pull's worth handled at once: their outbox commits share one `fdatasync`.
        let mut handling = futures_util::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(()) = handling.next(), if !handling.is_empty() => {}
                next = messages.next(), if handling.len() < PULL_BATCH => match next {
                    Some(Ok(message)) => handling.push(self.handle_in_progress(message)),
                    Some(Err(error)) => {
                        while handling.next().await.is_some() {}
                        return Err(format!("pulling failed: {error}"));
                    }
                    None => {
                        while handling.next().await.is_some() {}
                        return Err("the message stream ended".into());
                    }
                },
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .responder_messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// [`Responder::handle`], telling JetStream the message is in progress every third of the
    /// ack wait: a slow KV bucket or disk must not get it redelivered to another replica while
    /// this one still works on it (both would deliver it).
    async fn handle_in_progress(&self, message: jetstream::Message) {
        let every = (self.nats.settings.nats_ack_wait / 3).max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let handling = self.handle(&message);
        tokio::pin!(handling);
        loop {
            tokio::select! {
                () = &mut handling => return,
                _ = ticker.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    /// One relayed delivery: decide dedup, commit to the outbox, then acknowledge.
    async fn handle(&self, message: &jetstream::Message) {
        self.count("consumed");
        let envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Never deliverable by this build: redelivering it forever would help nobody.
                tracing::error!(%error, "Relayed message refused.");
                self.count("malformed");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        if let Some(dedup) = &envelope.dedup {
            let ttl = dedup.ttl_ms.map(Duration::from_millis);
            if self.dedup.claim(&dedup.key, ttl, &envelope.id).await == Claim::Duplicate {
                tracing::debug!(route = %envelope.route, action = %envelope.action, node = %envelope.node, "Duplicate dropped by cluster-wide unique-message-props.");
                self.metrics
                    .dedup_dropped
                    .get_or_create(&crate::metrics::RouteLabels {
                        route: envelope.route.clone(),
                    })
                    .inc();
                self.count("duplicate");
                self.ack(message).await;
                return;
            }
        }
        if self.outbox.is_full() {
            self.count("commit_failed");
            tracing::warn!("Outbox full; a relayed delivery waits in JetStream.");
            let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            return;
        }
        let deliveries = self.outbox.deliveries_for(
            &envelope.route,
            std::slice::from_ref(&envelope.action),
            false,
            &envelope.message,
        );
        let (done, committed) = oneshot::channel();
        self.outbox.commit(deliveries, Vec::new(), move |result| {
            let _ = done.send(result);
        });
        match committed.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.count("commit_failed");
                tracing::error!(%error, "Cannot store a relayed delivery; JetStream offers it again.");
                let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                return;
            }
            Err(_) => {
                self.count("commit_failed");
                return;
            }
        }
        tracing::debug!(route = %envelope.route, action = %envelope.action, node = %envelope.node, attempt = envelope.attempt, "Relayed delivery taken.");
        self.ack(message).await;
    }

    async fn ack(&self, message: &jetstream::Message) {
        match message.double_ack().await {
            Ok(()) => self.count("acked"),
            Err(error) => {
                // Redelivered after the ack wait: at least once (a deduplicated route's owner
                // recognises its own claim).
                tracing::warn!(%error, "Cannot acknowledge a relayed delivery; it may be delivered twice.");
                self.count("ack_failed");
            }
        }
    }
}

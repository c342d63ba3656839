//! The responder role (`hooker run --role responder`): pulls relayed deliveries from JetStream
//! with one durable consumer that every replica shares, commits each one to its own outbox (for
//! the retries, circuit breaker and dead letters of the action), and acknowledges the message
//! only once that delivery has left the outbox: delivered, or a dead letter. Until then the
//! message stays in progress in JetStream, so the responder's disk is never the only copy:
//!
//! - killed (`kill -9`, pod and disk gone): JetStream offers its messages again after the ack
//!   wait, to whichever replica pulls next;
//! - stopped (SIGTERM): it stops pulling, [withdraws](crate::outbox::Outbox::withdraw) every
//!   delivery not yet done from its outbox and hands its message back at once (a nak), so
//!   another replica delivers it while this one goes away, even with its sink down.
//!
//! `unique-message-props` of a relayed delivery is decided here, once for the cluster
//! ([`super::kv_dedup`]); a message handed over keeps its claim (the claim is the message id's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{oneshot, watch};

use super::envelope::Envelope;
use super::kv_dedup::{Claim, KvDedup};
use super::{Held, InFlight, Nats};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::outbox::{Outbox, Settled};

/// Messages handed to the consumer (all replicas) and not yet acknowledged, at most: past it
/// JetStream keeps the backlog (replicated, on its disks) until a delivery finishes.
const MAX_ACK_PENDING: i64 = 1024;

/// Messages one replica holds at once (committed, waiting for their delivery to finish).
const MAX_HELD: usize = 256;

/// Messages asked for per pull request.
const PULL_BATCH: usize = 8;

/// How long one pull request waits for messages. Bounded, so that a stopping responder knows
/// when nothing more is on its way to it.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long a message waits before it is offered again when this responder cannot take it.
const NAK_DELAY: Duration = Duration::from_secs(2);

/// The messages a replica holds, each a future that ends once it is acknowledged or handed back.
type Handling<'a> = InFlight<'a>;

pub struct Responder {
    pub nats: Nats,
    pub outbox: Arc<Outbox>,
    pub metrics: Metrics,
    pub dedup: KvDedup,
    /// Outbox deliveries of the messages held now.
    held: Held,
    /// Messages handed back to JetStream while stopping.
    handed_back: AtomicU64,
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
            "handed_back",
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
            held: Held::default(),
            handed_back: AtomicU64::new(0),
        }
    }

    /// Consumes until `stop`, then hands back what it holds; binds the consumer again (with
    /// backoff) whenever it fails, holding on to the messages it has.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut handling: Handling<'_> = FuturesUnordered::new();
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.consume(&mut stop, &mut handling).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "Responder cannot consume from JetStream; retrying.");
                }
            }
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            let stopped = loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break true,
                    _ = &mut pause => break false,
                    Some(()) = handling.next(), if !handling.is_empty() => {}
                }
            };
            if stopped {
                break;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.hand_over(&mut handling).await;
    }

    /// Pulls (one bounded pull request at a time) until `stop`; `Ok` once stopped.
    async fn consume<'a>(
        &'a self,
        stop: &mut watch::Receiver<bool>,
        handling: &mut Handling<'a>,
    ) -> Result<(), String> {
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
        tracing::info!(consumer = %name, stream = %self.nats.settings.nats_stream, "Responder consuming relayed deliveries.");
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if handling.len() >= MAX_HELD {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    _ = handling.next() => continue,
                }
            }
            // Small pulls: what a replica has pulled waits for it, so replicas share the work
            // instead of the first one taking hundreds at once.
            let room = (MAX_HELD - handling.len()).clamp(1, PULL_BATCH);
            let mut batch = consumer
                .batch()
                .max_messages(room)
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|error| format!("cannot pull from consumer {name}: {error}"))?;
            // The pull runs to its end even when stopping: a message it brings then goes back
            // at once, and none is left on its way to this replica.
            loop {
                tokio::select! {
                    Some(()) = handling.next(), if !handling.is_empty() => {}
                    next = batch.next() => match next {
                        Some(Ok(message)) if *stop.borrow() => {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        Some(Ok(message)) => handling.push(Box::pin(self.handle_in_progress(message))),
                        Some(Err(error)) => return Err(format!("pulling failed: {error}")),
                        None => break,
                    },
                }
            }
        }
    }

    /// Stopping: withdraws the held deliveries from the outbox (again every half second, for
    /// one committed meanwhile or running now) until every held message is acknowledged or
    /// handed back, or the deadline.
    async fn hand_over(&self, handling: &mut Handling<'_>) {
        if handling.is_empty() {
            return;
        }
        tracing::info!(
            held = handling.len(),
            "Responder stopping: handing back to JetStream what it has not delivered."
        );
        super::hand_over(
            handling,
            &self.outbox,
            &self.held,
            &self.nats.client,
            "relayed deliveries",
        )
        .await;
        tracing::info!(
            handed_back = self.handed_back.load(Ordering::Relaxed),
            "Relayed deliveries handed back to JetStream."
        );
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .responder_messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// [`Responder::handle`], telling JetStream the message is in progress every third of the
    /// ack wait: a slow KV bucket, disk or sink must not get it redelivered to another replica
    /// while this one still works on it (both would deliver it).
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

    /// One relayed delivery: decide dedup, commit to the outbox, wait until the delivery has left
    /// it, then acknowledge (or hand the message back when it was withdrawn).
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
        let ids: Vec<u64> = deliveries.iter().map(|d| d.id).collect();
        let watchers = self.outbox.watch(&ids);
        self.held.hold(&ids, true);
        let (done, committed) = oneshot::channel();
        self.outbox.commit(deliveries, Vec::new(), move |result| {
            let _ = done.send(result);
        });
        let committed = match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("the state store writer stopped".into()),
        };
        if let Err(error) = committed {
            self.outbox.unwatch(&ids);
            self.held.hold(&ids, false);
            self.count("commit_failed");
            tracing::error!(%error, "Cannot store a relayed delivery; JetStream offers it again.");
            let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            return;
        }
        tracing::debug!(route = %envelope.route, action = %envelope.action, node = %envelope.node, attempt = envelope.attempt, "Relayed delivery taken.");
        // The message stays in progress until its delivery has left the outbox.
        let mut outcome = Some(Settled::Delivered);
        for watcher in watchers {
            match watcher.await {
                Ok(Settled::Delivered | Settled::DeadLettered) => {}
                Ok(how) => outcome = Some(how),
                // Never told (stopping): it may still be pending here; JetStream offers it
                // again after the ack wait.
                Err(_) => outcome = None,
            }
        }
        self.held.hold(&ids, false);
        match outcome {
            Some(Settled::Delivered | Settled::DeadLettered) => self.ack(message).await,
            Some(Settled::Withdrawn) => {
                self.count("handed_back");
                self.handed_back.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(route = %envelope.route, action = %envelope.action, "Relayed delivery handed back.");
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            Some(Settled::Dropped) => {
                self.count("commit_failed");
                let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            }
            None => {}
        }
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

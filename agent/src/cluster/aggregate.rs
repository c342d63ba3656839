//! Aggregation for the cluster: node agents relay each message of an aggregating route
//! (`aggregate-message-number` / `aggregate-message-timeout`) to the aggregate stream, and one
//! responder at a time gathers them, so a route's windows are the cluster's, not each node's.
//!
//! Which responder aggregates is a lease in a JetStream KV bucket (`HOOKER_NATS_KV_BUCKET` +
//! `-lease`, key `aggregator`): taken with create-if-absent, renewed every [`LEASE_RENEW`], and
//! lost when not renewed within [`LEASE_TTL`] (the bucket's `max_age`), or given up at shutdown.
//!
//! A window is not kept on the responder's disk: its messages stay in progress in JetStream
//! until the aggregate made of them has left the outbox (delivered, or a dead letter); then they
//! are acknowledged. A responder killed with a window open, or with its aggregate not yet
//! delivered, loses nothing: the next lease holder gets the messages again after the ack wait.
//! One that stops (SIGTERM) or loses the lease hands back its open windows and withdraws its
//! aggregates not yet delivered at once.
//!
//! Windows are per route and action (each action gets the aggregate of its messages, as on a
//! node). A window is flushed when it holds `aggregate-message-number` messages or when
//! `aggregate-message-timeout` has passed since its first message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::envelope::Envelope;
use super::{Held, InFlight, Nats};
use crate::message::Message;
use crate::metrics::{FlushLabels, Metrics, OutcomeLabels};
use crate::outbox::{Outbox, Settled};
use crate::pipeline::Pipeline;

/// How long a lease lasts without renewal: after a holder is killed, the next one takes over
/// within it (and gets the killed one's messages after the ack wait).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// How often the holder renews its lease, and others try to take it.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);

/// The lease's key in its bucket.
const LEASE_KEY: &str = "aggregator";

/// Messages of open windows and undelivered aggregates, at most (the consumer's
/// `max_ack_pending`): past it JetStream keeps them until a window is flushed by its timeout.
const MAX_ACK_PENDING: i64 = 4096;

/// Messages asked for per pull request.
const PULL_BATCH: usize = 64;

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long a message waits before it is offered again after a failed commit.
const NAK_DELAY: Duration = Duration::from_secs(2);

/// One open window: the messages gathered and their JetStream messages, held in progress.
struct Window {
    started: Instant,
    items: Vec<(jetstream::Message, Message)>,
}

/// Aggregates being delivered; each future ends once its messages are acknowledged or handed
/// back.
type Flushing<'a> = InFlight<'a>;

pub struct Aggregator {
    nats: Nats,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    pipeline: watch::Receiver<Arc<Pipeline>>,
    /// This process's lease value.
    me: String,
    /// Outbox deliveries of the aggregates being delivered.
    held: Held,
    handed_back: AtomicU64,
}

impl Aggregator {
    pub fn new(
        nats: Nats,
        outbox: Arc<Outbox>,
        metrics: Metrics,
        pipeline: watch::Receiver<Arc<Pipeline>>,
    ) -> Aggregator {
        let me = nats.client.new_inbox();
        Aggregator {
            nats,
            outbox,
            metrics,
            pipeline,
            me,
            held: Held::default(),
            handed_back: AtomicU64::new(0),
        }
    }

    /// Takes the lease whenever it is free and aggregates while holding it, until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut flushing: Flushing<'_> = FuturesUnordered::new();
        let mut windows = HashMap::new();
        loop {
            if *stop.borrow() {
                break;
            }
            match self.take_lease().await {
                Ok(Some((lease, revision))) => {
                    tracing::info!("This responder aggregates for the cluster.");
                    let result = self
                        .lead(&mut stop, &lease, revision, &mut windows, &mut flushing)
                        .await;
                    if let Err(error) = &result {
                        tracing::warn!(%error, "Cluster aggregation interrupted; handing back its windows.");
                    }
                    self.hand_over(&mut windows, &mut flushing).await;
                    if *stop.borrow() {
                        // Let the next responder take over now rather than after the TTL.
                        let _ = lease
                            .delete_expect_revision(LEASE_KEY, result.ok().flatten())
                            .await;
                        break;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, "Cannot ask for the aggregation lease; trying again.")
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(LEASE_RENEW) => {}
            }
        }
        self.hand_over(&mut windows, &mut flushing).await;
    }

    /// The lease bucket and the revision of this process's lease, when it got it.
    async fn take_lease(&self) -> Result<Option<(kv::Store, u64)>, String> {
        if !self.nats.connected() {
            return Err("not connected to NATS".into());
        }
        let name = format!("{}-lease", self.nats.settings.nats_kv_bucket);
        let lease = super::kv_dedup::open_bucket(
            &self.nats,
            &name,
            LEASE_TTL,
            "Hooker: which responder aggregates for the cluster",
        )
        .await?;
        match lease.create(LEASE_KEY, self.me.clone().into()).await {
            Ok(revision) => Ok(Some((lease, revision))),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Still this process's (aggregation was interrupted by something else)?
                match lease.entry(LEASE_KEY).await {
                    Ok(Some(entry)) if entry.value.as_ref() == self.me.as_bytes() => {
                        Ok(Some((lease, entry.revision)))
                    }
                    _ => Ok(None),
                }
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Aggregates while the lease holds; `Ok` with the lease's last revision once stopped.
    async fn lead<'a>(
        &'a self,
        stop: &mut watch::Receiver<bool>,
        lease: &kv::Store,
        mut revision: u64,
        windows: &mut HashMap<(String, String), Window>,
        flushing: &mut Flushing<'a>,
    ) -> Result<Option<u64>, String> {
        let stream = self.nats.aggregate_stream().await?;
        let name = format!("{}-aggregate", self.nats.settings.nats_consumer);
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
        let mut renew = tokio::time::interval_at(Instant::now() + LEASE_RENEW, LEASE_RENEW);
        let every = (self.nats.settings.nats_ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(Instant::now() + every, every);
        let mut due = tokio::time::interval(Duration::from_millis(100));
        let mut batch = None;
        loop {
            if batch.is_none() {
                if *stop.borrow() {
                    return Ok(Some(revision));
                }
                batch = Some(
                    consumer
                        .batch()
                        .max_messages(PULL_BATCH)
                        .expires(PULL_EXPIRES)
                        .messages()
                        .await
                        .map_err(|error| format!("cannot pull from consumer {name}: {error}"))?,
                );
            }
            let Some(pull) = batch.as_mut() else {
                continue;
            };
            tokio::select! {
                next = pull.next() => match next {
                    // Stopping: the pull runs to its end, and what it brings goes back at once.
                    Some(Ok(message)) if *stop.borrow() => {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                    Some(Ok(message)) => self.take(message, windows, flushing),
                    Some(Err(error)) => return Err(format!("pulling failed: {error}")),
                    None => batch = None,
                },
                Some(()) = flushing.next(), if !flushing.is_empty() => {}
                _ = due.tick() => self.flush_due(windows, flushing),
                _ = progress.tick() => {
                    for window in windows.values() {
                        for (message, _) in &window.items {
                            let _ = message.ack_with(AckKind::Progress).await;
                        }
                    }
                }
                _ = renew.tick() => {
                    revision = lease
                        .update(LEASE_KEY, self.me.clone().into(), revision)
                        .await
                        .map_err(|error| format!("the aggregation lease was lost: {error}"))?;
                }
            }
        }
    }

    /// One relayed message of an aggregating route: into its window.
    fn take<'a>(
        &'a self,
        message: jetstream::Message,
        windows: &mut HashMap<(String, String), Window>,
        flushing: &mut Flushing<'a>,
    ) {
        self.count("consumed");
        let envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(%error, "Relayed message refused.");
                self.count("malformed");
                flushing.push(Box::pin(async move {
                    let _ = message.ack_with(AckKind::Term).await;
                }));
                return;
            }
        };
        let number = self.route(&envelope.route).map(|(number, _)| number);
        let key = (envelope.route, envelope.action);
        let window = windows.entry(key.clone()).or_insert_with(|| Window {
            started: Instant::now(),
            items: Vec::new(),
        });
        window.items.push((message, envelope.message));
        let full = match number {
            // The route no longer aggregates here: each message goes on its own.
            None => true,
            Some(number) => number.is_some_and(|n| window.items.len() >= n as usize),
        };
        if full && let Some(window) = windows.remove(&key) {
            flushing.push(Box::pin(self.flush(key, window, "count")));
        }
    }

    /// The route's `(aggregate-message-number, aggregate-message-timeout)` in the config in
    /// force; `None` when it does not aggregate (any more).
    fn route(&self, route: &str) -> Option<(Option<u32>, Option<Duration>)> {
        let pipeline = self.pipeline.borrow();
        pipeline
            .routes
            .iter()
            .find(|r| &*r.name == route && r.aggregates())
            .map(|r| (r.aggregate_number, r.aggregate_timeout))
    }

    fn flush_due<'a>(
        &'a self,
        windows: &mut HashMap<(String, String), Window>,
        flushing: &mut Flushing<'a>,
    ) {
        let due: Vec<(String, String)> = windows
            .iter()
            .filter(|((route, _), window)| match self.route(route) {
                None => true,
                Some((_, timeout)) => timeout.is_some_and(|t| window.started.elapsed() >= t),
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if let Some(window) = windows.remove(&key) {
                flushing.push(Box::pin(self.flush(key, window, "timeout")));
            }
        }
    }

    /// Renders a window's aggregate, commits its delivery, waits until it has left the outbox,
    /// then acknowledges the window's messages (or hands them back).
    async fn flush(&self, (route, action): (String, String), window: Window, reason: &'static str) {
        let (held, messages): (Vec<jetstream::Message>, Vec<Message>) =
            window.items.into_iter().unzip();
        let template = {
            let pipeline = self.pipeline.borrow();
            pipeline
                .routes
                .iter()
                .find(|r| *r.name == route)
                .and_then(|r| pipeline.templates.get(&r.template).cloned())
        };
        let rendered = match template {
            Some(mut template) if messages.len() > 1 || self.route(&route).is_some() => {
                match template.render_aggregate(&messages) {
                    Ok(message) => vec![message],
                    Err(error) => {
                        tracing::warn!(%route, %error, n = messages.len(), "Aggregation template failed; sending the messages one by one.");
                        messages
                    }
                }
            }
            _ => messages,
        };
        let deliveries: Vec<_> = rendered
            .iter()
            .flat_map(|message| {
                self.outbox
                    .deliveries_for(&route, std::slice::from_ref(&action), false, message)
            })
            .collect();
        self.metrics
            .aggregation_flushes
            .get_or_create(&FlushLabels {
                route: route.clone(),
                reason,
            })
            .inc();
        let ids: Vec<u64> = deliveries.iter().map(|d| d.id).collect();
        let watchers = self.outbox.watch(&ids);
        self.held.hold(&ids, true);
        let (done, committed) = oneshot::channel();
        self.outbox.commit(deliveries, Vec::new(), move |result| {
            let _ = done.send(result);
        });
        let every = (self.nats.settings.nats_ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(Instant::now() + every, every);
        let settled = async {
            match committed.await {
                Ok(Ok(())) => {}
                _ => return Some(Settled::Dropped),
            }
            tracing::debug!(%route, %action, n = held.len(), "Aggregated for the cluster.");
            let mut outcome = Some(Settled::Delivered);
            for watcher in watchers {
                match watcher.await {
                    Ok(Settled::Delivered | Settled::DeadLettered) => {}
                    Ok(how) => outcome = Some(how),
                    Err(_) => outcome = None,
                }
            }
            outcome
        };
        let outcome = {
            tokio::pin!(settled);
            loop {
                tokio::select! {
                    outcome = &mut settled => break outcome,
                    _ = progress.tick() => {
                        for message in &held {
                            let _ = message.ack_with(AckKind::Progress).await;
                        }
                    }
                }
            }
        };
        self.held.hold(&ids, false);
        match outcome {
            Some(Settled::Delivered | Settled::DeadLettered) => {
                for message in &held {
                    match message.double_ack().await {
                        Ok(()) => self.count("acked"),
                        Err(error) => {
                            tracing::warn!(%error, "Cannot acknowledge an aggregated message; it may be aggregated twice.");
                            self.count("ack_failed");
                        }
                    }
                }
            }
            Some(Settled::Withdrawn) => self.hand_back(held).await,
            Some(Settled::Dropped) => {
                self.outbox.unwatch(&ids);
                self.count("commit_failed");
                tracing::error!(%route, "Cannot store an aggregated message; JetStream offers its messages again.");
                for message in &held {
                    let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                }
            }
            None => {}
        }
    }

    async fn hand_back(&self, messages: Vec<jetstream::Message>) {
        for message in messages {
            self.count("handed_back");
            self.handed_back.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// Stopping or lost lease: open windows go back to JetStream; aggregates not yet delivered
    /// are withdrawn and their messages go back too (until the deadline).
    async fn hand_over(
        &self,
        windows: &mut HashMap<(String, String), Window>,
        flushing: &mut Flushing<'_>,
    ) {
        for (_, window) in windows.drain() {
            self.hand_back(window.items.into_iter().map(|(m, _)| m).collect())
                .await;
        }
        super::hand_over(
            flushing,
            &self.outbox,
            &self.held,
            &self.nats.client,
            "aggregates",
        )
        .await;
        let handed_back = self.handed_back.swap(0, Ordering::Relaxed);
        if handed_back > 0 {
            tracing::info!(
                handed_back,
                "Aggregation messages handed back to JetStream."
            );
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .responder_messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

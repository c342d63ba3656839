//! `aggregate-message-number` / `aggregate-message-timeout`: collect a route's messages and send
//! them as one, when N have gathered or when the timeout ticks. One task per aggregating route;
//! every action of the route gets the aggregate (Postee bound the timer to one action).
//!
//! Buffered messages are in the state store (written with the event's commit), so a restart
//! resumes the buffer; a flush removes them in the same commit that creates the deliveries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::template::Template;
use crate::message::Message;
use crate::metrics::{FlushLabels, Metrics};
use crate::outbox::{Op, Outbox};

/// Messages buffered for one route, each with its key in the state store.
pub trait AggregateBuffer: Send {
    /// Adds a message; returns how many are buffered.
    fn push(&mut self, seq: u64, message: Message) -> usize;
    fn take(&mut self) -> Vec<(u64, Message)>;
}

#[derive(Default)]
pub struct MemoryBuffer(Vec<(u64, Message)>);

impl AggregateBuffer for MemoryBuffer {
    fn push(&mut self, seq: u64, message: Message) -> usize {
        self.0.push((seq, message));
        self.0.len()
    }

    fn take(&mut self) -> Vec<(u64, Message)> {
        std::mem::take(&mut self.0)
    }
}

/// What an aggregating route needs to flush on its own.
pub struct Aggregation {
    pub route: Arc<str>,
    pub number: Option<u32>,
    pub timeout: Option<Duration>,
    pub template: Template,
    pub actions: Arc<[String]>,
    pub serialize: bool,
}

/// Starts the route's aggregator with what a previous run left buffered; it flushes what is left
/// when the returned sender is dropped (shutdown, reload).
pub fn spawn(
    aggregation: Aggregation,
    recovered: Vec<(u64, Message)>,
    outbox: Arc<Outbox>,
    metrics: Metrics,
) -> (mpsc::Sender<(u64, Message)>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let mut buffer = MemoryBuffer::default();
    for (seq, message) in recovered {
        buffer.push(seq, message);
    }
    let task = tokio::spawn(run(aggregation, rx, outbox, metrics, buffer));
    (tx, task)
}

async fn run(
    mut aggregation: Aggregation,
    mut rx: mpsc::Receiver<(u64, Message)>,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    mut buffer: impl AggregateBuffer,
) {
    let period = aggregation
        .timeout
        .unwrap_or(Duration::from_secs(365 * 86400));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((seq, message)) => {
                    let n = buffer.push(seq, message);
                    if aggregation.number.is_some_and(|limit| n >= limit as usize) {
                        flush(&mut aggregation, buffer.take(), "count", &outbox, &metrics);
                    }
                }
                None => {
                    flush(&mut aggregation, buffer.take(), "shutdown", &outbox, &metrics);
                    return;
                }
            },
            _ = ticker.tick(), if aggregation.timeout.is_some() => {
                flush(&mut aggregation, buffer.take(), "timeout", &outbox, &metrics);
            }
        }
    }
}

fn flush(
    aggregation: &mut Aggregation,
    items: Vec<(u64, Message)>,
    reason: &'static str,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
) {
    if items.is_empty() {
        return;
    }
    let route = aggregation.route.clone();
    let removals: Vec<Op> = items
        .iter()
        .map(|(seq, _)| Op::RemoveAggregate {
            route: route.to_string(),
            seq: *seq,
        })
        .collect();
    let messages: Vec<Message> = items.into_iter().map(|(_, m)| m).collect();
    let rendered = match aggregation.template.render_aggregate(&messages) {
        Ok(message) => vec![message],
        Err(error) => {
            tracing::warn!(%route, %error, n = messages.len(), "Aggregation template failed; sending the messages one by one.");
            messages
        }
    };
    let deliveries = rendered
        .iter()
        .flat_map(|message| {
            outbox.deliveries_for(&route, &aggregation.actions, aggregation.serialize, message)
        })
        .collect();
    metrics
        .aggregation_flushes
        .get_or_create(&FlushLabels {
            route: route.to_string(),
            reason,
        })
        .inc();
    tracing::debug!(%route, reason, "Aggregated messages.");
    outbox.commit(deliveries, removals, move |result| {
        if let Err(error) = result {
            tracing::error!(%route, %error, "Could not store an aggregated message; the buffered messages stay for the next start.");
        }
    });
}

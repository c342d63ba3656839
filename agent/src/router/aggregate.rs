//! `aggregate-message-number` / `aggregate-message-timeout`: collect a route's messages and send
//! them as one, when N have gathered or when the timeout ticks. One task per aggregating route;
//! every action of the route gets the aggregate (Postee bound the timer to one action).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::template::Template;
use crate::action::Action;
use crate::dispatch::Dispatch;
use crate::message::Message;
use crate::metrics::{FlushLabels, Metrics};

/// Messages buffered for one route. In memory here; a durable store can implement the same trait.
pub trait AggregateBuffer: Send {
    /// Adds a message; returns how many are buffered.
    fn push(&mut self, message: Message) -> usize;
    fn take(&mut self) -> Vec<Message>;
}

#[derive(Default)]
pub struct MemoryBuffer(Vec<Message>);

impl AggregateBuffer for MemoryBuffer {
    fn push(&mut self, message: Message) -> usize {
        self.0.push(message);
        self.0.len()
    }

    fn take(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.0)
    }
}

/// What an aggregating route needs to flush on its own.
pub struct Aggregation {
    pub route: Arc<str>,
    pub number: Option<u32>,
    pub timeout: Option<Duration>,
    pub template: Template,
    pub actions: Arc<[Arc<dyn Action>]>,
    pub serialize: bool,
}

/// Starts the route's aggregator; it flushes what is left when the returned sender is dropped.
pub fn spawn(
    aggregation: Aggregation,
    dispatch: mpsc::Sender<Dispatch>,
    metrics: Metrics,
) -> mpsc::Sender<Message> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(run(
        aggregation,
        rx,
        dispatch,
        metrics,
        MemoryBuffer::default(),
    ));
    tx
}

async fn run(
    mut aggregation: Aggregation,
    mut rx: mpsc::Receiver<Message>,
    dispatch: mpsc::Sender<Dispatch>,
    metrics: Metrics,
    mut buffer: impl AggregateBuffer,
) {
    let period = aggregation
        .timeout
        .unwrap_or(Duration::from_secs(365 * 86400));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(message) => {
                    let n = buffer.push(message);
                    if aggregation.number.is_some_and(|limit| n >= limit as usize) {
                        flush(&mut aggregation, buffer.take(), "count", &dispatch, &metrics).await;
                    }
                }
                None => {
                    flush(&mut aggregation, buffer.take(), "shutdown", &dispatch, &metrics).await;
                    return;
                }
            },
            _ = ticker.tick(), if aggregation.timeout.is_some() => {
                flush(&mut aggregation, buffer.take(), "timeout", &dispatch, &metrics).await;
            }
        }
    }
}

async fn flush(
    aggregation: &mut Aggregation,
    messages: Vec<Message>,
    reason: &'static str,
    dispatch: &mpsc::Sender<Dispatch>,
    metrics: &Metrics,
) {
    if messages.is_empty() {
        return;
    }
    let message = match aggregation.template.render_aggregate(&messages) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(route = %aggregation.route, %error, n = messages.len(), "Aggregation template failed; sending the messages one by one.");
            for message in messages {
                send(aggregation, message, dispatch).await;
            }
            return;
        }
    };
    metrics
        .aggregation_flushes
        .get_or_create(&FlushLabels {
            route: aggregation.route.to_string(),
            reason,
        })
        .inc();
    tracing::debug!(route = %aggregation.route, n = messages.len(), reason, "Aggregated messages.");
    send(aggregation, message, dispatch).await;
}

async fn send(aggregation: &Aggregation, message: Message, dispatch: &mpsc::Sender<Dispatch>) {
    let item = Dispatch {
        route: aggregation.route.clone(),
        message: Arc::new(message),
        actions: aggregation.actions.clone(),
        serialize: aggregation.serialize,
    };
    if dispatch.send(item).await.is_err() {
        tracing::error!(route = %aggregation.route, "Dispatcher stopped; an aggregated message was not delivered.");
    }
}

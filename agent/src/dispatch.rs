//! Runs actions for routed messages: bounded concurrency, per-delivery metrics and logs.
//! A failing action is logged with its name and reason and counted; the others are unaffected.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};

use crate::action::{Action, ErrorKind};
use crate::message::Message;
use crate::metrics::{ActionLabels, DeliveryLabels, Metrics};

/// One routed message and the actions that should receive it.
pub struct Dispatch {
    pub route: Arc<str>,
    pub message: Arc<Message>,
    pub actions: Arc<[Arc<dyn Action>]>,
    /// `serialize-actions`: one after another, in config order.
    pub serialize: bool,
}

/// Delivers until `rx` closes, then waits for the deliveries still running.
pub async fn run(mut rx: mpsc::Receiver<Dispatch>, max_inflight: usize, metrics: Metrics) {
    let permits = Arc::new(Semaphore::new(max_inflight.max(1)));
    let depth = metrics.queue("dispatch");
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(item) = rx.recv().await {
        depth.set(rx.len() as i64);
        // Waiting here pushes back on the router, and through it on intake (429).
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let metrics = metrics.clone();
        tasks.spawn(async move {
            if item.serialize {
                for action in item.actions.iter() {
                    deliver(action.as_ref(), &item.route, &item.message, &metrics).await;
                }
            } else {
                let sends = item
                    .actions
                    .iter()
                    .map(|action| deliver(action.as_ref(), &item.route, &item.message, &metrics));
                futures_util::future::join_all(sends).await;
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One delivery: send, measure, count, log.
pub async fn deliver(
    action: &dyn Action,
    route: &str,
    message: &Message,
    metrics: &Metrics,
) -> bool {
    let started = Instant::now();
    let result = action.send(message).await;
    let elapsed = started.elapsed();
    let kind = action.kind();
    metrics
        .delivery_duration
        .get_or_create(&ActionLabels {
            action: action.name().to_string(),
            r#type: kind,
        })
        .observe(elapsed.as_secs_f64());
    let outcome = match &result {
        Ok(_) => "success",
        Err(err) if err.kind == ErrorKind::Retryable => "retryable_error",
        Err(_) => "permanent_error",
    };
    metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            action: action.name().to_string(),
            r#type: kind,
            outcome,
        })
        .inc();
    match result {
        Ok(report) => {
            tracing::debug!(action = action.name(), r#type = kind, route, event = %message.event_id, detail = report.detail.as_deref().unwrap_or(""), ms = elapsed.as_millis() as u64, "Delivered.");
            true
        }
        Err(error) => {
            tracing::warn!(action = action.name(), r#type = kind, route, event = %message.event_id, %error, retryable = error.kind == ErrorKind::Retryable, "Delivery failed.");
            false
        }
    }
}

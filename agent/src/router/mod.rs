//! The router: for each event, which routes take it, and what message each renders.
//!
//! Intakes submit batches of events into one bounded queue ([`RouterHandle::try_submit`]); a full
//! queue is refused at once (the intake answers 429), never buffered. Router workers are OS
//! threads, each owning clones of the compiled engines, so evaluation takes no lock and never
//! blocks the I/O runtime. Each event is converted for Rego once and evaluated against every
//! route; matches pass dedup, are rendered, then go to aggregation or straight to dispatch.
//! The submitter is answered once all its events are routed.

pub mod aggregate;
pub mod dedup;
pub mod rego;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::dispatch::Dispatch;
use crate::event::Event;
use crate::message::Message;
use crate::metrics::{Metrics, RouteErrorLabels, RouteLabels};
use crate::pipeline::{Pipeline, Route};
use dedup::DedupStore;
use template::Template;

/// A batch of events from one request, and who to tell once they are routed.
pub struct Submission {
    pub events: Vec<Event>,
    pub ack: Option<oneshot::Sender<Routed>>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What routing a submission did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    pub events: usize,
    /// (event, route) pairs that matched.
    pub matches: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the event queue is full")]
    Full,
    #[error("the body is larger than the whole event queue")]
    TooLarge,
    #[error("Hooker is shutting down")]
    Closed,
}

/// The intakes' way into the router. Cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    tx: async_channel::Sender<Submission>,
    bytes: Arc<Semaphore>,
    max_bytes: u64,
    metrics: Metrics,
}

impl RouterHandle {
    /// Queues `events` (which took `body_bytes` on the wire) or refuses at once.
    pub fn try_submit(
        &self,
        events: Vec<Event>,
        body_bytes: usize,
    ) -> Result<oneshot::Receiver<Routed>, SubmitError> {
        if body_bytes as u64 > self.max_bytes {
            return Err(SubmitError::TooLarge);
        }
        let permits = u32::try_from(body_bytes.max(1)).map_err(|_| SubmitError::TooLarge)?;
        let permit = match self.bytes.clone().try_acquire_many_owned(permits) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SubmitError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::Closed),
        };
        let (ack, done) = oneshot::channel();
        let submission = Submission {
            events,
            ack: Some(ack),
            _bytes: Some(permit),
        };
        match self.tx.try_send(submission) {
            Ok(()) => {
                self.metrics.queue("router").set(self.tx.len() as i64);
                Ok(done)
            }
            Err(async_channel::TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(async_channel::TrySendError::Closed(_)) => Err(SubmitError::Closed),
        }
    }

    /// Stops taking submissions; workers drain what is queued, then exit.
    pub fn close(&self) {
        self.tx.close();
    }
}

/// Settings for the running router.
pub struct RouterOptions {
    pub workers: usize,
    pub queue_capacity: usize,
    pub queue_bytes: u64,
    pub node_name: String,
}

/// The running router: its handle, its threads, and the aggregators it feeds.
pub struct RunningRouter {
    pub handle: RouterHandle,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl RunningRouter {
    /// Waits (on a blocking thread) for the workers to drain and exit. Call after `handle.close()`.
    pub async fn join(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

/// Starts the workers and the route aggregators. Must be called inside a Tokio runtime.
pub fn start(
    pipeline: Arc<Pipeline>,
    options: RouterOptions,
    dispatch: mpsc::Sender<Dispatch>,
    dedup: Arc<dyn DedupStore>,
    metrics: Metrics,
) -> std::io::Result<RunningRouter> {
    let (tx, rx) = async_channel::bounded(options.queue_capacity.max(1));
    let max_bytes = options.queue_bytes.clamp(1, u64::from(u32::MAX));
    let bytes = Arc::new(Semaphore::new(max_bytes as usize));
    let mut aggregators = HashMap::new();
    for route in pipeline.routes.iter().filter(|r| r.aggregates()) {
        if let Some(template) = pipeline.templates.get(&route.template) {
            let aggregation = aggregate::Aggregation {
                route: route.name.clone(),
                number: route.aggregate_number,
                timeout: route.aggregate_timeout,
                template: template.clone(),
                actions: route.actions.clone(),
                serialize: route.serialize,
            };
            aggregators.insert(
                route.name.to_string(),
                aggregate::spawn(aggregation, dispatch.clone(), metrics.clone()),
            );
        }
    }
    let shared = Arc::new(Shared {
        pipeline,
        dedup,
        aggregators,
        metrics: metrics.clone(),
        node: options.node_name,
    });
    let mut workers = Vec::new();
    for index in 0..options.workers.max(1) {
        let rx = rx.clone();
        let dispatch = dispatch.clone();
        let shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("hooker-router-{index}"))
            .spawn(move || Worker::new(shared).run(rx, dispatch))?;
        workers.push(worker);
    }
    Ok(RunningRouter {
        handle: RouterHandle {
            tx,
            bytes,
            max_bytes,
            metrics,
        },
        workers,
    })
}

/// What all workers share, read-only (the dedup store and aggregator senders are thread-safe).
struct Shared {
    pipeline: Arc<Pipeline>,
    dedup: Arc<dyn DedupStore>,
    aggregators: HashMap<String, mpsc::Sender<Message>>,
    metrics: Metrics,
    node: String,
}

/// One worker's own engines: evaluation needs `&mut`, so each worker clones them once.
struct Worker {
    shared: Arc<Shared>,
    routes: Vec<Route>,
    templates: BTreeMap<String, Template>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let routes = shared.pipeline.routes.clone();
        let templates = shared.pipeline.templates.clone();
        Worker {
            shared,
            routes,
            templates,
        }
    }

    fn run(mut self, rx: async_channel::Receiver<Submission>, dispatch: mpsc::Sender<Dispatch>) {
        let depth = self.shared.metrics.queue("router");
        while let Ok(submission) = rx.recv_blocking() {
            depth.set(rx.len() as i64);
            let mut routed = Routed {
                events: submission.events.len(),
                matches: 0,
            };
            for event in &submission.events {
                routed.matches += self.route(event, &dispatch);
            }
            if let Some(ack) = submission.ack {
                // The submitter may have given up waiting; the events are routed regardless.
                let _ = ack.send(routed);
            }
        }
    }

    /// Evaluates every route for `event`; returns how many matched.
    fn route(&mut self, event: &Event, dispatch: &mpsc::Sender<Dispatch>) -> usize {
        let input = regorus::Value::from((*event.payload).clone());
        let mut template_input = None;
        let mut matches = 0;
        for index in 0..self.routes.len() {
            let route = &mut self.routes[index];
            if event
                .only_route
                .as_deref()
                .is_some_and(|only| only != &*route.name)
            {
                continue;
            }
            match route.rule.evaluate(&input) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    self.count_error(index, "evaluate");
                    tracing::warn!(route = %self.routes[index].name, event = %event.id, %error, "Route evaluation failed; treated as no match.");
                    continue;
                }
            }
            matches += 1;
            let route = &self.routes[index];
            let metrics = &self.shared.metrics;
            metrics
                .route_matches
                .get_or_create(&RouteLabels {
                    route: route.name.to_string(),
                })
                .inc();
            if !route.unique_props.is_empty()
                && let Some(key) =
                    dedup::dedup_key(&route.name, &route.unique_props, &event.payload)
                && self.shared.dedup.seen(&key, route.unique_timeout)
            {
                metrics
                    .dedup_dropped
                    .get_or_create(&RouteLabels {
                        route: route.name.to_string(),
                    })
                    .inc();
                tracing::debug!(route = %route.name, event = %event.id, "Duplicate dropped by unique-message-props.");
                continue;
            }
            let input = template_input
                .get_or_insert_with(|| {
                    self.shared
                        .pipeline
                        .template_input(&event.payload, &self.shared.node)
                })
                .clone();
            let Some(template) = self.templates.get_mut(&route.template) else {
                continue;
            };
            let message = match template.render(
                input,
                &route.name,
                &event.id,
                event.payload.clone(),
            ) {
                Ok(message) => message,
                Err(error) => {
                    self.count_error(index, "render");
                    tracing::warn!(route = %self.routes[index].name, event = %event.id, %error, "Template rendering failed; nothing delivered for this route.");
                    continue;
                }
            };
            let route = &self.routes[index];
            if let Some(aggregator) = self.shared.aggregators.get(&*route.name) {
                if aggregator.blocking_send(message).is_err() {
                    tracing::error!(route = %route.name, "Aggregator stopped; message not delivered.");
                }
                continue;
            }
            let item = Dispatch {
                route: route.name.clone(),
                message: Arc::new(message),
                actions: route.actions.clone(),
                serialize: route.serialize,
            };
            if dispatch.blocking_send(item).is_err() {
                tracing::error!(route = %route.name, "Dispatcher stopped; message not delivered.");
            }
        }
        matches
    }

    fn count_error(&self, index: usize, stage: &'static str) {
        let route = self.routes[index].name.to_string();
        self.shared
            .metrics
            .route_errors
            .get_or_create(&RouteErrorLabels { route, stage })
            .inc();
    }
}

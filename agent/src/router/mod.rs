//! The router: for each event, which routes take it, and what message each renders.
//!
//! Intakes submit batches of events into one bounded queue ([`RouterHandle::try_submit`]); a full
//! queue (or a full outbox) is refused at once (the intake answers 429), never buffered. Router
//! workers are OS threads, each owning clones of the compiled engines, so evaluation takes no
//! lock and never blocks the I/O runtime. When every route and template of the running config is
//! decided without Rego, a submission is routed on the submitting thread instead, with a worker
//! borrowed from a small pool ([`Inline`]): native routing costs a few microseconds, less than
//! the hand-off to a router thread and back. Each event is converted for Rego once and evaluated
//! against every route; matches pass dedup and are rendered. A submission's deliveries, new dedup
//! keys and aggregation entries are committed to the outbox together, and only then is the
//! submitter answered.
//!
//! Config reloads swap the [`Generation`] (pipeline + aggregators) atomically; workers pick it up
//! before their next submission.

pub mod aggregate;
pub mod dedup;
pub mod fields;
pub mod input_paths;
pub mod lazy_imports;
pub mod native;
pub mod prefilter;
pub mod rego;
mod rego_text;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::event::Event;
use crate::message::Message;
use crate::metrics::{Metrics, RouteErrorLabels, RouteLabels};
use crate::outbox::{Delivery, Op, Outbox};
use crate::pipeline::{Pipeline, Route};
use dedup::{DedupStore, Seen};
use fields::Fields;
use prometheus_client::metrics::counter::Counter;
use template::Template;

/// A batch of events from one request, and who to tell once they are routed and stored.
pub struct Submission {
    pub events: Vec<Event>,
    pub ack: Option<oneshot::Sender<Result<Routed, String>>>,
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

impl SubmitError {
    /// The `outcome` label of `hooker_events_received_total` for events refused this way.
    pub fn outcome(&self) -> &'static str {
        match self {
            SubmitError::Full => "queue_full",
            SubmitError::TooLarge => "too_large",
            SubmitError::Closed => "unavailable",
        }
    }
}

/// One config version at work: the compiled pipeline and its route aggregators.
pub struct Generation {
    pub pipeline: Arc<Pipeline>,
    aggregators: HashMap<String, mpsc::Sender<(u64, Message)>>,
    /// Every route and template decided without Rego: submissions may be routed inline.
    inline: bool,
    /// With `inline`: the fields routing reads, for intakes to parse only those
    /// ([`fields::Fields::prune`]).
    fields: Option<Arc<Fields>>,
    /// The input fields the routes' Rego rules read, when only static paths: Rego routes are
    /// given an input converted from those only ([`Fields::to_rego`]).
    rego_fields: Option<Arc<Fields>>,
    /// By route: none of its actions reads the message body, so a native template may leave
    /// it pending ([`Message::body_pending`]).
    body_unread: Vec<bool>,
}

/// Bytes of the queue's byte budget (`HOOKER_QUEUE_BYTES`) held for a body before it is read
/// ([`RouterHandle::reserve`]), so that what intakes read at once is bounded too, not only what
/// waits for the router. Dropping it (an error, a client gone) gives the bytes back; submitted
/// ([`RouterHandle::try_submit_reserved`]) it becomes the submission's own accounting, held until
/// its deliveries are stored.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }
}

/// Resolves once a submission's events are routed and their deliveries are on disk (or with
/// why they could not be stored).
pub type Routing = oneshot::Receiver<Result<Routed, String>>;

/// The intakes' way into the router. Cheap to clone.
#[derive(Clone)]
pub struct RouterHandle {
    tx: async_channel::Sender<Submission>,
    bytes: Arc<Semaphore>,
    max_bytes: u64,
    outbox: Arc<Outbox>,
    generation: watch::Receiver<Arc<Generation>>,
    /// `hooker_queue_depth{queue="router"}`, looked up once.
    depth: prometheus_client::metrics::gauge::Gauge,
    inline: Arc<Inline>,
}

impl RouterHandle {
    /// Queues `events` (which took `body_bytes` on the wire) or refuses at once. The receiver
    /// resolves once the events are routed and their deliveries are on disk.
    pub fn try_submit(
        &self,
        events: Vec<Event>,
        body_bytes: usize,
    ) -> Result<Routing, SubmitError> {
        self.offer(events, body_bytes).map_err(|(err, _)| err)
    }

    /// Like [`RouterHandle::try_submit`], but when the queue or the outbox is full, waits for
    /// room until `deadline` (the events are parsed already: they are kept, not refused).
    pub async fn submit_within(
        &self,
        mut events: Vec<Event>,
        body_bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Routing, SubmitError> {
        loop {
            match self.offer(events, body_bytes) {
                Err((SubmitError::Full, back)) if tokio::time::Instant::now() < deadline => {
                    events = back;
                    // Its answer is the next offer's to give.
                    let _ = self.wait_for_room(body_bytes, deadline).await;
                }
                answer => return answer.map_err(|(err, _)| err),
            }
        }
    }

    /// The fields the running routes read, when an intake may parse events into only those
    /// (see [`fields`]).
    pub fn fields(&self) -> Option<Arc<Fields>> {
        self.generation.borrow().fields.clone()
    }

    /// Holds `body_bytes` of the queue's byte budget for a body about to be read, or refuses
    /// at once as [`RouterHandle::admits`] does (413 over the whole budget, 429 without room).
    pub fn reserve(&self, body_bytes: usize) -> Result<Reservation, SubmitError> {
        self.admits(body_bytes)?;
        self.take_bytes(body_bytes.max(1))
    }

    /// Adds `more` bytes to a reservation, for a body whose length is learnt as it arrives;
    /// refuses when the budget cannot take them (the reservation keeps what it had).
    pub fn grow(&self, reservation: &mut Reservation, more: usize) -> Result<(), SubmitError> {
        if reservation.bytes().saturating_add(more) as u64 > self.max_bytes {
            return Err(SubmitError::TooLarge);
        }
        let more = self.take_bytes(more)?;
        reservation.permit.merge(more.permit);
        Ok(())
    }

    /// Like [`RouterHandle::try_submit`] for events whose bytes were reserved before their body
    /// was read: the reservation becomes the submission's (the bytes are not taken twice).
    pub fn try_submit_reserved(
        &self,
        events: Vec<Event>,
        reservation: Reservation,
    ) -> Result<Routing, SubmitError> {
        self.room()?;
        self.queue(events, reservation.permit)
            .map_err(|(err, _)| err)
    }

    fn take_bytes(&self, bytes: usize) -> Result<Reservation, SubmitError> {
        let permits = u32::try_from(bytes).map_err(|_| SubmitError::TooLarge)?;
        match self.bytes.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Ok(Reservation { permit }),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(SubmitError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => Err(SubmitError::Closed),
        }
    }

    /// Queues `events` or gives them back with the reason.
    fn offer(
        &self,
        events: Vec<Event>,
        body_bytes: usize,
    ) -> Result<Routing, (SubmitError, Vec<Event>)> {
        match self.reserve(body_bytes) {
            Ok(reservation) => self.queue(events, reservation.permit),
            Err(err) => Err((err, events)),
        }
    }

    /// Queues `events`, which hold `permit` of the byte budget until they are stored.
    fn queue(
        &self,
        events: Vec<Event>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Routing, (SubmitError, Vec<Event>)> {
        let (ack, done) = oneshot::channel();
        let submission = Submission {
            events,
            ack: Some(ack),
            _bytes: Some(permit),
        };
        if submission.events.len() <= INLINE_MAX_EVENTS
            && self.generation.borrow().inline
            && let Some(mut worker) = self.inline.take()
        {
            worker.handle(submission);
            self.inline.give_back(worker);
            return Ok(done);
        }
        match self.tx.try_send(submission) {
            Ok(()) => {
                self.depth.set(self.tx.len() as i64);
                Ok(done)
            }
            Err(async_channel::TrySendError::Full(back)) => Err((SubmitError::Full, back.events)),
            Err(async_channel::TrySendError::Closed(back)) => {
                Err((SubmitError::Closed, back.events))
            }
        }
    }

    /// Whether a submission of `body_bytes` would be refused right now, checked without taking
    /// anything. Intakes call it before parsing a body, so that shedding under overload costs
    /// almost nothing: a producer that retries a refused batch must not make the agent parse it
    /// again and again while the deliveries it already holds starve for CPU. `try_submit` checks
    /// again (this answer can be stale by the time the events are parsed).
    pub fn admits(&self, body_bytes: usize) -> Result<(), SubmitError> {
        if body_bytes as u64 > self.max_bytes {
            return Err(SubmitError::TooLarge);
        }
        if self.bytes.available_permits() < body_bytes.max(1) {
            return Err(SubmitError::Full);
        }
        self.room()
    }

    /// Whether the queue and the outbox can take a submission (its bytes aside).
    fn room(&self) -> Result<(), SubmitError> {
        if self.outbox.is_full() || self.tx.is_full() {
            return Err(SubmitError::Full);
        }
        if self.tx.is_closed() {
            return Err(SubmitError::Closed);
        }
        Ok(())
    }

    /// Waits until a submission of `body_bytes` would be admitted, or until `deadline`, and
    /// answers as [`RouterHandle::admits`] does then.
    pub async fn wait_for_room(
        &self,
        body_bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), SubmitError> {
        self.wait_until(deadline, || match self.admits(body_bytes) {
            Err(SubmitError::Full) => None,
            answer => Some(answer),
        })
        .await
        .unwrap_or(Err(SubmitError::Full))
    }

    /// Whether the outbox is about to keep new deliveries on disk only (a backlog; see
    /// [`crate::outbox::Outbox::crowded`]).
    pub fn crowded(&self) -> bool {
        self.outbox.crowded()
    }

    /// Waits until the outbox is no longer [crowded](RouterHandle::crowded), or until
    /// `deadline`; false if the deadline came first.
    pub async fn wait_in_memory(&self, deadline: tokio::time::Instant) -> bool {
        self.wait_until(deadline, || (!self.outbox.crowded()).then_some(()))
            .await
            .is_some()
    }

    /// Asks `ready` again each time deliveries leave the outbox, and every few milliseconds for
    /// what does not wake it (the router's own queue, memory freed by a delivery's message going
    /// to disk), until it answers or `deadline` passes (`None`).
    async fn wait_until<T>(
        &self,
        deadline: tokio::time::Instant,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        const RECHECK: std::time::Duration = std::time::Duration::from_millis(5);
        loop {
            // Registered before asking, so that a wake-up in between is not missed.
            let room = self.outbox.room();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(answer) = ready() {
                return Some(answer);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), room).await;
        }
    }

    /// Whether the running config has a route of that name (for `POST /tenant/{route}`).
    pub fn has_route(&self, name: &str) -> bool {
        self.generation
            .borrow()
            .pipeline
            .routes
            .iter()
            .any(|r| &*r.name == name)
    }

    pub fn route_count(&self) -> usize {
        self.generation.borrow().pipeline.routes.len()
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

/// The running router.
pub struct Router {
    pub handle: RouterHandle,
    workers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    generation: watch::Sender<Arc<Generation>>,
    pipeline: watch::Sender<Arc<Pipeline>>,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    /// Every aggregator started, to wait for their last flush at shutdown.
    aggregator_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Router {
    /// Starts the workers and the route aggregators (seeded with `recovered` buffers). Must be
    /// called inside a Tokio runtime.
    pub fn start(
        pipeline: Arc<Pipeline>,
        options: RouterOptions,
        outbox: Arc<Outbox>,
        dedup: Arc<dyn DedupStore>,
        recovered: Vec<(String, u64, Message)>,
        metrics: Metrics,
    ) -> std::io::Result<Router> {
        let (generation, tasks) = new_generation(pipeline.clone(), recovered, &outbox, &metrics);
        let (generation_tx, generation_rx) = watch::channel(Arc::new(generation));
        let (pipeline_tx, _) = watch::channel(pipeline);
        let (tx, rx) = async_channel::bounded(options.queue_capacity.max(1));
        let max_bytes = options.queue_bytes.clamp(1, u64::from(u32::MAX));
        let bytes = Arc::new(Semaphore::new(max_bytes as usize));
        let shared = Arc::new(Shared {
            dedup,
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            node: options.node_name,
        });
        outbox.set_renderer(renderer(generation_rx.clone(), shared.node.clone()));
        outbox.set_memory_budget(crate::outbox::MemoryBudget {
            bytes: bytes.clone(),
            max: max_bytes,
        });
        let inline = Arc::new(Inline {
            shared: shared.clone(),
            generation: generation_rx.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
            made: std::sync::atomic::AtomicUsize::new(0),
            max: options.workers.max(1),
        });
        let mut workers = Vec::new();
        // A router thread may hold the last reference to a replaced pipeline, and some actions
        // need the runtime to drop (lettre's SMTP pool spawns its shutdown): without it a reload
        // of a config with an email action killed the next router thread to take a batch.
        let runtime = tokio::runtime::Handle::try_current().ok();
        for index in 0..options.workers.max(1) {
            let rx = rx.clone();
            let shared = shared.clone();
            let generation = generation_rx.clone();
            let runtime = runtime.clone();
            let worker = std::thread::Builder::new()
                .name(format!("hooker-router-{index}"))
                .spawn(move || {
                    let _runtime = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    Worker::new(shared, generation).run(rx)
                })?;
            workers.push(worker);
        }
        let handle = RouterHandle {
            tx,
            bytes,
            max_bytes,
            outbox: outbox.clone(),
            generation: generation_rx,
            depth: metrics.queue("router"),
            inline,
        };
        Ok(Router {
            handle,
            workers: std::sync::Mutex::new(workers),
            aggregator_tasks: std::sync::Mutex::new(tasks),
            generation: generation_tx,
            pipeline: pipeline_tx,
            outbox,
            metrics,
        })
    }

    /// The pipeline in force, for the delivery engine (it resolves actions by name).
    pub fn pipeline(&self) -> watch::Receiver<Arc<Pipeline>> {
        self.pipeline.subscribe()
    }

    /// Swaps in a new pipeline. The old aggregators flush what they hold as they go.
    pub fn reload(&self, pipeline: Arc<Pipeline>) {
        let (generation, tasks) =
            new_generation(pipeline.clone(), Vec::new(), &self.outbox, &self.metrics);
        if let Ok(mut all) = self.aggregator_tasks.lock() {
            all.retain(|task| !task.is_finished());
            all.extend(tasks);
        }
        self.pipeline.send_replace(pipeline);
        self.generation.send_replace(Arc::new(generation));
    }

    /// Closes intake, waits (on a blocking thread) for the workers to drain, then drops the last
    /// generation so aggregators flush.
    pub async fn shutdown(self) {
        self.handle.close();
        let workers = self.workers.into_inner().unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
        // Intakes still hold receivers of the generation: replace it with one without
        // aggregators, so theirs close, flush, and finish.
        let pipeline = self.generation.borrow().pipeline.clone();
        self.generation.send_replace(Arc::new(Generation {
            pipeline,
            aggregators: HashMap::new(),
            inline: false,
            fields: None,
            rego_fields: None,
            body_unread: Vec::new(),
        }));
        let tasks = self.aggregator_tasks.into_inner().unwrap_or_default();
        for task in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}

/// How a replayed dead letter whose template failed gets its message: rendered with its route's
/// template in the config in force (the route must still exist).
fn renderer(generation: watch::Receiver<Arc<Generation>>, node: String) -> crate::outbox::Renderer {
    Box::new(move |delivery: &Delivery| {
        let pipeline = generation.borrow().pipeline.clone();
        let route = pipeline
            .routes
            .iter()
            .find(|route| *route.name == delivery.route)
            .ok_or_else(|| format!("route \"{}\" is no longer configured", delivery.route))?;
        let mut template = pipeline
            .templates
            .get(&route.template)
            .cloned()
            .ok_or_else(|| format!("template \"{}\" is not configured", route.template))?;
        let event = delivery.message.event.clone();
        template.render(
            || pipeline.template_input_json(&event, &node),
            &route.name,
            &delivery.message.event_id,
            event.clone(),
        )
    })
}

fn new_generation(
    pipeline: Arc<Pipeline>,
    recovered: Vec<(String, u64, Message)>,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
) -> (Generation, Vec<tokio::task::JoinHandle<()>>) {
    let mut leftovers: HashMap<String, Vec<(u64, Message)>> = HashMap::new();
    for (route, seq, message) in recovered {
        leftovers.entry(route).or_default().push((seq, message));
    }
    let mut aggregators = HashMap::new();
    let mut tasks = Vec::new();
    for route in pipeline.routes.iter().filter(|r| r.aggregates()) {
        // The relayed actions are aggregated by the responder, for the cluster.
        let actions: Arc<[String]> = route
            .actions
            .iter()
            .filter(|name| !route.direct_actions.contains(name))
            .cloned()
            .collect();
        if actions.is_empty() {
            continue;
        }
        if let Some(template) = pipeline.templates.get(&route.template) {
            let aggregation = aggregate::Aggregation {
                route: route.name.clone(),
                number: route.aggregate_number,
                timeout: route.aggregate_timeout,
                template: template.clone(),
                actions,
                serialize: route.serialize,
            };
            let buffered = leftovers.remove(&*route.name).unwrap_or_default();
            let (sender, task) =
                aggregate::spawn(aggregation, buffered, outbox.clone(), metrics.clone());
            aggregators.insert(route.name.to_string(), sender);
            tasks.push(task);
        }
    }
    for (route, items) in leftovers {
        tracing::warn!(%route, n = items.len(), "Buffered aggregation messages belong to a route that no longer aggregates; they stay in the state store.");
    }
    let inline = pipeline.routes.iter().all(|route| {
        route.rule.is_native()
            && pipeline
                .templates
                .get(&route.template)
                .is_none_or(|t| t.is_native())
    });
    metrics.routes_native.set(i64::from(inline));
    let fields = inline
        .then(|| Fields::of(&pipeline))
        .flatten()
        .map(Arc::new);
    let rego_fields = Fields::of_rego(&pipeline).map(Arc::new);
    let body_unread = pipeline
        .routes
        .iter()
        .map(|route| {
            !route.aggregates()
                && route.actions.iter().all(|name| {
                    pipeline
                        .actions
                        .get(name)
                        .is_some_and(|action| !action.reads_body())
                })
        })
        .collect();
    (
        Generation {
            pipeline,
            aggregators,
            inline,
            fields,
            rego_fields,
            body_unread,
        },
        tasks,
    )
}

/// Events this large (their JSON text) leave a raw-JSON template's body
/// [pending](Message::body_pending) whatever reads it: the outbox renders it when it is needed.
const DEFER_BODY_AT: usize = 1 << 20;

/// The largest submission routed on the submitter's thread: a bigger batch already spreads the
/// hand-off over its events, and routing it inline would hold an I/O thread for a millisecond.
const INLINE_MAX_EVENTS: usize = 8;

/// Workers lent to submitters for routing on their own thread (see the module's doc). Made on
/// first use, at most `max` (one per router thread: as many as can route at once anyway); when
/// all are lent, a submission goes to the router threads' queue.
struct Inline {
    shared: Arc<Shared>,
    generation: watch::Receiver<Arc<Generation>>,
    idle: std::sync::Mutex<Vec<Worker>>,
    made: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl Inline {
    fn take(&self) -> Option<Worker> {
        if let Some(worker) = self.idle.lock().ok()?.pop() {
            return Some(worker);
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.made
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .ok()?;
        Some(Worker::new(self.shared.clone(), self.generation.clone()))
    }

    fn give_back(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
    }
}

/// What all workers share (thread-safe).
struct Shared {
    dedup: Arc<dyn DedupStore>,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    node: String,
}

/// One worker's own engines: evaluation needs `&mut`, so each worker clones them.
struct Worker {
    shared: Arc<Shared>,
    generation_rx: watch::Receiver<Arc<Generation>>,
    generation: Arc<Generation>,
    routes: Vec<Route>,
    /// `hooker_route_matches_total` of each route, by index, once it has matched.
    matched: Vec<Option<Counter>>,
    templates: BTreeMap<String, Template>,
    /// Scratch list of candidate routes, reused across events.
    candidates: Vec<usize>,
}

/// A worker's copy of the pipeline's templates, given the keys added to their input on this node
/// (so simple templates render natively).
fn worker_templates(pipeline: &Pipeline, node: &str) -> BTreeMap<String, Template> {
    let added = Arc::new(pipeline.added_keys(node));
    let mut templates = pipeline.templates.clone();
    for template in templates.values_mut() {
        template.set_added_keys(added.clone());
    }
    templates
}

/// Where a route's aggregator takes `(store key, message)`.
type AggregatorInbox = mpsc::Sender<(u64, Message)>;

/// What routing one submission produced, to commit together.
#[derive(Default)]
struct Output {
    deliveries: Vec<Delivery>,
    ops: Vec<Op>,
    aggregated: Vec<(AggregatorInbox, u64, Message)>,
    new_keys: Vec<String>,
    /// Dead letters among `ops` (routes whose template failed).
    buried: usize,
}

impl Worker {
    fn new(shared: Arc<Shared>, mut generation_rx: watch::Receiver<Arc<Generation>>) -> Worker {
        let generation = generation_rx.borrow_and_update().clone();
        let routes = generation.pipeline.routes.clone();
        let templates = worker_templates(&generation.pipeline, &shared.node);
        Worker {
            shared,
            generation_rx,
            generation,
            matched: vec![None; routes.len()],
            routes,
            templates,
            candidates: Vec::new(),
        }
    }

    fn refresh(&mut self) {
        if self.generation_rx.has_changed().unwrap_or(false) {
            self.generation = self.generation_rx.borrow_and_update().clone();
            self.routes = self.generation.pipeline.routes.clone();
            self.matched = vec![None; self.routes.len()];
            self.templates = worker_templates(&self.generation.pipeline, &self.shared.node);
        }
    }

    fn run(mut self, rx: async_channel::Receiver<Submission>) {
        let depth = self.shared.metrics.queue("router");
        while let Ok(submission) = rx.recv_blocking() {
            depth.set(rx.len() as i64);
            self.handle(submission);
        }
    }

    /// Routes a submission's events, then commits what they produced and answers once stored.
    fn handle(&mut self, submission: Submission) {
        self.refresh();
        let mut routed = Routed {
            events: submission.events.len(),
            matches: 0,
        };
        let mut output = Output::default();
        for event in &submission.events {
            routed.matches += self.route(event, &mut output);
        }
        let ack = submission.ack;
        let permit = submission._bytes;
        let dedup = self.shared.dedup.clone();
        let Output {
            deliveries,
            ops,
            aggregated,
            new_keys,
            buried,
        } = output;
        let outbox = self.shared.outbox.clone();
        self.shared.outbox.commit(deliveries, ops, move |result| {
            drop(permit);
            match &result {
                Ok(()) => {
                    outbox.buried(buried);
                    for (aggregator, seq, message) in aggregated {
                        if aggregator.try_send((seq, message)).is_err() {
                            tracing::warn!(seq, "Aggregator busy or stopped; the message stays buffered in the state store until the next start.");
                        }
                    }
                }
                Err(_) => {
                    for key in &new_keys {
                        dedup.forget(key);
                    }
                }
            }
            if let Some(ack) = ack {
                // The submitter may have given up waiting; the events are stored regardless.
                let _ = ack.send(result.map(|()| routed));
            }
        });
    }

    /// Evaluates every route for `event`; returns how many matched.
    fn route(&mut self, event: &Event, output: &mut Output) -> usize {
        // The event as a Rego value, made once for the routes and the templates that need it;
        // for the routes, only the fields their rules read when that is known.
        let mut rego_input = None;
        let mut route_input = None;
        let rego_fields = self
            .generation
            .rego_fields
            .as_ref()
            .filter(|_| !rego::stays_text(&event.payload));
        let mut template_input = None;
        // Messages already rendered for this event, by template: a template's output depends on
        // the event alone, so routes sharing a template share one rendering.
        // Keyed by whether the body was left pending, too.
        let mut rendered: Vec<(String, bool, Message)> = Vec::new();
        let mut matches = 0;
        let mut candidates = std::mem::take(&mut self.candidates);
        // The pruned value when it was made for these routes' fields, else the whole event.
        let fields = self.generation.fields.as_ref();
        // None for a large event kept as text: every route is a candidate and Rego decides, on a
        // value converted from the text, so the event is never held as two trees at once.
        let routing = match event.pruned.as_ref().and_then(|p| p.for_fields(fields)) {
            Some(pruned) => Some(pruned),
            None if rego::stays_text(&event.payload) => None,
            None => Some(event.payload.value()),
        };
        match routing {
            Some(routing) => self
                .generation
                .pipeline
                .index
                .candidates(routing, &mut candidates),
            None => {
                candidates.clear();
                candidates.extend(0..self.routes.len());
            }
        }
        for &index in &candidates {
            let route = &mut self.routes[index];
            if event
                .only_route
                .as_deref()
                .is_some_and(|only| only != &*route.name)
            {
                continue;
            }
            let decided = match routing.and_then(|routing| route.rule.decide_natively(routing)) {
                Some(decided) => Ok(decided),
                None => {
                    let input =
                        match rego_fields {
                            Some(fields) => route_input
                                .get_or_insert_with(|| fields.to_rego(event.payload.value())),
                            None => rego_input
                                .get_or_insert_with(|| rego::event_to_rego(&event.payload)),
                        };
                    route.rule.evaluate(input)
                }
            };
            match decided {
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
            self.matched[index]
                .get_or_insert_with(|| {
                    metrics
                        .route_matches
                        .get_or_create(&RouteLabels {
                            route: route.name.to_string(),
                        })
                        .clone()
                })
                .inc();
            if !route.unique_props.is_empty()
                && let Some(key) =
                    dedup::dedup_key(&route.name, &route.unique_props, &event.payload)
            {
                match self.shared.dedup.seen(&key, route.unique_timeout) {
                    Seen::Duplicate => {
                        metrics
                            .dedup_dropped
                            .get_or_create(&RouteLabels {
                                route: route.name.to_string(),
                            })
                            .inc();
                        tracing::debug!(route = %route.name, event = %event.id, "Duplicate dropped by unique-message-props.");
                        continue;
                    }
                    Seen::New {
                        expires_ms,
                        evicted,
                    } => {
                        output.ops.extend(evicted.into_iter().map(Op::RemoveDedup));
                        output.ops.push(Op::PutDedup {
                            key: key.clone(),
                            expires_ms,
                        });
                        output.new_keys.push(key);
                    }
                }
            }
            let pipeline = &self.generation.pipeline;
            let node = &self.shared.node;
            // A large event's raw-JSON body is rendered when an action that reads it runs, not
            // kept beside the event in its record and in memory until then.
            let body_unread = self.generation.body_unread.get(index) == Some(&true)
                || (!route.aggregates() && event.payload.text().get().len() >= DEFER_BODY_AT);
            if let Some((_, _, done)) = rendered
                .iter()
                .find(|(t, unread, _)| *t == route.template && *unread == body_unread)
            {
                let mut message = done.clone();
                message.route = route.name.to_string();
                self.deliver(index, &message, output);
                continue;
            }
            let Some(template) = self.templates.get_mut(&route.template) else {
                continue;
            };
            let input = || {
                template_input
                    .get_or_insert_with(|| {
                        let event =
                            rego_input.get_or_insert_with(|| rego::event_to_rego(&event.payload));
                        pipeline.template_input(event.clone(), node)
                    })
                    .clone()
            };
            let rendering = if body_unread {
                template.render_unread_body(input, &route.name, &event.id, event.payload.clone())
            } else {
                template.render(input, &route.name, &event.id, event.payload.clone())
            };
            let message = match rendering {
                Ok(message) => message,
                Err(error) => {
                    self.count_error(index, "render");
                    self.bury_unrendered(index, event, &error, output);
                    continue;
                }
            };
            self.deliver(index, &message, output);
            rendered.push((self.routes[index].template.clone(), body_unread, message));
        }
        self.candidates = candidates;
        matches
    }

    /// Hands a route's rendered message on: to its aggregator (and to its direct actions, see
    /// [`Route::direct_actions`]), or as deliveries to its actions.
    fn deliver(&self, index: usize, message: &Message, output: &mut Output) {
        let route = &self.routes[index];
        if let Some(aggregator) = self.generation.aggregators.get(&*route.name) {
            let seq = self.shared.outbox.next_id();
            output.ops.push(Op::PushAggregate {
                route: route.name.to_string(),
                seq,
                message: message.clone(),
            });
            output
                .aggregated
                .push((aggregator.clone(), seq, message.clone()));
            if !route.direct_actions.is_empty() {
                output.deliveries.extend(self.shared.outbox.deliveries_for(
                    &route.name,
                    &route.direct_actions,
                    route.serialize,
                    message,
                ));
            }
            return;
        }
        output.deliveries.extend(self.shared.outbox.deliveries_for(
            &route.name,
            &route.actions,
            route.serialize,
            message,
        ));
    }

    /// A route's template failed for `event`: the event was taken, so each of the route's actions
    /// gets a dead letter saying why, which a replay renders again (see [`Outbox::unrendered`]).
    fn bury_unrendered(&self, index: usize, event: &Event, error: &str, output: &mut Output) {
        let route = &self.routes[index];
        let message = Message {
            route: route.name.to_string(),
            event_id: event.id.clone(),
            event: event.payload.clone(),
            ..Message::default()
        };
        let error = format!("template \"{}\" failed to render: {error}", route.template);
        let buried = self.shared.outbox.unrendered(
            &route.name,
            &route.actions,
            route.serialize,
            &message,
            &error,
        );
        output.buried += buried.len();
        output.ops.extend(buried);
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

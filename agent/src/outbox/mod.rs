//! The durable queue between the router and the actions.
//!
//! [`Outbox::commit`] queues deliveries for the store, hands them to the engine at once, and lets
//! the intake acknowledge only when the store has them on disk. The engine does not wait for
//! that `fdatasync`: an action may run while its delivery is still being written, which takes the
//! store's write off every event's latency. The store writer takes changes in order, so a
//! delivery's removal can never reach the disk before its record. If the write fails, the intake
//! gets the error (its sender retries) and the engine forgets the deliveries it has not finished;
//! one that already ran may run again for the resent event, as after any crash (at least once).
//! The engine keeps the messages of up to [`RESIDENT_BYTES`] of pending records in memory. Past
//! that, deliveries reach it only once on disk, as metadata, and it reads each one's record back
//! when it runs: a backlog costs disk, not memory.
//!
//! The engine runs due deliveries (bounded globally and per action,
//! behind a circuit breaker per action), then deletes, reschedules with backoff, or dead-letters
//! each one. Pending deliveries survive crashes and restarts; dead letters are kept until replayed
//! or dropped. Read `store.rs` (what is on disk), then `retry.rs` (when to try again).
//!
//! - **Invariant:** nothing is acknowledged to an intake before its deliveries are on disk.
//! - **Invariant:** a delivery's store changes reach the writer in the order they happen (its
//!   record first), so a removal never overtakes the record it removes.
//! - **Invariant:** a delivery leaves the store only after success or as a dead letter.
//! - **Invariant:** the action's error decides *whether* to retry; only the outbox decides *when*.
//!
//! A caller that must know when a delivery leaves (the cluster responder, which acknowledges a
//! relayed message to JetStream only then) [watches](Outbox::watch) it; it can also
//! [withdraw](Outbox::withdraw) one that has not run to the end, to hand it to someone else.

// Public only for the property tests (agent/tests/prop_journal.rs), which feed them damaged bytes.
#[doc(hidden)]
pub mod journal;
#[doc(hidden)]
pub mod record;
pub mod retry;
pub mod store;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::action::{Action, ActionError, ErrorKind};
use crate::message::Message;
use crate::metrics::{ActionLabels, DeliveryLabels, Metrics};
use crate::pipeline::Pipeline;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
pub use retry::DeliveryPolicy;
use retry::{Breaker, Tripped};
pub use store::{DeadLetter, Delivery, Op, Recovered, Store, StoreError};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Record bytes of pending deliveries whose messages the engine keeps in memory (about three
/// times this in memory); the rest of a backlog waits on disk only.
pub const RESIDENT_BYTES: u64 = 1 << 20;

/// Limits on what may wait on disk.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    pub path: PathBuf,
    /// Deliveries pending at once; beyond it intake answers 429.
    pub max_pending: usize,
    /// Total record size of the pending deliveries; beyond it intake answers 429.
    pub max_pending_bytes: u64,
    /// Size of the store file; beyond it intake answers 429.
    pub max_bytes: u64,
}

/// How a [watched](Outbox::watch) delivery left the outbox (told once its removal is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Its action (each of its chain) succeeded.
    Delivered,
    /// It is a dead letter.
    DeadLettered,
    /// [`Outbox::withdraw`] took it out before it succeeded.
    Withdrawn,
    /// Its store write failed; it was dropped without running to the end.
    Dropped,
}

/// The outbox: the store, the capacity accounting, and the way to the engine.
pub struct Outbox {
    store: Store,
    options: OutboxOptions,
    next_id: AtomicU64,
    pending: AtomicUsize,
    pending_bytes: AtomicU64,
    /// Record bytes of the deliveries whose messages the engine holds (or is about to).
    resident_bytes: AtomicU64,
    disk_bytes: AtomicU64,
    dead: AtomicUsize,
    engine: mpsc::UnboundedSender<ToEngine>,
    /// Woken as deliveries leave, for intakes that wait for room instead of refusing.
    room: tokio::sync::Notify,
    metrics: Metrics,
    /// Renders an [unrendered](DeadLetter::unrendered) dead letter's message when it is replayed
    /// (set by the router, which has the templates).
    renderer: std::sync::OnceLock<Renderer>,
    /// The queue's byte budget (`HOOKER_QUEUE_BYTES`, set by the router): a large record read
    /// back from the journal holds its size of it while its delivery runs, so intake refuses
    /// (429) rather than let big events pile up in memory at both ends.
    memory: std::sync::OnceLock<MemoryBudget>,
    /// Who waits for which delivery to leave ([`Outbox::watch`]).
    watchers: std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Settled>>>,
}

/// A byte budget shared with the router: the semaphore and its size.
#[derive(Clone)]
pub struct MemoryBudget {
    pub bytes: Arc<tokio::sync::Semaphore>,
    pub max: u64,
}

impl MemoryBudget {
    /// Holds `bytes` of the budget (all of it for a record larger than the budget), waiting for
    /// them; `None` when the budget is closed.
    async fn hold(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = bytes.clamp(1, self.max.min(u64::from(u32::MAX))) as u32;
        self.bytes.clone().acquire_many_owned(permits).await.ok()
    }
}

/// Records this large are never kept in the engine's memory: their deliveries are read back from
/// disk when they run, under the [`MemoryBudget`].
const LARGE_RECORD: u64 = RESIDENT_BYTES / 4;

/// Makes a delivery's message from its event with the route's template in force.
pub type Renderer = Box<dyn Fn(&Delivery) -> Result<Message, String> + Send + Sync>;

/// What the outbox tells the engine.
enum ToEngine {
    /// New deliveries, queued for the store (and usually on disk by the time they run).
    Add(Vec<Delivery>),
    /// Deliveries on disk whose messages are not kept in memory (read back when they run).
    AddStored(Vec<Delivery>),
    /// Deliveries whose store write failed: their intake answered with the error, so the event
    /// comes again. Those not finished are dropped.
    Forget(Vec<u64>),
    /// Deliveries to take out unless they succeed first ([`Outbox::withdraw`]).
    Withdraw(Vec<u64>),
}

/// What the engine starts with.
pub struct EngineStart {
    rx: mpsc::UnboundedReceiver<ToEngine>,
    pending: Vec<Delivery>,
    /// Those of `pending` recovered without their messages.
    stored: std::collections::HashSet<u64>,
}

impl Outbox {
    /// Opens the store; returns the outbox, what else was recovered (dedup keys, aggregation
    /// buffers), and the engine's start state (the deliveries still pending from last time).
    pub fn open(
        options: OutboxOptions,
        metrics: Metrics,
    ) -> Result<(Arc<Outbox>, Recovered, EngineStart), StoreError> {
        let (store, mut recovered) = Store::open(&options.path)?;
        let pending = std::mem::take(&mut recovered.pending);
        let stored = std::mem::take(&mut recovered.stored);
        let (engine, rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox {
            store,
            next_id: AtomicU64::new(recovered.next_id),
            pending: AtomicUsize::new(pending.len()),
            pending_bytes: AtomicU64::new(pending.iter().map(|d| d.stored_bytes).sum()),
            resident_bytes: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(Store::disk_bytes(&options.path)),
            dead: AtomicUsize::new(recovered.dead),
            engine,
            room: tokio::sync::Notify::new(),
            metrics,
            options,
            renderer: std::sync::OnceLock::new(),
            memory: std::sync::OnceLock::new(),
            watchers: std::sync::Mutex::new(HashMap::new()),
        });
        outbox.publish_gauges();
        outbox
            .metrics
            .outbox_damaged_entries
            .inc_by(recovered.damaged_entries);
        outbox
            .metrics
            .outbox_missing_segments
            .inc_by(recovered.missing_segments);
        if !pending.is_empty() || recovered.dead > 0 {
            tracing::info!(
                pending = pending.len(),
                dead_letters = recovered.dead,
                "Resuming deliveries from the state store."
            );
        }
        Ok((
            outbox,
            recovered,
            EngineStart {
                rx,
                pending,
                stored,
            },
        ))
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// True when intake must refuse new events (429 / RESOURCE_EXHAUSTED).
    pub fn is_full(&self) -> bool {
        self.pending.load(Ordering::Relaxed) >= self.options.max_pending
            || self.pending_bytes.load(Ordering::Relaxed) >= self.options.max_pending_bytes
            || self.disk_bytes.load(Ordering::Relaxed) >= self.options.max_bytes
    }

    /// Whether new deliveries are kept on disk only, their messages read back when they run.
    pub fn spills(&self) -> bool {
        self.resident_bytes.load(Ordering::Relaxed) >= RESIDENT_BYTES
    }

    /// Past a quarter of [`RESIDENT_BYTES`]: intakes that can wait (the gRPC stream) hold new batches
    /// here rather than at [`Outbox::spills`], so that several let in at once still fit in memory.
    pub fn crowded(&self) -> bool {
        self.resident_bytes.load(Ordering::Relaxed) >= RESIDENT_BYTES / 4
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tells, for each of `ids`, how the delivery left the outbox, once its removal is written.
    /// Call before committing them. A receiver that errs was never told (the engine stopped first,
    /// or [`Outbox::unwatch`]): the delivery may still be pending.
    pub fn watch(&self, ids: &[u64]) -> Vec<tokio::sync::oneshot::Receiver<Settled>> {
        let Ok(mut watchers) = self.watchers.lock() else {
            return Vec::new();
        };
        ids.iter()
            .map(|id| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                watchers.insert(*id, tx);
                rx
            })
            .collect()
    }

    /// Stops watching `ids` (their commit failed).
    pub fn unwatch(&self, ids: &[u64]) {
        if let Ok(mut watchers) = self.watchers.lock() {
            for id in ids {
                watchers.remove(id);
            }
        }
    }

    /// Takes `ids` out of the outbox unless they succeed first: a delivery waiting for its turn
    /// or its next attempt leaves at once, one running leaves when its attempt fails. Watchers
    /// are told [`Settled::Withdrawn`] (or how it ended otherwise). Unknown ids are ignored.
    pub fn withdraw(&self, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.engine.send(ToEngine::Withdraw(ids));
        }
    }

    /// Tells the watchers of deliveries that left.
    fn tell(&self, settled: Vec<(u64, Settled)>) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        for (id, how) in settled {
            if let Some(watcher) = watchers.remove(&id) {
                let _ = watcher.send(how);
            }
        }
    }

    fn watched(&self, id: u64) -> bool {
        self.watchers
            .lock()
            .is_ok_and(|watchers| watchers.contains_key(&id))
    }

    /// Queues `deliveries` and `extra` for one commit, hands the deliveries to the engine, and
    /// calls `done` once the commit is on disk (or failed). Runs on the caller's thread up to
    /// the hand-off to the writer.
    pub fn commit(
        self: &Arc<Self>,
        mut deliveries: Vec<Delivery>,
        extra: Vec<Op>,
        done: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        if deliveries.is_empty() && extra.is_empty() {
            done(Ok(()));
            return;
        }
        let mut ops = Vec::with_capacity(deliveries.len() + extra.len());
        for delivery in &mut deliveries {
            match Op::put(delivery) {
                Ok(op) => ops.push(op),
                Err(err) => {
                    done(Err(err.to_string()));
                    return;
                }
            }
        }
        ops.extend(extra);
        let bytes: u64 = deliveries.iter().map(|d| d.stored_bytes).sum();
        self.pending.fetch_add(deliveries.len(), Ordering::Relaxed);
        self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        let outbox = self.clone();
        let large = deliveries.iter().any(|d| d.stored_bytes >= LARGE_RECORD);
        if !deliveries.is_empty() && (self.spills() || large) {
            // A backlog, or a large event: the engine gets these once they are on disk, without
            // their messages (and the event's memory is freed as soon as the router is done).
            deliveries.iter_mut().for_each(strip);
            self.store.write(
                ops,
                Some(Box::new(move |result: Result<(), String>| {
                    match &result {
                        Ok(()) => {
                            // Stopping if this fails: they resume at the next start.
                            let _ = outbox.engine.send(ToEngine::AddStored(deliveries));
                        }
                        Err(_) => outbox.release(deliveries.len(), bytes),
                    }
                    outbox.publish_gauges();
                    done(result);
                })),
            );
            return;
        }
        let ids: Vec<u64> = deliveries.iter().map(|d| d.id).collect();
        // The write is queued before the engine can see the deliveries: whatever the engine
        // writes about them later (a removal, a reschedule) is queued behind it.
        self.store.write(
            ops,
            Some(Box::new(move |result: Result<(), String>| {
                if result.is_err() && !ids.is_empty() {
                    // Without an engine (stopping) nothing of them runs again anyway.
                    let _ = outbox.engine.send(ToEngine::Forget(ids));
                }
                outbox.publish_gauges();
                done(result);
            })),
        );
        if deliveries.is_empty() {
            return;
        }
        self.resident_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(ToEngine::Add(lost))) =
            self.engine.send(ToEngine::Add(deliveries))
        {
            // Stopping: the write above still lands, and the deliveries resume at the next start.
            self.release(lost.len(), bytes);
            self.release_resident(bytes);
            tracing::warn!(
                "Delivery engine stopped; committed deliveries resume at the next start."
            );
        }
    }

    /// Takes `count` deliveries of `bytes` in all off the pending totals.
    fn release(&self, count: usize, bytes: u64) {
        self.pending.fetch_sub(count, Ordering::Relaxed);
        self.release_bytes(bytes);
        self.room.notify_waiters();
    }

    /// Resolves the next time deliveries leave the outbox (create and enable it, then check
    /// [`Outbox::is_full`] or [`Outbox::crowded`], then await it, so that no wake-up is missed
    /// in between).
    pub fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.room.notified()
    }

    /// Takes `n` bytes off the pending total (never below zero: a miscount must not wrap into a
    /// permanently full outbox).
    fn release_bytes(&self, n: u64) {
        saturating_sub(&self.pending_bytes, n);
    }

    fn release_resident(&self, n: u64) {
        saturating_sub(&self.resident_bytes, n);
    }

    fn publish_gauges(&self) {
        self.metrics
            .outbox_pending
            .set(self.pending.load(Ordering::Relaxed) as i64);
        self.metrics
            .dead_letters
            .set(self.dead.load(Ordering::Relaxed) as i64);
    }

    fn refresh_disk_bytes(&self) {
        self.disk_bytes
            .store(Store::disk_bytes(&self.options.path), Ordering::Relaxed);
    }

    /// A new delivery for each action of a route (or one chained delivery when serialized).
    pub fn deliveries_for(
        &self,
        route: &str,
        actions: &[String],
        serialize: bool,
        message: &Message,
    ) -> Vec<Delivery> {
        let now = now_ms();
        let make = |actions: Vec<String>| Delivery {
            id: self.next_id(),
            route: route.to_string(),
            actions,
            message: message.clone(),
            attempts: 0,
            created_ms: now,
            next_ms: now,
            last_error: None,
            stored_bytes: 0,
        };
        if actions.is_empty() {
            Vec::new()
        } else if serialize {
            vec![make(actions.to_vec())]
        } else {
            actions.iter().map(|a| make(vec![a.clone()])).collect()
        }
    }

    /// Sets how a replay renders dead letters whose template failed (once; later calls are
    /// ignored).
    pub fn set_renderer(&self, renderer: Renderer) {
        let _ = self.renderer.set(renderer);
    }

    /// Shares the router's byte budget with the engine (see [`Outbox::memory`]).
    pub fn set_memory_budget(&self, budget: MemoryBudget) {
        let _ = self.memory.set(budget);
    }

    /// Dead letters for a route whose message could not be made (`error`: why its template
    /// failed), one per action as [`Outbox::deliveries_for`] makes deliveries: the event was
    /// acknowledged, so it must not vanish. Each keeps the event, and a replay renders it again
    /// with the config in force then. Commit the ops, then count them with [`Outbox::buried`].
    pub fn unrendered(
        &self,
        route: &str,
        actions: &[String],
        serialize: bool,
        message: &Message,
        error: &str,
    ) -> Vec<Op> {
        let died_ms = now_ms();
        self.deliveries_for(route, actions, serialize, message)
            .into_iter()
            .map(|delivery| {
                let action = delivery.actions.first().cloned().unwrap_or_default();
                tracing::error!(action = %action, route, delivery = delivery.id, event = %message.event_id, %error, "Delivery dead-lettered: its message could not be rendered.");
                self.metrics
                    .dead_lettered
                    .get_or_create(&crate::metrics::ActionNameLabels { action })
                    .inc();
                Op::Kill(DeadLetter {
                    delivery,
                    error: error.to_string(),
                    died_ms,
                    unrendered: true,
                })
            })
            .collect()
    }

    /// Counts `n` dead letters made outside the engine ([`Outbox::unrendered`]) once committed.
    pub fn buried(&self, n: usize) {
        if n > 0 {
            self.dead.fetch_add(n, Ordering::Relaxed);
            self.publish_gauges();
        }
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters()
    }

    /// Moves dead letters (all, or the given ids) back into the outbox, due now.
    pub async fn replay(self: &Arc<Self>, ids: Option<&[u64]>) -> Result<usize, String> {
        let letters: Vec<DeadLetter> = self
            .dead_letters()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|l| ids.is_none_or(|ids| ids.contains(&l.delivery.id)))
            .collect();
        let now = now_ms();
        let mut ops = Vec::new();
        let mut revived = Vec::new();
        // Letters whose template failed are rendered now, on a blocking thread (Rego).
        let outbox = self.clone();
        let letters = tokio::task::spawn_blocking(move || outbox.render_unrendered(letters))
            .await
            .map_err(|e| e.to_string())?;
        for letter in letters {
            let mut delivery = letter.delivery;
            ops.push(Op::RemoveDead(delivery.id));
            delivery.id = self.next_id();
            delivery.attempts = 0;
            delivery.created_ms = now;
            delivery.next_ms = now;
            revived.push(delivery);
        }
        let n = revived.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let outbox = self.clone();
        tokio::task::spawn_blocking(move || {
            outbox.commit(revived, ops, move |result| {
                let _ = tx.send(result);
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        rx.await
            .map_err(|_| "state store writer stopped".to_string())??;
        self.dead
            .fetch_sub(n.min(self.dead.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.publish_gauges();
        Ok(n)
    }

    /// Renders the [unrendered](DeadLetter::unrendered) of `letters` with the templates in
    /// force; one that still cannot be rendered stays a dead letter (and is left out).
    fn render_unrendered(&self, letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
        letters
            .into_iter()
            .filter_map(|mut letter| {
                if !letter.unrendered {
                    return Some(letter);
                }
                let rendered = match self.renderer.get() {
                    Some(render) => render(&letter.delivery),
                    None => Err("no renderer".to_string()),
                };
                match rendered {
                    Ok(message) => {
                        letter.delivery.message = message;
                        letter.unrendered = false;
                        Some(letter)
                    }
                    Err(error) => {
                        tracing::warn!(delivery = letter.delivery.id, route = %letter.delivery.route, %error, "Dead letter not replayed: its message still cannot be rendered.");
                        None
                    }
                }
            })
            .collect()
    }

    /// Deletes dead letters (all, or the given ids).
    pub async fn drop_dead(&self, ids: Option<&[u64]>) -> Result<usize, String> {
        let doomed: Vec<u64> = self
            .dead_letters()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| l.delivery.id)
            .filter(|id| ids.is_none_or(|ids| ids.contains(id)))
            .collect();
        let n = doomed.len();
        self.store
            .write_and_wait(doomed.into_iter().map(Op::RemoveDead).collect())
            .await?;
        self.dead
            .fetch_sub(n.min(self.dead.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.publish_gauges();
        Ok(n)
    }
}

/// Runs deliveries until `stop` turns true, then waits up to `deadline` for those in flight.
/// Whatever is not finished stays in the store for the next start.
pub async fn run_engine(
    outbox: Arc<Outbox>,
    start: EngineStart,
    pipeline: watch::Receiver<Arc<Pipeline>>,
    max_inflight: usize,
    mut stop: watch::Receiver<bool>,
    deadline: Duration,
) {
    let mut engine = Engine::new(outbox.clone(), pipeline, max_inflight);
    let mut rx = start.rx;
    engine.add_recovered(start.pending, start.stored);
    let mut disk_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        engine.start_due();
        engine.flush();
        let sleep = engine
            .next_due()
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)));
        tokio::select! {
            Some(input) = rx.recv() => engine.take(input),
            Some(joined) = engine.inflight.join_next() => engine.joined(joined),
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
            _ = disk_check.tick() => outbox.refresh_disk_bytes(),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Drain: finish what is in flight and what is due now (e.g. the last aggregations); anything
    // scheduled for later, or still running at the deadline, stays in the store for next start.
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        engine.start_due();
        engine.flush();
        let due_now = engine.next_due().is_some_and(|due| due <= now_ms());
        if engine.inflight.is_empty() && !due_now {
            match rx.try_recv() {
                Ok(input) => {
                    engine.take(input);
                    continue;
                }
                Err(_) => break,
            }
        }
        tokio::select! {
            Some(joined) = engine.inflight.join_next() => engine.joined(joined),
            Some(input) = rx.recv() => engine.take(input),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::time::sleep_until(give_up) => {
                tracing::warn!(?deadline, in_flight = engine.inflight.len(), "Deliveries still running at the deadline stay pending for the next start.");
                break;
            }
        }
    }
    // Let the writer finish the removals and reschedules queued above.
    let _ = outbox
        .store
        .write_and_wait(std::mem::take(&mut engine.ops))
        .await;
    outbox.tell(std::mem::take(&mut engine.settled));
}

type SendResult = Result<crate::action::Report, crate::action::ActionError>;

/// What a finished run hands back: the delivery, the result, and the message it ran with.
type Run = (u64, SendResult, Taken);

/// The message a finished run hands back to its delivery.
enum Taken {
    /// Lent from memory for the run (a message is a few kilobytes: moving it out and back costs
    /// nothing, copying it per attempt did).
    Lent(Message),
    /// Read back from disk for the run.
    Loaded(Message),
    /// The record could not be read.
    Nothing,
}

struct Engine {
    outbox: Arc<Outbox>,
    pipeline: watch::Receiver<Arc<Pipeline>>,
    /// (due ms, id), earliest first.
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    /// Boxed: a backlog's map stays small per entry (a `Delivery` is ~300 bytes inline, and the
    /// map keeps its peak capacity).
    items: HashMap<u64, Box<Delivery>>,
    /// Deliveries running, per action.
    running: HashMap<String, usize>,
    /// Due deliveries held back by their action's concurrency limit.
    waiting: HashMap<String, VecDeque<u64>>,
    breakers: HashMap<String, Breaker>,
    /// Each action's metric handles, by name and type.
    action_metrics: HashMap<(String, &'static str), Arc<ActionMetrics>>,
    /// Each run's delivery id, result, and the message when it was read back from disk.
    inflight: tokio::task::JoinSet<Run>,
    max_inflight: usize,
    /// Store changes (removals, reschedules, dead letters) not yet handed to the writer: they go
    /// in one batch per turn of the loop instead of one per delivery.
    ops: Vec<Op>,
    /// Deliveries whose store write failed, dropped when they next start or finish.
    forgotten: std::collections::HashSet<u64>,
    /// Deliveries whose messages are on disk only (see [`RESIDENT_BYTES`]).
    stored: std::collections::HashSet<u64>,
    /// Deliveries running now.
    running_ids: std::collections::HashSet<u64>,
    /// Running deliveries to withdraw when their attempt fails ([`Outbox::withdraw`]).
    withdrawing: std::collections::HashSet<u64>,
    /// Watched deliveries that left, told once `ops` is written.
    settled: Vec<(u64, Settled)>,
}

impl Engine {
    fn new(
        outbox: Arc<Outbox>,
        pipeline: watch::Receiver<Arc<Pipeline>>,
        max_inflight: usize,
    ) -> Engine {
        Engine {
            outbox,
            pipeline,
            queue: BinaryHeap::new(),
            items: HashMap::new(),
            running: HashMap::new(),
            waiting: HashMap::new(),
            breakers: HashMap::new(),
            action_metrics: HashMap::new(),
            inflight: tokio::task::JoinSet::new(),
            max_inflight: max_inflight.max(1),
            ops: Vec::new(),
            forgotten: std::collections::HashSet::new(),
            stored: std::collections::HashSet::new(),
            running_ids: std::collections::HashSet::new(),
            withdrawing: std::collections::HashSet::new(),
            settled: Vec::new(),
        }
    }

    /// Deliveries recovered at start; the store decoded the messages of the first
    /// [`RESIDENT_BYTES`] of them only (`stored` are the others).
    fn add_recovered(&mut self, deliveries: Vec<Delivery>, stored: std::collections::HashSet<u64>) {
        let resident: u64 = deliveries
            .iter()
            .filter(|d| !stored.contains(&d.id))
            .map(|d| d.stored_bytes)
            .sum();
        self.outbox
            .resident_bytes
            .fetch_add(resident, Ordering::Relaxed);
        self.stored.extend(stored);
        self.add(deliveries);
    }

    /// A delivery leaves memory (finished, dead, or its message dropped): its bytes no longer
    /// count as resident unless they never did.
    fn leave_memory(&mut self, id: u64, bytes: u64) {
        if !self.stored.remove(&id) {
            self.outbox.release_resident(bytes);
        }
    }

    /// After a run: a delivery that stays pending keeps its message only while the resident
    /// limit allows.
    fn maybe_strip(&mut self, id: u64) {
        if self.outbox.resident_bytes.load(Ordering::Relaxed) <= RESIDENT_BYTES
            || self.stored.contains(&id)
        {
            return;
        }
        if let Some(delivery) = self.items.get_mut(&id) {
            strip(delivery);
            self.outbox.release_resident(delivery.stored_bytes);
            self.stored.insert(id);
        }
    }

    /// Puts a message read back from disk into its delivery, which now counts as resident.
    fn reload(&mut self, id: u64, message: Message) {
        if let Some(delivery) = self.items.get_mut(&id)
            && self.stored.remove(&id)
        {
            delivery.message = message;
            self.outbox
                .resident_bytes
                .fetch_add(delivery.stored_bytes, Ordering::Relaxed);
        }
    }

    fn take(&mut self, input: ToEngine) {
        match input {
            ToEngine::Add(deliveries) => self.add(deliveries),
            ToEngine::AddStored(deliveries) => {
                self.stored.extend(deliveries.iter().map(|d| d.id));
                self.add(deliveries);
            }
            ToEngine::Forget(ids) => {
                let known = ids.into_iter().filter(|id| self.items.contains_key(id));
                self.forgotten.extend(known);
            }
            ToEngine::Withdraw(ids) => {
                for id in ids {
                    if self.running_ids.contains(&id) {
                        self.withdrawing.insert(id);
                    } else if self.items.contains_key(&id) {
                        self.withdraw_now(id);
                    }
                }
            }
        }
    }

    /// Takes a delivery that is not running out of the outbox (see [`Outbox::withdraw`]). Its
    /// place in the queue or a concurrency line is skipped when reached (no item any more).
    fn withdraw_now(&mut self, id: u64) {
        if let Some(name) = self.items.get(&id).and_then(|d| d.actions.first()) {
            if let Some(breaker) = self.breakers.get_mut(name) {
                breaker.forget(id);
            }
            if let Some(line) = self.waiting.get_mut(name) {
                line.retain(|waiting| *waiting != id);
            }
        }
        tracing::debug!(delivery = id, "Delivery withdrawn.");
        self.remove(id, Settled::Withdrawn);
    }

    fn add(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            self.queue.push(Reverse((delivery.next_ms, delivery.id)));
            self.items.insert(delivery.id, Box::new(delivery));
        }
    }

    /// Drops a delivery whose store write failed, if it was one (see [`ToEngine::Forget`]). Its
    /// removal is written too, in case a reschedule put it on disk since.
    fn drop_forgotten(&mut self, id: u64) -> bool {
        if self.forgotten.is_empty() || !self.forgotten.remove(&id) {
            return false;
        }
        tracing::debug!(
            delivery = id,
            "Delivery dropped: its store write failed and its event was refused."
        );
        self.remove(id, Settled::Dropped);
        true
    }

    /// Takes a finished delivery, and every other one that has finished meanwhile.
    fn joined(&mut self, first: Result<Run, tokio::task::JoinError>) {
        let mut joined = Some(first);
        while let Some(result) = joined {
            if let Ok((id, result, taken)) = result {
                self.finished(id, result, taken);
            }
            joined = self.inflight.try_join_next();
        }
    }

    /// Hands the queued store changes to the writer, and publishes the gauges once.
    fn flush(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        let done: Option<store::Completion> = if self.settled.is_empty() {
            None
        } else {
            let settled = std::mem::take(&mut self.settled);
            let outbox = self.outbox.clone();
            Some(Box::new(move |_| outbox.tell(settled)))
        };
        self.outbox.store.write(std::mem::take(&mut self.ops), done);
        self.outbox.publish_gauges();
    }

    fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((due, _))| *due)
    }

    fn start_due(&mut self) {
        let now = now_ms();
        while self.inflight.len() < self.max_inflight {
            let Some(&Reverse((due, id))) = self.queue.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.queue.pop();
            self.try_start(id, now);
        }
    }

    fn try_start(&mut self, id: u64, now: u64) {
        if self.drop_forgotten(id) {
            return;
        }
        let Some(delivery) = self.items.get(&id) else {
            return;
        };
        let Some(name) = delivery.actions.first().cloned() else {
            self.complete(id);
            return;
        };
        let pipeline = self.pipeline.borrow().clone();
        let Some(action) = pipeline.actions.get(&name).cloned() else {
            self.kill(
                id,
                format!("action \"{name}\" is no longer configured (or not enabled)"),
            );
            return;
        };
        let policy = pipeline.policies.get(&name).cloned().unwrap_or_default();
        let breaker = self.breakers.entry(name.clone()).or_default();
        if let Err(retry_at) = breaker.admit(id, now) {
            self.queue.push(Reverse((retry_at, id)));
            return;
        }
        let running = self.running.entry(name.clone()).or_default();
        if *running >= policy.max_concurrency.max(1) {
            self.waiting.entry(name).or_default().push_back(id);
            return;
        }
        *running += 1;
        let metrics = self
            .action_metrics
            .entry((name, action.kind()))
            .or_insert_with_key(|(name, kind)| {
                Arc::new(ActionMetrics::new(&self.outbox.metrics, name, kind))
            })
            .clone();
        self.running_ids.insert(id);
        if self.stored.contains(&id) {
            let store = self.outbox.store.clone();
            let bytes = self.items.get(&id).map_or(0, |d| d.stored_bytes);
            let budget = self
                .outbox
                .memory
                .get()
                .filter(|_| bytes >= LARGE_RECORD)
                .cloned();
            self.inflight.spawn(async move {
                let _held = match &budget {
                    Some(budget) => budget.hold(bytes).await,
                    None => None,
                };
                let mut message = match store.read_pending(id) {
                    Ok(Some(delivery)) => delivery.message,
                    Ok(None) => {
                        let error =
                            ActionError::retryable("its record is not in the delivery journal");
                        return (id, Err(error), Taken::Nothing);
                    }
                    Err(err) => {
                        let error =
                            ActionError::retryable(format!("cannot read its record: {err}"));
                        return (id, Err(error), Taken::Nothing);
                    }
                };
                let result = send(action.as_ref(), &mut message, &metrics).await;
                (id, result, Taken::Loaded(message))
            });
            return;
        }
        let Some(delivery) = self.items.get_mut(&id) else {
            return;
        };
        let mut message = std::mem::take(&mut delivery.message);
        self.inflight.spawn(async move {
            let result = send(action.as_ref(), &mut message, &metrics).await;
            (id, result, Taken::Lent(message))
        });
    }

    fn finished(&mut self, id: u64, result: SendResult, taken: Taken) {
        self.running_ids.remove(&id);
        match taken {
            Taken::Lent(message) => {
                if let Some(delivery) = self.items.get_mut(&id) {
                    delivery.message = message;
                }
            }
            Taken::Loaded(message) => self.reload(id, message),
            Taken::Nothing => {}
        }
        self.settle(id, result);
        if !self.withdrawing.is_empty()
            && self.withdrawing.remove(&id)
            && self.items.contains_key(&id)
        {
            self.withdraw_now(id);
            return;
        }
        self.maybe_strip(id);
    }

    fn settle(&mut self, id: u64, result: SendResult) {
        let Some(delivery) = self.items.get(&id) else {
            return;
        };
        let name = delivery.actions.first().cloned().unwrap_or_default();
        if let Some(running) = self.running.get_mut(&name) {
            *running = running.saturating_sub(1);
        }
        if let Some(next) = self.waiting.get_mut(&name).and_then(VecDeque::pop_front) {
            self.queue.push(Reverse((now_ms(), next)));
        }
        if self.drop_forgotten(id) {
            if let Some(breaker) = self.breakers.get_mut(&name) {
                breaker.forget(id);
            }
            return;
        }
        let policy = self
            .pipeline
            .borrow()
            .policies
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let metrics = self.outbox.metrics.clone();
        let breaker = self.breakers.entry(name.clone()).or_default();
        let Some(delivery) = self.items.get_mut(&id) else {
            return;
        };
        match result {
            Ok(_) => {
                if breaker.success() {
                    metrics
                        .circuit_open
                        .get_or_create(&crate::metrics::ActionNameLabels {
                            action: name.clone(),
                        })
                        .set(0);
                }
                delivery.actions.remove(0);
                if delivery.actions.is_empty() {
                    self.complete(id);
                } else {
                    // serialize-actions: the next action of the chain, now.
                    delivery.attempts = 0;
                    delivery.next_ms = now_ms();
                    self.queue.push(Reverse((delivery.next_ms, id)));
                    if !self.stored.contains(&id) {
                        persist(delivery, &mut self.ops, &self.outbox);
                    }
                }
            }
            Err(error) if error.kind == ErrorKind::Permanent => {
                // The endpoint answered: a trial that ends so lets the next delivery try.
                breaker.forget(id);
                delivery.attempts += 1;
                self.kill(id, error.message);
            }
            Err(error) => {
                let now = now_ms();
                let tripped = breaker.failure(id, now, &policy);
                match tripped {
                    Tripped::No => {}
                    Tripped::Opened(cooldown) => {
                        tracing::warn!(action = %name, ?cooldown, "Circuit opened: deliveries to this action pause.");
                    }
                    Tripped::Reopened(cooldown) => {
                        tracing::warn!(action = %name, ?cooldown, "Circuit trial failed: deliveries to this action pause again.");
                    }
                }
                if tripped != Tripped::No {
                    metrics
                        .circuit_open
                        .get_or_create(&crate::metrics::ActionNameLabels {
                            action: name.clone(),
                        })
                        .set(1);
                }
                delivery.attempts += 1;
                delivery.last_error = Some(error.message.clone());
                let age = Duration::from_millis(now.saturating_sub(delivery.created_ms));
                if delivery.attempts >= policy.retry_max_attempts || age >= policy.retry_max_age {
                    let attempts = delivery.attempts;
                    self.kill(
                        id,
                        format!("gave up after {attempts} attempts: {}", error.message),
                    );
                    return;
                }
                let delay = policy.backoff(delivery.attempts, error.retry_after);
                delivery.next_ms = now + delay.as_millis() as u64;
                metrics
                    .delivery_retries
                    .get_or_create(&crate::metrics::ActionNameLabels { action: name })
                    .inc();
                self.queue.push(Reverse((delivery.next_ms, id)));
                if !self.stored.contains(&id) {
                    persist(delivery, &mut self.ops, &self.outbox);
                }
            }
        }
    }

    fn complete(&mut self, id: u64) {
        self.remove(id, Settled::Delivered);
    }

    /// A delivery leaves the store other than as a dead letter.
    fn remove(&mut self, id: u64, how: Settled) {
        let bytes = self.items.remove(&id).map_or(0, |d| d.stored_bytes);
        self.leave_memory(id, bytes);
        self.outbox.release(1, bytes);
        self.ops.push(Op::RemoveDelivery(id));
        self.note_settled(id, how);
    }

    fn note_settled(&mut self, id: u64, how: Settled) {
        if self.outbox.watched(id) {
            self.settled.push((id, how));
        }
    }

    fn kill(&mut self, id: u64, error: String) {
        if self.stored.contains(&id) {
            // A dead letter keeps the whole message.
            match self.outbox.store.read_pending(id) {
                Ok(Some(stored)) => self.reload(id, stored.message),
                Ok(None) => tracing::error!(
                    delivery = id,
                    "A dead letter's record is not in the delivery journal; it is kept without its message."
                ),
                Err(err) => {
                    tracing::error!(delivery = id, %err, "Cannot read a dead letter's record; it is kept without its message.")
                }
            }
        }
        let Some(mut delivery) = self.items.remove(&id) else {
            return;
        };
        // A dead letter is read by people: its body is made, whatever its action reads.
        let _ = delivery.message.fill_body();
        self.leave_memory(id, delivery.stored_bytes);
        let action = delivery.actions.first().cloned().unwrap_or_default();
        tracing::error!(action = %action, route = %delivery.route, delivery = id, %error, "Delivery dead-lettered.");
        self.outbox
            .metrics
            .dead_lettered
            .get_or_create(&crate::metrics::ActionNameLabels { action })
            .inc();
        self.outbox.release(1, delivery.stored_bytes);
        self.outbox.dead.fetch_add(1, Ordering::Relaxed);
        self.note_settled(id, Settled::DeadLettered);
        self.ops.push(Op::Kill(DeadLetter {
            delivery: *delivery,
            error,
            died_ms: now_ms(),
            unrendered: false,
        }));
    }
}

fn saturating_sub(total: &AtomicU64, n: u64) {
    let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
        Some(total.saturating_sub(n))
    });
}

/// Drops a delivery's message from memory (its record on disk has it), keeping the event id for
/// the logs.
fn strip(delivery: &mut Delivery) {
    delivery.message = Message::placeholder(std::mem::take(&mut delivery.message.event_id));
}

/// Queues the rewrite of a delivery whose schedule or chain changed (one whose message is in
/// memory: a stored one keeps its record, and its new schedule lives in memory only).
fn persist(delivery: &mut Delivery, ops: &mut Vec<Op>, outbox: &Outbox) {
    let before = delivery.stored_bytes;
    match Op::put(delivery) {
        Ok(op) => {
            outbox
                .pending_bytes
                .fetch_add(delivery.stored_bytes, Ordering::Relaxed);
            outbox.release_bytes(before);
            outbox
                .resident_bytes
                .fetch_add(delivery.stored_bytes, Ordering::Relaxed);
            outbox.release_resident(before);
            ops.push(op);
        }
        Err(error) => {
            tracing::error!(delivery = delivery.id, %error, "Cannot encode a rescheduled delivery; the store keeps its previous state.");
        }
    }
}

/// One action's delivery metrics, looked up once: a lookup in a metric family takes its lock and
/// builds the labels' strings, which every delivery paid twice.
struct ActionMetrics {
    duration: Histogram,
    /// `hooker_deliveries_total` by outcome, each made on its first use (a series that never
    /// happened is not exported).
    outcomes: [(&'static str, std::sync::OnceLock<Counter>); 3],
    metrics: Metrics,
    action: String,
    kind: &'static str,
}

impl ActionMetrics {
    fn new(metrics: &Metrics, action: &str, kind: &'static str) -> ActionMetrics {
        let duration = metrics
            .delivery_duration
            .get_or_create(&ActionLabels {
                action: action.to_string(),
                r#type: kind,
            })
            .clone();
        ActionMetrics {
            duration,
            outcomes: ["success", "retryable_error", "permanent_error"]
                .map(|outcome| (outcome, std::sync::OnceLock::new())),
            metrics: metrics.clone(),
            action: action.to_string(),
            kind,
        }
    }

    fn count(&self, outcome: &'static str) {
        let Some((_, counter)) = self.outcomes.iter().find(|(o, _)| *o == outcome) else {
            return;
        };
        counter
            .get_or_init(|| {
                self.metrics
                    .deliveries
                    .get_or_create(&DeliveryLabels {
                        action: self.action.clone(),
                        r#type: self.kind,
                        outcome,
                    })
                    .clone()
            })
            .inc();
    }
}

/// One attempt: send, measure, count, log. A pending body is made first if the action reads it.
async fn send(action: &dyn Action, message: &mut Message, metrics: &ActionMetrics) -> SendResult {
    if action.reads_body()
        && let Err(error) = message.fill_body()
    {
        return Err(ActionError::permanent(format!(
            "cannot render the message body: {error}"
        )));
    }
    let started = Instant::now();
    // A panic in an action (a bug meeting an unexpected answer) fails this attempt like an error:
    // otherwise the delivery would never settle and its action's concurrency slot stay taken.
    let result = match std::panic::AssertUnwindSafe(action.send(message))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ActionError::retryable(format!(
                "the action panicked: {what}"
            )))
        }
    };
    let elapsed = started.elapsed();
    let kind = action.kind();
    metrics.duration.observe(elapsed.as_secs_f64());
    let outcome = match &result {
        Ok(_) => "success",
        Err(err) if err.kind == ErrorKind::Retryable => "retryable_error",
        Err(_) => "permanent_error",
    };
    metrics.count(outcome);
    match &result {
        Ok(report) => {
            tracing::debug!(action = action.name(), r#type = kind, route = %message.route, event = %message.event_id, detail = report.detail.as_deref().unwrap_or(""), ms = elapsed.as_millis() as u64, "Delivered.");
        }
        Err(error) => {
            tracing::warn!(action = action.name(), r#type = kind, route = %message.route, event = %message.event_id, %error, retryable = error.kind == ErrorKind::Retryable, "Delivery failed.");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::action::{ActionError, Report};

    /// Records the events it is sent (and the last body); fails (retryably) those whose id starts
    /// with "fail", permanently those whose id starts with "refuse", and panics the first time
    /// it is sent one whose id starts with "panic".
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>, Mutex<String>);

    #[async_trait::async_trait]
    impl Action for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }

        fn kind(&self) -> &'static str {
            "test"
        }

        async fn send(&self, message: &Message) -> Result<Report, ActionError> {
            let first = !self.0.lock().unwrap().contains(&message.event_id);
            self.0.lock().unwrap().push(message.event_id.clone());
            if first && message.event_id.starts_with("panic") {
                panic!("boom");
            }
            *self.1.lock().unwrap() = message.body.clone();
            if message.event_id.starts_with("fail") {
                return Err(ActionError::retryable("down"));
            }
            if message.event_id.starts_with("refuse") {
                return Err(ActionError::permanent("HTTP 400"));
            }
            Ok(Report::none())
        }
    }

    fn engine(name: &str, recorder: Arc<Recorder>) -> Engine {
        engine_and_start(name, recorder).0
    }

    fn engine_and_start(name: &str, recorder: Arc<Recorder>) -> (Engine, EngineStart) {
        let dir = std::env::temp_dir().join(format!("hooker-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = OutboxOptions {
            path: dir.join("hooker.db"),
            max_pending: 100,
            max_pending_bytes: 1 << 20,
            max_bytes: 1 << 30,
        };
        let (outbox, _, start) = Outbox::open(options, Metrics::new()).unwrap();
        let pipeline = Pipeline {
            routes: Vec::new(),
            templates: BTreeMap::new(),
            actions: BTreeMap::from([("recorder".to_string(), recorder as Arc<dyn Action>)]),
            policies: BTreeMap::new(),
            server_url: None,
            max_db_size: None,
            db_verify_interval: Duration::from_secs(60),
            warnings: Vec::new(),
            index: Default::default(),
        };
        let engine = Engine::new(outbox, watch::channel(Arc::new(pipeline)).1, 8);
        (engine, start)
    }

    /// One delivery to the recorder, counted as pending as a commit would.
    fn delivery(engine: &Engine, event_id: &str) -> Delivery {
        let message = Message {
            route: "r".into(),
            event_id: event_id.into(),
            title: String::new(),
            body: String::new(),
            body_pending: false,
            url: None,
            fields: BTreeMap::new(),
            owners: Vec::new(),
            event: Arc::new(serde_json::json!({}).into()),
        };
        let outbox = &engine.outbox;
        outbox.pending.fetch_add(1, Ordering::Relaxed);
        let mut made = outbox.deliveries_for("r", &["recorder".into()], false, &message);
        made.remove(0)
    }

    /// Commits `delivery` as the router would, and waits for the disk.
    async fn commit(engine: &Engine, delivery: Delivery) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        engine
            .outbox
            .commit(vec![delivery], Vec::new(), move |result| {
                let _ = tx.send(result);
            });
        rx.await.unwrap().unwrap();
    }

    async fn run_all(engine: &mut Engine) {
        engine.start_due();
        while let Some(joined) = engine.inflight.join_next().await {
            engine.joined(joined);
        }
    }

    #[tokio::test]
    async fn a_failed_store_write_drops_what_has_not_finished() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("forget", recorder.clone());
        let done = delivery(&engine, "done");
        let queued = delivery(&engine, "queued");
        let running = delivery(&engine, "fail-running");
        let ids = vec![done.id, queued.id, running.id];
        // "done" finished before the write failed.
        engine.take(ToEngine::Add(vec![done]));
        run_all(&mut engine).await;
        // "fail-running" is in flight when the failure arrives, "queued" has not started.
        engine.take(ToEngine::Add(vec![running]));
        engine.start_due();
        engine.take(ToEngine::Add(vec![queued]));
        engine.take(ToEngine::Forget(ids.clone()));
        run_all(&mut engine).await;

        assert_eq!(*recorder.0.lock().unwrap(), ["done", "fail-running"]);
        // The running one failed but is not rescheduled: nothing is left, nothing is pending,
        // and every one of them has its removal queued.
        assert!(engine.items.is_empty());
        assert!(engine.forgotten.is_empty());
        assert_eq!(engine.outbox.pending.load(Ordering::Relaxed), 0);
        let removed: Vec<u64> = engine
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::RemoveDelivery(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(ids.iter().all(|id| removed.contains(id)));
        assert!(
            !engine
                .ops
                .iter()
                .any(|op| matches!(op, Op::PutDelivery { .. }))
        );
    }

    #[tokio::test]
    async fn a_pending_body_is_made_before_an_action_that_reads_it_and_kept_for_retries() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("pending-body", recorder.clone());
        let event = serde_json::json!({"b": 1, "a": {"d": [2], "c": "x"}});
        let expected = crate::router::template::raw_json_body(&event).unwrap();
        let mut pending = delivery(&engine, "fail-pending");
        pending.message.event = Arc::new(event.into());
        pending.message.body_pending = true;
        let id = pending.id;
        engine.take(ToEngine::Add(vec![pending]));
        run_all(&mut engine).await;
        assert_eq!(*recorder.1.lock().unwrap(), expected);
        // The failed attempt gave the message back, made: the retry sends the same body.
        let kept = &engine.items[&id].message;
        assert!(!kept.body_pending);
        assert_eq!(kept.body, expected);
    }

    #[tokio::test]
    async fn a_panicking_action_fails_its_attempt_like_an_error() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("panic", recorder.clone());
        let panicking = delivery(&engine, "panic-once");
        let id = panicking.id;
        engine.take(ToEngine::Add(vec![panicking]));
        run_all(&mut engine).await;
        // Settled as a retryable failure, its action's slot freed, its message kept.
        let failed = &engine.items[&id];
        assert_eq!(failed.attempts, 1);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("the action panicked: boom")
        );
        assert_eq!(failed.message.event_id, "panic-once");
        assert_eq!(engine.running.get("recorder"), Some(&0));
        // The retry runs and succeeds.
        engine.queue.push(Reverse((0, id)));
        run_all(&mut engine).await;
        assert!(engine.items.is_empty());
        assert_eq!(*recorder.0.lock().unwrap(), ["panic-once", "panic-once"]);
    }

    #[tokio::test]
    async fn watched_deliveries_are_told_how_they_left_and_withdrawn_ones_do_not_run_again() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("watch", recorder.clone());
        let made: Vec<Delivery> = ["ok", "refuse-it", "fail-waiting", "fail-running"]
            .into_iter()
            .map(|event| delivery(&engine, event))
            .collect();
        let ids: Vec<u64> = made.iter().map(|d| d.id).collect();
        let watchers = engine.outbox.watch(&ids);
        let mut made = made.into_iter();
        engine.take(ToEngine::Add(made.by_ref().take(3).collect()));
        run_all(&mut engine).await;
        // "fail-waiting" failed and waits for its retry: withdrawn at once.
        engine.take(ToEngine::Withdraw(vec![ids[2]]));
        // "fail-running" is running when withdrawn: it leaves when its attempt fails.
        engine.take(ToEngine::Add(made.collect()));
        engine.start_due();
        engine.take(ToEngine::Withdraw(vec![ids[3]]));
        run_all(&mut engine).await;
        assert!(engine.items.is_empty());
        assert_eq!(engine.outbox.pending.load(Ordering::Relaxed), 0);
        // Told once the removals are written.
        engine.flush();
        let mut told = Vec::new();
        for watcher in watchers {
            let how = tokio::time::timeout(Duration::from_secs(10), watcher).await;
            told.push(how.unwrap().unwrap());
        }
        assert_eq!(
            told,
            [
                Settled::Delivered,
                Settled::DeadLettered,
                Settled::Withdrawn,
                Settled::Withdrawn
            ]
        );
        // Their places in the queue run nothing.
        for id in &ids {
            engine.queue.push(Reverse((0, *id)));
        }
        run_all(&mut engine).await;
        let mut sent = recorder.0.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent, ["fail-running", "fail-waiting", "ok", "refuse-it"]);
    }

    /// The dead letters among the engine's queued store changes.
    fn killed(engine: &Engine) -> Vec<&DeadLetter> {
        engine
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Kill(letter) => Some(letter),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_dead_letter_counts_the_attempt_that_killed_it() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("attempts", recorder.clone());
        let refused = delivery(&engine, "refuse-once");
        engine.take(ToEngine::Add(vec![refused]));
        run_all(&mut engine).await;
        let letters = killed(&engine);
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].error, "HTTP 400");
        assert_eq!(letters[0].delivery.attempts, 1, "it failed once");
    }

    #[tokio::test]
    async fn failures_of_deliveries_already_running_do_not_extend_the_circuit_cooldown() {
        let recorder = Arc::new(Recorder::default());
        let mut engine = engine("breaker", recorder.clone());
        // A backlog after a restart: 20 deliveries start at once, the endpoint is down.
        let backlog: Vec<Delivery> = (0..20)
            .map(|n| delivery(&engine, &format!("fail-{n}")))
            .collect();
        engine.take(ToEngine::Add(backlog));
        run_all(&mut engine).await;
        let breaker = &engine.breakers["recorder"];
        assert!(breaker.is_open());
        assert_eq!(
            breaker.cooldown(),
            Some(DeliveryPolicy::default().circuit_breaker_cooldown),
            "the policy's cooldown, not doubled per failure"
        );
    }

    #[tokio::test]
    async fn past_the_resident_limit_messages_wait_on_disk_and_are_read_back_to_run() {
        let recorder = Arc::new(Recorder::default());
        let (mut engine, mut start) = engine_and_start("stored", recorder.clone());
        engine
            .outbox
            .resident_bytes
            .store(RESIDENT_BYTES, Ordering::Relaxed);
        let mut ok = delivery(&engine, "stored");
        ok.message.body = "the body".into();
        let mut failing = delivery(&engine, "fail-stored");
        failing.message.body = "the failing body".into();
        let failing_id = failing.id;
        commit(&engine, ok).await;
        commit(&engine, failing).await;
        for _ in 0..2 {
            let Some(ToEngine::AddStored(stored)) = start.rx.recv().await else {
                panic!("expected deliveries without their messages");
            };
            assert!(stored.iter().all(|d| d.message.body.is_empty()));
            engine.take(ToEngine::AddStored(stored));
        }
        run_all(&mut engine).await;
        assert_eq!(*recorder.0.lock().unwrap(), ["stored", "fail-stored"]);
        assert_eq!(*recorder.1.lock().unwrap(), "the failing body");
        // The failed one waits for its retry, on disk only again (the limit is still reached),
        // and its record was not rewritten from the stripped copy.
        assert_eq!(engine.items.len(), 1);
        assert!(engine.stored.contains(&failing_id));
        assert!(engine.items[&failing_id].message.body.is_empty());
        assert_eq!(engine.items[&failing_id].attempts, 1);
        let record = engine
            .outbox
            .store
            .read_pending(failing_id)
            .unwrap()
            .unwrap();
        assert_eq!(record.message.body, "the failing body");
        assert_eq!(
            engine.outbox.resident_bytes.load(Ordering::Relaxed),
            RESIDENT_BYTES
        );
    }
}

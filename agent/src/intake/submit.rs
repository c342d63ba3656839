//! Submission for intakes whose producer cannot be told "retry later" (the Tracee subscriber,
//! Fluent Forward without acks): never wait for the router, shed what a full queue refuses, and
//! count every outcome, so a slow Hooker never stalls the producer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::metrics::{IntakeNameLabels, Metrics};
use crate::router::{RouterHandle, SubmitError};

/// How often a shedding intake may log that it sheds.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What became of a submission at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued; its outcome is counted when the router answers.
    Queued,
    /// Refused (queue or outbox full, or larger than the queue) and counted as shed.
    Shed,
    /// Hooker is shutting down.
    Closed,
}

/// Rate-limits the "shedding" warning of one intake.
pub struct ShedLog {
    last: Mutex<Option<Instant>>,
}

impl Default for ShedLog {
    fn default() -> Self {
        ShedLog {
            last: Mutex::new(None),
        }
    }
}

impl ShedLog {
    fn warn(&self, intake: &'static str, n: usize) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= SHED_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                intake,
                events = n,
                "The event queue or the outbox is full: shedding events (counted in hooker_intake_events_shed_total)."
            );
        }
    }
}

/// Hands `events` to the router without waiting. Counts `accepted` (or `unavailable`) once the
/// router has stored them, `shed` when refused.
pub fn submit_or_shed(
    router: &RouterHandle,
    metrics: &Metrics,
    log: &ShedLog,
    intake: &'static str,
    events: Vec<Event>,
    bytes: usize,
) -> Submitted {
    let n = events.len();
    if n == 0 {
        return Submitted::Queued;
    }
    match router.try_submit(events, bytes) {
        Ok(done) => {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let outcome = match done.await {
                    Ok(Ok(_)) => "accepted",
                    _ => "unavailable",
                };
                metrics.received(intake, outcome, n as u64);
            });
            Submitted::Queued
        }
        Err(SubmitError::Full | SubmitError::TooLarge) => {
            shed(metrics, intake, n);
            log.warn(intake, n);
            Submitted::Shed
        }
        Err(SubmitError::Closed) => {
            shed(metrics, intake, n);
            Submitted::Closed
        }
    }
}

/// Counts `n` events dropped on Hooker's side.
pub fn shed(metrics: &Metrics, intake: &'static str, n: usize) {
    metrics.received(intake, "shed", n as u64);
    metrics
        .intake_shed
        .get_or_create(&IntakeNameLabels { intake })
        .inc_by(n as u64);
}

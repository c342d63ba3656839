//! Background tasks that must not die quietly. A supervised task that panics is logged, counted
//! and started again (after a short pause); one that cannot go on marks the agent not ready
//! ([`Health`]), so `/readyz` answers 503 with the reason instead of "ready" over a dead part.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

/// Restarts in a row after which a task that keeps panicking is given up (within
/// [`CALM`] of each other).
const MAX_RESTARTS: u32 = 5;
/// A task that ran this long since its last restart starts a new count.
const CALM: Duration = Duration::from_secs(60);
/// The pause before the first restart; doubled for each next one.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Whether every supervised task is alive, and what died if not. Shares the readiness flag and
/// the status that `/readyz` and gRPC health report.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    status: Arc<Mutex<serde_json::Value>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Health {
    pub fn new(ready: Arc<AtomicBool>, status: Arc<Mutex<serde_json::Value>>) -> Health {
        Health {
            ready,
            status,
            failed: Arc::default(),
        }
    }

    /// Records that a part of the agent stopped for good: readiness turns false, and the status
    /// `/readyz` shows lists why (under `failed`).
    pub fn fail(&self, reason: String) {
        tracing::error!(%reason, "A part of Hooker stopped; it reports not ready from now on.");
        if let Ok(mut failed) = self.failed.lock() {
            failed.push(reason);
        }
        self.ready.store(false, Ordering::Relaxed);
        self.publish();
    }

    /// What stopped for good, in order.
    pub fn failures(&self) -> Vec<String> {
        self.failed.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn is_healthy(&self) -> bool {
        self.failures().is_empty()
    }

    /// Marks the agent ready, unless something already stopped.
    pub fn set_ready(&self) -> bool {
        let healthy = self.is_healthy();
        self.ready.store(healthy, Ordering::Relaxed);
        healthy
    }

    /// Puts the failures into the status again (after a reload replaced it).
    pub fn publish(&self) {
        let failures = self.failures();
        if failures.is_empty() {
            return;
        }
        if let Ok(mut status) = self.status.lock()
            && let serde_json::Value::Object(map) = &mut *status
        {
            map.insert("failed".into(), failures.into());
        }
    }
}

/// Runs the task `start` makes, and makes and runs it again each time it panics; after
/// [`MAX_RESTARTS`] panics in a row, gives up and marks `health` failed. A task that returns
/// has finished (shutdown) and is not restarted. Aborting the returned handle stops it.
pub fn spawn<F, Fut>(task: &'static str, health: Health, start: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(supervise(task, health, start))
}

async fn supervise<F, Fut>(task: &'static str, health: Health, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut restarts = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let Err(panic) = AssertUnwindSafe(start()).catch_unwind().await else {
            return;
        };
        let what = panic_message(panic.as_ref());
        if started.elapsed() >= CALM {
            restarts = 0;
        }
        if restarts >= MAX_RESTARTS {
            health.fail(format!(
                "the {task} task panicked {} times in a row, last: {what}",
                restarts + 1
            ));
            return;
        }
        let pause = FIRST_PAUSE.saturating_mul(1 << restarts);
        restarts += 1;
        tracing::error!(task, panic = %what, ?pause, "Task panicked; starting it again.");
        tokio::time::sleep(pause).await;
    }
}

/// Runs `task` once; if it panics, or ends before `stop` turned true, `health` is marked
/// failed (for a task that cannot be started again, such as the delivery engine).
pub fn spawn_once<Fut>(
    task: &'static str,
    health: Health,
    stop: tokio::sync::watch::Receiver<bool>,
    future: Fut,
) -> tokio::task::JoinHandle<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(()) if !*stop.borrow() => {
                health.fail(format!("the {task} task stopped"));
            }
            Ok(()) => {}
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                health.fail(format!("the {task} task panicked: {what}"));
            }
        }
    })
}

/// The text a panic was raised with, when it has one.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn health() -> Health {
        Health::new(
            Arc::new(AtomicBool::new(true)),
            Arc::new(Mutex::new(serde_json::json!({}))),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again_and_keeps_working() {
        let health = health();
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
        let counter = runs.clone();
        let task = spawn("test", health.clone(), move || {
            let runs = counter.clone();
            let tx = tx.clone();
            async move {
                let run = runs.fetch_add(1, Ordering::Relaxed) + 1;
                if run <= 2 {
                    panic!("run {run} fails");
                }
                let _ = tx.send(run).await;
            }
        });
        assert_eq!(rx.recv().await, Some(3), "third run goes through");
        task.await.unwrap();
        assert!(health.is_healthy(), "{:?}", health.failures());
        assert!(health.ready.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_panicking_marks_the_agent_not_ready() {
        let health = health();
        let task = spawn("doomed", health.clone(), || async { panic!("always") });
        task.await.unwrap();
        assert!(!health.ready.load(Ordering::Relaxed));
        let failures = health.failures();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("doomed"), "{failures:?}");
        assert!(failures[0].contains("always"), "{failures:?}");
        let status = health.status.lock().unwrap().clone();
        assert_eq!(status["failed"][0], failures[0]);
        assert!(!health.set_ready(), "stays not ready");
    }

    #[tokio::test]
    async fn a_task_run_once_that_dies_early_marks_the_agent_not_ready() {
        let health = health();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        spawn_once("engine", health.clone(), stop.clone(), async {
            panic!("engine bug")
        })
        .await
        .unwrap();
        assert!(health.failures()[0].contains("engine bug"));

        let health = self::health();
        spawn_once("engine", health.clone(), stop, async {})
            .await
            .unwrap();
        assert!(health.failures()[0].contains("stopped"));

        // Ending once asked to stop is no failure.
        let health = self::health();
        stop_tx.send_replace(true);
        spawn_once("engine", health.clone(), stop_tx.subscribe(), async {})
            .await
            .unwrap();
        assert!(health.is_healthy());
    }
}

//! Keeps pipelines running: one task per pipeline that opens it, runs it, and after a failure
//! or a panic reports it and opens it again after a backoff, until the pipeline is stopped.
//!
//! Invariants: at most one task per pipeline key, so a pipeline's tables have one writer; a
//! pipeline is stopped by its key (its stream's or view's id among it), so a stream dropped and
//! created again under its name is another pipeline; stopping waits for a round in progress
//! to end, so that the caller may drop the pipeline's tables once `stop` returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Cadence, Failure, MAX_BACKOFF, MIN_BACKOFF, Monitor, Pipeline, State, run};
use crate::exactly_once::Writer;
use crate::view::Clock;
use crate::{PipelineError, Result};

/// Opens a pipeline, again after each failure.
#[async_trait]
pub(crate) trait Open: Send + Sync + 'static {
    async fn open(&self) -> Result<Box<dyn Pipeline>>;
}

/// The pipelines running, by the table they write and its writer.
pub(crate) type Key = (String, Writer);

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    monitor: Monitor,
}

/// Every pipeline's task.
#[derive(Default)]
pub(crate) struct Supervisor {
    tasks: Mutex<HashMap<Key, Task>>,
}

impl Supervisor {
    /// Supervises a pipeline from now on: `first` is its first opening (done by the caller, so
    /// that it can report a failure at once), after which `opener` opens it again.
    pub fn start(
        &self,
        key: Key,
        opener: Arc<dyn Open>,
        first: Result<Box<dyn Pipeline>>,
        cadence: Cadence,
        monitor: Monitor,
        clock: Arc<dyn Clock>,
    ) {
        // What a pipeline opened already is, its status says from now on (a view just created
        // is listed with its kind before its task first runs).
        if let Ok(pipeline) = &first {
            monitor.opened(pipeline.kind(), pipeline.keys());
        }
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(supervise(
            opener,
            first,
            cadence,
            monitor.clone(),
            clock,
            stopped,
        ));
        let old = self.lock().insert(
            key,
            Task {
                stop,
                handle,
                monitor,
            },
        );
        debug_assert!(old.is_none(), "a pipeline is supervised once");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Task>> {
        self.tasks.lock().expect("supervisor lock")
    }

    /// The pipelines supervised.
    pub fn keys(&self) -> Vec<Key> {
        self.lock().keys().cloned().collect()
    }

    /// The monitor of the pipeline writing table `name`.
    pub fn monitor(&self, name: &str) -> Option<Monitor> {
        self.lock()
            .iter()
            .find(|((table, _), _)| table == name)
            .map(|(_, task)| task.monitor.clone())
    }

    /// Stops a pipeline, letting a round in progress finish.
    pub async fn stop(&self, key: &Key) {
        let task = self.lock().remove(key);
        if let Some(task) = task {
            finish(task).await;
        }
    }

    /// Stops every pipeline.
    pub async fn stop_all(&self) {
        let tasks: Vec<Task> = self.lock().drain().map(|(_, t)| t).collect();
        for task in tasks {
            finish(task).await;
        }
    }
}

async fn finish(task: Task) {
    let _ = task.stop.send(true);
    let _ = task.handle.await;
    task.monitor.set_state(State::Stopped);
}

async fn supervise(
    opener: Arc<dyn Open>,
    first: Result<Box<dyn Pipeline>>,
    cadence: Cadence,
    monitor: Monitor,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut opened = Some(first);
    loop {
        if *stop.borrow() {
            return;
        }
        monitor.set_state(State::Starting);
        let pipeline = match opened.take() {
            Some(first) => first,
            None => opener.open().await,
        };
        let (error, panicked) = match pipeline {
            Err(e) => (format!("cannot start: {e}"), false),
            Ok(pipeline) => {
                monitor.opened(pipeline.kind(), pipeline.keys());
                let running = tokio::spawn(run(
                    pipeline,
                    cadence,
                    monitor.clone(),
                    clock.clone(),
                    stop.clone(),
                ));
                match running.await {
                    Ok(Ok(())) => return,
                    Ok(Err(Failure {
                        error: PipelineError::Reassigned(why),
                        ..
                    })) => {
                        tracing::info!(
                            pipeline = monitor.status().name,
                            why,
                            "opening the pipeline again"
                        );
                        monitor.reassigned();
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                    Ok(Err(Failure { error, progressed })) => {
                        if progressed {
                            backoff = MIN_BACKOFF;
                        }
                        (error.to_string(), false)
                    }
                    Err(e) if e.is_panic() => (panicked_with(e.into_panic()), true),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => return,
                }
            }
        };
        tracing::error!(pipeline = monitor.status().name, error, retry_in = ?backoff, "pipeline failed");
        monitor.failed(&error, panicked);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = next_backoff(backoff);
    }
}

/// The wait after one more failure in a row.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// What a panic said.
fn panicked_with(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the pipeline panicked (a bug; it was started again): {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_double_the_wait_up_to_thirty_seconds() {
        let mut waits = vec![MIN_BACKOFF];
        for _ in 0..8 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }
}

//! Keeps one raw-table pipeline running per stream.
//!
//! Streams come and go through SQL and through the Kinesis API, so rather than being told, the
//! server reconciles: every upkeep tick it starts a pipeline for each stream that has none, and
//! stops the pipelines of streams that were dropped (or dropped and created again: a stream is
//! known by its id, not its name), deleting their tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_lake::Lake;
use sluice_log::Log;
use sluice_pipeline::{RawConfig, RawPipeline};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running pipeline: the stream's id, and how to stop it.
/// A pipeline that failed to start: its stream's name, when, and why.
struct Failed {
    name: String,
    at: Instant,
    error: String,
}

struct Running {
    stream_id: u64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    health: Arc<sluice_pipeline::Health>,
}

/// A stream by its name and id.
type Named = (String, u64);

/// How long a pipeline that failed to start waits before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(30);

pub struct Pipelines {
    log: Arc<Log>,
    lake: Lake,
    config: RawConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Streams whose pipeline failed to start (by id).
    failed: Mutex<HashMap<u64, Failed>>,
    /// One reconciliation at a time: two could both start a pipeline for one stream.
    reconciling: tokio::sync::Mutex<()>,
}

impl Pipelines {
    pub fn new(log: Arc<Log>, lake: Lake, config: RawConfig) -> Self {
        Self {
            log,
            lake,
            config,
            running: Mutex::default(),
            failed: Mutex::default(),
            reconciling: tokio::sync::Mutex::default(),
        }
    }

    /// Starts and stops pipelines so that every stream, and only they, has one.
    pub async fn reconcile(&self) {
        let _one = self.reconciling.lock().await;
        let streams = self.log.streams();
        let (gone, gone_failed, wanted): (Vec<(String, Running)>, Vec<Named>, Vec<_>) = {
            let mut running = self.running.lock().expect("pipelines lock");
            let live: HashMap<&str, u64> =
                streams.iter().map(|s| (s.name(), s.meta().id)).collect();
            let gone_names: Vec<String> = running
                .iter()
                .filter(|(name, r)| live.get(name.as_str()) != Some(&r.stream_id))
                .map(|(name, _)| name.clone())
                .collect();
            let gone = gone_names
                .into_iter()
                .filter_map(|n| running.remove_entry(&n))
                .collect();
            let mut failed = self.failed.lock().expect("pipelines lock");
            let live_ids: Vec<u64> = live.values().copied().collect();
            let gone_failed: Vec<u64> = failed
                .keys()
                .filter(|id| !live_ids.contains(id))
                .copied()
                .collect();
            let gone_failed = gone_failed
                .into_iter()
                .filter_map(|id| failed.remove(&id).map(|f| (f.name, id)))
                .collect();
            let wanted = streams
                .iter()
                .filter(|s| !running.contains_key(s.name()))
                .filter(|s| {
                    failed
                        .get(&s.meta().id)
                        .is_none_or(|f| f.at.elapsed() >= RETRY_AFTER)
                })
                .cloned()
                .collect();
            (gone, gone_failed, wanted)
        };
        // A dropped stream's tables go with it, whether its pipeline ran or had failed.
        let mut dropped = Vec::new();
        for (name, pipeline) in gone {
            dropped.push((name, pipeline.stream_id));
            stop(pipeline).await;
        }
        for (name, stream_id) in dropped.into_iter().chain(gone_failed) {
            if let Err(e) = sluice_pipeline::drop_tables(&self.lake, &name, stream_id).await {
                tracing::error!(stream = name, error = %e, "cannot drop the tables of a dropped stream");
            }
        }
        for stream in wanted {
            let name = stream.name().to_string();
            let stream_id = stream.meta().id;
            match RawPipeline::open(stream, &self.lake, self.config.clone()).await {
                Ok(pipeline) => {
                    let (stop, stopped) = watch::channel(false);
                    let health = pipeline.health();
                    let task = tokio::spawn(pipeline.run(stopped));
                    self.running.lock().expect("pipelines lock").insert(
                        name,
                        Running {
                            stream_id,
                            stop,
                            task,
                            health,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(stream = name, error = %e, "cannot start the raw table pipeline");
                    self.failed.lock().expect("pipelines lock").insert(
                        stream_id,
                        Failed {
                            name,
                            at: Instant::now(),
                            error: e.to_string(),
                        },
                    );
                }
            }
        }
    }

    /// Why a stream's raw tables are not being written: the last round's error, or the
    /// pipeline's failure to start; `None` while all is well.
    pub fn error(&self, stream: &str) -> Option<String> {
        if let Some(running) = self.running.lock().expect("pipelines lock").get(stream) {
            return running.health.last_error();
        }
        self.failed
            .lock()
            .expect("pipelines lock")
            .values()
            .find(|f| f.name == stream)
            .map(|f| {
                format!(
                    "the pipeline could not start ({}); it is tried again every {RETRY_AFTER:?}",
                    f.error
                )
            })
    }

    /// Stops every pipeline, letting a round in progress finish.
    pub async fn stop_all(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .expect("pipelines lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for pipeline in running {
            stop(pipeline).await;
        }
    }
}

async fn stop(pipeline: Running) {
    let _ = pipeline.stop.send(true);
    let _ = pipeline.task.await;
}

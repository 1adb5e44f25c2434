//! What the server does in the background: a pipeline for every stream and view (streams come
//! and go through the Kinesis API too, so the pipelines are reconciled with the log twice a
//! second), retention, the streams' rates, and draining the metrics recorder.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sluice_log::Log;

use crate::status::StreamRates;

/// Runs the upkeep until aborted.
pub async fn run(
    log: Arc<Log>,
    pipelines: Arc<sluice_pipeline::Pipelines>,
    rates: Arc<StreamRates>,
    metrics: PrometheusHandle,
    retention_interval: Duration,
) {
    let mut retention = tokio::time::interval(retention_interval);
    let mut rates_tick = tokio::time::interval(Duration::from_secs(1));
    // A sample late (behind a slow reconcile) is taken late, not twice in a row.
    rates_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(5));
    let mut streams_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = streams_tick.tick() => pipelines.reconcile().await,
            _ = retention.tick() => {
                let log = log.clone();
                match tokio::task::spawn_blocking(move || log.enforce_retention()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted segments"),
                    Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    Err(e) => tracing::error!(error = %e, "retention task failed"),
                }
            }
            _ = rates_tick.tick() => rates.sample(&log),
            _ = metrics_tick.tick() => metrics.run_upkeep(),
        }
    }
}

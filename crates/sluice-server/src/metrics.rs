//! The process's metrics recorder and its Prometheus rendering (`GET /metrics`).
//!
//! The recorder must be installed before the log opens: the log takes its metric handles when
//! streams open, and handles taken earlier go nowhere.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: from 100 µs (a group commit on a fast disk) to 2.5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Records per group commit.
const GROUP_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0];

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("sluice_log_group_records".into()),
                        GROUP_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (in tests); then this handle renders
            // what reaches it, and the process's metrics go to the other one.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    sluice_pipeline::runtime::describe_metrics();
    metrics::describe_counter!(
        "sluice_stream_records_in_total",
        "Records made durable, per stream"
    );
    metrics::describe_counter!(
        "sluice_stream_bytes_in_total",
        "Bytes of batches made durable, per stream"
    );
    metrics::describe_histogram!(
        "sluice_log_append_seconds",
        metrics::Unit::Seconds,
        "From an append's arrival at the log to its acknowledgement, per stream"
    );
    metrics::describe_histogram!(
        "sluice_log_fsync_seconds",
        metrics::Unit::Seconds,
        "One group commit's write and fsync, per stream"
    );
    metrics::describe_histogram!(
        "sluice_log_group_records",
        "Records per group commit, per stream"
    );
    metrics::describe_counter!(
        "sluice_log_backpressure_total",
        "Appends refused because too many bytes were waiting for the disk, per stream"
    );
}

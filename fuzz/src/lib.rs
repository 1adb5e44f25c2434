//! What the fuzz targets share: a scratch folder for the targets that need a real log on disk,
//! and the one-shard stream the log recovery target and its seeds are made of.
//!
//! libFuzzer ends a run with `exit()`, so nothing a target keeps in a `static` is dropped and a
//! `TempDir` there would never be removed. Instead each process names its folder after its pid,
//! and the next run removes the folders of processes that are gone.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_log::{Log, Retention, Stream, StreamOptions};

/// Creates stream `s` in `log`: one shard, no retention (nothing is deleted behind a check).
pub fn create_one_shard_stream(log: &Log) -> Arc<Stream> {
    let options = StreamOptions {
        shards: 1,
        retention: Retention {
            max_age_ms: None,
            max_bytes_per_shard: None,
        },
        definition: serde_json::Value::Null,
        elsewhere: None,
    };
    log.create_stream("s", options)
        .expect("create the one-shard stream")
}

/// A fresh, empty folder for this process: on tmpfs (`/dev/shm`) when there is one, so that the
/// log's fsyncs cost nothing; folders left by earlier, finished runs of `target` are removed.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let prefix = format!("sluice-fuzz-{target}-");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if !PathBuf::from("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the fuzz scratch folder");
    dir
}

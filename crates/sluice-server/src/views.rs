//! Keeps every materialized view's pipeline running: started from the catalog at start-up,
//! created and dropped by SQL, and started again after a failure (a view whose stream was
//! dropped through the Kinesis API, a lake that was unreachable).
//!
//! Names: a view's table, and its errors table, are the view's alone, so a view cannot take a
//! stream's name or a table's, and a stream or view that views read cannot be dropped before
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_lake::Lake;
use sluice_log::Log;
use sluice_pipeline::PipelineError;
use sluice_pipeline::view::plan::ViewPlan;
use sluice_pipeline::view::{
    Catalog, StoredView, SystemClock, ViewConfig, ViewPipeline, ViewStatus, errors_table,
};
use sluice_query::arrow::datatypes::DataType;
use sluice_sql::CreateView;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ServerError;
use crate::sql::{Existing, QueryResult};

/// How long a view that failed to start waits before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(5);

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    status: Arc<Mutex<ViewStatus>>,
}

/// The views of a server.
pub struct Views {
    log: Arc<Log>,
    lake: Lake,
    catalog: Catalog,
    config: ViewConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Views that failed to start: why, and when.
    failed: Mutex<HashMap<String, (String, Instant)>>,
    /// One change (create, drop, start) at a time.
    ddl: tokio::sync::Mutex<()>,
}

impl Views {
    pub fn open(log: Arc<Log>, lake: Lake, catalog: Catalog, config: ViewConfig) -> Self {
        Self {
            log,
            lake,
            catalog,
            config,
            running: Mutex::default(),
            failed: Mutex::default(),
            ddl: tokio::sync::Mutex::default(),
        }
    }

    /// Starts every view of the catalog that is not running (but those that failed less than
    /// [`RETRY_AFTER`] ago).
    pub async fn reconcile(&self) {
        let _ddl = self.ddl.lock().await;
        let views = match self.catalog.list() {
            Ok(views) => views,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the materialized views");
                return;
            }
        };
        for view in views {
            let name = view.definition.name.clone();
            let waiting = self
                .failed
                .lock()
                .expect("views lock")
                .get(&name)
                .is_some_and(|(_, at)| at.elapsed() < RETRY_AFTER);
            let runs = {
                let mut running = self.running.lock().expect("views lock");
                // A view whose task ended (it panicked: a bug) starts again, from its commit.
                if running.get(&name).is_some_and(|r| r.task.is_finished()) {
                    tracing::error!(view = name, "the view's task ended: starting it again");
                    running.remove(&name);
                }
                running.contains_key(&name)
            };
            if waiting || runs {
                continue;
            }
            if let Err(e) = self.start(view).await {
                tracing::warn!(view = name, error = %e, "cannot start the materialized view");
                self.failed
                    .lock()
                    .expect("views lock")
                    .insert(name, (e.to_string(), Instant::now()));
            }
        }
    }

    async fn start(&self, view: StoredView) -> Result<(), PipelineError> {
        let name = view.definition.name.clone();
        let pipeline = ViewPipeline::open(
            view.definition.clone(),
            view.id,
            self.log.clone(),
            self.lake.clone(),
            self.catalog.state_dir(&view),
            self.config.clone(),
            Arc::new(SystemClock),
        )
        .await?;
        let status = pipeline.status();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(pipeline.run(stopped));
        self.failed.lock().expect("views lock").remove(&name);
        self.running
            .lock()
            .expect("views lock")
            .insert(name, Running { stop, task, status });
        Ok(())
    }

    /// `CREATE MATERIALIZED VIEW`: checks the query, records the view, creates its tables and
    /// starts it (backfilling what its stream holds).
    pub async fn create(&self, create: CreateView, existing: Existing) -> Result<(), ServerError> {
        let _ddl = self.ddl.lock().await;
        let definition = create.definition;
        let name = definition.name.clone();
        if let Some(stored) = self.catalog.get(&name)? {
            return match existing {
                Existing::Refuse if create.if_not_exists => Ok(()),
                Existing::Refuse => Err(PipelineError::ViewExists(name).into()),
                Existing::SameDefinition if stored.definition == definition => Ok(()),
                Existing::SameDefinition => Err(ServerError::Config(format!(
                    "materialized view '{name}' exists with a different definition than the \
                     config file gives; drop it or change the file"
                ))),
            };
        }
        if self.log.stream(&name).is_ok() {
            return Err(ServerError::Unsupported(format!(
                "'{name}' is a stream: a view needs a name of its own"
            )));
        }
        let tables = self.lake.table_names();
        if let Some(table) = [name.clone(), errors_table(&name)]
            .into_iter()
            .find(|t| tables.contains(t))
        {
            return Err(ServerError::TableExists(table));
        }
        let plan = ViewPlan::new(&definition, &self.log, &self.lake).await?;
        let stored = self
            .catalog
            .create(definition, plan.input.source.name().to_string())?;
        if let Err(e) = self.start(stored.clone()).await {
            // Nothing of a view that cannot start stays behind.
            let _ = sluice_pipeline::view::drop_tables(&self.lake, &name, stored.id).await;
            let _ = self.catalog.drop_view(&name);
            return Err(e.into());
        }
        Ok(())
    }

    /// `DROP MATERIALIZED VIEW`: stops the view, drops its tables and forgets it.
    pub async fn drop_view(&self, name: &str, if_exists: bool) -> Result<(), ServerError> {
        let _ddl = self.ddl.lock().await;
        let Some(stored) = self.catalog.get(name)? else {
            return match if_exists {
                true => Ok(()),
                false => Err(PipelineError::ViewNotFound(name.to_string()).into()),
            };
        };
        let readers = self.reading(name)?;
        if !readers.is_empty() {
            return Err(ServerError::Unsupported(format!(
                "materialized views read view '{name}': drop them first ({})",
                readers.join(", ")
            )));
        }
        let running = self.running.lock().expect("views lock").remove(name);
        if let Some(running) = running {
            stop(running).await;
        }
        self.failed.lock().expect("views lock").remove(name);
        sluice_pipeline::view::drop_tables(&self.lake, name, stored.id).await?;
        self.catalog.drop_view(name)?;
        Ok(())
    }

    /// The views that read `input` (a stream or a view).
    pub fn reading(&self, input: &str) -> Result<Vec<String>, ServerError> {
        Ok(self
            .catalog
            .list()?
            .into_iter()
            .filter(|v| v.input == input)
            .map(|v| v.definition.name)
            .collect())
    }

    /// Every view's status, those that cannot start with the reason.
    pub fn statuses(&self) -> Result<Vec<ViewStatus>, ServerError> {
        let running = self.running.lock().expect("views lock");
        let failed = self.failed.lock().expect("views lock");
        Ok(self
            .catalog
            .list()?
            .into_iter()
            .map(|view| {
                let name = &view.definition.name;
                match (running.get(name), failed.get(name)) {
                    (Some(r), _) => r.status.lock().expect("status lock").clone(),
                    (None, failed) => ViewStatus {
                        name: name.clone(),
                        input: view.input.clone(),
                        last_error: failed.map(|(e, _)| e.clone()),
                        ..ViewStatus::default()
                    },
                }
            })
            .collect())
    }

    /// `SHOW MATERIALIZED VIEWS`.
    pub fn show(&self) -> Result<QueryResult, ServerError> {
        let statuses: HashMap<String, ViewStatus> = self
            .statuses()?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let rows = self
            .catalog
            .list()?
            .into_iter()
            .map(|view| {
                let status = statuses.get(&view.definition.name);
                vec![
                    json!(view.definition.name),
                    json!(view.input),
                    json!(status.map(|s| s.kind).filter(|k| !k.is_empty())),
                    json!(status.and_then(|s| s.watermark.clone())),
                    json!(status.map_or(0, |s| s.input_lag)),
                    json!(status.and_then(|s| s.last_error.clone())),
                    json!(view.definition.to_sql()),
                ]
            })
            .collect();
        Ok(QueryResult {
            columns: Vec::from([
                ("name", DataType::Utf8),
                ("input", DataType::Utf8),
                ("kind", DataType::Utf8),
                ("watermark", DataType::Utf8),
                ("input_lag", DataType::Int64),
                ("last_error", DataType::Utf8),
                ("definition", DataType::Utf8),
            ]),
            rows,
        })
    }

    /// Stops every view, letting a round in progress finish.
    pub async fn stop_all(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .expect("views lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for view in running {
            stop(view).await;
        }
    }
}

async fn stop(view: Running) {
    let _ = view.stop.send(true);
    let _ = view.task.await;
}

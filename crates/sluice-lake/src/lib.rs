//! The lake: a folder of Delta Lake tables, on the local disk or on S3, written exactly once.
//!
//! ```text
//! <root>/<table>/_delta_log/…   the table's transaction log (Delta protocol)
//! <root>/<table>/part-….parquet the data (in Hive-style partition folders if partitioned)
//! ```
//!
//! The root is `<data-dir>/lake` by default, or `s3://bucket/prefix` (credentials, region and
//! endpoint from the standard `AWS_*` variables, `AWS_ENDPOINT_URL` included). Commits to S3
//! are conditional writes (`If-None-Match`), which S3 and its compatible servers provide: no
//! lock service is needed.
//!
//! Exactly-once rests on one rule: a writer records how far it has read, in the same Delta
//! commit as the rows it wrote, as `txn` actions (application id → version). After a crash it
//! asks the table for those versions and resumes from them, so a row is never written twice or
//! lost: either the commit happened (rows and positions) or it did not (neither). Sluice's
//! pipelines use one application id per source shard and the shard's next sequence number as
//! the version, which only grows.
//!
//! The lake knows its tables' names without listing the store for every query: it lists them
//! when it opens, then keeps the list as it creates and drops tables (the server is the lake's
//! only writer). For the same reason it keeps each table it has opened, and brings it up to date
//! when it is opened again by reading only the commits since (a table's log read from the start
//! is tens of milliseconds before a query has done anything); creating or dropping a table
//! forgets it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{StructType, Transaction};
use deltalake::logstore::ObjectStoreRef;
use deltalake::logstore::object_store::path::Path as StorePath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use url::Url;

/// Why a lake operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid table name {0:?}")]
    InvalidName(String),
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    #[error("table '{table}' has no version {version}")]
    NoSuchVersion { table: String, version: String },
    #[error("invalid lake location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lake's store: {0}")]
    Store(#[from] deltalake::logstore::object_store::Error),
    #[error("table '{table}': {source}")]
    Delta {
        table: String,
        source: Box<DeltaTableError>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lake: a root (a folder or an S3 prefix) of Delta tables.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The root, ending in `/`.
    root: Url,
    /// The store, rooted at `root`.
    store: ObjectStoreRef,
    tables: Arc<RwLock<BTreeSet<String>>>,
    /// The tables opened so far, as of their last opening.
    opened: Arc<Mutex<HashMap<String, LakeTable>>>,
    /// Bumped whenever a table is created or dropped: an opening that saw another value when it
    /// began may have read a table that is not there any more, and keeps nothing.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Lake {
    /// The lake in the local folder `root` (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Lake> {
        let root = root.into();
        let io = |source| Error::Io {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(io)?;
        let root = root.canonicalize().map_err(io)?;
        let tables = std::fs::read_dir(&root)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("_delta_log").is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let url = Url::from_directory_path(&root).map_err(|()| Error::InvalidLocation {
            location: root.display().to_string(),
            reason: "not an absolute path".into(),
        })?;
        Self::with_tables(url, tables)
    }

    /// The lake at `location`: `s3://bucket/prefix`, or a local folder.
    pub async fn open_location(location: &str) -> Result<Lake> {
        let invalid = |reason: &str| Error::InvalidLocation {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let Some(rest) = location.strip_prefix("s3://") else {
            if location.contains("://") {
                return Err(invalid("the lake is s3://bucket/prefix or a folder"));
            }
            return Self::local(location);
        };
        if rest.split('/').next().is_none_or(str::is_empty) {
            return Err(invalid("expected s3://bucket/prefix"));
        }
        deltalake::aws::register_handlers(None);
        let root = Url::parse(&format!("{}/", location.trim_end_matches('/')))
            .map_err(|e| invalid(&e.to_string()))?;
        let lake = Self::with_tables(root, BTreeSet::new())?;
        let listed = lake.store.list_with_delimiter(None).await?;
        let mut tables = BTreeSet::new();
        for folder in listed.common_prefixes {
            let inside = lake.store.list_with_delimiter(Some(&folder)).await?;
            if inside
                .common_prefixes
                .iter()
                .any(|p| p.filename() == Some("_delta_log"))
                && let Some(name) = folder.filename()
            {
                tables.insert(name.to_string());
            }
        }
        *lake.tables.write().expect("tables lock") = tables;
        Ok(lake)
    }

    fn with_tables(root: Url, tables: BTreeSet<String>) -> Result<Lake> {
        let store = deltalake::logstore::store_for(&root, std::iter::empty::<(String, String)>())
            .map_err(|e| Error::InvalidLocation {
            location: root.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Lake {
            root,
            store,
            tables: Arc::new(RwLock::new(tables)),
            opened: Arc::default(),
            generation: Arc::default(),
        })
    }

    /// Where the lake is: `file:///…/` or `s3://bucket/prefix/`.
    pub fn url(&self) -> &Url {
        &self.root
    }

    fn table_url(&self, name: &str) -> Result<Url> {
        if !valid_table_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        self.root
            .join(&format!("{name}/"))
            .map_err(|_| Error::InvalidName(name.to_string()))
    }

    fn has(&self, name: &str) -> bool {
        self.tables.read().expect("tables lock").contains(name)
    }

    fn keep(&self, name: &str) {
        self.forget(name);
        self.tables
            .write()
            .expect("tables lock")
            .insert(name.to_string());
    }

    /// Forgets the opened table `name` (it is being created or dropped).
    fn forget(&self, name: &str) {
        let mut opened = self.opened.lock().expect("opened lock");
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        opened.remove(name);
    }

    /// Opens table `name`, creating it with `schema` if it does not exist, partitioned by the
    /// columns `partition_by` (Hive-style folders, outermost first).
    /// `properties` go into a new table's configuration (see [`LakeTable::property`]).
    pub async fn open_or_create(
        &self,
        name: &str,
        schema: &SchemaRef,
        partition_by: &[String],
        properties: &[(&str, &str)],
    ) -> Result<LakeTable> {
        let delta = |source| Error::Delta {
            table: name.to_string(),
            source: Box::new(source),
        };
        let fields: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| delta(e.into()))?;
        let created = deltalake::operations::create::CreateBuilder::new()
            .with_location(self.table_url(name)?.to_string())
            .with_table_name(name)
            .with_columns(fields.fields().cloned())
            .with_partition_columns(partition_by.iter().cloned())
            .with_configuration(properties.iter().map(|&(k, v)| (k, Some(v))))
            .with_raise_if_key_not_exists(false)
            .with_save_mode(SaveMode::Ignore)
            .await;
        let table = match created {
            Ok(table) => table,
            // Someone created it at the same moment (the first commit wins): open theirs.
            Err(e) => {
                self.keep(name);
                let theirs = self.open(name).await;
                if theirs.is_err() {
                    self.tables.write().expect("tables lock").remove(name);
                }
                return theirs.map_err(|_| delta(e));
            }
        };
        self.keep(name);
        LakeTable::new(name, table).await
    }

    /// Creates table `name` holding `batches` (of `schema`), partitioned by the columns
    /// `partition_by`, in one commit; fails if the table exists.
    pub async fn create(
        &self,
        name: &str,
        schema: &SchemaRef,
        partition_by: &[String],
        batches: Vec<RecordBatch>,
    ) -> Result<LakeTable> {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return self.open_or_create(name, schema, partition_by, &[]).await;
        }
        let delta = |source| Error::Delta {
            table: name.to_string(),
            source: Box::new(source),
        };
        let table = deltalake::DeltaTableBuilder::from_url(self.table_url(name)?)
            .map_err(delta)?
            .build()
            .map_err(delta)?
            .write(batches)
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_partition_columns(partition_by.iter().cloned())
            .await
            .map_err(delta)?;
        self.keep(name);
        LakeTable::new(name, table).await
    }

    /// Opens table `name` at its latest version, if it exists.
    pub async fn open(&self, name: &str) -> Result<LakeTable> {
        let url = self.table_url(name)?;
        if !self.has(name) {
            return Err(Error::TableNotFound(name.to_string()));
        }
        let error = |source| match source {
            DeltaTableError::NotATable(_) => Error::TableNotFound(name.to_string()),
            source => Error::Delta {
                table: name.to_string(),
                source: Box::new(source),
            },
        };
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let opened = self.opened.lock().expect("opened lock").get(name).cloned();
        let table = match opened {
            Some(mut table) => {
                table.refresh().await?;
                table
            }
            None => LakeTable::new(name, deltalake::open_table(url).await.map_err(error)?).await?,
        };
        let mut opened = self.opened.lock().expect("opened lock");
        // A table created or dropped meanwhile may not be this one: keep nothing then.
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation && self.has(name)
        {
            let newer = opened
                .get(name)
                .is_some_and(|t| t.version() > table.version());
            if !newer {
                opened.insert(name.to_string(), table.clone());
            }
        }
        drop(opened);
        Ok(table)
    }

    /// Opens table `name` as it was at `version`: an earlier snapshot, read-only.
    pub async fn open_version(&self, name: &str, version: Version) -> Result<LakeTable> {
        let latest = self.open(name).await?;
        let newest = latest.version().unwrap_or(0);
        let missing = || Error::NoSuchVersion {
            table: name.to_string(),
            version: format!("{version} (its versions are 0 to {newest})"),
        };
        let builder = deltalake::DeltaTableBuilder::from_url(self.table_url(name)?)
            .map_err(|source| latest.error(source))?;
        let builder = match version {
            Version::Number(n) if n > newest => return Err(missing()),
            Version::Number(n) => builder.with_version(n),
            Version::At(t) => builder.with_timestamp(t),
        };
        // The table exists and the version is in range: what fails to load is the version.
        let table = builder.load().await.map_err(|_| missing())?;
        // delta-rs reads an instant before the first commit as that commit; Delta refuses it.
        if let Version::At(t) = version {
            let first = table
                .snapshot()
                .ok()
                .and_then(|s| s.version_timestamp(table.version()?));
            if table.version() == Some(0) && first.is_some_and(|ms| ms > t.timestamp_millis()) {
                return Err(missing());
            }
        }
        LakeTable::new(name, table).await
    }

    /// The names of the lake's tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.tables
            .read()
            .expect("tables lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Deletes table `name` and its data. Missing tables are fine.
    pub async fn drop_table(&self, name: &str) -> Result<()> {
        let url = self.table_url(name)?;
        // Forgotten first: from now on no query opens it while its files go.
        self.tables.write().expect("tables lock").remove(name);
        self.forget(name);
        let prefix = StorePath::from(name);
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        let deleted = self
            .store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await;
        if let Err(e) = deleted {
            // Still there, in part: still listed, so that DROP TABLE can be retried.
            self.keep(name);
            return Err(e.into());
        }
        // A folder keeps its empty subfolders: remove them too.
        if let Ok(dir) = url.to_file_path() {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io {
                        path: dir,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The longest table name: the stream log's limit for stream names, and well within file
/// systems' 255 bytes for a folder (a stream's `_errors` table adds 7).
pub const MAX_TABLE_NAME: usize = 135;

/// Whether `name` may name a table: one folder inside the lake (1 to [`MAX_TABLE_NAME`]
/// letters, digits, `_`, `-`, `.`, not starting with `.`).
pub fn valid_table_name(name: &str) -> bool {
    (1..=MAX_TABLE_NAME).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A version of a table: a commit number, or the last commit at or before an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Number(u64),
    At(chrono::DateTime<chrono::Utc>),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::Number(n) => write!(f, "{n}"),
            Version::At(t) => write!(f, "as of {}", t.to_rfc3339()),
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub files_removed: u64,
    pub files_added: u64,
}

/// What a table's current version holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub version: Option<u64>,
    /// Data files.
    pub files: usize,
    /// Their size, in bytes.
    pub bytes: u64,
    /// Rows, as the files' statistics count them (Sluice always writes them).
    pub rows: u64,
}

/// One Delta table of the lake.
#[derive(Debug, Clone)]
pub struct LakeTable {
    name: String,
    table: DeltaTable,
    /// The `txn` versions (application id → version) recorded by the commits this handle has
    /// read — its latest when it was opened, and every one since — so that a position is
    /// usually known without replaying the table's log (see [`LakeTable::position`]).
    positions: Arc<HashMap<String, i64>>,
}

impl LakeTable {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// The table's version: the number of its last commit.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    fn error(&self, source: DeltaTableError) -> Error {
        Error::Delta {
            table: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// A property of the table's configuration (set when it was created).
    pub fn property(&self, key: &str) -> Option<String> {
        let snapshot = self.table.snapshot().ok()?;
        snapshot.metadata().configuration().get(key).cloned()
    }

    /// The table's columns, as Arrow.
    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        Ok(self
            .table
            .snapshot()
            .map_err(|e| self.error(e))?
            .snapshot()
            .arrow_schema())
    }

    /// The version the last commit recorded for application `app_id`, if any. Known at once
    /// when a commit this handle read recorded it (every commit of a pipeline records all its
    /// positions); else from the table's log.
    pub async fn position(&self, app_id: &str) -> Result<Option<i64>> {
        if let Some(&version) = self.positions.get(app_id) {
            return Ok(Some(version));
        }
        let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.error(e))
    }

    /// A handle on `table` that knows the positions its latest commit recorded.
    async fn new(name: &str, table: DeltaTable) -> Result<LakeTable> {
        let mut handle = LakeTable {
            name: name.to_string(),
            table,
            positions: Arc::default(),
        };
        if let Some(version) = handle.version() {
            handle.read_positions(version..=version).await?;
        }
        Ok(handle)
    }

    /// Reads the `txn` actions of the commits `versions`, oldest first.
    async fn read_positions(&mut self, versions: std::ops::RangeInclusive<u64>) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Action {
            txn: Option<Txn>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Txn {
            app_id: String,
            version: i64,
        }
        let mut positions = HashMap::clone(&self.positions);
        for version in versions {
            let entry = self
                .table
                .log_store()
                .read_commit_entry(version)
                .await
                .map_err(|e| self.error(e))?;
            // A commit already cleaned up (after a checkpoint): its positions come from the
            // log when asked.
            let Some(entry) = entry else { continue };
            for line in entry.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(Action { txn: Some(txn) }) = serde_json::from_slice(line) {
                    positions.insert(txn.app_id, txn.version);
                }
            }
        }
        self.positions = Arc::new(positions);
        Ok(())
    }

    /// Appends `batches` and records `positions` (application id, version) in one commit.
    /// Positions must only grow: the caller resumes from them after a crash. With no rows, the
    /// commit records the positions alone (so that a source of nothing but bad records is not
    /// read again from the start after every restart).
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        positions: Vec<(String, i64)>,
    ) -> Result<()> {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() && positions.is_empty() {
            return Ok(());
        }
        let transactions = positions
            .into_iter()
            .map(|(app, version)| Transaction::new(app, version))
            .collect();
        let props = CommitProperties::default().with_application_transactions(transactions);
        if batches.is_empty() {
            let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            };
            CommitBuilder::from(props)
                .with_actions(vec![])
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(|e| self.error(e))?;
            return self.refresh().await;
        }
        let before = self.version();
        let table = self
            .table
            .clone()
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await
            .map_err(|e| self.error(e))?;
        self.table = table;
        self.caught_up(before).await
    }

    /// Upserts `rows` by the columns `keys`, recording `positions`, in one commit (Delta
    /// MERGE): a row whose key the table holds replaces that row, the others are inserted. The
    /// rows carry one more column, the boolean `delete`: a row flagged true deletes its key's
    /// row instead. A key compares equal to the same key, NULL to NULL.
    pub async fn upsert(
        &mut self,
        rows: Vec<RecordBatch>,
        keys: &[String],
        delete: &str,
        positions: Vec<(String, i64)>,
    ) -> Result<()> {
        use deltalake::datafusion::common::Column;
        use deltalake::datafusion::logical_expr::{Expr, Operator, binary_expr, lit, not};
        use deltalake::datafusion::prelude::SessionContext;

        let rows: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
        if rows.is_empty() {
            return self.append(Vec::new(), positions).await;
        }
        let source = |name: &str| Expr::Column(Column::new(Some("source"), name));
        let target = |name: &str| Expr::Column(Column::new(Some("target"), name));
        let predicate = keys
            .iter()
            .map(|k| binary_expr(target(k), Operator::IsNotDistinctFrom, source(k)))
            .reduce(Expr::and)
            .unwrap_or(lit(true));
        let columns: Vec<String> = self
            .table
            .snapshot()
            .map_err(|e| self.error(e))?
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        let values: Vec<&String> = columns.iter().filter(|c| !keys.contains(c)).collect();
        let frame = SessionContext::new()
            .read_batches(rows)
            .map_err(|e| self.error(e.into()))?;
        let transactions = positions
            .into_iter()
            .map(|(app, version)| Transaction::new(app, version))
            .collect();
        let mut merge = self
            .table
            .clone()
            .merge(frame, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(
                CommitProperties::default().with_application_transactions(transactions),
            )
            .when_matched_delete(|d| d.predicate(source(delete)))
            .map_err(|e| self.error(e))?;
        if !values.is_empty() {
            merge = merge
                .when_matched_update(|update| {
                    values
                        .iter()
                        .fold(update, |u, c| u.update(c.as_str(), source(c)))
                })
                .map_err(|e| self.error(e))?;
        }
        let (table, _) = merge
            .when_not_matched_insert(|insert| {
                columns
                    .iter()
                    .fold(insert.predicate(not(source(delete))), |i, c| {
                        i.set(c.as_str(), source(c))
                    })
            })
            .map_err(|e| self.error(e))?
            .await
            .map_err(|e| self.error(e))?;
        let before = self.version();
        self.table = table;
        self.caught_up(before).await
    }

    /// The rows the commits `from..=to` added, read through Delta's change data feed (the
    /// table must have been created with `delta.enableChangeDataFeed`): inserts only, each with
    /// the `_commit_version` and `_commit_timestamp` of the commit that added it. Commits that
    /// change no data (a compaction) add none.
    pub async fn appended(&self, from: u64, to: u64) -> Result<Vec<RecordBatch>> {
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::compute::filter_record_batch;
        use deltalake::datafusion::physical_plan::collect;
        use deltalake::datafusion::prelude::SessionContext;

        let ctx = SessionContext::new();
        let plan = self
            .table
            .clone()
            .scan_cdf()
            .with_starting_version(from)
            .with_ending_version(to)
            .build(&ctx.state(), None)
            .await
            .map_err(|e| self.error(e))?;
        let batches = collect(plan, ctx.task_ctx())
            .await
            .map_err(|e| self.error(e.into()))?;
        batches
            .into_iter()
            .map(|batch| {
                let Some(change) = batch.column_by_name("_change_type") else {
                    return Ok(batch);
                };
                let change = deltalake::arrow::compute::cast(
                    change,
                    &deltalake::arrow::datatypes::DataType::Utf8,
                )
                .map_err(|e| self.error(e.into()))?;
                let inserts: deltalake::arrow::array::BooleanArray = change
                    .as_string::<i32>()
                    .iter()
                    .map(|c| Some(c == Some("insert")))
                    .collect();
                let kept =
                    filter_record_batch(&batch, &inserts).map_err(|e| self.error(e.into()))?;
                let keep: Vec<usize> = (0..kept.num_columns())
                    .filter(|&i| kept.schema().field(i).name() != "_change_type")
                    .collect();
                kept.project(&keep).map_err(|e| self.error(e.into()))
            })
            .collect()
    }

    /// What the table's current version holds, from its log (no data file is read).
    pub fn stats(&self) -> Result<TableStats> {
        let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
        let mut stats = TableStats {
            version: self.version(),
            ..TableStats::default()
        };
        for file in snapshot.log_data().iter() {
            stats.files += 1;
            stats.bytes += file.size().max(0) as u64;
            stats.rows += file.num_records().unwrap_or(0) as u64;
        }
        Ok(stats)
    }

    /// Rewrites the table's small files into fewer, larger ones (Delta OPTIMIZE, bin-packing) in
    /// one commit that changes no row and keeps every recorded position. Readers of older
    /// versions keep their files until they are vacuumed.
    pub async fn compact(&mut self) -> Result<Compaction> {
        let (table, metrics) = self
            .table
            .clone()
            .optimize()
            .with_type(deltalake::operations::optimize::OptimizeType::Compact)
            .with_max_concurrent_tasks(1)
            .await
            .map_err(|e| self.error(e))?;
        self.table = table;
        Ok(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
        })
    }

    /// Deletes the data files that no version younger than `retain` (default: the table's
    /// `deletedFileRetentionDuration`, 7 days) reads, and that the current version does not
    /// read. Time travel to older versions stops working. Returns the files deleted (or that
    /// would be, with `dry_run`).
    pub async fn vacuum(
        &mut self,
        retain: Option<std::time::Duration>,
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let mut vacuum = self.table.clone().vacuum().with_dry_run(dry_run);
        if let Some(retain) = retain {
            let retain = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
            vacuum = vacuum
                .with_retention_period(retain)
                .with_enforce_retention_duration(false);
        }
        let (table, metrics) = vacuum.await.map_err(|e| self.error(e))?;
        self.table = table;
        Ok(metrics.files_deleted)
    }

    /// Reloads the table to its latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        let before = self.version();
        let name = self.name.clone();
        self.table
            .update_incremental(None)
            .await
            .map_err(|source| Error::Delta {
                table: name,
                source: Box::new(source),
            })?;
        self.caught_up(before).await
    }

    /// Reads the positions of the commits after `before` up to the table's version. Past a
    /// hundred commits, only the newest is read (every commit of a pipeline records all its
    /// positions), and what it does not record comes from the log when asked.
    async fn caught_up(&mut self, before: Option<u64>) -> Result<()> {
        const MOST_COMMITS: u64 = 100;
        let Some(now) = self.version() else {
            return Ok(());
        };
        let from = before.map_or(0, |b| b + 1);
        if from > now {
            return Ok(());
        }
        if now - from >= MOST_COMMITS {
            self.positions = Arc::default();
            return self.read_positions(now..=now).await;
        }
        self.read_positions(from..=now).await
    }
}

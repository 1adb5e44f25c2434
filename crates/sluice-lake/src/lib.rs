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
//!
//! Where each guarantee is kept:
//!
//! - this file, [`Lake`]: the root and its store, the table names (one folder each, checked by
//!   [`valid_table_name`]), opening (latest or [`Version`]), creating and dropping tables, and
//!   the cache of opened tables;
//! - `table.rs`, [`LakeTable`]: a table's positions and the commits that record them (append,
//!   upsert), the rows commits added (change data feed), statistics, compaction and vacuum;
//! - `documents.rs`, [`Documents`]: the small JSON documents kept beside the tables (saved
//!   dashboards), shared by every process of the lake;
//! - `error.rs`, [`Error`]: why an operation failed, and who must act on it (its
//!   [`sluice_error::Class`]): a store that cannot be reached is the environment's, never the
//!   user's.

mod documents;
mod error;
mod table;

pub use deltalake::DeltaTableError;
pub use documents::Documents;
pub use error::{Error, Result, class_of_delta};
pub use table::{Compaction, LakeTable, TableStats, Upsert};

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::logstore::ObjectStoreRef;
use deltalake::logstore::object_store::path::Path as StorePath;
use deltalake::protocol::SaveMode;
use futures::{StreamExt, TryStreamExt};
use url::Url;

/// A lake: a root (a folder or an S3 prefix) of Delta tables.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The root, ending in `/`.
    root: Url,
    /// The store, rooted at `root`.
    store: ObjectStoreRef,
    /// The names of the lake's tables: listed when it opens, then kept as tables are created
    /// and dropped.
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
        *lake.tables.write().expect("tables lock") = lake.listed_tables(&BTreeSet::new()).await?;
        Ok(lake)
    }

    /// The tables the store holds now: its folders that hold a `_delta_log`. A folder of
    /// `known` is taken to be the table it was without looking inside (one listing, not one a
    /// table: a cluster's workers rescan every second).
    async fn listed_tables(&self, known: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let listed = self.store.list_with_delimiter(None).await?;
        let mut tables = BTreeSet::new();
        for folder in listed.common_prefixes {
            if let Some(name) = folder.filename().filter(|n| known.contains(*n)) {
                tables.insert(name.to_string());
                continue;
            }
            let inside = self.store.list_with_delimiter(Some(&folder)).await?;
            if inside
                .common_prefixes
                .iter()
                .any(|p| p.filename() == Some("_delta_log"))
                && let Some(name) = folder.filename()
            {
                tables.insert(name.to_string());
            }
        }
        Ok(tables)
    }

    /// Lists the lake's tables again: where other processes create and drop tables in it (a
    /// cluster's workers), what they did is known from now on.
    /// A table this process created or dropped while the store was listed is left for the
    /// next rescan.
    pub async fn rescan(&self) -> Result<()> {
        let generation = |lake: &Lake| lake.generation.load(std::sync::atomic::Ordering::SeqCst);
        let before = generation(self);
        let known: BTreeSet<String> = self.table_names().into_iter().collect();
        let listed = self.listed_tables(&known).await?;
        if known == listed || generation(self) != before {
            return Ok(());
        }
        for name in known.symmetric_difference(&listed) {
            self.forget(name);
        }
        *self.tables.write().expect("tables lock") = listed;
        Ok(())
    }

    /// The object store of `url` (`s3://bucket/…`, or a folder), reached as the lake reaches
    /// its own (on S3, the standard `AWS_*` variables): for reading other files there, as
    /// `sluice replay` does.
    pub fn store_for(url: &Url) -> Result<ObjectStoreRef> {
        if url.scheme() == "s3" {
            deltalake::aws::register_handlers(None);
        }
        deltalake::logstore::store_for(url, std::iter::empty::<(String, String)>()).map_err(|e| {
            Error::InvalidLocation {
                location: url.to_string(),
                reason: e.to_string(),
            }
        })
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

    /// The JSON documents of `kind` kept in the lake beside its tables (see [`Documents`]).
    pub fn documents(&self, kind: &str) -> Documents {
        self.files(kind, "json")
    }

    /// The documents of `kind` in another format: files named `<name>.<extension>`.
    pub fn files(&self, kind: &str, extension: &str) -> Documents {
        Documents::new(self.store.clone(), kind, extension)
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
        // A table the lake knows is opened (from what it keeps): a failure to reach the store
        // is that, never a reason to forget the table.
        if self.has(name) {
            match self.open(name).await {
                Err(Error::TableNotFound(_)) => {}
                opened => return opened,
            }
        }
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
            // Someone created it at the same moment (the first commit wins): open theirs. (The
            // lake did not know it: if it cannot be opened, it stays unknown.)
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
        // delta-rs' write refuses an existing table only if it was loaded: look first.
        match deltalake::open_table(self.table_url(name)?).await {
            Ok(_) => return Err(Error::TableExists(name.to_string())),
            Err(DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_)) => {}
            Err(e) => return Err(delta(e)),
        }
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
    /// The commit of this number (0 is the table's creation).
    Number(u64),
    /// The newest commit at or before this instant; an instant before the table's first commit
    /// has no version.
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

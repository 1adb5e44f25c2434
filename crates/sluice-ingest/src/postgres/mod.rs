//! PostgreSQL sources (`CREATE SOURCE … FROM POSTGRES`): a door that reads a database's tables
//! through logical replication (`pgoutput`, protocol 1, whole transactions in commit order) and
//! appends each table's changes, as Debezium envelopes ([`values::envelope`]), to a change
//! stream of the table's name. Everything downstream — the history, the mirror, exactly once,
//! queries, status — is the change stream's (`sluice_pipeline::mirror`).
//!
//! ```text
//!  slot (pgoutput) ─► Begin … Insert/Update/Delete/Truncate … Commit{end_lsn}
//!     ─► each table's changes of the transactions received, appended together (its stream:
//!        1 shard)                                                 source.lsn = the change's LSN
//!     ─► the slot is told end_lsn once every table's pipeline has committed past those records
//! ```
//!
//! Invariants:
//! - **Snapshot without gap or duplicate.** `CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`; each
//!   table copied in that snapshot as `r` changes at the slot's consistent point, after a `t`
//!   at the same point (so a snapshot started again after a crash first erases the rows of the
//!   one before: the mirror deletes every row older than a truncate); then streaming from the
//!   consistent point. The shelf's `SnapshotDone` ([`Shelf`]) says the copy ended; its
//!   `SlotMade`, written before the slot is made, says the slot is Sluice's. A slot found
//!   without a finished copy is somebody else's (the source stops), or Sluice's, copied into
//!   now by another worker (this one stands by), or a copy cut short by a crash: then the slot
//!   is dropped, made anew and the tables copied again.
//! - **Acknowledged after the lake.** The slot's confirmed position moves to a transaction's
//!   `end_lsn` only once each table's pipeline has committed past that transaction's records
//!   (the pipelines' positions); a `pg_logical_emit_message` heartbeat every 10 s is a
//!   transaction of no table, acknowledged at once, which moves an idle database's slot along.
//! - **Nothing twice in the log.** A restart resumes at the slot's confirmed position and skips,
//!   table by table, every transaction whose `end_lsn` that table's stream's last record
//!   already carries (`source.end_lsn`, read once the slot is the reader's, from the log's
//!   shard or the cluster's topic: [`Downstream::tail`]). A reader whose connection ended
//!   appends nothing more (another may hold the slot a moment later). A change that does get
//!   in twice (an append under way as its reader's connection went) is a repeat the history
//!   and the mirror drop by its event id (`lsn/op/key`). Transactions sent again from before a
//!   column was added are read with null in it.
//! - **Columns added, or the table stops.** A nullable column added without a default (the
//!   table's rows so far hold null in it) is added to the table's stream, and its pipeline
//!   adds it to the lake's tables before the first change that has it is appended. Any other
//!   change of a table's columns stops that table (kept on the shelf, shown by
//!   `SHOW SOURCES`), after every change before it; the other tables go on. In a cluster the
//!   column reaches the catalog first, and the lake's tables with this worker's pipeline; the
//!   worker holding the stream's partition commits nothing more until it has followed it (its
//!   raw pipeline refuses a table with a column its definition lacks).
//! - **One reader, the slot's.** In a cluster the sources are kept in the lake and every worker
//!   runs a reader of each ([`Sources::follow`]); PostgreSQL lets one of them hold the slot at a
//!   time, and the others stand by (`standby`, [`ReaderError::SlotBusy`]), trying again every
//!   [`RETRY`]. When the reader's worker dies its connection closes, and the next to try takes
//!   the slot over from where it was acknowledged.
//! - **Stops, never skips.** An invalidated or missing slot stops the source with the reason
//!   in its status; a table without a primary key (or outside the publication) is refused at
//!   `CREATE SOURCE`. A source's streams are dropped with it, never alone.

mod reader;
mod shelf;
mod tables;
pub mod values;

pub use reader::{HEARTBEAT, Reader, ReaderError, TableOut};
pub use shelf::{Directory, Kept, Shelf};
pub use tables::{Described, TableError, describe, literal, query};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pg_walstream::{CancellationToken, PgReplicationConnection};
use serde::{Deserialize, Serialize};
use sluice_log::{Log, Retention, Stream, StreamOptions, Tail};
use sluice_sql::{CreateSource, PostgresSource, StreamDefinition};

/// What a source needs of the server around it: where its tables' streams hold their records,
/// and the pipelines that take them to the lake.
pub trait Downstream: Send + Sync {
    /// How far the lake has taken `stream`: the position its pipeline has taken every record
    /// before, in every table (`None` before it has taken any).
    fn taken<'a>(&'a self, stream: &'a Arc<Stream>) -> BoxFuture<'a, Option<u64>>;

    /// Where `stream`'s records are, with its last: the log's own shard ([`Stream::tail`]), or
    /// a cluster's topic.
    fn tail<'a>(&'a self, stream: &'a Arc<Stream>) -> BoxFuture<'a, std::io::Result<Tail>>;

    /// Starts `stream`'s pipeline again, to read its definition anew (a column was added to
    /// it); returns once it runs.
    fn reopen<'a>(&'a self, stream: &'a str) -> futures::future::BoxFuture<'a, ()>;
}

/// Why a source cannot be created, dropped or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `CREATE SOURCE` of a name taken.
    #[error("source '{0}' exists")]
    Exists(String),
    /// `DROP SOURCE` of a name no source has.
    #[error("source '{0}' does not exist")]
    NotFound(String),
    /// A table cannot be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The password's variable is not set.
    #[error("the environment variable {0} (password_env) is not set")]
    NoPassword(String),
    /// A table's stream (or one of its tables) would take a name in use.
    #[error("table {table} would be '{name}', and {taken}: name it otherwise with AS")]
    NameTaken {
        /// `schema.table`.
        table: String,
        /// The name in use.
        name: String,
        /// What uses it.
        taken: String,
    },
    /// PostgreSQL, or the connection to it.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] pg_walstream::ReplicationError),
    /// The log.
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    /// The source's files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A source as the shelf keeps it: never its password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    name: String,
    definition: PostgresSource,
}

/// What `SHOW SOURCES` says of a source's table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableStatus {
    /// The source's name.
    pub source: String,
    /// The table, as `schema.table`.
    pub table: String,
    /// Its stream (and mirror).
    pub stream: String,
    /// The source's replication slot.
    pub slot: String,
    /// `starting`, then `reading` once the slot is this server's; `standby` while another
    /// worker of the cluster (or another client) holds it, `retrying` after an error, or
    /// `stopped` on one that needs a person.
    pub state: &'static str,
    /// Changes in its stream that the lake has not taken yet.
    pub behind: u64,
    /// The last error, while it lasts.
    pub last_error: Option<String>,
}

/// The sources of a server, each read by a task of its own.
pub struct Sources {
    shelf: Arc<dyn Shelf>,
    log: Arc<Log>,
    downstream: Arc<dyn Downstream>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serializes `CREATE SOURCE`, `DROP SOURCE` and [`Sources::follow`].
    ddl: tokio::sync::Mutex<()>,
}

struct Running {
    stored: Stored,
    stop: CancellationToken,
    state: Arc<Mutex<(&'static str, Option<String>)>>,
    /// Its tables stopped, and why ([`Reader::stopped`]).
    stopped: Arc<Mutex<BTreeMap<String, String>>>,
}

/// How long a reader waits after a failure before it connects again (and a reader standing by
/// before it tries the slot again).
pub const RETRY: Duration = Duration::from_secs(2);

impl Sources {
    /// The sources `shelf` keeps, read into `log`'s streams once [`Sources::follow`] starts
    /// them. From now on the log refuses to drop a source's stream (`DROP SOURCE` drops them).
    pub fn new(
        shelf: Arc<dyn Shelf>,
        log: Arc<Log>,
        downstream: Arc<dyn Downstream>,
    ) -> Arc<Sources> {
        let sources = Arc::new(Sources {
            shelf,
            log: log.clone(),
            downstream,
            running: Mutex::new(BTreeMap::new()),
            ddl: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&sources);
        log.guard_drops(Arc::new(move |stream| {
            let sources = weak.upgrade()?;
            let running = sources.running.lock().expect("sources");
            let (name, table) = running.values().find_map(|r| {
                let tables = r.stored.definition.tables.iter();
                let table = tables.into_iter().find(|t| t.name == stream)?;
                Some((r.stored.name.clone(), table.qualified()))
            })?;
            Some(format!(
                "it is table {table} of PostgreSQL source '{name}': DROP SOURCE {name} drops it"
            ))
        }));
        sources
    }

    /// Makes the sources read here the shelf's: starts those it keeps whose streams the log
    /// has (in a cluster, a source another worker created, once the catalog's streams are
    /// followed), and stops those it keeps no more (dropped on another worker). A server
    /// calls it once at start; a cluster's worker every second.
    pub async fn follow(&self) -> Result<(), SourceError> {
        // A CREATE or DROP in progress here (waiting for the database) holds the lock: the
        // next call follows, and this one does not hold up the caller's other work.
        let Ok(_ddl) = self.ddl.try_lock() else {
            return Ok(());
        };
        let mut kept = Vec::new();
        for name in self.shelf.names().await? {
            let Some(bytes) = self.shelf.get(&name, Kept::Definition).await? else {
                continue; // dropped since it was listed
            };
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => kept.push(stored),
                Err(e) => tracing::error!(source = name, error = %e, "cannot read a source"),
            }
        }
        let gone: Vec<Running> = {
            let mut running = self.running.lock().expect("sources");
            let names: Vec<String> = (running.iter())
                .filter(|(name, r)| !kept.iter().any(|k| &&k.name == name && k == &r.stored))
                .map(|(name, _)| name.clone())
                .collect();
            (names.iter()).filter_map(|n| running.remove(n)).collect()
        };
        for running in gone {
            tracing::info!(
                source = running.stored.name,
                "a source was dropped elsewhere"
            );
            running.stop.cancel();
        }
        for stored in kept {
            let streams = &stored.definition.tables;
            let here = self
                .running
                .lock()
                .expect("sources")
                .contains_key(&stored.name);
            // A cluster's streams come with the catalog, a moment after the source; on one
            // server a stream missing is the source's fault, which its status then says.
            let known = || streams.iter().all(|t| self.log.stream(&t.name).is_ok());
            if !here && (!self.log.shared() || known()) {
                self.start(stored);
            }
        }
        Ok(())
    }

    /// `CREATE SOURCE`: reads the tables' definitions from the database, keeps the source (of
    /// two creating one name, one is told it exists), creates a change stream a table (refused
    /// if a name is taken: by a stream, or as `name_taken` says of the lake's tables), and
    /// starts reading it (the slot and the snapshot).
    pub async fn create_source(
        &self,
        create: CreateSource,
        name_taken: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SourceError> {
        let _ddl = self.ddl.lock().await;
        let exists = match create.if_not_exists {
            true => Ok(()),
            false => Err(SourceError::Exists(create.name.clone())),
        };
        if self
            .shelf
            .get(&create.name, Kept::Definition)
            .await?
            .is_some()
        {
            return exists;
        }
        let source = create.definition.clone();
        let plain = conninfo(&source)?;
        let described = tokio::task::spawn_blocking(move || {
            let mut connection = PgReplicationConnection::connect(&plain)?;
            Ok::<_, SourceError>(describe(&mut connection, &source)?)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        for d in &described {
            let name = &d.table.name;
            for table in [
                name.clone(),
                format!("{name}_changes"),
                format!("{name}_errors"),
            ] {
                let taken = match self.log.stream(&table) {
                    Ok(_) => Some("a stream has that name".to_string()),
                    Err(_) => name_taken(&table),
                };
                if let Some(taken) = taken {
                    return Err(SourceError::NameTaken {
                        table: d.table.qualified(),
                        name: table,
                        taken,
                    });
                }
            }
        }
        let stored = Stored {
            name: create.name,
            definition: create.definition,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
        if !(self.shelf.put(&stored.name, Kept::Definition, json, true)).await? {
            return exists;
        }
        // What an earlier source of the name left (a drop that did not finish) is not this
        // one's.
        for kept in [Kept::SlotMade, Kept::SnapshotDone, Kept::Stopped] {
            self.shelf.forget(&stored.name, kept).await?;
        }
        let mut created: Vec<String> = Vec::new();
        for d in &described {
            let options = StreamOptions {
                shards: 1,
                retention: Retention::default(),
                definition: d.definition.to_log(),
                elsewhere: Some(format!(
                    "PostgreSQL source '{}' (table {}): change the table there",
                    stored.name,
                    d.table.qualified()
                )),
            };
            let (log, name) = (self.log.clone(), d.table.name.clone());
            let made = tokio::task::spawn_blocking(move || log.create_stream(&name, options))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Err(e) = made {
                // Nothing of a source not created stays behind.
                for name in created {
                    let log = self.log.clone();
                    let _ = tokio::task::spawn_blocking(move || log.drop_stream(&name)).await;
                }
                self.shelf.forget(&stored.name, Kept::Definition).await?;
                return Err(e.into());
            }
            created.push(d.table.name.clone());
        }
        self.start(stored);
        Ok(())
    }

    /// Starts reading `stored`: its reader retried after each failure, until the source is
    /// dropped or the server stops.
    fn start(&self, stored: Stored) {
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(("starting", None)));
        let stopped = Arc::new(Mutex::new(BTreeMap::new()));
        let reader = self.reader(&stored, stopped.clone());
        let (downstream, task_stop) = (self.downstream.clone(), stop.clone());
        let (name, task_state) = (stored.name.clone(), state.clone());
        tokio::spawn(async move {
            let mut reader = match reader {
                Ok(reader) => reader,
                Err(e) => {
                    *task_state.lock().expect("state") = ("stopped", Some(e.to_string()));
                    return;
                }
            };
            while !task_stop.is_cancelled() {
                let reading = || *task_state.lock().expect("state") = ("reading", None);
                let result = reader.run(downstream.clone(), &task_stop, reading).await;
                let Err(e) = result else { continue };
                let state = match e {
                    ReaderError::SlotExists(_)
                    | ReaderError::SlotGone(_)
                    | ReaderError::SlotLost(_) => "stopped",
                    ReaderError::SlotBusy(_) => "standby",
                    _ => "retrying",
                };
                match state {
                    "standby" => tracing::debug!(source = name, "a PostgreSQL source stands by"),
                    _ => tracing::warn!(source = name, error = %e, "a PostgreSQL source failed"),
                }
                *task_state.lock().expect("state") = (state, Some(e.to_string()));
                if state == "stopped" {
                    return;
                }
                tokio::select! {
                    () = task_stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        });
        let running = Running {
            stored,
            stop,
            state,
            stopped,
        };
        (self.running.lock().expect("sources")).insert(running.stored.name.clone(), running);
    }

    /// The reader of `stored`, its tables' streams as the log holds them, keeping the tables
    /// it stops in `stopped`.
    fn reader(
        &self,
        stored: &Stored,
        stopped: Arc<Mutex<BTreeMap<String, String>>>,
    ) -> Result<Reader, SourceError> {
        let source = &stored.definition;
        let mut tables = std::collections::HashMap::new();
        for table in &source.tables {
            let stream = self.log.stream(&table.name)?;
            let definition = StreamDefinition::from_log(&stream.meta().definition);
            let columns = (definition.columns.iter())
                .map(|c| (c.name.clone(), c.data_type))
                .collect();
            tables.insert(table.qualified(), TableOut { stream, columns });
        }
        let plain = conninfo(source)?;
        let separator = if plain.contains('?') { '&' } else { '?' };
        Ok(Reader {
            conninfo: format!("{plain}{separator}replication=database"),
            slot: source.slot.clone(),
            publication: source.publication.clone(),
            tables,
            source: stored.name.clone(),
            shelf: self.shelf.clone(),
            snapshot: source.snapshot,
            heartbeat: HEARTBEAT,
            log: self.log.clone(),
            stopped,
        })
    }

    /// `DROP SOURCE`: forgets it (in a cluster every worker stops reading it within a second),
    /// stops reading it, drops its replication slot (a slot left behind holds WAL for ever)
    /// and its tables' streams. What it dropped, for the answer. A slot that cannot be dropped
    /// (the database unreachable, the slot still in use) drops nothing: the source is kept and
    /// reads on, and the error says why.
    pub async fn drop_source(
        &self,
        name: &str,
        if_exists: bool,
    ) -> Result<Vec<String>, SourceError> {
        let _ddl = self.ddl.lock().await;
        let Some(kept) = self.shelf.get(name, Kept::Definition).await? else {
            return match if_exists {
                true => Ok(Vec::new()),
                false => Err(SourceError::NotFound(name.to_string())),
            };
        };
        let stored: Stored = serde_json::from_slice(&kept).map_err(std::io::Error::other)?;
        self.shelf.forget(name, Kept::Definition).await?;
        if let Some(running) = self.running.lock().expect("sources").remove(name) {
            running.stop.cancel();
        }
        let source = stored.definition.clone();
        let dropped_slot = match drop_slot(conninfo(&source)?, source.slot.clone()).await {
            Ok(dropped) => dropped,
            Err(e) => {
                // Nothing dropped: the source reads on.
                (self.shelf.put(name, Kept::Definition, kept, true)).await?;
                self.start(stored);
                return Err(e);
            }
        };
        let mut dropped = Vec::new();
        if dropped_slot {
            dropped.push(format!("replication slot {}", source.slot));
        }
        for table in &source.tables {
            let (log, stream) = (self.log.clone(), table.name.clone());
            match tokio::task::spawn_blocking(move || log.drop_stream(&stream))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                Ok(()) => dropped.push(format!("stream {}", table.name)),
                Err(sluice_log::Error::StreamNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for kept in [Kept::SlotMade, Kept::SnapshotDone, Kept::Stopped] {
            self.shelf.forget(name, kept).await?;
        }
        Ok(dropped)
    }

    /// Every source's tables and how their reading goes.
    pub async fn list(&self) -> Vec<TableStatus> {
        let mut tables = Vec::new();
        let mut streams = Vec::new();
        {
            let running = self.running.lock().expect("sources");
            for r in running.values() {
                let (state, last_error) = r.state.lock().expect("state").clone();
                let stopped = r.stopped.lock().expect("stopped");
                for table in &r.stored.definition.tables {
                    let table_stopped = stopped.get(&table.qualified());
                    tables.push(TableStatus {
                        source: r.stored.name.clone(),
                        table: table.qualified(),
                        stream: table.name.clone(),
                        slot: r.stored.definition.slot.clone(),
                        state: if table_stopped.is_some() {
                            "stopped"
                        } else {
                            state
                        },
                        behind: 0,
                        last_error: table_stopped.cloned().or_else(|| last_error.clone()),
                    });
                    streams.push(self.log.stream(&table.name).ok());
                }
            }
        }
        for (table, stream) in tables.iter_mut().zip(streams) {
            let Some(stream) = stream else { continue };
            let Ok(tail) = self.downstream.tail(&stream).await else {
                continue;
            };
            let taken = self.downstream.taken(&stream).await.unwrap_or(tail.first);
            table.behind = tail.next.saturating_sub(taken.max(tail.first));
        }
        tables
    }

    /// Stops every reader.
    pub fn stop_all(&self) {
        for running in self.running.lock().expect("sources").values() {
            running.stop.cancel();
        }
    }
}

/// Drops replication slot `slot` of the database `plain` connects to (a connection string
/// without `replication`); whether it was there.
async fn drop_slot(plain: String, slot: String) -> Result<bool, SourceError> {
    tokio::task::spawn_blocking(move || {
        let mut connection = PgReplicationConnection::connect(&plain)?;
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {}",
            literal(&slot)
        );
        // The reader's connection may hold the slot a moment longer (in a cluster, until the
        // worker holding it has followed the drop: about a second).
        let mut tries = 0;
        loop {
            match query(&mut connection, &sql) {
                Ok(rows) => return Ok(!rows.is_empty()),
                Err(e) if held_elsewhere(&e) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(SourceError::from(e)),
            }
        }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// Whether PostgreSQL's error `e` says another connection holds the slot.
fn held_elsewhere(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("is active for PID")
}

/// The source's connection string with its password, from its variable.
fn conninfo(source: &PostgresSource) -> Result<String, SourceError> {
    let Some(variable) = &source.password_env else {
        return Ok(source.url.clone());
    };
    let password =
        std::env::var(variable).map_err(|_| SourceError::NoPassword(variable.clone()))?;
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let separator = if source.url.contains('?') { '&' } else { '?' };
    Ok(format!("{}{separator}password={encoded}", source.url))
}

impl sluice_error::Classify for SourceError {
    fn class(&self) -> sluice_error::Class {
        use sluice_error::Class;
        match self {
            SourceError::Exists(_) | SourceError::NameTaken { .. } => Class::Exists,
            SourceError::NotFound(_) => Class::UndefinedTable,
            SourceError::Table(TableError::Unfit { .. }) | SourceError::NoPassword(_) => {
                Class::InvalidValue
            }
            SourceError::Table(_) | SourceError::Postgres(_) => Class::Unavailable,
            SourceError::Log(e) => e.class(),
            SourceError::Io(_) => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SourceError::Exists(_) => "source_exists",
            SourceError::NameTaken { .. } => "name_taken",
            SourceError::NotFound(_) => "source_not_found",
            SourceError::Table(TableError::Unfit { .. }) => "unfit_table",
            SourceError::NoPassword(_) => "no_password",
            SourceError::Table(_) | SourceError::Postgres(_) => "source_unavailable",
            SourceError::Log(e) => e.code(),
            SourceError::Io(_) => "internal",
        }
    }
}

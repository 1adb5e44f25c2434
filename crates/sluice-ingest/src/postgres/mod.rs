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
//!   consistent point. `snapshot.done` in the source's directory (synced) says the copy ended.
//! - **Acknowledged after the lake.** The slot's confirmed position moves to a transaction's
//!   `end_lsn` only once each table's pipeline has committed past that transaction's records
//!   (the pipelines' positions); a `pg_logical_emit_message` heartbeat every 10 s is a
//!   transaction of no table, acknowledged at once, which moves an idle database's slot along.
//! - **Nothing twice in the log.** A restart resumes at the slot's confirmed position and skips,
//!   table by table, every transaction whose `end_lsn` that table's stream's last record
//!   already carries (`source.end_lsn`); a change that does get in twice is a repeat the
//!   history and the mirror drop by its event id (`lsn/op/key`). Transactions sent again from
//!   before a column was added are read with null in it.
//! - **Columns added, or the table stops.** A nullable column added without a default (the
//!   table's rows so far hold null in it) is added to the table's stream, and its pipeline
//!   adds it to the lake's tables before the first change that has it is appended. Any other
//!   change of a table's columns stops that table (kept in `stopped.json`, shown by
//!   `SHOW SOURCES`), after every change before it; the other tables go on.
//! - **Stops, never skips.** An invalidated or missing slot stops the source with the reason
//!   in its status; a table without a primary key (or outside the publication) is refused at
//!   `CREATE SOURCE`. A source's streams are dropped with it, never alone.

mod reader;
mod tables;
pub mod values;

pub use reader::{HEARTBEAT, Reader, ReaderError, TableOut};
pub use tables::{Described, TableError, describe, literal, query};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_walstream::{CancellationToken, PgReplicationConnection};
use serde::{Deserialize, Serialize};
use sluice_log::{Log, Retention, StreamOptions};
use sluice_sql::{CreateSource, PostgresSource, StreamDefinition};

/// What a source needs of the pipelines that take its tables' streams to the lake.
pub trait Downstream: Send + Sync {
    /// How far the lake has taken `stream`: the sequence number its pipeline has taken every
    /// record before, in every table (`None` before it has taken any).
    fn taken(&self, stream: &str) -> Option<u64>;

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

/// A source as its directory keeps it (`source.json`): never its password.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// `reading`, or `retrying` after an error, or `stopped` on one that needs a person.
    pub state: &'static str,
    /// Changes in its stream that the lake has not taken yet.
    pub behind: u64,
    /// The last error, while it lasts.
    pub last_error: Option<String>,
}

/// The sources of a server, each read by a task of its own.
pub struct Sources {
    dir: PathBuf,
    log: Arc<Log>,
    downstream: Arc<dyn Downstream>,
    running: Mutex<BTreeMap<String, Running>>,
}

struct Running {
    stored: Stored,
    stop: CancellationToken,
    state: Arc<Mutex<(&'static str, Option<String>)>>,
    /// Its tables stopped, and why ([`Reader::stopped`]).
    stopped: Arc<Mutex<BTreeMap<String, String>>>,
}

/// How long a reader waits after a failure before it connects again.
const RETRY: Duration = Duration::from_secs(2);

impl Sources {
    /// The sources kept in `dir`, each started reading into `log`'s streams. From now on the
    /// log refuses to drop a source's stream (`DROP SOURCE` drops them).
    pub fn open(
        dir: PathBuf,
        log: Arc<Log>,
        downstream: Arc<dyn Downstream>,
    ) -> Result<Arc<Sources>, SourceError> {
        std::fs::create_dir_all(&dir)?;
        let sources = Arc::new(Sources {
            dir,
            log: log.clone(),
            downstream,
            running: Mutex::new(BTreeMap::new()),
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
        for entry in std::fs::read_dir(&sources.dir)? {
            let file = entry?.path().join("source.json");
            if let Ok(bytes) = std::fs::read(&file) {
                match serde_json::from_slice::<Stored>(&bytes) {
                    Ok(stored) => sources.start(stored),
                    Err(e) => {
                        tracing::error!(file = %file.display(), error = %e, "cannot read a source")
                    }
                }
            }
        }
        Ok(sources)
    }

    /// `CREATE SOURCE`: reads the tables' definitions from the database, creates a change
    /// stream a table (refused if a name is taken: by a stream, or as `name_taken` says of the
    /// lake's tables), keeps the source, and starts reading it (the slot and the snapshot).
    pub async fn create_source(
        &self,
        create: CreateSource,
        name_taken: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SourceError> {
        if self
            .running
            .lock()
            .expect("sources")
            .contains_key(&create.name)
        {
            return match create.if_not_exists {
                true => Ok(()),
                false => Err(SourceError::Exists(create.name)),
            };
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
        for d in &described {
            self.log.create_stream(
                &d.table.name,
                StreamOptions {
                    shards: 1,
                    retention: Retention::default(),
                    definition: d.definition.to_log(),
                    elsewhere: Some(format!(
                        "PostgreSQL source '{}' (table {}): change the table there",
                        create.name,
                        d.table.qualified()
                    )),
                },
            )?;
        }
        let stored = Stored {
            name: create.name,
            definition: create.definition,
        };
        let dir = self.dir.join(&stored.name);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
        reader::write_synced(&dir.join("source.json"), &json)?;
        self.start(stored);
        Ok(())
    }

    /// Starts reading `stored`: its reader retried after each failure, until the source is
    /// dropped or the server stops.
    fn start(&self, stored: Stored) {
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(("reading", None)));
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
                *task_state.lock().expect("state") = ("reading", None);
                let result = reader.run(downstream.clone(), &task_stop).await;
                let Err(e) = result else { continue };
                tracing::warn!(source = name, error = %e, "a PostgreSQL source failed");
                let stopped = matches!(
                    e,
                    ReaderError::SlotExists(_)
                        | ReaderError::SlotGone(_)
                        | ReaderError::SlotLost(_)
                );
                *task_state.lock().expect("state") = (
                    if stopped { "stopped" } else { "retrying" },
                    Some(e.to_string()),
                );
                if stopped {
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
            dir: self.dir.join(&stored.name),
            snapshot: source.snapshot,
            heartbeat: HEARTBEAT,
            log: self.log.clone(),
            stopped,
        })
    }

    /// `DROP SOURCE`: stops reading it, drops its replication slot (a slot left behind holds
    /// WAL for ever) and its tables' streams. What it dropped, for the answer. A slot that
    /// cannot be dropped (the database unreachable, the slot still in use) drops nothing: the
    /// source reads on, and the error says why.
    pub async fn drop_source(
        &self,
        name: &str,
        if_exists: bool,
    ) -> Result<Vec<String>, SourceError> {
        let Some(running) = self.running.lock().expect("sources").remove(name) else {
            return match if_exists {
                true => Ok(Vec::new()),
                false => Err(SourceError::NotFound(name.to_string())),
            };
        };
        running.stop.cancel();
        let source = running.stored.definition.clone();
        let dropped_slot = match drop_slot(&source).await {
            Ok(dropped) => dropped,
            Err(e) => {
                // Nothing dropped: the source reads on.
                self.start(running.stored);
                return Err(e);
            }
        };
        let mut dropped = Vec::new();
        if dropped_slot {
            dropped.push(format!("replication slot {}", source.slot));
        }
        for table in &source.tables {
            match self.log.drop_stream(&table.name) {
                Ok(()) => dropped.push(format!("stream {}", table.name)),
                Err(sluice_log::Error::StreamNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        std::fs::remove_dir_all(self.dir.join(name))?;
        Ok(dropped)
    }

    /// Every source's tables and how their reading goes.
    pub fn list(&self) -> Vec<TableStatus> {
        let running = self.running.lock().expect("sources");
        let mut tables = Vec::new();
        for r in running.values() {
            let (state, last_error) = r.state.lock().expect("state").clone();
            let stopped = r.stopped.lock().expect("stopped");
            for table in &r.stored.definition.tables {
                let behind = self.log.stream(&table.name).map_or(0, |stream| {
                    let (start, end) = stream.shards()[0].bounds();
                    let taken = self.downstream.taken(&table.name).unwrap_or(start);
                    end.saturating_sub(taken.max(start))
                });
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
                    behind,
                    last_error: table_stopped.cloned().or_else(|| last_error.clone()),
                });
            }
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

/// Drops `source`'s replication slot; whether it was there.
async fn drop_slot(source: &PostgresSource) -> Result<bool, SourceError> {
    let plain = conninfo(source)?;
    let slot = source.slot.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = PgReplicationConnection::connect(&plain)?;
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {}",
            literal(&slot)
        );
        // The reader's connection may hold the slot a moment longer.
        let mut tries = 0;
        loop {
            match query(&mut connection, &sql) {
                Ok(rows) => return Ok(!rows.is_empty()),
                Err(TableError::Refused { message, .. })
                    if message.contains("is active") && tries < 50 =>
                {
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

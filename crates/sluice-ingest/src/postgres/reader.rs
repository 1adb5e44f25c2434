//! The reader of one source's replication slot: the tables' snapshot, then their changes, each
//! transaction appended to the tables' streams whole, and the slot acknowledged as far as the
//! caller says the lake has taken (see the module above for the invariants).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pg_walstream::{
    CancellationToken, ChangeEvent, EventType, LogicalReplicationStream, ReplicationStreamConfig,
    RowData, SnapshotOutcome,
};
use sluice_log::Stream;
use sluice_sql::ColumnType;

use super::values::{column_type, envelope, row_object};

/// What went wrong reading a source.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// PostgreSQL, or the connection to it.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] pg_walstream::ReplicationError),
    /// The log refused an append.
    #[error("the log: {0}")]
    Log(#[from] sluice_log::Error),
    /// The source's own files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The slot is gone (dropped by someone else): what it held since is not knowable.
    #[error(
        "replication slot '{0}' is gone: the changes since it was last read are lost; drop the \
         source and create it again (a new snapshot)"
    )]
    SlotGone(String),
    /// PostgreSQL invalidated the slot (it held more WAL than max_slot_wal_keep_size allows).
    #[error(
        "replication slot '{0}' was invalidated by PostgreSQL (it held more WAL than \
         max_slot_wal_keep_size allows): the changes since are lost; raise the limit, then drop \
         the source and create it again (a new snapshot)"
    )]
    SlotLost(String),
    /// A table read changed its columns in the database.
    #[error(
        "table {table} changed in the database ({change}): its source stops here, nothing \
         skipped; drop the source and create it again (a new snapshot) to read it as it is"
    )]
    SchemaChanged {
        /// `schema.table`.
        table: String,
        /// What changed.
        change: String,
    },
    /// The slot is there but holds no snapshot for Sluice to start from.
    #[error(
        "replication slot '{0}' exists already: Sluice copies the tables when it creates the \
         slot (drop the slot, or name another one with WITH (slot = '…'))"
    )]
    SlotExists(String),
}

/// A table the reader writes: its stream, and its columns as the stream declares them.
pub struct TableOut {
    /// The change stream its changes go to.
    pub stream: Arc<Stream>,
    /// Its columns, in PostgreSQL's order, as the stream types them.
    pub columns: Vec<(String, ColumnType)>,
}

/// The reader of a source's slot.
pub struct Reader {
    /// The connection string, with its password and `replication=database`.
    pub conninfo: String,
    /// The replication slot.
    pub slot: String,
    /// The publication.
    pub publication: String,
    /// The tables read, by `schema.table`.
    pub tables: HashMap<String, TableOut>,
    /// The source's directory (`snapshot.done`).
    pub dir: PathBuf,
    /// Whether the tables are copied first.
    pub snapshot: bool,
    /// How often a heartbeat is written ([`HEARTBEAT`]).
    pub heartbeat: Duration,
}

/// What may be acknowledged: the transactions read, oldest first (where each ends, and the last
/// record of each stream it wrote to).
#[derive(Default)]
struct Acks {
    waiting: VecDeque<(u64, Vec<(String, u64)>)>,
}

/// Every [`ACK_EVERY`] until `stop`, moves the slot's acknowledgement (the library sends it
/// with its next status update, and answers PostgreSQL's keepalives with it, whatever the
/// reader is doing) past the transactions whose every stream the lake has taken past their
/// records. A transaction of no table read (a heartbeat's) waits for nothing.
///
/// Open: PostgreSQL's fast shutdown waits for the slot to be acknowledged to the end of what
/// it sent, past the last transaction (its shutdown checkpoint); the library keeps that
/// position to itself while it waits for the next event, so a fast shutdown waits until this
/// reader disconnects.
async fn acknowledge(
    acks: Arc<std::sync::Mutex<Acks>>,
    feedback: Arc<pg_walstream::SharedLsnFeedback>,
    taken: super::Taken,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ACK_EVERY) => {}
        }
        let mut acks = acks.lock().expect("acks");
        let mut ack = None;
        while let Some((end, ends)) = acks.waiting.front() {
            if !(ends.iter()).all(|(s, last)| taken(s).is_some_and(|t| t > *last)) {
                break;
            }
            ack = Some(*end);
            acks.waiting.pop_front();
        }
        if let Some(lsn) = ack {
            feedback.update_applied_lsn(lsn);
        }
    }
}

/// A change of the open transaction: its envelope is made at the commit, which says when the
/// transaction committed and where it ends.
struct Pending {
    table: String,
    op: &'static str,
    before: Option<String>,
    after: Option<String>,
    lsn: u64,
}

/// Most changes of one table held before they are appended, while a snapshot is copied.
const SNAPSHOT_BATCH: usize = 10_000;

/// How often the slot is told how far the lake has taken it.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// How often, by default, a heartbeat is written to the database: a transactional logical message, which
/// the slot sends like a transaction, so that an idle database's slot is acknowledged as far
/// as the WAL its other databases write (else it would keep that WAL forever).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

impl Reader {
    fn config(&self) -> ReplicationStreamConfig {
        ReplicationStreamConfig::builder(&self.slot, &self.publication)
            .with_protocol_version(1)
            .with_messages(true)
            .with_feedback_interval(Duration::from_secs(10))
    }

    fn snapshot_done(&self) -> PathBuf {
        self.dir.join("snapshot.done")
    }

    /// Creates the slot and copies the tables in its snapshot, unless that was done: then the
    /// stream of changes from where the slot was acknowledged.
    async fn open(&self) -> Result<LogicalReplicationStream, ReaderError> {
        if self.snapshot_done().exists() {
            // The library would make a slot that is gone anew, silently: a gap.
            let (plain, slot) = (plain(&self.conninfo), self.slot.clone());
            let status = tokio::task::spawn_blocking(move || {
                let mut connection = pg_walstream::PgReplicationConnection::connect(&plain)?;
                let sql = format!(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = {}",
                    super::literal(&slot)
                );
                Ok::<_, ReaderError>(connection.exec(&sql)?.get_value(0, 0))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            match status.as_deref() {
                None => return Err(ReaderError::SlotGone(self.slot.clone())),
                Some("lost") => return Err(ReaderError::SlotLost(self.slot.clone())),
                Some(_) => {}
            }
            let mut stream = LogicalReplicationStream::new(&self.conninfo, self.config()).await?;
            stream.start(None).await?;
            return Ok(stream);
        }
        let stream = LogicalReplicationStream::new(&self.conninfo, self.config()).await?;
        let mut stream = match stream.snapshot().await? {
            SnapshotOutcome::Unavailable(_) => {
                return Err(ReaderError::SlotExists(self.slot.clone()));
            }
            SnapshotOutcome::Available(mut snapshot) => {
                snapshot.retain_tables(|t| self.tables.contains_key(&t.qualified_name()));
                let at = snapshot.consistent_point().0;
                let now = chrono::Utc::now().timestamp_micros();
                // A truncate first: a copy started again after a crash erases the one before.
                let mut pending: HashMap<&str, Vec<String>> = HashMap::new();
                for name in self.tables.keys() {
                    pending
                        .entry(name)
                        .or_default()
                        .push(envelope("t", None, None, at, now, at));
                }
                let mut rows = snapshot.rows();
                if self.snapshot {
                    while let Some(row) = rows.next_row().await? {
                        let name =
                            format!("{}.{}", row.relation.namespace, row.relation.relation_name);
                        let Some((key, out)) = self.tables.get_key_value(&name) else {
                            continue;
                        };
                        let after = row_of(out, &row.data);
                        let batch = pending.entry(key).or_default();
                        batch.push(envelope("r", None, Some(&after), at, now, at));
                        if batch.len() >= SNAPSHOT_BATCH {
                            self.append(key, std::mem::take(batch)).await?;
                        }
                    }
                }
                for (name, batch) in pending {
                    self.append(name, batch).await?;
                }
                let stream = match self.snapshot {
                    true => rows.finish().await?,
                    false => rows.abandon().await?,
                };
                write_synced(&self.snapshot_done(), at.to_string().as_bytes())?;
                stream
            }
        };
        stream.start(None).await?;
        Ok(stream)
    }

    /// Appends `records` to table `name`'s stream; the sequence number of the last.
    async fn append(&self, name: &str, records: Vec<String>) -> Result<Option<u64>, ReaderError> {
        if records.is_empty() {
            return Ok(None);
        }
        let out = &self.tables[name];
        let mut batches = out.stream.batches();
        for record in &records {
            batches.push(0, b"", record.as_bytes())?;
        }
        let mut last = None;
        for part in out.stream.append_from_elsewhere(batches).await? {
            last = last.max(Some(part.result?.last_seq()));
        }
        Ok(last)
    }

    /// Where the tables' streams end: the furthest `end_lsn` their records carry (a
    /// transaction at or before it is in the log already), and each stream's last sequence
    /// number.
    fn appended(&self) -> Result<(u64, Vec<(String, u64)>), ReaderError> {
        let mut furthest = 0;
        let mut ends = Vec::new();
        for out in self.tables.values() {
            let shard = &out.stream.shards()[0];
            let (start, end) = shard.bounds();
            if end == start {
                continue;
            }
            ends.push((out.stream.name().to_string(), end - 1));
            for record in shard.read(end - 1, 1, usize::MAX)?.records {
                let record: serde_json::Value =
                    serde_json::from_slice(&record.data).unwrap_or_default();
                furthest = furthest.max(record["source"]["end_lsn"].as_u64().unwrap_or(0));
            }
        }
        Ok((furthest, ends))
    }

    /// Reads the slot until `stop`: every transaction's changes appended to their tables'
    /// streams whole (but those the streams hold already: a restart resumes where the slot was
    /// acknowledged), and the slot acknowledged as far as the lake has taken them
    /// ([`acknowledge`]).
    pub async fn run(
        &self,
        taken: super::Taken,
        stop: &CancellationToken,
    ) -> Result<(), ReaderError> {
        let mut stream = self.open().await?;
        let feedback = stream.shared_lsn_feedback.clone();
        let heartbeat = tokio::spawn(heartbeats(
            self.conninfo.clone(),
            self.heartbeat,
            stop.clone(),
        ));
        // Transactions in the log the lake may not have: where each ends, and the last record
        // of each stream it wrote to.
        let (appended, ends) = self.appended()?;
        let acks = Arc::new(std::sync::Mutex::new(Acks::default()));
        if !ends.is_empty() {
            acks.lock()
                .expect("acks")
                .waiting
                .push_back((appended, ends));
        }
        let acker = tokio::spawn(acknowledge(
            acks.clone(),
            feedback.clone(),
            taken,
            stop.clone(),
        ));
        let mut transaction: Vec<Pending> = Vec::new();
        let mut committed_at = 0i64;
        let mut last_ack = std::time::Instant::now();
        while !stop.is_cancelled() {
            let ChangeEvent {
                event_type, lsn, ..
            } = match stream.next_event(stop).await {
                Ok(event) => event,
                Err(_) if stop.is_cancelled() => break,
                Err(e) => return Err(e.into()),
            };
            let lsn = lsn.0;
            match event_type {
                EventType::Begin {
                    commit_timestamp, ..
                } => {
                    transaction.clear();
                    committed_at = commit_timestamp.timestamp_micros();
                }
                EventType::Insert {
                    schema,
                    table,
                    data,
                    ..
                } => self.change(
                    &mut transaction,
                    &schema,
                    &table,
                    "c",
                    None,
                    Some(&data),
                    lsn,
                ),
                EventType::Update {
                    schema,
                    table,
                    old_data,
                    new_data,
                    ..
                } => self.change(
                    &mut transaction,
                    &schema,
                    &table,
                    "u",
                    old_data.as_ref(),
                    Some(&new_data),
                    lsn,
                ),
                EventType::Delete {
                    schema,
                    table,
                    old_data,
                    ..
                } => self.change(
                    &mut transaction,
                    &schema,
                    &table,
                    "d",
                    Some(&old_data),
                    None,
                    lsn,
                ),
                EventType::Truncate { tables, .. } => {
                    for name in tables
                        .iter()
                        .filter(|n| self.tables.contains_key(n.as_ref()))
                    {
                        transaction.push(Pending {
                            table: name.to_string(),
                            op: "t",
                            before: None,
                            after: None,
                            lsn,
                        });
                    }
                }
                EventType::Relation {
                    namespace,
                    relation_name,
                    columns,
                    ..
                } => {
                    let name = format!("{namespace}.{relation_name}");
                    if let Some(out) = self.tables.get(&name) {
                        let now: Vec<(String, ColumnType)> = (columns.iter())
                            .map(|c| (c.name.to_string(), column_type(c.type_id, c.type_modifier)))
                            .collect();
                        if now != out.columns {
                            return Err(ReaderError::SchemaChanged {
                                table: name,
                                change: describe_change(&out.columns, &now),
                            });
                        }
                    }
                }
                EventType::Commit { end_lsn, .. } => {
                    if end_lsn.0 <= appended {
                        transaction.clear();
                        continue;
                    }
                    let mut by_table: HashMap<String, Vec<String>> = HashMap::new();
                    for p in transaction.drain(..) {
                        let (before, after) = (p.before.as_deref(), p.after.as_deref());
                        let record = envelope(p.op, before, after, p.lsn, committed_at, end_lsn.0);
                        by_table.entry(p.table).or_default().push(record);
                    }
                    let mut ends = Vec::new();
                    for (name, records) in by_table {
                        if let Some(last) = self.append(&name, records).await? {
                            ends.push((self.tables[&name].stream.name().to_string(), last));
                        }
                    }
                    (acks.lock().expect("acks").waiting).push_back((end_lsn.0, ends));
                }
                _ => {}
            }
            if last_ack.elapsed() >= ACK_EVERY {
                stream.send_feedback().await?;
                last_ack = std::time::Instant::now();
            }
        }
        heartbeat.abort();
        acker.abort();
        Ok(())
    }

    /// Adds a change of a table read to the open transaction (its commit time and end are
    /// filled in at its commit).
    #[allow(clippy::too_many_arguments)]
    fn change(
        &self,
        transaction: &mut Vec<Pending>,
        schema: &str,
        table: &str,
        op: &'static str,
        before: Option<&RowData>,
        after: Option<&RowData>,
        lsn: u64,
    ) {
        let name = format!("{schema}.{table}");
        let Some(out) = self.tables.get(&name) else {
            return;
        };
        transaction.push(Pending {
            before: before.map(|row| row_of(out, row)),
            after: after.map(|row| row_of(out, row)),
            table: name,
            op,
            lsn,
        });
    }
}

/// Writes a heartbeat every `every` until `stop`, on a connection of its own (the replication
/// one only replicates). A failed one is logged; the next connects again.
async fn heartbeats(conninfo: String, every: Duration, stop: CancellationToken) {
    let plain = plain(&conninfo);
    let mut connection = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (plain, mut held) = (plain.clone(), connection.take());
        let beat = tokio::task::spawn_blocking(move || {
            let mut c = match held.take() {
                Some(c) => c,
                None => pg_walstream::PgReplicationConnection::connect(&plain)?,
            };
            c.exec("SELECT pg_logical_emit_message(true, 'sluice_heartbeat', '')")?;
            Ok::<_, pg_walstream::ReplicationError>(c)
        })
        .await;
        match beat {
            Ok(Ok(c)) => connection = Some(c),
            Ok(Err(e)) => tracing::warn!(error = %e, "a PostgreSQL source's heartbeat failed"),
            Err(e) => tracing::warn!(error = %e, "a PostgreSQL source's heartbeat panicked"),
        }
    }
}

/// What changed between a table's columns as read (`was`) and as the database has them now.
fn describe_change(was: &[(String, ColumnType)], now: &[(String, ColumnType)]) -> String {
    let mut changes = Vec::new();
    for (name, t) in now {
        match was.iter().find(|(n, _)| n == name) {
            None => changes.push(format!("column {name} added")),
            Some((_, before)) if before != t => {
                changes.push(format!("column {name} is {t}, was {before}"))
            }
            Some(_) => {}
        }
    }
    for (name, _) in was.iter().filter(|(n, _)| !now.iter().any(|(m, _)| m == n)) {
        changes.push(format!("column {name} dropped"));
    }
    if changes.is_empty() {
        changes.push("columns reordered".into());
    }
    changes.join(", ")
}

/// A replication connection string as an ordinary session's.
fn plain(conninfo: &str) -> String {
    conninfo
        .replace("?replication=database&", "?")
        .replace("?replication=database", "")
        .replace("&replication=database", "")
}

/// A row as its table's Debezium row object: a column the row lacks is unchanged.
fn row_of(out: &TableOut, row: &RowData) -> String {
    row_object(&out.columns, |name| {
        row.get(name).map(|value| match value {
            pg_walstream::ColumnValue::Null => None,
            value => value.as_str(),
        })
    })
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed.
pub(super) fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

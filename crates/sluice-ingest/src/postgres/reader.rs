//! The reader of one source's replication slot: the tables' snapshot, then their changes, each
//! transaction appended to the tables' streams whole, and the slot acknowledged as far as the
//! caller says the lake has taken (see the module above for the invariants).
//!
//! Two tasks: one receives the slot's events (and answers PostgreSQL's keepalives), the other
//! turns them into records and appends them. The second appends what it has each time it has
//! caught up with the first, so that a busy database's transactions go to the log many at a
//! time (one durable append a table for all of them) and a quiet one's at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_walstream::{
    CancellationToken, ChangeEvent, EventType, LogicalReplicationStream, ReplicationStreamConfig,
    RowData, SnapshotOutcome,
};
use sluice_log::{Log, Stream};
use sluice_sql::{Column, ColumnType, StreamDefinition};
use tokio::sync::mpsc;

use super::Downstream;
use super::shelf::{Kept, Shelf};
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
    /// A heartbeat failed and the database takes no session: it is going away (a fast
    /// shutdown), or cannot be reached.
    #[error(
        "PostgreSQL: a heartbeat failed and the database takes no session ({0}): connecting again"
    )]
    Heartbeat(String),
    /// The slot is there but holds no snapshot for Sluice to start from.
    #[error(
        "replication slot '{0}' exists already: Sluice copies the tables when it creates the \
         slot (drop the slot, or name another one with WITH (slot = '…'))"
    )]
    SlotExists(String),
    /// Another reader holds the slot: another worker of the cluster (which this one stands
    /// by for), or a client of the database's.
    #[error(
        "replication slot '{0}' is read by another worker of the cluster (or another client): \
         this one stands by to take it over"
    )]
    SlotBusy(String),
    /// The slot Sluice made holds no finished copy and nobody copies now: the copy was cut
    /// short (its process died), so the slot was dropped, to be made anew and the tables
    /// copied again.
    #[error(
        "the copy of the tables into replication slot '{0}' was cut short (the worker copying \
         them died): the slot was dropped, and the tables are copied again"
    )]
    CopyCut(String),
    /// The source is no longer kept: dropped, on another worker of the cluster (or being
    /// dropped: a drop that fails keeps it again).
    #[error("source '{0}' was dropped")]
    Dropped(String),
    /// The reader was stopped in the middle of the copy.
    #[error("stopped while copying the tables")]
    Stopped,
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
    /// The source's name, as `shelf` keeps it.
    pub source: String,
    /// Where the source is kept: whether its snapshot was copied, its tables stopped.
    pub shelf: Arc<dyn Shelf>,
    /// Whether the tables are copied first.
    pub snapshot: bool,
    /// How often a heartbeat is written ([`HEARTBEAT`]).
    pub heartbeat: Duration,
    /// The log holding the tables' streams (a column added to a table is added to its
    /// stream's definition there).
    pub log: Arc<Log>,
    /// The tables stopped, and why ([`schema_changed`]), by `schema.table`: kept on the
    /// shelf once every change before the stop is in the log, read by whoever shows the
    /// source's status.
    pub stopped: Arc<Mutex<BTreeMap<String, String>>>,
}

/// What may be acknowledged: the batches of transactions appended, oldest first (where the
/// last ends, and the last record of each stream the batch wrote to).
#[derive(Default)]
struct Acks {
    waiting: VecDeque<Appended>,
}

/// A batch of transactions appended: where its last ends, and the position of the last record
/// it appended to each stream.
type Appended = (u64, Vec<(Arc<Stream>, u64)>);

/// Every [`ACK_EVERY`] until `stop`, moves the slot's acknowledgement (the library sends it
/// with its next status update, and answers PostgreSQL's keepalives with it, whatever the
/// reader is doing) past the transactions whose every stream the lake has taken past their
/// records. A transaction of no table read (a heartbeat's) waits for nothing.
///
/// PostgreSQL's fast shutdown waits for the slot to be acknowledged to the end of what it
/// sent, past the last transaction (its shutdown checkpoint). The library keeps that position
/// to itself while it waits for the next event, so the reader cannot acknowledge it: the
/// shutdown waits until the reader disconnects, which the next heartbeat's failure makes it do
/// ([`heartbeats`]).
async fn acknowledge(
    acks: Arc<std::sync::Mutex<Acks>>,
    feedback: Arc<pg_walstream::SharedLsnFeedback>,
    downstream: Arc<dyn Downstream>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ACK_EVERY) => {}
        }
        // How far the lake has taken each stream waited for, asked outside the lock.
        let mut streams: Vec<Arc<Stream>> = Vec::new();
        for (_, ends) in &acks.lock().expect("acks").waiting {
            for (stream, _) in ends {
                if !streams.iter().any(|s| s.id() == stream.id()) {
                    streams.push(stream.clone());
                }
            }
        }
        let mut taken = HashMap::new();
        for stream in streams {
            taken.insert(stream.id(), downstream.taken(&stream).await);
        }
        let mut acks = acks.lock().expect("acks");
        let mut ack = None;
        while let Some((end, ends)) = acks.waiting.front() {
            let taken = |stream: &Stream, last: u64| {
                taken
                    .get(&stream.id())
                    .is_some_and(|t| t.is_some_and(|t| t > last))
            };
            if !(ends.iter()).all(|(stream, last)| taken(stream, *last)) {
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

/// Most changes received and not yet appended, while transactions come faster than appends.
const APPEND_AT_MOST: usize = 10_000;

/// Most events received ahead of the appends.
const EVENTS_AHEAD: usize = 20_000;

/// How often the slot is told how far the lake has taken it.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// How often, by default, a heartbeat is written to the database: a transactional logical
/// message, which the slot sends like a transaction, so that an idle database's slot is
/// acknowledged as far as the WAL its other databases write (else it would keep that WAL
/// forever).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

impl Reader {
    fn config(&self) -> ReplicationStreamConfig {
        ReplicationStreamConfig::builder(&self.slot, &self.publication)
            .with_protocol_version(1)
            .with_messages(true)
            .with_feedback_interval(Duration::from_secs(10))
    }

    async fn snapshot_done(&self) -> Result<bool, ReaderError> {
        Ok((self.shelf.get(&self.source, Kept::SnapshotDone).await?).is_some())
    }

    /// Whether the slot exists, and whether a replication connection is copying the tables
    /// into it (it made the slot, exporting its snapshot, and sent nothing since: the slot is
    /// not active then).
    async fn slot_found(&self) -> Result<(bool, bool), ReaderError> {
        let (plain, slot) = (plain(&self.conninfo), self.slot.clone());
        tokio::task::spawn_blocking(move || {
            let mut connection = pg_walstream::PgReplicationConnection::connect(&plain)?;
            let sql = format!(
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}), \
                 EXISTS ({})",
                super::literal(&slot),
                copying(&slot)
            );
            let row = super::query(&mut connection, &sql).map_err(std::io::Error::other)?;
            let value = |i: usize| row.first().and_then(|r| r.get(i)).cloned();
            Ok::<_, ReaderError>((
                value(0).is_some_and(|c| c != "0"),
                value(1).is_some_and(|c| c == "t"),
            ))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// `e`, or [`ReaderError::SlotBusy`] when it says another reader holds the slot.
    fn busy_or(&self, e: pg_walstream::ReplicationError) -> ReaderError {
        match super::held_elsewhere(&e) {
            true => ReaderError::SlotBusy(self.slot.clone()),
            false => e.into(),
        }
    }

    /// Whether the source is still kept (not dropped on another worker).
    async fn kept(&self) -> Result<bool, ReaderError> {
        Ok((self.shelf.get(&self.source, Kept::Definition).await?).is_some())
    }

    /// Drops the slot if it holds a copy cut short: not active, and no replication connection
    /// copying into it — asked in the statement that drops it, so that a copy another worker
    /// started meanwhile keeps its slot. Whether it was dropped.
    async fn drop_cut_copy(&self) -> Result<bool, ReaderError> {
        let (plain, slot) = (plain(&self.conninfo), self.slot.clone());
        tokio::task::spawn_blocking(move || {
            let mut connection = pg_walstream::PgReplicationConnection::connect(&plain)?;
            let sql = format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = {} AND NOT active AND NOT EXISTS ({})",
                super::literal(&slot),
                copying(&slot)
            );
            let dropped = super::query(&mut connection, &sql).map_err(std::io::Error::other)?;
            Ok::<_, ReaderError>(!dropped.is_empty())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Lets go of the slot this reader holds (`held`: its connection) and drops it: a worker
    /// yet to hear that the source was dropped made it anew (the library makes a missing slot).
    async fn let_go(&self, held: impl Send) -> ReaderError {
        drop(held);
        if let Err(e) = super::drop_slot(plain(&self.conninfo), self.slot.clone()).await {
            tracing::warn!(slot = self.slot, error = %e, "cannot drop the slot of a source dropped");
        }
        ReaderError::Dropped(self.source.clone())
    }

    /// Creates the slot and copies the tables in its snapshot, unless that was done: then the
    /// stream of changes from where the slot was acknowledged. A slot another reader holds
    /// (another worker's, copying or reading) is [`ReaderError::SlotBusy`]. Calls `opened` once
    /// the slot is this reader's. A worker yet to hear that the source was dropped makes no slot
    /// for it, and lets go of one it made: it checks once it holds the slot, and the worker
    /// dropping the source waits for the slot to be let go before it drops it. The copy ends at
    /// `stop`.
    async fn open(
        &self,
        stop: &CancellationToken,
        opened: impl FnOnce(),
    ) -> Result<LogicalReplicationStream, ReaderError> {
        if self.snapshot_done().await? {
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
            stream.start(None).await.map_err(|e| self.busy_or(e))?;
            if !self.kept().await? {
                return Err(self.let_go(stream).await);
            }
            opened();
            return Ok(stream);
        }
        if !self.kept().await? {
            return Err(ReaderError::Dropped(self.source.clone()));
        }
        // Asked before this reader opens a replication connection of its own.
        let (exists, copying) = self.slot_found().await?;
        if exists {
            return Err(match self.shelf.get(&self.source, Kept::SlotMade).await? {
                // Copied since this reader looked: it reads on from the slot next time.
                _ if self.snapshot_done().await? => ReaderError::SlotBusy(self.slot.clone()),
                None => ReaderError::SlotExists(self.slot.clone()),
                // Another worker of the cluster copies the tables now (the slot is not active
                // while it does).
                Some(_) if copying => ReaderError::SlotBusy(self.slot.clone()),
                Some(_) => match self.drop_cut_copy().await? {
                    true => ReaderError::CopyCut(self.slot.clone()),
                    false => ReaderError::SlotBusy(self.slot.clone()),
                },
            });
        }
        let made = self.slot.clone().into_bytes();
        (self.shelf.put(&self.source, Kept::SlotMade, made, false)).await?;
        let stream = LogicalReplicationStream::new(&self.conninfo, self.config()).await?;
        match stream.snapshot().await.map_err(|e| self.busy_or(e))? {
            // Another worker made it a moment ago.
            SnapshotOutcome::Unavailable(_) => Err(ReaderError::SlotBusy(self.slot.clone())),
            SnapshotOutcome::Available(snapshot) if !self.kept().await? => {
                Err(self.let_go(snapshot).await)
            }
            SnapshotOutcome::Available(mut snapshot) => {
                opened();
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
                        if stop.is_cancelled() {
                            return Err(ReaderError::Stopped);
                        }
                        let name =
                            format!("{}.{}", row.relation.namespace, row.relation.relation_name);
                        let Some((key, out)) = self.tables.get_key_value(&name) else {
                            continue;
                        };
                        let after = row_of(out, out.columns.len(), &row.data);
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
                let mut stream = match self.snapshot {
                    true => rows.finish().await?,
                    false => rows.abandon().await?,
                };
                stream.start(None).await?;
                if !self.kept().await? {
                    return Err(self.let_go(stream).await);
                }
                let done = at.to_string().into_bytes();
                (self
                    .shelf
                    .put(&self.source, Kept::SnapshotDone, done, false))
                .await?;
                Ok(stream)
            }
        }
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

    /// Where each table's stream ends: the `end_lsn` its last record carries (a transaction
    /// ending at or before it is in that stream already), and its last position.
    async fn appended(
        &self,
        downstream: &dyn Downstream,
    ) -> Result<HashMap<String, (u64, u64)>, ReaderError> {
        let mut appended = HashMap::new();
        for (table, out) in &self.tables {
            let tail = downstream.tail(&out.stream).await?;
            if let Some(last) = tail.last {
                let record: serde_json::Value = serde_json::from_slice(&last).unwrap_or_default();
                let end_lsn = record["source"]["end_lsn"].as_u64().unwrap_or(0);
                appended.insert(table.clone(), (end_lsn, tail.next - 1));
            }
        }
        Ok(appended)
    }

    /// Reads the slot until `stop`: every transaction's changes appended to their tables'
    /// streams whole (but those a stream holds already: a restart resumes where the slot was
    /// acknowledged), and the slot acknowledged as far as the lake has taken them
    /// ([`acknowledge`]). Calls `opened` once the slot is this reader's.
    pub async fn run(
        &mut self,
        downstream: Arc<dyn Downstream>,
        stop: &CancellationToken,
        opened: impl FnOnce(),
    ) -> Result<(), ReaderError> {
        // Stops not kept (their transaction was not appended) are found again.
        *self.stopped.lock().expect("stopped") = self.read_stopped().await?;
        let stream = self.open(stop, opened).await?;
        let done = stop.child_token();
        let feedback = stream.shared_lsn_feedback.clone();
        // Read once the slot is this reader's: no other reader appends to the streams now (but
        // for one whose append was under way as its connection went; the lake drops repeats).
        let appended = self.appended(&*downstream).await?;
        let acks = Arc::new(Mutex::new(Acks::default()));
        // What the log holds may not be in the lake: nothing is acknowledged before it is, nor
        // past the table that got least far (a crash between two tables' appends).
        if let Some(least) = appended.values().map(|(end, _)| *end).min() {
            let ends = (appended.iter())
                .map(|(table, (_, last))| (self.tables[table].stream.clone(), *last))
                .collect();
            acks.lock().expect("acks").waiting.push_back((least, ends));
        }
        let (events_in, events) = mpsc::channel(EVENTS_AHEAD);
        let (conninfo, every) = (self.conninfo.clone(), self.heartbeat);
        let beating = tokio::spawn(heartbeats(conninfo, every, done.clone()));
        let acker = tokio::spawn(acknowledge(
            acks.clone(),
            feedback,
            downstream.clone(),
            done.clone(),
        ));
        let ended = CancellationToken::new();
        let receiver = tokio::spawn(receive(stream, events_in, done.clone(), ended.clone()));
        let followed = (self.follow((events, &ended), appended, &acks, &*downstream)).await;
        done.cancel();
        acker.abort();
        let joined = |e: tokio::task::JoinError| std::io::Error::other(e.to_string());
        let received = receiver.await.map_err(joined)?;
        // A heartbeat that ended the run says why; one still waiting for its database is left.
        let beaten = match beating.is_finished() {
            true => beating.await.map_err(joined)?,
            false => {
                beating.abort();
                Ok(())
            }
        };
        followed.and(received).and(beaten)
    }

    /// Turns the received events into records, appending each table's once the events ahead
    /// are all taken in (or [`APPEND_AT_MOST`] wait), until the receiver stops.
    async fn follow(
        &mut self,
        (mut events, ended): (mpsc::Receiver<ChangeEvent>, &CancellationToken),
        appended: HashMap<String, (u64, u64)>,
        acks: &Mutex<Acks>,
        downstream: &dyn Downstream,
    ) -> Result<(), ReaderError> {
        let mut transaction: Vec<Pending> = Vec::new();
        let mut committed_at = 0i64;
        let mut batch = Batch::default();
        // Tables whose transactions come described with fewer columns than their streams have
        // (sent again from before a column was added): how many.
        let mut older: HashMap<String, usize> = HashMap::new();
        // Tables stopped in the open transaction: kept once it is appended.
        let mut stopping: Vec<String> = Vec::new();
        loop {
            let event = match batch.end {
                None => events.recv().await,
                Some(_) if batch.records < APPEND_AT_MOST => match events.try_recv() {
                    Ok(event) => Some(event),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.append_batch(&mut batch, acks, ended).await?;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                },
                Some(_) => {
                    self.append_batch(&mut batch, acks, ended).await?;
                    continue;
                }
            };
            let Some(ChangeEvent {
                event_type, lsn, ..
            }) = event
            else {
                // The receiver stopped: what it gave is appended, the rest it sends again.
                return self.append_batch(&mut batch, acks, ended).await;
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
                } => {
                    let change = ("c", None, Some(&data));
                    self.change(&mut transaction, &older, &schema, &table, change, lsn)
                }
                EventType::Update {
                    schema,
                    table,
                    old_data,
                    new_data,
                    ..
                } => {
                    let change = ("u", old_data.as_ref(), Some(&new_data));
                    self.change(&mut transaction, &older, &schema, &table, change, lsn)
                }
                EventType::Delete {
                    schema,
                    table,
                    old_data,
                    ..
                } => {
                    let change = ("d", Some(&old_data), None);
                    self.change(&mut transaction, &older, &schema, &table, change, lsn)
                }
                EventType::Truncate { tables, .. } => {
                    for name in tables.iter().filter(|n| self.reads(n)) {
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
                    if self.reads(&name) {
                        let now: Vec<(String, ColumnType)> = (columns.iter())
                            .map(|c| (c.name.to_string(), column_type(c.type_id, c.type_modifier)))
                            .collect();
                        let columns = &self.tables[&name].columns;
                        older.remove(&name);
                        if now.len() < columns.len() && columns[..now.len()] == now[..] {
                            older.insert(name, now.len());
                        } else if now != *columns {
                            // The transactions before are read as the table was.
                            self.append_batch(&mut batch, acks, ended).await?;
                            let table = (namespace.as_ref(), relation_name.as_ref());
                            if !self.changed(table, now, downstream).await? {
                                stopping.push(name);
                            }
                        }
                    }
                }
                EventType::Commit { end_lsn, .. } => {
                    for p in transaction.drain(..) {
                        if appended
                            .get(&p.table)
                            .is_some_and(|(end, _)| end_lsn.0 <= *end)
                        {
                            continue;
                        }
                        let (before, after) = (p.before.as_deref(), p.after.as_deref());
                        let record = envelope(p.op, before, after, p.lsn, committed_at, end_lsn.0);
                        batch.tables.entry(p.table).or_default().push(record);
                        batch.records += 1;
                    }
                    batch.end = Some(end_lsn.0);
                    batch.stops.append(&mut stopping);
                }
                _ => {}
            }
        }
    }

    /// Appends the batch's records, a table at a time, and hands its end to [`acknowledge`].
    /// Once the receiver has ended (`ended`), appends nothing: the slot is free for another
    /// reader, which reads those transactions again.
    async fn append_batch(
        &self,
        batch: &mut Batch,
        acks: &Mutex<Acks>,
        ended: &CancellationToken,
    ) -> Result<(), ReaderError> {
        if ended.is_cancelled() {
            *batch = Batch::default();
            return Ok(());
        }
        let Some(end) = batch.end.take() else {
            return Ok(());
        };
        let mut ends = Vec::new();
        for (name, records) in std::mem::take(&mut batch.tables) {
            if let Some(last) = self.append(&name, records).await? {
                ends.push((self.tables[&name].stream.clone(), last));
            }
        }
        batch.records = 0;
        acks.lock().expect("acks").waiting.push_back((end, ends));
        if !std::mem::take(&mut batch.stops).is_empty() {
            let stopped = self.stopped.lock().expect("stopped").clone();
            let json = serde_json::to_vec_pretty(&stopped).map_err(std::io::Error::other)?;
            (self.shelf.put(&self.source, Kept::Stopped, json, false)).await?;
        }
        Ok(())
    }

    /// Whether table `name` is read: one of the source's, and not stopped.
    fn reads(&self, name: &str) -> bool {
        self.tables.contains_key(name) && !self.stopped.lock().expect("stopped").contains_key(name)
    }

    /// Table `(schema, table)`'s columns are `now` in the database, no longer as its stream
    /// has them. A nullable column added without a default (its rows so far hold null in it,
    /// as the mirror's do) is added to the stream, and its pipeline started again to add it to
    /// its tables; any other change stops the table (in memory: the caller keeps the stop once
    /// the transaction is appended). Whether the table is read on.
    async fn changed(
        &mut self,
        (schema, table): (&str, &str),
        now: Vec<(String, ColumnType)>,
        downstream: &dyn Downstream,
    ) -> Result<bool, ReaderError> {
        let name = &format!("{schema}.{table}");
        let was = &self.tables[name].columns;
        let unfit = match now.len() > was.len() && now[..was.len()] == was[..] {
            true => self.unfit_added((schema, table), &now[was.len()..]).await?,
            false => Some(describe_change(was, &now)),
        };
        if let Some(change) = unfit {
            let reason = schema_changed(name, &change);
            tracing::warn!(
                table = name,
                error = reason,
                "a PostgreSQL source's table stops"
            );
            (self.stopped.lock().expect("stopped")).insert(name.to_string(), reason);
            return Ok(false);
        }
        let out = &self.tables[name];
        let mut definition = StreamDefinition::from_log(&out.stream.meta().definition);
        let added = now[out.columns.len()..]
            .iter()
            .map(|(column, data_type)| Column {
                name: column.clone(),
                data_type: *data_type,
                nullable: true,
            });
        definition.columns.extend(added);
        let stream = out.stream.name().to_string();
        // Blocking: in a cluster the catalog in the lake takes it first.
        let (log, redefined, id) = (self.log.clone(), stream.clone(), out.stream.id());
        tokio::task::spawn_blocking(move || {
            log.redefine_stream(&redefined, id, definition.to_log())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        tracing::info!(
            table = name,
            stream,
            "a PostgreSQL source's table has new columns"
        );
        downstream.reopen(&stream).await;
        self.tables.get_mut(name).expect("a table read").columns = now;
        Ok(true)
    }

    /// Why the columns `added` to `(schema, table)` cannot be taken as they come, if they cannot:
    /// one is `NOT NULL` or has a default, so that the table's rows so far hold values in it
    /// that no change sends.
    async fn unfit_added(
        &self,
        (schema, table): (&str, &str),
        added: &[(String, ColumnType)],
    ) -> Result<Option<String>, ReaderError> {
        let names: Vec<String> = added.iter().map(|(n, _)| super::literal(n)).collect();
        let sql = format!(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = {} AND c.relname = {} AND a.attname IN ({}) \
             AND (a.attnotnull OR a.atthasdef OR a.atthasmissing)",
            super::literal(schema),
            super::literal(table),
            names.join(", ")
        );
        let plain = plain(&self.conninfo);
        let unfit = tokio::task::spawn_blocking(move || {
            let mut connection = pg_walstream::PgReplicationConnection::connect(&plain)?;
            Ok::<_, ReaderError>(
                super::query(&mut connection, &sql).map_err(std::io::Error::other)?,
            )
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok((!unfit.is_empty()).then(|| {
            let columns: Vec<&str> = unfit.iter().map(|row| row[0].as_str()).collect();
            format!(
                "column {} added, NOT NULL or with a default now: the rows before may hold \
                 values no change sent",
                columns.join(", ")
            )
        }))
    }

    /// The tables stopped before, as the shelf keeps them.
    async fn read_stopped(&self) -> Result<BTreeMap<String, String>, ReaderError> {
        match self.shelf.get(&self.source, Kept::Stopped).await? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).map_err(std::io::Error::other)?),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Adds a change (`op`, the row before, the row after) of a table read to the open
    /// transaction (its commit time and end are filled in at its commit). A table described
    /// with fewer columns than its stream has (`older`) has null in the others.
    fn change(
        &self,
        transaction: &mut Vec<Pending>,
        older: &HashMap<String, usize>,
        schema: &str,
        table: &str,
        (op, before, after): (&'static str, Option<&RowData>, Option<&RowData>),
        lsn: u64,
    ) {
        let name = format!("{schema}.{table}");
        if !self.reads(&name) {
            return;
        }
        let out = &self.tables[&name];
        let known = older.get(&name).copied().unwrap_or(out.columns.len());
        transaction.push(Pending {
            before: before.map(|row| row_of(out, known, row)),
            after: after.map(|row| row_of(out, known, row)),
            table: name,
            op,
            lsn,
        });
    }
}

/// The transactions received and not yet appended: each table's records, how many in all,
/// where the last ends (`None`: nothing since the last append), and the tables they stopped.
#[derive(Default)]
struct Batch {
    tables: HashMap<String, Vec<String>>,
    records: usize,
    end: Option<u64>,
    /// Tables stopped in its transactions: kept once it is appended.
    stops: Vec<String>,
}

/// Receives the slot's events into `events` until `stop` or an error, telling PostgreSQL every
/// [`ACK_EVERY`] how far the slot may be acknowledged ([`acknowledge`] says). Cancels `ended`
/// as it ends, before its connection lets the slot go: what it received and the reader has not
/// appended by then is not appended (another reader may hold the slot a moment later).
async fn receive(
    mut stream: LogicalReplicationStream,
    events: mpsc::Sender<ChangeEvent>,
    stop: CancellationToken,
    ended: CancellationToken,
) -> Result<(), ReaderError> {
    // Cancelled before the stream (a parameter, dropped after this) lets the slot go.
    let _ended = ended.drop_guard();
    let mut last_feedback = std::time::Instant::now();
    loop {
        let event = match stream.next_event(&stop).await {
            Ok(event) => event,
            Err(_) if stop.is_cancelled() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if events.send(event).await.is_err() {
            return Ok(()); // the reader stopped
        }
        if last_feedback.elapsed() >= ACK_EVERY {
            stream.send_feedback().await?;
            last_feedback = std::time::Instant::now();
        }
    }
}

/// A query whether a replication connection is copying the tables into `slot`: it made the
/// slot, exporting its snapshot, and sent nothing since (the slot is not active while it copies).
fn copying(slot: &str) -> String {
    format!(
        "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'walsender' \
         AND query LIKE 'CREATE_REPLICATION_SLOT%' AND position({} in query) > 0",
        super::literal(&format!("\"{slot}\""))
    )
}

/// Writes a heartbeat every `every` until `stop`, on a connection of its own (the replication
/// one only replicates). When one fails and the database then takes no new session either, it
/// ends, cancelling `stop`: the reader disconnects and connects again. That is how a fast
/// shutdown of PostgreSQL gets past the reader: it ends the other sessions first (this one)
/// and takes no new ones, then waits for the slot to be acknowledged to the end of what was
/// sent, which the reader cannot do (see [`acknowledge`]) but disconnecting ends. A heartbeat
/// refused by a database that does take sessions (a standby) is logged, and the next tried.
async fn heartbeats(
    conninfo: String,
    every: Duration,
    stop: CancellationToken,
) -> Result<(), ReaderError> {
    let plain = plain(&conninfo);
    let mut connection = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        let (plain, held) = (plain.clone(), connection.take());
        let beat = tokio::task::spawn_blocking(move || {
            let connect = || pg_walstream::PgReplicationConnection::connect(&plain);
            let mut c = match held {
                Some(c) => c,
                None => connect()?,
            };
            let sql = "SELECT pg_logical_emit_message(true, 'sluice_heartbeat', '')";
            if let Err(e) = super::query(&mut c, sql) {
                let mut fresh = connect()?;
                super::query(&mut fresh, "SELECT 1").map_err(std::io::Error::other)?;
                tracing::warn!(error = %e, "a PostgreSQL source's heartbeat failed");
                return Ok(fresh);
            }
            Ok::<_, ReaderError>(c)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        match beat {
            Ok(c) => connection = Some(c),
            Err(e) => {
                let why = "a PostgreSQL source's database takes no session: reconnecting";
                tracing::warn!(error = %e, "{why}");
                stop.cancel();
                return Err(ReaderError::Heartbeat(e.to_string()));
            }
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

/// A row as its table's Debezium row object: a column the row lacks is unchanged, but for the
/// columns past the first `known` (added after the row was written), which are null.
fn row_of(out: &TableOut, known: usize, row: &RowData) -> String {
    let added = &out.columns[known..];
    row_object(&out.columns, |name| {
        if added.iter().any(|(n, _)| n == name) {
            return Some(None);
        }
        row.get(name).map(|value| match value {
            pg_walstream::ColumnValue::Null => None,
            value => value.as_str(),
        })
    })
}

/// Why table `name` stopped: its columns changed (`change`) other than by a nullable column
/// added without a default.
fn schema_changed(name: &str, change: &str) -> String {
    format!(
        "table {name} changed in the database ({change}): it stopped there, every change before \
         is in; drop the source and create it again (a new snapshot) to read it as it is"
    )
}

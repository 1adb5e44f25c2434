//! Why a lake operation failed ([`Error`]), and who must act on it ([`Classify`]).
//!
//! Every failure of the lake is one of three kinds, and its [`Class`] says which:
//!
//! - **the user's**: a table name that cannot be one, a table or a version that does not exist,
//!   rows that do not fit the table;
//! - **the environment's**: the store (a disk, S3) could not be reached or refused for now, or
//!   another writer committed first. Retrying later helps, nothing is lost: a commit either
//!   happened whole or not at all. A store that cannot be reached is never the user's mistake,
//!   whichever layer of delta-rs reports it;
//! - **Sluice's**: anything else — a log or a file that should not be as it is, an operation
//!   the store or delta-rs does not support.
//!
//! delta-rs says what failed in one large enum ([`DeltaTableError`]) whose variants sometimes
//! carry their cause only as text; [`class_of_delta`] holds every decision about it in one
//! place, and the unit tests below construct each kind of error to pin them down.

use std::path::PathBuf;

use deltalake::DeltaTableError;
use deltalake::arrow::error::ArrowError;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::logstore::object_store;
use deltalake::parquet::errors::ParquetError;
use sluice_error::{Class, Classify};

/// Why a lake operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name cannot name a table: it is not one folder of the lake (see
    /// [`valid_table_name`](crate::valid_table_name)).
    #[error("invalid table name {0:?}")]
    InvalidName(String),
    /// The lake has no table of this name (never created, or dropped).
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    /// A table of this name exists already.
    #[error("table '{0}' already exists")]
    TableExists(String),
    /// Time travel to a version the table does not have: past its newest commit, or an instant
    /// before its first.
    #[error("table '{table}' has no version {version}")]
    NoSuchVersion {
        /// The table asked for.
        table: String,
        /// The version asked for, and the versions the table has.
        version: String,
    },
    /// The lake's location is neither a folder nor `s3://bucket/prefix`.
    #[error("invalid lake location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local lake's folder could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file that failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The lake's store failed outside any one table's operation (listing the tables, deleting
    /// a dropped table's files).
    #[error("the lake's store: {0}")]
    Store(#[from] object_store::Error),
    /// A table lacks a column it should have, and a column added to a table must be nullable
    /// (its rows so far have no value in it).
    #[error("table '{table}' lacks column {column}, which cannot be added: it is NOT NULL")]
    RequiredColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// delta-rs failed on an operation of one table.
    #[error("table '{table}': {source}")]
    Delta {
        /// The table the operation was on.
        table: String,
        /// delta-rs' error (boxed: it is large, and most results are not errors).
        source: Box<DeltaTableError>,
    },
}

/// The lake's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Classify for Error {
    fn class(&self) -> Class {
        self.class_and_code().0
    }

    fn code(&self) -> &'static str {
        self.class_and_code().1
    }
}

impl Error {
    fn class_and_code(&self) -> (Class, &'static str) {
        match self {
            Error::InvalidName(_) => (Class::InvalidValue, "invalid_table_name"),
            Error::TableNotFound(_) => NOT_FOUND,
            Error::TableExists(_) => EXISTS,
            Error::NoSuchVersion { .. } => (Class::InvalidValue, "no_such_version"),
            Error::InvalidLocation { .. } => (Class::InvalidValue, "invalid_lake_location"),
            // The lake's own folder: a disk that is full, gone or read-only is the operator's to
            // mend, and the same request succeeds once it is.
            Error::Io { .. } => UNAVAILABLE,
            Error::Store(source) => class_of_store(source),
            Error::RequiredColumn { .. } => INVALID_DATA,
            Error::Delta { source, .. } => class_of_delta(source),
        }
    }
}

/// The store could not serve the request now: a retry later may succeed, nothing was lost.
const UNAVAILABLE: (Class, &str) = (Class::Unavailable, "lake_unavailable");
/// The table (or a file of it) is not there.
const NOT_FOUND: (Class, &str) = (Class::UndefinedTable, "table_not_found");
/// The rows given do not fit the table.
const INVALID_DATA: (Class, &str) = (Class::InvalidData, "invalid_data");
/// A table of that name exists already.
const EXISTS: (Class, &str) = (Class::Exists, "table_exists");
/// Nothing the caller did nor the environment explains it.
const INTERNAL: (Class, &str) = (Class::Internal, "internal");

/// Who must act on an error of the lake's store.
fn class_of_store(error: &object_store::Error) -> (Class, &'static str) {
    use object_store::Error as S;
    match error {
        // The object is not there: the table was never created, or was dropped (its files go
        // with it).
        S::NotFound { .. } => NOT_FOUND,
        // A conditional write lost: another writer committed the same version first. The
        // commit did not happen; a retry reads theirs and commits after it.
        S::AlreadyExists { .. } | S::Precondition { .. } | S::NotModified { .. } => UNAVAILABLE,
        // The store cannot do what delta-rs asked, or was given a key it does not know: no
        // retry helps, and no request of the user's asked for it.
        S::NotSupported { .. } | S::NotImplemented { .. } | S::UnknownConfigurationKey { .. } => {
            INTERNAL
        }
        // Everything else is the store failing to serve: the network, a timeout, S3's own
        // errors, credentials or permissions the operator must mend, a failed I/O task. Never
        // the user's request.
        _ => UNAVAILABLE,
    }
}

/// Who must act on an error of delta-rs. Every variant is listed, so that a new one in a
/// delta-rs upgrade is decided here rather than falling through unseen.
pub fn class_of_delta(error: &DeltaTableError) -> (Class, &'static str) {
    use DeltaTableError as D;
    match error {
        // The store said why: its own error decides (a missing object, a lost race, an outage).
        D::ObjectStore { source } => class_of_store(source),
        // Reading or writing the log or a data file failed on the way: the store's, or the
        // local disk's.
        D::Io { .. } => UNAVAILABLE,
        // Another writer committed this version first, or a conflicting commit came between
        // this one's read and its write: the commit did not happen, and a retry reads theirs.
        D::VersionAlreadyExists(_) => UNAVAILABLE,
        D::Transaction { source } => class_of_transaction(source),
        // Reading the log and its checkpoints. The kernel's errors are of a crate Sluice does
        // not name, so a store failure in them (`Error interacting with object store: …`, the
        // very error an unreachable S3 gives when a table is opened) is found in their text; a
        // log that does not read for any other reason is not as delta-rs wrote it: ours.
        D::KernelError(kernel) => class_of_text(&kernel.to_string()).unwrap_or(INTERNAL),
        D::Kernel { source } => class_of_kernel(source),
        // A checkpoint or data file that does not read: the store failing under parquet (which
        // keeps the store's error as text), else a file not as delta-rs wrote it.
        D::Parquet { source } => class_of_parquet(source),
        // No table there.
        D::NotATable(_) | D::InvalidTableLocation(_) => NOT_FOUND,
        // The rows written do not fit the table: a type, a missing or extra column, a NULL in
        // a NOT NULL column. The caller must change them.
        D::SchemaMismatch { .. } | D::InvalidData { .. } => INVALID_DATA,
        D::Arrow { source } => class_of_arrow(source),
        // DataFusion's errors arrive as text (`Generic`): the text tells the store's failures,
        // the rows' and the rest apart (see `class_of_text`).
        D::Generic(message) => class_of_text(message).unwrap_or(INTERNAL),
        D::GenericError { source } => class_of_cause(source.as_ref()).unwrap_or(INTERNAL),
        // A version or an instant of time travel that cannot be one (change data feed past the
        // newest version, an instant that does not parse).
        D::InvalidVersion(_) => (Class::InvalidValue, "no_such_version"),
        D::InvalidDateTimeString { .. } => (Class::InvalidValue, "invalid_timestamp"),
        // A log, a checkpoint or a table's metadata not as the Delta protocol says, a feature
        // delta-rs lacks, or a call the lake should not have made (a change data feed the table
        // does not record, a version range backwards, a commit out of order): Sluice's to fix,
        // or the table's writer's.
        D::InvalidJsonLog { .. }
        | D::InvalidStatsJson { .. }
        | D::VersionDowngrade { .. }
        | D::NoSchema
        | D::PartitionError { .. }
        | D::InvalidPartitionFilter { .. }
        | D::CommitValidation { .. }
        | D::VersionMismatch(..)
        | D::MissingFeature { .. }
        | D::SerializeLogJson { .. }
        | D::MetadataError(_)
        | D::NotInitialized
        | D::NotInitializedWithFiles(_)
        | D::ChangeDataNotRecorded { .. }
        | D::ChangeDataNotEnabled { .. }
        | D::ChangeDataInvalidVersionRange { .. }
        | D::ChangeDataTimestampGreaterThanCommit { .. }
        | D::NoStartingVersionOrTimestamp
        | D::UnsupportedColumnMapping { .. } => INTERNAL,
    }
}

/// Who must act on a failed commit.
fn class_of_transaction(error: &TransactionError) -> (Class, &'static str) {
    use CommitConflictError as C;
    use TransactionError as T;
    match error {
        T::ObjectStore { source } => class_of_store(source),
        // Another writer got there first (the same version, a commit that conflicts with this
        // one, every retry lost), or the log store's own database failed: retry.
        T::VersionAlreadyExists(_)
        | T::MaxCommitAttempts(_)
        | T::LogStoreError { .. }
        | T::CommitConflict(
            C::ConcurrentAppend
            | C::ConcurrentDeleteRead
            | C::ConcurrentDeleteDelete
            | C::MetadataChanged
            | C::ConcurrentTransaction
            | C::ProtocolChanged(_),
        ) => UNAVAILABLE,
        // A commit that could never succeed, however often retried: the table's protocol or
        // configuration forbids it, or the commit itself is malformed.
        T::CommitConflict(
            C::UnsupportedWriterVersion(_)
            | C::UnsupportedReaderVersion(_)
            | C::CorruptedState { .. }
            | C::Predicate { .. }
            | C::NoMetadata,
        )
        | T::SerializeLogJson { .. }
        | T::DeltaTableAppendOnly
        | T::UnsupportedTableFeatures(_)
        | T::TableFeaturesRequired(_) => INTERNAL,
    }
}

/// Who must act on an error of delta-rs' reading of the log.
fn class_of_kernel(error: &deltalake::kernel::Error) -> (Class, &'static str) {
    use deltalake::kernel::Error as K;
    match error {
        K::ObjectStore(source) => class_of_store(source),
        K::Parquet(source) => class_of_parquet(source),
        K::GenericError { source } => class_of_cause(source.as_ref()).unwrap_or(INTERNAL),
        // A file the log names is gone (a table dropped while it was read).
        K::FileNotFound(_) => NOT_FOUND,
        // The log does not say what the protocol says it must: not the caller's doing.
        _ => INTERNAL,
    }
}

/// Who must act on a Parquet file (a checkpoint, a data file) that could not be read.
fn class_of_parquet(error: &ParquetError) -> (Class, &'static str) {
    match error {
        ParquetError::External(source) => class_of_cause(source.as_ref()).unwrap_or(INTERNAL),
        // Parquet keeps a store failure met while fetching a file as text only.
        other => class_of_text(&other.to_string()).unwrap_or(INTERNAL),
    }
}

/// Who must act on an Arrow error (delta-rs converting the rows written to the table's schema).
fn class_of_arrow(error: &ArrowError) -> (Class, &'static str) {
    match error {
        // The rows do not fit the table: a value that does not cast to its column's type, a
        // batch whose columns are not the table's, a NULL in a NOT NULL column.
        ArrowError::CastError(_)
        | ArrowError::SchemaError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_) => INVALID_DATA,
        ArrowError::IoError(..) => UNAVAILABLE,
        ArrowError::ExternalError(source) => class_of_cause(source.as_ref()).unwrap_or(INTERNAL),
        ArrowError::ParquetError(text) => class_of_text(text).unwrap_or(INTERNAL),
        // Arithmetic, memory, formats the lake does not write: not the caller's doing.
        _ => INTERNAL,
    }
}

/// The class of the first error in `error`'s chain of causes whose type says who must act, or
/// else of its text.
fn class_of_cause(error: &(dyn std::error::Error + 'static)) -> Option<(Class, &'static str)> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(e) = cause.downcast_ref::<object_store::Error>() {
            return Some(class_of_store(e));
        }
        if let Some(e) = cause.downcast_ref::<DeltaTableError>() {
            return Some(class_of_delta(e));
        }
        if let Some(e) = cause.downcast_ref::<ArrowError>() {
            return Some(class_of_arrow(e));
        }
        if let Some(e) = cause.downcast_ref::<ParquetError>() {
            return Some(class_of_parquet(e));
        }
        if cause.is::<std::io::Error>() {
            return Some(UNAVAILABLE);
        }
        next = cause.source();
    }
    class_of_text(&error.to_string())
}

/// What the lake's dependencies write when the store failed, when the rows given do not fit
/// the table, and when a table exists already: the class of each, for errors that arrive as
/// text only (DataFusion's, parquet's, the kernel's). Messages nest (`External error: Arrow
/// error: Cast error: …`), and a user's value can only appear after the words that introduce
/// it, so the marker found first in the text decides.
const MARKERS: &[(&str, (Class, &str))] = &[
    // The store, as DataFusion, delta-rs, its kernel, object_store and the OS word it.
    ("Object Store error", UNAVAILABLE),
    ("Failed to read delta log object", UNAVAILABLE),
    ("Error interacting with object store", UNAVAILABLE),
    ("Log storage error", UNAVAILABLE),
    ("Generic S3 error", UNAVAILABLE),
    ("Generic LocalFileSystem error", UNAVAILABLE),
    ("lacked the necessary privileges", UNAVAILABLE),
    ("lacked valid authentication credentials", UNAVAILABLE),
    ("Object at location", UNAVAILABLE),
    ("File not found: ", NOT_FOUND),
    ("IO error: ", UNAVAILABLE),
    ("Io error: ", UNAVAILABLE),
    ("(os error ", UNAVAILABLE),
    // The rows: a value that does not cast, a column the table lacks or has another type, a
    // NULL in a NOT NULL column, two rows for one key of a MERGE, a missing partition column.
    ("Cast error", INVALID_DATA),
    ("Cannot cast", INVALID_DATA),
    ("Parser error", INVALID_DATA),
    ("Invalid data found", INVALID_DATA),
    ("Data does not match the schema", INVALID_DATA),
    ("No field named", INVALID_DATA),
    (
        "MERGE matched a target row with multiple source rows",
        INVALID_DATA,
    ),
    (
        "Partition column(s) not found in write schema",
        INVALID_DATA,
    ),
    ("Specified table partitioning does not match", INVALID_DATA),
    // Two creations of one table at once: the first commit won.
    ("A table already exists at", EXISTS),
];

/// The class the first marker in `text` gives (see [`MARKERS`]). A store's failure that is
/// a missing object is [`NOT_FOUND`], as [`class_of_store`] has it.
fn class_of_text(text: &str) -> Option<(Class, &'static str)> {
    let (at, class) = MARKERS
        .iter()
        .filter_map(|(marker, class)| Some((text.find(marker)?, *class)))
        .min_by_key(|&(at, _)| at)?;
    if class != UNAVAILABLE {
        return Some(class);
    }
    // object_store words a missing object `Object at location <path> not found: <cause>`.
    let rest = &text[at..];
    let missing = rest.find("Object at location").is_some_and(|from| {
        rest[from..]
            .split(": ")
            .next()
            .is_some_and(|says| says.ends_with(" not found"))
    });
    Some(if missing { NOT_FOUND } else { UNAVAILABLE })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(source: DeltaTableError) -> Error {
        Error::Delta {
            table: "t".into(),
            source: Box::new(source),
        }
    }

    fn store(
        make: fn(String, Box<dyn std::error::Error + Send + Sync>) -> object_store::Error,
    ) -> object_store::Error {
        make(
            "lake/t/_delta_log/00000000000000000003.json".into(),
            "it says no".into(),
        )
    }

    fn s3_down() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "error sending request: tcp connect error: Connection refused (os error 111)"
                .into(),
        }
    }

    #[track_caller]
    fn assert_class(error: Error, class: Class, code: &str) {
        assert_eq!((error.class(), error.code()), (class, code), "{error}");
    }

    #[test]
    fn the_lakes_own_errors_name_the_user_or_the_environment() {
        assert_class(
            Error::InvalidName("../x".into()),
            Class::InvalidValue,
            "invalid_table_name",
        );
        assert_class(
            Error::TableNotFound("t".into()),
            Class::UndefinedTable,
            "table_not_found",
        );
        assert_class(
            Error::NoSuchVersion {
                table: "t".into(),
                version: "9".into(),
            },
            Class::InvalidValue,
            "no_such_version",
        );
        assert_class(
            Error::InvalidLocation {
                location: "gs://b".into(),
                reason: "not s3".into(),
            },
            Class::InvalidValue,
            "invalid_lake_location",
        );
        assert_class(
            Error::Io {
                path: "/lake".into(),
                source: std::io::Error::other("disk full"),
            },
            Class::Unavailable,
            "lake_unavailable",
        );
    }

    #[test]
    fn a_store_that_cannot_serve_is_unavailable_never_the_users_mistake() {
        use object_store::Error as S;
        let unavailable = [
            s3_down(),
            store(|path, source| S::PermissionDenied { path, source }),
            store(|path, source| S::Unauthenticated { path, source }),
            // A conditional commit that lost to another writer's: retry.
            store(|path, source| S::AlreadyExists { path, source }),
            store(|path, source| S::Precondition { path, source }),
            store(|path, source| S::NotModified { path, source }),
        ];
        for error in unavailable {
            assert_class(Error::Store(error), Class::Unavailable, "lake_unavailable");
        }
        assert_class(
            Error::Store(store(|path, source| S::NotFound { path, source })),
            Class::UndefinedTable,
            "table_not_found",
        );
        let internal = [
            S::NotSupported {
                source: "no rename".into(),
            },
            S::NotImplemented {
                operation: "copy_if_not_exists".into(),
                implementer: "S3".into(),
            },
            S::UnknownConfigurationKey {
                store: "S3",
                key: "aws_nonsense".into(),
            },
        ];
        for error in internal {
            assert_class(Error::Store(error), Class::Internal, "internal");
        }
    }

    #[test]
    fn delta_errors_caused_by_the_store_are_unavailable_wherever_it_is_wrapped() {
        let wrapped = [
            DeltaTableError::ObjectStore { source: s3_down() },
            DeltaTableError::Io {
                source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            },
            DeltaTableError::VersionAlreadyExists(4),
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentAppend),
            },
            DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(15),
            },
            DeltaTableError::Transaction {
                source: TransactionError::ObjectStore { source: s3_down() },
            },
            DeltaTableError::GenericError {
                source: Box::new(s3_down()),
            },
            DeltaTableError::Kernel {
                source: deltalake::kernel::Error::ObjectStore(s3_down()),
            },
            DeltaTableError::Arrow {
                source: ArrowError::ExternalError(Box::new(s3_down())),
            },
            DeltaTableError::Parquet {
                source: ParquetError::External(Box::new(s3_down())),
            },
            // A checkpoint read cut short: parquet keeps the store's error as text only.
            DeltaTableError::Parquet {
                source: ParquetError::General(format!(
                    "Failed to fetch metadata for file 00000000000000000100.checkpoint.parquet: \
                     Object Store error: {}",
                    s3_down()
                )),
            },
            // DataFusion's errors reach delta-rs as text.
            DeltaTableError::Generic(format!(
                "External error: Failed to read delta log object: {}",
                s3_down()
            )),
            DeltaTableError::Generic(format!("Object Store error: {}", s3_down())),
        ];
        for source in wrapped {
            assert_class(delta(source), Class::Unavailable, "lake_unavailable");
        }
    }

    #[test]
    fn a_table_or_a_file_that_is_not_there_is_an_undefined_table() {
        let missing = [
            DeltaTableError::NotATable("no log at lake/t".into()),
            DeltaTableError::InvalidTableLocation("lake/t".into()),
            DeltaTableError::ObjectStore {
                source: store(|path, source| object_store::Error::NotFound { path, source }),
            },
            DeltaTableError::Kernel {
                source: deltalake::kernel::Error::FileNotFound("part-0.parquet".into()),
            },
            // A data file gone under a change data feed's read, as delta-rs reports it.
            DeltaTableError::Parquet {
                source: ParquetError::General(
                    "Failed to fetch metadata for file part-0.parquet: Object Store error: \
                     Object at location /lake/t/part-0.parquet not found: No such file or \
                     directory (os error 2)"
                        .into(),
                ),
            },
        ];
        for source in missing {
            assert_class(delta(source), Class::UndefinedTable, "table_not_found");
        }
    }

    #[test]
    fn rows_that_do_not_fit_the_table_are_invalid_data() {
        let rows = [
            DeltaTableError::SchemaMismatch {
                msg: "column k is Int64, not Utf8".into(),
            },
            DeltaTableError::InvalidData {
                message: "1 rows failed validation check".into(),
            },
            // What `append` answers for a value of another type, and for a column too many.
            DeltaTableError::Arrow {
                source: ArrowError::CastError(
                    "Cannot cast string 'x' to value of Int64 type".into(),
                ),
            },
            DeltaTableError::Arrow {
                source: ArrowError::SchemaError(
                    "Cannot cast schema, number of fields does not match: 3 vs 2".into(),
                ),
            },
            // What `upsert` answers for the same, through DataFusion.
            DeltaTableError::Generic(
                "Arrow error: Cast error: Cannot cast string 'x' to value of Int64 type".into(),
            ),
            // A NULL in a NOT NULL column.
            DeltaTableError::Generic(
                "External error: Invalid data found: 1 rows failed validation check.".into(),
            ),
            // Two rows for one key in one MERGE.
            DeltaTableError::Generic(
                "External error: Generic DeltaTable error: MERGE matched a target row with \
                 multiple source rows that satisfy duplicate relevant WHEN MATCHED clauses"
                    .into(),
            ),
            // A user's value that reads like a store's failure is still the user's.
            DeltaTableError::Generic(
                "Arrow error: Cast error: Cannot cast string 'Object Store error (os error 5)' \
                 to value of Int64 type"
                    .into(),
            ),
        ];
        for source in rows {
            assert_class(delta(source), Class::InvalidData, "invalid_data");
        }
    }

    #[test]
    fn versions_that_cannot_be_are_invalid_values() {
        assert_class(
            delta(DeltaTableError::InvalidVersion(9)),
            Class::InvalidValue,
            "no_such_version",
        );
        let instant = "yesterday"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .expect_err("not an instant");
        assert_class(
            delta(DeltaTableError::InvalidDateTimeString { source: instant }),
            Class::InvalidValue,
            "invalid_timestamp",
        );
    }

    #[test]
    fn everything_else_is_ours() {
        let ours = [
            DeltaTableError::Generic("writer task join error: panicked".into()),
            DeltaTableError::MetadataError("no schema string".into()),
            DeltaTableError::ChangeDataNotEnabled { version: 0 },
            DeltaTableError::Transaction {
                source: TransactionError::DeltaTableAppendOnly,
            },
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(
                    CommitConflictError::UnsupportedWriterVersion(9),
                ),
            },
            DeltaTableError::Parquet {
                source: ParquetError::General("Invalid Parquet file. Corrupt footer".into()),
            },
            DeltaTableError::Arrow {
                source: ArrowError::MemoryError("out of buffers".into()),
            },
        ];
        for source in ours {
            assert_class(delta(source), Class::Internal, "internal");
        }
    }

    #[test]
    fn a_table_created_twice_at_once_exists() {
        assert_class(
            delta(DeltaTableError::Generic(
                "A table already exists at: file:///lake/t/".into(),
            )),
            Class::Exists,
            "table_exists",
        );
    }
}

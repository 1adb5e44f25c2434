//! Why a pipeline cannot run, or a view cannot be made, and who must act on it.

use sluice_error::{Class, Classify, Position};

/// Why a pipeline cannot run, or a view cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// What the user asked for (a view's query or shape) cannot be done.
    #[error("{0}")]
    Unsupported(String),
    /// A value that cannot be used (a view's name).
    #[error("{0}")]
    Invalid(String),
    /// A view's query that DataFusion refused to plan: its class says why (an unknown table
    /// or column, a type that does not fit, …).
    #[error("{message}")]
    Plan {
        /// What DataFusion's error means for whoever must act (see `sluice-error`).
        class: Class,
        /// DataFusion's message.
        message: String,
        /// Where in the query, when DataFusion said.
        position: Option<Position>,
    },
    /// A view of this name exists already.
    #[error("materialized view '{0}' already exists")]
    ViewExists(String),
    /// No view has this name.
    #[error("materialized view '{0}' does not exist")]
    ViewNotFound(String),
    /// A view may not take a name a stream or a table has: its tables would be another's.
    /// `taken` says by what.
    #[error("{taken}: a materialized view needs a name of its own")]
    NameTaken {
        /// What has the name already (`'ticks' is a stream`).
        taken: String,
    },
    /// Views read it: it cannot be dropped before them.
    #[error("{0}")]
    InUse(String),
    /// The stream or view the pipeline reads is gone (dropped, or dropped and created again).
    #[error("{0}")]
    InputGone(String),
    /// A view's statement or stored query that does not parse.
    #[error(transparent)]
    Sql(#[from] sluice_sql::SqlError),
    /// The data directory (a view's definition or state).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder the operation was on.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The log refused a read or a drop (an unknown stream, a disk that failed).
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    /// The lake refused a read or a commit (a store that cannot be reached, a table that is not
    /// there).
    #[error(transparent)]
    Lake(#[from] sluice_lake::Error),
    /// Something the pipeline depends on cannot be reached now (a lake table a view joins).
    #[error("{0}")]
    Unavailable(String),
    /// The partitions the pipeline reads are no longer those it was opened with (a topic grew,
    /// partitions moved between workers), or a table says another worker took one: it is
    /// opened again, at once, from its tables' positions. Not a failure.
    #[error("{0}")]
    Reassigned(String),
    /// A bug in Sluice (a task that panicked, a state that cannot be).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for PipelineError {
    fn class(&self) -> Class {
        match self {
            PipelineError::Unsupported(_) => Class::Unsupported,
            PipelineError::Invalid(_) => Class::InvalidValue,
            PipelineError::Plan { class, .. } => *class,
            PipelineError::ViewExists(_) | PipelineError::NameTaken { .. } => Class::Exists,
            PipelineError::InUse(_) => Class::InUse,
            PipelineError::ViewNotFound(_) | PipelineError::InputGone(_) => Class::UndefinedTable,
            PipelineError::Sql(e) => e.class(),
            PipelineError::Io { .. }
            | PipelineError::Unavailable(_)
            | PipelineError::Reassigned(_) => Class::Unavailable,
            PipelineError::Log(e) => e.class(),
            PipelineError::Lake(e) => e.class(),
            PipelineError::Internal(_) => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PipelineError::Unsupported(_) => "unsupported_view",
            PipelineError::Invalid(_) => "invalid_view",
            PipelineError::Plan { .. } => "view_query_error",
            PipelineError::ViewExists(_) => "view_exists",
            PipelineError::NameTaken { .. } => "name_taken",
            PipelineError::InUse(_) => "view_in_use",
            PipelineError::ViewNotFound(_) => "view_not_found",
            PipelineError::InputGone(_) => "input_gone",
            PipelineError::Sql(e) => e.code(),
            PipelineError::Io { .. } | PipelineError::Unavailable(_) => "unavailable",
            PipelineError::Reassigned(_) => "reassigned",
            PipelineError::Log(e) => e.code(),
            PipelineError::Lake(e) => e.code(),
            PipelineError::Internal(_) => "internal",
        }
    }

    fn position(&self) -> Option<Position> {
        match self {
            PipelineError::Plan { position, .. } => *position,
            PipelineError::Sql(e) => e.position(),
            _ => None,
        }
    }
}

/// The class of an error DataFusion carries for the lake (a table that could not be opened).
pub fn lake_class(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<Class> {
    e.downcast_ref::<sluice_lake::Error>()
        .map(Classify::class)
        .or_else(|| {
            e.downcast_ref::<sluice_lake::DeltaTableError>()
                .map(|e| sluice_lake::class_of_delta(e).0)
        })
}

impl From<datafusion::error::DataFusionError> for PipelineError {
    /// A DataFusion error of a round: the lake unreachable, or a bug (the view's query was
    /// planned and checked when the view was created).
    fn from(e: datafusion::error::DataFusionError) -> Self {
        match sluice_error::datafusion::class_of(&e, &lake_class).0 {
            Class::Unavailable => PipelineError::Unavailable(e.strip_backtrace()),
            _ => PipelineError::Internal(e.strip_backtrace()),
        }
    }
}

impl From<arrow::error::ArrowError> for PipelineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        PipelineError::Internal(e.to_string())
    }
}

/// A view's query that DataFusion would not plan, classified.
pub(crate) fn refused(e: datafusion::error::DataFusionError) -> PipelineError {
    let (class, position) = sluice_error::datafusion::class_of(&e, &lake_class);
    match class {
        Class::Unavailable | Class::Internal => e.into(),
        class => PipelineError::Plan {
            class,
            message: e.strip_backtrace(),
            position,
        },
    }
}

/// The pipelines' result.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

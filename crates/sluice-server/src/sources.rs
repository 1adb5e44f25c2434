//! `CREATE SOURCE`, `DROP SOURCE` and `SHOW SOURCES` for every SQL door: PostgreSQL sources
//! (`sluice_ingest::postgres`), in a build with the cargo feature `postgres`.

use datafusion::arrow::datatypes::DataType;
use serde_json::json;
use sluice_sql::Statement;

use crate::ServerError;
use crate::router::AppState;
use crate::sql::QueryResult;

/// Runs a source statement.
pub async fn answer(state: &AppState, statement: Statement) -> Result<QueryResult, ServerError> {
    #[cfg(feature = "postgres")]
    {
        let sources = &state.sources;
        let answer = match statement {
            Statement::CreateSource(create) => {
                if let Some(cluster) = &state.cluster {
                    return Err(ServerError::Unsupported(format!(
                        "PostgreSQL sources do not run in a cluster yet (this worker is one of \
                         cluster '{}'): a slot has one reader, and moving it between workers is \
                         still to come",
                        cluster.name
                    )));
                }
                let tables = state.lake.table_names();
                let taken = |name: &str| {
                    tables
                        .iter()
                        .any(|t| t == name)
                        .then(|| "a table of the lake has that name".to_string())
                };
                sources.create_source(create, taken).await?;
                QueryResult::default()
            }
            Statement::DropSource { name, if_exists } => {
                let dropped = sources.drop_source(&name, if_exists).await?;
                QueryResult {
                    columns: Vec::from([("dropped", DataType::Utf8)]),
                    rows: dropped.into_iter().map(|d| vec![json!(d)]).collect(),
                }
            }
            _ => show(sources),
        };
        // The tables' streams come and go: their pipelines with them, before the answer.
        state.pipelines.reconcile().await;
        Ok(answer)
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = state;
        Err(ServerError::Unsupported(format!(
            "{}: this build of Sluice has no PostgreSQL sources (cargo feature postgres)",
            statement.tag()
        )))
    }
}

#[cfg(feature = "postgres")]
fn show(sources: &sluice_ingest::postgres::Sources) -> QueryResult {
    let rows = sources
        .list()
        .into_iter()
        .map(|t| {
            vec![
                json!(t.source),
                json!(t.table),
                json!(t.stream),
                json!(t.slot),
                json!(t.state),
                json!(t.behind),
                json!(t.last_error),
            ]
        })
        .collect();
    QueryResult {
        columns: Vec::from([
            ("source", DataType::Utf8),
            ("table", DataType::Utf8),
            ("stream", DataType::Utf8),
            ("slot", DataType::Utf8),
            ("state", DataType::Utf8),
            ("behind", DataType::UInt64),
            ("last_error", DataType::Utf8),
        ]),
        rows,
    }
}

/// The pipelines, as a source sees them: how far they have taken its streams, and a stream's
/// pipeline started again when a column is added to it.
#[cfg(feature = "postgres")]
pub struct Downstream(pub std::sync::Arc<sluice_pipeline::Pipelines>);

#[cfg(feature = "postgres")]
impl sluice_ingest::postgres::Downstream for Downstream {
    fn taken(&self, stream: &str) -> Option<u64> {
        self.0.taken(stream)
    }

    fn reopen<'a>(&'a self, stream: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.0.reopen(stream))
    }
}

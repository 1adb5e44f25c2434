//! `CREATE SOURCE`, `DROP SOURCE` and `SHOW SOURCES` for every SQL door: PostgreSQL sources
//! (`sluice_ingest::postgres`), in a build with the cargo feature `postgres`; and what the
//! sources need of the server: where they are kept (the data directory, or a cluster's lake:
//! [`shelf`]) and what lies downstream of them ([`Downstream`]).

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
            _ => show(sources).await,
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
async fn show(sources: &sluice_ingest::postgres::Sources) -> QueryResult {
    let rows = sources
        .list()
        .await
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

/// Where a server keeps its sources: its data directory's `sources/`, or, on a worker of a
/// cluster, the lake (`.sluice/cluster-<name>-sources/<source>.json`, `.made`, `.done`,
/// `.stopped`), which every worker follows.
#[cfg(feature = "postgres")]
pub fn shelf(
    data_dir: &std::path::Path,
    lake: &sluice_lake::Lake,
    cluster: Option<&crate::cluster::Cluster>,
) -> std::sync::Arc<dyn sluice_ingest::postgres::Shelf> {
    use sluice_ingest::postgres::Directory;
    match cluster {
        None => std::sync::Arc::new(Directory(data_dir.join("sources"))),
        Some(cluster) => {
            let kind = format!("cluster-{}-sources", cluster.name);
            std::sync::Arc::new(LakeShelf {
                definitions: lake.files(&kind, "json"),
                made: lake.files(&kind, "made"),
                done: lake.files(&kind, "done"),
                stopped: lake.files(&kind, "stopped"),
            })
        }
    }
}

/// A cluster's sources, in its lake.
#[cfg(feature = "postgres")]
struct LakeShelf {
    definitions: sluice_lake::Documents,
    made: sluice_lake::Documents,
    done: sluice_lake::Documents,
    stopped: sluice_lake::Documents,
}

#[cfg(feature = "postgres")]
impl LakeShelf {
    fn documents(&self, kept: sluice_ingest::postgres::Kept) -> &sluice_lake::Documents {
        use sluice_ingest::postgres::Kept;
        match kept {
            Kept::Definition => &self.definitions,
            Kept::SlotMade => &self.made,
            Kept::SnapshotDone => &self.done,
            Kept::Stopped => &self.stopped,
        }
    }
}

#[cfg(feature = "postgres")]
impl sluice_ingest::postgres::Shelf for LakeShelf {
    fn names(&self) -> BoxFuture<'_, std::io::Result<Vec<String>>> {
        Box::pin(async move {
            let tags = self
                .definitions
                .tags()
                .await
                .map_err(std::io::Error::other)?;
            Ok(tags.into_iter().map(|(name, _)| name).collect())
        })
    }

    fn get<'a>(
        &'a self,
        source: &'a str,
        kept: sluice_ingest::postgres::Kept,
    ) -> BoxFuture<'a, std::io::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let documents = self.documents(kept);
            documents.get(source).await.map_err(std::io::Error::other)
        })
    }

    fn put<'a>(
        &'a self,
        source: &'a str,
        kept: sluice_ingest::postgres::Kept,
        content: Vec<u8>,
        create: bool,
    ) -> BoxFuture<'a, std::io::Result<bool>> {
        Box::pin(async move {
            let documents = self.documents(kept);
            let put = documents.put(source, content, create).await;
            put.map_err(std::io::Error::other)
        })
    }

    fn forget<'a>(
        &'a self,
        source: &'a str,
        kept: sluice_ingest::postgres::Kept,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let documents = self.documents(kept);
            documents
                .delete(source)
                .await
                .map(drop)
                .map_err(std::io::Error::other)
        })
    }
}

/// The pipelines and the log, as a source sees them: how far the pipelines have taken its
/// streams, where the streams' records are (the log's shards, or a cluster's topics), and a
/// stream's pipeline started again when a column is added to it.
#[cfg(feature = "postgres")]
pub struct Downstream(pub std::sync::Arc<sluice_pipeline::Pipelines>);

#[cfg(feature = "postgres")]
impl sluice_ingest::postgres::Downstream for Downstream {
    fn taken<'a>(
        &'a self,
        stream: &'a std::sync::Arc<sluice_log::Stream>,
    ) -> BoxFuture<'a, Option<u64>> {
        Box::pin(self.0.taken(stream))
    }

    fn tail<'a>(
        &'a self,
        stream: &'a std::sync::Arc<sluice_log::Stream>,
    ) -> BoxFuture<'a, std::io::Result<sluice_log::Tail>> {
        let stream = stream.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                match sluice_pipeline::source::topic_tail(&stream, 0) {
                    Ok(Some(tail)) => Ok(tail),
                    Ok(None) => stream.tail(0).map_err(std::io::Error::other),
                    Err(e) => Err(std::io::Error::other(e)),
                }
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        })
    }

    fn reopen<'a>(&'a self, stream: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.0.reopen(stream))
    }
}

#[cfg(feature = "postgres")]
use futures::future::BoxFuture;

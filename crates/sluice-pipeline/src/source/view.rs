//! An append-only view as the source of the views that read it: the rows its commits add, read
//! through its table's change data feed.
//!
//! One partition (0), whose positions are the upstream table's versions: position `n` means
//! every commit before version `n` has been taken, so the exactly-once rules hold unchanged.
//! Each row comes as the upstream table has it, with `_shard` 0, `_seq` the version of the
//! commit that added it and `_ingested_at` that commit's time. A read takes at most
//! [`MAX_COMMITS`] commits. A view created over another reads its feed from the first version:
//! if the upstream was vacuumed since (or its log cleaned up), that history cannot be read, and
//! the reading view reports the error.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use sluice_lake::{Lake, LakeTable};

use super::{Bounds, Limits, PartRead, Source, SourceRead};
use crate::decode;
use crate::exactly_once::{self, Partition, Positions};
use crate::{PipelineError, Result};

/// Most commits of the upstream view one read takes.
pub const MAX_COMMITS: u64 = 100;

/// An append-only view's table, read by the views over it.
pub struct UpstreamView {
    name: String,
    id: u64,
    table: tokio::sync::Mutex<LakeTable>,
    /// The table's columns, then `_shard`, `_seq`, `_ingested_at`.
    schema: SchemaRef,
}

impl UpstreamView {
    /// View `name`'s table in `lake`.
    pub async fn open(lake: &Lake, name: &str) -> Result<UpstreamView> {
        let table = lake.open(name).await?;
        let id = match exactly_once::writer(&table) {
            Some(exactly_once::Writer::View(id)) => id,
            _ => {
                return Err(PipelineError::Unsupported(format!(
                    "'{name}' is not a materialized view's table"
                )));
            }
        };
        Ok(UpstreamView {
            name: name.to_string(),
            id,
            schema: rows_schema(&table.arrow_schema()?),
            table: tokio::sync::Mutex::new(table),
        })
    }
}

/// The rows of a view's table as a source gives them: its columns, then `_shard`, `_seq`,
/// `_ingested_at`.
pub(crate) fn rows_schema(table: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(decode::meta_fields());
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl Source for UpstreamView {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        let mut table = self.table.lock().await;
        table.refresh().await?;
        let next = table.version().map_or(0, |v| v + 1);
        Ok(BTreeMap::from([(0, Bounds { oldest: 0, next })]))
    }

    async fn read(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        let Some(&limit) = limits.get(&0) else {
            return Ok(SourceRead {
                parts: Vec::new(),
                backlog: false,
            });
        };
        let mut table = self.table.lock().await;
        table.refresh().await?;
        let newest = table.version().unwrap_or(0);
        let from = from.get(&0).copied().unwrap_or(0);
        let to = newest.min(from + (limit as u64).clamp(1, MAX_COMMITS) - 1);
        let rows = match from > newest {
            true => RecordBatch::new_empty(self.schema.clone()),
            false => appended(&table, from, to, &self.schema).await?,
        };
        let next = match from > newest {
            true => from,
            false => to + 1,
        };
        Ok(SourceRead {
            parts: vec![PartRead {
                partition: 0,
                records: rows.num_rows(),
                rows,
                errors: RecordBatch::new_empty(decode::error_schema()),
                next,
                gap: None,
            }],
            backlog: next <= newest,
        })
    }
}

/// What the upstream's commits `from..=to` appended, as rows of `schema`.
async fn appended(
    table: &LakeTable,
    from: u64,
    to: u64,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut rows = Vec::new();
    for batch in table.appended(from, to).await? {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| PipelineError::Internal(format!("the change feed lacks {name}")))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields().iter().take(schema.fields().len() - 3) {
            columns.push(arrow::compute::cast(
                column(field.name())?,
                field.data_type(),
            )?);
        }
        let version = arrow::compute::cast(column("_commit_version")?, &DataType::Int64)?;
        let at = arrow::compute::cast(
            column("_commit_timestamp")?,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?;
        columns.push(Arc::new(Int32Array::from(vec![0; batch.num_rows()])));
        columns.push(version);
        columns.push(at);
        rows.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(concat_batches(schema, &rows)?)
}

//! Batch SQL on the lake: the writes a Glue job does, as statements.
//!
//! | statement | what it does |
//! | --- | --- |
//! | `CREATE TABLE t [PARTITIONED BY (c, …)] AS SELECT …` | a new Delta table holding the query's rows, in one commit |
//! | `INSERT INTO t [(c, …)] SELECT … / VALUES …` | appends rows in one commit: DataFusion plans it, delta-rs' sink writes |
//! | `DROP TABLE [IF EXISTS] t, …` | deletes tables and their files |
//! | `OPTIMIZE t` | compacts small files (Delta OPTIMIZE): no row changes |
//! | `VACUUM t [RETAIN n HOURS] [DRY RUN]` | deletes files only older versions read |
//!
//! Invariant: a stream's tables (`<stream>`, `<stream>_errors`) are written only by its
//! pipeline, and an earlier version of a table (`t@v3`) is never written: the first three
//! statements refuse both; `OPTIMIZE` and `VACUUM` change no row, so they take any table. A
//! write answers the number of rows it wrote, as `count`.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{CreateTable, HiveDistributionStyle, ObjectName, TableObject};

use sluice_error::Class;

use crate::{QueryEngine, QueryError, QueryOutput, Result};

impl QueryEngine {
    /// The lake table `name` stands for, resolved as DataFusion resolves names (unquoted parts
    /// in lower case; `t`, `public.t` or `sluice.public.t`).
    pub(crate) fn lake_name(name: &ObjectName) -> Result<String> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| {
                let ident = part
                    .as_ident()
                    .ok_or_else(|| QueryError::Refused(format!("'{name}' is not a table name")))?;
                Ok(match ident.quote_style {
                    Some(_) => ident.value.clone(),
                    None => ident.value.to_ascii_lowercase(),
                })
            })
            .collect::<Result<_>>()?;
        let table = match parts.as_slice() {
            [table] => table,
            [schema, table] if schema == "public" => table,
            [catalog, schema, table] if catalog == "sluice" && schema == "public" => table,
            _ => {
                return Err(QueryError::Refused(format!(
                    "'{name}' is not in the lake: tables are named t or public.t"
                )));
            }
        };
        if sluice_sql::AsOf::parse_name(table).is_some() {
            return Err(QueryError::Refused(format!(
                "'{table}' is an earlier version of a table: it cannot be written"
            )));
        }
        if !sluice_lake::valid_table_name(table) {
            return Err(QueryError::Refused(format!(
                "'{table}' cannot name a table: use 1 to {} letters, digits, '_', '-' and '.'",
                sluice_lake::MAX_TABLE_NAME
            )));
        }
        Ok(table.clone())
    }

    /// The lake table a statement names, if the statement may write it: not a stream's, nor a
    /// materialized view's (their pipelines are their only writers).
    pub(crate) async fn writable(&self, name: &ObjectName) -> Result<String> {
        let table = Self::lake_name(name)?;
        if let Some((stream, _)) = self.stream_of(&table) {
            return Err(QueryError::Refused(format!(
                "table '{table}' is written by stream '{stream}' alone: it changes only through \
                 the stream (DROP STREAM drops it)"
            )));
        }
        if let Ok(lake_table) = self.lake.open(&table).await
            && let Some(writer) = sluice_pipeline::writer(&lake_table)
        {
            let (what, drop) = match writer {
                sluice_pipeline::Writer::Stream(_) => ("a stream", "DROP STREAM"),
                sluice_pipeline::Writer::View(_) => {
                    ("a materialized view", "DROP MATERIALIZED VIEW")
                }
            };
            return Err(QueryError::Refused(format!(
                "table '{table}' is written by {what} alone: it changes only through it ({drop} \
                 drops it)"
            )));
        }
        Ok(table)
    }

    /// The target of an `INSERT`, checked.
    pub(crate) async fn insert_target(&self, table: &TableObject) -> Result<String> {
        match table {
            TableObject::TableName(name) => self.writable(name).await,
            other => Err(QueryError::Refused(format!(
                "INSERT INTO {other}: only lake tables can be written"
            ))),
        }
    }

    /// `CREATE TABLE t [PARTITIONED BY (…)] AS SELECT …`.
    pub(crate) async fn create_table_as(
        &self,
        ctx: &SessionContext,
        create: &CreateTable,
    ) -> Result<QueryOutput> {
        let name = self.writable(&create.name).await?;
        let mut rest = create.clone();
        rest.if_not_exists = false;
        rest.hive_distribution = HiveDistributionStyle::NONE;
        let query = rest.query.take();
        let (Some(query), true) = (
            query,
            rest == CreateTableBuilder::new(rest.name.clone()).build(),
        ) else {
            return Err(QueryError::Refused(
                "tables are created as CREATE TABLE name [PARTITIONED BY (column, …)] AS SELECT …"
                    .into(),
            ));
        };
        let partition_by: Vec<String> = match &create.hive_distribution {
            HiveDistributionStyle::PARTITIONED { columns } => {
                columns.iter().map(|c| c.name.value.clone()).collect()
            }
            _ => Vec::new(),
        };
        if self.lake.table_names().contains(&name) {
            if create.if_not_exists {
                return Ok(count(0));
            }
            return Err(QueryError::statement(
                Class::Exists,
                format!("table '{name}' already exists"),
            ));
        }
        let plan = self
            .plan(ctx, sqlparser::ast::Statement::Query(query))
            .await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        // Columns take NULL (as Spark's CTAS tables do), so that later INSERTs may leave any out.
        let schema = Arc::new(Schema::new(
            frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        for column in &partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(QueryError::statement(
                    Class::UndefinedColumn,
                    format!("PARTITIONED BY names no column of the query: '{column}'"),
                ));
            }
        }
        let batches = frame
            .collect()
            .await?
            .into_iter()
            .map(|b| b.with_schema(schema.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueryError::statement(Class::Internal, e.to_string()))?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        self.lake
            .create(&name, &schema, &partition_by, batches)
            .await?;
        Ok(count(rows))
    }

    /// `DROP TABLE [IF EXISTS] t, …`: checks every name before it drops any.
    pub(crate) async fn drop_tables(
        &self,
        names: &[ObjectName],
        if_exists: bool,
    ) -> Result<QueryOutput> {
        let existing = self.lake.table_names();
        let mut dropped = Vec::new();
        for name in names {
            let table = self.writable(name).await?;
            if existing.contains(&table) {
                dropped.push(table);
            } else if !if_exists {
                return Err(QueryError::statement(
                    Class::UndefinedTable,
                    format!("table '{table}' does not exist"),
                ));
            }
        }
        for table in dropped {
            self.lake.drop_table(&table).await?;
        }
        Ok(QueryOutput {
            schema: Arc::new(Schema::empty()),
            batches: Vec::new(),
        })
    }
}

impl QueryEngine {
    /// `OPTIMIZE t`: answers the files removed and added.
    pub async fn optimize(&self, table: &ObjectName) -> Result<QueryOutput> {
        let mut table = self.upkept(table).await?;
        let compaction = table.compact().await?;
        Ok(numbers(&[
            ("files_removed", compaction.files_removed),
            ("files_added", compaction.files_added),
        ]))
    }

    /// `VACUUM t [RETAIN n HOURS] [DRY RUN]`: answers the files deleted (or to be).
    pub async fn vacuum(
        &self,
        table: &ObjectName,
        retain_hours: Option<u64>,
        dry_run: bool,
    ) -> Result<QueryOutput> {
        let mut table = self.upkept(table).await?;
        let retain = retain_hours.map(|h| Duration::from_secs(h.saturating_mul(3600)));
        let files = table.vacuum(retain, dry_run).await?;
        Ok(numbers(&[("files_deleted", files.len() as u64)]))
    }

    async fn upkept(&self, table: &ObjectName) -> Result<sluice_lake::LakeTable> {
        let table = Self::lake_name(table)?;
        Ok(self.lake.open(&table).await?)
    }
}

/// The answer of a write: how many rows it wrote, as DataFusion's `INSERT` answers.
fn count(rows: u64) -> QueryOutput {
    numbers(&[("count", rows)])
}

/// One row of named counts.
fn numbers(values: &[(&str, u64)]) -> QueryOutput {
    let schema = Arc::new(Schema::new(
        values
            .iter()
            .map(|(name, _)| Field::new(*name, DataType::UInt64, false))
            .collect::<Vec<_>>(),
    ));
    let columns = values
        .iter()
        .map(|(_, n)| Arc::new(UInt64Array::from(vec![*n])) as _)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("one row of counts");
    QueryOutput {
        schema,
        batches: vec![batch],
    }
}

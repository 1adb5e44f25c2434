//! The catalog tables drivers read column types from, with each column's type as the door
//! describes it ([`types`]), not as the Arrow type alone says it:
//!
//! - `pg_catalog.pg_attribute` (psql's `\d`, pgJDBC's `getColumns`, psqlODBC's `SQLColumns`,
//!   SQLAlchemy's `inspect()`): datafusion-pg-catalog's, which has no type modifier (`numeric`,
//!   not `numeric(12,2)`), JSON columns as `text` and arrays other than `int4[]` and `text[]` as
//!   `text`, with `atttypid`, `attlen`, `attndims` and `atttypmod` taken from each column's field;
//! - `information_schema.columns` (Grafana's and hand-written catalog queries): DataFusion's,
//!   whose `data_type` is Arrow's name (`Int64`, `Decimal128(12, 2)`), with PostgreSQL's
//!   (`bigint`, `numeric`, `timestamp without time zone`, `json`, `ARRAY`) and its numeric and
//!   datetime precisions. DataFusion answers `information_schema` itself, before any catalog, so
//!   the door reads this one as [`COLUMNS`] (`compat` rewrites the name).
//!
//! The rest of both is unchanged.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int16Array, Int32Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{FieldRef, Int16Type, Int32Type, SchemaRef, UInt64Type};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::Type;

use super::types::{self, PgType};

/// The name `information_schema.columns` is read by at the door, in `pg_catalog`.
pub(super) const COLUMNS: &str = "sluice_columns";

/// Puts [`Attributes`] in the place of `pg_catalog.pg_attribute` of `catalog` in `ctx`, and
/// [`Columns`] in `pg_catalog` as [`COLUMNS`] (after datafusion-pg-catalog set the catalog up).
pub(super) fn register(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let provider = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {catalog}")))?;
    let inner = provider
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Plan("no pg_catalog".into()))?;
    provider.register_schema(
        "pg_catalog",
        Arc::new(Catalog {
            inner,
            catalogs: ctx.state().catalog_list().clone(),
        }),
    )?;
    Ok(())
}

/// datafusion-pg-catalog's `pg_catalog`, its `pg_attribute` [`Attributes`], and [`Columns`].
#[derive(Debug)]
struct Catalog {
    inner: Arc<dyn SchemaProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
}

#[async_trait]
impl SchemaProvider for Catalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case(COLUMNS) {
            let inner = InformationSchemaProvider::new(self.catalogs.clone())
                .table("columns")
                .await?
                .ok_or_else(|| DataFusionError::Plan("no information_schema.columns".into()))?;
            return Ok(Some(Arc::new(Described {
                inner,
                catalog: self.inner.clone(),
                catalogs: self.catalogs.clone(),
                table: Table::Columns,
            })));
        }
        let table = self.inner.table(name).await?;
        Ok(match table {
            Some(inner) if name.eq_ignore_ascii_case("pg_attribute") => Some(Arc::new(Described {
                inner,
                catalog: self.inner.clone(),
                catalogs: self.catalogs.clone(),
                table: Table::Attributes,
            })),
            table => table,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Which catalog table a [`Described`] is.
#[derive(Debug, Clone, Copy)]
enum Table {
    /// `pg_attribute`: a row per column, its table by oid.
    Attributes,
    /// `information_schema.columns`: a row per column, its table by name.
    Columns,
}

/// A catalog table whose rows say each column's type as [`types::pg_type`] does.
#[derive(Debug)]
struct Described {
    inner: Arc<dyn TableProvider>,
    /// datafusion-pg-catalog's `pg_catalog`: `pg_class` and `pg_namespace` say which table
    /// an `attrelid` is.
    catalog: Arc<dyn SchemaProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
    table: Table,
}

impl Described {
    /// Which table each oid of `pg_class` is: its schema's name and its own.
    async fn relations(&self, state: &dyn Session) -> Result<HashMap<i32, (String, String)>> {
        let mut schemas = HashMap::new();
        for batch in rows(&self.pg_catalog("pg_namespace").await?, state).await? {
            let oids = int32s(&batch, "oid")?;
            let names = texts(&batch, "nspname")?;
            for i in 0..batch.num_rows() {
                schemas.insert(oids.value(i), names.value(i).to_owned());
            }
        }
        let mut relations = HashMap::new();
        for batch in rows(&self.pg_catalog("pg_class").await?, state).await? {
            let oids = int32s(&batch, "oid")?;
            let names = texts(&batch, "relname")?;
            let namespaces = int32s(&batch, "relnamespace")?;
            for i in 0..batch.num_rows() {
                if let Some(schema) = schemas.get(&namespaces.value(i)) {
                    relations.insert(oids.value(i), (schema.clone(), names.value(i).to_owned()));
                }
            }
        }
        Ok(relations)
    }

    async fn pg_catalog(&self, name: &str) -> Result<Arc<dyn TableProvider>> {
        self.catalog
            .table(name)
            .await?
            .ok_or_else(|| DataFusionError::Plan(format!("no pg_catalog.{name}")))
    }

    /// `batch` of `pg_attribute` with each column's `atttypid`, `attlen`, `attndims` and
    /// `atttypmod` from its field.
    async fn attributes(
        &self,
        batch: RecordBatch,
        relations: &HashMap<i32, (String, String)>,
        tables: &mut Tables,
    ) -> Result<RecordBatch> {
        let relids = int32s(&batch, "attrelid")?;
        let names = texts(&batch, "attname")?;
        let mut typids = int32s(&batch, "atttypid")?.values().to_vec();
        let mut lengths = batch
            .column_by_name("attlen")
            .and_then(|c| c.as_primitive_opt::<Int16Type>())
            .ok_or_else(|| DataFusionError::Internal("pg_attribute lacks attlen".into()))?
            .values()
            .to_vec();
        let mut dimensions = int32s(&batch, "attndims")?.values().to_vec();
        let mut modifiers = int32s(&batch, "atttypmod")?.values().to_vec();
        for row in 0..batch.num_rows() {
            let Some((schema, table)) = relations.get(&relids.value(row)) else {
                continue;
            };
            let Some(pg) = tables
                .pg_type(None, schema, table, names.value(row))
                .await?
            else {
                continue;
            };
            typids[row] = pg.datatype.oid() as i32;
            lengths[row] = pg.length;
            modifiers[row] = pg.modifier;
            dimensions[row] = pg.dimensions;
        }
        replaced(
            batch,
            [
                ("atttypid", Arc::new(Int32Array::from(typids)) as ArrayRef),
                ("attlen", Arc::new(Int16Array::from(lengths))),
                ("attndims", Arc::new(Int32Array::from(dimensions))),
                ("atttypmod", Arc::new(Int32Array::from(modifiers))),
            ],
        )
    }

    /// `batch` of `information_schema.columns` with each column's `data_type` and precisions
    /// as PostgreSQL's `information_schema` says them.
    async fn columns(&self, batch: RecordBatch, tables: &mut Tables) -> Result<RecordBatch> {
        let catalogs = texts(&batch, "table_catalog")?;
        let schemas = texts(&batch, "table_schema")?;
        let names = texts(&batch, "table_name")?;
        let columns = texts(&batch, "column_name")?;
        let mut data_types: Vec<String> = texts(&batch, "data_type")?
            .iter()
            .map(|t| t.unwrap_or_default().to_owned())
            .collect();
        let mut numbers: Vec<[Option<u64>; 4]> = (0..batch.num_rows())
            .map(|row| {
                NUMBERS.map(|name| {
                    let column = batch
                        .column_by_name(name)?
                        .as_primitive_opt::<UInt64Type>()?;
                    column.is_valid(row).then(|| column.value(row))
                })
            })
            .collect();
        for row in 0..batch.num_rows() {
            let (catalog, schema, table) =
                (catalogs.value(row), schemas.value(row), names.value(row));
            let Some(pg) = tables
                .pg_type(Some(catalog), schema, table, columns.value(row))
                .await?
            else {
                continue;
            };
            data_types[row] = sql_name(&pg.datatype);
            numbers[row] = precisions(&pg);
        }
        let mut replacements = vec![(
            "data_type",
            Arc::new(StringArray::from(data_types)) as ArrayRef,
        )];
        for (i, name) in NUMBERS.into_iter().enumerate() {
            let column: UInt64Array = numbers.iter().map(|n| n[i]).collect();
            replacements.push((name, Arc::new(column)));
        }
        replaced(batch, replacements)
    }
}

#[async_trait]
impl TableProvider for Described {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut tables = Tables {
            catalogs: self.catalogs.clone(),
            schemas: HashMap::new(),
        };
        let mut batches = vec![];
        match self.table {
            Table::Attributes => {
                let relations = self.relations(state).await?;
                for batch in rows(&self.inner, state).await? {
                    batches.push(self.attributes(batch, &relations, &mut tables).await?);
                }
            }
            Table::Columns => {
                for batch in rows(&self.inner, state).await? {
                    batches.push(self.columns(batch, &mut tables).await?);
                }
            }
        }
        MemTable::try_new(self.schema(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The tables of the catalog list, by name, each looked up once.
struct Tables {
    catalogs: Arc<dyn CatalogProviderList>,
    /// Each table looked up: its columns, or `None` when no catalog holds it.
    schemas: HashMap<(Option<String>, String, String), Option<SchemaRef>>,
}

impl Tables {
    /// How the door describes column `column` of table `schema.table` (in `catalog`, or the
    /// first catalog that has it); `None` if there is no such column, or no type for it.
    async fn pg_type(
        &mut self,
        catalog: Option<&str>,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Result<Option<PgType>> {
        let key = (
            catalog.map(str::to_owned),
            schema.to_owned(),
            table.to_owned(),
        );
        let columns = match self.schemas.entry(key) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let found = find(&self.catalogs, catalog, schema, table).await?;
                new.insert(found)
            }
        };
        let field: Option<FieldRef> = columns
            .as_ref()
            .and_then(|columns| columns.field_with_name(column).ok())
            .map(|field| Arc::new(field.clone()));
        Ok(field.and_then(|field| types::pg_type(&field).ok()))
    }
}

/// The columns of table `schema.table` in `catalog`, or in the first catalog that has it.
async fn find(
    catalogs: &Arc<dyn CatalogProviderList>,
    catalog: Option<&str>,
    schema: &str,
    table: &str,
) -> Result<Option<SchemaRef>> {
    let names = match catalog {
        Some(catalog) => vec![catalog.to_owned()],
        None => catalogs.catalog_names(),
    };
    for name in names {
        let Some(provider) = catalogs.catalog(&name).and_then(|c| c.schema(schema)) else {
            continue;
        };
        if let Some(found) = provider.table(table).await? {
            return Ok(Some(found.schema()));
        }
    }
    Ok(None)
}

/// The precision columns of `information_schema.columns`, in [`precisions`]' order.
const NUMBERS: [&str; 4] = [
    "numeric_precision",
    "numeric_precision_radix",
    "numeric_scale",
    "datetime_precision",
];

/// A column's [`NUMBERS`] as PostgreSQL's `information_schema` gives them: binary precision for
/// integers and floats, decimal for a `numeric`, microseconds for times.
fn precisions(pg: &PgType) -> [Option<u64>; 4] {
    let binary = |bits| [Some(bits), Some(2), Some(0), None];
    match pg.datatype {
        Type::INT2 => binary(16),
        Type::INT4 => binary(32),
        Type::INT8 => binary(64),
        Type::FLOAT4 => [Some(24), Some(2), None, None],
        Type::FLOAT8 => [Some(53), Some(2), None, None],
        Type::NUMERIC if pg.modifier >= 4 => {
            let packed = (pg.modifier - 4) as u64;
            [Some(packed >> 16), Some(10), Some(packed & 0xffff), None]
        }
        Type::NUMERIC => [None, Some(10), None, None],
        Type::DATE => [None, None, None, Some(0)],
        Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::INTERVAL => {
            [None, None, None, Some(6)]
        }
        _ => [None; 4],
    }
}

/// A type's name in `information_schema.columns.data_type`: SQL's for the standard types,
/// `ARRAY` for arrays, else PostgreSQL's own.
fn sql_name(datatype: &Type) -> String {
    match *datatype {
        Type::BOOL => "boolean",
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::VARCHAR => "character varying",
        Type::TIME => "time without time zone",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        _ if datatype.name().starts_with('_') => "ARRAY",
        _ => datatype.name(),
    }
    .to_owned()
}

/// The rows of `table`, all of them.
async fn rows(table: &Arc<dyn TableProvider>, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

/// `batch` with the columns named in `replacements` replaced.
fn replaced<'a>(
    batch: RecordBatch,
    replacements: impl IntoIterator<Item = (&'a str, ArrayRef)>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    for (name, column) in replacements {
        columns[schema.index_of(name)?] = column;
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn int32s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| DataFusionError::Internal(format!("the catalog lacks the int {name}")))
}

fn texts<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| DataFusionError::Internal(format!("the catalog lacks the text {name}")))
}

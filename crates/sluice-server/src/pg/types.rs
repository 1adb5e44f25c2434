//! How a result's columns are described to PostgreSQL clients: PostgreSQL's type for each Arrow
//! type, with what PostgreSQL says beside it, in both protocols and in the catalog (`catalog`).
//!
//! arrow-pg maps the types (and encodes the values); what it leaves unsaid, drivers act on:
//!
//! - the **type modifier** of a `numeric(p, s)` (`((p << 16) | s) + 4`, PostgreSQL's packing):
//!   psycopg's `precision` and `scale`, pgJDBC's `getPrecision`/`getScale` and ODBC's column
//!   size come from it; without it a decimal column is a `numeric` of unknown scale;
//! - the **type's length** (`pg_type.typlen`: 8 for an `int8`, -1 for a `text`);
//! - an oid's marker on a value cast from it (`typelem::regtype::text` is text: DataFusion
//!   keeps the marker of a cast's source, and arrow-pg would describe the text as an `oid`);
//! - **JSON columns** (a field carrying Arrow's canonical `arrow.json` extension: a declared
//!   `JSON` column, a schemaless stream's `data`) are `json`, whose values travel as their text
//!   in both formats, so psycopg, asyncpg's codecs and pgJDBC read them as JSON.
//!
//! [`pg_type`] is the one mapping; [`describe`] says it for a result's schema (the extended
//! protocol's Describe), [`encode`] sends a result with it, and [`DescribedQueries`] runs the
//! simple protocol's queries so.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::arrow_pg::datatypes::{
    PG_OID_ALIAS_KEY, arrow_schema_to_pg_fields, field_into_pg_type,
};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use super::errors::timed_out;
use super::login;

/// The name of Arrow's canonical JSON extension type, which marks a text field holding JSON
/// (see `sluice_pipeline::functions::json_field_metadata`).
const JSON_EXTENSION: &str = "arrow.json";

/// How PostgreSQL describes a column of one Arrow field.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PgType {
    /// The type (its oid is `atttypid`).
    pub datatype: Type,
    /// `pg_type.typlen`: the fixed length in bytes, or -1 for a variable one.
    pub length: i16,
    /// `atttypmod`: a `numeric`'s precision and scale, or -1.
    pub modifier: i32,
    /// `attndims`: 1 for an array, else 0.
    pub dimensions: i32,
}

/// The PostgreSQL type of `field`; an error for an Arrow type PostgreSQL has none for (a list
/// of lists: PostgreSQL's arrays of several dimensions are not lists of arrays).
pub(super) fn pg_type(field: &Arc<Field>) -> PgWireResult<PgType> {
    // An oid's marker stays on what is cast from it (DataFusion keeps a cast's source metadata):
    // `typelem::regtype::text` is text, not an oid.
    let unmarked;
    let field = match field.data_type() {
        DataType::Int32 => field,
        _ if field.metadata().contains_key(PG_OID_ALIAS_KEY) => {
            let mut metadata = field.metadata().clone();
            metadata.remove(PG_OID_ALIAS_KEY);
            unmarked = Arc::new(field.as_ref().clone().with_metadata(metadata));
            &unmarked
        }
        _ => field,
    };
    let datatype = match field_into_pg_type(field)? {
        Type::TEXT if field.extension_type_name() == Some(JSON_EXTENSION) => Type::JSON,
        datatype => datatype,
    };
    let modifier = match field.data_type() {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s)
            if *s >= 0 =>
        {
            ((i32::from(*p) << 16) | i32::from(*s)) + 4
        }
        _ => -1,
    };
    let length = match datatype {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE | Type::OID => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => 8,
        Type::INTERVAL | Type::UUID => 16,
        _ => -1,
    };
    let dimensions = match field.data_type() {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::ListView(_)
        | DataType::LargeListView(_) => 1,
        _ => 0,
    };
    Ok(PgType {
        datatype,
        length,
        modifier,
        dimensions,
    })
}

/// The fields of a RowDescription for a result with `schema`, each column sent in `format`.
pub(super) fn describe(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let fields = arrow_schema_to_pg_fields(schema, format, options)?;
    schema
        .fields()
        .iter()
        .zip(fields)
        .map(|(field, info)| {
            let pg = pg_type(field)?;
            Ok(FieldInfo::new(
                info.name().to_owned(),
                info.table_id(),
                info.column_id(),
                pg.datatype,
                info.format(),
            )
            .with_format_options(info.format_options().clone())
            .with_type_size(pg.length)
            .with_type_modifier(pg.modifier))
        })
        .collect::<PgWireResult<_>>()
}

/// `frame`'s rows, sent in `format` and described by [`describe`].
pub(super) async fn encode(
    frame: DataFrame,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let fields = describe(frame.schema().as_arrow(), format, options.clone())?;
    let mut response = encode_dataframe(frame, format, options).await?;
    response.row_schema = Arc::new(fields);
    Ok(response)
}

/// Runs a simple query's `SELECT`s, as datafusion-postgres would, described by [`describe`]
/// (datafusion-postgres' own description says no more than the type). Last of the hooks: what
/// the others answer or refuse never reaches it.
pub(super) struct DescribedQueries;

#[async_trait]
impl QueryHook for DescribedQueries {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        let sql = statement.to_string();
        let planned = ctx.sql(&sql);
        let frame = match login::statement_timeout(client) {
            Some(timeout) => match tokio::time::timeout(timeout, planned).await {
                Ok(frame) => frame,
                Err(_) => return Some(Err(timed_out(timeout))),
            },
            None => planned.await,
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Some(match frame {
            Ok(frame) => encode(frame, &Format::UnifiedText, Some(options))
                .await
                .map(Response::Query),
            Err(e) => Err(PgWireError::ApiError(Box::new(e))),
        })
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::Field;

    use super::*;

    fn described(field: Field) -> (Type, i16, i32, i32) {
        let pg = pg_type(&Arc::new(field)).unwrap();
        (pg.datatype, pg.length, pg.modifier, pg.dimensions)
    }

    #[test]
    fn each_type_is_said_with_its_length_modifier_and_dimensions() {
        let field = |t: DataType| Field::new("c", t, true);
        assert_eq!(described(field(DataType::Int16)), (Type::INT2, 2, -1, 0));
        assert_eq!(described(field(DataType::Int64)), (Type::INT8, 8, -1, 0));
        assert_eq!(described(field(DataType::Utf8)), (Type::TEXT, -1, -1, 0));
        // numeric(12, 2): ((12 << 16) | 2) + 4, as PostgreSQL packs it.
        let decimal = field(DataType::Decimal128(12, 2));
        assert_eq!(described(decimal), (Type::NUMERIC, -1, 786_438, 0));
        let list = field(DataType::new_list(DataType::Int64, true));
        assert_eq!(described(list), (Type::INT8_ARRAY, -1, -1, 1));
        let interval = field(DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ));
        assert_eq!(described(interval), (Type::INTERVAL, 16, -1, 0));
    }

    #[test]
    fn json_is_json_and_an_oids_marker_stays_on_oids() {
        let json = Field::new("data", DataType::Utf8, false).with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            JSON_EXTENSION.to_string(),
        )]));
        assert_eq!(described(json).0, Type::JSON);
        let oid = HashMap::from([(PG_OID_ALIAS_KEY.to_string(), "oid".to_string())]);
        let typelem = Field::new("elemtype", DataType::Int32, false).with_metadata(oid.clone());
        assert_eq!(described(typelem).0, Type::OID);
        // `typelem::regtype::text` keeps the marker of what it was cast from.
        let name = Field::new("elemtype_name", DataType::Utf8, true).with_metadata(oid);
        assert_eq!(described(name).0, Type::TEXT);
    }
}

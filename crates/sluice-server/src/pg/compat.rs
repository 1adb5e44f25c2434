//! What PostgreSQL clients ask of a server that DataFusion does not answer as PostgreSQL would:
//! the functions drivers call on connect and in their catalog queries ([`register`]), and the
//! few forms of their catalog queries DataFusion cannot plan, rewritten to ones it can
//! ([`rewrite`]).
//!
//! - `version()` says a PostgreSQL version first, as PostgreSQL does (SQLAlchemy, psqlODBC and
//!   Superset read the major version from it), then what answers: Sluice on DataFusion.
//! - `current_setting(name)` answers the server's settings clients ask for; `set_config(name,
//!   value, local)` (asyncpg's `jit` off before its type introspection) is `SET`'s no-op for the
//!   settings that change nothing here, and refused for those a session's `SET` applies.
//! - `pg_get_serial_sequence(table, column)` and `pg_get_indexdef(…)` are NULL: nothing of
//!   Sluice's has a sequence or an index; `pg_collation_is_visible` is true. `to_regtype(name)` knows the built-in types (psycopg
//!   asks for `hstore` on connect), `json_build_object` builds JSON (SQLAlchemy's columns query).
//! - `x LIKE p ESCAPE 'c'` with an escape character other than the backslash (SQLAlchemy's
//!   `autoescape` uses `/`): DataFusion knows only the backslash, so `p` is given the
//!   backslash's escapes (`sluice_like_pattern`) and the clause dropped. The meaning is
//!   PostgreSQL's: `c` before any character makes it literal.
//! - `unnest(indkey)`, `generate_subscripts(indkey, 1)`, `indkey[n]`, `array_upper(conkey, 1)`
//!   over the catalog's `int2vector` and array columns (the primary key, unique constraint,
//!   index and foreign key queries of SQLAlchemy, pgJDBC and psqlODBC): datafusion-pg-catalog
//!   keeps those columns as text (`1 2`, `[1, 2]`), so they are read as lists of numbers first
//!   (`sluice_pg_array`, `sluice_pg_subscripts`), subscripts of `int2vector`s counted from 0 as
//!   PostgreSQL counts them, and `generate_series` over them made rows, as PostgreSQL's
//!   set-returning function makes them; so is `information_schema._pg_expandarray` (pgJDBC's
//!   primary keys), as `sluice_pg_expandarray`.
//! - A cast to `name`, PostgreSQL's type of identifiers (psqlODBC's `'db'::name`), is a cast to
//!   text, the type of the catalog's names here.
//! - A boolean compared with a quoted literal (`indisprimary = 't'`): PostgreSQL reads the
//!   literal as the type the comparison needs, DataFusion cannot compare a boolean with text
//!   ([`BooleanLiterals`]).
//!
//! - A CASE whose results look values up in the catalog (SQLAlchemy's columns query, for
//!   defaults, identities and collations) is NULL: DataFusion cannot plan correlated subqueries
//!   in a CASE, and NULL is what those lookups find for Sluice's tables (no defaults, no
//!   identity columns, the default collation). Its parameters stay named, NULL or not.
//!
//! - `information_schema.columns` is read as `pg_catalog.sluice_columns`, which says PostgreSQL's
//!   type names (`bigint`, not Arrow's `Int64`: see `catalog`), under the name the query gave.
//!
//! - `pg_class.reloptions` (SQLAlchemy's index query), which datafusion-pg-catalog's `pg_class`
//!   lacks, is NULL: Sluice's tables have no storage options.
//!
//! - An integer literal that is a query's output column (`SELECT 1`) is an `int4`, as PostgreSQL
//!   types it (Node's `pg` gives a number for an `int4`, a string for an `int8`): DataFusion makes
//!   every integer literal an Int64. Only such columns: in expressions the literal stays 64-bit,
//!   where DataFusion's Int32 arithmetic would wrap on overflow and PostgreSQL's raises; and
//!   views, which are not queries at this door, compute what they would anywhere.
//!
//! A query none of the rewrites applies to is passed on as it was written, so that the
//! positions of its errors stay where the client put them.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int32Builder, ListArray, ListBuilder, StringArray,
    StringBuilder, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int64Type};
use datafusion::common::DFSchema;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr as LogicalExpr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, binary_expr, create_udf, lit,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, BinaryOperator, CaseWhen, CastKind, DataType as SqlDataType,
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, Subscript, TableAlias,
    TableFactor, UnaryOperator, Value, VisitMut, VisitorMut, visit_expressions,
    visit_expressions_mut, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::catalog;

/// The PostgreSQL release whose behaviour the door follows (and says in `version()`).
pub(super) const POSTGRES_VERSION: &str = "16.6";
/// [`POSTGRES_VERSION`] as `server_version_num` says it.
const POSTGRES_VERSION_NUM: &str = "160006";

/// The catalog columns datafusion-pg-catalog keeps as text that PostgreSQL has as
/// `int2vector`, `oidvector` or arrays of numbers.
const NUMBER_VECTORS: &[&str] = &[
    "indkey",
    "i_indoption",
    "indclass",
    "indcollation",
    "indoption",
    "conkey",
    "confkey",
    "conpfeqop",
    "conppeqop",
    "conffeqop",
    "conexclop",
    "stxkeys",
];

/// Those of [`NUMBER_VECTORS`] that are `int2vector` or `oidvector`, whose subscripts start at 0
/// (an array's start at 1, as a DataFusion list's do). `i_indoption` is `indoption` as pgJDBC's
/// index query names it.
const ZERO_BASED_VECTORS: &[&str] = &[
    "indkey",
    "indclass",
    "indcollation",
    "indoption",
    "i_indoption",
];

/// The settings a session's `SET` changes what it answers with (datafusion-postgres keeps them
/// per connection); any other is accepted by `SET` and `set_config` and changes nothing.
const SESSION_FORMATS: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "extra_float_digits",
    "timezone",
];

/// The answer of `version()`.
pub(super) fn version() -> String {
    format!(
        "PostgreSQL {POSTGRES_VERSION} (Sluice {}, Apache DataFusion {}) on x86_64-pc-linux-gnu",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
    )
}

/// The server settings `current_setting` and `SHOW` answer, as PostgreSQL's defaults are for
/// a UTF-8 database in UTC; `None` for one PostgreSQL does not have (or Sluice does not say).
pub(super) fn setting(name: &str) -> Option<String> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => POSTGRES_VERSION.into(),
        "server_version_num" => POSTGRES_VERSION_NUM.into(),
        "server_encoding" | "client_encoding" => "UTF8".into(),
        "standard_conforming_strings" | "integer_datetimes" => "on".into(),
        "datestyle" => "ISO, MDY".into(),
        "intervalstyle" => "postgres".into(),
        "timezone" => "UTC".into(),
        "search_path" => "public".into(),
        "max_identifier_length" => "63".into(),
        "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
        "transaction_read_only" | "default_transaction_read_only" => "on".into(),
        "is_superuser" => "off".into(),
        // Sluice compiles no queries: asyncpg then leaves `jit` alone.
        "jit" => "off".into(),
        "lc_collate" | "lc_ctype" => "C.UTF-8".into(),
        _ => return None,
    })
}

/// Registers the door's functions and [`BooleanLiterals`] in `ctx`.
pub(super) fn register(ctx: &SessionContext) -> Result<()> {
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(BooleanLiterals))?;
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version()))))),
    ));
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args| {
            map_text(&args[0], |names| {
                let mut settings = StringBuilder::new();
                for name in names.iter() {
                    match name.map(|name| (name, setting(name))) {
                        Some((_, Some(value))) => settings.append_value(value),
                        Some((name, None)) => {
                            return exec_err!("unrecognized configuration parameter \"{name}\"");
                        }
                        None => settings.append_null(),
                    }
                }
                Ok(Arc::new(settings.finish()))
            })
        }),
    ));
    // Nothing of Sluice's has a sequence or an index; every collation is the default one.
    for (name, value) in [
        ("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        ("pg_get_indexdef", ScalarValue::Utf8(None)),
        ("pg_collation_is_visible", ScalarValue::Boolean(Some(true))),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(Constant::new(name, value)));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::default()));
    ctx.register_udf(create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args| {
            let names = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
            if let Some(name) = names
                .as_string::<i32>()
                .iter()
                .flatten()
                .find(|name| SESSION_FORMATS.contains(&name.to_ascii_lowercase().as_str()))
            {
                return exec_err!(
                    "set_config cannot change {name} here: use SET {name} = …, which this \
                     session applies"
                );
            }
            Ok(args[1].clone())
        }),
    ));
    ctx.register_udf(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args| {
            let text = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
            let oids: Int32Array = text
                .as_string::<i32>()
                .iter()
                .map(|name| name.and_then(builtin_type_oid))
                .collect();
            Ok(match &args[0] {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&oids, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(oids)),
            })
        }),
    ));
    ctx.register_udf(create_udf(
        "sluice_like_pattern",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let ColumnarValue::Scalar(escape) = &args[1] else {
                return exec_err!("the escape character of LIKE must be a constant");
            };
            let escape = match escape.try_as_str().flatten() {
                Some(escape) if escape.chars().count() <= 1 => escape.chars().next(),
                _ => return exec_err!("invalid escape string: it must be one character or empty"),
            };
            map_text(&args[0], |patterns| {
                let patterns: StringArray = patterns
                    .iter()
                    .map(|p| p.map(|p| backslash_escapes(p, escape)))
                    .collect();
                Ok(Arc::new(patterns))
            })
        }),
    ));
    ctx.register_udf(create_udf(
        "sluice_pg_array",
        vec![DataType::Utf8],
        list_type(),
        Volatility::Immutable,
        Arc::new(|args| vectors(args, |numbers, _| numbers.to_vec())),
    ));
    ctx.register_udf(create_udf(
        "sluice_pg_expandarray",
        vec![list_type()],
        expanded_type(),
        Volatility::Immutable,
        Arc::new(expand_arrays),
    ));
    ctx.register_udf(create_udf(
        "sluice_pg_subscripts",
        vec![DataType::Utf8, DataType::Int64],
        list_type(),
        Volatility::Immutable,
        // A vector has one dimension: its subscripts are 1 to its length, other dimensions have
        // none.
        Arc::new(|args| {
            vectors(args, |numbers, dimension| match dimension {
                Some(1) => (1..=numbers.len() as i32).collect(),
                _ => vec![],
            })
        }),
    ));
    Ok(())
}

/// The oid of a built-in type named as `to_regtype` takes it; `None` for any other (Sluice has
/// no types of its own, nor extensions' such as `hstore`).
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .to_ascii_lowercase();
    Some(match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "int" | "integer" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

/// A function whose answer is one value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl Constant {
    fn new(name: &'static str, value: ScalarValue) -> Self {
        let signature = Signature::variadic_any(Volatility::Immutable);
        Self {
            name,
            value,
            signature,
        }
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `json_build_object(key, value, …)`: a JSON object as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        let signature = Signature::variadic_any(Volatility::Immutable);
        Self { signature }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("argument list must have even number of elements");
        }
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let mut objects = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in columns.chunks(2) {
                let key = match ScalarValue::try_from_array(&pair[0], row)? {
                    key if key.is_null() => {
                        return exec_err!("null value not allowed for object key");
                    }
                    key => key.to_string(),
                };
                object.insert(key, json_value(ScalarValue::try_from_array(&pair[1], row)?));
            }
            objects.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(objects.finish())))
    }
}

/// A value as JSON: numbers and booleans as themselves, NULL as null, anything else as its text.
fn json_value(value: ScalarValue) -> serde_json::Value {
    use serde_json::Value as Json;
    if value.is_null() {
        return Json::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Json::Bool(b),
        ScalarValue::Int8(Some(n)) => n.into(),
        ScalarValue::Int16(Some(n)) => n.into(),
        ScalarValue::Int32(Some(n)) => n.into(),
        ScalarValue::Int64(Some(n)) => n.into(),
        ScalarValue::UInt8(Some(n)) => n.into(),
        ScalarValue::UInt16(Some(n)) => n.into(),
        ScalarValue::UInt32(Some(n)) => n.into(),
        ScalarValue::UInt64(Some(n)) => n.into(),
        ScalarValue::Float32(Some(n)) => f64::from(n).into(),
        ScalarValue::Float64(Some(n)) => n.into(),
        other => Json::String(other.to_string()),
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)))
}

/// What `information_schema._pg_expandarray` gives for each element of an array: the element
/// (`x`) and its position from 1 (`n`), as a list, one per array.
fn expanded_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(expanded_fields()),
        true,
    )))
}

fn expanded_fields() -> Fields {
    Fields::from(vec![
        Field::new("x", DataType::Int32, true),
        Field::new("n", DataType::Int32, true),
    ])
}

/// `sluice_pg_expandarray(list)`: each list of numbers as a list of (`x`, `n`), its numbers with
/// their positions.
fn expand_arrays(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let lists = args[0].to_array(1)?;
    let lists = lists.as_list::<i32>();
    let offsets = lists.offsets();
    let mut positions = vec![0; lists.values().len()];
    for range in offsets.windows(2) {
        let (start, end) = (range[0] as usize, range[1] as usize);
        for (n, position) in (1..).zip(&mut positions[start..end]) {
            *position = n;
        }
    }
    let elements = StructArray::new(
        expanded_fields(),
        vec![
            lists.values().clone(),
            Arc::new(Int32Array::from(positions)),
        ],
        None,
    );
    let DataType::List(field) = expanded_type() else {
        unreachable!("expanded_type is a list")
    };
    let expanded = ListArray::new(
        field,
        offsets.clone(),
        Arc::new(elements),
        lists.nulls().cloned(),
    );
    Ok(match &args[0] {
        ColumnarValue::Scalar(_) => {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&expanded, 0)?)
        }
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(expanded)),
    })
}

/// A list per catalog vector of `args[0]`: `f` of its numbers and `args[1]` (if given).
fn vectors(
    args: &[ColumnarValue],
    f: impl Fn(&[i32], Option<i64>) -> Vec<i32>,
) -> Result<ColumnarValue> {
    let rows = args
        .iter()
        .find_map(|arg| match arg {
            ColumnarValue::Array(array) => Some(array.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let text = cast(&args[0].to_array(rows)?, &DataType::Utf8)?;
    let dimensions = match args.get(1) {
        Some(arg) => Some(cast(&arg.to_array(rows)?, &DataType::Int64)?),
        None => None,
    };
    let mut lists = ListBuilder::new(Int32Builder::new());
    for (row, vector) in text.as_string::<i32>().iter().enumerate() {
        let Some(vector) = vector else {
            lists.append_null();
            continue;
        };
        let dimension = dimensions
            .as_ref()
            .map(|d| d.as_primitive::<Int64Type>())
            .and_then(|d| d.is_valid(row).then(|| d.value(row)));
        lists
            .values()
            .append_slice(&f(&numbers(vector)?, dimension));
        lists.append(true);
    }
    let lists: ArrayRef = Arc::new(lists.finish());
    Ok(
        match rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&lists, 0)?),
            false => ColumnarValue::Array(lists),
        },
    )
}

/// Applies `f` to a text argument, as an array (a scalar is taken as an array of one).
fn map_text(
    arg: &ColumnarValue,
    f: impl Fn(&StringArray) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let scalar = matches!(arg, ColumnarValue::Scalar(_));
    let text = cast(&arg.to_array(1)?, &DataType::Utf8)?;
    let out = f(text.as_string::<i32>())?;
    match scalar {
        true => Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)),
        false => Ok(ColumnarValue::Array(out)),
    }
}

/// The numbers of a catalog vector as datafusion-pg-catalog keeps it: `1 2`, `[1, 2]`, `{1,2}`.
fn numbers(vector: &str) -> Result<Vec<i32>> {
    vector
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}'))
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse()
                .map_err(|_| DataFusionError::Execution(format!("not a number vector: {vector}")))
        })
        .collect()
}

/// A LIKE pattern escaped with `escape` (none when `None`), escaped with backslashes instead.
fn backslash_escapes(pattern: &str, escape: Option<char>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => match chars.next() {
                Some(literal @ ('%' | '_' | '\\')) => {
                    out.push('\\');
                    out.push(literal);
                }
                Some(literal) => out.push(literal),
                None => {}
            },
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// Compares a boolean with a quoted literal PostgreSQL reads as a boolean (`'t'`, `'false'`,
/// `'on'`, `'1'`, …; psqlODBC's primary key query has `indisprimary = 't'`) by comparing it
/// with that boolean. Other literals are left to DataFusion, which refuses them.
#[derive(Debug)]
struct BooleanLiterals;

impl ExprPlanner for BooleanLiterals {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let op = match expr.op {
            BinaryOperator::Eq => Operator::Eq,
            BinaryOperator::NotEq => Operator::NotEq,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let boolean = |literal: &LogicalExpr, other: &LogicalExpr| {
            let LogicalExpr::Literal(value, _) = literal else {
                return None;
            };
            let text = value.try_as_str().flatten()?;
            match other.get_type(schema).ok()? {
                DataType::Boolean => postgres_boolean(text),
                _ => None,
            }
        };
        let (left, right) = match (
            boolean(&expr.left, &expr.right),
            boolean(&expr.right, &expr.left),
        ) {
            (Some(left), _) => (lit(left), expr.right),
            (_, Some(right)) => (expr.left, lit(right)),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(binary_expr(left, op, right)))
    }
}

/// A boolean as PostgreSQL reads one from text.
fn postgres_boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `sql` with the rewrites above applied, or as it was when none applies (or when it does not
/// parse: the error is the parser's that follows). Every statement is parsed here once before
/// datafusion-postgres parses it (microseconds, beside planning): the int4 literals of any
/// query's projection need it; the catalog rewrites are only looked for in the queries
/// [`mentions_rewritten`] lets through.
pub(super) fn rewrite(sql: &str) -> Cow<'_, str> {
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Cow::Borrowed(sql);
    };
    let mut changed = false;
    if mentions_rewritten(sql) {
        let _ = visit_expressions_mut(&mut statements, |expr| {
            changed |= rewrite_expr(expr);
            ControlFlow::<()>::Continue(())
        });
        let mut columns = DescribedColumns::default();
        let _ = statements.visit(&mut columns);
        changed |= columns.0;
    }
    for statement in &mut statements {
        if let Statement::Query(query) = statement {
            changed |= int4_literals(&mut query.body);
        }
    }
    match changed {
        false => Cow::Borrowed(sql),
        true => Cow::Owned(
            statements
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The output columns of a query's outermost projection (every branch of a UNION) that are
/// integer literals fitting 32 bits, cast to `INT` under the name DataFusion gives them: whether
/// any was. Only bare literals: arithmetic stays 64-bit (PostgreSQL's int4 arithmetic raises on
/// overflow where Int32's would not), subqueries and views compute as written.
fn int4_literals(body: &mut SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => {
            let mut changed = false;
            for item in &mut select.projection {
                let (expr, alias) = match item {
                    SelectItem::UnnamedExpr(expr) => match int4_literal(expr) {
                        Some(n) => (expr.clone(), Ident::with_quote('"', format!("Int64({n})"))),
                        None => continue,
                    },
                    SelectItem::ExprWithAlias { expr, alias } if int4_literal(expr).is_some() => {
                        (expr.clone(), alias.clone())
                    }
                    _ => continue,
                };
                *item = SelectItem::ExprWithAlias {
                    expr: Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(expr),
                        data_type: SqlDataType::Int(None),
                        array: false,
                        format: None,
                    },
                    alias,
                };
                changed = true;
            }
            changed
        }
        SetExpr::SetOperation { left, right, .. } => {
            let left = int4_literals(left);
            int4_literals(right) | left
        }
        SetExpr::Query(query) => int4_literals(&mut query.body),
        _ => false,
    }
}

/// The value of `expr` when it is an integer literal (`7`, `-7`) that PostgreSQL types `int4`.
fn int4_literal(expr: &Expr) -> Option<i32> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(digits, false) => digits.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => int4_literal(expr).and_then(i32::checked_neg),
        _ => None,
    }
}

/// Whether `sql` may hold what [`rewrite_expr`] rewrites (a cheap test, so that users' own
/// queries are not walked for the catalog's rewrites).
fn mentions_rewritten(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "escape",
        "unnest",
        "generate_subscripts",
        "pg_catalog",
        "reloptions",
        "::name",
        "information_schema",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

/// Reads `information_schema.columns` as [`catalog::COLUMNS`] (PostgreSQL's type names), under
/// the name the query gave it; whether any was.
#[derive(Default)]
struct DescribedColumns(bool);

impl VisitorMut for DescribedColumns {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor
            && let [
                ObjectNamePart::Identifier(schema),
                ObjectNamePart::Identifier(table),
            ] = name.0.as_slice()
            && schema.value.eq_ignore_ascii_case("information_schema")
            && table.value.eq_ignore_ascii_case("columns")
        {
            alias.get_or_insert_with(|| TableAlias {
                explicit: true,
                name: table.clone(),
                columns: vec![],
                at: None,
            });
            *name = ObjectName::from(vec![Ident::new("pg_catalog"), Ident::new(catalog::COLUMNS)]);
            self.0 = true;
        }
        ControlFlow::Continue(())
    }
}

fn rewrite_expr(expr: &mut Expr) -> bool {
    match expr {
        Expr::Identifier(column) if column.value.eq_ignore_ascii_case("reloptions") => {
            *expr = Expr::value(Value::Null);
            true
        }
        Expr::CompoundIdentifier(parts)
            if parts
                .last()
                .is_some_and(|column| column.value.eq_ignore_ascii_case("reloptions")) =>
        {
            *expr = Expr::value(Value::Null);
            true
        }
        Expr::Case {
            conditions,
            else_result,
            ..
        } if only_catalog_lookups(conditions, else_result.as_deref()) => {
            *expr = null_keeping_placeholders(expr);
            true
        }
        Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } => {
            let escape = match escape_char.as_ref().map(|v| &v.value) {
                Some(Value::SingleQuotedString(escape)) if escape != "\\" => escape.clone(),
                _ => return false,
            };
            let written = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
            **pattern = call(
                "sluice_like_pattern",
                vec![written, Expr::value(Value::SingleQuotedString(escape))],
            );
            *escape_char = None;
            true
        }
        Expr::Cast { data_type, .. } if is_name_type(data_type) => {
            // PostgreSQL's type of identifiers is text here, as the catalog's columns are.
            *data_type = SqlDataType::Text;
            true
        }
        Expr::CompoundFieldAccess { root, access_chain } => {
            // `(composite).field`, which DataFusion plans only as `get_field`.
            if let (Expr::Nested(composite), [AccessExpr::Dot(Expr::Identifier(field))]) =
                (root.as_ref(), access_chain.as_slice())
            {
                let field = Expr::value(Value::SingleQuotedString(field.value.clone()));
                *expr = call("get_field", vec![(**composite).clone(), field]);
                return true;
            }
            // `indkey[n]`, or `i.indkey[n]` (parsed as `i` then `.indkey` then `[n]`).
            let (column, index) = match (root.as_ref(), access_chain.as_slice()) {
                (column, [AccessExpr::Subscript(Subscript::Index { index })]) => {
                    (column.clone(), index)
                }
                (
                    Expr::Identifier(table),
                    [
                        AccessExpr::Dot(Expr::Identifier(name)),
                        AccessExpr::Subscript(Subscript::Index { index }),
                    ],
                ) => (
                    Expr::CompoundIdentifier(vec![table.clone(), name.clone()]),
                    index,
                ),
                _ => return false,
            };
            let Some(name) =
                vector_name(&column).filter(|name| NUMBER_VECTORS.contains(&name.as_str()))
            else {
                return false;
            };
            let index = match ZERO_BASED_VECTORS.contains(&name.as_str()) {
                true => Expr::BinaryOp {
                    left: Box::new(Expr::Nested(Box::new(index.clone()))),
                    op: BinaryOperator::Plus,
                    right: Box::new(Expr::value(Value::Number("1".into(), false))),
                },
                false => index.clone(),
            };
            *expr = Expr::CompoundFieldAccess {
                root: Box::new(call("sluice_pg_array", vec![column])),
                access_chain: vec![AccessExpr::Subscript(Subscript::Index { index })],
            };
            true
        }
        Expr::Function(f) => {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(name)) => name.value.to_ascii_lowercase(),
                _ => return false,
            };
            let FunctionArguments::List(list) = &mut f.args else {
                return false;
            };
            if name == "generate_series" && reads_vectors(list) {
                // A set-returning function in a projection; DataFusion's makes a list.
                *expr = call("unnest", vec![expr.clone()]);
                return true;
            }
            let arity = list.args.len();
            if name == "_pg_expandarray" && arity == 1 {
                // pgJDBC's primary key query: a set-returning function in a projection.
                let FunctionArg::Unnamed(FunctionArgExpr::Expr(array)) = &list.args[0] else {
                    return false;
                };
                let array = match is_vector(array) {
                    true => call("sluice_pg_array", vec![array.clone()]),
                    false => array.clone(),
                };
                *expr = call("unnest", vec![call("sluice_pg_expandarray", vec![array])]);
                return true;
            }
            let vector = match list.args.first_mut() {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) if is_vector(arg) => arg,
                _ => return false,
            };
            if name == "generate_subscripts" && arity == 2 {
                let mut subscripts = f.clone();
                subscripts.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                    "sluice_pg_subscripts",
                ))]);
                *expr = call("unnest", vec![Expr::Function(subscripts)]);
            } else {
                // unnest, array_lower, array_upper, array_length, …
                let column = std::mem::replace(vector, Expr::value(Value::Null));
                *vector = call("sluice_pg_array", vec![column]);
            }
            true
        }
        _ => false,
    }
}

/// Whether `data_type` is PostgreSQL's `name`.
fn is_name_type(data_type: &SqlDataType) -> bool {
    let SqlDataType::Custom(name, _) = data_type else {
        return false;
    };
    let name = name.to_string().to_ascii_lowercase();
    name == "name" || name == "pg_catalog.name"
}

/// Whether a function's arguments read a catalog vector (as rewritten: `sluice_pg_array(…)`).
fn reads_vectors(args: &FunctionArgumentList) -> bool {
    visit_expressions(&args.args, |e| match e {
        Expr::Function(f) if f.name.to_string() == "sluice_pg_array" => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether a CASE's results all look values up in the catalog, or are NULL (`CASE WHEN
/// a.atthasdef THEN (SELECT … FROM pg_catalog.pg_attrdef WHERE …) END`, SQLAlchemy's columns
/// query for defaults, identities and collations).
fn only_catalog_lookups(conditions: &[CaseWhen], otherwise: Option<&Expr>) -> bool {
    let results = conditions.iter().map(|when| &when.result);
    let mut lookups = 0;
    for result in results.chain(otherwise) {
        match result {
            Expr::Subquery(query) if reads_catalog(query) => lookups += 1,
            Expr::Value(value) if value.value == Value::Null => {}
            _ => return false,
        }
    }
    lookups > 0
}

/// NULL, still naming the placeholders of `expr` (`CASE WHEN $3 IS NULL … THEN NULL END`): the
/// client binds every parameter it sent, by position, so none may go.
fn null_keeping_placeholders(expr: &Expr) -> Expr {
    let mut placeholders = vec![];
    let _ = visit_expressions(expr, |e| {
        if let Expr::Value(value) = e
            && matches!(value.value, Value::Placeholder(_))
        {
            placeholders.push(e.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    let null = Expr::value(Value::Null);
    match placeholders
        .into_iter()
        .map(|p| Expr::IsNull(Box::new(p)))
        .reduce(|a, b| Expr::BinaryOp {
            left: Box::new(a),
            op: BinaryOperator::And,
            right: Box::new(b),
        }) {
        None => null,
        Some(condition) => Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition,
                result: null,
            }],
            else_result: None,
        },
    }
}

/// Whether `query` reads the catalog and nothing else: each table it names is one of
/// `pg_catalog`'s (`pg_catalog.pg_attrdef`, or unqualified `pg_type`; not a function such as
/// `generate_series`), or a table of its `WITH` (asyncpg's recursive lookup of a domain's base
/// type).
fn reads_catalog(query: &Query) -> bool {
    let named: Vec<String> = query
        .with
        .iter()
        .flat_map(|with| &with.cte_tables)
        .map(|cte| cte.alias.name.value.to_ascii_lowercase())
        .collect();
    let mut tables = 0;
    let only_catalog = visit_relations(query, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => ident.value.to_ascii_lowercase(),
                _ => String::new(),
            })
            .collect();
        let allowed = match parts.as_slice() {
            [schema, table] => schema == "pg_catalog" && table.starts_with("pg_"),
            [table] => table.starts_with("pg_") || named.contains(table),
            _ => false,
        };
        tables += 1;
        match allowed {
            true => ControlFlow::Continue(()),
            false => ControlFlow::Break(()),
        }
    })
    .is_continue();
    only_catalog && tables > 0
}

/// The parameters `statement` casts to `oid[]` (asyncpg's type introspection: `t.oid =
/// any($1::oid[])`), as `$n`. datafusion-pg-catalog keeps oids as `int4`, so such a parameter is
/// planned as an `int4[]`; it is described as PostgreSQL describes it, an `oid[]` (a driver
/// that only knows `oid[]` binds it so), and read as the `int4[]` it is planned as: the two
/// have one wire form but for the element type, which reading takes from the plan.
pub(super) fn oid_array_parameters(statement: &Statement) -> Vec<String> {
    let mut parameters = vec![];
    let _ = visit_expressions(statement, |expr| {
        if let Expr::Cast {
            expr, data_type, ..
        } = expr
            && let Expr::Value(value) = expr.as_ref()
            && let Value::Placeholder(name) = &value.value
            && let SqlDataType::Array(ArrayElemTypeDef::SquareBracket(element, _)) = data_type
            && matches!(element.as_ref(), SqlDataType::Custom(name, args)
                if args.is_empty() && name.to_string().eq_ignore_ascii_case("oid"))
        {
            parameters.push(name.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    parameters
}

/// Whether `expr` names one of the catalog's number vectors.
fn is_vector(expr: &Expr) -> bool {
    vector_name(expr).is_some_and(|name| NUMBER_VECTORS.contains(&name.as_str()))
}

/// The column `expr` names, lowercase.
fn vector_name(expr: &Expr) -> Option<String> {
    let name = match expr {
        Expr::Identifier(name) => name,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    Some(name.value.to_ascii_lowercase())
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|arg| FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

#[cfg(test)]
mod tests {
    use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
    use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    use super::*;

    #[test]
    fn like_patterns_are_given_backslash_escapes() {
        assert_eq!(backslash_escapes("pg/_%", Some('/')), "pg\\_%");
        assert_eq!(backslash_escapes("a//b", Some('/')), "a/b");
        assert_eq!(backslash_escapes("a\\b/%", Some('/')), "a\\\\b\\%");
        assert_eq!(backslash_escapes("a\\_", None), "a\\\\_");
        assert_eq!(backslash_escapes("x/", Some('/')), "x");
    }

    #[test]
    fn objects_are_built_as_postgresql_builds_them() {
        let ctx = SessionContext::new();
        register(&ctx).unwrap();
        let rows = futures::executor::block_on(async {
            let frame = ctx
                .sql(
                    "SELECT json_build_object('a', 1, 'b', true, 'c', NULL, 'd', 'x'), \
                      to_regtype('integer'), to_regtype('hstore')",
                )
                .await?;
            frame.collect().await
        })
        .unwrap();
        let row = &rows[0];
        assert_eq!(
            row.column(0).as_string::<i32>().value(0),
            r#"{"a":1,"b":true,"c":null,"d":"x"}"#
        );
        let oids = cast(row.column(1), &DataType::Int32).unwrap();
        assert_eq!(
            oids.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(0),
            23
        );
        assert!(row.column(2).is_null(0));
    }

    #[test]
    fn booleans_compare_with_the_literals_postgresql_reads_as_booleans() {
        let ctx = SessionContext::new();
        register(&ctx).unwrap();
        let answer = |sql: &str| {
            futures::executor::block_on(async { ctx.sql(sql).await?.collect().await })
                .map(|rows| rows[0].column(0).as_boolean().value(0))
        };
        assert!(answer("SELECT (1 = 1) = 't'").unwrap());
        assert!(answer("SELECT 'off' <> (1 = 1)").unwrap());
        assert!(!answer("SELECT (1 = 2) = ' TRUE '").unwrap());
        assert!(answer("SELECT (1 = 1) = 'maybe'").is_err());
        assert!(answer("SELECT 'a' = 't'").is_ok_and(|same| !same));
    }

    /// The catalog queries of pgJDBC's `getPrimaryKeys` and psqlODBC's `SQLPrimaryKeys` and
    /// `SQLForeignKeys`, as those drivers send them, plan and run once rewritten.
    #[tokio::test]
    async fn drivers_catalog_queries_run() {
        let ctx = SessionContext::new();
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider).unwrap();
        register(&ctx).unwrap();
        for query in [
            PGJDBC_PRIMARY_KEYS,
            PGJDBC_INDEX_INFO,
            PSQLODBC_PRIMARY_KEYS,
            PSQLODBC_FOREIGN_KEYS,
        ] {
            // As the door runs them: rewritten, then through datafusion-postgres' parser.
            let sql = rewrite(query);
            let statement = PostgresCompatibilityParser::new()
                .parse(&sql)
                .unwrap()
                .remove(0);
            let rows = async { ctx.sql(&statement.to_string()).await?.collect().await };
            let rows = rows.await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0, "{sql}");
        }
    }

    const PGJDBC_PRIMARY_KEYS: &str = "SELECT result.TABLE_CAT, result.TABLE_SCHEM, \
        result.TABLE_NAME, result.COLUMN_NAME, result.KEY_SEQ, result.PK_NAME FROM (SELECT NULL \
        AS TABLE_CAT, n.nspname AS TABLE_SCHEM, ct.relname AS TABLE_NAME, a.attname AS \
        COLUMN_NAME, (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS \
        PK_NAME, information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM \
        pg_catalog.pg_class ct JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid) JOIN \
        pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid) JOIN pg_catalog.pg_index i ON ( \
        a.attrelid = i.indrelid) JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE \
        true AND n.nspname = E'public' AND ct.relname = E'ticks' AND i.indisprimary ) result \
        where result.A_ATTNUM = (result.KEYS).x ORDER BY result.table_name, result.pk_name, \
        result.key_seq";

    const PGJDBC_INDEX_INFO: &str = "SELECT tmp.TABLE_CAT, tmp.TABLE_SCHEM, tmp.TABLE_NAME, \
        tmp.NON_UNIQUE, tmp.INDEX_QUALIFIER, tmp.INDEX_NAME, tmp.TYPE, tmp.ORDINAL_POSITION, \
        trim(both '\"' from pg_catalog.pg_get_indexdef(tmp.CI_OID, tmp.ORDINAL_POSITION, false)) \
        AS COLUMN_NAME, CASE tmp.AM_NAME WHEN 'btree' THEN CASE \
        tmp.I_INDOPTION[tmp.ORDINAL_POSITION - 1] & 1::smallint WHEN 1 THEN 'D' ELSE 'A' END \
        ELSE NULL END AS ASC_OR_DESC, tmp.CARDINALITY, tmp.PAGES, tmp.FILTER_CONDITION FROM \
        (SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, ct.relname AS TABLE_NAME, NOT \
        i.indisunique AS NON_UNIQUE, NULL AS INDEX_QUALIFIER, ci.relname AS INDEX_NAME, CASE \
        i.indisclustered WHEN true THEN 1 ELSE CASE am.amname WHEN 'hash' THEN 2 ELSE 3 END \
        END AS TYPE, (information_schema._pg_expandarray(i.indkey)).n AS ORDINAL_POSITION, \
        ci.reltuples AS CARDINALITY, ci.relpages AS PAGES, pg_catalog.pg_get_expr(i.indpred, \
        i.indrelid) AS FILTER_CONDITION, ci.oid AS CI_OID, i.indoption AS I_INDOPTION, \
        am.amname AS AM_NAME FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_namespace \
        n ON (ct.relnamespace = n.oid) JOIN pg_catalog.pg_index i ON (ct.oid = i.indrelid) JOIN \
        pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) JOIN pg_catalog.pg_am am ON \
        (ci.relam = am.oid) WHERE true AND n.nspname = E'public' AND ct.relname = E'ticks' ) \
        AS tmp ORDER BY NON_UNIQUE, TYPE, INDEX_NAME, ORDINAL_POSITION";

    const PSQLODBC_PRIMARY_KEYS: &str = "select ta.attname, ia.attnum, ic.relname, n.nspname, \
        tc.relname from pg_catalog.pg_attribute ta, pg_catalog.pg_attribute ia, \
        pg_catalog.pg_class tc, pg_catalog.pg_index i, pg_catalog.pg_namespace n, \
        pg_catalog.pg_class ic where tc.relname = 'ticks' AND n.nspname = 'public' AND tc.oid = \
        i.indrelid AND n.oid = tc.relnamespace AND i.indisprimary = 't' AND ia.attrelid = \
        i.indexrelid AND ta.attrelid = i.indrelid AND ta.attnum = i.indkey[ia.attnum-1] AND (NOT \
        ta.attisdropped) AND (NOT ia.attisdropped) AND ic.oid = i.indexrelid order by ia.attnum";

    const PSQLODBC_FOREIGN_KEYS: &str = "select 'sluice'::name as \"PKTABLE_CAT\", n2.nspname \
        as \"PKTABLE_SCHEM\", c2.relname as \"PKTABLE_NAME\", a2.attname as \"PKCOLUMN_NAME\", \
        'sluice'::name as \"FKTABLE_CAT\", n1.nspname as \"FKTABLE_SCHEM\", c1.relname as \
        \"FKTABLE_NAME\", a1.attname as \"FKCOLUMN_NAME\", i::int2 as \"KEY_SEQ\", case \
        ref.confupdtype when 'c' then 0::int2 when 'n' then 2::int2 when 'd' then 4::int2 when \
        'r' then 1::int2 else 3::int2 end as \"UPDATE_RULE\", case ref.confdeltype when 'c' then \
        0::int2 when 'n' then 2::int2 when 'd' then 4::int2 when 'r' then 1::int2 else 3::int2 \
        end as \"DELETE_RULE\", ref.conname as \"FK_NAME\", cn.conname as \"PK_NAME\", case when \
        ref.condeferrable then case when ref.condeferred then 5::int2 else 6::int2 end else \
        7::int2 end as \"DEFERRABILITY\" from ((((((( (select cn.oid, conrelid, conkey, \
        confrelid, confkey, generate_series(array_lower(conkey, 1), array_upper(conkey, 1)) as \
        i, confupdtype, confdeltype, conname, condeferrable, condeferred from \
        pg_catalog.pg_constraint cn, pg_catalog.pg_class c, pg_catalog.pg_namespace n where \
        contype = 'f' and confrelid = c.oid and relname = 'ticks' and n.oid = c.relnamespace and \
        n.nspname = 'public' ) ref inner join pg_catalog.pg_class c1 on c1.oid = ref.conrelid) \
        inner join pg_catalog.pg_namespace n1 on n1.oid = c1.relnamespace) inner join \
        pg_catalog.pg_attribute a1 on a1.attrelid = c1.oid and a1.attnum = conkey[i]) inner \
        join pg_catalog.pg_class c2 on c2.oid = ref.confrelid) inner join \
        pg_catalog.pg_namespace n2 on n2.oid = c2.relnamespace) inner join \
        pg_catalog.pg_attribute a2 on a2.attrelid = c2.oid and a2.attnum = confkey[i]) left \
        outer join pg_catalog.pg_constraint cn on cn.conrelid = ref.confrelid and cn.contype = \
        'p') order by ref.oid, ref.i";

    #[test]
    fn catalog_vectors_are_read_in_each_form() {
        assert_eq!(numbers("1 2").unwrap(), vec![1, 2]);
        assert_eq!(numbers("[2, 20, 3]").unwrap(), vec![2, 20, 3]);
        assert_eq!(numbers("{1,-2}").unwrap(), vec![1, -2]);
        assert_eq!(numbers("").unwrap(), Vec::<i32>::new());
        assert!(numbers("a b").is_err());
    }

    #[test]
    fn only_what_datafusion_cannot_run_is_rewritten() {
        let kept = "SELECT unnest(ids), x FROM t WHERE a LIKE 'x\\_%' ESCAPE '\\'";
        assert!(matches!(rewrite(kept), Cow::Borrowed(_)));
        assert_eq!(
            rewrite("SELECT n FROM ns WHERE n NOT LIKE $1 || '%' ESCAPE '/'"),
            "SELECT n FROM ns WHERE n NOT LIKE sluice_like_pattern($1 || '%', '/')"
        );
        assert_eq!(
            rewrite("SELECT unnest(i.indkey) AS a, generate_subscripts(i.indkey, 1) AS o FROM i"),
            "SELECT unnest(sluice_pg_array(i.indkey)) AS a, \
             unnest(sluice_pg_subscripts(i.indkey, 1)) AS o FROM i"
        );
        assert!(matches!(rewrite("SELEC unnest"), Cow::Borrowed(_)));
        // pgJDBC's primary key query, psqlODBC's primary and foreign key queries.
        assert_eq!(
            rewrite(
                "SELECT (information_schema._pg_expandarray(i.indkey)).n AS k, \
                 information_schema._pg_expandarray(i.indkey) AS keys FROM pg_catalog.pg_index i"
            ),
            "SELECT get_field(unnest(sluice_pg_expandarray(sluice_pg_array(i.indkey))), 'n') AS k, \
             unnest(sluice_pg_expandarray(sluice_pg_array(i.indkey))) AS keys \
             FROM pg_catalog.pg_index i"
        );
        assert_eq!(
            rewrite(
                "SELECT ta.attname FROM pg_catalog.pg_index i, pg_catalog.pg_attribute ta \
                 WHERE ta.attnum = i.indkey[ia.attnum-1]"
            ),
            "SELECT ta.attname FROM pg_catalog.pg_index i, pg_catalog.pg_attribute ta \
             WHERE ta.attnum = sluice_pg_array(i.indkey)[(ia.attnum - 1) + 1]"
        );
        assert_eq!(
            rewrite(
                "SELECT generate_series(array_lower(conkey, 1), array_upper(conkey, 1)) AS i \
                 FROM pg_catalog.pg_constraint WHERE a = conkey[i]"
            ),
            "SELECT unnest(generate_series(array_lower(sluice_pg_array(conkey), 1), \
             array_upper(sluice_pg_array(conkey), 1))) AS i \
             FROM pg_catalog.pg_constraint WHERE a = sluice_pg_array(conkey)[i]"
        );
        assert_eq!(
            rewrite(
                "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM \
                 pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) END \
                 FROM pg_catalog.pg_attribute a"
            ),
            "SELECT a.attname, NULL FROM pg_catalog.pg_attribute a"
        );
        assert_eq!(
            rewrite(
                "SELECT CASE WHEN a.x != $1 THEN (SELECT json_build_object($2, s.start) \
                 FROM pg_catalog.pg_sequence s WHERE a.x != $3) ELSE NULL END, $4 \
                 FROM pg_catalog.pg_attribute a"
            ),
            "SELECT CASE WHEN $1 IS NULL AND $2 IS NULL AND $3 IS NULL THEN NULL END, $4 \
             FROM pg_catalog.pg_attribute a"
        );
        assert_eq!(
            rewrite(
                "SELECT 1, -2 AS m, 3000000000, 4 + 5, x FROM t UNION ALL SELECT 6, 7, 8, 9, y"
            ),
            "SELECT CAST(1 AS INT) AS \"Int64(1)\", CAST(-2 AS INT) AS m, 3000000000, 4 + 5, x \
             FROM t UNION ALL SELECT CAST(6 AS INT) AS \"Int64(6)\", CAST(7 AS INT) AS \"Int64(7)\", \
             CAST(8 AS INT) AS \"Int64(8)\", CAST(9 AS INT) AS \"Int64(9)\", y"
        );
        assert!(matches!(
            rewrite("SELECT 1.5, '1', (SELECT 1)"),
            Cow::Borrowed(_)
        ));
        let user = "SELECT CASE WHEN u.k THEN (SELECT x FROM t WHERE t.k = u.k) END FROM u \
                    WHERE a LIKE 'pg_catalog'";
        assert!(matches!(rewrite(user), Cow::Borrowed(_)));
        // asyncpg's type introspection: unqualified catalog tables, joins, and a recursive WITH
        // of its own; but not a function (psql's publications query).
        assert_eq!(
            rewrite(
                "SELECT CASE WHEN t.typtype = 'd' THEN (WITH RECURSIVE b(oid) AS (SELECT \
                 t2.typbasetype FROM pg_type t2 WHERE t2.oid = t.oid) SELECT oid FROM b) END, \
                 CASE WHEN t.typtype = 'c' THEN (SELECT array_agg(ia.atttypid) FROM pg_attribute \
                 ia INNER JOIN pg_class c ON ia.attrelid = c.oid WHERE c.reltype = t.oid) END \
                 FROM pg_catalog.pg_type AS t"
            ),
            "SELECT NULL, NULL FROM pg_catalog.pg_type AS t"
        );
        // information_schema.columns, with PostgreSQL's type names, under the name given.
        assert_eq!(
            rewrite("SELECT columns.data_type FROM information_schema.columns"),
            "SELECT columns.data_type FROM pg_catalog.sluice_columns AS columns"
        );
        assert_eq!(
            rewrite("SELECT c.data_type FROM INFORMATION_SCHEMA.COLUMNS c JOIN t ON true"),
            "SELECT c.data_type FROM pg_catalog.sluice_columns c JOIN t ON true"
        );
        let publications = "SELECT CASE WHEN pr.prattrs IS NOT NULL THEN (SELECT \
            string_agg(attname, ', ') FROM pg_catalog.generate_series(0, 2) s, \
            pg_catalog.pg_attribute WHERE attnum = s) END FROM pg_catalog.pg_publication_rel pr";
        assert!(matches!(rewrite(publications), Cow::Borrowed(_)));
    }

    #[test]
    fn parameters_cast_to_oid_arrays_are_found() {
        let statement = |sql| {
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0)
        };
        let introspection = statement(
            "SELECT t.oid FROM pg_type t WHERE t.oid = any($1::oid[]) AND t.typelem = $2::oid \
             AND t.typlen = $3",
        );
        assert_eq!(oid_array_parameters(&introspection), ["$1"]);
        assert!(oid_array_parameters(&statement("SELECT $1::int[]")).is_empty());
    }

    #[tokio::test]
    async fn set_config_changes_what_changes_nothing_here_and_refuses_the_rest() {
        let ctx = SessionContext::new();
        register(&ctx).unwrap();
        let answer = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await?.collect().await?;
                let column = cast(batches[0].column(0), &DataType::Utf8)?;
                Ok::<_, DataFusionError>(column.as_string::<i32>().value(0).to_owned())
            }
        };
        assert_eq!(
            answer("SELECT current_setting('jit'), set_config('jit', 'off', false)")
                .await
                .unwrap(),
            "off"
        );
        let refused = answer("SELECT set_config('statement_timeout', '5s', false)").await;
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("use SET statement_timeout"), "{message}");
    }
}

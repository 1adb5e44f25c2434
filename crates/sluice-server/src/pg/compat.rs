//! What PostgreSQL clients ask of a server that DataFusion does not answer as PostgreSQL would:
//! the functions drivers call on connect and in their catalog queries ([`register`]), and the
//! few forms of their catalog queries DataFusion cannot plan, rewritten to ones it can
//! ([`rewrite`]).
//!
//! - `version()` says a PostgreSQL version first, as PostgreSQL does (SQLAlchemy, psqlODBC and
//!   Superset read the major version from it), then what answers: Sluice on DataFusion.
//! - `current_setting(name)` answers the server's settings clients ask for.
//! - `pg_get_serial_sequence(table, column)` and `pg_get_indexdef(…)` are NULL: nothing of
//!   Sluice's has a sequence or an index; `pg_collation_is_visible` is true. `to_regtype(name)` knows the built-in types (psycopg
//!   asks for `hstore` on connect), `json_build_object` builds JSON (SQLAlchemy's columns query).
//! - `x LIKE p ESCAPE 'c'` with an escape character other than the backslash (SQLAlchemy's
//!   `autoescape` uses `/`): DataFusion knows only the backslash, so `p` is given the
//!   backslash's escapes (`sluice_like_pattern`) and the clause dropped. The meaning is
//!   PostgreSQL's: `c` before any character makes it literal.
//! - `unnest(indkey)`, `generate_subscripts(indkey, 1)` over the catalog's `int2vector` and
//!   array columns (SQLAlchemy's and pgJDBC's primary key, unique constraint and index
//!   queries): datafusion-pg-catalog keeps those columns as text (`1 2`, `[1, 2]`), so they are
//!   read as lists of numbers first (`sluice_pg_array`, `sluice_pg_subscripts`).
//!
//! - A CASE whose results look values up in the catalog (SQLAlchemy's columns query, for
//!   defaults, identities and collations) is NULL: DataFusion cannot plan correlated subqueries
//!   in a CASE, and NULL is what those lookups find for Sluice's tables (no defaults, no
//!   identity columns, the default collation). Its parameters stay named, NULL or not.
//!
//! - `pg_class.reloptions` (SQLAlchemy's index query), which datafusion-pg-catalog's `pg_class`
//!   lacks, is NULL: Sluice's tables have no storage options.
//!
//! A query none of the rewrites applies to is passed on as it was written, so that the
//! positions of its errors stay where the client put them.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int32Builder, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, SetExpr, TableFactor,
    TableWithJoins, Value, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The PostgreSQL release whose behaviour the door follows (and says in `version()`).
pub(super) const POSTGRES_VERSION: &str = "16.6";
/// [`POSTGRES_VERSION`] as `server_version_num` says it.
const POSTGRES_VERSION_NUM: &str = "160006";

/// The catalog columns datafusion-pg-catalog keeps as text that PostgreSQL has as
/// `int2vector`, `oidvector` or arrays of numbers.
const NUMBER_VECTORS: &[&str] = &[
    "indkey",
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
        "lc_collate" | "lc_ctype" => "C.UTF-8".into(),
        _ => return None,
    })
}

/// Registers the door's functions in `ctx`.
pub(super) fn register(ctx: &SessionContext) {
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

/// `sql` with the rewrites above applied, or as it was when none applies (or when it does not
/// parse: the error is the parser's that follows).
pub(super) fn rewrite(sql: &str) -> Cow<'_, str> {
    if !mentions_rewritten(sql) {
        return Cow::Borrowed(sql);
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Cow::Borrowed(sql);
    };
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |expr| {
        changed |= rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
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

/// Whether `sql` may hold what [`rewrite`] rewrites (a cheap test, so that the queries of
/// users are not parsed twice).
fn mentions_rewritten(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "escape",
        "unnest",
        "generate_subscripts",
        "pg_catalog",
        "reloptions",
    ]
    .iter()
    .any(|word| lower.contains(word))
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
        Expr::Function(f) => {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(name)) => name.value.to_ascii_lowercase(),
                _ => return false,
            };
            let FunctionArguments::List(list) = &mut f.args else {
                return false;
            };
            let arity = list.args.len();
            let vector = match list.args.first_mut() {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) if is_vector(arg) => arg,
                _ => return false,
            };
            match name.as_str() {
                "unnest" if arity == 1 => {
                    let column = std::mem::replace(vector, Expr::value(Value::Null));
                    *vector = call("sluice_pg_array", vec![column]);
                    true
                }
                "generate_subscripts" if arity == 2 => {
                    let mut subscripts = f.clone();
                    subscripts.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                        "sluice_pg_subscripts",
                    ))]);
                    *expr = call("unnest", vec![Expr::Function(subscripts)]);
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
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

/// Whether `query` reads one table of `pg_catalog`.
fn reads_catalog(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    matches!(
        select.from.as_slice(),
        [TableWithJoins { relation: TableFactor::Table { name, .. }, .. }]
            if name.0.first().is_some_and(|part| {
                matches!(part, ObjectNamePart::Identifier(schema)
                    if schema.value.eq_ignore_ascii_case("pg_catalog"))
            })
    )
}

/// Whether `expr` names one of the catalog's number vectors.
fn is_vector(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Identifier(name) => name,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(name) => name,
            None => return false,
        },
        _ => return false,
    };
    NUMBER_VECTORS.contains(&name.value.to_ascii_lowercase().as_str())
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
        register(&ctx);
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
        let user = "SELECT CASE WHEN u.k THEN (SELECT x FROM t WHERE t.k = u.k) END FROM u \
                    WHERE a LIKE 'pg_catalog'";
        assert!(matches!(rewrite(user), Cow::Borrowed(_)));
    }
}

//! The functions every SQL session of Sluice has beyond DataFusion's own, a view's and a
//! query's alike, so that what a query computes a view over the same columns computes too.
//!
//! JSON (datafusion-functions-json), over `JSON` columns, a JSON stream's `data` and any text
//! holding JSON: `json_get_str(data, 'user', 'id')`, `json_get_int`, `json_get_float`,
//! `json_get_bool`, `json_get_json`, `json_get_array`, `json_as_text`, `json_contains`,
//! `json_length`, `json_object_keys`, and PostgreSQL's operators: `->` (the value as JSON, as
//! PostgreSQL's `->` gives `json`: `(data->'n')::int` casts it), `->>` (as text) and, where the
//! parser reads it (the PostgreSQL door), `?` (has the key: `json_contains` anywhere).
//! datafusion-functions-json's own `->` gives a union of JSON's kinds, which neither a PostgreSQL
//! client nor a JSON answer can take.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::sql::sqlparser::ast::BinaryOperator;
use datafusion_functions_json::udfs::json_get_json_udf;

/// The marker of a text field that holds JSON: Arrow's canonical `arrow.json` extension, as
/// the JSON functions mark what they return. A declared `JSON` column and a JSON stream's
/// `data` carry it (it is kept in the Delta table's schema); the PostgreSQL door describes such
/// a field as `json`.
pub use datafusion_functions_json::json_field_metadata;

/// Registers the functions in a session's `registry`.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_expr_planner(Arc::new(JsonArrow))?;
    datafusion_functions_json::register_all(registry)
}

/// `a -> b`: `json_get_json(a, b)`, the value as JSON text.
#[derive(Debug)]
struct JsonArrow;

impl ExprPlanner for JsonArrow {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        Ok(match expr.op {
            BinaryOperator::Arrow => {
                PlannerResult::Planned(json_get_json_udf().call(vec![expr.left, expr.right]))
            }
            _ => PlannerResult::Original(expr),
        })
    }
}

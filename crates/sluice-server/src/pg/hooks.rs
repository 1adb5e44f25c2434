//! The hook every statement passes through before datafusion-postgres runs it: the statement
//! policy of both SQL doors ([`crate::policy`]) and the query engine's read-only planning.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use sluice_auth::Users;
use sluice_error::Class;
use sluice_query::QueryEngine;

use super::caller;
use super::errors::{class_error, pg_error};
use crate::policy;

/// Lets through what the statement policy allows the caller: queries (planned and checked by
/// the query engine, so `SELECT … INTO` is refused too), the statements clients send to set up
/// a session, and, for a caller who may write, `INSERT` and the lake's DDL.
pub(super) struct ReadOnly {
    pub engine: QueryEngine,
    pub users: Option<Arc<Users>>,
}

impl ReadOnly {
    /// `Some(error)` for a statement that may not run here, or not for this caller.
    fn refuse(
        &self,
        statement: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireError> {
        if let Err(e) = sluice_sql::check_depth(statement) {
            return Some(class_error(Class::TooComplex, &e.message));
        }
        policy::check_sql(&caller(&self.users, client), statement)
            .err()
            .map(|e| pg_error(&e, None))
    }

    /// `CREATE TABLE … AS` (tagged `SELECT n`, as PostgreSQL does) and `DROP TABLE`, run by
    /// the query engine.
    async fn lake_ddl(&self, statement: &Statement) -> PgWireResult<Response> {
        let output = self
            .engine
            .execute(statement.clone())
            .await
            .map_err(|e| pg_error(&e, None))?;
        let written = output
            .batches
            .first()
            .and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>())
            .map(|rows| rows.value(0) as usize);
        Ok(Response::Execution(match written {
            Some(rows) => Tag::new("SELECT").with_rows(rows),
            None => Tag::new("DROP TABLE"),
        }))
    }

    /// Plans a query and checks it only reads; `None` for the statements other hooks answer.
    async fn plan(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // The simple protocol runs them before any hook; the extended one cannot describe
        // their answers ahead of running them.
        if sluice_sql::is_dialect(&statement.to_string()) {
            return Some(Err(class_error(
                Class::Unsupported,
                "stream statements run in the simple query protocol (psql; psycopg without \
                 parameters), not in the extended one",
            )));
        }
        if let Some(refusal) = self.refuse(statement, client) {
            return Some(Err(refusal));
        }
        if QueryEngine::is_lake_ddl(statement) {
            // Nothing to describe ahead: the statement runs when executed (below).
            return Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::empty()),
            })));
        }
        if !matches!(
            statement,
            Statement::Query(_) | Statement::Explain { .. } | Statement::Insert(_)
        ) {
            return None;
        }
        Some(
            self.engine
                .plan(ctx, statement.clone())
                .await
                .map_err(|e| pg_error(&e, None)),
        )
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Prepared statements live in the protocol's portals, not in SQL: psycopg deallocates
        // them all after some commands, and poolers discard session state.
        match statement {
            Statement::Deallocate { .. } => {
                return Some(Ok(Response::Execution(Tag::new("DEALLOCATE"))));
            }
            Statement::Discard { .. } => {
                return Some(Ok(Response::Execution(Tag::new("DISCARD ALL"))));
            }
            s if QueryEngine::is_lake_ddl(s) => {
                return Some(match self.refuse(s, &*client) {
                    Some(refusal) => Err(refusal),
                    None => self.lake_ddl(s).await,
                });
            }
            _ => {}
        }
        // A query that passes is run by datafusion-postgres itself (None).
        match self.plan(statement, ctx, &*client).await? {
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.plan(statement, ctx, client).await
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if QueryEngine::is_lake_ddl(statement) {
            return Some(match self.refuse(statement, &*client) {
                Some(refusal) => Err(refusal),
                None => self.lake_ddl(statement).await,
            });
        }
        None
    }
}

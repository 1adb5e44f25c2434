//! A PostgreSQL session's own statements, as BI tools and drivers send them: transactions,
//! savepoints, and `SHOW` of the server's settings.
//!
//! Transactions change nothing in Sluice (the lake's tables are written only by pipelines and by
//! single statements, each its own commit): `BEGIN … COMMIT` is accepted, and every query in it
//! reads the tables as they are when it runs. What a transaction *says* is PostgreSQL's, since
//! drivers act on it:
//!
//! - an error in a transaction fails it: every statement but `ROLLBACK` (`COMMIT` rolls back)
//!   and `ROLLBACK TO SAVEPOINT` is refused with 25P02 until then;
//! - `SAVEPOINT` needs a transaction (25P01 outside one); `RELEASE` and `ROLLBACK TO` need the
//!   savepoint (3B001); `ROLLBACK TO` ends the failure and keeps the savepoint, `RELEASE`
//!   drops it and the later ones (psycopg's nested transactions, SQLAlchemy's
//!   `begin_nested`, psqlODBC's statement-level rollback).
//!
//! The savepoints live in the connection's metadata; the transaction status in pgwire's.
//! pgwire leaves a failed transaction only on a statement that ends it, so [`leaves_failure`]
//! tells the handlers which statement must be let through first.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Ident, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;

use super::compat;

/// The connection metadata key of the savepoints, oldest first (a JSON array of names).
const SAVEPOINTS: &str = "sluice.savepoints";

/// Answers transactions, savepoints and `SHOW` of server settings; refuses everything else in
/// a failed transaction.
pub(super) struct Session;

impl Session {
    fn answer(
        &self,
        statement: &Statement,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let status = client.transaction_status();
        let answer = match statement {
            Statement::StartTransaction { .. } => {
                if status == TransactionStatus::Error {
                    return Some(Err(failed()));
                }
                set_savepoints(client, &[]);
                Ok(match status {
                    TransactionStatus::Idle => Response::TransactionStart(Tag::new("BEGIN")),
                    // PostgreSQL warns and goes on.
                    _ => Response::Execution(Tag::new("BEGIN")),
                })
            }
            Statement::Commit { .. } => {
                set_savepoints(client, &[]);
                Ok(Response::TransactionEnd(Tag::new(match status {
                    TransactionStatus::Error => "ROLLBACK",
                    _ => "COMMIT",
                })))
            }
            Statement::Rollback {
                savepoint: None, ..
            } => {
                set_savepoints(client, &[]);
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Statement::Savepoint { name } => match status {
                TransactionStatus::Idle => Err(error(
                    "25P01",
                    "SAVEPOINT can only be used in transaction blocks".into(),
                )),
                TransactionStatus::Error => Err(failed()),
                TransactionStatus::Transaction => {
                    let mut savepoints = savepoints(client);
                    savepoints.push(name.value.clone());
                    set_savepoints(client, &savepoints);
                    Ok(Response::Execution(Tag::new("SAVEPOINT")))
                }
            },
            Statement::ReleaseSavepoint { name } => match status {
                TransactionStatus::Error => Err(failed()),
                _ => to_savepoint(client, "RELEASE SAVEPOINT", name).map(|at| {
                    let mut savepoints = savepoints(client);
                    savepoints.truncate(at);
                    set_savepoints(client, &savepoints);
                    Response::Execution(Tag::new("RELEASE"))
                }),
            },
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => to_savepoint(client, "ROLLBACK TO SAVEPOINT", name).map(|at| {
                let mut savepoints = savepoints(client);
                savepoints.truncate(at + 1);
                set_savepoints(client, &savepoints);
                client.set_transaction_status(TransactionStatus::Transaction);
                Response::Execution(Tag::new("ROLLBACK"))
            }),
            _ if status == TransactionStatus::Error => Err(failed()),
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|part| part.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join("_");
                // What the session has set, datafusion-postgres answers.
                if client.metadata().contains_key(&name) {
                    return None;
                }
                let value = compat::setting(&name)?;
                Ok(Response::Query(show(&name, &value)))
            }
            _ => return None,
        };
        Some(answer)
    }
}

#[async_trait]
impl QueryHook for Session {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, client)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match statement {
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => {
                Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(DFSchema::empty()),
                })))
            }
            _ if client.transaction_status() == TransactionStatus::Error => Some(Err(failed())),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, client)
    }
}

/// Whether `sql` may end a failed transaction without ending the transaction
/// (`ROLLBACK TO SAVEPOINT`): pgwire must see the transaction as running for it to stay so.
pub(super) fn leaves_failure(sql: &str) -> bool {
    let mut words = sql.split_whitespace().map(str::to_ascii_lowercase);
    words.next().as_deref() == Some("rollback") && words.any(|w| w == "to" || w.starts_with("to;"))
}

/// The index of savepoint `name` (the latest of that name), or 3B001.
fn to_savepoint(client: &dyn HookClient, command: &str, name: &Ident) -> PgWireResult<usize> {
    if client.transaction_status() == TransactionStatus::Idle {
        return Err(error(
            "25P01",
            format!("{command} can only be used in transaction blocks"),
        ));
    }
    savepoints(client)
        .iter()
        .rposition(|s| *s == name.value)
        .ok_or_else(|| {
            error(
                "3B001",
                format!("savepoint \"{}\" does not exist", name.value),
            )
        })
}

fn savepoints(client: &dyn HookClient) -> Vec<String> {
    client
        .metadata()
        .get(SAVEPOINTS)
        .and_then(|names| serde_json::from_str(names).ok())
        .unwrap_or_default()
}

fn set_savepoints(client: &mut dyn HookClient, savepoints: &[String]) {
    match savepoints {
        [] => client.metadata_mut().remove(SAVEPOINTS),
        names => client.metadata_mut().insert(
            SAVEPOINTS.into(),
            serde_json::Value::from(names.to_vec()).to_string(),
        ),
    };
}

fn failed() -> PgWireError {
    error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block".into(),
    )
}

fn error(sqlstate: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        sqlstate.into(),
        message,
    )))
}

/// `SHOW name`'s answer: one row, one text column named after the setting.
fn show(name: &str, value: &str) -> QueryResponse {
    let fields = Arc::new(vec![FieldInfo::new(
        name.into(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut row = DataRowEncoder::new(fields.clone());
    let encoded = row.encode_field(&Some(value)).map(|()| row.take_row());
    QueryResponse::new(fields, Box::pin(futures::stream::once(async { encoded })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rollback_to_leaves_a_failure() {
        assert!(leaves_failure("ROLLBACK TO SAVEPOINT a"));
        assert!(leaves_failure("rollback to a; release savepoint a"));
        assert!(leaves_failure(
            "ROLLBACK TRANSACTION TO SAVEPOINT \"_pg3_1\""
        ));
        assert!(!leaves_failure("ROLLBACK"));
        assert!(!leaves_failure("SELECT 'rollback to'"));
    }
}

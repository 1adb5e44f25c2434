//! The statement policy of both SQL doors (`POST /v1/sql` and the PostgreSQL protocol): what
//! may run at all, and what a read-only user may run. One list, so the doors cannot disagree.
//!
//! | statements | access |
//! | --- | --- |
//! | queries, `EXPLAIN` of a query, `SHOW …` (streams, views, tables, columns, schemas, catalogs, variables), `DESCRIBE` | read |
//! | `CREATE STREAM`, `DROP STREAM`, `CREATE`/`DROP MATERIALIZED VIEW`, `CREATE TABLE … AS`, `INSERT`, `DROP TABLE`, `OPTIMIZE`, `VACUUM` | write: not for a read-only user |
//! | `SET` of a session variable, `BEGIN`/`COMMIT`/`ROLLBACK`, savepoints, cursors, `DEALLOCATE`, `DISCARD` | a PostgreSQL session's: the PostgreSQL door answers them; over HTTP (a request is its own session) they have no meaning |
//! | anything else (`UPDATE`, `DELETE`, `CREATE VIEW`, `COPY`, `SET datafusion.…`, which would change the one session every PostgreSQL connection shares) | refused |
//!
//! The query engine checks plans again (it refuses whatever writes but its own writes), so a
//! statement let through here that writes unseen is still refused there.

use datafusion::sql::sqlparser::ast::{ObjectType, Set, Statement as SqlStatement};
use sluice_sql::Statement;

use crate::ServerError;
use crate::auth::Caller;

/// What a statement does, for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// It reads only.
    Read,
    /// It writes or defines: named for messages (`DROP TABLE`, `CREATE STREAM`).
    Write(String),
    /// It sets up a PostgreSQL session.
    Session,
}

/// What `statement` does, if it may run at all.
pub fn access(statement: &Statement) -> Result<Access, ServerError> {
    match statement {
        Statement::ShowStreams
        | Statement::ShowViews
        | Statement::ShowSources
        | Statement::Describe { .. } => Ok(Access::Read),
        Statement::Sql(sql) => sql_access(sql),
        other => Ok(Access::Write(other.tag().to_string())),
    }
}

/// [`access`] for the statements of the query engine (and of PostgreSQL sessions).
pub fn sql_access(statement: &SqlStatement) -> Result<Access, ServerError> {
    use SqlStatement as S;
    match statement {
        S::Query(_)
        | S::ShowTables { .. }
        | S::ShowColumns { .. }
        | S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowStatus { .. }
        | S::ShowCatalogs { .. }
        | S::ShowSchemas { .. }
        | S::ShowFunctions { .. }
        | S::ExplainTable { .. } => Ok(Access::Read),
        // EXPLAIN of a write plans it, and may tell what it would do to whom may do it.
        S::Explain { statement, .. } => match sql_access(statement)? {
            Access::Session => Err(refused(statement)),
            access => Ok(access),
        },
        S::Insert(_)
        | S::CreateTable(_)
        | S::Drop {
            object_type: ObjectType::Table,
            ..
        } => Ok(Access::Write(kind(statement))),
        S::Set(set) if sets_engine_option(set) => {
            Err(ServerError::Query(sluice_query::QueryError::Refused(
                "DataFusion's options cannot be set here: every connection shares one session"
                    .into(),
            )))
        }
        S::Set(_)
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. }
        | S::Declare { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Deallocate { .. }
        | S::Discard { .. } => Ok(Access::Session),
        other => Err(refused(other)),
    }
}

/// Whether `caller` may run `statement`: [`access`], and a read-only caller refused what
/// writes.
pub fn check(caller: &Caller, statement: &Statement) -> Result<Access, ServerError> {
    allowed(caller, access(statement)?)
}

/// [`check`] for the statements of the query engine.
pub fn check_sql(caller: &Caller, statement: &SqlStatement) -> Result<Access, ServerError> {
    allowed(caller, sql_access(statement)?)
}

fn allowed(caller: &Caller, access: Access) -> Result<Access, ServerError> {
    if let Access::Write(what) = &access {
        caller.may_write(what)?;
    }
    Ok(access)
}

fn refused(statement: &SqlStatement) -> ServerError {
    ServerError::Query(sluice_query::QueryError::Refused(format!(
        "only queries, stream and view statements, CREATE TABLE … AS, INSERT and DROP TABLE are \
         allowed, not {}",
        kind(statement)
    )))
}

/// A statement's leading words (`DROP TABLE`, `INSERT INTO`), for messages.
pub fn kind(statement: &SqlStatement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `SET datafusion.…`: an option of the session every PostgreSQL connection shares.
fn sets_engine_option(set: &Set) -> bool {
    let engine = |name: &datafusion::sql::sqlparser::ast::ObjectName| {
        name.to_string()
            .to_ascii_lowercase()
            .starts_with("datafusion")
    };
    match set {
        Set::SingleAssignment { variable, .. } => engine(variable),
        Set::ParenthesizedAssignments { variables, .. } => variables.iter().any(engine),
        Set::MultipleAssignments { assignments } => assignments.iter().any(|a| engine(&a.name)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use sluice_auth::Role;

    use super::*;

    fn statement(sql: &str) -> Statement {
        sluice_sql::parse(sql).unwrap().remove(0)
    }

    fn reader() -> Caller {
        Caller {
            name: "reader".into(),
            role: Role::ReadOnly,
        }
    }

    #[test]
    fn both_doors_let_a_reader_read_and_only_read() {
        for sql in [
            "SELECT 1",
            "SHOW STREAMS",
            "SHOW MATERIALIZED VIEWS",
            "SHOW TABLES",
            "SHOW SCHEMAS",
            "SHOW COLUMNS FROM t",
            "DESCRIBE t",
            "EXPLAIN SELECT 1",
        ] {
            assert_eq!(
                check(&reader(), &statement(sql)).unwrap(),
                Access::Read,
                "{sql}"
            );
        }
        for sql in [
            "CREATE STREAM s",
            "DROP STREAM s",
            "CREATE MATERIALIZED VIEW v AS SELECT * FROM s",
            "DROP MATERIALIZED VIEW v",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "OPTIMIZE t",
            "VACUUM t",
        ] {
            let e = check(&reader(), &statement(sql)).unwrap_err();
            assert!(matches!(e, ServerError::Forbidden(_)), "{sql}: {e}");
            assert!(check(&Caller::anyone(), &statement(sql)).is_ok(), "{sql}");
        }
        for sql in ["SET TIME ZONE 'UTC'", "BEGIN", "COMMIT", "ROLLBACK"] {
            assert_eq!(
                check(&reader(), &statement(sql)).unwrap(),
                Access::Session,
                "{sql}"
            );
        }
        for sql in [
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE VIEW v AS SELECT 1",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN DELETE FROM t",
            "EXPLAIN BEGIN",
        ] {
            assert!(check(&Caller::anyone(), &statement(sql)).is_err(), "{sql}");
        }
    }
}

//! The PostgreSQL protocol: psql, psycopg and BI tools query the lake here.
//!
//! ```text
//!  client ──► pgwire (datafusion-postgres: simple and extended queries, parameters, types,
//!             pg_catalog for `\d` and BI tools' catalog queries)
//!               │ every statement, parsed
//!               ▼
//!             ReadOnly hook ──► refused: anything but queries and session statements
//!               │
//!               ▼
//!             one DataFusion session, made by the query engine (the lake, fresh)
//! ```
//!
//! One session serves every connection, as datafusion-postgres is built to; connections differ
//! only in their protocol state (portals, `SET` of PostgreSQL variables). That is why the hook
//! also refuses `SET datafusion.…`: it would change the session for everyone.
//!
//! The dialect's stream statements (`CREATE STREAM`, `SHOW STREAMS`, …) run in the simple query
//! protocol, as psql sends them, before datafusion-postgres (whose parser does not know them)
//! sees the query. Time travel (`VERSION AS OF`, `TIMESTAMP AS OF`) is rewritten into versioned
//! table names before any parser sees a query, in both protocols.

mod login;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, METADATA_USER, PgWireConnectionState,
    PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, StreamExt};
use sluice_auth::{Role, Users};
use sluice_query::{QueryEngine, QueryError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::Caller;
use crate::listen::{self, Connections};
use crate::{AppState, ServerError, sql};

/// Binds `addr` and serves the PostgreSQL protocol until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let engine = state.query.clone();
    let ctx = engine
        .session()
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    setup_pg_catalog(&ctx, "sluice", EmptyContextProvider)
        .map_err(|e| ServerError::Internal(format!("cannot set up pg_catalog: {e}")))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly {
            engine: engine.clone(),
            users: state.users.clone(),
        }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let statement_timeout = state.limits.query_timeout;
    let passwords = state
        .users
        .as_deref()
        .map(|users| Arc::new(login::Passwords::new(users)));
    let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks));
    let handlers = Arc::new(Handlers {
        simple: Arc::new(Simple {
            state,
            service: service.clone(),
        }),
        extended: Arc::new(Extended {
            parser: Arc::new(AsOfParser(service.query_parser())),
            service,
        }),
        passwords,
        statement_timeout,
        tls: tls.is_some(),
    });
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let accepting = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                (socket, _) = listen::accept(&listener) => {
                    let Some(permit) = connections.admit() else {
                        tokio::spawn(listen::refuse_pg(socket, connections.max()));
                        continue;
                    };
                    let (handlers, tls) = (handlers.clone(), tls.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = process_socket(socket, tls, handlers).await {
                            tracing::debug!(error = %e, "a PostgreSQL connection failed");
                        }
                    });
                }
            }
        }
    });
    Ok((bound, accepting))
}

struct Handlers {
    simple: Arc<Simple>,
    extended: Arc<Extended>,
    /// `None`: no users, no login.
    passwords: Option<Arc<login::Passwords>>,
    /// Every connection's `statement_timeout` to start with.
    statement_timeout: std::time::Duration,
    /// Whether connections must use TLS.
    tls: bool,
}

impl PgWireServerHandlers for Handlers {
    /// Called for every connection: a login holds its exchange's state.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(login::Login::new(
            self.passwords.as_ref(),
            self.statement_timeout,
            self.tls,
        ))
    }

    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.simple.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.extended.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlState)
    }
}

/// The simple query protocol: stream statements run here, everything else in DataFusion.
struct Simple {
    state: AppState,
    service: Arc<DfSessionService>,
}

#[async_trait]
impl SimpleQueryHandler for Simple {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Queries go to DataFusion: datafusion-postgres' parser knows more of PostgreSQL's
        // syntax (psql's and BI tools' catalog queries) than the dialect's generic one.
        if !sluice_sql::is_dialect(query) {
            let query = sluice_sql::as_of::rewrite(query)
                .map_err(|e| server_error(sql::StatementError::Server(e.into())))?;
            let timeout = login::statement_timeout(client);
            let responses = SimpleQueryHandler::do_query(&*self.service, client, &query).await?;
            return Ok(responses
                .into_iter()
                .map(|r| with_deadline(r, timeout))
                .collect());
        }
        let statements = sluice_sql::parse(query)
            .map_err(|e| server_error(sql::StatementError::Server(e.into())))?;
        let mut responses = Vec::with_capacity(statements.len());
        let caller = caller(&self.state.users, client);
        for statement in statements {
            let tag = statement.tag();
            let (schema, batches) = sql::answer(&self.state, &caller, statement)
                .await
                .map_err(server_error)?;
            if schema.fields().is_empty() {
                responses.push(Response::Execution(Tag::new(tag)));
                continue;
            }
            let frame = MemTable::try_new(schema, vec![batches])
                .and_then(|table| SessionContext::new().read_table(Arc::new(table)))
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            responses.push(Response::Query(
                encode_dataframe(frame, &Format::UnifiedText, None).await?,
            ));
        }
        Ok(responses)
    }
}

/// The extended query protocol: datafusion-postgres', with time travel rewritten first.
struct Extended {
    service: Arc<DfSessionService>,
    parser: Arc<AsOfParser>,
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;
type DfParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = DfStatement;
    type QueryParser = AsOfParser;

    fn query_parser(&self) -> Arc<AsOfParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let timeout = login::statement_timeout(client);
        let response =
            ExtendedQueryHandler::do_query(&*self.service, client, portal, max_rows).await?;
        Ok(with_deadline(response, timeout))
    }
}

/// Ends a query's rows with SQLSTATE 57014 once its `statement_timeout` has passed:
/// datafusion-postgres applies the timeout to planning only, while the work is done as the rows
/// are read. Dropping the rows' stream stops the query.
fn with_deadline(response: Response, timeout: Option<std::time::Duration>) -> Response {
    let (mut query, timeout) = match (response, timeout) {
        (Response::Query(query), Some(timeout)) => (query, timeout),
        (response, _) => return response,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    query.data_rows = Box::pin(futures::stream::unfold(
        Some(rows),
        move |rows| async move {
            let mut rows = rows?;
            match tokio::time::timeout_at(deadline, rows.next()).await {
                Ok(Some(row)) => Some((row, Some(rows))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(user_error(
                        "57014",
                        &format!(
                            "canceling statement due to statement timeout ({timeout:?}; \
                         limits.query_timeout, or SET statement_timeout)"
                        ),
                    )),
                    None,
                )),
            }
        },
    ));
    Response::Query(query)
}

/// datafusion-postgres' parser, given queries with their time travel rewritten.
struct AsOfParser(Arc<DfParser>);

#[async_trait]
impl QueryParser for AsOfParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = sluice_sql::as_of::rewrite(sql)
            .map_err(|e| server_error(sql::StatementError::Server(e.into())))?;
        self.0.parse_sql(client, &sql, types).await
    }

    fn get_parameter_types(&self, statement: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.0.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &DfStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.0.get_result_schema(statement, column_format)
    }
}

/// The user a connection logged in as (pgwire's startup authenticated it); anyone without users.
fn caller(users: &Option<Arc<Users>>, client: &(impl ClientInfo + ?Sized)) -> Caller {
    let user = users
        .as_ref()
        .zip(client.metadata().get(METADATA_USER))
        .and_then(|(users, name)| users.get(name));
    match (users, user) {
        (None, _) => Caller::anyone(),
        (Some(_), Some(user)) => Caller {
            name: user.name.clone(),
            role: user.role,
        },
        // Cannot happen past startup's authentication; if it did, the connection may only read.
        (Some(_), None) => Caller {
            name: "unknown".into(),
            role: Role::ReadOnly,
        },
    }
}

/// Lets through what only reads: queries (planned and checked by the query engine, so
/// `SELECT … INTO` is refused too) and the statements clients send to set up a session; and,
/// for a caller who may write, `INSERT` and the lake's DDL.
struct ReadOnly {
    engine: QueryEngine,
    users: Option<Arc<Users>>,
}

impl ReadOnly {
    /// `Some(error)` for a statement that may not run here, or not for this caller.
    fn refuse(
        &self,
        statement: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireError> {
        if let Err(e) = sluice_sql::check_depth(statement) {
            return Some(user_error("54001", &e.message)); // statement_too_complex
        }
        // Of what may run here, only these write.
        let writes =
            matches!(statement, Statement::Insert(_)) || QueryEngine::is_lake_ddl(statement);
        if writes
            && let Err(e) = caller(&self.users, client).may_write(&sql::statement_kind(statement))
        {
            return Some(user_error("42501", &e.message));
        }
        let allowed = match statement {
            Statement::Query(_) | Statement::Explain { .. } | Statement::Insert(_) => true,
            s if QueryEngine::is_lake_ddl(s) => true,
            Statement::Set(set) => !sets_engine_option(set),
            Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Deallocate { .. }
            | Statement::Discard { .. } => true,
            _ => false,
        };
        if let Statement::Set(_) = statement
            && !allowed
        {
            return Some(user_error(
                "42501",
                "DataFusion's options cannot be set here: every connection shares one session",
            ));
        }
        (!allowed).then(|| {
            user_error(
                "42501",
                &format!(
                    "only queries, stream statements, CREATE TABLE … AS, INSERT and DROP TABLE \
                     are allowed, not {}",
                    sql::statement_kind(statement)
                ),
            )
        })
    }

    /// `CREATE TABLE … AS` (tagged `SELECT n`, as PostgreSQL does) and `DROP TABLE`, run by
    /// the query engine.
    async fn lake_ddl(&self, statement: &Statement) -> PgWireResult<Response> {
        let output = self
            .engine
            .execute(statement.clone())
            .await
            .map_err(query_error)?;
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
            return Some(Err(user_error(
                "0A000",
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
                .map_err(query_error),
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

/// `SET datafusion.…`: an option of the session every connection shares.
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

fn user_error(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

fn server_error(e: sql::StatementError) -> PgWireError {
    use sluice_log::Error as L;
    use sluice_pipeline::PipelineError as P;
    let e = match e {
        sql::StatementError::Query(e) => return query_error(e),
        sql::StatementError::Forbidden(m) => return user_error("42501", &m),
        e @ sql::StatementError::Timeout(_) => return user_error("57014", &e.to_string()),
        sql::StatementError::Server(e) => e,
    };
    let code = match &e {
        ServerError::Sql(_) => "42601",
        ServerError::Log(L::StreamNotFound(_)) | ServerError::Pipeline(P::ViewNotFound(_)) => {
            "42P01" // undefined_table
        }
        ServerError::Log(L::StreamExists(_))
        | ServerError::TableExists(_)
        | ServerError::Pipeline(P::ViewExists(_)) => "42P07", // duplicate_table
        ServerError::Unsupported(_) | ServerError::Pipeline(P::Unsupported(_)) => "0A000", // feature_not_supported
        ServerError::Pipeline(P::Sql(_)) => "42601",
        ServerError::Log(L::InvalidName(_) | L::InvalidShardCount(_)) | ServerError::Config(_) => {
            "22023" // invalid_parameter_value
        }
        _ => "XX000",
    };
    user_error(code, &e.to_string())
}

fn query_error(e: QueryError) -> PgWireError {
    match e {
        QueryError::Refused(m) => user_error("42501", &m),
        QueryError::Plan(m) => user_error(plan_error_code(&m), &m),
        QueryError::Execution(m) => user_error("XX000", &m),
        QueryError::ResultTooLarge(m) => user_error("54000", &m), // program_limit_exceeded
    }
}

/// The SQLSTATE of a planning error, from DataFusion's message.
fn plan_error_code(message: &str) -> &'static str {
    if message.starts_with("SQL error") || message.contains("ParserError") {
        "42601" // syntax_error
    } else if message.contains("already exists") {
        "42P07" // duplicate_table
    } else if message.contains("table")
        && (message.contains("not found") || message.contains("does not exist"))
    {
        "42P01" // undefined_table
    } else if message.contains("No field named") || message.contains("Schema error") {
        "42703" // undefined_column
    } else {
        "42000" // syntax_error_or_access_rule_violation
    }
}

/// Gives DataFusion's errors, which datafusion-postgres passes on as internal errors (XX000),
/// the SQLSTATE a PostgreSQL client expects.
struct SqlState;

impl ErrorHandler for SqlState {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        // A login's failures stay as they are: FATAL (see [`login`]).
        if matches!(
            client.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        ) {
            return;
        }
        let PgWireError::ApiError(source) = error else {
            return;
        };
        if let Some(e) = source.downcast_ref::<ParserError>() {
            *error = user_error("42601", &e.to_string());
            return;
        }
        let (code, message) = match source.downcast_ref::<DataFusionError>() {
            Some(e @ DataFusionError::SQL(..)) => ("42601", e.strip_backtrace()),
            Some(e @ (DataFusionError::Plan(_) | DataFusionError::SchemaError(..))) => {
                let m = e.strip_backtrace();
                (plan_error_code(&m), m)
            }
            Some(e) => ("XX000", e.strip_backtrace()),
            None => ("XX000", source.to_string()),
        };
        *error = user_error(code, &message);
    }
}

//! The PostgreSQL protocol: psql, psycopg and BI tools query the lake here.
//!
//! ```text
//!  client ──► pgwire (datafusion-postgres: simple and extended queries, parameters, types,
//!             pg_catalog for `\d` and BI tools' catalog queries)
//!               │ every statement, rewritten (time travel, compat) and parsed
//!               ▼
//!             Session hook ──► transactions, savepoints, SHOW of settings answered
//!               │
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
//! table names before any parser sees a query, in both protocols, and so are the forms of
//! drivers' catalog queries DataFusion cannot plan (`compat`, which also holds the functions
//! drivers call). A session's transactions, savepoints and `SHOW` of settings are answered as
//! PostgreSQL does (`session`). What may run is the statement policy of both SQL doors
//! ([`crate::policy`], applied by `hooks`); errors are said by their class (`errors`), with
//! the position of a syntax error. Results are described with PostgreSQL's types, modifiers
//! included (`types`), and so are the tables' columns in `pg_attribute` (`catalog`).
//!
//! Shutdown: the port stops accepting (the shared accept loop of [`crate::listen`]), the
//! queries in flight finish (for at most [`crate::SHUTDOWN_GRACE`]), then every connection
//! closes — idle sessions do not hold the server up.

mod catalog;
mod compat;
mod errors;
mod hooks;
mod login;
mod session;
mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::{Entry, PortalStore};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, METADATA_USER, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::extendedquery::Execute;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::simplequery::Query;
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, StreamExt};
use sluice_auth::{Role, Users};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::Caller;
use crate::listen::{self, Connections};
use crate::{AppState, SHUTDOWN_GRACE, ServerError, sql};
use errors::{classified, pg_error};

/// Binds `addr` and serves the PostgreSQL protocol until `stop` turns true, then until the
/// queries in flight have finished and every connection has closed.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let engine = state.query.clone();
    let ctx = engine.session()?;
    setup_pg_catalog(&ctx, "sluice", EmptyContextProvider)
        .map_err(|e| ServerError::Internal(format!("cannot set up pg_catalog: {e}")))?;
    catalog::register(&ctx, "sluice")
        .map_err(|e| ServerError::Internal(format!("cannot set up pg_attribute: {e}")))?;
    compat::register(&ctx).map_err(|e| {
        ServerError::Internal(format!("cannot set up the PostgreSQL functions: {e}"))
    })?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(session::Session),
        Arc::new(hooks::ReadOnly {
            engine: engine.clone(),
            users: state.users.clone(),
        }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(types::DescribedQueries),
    ];
    let statement_timeout = state.limits.query_timeout;
    let passwords = state
        .users
        .as_deref()
        .map(|users| Arc::new(login::Passwords::new(users)));
    let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks));
    let in_flight = InFlight::default();
    let handlers = Arc::new(Handlers {
        simple: Arc::new(Simple {
            state,
            service: service.clone(),
            in_flight: in_flight.clone(),
        }),
        extended: Arc::new(Extended {
            parser: Arc::new(RewritingParser(service.query_parser())),
            service,
            in_flight: in_flight.clone(),
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
    let max = connections.max();
    let accepting = tokio::spawn(listen::accept_loop(
        listener,
        connections,
        stop.clone(),
        move |tcp| listen::refuse_pg(tcp, max),
        move |socket, _peer| {
            let (handlers, tls, in_flight) = (handlers.clone(), tls.clone(), in_flight.clone());
            let mut stop = stop.clone();
            async move {
                tokio::select! {
                    served = process_socket(socket, tls, handlers) => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "a PostgreSQL connection failed");
                        }
                    }
                    () = async {
                        listen::stopped(&mut stop).await;
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, in_flight.finished()).await;
                    } => {}
                }
            }
        },
    ));
    Ok((bound, accepting))
}

/// The queries running on the port, counted so that shutdown waits for them (and not for idle
/// sessions, which may stay open for ever).
#[derive(Clone, Default)]
struct InFlight {
    running: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

/// One query running: counted until dropped (with the query's rows, when it has some).
struct Running(InFlight);

impl InFlight {
    fn begin(&self) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Waits until no query runs.
    async fn finished(&self) {
        loop {
            let notified = self.done.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
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
        Arc::new(errors::SqlState)
    }
}

/// The simple query protocol: stream statements run here, everything else in DataFusion.
struct Simple {
    state: AppState,
    service: Arc<DfSessionService>,
    in_flight: InFlight,
}

#[async_trait]
impl SimpleQueryHandler for Simple {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if session::leaves_failure(&query.query) {
            resume_transaction(client);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let running = self.in_flight.begin();
        // Queries go to DataFusion: datafusion-postgres' parser knows more of PostgreSQL's
        // syntax (psql's and BI tools' catalog queries) than the dialect's generic one.
        if !sluice_sql::is_dialect(query) {
            let rewritten = rewrite(query)?;
            let timeout = login::statement_timeout(client);
            let responses = SimpleQueryHandler::do_query(&*self.service, client, &rewritten)
                .await
                .map_err(|e| classified(e, Some(&rewritten)))?;
            return Ok(responses
                .into_iter()
                .map(|r| finishing(r, timeout, &self.in_flight))
                .collect());
        }
        let statements = sluice_sql::parse(query).map_err(|e| pg_error(&e, Some(query)))?;
        let mut responses = Vec::with_capacity(statements.len());
        let caller = caller(&self.state.users, client);
        for statement in statements {
            let tag = statement.tag();
            let (schema, batches) = sql::answer(&self.state, &caller, statement)
                .await
                .map_err(|e| pg_error(&e, Some(query)))?;
            if schema.fields().is_empty() {
                responses.push(Response::Execution(Tag::new(tag)));
                continue;
            }
            let frame = MemTable::try_new(schema, vec![batches])
                .and_then(|table| SessionContext::new().read_table(Arc::new(table)))
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            responses.push(Response::Query(
                types::encode(frame, &Format::UnifiedText, None).await?,
            ));
        }
        drop(running);
        Ok(responses)
    }
}

/// The extended query protocol: datafusion-postgres', with queries [`rewrite`]n first.
struct Extended {
    service: Arc<DfSessionService>,
    parser: Arc<RewritingParser>,
    in_flight: InFlight,
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;
type DfParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = DfStatement;
    type QueryParser = RewritingParser;

    fn query_parser(&self) -> Arc<RewritingParser> {
        self.parser.clone()
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let portal = client
            .portal_store()
            .get_portal(message.name.as_deref().unwrap_or_default());
        if let Some(Entry::Value(portal)) = portal
            && session::leaves_failure(&portal.statement.statement.0)
        {
            resume_transaction(client);
        }
        self._on_execute(client, message).await
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
        let running = self.in_flight.begin();
        let timeout = login::statement_timeout(client);
        let response = ExtendedQueryHandler::do_query(&*self.service, client, portal, max_rows)
            .await
            .map_err(|e| classified(e, None))?;
        drop(running);
        Ok(finishing(response, timeout, &self.in_flight))
    }
}

/// A query's rows, counted as running until they are all sent (see [`InFlight`]), and ended
/// with SQLSTATE 57014 once its `statement_timeout` has passed: datafusion-postgres applies the
/// timeout to planning only, while the work is done as the rows are read. Dropping the rows'
/// stream stops the query.
fn finishing(
    response: Response,
    timeout: Option<std::time::Duration>,
    in_flight: &InFlight,
) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    let running = in_flight.begin();
    query.data_rows = Box::pin(futures::stream::unfold(
        Some((rows, running)),
        move |state| async move {
            let (mut rows, running) = state?;
            let next = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, rows.next()).await,
                None => Ok(rows.next().await),
            };
            match next {
                Ok(Some(row)) => Some((row, Some((rows, running)))),
                Ok(None) => None,
                Err(_) => Some((Err(errors::timed_out(timeout.unwrap_or_default())), None)),
            }
        },
    ));
    Response::Query(query)
}

/// A failed transaction seen as running again, so that the statement about to run (one that
/// [`session::leaves_failure`]) leaves it running: pgwire takes a transaction's status from
/// before a statement and would keep it failed. The statement is refused (and the transaction
/// failed again) if its savepoint does not exist.
fn resume_transaction(client: &mut impl ClientInfo) {
    if client.transaction_status() == TransactionStatus::Error {
        client.set_transaction_status(TransactionStatus::Transaction);
    }
}

/// `sql` as DataFusion is given it: time travel ([`sluice_sql::as_of`]) and what PostgreSQL
/// clients send that DataFusion cannot run as written ([`compat`]) rewritten.
fn rewrite(sql: &str) -> PgWireResult<String> {
    sluice_sql::check_text(sql).map_err(|e| pg_error(&e, Some(sql)))?;
    let rewritten = sluice_sql::as_of::rewrite(sql).map_err(|e| pg_error(&e, Some(sql)))?;
    Ok(compat::rewrite(&rewritten).into_owned())
}

/// datafusion-postgres' parser, given queries [`rewrite`]n.
struct RewritingParser(Arc<DfParser>);

#[async_trait]
impl QueryParser for RewritingParser {
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
        let rewritten = rewrite(sql)?;
        self.0
            .parse_sql(client, &rewritten, types)
            .await
            .map_err(|e| classified(e, Some(&rewritten)))
    }

    fn get_parameter_types(&self, statement: &DfStatement) -> PgWireResult<Vec<Type>> {
        let mut types = self.0.get_parameter_types(statement)?;
        if let (_, Some((parsed, _))) = statement {
            for name in compat::oid_array_parameters(parsed) {
                let at = name.trim_start_matches('$').parse::<usize>().ok();
                if let Some(described) = at.and_then(|n| types.get_mut(n.checked_sub(1)?)) {
                    *described = Type::OID_ARRAY;
                }
            }
        }
        Ok(types)
    }

    fn get_result_schema(
        &self,
        statement: &DfStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            (_, Some((_, plan))) if !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_)) => {
                types::describe(
                    plan.schema().as_arrow(),
                    column_format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => self.0.get_result_schema(statement, column_format),
        }
    }
}

/// The user a connection logged in as (pgwire's startup authenticated it); anyone without users.
pub(super) fn caller(users: &Option<Arc<Users>>, client: &(impl ClientInfo + ?Sized)) -> Caller {
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

//! Logging in over the PostgreSQL protocol: SCRAM-SHA-256 against the server's users.
//!
//! A user's PostgreSQL password is its secret. The salted password SCRAM keeps is derived once
//! at start-up (PBKDF2, 4096 rounds), so a login costs a few HMACs; the server never sees the
//! password itself, only the client's proof. An unknown user goes through the same exchange
//! against a password nobody knows, so it fails alike (28P01) and names cannot be probed.
//!
//! Invariant: every login failure is FATAL. pgwire treats a non-fatal startup error as handled
//! and puts the connection in ReadyForQuery, that is, logged in; [`Login`] makes sure no error
//! leaves it otherwise, and the error handler leaves startup errors alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password, random_nonce,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::{METADATA_USER, NoopHandler, PgWireConnectionState};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;
use sluice_auth::Users;

/// The users' SCRAM salted passwords.
pub struct Passwords(HashMap<String, Password>);

impl Passwords {
    pub fn new(users: &Users) -> Self {
        Self(
            users
                .iter()
                .map(|user| {
                    let salt = random_nonce().into_bytes();
                    let salted = gen_salted_password(user.secret(), &salt, SCRAM_ITERATIONS);
                    (user.name.clone(), Password::new(Some(salt), salted))
                })
                .collect(),
        )
    }
}

/// Names only: a salted password is as good as the password to log in with.
impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[async_trait]
impl AuthSource for Passwords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().ok_or(PgWireError::UserNameRequired)?;
        Ok(self.0.get(user).cloned().unwrap_or_else(|| {
            Password::new(
                Some(random_nonce().into_bytes()),
                random_nonce().into_bytes(),
            )
        }))
    }
}

/// One connection's login: pgwire's handlers keep the exchange's state, so each connection
/// gets its own. Once logged in, the connection's `statement_timeout` starts at the server's
/// query timeout.
pub struct Login {
    method: Method,
    statement_timeout: Duration,
    /// With TLS configured, a connection that did not ask for it is refused.
    require_tls: bool,
}

enum Method {
    /// No users: anyone, as anyone.
    Open(NoopHandler),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

/// Where datafusion-postgres keeps a connection's `statement_timeout`, in milliseconds.
const STATEMENT_TIMEOUT_MS: &str = "statement_timeout_ms";

impl Login {
    pub fn new(
        passwords: Option<&Arc<Passwords>>,
        statement_timeout: Duration,
        require_tls: bool,
    ) -> Self {
        let method = match passwords {
            None => Method::Open(NoopHandler),
            Some(passwords) => Method::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(ScramAuth::new(passwords.clone())),
            )),
        };
        Self {
            method,
            statement_timeout,
            require_tls,
        }
    }
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this server takes TLS connections only: connect with sslmode=require".into(),
            ))));
        }
        let done = match &self.method {
            Method::Open(handler) => handler.on_startup(client, message).await,
            Method::Scram(handler) => handler.on_startup(client, message).await,
        };
        done.map_err(|e| {
            let user = client.metadata().get(METADATA_USER).cloned();
            tracing::info!(user, addr = %client.socket_addr(), error = %e, "PostgreSQL login refused");
            fatal(e)
        })?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let timeout = self.statement_timeout.as_millis().to_string();
            client
                .metadata_mut()
                .entry(STATEMENT_TIMEOUT_MS.into())
                .or_insert(timeout);
        }
        Ok(())
    }
}

/// A connection's `statement_timeout` (the server's query timeout unless it `SET` another; none
/// if it set 0).
pub fn statement_timeout(client: &(impl ClientInfo + ?Sized)) -> Option<Duration> {
    client
        .metadata()
        .get(STATEMENT_TIMEOUT_MS)
        .and_then(|ms| ms.parse().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

fn fatal(e: PgWireError) -> PgWireError {
    let info = ErrorInfo::from(e);
    PgWireError::UserError(Box::new(if info.is_fatal() {
        info
    } else {
        ErrorInfo::new("FATAL".into(), "28000".into(), info.message)
    }))
}

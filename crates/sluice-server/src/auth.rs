//! Who is calling the HTTP API, and what they may do there.
//!
//! With users configured, every route but the dashboard's static files (which hold no data) and
//! the Kinesis door (which verifies Signature V4 itself, as it needs the body) asks for
//! `Authorization: Bearer <secret>`; the caller found is put in the request's extensions as a
//! [`Caller`]. Ingest needs a writing role; `POST /v1/sql` is open to every caller and checks
//! each statement (see [`crate::policy`]). Without users everyone is an admin: the server
//! allows that on loopback only (see [`crate::Server::start`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_auth::{Role, Users};
use sluice_error::Class;

use crate::{HttpError, ServerError};

/// The user a request or connection is made by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's name (`anonymous` on a server without users).
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

impl Caller {
    /// Anyone, on a server without users.
    pub fn anyone() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
        }
    }

    /// Refuses what writes to a read-only caller; `what` names it ("ingest", "DROP TABLE").
    pub fn may_write(&self, what: &str) -> Result<(), ServerError> {
        if self.role.may_write() {
            return Ok(());
        }
        Err(ServerError::Forbidden(format!(
            "user '{}' is read-only: it may query and watch, not {what}",
            self.name
        )))
    }
}

/// What a route asks of its caller.
enum Needs {
    /// Nothing: the dashboard's page and files, which hold no data.
    Nothing,
    /// The Kinesis door's own Signature V4.
    Signature,
    /// A writing role: ingest.
    Write,
    /// Any user.
    User,
}

fn needs(method: &Method, path: &str) -> Needs {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => Needs::Nothing,
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/assets/") => Needs::Nothing,
        (&Method::POST, "/") => Needs::Signature,
        (&Method::POST, p) if p.starts_with("/v1/streams/") && p.ends_with("/records") => {
            Needs::Write
        }
        _ => Needs::User,
    }
}

/// The middleware: finds the caller, refuses who may not call the route.
pub async fn authenticate(
    State(users): State<Option<Arc<Users>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(users) = users else {
        request.extensions_mut().insert(Caller::anyone());
        return next.run(request).await;
    };
    let needs = needs(request.method(), request.uri().path());
    if let Needs::Nothing | Needs::Signature = needs {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = match token.map(|t| users.by_token(t)) {
        None => {
            return unauthorized(
                "this server asks for a token: send Authorization: Bearer <secret>",
            );
        }
        Some(None) => return unauthorized("the token is not valid"),
        Some(Some(user)) => Caller {
            name: user.name.clone(),
            role: user.role,
        },
    };
    if let Needs::Write = needs
        && let Err(e) = caller.may_write("ingest")
    {
        return HttpError::of(&e).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        HttpError::of_class(Class::Unauthenticated, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sluice\""),
    );
    response
}

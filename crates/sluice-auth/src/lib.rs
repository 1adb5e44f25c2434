//! Who may do what: the server's users, their roles, and how each door recognises them.
//!
//! A user has a name, a role and one secret, which is its credential at every door (as
//! Materialize's app passwords are):
//!
//! ```text
//!  HTTP API, dashboard   Authorization: Bearer <secret>
//!  PostgreSQL protocol   user <name>, password <secret> (SCRAM-SHA-256)
//!  Kinesis API           access key id <name>, secret access key <secret> (Signature V4, see [`sigv4`])
//! ```
//!
//! Roles: [`Role::Admin`] may do everything; [`Role::ReadOnly`] may query and watch (SELECT,
//! SHOW, DESCRIBE, the status API and dashboard, GetRecords) but not create, drop, write or
//! ingest. Without users (`Option<Users>` is `None`) nothing is asked: the server allows that on
//! loopback only. Secrets are never printed: `Debug` shows names and roles.

pub mod sigv4;

use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Why a set of users cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "user name {0:?} is not valid: use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter"
    )]
    InvalidName(String),
    #[error("user '{0}' appears twice")]
    Duplicate(String),
    #[error(
        "the secret of user '{0}' is too short: use at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 24`)"
    )]
    WeakSecret(String),
    #[error("the secret of user '{0}' must be printable ASCII without spaces")]
    InvalidSecret(String),
    #[error("users '{0}' and '{1}' have the same secret: a secret names its user")]
    SharedSecret(String, String),
}

/// The shortest secret accepted: a bearer token must not be guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: ingest, create and drop streams, views and tables, query.
    Admin,
    /// Query and watch; nothing that writes.
    ReadOnly,
}

impl Role {
    pub fn may_write(self) -> bool {
        self == Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read_only",
        })
    }
}

/// One user. Its secret can be read by the doors that must compute with it (Signature V4,
/// SCRAM) but is not printed.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    secret: String,
}

impl User {
    pub fn new(
        name: impl Into<String>,
        role: Role,
        secret: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let (name, secret) = (name.into(), secret.into());
        let valid_name = (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid_name {
            return Err(AuthError::InvalidName(name));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::InvalidSecret(name));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret(name));
        }
        Ok(Self { name, role, secret })
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The users of a server: at least one.
#[derive(Debug, Clone)]
pub struct Users {
    users: Vec<User>,
}

impl Users {
    /// `None` when `users` is empty: no authentication.
    pub fn new(users: Vec<User>) -> Result<Option<Self>, AuthError> {
        for (i, user) in users.iter().enumerate() {
            if let Some(other) = users[..i].iter().find(|u| u.name == user.name) {
                return Err(AuthError::Duplicate(other.name.clone()));
            }
            if let Some(other) = users[..i].iter().find(|u| u.secret == user.secret) {
                return Err(AuthError::SharedSecret(
                    other.name.clone(),
                    user.name.clone(),
                ));
            }
        }
        Ok((!users.is_empty()).then_some(Self { users }))
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user whose secret `token` is. Every user's secret is compared, in constant time, so
    /// the answer's timing tells nothing of which secret came close.
    pub fn by_token(&self, token: &str) -> Option<&User> {
        self.users.iter().fold(None, |found, user| {
            let equal: bool = user.secret.as_bytes().ct_eq(token.as_bytes()).into();
            if equal { Some(user) } else { found }
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }
}

#[cfg(test)]
mod tests;

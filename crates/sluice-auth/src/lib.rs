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
    /// A user name that is not 1 to 64 of `A-Z a-z 0-9 _ - .` starting with a letter. The name
    /// is the user's PostgreSQL user and Kinesis access key id alike.
    #[error(
        "user name {0:?} is not valid: use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter"
    )]
    InvalidName(String),
    /// Two users of one name: a door could not tell which one logs in.
    #[error("user '{0}' appears twice")]
    Duplicate(String),
    /// A secret shorter than [`MIN_SECRET_LEN`].
    #[error(
        "the secret of user '{0}' is too short: use at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 24`)"
    )]
    WeakSecret(String),
    /// A secret with spaces, or characters outside printable ASCII.
    #[error("the secret of user '{0}' must be printable ASCII without spaces")]
    InvalidSecret(String),
    /// Two users with one secret: a bearer token names its user by its secret alone.
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
    /// Whether the role may change anything: ingest, create, drop, write.
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
    /// The user's name: its PostgreSQL user and its Kinesis access key id.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    secret: String,
}

impl User {
    /// A user, if its name and secret are valid.
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

    /// The user's secret, for the doors that compute with it (Signature V4, SCRAM). Never
    /// print it.
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

    /// The user named `name`: the PostgreSQL user, the Kinesis access key id.
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

    /// Every user, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }
}

#[cfg(test)]
mod tests;

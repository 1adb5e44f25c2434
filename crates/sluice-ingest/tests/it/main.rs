//! The doors against real components: a PostgreSQL server read through a replication slot.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "postgres")]
mod postgres;

//! The server through its real sockets.

// Helpers unwrap as tests do: a test fails on a bad unwrap, with the value in its message.
#![allow(clippy::unwrap_used)]

mod errors;
mod shutdown;
mod slt;

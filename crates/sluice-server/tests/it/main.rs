//! The server through its real sockets.

mod errors;
mod slt;

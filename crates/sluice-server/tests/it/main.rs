//! The server through its real sockets.

mod slt;

//! The sans-IO core of wire protocol v1 (`docs/PROTOCOL.md`): both sides of a connection's
//! one stream as plain state machines.
//!
//! # Contract
//! * No tokio, no quinn, no socket, no clock read: every entry point takes the time
//!   (`now_ms` wall time, `mono_ms` monotonic time for deadlines) and the bytes received;
//!   the sessions return the bytes to write and what to do next. Deadlines are returned
//!   ([`server::ServerSession::poll_timeout`]), never slept.
//! * [`server::ServerSession`] holds every server-side frame rule (HELLO and its deadline,
//!   framing limits, oversize discard, the in-flight bound, heartbeats, confirm checks and
//!   the flood limit, close semantics, shutdown); [`client::ClientSession`] the device side
//!   (HELLO, WELCOME limits, waiters by seq and request id, error classification) with the
//!   client's pure decisions (retry delays, ack verdicts, confirm-request dedup).
//! * `confirm::Registry` (feature `server`) is the lock-free registry of outstanding
//!   confirm requests shared by all connections; sessions see it through the narrow
//!   [`server::Confirms`] trait.
//! * The quinn drivers (`crate::endpoint`, `crate::client`) only pump bytes, timers and
//!   ports; `tests.rs` steps both sessions against each other in memory.

pub mod client;
#[cfg(feature = "server")]
pub mod confirm;
mod recv;
pub mod server;

#[cfg(all(test, feature = "server"))]
mod tests;

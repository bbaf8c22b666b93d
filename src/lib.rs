//! The `hexflow` binary's library half: configuration, TLS and key material, and the wiring
//! that connects `ingest` (QUIC, auth) to `storage` (WAL, H3, Parquet) and to `silence`
//! (the per-device table, the scanner and its event sinks).
//!
//! Libraries below this crate never read flags, the environment or config files; this crate
//! does, once, and passes typed values down. End-to-end tests start a [`server::Server`]
//! in-process through this library.

pub mod admin;
pub mod config;
pub mod identity;
pub mod lake_cli;
pub mod secret;
pub mod server;
pub mod tls;

pub use sys::{Clock, SystemClock};

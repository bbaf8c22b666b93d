//! The bounds of every ingest setting, stated and checked once.
//!
//! Contract: [`wire::Limits::validate`](crate::wire::Limits::validate),
//! `proto::server::SessionConfig::validate` and `endpoint::EndpointConfig::validate` are
//! pure and return the first value out of bounds as an [`OutOfRange`] (the workspace's one
//! bound error, `sys::bounds`) that names its key as it is written in `config/hexflow.toml`
//! (`limits.…`, `session.…`, `endpoint.…`: the binary mounts each struct as the section of
//! that name). A configuration that passes them cannot make the endpoint or a session
//! misbehave.

pub use sys::bounds::{OutOfRange, check};

/// Longest deadline any timeout key accepts: one day, ms.
pub const TIMEOUT_MS_LIMIT: u64 = 86_400_000;

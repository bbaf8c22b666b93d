//! hexflow's device side of the wire.
//!
//! * [`wire`]: the pure codec (frames, batches, status codes). No IO, no clock, no tokio;
//!   shared by the server, the client library and the load generator.
//! * [`auth`]: pure device-token minting and constant-time verification.
//! * `client` (feature `client`): the device library: connect, authenticate, send batches,
//!   await acks, retry.
//! * `endpoint` (feature `server`): the quinn glue: accept, authenticate, read frames,
//!   hand batches to a [`endpoint::BatchSink`], write acks.
//!
//! Silence tracking is its own crate (`silence/`): `ingest` depends neither on it nor on any
//! time-zone code, so a device app built with only `client` compiles no silence code.
//!
//! `ingest` never depends on storage internals: the endpoint hands decoded batches to a
//! narrow trait that the binary implements.

pub mod auth;
pub mod wire;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod endpoint;

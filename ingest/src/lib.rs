//! hexflow's device side of the wire.
//!
//! * [`wire`]: the pure codec (frames, batches, status codes). No IO, no clock, no tokio;
//!   shared by the server, the client library and the load generator.
//! * [`auth`]: pure device-token minting and constant-time verification.
//! * [`bounds`]: the range of every setting, checked once ([`bounds::OutOfRange`]).
//! * [`proto`]: the sans-IO protocol core: both sides of a connection as state machines
//!   (every frame rule of protocol v1), the confirm-request registry. No tokio, no quinn.
//! * `client` (feature `client`): the device library, a quinn driver of
//!   [`proto::client::ClientSession`]: connect, authenticate, send batches, await acks,
//!   retry.
//! * `endpoint` (feature `server`): the QUIC endpoint, a quinn driver of
//!   [`proto::server::ServerSession`]: accept, pump each connection's stream, hand batches
//!   to a [`endpoint::BatchSink`], write what the session says.
//!
//! Silence tracking is its own crate (`silence/`): `ingest` depends neither on it nor on any
//! time-zone code, so a device app built with only `client` compiles no silence code.
//!
//! `ingest` never depends on storage internals: the endpoint hands decoded batches to a
//! narrow trait that the binary implements.

pub mod auth;
pub mod bounds;
pub mod proto;
pub mod wire;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod endpoint;

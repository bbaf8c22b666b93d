//! The endpoint's ports: where accepted batches go ([`BatchSink`]) and who hears about
//! device activity ([`Activity`]). The binary implements both (storage, silence table).

use fix::DeviceId;

pub use crate::proto::server::SinkOutcome;
use crate::wire::{self, ConfirmKind};

/// Called exactly once with the outcome of a submitted batch; may be called from any thread.
pub type SinkCallback = Box<dyn FnOnce(SinkOutcome) + Send + 'static>;

/// A decoded, validated batch handed to the sink.
#[derive(Debug)]
pub struct AcceptedBatch {
    /// The authenticated device.
    pub device_id: DeviceId,
    /// The device's batch sequence number.
    pub batch_seq: u64,
    /// Server time when the batch frame was read (Unix ms).
    pub received_at_ms: i64,
    /// The fixes (validated: coordinates in range, times plausible, columns consistent).
    pub fixes: wire::Fixes,
}

/// Where accepted batches go (the binary connects this to storage).
pub trait BatchSink: Send + Sync + 'static {
    /// Queues a batch without blocking. `done` must eventually be called exactly once, after
    /// the batch is durable (status `OK`), found to be a duplicate of a durable batch
    /// (`DUPLICATE`), or refused. When the sink cannot take the batch right now it may call
    /// `done` immediately with `OVERLOADED`. A `done` dropped without being called answers
    /// the batch `INTERNAL` (so a sink bug costs an ack, never a connection's slot).
    fn submit(&self, batch: AcceptedBatch, done: SinkCallback);
}

/// Observes device activity (the binary feeds the silence table with it).
pub trait Activity: Send + Sync + 'static {
    /// Any frame arrived from the device (including heartbeats), at `now_ms`.
    fn on_contact(&self, device_id: DeviceId, now_ms: i64);
    /// A batch was durably stored; `newest_fix_ms` is its newest fix time.
    fn on_fixes_stored(&self, device_id: DeviceId, newest_fix_ms: i64, now_ms: i64);
    /// The device answered its outstanding confirm-location request with a verified
    /// `CONFIRM`. `at_ms` is, for [`ConfirmKind::Here`], the server time the CONFIRM was read;
    /// for [`ConfirmKind::Fix`], the newest fix time of the referenced batch, capped at the
    /// server time. Called once per answered request. The default ignores it.
    fn on_confirm(&self, device_id: DeviceId, kind: ConfirmKind, at_ms: i64) {
        let _ = (device_id, kind, at_ms);
    }
}

/// Activity sink that ignores everything.
#[derive(Debug, Default)]
pub struct NoActivity;

impl Activity for NoActivity {
    fn on_contact(&self, _: DeviceId, _: i64) {}
    fn on_fixes_stored(&self, _: DeviceId, _: i64, _: i64) {}
}

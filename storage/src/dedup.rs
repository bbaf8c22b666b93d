//! Per-device anti-replay window over `batch_seq` (as in IPsec).
//!
//! Contract: pure, no IO, no clock. For each device the table keeps the highest
//! accepted sequence number `hwm` and a bitmap of the accepted numbers in
//! `(hwm - window, hwm]` (bit `i` = `hwm - i` seen). Applying the same set of
//! accepted numbers in any order, any number of times, yields the same state
//! ([`DedupTable::observe`] is an idempotent union), which is what lets
//! recovery rebuild the state from a checkpoint snapshot plus a WAL replay that
//! may overlap it.
//!
//! ```text
//!            window (window_batches numbers)
//!        |<------------------------------>|
//!  stale | ... bit 2   bit 1   bit 0 = hwm | new (seq > hwm)
//! ```

use std::collections::HashMap;

use fix::DeviceId;

/// Largest supported window: the bitmap is one `u64`.
pub const WINDOW_BATCHES_LIMIT: u32 = 64;

/// What to do with a batch, given its device's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New sequence number: log it.
    Accept,
    /// Already accepted (inside the window): answer Duplicate, do not log.
    Duplicate,
    /// Below the window: cannot tell, refuse.
    Stale {
        /// Lowest sequence number still inside the window.
        window_low: u64,
    },
    /// The device is new and the table is at `devices_max`.
    TableFull,
}

/// One device's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Highest accepted sequence number.
    pub hwm: u64,
    /// Bit `i` set = `hwm - i` accepted.
    pub bitmap: u64,
}

/// The per-device windows.
#[derive(Debug, Clone)]
pub struct DedupTable {
    windows: HashMap<DeviceId, Window>,
    window_batches: u32,
    devices_max: usize,
}

impl DedupTable {
    /// An empty table. `window_batches` is clamped to `1..=64`.
    pub fn new(window_batches: u32, devices_max: usize) -> Self {
        DedupTable {
            windows: HashMap::new(),
            window_batches: window_batches.clamp(1, WINDOW_BATCHES_LIMIT),
            devices_max,
        }
    }

    fn mask(&self) -> u64 {
        if self.window_batches >= 64 {
            u64::MAX
        } else {
            (1u64 << self.window_batches) - 1
        }
    }

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The window of a device, if it has one.
    pub fn window(&self, device_id: DeviceId) -> Option<Window> {
        self.windows.get(&device_id).copied()
    }

    /// Classifies `seq` for `device_id` without changing anything.
    pub fn check(&self, device_id: DeviceId, seq: u64) -> Decision {
        let Some(w) = self.windows.get(&device_id) else {
            return if self.windows.len() >= self.devices_max {
                Decision::TableFull
            } else {
                Decision::Accept
            };
        };
        if seq > w.hwm {
            return Decision::Accept;
        }
        let age = w.hwm - seq;
        if age >= u64::from(self.window_batches) {
            return Decision::Stale {
                window_low: w.hwm - u64::from(self.window_batches) + 1,
            };
        }
        if w.bitmap & (1u64 << age) != 0 {
            Decision::Duplicate
        } else {
            Decision::Accept
        }
    }

    /// Records `seq` as accepted (idempotent; ignores numbers below the
    /// window; never refuses, so replay always succeeds). Returns the window
    /// the device had before, for [`DedupTable::restore`].
    pub fn observe(&mut self, device_id: DeviceId, seq: u64) -> Option<Window> {
        let mask = self.mask();
        let window_batches = u64::from(self.window_batches);
        let previous = self.windows.get(&device_id).copied();
        let next = match previous {
            None => Window {
                hwm: seq,
                bitmap: 1,
            },
            Some(w) if seq > w.hwm => {
                let shift = seq - w.hwm;
                let kept = if shift >= 64 { 0 } else { w.bitmap << shift };
                Window {
                    hwm: seq,
                    bitmap: (kept | 1) & mask,
                }
            }
            Some(w) => {
                let age = w.hwm - seq;
                if age >= window_batches {
                    w
                } else {
                    Window {
                        hwm: w.hwm,
                        bitmap: w.bitmap | (1u64 << age),
                    }
                }
            }
        };
        self.windows.insert(device_id, next);
        previous
    }

    /// Puts back the window a device had before an [`observe`](Self::observe)
    /// (used to undo a group that failed to reach the disk).
    pub fn restore(&mut self, device_id: DeviceId, previous: Option<Window>) {
        match previous {
            Some(w) => {
                self.windows.insert(device_id, w);
            }
            None => {
                self.windows.remove(&device_id);
            }
        }
    }

    /// All windows sorted by device id (for the checkpoint).
    pub fn snapshot(&self) -> Vec<(DeviceId, Window)> {
        let mut all: Vec<(DeviceId, Window)> = self.windows.iter().map(|(&d, &w)| (d, w)).collect();
        all.sort_unstable_by_key(|&(d, _)| d);
        all
    }

    /// Loads windows from a snapshot (masking bitmaps to this table's window).
    pub fn load(&mut self, entries: &[(DeviceId, Window)]) {
        let mask = self.mask();
        for &(device_id, w) in entries {
            self.windows.insert(
                device_id,
                Window {
                    hwm: w.hwm,
                    bitmap: w.bitmap & mask,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64) -> DeviceId {
        DeviceId::try_from(id).expect("valid device id")
    }

    #[test]
    fn window_edges() {
        let mut t = DedupTable::new(64, 10);
        assert_eq!(t.check(d(1), 100), Decision::Accept);
        t.observe(d(1), 100);
        assert_eq!(t.check(d(1), 100), Decision::Duplicate);
        assert_eq!(t.check(d(1), 101), Decision::Accept);
        // Oldest number still in the window: hwm - 63.
        assert_eq!(t.check(d(1), 37), Decision::Accept);
        t.observe(d(1), 37);
        assert_eq!(t.check(d(1), 37), Decision::Duplicate);
        // Just below the window.
        assert_eq!(t.check(d(1), 36), Decision::Stale { window_low: 37 });
        // hwm 163: 100 is the oldest number in the window, 37 fell out of it.
        t.observe(d(1), 163);
        assert_eq!(t.check(d(1), 100), Decision::Duplicate);
        assert_eq!(t.check(d(1), 99), Decision::Stale { window_low: 100 });
        // A jump of >= 64 clears the bitmap without overflow.
        t.observe(d(1), 1_000);
        assert_eq!(
            t.window(d(1)),
            Some(Window {
                hwm: 1_000,
                bitmap: 1
            })
        );
        t.observe(d(1), u64::MAX);
        assert_eq!(t.check(d(1), u64::MAX), Decision::Duplicate);
        assert_eq!(t.check(d(1), u64::MAX - 63), Decision::Accept);
    }

    #[test]
    fn small_window_and_device_limit() {
        let mut t = DedupTable::new(2, 1);
        t.observe(d(5), 10);
        assert_eq!(t.check(d(5), 9), Decision::Accept);
        assert_eq!(t.check(d(5), 8), Decision::Stale { window_low: 9 });
        t.observe(d(5), 12);
        assert_eq!(
            t.window(d(5)),
            Some(Window {
                hwm: 12,
                bitmap: 0b01
            })
        );
        assert_eq!(t.check(d(6), 1), Decision::TableFull);
        assert_eq!(t.check(d(5), 13), Decision::Accept);
    }

    #[test]
    fn observe_is_an_order_independent_idempotent_union() {
        let seqs = [5u64, 9, 70, 3, 69, 71, 9, 40];
        let mut a = DedupTable::new(64, 10);
        for &s in &seqs {
            a.observe(d(1), s);
        }
        let mut b = DedupTable::new(64, 10);
        for &s in seqs.iter().rev() {
            b.observe(d(1), s);
            b.observe(d(1), s);
        }
        assert_eq!(a.snapshot(), b.snapshot());
    }

    #[test]
    fn restore_undoes_observe() {
        let mut t = DedupTable::new(64, 10);
        t.observe(d(1), 10);
        let before = t.snapshot();
        let prev1 = t.observe(d(1), 11);
        let prev2 = t.observe(d(2), 1);
        t.restore(d(2), prev2);
        t.restore(d(1), prev1);
        assert_eq!(t.snapshot(), before);
        let mut loaded = DedupTable::new(64, 10);
        loaded.load(&before);
        assert_eq!(loaded.snapshot(), before);
    }
}

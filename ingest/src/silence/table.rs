//! The lock-free per-device table and the scanner.
//!
//! # Contract
//!
//! * **Fixed capacity, allocated once.** `capacity = ceil(devices_max * 4 / 3)` slots of 24
//!   bytes in one boxed slice: 32 bytes per device at `devices_max`. Measured with
//!   [`SilenceTable::memory_bytes`]: 32,000,056 bytes for 1,000,000 devices and 320,000,056
//!   for 10,000,000 (32.00 B/device; the 56 are one slot of rounding plus the 40-byte header).
//!   An empty slot is all zero bits (release builds turn the fill into a zeroed allocation,
//!   3 µs for 10M devices, and the OS commits pages as devices arrive). At most `devices_max` devices are ever tracked; a new device
//!   beyond that gets [`RecordError::TableFull`] while known devices keep updating.
//! * **Record path: lock-free, allocation-free, bounded.** Open addressing with linear probing;
//!   the home slot is a multiply-shift hash of the device id mapped onto the capacity with
//!   fastrange (no power-of-two rounding, so memory stays near 32 B/device). A slot is claimed
//!   by a CAS of its device word from 0; slots are never freed, so a probe that reaches an
//!   empty slot has proven the device absent. Times only move forward (`fetch_max`), so
//!   concurrent recorders and out-of-order batches cannot move a device back in time. A probe
//!   visits at most `capacity` slots.
//! * **Scanner: one at a time, never blocks recorders.** [`SilenceTable::scan`] is the only
//!   writer of a slot's `state` word; an `AtomicBool` guard makes a second concurrent scan fail
//!   with [`ScanError::AlreadyRunning`] instead of emitting duplicates. The sweep is one
//!   sequential pass; a device that is reporting and was reporting costs two loads
//!   (`last_fix_s`, `state`) when the policy provides a [`SilencePolicy::reporting_from_s`]
//!   bound. Measured (release, this 2-core dev box, ~all devices reporting): 1.4 ms for 1M
//!   devices, 40 ms for 10M (4 ns/device: memory bandwidth over 320 MB); `record_fix` of a
//!   newer fix on a known device 24 ns (1M table) to 58 ns (10M, cache misses). See
//!   `benches/silence.rs`.
//! * **Never** reads the clock, does IO, locks, or frees a slot.
//!
//! # Slot layout (24 bytes, 8-aligned)
//!
//! ```text
//! offset  0  device: AtomicU64          0 = empty; else the device id (1..=i64::MAX), set once by CAS
//! offset  8  last_fix_s: AtomicU32      newest fix time (device clock), 0 = no fix yet; fetch_max
//! offset 12  last_contact_s: AtomicU32  newest contact time (server clock), 0 = none; fetch_max
//! offset 16  since_s: AtomicU32         when the current silence is counted from (see below)
//! offset 20  state: AtomicU32           bits 0..2: level as of the last scan; others reserved
//! ```
//!
//! `since_s` is the first contact time while the device has never sent a fix (set once, by
//! CAS from 0, by the first recorded contact: the policy judges such a device from its first
//! contact). Whenever the scanner judges a device silent it stores the time it judged from
//! (newest fix, else first contact) there, so a later [`EventKind::Resumed`] can report when
//! the silence began. Recorders never write it once it is non-zero.
//!
//! # Memory ordering
//!
//! A recorder claims the device word, then publishes times with `Release`; the scanner loads
//! `last_fix_s` with `Acquire` before it reads the device word, so a non-zero time always comes
//! with its device id. The scanner's own words (`state`, `since_s` once the device is silent)
//! have a single writer, and the scan guard's `Acquire`/`Release` hands them from one scan to
//! the next.

use thiserror::Error;

use super::event::{EventKind, SilenceEvent};
use super::policy::{Judgement, Level, SilencePolicy, next_level};
use super::sync::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One tracked device. See the module doc for the layout and who writes what.
#[derive(Debug)]
struct Slot {
    device: AtomicU64,
    last_fix_s: AtomicU32,
    last_contact_s: AtomicU32,
    since_s: AtomicU32,
    state: AtomicU32,
}

// The memory target (32 B/device at 3/4 load) depends on this; loom's atomics are larger.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Slot>() == 24);

impl Slot {
    fn empty() -> Self {
        Self {
            device: AtomicU64::new(0),
            last_fix_s: AtomicU32::new(0),
            last_contact_s: AtomicU32::new(0),
            since_s: AtomicU32::new(0),
            state: AtomicU32::new(Level::Reporting.to_bits()),
        }
    }
}

/// Raises `cell` to `value` if it is lower. The plain load first keeps the common case (the
/// same second again, an older batch) free of a contended read-modify-write.
fn raise(cell: &AtomicU32, value: u32) {
    if cell.load(Ordering::Relaxed) < value {
        cell.fetch_max(value, Ordering::Release);
    }
}

/// Per-device last-fix and last-contact times for up to `devices_max` devices, lock-free.
///
/// Shared by reference (wrap it in an `Arc`): recorders call [`SilenceTable::record_fix`] and
/// [`SilenceTable::record_contact`] from any thread, one scanner thread calls
/// [`SilenceTable::scan`], anyone may call [`SilenceTable::get`].
///
/// # Memory
///
/// `memory_bytes() = size_of::<SilenceTable>() + 24 * ceil(devices_max * 4 / 3)`, reserved in
/// [`SilenceTable::with_capacity`] (32 B per device; 32 MB for a million devices). Nothing is
/// allocated afterwards.
#[derive(Debug)]
pub struct SilenceTable {
    slots: Box<[Slot]>,
    devices_max: usize,
    /// Devices claimed plus claims in flight; never exceeds `devices_max`.
    reserved: AtomicUsize,
    /// Set while a scan runs.
    scanning: AtomicBool,
    /// Pending confirmations: device -> (confirmed at, already reported in an event). Rare
    /// (only warned devices are asked), off the fix path, bounded by `devices_max`.
    confirmations: std::sync::Mutex<std::collections::HashMap<u64, (u32, bool)>>,
}

/// [`SilenceTable::with_capacity`] refused its size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TableConfigError {
    /// `devices_max` is outside `1..=SilenceTable::DEVICES_MAX_LIMIT`.
    #[error("silence devices_max {devices_max} is outside 1..={limit}")]
    DevicesMax {
        /// The requested size.
        devices_max: usize,
        /// The largest accepted size.
        limit: usize,
    },
}

/// [`SilenceTable::record_fix`] or [`SilenceTable::record_contact`] refused an update.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The device id is not in `1..=i64::MAX`.
    #[error("device id {device_id} is outside 1..=i64::MAX")]
    InvalidDeviceId {
        /// The refused id.
        device_id: u64,
    },
    /// Time `0` is reserved for "never".
    #[error("device {device_id}: time 0 is reserved for \"never\"")]
    ZeroTime {
        /// The device.
        device_id: u64,
    },
    /// The device is new and `devices_max` devices are already tracked.
    #[error("silence table full: {devices_max} devices tracked")]
    TableFull {
        /// The configured limit.
        devices_max: usize,
    },
}

/// [`SilenceTable::scan`] did not run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Another scan of this table is in progress; scans never run concurrently.
    #[error("a silence scan is already running")]
    AlreadyRunning,
}

/// What one [`SilenceTable::scan`] saw. Device counts are per level after the scan's changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Slots visited (the table's capacity).
    pub slots_scanned: usize,
    /// Devices with at least a fix or a contact recorded.
    pub devices: usize,
    /// Devices at [`Level::Reporting`].
    pub reporting: usize,
    /// Devices at [`Level::Warned`].
    pub warned: usize,
    /// Devices at [`Level::Expired`].
    pub expired: usize,
    /// Events appended to `out`.
    pub events: usize,
    /// Devices skipped because they are exempt (also counted at their unchanged level).
    pub exempt: usize,
}

/// A snapshot of one device, from [`SilenceTable::get`]. Each field is read atomically, the
/// snapshot as a whole is not (a concurrent update may show in one field and not another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    /// The device.
    pub device_id: u64,
    /// Newest fix time (Unix seconds, device clock); `None` before the first fix.
    pub last_fix_s: Option<u32>,
    /// Newest contact time (Unix seconds, server clock); `None` before the first contact.
    pub last_contact_s: Option<u32>,
    /// The level the last scan gave it ([`Level::Reporting`] before any scan).
    pub level: Level,
    /// When its silence is counted from: set while `level` is not `Reporting`, or while it has
    /// never sent a fix (then it is the first contact); `None` otherwise.
    pub silent_since_s: Option<u32>,
}

impl SilenceTable {
    /// The largest `devices_max` accepted (about 137 GB of slots); larger sizes are surely a
    /// configuration mistake.
    pub const DEVICES_MAX_LIMIT: usize = u32::MAX as usize;

    /// Bytes per slot (the table holds `ceil(devices_max * 4 / 3)` of them).
    pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    /// A table for up to `devices_max` devices; all its memory is allocated (and zeroed) here.
    ///
    /// # Errors
    /// [`TableConfigError::DevicesMax`] unless `1 <= devices_max <= DEVICES_MAX_LIMIT`.
    pub fn with_capacity(devices_max: usize) -> Result<Self, TableConfigError> {
        if devices_max == 0 || devices_max > Self::DEVICES_MAX_LIMIT {
            return Err(TableConfigError::DevicesMax {
                devices_max,
                limit: Self::DEVICES_MAX_LIMIT,
            });
        }
        // ceil(n * 4 / 3) > n for every n >= 1, so a probe always finds a free slot while
        // fewer than devices_max devices are claimed.
        let capacity = (devices_max * 4).div_ceil(3);
        let slots = (0..capacity)
            .map(|_| Slot::empty())
            .collect::<Box<[Slot]>>();
        Ok(Self {
            slots,
            devices_max,
            reserved: AtomicUsize::new(0),
            scanning: AtomicBool::new(false),
            confirmations: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The configured device limit.
    pub fn devices_max(&self) -> usize {
        self.devices_max
    }

    /// Number of slots: `ceil(devices_max * 4 / 3)`.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Devices tracked. While another thread is claiming a new device this may already count
    /// it (at most one per concurrent recorder); with no recorder running it is exact.
    pub fn len(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table: its slots plus the struct itself. Constant after construction.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val::<[Slot]>(&self.slots)
    }

    /// Records a fix of `device_id` taken at `fix_s` (Unix seconds, the fix's own timestamp).
    /// Keeps the newest: an older fix changes nothing. Lock-free; never allocates.
    ///
    /// # Errors
    /// [`RecordError::InvalidDeviceId`], [`RecordError::ZeroTime`], or
    /// [`RecordError::TableFull`] when the device is new and the table is full.
    pub fn record_fix(&self, device_id: u64, fix_s: u32) -> Result<(), RecordError> {
        let slot = self.slot_for_update(device_id, fix_s)?;
        raise(&slot.last_fix_s, fix_s);
        Ok(())
    }

    /// Records that a frame (batch, heartbeat, anything) arrived from `device_id` at `now_s`
    /// (Unix seconds, server clock). Keeps the newest; the first recorded contact of a device
    /// that has no fix yet is kept as the time its silence is counted from. Lock-free; never
    /// allocates.
    ///
    /// # Errors
    /// As [`SilenceTable::record_fix`].
    pub fn record_contact(&self, device_id: u64, now_s: u32) -> Result<(), RecordError> {
        let slot = self.slot_for_update(device_id, now_s)?;
        if slot.since_s.load(Ordering::Relaxed) == 0 {
            // Loses only to an earlier first contact or to the scanner, both of which are
            // what we want to keep.
            let _ = slot
                .since_s
                .compare_exchange(0, now_s, Ordering::Release, Ordering::Relaxed);
        }
        raise(&slot.last_contact_s, now_s);
        Ok(())
    }

    /// Records that `device_id` confirmed its location at `at_s` (Unix seconds, server clock),
    /// answering a confirm-location request. The next scan reports it once as an
    /// [`EventKind::Confirmed`] event and, from then on, the device's policy decides what it
    /// resets (`confirm_resets`). Only the newest confirmation is kept; it is dropped once a
    /// fix at least as new arrives. Takes a short lock (confirmations are rare and never on
    /// the fix path); does not allocate once the map has grown.
    ///
    /// # Errors
    /// As [`SilenceTable::record_fix`]; the device becomes tracked if it was not.
    pub fn record_confirmation(&self, device_id: u64, at_s: u32) -> Result<(), RecordError> {
        self.slot_for_update(device_id, at_s)?;
        let mut map = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: one entry per tracked device at most, and devices are bounded.
        let entry = map.entry(device_id).or_insert((0, true));
        if at_s > entry.0 {
            *entry = (at_s, false);
        }
        Ok(())
    }

    /// The newest confirmation of `device_id` still pending (not superseded by a fix).
    pub fn confirmation(&self, device_id: u64) -> Option<u32> {
        self.confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&device_id)
            .map(|c| c.0)
    }

    /// A snapshot of `device_id`, or `None` if it is not tracked (or not a valid id).
    pub fn get(&self, device_id: u64) -> Option<DeviceState> {
        if !valid_device_id(device_id) {
            return None;
        }
        let slot = self.find(device_id)?;
        let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
        let last_contact_s = slot.last_contact_s.load(Ordering::Acquire);
        let since_s = slot.since_s.load(Ordering::Acquire);
        let level = Level::from_bits(slot.state.load(Ordering::Relaxed));
        let silent_since_s = if level != Level::Reporting || last_fix_s == 0 {
            non_zero(since_s)
        } else {
            None
        };
        Some(DeviceState {
            device_id,
            last_fix_s: non_zero(last_fix_s),
            last_contact_s: non_zero(last_contact_s),
            level,
            silent_since_s,
        })
    }

    /// Sweeps every slot once: judges each device with `policy` at `now_s` and appends one
    /// [`SilenceEvent`] to `out` for each device whose level changed since the previous scan
    /// (see [`next_level`] for which changes exist). `out` is not cleared; a scan appends at
    /// most one event per tracked device, so at most `devices_max`.
    ///
    /// A device with contacts but no fix yet is judged from its first contact. A device whose
    /// slot is claimed but whose first time is not yet published is skipped until the next scan.
    ///
    /// Never blocks recorders: it only loads their words and writes its own. An update that
    /// races with the sweep is seen by this scan or the next one, never lost.
    ///
    /// # Errors
    /// [`ScanError::AlreadyRunning`] if another scan of this table is in progress.
    pub fn scan<P: SilencePolicy + ?Sized>(
        &self,
        now_s: u32,
        policy: &P,
        out: &mut Vec<SilenceEvent>,
    ) -> Result<ScanStats, ScanError> {
        let _guard = ScanGuard::acquire(&self.scanning)?;
        let reporting_from_s = policy.reporting_from_s(now_s);
        // Copy the (rare) pending confirmations so recorders never wait for the sweep.
        let mut confirmations = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut stats = ScanStats {
            slots_scanned: self.slots.len(),
            ..ScanStats::default()
        };
        let reporting_bits = Level::Reporting.to_bits();
        let mut reported = Vec::new();
        let mut superseded = Vec::new();
        for slot in self.slots.iter() {
            let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
            let state = slot.state.load(Ordering::Relaxed);
            // Fast path: recently reporting and was reporting. Two loads, no policy call.
            // (Confirmations only make a device less silent, so they cannot change this.)
            if last_fix_s != 0
                && u64::from(last_fix_s) >= reporting_from_s
                && state == reporting_bits
            {
                stats.devices += 1;
                stats.reporting += 1;
                continue;
            }
            let device_id = slot.device.load(Ordering::Acquire);
            if device_id == 0 {
                continue;
            }
            let since_s = slot.since_s.load(Ordering::Acquire);
            // Judge from the newest fix, else from the first contact.
            let judged_from_s = if last_fix_s != 0 { last_fix_s } else { since_s };
            if judged_from_s == 0 {
                continue;
            }
            stats.devices += 1;
            let previous = Level::from_bits(state);
            let (confirmed_s, confirm_new) = match confirmations.remove(&device_id) {
                Some((at, _)) if at <= last_fix_s => {
                    superseded.push(device_id);
                    (0, false)
                }
                Some((at, done)) => (at, !done),
                None => (0, false),
            };
            let judged = match policy.judge(device_id, judged_from_s, confirmed_s, now_s) {
                Judgement::Exempt => {
                    stats.exempt += 1;
                    match previous {
                        Level::Reporting => stats.reporting += 1,
                        Level::Warned => stats.warned += 1,
                        Level::Expired => stats.expired += 1,
                    }
                    continue;
                }
                Judgement::Level(l) => l,
            };
            let next = next_level(previous, judged);
            match next {
                Level::Reporting => stats.reporting += 1,
                Level::Warned => stats.warned += 1,
                Level::Expired => stats.expired += 1,
            }
            if next != Level::Reporting && since_s != judged_from_s {
                // Keep "silent since" current while silent (a late batch may bring a newer,
                // still old, fix).
                slot.since_s.store(judged_from_s, Ordering::Relaxed);
            }
            let last_contact_s = slot.last_contact_s.load(Ordering::Acquire);
            if confirm_new {
                reported.push(device_id);
                let (policy_index, threshold_s) =
                    policy.event_info(device_id, previous, judged_from_s);
                out.push(SilenceEvent {
                    device_id,
                    kind: EventKind::Confirmed {
                        confirmed_at_s: confirmed_s,
                    },
                    policy: policy_index,
                    from: previous,
                    to: next,
                    last_fix_s,
                    last_contact_s,
                    at_s: now_s,
                    threshold_s,
                });
                stats.events += 1;
            }
            if next == previous {
                continue;
            }
            slot.state.store(
                (state & !super::policy::LEVEL_MASK) | next.to_bits(),
                Ordering::Relaxed,
            );
            if confirm_new {
                // The confirmed event above already tells this change.
                continue;
            }
            let (kind, threshold_level, counted_from_s) = match next {
                Level::Reporting => (
                    EventKind::Resumed {
                        silent_since_s: since_s,
                    },
                    previous,
                    since_s,
                ),
                Level::Warned => (EventKind::Warned, next, judged_from_s),
                Level::Expired => (EventKind::Expired, next, judged_from_s),
            };
            let (policy_index, threshold_s) =
                policy.event_info(device_id, threshold_level, counted_from_s);
            out.push(SilenceEvent {
                device_id,
                kind,
                policy: policy_index,
                from: previous,
                to: next,
                last_fix_s,
                last_contact_s,
                at_s: now_s,
                threshold_s,
            });
            stats.events += 1;
        }
        // Confirmations of devices the fast path passed: reporting devices; report them once.
        for (device_id, (at, done)) in confirmations {
            let Some(slot) = self.find(device_id) else {
                continue;
            };
            let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
            if at <= last_fix_s {
                superseded.push(device_id);
                continue;
            }
            if done {
                continue;
            }
            reported.push(device_id);
            let level = Level::from_bits(slot.state.load(Ordering::Relaxed));
            let (policy_index, threshold_s) = policy.event_info(device_id, level, last_fix_s);
            out.push(SilenceEvent {
                device_id,
                kind: EventKind::Confirmed { confirmed_at_s: at },
                policy: policy_index,
                from: level,
                to: level,
                last_fix_s,
                last_contact_s: slot.last_contact_s.load(Ordering::Acquire),
                at_s: now_s,
                threshold_s,
            });
            stats.events += 1;
        }
        if !reported.is_empty() || !superseded.is_empty() {
            let mut map = self
                .confirmations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for d in reported {
                if let Some(c) = map.get_mut(&d) {
                    c.1 = true;
                }
            }
            for d in superseded {
                // Only if no newer confirmation arrived meanwhile.
                if let Some(&(at, _)) = map.get(&d)
                    && self
                        .find(d)
                        .is_some_and(|s| s.last_fix_s.load(Ordering::Acquire) >= at)
                {
                    map.remove(&d);
                }
            }
        }
        Ok(stats)
    }

    /// Calls `f` with every tracked device's raw words (for snapshots), and returns the pending
    /// confirmations. Safe while recorders run (each word is read atomically).
    pub(crate) fn export(&self, mut f: impl FnMut(SlotRecord)) -> Vec<(u64, u32, bool)> {
        for slot in self.slots.iter() {
            let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
            let last_contact_s = slot.last_contact_s.load(Ordering::Acquire);
            let device_id = slot.device.load(Ordering::Acquire);
            if device_id == 0 || (last_fix_s == 0 && last_contact_s == 0) {
                continue;
            }
            f(SlotRecord {
                device_id,
                last_fix_s,
                last_contact_s,
                since_s: slot.since_s.load(Ordering::Acquire),
                state: slot.state.load(Ordering::Relaxed),
            });
        }
        let mut c: Vec<(u64, u32, bool)> = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(d, (at, done))| (*d, *at, *done))
            .collect();
        c.sort_unstable();
        c
    }

    /// Restores one device from a snapshot record. Meant for start-up, before recorders run;
    /// times still only move forward, so a racing recorder is not undone.
    pub(crate) fn import(&self, rec: SlotRecord) -> Result<(), RecordError> {
        let slot = self.find_or_claim_valid(rec.device_id)?;
        raise(&slot.last_fix_s, rec.last_fix_s);
        raise(&slot.last_contact_s, rec.last_contact_s);
        slot.since_s.store(rec.since_s, Ordering::Release);
        slot.state.store(
            Level::from_bits(rec.state).to_bits() | (rec.state & !super::policy::LEVEL_MASK),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Restores a pending confirmation from a snapshot.
    pub(crate) fn import_confirmation(&self, device_id: u64, at_s: u32, done: bool) {
        self.confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(device_id, (at_s, done));
    }

    fn find_or_claim_valid(&self, device_id: u64) -> Result<&Slot, RecordError> {
        if !valid_device_id(device_id) {
            return Err(RecordError::InvalidDeviceId { device_id });
        }
        self.find_or_claim(device_id)
    }

    /// Validates an update and returns the device's slot, claiming one if the device is new.
    fn slot_for_update(&self, device_id: u64, time_s: u32) -> Result<&Slot, RecordError> {
        if !valid_device_id(device_id) {
            return Err(RecordError::InvalidDeviceId { device_id });
        }
        if time_s == 0 {
            return Err(RecordError::ZeroTime { device_id });
        }
        self.find_or_claim(device_id)
    }

    /// The slot where a probe for `device_id` starts: multiply-shift hash, then fastrange onto
    /// `0..capacity` (the high bits of the product are the well-mixed ones).
    fn home(&self, device_id: u64) -> usize {
        const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let hash = device_id.wrapping_mul(GOLDEN);
        // (hash * capacity) >> 64 < capacity, which is a usize.
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// The device's slot, if it has one.
    fn find(&self, device_id: u64) -> Option<&Slot> {
        let capacity = self.slots.len();
        let mut i = self.home(device_id);
        for _ in 0..capacity {
            let slot = &self.slots[i];
            match slot.device.load(Ordering::Acquire) {
                0 => return None,
                d if d == device_id => return Some(slot),
                _ => {}
            }
            i = if i + 1 == capacity { 0 } else { i + 1 };
        }
        None
    }

    /// The device's slot, claiming the first empty slot on its probe path if it has none.
    fn find_or_claim(&self, device_id: u64) -> Result<&Slot, RecordError> {
        let capacity = self.slots.len();
        let mut i = self.home(device_id);
        let mut reserved = false;
        // Each step either returns or moves past a slot that is (now) permanently taken, and
        // fewer than `capacity` slots can ever be taken, so this ends within `capacity` steps.
        for _ in 0..capacity {
            let slot = &self.slots[i];
            let mut current = slot.device.load(Ordering::Acquire);
            if current == 0 {
                if !reserved {
                    if !self.reserve() {
                        return Err(RecordError::TableFull {
                            devices_max: self.devices_max,
                        });
                    }
                    reserved = true;
                }
                match slot.device.compare_exchange(
                    0,
                    device_id,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(slot),
                    Err(actual) => current = actual,
                }
            }
            if current == device_id {
                if reserved {
                    // Another recorder claimed this device first; give our place back.
                    self.reserved.fetch_sub(1, Ordering::Relaxed);
                }
                return Ok(slot);
            }
            i = if i + 1 == capacity { 0 } else { i + 1 };
        }
        // Unreachable while `reserved <= devices_max < capacity` holds: with a reservation in
        // hand at most devices_max - 1 other slots are taken. Refuse rather than panic.
        debug_assert!(
            false,
            "silence table probe wrapped around: capacity invariant broken"
        );
        if reserved {
            self.reserved.fetch_sub(1, Ordering::Relaxed);
        }
        Err(RecordError::TableFull {
            devices_max: self.devices_max,
        })
    }

    /// Takes one of the `devices_max` places, if any is left.
    fn reserve(&self) -> bool {
        self.reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.devices_max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The raw words of one tracked device, as kept in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRecord {
    pub(crate) device_id: u64,
    pub(crate) last_fix_s: u32,
    pub(crate) last_contact_s: u32,
    pub(crate) since_s: u32,
    pub(crate) state: u32,
}

/// Holds the table's "a scan is running" flag; clears it on drop (also on panic).
struct ScanGuard<'a>(&'a AtomicBool);

impl<'a> ScanGuard<'a> {
    fn acquire(flag: &'a AtomicBool) -> Result<Self, ScanError> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| Self(flag))
            .map_err(|_| ScanError::AlreadyRunning)
    }
}

impl Drop for ScanGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub(crate) fn valid_device_id(device_id: u64) -> bool {
    device_id >= 1 && device_id <= i64::MAX as u64
}

fn non_zero(t: u32) -> Option<u32> {
    (t != 0).then_some(t)
}

#[cfg(test)]
mod tests;

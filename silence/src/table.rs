//! The per-device table (lock-free on the fix and contact path) and the scan.
//!
//! # Contract
//!
//! * **Fixed capacity, allocated once, ≤ 32 B per device.** `capacity =
//!   max(devices_max + 1, floor(devices_max * 256 / 195))` slots of 24 bytes plus one 24-byte
//!   scan summary per 64 slots, in two boxed slices: 24.375 B per slot at a load factor of
//!   195/256 = 0.762 is 32 B per device at `devices_max` (the summary is paid for by a load
//!   factor 0.012 above 3/4 rather than by extra bytes). [`SilenceTable::memory_bytes`] is at
//!   most `32 * devices_max + 24 + size_of::<SilenceTable>()` once `devices_max >= 4`.
//!   An empty slot and a fresh summary are all zero bits (release builds turn the fill into a
//!   zeroed allocation, and the OS commits pages as devices arrive; the slots are advised as
//!   transparent huge pages, `sys::mem::advise_huge_pages`, so a scattered slot costs no
//!   TLB miss where the kernel allows them). At most `devices_max`
//!   devices are ever tracked; a new device
//!   beyond that gets [`RecordError::TableFull`] while known devices keep updating. Known
//!   edge: a place is reserved before the probe knows whether another recorder is claiming
//!   the same device, so when the table is within a few devices of full, recorders racing
//!   the *first* record of one new device can see `TableFull` for all but one of them
//!   (the device is then tracked; only those racing updates are not recorded).
//! * **Record path: lock-free, allocation-free, bounded.** Open addressing with linear probing;
//!   the home slot is a multiply-shift hash of the device id mapped onto the capacity with
//!   fastrange (no power-of-two rounding, so memory stays near 32 B/device). A slot is claimed
//!   by a CAS of its device word from 0; slots are never freed, so a probe that reaches an
//!   empty slot has proven the device absent. Times only move forward (`fetch_max`), so
//!   concurrent recorders and out-of-order batches cannot move a device back in time. A probe
//!   visits at most `capacity` slots.
//! * **Scanner: one at a time, never blocks recorders, work ∝ devices that may be due.**
//!   [`SilenceTable::scan`] is the only writer of a slot's `state` word; an `AtomicBool` guard
//!   makes a second concurrent scan fail with [`ScanError::AlreadyRunning`] instead of
//!   emitting duplicates. Its result equals a sweep that judges every slot, but it only loads
//!   the slots that could change level (see "Scan summary"): with a policy that provides a
//!   [`SilencePolicy::reporting_from_s`] bound, a block of 64 reporting devices costs one
//!   16-byte load, and with one that provides [`SilencePolicy::judgement_until_s`] a block
//!   whose silent devices cannot change before a deadline costs one more load (see "Held
//!   blocks"). Measured figures are in `docs/PERFORMANCE.md`, "Silence table"
//!   (`benches/silence.rs`).
//! * **One lock, off the fix path: pending confirmations.** A confirm-location answer is rare
//!   (only warned devices are asked), so [`SilenceTable::record_confirmation`] keeps it in a
//!   `Mutex`-guarded map (at most one entry per tracked device). That lock is taken only by
//!   `record_confirmation`, [`SilenceTable::confirmation`], snapshots, and twice per scan
//!   (to copy the map before the sweep and to settle it after): never by
//!   [`SilenceTable::record_fix`] or [`SilenceTable::record_contact`], and never held while
//!   slots are swept, so it can never make a recorder of fixes or contacts wait.
//! * **Never** reads the clock, does IO, or frees a slot.
//!
//! # Slot layout (24 bytes, 8-aligned)
//!
//! ```text
//! offset  0  device: AtomicU64          0 = empty; else the device id (1..=i64::MAX), set once by CAS
//! offset  8  last_fix_s: AtomicU32      newest fix time (device clock), 0 = no fix yet; fetch_max
//! offset 12  last_contact_s: AtomicU32  newest contact time (server clock), 0 = none; fetch_max
//! offset 16  since_s: AtomicU32         when the current silence is counted from (see below)
//! offset 20  state: AtomicU32           bits 0..2: level as of the last scan; bit 2: not_judged
//!                                       reported; bit 3: held on a watch list; others reserved
//! ```
//!
//! `since_s` is the first contact time while the device has never sent a fix (set once, by
//! CAS from 0, by the first recorded contact: the policy judges such a device from its first
//! contact). Whenever the scanner judges a device silent it stores the time it judged from
//! (newest fix, else first contact) there, so a later [`EventKind::Resumed`] can report when
//! the silence began. Recorders never write it once it is non-zero.
//!
//! # Scan summary (one `Block` per 64 slots)
//!
//! A slot is *fast* after a scan judged it `Reporting` with a fix at or after that scan's
//! `reporting_from_s`; every other claimed slot (silent, exempt, no fix yet, time not yet
//! published) is *watched*. Per block the scanner keeps the watch mask (one bit per slot) and
//! a summary word: the number of fast slots and the *floor*, the oldest `last_fix_s` among
//! them. A later scan with `floor >= reporting_from_s` skips every fast slot of the block,
//! because a fast slot stays fast until a scan sees it otherwise: only the scanner (and the
//! start-up [`import`](SilenceTable::import)) writes `state`, and `last_fix_s` only grows, so
//! each such slot still has `state == Reporting` and `last_fix_s >= floor >=
//! reporting_from_s`, which is exactly the old per-slot fast path. It then judges only the
//! watched slots. Otherwise (floor behind, or the block dirty) it judges every slot and
//! rebuilds mask and summary.
//!
//! What could break the proof is a slot becoming claimed or changing `state` outside a scan.
//! So a recorder that claims a slot, and `import`, swap `FLOOR_DIRTY` (0) into the summary
//! (`AcqRel`; one read-modify-write, only when a device is new; the fix path itself is
//! unchanged). A full visit first swaps in `FLOOR_VISITING` (1) with `Acquire` and finally
//! installs the rebuilt summary by compare-exchange from `FLOOR_VISITING`; a claim that lands
//! during the visit makes that exchange fail, so the block stays dirty for the next scan and
//! the new device is never skipped. Summary floors 0 and 1 therefore both mean "visit all".
//!
//! **Look-ahead.** A slot is fast only if it stays reporting through a look-ahead `a =
//! min(10 min, window / 8)` (`window = now - reporting_from_s`, the youngest silence that can be
//! due; the policy gives the bound at `now + a`, [`SilencePolicy::reporting_from_later_s`]).
//! A reporting slot that comes due within `a` stays on the watch list (two loads per scan, no
//! policy call). A block whose floor comes within `a / 2` of due is re-read early, at most
//! one block in `EARLY_REBUILD_SHARE` (32) per scan; only a floor already behind
//! `reporting_from_s` forces a re-read. So devices that go silent together (a regional
//! outage) move onto their blocks' watch lists over the scans before they cross, and the
//! scan in which they cross judges just them instead of re-reading every block that holds
//! one (with the default 10 s scans, the 5 min before a cohort is due are 30 scans: 94% of
//! its blocks are re-read early; with longer scan intervals the rest is re-read at the
//! crossing, as before). Watched slots are loaded a few blocks ahead of the sweep
//! (`TOUCH_AHEAD_BLOCKS`) so their cache misses overlap. The proof above is unchanged: a fast slot still has `last_fix_s >= floor >=
//! reporting_from_s` whenever its block is skipped, and early re-reads only add visits. No
//! shared state was added (the watch mask, the summary and the early-re-read count are the
//! scanner's; the recorders' protocol is the one the loom models check).
//!
//! Work per scan: one summary load per 64 slots, plus one judged slot per watched device of
//! a block that is not held (see "Held blocks"), plus a full block for each block that gained
//! a device, whose oldest fast fix fell behind the reporting window, or that is re-read early
//! (at most 1 in 32).
//!
//! # Held blocks
//!
//! A watched device whose judgement cannot change before a known instant need not be judged
//! until then: an expired device never changes without a fix, a warned one not before its
//! expiry deadline, a reporting one due within the look-ahead not before its warning. When a
//! visit has judged every watched slot of a block, it asks the policy for each one's
//! [`SilencePolicy::judgement_until_s`] and *holds* the block until the earliest of them: its
//! `held` word keeps that instant and what the held slots counted for (warned, expired,
//! exempt, past coverage), so a later scan before it adds those counts to its stats without
//! loading a slot. A block is not held when one of its watched slots has no published time
//! yet or a deadline not ahead of `now`.
//!
//! The judgement of a held slot depends on its newest fix, its pending confirmation, its
//! policy and `now`; the deadline covers `now` and the policy (a table is scanned with one
//! policy). The other two wake the block:
//!
//! * **A fix.** [`SilenceTable::record_fix`], after a `fetch_max` that raised the time, issues
//!   a SeqCst fence and loads the slot's `state`; if it is not plain `Reporting` (every held
//!   slot is flagged [`WATCHED_FLAG`] in `state`, or silent), it sets `HELD_WOKEN` in the
//!   block's `held` word (`fetch_or`, `Release`). The scanner, before it installs a hold,
//!   stores each held slot's `state` with the flag, issues a SeqCst fence, and re-loads each
//!   held slot's `last_fix_s`; if one changed since it was judged, it does not hold the block.
//!   Store, fence, load on both sides: in the fences' total order one comes first, so either
//!   the recorder's load sees the flag (and wakes the block), or the scanner's re-load sees
//!   the fix (and does not hold it). A scan that finds `HELD_WOKEN` clears it (`fetch_and`,
//!   `Acquire`, so it sees the fix that set it; only when its `Acquire` load of the word saw
//!   it set) before it loads the slots; a wake after that load or clear stays for the next
//!   scan, and the scanner's final compare-exchange of the `held`
//!   word keeps it. An older fix (no raise) changes nothing and wakes nothing; a contact
//!   never changes a judgement (a device without fix is judged from its first contact, set
//!   once before it is first judged). The fix path pays the fence only when a fix is newer.
//! * **A confirmation.** The scan already copies the pending confirmations; each one not yet
//!   reported names its block (one probe), and those blocks are never skipped in that scan.
//!   A reported one is already in the deadline (the policy was asked with it).
//! * **A claim or an import** marks the block dirty, and a dirty block is visited in full.
//!
//! A slot that turns fast loses the flag; a held block costs the fix path nothing until one
//! of its held devices sends a newer fix. Only the `held` word and the flag are new shared
//! state; the loom models `fix_racing_a_hold_wakes_the_block` and
//! `fix_racing_a_partial_visit_resumes_once` check the handshake.
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
#[cfg(loom)]
use loom::sync::atomic::fence;
#[cfg(not(loom))]
use std::sync::atomic::fence;

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

/// Raises `cell` to `value` if it is lower; true if this call raised it. The plain load
/// first keeps the common case (the same second again, an older batch) free of a contended
/// read-modify-write.
fn raise(cell: &AtomicU32, value: u32) -> bool {
    cell.load(Ordering::Relaxed) < value && cell.fetch_max(value, Ordering::Release) < value
}

/// Per-device last-fix and last-contact times for up to `devices_max` devices, lock-free.
///
/// Shared by reference (wrap it in an `Arc`): recorders call [`SilenceTable::record_fix`] and
/// [`SilenceTable::record_contact`] from any thread, one scanner thread calls
/// [`SilenceTable::scan`], anyone may call [`SilenceTable::get`].
///
/// # Memory
///
/// `memory_bytes() = size_of::<SilenceTable>() + 24 * capacity + 16 * ceil(capacity / 64)`,
/// reserved in [`SilenceTable::with_capacity`]: at most 32 B per device (32 MB for a million
/// devices). Nothing is allocated afterwards.
#[derive(Debug)]
pub struct SilenceTable {
    slots: Box<[Slot]>,
    /// One scan summary per `BLOCK_SLOTS` slots (the last block may be shorter).
    blocks: Box<[Block]>,
    devices_max: usize,
    /// Devices claimed plus claims in flight; never exceeds `devices_max`.
    reserved: AtomicUsize,
    /// Set while a scan runs.
    scanning: AtomicBool,
    /// The `now` of the latest scan (scanner-owned): a hold is a promise from that instant
    /// on, so a scan at an earlier `now` (the clock went back) ignores every hold.
    last_scan_s: AtomicU32,
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
    /// Slots covered by the scan (the table's capacity): judged, or proven reporting by their
    /// block's summary.
    pub slots_scanned: usize,
    /// Slots actually loaded and judged; the rest were proven reporting by their block's
    /// summary (see the module doc, "Scan summary").
    pub slots_visited: usize,
    /// Blocks of 64 slots skipped without loading a single slot.
    pub blocks_skipped: usize,
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
    /// Devices not judged because a deadline would need days past their calendar's coverage
    /// (`past_coverage = "refuse"`; also counted at their unchanged level).
    pub past_coverage: usize,
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

    /// Bytes per slot (the table holds [`SilenceTable::capacity`] of them).
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
        let capacity = Self::capacity_for(devices_max);
        let slots = (0..capacity)
            .map(|_| Slot::empty())
            .collect::<Box<[Slot]>>();
        // Before any slot is touched (the fill is a zeroed allocation): huge pages spare the
        // record path and the scan a TLB miss per scattered slot (see `docs/PERFORMANCE.md`).
        #[cfg(not(loom))]
        sys::mem::advise_huge_pages(&slots);
        let blocks = (0..capacity.div_ceil(BLOCK_SLOTS))
            .map(|_| Block::dirty())
            .collect::<Box<[Block]>>();
        Ok(Self {
            slots,
            blocks,
            devices_max,
            reserved: AtomicUsize::new(0),
            scanning: AtomicBool::new(false),
            last_scan_s: AtomicU32::new(0),
            confirmations: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The configured device limit.
    pub fn devices_max(&self) -> usize {
        self.devices_max
    }

    /// Number of slots: `max(devices_max + 1, floor(devices_max * 128 / 97))` (load factor
    /// 0.758 at `devices_max`; see [`SilenceTable::memory_bytes`] for why 128/97).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot count for `devices_max`. 24 B per slot plus a 16-byte summary per 64 slots
    /// (24.25 B per slot) times 128/97 slots per device is exactly 32 B per device. Always more
    /// than `devices_max`, so a probe finds a free slot while fewer than `devices_max` devices
    /// are claimed.
    fn capacity_for(devices_max: usize) -> usize {
        (devices_max * 256 / 195).max(devices_max + 1)
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

    /// Bytes held by the table: its slots, its scan summaries and the struct itself (the
    /// pending-confirmations map, empty unless devices were asked to confirm, is not counted).
    /// Constant after construction; at most `32 * devices_max + 16 + size_of::<Self>()` once
    /// `devices_max >= 4`.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val::<[Slot]>(&self.slots)
            + std::mem::size_of_val::<[Block]>(&self.blocks)
    }

    /// Records a fix of `device_id` taken at `fix_s` (Unix seconds, the fix's own timestamp).
    /// Keeps the newest: an older fix changes nothing. Lock-free; never allocates.
    ///
    /// # Errors
    /// [`RecordError::InvalidDeviceId`], [`RecordError::ZeroTime`], or
    /// [`RecordError::TableFull`] when the device is new and the table is full.
    pub fn record_fix(&self, device_id: u64, fix_s: u32) -> Result<(), RecordError> {
        let (index, slot) = self.index_for_update(device_id, fix_s)?;
        if raise(&slot.last_fix_s, fix_s) {
            self.wake_if_held(index, slot);
        }
        Ok(())
    }

    /// After a fix raised slot `index`'s time: if the scanner may be holding the slot (its
    /// state word is not plain `Reporting`: silent, exempt, or flagged [`WATCHED_FLAG`]), wakes
    /// its block so the next scan judges its watched slots again (see the module doc, "Held
    /// blocks"). The SeqCst fence pairs with the one the scanner issues after it flags the
    /// slots it holds: either this load sees the flag, or the scanner's re-load sees this fix.
    fn wake_if_held(&self, index: usize, slot: &Slot) {
        fence(Ordering::SeqCst);
        if slot.state.load(Ordering::Relaxed) != Level::Reporting.to_bits() {
            self.blocks[index / BLOCK_SLOTS]
                .held
                .fetch_or(HELD_WOKEN, Ordering::Release);
        }
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

    /// The ids of every tracked device, in slot order (for listings such as the daily
    /// `device_status` table). A device claimed while the iteration runs may be missed.
    pub fn device_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().filter_map(|slot| {
            let id = slot.device.load(Ordering::Acquire);
            valid_device_id(id).then_some(id)
        })
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

    /// Tells the table that the policy its scans use has changed (say, `past_coverage` was
    /// switched): the next scan judges every watched device again instead of trusting the
    /// deadlines ([`SilencePolicy::judgement_until_s`]) the old policy gave. Cheap; safe while
    /// a scan runs (then it applies to the scan after it).
    pub fn policy_changed(&self) {
        self.last_scan_s.store(u32::MAX, Ordering::Relaxed);
    }

    /// Judges every device that could have changed level since the previous scan with `policy`
    /// at `now_s` and appends one [`SilenceEvent`] to `out` for each device whose level changed
    /// (see [`next_level`] for which changes exist). `out` is not cleared; a scan appends at
    /// most one event per tracked device, so at most `devices_max`.
    ///
    /// The result is the same as judging every slot (see the module doc, "Scan summary"): a
    /// block of 64 slots is skipped when its summary proves every device in it outside the
    /// watch mask reporting at `now_s`, and only its watched slots are visited, unless the
    /// block is held ("Held blocks"). Every scan of a table must use the same policy; call
    /// [`SilenceTable::policy_changed`] when it changes.
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
        // Copy the (rare) pending confirmations so recorders never wait for the sweep.
        let confirmations = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let reporting_from_s = policy.reporting_from_s(now_s);
        let [rebuild_from_s, fast_from_s] = Self::look_ahead(policy, now_s, reporting_from_s);
        let woken_blocks = self.confirmation_blocks(&confirmations);
        // Holds were installed at the previous scan's `now` or earlier, and promise nothing
        // before it. (The scan guard orders this scanner-owned word between scans.)
        let holds_valid = now_s >= self.last_scan_s.swap(now_s, Ordering::Relaxed);
        let mut sweep = Sweep {
            policy,
            now_s,
            reporting_from_s,
            fast_from_s,
            rebuild_from_s,
            rebuilds_left: (self.blocks.len() / EARLY_REBUILD_SHARE).max(1),
            holds_valid,
            woken_blocks,
            woken_next: 0,
            confirmations,
            reported: Vec::new(),
            superseded: Vec::new(),
            stats: ScanStats {
                slots_scanned: self.slots.len(),
                ..ScanStats::default()
            },
        };
        for (b, block) in self.blocks.iter().enumerate() {
            self.touch_watched(b + TOUCH_AHEAD_BLOCKS, holds_valid.then_some(now_s));
            let start = b * BLOCK_SLOTS;
            let slots = &self.slots[start..(start + BLOCK_SLOTS).min(self.slots.len())];
            let summary = block.summary.load(Ordering::Acquire);
            let (floor_s, _) = unpack_summary(summary);
            let floor_s = u64::from(floor_s);
            let must = floor_s <= u64::from(FLOOR_VISITING) || floor_s < sweep.reporting_from_s;
            let confirmed = sweep.confirmation_in(b);
            if must || (floor_s < sweep.rebuild_from_s && sweep.take_rebuild()) {
                self.visit_block(block, slots, &mut sweep, out);
            } else {
                self.visit_watched(block, slots, summary, confirmed, &mut sweep, out);
            }
        }
        self.report_passed_confirmations(&mut sweep, out);
        self.settle_confirmations(&sweep.reported, &sweep.superseded);
        Ok(sweep.stats)
    }

    /// Starts loading the watched slots of block `b` (if it exists), a few blocks before the
    /// sweep reaches it: watched slots are scattered over the table, one cache miss each, and
    /// loads issued ahead overlap instead of waiting one after another. Only the scanner's own
    /// watch mask and a prefetch hint per watched slot: it changes nothing.
    fn touch_watched(&self, b: usize, hold_now_s: Option<u32>) {
        let Some(block) = self.blocks.get(b) else {
            return;
        };
        if hold_now_s.is_some_and(|now_s| Held::holds(block.held.load(Ordering::Relaxed), now_s)) {
            // Held: the sweep will most likely not load these slots.
            return;
        }
        let mut bits = block.watch.load(Ordering::Relaxed);
        let start = b * BLOCK_SLOTS;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(slot) = self.slots.get(start + i) {
                // A hint, not a load: a load would wait for its line and stall the sweep.
                // A slot may straddle two lines; the visit reads all of its words.
                sys::mem::prefetch_read(&slot.device);
                sys::mem::prefetch_read(&slot.state);
            }
        }
    }

    /// The blocks (sorted, deduplicated) holding a device with a confirmation not yet reported:
    /// the sweep judges their watched slots even when the blocks are held (a held block's
    /// deadline knows nothing of a confirmation that came later). Confirmations are rare: one
    /// probe each, no slot written.
    fn confirmation_blocks(
        &self,
        confirmations: &std::collections::HashMap<u64, (u32, bool)>,
    ) -> Vec<usize> {
        let mut blocks: Vec<usize> = confirmations
            .iter()
            .filter(|(_, (_, done))| !done)
            .filter_map(|(d, _)| self.find_index(*d))
            .map(|i| i / BLOCK_SLOTS)
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    }

    /// The scan's look-ahead bounds `[rebuild_from_s, fast_from_s]`: the policy's
    /// [`SilencePolicy::reporting_from_later_s`] at `now + a / 2` and `now + a`, with `a` the
    /// smaller of `SCAN_AHEAD_S` and an eighth of the reporting window (`now - reporting_from`,
    /// the youngest silence that can be due), so the watch list holds the devices due within
    /// `a` and never most of a fleet. Falls back to `reporting_from_s` (no look-ahead) when
    /// the policy gives none.
    fn look_ahead<P: SilencePolicy + ?Sized>(
        policy: &P,
        now_s: u32,
        reporting_from_s: u64,
    ) -> [u64; 2] {
        let window_s = (u64::from(now_s) + 1).saturating_sub(reporting_from_s);
        let ahead_s = (window_s / SCAN_AHEAD_WINDOW_SHARE).min(SCAN_AHEAD_S);
        [ahead_s / 2, ahead_s].map(|a| {
            let later_s = u32::try_from(u64::from(now_s) + a).unwrap_or(u32::MAX);
            match policy.reporting_from_later_s(now_s, later_s) {
                b if b > u64::from(u32::MAX) => reporting_from_s,
                b => b.max(reporting_from_s),
            }
        })
    }

    /// Confirmations the sweep did not consume belong to devices the fast path passed:
    /// reporting devices. Reports each once, and marks those a newer fix superseded.
    fn report_passed_confirmations<P: SilencePolicy + ?Sized>(
        &self,
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) {
        for (device_id, (at, done)) in std::mem::take(&mut sweep.confirmations) {
            let Some(slot) = self.find(device_id) else {
                continue;
            };
            let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
            if at <= last_fix_s {
                sweep.superseded.push(device_id);
            }
            if done {
                continue;
            }
            // Reported once even when a fix superseded it (it changed nothing: from = to).
            sweep.reported.push((device_id, at));
            let level = Level::from_bits(slot.state.load(Ordering::Relaxed));
            let (policy_index, threshold_s) = sweep.policy.event_info(device_id, level, last_fix_s);
            out.push(SilenceEvent {
                device_id,
                kind: EventKind::Confirmed { confirmed_at_s: at },
                policy: policy_index,
                from: level,
                to: level,
                last_fix_s,
                last_contact_s: slot.last_contact_s.load(Ordering::Acquire),
                at_s: sweep.now_s,
                threshold_s,
            });
            sweep.stats.events += 1;
        }
    }

    /// Writes the scan's outcome back to the pending confirmations: `reported` ones are marked
    /// reported, `superseded` ones (a fix at least as new arrived) are dropped unless a newer
    /// confirmation arrived meanwhile.
    fn settle_confirmations(&self, reported: &[(u64, u32)], superseded: &[u64]) {
        if reported.is_empty() && superseded.is_empty() {
            return;
        }
        let mut map = self
            .confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (d, at) in reported {
            // Only the confirmation reported: a newer one that arrived meanwhile is not.
            if let Some(c) = map.get_mut(d)
                && c.0 == *at
            {
                c.1 = true;
            }
        }
        for d in superseded {
            // Only if no newer confirmation arrived meanwhile.
            if let Some(&(at, _)) = map.get(d)
                && self
                    .find(*d)
                    .is_some_and(|s| s.last_fix_s.load(Ordering::Acquire) >= at)
            {
                map.remove(d);
            }
        }
    }

    /// A block whose summary floor is at or after `reporting_from_s`: every claimed slot outside
    /// its watch mask is reporting with a fix at or after the floor, so only watched slots are
    /// judged, and not even those while the block is held (its deadline is ahead, no recorder
    /// woke it and none of its devices has a new confirmation: `confirmed`). Slots that turn
    /// fast leave the mask and join the summary.
    fn visit_watched<P: SilencePolicy + ?Sized>(
        &self,
        block: &Block,
        slots: &[Slot],
        summary: u64,
        confirmed: bool,
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) {
        let (floor_s, fast) = unpack_summary(summary);
        sweep.stats.devices += fast as usize;
        sweep.stats.reporting += fast as usize;
        let mut watch = block.watch.load(Ordering::Relaxed);
        if watch == 0 {
            sweep.stats.blocks_skipped += 1;
            return;
        }
        // Acquire: pairs with a recorder's wake (see `wake_if_held`).
        let held = block.held.load(Ordering::Acquire);
        if sweep.holds_valid && !confirmed && Held::holds(held, sweep.now_s) {
            Held::count(held, watch, &mut sweep.stats);
            sweep.stats.blocks_skipped += 1;
            return;
        }
        Held::clear_wake(block, held);
        let (mut new_floor_s, mut new_fast) = (floor_s, fast);
        let mut hold = Hold::new();
        let mut bits = watch;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            match self.visit(&slots[i], sweep, out) {
                Visit::Fast { last_fix_s } => {
                    watch &= !(1u64 << i);
                    new_fast += 1;
                    new_floor_s = new_floor_s.min(last_fix_s);
                }
                Visit::Watch {
                    until_s,
                    last_fix_s,
                    held_as,
                } => {
                    hold.add(i, until_s, last_fix_s, held_as, sweep.now_s);
                }
                // Watched slots are claimed and slots are never freed.
                Visit::Empty => watch &= !(1u64 << i),
            }
        }
        block.watch.store(watch, Ordering::Relaxed);
        if new_fast != fast {
            // Fails only if a recorder claimed a slot meanwhile and marked the block dirty:
            // then the next scan visits the whole block and rebuilds mask and summary.
            let _ = block.summary.compare_exchange(
                summary,
                pack_summary(new_floor_s, new_fast),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        hold.install(block, slots);
    }

    /// A block that is dirty (a slot was claimed or imported) or whose floor fell behind
    /// `reporting_from_s`: judges every slot and rebuilds the watch mask and the summary.
    fn visit_block<P: SilencePolicy + ?Sized>(
        &self,
        block: &Block,
        slots: &[Slot],
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) {
        // Acquire: a recorder marks the block dirty (an AcqRel swap) after it claims a slot, so
        // if its mark is what this swap replaces, the sweep below sees the claimed device. A
        // mark after this swap makes the final compare-exchange fail (or overwrites its
        // result) and keeps the block dirty.
        block
            .summary
            .swap(pack_summary(FLOOR_VISITING, 0), Ordering::AcqRel);
        // Acquire: pairs with a recorder's wake (see `wake_if_held`).
        Held::clear_wake(block, block.held.load(Ordering::Acquire));
        let (mut watch, mut floor_s, mut fast) = (0u64, u32::MAX, 0u32);
        let mut hold = Hold::new();
        for (i, slot) in slots.iter().enumerate() {
            match self.visit(slot, sweep, out) {
                Visit::Fast { last_fix_s } => {
                    fast += 1;
                    floor_s = floor_s.min(last_fix_s);
                }
                Visit::Watch {
                    until_s,
                    last_fix_s,
                    held_as,
                } => {
                    watch |= 1u64 << i;
                    hold.add(i, until_s, last_fix_s, held_as, sweep.now_s);
                }
                Visit::Empty => {}
            }
        }
        block.watch.store(watch, Ordering::Relaxed);
        let _ = block.summary.compare_exchange(
            pack_summary(FLOOR_VISITING, 0),
            pack_summary(floor_s, fast),
            Ordering::Release,
            Ordering::Relaxed,
        );
        hold.install(block, slots);
    }

    /// Judges one slot (the body of the old full sweep), records its new level and events, and
    /// says how the next scan must treat it.
    fn visit<P: SilencePolicy + ?Sized>(
        &self,
        slot: &Slot,
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) -> Visit {
        sweep.stats.slots_visited += 1;
        let last_fix_s = slot.last_fix_s.load(Ordering::Acquire);
        let state = slot.state.load(Ordering::Relaxed);
        // Fast path: reporting through the look-ahead and was reporting. Two loads, no policy
        // call. (Confirmations only make a device less silent, so they cannot change this.)
        // A reporting device coming due within the look-ahead takes the judged path below: it
        // stays on the watch list, held until its deadline.
        if state == Level::Reporting.to_bits()
            && Visit::is_fast(Level::Reporting, last_fix_s, sweep.fast_from_s)
        {
            sweep.stats.devices += 1;
            sweep.stats.reporting += 1;
            return Visit::Fast { last_fix_s };
        }
        let device_id = slot.device.load(Ordering::Acquire);
        if device_id == 0 {
            return Visit::Empty;
        }
        let since_s = slot.since_s.load(Ordering::Acquire);
        // Judge from the newest fix, else from the first contact.
        let judged_from_s = if last_fix_s != 0 { last_fix_s } else { since_s };
        if judged_from_s == 0 {
            // Claimed, time not yet published: judged again at the next scan, never held.
            return Visit::Watch {
                until_s: 0,
                last_fix_s,
                held_as: None,
            };
        }
        sweep.stats.devices += 1;
        let previous = Level::from_bits(state);
        let confirm = sweep.take_confirmation(device_id, last_fix_s);
        let confirmed_s = confirm.confirmed_s;
        // A fix arrived since the device was last judged silent (or it was never silent).
        let fresh_fix = previous == Level::Reporting || judged_from_s != since_s;
        let mut judged = Judged {
            device_id,
            previous,
            next: previous,
            last_fix_s,
            last_contact_s: slot.last_contact_s.load(Ordering::Acquire),
            since_s,
            judged_from_s,
        };
        // Held (not judged again) until the policy's next possible change, unless woken.
        // `held_as`: what `Sweep::judge` counted it as.
        let watch = |sweep: &Sweep<'_, P>, held_as| Visit::Watch {
            until_s: sweep.policy.judgement_until_s(
                device_id,
                judged_from_s,
                confirmed_s,
                sweep.now_s,
            ),
            last_fix_s,
            held_as: Some(held_as),
        };
        judged.next = match sweep.judge(device_id, previous, judged_from_s, confirmed_s, fresh_fix)
        {
            Judgement::Level(next) => next,
            Judgement::Exempt => return watch(sweep, Held::counted(previous, 1, 0)),
            Judgement::PastCoverage => {
                Self::not_judged(slot, state, &judged, sweep, out);
                return watch(sweep, Held::counted(previous, 0, 1));
            }
        };
        let next = judged.next;
        let state = Self::judged_again(slot, state, &judged);
        let state = Self::record(slot, state, &judged, confirm, sweep, out);
        // The fast-path condition, with the look-ahead, as it holds after this visit.
        if Visit::is_fast(next, last_fix_s, sweep.fast_from_s) {
            if state & WATCHED_FLAG != 0 {
                // Fast again: fixes no longer need to wake the block.
                slot.state.store(state & !WATCHED_FLAG, Ordering::Relaxed);
            }
            Visit::Fast { last_fix_s }
        } else {
            watch(sweep, Held::counted(next, 0, 0))
        }
    }

    /// A judged slot's scanner-owned words: clears [`NOT_JUDGED_FLAG`] (returns the state
    /// word without it) and keeps "silent since" current while silent (a late batch may bring
    /// a newer, still old, fix).
    fn judged_again(slot: &Slot, state: u32, j: &Judged) -> u32 {
        let state = if state & NOT_JUDGED_FLAG != 0 {
            slot.state
                .store(state & !NOT_JUDGED_FLAG, Ordering::Relaxed);
            state & !NOT_JUDGED_FLAG
        } else {
            state
        };
        if j.next != Level::Reporting && j.since_s != j.judged_from_s {
            slot.since_s.store(j.judged_from_s, Ordering::Relaxed);
        }
        state
    }

    /// A device the policy could not judge (past its calendar's coverage): its `not_judged`
    /// event, once until it is judged again (the slot's [`NOT_JUDGED_FLAG`]).
    fn not_judged<P: SilencePolicy + ?Sized>(
        slot: &Slot,
        state: u32,
        j: &Judged,
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) {
        if state & NOT_JUDGED_FLAG != 0 {
            return;
        }
        slot.state.store(state | NOT_JUDGED_FLAG, Ordering::Relaxed);
        let (policy, _) = sweep
            .policy
            .event_info(j.device_id, j.previous, j.judged_from_s);
        out.push(j.event(EventKind::NotJudged, policy, 0, sweep.now_s));
        sweep.stats.events += 1;
    }

    /// Stores a visited slot's new level (returns its state word) and emits its one event: a confirmation not yet
    /// reported gets a `confirmed` event (it also tells this scan's level change, if any),
    /// except that a confirmation superseded by a fix that changed the level (a FIX answer
    /// ending the silence) is reported by that change's own event (`resumed`); else the level
    /// change's event. So every recorded confirmation gets exactly one event.
    fn record<P: SilencePolicy + ?Sized>(
        slot: &Slot,
        state: u32,
        judged: &Judged,
        confirm: PendingConfirm,
        sweep: &mut Sweep<'_, P>,
        out: &mut Vec<SilenceEvent>,
    ) -> u32 {
        let changed = judged.next != judged.previous;
        let by_change = confirm.superseded && changed;
        if confirm.superseded {
            sweep.superseded.push(judged.device_id);
        }
        match confirm.report_s {
            Some(at) if by_change => sweep.reported.push((judged.device_id, at)),
            Some(at) => sweep.report_confirmed(judged, at, out),
            None => {}
        }
        if !changed {
            return state;
        }
        let state = (state & !super::policy::LEVEL_MASK) | judged.next.to_bits();
        slot.state.store(state, Ordering::Relaxed);
        if confirm.report_s.is_none() || by_change {
            sweep.report_change(judged, out);
        }
        state
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
                // The scanner's hold is not part of a device's state.
                state: slot.state.load(Ordering::Relaxed) & !WATCHED_FLAG,
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
        let (index, slot) = self.find_or_claim_valid(rec.device_id)?;
        raise(&slot.last_fix_s, rec.last_fix_s);
        raise(&slot.last_contact_s, rec.last_contact_s);
        slot.since_s.store(rec.since_s, Ordering::Release);
        slot.state.store(
            Level::from_bits(rec.state).to_bits()
                | (rec.state & !(super::policy::LEVEL_MASK | WATCHED_FLAG)),
            Ordering::Relaxed,
        );
        // The state word changed behind the scanner's back: its block must be judged again.
        self.mark_dirty(index);
        Ok(())
    }

    /// Restores a pending confirmation from a snapshot.
    pub(crate) fn import_confirmation(&self, device_id: u64, at_s: u32, done: bool) {
        self.confirmations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(device_id, (at_s, done));
    }

    fn find_or_claim_valid(&self, device_id: u64) -> Result<(usize, &Slot), RecordError> {
        if !valid_device_id(device_id) {
            return Err(RecordError::InvalidDeviceId { device_id });
        }
        self.find_or_claim(device_id)
    }

    /// Validates an update and returns the device's slot, claiming one if the device is new.
    fn slot_for_update(&self, device_id: u64, time_s: u32) -> Result<&Slot, RecordError> {
        self.index_for_update(device_id, time_s)
            .map(|(_, slot)| slot)
    }

    /// [`SilenceTable::slot_for_update`] with the slot's index.
    fn index_for_update(&self, device_id: u64, time_s: u32) -> Result<(usize, &Slot), RecordError> {
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
        self.find_index(device_id).map(|i| &self.slots[i])
    }

    /// The index of the device's slot, if it has one.
    fn find_index(&self, device_id: u64) -> Option<usize> {
        let capacity = self.slots.len();
        let mut i = self.home(device_id);
        for _ in 0..capacity {
            match self.slots[i].device.load(Ordering::Acquire) {
                0 => return None,
                d if d == device_id => return Some(i),
                _ => {}
            }
            i = if i + 1 == capacity { 0 } else { i + 1 };
        }
        None
    }

    /// The device's slot and its index, claiming the first empty slot on its probe path if it
    /// has none.
    fn find_or_claim(&self, device_id: u64) -> Result<(usize, &Slot), RecordError> {
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
                    Ok(_) => {
                        self.mark_dirty(i);
                        return Ok((i, slot));
                    }
                    Err(actual) => current = actual,
                }
            }
            if current == device_id {
                if reserved {
                    // Another recorder claimed this device first; give our place back.
                    self.reserved.fetch_sub(1, Ordering::Relaxed);
                }
                return Ok((i, slot));
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

    /// Makes the next scan visit every slot of the block holding slot `index` (after a claim
    /// or an import changed what the block's summary describes). A read-modify-write, like
    /// the scanner's swap and compare-exchange, so the three are totally ordered: either the
    /// scanner's swap reads this mark (and, AcqRel, sees the claimed device word), or this mark
    /// comes after the swap and the scanner's final compare-exchange fails or is overwritten.
    /// (A plain `Release` store is not enough: the loom model
    /// `claim_racing_a_summary_rebuild_is_never_skipped` finds the lost device.) Only on a
    /// claim or an import, never on the fix path.
    fn mark_dirty(&self, index: usize) {
        self.blocks[index / BLOCK_SLOTS]
            .summary
            .swap(pack_summary(FLOOR_DIRTY, 0), Ordering::AcqRel);
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

/// Slots per scan-summary block: one bit each in the block's `u64` watch mask.
const BLOCK_SLOTS: usize = 64;
/// Summary floor written by a recorder that claimed a slot (or by an import): the next scan
/// visits the whole block.
const FLOOR_DIRTY: u32 = 0;
/// Summary floor while the scanner rebuilds the block; also "visit the whole block".
const FLOOR_VISITING: u32 = 1;
/// A scan re-reads early (before a fast device is due) at most one block in this many, so a
/// cohort of devices coming due together costs a bounded share of each scan until then
/// rather than one long scan (see the module doc, "Scan summary").
const EARLY_REBUILD_SHARE: usize = 32;
/// How many blocks ahead of the sweep [`SilenceTable::touch_watched`] prefetches watched
/// slots (about 20 watched devices ahead in a scan where 1% of devices cross; measured in
/// `benches/silence.rs`, 16 and 48 within noise of each other once the table has huge pages).
const TOUCH_AHEAD_BLOCKS: usize = 48;
/// The scan's look-ahead is at most this long (seconds) ...
const SCAN_AHEAD_S: u64 = 600;
/// ... and at most this share of the reporting window (see [`SilenceTable::look_ahead`]).
const SCAN_AHEAD_WINDOW_SHARE: u64 = 8;

/// The scan summary of `BLOCK_SLOTS` consecutive slots. See the module doc, "Scan summary".
#[derive(Debug)]
struct Block {
    /// Slots the next scan must judge (not provably reporting). Scanner-owned.
    watch: AtomicU64,
    /// Low 32 bits: the floor, a lower bound of `last_fix_s` over the block's fast slots (its
    /// claimed slots outside `watch`), or `FLOOR_DIRTY` / `FLOOR_VISITING`. High 32 bits: the
    /// number of fast slots. Written by the scanner; recorders only store `FLOOR_DIRTY`.
    summary: AtomicU64,
    /// The hold on the watched slots (see [`Held`]): until when the scan need not judge them,
    /// and what they count for meanwhile. Written by the scanner; recorders only set
    /// `HELD_WOKEN`.
    held: AtomicU64,
}

// 24 B per 64 slots: part of the 32 B/device budget (see `SilenceTable::capacity_for`).
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Block>() == 24);

impl Block {
    /// A block the first scan visits in full. All-zero, like an empty slot.
    fn dirty() -> Self {
        Self {
            watch: AtomicU64::new(0),
            summary: AtomicU64::new(pack_summary(FLOOR_DIRTY, 0)),
            held: AtomicU64::new(0),
        }
    }
}

/// Bit 63 of a block's `held` word: a recorder raised the fix of a slot the scanner may be
/// holding; the next scan judges the block's watched slots whatever the deadline.
const HELD_WOKEN: u64 = 1 << 63;
/// Width of each count in a `held` word (a block holds at most 64 slots).
const HELD_COUNT_BITS: u32 = 7;

/// A block's `held` word: bits 0..32 `until_s`, the earliest deadline
/// ([`SilencePolicy::judgement_until_s`]) over its watched slots (0: not held, judge them at
/// the next scan); then four 7-bit counts of those slots as the scan that held them counted
/// them: warned, expired, exempt, past coverage (every held slot is a device; those not
/// warned or expired are reporting); bit 63 [`HELD_WOKEN`].
struct Held;

impl Held {
    fn pack(until_s: u32, counts: [u32; 4]) -> u64 {
        counts
            .iter()
            .enumerate()
            .fold(u64::from(until_s), |w, (k, &c)| {
                w | (u64::from(c) << (32 + HELD_COUNT_BITS * k as u32))
            })
    }

    fn counts(held: u64) -> [usize; 4] {
        let mask = (1u64 << HELD_COUNT_BITS) - 1;
        std::array::from_fn(|k| ((held >> (32 + HELD_COUNT_BITS * k as u32)) & mask) as usize)
    }

    /// Whether a scan at `now_s` may skip the watched slots of a block with this word.
    fn holds(held: u64, now_s: u32) -> bool {
        // The truncation selects `until_s`.
        held & HELD_WOKEN == 0 && now_s < held as u32
    }

    /// Clears a block's wake before its slots are loaded (`held`: its word as just loaded
    /// with `Acquire`): a fix after the clear wakes it again. Only when the wake is set: a
    /// wake this load did not see lands after it, and [`Hold::install`] keeps it for the next
    /// scan, as it keeps one that lands after the clear. (Saves a locked read-modify-write
    /// per visited block, nearly all of which are not woken.)
    fn clear_wake(block: &Block, held: u64) {
        if held & HELD_WOKEN != 0 {
            // Acquire, so the slot loads see the fix that set it.
            block.held.fetch_and(!HELD_WOKEN, Ordering::Acquire);
        }
    }

    /// What one held slot counts for, in the order of the `held` word's counts: warned,
    /// expired, exempt, past coverage (a device at `level`; `exempt` and `past_coverage` 0 or
    /// 1). As [`Sweep::judge`] counts it: an exempt or unjudged device at its unchanged level.
    fn counted(level: Level, exempt: u32, past_coverage: u32) -> [u32; 4] {
        [
            u32::from(level == Level::Warned),
            u32::from(level == Level::Expired),
            exempt,
            past_coverage,
        ]
    }

    /// Counts the held slots (`watch`) of a skipped block in `stats`.
    fn count(held: u64, watch: u64, stats: &mut ScanStats) {
        let n = watch.count_ones() as usize;
        let [warned, expired, exempt, past_coverage] = Self::counts(held);
        stats.devices += n;
        stats.reporting += n - warned - expired;
        stats.warned += warned;
        stats.expired += expired;
        stats.exempt += exempt;
        stats.past_coverage += past_coverage;
    }
}

/// A block's watched slots as one visit judged them, to be held (see [`Held`]).
struct Hold {
    mask: u64,
    /// The fix time each watched slot was judged with, re-checked after the fence.
    fixes: [u32; BLOCK_SLOTS],
    until_s: u32,
    counts: [u32; 4],
    /// False once a slot cannot be held (deadline not ahead, or not counted as a device).
    holdable: bool,
}

impl Hold {
    fn new() -> Self {
        Self {
            mask: 0,
            fixes: [0; BLOCK_SLOTS],
            until_s: u32::MAX,
            counts: [0; 4],
            holdable: true,
        }
    }

    /// Adds watched slot `i`, judged with `last_fix_s`, deadline `until_s`, counted in the
    /// scan's stats as `held_as` ([`Held::counted`]; `None`: not counted as a device, so the
    /// block cannot be held).
    ///
    /// (The visit says what it counted rather than this diffing the stats around it: a copy
    /// of the stats right after their fields were stored one by one cost a store-forwarding
    /// stall per visited slot, a fifth of a crossing scan.)
    fn add(
        &mut self,
        i: usize,
        until_s: u32,
        last_fix_s: u32,
        held_as: Option<[u32; 4]>,
        now_s: u32,
    ) {
        self.mask |= 1u64 << i;
        self.fixes[i] = last_fix_s;
        self.holdable &= until_s > now_s && held_as.is_some();
        self.until_s = self.until_s.min(until_s);
        for (c, d) in self.counts.iter_mut().zip(held_as.unwrap_or_default()) {
            // At most 64 slots per block: fits the 7-bit counts.
            *c += d;
        }
    }

    /// Installs the block's new `held` word. To hold the slots it first flags each one
    /// [`WATCHED_FLAG`] (a store this thread makes, so the fence below orders it), then, after
    /// a SeqCst fence that pairs with the one in [`SilenceTable::wake_if_held`], re-loads their
    /// fixes: a fix that the recorder's check may have missed is seen here, and the block is
    /// not held. A wake that lands meanwhile is kept.
    /// (By reference: the `Hold` is 288 bytes, and a move copies it.)
    fn install(&self, block: &Block, slots: &[Slot]) {
        let mut until_s = if self.holdable && self.mask != 0 {
            self.until_s
        } else {
            0
        };
        if until_s != 0 {
            let mut bits = self.mask;
            while bits != 0 {
                let slot = &slots[bits.trailing_zeros() as usize];
                bits &= bits - 1;
                let state = slot.state.load(Ordering::Relaxed);
                slot.state.store(state | WATCHED_FLAG, Ordering::Relaxed);
            }
            fence(Ordering::SeqCst);
            let mut bits = self.mask;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if slots[i].last_fix_s.load(Ordering::Relaxed) != self.fixes[i] {
                    until_s = 0;
                    break;
                }
            }
        }
        let new = Held::pack(until_s, self.counts);
        let mut current = block.held.load(Ordering::Relaxed);
        while let Err(actual) = block.held.compare_exchange(
            current,
            new | (current & HELD_WOKEN),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            current = actual;
        }
    }
}

fn pack_summary(floor_s: u32, fast: u32) -> u64 {
    (u64::from(fast) << 32) | u64::from(floor_s)
}

fn unpack_summary(summary: u64) -> (u32, u32) {
    // Truncations select the two halves.
    (summary as u32, (summary >> 32) as u32)
}

/// How the next scan must treat a slot just judged.
enum Visit {
    /// Empty: nothing to judge (yet; a claim marks the block dirty).
    Empty,
    /// Reporting with a fix at or after this scan's `reporting_from_s`: provably reporting
    /// until `reporting_from_s` passes `last_fix_s`.
    Fast {
        /// The fix time the scan saw (the device's time can only have grown since).
        last_fix_s: u32,
    },
    /// Anything else: stays on the watch list, held until `until_s` (0: judge it again at the
    /// next scan).
    Watch {
        /// [`SilencePolicy::judgement_until_s`] for what the visit judged.
        until_s: u32,
        /// The fix time it was judged with.
        last_fix_s: u32,
        /// What the visit counted it as ([`Held::counted`]); `None`: not a device yet.
        held_as: Option<[u32; 4]>,
    },
}

/// One scan's inputs and running results.
struct Sweep<'p, P: ?Sized> {
    policy: &'p P,
    now_s: u32,
    /// A reporting device with a fix at or after this is reporting now (no policy call).
    reporting_from_s: u64,
    /// ... and at or after this it stays reporting through the look-ahead: it joins its block's
    /// summary; between the two it stays on the watch list.
    fast_from_s: u64,
    /// A block whose floor is behind this may be re-read early (within `rebuilds_left`).
    rebuild_from_s: u64,
    /// Early re-reads this scan may still do.
    rebuilds_left: usize,
    /// False when `now` is before the previous scan's: no block is held this scan.
    holds_valid: bool,
    /// Blocks holding a device with an unreported confirmation, sorted (never held).
    woken_blocks: Vec<usize>,
    /// The first entry of `woken_blocks` not behind the sweep.
    woken_next: usize,
    confirmations: std::collections::HashMap<u64, (u32, bool)>,
    /// Confirmations reported by this scan: (device, confirmed at).
    reported: Vec<(u64, u32)>,
    superseded: Vec<u64>,
    stats: ScanStats,
}

impl<P: SilencePolicy + ?Sized> Sweep<'_, P> {
    /// Whether block `b` holds a device with an unreported confirmation (blocks are asked in
    /// increasing order).
    fn confirmation_in(&mut self, b: usize) -> bool {
        while self
            .woken_blocks
            .get(self.woken_next)
            .is_some_and(|&x| x < b)
        {
            self.woken_next += 1;
        }
        self.woken_blocks.get(self.woken_next) == Some(&b)
    }

    /// Takes one of this scan's early re-reads, if any is left.
    fn take_rebuild(&mut self) -> bool {
        let left = self.rebuilds_left > 0;
        self.rebuilds_left = self.rebuilds_left.saturating_sub(1);
        left
    }

    /// The level a device at `previous`, silent since `judged_from_s`, moves to (counted in
    /// the stats; see [`next_level`]), or why it is not judged (counted, at its unchanged
    /// level).
    fn judge(
        &mut self,
        device_id: u64,
        previous: Level,
        judged_from_s: u32,
        confirmed_s: u32,
        fresh_fix: bool,
    ) -> Judgement {
        match self
            .policy
            .judge(device_id, judged_from_s, confirmed_s, self.now_s)
        {
            Judgement::Exempt => {
                self.stats.exempt += 1;
                self.stats.count(previous);
                Judgement::Exempt
            }
            Judgement::PastCoverage => {
                self.stats.past_coverage += 1;
                self.stats.count(previous);
                Judgement::PastCoverage
            }
            Judgement::Level(l) => {
                let next = next_level(previous, l, fresh_fix, confirmed_s != 0);
                self.stats.count(next);
                Judgement::Level(next)
            }
        }
    }

    /// Takes `device_id`'s pending confirmation out of the scan's copy, given its newest fix
    /// `last_fix_s`. A fix at least as new supersedes it: it plays no part in the judgement
    /// and [`SilenceTable::record`] drops it after the scan, but reports it first if it was
    /// not yet reported: every recorded confirmation gets exactly one event. (An exempt or
    /// unjudged device keeps it pending until it is judged.)
    fn take_confirmation(&mut self, device_id: u64, last_fix_s: u32) -> PendingConfirm {
        // (The emptiness check spares the hashing when, as usual, nothing is pending.)
        let pending = if self.confirmations.is_empty() {
            None
        } else {
            self.confirmations.remove(&device_id)
        };
        match pending {
            Some((at, done)) => {
                let superseded = at <= last_fix_s;
                PendingConfirm {
                    confirmed_s: if superseded { 0 } else { at },
                    report_s: (!done).then_some(at),
                    superseded,
                }
            }
            None => PendingConfirm::default(),
        }
    }

    /// The [`EventKind::Confirmed`] event of a device that confirmed at `confirmed_s` (it
    /// carries the level change of this scan, if any).
    fn report_confirmed(&mut self, j: &Judged, confirmed_s: u32, out: &mut Vec<SilenceEvent>) {
        self.reported.push((j.device_id, confirmed_s));
        let (policy, threshold_s) =
            self.policy
                .event_info(j.device_id, j.previous, j.judged_from_s);
        out.push(j.event(
            EventKind::Confirmed {
                confirmed_at_s: confirmed_s,
            },
            policy,
            threshold_s,
            self.now_s,
        ));
        self.stats.events += 1;
    }

    /// The event of a level change: `resumed` (silent since the stored `since_s`, threshold of
    /// the level left), `warned` or `expired` (threshold of the level reached).
    fn report_change(&mut self, j: &Judged, out: &mut Vec<SilenceEvent>) {
        let (kind, threshold_level, counted_from_s) = match j.next {
            Level::Reporting => (
                EventKind::Resumed {
                    silent_since_s: j.since_s,
                },
                j.previous,
                j.since_s,
            ),
            Level::Warned => (EventKind::Warned, j.next, j.judged_from_s),
            Level::Expired => (EventKind::Expired, j.next, j.judged_from_s),
        };
        let (policy, threshold_s) =
            self.policy
                .event_info(j.device_id, threshold_level, counted_from_s);
        out.push(j.event(kind, policy, threshold_s, self.now_s));
        self.stats.events += 1;
    }
}

/// A device's pending confirmation as one visit sees it.
#[derive(Debug, Clone, Copy, Default)]
struct PendingConfirm {
    /// When it confirmed, for the judgement (0: none, or superseded by a fix).
    confirmed_s: u32,
    /// When it confirmed, if that is not reported yet.
    report_s: Option<u32>,
    /// A fix at least as new as the confirmation arrived.
    superseded: bool,
}

/// One device as a visit judged it.
struct Judged {
    device_id: u64,
    previous: Level,
    next: Level,
    last_fix_s: u32,
    last_contact_s: u32,
    /// The slot's `since_s` before the visit.
    since_s: u32,
    /// The time its silence was judged from (newest fix, else first contact).
    judged_from_s: u32,
}

impl Judged {
    fn event(&self, kind: EventKind, policy: u16, threshold_s: u64, now_s: u32) -> SilenceEvent {
        SilenceEvent {
            device_id: self.device_id,
            kind,
            policy,
            from: self.previous,
            to: self.next,
            last_fix_s: self.last_fix_s,
            last_contact_s: self.last_contact_s,
            at_s: now_s,
            threshold_s,
        }
    }
}

impl Visit {
    /// Whether a device at `level` with newest fix `last_fix_s` is provably reporting until
    /// `reporting_from_s` passes that fix.
    fn is_fast(level: Level, last_fix_s: u32, reporting_from_s: u64) -> bool {
        level == Level::Reporting && last_fix_s != 0 && u64::from(last_fix_s) >= reporting_from_s
    }
}

impl ScanStats {
    /// Counts one device at `level`.
    fn count(&mut self, level: Level) {
        match level {
            Level::Reporting => self.reporting += 1,
            Level::Warned => self.warned += 1,
            Level::Expired => self.expired += 1,
        }
    }
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

/// Bit of a slot's `state` word: the device's `not_judged` event was reported (cleared when
/// it is judged again).
const NOT_JUDGED_FLAG: u32 = 0b100;
/// Bit of a slot's `state` word: the scanner holds the slot on its block's watch list (set
/// before the block is held, cleared when the slot turns fast). With it every held slot's
/// state is not plain `Reporting`, which is what makes a recorder's fix wake the block.
const WATCHED_FLAG: u32 = 0b1000;

pub(crate) fn valid_device_id(device_id: u64) -> bool {
    device_id >= 1 && device_id <= i64::MAX as u64
}

fn non_zero(t: u32) -> Option<u32> {
    (t != 0).then_some(t)
}

#[cfg(test)]
mod tests;

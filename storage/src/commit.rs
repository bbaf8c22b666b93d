//! The WAL thread: group commit, deduplication, acknowledgements.
//!
//! Contract:
//! - A `Stored` acknowledgement is sent only after the one `fdatasync` that
//!   covers the batch's record; a `Duplicate` only after the fsync of the group
//!   it arrived in (its original may be in that very group).
//! - Every queued batch's callback runs exactly once (an `Ack` that is dropped
//!   unanswered answers `ShuttingDown`).
//! - A failed fsync (or a write error other than ENOSPC) puts the WAL in a
//!   failed state for good: it is never retried and never followed by a
//!   success. ENOSPC fails only the group (`DiskFull`), cuts the segment back
//!   and undoes the group's dedup and lsn changes; the next group retries.
//! - Batches are forwarded to the writer in lsn order; the send blocks when
//!   the writer lags, which fills the submit queue (backpressure).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};
use sys::Clock;

use crate::FixBatch;
use crate::dedup::{Decision, DedupTable, Window};
use crate::error::CommitError;
use crate::stats::Stats;
use crate::wait::{Recv, recv_before};
use crate::wal::{LogSink, encode_record, record_len};
use crate::writer::WriterMsg;

/// The outcome given to a batch's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Durably logged at `lsn`; it will land in Parquet exactly once.
    Stored {
        /// The batch's log sequence number.
        lsn: u64,
    },
    /// This `(device_id, batch_seq)` was already stored; nothing was logged.
    Duplicate,
}

/// The callback of a submitted batch.
pub type Done = Box<dyn FnOnce(Result<Committed, CommitError>) + Send>;

/// A callback that runs exactly once: explicitly, or with `ShuttingDown` on drop.
pub(crate) struct Ack(Option<Done>);

impl Ack {
    pub(crate) fn new(done: Done) -> Ack {
        Ack(Some(done))
    }

    pub(crate) fn complete(mut self, result: Result<Committed, CommitError>) {
        if let Some(done) = self.0.take() {
            // A panicking callback is a bug of the caller; it must not take the
            // WAL thread (and every other device's acknowledgement) down.
            if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
                tracing::error!("a storage commit callback panicked");
            }
        }
    }

    /// Forgets the callback without calling it (the submit was refused).
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| done(Err(CommitError::ShuttingDown))));
        }
    }
}

/// A queued batch.
pub(crate) struct Submission {
    pub(crate) batch: FixBatch,
    pub(crate) ack: Ack,
}

/// A message to the WAL thread.
// Nearly every message is the large variant: boxing would add one allocation
// per batch and save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WalMsg {
    Submit(Submission),
    /// Stop after the current group; `abandon` also stops the writer without a flush.
    Stop {
        abandon: bool,
    },
}

/// Group commit state (everything but the channels), testable with a fake sink.
pub(crate) struct GroupCommit<S: LogSink> {
    pub(crate) sink: S,
    pub(crate) dedup: DedupTable,
    pub(crate) next_lsn: u64,
    pub(crate) failed: Option<CommitError>,
    pub(crate) segment_bytes_max: u64,
    pub(crate) devices_max: usize,
    pub(crate) stats: Arc<Stats>,
    buf: Vec<u8>,
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

impl<S: LogSink> GroupCommit<S> {
    pub(crate) fn new(
        sink: S,
        dedup: DedupTable,
        next_lsn: u64,
        segment_bytes_max: u64,
        devices_max: usize,
        stats: Arc<Stats>,
    ) -> Self {
        GroupCommit {
            sink,
            dedup,
            next_lsn,
            failed: None,
            segment_bytes_max,
            devices_max,
            stats,
            buf: Vec::new(),
        }
    }

    fn enter_failed(&mut self, error: CommitError, cause: &io::Error) {
        tracing::error!(
            error = %cause,
            "WAL FAILED: write or fsync error; every pending and later batch is refused until restart"
        );
        self.stats.wal_failed.store(true, Ordering::Relaxed);
        self.failed = Some(error);
    }

    /// Marks the WAL failed for a reason without an IO error (the writer died).
    pub(crate) fn fail_writer_gone(&mut self) {
        tracing::error!("WAL FAILED: the writer thread is gone; refusing every later batch");
        self.stats.wal_failed.store(true, Ordering::Relaxed);
        self.failed = Some(CommitError::WalFailed { errno: None });
    }

    fn fail_all(&self, acks: impl IntoIterator<Item = Ack>, error: &CommitError) {
        for ack in acks {
            self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            ack.complete(Err(error.clone()));
        }
    }

    /// Logs one group with one write and one fsync, answers every callback,
    /// and returns the stored batches with their lsns, in lsn order.
    pub(crate) fn commit(&mut self, group: Vec<Submission>) -> Vec<(u64, FixBatch)> {
        if let Some(error) = self.failed.clone() {
            self.fail_all(group.into_iter().map(|s| s.ack), &error);
            return Vec::new();
        }
        let first_lsn = self.next_lsn;
        let Admitted {
            stored,
            duplicates,
            undo,
        } = self.admit(group);
        if stored.is_empty() {
            // Nothing to log: every duplicate's original is in an earlier,
            // already synced group.
            self.answer_duplicates(duplicates);
            return Vec::new();
        }
        if let Err(error) = self.write_group(first_lsn) {
            // Undo in reverse so each device gets back its pre-group window.
            for (device_id, previous) in undo.into_iter().rev() {
                self.dedup.restore(device_id, previous);
            }
            self.next_lsn = first_lsn;
            let acks = stored.into_iter().map(|(_, s)| s.ack).chain(duplicates);
            self.fail_all(acks, &error);
            return Vec::new();
        }
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .wal_bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(stored.len());
        for (lsn, s) in stored {
            self.stats.batches_committed.fetch_add(1, Ordering::Relaxed);
            self.stats
                .fixes_committed
                .fetch_add(s.batch.len() as u64, Ordering::Relaxed);
            s.ack.complete(Ok(Committed::Stored { lsn }));
            out.push((lsn, s.batch));
        }
        self.answer_duplicates(duplicates);
        out
    }

    /// Runs the group through dedup: accepted batches get the next lsns and are encoded
    /// into `self.buf` (with the window each device had before, to undo a failed write);
    /// duplicates wait for the group's fsync; stale batches and devices over
    /// `dedup_devices_max` are answered now.
    fn admit(&mut self, group: Vec<Submission>) -> Admitted {
        self.buf.clear();
        let mut a = Admitted {
            stored: Vec::new(),
            duplicates: Vec::new(),
            undo: Vec::new(),
        };
        for s in group {
            let (device_id, batch_seq) = (s.batch.device_id, s.batch.batch_seq);
            let refused = match self.dedup.check(device_id, batch_seq) {
                Decision::Accept => {
                    a.undo
                        .push((device_id, self.dedup.observe(device_id, batch_seq)));
                    let lsn = self.next_lsn;
                    self.next_lsn += 1;
                    encode_record(&s.batch, lsn, &mut self.buf);
                    a.stored.push((lsn, s));
                    continue;
                }
                Decision::Duplicate => {
                    a.duplicates.push(s.ack);
                    continue;
                }
                Decision::Stale { window_low } => CommitError::StaleSequence {
                    device_id,
                    batch_seq,
                    window_low,
                },
                Decision::TableFull => CommitError::TooManyDevices {
                    devices_max: self.devices_max,
                },
            };
            self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            s.ack.complete(Err(refused));
        }
        a
    }

    fn answer_duplicates(&self, duplicates: Vec<Ack>) {
        for ack in duplicates {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            ack.complete(Ok(Committed::Duplicate));
        }
    }

    /// Rolls if needed, appends `self.buf`, syncs. On error returns what the
    /// group's callbacks get (and enters the failed state unless the disk is
    /// merely full).
    fn write_group(&mut self, first_lsn: u64) -> Result<(), CommitError> {
        if self.sink.segment_len() >= self.segment_bytes_max {
            if let Err(e) = self.sink.roll(first_lsn) {
                return Err(self.write_failed(&e));
            }
        }
        if let Err(e) = self.sink.append(&self.buf) {
            return Err(self.write_failed(&e));
        }
        if let Err(e) = self.sink.sync() {
            // Never retried: after a failed fsync the page cache may have
            // dropped the dirty pages and a later fsync could "succeed".
            let error = CommitError::WalFailed { errno: errno(&e) };
            self.enter_failed(error.clone(), &e);
            return Err(error);
        }
        Ok(())
    }

    fn write_failed(&mut self, e: &io::Error) -> CommitError {
        if is_disk_full(e) {
            match self.sink.truncate_to_good() {
                Ok(()) => {
                    tracing::warn!(error = %e, "WAL disk full: group refused, will retry on the next batch");
                    return CommitError::DiskFull;
                }
                Err(t) => {
                    let error = CommitError::WalFailed { errno: errno(&t) };
                    self.enter_failed(error.clone(), &t);
                    return error;
                }
            }
        }
        let error = CommitError::WalFailed { errno: errno(e) };
        self.enter_failed(error.clone(), e);
        error
    }
}

/// Group gathering limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    pub(crate) bytes_max: usize,
    pub(crate) delay_us: u64,
}

/// How the WAL thread ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalExit {
    /// The lsn the next record would have had.
    pub(crate) next_lsn: u64,
}

/// The WAL thread body.
pub(crate) fn run<S: LogSink>(
    mut gc: GroupCommit<S>,
    rx: Receiver<WalMsg>,
    writer: Sender<WriterMsg>,
    limits: GroupLimits,
    clock: &dyn Clock,
) -> WalExit {
    loop {
        let Ok(first) = rx.recv() else {
            // Every handle was dropped without shutdown: let the writer flush.
            break;
        };
        let mut group = Vec::new();
        let mut bytes = 0usize;
        let mut stop = None;
        match first {
            WalMsg::Submit(s) => {
                bytes += record_len(&s.batch);
                group.push(s);
            }
            WalMsg::Stop { abandon } => stop = Some(abandon),
        }
        if stop.is_none() {
            let deadline_us = clock.monotonic_us().saturating_add(limits.delay_us);
            while bytes < limits.bytes_max {
                match recv_before(&rx, clock, deadline_us) {
                    Recv::Msg(WalMsg::Submit(s)) => {
                        bytes += record_len(&s.batch);
                        group.push(s);
                    }
                    Recv::Msg(WalMsg::Stop { abandon }) => {
                        stop = Some(abandon);
                        break;
                    }
                    Recv::Deadline | Recv::Disconnected => break,
                }
            }
        }
        for (lsn, batch) in gc.commit(group) {
            if gc.failed.is_none() && writer.send(WriterMsg::Batch { lsn, batch }).is_err() {
                gc.fail_writer_gone();
            }
        }
        if let Some(abandon) = stop {
            if abandon {
                let _ = writer.send(WriterMsg::Abandon);
            }
            // Batches queued after the stop request are refused.
            while let Ok(msg) = rx.try_recv() {
                if let WalMsg::Submit(s) = msg {
                    s.ack.complete(Err(CommitError::ShuttingDown));
                }
            }
            break;
        }
    }
    WalExit {
        next_lsn: gc.next_lsn,
    }
}

/// One group after dedup (`GroupCommit::admit`).
struct Admitted {
    /// Accepted batches with their lsns, in lsn order (encoded into the group buffer).
    stored: Vec<(u64, Submission)>,
    /// Acks of duplicates, answered once the group is synced.
    duplicates: Vec<Ack>,
    /// Each accepted device's window before the group, to restore if the write fails.
    undo: Vec<(fix::DeviceId, Option<Window>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeSink {
        data: Vec<u8>,
        good: usize,
        fail_append: Option<i32>,
        fail_sync: bool,
        syncs: usize,
    }

    impl LogSink for FakeSink {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            if let Some(code) = self.fail_append.take() {
                // A partial write, then the error.
                self.data.extend_from_slice(&bytes[..bytes.len() / 2]);
                return Err(io::Error::from_raw_os_error(code));
            }
            self.data.extend_from_slice(bytes);
            self.good = self.data.len();
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.syncs += 1;
            if self.fail_sync {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        }
        fn truncate_to_good(&mut self) -> io::Result<()> {
            self.data.truncate(self.good);
            Ok(())
        }
        fn segment_len(&self) -> u64 {
            self.data.len() as u64
        }
        fn roll(&mut self, _first_lsn: u64) -> io::Result<()> {
            Ok(())
        }
    }

    type Log = Arc<Mutex<Vec<(u64, Result<Committed, CommitError>)>>>;

    fn sub(log: &Log, device_id: u64, seq: u64) -> Submission {
        let log = log.clone();
        Submission {
            batch: FixBatch {
                device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
                batch_seq: seq,
                received_at_ms: 1,
                fixes: fix::Fixes {
                    time_ms: vec![1],
                    lat_e7: vec![1],
                    lon_e7: vec![1],
                    ..fix::Fixes::default()
                },
                h3: Vec::new(),
            },
            ack: Ack::new(Box::new(move |r| log.lock().expect("lock").push((seq, r)))),
        }
    }

    fn gc() -> GroupCommit<FakeSink> {
        GroupCommit::new(
            FakeSink::default(),
            DedupTable::new(64, 2),
            1,
            u64::MAX,
            2,
            Arc::new(Stats::default()),
        )
    }

    #[test]
    fn duplicates_in_the_same_group_and_stale() {
        let log = Log::default();
        let mut gc = gc();
        let out = gc.commit(vec![
            sub(&log, 1, 100),
            sub(&log, 1, 100),
            sub(&log, 1, 101),
        ]);
        assert_eq!(out.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(gc.sink.syncs, 1);
        let got = std::mem::take(&mut *log.lock().expect("lock"));
        assert_eq!(
            got,
            vec![
                (100, Ok(Committed::Stored { lsn: 1 })),
                (101, Ok(Committed::Stored { lsn: 2 })),
                (100, Ok(Committed::Duplicate)),
            ]
        );
        let out = gc.commit(vec![
            sub(&log, 1, 30),
            sub(&log, 1, 101),
            sub(&log, 2, 1),
            sub(&log, 3, 1),
        ]);
        assert_eq!(out.len(), 1);
        let got = std::mem::take(&mut *log.lock().expect("lock"));
        assert_eq!(
            got,
            vec![
                (
                    30,
                    Err(CommitError::StaleSequence {
                        device_id: fix::DeviceId::try_from(1u64).expect("id"),
                        batch_seq: 30,
                        window_low: 38
                    })
                ),
                (1, Err(CommitError::TooManyDevices { devices_max: 2 })),
                (1, Ok(Committed::Stored { lsn: 3 })),
                (101, Ok(Committed::Duplicate)),
            ]
        );
        // A group of only duplicates needs no fsync.
        let syncs = gc.sink.syncs;
        assert!(gc.commit(vec![sub(&log, 1, 100)]).is_empty());
        assert_eq!(gc.sink.syncs, syncs);
    }

    #[test]
    fn disk_full_fails_the_group_and_undoes_it() {
        let log = Log::default();
        let mut gc = gc();
        gc.commit(vec![sub(&log, 1, 1)]);
        let good = gc.sink.data.clone();
        let dedup_before = gc.dedup.snapshot();
        gc.sink.fail_append = Some(libc::ENOSPC);
        assert!(
            gc.commit(vec![sub(&log, 1, 2), sub(&log, 2, 1), sub(&log, 1, 2)])
                .is_empty()
        );
        assert_eq!(gc.sink.data, good);
        assert_eq!(gc.dedup.snapshot(), dedup_before);
        assert_eq!(gc.next_lsn, 2);
        assert!(gc.failed.is_none());
        let got = std::mem::take(&mut *log.lock().expect("lock"));
        assert_eq!(got.len(), 4);
        assert!(
            got[1..]
                .iter()
                .all(|(_, r)| r == &Err(CommitError::DiskFull))
        );
        // The disk has room again: the same batches are accepted.
        let out = gc.commit(vec![sub(&log, 1, 2), sub(&log, 2, 1)]);
        assert_eq!(out.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn failed_fsync_is_final() {
        let log = Log::default();
        let mut gc = gc();
        gc.sink.fail_sync = true;
        assert!(gc.commit(vec![sub(&log, 1, 1)]).is_empty());
        gc.sink.fail_sync = false;
        assert!(gc.commit(vec![sub(&log, 1, 2)]).is_empty());
        let got = std::mem::take(&mut *log.lock().expect("lock"));
        let failed = Err(CommitError::WalFailed {
            errno: Some(libc::EIO),
        });
        assert_eq!(got, vec![(1, failed.clone()), (2, failed)]);
        assert_eq!(gc.sink.syncs, 1, "a failed fsync is never retried");
        assert!(gc.stats.wal_failed.load(Ordering::Relaxed));
    }

    #[test]
    fn dropped_ack_answers_shutting_down() {
        let log = Log::default();
        drop(sub(&log, 1, 9));
        assert_eq!(
            *log.lock().expect("lock"),
            vec![(9, Err(CommitError::ShuttingDown))]
        );
        let s = sub(&log, 1, 10);
        s.ack.disarm();
        assert_eq!(log.lock().expect("lock").len(), 1);
    }
}

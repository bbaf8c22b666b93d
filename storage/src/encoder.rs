//! The encoder thread: sorts, encodes and publishes sealed generations of rows.
//!
//! Contract:
//! - Receives `Sealed` generations from the writer thread one at a time (a
//!   rendezvous channel: the writer's hand-off waits while the previous
//!   generation is still being published) and publishes each with
//!   `Flusher::flush`: one file per partition, one Delta commit with
//!   `txn(POSITIONS_WRITER, to_lsn)`, then the checkpoint, then the covered WAL
//!   segments are deleted. A failed flush is retried every `flush_retry_ms`
//!   with the same generation until it succeeds or the storage stops.
//! - Runs at nice `storage.encoder_nice` (default 10): the sort and the zstd encoding of a whole
//!   generation are the largest bursts of CPU in the server, and on a small
//!   machine they must give way to the threads that receive batches, fsync the
//!   WAL and send acknowledgements. An ack never waits for this thread.
//! - Bounded memory: rows are converted to Arrow [`ENCODE_SLICE_ROWS`] at a
//!   time (the Parquet writer keeps only its open row group), the sort order
//!   buffer is reused, and the emptied row buffers go back to the writer.
//! - Never touches the WAL's open segment (it deletes only segments whose
//!   every record is covered by the checkpoint it wrote).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sys::Clock;
use sys::fs::Fs;

use crate::batch::RowBuffer;
use crate::checkpoint::{self, Checkpoint};
use crate::partition::part_file_name;
use crate::stats::Stats;
use crate::wait::sleep_ms;
use crate::writer::{
    FlushError, FlushOutcome, ParquetOptions, Sealed, WriterExit, WriterTiming,
    delete_covered_segments, io_at, writer_properties,
};

/// Rows converted to Arrow per `write` to the Parquet writer: small enough that
/// the per-slice arrays (about 90 bytes a row) stay out of the allocator's huge
/// allocations, large enough that the per-call overhead is negligible.
pub const ENCODE_SLICE_ROWS: usize = 16_384;

/// Publishes generations (everything of a flush after the rows were sealed).
pub(crate) struct Flusher {
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) positions_dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    pub(crate) parquet: ParquetOptions,
    pub(crate) checkpoint_lsn: u64,
    pub(crate) stats: Arc<Stats>,
    pub(crate) table: lake::Table,
    pub(crate) clock: Arc<dyn Clock>,
    /// The sort order of the partition being encoded (reused).
    pub(crate) order: Vec<u32>,
}

impl Flusher {
    /// Publishes `sealed`: every partition's file, ONE commit to the `positions` table
    /// (with `txn(POSITIONS_WRITER, to_lsn)`), the checkpoint, then deletes covered WAL
    /// segments. On success marks `sealed` published (`from_lsn = None`), so calling it
    /// again does nothing; on failure `sealed` is unchanged and the call can be repeated.
    pub(crate) fn flush(&mut self, sealed: &mut Sealed) -> Result<FlushOutcome, FlushError> {
        let Some(from_lsn) = sealed.from_lsn else {
            return Ok(FlushOutcome {
                checkpoint_lsn: self.checkpoint_lsn,
                ..FlushOutcome::default()
            });
        };
        let to_lsn = sealed.checkpoint.to_lsn;
        let now_ms = self.clock.now_ms();
        let mut outcome = FlushOutcome::default();
        let props = writer_properties(self.parquet).map_err(|source| FlushError::Parquet {
            path: self.positions_dir.clone(),
            source,
        })?;
        let mut adds = Vec::with_capacity(sealed.partitions.len());
        for (key, rows) in &sealed.partitions {
            rows.sort_order_into(&mut self.order);
            let slices = self
                .order
                .chunks(ENCODE_SLICE_ROWS)
                .map(|slice| rows.to_record_batch(slice));
            let add = self.table.write_file(
                &key.rel_path().to_string_lossy(),
                &part_file_name(from_lsn, to_lsn),
                key.partition_values(),
                slices,
                props.clone(),
                true,
                now_ms,
            )?;
            outcome.rows += rows.len() as u64;
            outcome.files.push(self.positions_dir.join(&add.path));
            adds.push(add);
        }
        let lsn = i64::try_from(to_lsn).unwrap_or(i64::MAX);
        self.table.commit(
            lake::Commit::append(adds).with_txn(crate::POSITIONS_WRITER, lsn),
            now_ms,
        )?;
        self.write_checkpoint(&sealed.checkpoint)?;
        sealed.from_lsn = None;
        self.checkpoint_lsn = to_lsn;
        outcome.checkpoint_lsn = to_lsn;
        self.stats
            .record_flush(outcome.files.len() as u64, outcome.rows);
        // Failing to delete old segments loses nothing: the next flush retries.
        if let Err(e) = delete_covered_segments(&*self.fs, &self.wal_dir, to_lsn, None) {
            tracing::warn!(error = %e, "could not delete WAL segments covered by the checkpoint");
        }
        Ok(outcome)
    }

    fn write_checkpoint(&self, cp: &Checkpoint) -> Result<(), FlushError> {
        checkpoint::write(&*self.fs, &self.wal_dir, cp).map_err(io_at(&self.wal_dir))
    }

    /// Flushes, retrying every `retry_ms` until it succeeds or `stop` is set.
    fn flush_until_ok(
        &mut self,
        sealed: &mut Sealed,
        retry_ms: u64,
        stop: &AtomicBool,
    ) -> Result<(), FlushError> {
        loop {
            match self.flush(sealed) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, retry_ms, "parquet flush failed; will retry, ingest is back-pressured meanwhile");
                    if stop.load(Ordering::Acquire) {
                        return Err(e);
                    }
                    sleep_ms(&*self.clock, retry_ms);
                }
            }
        }
    }

    /// The final flush on shutdown: `last` (possibly empty), then the checkpoint once
    /// more (the dedup windows as of the last batch), `shutdown_flush_attempts` tries.
    fn finish(mut self, mut last: Sealed, timing: WriterTiming) -> WriterExit {
        let mut published = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.finish_once(&mut last, &mut published) {
                Ok(o) => {
                    return WriterExit::Flushed {
                        checkpoint_lsn: o.checkpoint_lsn,
                        rows: o.rows,
                        files: o.files.len(),
                    };
                }
                Err(e) if attempt >= timing.shutdown_flush_attempts => {
                    tracing::error!(error = %e, "final parquet flush failed; the WAL keeps the data for replay");
                    return WriterExit::Failed(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "final parquet flush failed; retrying");
                    sleep_ms(&*self.clock, timing.flush_retry_ms);
                }
            }
        }
    }

    /// One attempt of [`Flusher::finish`]; `published` keeps the outcome of a flush
    /// that succeeded before its checkpoint failed, so a retry does not publish twice.
    fn finish_once(
        &mut self,
        last: &mut Sealed,
        published: &mut Option<FlushOutcome>,
    ) -> Result<FlushOutcome, FlushError> {
        let outcome = match published {
            Some(o) => o.clone(),
            None => published.insert(self.flush(last)?).clone(),
        };
        self.write_checkpoint(&Checkpoint {
            to_lsn: self.checkpoint_lsn,
            windows: last.checkpoint.windows.clone(),
        })?;
        Ok(outcome)
    }
}

/// A message to the encoder thread.
#[derive(Debug)]
enum EncodeMsg {
    /// Publish this generation (retrying until it succeeds or the storage stops).
    Flush(Sealed),
    /// Publish this last generation (possibly empty), write the final checkpoint, stop.
    Finish(Sealed),
}

/// The writer thread's handle on the encoder thread. Dropping the channel (abandon, or
/// the writer thread unwinding) stops the encoder after its current flush, unpublished
/// generations stay in the WAL for replay.
pub(crate) struct Encoder {
    tx: Option<Sender<EncodeMsg>>,
    spare_rx: Receiver<Vec<RowBuffer>>,
    handle: Option<JoinHandle<WriterExit>>,
}

impl Encoder {
    /// Spawns the encoder thread `hexflow-encoder` over `flusher`, at nice `nice`. `stop` ends
    /// the retries of a failing flush (shutdown, abandon).
    pub(crate) fn spawn(
        flusher: Flusher,
        timing: WriterTiming,
        nice: i32,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Encoder> {
        // Rendezvous: a hand-off completes only when the encoder takes the generation,
        // so at most one generation is being published while the writer fills the next.
        let (tx, rx) = crossbeam_channel::bounded(0);
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("hexflow-encoder".into())
            .spawn(move || run(flusher, &rx, &spare_tx, timing, nice, &stop))?;
        Ok(Encoder {
            tx: Some(tx),
            spare_rx,
            handle: Some(handle),
        })
    }

    /// Hands `sealed` over, waiting while the previous generation is being published.
    /// False when the encoder has stopped (a flush failed and the storage is stopping).
    pub(crate) fn flush(&self, sealed: Sealed) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(EncodeMsg::Flush(sealed)).is_ok())
    }

    /// Emptied row buffers of published generations, ready for reuse.
    pub(crate) fn spares(&self) -> impl Iterator<Item = RowBuffer> + '_ {
        self.spare_rx.try_iter().flatten()
    }

    /// Hands over the last generation and waits for the final flush and checkpoint.
    pub(crate) fn finish(mut self, last: Sealed) -> WriterExit {
        if let Some(tx) = self.tx.take() {
            // A stopped encoder is joined below and its exit reported.
            let _ = tx.send(EncodeMsg::Finish(last));
        }
        self.join()
    }

    /// Stops the encoder after its current flush, without a final one.
    pub(crate) fn abandon(self) -> WriterExit {
        let _ = self.join();
        WriterExit::Abandoned
    }

    /// Waits for the encoder thread; its exit is the writer's. A panic of the encoder is
    /// re-raised on the writer thread (the storage reports the writer as panicked).
    pub(crate) fn join(mut self) -> WriterExit {
        drop(self.tx.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(exit)) => exit,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => WriterExit::Abandoned,
        }
    }
}

/// The encoder thread body.
fn run(
    mut flusher: Flusher,
    rx: &Receiver<EncodeMsg>,
    spare_tx: &Sender<Vec<RowBuffer>>,
    timing: WriterTiming,
    nice: i32,
    stop: &AtomicBool,
) -> WriterExit {
    if let Err(e) = sys::thread::lower_priority(nice) {
        tracing::warn!(error = %e, "could not lower the encoder thread's priority");
    }
    loop {
        match rx.recv() {
            Ok(EncodeMsg::Flush(mut sealed)) => {
                if let Err(e) = flusher.flush_until_ok(&mut sealed, timing.flush_retry_ms, stop) {
                    return WriterExit::Failed(e);
                }
                recycle(sealed, spare_tx);
            }
            Ok(EncodeMsg::Finish(last)) => return flusher.finish(last, timing),
            Err(_) => return WriterExit::Abandoned,
        }
    }
}

/// Empties the published generation's buffers (keeping their capacity) and offers them
/// back to the writer; dropped when the writer has not taken the previous ones yet.
fn recycle(sealed: Sealed, spare_tx: &Sender<Vec<RowBuffer>>) {
    let spares: Vec<RowBuffer> = sealed
        .partitions
        .into_values()
        .map(|mut rows| {
            rows.clear();
            rows
        })
        .collect();
    let _ = spare_tx.try_send(spares);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixBatch;
    use parquet::arrow::ArrowWriter;

    /// `n` rows of one partition, scattered cells so the sort has work to do.
    fn rows(n: usize) -> RowBuffer {
        let mut rows = RowBuffer::default();
        for d in 0..(n / 50) as u64 {
            let batch = FixBatch {
                device_id: fix::DeviceId::try_from(d + 1).expect("valid device id"),
                batch_seq: 1,
                received_at_ms: 1_795_593_600_000,
                fixes: fix::Fixes {
                    time_ms: (0..50).map(|i| 1_795_593_000_000 + i * 1_000).collect(),
                    lat_e7: (0..50)
                        .map(|i| 485_000_000 + (d as i32 % 97) * 10_000 + i)
                        .collect(),
                    lon_e7: (0..50)
                        .map(|i| 23_000_000 - (d as i32 % 89) * 7_000 - i)
                        .collect(),
                    accuracy_cm: (0..50u32)
                        .map(|i| if i % 3 == 0 { crate::ABSENT_U32 } else { i })
                        .collect(),
                    ..fix::Fixes::default()
                },
                h3: Vec::new(),
            };
            let mut batch = batch;
            crate::index::index_batch(&mut batch, h3o::Resolution::Ten);
            rows.push_batch(&batch);
        }
        rows
    }

    fn encode(rows: &RowBuffer, order: &[u32], slice_rows: usize) -> Vec<u8> {
        let opts = ParquetOptions {
            zstd_level: 3,
            row_group_rows_max: 20_000,
        };
        let props = writer_properties(opts).expect("props");
        let mut w =
            ArrowWriter::try_new(Vec::new(), crate::batch::schema(), Some(props)).expect("writer");
        for slice in order.chunks(slice_rows) {
            w.write(&rows.to_record_batch(slice).expect("batch"))
                .expect("write");
        }
        w.into_inner().expect("finish")
    }

    #[test]
    fn slices_encode_the_same_file_as_one_batch() {
        // More rows than two slices and than one row group, not a multiple of either.
        let rows = rows(2 * ENCODE_SLICE_ROWS + 7_250);
        let mut order = Vec::new();
        rows.sort_order_into(&mut order);
        assert_eq!(order, rows.sort_order());
        let whole = encode(&rows, &order, order.len());
        let sliced = encode(&rows, &order, ENCODE_SLICE_ROWS);
        assert_eq!(sliced.len(), whole.len());
        assert!(sliced == whole, "slicing changed the Parquet bytes");
    }

    #[test]
    fn cleared_buffers_keep_their_memory() {
        let mut rows = rows(1_000);
        let capacity = rows.h3.capacity();
        rows.clear();
        assert!(rows.is_empty());
        assert_eq!(rows.h3.capacity(), capacity);
        assert_eq!(rows, RowBuffer::default());
    }
}

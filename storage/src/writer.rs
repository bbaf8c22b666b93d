//! Parquet files: encode, publish atomically, checkpoint, and the writer thread.
//!
//! Contract:
//! - [`encode_parquet`] / [`write_parquet`] are synchronous encoders with no
//!   side effect beyond the given sink.
//! - A flush writes, for every partition of one sealed generation, exactly one
//!   file `<partition>/part-<from_lsn:020>-<to_lsn:020>.parquet` holding every
//!   row of that partition sorted by `(h3, time)` (temporary name, fsync,
//!   rename, fsync of the directory and of the parent of every directory it
//!   creates), then adds all of them to the `positions` Delta table in ONE
//!   commit that also records `txn(POSITIONS_WRITER, to_lsn)`, and only then
//!   writes the checkpoint `to_lsn`. Generations are published one at a time,
//!   in lsn order. A failed flush keeps its generation unchanged, so the retry
//!   writes the same names with the same content, and a commit that landed
//!   although it reported a failure is recognised by its txn and not repeated.
//! - Bulk work never runs on the thread that receives batches from the WAL:
//!   the writer thread only appends rows to per-partition buffers and, every
//!   `flush_interval_ms` or before a batch would cross `flush_rows_max`, seals
//!   them into a `Sealed` generation for the encoder thread
//!   ([`crate::encoder`], lower CPU priority), which sorts, encodes and
//!   publishes it. While one generation is being published the writer buffers
//!   the next; if that one is due too, the writer waits for the encoder (that
//!   backpressure reaches the WAL thread, then `submit`). So at most
//!   `2 × flush_rows_max` rows are held: one generation buffering, one being
//!   published.
//! - Never deletes a WAL segment holding a record above the checkpoint.
//! - Every file operation goes through [`sys::fs::Fs`]. A retried flush
//!   never re-fsyncs a file whose fsync failed: it creates the `.tmp` file
//!   afresh (truncating it), so nothing relies on pages a failed fsync may
//!   have dropped; the checkpoint is likewise rewritten from scratch.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use crossbeam_channel::Receiver;
use h3o::Resolution;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sys::Clock;

use crate::batch::{COL_H3, COL_TIME, RowBuffer};
use crate::checkpoint::Checkpoint;
use crate::dedup::DedupTable;
use crate::encoder::Encoder;
use crate::partition::{PartitionKey, PartitionScheme};
use crate::wait::{Recv, deadline_after_ms, recv_before};
use crate::wal::list_segments;
use crate::{FixBatch, index};
use sys::fs::{Fs, SeqWriter, create_dir_durable};

/// How Parquet files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetOptions {
    /// zstd level, 1..=22.
    pub zstd_level: i32,
    /// Rows per row group, >= 1.
    pub row_group_rows_max: usize,
}

/// The writer properties storage uses: zstd, page-level statistics, row
/// groups of `row_group_rows_max`, sorting columns `(h3, time)` declared.
///
/// # Errors
/// An invalid zstd level.
pub fn writer_properties(opts: ParquetOptions) -> Result<WriterProperties, ParquetError> {
    writer_properties_sorted_by(opts, &[COL_H3, COL_TIME])
}

/// The same encoding as [`writer_properties`] (zstd, page-level statistics,
/// row groups of `row_group_rows_max`) for any table, declaring the rows
/// sorted ascending by the columns at `sorting_columns` (none: unsorted).
///
/// # Errors
/// An invalid zstd level.
pub fn writer_properties_sorted_by(
    opts: ParquetOptions,
    sorting_columns: &[usize],
) -> Result<WriterProperties, ParquetError> {
    let sorting: Vec<SortingColumn> = sorting_columns
        .iter()
        .map(|&c| SortingColumn {
            column_idx: i32::try_from(c).unwrap_or(i32::MAX),
            descending: false,
            nulls_first: false,
        })
        .collect();
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(opts.zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows_max.max(1)))
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting))
        .build())
}

/// Encodes `batch` as one Parquet file into `out` and returns `out`.
///
/// # Errors
/// Encoding or writing to `out` failed.
pub fn write_parquet<W: Write + Send>(
    out: W,
    batch: &RecordBatch,
    opts: ParquetOptions,
) -> Result<W, ParquetError> {
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(writer_properties(opts)?))?;
    writer.write(batch)?;
    writer.into_inner()
}

/// Encodes `batch` as one Parquet file in memory.
///
/// # Errors
/// Encoding failed.
pub fn encode_parquet(batch: &RecordBatch, opts: ParquetOptions) -> Result<Vec<u8>, ParquetError> {
    write_parquet(Vec::new(), batch, opts)
}

/// Bytes buffered before each write of a Parquet file (one file operation each).
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// Why a flush failed. The buffer is kept; the flush will be retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// A file or directory operation failed.
    #[error("flush IO on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Parquet encoding failed.
    #[error("parquet encoding of {path}: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The error.
        #[source]
        source: ParquetError,
    },
    /// Arrow rejected the columns (a bug).
    #[error("arrow batch: {0}")]
    Arrow(#[from] ArrowError),
    /// Writing a data file or committing it to the table failed.
    #[error("positions table: {0}")]
    Table(#[from] lake::TableError),
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FlushError + '_ {
    move |source| FlushError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Publishes one Parquet file `root/rel/file_name` with the discipline of a
/// flush: creates `rel` durably ([`create_dir_durable`]), writes
/// `.<file_name>.tmp` afresh (truncating a leftover), encodes `batches` into
/// it with `props` (one `write` per batch, so memory stays at one batch plus
/// the open row group), fsyncs it, renames it to `file_name` (replacing a file
/// of that name) and fsyncs the directory. Returns the published path.
///
/// On error nothing is published under `file_name` by this call; a retry with
/// the same arguments writes the same name.
///
/// # Errors
/// [`FlushError::Io`] naming the path, [`FlushError::Parquet`] when encoding
/// fails, [`FlushError::Arrow`] when `batches` yields an error.
pub fn publish_parquet(
    fs: &dyn Fs,
    root: &Path,
    rel: &Path,
    file_name: &str,
    schema: arrow::datatypes::SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch, ArrowError>>,
    props: WriterProperties,
) -> Result<PathBuf, FlushError> {
    create_dir_durable(fs, root, rel).map_err(io_at(root))?;
    let dir = root.join(rel);
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let path = dir.join(file_name);
    let file = fs.create(&tmp).map_err(io_at(&tmp))?;
    let out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, SeqWriter::new(file));
    let parquet_err = |source| FlushError::Parquet {
        path: tmp.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(out, schema, Some(props)).map_err(parquet_err)?;
    for batch in batches {
        writer.write(&batch?).map_err(parquet_err)?;
    }
    let mut out = writer.into_inner().map_err(parquet_err)?;
    out.flush().map_err(io_at(&tmp))?;
    let mut file = out
        .into_inner()
        .map_err(|e| FlushError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?
        .into_file();
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(io_at(&path))?;
    fs.sync_dir(&dir).map_err(io_at(&dir))?;
    Ok(path)
}

/// Deletes every segment whose records all have `lsn <= to_lsn`. The last
/// segment is only considered when `next_lsn` (the lsn its next record would
/// get) is known, i.e. when no WAL thread is appending to it.
///
/// # Errors
/// Listing, removing or syncing failed.
pub fn delete_covered_segments(
    fs: &dyn Fs,
    wal_dir: &Path,
    to_lsn: u64,
    next_lsn: Option<u64>,
) -> io::Result<usize> {
    let segments = list_segments(fs, wal_dir)?;
    let mut deleted = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        // The first lsn after this segment's records.
        let end = match segments.get(i + 1) {
            Some(&(next_first, _)) => Some(next_first),
            None => next_lsn,
        };
        if end.is_some_and(|end| end <= to_lsn.saturating_add(1)) {
            fs.remove_file(path)?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        fs.sync_dir(wal_dir)?;
    }
    Ok(deleted)
}

/// Whether a batch of `incoming` rows must wait for a flush first, given
/// `buffered` rows and the bound `rows_max`. Pure.
pub fn needs_flush_before(buffered: usize, incoming: usize, rows_max: usize) -> bool {
    buffered > 0 && buffered.saturating_add(incoming) > rows_max
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Files published.
    pub files: Vec<PathBuf>,
    /// Rows written.
    pub rows: u64,
    /// The checkpoint written (unchanged when nothing was buffered).
    pub checkpoint_lsn: u64,
}

/// Buffers rows per partition (the writer thread's side of a flush).
///
/// The writer thread only appends rows; every `flush_interval_ms` (or when
/// `flush_rows_max` would be crossed) it seals what it holds into a
/// [`Sealed`] generation and hands it to the encoder thread
/// ([`crate::encoder`]), then keeps buffering into fresh (recycled) buffers.
pub(crate) struct Writer {
    pub(crate) scheme: PartitionScheme,
    pub(crate) resolution: Resolution,
    pub(crate) flush_rows_max: usize,
    pub(crate) partitions: BTreeMap<PartitionKey, RowBuffer>,
    pub(crate) rows: usize,
    pub(crate) from_lsn: Option<u64>,
    pub(crate) to_lsn: u64,
    pub(crate) dedup: DedupTable,
    /// Emptied buffers the encoder gave back, reused for new partitions so a
    /// flush cycle allocates no fresh row memory once the buffers have grown.
    pub(crate) spare: Vec<RowBuffer>,
}

/// Spare row buffers kept for reuse (one per partition of a generation; more are dropped).
const SPARE_BUFFERS_MAX: usize = 256;

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("rows", &self.rows)
            .field("from_lsn", &self.from_lsn)
            .field("to_lsn", &self.to_lsn)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Adds a logged batch. The caller has sealed first when
    /// [`needs_flush_before`] said so.
    pub(crate) fn append(&mut self, lsn: u64, mut batch: FixBatch) {
        index::index_batch(&mut batch, self.resolution);
        self.dedup.observe(batch.device_id, batch.batch_seq);
        let (partitions, spare) = (&mut self.partitions, &mut self.spare);
        let mut last: Option<(PartitionKey, &mut RowBuffer)> = None;
        for i in 0..batch.len() {
            let key = PartitionKey::for_fix(self.scheme, batch.fixes.time_ms[i], batch.h3[i]);
            let rows = match last {
                Some((k, rows)) if k == key => rows,
                _ => partitions
                    .entry(key)
                    .or_insert_with(|| spare.pop().unwrap_or_default()),
            };
            rows.push_fix(&batch, i);
            last = Some((key, rows));
        }
        self.rows += batch.len();
        self.from_lsn.get_or_insert(lsn);
        self.to_lsn = lsn;
    }

    /// Takes every buffered row as one generation (empty when nothing is
    /// buffered), with the checkpoint that publishing it will write.
    pub(crate) fn seal(&mut self) -> Sealed {
        let sealed = Sealed {
            partitions: std::mem::take(&mut self.partitions),
            from_lsn: self.from_lsn.take(),
            checkpoint: Checkpoint {
                to_lsn: self.to_lsn,
                windows: self.dedup.snapshot(),
            },
        };
        self.rows = 0;
        sealed
    }

    /// Seals and hands the generation to the encoder (waiting while the
    /// previous one is still being published), then takes back the emptied
    /// buffers. False when the encoder has stopped (its flush failed for good).
    fn hand_off(&mut self, encoder: &Encoder) -> bool {
        let sealed = self.seal();
        if !encoder.flush(sealed) {
            return false;
        }
        self.spare.extend(encoder.spares());
        self.spare.truncate(SPARE_BUFFERS_MAX);
        true
    }
}

/// One sealed generation of rows: what one flush publishes (one file per
/// partition, one Delta commit, then `checkpoint`). Immutable once sealed, so
/// a retried flush writes the same names with the same content.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) partitions: BTreeMap<PartitionKey, RowBuffer>,
    /// The first lsn in it; `None` when it holds no row (nothing to publish).
    pub(crate) from_lsn: Option<u64>,
    /// `to_lsn` = the last lsn in it; the dedup windows as of that lsn.
    pub(crate) checkpoint: Checkpoint,
}

/// A message to the writer thread.
#[derive(Debug)]
// Nearly every message is the large variant: boxing would add one allocation
// per batch and save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WriterMsg {
    /// A batch that is durable in the WAL at `lsn`.
    Batch {
        /// Its lsn.
        lsn: u64,
        /// The batch.
        batch: FixBatch,
    },
    /// No more batches: flush everything, checkpoint, stop.
    Finish,
    /// Stop now without flushing (simulated crash).
    Abandon,
}

/// How the writer thread ended.
#[derive(Debug)]
pub(crate) enum WriterExit {
    /// Finished (or channel closed): everything flushed and checkpointed.
    Flushed {
        /// The final checkpoint.
        checkpoint_lsn: u64,
        /// Rows of the last flush.
        rows: u64,
        /// Files of the last flush.
        files: usize,
    },
    /// Stopped on request without flushing.
    Abandoned,
    /// The final flush failed; the WAL still holds everything not checkpointed.
    Failed(FlushError),
}

/// Timing of the writer and encoder threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterTiming {
    pub(crate) flush_interval_ms: u64,
    pub(crate) flush_retry_ms: u64,
    pub(crate) shutdown_flush_attempts: u32,
}

impl Writer {
    /// The writer thread body: buffer, seal on the interval or the row bound,
    /// hand off; on `Finish` the last generation goes out with the final
    /// checkpoint and the encoder's exit is the writer's.
    pub(crate) fn run(
        mut self,
        rx: Receiver<WriterMsg>,
        encoder: Encoder,
        timing: WriterTiming,
        clock: Arc<dyn Clock>,
    ) -> WriterExit {
        let clock = &*clock;
        let mut deadline_us = deadline_after_ms(clock, timing.flush_interval_ms);
        loop {
            match recv_before(&rx, clock, deadline_us) {
                Recv::Msg(WriterMsg::Batch { lsn, batch }) => {
                    if needs_flush_before(self.rows, batch.len(), self.flush_rows_max) {
                        if !self.hand_off(&encoder) {
                            return encoder.join();
                        }
                        deadline_us = deadline_after_ms(clock, timing.flush_interval_ms);
                    }
                    self.append(lsn, batch);
                }
                Recv::Msg(WriterMsg::Abandon) => return encoder.abandon(),
                Recv::Msg(WriterMsg::Finish) | Recv::Disconnected => {
                    let last = self.seal();
                    return encoder.finish(last);
                }
                Recv::Deadline => {
                    if self.from_lsn.is_some() && !self.hand_off(&encoder) {
                        return encoder.join();
                    }
                    deadline_us = deadline_after_ms(clock, timing.flush_interval_ms);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{record_batch_from_batches, schema};
    use arrow::array::{Array, Float32Array, Int64Array};
    use arrow::datatypes::{DataType, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn moving(device_id: u64, n: usize) -> FixBatch {
        let mut b = FixBatch {
            device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
            batch_seq: 1,
            received_at_ms: 1_795_593_600_000,
            fixes: fix::Fixes {
                time_ms: (0..n as i64)
                    .rev()
                    .map(|i| 1_795_593_000_000 + i * 1_000)
                    .collect(),
                lat_e7: (0..n as i32).map(|i| 485_000_000 + i * 10_000).collect(),
                lon_e7: (0..n as i32).map(|i| 23_000_000 - i * 7_000).collect(),
                accuracy_cm: (0..n as u32)
                    .map(|i| {
                        if i % 3 == 0 {
                            crate::ABSENT_U32
                        } else {
                            i * 10
                        }
                    })
                    .collect(),
                ..fix::Fixes::default()
            },
            h3: Vec::new(),
        };
        index::index_batch(&mut b, Resolution::Ten);
        b
    }

    #[test]
    fn parquet_round_trip_types_and_order() {
        let batches = vec![moving(1, 300), moving(2, 200)];
        let rb = record_batch_from_batches(&batches).expect("valid");
        let opts = ParquetOptions {
            zstd_level: 3,
            row_group_rows_max: 128,
        };
        let bytes = encode_parquet(&rb, opts).expect("encode");
        let bytes = bytes::Bytes::from(bytes);
        let reader = SerializedFileReader::new(bytes.clone()).expect("parquet");
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 4); // 500 rows / 128
        for rg in meta.row_groups() {
            // The level is not recorded in the file, only the codec.
            assert!(matches!(
                rg.column(COL_H3).compression(),
                Compression::ZSTD(_)
            ));
            assert!(rg.column(COL_H3).statistics().is_some());
            assert_eq!(rg.sorting_columns().map(Vec::len), Some(2));
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("reader");
        assert_eq!(builder.schema(), &schema());
        let read: Vec<RecordBatch> = builder
            .build()
            .expect("build")
            .collect::<Result<_, _>>()
            .expect("read");
        let read = arrow::compute::concat_batches(&schema(), &read).expect("concat");
        assert_eq!(read, rb);
        assert_eq!(
            read.schema().field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let h3 = read
            .column(COL_H3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert!(h3.values().windows(2).all(|w| w[0] <= w[1]));
        let mut expected: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.h3.iter().map(|&c| c as i64))
            .collect();
        expected.sort_unstable();
        assert_eq!(h3.values().to_vec(), expected);
        let acc = read
            .column(6)
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        assert_eq!(acc.null_count(), 100 + 67);
    }

    #[test]
    fn flush_bound_edges() {
        assert!(!needs_flush_before(0, 10, 5));
        assert!(!needs_flush_before(5, 5, 10));
        assert!(needs_flush_before(5, 6, 10));
        assert!(!needs_flush_before(9, 0, 9));
    }

    #[test]
    fn segment_deletion_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real: Arc<dyn Fs> = Arc::new(sys::fs::RealFs);
        for first in [1u64, 11, 21] {
            crate::wal::FileSink::create(real.clone(), dir.path(), first, true).expect("segment");
        }
        let fs = &*real;
        // Records 1..=10 in the first, 11..=20 in the second.
        assert_eq!(
            delete_covered_segments(fs, dir.path(), 9, None).expect("io"),
            0
        );
        assert_eq!(
            delete_covered_segments(fs, dir.path(), 10, None).expect("io"),
            1
        );
        assert_eq!(
            delete_covered_segments(fs, dir.path(), 25, None).expect("io"),
            1
        );
        // The last one only when its end is known.
        assert_eq!(
            delete_covered_segments(fs, dir.path(), 25, Some(27)).expect("io"),
            0
        );
        assert_eq!(
            delete_covered_segments(fs, dir.path(), 25, Some(26)).expect("io"),
            1
        );
        assert!(list_segments(fs, dir.path()).expect("io").is_empty());
    }
}

//! Where table files live: a small object-store trait and its local implementation.
//!
//! Contract:
//! - Paths are relative, `/`-separated, without `.` or `..` components (checked:
//!   [`StoreError::BadPath`]); the store maps them under its root.
//! - [`Store::put`] replaces an object atomically and durably: a reader sees the old or the
//!   new bytes, whole; once it returns, the new bytes survive a power loss.
//! - [`Store::put_if_absent`] creates an object atomically and durably only if no object of
//!   that name exists ([`StoreError::AlreadyExists`] otherwise): the one primitive a Delta
//!   commit needs (two writers racing for version `N`: exactly one wins).
//! - [`Store::writer`] streams a large object; it is invisible until
//!   [`ObjectWriter::finish`] publishes it atomically and durably (a dropped writer publishes
//!   nothing). [`FsStore`]'s writer `fdatasync`s its temporary file after every
//!   [`WRITEBACK_CHUNK_BYTES`], so a large file never puts more than that in front of
//!   another file's fsync (the WAL's, which acks wait for) on the same disk.
//! - [`Store::delete_many`] is durable once it returns; deleting an absent object is not an
//!   error.
//!
//! [`FsStore`] maps every operation onto `sys::fs::Fs` (so the fault-injection suites crash
//! it at every step): put = temporary file, fsync, rename, fsync directory; put-if-absent =
//! temporary file, fsync, hard link to the final name (fails if it exists), remove the
//! temporary name, fsync directory. Temporary names start with `.` and end with `.tmp`,
//! carry the process id and a counter, and are never listed as table files.

use std::fmt::Debug;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sys::fs::{Fs, SeqWriter, create_dir_durable};

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Path relative to the store root.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object of that name.
    #[error("{path}: not found")]
    NotFound {
        /// The path.
        path: String,
    },
    /// `put_if_absent` on a name that exists.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A path that is empty, absolute or has `.`/`..` components.
    #[error("{path:?} is not a relative object path")]
    BadPath {
        /// The path.
        path: String,
    },
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A remote object store failed.
    #[error("{path}: object store: {source}")]
    Remote {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// A streaming upload; nothing is visible until [`ObjectWriter::finish`].
pub trait ObjectWriter: Write + Send {
    /// Publishes the object atomically and durably; returns its size.
    ///
    /// # Errors
    /// The object is then not published.
    fn finish(self: Box<Self>) -> Result<u64, StoreError>;
}

/// The storage a lake lives on (see the module contract).
pub trait Store: Send + Sync + Debug {
    /// Reads a whole object.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a failure.
    fn get(&self, path: &str) -> Result<Vec<u8>, StoreError>;
    /// Replaces (or creates) an object atomically and durably.
    ///
    /// # Errors
    /// The old content (if any) is then still in place.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Creates an object atomically and durably if no object has that name.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`], or a failure (the object may then exist or not; a
    /// caller finds out by reading it).
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Starts a streaming upload of `path`.
    ///
    /// # Errors
    /// A failure to start.
    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;
    /// Every object whose path starts with `prefix/` (recursively), sorted by path.
    /// An absent prefix lists nothing.
    ///
    /// # Errors
    /// A failure.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deletes objects durably; absent ones are skipped.
    ///
    /// # Errors
    /// A failure (some objects may be deleted).
    fn delete_many(&self, paths: &[String]) -> Result<(), StoreError>;
    /// Where readers find the root: `file:///abs/dir/` or `s3://bucket/prefix/`.
    fn url(&self) -> String;
    /// The local directory of the root, when the store is a local file system.
    fn local_root(&self) -> Option<&Path>;
}

/// Checks a relative object path.
///
/// # Errors
/// [`StoreError::BadPath`].
pub fn check_path(path: &str) -> Result<(), StoreError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(StoreError::BadPath {
            path: path.to_string(),
        })
    } else {
        Ok(())
    }
}

/// Deepest directory nesting [`FsStore::list`] descends (tables use at most 4).
pub const LIST_DEPTH_MAX: usize = 8;
/// Bytes buffered before each write of a streamed object (one file operation each).
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// A streamed object's temporary file is synced after every this many bytes: writing a
/// 10+ MB Parquet file and syncing it once at the end queued all of it on the disk at once,
/// and every WAL `fdatasync` issued meanwhile (and so every ack) waited behind it.
pub const WRITEBACK_CHUNK_BYTES: u64 = 1 << 20;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A [`Store`] on a local directory through [`sys::fs::Fs`].
#[derive(Debug, Clone)]
pub struct FsStore {
    fs: Arc<dyn Fs>,
    root: PathBuf,
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::NotFound {
            path: path.to_string(),
        },
        io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
            path: path.to_string(),
        },
        _ => StoreError::Io {
            path: path.to_string(),
            source,
        },
    }
}

impl FsStore {
    /// A store rooted at `root` (which must exist).
    pub fn new(fs: Arc<dyn Fs>, root: impl Into<PathBuf>) -> FsStore {
        FsStore {
            fs,
            root: root.into(),
        }
    }

    /// The file system.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// The local path of an object.
    pub fn local_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Creates the parent directories of `path` durably and returns
    /// `(directory, temporary path, final path)`.
    fn prepare(&self, path: &str) -> Result<(PathBuf, PathBuf, PathBuf), StoreError> {
        check_path(path)?;
        let rel = Path::new(path);
        let parent = rel.parent().unwrap_or(Path::new(""));
        create_dir_durable(&*self.fs, &self.root, parent).map_err(io_err(path))?;
        let dir = self.root.join(parent);
        let name = rel
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        Ok((dir, tmp, self.root.join(rel)))
    }

    fn write_synced(&self, tmp: &Path, bytes: &[u8], path: &str) -> Result<(), StoreError> {
        let written = self.fs.create(tmp).and_then(|mut file| {
            file.write_all_at(bytes, 0)?;
            file.sync_all()
        });
        written.map_err(|e| {
            // Best effort: a leftover is removed on open or by vacuum.
            let _ = self.fs.remove_file(tmp);
            io_err(path)(e)
        })
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Vec<ObjectMeta>) -> Result<(), StoreError> {
        let entries = match self.fs.list_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&dir.to_string_lossy())(e)),
        };
        for entry in entries {
            if entry.is_dir {
                if depth < LIST_DEPTH_MAX {
                    self.walk(&entry.path, depth + 1, out)?;
                }
                continue;
            }
            let Ok(rel) = entry.path.strip_prefix(&self.root) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let meta = match self.fs.metadata(&entry.path) {
                Ok(m) => m,
                // Deleted between the listing and the stat.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&rel)(e)),
            };
            out.push(ObjectMeta {
                path: rel,
                size: meta.len,
                modified_ms: meta.modified_ms,
            });
        }
        Ok(())
    }
}

impl Store for FsStore {
    fn get(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        check_path(path)?;
        self.fs.read(&self.root.join(path)).map_err(io_err(path))
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (dir, tmp, target) = self.prepare(path)?;
        self.write_synced(&tmp, bytes, path)?;
        if let Err(e) = self.fs.rename(&tmp, &target) {
            let _ = self.fs.remove_file(&tmp);
            return Err(io_err(path)(e));
        }
        self.fs.sync_dir(&dir).map_err(io_err(path))
    }

    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (dir, tmp, target) = self.prepare(path)?;
        self.write_synced(&tmp, bytes, path)?;
        let linked = self.fs.hard_link(&tmp, &target).map_err(io_err(path));
        // The temporary name goes either way; a crash before this leaves a `.tmp` file
        // that vacuum removes.
        let removed = self.fs.remove_file(&tmp).map_err(io_err(path));
        linked?;
        removed?;
        self.fs.sync_dir(&dir).map_err(io_err(path))
    }

    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let (dir, tmp, target) = self.prepare(path)?;
        let file = self.fs.create(&tmp).map_err(io_err(path))?;
        Ok(Box::new(FsWriter {
            fs: self.fs.clone(),
            out: Some(BufWriter::with_capacity(
                WRITE_BUFFER_BYTES,
                SeqWriter::new(file),
            )),
            written: 0,
            unsynced: 0,
            dir,
            tmp,
            target,
            path: path.to_string(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_path(prefix)?;
        let mut out = Vec::new();
        self.walk(&self.root.join(prefix), 0, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete_many(&self, paths: &[String]) -> Result<(), StoreError> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in paths {
            check_path(path)?;
            let local = self.root.join(path);
            match self.fs.remove_file(&local) {
                Ok(()) => {
                    if let Some(d) = local.parent() {
                        dirs.insert(d.to_path_buf());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        for d in dirs {
            self.fs.sync_dir(&d).map_err(io_err(&d.to_string_lossy()))?;
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!("file://{}/", self.root.display())
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

struct FsWriter {
    fs: Arc<dyn Fs>,
    out: Option<BufWriter<SeqWriter>>,
    written: u64,
    /// Bytes written since the last sync of the temporary file.
    unsynced: u64,
    dir: PathBuf,
    tmp: PathBuf,
    target: PathBuf,
    path: String,
}

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer finished"))?;
        let n = out.write(buf)?;
        self.written += n as u64;
        self.unsynced += n as u64;
        if self.unsynced >= WRITEBACK_CHUNK_BYTES {
            // A failed sync fails the write: the caller drops the writer (the temporary
            // file is removed) and a retry writes the object afresh.
            out.flush()?;
            out.get_mut().sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsWriter {
    fn publish(&mut self) -> io::Result<()> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("writer finished"))?;
        out.flush()?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?.into_file();
        file.sync_all()?;
        drop(file);
        self.fs.rename(&self.tmp, &self.target)
    }
}

impl ObjectWriter for FsWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, StoreError> {
        let path = self.path.clone();
        if let Err(e) = self.publish() {
            let _ = self.fs.remove_file(&self.tmp);
            return Err(io_err(&path)(e));
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(&path))?;
        Ok(self.written)
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Abandoned before finish (an encoding error): nothing may stay behind.
        if self.out.take().is_some() {
            let _ = self.fs.remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::sim::SimFs;

    fn store() -> (SimFs, FsStore) {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/lake")).expect("mkdir");
        let store = FsStore::new(Arc::new(fs.clone()), "/lake");
        (fs, store)
    }

    #[test]
    fn put_if_absent_has_one_winner_and_leaves_no_temporary() {
        let (fs, s) = store();
        s.put_if_absent("t/_delta_log/0.json", b"first")
            .expect("first");
        let e = s
            .put_if_absent("t/_delta_log/0.json", b"second")
            .expect_err("taken");
        assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
        assert_eq!(s.get("t/_delta_log/0.json").expect("read"), b"first");
        assert_eq!(fs.files_under(Path::new("/lake")).len(), 1);
        let listed = s.list("t").expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "t/_delta_log/0.json");
        assert_eq!(listed[0].size, 5);
    }

    #[test]
    fn streamed_object_is_invisible_until_finished() {
        let (_, s) = store();
        let mut w = s.writer("t/a/b.parquet").expect("writer");
        w.write_all(b"abc").expect("write");
        assert!(
            s.get("t/a/b.parquet")
                .expect_err("invisible")
                .is_not_found()
        );
        assert_eq!(w.finish().expect("finish"), 3);
        assert_eq!(s.get("t/a/b.parquet").expect("read"), b"abc");
        s.delete_many(&["t/a/b.parquet".into(), "t/absent".into()])
            .expect("delete");
        assert!(s.list("t").expect("list").is_empty());
    }

    #[test]
    fn bad_paths_are_refused() {
        let (_, s) = store();
        for p in ["", "/abs", "a/../b", "a//b", "./a"] {
            assert!(matches!(s.get(p), Err(StoreError::BadPath { .. })), "{p}");
        }
    }

    #[test]
    fn put_if_absent_is_old_or_new_at_every_crash_point() {
        for crash_at in 0..12 {
            for seed in 0..6 {
                let (fs, s) = store();
                fs.crash_at_op(fs.ops() + crash_at);
                let done = s.put_if_absent("t/_delta_log/1.json", b"commit").is_ok();
                let image = FsStore::new(Arc::new(fs.crash_image(seed)), "/lake");
                match image.get("t/_delta_log/1.json") {
                    Ok(bytes) => assert_eq!(bytes, b"commit", "crash {crash_at} seed {seed}"),
                    Err(e) => {
                        assert!(e.is_not_found());
                        assert!(
                            !done,
                            "crash {crash_at} seed {seed}: acknowledged, then lost"
                        );
                    }
                }
            }
        }
    }
}

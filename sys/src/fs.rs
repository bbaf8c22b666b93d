//! Every durable file operation of hexflow, behind a small trait.
//!
//! Contract: every write, fsync, rename, directory fsync, truncation and
//! removal that hexflow performs on its data directory (WAL, Parquet,
//! checkpoint, silence snapshot, events, TLS and secret files) goes through
//! [`Fs`] (and the [`FsFile`] handles it returns), so tests can count them, fail
//! any one of them, or simulate a power loss at any one of them
//! ([`crate::sim::SimFs`]). [`RealFs`] maps each call to exactly one std call
//! (one syscall, except `write_all_at` which loops on short writes), creates
//! files with mode `0600` and directories with mode `0700` whatever the umask
//! adds (location data is personal data: no other local user reads it).
//! Nothing here decides policy: the callers decide what a failure means.
//!
//! The two durable idioms are written once, here: [`create_dir_durable`]
//! (create each missing component, fsync its parent) and [`write_atomic`]
//! (temporary file, fsync, rename over the target, fsync the directory).

use std::fmt::Debug;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open, writable file.
pub trait FsFile: Send + Debug {
    /// Writes all of `buf` at `offset` (positional, no shared cursor).
    ///
    /// # Errors
    /// The write failed; a prefix of `buf` may have been written.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data (and the size) are durable.
    ///
    /// # Errors
    /// Whether the data reached the disk is unknown; never retry.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`: data and metadata are durable.
    ///
    /// # Errors
    /// Whether the data reached the disk is unknown; never retry.
    fn sync_all(&mut self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    ///
    /// # Errors
    /// The truncation failed.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The file's current length in bytes (what an append writes after). Not a mutating
    /// operation: never counted or failed by [`crate::sim::SimFs`].
    ///
    /// # Errors
    /// The length could not be read.
    fn len_bytes(&self) -> io::Result<u64>;
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Full path of the entry.
    pub path: PathBuf,
    /// File name (entries whose name is not UTF-8 are skipped by storage).
    pub name: String,
    /// True for a directory.
    pub is_dir: bool,
}

/// The file system storage runs on.
pub trait Fs: Send + Sync + Debug {
    /// Creates one directory (`AlreadyExists` if it exists). Not durable until
    /// the parent is synced.
    ///
    /// # Errors
    /// Any IO failure.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its missing parents (not durable: used only
    /// for the data directory itself, which the operator provides).
    ///
    /// # Errors
    /// Any IO failure.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Lists a directory. Entries whose name is not UTF-8 are omitted.
    ///
    /// # Errors
    /// Any IO failure.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Reads a whole file.
    ///
    /// # Errors
    /// Any IO failure (`NotFound` when absent).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates (or truncates) a file for writing.
    ///
    /// # Errors
    /// Any IO failure.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for writing (no truncation).
    ///
    /// # Errors
    /// Any IO failure.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Atomically renames `from` to `to`, replacing `to`. Not durable until
    /// the directory is synced.
    ///
    /// # Errors
    /// Any IO failure.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Not durable until the directory is synced.
    ///
    /// # Errors
    /// Any IO failure.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Fsyncs a directory: entries created, renamed or removed in it are durable.
    ///
    /// # Errors
    /// Any IO failure.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Gives the file `from` a second name `to`, failing with `AlreadyExists`
    /// when `to` exists: the atomic "publish if absent" of a finished file (a
    /// table commit). Not durable until the directory is synced.
    ///
    /// # Errors
    /// `AlreadyExists` when `to` exists, any other IO failure.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Size and modification time of a file (read-only, not counted as an operation).
    ///
    /// # Errors
    /// Any IO failure (`NotFound` when absent).
    fn metadata(&self, path: &Path) -> io::Result<FileMeta>;
    /// Takes an exclusive advisory lock on the file `path` (created if missing), held until
    /// the returned guard is dropped or the process ends. Never blocks.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] when another holder (another process, or another guard
    /// in this one) has it; any IO failure creating the file.
    fn lock_exclusive(&self, path: &Path) -> io::Result<FsLock>;
}

/// What [`Fs::metadata`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Length in bytes.
    pub len: u64,
    /// Last modification, Unix milliseconds.
    pub modified_ms: i64,
}

/// An exclusive lock taken with [`Fs::lock_exclusive`]; dropping it releases the lock.
pub struct FsLock {
    _held: Box<dyn Send + Sync>,
    path: PathBuf,
}

impl FsLock {
    /// A lock held by `held` (released when it drops).
    pub fn new(path: PathBuf, held: Box<dyn Send + Sync>) -> Self {
        FsLock { _held: held, path }
    }
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Debug for FsLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsLock").field("path", &self.path).finish()
    }
}

/// Mode of every file [`RealFs`] creates: owner read/write only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory [`RealFs`] creates: owner only.
pub const DIR_MODE: u32 = 0o700;

/// [`Fs`] over the operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FsFile for RealFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
}

impl Fs for RealFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        DirBuilder::new().mode(DIR_MODE).create(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        DirBuilder::new()
            .mode(DIR_MODE)
            .recursive(true)
            .create(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            out.push(DirEntry {
                path: entry.path(),
                name,
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        let m = fs::metadata(path)?;
        let modified_ms = m
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(FileMeta {
            len: m.len(),
            modified_ms,
        })
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<FsLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(FsLock::new(path.to_path_buf(), Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// An [`io::Write`] appending to an [`FsFile`] from offset 0 (wrap it in a
/// `BufWriter`: every `write` is one file operation).
#[derive(Debug)]
pub struct SeqWriter {
    file: Box<dyn FsFile>,
    offset: u64,
}

impl SeqWriter {
    /// Writes from the start of `file`.
    pub fn new(file: Box<dyn FsFile>) -> Self {
        SeqWriter { file, offset: 0 }
    }
    /// The file, for the final sync.
    pub fn into_file(self) -> Box<dyn FsFile> {
        self.file
    }
    /// `fdatasync` of what was written so far (to spread a large file's writeback).
    ///
    /// # Errors
    /// The sync failed; treat the file as lost (never retry the sync).
    pub fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl io::Write for SeqWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Creates `root/rel` one component at a time, fsyncing the parent of each
/// directory it creates (so the new name survives a power loss).
///
/// # Errors
/// Creating or syncing failed.
pub fn create_dir_durable(fs: &dyn Fs, root: &Path, rel: &Path) -> io::Result<()> {
    let mut current = root.to_path_buf();
    for component in rel.components() {
        let parent = current.clone();
        current.push(component);
        match fs.create_dir(&current) {
            Ok(()) => fs.sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The temporary name [`write_atomic`] writes before renaming: `.<name>.tmp`
/// beside `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` atomically and durably: writes [`tmp_path`]
/// afresh (truncating a leftover), fsyncs it, renames it over `path`, fsyncs
/// the directory. After a crash at any point `path` holds either its old or its
/// new content, never a mix. The directory must exist.
///
/// # Errors
/// Any step failed; `path` then still holds its old content (a leftover
/// temporary file may remain and is overwritten by the next call), except
/// when only the final directory fsync failed: the new content is then in
/// place but not known to be durable.
pub fn write_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tmp_path(path);
    let mut file = fs.create(&tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}

/// Reads a whole file, `Ok(None)` when it does not exist.
///
/// # Errors
/// Any IO failure other than `NotFound`.
pub fn read_optional(fs: &dyn Fs, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn real_fs_creates_private_files_and_directories() {
        let dir = std::env::temp_dir().join(format!("hexflow-sys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        RealFs.create_dir_all(&dir).expect("mkdir");
        create_dir_durable(&RealFs, &dir, Path::new("a/b")).expect("durable mkdir");
        let file = dir.join("a/b/f");
        write_atomic(&RealFs, &file, b"secret").expect("write");
        assert_eq!(fs::read(&file).expect("read"), b"secret");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(mode(&dir.join("a")), DIR_MODE);
        assert_eq!(mode(&dir.join("a/b")), DIR_MODE);
        assert!(!tmp_path(&file).exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn exclusive_locks_exclude_until_dropped() {
        let dir = std::env::temp_dir().join(format!("hexflow-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        RealFs.create_dir_all(&dir).expect("mkdir");
        let sim = SimFs::new();
        sim.create_dir_all(&dir).expect("mkdir");
        let path = dir.join("lock");
        for fs in [&RealFs as &dyn Fs, &sim] {
            let held = fs.lock_exclusive(&path).expect("first lock");
            assert_eq!(held.path(), path);
            let second = fs.lock_exclusive(&path).expect_err("second lock");
            assert_eq!(second.kind(), io::ErrorKind::WouldBlock);
            drop(held);
            fs.lock_exclusive(&path).expect("free again");
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn write_atomic_keeps_old_or_new_content_at_every_crash_point() {
        let path = Path::new("/d/snap.bin");
        for crash_at in 0..6 {
            for seed in 0..8 {
                let fs = SimFs::new();
                fs.create_dir_all(Path::new("/d")).expect("mkdir");
                write_atomic(&fs, path, b"old").expect("first write");
                fs.sync_dir(Path::new("/d")).expect("sync");
                fs.crash_at_op(fs.ops() + crash_at);
                let done = write_atomic(&fs, path, b"new").is_ok();
                let image = fs.crash_image(seed);
                let got = read_optional(&image, path).expect("read");
                assert!(
                    got.as_deref() == Some(b"old") || got.as_deref() == Some(b"new"),
                    "crash at op +{crash_at}, seed {seed}: {got:?}"
                );
                if done {
                    assert_eq!(
                        got.as_deref(),
                        Some(&b"new"[..]),
                        "an acknowledged write is durable"
                    );
                }
            }
        }
    }
}

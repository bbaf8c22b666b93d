//! The file operations of the WAL → Parquet path, behind a small trait.
//!
//! Contract: every write, fsync, rename, directory fsync, truncation and
//! removal that storage performs goes through [`Fs`] (and the [`FsFile`]
//! handles it returns), so tests can count them, fail any one of them, or
//! simulate a power loss at any one of them ([`crate::sim::SimFs`]). [`RealFs`]
//! maps each call to exactly one std call (one syscall, except `write_all_at`
//! which loops on short writes). Nothing here decides policy: the callers
//! decide what a failure means (see `commit` and `writer`).

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
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
}

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
}

impl Fs for RealFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
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

//! A simulated, in-memory [`Fs`] for fault-injection and crash tests.
//!
//! Contract: deterministic (no clock, no real IO, randomness only from the
//! seed given to [`SimFs::crash_image`]). It counts every mutating operation
//! (create, write, fsync, set_len, rename, hard link, remove, mkdir, directory fsync) and
//! can, at operation `N`:
//! - **crash** ([`SimFs::crash_at_op`]): operation `N` and every later one
//!   fail with `EIO` (the process is "dead"; reads still work so the test can
//!   inspect), then [`SimFs::crash_image`] yields what a disk would hold after
//!   a power loss at that moment;
//! - **fail** ([`SimFs::fail_at_op`]): operation `N` alone fails with an errno
//!   and the run continues.
//!
//! It can also refuse writes beyond a capacity (`ENOSPC`, partial write first)
//! and fail every operation of a kind under a path prefix.
//!
//! # Crash model (what survives a power loss)
//! - File data: the content at the file's last `sync_data`/`sync_all` is
//!   durable. Anything written after it **may be lost or kept**: per file the
//!   image keeps the durable content, the full current content, or (when the
//!   file was only appended to) the durable content plus a random prefix of the
//!   appended bytes (a torn write).
//! - Names (create, rename, remove, mkdir) are journaled in order: the image
//!   keeps the names as of the last directory fsync plus a random prefix of
//!   the later name operations. A directory fsync makes every earlier name
//!   operation durable (as ext4's journal commit does). A renamed file keeps
//!   its own data rules: rename does not sync data.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{DirEntry, FileMeta, Fs, FsFile, FsLock};

/// Kinds of mutating operations, for targeted faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `create`/`open_write`.
    Create,
    /// `hard_link`.
    Link,
    /// `write_all_at`.
    Write,
    /// `sync_data`/`sync_all` of a file.
    SyncFile,
    /// `set_len`.
    SetLen,
    /// `rename`.
    Rename,
    /// `remove_file`.
    Remove,
    /// `create_dir`/`create_dir_all`.
    Mkdir,
    /// `sync_dir`.
    SyncDir,
}

/// One executed mutating operation (the trace, for failure messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its kind.
    pub kind: OpKind,
    /// The path it touched.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(usize),
}

#[derive(Debug, Clone)]
enum MetaOp {
    Link { path: PathBuf, node: Node },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Only appends (and syncs) since the last sync: a torn image is a prefix.
    append_only: bool,
    /// Simulated wall time of the last create/write (see [`SimFs::set_now_ms`]).
    modified_ms: i64,
}

#[derive(Debug, Clone)]
struct PathFault {
    kind: OpKind,
    prefix: PathBuf,
    errno: i32,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    meta_log: Vec<MetaOp>,
    ops: u64,
    trace: Vec<Op>,
    crash_at: Option<u64>,
    crashed: bool,
    fail_at: Option<(u64, i32)>,
    path_faults: Vec<PathFault>,
    capacity_bytes: Option<u64>,
    now_ms: i64,
    /// Paths locked by a live [`FsLock`] (locks are process state: not in crash images).
    locked: std::collections::BTreeSet<PathBuf>,
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn apply(names: &mut BTreeMap<PathBuf, Node>, op: &MetaOp) {
    match op {
        MetaOp::Link { path, node } => {
            names.insert(path.clone(), *node);
        }
        MetaOp::Rename { from, to } => {
            if let Some(node) = names.remove(from) {
                names.insert(to.clone(), node);
            }
        }
        MetaOp::Remove { path } => {
            names.remove(path);
        }
    }
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none() || path.as_os_str().is_empty()
}

impl State {
    /// Every name (link, unlink, rename) so far survives a power loss: a directory sync.
    fn names_durable(&mut self) {
        self.durable_names = self.names.clone();
        self.meta_log.clear();
    }

    /// Counts a mutating op and applies crash / fail / path faults.
    fn begin(&mut self, kind: OpKind, path: &Path) -> io::Result<()> {
        if self.crashed {
            return Err(err(libc::EIO));
        }
        let n = self.ops;
        if self.crash_at == Some(n) {
            self.crashed = true;
            return Err(err(libc::EIO));
        }
        self.ops += 1;
        self.trace.push(Op {
            kind,
            path: path.to_path_buf(),
        });
        if let Some((at, errno)) = self.fail_at {
            if at == n {
                self.fail_at = None;
                return Err(err(errno));
            }
        }
        if let Some(f) = self
            .path_faults
            .iter()
            .find(|f| f.kind == kind && path.starts_with(&f.prefix))
        {
            return Err(err(f.errno));
        }
        Ok(())
    }

    fn dir_exists(&self, path: &Path) -> bool {
        is_root(path) || self.names.get(path) == Some(&Node::Dir)
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if !self.dir_exists(p) => Err(err(libc::ENOENT)),
            _ => Ok(()),
        }
    }

    fn link(&mut self, path: &Path, node: Node) {
        let op = MetaOp::Link {
            path: path.to_path_buf(),
            node,
        };
        apply(&mut self.names, &op);
        self.meta_log.push(op);
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .filter_map(|n| match n {
                Node::File(i) => Some(self.inodes[*i].data.len() as u64),
                Node::Dir => None,
            })
            .sum()
    }
}

/// The simulated file system. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// Releases a [`SimFs`] lock when dropped.
struct SimLockGuard {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        lock(&self.state).locked.remove(&self.path);
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: usize,
    path: PathBuf,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the file system from the others.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FsFile for SimFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(OpKind::Write, &self.path)?;
        let offset = usize::try_from(offset).map_err(|_| err(libc::EFBIG))?;
        let end = offset + buf.len();
        let old_len = s.inodes[self.inode].data.len();
        let mut n = buf.len();
        let mut full = false;
        if let Some(cap) = s.capacity_bytes {
            let grow = end.saturating_sub(old_len) as u64;
            let free = cap.saturating_sub(s.used_bytes());
            if grow > free {
                // Write what fits, as a real file system does, then ENOSPC.
                n = (old_len.saturating_sub(offset) as u64 + free).min(buf.len() as u64) as usize;
                full = true;
            }
        }
        let now_ms = s.now_ms;
        let inode = &mut s.inodes[self.inode];
        inode.modified_ms = now_ms;
        if offset != old_len {
            inode.append_only = false;
        }
        if inode.data.len() < offset + n {
            inode.data.resize(offset + n, 0);
        }
        inode.data[offset..offset + n].copy_from_slice(&buf[..n]);
        if full {
            return Err(err(libc::ENOSPC));
        }
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(OpKind::SyncFile, &self.path)?;
        let inode = &mut s.inodes[self.inode];
        inode.durable = inode.data.clone();
        inode.append_only = true;
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(OpKind::SetLen, &self.path)?;
        let len = usize::try_from(len).map_err(|_| err(libc::EFBIG))?;
        let inode = &mut s.inodes[self.inode];
        inode.data.resize(len, 0);
        inode.append_only = false;
        Ok(())
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(lock(&self.state).inodes[self.inode].data.len() as u64)
    }
}

impl SimFs {
    /// An empty file system (only the root exists).
    pub fn new() -> Self {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Mutating operations executed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The executed mutating operations, in order.
    pub fn trace(&self) -> Vec<Op> {
        self.lock().trace.clone()
    }

    /// Operation number `n` (0-based, counted from now on as from the start)
    /// and every later one fail with `EIO`: a simulated power loss.
    pub fn crash_at_op(&self, n: u64) {
        self.lock().crash_at = Some(n);
    }

    /// True once the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Operation number `n` alone fails with `errno`.
    pub fn fail_at_op(&self, n: u64, errno: i32) {
        self.lock().fail_at = Some((n, errno));
    }

    /// Every operation of `kind` on a path under `prefix` fails with `errno`
    /// until [`SimFs::clear_path_faults`].
    pub fn fail_under(&self, kind: OpKind, prefix: &Path, errno: i32) {
        self.lock().path_faults.push(PathFault {
            kind,
            prefix: prefix.to_path_buf(),
            errno,
        });
    }

    /// Removes every fault added by [`SimFs::fail_under`].
    pub fn clear_path_faults(&self) {
        self.lock().path_faults.clear();
    }

    /// Limits the total bytes of all files (`None` = unlimited). A write that
    /// would cross it writes what fits and fails with `ENOSPC`.
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        self.lock().capacity_bytes = capacity;
    }

    /// Sets the simulated wall time stamped on files created or written from now on
    /// (what [`Fs::metadata`] reports as `modified_ms`). Default 0.
    pub fn set_now_ms(&self, now_ms: i64) {
        self.lock().now_ms = now_ms;
    }

    /// Total bytes of all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Every file under `dir` (recursively), sorted.
    pub fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.lock()
            .names
            .iter()
            .filter(|(p, n)| matches!(n, Node::File(_)) && p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Writes a whole file durably (name and data), bypassing counting and
    /// faults: for setting up a test.
    pub fn put_durable(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.lock();
        let node = match s.names.get(path) {
            Some(&Node::File(i)) => Node::File(i),
            _ => {
                s.inodes.push(Inode::default());
                Node::File(s.inodes.len() - 1)
            }
        };
        if let Node::File(i) = node {
            s.inodes[i].data = bytes.to_vec();
            s.inodes[i].durable = bytes.to_vec();
            s.inodes[i].append_only = true;
        }
        s.names.insert(path.to_path_buf(), node);
        s.names_durable();
    }

    /// What a disk would hold after a power loss now (see the module doc):
    /// a new, un-crashed file system in which everything is durable. The
    /// choices among the allowed outcomes come from `seed`.
    pub fn crash_image(&self, seed: u64) -> SimFs {
        let s = self.lock();
        let mut rng = SplitMix(seed);
        let keep = rng.below(s.meta_log.len() as u64 + 1) as usize;
        let mut names = s.durable_names.clone();
        for op in &s.meta_log[..keep] {
            apply(&mut names, op);
        }
        let mut inodes = Vec::new();
        let mut new_names = BTreeMap::new();
        for (path, node) in names {
            let node = match node {
                Node::Dir => Node::Dir,
                Node::File(i) => {
                    let old = &s.inodes[i];
                    let data = match rng.below(3) {
                        0 => old.durable.clone(),
                        1 => old.data.clone(),
                        _ if old.append_only && old.data.starts_with(&old.durable) => {
                            let extra = old.data.len() - old.durable.len();
                            let cut = old.durable.len() + rng.below(extra as u64 + 1) as usize;
                            old.data[..cut].to_vec()
                        }
                        _ => old.durable.clone(),
                    };
                    inodes.push(Inode {
                        durable: data.clone(),
                        data,
                        append_only: true,
                        modified_ms: old.modified_ms,
                    });
                    Node::File(inodes.len() - 1)
                }
            };
            new_names.insert(path, node);
        }
        SimFs {
            state: Arc::new(Mutex::new(State {
                inodes,
                durable_names: new_names.clone(),
                names: new_names,
                ..State::default()
            })),
        }
    }
}

impl Fs for SimFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Mkdir, path)?;
        s.parent_exists(path)?;
        if is_root(path) || s.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        s.link(path, Node::Dir);
        Ok(())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Mkdir, path)?;
        let mut todo: Vec<&Path> = path.ancestors().filter(|p| !is_root(p)).collect();
        todo.reverse();
        for p in todo {
            match s.names.get(p) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(err(libc::ENOTDIR)),
                None => s.link(p, Node::Dir),
            }
        }
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let s = self.lock();
        if !s.dir_exists(path) {
            return Err(err(libc::ENOENT));
        }
        Ok(s.names
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .filter_map(|(p, n)| {
                Some(DirEntry {
                    path: p.clone(),
                    name: p.file_name()?.to_str()?.to_string(),
                    is_dir: *n == Node::Dir,
                })
            })
            .collect())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        match s.names.get(path) {
            Some(Node::File(i)) => Ok(s.inodes[*i].data.clone()),
            Some(Node::Dir) => Err(err(libc::EISDIR)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.begin(OpKind::Create, path)?;
        s.parent_exists(path)?;
        let inode = match s.names.get(path) {
            Some(Node::File(i)) => {
                let i = *i;
                s.inodes[i].data.clear();
                s.inodes[i].append_only = false;
                i
            }
            Some(Node::Dir) => return Err(err(libc::EISDIR)),
            None => {
                let modified_ms = s.now_ms;
                s.inodes.push(Inode {
                    append_only: true,
                    modified_ms,
                    ..Inode::default()
                });
                let i = s.inodes.len() - 1;
                s.link(path, Node::File(i));
                i
            }
        };
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode,
            path: path.to_path_buf(),
        }))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.begin(OpKind::Create, path)?;
        match s.names.get(path) {
            Some(Node::File(i)) => Ok(Box::new(SimFile {
                state: self.state.clone(),
                inode: *i,
                path: path.to_path_buf(),
            })),
            Some(Node::Dir) => Err(err(libc::EISDIR)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Rename, to)?;
        s.parent_exists(to)?;
        if !matches!(s.names.get(from), Some(Node::File(_))) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let op = MetaOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        };
        apply(&mut s.names, &op);
        s.meta_log.push(op);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Remove, path)?;
        if !matches!(s.names.get(path), Some(Node::File(_))) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let op = MetaOp::Remove {
            path: path.to_path_buf(),
        };
        apply(&mut s.names, &op);
        s.meta_log.push(op);
        Ok(())
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<FsLock> {
        let mut s = self.lock();
        if !s.locked.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        let held = SimLockGuard {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        };
        Ok(FsLock::new(path.to_path_buf(), Box::new(held)))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::SyncDir, path)?;
        if !s.dir_exists(path) {
            return Err(err(libc::ENOENT));
        }
        s.names_durable();
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(OpKind::Link, to)?;
        s.parent_exists(to)?;
        let node = match s.names.get(from) {
            Some(&Node::File(i)) => Node::File(i),
            _ => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        if s.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        s.link(to, node);
        Ok(())
    }
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        let s = self.lock();
        match s.names.get(path) {
            Some(Node::File(i)) => Ok(FileMeta {
                len: s.inodes[*i].data.len() as u64,
                modified_ms: s.inodes[*i].modified_ms,
            }),
            Some(Node::Dir) => Err(err(libc::EISDIR)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

/// splitmix64: a tiny deterministic generator (no dependency).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_names_may_be_lost_synced_ones_survive() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync");
        let mut f = fs.create(&dir.join("a")).expect("create");
        f.write_all_at(b"hello", 0).expect("write");
        f.sync_data().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        f.write_all_at(b" world", 5).expect("write");
        fs.rename(&dir.join("a"), &dir.join("b")).expect("rename");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let img = fs.crash_image(seed);
            let a = img.read(&dir.join("a")).ok();
            let b = img.read(&dir.join("b")).ok();
            // Exactly one name, never both, never neither.
            assert!(a.is_some() != b.is_some(), "seed {seed}");
            let data = a.or(b).expect("one name");
            assert!(data.starts_with(b"hello"), "seed {seed}: {data:?}");
            assert!(b"hello world".starts_with(&data), "seed {seed}");
            seen.insert(data.len());
        }
        assert!(seen.contains(&5) && seen.contains(&11) && seen.len() > 2);
    }

    #[test]
    fn crash_and_fail_points_and_capacity() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        assert_eq!(fs.ops(), 1);
        fs.fail_at_op(1, libc::EIO);
        assert!(fs.create(Path::new("/d/x")).is_err());
        let mut f = fs.create(Path::new("/d/x")).expect("second try");
        fs.set_capacity_bytes(Some(4));
        let e = f.write_all_at(b"123456", 0).expect_err("full");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.read(Path::new("/d/x")).expect("read"), b"1234");
        f.set_len(0).expect("truncate");
        fs.set_capacity_bytes(None);
        fs.crash_at_op(fs.ops() + 1);
        f.write_all_at(b"ok", 0).expect("before the crash point");
        assert!(f.sync_data().is_err());
        assert!(fs.crashed());
        assert!(fs.sync_dir(Path::new("/d")).is_err());
        assert_eq!(fs.trace().len() as u64, fs.ops());
    }
}

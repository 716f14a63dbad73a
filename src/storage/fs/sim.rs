//! `SimFs`: an in-memory file system for the simulator and the storage tests. Deterministic:
//! every random choice comes from an `Rng` the caller passes (or, for `unique_id`, from the seed
//! given to `SimFs::new`), and all state lives in ordered maps.
//!
//! Model (what a power loss can and cannot do, per file and per directory):
//! - Every file has a *durable image* (what the disk holds) and a *current image* (what reads
//!   see: the page cache), plus the list of writes since the last sync, in order. `sync_data`
//!   writes back every 4096-byte page that a pending write touched, from the current image (so a
//!   page holding bytes of an earlier *failed* sync reaches the disk with them, as on Linux).
//! - Directory entries: a durable and a volatile name map per directory, and the operations
//!   (create, rename, remove) since the last `sync_dir`, in order. Directory creation
//!   (`create_dir_all`) and the truncation of an existing file by `CreateTruncate` are durable at
//!   once (simplifications; the storage code only truncates fresh temporary names).
//! - `crash` (power loss) resolves each file's unsynced writes one of four ways, chosen by the
//!   rng: all lost; a prefix in write order kept; any subset of the touched 512-byte sectors
//!   reaching the disk, each sector atomically either its durable or its current content
//!   (out-of-order writeback); or a prefix of the writes plus a sector-granular prefix of the next
//!   one (a torn write). Each directory keeps a random prefix of its unsynced operations. Open
//!   handles die with the process: they fail afterwards ("stale handle").
//! - `process_restart` (kill -9): the page cache survives, so current images stay visible, and
//!   unsynced writes stay pending (a later sync or crash decides them). Pages of a sync that
//!   failed with EIO stay visible but are not durable and no longer pending (Linux marks them
//!   clean after reporting the error: fsyncgate), so `read_direct` and any later crash lose them.
//! - `corrupt_durable` damages synced data (a bit flip, or a zeroed aligned 4 KiB page) in the
//!   durable image only; the cache keeps the good copy until a crash or `drop_caches`.
//! - `fail_next_sync` makes the next `sync_data` fail with EIO; `set_space_left` makes growth
//!   beyond a byte budget fail with ENOSPC; `kill_after_ops` makes every operation after the next
//!   N mutating ones fail, to stop a process in the middle of a sequence (then `crash`).
//!
//! Cost: a write costs its bytes (once in the current image, once pending); a sync costs the
//! touched pages; only `crash`, `process_restart` and `read_direct` copy whole files.

use super::{FileHandle, FileSystem, LockGuard, OpenMode, PAGE_BYTES};
use crate::raft::rng::Rng;
use crate::storage::fill::Fill;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// The simulated file system. Clones share one state. See the module doc.
#[derive(Clone)]
pub struct SimFs {
    pub(super) state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

pub(super) struct SimState {
    /// Bumped by every crash or restart; handles of an older epoch are stale.
    pub epoch: u64,
    pub inodes: BTreeMap<u64, Inode>,
    pub next_inode: u64,
    pub dirs: BTreeMap<PathBuf, Dir>,
    /// Held locks and the epoch of the process holding them.
    pub locks: BTreeMap<PathBuf, u64>,
    pub fail_next_sync: bool,
    pub space_left: Option<u64>,
    pub ops_left: Option<u64>,
    pub rng: Rng,
}

#[derive(Default)]
pub(super) struct Inode {
    pub current: Vec<u8>,
    pub durable: Vec<u8>,
    pub pending: Vec<Pending>,
    /// Byte ranges of writes whose sync failed: visible, not durable, not pending.
    pub failed: Vec<(u64, u64)>,
}

pub(super) struct Pending {
    pub offset: u64,
    pub data: PendingData,
}

pub(super) enum PendingData {
    Bytes(Vec<u8>),
    Zeros(u64),
}

impl Pending {
    pub fn len(&self) -> u64 {
        match &self.data {
            PendingData::Bytes(b) => b.len() as u64,
            PendingData::Zeros(n) => *n,
        }
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len()
    }
}

#[derive(Default)]
pub(super) struct Dir {
    pub durable: BTreeMap<String, u64>,
    pub volatile: BTreeMap<String, u64>,
    pub pending: Vec<DirOp>,
}

#[derive(Clone)]
pub(super) enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

/// What `corrupt_durable` did, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedCorruption {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: CorruptionKind,
}

/// The kinds of latent damage `SimFs` injects into synced data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// One bit of the byte at `offset` flipped.
    BitFlip { bit: u8 },
    /// The aligned 4 KiB page starting at `offset` reads as zeros.
    ZeroPage,
}

impl fmt::Display for InjectedCorruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CorruptionKind::BitFlip { bit } => {
                write!(f, "flipped bit {bit} at {}:{}", self.path.display(), self.offset)
            }
            CorruptionKind::ZeroPage => write!(f, "zeroed page at {}:{}", self.path.display(), self.offset),
        }
    }
}

pub(super) fn apply_to(image: &mut Vec<u8>, w: &Pending, upto: u64) {
    let end = w.end().min(upto);
    if end <= w.offset {
        return;
    }
    if (image.len() as u64) < end {
        image.resize(end as usize, 0);
    }
    let dst = &mut image[w.offset as usize..end as usize];
    match &w.data {
        PendingData::Bytes(b) => dst.copy_from_slice(&b[..dst.len()]),
        PendingData::Zeros(_) => dst.fill(0),
    }
}

/// Copies `[from, to)` of `current` into `durable` (growing it, never past `current`).
pub(super) fn copy_range(durable: &mut Vec<u8>, current: &[u8], from: u64, to: u64) {
    let to = to.min(current.len() as u64);
    if to <= from {
        return;
    }
    if (durable.len() as u64) < to {
        durable.resize(to as usize, 0);
    }
    durable[from as usize..to as usize].copy_from_slice(&current[from as usize..to as usize]);
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, name.to_string()))
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl SimState {
    /// Counts one mutating operation against the `kill_after_ops` budget.
    fn charge(&mut self) -> io::Result<()> {
        match self.ops_left {
            Some(0) => Err(io::Error::other("simulated process death: operation refused")),
            Some(n) => {
                self.ops_left = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(not_found)
    }

    pub fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs.get(&dir).and_then(|d| d.volatile.get(&name)).copied().ok_or_else(not_found)
    }

    /// Reserves `growth` bytes of the space budget.
    fn reserve(&mut self, growth: u64) -> io::Result<()> {
        if let Some(left) = self.space_left {
            if growth > left {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            self.space_left = Some(left - growth);
        }
        Ok(())
    }

    /// Every (path, inode) by volatile name, in path order.
    pub fn named_files(&self, durable: bool) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for (dir, d) in &self.dirs {
            let names = if durable { &d.durable } else { &d.volatile };
            out.extend(names.iter().map(|(n, ino)| (dir.join(n), *ino)));
        }
        out
    }
}

impl SimFs {
    /// An empty file system; `seed` drives `unique_id` only.
    pub fn new(seed: u64) -> SimFs {
        let state = SimState {
            epoch: 0,
            inodes: BTreeMap::new(),
            next_inode: 1,
            dirs: BTreeMap::new(),
            locks: BTreeMap::new(),
            fail_next_sync: false,
            space_left: None,
            ops_left: None,
            rng: Rng::new(seed),
        };
        SimFs { state: Arc::new(Mutex::new(state)) }
    }

    /// This file system as the trait object the storage code takes.
    pub fn handle(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.clone())
    }

    pub(super) fn lock_state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves the state as it was at the panic; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `sync_data` (of any file) fails with EIO; its pages become visible-not-durable.
    pub fn fail_next_sync(&self) {
        self.lock_state().fail_next_sync = true;
    }

    /// Growth of files beyond `bytes` more fails with ENOSPC (`None`: unlimited).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.lock_state().space_left = bytes;
    }

    /// After `ops` more mutating operations, every operation fails (`None`: never).
    pub fn kill_after_ops(&self, ops: Option<u64>) {
        self.lock_state().ops_left = ops;
    }

    /// The process died without power loss (see the module doc).
    pub fn process_restart(&self) {
        let mut st = self.lock_state();
        st.epoch += 1;
        st.locks.clear();
        st.ops_left = None;
    }

    /// Evicts clean pages: files without unsynced writes read their durable image again (a
    /// latent error or a failed writeback becomes visible to cached reads).
    pub fn drop_caches(&self) {
        let mut st = self.lock_state();
        for inode in st.inodes.values_mut().filter(|i| i.pending.is_empty()) {
            if inode.current != inode.durable {
                inode.current = inode.durable.clone();
            }
            inode.failed.clear();
        }
    }

    /// Every file path visible now, in path order.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.lock_state().named_files(false).into_iter().map(|(path, _)| path).collect()
    }

    /// The durable image of the file now at `path`.
    pub fn durable_image(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock_state();
        let ino = st.lookup(path)?;
        Ok(st.inodes.get(&ino).map(|i| i.durable.clone()).unwrap_or_default())
    }

    /// What reads of the file now at `path` see.
    pub fn visible_image(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock_state();
        let ino = st.lookup(path)?;
        Ok(st.inodes.get(&ino).map(|i| i.current.clone()).unwrap_or_default())
    }

    /// Damages the durable image of `path` at `offset` (a bit flip, or the 4 KiB page holding
    /// `offset` zeroed). For tests that aim at one byte.
    pub fn corrupt_at(&self, path: &Path, offset: u64, kind: CorruptionKind) -> io::Result<InjectedCorruption> {
        let mut st = self.lock_state();
        let ino = st.lookup(path)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        if offset >= inode.durable.len() as u64 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let offset = match kind {
            CorruptionKind::BitFlip { bit } => {
                inode.durable[offset as usize] ^= 1 << (bit % 8);
                offset
            }
            CorruptionKind::ZeroPage => {
                let start = offset / PAGE_BYTES * PAGE_BYTES;
                let end = (start + PAGE_BYTES).min(inode.durable.len() as u64);
                inode.durable[start as usize..end as usize].fill(0);
                start
            }
        };
        Ok(InjectedCorruption { path: path.to_path_buf(), offset, kind })
    }

    /// A latent error in synced data of one file under `under`: a bit flip or a zeroed 4 KiB
    /// page, aimed at a page that holds data (not only unwritten space: zeros or the fill). `None` if no such file exists.
    pub fn corrupt_durable(&self, rng: &mut Rng, under: &Path) -> Option<InjectedCorruption> {
        let (path, offset, kind) = {
            let st = self.lock_state();
            let files: Vec<(PathBuf, u64)> = st
                .named_files(true)
                .into_iter()
                .filter(|(p, ino)| p.starts_with(under) && st.inodes.get(ino).is_some_and(|i| !i.durable.is_empty()))
                .collect();
            if files.is_empty() {
                return None;
            }
            let (path, ino) = files[rng.range(0, files.len() as u64) as usize].clone();
            let image = &st.inodes.get(&ino)?.durable;
            let pages = (image.len() as u64).div_ceil(PAGE_BYTES);
            let mut page = rng.range(0, pages);
            for _ in 0..64 {
                let start = (page * PAGE_BYTES) as usize;
                let end = (start + PAGE_BYTES as usize).min(image.len());
                let unwritten =
                    [Fill::Zeros, Fill::Pattern].iter().any(|f| f.matches(start as u64, &image[start..end]));
                if !unwritten {
                    break;
                }
                page = rng.range(0, pages);
            }
            let start = page * PAGE_BYTES;
            let len = (image.len() as u64 - start).min(PAGE_BYTES);
            if rng.chance(1, 2) {
                (path, start + rng.range(0, len), CorruptionKind::BitFlip { bit: rng.range(0, 8) as u8 })
            } else {
                (path, start, CorruptionKind::ZeroPage)
            }
        };
        self.corrupt_at(&path, offset, kind).ok()
    }
}

struct SimLock {
    fs: SimFs,
    path: PathBuf,
    epoch: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock_state();
        if st.locks.get(&self.path) == Some(&self.epoch) {
            st.locks.remove(&self.path);
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        for dir in path.ancestors() {
            st.dirs.entry(dir.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut st = self.lock_state();
        let (dir, name) = split(path)?;
        let existing = st.dir_mut(&dir)?.volatile.get(&name).copied();
        let inode = match (mode, existing) {
            (OpenMode::CreateTruncate, Some(ino)) => {
                st.charge()?;
                let inode = st.inodes.entry(ino).or_default();
                *inode = Inode::default();
                ino
            }
            (OpenMode::CreateTruncate, None) => {
                st.charge()?;
                let ino = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(ino, Inode::default());
                let d = st.dir_mut(&dir)?;
                d.volatile.insert(name.clone(), ino);
                d.pending.push(DirOp::Link(name, ino));
                ino
            }
            (_, Some(ino)) => ino,
            (_, None) => return Err(not_found()),
        };
        let writable = mode != OpenMode::ReadOnly;
        Ok(Box::new(SimFile { fs: self.clone(), inode, epoch: st.epoch, writable }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        let (dir, a) = split(from)?;
        let (to_dir, b) = split(to)?;
        if dir != to_dir {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "SimFs renames within one directory only"));
        }
        st.charge()?;
        let d = st.dir_mut(&dir)?;
        let ino = d.volatile.remove(&a).ok_or_else(not_found)?;
        d.volatile.insert(b.clone(), ino);
        d.pending.push(DirOp::Rename(a, b));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        let (dir, name) = split(path)?;
        st.charge()?;
        let d = st.dir_mut(&dir)?;
        d.volatile.remove(&name).ok_or_else(not_found)?;
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock_state();
        let d = st.dirs.get(dir).ok_or_else(not_found)?;
        let mut names: Vec<String> = d.volatile.keys().cloned().collect();
        for sub in st.dirs.keys().filter(|p| p.parent() == Some(dir)) {
            if let Some(n) = sub.file_name().and_then(|n| n.to_str()) {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        st.charge()?;
        let d = st.dir_mut(dir)?;
        d.durable = d.volatile.clone();
        d.pending.clear();
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.lock_state();
        Ok(st.dirs.contains_key(path) || st.lookup(path).is_ok())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock_state().dirs.contains_key(path))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let st = self.lock_state();
        let ino = st.lookup(path)?;
        Ok(st.inodes.get(&ino).map_or(0, |i| i.current.len() as u64))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.lock_state();
        if st.locks.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let epoch = st.epoch;
        st.locks.insert(path.to_path_buf(), epoch);
        Ok(Box::new(SimLock { fs: self.clone(), path: path.to_path_buf(), epoch }))
    }

    fn unique_id(&self) -> u64 {
        self.lock_state().rng.next_nonzero()
    }
}

/// An open file of a `SimFs`, valid until the next crash or restart.
struct SimFile {
    fs: SimFs,
    inode: u64,
    epoch: u64,
    writable: bool,
}

impl SimFile {
    fn with<T>(&self, mutating: bool, f: impl FnOnce(&mut SimState, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.fs.lock_state();
        if st.epoch != self.epoch {
            return Err(io::Error::other("stale handle: the simulated process died"));
        }
        if mutating {
            if !self.writable {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            st.charge()?;
        }
        f(&mut st, self.inode)
    }
}

fn inode_mut(st: &mut SimState, ino: u64) -> io::Result<&mut Inode> {
    st.inodes.get_mut(&ino).ok_or_else(not_found)
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |st, ino| Ok(inode_mut(st, ino)?.current.len() as u64))
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        self.with(false, |st, ino| {
            let cur = &inode_mut(st, ino)?.current;
            let end = offset.checked_add(len as u64).filter(|&e| e <= cur.len() as u64);
            let end = end.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            Ok(Bytes::copy_from_slice(&cur[offset as usize..end as usize]))
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(true, |st, ino| {
            let end = offset + data.len() as u64;
            let growth = end.saturating_sub(inode_mut(st, ino)?.current.len() as u64);
            st.reserve(growth)?;
            let inode = inode_mut(st, ino)?;
            if (inode.current.len() as u64) < end {
                inode.current.resize(end as usize, 0);
            }
            inode.current[offset as usize..end as usize].copy_from_slice(data);
            inode.pending.push(Pending { offset, data: PendingData::Bytes(data.to_vec()) });
            Ok(())
        })
    }

    fn allocate(&self, len: u64, fill: Fill) -> io::Result<()> {
        self.with(true, |st, ino| {
            let cur = inode_mut(st, ino)?.current.len() as u64;
            if len <= cur {
                return Ok(());
            }
            st.reserve(len - cur)?;
            let inode = inode_mut(st, ino)?;
            let data = match fill {
                Fill::Zeros => {
                    inode.current.resize(len as usize, 0);
                    PendingData::Zeros(len - cur)
                }
                Fill::Pattern => {
                    let bytes = fill.bytes(cur, (len - cur) as usize);
                    inode.current.extend_from_slice(&bytes);
                    PendingData::Bytes(bytes)
                }
            };
            inode.pending.push(Pending { offset: cur, data });
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |st, ino| {
            let fail = std::mem::take(&mut st.fail_next_sync);
            let inode = inode_mut(st, ino)?;
            let pending = std::mem::take(&mut inode.pending);
            if fail {
                inode.failed.extend(pending.iter().map(|w| (w.offset, w.end())));
                return Err(io::Error::from_raw_os_error(EIO));
            }
            let mut pages = BTreeSet::new();
            for w in &pending {
                pages.extend(w.offset / PAGE_BYTES..w.end().div_ceil(PAGE_BYTES));
            }
            for p in pages {
                copy_range(&mut inode.durable, &inode.current, p * PAGE_BYTES, (p + 1) * PAGE_BYTES);
            }
            inode.durable.truncate(inode.current.len());
            Ok(())
        })
    }

    fn read_direct(&self) -> io::Result<Vec<u8>> {
        self.with(false, |st, ino| Ok(inode_mut(st, ino)?.durable.clone()))
    }
}

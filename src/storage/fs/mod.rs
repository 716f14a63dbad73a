//! The file-system seam: every file the storage layer touches (WAL segments, the meta file,
//! snapshot files, directories, the lock) goes through [`FileSystem`] and [`FileHandle`], used as
//! `Arc<dyn FileSystem>`.
//!
//! - [`RealFs`] (`real.rs`): std + memmap2. Files of a known size are mapped read-only (MAP_SHARED)
//!   so reads are zero-copy slices that also see later `pwrite`s; all writes are `pwrite`s, never
//!   stores through a mapping; `allocate` writes zeros so ENOSPC surfaces as an error there and
//!   never as SIGBUS later; `read_direct` reads with O_DIRECT, bypassing the page cache.
//! - [`SimFs`] (`sim.rs`): an in-memory, deterministic file system for the simulator and tests
//!   that keeps a durable image and the volatile (unsynced) writes of every file, and loses,
//!   reorders, tears, rots and fills up on request.
//!
//! Contract every implementation keeps (the storage code relies on it):
//! - Data written with `write_at` is visible to `read_at` at once (page cache), and durable only
//!   after `sync_data` returned Ok. A failed `sync_data` promises nothing, ever (see `wal` on
//!   fsyncgate): the pages may stay visible but never reach the disk.
//! - `create` (open with `CreateTruncate`), `rename` and `remove_file` are durable only after
//!   `sync_dir` of the parent directory returned Ok.
//! - `read_direct` returns what the disk holds, not what the page cache shows.
//! - Errors are plain `io::Error`s; the storage code adds the operation and the path.

mod real;
mod sim;
mod sim_crash;

pub use real::RealFs;
pub use sim::{CorruptionKind, InjectedCorruption, SimFs};

use bytes::Bytes;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How `FileSystem::open` opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    ReadOnly,
    /// An existing file, for reading and writing.
    ReadWrite,
    /// Create the file (or truncate an existing one to zero bytes), for reading and writing.
    /// Only used for fresh `.tmp` names: a mapped file is never truncated.
    CreateTruncate,
}

/// Bytes of a disk sector: the unit a power loss writes atomically (or not at all).
pub const SECTOR_BYTES: u64 = 512;
/// Bytes of a page: the alignment O_DIRECT wants and the unit a latent error destroys.
pub const PAGE_BYTES: u64 = 4096;

/// The directory-level operations. Object safe; shared as `Arc<dyn FileSystem>`.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `path` and its missing parents (like `mkdir -p`).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file. See [`OpenMode`].
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    /// Renames within one directory (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable after `sync_dir`).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`, sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True if a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// True if `path` is a directory.
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// Length of the file at `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Takes an exclusive, non-blocking lock on `path` until the guard is dropped. A lock that
    /// is held fails with `ErrorKind::WouldBlock`.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// A fresh random non-zero id (the meta file's data-directory id). `RealFs` draws it from
    /// the clock and the process id through the project's PRNG; `SimFs` from its seed.
    fn unique_id(&self) -> u64;
}

/// Holds a lock taken with [`FileSystem::lock`]; dropping it releases the lock.
pub trait LockGuard: Send + Sync {}

/// One open file. Offsets and lengths are in bytes.
#[allow(clippy::len_without_is_empty)] // a file's length is an I/O result, not a container size
pub trait FileHandle: Send + Sync {
    /// Current length of the file (what reads see).
    fn len(&self) -> io::Result<u64>;
    /// `len` bytes at `offset`, all of them or an error (`UnexpectedEof` past the end).
    /// `RealFs` returns a zero-copy slice of its read-only mapping where the file is mapped.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes>;
    /// Writes all of `data` at `offset` (one `pwrite`), growing the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Grows the file to `len` bytes by writing `fill` (no-op if it is already that long), so
    /// that the blocks are really allocated: ENOSPC is reported here.
    fn allocate(&self, len: u64, fill: super::fill::Fill) -> io::Result<()>;
    /// fdatasync: makes every write so far (and the file size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The whole file as the disk holds it, bypassing the page cache (O_DIRECT).
    fn read_direct(&self) -> io::Result<Vec<u8>>;
}

/// The real file system, as a shareable trait object.
pub fn real() -> Arc<dyn FileSystem> {
    Arc::new(RealFs::new())
}

/// True if the error means "out of space" (ENOSPC or EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull
}

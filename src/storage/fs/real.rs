//! `RealFs`: the operating system's file system (std + memmap2).
//!
//! Reads: a file opened at a known, non-zero size (and re-sized by `allocate`) is mapped
//! read-only and MAP_SHARED; `read_at` returns zero-copy `Bytes` slices of that mapping (via
//! `Bytes::from_owner`), and falls back to `pread` beyond the mapped length. A shared mapping
//! shows later `pwrite`s to the same file, which is what `Wal::entries` relies on. Nothing is ever
//! stored through a mapping: appends use one `pwrite` per batch (see `segment` for the measured
//! reason), and new space is allocated by writing zeros, so a full disk fails a `write`/`allocate`
//! with ENOSPC instead of killing the process with SIGBUS on a later store into a sparse page.
//!
//! Mapping safety: the storage code never truncates a file it has open (temporary files are
//! created under fresh names, segments only ever grow by `allocate`), and a directory lock keeps
//! other writers out, so every mapped page stays backed by the file. A mapping does not protect
//! against a read error of the device: a latent sector error in a mapped older segment raises
//! SIGBUS on access (the newest segment is read with `read_direct`, which returns EIO instead).
//!
//! `read_direct` opens the file again (through `/proc/self/fd`, so a rename cannot redirect it)
//! with O_DIRECT and reads it in 4096-aligned chunks into 4096-aligned buffers. The kernel writes
//! dirty pages of the range back before an O_DIRECT read, so the result is the disk's content
//! plus whatever could still be written; pages whose writeback failed are clean in the cache and
//! are *not* returned (fsyncgate, see `wal`). If the file system refuses O_DIRECT (tmpfs does:
//! EINVAL), it logs a warning once and reads through the page cache. On tmpfs that is still safe:
//! there is no backing device, writeback never fails, and the cache is the only copy (a power loss
//! loses everything anyway). On a disk file system that refuses O_DIRECT it is not: after a failed
//! sync and a restart *without* a reboot, recovery could trust pages that never reached the disk;
//! the warning says so, and the remedy is to reboot (drop the page cache) after any storage EIO.

use super::{FileHandle, FileSystem, LockGuard, OpenMode};
use crate::raft::rng::Rng;
use crate::storage::fill::Fill;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// How long `lock` waits for a lock held by another open file description.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Linux's O_DIRECT (x86-64 and aarch64 value).
const O_DIRECT: i32 = 0o40000;
/// Alignment of O_DIRECT buffers, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per O_DIRECT read and per zero-filling write.
const CHUNK_BYTES: usize = 1 << 20;
const EINVAL: i32 = 22;

static DIRECT_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// The real file system; see the module doc.
#[derive(Debug)]
pub struct RealFs {
    map_files: bool,
}

impl Default for RealFs {
    fn default() -> Self {
        RealFs::new()
    }
}

impl RealFs {
    pub fn new() -> RealFs {
        RealFs { map_files: true }
    }

    /// Reads with `pread` only, never mapping a file (for `raft-dump`, which must be safe on the
    /// directory of a running node).
    pub fn without_mmap() -> RealFs {
        RealFs { map_files: false }
    }
}

struct RealLock {
    _file: File,
}

impl LockGuard for RealLock {}

impl FileSystem for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut opts = OpenOptions::new();
        opts.read(true);
        match mode {
            OpenMode::ReadOnly => {}
            OpenMode::ReadWrite => {
                opts.write(true);
            }
            OpenMode::CreateTruncate => {
                opts.write(true).create(true).truncate(true);
            }
        }
        let file = opts.open(path)?;
        let map = if mode == OpenMode::CreateTruncate || !self.map_files { None } else { map_file(&file)? };
        let map_files = self.map_files;
        Ok(Box::new(RealFile { file, path: path.to_path_buf(), map: RwLock::new(map), map_files }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match fs::metadata(path) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // A lock is held by an open file description, and a process that forks copies it until
        // the child execs: a lock just released can still be held for a moment by a child of
        // whoever held it (seen in tests that start raftd processes beside storage tests), and a
        // node restarted at once may race its predecessor's exit. So wait a little before
        // calling the directory taken; a second live node still gets the error.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(RealLock { _file: file })),
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    fn unique_id(&self) -> u64 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut rng = Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
        rng.next_nonzero()
    }
}

/// One open file; `map` covers `[0, map.len())` read-only (see the module doc).
struct RealFile {
    file: File,
    path: PathBuf,
    map: RwLock<Option<Bytes>>,
    map_files: bool,
}

/// Maps `file` read-only at its current length (None for an empty file).
fn map_file(file: &File) -> io::Result<Option<Bytes>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    // SAFETY: the mapping is read-only; the storage code never truncates a file it has open and
    // holds the directory lock (module doc), so every page of the mapping stays backed.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }?;
    Ok(Some(Bytes::from_owner(map)))
}

fn lock_poisoned() -> io::Error {
    io::Error::other("mapping lock poisoned")
}

impl FileHandle for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset.checked_add(len as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        {
            let map = self.map.read().map_err(|_| lock_poisoned())?;
            if let Some(m) = map.as_ref().filter(|m| end <= m.len() as u64) {
                return Ok(m.slice(offset as usize..end as usize));
            }
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn allocate(&self, len: u64, fill: Fill) -> io::Result<()> {
        let mut pos = self.file.metadata()?.len();
        if len <= pos {
            return Ok(());
        }
        let mut chunk = vec![0u8; CHUNK_BYTES];
        while pos < len {
            let n = (len - pos).min(CHUNK_BYTES as u64) as usize;
            fill.write(pos, &mut chunk[..n]);
            self.file.write_all_at(&chunk[..n], pos)?;
            pos += n as u64;
        }
        if self.map_files {
            let map = map_file(&self.file)?;
            *self.map.write().map_err(|_| lock_poisoned())? = map;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn read_direct(&self) -> io::Result<Vec<u8>> {
        let len = self.file.metadata()?.len();
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let direct = OpenOptions::new().read(true).custom_flags(O_DIRECT).open(&proc_path);
        let result = direct.and_then(|f| read_aligned(&f, len));
        match result {
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                if !DIRECT_FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{}: the file system refuses O_DIRECT; recovery reads through the page cache \
                         (safe on tmpfs; elsewhere reboot after any storage EIO, see storage::fs::real)",
                        self.path.display()
                    );
                }
                let mut buf = vec![0u8; len as usize];
                self.file.read_exact_at(&mut buf, 0)?;
                Ok(buf)
            }
            other => other,
        }
    }
}

/// Reads `[0, len)` of an O_DIRECT file in aligned chunks.
fn read_aligned(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    let mut raw = vec![0u8; CHUNK_BYTES + DIRECT_ALIGN];
    let skip = raw.as_ptr().align_offset(DIRECT_ALIGN);
    let chunk = &mut raw[skip..skip + CHUNK_BYTES];
    debug_assert_eq!(chunk.as_ptr() as usize % DIRECT_ALIGN, 0);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = file.read_at(chunk, out.len() as u64)?;
        out.extend_from_slice(&chunk[..n]);
        if n < CHUNK_BYTES {
            break;
        }
    }
    if out.len() < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its length"));
    }
    out.truncate(len);
    Ok(out)
}

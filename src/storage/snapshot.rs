//! Snapshot files: a state-machine image with its last included index and term and the cluster
//! configuration, protected by a CRC, installed atomically.
//!
//! Layout (little-endian):
//!
//! ```text
//! offset      size  field
//! 0           8     magic b"MRSNAP01"
//! 8           4     version u32 = 2
//! 12          4     conf_len u32 (c <= CONF_STATE_BYTES_MAX)
//! 16          8     last included index
//! 24          8     last included term
//! 32          c     the configuration (ConfState: voters, outgoing voters, learners,
//!                   learners-to-be, addresses), as `raft::membership::encode_conf_state`
//! 32+c        d     image (opaque state-machine bytes)
//! end-16      8     d, the image length (must match the file size)
//! end-8       4     CRC-32 over bytes [0, end-4)
//! end-4       4     end magic b"MRSE"
//! ```
//!
//! Version 1 files (still read, never written) hold `voter_count` u32 at 12 and `8n` bytes of
//! voter ids (u64 each) at 32 instead of the configuration: a plain configuration of voters.
//!
//! Files are named `snap-{index:020}-{term:020}.snap`. Guarantees:
//! - A snapshot file appears only complete: it is written under a `.tmp` name, fsynced, read back
//!   and verified, renamed, and the directory fsynced. Leftover `.tmp` files are ignored (and
//!   removed by `SnapshotStore::open`), so an interrupted write leaves the previous snapshot in use.
//! - Loading checks the size and CRC; any mismatch is an error naming the file.
//! - After an install only the newest `KEEP_SNAPSHOTS` snapshots are kept.
//! - The transport moves a snapshot as raw file bytes: `SnapshotReader::read_chunk` on the sender,
//!   `SnapshotWriter::write_chunk` + `finish` (verify and install) on the receiver.

use super::dir::{sync_dir, Naming};
use super::error::StorageError;
use super::fs::{FileHandle, FileSystem, OpenMode};
use crate::limits::{CONF_STATE_BYTES_MAX, VOTERS_MAX};
use crate::raft::membership::{decode_conf_state, encode_conf_state};
use crate::raft::types::{ConfState, Snapshot, SnapshotMeta};
use byteorder::{ByteOrder, LittleEndian as LE};
use bytes::Bytes;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"MRSNAP01";
const END_MAGIC: &[u8; 4] = b"MRSE";
const VERSION: u32 = 2;
/// The first format: voter ids only.
const VERSION_VOTERS_ONLY: u32 = 1;
const FIXED_HEADER_LEN: u64 = 32;
const TRAILER_LEN: u64 = 16;
/// Snapshots kept after an install.
pub const KEEP_SNAPSHOTS: usize = 2;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";
const READ_BUF_BYTES: usize = 256 << 10;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How snapshot files are named: `snap-{index:020}-{term:020}.snap`, `.snap.tmp` while written.
pub const SNAPSHOT_NAMING: Naming = Naming { prefix: "snap-", suffix: SUFFIX, temp_suffix: TEMP_SUFFIX };

/// File name of the snapshot at (index, term).
pub fn snapshot_name(index: u64, term: u64) -> String {
    SNAPSHOT_NAMING.name(index, term)
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    SNAPSHOT_NAMING.parse(name)
}

/// A snapshot file that was checked: metadata, size and CRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    pub size_bytes: u64,
    pub image_bytes: u64,
    pub crc: u32,
}

/// A snapshot file found by name (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub path: PathBuf,
}

/// Lists snapshot files (oldest first) and leftover temporary files of `dir`.
pub fn list_snapshots(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<SnapshotFile>, Vec<PathBuf>), StorageError> {
    let (files, temps) = SNAPSHOT_NAMING.list(fs, dir)?;
    Ok((files.into_iter().map(|f| SnapshotFile { index: f.a, term: f.b, path: f.path }).collect(), temps))
}

fn encode_header(meta: &SnapshotMeta) -> Result<Vec<u8>, StorageError> {
    let n = meta.conf.voters.len();
    if n > VOTERS_MAX {
        return Err(StorageError::Invalid(format!("{n} voters exceed {VOTERS_MAX}")));
    }
    let conf = encode_conf_state(&meta.conf);
    if conf.len() > CONF_STATE_BYTES_MAX {
        return Err(StorageError::Invalid(format!(
            "configuration of {} bytes exceeds {CONF_STATE_BYTES_MAX}",
            conf.len()
        )));
    }
    let mut h = vec![0u8; FIXED_HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut h[8..12], VERSION);
    LE::write_u32(&mut h[12..16], conf.len() as u32);
    LE::write_u64(&mut h[16..24], meta.index);
    LE::write_u64(&mut h[24..32], meta.term);
    h.extend_from_slice(&conf);
    // Read back what a reader will see (TIGER_STYLE: check the pair around I/O).
    debug_assert_eq!(decode_conf_state(&h[FIXED_HEADER_LEN as usize..]).as_ref(), Ok(&meta.conf));
    Ok(h)
}

/// Sequential reads of a file through a `FileHandle`.
struct Reader<'a> {
    file: &'a dyn FileHandle,
    path: &'a Path,
    pos: u64,
}

impl Reader<'_> {
    fn read(&mut self, n: usize) -> Result<Bytes, StorageError> {
        let b = self.file.read_at(self.pos, n).map_err(|e| StorageError::io("read snapshot", self.path, e))?;
        self.pos += n as u64;
        Ok(b)
    }
}

/// Reads and verifies a whole snapshot file in bounded chunks. If `image` is given, the image
/// bytes are also collected into it.
fn verify_file(
    fs: &dyn FileSystem,
    path: &Path,
    mut image: Option<&mut Vec<u8>>,
) -> Result<SnapshotInfo, StorageError> {
    let file = fs.open(path, OpenMode::ReadOnly).map_err(|e| StorageError::io("open snapshot", path, e))?;
    let size = file.len().map_err(|e| StorageError::io("stat snapshot", path, e))?;
    let bad = |off: u64, why: String| StorageError::corrupt(path, off, why);
    if size < FIXED_HEADER_LEN + TRAILER_LEN {
        return Err(bad(0, format!("snapshot is truncated: only {size} bytes")));
    }
    let mut r = Reader { file: file.as_ref(), path, pos: 0 };
    let fixed = r.read(FIXED_HEADER_LEN as usize)?;
    let version = LE::read_u32(&fixed[8..12]);
    if &fixed[0..8] != MAGIC || !matches!(version, VERSION | VERSION_VOTERS_ONLY) {
        return Err(bad(0, "bad snapshot magic or version".to_string()));
    }
    let n = LE::read_u32(&fixed[12..16]) as u64;
    let (conf_len, conf_max) =
        if version == VERSION { (n, CONF_STATE_BYTES_MAX as u64) } else { (8 * n, 8 * VOTERS_MAX as u64) };
    let header_len = FIXED_HEADER_LEN + conf_len;
    if conf_len > conf_max || size < header_len + TRAILER_LEN {
        return Err(bad(12, format!("a configuration of {conf_len} bytes does not fit a {size}-byte file")));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fixed);
    let conf_raw = r.read(conf_len as usize)?;
    hasher.update(&conf_raw);
    let image_bytes = size - header_len - TRAILER_LEN;
    if let Some(img) = image.as_deref_mut() {
        img.clear();
        img.reserve(image_bytes as usize);
    }
    let mut left = image_bytes;
    while left > 0 {
        let n = left.min(READ_BUF_BYTES as u64) as usize;
        let chunk = r.read(n)?;
        hasher.update(&chunk);
        if let Some(img) = image.as_deref_mut() {
            img.extend_from_slice(&chunk);
        }
        left -= n as u64;
    }
    let trailer = r.read(TRAILER_LEN as usize)?;
    hasher.update(&trailer[0..8]);
    let trailer_at = size - TRAILER_LEN;
    if &trailer[12..16] != END_MAGIC {
        return Err(bad(trailer_at + 12, "bad end magic (truncated?)".to_string()));
    }
    let stated = LE::read_u64(&trailer[0..8]);
    if stated != image_bytes {
        let why = format!("image length {stated} but the file holds {image_bytes} (truncated?)");
        return Err(bad(trailer_at, why));
    }
    let stored = LE::read_u32(&trailer[8..12]);
    let computed = hasher.finalize();
    if stored != computed {
        let why = format!("crc mismatch (stored {stored:#010x}, computed {computed:#010x})");
        return Err(bad(trailer_at + 8, why));
    }
    let conf = if version == VERSION {
        decode_conf_state(&conf_raw).map_err(|e| bad(FIXED_HEADER_LEN, format!("configuration: {e}")))?
    } else {
        ConfState::from_voters(conf_raw.chunks_exact(8).map(LE::read_u64).collect())
    };
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        meta: SnapshotMeta { index: LE::read_u64(&fixed[16..24]), term: LE::read_u64(&fixed[24..32]), conf },
        size_bytes: size,
        image_bytes,
        crc: stored,
    })
}

/// Verifies a snapshot file (size, CRC, and that its name matches its header).
pub fn verify_snapshot_file(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotInfo, StorageError> {
    let info = verify_file(fs, path, None)?;
    check_name(&info)?;
    Ok(info)
}

fn check_name(info: &SnapshotInfo) -> Result<(), StorageError> {
    let name = info.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some((index, term)) = parse_snapshot_name(name) {
        if (index, term) != (info.meta.index, info.meta.term) {
            let why =
                format!("file name says index {index} term {term}, header says {} {}", info.meta.index, info.meta.term);
            return Err(StorageError::corrupt(&info.path, 16, why));
        }
    }
    Ok(())
}

/// Loads and verifies a snapshot file completely into memory.
pub fn load_snapshot(fs: &dyn FileSystem, path: &Path) -> Result<Snapshot, StorageError> {
    let mut image = Vec::new();
    let info = verify_file(fs, path, Some(&mut image))?;
    check_name(&info)?;
    Ok(Snapshot { meta: info.meta, data: Bytes::from(image) })
}

/// The snapshot directory.
#[derive(Clone)]
pub struct SnapshotStore {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

impl fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStore").field("dir", &self.dir).finish()
    }
}

impl SnapshotStore {
    /// Opens `dir` (creating it) and removes leftovers of interrupted writes.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<(SnapshotStore, Vec<PathBuf>), StorageError> {
        fs.create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        let (_, temps) = list_snapshots(fs.as_ref(), dir)?;
        for t in &temps {
            log::warn!("removing interrupted snapshot write {}", t.display());
            fs.remove_file(t).map_err(|e| StorageError::io("remove temp snapshot", t, e))?;
        }
        if !temps.is_empty() {
            sync_dir(fs.as_ref(), dir)?;
        }
        let store = SnapshotStore { fs, dir: dir.to_path_buf() };
        Ok((store, temps))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Snapshot files by name, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotFile>, StorageError> {
        Ok(list_snapshots(self.fs.as_ref(), &self.dir)?.0)
    }

    /// Loads the newest snapshot. A damaged newest snapshot is an error naming the file (the
    /// WAL may already be compacted to it, so an older one would leave a hole).
    pub fn latest(&self) -> Result<Option<Snapshot>, StorageError> {
        match self.list()?.last() {
            None => Ok(None),
            Some(f) => load_snapshot(self.fs.as_ref(), &f.path).map(Some),
        }
    }

    /// Writes `snap` durably and atomically, then prunes old snapshots.
    pub fn save(&self, snap: &Snapshot) -> Result<SnapshotInfo, StorageError> {
        let mut w = self.image_writer(&snap.meta)?;
        for chunk in snap.data.chunks(READ_BUF_BYTES) {
            w.write_image(chunk)?;
        }
        w.finish()
    }

    /// A writer that receives a snapshot file's raw bytes in chunks (from the transport).
    pub fn writer(&self) -> Result<SnapshotWriter, StorageError> {
        SnapshotWriter::create(Arc::clone(&self.fs), &self.dir, None)
    }

    /// A writer that builds a snapshot from metadata and image chunks (from the state machine).
    pub fn image_writer(&self, meta: &SnapshotMeta) -> Result<SnapshotWriter, StorageError> {
        SnapshotWriter::create(Arc::clone(&self.fs), &self.dir, Some(meta))
    }

    /// Deletes all but the newest `keep` snapshots.
    pub fn prune(&self, keep: usize) -> Result<usize, StorageError> {
        let files = self.list()?;
        let excess = files.len().saturating_sub(keep);
        for f in &files[..excess] {
            match self.fs.remove_file(&f.path) {
                Ok(()) => {}
                // Another thread pruned it first (the node's snapshot and WAL threads both prune).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove snapshot", &f.path, e)),
            }
        }
        if excess > 0 {
            sync_dir(self.fs.as_ref(), &self.dir)?;
        }
        Ok(excess)
    }
}

/// Writes one snapshot under a temporary name; `finish` verifies and installs it. Dropping an
/// unfinished writer removes the temporary file.
pub struct SnapshotWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    tmp: PathBuf,
    out: Option<Box<dyn FileHandle>>,
    /// Bytes not yet written (flushed at READ_BUF_BYTES and at `finish`).
    buf: Vec<u8>,
    /// Bytes accepted so far (written or in `buf`).
    written: u64,
    /// Some in image mode: the running CRC and image length; None in raw mode.
    image: Option<(crc32fast::Hasher, u64)>,
    /// Set once the file was renamed into place; until then Drop removes the temporary file.
    installed: bool,
}

impl SnapshotWriter {
    fn create(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        meta: Option<&SnapshotMeta>,
    ) -> Result<SnapshotWriter, StorageError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("snap-incoming-{}-{n}{TEMP_SUFFIX}", std::process::id()));
        let file = fs.open(&tmp, OpenMode::CreateTruncate).map_err(|e| StorageError::io("create snapshot", &tmp, e))?;
        let mut w = SnapshotWriter {
            fs,
            dir: dir.to_path_buf(),
            tmp,
            out: Some(file),
            buf: Vec::with_capacity(READ_BUF_BYTES),
            written: 0,
            image: None,
            installed: false,
        };
        if let Some(meta) = meta {
            let header = encode_header(meta)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&header);
            w.put(&header)?;
            w.image = Some((hasher, 0));
        }
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        if self.out.is_none() {
            return Err(finished());
        }
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buf.len() >= READ_BUF_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let out = self.out.as_ref().ok_or_else(finished)?;
        let at = self.written - self.buf.len() as u64;
        out.write_at(at, &self.buf).map_err(|e| StorageError::io("write snapshot", &self.tmp, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Raw mode: accepts the file's bytes at `offset`. Chunks must arrive in order; a chunk
    /// entirely below the bytes already written is a retransmission and is ignored.
    pub fn write_chunk(&mut self, offset: u64, chunk: &[u8]) -> Result<(), StorageError> {
        if self.image.is_some() {
            return Err(StorageError::Invalid("write_chunk on an image writer".into()));
        }
        if offset + chunk.len() as u64 <= self.written && !chunk.is_empty() {
            return Ok(());
        }
        if offset != self.written {
            return Err(StorageError::Invalid(format!("snapshot chunk at offset {offset}, expected {}", self.written)));
        }
        self.put(chunk)
    }

    /// Image mode: appends state-machine image bytes.
    pub fn write_image(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let Some((hasher, len)) = self.image.as_mut() else {
            return Err(StorageError::Invalid("write_image on a raw writer".into()));
        };
        hasher.update(chunk);
        *len += chunk.len() as u64;
        self.put(chunk)
    }

    /// Bytes written so far (the offset the next raw chunk must have).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Completes the file, fsyncs it, verifies it by reading it back, renames it into place,
    /// fsyncs the directory and prunes old snapshots.
    pub fn finish(self) -> Result<SnapshotInfo, StorageError> {
        self.finish_checked(|_| Ok(())).map(|(info, ())| info)
    }

    /// Like [`SnapshotWriter::finish`], but `check` must also accept the complete, durable file
    /// (given by its temporary path) before it is renamed into place: a snapshot received from a
    /// leader is decoded by the state machine first, so that an image it cannot use never becomes
    /// the newest snapshot (a node restarting from it could never start). A refusal removes the
    /// file and is returned as `Corrupt`.
    pub fn finish_checked<T>(
        mut self,
        check: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<(SnapshotInfo, T), StorageError> {
        if let Some((mut hasher, len)) = self.image.take() {
            let mut trailer = [0u8; TRAILER_LEN as usize];
            LE::write_u64(&mut trailer[0..8], len);
            hasher.update(&trailer[0..8]);
            LE::write_u32(&mut trailer[8..12], hasher.finalize());
            trailer[12..16].copy_from_slice(END_MAGIC);
            self.put(&trailer)?;
        }
        self.flush()?;
        let out = self.out.take().ok_or_else(finished)?;
        out.sync_data().map_err(|e| StorageError::io("fsync snapshot", &self.tmp, e))?;
        drop(out);
        let fs = Arc::clone(&self.fs);
        let mut info = verify_file(fs.as_ref(), &self.tmp, None)?;
        let checked = check(&self.tmp).map_err(|why| StorageError::corrupt(&self.tmp, 0, why))?;
        let path = self.dir.join(snapshot_name(info.meta.index, info.meta.term));
        fs.rename(&self.tmp, &path).map_err(|e| StorageError::io("rename snapshot", &path, e))?;
        self.installed = true;
        sync_dir(fs.as_ref(), &self.dir)?;
        info.path = path;
        let store = SnapshotStore { fs, dir: self.dir.clone() };
        store.prune(KEEP_SNAPSHOTS)?;
        Ok((info, checked))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.installed {
            // Unfinished or failed: best effort cleanup; a crash leaves the file, which
            // SnapshotStore::open removes.
            self.out = None;
            let _ = self.fs.remove_file(&self.tmp);
        }
    }
}

fn finished() -> StorageError {
    StorageError::Invalid("snapshot writer already finished".into())
}

/// Reads a verified snapshot file in chunks for the transport.
pub struct SnapshotReader {
    info: SnapshotInfo,
    file: Box<dyn FileHandle>,
}

impl SnapshotReader {
    /// Opens and verifies `path` (a damaged file is an error naming it).
    pub fn open(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotReader, StorageError> {
        let info = verify_snapshot_file(fs, path)?;
        let file = fs.open(path, OpenMode::ReadOnly).map_err(|e| StorageError::io("open snapshot", path, e))?;
        Ok(SnapshotReader { info, file })
    }

    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// Total bytes of the file (what the receiver's `bytes_written` reaches).
    pub fn len(&self) -> u64 {
        self.info.size_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.info.size_bytes == 0
    }

    /// Bytes of the state-machine image inside the file.
    pub fn image_len(&self) -> u64 {
        self.info.image_bytes
    }

    /// Up to `max_bytes` bytes of the image starting at `offset` within the image (what a
    /// leader streams to a follower; the receiver rebuilds the file with `image_writer`).
    pub fn read_image(&mut self, offset: u64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let image_start = self.info.size_bytes - TRAILER_LEN - self.info.image_bytes;
        let n = self.info.image_bytes.saturating_sub(offset).min(max_bytes as u64) as usize;
        if n == 0 {
            return Ok(Bytes::new());
        }
        let path = &self.info.path;
        self.file.read_at(image_start + offset, n).map_err(|e| StorageError::io("read snapshot", path, e))
    }

    /// Up to `max_bytes` raw bytes starting at `offset`; empty at the end of the file.
    pub fn read_chunk(&mut self, offset: u64, max_bytes: usize) -> Result<Vec<u8>, StorageError> {
        let n = self.info.size_bytes.saturating_sub(offset).min(max_bytes as u64) as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let path = &self.info.path;
        let b = self.file.read_at(offset, n).map_err(|e| StorageError::io("read snapshot", path, e))?;
        Ok(b.to_vec())
    }
}

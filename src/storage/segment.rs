//! Segment files: naming, listing, creation, and appends of one segment.
//!
//! A segment is a fixed-size file named `{seq:020}-{first_index:020}.wal`, where `first_index` is
//! the index its first entry has (or would have), allocated for real (its fill written: the
//! pattern of `fill` for version 3, see `fs::FileHandle::allocate`). Creation is atomic: the
//! file is allocated under a `.wal.tmp` name (a spare prepared ahead of time by `Spare`, or
//! synchronously), its SegmentHeader record is written with `write_at` and synced, then it is
//! renamed and the directory synced. A `.wal.tmp` file is therefore never part of the log, and
//! a segment under its final name always starts with a durable header and is full length.
//!
//! Appends: records of a batch collect in memory and reach the file in one `pwrite`, together
//! with the batch's Commit record, right before the sync (`commit`). Why not store through a
//! mapping: on this project's machines (Linux 6.18, ext4), stores through a shared mapping into a
//! 64 MiB segment made every later msync/fdatasync ~4x slower once ~30 MB of the file were dirtied
//! (65 us -> 245-290 us per 2 KiB sync), while `pwrite` + `fdatasync` stays at ~70 us. Reads and
//! recovery of older segments use the read-only mapping behind `FileHandle::read_at`.

pub use super::dir::sync_dir;
use super::dir::Naming;
use super::error::StorageError;
use super::fill::Fill;
use super::fs::{FileHandle, FileSystem, OpenMode, PAGE_BYTES};
use super::record::{self, Commit, Record, COMMIT_RECORD_LEN, HEADER_LEN, SEGMENT_HEADER_PAYLOAD_LEN};
use bytes::Bytes;
use std::path::{Path, PathBuf};

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of files being created (never part of the log).
pub const TEMP_SUFFIX: &str = ".tmp";
/// Smallest segment size the format allows: one page.
pub const SEGMENT_BYTES_MIN: u64 = PAGE_BYTES;
/// Largest segment size: offsets are stored as u32.
pub const SEGMENT_BYTES_MAX: u64 = (u32::MAX as u64 / PAGE_BYTES) * PAGE_BYTES;
/// Name of the segment being allocated ahead of need.
pub const SPARE_NAME: &str = "spare.wal.tmp";

/// How segment files are named: `{seq:020}-{first_index:020}.wal`, `.wal.tmp` while created.
pub const SEGMENT_NAMING: Naming = Naming { prefix: "", suffix: SEGMENT_SUFFIX, temp_suffix: ".wal.tmp" };

/// File name of segment `seq` whose first entry index is `first_index`.
pub fn segment_name(seq: u64, first_index: u64) -> String {
    SEGMENT_NAMING.name(seq, first_index)
}

/// Parses a segment file name back into (seq, first_index).
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    SEGMENT_NAMING.parse(name)
}

/// Bytes of the smallest segment that holds a header, one entry of `entry_bytes_max` payload
/// bytes and the Commit record of its batch, rounded up to a page.
pub fn segment_bytes_min(entry_bytes_max: usize) -> u64 {
    let need = record::record_len(SEGMENT_HEADER_PAYLOAD_LEN) + record::record_len(entry_bytes_max) + COMMIT_RECORD_LEN;
    (need as u64).div_ceil(PAGE_BYTES) * PAGE_BYTES
}

/// The largest entry payload a segment of `segment_bytes` holds (the inverse of
/// `segment_bytes_min`, rounded down to the record alignment).
pub fn entry_bytes_max_for(segment_bytes: u64) -> usize {
    let overhead = record::record_len(SEGMENT_HEADER_PAYLOAD_LEN) + COMMIT_RECORD_LEN + HEADER_LEN;
    (segment_bytes as usize).saturating_sub(overhead) / record::RECORD_ALIGN * record::RECORD_ALIGN
}

/// A segment file found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
}

/// Lists segment files (sorted by seq) and leftover temporary files of `dir`. Checks that the
/// sequence numbers are consecutive: a missing middle segment is a hard error.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<SegmentFile>, Vec<PathBuf>), StorageError> {
    let (segments, temps) = find_segment_files(fs, dir)?;
    check_consecutive(dir, &segments)?;
    Ok((segments, temps))
}

/// Lists segment files (sorted by seq) and temporary files without judging the sequence.
pub fn find_segment_files(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<SegmentFile>, Vec<PathBuf>), StorageError> {
    let (files, temps) = SEGMENT_NAMING.list(fs, dir)?;
    let segments = files.into_iter().map(|f| SegmentFile { seq: f.a, first_index: f.b, path: f.path }).collect();
    Ok((segments, temps))
}

/// Checks that segment sequence numbers are consecutive. `first_index` may go down from one
/// segment to the next: a Truncate record can move the log end back before a rotation.
pub fn check_consecutive(dir: &Path, segments: &[SegmentFile]) -> Result<(), StorageError> {
    for w in segments.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(StorageError::MissingSegment {
                dir: dir.to_path_buf(),
                missing_seq: w[0].seq + 1,
                next_path: w[1].path.clone(),
            });
        }
    }
    Ok(())
}

/// One open segment. Invariant (between calls): `[0, synced_pos)` is durable and equals the
/// file; `pending` holds the records of the uncommitted batch, `[synced_pos, write_pos)`.
pub struct Segment {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
    /// Segment format (`record::SEGMENT_VERSION` for segments this code writes).
    pub version: u32,
    file: Box<dyn FileHandle>,
    len: usize,
    /// One past the last record appended.
    pub write_pos: usize,
    /// Bytes below this offset are durable.
    pub synced_pos: usize,
    pending: Vec<u8>,
}

impl Segment {
    /// Opens an existing segment file read-write (recovery decides its positions).
    pub fn open(fs: &dyn FileSystem, f: &SegmentFile) -> Result<Segment, StorageError> {
        let file = fs.open(&f.path, OpenMode::ReadWrite).map_err(|e| StorageError::io("open segment", &f.path, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat segment", &f.path, e))?;
        if !(HEADER_LEN as u64..=SEGMENT_BYTES_MAX).contains(&len) {
            return Err(StorageError::corrupt(&f.path, 0, format!("segment size {len} is outside the allowed range")));
        }
        Ok(Segment {
            seq: f.seq,
            first_index: f.first_index,
            path: f.path.clone(),
            version: 0,
            file,
            len: len as usize,
            write_pos: 0,
            synced_pos: 0,
            pending: Vec::new(),
        })
    }

    /// Creates segment `header.seq` atomically (module doc) from `spare` if it has the right
    /// target size, or from a fresh temporary file allocated now.
    pub fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        header: record::SegmentHeader,
        bytes: u64,
        spare: Option<Spare>,
    ) -> Result<Segment, StorageError> {
        assert!((SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) && bytes.is_multiple_of(PAGE_BYTES));
        assert_eq!(header.version, record::SEGMENT_VERSION, "only current-format segments are created");
        let first_index = header.prev_index + 1;
        let path = dir.join(segment_name(header.seq, first_index));
        let (tmp, file) = match spare.filter(|s| s.target == bytes) {
            Some(s) => (s.path, s.file),
            None => {
                let tmp = dir.join(format!("{}{TEMP_SUFFIX}", segment_name(header.seq, first_index)));
                let file =
                    fs.open(&tmp, OpenMode::CreateTruncate).map_err(|e| StorageError::io("create segment", &tmp, e))?;
                (tmp, file)
            }
        };
        file.allocate(bytes, Fill::of_segment_version(header.version))
            .map_err(|e| StorageError::io("allocate segment", &tmp, e))?;
        let mut buf = vec![0u8; record::record_len(SEGMENT_HEADER_PAYLOAD_LEN)];
        let n = record::encode(&mut buf, &Record::SegmentHeader(header));
        file.write_at(0, &buf[..n]).map_err(|e| StorageError::io("write segment header", &tmp, e))?;
        file.sync_data().map_err(|e| StorageError::io("fdatasync new segment", &tmp, e))?;
        let back = file.read_at(0, n).map_err(|e| StorageError::io("read back segment header", &tmp, e))?;
        if back[..] != buf[..n] {
            return Err(StorageError::corrupt(&tmp, 0, "segment header reads back differently"));
        }
        fs.rename(&tmp, &path).map_err(|e| StorageError::io("rename segment", &tmp, e))?;
        sync_dir(fs, dir)?;
        Ok(Segment {
            seq: header.seq,
            first_index,
            path,
            version: header.version,
            file,
            len: bytes as usize,
            write_pos: n,
            synced_pos: n,
            pending: Vec::new(),
        })
    }

    /// The segment as the page cache shows it (zero-copy on `RealFs`).
    pub fn image(&self) -> Result<Bytes, StorageError> {
        self.file.read_at(0, self.len).map_err(|e| StorageError::io("read segment", &self.path, e))
    }

    /// The segment as the disk holds it (see `FileHandle::read_direct`).
    pub fn read_direct(&self) -> Result<Vec<u8>, StorageError> {
        let buf = self.file.read_direct().map_err(|e| StorageError::io("read segment (O_DIRECT)", &self.path, e))?;
        if buf.len() != self.len {
            let why = format!("segment reads {} bytes from disk, {} through the cache", buf.len(), self.len);
            return Err(StorageError::corrupt(&self.path, 0, why));
        }
        Ok(buf)
    }

    /// Sets the positions after recovery kept `[0, keep_end)` of a segment of `version`.
    pub fn set_recovered(&mut self, keep_end: usize, version: u32) {
        assert!(keep_end <= self.len && self.pending.is_empty());
        self.version = version;
        self.write_pos = keep_end;
        self.synced_pos = keep_end;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes left after `write_pos`.
    pub fn remaining(&self) -> usize {
        self.len - self.write_pos
    }

    /// Encodes `record` at `write_pos` (in memory until `commit`) and returns its offset.
    pub fn append(&mut self, rec: &Record<'_>) -> usize {
        let need = record::record_len(record::payload_len(rec));
        assert!(need <= self.remaining(), "record does not fit the segment");
        debug_assert_eq!(self.pending.len(), self.write_pos - self.synced_pos);
        let off = self.write_pos;
        let start = self.pending.len();
        self.pending.resize(start + need, 0);
        let n = record::encode(&mut self.pending[start..], rec);
        debug_assert_eq!(n, need);
        debug_assert!(record::decode(&self.pending[start..], 0).is_ok());
        self.write_pos += n;
        off
    }

    /// `len` bytes at `offset` of records appended so far (pending or in the file).
    pub fn read(&self, offset: usize, len: usize) -> Result<Bytes, StorageError> {
        if offset >= self.synced_pos {
            let from = offset - self.synced_pos;
            let bytes = self.pending.get(from..from + len).ok_or_else(|| {
                StorageError::Invalid(format!(
                    "read of [{offset}, +{len}) beyond the records of {}",
                    self.path.display()
                ))
            })?;
            return Ok(Bytes::copy_from_slice(bytes));
        }
        self.file.read_at(offset as u64, len).map_err(|e| StorageError::io("read segment", &self.path, e))
    }

    /// True if records were appended since the last commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the batch with a Commit record (`c`'s batch fields are filled in here), writes the
    /// batch in one `pwrite` and syncs it. The caller reserved room for the record.
    pub fn commit(&mut self, mut c: Commit) -> Result<Commit, StorageError> {
        assert!(self.has_pending(), "commit of an empty batch");
        c.batch_offset = self.synced_pos as u32;
        c.batch_len = (self.write_pos - self.synced_pos) as u32;
        c.batch_crc = record::batch_crc(&self.pending);
        self.append(&Record::Commit(c));
        let from = self.synced_pos as u64;
        self.file.write_at(from, &self.pending).map_err(|e| StorageError::io("write batch", &self.path, e))?;
        self.file.sync_data().map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        self.pending.clear();
        self.synced_pos = self.write_pos;
        Ok(c)
    }

    /// Writes and syncs a confirmation (module doc of `record`): a Commit record of an empty
    /// batch right after the last one. Returns its offset and content, or None if the segment has
    /// no room for it. Only current-format segments are written to.
    pub fn confirm(&mut self, mut c: Commit) -> Result<Option<(usize, Commit)>, StorageError> {
        assert!(!self.has_pending(), "confirmation with an uncommitted batch");
        assert_eq!(self.version, record::SEGMENT_VERSION, "only current-format segments are appended to");
        let at = self.write_pos;
        if at + COMMIT_RECORD_LEN > self.len {
            return Ok(None);
        }
        c.batch_offset = at as u32;
        c.batch_len = 0;
        c.batch_crc = record::batch_crc(&[]);
        let mut buf = [0u8; COMMIT_RECORD_LEN];
        record::encode(&mut buf, &Record::Commit(c));
        self.file.write_at(at as u64, &buf).map_err(|e| StorageError::io("write confirmation", &self.path, e))?;
        self.file.sync_data().map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        self.write_pos = at + COMMIT_RECORD_LEN;
        self.synced_pos = self.write_pos;
        Ok(Some((at, c)))
    }

    /// Overwrites `[from, to)` with the segment's fill (unwritten space: zeros or the pattern)
    /// and makes that durable (dropping a torn tail or a damaged suffix).
    pub fn unwrite_range(&mut self, from: usize, to: usize) -> Result<(), StorageError> {
        assert!(from <= to && to <= self.len && !self.has_pending());
        assert!(self.version != 0, "the segment's version is known before its tail is dropped");
        let fill = Fill::of_segment_version(self.version);
        let mut chunk = vec![0u8; (to - from).min(1 << 20)];
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(chunk.len());
            fill.write(pos as u64, &mut chunk[..n]);
            self.file
                .write_at(pos as u64, &chunk[..n])
                .map_err(|e| StorageError::io("drop segment tail", &self.path, e))?;
            pos += n;
        }
        self.file.sync_data().map_err(|e| StorageError::io("fdatasync dropped tail", &self.path, e))
    }
}

/// The next segment, allocated ahead of need in steps under `SPARE_NAME` (see `Wal`).
pub struct Spare {
    pub path: PathBuf,
    file: Box<dyn FileHandle>,
    /// Bytes allocated and synced so far.
    pub allocated: u64,
    /// The size it grows to.
    pub target: u64,
}

impl Spare {
    /// Starts a fresh spare (truncating any leftover one).
    pub fn start(fs: &dyn FileSystem, dir: &Path, target: u64) -> Result<Spare, StorageError> {
        let path = dir.join(SPARE_NAME);
        let file =
            fs.open(&path, OpenMode::CreateTruncate).map_err(|e| StorageError::io("create spare segment", &path, e))?;
        Ok(Spare { path, file, allocated: 0, target })
    }

    pub fn is_ready(&self) -> bool {
        self.allocated >= self.target
    }

    /// Allocates up to `step_bytes` more and syncs them, so that rotation has little left to do.
    pub fn step(&mut self, step_bytes: u64) -> Result<(), StorageError> {
        let next = (self.allocated + step_bytes).min(self.target);
        self.file
            .allocate(next, Fill::of_segment_version(record::SEGMENT_VERSION))
            .map_err(|e| StorageError::io("allocate spare segment", &self.path, e))?;
        self.file.sync_data().map_err(|e| StorageError::io("fdatasync spare segment", &self.path, e))?;
        self.allocated = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        let n = segment_name(1, 1);
        assert_eq!(n, "00000000000000000001-00000000000000000001.wal");
        assert_eq!(parse_segment_name(&n), Some((1, 1)));
        assert_eq!(parse_segment_name("1-1.wal"), None);
        assert_eq!(parse_segment_name(&format!("{n}.tmp")), None);
    }

    #[test]
    fn minimum_segment_holds_the_largest_entry_and_inverts() {
        for entry in [0usize, 1, 100, 4000, 2 << 20] {
            let seg = segment_bytes_min(entry);
            assert!(entry_bytes_max_for(seg) >= entry, "{entry} in {seg}");
            assert!(seg.is_multiple_of(PAGE_BYTES));
        }
    }
}

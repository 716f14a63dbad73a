//! The write-ahead log: a sequence of preallocated, memory-mapped segment files.
//!
//! Contract with the node layer:
//! - `append` and `set_hard_state` only write into the page cache. Nothing they wrote may be
//!   relied on (acknowledged, voted with) until `sync` returns: one msync/fdatasync per batch.
//!   `synced_hard_state` tells what is durable.
//! - `append` whose first index is <= `last_index` first writes a Truncate record, so the
//!   conflicting suffix is replaced; recovery replays the same records and reaches the same log.
//! - `compact(i, t)` may only be called after a snapshot covering `i` is durable. It writes a
//!   Compact record, syncs it, and only then deletes whole segments below the first live entry.
//!
//! Invariants:
//! - Every record before `synced_pos` of the newest segment, and every record of older segments,
//!   is durable: a segment is synced completely before its successor is created (so a torn write
//!   can only be at the tail of the newest segment).
//! - The in-memory `LogState` is exactly what replaying the files gives (`apply` is shared).
//! - Every segment starts with a header that checkpoints floor, last index and hard state, so
//!   deleting older segments never loses the hard state or the floor.
//! - On open: a bad record in the newest segment with no valid record after it is a torn write
//!   and is zeroed (reported in `RecoveryReport`); any other bad record, a missing segment or an
//!   index gap is a hard error naming file and offset.
//!
//! Back of the envelope: a 100-byte entry costs a 136-byte record; a 64 MiB segment holds about
//! 490k of them; a sync per batch of 256 entries flushes ~35 KB (9 pages).

use super::error::StorageError;
use super::log_state::LogState;
use super::record::{self, Record, TailKind};
use super::segment::{self, Segment, SegmentFile, SyncMode};
use crate::raft::types::{Entry, HardState};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the lock file that keeps two nodes off one directory.
pub const LOCK_FILE: &str = "LOCK";

/// Knobs of the WAL.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// Size of each segment file (default 64 MiB). Must be a multiple of 8 within
    /// [SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX].
    pub segment_bytes: u64,
    pub sync_mode: SyncMode,
    /// Write zeros into new segments instead of making them sparse (see `wal-bench`).
    pub prefill: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20, sync_mode: SyncMode::Msync, prefill: false }
    }
}

/// What `Wal::open` found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub entries: u64,
    /// Bytes of segment files examined (including the zero tail of the newest segment).
    pub bytes_scanned: u64,
    /// Bytes of a torn tail that were zeroed (0 if the log ended cleanly).
    pub bytes_truncated: u64,
    /// File and offset where the torn tail started, if any.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Leftover `.tmp` segment files (interrupted creations) that were removed.
    pub temp_files_removed: Vec<PathBuf>,
    pub elapsed: Duration,
}

/// The log. See the module documentation for the durability contract.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    segments: VecDeque<Segment>,
    state: LogState,
    synced_hard_state: HardState,
    _lock: File,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, recovering as described in the module doc.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), StorageError> {
        let bytes = opts.segment_bytes;
        if !(segment::SEGMENT_BYTES_MIN..=segment::SEGMENT_BYTES_MAX).contains(&bytes)
            || !bytes.is_multiple_of(record::RECORD_ALIGN as u64)
        {
            return Err(StorageError::Invalid(format!(
                "segment_bytes {bytes} must be a multiple of 8 in [{}, {}]",
                segment::SEGMENT_BYTES_MIN,
                segment::SEGMENT_BYTES_MAX
            )));
        }
        let started = Instant::now();
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        let lock = lock_dir(dir)?;
        let (files, temps) = segment::list_segments(dir)?;
        let mut report = RecoveryReport::default();
        for t in temps {
            log::warn!("removing interrupted segment creation {}", t.display());
            fs::remove_file(&t).map_err(|e| StorageError::io("remove temp segment", &t, e))?;
            report.temp_files_removed.push(t);
        }
        if !report.temp_files_removed.is_empty() {
            segment::sync_dir(dir)?;
        }
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments: VecDeque::new(),
            state: LogState::default(),
            synced_hard_state: HardState::default(),
            _lock: lock,
        };
        if files.is_empty() {
            wal.create_segment(1)?;
        } else {
            for (i, f) in files.iter().enumerate() {
                let seg = wal.recover_segment(f, i + 1 == files.len(), &mut report)?;
                wal.segments.push_back(seg);
            }
        }
        let first = &wal.segments[0].path;
        wal.state.validate().map_err(|reason| StorageError::corrupt(first, 0, reason))?;
        if wal.state.hard_state.commit > wal.state.last {
            log::warn!(
                "{}: commit index {} is beyond the last index {} (unsynced tail lost?)",
                dir.display(),
                wal.state.hard_state.commit,
                wal.state.last
            );
        }
        wal.synced_hard_state = wal.state.hard_state;
        report.segments = wal.segments.len();
        report.elapsed = started.elapsed();
        wal.check_invariants();
        Ok((wal, report))
    }

    /// Scans one segment, applying its records, and handles its tail.
    fn recover_segment(
        &mut self,
        f: &SegmentFile,
        is_last: bool,
        report: &mut RecoveryReport,
    ) -> Result<Segment, StorageError> {
        let mut seg = Segment::open(f)?;
        let state = &mut self.state;
        let end = record::scan(seg.bytes(), 0, |off, d| {
            if let Record::SegmentHeader(h) = d.record {
                if h.prev_index + 1 != f.first_index {
                    let why = format!("header says first index {}", h.prev_index + 1);
                    return Err(StorageError::corrupt(&f.path, off as u64, why));
                }
            }
            if let Record::Entry { .. } = d.record {
                report.entries += 1;
            }
            report.records += 1;
            state.apply(f.seq, off, &d.record).map_err(|why| StorageError::corrupt(&f.path, off as u64, why))
        })?;
        report.bytes_scanned += seg.len() as u64;
        if self.state.seq != Some(f.seq) {
            return Err(StorageError::corrupt(&f.path, 0, "segment does not start with a valid header"));
        }
        match end.tail {
            TailKind::Clean => {}
            TailKind::Torn { reason, dirty_end } if is_last => {
                let dropped = dirty_end - end.end;
                log::warn!(
                    "{}: dropping torn tail of {dropped} bytes at offset {} ({reason}); \
                     records after the last sync of a crashed node",
                    f.path.display(),
                    end.end
                );
                seg.zero_range(end.end, dirty_end)?;
                report.bytes_truncated += dropped as u64;
                report.truncated_at = Some((f.path.clone(), end.end as u64));
            }
            TailKind::Torn { reason, .. } => {
                let why = format!("{reason} in a segment that is not the newest");
                return Err(StorageError::corrupt(&f.path, end.end as u64, why));
            }
            TailKind::Hole { reason, valid_at } => {
                let why = format!("{reason}, but a valid record follows at offset {valid_at}");
                return Err(StorageError::corrupt(&f.path, end.end as u64, why));
            }
        }
        seg.write_pos = end.end;
        seg.synced_pos = end.end;
        Ok(seg)
    }

    /// Creates segment `seq` with a header describing the current state and makes it current.
    fn create_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        let header = self.state.header_for(seq);
        let seg = Segment::create(&self.dir, header, self.opts.segment_bytes, self.opts.prefill)?;
        self.state
            .apply(seq, 0, &Record::SegmentHeader(header))
            .map_err(|why| StorageError::corrupt(&seg.path, 0, why))?;
        self.segments.push_back(seg);
        Ok(())
    }

    /// Appends a batch of contiguous entries (not yet durable: call `sync`). If the first index
    /// is <= `last_index`, the suffix from there is replaced.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_batch(entries)?;
        if first.index <= self.state.last {
            self.write(&Record::Truncate { index: first.index - 1 })?;
        }
        for e in entries {
            self.write(&Record::Entry { index: e.index, term: e.term, kind: e.kind, data: &e.data })?;
        }
        debug_assert_eq!(self.state.last, entries[entries.len() - 1].index);
        self.write_out()
    }

    fn check_batch(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = &entries[0];
        if first.index <= self.state.floor.0 || first.index > self.state.last + 1 {
            return Err(StorageError::Invalid(format!(
                "batch starts at {} but the log holds ({}, {}]",
                first.index, self.state.floor.0, self.state.last
            )));
        }
        let prev_term = self.state.term(first.index - 1).unwrap_or(0);
        if first.term < prev_term {
            return Err(StorageError::Invalid(format!(
                "entry {} has term {} below its predecessor's {prev_term}",
                first.index, first.term
            )));
        }
        let capacity = self.segment_capacity();
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && (e.index != entries[i - 1].index + 1 || e.term < entries[i - 1].term) {
                return Err(StorageError::Invalid(format!(
                    "batch not contiguous or terms decrease at entry {}",
                    e.index
                )));
            }
            if record::record_len(e.data.len()) > capacity {
                return Err(StorageError::Invalid(format!(
                    "entry {} of {} bytes does not fit a {}-byte segment",
                    e.index,
                    e.data.len(),
                    self.opts.segment_bytes
                )));
            }
        }
        Ok(())
    }

    /// Bytes available to records in an empty segment (after its header).
    fn segment_capacity(&self) -> usize {
        self.opts.segment_bytes as usize - record::record_len(record::SEGMENT_HEADER_PAYLOAD_LEN)
    }

    /// Writes one record to the newest segment, rotating first if it does not fit.
    fn write(&mut self, rec: &Record<'_>) -> Result<(), StorageError> {
        let need = record::record_len(record::payload_len(rec));
        assert!(need <= self.segment_capacity());
        let seq = self.current().seq;
        self.state.check(seq, rec).map_err(StorageError::Invalid)?;
        if need > self.current().remaining() {
            self.rotate()?;
        }
        let seg = self.segments.back_mut().ok_or_else(no_segment)?;
        let (seq, off) = (seg.seq, seg.append(rec));
        let path = &seg.path;
        self.state.apply(seq, off, rec).map_err(|why| StorageError::corrupt(path, off as u64, why))
    }

    /// Syncs the full segment, then creates its successor (so a torn write can only ever be in
    /// the newest segment). Costs two extra syncs per segment, i.e. per 64 MiB by default.
    fn rotate(&mut self) -> Result<(), StorageError> {
        let mode = self.opts.sync_mode;
        let cur = self.segments.back_mut().ok_or_else(no_segment)?;
        cur.sync(mode)?;
        let next = cur.seq + 1;
        self.synced_hard_state = self.state.hard_state;
        self.create_segment(next)
    }

    fn current(&self) -> &Segment {
        // Invariant: there is always at least one segment after `open`.
        &self.segments[self.segments.len() - 1]
    }

    /// Records a new hard state (not yet durable: call `sync`). Term and commit never decrease.
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        let old = self.state.hard_state;
        if hs == old {
            return Ok(());
        }
        if hs.term < old.term || hs.commit < old.commit {
            return Err(StorageError::Invalid(format!("hard state {hs:?} goes back from {old:?}")));
        }
        if hs.term == old.term && old.vote != 0 && hs.vote != old.vote {
            return Err(StorageError::Invalid(format!(
                "vote changed within term {}: {} -> {}",
                hs.term, old.vote, hs.vote
            )));
        }
        self.write(&Record::HardState(hs))?;
        self.write_out()
    }

    /// Hands the newest segment's appended records to the kernel, so that reads (through the
    /// mapping) see them. Called at the end of every public operation that writes: one `pwrite`
    /// per batch, not one per record.
    fn write_out(&mut self) -> Result<(), StorageError> {
        self.segments.back_mut().ok_or_else(no_segment)?.write_out()
    }

    /// Makes everything written since the last sync durable with one msync/fdatasync (older
    /// segments were already synced at rotation).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let mode = self.opts.sync_mode;
        let seg = self.segments.back_mut().ok_or_else(no_segment)?;
        seg.sync(mode)?;
        self.synced_hard_state = self.state.hard_state;
        debug_assert!(self.segments.iter().all(|s| s.synced_pos == s.write_pos));
        Ok(())
    }

    /// Folds everything up to `snapshot_index` into a snapshot the caller has made durable:
    /// writes and syncs a Compact record, then deletes segments holding only compacted entries.
    /// If the log has `snapshot_index` with a different term, the whole log is discarded (Raft
    /// Figure 13, steps 6-7). A snapshot beyond the log empties it: the next append is at
    /// `snapshot_index + 1`.
    pub fn compact(&mut self, snapshot_index: u64, snapshot_term: u64) -> Result<(), StorageError> {
        if snapshot_index <= self.state.floor.0 {
            return Ok(());
        }
        if let Some(t) = self.state.term(snapshot_index) {
            if t != snapshot_term {
                self.write(&Record::Truncate { index: snapshot_index - 1 })?;
            }
        }
        self.write(&Record::Compact { index: snapshot_index, term: snapshot_term })?;
        self.sync()?;
        self.delete_compacted_segments()
    }

    /// Deletes, oldest first, segments that hold no live entry (never the newest one), so a
    /// crash midway leaves a contiguous sequence.
    fn delete_compacted_segments(&mut self) -> Result<(), StorageError> {
        let keep_seq = match self.state.slots.front() {
            Some(s) => s.seq,
            None => self.current().seq,
        };
        while self.segments.len() > 1 && self.segments[0].seq < keep_seq {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            let path = seg.path.clone();
            drop(seg);
            fs::remove_file(&path).map_err(|e| StorageError::io("remove segment", &path, e))?;
            // One directory sync per deletion: unlinks must reach the disk oldest first, or a
            // power failure could leave a gap in the sequence (a hard error on open).
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` (by `Entry::size_bytes`) but at least one if
    /// the range is non-empty. Every record's CRC is checked again before it is returned.
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted { index: lo, first_index: self.first_index() });
        }
        if hi > self.state.last + 1 {
            return Err(StorageError::Unavailable { index: hi - 1, last_index: self.state.last });
        }
        if lo > hi {
            return Err(StorageError::Invalid(format!("range [{lo}, {hi}) is inverted")));
        }
        let mut out = Vec::with_capacity((hi - lo).min(1024) as usize);
        let mut total = 0usize;
        for index in lo..hi {
            let e = self.read_entry(index)?;
            total += e.size_bytes();
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn read_entry(&self, index: u64) -> Result<Entry, StorageError> {
        let slot = *self.state.slot(index).ok_or(StorageError::Unavailable { index, last_index: self.state.last })?;
        let first_seq = self.segments[0].seq;
        let seg = &self.segments[(slot.seq - first_seq) as usize];
        debug_assert_eq!(seg.seq, slot.seq);
        let off = slot.offset as usize;
        let d = record::decode(seg.bytes(), off)
            .map_err(|e| StorageError::corrupt(&seg.path, off as u64, e.to_string()))?;
        match d.record {
            Record::Entry { index: i, term, kind, data } if i == index && term == slot.term => {
                Ok(Entry { index, term, kind, data: Bytes::copy_from_slice(data) })
            }
            other => Err(StorageError::corrupt(
                &seg.path,
                off as u64,
                format!("expected entry {index} term {}, found {other:?}", slot.term),
            )),
        }
    }

    /// Term of `index` if it is in the log or is the snapshot floor.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.state.term(index)
    }

    /// Index of the first entry still in the log (snapshot index + 1).
    pub fn first_index(&self) -> u64 {
        self.state.floor.0 + 1
    }

    /// Index of the last entry (== snapshot index if the log is empty).
    pub fn last_index(&self) -> u64 {
        self.state.last
    }

    /// The latest hard state written (maybe not yet durable).
    pub fn hard_state(&self) -> HardState {
        self.state.hard_state
    }

    /// The hard state as of the last completed sync: what may be relied on by peers.
    pub fn synced_hard_state(&self) -> HardState {
        self.synced_hard_state
    }

    /// (index, term) of the compaction floor.
    pub fn snapshot_floor(&self) -> (u64, u64) {
        self.state.floor
    }

    /// True if everything written has been synced.
    pub fn is_synced(&self) -> bool {
        self.segments.iter().all(|s| s.synced_pos == s.write_pos)
    }

    /// The newest segment and the offset up to which it is durable; a power failure can only
    /// lose bytes after it (older segments are fully durable).
    pub fn durable_tail(&self) -> (PathBuf, u64) {
        let seg = self.current();
        (seg.path.clone(), seg.synced_pos as u64)
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_invariants(&self) {
        self.state.check_invariants();
        assert!(!self.segments.is_empty());
        assert_eq!(self.state.seq, Some(self.current().seq));
        debug_assert!(self.segments.iter().zip(self.segments.iter().skip(1)).all(|(a, b)| a.seq + 1 == b.seq));
    }
}

fn no_segment() -> StorageError {
    StorageError::Invalid("WAL has no open segment".to_string())
}

/// Takes an exclusive, non-blocking lock on `dir/LOCK` for the life of the WAL. Readers such
/// as raft-dump never take it.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StorageError::io("open lock file", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io("lock", &path, e)),
    }
}

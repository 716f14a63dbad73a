//! The write-ahead log: a sequence of preallocated segment files, read through read-only
//! mappings, written with one `pwrite` + `fdatasync` per batch.
//!
//! Contract with the node layer:
//! - `append` and `set_hard_state` only collect records in memory. Nothing they wrote may be
//!   relied on (acknowledged, voted with) until `sync` returns. `synced_hard_state` tells what is
//!   durable. `sync` ends the batch with a Commit record, writes batch + record in one `pwrite`
//!   and syncs once (group commit: one sync per batch, never per entry).
//! - `append` whose first index is <= `last_index` first writes a Truncate record, so the
//!   conflicting suffix is replaced; recovery replays the same records and reaches the same log.
//! - `compact(i, t)` may only be called after a snapshot covering `i` is durable. It writes a
//!   Compact record, syncs it, and only then deletes whole segments below the first live entry.
//! - `confirm_if_idle` should be called when no batch arrived for a short while (the storage
//!   thread: 10 ms); `allocate_ahead` after a batch was reported durable. Both are cheap no-ops
//!   when there is nothing to do.
//! - Any failed write or sync poisons the WAL: every later call fails (`StorageError::Poisoned`).
//!   After a failed fsync Linux marks the dirty pages clean and reports the error once
//!   (fsyncgate): retrying the sync would "succeed" without the data ever reaching the disk, and
//!   the page cache keeps showing it. So the error is never retried; the node stops, and the next
//!   start reads the newest segment with `read_direct` (the disk's content, not the cache's).
//! - If `open` reported a `Corruption`, the WAL serves the good prefix for reading but refuses to
//!   write until the caller made the recovery guard durable (`MetaStore`) and called `repair`
//!   (`repair_after_corruption` does both in that order). Truncating first and recording the guard
//!   second would let a crash in between forget that entries were lost.
//!
//! Invariants:
//! - One batch in flight: the Commit record of batch n+1 is written only after batch n's sync
//!   returned; a segment is synced completely (ending in a Commit) before its successor is
//!   created. So a Commit record that is on disk and whose batch CRC matches proves that every
//!   earlier byte of the log was synced.
//! - The in-memory `LogState` is exactly what replaying the files gives (`apply` is shared).
//! - Every segment starts with a header that checkpoints floor, last index, hard state and the
//!   batch sequence, so deleting older segments never loses them.
//!
//! Recovery rules (version 2 and 3 segments; implemented in `analyze`, applied in `wal_open`).
//! "Unwritten" below is what a segment is allocated with: zeros in version 2, the fill pattern
//! of `fill` in version 3 (what this code writes):
//! 1. Recovery keeps the records up to the end of the last Commit record that validates in the
//!    chain (record CRC, batch offset, length, batch CRC, sequence number).
//! 2. Damage (bad CRC, bad padding, zeros where a record should be, an inconsistent record)
//!    *before* any Commit record that validates on its own is damage in synced data: corruption,
//!    never a torn tail. Argument: that Commit was written after the previous batch's sync
//!    returned, so every byte before its batch was synced.
//! 3. Damage only after the last validating Commit (the final batch) in the newest segment is a
//!    torn tail if a crash can explain it: each 512-byte sector of the batch is either what was
//!    written or unwritten (the batch went into the unwritten tail of a preallocated segment), so
//!    every stretch that is not a valid record must touch a sector that is all unwritten from the
//!    batch start on. Then the whole final batch is dropped (it was never acknowledged), even if valid
//!    records follow a missing sector (pages written back out of order): never a "hole". Damage a
//!    crash cannot produce (a sector that is neither what was written nor unwritten, e.g. a
//!    flipped bit, or in version 3 a zeroed sector) is corruption.
//! 4. Any byte that is not unwritten after the last Commit of a segment that is not the newest is
//!    corruption.
//! 5. Corruption does not fail `open`: the log is cut at the start of the damaged batch (later
//!    records and segments are dropped) and the report carries a `Corruption` with the first lost
//!    index and a guard (the highest (index, term) any valid record in the dropped part shows).
//!    `repair` makes the cut durable, crash-safely: delete later segments newest first with a
//!    directory sync each (a crash leaves a shorter suffix with the same damage, found again),
//!    then make the damaged segment unwritten again from the cut and sync (a crash leaves the
//!    damage, or unwritten space: either way the log ends at the cut). A damaged header of the first segment cannot be cut
//!    around: `open` fails with `StorageError::Unsalvageable` (file and offset), and the node
//!    layer discards the whole log after recording a guard (`discard_unsalvageable`).
//! 6. Version 1 segments (no Commit records) keep the legacy rules: a bad record followed only by
//!    non-records in the newest segment is a torn tail; anything else is corruption as in 5. The
//!    first start after an upgrade continues in a new version 3 segment (from version 1 or 2).
//!
//! Why version 3 fills unwritten space with a pattern (the closed "residual window"): with zero
//! fill, a *synced and acknowledged* final batch whose damage looks like a crash (a zeroed
//! sector, or a zeroed page holding the whole batch, which then reads as never written) was
//! treated as torn and dropped until the next durable Commit record confirmed it; if this node
//! was one of the only majority that held an entry, the entry was lost (raft-sim found it). No mark
//! written *with* a batch can tell a finished sync from an unfinished one, since out-of-order
//! writeback can leave any subset of an unsynced batch's pages. What can is the content of the
//! space the batch went into: damage yields zeros or flipped bits, a crash yields the old content,
//! and the pattern of `fill` is never zero and never what damage leaves. So rule 3 sees damage in
//! a synced final batch as corruption (rule 5, protocol-aware recovery), at the cost of writing the
//! pattern once when a segment is allocated (ahead of need, off the commit path). What remains:
//! a disk that *drops* a synced write (the old content, the pattern, survives) is not told from a
//! crash here; the recovering-node rules cover amnesia only when it is seen (`raft::recovery`).
//! Errors are assumed to come one at a time: two that damage both a batch's Commit record and
//! the batch can look torn. Confirmations (`confirm_if_idle`) still bound how long a final batch
//! stays unconfirmed. In version 3 they follow the batch with no gap: a legitimate stretch of
//! unwritten space inside the log (version 2's page-aligned confirmations) let a zeroed page
//! after it pass as a torn batch (raft-sim seed 99: a zeroed page took a confirmation and two
//! synced batches).
//!
//! Back of the envelope: a 100-byte entry costs a 136-byte record; a 64 MiB segment holds about
//! 490k of them; each batch adds a 72-byte Commit record (batch of 1: 208 bytes per sync, still
//! one page); a confirmation costs one sync and 72 bytes of segment space per idle period.
//! Allocation writes each segment's bytes once (the pattern), in `spare_step_bytes` steps on the
//! storage thread while the current segment fills: 64 MiB per ~490k small entries.

use super::error::StorageError;
use super::fs::{FileSystem, LockGuard};
use super::log_state::LogState;
use super::record::{self, Commit, Record, COMMIT_RECORD_LEN};
use super::segment::{self, Segment, Spare};
use crate::raft::types::{Entry, HardState};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

pub use super::wal_open::{Corruption, LogPosition, RecoveryReport};

/// Name of the lock file that keeps two nodes off one directory.
pub const LOCK_FILE: &str = "LOCK";

/// Where recovery reads the newest segment from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryRead {
    /// `read_direct`: the disk's content (the only safe choice; see the module doc).
    Direct,
    /// Through the page cache. Unsafe after a failed sync; exists so tests can show the
    /// difference.
    Cached,
}

/// Knobs of the WAL.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// Size of each new segment file (default 64 MiB): a multiple of 4096, at least
    /// `segment::segment_bytes_min(entry_bytes_max)`.
    pub segment_bytes: u64,
    /// Largest entry payload accepted (default `limits::ENTRY_BYTES_MAX`).
    pub entry_bytes_max: usize,
    /// Bytes allocated per step of the spare segment (`allocate_ahead`); 0 allocates every
    /// segment at rotation instead.
    pub spare_step_bytes: u64,
    pub recovery_read: RecoveryRead,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            entry_bytes_max: crate::limits::ENTRY_BYTES_MAX,
            spare_step_bytes: 1 << 20,
            recovery_read: RecoveryRead::Direct,
        }
    }
}

impl WalOptions {
    /// Options for `segment_bytes`-sized segments that accept the largest entry that fits.
    pub fn with_segment_bytes(segment_bytes: u64) -> WalOptions {
        WalOptions { segment_bytes, entry_bytes_max: segment::entry_bytes_max_for(segment_bytes), ..Default::default() }
    }
}

/// A cut that `open` decided on but has not made durable (see `repair`).
pub(super) struct Repair {
    pub cut: usize,
    pub zero_to: usize,
    /// Segments after the cut, oldest first (deleted newest first).
    pub delete: Vec<PathBuf>,
    pub corruption: Corruption,
}

/// The log. See the module documentation for the durability contract.
pub struct Wal {
    pub(super) fs: Arc<dyn FileSystem>,
    pub(super) dir: PathBuf,
    pub(super) opts: WalOptions,
    pub(super) segments: VecDeque<Segment>,
    pub(super) state: LogState,
    pub(super) synced_hard_state: HardState,
    /// The last synced batch has no later durable Commit record yet.
    pub(super) unconfirmed: bool,
    pub(super) spare: Option<Spare>,
    /// A spare step failed for the current segment; rotation allocates synchronously.
    pub(super) spare_failed: bool,
    pub(super) poisoned: Option<String>,
    pub(super) repair: Option<Repair>,
    pub(super) _lock: Box<dyn LockGuard>,
}

impl Wal {
    /// Fails if the WAL is poisoned or waits for `repair`.
    pub(super) fn usable(&self) -> Result<(), StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned { reason: reason.clone() });
        }
        if self.repair.is_some() {
            return Err(StorageError::Invalid(
                "the log has unrepaired corruption: persist the recovery guard, then call Wal::repair".into(),
            ));
        }
        Ok(())
    }

    /// Poisons the WAL if `r` is an I/O or data error (not a caller's contract violation).
    pub(super) fn poison_on<T>(&mut self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            if !matches!(e, StorageError::Invalid(_) | StorageError::Poisoned { .. }) {
                log::error!("{}: WAL poisoned, no further writes: {e}", self.dir.display());
                self.poisoned = Some(e.to_string());
            }
        }
        r
    }

    /// Appends a batch of contiguous entries (not yet durable: call `sync`). If the first index
    /// is <= `last_index`, the suffix from there is replaced.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_batch(entries)?;
        let truncate = first.index <= self.state.last;
        let r = self.append_checked(entries, truncate);
        self.poison_on(r)
    }

    fn append_checked(&mut self, entries: &[Entry], truncate: bool) -> Result<(), StorageError> {
        if truncate {
            self.write(&Record::Truncate { index: entries[0].index - 1 })?;
        }
        for e in entries {
            self.write(&Record::Entry { index: e.index, term: e.term, kind: e.kind, data: &e.data })?;
        }
        debug_assert_eq!(self.state.last, entries[entries.len() - 1].index);
        Ok(())
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
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && (e.index != entries[i - 1].index + 1 || e.term < entries[i - 1].term) {
                return Err(StorageError::Invalid(format!(
                    "batch not contiguous or terms decrease at entry {}",
                    e.index
                )));
            }
            if e.data.len() > self.opts.entry_bytes_max {
                return Err(StorageError::Invalid(format!(
                    "entry {} of {} bytes exceeds the largest entry, {} bytes",
                    e.index,
                    e.data.len(),
                    self.opts.entry_bytes_max
                )));
            }
        }
        Ok(())
    }

    /// Bytes available to records in an empty segment (after its header).
    fn segment_capacity(&self) -> usize {
        self.opts.segment_bytes as usize - record::record_len(record::SEGMENT_HEADER_PAYLOAD_LEN)
    }

    /// Writes one record to the newest segment, rotating first if it and a Commit record do not
    /// fit.
    fn write(&mut self, rec: &Record<'_>) -> Result<(), StorageError> {
        let need = record::record_len(record::payload_len(rec));
        assert!(need + COMMIT_RECORD_LEN <= self.segment_capacity(), "checked by open and check_batch");
        let seq = self.current().seq;
        self.state.check(seq, rec).map_err(StorageError::Invalid)?;
        if need + COMMIT_RECORD_LEN > self.current().remaining() {
            self.rotate()?;
        }
        let seg = self.segments.back_mut().ok_or_else(no_segment)?;
        let (seq, off) = (seg.seq, seg.append(rec));
        let path = &seg.path;
        self.state.apply(seq, off, rec).map_err(|why| StorageError::corrupt(path, off as u64, why))
    }

    /// A Commit record describing the current state (batch fields filled in by the segment).
    fn next_commit(&self) -> Commit {
        let last_term = self.state.term(self.state.last);
        debug_assert!(last_term.is_some(), "the last index always has a known term after open");
        Commit {
            batch_seq: self.state.batch_seq + 1,
            batch_offset: 0,
            batch_len: 0,
            batch_crc: 0,
            last_index: self.state.last,
            last_term: last_term.unwrap_or(0),
            hs_term: self.state.hard_state.term,
            hs_vote: self.state.hard_state.vote,
        }
    }

    /// Ends the pending batch with a Commit record and syncs it (no-op without a batch).
    fn commit_batch(&mut self) -> Result<(), StorageError> {
        let c = self.next_commit();
        let seg = self.segments.back_mut().ok_or_else(no_segment)?;
        if !seg.has_pending() {
            return Ok(());
        }
        let (seq, off, c) = (seg.seq, seg.write_pos, seg.commit(c)?);
        let path = seg.path.clone();
        self.state.apply(seq, off, &Record::Commit(c)).map_err(|why| StorageError::corrupt(&path, off as u64, why))?;
        self.synced_hard_state = self.state.hard_state;
        self.unconfirmed = true;
        Ok(())
    }

    /// Commits and syncs the full segment, then creates its successor (from the spare if it is
    /// ready). Costs two extra syncs and a directory sync per segment.
    pub(super) fn rotate(&mut self) -> Result<(), StorageError> {
        self.commit_batch()?;
        let next = self.current().seq + 1;
        let header = self.state.header_for(next);
        let spare = self.spare.take().filter(|s| s.target == self.opts.segment_bytes);
        let seg = Segment::create(self.fs.as_ref(), &self.dir, header, self.opts.segment_bytes, spare)?;
        self.state
            .apply(next, 0, &Record::SegmentHeader(header))
            .map_err(|why| StorageError::corrupt(&seg.path, 0, why))?;
        self.segments.push_back(seg);
        // The new segment's durable header proves the old segment's last batch was synced.
        self.unconfirmed = false;
        self.spare_failed = false;
        Ok(())
    }

    pub(super) fn current(&self) -> &Segment {
        // Invariant: there is always at least one segment after `open`.
        &self.segments[self.segments.len() - 1]
    }

    /// Records a new hard state (not yet durable: call `sync`). Term and commit never decrease.
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.usable()?;
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
        let r = self.write(&Record::HardState(hs));
        self.poison_on(r)
    }

    /// Makes everything appended since the last sync durable: one Commit record, one `pwrite`,
    /// one fdatasync (older segments were synced at rotation).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        let r = self.commit_batch();
        let r = self.poison_on(r);
        debug_assert!(r.is_err() || self.is_synced());
        r
    }

    /// If the last synced batch is not yet confirmed by a later durable Commit record, writes
    /// and syncs a confirmation (see the module doc: it closes the window in which damage to that
    /// batch would look like a torn write). Also takes one `allocate_ahead` step. Returns true if
    /// it wrote a confirmation. Call when no batch arrived for a short while.
    pub fn confirm_if_idle(&mut self) -> Result<bool, StorageError> {
        self.usable()?;
        let mut wrote = false;
        if self.unconfirmed && !self.current().has_pending() {
            let c = self.next_commit();
            let seg = self.segments.back_mut().ok_or_else(no_segment)?;
            let (seq, path) = (seg.seq, seg.path.clone());
            let r = seg.confirm(c);
            match self.poison_on(r)? {
                Some((off, c)) => {
                    let r = self.state.apply(seq, off, &Record::Commit(c));
                    r.map_err(|why| StorageError::corrupt(&path, off as u64, why))?;
                    wrote = true;
                }
                None => {
                    // No room left for a confirmation: the next segment's header confirms the
                    // batch instead (it checkpoints the last index), so the window does not stay
                    // open until the segment would have rotated anyway.
                    log::debug!("{}: no room for a confirmation; rotating", path.display());
                    let r = self.rotate();
                    self.poison_on(r)?;
                    wrote = true;
                }
            }
            self.unconfirmed = false;
        }
        self.allocate_ahead()?;
        Ok(wrote)
    }

    /// One step of allocating the next segment ahead of need (`spare_step_bytes`, synced), once
    /// the current segment is half full, so that rotation does not stall for a whole segment of
    /// fill-writing. A failure here is not fatal: it is logged, the spare is dropped, and
    /// rotation allocates synchronously (where ENOSPC is an error). Returns true if it did work.
    pub fn allocate_ahead(&mut self) -> Result<bool, StorageError> {
        self.usable()?;
        if !self.allocation_due() {
            return Ok(false);
        }
        let step = self.opts.spare_step_bytes;
        if self.spare.is_none() {
            match Spare::start(self.fs.as_ref(), &self.dir, self.opts.segment_bytes) {
                Ok(s) => self.spare = Some(s),
                Err(e) => return Ok(self.drop_spare(e)),
            }
        }
        let r = self.spare.as_mut().map_or(Ok(()), |s| s.step(step));
        match r {
            Ok(()) => Ok(true),
            Err(e) => Ok(self.drop_spare(e)),
        }
    }

    /// Whether a batch of `count` entries holding `payload_bytes` (and a hard state) could
    /// rotate into a next segment that is not allocated yet: rotation would then write the rest
    /// of that segment itself (tens of MiB, synced). Errs on the side of yes.
    pub fn may_rotate_unprepared(&self, count: usize, payload_bytes: u64) -> bool {
        let spare_ready = self.spare.as_ref().is_some_and(|s| s.is_ready() && s.target == self.opts.segment_bytes);
        if spare_ready {
            return false;
        }
        // Per record: header plus the fixed fields of an entry or a hard state (under 64 bytes).
        let records = count as u64 + 1;
        let need = payload_bytes + records * (record::record_len(0) as u64 + 64) + 2 * COMMIT_RECORD_LEN as u64;
        need > self.current().remaining() as u64
    }

    /// Whether `allocate_ahead` has a step to take.
    pub fn allocation_due(&self) -> bool {
        let cur = self.current();
        let started = self.opts.spare_step_bytes != 0 && !self.spare_failed && cur.write_pos >= cur.len() / 2;
        started && !self.spare.as_ref().is_some_and(Spare::is_ready)
    }

    fn drop_spare(&mut self, e: StorageError) -> bool {
        log::warn!("{}: allocating the next segment ahead failed ({e}); rotation will allocate it", self.dir.display());
        self.spare_failed = true;
        if let Some(s) = self.spare.take() {
            let _ = self.fs.remove_file(&s.path);
        }
        false
    }

    /// Folds everything up to `snapshot_index` into a snapshot the caller has made durable:
    /// writes and syncs a Compact record, then deletes segments holding only compacted entries.
    /// If the log has `snapshot_index` with a different term, the whole log is discarded (Raft
    /// Figure 13, steps 6-7). A snapshot beyond the log empties it: the next append is at
    /// `snapshot_index + 1`.
    pub fn compact(&mut self, snapshot_index: u64, snapshot_term: u64) -> Result<(), StorageError> {
        self.usable()?;
        if snapshot_index <= self.state.floor.0 {
            return Ok(());
        }
        let r = self.compact_checked(snapshot_index, snapshot_term);
        self.poison_on(r)
    }

    fn compact_checked(&mut self, snapshot_index: u64, snapshot_term: u64) -> Result<(), StorageError> {
        if let Some(t) = self.state.term(snapshot_index) {
            if t != snapshot_term {
                self.write(&Record::Truncate { index: snapshot_index - 1 })?;
            }
        }
        self.write(&Record::Compact { index: snapshot_index, term: snapshot_term })?;
        self.commit_batch()?;
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
            self.fs.remove_file(&path).map_err(|e| StorageError::io("remove segment", &path, e))?;
            // One directory sync per deletion: unlinks must reach the disk oldest first, or a
            // power failure could leave a gap in the sequence (a hard error on open).
            segment::sync_dir(self.fs.as_ref(), &self.dir)?;
        }
        Ok(())
    }
}

pub(super) fn no_segment() -> StorageError {
    StorageError::Invalid("WAL has no open segment".to_string())
}

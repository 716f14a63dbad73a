//! Reading the WAL: entries (CRC checked again on every read, zero-copy from the segment
//! mapping on `RealFs`) and the accessors the node and the tools use.

use super::error::StorageError;
use super::record::{self, Record};
use super::wal::Wal;
use crate::raft::types::{Entry, HardState};
use std::path::{Path, PathBuf};

impl Wal {
    /// Entries in `[lo, hi)`, at most `max_bytes` (by `Entry::size_bytes`) but at least one if
    /// the range is non-empty. Every record's CRC is checked again before it is returned.
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned { reason: reason.clone() });
        }
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
        let seg = self.segments.get((slot.seq - first_seq) as usize).ok_or_else(|| {
            StorageError::Invalid(format!("entry {index} is in segment {} which is not open", slot.seq))
        })?;
        debug_assert_eq!(seg.seq, slot.seq);
        let off = slot.offset as usize;
        let bytes = seg.read(off, record::record_len(slot.payload_len as usize))?;
        let d = record::decode(&bytes, 0).map_err(|e| StorageError::corrupt(&seg.path, off as u64, e.to_string()))?;
        match d.record {
            Record::Entry { index: i, term, kind, data } if i == index && term == slot.term => {
                Ok(Entry { index, term, kind, data: bytes.slice_ref(data) })
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

    /// True after a failed write or sync: every later call fails.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// True if the last synced batch has no later durable Commit record yet (see
    /// `confirm_if_idle`).
    pub fn is_unconfirmed(&self) -> bool {
        self.unconfirmed
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

    /// Bytes of segment files in use: full older segments plus the used part of the newest.
    pub fn log_bytes(&self) -> u64 {
        let older: u64 = self.segments.iter().take(self.segments.len() - 1).map(|s| s.len() as u64).sum();
        older + self.current().synced_pos as u64
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn check_invariants(&self) {
        self.state.check_invariants();
        assert!(!self.segments.is_empty());
        assert_eq!(self.state.seq, Some(self.current().seq));
        debug_assert!(self.segments.iter().zip(self.segments.iter().skip(1)).all(|(a, b)| a.seq + 1 == b.seq));
    }
}

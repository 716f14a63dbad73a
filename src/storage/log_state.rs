//! The in-memory index of the WAL, rebuilt by replaying records (pure, no I/O).
//!
//! The same `apply` runs when the WAL writes a record and when recovery reads it back, so the
//! state after a reopen is the state before it by construction. `raft-dump --verify` uses it too.
//!
//! Invariants (checked by `check_invariants` and `validate`):
//! - `floor.0 <= last`; live entries are exactly `last - slots.len() + 1 ..= last`, contiguous.
//! - After a complete replay, live entries start right after the floor: no hole between the
//!   snapshot and the log.
//! - Slots are ordered by segment sequence (entries are only ever appended to the newest segment).

use super::record::{Record, SegmentHeader};
use crate::raft::types::HardState;
use std::collections::VecDeque;

/// Where a live entry's record sits: segment sequence number and byte offset of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub term: u64,
    pub seq: u64,
    pub offset: u32,
    pub payload_len: u32,
}

/// The replayed state of the log.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// (index, term) of the last entry folded into a snapshot; (0, 0) initially.
    pub floor: (u64, u64),
    /// Index of the last entry in the log (== floor.0 when the log is empty).
    pub last: u64,
    pub hard_state: HardState,
    /// One slot per live entry, oldest first.
    pub slots: VecDeque<Slot>,
    /// Sequence number of the last segment header applied, if any.
    pub seq: Option<u64>,
    /// Sequence number of the last batch commit record applied (version 2 segments).
    pub batch_seq: u64,
}

impl LogState {
    /// Index of the first live entry (== last + 1 when the log is empty).
    pub fn first_live(&self) -> u64 {
        self.last - self.slots.len() as u64 + 1
    }

    /// The slot holding `index`, if it is a live entry.
    pub fn slot(&self, index: u64) -> Option<&Slot> {
        let first = self.first_live();
        if index < first || index > self.last {
            return None;
        }
        self.slots.get((index - first) as usize)
    }

    /// Term of `index` if it is live or is the floor.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.floor.0 {
            return Some(self.floor.1);
        }
        self.slot(index).map(|s| s.term)
    }

    /// Checks that `record` may follow the current state in segment `seq`, without changing
    /// anything. The WAL calls this before writing, so that it never writes a record that
    /// recovery would reject.
    pub fn check(&self, seq: u64, record: &Record<'_>) -> Result<(), String> {
        match *record {
            Record::SegmentHeader(h) => return self.check_header(seq, &h),
            _ => self.require_header(seq)?,
        }
        match *record {
            Record::Entry { index, term, .. } => {
                if index != self.last + 1 {
                    return Err(format!("index gap: entry {index} follows last index {}", self.last));
                }
                if let Some(prev) = self.slots.back() {
                    if term < prev.term {
                        return Err(format!("entry {index} has term {term} below previous term {}", prev.term));
                    }
                }
            }
            Record::Truncate { index } => {
                if index < self.floor.0 || index >= self.last {
                    return Err(format!("truncate to {index} outside [{}, {})", self.floor.0, self.last));
                }
            }
            Record::Compact { index, .. } => {
                if index <= self.floor.0 {
                    return Err(format!("compact to {index} not above floor {}", self.floor.0));
                }
            }
            Record::Commit(c) => self.check_commit(&c)?,
            Record::HardState(_) | Record::SegmentHeader(_) => {}
        }
        Ok(())
    }

    /// A Commit record must restate the state its batch left behind.
    fn check_commit(&self, c: &super::record::Commit) -> Result<(), String> {
        if c.batch_seq != self.batch_seq + 1 {
            return Err(format!("commit of batch {} follows batch {}", c.batch_seq, self.batch_seq));
        }
        let last_term = self.term(self.last).unwrap_or(c.last_term);
        let mine = (self.last, last_term, self.hard_state.term, self.hard_state.vote);
        let theirs = (c.last_index, c.last_term, c.hs_term, c.hs_vote);
        if mine != theirs {
            return Err(format!(
                "commit record (last index, term, hs term, vote) {theirs:?} disagrees with the replayed state {mine:?}"
            ));
        }
        Ok(())
    }

    /// Applies one record found at (`seq`, `offset`) after `check`ing it. Errors describe the
    /// inconsistency; the caller adds file and offset.
    pub fn apply(&mut self, seq: u64, offset: usize, record: &Record<'_>) -> Result<(), String> {
        self.check(seq, record)?;
        match *record {
            Record::SegmentHeader(h) => {
                if self.seq.is_none() {
                    // The oldest surviving segment: its header is our starting checkpoint.
                    // Entries at or below prev_index lived in deleted segments; `validate`
                    // checks that a later Compact covered them.
                    self.floor = (h.floor_index, h.floor_term);
                    self.last = h.prev_index;
                    self.hard_state = h.hard_state;
                    self.slots.clear();
                    self.batch_seq = h.batch_seq;
                }
                self.seq = Some(seq);
            }
            Record::Commit(c) => self.batch_seq = c.batch_seq,
            Record::Entry { index, term, data, .. } => {
                let offset = u32::try_from(offset).map_err(|_| "offset beyond 4 GiB".to_string())?;
                self.slots.push_back(Slot { term, seq, offset, payload_len: data.len() as u32 });
                self.last = index;
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Truncate { index } => {
                let keep = index.saturating_sub(self.first_live() - 1);
                self.slots.truncate(keep as usize);
                self.last = index;
            }
            Record::Compact { index, term } => {
                self.floor = (index, term);
                if index >= self.last {
                    self.slots.clear();
                    self.last = index;
                } else {
                    let drop = (index + 1).saturating_sub(self.first_live());
                    self.slots.drain(..drop as usize);
                }
            }
        }
        self.check_invariants();
        Ok(())
    }

    fn require_header(&self, seq: u64) -> Result<(), String> {
        if self.seq != Some(seq) {
            return Err("record before the segment header".to_string());
        }
        Ok(())
    }

    fn check_header(&self, seq: u64, h: &SegmentHeader) -> Result<(), String> {
        if h.seq != seq {
            return Err(format!("segment header says seq {} but the file name says {seq}", h.seq));
        }
        match self.seq {
            None if h.prev_index < h.floor_index => Err("segment header prev_index below its floor".to_string()),
            None => Ok(()),
            Some(prev) if seq != prev + 1 => Err(format!("segment {seq} follows segment {prev}")),
            Some(_) if super::record::has_commit_records(h.version) && h.batch_seq != self.batch_seq => Err(format!(
                "segment header says the last batch before it was {}, the replayed log says {}",
                h.batch_seq, self.batch_seq
            )),
            Some(_) => {
                // The term of the last index is unknown if its entry lived in a deleted segment.
                let term = self.term(self.last).unwrap_or(h.prev_term);
                let expect = (self.last, term, self.floor, self.hard_state);
                let found = (h.prev_index, h.prev_term, (h.floor_index, h.floor_term), h.hard_state);
                if expect != found {
                    return Err(format!("segment header {found:?} disagrees with the replayed state {expect:?}"));
                }
                Ok(())
            }
        }
    }

    /// Checks the end state of a full replay: every index between the floor and the last index
    /// has a record. Returns a description of the hole otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.first_live() != self.floor.0 + 1 {
            return Err(format!(
                "index gap: entries {}..{} are missing (snapshot floor {}, first entry on disk {})",
                self.floor.0 + 1,
                self.first_live(),
                self.floor.0,
                self.first_live()
            ));
        }
        Ok(())
    }

    pub fn check_invariants(&self) {
        debug_assert!(self.floor.0 <= self.last);
        debug_assert!(self.slots.len() as u64 <= self.last);
        debug_assert!(self.first_live() > self.floor.0 || self.slots.is_empty());
    }

    /// Header describing the current state, for a new segment with sequence `seq`.
    pub fn header_for(&self, seq: u64) -> SegmentHeader {
        SegmentHeader {
            version: super::record::SEGMENT_VERSION,
            seq,
            prev_index: self.last,
            prev_term: self.term(self.last).unwrap_or(0),
            floor_index: self.floor.0,
            floor_term: self.floor.1,
            hard_state: self.hard_state,
            batch_seq: self.batch_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn e(index: u64, term: u64) -> Record<'static> {
        Record::Entry { index, term, kind: EntryKind::Normal, data: b"x" }
    }

    #[test]
    fn truncate_and_compact_follow_raft_rules() {
        let mut s = LogState::default();
        s.apply(1, 0, &Record::SegmentHeader(s.header_for(1))).unwrap();
        for i in 1..=10 {
            s.apply(1, 64 * i as usize, &e(i, 1)).unwrap();
        }
        assert!(s.apply(1, 0, &e(12, 1)).is_err(), "gap must be rejected");
        s.apply(1, 0, &Record::Truncate { index: 6 }).unwrap();
        assert_eq!(s.last, 6);
        s.apply(1, 0, &Record::Compact { index: 4, term: 1 }).unwrap();
        assert_eq!((s.first_live(), s.last), (5, 6));
        assert_eq!(s.term(4), Some(1));
        assert_eq!(s.term(3), None);
        s.apply(1, 0, &Record::Compact { index: 9, term: 3 }).unwrap();
        assert_eq!((s.first_live(), s.last), (10, 9));
        s.validate().unwrap();
    }

    #[test]
    fn missing_prefix_is_a_gap_unless_compacted() {
        let mut s = LogState::default();
        let mut h = s.header_for(5);
        h.prev_index = 20;
        s.apply(5, 0, &Record::SegmentHeader(h)).unwrap();
        s.apply(5, 96, &e(21, 2)).unwrap();
        assert!(s.validate().is_err());
        s.apply(5, 200, &Record::Compact { index: 20, term: 2 }).unwrap();
        s.validate().unwrap();
    }
}

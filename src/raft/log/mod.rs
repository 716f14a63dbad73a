//! The core's view of the replicated log: a snapshot prefix, the term of every index after it,
//! and the entries after it that are held in memory.
//!
//! Invariants (asserted):
//! - `snapshot_index <= applied <= committed <= last_index()`;
//! - the terms cover `(snapshot_index, last_index()]` and never decrease along the log;
//! - entries in memory are contiguous and end at `last_index()`; they start at `mem_first()`;
//! - every entry not yet applied or not yet persisted is in memory (`mem_first() <= applied + 1`
//!   and `mem_first() <= persisted + 1`): eviction only drops entries storage holds durably and
//!   the state machine has seen;
//! - a committed entry is never truncated (that would break state machine safety);
//! - `persisted <= last_index()`, and every entry at or below `persisted` is durable with the
//!   content it has now; entries from `unstable_from` on have not yet been handed to storage.
//!
//! Memory: the applied and durable entries kept are bounded by the log window
//! (`RaftConfig::log_window_bytes_max`, payload bytes); older ones are evicted and read back from
//! the WAL when a slow follower needs them (the core asks for them with a `LoadRequest`). What is
//! not yet applied or persisted stays, bounded by the leader's uncommitted-bytes limit and the
//! append window. The terms cost 16 bytes per term change.

mod terms;

use std::collections::VecDeque;

pub use terms::TermRuns;

use super::types::{Entry, Index, SnapshotMeta, Term};

/// Why a range of entries cannot be read from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Folded into the snapshot: only the snapshot can bring a follower past it.
    Compacted,
    /// Evicted from memory but still in the WAL: load it.
    Evicted,
}

#[derive(Debug)]
pub struct RaftLog {
    terms: TermRuns,
    /// In-memory entries: `[mem_first(), last_index()]`.
    entries: VecDeque<Entry>,
    /// Payload bytes of `entries`.
    mem_bytes: usize,
    pub(crate) committed: Index,
    pub(crate) applied: Index,
    /// First index that has not been handed to storage in a ready batch.
    pub(crate) unstable_from: Index,
    /// Entries up to here are durable with their current content.
    pub(crate) persisted: Index,
    /// The latest snapshot, to offer followers that fell behind the compacted prefix.
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// A snapshot received from the leader that storage has not been handed yet.
    pub(crate) pending_snapshot: Option<SnapshotMeta>,
}

/// What storage gives a restarting log.
pub struct RestoredLog {
    pub snapshot: Option<SnapshotMeta>,
    /// The tail of the log held in memory, contiguous, ending at the last index (a non-empty log
    /// always gives at least its last entry).
    pub entries: Vec<Entry>,
    /// Terms of the whole log after the snapshot as runs (first index, term); empty when
    /// `entries` starts right after the snapshot (the terms are then the entries').
    pub terms: Vec<(Index, Term)>,
    pub commit: Index,
    /// What the state machine applied before the core started (at least the snapshot index).
    pub applied: Index,
}

impl RaftLog {
    /// A log restored from durable state: everything given is already persisted.
    pub fn restore(r: RestoredLog) -> Result<RaftLog, String> {
        let (floor, floor_term) = r.snapshot.as_ref().map_or((0, 0), |s| (s.index, s.term));
        let terms = if r.terms.is_empty() {
            let mut terms = TermRuns::new(floor, floor_term);
            for (i, entry) in r.entries.iter().enumerate() {
                let expected = floor + 1 + i as u64;
                if entry.index != expected || entry.term < terms.last_term() {
                    let why = format!("restored log breaks at index {} (expected {expected})", entry.index);
                    return Err(why);
                }
                terms.push(entry.index, entry.term);
            }
            terms
        } else {
            // The last entry is always given, so the runs' end is known.
            let last = r.entries.last().map_or(floor, |e| e.index);
            TermRuns::from_runs(floor, floor_term, &r.terms, last)?
        };
        let last = terms.last();
        let mem_first = last + 1 - r.entries.len() as u64;
        let contiguous = r.entries.iter().enumerate().all(|(i, e)| e.index == mem_first + i as u64);
        if !contiguous || r.entries.iter().any(|e| terms.term(e.index) != Some(e.term)) {
            return Err(format!("restored entries do not match the log's terms ending at {last}"));
        }
        let committed = r.commit.max(floor);
        let applied = r.applied.max(floor);
        if committed > last || applied > committed || mem_first > applied + 1 {
            return Err(format!(
                "restored log is inconsistent: snapshot {floor} applied {applied} commit {committed} last {last}, \
                 entries in memory from {mem_first}"
            ));
        }
        let mem_bytes = r.entries.iter().map(|e| e.data.len()).sum();
        Ok(RaftLog {
            terms,
            entries: r.entries.into(),
            mem_bytes,
            committed,
            applied,
            unstable_from: last + 1,
            persisted: last,
            snapshot: r.snapshot,
            pending_snapshot: None,
        })
    }

    /// The ordering invariants of the module doc. Cheap (O(1)), so release builds check them
    /// each time a batch is handed out: a violation means applied or committed state is wrong.
    pub fn check_invariants(&self) {
        let snapshot_index = self.snapshot_index();
        assert!(
            snapshot_index <= self.applied && self.applied <= self.committed && self.committed <= self.last_index(),
            "log order broken: snapshot {snapshot_index} applied {} committed {} last {}",
            self.applied,
            self.committed,
            self.last_index()
        );
        assert!(self.persisted <= self.last_index(), "persisted {} beyond last {}", self.persisted, self.last_index());
        assert!(
            self.mem_first() <= self.applied.min(self.persisted) + 1,
            "entry {} was evicted before it was applied and durable",
            self.mem_first()
        );
        debug_assert!(self.entries.back().is_none_or(|e| e.index == self.last_index()));
    }

    pub fn first_index(&self) -> Index {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> Index {
        self.terms.last()
    }

    pub fn last_term(&self) -> Term {
        self.terms.last_term()
    }

    pub fn snapshot_index(&self) -> Index {
        self.terms.floor()
    }

    pub fn snapshot_term(&self) -> Term {
        self.terms.floor_term()
    }

    /// The first index held in memory (`last_index() + 1` when none is).
    pub fn mem_first(&self) -> Index {
        self.last_index() + 1 - self.entries.len() as u64
    }

    /// Payload bytes of the entries held in memory.
    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// The term of the entry at `index`, or `None` if it is compacted away or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        self.terms.term(index)
    }

    /// The entry at `index` if it is held in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.mem_first();
        if index < first || index > self.last_index() {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The entries held in memory, ascending.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Paper §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries `[lo, last]` from memory, at most `max_bytes` of them but always at least one if any
    /// exist, at most `max_count`.
    pub fn slice(&self, lo: Index, max_bytes: usize, max_count: usize) -> Result<Vec<Entry>, Unavailable> {
        if lo <= self.snapshot_index() {
            return Err(Unavailable::Compacted);
        }
        if lo < self.mem_first() {
            return Err(Unavailable::Evicted);
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = lo;
        while let Some(entry) = self.entry(index) {
            bytes += entry.size_bytes();
            if !out.is_empty() && (bytes > max_bytes || out.len() >= max_count) {
                break;
            }
            out.push(entry.clone());
            index += 1;
        }
        Ok(out)
    }

    /// Leader path: append entries of its own term at the end.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "leader append must extend the log");
        self.terms.push(entry.index, entry.term);
        self.mem_bytes += entry.data.len();
        self.entries.push_back(entry);
    }

    /// Follower path (paper Figure 2, AppendEntries receiver steps 2–5). Returns the index of the
    /// last new entry on success, `None` if the log does not contain `(prev_index, prev_term)`.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: &[Entry],
    ) -> Option<Index> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(conflict) = entries.iter().find(|e| !self.matches(e.index, e.term)) {
            assert!(
                conflict.index > self.committed,
                "entry {} (term {}) conflicts with committed prefix up to {}",
                conflict.index,
                conflict.term,
                self.committed
            );
            let start = (conflict.index - prev_index - 1) as usize;
            self.truncate_and_append(&entries[start..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
        assert!(first > self.snapshot_index() && first <= self.last_index() + 1, "append at {first} leaves a gap");
        // Conflicts are above the commit index, hence above applied: they are in memory.
        assert!(first >= self.mem_first(), "truncation at {first} below the memory window {}", self.mem_first());
        let keep = (first - self.mem_first()) as usize;
        let dropped: usize = self.entries.iter().skip(keep).map(|e| e.data.len()).sum();
        self.entries.truncate(keep);
        self.mem_bytes -= dropped;
        self.terms.truncate_after(first - 1);
        self.unstable_from = self.unstable_from.min(first);
        self.persisted = self.persisted.min(first - 1);
        for entry in entries {
            self.terms.push(entry.index, entry.term);
            self.mem_bytes += entry.data.len();
            self.entries.push_back(entry.clone());
        }
    }

    /// The largest index `<= index` whose term is `<= term`, and that term: where a leader and a
    /// follower may agree (fast log backtracking).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(t) if t > term && index > self.snapshot_index() => index -= 1,
                Some(t) => return (index, t),
                None => return (index, 0),
            }
        }
    }

    pub fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(index <= self.last_index(), "commit {index} beyond last index {}", self.last_index());
        self.committed = index;
        true
    }

    /// Paper §5.4.2: only an entry of the current term commits by counting replicas.
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        index > self.committed && self.term(index) == Some(term) && self.commit_to(index)
    }

    /// Committed entries not yet handed to the application, up to `max_bytes` (at least one).
    pub fn next_committed(&self, max_bytes: usize) -> Vec<Entry> {
        let lo = self.applied + 1;
        if lo > self.committed {
            return Vec::new();
        }
        let count = (self.committed - self.applied) as usize;
        let entries = self.slice(lo, max_bytes, count);
        debug_assert!(entries.is_ok(), "unapplied entries are always in memory");
        entries.unwrap_or_default()
    }

    pub fn has_next_committed(&self) -> bool {
        self.committed > self.applied
    }

    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index >= self.applied && index <= self.committed,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    pub fn unstable_entries(&self) -> Vec<Entry> {
        if self.unstable_from > self.last_index() {
            return Vec::new();
        }
        let entries = self.slice(self.unstable_from, usize::MAX, usize::MAX);
        debug_assert!(entries.is_ok(), "unpersisted entries are always in memory");
        entries.unwrap_or_default()
    }

    /// Storage has made entries up to `last_handed` durable. Entries truncated and rewritten since
    /// they were handed out are not yet durable in their new form, hence the `min`.
    pub fn persisted_to(&mut self, last_handed: Index) {
        let durable = last_handed.min(self.unstable_from - 1);
        if durable > self.persisted {
            self.persisted = durable;
        }
    }

    /// Replaces the whole log with a snapshot received from the leader. The application restores
    /// its state from the snapshot, so applied and committed jump to its index.
    pub fn restore_snapshot(&mut self, snapshot: SnapshotMeta) {
        let index = snapshot.index;
        assert!(index > self.committed, "snapshot {index} would move commit {} backwards", self.committed);
        self.terms = TermRuns::new(index, snapshot.term);
        self.entries.clear();
        self.mem_bytes = 0;
        self.committed = index;
        self.applied = index;
        self.unstable_from = index + 1;
        self.persisted = index;
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
    }

    /// Drops entries folded into `snapshot` (taken by the application at or below `applied`).
    pub fn compact(&mut self, snapshot: SnapshotMeta) -> Result<(), String> {
        let index = snapshot.index;
        if index <= self.snapshot_index() {
            return Ok(()); // an older snapshot than the one we have: nothing to drop
        }
        if index > self.applied {
            return Err(format!("cannot compact to {index}: only {} is applied", self.applied));
        }
        if index > self.persisted {
            return Err(format!("cannot compact to {index}: only {} is persisted", self.persisted));
        }
        if self.term(index) != Some(snapshot.term) {
            return Err(format!("snapshot at {index} has term {}, log has {:?}", snapshot.term, self.term(index)));
        }
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.mem_bytes -= e.data.len();
            }
        }
        self.terms.compact(index, snapshot.term);
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Drops the oldest in-memory entries while more than `window_bytes_max` payload bytes are
    /// held, keeping every entry not yet applied or not yet persisted.
    pub fn evict(&mut self, window_bytes_max: usize) {
        let evictable_to = self.applied.min(self.persisted);
        while self.mem_bytes > window_bytes_max && self.entries.front().is_some_and(|e| e.index <= evictable_to) {
            if let Some(e) = self.entries.pop_front() {
                self.mem_bytes -= e.data.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use bytes::Bytes;

    fn ent(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::new() }
    }

    fn restore(snapshot: Option<SnapshotMeta>, entries: Vec<Entry>, commit: Index) -> Result<RaftLog, String> {
        RaftLog::restore(RestoredLog { snapshot, entries, terms: Vec::new(), commit, applied: 0 })
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, &t)| ent(i as u64 + 1, t)).collect();
        restore(None, entries, 0).expect("valid log")
    }

    #[test]
    fn conflicting_suffix_is_replaced() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let last = log.maybe_append(2, 1, 0, &[ent(3, 3), ent(4, 3), ent(5, 3)]);
        assert_eq!(last, Some(5));
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.unstable_from, 3);
        assert_eq!(log.persisted, 2);
    }

    #[test]
    fn matching_entries_are_not_truncated() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        // A stale, shorter append must not truncate the longer matching log.
        assert_eq!(log.maybe_append(1, 1, 0, &[ent(2, 1)]), Some(2));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.persisted, 4);
    }

    #[test]
    fn mismatched_prev_is_rejected() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.maybe_append(3, 3, 0, &[ent(4, 3)]), None);
        assert_eq!(log.maybe_append(5, 2, 0, &[]), None);
    }

    #[test]
    fn commit_follows_leader_but_not_past_new_entries() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.maybe_append(1, 1, 10, &[ent(2, 1)]);
        assert_eq!(log.committed, 2);
    }

    #[test]
    fn find_conflict_by_term_skips_higher_terms() {
        let log = log_with_terms(&[1, 1, 4, 4, 5, 5]);
        assert_eq!(log.find_conflict_by_term(6, 4), (4, 4));
        assert_eq!(log.find_conflict_by_term(6, 3), (2, 1));
        assert_eq!(log.find_conflict_by_term(10, 5), (6, 5));
        assert_eq!(log.find_conflict_by_term(6, 0), (0, 0));
    }

    #[test]
    fn restore_rejects_gaps_and_commit_beyond_end() {
        assert!(restore(None, vec![ent(1, 1), ent(3, 1)], 0).is_err());
        assert!(restore(None, vec![ent(1, 1)], 2).is_err());
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_with_terms(&[1, 2, 3, 4]);
        log.commit_to(3);
        log.applied_to(3);
        let snap = SnapshotMeta { index: 3, term: 3, conf: Default::default() };
        log.compact(snap).expect("compact");
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.term(2), None);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.slice(3, usize::MAX, usize::MAX), Err(Unavailable::Compacted));
        assert_eq!(log.slice(4, usize::MAX, usize::MAX).map(|v| v.len()), Ok(1));
    }
}

//! The core's view of the replicated log: a snapshot prefix, then the entries after it.
//!
//! Invariants (asserted):
//! - `snapshot_index <= applied <= committed <= last_index()`;
//! - entries are contiguous, starting at `snapshot_index + 1`;
//! - a committed entry is never truncated (that would break state machine safety);
//! - `persisted <= last_index()`, and every entry at or below `persisted` is durable with the
//!   content it has now; entries from `unstable_from` on have not yet been handed to storage.
//!
//! The whole post-snapshot log is held in memory. The node bounds it by compacting (taking a
//! snapshot) every N applied entries: at 100 B per entry and the default 10,000-entry threshold
//! that is about 1.3 MiB per node.

use std::collections::VecDeque;

use super::types::{Entry, Index, Snapshot, Term};

#[derive(Debug)]
pub struct RaftLog {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    pub(crate) committed: Index,
    pub(crate) applied: Index,
    /// First index that has not been handed to storage in a ready batch.
    pub(crate) unstable_from: Index,
    /// Entries up to here are durable with their current content.
    pub(crate) persisted: Index,
    /// The latest snapshot, kept to send to followers that fell behind the compacted prefix.
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot received from the leader that storage has not been handed yet.
    pub(crate) pending_snapshot: Option<Snapshot>,
}

impl RaftLog {
    /// A log restored from durable state: everything given is already persisted.
    pub fn restore(snapshot: Option<Snapshot>, entries: Vec<Entry>, commit: Index) -> Result<RaftLog, String> {
        let (snapshot_index, snapshot_term) = snapshot.as_ref().map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let mut expected = snapshot_index + 1;
        let mut prev_term = snapshot_term;
        for entry in &entries {
            if entry.index != expected {
                return Err(format!("restored log has a gap: expected index {expected}, found {}", entry.index));
            }
            if entry.term < prev_term {
                return Err(format!(
                    "restored log has term {} at index {} after term {prev_term}",
                    entry.term, entry.index
                ));
            }
            expected += 1;
            prev_term = entry.term;
        }
        let last = expected - 1;
        let committed = commit.max(snapshot_index);
        if committed > last {
            return Err(format!("restored commit index {committed} is past the last log index {last}"));
        }
        Ok(RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            committed,
            applied: snapshot_index,
            unstable_from: last + 1,
            persisted: last,
            snapshot,
            pending_snapshot: None,
        })
    }

    /// The ordering invariants of the module doc. Cheap (O(1)), so release builds check them
    /// each time a batch is handed out: a violation means applied or committed state is wrong.
    pub fn check_invariants(&self) {
        assert!(
            self.snapshot_index <= self.applied
                && self.applied <= self.committed
                && self.committed <= self.last_index(),
            "log order broken: snapshot {} applied {} committed {} last {}",
            self.snapshot_index,
            self.applied,
            self.committed,
            self.last_index()
        );
        assert!(self.persisted <= self.last_index(), "persisted {} beyond last {}", self.persisted, self.last_index());
        debug_assert!(self.entries.front().is_none_or(|e| e.index == self.snapshot_index + 1));
    }

    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The term of the entry at `index`, or `None` if it is compacted away or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.snapshot_index - 1) as usize].term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.snapshot_index - 1) as usize])
    }

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

    /// Entries `[lo, last]`, at most `max_bytes` of them but always at least one if any exist.
    /// `None` if `lo` is compacted away.
    pub fn slice(&self, lo: Index, max_bytes: usize, max_count: usize) -> Option<Vec<Entry>> {
        if lo <= self.snapshot_index {
            return None;
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
        Some(out)
    }

    /// Leader path: append entries of its own term at the end.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "leader append must extend the log");
        assert!(entry.term >= self.last_term(), "terms in the log never decrease");
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
        assert!(first > self.snapshot_index && first <= self.last_index() + 1, "append at {first} leaves a gap");
        self.entries.truncate((first - self.snapshot_index - 1) as usize);
        self.unstable_from = self.unstable_from.min(first);
        self.persisted = self.persisted.min(first - 1);
        self.entries.extend(entries.iter().cloned());
    }

    /// The largest index `<= index` whose term is `<= term`, and that term: where a leader and a
    /// follower may agree (fast log backtracking).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(t) if t > term && index > self.snapshot_index => index -= 1,
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
        self.slice(lo, max_bytes, count).unwrap_or_default()
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
        self.slice(self.unstable_from, usize::MAX, usize::MAX).unwrap_or_default()
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
    pub fn restore_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index > self.committed, "snapshot {index} would move commit {} backwards", self.committed);
        self.snapshot_index = index;
        self.snapshot_term = snapshot.meta.term;
        self.entries.clear();
        self.committed = index;
        self.applied = index;
        self.unstable_from = index + 1;
        self.persisted = index;
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
    }

    /// Drops entries folded into `snapshot` (taken by the application at or below `applied`).
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let index = snapshot.meta.index;
        if index <= self.snapshot_index {
            return Ok(()); // an older snapshot than the one we have: nothing to drop
        }
        if index > self.applied {
            return Err(format!("cannot compact to {index}: only {} is applied", self.applied));
        }
        if index > self.persisted {
            return Err(format!("cannot compact to {index}: only {} is persisted", self.persisted));
        }
        if self.term(index) != Some(snapshot.meta.term) {
            return Err(format!("snapshot at {index} has term {}, log has {:?}", snapshot.meta.term, self.term(index)));
        }
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = snapshot.meta.term;
        self.snapshot = Some(snapshot);
        Ok(())
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

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, &t)| ent(i as u64 + 1, t)).collect();
        RaftLog::restore(None, entries, 0).expect("valid log")
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
        assert!(RaftLog::restore(None, vec![ent(1, 1), ent(3, 1)], 0).is_err());
        assert!(RaftLog::restore(None, vec![ent(1, 1)], 2).is_err());
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_with_terms(&[1, 2, 3, 4]);
        log.commit_to(3);
        log.applied_to(3);
        let snap = Snapshot {
            meta: crate::raft::SnapshotMeta { index: 3, term: 3, conf: Default::default() },
            data: Bytes::new(),
        };
        log.compact(snap).expect("compact");
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.term(2), None);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.slice(3, usize::MAX, usize::MAX), None);
        assert_eq!(log.slice(4, usize::MAX, usize::MAX).map(|v| v.len()), Some(1));
    }
}

//! The term of every index of the log, including entries no longer held in memory, stored as
//! runs of equal terms: a few bytes per term change instead of per entry. The core needs terms
//! for every index it may be asked about (append consistency checks, conflict hints, commit
//! rule) even when the entries themselves live only in the WAL.
//!
//! Invariants: runs start strictly ascending within `(floor, last]`, terms strictly ascend from
//! run to run (terms along a log never decrease, and equal neighbours are merged), and the first
//! run starts at `floor + 1` whenever `last > floor`.

use crate::raft::types::{Index, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermRuns {
    /// The compaction floor: the snapshot's last index and term.
    floor: Index,
    floor_term: Term,
    last: Index,
    /// (first index of the run, term), ascending.
    runs: Vec<(Index, Term)>,
}

impl TermRuns {
    /// An empty log after a snapshot at (`floor`, `floor_term`).
    pub fn new(floor: Index, floor_term: Term) -> TermRuns {
        TermRuns { floor, floor_term, last: floor, runs: Vec::new() }
    }

    /// Rebuilds runs from `(first index, term)` pairs that cover `(floor, last]`, refusing runs
    /// that do not start at `floor + 1`, go backwards, or lower the term.
    pub fn from_runs(floor: Index, floor_term: Term, runs: &[(Index, Term)], last: Index) -> Result<TermRuns, String> {
        let mut terms = TermRuns::new(floor, floor_term);
        for (i, &(start, term)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(last, |&(next, _)| next.saturating_sub(1));
            if start != terms.last + 1 || end < start || term < terms.last_term() {
                return Err(format!("log terms run {i} ({start}..={end} term {term}) does not follow {}", terms.last));
            }
            terms.push_run(start, end, term);
        }
        if terms.last != last {
            return Err(format!("log terms cover up to {} but the log ends at {last}", terms.last));
        }
        Ok(terms)
    }

    pub fn floor(&self) -> Index {
        self.floor
    }

    pub fn floor_term(&self) -> Term {
        self.floor_term
    }

    pub fn last(&self) -> Index {
        self.last
    }

    pub fn last_term(&self) -> Term {
        self.runs.last().map_or(self.floor_term, |&(_, term)| term)
    }

    /// The term at `index`, or `None` below the floor or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.floor {
            return Some(self.floor_term);
        }
        if index < self.floor || index > self.last {
            return None;
        }
        // The last run that starts at or before `index`.
        let at = self.runs.partition_point(|&(start, _)| start <= index);
        debug_assert!(at > 0, "index {index} above the floor has a run");
        self.runs.get(at.wrapping_sub(1)).map(|&(_, term)| term)
    }

    /// Appends `index` (the next one) with `term`.
    pub fn push(&mut self, index: Index, term: Term) {
        self.push_run(index, index, term);
    }

    fn push_run(&mut self, start: Index, end: Index, term: Term) {
        assert_eq!(start, self.last + 1, "terms must extend the log");
        assert!(term >= self.last_term(), "terms along the log never decrease");
        if self.runs.last().is_none_or(|&(_, t)| t != term) {
            self.runs.push((start, term));
        }
        self.last = end;
    }

    /// Keeps `(floor, index]`.
    pub fn truncate_after(&mut self, index: Index) {
        assert!(index >= self.floor && index <= self.last, "truncate to {index} outside the log");
        while self.runs.last().is_some_and(|&(start, _)| start > index) {
            self.runs.pop();
        }
        self.last = index;
    }

    /// Moves the floor up to (`index`, `term`). Beyond the end, the log becomes empty there.
    pub fn compact(&mut self, index: Index, term: Term) {
        if index >= self.last {
            *self = TermRuns::new(index, term);
            return;
        }
        // Keep the run that holds `index + 1`, the new first index, and every run after it.
        let keep_from = self.runs.partition_point(|&(start, _)| start <= index + 1).saturating_sub(1);
        self.runs.drain(..keep_from);
        if let Some(first) = self.runs.first_mut() {
            first.0 = first.0.max(index + 1);
        }
        self.floor = index;
        self.floor_term = term;
    }

    /// The runs, for a caller that persists or inspects them.
    pub fn runs(&self) -> &[(Index, Term)] {
        &self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms_of(floor: Index, list: &[Term]) -> TermRuns {
        let mut t = TermRuns::new(floor, 1);
        for (i, &term) in list.iter().enumerate() {
            t.push(floor + 1 + i as u64, term);
        }
        t
    }

    #[test]
    fn runs_answer_every_index_like_a_list() {
        let list = [1, 1, 2, 2, 2, 5, 7, 7];
        let t = terms_of(10, &list);
        assert_eq!(t.runs(), &[(11, 1), (13, 2), (16, 5), (17, 7)]);
        for (i, &term) in list.iter().enumerate() {
            assert_eq!(t.term(11 + i as u64), Some(term));
        }
        assert_eq!(t.term(10), Some(1), "the floor");
        assert_eq!(t.term(9), None);
        assert_eq!(t.term(19), None);
    }

    #[test]
    fn truncation_and_compaction_keep_the_right_terms() {
        let mut t = terms_of(0, &[1, 1, 2, 2, 3]);
        t.truncate_after(3);
        assert_eq!((t.last(), t.last_term()), (3, 2));
        t.push(4, 4);
        assert_eq!(t.term(4), Some(4));
        t.compact(2, 1);
        assert_eq!(t.term(2), Some(1));
        assert_eq!(t.term(1), None);
        assert_eq!(t.term(3), Some(2));
        assert_eq!(t.runs().first(), Some(&(3, 2)));
        t.compact(9, 6);
        assert_eq!((t.last(), t.last_term(), t.term(9)), (9, 6, Some(6)));
    }

    #[test]
    fn rebuilt_runs_are_checked() {
        let t = TermRuns::from_runs(5, 2, &[(6, 2), (9, 3)], 12).expect("valid");
        assert_eq!(t.term(8), Some(2));
        assert_eq!(t.term(12), Some(3));
        assert!(TermRuns::from_runs(5, 2, &[(7, 2)], 12).is_err(), "gap after the floor");
        assert!(TermRuns::from_runs(5, 2, &[(6, 3), (9, 2)], 12).is_err(), "terms go down");
        assert!(TermRuns::from_runs(5, 2, &[(6, 3)], 4).is_err(), "ends before it starts");
    }
}

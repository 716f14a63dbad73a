//! The configurations in force along the log: a base (the snapshot's, or one folded from
//! committed change entries at start-up) and one configuration after each change entry above it.
//!
//! Invariants: change indexes ascend strictly and are all above the base index; the last
//! configuration is the one in force now. Entries are bounded by the log itself (one per change
//! entry above the snapshot).

use super::{ConfChange, ConfEntry, Configuration};
use crate::raft::types::{Entry, EntryKind, Index, Term};

#[derive(Clone, Debug, Default)]
pub struct ConfLog {
    base_index: Index,
    base: Configuration,
    /// (index, term, configuration after that entry): only entries that were valid changes.
    changes: Vec<(Index, Term, Configuration)>,
}

impl ConfLog {
    pub fn new(base_index: Index, base: Configuration) -> ConfLog {
        ConfLog { base_index, base, changes: Vec::new() }
    }

    /// The configuration in force now.
    pub fn current(&self) -> &Configuration {
        self.changes.last().map_or(&self.base, |(_, _, c)| c)
    }

    /// The index of the entry that made the current configuration (the base's index if none).
    pub fn current_index(&self) -> Index {
        self.changes.last().map_or(self.base_index, |(i, _, _)| *i)
    }

    /// The configuration in force at `index` (after the entry at `index`), or `None` if `index`
    /// is below the base (history that was folded away).
    pub fn at(&self, index: Index) -> Option<&Configuration> {
        if index < self.base_index {
            return None;
        }
        Some(self.changes.iter().rev().find(|(i, _, _)| *i <= index).map_or(&self.base, |(_, _, c)| c))
    }

    /// Records the configuration a change entry states, if it decodes and is a valid one of the
    /// kind its transition says (joint after an enter, plain after a leave). Returns true if the
    /// configuration changed. Entries at or below the last recorded index are ignored (they are
    /// already accounted for). Every node decides from the entry's bytes alone, so all agree.
    pub fn append(&mut self, entry: &Entry) -> bool {
        if entry.kind != EntryKind::ConfChange || entry.index <= self.current_index() {
            return false;
        }
        let Ok(decoded) = ConfEntry::decode(&entry.data) else { return false };
        let Ok(next) = Configuration::from_conf_state(&decoded.conf) else { return false };
        let joint = matches!(decoded.change, ConfChange::Enter(_));
        if next.is_joint() != joint || next.is_empty() {
            return false;
        }
        self.changes.push((entry.index, entry.term, next));
        true
    }

    /// Forgets every change the log no longer holds as it was recorded (truncated or
    /// overwritten). `term_at(index)` is the log's term there. Returns true if the current
    /// configuration changed.
    pub fn retain_matching(&mut self, term_at: impl Fn(Index) -> Option<Term>) -> bool {
        let keep = self.changes.iter().take_while(|(i, t, _)| term_at(*i) == Some(*t)).count();
        let changed = keep != self.changes.len();
        self.changes.truncate(keep);
        changed
    }

    /// The log was compacted to `index`: the configuration there becomes the base.
    pub fn compact(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        let keep_from = self.changes.iter().position(|(i, _, _)| *i > index).unwrap_or(self.changes.len());
        if let Some((_, _, c)) = self.changes.drain(..keep_from).next_back() {
            self.base = c;
        }
        self.base_index = index;
    }

    /// A snapshot replaced the log: its configuration is the only one.
    pub fn reset(&mut self, index: Index, base: Configuration) {
        *self = ConfLog::new(index, base);
    }
}

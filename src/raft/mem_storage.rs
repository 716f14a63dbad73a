//! An in-memory model of what a node holds durably, for the core's tests and the simulator:
//! exactly the state a batch's `persist` leaves behind, nothing volatile.
//!
//! It follows the ready contract to the letter: a snapshot replaces the whole log; entries
//! replace every stored entry from their first index on; the hard state is overwritten. The
//! real storage (`crate::storage`) keeps the same contract on files. Snapshot images are not
//! modelled: the core handles snapshot metadata only.

use super::raw_node::{Ready, RecoveryChange};
use super::recovery::Recovery;
use super::types::{Entry, HardState, Index, SnapshotMeta};
use super::Restored;

/// Durable hard state, snapshot and log of one node.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The protocol-aware recovery guard, while recovering.
    pub recovery: Option<Recovery>,
}

impl MemStorage {
    /// Makes one ready batch durable, in the order the contract gives.
    pub fn persist(&mut self, ready: &Ready) {
        self.persist_parts(ready.snapshot.as_ref(), &ready.entries, ready.hard_state, ready.recovery);
    }

    /// [`MemStorage::persist`] of a batch given by its parts (as the node's storage job holds them).
    pub fn persist_parts(
        &mut self,
        snapshot: Option<&SnapshotMeta>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        recovery: Option<RecoveryChange>,
    ) {
        if let Some(s) = snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
        }
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(entries.iter().cloned());
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        match recovery {
            Some(RecoveryChange::Recovering(guard, _)) => self.recovery = Some(guard),
            Some(RecoveryChange::Recovered) => self.recovery = None,
            None => {}
        }
        debug_assert!(self.entries.windows(2).all(|w| w[1].index == w[0].index + 1));
    }

    /// The node's own snapshot at `snapshot.index` is durable: forget the entries under it.
    pub fn compact(&mut self, snapshot: SnapshotMeta) {
        let index = snapshot.index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = Some(snapshot);
    }

    /// The last index held durably (by an entry or the snapshot), if any.
    pub fn last_index(&self) -> Option<Index> {
        self.entries.last().map(|e| e.index).or(self.snapshot.as_ref().map(|s| s.index))
    }

    /// Durable entries from `lo` for a [`LoadRequest`](super::LoadRequest): at most `max_bytes`
    /// (at least one), or `None` if `lo` is compacted or beyond the durable log.
    pub fn load(&self, lo: Index, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.entries.first()?.index;
        if lo < first || lo > self.last_index()? {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in &self.entries[(lo - first) as usize..] {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    /// What a restarted core starts from.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            log_terms: Vec::new(),
            applied: 0,
            recovery: self.recovery,
            conf_entries: Vec::new(),
        }
    }
}

//! Protocol-aware recovery (Alagappan et al., FAST 2018): what a node does after it lost log
//! entries it may have acknowledged — corruption found in synced data at start-up, or amnesia
//! detected at run time (a disk that dropped synced writes, a restored old backup).
//!
//! # The rules
//! A *recovering* node carries a **guard** `(term, index)`: an upper bound, in Raft's
//! up-to-date order (term first, then index), on every entry it may have acknowledged before the
//! loss. Storage derives it from what survived of the lost log; when nothing tells how far the
//! log reached it is `(durable term, ∞)`: no entry can have been acknowledged in a term after the
//! durable term, since an acknowledgement leaves only after its term is durable.
//! While recovering, a node
//! 1. never campaigns (no pre-vote, no election);
//! 2. grants a vote or pre-vote only to a candidate whose last (term, index) is at least the
//!    guard (and that passes every usual check);
//! 3. tells every leader it hears from that its log ends earlier than the leader may believe
//!    ([`MessageBody::LogLost`]), so that the leader stops counting acknowledgements it no
//!    longer has and re-sends the lost suffix;
//! 4. otherwise follows the leader normally: appends, snapshots, truthful acknowledgements.
//!
//! It is a full voter again once its own *durable* log is at least as up-to-date as the guard.
//!
//! # Why this is safe
//! Leader completeness (paper §5.4.3) needs only this of a voter that stored a committed entry
//! `e`: it grants votes only to candidates at least as up-to-date as a log that contains `e`. A
//! recovering node compares candidates with the guard, which is at least as up-to-date as the
//! log it had when it acknowledged `e`, so it is at least as strict as it was; the proof goes
//! through unchanged, stale acknowledgements counted by an old leader included. Once its durable
//! log reaches the guard, comparing with its own log is at least as strict as comparing with the
//! guard. A node that does not campaign cannot become a leader missing `e`.
//!
//! The price is liveness, never safety: with an unknown guard the node votes only for a
//! candidate that already holds an entry of a newer term, so a cluster that needs its vote to
//! elect anyone waits for another node. If a majority lost data at once nothing can be decided,
//! which is right: the storage layer reports the files and offsets and an operator decides.

use super::consensus::Raft;
use super::message::MessageBody;
use super::types::{Index, Term};

/// The guard of a recovering node: see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recovery {
    pub term: Term,
    pub index: Index,
}

impl Recovery {
    /// Nothing tells how far the lost log reached: bounded only by the durable term.
    pub fn unknown_extent(durable_term: Term) -> Recovery {
        Recovery { term: durable_term, index: Index::MAX }
    }

    /// True if a log ending at (`last_term`, `last_index`) is at least as up-to-date as the guard.
    pub fn is_covered_by(&self, last_term: Term, last_index: Index) -> bool {
        (last_term, last_index) >= (self.term, self.index)
    }
}

impl Raft {
    /// The node is recovering (its guard), or `None` if it is a full voter.
    pub fn recovery(&self) -> Option<Recovery> {
        self.recovery
    }

    /// Starts (or widens) recovery: the node lost entries it may have acknowledged, up to `guard`.
    pub(super) fn enter_recovery(&mut self, guard: Recovery, why: &'static str) {
        let guard = self.recovery.map_or(guard, |old| old.max(guard));
        if self.recovery != Some(guard) {
            self.recovery = Some(guard);
            self.recovery_reason = why;
            self.recovery_changed = true;
            self.log_lost_reported_term = 0;
        }
    }

    /// Rule 2: may a vote go to a candidate whose log ends at (`last_term`, `last_index`)?
    pub(super) fn guard_allows_vote(&self, last_term: Term, last_index: Index) -> bool {
        self.recovery.is_none_or(|guard| guard.is_covered_by(last_term, last_index))
    }

    /// Rule 3: tell the current leader where this node's log really ends: once per term, and
    /// again whenever the leader probes past that end (the report may have been lost).
    pub(super) fn report_log_lost(&mut self, leader: super::types::NodeId) {
        if self.recovery.is_none() || self.log_lost_reported_term == self.term {
            return;
        }
        self.log_lost_reported_term = self.term;
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        self.send(leader, MessageBody::LogLost { last_index, last_term });
    }

    /// The end of recovery: the durable log reached the guard.
    pub(super) fn maybe_finish_recovery(&mut self) {
        let Some(guard) = self.recovery else { return };
        let durable_last = self.log.persisted;
        let durable_term = self.log.term(durable_last).unwrap_or(0);
        if guard.is_covered_by(durable_term, durable_last) {
            self.recovery = None;
            self.recovery_changed = true;
        }
    }

    /// Why the node is recovering (for logs and status), if it is.
    pub fn recovery_reason(&self) -> Option<&'static str> {
        self.recovery.map(|_| self.recovery_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_compare_term_first() {
        let guard = Recovery { term: 5, index: 10 };
        assert!(guard.is_covered_by(5, 10));
        assert!(guard.is_covered_by(6, 1), "a newer term covers any index of an older one");
        assert!(!guard.is_covered_by(5, 9));
        assert!(!guard.is_covered_by(4, 100));
        let unknown = Recovery::unknown_extent(5);
        assert!(!unknown.is_covered_by(5, Index::MAX - 1));
        assert!(unknown.is_covered_by(6, 0));
    }
}

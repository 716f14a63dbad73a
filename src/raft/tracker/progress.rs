//! The leader's view of one follower's replication (etcd-io/raft's `tracker.Progress`).
//!
//! - `Probe`: we do not know where the follower's log ends. Send one append, then wait for its
//!   answer (or a heartbeat response) before sending another.
//! - `Replicate`: the follower accepted our last append; stream entries optimistically, at most
//!   `max_inflight` unacknowledged messages at a time (pipelining with a bounded window).
//! - `Snapshot`: the entries it needs are compacted; a snapshot is on its way. Nothing else is sent
//!   until it is acknowledged or presumed lost.
//!
//! Invariant: `matched < next`.

use super::inflights::Inflights;
use crate::raft::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot { pending_index: Index },
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub matched: Index,
    pub next: Index,
    pub state: ProgressState,
    /// In `Probe`: an append is outstanding, wait for an answer.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest ReadIndex round this follower has confirmed in the current term.
    pub read_seq_acked: u64,
    /// Ticks since a snapshot was sent, to retry one presumed lost.
    pub snapshot_elapsed: u32,
    /// Entries it needs are being read from the WAL: send nothing until they arrive.
    pub loading: bool,
    /// A read back from the WAL for this follower is outstanding. At most one at a time, whatever
    /// the state does meanwhile (a probe, a LogLost), so that loads cannot pile up on the WAL
    /// lane ahead of the leader's own writes; its answer restarts replication.
    pub load_in_flight: bool,
}

impl Progress {
    pub fn new(next: Index, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            read_seq_acked: 0,
            snapshot_elapsed: 0,
            loading: false,
            load_in_flight: false,
        }
    }

    pub fn is_paused(&self) -> bool {
        if self.loading {
            return true;
        }
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    pub fn become_probe(&mut self) {
        self.next = match self.state {
            // The snapshot may or may not have arrived: probe just past it.
            ProgressState::Snapshot { pending_index } => (self.matched + 1).max(pending_index + 1),
            _ => self.matched + 1,
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.loading = false;
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_snapshot(&mut self, pending_index: Index) {
        self.state = ProgressState::Snapshot { pending_index };
        self.snapshot_elapsed = 0;
        self.loading = false;
        self.inflights.reset();
    }

    /// The follower lost every entry after `last_index` (protocol-aware recovery): what it matched
    /// beyond `proven` (at most `last_index`) no longer counts, and replication starts over from
    /// its end.
    pub fn forget_beyond(&mut self, last_index: Index, proven: Index) {
        debug_assert!(proven <= last_index);
        self.matched = self.matched.min(proven);
        self.state = ProgressState::Probe;
        self.next = last_index + 1;
        self.probe_sent = false;
        self.loading = false;
        self.inflights.reset();
        debug_assert!(self.matched < self.next);
    }

    /// A successful append response for `index`. Returns true if `matched` moved forward.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        debug_assert!(self.matched < self.next);
        updated
    }

    /// A rejection of the append whose `prev_log_index` was `rejected`; `hint` is where the
    /// follower's log may match. Returns false if the rejection is stale and should be ignored.
    pub fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next.checked_sub(1) != Some(rejected) {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_rejection_moves_next_to_hint() {
        let mut pr = Progress::new(11, 4);
        assert!(pr.maybe_decrease_to(10, 4));
        assert_eq!(pr.next, 5);
        // A stale rejection for an older probe is ignored.
        assert!(!pr.maybe_decrease_to(10, 2));
    }

    #[test]
    fn replicate_rejection_falls_back_to_match() {
        let mut pr = Progress::new(1, 4);
        pr.maybe_update(7);
        pr.become_replicate();
        pr.next = 20;
        assert!(!pr.maybe_decrease_to(6, 0), "rejection below match is stale");
        assert!(pr.maybe_decrease_to(15, 3));
        assert_eq!(pr.next, 8);
    }

    #[test]
    fn snapshot_state_pauses_until_acknowledged() {
        let mut pr = Progress::new(3, 4);
        pr.become_snapshot(50);
        assert!(pr.is_paused());
        pr.maybe_update(50);
        pr.become_probe();
        assert_eq!(pr.next, 51);
        assert!(!pr.is_paused());
    }
}

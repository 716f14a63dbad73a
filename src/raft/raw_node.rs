//! The ready batch: what the core hands the node to persist, send and apply, and the bookkeeping
//! that tells `advance()` what became durable (etcd-io/raft's `rawnode`, raft-rs `RawNode`).
//!
//! Contract (see also the `raft` module doc): at most one batch is in flight. `ready()` takes it,
//! the node persists `snapshot`, `entries` and `hard_state` with one sync, only then sends
//! `persisted_messages`, applies `committed_entries`, serves `read_states`, and calls
//! `advance()`. `messages` may leave at once, and [`Raft::take_messages`] lets the ones produced
//! while a batch is in flight leave without waiting for it.
//!
//! Invariants: `ready()` panics if a batch is already in flight and `advance()` if none is (a
//! broken driver would otherwise lose or duplicate durable state); entries handed out in a batch
//! count as persisted only after its `advance()`.

use super::consensus::{LoadRequest, Raft, ReadState, Role};
use super::message::Message;
use super::recovery::Recovery;
use super::types::{Entry, HardState, Index, NodeId, SnapshotMeta, Term};

/// One batch of work for the node. Handle it in this order: persist `snapshot`, `entries` and
/// `hard_state` (one sync); then send `persisted_messages`; apply `committed_entries`; answer
/// `read_states` once applied; then call [`Raft::advance`]. `messages` may be sent at once,
/// before or during persistence.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub role: Option<Role>,
    pub term: Term,
    pub leader: NodeId,
    /// Present when term, vote or commit changed since the last batch.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader was accepted: make the log restart after it (compact under its
    /// durable file) and restore the state machine from its image.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append. Any persisted entry at or after `entries[0].index` is discarded first.
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Read contexts that will never get a read state (leadership lost): fail them.
    pub dropped_reads: Vec<u64>,
    /// Present when the recovery state changed: persist it (it must survive a restart).
    pub recovery: Option<RecoveryChange>,
    /// Entries to read back from the WAL for followers; they need no persistence, so they may be
    /// served at once (see [`Raft::take_load_requests`] for those produced mid-batch).
    pub load_requests: Vec<LoadRequest>,
}

/// A change of the node's protocol-aware recovery state (see `recovery.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryChange {
    /// Recovering (again, or with a wider guard), for this reason.
    Recovering(Recovery, &'static str),
    /// A full voter again.
    Recovered,
}

/// What the last `ready()` handed out, so `advance()` knows what became durable.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    last_entry_index: Option<Index>,
}

/// What the previous batch reported, to hand out only changes, and the batch in flight.
#[derive(Debug, Default)]
pub struct BatchState {
    last_hard_state: HardState,
    last_role: Option<Role>,
    last_leader: NodeId,
    in_flight: Option<InFlight>,
}

impl BatchState {
    /// A restarted node: `hard_state` is what storage holds, so it is not handed out again.
    pub fn restored(hard_state: HardState) -> BatchState {
        BatchState { last_hard_state: hard_state, ..BatchState::default() }
    }
}

impl Raft {
    pub(super) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// Takes the messages that may leave at once (heartbeats, appends, pre-votes, heartbeat
    /// responses) without waiting for the batch in flight to be persisted. A node whose disk is
    /// slow keeps its heartbeats on time this way, instead of letting a long `fdatasync` depose a
    /// healthy leader. Persisted messages still wait for their batch.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// True if `ready()` would hand out anything. False while a batch awaits `advance()`.
    pub fn has_ready(&self) -> bool {
        let batch = &self.batch;
        if batch.in_flight.is_some() {
            return false;
        }
        self.hard_state() != batch.last_hard_state
            || batch.last_role != Some(self.role)
            || batch.last_leader != self.leader
            || self.log.pending_snapshot.is_some()
            || self.log.unstable_from <= self.log.last_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.log.has_next_committed()
            || self.read_only.has_output()
            || self.recovery_changed
            || !self.load_requests.is_empty()
    }

    /// Takes the next batch. Must be followed by `advance()` before the next `ready()`.
    pub fn ready(&mut self) -> Ready {
        assert!(self.batch.in_flight.is_none(), "ready() called twice without advance()");
        let hard_state = self.hard_state();
        let entries = self.log.unstable_entries();
        let committed_entries = self.log.next_committed(self.opts.apply_bytes_max);
        if let Some(last) = committed_entries.last() {
            self.log.applied_to(last.index);
        }
        self.log.unstable_from = self.log.last_index() + 1;
        self.batch.in_flight = Some(InFlight { last_entry_index: entries.last().map(|e| e.index) });
        let ready = Ready {
            role: if self.batch.last_role != Some(self.role) { Some(self.role) } else { None },
            term: self.term,
            leader: self.leader,
            hard_state: (hard_state != self.batch.last_hard_state).then_some(hard_state),
            snapshot: self.log.pending_snapshot.take(),
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: self.read_only.take_ready(),
            dropped_reads: self.read_only.take_dropped(),
            recovery: std::mem::take(&mut self.recovery_changed).then_some(match self.recovery {
                Some(guard) => RecoveryChange::Recovering(guard, self.recovery_reason),
                None => RecoveryChange::Recovered,
            }),
            load_requests: std::mem::take(&mut self.load_requests),
        };
        self.batch.last_hard_state = hard_state;
        self.batch.last_role = Some(self.role);
        self.batch.last_leader = self.leader;
        self.log.evict(self.opts.log_window_bytes_max);
        self.log.check_invariants();
        ready
    }

    /// The node has persisted the last ready batch (and applied its committed entries).
    pub fn advance(&mut self) {
        let Some(in_flight) = self.batch.in_flight.take() else {
            panic!("advance() without a ready() in flight");
        };
        if let Some(last) = in_flight.last_entry_index {
            self.log.persisted_to(last);
        }
        self.log.evict(self.opts.log_window_bytes_max);
        self.maybe_finish_recovery();
        if self.role == Role::Leader && self.maybe_commit() {
            self.after_commit();
        }
    }
}

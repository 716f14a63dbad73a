//! ReadIndex (dissertation §6.4): linearizable reads without writing to the log.
//!
//! A read arriving at the leader records the commit index as its read index, then waits for a
//! heartbeat round that starts *after* it to be acknowledged by a quorum: only then is this node
//! known to have still been leader when the read arrived. A new leader does not know the commit
//! index until an entry of its own term has committed, so reads that arrive before that wait
//! ("deferred") and start a round afterwards.
//!
//! Release rules and invariants:
//! - rounds are numbered by a sequence that only grows (it never restarts with a new term: a late
//!   acknowledgement of an old round can then only confirm an older, smaller round);
//! - pending reads are ordered by round, and a read is released only when a quorum has
//!   acknowledged its round or a later one, in arrival order;
//! - at most [`READS_PENDING_MAX`] reads wait (pending plus deferred);
//! - when leadership is lost every waiting read is dropped, and reported as dropped exactly once.

use std::collections::VecDeque;

use super::consensus::{ProposeError, Raft, ReadState, Role, READS_PENDING_MAX};
use super::types::Index;

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    seq: u64,
    ctx: u64,
    index: Index,
}

/// The leader's waiting reads and the heartbeat-round sequence.
#[derive(Debug, Default)]
pub struct ReadOnly {
    seq: u64,
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before an entry of this leader's term committed.
    deferred: Vec<u64>,
    ready: Vec<ReadState>,
    dropped: Vec<u64>,
}

impl ReadOnly {
    /// The latest heartbeat round; heartbeats carry it so that answers confirm it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn is_full(&self) -> bool {
        self.pending.len() + self.deferred.len() >= READS_PENDING_MAX
    }

    /// Starts a new heartbeat round for `ctxs` at read index `index`; returns its sequence.
    fn start_round(&mut self, ctxs: &[u64], index: Index) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        self.pending.extend(ctxs.iter().map(|&ctx| PendingRead { seq, ctx, index }));
        seq
    }

    /// Releases, in order, every pending read whose round `confirmed` says a quorum acknowledged.
    fn release(&mut self, confirmed: impl Fn(u64) -> bool) {
        while let Some(front) = self.pending.front().copied() {
            if !confirmed(front.seq) {
                break;
            }
            self.pending.pop_front();
            self.ready.push(ReadState { ctx: front.ctx, index: front.index });
        }
    }

    /// Leadership is lost: every waiting read will never be served.
    pub fn drop_all(&mut self) {
        self.dropped.extend(self.pending.drain(..).map(|r| r.ctx));
        self.dropped.append(&mut self.deferred);
    }

    pub fn has_output(&self) -> bool {
        !self.ready.is_empty() || !self.dropped.is_empty()
    }

    pub fn take_ready(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.ready)
    }

    pub fn take_dropped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.dropped)
    }
}

impl Raft {
    /// Requests a linearizable read (ReadIndex, dissertation §6.4). A `ReadState` with this `ctx`
    /// appears in a later ready once leadership is confirmed by a quorum.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.read_only.is_full() {
            return Err(ProposeError::Busy);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            // A new leader does not know the commit index until an entry of its term commits.
            self.read_only.deferred.push(ctx);
            return Ok(());
        }
        self.start_reads(&[ctx]);
        Ok(())
    }

    /// Starts the reads that waited for this leader's first commit; called once it happened.
    pub(super) fn start_deferred_reads(&mut self) {
        if !self.read_only.deferred.is_empty() && self.log.term(self.log.committed) == Some(self.term) {
            let waiting = std::mem::take(&mut self.read_only.deferred);
            self.start_reads(&waiting);
        }
    }

    fn start_reads(&mut self, ctxs: &[u64]) {
        let index = self.log.committed;
        if self.tracker.config().is_singleton(self.id) {
            self.read_only.ready.extend(ctxs.iter().map(|&ctx| ReadState { ctx, index }));
            return;
        }
        self.read_only.start_round(ctxs, index);
        self.broadcast_heartbeat();
    }

    pub(super) fn release_confirmed_reads(&mut self) {
        let (id, tracker) = (self.id, &self.tracker);
        self.read_only.release(|seq| tracker.read_confirmed(id, seq));
    }
}

//! Client requests waiting for the log: who gets which answer when an entry applies, a read is
//! confirmed, leadership is lost or a snapshot replaces the log. Pure bookkeeping, no I/O.
//!
//! Rules (each has a unit test below):
//! - a write waits under the (index, term) it was proposed at. When the entry at that index
//!   applies with that term, the waiter gets the state machine's result; with another term, the
//!   write was overwritten by another leader's entry: `OutcomeUnknown` (the client retries with
//!   the same session seq, which is safe);
//! - losing leadership answers every waiting write `OutcomeUnknown` (it may still commit under
//!   the next leader) and every read not yet confirmed `NotLeader` (a read changes nothing, so
//!   redirecting it is always safe);
//! - a snapshot installed over the log answers the writes it covers `OutcomeUnknown`;
//! - a confirmed read waits until the state machine has applied its read index, then is served
//!   from the state machine, in arrival order;
//! - every waiter is answered exactly once: it is removed from the tables when it is answered.
//!
//! Bounds: at most [`WRITES_WAITING_MAX`] writes and [`READS_WAITING_MAX`] reads wait; the caller
//! checks [`Requests::writes_full`] / [`Requests::reads_full`] before adding one.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

pub use super::node_metrics::RequestType;
use crate::kv::{ApplyResult, SESSION_REPLIES_MAX};
use crate::raft::{Index, Term};
use crate::wire::{ClientReply, ErrorCode, ErrorReply, FrameBody};

/// Writes proposed and not yet applied, per node.
pub const WRITES_WAITING_MAX: usize = 65_536;
/// Linearizable reads waiting for confirmation or apply, per node.
pub const READS_WAITING_MAX: usize = 65_536;

/// Where an answer goes: a connection (by slab token and its serial, so a reused slot is not
/// answered by mistake) and the request id to echo. The simulator uses the same three numbers
/// for its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub token: usize,
    pub serial: u64,
    pub request_id: u64,
}

/// Why a waiting request is answered without the state machine's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// The write may or may not commit; the client must retry with the same seq to find out.
    OutcomeUnknown(&'static str),
    /// Ask the leader instead (leadership was lost before the read was confirmed).
    NotLeader,
    /// The node is shutting down: a write may still commit elsewhere, retry it (same seq) on
    /// another node; a read may be retried at once.
    ShuttingDown,
}

/// A linearizable read waiting for its ReadIndex round or for apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadWaiter {
    pub waiter: Waiter,
    pub key: Bytes,
}

/// A proposed write: who waits for it, what it is (for the metrics) and when it was proposed
/// (for the proposal-to-commit latency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTicket {
    pub waiter: Waiter,
    pub kind: RequestType,
    pub proposed_at: Instant,
}

#[derive(Clone, Copy, Debug)]
struct WriteWaiter {
    ticket: WriteTicket,
    term: Term,
}

/// A request answered without a result: who, why, and what it was.
pub type AbandonedRequest = (Waiter, Abandoned, RequestType);

/// The tables of waiting client requests of one node. See the module doc for the rules.
#[derive(Debug, Default)]
pub struct Requests {
    writes: BTreeMap<Index, WriteWaiter>,
    /// Reads of this loop iteration, started together as one ReadIndex round.
    reads_batch: Vec<ReadWaiter>,
    reads_awaiting_confirm: BTreeMap<u64, Vec<ReadWaiter>>,
    /// Confirmed rounds by read index, in confirmation order (read indexes only grow).
    reads_awaiting_apply: Vec<(Index, Vec<ReadWaiter>)>,
    reads_waiting: usize,
    next_read_ctx: u64,
}

impl Requests {
    pub fn new() -> Requests {
        Requests { next_read_ctx: 1, ..Requests::default() }
    }

    pub fn writes_waiting(&self) -> usize {
        self.writes.len()
    }

    pub fn reads_waiting(&self) -> usize {
        self.reads_waiting
    }

    /// True if `pending` more writes would exceed the bound.
    pub fn writes_full(&self, pending: usize) -> bool {
        self.writes.len() + pending >= WRITES_WAITING_MAX
    }

    pub fn reads_full(&self) -> bool {
        self.reads_waiting >= READS_WAITING_MAX
    }

    /// A write was proposed at (`index`, `term`).
    pub fn write_proposed(&mut self, index: Index, term: Term, ticket: WriteTicket) {
        let previous = self.writes.insert(index, WriteWaiter { ticket, term });
        // A leader proposes each index once per term, and waiters of an older term are
        // answered when leadership is lost, so a slot is never taken twice.
        debug_assert!(previous.is_none(), "two writes wait on index {index}");
    }

    /// The entry at `index` with `term` was applied: the write waiting there, if any, and
    /// whether its result is the state machine's (`true`) or another leader's entry took the
    /// index (`false`: answer `OutcomeUnknown`).
    pub fn write_applied(&mut self, index: Index, term: Term) -> Option<(WriteTicket, bool)> {
        let w = self.writes.remove(&index)?;
        Some((w.ticket, w.term == term))
    }

    /// A snapshot up to `index` replaced the log: the writes it covers cannot learn their fate.
    pub fn snapshot_installed(&mut self, index: Index) -> Vec<AbandonedRequest> {
        let kept = self.writes.split_off(&(index + 1));
        let covered = std::mem::replace(&mut self.writes, kept);
        let why = Abandoned::OutcomeUnknown("superseded by a snapshot");
        covered.into_values().map(|w| (w.ticket.waiter, why, w.ticket.kind)).collect()
    }

    /// This node stopped leading: every write and every unconfirmed read is answered.
    pub fn leadership_lost(&mut self) -> Vec<AbandonedRequest> {
        let why = Abandoned::OutcomeUnknown("leadership lost before the write committed");
        let mut out: Vec<AbandonedRequest> =
            std::mem::take(&mut self.writes).into_values().map(|w| (w.ticket.waiter, why, w.ticket.kind)).collect();
        let batch = std::mem::take(&mut self.reads_batch);
        out.extend(self.forget_reads(batch).into_iter().map(|r| (r.waiter, Abandoned::NotLeader, RequestType::Get)));
        out
    }

    /// True if any request waits for an answer.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.reads_waiting == 0
    }

    /// The node is shutting down: every waiting request is answered.
    pub fn abandon_all(&mut self) -> Vec<AbandonedRequest> {
        let why = Abandoned::ShuttingDown;
        let mut out: Vec<AbandonedRequest> =
            std::mem::take(&mut self.writes).into_values().map(|w| (w.ticket.waiter, why, w.ticket.kind)).collect();
        let mut reads = std::mem::take(&mut self.reads_batch);
        reads.extend(std::mem::take(&mut self.reads_awaiting_confirm).into_values().flatten());
        reads.extend(std::mem::take(&mut self.reads_awaiting_apply).into_iter().flat_map(|(_, batch)| batch));
        out.extend(self.forget_reads(reads).into_iter().map(|r| (r.waiter, why, RequestType::Get)));
        out
    }

    /// Queues a linearizable read for this iteration's ReadIndex round.
    pub fn read_arrived(&mut self, read: ReadWaiter) {
        self.reads_waiting += 1;
        self.reads_batch.push(read);
    }

    /// Takes this iteration's reads as one round: the context to pass to `Raft::read_index`.
    /// `None` if no read arrived.
    pub fn start_read_round(&mut self) -> Option<u64> {
        if self.reads_batch.is_empty() {
            return None;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let batch = std::mem::take(&mut self.reads_batch);
        self.reads_awaiting_confirm.insert(ctx, batch);
        Some(ctx)
    }

    /// The core refused or dropped round `ctx`: its reads, to be answered with the reason.
    pub fn read_round_failed(&mut self, ctx: u64) -> Vec<ReadWaiter> {
        let batch = self.reads_awaiting_confirm.remove(&ctx).unwrap_or_default();
        self.forget_reads(batch)
    }

    /// Round `ctx` is confirmed at read index `index`: it is served once applied reaches it.
    pub fn read_round_confirmed(&mut self, ctx: u64, index: Index) {
        if let Some(batch) = self.reads_awaiting_confirm.remove(&ctx) {
            debug_assert!(self.reads_awaiting_apply.last().is_none_or(|&(last, _)| last <= index));
            self.reads_awaiting_apply.push((index, batch));
        }
    }

    /// The reads whose read index `applied` has reached, in arrival order; serve them now.
    pub fn reads_servable(&mut self, applied: Index) -> Vec<ReadWaiter> {
        let waiting = std::mem::take(&mut self.reads_awaiting_apply);
        let (ready, later): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(index, _)| *index <= applied);
        self.reads_awaiting_apply = later;
        let reads: Vec<ReadWaiter> = ready.into_iter().flat_map(|(_, batch)| batch).collect();
        self.forget_reads(reads)
    }

    fn forget_reads(&mut self, reads: Vec<ReadWaiter>) -> Vec<ReadWaiter> {
        self.reads_waiting = self.reads_waiting.saturating_sub(reads.len());
        reads
    }
}

/// The reply a client gets for the state machine's result of its write.
pub(super) fn write_reply(result: ApplyResult) -> FrameBody {
    match result {
        ApplyResult::Applied(r) | ApplyResult::Duplicate(r) => FrameBody::Reply(ClientReply::from_write_result(&r)),
        ApplyResult::Registered { session_id } => FrameBody::Reply(ClientReply::Registered { session_id }),
        ApplyResult::SessionExpired { session_id, seq } => FrameBody::Error(ErrorReply::new(
            ErrorCode::SessionExpired,
            format!(
                "session {session_id} is unknown (never registered, or evicted): seq {seq} was not applied now, \
                 but an earlier attempt may have been; register a new session"
            ),
        )),
        ApplyResult::StaleSequence { session_id, seq, floor_seq } => FrameBody::Error(ErrorReply::new(
            ErrorCode::StaleSequence,
            format!(
                "session {session_id}: seq {seq} is below the session's first outstanding {floor_seq}; its reply \
                 was discarded"
            ),
        )),
        ApplyResult::SessionWindowFull { session_id, seq, floor_seq } => FrameBody::Error(ErrorReply::new(
            ErrorCode::SessionWindowFull,
            format!(
                "session {session_id}: seq {seq} is {SESSION_REPLIES_MAX} or more above its first outstanding \
                 {floor_seq}; nothing was applied: get the replies below first"
            ),
        )),
        ApplyResult::Rejected(e) => {
            FrameBody::Error(ErrorReply::new(ErrorCode::Internal, format!("command rejected: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(request_id: u64) -> Waiter {
        Waiter { token: 1, serial: 7, request_id }
    }

    fn ticket(request_id: u64) -> WriteTicket {
        // One instant for every ticket, so that tickets compare equal by value.
        static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        WriteTicket { waiter: waiter(request_id), kind: RequestType::Set, proposed_at: *AT.get_or_init(Instant::now) }
    }

    fn read(request_id: u64, key: &str) -> ReadWaiter {
        ReadWaiter { waiter: waiter(request_id), key: Bytes::from(key.to_string()) }
    }

    #[test]
    fn a_write_gets_its_result_only_when_its_own_entry_applies() {
        let mut r = Requests::new();
        r.write_proposed(5, 2, ticket(1));
        r.write_proposed(6, 2, ticket(2));
        assert_eq!(r.write_applied(4, 2), None, "no write waits there");
        assert_eq!(r.write_applied(5, 2), Some((ticket(1), true)));
        // Another leader's entry (term 3) took index 6: the outcome of write 2 is unknown.
        assert_eq!(r.write_applied(6, 3), Some((ticket(2), false)));
        assert_eq!(r.writes_waiting(), 0);
        assert_eq!(r.write_applied(5, 2), None, "answered exactly once");
    }

    #[test]
    fn stepping_down_answers_every_write_and_every_unconfirmed_read() {
        let mut r = Requests::new();
        r.write_proposed(5, 2, ticket(1));
        r.write_proposed(9, 2, ticket(2));
        r.read_arrived(read(3, "a"));
        let abandoned = r.leadership_lost();
        let lost = Abandoned::OutcomeUnknown("leadership lost before the write committed");
        assert_eq!(
            abandoned,
            vec![
                (waiter(1), lost, RequestType::Set),
                (waiter(2), lost, RequestType::Set),
                (waiter(3), Abandoned::NotLeader, RequestType::Get),
            ]
        );
        assert_eq!((r.writes_waiting(), r.reads_waiting()), (0, 0));
        assert!(r.leadership_lost().is_empty());
    }

    #[test]
    fn a_snapshot_abandons_only_the_writes_it_covers() {
        let mut r = Requests::new();
        for (index, id) in [(3, 1), (4, 2), (8, 3)] {
            r.write_proposed(index, 1, ticket(id));
        }
        let abandoned = r.snapshot_installed(4);
        let ids: Vec<u64> = abandoned.iter().map(|(w, _, _)| w.request_id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(abandoned.iter().all(|(_, why, _)| *why == Abandoned::OutcomeUnknown("superseded by a snapshot")));
        assert_eq!(r.write_applied(8, 1), Some((ticket(3), true)));
    }

    #[test]
    fn reads_of_one_iteration_share_a_round_and_wait_for_apply() {
        let mut r = Requests::new();
        assert_eq!(r.start_read_round(), None, "no reads, no round");
        r.read_arrived(read(1, "a"));
        r.read_arrived(read(2, "b"));
        let ctx = r.start_read_round().expect("a round");
        r.read_arrived(read(3, "c"));
        let ctx2 = r.start_read_round().expect("a second round");
        assert_ne!(ctx, ctx2);
        assert!(r.reads_servable(100).is_empty(), "not confirmed yet");
        r.read_round_confirmed(ctx, 10);
        r.read_round_confirmed(ctx2, 12);
        assert!(r.reads_servable(9).is_empty(), "applied is below the read index");
        let served: Vec<u64> = r.reads_servable(10).iter().map(|x| x.waiter.request_id).collect();
        assert_eq!(served, vec![1, 2]);
        let served: Vec<u64> = r.reads_servable(20).iter().map(|x| x.waiter.request_id).collect();
        assert_eq!(served, vec![3]);
        assert_eq!(r.reads_waiting(), 0);
    }

    #[test]
    fn a_dropped_round_returns_its_reads_once() {
        let mut r = Requests::new();
        r.read_arrived(read(1, "a"));
        let ctx = r.start_read_round().expect("a round");
        assert_eq!(r.read_round_failed(ctx).len(), 1);
        assert!(r.read_round_failed(ctx).is_empty());
        r.read_round_confirmed(ctx, 1); // a late confirmation of a dropped round is ignored
        assert!(r.reads_servable(5).is_empty());
        assert_eq!(r.reads_waiting(), 0);
    }

    #[test]
    fn shutting_down_answers_everything_once() {
        let mut r = Requests::new();
        r.write_proposed(5, 2, ticket(1));
        r.read_arrived(read(2, "a"));
        let ctx = r.start_read_round().expect("round");
        r.read_arrived(read(3, "b"));
        let ctx2 = r.start_read_round().expect("round");
        r.read_round_confirmed(ctx2, 9);
        r.read_arrived(read(4, "c"));
        assert!(!r.is_empty());
        let mut ids: Vec<u64> = r
            .abandon_all()
            .iter()
            .map(|(w, why, _)| {
                assert_eq!(*why, Abandoned::ShuttingDown);
                w.request_id
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert!(r.is_empty());
        assert!(r.read_round_failed(ctx).is_empty(), "answered exactly once");
    }

    #[test]
    fn bounds_count_every_waiting_request() {
        let mut r = Requests::new();
        assert!(!r.writes_full(WRITES_WAITING_MAX - 1));
        assert!(r.writes_full(WRITES_WAITING_MAX));
        for i in 0..READS_WAITING_MAX {
            r.read_arrived(read(i as u64, "k"));
        }
        assert!(r.reads_full());
    }
}

//! The replica's side of the node's metrics: what it counts on its hot path (client replies,
//! proposals, apply, ReadIndex rounds, snapshots, leadership changes) and the state it samples
//! into gauges just before a render.
//!
//! Everything here is optional: a replica without attached metrics (the simulator's) does no
//! work at all. The clock is read here, in the replica, never in the core: proposals are stamped
//! when proposed and observed when applied (leader only), ReadIndex rounds when started and when
//! confirmed, snapshot sends when started and when their last chunk is handed to the transport.
//!
//! Bounds: at most [`READ_ROUND_STAMPS_MAX`] ReadIndex rounds and one snapshot send per follower
//! are stamped at a time; a round that is never confirmed is forgotten when the table is full.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Replica;
use crate::kv::Command;
use crate::raft::{NodeId, Role, Term};
use crate::server::node_metrics::{NodeMetrics, Outcome, ProposalFailure, RequestType, SnapshotOp};
use crate::server::requests::WriteTicket;
use crate::wire::{ClientRequest, FrameBody};

/// ReadIndex rounds stamped at once (rounds start at most once per loop iteration and are
/// confirmed within a heartbeat round trip, so a handful is the normal count).
pub const READ_ROUND_STAMPS_MAX: usize = 1024;

/// What the replica keeps to feed the metrics. See the module doc.
#[derive(Default)]
pub struct ReplicaObserver {
    metrics: Option<Arc<NodeMetrics>>,
    /// ReadIndex rounds by context, in start order.
    read_rounds: VecDeque<(u64, Instant)>,
    /// Snapshot sends in progress, by follower.
    snapshot_sends: BTreeMap<NodeId, Instant>,
    /// The last leadership seen: (term, leader), leader known.
    leadership: Option<(Term, NodeId)>,
    /// The node's HTTP listener, for detailed status reports.
    http_addr: Option<String>,
}

impl ReplicaObserver {
    fn get(&self) -> Option<&NodeMetrics> {
        self.metrics.as_deref()
    }
}

fn is_write(kind: RequestType) -> bool {
    matches!(kind, RequestType::Set | RequestType::Delete | RequestType::Cas | RequestType::Register)
}

impl Replica {
    /// Attaches the node's metrics; from now on the replica updates them.
    pub fn attach_metrics(&mut self, metrics: Arc<NodeMetrics>) {
        self.observer.metrics = Some(metrics);
    }

    pub fn metrics(&self) -> Option<&Arc<NodeMetrics>> {
        self.observer.metrics.as_ref()
    }

    /// The address of the node's HTTP listener, reported in detailed status reports.
    pub fn set_http_addr(&mut self, addr: Option<String>) {
        self.observer.http_addr = addr;
    }

    pub fn http_addr(&self) -> Option<&str> {
        self.observer.http_addr.as_deref()
    }

    /// A client request arrived. Writes and registrations count as proposals received, whatever
    /// becomes of them (every one ends committed, failed, or still pending).
    pub(super) fn note_request(&self, kind: RequestType) {
        if let Some(m) = self.observer.get() {
            if is_write(kind) {
                m.proposals_received.inc();
            }
        }
    }

    /// A reply is about to go out: count it by type and outcome, and a write that did not commit
    /// as a failed proposal.
    pub(super) fn note_reply(&self, kind: RequestType, body: &FrameBody) {
        let Some(m) = self.observer.get() else { return };
        let outcome = Outcome::of_reply(body);
        m.count_request(kind, outcome);
        if is_write(kind) {
            if let Some(failure) = ProposalFailure::of_outcome(outcome) {
                m.count_proposal_failure(failure);
            }
        }
    }

    /// The leader applied its own proposal: it committed.
    pub(super) fn note_committed(&self, ticket: &WriteTicket, now: Instant) {
        let Some(m) = self.observer.get() else { return };
        m.proposals_committed.inc();
        m.proposal_commit_duration.observe_duration(now.saturating_duration_since(ticket.proposed_at));
    }

    pub(super) fn note_applied_batch(&self, duration: Duration) {
        if let Some(m) = self.observer.get() {
            m.apply_duration.observe_duration(duration);
        }
    }

    /// A batch told the current term and leader: count a leadership not seen before.
    pub(super) fn note_leadership(&mut self, term: Term, leader: NodeId) {
        if leader == 0 || self.observer.leadership == Some((term, leader)) {
            return;
        }
        self.observer.leadership = Some((term, leader));
        if let Some(m) = self.observer.get() {
            m.leader_changes.inc();
        }
    }

    pub(super) fn note_read_round_started(&mut self, ctx: u64) {
        if self.observer.metrics.is_none() {
            return;
        }
        let rounds = &mut self.observer.read_rounds;
        if rounds.len() >= READ_ROUND_STAMPS_MAX {
            rounds.pop_front();
        }
        rounds.push_back((ctx, Instant::now()));
    }

    /// Round `ctx` was confirmed (`confirmed`) or dropped: observe and forget it and any round
    /// started before it (rounds finish in order).
    pub(super) fn note_read_round_finished(&mut self, ctx: u64, confirmed: bool) {
        let now = Instant::now();
        while let Some(&(started_ctx, at)) = self.observer.read_rounds.front() {
            if started_ctx > ctx {
                break;
            }
            self.observer.read_rounds.pop_front();
            if started_ctx == ctx && confirmed {
                if let Some(m) = self.observer.get() {
                    m.read_index_duration.observe_duration(now.saturating_duration_since(at));
                }
            }
        }
    }

    pub(super) fn note_snapshot_send_started(&mut self, to: NodeId) {
        if self.observer.metrics.is_some() {
            self.observer.snapshot_sends.entry(to).or_insert_with(Instant::now);
        }
    }

    /// A chunk for `to` went to the transport; the last one ends the send.
    pub(super) fn note_snapshot_chunk_sent(&mut self, to: NodeId, done: bool, total_bytes: u64) {
        if !done {
            return;
        }
        let Some(started) = self.observer.snapshot_sends.remove(&to) else { return };
        if let Some(m) = self.observer.get() {
            m.observe_snapshot(SnapshotOp::Send, started.elapsed(), Some(total_bytes));
        }
    }

    pub(super) fn note_snapshot_send_failed(&mut self, to: NodeId) {
        self.observer.snapshot_sends.remove(&to);
    }

    /// Sets the state gauges and the counters the core keeps in `m` from the current state;
    /// called just before a render, so keeping them current costs the consensus path nothing
    /// (and works whether or not hot-path metrics are attached).
    pub fn sample_metrics(&self, m: &NodeMetrics) {
        let raft = &self.raft;
        let state = &m.state;
        state.term.set_u64(raft.term());
        let role = raft.role();
        for (i, r) in [Role::Follower, Role::PreCandidate, Role::Candidate, Role::Leader].into_iter().enumerate() {
            if let Some(gauge) = state.role.child(i) {
                gauge.set(i64::from(r == role));
            }
        }
        state.leader_id.set_u64(raft.leader());
        state.commit_index.set_u64(raft.committed());
        state.applied_index.set_u64(self.kv.applied_index());
        state.last_log_index.set_u64(raft.last_index());
        state.snapshot_index.set_u64(self.snapshot_meta.index);
        state.log_size_bytes.set_u64(self.log_bytes);
        state.recovering.set(i64::from(raft.recovery().is_some()));
        state.proposals_pending.set_u64((self.requests.writes_waiting() + self.proposals_batch.len()) as u64);
        state.reads_pending.set_u64(self.requests.reads_waiting() as u64);
        let stats = raft.election_stats();
        NodeMetrics::catch_up(&m.core.elections_started, stats.elections_started);
        NodeMetrics::catch_up(&m.core.pre_votes_started, stats.pre_votes_started);
        for (i, value) in [stats.votes_granted, stats.pre_votes_granted].into_iter().enumerate() {
            if let Some(counter) = m.core.votes_granted.child(i) {
                NodeMetrics::catch_up(counter, value);
            }
        }
        self.sample_peer_metrics(m);
    }

    /// Per-follower lag and appends in flight (zero on a node that does not lead).
    fn sample_peer_metrics(&self, m: &NodeMetrics) {
        let progress = self.raft.follower_progress();
        let last = self.raft.last_index();
        for peer in &m.peers {
            let (lag, inflight) = progress
                .iter()
                .find(|p| p.id == peer.id)
                .map_or((0, 0), |p| (last.saturating_sub(p.matched), p.inflight as u64));
            peer.match_lag_entries.set_u64(lag);
            peer.inflight_appends.set_u64(inflight);
        }
    }
}

/// The metrics type of a request.
pub(super) fn request_type(request: &ClientRequest) -> RequestType {
    match request {
        ClientRequest::Write(command) => command_type(command),
        ClientRequest::RegisterClient => RequestType::Register,
        ClientRequest::Get { consistency: crate::wire::ReadConsistency::Local, .. } => RequestType::StaleGet,
        ClientRequest::Get { .. } => RequestType::Get,
        // Membership requests are counted with status requests (both are operator requests).
        ClientRequest::Status
        | ClientRequest::StatusDetailed
        | ClientRequest::MemberList
        | ClientRequest::MemberChange(_)
        | ClientRequest::TransferLeader { .. } => RequestType::Status,
    }
}

pub(super) fn command_type(command: &Command) -> RequestType {
    match command {
        Command::Register { .. } => RequestType::Register,
        Command::Set { .. } => RequestType::Set,
        Command::Delete { .. } => RequestType::Delete,
        Command::Cas { .. } => RequestType::Cas,
    }
}

/// The metrics type of an encoded command waiting to be proposed (always one of ours).
pub(super) fn write_type(data: &[u8]) -> RequestType {
    RequestType::of_command(data).unwrap_or(RequestType::Set)
}

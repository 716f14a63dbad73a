//! The Raft state machine's roles and its front door: construction, time, proposals and the
//! dispatch of every peer message by term and role.
//!
//! See the module doc of `raft` for the input/output contract. The rules live in one room each:
//! elections (`election.rs`: Pre-Vote, dissertation §9.6; leader stickiness, §4.2.3), log
//! replication and commit (`replication.rs`, paper Figure 2 and §5.4.2), ReadIndex
//! (`read_only.rs`), the ready batch (`raw_node.rs`), quorum counting (`tracker/`, `quorum/`).
//!
//! Invariants kept here (asserted in `reset`): the term never decreases, and a term change
//! clears the vote, the known leader, the election and every pending read.

use bytes::Bytes;

use super::log::{RaftLog, RestoredLog};
use super::membership::{ConfLog, Configuration};
use super::message::{Message, MessageBody};
use super::quorum::JointConfig;
use super::raw_node::BatchState;
use super::read_only::ReadOnly;
use super::recovery::Recovery;
use super::rng::Rng;
use super::tracker::{ProgressState, ProgressTracker};
use super::types::{Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term};

/// At most this many ReadIndex requests wait at once; more are refused with `Busy`.
pub const READS_PENDING_MAX: usize = 4096;

/// Tunables. Times are in ticks; the node decides how long a tick is (10 ms in `raftd`).
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// The voters, used when no snapshot carries a configuration (the bootstrap list). Empty for
    /// a node that joins a running cluster: it waits to be added and never campaigns before.
    pub voters: Vec<NodeId>,
    /// Base election timeout; each term draws a timeout from `[election_ticks, 2*election_ticks)`.
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub seed: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Unacknowledged appends per follower in the Replicate state.
    pub inflight_msgs_max: usize,
    /// Bytes of entries per AppendEntries message (at least one entry is always sent).
    pub append_bytes_max: usize,
    /// Bytes of committed entries handed out per ready batch (at least one entry).
    pub apply_bytes_max: usize,
    /// Bytes of proposed-but-uncommitted entries a leader accepts before refusing proposals.
    pub uncommitted_bytes_max: usize,
    /// Payload bytes of applied, durable entries kept in memory to serve followers; older ones
    /// are read back from the WAL when a follower needs them.
    pub log_window_bytes_max: usize,
}

impl RaftConfig {
    /// Defaults from DESIGN.md with a 10 ms tick: heartbeat 50 ms, election 150–300 ms.
    pub fn new(id: NodeId, voters: Vec<NodeId>, seed: u64) -> RaftConfig {
        RaftConfig {
            id,
            voters,
            election_ticks: 15,
            heartbeat_ticks: 5,
            seed,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            append_bytes_max: 1 << 20,
            apply_bytes_max: 16 << 20,
            uncommitted_bytes_max: 64 << 20,
            log_window_bytes_max: 16 << 20,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "election timeout ({} ticks) must exceed the heartbeat interval ({} ticks), which must be positive",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.inflight_msgs_max == 0 || self.append_bytes_max == 0 || self.apply_bytes_max == 0 {
            return Err("inflight_msgs_max, append_bytes_max and apply_bytes_max must be positive".into());
        }
        Ok(())
    }
}

/// A request for entries the core evicted from memory: read `[lo, ...]` from the WAL, at most
/// `max_bytes` (but at least one entry), and hand them to [`Raft::entries_loaded`] (or report
/// [`Raft::load_failed`] if they were compacted). `term` identifies the leadership that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadRequest {
    pub to: NodeId,
    pub lo: Index,
    pub max_bytes: usize,
    pub term: Term,
}

/// What a node restarts from: exactly what storage holds durably.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The newest durable snapshot (its image is the state machine's business).
    pub snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot, contiguous: all of them, or (with `log_terms`) a tail that
    /// holds at least every entry after `applied` and the last entry.
    pub entries: Vec<Entry>,
    /// Terms of the whole log after the snapshot as runs `(first index, term)`, when `entries`
    /// is only a tail; empty otherwise.
    pub log_terms: Vec<(Index, Term)>,
    /// Entries the state machine already applied before the core started (0: the snapshot's).
    pub applied: Index,
    /// The membership change entries (`EntryKind::ConfChange`) after the snapshot that are not in
    /// `entries` (they are at or below `applied`), ascending: the configuration is rebuilt
    /// from the snapshot's and these.
    pub conf_entries: Vec<Entry>,
    /// Set if storage lost entries this node may have acknowledged (see `recovery`).
    pub recovery: Option<Recovery>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// One follower's replication as the leader sees it (read-only, for status and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    pub id: NodeId,
    pub matched: Index,
    pub next: Index,
    /// `probe`, `replicate` or `snapshot` (see `tracker::Progress`).
    pub state: &'static str,
    /// Appends sent and not yet acknowledged.
    pub inflight: usize,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
}

/// A linearizable read may be served once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Ask `leader` instead (0: unknown).
    NotLeader { leader: NodeId },
    /// Too much is waiting to commit; retry later.
    Busy,
    /// Leadership is being transferred (dissertation §3.10): retry at the new leader.
    Transferring { to: NodeId },
}

/// The consensus core. No I/O, no clock, no randomness of its own; see the module doc.
pub struct Raft {
    pub(super) id: NodeId,
    pub(super) opts: RaftConfig,
    pub(super) tracker: ProgressTracker,
    pub(super) term: Term,
    pub(super) vote: NodeId,
    pub(super) leader: NodeId,
    pub(super) role: Role,
    pub(super) log: RaftLog,
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_election_ticks: u32,
    pub(super) rng: Rng,
    pub(super) messages: Vec<Message>,
    pub(super) persisted_messages: Vec<Message>,
    pub(super) read_only: ReadOnly,
    pub(super) uncommitted_bytes: usize,
    pub(super) batch: BatchState,
    /// Protocol-aware recovery (`recovery.rs`): the guard while recovering.
    pub(super) recovery: Option<Recovery>,
    pub(super) recovery_reason: &'static str,
    /// The recovery state changed since the last batch: persist it.
    pub(super) recovery_changed: bool,
    /// The term in which the current leader was last told that this node lost entries.
    pub(super) log_lost_reported_term: Term,
    /// (term, index): the highest index an AppendEntries or snapshot of that term's leader
    /// proved our log matches. A recovering node takes a heartbeat's commit only up to it.
    pub(super) verified_by_leader: (Term, Index),
    /// Entries to read back from the WAL for followers (see [`LoadRequest`]).
    pub(super) load_requests: Vec<LoadRequest>,
    /// Counters of election events, for the node's metrics.
    pub(super) election_stats: super::election::ElectionStats,
    /// The configurations along the log; the last one is in force (`membership`).
    pub(super) conf_log: ConfLog,
    /// Leadership transfer in progress to this node (0: none), and ticks since it started.
    pub(super) lead_transferee: NodeId,
    pub(super) transfer_elapsed: u32,
    /// The next RequestVote is a transfer's: it bypasses the voters' leader stickiness.
    pub(super) campaign_transfer: bool,
}

impl Raft {
    pub fn new(opts: RaftConfig, restored: Restored) -> Result<Raft, String> {
        opts.validate()?;
        let base = match &restored.snapshot {
            Some(s) if !s.conf.is_empty() => Configuration::from_conf_state(&s.conf)
                .map_err(|e| format!("snapshot {} has an invalid configuration: {e}", s.index))?,
            _ => Configuration::from_voters(opts.voters.iter().copied())
                .map_err(|e| format!("invalid voter set {:?}: {e}", opts.voters))?,
        };
        let mut conf_log = ConfLog::new(restored.snapshot.as_ref().map_or(0, |s| s.index), base);
        for entry in restored.conf_entries.iter().chain(restored.entries.iter()) {
            conf_log.append(entry);
        }
        let config = conf_log.current().joint_config().unwrap_or_else(|_| JointConfig::none());
        let learners = conf_log.current().learners().collect();
        let hs = restored.hard_state;
        let log = RaftLog::restore(RestoredLog {
            snapshot: restored.snapshot,
            entries: restored.entries,
            terms: restored.log_terms,
            commit: hs.commit,
            applied: restored.applied,
        })?;
        let restored_hard_state = HardState { term: hs.term, vote: hs.vote, commit: log.committed };
        let mut tracker = ProgressTracker::new(config);
        tracker.update_config(tracker.config().clone(), learners, opts.id, None);
        let mut raft = Raft {
            id: opts.id,
            tracker,
            rng: Rng::new(opts.seed ^ opts.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            opts,
            term: hs.term,
            vote: hs.vote,
            leader: 0,
            role: Role::Follower,
            log,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: 0,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_only: ReadOnly::default(),
            uncommitted_bytes: 0,
            batch: BatchState::restored(restored_hard_state),
            recovery: restored.recovery,
            recovery_reason: "recovering since start-up",
            recovery_changed: false,
            log_lost_reported_term: 0,
            verified_by_leader: (0, 0),
            load_requests: Vec::new(),
            election_stats: Default::default(),
            conf_log,
            lead_transferee: 0,
            transfer_elapsed: 0,
            campaign_transfer: false,
        };
        raft.become_follower(hs.term, 0);
        Ok(raft)
    }

    // ----- accessors ---------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn vote(&self) -> NodeId {
        self.vote
    }
    pub fn committed(&self) -> Index {
        self.log.committed
    }
    pub fn applied(&self) -> Index {
        self.log.applied
    }
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot_index()
    }
    pub fn snapshot_term(&self) -> Term {
        self.log.snapshot_term()
    }
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// The entries held in memory, persisted or not, from [`Raft::mem_first_index`] to the last
    /// index (for inspection and checkers; older ones were evicted to the WAL).
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }
    /// A snapshot from the leader that the core accepted and the node has not persisted yet.
    pub fn pending_snapshot(&self) -> Option<&SnapshotMeta> {
        self.log.pending_snapshot.as_ref()
    }
    /// The first index held in memory (`last_index() + 1` if none is).
    pub fn mem_first_index(&self) -> Index {
        self.log.mem_first()
    }
    /// Voters of either half of the configuration in force.
    pub fn voters(&self) -> Vec<NodeId> {
        self.tracker.config().voters()
    }
    /// The configuration in force (its entry appended, maybe not yet committed).
    pub fn configuration(&self) -> &Configuration {
        self.conf_log.current()
    }
    /// The index of the entry that made the configuration in force (the snapshot's if none).
    pub fn configuration_index(&self) -> Index {
        self.conf_log.current_index()
    }
    /// Per-follower (matched, next) for status displays; empty unless leader.
    pub fn progress(&self) -> Vec<(NodeId, Index, Index)> {
        self.tracker.iter().map(|(id, pr)| (id, pr.matched, pr.next)).collect()
    }
    /// Per-follower replication detail for status and metrics; empty unless leader.
    pub fn follower_progress(&self) -> Vec<FollowerProgress> {
        let state = |pr: &super::tracker::Progress| match pr.state {
            ProgressState::Probe => "probe",
            ProgressState::Replicate => "replicate",
            ProgressState::Snapshot { .. } => "snapshot",
        };
        let progress = self.tracker.iter().map(|(id, pr)| FollowerProgress {
            id,
            matched: pr.matched,
            next: pr.next,
            state: state(pr),
            inflight: pr.inflights.len(),
            recent_active: pr.recent_active,
        });
        progress.collect()
    }

    // ----- inputs ------------------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_ticks && !self.may_campaign() {
            // A node that may not campaign (a learner, a removed or a joining node) forgets a
            // leader it has not heard from for an election timeout, as a campaign would: a
            // removed node must not send clients to a leader of long ago for ever.
            self.election_elapsed = 0;
            self.leader = 0;
        } else if self.election_elapsed >= self.randomized_election_ticks
            && self.may_campaign()
            && self.recovery.is_none()
        {
            self.election_elapsed = 0;
            self.campaign(self.opts.pre_vote);
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.tick_transfer();
        for (_, pr) in self.tracker.iter_mut() {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.snapshot_elapsed = pr.snapshot_elapsed.saturating_add(1);
            }
        }
        if self.election_elapsed >= self.opts.election_ticks {
            self.election_elapsed = 0;
            if self.opts.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    self.become_follower(self.term, 0);
                    return;
                }
                self.tracker.reset_recent_active();
            }
        }
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Proposes an application command. Returns the index it will occupy if it commits.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        let index = self.append_proposal(data)?;
        self.broadcast_append();
        Ok(index)
    }

    /// Proposes several commands at once: one AppendEntries per follower carries them all, instead
    /// of one per command. Each result is the index the command will occupy, or why it was
    /// refused (a refusal does not stop the commands after it from being tried).
    pub fn propose_batch(&mut self, batch: impl IntoIterator<Item = Bytes>) -> Vec<Result<Index, ProposeError>> {
        let results: Vec<Result<Index, ProposeError>> =
            batch.into_iter().map(|data| self.append_proposal(data)).collect();
        if results.iter().any(|r| r.is_ok()) {
            self.broadcast_append();
        }
        results
    }

    pub(super) fn append_proposal(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee != 0 {
            return Err(ProposeError::Transferring { to: self.lead_transferee });
        }
        let size = data.len();
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + size > self.opts.uncommitted_bytes_max {
            return Err(ProposeError::Busy);
        }
        self.uncommitted_bytes += size;
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    /// Folds the log up to `snapshot.index` into the snapshot it describes. The index must be
    /// applied by the application and persisted in storage; a ready batch may be in flight.
    pub fn compact(&mut self, snapshot: SnapshotMeta) -> Result<(), String> {
        let index = snapshot.index;
        self.log.compact(snapshot)?;
        self.conf_log.compact(index.min(self.log.snapshot_index()));
        Ok(())
    }

    /// The transport could not deliver a snapshot to `to`: probe again instead of waiting.
    pub fn report_snapshot_failed(&mut self, to: NodeId) {
        if let Some(pr) = self.tracker.get_mut(to) {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.become_probe();
            }
        }
    }

    /// Feeds one message from a peer.
    /// Messages that fail [`Message::validate`] are dropped: nothing a peer sends can make the
    /// core panic or corrupt its log (the node also checks, to close the connection). Messages
    /// from nodes outside the configuration are not dropped: a node that lags behind a change
    /// must still hear from a leader it does not know yet; a removed node cannot disrupt, since
    /// pre-vote and leader stickiness refuse its campaigns and no one asks it for a vote.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || m.validate().is_err() {
            return;
        }
        if m.term > self.term {
            if !self.step_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.step_lower_term(&m);
            return;
        }
        match &m.body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                self.handle_vote_request(&m, true, *last_log_index, *last_log_term)
            }
            MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                self.handle_vote_request(&m, false, *last_log_index, *last_log_term)
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::PreCandidate | Role::Candidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// A message from a higher term. Returns false if it is to be dropped.
    pub(super) fn step_higher_term(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::PreVote { .. } | MessageBody::RequestVote { .. } => {
                // Leader stickiness: a node that hears from a live leader ignores disruptions.
                // A transfer's vote request (the leader itself asked for it) bypasses it.
                let transfer = matches!(m.body, MessageBody::RequestVote { transfer: true, .. });
                let in_lease = (self.opts.check_quorum || self.opts.pre_vote)
                    && self.leader != 0
                    && self.election_elapsed < self.opts.election_ticks
                    && !transfer;
                if in_lease {
                    return false;
                }
                if matches!(m.body, MessageBody::PreVote { .. }) {
                    return true; // a pre-vote never changes our term
                }
                self.become_follower(m.term, 0);
            }
            // A granted pre-vote carries the term we would campaign in, not a newer leader's.
            MessageBody::PreVoteResponse { granted: true } => {}
            // A vote granted for a term above ours: we campaigned in that term and forgot it
            // (our hard state went back). We may have acknowledged entries up to that term.
            MessageBody::RequestVoteResponse { granted: true } => {
                self.become_follower(m.term, 0);
                self.enter_recovery(Recovery::unknown_extent(m.term), "a vote arrived for a term this node forgot");
            }
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, m.from)
            }
            _ => self.become_follower(m.term, 0),
        }
        true
    }

    pub(super) fn step_lower_term(&mut self, m: &Message) {
        match m.body {
            // Tell a stale leader about the newer term so it steps down (needed because, with
            // pre-vote and check-quorum, its followers may never campaign against it).
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        reject: true,
                        index: 0,
                        reject_hint_index: 0,
                        reject_hint_term: 0,
                    },
                );
            }
            MessageBody::PreVote { .. } => self.send(m.from, MessageBody::PreVoteResponse { granted: false }),
            _ => {}
        }
    }

    // ----- role changes ------------------------------------------------------------------------

    pub(super) fn reset(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "term must not go backwards: {} -> {term}", self.term);
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_ticks =
            self.opts.election_ticks + self.rng.range(0, self.opts.election_ticks as u64) as u32;
        self.tracker.reset_votes();
        self.tracker.clear_progress();
        self.read_only.drop_all();
        self.uncommitted_bytes = 0;
        self.lead_transferee = 0;
        self.transfer_elapsed = 0;
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    // ----- output ------------------------------------------------------------------------------

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    /// Vote requests, vote grants and append acknowledgements reflect state that must be durable
    /// first (DESIGN.md invariant); everything else may leave at once.
    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let after_persist = matches!(
            body,
            MessageBody::RequestVote { .. }
                | MessageBody::RequestVoteResponse { .. }
                | MessageBody::AppendEntriesResponse { .. }
        );
        let message = Message { from: self.id, to, term, body };
        if after_persist {
            self.persisted_messages.push(message);
        } else {
            self.messages.push(message);
        }
    }
}

//! The Raft state machine: roles, elections, replication, commit, ReadIndex.
//!
//! See the module doc of `raft` for the input/output contract. This file owns the rules of the
//! paper's Figure 2 plus Pre-Vote (dissertation §9.6), CheckQuorum (§6.2) and leader stickiness
//! (§4.2.3: a node that heard from a leader within the election timeout ignores vote requests).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::log::RaftLog;
use super::message::{Message, MessageBody};
use super::progress::{Progress, ProgressState};
use super::quorum::{Config, VoteResult};
use super::rng::Rng;
use super::types::{Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term};

/// At most this many ReadIndex requests wait at once; more are refused with `Busy`.
pub const READS_PENDING_MAX: usize = 4096;
/// At most this many entries per AppendEntries message, whatever their size.
pub const APPEND_ENTRIES_MAX: usize = 8192;

/// Tunables. Times are in ticks; the node decides how long a tick is (10 ms in `raftd`).
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// The voters, used when no snapshot carries a configuration.
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

/// What a node restarts from: exactly what storage holds durably.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
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
}

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
    /// A snapshot from the leader: persist it, restore the state machine from it, and drop every
    /// log entry (the log restarts after `snapshot.meta.index`).
    pub snapshot: Option<Snapshot>,
    /// Entries to append. Any persisted entry at or after `entries[0].index` is discarded first.
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Read contexts that will never get a read state (leadership lost): fail them.
    pub dropped_reads: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    seq: u64,
    ctx: u64,
    index: Index,
}

/// What the last `ready()` handed out, so `advance()` knows what became durable.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    last_entry_index: Option<Index>,
}

/// The consensus core. No I/O, no clock, no randomness of its own; see the module doc.
pub struct Raft {
    id: NodeId,
    opts: RaftConfig,
    config: Config,
    term: Term,
    vote: NodeId,
    leader: NodeId,
    role: Role,
    log: RaftLog,
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_ticks: u32,
    rng: Rng,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    last_hard_state: HardState,
    last_role: Option<Role>,
    last_leader: NodeId,
    read_seq: u64,
    reads_pending: VecDeque<PendingRead>,
    reads_awaiting_commit: Vec<u64>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    uncommitted_bytes: usize,
    in_flight: Option<InFlight>,
}

impl Raft {
    pub fn new(opts: RaftConfig, restored: Restored) -> Result<Raft, String> {
        opts.validate()?;
        let voters = match &restored.snapshot {
            Some(s) if !s.meta.conf.voters.is_empty() => s.meta.conf.voters.clone(),
            _ => opts.voters.clone(),
        };
        if voters.is_empty() || voters.contains(&0) {
            return Err(format!("invalid voter set {voters:?}"));
        }
        let hs = restored.hard_state;
        let log = RaftLog::restore(restored.snapshot, restored.entries, hs.commit)?;
        let mut raft = Raft {
            id: opts.id,
            config: Config::new(voters),
            rng: Rng::new(opts.seed ^ opts.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            opts,
            term: hs.term,
            vote: hs.vote,
            leader: 0,
            role: Role::Follower,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: 0,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            last_hard_state: HardState { term: hs.term, vote: hs.vote, commit: 0 },
            last_role: None,
            last_leader: 0,
            read_seq: 0,
            reads_pending: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            uncommitted_bytes: 0,
            in_flight: None,
        };
        raft.last_hard_state.commit = raft.log.committed;
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
    /// The in-memory log after the snapshot, persisted or not (for inspection and checkers).
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }
    pub fn voters(&self) -> Vec<NodeId> {
        self.config.voters().collect()
    }
    /// Per-follower (matched, next) for status displays; empty unless leader.
    pub fn progress(&self) -> Vec<(NodeId, Index, Index)> {
        self.progress.iter().map(|(&id, pr)| (id, pr.matched, pr.next)).collect()
    }

    // ----- inputs ------------------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_ticks && self.config.contains(self.id) {
            self.election_elapsed = 0;
            self.campaign(self.opts.pre_vote);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        for pr in self.progress.values_mut() {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.snapshot_elapsed = pr.snapshot_elapsed.saturating_add(1);
            }
        }
        if self.election_elapsed >= self.opts.election_ticks {
            self.election_elapsed = 0;
            if self.opts.check_quorum {
                let id = self.id;
                let active =
                    self.config.has_quorum(|v| v == id || self.progress.get(&v).is_some_and(|p| p.recent_active));
                if !active {
                    self.become_follower(self.term, 0);
                    return;
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
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

    fn append_proposal(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        let size = data.len();
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + size > self.opts.uncommitted_bytes_max {
            return Err(ProposeError::Busy);
        }
        self.uncommitted_bytes += size;
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    /// Requests a linearizable read (ReadIndex, dissertation §6.4). A `ReadState` with this `ctx`
    /// appears in a later ready once leadership is confirmed by a quorum.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.reads_pending.len() + self.reads_awaiting_commit.len() >= READS_PENDING_MAX {
            return Err(ProposeError::Busy);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            // A new leader does not know the commit index until an entry of its term commits.
            self.reads_awaiting_commit.push(ctx);
            return Ok(());
        }
        self.start_reads(&[ctx]);
        Ok(())
    }

    /// Folds the log up to `snapshot.meta.index` into `snapshot`. The index must be applied by the
    /// application and persisted in storage; a ready batch may be in flight meanwhile.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), String> {
        self.log.compact(snapshot)
    }

    /// The transport could not deliver a snapshot to `to`: probe again instead of waiting.
    pub fn report_snapshot_failed(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.become_probe();
            }
        }
    }

    /// Feeds one message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || !self.config.contains(m.from) {
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
            MessageBody::RequestVote { last_log_index, last_log_term } => {
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
    fn step_higher_term(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::PreVote { .. } | MessageBody::RequestVote { .. } => {
                // Leader stickiness: a node that hears from a live leader ignores disruptions.
                let in_lease = (self.opts.check_quorum || self.opts.pre_vote)
                    && self.leader != 0
                    && self.election_elapsed < self.opts.election_ticks;
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
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, m.from)
            }
            _ => self.become_follower(m.term, 0),
        }
        true
    }

    fn step_lower_term(&mut self, m: &Message) {
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

    fn handle_vote_request(&mut self, m: &Message, pre: bool, last_log_index: Index, last_log_term: Term) {
        let can_vote = self.vote == m.from || (self.vote == 0 && self.leader == 0) || (pre && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        // A grant answers in the candidate's term; a refusal in ours, so a stale candidate learns it.
        let term = if granted { m.term } else { self.term };
        if pre {
            self.send_with_term(m.from, term, MessageBody::PreVoteResponse { granted });
            return;
        }
        if granted {
            debug_assert_eq!(m.term, self.term);
            self.vote = m.from;
            self.election_elapsed = 0;
        }
        self.send_with_term(m.from, term, MessageBody::RequestVoteResponse { granted });
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m.from, prev_log_index, prev_log_term, leader_commit, &entries);
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                debug_assert!(commit <= self.log.last_index(), "heartbeat commit beyond our log");
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, MessageBody::HeartbeatResponse { read_seq });
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m.from, snapshot);
            }
            _ => {} // stale responses from an earlier role in this term
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term.
                self.become_follower(self.term, m.from);
                self.step_follower(m);
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                // Only answers to this campaign (term + 1) count; a refusal may carry our term.
                if granted && m.term != self.term + 1 {
                    return;
                }
                self.votes.insert(m.from, granted);
                self.tally_votes();
            }
            MessageBody::RequestVoteResponse { granted } if self.role == Role::Candidate => {
                self.votes.insert(m.from, granted);
                self.tally_votes();
            }
            _ => {}
        }
    }

    fn tally_votes(&mut self) {
        match self.config.vote_result(|id| self.votes.get(&id).copied()) {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        match m.body {
            MessageBody::AppendEntriesResponse { reject, index, reject_hint_index, reject_hint_term } => {
                if reject {
                    self.handle_append_rejection(from, index, reject_hint_index, reject_hint_term);
                } else {
                    self.handle_append_success(from, index);
                }
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
                pr.probe_sent = false;
                if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
                    pr.inflights.free_first(); // a lost append must not stall the window forever
                }
                let snapshot_lost = matches!(pr.state, ProgressState::Snapshot { .. })
                    && pr.snapshot_elapsed >= 2 * self.opts.election_ticks;
                if snapshot_lost {
                    pr.become_probe();
                }
                if pr.matched < self.log.last_index() {
                    self.maybe_send_append(from, true);
                }
                self.release_confirmed_reads();
            }
            _ => {}
        }
    }

    fn handle_append_rejection(&mut self, from: NodeId, rejected: Index, hint_index: Index, hint_term: Term) {
        let next_probe =
            if hint_term > 0 { self.log.find_conflict_by_term(hint_index, hint_term).0 } else { hint_index };
        let Some(pr) = self.progress.get_mut(&from) else { return };
        if pr.maybe_decrease_to(rejected, next_probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.maybe_send_append(from, true);
        }
    }

    fn handle_append_success(&mut self, from: NodeId, index: Index) {
        let Some(pr) = self.progress.get_mut(&from) else { return };
        let was_paused = pr.is_paused();
        // A probe answered at exactly the known match index still proves where the follower's
        // log ends: switch to Replicate instead of waiting for the next heartbeat (as etcd does).
        let probe_confirmed = pr.state == ProgressState::Probe && index == pr.matched;
        if !pr.maybe_update(index) && !probe_confirmed {
            if pr.state == ProgressState::Replicate {
                pr.inflights.free_to(index);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { pending_index } if pr.matched >= pending_index => pr.become_probe(),
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate => pr.inflights.free_to(index),
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            // The follower was waiting on us; an empty append still tells it the commit index.
            self.maybe_send_append(from, true);
        }
        // Keep the pipeline full: bounded by the inflight window and the log's end.
        while self.maybe_send_append(from, false) {}
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: &[Entry],
    ) {
        // A well-behaved leader sends a contiguous run after prev_index with terms that never
        // decrease; anything else is a corrupt or hostile message and must not reach the log.
        let well_formed = entries.iter().enumerate().all(|(i, e)| e.index == prev_index + 1 + i as u64)
            && entries.windows(2).all(|w| w[0].term <= w[1].term)
            && entries.first().is_none_or(|e| e.term >= prev_term);
        if !well_formed {
            return;
        }
        if prev_index < self.log.committed {
            let committed = self.log.committed;
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    reject: false,
                    index: committed,
                    reject_hint_index: 0,
                    reject_hint_term: 0,
                },
            );
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, leader_commit, entries) {
            Some(last_new) => self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    reject: false,
                    index: last_new,
                    reject_hint_index: 0,
                    reject_hint_term: 0,
                },
            ),
            None => {
                let (hint_index, hint_term) =
                    self.log.find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        reject: true,
                        index: prev_index,
                        reject_hint_index: hint_index,
                        reject_hint_term: hint_term,
                    },
                )
            }
        }
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        let ack_index = if index <= self.log.committed {
            self.log.committed // we already have all of it
        } else if self.log.matches(index, snapshot.meta.term) {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(index);
            index
        } else {
            if !snapshot.meta.conf.voters.is_empty() {
                self.config = Config::new(snapshot.meta.conf.voters.iter().copied());
            }
            self.log.restore_snapshot(snapshot);
            index
        };
        self.send(
            from,
            MessageBody::AppendEntriesResponse {
                reject: false,
                index: ack_index,
                reject_hint_index: 0,
                reject_hint_term: 0,
            },
        );
    }

    // ----- role changes ------------------------------------------------------------------------

    fn reset(&mut self, term: Term) {
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
        self.votes.clear();
        self.progress.clear();
        self.dropped_reads.extend(self.reads_pending.drain(..).map(|r| r.ctx));
        self.dropped_reads.append(&mut self.reads_awaiting_commit);
        self.uncommitted_bytes = 0;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn campaign(&mut self, pre: bool) {
        let campaign_term = if pre {
            self.reset(self.term);
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.reset(self.term + 1);
            self.role = Role::Candidate;
            self.vote = self.id;
            self.term
        };
        self.votes.insert(self.id, true);
        if self.config.vote_result(|id| self.votes.get(&id).copied()) == VoteResult::Won {
            // A single-voter cluster.
            if pre {
                self.campaign(false);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let peers: Vec<NodeId> = self.config.voters().filter(|&v| v != self.id).collect();
        for peer in peers {
            let body = if pre {
                MessageBody::PreVote { last_log_index, last_log_term }
            } else {
                MessageBody::RequestVote { last_log_index, last_log_term }
            };
            self.send_with_term(peer, campaign_term, body);
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        let peers: Vec<NodeId> = self.config.voters().filter(|&v| v != self.id).collect();
        for peer in peers {
            let mut pr = Progress::new(next, self.opts.inflight_msgs_max);
            pr.recent_active = true;
            self.progress.insert(peer, pr);
        }
        // Commit an entry of our own term to learn the commit index (paper §5.4.2, §8).
        self.append_entry(EntryKind::Noop, Bytes::new());
        self.maybe_commit();
        self.broadcast_append();
    }

    // ----- leader mechanics --------------------------------------------------------------------

    fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> Index {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index() + 1;
        self.log.append(Entry { index, term: self.term, kind, data });
        index
    }

    /// Recomputes the commit index from the voters' match indexes. The leader counts itself only
    /// up to what it has persisted (DESIGN.md: parallel write, durable self-ack).
    fn maybe_commit(&mut self) -> bool {
        let id = self.id;
        let persisted = self.log.persisted;
        let quorum_index = self.config.committed_index(|v| {
            if v == id {
                Some(persisted)
            } else {
                self.progress.get(&v).map(|p| p.matched)
            }
        });
        let old = self.log.committed;
        if !self.log.maybe_commit(quorum_index, self.term) {
            return false;
        }
        let newly: usize = (old + 1..=self.log.committed).filter_map(|i| self.log.entry(i)).map(|e| e.data.len()).sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly);
        if !self.reads_awaiting_commit.is_empty() && self.log.term(self.log.committed) == Some(self.term) {
            let waiting = std::mem::take(&mut self.reads_awaiting_commit);
            self.start_reads(&waiting);
        }
        true
    }

    fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.maybe_send_append(peer, true);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let read_seq = self.read_seq;
        let targets: Vec<(NodeId, Index)> = self.progress.iter().map(|(&id, pr)| (id, pr.matched)).collect();
        for (peer, matched) in targets {
            let commit = matched.min(self.log.committed);
            self.send(peer, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// Sends `to` the next entries it needs, or a snapshot if they are compacted. Returns true if
    /// a message carrying entries or a snapshot went out.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev_log_index = next - 1;
        let prev_term = self.log.term(prev_log_index);
        let entries = self.log.slice(next, self.opts.append_bytes_max, APPEND_ENTRIES_MAX);
        let (Some(prev_log_term), Some(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let Some(pr) = self.progress.get_mut(&to) else { return false };
        let carried = !entries.is_empty();
        match pr.state {
            ProgressState::Replicate => {
                if let Some(last) = entries.last() {
                    pr.next = last.index + 1;
                    pr.inflights.add(last.index);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("paused"),
        }
        let leader_commit = self.log.committed;
        self.send(to, MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries });
        carried
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.log.snapshot.clone() else {
            // The log starts at index 1 and nothing is compacted, so this cannot happen.
            panic!("follower {to} needs compacted entries but no snapshot exists");
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    fn start_reads(&mut self, ctxs: &[u64]) {
        let index = self.log.committed;
        if self.config.len() == 1 {
            self.read_states.extend(ctxs.iter().map(|&ctx| ReadState { ctx, index }));
            return;
        }
        self.read_seq += 1;
        let seq = self.read_seq;
        self.reads_pending.extend(ctxs.iter().map(|&ctx| PendingRead { seq, ctx, index }));
        self.broadcast_heartbeat();
    }

    fn release_confirmed_reads(&mut self) {
        let id = self.id;
        while let Some(front) = self.reads_pending.front().copied() {
            let confirmed = self
                .config
                .has_quorum(|v| v == id || self.progress.get(&v).is_some_and(|p| p.read_seq_acked >= front.seq));
            if !confirmed {
                break;
            }
            self.reads_pending.pop_front();
            self.read_states.push(ReadState { ctx: front.ctx, index: front.index });
        }
    }

    // ----- output ------------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    /// Vote requests, vote grants and append acknowledgements reflect state that must be durable
    /// first (DESIGN.md invariant); everything else may leave at once.
    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
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

    fn hard_state(&self) -> HardState {
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
        if self.in_flight.is_some() {
            return false;
        }
        self.hard_state() != self.last_hard_state
            || self.last_role != Some(self.role)
            || self.last_leader != self.leader
            || self.log.pending_snapshot.is_some()
            || self.log.unstable_from <= self.log.last_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
    }

    /// Takes the next batch. Must be followed by `advance()` before the next `ready()`.
    pub fn ready(&mut self) -> Ready {
        assert!(self.in_flight.is_none(), "ready() called twice without advance()");
        let hard_state = self.hard_state();
        let entries = self.log.unstable_entries();
        let committed_entries = self.log.next_committed(self.opts.apply_bytes_max);
        if let Some(last) = committed_entries.last() {
            self.log.applied_to(last.index);
        }
        self.log.unstable_from = self.log.last_index() + 1;
        self.in_flight = Some(InFlight { last_entry_index: entries.last().map(|e| e.index) });
        let ready = Ready {
            role: if self.last_role != Some(self.role) { Some(self.role) } else { None },
            term: self.term,
            leader: self.leader,
            hard_state: (hard_state != self.last_hard_state).then_some(hard_state),
            snapshot: self.log.pending_snapshot.take(),
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
        };
        self.last_hard_state = hard_state;
        self.last_role = Some(self.role);
        self.last_leader = self.leader;
        ready
    }

    /// The node has persisted the last ready batch (and applied its committed entries).
    pub fn advance(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            panic!("advance() without a ready() in flight");
        };
        if let Some(last) = in_flight.last_entry_index {
            self.log.persisted_to(last);
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.broadcast_append();
        }
    }
}

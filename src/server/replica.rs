//! The replica: the consensus core, the key-value state machine and the storage work that makes
//! them durable, driven by whoever owns the sockets and the threads. It knows nothing of the
//! reactor: inputs are calls (a tick, a peer message, a client request, a finished storage job),
//! outputs are queued in [`Output`] (peer messages, client replies, storage jobs) for the caller to
//! deliver. `raftd` drives it from its event loop; the simulator can drive it deterministically.
//!
//! Contract with the caller: deliver every output; hand every finished job back through
//! [`Replica::on_io_done`], in the order the storage finished them.
//!
//! Invariants (asserted):
//! - persist before send: the persisted messages of a batch are released only after the storage
//!   reported that batch durable (or the batch had nothing to persist);
//! - one batch in flight: a new batch is taken only after the previous one was persisted;
//! - after every batch the state machine's applied index is the last index the batch handed it,
//!   and never ahead of the core's;
//! - the log is compacted under a snapshot only after the snapshot file is durable.
//! - a batch that installs a snapshot installs the state machine received for that snapshot,
//!   even if a newer snapshot arrived (and was accepted) while the batch was being persisted.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use log::{info, warn};

use super::node_metrics::RequestType;
use super::requests::{write_reply, Abandoned, ReadWaiter, Requests, Waiter, WriteTicket};
use super::snapshot_transfer::{Received, Transfers};
use super::storage_thread::{IoDone, IoJob};
use crate::kv::{Command, KvStore};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::raft::{
    Entry, EntryKind, HardState, Message, MessageBody, NodeId, ProposeError, Raft, Ready, Role, SnapshotMeta,
};
use crate::wire::{ClientReply, ClientRequest, ErrorCode, ErrorReply, FrameBody, SnapshotChunk};
use metrics::{command_type, request_type, write_type};

#[path = "replica_membership.rs"]
mod membership;
#[path = "replica_metrics.rs"]
mod metrics;
#[path = "replica_snapshot.rs"]
mod snapshot;

pub use snapshot::SnapshotPolicy;

#[path = "replica_replies.rs"]
mod replies;

/// Received snapshots staged at once: one being made durable, one the core accepted meanwhile.
const STAGED_SNAPSHOTS_MAX: usize = 2;

/// What the replica wants done; the caller drains it after every call.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub replies: Vec<(Waiter, FrameBody)>,
    pub jobs: Vec<IoJob>,
    /// Leaders whose snapshot this node refused (it failed verification): the transport ends
    /// the transfer so that the leader starts over (`raftd` closes the connection it came on).
    pub snapshot_rejections: Vec<NodeId>,
    /// Every entry the state machine applied, in order, if `ReplicaInit::record_applied` (the
    /// simulator checks them against the other nodes').
    pub applied: Vec<Entry>,
}

/// Start-up state of a replica: what recovery restored.
pub struct ReplicaInit {
    pub raft: Raft,
    pub kv: KvStore,
    /// The hard state storage holds durably.
    pub hard_state: HardState,
    pub snapshot_meta: SnapshotMeta,
    /// Every member's client address, to name the leader in redirects.
    pub addresses: BTreeMap<NodeId, String>,
    pub snapshot_policy: SnapshotPolicy,
    /// `--sessions-max`: the cap this node puts in the registrations it proposes as leader.
    pub sessions_max: u32,
    /// Bytes of image per snapshot chunk sent to a follower.
    pub snapshot_chunk_bytes: usize,
    /// Report every applied entry in [`Output::applied`] (for the simulator; costs a copy).
    pub record_applied: bool,
}

/// The core, the state machine and their storage bookkeeping. See the module doc.
pub struct Replica {
    id: NodeId,
    raft: Raft,
    kv: KvStore,
    requests: Requests,
    addresses: BTreeMap<NodeId, String>,
    /// The ready batch whose persistence is in flight (its entries already handed to storage).
    io_in_flight: Option<Ready>,
    compaction_in_flight: bool,
    /// The last hard state handed to storage, and a newer commit-only one not yet handed.
    hard_state_submitted: HardState,
    commit_deferred: Option<HardState>,
    snapshot_meta: SnapshotMeta,
    snapshot_policy: SnapshotPolicy,
    /// Bytes of entries handed to storage since the last snapshot (approximate: truncated
    /// suffixes count too), for the snapshot policy.
    logged_bytes_since_snapshot: u64,
    /// Size of the last snapshot's state machine image (the policy's byte trigger grows with it).
    snapshot_image_bytes: u64,
    log_bytes: u64,
    /// Writes received in this loop iteration, proposed together by `flush`.
    proposals_batch: Vec<(Waiter, Bytes)>,
    was_leader: bool,
    /// Snapshots streaming to followers and from a leader.
    transfers: Transfers,
    /// A received snapshot, verified, installed and decoded, waiting for the core to accept it.
    /// Received snapshots, verified, installed and decoded, that the core accepted, oldest first:
    /// one whose batch is being made durable and a newer one the core took meanwhile, at most
    /// ([`STAGED_SNAPSHOTS_MAX`]).
    staged: Vec<(SnapshotMeta, (Box<KvStore>, u64))>,
    sessions_max: u32,
    record_applied: bool,
    out: Output,
    /// Metrics bookkeeping (`replica_metrics.rs`); inert until metrics are attached.
    observer: metrics::ReplicaObserver,
    /// Membership requests waiting to complete, and the configuration the addresses follow.
    member_waits: Vec<membership::MemberWait>,
    addresses_conf_index: u64,
}

impl Replica {
    pub fn new(init: ReplicaInit) -> Replica {
        let snapshot_image_bytes = snapshot::image_bytes(&init.kv);
        Replica {
            id: init.raft.id(),
            raft: init.raft,
            kv: init.kv,
            requests: Requests::new(),
            addresses: init.addresses,
            io_in_flight: None,
            compaction_in_flight: false,
            hard_state_submitted: init.hard_state,
            commit_deferred: None,
            snapshot_meta: init.snapshot_meta,
            snapshot_policy: init.snapshot_policy,
            logged_bytes_since_snapshot: 0,
            snapshot_image_bytes,
            log_bytes: 0,
            proposals_batch: Vec::new(),
            was_leader: false,
            transfers: Transfers::with_chunk_bytes(init.snapshot_chunk_bytes),
            staged: Vec::new(),
            sessions_max: init.sessions_max,
            record_applied: init.record_applied,
            out: Output::default(),
            observer: metrics::ReplicaObserver::default(),
            member_waits: Vec::new(),
            addresses_conf_index: 0,
        }
    }

    /// True while a batch is being made durable.
    pub fn io_busy(&self) -> bool {
        self.io_in_flight.is_some()
    }

    /// True if a client request waits for the log or a read round.
    pub fn has_waiting_requests(&self) -> bool {
        !self.requests.is_empty() || !self.proposals_batch.is_empty() || self.has_member_waits()
    }

    /// Answers every waiting request `ShuttingDown` (graceful shutdown's deadline passed).
    pub fn abandon_all_requests(&mut self) {
        for (waiter, data) in std::mem::take(&mut self.proposals_batch) {
            self.reply_abandoned(waiter, Abandoned::ShuttingDown, write_type(&data));
        }
        for (waiter, why, kind) in self.requests.abandon_all() {
            self.reply_abandoned(waiter, why, kind);
        }
        self.abandon_member_requests();
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The index of the node's latest snapshot (its own, or one installed from a leader).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.index
    }

    /// Takes everything queued for the caller since the last call.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    // ----- inputs ----------------------------------------------------------------------------------

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    pub fn step(&mut self, message: Message) {
        self.raft.step(message);
    }

    /// The transport could not deliver a snapshot to `peer`: the core probes again.
    pub fn snapshot_send_failed(&mut self, peer: NodeId) {
        self.note_snapshot_send_failed(peer);
        self.transfers.abort_send(peer);
        self.raft.report_snapshot_failed(peer);
    }

    /// Followers with a snapshot chunk ready to go.
    pub fn snapshot_chunks_ready(&self) -> Vec<NodeId> {
        self.transfers.chunks_ready()
    }

    /// The next snapshot chunk for `to`; the transport calls it when `to`'s connection has room.
    pub fn take_snapshot_chunk(&mut self, to: NodeId) -> Option<SnapshotChunk> {
        let chunk = self.transfers.take_chunk(to)?;
        self.note_snapshot_chunk_sent(to, chunk.done, chunk.total_bytes);
        Some(chunk)
    }

    /// A snapshot chunk arrived from `chunk.from`. An error means the stream is broken: the
    /// transport drops the connection it came on.
    pub fn snapshot_chunk_received(&mut self, chunk: SnapshotChunk) -> Result<(), String> {
        // The metadata is what the core will be told: it passes the same door as a message.
        let body = MessageBody::InstallSnapshot { meta: chunk.meta.clone() };
        Message { from: chunk.from, to: chunk.to, term: chunk.term, body }.validate()?;
        match self.transfers.chunk_arrived(&chunk, SNAPSHOT_BYTES_MAX)? {
            Received::Duplicate => {}
            Received::Append { first, last } => self.out.jobs.push(IoJob::ReceiveSnapshotChunk { chunk, first, last }),
        }
        Ok(())
    }

    /// A client request. Writes and linearizable reads are batched until [`Replica::flush`].
    pub fn client_request(&mut self, waiter: Waiter, request: ClientRequest) {
        self.note_request(request_type(&request));
        let request_is_detailed = request == ClientRequest::StatusDetailed;
        match request {
            ClientRequest::Status | ClientRequest::StatusDetailed => {
                let mut report = self.status_report();
                if request_is_detailed {
                    report.http_addr = Some(self.http_addr().unwrap_or_default().to_string());
                }
                self.reply(waiter, RequestType::Status, FrameBody::Reply(ClientReply::Status(report)));
            }
            ClientRequest::Get { key, consistency: crate::wire::ReadConsistency::Local } => {
                let reply = self.kv.get(&key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
                self.reply(waiter, RequestType::StaleGet, FrameBody::Reply(reply));
            }
            ClientRequest::Get { key, consistency: crate::wire::ReadConsistency::Linearizable } => {
                if self.raft.role() != Role::Leader {
                    return self.reply_not_leader(waiter, RequestType::Get);
                }
                if self.requests.reads_full() {
                    let text = "too many reads waiting".into();
                    return self.reply_error(waiter, RequestType::Get, ErrorCode::Overloaded, text);
                }
                self.requests.read_arrived(ReadWaiter { waiter, key });
            }
            ClientRequest::Write(command) => self.propose_later(waiter, &command),
            // The registration commits like a write; the session id is its index.
            ClientRequest::RegisterClient => {
                self.propose_later(waiter, &Command::Register { sessions_max: self.sessions_max })
            }
            member @ (ClientRequest::MemberList
            | ClientRequest::MemberChange(_)
            | ClientRequest::TransferLeader { .. }) => self.member_request(waiter, member),
        }
    }

    /// Queues a command for this iteration's batch of proposals.
    fn propose_later(&mut self, waiter: Waiter, command: &Command) {
        let kind = command_type(command);
        if self.requests.writes_full(self.proposals_batch.len()) {
            let text = "too many writes waiting to commit".to_string();
            return self.reply_error(waiter, kind, ErrorCode::Overloaded, text);
        }
        if self.raft.role() != Role::Leader {
            return self.reply_not_leader(waiter, kind);
        }
        // Proposed together with every other write of this loop iteration: one append
        // per follower carries them all.
        self.proposals_batch.push((waiter, Bytes::from(command.to_bytes())));
    }

    /// The end of one loop iteration: propose the writes and start the read round that arrived,
    /// and hand the next ready batch to storage (or finish it if it needs no disk).
    pub fn flush(&mut self) -> Result<(), String> {
        self.propose_batch();
        self.start_read_round();
        self.drive_ready()?;
        if self.io_in_flight.is_some() {
            // Heartbeats, appends and loads need no disk: keep them on time during a slow sync.
            let messages = self.raft.take_messages();
            self.route(messages);
            let loads = self.raft.take_load_requests();
            self.out.jobs.extend(loads.into_iter().map(IoJob::LoadEntries));
        }
        self.out.jobs.extend(self.transfers.reads_due().into_iter().map(IoJob::ReadSnapshotImage));
        self.follow_configuration();
        Ok(())
    }

    /// Sends the core's messages; a snapshot goes out as a transfer that streams its image.
    fn route(&mut self, messages: Vec<Message>) {
        for message in messages {
            match message.body {
                MessageBody::InstallSnapshot { meta } => {
                    self.note_snapshot_send_started(message.to);
                    self.transfers.start_send(message.to, message.term, meta)
                }
                _ => self.out.messages.push(message),
            }
        }
    }

    /// A storage job finished. A storage failure is fatal: the node can no longer promise
    /// durability, so it must stop acknowledging.
    pub fn on_io_done(&mut self, done: IoDone) -> Result<(), String> {
        match done {
            IoDone::Persisted { log_bytes } => {
                self.log_bytes = log_bytes;
                let Some(ready) = self.io_in_flight.take() else {
                    return Err("storage finished a batch that was never submitted".into());
                };
                self.finish_ready(ready)?;
            }
            IoDone::SnapshotSaved { meta, image_bytes } => {
                // The file is durable: only now may the log forget the entries under it.
                self.snapshot_image_bytes = image_bytes;
                self.out.jobs.push(IoJob::CompactLog(meta));
            }
            IoDone::Compacted { meta, log_bytes } => {
                self.log_bytes = log_bytes;
                self.compaction_in_flight = false;
                info!("snapshot at index {} (term {}) saved; log compacted", meta.index, meta.term);
                if meta.index > self.snapshot_meta.index {
                    self.snapshot_meta = meta.clone();
                }
                if let Err(e) = self.raft.compact(meta) {
                    warn!("core refused compaction: {e}");
                }
            }
            IoDone::SnapshotImageRead { read, total, data } => self.transfers.chunk_read(self.id, read, total, data),
            IoDone::SnapshotImageUnavailable { read, why } => {
                warn!("cannot send snapshot {} to node {}: {why}", read.meta.index, read.to);
                self.snapshot_send_failed(read.to);
            }
            IoDone::SnapshotChunkStored | IoDone::StateDropped => {}
            IoDone::SnapshotReceived { from, term, meta, kv, image_bytes } => {
                self.snapshot_received(from, term, meta, (kv, image_bytes))
            }
            IoDone::SnapshotRejected { from, meta, why } => {
                warn!("refused snapshot {} (term {}) from node {from}: {why}", meta.index, meta.term);
                self.transfers.receive_finished();
                self.out.snapshot_rejections.push(from);
            }
            IoDone::Loaded { request, entries: Some(entries) } => self.raft.entries_loaded(request, entries),
            IoDone::Loaded { request, entries: None } => self.raft.load_failed(request),
            IoDone::Failed(e) => return Err(format!("storage failure, stopping to protect durability: {e}")),
        }
        // The next batch is taken by `flush`, after this iteration's ticks and proposals joined it.
        Ok(())
    }

    /// A leader's snapshot is durable, verified and decoded: only now does the core hear of it.
    /// If it takes it, the state machine is swapped when the batch that compacts the log under it
    /// is durable; otherwise the decoded state is dropped.
    fn snapshot_received(&mut self, from: NodeId, term: u64, meta: SnapshotMeta, kv: (Box<KvStore>, u64)) {
        self.transfers.receive_finished();
        self.raft.step(Message { from, to: self.id, term, body: MessageBody::InstallSnapshot { meta: meta.clone() } });
        if self.raft.pending_snapshot() == Some(&meta) {
            // A snapshot accepted earlier may still be on its way to disk: both stay staged,
            // and an older one the core replaced before handing it out is dropped.
            let in_flight = self.io_in_flight.as_ref().and_then(|r| r.snapshot.clone());
            self.staged.retain(|(m, _)| Some(m) == in_flight.as_ref());
            self.staged.push((meta, kv));
            assert!(self.staged.len() <= STAGED_SNAPSHOTS_MAX, "more snapshots staged than can be in flight");
        }
    }

    // ----- the ready batch -------------------------------------------------------------------------

    fn drive_ready(&mut self) -> Result<(), String> {
        while self.io_in_flight.is_none() && self.raft.has_ready() {
            let mut ready = self.raft.ready();
            self.note_leadership(ready.term, ready.leader);
            self.on_soft_state(&ready);
            let messages = std::mem::take(&mut ready.messages);
            self.route(messages);
            self.out.jobs.extend(ready.load_requests.drain(..).map(IoJob::LoadEntries));
            let mut hard_state = ready.hard_state;
            if let Some(hs) = hard_state {
                if hs.term == self.hard_state_submitted.term && hs.vote == self.hard_state_submitted.vote {
                    // Only the commit index moved. It is volatile state (paper Figure 2): it rides
                    // along with the next batch that syncs anyway instead of costing a sync.
                    self.commit_deferred = Some(hs);
                    hard_state = None;
                }
            }
            let needs_disk = ready.snapshot.is_some()
                || !ready.entries.is_empty()
                || hard_state.is_some()
                || ready.recovery.is_some();
            if needs_disk {
                let hard_state = hard_state.or(self.commit_deferred.take());
                if let Some(hs) = hard_state {
                    self.hard_state_submitted = hs;
                }
                self.logged_bytes_since_snapshot += ready.entries.iter().map(|e| e.size_bytes() as u64).sum::<u64>();
                let job = IoJob::Persist {
                    snapshot: ready.snapshot.clone(),
                    entries: std::mem::take(&mut ready.entries),
                    hard_state,
                    recovery: ready.recovery,
                };
                self.out.jobs.push(job);
                self.io_in_flight = Some(ready);
            } else {
                // Nothing to make durable: its persisted messages promise nothing new.
                assert!(ready.entries.is_empty() && ready.snapshot.is_none(), "a batch with data skipped the disk");
                self.finish_ready(ready)?;
            }
        }
        Ok(())
    }

    fn on_soft_state(&mut self, ready: &Ready) {
        let Some(role) = ready.role else { return };
        info!("node {} is {} in term {} (leader {})", self.id, role.name(), ready.term, ready.leader);
        let is_leader = role == Role::Leader;
        if self.was_leader && !is_leader {
            // Writes may still commit under the next leader; the client retries with the same
            // session seq, which is safe.
            for (waiter, why, kind) in self.requests.leadership_lost() {
                self.reply_abandoned(waiter, why, kind);
            }
        }
        self.was_leader = is_leader;
    }

    fn finish_ready(&mut self, ready: Ready) -> Result<(), String> {
        debug_assert!(self.io_in_flight.is_none(), "persisted messages released while a batch is in flight");
        self.route(ready.persisted_messages);
        if let Some(meta) = &ready.snapshot {
            let Some(at) = self.staged.iter().position(|(m, _)| m == meta) else {
                return Err(format!("the core installed snapshot {} that was never received", meta.index));
            };
            // Anything staged before it was replaced by it.
            let staged = self.staged.drain(..=at).next_back().map(|(_, kv)| kv);
            let (kv, image_bytes) = staged.ok_or("the staged snapshot vanished")?;
            // The old state is freed on the snapshot lane, not here.
            let old = std::mem::replace(&mut self.kv, *kv);
            self.out.jobs.push(IoJob::DropState(old.into_frozen()));
            self.snapshot_image_bytes = image_bytes;
            self.snapshot_meta = meta.clone();
            self.logged_bytes_since_snapshot = 0;
            info!("installed snapshot at index {} (term {}) from the leader", meta.index, meta.term);
            for (waiter, why, kind) in self.requests.snapshot_installed(meta.index) {
                self.reply_abandoned(waiter, why, kind);
            }
        }
        if !ready.committed_entries.is_empty() {
            let started = Instant::now();
            for entry in &ready.committed_entries {
                self.apply(entry, started)?;
            }
            self.note_applied_batch(started.elapsed());
        }
        // The state machine lands exactly where this batch took it. The core may already be
        // further: a snapshot that arrived while the batch was in flight moves its applied index,
        // and comes to the state machine with the next batch.
        let handed = ready.committed_entries.last().map(|e| e.index).or(ready.snapshot.as_ref().map(|s| s.index));
        assert!(
            handed.is_none_or(|index| index == self.kv.applied_index())
                && self.kv.applied_index() <= self.raft.applied(),
            "state machine at {} after a batch that handed it {handed:?}; core applied {}",
            self.kv.applied_index(),
            self.raft.applied()
        );
        for read in &ready.read_states {
            self.note_read_round_finished(read.ctx, true);
            self.requests.read_round_confirmed(read.ctx, read.index);
        }
        for &ctx in &ready.dropped_reads {
            self.note_read_round_finished(ctx, false);
            for read in self.requests.read_round_failed(ctx) {
                self.reply_not_leader(read.waiter, RequestType::Get);
            }
        }
        self.serve_reads();
        self.raft.advance();
        self.maybe_snapshot();
        Ok(())
    }

    /// Applies one committed entry; `batch_started` stamps its proposal's commit (one clock read
    /// per batch).
    fn apply(&mut self, entry: &Entry, batch_started: Instant) -> Result<(), String> {
        if self.record_applied {
            self.out.applied.push(entry.clone());
        }
        let result = match entry.kind {
            EntryKind::Noop | EntryKind::ConfChange => {
                self.kv.apply_noop(entry.index).map_err(|e| format!("apply {}: {e}", entry.index))?;
                None
            }
            EntryKind::Normal => {
                Some(self.kv.apply(entry.index, &entry.data).map_err(|e| format!("apply {}: {e}", entry.index))?)
            }
        };
        let Some((ticket, own_entry)) = self.requests.write_applied(entry.index, entry.term) else { return Ok(()) };
        if own_entry {
            self.note_committed(&ticket, batch_started);
        }
        let body = match result {
            _ if !own_entry => {
                FrameBody::Error(ErrorReply::new(ErrorCode::OutcomeUnknown, "another leader's entry took this index"))
            }
            Some(result) => write_reply(result),
            None => FrameBody::Error(ErrorReply::new(ErrorCode::Internal, "a no-op took this write's index")),
        };
        self.reply(ticket.waiter, ticket.kind, body);
        Ok(())
    }

    // ----- clients ---------------------------------------------------------------------------------

    fn propose_batch(&mut self) {
        if self.proposals_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.proposals_batch);
        let results = self.raft.propose_batch(batch.iter().map(|(_, data)| data.clone()));
        let term = self.raft.term();
        let proposed_at = Instant::now();
        for ((waiter, data), result) in batch.into_iter().zip(results) {
            let kind = write_type(&data);
            match result {
                Ok(index) => self.requests.write_proposed(index, term, WriteTicket { waiter, kind, proposed_at }),
                Err(ProposeError::NotLeader { .. }) => self.reply_not_leader(waiter, kind),
                Err(ProposeError::Busy) => {
                    self.reply_error(waiter, kind, ErrorCode::Overloaded, "too many uncommitted entries".into())
                }
                Err(ProposeError::Transferring { to }) => self.reply_error(
                    waiter,
                    kind,
                    ErrorCode::Overloaded,
                    format!("leadership is being transferred to node {to}; retry"),
                ),
            }
        }
    }

    fn start_read_round(&mut self) {
        let Some(ctx) = self.requests.start_read_round() else { return };
        if let Err(e) = self.raft.read_index(ctx) {
            for read in self.requests.read_round_failed(ctx) {
                match e {
                    ProposeError::NotLeader { .. } => self.reply_not_leader(read.waiter, RequestType::Get),
                    ProposeError::Busy | ProposeError::Transferring { .. } => {
                        self.reply_error(read.waiter, RequestType::Get, ErrorCode::Overloaded, "too many reads".into())
                    }
                }
            }
        } else {
            self.note_read_round_started(ctx);
        }
    }

    fn serve_reads(&mut self) {
        for read in self.requests.reads_servable(self.kv.applied_index()) {
            let reply = self.kv.get(&read.key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
            self.reply(read.waiter, RequestType::Get, FrameBody::Reply(reply));
        }
    }

    /// Every reply leaves through here (`kind` is what was asked, for the metrics).
    fn reply(&mut self, waiter: Waiter, kind: RequestType, body: FrameBody) {
        self.note_reply(kind, &body);
        self.out.replies.push((waiter, body));
    }

    fn reply_error(&mut self, waiter: Waiter, kind: RequestType, code: ErrorCode, message: String) {
        self.reply(waiter, kind, FrameBody::Error(ErrorReply::new(code, message)));
    }

    fn reply_abandoned(&mut self, waiter: Waiter, why: Abandoned, kind: RequestType) {
        match why {
            Abandoned::OutcomeUnknown(text) => self.reply_error(waiter, kind, ErrorCode::OutcomeUnknown, text.into()),
            Abandoned::NotLeader => self.reply_not_leader(waiter, kind),
            Abandoned::ShuttingDown => {
                let text = "the node is shutting down; try another".into();
                self.reply_error(waiter, kind, ErrorCode::ShuttingDown, text)
            }
        }
    }
}

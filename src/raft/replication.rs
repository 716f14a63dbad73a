//! Log replication and commit (paper Figure 2, §5.3, §5.4.2): the leader's side (appends,
//! heartbeats, snapshots, answers, the commit rule) and the follower's (accepting appends and
//! snapshots).
//!
//! Invariants: a leader never overwrites its log; a follower never truncates a committed entry
//! (asserted in `RaftLog`); only an entry of the current term commits by counting replicas; the
//! leader counts itself only for what it has persisted; at most `inflight_msgs_max` appends are
//! unacknowledged per follower, each at most `append_bytes_max` (one entry always fits).

use bytes::Bytes;

use super::consensus::{LoadRequest, Raft, Role};
use super::log::Unavailable;
use super::message::{Message, MessageBody};
use super::recovery::Recovery;
use super::tracker::ProgressState;
use super::types::{Entry, EntryKind, Index, NodeId, SnapshotMeta, Term};
use crate::limits::ENTRIES_PER_APPEND_MAX;

impl Raft {
    // ----- leader ------------------------------------------------------------------------------

    pub(super) fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> Index {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index() + 1;
        self.log.append(Entry { index, term: self.term, kind, data });
        index
    }

    /// Recomputes the commit index from the voters' match indexes. The leader counts itself only
    /// up to what it has persisted (DESIGN.md: parallel write, durable self-ack).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let persisted = self.log.persisted;
        let quorum_index = self.tracker.committed_index(self.id, persisted);
        let old = self.log.committed;
        if !self.log.maybe_commit(quorum_index, self.term) {
            return false;
        }
        let newly: usize = (old + 1..=self.log.committed).filter_map(|i| self.log.entry(i)).map(|e| e.data.len()).sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly);
        self.start_deferred_reads();
        self.after_commit_conf();
        true
    }

    /// The commit index moved: send each follower the entries it has not been sent yet, which
    /// carry the new commit index. A follower with nothing new learns it from the next append
    /// or heartbeat (at most a heartbeat interval later), not from an append of its own: that
    /// doubled the messages, and the wake-ups of every node, per write at low concurrency.
    /// Nothing waits on a follower knowing the commit index: commits, reads and transfers
    /// are decided by the leader (a leader leaving the configuration tells them explicitly).
    pub(super) fn after_commit(&mut self) {
        for peer in self.tracker.followers() {
            self.maybe_send_append(peer, false);
        }
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers = self.tracker.followers();
        for peer in peers {
            self.maybe_send_append(peer, true);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_seq = self.read_only.seq();
        let targets: Vec<(NodeId, Index)> = self.tracker.iter().map(|(id, pr)| (id, pr.matched)).collect();
        for (peer, matched) in targets {
            let commit = matched.min(self.log.committed);
            self.send(peer, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// Sends `to` the next entries it needs, or a snapshot if they are compacted. Returns true if
    /// a message carrying entries or a snapshot went out.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.get(to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let entries = match self.log.slice(next, self.opts.append_bytes_max, ENTRIES_PER_APPEND_MAX) {
            Ok(entries) => entries,
            Err(Unavailable::Compacted) => return self.send_snapshot(to),
            Err(Unavailable::Evicted) => {
                self.request_load(to, next);
                return false;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        self.send_entries(to, next, entries)
    }

    /// Sends `entries` (starting at `next`, the follower's next index) and moves its progress.
    fn send_entries(&mut self, to: NodeId, next: Index, entries: Vec<Entry>) -> bool {
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else { return self.send_snapshot(to) };
        let Some(pr) = self.tracker.get_mut(to) else { return false };
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

    /// Entries the follower needs were evicted from memory: ask the node to read them from the
    /// WAL ([`Raft::take_load_requests`]); the follower waits until [`Raft::entries_loaded`].
    fn request_load(&mut self, to: NodeId, lo: Index) {
        let Some(pr) = self.tracker.get_mut(to) else { return };
        pr.loading = true;
        if pr.load_in_flight {
            return; // its answer restarts replication from wherever the follower is then
        }
        pr.load_in_flight = true;
        let max_bytes = self.opts.append_bytes_max;
        self.load_requests.push(LoadRequest { to, lo, max_bytes, term: self.term });
    }

    /// The node read the entries a [`LoadRequest`] asked for. An answer from another term is
    /// ignored; one for a follower that moved on, or entries that no longer match this log, ends
    /// the wait and replication picks up from where the follower is now.
    pub fn entries_loaded(&mut self, request: LoadRequest, entries: Vec<Entry>) {
        let current = self.role == Role::Leader && request.term == self.term;
        let Some(pr) = self.tracker.get_mut(request.to).filter(|pr| current && pr.load_in_flight) else { return };
        pr.load_in_flight = false;
        let waiting = std::mem::replace(&mut pr.loading, false);
        if !waiting || pr.next != request.lo {
            self.maybe_send_append(request.to, true);
            return;
        }
        let valid = !entries.is_empty()
            && entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == request.lo + i as u64 && self.log.matches(e.index, e.term));
        if valid {
            self.send_entries(request.to, request.lo, entries);
            while self.maybe_send_append(request.to, false) {}
        } else {
            self.maybe_send_append(request.to, true);
        }
    }

    /// The entries were no longer in the WAL (compacted meanwhile): the follower gets the
    /// snapshot instead.
    pub fn load_failed(&mut self, request: LoadRequest) {
        let current = self.role == Role::Leader && request.term == self.term;
        let Some(pr) = self.tracker.get_mut(request.to).filter(|pr| current && pr.load_in_flight) else { return };
        pr.load_in_flight = false;
        let waiting = std::mem::replace(&mut pr.loading, false);
        if waiting && pr.next == request.lo && request.lo <= self.log.snapshot_index() {
            self.send_snapshot(request.to);
        } else {
            self.maybe_send_append(request.to, true);
        }
    }

    /// Load requests produced since the last call (also handed out in each ready batch).
    pub fn take_load_requests(&mut self) -> Vec<LoadRequest> {
        std::mem::take(&mut self.load_requests)
    }

    pub(super) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.log.snapshot.clone() else {
            // The log starts at index 1 and nothing is compacted, so this cannot happen.
            panic!("follower {to} needs compacted entries but no snapshot exists");
        };
        if let Some(pr) = self.tracker.get_mut(to) {
            pr.become_snapshot(snapshot.index);
        }
        self.send(to, MessageBody::InstallSnapshot { meta: snapshot });
        true
    }

    pub(super) fn step_leader(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.tracker.get_mut(from) else { return };
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
            MessageBody::LogLost { last_index, last_term } => {
                // Stop counting acknowledgements the follower no longer has; probe from its end
                // (or from ours: its log may hold a longer suffix of an older term). What it
                // still matches is proven only if its last entry is ours (Log Matching): it may
                // hold an older suffix at indexes it once acknowledged.
                let end = last_index.min(self.log.last_index());
                let proven = if self.log.term(last_index) == Some(last_term) { end } else { 0 };
                pr.forget_beyond(end, proven);
                self.maybe_send_append(from, true);
            }
            _ => {}
        }
    }

    pub(super) fn handle_append_rejection(
        &mut self,
        from: NodeId,
        rejected: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let next_probe =
            if hint_term > 0 { self.log.find_conflict_by_term(hint_index, hint_term).0 } else { hint_index };
        let Some(pr) = self.tracker.get_mut(from) else { return };
        if pr.maybe_decrease_to(rejected, next_probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.maybe_send_append(from, true);
        }
    }

    pub(super) fn handle_append_success(&mut self, from: NodeId, index: Index) {
        let Some(pr) = self.tracker.get_mut(from) else { return };
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
        self.maybe_send_timeout_now(from);
        if self.maybe_commit() {
            self.after_commit();
        } else if was_paused {
            // The follower was waiting on us; an empty append still tells it the commit index.
            self.maybe_send_append(from, true);
        }
        // Keep the pipeline full: bounded by the inflight window and the log's end.
        while self.maybe_send_append(from, false) {}
    }

    // ----- follower ----------------------------------------------------------------------------

    pub(super) fn step_follower(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m.from, prev_log_index, prev_log_term, leader_commit, &entries);
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                if commit > self.log.last_index() {
                    // A heartbeat's commit is at most what we acknowledged to this leader: we lost
                    // acknowledged entries (amnesia), as far as our current term at most.
                    self.enter_recovery(Recovery::unknown_extent(self.term), "the leader's commit is beyond our log");
                }
                // The leader sends at most what we acknowledged in this term. A recovering node
                // may have lost that and hold an older suffix at the same indexes: it commits
                // only what this term's appends proved matches the leader.
                let verified = match self.verified_by_leader {
                    (term, index) if term == self.term => index,
                    _ => 0,
                };
                let cap = if self.recovery.is_some() { verified } else { self.log.last_index() };
                self.log.commit_to(commit.min(self.log.last_index()).min(cap));
                self.send(m.from, MessageBody::HeartbeatResponse { read_seq });
            }
            MessageBody::InstallSnapshot { meta } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m.from, meta);
            }
            MessageBody::TimeoutNow if self.leader == 0 || self.leader == from => self.campaign_for_transfer(),
            _ => {} // stale responses from an earlier role in this term
        }
        self.report_log_lost(from);
    }

    pub(super) fn handle_append(
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
            Some(last_new) => {
                self.follow_conf(entries);
                self.verified(last_new);
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        reject: false,
                        index: last_new,
                        reject_hint_index: 0,
                        reject_hint_term: 0,
                    },
                )
            }
            None => {
                if self.recovery.is_some() && prev_index > self.log.last_index() {
                    // The leader still probes past our end: our LogLost may have been lost, and
                    // it ignores rejections below what it believes we matched. Report again.
                    self.log_lost_reported_term = 0;
                }
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

    /// This term's leader proved our log matches its own up to `index`.
    fn verified(&mut self, index: Index) {
        let (term, known) = self.verified_by_leader;
        if term != self.term || index > known {
            self.verified_by_leader = (self.term, index);
        }
    }

    pub(super) fn handle_snapshot(&mut self, from: NodeId, snapshot: SnapshotMeta) {
        let index = snapshot.index;
        let ack_index = if index <= self.log.committed {
            self.log.committed // we already have all of it
        } else if self.log.matches(index, snapshot.term) {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(index);
            index
        } else {
            // The configuration comes from a peer: `Message::validate` refused one the core
            // cannot run with, with the whole snapshot.
            self.log.restore_snapshot(snapshot.clone());
            self.restore_conf(&snapshot);
            index
        };
        self.verified(ack_index);
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
}

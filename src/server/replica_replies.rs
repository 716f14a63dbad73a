//! What the replica answers besides write results' plumbing: redirects to the leader, the
//! status report, and the reply for the state machine's result of a write.

use super::{Replica, RequestType};
use crate::raft::Role;
use crate::server::requests::Waiter;
use crate::wire::{ClientReply, FrameBody, NodeRole, PeerStatus, StatusReport};

impl Replica {
    pub(super) fn reply_not_leader(&mut self, waiter: Waiter, kind: RequestType) {
        let leader_id = self.raft.leader();
        let leader_addr = if leader_id == self.id {
            String::new()
        } else {
            self.addresses.get(&leader_id).cloned().unwrap_or_default()
        };
        let leader_id = if leader_addr.is_empty() { 0 } else { leader_id };
        self.reply(waiter, kind, FrameBody::Reply(ClientReply::NotLeader { leader_id, leader_addr }));
    }

    /// This node's status, as `Status` answers it.
    pub fn status_report(&self) -> StatusReport {
        let role = match self.raft.role() {
            Role::Follower => NodeRole::Follower,
            Role::PreCandidate => NodeRole::PreCandidate,
            Role::Candidate => NodeRole::Candidate,
            Role::Leader => NodeRole::Leader,
        };
        StatusReport {
            node_id: self.id,
            role,
            term: self.raft.term(),
            leader_id: self.raft.leader(),
            commit_index: self.raft.committed(),
            applied_index: self.kv.applied_index(),
            last_log_index: self.raft.last_index(),
            log_size_bytes: self.log_bytes,
            snapshot_index: self.snapshot_meta.index,
            snapshot_term: self.snapshot_meta.term,
            peers: self
                .raft
                .progress()
                .into_iter()
                .map(|(node_id, match_index, next_index)| PeerStatus { node_id, match_index, next_index })
                .collect(),
            http_addr: None,
        }
    }
}

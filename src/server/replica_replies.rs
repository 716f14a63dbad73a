//! What the replica answers besides write results' plumbing: redirects to the leader, the
//! status report, and the reply for the state machine's result of a write.

use super::{Replica, RequestType};
use crate::kv::{ApplyResult, SESSION_REPLIES_MAX};
use crate::raft::Role;
use crate::server::requests::Waiter;
use crate::wire::{ClientReply, ErrorCode, ErrorReply, FrameBody, NodeRole, PeerStatus, StatusReport};

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

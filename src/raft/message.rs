//! Messages between Raft peers. The wire layer encodes exactly these fields (see `protocol.md`).
//!
//! Every message carries the sender's term: the receiver compares it with its own before it looks
//! at the body (paper Figure 2, "Rules for Servers"). The one exception is `PreVote`, whose term is
//! the term the sender *would* campaign in; receiving it never changes the receiver's term.

use super::types::{Entry, Index, NodeId, Snapshot, Term};

/// One peer-to-peer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The body of a peer message. Field order here is the field order on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Dissertation §9.6: "would you vote for me in `term`?" Grants change no state.
    PreVote {
        last_log_index: Index,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// Paper §5.2 RequestVote.
    RequestVote {
        last_log_index: Index,
        last_log_term: Term,
    },
    RequestVoteResponse {
        granted: bool,
    },
    /// Paper §5.3 AppendEntries, batched: `entries` may be empty (a probe).
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
    },
    /// On success `index` is the last index the follower now matches. On rejection `index` is the
    /// `prev_log_index` that was rejected and the hint names where the leader should probe next:
    /// the largest follower index `<= min(prev_log_index, last)` whose term is `<= prev_log_term`,
    /// and that term (the fast backtracking of etcd-io/raft, dissertation §5.3 optimisation).
    AppendEntriesResponse {
        reject: bool,
        index: Index,
        reject_hint_index: Index,
        reject_hint_term: Term,
    },
    /// Leader liveness and commit propagation. `commit` is at most what the follower is known to
    /// match, so a follower can always apply it. `read_seq` is the ReadIndex round this heartbeat
    /// confirms (0 when none).
    Heartbeat {
        commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// A recovering follower's log really ends at (`last_index`, `last_term`): it lost entries
    /// it may have acknowledged (protocol-aware recovery, `recovery.rs`). The leader stops
    /// counting what it believed the follower matched and probes from there.
    LogLost {
        last_index: Index,
        last_term: Term,
    },
    /// A whole snapshot. The transport may stream `snapshot.data` in chunks and hand the core the
    /// reassembled message; the core never sees a partial snapshot.
    InstallSnapshot {
        snapshot: Snapshot,
    },
}

impl MessageBody {
    /// A short name for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResp",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResp",
            MessageBody::AppendEntries { .. } => "Append",
            MessageBody::AppendEntriesResponse { .. } => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::LogLost { .. } => "LogLost",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        }
    }
}

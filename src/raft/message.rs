//! Messages between Raft peers. The wire layer encodes exactly these fields (see `protocol.md`).
//!
//! Every message carries the sender's term: the receiver compares it with its own before it looks
//! at the body (paper Figure 2, "Rules for Servers"). The one exception is `PreVote`, whose term is
//! the term the sender *would* campaign in; receiving it never changes the receiver's term.

use super::membership::Configuration;
use super::types::{Entry, Index, NodeId, SnapshotMeta, Term};
use crate::limits::{ENTRIES_PER_APPEND_MAX, VOTERS_MAX};

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
    /// Paper §5.2 RequestVote. `transfer` is set when the leader handed leadership to the
    /// candidate (`TimeoutNow`, dissertation §3.10): voters then ignore their leader stickiness.
    RequestVote {
        last_log_index: Index,
        last_log_term: Term,
        transfer: bool,
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
    /// "Replace your log with the snapshot `meta` describes." The core handles metadata only: the
    /// node streams the image from its snapshot file and hands the receiving core this message once
    /// the image arrived whole, verified and durable.
    InstallSnapshot {
        meta: SnapshotMeta,
    },
    /// Leadership transfer (dissertation §3.10): "campaign now", sent by the leader to a caught-up
    /// voter. The receiver starts a real election at once, without pre-vote.
    TimeoutNow,
}

/// Largest index or term a peer message may carry: a billion entries a second would take 146
/// years to reach it, and arithmetic on values below it (`+ 1`, `+ entries`) never overflows.
pub const INDEX_MAX: u64 = 1 << 62;

impl Message {
    /// Checks every field a peer controls before the core looks at it: non-zero ids, indexes and
    /// terms within [`INDEX_MAX`], entry runs contiguous after `prev_log_index` with terms that
    /// never decrease, bounded counts, snapshot configurations without node 0. A message that
    /// fails is dropped (the node closes the connection it came on); nothing it says is trusted.
    pub fn validate(&self) -> Result<(), String> {
        if self.from == 0 || self.to == 0 {
            return Err(format!("node id 0 in a message from {} to {}", self.from, self.to));
        }
        bounded("term", self.term)?;
        match &self.body {
            MessageBody::PreVote { last_log_index, last_log_term }
            | MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                bounded("last_log_index", *last_log_index)?;
                bounded("last_log_term", *last_log_term)
            }
            MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries } => {
                bounded("prev_log_index", *prev_log_index)?;
                bounded("prev_log_term", *prev_log_term)?;
                bounded("leader_commit", *leader_commit)?;
                validate_entries(*prev_log_index, *prev_log_term, entries)
            }
            MessageBody::AppendEntriesResponse { index, reject_hint_index, reject_hint_term, .. } => {
                bounded("index", *index)?;
                bounded("reject_hint_index", *reject_hint_index)?;
                bounded("reject_hint_term", *reject_hint_term)
            }
            MessageBody::Heartbeat { commit, .. } => bounded("commit", *commit),
            MessageBody::LogLost { last_index, last_term } => {
                bounded("last_index", *last_index)?;
                bounded("last_term", *last_term)
            }
            MessageBody::InstallSnapshot { meta } => {
                bounded("snapshot index", meta.index)?;
                bounded("snapshot term", meta.term)?;
                let conf = &meta.conf;
                let sets = [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next];
                if sets.iter().any(|set| set.contains(&0) || set.len() > VOTERS_MAX) {
                    return Err(format!("snapshot configuration {conf:?} is not usable"));
                }
                if !conf.is_empty() {
                    Configuration::from_conf_state(conf)
                        .map_err(|e| format!("snapshot configuration is not usable: {e}"))?;
                }
                Ok(())
            }
            MessageBody::PreVoteResponse { .. }
            | MessageBody::RequestVoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow => Ok(()),
        }
    }
}

fn bounded(field: &str, value: u64) -> Result<(), String> {
    if value > INDEX_MAX {
        return Err(format!("{field} {value} is beyond {INDEX_MAX}"));
    }
    Ok(())
}

fn validate_entries(prev_index: Index, prev_term: Term, entries: &[Entry]) -> Result<(), String> {
    if entries.len() > ENTRIES_PER_APPEND_MAX {
        return Err(format!("{} entries in one append (at most {ENTRIES_PER_APPEND_MAX})", entries.len()));
    }
    let (mut expected, mut term) = (prev_index + 1, prev_term);
    for entry in entries {
        if entry.index != expected || entry.term < term || entry.term > INDEX_MAX {
            let why = format!("entry {}@{} breaks the run after {prev_index}@{prev_term}", entry.index, entry.term);
            return Err(why);
        }
        (expected, term) = (expected + 1, entry.term);
    }
    Ok(())
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
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

//! The consensus core: a pure, deterministic Raft state machine.
//!
//! # Contract
//! [`Raft`] owns no storage, no sockets, no clock and no entropy. Time, messages and the RNG seed
//! are inputs, so the same inputs always produce the same outputs (the simulator relies on it).
//!
//! Inputs:
//! - [`Raft::tick`]: one unit of logical time (the node maps it to wall time, 10 ms in `raftd`);
//! - [`Raft::step`]: a message from a peer;
//! - [`Raft::propose`]: an application command (leader only);
//! - [`Raft::read_index`]: a linearizable read request (leader only; ReadIndex, dissertation §6.4);
//! - [`Raft::compact`]: the application took a snapshot up to an applied index.
//!
//! Output: when [`Raft::has_ready`] is true, [`Raft::ready`] returns a [`Ready`] batch. The node
//! must, in order:
//! 1. persist `snapshot` (if any), then `entries` (discarding any persisted entry at or after
//!    `entries[0].index` first), then `hard_state`, with one sync for the whole batch;
//! 2. send `persisted_messages` (vote requests and grants, append and snapshot acknowledgements:
//!    they promise state that must survive a crash);
//! 3. restore the state machine from `snapshot` if present, apply `committed_entries` in order,
//!    and serve each `read_states` entry once the applied index reaches its `index`;
//! 4. call [`Raft::advance`].
//!
//! `messages` carry no promise about local state and may be sent at once, before or while the
//! batch is persisted: this is how a leader writes its log in parallel with replication
//! (dissertation §10.2.1). The leader counts itself toward a commit only for entries it has
//! persisted, i.e. after `advance()`.
//!
//! Between `ready()` and `advance()` the node may keep calling `tick`, `step`, `propose` and
//! `read_index`; their effects go into the next batch. That is the group commit: while one batch
//! is being synced, the next one forms.
//!
//! # Rooms
//! - `consensus`: the `Raft` type, roles, time, proposals, message dispatch by term and role;
//! - `election`: pre-vote, vote requests and grants, becoming leader;
//! - `replication`: appends, heartbeats, snapshots, the commit rule, follower log handling;
//! - `read_only`: ReadIndex rounds; `raw_node`: the ready batch and `advance`;
//! - `membership`: configurations, change entries and their history along the log;
//!   `conf_change`: proposing changes, following them as entries are appended or truncated,
//!   leaving the joint phase; `transfer`: leadership transfer (dissertation §3.10);
//! - `tracker`: per-follower progress, votes, recent activity; `quorum`: majority and joint
//!   counting behind one set of questions; `log`: the in-memory log; `mem_storage`: an in-memory
//!   durable model for tests and the simulator.
//!
//! # Invariants kept here
//! - at most one vote per term, durable before the grant leaves the node (asserted when a vote
//!   is granted; the grant is a persisted message);
//! - a leader never overwrites its log; a follower never truncates a committed entry (asserted);
//! - only an entry of the current term commits by counting replicas (paper Figure 8);
//! - `snapshot_index <= applied <= committed <= last_index`, commit and applied never decrease
//!   (asserted in release builds whenever a batch is handed out);
//! - a read state is produced only after a quorum confirmed this leader's term *after* the read
//!   arrived, and only once an entry of the current term has committed.
//!
//! Quorums come from [`tracker::ProgressTracker`] and [`quorum::JointConfig`], so joint
//! consensus and learners change those types only.

mod conf_change;
mod consensus;
mod election;
pub mod log;
pub mod mem_storage;
pub mod membership;
pub mod message;
pub mod quorum;
mod raw_node;
mod read_only;
pub mod recovery;
mod replication;
pub mod rng;
pub mod tracker;
mod transfer;
pub mod types;

#[cfg(test)]
mod tests;

pub use conf_change::{ConfChangeError, PROMOTE_LAG_ENTRIES_MAX};
pub use consensus::{
    FollowerProgress, LoadRequest, ProposeError, Raft, RaftConfig, ReadState, Restored, Role, READS_PENDING_MAX,
};
pub use election::ElectionStats;
pub use mem_storage::MemStorage;
pub use message::{Message, MessageBody};
pub use raw_node::{Ready, RecoveryChange};
pub use recovery::Recovery;
pub use transfer::TransferError;
pub use types::{ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

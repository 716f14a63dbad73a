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
//! # Invariants kept here
//! - at most one vote per term, durable before the grant leaves the node;
//! - a leader never overwrites its log; a follower never truncates a committed entry (asserted);
//! - only an entry of the current term commits by counting replicas (paper Figure 8);
//! - `snapshot_index <= applied <= committed <= last_index`, commit and applied never decrease;
//! - a read state is produced only after a quorum confirmed this leader's term *after* the read
//!   arrived, and only once an entry of the current term has committed.
//!
//! Quorums come from [`quorum::Config`], so joint consensus and learners change that type only.

pub mod consensus;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod rng;
pub mod types;

#[cfg(test)]
mod tests;

pub use consensus::{ProposeError, Raft, RaftConfig, ReadState, Ready, Restored, Role};
pub use message::{Message, MessageBody};
pub use types::{ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

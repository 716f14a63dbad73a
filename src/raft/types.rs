//! Plain data the core exchanges with the layers around it: log entries, hard state, snapshots.
//!
//! These types carry no behaviour beyond small accessors; the storage layer persists them and the
//! wire layer encodes them. Payloads are `Bytes` so that an entry can sit in the log, in an
//! outgoing message and in a ready batch at once without being copied.

use bytes::Bytes;

/// A node's identity inside one cluster. `0` is never a valid id: it means "nobody" on the wire.
pub type NodeId = u64;
/// A Raft term. Terms start at 0 (no election yet) and only grow.
pub type Term = u64;
/// A log index. Index 0 is the empty prefix; the first real entry has index 1.
pub type Index = u64;

/// What an entry's payload means to the layer that applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command (opaque to the core).
    Normal,
    /// The empty entry a new leader appends to commit an entry of its own term (paper §5.4.2,
    /// dissertation §6.4). It carries no payload and applies as a no-op.
    Noop,
    /// A membership change ([`crate::raft::membership::ConfChange`], encoded as in
    /// `protocol.md` §9.1). It takes effect on a node when appended, not when committed, and
    /// applies to the state machine as a no-op.
    ConfChange,
}

impl EntryKind {
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
        }
    }

    pub fn from_u8(value: u8) -> Option<EntryKind> {
        match value {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One replicated log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Approximate bytes this entry costs in a message; used for batching caps.
    pub fn size_bytes(&self) -> usize {
        // index + term + kind + length prefix, then the payload.
        8 + 8 + 1 + 4 + self.data.len()
    }
}

/// The state Raft must persist before it answers anyone (paper Figure 2: currentTerm, votedFor),
/// plus the commit index so that a restarted node can re-apply without waiting for a leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// The candidate this node voted for in `term`, or 0 for none.
    pub vote: NodeId,
    pub commit: Index,
}

/// The cluster membership a snapshot was taken under (or any configuration in plain sets):
/// the voters (C_new while joint), the outgoing voters (C_old, empty unless joint), the learners,
/// and the learners-to-be (voters being demoted, learners once the joint phase ends). Each set
/// is ascending without duplicates; `addresses` gives the members' addresses by id, ascending.
/// All empty means "no configuration" (a snapshot of an older format, or a node that joins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub learners_next: Vec<NodeId>,
    pub addresses: Vec<(NodeId, String)>,
}

impl ConfState {
    /// A plain configuration of `voters`, no learners, no addresses.
    pub fn from_voters(voters: Vec<NodeId>) -> ConfState {
        ConfState { voters, ..ConfState::default() }
    }

    /// True if no set holds anyone.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
            && self.voters_outgoing.is_empty()
            && self.learners.is_empty()
            && self.learners_next.is_empty()
    }

    /// The address recorded for `id`, if any.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.iter().find(|(i, _)| *i == id).map(|(_, a)| a.as_str())
    }
}

/// Describes a snapshot: everything up to and including `index` is folded into its image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf: ConfState,
}

/// A state-machine image and its metadata. `data` is opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

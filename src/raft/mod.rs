//! The consensus core (work in progress: see types and message).
pub mod message;
pub mod types;

pub use message::{Message, MessageBody};
pub use types::{ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

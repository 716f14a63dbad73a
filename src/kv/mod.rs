//! The key-value state machine that Raft replicates: commands, client sessions, snapshot image.
//!
//! Every node applies the same committed commands in the same order and must reach the same state,
//! so everything here is deterministic and decided by the log alone: no clock, no randomness, no
//! per-node setting, no hash-order iteration (maps are ordered: `BTreeMap`s, and the keys and
//! values in a [`PMap`], which also makes freezing the state for a snapshot O(1)). The pieces:
//!
//! - [`Command`]: a session registration or a client write (`Set`, `Delete`, `Cas`) as it sits in a
//!   log entry's payload. Its byte layout is documented in `protocol.md` §9.1 (`raft-dump` decodes it).
//! - [`KvStore`]: the map plus the client sessions. [`KvStore::apply`] applies one committed entry.
//! - [`KvStore::snapshot`] / [`KvStore::restore`]: a deterministic byte image (sorted keys, sorted
//!   sessions, CRC-32 trailer) and its validating inverse.
//!
//! # Sessions (Raft dissertation §6.3; `protocol.md` §7.1)
//!
//! A client opens a session by committing a registration; its **session id is the log index of
//! that entry** (so never 0, and identical on every replica). Nothing else opens a session: not a
//! leader's no-op, not a write. Each write carries `(session_id, seq, first_outstanding)`, where
//! `first_outstanding <= seq` is the lowest seq the client has no reply for yet. Applying a write:
//!
//! 1. unknown session id (never registered, or evicted) → [`ApplyResult::SessionExpired`], always;
//!    nothing changes (an unknown id is never a fresh start);
//! 2. `seq` below the session's floor (the highest `first_outstanding` applied) →
//!    [`ApplyResult::StaleSequence`]: that reply was discarded; nothing changes;
//! 3. `seq` already applied (a retry, in any order) → [`ApplyResult::Duplicate`] with the cached
//!    reply; only the session's activity index moves;
//! 4. `seq - max(floor, first_outstanding) >= SESSION_REPLIES_MAX` →
//!    [`ApplyResult::SessionWindowFull`]; nothing changes (never silent loss of a reply);
//! 5. otherwise the write runs once, its reply is cached under `seq`, the floor is raised to
//!    `first_outstanding` (never lowered) and the replies below the floor are dropped.
//!
//! Seqs need not be consecutive: a client may skip numbers, and each distinct seq at or above the
//! floor runs at most once. So a (session, seq) changes the state at most once, ever: at or above
//! the floor a seq ran iff its reply is cached; below the floor it is refused; an evicted session
//! refuses everything.
//!
//! Eviction: a registration carries the leader's `--sessions-max`; if that many sessions are open,
//! the sessions with the lowest activity index (the index of their last registration, applied
//! write or duplicate; unique, so there are no ties) are evicted until one slot is free. Because the
//! cap travels in the entry, replicas started with different flags still evict identically.
//!
//! Memory: at most [`SESSIONS_MAX_LIMIT`] sessions, each at most [`SESSION_REPLIES_MAX`] cached
//! replies. A reply is a few bytes, except `CasFailed`, which holds the value it found: a `Bytes`
//! shared with the map, which costs extra only once the key is overwritten. Worst case per session
//! `SESSION_REPLIES_MAX × VALUE_BYTES_MAX` = 1 GiB of pinned values (a client pipelining 1,024
//! failing CASes against 1 MiB values that keep changing), so `sessions_max` GiB in all in theory;
//! a client with one write in flight caches one reply. Typical: about 100 bytes per session. The
//! snapshot image writes each cached value out in full (a restored store no longer shares it with
//! the map), so pinned values count twice there.
//!
//! Invariants:
//! - `applied_index` grows by exactly one per [`KvStore::apply`] / [`KvStore::apply_noop`]; an
//!   out-of-order index is refused without touching any state.
//! - Keys are at most [`KEY_BYTES_MAX`], values at most [`VALUE_BYTES_MAX`]; nothing that violates
//!   a limit is applied or restored.
//! - The session rules above, and the table invariants of `sessions.rs` (asserted).
//! - Decoding never panics and never allocates more than the input it was given.

pub(crate) mod codec;
mod command;
mod error;
mod pmap;
mod sessions;
mod snapshot;
mod store;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod session_tests;

pub use command::{
    describe_command, escape_bytes, validate_session, Command, Session, COMMAND_TAGS_RETIRED, COMMAND_TAG_CAS,
    COMMAND_TAG_DELETE, COMMAND_TAG_REGISTER, COMMAND_TAG_SET,
};
pub use error::KvError;
pub use pmap::PMap;
pub use sessions::SessionState;
pub use store::{ApplyResult, FrozenKv, KvStore, WriteResult};

pub use crate::limits::{
    KEY_BYTES_MAX, SESSIONS_MAX_DEFAULT, SESSIONS_MAX_LIMIT, SESSION_REPLIES_MAX, VALUE_BYTES_MAX,
};

/// The first sequence number of a session. Sequence numbers are never 0.
pub const FIRST_SEQ: u64 = 1;

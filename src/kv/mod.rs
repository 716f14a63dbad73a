//! The key-value state machine that Raft replicates: commands, client sessions, snapshot image.
//!
//! Every node applies the same committed commands in the same order and must reach the same state,
//! so everything here is deterministic: no clock, no randomness, no hash-order iteration (maps are
//! `BTreeMap`s). The pieces:
//!
//! - [`Command`]: a client write (`Set`, `Delete`, `Cas`) as it sits in a log entry's payload. Its
//!   byte layout is documented in `protocol.md` ("Log entry payloads") because `raft-dump` decodes it.
//! - [`KvStore`]: the map plus client sessions. [`KvStore::apply`] applies one committed entry.
//! - Sessions (Raft dissertation §6.3): each write carries `(client_id, seq)`. The store remembers,
//!   per client, the last sequence number it applied and that write's result, so a retried write is
//!   answered from the cache instead of being applied twice.
//! - [`KvStore::snapshot`] / [`KvStore::restore`]: a deterministic byte image (sorted keys, sorted
//!   sessions, CRC-32 trailer) and its validating inverse.
//!
//! Invariants:
//! - `applied_index` grows by exactly one per [`KvStore::apply`] / [`KvStore::apply_noop`]; an
//!   out-of-order index is refused without touching any state.
//! - Keys are at most [`KEY_BYTES_MAX`], values at most [`VALUE_BYTES_MAX`], sessions at most
//!   [`SESSIONS_MAX`]; nothing that violates a limit is applied or restored.
//! - A (client, seq) pair changes the map at most once while its session is remembered.
//! - Decoding never panics and never allocates more than the input it was given.

pub(crate) mod codec;
mod command;
mod error;
mod pmap;
mod snapshot;
mod store;

#[cfg(test)]
mod tests;

pub use command::{
    describe_command, escape_bytes, Command, Session, COMMAND_TAG_CAS, COMMAND_TAG_DELETE, COMMAND_TAG_SET,
};
pub use error::KvError;
pub use pmap::PMap;
pub use store::{ApplyResult, KvStore, SessionState, WriteResult};

pub use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Most client sessions remembered at once. When a new client writes and the table is full, the
/// session whose last write has the lowest log index is forgotten (least recently used, decided by
/// log index so that every node evicts the same one). A forgotten client that writes again with
/// `seq > 1` gets [`ApplyResult::SessionExpired`].
///
/// Memory: each session caches its last result; a failed CAS caches the current value (shared with
/// the map via `Bytes`, so it costs nothing extra until that key is overwritten). Worst case
/// `SESSIONS_MAX * VALUE_BYTES_MAX` = 10 GiB of pinned values; typical results are a few bytes.
pub const SESSIONS_MAX: usize = 10_000;

/// The first sequence number of a session. Sequence numbers are never 0.
pub const FIRST_SEQ: u64 = 1;

//! The limits that more than one layer enforces, one name and one value each. The decoder of a
//! frame, the state machine that applies a command, the snapshot file reader and the client all
//! check the same numbers, so a value one layer accepts is never refused by the next.
//!
//! Names put the unit or qualifier last (`FRAME_BYTES_MAX`). `protocol.md` §4 lists the ones a
//! client or peer can run into. This module imports nothing: every layer may use it.

/// Largest value of a frame's length prefix (16 MiB): header plus payload, without the prefix.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest key, in bytes: checked when a request is decoded, a command applied, a snapshot read.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value, in bytes (1 MiB), checked like [`KEY_BYTES_MAX`].
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most voters in a configuration (wire messages, snapshot files, the core's configuration).
pub const VOTERS_MAX: usize = 256;

/// Most entries in one AppendEntries: the core never sends more, the decoder never accepts more.
pub const ENTRIES_PER_APPEND_MAX: usize = 8192;

/// Largest snapshot image a receiver reassembles (1 GiB).
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Largest log entry payload, in bytes. Derived from the largest command the state machine
/// accepts (`kv::command`): a CAS carries a key (<= KEY_BYTES_MAX), an expected and a new value
/// (<= VALUE_BYTES_MAX each) and 30 bytes of framing (tag, session, length prefixes, option flag)
/// = 2,101,278 bytes. The 64 KiB margin keeps room for a later register-session command or
/// wider framing without a format change. The WAL refuses segments that cannot hold one such
/// entry (`storage::segment::segment_bytes_min`).
pub const ENTRY_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + KEY_BYTES_MAX + 64 * 1024;

/// Cached replies one client session keeps, and the widest spread `seq - first_outstanding` a
/// write may have: the state machine refuses a write beyond it (`SessionWindowFull`), and the
/// pipelined client never has more writes of one session in flight.
pub const SESSION_REPLIES_MAX: usize = 1024;

/// Default of `raftd --sessions-max`: client sessions the state machine remembers.
pub const SESSIONS_MAX_DEFAULT: u32 = 10_000;

/// Highest `--sessions-max` a node accepts, and the most sessions a snapshot image may hold.
pub const SESSIONS_MAX_LIMIT: u32 = 1_000_000;

/// Largest member address ("host:port") in bytes: in a membership change entry, a snapshot's
/// configuration, a status reply, a redirect.
pub const ADDRESS_BYTES_MAX: usize = 256;

/// Most member changes one membership change entry carries (a replace is two).
pub const CONF_CHANGES_PER_ENTRY_MAX: usize = 16;

/// Most members (voters, outgoing voters, learners) a configuration holds, counted once each.
pub const MEMBERS_MAX: usize = 2 * VOTERS_MAX;

/// Largest encoded configuration (`ConfState`) in bytes: four sets of at most [`VOTERS_MAX`] ids
/// and [`MEMBERS_MAX`] addresses of at most [`ADDRESS_BYTES_MAX`] bytes fit in about 145 KiB.
pub const CONF_STATE_BYTES_MAX: usize = 256 * 1024;

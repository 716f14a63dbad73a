//! Durable storage: the segmented, memory-mapped write-ahead log and snapshot files. This is the
//! only layer that touches files.
//!
//! - `record`: the byte layout of WAL records (documented there, offsets and byte order).
//! - `segment`: segment files (`{seq:020}-{first_index:020}.wal`, preallocated, mmap'd for reads and
//!   recovery; appends go through one `pwrite` per batch, see `Segment::append` for the measurement).
//! - `log_state`: the index rebuilt by replaying records; shared by writer, recovery, raft-dump.
//! - `wal`: `Wal`, the durability contract (append / set_hard_state are durable only after
//!   `sync`), group commit, truncation, compaction, recovery.
//! - `snapshot`: snapshot files, atomic install, chunked streaming.
//!
//! Guarantees (see DESIGN.md): a record is returned only if its CRC matches; a synced record
//! survives a crash; a torn record can only be at the tail of the newest segment and recovery
//! zeroes it and reports it; any other damage is a hard error naming file and offset.

pub mod dir;
pub mod error;
pub mod log_state;
pub mod record;
pub mod segment;
pub mod snapshot;
pub mod wal;

pub use error::StorageError;
pub use segment::SyncMode;
pub use snapshot::{load_snapshot, verify_snapshot_file, SnapshotInfo, SnapshotReader, SnapshotStore, SnapshotWriter};
pub use wal::{RecoveryReport, Wal, WalOptions};

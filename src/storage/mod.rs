//! Durable storage: the segmented WAL (read through read-only mappings, written with one
//! `pwrite` + `fdatasync` per batch), the meta file (term, vote, identity) and snapshot files.
//! This is the only layer that touches files, and it does so only through the `fs` seam.
//!
//! - `fs`: the `FileSystem` / `FileHandle` traits, `RealFs` (std + memmap2) and `SimFs` (in
//!   memory, deterministic, with power loss, latent errors, EIO and ENOSPC on request).
//! - `record`: the byte layout of WAL records (documented there, offsets and byte order);
//!   `scan`: walking the valid records of an image; `analyze`: judging a segment at recovery.
//! - `fill`: what unwritten segment space holds (zeros, or the pattern of version 3 segments).
//! - `segment`: segment files (`{seq:020}-{first_index:020}.wal`, allocated for real, created
//!   atomically; appends are one `pwrite` per batch, see `segment` for the measurement).
//! - `log_state`: the index rebuilt by replaying records; shared by writer, recovery, raft-dump.
//! - `wal` (+ `wal_open`, `wal_read`): `Wal`, the durability contract, batch commit records,
//!   group commit, truncation, compaction, and the recovery rules (module doc of `wal`).
//! - `meta`: the two-slot meta file that keeps term and vote through one bad sector.
//! - `snapshot`: snapshot files, atomic install, chunked streaming.
//!
//! Guarantees (see DESIGN.md): a record is returned only if its CRC matches; a synced record
//! survives a crash; damage confined to the final, never-acknowledged batch is a torn tail,
//! truncated and reported; damage in synced data is reported as a `Corruption` with the first lost
//! index and a guard, never as a torn tail; a log with a hole is never served.

pub mod analyze;
pub mod dir;
pub mod error;
pub mod fill;
pub mod fs;
pub mod log_state;
pub mod meta;
pub mod record;
pub mod scan;
pub mod segment;
pub mod snapshot;
pub mod wal;
mod wal_open;
mod wal_read;

pub use error::StorageError;
pub use fs::{FileHandle, FileSystem, OpenMode, RealFs, SimFs};
pub use meta::{Meta, MetaStore, RecoveryGuard, RecoveryReason};
pub use snapshot::{load_snapshot, verify_snapshot_file, SnapshotInfo, SnapshotReader, SnapshotStore, SnapshotWriter};
pub use wal::{Corruption, LogPosition, RecoveryRead, RecoveryReport, Wal, WalOptions};
pub use wal_open::{discard_unsalvageable, repair_after_corruption};

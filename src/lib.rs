//! mini-raft: a replicated key-value store built on a pure, deterministic Raft core.
//!
//! Layers, each one folder, dependencies pointing down (see `DESIGN.md` in the project's shared
//! notes): `server` (mio reactor) → `wire` (frames) → `storage` (WAL, snapshots) → `kv` (state
//! machine) → `raft` (the consensus core, no I/O, no clock, no randomness of its own).
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod history;
pub mod kv;
pub mod limits;
pub mod raft;
pub mod server;
pub mod storage;
pub mod wire;

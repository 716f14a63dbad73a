//! The server: a hand-rolled mio reactor that drives the consensus core, the storage threads
//! that make its batches durable, and the glue to the key-value state machine. This is the only
//! layer with sockets.
//!
//! Rooms: `node` (the event loop tying the others together), `reactor` (poll, listener,
//! connections; frames in and out), `conn` (one connection's buffers), `peers` (links to the other
//! members), `replica` (core + state machine + storage work, no sockets: the simulator can run
//! it), `requests` (client waiters and who gets which answer), `recovery` (start-up),
//! `storage_thread` (the WAL and snapshot threads), `wal_lane` (the WAL thread, and batches
//! synced on the loop when it is idle), `config`.
//!
//! Invariants: a client write is answered only after its entry is applied (so after it is
//! committed and durable on a majority); a linearizable read only after a ReadIndex round
//! confirmed leadership and the state machine reached the read index; every queue is bounded.

pub mod config;
pub mod conn;
pub mod http;
pub mod metrics;
pub mod node;
pub mod node_metrics;
pub mod peers;
pub mod reactor;
pub mod recovery;
pub mod replica;
#[cfg(test)]
mod replica_tests;
pub mod requests;
pub mod snapshot_transfer;
pub mod status;
pub mod storage_thread;
mod wal_lane;
#[cfg(test)]
mod wal_lane_tests;

pub use config::{parse_addr_map, parse_peers, NodeConfig};
pub use node::{Node, StartError};

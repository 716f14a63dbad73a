//! The server: a hand-rolled mio reactor that drives the consensus core, the storage thread that
//! makes its batches durable, and the glue to the key-value state machine. This is the only layer
//! with sockets.
//!
//! Invariants: a client write is answered only after its entry is applied (so after it is
//! committed and durable on a majority); a linearizable read only after a ReadIndex round
//! confirmed leadership and the state machine reached the read index; every queue is bounded.

pub mod config;
pub mod conn;
pub mod http;
pub mod metrics;
pub mod node;
pub mod storage_thread;

pub use config::{parse_peers, NodeConfig};
pub use node::{Node, StartError};

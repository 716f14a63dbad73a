//! Building blocks of `raftctl chaos`: per-link TCP fault proxies ([`proxy`]) and the seeded fault
//! schedule ([`nemesis`]). Each module documents what it guarantees.

// A later change wires these into `raftctl chaos`; until then nothing in main calls them.
#![allow(dead_code)]

pub mod nemesis;
pub mod proxy;

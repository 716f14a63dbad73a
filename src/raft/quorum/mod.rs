//! Quorum arithmetic: "has a quorum reached index i?", "did this election win?", "is a quorum
//! recently active?".
//!
//! Every such question in the core goes through [`JointConfig`], which asks it of one
//! [`MajorityConfig`] or, during a membership change (dissertation §4.3), of two: a joint
//! configuration needs a majority of *both* voter sets. An empty majority (the outgoing set
//! outside a change) agrees with everything, so a plain configuration is a joint one whose
//! outgoing half is empty, and callers never branch on "are we joint?".
//!
//! Invariants: a configuration never contains node id 0; the incoming set of a running node is
//! never empty (both are refused by the constructors with an error, since configurations arrive
//! in snapshots and, later, in log entries from peers).

mod joint;
mod majority;

pub use joint::JointConfig;
pub use majority::MajorityConfig;

use super::types::NodeId;

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Why a set of node ids is not a usable configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Node id 0 means "nobody" on the wire.
    ReservedId,
    /// A running configuration needs at least one voter.
    NoVoters,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::ReservedId => f.write_str("node id 0 is reserved for 'nobody'"),
            ConfigError::NoVoters => f.write_str("a configuration needs at least one voter"),
        }
    }
}

/// Checks ids that came from outside (flags, snapshots, peers) before they become a set.
fn check_ids(ids: &[NodeId]) -> Result<(), ConfigError> {
    if ids.contains(&0) {
        return Err(ConfigError::ReservedId);
    }
    Ok(())
}

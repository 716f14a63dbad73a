//! Two majorities at once (dissertation §4.3): during a membership change a decision needs a
//! majority of the incoming *and* of the outgoing voters.

use super::{ConfigError, MajorityConfig, VoteResult};
use crate::raft::types::{Index, NodeId};

/// The voting configuration of a running node. Outside a change `outgoing` is empty, and every
/// answer is the incoming majority's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JointConfig {
    incoming: MajorityConfig,
    outgoing: MajorityConfig,
}

impl JointConfig {
    /// A non-joint configuration of `voters`; refuses an empty set and node id 0.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<JointConfig, ConfigError> {
        JointConfig::joint(voters, [])
    }

    /// No voters at all: the configuration of a node that joins a cluster and has not yet been
    /// told its configuration. Such a node never campaigns (it is no voter), so the answers of
    /// the empty set (every index committed, every vote won) are never asked for; the core
    /// asserts that a leader is a voter of its own configuration.
    pub fn none() -> JointConfig {
        JointConfig { incoming: MajorityConfig::default(), outgoing: MajorityConfig::default() }
    }

    /// A joint configuration (C_old,new): `incoming` is C_new, `outgoing` C_old (may be empty).
    pub fn joint(
        incoming: impl IntoIterator<Item = NodeId>,
        outgoing: impl IntoIterator<Item = NodeId>,
    ) -> Result<JointConfig, ConfigError> {
        let incoming = MajorityConfig::new(incoming)?;
        if incoming.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        Ok(JointConfig { incoming, outgoing: MajorityConfig::new(outgoing)? })
    }

    pub fn incoming(&self) -> &MajorityConfig {
        &self.incoming
    }

    pub fn outgoing(&self) -> &MajorityConfig {
        &self.outgoing
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Every voter of either half, ascending, without duplicates.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.incoming.voters().chain(self.outgoing.voters()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// True if this configuration has exactly one voter, `id`: its decisions need nobody else.
    pub fn is_singleton(&self, id: NodeId) -> bool {
        self.voters() == [id]
    }

    /// The highest index both majorities have reached.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index {
        self.incoming.committed_index(&matched).min(self.outgoing.committed_index(&matched))
    }

    /// Won only if both halves won; lost if either lost.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        match (self.incoming.vote_result(&vote), self.outgoing.vote_result(&vote)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    pub fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.incoming.has_quorum(&active) && self.outgoing.has_quorum(&active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Ids = &'static [u64];
    type Matches = &'static [(u64, u64)];

    fn joint(incoming: &[NodeId], outgoing: &[NodeId]) -> JointConfig {
        JointConfig::joint(incoming.iter().copied(), outgoing.iter().copied()).expect("valid")
    }

    #[test]
    fn committed_index_is_the_lower_of_both_majorities() {
        // (incoming, outgoing, (id, match) pairs, expected commit)
        let cases: &[(Ids, Ids, Matches, u64)] = &[
            // Not joint: the incoming majority decides.
            (&[1, 2, 3], &[], &[(1, 9), (2, 7), (3, 1)], 7),
            // Same sets: as if not joint.
            (&[1, 2, 3], &[1, 2, 3], &[(1, 9), (2, 7), (3, 1)], 7),
            // Replacing 3 by 4: {1,2,4} has 7 (1 and 2), {1,2,3} has 7.
            (&[1, 2, 4], &[1, 2, 3], &[(1, 9), (2, 7), (3, 1), (4, 1)], 7),
            // The new majority lags: {1,4,5} reaches only 2 (4 and 5 are new).
            (&[1, 4, 5], &[1, 2, 3], &[(1, 9), (2, 9), (3, 9), (4, 2), (5, 1)], 2),
            // The old majority lags.
            (&[1, 2, 3], &[3, 4, 5], &[(1, 9), (2, 9), (3, 5), (4, 0), (5, 0)], 0),
            // Missing voters count as 0.
            (&[1, 2, 3], &[4], &[(1, 5), (2, 5), (3, 5)], 0),
        ];
        for (incoming, outgoing, matches, want) in cases {
            let m: BTreeMap<u64, u64> = matches.iter().copied().collect();
            let got = joint(incoming, outgoing).committed_index(|id| m.get(&id).copied());
            assert_eq!(got, *want, "incoming {incoming:?} outgoing {outgoing:?} {matches:?}");
        }
    }

    #[test]
    fn votes_need_both_majorities() {
        // (incoming, outgoing, granted, rejected, expected)
        let cases: &[(Ids, Ids, Ids, Ids, VoteResult)] = &[
            (&[1, 2, 3], &[], &[1, 2], &[], VoteResult::Won),
            (&[1, 2, 3], &[1, 4, 5], &[1, 2], &[], VoteResult::Pending),
            (&[1, 2, 3], &[1, 4, 5], &[1, 2, 4], &[], VoteResult::Won),
            (&[1, 2, 3], &[1, 4, 5], &[1, 2], &[4, 5], VoteResult::Lost),
            (&[1, 2, 3], &[1, 4, 5], &[1, 4, 5], &[2, 3], VoteResult::Lost),
            (&[1], &[2], &[1], &[], VoteResult::Pending),
            (&[1], &[2], &[1, 2], &[], VoteResult::Won),
        ];
        for (incoming, outgoing, granted, rejected, want) in cases {
            let got = joint(incoming, outgoing).vote_result(|id| {
                if granted.contains(&id) {
                    Some(true)
                } else if rejected.contains(&id) {
                    Some(false)
                } else {
                    None
                }
            });
            assert_eq!(got, *want, "incoming {incoming:?} outgoing {outgoing:?} +{granted:?} -{rejected:?}");
        }
    }

    #[test]
    fn quorum_activity_needs_both_majorities() {
        let config = joint(&[1, 2, 3], &[3, 4, 5]);
        assert!(config.has_quorum(|id| [1, 3, 4].contains(&id)));
        assert!(!config.has_quorum(|id| [1, 2, 3].contains(&id)), "only one of the outgoing");
        assert!(joint(&[1, 2, 3], &[]).has_quorum(|id| id != 3));
    }

    #[test]
    fn constructors_refuse_what_cannot_run() {
        assert_eq!(JointConfig::new([]), Err(ConfigError::NoVoters));
        assert_eq!(JointConfig::joint([1, 2], [0]), Err(ConfigError::ReservedId));
        assert_eq!(joint(&[2, 1], &[3, 1]).voters(), vec![1, 2, 3]);
        assert!(joint(&[1], &[]).is_singleton(1));
        assert!(!joint(&[1], &[2]).is_singleton(1));
    }
}

//! One majority: the questions of [`super::JointConfig`] asked of a single voter set.

use std::collections::BTreeSet;

use super::{check_ids, ConfigError, VoteResult};
use crate::raft::types::{Index, NodeId};

/// A set of voters that decides by simple majority. The empty set is allowed (it is the
/// outgoing half of a non-joint configuration) and agrees with everything: its committed index
/// is `Index::MAX`, it wins every vote and always has a quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// A majority over `voters`; refuses node id 0 (the ids may come from a peer or a file).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<MajorityConfig, ConfigError> {
        let voters: Vec<NodeId> = voters.into_iter().collect();
        check_ids(&voters)?;
        Ok(MajorityConfig { voters: voters.into_iter().collect() })
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The smallest number of voters that forms a majority (0 for the empty set).
    pub fn majority(&self) -> usize {
        if self.voters.is_empty() {
            0
        } else {
            self.voters.len() / 2 + 1
        }
    }

    /// The highest index that a majority of voters has reached, given each voter's match index.
    /// Voters missing from `matched` count as 0. `Index::MAX` for the empty set.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index {
        if self.voters.is_empty() {
            return Index::MAX;
        }
        let mut indexes: Vec<Index> = self.voters.iter().map(|&id| matched(id).unwrap_or(0)).collect();
        // Descending: the majority()-th largest value is held by at least a majority.
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        indexes[self.majority() - 1]
    }

    /// Tallies votes: `vote(id)` is `Some(granted)` for voters that answered.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let (mut granted, mut missing) = (0usize, 0usize);
        for &id in &self.voters {
            match vote(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        if granted >= self.majority() {
            VoteResult::Won
        } else if granted + missing >= self.majority() {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }

    /// True if the voters for which `active(id)` holds form a majority.
    pub fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.voters.iter().filter(|&&id| active(id)).count() >= self.majority()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn majority(ids: &[NodeId]) -> MajorityConfig {
        MajorityConfig::new(ids.iter().copied()).expect("valid ids")
    }

    #[test]
    fn committed_index_is_the_majority_match() {
        // (voters, match indexes, expected commit)
        let cases: &[(&[u64], &[u64], u64)] = &[
            (&[], &[], u64::MAX),
            (&[1], &[5], 5),
            (&[1, 2, 3], &[5, 3, 1], 3),
            (&[1, 2, 3], &[5, 5, 1], 5),
            (&[1, 2, 3], &[5, 0, 0], 0),
            (&[1, 2, 3, 4], &[4, 3, 2, 1], 2),
            (&[1, 2, 3, 4, 5], &[9, 8, 7, 1, 1], 7),
        ];
        for (voters, matches, want) in cases {
            let config = majority(voters);
            let m: BTreeMap<u64, u64> = voters.iter().copied().zip(matches.iter().copied()).collect();
            assert_eq!(config.committed_index(|id| m.get(&id).copied()), *want, "{voters:?} {matches:?}");
        }
    }

    #[test]
    fn vote_result_counts_majorities() {
        let config = majority(&[1, 2, 3, 4, 5]);
        let tally = |granted: &[u64], rejected: &[u64]| {
            config.vote_result(|id| {
                if granted.contains(&id) {
                    Some(true)
                } else if rejected.contains(&id) {
                    Some(false)
                } else {
                    None
                }
            })
        };
        assert_eq!(tally(&[1, 2, 3], &[]), VoteResult::Won);
        assert_eq!(tally(&[1, 2], &[]), VoteResult::Pending);
        assert_eq!(tally(&[1, 2], &[3, 4]), VoteResult::Pending);
        assert_eq!(tally(&[1], &[3, 4, 5]), VoteResult::Lost);
        assert_eq!(majority(&[]).vote_result(|_| None), VoteResult::Won, "the empty set agrees");
    }

    #[test]
    fn has_quorum_needs_a_majority() {
        let config = majority(&[1, 2, 3]);
        assert!(config.has_quorum(|id| id != 3));
        assert!(!config.has_quorum(|id| id == 1));
        assert!(majority(&[]).has_quorum(|_| false));
    }

    #[test]
    fn node_id_zero_is_refused() {
        assert_eq!(MajorityConfig::new([1, 0, 2]), Err(ConfigError::ReservedId));
    }
}

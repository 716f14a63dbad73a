//! Quorum arithmetic over a configuration object.
//!
//! Everything that asks "is this a majority?" goes through [`Config`], so that joint consensus
//! (two majorities) and non-voting learners later change this type, not the core's logic.

use std::collections::BTreeSet;

use super::types::{Index, NodeId};

/// The voting membership. Invariant: never empty once a node is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    voters: BTreeSet<NodeId>,
}

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl Config {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Config {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        assert!(!voters.is_empty(), "a configuration needs at least one voter");
        assert!(!voters.contains(&0), "node id 0 is reserved for 'nobody'");
        Config { voters }
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

    /// The smallest number of voters that forms a majority.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index that a majority of voters has reached, given each voter's match index.
    /// Voters missing from `matched` count as 0.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index {
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

    #[test]
    fn committed_index_is_the_majority_match() {
        // (voters, match indexes, expected commit)
        let cases: &[(&[u64], &[u64], u64)] = &[
            (&[1], &[5], 5),
            (&[1, 2, 3], &[5, 3, 1], 3),
            (&[1, 2, 3], &[5, 5, 1], 5),
            (&[1, 2, 3], &[5, 0, 0], 0),
            (&[1, 2, 3, 4], &[4, 3, 2, 1], 2),
            (&[1, 2, 3, 4, 5], &[9, 8, 7, 1, 1], 7),
        ];
        for (voters, matches, want) in cases {
            let config = Config::new(voters.iter().copied());
            let m: BTreeMap<u64, u64> = voters.iter().copied().zip(matches.iter().copied()).collect();
            assert_eq!(config.committed_index(|id| m.get(&id).copied()), *want, "{voters:?} {matches:?}");
        }
    }

    #[test]
    fn vote_result_counts_majorities() {
        let config = Config::new([1, 2, 3, 4, 5]);
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
    }

    #[test]
    fn has_quorum_needs_a_majority() {
        let config = Config::new([1, 2, 3]);
        assert!(config.has_quorum(|id| id != 3));
        assert!(!config.has_quorum(|id| id == 1));
    }
}

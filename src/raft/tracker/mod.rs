//! The progress tracker: who votes, how far each follower's log is known to match the leader's,
//! what each voter answered in the current election, and who was heard from recently.
//!
//! Every quorum question the core asks goes through [`ProgressTracker`], which answers it with
//! the configuration's quorum arithmetic ([`JointConfig`]), counting this node itself from the
//! value the caller passes (its *persisted* last index for commit: the leader counts itself only
//! for what it has made durable, DESIGN.md).
//!
//! Invariants:
//! - progress exists only on a leader, for every member (voter or learner) but the leader
//!   itself; learners get the log but are never asked for votes and never count (the quorum
//!   arithmetic only knows the voters);
//! - votes hold one answer per voter per election (a voter that answers twice, e.g. a duplicated
//!   pre-vote answered before and after it heard from a leader, counts with its latest answer);
//! - for every follower `matched < next` (see [`Progress`]).

mod inflights;
mod progress;

use std::collections::BTreeMap;

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};

use super::quorum::{JointConfig, VoteResult};
use super::types::{Index, NodeId};

/// The voters, the leader's view of each follower, and the current election's votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    config: JointConfig,
    /// Members that receive the log without voting, ascending.
    learners: Vec<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
}

impl ProgressTracker {
    pub fn new(config: JointConfig) -> ProgressTracker {
        ProgressTracker { config, learners: Vec::new(), progress: BTreeMap::new(), votes: BTreeMap::new() }
    }

    /// A membership change took effect (its entry was appended or truncated). Progress of members
    /// that stay is kept; a leader (`leader_next` = its next index and inflight window) starts
    /// tracking new members, presumed active for one CheckQuorum round. Votes of nodes that no
    /// longer vote are dropped.
    pub fn update_config(
        &mut self,
        config: JointConfig,
        learners: Vec<NodeId>,
        self_id: NodeId,
        leader_next: Option<(Index, usize)>,
    ) {
        self.config = config;
        self.learners = learners;
        let members = self.members(self_id);
        self.progress.retain(|id, _| members.contains(id));
        if let Some((next, inflight_msgs_max)) = leader_next {
            for id in members {
                self.progress.entry(id).or_insert_with(|| {
                    let mut pr = Progress::new(next, inflight_msgs_max);
                    pr.recent_active = true;
                    pr
                });
            }
        }
        let config = &self.config;
        self.votes.retain(|id, _| config.contains(*id));
    }

    /// Every voter and learner but `self_id`, ascending.
    pub fn members(&self, self_id: NodeId) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.config.voters().into_iter().chain(self.learners.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|&id| id != self_id);
        ids
    }

    pub fn learners(&self) -> &[NodeId] {
        &self.learners
    }

    pub fn config(&self) -> &JointConfig {
        &self.config
    }

    /// Every voter but `self_id`, ascending: those asked for votes.
    pub fn peers(&self, self_id: NodeId) -> Vec<NodeId> {
        self.config.voters().into_iter().filter(|&v| v != self_id).collect()
    }

    // ----- replication progress (leader only) ------------------------------------------------

    /// A new leader starts every follower (learners too) probing at `next` and presumes it
    /// active, so that CheckQuorum gives it a full election timeout before judging.
    pub fn start_leading(&mut self, self_id: NodeId, next: Index, inflight_msgs_max: usize) {
        self.progress.clear();
        for peer in self.members(self_id) {
            let mut pr = Progress::new(next, inflight_msgs_max);
            pr.recent_active = true;
            self.progress.insert(peer, pr);
        }
    }

    pub fn clear_progress(&mut self) {
        self.progress.clear();
    }

    pub fn get(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    pub fn get_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Progress)> {
        self.progress.iter().map(|(&id, pr)| (id, pr))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Progress)> {
        self.progress.iter_mut().map(|(&id, pr)| (id, pr))
    }

    /// Followers with progress, ascending.
    pub fn followers(&self) -> Vec<NodeId> {
        self.progress.keys().copied().collect()
    }

    /// The highest index a quorum has durably: followers by their match index, this node by
    /// `self_persisted`.
    pub fn committed_index(&self, self_id: NodeId, self_persisted: Index) -> Index {
        self.config.committed_index(|v| {
            if v == self_id {
                Some(self_persisted)
            } else {
                self.progress.get(&v).map(|p| p.matched)
            }
        })
    }

    /// CheckQuorum (dissertation §6.2): did a quorum, this node included, answer since the last
    /// check?
    pub fn quorum_active(&self, self_id: NodeId) -> bool {
        self.config.has_quorum(|v| v == self_id || self.progress.get(&v).is_some_and(|p| p.recent_active))
    }

    pub fn reset_recent_active(&mut self) {
        for pr in self.progress.values_mut() {
            pr.recent_active = false;
        }
    }

    /// ReadIndex: has a quorum, this node included, confirmed heartbeat round `seq` or later?
    pub fn read_confirmed(&self, self_id: NodeId, seq: u64) -> bool {
        self.config.has_quorum(|v| v == self_id || self.progress.get(&v).is_some_and(|p| p.read_seq_acked >= seq))
    }

    // ----- elections -------------------------------------------------------------------------

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s answer in the current election (its latest answer counts).
    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.insert(id, granted);
    }

    pub fn tally_votes(&self) -> VoteResult {
        self.config.vote_result(|id| self.votes.get(&id).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ids = &'static [u64];
    type Matches = &'static [(u64, u64)];

    fn tracker(voters: &[NodeId]) -> ProgressTracker {
        ProgressTracker::new(JointConfig::new(voters.iter().copied()).expect("valid"))
    }

    #[test]
    fn commit_counts_the_leader_only_for_what_it_persisted() {
        // (voters, leader's persisted index, followers' match indexes, expected commit)
        let cases: &[(Ids, u64, Matches, u64)] = &[
            (&[1], 4, &[], 4),
            (&[1, 2, 3], 0, &[(2, 5), (3, 5)], 5),
            (&[1, 2, 3], 9, &[(2, 3), (3, 0)], 3),
            (&[1, 2, 3], 2, &[(2, 3), (3, 0)], 2),
            (&[1, 2, 3, 4, 5], 9, &[(2, 8), (3, 1), (4, 1), (5, 7)], 7),
        ];
        for (voters, persisted, matches, want) in cases {
            let mut t = tracker(voters);
            t.start_leading(1, 1, 4);
            for &(id, m) in matches.iter() {
                if let Some(pr) = t.get_mut(id) {
                    pr.maybe_update(m);
                }
            }
            assert_eq!(t.committed_index(1, *persisted), *want, "{voters:?} self {persisted} {matches:?}");
        }
    }

    #[test]
    fn votes_are_counted_once_per_voter() {
        let mut t = tracker(&[1, 2, 3]);
        t.record_vote(1, true);
        assert_eq!(t.tally_votes(), VoteResult::Pending);
        t.record_vote(2, true);
        t.record_vote(2, false); // the latest answer replaces the earlier one
        assert_eq!(t.tally_votes(), VoteResult::Pending);
        t.record_vote(3, false);
        assert_eq!(t.tally_votes(), VoteResult::Lost);
        t.record_vote(3, true);
        assert_eq!(t.tally_votes(), VoteResult::Won);
        t.reset_votes();
        assert_eq!(t.tally_votes(), VoteResult::Pending);
    }

    #[test]
    fn check_quorum_and_read_confirmation_count_the_leader() {
        // (voters, followers heard from, expected quorum_active)
        let cases: &[(&[u64], &[u64], bool)] =
            &[(&[1], &[], true), (&[1, 2, 3], &[], false), (&[1, 2, 3], &[3], true), (&[1, 2, 3, 4], &[2], false)];
        for (voters, active, want) in cases {
            let mut t = tracker(voters);
            t.start_leading(1, 1, 4);
            t.reset_recent_active();
            for (id, pr) in t.iter_mut() {
                pr.recent_active = active.contains(&id);
                pr.read_seq_acked = if active.contains(&id) { 7 } else { 6 };
            }
            assert_eq!(t.quorum_active(1), *want, "{voters:?} active {active:?}");
            assert_eq!(t.read_confirmed(1, 7), *want, "{voters:?} confirmed {active:?}");
        }
    }

    #[test]
    fn a_new_leader_tracks_every_other_voter() {
        let mut t = tracker(&[3, 1, 2]);
        t.start_leading(2, 10, 4);
        assert_eq!(t.followers(), vec![1, 3]);
        assert!(t.iter().all(|(_, pr)| pr.next == 10 && pr.recent_active));
        assert_eq!(t.peers(2), vec![1, 3]);
    }
}

//! Elections: Pre-Vote (dissertation §9.6), RequestVote (paper §5.2, with the up-to-date rule of
//! §5.4.1), counting votes through the tracker, and becoming leader.
//!
//! Invariants: a node grants at most one vote per term and only once that vote is durable (the
//! grant is a persisted message); a pre-vote grant changes no state; a candidate counts only
//! answers to its own campaign.

use bytes::Bytes;

use super::consensus::{Raft, Role};
use super::message::{Message, MessageBody};
use super::quorum::VoteResult;
use super::types::{EntryKind, Index, NodeId, Term};

/// Counts of election events, kept by the core for the node's metrics (the core itself has no
/// metrics and no clock). They only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Elections started as candidate (real votes requested).
    pub elections_started: u64,
    /// Pre-vote rounds started.
    pub pre_votes_started: u64,
    /// Votes this node granted.
    pub votes_granted: u64,
    /// Pre-votes this node granted.
    pub pre_votes_granted: u64,
}

impl Raft {
    /// Election counters since start-up (see [`ElectionStats`]).
    pub fn election_stats(&self) -> ElectionStats {
        self.election_stats
    }

    pub(super) fn campaign(&mut self, pre: bool) {
        if pre {
            self.election_stats.pre_votes_started += 1;
        } else {
            self.election_stats.elections_started += 1;
        }
        let campaign_term = if pre {
            self.reset(self.term);
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.reset(self.term + 1);
            self.role = Role::Candidate;
            self.vote = self.id;
            self.term
        };
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            // A single-voter cluster.
            if pre {
                self.campaign(false);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let transfer = !pre && std::mem::take(&mut self.campaign_transfer);
        let peers: Vec<NodeId> = self.tracker.peers(self.id);
        for peer in peers {
            let body = if pre {
                MessageBody::PreVote { last_log_index, last_log_term }
            } else {
                MessageBody::RequestVote { last_log_index, last_log_term, transfer }
            };
            self.send_with_term(peer, campaign_term, body);
        }
    }

    pub(super) fn handle_vote_request(&mut self, m: &Message, pre: bool, last_log_index: Index, last_log_term: Term) {
        let can_vote = self.vote == m.from || (self.vote == 0 && self.leader == 0) || (pre && m.term > self.term);
        let granted = can_vote
            && self.log.is_up_to_date(last_log_index, last_log_term)
            && self.guard_allows_vote(last_log_term, last_log_index);
        // A grant answers in the candidate's term; a refusal in ours, so a stale candidate learns it.
        let term = if granted { m.term } else { self.term };
        if pre {
            self.election_stats.pre_votes_granted += u64::from(granted);
            self.send_with_term(m.from, term, MessageBody::PreVoteResponse { granted });
            return;
        }
        if granted {
            // One vote per term: granting twice in a term could elect two leaders.
            assert!(
                self.vote == 0 || self.vote == m.from,
                "second vote in term {}: {} then {}",
                self.term,
                self.vote,
                m.from
            );
            debug_assert_eq!(m.term, self.term);
            self.vote = m.from;
            self.election_elapsed = 0;
            self.election_stats.votes_granted += 1;
        }
        self.send_with_term(m.from, term, MessageBody::RequestVoteResponse { granted });
    }

    pub(super) fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term.
                self.become_follower(self.term, m.from);
                self.step_follower(m);
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                // Only answers to this campaign (term + 1) count; a refusal may carry our term.
                if granted && m.term != self.term + 1 {
                    return;
                }
                self.tracker.record_vote(m.from, granted);
                self.tally_votes();
            }
            MessageBody::RequestVoteResponse { granted } if self.role == Role::Candidate => {
                self.tracker.record_vote(m.from, granted);
                self.tally_votes();
            }
            _ => {}
        }
    }

    fn tally_votes(&mut self) {
        match self.tracker.tally_votes() {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        // A node that joins or was removed has no say: the empty set would "win" any election.
        assert!(self.may_campaign(), "node {} became leader without being a voter", self.id);
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        self.tracker.start_leading(self.id, next, self.opts.inflight_msgs_max);
        // Commit an entry of our own term to learn the commit index (paper §5.4.2, §8).
        self.append_entry(EntryKind::Noop, Bytes::new());
        self.maybe_commit();
        self.broadcast_append();
    }
}

//! Leadership transfer (dissertation §3.10): the leader stops accepting proposals, brings the
//! target's log up to its own, and sends it `TimeoutNow`; the target starts a real election at
//! once (no pre-vote), and its vote requests carry `transfer` so the voters ignore their leader
//! stickiness for that one election. The transfer aborts after an election timeout, and the
//! leader resumes taking proposals.
//!
//! Invariants: at most one transfer at a time, always to a voter of the configuration in force;
//! the target's log is as long as the leader's when `TimeoutNow` leaves (so it wins unless a
//! newer entry appeared, which cannot happen as proposals are refused meanwhile); any role or term
//! change ends the transfer (`Raft::reset`).

use super::consensus::{Raft, Role};
use super::message::MessageBody;
use super::types::NodeId;

/// Why a transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    NotLeader {
        leader: NodeId,
    },
    /// The target is not a voter of the configuration in force (unknown, or a learner).
    NotVoter {
        id: NodeId,
    },
    /// No follower to hand leadership to (a single-voter cluster).
    NoTarget,
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            TransferError::NotLeader { leader } => write!(f, "not the leader (node {leader} is)"),
            TransferError::NotVoter { id } => write!(f, "node {id} is not a voter of the configuration"),
            TransferError::NoTarget => write!(f, "no other voter to transfer leadership to"),
        }
    }
}

impl Raft {
    /// Starts handing leadership to `to` (0: the most caught-up voter). Transferring to itself
    /// does nothing. Returns the target.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<NodeId, TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        let to = if to == 0 { self.most_caught_up_voter().ok_or(TransferError::NoTarget)? } else { to };
        if to == self.id {
            return Ok(to);
        }
        if !self.conf_log.current().is_voter(to) {
            return Err(TransferError::NotVoter { id: to });
        }
        self.lead_transferee = to;
        self.transfer_elapsed = 0;
        if !self.maybe_send_timeout_now(to) {
            self.maybe_send_append(to, true);
        }
        Ok(to)
    }

    /// The transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        (self.lead_transferee != 0).then_some(self.lead_transferee)
    }

    /// The voter (other than this node) with the highest match index, lowest id first on ties.
    pub fn most_caught_up_voter(&self) -> Option<NodeId> {
        let conf = self.conf_log.current();
        let voters = self.tracker.iter().filter(|(id, _)| conf.is_voter(*id));
        voters.max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(*id))).map(|(id, _)| id)
    }

    /// Sends `TimeoutNow` if `to` is the transfer target and has the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) -> bool {
        if self.lead_transferee != to || to == 0 {
            return false;
        }
        let caught_up = self.tracker.get(to).is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        }
        caught_up
    }

    /// Leader tick: a transfer that did not finish within an election timeout is abandoned.
    pub(super) fn tick_transfer(&mut self) {
        if self.lead_transferee == 0 {
            return;
        }
        self.transfer_elapsed = self.transfer_elapsed.saturating_add(1);
        if self.transfer_elapsed >= self.opts.election_ticks {
            self.lead_transferee = 0;
            self.transfer_elapsed = 0;
        }
    }

    /// `TimeoutNow` from our leader: campaign at once, a real election marked as a transfer.
    pub(super) fn campaign_for_transfer(&mut self) {
        if !self.may_campaign() || self.recovery.is_some() {
            return;
        }
        self.campaign_transfer = true;
        self.campaign(false);
    }
}

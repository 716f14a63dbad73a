//! Membership changes and leadership transfer at the replica: the node's front door to the
//! core's `propose_conf_change` and `transfer_leader`, the client requests of `protocol.md` §7.6
//! (answered once the change completed or the leader moved), and the member addresses, which
//! follow the configuration in force (each change entry carries them).
//!
//! Invariants: at most [`MEMBER_WAITS_MAX`] requests wait; each is answered exactly once, when
//! it completes, fails, or this node stops leading.

use super::{Replica, RequestType};
use crate::raft::membership::{Configuration, MemberChange};
use crate::raft::{ConfChangeError, Index, NodeId, Role, TransferError};
use crate::server::requests::Waiter;
use crate::wire::{ClientReply, ClientRequest, ErrorCode, FrameBody, MemberStatus, MembersReport};

/// Membership requests waiting at once; more are refused with `Overloaded`.
pub const MEMBER_WAITS_MAX: usize = 64;

/// A membership request waiting to complete.
pub struct MemberWait {
    waiter: Waiter,
    what: Waiting,
}

enum Waiting {
    /// The change entered the joint configuration at `enter`: done once the leave after it is
    /// applied here.
    Change { enter: Index },
    /// Done once another node leads.
    Transfer { to: NodeId },
}

impl Replica {
    /// Proposes a membership change (the joint phase and its end follow by themselves). The
    /// addresses it names are known at once, so the leader can reach a new member right away.
    pub fn propose_conf_change(&mut self, changes: Vec<MemberChange>) -> Result<Index, ConfChangeError> {
        let index = self.raft.propose_conf_change(changes.clone())?;
        for change in changes.iter().filter(|c| !c.address.is_empty()) {
            // For redirects; a `--client-addrs` entry, known already, wins.
            self.addresses.entry(change.id).or_insert_with(|| change.address.clone());
        }
        Ok(index)
    }

    /// Starts a leadership transfer to `to` (0: the most caught-up voter).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<NodeId, TransferError> {
        self.raft.transfer_leader(to)
    }

    /// The address of a member, from the configuration in force or the bootstrap list.
    pub fn member_address(&self, id: NodeId) -> Option<&str> {
        self.raft.configuration().address(id).or_else(|| self.addresses.get(&id).map(String::as_str))
    }

    /// Every member with the peer address its configuration records (empty if none: a member
    /// of the bootstrap configuration, reached at its `--peers` address), for the peer table.
    pub fn member_addresses(&self) -> Vec<(NodeId, String)> {
        let conf = self.raft.configuration();
        conf.members().into_iter().map(|id| (id, conf.address(id).unwrap_or_default().to_string())).collect()
    }

    /// The configuration in force, as the membership requests answer it.
    pub fn members_report(&self) -> MembersReport {
        let conf: &Configuration = self.raft.configuration();
        let progress = self.raft.progress();
        let last_index = self.raft.last_index();
        let members = conf.members().into_iter().map(|id| MemberStatus {
            node_id: id,
            role: conf.role(id),
            address: self.member_address(id).unwrap_or_default().to_string(),
            match_index: if id == self.id {
                last_index
            } else {
                progress.iter().find(|(p, _, _)| *p == id).map_or(0, |(_, m, _)| *m)
            },
        });
        MembersReport {
            leader_id: self.raft.leader(),
            conf_index: self.raft.configuration_index(),
            joint: conf.is_joint(),
            last_index,
            members: members.collect(),
        }
    }

    pub(super) fn member_request(&mut self, waiter: Waiter, request: ClientRequest) {
        if self.raft.role() != Role::Leader {
            return self.reply_not_leader(waiter, RequestType::Member);
        }
        if self.member_waits.len() >= MEMBER_WAITS_MAX {
            let text = "too many membership requests waiting".to_string();
            return self.reply_error(waiter, RequestType::Member, ErrorCode::Overloaded, text);
        }
        let what = match request {
            ClientRequest::MemberChange(changes) => match self.propose_conf_change(changes) {
                Ok(enter) => Waiting::Change { enter },
                Err(e) => return self.refuse(waiter, e.to_string()),
            },
            ClientRequest::TransferLeader { to } => match self.transfer_leader(to) {
                Ok(to) if to == self.id => return self.reply_members(waiter),
                Ok(to) => Waiting::Transfer { to },
                Err(e) => return self.refuse(waiter, e.to_string()),
            },
            _ => return self.reply_members(waiter),
        };
        self.member_waits.push(MemberWait { waiter, what });
    }

    fn refuse(&mut self, waiter: Waiter, text: String) {
        self.reply_error(waiter, RequestType::Member, ErrorCode::MembershipRefused, text);
    }

    fn reply_members(&mut self, waiter: Waiter) {
        let report = self.members_report();
        self.reply(waiter, RequestType::Member, FrameBody::Reply(ClientReply::Members(report)));
    }

    /// True if a membership request waits for its change or transfer to finish.
    pub(super) fn has_member_waits(&self) -> bool {
        !self.member_waits.is_empty()
    }

    /// Graceful shutdown's deadline passed: every waiting membership request gets
    /// `ShuttingDown` (its change may still complete: `member list` tells).
    pub(super) fn abandon_member_requests(&mut self) {
        for wait in std::mem::take(&mut self.member_waits) {
            let text = "the node is shutting down; the change or transfer may still complete (member list)";
            self.reply_error(wait.waiter, RequestType::Member, ErrorCode::ShuttingDown, text.to_string());
        }
    }

    /// Once per loop iteration: learn the addresses of a new configuration and answer the
    /// membership requests that completed.
    pub(super) fn follow_configuration(&mut self) {
        let index = self.raft.configuration_index();
        if index != self.addresses_conf_index {
            self.addresses_conf_index = index;
            for (id, address) in self.raft.configuration().to_conf_state().addresses {
                self.addresses.entry(id).or_insert(address); // `--client-addrs` wins
            }
        }
        if self.member_waits.is_empty() {
            return;
        }
        let waits = std::mem::take(&mut self.member_waits);
        for wait in waits {
            match self.member_wait_outcome(&wait.what) {
                None => self.member_waits.push(wait),
                Some(Ok(())) => self.reply_members(wait.waiter),
                Some(Err((code, text))) => self.reply_error(wait.waiter, RequestType::Member, code, text),
            }
        }
    }

    fn member_wait_outcome(&self, what: &Waiting) -> Option<Result<(), (ErrorCode, String)>> {
        let leading = self.raft.role() == Role::Leader;
        match *what {
            Waiting::Change { enter } => {
                let conf_index = self.raft.configuration_index();
                // A leader removed by the change steps down as C_new commits, before applying it
                // (a no-op for the state machine): committed is done then.
                let applied = self.kv.applied_index() >= conf_index || !leading;
                let done = conf_index > enter
                    && !self.raft.configuration().is_joint()
                    && self.raft.committed() >= conf_index
                    && applied;
                if done {
                    return Some(Ok(()));
                }
                if !leading || conf_index < enter {
                    let text = format!(
                        "leadership changed before the change at {enter} completed; it may still complete (member list)"
                    );
                    return Some(Err((ErrorCode::OutcomeUnknown, text)));
                }
                None
            }
            Waiting::Transfer { to } => {
                let leader = self.raft.leader();
                if !leading && leader != 0 {
                    return Some(Ok(()));
                }
                if leading && self.raft.transfer_target().is_none() {
                    let text = format!("the transfer to node {to} did not finish within an election timeout");
                    return Some(Err((ErrorCode::MembershipRefused, text)));
                }
                None
            }
        }
    }
}

//! Membership changes and leadership transfer at the replica: the node's front door to the
//! core's `propose_conf_change` and `transfer_leader`, and the member addresses that follow
//! the configuration in force (each change entry carries them).

use super::Replica;
use crate::raft::membership::MemberChange;
use crate::raft::{ConfChangeError, Index, NodeId, TransferError};

impl Replica {
    /// Proposes a membership change (the joint phase and its end follow by themselves). The
    /// addresses it names are known at once, so the leader can reach a new member right away.
    pub fn propose_conf_change(&mut self, changes: Vec<MemberChange>) -> Result<Index, ConfChangeError> {
        let index = self.raft.propose_conf_change(changes.clone())?;
        for change in changes.iter().filter(|c| !c.address.is_empty()) {
            self.addresses.insert(change.id, change.address.clone());
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
}

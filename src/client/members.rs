//! Membership requests (`protocol.md` §7.6) through the leader, with the client's usual
//! redirects and retries: list the members, change them in one joint step, move the leader.

use std::time::{Duration, Instant};

use super::{map_answer, Answered, Client, ClientError};
use crate::raft::membership::MemberChange;
use crate::raft::NodeId;
use crate::wire::{ClientReply, ClientRequest, MembersReport};

/// A change waits for the joint phase to end (catching a new member up may take a while).
pub const MEMBER_CHANGE_DEADLINE_MIN: Duration = Duration::from_secs(30);

impl Client {
    /// The members of the configuration in force, as the leader sees them.
    pub fn member_list(&mut self) -> Result<Answered<MembersReport>, ClientError> {
        self.members_call("member list".into(), ClientRequest::MemberList, self.options.deadline)
    }

    /// Changes the members in one joint step; answers once the change completed.
    pub fn member_change(&mut self, changes: Vec<MemberChange>) -> Result<Answered<MembersReport>, ClientError> {
        let deadline = self.options.deadline.max(MEMBER_CHANGE_DEADLINE_MIN);
        let op = format!("member change of {} node(s)", changes.len());
        self.members_call(op, ClientRequest::MemberChange(changes), deadline)
    }

    /// Moves leadership to `to` (0: the most caught-up voter); answers once another node leads.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<Answered<MembersReport>, ClientError> {
        self.members_call(
            format!("transfer leadership to {to}"),
            ClientRequest::TransferLeader { to },
            self.options.deadline,
        )
    }

    fn members_call(
        &mut self,
        op: String,
        request: ClientRequest,
        deadline: Duration,
    ) -> Result<Answered<MembersReport>, ClientError> {
        let accept = |reply: &ClientReply| matches!(reply, ClientReply::Members(_));
        let answer = self.run(|| op, Some(&request), true, accept, Instant::now() + deadline)?;
        let report = |reply: Option<ClientReply>| match reply {
            Some(ClientReply::Members(report)) => report,
            _ => MembersReport { leader_id: 0, conf_index: 0, joint: false, last_index: 0, members: Vec::new() },
        };
        Ok(map_answer(answer, report))
    }
}

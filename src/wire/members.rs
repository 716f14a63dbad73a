//! The membership requests and replies (`protocol.md` §7.6): list the members, change them, move
//! the leader. Types, encoders and decoders in one room; the field order is the document's.

use bytes::{BufMut, BytesMut};

use super::encode::{limit, put_bytes};
use super::reader::{invalid, PayloadReader};
use super::WireError;
use crate::kv::codec::Indexed;
use crate::limits::{ADDRESS_BYTES_MAX, CONF_CHANGES_PER_ENTRY_MAX, MEMBERS_MAX};
use crate::raft::membership::{ChangeOp, MemberChange, MemberRole};
use crate::raft::NodeId;

/// One member as the answering node (the leader) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub role: MemberRole,
    pub address: String,
    /// The leader's match index for it (its own last index for the leader itself).
    pub match_index: u64,
}

/// The answer to `MemberList`, `MemberChange` and `TransferLeader`: the configuration in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersReport {
    pub leader_id: NodeId,
    /// The index of the entry that made this configuration (0: the bootstrap one).
    pub conf_index: u64,
    pub joint: bool,
    /// The answering node's last log index: a member lags by `last_index - match_index`.
    pub last_index: u64,
    pub members: Vec<MemberStatus>,
}

fn role_code(role: MemberRole) -> u8 {
    match role {
        MemberRole::Voter => 1,
        MemberRole::Outgoing => 2,
        MemberRole::Learner => 3,
        MemberRole::None => 0,
    }
}

fn decode_role(code: u8) -> Result<MemberRole, WireError> {
    match code {
        1 => Ok(MemberRole::Voter),
        2 => Ok(MemberRole::Outgoing),
        3 => Ok(MemberRole::Learner),
        other => Err(invalid("role", format!("{other} is not a member role (1 voter, 2 outgoing, 3 learner)"))),
    }
}

fn op_code(op: ChangeOp) -> u8 {
    match op {
        ChangeOp::AddVoter => 0,
        ChangeOp::AddLearner => 1,
        ChangeOp::Remove => 2,
    }
}

pub(super) fn validate_changes(changes: &[MemberChange]) -> Result<(), WireError> {
    limit("changes", changes.len(), CONF_CHANGES_PER_ENTRY_MAX)?;
    for c in changes {
        limit("address", c.address.len(), ADDRESS_BYTES_MAX)?;
        if c.id == 0 {
            return Err(invalid("id", "node id 0 is reserved".to_string()));
        }
    }
    Ok(())
}

pub(super) fn validate_report(report: &MembersReport) -> Result<(), WireError> {
    limit("members", report.members.len(), MEMBERS_MAX)?;
    for m in &report.members {
        limit("address", m.address.len(), ADDRESS_BYTES_MAX)?;
    }
    Ok(())
}

pub(super) fn encode_changes(changes: &[MemberChange], out: &mut BytesMut) {
    out.put_u16(changes.len() as u16);
    for c in changes {
        out.put_u8(op_code(c.op));
        out.put_u64(c.id);
        put_bytes(out, c.address.as_bytes());
    }
}

pub(super) fn decode_changes(reader: &mut PayloadReader) -> Result<Vec<MemberChange>, WireError> {
    let count = reader.u16("count")? as usize;
    limit("changes", count, CONF_CHANGES_PER_ENTRY_MAX)?;
    let mut changes = Vec::with_capacity(count);
    for index in 0..count {
        let field = |name| Indexed { list: "changes", index, field: name };
        let op = match reader.u8(field("op"))? {
            0 => ChangeOp::AddVoter,
            1 => ChangeOp::AddLearner,
            2 => ChangeOp::Remove,
            other => {
                return Err(invalid(
                    field("op"),
                    format!("{other} is not a change (0 add voter, 1 add learner, 2 remove)"),
                ))
            }
        };
        let id = reader.u64(field("id"))?;
        let address = reader.string(field("address"), ADDRESS_BYTES_MAX)?;
        changes.push(MemberChange { op, id, address });
    }
    validate_changes(&changes)?;
    Ok(changes)
}

pub(super) fn encode_report(report: &MembersReport, out: &mut BytesMut) {
    out.put_u64(report.leader_id);
    out.put_u64(report.conf_index);
    out.put_u8(u8::from(report.joint));
    out.put_u64(report.last_index);
    out.put_u32(report.members.len() as u32);
    for m in &report.members {
        out.put_u64(m.node_id);
        out.put_u8(role_code(m.role));
        put_bytes(out, m.address.as_bytes());
        out.put_u64(m.match_index);
    }
}

pub(super) fn decode_report(reader: &mut PayloadReader) -> Result<MembersReport, WireError> {
    let leader_id = reader.u64("leader_id")?;
    let conf_index = reader.u64("conf_index")?;
    let joint = reader.bool("joint")?;
    let last_index = reader.u64("last_index")?;
    let count = reader.count("members", MEMBERS_MAX, 8 + 1 + 4 + 8)?;
    let mut members = Vec::with_capacity(count);
    for index in 0..count {
        let field = |name| Indexed { list: "members", index, field: name };
        members.push(MemberStatus {
            node_id: reader.u64(field("node_id"))?,
            role: decode_role(reader.u8(field("role"))?)?,
            address: reader.string(field("address"), ADDRESS_BYTES_MAX)?,
            match_index: reader.u64(field("match_index"))?,
        });
    }
    Ok(MembersReport { leader_id, conf_index, joint, last_index, members })
}
